//! The session machine against a model of PostgreSQL.
//!
//! [`FakePg`] answers the protocol as PostgreSQL does in the ways that matter to pooling:
//! simple queries, extended batches (an error skips to Sync), pipelines of Syncs,
//! Flush, COPY IN (ignoring Sync and Flush) and COPY OUT, FunctionCall, named statements
//! and portals, transaction blocks, implicit transactions of unsynced batches, and
//! asynchronous NoticeResponse, ParameterStatus and NotificationResponse.
//!
//! The oracle: a client's scripts run through the machine over a small pool of fake
//! servers, shared with other clients, must show the client exactly the bytes the same
//! scripts get from one fake server of its own — whatever the interleaving, whichever
//! servers it is given, wherever its bytes are cut. And every time the machine releases
//! a server, that server must be idle in the model: every message read, no answer
//! unsent, no COPY, no skip to Sync, no transaction, implicit or explicit.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use proptest::prelude::*;

use super::prepared::{ServerStatements, StatementRegistry};
use super::*;

// ---- client messages --------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Msg {
    Query(&'static str),
    Parse(String, &'static str),
    Bind(String),
    Execute,
    DescribeStatement(String),
    DescribePortal,
    CloseStatement(String),
    Sync,
    Flush,
    CopyData,
    CopyDone,
    CopyFail,
    FunctionCall,
}

fn put_msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn encode(m: &Msg, out: &mut Vec<u8>) {
    let mut b = Vec::new();
    let t = match m {
        Msg::Query(sql) => {
            cstr(&mut b, sql);
            b'Q'
        }
        Msg::Parse(name, sql) => {
            cstr(&mut b, name);
            cstr(&mut b, sql);
            b.extend_from_slice(&0u16.to_be_bytes());
            b'P'
        }
        Msg::Bind(stmt) => {
            cstr(&mut b, "");
            cstr(&mut b, stmt);
            b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            b'B'
        }
        Msg::Execute => {
            cstr(&mut b, "");
            b.extend_from_slice(&0u32.to_be_bytes());
            b'E'
        }
        Msg::DescribeStatement(name) => {
            b.push(b'S');
            cstr(&mut b, name);
            b'D'
        }
        Msg::DescribePortal => {
            b.push(b'P');
            cstr(&mut b, "");
            b'D'
        }
        Msg::CloseStatement(name) => {
            b.push(b'S');
            cstr(&mut b, name);
            b'C'
        }
        Msg::Sync => b'S',
        Msg::Flush => b'H',
        Msg::CopyData => {
            b.extend_from_slice(b"1\n");
            b'd'
        }
        Msg::CopyDone => b'c',
        Msg::CopyFail => {
            cstr(&mut b, "no more");
            b'f'
        }
        Msg::FunctionCall => {
            b.extend_from_slice(&[0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
            b'F'
        }
    };
    put_msg(out, t, &b);
}

// ---- a model of PostgreSQL --------------------------------------------------------------

/// How a fake server reads a COPY FROM STDIN.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Copy {
    Simple,
    Extended,
}

struct FakePg {
    pid: i32,
    input: Vec<u8>,
    out: Vec<u8>,
    statements: HashMap<String, &'static str>,
    /// Statements whose plan a schema change made stale: a Bind fails with 0A000.
    stale: std::collections::HashSet<String>,
    portal: Option<&'static str>,
    in_block: bool,
    failed: bool,
    skipping: bool,
    copy: Option<Copy>,
    /// Extended-protocol messages read since the last Sync: an implicit transaction.
    unsynced: bool,
}

impl FakePg {
    fn new(pid: i32) -> FakePg {
        FakePg {
            pid,
            input: Vec::new(),
            out: Vec::new(),
            statements: HashMap::new(),
            stale: Default::default(),
            portal: None,
            in_block: false,
            failed: false,
            skipping: false,
            copy: None,
            unsynced: false,
        }
    }

    /// Idle as a pool needs it: nothing unread or unsent, nothing under way.
    fn is_idle(&self) -> bool {
        self.input.is_empty()
            && self.out.is_empty()
            && !self.in_block
            && !self.skipping
            && self.copy.is_none()
            && !self.unsynced
    }

    fn error(&mut self, code: &str) {
        let mut b = Vec::new();
        b.push(b'S');
        cstr(&mut b, "ERROR");
        b.push(b'C');
        cstr(&mut b, code);
        b.push(b'M');
        cstr(&mut b, "failed");
        b.push(0);
        put_msg(&mut self.out, b'E', &b);
        if self.in_block {
            self.failed = true;
        }
    }

    fn ready(&mut self) {
        let status = match (self.in_block, self.failed) {
            (false, _) => b'I',
            (true, false) => b'T',
            (true, true) => b'E',
        };
        put_msg(&mut self.out, b'Z', &[status]);
        if !self.in_block {
            self.portal = None;
        }
    }

    /// Runs a statement of the mini-language; false on error. Only a simple query's
    /// rows come with a RowDescription (an Execute's were described by Describe).
    fn run(&mut self, sql: &'static str, copy: Copy) -> bool {
        if self.failed && sql != "commit" {
            self.error("25P02");
            return false;
        }
        match sql {
            "begin" => {
                self.in_block = true;
                put_msg(&mut self.out, b'C', b"BEGIN\0");
            }
            "commit" => {
                let tag: &[u8] = if self.failed {
                    b"ROLLBACK\0"
                } else {
                    b"COMMIT\0"
                };
                self.in_block = false;
                self.failed = false;
                put_msg(&mut self.out, b'C', tag);
            }
            "fail" => {
                self.error("22012");
                return false;
            }
            "copy in" => {
                put_msg(&mut self.out, b'G', &[0, 0, 0]);
                self.copy = Some(copy);
            }
            "copy out" => {
                put_msg(&mut self.out, b'H', &[0, 0, 0]);
                put_msg(&mut self.out, b'd', b"x\n");
                put_msg(&mut self.out, b'c', b"");
                put_msg(&mut self.out, b'C', b"COPY 1\0");
            }
            "notice" => {
                put_msg(&mut self.out, b'N', b"SNOTICE\0Mhi\0\0");
                put_msg(&mut self.out, b'C', b"DO\0");
            }
            "notify" => {
                let mut b = self.pid.to_be_bytes().to_vec();
                cstr(&mut b, "ch");
                cstr(&mut b, "payload");
                put_msg(&mut self.out, b'A', &b);
                put_msg(&mut self.out, b'C', b"NOTIFY\0");
            }
            "set" => {
                put_msg(&mut self.out, b'S', b"TimeZone\0UTC\0");
                put_msg(&mut self.out, b'C', b"SET\0");
            }
            _ => {
                // "select N"
                if copy == Copy::Simple {
                    put_msg(
                        &mut self.out,
                        b'T',
                        b"\0\x01?column?\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
                    );
                }
                let n = sql.trim_start_matches("select ");
                let mut row = vec![0, 1];
                row.extend_from_slice(&(n.len() as u32).to_be_bytes());
                row.extend_from_slice(n.as_bytes());
                put_msg(&mut self.out, b'D', &row);
                put_msg(&mut self.out, b'C', b"SELECT 1\0");
            }
        }
        true
    }

    /// Reads every whole message it has.
    fn process(&mut self) {
        loop {
            if self.input.len() < 5 {
                return;
            }
            let len = u32::from_be_bytes(self.input[1..5].try_into().unwrap()) as usize + 1;
            if self.input.len() < len {
                return;
            }
            let m: Vec<u8> = self.input.drain(..len).collect();
            self.message(m[0], &m[5..]);
        }
    }

    fn message(&mut self, t: u8, body: &[u8]) {
        let cstr_at = |at: usize| -> String {
            let end = body[at..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8(body[at..at + end].to_vec()).unwrap()
        };
        if let Some(copy) = self.copy {
            match t {
                b'd' => {}
                b'c' => {
                    self.copy = None;
                    put_msg(&mut self.out, b'C', b"COPY 1\0");
                    if copy == Copy::Simple {
                        self.ready();
                    }
                }
                b'S' | b'H' => {}
                _ => {
                    // CopyFail, or any other message, fails the COPY.
                    self.copy = None;
                    self.error("57014");
                    match copy {
                        Copy::Simple => self.ready(),
                        Copy::Extended => self.skipping = true,
                    }
                }
            }
            return;
        }
        if self.skipping {
            if t == b'S' {
                self.skipping = false;
                self.unsynced = false;
                self.ready();
            }
            return;
        }
        let extended = matches!(t, b'P' | b'B' | b'E' | b'D' | b'C' | b'H');
        if extended {
            self.unsynced = true;
        }
        let ok = match t {
            b'Q' => {
                let sql = leak(cstr_at(0));
                if self.run(sql, Copy::Simple) && self.copy.is_some() {
                    return;
                }
                self.ready();
                return;
            }
            b'P' => {
                let name = cstr_at(0);
                let sql = leak(cstr_at(name.len() + 1));
                if sql == "bad" {
                    self.error("42601");
                    false
                } else if !name.is_empty() && self.statements.contains_key(&name) {
                    self.error("42P05");
                    false
                } else {
                    self.stale.remove(&name);
                    self.statements.insert(name, sql);
                    put_msg(&mut self.out, b'1', b"");
                    true
                }
            }
            b'B' => {
                let portal = cstr_at(0);
                let stmt = cstr_at(portal.len() + 1);
                match self.statements.get(&stmt) {
                    Some(_) if self.stale.contains(&stmt) => {
                        self.error("0A000");
                        false
                    }
                    Some(sql) => {
                        self.portal = Some(sql);
                        put_msg(&mut self.out, b'2', b"");
                        true
                    }
                    None => {
                        self.error("26000");
                        false
                    }
                }
            }
            b'E' => match self.portal {
                Some(sql) => self.run(sql, Copy::Extended),
                None => {
                    self.error("34000");
                    false
                }
            },
            b'D' => {
                let sql = if body[0] == b'S' {
                    self.statements.get(&cstr_at(1)).copied()
                } else {
                    self.portal
                };
                match sql {
                    Some(sql) => {
                        if body[0] == b'S' {
                            put_msg(&mut self.out, b't', &[0, 0]);
                        }
                        if sql.starts_with("select") {
                            put_msg(&mut self.out, b'T', &[0, 0]);
                        } else {
                            put_msg(&mut self.out, b'n', b"");
                        }
                        true
                    }
                    None => {
                        self.error(if body[0] == b'S' { "26000" } else { "34000" });
                        false
                    }
                }
            }
            b'C' => {
                if body[0] == b'S' {
                    self.stale.remove(&cstr_at(1));
                    self.statements.remove(&cstr_at(1));
                } else {
                    self.portal = None;
                }
                put_msg(&mut self.out, b'3', b"");
                true
            }
            b'S' => {
                self.unsynced = false;
                self.ready();
                true
            }
            b'F' => {
                put_msg(&mut self.out, b'V', &[0, 0, 0, 1, b'1']);
                self.ready();
                true
            }
            // Flush; CopyData, CopyDone and CopyFail outside COPY are ignored.
            _ => true,
        };
        if !ok && extended {
            self.skipping = true;
        }
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

// ---- the pool and the clients -----------------------------------------------------------

fn settings(max_prepared: usize) -> Settings {
    Settings {
        mode: PoolMode::Transaction,
        max_prepared_statements: max_prepared,
        max_message_len: 1 << 20,
        inspect_ceiling: 64 * 1024,
        query_timeout: Duration::ZERO,
        idle_transaction_timeout: Duration::ZERO,
        client_idle_timeout: Duration::ZERO,
    }
}

struct Pool {
    servers: Vec<(FakePg, ServerStatements)>,
    idle: Vec<usize>,
    releases: usize,
    next_pid: i32,
}

impl Pool {
    fn new(size: usize) -> Pool {
        let servers: Vec<_> = (0..size)
            .map(|i| (FakePg::new(1000 + i as i32), ServerStatements::default()))
            .collect();
        Pool {
            idle: (0..size).rev().collect(),
            servers,
            releases: 0,
            next_pid: 2000,
        }
    }
}

struct Client {
    machine: Session,
    server: Option<usize>,
    /// Client bytes the machine has not used yet.
    pending: Vec<u8>,
    /// Server bytes the machine has not used yet.
    server_pending: Vec<u8>,
    received: Vec<u8>,
    /// Where to cut the stream of bytes delivered to the machine: every `chunk` bytes.
    chunk: usize,
}

impl Client {
    fn new(
        registry: &Rc<StatementRegistry>,
        pid: i32,
        max_prepared: usize,
        chunk: usize,
    ) -> Client {
        Client {
            machine: Session::new(settings(max_prepared), Some(registry.clone()), pid),
            server: None,
            pending: Vec::new(),
            server_pending: Vec::new(),
            received: Vec::new(),
            chunk,
        }
    }

    /// Feeds the machine what the client sent, `chunk` bytes more at a time (only one
    /// chunk when `one_chunk`, so that the server may answer while a message is still
    /// arriving); false when it waits for a server the pool does not have.
    fn run_client(&mut self, pool: &mut Pool, one_chunk: bool) -> bool {
        let mut offered = self.chunk.min(self.pending.len());
        loop {
            let (used, after) = self
                .machine
                .handle_client(&self.pending[..offered], Instant::now)
                .expect("client input is valid");
            let mut gather = Vec::new();
            let to_server = self
                .machine
                .to_server()
                .bytes(&self.pending, &mut gather)
                .to_vec();
            if !to_server.is_empty() {
                let server = self.server.expect("bytes for a server only when attached");
                pool.servers[server].0.input.extend_from_slice(&to_server);
            }
            let answers = self.machine.to_client().bytes(&[], &mut gather).to_vec();
            self.received.extend_from_slice(&answers);
            self.pending.drain(..used);
            offered -= used;
            match after {
                After::NeedServer => {
                    let Some(server) = pool.idle.pop() else {
                        return false;
                    };
                    let statements = std::mem::take(&mut pool.servers[server].1);
                    let pid = pool.servers[server].0.pid;
                    self.machine.attach(Attachment {
                        statements,
                        backend_pid: pid,
                    });
                    self.server = Some(server);
                }
                After::Release => self.release(pool),
                After::Continue => {
                    if offered == self.pending.len() || one_chunk {
                        return true;
                    }
                    offered = (offered + self.chunk).min(self.pending.len());
                }
                After::Terminate | After::RefuseTransactionBlock => unreachable!(),
            }
        }
    }

    /// Lets the attached server answer, and feeds the answer to the machine in chunks.
    fn run_server(&mut self, pool: &mut Pool) {
        let Some(server) = self.server else {
            return;
        };
        let fake = &mut pool.servers[server].0;
        fake.process();
        self.server_pending.append(&mut fake.out);
        let mut offered = self.chunk.min(self.server_pending.len());
        while self.server.is_some() {
            let (used, after) = self
                .machine
                .handle_server(&self.server_pending[..offered])
                .expect("the model's answers match the pipeline");
            let mut gather = Vec::new();
            let out = self
                .machine
                .to_client()
                .bytes(&self.server_pending, &mut gather)
                .to_vec();
            self.received.extend_from_slice(&out);
            // What pgring sends the server on its own (a batch run again).
            let again = self.machine.to_server().bytes(&[], &mut gather).to_vec();
            pool.servers[server].0.input.extend_from_slice(&again);
            self.server_pending.drain(..used);
            offered -= used;
            if after == After::Release {
                assert!(self.server_pending.is_empty(), "released with bytes unread");
                self.release(pool);
                return;
            }
            let more = (offered + self.chunk).min(self.server_pending.len());
            if more == offered {
                return;
            }
            offered = more;
        }
    }

    fn release(&mut self, pool: &mut Pool) {
        let server = self.server.take().expect("released while attached");
        // What was sent and not yet read must leave it idle too, once read.
        pool.servers[server].0.process();
        let fake = &pool.servers[server].0;
        assert!(
            fake.is_idle(),
            "released a server that is not idle: input {:?}, out {:?}, block {}, skipping {}, copy {:?}, unsynced {}",
            fake.input,
            fake.out,
            fake.in_block,
            fake.skipping,
            fake.copy,
            fake.unsynced
        );
        pool.servers[server].1 = self.machine.detach();
        pool.idle.push(server);
        pool.releases += 1;
    }

    /// The client leaves: a quiet server goes back, any other is closed and replaced.
    fn leave(&mut self, pool: &mut Pool) {
        let Some(server) = self.server else {
            return;
        };
        if self.machine.is_quiet() && self.server_pending.is_empty() {
            self.release(pool);
        } else {
            self.server = None;
            self.machine.detach();
            pool.next_pid += 1;
            pool.servers[server] = (FakePg::new(pool.next_pid), ServerStatements::default());
            pool.idle.push(server);
        }
    }
}

/// What one fake server of its own shows a client for `units`.
fn direct(units: &[Vec<Msg>], pid: i32) -> Vec<u8> {
    let mut pg = FakePg::new(pid);
    for unit in units {
        for m in unit {
            encode(m, &mut pg.input);
        }
        pg.process();
    }
    pg.out
}

/// Runs every client's units through one pool in the order `schedule` picks clients
/// (each pick sends the client's next unit, or lets its server answer), then drains.
fn pooled(
    clients_units: &[Vec<Vec<Msg>>],
    pool_size: usize,
    max_prepared: usize,
    chunk: usize,
    schedule: &[(usize, bool)],
) -> (Vec<Vec<u8>>, usize) {
    let registry = Rc::new(StatementRegistry::default());
    let mut pool = Pool::new(pool_size);
    let mut clients: Vec<Client> = (0..clients_units.len())
        .map(|i| Client::new(&registry, 1 + i as i32, max_prepared, chunk))
        .collect();
    let mut next_unit = vec![0; clients.len()];
    let step = |c: usize,
                send: bool,
                one_chunk: bool,
                clients: &mut Vec<Client>,
                pool: &mut Pool,
                next_unit: &mut Vec<usize>| {
        if send && next_unit[c] < clients_units[c].len() {
            for m in &clients_units[c][next_unit[c]] {
                encode(m, &mut clients[c].pending);
            }
            next_unit[c] += 1;
        }
        clients[c].run_client(pool, one_chunk);
        clients[c].run_server(pool);
        clients[c].run_client(pool, one_chunk);
    };
    for &(c, send) in schedule {
        step(
            c % clients.len(),
            send,
            true,
            &mut clients,
            &mut pool,
            &mut next_unit,
        );
    }
    // Drain: everyone sends the rest and is answered; a client whose script ends in a
    // transaction leaves, so that the others get its server.
    for _round in 0..1000 {
        let mut progress = false;
        for c in 0..clients.len() {
            let before = (
                next_unit[c],
                clients[c].pending.len(),
                clients[c].received.len(),
            );
            step(c, true, false, &mut clients, &mut pool, &mut next_unit);
            progress |= before
                != (
                    next_unit[c],
                    clients[c].pending.len(),
                    clients[c].received.len(),
                );
        }
        if !progress {
            let stuck = (0..clients.len()).any(|c| !clients[c].pending.is_empty());
            if !stuck {
                break;
            }
            // Everyone left waits for a server: whoever holds one in a finished script leaves.
            for c in 0..clients.len() {
                if next_unit[c] == clients_units[c].len() && clients[c].pending.is_empty() {
                    clients[c].leave(&mut pool);
                }
            }
        }
    }
    for c in &clients {
        assert!(c.pending.is_empty(), "a client never got a server");
    }
    (
        clients.into_iter().map(|c| c.received).collect(),
        pool.releases,
    )
}

// ---- scripts ----------------------------------------------------------------------------

/// A unit of client traffic, sent in one go. Statement names are fresh per Parse
/// (PostgreSQL refuses a Parse of a name in use, which pgring does not imitate), and
/// Binds name any statement made before, or none.
#[derive(Debug, Clone)]
enum Unit {
    Simple(&'static str),
    Begin,
    Commit,
    Batch {
        named: bool,
        text: &'static str,
        describe: bool,
    },
    Pipeline,
    Reuse(usize),
    Close(usize),
    FlushThenSync,
    CopyInSimple,
    CopyInExtended,
    CopyFail,
    FunctionCall,
    BadParse,
    /// A query and a CopyData behind it, which the server ignores outside COPY: the
    /// server may answer while the CopyData is still arriving.
    StrayCopyData,
}

fn unit_strategy() -> impl Strategy<Value = Unit> {
    let texts = prop_oneof![
        Just("select 1"),
        Just("select 2"),
        Just("fail"),
        Just("notify"),
        Just("copy out"),
        Just("notice"),
        Just("set"),
    ];
    prop_oneof![
        texts.clone().prop_map(Unit::Simple),
        Just(Unit::Begin),
        Just(Unit::Commit),
        (any::<bool>(), texts, any::<bool>()).prop_map(|(named, text, describe)| Unit::Batch {
            named,
            text,
            describe
        }),
        Just(Unit::Pipeline),
        (0..6usize).prop_map(Unit::Reuse),
        (0..6usize).prop_map(Unit::Close),
        Just(Unit::FlushThenSync),
        Just(Unit::CopyInSimple),
        Just(Unit::CopyInExtended),
        Just(Unit::CopyFail),
        Just(Unit::FunctionCall),
        Just(Unit::BadParse),
        Just(Unit::StrayCopyData),
    ]
}

/// The messages of `units` for client `c` (names `c<c>_<n>`).
fn messages(c: usize, units: &[Unit]) -> Vec<Vec<Msg>> {
    let mut names: Vec<String> = Vec::new();
    let fresh = |names: &mut Vec<String>| {
        let name = format!("c{c}_{}", names.len());
        names.push(name.clone());
        name
    };
    let pick = |names: &Vec<String>, i: usize| -> String {
        if names.is_empty() {
            format!("c{c}_none")
        } else {
            names[i % names.len()].clone()
        }
    };
    let mut out = Vec::new();
    for unit in units {
        let msgs = match unit {
            Unit::Simple(t) => vec![Msg::Query(t)],
            Unit::Begin => vec![Msg::Query("begin")],
            Unit::Commit => vec![Msg::Query("commit")],
            Unit::Batch {
                named,
                text,
                describe,
            } => {
                let name = if *named {
                    fresh(&mut names)
                } else {
                    String::new()
                };
                let mut m = vec![Msg::Parse(name.clone(), text)];
                if *describe {
                    m.push(Msg::DescribeStatement(name.clone()));
                }
                m.extend([Msg::Bind(name), Msg::Execute, Msg::Sync]);
                if *text == "copy in" {
                    m.extend([Msg::CopyData, Msg::CopyDone, Msg::Sync]);
                }
                m
            }
            Unit::Pipeline => {
                let a = fresh(&mut names);
                let b = fresh(&mut names);
                vec![
                    Msg::Parse(a.clone(), "select 3"),
                    Msg::Bind(a.clone()),
                    Msg::Execute,
                    Msg::Sync,
                    Msg::Parse(b.clone(), "fail"),
                    Msg::Bind(b),
                    Msg::Execute,
                    Msg::Bind(a.clone()),
                    Msg::Execute,
                    Msg::Sync,
                    Msg::Bind(a),
                    Msg::DescribePortal,
                    Msg::Execute,
                    Msg::Sync,
                ]
            }
            Unit::Reuse(i) => {
                let name = pick(&names, *i);
                vec![
                    Msg::DescribeStatement(name.clone()),
                    Msg::Bind(name),
                    Msg::Execute,
                    Msg::Sync,
                ]
            }
            Unit::Close(i) => vec![Msg::CloseStatement(pick(&names, *i)), Msg::Sync],
            Unit::FlushThenSync => {
                let name = fresh(&mut names);
                out.push(vec![
                    Msg::Parse(name.clone(), "select 4"),
                    Msg::Bind(name),
                    Msg::Execute,
                    Msg::Flush,
                ]);
                vec![Msg::Sync]
            }
            Unit::CopyInSimple => {
                out.push(vec![Msg::Query("copy in")]);
                vec![Msg::CopyData, Msg::CopyData, Msg::CopyDone]
            }
            Unit::CopyInExtended => vec![
                Msg::Parse(String::new(), "copy in"),
                Msg::Bind(String::new()),
                Msg::Execute,
                Msg::Sync,
                Msg::CopyData,
                Msg::CopyDone,
                Msg::Sync,
            ],
            Unit::CopyFail => vec![Msg::Query("copy in"), Msg::CopyData, Msg::CopyFail],
            Unit::FunctionCall => vec![Msg::FunctionCall],
            Unit::StrayCopyData => vec![Msg::Query("select 9"), Msg::CopyData],
            Unit::BadParse => {
                // Not named again: a Bind pipelined behind a failed Parse of an earlier
                // batch gets the Parse's error again from pgring, where PostgreSQL
                // says the statement does not exist (see `prepared`).
                let name = format!("c{c}_bad{}", names.len());
                vec![
                    Msg::Parse(name.clone(), "bad"),
                    Msg::Bind(name),
                    Msg::Execute,
                    Msg::Sync,
                ]
            }
        };
        out.push(msgs);
    }
    out
}

fn check(
    clients: &[Vec<Unit>],
    pool_size: usize,
    max_prepared: usize,
    chunk: usize,
    schedule: &[(usize, bool)],
) -> usize {
    let scripts: Vec<Vec<Vec<Msg>>> = clients
        .iter()
        .enumerate()
        .map(|(c, u)| messages(c, u))
        .collect();
    let (received, releases) = pooled(&scripts, pool_size, max_prepared, chunk, schedule);
    for (c, got) in received.iter().enumerate() {
        let want = direct(&scripts[c], 1 + c as i32);
        assert_eq!(
            tags(got),
            tags(&want),
            "client {c}'s answers differ from a server of its own\nscripts: {:?}",
            scripts[c]
        );
        if got != &want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b);
            panic!(
                "client {c}: same tags, different bytes from byte {at:?}\nscripts: {:?}",
                scripts[c]
            );
        }
    }
    releases
}

/// The tags of a message stream, for readable failures.
fn tags(stream: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while pos + 5 <= stream.len() {
        out.push(stream[pos] as char);
        pos += 1 + u32::from_be_bytes(stream[pos + 1..pos + 5].try_into().unwrap()) as usize;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Several clients over a pool smaller than they are: each sees what a server of its
    /// own would show it, and every release leaves an idle server behind.
    #[test]
    fn clients_over_a_small_pool_see_what_a_server_of_their_own_shows(
        clients in prop::collection::vec(prop::collection::vec(unit_strategy(), 1..12), 1..4),
        pool_size in 1..3usize,
        max_prepared in prop_oneof![Just(1usize), Just(2), Just(200)],
        chunk in prop_oneof![Just(1usize), Just(3), Just(7), Just(64), Just(1 << 20)],
        schedule in prop::collection::vec((0..3usize, any::<bool>()), 0..80),
    ) {
        check(&clients, pool_size, max_prepared, chunk, &schedule);
    }
}

/// A fixed exchange of every kind, cut into pieces of every size from one byte up: the
/// client sees the same bytes and the server is released as often.
#[test]
fn every_exchange_cut_at_every_offset_gives_the_same_result() {
    let units = vec![
        Unit::Simple("select 1"),
        Unit::Batch {
            named: true,
            text: "select 2",
            describe: true,
        },
        Unit::Begin,
        Unit::Simple("fail"),
        Unit::Commit,
        Unit::Pipeline,
        Unit::Reuse(0),
        Unit::Close(0),
        Unit::Reuse(0),
        Unit::FlushThenSync,
        Unit::CopyInSimple,
        Unit::CopyInExtended,
        Unit::CopyFail,
        Unit::FunctionCall,
        Unit::StrayCopyData,
        Unit::Simple("notify"),
        Unit::Simple("set"),
        Unit::BadParse,
    ];
    let whole = check(std::slice::from_ref(&units), 1, 200, 1 << 20, &[]);
    for chunk in 1..200 {
        let releases = check(std::slice::from_ref(&units), 1, 200, chunk, &[]);
        assert_eq!(releases, whole, "cut every {chunk} bytes");
    }
}

/// Half a message keeps the server: a Query followed by the first bytes of a CopyData,
/// answered; no release until the CopyData is whole.
#[test]
fn half_a_message_keeps_the_server_until_it_is_whole() {
    let registry = Rc::new(StatementRegistry::default());
    let mut pool = Pool::new(1);
    let mut a = Client::new(&registry, 1, 200, 1 << 20);
    encode(&Msg::Query("select 1"), &mut a.pending);
    let mut copy_data = Vec::new();
    put_msg(&mut copy_data, b'd', &[b'x'; 1000]);
    a.pending.extend_from_slice(&copy_data[..10]);
    a.run_client(&mut pool, false);
    a.run_server(&mut pool);
    assert_eq!(tags(&a.received), "TDCZ");
    assert!(a.server.is_some(), "released with half a message sent");
    assert!(pool.idle.is_empty());
    assert_eq!(a.machine.poll_timeout(Instant::now), None);
    // The rest of it arrives: the server is free again.
    a.pending.extend_from_slice(&copy_data[10..]);
    a.run_client(&mut pool, false);
    assert!(a.server.is_none());
    assert_eq!(pool.idle.len(), 1);
}

/// While a message is unfinished with nothing owed, idle_transaction_timeout applies.
#[test]
fn an_unfinished_message_is_under_idle_transaction_timeout() {
    let registry = Rc::new(StatementRegistry::default());
    let mut s = settings(200);
    s.idle_transaction_timeout = Duration::from_secs(3);
    let mut m = Session::new(s, Some(registry), 1);
    m.attach(Attachment {
        statements: ServerStatements::default(),
        backend_pid: 9,
    });
    let mut bytes = Vec::new();
    put_msg(&mut bytes, b'd', &[0; 100]);
    let (used, after) = m.handle_client(&bytes[..20], Instant::now).unwrap();
    assert_eq!((used, after), (20, After::Continue));
    let now = Instant::now();
    assert_eq!(m.poll_timeout(|| now), Some(Duration::from_secs(3)));
    assert_eq!(
        m.handle_timeout(now + Duration::from_secs(3)),
        Some(Timeout::IdleTransaction)
    );
}

/// A Sync amid COPY data: with statements tracked, the session ends with a clear error
/// instead of guessing how many answers are owed.
#[test]
fn a_sync_amid_copy_data_is_refused_when_statements_are_tracked() {
    let registry = Rc::new(StatementRegistry::default());
    let mut pool = Pool::new(1);
    let mut a = Client::new(&registry, 1, 200, 1 << 20);
    encode(&Msg::Query("copy in"), &mut a.pending);
    a.run_client(&mut pool, false);
    a.run_server(&mut pool);
    for m in [Msg::CopyData, Msg::Sync] {
        encode(&m, &mut a.pending);
    }
    let err = a
        .machine
        .handle_client(&a.pending, Instant::now)
        .unwrap_err();
    assert_eq!(err, SessionFault::SyncInCopyData);
}

/// With tracking off, the same pins the server instead: never released, never reused.
#[test]
fn a_sync_amid_copy_data_pins_the_server_when_statements_are_not_tracked() {
    let mut pool = Pool::new(1);
    let registry = Rc::new(StatementRegistry::default());
    let mut a = Client::new(&registry, 1, 0, 1 << 20);
    encode(&Msg::Query("copy in"), &mut a.pending);
    a.run_client(&mut pool, false);
    a.run_server(&mut pool);
    for m in [Msg::CopyData, Msg::Sync, Msg::CopyDone] {
        encode(&m, &mut a.pending);
    }
    a.run_client(&mut pool, false);
    a.run_server(&mut pool);
    assert_eq!(tags(&a.received), "GCZ");
    assert!(a.server.is_some());
    assert!(!a.machine.is_quiet());
}

/// Statement names and texts: one server-side statement per text, shared by clients,
/// and the counters PgBouncer reports.
#[test]
fn clients_preparing_the_same_text_share_one_server_statement() {
    let registry = Rc::new(StatementRegistry::default());
    let mut pool = Pool::new(1);
    let mut a = Client::new(&registry, 1, 200, 1 << 20);
    let mut b = Client::new(&registry, 2, 200, 1 << 20);
    for (client, name) in [(&mut a, "a1"), (&mut b, "b1")] {
        for m in [
            Msg::Parse(name.into(), "select 5"),
            Msg::Bind(name.into()),
            Msg::Execute,
            Msg::Sync,
        ] {
            encode(&m, &mut client.pending);
        }
        client.run_client(&mut pool, false);
        client.run_server(&mut pool);
        assert_eq!(tags(&client.received), "12DCZ");
    }
    assert_eq!(
        pool.servers[0].0.statements.len(),
        1,
        "{:?}",
        pool.servers[0].0.statements
    );
    assert_eq!(registry.live(), 1);
    assert_eq!(registry.counts.client_parses.get(), 2);
    assert_eq!(registry.counts.server_parses.get(), 1);
    assert_eq!(registry.counts.binds.get(), 2);
}

/// Past max_prepared_statements the least recently used statement is closed on the
/// server, and prepared again when it is needed.
#[test]
fn statements_past_the_limit_are_evicted_and_prepared_again() {
    let registry = Rc::new(StatementRegistry::default());
    let mut pool = Pool::new(1);
    let mut a = Client::new(&registry, 1, 2, 1 << 20);
    let texts = ["select 1", "select 2", "select 3"];
    for round in 0..3 {
        for (i, text) in texts.iter().enumerate() {
            let name = format!("s{i}");
            if round == 0 {
                encode(&Msg::Parse(name.clone(), text), &mut a.pending);
            }
            for m in [Msg::Bind(name), Msg::Execute, Msg::Sync] {
                encode(&m, &mut a.pending);
            }
            a.run_client(&mut pool, false);
            a.run_server(&mut pool);
            assert!(pool.servers[0].0.statements.len() <= 2);
        }
    }
    let mut units = Vec::new();
    for round in 0..3 {
        for (i, text) in texts.iter().enumerate() {
            let name = format!("s{i}");
            let mut unit = Vec::new();
            if round == 0 {
                unit.push(Msg::Parse(name.clone(), text));
            }
            unit.extend([Msg::Bind(name), Msg::Execute, Msg::Sync]);
            units.push(unit);
        }
    }
    assert_eq!(tags(&a.received), tags(&direct(&units, 1)));
    // Three texts cycled through a server holding two: every use after the first round
    // needs a Parse again.
    assert_eq!(registry.counts.server_parses.get(), 9);
}

/// The notifications of the client's own backend carry the process id it was given.
#[test]
fn a_notification_from_the_clients_backend_shows_the_clients_pid() {
    let registry = Rc::new(StatementRegistry::default());
    let mut pool = Pool::new(1);
    let mut a = Client::new(&registry, 77, 200, 1 << 20);
    encode(&Msg::Query("notify"), &mut a.pending);
    a.run_client(&mut pool, false);
    a.run_server(&mut pool);
    assert_eq!(&a.received[5..9], &77i32.to_be_bytes());
}

/// A schema change made the server's plan of a statement stale (PostgreSQL's `cached
/// plan must not change result type`, 0A000): a one-statement batch outside a
/// transaction block is run again on a fresh Parse and the client sees its rows; in a
/// transaction block the error reaches the client, and the next use prepares the
/// statement again.
#[test]
fn a_stale_plan_is_prepared_again_and_the_batch_run_once_more() {
    let registry = Rc::new(StatementRegistry::default());
    let mut pool = Pool::new(1);
    let mut a = Client::new(&registry, 1, 200, 1 << 20);
    let use_it = |a: &mut Client, pool: &mut Pool, units: &[Msg]| {
        a.received.clear();
        for m in units {
            encode(m, &mut a.pending);
        }
        a.run_client(pool, false);
        a.run_server(pool);
        a.run_client(pool, false);
        a.run_server(pool);
        tags(&a.received)
    };
    let batch = [Msg::Bind("s".into()), Msg::Execute, Msg::Sync];
    assert_eq!(
        use_it(
            &mut a,
            &mut pool,
            &[Msg::Parse("s".into(), "select 7"), Msg::Sync]
        ),
        "1Z"
    );
    assert_eq!(use_it(&mut a, &mut pool, &batch), "2DCZ");
    let stale_all = |pool: &mut Pool| {
        let fake = &mut pool.servers[0].0;
        fake.stale = fake.statements.keys().cloned().collect();
    };
    stale_all(&mut pool);
    assert_eq!(use_it(&mut a, &mut pool, &batch), "2DCZ", "run again");
    assert_eq!(use_it(&mut a, &mut pool, &batch), "2DCZ");
    assert!(pool.servers[0].0.stale.is_empty());
    // In a transaction block: the error reaches the client; the next use prepares anew.
    stale_all(&mut pool);
    assert_eq!(use_it(&mut a, &mut pool, &[Msg::Query("begin")]), "CZ");
    assert_eq!(use_it(&mut a, &mut pool, &batch), "EZ");
    assert_eq!(use_it(&mut a, &mut pool, &[Msg::Query("commit")]), "CZ");
    assert_eq!(use_it(&mut a, &mut pool, &batch), "2DCZ");
    // Two batches sent at once: neither is run again (something else is in flight), and
    // both get the error, as from PostgreSQL; the next use is prepared again.
    stale_all(&mut pool);
    let mut two = batch.to_vec();
    two.extend(batch.iter().cloned());
    assert_eq!(use_it(&mut a, &mut pool, &two), "EZEZ");
    assert_eq!(use_it(&mut a, &mut pool, &batch), "2DCZ");
}
