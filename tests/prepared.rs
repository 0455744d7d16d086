//! Named prepared statements in transaction pooling (`max_prepared_statements`, PgBouncer's
//! semantics): a client's statement names are its own, whichever server connection runs
//! its next transaction, and what the client sees on the wire is what PostgreSQL would
//! have sent it on a connection of its own.
//!
//! In transaction pooling consecutive transactions of one client may run on different
//! server connections; a statement prepared on one is unknown on the next (26000), and
//! two clients preparing the same name on one connection collide (42P05) or, worse, run
//! each other's statement. pgring tracks every client's named statements (Parse,
//! Close, DEALLOCATE ALL, DISCARD ALL), prepares them on the server it hands out when
//! needed (answering the client's ParseComplete itself when the server already has the
//! text), and keeps at most `max_prepared_statements` on each server connection. The
//! names it gives them on the server are not specified and not asserted here.
//!
//! Every test runs one shard in transaction pooling with `default_pool_size = 2` unless
//! it says otherwise. Drivers: tokio-postgres (its `prepare` makes named statements
//! `s0`, `s1`, … numbered across the whole process) and raw sockets for exact message
//! sequences. Every wait is bounded (a 10 s read timeout, `tokio::time::timeout`).

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::net::TcpStream;
use std::time::Duration;

use raw::{
    app_psql, cluster, error_codes, error_fields, first_column, pgring, query_value, raw_login,
    read_until_ready, simple_query, tags, terminate, tokio_connect, Msgs, READ_TIMEOUT,
};
use support::{PgCluster, Pgring};
use tokio::time::timeout;
use tokio_postgres::{Client, SimpleQueryMessage};

/// pgring with one shard in transaction pooling (pool size 2 unless `extra` says);
/// `extra` goes into [pooler].
fn pgring_tx(pg: &PgCluster, extra: &str) -> Pgring {
    pgring(
        pg,
        &format!("shards = 1\npool_mode = \"transaction\"\n{extra}"),
        "",
    )
}

// ---- tokio-postgres -------------------------------------------------------------------------

/// An error as `SQLSTATE: message` when the server (or pgring) sent it.
fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Awaits `f` for at most [`READ_TIMEOUT`]; errors (and a timeout) as text.
async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match timeout(READ_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", db_error(&e))),
        Err(_) => Err(format!("{what}: no answer within {READ_TIMEOUT:?} (hang)")),
    }
}

/// The first column of every row of a simple query.
async fn simple_values(client: &Client, sql: &str) -> Vec<String> {
    within(sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .collect()
}

/// 20 tokio-postgres clients over a pool of 2, each with its two statements prepared once
/// and run 100 times each. Without tracking, a statement prepared through one server
/// connection is run on the other: 26000 "prepared statement "s…" does not exist".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_statements_work_over_a_small_pool() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "");
    let port = pgring.port();
    let tasks: Vec<_> = (0..20)
        .map(|c| {
            tokio::spawn(async move {
                let client = tokio_connect(port).await;
                let add = within("prepare +1", client.prepare("select $1::int + 1")).await?;
                let cat = within("prepare ||x", client.prepare("select $1::text || 'x'")).await?;
                for i in 0..100i32 {
                    let n: i32 = within("run +1", client.query_one(&add, &[&i]))
                        .await?
                        .get(0);
                    if n != i + 1 {
                        return Err(format!("client {c}: {i} + 1 gave {n}"));
                    }
                    let arg = format!("c{c}.{i}");
                    let s: String = within("run ||x", client.query_one(&cat, &[&arg]))
                        .await?
                        .get(0);
                    if s != format!("{arg}x") {
                        return Err(format!("client {c}: {arg:?} || 'x' gave {s:?}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut errors = Vec::new();
    for (c, task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => errors.push(format!("client {c}: {e}")),
            Ok(Err(e)) => errors.push(format!("client {c} panicked: {e}")),
            Err(_) => errors.push(format!("client {c}: not done after 120 s")),
        }
    }
    assert!(
        errors.is_empty(),
        "{} of 20 clients failed; the first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

/// `select name, statement from pg_prepared_statements` in one transaction (so that all
/// of it reads the server that runs the transaction), sorted by name.
async fn server_statements(client: &Client) -> Vec<(String, String)> {
    simple_values(client, "BEGIN").await;
    let rows = within(
        "pg_prepared_statements",
        client.simple_query("select name, statement from pg_prepared_statements order by name"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    simple_values(client, "COMMIT").await;
    rows.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap_or("").to_owned(),
                r.get(1).unwrap_or("").to_owned(),
            )),
            _ => None,
        })
        .collect()
}

/// `max_prepared_statements = 2` on a pool of one: five statements run round robin must
/// all keep working (pgring prepares an evicted one again when it is used), and the
/// server never holds more than two. The count is read by a simple query (no statement
/// of its own) inside a transaction, so it is the count of the server between uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_server_within_max_prepared_statements() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "default_pool_size = 1\nmax_prepared_statements = 2");
    let client = tokio_connect(pgring.port()).await;
    let mut statements = Vec::new();
    for k in 0..5 {
        let sql = format!("select $1::int + {k}");
        statements.push(
            within(&sql, client.prepare(&sql))
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    for round in 0..50i32 {
        for (k, statement) in statements.iter().enumerate() {
            let v: i32 = within("run", client.query_one(statement, &[&round]))
                .await
                .unwrap_or_else(|e| panic!("round {round}, statement {k}: {e}"))
                .get(0);
            assert_eq!(v, round + k as i32, "round {round}, statement {k}");
        }
    }
    let held = server_statements(&client).await;
    assert!(
        held.len() <= 2,
        "the server holds {} statements: {held:?}",
        held.len()
    );
}

/// Two clients preparing the same text share one statement on the server (pool of one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_text_is_prepared_once_on_the_server() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "default_pool_size = 1");
    let a = tokio_connect(pgring.port()).await;
    let b = tokio_connect(pgring.port()).await;
    // Kept until the end: tokio-postgres closes a statement when its handle is dropped.
    let mut statements = Vec::new();
    for (k, client) in [&a, &b].into_iter().enumerate() {
        let k = k as i32 + 1;
        let statement = within("prepare", client.prepare("select $1::int * 2"))
            .await
            .unwrap_or_else(|e| panic!("client {k}: {e}"));
        let v: i32 = within("run", client.query_one(&statement, &[&k]))
            .await
            .unwrap_or_else(|e| panic!("client {k}: {e}"))
            .get(0);
        assert_eq!(v, 2 * k);
        statements.push(statement);
    }
    let count = simple_values(
        &a,
        "select count(*) from pg_prepared_statements where statement = 'select $1::int * 2'",
    )
    .await;
    assert_eq!(count, ["1"], "{:?}", server_statements(&a).await);
    drop(statements);
}

// ---- raw protocol ---------------------------------------------------------------------------

/// The messages answering `batch` (up to its ReadyForQuery).
fn exchange(s: &mut TcpStream, batch: Msgs, what: &str) -> Vec<(u8, Vec<u8>)> {
    batch.send(s);
    read_until_ready(s, what)
}

/// Bind of the unnamed portal to `statement`, Execute, Sync.
fn run(statement: &str) -> Msgs {
    Msgs::new().bind("", statement, &[]).execute("").sync()
}

/// Asserts the tags of `messages`, showing every message's text on failure.
#[track_caller]
fn assert_tags(messages: &[(u8, Vec<u8>)], want: &str, what: &str) {
    assert_eq!(
        tags(messages),
        want,
        "{what}: {:?}",
        messages
            .iter()
            .map(|(t, body)| format!("{}:{}", char::from(*t), String::from_utf8_lossy(body)))
            .collect::<Vec<_>>()
    );
}

/// Parse, Sync; Close, Sync; Parse of the same name with another text: the name is free
/// again after the Close. Two other clients move the pool's two servers around so that
/// the last Parse runs on the server that ran the first one (where, without tracking,
/// the old `s1` still exists: 42P05).
#[test]
fn close_then_parse_the_name_again() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "");
    let port = pgring.port();
    let mut a = raw_login(port);
    let mut holder_1 = raw_login(port);
    let mut holder_2 = raw_login(port);

    let parsed = exchange(
        &mut a,
        Msgs::new().parse("s1", "select 1").sync(),
        "Parse s1",
    );
    assert_tags(&parsed, "1Z", "Parse s1");
    // The pool's first server (the one that saw the Parse) is held by holder_1 ...
    assert_eq!(simple_query(&mut holder_1, "BEGIN").status, b'T');
    let closed = exchange(&mut a, Msgs::new().close(b'S', "s1").sync(), "Close s1");
    assert_tags(&closed, "3Z", "Close s1");
    // ... the other by holder_2; then the first is free again, and A gets it.
    assert_eq!(simple_query(&mut holder_2, "BEGIN").status, b'T');
    assert_eq!(simple_query(&mut holder_1, "COMMIT").status, b'I');

    let again = exchange(
        &mut a,
        Msgs::new()
            .parse("s1", "select 2")
            .bind("", "s1", &[])
            .execute("")
            .sync(),
        "Parse s1 again",
    );
    assert_tags(&again, "12DCZ", "Parse s1 again");
    assert_eq!(first_column(&again), [Some("2".to_owned())]);
    assert_eq!(simple_query(&mut holder_2, "COMMIT").status, b'I');
    for s in [a, holder_1, holder_2] {
        terminate(s);
    }
}

/// Parse("a"), Bind, Execute, Parse("b") of a division by a parameter, Bind with 0,
/// Execute, Bind("a"), Execute, Sync, all in one write.
fn pipeline_with_an_error(s: &mut TcpStream, what: &str) -> Vec<(u8, Vec<u8>)> {
    exchange(
        s,
        Msgs::new()
            .parse("a", "select 1")
            .bind("", "a", &[])
            .execute("")
            .parse("b", "select 1/$1::int")
            .bind("", "b", &["0"])
            .execute("")
            .bind("", "a", &[])
            .execute("")
            .sync(),
        what,
    )
}

/// An error inside a pipeline: PostgreSQL skips everything up to the Sync, and so must
/// pgring's bookkeeping (nothing of the skipped Bind/Execute reaches the client). A
/// second client sending the same pipeline finds both texts already on a server, so
/// pgring answers some ParseComplete itself: the client must see the very same sequence.
///
/// PostgreSQL plans the statement at Bind, with the parameter's value, and folds 1/0
/// there: the error comes in place of the second BindComplete.
#[test]
fn error_inside_a_pipeline_skips_to_sync_for_every_client() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "");
    let mut clients = Vec::new();
    for client in ["first client", "second client"] {
        let mut s = raw_login(pgring.port());
        let answer = pipeline_with_an_error(&mut s, client);
        assert_tags(&answer, "12DC1EZ", client);
        assert_eq!(first_column(&answer), [Some("1".to_owned())], "{client}");
        assert_eq!(error_codes(&answer), ["22012"], "{client}");
        assert_eq!(answer.last().unwrap().1, b"I", "{client}");
        // Both statements survived the error.
        let after = exchange(&mut s, run("a"), client);
        assert_tags(&after, "2DCZ", client);
        assert_eq!(first_column(&after), [Some("1".to_owned())], "{client}");
        let after = exchange(
            &mut s,
            Msgs::new().bind("", "b", &["1"]).execute("").sync(),
            client,
        );
        assert_tags(&after, "2DCZ", client);
        assert_eq!(first_column(&after), [Some("1".to_owned())], "{client}");
        clients.push(s);
    }
    for s in clients {
        terminate(s);
    }
}

/// Parse and Describe of a statement in one batch: ParseComplete, ParameterDescription,
/// RowDescription, ReadyForQuery. A second client doing the same (the text is then
/// already on a server) gets the same messages, byte for byte.
#[test]
fn describe_statement_after_parse() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "");
    let mut answers = Vec::new();
    let mut clients = Vec::new();
    for client in ["first client", "second client"] {
        let mut s = raw_login(pgring.port());
        let answer = exchange(
            &mut s,
            Msgs::new()
                .parse("s1", "select 1")
                .describe(b'S', "s1")
                .sync(),
            client,
        );
        assert_tags(&answer, "1tTZ", client);
        let after = exchange(&mut s, run("s1"), client);
        assert_tags(&after, "2DCZ", client);
        assert_eq!(first_column(&after), [Some("1".to_owned())], "{client}");
        answers.push(answer);
        clients.push(s);
    }
    assert_eq!(answers[0], answers[1]);
    for s in clients {
        terminate(s);
    }
}

/// DEALLOCATE ALL and DISCARD ALL drop the client's statements: a Bind of one gets 26000,
/// and the name can be prepared again with the same text (which the server no longer
/// holds: the command dropped the server's statements too, so pgring must not answer
/// that Parse from what it knew of the server). One pgring for both commands, one client
/// each: the second client finds the first one's text already on the server.
#[test]
fn deallocate_all_and_discard_all_forget_the_clients_statements() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "");
    for command in ["DEALLOCATE ALL", "DISCARD ALL"] {
        let mut s = raw_login(pgring.port());
        let prepare_and_run = || {
            Msgs::new()
                .parse("s1", "select 1")
                .bind("", "s1", &[])
                .execute("")
                .sync()
        };
        let first = exchange(&mut s, prepare_and_run(), command);
        assert_tags(&first, "12DCZ", command);
        assert_eq!(first_column(&first), [Some("1".to_owned())]);

        let dropped = exchange(&mut s, Msgs::new().query(command), command);
        assert_tags(&dropped, "CZ", command);
        assert_eq!(dropped[0].1, format!("{command}\0").into_bytes());
        assert_eq!(dropped[1].1, b"I");

        let gone = exchange(&mut s, run("s1"), command);
        assert_tags(&gone, "EZ", command);
        assert_eq!(error_codes(&gone), ["26000"], "{command}");

        let again = exchange(&mut s, prepare_and_run(), command);
        assert_tags(&again, "12DCZ", command);
        assert_eq!(first_column(&again), [Some("1".to_owned())]);
        terminate(s);
    }
}

/// A Bind of a name the client never prepared: 26000 naming it, then ReadyForQuery, and
/// the session goes on.
#[test]
fn unknown_statement_name_gets_26000() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "");
    let mut s = raw_login(pgring.port());
    let answer = exchange(&mut s, run("nosuch"), "Bind nosuch");
    assert_tags(&answer, "EZ", "Bind nosuch");
    let fields = error_fields(&answer[0].1);
    assert_eq!(
        fields.get(&'C').map(String::as_str),
        Some("26000"),
        "{fields:?}"
    );
    assert!(
        fields.get(&'M').is_some_and(|m| m.contains("nosuch")),
        "{fields:?}"
    );
    assert_eq!(answer[1].1, b"I");
    assert_eq!(query_value(&mut s, "select 1").as_deref(), Some("1"));
    let answer = exchange(
        &mut s,
        Msgs::new()
            .parse("s1", "select 2")
            .bind("", "s1", &[])
            .execute("")
            .sync(),
        "Parse s1 after the error",
    );
    assert_tags(&answer, "12DCZ", "Parse s1 after the error");
    assert_eq!(first_column(&answer), [Some("2".to_owned())]);
    terminate(s);
}

/// `max_prepared_statements = 0` turns tracking off: names reach the server untouched.
#[test]
fn tracking_off_passes_names_through() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "max_prepared_statements = 0");
    let mut s = raw_login(pgring.port());
    assert_eq!(simple_query(&mut s, "BEGIN").status, b'T');
    let parsed = exchange(
        &mut s,
        Msgs::new().parse("s1", "select 1").sync(),
        "Parse s1",
    );
    assert_tags(&parsed, "1Z", "Parse s1");
    assert_eq!(parsed[1].1, b"T");
    let r = simple_query(&mut s, "select name from pg_prepared_statements");
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(r.rows, [[Some("s1".to_owned())]]);
    assert_eq!(simple_query(&mut s, "COMMIT").status, b'I');
    terminate(s);
}

/// 50 clients over a pool of 2, each with its own text under the same name "q": a
/// statement name belongs to its client. Without tracking the second Parse of "q" on a
/// server fails (42P05), or a client runs another's "q" and gets its number.
#[test]
fn same_name_different_text_per_client() {
    let pg = cluster();
    let pgring = pgring_tx(&pg, "");
    let port = pgring.port();
    let threads: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || -> Result<(), String> {
                let mut s = raw_login(port);
                let what = format!("client {i}");
                let sql = format!("select {i}::int");
                let parsed = exchange(&mut s, Msgs::new().parse("q", &sql).sync(), &what);
                if tags(&parsed) != "1Z" {
                    return Err(format!("{what}: Parse q: {:?}", error_codes(&parsed)));
                }
                for round in 0..20 {
                    let answer = exchange(&mut s, run("q"), &what);
                    let want = [Some(i.to_string())];
                    if tags(&answer) != "2DCZ" || first_column(&answer) != want {
                        return Err(format!(
                            "{what}, round {round}: {} {:?} {:?}",
                            tags(&answer),
                            first_column(&answer),
                            error_codes(&answer)
                        ));
                    }
                }
                terminate(s);
                Ok(())
            })
        })
        .collect();
    let mut errors = Vec::new();
    for (i, thread) in threads.into_iter().enumerate() {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(panic) => errors.push(format!(
                "client {i} panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }
    assert!(
        errors.is_empty(),
        "{} of 50 clients failed; the first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

/// A schema change behind a prepared statement: PostgreSQL answers a Bind of it with
/// 0A000 `cached plan must not change result type`, and the statement stays broken on
/// that connection for whoever uses it. Outside a transaction block pgring prepares the
/// statement again and runs the client's one-statement batch once more: the client gets
/// the rows in the new shape. Inside one, the error reaches the client, and its next use
/// is prepared again.
#[test]
fn a_stale_plan_after_a_schema_change_is_prepared_again() {
    let pg = cluster();
    app_psql(&pg, "create table t(a int); insert into t values (1)");
    // One server connection, so that the schema change happens behind its statement.
    let pgring = pgring_tx(&pg, "default_pool_size = 1");
    let mut a = raw_login(pgring.port());
    let first = exchange(
        &mut a,
        Msgs::new()
            .parse("s1", "select * from t")
            .bind("", "s1", &[])
            .execute("")
            .sync(),
        "first use",
    );
    assert_tags(&first, "12DCZ", "first use");

    app_psql(&pg, "alter table t add column b int default 7");
    let use_it = |a: &mut TcpStream, what: &str| {
        exchange(
            a,
            Msgs::new()
                .bind("", "s1", &[])
                .describe(b'P', "")
                .execute("")
                .sync(),
            what,
        )
    };
    let after = use_it(&mut a, "after the schema change");
    assert_tags(&after, "2TDCZ", "after the schema change");
    let row = after.iter().find(|(t, _)| *t == b'D').unwrap();
    assert_eq!(
        raw::data_row(&row.1),
        [Some("1".to_owned()), Some("7".to_owned())]
    );

    // In a transaction block the batch is not run again: the client gets the error.
    app_psql(&pg, "alter table t add column c int default 8");
    assert_eq!(simple_query(&mut a, "BEGIN").status, b'T');
    let in_block = use_it(&mut a, "in a transaction block");
    assert_eq!(error_codes(&in_block), ["0A000"], "{in_block:?}");
    assert_eq!(simple_query(&mut a, "ROLLBACK").status, b'I');
    let next = use_it(&mut a, "the next use");
    assert_tags(&next, "2TDCZ", "the next use");
    let row = next.iter().find(|(t, _)| *t == b'D').unwrap();
    assert_eq!(raw::data_row(&row.1).len(), 3);
    terminate(a);
}

/// A notification sent by the client's own backend shows the process id the client was
/// given in BackendKeyData (pgring's, not the server's), as drivers compare the two to
/// tell their own notifications from others' (psycopg's `notify.pid == info.backend_pid`).
#[test]
fn a_notification_of_the_clients_own_backend_carries_the_clients_process_id() {
    let pg = cluster();
    let pgring = pgring(&pg, "shards = 1\npool_mode = \"session\"", "");
    let (mut a, pid) = raw::raw_login_keyed(
        pgring.port(),
        &[("user", "app"), ("database", "app")],
        "apppass",
    )
    .expect("login");
    let answer = exchange(
        &mut a,
        Msgs::new().query("LISTEN ch; NOTIFY ch, 'hello'"),
        "LISTEN and NOTIFY",
    );
    let (_, body) = answer
        .iter()
        .find(|(t, _)| *t == b'A')
        .unwrap_or_else(|| panic!("no NotificationResponse in {answer:?}"));
    let notified = i32::from_be_bytes(body[..4].try_into().unwrap());
    assert_eq!(notified, pid, "the notification's process id");
    let backend = query_value(&mut a, "select pg_backend_pid()").unwrap();
    assert_ne!(
        backend,
        pid.to_string(),
        "pgring's key is its own, not the backend's"
    );
    terminate(a);
}
