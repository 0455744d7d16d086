//! Client authentication through pgring with real libpq (psql): hba rules (every
//! connection kind, first match, addresses, `@file`, reject, the no-match message), `cert`
//! and `peer` with ident maps, SCRAM channel binding over TLS, and reloads that change the
//! rules and passwords under connected clients.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use certs::Ca;
use support::{
    assert_psql_fails, assert_psql_ok, free_port, psql_cmd, psql_tls, text, PgCluster, Pgring,
};

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
    psql_tls(port, user, password, env, sql)
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
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "app");
    // The binding does not stand in for the password.
    let out = psql(port, "app", "wrong", &bound, "SELECT 1");
    assert_psql_fails(&out, "password authentication failed for user \"app\"");
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
        assert_eq!(assert_psql_ok(&out, &pgring).trim(), "1");
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
    assert_psql_fails(&out, "channel binding");
}

/// A pgring config whose `app` database logs in to PostgreSQL as `app` whatever the
/// client's user name, so that hba tests can use many user names.
fn forced_user_config(pg: &PgCluster, pooler: &str) -> String {
    format!(
        r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{{dir}}"
auth_file = "userlist.txt"
stats_period = 0
{pooler}

[databases]
app = {{ host = "127.0.0.1", port = {pgport}, dbname = "app", user = "app", password = "apppass" }}
"#,
        port = free_port(),
        pgport = pg.port()
    )
}

const HBA_USERS: &str = "\"app\" \"apppass\"\n\"blocked\" \"pw\"\n\"early\" \"pw\"\n\
                         \"tlsonly\" \"pw\"\n\"cidr\" \"pw\"\n\"ops1\" \"ops1pw\"\n\"plain\" \"plainpw\"\n";

const HBA_RULES: &str = r#"# pgring test rules
local     all  app                       trust
host      app  early   127.0.0.1/32      trust
host      app  early   127.0.0.1/32      reject
host      app  blocked 127.0.0.1/32      reject
hostssl   app  tlsonly 127.0.0.1/32      trust
host      app  cidr    127.0.0.2/32      trust
host      app  cidr    127.0.0.0 255.255.255.254 \
                                         reject
host      app  @admins.txt 127.0.0.0/8   md5
hostnossl app  plain   127.0.0.1/32      password
host      "all" app    127.0.0.1/32      trust
host      app  app     ::1/128           trust
host      app  app     127.0.0.1/32      scram-sha-256
"#;

#[test]
fn hba_rules_decide_each_login() {
    let pg = cluster();
    let ca = Ca::new("pgring test CA");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "pgring test server", true);
    let pooler = "auth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\n\
                  client_tls_sslmode = \"prefer\"\n\
                  client_tls_cert_file = \"server.pem\"\nclient_tls_key_file = \"server.key\"";
    let pgring = Pgring::start(
        &forced_user_config(&pg, pooler),
        &[
            ("userlist.txt", HBA_USERS),
            ("hba.conf", HBA_RULES),
            ("admins.txt", "# who may log in with md5\nops1, ops2\n"),
            ("server.pem", &cert),
            ("server.key", &key),
        ],
    );
    let port = pgring.port();
    let plain = [("PGSSLMODE", "disable")];
    let tls = [("PGSSLMODE", "require")];

    // `local`: over the Unix socket, trust.
    let mut cmd = psql_cmd(port, "app", "", "app");
    cmd.env("PGHOST", pgring.dir()).env_remove("PGPASSWORD");
    let out = cmd.arg("-c").arg("SELECT current_user").output().unwrap();
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "app");

    // The last line (the IPv6 one before it does not hold 127.0.0.1): SCRAM, right and
    // wrong password.
    let out = psql(port, "app", "apppass", &plain, "SELECT 1");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "1");
    let out = psql(port, "app", "nope", &plain, "SELECT 1");
    assert_psql_fails(&out, "password authentication failed for user \"app\"");

    // First match wins: trust before reject.
    let out = psql(port, "early", "", &plain, "SELECT 1");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "1");

    // reject, with PostgreSQL's message.
    let out = psql(port, "blocked", "pw", &plain, "SELECT 1");
    assert_psql_fails(
        &out,
        "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"blocked\", database \"app\", no encryption",
    );

    // hostssl: only over TLS; plaintext falls through to no entry at all.
    let out = psql(port, "tlsonly", "", &tls, "SELECT 1");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "1");
    let out = psql(port, "tlsonly", "", &plain, "SELECT 1");
    assert_psql_fails(
        &out,
        "no pg_hba.conf entry for host \"127.0.0.1\", user \"tlsonly\", database \"app\", no encryption",
    );

    // Addresses: 127.0.0.2/32 does not hold the client, 127.0.0.0 with mask /31 does.
    let out = psql(port, "cidr", "pw", &plain, "SELECT 1");
    assert_psql_fails(&out, "pg_hba.conf rejects connection");

    // @file: ops1 is listed, so md5 applies.
    let out = psql(port, "ops1", "ops1pw", &plain, "SELECT 1");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "1");
    let out = psql(port, "ops1", "wrong", &plain, "SELECT 1");
    assert_psql_fails(&out, "password authentication failed for user \"ops1\"");

    // hostnossl: cleartext password without TLS; with TLS the line does not match, and
    // neither does any other.
    let out = psql(port, "plain", "plainpw", &plain, "SELECT 1");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "1");
    let out = psql(port, "plain", "wrong", &plain, "SELECT 1");
    assert_psql_fails(&out, "password authentication failed for user \"plain\"");
    let out = psql(port, "plain", "plainpw", &tls, "SELECT 1");
    assert_psql_fails(
        &out,
        "no pg_hba.conf entry for host \"127.0.0.1\", user \"plain\", database \"app\", SSL encryption",
    );

    // A quoted "all" is a database named all, not the keyword.
    let out = psql(port, "nobody", "", &plain, "SELECT 1");
    assert_psql_fails(
        &out,
        "no pg_hba.conf entry for host \"127.0.0.1\", user \"nobody\", database \"app\", no encryption",
    );
}

#[test]
fn hba_rules_see_ipv6_clients() {
    let pg = cluster();
    let config = forced_user_config(&pg, "auth_type = \"hba\"\nauth_hba_file = \"hba.conf\"")
        .replace("listen_addr = \"127.0.0.1\"", "listen_addr = \"::1\"");
    let pgring = Pgring::start(
        &config,
        &[
            ("userlist.txt", "\"app\" \"apppass\"\n\"six\" \"pw\"\n"),
            (
                "hba.conf",
                "host app app 127.0.0.1/32 reject\n\
                 host app app ::1/128 md5\n\
                 host app six 0.0.0.0/0 trust\n",
            ),
        ],
    );
    let over_ipv6 = |user: &str, password: &str| {
        psql(
            pgring.port(),
            user,
            password,
            &[("PGHOST", "::1")],
            "SELECT 1",
        )
    };
    assert_eq!(
        assert_psql_ok(&over_ipv6("app", "apppass"), &pgring).trim(),
        "1"
    );
    assert_psql_fails(
        &over_ipv6("app", "wrong"),
        "password authentication failed for user \"app\"",
    );
    // An IPv4 rule never holds an IPv6 client.
    assert_psql_fails(
        &over_ipv6("six", "pw"),
        "no pg_hba.conf entry for host \"::1\", user \"six\", database \"app\", no encryption",
    );
}

#[test]
fn hba_file_errors_name_the_file_and_line() {
    let pg = cluster();
    let pgring_dir = tempfile::tempdir().unwrap();
    let config_path = pgring_dir.path().join("pgring.toml");
    let config = forced_user_config(&pg, "auth_type = \"hba\"\nauth_hba_file = \"hba.conf\"")
        .replace("{dir}", pgring_dir.path().to_str().unwrap());
    std::fs::write(&config_path, config).unwrap();
    std::fs::write(pgring_dir.path().join("userlist.txt"), HBA_USERS).unwrap();
    std::fs::write(
        pgring_dir.path().join("hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 ident\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgring"))
        .arg("--config")
        .arg(&config_path)
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("hba.conf:2"), "{err}");
    assert!(err.contains("ident"), "{err}");
}

/// pgring asking TLS clients for a certificate from `ca` (requiring one under
/// `verify-ca`), with `auth_type` and an ident file.
fn cert_pgring(pg: &PgCluster, ca: &Ca, mode: &str, auth: &str, hba: &str, ident: &str) -> Pgring {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "pgring test server", true);
    let pooler = format!(
        "{auth}\nauth_ident_file = \"ident.conf\"\nclient_tls_sslmode = \"{mode}\"\n\
         client_tls_cert_file = \"server.pem\"\nclient_tls_key_file = \"server.key\"\n\
         client_tls_ca_file = \"ca.pem\""
    );
    Pgring::start(
        &forced_user_config(pg, &pooler),
        &[
            ("userlist.txt", "\"app\" \"apppass\"\n\"bob\" \"bobpw\"\n"),
            ("hba.conf", hba),
            ("ident.conf", ident),
            ("server.pem", &cert),
            ("server.key", &key),
            ("ca.pem", &ca.pem()),
        ],
    )
}

/// Writes a client certificate with common name `cn` into pgring's folder; returns the
/// libpq settings that present it.
fn client_cert(pgring: &Pgring, ca: &Ca, cn: &str) -> Vec<(&'static str, String)> {
    let (cert, key) = ca.leaf(&[], cn, false);
    let name = cn.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let cert_path = pgring.dir().join(format!("{name}.crt"));
    let key_path = pgring.dir().join(format!("{name}.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    vec![
        ("PGSSLMODE", "require".to_owned()),
        ("PGSSLCERT", cert_path.to_str().unwrap().to_owned()),
        ("PGSSLKEY", key_path.to_str().unwrap().to_owned()),
    ]
}

fn psql_env(port: u16, user: &str, password: &str, env: &[(&str, String)], sql: &str) -> Output {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    psql(port, user, password, &env, sql)
}

#[test]
fn cert_auth_needs_the_common_name_to_be_the_user() {
    let pg = cluster();
    let ca = Ca::new("pgring test CA");
    let pgring = cert_pgring(&pg, &ca, "verify-ca", "auth_type = \"cert\"", "", "");
    let port = pgring.port();
    let app = client_cert(&pgring, &ca, "app");
    let out = psql_env(port, "app", "", &app, "SELECT current_user");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "app");
    // The certificate of app does not make its holder bob.
    let out = psql_env(port, "bob", "", &app, "SELECT 1");
    assert_psql_fails(
        &out,
        "certificate authentication failed for user \"bob\": the certificate's common name \"app\" is not the user name",
    );
    // A certificate from another CA never gets that far.
    let other_ca = Ca::new("another CA");
    let stranger = client_cert(&pgring, &other_ca, "bob");
    let out = psql_env(port, "bob", "", &stranger, "SELECT 1");
    assert!(!out.status.success());
}

#[test]
fn cert_rules_map_names_through_the_ident_file() {
    let pg = cluster();
    let ca = Ca::new("pgring test CA");
    let hba = "hostssl all bob 127.0.0.1/32 md5 clientcert=verify-full\n\
               hostssl all all 127.0.0.1/32 cert map=clients\n";
    let ident = "# certificate names to users\n\
                 clients  /^(.*)\\.clients\\.example$  \\1\n\
                 clients  \"Ops Team\"                 app\n";
    // `require` with a CA: certificates are asked for, not required; the rules decide.
    let pgring = cert_pgring(
        &pg,
        &ca,
        "require",
        "auth_type = \"hba\"\nauth_hba_file = \"hba.conf\"",
        hba,
        ident,
    );
    let port = pgring.port();
    let app_host = client_cert(&pgring, &ca, "app.clients.example");
    let out = psql_env(port, "app", "", &app_host, "SELECT current_user");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "app");
    let ops = client_cert(&pgring, &ca, "Ops Team");
    let out = psql_env(port, "app", "", &ops, "SELECT 1");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "1");
    // The regex maps app.clients.example to app only.
    let out = psql_env(port, "ghost", "", &app_host, "SELECT 1");
    assert_psql_fails(
        &out,
        "the certificate's common name \"app.clients.example\" does not map (map \"clients\") to the user name",
    );
    // No certificate at all: the cert rule refuses as PostgreSQL does.
    let no_cert = [("PGSSLMODE", "require".to_owned())];
    let out = psql_env(port, "app", "", &no_cert, "SELECT 1");
    assert_psql_fails(&out, "connection requires a valid client certificate");
    // bob's rule wants a password and a certificate naming bob.
    let bob = client_cert(&pgring, &ca, "bob");
    let out = psql_env(port, "bob", "bobpw", &bob, "SELECT current_user");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "app");
    let out = psql_env(port, "bob", "wrong", &bob, "SELECT 1");
    assert_psql_fails(&out, "password authentication failed for user \"bob\"");
    let out = psql_env(port, "bob", "bobpw", &no_cert, "SELECT 1");
    assert_psql_fails(&out, "connection requires a valid client certificate");
    let out = psql_env(port, "bob", "bobpw", &app_host, "SELECT 1");
    assert_psql_fails(
        &out,
        "the certificate's common name \"app.clients.example\" is not the user name",
    );
}

#[test]
fn peer_auth_maps_the_os_user() {
    let pg = cluster();
    let os_user = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let os_user = text(&os_user.stdout).trim().to_owned();
    let hba = "local all app peer map=os\nlocal all bob peer\n";
    let ident = format!("os {os_user} app\n");
    let pgring = Pgring::start(
        &forced_user_config(
            &pg,
            "auth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\nauth_ident_file = \"ident.conf\"",
        ),
        &[
            ("userlist.txt", "\"app\" \"apppass\"\n\"bob\" \"bobpw\"\n"),
            ("hba.conf", hba),
            ("ident.conf", &ident),
        ],
    );
    let unix = |user: &str| {
        let mut cmd = psql_cmd(pgring.port(), user, "", "app");
        cmd.env("PGHOST", pgring.dir()).env_remove("PGPASSWORD");
        cmd.arg("-c").arg("SELECT current_user").output().unwrap()
    };
    assert_eq!(assert_psql_ok(&unix("app"), &pgring).trim(), "app");
    if os_user != "bob" {
        assert_psql_fails(&unix("bob"), "peer authentication failed for user \"bob\"");
    }
    // Over TCP no rule matches.
    let out = psql(pgring.port(), "app", "apppass", &[], "SELECT 1");
    assert_psql_fails(
        &out,
        "no pg_hba.conf entry for host \"127.0.0.1\", user \"app\"",
    );
}

/// Runs `f` until it returns true or 30 s pass (a loaded machine is slow to reload).
#[track_caller]
fn eventually(what: &str, pgring: &Pgring, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "{what}\n{}", pgring.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn reload_changes_rules_and_passwords_under_connected_clients() {
    let pg = cluster();
    let pgring = Pgring::start(
        &forced_user_config(&pg, "auth_type = \"hba\"\nauth_hba_file = \"hba.conf\""),
        &[
            ("userlist.txt", "\"app\" \"apppass\"\n\"ops\" \"opspw\"\n"),
            (
                "hba.conf",
                "host app app 127.0.0.1/32 scram-sha-256\nhost app ops 127.0.0.1/32 md5\n",
            ),
        ],
    );
    let port = pgring.port();
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=app password=apppass dbname=app"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.unwrap();

    let login = |user: &str, password: &str| psql(port, user, password, &[], "SELECT 1");
    // New rules and a new password for ops.
    std::fs::write(
        pgring.dir().join("hba.conf"),
        "host app app 127.0.0.1/32 reject\nhost app ops 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    std::fs::write(
        pgring.dir().join("userlist.txt"),
        "\"app\" \"apppass\"\n\"ops\" \"newopspw\"\n",
    )
    .unwrap();
    assert!(pgring.signal(libc::SIGHUP));
    eventually(
        "the new hba rules are not used after SIGHUP",
        &pgring,
        || !login("app", "apppass").status.success(),
    );
    assert_psql_fails(&login("app", "apppass"), "pg_hba.conf rejects connection");
    assert_eq!(
        assert_psql_ok(&login("ops", "newopspw"), &pgring).trim(),
        "1"
    );
    assert_psql_fails(
        &login("ops", "opspw"),
        "password authentication failed for user \"ops\"",
    );
    // The session that logged in under the old rules goes on.
    client.simple_query("SELECT 2").await.unwrap();

    // A broken file: the reload is refused, the error names file and line, and the
    // running rules stay.
    std::fs::write(
        pgring.dir().join("hba.conf"),
        "host app app 127.0.0.1/32 trust\nhost app ops 127.0.0.1/32 gss\n",
    )
    .unwrap();
    assert!(pgring.signal(libc::SIGHUP));
    eventually("no reload error logged", &pgring, || {
        pgring.log().contains("hba.conf:2")
    });
    let log = pgring.log();
    let line = log.lines().find(|l| l.contains("hba.conf:2")).unwrap();
    assert!(line.contains("reload failed"), "{line}");
    assert_psql_fails(&login("app", "apppass"), "pg_hba.conf rejects connection");
    assert_eq!(
        assert_psql_ok(&login("ops", "newopspw"), &pgring).trim(),
        "1"
    );
    client.simple_query("SELECT 3").await.unwrap();
}

#[test]
fn md5_clients_of_a_verifier_only_user_are_switched_to_scram() {
    let pg = cluster();
    // The auth_file holds PostgreSQL's own verifier: no password is stored anywhere, so
    // the server login can only use the keys of the client's SCRAM proof.
    let verifier = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
    let verifier = verifier.trim();
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let pgring = Pgring::start(
        &config(&pg, "auth_type = \"md5\""),
        &[("userlist.txt", &format!("\"app\" \"{verifier}\"\n"))],
    );
    let out = psql(pgring.port(), "app", "apppass", &[], "SELECT current_user");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "app");
    let out = psql(pgring.port(), "app", "md5 would not help", &[], "SELECT 1");
    assert_psql_fails(&out, "password authentication failed for user \"app\"");
}
