//! Pooling against a real PostgreSQL: transaction, session and statement modes, many
//! clients over a small pool, cancel requests across shards, parameter tracking,
//! reload and graceful shutdown.

#[path = "support/cancel.rs"]
mod cancel;
mod support;

use std::time::{Duration, Instant};

use cancel::cancel_sleep;
use support::{app_config, free_port, pgbench_cmd, psql_cmd, PgCluster, Pgring};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const USERLIST: &str = "\"app\" \"apppass\"\n";

/// A cluster with role `app` owning database `app`, and pgring in front of it with the
/// given extra `[pooler]` settings.
struct Setup {
    pg: PgCluster,
    pgring: Pgring,
}

fn setup(pooler: &str) -> Setup {
    let pg = PgCluster::start();
    pg.create_role("app", "apppass", "");
    pg.create_database("app", "app");
    pg.psql("ALTER DATABASE app OWNER TO app");
    let pgring = start_pgring(&pg, pooler, USERLIST);
    Setup { pg, pgring }
}

fn start_pgring(pg: &PgCluster, pooler: &str, userlist: &str) -> Pgring {
    let port = free_port();
    Pgring::start(&app_config(pg, port, pooler), &[("userlist.txt", userlist)])
}

fn conn_str(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user=app password=apppass dbname=app")
}

async fn connect(port: u16) -> Client {
    connect_with(&conn_str(port)).await
}

async fn connect_with(conn_str: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(conn_str, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect through pgring ({conn_str}): {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The first column of every row of a simple-protocol result.
fn values(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .collect()
}

async fn show(client: &Client, name: &str) -> String {
    client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[test]
fn psql_and_pgbench_work_through_transaction_pooling() {
    let s = setup("pool_mode = \"transaction\"\ndefault_pool_size = 4\nshards = 2");
    let out = psql_cmd(s.pgring.port(), "app", "apppass", "app")
        .args(["-c", "SELECT 40 + 2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", s.pgring.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    let init = pgbench_cmd(s.pg.port(), "app", "apppass", "app")
        .args(["-i", "-s", "1", "-q"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    for protocol in ["simple", "extended"] {
        let out = pgbench_cmd(s.pgring.port(), "app", "apppass", "app")
            .args(["-c", "20", "-j", "2", "-T", "3", "-M", protocol])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}\n{}", s.pgring.log());
        assert!(
            stdout.contains("number of failed transactions: 0 "),
            "{stdout}"
        );
    }
    // Never more server connections than the pool allows.
    let servers: i64 =
        s.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
            .trim()
            .parse()
            .unwrap();
    assert!(servers <= 4, "{servers} server connections for a pool of 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_over_a_pool_of_ten_see_only_their_own_transactions() {
    let s = setup(
        "pool_mode = \"transaction\"\ndefault_pool_size = 10\nshards = 2\nmax_client_conn = 1100\nquery_wait_timeout = 60",
    );
    let port = s.pgring.port();
    let mut tasks = Vec::new();
    for id in 0..1000u32 {
        tasks.push(tokio::spawn(async move {
            let client = connect(port).await;
            for round in 0..3 {
                // Simple protocol: named prepared statements do not survive transaction
                // pooling (each transaction may run on another server connection).
                let mine = format!("{id}-{round}");
                let seen = values(
                    &client
                        .simple_query(&format!(
                            "BEGIN; SELECT set_config('pgring.owner', '{mine}', true); \
                             SELECT current_setting('pgring.owner'); COMMIT;"
                        ))
                        .await
                        .unwrap(),
                );
                // A transaction-local setting: visible only inside this transaction.
                assert_eq!(
                    seen,
                    [mine.clone(), mine],
                    "a transaction saw another's state"
                );
                let after = values(
                    &client
                        .simple_query("SELECT coalesce(current_setting('pgring.owner', true), '')")
                        .await
                        .unwrap(),
                );
                assert_eq!(after, [""], "state leaked out of a committed transaction");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let servers: i64 =
        s.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
            .trim()
            .parse()
            .unwrap();
    assert!(
        servers <= 10,
        "{servers} server connections for a pool of 10"
    );
}

#[tokio::test]
async fn session_mode_keeps_state_and_resets_it_for_the_next_client() {
    let s = setup("pool_mode = \"session\"\ndefault_pool_size = 1\nshards = 1");
    let port = s.pgring.port();
    let a = connect(port).await;
    a.batch_execute("SET work_mem = '7MB'").await.unwrap();
    a.batch_execute("BEGIN; COMMIT;").await.unwrap();
    assert_eq!(show(&a, "work_mem").await, "7MB");
    let a_pid: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(a);

    // The same (only) server connection, after DISCARD ALL.
    let b = connect(port).await;
    let b_pid: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a_pid, b_pid, "pool of one should reuse the server");
    assert_eq!(show(&b, "work_mem").await, "4MB");
}

#[tokio::test]
async fn transaction_mode_waits_for_the_holder_to_commit() {
    let s = setup("pool_mode = \"transaction\"\ndefault_pool_size = 1\nshards = 1");
    let port = s.pgring.port();
    let a = connect(port).await;
    let b = connect(port).await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        b.query_one("SELECT 1", &[]).await.unwrap();
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "B got the server while A was in a transaction"
    );
    a.batch_execute("COMMIT").await.unwrap();
    let waited = waiter.await.unwrap();
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
}

#[tokio::test]
async fn statement_mode_refuses_transaction_blocks() {
    let s = setup("pool_mode = \"statement\"\ndefault_pool_size = 2\nshards = 1");
    let client = connect(s.pgring.port()).await;
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    let err = client.batch_execute("BEGIN").await.unwrap_err();
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("an ErrorResponse: {err:?}"));
    assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED);
    assert!(db.message().contains("statement pooling mode"), "{db:?}");
    // The session goes on, outside any transaction.
    let rows = client.simple_query("SELECT 2").await.unwrap();
    assert_eq!(values(&rows), ["2"]);
    // Everyone else still gets served.
    let other = connect(s.pgring.port()).await;
    other.query_one("SELECT 1", &[]).await.unwrap();
}

#[tokio::test]
async fn cancel_request_arriving_on_another_shard_reaches_the_backend() {
    let s = setup("pool_mode = \"transaction\"\ndefault_pool_size = 4\nshards = 2");
    // Unix-socket clients are dealt round-robin over the shards by shard 0, so the query
    // (first connection) and its cancel request (second) land on different shards.
    // The TCP port answers as soon as any shard listens; the Unix socket is shard 0's.
    let socket = s.pgring.dir().join(format!(".s.PGSQL.{}", s.pgring.port()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "no Unix socket:\n{}",
            s.pgring.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unix = format!(
        "host={} port={} user=app password=apppass dbname=app",
        s.pgring.dir().display(),
        s.pgring.port()
    );
    cancel_sleep(&unix).await;
    // Over TCP the kernel picks the shard: several rounds cover both cases.
    for _ in 0..4 {
        cancel_sleep(&conn_str(s.pgring.port())).await;
    }
}

#[tokio::test]
async fn parameter_status_follows_the_client_across_server_connections() {
    let s = setup("pool_mode = \"transaction\"\ndefault_pool_size = 1\nshards = 1");
    let port = s.pgring.port();
    let tokyo = connect(port).await;
    let utc = connect(port).await;
    let default_tz = show(&utc, "TimeZone").await;
    tokyo
        .batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    // One server connection serves both clients in turn; each sees its own time zone.
    for _ in 0..3 {
        assert_eq!(show(&utc, "TimeZone").await, default_tz);
        assert_eq!(show(&tokyo, "TimeZone").await, "Asia/Tokyo");
        assert_eq!(show(&utc, "application_name").await, "");
    }
    // A time zone given at startup (libpq sends PGTZ as a startup parameter).
    let out = psql_cmd(port, "app", "apppass", "app")
        .env("PGTZ", "America/New_York")
        .args(["-c", "SHOW TimeZone"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "America/New_York"
    );
    assert_eq!(show(&utc, "TimeZone").await, default_tz);
}

#[tokio::test]
async fn sighup_reloads_the_auth_file_and_sessions_continue() {
    let s = setup("pool_mode = \"transaction\"\ndefault_pool_size = 2\nshards = 2");
    let port = s.pgring.port();
    let before = connect(port).await;
    std::fs::write(s.pgring.dir().join("userlist.txt"), "\"app\" \"newpass\"\n").unwrap();
    // The server still knows the old password; pgring logs in with what it had.
    assert!(s.pgring.signal(libc::SIGHUP));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let old = tokio_postgres::connect(&conn_str(port), NoTls).await;
        if old.is_err() {
            let err = old.err().unwrap();
            assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload not applied:\n{}",
            s.pgring.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.pgring.log().contains("reloading"), "{}", s.pgring.log());
    before
        .query_one("SELECT 1", &[])
        .await
        .expect("session survives a reload");
}

#[test]
fn broken_config_on_reload_keeps_the_running_one() {
    let s = setup("pool_mode = \"transaction\"\nshards = 1");
    let path = s.pgring.dir().join("pgring.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace("pool_mode = \"transaction\"", "pool_mode = \"sometimes\""),
    )
    .unwrap();
    assert!(s.pgring.signal(libc::SIGHUP));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.pgring.log().contains("reload failed") {
        assert!(Instant::now() < deadline, "{}", s.pgring.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.pgring.log().contains("pool_mode"), "{}", s.pgring.log());
    let out = psql_cmd(s.pgring.port(), "app", "apppass", "app")
        .args(["-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn graceful_shutdown_lets_the_transaction_in_flight_finish() {
    let mut s = setup(
        "pool_mode = \"transaction\"\ndefault_pool_size = 2\nshards = 2\nshutdown_timeout = 10",
    );
    let port = s.pgring.port();
    let busy = connect(port).await;
    let idle = connect(port).await;
    busy.batch_execute("CREATE TABLE t (x int)").await.unwrap();
    busy.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let sleeper = tokio::spawn(async move {
        busy.batch_execute("SELECT pg_sleep(1)").await?;
        busy.batch_execute("COMMIT").await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(s.pgring.signal(libc::SIGTERM));
    sleeper
        .await
        .unwrap()
        .expect("the transaction in flight commits");
    let out = psql_cmd(
        s.pg.port(),
        s.pg.superuser(),
        s.pg.superuser_password(),
        "app",
    )
    .args(["-c", "SELECT count(*) FROM t"])
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");
    let status = s
        .pgring
        .wait_exit(Duration::from_secs(10))
        .expect("pgring exits after the clients are done");
    assert!(status.success(), "{status:?}\n{}", s.pgring.log());
    // The idle client was told why it was closed.
    let err = idle.query_one("SELECT 1", &[]).await.unwrap_err();
    assert!(
        err.is_closed() || err.code() == Some(&SqlState::ADMIN_SHUTDOWN),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_caps_server_connections_across_pools() {
    let pg = PgCluster::start();
    pg.create_role("app", "apppass", "");
    pg.create_role("app2", "app2pass", "");
    pg.create_database("app", "app");
    pg.psql("GRANT ALL ON DATABASE app TO app2");
    let pgring = start_pgring(
        &pg,
        "pool_mode = \"transaction\"\ndefault_pool_size = 5\nshards = 1\nmax_db_connections = 2",
        "\"app\" \"apppass\"\n\"app2\" \"app2pass\"\n",
    );
    let port = pgring.port();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (user, password) = if i % 2 == 0 {
            ("app", "apppass")
        } else {
            ("app2", "app2pass")
        };
        let conn = format!("host=127.0.0.1 port={port} user={user} password={password} dbname=app");
        tasks.push(tokio::spawn(async move {
            let client = connect_with(&conn).await;
            for _ in 0..3 {
                client.simple_query("SELECT pg_sleep(0.05)").await.unwrap();
            }
        }));
    }
    let mut most = 0;
    while tasks.iter().any(|t| !t.is_finished()) {
        let n: i64 = pg
            .psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND usename IN ('app', 'app2')")
            .trim()
            .parse()
            .unwrap();
        most = most.max(n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await.expect("every client is served");
    }
    assert!(
        most <= 2,
        "{most} server connections to app with max_db_connections = 2"
    );
    assert!(most >= 1);
}

#[test]
fn failed_server_login_is_reported_until_server_login_retry_passes() {
    let pg = PgCluster::start();
    pg.create_role("app", "apppass", "");
    pg.create_database("app", "app");
    let port = free_port();
    let config = app_config(&pg, port, "pool_mode = \"transaction\"\nshards = 1\nserver_login_retry = 2")
        .replace(
            "[databases]\n",
            &format!(
                "[databases]\nforced = {{ host = \"127.0.0.1\", port = {}, dbname = \"app\", user = \"app\", password = \"later\" }}\n",
                pg.port()
            ),
        );
    let pgring = Pgring::start(&config, &[("userlist.txt", USERLIST)]);
    let attempt = || {
        psql_cmd(pgring.port(), "app", "apppass", "forced")
            .args(["-c", "SELECT 1"])
            .output()
            .unwrap()
    };
    let tried = Instant::now();
    let first = attempt();
    assert!(!first.status.success());
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("server login failed"), "{stderr}");

    // The server now accepts the configured password, but within server_login_retry the
    // failure is reported again without a new attempt.
    pg.psql("ALTER ROLE app PASSWORD 'later'");
    let second = attempt();
    if tried.elapsed() < Duration::from_secs(2) {
        assert!(!second.status.success(), "{second:?}");
    }
    // After it, the next login tries again and succeeds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = attempt();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
            break;
        }
        assert!(Instant::now() < deadline, "{out:?}\n{}", pgring.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn query_timeout_and_idle_transaction_timeout_end_the_session_with_their_sqlstate() {
    let s = setup(
        "pool_mode = \"transaction\"\nshards = 1\ndefault_pool_size = 2\nquery_timeout = 1\nidle_transaction_timeout = 1",
    );
    let port = s.pgring.port();

    let slow = connect(port).await;
    let started = Instant::now();
    let err = slow
        .batch_execute("SELECT pg_sleep(20)")
        .await
        .expect_err("query_timeout ends the query");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("an ErrorResponse: {err:?}"));
    assert_eq!(db.code(), &SqlState::QUERY_CANCELED, "{db:?}");
    assert!(db.message().contains("query_timeout"), "{db:?}");

    let idle = connect(port).await;
    idle.batch_execute("BEGIN").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = idle
        .batch_execute("SELECT 1")
        .await
        .expect_err("idle_transaction_timeout closed the session");
    assert!(
        err.is_closed() || err.code() == Some(&SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT),
        "{err:?}"
    );

    // Neither server connection went back to the pool mid-query or mid-transaction: asked
    // of PostgreSQL directly (through pgring, query_timeout = 1 would also count a slow
    // server login on a loaded machine against the check itself).
    // The backend whose connection pgring closed may take a moment to notice.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = s.pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' \
             AND datname = 'app'",
        );
        if open.trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} server(s) left in a transaction"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn client_idle_timeout_closes_an_idle_client_and_spares_a_busy_one() {
    let s = setup("pool_mode = \"transaction\"\nshards = 1\nclient_idle_timeout = 1");
    let port = s.pgring.port();

    let idle = connect(port).await;
    let busy = connect(port).await;
    idle.batch_execute("SELECT 1").await.unwrap();
    // The busy client asks something every 300 ms for 2.5 s: never idle for a second.
    for _ in 0..8 {
        busy.batch_execute("SELECT 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    busy.batch_execute("SELECT 1")
        .await
        .expect("a client that keeps talking is not closed");
    let err = idle
        .batch_execute("SELECT 1")
        .await
        .expect_err("client_idle_timeout closed the idle client");
    assert!(
        err.is_closed() || err.code() == Some(&SqlState::IDLE_SESSION_TIMEOUT),
        "{err:?}"
    );
    assert!(
        s.pgring.log().contains("client_idle_timeout"),
        "{}",
        s.pgring.log()
    );
}

/// Transaction pooling over one server connection (one shard), which a first client holds
/// in an open transaction; and a second client, connected, that has not asked anything.
async fn one_server_held_by_a_transaction(settings: &str) -> (Setup, Client, Client) {
    let s = setup(&format!(
        "pool_mode = \"transaction\"\nshards = 1\ndefault_pool_size = 1\n{settings}"
    ));
    let holder = connect(s.pgring.port()).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let waiter = connect(s.pgring.port()).await;
    (s, holder, waiter)
}

#[tokio::test]
async fn query_wait_timeout_refuses_a_client_that_waited_too_long_and_spares_the_holder() {
    let (s, holder, waiter) = one_server_held_by_a_transaction("query_wait_timeout = 1").await;
    let started = Instant::now();
    let err = waiter
        .batch_execute("SELECT 1")
        .await
        .expect_err("no server connection comes free while the holder is in its transaction");
    let waited = started.elapsed();
    // One second, give or take a busy machine.
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(
        err.is_closed() || err.code() == Some(&SqlState::CANNOT_CONNECT_NOW),
        "{err:?}"
    );

    // The holder's transaction is untouched, and the server is free again after it.
    holder.batch_execute("SELECT 1; COMMIT").await.unwrap();
    let later = connect(s.pgring.port()).await;
    later.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_client_that_waited_reserve_pool_timeout_gets_a_reserve_connection() {
    let (s, holder, waiter) = one_server_held_by_a_transaction(
        "reserve_pool_size = 1\nreserve_pool_timeout = 0.5\nquery_wait_timeout = 30",
    )
    .await;
    let started = Instant::now();
    waiter
        .batch_execute("SELECT 1")
        .await
        .expect("the reserve pool serves the waiting client");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    let servers: i64 =
        s.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
            .trim()
            .parse()
            .unwrap();
    assert!(
        servers <= 2,
        "{servers} server connections for 1 + 1 reserve"
    );
}
