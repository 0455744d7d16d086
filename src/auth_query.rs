//! `auth_query`: looking up, in PostgreSQL itself, the secret of a user that is not in the
//! auth_file.
//!
//! Owns: the lookup (a server connection borrowed from the shard's pool for
//! (`auth_dbname`, `auth_user`), one parameterized statement through
//! [`ServerConn::query_params`](crate::server::ServerConn::query_params), the connection
//! given back), turning its answer into a [`UserAuth`], and the shard's cache of answers
//! ([`AuthCache`]), which also lets concurrent logins of one user share a lookup.
//!
//! ```text
//!   login ─► AuthCache::claim ─┬─ Cached(answer) ───────────────────────────────► login
//!                              ├─ Wait ─► (the leader's answer) ────────────────► login
//!                              └─ Lead ─► pool (auth db, auth_user) ─► auth_query
//!                                          ─► AuthCache::settle (wakes the waiters) ► login
//! ```
//!
//! Why per shard: a shard touches only its own state, so the cache is an `Rc<RefCell<…>>`
//! with no lock; each shard asks PostgreSQL once per user and TTL. A reload empties it.
//!
//! Invariants:
//! - the user name reaches PostgreSQL only as a bound parameter, never in SQL text;
//! - "no such user", "no password" and "wrong password" look the same to the client (the
//!   login runs the same exchange with a mock secret and fails with the same message); only
//!   a lookup that could not run at all (the auth pool cannot connect, the query fails) is
//!   reported differently, as `auth_query failed: …` with SQLSTATE 08006;
//! - a failed password check for a user found here drops the cached answer, so a password
//!   changed in PostgreSQL is picked up on the next attempt;
//! - a lookup abandoned half-way (its client left, the login timed out) releases its
//!   waiters, which then run the lookup themselves: nobody waits for a dead leader.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::auth::table::{AuthTable, UserAuth};
use crate::config::{Config, DatabaseConfig, AUTH_QUERY_NEGATIVE_TTL};
use crate::error::{Fault, SessionError};
use crate::protocol::sqlstate;
use crate::server::ServerCredential;
use crate::shard::Shard;

/// Below this many entries the cache is never swept for expired answers.
const PRUNE_FLOOR: usize = 1024;

/// What a cached answer is for: the lookup's source and the user looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The `[databases]` entry the lookup runs in (`auth_dbname`, or the client's).
    pub database: String,
    pub auth_user: String,
    pub user: String,
}

/// A lookup's answer: the user's auth record, or `None` when PostgreSQL has no such user
/// (or no password for it).
pub type Answer = Result<Option<Rc<UserAuth>>, SessionError>;

enum Slot {
    /// An answer, good until `expires`.
    Known {
        auth: Option<Rc<UserAuth>>,
        expires: Instant,
    },
    /// A lookup is running; these logins wait for its answer.
    Pending {
        waiters: Vec<oneshot::Sender<Answer>>,
    },
}

/// One shard's `auth_query` answers, and the lookups in flight.
#[derive(Default)]
pub struct AuthCache {
    slots: RefCell<HashMap<CacheKey, Slot>>,
    /// Bumped by [`clear`](Self::clear): a lookup started before a reload does not cache.
    generation: Cell<u64>,
    /// Sweep expired answers once the map reaches this size.
    prune_at: Cell<usize>,
}

/// What [`AuthCache::claim`] tells a login to do.
pub enum Claim {
    /// A fresh answer is cached.
    Cached(Option<Rc<UserAuth>>),
    /// Another login is looking the user up: wait for its answer. `Err(Canceled)` means
    /// it gave up; claim again.
    Wait(oneshot::Receiver<Answer>),
    /// Run the lookup and hand the answer to [`Leader::settle`].
    Lead(Leader),
}

/// The login running a lookup. Dropping it without [`settle`](Self::settle) (the login
/// was abandoned) clears the pending slot and releases the waiters.
pub struct Leader {
    cache: Rc<AuthCache>,
    key: Option<CacheKey>,
    generation: u64,
}

impl Leader {
    /// Hands `answer` to every waiter and caches it for `ttl` (a missing user for at most
    /// [`AUTH_QUERY_NEGATIVE_TTL`]); errors and a zero `ttl` are not cached.
    pub fn settle(mut self, answer: &Answer, now: Instant, ttl: Duration) {
        if let Some(key) = self.key.take() {
            self.cache.settle(key, answer, now, ttl, self.generation);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // Dropping the senders wakes the waiters with `Canceled`.
            let mut slots = self.cache.slots.borrow_mut();
            if matches!(slots.get(&key), Some(Slot::Pending { .. })) {
                slots.remove(&key);
            }
        }
    }
}

impl AuthCache {
    pub fn new() -> Rc<AuthCache> {
        Rc::new(AuthCache::default())
    }

    /// Looks `key` up: a fresh cached answer, a lookup to wait for, or the lead.
    pub fn claim(self: &Rc<Self>, key: &CacheKey, now: Instant) -> Claim {
        let mut slots = self.slots.borrow_mut();
        match slots.get_mut(key) {
            Some(Slot::Known { auth, expires }) if now < *expires => {
                return Claim::Cached(auth.clone())
            }
            Some(Slot::Pending { waiters }) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                return Claim::Wait(rx);
            }
            _ => {}
        }
        slots.insert(
            key.clone(),
            Slot::Pending {
                waiters: Vec::new(),
            },
        );
        Claim::Lead(Leader {
            cache: self.clone(),
            key: Some(key.clone()),
            generation: self.generation.get(),
        })
    }

    fn settle(&self, key: CacheKey, answer: &Answer, now: Instant, ttl: Duration, generation: u64) {
        let mut slots = self.slots.borrow_mut();
        let waiters = match slots.remove(&key) {
            Some(Slot::Pending { waiters }) => waiters,
            // Cleared by a reload meanwhile, or settled already.
            Some(known) => {
                slots.insert(key.clone(), known);
                Vec::new()
            }
            None => Vec::new(),
        };
        let ttl = match answer {
            Ok(Some(_)) => ttl,
            Ok(None) => ttl.min(AUTH_QUERY_NEGATIVE_TTL),
            Err(_) => Duration::ZERO,
        };
        if !ttl.is_zero() && generation == self.generation.get() {
            if let Ok(auth) = answer {
                slots.insert(
                    key,
                    Slot::Known {
                        auth: auth.clone(),
                        expires: now + ttl,
                    },
                );
            }
            if slots.len() >= self.prune_at.get().max(PRUNE_FLOOR) {
                slots.retain(|_, slot| match slot {
                    Slot::Known { expires, .. } => now < *expires,
                    Slot::Pending { .. } => true,
                });
                self.prune_at.set(slots.len().saturating_mul(2));
            }
        }
        drop(slots);
        for waiter in waiters {
            let _ = waiter.send(answer.clone());
        }
    }

    /// Drops the cached answer for `key` (a failed password check: ask again next time).
    pub fn forget(&self, key: &CacheKey) {
        let mut slots = self.slots.borrow_mut();
        if matches!(slots.get(key), Some(Slot::Known { .. })) {
            slots.remove(key);
        }
    }

    /// Drops every cached answer (reload). Lookups in flight still answer their waiters
    /// but do not cache.
    pub fn clear(&self) {
        self.generation.set(self.generation.get() + 1);
        self.slots
            .borrow_mut()
            .retain(|_, slot| matches!(slot, Slot::Pending { .. }));
    }

    /// Number of cached answers and lookups in flight.
    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A user found (or not) with `auth_query`, for one login.
pub struct Lookup {
    cache: Rc<AuthCache>,
    key: CacheKey,
    auth: Option<Rc<UserAuth>>,
}

impl Lookup {
    /// What the login checks the client against; `None` = no such user (or no password).
    pub fn user_auth(&self) -> Option<&UserAuth> {
        self.auth.as_deref()
    }

    /// Called when the login failed: after a failed password check for a user that was
    /// found, the cached answer goes, so the next attempt asks PostgreSQL again.
    pub fn login_failed(&self, error: &SessionError) {
        if self.auth.is_some() && error.cause == crate::error::Cause::PasswordRefused {
            self.cache.forget(&self.key);
        }
    }

    /// The secret for the user's own server logins after a successful client login: the
    /// cleartext password when auth_query returned one, else what the client's proof left
    /// (`passthrough`: SCRAM keys or the md5 secret).
    pub fn server_credential(
        &self,
        passthrough: Option<ServerCredential>,
    ) -> Option<ServerCredential> {
        match self.auth.as_deref().and_then(UserAuth::password) {
            Some(password) => Some(ServerCredential::Password(password.to_owned())),
            None => passthrough,
        }
    }
}

/// Looks `user` up with `auth_query` for a login to `database` (entry `db`). `Ok(None)`
/// when no `auth_user` applies (lookups are off). The answer comes from the shard's cache,
/// from a lookup already running for the same user, or from a new one.
pub async fn find(
    shard: &Rc<Shard>,
    config: &Config,
    database: &str,
    db: &DatabaseConfig,
    user: &str,
    table: &AuthTable,
) -> Result<Option<Lookup>, SessionError> {
    let Some(auth_user) = config.auth_user(db) else {
        return Ok(None);
    };
    let key = CacheKey {
        database: config
            .pooler
            .auth_dbname
            .clone()
            .unwrap_or_else(|| database.to_owned()),
        auth_user: auth_user.to_owned(),
        user: user.to_owned(),
    };
    let cache = shard.auth_cache.clone();
    let auth = loop {
        match cache.claim(&key, Instant::now()) {
            Claim::Cached(auth) => break auth,
            Claim::Wait(rx) => match rx.await {
                Ok(answer) => break answer?,
                // The leader gave up: try again (and perhaps lead).
                Err(_canceled) => continue,
            },
            Claim::Lead(leader) => {
                let answer = run(shard, config, &key, table)
                    .await
                    .map(|auth| auth.map(Rc::new));
                leader.settle(&answer, Instant::now(), config.pooler.auth_query_cache_ttl);
                break answer?;
            }
        }
    };
    Ok(Some(Lookup { cache, key, auth }))
}

/// Runs the lookup on a connection of the (`key.database`, `key.auth_user`) pool.
async fn run(
    shard: &Rc<Shard>,
    config: &Config,
    key: &CacheKey,
    table: &AuthTable,
) -> Result<Option<UserAuth>, SessionError> {
    let failed = |e: SessionError| lookup_failed(key, e);
    let db = config.database(&key.database).ok_or_else(|| {
        failed(SessionError::new(
            Fault::Config,
            sqlstate::CONNECTION_FAILURE,
            format!("auth_dbname {:?} is not a [databases] entry", key.database),
        ))
    })?;
    let pool = shard
        .pool_for(&key.database, &key.auth_user, db)
        .map_err(failed)?;
    let mut server = pool.acquire().await.map_err(failed)?;
    // One row expected; a second one is an error rather than a guess.
    match server
        .query_params(&config.pooler.auth_query, &[&key.user], 1)
        .await
    {
        Ok(rows) => {
            pool.release(server);
            secret_from_rows(&key.user, rows, table.scram_iterations()).map_err(|message| {
                failed(SessionError::new(
                    Fault::Config,
                    sqlstate::CONNECTION_FAILURE,
                    message,
                ))
            })
        }
        Err(e) => {
            // Whatever went wrong, the connection is not trusted again.
            pool.discard(server);
            Err(failed(e))
        }
    }
}

/// The auth record in an `auth_query` answer: no row, a NULL or an empty secret = none.
fn secret_from_rows(
    user: &str,
    rows: Vec<Vec<Option<String>>>,
    scram_iterations: u32,
) -> Result<Option<UserAuth>, String> {
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    if row.len() < 2 {
        return Err(format!(
            "auth_query returned {} column(s); it must return the user name and the secret",
            row.len()
        ));
    }
    match row.into_iter().nth(1).flatten() {
        None => Ok(None),
        Some(secret) => {
            UserAuth::from_stored(user, &secret, scram_iterations, crate::auth::random_salt)
                .map_err(|e| format!("auth_query returned an unusable secret: {e}"))
        }
    }
}

/// The error a client gets when a lookup could not run, logged with its context.
fn lookup_failed(key: &CacheKey, e: SessionError) -> SessionError {
    log::warn!(
        "auth_query for user \"{}\" (database {}, auth_user {}) failed: {} (SQLSTATE {})",
        key.user,
        key.database,
        key.auth_user,
        e.message,
        e.sqlstate
    );
    // A pool limit keeps its own SQLSTATE (57P03: try again later).
    let code = if e.fault == Fault::Limit {
        e.sqlstate.as_str()
    } else {
        sqlstate::CONNECTION_FAILURE
    };
    SessionError::new(e.fault, code, format!("auth_query failed: {}", e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> CacheKey {
        CacheKey {
            database: "app".into(),
            auth_user: "pgring_auth".into(),
            user: user.into(),
        }
    }

    fn found() -> Answer {
        Ok(Some(Rc::new(
            UserAuth::from_stored("alice", "md54a0a68b43b6cd5cf266fa02f196e2371", 16, || {
                [1; 16]
            })
            .unwrap()
            .unwrap(),
        )))
    }

    fn lead(cache: &Rc<AuthCache>, k: &CacheKey, now: Instant) -> Leader {
        match cache.claim(k, now) {
            Claim::Lead(l) => l,
            _ => panic!("expected to lead"),
        }
    }

    fn cached(cache: &Rc<AuthCache>, k: &CacheKey, now: Instant) -> Option<Option<Rc<UserAuth>>> {
        match cache.claim(k, now) {
            Claim::Cached(a) => Some(a),
            Claim::Lead(_) => None,
            Claim::Wait(_) => panic!("nothing should be pending"),
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn answers_are_cached_for_the_ttl() {
        let cache = AuthCache::new();
        let now = Instant::now();
        lead(&cache, &key("alice"), now).settle(&found(), now, TTL);
        let hit = cached(&cache, &key("alice"), now + TTL / 2).expect("cached");
        assert!(hit.is_some());
        // Another user, or another source, is another entry.
        assert!(cached(&cache, &key("bob"), now).is_none());
        let mut other = key("alice");
        other.database = "other".into();
        assert!(cached(&cache, &other, now).is_none());
        // Expired: the next login leads a new lookup.
        assert!(cached(&cache, &key("alice"), now + TTL).is_none());
    }

    #[test]
    fn missing_users_are_cached_briefly_and_errors_not_at_all() {
        let cache = AuthCache::new();
        let now = Instant::now();
        lead(&cache, &key("ghost"), now).settle(&Ok(None), now, TTL);
        assert_eq!(
            cached(&cache, &key("ghost"), now + Duration::from_secs(1)).map(|a| a.is_none()),
            Some(true)
        );
        assert!(cached(&cache, &key("ghost"), now + AUTH_QUERY_NEGATIVE_TTL).is_none());

        let error = Err(SessionError::new(Fault::Server, "08006", "down"));
        lead(&cache, &key("bob"), now).settle(&error, now, TTL);
        assert!(cached(&cache, &key("bob"), now).is_none());
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let cache = AuthCache::new();
        let now = Instant::now();
        lead(&cache, &key("alice"), now).settle(&found(), now, Duration::ZERO);
        assert!(cache.is_empty());
    }

    #[test]
    fn forget_and_clear_drop_answers() {
        let cache = AuthCache::new();
        let now = Instant::now();
        lead(&cache, &key("alice"), now).settle(&found(), now, TTL);
        lead(&cache, &key("bob"), now).settle(&found(), now, TTL);
        cache.forget(&key("alice"));
        assert!(cached(&cache, &key("alice"), now).is_none());
        assert!(cached(&cache, &key("bob"), now).is_some());
        cache.clear();
        assert!(cached(&cache, &key("bob"), now).is_none());
    }

    #[test]
    fn concurrent_logins_share_one_lookup() {
        let cache = AuthCache::new();
        let now = Instant::now();
        let leader = lead(&cache, &key("alice"), now);
        let waiters: Vec<_> = (0..3)
            .map(|_| match cache.claim(&key("alice"), now) {
                Claim::Wait(rx) => rx,
                _ => panic!("expected to wait"),
            })
            .collect();
        leader.settle(&found(), now, TTL);
        for mut rx in waiters {
            let answer = rx.try_recv().unwrap().expect("an answer");
            assert!(answer.unwrap().is_some());
        }
    }

    #[test]
    fn an_abandoned_lookup_releases_its_waiters() {
        let cache = AuthCache::new();
        let now = Instant::now();
        let leader = lead(&cache, &key("alice"), now);
        let Claim::Wait(mut rx) = cache.claim(&key("alice"), now) else {
            panic!("expected to wait");
        };
        drop(leader);
        assert!(rx.try_recv().is_err(), "the waiter sees Canceled");
        // The next claim leads.
        assert!(cached(&cache, &key("alice"), now).is_none());
    }

    #[test]
    fn a_lookup_started_before_a_reload_does_not_cache() {
        let cache = AuthCache::new();
        let now = Instant::now();
        let leader = lead(&cache, &key("alice"), now);
        let Claim::Wait(mut rx) = cache.claim(&key("alice"), now) else {
            panic!("expected to wait");
        };
        cache.clear();
        leader.settle(&found(), now, TTL);
        assert!(
            rx.try_recv().unwrap().unwrap().is_ok(),
            "waiters still answered"
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn expired_answers_are_swept_as_the_cache_grows() {
        let cache = AuthCache::new();
        let now = Instant::now();
        for i in 0..PRUNE_FLOOR - 1 {
            lead(&cache, &key(&format!("u{i}")), now).settle(&Ok(None), now, TTL);
        }
        let later = now + AUTH_QUERY_NEGATIVE_TTL;
        lead(&cache, &key("last"), later).settle(&Ok(None), later, TTL);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn rows_become_auth_records() {
        let row = |name: &str, secret: Option<&str>| {
            vec![vec![Some(name.to_owned()), secret.map(str::to_owned)]]
        };
        let md5 = "md54a0a68b43b6cd5cf266fa02f196e2371";
        let auth = secret_from_rows("alice", row("alice", Some(md5)), 16)
            .unwrap()
            .unwrap();
        assert_eq!(auth.md5_secret(), Some(md5));
        // No row, NULL, empty: no password, like an unknown user.
        assert_eq!(secret_from_rows("alice", vec![], 16), Ok(None));
        assert_eq!(secret_from_rows("alice", row("alice", None), 16), Ok(None));
        assert_eq!(
            secret_from_rows("alice", row("alice", Some("")), 16),
            Ok(None)
        );
        // One column is a mistake in auth_query.
        let err = secret_from_rows("alice", vec![vec![Some(md5.to_owned())]], 16).unwrap_err();
        assert!(err.contains("1 column(s)"), "{err}");
        let err =
            secret_from_rows("alice", row("alice", Some("SCRAM-SHA-256$bad")), 16).unwrap_err();
        assert!(
            err.starts_with("auth_query returned an unusable secret"),
            "{err}"
        );
    }

    #[test]
    fn lookup_errors_name_auth_query_and_use_connection_failure() {
        let e = lookup_failed(
            &key("alice"),
            SessionError::new(Fault::Server, "28P01", "server login failed: nope"),
        );
        assert_eq!(e.sqlstate, "08006");
        assert_eq!(e.message, "auth_query failed: server login failed: nope");
        let e = lookup_failed(
            &key("alice"),
            SessionError::new(Fault::Limit, "57P03", "query_wait_timeout"),
        );
        assert_eq!(e.sqlstate, "57P03");
    }
}
