//! What crosses the wire: with TLS required on both links, no query text or result passes
//! in the clear between client and pgring or between pgring and PostgreSQL. Relays on both
//! links record every byte; a run with TLS off shows the same check does see plaintext.

#[path = "support/certs.rs"]
mod certs;
#[path = "support/relay.rs"]
mod relay;
mod support;

use certs::Ca;
use relay::Relay;
use support::{free_port, psql_cmd, PgCluster, Pgring};

const MARKER: &[u8] = b"pgring-wire-marker";

/// A cluster with role and database `app`, and TLS on with a certificate from `ca`.
fn tls_cluster(ca: &Ca) -> PgCluster {
    let pg = PgCluster::start();
    pg.create_role("app", "apppass", "");
    pg.create_database("app", "app");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "postgres test server", true);
    pg.write_data_file("server.crt", &cert);
    pg.write_data_file("server.key", &key);
    pg.psql("ALTER SYSTEM SET ssl = on");
    pg.reload();
    pg
}

/// pgring reaching PostgreSQL through `server_port` (a relay), with `pooler` lines.
fn pgring(server_port: u16, pooler: &str, files: &[(&str, &str)]) -> Pgring {
    let config = format!(
        r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = ""
auth_type = "scram-sha-256"
auth_file = "userlist.txt"
stats_period = 0
{pooler}

[databases]
app = {{ host = "127.0.0.1", port = {server_port}, dbname = "app" }}
"#,
        port = free_port()
    );
    let mut all = vec![("userlist.txt", "\"app\" \"apppass\"\n")];
    all.extend_from_slice(files);
    Pgring::start(&config, &all)
}

/// Runs a query carrying [`MARKER`] through `port` and checks its answer.
fn run_marked_query(port: u16, sslmode: &str, pgring: &Pgring) {
    let out = psql_cmd(port, "app", "apppass", "app")
        .env("PGSSLMODE", sslmode)
        .env("PGSSLCERT", "/nonexistent/postgresql.crt")
        .env("PGSSLKEY", "/nonexistent/postgresql.key")
        .arg("-c")
        .arg("SELECT 'pgring-wire-' || 'marker' || repeat('!', 3), 'pgring-wire-marker-in-query'")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        pgring.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pgring-wire-marker!!!"));
}

#[test]
fn no_plaintext_crosses_either_link_when_tls_is_required() {
    let ca = Ca::new("pgring wire CA");
    let pg = tls_cluster(&ca);
    let to_server = Relay::start(([127, 0, 0, 1], pg.port()).into());
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "pgring test server", true);
    let pgring = pgring(
        to_server.port(),
        "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"server.pem\"\n\
         client_tls_key_file = \"server.key\"\nserver_tls_sslmode = \"require\"",
        &[("server.pem", &cert), ("server.key", &key)],
    );
    let to_pgring = Relay::start(([127, 0, 0, 1], pgring.port()).into());
    run_marked_query(to_pgring.port(), "require", &pgring);

    for (link, relay) in [
        ("client → pgring", &to_pgring),
        ("pgring → PostgreSQL", &to_server),
    ] {
        let seen = relay.seen();
        // The link carried a TLS session: an SSLRequest, then TLS records.
        assert!(
            seen.starts_with(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]),
            "{link}: no SSLRequest first"
        );
        assert!(seen.len() > 1000, "{link}: only {} bytes", seen.len());
        assert!(
            !relay.saw(MARKER),
            "{link}: query text crossed in the clear"
        );
        assert!(!relay.saw(b"SELECT"), "{link}: SQL crossed in the clear");
        assert!(
            !relay.saw(b"apppass"),
            "{link}: the password crossed in the clear"
        );
    }
}

#[test]
fn the_relays_do_see_plaintext_when_tls_is_off() {
    let ca = Ca::new("pgring wire CA");
    let pg = tls_cluster(&ca);
    let to_server = Relay::start(([127, 0, 0, 1], pg.port()).into());
    let pgring = pgring(to_server.port(), "server_tls_sslmode = \"disable\"", &[]);
    let to_pgring = Relay::start(([127, 0, 0, 1], pgring.port()).into());
    run_marked_query(to_pgring.port(), "disable", &pgring);
    assert!(to_pgring.saw(MARKER));
    assert!(to_server.saw(MARKER));
}
