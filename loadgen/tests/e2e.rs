//! End to end: a throwaway PostgreSQL, the built loadgen binary, its JSON report.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::PgCluster;

const APP_PASSWORD: &str = "app secret";

fn loadgen(args: &[&str], json: &Path) -> (Output, serde_json::Value) {
    let _ = std::fs::remove_file(json);
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--json")
        .arg(json)
        .env_remove("PGPASSWORD")
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
