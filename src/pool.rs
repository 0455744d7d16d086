//! A shard's pool of server connections for one (database, user) pair.
//!
//! ```text
//!   acquire ──► idle stack (LIFO) ──► open a new one (below the size) ──► wait in FIFO
//!   release ──► first live waiter ──► idle stack
//! ```
//!
//! Sizes are per shard: every limit in the config is a total across shards, split by
//! [`shard_share`] (see ARCHITECTURE.md, "Limits across shards"). Pools are `!Send`: they
//! live and die on their shard, touched by one thread only, with no locks.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::clock::CoarseInstant;
use crate::config::{PoolMode, ServerAddress};
use crate::error::{Fault, SessionError};
use crate::protocol::session::prepared::StatementRegistry;
use crate::protocol::sqlstate;
use crate::server::{self, ConnectOptions, ServerConn, ServerCredential, ServerTarget};

/// Reported parameters (name, value), shared without copying.
pub type Params = Rc<[(String, String)]>;

/// The parameters a server of the pool reported at login, which every client of the pool
/// is shown, each also encoded once as a ParameterStatus message: most go to every client
/// unchanged, and encoding a dozen of them was a tenth of a login's instructions.
#[derive(Clone)]
pub struct Welcome {
    pub params: Params,
    /// The ParameterStatus message of `params[i]`.
    pub encoded: Rc<[bytes::Bytes]>,
}

impl Welcome {
    pub fn new(params: Params) -> Welcome {
        let encoded = params
            .iter()
            .map(|(name, value)| {
                let mut message = bytes::BytesMut::new();
                crate::protocol::backend::parameter_status(&mut message, name, value);
                message.freeze()
            })
            .collect();
        Welcome { params, encoded }
    }
}

/// Identifies a pool within a shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// The database name the client asked for.
    pub database: String,
    /// The client's user name.
    pub user: String,
}

/// This shard's part of a total `limit` split over `shards`: an even split, the remainder
/// going to the lowest shard ids, and at least one when the limit is not zero (so that
/// every shard can serve every pool).
pub fn shard_share(limit: u32, shards: usize, shard: usize) -> u32 {
    if limit == 0 {
        return 0;
    }
    let shards = shards.max(1) as u32;
    let base = limit / shards;
    let extra = u32::from((shard as u32) < limit % shards);
    (base + extra).max(1)
}

/// The sizes and timeouts a pool works with, already split for this shard.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: u32,
    pub min_size: u32,
    pub reserve_size: u32,
    pub reserve_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_check_delay: Duration,
    pub server_check_query: String,
    /// How long a failed server login is reported to new clients before trying again.
    pub server_login_retry: Duration,
    pub connect: ConnectOptions,
    /// This shard's share of `max_db_connections` for the pool's database (0 = none).
    pub max_db_connections: u32,
    /// This shard's share of `max_user_connections` for the pool's server user (0 = none).
    pub max_user_connections: u32,
}

/// Server connections open on one shard per database and per server user, for
/// `max_db_connections` and `max_user_connections`, which span pools. Shared by the
/// shard's pools (`Rc`, one thread).
#[derive(Default)]
pub struct ServerLimits {
    per_db: RefCell<HashMap<String, u32>>,
    per_user: RefCell<HashMap<String, u32>>,
    pools: RefCell<Vec<Weak<Pool>>>,
}

impl ServerLimits {
    /// Counts one more connection if both limits allow it.
    fn try_take(&self, db: &str, db_limit: u32, user: &str, user_limit: u32) -> bool {
        let mut per_db = self.per_db.borrow_mut();
        let mut per_user = self.per_user.borrow_mut();
        let d = per_db.get(db).copied().unwrap_or(0);
        let u = per_user.get(user).copied().unwrap_or(0);
        if (db_limit > 0 && d >= db_limit) || (user_limit > 0 && u >= user_limit) {
            return false;
        }
        per_db.insert(db.to_owned(), d + 1);
        per_user.insert(user.to_owned(), u + 1);
        true
    }

    fn give_back(&self, db: &str, user: &str) {
        if let Some(d) = self.per_db.borrow_mut().get_mut(db) {
            *d = d.saturating_sub(1);
        }
        if let Some(u) = self.per_user.borrow_mut().get_mut(user) {
            *u = u.saturating_sub(1);
        }
    }

    /// Closes one idle connection of another pool that shares the database or the user
    /// with `asking`, to make room under a limit. True if one was closed.
    fn evict_for(&self, asking: &Pool) -> bool {
        self.pools.borrow_mut().retain(|w| w.strong_count() > 0);
        let pools: Vec<Rc<Pool>> = self
            .pools
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for pool in pools {
            if std::ptr::eq(Rc::as_ptr(&pool), asking)
                || (pool.key.database != asking.key.database
                    && pool.target.user != asking.target.user)
            {
                continue;
            }
            let victim = pool.idle.borrow_mut().pop();
            if let Some(conn) = victim {
                pool.discard(conn);
                return true;
            }
        }
        false
    }
}

pub struct Pool {
    pub key: PoolKey,
    limits: Rc<ServerLimits>,
    pub target: ServerTarget,
    address: Rc<ServerAddress>,
    pub settings: RefCell<PoolSettings>,
    credential: RefCell<ServerCredential>,
    /// Boxed connections: they move between the pool and sessions at every transaction,
    /// and a session keeps only the pointer.
    #[allow(clippy::vec_box)]
    idle: RefCell<Vec<Box<ServerConn>>>,
    /// Server connections open or being opened: idle + in use + connecting.
    open: Cell<u32>,
    waiters: RefCell<VecDeque<Waiter>>,
    /// Parameters a fresh server reports, shown to clients at login.
    welcome: RefCell<Option<Welcome>>,
    /// The latest failed connection attempt, for `server_login_retry`.
    last_login_failure: RefCell<Option<(Instant, SessionError)>>,
    /// The named statements of the pool's clients, one per distinct query.
    pub statements: Rc<StatementRegistry>,
}

/// A client queued for a connection: the pool's [`Offer`] to it.
///
/// Its wait has no timer of its own: the shard's control tick ([`Pool::maintain`]) drops
/// the waiter once `wake_at` has come, and the client then looks again (for
/// `query_wait_timeout`, `reserve_pool_timeout` or the shared limits). A glommio timer
/// per wait, set and cancelled for every transaction that waits, was about 1,500 of the
/// 10,800 instructions pgring spent per transaction at 50 clients over a pool of 20; the
/// price is the tick's precision (100 ms) on those settings.
struct Waiter {
    offer: Offer<Box<ServerConn>>,
    wake_at: Option<CoarseInstant>,
}

/// Where a released connection meets the client queued for it: shared by the pool's
/// [`Offer`] and the client's [`Ticket`], on one thread (a channel's atomics and lock
/// would buy nothing here).
struct Handoff<T> {
    item: Cell<Option<T>>,
    /// The pool let go of the offer without an item: "look again".
    dismissed: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// A hand-off's two ends. `give_back` receives an item that was delivered to the ticket
/// but never taken (the ticket was dropped first).
fn handoff<T, F: FnMut(T)>(give_back: F) -> (Offer<T>, Ticket<T, F>) {
    let handoff = Rc::new(Handoff {
        item: Cell::new(None),
        dismissed: Cell::new(false),
        waker: Cell::new(None),
    });
    (
        Offer {
            handoff: handoff.clone(),
        },
        Ticket { handoff, give_back },
    )
}

/// The pool's end of a [`Handoff`].
struct Offer<T> {
    handoff: Rc<Handoff<T>>,
}

impl<T> Offer<T> {
    /// False once the client has stopped waiting (its [`Ticket`] is gone).
    fn is_live(&self) -> bool {
        Rc::strong_count(&self.handoff) > 1
    }

    /// Hands `item` to the client and wakes it (through `Drop`), or gives `item` back if
    /// the client left.
    fn deliver(self, item: T) -> Result<(), T> {
        if !self.is_live() {
            return Err(item);
        }
        self.handoff.item.set(Some(item));
        Ok(())
    }
}

impl<T> Drop for Offer<T> {
    /// Dismissed (or served: the ticket looks at the item first); the client's task is
    /// woken either way, if it is still waiting.
    fn drop(&mut self) {
        self.handoff.dismissed.set(true);
        if let Some(waker) = self.handoff.waker.take() {
            if self.is_live() {
                waker.wake();
            }
        }
    }
}

/// The client's end of a [`Handoff`]: ready with the item, or with `None` once the pool
/// dismissed the offer.
struct Ticket<T, F: FnMut(T)> {
    handoff: Rc<Handoff<T>>,
    give_back: F,
}

impl<T, F: FnMut(T)> Future for Ticket<T, F> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(item) = self.handoff.item.take() {
            return Poll::Ready(Some(item));
        }
        if self.handoff.dismissed.get() {
            return Poll::Ready(None);
        }
        let waker = match self.handoff.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        self.handoff.waker.set(Some(waker));
        Poll::Pending
    }
}

impl<T, F: FnMut(T)> Drop for Ticket<T, F> {
    fn drop(&mut self) {
        if let Some(item) = self.handoff.item.take() {
            (self.give_back)(item);
        }
    }
}

/// What [`Pool::pop_idle`] found.
enum Idle {
    Ready(Box<ServerConn>),
    /// Idle past `server_check_delay`: run `server_check_query` before handing it out.
    NeedsCheck(Box<ServerConn>),
}

/// Counters for the periodic stats line and, later, SHOW POOLS.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolCounts {
    pub idle: u32,
    pub open: u32,
    pub waiting: u32,
}

impl Pool {
    pub fn new(
        key: PoolKey,
        target: ServerTarget,
        settings: PoolSettings,
        credential: ServerCredential,
        limits: Rc<ServerLimits>,
    ) -> Rc<Pool> {
        let address = Rc::new(target.address.clone());
        let pool = Rc::new(Pool {
            key,
            limits: limits.clone(),
            target,
            address,
            settings: RefCell::new(settings),
            credential: RefCell::new(credential),
            idle: RefCell::new(Vec::new()),
            open: Cell::new(0),
            waiters: RefCell::new(VecDeque::new()),
            welcome: RefCell::new(None),
            last_login_failure: RefCell::new(None),
            statements: Rc::new(StatementRegistry::default()),
        });
        limits.pools.borrow_mut().push(Rc::downgrade(&pool));
        pool
    }

    pub fn mode(&self) -> PoolMode {
        self.settings.borrow().mode
    }

    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            idle: self.idle.borrow().len() as u32,
            open: self.open.get(),
            waiting: self.waiters.borrow().len() as u32,
        }
    }

    /// Replaces the secret used for new server logins (a password from a reload, or SCRAM
    /// keys recovered from a client's proof).
    pub fn set_credential(&self, credential: ServerCredential) {
        *self.credential.borrow_mut() = credential;
        self.last_login_failure.borrow_mut().take();
    }

    /// True while a failed server login is still within `server_login_retry`.
    pub fn login_failing(&self) -> bool {
        self.last_login_failure
            .borrow()
            .as_ref()
            .is_some_and(|(when, _)| when.elapsed() < self.settings.borrow().server_login_retry)
    }

    pub fn has_credential(&self) -> bool {
        !matches!(*self.credential.borrow(), ServerCredential::None)
    }

    /// What clients are shown at login, once a server of the pool has logged in.
    pub fn welcome(&self) -> Option<Welcome> {
        self.welcome.borrow().clone()
    }

    /// Gets a server connection: an idle one, a new one, or the next one released.
    pub async fn acquire(self: &Rc<Self>) -> Result<Box<ServerConn>, SessionError> {
        let mut first_miss = None;
        loop {
            if let Some(conn) = self.take_idle().await {
                return Ok(conn);
            }
            // The clock is read only once there is no idle connection to hand out.
            let started = *first_miss.get_or_insert_with(CoarseInstant::now);
            let (size, reserve, reserve_timeout, wait_timeout) = {
                let s = self.settings.borrow();
                (
                    s.size,
                    s.reserve_size,
                    s.reserve_timeout,
                    s.query_wait_timeout,
                )
            };
            let waited = started.elapsed();
            let reserve_open = reserve > 0 && waited >= reserve_timeout;
            let limit = if reserve_open { size + reserve } else { size };
            let mut held_by_shared_limit = false;
            if self.open.get() < limit {
                if self.take_shared_slot() {
                    return Box::pin(self.open_new()).await;
                }
                // max_db_connections / max_user_connections: make room from another
                // pool's idle connections, else wait and look again.
                if self.limits.evict_for(self) && self.take_shared_slot() {
                    return Box::pin(self.open_new()).await;
                }
                held_by_shared_limit = true;
            }
            // Wait for a release; wake early to try the reserve pool.
            let remaining = if wait_timeout.is_zero() {
                None
            } else {
                match wait_timeout.checked_sub(waited) {
                    Some(d) if !d.is_zero() => Some(d),
                    _ => return Err(wait_timeout_error()),
                }
            };
            // Wake early to try the reserve pool, or to look at the shared limits again
            // (a connection closing in another pool does not wake this pool's waiters).
            // The control tick does the waking, so these times take effect at the first
            // tick after them (see `Waiter`).
            let mut wake = remaining;
            if reserve > 0 && !reserve_open {
                let to_reserve = reserve_timeout
                    .saturating_sub(waited)
                    .max(Duration::from_millis(1));
                wake = Some(wake.map_or(to_reserve, |w| w.min(to_reserve)));
            }
            if held_by_shared_limit {
                let poll = Duration::from_millis(50);
                wake = Some(wake.map_or(poll, |w| w.min(poll)));
            }
            // A connection delivered after this wait was given up goes back to the pool.
            let (offer, ticket) = handoff(|conn| self.release(conn));
            let wake_at = wake.map(|d| CoarseInstant::now().saturating_add(d));
            self.waiters
                .borrow_mut()
                .push_back(Waiter { offer, wake_at });
            match ticket.await {
                Some(conn) => return Ok(conn),
                // A slot was freed (a connection closed), or the control tick says it is
                // time to look again: loop, unless the wait is over.
                None => {
                    if !wait_timeout.is_zero() && started.elapsed() >= wait_timeout {
                        return Err(wait_timeout_error());
                    }
                }
            }
        }
    }

    /// An idle connection that can be handed out at once: fit for use and not due for
    /// `server_check_query`. The attach path of every transaction starts here.
    pub fn take_ready(&self) -> Option<Box<ServerConn>> {
        match self.pop_idle()? {
            Idle::Ready(conn) => Some(conn),
            Idle::NeedsCheck(conn) => {
                self.idle.borrow_mut().push(conn);
                None
            }
        }
    }

    /// Pops an idle connection that is still fit for use, running `server_check_query`
    /// on it when it has been idle longer than `server_check_delay`.
    async fn take_idle(self: &Rc<Self>) -> Option<Box<ServerConn>> {
        loop {
            let mut conn = match self.pop_idle()? {
                Idle::Ready(conn) => return Some(conn),
                Idle::NeedsCheck(conn) => conn,
            };
            let check_query = self.settings.borrow().server_check_query.clone();
            if let Err(e) = conn.run_internal(&check_query).await {
                log::warn!(
                    "{}/{}: server check failed, closing the connection: {e}",
                    self.key.database,
                    self.key.user
                );
                self.discard(conn);
                continue;
            }
            conn.last_used.set(CoarseInstant::now());
            return Some(conn);
        }
    }

    /// Pops the most recently used idle connection, closing the ones that are too old,
    /// idle too long, or closed or talking while idle.
    fn pop_idle(&self) -> Option<Idle> {
        loop {
            let mut conn = self.idle.borrow_mut().pop()?;
            let (lifetime, idle_timeout, check_delay, has_check) = {
                let s = self.settings.borrow();
                (
                    s.server_lifetime,
                    s.server_idle_timeout,
                    s.server_check_delay,
                    !s.server_check_query.is_empty(),
                )
            };
            let now = CoarseInstant::now();
            let idle_for = now.saturating_duration_since(conn.last_used.get());
            // A server that closed (or sent a FATAL) while idle is not handed out.
            if (!lifetime.is_zero() && now.saturating_duration_since(conn.created) >= lifetime)
                || (!idle_timeout.is_zero() && idle_for >= idle_timeout)
                || !conn.rbuf.is_empty()
                || conn.stream.closed_or_unsolicited()
            {
                self.discard(conn);
                continue;
            }
            return Some(if has_check && idle_for >= check_delay {
                Idle::NeedsCheck(conn)
            } else {
                Idle::Ready(conn)
            });
        }
    }

    /// Counts a new connection against the limits shared with other pools.
    fn take_shared_slot(&self) -> bool {
        let s = self.settings.borrow();
        self.limits.try_take(
            &self.key.database,
            s.max_db_connections,
            &self.target.user,
            s.max_user_connections,
        )
    }

    /// Opens a connection; the caller has taken its shared slot.
    async fn open_new(self: &Rc<Self>) -> Result<Box<ServerConn>, SessionError> {
        // After a failed login, clients get that failure at once for server_login_retry
        // instead of each one trying (and waiting for) the server again.
        if let Some((when, error)) = &*self.last_login_failure.borrow() {
            if when.elapsed() < self.settings.borrow().server_login_retry {
                self.limits.give_back(&self.key.database, &self.target.user);
                return Err(error.clone());
            }
        }
        self.open.set(self.open.get() + 1);
        let credential = self.credential.borrow().clone();
        let opts = self.settings.borrow().connect.clone();
        match server::connect(&self.target, self.address.clone(), &credential, opts).await {
            Ok(conn) => {
                if self.welcome.borrow().is_none() {
                    *self.welcome.borrow_mut() = Some(Welcome::new(conn.params.to_vec().into()));
                }
                self.last_login_failure.borrow_mut().take();
                Ok(conn)
            }
            Err(e) => {
                *self.last_login_failure.borrow_mut() = Some((Instant::now(), e.clone()));
                self.slot_freed();
                Err(e)
            }
        }
    }

    /// Returns a connection that is quiet (no transaction, nothing owed). One handed
    /// straight to a waiting client gets the checks an idle one gets when it is taken
    /// (bytes left unread, closed by the server); one parked idle gets them when taken.
    pub fn release(&self, conn: Box<ServerConn>) {
        let now = CoarseInstant::now();
        conn.last_used.set(now);
        let lifetime = self.settings.borrow().server_lifetime;
        if (!lifetime.is_zero() && now.saturating_duration_since(conn.created) >= lifetime)
            || !conn.rbuf.is_empty()
            || conn.statements.is_poisoned()
        {
            self.discard(conn);
            return;
        }
        if self.open.get() > self.settings.borrow().size + self.settings.borrow().reserve_size {
            // The pool shrank on reload.
            self.discard(conn);
            return;
        }
        let mut conn = conn;
        if !self.waiters.borrow().is_empty() && conn.stream.closed_or_unsolicited() {
            self.discard(conn);
            return;
        }
        loop {
            let Some(waiter) = self.waiters.borrow_mut().pop_front() else {
                break;
            };
            match waiter.offer.deliver(conn) {
                Ok(()) => return,
                Err(back) => conn = back,
            }
        }
        self.idle.borrow_mut().push(conn);
    }

    /// Closes a connection that must not be reused (broken, mid-transaction, too old).
    pub fn discard(&self, conn: Box<ServerConn>) {
        drop(conn);
        self.slot_freed();
    }

    /// A connection slot became free: let the first waiter open a new connection.
    fn slot_freed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        self.limits.give_back(&self.key.database, &self.target.user);
        // Dropping the waiter wakes its client with "look again".
        while let Some(waiter) = self.waiters.borrow_mut().pop_front() {
            if waiter.offer.is_live() {
                drop(waiter);
                break;
            }
        }
    }

    /// Closes idle connections past `server_idle_timeout` or `server_lifetime`, wakes the
    /// waiters that are due (see [`Waiter`]) and forgets the ones that left, and returns how
    /// many more connections are needed to reach `min_pool_size`.
    pub fn maintain(&self) -> u32 {
        let (lifetime, idle_timeout, min) = {
            let s = self.settings.borrow();
            (s.server_lifetime, s.server_idle_timeout, s.min_size)
        };
        let now = CoarseInstant::now();
        // Dropping a due waiter wakes its client with "look again".
        self.waiters
            .borrow_mut()
            .retain(|w| w.offer.is_live() && w.wake_at.is_none_or(|at| at > now));
        let mut idle = self.idle.borrow_mut();
        let open_before = self.open.get();
        let mut closed = 0;
        // `retain` keeps the vector's capacity: releases do not grow it again.
        idle.retain(|conn| {
            let too_old =
                !lifetime.is_zero() && now.saturating_duration_since(conn.created) >= lifetime;
            let too_idle = !idle_timeout.is_zero()
                && now.saturating_duration_since(conn.last_used.get()) >= idle_timeout
                && open_before - closed > min;
            if too_old || too_idle {
                closed += 1;
            }
            !(too_old || too_idle)
        });
        drop(idle);
        for _ in 0..closed {
            self.slot_freed();
        }
        min.saturating_sub(self.open.get())
    }

    /// Opens one connection and parks it idle (for `min_pool_size`).
    pub async fn prefill_one(self: &Rc<Self>) -> Result<(), SessionError> {
        if !self.take_shared_slot() {
            return Ok(());
        }
        let conn = self.open_new().await?;
        self.release(conn);
        Ok(())
    }

    /// Closes every idle connection (shutdown, or a database entry that changed).
    pub fn close_idle(&self) {
        let drained: Vec<_> = self.idle.borrow_mut().drain(..).collect();
        for conn in drained {
            self.discard(conn);
        }
    }

    pub fn address(&self) -> &Rc<ServerAddress> {
        &self.address
    }
}

fn wait_timeout_error() -> SessionError {
    SessionError::new(
        Fault::Limit,
        sqlstate::CANNOT_CONNECT_NOW,
        "query_wait_timeout: no server connection became available in time",
    )
}

#[cfg(test)]
mod tests {
    use super::{handoff, shard_share};
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::pin;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    /// The cached messages are what encoding each parameter at login gives, in order.
    #[test]
    fn the_welcome_holds_each_parameter_status_message_encoded() {
        use super::{Params, Welcome};
        use crate::protocol::backend::{parameter_status, parse_parameter_status};
        let params: Params = vec![
            ("server_version".to_string(), "15.18".to_string()),
            ("TimeZone".to_string(), "Etc/UTC".to_string()),
            ("application_name".to_string(), String::new()),
        ]
        .into();
        let welcome = Welcome::new(params.clone());
        assert_eq!(welcome.encoded.len(), params.len());
        for ((name, value), message) in params.iter().zip(welcome.encoded.iter()) {
            let mut expected = bytes::BytesMut::new();
            parameter_status(&mut expected, name, value);
            assert_eq!(&message[..], &expected[..]);
            // A 5-byte header, then the body.
            assert_eq!(message[0], b'S');
            let (n, v) = parse_parameter_status(&message[5..]).unwrap();
            assert_eq!((n, v), (name.as_str(), value.as_str()));
        }
    }

    /// A waker that counts its wakes.
    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn a_delivered_item_wakes_the_waiting_ticket_and_is_taken() {
        let (offer, ticket) = handoff(|_: u32| panic!("nothing to give back"));
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut ticket = pin!(ticket);
        assert_eq!(ticket.as_mut().poll(&mut cx), Poll::Pending);
        assert!(offer.is_live());
        assert!(offer.deliver(7).is_ok());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(ticket.as_mut().poll(&mut cx), Poll::Ready(Some(7)));
    }

    #[test]
    fn a_dismissed_offer_wakes_the_ticket_with_nothing() {
        let (offer, ticket) = handoff(|_: u32| panic!("nothing to give back"));
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut ticket = pin!(ticket);
        assert_eq!(ticket.as_mut().poll(&mut cx), Poll::Pending);
        drop(offer);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(ticket.as_mut().poll(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn an_item_for_a_client_that_left_comes_back_to_the_offerer() {
        let (offer, ticket) = handoff(|_: u32| panic!("the ticket never held it"));
        drop(ticket);
        assert!(!offer.is_live());
        assert_eq!(offer.deliver(7), Err(7));
    }

    /// Delivered, then the wait given up before the item was taken (a login that timed
    /// out in the queue): the item goes back through `give_back`, not down with the
    /// ticket.
    #[test]
    fn an_item_delivered_but_never_taken_is_given_back() {
        let returned = Rc::new(RefCell::new(Vec::new()));
        let sink = returned.clone();
        let (offer, ticket) = handoff(move |item: u32| sink.borrow_mut().push(item));
        assert!(offer.deliver(7).is_ok());
        drop(ticket);
        assert_eq!(*returned.borrow(), vec![7]);
    }

    #[test]
    fn shares_add_up_to_the_limit_when_it_is_at_least_the_shard_count() {
        for shards in 1..8 {
            for limit in shards as u32..50 {
                let total: u32 = (0..shards).map(|s| shard_share(limit, shards, s)).sum();
                assert_eq!(total, limit, "limit {limit} over {shards} shards");
            }
        }
    }

    #[test]
    fn every_shard_gets_at_least_one_of_a_small_limit() {
        assert_eq!(shard_share(1, 4, 3), 1);
        assert_eq!(shard_share(0, 4, 0), 0);
    }
}
