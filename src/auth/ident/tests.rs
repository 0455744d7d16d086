use super::*;

use proptest::prelude::*;

const IDENT: &str = "/etc/pgring/ident.conf";

fn parse(text: &str) -> IdentMaps {
    IdentMaps::parse(text, Path::new(IDENT)).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    IdentMaps::parse(text, Path::new(IDENT))
        .unwrap_err()
        .to_string()
}

#[test]
fn plain_mappings() {
    let maps = parse(
        "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n\
         \n\
         office    alice            alice\n\
         office    alice            reporting   # alice may also be reporting\n\
         office    \"Bob Smith\"      bob\n\
         certs     root             postgres\n",
    );
    assert_eq!(maps.len(), 2);
    assert!(maps.has_map("office"));
    assert!(maps.has_map("certs"));
    assert!(!maps.has_map("Office"));
    assert!(!maps.has_map("none"));
    assert!(maps.permits("office", "alice", "alice"));
    assert!(maps.permits("office", "alice", "reporting"));
    assert!(maps.permits("office", "Bob Smith", "bob"));
    assert!(!maps.permits("office", "alice", "bob"));
    assert!(!maps.permits("office", "bob", "bob"));
    assert!(!maps.permits("office", "root", "postgres"));
    assert!(maps.permits("certs", "root", "postgres"));
    assert!(!maps.permits("none", "root", "postgres"));
    // Exact, case included.
    assert!(!maps.permits("office", "Alice", "alice"));
    assert!(!maps.permits("office", "alice", "Alice"));
    assert!(!maps.permits("Office", "alice", "alice"));
}

#[test]
fn all_and_quoted_all() {
    let maps = parse("m admin all\nm guest \"all\"");
    assert!(maps.permits("m", "admin", "anyone"));
    assert!(maps.permits("m", "admin", "all"));
    assert!(maps.permits("m", "guest", "all"));
    assert!(!maps.permits("m", "guest", "anyone"));
    assert!(!maps.permits("m", "other", "anyone"));
}

#[test]
fn regex_with_capture_substitution() {
    let maps = parse(
        "cn /^(.*)@example\\.com$ \\1\n\
         cn \"/^([a-z]+)\\.admin, (ops|dev)$\" \\1_\\1\n\
         cn /^svc-  service\n\
         cn /^root-(\\d+)$ all\n\
         cn /^(x)?y$ \\1y\n",
    );
    assert!(maps.permits("cn", "alice@example.com", "alice"));
    assert!(!maps.permits("cn", "alice@example.com", "bob"));
    assert!(!maps.permits("cn", "alice@example.org", "alice"));
    assert!(!maps.permits("cn", "alice@exampleXcom", "alice"));
    assert!(maps.permits("cn", "bob.admin, ops", "bob_bob"));
    assert!(!maps.permits("cn", "bob.admin, qa", "bob_bob"));
    // Unanchored at the end: a search, not a whole-name match.
    assert!(maps.permits("cn", "svc-anything", "service"));
    assert!(!maps.permits("cn", "my-svc-x", "service"));
    assert!(maps.permits("cn", "root-42", "whoever"));
    assert!(!maps.permits("cn", "root-x", "whoever"));
    // A first group that took no part permits nothing.
    assert!(maps.permits("cn", "xy", "xy"));
    assert!(!maps.permits("cn", "y", "y"));
}

#[test]
fn backslash_one_without_a_pattern_is_literal() {
    let maps = parse(r"m alice a\1");
    assert!(maps.permits("m", "alice", r"a\1"));
    assert!(!maps.permits("m", "alice", "a"));
}

#[test]
fn quoted_names_that_look_special() {
    let maps = parse("m bob \"+admins\"\nm carol \"/x\"");
    assert!(maps.permits("m", "bob", "+admins"));
    assert!(maps.permits("m", "carol", "/x"));
}

#[test]
fn continuation_lines() {
    let maps = parse("m \\\n  alice \\\n  alice\nm bob bob");
    assert!(maps.permits("m", "alice", "alice"));
    assert!(maps.permits("m", "bob", "bob"));
}

#[test]
fn every_parse_error_names_file_and_line() {
    let cases: &[(&str, &str)] = &[
        ("m", "1: end of line before the system user name"),
        ("\nm alice", "2: end of line before the database user name"),
        (
            "m a b c",
            "1: 4 fields where MAPNAME SYSTEM-USERNAME PG-USERNAME are expected",
        ),
        ("m,n a b", "1: the map name must be a single value, not a list"),
        ("m a,b c", "1: the system user name must be a single value, not a list"),
        ("m a b,c", "1: the database user name must be a single value, not a list"),
        (
            "m a +admins",
            "1: \"+admins\": group membership (+group) is not supported by pgring",
        ),
        (
            "m a /^x",
            "1: \"/^x\": regular expressions are not supported in PG-USERNAME",
        ),
        (
            "# c\nm /^(abc x",
            "2: invalid regular expression \"^(abc\": regex parse error: ^(abc error: unclosed group",
        ),
        (
            "m /^abc$ \\1",
            "1: \"\\1\" uses \\1 but the regular expression has no capture group",
        ),
        ("m \"a b", "1: unterminated quoted string"),
        ("m a, b", "1: the system user name must be a single value"),
        ("m a b,", "1: a comma-separated list ends with a comma"),
    ];
    for (text, expected) in cases {
        let message = error(text);
        let expected = format!("auth_ident_file {IDENT}:{expected}");
        assert!(
            message.starts_with(&expected),
            "{text:?}:\n  got  {message}\n  want {expected}"
        );
        assert!(!message.contains('\n'), "{message}");
    }
}

#[test]
fn oversized_regex_is_an_error() {
    let message = error("m /a{1000}{1000} b");
    assert!(
        message.starts_with(&format!(
            "auth_ident_file {IDENT}:1: invalid regular expression \"a{{1000}}{{1000}}\": "
        )),
        "{message}"
    );
}

#[test]
fn load_and_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ident.conf");
    std::fs::write(&path, "m alice bob\n").unwrap();
    let maps = IdentMaps::load(&path).unwrap();
    assert!(maps.permits("m", "alice", "bob"));
    std::fs::write(&path, "m alice bob\nm /( x\n").unwrap();
    let err = IdentMaps::load(&path).unwrap_err();
    assert_eq!(err.line(), Some(2));
    assert_eq!(err.path(), path);
    let missing = dir.path().join("nope.conf");
    let err = IdentMaps::load(&missing).unwrap_err();
    assert!(matches!(err, IdentError::Io { .. }));
    assert_eq!(err.line(), None);
    assert!(err
        .to_string()
        .starts_with(&format!("auth_ident_file {}: ", missing.display())));
}

#[test]
fn empty_file_has_no_maps() {
    let maps = parse("# nothing\n\n");
    assert!(maps.is_empty());
    assert!(!maps.has_map("m"));
    assert!(!maps.permits("m", "a", "a"));
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,200}") {
        let _ = IdentMaps::parse(&text, Path::new(IDENT));
    }

    #[test]
    fn parse_and_permits_never_panic(
        lines in proptest::collection::vec("[a-z/()\\\\1+\" ,.*^$#]{0,24}", 0..6),
        system in "[a-z()]{0,6}",
        user in "[a-z\\\\1]{0,6}",
    ) {
        let text = lines.join("\n");
        if let Ok(maps) = IdentMaps::parse(&text, Path::new(IDENT)) {
            let _ = maps.permits("m", &system, &user);
        }
    }
}
