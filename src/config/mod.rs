//! Configuration: the TOML file an operator writes, turned into types that cannot be wrong.
//!
//! Two layers ("parse, don't validate"):
//! - [`raw`] mirrors the file with serde, key for key, using pgbouncer.ini's names
//!   (`[pgbouncer]` becomes `[pooler]`), `deny_unknown_fields`, and spans so that every
//!   error names the key and its line.
//! - This module holds the validated types the rest of pgring reads: durations are
//!   [`Duration`], modes are enums, paths are resolved against the config file's folder.
//!
//! The config is immutable once built; shards share it as `Arc<Config>` and a reload builds
//! a new one. Nothing here opens sockets or reads anything but the config file itself.

mod ciphers;
mod raw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ciphers::{CipherKeyword, CipherSuite, KxGroup, TlsCiphers, TlsCurves};
pub use raw::ConfigError;

/// When a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// At client disconnect (after `server_reset_query`).
    Session,
    /// When ReadyForQuery reports idle (`I`).
    Transaction,
    /// After every statement; multi-statement transactions are refused.
    Statement,
}

/// How clients prove who they are (`auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// No password asked.
    Trust,
    /// Cleartext password (`plain` in PgBouncer).
    Plain,
    /// MD5; users whose stored secret is a SCRAM verifier are switched to SCRAM.
    Md5,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// A client certificate whose common name is the user name (or maps to it through
    /// `auth_ident_file`); needs `client_tls_sslmode` verify-ca or verify-full.
    Cert,
    /// Unix-socket clients: the peer's OS user name (SO_PEERCRED) must be the user name.
    Peer,
    /// The method comes from the first matching rule of `auth_hba_file`.
    Hba,
}

/// What pgring asks of clients' TLS (`client_tls_sslmode`), PgBouncer's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsMode {
    /// No TLS: SSLRequest is answered 'N'.
    Disable,
    /// TLS offered when the client asks for it; plaintext accepted.
    Allow,
    /// Same as `allow` towards clients. Towards servers (and for `allow` too): TLS when
    /// the server offers it, plaintext when it answers 'N' or the handshake fails.
    Prefer,
    /// TLS required: plaintext logins are refused.
    Require,
    /// TLS required, with a client certificate that chains to `client_tls_ca_file`; towards
    /// servers, a server certificate that chains to `server_tls_ca_file`.
    VerifyCa,
    /// Same as `verify-ca` towards clients (what a certificate proves about the user is
    /// `auth_type = "cert"`'s business); towards servers, the certificate must also name
    /// the database entry's `host`.
    VerifyFull,
}

impl TlsProtocols {
    pub fn allows_tls12(self) -> bool {
        self != TlsProtocols::Tls13
    }

    pub fn allows_tls13(self) -> bool {
        self != TlsProtocols::Tls12
    }
}

impl TlsMode {
    /// True when clients may not log in without TLS.
    pub fn requires_tls(self) -> bool {
        self >= TlsMode::Require
    }

    /// True when clients must present a certificate.
    pub fn verifies_client(self) -> bool {
        self >= TlsMode::VerifyCa
    }

    /// The config keyword: `"verify-full"`.
    pub fn keyword(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// True when the server's certificate is checked (`verify-ca`, `verify-full`).
    pub fn verifies_server(self) -> bool {
        self >= TlsMode::VerifyCa
    }
}

/// TLS versions accepted (`client_tls_protocols`). rustls has no TLS 1.0 or 1.1, so
/// `all` is the same as `secure`: TLS 1.2 and 1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProtocols {
    /// TLS 1.2 and 1.3.
    Secure,
    /// Everything rustls speaks: TLS 1.2 and 1.3.
    All,
    Tls12,
    Tls13,
}

/// The default `auth_query`: PostgreSQL's own secrets, which needs a superuser as
/// `auth_user`; a SECURITY DEFINER function is the usual alternative (see README).
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";

/// The longest a shard remembers that `auth_query` found no such user (capped by
/// `auth_query_cache_ttl`): long enough to absorb a burst of probes for one name, short
/// enough that a new role can log in soon after it is created.
pub const AUTH_QUERY_NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Settings of the `[pooler]` section, PgBouncer's `[pgbouncer]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolerConfig {
    /// TCP address to listen on; empty means no TCP listener. Default `127.0.0.1`.
    pub listen_addr: String,
    /// TCP port, and the number in the Unix socket's name. Default 6432.
    pub listen_port: u16,
    /// Backlog of each listening socket (every shard's TCP listener and the Unix socket).
    /// Default 1024.
    pub listen_backlog: u32,
    /// Folder of the Unix socket `.s.PGSQL.<listen_port>`; `None` when the key is empty.
    /// Default `/tmp`.
    pub unix_socket_dir: Option<PathBuf>,
    /// Number of shards (one executor pinned per core); 0 in the file means one per core,
    /// already resolved here to the available core count. Default 0.
    pub shards: usize,

    pub auth_type: AuthType,
    /// PgBouncer's userlist.txt; resolved against the config file's folder.
    pub auth_file: Option<PathBuf>,
    /// pg_hba.conf-style rules; required by `auth_type = "hba"`.
    pub auth_hba_file: Option<PathBuf>,
    /// pg_ident.conf-style user name maps, for the `map=` option of `cert` and `peer`
    /// rules and for `auth_type = "cert"` / `"peer"`.
    pub auth_ident_file: Option<PathBuf>,
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,

    /// The user pgring logs in as to run `auth_query` for users missing from the auth_file;
    /// `None` (the default) = no lookups. Its own secret comes from the auth_file or the
    /// database entry, like any server login.
    pub auth_user: Option<String>,
    /// The lookup: `$1` is the user name (sent as a bound parameter), the answer one row of
    /// (name, secret). Default `SELECT usename, passwd FROM pg_shadow WHERE usename=$1`.
    pub auth_query: String,
    /// The `[databases]` entry lookups run in; `None` = the database the client asked for.
    pub auth_dbname: Option<String>,
    /// How long a shard keeps an `auth_query` answer (a missing user: at most
    /// [`AUTH_QUERY_NEGATIVE_TTL`]). `Duration::ZERO` = no caching. Default 60 s.
    pub auth_query_cache_ttl: Duration,

    pub pool_mode: PoolMode,
    pub default_pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub max_client_conn: u32,
    /// 0 = unlimited.
    pub max_db_connections: u32,
    /// 0 = unlimited.
    pub max_user_connections: u32,

    /// Empty = none. Default `DISCARD ALL`.
    pub server_reset_query: String,
    /// Run the reset query in transaction mode too. Default false.
    pub server_reset_query_always: bool,
    /// Empty = no check. Default `select 1`.
    pub server_check_query: String,
    pub server_check_delay: Duration,
    /// `Duration::ZERO` = unlimited for all the optional timeouts below.
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_connect_timeout: Duration,
    pub server_login_retry: Duration,
    pub client_idle_timeout: Duration,
    pub client_login_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub query_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub shutdown_timeout: Duration,

    /// Startup parameters accepted and dropped instead of refused (e.g. `extra_float_digits`).
    pub ignore_startup_parameters: Vec<String>,
    /// Largest protocol message accepted from a client or server, in bytes.
    pub max_packet_size: u32,
    /// Named prepared statements kept per server connection in transaction and
    /// statement pooling (0: named statements are not tracked).
    pub max_prepared_statements: u32,

    pub tcp_keepalive: bool,
    /// `Duration::ZERO` = the OS default.
    pub tcp_keepidle: Duration,
    pub tcp_keepintvl: Duration,
    /// 0 = the OS default.
    pub tcp_keepcnt: u32,

    /// Client-side TLS. Default `disable`.
    pub client_tls_sslmode: TlsMode,
    /// PEM certificate chain and private key; required unless the mode is `disable`.
    /// Resolved against the config file's folder.
    pub client_tls_cert_file: Option<PathBuf>,
    pub client_tls_key_file: Option<PathBuf>,
    /// PEM roots that client certificates must chain to; required by `verify-ca` and
    /// `verify-full`.
    pub client_tls_ca_file: Option<PathBuf>,
    /// PEM certificate revocation lists checked under `verify-ca` and `verify-full`.
    pub client_tls_crl_file: Option<PathBuf>,
    pub client_tls_protocols: TlsProtocols,
    /// Cipher suites offered to clients: a keyword or a list. Default `default`.
    pub client_tls_ciphers: TlsCiphers,
    /// TLS 1.3 suites; `None` (the key empty) takes them from `client_tls_ciphers`.
    pub client_tls13_ciphers: Option<Vec<CipherSuite>>,
    /// Key-exchange groups for client handshakes. Default `auto`.
    pub client_tls_ecdhcurve: TlsCurves,

    /// Server-side TLS (pgring to PostgreSQL over TCP), libpq's sslmode names. Default
    /// `prefer`. Unix-socket servers never use TLS.
    pub server_tls_sslmode: TlsMode,
    /// PEM roots the server's certificate must chain to (may hold many); required by
    /// `verify-ca` and `verify-full`.
    pub server_tls_ca_file: Option<PathBuf>,
    /// PEM certificate revocation lists checked under `verify-ca` and `verify-full`.
    pub server_tls_crl_file: Option<PathBuf>,
    /// PEM certificate chain and private key pgring presents to PostgreSQL; optional,
    /// both or neither.
    pub server_tls_cert_file: Option<PathBuf>,
    pub server_tls_key_file: Option<PathBuf>,
    pub server_tls_protocols: TlsProtocols,
    /// Cipher suites offered to servers, as `client_tls_ciphers`.
    pub server_tls_ciphers: TlsCiphers,
    pub server_tls13_ciphers: Option<Vec<CipherSuite>>,
    /// Key-exchange groups offered to servers. Default `auto`: P-256 first.
    pub server_tls_ecdhcurve: TlsCurves,

    pub log_connections: bool,
    pub log_disconnections: bool,
    pub log_pooler_errors: bool,
    /// `Duration::ZERO` = no periodic stats line.
    pub stats_period: Duration,
    pub logfile: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    /// 0 = normal, 1 = debug, 2 = trace.
    pub verbose: u8,
}

/// Where a server lives: a TCP host or a Unix socket folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddress {
    Tcp {
        host: String,
        port: u16,
    },
    /// `host` started with `/`: the folder holding `.s.PGSQL.<port>`.
    Unix {
        dir: PathBuf,
        port: u16,
    },
}

/// One `[databases]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    pub address: ServerAddress,
    /// The server-side database name; defaults to the entry's own name.
    /// `None` only for the `*` fallback, where the client's name is used.
    pub dbname: Option<String>,
    /// Forced server user; `None` = the client's user.
    pub user: Option<String>,
    /// Password for the forced user (or for the client's user when no auth_file entry has it).
    pub password: Option<String>,
    /// `auth_user` for logins to this database, over `[pooler]`'s.
    pub auth_user: Option<String>,
    pub pool_size: Option<u32>,
    pub min_pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub pool_mode: Option<PoolMode>,
    /// 0 or `None` = the global setting.
    pub max_db_connections: Option<u32>,
    /// Sent as startup parameters to the server (client_encoding, datestyle, timezone,
    /// application_name).
    pub startup_parameters: Vec<(String, String)>,
}

/// One `[users]` entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserConfig {
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<u32>,
    pub max_user_connections: Option<u32>,
    pub query_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for reload and for resolving relative paths).
    pub path: PathBuf,
    pub pooler: PoolerConfig,
    /// `[databases]` without the `*` entry.
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// The `*` entry: used for database names not listed.
    pub fallback_database: Option<DatabaseConfig>,
    pub users: BTreeMap<String, UserConfig>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        raw::load(path)
    }

    /// Validates TOML text; `path` is used for error messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        raw::parse(text, path)
    }

    /// The effective configuration as TOML, every key with its value (for `--check`).
    pub fn to_toml(&self) -> String {
        raw::render(self)
    }

    /// The database entry for a client-visible name: an exact entry, else `*`.
    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.get(name).or(self.fallback_database.as_ref())
    }

    /// The pool mode for a (database, user) pair: user over database over global.
    pub fn pool_mode(&self, db: &DatabaseConfig, user: &str) -> PoolMode {
        self.users
            .get(user)
            .and_then(|u| u.pool_mode)
            .or(db.pool_mode)
            .unwrap_or(self.pooler.pool_mode)
    }

    /// The `auth_user` for logins to `db`: the entry's, else `[pooler]`'s; `None` = no
    /// `auth_query` lookups for it.
    pub fn auth_user<'a>(&'a self, db: &'a DatabaseConfig) -> Option<&'a str> {
        db.auth_user.as_deref().or(self.pooler.auth_user.as_deref())
    }

    /// The pool size for a (database, user) pair: user over database over global.
    pub fn pool_size(&self, db: &DatabaseConfig, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.pool_size)
            .or(db.pool_size)
            .unwrap_or(self.pooler.default_pool_size)
    }
}
