//! Server-side TLS (pgring to PostgreSQL) against a real PostgreSQL with `ssl = on` and
//! certificates made here with rcgen: the sslmodes, libpq's host name rules for
//! `verify-full` (IP SAN, CN fallback), the refusals a client sees, the plaintext fallback
//! of `prefer`, pgring's client certificate under a pg_hba `cert` rule, a cancel request
//! to a TLS server, the cipher settings and revocation through `server_tls_crl_file`.

#[path = "support/cancel.rs"]
mod cancel;
#[path = "support/certs.rs"]
mod certs;
mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use cancel::cancel_sleep;
use certs::Ca;
use support::{free_port, psql_cmd, PgCluster, Pgring};

const USERLIST: &str = "\"app\" \"apppass\"\n";
const SSL_QUERY: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// A cluster with role and database `app`; with `ssl = on` and the given server
/// certificate when `tls` is set, and `client_ca` as `ssl_ca_file` (client certificates).
fn cluster(tls: Option<(&str, &str)>, client_ca: Option<&str>) -> PgCluster {
    let pg = PgCluster::start();
    pg.create_role("app", "apppass", "");
    pg.create_database("app", "app");
    if let Some((cert, key)) = tls {
        pg.write_data_file("server.crt", cert);
        pg.write_data_file("server.key", key);
        if let Some(ca) = client_ca {
            pg.write_data_file("root.crt", ca);
            pg.psql("ALTER SYSTEM SET ssl_ca_file = 'root.crt'");
        }
        pg.psql("ALTER SYSTEM SET ssl = on");
        pg.reload();
        assert_eq!(pg.psql("SHOW ssl").trim(), "on");
    }
    pg
}

/// pgring in front of `pg` with the database entry's `host = host` and the given
/// `server_tls_*` lines; `files` go into pgring's folder.
fn pgring(pg: &PgCluster, host: &str, pooler: &str, files: &[(&str, &str)]) -> Pgring {
    let port = free_port();
    let config = format!(
        r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{{dir}}"
auth_type = "md5"
auth_file = "userlist.txt"
stats_period = 0
{pooler}

[databases]
app = {{ host = "{host}", port = {pgport}, dbname = "app" }}
"#,
        pgport = pg.port()
    );
    let mut all = vec![("userlist.txt", USERLIST)];
    all.extend_from_slice(files);
    Pgring::start(&config, &all)
}

fn psql(pgring: &Pgring, sql: &str) -> Output {
    let mut cmd = psql_cmd(pgring.port(), "app", "apppass", "app");
    cmd.env("PGSSLMODE", "disable");
    cmd.arg("-c").arg(sql);
    cmd.output().expect("run psql")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Runs [`SSL_QUERY`] through pgring and returns its answer (`t` over TLS).
#[track_caller]
fn backend_ssl(pgring: &Pgring) -> String {
    let out = psql(pgring, SSL_QUERY);
    assert!(
        out.status.success(),
        "psql failed: {}\n--- pgring.log ---\n{}",
        text(&out.stderr),
        pgring.log()
    );
    text(&out.stdout).trim().to_owned()
}

/// Checks that a login through pgring fails with all of `needles` in psql's error, and
/// returns the error.
#[track_caller]
fn login_fails(pgring: &Pgring, needles: &[&str]) -> String {
    let out = psql(pgring, "SELECT 1");
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "psql succeeded: {}",
        text(&out.stdout)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "expected {needle:?} in psql's error: {stderr}\n--- pgring.log ---\n{}",
            pgring.log()
        );
    }
    stderr
}

#[test]
fn verify_full_with_an_ip_san_gives_a_tls_backend() {
    let ca = Ca::new("server CA");
    let (cert, key) = ca.leaf(&["127.0.0.1"], "pg server", true);
    let pg = cluster(Some((&cert, &key)), None);
    // A bundle: an unrelated CA first, then the one that signed the server's certificate.
    let bundle = format!("{}{}", Ca::new("other CA").pem(), ca.pem());
    let p = pgring(
        &pg,
        "127.0.0.1",
        "shards = 1\nserver_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"bundle.pem\"",
        &[("bundle.pem", &bundle)],
    );
    assert_eq!(backend_ssl(&p), "t");
    // A whole session over TLS, with more data than one TLS record.
    let out = psql(
        &p,
        "BEGIN; CREATE TEMP TABLE t AS SELECT g FROM generate_series(1, 20000) g; \
         SELECT sum(g) FROM t; COMMIT;",
    );
    assert!(
        text(&out.stdout).contains("200010000"),
        "{}",
        text(&out.stderr)
    );
    // The pooled connection passes the liveness check (which looks at the socket under
    // the TLS session) and is reused: the same backend, still on TLS.
    let pid = |p: &Pgring| {
        text(&psql(p, "SELECT pg_backend_pid()").stdout)
            .trim()
            .to_owned()
    };
    let first = pid(&p);
    assert_eq!(pid(&p), first);
    assert_eq!(backend_ssl(&p), "t");
    assert_eq!(pid(&p), first);
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host() {
    let ca = Ca::new("server CA");
    let (cert, key) = ca.leaf(&["db.example.com"], "db.example.com", true);
    let pg = cluster(Some((&cert, &key)), None);
    let p = pgring(
        &pg,
        "127.0.0.1",
        "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"ca.pem\"",
        &[("ca.pem", &ca.pem())],
    );
    // An IP host with no iPAddress SAN: libpq (and pgring) also try the CN.
    login_fails(
        &p,
        &[
            "server connection failed TLS verification",
            "name mismatch: expected \"127.0.0.1\"",
            "certificate names db.example.com, CN=db.example.com",
        ],
    );
    assert!(
        p.log().contains("failed TLS verification"),
        "the reason is logged: {}",
        p.log()
    );
}

#[test]
fn verify_full_falls_back_to_the_common_name_without_a_san() {
    let ca = Ca::new("server CA");
    let (cert, key) = ca.leaf(&[], "localhost", true);
    let pg = cluster(Some((&cert, &key)), None);
    let p = pgring(
        &pg,
        "localhost",
        "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"ca.pem\"",
        &[("ca.pem", &ca.pem())],
    );
    assert_eq!(backend_ssl(&p), "t");
}

#[test]
fn verify_full_ignores_the_common_name_when_there_is_a_dns_san() {
    let ca = Ca::new("server CA");
    let (cert, key) = ca.leaf(&["db.example.com"], "localhost", true);
    let pg = cluster(Some((&cert, &key)), None);
    let p = pgring(
        &pg,
        "localhost",
        "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"ca.pem\"",
        &[("ca.pem", &ca.pem())],
    );
    login_fails(&p, &["name mismatch", "\"localhost\"", "db.example.com"]);
}

#[test]
fn require_skips_verification_and_verify_ca_checks_the_root() {
    let ca = Ca::new("unknown CA");
    let (cert, key) = ca.leaf(&["db.example.com"], "db.example.com", true);
    let pg = cluster(Some((&cert, &key)), None);
    let p = pgring(&pg, "127.0.0.1", "server_tls_sslmode = \"require\"", &[]);
    assert_eq!(backend_ssl(&p), "t");
    drop(p);
    // The default, prefer, uses TLS when the server offers it.
    let p = pgring(&pg, "127.0.0.1", "", &[]);
    assert_eq!(backend_ssl(&p), "t");
    drop(p);
    // verify-ca ignores the name, but the root must be right.
    let p = pgring(
        &pg,
        "127.0.0.1",
        "server_tls_sslmode = \"verify-ca\"\nserver_tls_ca_file = \"ca.pem\"",
        &[("ca.pem", &ca.pem())],
    );
    assert_eq!(backend_ssl(&p), "t");
    drop(p);
    let wrong = Ca::new("another CA");
    let p = pgring(
        &pg,
        "127.0.0.1",
        "server_tls_sslmode = \"verify-ca\"\nserver_tls_ca_file = \"ca.pem\"",
        &[("ca.pem", &wrong.pem())],
    );
    login_fails(
        &p,
        &["server connection failed TLS verification", "unknown CA"],
    );
}

#[test]
fn server_ciphers_choose_the_backend_suite() {
    let ca = Ca::new("server CA");
    let (cert, key) = ca.leaf(&["127.0.0.1"], "pg", true);
    let pg = cluster(Some((&cert, &key)), None);
    let query = "SELECT version || ' ' || cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let suite = |pooler: &str| {
        let p = pgring(&pg, "127.0.0.1", pooler, &[]);
        let out = psql(&p, query);
        assert!(out.status.success(), "{}\n{}", text(&out.stderr), p.log());
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        suite(
            "server_tls_sslmode = \"require\"\nserver_tls_protocols = \"tlsv1.2\"\n\
             server_tls_ciphers = \"ECDHE-ECDSA-AES128-GCM-SHA256\""
        ),
        "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256"
    );
    assert_eq!(
        suite(
            "server_tls_sslmode = \"require\"\n\
             server_tls13_ciphers = \"TLS_CHACHA20_POLY1305_SHA256\""
        ),
        "TLSv1.3 TLS_CHACHA20_POLY1305_SHA256"
    );
}

#[test]
fn server_crl_refuses_a_revoked_server_certificate() {
    let ca = Ca::new("server CA");
    let (cert, key) = ca.leaf_with_serial(&["127.0.0.1"], "pg", true, Some(4242));
    let pg = cluster(Some((&cert, &key)), None);
    let with_crl = |crl: &str| {
        pgring(
            &pg,
            "127.0.0.1",
            "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"ca.pem\"\n\
             server_tls_crl_file = \"crl.pem\"",
            &[("ca.pem", &ca.pem()), ("crl.pem", crl)],
        )
    };
    let p = with_crl(&ca.crl(&[17]));
    assert_eq!(backend_ssl(&p), "t");
    drop(p);
    let p = with_crl(&ca.crl(&[17, 4242]));
    login_fails(
        &p,
        &["server connection failed TLS verification", "revoked"],
    );
    drop(p);
    // Only another CA's CRL: the status of the server's certificate is unknown.
    let p = with_crl(&Ca::new("other CA").crl(&[]));
    login_fails(&p, &["no CRL in server_tls_crl_file covers"]);
}

#[test]
fn prefer_goes_plaintext_without_server_ssl_and_require_refuses() {
    let pg = cluster(None, None);
    let p = pgring(&pg, "127.0.0.1", "server_tls_sslmode = \"prefer\"", &[]);
    assert_eq!(backend_ssl(&p), "f");
    drop(p);
    let p = pgring(&pg, "127.0.0.1", "server_tls_sslmode = \"disable\"", &[]);
    assert_eq!(backend_ssl(&p), "f");
    drop(p);
    let p = pgring(&pg, "127.0.0.1", "server_tls_sslmode = \"require\"", &[]);
    login_fails(&p, &["does not support SSL", "require"]);
}

#[test]
fn unix_socket_servers_never_use_tls() {
    let ca = Ca::new("server CA");
    let (cert, key) = ca.leaf(&["127.0.0.1"], "pg", true);
    let pg = cluster(Some((&cert, &key)), None);
    let host = pg.socket_dir().to_str().unwrap().to_owned();
    let p = pgring(&pg, &host, "server_tls_sslmode = \"require\"", &[]);
    assert_eq!(backend_ssl(&p), "f");
}

#[test]
fn client_certificate_passes_a_cert_hba_rule() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (cert, key) = server_ca.leaf(&["127.0.0.1"], "pg", true);
    let pg = cluster(Some((&cert, &key)), Some(&client_ca.pem()));
    pg.set_hba(&[
        "local all all scram-sha-256",
        "host all postgres 127.0.0.1/32 scram-sha-256",
        "hostssl all app 127.0.0.1/32 cert",
    ]);
    let (client_cert, client_key) = client_ca.leaf(&[], "app", false);
    let tls = "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"ca.pem\"";
    let p = pgring(
        &pg,
        "127.0.0.1",
        &format!(
            "{tls}\nserver_tls_cert_file = \"pgring.pem\"\nserver_tls_key_file = \"pgring.key\""
        ),
        &[
            ("ca.pem", &server_ca.pem()),
            ("pgring.pem", &client_cert),
            ("pgring.key", &client_key),
        ],
    );
    assert_eq!(backend_ssl(&p), "t");
    drop(p);
    // Without the certificate, PostgreSQL refuses the login.
    let p = pgring(&pg, "127.0.0.1", tls, &[("ca.pem", &server_ca.pem())]);
    login_fails(&p, &["certificate"]);
}

#[tokio::test]
async fn cancel_reaches_a_tls_server() {
    let ca = Ca::new("server CA");
    let (cert, key) = ca.leaf(&["127.0.0.1"], "pg", true);
    let pg = cluster(Some((&cert, &key)), None);
    // Only TLS connections may log in.
    pg.set_hba(&[
        "local all all scram-sha-256",
        "hostssl all all 127.0.0.1/32 scram-sha-256",
    ]);
    let p = pgring(
        &pg,
        "127.0.0.1",
        "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"ca.pem\"",
        &[("ca.pem", &ca.pem())],
    );
    let conn_str = format!(
        "host=127.0.0.1 port={} user=app password=apppass dbname=app sslmode=disable",
        p.port()
    );
    cancel_sleep(&conn_str).await;
}

#[test]
fn reload_swaps_the_server_ca_and_keeps_it_when_broken() {
    let ca = Ca::new("server CA");
    let (cert, key) = ca.leaf(&["127.0.0.1"], "pg", true);
    let pg = cluster(Some((&cert, &key)), None);
    let wrong = Ca::new("another CA");
    let p = pgring(
        &pg,
        "127.0.0.1",
        "server_login_retry = 0\nserver_tls_sslmode = \"verify-ca\"\nserver_tls_ca_file = \"ca.pem\"",
        &[("ca.pem", &wrong.pem())],
    );
    login_fails(&p, &["unknown CA"]);
    std::fs::write(p.dir().join("ca.pem"), ca.pem()).unwrap();
    assert!(p.signal(libc::SIGHUP));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !psql(&p, "SELECT 1").status.success() {
        assert!(
            Instant::now() < deadline,
            "the new CA file is not used after SIGHUP\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(backend_ssl(&p), "t");

    // A CA file that cannot be parsed: the reload fails, names the key, the running setup stays.
    std::fs::write(p.dir().join("ca.pem"), "not a certificate\n").unwrap();
    assert!(p.signal(libc::SIGHUP));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.log().contains("no certificate found in PEM") {
        assert!(
            Instant::now() < deadline,
            "no reload error logged\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("no certificate found in PEM"))
        .unwrap();
    assert!(line.contains("reload failed"), "{line}");
    assert!(line.contains("server_tls_ca_file"), "{line}");
    assert_eq!(backend_ssl(&p), "t");
}
