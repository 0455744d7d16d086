//! Unit tests of the config parser (compiled as `config::raw::tests`).

use super::*;
use crate::config::{CipherKeyword, KxGroup};

fn parse_at(text: &str, path: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(path))
}

fn ok(text: &str) -> Config {
    parse_at(text, "/etc/pgring/pgring.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// The one-line message of the error `text` produces.
fn err(text: &str) -> String {
    match parse_at(text, "pgring.toml") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn err_kind(text: &str) -> ConfigError {
    parse_at(text, "pgring.toml").expect_err("expected an error")
}

#[test]
fn empty_file_gives_the_defaults() {
    let c = ok("");
    let p = &c.pooler;
    assert_eq!(p.listen_addr, "127.0.0.1");
    assert_eq!(p.listen_port, 6432);
    assert_eq!(p.unix_socket_dir.as_deref(), Some(Path::new("/tmp")));
    assert_eq!(p.shards, available_cores());
    assert!(p.shards >= 1);
    assert_eq!(p.auth_type, AuthType::Md5);
    assert_eq!(p.auth_file, None);
    assert!(p.admin_users.is_empty() && p.stats_users.is_empty());
    assert_eq!(p.auth_user, None);
    assert_eq!(
        p.auth_query,
        "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"
    );
    assert_eq!(p.auth_dbname, None);
    assert_eq!(p.auth_query_cache_ttl, Duration::from_secs(60));
    assert_eq!(p.pool_mode, PoolMode::Session);
    assert_eq!(p.default_pool_size, 20);
    assert_eq!(p.min_pool_size, 0);
    assert_eq!(p.reserve_pool_size, 0);
    assert_eq!(p.reserve_pool_timeout, Duration::from_secs(5));
    assert_eq!(p.max_client_conn, 100);
    assert_eq!(p.max_db_connections, 0);
    assert_eq!(p.max_user_connections, 0);
    assert_eq!(p.server_reset_query, "DISCARD ALL");
    assert!(!p.server_reset_query_always);
    assert_eq!(p.server_check_query, "select 1");
    assert_eq!(p.server_check_delay, Duration::from_secs(30));
    assert_eq!(p.server_lifetime, Duration::from_secs(3600));
    assert_eq!(p.server_idle_timeout, Duration::from_secs(600));
    assert_eq!(p.server_connect_timeout, Duration::from_secs(15));
    assert_eq!(p.server_login_retry, Duration::from_secs(15));
    assert_eq!(p.client_idle_timeout, Duration::ZERO);
    assert_eq!(p.client_login_timeout, Duration::from_secs(60));
    assert_eq!(p.idle_transaction_timeout, Duration::ZERO);
    assert_eq!(p.query_timeout, Duration::ZERO);
    assert_eq!(p.query_wait_timeout, Duration::from_secs(120));
    assert_eq!(p.shutdown_timeout, Duration::from_secs(30));
    assert!(p.ignore_startup_parameters.is_empty());
    assert_eq!(p.max_packet_size, 64 * 1024 * 1024);
    assert!(p.tcp_keepalive);
    assert_eq!(p.tcp_keepidle, Duration::ZERO);
    assert_eq!(p.tcp_keepintvl, Duration::ZERO);
    assert_eq!(p.tcp_keepcnt, 0);
    assert!(p.log_connections && p.log_disconnections && p.log_pooler_errors);
    assert_eq!(p.stats_period, Duration::from_secs(60));
    assert_eq!(p.logfile, None);
    assert_eq!(p.pidfile, None);
    assert_eq!(p.verbose, 0);
    assert_eq!(*p, PoolerConfig::default());
    assert!(c.databases.is_empty() && c.users.is_empty() && c.fallback_database.is_none());
    assert_eq!(c.path, Path::new("/etc/pgring/pgring.toml"));
}

#[test]
fn empty_sections_are_fine() {
    let c = ok("[pooler]\n[databases]\n[users]\n");
    assert_eq!(c.pooler, PoolerConfig::default());
}

#[test]
fn pooler_keys_are_read() {
    let c = ok(r#"
[pooler]
listen_addr = "0.0.0.0"
listen_port = 7000
unix_socket_dir = ""
shards = 3
auth_type = "scram-sha-256"
admin_users = ["admin", "ops"]
pool_mode = "transaction"
default_pool_size = 40
max_client_conn = 5000
server_reset_query = ""
ignore_startup_parameters = ["extra_float_digits"]
max_packet_size = 1024
tcp_keepalive = false
tcp_keepcnt = 5
verbose = 2
"#);
    let p = &c.pooler;
    assert_eq!(p.listen_addr, "0.0.0.0");
    assert_eq!(p.listen_port, 7000);
    assert_eq!(p.unix_socket_dir, None);
    assert_eq!(p.shards, 3);
    assert_eq!(p.auth_type, AuthType::ScramSha256);
    assert_eq!(p.admin_users, ["admin", "ops"]);
    assert_eq!(p.pool_mode, PoolMode::Transaction);
    assert_eq!(p.default_pool_size, 40);
    assert_eq!(p.max_client_conn, 5000);
    assert_eq!(p.server_reset_query, "");
    assert_eq!(p.ignore_startup_parameters, ["extra_float_digits"]);
    assert_eq!(p.max_packet_size, 1024);
    assert!(!p.tcp_keepalive);
    assert_eq!(p.tcp_keepcnt, 5);
    assert_eq!(p.verbose, 2);
}

#[test]
fn client_tls_keys() {
    let c = ok(r#"
[pooler]
client_tls_sslmode = "verify-full"
client_tls_cert_file = "server.pem"
client_tls_key_file = "/keys/server.key"
client_tls_ca_file = "ca.pem"
client_tls_crl_file = "crl.pem"
client_tls_protocols = "tlsv1.3"
"#);
    let p = &c.pooler;
    assert_eq!(p.client_tls_sslmode, TlsMode::VerifyFull);
    assert_eq!(
        p.client_tls_cert_file.as_deref(),
        Some(Path::new("/etc/pgring/server.pem"))
    );
    assert_eq!(
        p.client_tls_key_file.as_deref(),
        Some(Path::new("/keys/server.key"))
    );
    assert_eq!(
        p.client_tls_ca_file.as_deref(),
        Some(Path::new("/etc/pgring/ca.pem"))
    );
    assert_eq!(
        p.client_tls_crl_file.as_deref(),
        Some(Path::new("/etc/pgring/crl.pem"))
    );
    assert_eq!(p.client_tls_protocols, TlsProtocols::Tls13);
    let again = Config::parse(&c.to_toml(), &c.path).unwrap();
    assert_eq!(again, c);
}

#[test]
fn client_tls_needs_its_files() {
    let e =
        err_kind("[pooler]\nclient_tls_sslmode = \"require\"\nclient_tls_cert_file = \"c.pem\"\n");
    assert_eq!(e.key(), Some("pooler.client_tls_key_file"));
    assert_eq!(e.line(), Some(2));
    let e = err_kind("[pooler]\nclient_tls_sslmode = \"allow\"\n");
    assert_eq!(e.key(), Some("pooler.client_tls_cert_file"));
    let e = err_kind(
        "[pooler]\nclient_tls_sslmode = \"verify-ca\"\nclient_tls_cert_file = \"c\"\nclient_tls_key_file = \"k\"\n",
    );
    assert_eq!(e.key(), Some("pooler.client_tls_ca_file"));
    assert!(e.to_string().contains("verify-ca"), "{e}");
    let e = err_kind("[pooler]\nclient_tls_sslmode = \"on\"\n");
    assert_eq!(e.key(), Some("pooler.client_tls_sslmode"));
    let e = err_kind("[pooler]\nclient_tls_protocols = \"tlsv1.1\"\n");
    assert_eq!(e.key(), Some("pooler.client_tls_protocols"));
    // The cert files alone, with TLS off, are fine.
    ok("[pooler]\nclient_tls_cert_file = \"c\"\n");
}

#[test]
fn tls_cipher_and_curve_keys() {
    let c = ok(r#"
[pooler]
client_tls_protocols = "tlsv1.2"
client_tls_ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384:TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
client_tls13_ciphers = "TLS_CHACHA20_POLY1305_SHA256"
client_tls_ecdhcurve = "P-384:x25519"
server_tls_ciphers = "fast"
server_tls13_ciphers = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
server_tls_ecdhcurve = "x25519"
"#);
    let p = &c.pooler;
    assert_eq!(
        p.client_tls_ciphers,
        TlsCiphers::List(vec![
            CipherSuite::EcdheEcdsaAes256GcmSha384,
            CipherSuite::EcdheRsaChacha20Poly1305
        ])
    );
    assert_eq!(
        p.client_tls13_ciphers,
        Some(vec![CipherSuite::Tls13Chacha20Poly1305Sha256])
    );
    assert_eq!(
        p.client_tls_ecdhcurve,
        TlsCurves::List(vec![KxGroup::Secp384r1, KxGroup::X25519])
    );
    assert_eq!(
        p.server_tls_ciphers,
        TlsCiphers::Keyword(CipherKeyword::Fast)
    );
    let rendered = c.to_toml();
    assert!(
        rendered.contains(
            "client_tls_ciphers = \"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305\""
        ),
        "{rendered}"
    );
    assert!(rendered.contains("client_tls_ecdhcurve = \"secp384r1:x25519\""));
    assert!(rendered.contains("server_tls_ecdhcurve = \"x25519\""));
    assert_eq!(
        p.server_tls_ecdhcurve.server_groups(),
        vec![KxGroup::X25519]
    );
    assert_eq!(Config::parse(&rendered, &c.path).unwrap(), c);
    // The defaults.
    let d = ok("");
    assert_eq!(d.pooler.client_tls_ciphers, TlsCiphers::default());
    assert_eq!(d.pooler.client_tls13_ciphers, None);
    assert_eq!(d.pooler.client_tls_ecdhcurve, TlsCurves::Auto);
    assert_eq!(
        d.pooler.server_tls_ecdhcurve.server_groups()[0],
        KxGroup::Secp256r1
    );
}

#[test]
fn bad_cipher_and_curve_names_name_key_value_and_line() {
    let e = err("[pooler]\n\nclient_tls_ciphers = \"ECDHE-RSA-AES128-GCM-SHA256:NOPE-CIPHER\"\n");
    assert!(
        e.starts_with(
            "pgring.toml:3: pooler.client_tls_ciphers: unknown cipher suite \"NOPE-CIPHER\""
        ),
        "{e}"
    );
    let e = err("[pooler]\nserver_tls_ciphers = \"AES128-SHA\"\n");
    assert!(
        e.starts_with("pgring.toml:2: pooler.server_tls_ciphers: cipher suite \"AES128-SHA\" is not implemented by rustls"),
        "{e}"
    );
    let e = err("[pooler]\nclient_tls_ciphers = \"HIGH:MEDIUM:+3DES:!aNULL\"\n");
    assert!(e.contains("OpenSSL cipher-string expression"), "{e}");
    let e = err("[pooler]\nclient_tls13_ciphers = \"ECDHE-RSA-AES128-GCM-SHA256\"\n");
    assert!(
        e.starts_with("pgring.toml:2: pooler.client_tls13_ciphers: ")
            && e.contains("TLS 1.2 suite"),
        "{e}"
    );
    let e = err("[pooler]\nclient_tls13_ciphers = \"TLS_AES_128_CCM_8_SHA256\"\n");
    assert!(e.contains("not implemented by rustls"), "{e}");
    let e = err("[pooler]\nclient_tls_ecdhcurve = \"secp521r1\"\n");
    assert!(
        e.starts_with("pgring.toml:2: pooler.client_tls_ecdhcurve: curve \"secp521r1\" is not implemented by rustls"),
        "{e}"
    );
    let e = err("[pooler]\nclient_tls_ecdhcurve = \"curve9\"\n");
    assert!(e.contains("unknown curve \"curve9\""), "{e}");
    // Only TLS 1.3 names while only TLS 1.2 is allowed: nothing left to negotiate.
    let e = err(
        "[pooler]\nclient_tls_protocols = \"tlsv1.2\"\nclient_tls_ciphers = \"TLS_AES_128_GCM_SHA256\"\n",
    );
    assert!(
        e.starts_with("pgring.toml:3: pooler.client_tls_ciphers: leaves no cipher suite"),
        "{e}"
    );
    // The same suites with both versions allowed are fine (TLS 1.2 clients will fail).
    ok("[pooler]\nclient_tls_ciphers = \"TLS_AES_128_GCM_SHA256\"\n");
    let e = err_kind("[pooler]\nclient_tls_ciphers = 5\n");
    assert_eq!(e.key(), Some("pooler.client_tls_ciphers"));
}

#[test]
fn server_tls_keys() {
    let c = ok("[pooler]\n");
    assert_eq!(c.pooler.server_tls_sslmode, TlsMode::Prefer);
    let c = ok(r#"
[pooler]
server_tls_sslmode = "verify-full"
server_tls_ca_file = "bundle.pem"
server_tls_crl_file = "/crls/servers.pem"
server_tls_cert_file = "pgring.pem"
server_tls_key_file = "/keys/pgring.key"
server_tls_protocols = "tlsv1.2"
"#);
    let p = &c.pooler;
    assert_eq!(p.server_tls_sslmode, TlsMode::VerifyFull);
    assert_eq!(
        p.server_tls_ca_file.as_deref(),
        Some(Path::new("/etc/pgring/bundle.pem"))
    );
    assert_eq!(
        p.server_tls_crl_file.as_deref(),
        Some(Path::new("/crls/servers.pem"))
    );
    assert_eq!(
        p.server_tls_cert_file.as_deref(),
        Some(Path::new("/etc/pgring/pgring.pem"))
    );
    assert_eq!(
        p.server_tls_key_file.as_deref(),
        Some(Path::new("/keys/pgring.key"))
    );
    assert_eq!(p.server_tls_protocols, TlsProtocols::Tls12);
    let again = Config::parse(&c.to_toml(), &c.path).unwrap();
    assert_eq!(again, c);
}

#[test]
fn server_tls_validation() {
    let e = err_kind("[pooler]\nserver_tls_sslmode = \"verify-ca\"\n");
    assert_eq!(e.key(), Some("pooler.server_tls_ca_file"));
    assert!(e.to_string().contains("verify-ca"), "{e}");
    let e = err_kind("[pooler]\nserver_tls_sslmode = \"verify-full\"\n");
    assert_eq!(e.key(), Some("pooler.server_tls_ca_file"));
    let e = err_kind("[pooler]\nserver_tls_sslmode = \"yes\"\n");
    assert_eq!(e.key(), Some("pooler.server_tls_sslmode"));
    let e = err_kind("[pooler]\nserver_tls_protocols = \"sslv3\"\n");
    assert_eq!(e.key(), Some("pooler.server_tls_protocols"));
    let e = err_kind("[pooler]\nserver_tls_cert_file = \"c.pem\"\n");
    assert_eq!(e.key(), Some("pooler.server_tls_key_file"));
    let e = err_kind("[pooler]\nserver_tls_key_file = \"k.pem\"\n");
    assert_eq!(e.key(), Some("pooler.server_tls_cert_file"));
    ok("[pooler]\nserver_tls_sslmode = \"require\"\n");
    ok("[pooler]\nserver_tls_sslmode = \"disable\"\n");
}

#[test]
fn keywords() {
    for (text, mode) in [
        ("session", PoolMode::Session),
        ("transaction", PoolMode::Transaction),
        ("statement", PoolMode::Statement),
        ("Transaction", PoolMode::Transaction),
    ] {
        let c = ok(&format!("[pooler]\npool_mode = {text:?}"));
        assert_eq!(c.pooler.pool_mode, mode);
    }
    for (text, auth) in [
        ("trust", AuthType::Trust),
        ("plain", AuthType::Plain),
        ("md5", AuthType::Md5),
        ("scram-sha-256", AuthType::ScramSha256),
    ] {
        let c = ok(&format!("[pooler]\nauth_type = {text:?}"));
        assert_eq!(c.pooler.auth_type, auth);
    }
}

#[test]
fn shards_zero_means_one_per_core() {
    assert_eq!(ok("[pooler]\nshards = 0").pooler.shards, available_cores());
}

#[test]
fn durations_are_seconds_integer_or_float() {
    let c = ok(
        "[pooler]\nquery_timeout = 2\nserver_lifetime = 0.5\nclient_idle_timeout = 0\n\
                stats_period = 1.25\nquery_wait_timeout = 0.000001\n",
    );
    let p = &c.pooler;
    assert_eq!(p.query_timeout, Duration::from_secs(2));
    assert_eq!(p.server_lifetime, Duration::from_millis(500));
    assert_eq!(p.client_idle_timeout, Duration::ZERO);
    assert_eq!(p.stats_period, Duration::from_millis(1250));
    assert_eq!(p.query_wait_timeout, Duration::from_micros(1));
}

#[test]
fn negative_durations_are_refused_with_key_and_line() {
    assert_eq!(
        err("[pooler]\n\nquery_timeout = -1\n"),
        "pgring.toml:3: pooler.query_timeout: -1 is negative; expected a number of seconds >= 0"
    );
    assert_eq!(
        err("[pooler]\nserver_lifetime = -0.5\n"),
        "pgring.toml:2: pooler.server_lifetime: -0.5 is negative; expected a number of seconds >= 0"
    );
    let e = err("[pooler]\nserver_lifetime = \"1h\"\n");
    assert!(
        e.starts_with("pgring.toml:2: pooler.server_lifetime: invalid type: string \"1h\""),
        "{e}"
    );
    assert!(e.contains("expected a number of seconds"), "{e}");
    let e = err("[pooler]\nserver_lifetime = 1e12\n");
    assert!(
        e.starts_with("pgring.toml:2: pooler.server_lifetime: "),
        "{e}"
    );
    assert!(e.contains("too large"), "{e}");
    let e = err("[pooler]\nserver_lifetime = nan\n");
    assert!(
        e.starts_with("pgring.toml:2: pooler.server_lifetime: "),
        "{e}"
    );
}

#[test]
fn unknown_pool_mode_names_key_and_line() {
    let text =
        "# comment\n\n[pooler]\nlisten_port = 6432\n\n\n\n\n\n\n\npool_mode = \"transactions\"\n";
    assert_eq!(
        err(text),
        "pgring.toml:12: pooler.pool_mode: unknown value \"transactions\"; \
         expected one of session, transaction, statement"
    );
    let e = err_kind(text);
    assert_eq!(e.line(), Some(12));
    assert_eq!(e.key(), Some("pooler.pool_mode"));
    assert!(matches!(e, ConfigError::Invalid { .. }));
}

#[test]
fn unknown_auth_type() {
    assert_eq!(
        err("[pooler]\nauth_type = \"ident\""),
        "pgring.toml:2: pooler.auth_type: unknown value \"ident\"; \
         expected one of trust, plain, md5, scram-sha-256, cert, peer, hba"
    );
    assert_eq!(
        err("[pooler]\nauth_type = \"cert\""),
        "pgring.toml:2: pooler.auth_type: auth_type = \"cert\" needs \
         client_tls_sslmode = \"verify-ca\" or \"verify-full\" (client certificates)"
    );
    assert_eq!(
        err("[pooler]\nauth_hba_file = \"\"\nauth_type = \"hba\""),
        "pgring.toml:3: pooler.auth_type: auth_type = \"hba\" needs auth_hba_file"
    );
    let e = err("[pooler]\nauth_type = 5");
    assert!(
        e.starts_with("pgring.toml:2: pooler.auth_type: invalid type: integer `5`"),
        "{e}"
    );
}

#[test]
fn unknown_key_in_pooler() {
    assert_eq!(
        err("[pooler]\nlisten_port = 6432\nlisten_prot = 1\n"),
        "pgring.toml:3: pooler.listen_prot: unknown key \"listen_prot\"; did you mean \"listen_port\"?"
    );
    let e = err("[pooler]\nserver_tls_mode = \"require\"\n");
    assert!(
        e.starts_with("pgring.toml:2: pooler.server_tls_mode: unknown key \"server_tls_mode\""),
        "{e}"
    );
}

#[test]
fn unknown_section() {
    assert_eq!(
        err("[pooler]\n\n[pgbouncer]\nlisten_port = 1\n"),
        "pgring.toml:3: pgbouncer: unknown key \"pgbouncer\"; expected one of pooler, databases, users"
    );
}

#[test]
fn unknown_key_in_database_entry() {
    assert_eq!(
        err("[databases]\napp = { host = \"db\" }\nother = { host = \"db\", hots = 1 }\n"),
        "pgring.toml:3: databases.other.hots: unknown key \"hots\"; did you mean \"host\"?"
    );
    // Standard tables work as well as inline ones.
    assert_eq!(
        err("[databases.app]\nhost = \"db\"\nprt = 5432\n"),
        "pgring.toml:3: databases.app.prt: unknown key \"prt\"; did you mean \"port\"?"
    );
}

#[test]
fn unknown_key_in_user_entry() {
    assert_eq!(
        err("[users]\nalice = { pool_mode = \"session\" }\nbob = { statement_timeout = 3 }\n"),
        "pgring.toml:3: users.bob.statement_timeout: unknown key \"statement_timeout\"; expected one of \
         pool_mode, pool_size, max_user_connections, query_timeout, idle_transaction_timeout, \
         client_idle_timeout"
    );
}

#[test]
fn wrong_types_name_key_and_line() {
    assert_eq!(
        err("[pooler]\nlisten_port = \"6432\"\n"),
        "pgring.toml:2: pooler.listen_port: invalid type: string \"6432\", expected an integer from 0 to 65535"
    );
    assert_eq!(
        err("[pooler]\nlisten_port = 70000\n"),
        "pgring.toml:2: pooler.listen_port: invalid value: integer `70000`, expected an integer from 0 to 65535"
    );
    assert_eq!(
        err("[pooler]\nmax_client_conn = -5\n"),
        "pgring.toml:2: pooler.max_client_conn: invalid value: integer `-5`, expected an integer from 0 to 4294967295"
    );
    assert_eq!(
        err("[pooler]\nadmin_users = \"a,b\"\n"),
        "pgring.toml:2: pooler.admin_users: invalid type: string \"a,b\", expected an array"
    );
    assert_eq!(
        err("[pooler]\ntcp_keepalive = 1\n"),
        "pgring.toml:2: pooler.tcp_keepalive: invalid type: integer `1`, expected a boolean"
    );
    let e = err("[databases]\napp = \"host=db port=5432\"\n");
    assert!(
        e.starts_with("pgring.toml:2: databases.app: invalid type: string"),
        "{e}"
    );
    assert!(e.contains("expected a table of connection settings"), "{e}");
    let e = err("[databases]\napp = { host = \"db\", port = \"x\" }\n");
    assert!(
        e.starts_with("pgring.toml:2: databases.app.port: invalid type: string \"x\""),
        "{e}"
    );
    let e = err("pooler = 3\n");
    assert!(
        e.starts_with("pgring.toml:1: pooler: invalid type: integer `3`"),
        "{e}"
    );
    // Multi-line arrays: the line is the element's or the array's, the key is the array's.
    let e = err("[pooler]\nadmin_users = [\n  \"a\",\n  2,\n]\n");
    assert!(e.contains(": pooler.admin_users: "), "{e}");
}

#[test]
fn bad_values_after_parsing_name_key_and_line() {
    assert_eq!(
        err("[pooler]\n\nlisten_port = 0\n"),
        "pgring.toml:3: pooler.listen_port: 0 is not a port; expected 1 to 65535"
    );
    assert_eq!(
        err("[pooler]\ndefault_pool_size = 0\n"),
        "pgring.toml:2: pooler.default_pool_size: must be at least 1"
    );
    assert_eq!(
        err("[pooler]\nmax_client_conn = 0\n"),
        "pgring.toml:2: pooler.max_client_conn: must be at least 1"
    );
    assert_eq!(
        err("[pooler]\nmax_packet_size = 1023\n"),
        "pgring.toml:2: pooler.max_packet_size: 1023 bytes is too small; at least 1024"
    );
    assert_eq!(
        err("[pooler]\nverbose = 3\n"),
        "pgring.toml:2: pooler.verbose: 3 is out of range; expected 0, 1 or 2"
    );
    assert_eq!(
        err("[databases]\n\"*\" = { host = \"db\", port = 0 }\n"),
        "pgring.toml:2: databases.\"*\".port: 0 is not a port; expected 1 to 65535"
    );
}

#[test]
fn syntax_errors_give_the_line() {
    let e = err_kind("[pooler]\nlisten_port = 6432\nlisten_addr = \n");
    assert!(matches!(e, ConfigError::Syntax { line: 3, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("pgring.toml:3: invalid TOML: "), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    let e = err_kind("[pooler]\nlisten_port = 1\nlisten_port = 2\n");
    assert_eq!(e.line(), Some(3), "{e}");
}

#[test]
fn duplicate_reserve_pool_aliases() {
    let e = err("[databases]\napp = { reserve_pool = 1, reserve_pool_size = 2 }\n");
    assert_eq!(
        e,
        "pgring.toml:2: databases.app: reserve_pool and reserve_pool_size are the same key; \
         give only one"
    );
}

#[test]
fn io_error_names_the_file() {
    let e = Config::load(Path::new("/nonexistent/pgring.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(
        e.to_string().starts_with("/nonexistent/pgring.toml: "),
        "{e}"
    );
    assert_eq!(e.line(), None);
}

#[test]
fn database_entries() {
    let c = ok(r#"
[databases]
app = { host = "db.internal", port = 5433, user = "app_rw", password = "s3cret", pool_size = 30, min_pool_size = 2, reserve_pool = 3, pool_mode = "statement", max_db_connections = 50, client_encoding = "UTF8", datestyle = "ISO", timezone = "UTC", application_name = "pgring" }
sock = { host = "/run/pg", dbname = "real" }
local = {}
legacy = { host = "h", reserve_pool_size = 4 }
"#);
    let app = &c.databases["app"];
    assert_eq!(
        app.address,
        ServerAddress::Tcp {
            host: "db.internal".into(),
            port: 5433
        }
    );
    assert_eq!(app.dbname.as_deref(), Some("app"));
    assert_eq!(app.user.as_deref(), Some("app_rw"));
    assert_eq!(app.password.as_deref(), Some("s3cret"));
    assert_eq!(app.pool_size, Some(30));
    assert_eq!(app.min_pool_size, Some(2));
    assert_eq!(app.reserve_pool_size, Some(3));
    assert_eq!(app.pool_mode, Some(PoolMode::Statement));
    assert_eq!(app.max_db_connections, Some(50));
    assert_eq!(
        app.startup_parameters,
        [
            ("client_encoding".to_string(), "UTF8".to_string()),
            ("datestyle".into(), "ISO".into()),
            ("timezone".into(), "UTC".into()),
            ("application_name".into(), "pgring".into()),
        ]
    );

    let sock = &c.databases["sock"];
    assert_eq!(
        sock.address,
        ServerAddress::Unix {
            dir: "/run/pg".into(),
            port: 5432
        }
    );
    assert_eq!(sock.dbname.as_deref(), Some("real"));

    let local = &c.databases["local"];
    assert_eq!(
        local.address,
        ServerAddress::Unix {
            dir: "/var/run/postgresql".into(),
            port: 5432
        }
    );
    assert_eq!(local.dbname.as_deref(), Some("local"));
    assert_eq!(local.user, None);
    assert!(local.startup_parameters.is_empty());

    assert_eq!(c.databases["legacy"].reserve_pool_size, Some(4));
    assert!(c.fallback_database.is_none());
    assert!(c.database("nope").is_none());
}

#[test]
fn auth_query_keys() {
    let c = ok(r#"
[pooler]
auth_user = "pgring_auth"
auth_query = "SELECT usename, passwd FROM pgring_lookup($1)"
auth_dbname = "authdb"
auth_query_cache_ttl = 0

[databases]
authdb = { host = "h" }
app = { host = "h", auth_user = "app_lookup" }
other = { host = "h" }
"#);
    let p = &c.pooler;
    assert_eq!(p.auth_user.as_deref(), Some("pgring_auth"));
    assert_eq!(
        p.auth_query,
        "SELECT usename, passwd FROM pgring_lookup($1)"
    );
    assert_eq!(p.auth_dbname.as_deref(), Some("authdb"));
    assert_eq!(p.auth_query_cache_ttl, Duration::ZERO);
    // The entry's auth_user wins over [pooler]'s.
    assert_eq!(c.auth_user(&c.databases["app"]), Some("app_lookup"));
    assert_eq!(c.auth_user(&c.databases["other"]), Some("pgring_auth"));
    // Empty strings mean "not set".
    let c = ok(
        "[pooler]\nauth_user = \"\"\nauth_dbname = \"\"\n[databases]\napp = { auth_user = \"\" }\n",
    );
    assert_eq!(c.pooler.auth_user, None);
    assert_eq!(c.pooler.auth_dbname, None);
    assert_eq!(c.auth_user(&c.databases["app"]), None);
}

#[test]
fn auth_query_validation() {
    assert_eq!(
        err("[pooler]\nauth_user = \"a\"\nauth_query = \"  \"\n"),
        "pgring.toml:3: pooler.auth_query: must not be empty; leave auth_user unset to turn lookups off"
    );
    assert_eq!(
        err("[pooler]\nauth_dbname = \"nope\"\n[databases]\napp = {}\n"),
        "pgring.toml:2: pooler.auth_dbname: \"nope\" is not a [databases] entry (and there is no \"*\" entry)"
    );
    // The "*" entry serves any name.
    ok("[pooler]\nauth_dbname = \"any\"\n[databases]\n\"*\" = {}\n");
    assert!(err("[pooler]\nauth_query_cache_ttl = -1\n").contains("pooler.auth_query_cache_ttl"));
}

#[test]
fn star_entry_is_the_fallback() {
    let c = ok("[databases]\napp = { host = \"a\" }\n\"*\" = { host = \"b\", port = 6000 }\n");
    assert_eq!(c.databases.len(), 1);
    assert!(!c.databases.contains_key("*"));
    let star = c.fallback_database.as_ref().expect("fallback");
    assert_eq!(star.dbname, None);
    assert_eq!(
        star.address,
        ServerAddress::Tcp {
            host: "b".into(),
            port: 6000
        }
    );
    assert_eq!(c.database("other"), Some(star));
    assert_eq!(c.database("app"), Some(&c.databases["app"]));

    let c = ok("[databases]\n\"*\" = { host = \"b\", dbname = \"fixed\" }\n");
    assert_eq!(
        c.fallback_database.unwrap().dbname.as_deref(),
        Some("fixed")
    );
}

#[test]
fn user_entries_and_precedence() {
    let c = ok(r#"
[pooler]
pool_mode = "transaction"
default_pool_size = 10
[databases]
app = { host = "db", pool_size = 15, pool_mode = "session" }
plain = { host = "db" }
[users]
alice = { pool_mode = "statement", pool_size = 5, max_user_connections = 7, query_timeout = 1.5, idle_transaction_timeout = 10, client_idle_timeout = 0 }
bob = {}
"#);
    let alice = &c.users["alice"];
    assert_eq!(alice.pool_mode, Some(PoolMode::Statement));
    assert_eq!(alice.pool_size, Some(5));
    assert_eq!(alice.max_user_connections, Some(7));
    assert_eq!(alice.query_timeout, Some(Duration::from_millis(1500)));
    assert_eq!(
        alice.idle_transaction_timeout,
        Some(Duration::from_secs(10))
    );
    assert_eq!(alice.client_idle_timeout, Some(Duration::ZERO));
    assert_eq!(c.users["bob"], UserConfig::default());

    let app = &c.databases["app"];
    let plain = &c.databases["plain"];
    assert_eq!(c.pool_mode(app, "alice"), PoolMode::Statement);
    assert_eq!(c.pool_mode(app, "bob"), PoolMode::Session);
    assert_eq!(c.pool_mode(plain, "bob"), PoolMode::Transaction);
    assert_eq!(c.pool_size(app, "alice"), 5);
    assert_eq!(c.pool_size(app, "bob"), 15);
    assert_eq!(c.pool_size(plain, "carol"), 10);
}

#[test]
fn relative_paths_follow_the_config_file() {
    let c = ok("[pooler]\nauth_file = \"userlist.txt\"\nlogfile = \"log/pgring.log\"\npidfile = \"/run/pgring.pid\"\n");
    assert_eq!(
        c.pooler.auth_file.as_deref(),
        Some(Path::new("/etc/pgring/userlist.txt"))
    );
    assert_eq!(
        c.pooler.logfile.as_deref(),
        Some(Path::new("/etc/pgring/log/pgring.log"))
    );
    assert_eq!(
        c.pooler.pidfile.as_deref(),
        Some(Path::new("/run/pgring.pid"))
    );

    // Empty means unset.
    let c = ok("[pooler]\nauth_file = \"\"\nlogfile = \"\"\n");
    assert_eq!(c.pooler.auth_file, None);
    assert_eq!(c.pooler.logfile, None);

    // A relative config path gives an absolute result under the working directory.
    let c = parse_at(
        "[pooler]\nauth_file = \"userlist.txt\"\n",
        "conf/pgring.toml",
    )
    .unwrap();
    let expected = std::env::current_dir().unwrap().join("conf/userlist.txt");
    assert_eq!(c.pooler.auth_file, Some(expected));
}

#[test]
fn render_round_trips() {
    let text = r#"
[pooler]
listen_addr = "0.0.0.0"
listen_port = 6543
unix_socket_dir = ""
shards = 4
auth_type = "scram-sha-256"
auth_file = "users \"quoted\".txt"
admin_users = ["admin"]
stats_users = ["stats", "monitor"]
auth_user = "lookup"
auth_query = "SELECT u, p FROM f($1) WHERE x = 'y\\z'"
auth_dbname = "app"
auth_query_cache_ttl = 2.5
pool_mode = "transaction"
server_reset_query = ""
server_lifetime = 0.25
query_timeout = 1.000001
ignore_startup_parameters = ["extra_float_digits", "search_path"]
logfile = "pgring.log"
verbose = 1

[databases]
app = { host = "10.0.0.5", user = "u", password = "p\\w", auth_user = "a", pool_size = 30, reserve_pool = 2, pool_mode = "session", max_db_connections = 80, timezone = "UTC", application_name = "x" }
"with space" = { host = "/var/run/pg", port = 5433, dbname = "real" }
"*" = { host = "fallback" }

[users]
alice = { pool_mode = "statement", query_timeout = 2.5 }
bob = {}
"#;
    let c = ok(text);
    let rendered = c.to_toml();
    let again = parse_at(&rendered, "/etc/pgring/pgring.toml")
        .unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(again, c, "{rendered}");

    // Defaults too, and every [pooler] key is written out.
    let d = ok("");
    let rendered = d.to_toml();
    assert_eq!(ok(&rendered), d);
    for key in [
        "listen_addr",
        "max_packet_size",
        "verbose",
        "logfile",
        "stats_period",
        "shards",
    ] {
        assert!(
            rendered.contains(&format!("\n{key} = ")),
            "{key} missing:\n{rendered}"
        );
    }
    assert!(rendered.contains("server_lifetime = 3600\n"), "{rendered}");
}

#[test]
fn render_formats_seconds() {
    assert_eq!(toml_seconds(Duration::ZERO), "0");
    assert_eq!(toml_seconds(Duration::from_secs(30)), "30");
    assert_eq!(toml_seconds(Duration::from_millis(1500)), "1.5");
    assert_eq!(toml_seconds(Duration::from_micros(1)), "0.000001");
}

#[test]
fn edit_distance_works() {
    assert_eq!(edit_distance("listen_prot", "listen_port"), 2);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("host", "host"), 0);
}

#[test]
fn listen_backlog() {
    assert_eq!(ok("").pooler.listen_backlog, 1024);
    let c = ok("[pooler]\nlisten_backlog = 4096\n");
    assert_eq!(c.pooler.listen_backlog, 4096);
    assert!(c.to_toml().contains("listen_backlog = 4096"));
    assert_eq!(
        err("[pooler]\nlisten_backlog = 0\n"),
        "pgring.toml:2: pooler.listen_backlog: expected 1 or more (the kernel caps it at \
         net.core.somaxconn)"
    );
}
