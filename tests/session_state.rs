//! Session state in transaction pooling, against a real PostgreSQL: what a client keeps
//! across the server connections it is lent (reported parameters, `options` settings),
//! what it does not (plain `SET` of an unreported parameter, temp tables, session advisory
//! locks, LISTEN), and the refusals of malformed `options`.
//!
//! Every query goes through the simple protocol: tokio-postgres's `query` prepares a named
//! statement in one transaction and runs it in the next, which transaction pooling does not
//! promise to put on the same server connection.
//!
//! The tests that need a server switch make it happen deterministically: with a pool of two,
//! a second client opens a transaction on the server the first one just released (the pool
//! hands out its idle connections last in, first out), so the first client's next
//! transaction has to run on the other server connection. Each transaction's backend pid
//! is checked, so a test fails loudly rather than passing by luck if that ever changes.

mod support;

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{app_config, free_port, psql_cmd, text, PgCluster, Pgring};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const USERLIST: &str = "\"app\" \"apppass\"\n";

/// How long a login may take before the test calls it a hang.
const LOGIN_LIMIT: Duration = Duration::from_secs(10);

struct Setup {
    pg: PgCluster,
    pgring: Pgring,
}

/// A cluster with role `app` owning database `app`, and pgring in front of it in
/// transaction pooling with one shard and the given pool size and extra `[pooler]` lines.
fn setup(pool_size: u32, extra: &str) -> Setup {
    let pg = PgCluster::start();
    pg.create_role("app", "apppass", "");
    pg.create_database("app", "app");
    let pooler = format!(
        "pool_mode = \"transaction\"\ndefault_pool_size = {pool_size}\nshards = 1\n{extra}"
    );
    let pgring = Pgring::start(
        &app_config(&pg, free_port(), &pooler),
        &[("userlist.txt", USERLIST)],
    );
    Setup { pg, pgring }
}

fn config(port: u16, options: Option<&str>) -> tokio_postgres::Config {
    let mut config: tokio_postgres::Config =
        format!("host=127.0.0.1 port={port} user=app password=apppass dbname=app")
            .parse()
            .unwrap();
    if let Some(options) = options {
        config.options(options);
    }
    config
}

/// Logs in through pgring with `options`, within [`LOGIN_LIMIT`].
async fn try_connect(port: u16, options: Option<&str>) -> Result<Client, tokio_postgres::Error> {
    let config = config(port, options);
    let (client, conn) = tokio::time::timeout(LOGIN_LIMIT, config.connect(NoTls))
        .await
        .unwrap_or_else(|_| panic!("login with options {options:?} took over {LOGIN_LIMIT:?}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn connect(port: u16, options: Option<&str>) -> Client {
    try_connect(port, options)
        .await
        .unwrap_or_else(|e| panic!("login with options {options:?}: {e}"))
}

/// The columns of the single row `sql` returns (simple protocol, one transaction).
async fn row(client: &Client, sql: &str) -> Vec<String> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows: Vec<Vec<String>> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows.into_iter().next().unwrap()
}

/// The backend pid and the value of `setting`, seen in one transaction.
async fn pid_and(client: &Client, setting: &str) -> (String, String) {
    let r = row(
        client,
        &format!("SELECT pg_backend_pid(), current_setting('{setting}')"),
    )
    .await;
    (r[0].clone(), r[1].clone())
}

async fn pid(client: &Client) -> String {
    row(client, "SELECT pg_backend_pid()").await.remove(0)
}

/// Makes `holder` open a transaction on the server connection `on` (the one the other
/// client just released), so that the other client's next transaction runs elsewhere.
async fn hold_server(holder: &Client, on: &str) {
    holder.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        pid(holder).await,
        on,
        "the pool should hand out the server released last"
    );
}

fn server_version_num(pg: &PgCluster) -> u32 {
    pg.psql("SHOW server_version_num").trim().parse().unwrap()
}

/// Runs `cmd` and returns its output, or panics if it takes longer than `limit`.
fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run psql");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait psql").is_some() {
            return child.wait_with_output().expect("psql output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("psql took over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- what carries over ----------------------------------------------------------------

/// PGOPTIONS through psql and `options` through tokio-postgres, five clients over a pool
/// of two: each sees its own statement_timeout in every transaction, whichever server
/// connection runs it, and a client without options sees the server's default, not what
/// pgring set for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_statement_timeout_holds_in_every_transaction_while_others_interleave() {
    let s = setup(2, "");
    let port = s.pgring.port();
    let done = Arc::new(AtomicBool::new(false));
    let mut others = Vec::new();
    for (options, expected) in [
        (Some("-c statement_timeout=4321"), "4321ms"),
        (Some("--statement-timeout=5s -c work_mem=8MB"), "5s"),
        (None, "0"),
        (None, "0"),
    ] {
        let done = done.clone();
        others.push(tokio::spawn(async move {
            let client = connect(port, options).await;
            let mut pids = std::collections::HashSet::new();
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) || rounds < 20 {
                let r = row(
                    &client,
                    "SELECT pg_backend_pid(), current_setting('statement_timeout'), pg_sleep(0.002)",
                )
                .await;
                assert_eq!(r[1], expected, "client with options {options:?}, round {rounds}");
                pids.insert(r[0].clone());
                rounds += 1;
            }
            pids.len()
        }));
    }

    let script = "SHOW statement_timeout;\n\
                  SELECT pg_backend_pid() || '|' || current_setting('statement_timeout');\n"
        .repeat(150);
    let psql = tokio::task::spawn_blocking(move || {
        let mut cmd = psql_cmd(port, "app", "apppass", "app");
        cmd.env("PGOPTIONS", "-c statement_timeout=1234")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run psql");
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, script.as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().expect("psql output")
    });
    let out = tokio::time::timeout(Duration::from_secs(120), psql)
        .await
        .expect("psql took over two minutes")
        .unwrap();
    done.store(true, Ordering::Relaxed);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "psql: {}\n{}",
        text(&out.stderr),
        s.pgring.log()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 300);
    let mut psql_pids = std::collections::HashSet::new();
    for line in &lines {
        match line.split_once('|') {
            Some((pid, value)) => {
                assert_eq!(value, "1234ms", "{stdout}");
                psql_pids.insert(pid.to_owned());
            }
            None => assert_eq!(*line, "1234ms", "{stdout}"),
        }
    }
    for other in others {
        other.await.expect("client task");
    }
    assert_eq!(
        psql_pids.len(),
        2,
        "psql's transactions should have run on both server connections"
    );
}

/// What pgring set for a client stays trusted while nobody else has the server
/// connection: a client alone with its options pays one `SET` at login, none per
/// transaction, and one more after another client had the connection.
#[tokio::test]
async fn a_client_keeping_its_server_connection_is_not_set_again() {
    let pg = PgCluster::start_with(&[("log_statement", "all")]);
    pg.create_role("app", "apppass", "");
    pg.create_database("app", "app");
    let pgring = Pgring::start(
        &app_config(
            &pg,
            free_port(),
            "pool_mode = \"transaction\"\ndefault_pool_size = 1\nshards = 1",
        ),
        &[("userlist.txt", USERLIST)],
    );
    let port = pgring.port();
    let sets = || {
        pg.log_contents()
            .matches("set_config('statement_timeout'")
            .count()
    };
    let a = connect(port, Some("-c statement_timeout=1234")).await;
    for _ in 0..20 {
        assert_eq!(pid_and(&a, "statement_timeout").await.1, "1234ms");
    }
    assert_eq!(sets(), 1, "only the login's");
    let b = connect(port, None).await;
    assert_eq!(pid_and(&b, "statement_timeout").await.1, "0");
    for _ in 0..5 {
        assert_eq!(pid_and(&a, "statement_timeout").await.1, "1234ms");
    }
    assert_eq!(sets(), 2, "one more after B had the server connection");
}

/// The same, deterministically, over a single server connection lent in turn to clients
/// with different settings, including one that runs its own `SET statement_timeout`.
#[tokio::test]
async fn options_settings_are_restored_after_every_other_client() {
    let s = setup(1, "");
    let port = s.pgring.port();
    let a = connect(port, Some("-c statement_timeout=1234")).await;
    let b = connect(
        port,
        Some(r"-cstatement_timeout=4321 -c search_path=b_schema,\ public"),
    )
    .await;
    let plain = connect(port, None).await;
    let setter = connect(port, None).await;
    let server = pid(&a).await;
    for round in 0..3 {
        assert_eq!(
            pid_and(&a, "statement_timeout").await,
            (server.clone(), "1234ms".into())
        );
        assert_eq!(
            pid_and(&b, "statement_timeout").await,
            (server.clone(), "4321ms".into())
        );
        assert_eq!(
            pid_and(&b, "search_path").await.1,
            "b_schema, public",
            "round {round}"
        );
        // What pgring set for A and B is reset for a client without options.
        assert_eq!(
            pid_and(&plain, "statement_timeout").await,
            (server.clone(), "0".into())
        );
        assert_eq!(
            pid_and(&plain, "search_path").await.1,
            "\"$user\", public",
            "round {round}"
        );
        // Another client's own SET does not reach A: pgring sets A's value again.
        setter
            .batch_execute("SET statement_timeout = '99'")
            .await
            .unwrap();
        assert_eq!(
            pid_and(&a, "statement_timeout").await,
            (server.clone(), "1234ms".into())
        );
    }
    // A's own SET of that parameter lasts as long as A keeps the server connection, and
    // goes when another client had it in between.
    a.batch_execute("SET statement_timeout = '50'")
        .await
        .unwrap();
    assert_eq!(pid_and(&a, "statement_timeout").await.1, "50ms");
    assert_eq!(pid_and(&a, "statement_timeout").await.1, "50ms");
    assert_eq!(pid_and(&b, "statement_timeout").await.1, "4321ms");
    assert_eq!(pid_and(&a, "statement_timeout").await.1, "1234ms");
}

/// `SET DateStyle` (reported by every PostgreSQL) and `search_path` (reported from 18 on)
/// by one client, while others have other values, across a server switch and back.
///
/// On PostgreSQL 15, the version the tests run against here, search_path is not reported:
/// a plain `SET search_path` is invisible to pgring and is not kept (the test checks that
/// it is lost, as documented), while a search_path given in `options` is kept like any
/// unreported setting. From PostgreSQL 18 on the same test checks that a plain
/// `SET search_path` is kept too.
#[tokio::test]
async fn set_datestyle_and_search_path_follow_their_client() {
    let s = setup(2, "");
    let reports_search_path = server_version_num(&s.pg) >= 180_000;
    let port = s.pgring.port();
    let a = connect(port, None).await;
    let b = connect(
        port,
        Some(r"-c DateStyle=German -c search_path=b_schema,\ public"),
    )
    .await;
    let c = connect(port, None).await;
    a.batch_execute("SET DateStyle = 'SQL, DMY'; SET search_path = a_schema, public")
        .await
        .unwrap();
    let mut servers = std::collections::HashSet::new();
    for round in 0..4 {
        // Every other round, B holds the server A released, so A runs on the other one.
        let (a_pid, a_style) = pid_and(&a, "DateStyle").await;
        servers.insert(a_pid.clone());
        assert_eq!(a_style, "SQL, DMY", "round {round}");
        if round % 2 == 1 {
            hold_server(&b, &a_pid).await;
            let (other, style) = pid_and(&a, "DateStyle").await;
            assert_ne!(other, a_pid);
            servers.insert(other);
            assert_eq!(style, "SQL, DMY", "round {round}, after the switch");
            assert_eq!(pid_and(&b, "DateStyle").await.1, "German, DMY");
            b.batch_execute("COMMIT").await.unwrap();
        }
        let a_path = pid_and(&a, "search_path").await.1;
        if reports_search_path {
            assert_eq!(a_path, "a_schema, public", "round {round}");
        }
        assert_eq!(pid_and(&b, "DateStyle").await.1, "German, DMY");
        assert_eq!(pid_and(&b, "search_path").await.1, "b_schema, public");
        assert_eq!(pid_and(&c, "DateStyle").await.1, "ISO, MDY");
        if reports_search_path {
            assert_eq!(pid_and(&c, "search_path").await.1, "\"$user\", public");
        }
    }
    assert_eq!(
        servers.len(),
        2,
        "A should have run on both server connections"
    );
    if !reports_search_path {
        // A's plain SET search_path was on one server connection only, and B's options
        // (reset for A by pgring) replaced it: A has lost it.
        hold_server(&c, &pid(&a).await).await;
        assert_eq!(pid_and(&a, "search_path").await.1, "\"$user\", public");
        c.batch_execute("COMMIT").await.unwrap();
    }
}

/// A value given at startup in `options` for a reported parameter is shown at login in the
/// server's spelling and restored like a `SET` of it.
#[tokio::test]
async fn options_for_a_reported_parameter_are_shown_and_kept() {
    let s = setup(1, "");
    let out = output_within(
        {
            let mut cmd = psql_cmd(s.pgring.port(), "app", "apppass", "app");
            cmd.env(
                "PGOPTIONS",
                r"-c intervalstyle=iso_8601 -c DateStyle=postgres,\ dmy",
            )
            .args(["-c", "SHOW IntervalStyle", "-c", "SHOW DateStyle"]);
            cmd
        },
        LOGIN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "iso_8601\nPostgres, DMY\n");
}

/// With `server_reset_query_always`, every transaction's server is reset, and pgring sets a
/// client's options again at each attach: they hold, while a plain `SET` is gone in the
/// next transaction even on the same server connection.
#[tokio::test]
async fn server_reset_query_always_resets_everything_but_the_client_s_parameters() {
    let s = setup(1, "server_reset_query_always = true");
    let port = s.pgring.port();
    let a = connect(port, Some("-c statement_timeout=1234")).await;
    a.batch_execute("SET DateStyle = 'SQL, DMY'; SET work_mem = '7MB'")
        .await
        .unwrap();
    let (server, timeout) = pid_and(&a, "statement_timeout").await;
    assert_eq!(timeout, "1234ms");
    for _ in 0..3 {
        assert_eq!(
            pid_and(&a, "statement_timeout").await,
            (server.clone(), "1234ms".into())
        );
        assert_eq!(
            pid_and(&a, "DateStyle").await,
            (server.clone(), "SQL, DMY".into())
        );
        assert_eq!(
            pid_and(&a, "work_mem").await,
            (server.clone(), "4MB".into())
        );
    }
}

// ---- malformed options ------------------------------------------------------------------

#[tokio::test]
async fn malformed_options_get_a_fatal_with_their_sqlstate_quickly() {
    let s = setup(2, "");
    let port = s.pgring.port();
    let cases: &[(&str, &str, &str)] = &[
        ("-c=", "22023", "empty parameter name"),
        ("-c =x", "22023", "empty parameter name"),
        ("--=x", "22023", "empty parameter name"),
        ("-c", "22023", "-c at the end"),
        ("-c statement_timeout=1 -c", "22023", "-c at the end"),
        (
            "-c statement_timeout",
            "22023",
            "-c statement_timeout requires a value",
        ),
        (
            "--statement_timeout",
            "22023",
            "--statement_timeout requires a value",
        ),
        ("-B 100", "22023", "unsupported switch \"-B\""),
        (
            "statement_timeout=5",
            "22023",
            "unexpected argument \"statement_timeout=5\"",
        ),
        (
            "-c server_version=1",
            "55P02",
            "parameter \"server_version\" cannot be changed",
        ),
        // The server's own refusals, at login: an unknown parameter, a bad value, one that
        // cannot be set after the start of a session.
        ("-c no_such_parameter=1", "42704", "no_such_parameter"),
        ("-c statement_timeout=soon", "22023", "statement_timeout"),
        ("-c log_connections=on", "55P02", "log_connections"),
    ];
    for (options, code, needle) in cases {
        let started = Instant::now();
        let err = match try_connect(port, Some(options)).await {
            Ok(_) => panic!("options {options:?} were accepted"),
            Err(e) => e,
        };
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("options {options:?}: no server error: {err}"));
        assert_eq!(db.severity(), "FATAL", "{options:?}");
        assert_eq!(db.code().code(), *code, "{options:?}: {}", db.message());
        assert!(
            db.message().contains(needle),
            "{options:?}: {:?} should mention {needle:?}",
            db.message()
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{options:?}");
    }
    // psql with PGOPTIONS gets the same.
    let out = output_within(
        {
            let mut cmd = psql_cmd(port, "app", "apppass", "app");
            cmd.env("PGOPTIONS", "-c=").args(["-c", "SELECT 1"]);
            cmd
        },
        LOGIN_LIMIT,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("empty parameter name"),
        "{}",
        text(&out.stderr)
    );
    // And pgring goes on serving.
    let ok = connect(port, Some("-c statement_timeout=1234")).await;
    assert_eq!(pid_and(&ok, "statement_timeout").await.1, "1234ms");
}

// ---- what does not carry over ------------------------------------------------------------

/// A plain `SET` of an unreported parameter stays on the server connection: the next
/// client given that connection sees it, and the client that ran it loses it when its next
/// transaction runs elsewhere.
#[tokio::test]
async fn a_plain_set_of_an_unreported_parameter_is_lost_on_a_server_switch() {
    let s = setup(2, "");
    let port = s.pgring.port();
    let a = connect(port, None).await;
    let b = connect(port, None).await;
    a.batch_execute("SET work_mem = '7MB'").await.unwrap();
    let (first, mem) = pid_and(&a, "work_mem").await;
    assert_eq!(mem, "7MB");
    hold_server(&b, &first).await;
    assert_eq!(pid_and(&b, "work_mem").await, (first.clone(), "7MB".into()));
    let (second, mem) = pid_and(&a, "work_mem").await;
    assert_ne!(second, first);
    assert_eq!(mem, "4MB", "A's SET stayed on the other server connection");
    b.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn a_temp_table_is_lost_on_a_server_switch() {
    let s = setup(2, "");
    let port = s.pgring.port();
    let a = connect(port, None).await;
    let b = connect(port, None).await;
    a.batch_execute("CREATE TEMP TABLE mine (x int); INSERT INTO mine VALUES (1)")
        .await
        .unwrap();
    let first = row(&a, "SELECT pg_backend_pid() FROM mine").await.remove(0);
    hold_server(&b, &first).await;
    // B sees A's table: it belongs to the server connection.
    assert_eq!(row(&b, "SELECT count(*) FROM pg_temp.mine").await, ["1"]);
    let second = pid(&a).await;
    assert_ne!(second, first);
    let err = a.simple_query("SELECT * FROM mine").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"), "{err}");
    b.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn a_session_advisory_lock_stays_with_the_server_connection() {
    let s = setup(2, "");
    let port = s.pgring.port();
    let a = connect(port, None).await;
    let b = connect(port, None).await;
    let first = row(&a, "SELECT pg_backend_pid(), pg_advisory_lock(42)")
        .await
        .remove(0);
    hold_server(&b, &first).await;
    // B gets A's lock (the same backend holds it) …
    assert_eq!(row(&b, "SELECT pg_try_advisory_lock(42)").await, ["t"]);
    // … and A, elsewhere, cannot take its own lock.
    let r = row(&a, "SELECT pg_backend_pid(), pg_try_advisory_lock(42)").await;
    assert_ne!(r[0], first);
    assert_eq!(r[1], "f", "the lock is held by the other server connection");
    b.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn listen_stays_with_the_server_connection() {
    let s = setup(2, "");
    let port = s.pgring.port();
    let a = connect(port, None).await;
    let b = connect(port, None).await;
    a.batch_execute("LISTEN pgring_channel").await.unwrap();
    let first = pid(&a).await;
    hold_server(&b, &first).await;
    // B's transaction runs on the server connection that listens.
    assert_eq!(
        row(
            &b,
            "SELECT string_agg(c, ',') FROM pg_listening_channels() c"
        )
        .await,
        ["pgring_channel"]
    );
    let r = row(
        &a,
        "SELECT pg_backend_pid(), count(*) FROM pg_listening_channels()",
    )
    .await;
    assert_ne!(r[0], first);
    assert_eq!(
        r[1], "0",
        "A's LISTEN stayed on the other server connection"
    );
    b.batch_execute("COMMIT").await.unwrap();
}
