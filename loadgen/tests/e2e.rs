//! End to end: a throwaway PostgreSQL, the built loadgen binary, its JSON report.

#[path = "../../tests/support/certs.rs"]
mod certs;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use certs::Ca;
use support::PgCluster;

const APP_PASSWORD: &str = "app secret";

fn loadgen(args: &[&str], json: &Path) -> (Output, serde_json::Value) {
    let _ = std::fs::remove_file(json);
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--json")
        .arg(json)
        .env_remove("PGPASSWORD")
        .env_remove("PGSSLMODE")
        .env_remove("PGCHANNELBINDING")
        .output()
        .expect("run loadgen");
    let report = std::fs::read_to_string(json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    (out, report)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(out: &Output, report: &serde_json::Value, mode: &str) {
    // Visible with --nocapture.
    eprintln!("{}", text(out));
    assert!(out.status.success(), "{}", text(out));
    assert_eq!(report["mode"], mode, "{report}");
    assert!(report["completed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert!(report["rate_per_s"].as_f64().unwrap() > 0.0, "{report}");
    for field in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(
            report["latency_us"][field].as_f64().unwrap() > 0.0,
            "{field}: {report}"
        );
    }
}

/// psql as `app` in database `app`; returns stdout.
fn app_psql(pg: &PgCluster, sql: &str) -> String {
    let out = support::psql_cmd(pg.port(), "app", APP_PASSWORD, "app")
        .args(["-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql {sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tx_and_handshake_against_postgres() {
    let pg = PgCluster::start();
    pg.create_role("app", APP_PASSWORD, "");
    pg.create_database("app", "app");
    pg.psql(&format!(
        "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD {};",
        support::quote_literal(APP_PASSWORD)
    ));
    pg.create_role("clearuser", APP_PASSWORD, "");
    pg.psql("GRANT ALL ON DATABASE app TO md5user, clearuser;");
    pg.set_hba(&[
        "local all all scram-sha-256",
        "host all md5user 127.0.0.1/32 md5",
        "host all clearuser 127.0.0.1/32 password",
        "host all all 127.0.0.1/32 scram-sha-256",
    ]);
    app_psql(
        &pg,
        "CREATE TABLE counter (id int PRIMARY KEY, n bigint); INSERT INTO counter VALUES (1, 0);",
    );

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let port = pg.port().to_string();
    let conninfo = |user: &str, password: &str| {
        format!(
            "host=127.0.0.1 port={port} user={user} password='{}' dbname=app",
            password.replace('\'', "\\'")
        )
    };

    // tx with a multi-statement script, 4 clients over 2 threads.
    let script = dir.path().join("tx.sql");
    std::fs::write(
        &script,
        "BEGIN;\nUPDATE counter SET n = n + 1 WHERE id = 1; -- one row\nSELECT n FROM counter WHERE id = 1;\nCOMMIT;\n",
    )
    .unwrap();
    let target = conninfo("app", APP_PASSWORD);
    let script_arg = script.to_str().unwrap();
    let args = [
        "tx",
        &target,
        "--clients",
        "4",
        "--duration",
        "2",
        "--threads",
        "2",
        "--script",
        script_arg,
    ];
    let (out, report) = loadgen(&args, &json);
    assert_ok(&out, &report, "tx");
    assert_eq!(report["clients"], 4);
    let completed = report["completed"].as_u64().unwrap();
    let n: u64 = app_psql(&pg, "SELECT n FROM counter WHERE id = 1")
        .trim()
        .parse()
        .unwrap();
    assert!(n >= completed, "counter {n} < completed {completed}");

    // Default script via a URL target (percent-encoded password).
    let url = format!("postgres://app:app%20secret@127.0.0.1:{port}/app");
    let (out, report) = loadgen(&["tx", &url, "--clients", "2", "--duration", "1"], &json);
    assert_ok(&out, &report, "tx");

    // handshake: SCRAM with cached keys.
    let (out, report) = loadgen(
        &[
            "handshake",
            &target,
            "--concurrency",
            "2",
            "--duration",
            "2",
        ],
        &json,
    );
    assert_ok(&out, &report, "handshake");
    assert_eq!(report["auth_method"], "scram-sha-256");
    assert_eq!(report["scram_keys_cached"], true, "{report}");
    for phase in ["tcp", "auth"] {
        assert!(
            report["phases_us"][phase]["p50"].as_u64().unwrap() > 0,
            "{report}"
        );
    }

    // SCRAM without the cache: PBKDF2 every time.
    let (out, report) = loadgen(
        &[
            "handshake",
            &target,
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--no-scram-cache",
        ],
        &json,
    );
    assert_ok(&out, &report, "handshake");
    assert_eq!(report["scram_keys_cached"], false, "{report}");

    // md5 and cleartext.
    for (user, method) in [("md5user", "md5"), ("clearuser", "cleartext")] {
        let (out, report) = loadgen(
            &[
                "handshake",
                &conninfo(user, APP_PASSWORD),
                "--concurrency",
                "2",
                "--duration",
                "2",
            ],
            &json,
        );
        assert_ok(&out, &report, "handshake");
        assert_eq!(report["auth_method"], method, "{report}");
        assert_eq!(report["scram_keys_cached"], false, "{report}");
    }

    // A wrong password: non-zero exit, the server's message on stderr and in the JSON.
    for user in ["app", "md5user"] {
        let (out, report) = loadgen(
            &[
                "handshake",
                &conninfo(user, "wrong"),
                "--concurrency",
                "1",
                "--duration",
                "1",
            ],
            &json,
        );
        assert!(!out.status.success(), "{}", text(&out));
        let expected = format!("password authentication failed for user \"{user}\"");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&expected),
            "{}",
            text(&out)
        );
        assert_eq!(report["completed"], 0, "{report}");
        assert!(report["errors"].as_u64().unwrap() > 0, "{report}");
        assert!(
            report["error_messages"][0]["message"]
                .as_str()
                .unwrap()
                .contains(&expected),
            "{report}"
        );
    }

    // A transaction error rate above --max-error-rate fails the run.
    let bad = dir.path().join("bad.sql");
    std::fs::write(&bad, "SELECT 1/0").unwrap();
    let bad_arg = bad.to_str().unwrap();
    let (out, report) = loadgen(
        &[
            "tx",
            &target,
            "--clients",
            "1",
            "--duration",
            "1",
            "--script",
            bad_arg,
        ],
        &json,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("division by zero"),
        "{}",
        text(&out)
    );
    assert_eq!(report["completed"], 0, "{report}");
}

/// A cluster with role and database `app` (SCRAM), reachable from all of 127.0.0.0/8.
fn app_cluster() -> PgCluster {
    let pg = PgCluster::start();
    pg.create_role("app", APP_PASSWORD, "");
    pg.create_database("app", "app");
    pg.set_hba(&[
        "local all all scram-sha-256",
        "host all all 127.0.0.0/8 scram-sha-256",
    ]);
    pg
}

fn app_target(pg: &PgCluster, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=app password='{APP_PASSWORD}' dbname=app {extra}",
        pg.port()
    )
}

#[test]
fn tls_sslmodes_and_channel_binding() {
    let ca = Ca::new("loadgen test CA");
    let (cert, key) = ca.leaf(&["127.0.0.1"], "pg server", true);
    let pg = PgCluster::start();
    pg.create_role("app", APP_PASSWORD, "");
    pg.create_database("app", "app");
    pg.psql("CREATE ROLE certuser LOGIN; GRANT CONNECT ON DATABASE app TO certuser;");
    pg.write_data_file("server.crt", &cert);
    pg.write_data_file("server.key", &key);
    pg.write_data_file("root.crt", &ca.pem());
    pg.psql("ALTER SYSTEM SET ssl_ca_file = 'root.crt'");
    pg.psql("ALTER SYSTEM SET ssl = on");
    pg.reload();
    assert_eq!(pg.psql("SHOW ssl").trim(), "on");
    // TLS only, except the superuser's socket; certuser logs in with a certificate.
    pg.set_hba(&[
        "local all all scram-sha-256",
        "hostssl all certuser 127.0.0.1/32 cert",
        "hostssl all all 127.0.0.1/32 scram-sha-256",
    ]);

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, Ca::new("another CA").pem()).unwrap();
    let ca_arg = ca_file.display().to_string();

    // verify-full with SCRAM-SHA-256-PLUS required; phases tcp, tls, auth.
    let target = app_target(
        &pg,
        &format!("sslmode=verify-full sslrootcert={ca_arg} channel_binding=require"),
    );
    let hs = |target: &str, extra: &[&str]| {
        let mut args = vec![
            "handshake",
            target,
            "--concurrency",
            "2",
            "--threads",
            "1",
            "--duration",
            "1.5",
        ];
        args.extend_from_slice(extra);
        loadgen(&args, &json)
    };
    let (out, report) = hs(&target, &[]);
    assert_ok(&out, &report, "handshake");
    let completed = report["completed"].as_u64().unwrap();
    assert_eq!(
        report["tls"]["logins"].as_u64(),
        Some(completed),
        "{report}"
    );
    assert_eq!(report["tls"]["version"], "TLSv1.3", "{report}");
    assert_eq!(report["tls"]["resumption"], true, "{report}");
    assert_eq!(report["channel_binding"], true, "{report}");
    assert_eq!(report["auth_method"], "scram-sha-256", "{report}");
    assert_eq!(report["target"]["sslmode"], "verify-full", "{report}");
    for phase in ["tcp", "tls", "auth"] {
        assert!(
            report["phases_us"][phase]["p50"].as_u64().unwrap() > 0,
            "{phase}: {report}"
        );
    }

    // Without resumption nothing resumes (PostgreSQL resumes nothing anyway).
    let (out, report) = hs(&target, &["--no-tls-resume"]);
    assert_ok(&out, &report, "handshake");
    assert_eq!(report["tls"]["resumed"], 0, "{report}");
    assert_eq!(report["tls"]["resumption"], false, "{report}");

    // channel_binding=disable: still TLS, no PLUS.
    let (out, report) = hs(
        &app_target(
            &pg,
            &format!("sslmode=verify-ca sslrootcert={ca_arg} channel_binding=disable"),
        ),
        &[],
    );
    assert_ok(&out, &report, "handshake");
    assert_eq!(report["channel_binding"], false, "{report}");

    // A certificate from another CA is refused, and verify-full does not fall back.
    let (out, report) = hs(
        &app_target(
            &pg,
            &format!("sslmode=verify-full sslrootcert={}", other_ca.display()),
        ),
        &[],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(report["completed"], 0, "{report}");
    let message = report["error_messages"][0]["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "{report}");

    // disable: plaintext, which this pg_hba.conf refuses; allow: plaintext refused, then TLS.
    let (out, report) = hs(&app_target(&pg, "sslmode=disable"), &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        report["error_messages"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no encryption"),
        "{report}"
    );
    let (out, report) = hs(&app_target(&pg, "sslmode=allow"), &[]);
    assert_ok(&out, &report, "handshake");
    assert!(report["tls"]["logins"].as_u64().unwrap() > 0, "{report}");

    // A client certificate (pg_hba `cert`): AuthenticationOk without a password.
    let (cert, key) = ca.leaf(&[], "certuser", false);
    let cert_file = dir.path().join("client.crt");
    let key_file = dir.path().join("client.key");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let cert_target = format!(
        "host=127.0.0.1 port={} user=certuser dbname=app sslmode=verify-full sslrootcert={ca_arg} sslcert={} sslkey={}",
        pg.port(),
        cert_file.display(),
        key_file.display()
    );
    let (out, report) = hs(&cert_target, &[]);
    assert_ok(&out, &report, "handshake");
    assert_eq!(report["auth_method"], "trust", "{report}");
    // channel_binding=require refuses a login that had none.
    let (out, report) = hs(&format!("{cert_target} channel_binding=require"), &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        report["error_messages"][0]["message"]
            .as_str()
            .unwrap()
            .contains("without channel binding"),
        "{report}"
    );

    // tx over TLS, extended protocol.
    let (out, report) = loadgen(
        &[
            "tx",
            &target,
            "--clients",
            "2",
            "--duration",
            "1",
            "--protocol",
            "extended",
        ],
        &json,
    );
    assert_ok(&out, &report, "tx");
    assert!(report["tls"]["logins"].as_u64().unwrap() >= 2, "{report}");
}

#[test]
fn open_loop_rate_outputs_and_protocols() {
    let pg = app_cluster();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let hdr = dir.path().join("tx.hlog");
    let plot = dir.path().join("tx.svg");
    let target = app_target(&pg, "sslmode=disable");

    // 500/s for 4 s: about 2000 transactions, whatever the clients' speed.
    let (out, report) = loadgen(
        &[
            "tx",
            &target,
            "--rate",
            "500",
            "--duration",
            "4",
            "--clients",
            "4",
            "--hdr",
            hdr.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
        &json,
    );
    assert_ok(&out, &report, "tx");
    let completed = report["completed"].as_u64().unwrap();
    assert!((1700..=2300).contains(&completed), "{report}");
    assert_eq!(report["rate_target_per_s"], 500.0, "{report}");
    assert_eq!(report["protocol"], "simple", "{report}");
    let log = std::fs::read_to_string(&hdr).unwrap();
    assert!(log.contains("#[StartTime: "), "{log}");
    assert!(
        log.lines().filter(|l| l.starts_with("Tag=total,")).count() >= 4,
        "{log}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );

    // Statement 0 divides by the number of prepared statements named like itself: 1 when
    // it runs as the named statement loadgen_0, 0 (division by zero) when unnamed.
    let script = dir.path().join("prepared.sql");
    std::fs::write(
        &script,
        "SELECT 1 / (SELECT count(*) FROM pg_prepared_statements WHERE name = 'loadgen_0')::int;\nSELECT 2;\n",
    )
    .unwrap();
    let script_arg = script.to_str().unwrap();
    let run = |protocol: &str| {
        loadgen(
            &[
                "tx",
                &target,
                "--clients",
                "2",
                "--duration",
                "1",
                "--protocol",
                protocol,
                "--script",
                script_arg,
            ],
            &json,
        )
    };
    let (out, report) = run("prepared");
    assert_ok(&out, &report, "tx");
    assert_eq!(report["protocol"], "prepared", "{report}");
    let (out, report) = run("extended");
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(report["completed"], 0, "{report}");
    assert!(
        report["error_messages"][0]["message"]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{report}"
    );

    // --connect-per-tx: every transaction has its own backend.
    app_psql(&pg, "CREATE TABLE pids (pid int)");
    let script = dir.path().join("pids.sql");
    std::fs::write(&script, "INSERT INTO pids VALUES (pg_backend_pid())").unwrap();
    let script_arg = script.to_str().unwrap();
    for (per_tx, table_note) in [(false, "one backend"), (true, "one backend per tx")] {
        app_psql(&pg, "TRUNCATE pids");
        let mut args = vec![
            "tx",
            &target,
            "--clients",
            "1",
            "--duration",
            "1",
            "--script",
            script_arg,
        ];
        if per_tx {
            args.push("--connect-per-tx");
        }
        let (out, report) = loadgen(&args, &json);
        assert_ok(&out, &report, "tx");
        assert_eq!(report["connect_per_tx"], per_tx, "{report}");
        let completed = report["completed"].as_u64().unwrap();
        let distinct: u64 = app_psql(&pg, "SELECT count(DISTINCT pid) FROM pids")
            .trim()
            .parse()
            .unwrap();
        if per_tx {
            assert!(
                completed > 1 && distinct > completed / 2,
                "{table_note}: {distinct} of {completed}"
            );
        } else {
            assert_eq!(distinct, 1, "{table_note}: {report}");
        }
    }
}

#[test]
fn idle_holds_connections_from_several_source_addresses() {
    let pg = app_cluster();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let target = app_target(&pg, "");
    let pid = pg.pid().unwrap().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "idle",
            &target,
            "--clients",
            "20",
            "--threads",
            "2",
            "--duration",
            "3",
            "--source-addrs",
            "127.0.0.1,127.0.0.2",
            "--pid",
            &pid,
            "--cpu-pid",
            &pid,
            "--json",
        ])
        .arg(&json)
        .env_remove("PGPASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While held: 10 connections from each source address.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut by_addr = String::new();
    while Instant::now() < deadline {
        by_addr = pg.psql(
            "SELECT host(client_addr) || ':' || count(*) FROM pg_stat_activity \
             WHERE application_name = 'loadgen' GROUP BY client_addr ORDER BY client_addr",
        );
        if by_addr.trim() == "127.0.0.1:10\n127.0.0.2:10".trim() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_ok(&out, &report, "idle");
    assert_eq!(by_addr.trim(), "127.0.0.1:10\n127.0.0.2:10", "{report}");
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["completed"], 20, "{report}");
    assert_eq!(
        report["source_addrs"],
        serde_json::json!(["127.0.0.1", "127.0.0.2"])
    );
    assert!(
        report["pid"]["rss_before_kb"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["pid"]["rss_holding_kb"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["pid"]["bytes_per_connection"].is_number(),
        "{report}"
    );
    // --cpu-pid: the postmaster's CPU over the whole idle run (it forked 20 backends).
    assert_eq!(
        report["cpu"]["pid"].as_u64(),
        Some(pg.pid().unwrap() as u64)
    );
    assert!(report["cpu"]["cpu_seconds"].is_number(), "{report}");
    assert!(
        report["cpu"]["ticks_after"].as_u64() >= report["cpu"]["ticks_before"].as_u64(),
        "{report}"
    );
    assert!(
        report["cpu"]["window_s"].as_f64().unwrap() > 2.0,
        "{report}"
    );
    // Released at the end.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'loadgen'");
        if n.trim() == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "{n} loadgen connections left");
        std::thread::sleep(Duration::from_millis(50));
    }
}
