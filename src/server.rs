//! Server connections: opening one, logging in to PostgreSQL, and running pgring's own
//! queries on it (parameter alignment, `server_reset_query`, `server_check_query`, and the
//! parameterized `auth_query` through [`ServerConn::query_params`]).
//!
//! Over TCP, unless `server_tls_sslmode = "disable"`, a connection starts with an
//! SSLRequest and a TLS handshake ([`negotiate_tls`]) before the startup message; Unix
//! sockets never use TLS.
//!
//! The login is a loop over the server's Authentication requests; the SCRAM and md5
//! arithmetic lives in [`crate::auth`]. A [`ServerConn`] carries its read buffer and
//! framer with it, so a message split across two reads survives a change of client.

use std::cell::Cell;
use std::io;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;

use crate::auth::md5;
use crate::auth::scram::{ScramClient, ScramCredential};
use crate::buffer::ReadBuf;
use crate::clock::CoarseInstant;
use crate::config::{ServerAddress, TlsMode};
use crate::error::{Fault, SessionError};
use crate::net::{self, Keepalive, Stream};
use crate::protocol::backend::{self, Authentication};
use crate::protocol::framing::{Framer, Step};
use crate::protocol::params::ReportedParams;
use crate::protocol::startup::CancelKey;
use crate::protocol::{frontend, tag, TxStatus};

/// The largest message pgring reads whole from a server during login or its own queries.
const SERVER_INSPECT_CEILING: usize = 1024 * 1024;

/// The secret pgring logs in to PostgreSQL with.
#[derive(Clone)]
pub enum ServerCredential {
    /// Nothing known: only trust (or peer) logins can work.
    None,
    Password(String),
    /// `md5…` as stored by PostgreSQL: enough for md5 logins.
    Md5Secret(String),
    /// Keys recovered from a client's SCRAM proof: enough for SCRAM logins.
    ScramKeys {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
}

impl std::fmt::Debug for ServerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerCredential::None => "None",
            ServerCredential::Password(_) => "Password(<redacted>)",
            ServerCredential::Md5Secret(_) => "Md5Secret(<redacted>)",
            ServerCredential::ScramKeys { .. } => "ScramKeys(<redacted>)",
        })
    }
}

/// Where and as whom a pool's server connections log in.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    pub address: ServerAddress,
    pub dbname: String,
    pub user: String,
    pub startup_parameters: Vec<(String, String)>,
}

/// One logged-in connection to PostgreSQL.
pub struct ServerConn {
    pub stream: Stream,
    pub rbuf: ReadBuf,
    pub framer: Framer,
    /// The backend's own cancel key.
    pub backend_key: CancelKey,
    /// The server's current reported parameters (ParameterStatus).
    pub params: ReportedParams,
    pub created: CoarseInstant,
    pub last_used: Cell<CoarseInstant>,
    /// Where it is, for sending cancel requests.
    pub address: Rc<ServerAddress>,
    /// The named statements pgring has prepared on it (transaction pooling).
    pub statements: crate::protocol::session::prepared::ServerStatements,
}

impl ServerConn {
    /// Runs a simple query of pgring's own and swallows its results, keeping the
    /// parameters the server reports. An ErrorResponse becomes `Err`, after the server
    /// is ready again.
    pub async fn run_internal(&mut self, sql: &str) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        frontend::query(&mut out, sql);
        self.stream
            .write_all_flushed(&out)
            .await
            .map_err(SessionError::server_io)?;
        match self.read_until_ready(|_, _| Ok(())).await? {
            (Some(e), _) => Err(SessionError::from_server(
                &e.code,
                format!("{}: {}", sql_head(sql), e.message),
            )),
            (None, TxStatus::Idle) => Ok(()),
            (None, _) => Err(left_in_transaction(sql)),
        }
    }

    /// Runs one statement of pgring's own with the extended protocol (Parse, Bind,
    /// Execute, Sync on the unnamed statement and portal) and returns its rows as text
    /// columns (`None` = NULL). `params` travel as bound text parameters, never spliced
    /// into `sql`, so a value holding quotes or backslashes is only ever data.
    ///
    /// Bounded: at most `max_rows` rows are kept (a further row makes the call fail, so a
    /// query meant to find one row cannot silently pick one of several), and each row is
    /// within the server read buffer's ceiling. An ErrorResponse becomes `Err` with the
    /// server's SQLSTATE once the server is ready again; so does a server left in a
    /// transaction. On `Err` the caller should not reuse the connection unless it knows
    /// why it failed.
    pub async fn query_params(
        &mut self,
        sql: &str,
        params: &[&str],
        max_rows: usize,
    ) -> Result<Vec<Vec<Option<String>>>, SessionError> {
        let mut out = BytesMut::new();
        let bound: Vec<Option<&str>> = params.iter().map(|p| Some(*p)).collect();
        frontend::parse(&mut out, "", sql);
        frontend::bind_text(&mut out, "", "", &bound);
        // One more than wanted, to tell "exactly max_rows" from "more".
        let fetch = i32::try_from(max_rows.saturating_add(1)).unwrap_or(i32::MAX);
        frontend::execute(&mut out, "", fetch);
        frontend::sync(&mut out);
        self.stream
            .write_all_flushed(&out)
            .await
            .map_err(SessionError::server_io)?;
        let mut rows = Vec::new();
        let mut too_many = false;
        let mut bad_text = false;
        // ParseComplete, BindComplete, CommandComplete, PortalSuspended,
        // EmptyQueryResponse, NoticeResponse: nothing to keep.
        let ended = self
            .read_until_ready(|msg_tag, body| {
                if msg_tag != tag::DATA_ROW {
                    return Ok(());
                }
                let values =
                    backend::parse_data_row(body).map_err(SessionError::server_protocol)?;
                if rows.len() >= max_rows {
                    too_many = true;
                    return Ok(());
                }
                let row = values
                    .into_iter()
                    .map(|value| {
                        value.and_then(|v| match std::str::from_utf8(v) {
                            Ok(text) => Some(text.to_owned()),
                            Err(_) => {
                                bad_text = true;
                                None
                            }
                        })
                    })
                    .collect();
                rows.push(row);
                Ok(())
            })
            .await?;
        let internal = |message: String| {
            SessionError::new(
                Fault::Server,
                crate::protocol::sqlstate::INTERNAL_ERROR,
                message,
            )
        };
        match ended {
            (Some(e), _) => Err(SessionError::from_server(&e.code, e.message)),
            (None, TxStatus::Idle) if too_many => Err(internal(format!(
                "the query returned more than {max_rows} row(s)"
            ))),
            (None, TxStatus::Idle) if bad_text => Err(internal(
                "the query returned a value that is not valid UTF-8".into(),
            )),
            (None, TxStatus::Idle) => Ok(rows),
            (None, _) => Err(left_in_transaction(sql)),
        }
    }

    /// Reads the server's answers to one of pgring's own requests up to ReadyForQuery:
    /// keeps the parameters it reports, remembers its first ErrorResponse, and hands every
    /// other message to `on_message`. Returns that error, if any, and the final status.
    async fn read_until_ready(
        &mut self,
        mut on_message: impl FnMut(u8, &[u8]) -> Result<(), SessionError>,
    ) -> Result<(Option<backend::ErrorFields>, TxStatus), SessionError> {
        let mut error = None;
        loop {
            let (msg_tag, body) = self.read_message().await?;
            match msg_tag {
                tag::PARAMETER_STATUS => {
                    let (name, value) = backend::parse_parameter_status(&body)
                        .map_err(SessionError::server_protocol)?;
                    self.params.set(name, value);
                }
                tag::ERROR_RESPONSE => {
                    error.get_or_insert(backend::parse_error_response(&body));
                }
                tag::READY_FOR_QUERY => {
                    let status = backend::parse_ready_for_query(&body)
                        .map_err(SessionError::server_protocol)?;
                    return Ok((error, status));
                }
                _ => on_message(msg_tag, &body)?,
            }
        }
    }

    /// Reads one whole message (login and internal queries only; the framer's limit and
    /// the buffer's ceiling bound its size).
    async fn read_message(&mut self) -> Result<(u8, Vec<u8>), SessionError> {
        loop {
            match self
                .framer
                .step(self.rbuf.data(), |_| true)
                .map_err(SessionError::server_protocol)?
            {
                Step::Message { tag, body, len } => {
                    let owned = (tag, body.to_vec());
                    self.rbuf.consume(len);
                    return Ok(owned);
                }
                Step::Partial { .. } => unreachable!("inspect is always true here"),
                Step::NeedMore => {}
            }
            let n = self
                .rbuf
                .fill(&mut self.stream)
                .await
                .map_err(SessionError::server_io)?;
            if n == 0 {
                return Err(SessionError::server_closed());
            }
        }
    }
}

/// A statement of pgring's own that ended with the server inside a transaction.
fn left_in_transaction(sql: &str) -> SessionError {
    SessionError::new(
        Fault::Server,
        crate::protocol::sqlstate::INTERNAL_ERROR,
        format!("{} left the server in a transaction", sql_head(sql)),
    )
}

fn sql_head(sql: &str) -> &str {
    sql.split_whitespace().next().unwrap_or("query")
}

/// Settings a connection attempt needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    pub keepalive: Keepalive,
    pub max_message: usize,
    /// `server_tls_sslmode`, and the rustls configuration built for it (`None` when the
    /// mode is `disable`).
    pub tls_mode: TlsMode,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// How the SSLRequest exchange with a server ended.
enum TlsOutcome {
    /// The handshake succeeded: the TLS stream.
    Encrypted(Stream),
    /// The server answered 'N': the plaintext stream, still usable.
    Refused(Stream),
    /// The server answered something else (a pre-7.0 error): the stream is unusable.
    Unexpected(u8),
    /// The handshake failed: why, and the verification failure if that was the cause.
    Failed(io::Error, Option<String>),
}

/// Sends an SSLRequest on `stream` and, on 'S', runs the TLS handshake with `host` as the
/// server name (an IP address when it parses as one).
async fn negotiate_tls(
    mut stream: Stream,
    host: &str,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<TlsOutcome> {
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    stream.write_all(&out).await?;
    // Exactly one byte: nothing after the answer may be read as plaintext.
    let mut answer = [0u8; 1];
    if futures_lite::AsyncReadExt::read(&mut stream, &mut answer).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection after SSLRequest",
        ));
    }
    match answer[0] {
        b'S' => {}
        b'N' => return Ok(TlsOutcome::Refused(stream)),
        other => return Ok(TlsOutcome::Unexpected(other)),
    }
    let name = crate::tls::server_name(host)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    match futures_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
    {
        Ok(tls) => Ok(TlsOutcome::Encrypted(Stream::ServerTls(Box::new(tls)))),
        Err(e) => {
            let why = crate::tls::verification_failure(&e);
            Ok(TlsOutcome::Failed(e, why))
        }
    }
}

/// Opens the transport to `address` and sets up TLS as `server_tls_sslmode` asks: TLS or
/// an error for `require` and above; for `prefer` and `allow`, plaintext when the server
/// refuses TLS or the handshake fails (on a new connection), never after a failed
/// certificate check.
pub async fn open_secured(
    address: &ServerAddress,
    opts: &ConnectOptions,
) -> Result<Stream, SessionError> {
    let stream = open_stream(address, opts)
        .await
        .map_err(|e| SessionError::server_connect(address, e))?;
    let mode = opts.tls_mode;
    let ServerAddress::Tcp { host, .. } = address else {
        return Ok(stream);
    };
    if mode == TlsMode::Disable {
        return Ok(stream);
    }
    let tls_error = |message: String| {
        SessionError::new(
            Fault::Server,
            crate::protocol::sqlstate::CONNECTION_FAILURE,
            message,
        )
    };
    // Only between a reload's config and its TLS setup reaching a cancel request: never
    // plaintext where TLS is required.
    let Some(config) = &opts.tls else {
        if mode.requires_tls() {
            return Err(tls_error(format!(
                "server connection to {}: no server TLS configuration is loaded",
                describe(address)
            )));
        }
        return Ok(stream);
    };
    let outcome = negotiate_tls(stream, host, config)
        .await
        .map_err(|e| SessionError::server_connect(address, e))?;
    let failure = match outcome {
        TlsOutcome::Encrypted(s) => return Ok(s),
        TlsOutcome::Refused(plain) if !mode.requires_tls() => return Ok(plain),
        TlsOutcome::Refused(_) => {
            return Err(tls_error(format!(
                "server {} does not support SSL, and server_tls_sslmode = \"{}\" requires it",
                describe(address),
                mode.keyword()
            )))
        }
        TlsOutcome::Unexpected(byte) => {
            format!("unexpected answer {:?} to SSLRequest", char::from(byte))
        }
        TlsOutcome::Failed(_, Some(why)) => {
            log::warn!(
                "server connection to {} failed TLS verification: {why}",
                describe(address)
            );
            return Err(tls_error(format!(
                "server connection failed TLS verification: {why}"
            )));
        }
        TlsOutcome::Failed(e, None) => format!("TLS handshake failed: {e}"),
    };
    if mode.requires_tls() {
        return Err(tls_error(format!(
            "server connection to {}: {failure}",
            describe(address)
        )));
    }
    log::warn!(
        "server connection to {}: {failure}; server_tls_sslmode = \"{}\", going on in plaintext",
        describe(address),
        mode.keyword()
    );
    open_stream(address, opts)
        .await
        .map_err(|e| SessionError::server_connect(address, e))
}

/// Opens a transport connection to `address`.
pub async fn open_stream(address: &ServerAddress, opts: &ConnectOptions) -> io::Result<Stream> {
    match address {
        ServerAddress::Tcp { host, port } => {
            let addrs: Vec<_> = (host.as_str(), *port).to_socket_addrs()?.collect();
            let mut last_err = io::Error::new(
                io::ErrorKind::NotFound,
                format!("host \"{host}\" has no address"),
            );
            for addr in addrs {
                match net::connect_tcp(addr, opts.connect_timeout, opts.keepalive).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last_err = e,
                }
            }
            Err(last_err)
        }
        ServerAddress::Unix { dir, port } => net::connect_unix(&net::unix_socket_path(dir, *port)),
    }
}

/// Connects and logs in; returns a connection that is ready for queries.
pub async fn connect(
    target: &ServerTarget,
    address: Rc<ServerAddress>,
    credential: &ServerCredential,
    opts: ConnectOptions,
) -> Result<Box<ServerConn>, SessionError> {
    let login = async {
        let stream = open_secured(&target.address, &opts).await?;
        let mut conn = Box::new(ServerConn {
            stream,
            rbuf: ReadBuf::new(crate::buffer::INITIAL_READ_BUF, SERVER_INSPECT_CEILING),
            framer: Framer::new(opts.max_message),
            backend_key: CancelKey {
                process_id: 0,
                secret_key: 0,
            },
            params: ReportedParams::default(),
            created: CoarseInstant::now(),
            last_used: Cell::new(CoarseInstant::now()),
            address,
            statements: Default::default(),
        });
        login(&mut conn, target, credential).await?;
        Ok(conn)
    };
    if opts.connect_timeout.is_zero() {
        login.await
    } else {
        crate::timeout::with_timeout(opts.connect_timeout, login)
            .await
            .unwrap_or_else(|| {
                Err(SessionError::new(
                    Fault::Server,
                    crate::protocol::sqlstate::CONNECTION_FAILURE,
                    format!(
                        "server connection to {} timed out (server_connect_timeout)",
                        describe(&target.address)
                    ),
                ))
            })
    }
}

pub fn describe(address: &ServerAddress) -> String {
    match address {
        ServerAddress::Tcp { host, port } => format!("{host}:{port}"),
        ServerAddress::Unix { dir, port } => {
            net::unix_socket_path(dir, *port).display().to_string()
        }
    }
}

async fn login(
    conn: &mut ServerConn,
    target: &ServerTarget,
    credential: &ServerCredential,
) -> Result<(), SessionError> {
    let mut out = BytesMut::new();
    let mut params: Vec<(&str, &str)> = vec![
        ("user", target.user.as_str()),
        ("database", target.dbname.as_str()),
    ];
    params.extend(
        target
            .startup_parameters
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    frontend::startup_message(&mut out, params);
    conn.stream
        .write_all_flushed(&out)
        .await
        .map_err(SessionError::server_io)?;
    let mut scram: Option<ScramState> = None;
    loop {
        let (msg_tag, body) = conn.read_message().await?;
        out.clear();
        match msg_tag {
            tag::AUTHENTICATION => {
                let auth =
                    backend::parse_authentication(&body).map_err(SessionError::server_protocol)?;
                answer_auth(auth, target, credential, &mut scram, &mut out)?;
                if !out.is_empty() {
                    conn.stream
                        .write_all_flushed(&out)
                        .await
                        .map_err(SessionError::server_io)?;
                }
            }
            tag::PARAMETER_STATUS => {
                let (name, value) = backend::parse_parameter_status(&body)
                    .map_err(SessionError::server_protocol)?;
                conn.params.set(name, value);
            }
            tag::BACKEND_KEY_DATA => {
                conn.backend_key = backend::parse_backend_key_data(&body)
                    .map_err(SessionError::server_protocol)?;
            }
            tag::READY_FOR_QUERY => return Ok(()),
            tag::ERROR_RESPONSE => {
                let e = backend::parse_error_response(&body);
                return Err(SessionError::from_server(
                    &e.code,
                    format!("server login failed: {}", e.message),
                ));
            }
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            other => {
                return Err(SessionError::server_protocol(
                    crate::protocol::ProtocolError::Unexpected {
                        tag: other,
                        state: "server login",
                    },
                ))
            }
        }
    }
}

enum ScramState {
    Started(ScramClient),
    Final(crate::auth::scram::ScramClientFinal),
    Done,
}

fn answer_auth(
    auth: Authentication<'_>,
    target: &ServerTarget,
    credential: &ServerCredential,
    scram: &mut Option<ScramState>,
    out: &mut BytesMut,
) -> Result<(), SessionError> {
    let missing = |what: &str| {
        SessionError::new(
            Fault::Config,
            crate::protocol::sqlstate::INVALID_PASSWORD,
            format!(
                "server login failed: the server asked for {what} for user \"{}\" and pgring has no usable secret for it (set it in auth_file or the database entry)",
                target.user
            ),
        )
        .because(crate::error::Cause::PasswordRefused)
    };
    match auth {
        Authentication::Ok => {}
        Authentication::CleartextPassword => match credential {
            ServerCredential::Password(p) => frontend::password_message(out, p.as_bytes()),
            _ => return Err(missing("a cleartext password")),
        },
        Authentication::Md5Password { salt } => {
            let secret = match credential {
                ServerCredential::Password(p) => md5::md5_secret(&target.user, p),
                ServerCredential::Md5Secret(s) => s.clone(),
                _ => return Err(missing("an md5 password")),
            };
            frontend::password_message(out, md5::md5_response(&secret, salt).as_bytes());
        }
        Authentication::Sasl { mechanisms } => {
            if !mechanisms.contains(&"SCRAM-SHA-256") {
                return Err(SessionError::new(
                    Fault::Server,
                    crate::protocol::sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("server login failed: no supported SASL mechanism in {mechanisms:?}"),
                ));
            }
            let cred = match credential {
                ServerCredential::Password(p) => ScramCredential::Password(p.clone()),
                ServerCredential::ScramKeys {
                    client_key,
                    server_key,
                } => ScramCredential::Keys {
                    client_key: *client_key,
                    server_key: Some(*server_key),
                },
                _ => return Err(missing("a SCRAM-SHA-256 login")),
            };
            let nonce = crate::auth::scram::random_nonce();
            let (client, first) =
                ScramClient::new(cred, &nonce).map_err(|e| scram_error(e.to_string()))?;
            frontend::sasl_initial_response(out, "SCRAM-SHA-256", &first);
            *scram = Some(ScramState::Started(client));
        }
        Authentication::SaslContinue { data } => match scram.take() {
            Some(ScramState::Started(client)) => {
                let (next, client_final) = client
                    .handle_server_first(data)
                    .map_err(|e| scram_error(e.to_string()))?;
                frontend::sasl_response(out, &client_final);
                *scram = Some(ScramState::Final(next));
            }
            _ => return Err(scram_error("unexpected SASLContinue".into())),
        },
        Authentication::SaslFinal { data } => match scram.take() {
            Some(ScramState::Final(client)) => {
                client
                    .finish(data)
                    .map_err(|e| scram_error(e.to_string()))?;
                *scram = Some(ScramState::Done);
            }
            _ => return Err(scram_error("unexpected SASLFinal".into())),
        },
        Authentication::Unsupported { code } => {
            return Err(SessionError::new(
                Fault::Server,
                crate::protocol::sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "server login failed: authentication method {code} is not supported by pgring"
                ),
            ))
        }
    }
    Ok(())
}

fn scram_error(msg: String) -> SessionError {
    SessionError::new(
        Fault::Server,
        crate::protocol::sqlstate::INVALID_PASSWORD,
        format!("server login failed: SCRAM exchange with the server failed: {msg}"),
    )
    .because(crate::error::Cause::PasswordRefused)
}

/// Sends a CancelRequest for `key` on a fresh connection to `address`, over TLS when
/// `server_tls_sslmode` asks for it (as for logins).
pub async fn send_cancel(
    address: &ServerAddress,
    key: CancelKey,
    opts: ConnectOptions,
) -> Result<(), SessionError> {
    let mut stream = match crate::timeout::with_timeout(
        if opts.connect_timeout.is_zero() {
            Duration::from_secs(15)
        } else {
            opts.connect_timeout
        },
        open_secured(address, &opts),
    )
    .await
    {
        Some(s) => s?,
        None => {
            return Err(SessionError::new(
                Fault::Server,
                crate::protocol::sqlstate::CONNECTION_FAILURE,
                "timed out",
            ))
        }
    };
    let mut out = BytesMut::new();
    frontend::cancel_request(&mut out, key);
    stream
        .write_all_flushed(&out)
        .await
        .map_err(SessionError::server_io)?;
    // PostgreSQL closes the connection when done; wait for that so that the cancel has been
    // read before we drop the socket.
    let mut scratch = [0u8; 16];
    let _ = crate::timeout::with_timeout(
        Duration::from_secs(5),
        futures_lite::AsyncReadExt::read(&mut stream, &mut scratch),
    )
    .await;
    Ok(())
}
