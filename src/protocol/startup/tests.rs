use super::*;

use bytes::BytesMut;
use postgres_protocol::message::frontend as pg;
use proptest::prelude::*;

use crate::protocol::frontend;

/// An untagged packet: length word, code, payload.
fn packet(code: i32, payload: &[u8]) -> Vec<u8> {
    let len = i32::try_from(8 + payload.len()).unwrap();
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `name\0value\0 … \0`.
fn params_payload(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out.push(0);
    out
}

fn startup_packet(minor: u16, pairs: &[(&str, &str)]) -> Vec<u8> {
    packet(PROTOCOL_3_0 | i32::from(minor), &params_payload(pairs))
}

/// Decodes a buffer expected to hold exactly one whole packet.
fn decode_whole(buf: &[u8]) -> StartupPacket {
    let (packet, consumed) = decode_startup(buf)
        .expect("valid packet refused")
        .expect("whole packet reported incomplete");
    assert_eq!(consumed, buf.len());
    packet
}

fn malformed(what: &'static str) -> ProtocolError {
    ProtocolError::MalformedStartup { what }
}

fn pairs_of(params: &StartupParams) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

// ---- well-formed packets ----

#[test]
fn decodes_startup_message_keeping_parameter_order() {
    let pairs = [
        ("user", "alice"),
        ("database", "shop"),
        ("application_name", "psql"),
        ("options", "-c search_path=x"),
    ];
    let buf = startup_packet(0, &pairs);
    let StartupPacket::Startup { minor, params } = decode_whole(&buf) else {
        panic!("not a StartupMessage");
    };
    assert_eq!(minor, 0);
    assert_eq!(params.user(), Some("alice"));
    assert_eq!(params.database(), Some("shop"));
    assert_eq!(params.get("application_name"), Some("psql"));
    assert_eq!(params.get("missing"), None);
    let expected: Vec<_> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(pairs_of(&params), expected);
}

#[test]
fn database_defaults_to_user_name() {
    let buf = startup_packet(0, &[("user", "bob")]);
    let StartupPacket::Startup { params, .. } = decode_whole(&buf) else {
        panic!("not a StartupMessage");
    };
    assert_eq!(params.database(), Some("bob"));
}

#[test]
fn accepts_empty_parameter_values() {
    let buf = startup_packet(0, &[("user", ""), ("options", "")]);
    let StartupPacket::Startup { params, .. } = decode_whole(&buf) else {
        panic!("not a StartupMessage");
    };
    assert_eq!(params.user(), Some(""));
    assert_eq!(params.get("options"), Some(""));
}

#[test]
fn decodes_ssl_request() {
    assert_eq!(
        decode_whole(&packet(SSL_REQUEST_CODE, &[])),
        StartupPacket::SslRequest
    );
}

#[test]
fn decodes_gssenc_request() {
    assert_eq!(
        decode_whole(&packet(GSSENC_REQUEST_CODE, &[])),
        StartupPacket::GssEncRequest
    );
}

#[test]
fn decodes_cancel_request() {
    let mut payload = Vec::new();
    payload.extend_from_slice(&4242_i32.to_be_bytes());
    payload.extend_from_slice(&(-7_i32).to_be_bytes());
    assert_eq!(
        decode_whole(&packet(CANCEL_REQUEST_CODE, &payload)),
        StartupPacket::CancelRequest(CancelKey {
            process_id: 4242,
            secret_key: -7,
        })
    );
}

#[test]
fn accepts_protocol_3_2_with_minor_2() {
    let buf = startup_packet(2, &[("user", "u")]);
    let StartupPacket::Startup { minor, params } = decode_whole(&buf) else {
        panic!("not a StartupMessage");
    };
    assert_eq!(minor, 2);
    assert_eq!(params.user(), Some("u"));
}

#[test]
fn consumes_only_the_first_packet() {
    let mut buf = packet(SSL_REQUEST_CODE, &[]);
    let first = buf.len();
    buf.extend_from_slice(&startup_packet(0, &[("user", "u")]));
    let (decoded, consumed) = decode_startup(&buf).unwrap().unwrap();
    assert_eq!(decoded, StartupPacket::SslRequest);
    assert_eq!(consumed, first);
    let (decoded, consumed) = decode_startup(&buf[first..]).unwrap().unwrap();
    assert!(matches!(decoded, StartupPacket::Startup { .. }));
    assert_eq!(first + consumed, buf.len());
}

#[test]
fn cancel_key_debug_redacts_secret() {
    let key = CancelKey {
        process_id: 1,
        secret_key: 987_654_321,
    };
    let shown = format!("{key:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("987654321"), "{shown}");
}

// ---- incomplete input ----

#[test]
fn every_partial_prefix_needs_more() {
    let cancel = {
        let mut payload = 1_i32.to_be_bytes().to_vec();
        payload.extend_from_slice(&2_i32.to_be_bytes());
        packet(CANCEL_REQUEST_CODE, &payload)
    };
    for whole in [
        startup_packet(0, &[("user", "alice"), ("database", "db")]),
        packet(SSL_REQUEST_CODE, &[]),
        packet(GSSENC_REQUEST_CODE, &[]),
        cancel,
    ] {
        for cut in 0..whole.len() {
            assert_eq!(
                decode_startup(&whole[..cut]),
                Ok(None),
                "prefix of {cut} bytes"
            );
        }
        decode_whole(&whole);
    }
}

// ---- length checks ----

#[test]
fn rejects_startup_longer_than_10000_bytes_from_the_length_word_alone() {
    // Only the four length bytes have arrived: refused before waiting for the rest.
    assert_eq!(
        decode_startup(&10_001_i32.to_be_bytes()),
        Err(ProtocolError::StartupTooLong {
            len: 10_001,
            max: MAX_STARTUP_PACKET_LEN,
        })
    );
    assert!(matches!(
        decode_startup(&i32::MAX.to_be_bytes()),
        Err(ProtocolError::StartupTooLong { .. })
    ));
}

#[test]
fn accepts_startup_of_exactly_10000_bytes() {
    // user=u plus one padding parameter, sized so the packet is exactly the limit.
    let base = startup_packet(0, &[("user", "u"), ("x", "")]).len();
    let pad = "v".repeat(MAX_STARTUP_PACKET_LEN - base);
    let buf = startup_packet(0, &[("user", "u"), ("x", &pad)]);
    assert_eq!(buf.len(), MAX_STARTUP_PACKET_LEN);
    assert!(matches!(decode_whole(&buf), StartupPacket::Startup { .. }));
}

#[test]
fn rejects_negative_length_as_too_long() {
    assert!(matches!(
        decode_startup(&(-1_i32).to_be_bytes()),
        Err(ProtocolError::StartupTooLong { .. })
    ));
}

#[test]
fn rejects_lengths_below_8() {
    for len in 0..8_i32 {
        assert_eq!(
            decode_startup(&len.to_be_bytes()),
            Err(ProtocolError::StartupTooShort { len: len as usize }),
            "declared length {len}"
        );
    }
}

#[test]
fn rejects_cancel_request_of_the_wrong_length() {
    for payload_len in [0, 4, 7, 9, 12] {
        let buf = packet(CANCEL_REQUEST_CODE, &vec![0; payload_len]);
        assert_eq!(
            decode_startup(&buf),
            Err(malformed("cancel request of the wrong length")),
            "payload of {payload_len} bytes"
        );
    }
}

#[test]
fn rejects_encryption_requests_with_a_payload() {
    for code in [SSL_REQUEST_CODE, GSSENC_REQUEST_CODE] {
        assert_eq!(
            decode_startup(&packet(code, &[0])),
            Err(malformed("encryption request with a payload"))
        );
    }
}

// ---- protocol version ----

#[test]
fn rejects_protocol_2_0_and_4_0() {
    for (major, minor) in [(2_u16, 0_u16), (4, 0), (1, 0), (0, 0), (0xffff, 0xffff)] {
        let code = (i32::from(major) << 16) | i32::from(minor);
        let buf = packet(code, &params_payload(&[("user", "u")]));
        assert_eq!(
            decode_startup(&buf),
            Err(ProtocolError::UnsupportedProtocol { major, minor }),
            "protocol {major}.{minor}"
        );
    }
}

// ---- parameter list layout ----

#[test]
fn rejects_startup_without_user() {
    let buf = startup_packet(0, &[("database", "db")]);
    assert_eq!(
        decode_startup(&buf),
        Err(malformed(
            "no PostgreSQL user name specified in startup packet"
        ))
    );
    assert_eq!(
        decode_startup(&startup_packet(0, &[])),
        Err(malformed(
            "no PostgreSQL user name specified in startup packet"
        ))
    );
}

#[test]
fn rejects_non_utf8_parameter_name() {
    let buf = packet(PROTOCOL_3_0, b"user\0u\0\xff\xfe\0v\0\0");
    assert_eq!(
        decode_startup(&buf),
        Err(malformed("parameter name is not UTF-8"))
    );
}

#[test]
fn rejects_non_utf8_parameter_value() {
    let buf = packet(PROTOCOL_3_0, b"user\0\xc3\x28\0\0");
    assert_eq!(
        decode_startup(&buf),
        Err(malformed("parameter value is not UTF-8"))
    );
}

#[test]
fn rejects_empty_parameter_list() {
    assert_eq!(
        decode_startup(&packet(PROTOCOL_3_0, &[])),
        Err(malformed("missing terminator"))
    );
}

#[test]
fn rejects_missing_final_terminator() {
    let buf = packet(PROTOCOL_3_0, b"user\0u\0");
    assert_eq!(decode_startup(&buf), Err(malformed("missing terminator")));
}

#[test]
fn rejects_name_without_terminator() {
    let buf = packet(PROTOCOL_3_0, b"user\0u\0database");
    assert_eq!(decode_startup(&buf), Err(malformed("missing terminator")));
}

#[test]
fn rejects_parameter_without_value() {
    let buf = packet(PROTOCOL_3_0, b"user\0u\0database\0");
    assert_eq!(
        decode_startup(&buf),
        Err(malformed("parameter without a value"))
    );
    let buf = packet(PROTOCOL_3_0, b"user\0u\0database\0db");
    assert_eq!(
        decode_startup(&buf),
        Err(malformed("parameter without a value"))
    );
}

#[test]
fn rejects_bytes_after_the_final_terminator() {
    for trailer in [&b"x"[..], b"\0", b"user\0u\0\0"] {
        let mut payload = params_payload(&[("user", "u")]);
        payload.extend_from_slice(trailer);
        assert_eq!(
            decode_startup(&packet(PROTOCOL_3_0, &payload)),
            Err(malformed("bytes after the final terminator")),
            "trailer {trailer:?}"
        );
    }
}

// ---- cross-checks against postgres-protocol and our own encoders ----

#[test]
fn decodes_startup_message_encoded_by_postgres_protocol() {
    let pairs = [("user", "carol"), ("client_encoding", "UTF8")];
    let mut buf = BytesMut::new();
    pg::startup_message(pairs.iter().copied(), &mut buf).unwrap();
    let StartupPacket::Startup { minor, params } = decode_whole(&buf) else {
        panic!("not a StartupMessage");
    };
    assert_eq!(minor, 0);
    let expected: Vec<_> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(pairs_of(&params), expected);
    assert_eq!(params.database(), Some("carol"));
}

#[test]
fn decodes_ssl_request_encoded_by_postgres_protocol() {
    let mut buf = BytesMut::new();
    pg::ssl_request(&mut buf);
    assert_eq!(decode_whole(&buf), StartupPacket::SslRequest);
}

#[test]
fn decodes_cancel_request_encoded_by_postgres_protocol() {
    let mut buf = BytesMut::new();
    pg::cancel_request(i32::MIN, i32::MAX, &mut buf);
    assert_eq!(
        decode_whole(&buf),
        StartupPacket::CancelRequest(CancelKey {
            process_id: i32::MIN,
            secret_key: i32::MAX,
        })
    );
}

#[test]
fn our_encoders_match_postgres_protocol_byte_for_byte() {
    let pairs = [("user", "dave"), ("database", "d")];
    let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
    frontend::startup_message(&mut ours, pairs.iter().copied());
    pg::startup_message(pairs.iter().copied(), &mut theirs).unwrap();
    assert_eq!(ours, theirs);

    let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
    frontend::ssl_request(&mut ours);
    pg::ssl_request(&mut theirs);
    assert_eq!(ours, theirs);

    let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
    frontend::cancel_request(
        &mut ours,
        CancelKey {
            process_id: 5,
            secret_key: 6,
        },
    );
    pg::cancel_request(5, 6, &mut theirs);
    assert_eq!(ours, theirs);
}

#[test]
fn round_trips_our_own_encoders() {
    let mut buf = BytesMut::new();
    frontend::startup_message(&mut buf, [("user", "eve"), ("application_name", "app")]);
    let StartupPacket::Startup { minor, params } = decode_whole(&buf) else {
        panic!("not a StartupMessage");
    };
    assert_eq!(minor, 0);
    assert_eq!(
        pairs_of(&params),
        [
            ("user".to_owned(), "eve".to_owned()),
            ("application_name".to_owned(), "app".to_owned())
        ]
    );

    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    assert_eq!(decode_whole(&buf), StartupPacket::SslRequest);

    let key = CancelKey {
        process_id: -1,
        secret_key: 0x1234_5678,
    };
    let mut buf = BytesMut::new();
    frontend::cancel_request(&mut buf, key);
    assert_eq!(decode_whole(&buf), StartupPacket::CancelRequest(key));
}

#[test]
fn our_startup_encoder_drops_embedded_nuls() {
    let mut buf = BytesMut::new();
    frontend::startup_message(&mut buf, [("user", "a\0b")]);
    let StartupPacket::Startup { params, .. } = decode_whole(&buf) else {
        panic!("not a StartupMessage");
    };
    assert_eq!(params.user(), Some("ab"));
}

// ---- properties ----

/// Parameter names and values: non-empty names, no NULs.
fn arb_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = "[a-z_][a-z0-9_.]{0,15}";
    let value = "[^\0]{0,40}";
    (
        value,
        proptest::collection::vec((name, value), 0..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(user, mut pairs, at)| {
            let at = at.index(pairs.len() + 1);
            pairs.insert(at, ("user".to_owned(), user));
            pairs
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_nor_overconsume(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        if let Ok(Some((_, consumed))) = decode_startup(&bytes) {
            prop_assert!(consumed <= bytes.len());
            prop_assert!(consumed >= 8);
        }
    }

    #[test]
    fn arbitrary_payload_behind_valid_header_never_panics(
        code in prop_oneof![
            Just(PROTOCOL_3_0),
            Just(PROTOCOL_3_0 | 2),
            Just(SSL_REQUEST_CODE),
            Just(GSSENC_REQUEST_CODE),
            Just(CANCEL_REQUEST_CODE),
            any::<i32>(),
        ],
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let buf = packet(code, &payload);
        if let Ok(Some((_, consumed))) = decode_startup(&buf) {
            prop_assert_eq!(consumed, buf.len());
        }
    }

    #[test]
    fn valid_startup_split_anywhere_decodes_the_same(
        pairs in arb_pairs(),
        minor in 0_u16..4,
    ) {
        let borrowed: Vec<(&str, &str)> =
            pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let whole = startup_packet(minor, &borrowed);
        let expected = decode_whole(&whole);
        let StartupPacket::Startup { minor: got_minor, params } = &expected else {
            panic!("not a StartupMessage");
        };
        prop_assert_eq!(*got_minor, minor);
        prop_assert_eq!(pairs_of(params), pairs);

        for cut in 0..=whole.len() {
            let first = decode_startup(&whole[..cut]).unwrap();
            if cut < whole.len() {
                prop_assert_eq!(first, None, "first chunk of {} bytes", cut);
            } else {
                prop_assert_eq!(first, Some((expected.clone(), whole.len())));
            }
            // The second read sees the first chunk plus the rest.
            let mut buf = whole[..cut].to_vec();
            buf.extend_from_slice(&whole[cut..]);
            prop_assert_eq!(decode_whole(&buf), expected.clone());
        }
    }
}
