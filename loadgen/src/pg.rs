//! A minimal PostgreSQL client connection on glommio, built on pgring's sans-IO protocol
//! module: connect (with TCP_NODELAY, optionally from a given source address), TLS after
//! an SSLRequest, log in (trust, cleartext, md5, SCRAM-SHA-256 with or without channel
//! binding) and run queries over the simple or the extended protocol.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hmac::{Hmac, Mac};
use pgring::auth::md5::{md5_response, md5_secret};
use pgring::auth::scram::{
    random_nonce, ClientChannelBinding, ScramClient, ScramCredential, SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
};
use pgring::net::{self, Keepalive, Stream};
use pgring::protocol::backend::{self, Authentication, ErrorFields};
use pgring::protocol::framing::{split_message, HEADER_LEN};
use pgring::protocol::{frontend, tag};
use rustls::pki_types::ServerName;
use sha2::Sha256;
use socket2::{Domain, Socket, Type};

use crate::conninfo::{ChannelBinding, Target};

/// Largest backend message loadgen accepts whole (DataRows included).
const MAX_MESSAGE_LEN: usize = 256 << 20;
const READ_CHUNK: usize = 16 * 1024;

/// An ErrorResponse from the server.
#[derive(Debug, Clone)]
pub struct ServerError(pub ErrorFields);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.0.severity, self.0.code, self.0.message)
    }
}

impl std::error::Error for ServerError {}

/// How the server asked us to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Trust,
    Cleartext,
    Md5,
    ScramSha256,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Trust => "trust",
            AuthMethod::Cleartext => "cleartext",
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
        }
    }
}

/// What a login did.
#[derive(Debug, Clone, Copy)]
pub struct LoginInfo {
    pub method: AuthMethod,
    /// SCRAM used ClientKey/ServerKey from the cache instead of running PBKDF2.
    pub scram_keys_cached: bool,
    /// SCRAM-SHA-256-PLUS with tls-server-end-point was used.
    pub channel_binding: bool,
}

/// How statements are sent (`tx --protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryProtocol {
    /// One `Query` message per statement.
    Simple,
    /// Unnamed `Parse`, `Bind`, `Execute`, `Sync` per statement.
    Extended,
    /// A named statement per script statement, parsed once per connection; then `Bind`,
    /// `Execute`, `Sync`.
    Prepared,
}

impl QueryProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryProtocol::Simple => "simple",
            QueryProtocol::Extended => "extended",
            QueryProtocol::Prepared => "prepared",
        }
    }
}

/// The TLS session of a connection.
#[derive(Debug, Clone, Copy)]
pub struct TlsInfo {
    /// The handshake resumed an earlier session.
    pub resumed: bool,
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: &'static str,
}

/// The server's answer to an SSLRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAnswer {
    /// 'S' and a completed handshake.
    Encrypted,
    /// 'N': the connection goes on in plaintext.
    Refused,
}

/// A failed TLS handshake (not a refusal); `verification` is why the certificate was
/// refused, when that was the cause.
#[derive(Debug)]
pub struct TlsFailed {
    pub message: String,
    pub verification: bool,
}

impl fmt::Display for TlsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TlsFailed {}

/// `(salt, iterations)` of a SCRAM verifier.
type SaltAndIterations = (Vec<u8>, u32);
/// `(ClientKey, ServerKey)`.
type Keys = ([u8; 32], [u8; 32]);

/// SCRAM keys derived from the password, per (salt, iterations), shared by the
/// connections of one executor. Disabled: every login runs PBKDF2 (via
/// `ScramCredential::Password`), as a fresh libpq client would.
#[derive(Debug, Default)]
pub struct ScramCache {
    pub enabled: bool,
    keys: HashMap<SaltAndIterations, Keys>,
}

impl ScramCache {
    pub fn new(enabled: bool) -> Rc<RefCell<ScramCache>> {
        Rc::new(RefCell::new(ScramCache {
            enabled,
            keys: HashMap::new(),
        }))
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// ClientKey and ServerKey (RFC 5802) for `password`.
fn derive_keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    (
        hmac_sha256(&salted, b"Client Key"),
        hmac_sha256(&salted, b"Server Key"),
    )
}

/// Salt and iteration count of a `server-first-message` (`r=…,s=…,i=…`).
fn salt_and_iterations(server_first: &[u8]) -> Result<(Vec<u8>, u32)> {
    let text = std::str::from_utf8(server_first)?;
    let mut salt = None;
    let mut iterations = None;
    for attr in text.split(',') {
        if let Some(s) = attr.strip_prefix("s=") {
            salt = Some(base64::engine::general_purpose::STANDARD.decode(s)?);
        } else if let Some(i) = attr.strip_prefix("i=") {
            iterations = Some(i.parse::<u32>()?);
        }
    }
    match (salt, iterations) {
        (Some(s), Some(i)) => Ok((s, i)),
        _ => bail!("malformed SCRAM server-first-message"),
    }
}

/// One connection to the server.
pub struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    /// Start of the unread bytes in `rbuf`.
    pos: usize,
    /// Body of the last message returned by [`Conn::recv`].
    body: (usize, usize),
    out: BytesMut,
    /// The TLS session, when encrypted.
    pub tls: Option<TlsInfo>,
    /// `tls-server-end-point` data for channel binding, when encrypted.
    end_point: Option<Vec<u8>>,
    /// Per script statement: its named statement exists on this connection.
    prepared: Vec<bool>,
}

/// Waits until a connecting non-blocking socket is writable, without blocking the
/// executor (glommio has no readiness API for a foreign fd, so this polls every 200 µs).
async fn wait_connected(socket: &Socket, deadline: Instant) -> io::Result<()> {
    loop {
        let mut pfd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout: the call returns at once.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else if n > 0 {
            return match socket.take_error()? {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection timed out",
            ));
        }
        glommio::timer::sleep(Duration::from_micros(200)).await;
    }
}

/// TCP connect from `source` (any port): socket2 binds, then connects without blocking.
async fn connect_from(addr: SocketAddr, source: IpAddr, timeout: Duration) -> io::Result<OwnedFd> {
    let deadline = Instant::now() + timeout;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if source.is_ipv4() {
        let one: libc::c_int = 1;
        // SAFETY: a valid fd and a c_int option value of the right size. Lets the kernel
        // pick the port at connect time per destination, so many sockets can share one
        // source address; failure only costs that optimisation.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            wait_connected(&socket, deadline).await?
        }
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

fn protocol_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    }
}

/// Parse: statement name, query, no parameter types.
fn parse_message(out: &mut BytesMut, name: &str, sql: &str) {
    out.put_u8(tag::PARSE);
    out.put_i32((4 + name.len() + 1 + sql.len() + 1 + 2) as i32);
    put_cstr(out, name);
    put_cstr(out, sql);
    out.put_i16(0);
}

/// Bind the unnamed portal to `statement`: no parameters, default result formats.
fn bind_message(out: &mut BytesMut, statement: &str) {
    out.put_u8(tag::BIND);
    out.put_i32((4 + 1 + statement.len() + 1 + 2 + 2 + 2) as i32);
    out.put_u8(0);
    put_cstr(out, statement);
    out.put_i16(0);
    out.put_i16(0);
    out.put_i16(0);
}

/// Execute the unnamed portal, all rows; then Sync.
fn execute_sync(out: &mut BytesMut) {
    out.put_u8(tag::EXECUTE);
    out.put_i32(4 + 1 + 4);
    out.put_u8(0);
    out.put_i32(0);
    out.put_u8(tag::SYNC);
    out.put_i32(4);
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// The name of script statement `i`'s prepared statement.
fn statement_name(i: usize) -> String {
    format!("loadgen_{i}")
}

const PARSE_COMPLETE: u8 = b'1';

impl Conn {
    /// TCP connect (from `source` when given) with TCP_NODELAY set (pgring's
    /// `net::tune_tcp`), on pgring's socket readiness.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Conn> {
        let keepalive = Keepalive {
            enabled: false,
            idle: Duration::ZERO,
            interval: Duration::ZERO,
            count: 0,
        };
        let stream = match source {
            None => net::connect_tcp(addr, timeout, keepalive).await,
            Some(src) => connect_from(addr, src, timeout)
                .await
                .and_then(|fd| net::tcp_stream(fd, keepalive)),
        }
        .map_err(|e| match source {
            Some(src) => anyhow!("connect to {addr} from {src}: {e}"),
            None => anyhow!("connect to {addr}: {e}"),
        })?;
        Ok(Conn {
            stream,
            rbuf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            body: (0, 0),
            out: BytesMut::with_capacity(1024),
            tls: None,
            end_point: None,
            prepared: Vec::new(),
        })
    }

    /// SSLRequest; on 'S' the TLS handshake with `host` as the server name. A failed
    /// handshake is a [`TlsFailed`] error and leaves the connection unusable.
    pub async fn start_tls(
        &mut self,
        host: &str,
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<TlsAnswer> {
        frontend::ssl_request(&mut self.out);
        self.flush().await?;
        // Exactly one byte: what follows 'S' is TLS, never to be read as plaintext.
        let mut answer = [0u8; 1];
        if self.stream.read(&mut answer).await? == 0 {
            bail!("the server closed the connection after SSLRequest");
        }
        match answer[0] {
            b'S' => {}
            b'N' => return Ok(TlsAnswer::Refused),
            b'E' => bail!("the server answered SSLRequest with an error (a pre-7.0 server?)"),
            other => bail!("unexpected answer {:?} to SSLRequest", char::from(other)),
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| anyhow!("host {host:?} is not a valid TLS server name: {e}"))?;
        if !self.stream.is_plain_tcp() {
            bail!("TLS requested twice on one connection");
        }
        let tcp = std::mem::replace(&mut self.stream, Stream::Detached);
        let tls = futures_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| match crate::tls::verification_failure(&e) {
                Some(why) => TlsFailed {
                    message: format!("server certificate refused: {why}"),
                    verification: true,
                },
                None => TlsFailed {
                    message: format!("TLS handshake failed: {e}"),
                    verification: false,
                },
            })?;
        let session = tls.get_ref().1;
        self.tls = Some(TlsInfo {
            resumed: session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            version: protocol_name(session.protocol_version()),
        });
        self.end_point = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| crate::tls::server_end_point(cert.as_ref()));
        self.stream = Stream::ServerTls(Box::new(tls));
        Ok(TlsAnswer::Encrypted)
    }

    async fn flush(&mut self) -> Result<()> {
        self.stream.write_all_flushed(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Reads the next whole message and returns its tag; its body is [`Conn::body`].
    async fn recv(&mut self) -> Result<u8> {
        loop {
            if let Some((tag, body, len)) = split_message(&self.rbuf[self.pos..], MAX_MESSAGE_LEN)?
            {
                let start = self.pos + HEADER_LEN;
                self.body = (start, start + body.len());
                self.pos += len;
                return Ok(tag);
            }
            if self.pos > 0 {
                self.rbuf.drain(..self.pos);
                self.pos = 0;
                self.body = (0, 0);
            }
            let old = self.rbuf.len();
            self.rbuf.resize(old + READ_CHUNK, 0);
            let n = match self.stream.read(&mut self.rbuf[old..]).await {
                Ok(n) => n,
                Err(e) => {
                    self.rbuf.truncate(old);
                    return Err(e.into());
                }
            };
            self.rbuf.truncate(old + n);
            if n == 0 {
                bail!("server closed the connection");
            }
        }
    }

    fn body(&self) -> &[u8] {
        &self.rbuf[self.body.0..self.body.1]
    }

    fn server_error(&self) -> ServerError {
        ServerError(backend::parse_error_response(self.body()))
    }

    /// Startup, authentication, and everything up to the first ReadyForQuery.
    ///
    /// Channel binding follows `target.channel_binding` as libpq does: over TLS, SCRAM
    /// selects SCRAM-SHA-256-PLUS when the server offers it (gs2 flag `y` when it does
    /// not); `require` fails a login that ends without it.
    pub async fn login(
        &mut self,
        target: &Target,
        scram_cache: &RefCell<ScramCache>,
    ) -> Result<LoginInfo> {
        frontend::startup_message(
            &mut self.out,
            [
                ("user", target.user.as_str()),
                ("database", target.dbname.as_str()),
                ("application_name", target.application_name.as_str()),
            ],
        );
        self.flush().await?;
        let password = || {
            target
                .password
                .as_deref()
                .ok_or_else(|| anyhow!("the server asked for a password and none was given"))
        };
        let mut info = LoginInfo {
            method: AuthMethod::Trust,
            scram_keys_cached: false,
            channel_binding: false,
        };
        let mut scram: Option<(String, ClientChannelBinding)> = None;
        let mut scram_final = None;
        let cb_wanted = target.channel_binding != ChannelBinding::Disable;
        let cb_required = target.channel_binding == ChannelBinding::Require;
        loop {
            match self.recv().await? {
                tag::AUTHENTICATION => {
                    let auth = backend::parse_authentication(self.body())?;
                    if cb_required
                        && matches!(
                            auth,
                            Authentication::CleartextPassword | Authentication::Md5Password { .. }
                        )
                    {
                        bail!("channel_binding=require, but the server asked for a password without SCRAM");
                    }
                    match auth {
                        Authentication::Ok => {
                            if cb_required && !info.channel_binding {
                                bail!("channel_binding=require, but the server authenticated the client without channel binding");
                            }
                        }
                        Authentication::CleartextPassword => {
                            info.method = AuthMethod::Cleartext;
                            frontend::password_message(&mut self.out, password()?.as_bytes());
                            self.flush().await?;
                        }
                        Authentication::Md5Password { salt } => {
                            info.method = AuthMethod::Md5;
                            let secret = md5_secret(&target.user, password()?);
                            let response = md5_response(&secret, salt);
                            frontend::password_message(&mut self.out, response.as_bytes());
                            self.flush().await?;
                        }
                        Authentication::Sasl { mechanisms } => {
                            info.method = AuthMethod::ScramSha256;
                            let cbind = match (&self.end_point, cb_wanted) {
                                (Some(data), true) if mechanisms.contains(&SCRAM_SHA_256_PLUS) => {
                                    ClientChannelBinding::TlsServerEndPoint(data.clone())
                                }
                                _ if cb_required => bail!(
                                    "channel_binding=require, but {}",
                                    if self.end_point.is_none() {
                                        "the connection is not encrypted"
                                    } else {
                                        "the server does not offer SCRAM-SHA-256-PLUS"
                                    }
                                ),
                                (Some(_), true) => ClientChannelBinding::SupportedNotOffered,
                                _ => ClientChannelBinding::Unsupported,
                            };
                            if cbind.mechanism() == SCRAM_SHA_256
                                && !mechanisms.contains(&SCRAM_SHA_256)
                            {
                                bail!("server offers SASL mechanisms {mechanisms:?}, not SCRAM-SHA-256");
                            }
                            info.channel_binding = cbind.mechanism() == SCRAM_SHA_256_PLUS;
                            password()?;
                            let nonce = random_nonce();
                            // The client-first-message depends only on the nonce and the
                            // channel binding; the credential is chosen once the salt is
                            // known (below).
                            let (_, first) = ScramClient::with_channel_binding(
                                ScramCredential::Password(String::new()),
                                &nonce,
                                cbind.clone(),
                            )?;
                            frontend::sasl_initial_response(
                                &mut self.out,
                                cbind.mechanism(),
                                &first,
                            );
                            self.flush().await?;
                            scram = Some((nonce, cbind));
                        }
                        Authentication::SaslContinue { data } => {
                            let (nonce, cbind) = scram
                                .clone()
                                .ok_or_else(|| anyhow!("unexpected AuthenticationSASLContinue"))?;
                            let server_first = data.to_vec();
                            let credential = {
                                let mut cache = scram_cache.borrow_mut();
                                if cache.enabled {
                                    let key = salt_and_iterations(&server_first)?;
                                    let (client_key, server_key) = match cache.keys.get(&key) {
                                        Some(keys) => {
                                            info.scram_keys_cached = true;
                                            *keys
                                        }
                                        None => {
                                            let keys = derive_keys(password()?, &key.0, key.1);
                                            cache.keys.insert(key, keys);
                                            keys
                                        }
                                    };
                                    ScramCredential::Keys {
                                        client_key,
                                        server_key: Some(server_key),
                                    }
                                } else {
                                    ScramCredential::Password(password()?.to_string())
                                }
                            };
                            let (client, _) =
                                ScramClient::with_channel_binding(credential, &nonce, cbind)?;
                            let (fin, client_final) = client.handle_server_first(&server_first)?;
                            frontend::sasl_response(&mut self.out, &client_final);
                            self.flush().await?;
                            scram_final = Some(fin);
                        }
                        Authentication::SaslFinal { data } => {
                            let fin = scram_final
                                .take()
                                .ok_or_else(|| anyhow!("unexpected AuthenticationSASLFinal"))?;
                            fin.finish(data)?;
                        }
                        Authentication::Unsupported { code } => {
                            bail!("unsupported authentication request (code {code})")
                        }
                    }
                }
                tag::ERROR_RESPONSE => return Err(self.server_error().into()),
                tag::READY_FOR_QUERY => {
                    backend::parse_ready_for_query(self.body())?;
                    return Ok(info);
                }
                // ParameterStatus, BackendKeyData, NoticeResponse, NegotiateProtocolVersion.
                _ => {}
            }
        }
    }

    /// Runs each statement in turn and waits for its ReadyForQuery.
    /// `Ok(Some(e))`: the server answered with an ErrorResponse (the connection is still
    /// usable); `Err`: I/O or protocol failure.
    pub async fn run_script(
        &mut self,
        statements: &[String],
        protocol: QueryProtocol,
    ) -> Result<Option<ServerError>> {
        let mut first_error = None;
        if self.prepared.len() != statements.len() {
            self.prepared = vec![false; statements.len()];
        }
        for (i, sql) in statements.iter().enumerate() {
            match protocol {
                QueryProtocol::Simple => frontend::query(&mut self.out, sql),
                QueryProtocol::Extended => {
                    parse_message(&mut self.out, "", sql);
                    bind_message(&mut self.out, "");
                    execute_sync(&mut self.out);
                }
                QueryProtocol::Prepared => {
                    let name = statement_name(i);
                    if !self.prepared[i] {
                        parse_message(&mut self.out, &name, sql);
                    }
                    bind_message(&mut self.out, &name);
                    execute_sync(&mut self.out);
                }
            }
            self.flush().await?;
            loop {
                match self.recv().await? {
                    tag::READY_FOR_QUERY => break,
                    PARSE_COMPLETE if protocol == QueryProtocol::Prepared => {
                        self.prepared[i] = true;
                    }
                    tag::ERROR_RESPONSE if first_error.is_none() => {
                        first_error = Some(self.server_error());
                    }
                    _ => {}
                }
            }
        }
        Ok(first_error)
    }

    /// Holds an idle connection until `until`: Ok when nothing happened, Err with why the
    /// connection ended otherwise (an ErrorResponse such as an idle timeout's FATAL, EOF).
    pub async fn hold(&mut self, until: Instant) -> Result<()> {
        loop {
            let wait = until.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Ok(());
            }
            let got = futures_lite::future::or(async { Some(self.recv().await) }, async {
                glommio::timer::sleep(wait).await;
                None
            })
            .await;
            match got {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.context("connection lost while idle")),
                Some(Ok(tag::ERROR_RESPONSE)) => return Err(self.server_error().into()),
                // ParameterStatus, NoticeResponse: still there.
                Some(Ok(_)) => {}
            }
        }
    }

    /// Terminate and close.
    pub async fn terminate(mut self) {
        frontend::terminate(&mut self.out);
        let _ = self.flush().await;
        let _ = self.stream.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_first_attributes() {
        let (salt, i) = salt_and_iterations(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096").unwrap();
        assert_eq!(i, 4096);
        assert_eq!(salt.len(), 12);
        assert!(salt_and_iterations(b"r=abc").is_err());
    }

    /// Keys derived here give the same client-final-message as pgring's own PBKDF2 path.
    #[test]
    fn cached_keys_match_password_credential() {
        let nonce = "rOprNGfwEbeRWgbNEkqO";
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (salt, iterations) = salt_and_iterations(server_first).unwrap();
        let (client_key, server_key) = derive_keys("pencil", &salt, iterations);
        let run = |credential| {
            let (client, first) = ScramClient::new(credential, nonce).unwrap();
            let (_, fin) = client.handle_server_first(server_first).unwrap();
            (first, fin)
        };
        let with_password = run(ScramCredential::Password("pencil".into()));
        let with_keys = run(ScramCredential::Keys {
            client_key,
            server_key: Some(server_key),
        });
        assert_eq!(with_password, with_keys);
    }
}
