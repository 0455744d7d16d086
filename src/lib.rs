//! pgring: a thread-per-core PostgreSQL connection pooler.
//!
//! Start with `ARCHITECTURE.md` at the repository root for the map.

pub mod auth;
pub mod config;
pub mod protocol;
