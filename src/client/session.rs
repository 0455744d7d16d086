//! The pooling loop of a logged-in client: the shell that runs the session machine.
//!
//! ```text
//!   client bytes ──► protocol::session::Session::handle_client ──► write plan to server
//!                      (NeedServer: attach one first; Release: give it back)
//!   server bytes ──► protocol::session::Session::handle_server ──► write plan to client
//! ```
//!
//! Every protocol decision is the machine's ([`crate::protocol::session`]): what to
//! forward, inject or answer, and when the server may leave. This module does the I/O,
//! the pool's attach and release, the timers, and the end of the session. Invariant: a
//! server connection leaves its client only when the machine says `Release` (quiet, at a
//! message boundary both ways); in every other case (client gone mid-transaction, error,
//! timeout) it is closed, never reused.

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
use crate::protocol::session::{self as machine, After, Attachment};
use crate::protocol::{sqlstate, TxStatus};
use crate::server::ServerConn;
use crate::shard::Shard;

/// What woke the loop.
enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Timeout,
    Shutdown,
}

/// Per-session settings the shell keeps, read once at login.
struct Limits {
    reset_query: String,
    reset_always: bool,
    log_disconnections: bool,
    log_errors: bool,
}

/// The session machine, made at the client's first message: a client that logs in and
/// sits idle keeps only its settings.
enum Machine {
    Waiting(Box<machine::Settings>),
    Running(Box<machine::Session>),
}

impl Machine {
    /// The machine, once it runs (a server is attached only after it asked for one).
    fn get(&mut self) -> &mut machine::Session {
        match self {
            Machine::Running(m) => m,
            Machine::Waiting(_) => unreachable!("the machine runs before a server is attached"),
        }
    }
}

/// The largest client message a session with tracked statements reads whole (a named
/// Parse carries its query text). The buffer grows to it only while such a message is
/// in flight and is given back while the client is idle.
const TRACKED_INSPECT_CEILING: usize = 1024 * 1024;

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
    let mut session = Session::new(shard, &mut conn, login, slot);
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
    machine: Machine,
    /// Boxed: a pointer to move between the pool and the session, and 8 bytes in an
    /// idle session instead of the connection's state.
    server: Option<Box<ServerConn>>,
    /// Where plans that mix input and pgring's own bytes are gathered to be written.
    gather: Vec<u8>,
    shutdown: oneshot::Receiver<()>,
    /// The client's place under `max_client_conn`, given back when the session is dropped.
    _slot: Option<ClientSlot>,
}

impl Session {
    /// Reads the settings the session keeps (a reload applies to later sessions) and
    /// registers for the shard's shutdown notice.
    fn new(
        shard: Rc<Shard>,
        conn: &mut ClientConn,
        login: LoggedIn,
        slot: Option<ClientSlot>,
    ) -> Session {
        let config = shard.config();
        let user_cfg = config.users.get(&login.pool.key.user);
        let mode = login.pool.mode();
        let max_prepared_statements = config.pooler.max_prepared_statements as usize;
        let tracked = mode != PoolMode::Session && max_prepared_statements > 0;
        let inspect_ceiling = if tracked {
            let ceiling = TRACKED_INSPECT_CEILING.min(config.pooler.max_packet_size as usize + 5);
            conn.rbuf.set_ceiling(ceiling.max(super::LOGIN_CEILING));
            ceiling.max(super::LOGIN_CEILING)
        } else {
            super::LOGIN_CEILING
        };
        let settings = machine::Settings {
            mode,
            max_prepared_statements,
            max_message_len: config.pooler.max_packet_size as usize,
            inspect_ceiling,
            client_idle_timeout: user_cfg
                .and_then(|u| u.client_idle_timeout)
                .unwrap_or(config.pooler.client_idle_timeout),
            idle_transaction_timeout: user_cfg
                .and_then(|u| u.idle_transaction_timeout)
                .unwrap_or(config.pooler.idle_transaction_timeout),
            query_timeout: user_cfg
                .and_then(|u| u.query_timeout)
                .unwrap_or(config.pooler.query_timeout),
        };
        let limits = Limits {
            reset_query: config.pooler.server_reset_query.clone(),
            reset_always: config.pooler.server_reset_query_always,
            log_disconnections: config.pooler.log_disconnections,
            log_errors: config.pooler.log_pooler_errors,
        };
        drop(config);
        let (shutdown_tx, shutdown) = oneshot::channel();
        login.cancel.set_shutdown(shutdown_tx);
        Session {
            shard,
            login,
            limits,
            machine: Machine::Waiting(Box::new(settings)),
            server: None,
            gather: Vec::new(),
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
            // 1. Whatever the client sent, as far as the machine takes it.
            if !conn.rbuf.is_empty() {
                if let Some(reason) = self.forward_client(conn).await? {
                    return Ok(reason);
                }
            }

            // 2. Wait for the next event.
            let attached = self.server.is_some();
            if !attached && self.shard.is_shutting_down() {
                return Err(shutting_down());
            }
            if !attached {
                conn.rbuf.release_if_idle();
            }
            let (timeout, read_client) = match &mut self.machine {
                Machine::Running(m) => (m.poll_timeout(Instant::now), !m.backlogged()),
                Machine::Waiting(settings) => {
                    let idle = settings.client_idle_timeout;
                    ((!idle.is_zero()).then_some(idle), true)
                }
            };
            let shutdown = (!attached).then_some(&mut self.shutdown);
            let event = wait(
                conn,
                self.server.as_deref_mut(),
                read_client,
                timeout,
                shutdown,
            )
            .await;
            match event {
                Event::Client(Ok(0)) | Event::Client(Err(_)) => {
                    return Ok("client closed the connection")
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
                Event::Timeout => {
                    let expired = match &self.machine {
                        Machine::Running(m) => m.handle_timeout(Instant::now()),
                        Machine::Waiting(_) => Some(machine::Timeout::ClientIdle),
                    };
                    if let Some(which) = expired {
                        self.drop_server();
                        return Err(SessionError::timeout(which));
                    }
                }
                Event::Shutdown => return Err(shutting_down()),
            }
        }
    }

    /// Runs the client's buffered bytes through the machine and writes its plans;
    /// `Some(reason)` when the client said Terminate.
    async fn forward_client(
        &mut self,
        conn: &mut ClientConn,
    ) -> Result<Option<&'static str>, SessionError> {
        loop {
            if let Machine::Waiting(settings) = &self.machine {
                let settings = (**settings).clone();
                self.machine = Machine::Running(Box::new(machine::Session::new(
                    settings,
                    Some(self.login.pool.statements.clone()),
                    self.login.cancel.key().process_id,
                )));
            }
            let step = self
                .machine
                .get()
                .handle_client(conn.rbuf.data(), Instant::now);
            let (used, after) = match step {
                Ok(step) => step,
                Err(fault) => {
                    self.drop_server();
                    return Err(fault.into());
                }
            };
            log::trace!(
                "client: {} bytes buffered, {used} used, {after:?}, attached={}",
                conn.rbuf.len(),
                self.server.is_some()
            );
            let machine = self.machine.get();
            if !machine.to_server().is_empty() {
                let server = self
                    .server
                    .as_mut()
                    .expect("the machine plans for a server only when attached");
                let bytes = machine
                    .to_server()
                    .bytes(conn.rbuf.data(), &mut self.gather);
                if let Err(e) = server.stream.write_all_flushed(bytes).await {
                    self.drop_server();
                    return Err(SessionError::server_io(e));
                }
            }
            if !machine.to_client().is_empty() {
                // pgring's own answers (a ParseComplete or CloseComplete in their place).
                let mut scratch = Vec::new();
                let bytes = machine.to_client().bytes(&[], &mut scratch).to_vec();
                conn.write_all(&bytes).await?;
            }
            conn.rbuf.consume(used);
            match after {
                After::Continue => return Ok(None),
                After::Terminate => return Ok(Some("client sent Terminate")),
                After::Release => {
                    self.detach();
                    return Ok(None);
                }
                After::NeedServer => {
                    // The common case needs no await: an idle server that already shows
                    // the client's parameters.
                    match self.login.pool.take_ready() {
                        Some(server) if self.login.params.matches(&server.params) => {
                            self.attached(server)
                        }
                        ready => Box::pin(self.attach(ready)).await?,
                    }
                }
                After::RefuseTransactionBlock => unreachable!("only server input refuses"),
            }
        }
    }

    /// Runs what the server sent through the machine and writes it to the client, then
    /// releases the server or refuses a transaction block when the machine says so.
    async fn forward_server(&mut self, conn: &mut ClientConn) -> Result<(), SessionError> {
        let Session {
            server,
            machine,
            login,
            shard,
            gather,
            ..
        } = self;
        let server = server
            .as_deref_mut()
            .expect("called with a server attached");
        let machine = machine.get();
        let (used, after) = match machine.handle_server(server.rbuf.data()) {
            Ok(step) => step,
            Err(fault) => {
                self.drop_server();
                return Err(fault.into());
            }
        };
        let data = server.rbuf.data();
        for &(start, end) in machine.parameter_status() {
            let (name, value) = backend::parse_parameter_status(&data[start..end])
                .map_err(SessionError::server_protocol)?;
            login.params.set(name, value);
            server.params.set(name, value);
        }
        let (readies, idle) = machine.readies();
        shard.queries.set(shard.queries.get() + u64::from(readies));
        shard
            .transactions
            .set(shard.transactions.get() + u64::from(idle));
        log::trace!(
            "server: {} bytes buffered, {used} used, {after:?}",
            data.len()
        );
        let bytes = machine.to_client().bytes(data, gather);
        let result = conn.write_all(bytes).await;
        server.rbuf.consume(used);
        result?;
        if !machine.to_server().is_empty() {
            // A batch the machine runs again (a stale plan): pgring's own bytes only.
            let again = machine.to_server().bytes(&[], gather);
            if let Err(e) = server.stream.write_all_flushed(again).await {
                self.drop_server();
                return Err(SessionError::server_io(e));
            }
        }
        match after {
            After::Release => self.detach(),
            After::RefuseTransactionBlock => {
                return Box::pin(self.refuse_transaction_block(conn)).await
            }
            _ => {}
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
        let more_in_flight =
            self.server.as_ref().is_some_and(|s| !s.rbuf.is_empty()) || self.machine.get().owes();
        if more_in_flight {
            self.drop_server();
            return Err(refusal);
        }
        let mut server = self.server.take().expect("called with a server attached");
        server.statements = self.machine.get().refused();
        self.login.cancel.set_server(None);
        match server.run_internal("ROLLBACK").await {
            Ok(()) => self.login.pool.release(server),
            Err(_) => self.login.pool.discard(server),
        }
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

    /// Takes a server from the pool (unless one is given) and aligns its parameters with
    /// the client's.
    async fn attach(&mut self, ready: Option<Box<ServerConn>>) -> Result<(), SessionError> {
        let mut server = match ready {
            Some(server) => server,
            None => self.login.pool.acquire().await?,
        };
        if let Some(sql) = self.login.params.alignment_sql(&server.params) {
            if let Err(e) = server.run_internal(&sql).await {
                if e.cause == crate::error::Cause::Disconnected {
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
    fn attached(&mut self, mut server: Box<ServerConn>) {
        self.login
            .cancel
            .set_server(Some((server.backend_key, server.address.clone())));
        self.machine.get().attach(Attachment {
            statements: std::mem::take(&mut server.statements),
            backend_pid: server.backend_key.process_id,
        });
        self.server = Some(server);
    }

    /// Gives the attached (quiet) server back to the pool.
    fn detach(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.statements = self.machine.get().detach();
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
            self.machine.get().detach();
            self.login.cancel.set_server(None);
            self.login.pool.discard(server);
        }
    }

    /// At the end of the session: a quiet server is reset and pooled, any other closed.
    async fn finish(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        self.login.cancel.set_server(None);
        let quiet = self.machine.get().is_quiet();
        server.statements = self.machine.get().detach();
        if !quiet {
            self.login.pool.discard(server);
            return;
        }
        let reset = self.login.pool.mode() == PoolMode::Session || self.limits.reset_always;
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
        Ok(()) => {
            server.statements.after_reset_query(&sql);
            pool.release(server)
        }
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

/// Waits for the next event of a session: bytes from the client (unless it is not to
/// be read), from its server (when one is attached), the timeout that applies, or the
/// shard's shutdown notice (when idle). Polled in that order, so that data is never
/// passed over for a timer.
///
/// A hand-written `poll_fn` rather than `async` blocks joined with `or`: this wait sits in
/// the future of every connected client, and each async block keeps its own copy of what
/// it borrows (a few hundred bytes per client in all).
fn wait<'a>(
    conn: &'a mut ClientConn,
    mut server: Option<&'a mut ServerConn>,
    read_client: bool,
    timeout: Option<Duration>,
    mut shutdown: Option<&'a mut oneshot::Receiver<()>>,
) -> impl Future<Output = Event> + 'a {
    let mut timer = timeout.map(glommio::timer::Timer::new);
    futures_lite::future::poll_fn(move |cx| {
        // An idle client keeps no buffer while it waits; one in the middle of a
        // transaction, and its server, keep theirs until the transaction ends.
        if read_client {
            let client_read = match server {
                None => conn.rbuf.poll_fill(cx, &mut conn.stream),
                Some(_) => conn.rbuf.poll_fill_keeping(cx, &mut conn.stream),
            };
            if let Poll::Ready(read) = client_read {
                return Poll::Ready(Event::Client(read));
            }
        }
        if let Some(server) = server.as_deref_mut() {
            if let Poll::Ready(read) = server.rbuf.poll_fill_keeping(cx, &mut server.stream) {
                return Poll::Ready(Event::Server(read));
            }
        }
        if let Some(timer) = &mut timer {
            if Pin::new(timer).poll(cx).is_ready() {
                return Poll::Ready(Event::Timeout);
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

fn shutting_down() -> SessionError {
    SessionError::new(
        Fault::Limit,
        sqlstate::ADMIN_SHUTDOWN,
        "pgring is shutting down",
    )
}
