//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it, both roles.
//!
//! Owns: the stored verifier type [`ScramSecret`] (PostgreSQL's
//! `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` format), the server
//! state machine ([`ScramServer`] → [`ScramServerChallenged`]) used when pgring
//! authenticates a client, and the client state machine ([`ScramClient`] →
//! [`ScramClientFinal`]) used when pgring logs in to PostgreSQL, either with a
//! password or with keys recovered from a client's exchange ("SCRAM
//! pass-through", see [`ClientKey`]).
//!
//! Must not: perform I/O, read clocks, or draw randomness inside the state
//! machines (nonces and salts are arguments; [`random_nonce`] and
//! [`random_salt`] are convenience helpers for callers), panic on any peer
//! input, or print secrets (every type holding key material has a redacting
//! `Debug`). Secret comparisons use `subtle`.
//!
//! PostgreSQL specifics: the user name in `client-first-message` is ignored
//! (libpq sends `n=`); any `n=` value is accepted. Authorization identities
//! (`a=`) and mandatory extensions (`m=`) are rejected like PostgreSQL does.
//! Channel-binding flags `n` and `y` are supported, and `p=tls-server-end-point`
//! is supported when the caller supplies the binding data (the TLS server
//! certificate hash); without data, `p=` is a protocol error.
//!
//! SASLprep: PostgreSQL normalises passwords with SASLprep before hashing.
//! This module uses the password bytes as-is, which is identical for ASCII
//! passwords (and for any password SASLprep leaves unchanged). Non-ASCII
//! passwords that SASLprep would change are **not** normalised.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[cfg(test)]
mod tests;

/// SASL mechanism name without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL mechanism name with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// Channel-binding type name PostgreSQL supports.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// Upper bound on the iteration count a client accepts from a server, so a
/// hostile server cannot make pgring burn CPU on PBKDF2.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Default iteration count PostgreSQL uses (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

const SECRET_PREFIX: &str = "SCRAM-SHA-256$";
const KEY_LEN: usize = 32;
/// Longest `e=` server error text kept in [`ScramError::ServerError`].
const MAX_SERVER_ERROR_LEN: usize = 128;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    // Invariant: HMAC accepts keys of any length, so this never fails.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

fn decode_key(b64: &str) -> Option<[u8; KEY_LEN]> {
    let bytes = B64.decode(b64).ok()?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).ok()
}

/// RFC 5802 `printable`: `%x21-2B / %x2D-7E` (printable ASCII except `,`).
fn is_valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Draws a fresh nonce from the OS RNG: base64 of 18 random bytes (24
/// printable characters, never containing `,`). Use it for the server nonce
/// suffix or the client nonce.
pub fn random_nonce() -> String {
    let mut raw = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    B64.encode(raw)
}

/// Draws a fresh 16-byte salt from the OS RNG (PostgreSQL's salt length).
pub fn random_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    salt
}

// ---------------------------------------------------------------------------
// Stored secret
// ---------------------------------------------------------------------------

/// Why a SCRAM verifier string could not be parsed. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The string does not start with `SCRAM-SHA-256$`.
    #[error("SCRAM secret does not start with \"SCRAM-SHA-256$\"")]
    MissingPrefix,
    /// The `$` / `:` structure is wrong.
    #[error(
        "SCRAM secret is not of the form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
    )]
    BadStructure,
    /// The iteration count is not a positive 32-bit integer.
    #[error("SCRAM secret has an invalid iteration count")]
    BadIterations,
    /// The salt is not valid non-empty base64.
    #[error("SCRAM secret has an invalid salt")]
    BadSalt,
    /// A key is not base64 of exactly 32 bytes.
    #[error("SCRAM secret has an invalid {0}")]
    BadKey(&'static str),
}

/// A SCRAM-SHA-256 verifier as PostgreSQL stores it in `pg_authid`.
///
/// `Display` produces the PostgreSQL text format (which is password
/// equivalent for pass-through purposes: handle with care); `Debug` redacts
/// the keys.
#[derive(Clone)]
pub struct ScramSecret {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl ScramSecret {
    /// Parses `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let rest = s
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let (iter_salt, keys) = rest.split_once('$').ok_or(SecretError::BadStructure)?;
        let (iter, salt) = iter_salt.split_once(':').ok_or(SecretError::BadStructure)?;
        let (stored, server) = keys.split_once(':').ok_or(SecretError::BadStructure)?;
        if server.contains(':') || server.contains('$') {
            return Err(SecretError::BadStructure);
        }
        let iterations: u32 = if iter.bytes().all(|b| b.is_ascii_digit()) {
            iter.parse().map_err(|_| SecretError::BadIterations)?
        } else {
            return Err(SecretError::BadIterations);
        };
        if iterations == 0 {
            return Err(SecretError::BadIterations);
        }
        let salt = B64.decode(salt).map_err(|_| SecretError::BadSalt)?;
        if salt.is_empty() {
            return Err(SecretError::BadSalt);
        }
        let stored_key = decode_key(stored).ok_or(SecretError::BadKey("StoredKey"))?;
        let server_key = decode_key(server).ok_or(SecretError::BadKey("ServerKey"))?;
        Ok(Self {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Derives the verifier from a password with PBKDF2-HMAC-SHA256, as
    /// `CREATE ROLE ... PASSWORD` does. Expensive by design: call it once when
    /// building the auth table, never per login.
    ///
    /// The password bytes are used as-is (no SASLprep; see module docs). An
    /// `iterations` of 0 is treated as 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let keys = ClientKeys::derive(password.as_bytes(), salt, iterations);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&keys.client_key),
            server_key: keys.server_key,
        }
    }

    /// Builds a verifier from its parts (e.g. for a mock secret).
    /// `iterations` of 0 is treated as 1.
    pub fn from_parts(
        iterations: u32,
        salt: Vec<u8>,
        stored_key: [u8; 32],
        server_key: [u8; 32],
    ) -> Self {
        Self {
            iterations: iterations.max(1),
            salt,
            stored_key,
            server_key,
        }
    }

    /// PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Salt (not secret).
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// `StoredKey = H(ClientKey)`.
    pub fn stored_key(&self) -> &[u8; 32] {
        &self.stored_key
    }

    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
    pub fn server_key(&self) -> &[u8; 32] {
        &self.server_key
    }

    /// Checks that `client_key` belongs to this verifier (`H(ClientKey) ==
    /// StoredKey`), in constant time.
    pub fn matches_client_key(&self, client_key: &ClientKey) -> bool {
        bool::from(sha256(&client_key.0).ct_eq(&self.stored_key))
    }
}

impl PartialEq for ScramSecret {
    fn eq(&self, other: &Self) -> bool {
        let keys_eq =
            self.stored_key.ct_eq(&other.stored_key) & self.server_key.ct_eq(&other.server_key);
        self.iterations == other.iterations && self.salt == other.salt && bool::from(keys_eq)
    }
}

impl Eq for ScramSecret {}

impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SECRET_PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// `ClientKey = HMAC(SaltedPassword, "Client Key")`, recovered by the server
/// from a successful client proof. Together with the verifier's ServerKey it
/// lets pgring log in to PostgreSQL (with the same verifier) without the
/// plaintext password. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey([u8; KEY_LEN]);

impl ClientKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientKey(<redacted>)")
    }
}

/// ClientKey and ServerKey derived from a password.
struct ClientKeys {
    client_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl ClientKeys {
    fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        Self {
            client_key: hmac(&salted, &[b"Client Key"]),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Errors from the SCRAM state machines. Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The peer sent a malformed or out-of-sequence message (protocol
    /// violation). The text says what was wrong; it never echoes peer data.
    #[error("malformed SCRAM message: {0}")]
    Protocol(&'static str),
    /// Channel-binding negotiation failed (wrong flag for the selected
    /// mechanism, unsupported binding type, or `c=` mismatch). Also a
    /// protocol violation.
    #[error("SCRAM channel binding negotiation error: {0}")]
    ChannelBinding(&'static str),
    /// Server side: the client's proof is wrong (wrong password, or unknown
    /// user going through a mock secret).
    #[error("SCRAM authentication failed: invalid client proof")]
    AuthFailed,
    /// Client side: the server's signature is wrong, i.e. the server does not
    /// know the verifier.
    #[error("SCRAM authentication failed: invalid server signature")]
    ServerSignatureMismatch,
    /// Client side: the server sent `e=<value>` in server-final.
    #[error("SCRAM server error: {0}")]
    ServerError(String),
    /// Client side: the server asked for an iteration count outside
    /// `1..=MAX_ITERATIONS`.
    #[error("SCRAM iteration count {0} out of accepted range")]
    IterationCount(u32),
    /// A nonce passed in by the caller is not printable ASCII without `,`.
    #[error("invalid SCRAM nonce supplied by caller")]
    InvalidNonce,
}

impl ScramError {
    /// True when the exchange was well-formed but the credentials were wrong
    /// (the peer failed to prove knowledge of the key, or the server rejected
    /// our proof). Report these as "password authentication failed".
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            Self::AuthFailed | Self::ServerSignatureMismatch | Self::ServerError(_)
        )
    }

    /// True when the peer violated the protocol (malformed message, bad
    /// channel-binding negotiation, absurd iteration count).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            Self::Protocol(_) | Self::ChannelBinding(_) | Self::IterationCount(_)
        )
    }
}

// ---------------------------------------------------------------------------
// Message parsing helpers
// ---------------------------------------------------------------------------

/// Splits a SCRAM message into `,`-separated attributes.
fn attrs(msg: &[u8]) -> impl Iterator<Item = &[u8]> {
    msg.split(|&b| b == b',')
}

/// Returns the value of attribute `name` (`name=value`), if `attr` is it.
fn attr_value(attr: &[u8], name: u8) -> Option<&[u8]> {
    match attr {
        [n, b'=', value @ ..] if *n == name => Some(value),
        _ => None,
    }
}

fn require_attr<'a>(
    attr: Option<&'a [u8]>,
    name: u8,
    err: &'static str,
) -> Result<&'a [u8], ScramError> {
    attr.and_then(|a| attr_value(a, name))
        .ok_or(ScramError::Protocol(err))
}

/// A well-formed optional extension attribute: `<alpha>=<value>`.
fn is_extension(attr: &[u8]) -> bool {
    matches!(attr, [n, b'=', ..] if n.is_ascii_alphabetic())
}

// ---------------------------------------------------------------------------
// Channel binding
// ---------------------------------------------------------------------------

/// Server-side channel-binding situation for one exchange.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ServerChannelBinding<'a> {
    /// Only `SCRAM-SHA-256` was advertised (plain TCP). Accepts `n` and `y`.
    NotOffered,
    /// `SCRAM-SHA-256-PLUS` was advertised (TLS) but the client selected
    /// `SCRAM-SHA-256`. Accepts `n`; `y` means a downgrade and is rejected.
    OfferedNotSelected,
    /// The client selected `SCRAM-SHA-256-PLUS`; requires
    /// `p=tls-server-end-point` with this binding data (hash of the server
    /// certificate).
    TlsServerEndPoint(&'a [u8]),
}

impl fmt::Debug for ServerChannelBinding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOffered => f.write_str("NotOffered"),
            Self::OfferedNotSelected => f.write_str("OfferedNotSelected"),
            Self::TlsServerEndPoint(d) => write!(f, "TlsServerEndPoint({} bytes)", d.len()),
        }
    }
}

/// Client-side channel-binding choice for one exchange.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientChannelBinding {
    /// gs2 flag `n`: the client does not support channel binding (what
    /// pgring uses over plain TCP).
    Unsupported,
    /// gs2 flag `y`: the client supports channel binding but the server did
    /// not offer `SCRAM-SHA-256-PLUS`.
    SupportedNotOffered,
    /// gs2 flag `p=tls-server-end-point` with the binding data; the caller
    /// must select `SCRAM-SHA-256-PLUS`.
    TlsServerEndPoint(Vec<u8>),
}

impl fmt::Debug for ClientChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported => f.write_str("Unsupported"),
            Self::SupportedNotOffered => f.write_str("SupportedNotOffered"),
            Self::TlsServerEndPoint(d) => write!(f, "TlsServerEndPoint({} bytes)", d.len()),
        }
    }
}

impl ClientChannelBinding {
    fn gs2_header(&self) -> &'static [u8] {
        match self {
            Self::Unsupported => b"n,,",
            Self::SupportedNotOffered => b"y,,",
            Self::TlsServerEndPoint(_) => b"p=tls-server-end-point,,",
        }
    }

    fn data(&self) -> &[u8] {
        match self {
            Self::TlsServerEndPoint(d) => d,
            _ => &[],
        }
    }

    /// SASL mechanism name to select for this choice.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Self::TlsServerEndPoint(_) => SCRAM_SHA_256_PLUS,
            _ => SCRAM_SHA_256,
        }
    }
}

/// `c=` value: base64(gs2-header ++ channel-binding data).
fn cbind_input(gs2_header: &[u8], data: &[u8]) -> String {
    let mut input = Vec::with_capacity(gs2_header.len() + data.len());
    input.extend_from_slice(gs2_header);
    input.extend_from_slice(data);
    B64.encode(input)
}

// ---------------------------------------------------------------------------
// Server role
// ---------------------------------------------------------------------------

/// Server role, first step: consumes `client-first-message`.
#[derive(Debug)]
pub struct ScramServer;

impl ScramServer {
    /// Starts an exchange on a plain connection (only `SCRAM-SHA-256`
    /// advertised). See [`ScramServer::start_with_channel_binding`].
    pub fn start(
        secret: &ScramSecret,
        server_nonce_suffix: &str,
        client_first: &[u8],
    ) -> Result<(ScramServerChallenged, Vec<u8>), ScramError> {
        Self::start_with_channel_binding(
            secret,
            server_nonce_suffix,
            client_first,
            ServerChannelBinding::NotOffered,
        )
    }

    /// Parses `client-first-message` and returns the challenged state and
    /// the `server-first-message` bytes to send in
    /// `AuthenticationSASLContinue`.
    ///
    /// `server_nonce_suffix` must be fresh random printable ASCII without `,`
    /// (e.g. [`random_nonce`]). For an unknown user, pass a mock secret so the
    /// exchange fails at the proof like a wrong password.
    pub fn start_with_channel_binding(
        secret: &ScramSecret,
        server_nonce_suffix: &str,
        client_first: &[u8],
        cbind: ServerChannelBinding<'_>,
    ) -> Result<(ScramServerChallenged, Vec<u8>), ScramError> {
        if !is_valid_nonce(server_nonce_suffix.as_bytes()) {
            return Err(ScramError::InvalidNonce);
        }

        // gs2-header: cbind-flag "," [authzid] ","
        let mut it = client_first.splitn(3, |&b| b == b',');
        let flag = it.next().unwrap_or_default();
        let authzid = it
            .next()
            .ok_or(ScramError::Protocol("missing gs2 header"))?;
        let bare = it
            .next()
            .ok_or(ScramError::Protocol("missing gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Protocol(
                "authorization identity is not supported",
            ));
        }
        let flag_len = flag.len();
        match (flag, cbind) {
            (b"n", ServerChannelBinding::TlsServerEndPoint(_)) => {
                return Err(ScramError::ChannelBinding(
                    "client selected SCRAM-SHA-256-PLUS but sent no channel binding",
                ))
            }
            (b"n", _) => {}
            (b"y", ServerChannelBinding::NotOffered) => {}
            (b"y", _) => {
                return Err(ScramError::ChannelBinding(
                    "client thinks the server does not support channel binding, but it does",
                ))
            }
            ([b'p', b'=', cb_name @ ..], ServerChannelBinding::TlsServerEndPoint(_)) => {
                if cb_name != TLS_SERVER_END_POINT.as_bytes() {
                    return Err(ScramError::ChannelBinding(
                        "unsupported channel binding type",
                    ));
                }
            }
            ([b'p', b'=', ..], _) => {
                return Err(ScramError::ChannelBinding(
                    "client requires channel binding but SCRAM-SHA-256-PLUS was not selected",
                ))
            }
            _ => return Err(ScramError::Protocol("invalid gs2 channel-binding flag")),
        }
        // gs2 header is flag "," authzid(empty) ","
        let gs2_header = client_first
            .get(..flag_len + 2)
            .ok_or(ScramError::Protocol("missing gs2 header"))?;

        // client-first-message-bare: [m=...,] n=user,r=nonce[,ext...]
        let mut bare_attrs = attrs(bare);
        let first = bare_attrs.next();
        if first.is_some_and(|a| attr_value(a, b'm').is_some()) {
            return Err(ScramError::Protocol("unsupported mandatory extension"));
        }
        require_attr(first, b'n', "expected user name attribute")?;
        let client_nonce = require_attr(bare_attrs.next(), b'r', "expected nonce attribute")?;
        if !is_valid_nonce(client_nonce) {
            return Err(ScramError::Protocol("invalid client nonce"));
        }
        if !bare_attrs.all(is_extension) {
            return Err(ScramError::Protocol("malformed attribute in client-first"));
        }

        let mut nonce = Vec::with_capacity(client_nonce.len() + server_nonce_suffix.len());
        nonce.extend_from_slice(client_nonce);
        nonce.extend_from_slice(server_nonce_suffix.as_bytes());

        let mut server_first = Vec::with_capacity(nonce.len() + 64);
        server_first.extend_from_slice(b"r=");
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(B64.encode(&secret.salt).as_bytes());
        server_first.extend_from_slice(b",i=");
        server_first.extend_from_slice(secret.iterations.to_string().as_bytes());

        let mut auth_message = Vec::with_capacity(bare.len() + server_first.len() + 128);
        auth_message.extend_from_slice(bare);
        auth_message.push(b',');
        auth_message.extend_from_slice(&server_first);

        let cbind_data = match cbind {
            ServerChannelBinding::TlsServerEndPoint(d) => d,
            _ => &[],
        };
        let expected_cbind = cbind_input(gs2_header, cbind_data);

        Ok((
            ScramServerChallenged {
                stored_key: secret.stored_key,
                server_key: secret.server_key,
                nonce,
                expected_cbind,
                auth_message,
            },
            server_first,
        ))
    }
}

/// Server role, second step: waiting for `client-final-message`.
pub struct ScramServerChallenged {
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
    nonce: Vec<u8>,
    expected_cbind: String,
    auth_message: Vec<u8>,
}

impl fmt::Debug for ScramServerChallenged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServerChallenged")
            .field("nonce", &String::from_utf8_lossy(&self.nonce))
            .field("keys", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ScramServerChallenged {
    /// Verifies `client-final-message`. On success returns the
    /// `server-final-message` (`v=...`) to send in `AuthenticationSASLFinal`
    /// and the client's recovered [`ClientKey`] (for SCRAM pass-through).
    ///
    /// A malformed message is [`ScramError::Protocol`] /
    /// [`ScramError::ChannelBinding`]; a wrong proof is
    /// [`ScramError::AuthFailed`].
    pub fn finish(self, client_final: &[u8]) -> Result<(Vec<u8>, ClientKey), ScramError> {
        // c=cbind,r=nonce[,ext...],p=proof
        let mut parts = attrs(client_final);
        let cbind = require_attr(parts.next(), b'c', "expected channel-binding attribute")?;
        let nonce = require_attr(parts.next(), b'r', "expected nonce attribute")?;
        let rest: Vec<&[u8]> = parts.collect();
        let (proof_attr, extensions) = rest
            .split_last()
            .ok_or(ScramError::Protocol("expected proof attribute"))?;
        let proof_b64 =
            attr_value(proof_attr, b'p').ok_or(ScramError::Protocol("expected proof attribute"))?;
        if !extensions.iter().all(|a| is_extension(a)) {
            return Err(ScramError::Protocol("malformed attribute in client-final"));
        }
        // client-final-message-without-proof: everything before ",p=".
        let without_proof_len = client_final
            .len()
            .checked_sub(proof_attr.len() + 1)
            .ok_or(ScramError::Protocol("expected proof attribute"))?;
        let without_proof = client_final
            .get(..without_proof_len)
            .ok_or(ScramError::Protocol("expected proof attribute"))?;

        if cbind != self.expected_cbind.as_bytes() {
            return Err(ScramError::ChannelBinding(
                "channel binding data does not match",
            ));
        }
        if nonce != self.nonce.as_slice() {
            return Err(ScramError::Protocol("nonce does not match"));
        }
        let proof = B64
            .decode(proof_b64)
            .map_err(|_| ScramError::Protocol("proof is not valid base64"))?;
        let proof = <[u8; KEY_LEN]>::try_from(proof.as_slice())
            .map_err(|_| ScramError::Protocol("proof has the wrong length"))?;

        let mut auth_message = self.auth_message;
        auth_message.push(b',');
        auth_message.extend_from_slice(without_proof);

        let client_signature = hmac(&self.stored_key, &[&auth_message]);
        let client_key = xor(&proof, &client_signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.stored_key)) {
            return Err(ScramError::AuthFailed);
        }

        let server_signature = hmac(&self.server_key, &[&auth_message]);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(B64.encode(server_signature).as_bytes());
        Ok((server_final, ClientKey(client_key)))
    }
}

// ---------------------------------------------------------------------------
// Client role
// ---------------------------------------------------------------------------

/// What pgring proves knowledge of when logging in to PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub enum ScramCredential {
    /// The plaintext password (PBKDF2 runs once per login, with the server's
    /// salt and iteration count).
    Password(String),
    /// Keys recovered from a client's exchange (SCRAM pass-through). Only
    /// works if the server's verifier has the same salt and iterations as
    /// the one the keys came from. With `server_key: None` the server's
    /// signature cannot be checked: [`ScramClientFinal::finish`] then only
    /// checks that `v=` is well-formed, i.e. **the server is not
    /// authenticated**. Pass the verifier's ServerKey whenever it is known.
    Keys {
        /// `ClientKey` from [`ScramServerChallenged::finish`].
        client_key: [u8; 32],
        /// `ServerKey` from the verifier, to authenticate the server.
        server_key: Option<[u8; 32]>,
    },
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password(<redacted>)"),
            Self::Keys { server_key, .. } => f
                .debug_struct("Keys")
                .field("client_key", &"<redacted>")
                .field("server_key", &server_key.map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// Client role, first step: `client-first-message` has been produced;
/// waiting for `server-first-message`.
pub struct ScramClient {
    credential: ScramCredential,
    cbind: ClientChannelBinding,
    client_nonce: Vec<u8>,
    client_first_bare: Vec<u8>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("credential", &self.credential)
            .field("cbind", &self.cbind)
            .field("client_nonce", &String::from_utf8_lossy(&self.client_nonce))
            .finish_non_exhaustive()
    }
}

/// Escapes a SASL name (`,` → `=2C`, `=` → `=3D`).
fn sasl_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// Starts an exchange without channel binding (gs2 flag `n`, mechanism
    /// `SCRAM-SHA-256`). Returns the client and the `client-first-message`
    /// (`n,,n=,r=<nonce>`) to send in `SASLInitialResponse`.
    ///
    /// `client_nonce` must be fresh random printable ASCII without `,`
    /// (e.g. [`random_nonce`]), otherwise [`ScramError::InvalidNonce`].
    pub fn new(
        credential: ScramCredential,
        client_nonce: &str,
    ) -> Result<(ScramClient, Vec<u8>), ScramError> {
        Self::with_options(
            credential,
            client_nonce,
            "",
            ClientChannelBinding::Unsupported,
        )
    }

    /// Like [`ScramClient::new`] with an explicit channel-binding choice.
    /// Select the mechanism [`ClientChannelBinding::mechanism`] returns.
    pub fn with_channel_binding(
        credential: ScramCredential,
        client_nonce: &str,
        cbind: ClientChannelBinding,
    ) -> Result<(ScramClient, Vec<u8>), ScramError> {
        Self::with_options(credential, client_nonce, "", cbind)
    }

    /// Full constructor; `user` goes in `n=` (PostgreSQL ignores it and
    /// libpq sends it empty, but RFC test vectors use it).
    fn with_options(
        credential: ScramCredential,
        client_nonce: &str,
        user: &str,
        cbind: ClientChannelBinding,
    ) -> Result<(ScramClient, Vec<u8>), ScramError> {
        if !is_valid_nonce(client_nonce.as_bytes()) {
            return Err(ScramError::InvalidNonce);
        }
        let mut bare = b"n=".to_vec();
        bare.extend_from_slice(sasl_name(user).as_bytes());
        bare.extend_from_slice(b",r=");
        bare.extend_from_slice(client_nonce.as_bytes());

        let mut first = cbind.gs2_header().to_vec();
        first.extend_from_slice(&bare);
        Ok((
            ScramClient {
                credential,
                cbind,
                client_nonce: client_nonce.as_bytes().to_vec(),
                client_first_bare: bare,
            },
            first,
        ))
    }

    /// Consumes `server-first-message` (from `AuthenticationSASLContinue`)
    /// and returns the final state plus the `client-final-message` to send.
    ///
    /// Rejects a server nonce that does not extend ours, a bad salt, and an
    /// iteration count outside `1..=MAX_ITERATIONS`.
    pub fn handle_server_first(
        self,
        server_first: &[u8],
    ) -> Result<(ScramClientFinal, Vec<u8>), ScramError> {
        let mut parts = attrs(server_first);
        let first = parts.next();
        if first.is_some_and(|a| attr_value(a, b'm').is_some()) {
            return Err(ScramError::Protocol("unsupported mandatory extension"));
        }
        let nonce = require_attr(first, b'r', "expected nonce attribute")?;
        let salt_b64 = require_attr(parts.next(), b's', "expected salt attribute")?;
        let iter_str = require_attr(parts.next(), b'i', "expected iteration count attribute")?;
        if !parts.all(is_extension) {
            return Err(ScramError::Protocol("malformed attribute in server-first"));
        }

        if !is_valid_nonce(nonce)
            || nonce.len() <= self.client_nonce.len()
            || !nonce.starts_with(&self.client_nonce)
        {
            return Err(ScramError::Protocol(
                "server nonce does not extend the client nonce",
            ));
        }
        let salt = B64
            .decode(salt_b64)
            .map_err(|_| ScramError::Protocol("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(ScramError::Protocol("empty salt"));
        }
        if iter_str.is_empty() || !iter_str.iter().all(u8::is_ascii_digit) {
            return Err(ScramError::Protocol("invalid iteration count"));
        }
        let iterations: u32 = std::str::from_utf8(iter_str)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ScramError::IterationCount(u32::MAX))?;
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::IterationCount(iterations));
        }

        let (client_key, server_key) = match &self.credential {
            ScramCredential::Password(password) => {
                let keys = ClientKeys::derive(password.as_bytes(), &salt, iterations);
                (keys.client_key, Some(keys.server_key))
            }
            ScramCredential::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
        };

        let mut without_proof = b"c=".to_vec();
        without_proof
            .extend_from_slice(cbind_input(self.cbind.gs2_header(), self.cbind.data()).as_bytes());
        without_proof.extend_from_slice(b",r=");
        without_proof.extend_from_slice(nonce);

        let mut auth_message = Vec::with_capacity(
            self.client_first_bare.len() + server_first.len() + without_proof.len() + 2,
        );
        auth_message.extend_from_slice(&self.client_first_bare);
        auth_message.push(b',');
        auth_message.extend_from_slice(server_first);
        auth_message.push(b',');
        auth_message.extend_from_slice(&without_proof);

        let stored_key = sha256(&client_key);
        let client_signature = hmac(&stored_key, &[&auth_message]);
        let proof = xor(&client_key, &client_signature);

        let mut client_final = without_proof;
        client_final.extend_from_slice(b",p=");
        client_final.extend_from_slice(B64.encode(proof).as_bytes());

        let expected_server_signature = server_key.map(|k| hmac(&k, &[&auth_message]));
        Ok((
            ScramClientFinal {
                expected_server_signature,
            },
            client_final,
        ))
    }
}

/// Client role, last step: waiting for `server-final-message`.
pub struct ScramClientFinal {
    expected_server_signature: Option<[u8; KEY_LEN]>,
}

impl fmt::Debug for ScramClientFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClientFinal")
            .field("verifies_server", &self.expected_server_signature.is_some())
            .finish()
    }
}

impl ScramClientFinal {
    /// Whether [`ScramClientFinal::finish`] authenticates the server (false
    /// only for [`ScramCredential::Keys`] without a ServerKey).
    pub fn verifies_server(&self) -> bool {
        self.expected_server_signature.is_some()
    }

    /// Consumes `server-final-message` (from `AuthenticationSASLFinal`):
    /// verifies `v=` in constant time, or reports `e=` as
    /// [`ScramError::ServerError`].
    pub fn finish(self, server_final: &[u8]) -> Result<(), ScramError> {
        let mut parts = attrs(server_final);
        let first = parts.next();
        if let Some(err) = first.and_then(|a| attr_value(a, b'e')) {
            let text = String::from_utf8_lossy(err);
            let text: String = text
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_SERVER_ERROR_LEN)
                .collect();
            return Err(ScramError::ServerError(text));
        }
        let v = require_attr(first, b'v', "expected verifier attribute")?;
        if !parts.all(is_extension) {
            return Err(ScramError::Protocol("malformed attribute in server-final"));
        }
        let sig = B64
            .decode(v)
            .map_err(|_| ScramError::Protocol("server signature is not valid base64"))?;
        let sig = <[u8; KEY_LEN]>::try_from(sig.as_slice())
            .map_err(|_| ScramError::Protocol("server signature has the wrong length"))?;
        match self.expected_server_signature {
            Some(expected) if bool::from(expected.ct_eq(&sig)) => Ok(()),
            Some(_) => Err(ScramError::ServerSignatureMismatch),
            None => Ok(()),
        }
    }
}
