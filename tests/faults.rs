//! Fault injection: bad input gets a clear, PostgreSQL-style error (an ErrorResponse with a
//! SQLSTATE) and loses nothing — pgring keeps serving every other client.
//!
//! Each test starts its own PostgreSQL cluster (role `app` / `apppass` owning database
//! `app`) and its own pgring in front of it. Protocol-level faults are injected over raw
//! sockets (`std::net::TcpStream`); the login there is done by hand with md5.

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use raw::{
    app_psql, assert_closed, cluster, connect, error_fields, expect_fatal_and_close,
    params_payload, pgring, psql_as, query_value, raw_login, raw_login_with, read_message,
    read_until, send_query, simple_query, startup, terminate, untagged, DB, PASSWORD, PROTOCOL_3_0,
    USER,
};
use support::{free_port, psql_cmd, PgCluster, Pgring};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Asks `sql` through pgring `times` times, one new client each, and checks each answer.
fn assert_answers(pgring: &Pgring, sql: &str, want: &str, times: usize, after: &str) {
    for i in 0..times {
        let out = psql_as(pgring.port(), USER, PASSWORD, DB, sql);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == want,
            "client {i} after {after}, {sql:?}: {out:?}"
        );
    }
}

/// Runs `sql` with psql through pgring and returns stdout; panics with stderr on failure.
fn psql_ok(pgring: &Pgring, sql: &str) -> String {
    let out = psql_as(pgring.port(), USER, PASSWORD, DB, sql);
    assert!(
        out.status.success(),
        "psql through pgring failed: {sql}\nstderr: {}\n--- pgring.log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        pgring.log()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The proof that pgring still serves: a fresh psql `select 1` works.
fn assert_still_serves(pgring: &Pgring) {
    assert_eq!(psql_ok(pgring, "select 1"), "1");
}

/// Polls `f` every 20 ms until it returns true; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- startup packet -------------------------------------------------------------------------

#[test]
fn oversized_startup_packet_gets_fatal_08p01() {
    let pg = cluster();
    let pgring = pgring(&pg, "", "");
    let mut s = connect(pgring.port());
    s.write_all(&20000i32.to_be_bytes()).unwrap();
    let message = expect_fatal_and_close(&mut s, "08P01", "length word 20000");
    assert!(message.contains("startup packet"), "{message}");
    assert_still_serves(&pgring);
}

#[test]
fn malformed_startup_packets_get_fatal_and_close() {
    let pg = cluster();
    let pgring = pgring(&pg, "", "");

    // A length word below the 8 bytes of length + code.
    let mut s = connect(pgring.port());
    s.write_all(&4i32.to_be_bytes()).unwrap();
    let message = expect_fatal_and_close(&mut s, "08P01", "length 4");
    assert!(
        message.contains("invalid length of startup packet"),
        "{message}"
    );
    assert_still_serves(&pgring);

    // Protocol 2.0.
    let mut s = connect(pgring.port());
    let payload = params_payload(&[("user", USER), ("database", DB)]);
    s.write_all(&untagged(2 << 16, &payload)).unwrap();
    let message = expect_fatal_and_close(&mut s, "08P01", "protocol 2.0");
    assert!(
        message.contains("unsupported frontend protocol 2.0"),
        "{message}"
    );
    assert_still_serves(&pgring);

    // No user.
    let mut s = connect(pgring.port());
    let payload = params_payload(&[("database", DB)]);
    s.write_all(&untagged(PROTOCOL_3_0, &payload)).unwrap();
    let message = expect_fatal_and_close(&mut s, "08P01", "startup without user");
    assert!(message.contains("no PostgreSQL user name"), "{message}");
    assert_still_serves(&pgring);

    // Truncated: declares 100 bytes, sends 20, hangs up.
    let mut s = connect(pgring.port());
    let mut packet = untagged(PROTOCOL_3_0, &params_payload(&[("user", USER)]));
    packet[..4].copy_from_slice(&100i32.to_be_bytes());
    s.write_all(&packet[..packet.len().min(20)]).unwrap();
    s.shutdown(Shutdown::Both).unwrap();
    drop(s);
    assert_still_serves(&pgring);

    // Truncated again, but the client half-closes and waits: no answer is owed, the
    // connection just ends.
    let mut s = connect(pgring.port());
    s.write_all(&packet[..12]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    if let Err(e) = s.read_to_end(&mut rest) {
        assert_eq!(
            e.kind(),
            ErrorKind::ConnectionReset,
            "half-closed client not closed: {e}"
        );
    }
    assert_still_serves(&pgring);
}

#[test]
fn unsupported_startup_parameter_is_refused_unless_ignored() {
    let pg = cluster();
    let pairs = [
        ("user", USER),
        ("database", DB),
        ("extra_float_digits", "2"),
    ];

    let strict = pgring(&pg, "", "");
    let fields =
        raw_login_with(strict.port(), &pairs, PASSWORD).expect_err("extra_float_digits refused");
    assert_eq!(
        fields.get(&'C').map(String::as_str),
        Some("08P01"),
        "{fields:?}"
    );
    assert_eq!(
        fields.get(&'S').map(String::as_str),
        Some("FATAL"),
        "{fields:?}"
    );
    assert!(
        fields
            .get(&'M')
            .is_some_and(|m| m.contains("extra_float_digits")),
        "{fields:?}"
    );
    assert_still_serves(&strict);

    let lenient = pgring(
        &pg,
        r#"ignore_startup_parameters = ["extra_float_digits"]"#,
        "",
    );
    let mut s = raw_login_with(lenient.port(), &pairs, PASSWORD)
        .unwrap_or_else(|e| panic!("ignored parameter still refused: {e:?}"));
    assert_eq!(query_value(&mut s, "select 1").as_deref(), Some("1"));
    terminate(s);
}

#[test]
fn client_login_timeout_closes_silent_clients() {
    let pg = cluster();
    let pgring = pgring(&pg, "client_login_timeout = 1", "");
    let started = Instant::now();
    let mut s = connect(pgring.port());
    // Either a FATAL ErrorResponse then EOF, or a bare EOF: both end the silent login.
    match read_message(&mut s) {
        Ok(Some((b'E', body))) => {
            let fields = error_fields(&body);
            assert_eq!(
                fields.get(&'S').map(String::as_str),
                Some("FATAL"),
                "{fields:?}"
            );
            assert_closed(&mut s, "after the login timeout");
        }
        Ok(None) => {}
        Ok(Some((tag, _))) => panic!("unexpected message '{}'", char::from(tag)),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("silent client not closed: {e}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "closed after {waited:?}, client_login_timeout is 1 s"
    );
    assert_still_serves(&pgring);
}

// ---- after login ----------------------------------------------------------------------------

#[test]
fn garbage_after_login_gets_protocol_error() {
    let pg = cluster();
    let pgring = pgring(&pg, "", "");
    // A bystander, logged in before the garbage and used after it.
    let mut bystander = raw_login(pgring.port());
    assert_eq!(
        query_value(&mut bystander, "select 1").as_deref(),
        Some("1")
    );

    // A 2 GiB message: refused from its header, before anything is read or allocated.
    let mut s = raw_login(pgring.port());
    let mut header = vec![b'Q'];
    header.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    s.write_all(&header).unwrap();
    let message = expect_fatal_and_close(&mut s, "08P01", "2 GiB Query");
    assert!(message.contains("over the limit"), "{message}");

    // A length word below 4 (it counts itself).
    let mut s = raw_login(pgring.port());
    let mut header = vec![b'Q'];
    header.extend_from_slice(&2u32.to_be_bytes());
    s.write_all(&header).unwrap();
    let message = expect_fatal_and_close(&mut s, "08P01", "length 2");
    assert!(message.contains("invalid message length"), "{message}");

    // The same after a query ran, so the session has had a server attached.
    let mut s = raw_login(pgring.port());
    assert_eq!(query_value(&mut s, "select 2").as_deref(), Some("2"));
    let mut header = vec![b'Q'];
    header.extend_from_slice(&0u32.to_be_bytes());
    s.write_all(&header).unwrap();
    expect_fatal_and_close(&mut s, "08P01", "length 0 after a query");

    assert_eq!(
        query_value(&mut bystander, "select 3").as_deref(),
        Some("3")
    );
    terminate(bystander);
    assert_still_serves(&pgring);
}

#[test]
fn client_vanishing_mid_transaction_never_leaks_its_transaction() {
    let pg = cluster();
    app_psql(&pg, "create table t(x int)");
    // default_pool_size = 2 over 2 shards: one server connection per shard.
    let pgring = pgring(&pg, "", "");

    for round in 0..3 {
        let mut a = raw_login(pgring.port());
        let r = simple_query(&mut a, "BEGIN; INSERT INTO t VALUES (1)");
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(r.status, b'T', "A is inside its transaction");
        match round {
            0 => {
                // Vanish without a word.
                a.shutdown(Shutdown::Both).unwrap();
                drop(a);
            }
            // Or say Terminate mid-transaction.
            1 => terminate(a),
            _ => {
                // Or break the protocol mid-transaction: thrown out, transaction too.
                a.write_all(&[b'Q', 0, 0, 0, 0]).unwrap();
                expect_fatal_and_close(&mut a, "08P01", "garbage mid-transaction");
            }
        }

        // More clients than shards, some at once, so every shard's server is handed out.
        let mut clients: Vec<TcpStream> = (0..4).map(|_| raw_login(pgring.port())).collect();
        for c in clients.iter_mut() {
            assert_eq!(
                query_value(c, "SELECT count(*) FROM t").as_deref(),
                Some("0")
            );
            assert_eq!(
                query_value(c, "SELECT txid_current_if_assigned() IS NULL").as_deref(),
                Some("t"),
                "handed a server with a transaction already under way"
            );
            let r = simple_query(c, "SHOW transaction_isolation");
            assert!(r.error.is_none(), "{r:?}");
            assert_eq!(r.status, b'I', "a fresh client is not in a transaction");
        }
        for c in clients {
            terminate(c);
        }
        for _ in 0..4 {
            assert_eq!(psql_ok(&pgring, "SELECT count(*) FROM t"), "0");
        }
    }
    // A's transactions were rolled back with their server connections: nothing is left
    // idle in a transaction on the server.
    wait_until(
        Duration::from_secs(10),
        "no idle-in-transaction backend",
        || {
            pg.psql(
                "select count(*) from pg_stat_activity \
             where datname = 'app' and state like 'idle in transaction%'",
            )
            .trim()
                == "0"
        },
    );
    assert_eq!(pg.psql("select 1").trim(), "1");
    assert_eq!(app_psql(&pg, "select count(*) from t"), "0");
}

#[test]
fn backend_dying_mid_query_gives_08006_and_others_keep_working() {
    let pg = cluster();
    // Two servers per shard: the bystander's transaction keeps one busy in its shard.
    let pgring = pgring(&pg, "default_pool_size = 4", "");
    let mut bystander = raw_login(pgring.port());
    // In a transaction: the bystander holds a server for the whole test.
    let r = simple_query(&mut bystander, "BEGIN; SELECT 1");
    assert_eq!(r.status, b'T', "{r:?}");

    let mut victim = raw_login(pgring.port());
    send_query(&mut victim, "select pg_sleep(30)");

    let started = Instant::now();
    wait_until(Duration::from_secs(10), "pg_sleep(30) killed", || {
        pg.psql(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where query like '%pg_sleep(30)%' and pid <> pg_backend_pid()",
        )
        .trim()
            == "t"
    });
    // RowDescription comes before the sleep; the error after it.
    let fields = loop {
        match read_message(&mut victim) {
            Ok(Some((b'T', _))) => continue,
            Ok(Some((b'E', body))) => break error_fields(&body),
            Ok(Some((tag, _))) => panic!("victim: unexpected '{}'", char::from(tag)),
            Ok(None) => panic!("victim: connection closed without an ErrorResponse"),
            Err(e) => panic!("victim: no ErrorResponse: {e}"),
        }
    };
    let code = fields.get(&'C').cloned().unwrap_or_default();
    assert!(code == "57P01" || code == "08006", "{fields:?}");
    assert_eq!(
        fields.get(&'S').map(String::as_str),
        Some("FATAL"),
        "{fields:?}"
    );
    // The client is not left hanging: more errors at most, then the connection ends.
    loop {
        match read_message(&mut victim) {
            Ok(Some((b'E', body))) => {
                let f = error_fields(&body);
                let c = f.get(&'C').map(String::as_str).unwrap_or("");
                assert!(c == "57P01" || c == "08006", "{f:?}");
            }
            Ok(Some((tag, _))) => panic!("after FATAL: unexpected '{}'", char::from(tag)),
            Ok(None) => break,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("victim not closed: {e}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the victim learnt of its server's death after {:?}",
        started.elapsed()
    );

    // Everyone else keeps working, the bystander inside its transaction too.
    let r = simple_query(&mut bystander, "SELECT 2; COMMIT");
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(r.status, b'I');
    terminate(bystander);
    for _ in 0..4 {
        assert_still_serves(&pgring);
    }
}

/// Logs in and fails one authentication exchange with `bad`, sent in place of the
/// password message; the session must end with a FATAL 08P01.
fn bad_password_message(pgring: &Pgring, bad: &[u8], what: &str) -> String {
    let mut s = connect(pgring.port());
    s.write_all(&startup(&[("user", USER), ("database", DB)]))
        .unwrap();
    match read_message(&mut s) {
        Ok(Some((b'R', body))) => assert_eq!(&body[..4], &5i32.to_be_bytes(), "md5 asked"),
        other => panic!("{what}: expected an md5 request, got {other:?}"),
    }
    s.write_all(bad).unwrap();
    expect_fatal_and_close(&mut s, "08P01", what)
}

#[test]
fn garbage_during_authentication_gets_protocol_error() {
    let pg = cluster();
    let pgring = pgring(&pg, "", "");
    let mut bystander = raw_login(pgring.port());

    // A 2 GiB password message.
    let mut bad = vec![b'p'];
    bad.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let message = bad_password_message(&pgring, &bad, "2 GiB password message");
    assert!(message.contains("over the limit"), "{message}");

    // A query instead of a password.
    let mut out = BytesMut::new();
    frontend::query("select 1", &mut out).unwrap();
    let message = bad_password_message(&pgring, &out, "Query during authentication");
    assert!(message.contains("unexpected message"), "{message}");

    // A length word below 4.
    let message = bad_password_message(&pgring, &[b'p', 0, 0, 0, 1], "length 1");
    assert!(message.contains("invalid message length"), "{message}");

    assert_eq!(
        query_value(&mut bystander, "select 1").as_deref(),
        Some("1")
    );
    terminate(bystander);
    assert_still_serves(&pgring);
}

/// Warms both shards' pools, then has PostgreSQL terminate every pooled (idle) server
/// connection and waits until they are gone.
fn kill_idle_pooled_servers(pg: &PgCluster, pgring: &Pgring) {
    for _ in 0..6 {
        assert_still_serves(pgring);
    }
    let killed = pg.psql(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
         where usename = 'app' and pid <> pg_backend_pid()) k",
    );
    assert_ne!(killed.trim(), "0", "no pooled server connection to kill");
    wait_until(
        Duration::from_secs(10),
        "the killed backends to exit",
        || {
            pg.psql("select count(*) from pg_stat_activity where usename = 'app'")
                .trim()
                == "0"
        },
    );
}

/// PgBouncer watches its idle server sockets and drops the ones the server closed; a
/// client arriving later gets a live connection.
#[test]
fn server_killed_while_idle_in_the_pool_is_not_handed_out() {
    let pg = cluster();
    let pgring = pgring(&pg, "", "");
    kill_idle_pooled_servers(&pg, &pgring);
    for i in 0..6 {
        let out = psql_as(pgring.port(), USER, PASSWORD, DB, "select 1");
        assert!(
            out.status.success(),
            "client {i} after the pooled servers were killed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// With server_check_delay = 0 every idle server is checked before reuse.
#[test]
fn server_killed_while_idle_is_replaced_when_checked_before_reuse() {
    let pg = cluster();
    let pgring = pgring(&pg, "server_check_delay = 0", "");
    kill_idle_pooled_servers(&pg, &pgring);
    for _ in 0..6 {
        assert_still_serves(&pgring);
    }
}

/// The session scans (and records in its TxTracker) the client's query, then attaches a
/// server, and attaching resets the tracker: the query's answer is no longer owed, so when
/// the client leaves before the answer the server goes back to the pool with it in flight.
#[test]
fn client_vanishing_mid_query_never_leaks_its_answer() {
    let pg = PgCluster::start_with(&[("log_statement", "all")]);
    pg.create_role(USER, PASSWORD, "");
    pg.create_database(DB, USER);
    // One server connection in all, so the next client gets the same one.
    let pgring = pgring(&pg, "shards = 1\ndefault_pool_size = 1", "");
    let mut a = raw_login(pgring.port());
    send_query(&mut a, "select 'answer for A' from pg_sleep(0.3)");
    a.shutdown(Shutdown::Both).unwrap();
    drop(a);
    for i in 0..4 {
        let out = psql_as(pgring.port(), USER, PASSWORD, DB, "select 1");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == "1",
            "client {i} got {stdout:?} for `select 1` (stderr: {})",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn client_vanishing_mid_copy_loses_nothing() {
    let pg = cluster();
    app_psql(&pg, "create table t(x int)");
    // One server connection in all, so every client after the vanished one gets it.
    let pgring = pgring(&pg, "shards = 1\ndefault_pool_size = 1", "");

    // COPY FROM STDIN: the server waits for more rows when the client goes.
    let mut a = raw_login(pgring.port());
    send_query(&mut a, "COPY t FROM STDIN");
    read_until(&mut a, b'G', "COPY FROM STDIN");
    let mut out = BytesMut::new();
    frontend::CopyData::new(&b"1\n"[..])
        .unwrap()
        .write(&mut out);
    a.write_all(&out).unwrap();
    a.shutdown(Shutdown::Both).unwrap();
    drop(a);
    assert_answers(
        &pgring,
        "select count(*) from t",
        "0",
        3,
        "the COPY FROM STDIN",
    );

    // COPY TO STDOUT: the server is still sending rows when the client goes.
    let mut b = raw_login(pgring.port());
    send_query(
        &mut b,
        "COPY (SELECT g FROM generate_series(1, 3000000) g) TO STDOUT",
    );
    read_until(&mut b, b'H', "COPY TO STDOUT");
    read_until(&mut b, b'd', "COPY TO STDOUT");
    b.shutdown(Shutdown::Both).unwrap();
    drop(b);
    assert_answers(&pgring, "select 41 + 1", "42", 3, "the COPY TO STDOUT");

    // Neither COPY is left running on the server.
    wait_until(
        Duration::from_secs(10),
        "no COPY left on the server",
        || {
            pg.psql(
                "select count(*) from pg_stat_activity \
             where datname = 'app' and query like 'COPY%' and state <> 'idle'",
            )
            .trim()
                == "0"
        },
    );
    assert_still_serves(&pgring);
}

#[test]
fn client_vanishing_before_sync_leaves_nothing_behind() {
    let pg = cluster();
    app_psql(&pg, "create table t(x int)");
    let pgring = pgring(&pg, "shards = 1\ndefault_pool_size = 1", "");

    // Parse, Bind, Execute of an INSERT and a Flush, but no Sync: the server has run the
    // INSERT in an implicit transaction that only a Sync would commit.
    let mut a = raw_login(pgring.port());
    let mut out = BytesMut::new();
    frontend::parse("", "INSERT INTO t VALUES (1)", [], &mut out).unwrap();
    // Bind: unnamed portal and statement, no parameter formats, no parameters, no
    // result formats.
    let bind_body = [0u8, 0, 0, 0, 0, 0, 0, 0];
    out.extend_from_slice(b"B");
    out.extend_from_slice(&(4 + bind_body.len() as u32).to_be_bytes());
    out.extend_from_slice(&bind_body);
    frontend::execute("", 0, &mut out).unwrap();
    frontend::flush(&mut out);
    a.write_all(&out).unwrap();
    read_until(&mut a, b'C', "INSERT before Sync");
    a.shutdown(Shutdown::Both).unwrap();
    drop(a);

    assert_answers(
        &pgring,
        "select count(*), txid_current_if_assigned() is null from t",
        "0|t",
        3,
        "the unsynced INSERT",
    );
    assert_eq!(app_psql(&pg, "select count(*) from t"), "0");
    assert_still_serves(&pgring);
}

#[test]
fn client_vanishing_while_queued_for_a_server_loses_nothing() {
    let pg = PgCluster::start_with(&[("log_statement", "all")]);
    pg.create_role(USER, PASSWORD, "");
    pg.create_database(DB, USER);
    app_psql(&pg, "create table t(x int)");
    // One shard, one server connection: A's transaction holds it, B queues behind.
    let pgring = pgring(&pg, "shards = 1\ndefault_pool_size = 1", "");
    let mut a = raw_login(pgring.port());
    let r = simple_query(&mut a, "BEGIN; INSERT INTO t VALUES (1)");
    assert_eq!(r.status, b'T', "{r:?}");

    let mut b = raw_login(pgring.port());
    send_query(&mut b, "INSERT INTO t VALUES (2)");
    // B waits (no answer), then gives up and goes away.
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = b.read(&mut byte);
    assert!(
        matches!(&waited, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "B should be queued, got {waited:?}"
    );
    b.shutdown(Shutdown::Both).unwrap();
    drop(b);

    let r = simple_query(&mut a, "COMMIT");
    assert_eq!(r.status, b'I', "{r:?}");
    terminate(a);

    // The pool's one server is not lost: every later client is served.
    for _ in 0..4 {
        assert_still_serves(&pgring);
    }
    wait_until(
        Duration::from_secs(10),
        "no idle-in-transaction backend",
        || {
            pg.psql(
                "select count(*) from pg_stat_activity \
             where datname = 'app' and state like 'idle in transaction%'",
            )
            .trim()
                == "0"
        },
    );
    let rows = psql_ok(&pgring, "select string_agg(x::text, ',' order by x) from t");
    eprintln!("rows after B vanished while queued: {rows:?}");
    assert!(rows == "1" || rows == "1,2", "{rows}");
}

// ---- servers and limits ---------------------------------------------------------------------

#[test]
fn refused_backend_gives_clear_error_not_a_hang() {
    let pg = cluster();
    let dead_port = free_port();
    // A refused connection is reported at once, not when server_connect_timeout expires
    // (nor when psql's own 10 s connect_timeout does).
    let pgring = pgring(
        &pg,
        "server_connect_timeout = 60",
        &format!(r#"dead = {{ host = "127.0.0.1", port = {dead_port}, dbname = "app" }}"#),
    );
    for _ in 0..2 {
        let started = Instant::now();
        let out = psql_as(pgring.port(), USER, PASSWORD, "dead", "select 1");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{out:?}");
        assert!(stderr.contains("could not connect"), "{stderr}");
        assert!(
            took < Duration::from_secs(8),
            "psql took {took:?}: {stderr}"
        );
    }
    // The SQLSTATE, over a raw socket.
    let fields = raw_login_with(
        pgring.port(),
        &[("user", USER), ("database", "dead")],
        PASSWORD,
    )
    .expect_err("dead database refused");
    assert_eq!(
        fields.get(&'C').map(String::as_str),
        Some("08006"),
        "{fields:?}"
    );
    assert_still_serves(&pgring);
}

#[test]
fn max_client_conn_reached_gets_53300() {
    let pg = cluster();
    let pgring = pgring(&pg, "max_client_conn = 3", "");
    // Make sure pgring's readiness probe has been counted out before filling the slots.
    assert_still_serves(&pgring);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut slot = None;
        wait_until(
            Duration::from_secs(5),
            "a free client slot",
            || match raw_login_with(pgring.port(), &[("user", USER), ("database", DB)], PASSWORD) {
                Ok(s) => {
                    slot = Some(s);
                    true
                }
                Err(f) if f.get(&'C').map(String::as_str) == Some("53300") => false,
                Err(f) => panic!("login refused: {f:?}"),
            },
        );
        held.push(slot.unwrap());
    }

    // The fourth is refused in answer to its startup packet (where libpq reads errors).
    let mut fourth = connect(pgring.port());
    fourth
        .write_all(&startup(&[("user", USER), ("database", DB)]))
        .unwrap();
    let message = expect_fatal_and_close(&mut fourth, "53300", "fourth client");
    assert!(message.contains("no more connections allowed"), "{message}");
    // libpq without an SSLRequest shows the reason (with one, see
    // max_client_conn_refusal_reaches_libpq_with_default_sslmode).
    let out = psql_cmd(pgring.port(), USER, PASSWORD, DB)
        .env("PGSSLMODE", "disable")
        .args(["-c", "select 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no more connections allowed"), "{stderr}");

    // The held ones still work.
    for s in held.iter_mut() {
        assert_eq!(query_value(s, "select 1").as_deref(), Some("1"));
    }
    // Closing one frees its slot.
    terminate(held.pop().unwrap());
    wait_until(
        Duration::from_secs(5),
        "the freed slot to be reused",
        || {
            psql_as(pgring.port(), USER, PASSWORD, DB, "select 1")
                .status
                .success()
        },
    );
}

/// libpq's default sslmode=prefer opens with an SSLRequest, and libpq (since the 2024
/// minor releases, CVE-2024-10977) discards any ErrorResponse received in answer to it,
/// showing only "server sent an error response during SSL exchange". PostgreSQL refuses
/// an excess client after reading its startup packet, so the reason reaches the user.
#[test]
fn max_client_conn_refusal_reaches_libpq_with_default_sslmode() {
    let pg = cluster();
    let pgring = pgring(&pg, "max_client_conn = 1", "");
    // (The login below retries while pgring's readiness probe still holds the one slot.)
    let mut held = None;
    wait_until(
        Duration::from_secs(5),
        "a free client slot",
        || match raw_login_with(pgring.port(), &[("user", USER), ("database", DB)], PASSWORD) {
            Ok(s) => {
                held = Some(s);
                true
            }
            Err(f) if f.get(&'C').map(String::as_str) == Some("53300") => false,
            Err(f) => panic!("login refused: {f:?}"),
        },
    );
    let out = psql_cmd(pgring.port(), USER, PASSWORD, DB)
        .env("PGSSLMODE", "prefer")
        .args(["-c", "select 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no more connections allowed"), "{stderr}");
    terminate(held.unwrap());
}

// ---- authentication -------------------------------------------------------------------------

fn conn_str(port: u16, user: &str, password: &str, db: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user={user} password={password} dbname={db} connect_timeout=10"
    )
}

/// Logs in with tokio-postgres and psql as `user`/`password`; both must be refused with
/// 28P01 and PostgreSQL's message.
async fn assert_auth_failed(pgring: &Pgring, user: &str, password: &str) {
    let err = tokio_postgres::connect(&conn_str(pgring.port(), user, password, DB), NoTls)
        .await
        .err()
        .unwrap_or_else(|| panic!("{user}/{password} accepted"));
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not an ErrorResponse: {err}"));
    assert_eq!(db.code(), &SqlState::INVALID_PASSWORD, "{db:?}");
    assert_eq!(
        db.message(),
        format!("password authentication failed for user \"{user}\"")
    );

    let out = psql_as(pgring.port(), user, password, DB, "select 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "password authentication failed for user \"{user}\""
        )),
        "{stderr}"
    );
}

async fn assert_login_works(pgring: &Pgring) {
    let (client, conn) =
        tokio_postgres::connect(&conn_str(pgring.port(), USER, PASSWORD, DB), NoTls)
            .await
            .expect("the right password is accepted");
    let conn = tokio::spawn(conn);
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    conn.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_gets_28p01() {
    let pg = cluster();
    for auth_type in ["md5", "scram-sha-256"] {
        let pgring = pgring(&pg, &format!("auth_type = \"{auth_type}\""), "");
        assert_auth_failed(&pgring, USER, "wrong").await;
        assert_login_works(&pgring).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_user_gets_the_same_message_as_a_wrong_password() {
    let pg = cluster();
    for auth_type in ["md5", "scram-sha-256"] {
        let pgring = pgring(&pg, &format!("auth_type = \"{auth_type}\""), "");
        assert_auth_failed(&pgring, "nosuchuser", "whatever").await;
        assert_auth_failed(&pgring, USER, "whatever").await;
        assert_login_works(&pgring).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_database_is_refused_with_3d000() {
    let pg = cluster();
    let pgring = pgring(&pg, "", "");
    let err = tokio_postgres::connect(&conn_str(pgring.port(), USER, PASSWORD, "nosuchdb"), NoTls)
        .await
        .err()
        .expect("unknown database refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code(), &SqlState::INVALID_CATALOG_NAME, "{db:?}");
    assert!(db.message().contains("nosuchdb"), "{db:?}");

    let out = psql_as(pgring.port(), USER, PASSWORD, "nosuchdb", "select 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nosuchdb"), "{stderr}");
    assert_still_serves(&pgring);
}

#[test]
fn an_executor_that_cannot_start_says_what_to_change() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgring.toml");
    std::fs::write(
        &config,
        format!(
            "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {}\nunix_socket_dir = \"\"\n\
             auth_type = \"trust\"\n[databases]\napp = {{ host = \"127.0.0.1\", port = 1 }}\n",
            support::free_port()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgring"));
    cmd.arg("--config").arg(&config);
    // No locked memory at all, hard limit included, so pgring cannot raise it: glommio's
    // io_uring setup refuses to start.
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &none) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not start shard"), "{err}");
    assert!(err.contains("MemLock"), "{err}");
    assert!(err.contains("ulimit -l"), "{err}");
    assert!(err.contains("io_uring_disabled"), "{err}");
}
