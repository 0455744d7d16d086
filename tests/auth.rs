//! Client authentication through pgring with real libpq (psql): SCRAM channel binding
//! over TLS.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::process::Output;

use certs::Ca;
use support::{free_port, psql_cmd, PgCluster, Pgring};

/// A cluster with a database `app` owned by `app`.
fn cluster() -> PgCluster {
    let pg = PgCluster::start();
    pg.create_role("app", "apppass", "");
    pg.create_database("app", "app");
    pg
}

/// A pgring config in front of `pg` with the given `[pooler]` lines (auth_type included).
fn config(pg: &PgCluster, pooler: &str) -> String {
    format!(
        r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{{dir}}"
auth_file = "userlist.txt"
stats_period = 0
{pooler}

[databases]
app = {{ host = "127.0.0.1", port = {pgport}, dbname = "app" }}
"#,
        port = free_port(),
        pgport = pg.port()
    )
}

/// psql through pgring as `user`/`password` over TCP with extra libpq settings.
fn psql(port: u16, user: &str, password: &str, env: &[(&str, &str)], sql: &str) -> Output {
    let mut cmd = psql_cmd(port, user, password, "app");
    for var in [
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGCHANNELBINDING",
        "PGREQUIRESSL",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGSSLCERT", "/nonexistent/postgresql.crt")
        .env("PGSSLKEY", "/nonexistent/postgresql.key");
    cmd.envs(env.iter().copied());
    cmd.arg("-c").arg(sql);
    cmd.output().expect("run psql")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output, pgring: &Pgring) -> String {
    assert!(
        out.status.success(),
        "psql failed: {}\n--- pgring.log ---\n{}",
        text(&out.stderr),
        pgring.log()
    );
    text(&out.stdout)
}

#[track_caller]
fn assert_fails(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "psql succeeded: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains(needle),
        "expected {needle:?} in psql's error: {}",
        text(&out.stderr)
    );
}

/// pgring with a certificate from `ca`, TLS offered (`prefer`), and `auth_type`.
fn tls_pgring(pg: &PgCluster, ca: &Ca, auth_type: &str) -> Pgring {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "pgring test server", true);
    let pooler = format!(
        "auth_type = \"{auth_type}\"\nclient_tls_sslmode = \"prefer\"\n\
         client_tls_cert_file = \"server.pem\"\nclient_tls_key_file = \"server.key\""
    );
    Pgring::start(
        &config(pg, &pooler),
        &[
            ("userlist.txt", "\"app\" \"apppass\"\n"),
            ("server.pem", &cert),
            ("server.key", &key),
        ],
    )
}

#[test]
fn channel_binding_require_works_over_tls() {
    let pg = cluster();
    let ca = Ca::new("pgring test CA");
    let pgring = tls_pgring(&pg, &ca, "scram-sha-256");
    let port = pgring.port();
    let bound = [("PGSSLMODE", "require"), ("PGCHANNELBINDING", "require")];
    let out = psql(port, "app", "apppass", &bound, "SELECT current_user");
    assert_eq!(assert_ok(&out, &pgring).trim(), "app");
    // The binding does not stand in for the password.
    let out = psql(port, "app", "wrong", &bound, "SELECT 1");
    assert_fails(&out, "password authentication failed for user \"app\"");
    // Without TLS there is nothing to bind to: SCRAM-SHA-256-PLUS is not offered, and
    // libpq refuses to go on.
    let out = psql(
        port,
        "app",
        "apppass",
        &[("PGSSLMODE", "disable"), ("PGCHANNELBINDING", "require")],
        "SELECT 1",
    );
    assert!(!out.status.success(), "{}", text(&out.stdout));
    // Plain SCRAM still works over both.
    for mode in ["disable", "require"] {
        let out = psql(
            port,
            "app",
            "apppass",
            &[("PGSSLMODE", mode), ("PGCHANNELBINDING", "disable")],
            "SELECT 1",
        );
        assert_eq!(assert_ok(&out, &pgring).trim(), "1");
    }
}

#[test]
fn channel_binding_require_refuses_md5() {
    let pg = cluster();
    let ca = Ca::new("pgring test CA");
    let pgring = tls_pgring(&pg, &ca, "md5");
    let out = psql(
        pgring.port(),
        "app",
        "apppass",
        &[("PGSSLMODE", "require"), ("PGCHANNELBINDING", "require")],
        "SELECT 1",
    );
    assert_fails(&out, "channel binding");
}
