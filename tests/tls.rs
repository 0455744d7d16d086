//! Client-side TLS through pgring with real libpq (psql): the sslmodes, certificate
//! verification by the client and by pgring, the refusals (plaintext under `require`,
//! plaintext buffered behind an SSLRequest, a config without its key), the reload of
//! the certificate, the cipher and curve settings, and client certificate revocation. A
//! small blocking rustls client ([`tls_connect`]) offers exactly the suites, groups and
//! ALPN a test needs, which libpq cannot be made to do.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::Ca;
use support::{
    app_config, assert_psql_fails, assert_psql_ok, free_port, psql_tls, text, PgCluster, Pgring,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

const USERLIST: &str = "\"app\" \"apppass\"\n";

struct Setup {
    _pg: PgCluster,
    pgring: Pgring,
}

fn cluster() -> PgCluster {
    let pg = PgCluster::start();
    pg.create_role("app", "apppass", "");
    pg.create_database("app", "app");
    pg
}

const TLS_KEYS: &str = r#"client_tls_cert_file = "server.pem"
client_tls_key_file = "server.key"
client_tls_ca_file = "ca.pem""#;

/// pgring with `client_tls_sslmode = mode`, a server certificate from `ca` and `ca` as the
/// root for client certificates.
fn setup(mode: &str, ca: &Ca) -> Setup {
    let pg = cluster();
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "pgring test server", true);
    let ca_pem = ca.pem();
    let pooler = format!("client_tls_sslmode = \"{mode}\"\n{TLS_KEYS}");
    let pgring = Pgring::start(
        &app_config(&pg, free_port(), &pooler),
        &[
            ("userlist.txt", USERLIST),
            ("server.pem", &cert),
            ("server.key", &key),
            ("ca.pem", &ca_pem),
        ],
    );
    Setup { _pg: pg, pgring }
}

/// Writes `contents` to `name` in pgring's folder (mode 0600: libpq refuses keys others
/// can read) and returns the path.
fn write_file(pgring: &Pgring, name: &str, contents: &str) -> PathBuf {
    let path = pgring.dir().join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// psql through pgring as app with the given libpq environment, running `sql`.
fn psql(port: u16, env: &[(&str, &str)], sql: &str) -> Output {
    psql_tls(port, "app", "apppass", env, sql)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn require_gives_a_tls_session() {
    let ca = Ca::new("pgring test CA");
    let s = setup("require", &ca);
    let port = s.pgring.port();
    let out = psql(port, &[("PGSSLMODE", "require")], "SELECT 1");
    assert_eq!(assert_psql_ok(&out, &s.pgring).trim(), "1");
    let out = psql(port, &[("PGSSLMODE", "require")], "\\conninfo");
    let info = assert_psql_ok(&out, &s.pgring);
    assert!(info.contains("SSL connection"), "{info}");
    assert!(info.contains("TLSv1.3"), "{info}");
    // A session runs whole over TLS: a transaction, and several statements.
    let out = psql(
        port,
        &[("PGSSLMODE", "require")],
        "BEGIN; CREATE TEMP TABLE t AS SELECT g FROM generate_series(1, 20000) g; \
         SELECT sum(g) FROM t; COMMIT;",
    );
    assert!(assert_psql_ok(&out, &s.pgring).contains("200010000"));
    // The key file as Pgring::start wrote it is readable by others: pgring says so.
    assert!(
        s.pgring.log().contains("readable by group or others"),
        "{}",
        s.pgring.log()
    );
}

#[test]
fn verify_full_checks_the_name_and_the_root() {
    let ca = Ca::new("pgring test CA");
    let s = setup("require", &ca);
    let port = s.pgring.port();
    let ca_file = write_file(&s.pgring, "root.pem", &ca.pem());
    for host in ["localhost", "127.0.0.1"] {
        let out = psql(
            port,
            &[
                ("PGSSLMODE", "verify-full"),
                ("PGSSLROOTCERT", path_str(&ca_file)),
                ("PGHOST", host),
            ],
            "SELECT 1",
        );
        assert_eq!(assert_psql_ok(&out, &s.pgring).trim(), "1", "host={host}");
    }
    let foreign = write_file(&s.pgring, "foreign.pem", &Ca::new("someone else").pem());
    let out = psql(
        port,
        &[
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", path_str(&foreign)),
            ("PGHOST", "localhost"),
        ],
        "SELECT 1",
    );
    assert_psql_fails(&out, "certificate verify failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn require_refuses_plaintext() {
    let ca = Ca::new("pgring test CA");
    let s = setup("require", &ca);
    let port = s.pgring.port();
    let out = psql(port, &[("PGSSLMODE", "disable")], "SELECT 1");
    assert_psql_fails(&out, "SSL required");
    let conn =
        format!("host=127.0.0.1 port={port} user=app password=apppass dbname=app sslmode=disable");
    let err = tokio_postgres::connect(&conn, NoTls)
        .await
        .err()
        .expect("a plaintext login is refused");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err}"
    );
    // The Unix socket is not TCP: as with PostgreSQL's hostssl, require does not apply.
    let out = psql(
        port,
        &[
            ("PGSSLMODE", "disable"),
            ("PGHOST", path_str(s.pgring.dir())),
        ],
        "SELECT 1",
    );
    assert_eq!(assert_psql_ok(&out, &s.pgring).trim(), "1");
}

#[test]
fn disable_stays_plaintext() {
    let pg = cluster();
    let pgring = Pgring::start(
        &app_config(&pg, free_port(), ""),
        &[("userlist.txt", USERLIST)],
    );
    let port = pgring.port();
    let out = psql(port, &[("PGSSLMODE", "prefer")], "\\conninfo");
    let info = assert_psql_ok(&out, &pgring);
    assert!(!info.contains("SSL"), "{info}");
    let out = psql(port, &[("PGSSLMODE", "require")], "SELECT 1");
    assert_psql_fails(&out, "server does not support SSL");
}

#[test]
fn verify_ca_requires_a_client_certificate() {
    let ca = Ca::new("pgring test CA");
    let s = setup("verify-ca", &ca);
    let port = s.pgring.port();
    let (cert, key) = ca.leaf(&[], "app", false);
    let cert = write_file(&s.pgring, "client.pem", &cert);
    let key = write_file(&s.pgring, "client.key", &key);
    let out = psql(
        port,
        &[
            ("PGSSLMODE", "require"),
            ("PGSSLCERT", path_str(&cert)),
            ("PGSSLKEY", path_str(&key)),
        ],
        "SELECT 1",
    );
    assert_eq!(assert_psql_ok(&out, &s.pgring).trim(), "1");
    // No certificate: the handshake fails, and pgring logs why.
    let out = psql(port, &[("PGSSLMODE", "require")], "SELECT 1");
    assert!(!out.status.success());
    // A certificate from another CA: refused too.
    let (cert, key) = Ca::new("someone else").leaf(&[], "app", false);
    let cert = write_file(&s.pgring, "other.pem", &cert);
    let key = write_file(&s.pgring, "other.key", &key);
    let out = psql(
        port,
        &[
            ("PGSSLMODE", "require"),
            ("PGSSLCERT", path_str(&cert)),
            ("PGSSLKEY", path_str(&key)),
        ],
        "SELECT 1",
    );
    assert!(!out.status.success());
    wait_for_log(&s.pgring, "TLS handshake failed");
}

#[test]
fn a_refused_handshake_tells_the_client_why() {
    let ca = Ca::new("pgring test CA");
    let s = setup("verify-ca", &ca);
    let port = s.pgring.port();
    let refusal = |config| match tls_connect(port, config, false) {
        // TLS 1.3: the client's side of the handshake is done before pgring has checked
        // its certificate, and the alert comes to its first read.
        Ok(mut stream) => login(&mut stream).expect_err("logged in without a good certificate"),
        Err(e) => e,
    };
    // No certificate: the alert says one is required (not just a closed connection).
    for suites in [all_suites(), tls12_suites()] {
        let err = refusal(client_config(&ca, &suites, &all_groups(), &[]));
        assert!(err.contains("CertificateRequired"), "{err}");
    }
    // A certificate from a CA pgring does not know.
    let (cert, key) = Ca::new("someone else").leaf(&[], "app", false);
    let err = refusal(client_config_with_cert(&ca, &cert, &key));
    assert!(err.contains("UnknownCA"), "{err}");
    wait_for_log(
        &s.pgring,
        "TLS handshake failed: invalid peer certificate: UnknownIssuer",
    );
    // A good certificate still logs in.
    let (cert, key) = ca.leaf(&[], "app", false);
    let mut ok = tls_connect(port, client_config_with_cert(&ca, &cert, &key), false).unwrap();
    login(&mut ok).unwrap();
}

#[test]
fn plaintext_buffered_after_ssl_request_is_refused() {
    let ca = Ca::new("pgring test CA");
    let s = setup("require", &ca);
    let mut sock = TcpStream::connect(("127.0.0.1", s.pgring.port())).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&8i32.to_be_bytes());
    bytes.extend_from_slice(&80_877_103i32.to_be_bytes());
    let mut startup = Vec::new();
    startup.extend_from_slice(&196_608i32.to_be_bytes());
    for s in ["user", "app", "database", "app", ""] {
        startup.extend_from_slice(s.as_bytes());
        startup.push(0);
    }
    bytes.extend_from_slice(&(startup.len() as i32 + 4).to_be_bytes());
    bytes.extend_from_slice(&startup);
    sock.write_all(&bytes).unwrap();
    let mut reply = Vec::new();
    sock.read_to_end(&mut reply)
        .expect("pgring closes the connection");
    assert_ne!(reply.first(), Some(&b'S'), "no TLS handshake may start");
    // A plaintext FATAL, as from PostgreSQL; never an answer to the injected startup packet.
    assert_eq!(reply.first(), Some(&b'E'), "unexpected reply {reply:?}");
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("received unencrypted data after encryption request"),
        "{text}"
    );
    assert!(!text.contains("password"), "{text}");
}

#[test]
fn protocols_limit_the_tls_version() {
    let pg = cluster();
    let ca = Ca::new("pgring test CA");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "pgring test server", true);
    let start = |protocols: &str| {
        let pooler = format!(
            "client_tls_sslmode = \"require\"\nclient_tls_protocols = \"{protocols}\"\n\
             client_tls_cert_file = \"server.pem\"\nclient_tls_key_file = \"server.key\""
        );
        Pgring::start(
            &app_config(&pg, free_port(), &pooler),
            &[
                ("userlist.txt", USERLIST),
                ("server.pem", &cert),
                ("server.key", &key),
            ],
        )
    };
    let tls12 = start("tlsv1.2");
    let out = psql(tls12.port(), &[("PGSSLMODE", "require")], "\\conninfo");
    let info = assert_psql_ok(&out, &tls12);
    assert!(info.contains("TLSv1.2"), "{info}");
    let tls13 = start("tlsv1.3");
    let out = psql(
        tls13.port(),
        &[
            ("PGSSLMODE", "require"),
            ("PGSSLMAXPROTOCOLVERSION", "TLSv1.2"),
        ],
        "SELECT 1",
    );
    assert!(!out.status.success(), "a TLS 1.2 client got through");
    let out = psql(tls13.port(), &[("PGSSLMODE", "require")], "\\conninfo");
    assert!(assert_psql_ok(&out, &tls13).contains("TLSv1.3"));
}

#[test]
fn check_names_the_missing_key_and_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgring.toml");
    std::fs::write(
        &path,
        "[pooler]\nclient_tls_sslmode = \"require\"\nclient_tls_cert_file = \"server.pem\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgring"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("pooler.client_tls_key_file"), "{err}");
    assert!(err.contains("pgring.toml:2"), "{err}");

    // All keys there, but the key file holds no key.
    let ca = Ca::new("pgring test CA");
    let (cert, _) = ca.leaf(&["localhost", "127.0.0.1"], "s", true);
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server.key"), ca.pem()).unwrap();
    std::fs::write(
        &path,
        "[pooler]\nclient_tls_sslmode = \"require\"\nclient_tls_cert_file = \"server.pem\"\n\
         client_tls_key_file = \"server.key\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgring"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("client_tls_key_file") && err.contains("no private key found in PEM"),
        "{err}"
    );
}

#[test]
fn reload_swaps_the_certificate_and_keeps_it_when_broken() {
    let old_ca = Ca::new("old CA");
    let s = setup("require", &old_ca);
    let port = s.pgring.port();
    let old_root = write_file(&s.pgring, "old-root.pem", &old_ca.pem());
    let new_ca = Ca::new("new CA");
    let new_root = write_file(&s.pgring, "new-root.pem", &new_ca.pem());
    let verify = |root: &Path| {
        psql(
            port,
            &[
                ("PGSSLMODE", "verify-full"),
                ("PGSSLROOTCERT", path_str(root)),
                ("PGHOST", "localhost"),
            ],
            "SELECT 1",
        )
    };
    assert_eq!(assert_psql_ok(&verify(&old_root), &s.pgring).trim(), "1");
    assert!(!verify(&new_root).status.success());

    let (cert, key) = new_ca.leaf(
        &["localhost", "127.0.0.1"],
        "pgring test server, renewed",
        true,
    );
    std::fs::write(s.pgring.dir().join("server.pem"), cert).unwrap();
    std::fs::write(s.pgring.dir().join("server.key"), key).unwrap();
    assert!(s.pgring.signal(libc::SIGHUP));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !verify(&new_root).status.success() {
        assert!(
            Instant::now() < deadline,
            "the new certificate is not used after SIGHUP\n{}",
            s.pgring.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!verify(&old_root).status.success());

    // A broken key file: the reload fails, names the file, and the running TLS stays.
    std::fs::write(s.pgring.dir().join("server.key"), "not a key\n").unwrap();
    assert!(s.pgring.signal(libc::SIGHUP));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.pgring.log().contains("no private key found in PEM") {
        assert!(
            Instant::now() < deadline,
            "no reload error logged\n{}",
            s.pgring.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.pgring.log();
    let line = log
        .lines()
        .find(|l| l.contains("no private key found in PEM"))
        .unwrap();
    assert!(line.contains("reload failed"), "{line}");
    assert!(line.contains("client_tls_key_file"), "{line}");
    assert!(line.contains("server.key"), "{line}");
    assert_eq!(assert_psql_ok(&verify(&new_root), &s.pgring).trim(), "1");
}

#[test]
fn a_stalled_handshake_counts_against_client_login_timeout() {
    let pg = cluster();
    let ca = Ca::new("pgring test CA");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "pgring test server", true);
    let pooler = "client_login_timeout = 1\nclient_tls_sslmode = \"require\"\n\
                  client_tls_cert_file = \"server.pem\"\nclient_tls_key_file = \"server.key\"";
    let pgring = Pgring::start(
        &app_config(&pg, free_port(), pooler),
        &[
            ("userlist.txt", USERLIST),
            ("server.pem", &cert),
            ("server.key", &key),
        ],
    );
    let mut sock = TcpStream::connect(("127.0.0.1", pgring.port())).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = Vec::new();
    request.extend_from_slice(&8i32.to_be_bytes());
    request.extend_from_slice(&80_877_103i32.to_be_bytes());
    let started = Instant::now();
    sock.write_all(&request).unwrap();
    let mut answer = [0u8; 1];
    sock.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], b'S');
    // No ClientHello follows: pgring gives up after client_login_timeout.
    let mut rest = Vec::new();
    sock.read_to_end(&mut rest)
        .expect("pgring closes the connection");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

/// A rustls client configuration trusting `ca`, offering only `suites` (TLS versions to
/// match) and `groups`, with `alpn` (none when empty).
fn client_config(
    ca: &Ca,
    suites: &[rustls::SupportedCipherSuite],
    groups: &[&'static dyn rustls::crypto::SupportedKxGroup],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = suites.to_vec();
    provider.kx_groups = groups.to_vec();
    let mut versions = Vec::new();
    if suites
        .iter()
        .any(|s| s.version() == &rustls::version::TLS13)
    {
        versions.push(&rustls::version::TLS13);
    }
    if suites
        .iter()
        .any(|s| s.version() == &rustls::version::TLS12)
    {
        versions.push(&rustls::version::TLS12);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// [`client_config`] with all suites and groups, no ALPN, presenting `cert` (PEM) with
/// `key`.
fn client_config_with_cert(ca: &Ca, cert: &str, key: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = rustls_pemfile::certs(&mut cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .unwrap()
        .unwrap();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

/// The TLS 1.2 suites of the default set.
fn tls12_suites() -> Vec<rustls::SupportedCipherSuite> {
    all_suites()
        .into_iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .collect()
}

/// The default suites and groups of rustls's aws-lc-rs provider.
fn all_suites() -> Vec<rustls::SupportedCipherSuite> {
    rustls::crypto::aws_lc_rs::DEFAULT_CIPHER_SUITES.to_vec()
}

fn all_groups() -> Vec<&'static dyn rustls::crypto::SupportedKxGroup> {
    rustls::crypto::aws_lc_rs::ALL_KX_GROUPS.to_vec()
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to pgring and runs a TLS handshake as `localhost`: after an SSLRequest, or
/// at once when `direct` (PostgreSQL 17's direct TLS). The error is the handshake's.
fn tls_connect(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    direct: bool,
) -> Result<TlsStream, String> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if !direct {
        let mut request = Vec::new();
        request.extend_from_slice(&8i32.to_be_bytes());
        request.extend_from_slice(&80_877_103i32.to_be_bytes());
        sock.write_all(&request).unwrap();
        let mut answer = [0u8; 1];
        sock.read_exact(&mut answer).unwrap();
        assert_eq!(answer[0], b'S', "pgring does not offer TLS");
    }
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// Logs in as app/apppass (md5) over `stream`; Ok once ReadyForQuery arrives, Err with
/// the server's error or the I/O failure.
fn login(stream: &mut (impl Read + Write)) -> Result<(), String> {
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", "app"), ("database", "app")],
        &mut out,
    )
    .unwrap();
    stream.write_all(&out).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    loop {
        let mut header = [0u8; 5];
        stream
            .read_exact(&mut header)
            .map_err(|e| format!("reading a message: {e}"))?;
        let len = i32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).map_err(|e| e.to_string())?;
        match header[0] {
            b'R' if body[..4] == 5i32.to_be_bytes() => {
                let salt: [u8; 4] = body[4..8].try_into().unwrap();
                let hash = postgres_protocol::authentication::md5_hash(b"app", b"apppass", salt);
                out.clear();
                postgres_protocol::message::frontend::password_message(hash.as_bytes(), &mut out)
                    .unwrap();
                stream.write_all(&out).map_err(|e| e.to_string())?;
                stream.flush().map_err(|e| e.to_string())?;
            }
            b'E' => return Err(String::from_utf8_lossy(&body).into_owned()),
            b'Z' => return Ok(()),
            _ => {}
        }
    }
}

/// Waits up to 30 s for `needle` in pgring's log (psql may be gone before pgring has
/// written its line).
#[track_caller]
fn wait_for_log(pgring: &Pgring, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pgring.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in pgring's log:\n{}",
            pgring.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// pgring requiring TLS with an ECDSA certificate for localhost and the extra `pooler` lines.
fn start_tls(pg: &PgCluster, ca: &Ca, pooler: &str) -> Pgring {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "pgring test server", true);
    let pooler = format!(
        "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"server.pem\"\n\
         client_tls_key_file = \"server.key\"\n{pooler}"
    );
    Pgring::start(
        &app_config(pg, free_port(), &pooler),
        &[
            ("userlist.txt", USERLIST),
            ("server.pem", &cert),
            ("server.key", &key),
        ],
    )
}

#[test]
fn ciphers_and_curves_limit_the_handshake() {
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    use rustls::crypto::aws_lc_rs::kx_group;
    let pg = cluster();
    let ca = Ca::new("pgring test CA");

    // TLS 1.2 only, one suite, one curve.
    let tls12 = start_tls(
        &pg,
        &ca,
        "client_tls_protocols = \"tlsv1.2\"\n\
         client_tls_ciphers = \"ECDHE-ECDSA-CHACHA20-POLY1305\"\n\
         client_tls_ecdhcurve = \"secp384r1\"",
    );
    let out = psql(tls12.port(), &[("PGSSLMODE", "require")], "\\conninfo");
    let info = assert_psql_ok(&out, &tls12);
    assert!(
        info.contains("TLSv1.2") && info.contains("ECDHE-ECDSA-CHACHA20-POLY1305"),
        "{info}"
    );
    let chacha = [suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256];
    let mut ok = tls_connect(
        tls12.port(),
        client_config(&ca, &chacha, &[kx_group::SECP384R1], &[]),
        false,
    )
    .expect("the configured suite and curve");
    assert_eq!(
        ok.conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );
    login(&mut ok).expect("login over TLS 1.2");
    let err = tls_connect(
        tls12.port(),
        client_config(
            &ca,
            &[suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
            &all_groups(),
            &[],
        ),
        false,
    )
    .expect_err("a suite pgring does not offer is refused");
    assert!(!err.is_empty());
    wait_for_log(&tls12, "peer is incompatible: NoCipherSuitesInCommon");
    let err = tls_connect(
        tls12.port(),
        client_config(&ca, &chacha, &[kx_group::X25519], &[]),
        false,
    )
    .expect_err("a curve pgring does not offer is refused");
    assert!(!err.is_empty());
    wait_for_log(&tls12, "peer is incompatible: NoKxGroupsInCommon");

    // TLS 1.3 suites from client_tls13_ciphers.
    let tls13 = start_tls(
        &pg,
        &ca,
        "client_tls13_ciphers = \"TLS_CHACHA20_POLY1305_SHA256\"",
    );
    let out = psql(tls13.port(), &[("PGSSLMODE", "require")], "\\conninfo");
    let info = assert_psql_ok(&out, &tls13);
    assert!(
        info.contains("TLSv1.3") && info.contains("TLS_CHACHA20_POLY1305_SHA256"),
        "{info}"
    );
    let err = tls_connect(
        tls13.port(),
        client_config(&ca, &[suite::TLS13_AES_128_GCM_SHA256], &all_groups(), &[]),
        false,
    )
    .expect_err("a TLS 1.3 suite pgring does not offer is refused");
    assert!(!err.is_empty());
    wait_for_log(&tls13, "peer is incompatible: NoCipherSuitesInCommon");
    // TLS 1.2 keeps its default suites.
    tls_connect(
        tls13.port(),
        client_config(
            &ca,
            &[suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
            &all_groups(),
            &[],
        ),
        false,
    )
    .expect("TLS 1.2 with a default suite");
    tls_connect(
        tls13.port(),
        client_config(&ca, &all_suites(), &all_groups(), &[]),
        false,
    )
    .expect("rustls's defaults");
}

#[test]
fn crl_refuses_a_revoked_client_certificate() {
    let pg = cluster();
    let ca = Ca::new("pgring test CA");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], "pgring test server", true);
    let pooler = format!(
        "client_tls_sslmode = \"verify-ca\"\n{TLS_KEYS}\nclient_tls_crl_file = \"crl.pem\""
    );
    let pgring = Pgring::start(
        &app_config(&pg, free_port(), &pooler),
        &[
            ("userlist.txt", USERLIST),
            ("server.pem", &cert),
            ("server.key", &key),
            ("ca.pem", &ca.pem()),
            ("crl.pem", &ca.crl(&[666])),
        ],
    );
    let login_with = |serial: u64| {
        let (cert, key) = ca.leaf_with_serial(&[], "app", false, Some(serial));
        let cert = write_file(&pgring, &format!("client-{serial}.pem"), &cert);
        let key = write_file(&pgring, &format!("client-{serial}.key"), &key);
        psql(
            pgring.port(),
            &[
                ("PGSSLMODE", "require"),
                ("PGSSLCERT", path_str(&cert)),
                ("PGSSLKEY", path_str(&key)),
            ],
            "SELECT 1",
        )
    };
    assert_eq!(assert_psql_ok(&login_with(777), &pgring).trim(), "1");
    let out = login_with(666);
    assert!(!out.status.success(), "a revoked certificate got through");
    // psql may be gone before pgring has written its log line.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = pgring.log();
        if log
            .lines()
            .any(|l| l.contains("TLS handshake failed") && l.contains("Revoked"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A file without a CRL is an error naming the key and the file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("crl.pem"), ca.pem()).unwrap();
    let path = dir.path().join("pgring.toml");
    std::fs::write(&path, format!("[pooler]\n{pooler}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgring"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("client_tls_crl_file") && err.contains("crl.pem: no CRL found in PEM"),
        "{err}"
    );
}

#[test]
fn direct_tls_needs_alpn_postgresql() {
    let pg = cluster();
    let ca = Ca::new("pgring test CA");
    let pgring = start_tls(&pg, &ca, "");
    let port = pgring.port();
    let postgresql: &[&[u8]] = &[b"postgresql"];

    // PostgreSQL 17's direct TLS: a ClientHello first, ALPN postgresql, then the startup
    // packet over TLS.
    let mut direct = tls_connect(
        port,
        client_config(&ca, &all_suites(), &all_groups(), postgresql),
        true,
    )
    .expect("direct TLS handshake");
    assert_eq!(direct.conn.alpn_protocol(), Some(&b"postgresql"[..]));
    login(&mut direct).expect("login over direct TLS");

    // The classic way with ALPN (libpq 17 sends it too) and without (libpq 15, psql).
    let mut classic = tls_connect(
        port,
        client_config(&ca, &all_suites(), &all_groups(), postgresql),
        false,
    )
    .unwrap();
    assert_eq!(classic.conn.alpn_protocol(), Some(&b"postgresql"[..]));
    login(&mut classic).expect("login after SSLRequest with ALPN");
    let out = psql(port, &[("PGSSLMODE", "require")], "SELECT 1");
    assert_eq!(assert_psql_ok(&out, &pgring).trim(), "1");

    // Direct TLS without ALPN: the handshake completes, then pgring hangs up.
    let mut bare = tls_connect(
        port,
        client_config(&ca, &all_suites(), &all_groups(), &[]),
        true,
    )
    .expect("the handshake itself succeeds");
    let err = login(&mut bare).expect_err("no login without ALPN");
    assert!(!err.contains("password"), "{err}");
    wait_for_log(
        &pgring,
        "direct TLS connection refused: the client did not negotiate ALPN",
    );

    // Another protocol's ALPN: rustls refuses it in the handshake.
    tls_connect(
        port,
        client_config(&ca, &all_suites(), &all_groups(), &[b"http/1.1"]),
        true,
    )
    .expect_err("a foreign ALPN is refused");
    wait_for_log(
        &pgring,
        "TLS handshake failed: peer doesn't support any known protocol",
    );

    // An SSLRequest inside TLS is a protocol violation.
    let mut again = tls_connect(
        port,
        client_config(&ca, &all_suites(), &all_groups(), postgresql),
        true,
    )
    .unwrap();
    let mut request = Vec::new();
    request.extend_from_slice(&8i32.to_be_bytes());
    request.extend_from_slice(&80_877_103i32.to_be_bytes());
    again.write_all(&request).unwrap();
    again.flush().unwrap();
    let mut reply = Vec::new();
    let _ = again.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with('E'), "{reply}");
    assert!(
        reply.contains("encryption request received over an encrypted connection"),
        "{reply}"
    );
}

#[test]
fn direct_tls_without_client_tls_is_closed() {
    let pg = cluster();
    let pgring = Pgring::start(
        &app_config(&pg, free_port(), ""),
        &[("userlist.txt", USERLIST)],
    );
    let ca = Ca::new("pgring test CA");
    let err = tls_connect(
        pgring.port(),
        client_config(&ca, &all_suites(), &all_groups(), &[b"postgresql"]),
        true,
    )
    .expect_err("no TLS to be had");
    assert!(!err.is_empty());
    wait_for_log(&pgring, "direct TLS connection refused: client TLS is off");
}

#[test]
fn sessions_resume_after_many_other_clients() {
    let ca = Ca::new("pgring test CA");
    let s = setup("require", &ca);
    let port = s.pgring.port();
    let tls13 = || {
        client_config(
            &ca,
            &[rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256],
            &all_groups(),
            &[],
        )
    };
    // A client logs in (reading the tickets pgring sends after the handshake), then
    // 300 others connect: more sessions than a small server-side cache would keep.
    let returning = tls13();
    let mut first = tls_connect(port, returning.clone(), false).unwrap();
    login(&mut first).unwrap();
    assert_eq!(
        first.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    drop(first);
    for _ in 0..300 {
        tls_connect(port, tls13(), false).unwrap();
    }
    // Its ticket still works, on whichever shard the kernel picks.
    for _ in 0..2 {
        let mut again = tls_connect(port, returning.clone(), false).unwrap();
        assert_eq!(
            again.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        login(&mut again).unwrap();
    }
}
