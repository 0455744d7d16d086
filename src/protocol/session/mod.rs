//! The pooling session as a sans-IO machine: what to forward, inject, swallow and answer,
//! and the one place that decides when a server connection may leave its client.
//!
//! ```text
//!   client bytes ──► Session::handle_client ──► to_server plan (client bytes, injected
//!                                               Parses, rewritten names), answers of
//!                                               pgring's own in to_client
//!   server bytes ──► Session::handle_server ──► to_client plan (server bytes minus the
//!                                               answers to injected messages)
//!   each returns how much input it used and an After: go on, attach a server, release
//!   it, refuse a transaction block (statement mode), or the client said Terminate
//! ```
//!
//! The machine owns no socket, clock or config: the shell (`client::session`) feeds it
//! bytes and the time, writes what the plans say, and attaches or releases servers when
//! told. Plans refer to the input by range, so pass-through traffic is written straight
//! from the read buffer, never copied or re-encoded; only messages pgring rewrites (named
//! statements, notifications of the client's own backend) are built anew.
//!
//! **The release rule.** A server connection changes hands only at a message boundary in
//! both directions, with nothing owed and nothing unread: the [`pipeline::Pipeline`] owes
//! no answer, the last ReadyForQuery said idle, no COPY is under way, neither framer is
//! in the middle of a message, and every server byte given has been used. A client that
//! leaves a message unfinished keeps its server (under `idle_transaction_timeout`) until
//! it finishes the message or the session ends; the server is then closed, never reused.
//! So no client can hand half a message, or an answer still to come, to another.
//!
//! **Prepared statements** (transaction and statement pooling, `max_prepared_statements`
//! above zero): see [`prepared`]. Named statements are renamed to pgring's per-pool
//! statements, prepared on each server just before the Bind or Describe that needs them;
//! the ParseComplete of an injected Parse is swallowed, a client's Parse of a statement
//! the server already has and its Close of a statement are answered by pgring itself, in
//! their place in the answer stream.

pub mod pipeline;
pub mod prepared;
#[cfg(test)]
mod tests;

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};

use self::pipeline::{Desync, Expect, Named, Note, Pipeline, Reply, Seen, MAX_IN_FLIGHT};
use self::prepared::{ClientStatements, Presence, ServerStatements, Statement, StatementRegistry};
use super::framing::{Framer, Step, HEADER_LEN};
use super::{backend, tag, ProtocolError, TxStatus};
use crate::config::PoolMode;

/// What the machine is told once, at the start of a session.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: PoolMode,
    /// Prepared statements kept per server connection; 0 turns tracking off.
    pub max_prepared_statements: usize,
    /// The largest message accepted in either direction (`max_packet_size`).
    pub max_message_len: usize,
    /// The largest client message pgring can hold whole (its read buffer's ceiling): a
    /// named Parse, a Describe or a Close it must read entirely.
    pub inspect_ceiling: usize,
    pub query_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub client_idle_timeout: Duration,
}

/// What the shell does once it has written the plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Wait for more input.
    Continue,
    /// Attach a server ([`Session::attach`]), then give the same input again.
    NeedServer,
    /// Give the server back to its pool ([`Session::detach`]).
    Release,
    /// Statement pooling saw a transaction block open: roll it back on the server and
    /// answer the client with an error ([`Session::refused`]).
    RefuseTransactionBlock,
    /// The client sent Terminate (not forwarded).
    Terminate,
}

/// The timeouts a session is subject to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// A request unanswered for `query_timeout`.
    Query,
    /// A transaction open, or a message left unfinished, with nothing owed.
    IdleTransaction,
    /// The client sent nothing for `client_idle_timeout`.
    ClientIdle,
}

/// Why the machine cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionFault {
    /// The client broke the protocol.
    #[error(transparent)]
    Client(ProtocolError),
    /// A message the client sent that pgring must read whole is larger than it can hold.
    #[error("message of type '{}' is {len} bytes long; pgring reads such messages whole and holds at most {max}", char::from(*tag))]
    TooLongToInspect { tag: u8, len: usize, max: usize },
    /// The server broke the protocol.
    #[error("server sent an invalid message: {0}")]
    Server(ProtocolError),
    /// The server's answers do not match what was sent.
    #[error(transparent)]
    Desync(Desync),
    /// A Sync or Flush amid COPY data, with named statements tracked: pgring cannot tell
    /// which answers are owed.
    #[error("Sync or Flush sent in the middle of COPY data")]
    SyncInCopyData,
}

/// One piece of output: a range of the input, or of the bytes pgring made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Input { start: usize, end: usize },
    Made { start: usize, end: usize },
}

/// The bytes to write to one side, in order. The first piece is kept inline: plain
/// forwarding, one range of the input, needs no allocation.
#[derive(Debug, Default)]
pub struct Plan {
    head: Option<Piece>,
    tail: Vec<Piece>,
    made: BytesMut,
}

/// A place in a [`Plan`] to cut back to.
#[derive(Debug, Clone, Copy)]
struct Mark {
    pieces: usize,
    last_end: usize,
}

fn piece_end(piece: &mut Piece) -> &mut usize {
    match piece {
        Piece::Input { end, .. } | Piece::Made { end, .. } => end,
    }
}

impl Plan {
    fn clear(&mut self) {
        self.head = None;
        self.tail.clear();
        self.made.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    fn last_mut(&mut self) -> Option<&mut Piece> {
        match self.tail.last_mut() {
            Some(last) => Some(last),
            None => self.head.as_mut(),
        }
    }

    fn push(&mut self, piece: Piece) {
        if self.head.is_none() {
            self.head = Some(piece);
        } else {
            self.tail.push(piece);
        }
    }

    fn input(&mut self, start: usize, end: usize) {
        if start == end {
            return;
        }
        if let Some(Piece::Input { end: last_end, .. }) = self.last_mut() {
            if *last_end == start {
                *last_end = end;
                return;
            }
        }
        self.push(Piece::Input { start, end });
    }

    fn make(&mut self, build: impl FnOnce(&mut BytesMut)) {
        let start = self.made.len();
        build(&mut self.made);
        let end = self.made.len();
        if start == end {
            return;
        }
        if let Some(Piece::Made { end: last_end, .. }) = self.last_mut() {
            if *last_end == start {
                *last_end = end;
                return;
            }
        }
        self.push(Piece::Made { start, end });
    }

    fn mark(&mut self) -> Mark {
        let pieces = usize::from(self.head.is_some()) + self.tail.len();
        let last_end = self.last_mut().map_or(0, |p| *piece_end(p));
        Mark { pieces, last_end }
    }

    fn truncate(&mut self, mark: Mark) {
        if mark.pieces == 0 {
            self.head = None;
            self.tail.clear();
            return;
        }
        self.tail.truncate(mark.pieces - 1);
        if let Some(last) = self.last_mut() {
            *piece_end(last) = mark.last_end;
        }
    }

    /// The bytes to write: borrowed from `input` when the plan is one range of it (the
    /// usual case), else gathered into `gather`.
    pub fn bytes<'a>(&'a self, input: &'a [u8], gather: &'a mut Vec<u8>) -> &'a [u8] {
        let Some(head) = self.head else {
            return &[];
        };
        let slice = |piece: Piece| -> &'a [u8] {
            match piece {
                Piece::Input { start, end } => &input[start..end],
                Piece::Made { start, end } => &self.made[start..end],
            }
        };
        if self.tail.is_empty() {
            return slice(head);
        }
        gather.clear();
        gather.extend_from_slice(slice(head));
        for piece in &self.tail {
            gather.extend_from_slice(slice(*piece));
        }
        gather
    }
}

/// Named-statement tracking for one client.
struct Tracking {
    registry: Rc<StatementRegistry>,
    client: ClientStatements,
    max: usize,
}

/// What a server connection brings to the session while attached.
pub struct Attachment {
    /// The statements the server has prepared (they travel with the connection).
    pub statements: ServerStatements,
    /// The backend's process id, whose notifications are shown with the client's.
    pub backend_pid: i32,
}

/// One client's session, sans-IO.
pub struct Session {
    settings: Settings,
    client_framer: Framer,
    server_framer: Framer,
    attached: bool,
    pipeline: Pipeline,
    tracking: Option<Tracking>,
    server_statements: ServerStatements,
    backend_pid: i32,
    /// The process id the client was given in BackendKeyData.
    client_pid: i32,
    /// When the oldest unanswered request was sent (for `query_timeout`).
    query_started: Option<Instant>,
    to_server: Plan,
    to_client: Plan,
    /// Where ParameterStatus bodies are in the latest server input.
    parameter_status: Vec<(usize, usize)>,
    /// ReadyForQuery messages in the latest server input, and how many said idle.
    readies: (u32, u32),
    /// The latest server input was not all used (a message pgring reads whole is
    /// still arriving).
    server_unread: bool,
    /// The deadline set by [`Session::poll_timeout`].
    deadline: Option<(Instant, Timeout)>,
    /// A batch pgring may run again if its statement's plan is stale on the server.
    replay: Replay,
}

/// The largest batch kept for running it again on a stale plan.
const MAX_REPLAY: usize = 8 * 1024;

/// SQLSTATE of `cached plan must not change result type`, among others.
const FEATURE_NOT_SUPPORTED: &[u8] = b"0A000";

/// A batch of one statement (Bind, maybe Describe of the portal, Execute, Sync), sent
/// while nothing else was in flight and no transaction block was open, kept so that a
/// stale plan on the server (PostgreSQL's `cached plan must not change result type`, a
/// schema change behind a statement prepared before it) costs the client nothing: pgring
/// prepares the statement again and runs the batch once more.
#[derive(Debug, Default)]
enum Replay {
    #[default]
    None,
    /// Being recorded, up to its Sync.
    Recording {
        statement: Rc<Statement>,
        bytes: Vec<u8>,
    },
    /// Sent whole; its answer is awaited.
    Sent {
        statement: Rc<Statement>,
        bytes: Vec<u8>,
    },
    /// The server failed its Bind on a stale plan: the error is held back until the
    /// ReadyForQuery, to be dropped if the batch is run again.
    Failed {
        statement: Rc<Statement>,
        bytes: Vec<u8>,
        error: Vec<u8>,
    },
}

impl Session {
    /// A session whose named statements are shared through `registry` (`None`, or a
    /// zero `max_prepared_statements`, or session pooling: no tracking).
    pub fn new(
        settings: Settings,
        registry: Option<Rc<StatementRegistry>>,
        client_pid: i32,
    ) -> Self {
        let tracking = match registry {
            Some(registry)
                if settings.max_prepared_statements > 0 && settings.mode != PoolMode::Session =>
            {
                Some(Tracking {
                    registry,
                    client: ClientStatements::default(),
                    max: settings.max_prepared_statements,
                })
            }
            _ => None,
        };
        Session {
            client_framer: Framer::new(settings.max_message_len),
            server_framer: Framer::new(settings.max_message_len),
            settings,
            attached: false,
            pipeline: Pipeline::default(),
            tracking,
            server_statements: ServerStatements::default(),
            backend_pid: 0,
            client_pid,
            query_started: None,
            to_server: Plan::default(),
            to_client: Plan::default(),
            parameter_status: Vec::new(),
            readies: (0, 0),
            server_unread: false,
            deadline: None,
            replay: Replay::None,
        }
    }

    /// Starts using a server connection.
    pub fn attach(&mut self, attachment: Attachment) {
        debug_assert!(!self.attached);
        self.attached = true;
        self.server_unread = false;
        self.server_framer = Framer::new(self.settings.max_message_len);
        self.server_statements = attachment.statements;
        self.backend_pid = attachment.backend_pid;
    }

    /// Stops using the server connection (released or closed): its statements go back
    /// with it.
    pub fn detach(&mut self) -> ServerStatements {
        self.attached = false;
        self.pipeline.reset();
        self.query_started = None;
        self.replay = Replay::None;
        std::mem::take(&mut self.server_statements)
    }

    /// Statement pooling refused a transaction block: the server was rolled back and
    /// given back, and nothing is owed any more.
    pub fn refused(&mut self) -> ServerStatements {
        self.detach()
    }

    /// What to write to the server after [`Session::handle_client`].
    pub fn to_server(&self) -> &Plan {
        &self.to_server
    }

    /// What to write to the client after either `handle_*`.
    pub fn to_client(&self) -> &Plan {
        &self.to_client
    }

    /// The ParameterStatus bodies of the latest server input, by range.
    pub fn parameter_status(&self) -> &[(usize, usize)] {
        &self.parameter_status
    }

    /// ReadyForQuery messages in the latest server input: (all, idle).
    pub fn readies(&self) -> (u32, u32) {
        self.readies
    }

    /// The pipeline holds so many requests that the client is not read until the
    /// server catches up.
    pub fn backlogged(&self) -> bool {
        self.pipeline.len() >= MAX_IN_FLIGHT
    }

    /// Nothing owed, no transaction, at a boundary both ways: the state in which a
    /// server can be reset and reused (also what session pooling checks at the end).
    pub fn is_quiet(&self) -> bool {
        self.pipeline.is_quiet()
            && self.client_framer.at_boundary()
            && self.server_framer.at_boundary()
    }

    /// Answers are still owed by the server.
    pub fn owes(&self) -> bool {
        self.pipeline.owes()
    }

    fn releasable(&self, server_input_used: bool) -> bool {
        self.attached
            && self.settings.mode != PoolMode::Session
            && server_input_used
            && self.is_quiet()
    }

    /// The timeout that applies now and how long is left of it.
    fn timeout(&self, now: Instant) -> Option<(Duration, Timeout)> {
        let s = &self.settings;
        let client_idle = (!s.client_idle_timeout.is_zero())
            .then_some((s.client_idle_timeout, Timeout::ClientIdle));
        if !self.attached {
            return client_idle;
        }
        if self.pipeline.owes() {
            if s.query_timeout.is_zero() {
                return None;
            }
            let started = self.query_started.unwrap_or(now);
            let left = s
                .query_timeout
                .saturating_sub(now.saturating_duration_since(started))
                .max(Duration::from_millis(1));
            return Some((left, Timeout::Query));
        }
        let holding = self.pipeline.status() != TxStatus::Idle
            || !self.client_framer.at_boundary()
            || self.pipeline.client_in_copy();
        if holding && !s.idle_transaction_timeout.is_zero() {
            return Some((s.idle_transaction_timeout, Timeout::IdleTransaction));
        }
        client_idle
    }

    /// Sets the deadline of the timeout that applies from `now` on and returns how long
    /// the shell's timer should run (`None`: no timeout applies).
    /// `now` is asked for only when a timeout is set.
    pub fn poll_timeout(&mut self, now: impl Fn() -> Instant) -> Option<Duration> {
        let s = &self.settings;
        if s.client_idle_timeout.is_zero()
            && s.idle_transaction_timeout.is_zero()
            && s.query_timeout.is_zero()
        {
            self.deadline = None;
            return None;
        }
        let now = now();
        self.deadline = self.timeout(now).map(|(left, which)| (now + left, which));
        self.deadline
            .map(|(at, _)| at.saturating_duration_since(now))
    }

    /// The shell's timer fired: the timeout that has expired, if any (the session then
    /// ends with its error).
    pub fn handle_timeout(&self, now: Instant) -> Option<Timeout> {
        let (at, which) = self.deadline?;
        (now >= at).then_some(which)
    }

    /// Takes in client bytes: plans what goes to the server (and answers pgring gives
    /// itself), and returns how many bytes were used. A message that must be read whole
    /// and has not fully arrived is left in the input.
    /// `now` is asked for only when `query_timeout` needs the time a request started.
    pub fn handle_client(
        &mut self,
        data: &[u8],
        now: impl Fn() -> Instant,
    ) -> Result<(usize, After), SessionFault> {
        self.to_server.clear();
        self.to_client.clear();
        let mut pos = 0;
        // Only the end of a message left unfinished can make the server free from this
        // side; otherwise it is freed by the server's answers.
        let finishing = !self.client_framer.at_boundary();
        let after = loop {
            if !self.client_framer.at_boundary() {
                match self.client_framer.step(&data[pos..], |_| false) {
                    Ok(Step::Partial { len, .. }) => {
                        self.to_server.input(pos, pos + len);
                        pos += len;
                        continue;
                    }
                    Ok(_) => break After::Continue,
                    Err(e) => return Err(SessionFault::Client(e)),
                }
            }
            if self.backlogged() {
                break After::Continue;
            }
            let Some((msg_tag, total)) = self
                .client_framer
                .header(&data[pos..])
                .map_err(SessionFault::Client)?
            else {
                break After::Continue;
            };
            if msg_tag == tag::TERMINATE {
                break After::Terminate;
            }
            if !self.attached {
                // A server is taken only once the first message can be dealt with, so
                // that none is held while a message pgring reads whole trickles in.
                if self.startable(&data[pos..], msg_tag, total)? {
                    break After::NeedServer;
                }
                break After::Continue;
            }
            let owed_before = self.pipeline.owes();
            let used = self.client_message(&data[pos..], pos, msg_tag, total)?;
            if used == 0 {
                break After::Continue;
            }
            if !owed_before && self.pipeline.owes() && !self.settings.query_timeout.is_zero() {
                self.query_started = Some(now());
            }
            pos += used;
        };
        self.emit_answered();
        if self.tracking.is_some() && self.pipeline.is_uncertain() {
            return Err(SessionFault::SyncInCopyData);
        }
        if after == After::Continue
            && finishing
            && self.client_framer.at_boundary()
            && self.releasable(!self.server_unread)
        {
            return Ok((pos, After::Release));
        }
        Ok((pos, after))
    }

    /// Whether the message at the front of `avail` can be dealt with now: one pgring
    /// reads whole (or, for a Bind, up to its statement name) must have arrived that far.
    fn startable(&self, avail: &[u8], msg_tag: u8, total: usize) -> Result<bool, SessionFault> {
        let tracked = self.tracking.is_some() && !self.pipeline.is_skipping();
        let whole_needed = match msg_tag {
            tag::PARSE | tag::DESCRIBE | tag::CLOSE if tracked => true,
            tag::BIND if tracked => {
                let body = &avail[HEADER_LEN..avail.len().min(total)];
                let names = prepared::cstr_end(body)
                    .and_then(|end| prepared::cstr_end(&body[end + 1..]))
                    .is_some();
                return Ok(names || avail.len() >= total.min(self.settings.inspect_ceiling));
            }
            tag::DESCRIBE => return Ok(avail.len() > HEADER_LEN || total == HEADER_LEN),
            _ => false,
        };
        if !whole_needed {
            return Ok(true);
        }
        if total > self.settings.inspect_ceiling {
            return Err(SessionFault::TooLongToInspect {
                tag: msg_tag,
                len: total,
                max: self.settings.inspect_ceiling,
            });
        }
        Ok(avail.len() >= total)
    }

    /// Plans one client message at the front of `avail` (at `pos` in the input); returns
    /// the bytes used, 0 to wait for more.
    fn client_message(
        &mut self,
        avail: &[u8],
        pos: usize,
        msg_tag: u8,
        total: usize,
    ) -> Result<usize, SessionFault> {
        // A message pgring reads whole (or up to a name) waits until it is there.
        if !self.startable(avail, msg_tag, total)? {
            return Ok(0);
        }
        let tracked = self.tracking.is_some() && !self.pipeline.is_skipping();
        let whole = avail.len() >= total;
        match msg_tag {
            tag::PARSE if tracked => {
                self.client_parse(&avail[..total], pos)?;
                self.replay_follow(msg_tag, None);
                return Ok(total);
            }
            tag::BIND if tracked => return self.client_bind(avail, pos, total),
            tag::DESCRIBE | tag::CLOSE if tracked => {
                self.client_describe_or_close(&avail[..total], pos)?;
                self.replay_follow(msg_tag, Some(&avail[..total]));
                return Ok(total);
            }
            tag::DESCRIBE if !self.pipeline.is_skipping() => {
                // `startable` waited for the type byte unless the message has none.
                let Some(&kind) = avail.get(HEADER_LEN) else {
                    return Err(malformed(msg_tag, "no Describe type"));
                };
                self.pipeline.push(if kind == b'S' {
                    Expect::DescribeStatement
                } else {
                    Expect::DescribePortal
                });
            }
            tag::PARSE if !self.pipeline.is_skipping() => self.pipeline.push(Expect::Parse {
                reply: Reply::Forward,
                note: Note::None,
                named: None,
            }),
            tag::CLOSE if !self.pipeline.is_skipping() => self.pipeline.push(Expect::Close {
                reply: Reply::Forward,
                note: Note::None,
                named: None,
            }),
            _ => {
                self.pipeline.on_client_tag(msg_tag);
                if msg_tag == tag::SYNC {
                    self.server_statements.end_batch();
                }
            }
        }
        if !matches!(self.replay, Replay::None) {
            self.replay_follow(msg_tag, whole.then(|| &avail[..total]));
        }
        Ok(self.forward_client(avail, pos, total))
    }

    /// Plans the message at `pos` for the server as it is, streaming what has not
    /// arrived yet.
    fn forward_client(&mut self, avail: &[u8], pos: usize, total: usize) -> usize {
        self.forward_client_from(avail, pos, 0, total)
    }

    /// Plans the message at `pos` for the server from byte `from` of it on.
    fn forward_client_from(
        &mut self,
        avail: &[u8],
        pos: usize,
        from: usize,
        total: usize,
    ) -> usize {
        let here = avail.len().min(total);
        self.to_server.input(pos + from, pos + here);
        if here < total {
            self.client_framer.stream_rest(total - here);
            return avail.len();
        }
        total
    }

    fn client_parse(&mut self, message: &[u8], pos: usize) -> Result<(), SessionFault> {
        let body = &message[HEADER_LEN..];
        let name_end =
            prepared::cstr_end(body).ok_or(malformed(tag::PARSE, "no statement name"))?;
        if prepared::cstr_end(&body[name_end + 1..]).is_none() {
            return Err(malformed(tag::PARSE, "no query string"));
        }
        if name_end == 0 {
            self.pipeline.push(Expect::Parse {
                reply: Reply::Forward,
                note: Note::None,
                named: None,
            });
            self.to_server.input(pos, pos + message.len());
            return Ok(());
        }
        let tracking = self.tracking.as_mut().expect("tracked");
        bump(&tracking.registry.counts.client_parses);
        let statement = tracking.registry.intern(body, name_end);
        let name = &body[..name_end];
        tracking.client.insert(name, statement.clone());
        let named = Some(Box::new(Named {
            name: name.into(),
            statement: statement.clone(),
        }));
        match self.server_statements.presence(&statement) {
            Presence::Ready => {
                self.server_statements.touch(&statement);
                self.pipeline.push(Expect::Parse {
                    reply: Reply::Answer,
                    note: Note::None,
                    named,
                });
            }
            presence => self.prepare_on_server(statement, Reply::Forward, named, presence),
        }
        Ok(())
    }

    /// Sends the server a Parse for `statement` (evicting the least recently used one
    /// first when the server is full, and behind a Close of the statement itself when
    /// it may be there already); `reply` says whether the client sees its answer.
    fn prepare_on_server(
        &mut self,
        statement: Rc<Statement>,
        reply: Reply,
        named: Option<Box<Named>>,
        presence: Presence,
    ) {
        let tracking = self.tracking.as_ref().expect("tracked");
        bump(&tracking.registry.counts.server_parses);
        if let Some((victim, op)) = self.server_statements.evict_for_one_more(tracking.max) {
            self.to_server
                .make(|out| prepared::close_statement(out, &victim.name));
            self.pipeline.push(Expect::Close {
                reply: Reply::Swallow,
                note: Note::Evicted {
                    statement: victim,
                    op,
                },
                named: None,
            });
        }
        let after_close = presence == Presence::Unsure;
        if after_close {
            self.to_server
                .make(|out| prepared::close_statement(out, &statement.name));
            self.pipeline.push(Expect::Close {
                reply: Reply::Swallow,
                note: Note::None,
                named: None,
            });
        }
        self.to_server.make(|out| out.put_slice(&statement.parse));
        let op = self.server_statements.parse_sent(statement.clone());
        self.pipeline.push(Expect::Parse {
            reply,
            note: Note::Prepared {
                statement,
                op,
                after_close,
            },
            named,
        });
    }

    /// The server-side name for the client's statement `name`: its statement (prepared
    /// on the server first if need be), or for an unknown name, `None` (sent as it is)
    /// or a shielded spelling.
    fn server_name_for(&mut self, name: &[u8]) -> Option<Box<[u8]>> {
        let tracking = self.tracking.as_ref().expect("tracked");
        let Some(statement) = tracking.client.get(name).cloned() else {
            return prepared::shielded_unknown_name(name).map(Into::into);
        };
        match self.server_statements.presence(&statement) {
            Presence::Ready => self.server_statements.touch(&statement),
            presence => self.prepare_on_server(statement.clone(), Reply::Swallow, None, presence),
        }
        Some(statement.name.as_bytes().into())
    }

    fn client_bind(
        &mut self,
        avail: &[u8],
        pos: usize,
        total: usize,
    ) -> Result<usize, SessionFault> {
        let body = &avail[HEADER_LEN.min(avail.len())..avail.len().min(total)];
        let names = prepared::cstr_end(body).and_then(|portal_end| {
            let rest = &body[portal_end + 1..];
            prepared::cstr_end(rest).map(|stmt_end| (portal_end, portal_end + 1 + stmt_end))
        });
        let Some((portal_end, stmt_end)) = names else {
            if avail.len() >= total {
                return Err(malformed(tag::BIND, "no portal or statement name"));
            }
            if avail.len() >= self.settings.inspect_ceiling {
                return Err(SessionFault::TooLongToInspect {
                    tag: tag::BIND,
                    len: avail.len(),
                    max: self.settings.inspect_ceiling,
                });
            }
            return Ok(0);
        };
        let name = &body[portal_end + 1..stmt_end];
        if name.is_empty() {
            self.pipeline.on_client_tag(tag::BIND);
            return Ok(self.forward_client(avail, pos, total));
        }
        let tracking = self.tracking.as_ref().expect("tracked");
        bump(&tracking.registry.counts.binds);
        let statement = tracking.client.get(name).cloned();
        // The batch may be run again on a stale plan if it starts with this Bind while
        // nothing else is in flight, outside a transaction block.
        let replayable = statement.is_some()
            && self.pipeline.is_empty()
            && self.pipeline.status() == TxStatus::Idle
            && avail.len() >= total
            && total <= MAX_REPLAY;
        // A Parse injected for the statement goes before the Bind, and so does its entry.
        let server_name = self.server_name_for(name);
        self.pipeline.on_client_tag(tag::BIND);
        let Some(server_name) = server_name else {
            self.replay = Replay::None;
            return Ok(self.forward_client(avail, pos, total));
        };
        if let Some(statement) = &statement {
            self.pipeline.bound(statement.clone());
        }
        let head = HEADER_LEN + stmt_end + 1;
        let portal = &body[..portal_end];
        self.to_server
            .make(|out| prepared::bind_head(out, portal, &server_name, total - head));
        self.replay = match statement {
            Some(statement) if replayable => {
                let mut bytes = BytesMut::new();
                prepared::bind_head(&mut bytes, portal, &server_name, total - head);
                bytes.put_slice(&avail[head..total]);
                Replay::Recording {
                    statement,
                    bytes: bytes.to_vec(),
                }
            }
            _ => match std::mem::take(&mut self.replay) {
                failed @ Replay::Failed { .. } => failed,
                _ => Replay::None,
            },
        };
        Ok(self.forward_client_from(avail, pos, head, total))
    }

    /// Follows the batch being recorded for a replay with the client's next message
    /// (whole, when it was): Describe of the portal and Execute join it, Sync ends it,
    /// anything else means it will not be replayed.
    fn replay_follow(&mut self, msg_tag: u8, message: Option<&[u8]>) {
        self.replay = match (std::mem::take(&mut self.replay), message) {
            (
                Replay::Recording {
                    statement,
                    mut bytes,
                },
                Some(message),
            ) if bytes.len() + message.len() <= MAX_REPLAY => {
                let joins = msg_tag == tag::EXECUTE
                    || (msg_tag == tag::DESCRIBE && message.get(HEADER_LEN) == Some(&b'P'));
                bytes.extend_from_slice(message);
                if msg_tag == tag::SYNC {
                    Replay::Sent { statement, bytes }
                } else if joins {
                    Replay::Recording { statement, bytes }
                } else {
                    Replay::None
                }
            }
            // The held error still goes to the client, unless the batch can be run again.
            (failed @ Replay::Failed { .. }, _) => failed,
            _ => Replay::None,
        };
    }

    /// Runs a batch again whose statement had a stale plan on this server: the
    /// statement is closed and prepared anew, then the client's batch is sent again.
    fn run_again(&mut self, statement: Rc<Statement>, bytes: Vec<u8>) {
        self.prepare_on_server(statement.clone(), Reply::Swallow, None, Presence::Unsure);
        self.to_server.make(|out| out.put_slice(&bytes));
        let mut pos = 0;
        while pos + HEADER_LEN <= bytes.len() {
            let msg_tag = bytes[pos];
            let len = u32::from_be_bytes([
                bytes[pos + 1],
                bytes[pos + 2],
                bytes[pos + 3],
                bytes[pos + 4],
            ]);
            match msg_tag {
                tag::BIND => {
                    self.pipeline.on_client_tag(tag::BIND);
                    self.pipeline.bound(statement.clone());
                }
                tag::DESCRIBE => self.pipeline.push(Expect::DescribePortal),
                _ => self.pipeline.on_client_tag(msg_tag),
            }
            if msg_tag == tag::SYNC {
                self.server_statements.end_batch();
            }
            pos += 1 + len as usize;
        }
    }

    fn client_describe_or_close(&mut self, message: &[u8], pos: usize) -> Result<(), SessionFault> {
        let msg_tag = message[0];
        let body = &message[HEADER_LEN..];
        let (&kind, rest) = body
            .split_first()
            .ok_or(malformed(msg_tag, "no object type"))?;
        let name_end = prepared::cstr_end(rest).ok_or(malformed(msg_tag, "no name"))?;
        let name = &rest[..name_end];
        if kind != b'S' || name.is_empty() {
            self.pipeline.push(match (msg_tag, kind) {
                (tag::DESCRIBE, b'S') => Expect::DescribeStatement,
                (tag::DESCRIBE, _) => Expect::DescribePortal,
                _ => Expect::Close {
                    reply: Reply::Forward,
                    note: Note::None,
                    named: None,
                },
            });
            self.to_server.input(pos, pos + message.len());
            return Ok(());
        }
        if msg_tag == tag::CLOSE {
            // The server's copy stays for other clients; pgring answers in its place.
            let tracking = self.tracking.as_mut().expect("tracked");
            let named = tracking.client.remove(name).map(|statement| {
                Box::new(Named {
                    name: name.into(),
                    statement,
                })
            });
            self.pipeline.push(Expect::Close {
                reply: Reply::Answer,
                note: Note::None,
                named,
            });
            return Ok(());
        }
        match self.server_name_for(name) {
            Some(server_name) => {
                self.to_server
                    .make(|out| prepared::describe_statement(out, &server_name));
            }
            None => self.to_server.input(pos, pos + message.len()),
        }
        self.pipeline.push(Expect::DescribeStatement);
        Ok(())
    }

    /// Writes the answers pgring gives itself that are now due (everything before them
    /// has been answered).
    #[inline(always)]
    fn emit_answered(&mut self) {
        if self.pipeline.has_unanswered() {
            self.emit_answered_now();
        }
    }

    fn emit_answered_now(&mut self) {
        while let Some(answered) = self.pipeline.pop_answered() {
            let answer = match answered {
                Expect::Parse { .. } => tag::PARSE_COMPLETE,
                _ => CLOSE_COMPLETE,
            };
            self.to_client
                .make(|out| prepared::empty_message(out, answer));
        }
    }

    /// Takes in server bytes: plans what goes to the client, and returns how many bytes
    /// were used (a message pgring reads whole is left until it has fully arrived).
    pub fn handle_server(&mut self, data: &[u8]) -> Result<(usize, After), SessionFault> {
        self.to_client.clear();
        self.to_server.clear();
        self.parameter_status.clear();
        self.readies = (0, 0);
        let mut pos = 0;
        // Where the answer to the latest request starts: what statement pooling cuts
        // back to when it refuses a transaction block.
        let mut answer_start = self.to_client.mark();
        loop {
            self.emit_answered();
            // An error is read whole only when it may be a stale plan's.
            let errors_whole = self.tracking.is_some();
            let step = self
                .server_framer
                .step(&data[pos..], |t| {
                    matches!(
                        t,
                        tag::READY_FOR_QUERY
                            | tag::PARAMETER_STATUS
                            | tag::COMMAND_COMPLETE
                            | NOTIFICATION_RESPONSE
                    ) || (errors_whole && t == tag::ERROR_RESPONSE)
                })
                .map_err(SessionFault::Server)?;
            let (msg_tag, body, len) = match step {
                Step::NeedMore => break,
                Step::Partial { tag: None, len } => {
                    self.to_client.input(pos, pos + len);
                    pos += len;
                    continue;
                }
                Step::Partial {
                    tag: Some(t), len, ..
                } => (t, None, len),
                Step::Message { tag, body, len } => (tag, Some(body), len),
            };
            let status = match (msg_tag, body) {
                (tag::READY_FOR_QUERY, Some(body)) => {
                    Some(backend::parse_ready_for_query(body).map_err(SessionFault::Server)?)
                }
                _ => None,
            };
            let seen = if self.pipeline.is_plain_answer(msg_tag) {
                Seen::Forward
            } else {
                self.pipeline
                    .on_server_tag(msg_tag, status)
                    .map_err(SessionFault::Desync)?
            };
            let mut forward = true;
            match seen {
                Seen::Forward => {}
                Seen::Completed(done) => {
                    if msg_tag == tag::ERROR_RESPONSE {
                        if let (
                            Expect::Bind {
                                statement: Some(statement),
                            },
                            Some(body),
                        ) = (&done, body)
                        {
                            if self.stale_plan(statement, body, &data[pos..pos + len]) {
                                forward = false;
                            }
                        }
                        let skips = Pipeline::error_skips(&done);
                        self.undo(done);
                        if skips {
                            let mut skipped = Vec::new();
                            self.pipeline.skip_to_sync(|e| skipped.push(e));
                            for e in skipped {
                                self.undo(e);
                            }
                        }
                    } else {
                        forward = !matches!(
                            done,
                            Expect::Parse {
                                reply: Reply::Swallow,
                                ..
                            } | Expect::Close {
                                reply: Reply::Swallow,
                                ..
                            }
                        );
                        self.confirm(done);
                    }
                }
                Seen::Ready(status) => {
                    let replay = match self.replay {
                        Replay::Recording { .. } => Replay::None,
                        _ => std::mem::take(&mut self.replay),
                    };
                    if let Replay::Failed {
                        statement,
                        bytes,
                        error,
                    } = replay
                    {
                        if self.pipeline.is_empty() && status == TxStatus::Idle {
                            // Nothing else is in flight: run the batch again, and the
                            // client sees its answer as if nothing had happened.
                            self.run_again(statement, bytes);
                            pos += len;
                            continue;
                        }
                        self.to_client.make(|out| out.put_slice(&error));
                    }
                    self.readies.0 += 1;
                    if status == TxStatus::Idle {
                        self.readies.1 += 1;
                    }
                    if !self.pipeline.owes() {
                        self.query_started = None;
                    }
                    if self.settings.mode == PoolMode::Statement && status != TxStatus::Idle {
                        self.to_client.truncate(answer_start);
                        return Ok((pos + len, After::RefuseTransactionBlock));
                    }
                }
            }
            match (msg_tag, body) {
                (tag::PARAMETER_STATUS, Some(body)) => {
                    let start = pos + HEADER_LEN;
                    self.parameter_status.push((start, start + body.len()));
                }
                (tag::COMMAND_COMPLETE, Some(body)) => self.on_command_complete(body),
                (NOTIFICATION_RESPONSE, Some(body)) => {
                    if let Some(rewritten) = self.own_notification(&data[pos..pos + len], body) {
                        self.to_client.make(|out| out.put_slice(&rewritten));
                        forward = false;
                    }
                }
                _ => {}
            }
            if forward {
                self.to_client.input(pos, pos + len);
            }
            pos += len;
            if msg_tag == tag::READY_FOR_QUERY {
                answer_start = self.to_client.mark();
            }
        }
        self.emit_answered();
        self.server_unread = pos < data.len();
        if self.releasable(!self.server_unread) {
            return Ok((pos, After::Release));
        }
        Ok((pos, After::Continue))
    }

    /// The server did what a message of pgring's asked.
    fn confirm(&mut self, expect: Expect) {
        match expect {
            Expect::Parse {
                note: Note::Prepared { statement, op, .. },
                ..
            } => self
                .server_statements
                .parse_done(&statement, op, true, false),
            Expect::Close {
                note: Note::Evicted { statement, op },
                ..
            } => self.server_statements.close_done(&statement, op, true),
            _ => {}
        }
    }

    /// An ErrorResponse to a Bind of `statement`: when it says the server's plan is
    /// stale (0A000), the server's copy is no longer used, and when the batch can be run
    /// again the error is held back (true: not forwarded).
    fn stale_plan(&mut self, statement: &Rc<Statement>, body: &[u8], message: &[u8]) -> bool {
        let fields = backend::parse_error_response(body);
        if fields.code.as_bytes() != FEATURE_NOT_SUPPORTED {
            return false;
        }
        self.server_statements.mark_unsure(statement);
        match std::mem::take(&mut self.replay) {
            Replay::Sent {
                statement: sent,
                bytes,
            } if Rc::ptr_eq(&sent, statement) => {
                self.replay = Replay::Failed {
                    statement: sent,
                    bytes,
                    error: message.to_vec(),
                };
                true
            }
            _ => false,
        }
    }

    /// Undoes what a message the server failed or skipped would have done to its
    /// prepared statements.
    fn undo(&mut self, expect: Expect) {
        let (note, named, parse) = match expect {
            Expect::Parse { note, named, .. } => (note, named, true),
            Expect::Close { note, named, .. } => (note, named, false),
            _ => return,
        };
        match note {
            Note::Prepared {
                statement,
                op,
                after_close,
            } => self
                .server_statements
                .parse_done(&statement, op, false, after_close),
            Note::Evicted { statement, op } => {
                self.server_statements.close_done(&statement, op, false)
            }
            Note::None => {}
        }
        if let (Some(named), Some(tracking)) = (named, self.tracking.as_mut()) {
            if parse {
                tracking.client.remove_if(&named.name, &named.statement);
            } else {
                let Named { name, statement } = *named;
                tracking.client.insert(&name, statement);
            }
        }
    }

    /// `DISCARD ALL` and `DEALLOCATE ALL` drop every prepared statement of the server
    /// (and so the client's, as it would see them); a `DEALLOCATE` of one name leaves
    /// the server holding statements pgring cannot account for.
    fn on_command_complete(&mut self, body: &[u8]) {
        let Some(tracking) = self.tracking.as_mut() else {
            return;
        };
        let command = body.strip_suffix(&[0]).unwrap_or(body);
        match command {
            b"DISCARD ALL" | b"DEALLOCATE ALL" => {
                self.server_statements.clear();
                tracking.client.clear();
            }
            b"DEALLOCATE" => self.server_statements.poison(),
            _ => {}
        }
    }

    /// A NotificationResponse sent by the client's own backend, shown with the process
    /// id the client was given, as it would see it from PostgreSQL.
    fn own_notification(&self, message: &[u8], body: &[u8]) -> Option<Vec<u8>> {
        let pid = i32::from_be_bytes(body.get(..4)?.try_into().ok()?);
        if pid != self.backend_pid || self.client_pid == 0 {
            return None;
        }
        let mut rewritten = message.to_vec();
        rewritten[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&self.client_pid.to_be_bytes());
        Some(rewritten)
    }
}

const CLOSE_COMPLETE: u8 = b'3';
const NOTIFICATION_RESPONSE: u8 = b'A';

fn malformed(tag: u8, what: &'static str) -> SessionFault {
    SessionFault::Client(ProtocolError::Malformed { tag, what })
}

fn bump(counter: &std::cell::Cell<u64>) {
    counter.set(counter.get() + 1);
}
