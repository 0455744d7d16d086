use super::*;

use postgres_protocol::message::frontend as pg;
use proptest::prelude::*;

use crate::protocol::framing::split_message;

fn encode(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut out = BytesMut::new();
    f(&mut out);
    out
}

/// The body of one whole encoded message, checking its tag and length word.
fn body_of(buf: &[u8], expected_tag: u8) -> &[u8] {
    let (tag, body, len) = split_message(buf, usize::MAX)
        .expect("bad frame")
        .expect("incomplete frame");
    assert_eq!(tag, expected_tag);
    assert_eq!(len, buf.len(), "encoder wrote more than one message");
    body
}

/// A PasswordMessage-tagged SASLInitialResponse body with an explicit data length.
fn sasl_initial_body(mechanism: &[u8], declared: i32, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.to_vec();
    body.push(0);
    body.extend_from_slice(&declared.to_be_bytes());
    body.extend_from_slice(data);
    body
}

fn malformed(what: &'static str) -> ProtocolError {
    ProtocolError::Malformed { tag: b'p', what }
}

// ---- encoders, byte for byte against postgres-protocol ----

#[test]
fn password_message_matches_postgres_protocol() {
    for password in [&b"secret"[..], b"", b"md5d41d8cd98f00b204e9800998ecf8427e"] {
        let ours = encode(|out| password_message(out, password));
        let theirs = encode(|out| pg::password_message(password, out).unwrap());
        assert_eq!(ours, theirs);
    }
}

#[test]
fn sasl_initial_response_matches_postgres_protocol() {
    for (mechanism, data) in [
        ("SCRAM-SHA-256", &b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"[..]),
        ("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=x"),
        ("SCRAM-SHA-256", b""),
    ] {
        let ours = encode(|out| sasl_initial_response(out, mechanism, data));
        let theirs = encode(|out| pg::sasl_initial_response(mechanism, data, out).unwrap());
        assert_eq!(ours, theirs);
    }
}

#[test]
fn sasl_response_matches_postgres_protocol() {
    for data in [&b"c=biws,r=abc,p=proof"[..], b"", b"\0\xff"] {
        let ours = encode(|out| sasl_response(out, data));
        let theirs = encode(|out| pg::sasl_response(data, out).unwrap());
        assert_eq!(ours, theirs);
    }
}

#[test]
fn query_matches_postgres_protocol() {
    for sql in ["select 1", "", "SET TimeZone = 'UTC'", "select 'ü'"] {
        let ours = encode(|out| query(out, sql));
        let theirs = encode(|out| pg::query(sql, out).unwrap());
        assert_eq!(ours, theirs);
    }
}

#[test]
fn query_drops_embedded_nuls() {
    let out = encode(|out| query(out, "select\0 1"));
    assert_eq!(body_of(&out, b'Q'), b"select 1\0");
}

#[test]
fn terminate_matches_postgres_protocol() {
    let ours = encode(terminate);
    let theirs = encode(pg::terminate);
    assert_eq!(ours, theirs);
    assert_eq!(&ours[..], b"X\0\0\0\x04");
}

#[test]
fn encoders_append_to_existing_buffer() {
    let mut ours = BytesMut::from(&b"xx"[..]);
    query(&mut ours, "select 1");
    terminate(&mut ours);
    let mut theirs = BytesMut::from(&b"xx"[..]);
    pg::query("select 1", &mut theirs).unwrap();
    pg::terminate(&mut theirs);
    assert_eq!(ours, theirs);
}

// ---- extended protocol, for pgring's parameterized queries ----

#[test]
fn parse_matches_postgres_protocol() {
    for (name, sql) in [
        (
            "",
            "SELECT usename, passwd FROM pg_shadow WHERE usename = $1",
        ),
        ("s1", "select 1"),
        ("", ""),
    ] {
        let ours = encode(|out| parse(out, name, sql));
        let theirs = encode(|out| pg::parse(name, sql, std::iter::empty(), out).unwrap());
        assert_eq!(ours, theirs);
    }
}

#[test]
fn bind_text_matches_postgres_protocol() {
    let cases: [&[Option<&str>]; 4] = [
        &[Some("alice")],
        &[Some("x'; DROP TABLE x; --\\\"\0"), None, Some("")],
        &[],
        &[Some("ünï")],
    ];
    for params in cases {
        let ours = encode(|out| bind_text(out, "", "", params));
        let theirs = encode(|out| {
            pg::bind(
                "",
                "",
                std::iter::empty(),
                params.iter().copied(),
                |value, buf| match value {
                    Some(v) => {
                        buf.extend_from_slice(v.as_bytes());
                        Ok(postgres_protocol::IsNull::No)
                    }
                    None => Ok(postgres_protocol::IsNull::Yes),
                },
                std::iter::empty(),
                out,
            )
            .unwrap_or_else(|_| panic!("postgres-protocol refused the Bind"))
        });
        assert_eq!(ours, theirs);
    }
}

#[test]
fn bind_text_carries_values_byte_for_byte() {
    let name = "o'brien\\\"; DROP TABLE x; --";
    let out = encode(|out| bind_text(out, "p", "s", &[Some(name)]));
    let body = body_of(&out, b'B');
    let mut expected = b"p\0s\0\0\0\0\x01".to_vec();
    expected.extend_from_slice(&(name.len() as i32).to_be_bytes());
    expected.extend_from_slice(name.as_bytes());
    expected.extend_from_slice(&[0, 0]);
    assert_eq!(body, &expected[..]);
}

#[test]
fn execute_and_sync_match_postgres_protocol() {
    for (portal, max_rows) in [("", 0), ("p", 2)] {
        let ours = encode(|out| execute(out, portal, max_rows));
        let theirs = encode(|out| pg::execute(portal, max_rows, out).unwrap());
        assert_eq!(ours, theirs);
    }
    let ours = encode(sync);
    let theirs = encode(pg::sync);
    assert_eq!(ours, theirs);
    assert_eq!(&ours[..], b"S\0\0\0\x04");
}

// ---- parse_password ----

#[test]
fn password_round_trips_through_parse_password() {
    for password in [&b"secret"[..], b"", "pässwörd".as_bytes(), b"\xff\xfe"] {
        let out = encode(|out| password_message(out, password));
        assert_eq!(parse_password(body_of(&out, b'p')), Ok(password));
    }
}

#[test]
fn parse_password_refuses_missing_or_early_terminator() {
    let refused = Err(malformed("password not NUL-terminated"));
    for body in [&b""[..], b"secret", b"sec\0ret\0", b"secret\0\0", b"\0\0"] {
        assert_eq!(parse_password(body), refused, "body {body:?}");
    }
}

// ---- parse_sasl_initial_response ----

#[test]
fn sasl_initial_response_round_trips() {
    for (mechanism, data) in [
        ("SCRAM-SHA-256", &b"n,,n=,r=nonce"[..]),
        ("SCRAM-SHA-256", b""),
        ("X", b"\0\0\0"),
    ] {
        let out = encode(|out| sasl_initial_response(out, mechanism, data));
        assert_eq!(
            parse_sasl_initial_response(body_of(&out, b'p')),
            Ok((mechanism, data))
        );
    }
}

#[test]
fn sasl_initial_response_from_postgres_protocol_parses() {
    let out =
        encode(|out| pg::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", out).unwrap());
    assert_eq!(
        parse_sasl_initial_response(body_of(&out, b'p')),
        Ok(("SCRAM-SHA-256", &b"n,,n=,r=abc"[..]))
    );
}

#[test]
fn sasl_initial_response_length_minus_one_means_no_data() {
    let body = sasl_initial_body(b"SCRAM-SHA-256", -1, b"");
    assert_eq!(
        parse_sasl_initial_response(&body),
        Ok(("SCRAM-SHA-256", &b""[..]))
    );
}

#[test]
fn rejects_sasl_initial_response_with_data_after_minus_one_length() {
    // PostgreSQL (pq_getmsgend) refuses bytes left after a -1 length.
    let body = sasl_initial_body(b"SCRAM-SHA-256", -1, b"n,,n=,r=x");
    assert_eq!(
        parse_sasl_initial_response(&body),
        Err(malformed("data length"))
    );
}

#[test]
fn rejects_sasl_initial_response_with_wrong_data_length() {
    for (declared, data) in [
        (5, &b"abcd"[..]),
        (3, b"abcd"),
        (0, b"a"),
        (1, b""),
        (-2, b""),
        (i32::MIN, b""),
    ] {
        let body = sasl_initial_body(b"SCRAM-SHA-256", declared, data);
        assert_eq!(
            parse_sasl_initial_response(&body),
            Err(malformed("data length")),
            "declared {declared}, {} data bytes",
            data.len()
        );
    }
}

#[test]
fn rejects_sasl_initial_response_with_truncated_length_word() {
    for cut in 0..4 {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&[0; 4][..cut]);
        assert_eq!(
            parse_sasl_initial_response(&body),
            Err(malformed("data length")),
            "{cut} length bytes"
        );
    }
}

#[test]
fn rejects_sasl_initial_response_without_mechanism_terminator() {
    assert_eq!(
        parse_sasl_initial_response(b""),
        Err(malformed("mechanism name"))
    );
    assert_eq!(
        parse_sasl_initial_response(b"SCRAM-SHA-256"),
        Err(malformed("mechanism name"))
    );
}

#[test]
fn rejects_sasl_initial_response_with_non_utf8_mechanism() {
    let body = sasl_initial_body(b"SCRAM\xff", 0, b"");
    assert_eq!(
        parse_sasl_initial_response(&body),
        Err(malformed("mechanism name"))
    );
}

// ---- quoting ----

#[test]
fn quote_literal_doubles_single_quotes() {
    assert_eq!(quote_literal("it's"), "'it''s'");
    assert_eq!(quote_literal("''"), "''''''");
    assert_eq!(quote_literal(""), "''");
    assert_eq!(quote_literal("UTC"), "'UTC'");
}

#[test]
fn quote_literal_uses_escape_string_for_backslashes() {
    assert_eq!(quote_literal(r"C:\dir"), r"E'C:\\dir'");
    assert_eq!(quote_literal(r"\'"), r"E'\\'''");
}

#[test]
fn quote_literal_drops_nuls() {
    assert_eq!(quote_literal("a\0b"), "'ab'");
    assert_eq!(quote_literal("\0"), "''");
}

#[test]
fn quote_ident_doubles_double_quotes_and_keeps_backslashes() {
    assert_eq!(quote_ident("public"), "\"public\"");
    assert_eq!(quote_ident("My \"Table\""), "\"My \"\"Table\"\"\"");
    assert_eq!(quote_ident(r"a\b"), "\"a\\b\"");
    assert_eq!(quote_ident("it's"), "\"it's\"");
    assert_eq!(quote_ident(""), "\"\"");
}

#[test]
fn quote_ident_drops_nuls() {
    assert_eq!(quote_ident("a\0b"), "\"ab\"");
}

/// Reads back a literal produced by `quote_literal` the way PostgreSQL's lexer would.
fn unquote_literal(quoted: &str) -> String {
    let (escape, rest) = match quoted.strip_prefix('E') {
        Some(rest) => (true, rest),
        None => (false, quoted),
    };
    let inner = rest
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .expect("not quoted");
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => assert_eq!(chars.next(), Some('\''), "lone quote in {quoted}"),
            '\\' if escape => {
                assert_eq!(chars.next(), Some('\\'), "unknown escape in {quoted}");
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

proptest! {
    #[test]
    fn quote_literal_reads_back_as_the_value_without_nuls(value in any::<String>()) {
        let quoted = quote_literal(&value);
        prop_assert!(!quoted.contains('\0'));
        prop_assert_eq!(unquote_literal(&quoted), value.replace('\0', ""));
    }

    #[test]
    fn quote_ident_reads_back_as_the_name_without_nuls(name in any::<String>()) {
        let quoted = quote_ident(&name);
        let inner = quoted
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .expect("not quoted");
        prop_assert!(!inner.replace("\"\"", "").contains('"'));
        prop_assert_eq!(inner.replace("\"\"", "\""), name.replace('\0', ""));
    }

    #[test]
    fn login_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_password(&body);
        if let Ok((_, data)) = parse_sasl_initial_response(&body) {
            prop_assert!(data.len() <= body.len());
        }
    }
}
