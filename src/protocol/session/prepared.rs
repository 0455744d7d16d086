//! Named prepared statements across the server connections of a pool.
//!
//! In transaction pooling a client's next transaction may run on another server, where
//! the statements it prepared do not exist. pgring therefore never lets a client's
//! statement name reach a server: every named Parse is recorded under the client's name
//! ([`ClientStatements`]) and mapped to one [`Statement`] per distinct query (text and
//! parameter types) in the pool ([`StatementRegistry`]), which has a name of pgring's own
//! (`pgring_<n>`). Each server connection remembers which of those it has prepared
//! ([`ServerStatements`], at most `max_prepared_statements`, least recently used evicted
//! with a Close); a Bind or Describe that needs a statement the server lacks is preceded
//! by a Parse pgring injects. So the same query text from many clients is prepared once
//! per server connection, whatever each client calls it.
//!
//! Nothing here does I/O; the session machine decides when to inject and what to
//! swallow, and the pipeline undoes what the server skipped.
//!
//! One difference from PostgreSQL remains, for clients that pipeline past a failure: a
//! client's name stands for its statement from the moment its Parse is sent, so a Bind
//! sent behind a Parse that then fails, in a later batch, gets the Parse's error again
//! (pgring prepares the statement for it) where PostgreSQL would say that the statement
//! does not exist. Both are errors at the same place.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::tag;

/// What server-side statement names start with. A client name with this prefix that
/// pgring does not know is altered before it reaches the server, so that a client can
/// never name another client's statement.
pub const SERVER_NAME_PREFIX: &str = "pgring_";

/// One distinct query (text and parameter types), as servers of the pool know it.
pub struct Statement {
    pub id: u64,
    /// The server-side name, `pgring_<id>`.
    pub name: Box<str>,
    /// The whole Parse message that prepares it under `name`, ready to inject.
    pub parse: Bytes,
}

impl std::fmt::Debug for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Statement({})", self.name)
    }
}

/// Counters of a pool's prepared-statement traffic (PgBouncer's names).
#[derive(Debug, Default)]
pub struct PreparedCounts {
    /// Named Parse messages from clients.
    pub client_parses: Cell<u64>,
    /// Parse messages sent to servers (a client's, or injected).
    pub server_parses: Cell<u64>,
    /// Bind messages of named statements.
    pub binds: Cell<u64>,
}

/// The distinct statements of one pool, shared by its clients (one thread, no lock).
#[derive(Default)]
pub struct StatementRegistry {
    by_key: std::cell::RefCell<HashMap<Bytes, std::rc::Weak<Statement>>>,
    next_id: Cell<u64>,
    pub counts: PreparedCounts,
}

impl StatementRegistry {
    /// The statement for the Parse body `body` (name, query, parameter types), found or
    /// made. `name_len` is the length of the client's name (without its terminator).
    pub fn intern(&self, body: &[u8], name_len: usize) -> Rc<Statement> {
        let key = &body[name_len + 1..];
        let mut map = self.by_key.borrow_mut();
        if let Some(found) = map.get(key).and_then(std::rc::Weak::upgrade) {
            return found;
        }
        if map.len() >= 64 && map.len().is_power_of_two() {
            // Forget statements nobody holds any more (amortised: at each doubling).
            map.retain(|_, weak| weak.strong_count() > 0);
        }
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let name: Box<str> = format!("{SERVER_NAME_PREFIX}{id}").into();
        let mut parse = BytesMut::with_capacity(5 + name.len() + 1 + key.len());
        parse.put_u8(tag::PARSE);
        parse.put_u32((4 + name.len() + 1 + key.len()) as u32);
        parse.put_slice(name.as_bytes());
        parse.put_u8(0);
        parse.put_slice(key);
        let parse = parse.freeze();
        let key = parse.slice(5 + name.len() + 1..);
        // The registry's key shares the message's bytes; its entry is a Weak, dropped
        // lazily once nobody holds the statement.
        let statement = Rc::new(Statement { id, name, parse });
        map.insert(key, Rc::downgrade(&statement));
        statement
    }

    /// Statements some client or server still holds.
    pub fn live(&self) -> usize {
        self.by_key
            .borrow()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// A client's statements by the names it gave them.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Box<[u8]>, Rc<Statement>>,
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Rc<Statement>> {
        self.by_name.get(name)
    }

    pub fn insert(&mut self, name: &[u8], statement: Rc<Statement>) {
        self.by_name.insert(name.into(), statement);
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Rc<Statement>> {
        self.by_name.remove(name)
    }

    /// Forgets `name` if it still stands for `statement`.
    pub fn remove_if(&mut self, name: &[u8], statement: &Rc<Statement>) {
        if self
            .by_name
            .get(name)
            .is_some_and(|s| Rc::ptr_eq(s, statement))
        {
            self.by_name.remove(name);
        }
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The statements one server connection has prepared (or has been sent a Parse for),
/// with their last use, for least-recently-used eviction. Travels with the connection.
///
/// pgring does not wait for a ParseComplete before relying on a statement, but a Parse
/// the server skips (an error earlier in its batch) or fails never made one, and a
/// Close it skips never removed one. Within one batch (up to the client's next Sync)
/// that is harmless: whatever relies on the statement later in the batch is skipped
/// too. Across batches it is not, so a statement whose Parse belongs to an earlier batch
/// and is not confirmed yet, or whose fate is unknown, is [`Presence::Unsure`]: the next
/// use prepares it again behind a Close, which does the right thing either way (a Close
/// of a statement that does not exist is no error).
#[derive(Debug, Default)]
pub struct ServerStatements {
    /// Allocated at the first statement: most connections of an untracked pool, and
    /// every idle session, keep one pointer.
    inner: Option<Box<Known>>,
}

/// What [`ServerStatements`] knows once it knows anything.
#[derive(Debug, Default)]
struct Known {
    entries: HashMap<u64, Entry>,
    /// Statements that may or may not exist on the server (an eviction not confirmed
    /// yet, or a re-prepare the server skipped), with the operation that made them so.
    unsure: HashMap<u64, u64>,
    /// A use counter: the stamp of the latest use.
    clock: u64,
    /// Uses at or after this stamp are part of the batch in flight (since the last
    /// Sync): their statements are not evicted, as closing a statement also closes the
    /// portals made from it.
    batch_start: u64,
    /// Batches the client has ended with a Sync.
    batch: u64,
    /// Numbers the Parse and Close messages pgring sends, to tell a later one from an
    /// earlier one of the same statement.
    next_op: u64,
    /// The server dropped statements pgring cannot name (SQL `DEALLOCATE`): it must not
    /// be reused.
    poisoned: bool,
}

#[derive(Debug)]
struct Entry {
    statement: Rc<Statement>,
    last_used: u64,
    /// The Parse that prepares it.
    op: u64,
    /// The batch of that Parse, until its ParseComplete is seen.
    pending: Option<u64>,
}

/// What pgring knows of a statement on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Prepared, or being prepared earlier in the same batch: use it.
    Ready,
    /// Not there: prepare it.
    Absent,
    /// Perhaps there: close it, then prepare it.
    Unsure,
}

impl ServerStatements {
    fn known(&mut self) -> &mut Known {
        self.inner.get_or_insert_with(Default::default)
    }

    pub fn presence(&self, statement: &Statement) -> Presence {
        self.inner
            .as_ref()
            .map_or(Presence::Absent, |k| k.presence(statement))
    }

    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |k| k.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks a use of a statement the server has.
    pub fn touch(&mut self, statement: &Statement) {
        if let Some(k) = self.inner.as_mut() {
            k.touch(statement);
        }
    }

    /// A Parse of `statement` goes out: it counts as prepared from now on. Returns the
    /// operation's number, for [`ServerStatements::parse_done`].
    pub fn parse_sent(&mut self, statement: Rc<Statement>) -> u64 {
        self.known().parse_sent(statement)
    }

    /// The server answered the Parse `op` (`ok`), or failed or skipped it. A skipped
    /// Parse that followed a Close of the same statement leaves it unsure again.
    pub fn parse_done(&mut self, statement: &Rc<Statement>, op: u64, ok: bool, after_close: bool) {
        if let Some(k) = self.inner.as_mut() {
            k.parse_done(statement, op, ok, after_close);
        }
    }

    /// The server answered the eviction Close `op` (`ok`), or skipped it (the statement
    /// is still there, unless pgring has prepared it again since).
    pub fn close_done(&mut self, statement: &Rc<Statement>, op: u64, ok: bool) {
        if let Some(k) = self.inner.as_mut() {
            k.close_done(statement, op, ok);
        }
    }

    /// The server's copy of `statement` is not to be used (its plan is stale): the next
    /// use closes and prepares it again.
    pub fn mark_unsure(&mut self, statement: &Statement) {
        self.known().mark_unsure(statement);
    }

    /// A Sync went out: later uses start a new batch.
    pub fn end_batch(&mut self) {
        if let Some(k) = self.inner.as_mut() {
            k.end_batch();
        }
    }

    /// The least recently used statement outside the batch in flight, when the
    /// connection holds `max` or more: closed from now on, with the Close's number.
    pub fn evict_for_one_more(&mut self, max: usize) -> Option<(Rc<Statement>, u64)> {
        self.inner.as_mut()?.evict_for_one_more(max)
    }

    /// The server dropped all its prepared statements (`DISCARD ALL`, `DEALLOCATE ALL`).
    pub fn clear(&mut self) {
        if let Some(k) = self.inner.as_mut() {
            k.clear();
        }
    }

    /// pgring ran `sql` (`server_reset_query`) on the server: what it did to the
    /// statements. `DISCARD ALL` and `DEALLOCATE ALL` drop them all; any other
    /// `DEALLOCATE` drops some pgring cannot name.
    pub fn after_reset_query(&mut self, sql: &str) {
        let words: Vec<String> = sql
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_uppercase)
            .collect();
        let drops_all = words
            .windows(2)
            .any(|w| (w[0] == "DISCARD" || w[0] == "DEALLOCATE") && w[1] == "ALL");
        if drops_all {
            self.clear();
        } else if words.iter().any(|w| w == "DEALLOCATE") {
            self.poison();
        }
    }

    /// The server dropped statements pgring cannot name (SQL `DEALLOCATE`): it must not
    /// be reused.
    pub fn poison(&mut self) {
        self.known().poisoned = true;
    }

    pub fn is_poisoned(&self) -> bool {
        self.inner.as_ref().is_some_and(|k| k.poisoned)
    }
}

impl Known {
    fn presence(&self, statement: &Statement) -> Presence {
        if self.unsure.contains_key(&statement.id) {
            return Presence::Unsure;
        }
        match self.entries.get(&statement.id) {
            None => Presence::Absent,
            Some(Entry {
                pending: Some(batch),
                ..
            }) if *batch != self.batch => Presence::Unsure,
            Some(_) => Presence::Ready,
        }
    }

    /// Marks a use of a statement the server has.
    fn touch(&mut self, statement: &Statement) {
        self.clock += 1;
        if let Some(entry) = self.entries.get_mut(&statement.id) {
            entry.last_used = self.clock;
        }
    }

    /// A Parse of `statement` goes out: it counts as prepared from now on. Returns the
    /// operation's number, for [`ServerStatements::parse_done`].
    fn parse_sent(&mut self, statement: Rc<Statement>) -> u64 {
        self.clock += 1;
        self.next_op += 1;
        let op = self.next_op;
        self.unsure.remove(&statement.id);
        self.entries.insert(
            statement.id,
            Entry {
                statement,
                last_used: self.clock,
                op,
                pending: Some(self.batch),
            },
        );
        op
    }

    /// The server answered the Parse `op` (`ok`), or failed or skipped it. A skipped
    /// Parse that followed a Close of the same statement leaves it unsure again.
    fn parse_done(&mut self, statement: &Rc<Statement>, op: u64, ok: bool, after_close: bool) {
        let Some(entry) = self.entries.get_mut(&statement.id) else {
            return;
        };
        if entry.op != op {
            return;
        }
        if ok {
            entry.pending = None;
            return;
        }
        self.entries.remove(&statement.id);
        if after_close {
            self.unsure.insert(statement.id, op);
        }
    }

    /// A Close of `statement` goes out to make room. Returns the operation's number, for
    /// [`ServerStatements::close_done`].
    fn close_sent(&mut self, statement: &Statement) -> u64 {
        self.next_op += 1;
        let op = self.next_op;
        self.entries.remove(&statement.id);
        self.unsure.insert(statement.id, op);
        op
    }

    /// The server answered the eviction Close `op` (`ok`), or skipped it (the statement
    /// is still there, unless pgring has prepared it again since).
    fn close_done(&mut self, statement: &Rc<Statement>, op: u64, ok: bool) {
        if self.unsure.get(&statement.id) != Some(&op) {
            return;
        }
        self.unsure.remove(&statement.id);
        if !ok && !self.entries.contains_key(&statement.id) {
            self.clock += 1;
            self.entries.insert(
                statement.id,
                Entry {
                    statement: statement.clone(),
                    last_used: 0,
                    op,
                    pending: None,
                },
            );
        }
    }

    /// The server's copy of `statement` is not to be used (its plan is stale): the next
    /// use closes and prepares it again.
    fn mark_unsure(&mut self, statement: &Statement) {
        self.next_op += 1;
        self.entries.remove(&statement.id);
        self.unsure.insert(statement.id, self.next_op);
    }

    /// A Sync went out: later uses start a new batch.
    fn end_batch(&mut self) {
        self.batch += 1;
        self.batch_start = self.clock + 1;
    }

    /// The least recently used statement outside the batch in flight, when the
    /// connection holds `max` or more: closed from now on, with the Close's number.
    fn evict_for_one_more(&mut self, max: usize) -> Option<(Rc<Statement>, u64)> {
        if self.entries.len() < max {
            return None;
        }
        let (_, entry) = self
            .entries
            .iter()
            .filter(|(_, e)| e.last_used < self.batch_start)
            .min_by_key(|(_, e)| e.last_used)?;
        let statement = entry.statement.clone();
        let op = self.close_sent(&statement);
        Some((statement, op))
    }

    /// The server dropped all its prepared statements (`DISCARD ALL`, `DEALLOCATE ALL`).
    fn clear(&mut self) {
        self.entries.clear();
        self.unsure.clear();
    }
}

/// The position of the first NUL in `bytes`.
pub fn cstr_end(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}

/// Appends a ParseComplete or CloseComplete (empty messages) to `out`.
pub fn empty_message(out: &mut BytesMut, tag: u8) {
    out.put_u8(tag);
    out.put_u32(4);
}

/// Appends a Close of a prepared statement.
pub fn close_statement(out: &mut BytesMut, name: &str) {
    out.put_u8(tag::CLOSE);
    out.put_u32((4 + 1 + name.len() + 1) as u32);
    out.put_u8(b'S');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
}

/// Appends a Describe of a prepared statement.
pub fn describe_statement(out: &mut BytesMut, name: &[u8]) {
    out.put_u8(tag::DESCRIBE);
    out.put_u32((4 + 1 + name.len() + 1) as u32);
    out.put_u8(b'S');
    out.put_slice(name);
    out.put_u8(0);
}

/// Appends the head of a Bind with the statement name replaced: tag, length (for a body
/// of `rest_len` bytes after the two names), portal and statement names. The rest of
/// the client's Bind follows unchanged.
pub fn bind_head(out: &mut BytesMut, portal: &[u8], statement: &[u8], rest_len: usize) {
    out.put_u8(tag::BIND);
    out.put_u32((4 + portal.len() + 1 + statement.len() + 1 + rest_len) as u32);
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(statement);
    out.put_u8(0);
}

/// What a client may not name on a server: an unknown name that looks like one of
/// pgring's gets a character no server-side name has, so the server answers "does not
/// exist" for it (with the client's name in sight).
pub fn shielded_unknown_name(name: &[u8]) -> Option<Vec<u8>> {
    if !name.starts_with(SERVER_NAME_PREFIX.as_bytes()) {
        return None;
    }
    let mut altered = name.to_vec();
    altered.push(b'?');
    Some(altered)
}
