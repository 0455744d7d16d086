use super::*;

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use proptest::prelude::*;
use tokio_postgres::fallible_iterator::FallibleIterator;

use crate::protocol::framing::split_message;

/// Splits one whole encoded message into (tag, body), checking the length word.
fn split(buf: &[u8]) -> (u8, &[u8]) {
    let (tag, body, len) = split_message(buf, usize::MAX)
        .expect("bad frame")
        .expect("incomplete frame");
    assert_eq!(len, buf.len(), "encoder wrote more than one message");
    (tag, body)
}

/// Parses one whole message with postgres-protocol, which must consume all of it.
fn pg_parse(buf: &[u8]) -> Message {
    let mut buf = BytesMut::from(buf);
    let message = Message::parse(&mut buf)
        .expect("postgres-protocol refused the message")
        .expect("postgres-protocol wants more bytes");
    assert!(buf.is_empty(), "postgres-protocol left {} bytes", buf.len());
    message
}

fn encode(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut out = BytesMut::new();
    f(&mut out);
    out
}

/// (field type, value) of every field of an Error/NoticeResponse, per postgres-protocol.
fn pg_fields(fields: postgres_protocol::message::backend::ErrorFields<'_>) -> Vec<(u8, String)> {
    fields
        .map(|f| {
            Ok((
                f.type_(),
                String::from_utf8(f.value_bytes().to_vec()).unwrap(),
            ))
        })
        .collect()
        .expect("postgres-protocol refused the fields")
}

// ---- ErrorResponse / NoticeResponse ----

#[test]
fn error_response_parses_as_error_response_with_all_fields() {
    let out = encode(|out| {
        error_response(
            out,
            Severity::Fatal,
            "28P01",
            "password authentication failed for user \"x\"",
            Some("no pg_hba.conf entry"),
        )
    });
    let Message::ErrorResponse(body) = pg_parse(&out) else {
        panic!("not an ErrorResponse");
    };
    assert_eq!(
        pg_fields(body.fields()),
        [
            (b'S', "FATAL".to_owned()),
            (b'V', "FATAL".to_owned()),
            (b'C', "28P01".to_owned()),
            (
                b'M',
                "password authentication failed for user \"x\"".to_owned()
            ),
            (b'D', "no pg_hba.conf entry".to_owned()),
        ]
    );
}

#[test]
fn error_response_without_detail_has_no_detail_field() {
    let out = encode(|out| error_response(out, Severity::Error, "08P01", "bad", None));
    let Message::ErrorResponse(body) = pg_parse(&out) else {
        panic!("not an ErrorResponse");
    };
    let types: Vec<u8> = pg_fields(body.fields()).iter().map(|f| f.0).collect();
    assert_eq!(types, b"SVCM");
}

#[test]
fn warning_notice_and_log_are_sent_as_notice_response() {
    for severity in [Severity::Warning, Severity::Notice, Severity::Log] {
        let out = encode(|out| error_response(out, severity, "01000", "heads up", None));
        let Message::NoticeResponse(body) = pg_parse(&out) else {
            panic!("{severity:?} not sent as a NoticeResponse");
        };
        let fields = pg_fields(body.fields());
        assert_eq!(fields[0], (b'S', severity.as_str().to_owned()));
    }
}

#[test]
fn error_response_drops_nuls_inside_fields() {
    let out = encode(|out| error_response(out, Severity::Error, "XX000", "a\0b", Some("\0")));
    let Message::ErrorResponse(body) = pg_parse(&out) else {
        panic!("not an ErrorResponse");
    };
    let fields = pg_fields(body.fields());
    assert_eq!(fields[3], (b'M', "ab".to_owned()));
    assert_eq!(fields[4], (b'D', String::new()));
}

#[test]
fn error_response_round_trips_through_parse_error_response() {
    let out = encode(|out| error_response(out, Severity::Error, "57P01", "shutting down", None));
    let (tag, body) = split(&out);
    assert_eq!(tag, b'E');
    assert_eq!(
        parse_error_response(body),
        ErrorFields {
            severity: "ERROR".to_owned(),
            code: "57P01".to_owned(),
            message: "shutting down".to_owned(),
        }
    );
}

#[test]
fn parse_error_response_prefers_unlocalized_severity() {
    // A localized server sends S (translated) before V (always English).
    let body = b"SFEHLER\0VERROR\0C42601\0Msyntax\0\0";
    assert_eq!(parse_error_response(body).severity, "ERROR");
    // Pre-9.6 servers send S only.
    assert_eq!(parse_error_response(b"SERROR\0\0").severity, "ERROR");
    // V first, then S: V still wins.
    assert_eq!(
        parse_error_response(b"VFATAL\0SFATALE\0\0").severity,
        "FATAL"
    );
}

#[test]
fn parse_error_response_tolerates_malformed_bodies() {
    assert_eq!(parse_error_response(b""), ErrorFields::default());
    assert_eq!(parse_error_response(b"\0"), ErrorFields::default());
    // Truncated in the middle of a field: the whole fields before it are kept.
    let fields = parse_error_response(b"C08P01\0Mhalf a mess");
    assert_eq!(fields.code, "08P01");
    assert_eq!(fields.message, "");
    // Non-UTF-8 values are replaced, not refused.
    assert_eq!(parse_error_response(b"M\xff\0\0").message, "\u{fffd}");
}

// ---- Authentication ----

fn auth_cases() -> Vec<Authentication<'static>> {
    vec![
        Authentication::Ok,
        Authentication::CleartextPassword,
        Authentication::Md5Password {
            salt: [0, 0xff, 7, 0x80],
        },
        Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
        },
        Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256"],
        },
        Authentication::SaslContinue {
            data: b"r=abc,s=c2FsdA==,i=4096",
        },
        Authentication::SaslContinue { data: b"" },
        Authentication::SaslFinal {
            data: b"v=c2lnbmF0dXJl",
        },
        Authentication::Unsupported { code: 2 },
        Authentication::Unsupported { code: 7 },
        Authentication::Unsupported { code: 9 },
    ]
}

#[test]
fn authentication_round_trips_through_parse_authentication() {
    for auth in auth_cases() {
        let out = encode(|out| authentication(out, &auth));
        let (tag, body) = split(&out);
        assert_eq!(tag, b'R');
        assert_eq!(parse_authentication(body), Ok(auth));
    }
}

#[test]
fn authentication_is_parsed_by_postgres_protocol_as_the_same_request() {
    for auth in auth_cases() {
        let out = encode(|out| authentication(out, &auth));
        let parsed = pg_parse(&out);
        match (&auth, parsed) {
            (Authentication::Ok, Message::AuthenticationOk) => {}
            (Authentication::CleartextPassword, Message::AuthenticationCleartextPassword) => {}
            (Authentication::Md5Password { salt }, Message::AuthenticationMd5Password(body)) => {
                assert_eq!(body.salt(), *salt);
            }
            (Authentication::Sasl { mechanisms }, Message::AuthenticationSasl(body)) => {
                let theirs: Vec<&str> = body.mechanisms().collect().unwrap();
                assert_eq!(&theirs, mechanisms);
            }
            (Authentication::SaslContinue { data }, Message::AuthenticationSaslContinue(body)) => {
                assert_eq!(body.data(), *data);
            }
            (Authentication::SaslFinal { data }, Message::AuthenticationSaslFinal(body)) => {
                assert_eq!(body.data(), *data);
            }
            (Authentication::Unsupported { code: 2 }, Message::AuthenticationKerberosV5) => {}
            (Authentication::Unsupported { code: 7 }, Message::AuthenticationGss) => {}
            (Authentication::Unsupported { code: 9 }, Message::AuthenticationSspi) => {}
            (auth, _) => panic!("{auth:?} parsed by postgres-protocol as something else"),
        }
    }
}

#[test]
fn parse_authentication_refuses_malformed_bodies() {
    let malformed = |what| Err(ProtocolError::Malformed { tag: b'R', what });
    assert_eq!(parse_authentication(b""), malformed("missing code"));
    assert_eq!(parse_authentication(&[0, 0, 0]), malformed("missing code"));
    // md5 with a salt of the wrong length.
    assert_eq!(
        parse_authentication(&[0, 0, 0, 5, 1, 2, 3]),
        malformed("md5 salt")
    );
    assert_eq!(
        parse_authentication(&[0, 0, 0, 5, 1, 2, 3, 4, 5]),
        malformed("md5 salt")
    );
    // SASL mechanism list without its terminators.
    assert_eq!(
        parse_authentication(b"\0\0\0\x0aSCRAM-SHA-256"),
        malformed("mechanism list")
    );
    assert_eq!(
        parse_authentication(b"\0\0\0\x0aSCRAM-SHA-256\0"),
        malformed("mechanism list")
    );
    assert_eq!(
        parse_authentication(b"\0\0\0\x0a\xff\0\0"),
        malformed("mechanism name")
    );
}

#[test]
fn parse_authentication_reports_unknown_codes_as_unsupported() {
    assert_eq!(
        parse_authentication(&(-1_i32).to_be_bytes()),
        Ok(Authentication::Unsupported { code: -1 })
    );
    assert_eq!(
        parse_authentication(&8_i32.to_be_bytes()),
        Ok(Authentication::Unsupported { code: 8 })
    );
}

// ---- ParameterStatus, BackendKeyData, ReadyForQuery ----

#[test]
fn parameter_status_round_trips_through_ours_and_postgres_protocol() {
    for (name, value) in [
        ("server_version", "17.2"),
        ("TimeZone", "Europe/Berlin"),
        ("application_name", ""),
    ] {
        let out = encode(|out| parameter_status(out, name, value));
        let (tag, body) = split(&out);
        assert_eq!(tag, b'S');
        assert_eq!(parse_parameter_status(body), Ok((name, value)));
        let Message::ParameterStatus(body) = pg_parse(&out) else {
            panic!("not a ParameterStatus");
        };
        assert_eq!(body.name().unwrap(), name);
        assert_eq!(body.value().unwrap(), value);
    }
}

#[test]
fn parse_parameter_status_refuses_malformed_bodies() {
    let malformed = Err(ProtocolError::Malformed {
        tag: b'S',
        what: "name/value",
    });
    for body in [
        &b""[..],
        b"name",
        b"name\0",
        b"name\0value",
        b"\xff\0v\0",
        b"n\0\xff\0",
    ] {
        assert_eq!(parse_parameter_status(body), malformed, "body {body:?}");
    }
}

#[test]
fn backend_key_data_round_trips_through_ours_and_postgres_protocol() {
    for (process_id, secret_key) in [(1, 2), (i32::MAX, i32::MIN), (0, -1)] {
        let key = CancelKey {
            process_id,
            secret_key,
        };
        let out = encode(|out| backend_key_data(out, key));
        let (tag, body) = split(&out);
        assert_eq!(tag, b'K');
        assert_eq!(parse_backend_key_data(body), Ok(key));
        let Message::BackendKeyData(body) = pg_parse(&out) else {
            panic!("not a BackendKeyData");
        };
        assert_eq!(body.process_id(), process_id);
        assert_eq!(body.secret_key(), secret_key);
    }
}

#[test]
fn parse_backend_key_data_refuses_wrong_lengths() {
    for len in [0, 4, 7, 9, 36] {
        assert_eq!(
            parse_backend_key_data(&vec![1; len]),
            Err(ProtocolError::Malformed {
                tag: b'K',
                what: "key length",
            }),
            "body of {len} bytes"
        );
    }
}

#[test]
fn ready_for_query_round_trips_through_ours_and_postgres_protocol() {
    for status in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
        let out = encode(|out| ready_for_query(out, status));
        let (tag, body) = split(&out);
        assert_eq!(tag, b'Z');
        assert_eq!(parse_ready_for_query(body), Ok(status));
        let Message::ReadyForQuery(body) = pg_parse(&out) else {
            panic!("not a ReadyForQuery");
        };
        assert_eq!(body.status(), status.as_byte());
    }
}

#[test]
fn parse_ready_for_query_refuses_malformed_bodies() {
    for body in [&b""[..], b"X", b"II", b"\0"] {
        assert_eq!(
            parse_ready_for_query(body),
            Err(ProtocolError::Malformed {
                tag: b'Z',
                what: "transaction status",
            }),
            "body {body:?}"
        );
    }
}

#[test]
fn negotiate_protocol_version_lists_unrecognized_options() {
    let out = encode(|out| negotiate_protocol_version(out, 0, &["_pq_.a", "_pq_.b"]));
    let (tag, body) = split(&out);
    assert_eq!(tag, b'v');
    assert_eq!(body, b"\0\0\0\0\0\0\0\x02_pq_.a\0_pq_.b\0");
}

#[test]
fn encoders_append_to_existing_buffer() {
    let mut out = BytesMut::from(&b"prefix"[..]);
    ready_for_query(&mut out, TxStatus::Idle);
    parameter_status(&mut out, "a", "b");
    assert_eq!(&out[..6], b"prefix");
    let (tag, body, len) = split_message(&out[6..], usize::MAX).unwrap().unwrap();
    assert_eq!((tag, body), (b'Z', &b"I"[..]));
    assert_eq!(split(&out[6 + len..]), (b'S', &b"a\0b\0"[..]));
}

// ---- properties ----

// ---- DataRow / CommandComplete ----

#[test]
fn data_row_round_trips_through_ours_and_postgres_protocol() {
    let cases: [&[Option<&[u8]>]; 4] = [
        &[Some(b"alice"), Some(b"SCRAM-SHA-256$4096:c2FsdA==$a:b")],
        &[Some(b"bob"), None],
        &[],
        &[Some(b""), Some(b"\0\xff")],
    ];
    for values in cases {
        let out = encode(|out| data_row(out, values));
        let Message::DataRow(row) = pg_parse(&out) else {
            panic!("not a DataRow");
        };
        let theirs: Vec<Option<Vec<u8>>> = row
            .ranges()
            .map(|r| Ok(r.map(|r| row.buffer()[r].to_vec())))
            .collect()
            .unwrap();
        let (tag, body) = split(&out);
        assert_eq!(tag, b'D');
        let ours = parse_data_row(body).unwrap();
        assert_eq!(ours, values);
        let ours: Vec<Option<Vec<u8>>> = ours.iter().map(|v| v.map(<[u8]>::to_vec)).collect();
        assert_eq!(ours, theirs);
    }
}

#[test]
fn parse_data_row_refuses_malformed_bodies() {
    let malformed = |what| Err(ProtocolError::Malformed { tag: b'D', what });
    assert_eq!(parse_data_row(b""), malformed("column count"));
    assert_eq!(parse_data_row(b"\0"), malformed("column count"));
    // Announces a column, has none.
    assert_eq!(parse_data_row(b"\0\x01"), malformed("column length"));
    // A column longer than the body.
    assert_eq!(
        parse_data_row(b"\0\x01\0\0\0\x05abc"),
        malformed("column value")
    );
    // A negative length other than -1.
    assert_eq!(
        parse_data_row(b"\0\x01\xff\xff\xff\xfe"),
        malformed("column length")
    );
    // Bytes left over.
    assert_eq!(
        parse_data_row(b"\0\x01\0\0\0\x01ab"),
        malformed("bytes after the last column")
    );
    // A huge count with no columns behind it allocates nothing by the count.
    assert_eq!(parse_data_row(b"\xff\xff"), malformed("column length"));
}

#[test]
fn parse_command_complete_reads_the_tag() {
    assert_eq!(parse_command_complete(b"SELECT 1\0"), Ok("SELECT 1"));
    let malformed = Err(ProtocolError::Malformed {
        tag: b'C',
        what: "command tag",
    });
    assert_eq!(parse_command_complete(b"SELECT 1"), malformed);
    assert_eq!(parse_command_complete(b"SELECT\0 1\0"), malformed);
    assert_eq!(parse_command_complete(b"\xff\0"), malformed);
}

proptest! {
    #[test]
    fn parse_error_response_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = parse_error_response(&body);
    }

    #[test]
    fn body_parsers_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = parse_authentication(&body);
        let _ = parse_parameter_status(&body);
        let _ = parse_backend_key_data(&body);
        let _ = parse_ready_for_query(&body);
        let _ = parse_data_row(&body);
        let _ = parse_command_complete(&body);
    }

    #[test]
    fn error_response_fields_survive_round_trip(
        code in "[0-9A-Z]{5}",
        message in "[^\0]{0,100}",
        detail in proptest::option::of("[^\0]{0,100}"),
    ) {
        let out = encode(|out| {
            error_response(out, Severity::Error, &code, &message, detail.as_deref())
        });
        let Message::ErrorResponse(body) = pg_parse(&out) else {
            panic!("not an ErrorResponse");
        };
        let fields = pg_fields(body.fields());
        prop_assert_eq!(&fields[2], &(b'C', code.clone()));
        prop_assert_eq!(&fields[3], &(b'M', message.clone()));
        prop_assert_eq!(fields.get(4).map(|f| f.1.clone()), detail);
        let (_, body) = split(&out);
        let ours = parse_error_response(body);
        prop_assert_eq!(ours.code, code);
        prop_assert_eq!(ours.message, message);
    }
}
