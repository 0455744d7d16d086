//! The pooling loop of a logged-in client.
//!
//! ```text
//!            client bytes                         server bytes
//!   client ──────────────► scan tags ──► server ────────────► scan Z/S ──► client
//!              (attach a server first        (ReadyForQuery: ask TxTracker whether
//!               when none is attached)        the server goes back to the pool)
//! ```
//!
//! Bytes are forwarded in the ranges they arrived in; only the frame boundaries are
//! found. Invariant: a server connection leaves its client only when
//! [`TxTracker`](crate::protocol::session::TxTracker) says it is quiet; in every other
//! case (client gone mid-transaction, error, timeout) it is closed, never reused.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use super::login::LoggedIn;
use super::{ClientConn, ClientSlot};
use crate::config::PoolMode;
use crate::error::{Fault, SessionError};
use crate::pool::Pool;
use crate::protocol::backend;
use crate::protocol::framing::{Framer, Step};
use crate::protocol::session::{AfterReady, TxTracker};
use crate::protocol::{sqlstate, tag, TxStatus};
use crate::server::ServerConn;
use crate::shard::Shard;

/// What woke the loop while a server was attached.
enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Timeout(&'static str),
    Shutdown,
}

/// Per-session settings, read once at login.
struct Limits {
    mode: PoolMode,
    client_idle_timeout: Duration,
    idle_transaction_timeout: Duration,
    query_timeout: Duration,
    reset_query: String,
    reset_always: bool,
    log_disconnections: bool,
    log_errors: bool,
}

/// Runs the session of a logged-in client to its end; `slot` counts it against
/// `max_client_conn` until then.
///
/// The session is set up here, before the future exists, and the `async move` block
/// captures only it and the connection. That matters because this future lives as long
/// as the client, idle or not, and a future keeps every captured value in place for its
/// whole life even after moving it elsewhere: an `async fn`, or an async block that built
/// the session itself, would carry each argument twice.
pub(super) fn run(
    shard: Rc<Shard>,
    mut conn: ClientConn,
    login: LoggedIn,
    slot: Option<ClientSlot>,
) -> impl Future<Output = ()> {
    let mut session = Session::new(shard, login, slot);
    async move {
        let result = session.pump(&mut conn).await;
        // Boxed, and taking the result along, so that nothing but the pump's state sits
        // beside the session and the connection in this future.
        Box::pin(session.end(conn, result)).await;
    }
}

struct Session {
    shard: Rc<Shard>,
    /// The login's outcome: the pool, the client's parameters, its cancel slot.
    login: LoggedIn,
    limits: Limits,
    tracker: TxTracker,
    client_framer: Framer,
    /// Boxed: a pointer to move between the pool and the session, and 8 bytes in an
    /// idle session instead of the connection's state.
    server: Option<Box<ServerConn>>,
    /// When the oldest unanswered request was sent (for `query_timeout`).
    query_started: Option<Instant>,
    shutdown: oneshot::Receiver<()>,
    /// The client's place under `max_client_conn`, given back when the session is dropped.
    _slot: Option<ClientSlot>,
}

impl Session {
    /// Reads the settings the session keeps (a reload applies to later sessions) and
    /// registers for the shard's shutdown notice.
    fn new(shard: Rc<Shard>, login: LoggedIn, slot: Option<ClientSlot>) -> Session {
        let config = shard.config();
        let user_cfg = config.users.get(&login.pool.key.user);
        let limits = Limits {
            mode: login.pool.mode(),
            client_idle_timeout: user_cfg
                .and_then(|u| u.client_idle_timeout)
                .unwrap_or(config.pooler.client_idle_timeout),
            idle_transaction_timeout: user_cfg
                .and_then(|u| u.idle_transaction_timeout)
                .unwrap_or(config.pooler.idle_transaction_timeout),
            query_timeout: user_cfg
                .and_then(|u| u.query_timeout)
                .unwrap_or(config.pooler.query_timeout),
            reset_query: config.pooler.server_reset_query.clone(),
            reset_always: config.pooler.server_reset_query_always,
            log_disconnections: config.pooler.log_disconnections,
            log_errors: config.pooler.log_pooler_errors,
        };
        let client_framer = Framer::new(config.pooler.max_packet_size as usize);
        drop(config);
        let (shutdown_tx, shutdown) = oneshot::channel();
        login.cancel.set_shutdown(shutdown_tx);
        Session {
            shard,
            login,
            limits,
            tracker: TxTracker::default(),
            client_framer,
            server: None,
            query_started: None,
            shutdown,
            _slot: slot,
        }
    }

    /// After the pump: the server goes back to its pool or is closed, the cancel key is
    /// forgotten, the end is logged, and a client that is still there gets the error.
    async fn end(mut self, mut conn: ClientConn, result: Result<&'static str, SessionError>) {
        self.finish().await;
        self.shard.cancel.unregister(self.login.cancel.key());
        self.log_end(&conn, &result);
        if let Err(e) = result {
            conn.send_fatal(&e).await;
        }
    }

    /// The disconnection's log line, as `log_disconnections` and `log_pooler_errors` ask.
    fn log_end(&self, conn: &ClientConn, result: &Result<&'static str, SessionError>) {
        let key = &self.login.pool.key;
        match result {
            Ok(reason) => {
                if self.limits.log_disconnections {
                    log::info!(
                        "{}: closing: db={} user={}: {reason}",
                        conn.peer,
                        key.database,
                        key.user
                    );
                }
            }
            Err(e) => {
                if self.limits.log_errors && e.client_reachable() {
                    log::warn!(
                        "{}: closing: db={} user={}: {e}",
                        conn.peer,
                        key.database,
                        key.user
                    );
                } else if self.limits.log_disconnections {
                    log::info!(
                        "{}: closing: db={} user={}: {e}",
                        conn.peer,
                        key.database,
                        key.user
                    );
                }
            }
        }
    }
    /// Forwards traffic until the client leaves (`Ok` with the reason) or an error ends
    /// the session.
    async fn pump(&mut self, conn: &mut ClientConn) -> Result<&'static str, SessionError> {
        loop {
            // 1. Whatever the client sent: forward it, attaching a server first.
            let (forward, terminate) = self.scan_client(conn.rbuf.data())?;
            log::trace!(
                "client: {} bytes buffered, {forward} to forward, terminate={terminate}, attached={}",
                conn.rbuf.len(),
                self.server.is_some()
            );
            if forward > 0 {
                if self.server.is_none() {
                    // The common case needs no await: an idle server that already shows
                    // the client's parameters.
                    match self.login.pool.take_ready() {
                        Some(server) if self.login.params.matches(&server.params) => {
                            self.attached(server)
                        }
                        ready => Box::pin(self.attach(ready)).await?,
                    }
                }
                let server = self.server.as_mut().expect("attached just above");
                if let Err(e) = server
                    .stream
                    .write_all_flushed(&conn.rbuf.data()[..forward])
                    .await
                {
                    self.drop_server();
                    return Err(SessionError::server_io(e));
                }
                conn.rbuf.consume(forward);
            }
            if terminate {
                return Ok("client sent Terminate");
            }

            // 2. Wait for the next event.
            if self.server.is_none() {
                if self.shard.is_shutting_down() {
                    return Err(shutting_down());
                }
                conn.rbuf.release_if_idle();
                let limit = self.limits.client_idle_timeout;
                let timeout = (!limit.is_zero()).then_some((limit, "client_idle_timeout"));
                let event = wait(conn, None, timeout, Some(&mut self.shutdown)).await;
                match event {
                    Event::Client(Ok(0)) | Event::Client(Err(_)) => {
                        return Ok("client closed the connection")
                    }
                    Event::Client(Ok(_)) => continue,
                    Event::Timeout(what) => return Err(timeout_error(what)),
                    Event::Shutdown => return Err(shutting_down()),
                    Event::Server(_) => unreachable!("no server attached"),
                }
            }

            let timeout = self.attached_timeout();
            let server = self.server.as_mut().expect("checked above");
            let event = wait(conn, Some(server), timeout, None).await;
            match event {
                Event::Client(Ok(0)) | Event::Client(Err(_)) => {
                    return Ok("client closed the connection");
                }
                Event::Client(Ok(_)) => {}
                Event::Server(Ok(0)) => {
                    self.drop_server();
                    return Err(SessionError::server_closed());
                }
                Event::Server(Err(e)) => {
                    self.drop_server();
                    return Err(SessionError::server_io(e));
                }
                Event::Server(Ok(_)) => self.forward_server(conn).await?,
                Event::Timeout(what) => {
                    self.drop_server();
                    return Err(timeout_error(what));
                }
                Event::Shutdown => unreachable!("not awaited while attached"),
            }
        }
    }

    /// Finds how many leading client bytes can go to the server, and whether a Terminate
    /// follows them. Records every request in the tracker.
    fn scan_client(&mut self, data: &[u8]) -> Result<(usize, bool), SessionError> {
        let mut pos = 0;
        loop {
            let step = self
                .client_framer
                .step(&data[pos..], |t| t == tag::TERMINATE)
                .map_err(SessionError::client_protocol)?;
            let (msg_tag, len) = match step {
                Step::Message { tag, len, .. } => (Some(tag), len),
                Step::Partial { tag, len } => (tag, len),
                Step::NeedMore => return Ok((pos, false)),
            };
            if msg_tag == Some(tag::TERMINATE) {
                return Ok((pos, true));
            }
            if let Some(t) = msg_tag {
                if self.tracker.owed_ready() == 0 && !self.limits.query_timeout.is_zero() {
                    self.query_started = Some(Instant::now());
                }
                self.tracker.on_client_message(t);
            }
            pos += len;
        }
    }

    /// Forwards what the server sent, up to a point where the server is released.
    async fn forward_server(&mut self, conn: &mut ClientConn) -> Result<(), SessionError> {
        let mode = self.limits.mode;
        let Session {
            server,
            tracker,
            login,
            query_started,
            shard,
            ..
        } = self;
        let server = server
            .as_deref_mut()
            .expect("called with a server attached");
        let ServerConn {
            rbuf,
            framer,
            params: server_params,
            ..
        } = server;
        let data = rbuf.data();
        let mut pos = 0;
        // Where the answer to the latest request starts (just past the previous
        // ReadyForQuery): what statement mode replaces with its refusal.
        let mut answer_start = 0;
        let mut after = AfterReady::Keep;
        loop {
            let step = framer
                .step(&data[pos..], |t| {
                    t == tag::READY_FOR_QUERY || t == tag::PARAMETER_STATUS
                })
                .map_err(SessionError::server_protocol)?;
            match step {
                Step::Message {
                    tag: tag::READY_FOR_QUERY,
                    body,
                    len,
                } => {
                    let status = backend::parse_ready_for_query(body)
                        .map_err(SessionError::server_protocol)?;
                    pos += len;
                    shard.queries.set(shard.queries.get() + 1);
                    if status == TxStatus::Idle {
                        shard.transactions.set(shard.transactions.get() + 1);
                    }
                    after = tracker.on_ready_for_query(status, mode);
                    if tracker.owed_ready() == 0 {
                        *query_started = None;
                    }
                    if after != AfterReady::Keep {
                        break;
                    }
                    answer_start = pos;
                }
                Step::Message {
                    tag: tag::PARAMETER_STATUS,
                    body,
                    len,
                } => {
                    let (name, value) = backend::parse_parameter_status(body)
                        .map_err(SessionError::server_protocol)?;
                    login.params.set(name, value);
                    server_params.set(name, value);
                    pos += len;
                }
                Step::Message { len, .. } | Step::Partial { len, .. } => pos += len,
                Step::NeedMore => break,
            }
        }
        if after == AfterReady::StatementModeViolation {
            let result = conn.write_all(&data[..answer_start]).await;
            rbuf.consume(pos);
            result?;
            return Box::pin(self.refuse_transaction_block(conn)).await;
        }
        log::trace!(
            "server: {} bytes buffered, {pos} to forward, {after:?}, owed={}",
            data.len(),
            tracker.owed_ready()
        );
        let result = conn.write_all(&data[..pos]).await;
        rbuf.consume(pos);
        result?;
        if after == AfterReady::Release {
            self.detach();
        }
        Ok(())
    }

    /// Statement mode saw a transaction block open: roll it back, tell the client with an
    /// ERROR (the session goes on), and give the server back. When more requests are
    /// already in flight behind it, the server is closed and the session ends instead.
    async fn refuse_transaction_block(
        &mut self,
        conn: &mut ClientConn,
    ) -> Result<(), SessionError> {
        let refusal = SessionError::new(
            Fault::Client,
            sqlstate::FEATURE_NOT_SUPPORTED,
            "transaction blocks not allowed in statement pooling mode",
        );
        if self.tracker.owed_ready() > 0 {
            self.drop_server();
            return Err(refusal);
        }
        let mut server = self.server.take().expect("called with a server attached");
        self.login.cancel.set_server(None);
        match server.run_internal("ROLLBACK").await {
            Ok(()) => self.login.pool.release(server),
            Err(_) => self.login.pool.discard(server),
        }
        self.tracker = TxTracker::default();
        let mut out = bytes::BytesMut::new();
        backend::error_response(
            &mut out,
            backend::Severity::Error,
            &refusal.sqlstate,
            &refusal.message,
            None,
        );
        backend::ready_for_query(&mut out, TxStatus::Idle);
        conn.write_all(&out).await
    }

    /// Which timeout applies while a server is attached, and how long is left.
    fn attached_timeout(&self) -> Option<(Duration, &'static str)> {
        if self.tracker.owed_ready() > 0 {
            let limit = self.limits.query_timeout;
            if limit.is_zero() {
                return None;
            }
            let started = self.query_started.unwrap_or_else(Instant::now);
            let left = limit
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            return Some((left, "query_timeout"));
        }
        if self.tracker.status() != TxStatus::Idle
            && !self.limits.idle_transaction_timeout.is_zero()
        {
            return Some((
                self.limits.idle_transaction_timeout,
                "idle_transaction_timeout",
            ));
        }
        if !self.limits.client_idle_timeout.is_zero() {
            return Some((self.limits.client_idle_timeout, "client_idle_timeout"));
        }
        None
    }

    /// Takes a server from the pool (unless one is given) and aligns its parameters with
    /// the client's.
    async fn attach(&mut self, ready: Option<Box<ServerConn>>) -> Result<(), SessionError> {
        let mut server = match ready {
            Some(server) => server,
            None => self.login.pool.acquire().await?,
        };
        if let Some(sql) = self.login.params.alignment_sql(&server.params) {
            if let Err(e) = server.run_internal(&sql).await {
                if e.sqlstate == sqlstate::CONNECTION_FAILURE {
                    self.login.pool.discard(server);
                } else {
                    self.login.pool.release(server);
                }
                return Err(e);
            }
            self.login.params.adopt_server_spelling(&server.params);
        }
        self.attached(server);
        Ok(())
    }

    /// Makes `server` (aligned) this client's server.
    fn attached(&mut self, server: Box<ServerConn>) {
        self.login
            .cancel
            .set_server(Some((server.backend_key, server.address.clone())));
        self.server = Some(server);
    }

    /// Gives the attached (quiet) server back to the pool.
    fn detach(&mut self) {
        if let Some(server) = self.server.take() {
            self.login.cancel.set_server(None);
            if self.limits.reset_always && !self.limits.reset_query.is_empty() {
                // Reset before anyone else sees it; runs on its own task so this client
                // is not held up.
                let pool = self.login.pool.clone();
                let sql = self.limits.reset_query.clone();
                crate::readiness::spawn(reset_and_release(pool, server, sql)).detach();
            } else {
                self.login.pool.release(server);
            }
        }
    }

    /// Closes the attached server: it may be mid-transaction or broken.
    fn drop_server(&mut self) {
        if let Some(server) = self.server.take() {
            self.login.cancel.set_server(None);
            self.login.pool.discard(server);
        }
    }

    /// At the end of the session: a quiet server is reset and pooled, any other closed.
    async fn finish(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        self.login.cancel.set_server(None);
        if !self.tracker.is_quiet() {
            self.login.pool.discard(server);
            return;
        }
        let reset = self.limits.mode == PoolMode::Session || self.limits.reset_always;
        if reset && !self.limits.reset_query.is_empty() {
            reset_and_release(
                self.login.pool.clone(),
                server,
                self.limits.reset_query.clone(),
            )
            .await;
        } else {
            self.login.pool.release(server);
        }
    }
}

async fn reset_and_release(pool: Rc<Pool>, mut server: Box<ServerConn>, sql: String) {
    match server.run_internal(&sql).await {
        Ok(()) => pool.release(server),
        Err(e) => {
            log::warn!(
                "{}/{}: server_reset_query failed, closing the server connection: {e}",
                pool.key.database,
                pool.key.user
            );
            pool.discard(server);
        }
    }
}

/// Waits for the next event of a session: bytes from the client, from its server (when
/// one is attached), the timeout that applies, or the shard's shutdown notice (when
/// idle). Polled in that order, so that data is never passed over for a timer.
///
/// A hand-written `poll_fn` rather than `async` blocks joined with `or`: this wait sits in
/// the future of every connected client, and each async block keeps its own copy of what
/// it borrows (a few hundred bytes per client in all).
fn wait<'a>(
    conn: &'a mut ClientConn,
    mut server: Option<&'a mut ServerConn>,
    timeout: Option<(Duration, &'static str)>,
    mut shutdown: Option<&'a mut oneshot::Receiver<()>>,
) -> impl Future<Output = Event> + 'a {
    let mut timer = timeout.map(|(limit, what)| (glommio::timer::Timer::new(limit), what));
    futures_lite::future::poll_fn(move |cx| {
        // An idle client keeps no buffer while it waits; one in the middle of a
        // transaction, and its server, keep theirs until the transaction ends.
        let client_read = match server {
            None => conn.rbuf.poll_fill(cx, &mut conn.stream),
            Some(_) => conn.rbuf.poll_fill_keeping(cx, &mut conn.stream),
        };
        if let Poll::Ready(read) = client_read {
            return Poll::Ready(Event::Client(read));
        }
        if let Some(server) = server.as_deref_mut() {
            if let Poll::Ready(read) = server.rbuf.poll_fill_keeping(cx, &mut server.stream) {
                return Poll::Ready(Event::Server(read));
            }
        }
        if let Some((timer, what)) = &mut timer {
            if Pin::new(timer).poll(cx).is_ready() {
                return Poll::Ready(Event::Timeout(what));
            }
        }
        if let Some(shutdown) = shutdown.as_deref_mut() {
            // A dropped sender means the same: the session is to end.
            if Pin::new(shutdown).poll(cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
        }
        Poll::Pending
    })
}

fn timeout_error(what: &'static str) -> SessionError {
    let (code, message) = match what {
        "query_timeout" => (
            sqlstate::QUERY_CANCELED,
            "query_timeout: the query ran too long",
        ),
        "idle_transaction_timeout" => (
            sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
            "idle_transaction_timeout: the transaction was idle too long",
        ),
        _ => (
            sqlstate::IDLE_SESSION_TIMEOUT,
            "client_idle_timeout: the client was idle too long",
        ),
    };
    SessionError::new(Fault::Limit, code, message)
}

fn shutting_down() -> SessionError {
    SessionError::new(
        Fault::Limit,
        sqlstate::ADMIN_SHUTDOWN,
        "pgring is shutting down",
    )
}
