//! Authentication: secrets, the auth file, and the sans-IO exchanges pgring
//! runs with clients (as a server) and with PostgreSQL (as a client).
//!
//! Owns: MD5 password hashing ([`md5`]), SCRAM-SHA-256 in both roles
//! ([`scram`]), PgBouncer's `auth_file` format ([`userlist`]), the
//! read-mostly per-user table shared by all shards ([`table`]), and the
//! rules of who may log in how: PostgreSQL's `pg_hba.conf` ([`hba`]) and
//! `pg_ident.conf` ([`ident`]) formats, over a tokenizer they share.
//!
//! Must not: do I/O (no sockets; no files, except `HbaRules::load` and
//! `IdentMaps::load`, which read the file they are given and nothing else;
//! their `parse` counterparts take text), read clocks, draw randomness inside
//! the state machines (nonces and salts are arguments), panic on any input,
//! or print secrets (all secret-holding types implement a redacting `Debug`).

mod conf_tokens;
pub mod hba;
pub mod ident;
pub mod md5;
pub mod scram;
pub mod table;
pub mod userlist;

pub use self::md5::{md5_response, md5_secret, verify_md5_response};
pub use self::scram::{
    random_nonce, random_salt, ClientChannelBinding, ClientKey, ScramClient, ScramClientFinal,
    ScramCredential, ScramError, ScramSecret, ScramServer, ScramServerChallenged, SecretError,
    ServerChannelBinding,
};
pub use self::table::{AuthTable, UserAuth};
pub use self::userlist::{parse_userlist, Secret, UserEntry, UserlistError};
