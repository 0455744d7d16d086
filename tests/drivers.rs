//! Real client drivers through pgring: psycopg 3 (libpq), asyncpg, node-postgres and
//! pgjdbc, each running the same scenario from a program of its own language under
//! `tests/drivers/`.
//!
//! Each driver speaks the protocol its own way (libpq's pipeline mode, asyncpg's binary
//! formats and executemany, node-postgres in pure JavaScript, pgjdbc's batches, fetch-size
//! portals and its `extra_float_digits` startup parameter), which psql and tokio-postgres
//! alone would not show. The scenario, run against pgring with two shards, transaction
//! pooling over a pool smaller than the number of clients, client TLS required and SCRAM:
//! verify-full TLS (with SCRAM channel binding where the driver offers it), parameters of
//! several types up to 1 MB, commit and rollback, SQLSTATEs of errors with the connection
//! usable afterwards, 100,000-row results, COPY in and out, notices, pipelined or batched
//! statements, a cancelled `pg_sleep` (the CancelRequest comes on a new connection, often
//! to the other shard), concurrent transactions that each check they kept one server
//! session, and named prepared statements through a session-pooled database.
//!
//! Every driver runs at its default settings, prepared statements included: asyncpg's
//! statement cache, psycopg's and pgjdbc's prepare thresholds, node-postgres's named
//! queries, which pgring keeps track of in transaction pooling (`max_prepared_statements`,
//! left at its default). The `prepared_tx` checks load that: 150 connections (50 for
//! pgjdbc) on a transaction-pooled database of 5 server connections, each running a
//! statement text shared by all connections and one of its own 20 times with other
//! parameters, checking every result (psycopg also with `prepare_threshold=0`, pgjdbc also
//! with `prepareThreshold=1`).
//!
//! The programs print `ok <check>` per check, run every check even after one failed
//! (printing `FAIL <check>: <error>`), and exit non-zero on any failure; the tests require
//! every check's line. The drivers are installed by `scripts/install-deps.sh`.
//!
//! `PGRING_DRIVERS_TX_DB=app_session` in the environment of `cargo test` runs the checks
//! meant for transaction pooling through the session-pooled database instead, where named
//! statements need no help from pgring: a way to check the driver programs themselves.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use certs::Ca;
use support::{free_port, PgCluster, Pgring};

/// How long one driver program may run: the JVM compiling the source, and hundreds of
/// TLS and SCRAM logins, on two busy cores.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(600);

/// The checks every program runs.
const COMMON_CHECKS: &[&str] = &[
    "tls",
    "types",
    "transactions",
    "errors",
    "large",
    "notice",
    "cancel",
    "concurrent",
    "session_prepared",
    "prepared_tx",
];

/// The transaction-pooled database of the `prepared_tx` checks.
const PREPARED_DB: &str = "app_prepared";

struct Setup {
    _pg: PgCluster,
    pgring: Pgring,
    ca_file: PathBuf,
    foreign_ca_file: PathBuf,
}

/// PostgreSQL with role `app`, and pgring in front of it: two shards, SCRAM from the
/// auth_file, client TLS required with a certificate for `localhost` from a fresh CA,
/// database `app` pooled by transaction over 4 server connections, `app_session` (the same
/// database) pooled by session and `app_prepared` (the same again) pooled by transaction
/// over 5 server connections (3 and 2 on the shards), for the `prepared_tx` checks.
fn setup() -> Setup {
    let pg = PgCluster::start();
    pg.create_role("app", "apppass", "");
    pg.create_database("app", "app");
    let ca = Ca::new("pgring driver test CA");
    let (cert, key) = ca.leaf(
        &["localhost", "127.0.0.1"],
        "pgring driver test server",
        true,
    );
    let port = free_port();
    let pgport = pg.port();
    let config = format!(
        r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = ""
shards = 2
auth_type = "scram-sha-256"
auth_file = "userlist.txt"
pool_mode = "transaction"
default_pool_size = 4
# The prepared_tx checks open 150 connections at once.
max_client_conn = 1000
stats_period = 0
# pgjdbc sends extra_float_digits at login.
ignore_startup_parameters = ["extra_float_digits"]
client_tls_sslmode = "require"
client_tls_cert_file = "server.pem"
client_tls_key_file = "server.key"

[databases]
app = {{ host = "127.0.0.1", port = {pgport}, dbname = "app" }}
app_session = {{ host = "127.0.0.1", port = {pgport}, dbname = "app", pool_mode = "session" }}
app_prepared = {{ host = "127.0.0.1", port = {pgport}, dbname = "app", pool_size = 5 }}
"#
    );
    let ca_pem = ca.pem();
    let foreign_pem = Ca::new("some other CA").pem();
    let pgring = Pgring::start(
        &config,
        &[
            ("userlist.txt", "\"app\" \"apppass\"\n"),
            ("server.pem", &cert),
            ("server.key", &key),
            ("ca.pem", &ca_pem),
            ("foreign-ca.pem", &foreign_pem),
        ],
    );
    Setup {
        _pg: pg,
        ca_file: pgring.dir().join("ca.pem"),
        foreign_ca_file: pgring.dir().join("foreign-ca.pem"),
        pgring,
    }
}

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// Panics with what to install when `probe` (a command that only loads the driver)
/// fails.
fn require(probe: &mut Command, driver: &str, package: &str) {
    let out = probe
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{driver}: cannot run {probe:?}: {e}"));
    assert!(
        out.status.success(),
        "{driver} is not installed ({package}); scripts/install-deps.sh installs it\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a driver program against `s` and checks that it passed every check in `checks`;
/// its `prepared_tx` checks open `prepared_clients` connections.
fn run_driver(s: &Setup, mut cmd: Command, checks: &[&str], prepared_clients: u32) {
    // The databases of the transaction-pooled checks, unless PGRING_DRIVERS_TX_DB names
    // another one to run them against (see the top of this file).
    let redirect = std::env::var("PGRING_DRIVERS_TX_DB").ok();
    let tx_db = redirect.as_deref().unwrap_or("app");
    let prepared_db = redirect.as_deref().unwrap_or(PREPARED_DB);
    cmd.env("PGRING_HOST", "localhost")
        .env("PGRING_PORT", s.pgring.port().to_string())
        .env("PGRING_USER", "app")
        .env("PGRING_PASSWORD", "apppass")
        .env("PGRING_TX_DB", tx_db)
        .env("PGRING_SESSION_DB", "app_session")
        .env("PGRING_PREPARED_DB", prepared_db)
        .env("PGRING_CA", &s.ca_file)
        .env("PGRING_FOREIGN_CA", &s.foreign_ca_file)
        .env("PGRING_CLIENTS", "16")
        .env("PGRING_PREPARED_CLIENTS", prepared_clients.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Read both pipes on threads so that a chatty program cannot block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + DRIVER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the driver") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let report = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let Some(status) = status else {
        panic!("{cmd:?} still running after {DRIVER_TIMEOUT:?}\n{report}");
    };
    let missing: Vec<&str> = checks
        .iter()
        .copied()
        .filter(|check| !stdout.lines().any(|l| l == format!("ok {check}")))
        .collect();
    assert!(
        status.success() && missing.is_empty(),
        "{cmd:?} exited with {status}; checks that did not pass: {missing:?}\n{report}"
    );
    // pgring said nothing about a protocol problem or a server connection in trouble.
    let log = s.pgring.log();
    for bad in ["protocol violation", "panicked", "ERROR"] {
        assert!(!log.contains(bad), "pgring logged {bad:?}:\n{log}");
    }
    // The program's lines, for `cargo test --test drivers -- --show-output`.
    println!("{stdout}");
}

/// Debian's interpreter, whose dist-packages hold python3-psycopg and python3-asyncpg
/// (a `python3` earlier in PATH may be another installation without them). It writes no
/// `__pycache__` into the source tree.
fn python() -> Command {
    let system = Path::new("/usr/bin/python3");
    let mut cmd = Command::new(if system.exists() {
        system
    } else {
        Path::new("python3")
    });
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// The common checks plus COPY and `pipeline` (a pipeline, an executemany or a batch:
/// statements sent before one Sync), for the drivers that have both. node-postgres has
/// neither (COPY is the pg-copy-streams package; it sends one query at a time).
fn with_copy_and_pipeline() -> Vec<&'static str> {
    let mut all = COMMON_CHECKS.to_vec();
    all.extend(["copy", "pipeline"]);
    all
}

/// A driver test in Debian's Python: `module` must import, then `script` runs, which must
/// pass `extra` checks too. Its `prepared_tx` checks open 150 connections from one event
/// loop.
fn python_driver(module: &str, package: &str, script: &str, extra: &[&'static str]) {
    require(
        python().args(["-c", &format!("import {module}")]),
        module,
        package,
    );
    let s = setup();
    let mut cmd = python();
    cmd.arg(drivers_dir().join(script));
    let mut checks = with_copy_and_pipeline();
    checks.extend(extra);
    run_driver(&s, cmd, &checks, 150);
}

#[test]
fn psycopg() {
    python_driver(
        "psycopg",
        "python3-psycopg",
        "psycopg_check.py",
        &["prepared_tx_threshold0"],
    );
}

#[test]
fn asyncpg() {
    python_driver("asyncpg", "python3-asyncpg", "asyncpg_check.py", &[]);
}

#[test]
fn node_postgres() {
    let dir = drivers_dir().join("node");
    require(
        Command::new("node")
            .current_dir(&dir)
            .args(["-e", "require('pg')"]),
        "node-postgres",
        "nodejs, and `npm ci` in tests/drivers/node",
    );
    let s = setup();
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir).arg("check.js");
    run_driver(&s, cmd, COMMON_CHECKS, 150);
}

/// Where Debian's libpostgresql-jdbc-java puts the driver.
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[test]
fn pgjdbc() {
    require(
        Command::new("java").arg("-version"),
        "a Java runtime",
        "default-jdk-headless",
    );
    assert!(
        Path::new(PGJDBC_JAR).is_file(),
        "pgjdbc is not installed ({PGJDBC_JAR}, libpostgresql-jdbc-java); \
         scripts/install-deps.sh installs it"
    );
    let s = setup();
    let mut cmd = Command::new("java");
    cmd.args(["-cp", PGJDBC_JAR])
        .arg(drivers_dir().join("jdbc/DriverCheck.java"));
    // One thread per connection: 50 of them.
    let mut checks = with_copy_and_pipeline();
    checks.push("prepared_tx_threshold1");
    run_driver(&s, cmd, &checks, 50);
}
