//! A client's login: startup packet, authentication, and the welcome (ParameterStatus,
//! BackendKeyData, ReadyForQuery).
//!
//! TLS starts one of two ways: PostgreSQL's classic SSLRequest, answered `S`, or
//! PostgreSQL 17's direct TLS (`sslnegotiation=direct`), where the client's first byte
//! is already a TLS handshake record. The first byte of a TCP connection is peeked (not
//! read) to tell them apart, so the ClientHello stays on the socket for rustls. A direct
//! TLS client must negotiate ALPN `postgresql`, as PostgreSQL 17 demands: without it, some
//! other protocol's client may have been pointed at the port. Either way, an SSLRequest
//! over TLS is a protocol violation.
//!
//! Invariant: the same message answers an unknown user and a wrong password
//! (`password authentication failed for user "NAME"`, SQLSTATE 28P01), and the exchange
//! for an unknown user runs to the same step, so user names cannot be probed.

use std::rc::Rc;

use bytes::BytesMut;

use super::params::{tracked_name, ClientParams};
use super::ClientConn;
use crate::auth::scram::{ScramSecret, ScramServer};
use crate::auth::table::UserAuth;
use crate::config::AuthType;
use crate::error::{Fault, SessionError};
use crate::net::Stream;
use crate::pool::Pool;
use crate::protocol::backend::{self, Authentication};
use crate::protocol::framing::split_message;
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
    pub database: String,
    pub user: String,
    pub pool: Rc<Pool>,
    pub params: ClientParams,
    /// The key this client was given in BackendKeyData.
    pub cancel_key: CancelKey,
}

/// Runs the login. `admitted` is false when the client is over `max_client_conn`: it is
/// then refused once its startup packet has been read.
pub async fn run(
    shard: &Rc<Shard>,
    conn: &mut ClientConn,
    admitted: bool,
) -> Result<Outcome, SessionError> {
    if first_byte(conn).await? == Some(TLS_HANDSHAKE_RECORD) {
        direct_tls(shard, conn).await?;
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
                    Some(config) => {
                        conn.write_all(b"S").await?;
                        start_tls(conn, config).await?;
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
    let mut client_params = ClientParams::default();
    let mut protocol_options = Vec::new();
    check_startup_params(
        &params,
        &config.pooler.ignore_startup_parameters,
        &mut client_params,
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

    let mut out = BytesMut::new();
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
    let user_auth = auth_table.get(&user);
    let passthrough =
        authenticate(conn, config.pooler.auth_type, &user, user_auth, &auth_table).await?;

    let pool = shard.pool_for(&database, &user, db)?;
    if let Some(cred) = passthrough {
        if !pool.has_credential() {
            pool.set_credential(cred);
        }
    }

    // The welcome: the parameters of a real server, with the client's own values on top.
    let welcome = match pool.welcome_params() {
        Some(w) => w,
        None => {
            let server = pool.acquire().await?;
            let w: crate::pool::Params = server.params.clone().into();
            pool.release(server);
            w
        }
    };
    let mut aligned = client_params.clone();
    if client_params
        .iter()
        .any(|(n, v)| welcome.iter().any(|(wn, wv)| wn == n && wv != v))
    {
        // Let a server canonicalise the client's values (`iso` → `ISO, MDY`) and report
        // them, and refuse values PostgreSQL would refuse.
        let mut server = pool.acquire().await?;
        if let Some(sql) = client_params.alignment_sql(&server) {
            match server.run_internal(&sql).await {
                Ok(()) => {
                    aligned.adopt_server_spelling(&server);
                    pool.release(server);
                }
                Err(e) if e.sqlstate == sqlstate::CONNECTION_FAILURE => {
                    pool.discard(server);
                    return Err(e);
                }
                Err(e) => {
                    pool.release(server);
                    return Err(SessionError::new(Fault::Client, &e.sqlstate, e.message));
                }
            }
        } else {
            pool.release(server);
        }
    }

    let cancel_key = shard.cancel.register();
    backend::authentication(&mut out, &Authentication::Ok);
    // What the client is shown: the server's values with its own on top. Every tracked
    // value it is shown becomes the value its server connections are aligned to.
    for (name, value) in welcome.iter() {
        backend::parameter_status(&mut out, name, aligned.get(name).unwrap_or(value));
    }
    for (name, value) in aligned.iter() {
        if !welcome.iter().any(|(n, _)| n == name) {
            backend::parameter_status(&mut out, name, value);
        }
    }
    for (name, value) in welcome.iter() {
        if tracked_name(name).is_some() && aligned.get(name).is_none() {
            aligned.set(name, value);
        }
    }
    backend::backend_key_data(&mut out, cancel_key);
    backend::ready_for_query(&mut out, TxStatus::Idle);
    if let Err(e) = conn.write_all(&out).await {
        shard.cancel.unregister(cancel_key);
        return Err(e);
    }
    Ok(Outcome::Ready(LoggedIn {
        database,
        user,
        pool,
        params: aligned,
        cancel_key,
    }))
}

/// The type byte of a TLS handshake record. A startup packet starts with the high byte of
/// its length, which is 0 for any packet pgring accepts, so the two cannot be confused.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The first byte a TCP client sent, left on the socket; `None` for other transports.
async fn first_byte(conn: &ClientConn) -> Result<Option<u8>, SessionError> {
    let Stream::Tcp(tcp) = &conn.stream else {
        return Ok(None);
    };
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await {
        Ok(0) => Err(SessionError::client_closed()),
        Ok(_) => Ok(Some(byte[0])),
        Err(e) => Err(SessionError::client_io(std::io::Error::from(e))),
    }
}

/// Direct TLS: the handshake at once, then ALPN `postgresql` or the connection is closed.
/// Refusals are logged and nothing is sent: the client speaks TLS or something else, and
/// a plaintext ErrorResponse would mean nothing to it.
async fn direct_tls(shard: &Rc<Shard>, conn: &mut ClientConn) -> Result<(), SessionError> {
    let Some(config) = shard.shared.tls.load_full() else {
        log::warn!(
            "{}: direct TLS connection refused: client TLS is off (client_tls_sslmode = \"disable\")",
            conn.peer
        );
        return Err(direct_tls_refused());
    };
    start_tls(conn, config).await?;
    let alpn = match &conn.stream {
        Stream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        _ => None,
    };
    if alpn != Some(crate::tls::ALPN_POSTGRESQL) {
        log::warn!(
            "{}: direct TLS connection refused: the client did not negotiate ALPN \"postgresql\"",
            conn.peer
        );
        return Err(direct_tls_refused());
    }
    Ok(())
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
/// stream. On failure the connection is left without a transport (it is closed).
async fn start_tls(
    conn: &mut ClientConn,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> Result<(), SessionError> {
    let plain = std::mem::replace(&mut conn.stream, Stream::Detached);
    match futures_rustls::TlsAcceptor::from(config)
        .accept(plain)
        .await
    {
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

/// Sorts the startup parameters: tracked ones are kept, ignored ones dropped, `_pq_.`
/// protocol options collected for NegotiateProtocolVersion, anything else refused as
/// PgBouncer refuses it.
fn check_startup_params(
    params: &StartupParams,
    ignored: &[String],
    client: &mut ClientParams,
    protocol_options: &mut Vec<String>,
) -> Result<(), SessionError> {
    for (name, value) in params.iter() {
        if name == "user" || name == "database" {
            continue;
        }
        if name.starts_with("_pq_.") {
            protocol_options.push(name.to_owned());
            continue;
        }
        if client.set(name, value) {
            continue;
        }
        if ignored.iter().any(|i| i.eq_ignore_ascii_case(name)) {
            continue;
        }
        return Err(protocol_error(&format!(
            "unsupported startup parameter: {name} (add it to ignore_startup_parameters to accept and drop it)"
        )));
    }
    Ok(())
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
}

/// Runs the configured method; on success returns the credential a SCRAM login left
/// behind (keys for pass-through to the server), if any.
async fn authenticate(
    conn: &mut ClientConn,
    auth_type: AuthType,
    user: &str,
    user_auth: Option<&UserAuth>,
    table: &crate::auth::table::AuthTable,
) -> Result<Option<ServerCredential>, SessionError> {
    let mut out = BytesMut::new();
    match auth_type {
        AuthType::Trust => Ok(None),
        AuthType::Plain => {
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
        AuthType::Md5 => match user_auth.and_then(|u| u.md5_secret().map(|s| (u, s))) {
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
                scram(conn, user, user_auth, table).await
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
        AuthType::ScramSha256 => scram(conn, user, user_auth, table).await,
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

async fn scram(
    conn: &mut ClientConn,
    user: &str,
    user_auth: Option<&UserAuth>,
    table: &crate::auth::table::AuthTable,
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
    backend::authentication(
        &mut out,
        &Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256"],
        },
    );
    conn.write_all(&out).await?;
    let body = read_password_message(conn).await?;
    let (mechanism, client_first) =
        frontend::parse_sasl_initial_response(&body).map_err(SessionError::client_protocol)?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(SessionError::new(
            Fault::Client,
            sqlstate::PROTOCOL_VIOLATION,
            format!("client selected an invalid SASL authentication mechanism: {mechanism}"),
        ));
    }
    let nonce = crate::auth::scram::random_nonce();
    let (challenged, server_first) = ScramServer::start(secret, &nonce, client_first)
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
    out.clear();
    backend::authentication(
        &mut out,
        &Authentication::SaslFinal {
            data: &server_final,
        },
    );
    conn.write_all(&out).await?;
    Ok(Some(ServerCredential::ScramKeys {
        client_key: *client_key.as_bytes(),
        server_key: *secret.server_key(),
    }))
}

fn scram_client_error(user: &str, e: crate::auth::scram::ScramError) -> SessionError {
    if e.is_auth_failure() {
        auth_failed(user)
    } else {
        SessionError::new(
            Fault::Client,
            sqlstate::PROTOCOL_VIOLATION,
            format!("malformed SCRAM message: {e}"),
        )
    }
}
