//! pgring: a thread-per-core PostgreSQL connection pooler.
//!
//! Start with `ARCHITECTURE.md` at the repository root for the map. In short:
//! [`protocol`] and [`auth`] are pure (bytes in, bytes out); [`runtime`] starts one
//! [`shard`] per core; a shard accepts clients ([`client`]) and lends them server
//! connections from its [`pool`]s ([`server`]).

pub mod alloc;
pub mod auth;
pub mod auth_query;
pub mod buffer;
pub mod cancel;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod logging;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod readiness;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod timeout;
pub mod tls;
pub mod tls_stream;
pub mod x509;
