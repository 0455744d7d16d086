//! Timers for the shard executors: a future with a deadline.

use std::future::Future;
use std::time::Duration;

use glommio::timer::Timer;

/// Runs `fut` for at most `limit`; `None` when the time ran out first. A zero `limit`
/// means no limit (the convention of every PgBouncer timeout setting).
pub async fn with_timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    if limit.is_zero() {
        return Some(fut.await);
    }
    futures_lite::future::or(async { Some(fut.await) }, async {
        Timer::new(limit).await;
        None
    })
    .await
}
