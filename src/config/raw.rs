//! The serde mirror of the TOML file, and its conversion into the validated types.
//!
//! Three passes over the text, all cheap for a config file:
//! 1. a schema-less [`Node`] tree that only records where every key is: a TOML syntax error
//!    surfaces here, and later the tree turns a byte offset into a key path
//!    (`databases.app.port`);
//! 2. the typed mirror ([`RawConfig`] and friends, `deny_unknown_fields` everywhere):
//!    unknown keys, wrong types and bad keywords or durations fail here, and the error's span
//!    is looked up in the tree;
//! 3. the conversion into [`Config`]: defaults, path resolution, range checks that need the
//!    value's span (kept with [`Spanned`]).

use super::ciphers::{self, TlsCiphers, TlsCurves};
use super::{
    AuthType, CipherSuite, Config, DatabaseConfig, PoolMode, PoolerConfig, ServerAddress, TlsMode,
    TlsProtocols, UserConfig, DEFAULT_AUTH_QUERY,
};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

/// Why a configuration could not be loaded. `Display` is one line, e.g.
/// `pgring.toml:12: pooler.pool_mode: unknown value "transactions"; expected one of session,
/// transaction, statement`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{}: invalid TOML: {message}", Location(file, *line))]
    Syntax {
        file: PathBuf,
        /// 1-based; 0 when the parser gave no position.
        line: usize,
        message: String,
    },
    /// Valid TOML, but a key is unknown, has the wrong type or a bad value.
    #[error("{}: {key}: {message}", Location(file, *line))]
    Invalid {
        file: PathBuf,
        /// 1-based; 0 when the position is unknown.
        line: usize,
        /// Dotted path of the key, e.g. `pooler.pool_mode` or `databases.app.port`.
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line the error points at, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Syntax { line, .. } | ConfigError::Invalid { line, .. } => {
                (*line > 0).then_some(*line)
            }
        }
    }

    /// The dotted key path the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// `file:line`, or just `file` when the line is unknown.
struct Location<'a>(&'a Path, usize);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            0 => write!(f, "{}", self.0.display()),
            line => write!(f, "{}:{line}", self.0.display()),
        }
    }
}

pub(super) fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let ctx = Ctx { text, file: path };
    let tree: Node = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: path.to_path_buf(),
        line: e.span().map_or(0, |s| line_of(text, s.start)),
        message: one_line(e.message()),
    })?;
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, key) = match e.span() {
            Some(span) => (line_of(text, span.start), tree.key_path_at(span.start)),
            None => (0, String::new()),
        };
        ConfigError::Invalid {
            file: path.to_path_buf(),
            line,
            key: if key.is_empty() {
                "(top level)".into()
            } else {
                key
            },
            message: tidy_message(e.message()),
        }
    })?;
    ctx.convert(raw)
}

// ---------------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------------

/// The number of shards used when `shards = 0`: one per available core.
pub(super) fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// PgBouncer's defaults (pgring's own where PgBouncer has no such key), with `shards`
/// already resolved to the core count. Equal to the `[pooler]` of an empty file.
impl Default for PoolerConfig {
    fn default() -> Self {
        PoolerConfig {
            listen_addr: "127.0.0.1".into(),
            listen_port: 6432,
            listen_backlog: 1024,
            unix_socket_dir: Some(PathBuf::from("/tmp")),
            shards: available_cores(),
            auth_type: AuthType::Md5,
            auth_file: None,
            auth_hba_file: None,
            auth_ident_file: None,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.into(),
            auth_dbname: None,
            auth_query_cache_ttl: Duration::from_secs(60),
            pool_mode: PoolMode::Session,
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            max_client_conn: 100,
            max_db_connections: 0,
            max_user_connections: 0,
            server_reset_query: "DISCARD ALL".into(),
            server_reset_query_always: false,
            server_check_query: "select 1".into(),
            server_check_delay: Duration::from_secs(30),
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout: Duration::from_secs(600),
            server_connect_timeout: Duration::from_secs(15),
            server_login_retry: Duration::from_secs(15),
            client_idle_timeout: Duration::ZERO,
            client_login_timeout: Duration::from_secs(60),
            idle_transaction_timeout: Duration::ZERO,
            query_timeout: Duration::ZERO,
            query_wait_timeout: Duration::from_secs(120),
            shutdown_timeout: Duration::from_secs(30),
            ignore_startup_parameters: Vec::new(),
            max_packet_size: 64 * 1024 * 1024,
            max_prepared_statements: 200,
            tcp_keepalive: true,
            tcp_keepidle: Duration::ZERO,
            tcp_keepintvl: Duration::ZERO,
            tcp_keepcnt: 0,
            client_tls_sslmode: TlsMode::Disable,
            client_tls_cert_file: None,
            client_tls_key_file: None,
            client_tls_ca_file: None,
            client_tls_crl_file: None,
            client_tls_protocols: TlsProtocols::Secure,
            client_tls_ciphers: TlsCiphers::default(),
            client_tls13_ciphers: None,
            client_tls_ecdhcurve: TlsCurves::Auto,
            server_tls_sslmode: TlsMode::Prefer,
            server_tls_ca_file: None,
            server_tls_crl_file: None,
            server_tls_cert_file: None,
            server_tls_key_file: None,
            server_tls_protocols: TlsProtocols::Secure,
            server_tls_ciphers: TlsCiphers::default(),
            server_tls13_ciphers: None,
            server_tls_ecdhcurve: TlsCurves::Auto,
            log_connections: true,
            log_disconnections: true,
            log_pooler_errors: true,
            stats_period: Duration::from_secs(60),
            logfile: None,
            pidfile: None,
            verbose: 0,
        }
    }
}

/// Where a `[databases]` entry without `host` connects: PgBouncer's default Unix socket folder.
const DEFAULT_SERVER_SOCKET_DIR: &str = "/var/run/postgresql";
/// PostgreSQL's port, for `[databases]` entries without `port`.
const DEFAULT_SERVER_PORT: u16 = 5432;
/// Smallest accepted `max_packet_size`.
const MIN_PACKET_SIZE: u32 = 1024;
/// Largest accepted duration, in seconds (about 31 years): keeps `Instant + d` from overflowing.
const MAX_SECONDS: u64 = 1_000_000_000;
/// The `[databases]` keys sent to the server as startup parameters, in this order.
const STARTUP_PARAMETER_KEYS: [&str; 4] = [
    "client_encoding",
    "datestyle",
    "timezone",
    "application_name",
];

// ---------------------------------------------------------------------------------------------
// The serde mirror
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a TOML document")]
struct RawConfig {
    #[serde(default)]
    pooler: RawPooler,
    #[serde(default)]
    databases: BTreeMap<Spanned<String>, RawDatabase>,
    #[serde(default)]
    users: BTreeMap<Spanned<String>, RawUser>,
}

/// `[pooler]`: pgbouncer.ini's `[pgbouncer]`, same key names. `None` = not in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of pooler settings")]
struct RawPooler {
    listen_addr: Option<String>,
    listen_port: Option<Spanned<u16>>,
    listen_backlog: Option<Spanned<u32>>,
    unix_socket_dir: Option<String>,
    shards: Option<usize>,

    auth_type: Option<Spanned<Keyword<AuthType>>>,
    auth_file: Option<String>,
    auth_hba_file: Option<String>,
    auth_ident_file: Option<String>,
    admin_users: Option<Vec<String>>,
    stats_users: Option<Vec<String>>,
    auth_user: Option<String>,
    auth_query: Option<Spanned<String>>,
    auth_dbname: Option<Spanned<String>>,
    auth_query_cache_ttl: Option<Seconds>,

    pool_mode: Option<Keyword<PoolMode>>,
    default_pool_size: Option<Spanned<u32>>,
    min_pool_size: Option<u32>,
    reserve_pool_size: Option<u32>,
    reserve_pool_timeout: Option<Seconds>,
    max_client_conn: Option<Spanned<u32>>,
    max_db_connections: Option<u32>,
    max_user_connections: Option<u32>,

    server_reset_query: Option<String>,
    server_reset_query_always: Option<bool>,
    server_check_query: Option<String>,
    server_check_delay: Option<Seconds>,
    server_lifetime: Option<Seconds>,
    server_idle_timeout: Option<Seconds>,
    server_connect_timeout: Option<Seconds>,
    server_login_retry: Option<Seconds>,
    client_idle_timeout: Option<Seconds>,
    client_login_timeout: Option<Seconds>,
    idle_transaction_timeout: Option<Seconds>,
    query_timeout: Option<Seconds>,
    query_wait_timeout: Option<Seconds>,
    shutdown_timeout: Option<Seconds>,

    ignore_startup_parameters: Option<Vec<String>>,
    max_packet_size: Option<Spanned<u32>>,
    max_prepared_statements: Option<u32>,

    tcp_keepalive: Option<bool>,
    tcp_keepidle: Option<Seconds>,
    tcp_keepintvl: Option<Seconds>,
    tcp_keepcnt: Option<u32>,

    client_tls_sslmode: Option<Spanned<Keyword<TlsMode>>>,
    client_tls_cert_file: Option<String>,
    client_tls_key_file: Option<String>,
    client_tls_ca_file: Option<String>,
    client_tls_crl_file: Option<String>,
    client_tls_protocols: Option<Keyword<TlsProtocols>>,
    client_tls_ciphers: Option<Spanned<String>>,
    client_tls13_ciphers: Option<Spanned<String>>,
    client_tls_ecdhcurve: Option<Spanned<String>>,

    server_tls_sslmode: Option<Spanned<Keyword<TlsMode>>>,
    server_tls_ca_file: Option<String>,
    server_tls_crl_file: Option<String>,
    server_tls_cert_file: Option<Spanned<String>>,
    server_tls_key_file: Option<Spanned<String>>,
    server_tls_protocols: Option<Keyword<TlsProtocols>>,
    server_tls_ciphers: Option<Spanned<String>>,
    server_tls13_ciphers: Option<Spanned<String>>,
    server_tls_ecdhcurve: Option<Spanned<String>>,

    log_connections: Option<bool>,
    log_disconnections: Option<bool>,
    log_pooler_errors: Option<bool>,
    stats_period: Option<Seconds>,
    logfile: Option<String>,
    pidfile: Option<String>,
    verbose: Option<Spanned<u8>>,
}

/// One `[databases]` entry: PgBouncer's connection-string keys as an inline table.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of connection settings, e.g. { host = \"127.0.0.1\", port = 5432 }"
)]
struct RawDatabase {
    host: Option<String>,
    port: Option<Spanned<u16>>,
    dbname: Option<String>,
    user: Option<String>,
    password: Option<String>,
    auth_user: Option<String>,
    pool_size: Option<u32>,
    min_pool_size: Option<u32>,
    #[serde(alias = "reserve_pool_size")]
    reserve_pool: Option<u32>,
    pool_mode: Option<Keyword<PoolMode>>,
    max_db_connections: Option<u32>,
    client_encoding: Option<String>,
    datestyle: Option<String>,
    timezone: Option<String>,
    application_name: Option<String>,
}

/// One `[users]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of user settings, e.g. { pool_mode = \"session\" }"
)]
struct RawUser {
    pool_mode: Option<Keyword<PoolMode>>,
    pool_size: Option<u32>,
    max_user_connections: Option<u32>,
    query_timeout: Option<Seconds>,
    idle_transaction_timeout: Option<Seconds>,
    client_idle_timeout: Option<Seconds>,
}

/// A duration written in seconds, integer or float, not negative.
#[derive(Debug, Clone, Copy)]
struct Seconds(Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds (integer or float, not negative)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "{v} is negative; expected a number of seconds >= 0"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                if v > MAX_SECONDS {
                    return Err(too_many_seconds(v));
                }
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                if v.is_nan() || v < 0.0 {
                    return Err(E::custom(format!(
                        "{v} is negative; expected a number of seconds >= 0"
                    )));
                }
                if v > MAX_SECONDS as f64 {
                    return Err(too_many_seconds(v));
                }
                // Microsecond precision, so that rendering and parsing again is exact.
                Ok(Seconds(Duration::from_micros((v * 1e6).round() as u64)))
            }
        }
        fn too_many_seconds<E: de::Error>(v: impl fmt::Display) -> E {
            E::custom(format!("{v} seconds is too large; at most {MAX_SECONDS}"))
        }
        d.deserialize_any(V)
    }
}

/// A keyword from a fixed list (`pool_mode`, `auth_type`), matched without regard to case.
#[derive(Debug, Clone, Copy)]
struct Keyword<T>(T);

trait Keywords: Copy + PartialEq + 'static {
    const ALL: &'static [(&'static str, Self)];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }

    fn expected() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
        format!("one of {}", names.join(", "))
    }
}

impl Keywords for PoolMode {
    const ALL: &'static [(&'static str, Self)] = &[
        ("session", PoolMode::Session),
        ("transaction", PoolMode::Transaction),
        ("statement", PoolMode::Statement),
    ];
}

impl Keywords for AuthType {
    const ALL: &'static [(&'static str, Self)] = &[
        ("trust", AuthType::Trust),
        ("plain", AuthType::Plain),
        ("md5", AuthType::Md5),
        ("scram-sha-256", AuthType::ScramSha256),
        ("cert", AuthType::Cert),
        ("peer", AuthType::Peer),
        ("hba", AuthType::Hba),
    ];
}

impl Keywords for TlsMode {
    const ALL: &'static [(&'static str, Self)] = &[
        ("disable", TlsMode::Disable),
        ("allow", TlsMode::Allow),
        ("prefer", TlsMode::Prefer),
        ("require", TlsMode::Require),
        ("verify-ca", TlsMode::VerifyCa),
        ("verify-full", TlsMode::VerifyFull),
    ];
}

impl Keywords for TlsProtocols {
    const ALL: &'static [(&'static str, Self)] = &[
        ("secure", TlsProtocols::Secure),
        ("all", TlsProtocols::All),
        ("tlsv1.2", TlsProtocols::Tls12),
        ("tlsv1.3", TlsProtocols::Tls13),
    ];
}

impl<'de, T: Keywords> Deserialize<'de> for Keyword<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: Keywords> Visitor<'_> for V<T> {
            type Value = Keyword<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&T::expected())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Keyword<T>, E> {
                T::ALL
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(v))
                    .map(|(_, t)| Keyword(*t))
                    .ok_or_else(|| {
                        E::custom(format!("unknown value {v:?}; expected {}", T::expected()))
                    })
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// Key positions, for error messages
// ---------------------------------------------------------------------------------------------

/// The shape of the document with the position of every key; values are not kept.
#[derive(Debug, Default)]
struct Node {
    /// Entries of a table, sorted by the key's position; empty for anything else.
    entries: Vec<(Spanned<String>, Node)>,
}

impl Node {
    /// The dotted path of the key under which byte `offset` lies (`""` = the top level).
    fn key_path_at(&self, offset: usize) -> String {
        let mut path = String::new();
        let mut node = self;
        // The entry owning `offset` is the last one whose key starts at or before it.
        while let Some((key, child)) = node
            .entries
            .iter()
            .take_while(|(k, _)| k.span().start <= offset)
            .last()
        {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&toml_key(key.get_ref()));
            node = child;
        }
        path
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                while seq.next_element::<Node>()?.is_some() {}
                Ok(Node::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                loop {
                    match map.next_key::<Spanned<String>>() {
                        Ok(Some(key)) => entries.push((key, map.next_value::<Node>()?)),
                        Ok(None) => break,
                        // A datetime arrives as a map whose key carries no span: a leaf.
                        Err(_) if entries.is_empty() => return Ok(Node::default()),
                        Err(e) => return Err(e),
                    }
                }
                entries.sort_by_key(|(k, _)| k.span().start);
                Ok(Node { entries })
            }
        }
        d.deserialize_any(V)
    }
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rewrites serde's wording into the config's: keys rather than fields, TOML type names.
fn tidy_message(message: &str) -> String {
    let message = one_line(message);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, tail)) = rest.split_once('`') {
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            return unknown_key(name, &expected);
        }
    }
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        let name = rest.trim_end_matches('`');
        return if name == "reserve_pool" {
            "reserve_pool and reserve_pool_size are the same key; give only one".into()
        } else {
            format!("key {name:?} given twice")
        };
    }
    let mut message = message;
    for (from, to) in [
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected usize", "expected a non-negative integer"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
    ] {
        if let Some(head) = message.strip_suffix(from) {
            message = format!("{head}{to}");
        }
    }
    message
}

fn unknown_key(name: &str, expected: &[&str]) -> String {
    let mut message = format!("unknown key {name:?}");
    if expected.is_empty() {
        return message;
    }
    if expected.len() <= 6 {
        let _ = write!(message, "; expected one of {}", expected.join(", "));
        return message;
    }
    let best = expected
        .iter()
        .map(|e| (edit_distance(name, e), *e))
        .min()
        .filter(|(d, _)| *d <= (name.len() / 3).max(2));
    if let Some((_, e)) = best {
        let _ = write!(message, "; did you mean {e:?}?");
    } else {
        message.push_str(" (configs/reference.toml lists every key)");
    }
    message
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Conversion into the validated types
// ---------------------------------------------------------------------------------------------

struct Ctx<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: line_of(self.text, span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Relative paths are taken from the config file's folder, and made absolute so that a
    /// later chdir or a rendered copy still points at the same file. Empty = not set.
    fn resolve(&self, value: String) -> Option<PathBuf> {
        if value.is_empty() {
            return None;
        }
        let path = PathBuf::from(value);
        if path.is_absolute() {
            return Some(path);
        }
        let joined = self.file.parent().unwrap_or(Path::new("")).join(path);
        Some(std::path::absolute(&joined).unwrap_or(joined))
    }

    fn convert(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let auth_dbname_span = raw.pooler.auth_dbname.as_ref().map(|v| v.span());
        let pooler = self.pooler(raw.pooler)?;
        let mut databases = BTreeMap::new();
        let mut fallback_database = None;
        for (name, db) in raw.databases {
            let config = self.database(&name, db)?;
            if name.get_ref() == "*" {
                fallback_database = Some(config);
            } else {
                databases.insert(name.into_inner(), config);
            }
        }
        let users = raw
            .users
            .into_iter()
            .map(|(name, u)| {
                let user = UserConfig {
                    pool_mode: u.pool_mode.map(|k| k.0),
                    pool_size: u.pool_size,
                    max_user_connections: u.max_user_connections,
                    query_timeout: u.query_timeout.map(|s| s.0),
                    idle_transaction_timeout: u.idle_transaction_timeout.map(|s| s.0),
                    client_idle_timeout: u.client_idle_timeout.map(|s| s.0),
                };
                (name.into_inner(), user)
            })
            .collect();
        if let Some(name) = &pooler.auth_dbname {
            if !databases.contains_key(name) && fallback_database.is_none() {
                return Err(self.invalid(
                    auth_dbname_span.unwrap_or(0..0),
                    "pooler.auth_dbname",
                    format!("{name:?} is not a [databases] entry (and there is no \"*\" entry)"),
                ));
            }
        }
        Ok(Config {
            path: self.file.to_path_buf(),
            pooler,
            databases,
            fallback_database,
            users,
        })
    }

    fn pooler(&self, r: RawPooler) -> Result<PoolerConfig, ConfigError> {
        let mut p = PoolerConfig::default();
        macro_rules! copy {
            ($($field:ident),* $(,)?) => {$(
                if let Some(v) = r.$field {
                    p.$field = v;
                }
            )*};
        }
        macro_rules! seconds {
            ($($field:ident),* $(,)?) => {$(
                if let Some(v) = r.$field {
                    p.$field = v.0;
                }
            )*};
        }
        copy!(
            listen_addr,
            admin_users,
            stats_users,
            min_pool_size,
            reserve_pool_size,
            max_db_connections,
            max_user_connections,
            server_reset_query,
            server_reset_query_always,
            server_check_query,
            ignore_startup_parameters,
            tcp_keepalive,
            tcp_keepcnt,
            log_connections,
            log_disconnections,
            log_pooler_errors,
        );
        seconds!(
            reserve_pool_timeout,
            server_check_delay,
            server_lifetime,
            server_idle_timeout,
            server_connect_timeout,
            server_login_retry,
            client_idle_timeout,
            client_login_timeout,
            idle_transaction_timeout,
            query_timeout,
            query_wait_timeout,
            shutdown_timeout,
            tcp_keepidle,
            tcp_keepintvl,
            stats_period,
            auth_query_cache_ttl,
        );
        p.auth_user = r.auth_user.filter(|v| !v.is_empty());
        let query_span = r.auth_query.as_ref().map(|v| v.span());
        if let Some(v) = r.auth_query {
            p.auth_query = v.into_inner();
        }
        if p.auth_query.trim().is_empty() {
            return Err(self.invalid(
                query_span.unwrap_or(0..0),
                "pooler.auth_query",
                "must not be empty; leave auth_user unset to turn lookups off",
            ));
        }
        p.auth_dbname = r
            .auth_dbname
            .map(|v| v.into_inner())
            .filter(|v| !v.is_empty());

        if let Some(v) = r.listen_port {
            if *v.get_ref() == 0 {
                return Err(self.invalid(
                    v.span(),
                    "pooler.listen_port",
                    "0 is not a port; expected 1 to 65535",
                ));
            }
            p.listen_port = v.into_inner();
        }
        if let Some(v) = r.listen_backlog {
            if *v.get_ref() == 0 || *v.get_ref() > i32::MAX as u32 {
                return Err(self.invalid(
                    v.span(),
                    "pooler.listen_backlog",
                    "expected 1 or more (the kernel caps it at net.core.somaxconn)",
                ));
            }
            p.listen_backlog = v.into_inner();
        }
        if let Some(v) = r.unix_socket_dir {
            p.unix_socket_dir = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = r.shards {
            p.shards = if v == 0 { available_cores() } else { v };
        }
        let auth_type_span = r.auth_type.as_ref().map(|v| v.span());
        if let Some(v) = r.auth_type {
            p.auth_type = v.into_inner().0;
        }
        if let Some(v) = r.pool_mode {
            p.pool_mode = v.0;
        }
        p.auth_file = r.auth_file.and_then(|v| self.resolve(v));
        p.auth_hba_file = r.auth_hba_file.and_then(|v| self.resolve(v));
        p.auth_ident_file = r.auth_ident_file.and_then(|v| self.resolve(v));
        p.logfile = r.logfile.and_then(|v| self.resolve(v));
        p.pidfile = r.pidfile.and_then(|v| self.resolve(v));
        p.client_tls_cert_file = r.client_tls_cert_file.and_then(|v| self.resolve(v));
        p.client_tls_key_file = r.client_tls_key_file.and_then(|v| self.resolve(v));
        p.client_tls_ca_file = r.client_tls_ca_file.and_then(|v| self.resolve(v));
        p.client_tls_crl_file = r.client_tls_crl_file.and_then(|v| self.resolve(v));
        if let Some(v) = r.client_tls_protocols {
            p.client_tls_protocols = v.0;
        }
        if let Some(v) = r.client_tls_sslmode {
            let mode = v.get_ref().0;
            let missing = if mode == TlsMode::Disable {
                None
            } else if p.client_tls_cert_file.is_none() {
                Some("client_tls_cert_file")
            } else if p.client_tls_key_file.is_none() {
                Some("client_tls_key_file")
            } else if mode.verifies_client() && p.client_tls_ca_file.is_none() {
                Some("client_tls_ca_file")
            } else {
                None
            };
            if let Some(key) = missing {
                return Err(self.invalid(
                    v.span(),
                    &format!("pooler.{key}"),
                    format!(
                        "client_tls_sslmode = {:?} needs {key}; set it or use \"disable\"",
                        mode.name()
                    ),
                ));
            }
            p.client_tls_sslmode = mode;
        }
        let auth_needs = match p.auth_type {
            AuthType::Hba if p.auth_hba_file.is_none() => Some("auth_hba_file"),
            AuthType::Cert if !p.client_tls_sslmode.verifies_client() => {
                Some("client_tls_sslmode = \"verify-ca\" or \"verify-full\" (client certificates)")
            }
            _ => None,
        };
        if let Some(what) = auth_needs {
            return Err(self.invalid(
                auth_type_span.unwrap_or(0..0),
                "pooler.auth_type",
                format!("auth_type = {:?} needs {what}", p.auth_type.name()),
            ));
        }
        p.server_tls_ca_file = r.server_tls_ca_file.and_then(|v| self.resolve(v));
        p.server_tls_crl_file = r.server_tls_crl_file.and_then(|v| self.resolve(v));
        if let Some(v) = r.server_tls_protocols {
            p.server_tls_protocols = v.0;
        }
        let cert_span = r.server_tls_cert_file.as_ref().map(|v| v.span());
        let key_span = r.server_tls_key_file.as_ref().map(|v| v.span());
        p.server_tls_cert_file = r
            .server_tls_cert_file
            .and_then(|v| self.resolve(v.into_inner()));
        p.server_tls_key_file = r
            .server_tls_key_file
            .and_then(|v| self.resolve(v.into_inner()));
        match (&p.server_tls_cert_file, &p.server_tls_key_file) {
            (Some(_), None) => {
                return Err(self.invalid(
                    cert_span.unwrap_or(0..0),
                    "pooler.server_tls_key_file",
                    "server_tls_cert_file needs server_tls_key_file; set both or neither",
                ))
            }
            (None, Some(_)) => {
                return Err(self.invalid(
                    key_span.unwrap_or(0..0),
                    "pooler.server_tls_cert_file",
                    "server_tls_key_file needs server_tls_cert_file; set both or neither",
                ))
            }
            _ => {}
        }
        if let Some(v) = r.server_tls_sslmode {
            let mode = v.get_ref().0;
            if mode.verifies_server() && p.server_tls_ca_file.is_none() {
                return Err(self.invalid(
                    v.span(),
                    "pooler.server_tls_ca_file",
                    format!(
                        "server_tls_sslmode = {:?} needs server_tls_ca_file; set it or use \"require\"",
                        mode.name()
                    ),
                ));
            }
            p.server_tls_sslmode = mode;
        }
        self.ciphers(
            "client",
            r.client_tls_ciphers,
            r.client_tls13_ciphers,
            p.client_tls_protocols,
            (&mut p.client_tls_ciphers, &mut p.client_tls13_ciphers),
        )?;
        self.ciphers(
            "server",
            r.server_tls_ciphers,
            r.server_tls13_ciphers,
            p.server_tls_protocols,
            (&mut p.server_tls_ciphers, &mut p.server_tls13_ciphers),
        )?;
        if let Some(v) = r.client_tls_ecdhcurve {
            p.client_tls_ecdhcurve = TlsCurves::parse(v.get_ref())
                .map_err(|m| self.invalid(v.span(), "pooler.client_tls_ecdhcurve", m))?;
        }
        if let Some(v) = r.server_tls_ecdhcurve {
            p.server_tls_ecdhcurve = TlsCurves::parse(v.get_ref())
                .map_err(|m| self.invalid(v.span(), "pooler.server_tls_ecdhcurve", m))?;
        }
        if let Some(v) = r.default_pool_size {
            if *v.get_ref() == 0 {
                return Err(self.invalid(
                    v.span(),
                    "pooler.default_pool_size",
                    "must be at least 1",
                ));
            }
            p.default_pool_size = v.into_inner();
        }
        if let Some(v) = r.max_client_conn {
            if *v.get_ref() == 0 {
                return Err(self.invalid(v.span(), "pooler.max_client_conn", "must be at least 1"));
            }
            p.max_client_conn = v.into_inner();
        }
        if let Some(v) = r.max_packet_size {
            if *v.get_ref() < MIN_PACKET_SIZE {
                return Err(self.invalid(
                    v.span(),
                    "pooler.max_packet_size",
                    format!(
                        "{} bytes is too small; at least {MIN_PACKET_SIZE}",
                        v.get_ref()
                    ),
                ));
            }
            p.max_packet_size = v.into_inner();
        }
        if let Some(v) = r.max_prepared_statements {
            p.max_prepared_statements = v;
        }
        if let Some(v) = r.verbose {
            if *v.get_ref() > 2 {
                return Err(self.invalid(
                    v.span(),
                    "pooler.verbose",
                    format!("{} is out of range; expected 0, 1 or 2", v.get_ref()),
                ));
            }
            p.verbose = v.into_inner();
        }
        Ok(p)
    }

    /// `<side>_tls_ciphers` and `<side>_tls13_ciphers`, checked against the protocol
    /// versions: a combination that leaves no suite for any allowed version is an error.
    fn ciphers(
        &self,
        side: &str,
        raw: Option<Spanned<String>>,
        raw13: Option<Spanned<String>>,
        protocols: TlsProtocols,
        (out, out13): (&mut TlsCiphers, &mut Option<Vec<CipherSuite>>),
    ) -> Result<(), ConfigError> {
        let key = format!("pooler.{side}_tls_ciphers");
        let key13 = format!("pooler.{side}_tls13_ciphers");
        if let Some(v) = &raw {
            *out = TlsCiphers::parse(v.get_ref()).map_err(|m| self.invalid(v.span(), &key, m))?;
        }
        if let Some(v) = &raw13 {
            *out13 = ciphers::parse_tls13_ciphers(v.get_ref())
                .map_err(|m| self.invalid(v.span(), &key13, m))?;
        }
        let effective = out.effective(out13.as_deref());
        let has12 = effective.iter().any(|s| !s.is_tls13());
        let has13 = effective.iter().any(|s| s.is_tls13());
        let usable = (protocols.allows_tls12() && has12) || (protocols.allows_tls13() && has13);
        if !usable {
            let span = raw.as_ref().or(raw13.as_ref()).map_or(0..0, |v| v.span());
            return Err(self.invalid(
                span,
                &key,
                format!(
                    "leaves no cipher suite for the TLS versions {side}_tls_protocols = {:?} \
                     allows",
                    protocols.name()
                ),
            ));
        }
        Ok(())
    }

    fn database(
        &self,
        name: &Spanned<String>,
        r: RawDatabase,
    ) -> Result<DatabaseConfig, ConfigError> {
        let port = match r.port {
            Some(port) if *port.get_ref() == 0 => {
                let key = format!("databases.{}.port", toml_key(name.get_ref()));
                return Err(self.invalid(
                    port.span(),
                    &key,
                    "0 is not a port; expected 1 to 65535",
                ));
            }
            Some(port) => port.into_inner(),
            None => DEFAULT_SERVER_PORT,
        };
        let address = match r.host.filter(|h| !h.is_empty()) {
            None => ServerAddress::Unix {
                dir: PathBuf::from(DEFAULT_SERVER_SOCKET_DIR),
                port,
            },
            Some(host) if host.starts_with('/') => ServerAddress::Unix {
                dir: PathBuf::from(host),
                port,
            },
            Some(host) => ServerAddress::Tcp { host, port },
        };
        let dbname = r
            .dbname
            .or_else(|| (name.get_ref() != "*").then(|| name.get_ref().clone()));
        let startup_parameters = STARTUP_PARAMETER_KEYS
            .iter()
            .zip([
                r.client_encoding,
                r.datestyle,
                r.timezone,
                r.application_name,
            ])
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect();
        Ok(DatabaseConfig {
            address,
            dbname,
            user: r.user,
            password: r.password,
            auth_user: r.auth_user.filter(|v| !v.is_empty()),
            pool_size: r.pool_size,
            min_pool_size: r.min_pool_size,
            reserve_pool_size: r.reserve_pool,
            pool_mode: r.pool_mode.map(|k| k.0),
            max_db_connections: r.max_db_connections,
            startup_parameters,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key, bare when TOML allows it, quoted otherwise (`"*"`).
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        toml_string(key)
    }
}

fn toml_path(path: &Option<PathBuf>) -> String {
    toml_string(
        &path
            .as_deref()
            .map_or(String::new(), |p| p.to_string_lossy().into_owned()),
    )
}

fn toml_array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

/// Seconds: an integer when whole, else a float with the fraction needed.
fn toml_seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        return d.as_secs().to_string();
    }
    let fraction = format!("{:09}", d.subsec_nanos());
    format!("{}.{}", d.as_secs(), fraction.trim_end_matches('0'))
}

pub(super) fn render(config: &Config) -> String {
    let p = &config.pooler;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Effective pgring configuration, read from {}.\n# Durations are in seconds.\n",
        config.path.display()
    );
    out.push_str("[pooler]\n");
    let mut kv = |key: &str, value: String| {
        let _ = writeln!(out, "{key} = {value}");
    };
    let s = |v: &str| toml_string(v);
    let secs = |d: Duration| toml_seconds(d);
    kv("listen_addr", s(&p.listen_addr));
    kv("listen_port", p.listen_port.to_string());
    kv("listen_backlog", p.listen_backlog.to_string());
    kv("unix_socket_dir", toml_path(&p.unix_socket_dir));
    kv("shards", p.shards.to_string());
    kv("auth_type", s(p.auth_type.name()));
    kv("auth_file", toml_path(&p.auth_file));
    kv("auth_hba_file", toml_path(&p.auth_hba_file));
    kv("auth_ident_file", toml_path(&p.auth_ident_file));
    kv("admin_users", toml_array(&p.admin_users));
    kv("stats_users", toml_array(&p.stats_users));
    kv("auth_user", s(p.auth_user.as_deref().unwrap_or("")));
    kv("auth_query", s(&p.auth_query));
    kv("auth_dbname", s(p.auth_dbname.as_deref().unwrap_or("")));
    kv("auth_query_cache_ttl", secs(p.auth_query_cache_ttl));
    kv("pool_mode", s(p.pool_mode.name()));
    kv("default_pool_size", p.default_pool_size.to_string());
    kv("min_pool_size", p.min_pool_size.to_string());
    kv("reserve_pool_size", p.reserve_pool_size.to_string());
    kv("reserve_pool_timeout", secs(p.reserve_pool_timeout));
    kv("max_client_conn", p.max_client_conn.to_string());
    kv("max_db_connections", p.max_db_connections.to_string());
    kv("max_user_connections", p.max_user_connections.to_string());
    kv("server_reset_query", s(&p.server_reset_query));
    kv(
        "server_reset_query_always",
        p.server_reset_query_always.to_string(),
    );
    kv("server_check_query", s(&p.server_check_query));
    kv("server_check_delay", secs(p.server_check_delay));
    kv("server_lifetime", secs(p.server_lifetime));
    kv("server_idle_timeout", secs(p.server_idle_timeout));
    kv("server_connect_timeout", secs(p.server_connect_timeout));
    kv("server_login_retry", secs(p.server_login_retry));
    kv("client_idle_timeout", secs(p.client_idle_timeout));
    kv("client_login_timeout", secs(p.client_login_timeout));
    kv("idle_transaction_timeout", secs(p.idle_transaction_timeout));
    kv("query_timeout", secs(p.query_timeout));
    kv("query_wait_timeout", secs(p.query_wait_timeout));
    kv("shutdown_timeout", secs(p.shutdown_timeout));
    kv(
        "ignore_startup_parameters",
        toml_array(&p.ignore_startup_parameters),
    );
    kv("max_packet_size", p.max_packet_size.to_string());
    kv(
        "max_prepared_statements",
        p.max_prepared_statements.to_string(),
    );
    kv("tcp_keepalive", p.tcp_keepalive.to_string());
    kv("tcp_keepidle", secs(p.tcp_keepidle));
    kv("tcp_keepintvl", secs(p.tcp_keepintvl));
    kv("tcp_keepcnt", p.tcp_keepcnt.to_string());
    kv("client_tls_sslmode", s(p.client_tls_sslmode.name()));
    kv("client_tls_cert_file", toml_path(&p.client_tls_cert_file));
    kv("client_tls_key_file", toml_path(&p.client_tls_key_file));
    kv("client_tls_ca_file", toml_path(&p.client_tls_ca_file));
    kv("client_tls_crl_file", toml_path(&p.client_tls_crl_file));
    kv("client_tls_protocols", s(p.client_tls_protocols.name()));
    kv("client_tls_ciphers", s(&p.client_tls_ciphers.render()));
    kv(
        "client_tls13_ciphers",
        s(&p.client_tls13_ciphers
            .as_deref()
            .map_or(String::new(), ciphers::join)),
    );
    kv("client_tls_ecdhcurve", s(&p.client_tls_ecdhcurve.render()));
    kv("server_tls_sslmode", s(p.server_tls_sslmode.name()));
    kv("server_tls_ca_file", toml_path(&p.server_tls_ca_file));
    kv("server_tls_crl_file", toml_path(&p.server_tls_crl_file));
    kv("server_tls_cert_file", toml_path(&p.server_tls_cert_file));
    kv("server_tls_key_file", toml_path(&p.server_tls_key_file));
    kv("server_tls_protocols", s(p.server_tls_protocols.name()));
    kv("server_tls_ciphers", s(&p.server_tls_ciphers.render()));
    kv(
        "server_tls13_ciphers",
        s(&p.server_tls13_ciphers
            .as_deref()
            .map_or(String::new(), ciphers::join)),
    );
    kv("server_tls_ecdhcurve", s(&p.server_tls_ecdhcurve.render()));
    kv("log_connections", p.log_connections.to_string());
    kv("log_disconnections", p.log_disconnections.to_string());
    kv("log_pooler_errors", p.log_pooler_errors.to_string());
    kv("stats_period", secs(p.stats_period));
    kv("logfile", toml_path(&p.logfile));
    kv("pidfile", toml_path(&p.pidfile));
    kv("verbose", p.verbose.to_string());

    out.push_str("\n[databases]\n");
    let entries = config
        .databases
        .iter()
        .map(|(name, db)| (name.as_str(), db))
        .chain(config.fallback_database.iter().map(|db| ("*", db)));
    for (name, db) in entries {
        let _ = writeln!(out, "{} = {}", toml_key(name), render_database(db));
    }

    out.push_str("\n[users]\n");
    for (name, user) in &config.users {
        let _ = writeln!(out, "{} = {}", toml_key(name), render_user(user));
    }
    out
}

fn inline_table(fields: Vec<(&str, String)>) -> String {
    if fields.is_empty() {
        return "{}".into();
    }
    let fields: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{} = {v}", toml_key(k)))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

fn render_database(db: &DatabaseConfig) -> String {
    let mut fields = Vec::new();
    let (host, port) = match &db.address {
        ServerAddress::Tcp { host, port } => (host.clone(), *port),
        ServerAddress::Unix { dir, port } => (dir.to_string_lossy().into_owned(), *port),
    };
    fields.push(("host", toml_string(&host)));
    fields.push(("port", port.to_string()));
    let strings = [
        ("dbname", &db.dbname),
        ("user", &db.user),
        ("password", &db.password),
        ("auth_user", &db.auth_user),
    ];
    for (key, value) in strings {
        if let Some(v) = value {
            fields.push((key, toml_string(v)));
        }
    }
    let numbers = [
        ("pool_size", db.pool_size),
        ("min_pool_size", db.min_pool_size),
        ("reserve_pool", db.reserve_pool_size),
    ];
    for (key, value) in numbers {
        if let Some(v) = value {
            fields.push((key, v.to_string()));
        }
    }
    if let Some(mode) = db.pool_mode {
        fields.push(("pool_mode", toml_string(mode.name())));
    }
    if let Some(v) = db.max_db_connections {
        fields.push(("max_db_connections", v.to_string()));
    }
    for (key, value) in &db.startup_parameters {
        fields.push((key.as_str(), toml_string(value)));
    }
    inline_table(fields)
}

fn render_user(user: &UserConfig) -> String {
    let mut fields = Vec::new();
    if let Some(mode) = user.pool_mode {
        fields.push(("pool_mode", toml_string(mode.name())));
    }
    if let Some(v) = user.pool_size {
        fields.push(("pool_size", v.to_string()));
    }
    if let Some(v) = user.max_user_connections {
        fields.push(("max_user_connections", v.to_string()));
    }
    let durations = [
        ("query_timeout", user.query_timeout),
        ("idle_transaction_timeout", user.idle_transaction_timeout),
        ("client_idle_timeout", user.client_idle_timeout),
    ];
    for (key, value) in durations {
        if let Some(d) = value {
            fields.push((key, toml_seconds(d)));
        }
    }
    inline_table(fields)
}
