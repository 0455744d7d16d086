use super::*;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

const HBA: &str = "/etc/pgring/hba.conf";

fn parse_with(text: &str, files: &[(&str, &str)]) -> Result<HbaRules, HbaError> {
    let files: HashMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
        .collect();
    HbaRules::parse(text, Path::new(HBA), &mut |p| {
        files
            .get(p)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    })
}

fn parse(text: &str) -> HbaRules {
    parse_with(text, &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    parse_with(text, &[]).unwrap_err().to_string()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn unix<'a>(database: &'a str, user: &'a str) -> HbaRequest<'a> {
    HbaRequest {
        unix: true,
        tls: false,
        addr: None,
        database,
        user,
    }
}

fn tcp<'a>(addr: &str, database: &'a str, user: &'a str) -> HbaRequest<'a> {
    HbaRequest {
        unix: false,
        tls: false,
        addr: ip(addr),
        database,
        user,
    }
}

fn tls<'a>(addr: &str, database: &'a str, user: &'a str) -> HbaRequest<'a> {
    HbaRequest {
        tls: true,
        ..tcp(addr, database, user)
    }
}

/// The line of the rule `req` finds, if any.
fn line(rules: &HbaRules, req: HbaRequest<'_>) -> Option<usize> {
    rules.find(&req).map(|r| r.line)
}

/// Whether a one-rule file whose address field is `address` matches `addr`.
fn address_matches(address: &str, addr: &str) -> bool {
    let rules = parse(&format!("host all all {address} trust"));
    rules.find(&tcp(addr, "db", "u")).is_some()
}

// ---- connection kinds ----

#[test]
fn connection_kinds_against_transports() {
    let cases = [
        ("local", [true, false, false]),
        ("host", [false, true, true]),
        ("hostssl", [false, false, true]),
        ("hostnossl", [false, true, false]),
    ];
    for (kind, [on_unix, on_tcp, on_tls]) in cases {
        let address = if kind == "local" { "" } else { "all" };
        let rules = parse(&format!("{kind} all all {address} trust"));
        assert_eq!(rules.len(), 1);
        assert_eq!(rules.rules()[0].kind.as_str(), kind);
        assert_eq!(
            rules.find(&unix("db", "u")).is_some(),
            on_unix,
            "{kind} on unix"
        );
        assert_eq!(
            rules.find(&tcp("10.0.0.1", "db", "u")).is_some(),
            on_tcp,
            "{kind} on tcp"
        );
        assert_eq!(
            rules.find(&tls("10.0.0.1", "db", "u")).is_some(),
            on_tls,
            "{kind} on tls"
        );
    }
}

#[test]
fn first_match_wins() {
    let rules = parse(
        "# comment\n\
         hostssl all   all   0.0.0.0/0   scram-sha-256\n\
         host    app   bob   10.0.0.0/8  reject\n\
         host    all   all   10.0.0.0/8  md5\n\
         host    all   all   all         password\n\
         local   all   all               peer\n\
         local   all   all               trust\n",
    );
    assert_eq!(rules.len(), 6);
    assert_eq!(line(&rules, tls("10.1.1.1", "app", "bob")), Some(2));
    assert_eq!(line(&rules, tcp("10.1.1.1", "app", "bob")), Some(3));
    assert_eq!(line(&rules, tcp("10.1.1.1", "app", "alice")), Some(4));
    assert_eq!(line(&rules, tcp("192.168.1.1", "app", "bob")), Some(5));
    assert_eq!(line(&rules, unix("app", "bob")), Some(6));
    let rule = rules.find(&tcp("10.1.1.1", "app", "bob")).unwrap();
    assert_eq!(rule.method, HbaMethod::Reject);
    assert_eq!(rule.file, Path::new(HBA));
}

#[test]
fn no_rule_means_none() {
    let rules = parse("");
    assert!(rules.is_empty());
    assert_eq!(rules.find(&unix("db", "u")), None);
    let rules = parse("local all all trust");
    assert_eq!(rules.find(&tcp("127.0.0.1", "db", "u")), None);
}

// ---- addresses ----

#[test]
fn ipv4_cidr_boundaries() {
    for (address, addr, expected) in [
        ("10.0.0.0/8", "10.0.0.0", true),
        ("10.0.0.0/8", "10.255.255.255", true),
        ("10.0.0.0/8", "11.0.0.0", false),
        ("10.0.0.0/8", "9.255.255.255", false),
        ("192.168.1.0/24", "192.168.1.77", true),
        ("192.168.1.0/24", "192.168.2.1", false),
        ("172.16.0.0/12", "172.31.255.255", true),
        ("172.16.0.0/12", "172.32.0.0", false),
        ("192.168.1.5/32", "192.168.1.5", true),
        ("192.168.1.5/32", "192.168.1.6", false),
        ("0.0.0.0/0", "1.2.3.4", true),
        ("0.0.0.0/0", "255.255.255.255", true),
        ("10.1.2.3/8", "10.200.0.1", true),
        ("192.168.1.5", "192.168.1.5", true),
        ("192.168.1.5", "192.168.1.4", false),
        ("all", "203.0.113.9", true),
        ("all", "2001:db8::1", true),
    ] {
        assert_eq!(
            address_matches(address, addr),
            expected,
            "{address} vs {addr}"
        );
    }
}

#[test]
fn ipv6_cidr() {
    for (address, addr, expected) in [
        ("::1/128", "::1", true),
        ("::1/128", "::2", false),
        ("::1", "::1", true),
        ("fe80::/10", "fe80::1", true),
        ("fe80::/10", "febf:ffff::1", true),
        ("fe80::/10", "fec0::1", false),
        ("2001:db8::/32", "2001:db8:ffff::1", true),
        ("2001:db8::/32", "2001:db9::1", false),
        ("::/0", "2001:db8::1", true),
        // An IPv6 rule never matches an IPv4 client, nor an IPv4 rule an IPv6 one.
        ("::/0", "10.0.0.1", false),
        ("::ffff:0:0/96", "10.0.0.1", false),
        ("0.0.0.0/0", "::1", false),
        ("0.0.0.0/0", "2001:db8::1", false),
    ] {
        assert_eq!(
            address_matches(address, addr),
            expected,
            "{address} vs {addr}"
        );
    }
}

#[test]
fn address_and_netmask_fields() {
    let rules = parse(
        "host all all 10.0.0.0 255.0.0.0 trust\n\
         host all all 192.168.1.7 255.255.255.255 md5\n\
         host all all 2001:db8:: ffff:ffff:: password\n\
         host all all 0.0.0.0 0.0.0.0 reject\n",
    );
    assert_eq!(line(&rules, tcp("10.9.8.7", "d", "u")), Some(1));
    assert_eq!(line(&rules, tcp("192.168.1.7", "d", "u")), Some(2));
    assert_eq!(line(&rules, tcp("192.168.1.8", "d", "u")), Some(4));
    assert_eq!(line(&rules, tcp("2001:db8:1::1", "d", "u")), Some(3));
    assert_eq!(line(&rules, tcp("2001:db9::1", "d", "u")), None);
    assert_eq!(rules.rules()[1].method, HbaMethod::Md5);
}

#[test]
fn ipv4_mapped_clients_match_ipv4_rules() {
    assert!(address_matches("10.0.0.0/8", "::ffff:10.1.2.3"));
    assert!(address_matches("10.1.2.3", "::ffff:10.1.2.3"));
    assert!(!address_matches("10.0.0.0/8", "::ffff:11.1.2.3"));
    // Only the mapped form: the deprecated compatible form is not IPv4.
    assert!(!address_matches("10.0.0.0/8", "::10.1.2.3"));
    // An IPv6 rule still sees a mapped client as IPv6.
    assert!(address_matches("::ffff:0:0/96", "::ffff:10.1.2.3"));
    let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
    let rules = parse("host all all 127.0.0.1/32 trust");
    let req = HbaRequest {
        addr: Some(mapped),
        ..tcp("::", "d", "u")
    };
    assert!(rules.find(&req).is_some());
}

#[test]
fn tcp_request_without_address_matches_only_all() {
    let rules = parse("host all all 0.0.0.0/0 md5\nhost all all all trust");
    let req = HbaRequest {
        addr: None,
        ..tcp("::", "d", "u")
    };
    assert_eq!(line(&rules, req), Some(2));
    let req = HbaRequest {
        addr: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ..req
    };
    assert_eq!(line(&rules, req), Some(2));
}

// ---- databases and users ----

#[test]
fn database_and_user_keywords_and_names() {
    let rules = parse(
        "local sameuser all trust\n\
         local replication all reject\n\
         local app,\"all\" bob,carol md5\n\
         local \"sameuser\",\"replication\" all password\n",
    );
    assert_eq!(line(&rules, unix("bob", "bob")), Some(1));
    assert_eq!(line(&rules, unix("app", "bob")), Some(3));
    assert_eq!(line(&rules, unix("app", "carol")), Some(3));
    assert_eq!(line(&rules, unix("all", "carol")), Some(3));
    assert_eq!(line(&rules, unix("app", "dave")), None);
    // Quoted keywords are names.
    assert_eq!(line(&rules, unix("sameuser", "dave")), Some(4));
    assert_eq!(line(&rules, unix("replication", "dave")), Some(4));
    assert_eq!(line(&rules, unix("other", "dave")), None);
    // Names compare exactly.
    assert_eq!(line(&rules, unix("App", "bob")), None);
    assert_eq!(line(&rules, unix("app", "Bob")), None);
    assert_eq!(line(&rules, unix("Bob", "bob")), None);
}

#[test]
fn quoted_all_user_is_a_name() {
    let rules = parse("local all \"all\" trust\nlocal all all reject");
    assert_eq!(line(&rules, unix("d", "all")), Some(1));
    assert_eq!(line(&rules, unix("d", "bob")), Some(2));
    // Quotes let names hold blanks, commas and '#'.
    let rules = parse(r#"local "my db" "o'brien, jr #2" trust"#);
    assert_eq!(line(&rules, unix("my db", "o'brien, jr #2")), Some(1));
}

#[test]
fn replication_matches_nothing() {
    let rules = parse("local replication all trust\nhost replication all all trust");
    assert_eq!(rules.len(), 2);
    assert_eq!(line(&rules, unix("replication", "u")), None);
    assert_eq!(line(&rules, tcp("10.0.0.1", "db", "u")), None);
}

#[test]
fn at_file_lists() {
    let files = [
        (
            "/etc/pgring/dbs.txt",
            "# databases\napp, billing\n\n\"all\" # a name\n",
        ),
        ("/etc/pgring/users/admins", "alice bob\n@more\n"),
        ("/etc/pgring/users/more", "carol,\"dave smith\""),
        ("/abs/users", "erin"),
        ("/etc/pgring/my users", "frank"),
    ];
    let rules = parse_with(
        "host @dbs.txt @users/admins all scram-sha-256\n\
         local \"@dbs.txt\" @/abs/users trust\n\
         local sameuser @\"my users\" md5\n",
        &files,
    )
    .unwrap();
    for (db, user) in [
        ("app", "alice"),
        ("billing", "bob"),
        ("all", "carol"),
        ("app", "dave smith"),
    ] {
        assert_eq!(
            line(&rules, tcp("10.0.0.1", db, user)),
            Some(1),
            "{db} {user}"
        );
    }
    assert_eq!(line(&rules, tcp("10.0.0.1", "other", "alice")), None);
    assert_eq!(line(&rules, tcp("10.0.0.1", "app", "zoe")), None);
    // A quoted "@..." is a name.
    assert_eq!(line(&rules, unix("@dbs.txt", "erin")), Some(2));
    assert_eq!(line(&rules, unix("app", "erin")), None);
    assert_eq!(line(&rules, unix("frank", "frank")), Some(3));
}

#[test]
fn empty_at_file_matches_nothing() {
    let rules = parse_with(
        "local @empty all trust",
        &[("/etc/pgring/empty", "# none\n")],
    )
    .unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(line(&rules, unix("d", "u")), None);
}

#[test]
fn continuation_lines() {
    let rules = parse(
        "# first\n\
         host app,\\\n\
         billing \\\n   bob \\\n 10.0.0.0/8\\\n  md5\n\
         local all all trust\n",
    );
    assert_eq!(rules.len(), 2);
    assert_eq!(line(&rules, tcp("10.0.0.1", "billing", "bob")), Some(2));
    assert_eq!(line(&rules, unix("x", "y")), Some(7));
}

// ---- methods and options ----

#[test]
fn methods_and_options() {
    let rules = parse(
        "local all all trust\n\
         local all all reject\n\
         host all all all password\n\
         host all all all md5\n\
         host all all all scram-sha-256\n\
         hostssl all all all cert\n\
         local all all peer map=local_users\n\
         hostssl all all all cert map=cn\n\
         hostssl all all all scram-sha-256 clientcert=verify-ca\n\
         hostssl all all all md5 clientcert=verify-full\n\
         hostssl all all all cert clientcert=verify-full \"map=a b\"\n\
         local all all peer\n",
    );
    let got: Vec<_> = rules
        .rules()
        .iter()
        .map(|r| (r.method, r.map.as_deref(), r.clientcert))
        .collect();
    use ClientCertOption::*;
    use HbaMethod::*;
    assert_eq!(
        got,
        vec![
            (Trust, None, None),
            (Reject, None, None),
            (Password, None, None),
            (Md5, None, None),
            (ScramSha256, None, None),
            (Cert, None, Some(VerifyFull)),
            (Peer, Some("local_users"), None),
            (Cert, Some("cn"), Some(VerifyFull)),
            (ScramSha256, None, Some(VerifyCa)),
            (Md5, None, Some(VerifyFull)),
            (Cert, Some("a b"), Some(VerifyFull)),
            (Peer, None, None),
        ]
    );
    assert_eq!(ScramSha256.to_string(), "scram-sha-256");
    assert_eq!(ConnKind::HostNoSsl.to_string(), "hostnossl");
}

// ---- errors ----

#[test]
fn every_parse_error_names_file_and_line() {
    let cases: &[(&str, &str)] = &[
        ("local all all", "1: end of line before the auth method"),
        ("\nlocal all", "2: end of line before the user field"),
        ("local", "1: end of line before the database field"),
        ("host all all", "1: end of line before the address field"),
        (
            "host all all 10.0.0.0/8",
            "1: end of line before the auth method",
        ),
        (
            "host all all 10.0.0.0 255.0.0.0",
            "1: end of line before the auth method",
        ),
        (
            "local all all ident",
            "1: unknown auth method \"ident\" (pgring knows trust, reject, password, md5, \
             scram-sha-256, cert and peer)",
        ),
        (
            "local all all ldap ldapserver=x",
            "1: unknown auth method \"ldap\"",
        ),
        ("local all all gss", "1: unknown auth method \"gss\""),
        ("local all all sspi", "1: unknown auth method \"sspi\""),
        ("local all all radius", "1: unknown auth method \"radius\""),
        ("local all all pam", "1: unknown auth method \"pam\""),
        ("local all all bsd", "1: unknown auth method \"bsd\""),
        ("local all all MD5", "1: unknown auth method \"MD5\""),
        (
            "local all all trust,md5",
            "1: the auth method must be a single value, not a list",
        ),
        (
            "hosts all all all trust",
            "1: unknown connection type \"hosts\" (expected local, host, hostssl or hostnossl)",
        ),
        (
            "local,host all all trust",
            "1: the connection type must be a single value, not a list",
        ),
        (
            "hostgssenc all all all trust",
            "1: \"hostgssenc\" lines are not supported: pgring has no GSSAPI encryption",
        ),
        (
            "hostnogssenc all all all trust",
            "1: \"hostnogssenc\" lines are not supported",
        ),
        (
            "include other.conf",
            "1: \"include\" directives are not supported",
        ),
        (
            "local all +admins trust",
            "1: \"+admins\": group membership (+group) is not supported by pgring",
        ),
        (
            "local all bob,+admins trust",
            "1: \"+admins\": group membership (+group) is not supported by pgring",
        ),
        (
            "local samerole all trust",
            "1: \"samerole\" is not supported: pgring does not know role membership",
        ),
        (
            "local samegroup all trust",
            "1: \"samegroup\" is not supported",
        ),
        (
            "local /^db all trust",
            "1: \"/^db\": regular expressions are not supported in the database field",
        ),
        (
            "local all /^u trust",
            "1: \"/^u\": regular expressions are not supported in the user field",
        ),
        (
            "host all all samehost trust",
            "1: \"samehost\" is not supported by pgring: write the address range",
        ),
        (
            "host all all samenet trust",
            "1: \"samenet\" is not supported by pgring",
        ),
        (
            "host all all db.example.com trust",
            "1: host names are not supported in the address field (\"db.example.com\")",
        ),
        (
            "host all all .example.com trust",
            "1: host names are not supported in the address field",
        ),
        (
            "host all all localhost trust",
            "1: host names are not supported in the address field",
        ),
        (
            "host all all \"all\" trust",
            "1: host names are not supported in the address field",
        ),
        (
            "host all all 10.0.0.256 trust",
            "1: invalid IP address \"10.0.0.256\"",
        ),
        (
            "host all all fe80::1%eth0 trust",
            "1: invalid IP address \"fe80::1%eth0\"",
        ),
        (
            "host all all 10.0.0.0/33 trust",
            "1: invalid CIDR mask length \"33\" in \"10.0.0.0/33\" (0 to 32)",
        ),
        (
            "host all all ::/129 trust",
            "1: invalid CIDR mask length \"129\" in \"::/129\" (0 to 128)",
        ),
        (
            "host all all 10.0.0.0/x trust",
            "1: invalid CIDR mask length \"x\"",
        ),
        (
            "host all all 10.0.0.0/ trust",
            "1: invalid CIDR mask length \"\"",
        ),
        (
            "host all all 10.0.0.0/+8 trust",
            "1: invalid CIDR mask length \"+8\"",
        ),
        (
            "host all all 10.0.0.0/8,::1 trust",
            "1: the address must be a single value, not a list",
        ),
        (
            "host all all 10.0.0.0 255.0.255.0 trust",
            "1: invalid netmask \"255.0.255.0\": its one bits must come first, without gaps",
        ),
        (
            "host all all 10.0.0.0 255.0.0.300 trust",
            "1: invalid netmask \"255.0.0.300\"",
        ),
        (
            "host all all 10.0.0.0 ffff:: trust",
            "1: netmask \"ffff::\" is not of the same address family as the address",
        ),
        (
            "host all all ::1 255.0.0.0 trust",
            "1: netmask \"255.0.0.0\" is not of the same address family",
        ),
        (
            "host all all 10.0.0.0 255.0.0.0,255.0.0.0 trust",
            "1: the netmask must be a single value, not a list",
        ),
        (
            "host all all all peer",
            "1: peer authentication is only supported on local lines",
        ),
        (
            "host all all all cert",
            "1: cert authentication is only supported on hostssl lines",
        ),
        (
            "local all all cert",
            "1: cert authentication is only supported on hostssl lines",
        ),
        (
            "hostnossl all all all cert",
            "1: cert authentication is only supported on hostssl lines",
        ),
        (
            "host all all all md5 clientcert=verify-ca",
            "1: clientcert is only supported on hostssl lines",
        ),
        (
            "local all all trust clientcert=verify-full",
            "1: clientcert is only supported on hostssl lines",
        ),
        (
            "hostssl all all all cert clientcert=verify-ca",
            "1: clientcert=verify-ca cannot be used with cert authentication",
        ),
        (
            "hostssl all all all md5 clientcert=no-verify",
            "1: clientcert=no-verify is not supported by pgring",
        ),
        (
            "hostssl all all all md5 clientcert=1",
            "1: invalid clientcert value \"1\" (expected verify-ca or verify-full)",
        ),
        (
            "hostssl all all all md5 clientcert=verify-ca clientcert=verify-ca",
            "1: the clientcert option is given twice",
        ),
        (
            "local all all peer map=a map=b",
            "1: the map option is given twice",
        ),
        (
            "local all all peer map=",
            "1: the map option needs a map name (map=NAME)",
        ),
        (
            "local all all md5 map=x",
            "1: the map option is only supported with the cert and peer auth methods, not md5",
        ),
        (
            "local all all peer include_realm=0",
            "1: unknown auth option \"include_realm\"",
        ),
        (
            "local all all peer map",
            "1: auth option \"map\" is not of the form name=value",
        ),
        (
            "local all all trust \"unterminated",
            "1: unterminated quoted string",
        ),
        (
            "local a,,b all trust",
            "1: empty item in a comma-separated list",
        ),
        (
            "local all bob,",
            "1: a comma-separated list ends with a comma",
        ),
        (
            "local @ all trust",
            "1: \"@\" must be followed by a file name",
        ),
        (
            "# one\n\n\\\n\nlocal all all nope",
            "5: unknown auth method \"nope\"",
        ),
        (
            "local all all \\\n \\\n nope",
            "1: unknown auth method \"nope\"",
        ),
    ];
    for (text, expected) in cases {
        let message = error(text);
        let expected = format!("auth_hba_file {HBA}:{expected}");
        assert!(
            message.starts_with(&expected),
            "{text:?}:\n  got  {message}\n  want {expected}"
        );
    }
}

#[test]
fn error_accessors() {
    let err = parse_with("\n\nlocal all all ident", &[]).unwrap_err();
    assert_eq!(err.path(), Path::new(HBA));
    assert_eq!(err.line(), Some(3));
}

#[test]
fn include_errors_name_the_right_file() {
    // A missing file: the line that names it, and the resolved path.
    let err = parse_with("local all all trust\nlocal @missing all trust", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "auth_hba_file /etc/pgring/hba.conf:2: cannot read @file /etc/pgring/missing: \
         No such file or directory"
    );
    assert_eq!(err.line(), Some(2));
    assert!(matches!(err, HbaError::Include { .. }));
    // A bad item inside an included file: that file and its line.
    let files = [("/etc/pgring/users", "alice\n# c\nbob +admins\n")];
    let err = parse_with("local all @users trust", &files).unwrap_err();
    assert_eq!(
        err.to_string(),
        "auth_hba_file /etc/pgring/users:3: \"+admins\": group membership (+group) is not \
         supported by pgring (list the users, or name a file of them with @file)"
    );
    assert_eq!(err.path(), Path::new("/etc/pgring/users"));
    // A lexical error inside an included file.
    let files = [("/etc/pgring/dbs", "a\n\"b\n")];
    let err = parse_with("local @dbs all trust", &files).unwrap_err();
    assert_eq!(
        err.to_string(),
        "auth_hba_file /etc/pgring/dbs:2: unterminated quoted string"
    );
    // A file that includes itself.
    let files = [("/etc/pgring/loop", "a @loop")];
    let err = parse_with("local @loop all trust", &files).unwrap_err();
    assert_eq!(
        err.to_string(),
        "auth_hba_file /etc/pgring/loop:1: @loop: @file lists nested more than 10 deep \
         (does a file include itself?)"
    );
}

#[test]
fn nested_lists_are_bounded() {
    // Nine files, each naming the next one ten times, then an empty one: 10^9
    // reads if unbounded.
    let texts: Vec<String> = (0..9).map(|i| format!("@f{} ", i + 1).repeat(10)).collect();
    let names: Vec<String> = (0..9).map(|i| format!("/etc/pgring/f{i}")).collect();
    let mut files: Vec<(&str, &str)> = names
        .iter()
        .zip(&texts)
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    files.push(("/etc/pgring/f9", ""));
    let err = parse_with("local @f0 all trust", &files).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "more than {MAX_INCLUDE_READS} @file reads for one hba file"
        )),
        "{err}"
    );
    // Many names: one file of 2 x 60 000 names, named twice in one field.
    let many = "n ".repeat(60_000);
    let files = [("/etc/pgring/many", many.as_str())];
    assert!(parse_with("local all @many trust", &files).is_ok());
    let err = parse_with("local all @many,@many trust", &files).unwrap_err();
    assert_eq!(
        err.to_string(),
        "auth_hba_file /etc/pgring/many:1: a field names more than 100000 databases or users"
    );
}

#[test]
fn load_reads_files_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lists")).unwrap();
    std::fs::write(dir.path().join("lists/users"), "alice\n@admins\n").unwrap();
    std::fs::write(dir.path().join("lists/admins"), "root\n").unwrap();
    let hba = dir.path().join("hba.conf");
    std::fs::write(&hba, "local all @lists/users trust\n").unwrap();
    let rules = HbaRules::load(&hba).unwrap();
    assert_eq!(rules.rules()[0].file, hba);
    assert!(rules.find(&unix("d", "alice")).is_some());
    assert!(rules.find(&unix("d", "root")).is_some());
    assert!(rules.find(&unix("d", "bob")).is_none());

    let missing = dir.path().join("nope.conf");
    let err = HbaRules::load(&missing).unwrap_err();
    assert!(matches!(err, HbaError::Io { .. }));
    assert_eq!(err.line(), None);
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("auth_hba_file {}: ", missing.display())),
        "{message}"
    );
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,200}") {
        let _ = parse_with(&text, &[]);
    }

    #[test]
    fn parse_and_find_never_panic(
        lines in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    Just("local"), Just("host"), Just("hostssl"), Just("hostnossl"),
                    Just("all"), Just("sameuser"), Just("replication"), Just("\"all\""),
                    Just("db,u"), Just("@inc"), Just("@"), Just("+g"), Just("/x"),
                    Just("10.0.0.0/8"), Just("::1/128"), Just("10.0.0.0"), Just("255.0.0.0"),
                    Just("ffff::"), Just("::ffff:1.2.3.4"), Just("1.2.3.4/99"), Just("0.0.0.0/0"),
                    Just("trust"), Just("reject"), Just("md5"), Just("cert"), Just("peer"),
                    Just("map=m"), Just("clientcert=verify-ca"), Just("clientcert=verify-full"),
                    Just("x=y"), Just("#"), Just("\\"), Just("\""), Just(","),
                ],
                0..8,
            ),
            0..6,
        ),
        include in "[a-z@ ,\"#\n\\\\+/]{0,40}",
        database in "[a-z]{0,3}",
        user in "[a-z]{0,3}",
        unix in any::<bool>(),
        tls in any::<bool>(),
        addr in proptest::option::of(any::<IpAddr>()),
    ) {
        let text = lines.iter().map(|l| l.join(" ")).collect::<Vec<_>>().join("\n");
        let files = [("/etc/pgring/inc", include.as_str())];
        if let Ok(rules) = parse_with(&text, &files) {
            let req = HbaRequest { unix, tls, addr, database: &database, user: &user };
            let _ = rules.find(&req);
        }
    }
}
