//! The release rule of transaction pooling: a server connection changes hands only at a
//! message boundary in both directions, with nothing owed and nothing unread.
//!
//! Every test runs one shard with `default_pool_size = 1`, so that a second client (B) can
//! only be served by the server connection the first one (A) used: if pgring hands that
//! connection over too early, B hangs or gets A's leftovers; if it never hands it over, B
//! waits. Clients speak the protocol by hand over raw sockets (md5 login against a
//! userlist), except where a driver's own message pattern is the point (tokio-postgres's
//! `copy_in`). Every wait is bounded (a 10 s read timeout, `tokio::time::timeout`), so a
//! hang fails the test.

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use raw::{
    app_psql, cluster, error_codes, error_fields, first_column, is_timeout, next_message, pgring,
    query_value, raw_login, read_message, read_query_result, read_until_ready, send_query, tags,
    terminate, tokio_connect, Msgs, READ_TIMEOUT,
};
use support::{PgCluster, Pgring};

/// pgring with one shard and one server connection in transaction pooling; `extra` goes
/// into [pooler].
fn pgring_one_server(pg: &PgCluster, extra: &str) -> Pgring {
    pgring(
        pg,
        &format!("shards = 1\npool_mode = \"transaction\"\ndefault_pool_size = 1\n{extra}"),
        "",
    )
}

/// Checks that `s` receives nothing for `quiet` (its query is queued behind another
/// client), then restores the usual read timeout.
fn assert_waiting(s: &mut TcpStream, quiet: Duration, what: &str) {
    s.set_read_timeout(Some(quiet)).unwrap();
    match read_message(s) {
        Err(e) if is_timeout(&e) => {}
        other => panic!("{what}: expected no answer yet, got {other:?}"),
    }
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
}

/// Messages up to and including the first one of type `tag`.
fn read_through(s: &mut TcpStream, tag: u8, what: &str) -> Vec<(u8, Vec<u8>)> {
    let mut messages = Vec::new();
    loop {
        let message = next_message(s, what);
        let done = message.0 == tag;
        messages.push(message);
        if done {
            return messages;
        }
    }
}

// ---- a message half sent --------------------------------------------------------------------

/// Bytes of the CopyData that A sends before it stops.
const HALF: usize = 10;

/// A CopyData message with 1000 body bytes (length word 1004).
fn big_copy_data() -> Vec<u8> {
    let message = Msgs::new().copy_data(&[b'x'; 1000]).bytes().to_vec();
    assert_eq!(&message[..5], &[b'd', 0, 0, 0x03, 0xec], "length word 1004");
    message
}

/// Logs B in, then A; A sends `select 1` and, in the same write, the first [`HALF`] bytes
/// of a CopyData, and reads the answer up to its ReadyForQuery; B then sends `select 42`.
/// Returns A, B and the rest of A's CopyData.
fn half_sent_copy_data(pgring: &Pgring) -> (TcpStream, TcpStream, Vec<u8>) {
    let mut b = raw_login(pgring.port());
    let mut a = raw_login(pgring.port());
    let message = big_copy_data();
    Msgs::new()
        .query("select 1")
        .raw(&message[..HALF])
        .send(&mut a);
    let r = read_query_result(&mut a, "A: select 1 + half a CopyData");
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(r.rows, [[Some("1".to_owned())]], "{r:?}");
    send_query(&mut b, "select 42");
    (a, b, message[HALF..].to_vec())
}

/// B's answer to `select 42`, which must come within the read timeout.
fn assert_b_gets_42(b: &mut TcpStream) {
    let r = read_query_result(b, "B: select 42");
    assert!(r.error.is_none(), "B: {r:?}");
    assert_eq!(r.rows, [[Some("42".to_owned())]], "B: {r:?}");
    assert_eq!(r.status, b'I');
}

/// A's ReadyForQuery comes while its CopyData is only partly sent. Without the rule the
/// server goes to B at that ReadyForQuery, and PostgreSQL, still reading A's CopyData,
/// takes B's query for the rest of it: B hangs (and A's rest, were it forwarded, would
/// land in the middle of B's traffic). With the rule A keeps the server until the
/// CopyData is whole (PostgreSQL ignores CopyData outside COPY), then B gets it, then A
/// again. (The rest is the 995 bytes after the first 10 of the 1005-byte message.)
#[test]
fn half_sent_message_keeps_the_server_until_it_is_whole() {
    let pg = cluster();
    let pgring = pgring_one_server(&pg, "");
    let (mut a, mut b, rest) = half_sent_copy_data(&pgring);
    assert_waiting(
        &mut b,
        Duration::from_millis(300),
        "B while A's CopyData is half sent",
    );
    Msgs::new().raw(&rest).send(&mut a);
    assert_b_gets_42(&mut b);
    assert_eq!(query_value(&mut a, "select 2").as_deref(), Some("2"));
    terminate(a);
    terminate(b);
}

/// Without the rule the server went to B with A's CopyData half read, and A's going away
/// changes nothing: B hangs. With the rule the server, which can never be given a whole
/// message again, is closed when A goes, and B gets a fresh one.
#[test]
fn half_sent_message_then_client_gone_frees_the_pool() {
    let pg = cluster();
    let pgring = pgring_one_server(&pg, "");
    let (a, mut b, _rest) = half_sent_copy_data(&pgring);
    assert_waiting(
        &mut b,
        Duration::from_millis(300),
        "B while A's CopyData is half sent",
    );
    a.shutdown(std::net::Shutdown::Both).unwrap();
    drop(a);
    assert_b_gets_42(&mut b);
    terminate(b);
}

/// A client that stops in the middle of a message holds its server; like a client idle
/// in a transaction, `idle_transaction_timeout` ends it (25P03) and B is served. Without
/// the rule the server went to B (which hangs) and no timeout applies to A at all.
#[test]
fn half_sent_message_left_waiting_hits_idle_transaction_timeout() {
    let pg = cluster();
    let pgring = pgring_one_server(&pg, "idle_transaction_timeout = 1");
    let (mut a, mut b, _rest) = half_sent_copy_data(&pgring);
    let started = Instant::now();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (tag, body) = next_message(&mut a, "A waiting with half a CopyData sent");
    assert_eq!(
        tag,
        b'E',
        "A: expected an ErrorResponse, got '{}' {:?}",
        char::from(tag),
        String::from_utf8_lossy(&body)
    );
    let fields = error_fields(&body);
    assert_eq!(
        fields.get(&'C').map(String::as_str),
        Some("25P03"),
        "{fields:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_b_gets_42(&mut b);
    terminate(b);
}

// ---- COPY FROM STDIN in the extended protocol -----------------------------------------------

/// libpq's extended-protocol COPY: Parse/Bind/Execute/Sync, then (after CopyInResponse)
/// CopyData…, CopyDone, Sync. PostgreSQL ignores the first Sync, which arrives during
/// copy-in, so only one ReadyForQuery comes. Without the rule pgring counts two Syncs,
/// waits for a second ReadyForQuery that never comes, and keeps the server pinned to the
/// idle A: B waits until query_wait_timeout.
#[test]
fn sync_during_copy_in_is_owed_no_ready_for_query() {
    let pg = cluster();
    app_psql(&pg, "create table t(x int)");
    let pgring = pgring_one_server(&pg, "");
    let mut b = raw_login(pgring.port());
    let mut a = raw_login(pgring.port());

    Msgs::new()
        .parse("", "COPY t FROM STDIN")
        .bind("", "", &[])
        .execute("")
        .sync()
        .send(&mut a);
    let head = read_through(&mut a, b'G', "A: COPY FROM STDIN up to CopyInResponse");
    assert_eq!(tags(&head), "12G");
    Msgs::new()
        .copy_data(b"1\n")
        .copy_data(b"2\n")
        .copy_done()
        .sync()
        .send(&mut a);
    let tail = read_until_ready(&mut a, "A: after CopyDone and Sync");
    assert_eq!(tags(&tail), "CZ", "{tail:?}");
    assert_eq!(tail[0].1, b"COPY 2\0");
    assert_eq!(tail[1].1, b"I");

    // A stays connected and idle; B must get the server.
    send_query(&mut b, "select count(*) from t");
    let r = read_query_result(&mut b, "B: select count(*) from t");
    assert!(r.error.is_none(), "B: {r:?}");
    assert_eq!(r.rows, [[Some("2".to_owned())]], "B: {r:?}");
    // And A's session is still in step: no stray ReadyForQuery ahead of this answer.
    assert_eq!(query_value(&mut a, "select 3").as_deref(), Some("3"));
    terminate(a);
    terminate(b);
}

/// The same through tokio-postgres's `copy_in` (Bind/Execute/Sync, then the data,
/// CopyDone, Sync): B, a second tokio-postgres client, must be served while A is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_copy_in_releases_the_server_after_copy_done() {
    use tokio::time::timeout;
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;

    let pg = cluster();
    app_psql(&pg, "create table t(x int)");
    let pgring = pgring_one_server(&pg, "");
    let b = tokio_connect(pgring.port()).await;
    let a = tokio_connect(pgring.port()).await;

    let copied = timeout(READ_TIMEOUT, async {
        let sink = a
            .copy_in::<_, bytes::Bytes>("COPY t FROM STDIN (FORMAT binary)")
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::INT4]);
        let mut writer = std::pin::pin!(writer);
        writer.as_mut().write(&[&1i32]).await?;
        writer.as_mut().write(&[&2i32]).await?;
        writer.finish().await
    })
    .await
    .expect("A: copy_in timed out")
    .expect("A: copy_in");
    assert_eq!(copied, 2);

    // A stays connected and idle; B must get the server.
    let rows = timeout(READ_TIMEOUT, b.simple_query("select count(*) from t"))
        .await
        .expect("B: select count(*) got no answer within 10 s (the server is pinned to A)")
        .expect("B: select count(*)");
    let counts: Vec<&str> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(counts, ["2"]);

    let three: i32 = timeout(READ_TIMEOUT, a.query_one("select 3", &[]))
        .await
        .expect("A: select 3 timed out")
        .expect("A: select 3")
        .get(0);
    assert_eq!(three, 3);
}

// ---- pipelines ------------------------------------------------------------------------------

/// Three Parse/Bind/Execute/Sync batches in one write, the middle one failing: each Sync
/// earns one ReadyForQuery, the error one included, and the server is released after the
/// third, not before (B, whose query is queued meanwhile, must not see any of A's
/// answers) and not never (B is answered).
#[test]
fn pipeline_of_syncs_with_an_error_releases_after_the_last_ready_for_query() {
    let pg = cluster();
    let pgring = pgring_one_server(&pg, "");
    let mut b = raw_login(pgring.port());
    let mut a = raw_login(pgring.port());
    let batch = |m: Msgs, sql: &str| m.parse("", sql).bind("", "", &[]).execute("").sync();
    let pipeline = batch(
        batch(batch(Msgs::new(), "select 1"), "select 1/0"),
        "select 1",
    );
    pipeline.send(&mut a);
    send_query(&mut b, "select 42");

    let first = read_until_ready(&mut a, "A: first batch");
    assert_eq!(tags(&first), "12DCZ", "{first:?}");
    assert_eq!(first_column(&first), [Some("1".to_owned())]);
    let second = read_until_ready(&mut a, "A: second batch");
    // PostgreSQL folds 1/0 when it plans the statement, at Bind: ParseComplete, then the
    // error instead of BindComplete.
    assert_eq!(tags(&second), "1EZ", "{second:?}");
    assert_eq!(error_codes(&second), ["22012"]);
    assert_eq!(second.last().unwrap().1, b"I");
    let third = read_until_ready(&mut a, "A: third batch");
    assert_eq!(tags(&third), "12DCZ", "{third:?}");
    assert_eq!(first_column(&third), [Some("1".to_owned())]);

    assert_b_gets_42(&mut b);
    assert_eq!(query_value(&mut a, "select 2").as_deref(), Some("2"));
    terminate(a);
    terminate(b);
}

/// Parse/Bind/Execute/Flush, then the Sync only after the results were read: the batch is
/// open (the server is A's) until that Sync's ReadyForQuery, and released after it.
#[test]
fn flush_batch_releases_after_its_sync() {
    let pg = cluster();
    let pgring = pgring_one_server(&pg, "");
    let mut b = raw_login(pgring.port());
    let mut a = raw_login(pgring.port());
    Msgs::new()
        .parse("", "select 1")
        .bind("", "", &[])
        .execute("")
        .flush()
        .send(&mut a);
    let results: Vec<_> = (0..4)
        .map(|_| next_message(&mut a, "A: flushed results"))
        .collect();
    assert_eq!(tags(&results), "12DC", "{results:?}");
    assert_eq!(first_column(&results), [Some("1".to_owned())]);

    // B's query is queued while A's batch is open.
    send_query(&mut b, "select 42");
    Msgs::new().sync().send(&mut a);
    let ready = read_until_ready(&mut a, "A: Sync after Flush");
    assert_eq!(tags(&ready), "Z", "{ready:?}");
    assert_eq!(ready[0].1, b"I");

    assert_b_gets_42(&mut b);
    terminate(a);
    terminate(b);
}

// ---- asynchronous messages ------------------------------------------------------------------

/// A NoticeResponse (here raised by a DO block) goes to the client whose query raised it,
/// and the next client on the same server sees none of it.
#[test]
fn notice_reaches_its_client_and_no_other() {
    let pg = cluster();
    let pgring = pgring_one_server(&pg, "");
    let mut b = raw_login(pgring.port());
    let mut a = raw_login(pgring.port());
    send_query(&mut a, "do $$ begin raise notice 'hi'; end $$");
    send_query(&mut b, "select 42");

    let answer = read_until_ready(&mut a, "A: DO with a notice");
    assert_eq!(tags(&answer), "NCZ", "{answer:?}");
    let notice = error_fields(&answer[0].1);
    assert_eq!(
        notice.get(&'M').map(String::as_str),
        Some("hi"),
        "{notice:?}"
    );
    assert_eq!(
        notice.get(&'V').map(String::as_str),
        Some("NOTICE"),
        "{notice:?}"
    );

    let answer = read_until_ready(&mut b, "B: select 42");
    assert_eq!(tags(&answer), "TDCZ", "{answer:?}");
    assert_eq!(first_column(&answer), [Some("42".to_owned())]);
    terminate(a);
    terminate(b);
}
