//! Tests for the SCRAM module: secret format, RFC 7677 vector for both roles,
//! round trips (ours↔ours, pass-through, channel binding), interop with the
//! independent `postgres-protocol` client, error classification, and
//! never-panic property tests.

use super::*;
use proptest::prelude::*;

// Verifier for password "pencil" with the RFC 7677 salt and 4096 iterations,
// computed independently with Python:
//   sp = hashlib.pbkdf2_hmac('sha256', b'pencil', b64decode(salt), 4096)
//   ck = hmac.new(sp, b'Client Key', 'sha256').digest()
//   sk = hmac.new(sp, b'Server Key', 'sha256').digest()
//   stored = hashlib.sha256(ck).digest()
const PENCIL_VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
// hex(ck) from the same computation.
const PENCIL_CLIENT_KEY_HEX: &str =
    "a60fc923d67e8644a92d16b96eda5ef4656b0c725c484374be25535576996e8b";

// RFC 7677 section 3 exchange (proof and signature re-derived with Python
// hmac/hashlib from the values above; they match the RFC text).
const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_SUFFIX: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &[u8] =
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

/// Cheap iteration count for tests that don't need the RFC vector.
const FAST_ITER: u32 = 16;

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn pencil() -> ScramSecret {
    ScramSecret::parse(PENCIL_VERIFIER).unwrap()
}

fn fast_secret(password: &str) -> ScramSecret {
    ScramSecret::from_password(password, b"0123456789abcdef", FAST_ITER)
}

/// Runs our client against our server; returns the server's error if any,
/// else the recovered client key and the client's final result.
fn exchange(
    secret: &ScramSecret,
    credential: ScramCredential,
) -> Result<(ClientKey, Result<(), ScramError>), ScramError> {
    let (client, first) = ScramClient::new(credential, "clientnonce")?;
    let (server, server_first) = ScramServer::start(secret, "servernonce", &first)?;
    let (client, client_final) = client.handle_server_first(&server_first)?;
    let (server_final, key) = server.finish(&client_final)?;
    Ok((key, client.finish(&server_final)))
}

// --- secret -----------------------------------------------------------------

#[test]
fn secret_parse_display_round_trip() {
    let s = pencil();
    assert_eq!(s.iterations(), 4096);
    assert_eq!(B64.encode(s.salt()), "W22ZaJ0SNY7soEsUEjb6gQ==");
    assert_eq!(s.to_string(), PENCIL_VERIFIER);
}

#[test]
fn secret_from_password_matches_python() {
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let s = ScramSecret::from_password("pencil", &salt, 4096);
    assert_eq!(s, pencil());
    assert_eq!(s.to_string(), PENCIL_VERIFIER);
    assert!(s.matches_client_key(&ClientKey::from_bytes(hex32(PENCIL_CLIENT_KEY_HEX))));
    assert!(!s.matches_client_key(&ClientKey::from_bytes([0; 32])));
    // Zero iterations are clamped to one.
    assert_eq!(ScramSecret::from_password("x", b"s", 0).iterations(), 1);
}

#[test]
fn secret_parse_errors() {
    let key = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
    let cases: Vec<(String, SecretError)> = vec![
        ("md5abc".into(), SecretError::MissingPrefix),
        ("SCRAM-SHA-256$".into(), SecretError::BadStructure),
        (
            "SCRAM-SHA-256$4096:c2FsdA==".into(),
            SecretError::BadStructure,
        ),
        (
            format!("SCRAM-SHA-256$4096$c2FsdA==:{key}:{key}"),
            SecretError::BadStructure,
        ),
        (
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}:x"),
            SecretError::BadStructure,
        ),
        (
            format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
            SecretError::BadIterations,
        ),
        (
            format!("SCRAM-SHA-256$-1:c2FsdA==${key}:{key}"),
            SecretError::BadIterations,
        ),
        (
            format!("SCRAM-SHA-256$+5:c2FsdA==${key}:{key}"),
            SecretError::BadIterations,
        ),
        (
            format!("SCRAM-SHA-256$99999999999:c2FsdA==${key}:{key}"),
            SecretError::BadIterations,
        ),
        (
            format!("SCRAM-SHA-256$4096:!!${key}:{key}"),
            SecretError::BadSalt,
        ),
        (
            format!("SCRAM-SHA-256$4096:${key}:{key}"),
            SecretError::BadSalt,
        ),
        (
            format!("SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:{key}"),
            SecretError::BadKey("StoredKey"),
        ),
        (
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:"),
            SecretError::BadKey("ServerKey"),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(ScramSecret::parse(&input), Err(want), "{input}");
    }
}

#[test]
fn debug_redacts_keys() {
    let s = pencil();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("WG5d8oPm"), "{dbg}");
    assert!(!dbg.contains("wfPLwcE6"), "{dbg}");
    assert!(dbg.contains("4096"), "{dbg}");

    let cred = ScramCredential::Password("hunter2".into());
    assert!(!format!("{cred:?}").contains("hunter2"));
    let (client, _) = ScramClient::new(cred, "n").unwrap();
    assert!(!format!("{client:?}").contains("hunter2"));

    let key = ClientKey::from_bytes([0xab; 32]);
    let cred = ScramCredential::Keys {
        client_key: [0xab; 32],
        server_key: Some([0xcd; 32]),
    };
    for dbg in [format!("{key:?}"), format!("{cred:?}")] {
        assert!(!dbg.contains("171") && !dbg.contains("ab"), "{dbg}");
        assert!(!dbg.contains("205") && !dbg.contains("cd"), "{dbg}");
    }
    let (server, _) = ScramServer::start(&s, "x", b"n,,n=,r=abc").unwrap();
    assert!(!format!("{server:?}").contains("WG5d8oPm"));
}

// --- RFC 7677 vector ----------------------------------------------------------

#[test]
fn rfc7677_server_side() {
    let (server, server_first) =
        ScramServer::start(&pencil(), RFC_SERVER_SUFFIX, RFC_CLIENT_FIRST).unwrap();
    assert_eq!(server_first, RFC_SERVER_FIRST);
    let (server_final, key) = server.finish(RFC_CLIENT_FINAL).unwrap();
    assert_eq!(server_final, RFC_SERVER_FINAL);
    assert_eq!(key.as_bytes(), &hex32(PENCIL_CLIENT_KEY_HEX));
}

#[test]
fn rfc7677_client_side_password() {
    let (client, first) = ScramClient::with_options(
        ScramCredential::Password("pencil".into()),
        RFC_CLIENT_NONCE,
        "user",
        ClientChannelBinding::Unsupported,
    )
    .unwrap();
    assert_eq!(first, RFC_CLIENT_FIRST);
    let (client, client_final) = client.handle_server_first(RFC_SERVER_FIRST).unwrap();
    assert_eq!(client_final, RFC_CLIENT_FINAL);
    assert!(client.verifies_server());
    client.finish(RFC_SERVER_FINAL).unwrap();
}

#[test]
fn rfc7677_client_side_keys() {
    let (client, _) = ScramClient::with_options(
        ScramCredential::Keys {
            client_key: hex32(PENCIL_CLIENT_KEY_HEX),
            server_key: Some(*pencil().server_key()),
        },
        RFC_CLIENT_NONCE,
        "user",
        ClientChannelBinding::Unsupported,
    )
    .unwrap();
    let (client, client_final) = client.handle_server_first(RFC_SERVER_FIRST).unwrap();
    assert_eq!(client_final, RFC_CLIENT_FINAL);
    client.finish(RFC_SERVER_FINAL).unwrap();
}

#[test]
fn client_first_is_postgres_style() {
    let (_, first) = ScramClient::new(ScramCredential::Password("x".into()), "abc").unwrap();
    assert_eq!(first, b"n,,n=,r=abc");
    let (_, first) = ScramClient::with_options(
        ScramCredential::Password("x".into()),
        "abc",
        "a,b=c",
        ClientChannelBinding::Unsupported,
    )
    .unwrap();
    assert_eq!(first, b"n,,n=a=2Cb=3Dc,r=abc");
}

// --- round trips --------------------------------------------------------------

#[test]
fn round_trip_ours_and_pass_through() {
    let secret = fast_secret("correct horse");
    let (key, client_result) =
        exchange(&secret, ScramCredential::Password("correct horse".into())).unwrap();
    client_result.unwrap();
    assert!(secret.matches_client_key(&key));

    // Pass-through: log in to a "server" holding the same verifier with the
    // recovered ClientKey and the verifier's ServerKey.
    let (key2, client_result) = exchange(
        &secret,
        ScramCredential::Keys {
            client_key: *key.as_bytes(),
            server_key: Some(*secret.server_key()),
        },
    )
    .unwrap();
    client_result.unwrap();
    assert_eq!(key2, key);

    // Without ServerKey the login still works but the server is unverified.
    let (client, first) = ScramClient::new(
        ScramCredential::Keys {
            client_key: *key.as_bytes(),
            server_key: None,
        },
        "c",
    )
    .unwrap();
    let (server, sf) = ScramServer::start(&secret, "s", &first).unwrap();
    let (client, cf) = client.handle_server_first(&sf).unwrap();
    assert!(!client.verifies_server());
    let (server_final, _) = server.finish(&cf).unwrap();
    client.finish(&server_final).unwrap();
}

#[test]
fn wrong_password_is_auth_failure() {
    let err = exchange(
        &fast_secret("right"),
        ScramCredential::Password("wrong".into()),
    )
    .unwrap_err();
    assert_eq!(err, ScramError::AuthFailed);
    assert!(err.is_auth_failure());
    assert!(!err.is_protocol_violation());
}

#[test]
fn server_with_wrong_verifier_is_detected_by_client() {
    // The client knows the real ServerKey; the server answers with another.
    let secret = fast_secret("pw");
    let (client, first) = ScramClient::new(ScramCredential::Password("pw".into()), "c").unwrap();
    let (server, sf) = ScramServer::start(&secret, "s", &first).unwrap();
    let (client, cf) = client.handle_server_first(&sf).unwrap();
    let (mut server_final, _) = server.finish(&cf).unwrap();
    // Replace the signature with a valid-looking but wrong one.
    server_final.truncate(2);
    server_final.extend_from_slice(B64.encode([7u8; 32]).as_bytes());
    let err = client.finish(&server_final).unwrap_err();
    assert_eq!(err, ScramError::ServerSignatureMismatch);
    assert!(err.is_auth_failure());
}

#[test]
fn channel_binding_negotiation() {
    let secret = fast_secret("pw");
    let cbdata = b"certificate-hash".to_vec();
    let run = |client_cb: ClientChannelBinding, server_cb: ServerChannelBinding<'_>| {
        let (client, first) = ScramClient::with_channel_binding(
            ScramCredential::Password("pw".into()),
            "c",
            client_cb,
        )?;
        let (server, sf) =
            ScramServer::start_with_channel_binding(&secret, "s", &first, server_cb)?;
        let (client, cf) = client.handle_server_first(&sf)?;
        let (fin, _) = server.finish(&cf)?;
        client.finish(&fin)
    };
    use ClientChannelBinding as C;
    use ServerChannelBinding as S;
    run(C::Unsupported, S::NotOffered).unwrap();
    run(C::Unsupported, S::OfferedNotSelected).unwrap();
    run(C::SupportedNotOffered, S::NotOffered).unwrap();
    run(
        C::TlsServerEndPoint(cbdata.clone()),
        S::TlsServerEndPoint(&cbdata),
    )
    .unwrap();

    let cb_err = |r: Result<(), ScramError>| match r {
        Err(e @ ScramError::ChannelBinding(_)) => assert!(e.is_protocol_violation()),
        other => panic!("expected channel binding error, got {other:?}"),
    };
    cb_err(run(C::SupportedNotOffered, S::OfferedNotSelected));
    cb_err(run(C::Unsupported, S::TlsServerEndPoint(&cbdata)));
    cb_err(run(C::TlsServerEndPoint(cbdata.clone()), S::NotOffered));
    cb_err(run(
        C::TlsServerEndPoint(cbdata.clone()),
        S::OfferedNotSelected,
    ));
    cb_err(run(
        C::TlsServerEndPoint(b"other".to_vec()),
        S::TlsServerEndPoint(&cbdata),
    ));
    assert_eq!(C::TlsServerEndPoint(vec![]).mechanism(), SCRAM_SHA_256_PLUS);
    assert_eq!(C::Unsupported.mechanism(), SCRAM_SHA_256);

    // Unknown binding type.
    let err = ScramServer::start_with_channel_binding(
        &secret,
        "s",
        b"p=tls-unique,,n=,r=abc",
        S::TlsServerEndPoint(&cbdata),
    )
    .unwrap_err();
    assert!(matches!(err, ScramError::ChannelBinding(_)));
}

#[test]
fn client_final_cbind_must_echo_gs2_header() {
    // Client said "y,," but claims "n,," (biws) in c=.
    let secret = fast_secret("pw");
    let (server, _) = ScramServer::start(&secret, "s", b"y,,n=,r=abc").unwrap();
    let err = server.finish(b"c=biws,r=abcs,p=AAAA").unwrap_err();
    assert!(matches!(err, ScramError::ChannelBinding(_)), "{err:?}");
}

// --- interop with postgres-protocol -------------------------------------------

fn pg_client_against_ours(
    secret: &ScramSecret,
    password: &[u8],
    cb: postgres_protocol::authentication::sasl::ChannelBinding,
) -> Result<(), ScramError> {
    use postgres_protocol::authentication::sasl::ScramSha256;
    let mut pg = ScramSha256::new(password, cb);
    let (server, server_first) = ScramServer::start(secret, &random_nonce(), pg.message())?;
    pg.update(&server_first).unwrap();
    let (server_final, key) = server.finish(pg.message())?;
    assert!(secret.matches_client_key(&key));
    pg.finish(&server_final).unwrap();
    Ok(())
}

#[test]
fn interop_postgres_protocol_client() {
    use postgres_protocol::authentication::sasl::ChannelBinding;
    let secret = fast_secret("pencil");
    pg_client_against_ours(&secret, b"pencil", ChannelBinding::unsupported()).unwrap();
    pg_client_against_ours(&secret, b"pencil", ChannelBinding::unrequested()).unwrap();
    // RFC verifier (4096 iterations) too.
    pg_client_against_ours(&pencil(), b"pencil", ChannelBinding::unsupported()).unwrap();
    let err =
        pg_client_against_ours(&secret, b"pencil2", ChannelBinding::unsupported()).unwrap_err();
    assert_eq!(err, ScramError::AuthFailed);
}

// --- malformed input ------------------------------------------------------------

fn assert_protocol<T: fmt::Debug>(r: Result<T, ScramError>, what: &str) {
    match r {
        Err(e) if e.is_protocol_violation() && !e.is_auth_failure() => {}
        other => panic!("{what}: expected protocol violation, got {other:?}"),
    }
}

#[test]
fn malformed_client_first() {
    let s = fast_secret("pw");
    let cases: &[&[u8]] = &[
        b"",
        b"n",
        b"n,",
        b"x,,n=,r=abc",
        b"n,a=someone,n=,r=abc",
        b"n,,m=ext,n=,r=abc",
        b"n,,r=abc",
        b"n,,n=,r=",
        b"n,,n=,x=abc",
        b"n,,n=",
        b"n,,n=,r=ab\x01c",
        b"n,,n=,r=ab\xffc",
        b"n,,n=,r=abc,,",
        b"n,,n=,r=abc,1=x",
    ];
    for c in cases {
        assert_protocol(ScramServer::start(&s, "s", c), &String::from_utf8_lossy(c));
    }
    // Extensions and arbitrary user names are accepted.
    ScramServer::start(&s, "s", b"n,,n=anything at all,r=abc,x=ext").unwrap();
}

#[test]
fn malformed_or_tampered_client_final() {
    let s = fast_secret("pw");
    let (client, first) = ScramClient::new(ScramCredential::Password("pw".into()), "cn").unwrap();
    let (_, sf) = ScramServer::start(&s, "sn", &first).unwrap();
    let (_, good) = client.handle_server_first(&sf).unwrap();
    let good = String::from_utf8(good).unwrap();
    let proof = good.rsplit_once(",p=").unwrap().1.to_owned();

    let tampered_nonce = good.replace("r=cnsn", "r=cnsX");
    let tampered_cbind = good.replace("c=biws", "c=eSws");
    let cases: Vec<String> = vec![
        String::new(),
        "c=biws".into(),
        "c=biws,r=cnsn".into(),
        format!("c=biws,r=cnsn,x={proof}"),
        format!("r=cnsn,c=biws,p={proof}"),
        format!("c=biws,r=cnsn,p={proof},x=1"),
        format!("c=biws,r=cnsn,1,p={proof}"),
        "c=biws,r=cnsn,p=!!!".into(),
        "c=biws,r=cnsn,p=AAAA".into(),
        format!("c=biws,r=cnsn,p={}", B64.encode([0u8; 33])),
        tampered_nonce,
        tampered_cbind,
    ];
    for c in &cases {
        let (server, _) = ScramServer::start(&s, "sn", &first).unwrap();
        assert_protocol(server.finish(c.as_bytes()), c);
    }
    // A wrong proof of the right shape is an auth failure.
    let (server, _) = ScramServer::start(&s, "sn", &first).unwrap();
    let bad = format!("c=biws,r=cnsn,p={}", B64.encode([1u8; 32]));
    assert_eq!(
        server.finish(bad.as_bytes()).unwrap_err(),
        ScramError::AuthFailed
    );
    // Extensions before the proof are part of the signed message; the good
    // message still verifies.
    let (server, _) = ScramServer::start(&s, "sn", &first).unwrap();
    server.finish(good.as_bytes()).unwrap();
}

#[test]
fn malformed_server_first() {
    let new_client = || {
        ScramClient::new(ScramCredential::Password("pw".into()), "cn")
            .unwrap()
            .0
    };
    let cases: &[&[u8]] = &[
        b"",
        b"r=cnX",
        b"r=cnX,s=c2FsdA==",
        b"m=x,r=cnX,s=c2FsdA==,i=16",
        b"r=cn,s=c2FsdA==,i=16",
        b"r=XcnX,s=c2FsdA==,i=16",
        b"r=c,s=c2FsdA==,i=16",
        b"r=cnX,s=!!,i=16",
        b"r=cnX,s=,i=16",
        b"r=cnX,s=c2FsdA==,i=",
        b"r=cnX,s=c2FsdA==,i=-1",
        b"r=cnX,s=c2FsdA==,i=0",
        b"r=cnX,s=c2FsdA==,i=10000001",
        b"r=cnX,s=c2FsdA==,i=99999999999999",
        b"r=cnX,s=c2FsdA==,i=16,,",
        b"s=c2FsdA==,r=cnX,i=16",
    ];
    for c in cases {
        assert_protocol(
            new_client().handle_server_first(c),
            &String::from_utf8_lossy(c),
        );
    }
    assert_eq!(
        new_client()
            .handle_server_first(b"r=cnX,s=c2FsdA==,i=10000001")
            .unwrap_err(),
        ScramError::IterationCount(10_000_001)
    );
    new_client()
        .handle_server_first(b"r=cnX,s=c2FsdA==,i=16,x=ext")
        .unwrap();
}

#[test]
fn malformed_server_final_and_server_error() {
    let final_client = || {
        let (c, _) = ScramClient::new(ScramCredential::Password("pw".into()), "cn").unwrap();
        c.handle_server_first(b"r=cnX,s=c2FsdA==,i=16").unwrap().0
    };
    for c in [&b""[..], b"x=1", b"v=!!", b"v=AAAA", b"v=", b"e"] {
        assert_protocol(final_client().finish(c), &String::from_utf8_lossy(c));
    }
    let err = final_client().finish(b"e=invalid-proof").unwrap_err();
    assert_eq!(err, ScramError::ServerError("invalid-proof".into()));
    assert!(err.is_auth_failure());
    let long = [b"e=".as_slice(), &[b'a'; 1000], b"\n\x01"].concat();
    match final_client().finish(&long).unwrap_err() {
        ScramError::ServerError(s) => assert_eq!(s.len(), MAX_SERVER_ERROR_LEN),
        other => panic!("{other:?}"),
    }
}

#[test]
fn caller_nonces_are_validated() {
    let s = fast_secret("pw");
    for bad in ["", "a,b", "a b", "ä", "a\n"] {
        assert_eq!(
            ScramServer::start(&s, bad, b"n,,n=,r=abc").unwrap_err(),
            ScramError::InvalidNonce
        );
        assert_eq!(
            ScramClient::new(ScramCredential::Password("pw".into()), bad).unwrap_err(),
            ScramError::InvalidNonce
        );
    }
    for _ in 0..32 {
        let n = random_nonce();
        assert_eq!(n.len(), 24);
        assert!(is_valid_nonce(n.as_bytes()), "{n}");
    }
    assert_ne!(random_salt(), random_salt());
}

// --- never panic ------------------------------------------------------------------

/// Returns `msg` with one byte replaced, for near-valid fuzzing.
fn mutate(msg: &[u8], idx: usize, byte: u8) -> Vec<u8> {
    let mut m = msg.to_vec();
    if !m.is_empty() {
        let i = idx % m.len();
        m[i] = byte;
    }
    m
}

proptest! {
    #[test]
    fn server_start_never_panics(input in proptest::collection::vec(any::<u8>(), 0..128)) {
        let s = fast_secret("pw");
        let _ = ScramServer::start(&s, "sn", &input);
        let _ = ScramServer::start_with_channel_binding(
            &s, "sn", &input, ServerChannelBinding::TlsServerEndPoint(b"x"));
        let _ = ScramServer::start_with_channel_binding(
            &s, "sn", &input, ServerChannelBinding::OfferedNotSelected);
    }

    #[test]
    fn server_finish_never_panics(
        input in proptest::collection::vec(any::<u8>(), 0..160),
        idx in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let s = fast_secret("pw");
        let (server, _) = ScramServer::start(&s, "sn", b"n,,n=,r=cn").unwrap();
        let _ = server.finish(&input);
        // Near-valid: one byte of a real client-final changed.
        let (client, first) =
            ScramClient::new(ScramCredential::Password("pw".into()), "cn").unwrap();
        let (server, sf) = ScramServer::start(&s, "sn", &first).unwrap();
        let (_, cf) = client.handle_server_first(&sf).unwrap();
        let m = mutate(&cf, idx, byte);
        let r = server.finish(&m);
        if m == cf { prop_assert!(r.is_ok()); } else { prop_assert!(r.is_err()); }
    }

    #[test]
    fn client_handlers_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..128),
        idx in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let new_client = || ScramClient::new(ScramCredential::Password("pw".into()), "cn").unwrap().0;
        let _ = new_client().handle_server_first(&input);
        let _ = new_client().handle_server_first(&mutate(b"r=cnX,s=c2FsdA==,i=16", idx, byte));
        let (fin, _) = new_client().handle_server_first(b"r=cnX,s=c2FsdA==,i=16").unwrap();
        let _ = fin.finish(&input);
        let (fin, _) = new_client().handle_server_first(b"r=cnX,s=c2FsdA==,i=16").unwrap();
        let _ = fin.finish(&mutate(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", idx, byte));
    }

    #[test]
    fn secret_parse_never_panics(input in ".{0,120}", idx in any::<usize>(), byte in 0x20u8..0x7f) {
        let _ = ScramSecret::parse(&input);
        let _ = ScramSecret::parse(&format!("SCRAM-SHA-256${input}"));
        let m = mutate(PENCIL_VERIFIER.as_bytes(), idx, byte);
        if let Ok(s) = std::str::from_utf8(&m) {
            if let Ok(parsed) = ScramSecret::parse(s) {
                // Whatever parses must display back to a parseable verifier.
                prop_assert_eq!(ScramSecret::parse(&parsed.to_string()), Ok(parsed));
            }
        }
    }
}
