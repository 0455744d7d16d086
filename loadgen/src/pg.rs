//! A minimal PostgreSQL client connection on glommio, built on pgring's sans-IO protocol
//! module: connect (with TCP_NODELAY), log in (trust, cleartext, md5, SCRAM-SHA-256) and
//! run simple-protocol queries.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use hmac::{Hmac, Mac};
use pgring::auth::md5::{md5_response, md5_secret};
use pgring::auth::scram::{random_nonce, ScramClient, ScramCredential, SCRAM_SHA_256};
use pgring::net::{configure_stream, Keepalive};
use pgring::protocol::backend::{self, Authentication, ErrorFields};
use pgring::protocol::framing::{split_message, HEADER_LEN};
use pgring::protocol::{frontend, tag};
use sha2::Sha256;

use crate::conninfo::Target;

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
}

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
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Start of the unread bytes in `rbuf`.
    pos: usize,
    /// Body of the last message returned by [`Conn::recv`].
    body: (usize, usize),
    out: BytesMut,
}

impl Conn {
    /// TCP connect with TCP_NODELAY set (pgring's `net::configure_stream`).
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(io::Error::from)
            .map_err(|e| anyhow!("connect to {addr}: {e}"))?;
        configure_stream(
            &stream,
            Keepalive {
                enabled: false,
                idle: Duration::ZERO,
                interval: Duration::ZERO,
                count: 0,
            },
        )?;
        Ok(Conn {
            stream,
            rbuf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            body: (0, 0),
            out: BytesMut::with_capacity(1024),
        })
    }

    async fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.out).await?;
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
        };
        let mut scram_nonce: Option<String> = None;
        let mut scram_final = None;
        loop {
            match self.recv().await? {
                tag::AUTHENTICATION => {
                    let auth = backend::parse_authentication(self.body())?;
                    match auth {
                        Authentication::Ok => {}
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
                            if !mechanisms.contains(&SCRAM_SHA_256) {
                                bail!("server offers SASL mechanisms {mechanisms:?}, not SCRAM-SHA-256");
                            }
                            password()?;
                            let nonce = random_nonce();
                            // The client-first-message depends only on the nonce; the
                            // credential is chosen once the salt is known (below).
                            let (_, first) =
                                ScramClient::new(ScramCredential::Password(String::new()), &nonce)?;
                            frontend::sasl_initial_response(&mut self.out, SCRAM_SHA_256, &first);
                            self.flush().await?;
                            scram_nonce = Some(nonce);
                        }
                        Authentication::SaslContinue { data } => {
                            let nonce = scram_nonce
                                .as_deref()
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
                            let (client, _) = ScramClient::new(credential, nonce)?;
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

    /// Sends each statement as one simple Query and waits for its ReadyForQuery.
    /// `Ok(Some(e))`: the server answered with an ErrorResponse (the connection is still
    /// usable); `Err`: I/O or protocol failure.
    pub async fn run_script(&mut self, statements: &[String]) -> Result<Option<ServerError>> {
        let mut first_error = None;
        for sql in statements {
            frontend::query(&mut self.out, sql);
            self.flush().await?;
            loop {
                match self.recv().await? {
                    tag::READY_FOR_QUERY => break,
                    tag::ERROR_RESPONSE if first_error.is_none() => {
                        first_error = Some(self.server_error());
                    }
                    _ => {}
                }
            }
        }
        Ok(first_error)
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
