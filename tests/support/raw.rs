//! The wire protocol by hand, for the tests that need to control every byte a client sends
//! (faults, release_rule, prepared): the usual cluster and pgring setup, an md5 login over
//! a raw `std::net::TcpStream`, frontend messages (simple and extended protocol, COPY),
//! and reading backend messages one by one.
//!
//! Include it next to `mod support;` as `#[path = "support/raw.rs"] mod raw;` (it is not
//! declared in `support/mod.rs`, which loadgen's tests include without postgres-protocol).
//!
//! Every socket has a read timeout ([`READ_TIMEOUT`]), so that an answer that never comes
//! fails the test instead of blocking it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Output;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;

use crate::support::{free_port, psql_cmd, PgCluster, Pgring};

pub const USER: &str = "app";
pub const PASSWORD: &str = "apppass";
pub const DB: &str = "app";
/// How long a raw socket waits for an answer before the test calls it a hang.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

// ---- setup ----------------------------------------------------------------------------------

/// A cluster with role `app` (password `apppass`) owning database `app`.
pub fn cluster() -> PgCluster {
    cluster_with(&[])
}

/// Like [`cluster`], with extra `-c name=value` server settings.
pub fn cluster_with(settings: &[(&str, &str)]) -> PgCluster {
    let pg = PgCluster::start_with(settings);
    pg.create_role(USER, PASSWORD, "");
    pg.create_database(DB, USER);
    pg
}

/// pgring in front of `pg` with database `app`, md5 against a userlist holding
/// app/apppass; `pooler_extra` is appended to [pooler], `databases_extra` to [databases].
/// Defaults (each unless `pooler_extra` sets the key itself): 2 shards, transaction
/// pooling, `default_pool_size = 2`.
pub fn pgring(pg: &PgCluster, pooler_extra: &str, databases_extra: &str) -> Pgring {
    // Defaults, unless `pooler_extra` sets the key itself.
    let defaults = [
        ("shards", "2"),
        ("auth_type", "\"md5\""),
        ("pool_mode", "\"transaction\""),
        ("default_pool_size", "2"),
        // Generous: a debug build's SCRAM login to the server is slow on a busy machine.
        ("server_connect_timeout", "10"),
    ];
    let overridden = |key: &str| {
        pooler_extra
            .lines()
            .any(|l| l.split('=').next().is_some_and(|k| k.trim() == key))
    };
    let mut pooler = String::new();
    for (key, value) in defaults {
        if !overridden(key) {
            pooler.push_str(&format!("{key} = {value}\n"));
        }
    }
    pooler.push_str(pooler_extra);
    let config = format!(
        r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = ""
auth_file = "userlist.txt"
{pooler}

[databases]
app = {{ host = "127.0.0.1", port = {pg_port}, dbname = "app" }}
{databases_extra}
"#,
        port = free_port(),
        pg_port = pg.port(),
    );
    Pgring::start(&config, &[("userlist.txt", "\"app\" \"apppass\"\n")])
}

/// psql through pgring (as `app` on `app` unless told otherwise): its output.
pub fn psql_as(port: u16, user: &str, password: &str, db: &str, sql: &str) -> Output {
    psql_cmd(port, user, password, db)
        .args(["-c", sql])
        .output()
        .expect("run psql")
}

/// Runs `sql` with psql as `app` on `app` directly against PostgreSQL (not through
/// pgring) and returns its trimmed stdout; panics with the output on failure.
pub fn app_psql(pg: &PgCluster, sql: &str) -> String {
    let out = psql_as(pg.port(), USER, PASSWORD, DB, sql);
    assert!(out.status.success(), "psql {sql:?} on the server: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// ---- connecting and logging in --------------------------------------------------------------

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to pgring");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// An untagged packet: length word, code, payload.
pub fn untagged(code: i32, payload: &[u8]) -> Vec<u8> {
    let len = i32::try_from(8 + payload.len()).unwrap();
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `name\0value\0 … \0`.
pub fn params_payload(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out.push(0);
    out
}

pub const PROTOCOL_3_0: i32 = 3 << 16;

/// A startup message for protocol 3.0.
pub fn startup(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frontend::startup_message(pairs.iter().copied(), &mut buf).unwrap();
    buf.to_vec()
}

/// Sends a startup message and answers md5/cleartext; returns the socket at its first
/// ReadyForQuery, or the ErrorResponse fields.
pub fn raw_login_with(
    port: u16,
    pairs: &[(&str, &str)],
    password: &str,
) -> Result<TcpStream, HashMap<char, String>> {
    raw_login_keyed(port, pairs, password).map(|(s, _)| s)
}

/// [`raw_login_with`], also returning the process id of the BackendKeyData received.
pub fn raw_login_keyed(
    port: u16,
    pairs: &[(&str, &str)],
    password: &str,
) -> Result<(TcpStream, i32), HashMap<char, String>> {
    let mut process_id = 0;
    let user = pairs
        .iter()
        .find(|(n, _)| *n == "user")
        .map(|(_, v)| *v)
        .unwrap_or("");
    let mut s = connect(port);
    s.write_all(&startup(pairs)).unwrap();
    loop {
        let (tag, body) = read_message(&mut s)
            .expect("read during login")
            .expect("pgring closed during login without an error");
        match tag {
            b'R' => {
                let code = i32::from_be_bytes(body[..4].try_into().unwrap());
                let mut out = BytesMut::new();
                match code {
                    0 => {}
                    3 => frontend::password_message(password.as_bytes(), &mut out).unwrap(),
                    5 => {
                        let salt: [u8; 4] = body[4..8].try_into().unwrap();
                        let hash = postgres_protocol::authentication::md5_hash(
                            user.as_bytes(),
                            password.as_bytes(),
                            salt,
                        );
                        frontend::password_message(hash.as_bytes(), &mut out).unwrap();
                    }
                    other => panic!("raw login: unsupported authentication request {other}"),
                }
                s.write_all(&out).unwrap();
            }
            b'E' => return Err(error_fields(&body)),
            b'K' => process_id = i32::from_be_bytes(body[..4].try_into().unwrap()),
            b'S' | b'N' | b'v' => {}
            b'Z' => return Ok((s, process_id)),
            other => panic!("raw login: unexpected message '{}'", char::from(other)),
        }
    }
}

/// Logs in as app/apppass on app by hand (md5); the socket is at ReadyForQuery.
pub fn raw_login(port: u16) -> TcpStream {
    raw_login_with(port, &[("user", USER), ("database", DB)], PASSWORD)
        .unwrap_or_else(|e| panic!("raw login refused: {e:?}"))
}

/// Sends Terminate and closes the socket.
pub fn terminate(mut s: TcpStream) {
    let mut out = BytesMut::new();
    frontend::terminate(&mut out);
    let _ = s.write_all(&out);
    let _ = s.shutdown(Shutdown::Both);
}

// ---- reading backend messages ---------------------------------------------------------------

/// One backend message: `Ok(Some((tag, body)))`, `Ok(None)` at a clean EOF before a tag.
pub fn read_message(s: &mut TcpStream) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        match s.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            // A signal to the test process (a child exiting): read on.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    assert!((4..1 << 20).contains(&len), "bad length {len} from pgring");
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body)?;
    Ok(Some((header[0], body)))
}

/// Whether a read failed because the socket's read timeout expired.
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The next message, which must come; `what` names the wait in the panic (a read timeout
/// is reported as a hang).
pub fn next_message(s: &mut TcpStream, what: &str) -> (u8, Vec<u8>) {
    match read_message(s) {
        Ok(Some(m)) => m,
        Ok(None) => panic!("{what}: connection closed"),
        Err(e) if is_timeout(&e) => {
            let waited = s.read_timeout().ok().flatten().unwrap_or_default();
            panic!("{what}: no message within {waited:?} (hang)")
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The fields of an ErrorResponse/NoticeResponse body, by field type.
pub fn error_fields(body: &[u8]) -> HashMap<char, String> {
    let mut fields = HashMap::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).expect("NUL-terminated");
        fields.insert(
            char::from(kind),
            String::from_utf8_lossy(&tail[..end]).into_owned(),
        );
        rest = &tail[end + 1..];
    }
    fields
}

/// The SQLSTATE of an ErrorResponse/NoticeResponse body ("" when it has none).
pub fn sqlstate(body: &[u8]) -> String {
    error_fields(body).remove(&'C').unwrap_or_default()
}

/// The columns of a DataRow body, as text (None for NULL).
pub fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = u16::from_be_bytes([body[0], body[1]]);
    let mut pos = 2;
    let mut row = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(body[pos..pos + 4].try_into().unwrap());
        pos += 4;
        if len < 0 {
            row.push(None);
        } else {
            let len = len as usize;
            row.push(Some(
                String::from_utf8_lossy(&body[pos..pos + len]).into_owned(),
            ));
            pos += len;
        }
    }
    row
}

/// Whether the socket is closed by the peer: EOF (or a reset) within READ_TIMEOUT.
pub fn assert_closed(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => panic!(
                "{what}: expected the connection to be closed, got {n} more bytes: {:?}",
                &buf[..n]
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("{what}: expected EOF, got {e}"),
        }
    }
}

/// Reads the next message, which must be an ErrorResponse; returns its fields.
pub fn expect_error(s: &mut TcpStream, what: &str) -> HashMap<char, String> {
    match read_message(s) {
        Ok(Some((b'E', body))) => error_fields(&body),
        Ok(Some((tag, body))) => panic!(
            "{what}: expected an ErrorResponse, got '{}' {:?}",
            char::from(tag),
            String::from_utf8_lossy(&body)
        ),
        Ok(None) => panic!("{what}: connection closed without an ErrorResponse"),
        Err(e) => panic!("{what}: no ErrorResponse: {e}"),
    }
}

/// Reads a FATAL ErrorResponse with SQLSTATE `code`, then EOF; returns the message.
pub fn expect_fatal_and_close(s: &mut TcpStream, code: &str, what: &str) -> String {
    let fields = expect_error(s, what);
    assert_eq!(
        fields.get(&'S').map(String::as_str),
        Some("FATAL"),
        "{what}: {fields:?}"
    );
    assert_eq!(
        fields.get(&'C').map(String::as_str),
        Some(code),
        "{what}: {fields:?}"
    );
    assert_closed(s, what);
    fields.get(&'M').cloned().unwrap_or_default()
}

/// Reads messages until one of type `tag`; panics on an ErrorResponse or a close.
pub fn read_until(s: &mut TcpStream, tag: u8, what: &str) {
    loop {
        match read_message(s) {
            Ok(Some((t, _))) if t == tag => return,
            Ok(Some((b'E', body))) => panic!("{what}: error {:?}", error_fields(&body)),
            Ok(Some(_)) => {}
            other => panic!(
                "{what}: connection ended before '{}': {other:?}",
                tag as char
            ),
        }
    }
}

/// Every message up to and including the next ReadyForQuery.
pub fn read_until_ready(s: &mut TcpStream, what: &str) -> Vec<(u8, Vec<u8>)> {
    let mut messages = Vec::new();
    loop {
        let message = next_message(s, what);
        let done = message.0 == b'Z';
        messages.push(message);
        if done {
            return messages;
        }
    }
}

/// The tags of `messages` as a string, e.g. `"12DCZ"`, for comparing whole sequences.
pub fn tags(messages: &[(u8, Vec<u8>)]) -> String {
    messages.iter().map(|(t, _)| char::from(*t)).collect()
}

/// The first column of every DataRow among `messages`.
pub fn first_column(messages: &[(u8, Vec<u8>)]) -> Vec<Option<String>> {
    messages
        .iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, body)| data_row(body).swap_remove(0))
        .collect()
}

/// The SQLSTATE of every ErrorResponse among `messages`.
pub fn error_codes(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, body)| sqlstate(body))
        .collect()
}

// ---- simple queries -------------------------------------------------------------------------

/// The result of a simple query over a raw socket.
#[derive(Debug)]
pub struct QueryResult {
    /// Every data row, every column as text (None for NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// The first ErrorResponse, if any.
    pub error: Option<HashMap<char, String>>,
    /// The transaction status byte of the final ReadyForQuery.
    pub status: u8,
}

/// Sends a simple Query without waiting for anything.
pub fn send_query(s: &mut TcpStream, sql: &str) {
    let mut out = BytesMut::new();
    frontend::query(sql, &mut out).unwrap();
    s.write_all(&out).unwrap();
}

/// Reads the answer to a simple Query already sent, up to its ReadyForQuery.
pub fn read_query_result(s: &mut TcpStream, sql: &str) -> QueryResult {
    let mut result = QueryResult {
        rows: Vec::new(),
        error: None,
        status: 0,
    };
    loop {
        let (tag, body) = next_message(s, sql);
        match tag {
            b'D' => result.rows.push(data_row(&body)),
            // The first error is the one that matters.
            b'E' if result.error.is_none() => result.error = Some(error_fields(&body)),
            b'Z' => {
                result.status = body[0];
                return result;
            }
            _ => {}
        }
    }
}

/// Sends a simple Query and reads up to its ReadyForQuery.
pub fn simple_query(s: &mut TcpStream, sql: &str) -> QueryResult {
    send_query(s, sql);
    read_query_result(s, sql)
}

/// A single-value query that must succeed; returns the value.
pub fn query_value(s: &mut TcpStream, sql: &str) -> Option<String> {
    let r = simple_query(s, sql);
    assert!(r.error.is_none(), "{sql}: {:?}", r.error);
    assert_eq!(r.rows.len(), 1, "{sql}: {r:?}");
    r.rows[0][0].clone()
}

// ---- frontend messages ----------------------------------------------------------------------

/// A batch of frontend messages, built in order and sent in one write:
/// `Msgs::new().parse("s1", "select 1").sync().send(&mut s)`.
#[derive(Default)]
pub struct Msgs(BytesMut);

impl Msgs {
    pub fn new() -> Msgs {
        Msgs::default()
    }

    /// Query.
    pub fn query(mut self, sql: &str) -> Msgs {
        frontend::query(sql, &mut self.0).unwrap();
        self
    }

    /// Parse of `sql` as statement `name` ("" for the unnamed one), no parameter types.
    pub fn parse(mut self, name: &str, sql: &str) -> Msgs {
        frontend::parse(name, sql, [], &mut self.0).unwrap();
        self
    }

    /// Bind of `statement` to `portal` with text parameters and text results.
    pub fn bind(mut self, portal: &str, statement: &str, params: &[&str]) -> Msgs {
        let mut body = BytesMut::new();
        for name in [portal, statement] {
            body.put_slice(name.as_bytes());
            body.put_u8(0);
        }
        // No parameter format codes: all text.
        body.put_i16(0);
        body.put_i16(i16::try_from(params.len()).unwrap());
        for p in params {
            body.put_i32(i32::try_from(p.len()).unwrap());
            body.put_slice(p.as_bytes());
        }
        // No result format codes: all text.
        body.put_i16(0);
        self.0.put_u8(b'B');
        self.0.put_i32(i32::try_from(4 + body.len()).unwrap());
        self.0.put_slice(&body);
        self
    }

    /// Execute of `portal`, all rows.
    pub fn execute(mut self, portal: &str) -> Msgs {
        frontend::execute(portal, 0, &mut self.0).unwrap();
        self
    }

    /// Describe; `kind` is `b'S'` (statement) or `b'P'` (portal).
    pub fn describe(mut self, kind: u8, name: &str) -> Msgs {
        frontend::describe(kind, name, &mut self.0).unwrap();
        self
    }

    /// Close; `kind` is `b'S'` (statement) or `b'P'` (portal).
    pub fn close(mut self, kind: u8, name: &str) -> Msgs {
        frontend::close(kind, name, &mut self.0).unwrap();
        self
    }

    pub fn sync(mut self) -> Msgs {
        frontend::sync(&mut self.0);
        self
    }

    pub fn flush(mut self) -> Msgs {
        frontend::flush(&mut self.0);
        self
    }

    pub fn copy_data(mut self, data: &[u8]) -> Msgs {
        frontend::CopyData::new(data).unwrap().write(&mut self.0);
        self
    }

    pub fn copy_done(mut self) -> Msgs {
        frontend::copy_done(&mut self.0);
        self
    }

    /// Raw bytes, as they are (a piece of a message, say).
    pub fn raw(mut self, bytes: &[u8]) -> Msgs {
        self.0.put_slice(bytes);
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Writes the whole batch in one write.
    pub fn send(&self, s: &mut TcpStream) {
        s.write_all(&self.0).expect("write to pgring");
    }
}

// ---- tokio-postgres ---------------------------------------------------------------------

/// How long a tokio-postgres login may take: pgring may have to open a server connection
/// first (a SCRAM login in a debug build, on a machine that may be busy).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A tokio-postgres client logged in through pgring as app/apppass on app, its
/// connection driven on a task of its own.
pub async fn tokio_connect(port: u16) -> tokio_postgres::Client {
    let conn_str = format!(
        "host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname={DB} connect_timeout=10"
    );
    let (client, conn) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_postgres::connect(&conn_str, tokio_postgres::NoTls),
    )
    .await
    .expect("connect through pgring: no answer within 30 s")
    .unwrap_or_else(|e| panic!("connect through pgring: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}
