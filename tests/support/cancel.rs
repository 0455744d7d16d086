//! A cancel request through pgring, checked end to end with tokio-postgres.
//!
//! Include it next to `mod support;` as `#[path = "support/cancel.rs"] mod cancel;` (not
//! part of `support`, which other packages' tests include without tokio-postgres).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Runs `pg_sleep(10)` on a connection made with `conn_str`, cancels it with the key the
/// connection was given, and checks that the cancel (not the 10 s sleep) ended the query.
pub async fn cancel_sleep(conn_str: &str) {
    let (client, connection) = tokio_postgres::connect(conn_str, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect through pgring ({conn_str}): {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.batch_execute("SELECT pg_sleep(10)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    token
        .cancel_query(NoTls)
        .await
        .expect("cancel request sent");
    let result = tokio::time::timeout(Duration::from_secs(8), sleeper)
        .await
        .expect("the query ended after the cancel")
        .unwrap();
    let err = result.expect_err("pg_sleep was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    // Typically a few milliseconds; the bound only says "the cancel, not the 10 s sleep,
    // ended the query", with room for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
