//! A client's login: startup packet, authentication, and the welcome (ParameterStatus,
//! BackendKeyData, ReadyForQuery).
//!
//! TLS starts one of two ways: PostgreSQL's classic SSLRequest, answered `S`, or
//! PostgreSQL 17's direct TLS (`sslnegotiation=direct`), where the client's first byte
//! is already a TLS handshake record. The first bytes of a TCP connection are read to tell
//! them apart; when they are a ClientHello they are handed to the TLS session. A direct
//! TLS client must negotiate ALPN `postgresql`, as PostgreSQL 17 demands: without it, some
//! other protocol's client may have been pointed at the port. Either way, an SSLRequest
//! over TLS is a protocol violation.
//!
//! Invariant: the same message answers an unknown user and a wrong password
//! (`password authentication failed for user "NAME"`, SQLSTATE 28P01), and the exchange
//! for an unknown user runs to the same step, so user names cannot be probed.

use std::rc::Rc;

use bytes::BytesMut;

use super::params::ClientParams;
use super::{ClientConn, Peer};
use crate::auth::hba::{ClientCertOption, HbaMethod, HbaRequest};
use crate::auth::scram::{ScramSecret, ScramServer, ServerChannelBinding};
use crate::auth::table::{AuthTable, UserAuth};
use crate::buffer::ReadBuf;
use crate::cancel::CancelSlot;
use crate::config::AuthType;
use crate::error::{Fault, SessionError};
use crate::net::Stream;
use crate::pool::Pool;
use crate::protocol::backend::{self, Authentication};
use crate::protocol::framing::split_message;
use crate::protocol::params::{
    is_read_only, known_reported, parse_options, OptionsError, READ_ONLY_SQLSTATE, TRACKED,
};
use crate::protocol::startup::{decode_startup, CancelKey, StartupPacket, StartupParams};
use crate::protocol::{frontend, sqlstate, tag, ProtocolError, TxStatus};
use crate::server::ServerCredential;
use crate::shard::Shard;

/// How a login ended.
pub enum Outcome {
    /// The connection carried a CancelRequest.
    Cancel(CancelKey),
    /// The client is logged in and has been sent ReadyForQuery.
    Ready(LoggedIn),
}

/// A logged-in client, ready for the pooling loop.
pub struct LoggedIn {
    /// The pool of the client's (database, user); its key names both.
    pub pool: Rc<Pool>,
    pub params: ClientParams,
    /// The key this client was given in BackendKeyData.
    pub cancel: Rc<CancelSlot>,
}

/// Runs the login. `admitted` is false when the client is over `max_client_conn`: it is
/// then refused once its startup packet has been read.
pub async fn run(
    shard: &Rc<Shard>,
    conn: &mut ClientConn,
    admitted: bool,
) -> Result<Outcome, SessionError> {
    // The TLS configuration the client's session was accepted with (for channel binding).
    let mut accepted_tls = None;
    if starts_with_tls_record(conn).await? {
        accepted_tls = Some(direct_tls(shard, conn).await?);
    }
    let (minor, params) = loop {
        match read_startup(conn).await? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest if conn.stream.is_tls() => {
                return Err(protocol_error(
                    "encryption request received over an encrypted connection",
                ));
            }
            request @ (StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                // Whatever the answer, nothing may follow the request before it: bytes
                // already buffered were sent in plaintext before the client saw the
                // answer, and must not be read as if they came through TLS
                // (CVE-2021-23214).
                if !conn.rbuf.is_empty() {
                    return Err(SessionError::new(
                        Fault::Client,
                        sqlstate::PROTOCOL_VIOLATION,
                        "received unencrypted data after encryption request",
                    ));
                }
                // TLS over TCP only, as PostgreSQL; no GSS encryption at all.
                let tls = match request {
                    StartupPacket::SslRequest if !conn.stream.is_unix() => {
                        shard.shared.tls.load_full()
                    }
                    _ => None,
                };
                match tls {
                    Some(tls) => {
                        conn.write_all(b"S").await?;
                        start_tls(conn, tls.config.clone()).await?;
                        accepted_tls = Some(tls);
                    }
                    None => conn.write_all(b"N").await?,
                }
            }
            StartupPacket::CancelRequest(key) => return Ok(Outcome::Cancel(key)),
            StartupPacket::Startup { minor, params } => break (minor, params),
        }
    };
    let config = shard.config();
    if config.pooler.client_tls_sslmode.requires_tls()
        && !conn.stream.is_tls()
        && !conn.stream.is_unix()
    {
        return Err(SessionError::new(
            Fault::Client,
            sqlstate::INVALID_AUTHORIZATION,
            "SSL required",
        ));
    }
    if !admitted {
        return Err(SessionError::new(
            Fault::Limit,
            sqlstate::TOO_MANY_CONNECTIONS,
            "no more connections allowed (max_client_conn)",
        ));
    }
    let user = params
        .user()
        .ok_or_else(|| protocol_error("no PostgreSQL user name specified in startup packet"))?
        .to_owned();
    let database = params.database().unwrap_or(&user).to_owned();
    let mut protocol_options = Vec::new();
    let settings = check_startup_params(
        &params,
        &config.pooler.ignore_startup_parameters,
        &mut protocol_options,
    )?;

    if config.pooler.log_connections {
        log::info!("{}: login attempt: db={database} user={user}", conn.peer);
    }
    let Some(db) = config.database(&database) else {
        return Err(SessionError::new(
            Fault::Client,
            sqlstate::INVALID_CATALOG_NAME,
            format!("no such database: {database}"),
        ));
    };

    // Room for the welcome (a dozen ParameterStatus, BackendKeyData, ReadyForQuery) from
    // the start, instead of growing through it message by message.
    let mut out = BytesMut::with_capacity(WELCOME_CAPACITY);
    if minor > 0 || !protocol_options.is_empty() {
        let names: Vec<&str> = protocol_options.iter().map(String::as_str).collect();
        backend::negotiate_protocol_version(
            &mut out,
            crate::protocol::PROTOCOL_3_0 & 0xffff,
            &names,
        );
        conn.write_all(&out).await?;
        out.clear();
    }

    let auth_table = shard.shared.auth.load_full();
    let method = choose_method(conn, config.pooler.auth_type, &auth_table, &database, &user)?;
    // A user missing from the auth_file may be found with auth_query (src/auth_query.rs),
    // when the method needs a secret at all.
    let fetched = match auth_table.get(&user) {
        None if method.0.needs_secret() => {
            crate::auth_query::find(shard, &config, &database, db, &user, &auth_table).await?
        }
        _ => None,
    };
    let user_auth = auth_table
        .get(&user)
        .or(fetched.as_ref().and_then(|f| f.user_auth()));
    let end_point = accepted_tls.as_ref().and_then(|t| t.end_point.as_deref());
    // SCRAM's last message waits in `out` to go with AuthenticationOk and the welcome,
    // in one send, as PostgreSQL sends them.
    let passthrough = authenticate(
        conn,
        &method,
        &user,
        user_auth,
        &auth_table,
        end_point,
        &mut out,
    )
    .await
    .inspect_err(|e| fetched.iter().for_each(|f| f.login_failed(e)))?;

    let pool = shard.pool_for(&database, &user, db)?;
    match &fetched {
        // The freshest secret wins: a password changed in PostgreSQL reaches the pool.
        Some(f) if pool.target.user == user => {
            if let Some(cred) = f.server_credential(passthrough) {
                pool.set_credential(cred);
            }
        }
        _ => {
            if let Some(cred) = passthrough {
                if !pool.has_credential() {
                    pool.set_credential(cred);
                }
            }
        }
    }

    // The welcome: the parameters of a real server, with the client's own values on top.
    let crate::pool::Welcome {
        params: welcome,
        encoded,
    } = match pool.welcome() {
        Some(w) => w,
        None => {
            let server = pool.acquire().await?;
            let w = crate::pool::Welcome::new(server.params.to_vec().into());
            pool.release(server);
            w
        }
    };
    // What pgring sets on a server for this client lasts until its next transaction,
    // unless a reset query runs after each one.
    let servers_keep_settings =
        !config.pooler.server_reset_query_always || config.pooler.server_reset_query.is_empty();
    let client_params = ClientParams::from_startup(
        settings.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        &welcome,
        next_owner(),
        servers_keep_settings,
    );
    let mut aligned = client_params.clone();
    if client_params.has_unreported()
        || welcome
            .iter()
            .any(|(n, v)| client_params.get(n).is_some_and(|mine| mine != v))
    {
        // Let a server canonicalise the client's values (`iso` → `ISO, MDY`) and report
        // them, and refuse what PostgreSQL would refuse: a value it does not take, a
        // parameter it does not know or that cannot be set after the start of a session.
        // The client then gets the server's error, as a FATAL, with its SQLSTATE.
        let mut server = pool.acquire().await?;
        if let Some(sql) = client_params.alignment_sql(&server.params) {
            match server.run_internal(&sql).await {
                Ok(()) => {
                    aligned.adopt_server_spelling(&server.params);
                    pool.release(server);
                }
                Err(e) if e.cause == crate::error::Cause::Disconnected => {
                    pool.discard(server);
                    return Err(e);
                }
                Err(e) => {
                    pool.release(server);
                    return Err(SessionError::new(
                        Fault::Client,
                        &e.sqlstate,
                        without_statement_word(&sql, &e.message),
                    ));
                }
            }
        } else {
            pool.release(server);
        }
    }

    let cancel = shard.cancel.register();
    backend::authentication(&mut out, &Authentication::Ok);
    // What the client is shown: the server's values with its own on top. Every tracked
    // value it is shown becomes the value its server connections are aligned to.
    for ((name, _), message) in welcome.iter().zip(encoded.iter()) {
        match aligned.get(name) {
            Some(value) => backend::parameter_status(&mut out, name, value),
            None => out.extend_from_slice(message),
        }
    }
    for (name, value) in aligned.iter() {
        if !welcome.iter().any(|(n, _)| n == name) {
            backend::parameter_status(&mut out, name, value);
        }
    }
    aligned.fill_missing_from(welcome.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    backend::backend_key_data(&mut out, cancel.key());
    backend::ready_for_query(&mut out, TxStatus::Idle);
    if let Err(e) = conn.write_all(&out).await {
        shard.cancel.unregister(cancel.key());
        return Err(e);
    }
    Ok(Outcome::Ready(LoggedIn {
        pool,
        params: aligned,
        cancel,
    }))
}

/// A number for each client, unique for the life of the process: what a server
/// connection's record of pgring's own settings names its owner by (see
/// `client::params`). Zero is nobody.
fn next_owner() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The server's message without the first word of pgring's statement that
/// `run_internal` puts in front (the client did not write that statement).
fn without_statement_word<'a>(sql: &str, message: &'a str) -> &'a str {
    sql.split_whitespace()
        .next()
        .and_then(|word| message.strip_prefix(word))
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(message)
}

/// Bytes reserved for the messages that end a login (AuthenticationOk and the welcome
/// take 414 bytes for psql in front of PostgreSQL 15).
const WELCOME_CAPACITY: usize = 1024;

/// The type byte of a TLS handshake record. A startup packet starts with the high byte of
/// its length, which is 0 for any packet pgring accepts, so the two cannot be confused.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Reads the first bytes of a TCP connection and tells whether they begin a TLS record
/// (direct TLS) rather than a startup packet. They stay in the read buffer either way:
/// [`start_tls`] hands them to the TLS session. Other transports read nothing here.
async fn starts_with_tls_record(conn: &mut ClientConn) -> Result<bool, SessionError> {
    if !conn.stream.is_plain_tcp() {
        return Ok(false);
    }
    fill(conn).await?;
    Ok(conn.rbuf.data().first() == Some(&TLS_HANDSHAKE_RECORD))
}

/// Direct TLS: the handshake at once, then ALPN `postgresql` or the connection is closed.
/// Refusals are logged and nothing is sent: the client speaks TLS or something else, and
/// a plaintext ErrorResponse would mean nothing to it.
async fn direct_tls(
    shard: &Rc<Shard>,
    conn: &mut ClientConn,
) -> Result<std::sync::Arc<crate::tls::ClientTls>, SessionError> {
    let Some(tls) = shard.shared.tls.load_full() else {
        log::warn!(
            "{}: direct TLS connection refused: client TLS is off (client_tls_sslmode = \"disable\")",
            conn.peer
        );
        return Err(direct_tls_refused());
    };
    start_tls(conn, tls.config.clone()).await?;
    let alpn = match &conn.stream {
        Stream::Tls(tls) => tls.alpn_protocol(),
        _ => None,
    };
    if alpn != Some(crate::tls::ALPN_POSTGRESQL) {
        log::warn!(
            "{}: direct TLS connection refused: the client did not negotiate ALPN \"postgresql\"",
            conn.peer
        );
        return Err(direct_tls_refused());
    }
    Ok(tls)
}

/// Ends the connection without a word to the client (a connection failure on the
/// client's side is never sent or logged again).
fn direct_tls_refused() -> SessionError {
    SessionError::new(
        Fault::Client,
        sqlstate::CONNECTION_FAILURE,
        "direct TLS connection refused",
    )
}

/// Runs the server side of a TLS handshake and puts the session in place of the plain
/// stream. What the read buffer holds is the start of the handshake (direct TLS; after
/// an SSLRequest it is empty) and goes to the session. On failure the alert has been sent
/// and the connection is left without a transport (it is closed).
async fn start_tls(
    conn: &mut ClientConn,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> Result<(), SessionError> {
    let plain = std::mem::replace(&mut conn.stream, Stream::Detached);
    let received = std::mem::replace(&mut conn.rbuf, ReadBuf::new(0, super::LOGIN_CEILING));
    match crate::tls_stream::accept(plain, config, received).await {
        Ok(tls) => {
            conn.stream = Stream::Tls(Box::new(tls));
            Ok(())
        }
        Err(e) => {
            log::warn!("{}: TLS handshake failed: {e}", conn.peer);
            Err(SessionError::client_io(e))
        }
    }
}

fn protocol_error(message: &str) -> SessionError {
    SessionError::new(Fault::Client, sqlstate::PROTOCOL_VIOLATION, message)
}

/// Sorts the startup parameters: `options` is parsed into settings, the known reported
/// parameters kept as settings, ignored ones dropped, `_pq_.` protocol options collected
/// for NegotiateProtocolVersion, anything else refused as PgBouncer refuses it. Returns
/// the settings in the order PostgreSQL applies them: those of `options` first, then the
/// packet's own (so that these win).
///
/// `options` listed in `ignore_startup_parameters` is dropped unread, as before pgring
/// read it. Runs before authentication: a malformed packet is refused at once.
fn check_startup_params(
    params: &StartupParams,
    ignored: &[String],
    protocol_options: &mut Vec<String>,
) -> Result<Vec<(String, String)>, SessionError> {
    let is_ignored = |name: &str| ignored.iter().any(|i| i.eq_ignore_ascii_case(name));
    let mut from_options = Vec::new();
    let mut from_packet = Vec::new();
    for (name, value) in params.iter() {
        if name == "user" || name == "database" {
            continue;
        }
        if name.starts_with("_pq_.") {
            protocol_options.push(name.to_owned());
            continue;
        }
        if name == "options" {
            if !is_ignored(name) {
                from_options = parse_options(value).map_err(options_error)?;
            }
            continue;
        }
        if let Some(known) = known_reported(name) {
            // The six that pgring always kept cannot be dropped; those it came to accept
            // later (`search_path`, `default_transaction_read_only`) keep the meaning a
            // listing in ignore_startup_parameters had before: dropped.
            if TRACKED.contains(&known) || !is_ignored(name) {
                from_packet.push((known.to_owned(), value.to_owned()));
            }
            continue;
        }
        if is_ignored(name) {
            continue;
        }
        return Err(protocol_error(&format!(
            "unsupported startup parameter: {name} (add it to ignore_startup_parameters to accept and drop it)"
        )));
    }
    if let Some((name, _)) = from_options.iter().find(|(n, _)| is_read_only(n)) {
        return Err(SessionError::new(
            Fault::Client,
            READ_ONLY_SQLSTATE,
            format!("parameter \"{name}\" cannot be changed"),
        ));
    }
    from_options.extend(from_packet);
    Ok(from_options)
}

fn options_error(e: OptionsError) -> SessionError {
    SessionError::new(Fault::Client, OptionsError::SQLSTATE, e.to_string())
}

async fn read_startup(conn: &mut ClientConn) -> Result<StartupPacket, SessionError> {
    loop {
        if let Some((packet, used)) =
            decode_startup(conn.rbuf.data()).map_err(SessionError::client_protocol)?
        {
            conn.rbuf.consume(used);
            return Ok(packet);
        }
        fill(conn).await?;
    }
}

async fn fill(conn: &mut ClientConn) -> Result<(), SessionError> {
    match conn.rbuf.fill(&mut conn.stream).await {
        Ok(0) => Err(SessionError::client_closed()),
        Ok(_) => Ok(()),
        Err(e) => Err(SessionError::client_io(e)),
    }
}

/// Reads one whole password-type message ('p') and returns its body.
async fn read_password_message(conn: &mut ClientConn) -> Result<Vec<u8>, SessionError> {
    loop {
        if let Some((msg_tag, body, len)) = split_message(conn.rbuf.data(), super::LOGIN_CEILING)
            .map_err(SessionError::client_protocol)?
        {
            if msg_tag == tag::TERMINATE {
                return Err(SessionError::client_closed());
            }
            if msg_tag != tag::PASSWORD_MESSAGE {
                return Err(SessionError::client_protocol(ProtocolError::Unexpected {
                    tag: msg_tag,
                    state: "authentication",
                }));
            }
            let body = body.to_vec();
            conn.rbuf.consume(len);
            return Ok(body);
        }
        fill(conn).await?;
    }
}

fn auth_failed(user: &str) -> SessionError {
    SessionError::new(
        Fault::Client,
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
    .because(crate::error::Cause::PasswordRefused)
}

/// How one login is checked, once `auth_type` and the hba rules have spoken.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Method {
    Trust,
    Password,
    Md5,
    Scram,
    /// The client certificate's common name must be the user, or map to it.
    Cert {
        map: Option<String>,
    },
    /// The Unix-socket peer's OS user must be the user, or map to it.
    Peer {
        map: Option<String>,
    },
}

impl Method {
    /// True for the methods that check a password against a stored secret.
    fn needs_secret(&self) -> bool {
        matches!(self, Method::Password | Method::Md5 | Method::Scram)
    }
}

/// What a login must show besides passing its method: a client certificate
/// (`clientcert=verify-ca`), or one whose name is the user (`clientcert=verify-full`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum CertDemand {
    None,
    Present,
    NameMatches { map: Option<String> },
}

/// The method for this login: `auth_type`, or with `auth_type = "hba"` the first
/// matching rule of `auth_hba_file`, which may also demand a client certificate.
fn choose_method(
    conn: &ClientConn,
    auth_type: AuthType,
    table: &AuthTable,
    database: &str,
    user: &str,
) -> Result<(Method, CertDemand), SessionError> {
    let method = match auth_type {
        AuthType::Trust => Method::Trust,
        AuthType::Plain => Method::Password,
        AuthType::Md5 => Method::Md5,
        AuthType::ScramSha256 => Method::Scram,
        AuthType::Cert => Method::Cert { map: None },
        AuthType::Peer => Method::Peer { map: None },
        AuthType::Hba => return hba_method(conn, table, database, user),
    };
    Ok((method, CertDemand::None))
}

fn hba_method(
    conn: &ClientConn,
    table: &AuthTable,
    database: &str,
    user: &str,
) -> Result<(Method, CertDemand), SessionError> {
    let unix = conn.stream.is_unix();
    let tls = conn.stream.is_tls();
    let addr = match conn.peer {
        Peer::Tcp(a) => Some(a.ip()),
        _ => None,
    };
    let request = HbaRequest {
        unix,
        tls,
        addr,
        database,
        user,
    };
    // PostgreSQL's words for the connection, in both refusals below.
    let described = || {
        let host = addr.map_or_else(|| "[local]".to_owned(), |ip| ip.to_string());
        let encryption = if tls {
            "SSL encryption"
        } else {
            "no encryption"
        };
        format!("host \"{host}\", user \"{user}\", database \"{database}\", {encryption}")
    };
    let Some(rule) = table.hba().and_then(|rules| rules.find(&request)) else {
        return Err(invalid_authorization(format!(
            "no pg_hba.conf entry for {}",
            described()
        )));
    };
    let method = match rule.method {
        HbaMethod::Trust => Method::Trust,
        HbaMethod::Reject => {
            log::info!(
                "{}: login refused by {}:{}",
                conn.peer,
                rule.file.display(),
                rule.line
            );
            return Err(invalid_authorization(format!(
                "pg_hba.conf rejects connection for {}",
                described()
            )));
        }
        HbaMethod::Password => Method::Password,
        HbaMethod::Md5 => Method::Md5,
        HbaMethod::ScramSha256 => Method::Scram,
        HbaMethod::Cert => Method::Cert {
            map: rule.map.clone(),
        },
        HbaMethod::Peer => Method::Peer {
            map: rule.map.clone(),
        },
    };
    let demand = match rule.clientcert {
        None => CertDemand::None,
        Some(ClientCertOption::VerifyCa) => CertDemand::Present,
        Some(ClientCertOption::VerifyFull) => CertDemand::NameMatches {
            map: rule.map.clone(),
        },
    };
    Ok((method, demand))
}

fn invalid_authorization(message: String) -> SessionError {
    SessionError::new(Fault::Client, sqlstate::INVALID_AUTHORIZATION, message)
}

/// The common name of the client's verified certificate, or the refusal PostgreSQL
/// gives when there is none.
fn certificate_name(conn: &ClientConn, user: &str) -> Result<String, SessionError> {
    let Some(der) = conn.stream.peer_certificate() else {
        return Err(invalid_authorization(
            "connection requires a valid client certificate".to_owned(),
        ));
    };
    crate::x509::names(der)
        .and_then(|n| n.common_name)
        .ok_or_else(|| {
            invalid_authorization(format!(
                "certificate authentication failed for user \"{user}\": client certificate contains no user name"
            ))
        })
}

/// Checks that `system_user` (a certificate's common name or an OS user name) may log in
/// as `user`: equal names without a map, the map's say with one.
fn name_maps_to_user(table: &AuthTable, map: Option<&str>, system_user: &str, user: &str) -> bool {
    match map {
        None => system_user == user,
        Some(map) => table.ident_permits(map, system_user, user),
    }
}

fn check_certificate(
    conn: &ClientConn,
    table: &AuthTable,
    map: Option<&str>,
    user: &str,
) -> Result<(), SessionError> {
    let cn = certificate_name(conn, user)?;
    if name_maps_to_user(table, map, &cn, user) {
        return Ok(());
    }
    let how = match map {
        None => "is not".to_owned(),
        Some(map) => format!("does not map (map \"{map}\") to"),
    };
    Err(invalid_authorization(format!(
        "certificate authentication failed for user \"{user}\": the certificate's common name \"{cn}\" {how} the user name"
    )))
}

fn check_peer(
    conn: &ClientConn,
    table: &AuthTable,
    map: Option<&str>,
    user: &str,
) -> Result<(), SessionError> {
    let Peer::Unix { uid } = conn.peer else {
        return Err(invalid_authorization(format!(
            "peer authentication failed for user \"{user}\": it is only available for Unix-socket connections"
        )));
    };
    let os_user = uid.and_then(crate::net::os_user_name);
    match os_user {
        Some(os_user) if name_maps_to_user(table, map, &os_user, user) => Ok(()),
        found => {
            log::info!(
                "peer authentication failed for user \"{user}\": the OS user is {}{}",
                found.as_deref().unwrap_or("unknown"),
                map.map(|m| format!(" (map \"{m}\")")).unwrap_or_default()
            );
            Err(invalid_authorization(format!(
                "peer authentication failed for user \"{user}\""
            )))
        }
    }
}

/// Runs the chosen method; on success returns the credential a password login left
/// behind (keys for pass-through to the server), if any. `end_point` is the
/// channel-binding data of the TLS session, when there is one that can bind. A final
/// message the method has for the client (SCRAM's) is appended to `pending`, for the
/// caller to send with what follows.
async fn authenticate(
    conn: &mut ClientConn,
    (method, demand): &(Method, CertDemand),
    user: &str,
    user_auth: Option<&UserAuth>,
    table: &AuthTable,
    end_point: Option<&[u8]>,
    pending: &mut BytesMut,
) -> Result<Option<ServerCredential>, SessionError> {
    match demand {
        CertDemand::None => {}
        CertDemand::Present => {
            certificate_name(conn, user)?;
        }
        // The cert method below makes this very check.
        CertDemand::NameMatches { .. } if matches!(method, Method::Cert { .. }) => {}
        CertDemand::NameMatches { map } => {
            check_certificate(conn, table, map.as_deref(), user)?;
        }
    }
    let mut out = BytesMut::new();
    match method {
        Method::Trust => Ok(None),
        Method::Cert { map } => check_certificate(conn, table, map.as_deref(), user).map(|()| None),
        Method::Peer { map } => check_peer(conn, table, map.as_deref(), user).map(|()| None),
        Method::Password => {
            backend::authentication(&mut out, &Authentication::CleartextPassword);
            conn.write_all(&out).await?;
            let body = read_password_message(conn).await?;
            let given = frontend::parse_password(&body).map_err(SessionError::client_protocol)?;
            let ok = user_auth.is_some_and(|u| check_cleartext(u, user, given));
            if ok {
                Ok(None)
            } else {
                Err(auth_failed(user))
            }
        }
        Method::Md5 => match user_auth.and_then(|u| u.md5_secret().map(|s| (u, s))) {
            Some((_, secret)) => {
                let salt: [u8; 4] = rand::random();
                backend::authentication(&mut out, &Authentication::Md5Password { salt });
                conn.write_all(&out).await?;
                let body = read_password_message(conn).await?;
                let given =
                    frontend::parse_password(&body).map_err(SessionError::client_protocol)?;
                if crate::auth::md5::verify_md5_response(secret, salt, given) {
                    Ok(Some(ServerCredential::Md5Secret(secret.to_owned())))
                } else {
                    Err(auth_failed(user))
                }
            }
            // A SCRAM-only user is switched to SCRAM, as PostgreSQL does.
            None if user_auth.is_some_and(|u| u.scram_secret().is_some()) => {
                scram(conn, user, user_auth, table, end_point, pending).await
            }
            // Unknown user: ask for a password anyway, then fail the same way.
            None => {
                let salt: [u8; 4] = rand::random();
                backend::authentication(&mut out, &Authentication::Md5Password { salt });
                conn.write_all(&out).await?;
                read_password_message(conn).await?;
                Err(auth_failed(user))
            }
        },
        Method::Scram => scram(conn, user, user_auth, table, end_point, pending).await,
    }
}

fn check_cleartext(auth: &UserAuth, user: &str, given: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(given) = std::str::from_utf8(given) else {
        return false;
    };
    if let Some(password) = auth.password() {
        return bool::from(password.as_bytes().ct_eq(given.as_bytes()));
    }
    if let Some(secret) = auth.md5_secret() {
        let computed = crate::auth::md5::md5_secret(user, given);
        return bool::from(computed.as_bytes().ct_eq(secret.as_bytes()));
    }
    if let Some(secret) = auth.scram_secret() {
        let computed = ScramSecret::from_password(given, secret.salt(), secret.iterations());
        return bool::from(computed.stored_key().ct_eq(secret.stored_key()));
    }
    false
}

/// SCRAM-SHA-256, and SCRAM-SHA-256-PLUS with `tls-server-end-point` binding when the
/// client came over TLS (so libpq's `channel_binding=require` works through pgring).
/// AuthenticationSASLFinal is appended to `pending`, not sent.
async fn scram(
    conn: &mut ClientConn,
    user: &str,
    user_auth: Option<&UserAuth>,
    table: &AuthTable,
    end_point: Option<&[u8]>,
    pending: &mut BytesMut,
) -> Result<Option<ServerCredential>, SessionError> {
    let known = user_auth.and_then(|u| u.scram_secret());
    let mock;
    let secret = match known {
        Some(s) => s,
        None => {
            mock = table.mock_scram_secret(user);
            &mock
        }
    };
    let mut out = BytesMut::new();
    let mechanisms = match end_point {
        Some(_) => vec![SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
        None => vec![SCRAM_SHA_256],
    };
    backend::authentication(&mut out, &Authentication::Sasl { mechanisms });
    conn.write_all(&out).await?;
    let body = read_password_message(conn).await?;
    let (mechanism, client_first) =
        frontend::parse_sasl_initial_response(&body).map_err(SessionError::client_protocol)?;
    let binding = match (mechanism, end_point) {
        (SCRAM_SHA_256_PLUS, Some(data)) => ServerChannelBinding::TlsServerEndPoint(data),
        (SCRAM_SHA_256, Some(_)) => ServerChannelBinding::OfferedNotSelected,
        (SCRAM_SHA_256, None) => ServerChannelBinding::NotOffered,
        _ => {
            return Err(SessionError::new(
                Fault::Client,
                sqlstate::PROTOCOL_VIOLATION,
                format!("client selected an invalid SASL authentication mechanism: {mechanism}"),
            ))
        }
    };
    let nonce = crate::auth::scram::random_nonce();
    let (challenged, server_first) =
        ScramServer::start_with_channel_binding(secret, &nonce, client_first, binding)
            .map_err(|e| scram_client_error(user, e))?;
    out.clear();
    backend::authentication(
        &mut out,
        &Authentication::SaslContinue {
            data: &server_first,
        },
    );
    conn.write_all(&out).await?;
    let body = read_password_message(conn).await?;
    let (server_final, client_key) = challenged
        .finish(&body)
        .map_err(|e| scram_client_error(user, e))?;
    if known.is_none() {
        return Err(auth_failed(user));
    }
    backend::authentication(
        pending,
        &Authentication::SaslFinal {
            data: &server_final,
        },
    );
    Ok(Some(ServerCredential::ScramKeys {
        client_key: *client_key.as_bytes(),
        server_key: *secret.server_key(),
    }))
}

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

fn scram_client_error(user: &str, e: crate::auth::scram::ScramError) -> SessionError {
    if e.is_auth_failure() {
        auth_failed(user)
    } else {
        SessionError::new(Fault::Client, sqlstate::PROTOCOL_VIOLATION, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        pairs: &[(&str, &str)],
        ignored: &[&str],
    ) -> Result<Vec<(String, String)>, SessionError> {
        let params = StartupParams::new(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let ignored: Vec<String> = ignored.iter().map(|s| (*s).to_owned()).collect();
        check_startup_params(&params, &ignored, &mut Vec::new())
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn options_come_first_and_the_packet_s_own_parameters_win() {
        let settings = check(
            &[
                ("user", "app"),
                ("timezone", "UTC"),
                ("options", "-c TimeZone=Asia/Tokyo -c statement_timeout=5s"),
                ("application_name", "psql"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            settings,
            owned(&[
                ("TimeZone", "Asia/Tokyo"),
                ("statement_timeout", "5s"),
                ("TimeZone", "UTC"),
                ("application_name", "psql"),
            ])
        );
    }

    #[test]
    fn malformed_options_and_read_only_parameters_are_refused() {
        for bad in ["-c=", "-c", "-c statement_timeout", "--=1", "-B 8", "x=1"] {
            let e = check(&[("user", "app"), ("options", bad)], &[]).unwrap_err();
            assert_eq!(e.sqlstate, "22023", "{bad}: {e}");
            assert!(e.message.contains("options"), "{bad}: {e}");
        }
        let e = check(&[("user", "app"), ("options", "-c is_superuser=on")], &[]).unwrap_err();
        assert_eq!(e.sqlstate, "55P02");
        assert_eq!(e.message, "parameter \"is_superuser\" cannot be changed");
        // Unknown packet parameters are refused as before, unless ignored.
        let e = check(&[("user", "app"), ("geqo", "on")], &[]).unwrap_err();
        assert_eq!(e.sqlstate, sqlstate::PROTOCOL_VIOLATION);
        assert_eq!(
            check(&[("user", "app"), ("geqo", "on")], &["GEQO"]).unwrap(),
            []
        );
    }

    #[test]
    fn ignored_options_are_dropped_unread() {
        assert_eq!(
            check(&[("user", "app"), ("options", "-c=")], &["options"]).unwrap(),
            []
        );
    }

    #[test]
    fn newly_accepted_parameters_are_still_dropped_when_listed() {
        let packet = [
            ("user", "app"),
            ("search_path", "app"),
            ("TimeZone", "UTC"),
            ("default_transaction_read_only", "on"),
        ];
        assert_eq!(
            check(&packet, &[]).unwrap(),
            owned(&[
                ("search_path", "app"),
                ("TimeZone", "UTC"),
                ("default_transaction_read_only", "on"),
            ])
        );
        assert_eq!(
            check(
                &packet,
                &["search_path", "timezone", "default_transaction_read_only"]
            )
            .unwrap(),
            owned(&[("TimeZone", "UTC")])
        );
    }

    #[test]
    fn the_statement_word_is_taken_off_the_server_s_message() {
        assert_eq!(
            without_statement_word(
                "SELECT pg_catalog.set_config('x', '1', false);",
                "SELECT: unrecognized configuration parameter \"x\""
            ),
            "unrecognized configuration parameter \"x\""
        );
        assert_eq!(without_statement_word("RESET a;", "other"), "other");
    }
}
