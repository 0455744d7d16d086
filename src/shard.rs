//! A shard: one executor pinned to one core, owning its listeners, client sessions and
//! pools.
//!
//! ```text
//!            ┌──────────────── shard i (glommio executor on core i) ───────────────┐
//!   TCP ────►│ accept loop (SO_REUSEPORT) ──► client::serve ──► Pool (db, user)    │
//!   Unix ───►│ (shard 0 accepts, hands every n-th client to shard n over the mesh) │
//!            │ control tick: reload, shutdown, pool upkeep, stats                   │
//!            └──────── mesh: CancelRequest keys, Unix clients ─────────────────────┘
//! ```
//!
//! Invariant: nothing in a shard is shared with another thread except [`Shared`], which
//! holds immutable snapshots behind atomic pointers (config, auth table) and counters.
//! Everything else crosses shards as a [`ShardMsg`].

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::Task;

use crate::auth::table::AuthTable;
use crate::auth_query::AuthCache;
use crate::cancel::CancelRegistry;
use crate::client::{self, Peer};
use crate::config::{Config, DatabaseConfig};
use crate::error::{Fault, SessionError};
use crate::net::{self, Keepalive};
use crate::pool::{shard_share, Pool, PoolKey, PoolSettings, ServerLimits};
use crate::protocol::sqlstate;
use crate::protocol::startup::CancelKey;
use crate::readiness::Listener;
use crate::server::{ConnectOptions, ServerCredential, ServerTarget};

/// How often a shard looks at reload/shutdown flags and tends its pools.
const CONTROL_TICK: Duration = Duration::from_millis(100);

/// How long a shard's readiness driver may wait in `epoll_wait` itself, once no task is
/// runnable, before the shard sleeps in io_uring (`readiness::Poller::drive` says why).
/// A shard whose sockets are busy more often than this never pays for a sleep; a quiet
/// one pays this wait once (blocked, not spinning) and then sleeps as before. Timers and
/// messages from other shards (cancel requests, Unix-socket clients) wait at most this
/// long while the driver waits. Measured with 50 clients at 1,000 transactions per second
/// on two shards: 131–139 µs of CPU per transaction with 1 ms, 105–121 with 2 ms, 87–101
/// with 4 ms, PgBouncer 79–90 in the same runs.
pub const IDLE_WAIT: Duration = Duration::from_millis(4);

/// glommio's preemption timer on shard executors (its default is 100 ms). While the
/// shard is busy its task queue runs without a break, and only a preemption lets the
/// executor process timers and messages from other shards: this bounds how late those
/// are, at the cost of a timer re-armed (two `io_uring_enter`) per period.
pub const PREEMPT_TIMER: Duration = Duration::from_millis(8);

// The preemption timer also ends an idle wait early (its expiry interrupts `epoll_wait`):
// were it the shorter, a quiet shard would be woken by it again and again and never reach
// its sleep in io_uring.
const _: () = assert!(IDLE_WAIT.as_millis() < PREEMPT_TIMER.as_millis());

/// Messages between shards.
pub enum ShardMsg {
    /// A CancelRequest whose key names the receiving shard.
    Cancel(CancelKey),
    /// A Unix-socket client accepted by shard 0 for the receiving shard to serve (not
    /// yet registered with any shard's readiness poller).
    UnixClient(std::os::fd::OwnedFd),
}

/// Per-shard counters, written by the shard and read by the main thread's stats line.
#[derive(Debug, Default)]
pub struct ShardStats {
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    pub servers: AtomicU32,
    pub waiting: AtomicU32,
}

/// What all shards share: immutable snapshots swapped atomically, and counters.
pub struct Shared {
    pub config: ArcSwap<Config>,
    pub auth: ArcSwap<AuthTable>,
    /// The rustls configuration for client handshakes; `None` when client TLS is off.
    pub tls: ArcSwapOption<crate::tls::ClientTls>,
    /// The rustls configuration for server handshakes; `None` when server TLS is off.
    pub server_tls: ArcSwapOption<rustls::ClientConfig>,
    /// Bumped after every successful reload.
    generation: AtomicU64,
    clients: AtomicU32,
    shutdown: AtomicBool,
    pub stats: Vec<ShardStats>,
    /// Each shard's readiness bell, set when the shard starts: rung after a message is
    /// sent to that shard (see `readiness::Bell`).
    bells: Vec<std::sync::OnceLock<crate::readiness::Bell>>,
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        auth: Arc<AuthTable>,
        tls: Option<crate::tls::ClientTls>,
        server_tls: Option<Arc<rustls::ClientConfig>>,
        shards: usize,
    ) -> Shared {
        Shared {
            config: ArcSwap::new(config),
            auth: ArcSwap::new(auth),
            tls: ArcSwapOption::new(tls.map(Arc::new)),
            server_tls: ArcSwapOption::new(server_tls),
            generation: AtomicU64::new(0),
            clients: AtomicU32::new(0),
            shutdown: AtomicBool::new(false),
            stats: (0..shards).map(|_| ShardStats::default()).collect(),
            bells: (0..shards).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }

    /// Publishes a new configuration, auth table and TLS configurations to every shard.
    pub fn reload(
        &self,
        config: Arc<Config>,
        auth: Arc<AuthTable>,
        tls: Option<crate::tls::ClientTls>,
        server_tls: Option<Arc<rustls::ClientConfig>>,
    ) {
        self.config.store(config);
        self.auth.store(auth);
        self.tls.store(tls.map(Arc::new));
        self.server_tls.store(server_tls);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
    }

    pub fn client_count(&self) -> u32 {
        self.clients.load(Ordering::Relaxed)
    }

    /// Counts a new client if the total across shards is below `max`.
    pub fn admit_client(&self, max: u32) -> bool {
        self.clients
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn release_client(&self) {
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub shared: Arc<Shared>,
    config: RefCell<Arc<Config>>,
    seen_generation: Cell<u64>,
    pools: RefCell<HashMap<PoolKey, Rc<Pool>>>,
    server_limits: Rc<ServerLimits>,
    /// `auth_query` answers and lookups in flight; emptied on reload.
    pub auth_cache: Rc<AuthCache>,
    pub cancel: CancelRegistry,
    peers: OnceCell<Senders<ShardMsg>>,
    shutting_down: Cell<bool>,
    pub transactions: Cell<u64>,
    pub queries: Cell<u64>,
}

impl Shard {
    pub fn new(id: usize, count: usize, shared: Arc<Shared>) -> Rc<Shard> {
        let config = shared.config.load_full();
        Rc::new(Shard {
            id,
            count,
            shared,
            config: RefCell::new(config),
            seen_generation: Cell::new(0),
            pools: RefCell::new(HashMap::new()),
            server_limits: Rc::new(ServerLimits::default()),
            auth_cache: AuthCache::new(),
            cancel: CancelRegistry::new(id),
            peers: OnceCell::new(),
            shutting_down: Cell::new(false),
            transactions: Cell::new(0),
            queries: Cell::new(0),
        })
    }

    /// The configuration snapshot new work should use.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    pub fn connect_options(&self) -> ConnectOptions {
        let config = self.config.borrow();
        self.connect_options_for(&config.pooler)
    }

    fn connect_options_for(&self, p: &crate::config::PoolerConfig) -> ConnectOptions {
        ConnectOptions {
            connect_timeout: p.server_connect_timeout,
            keepalive: Keepalive::from_config(p),
            max_message: p.max_packet_size as usize,
            tls_mode: p.server_tls_sslmode,
            tls: self.shared.server_tls.load_full(),
        }
    }

    /// Sends a message to another shard (dropped if that shard is gone), and rings its
    /// bell so that it reads the message now rather than after its idle wait.
    pub async fn send_to(&self, shard: usize, msg: ShardMsg) {
        if let Some(peers) = self.peers.get() {
            if peers.send_to(shard, msg).await.is_err() {
                log::debug!("shard {shard} is gone; message dropped");
                return;
            }
            if let Some(bell) = self.shared.bells.get(shard).and_then(|b| b.get()) {
                bell.ring();
            }
        }
    }

    /// The pool for a client's (database, user), created on first use.
    pub fn pool_for(
        &self,
        database: &str,
        user: &str,
        db: &DatabaseConfig,
    ) -> Result<Rc<Pool>, SessionError> {
        let key = PoolKey {
            database: database.to_owned(),
            user: user.to_owned(),
        };
        if let Some(pool) = self.pools.borrow().get(&key) {
            return Ok(pool.clone());
        }
        let config = self.config();
        let target = ServerTarget {
            address: db.address.clone(),
            dbname: db.dbname.clone().unwrap_or_else(|| database.to_owned()),
            user: db.user.clone().unwrap_or_else(|| user.to_owned()),
            startup_parameters: db.startup_parameters.clone(),
        };
        if target.user.is_empty() {
            return Err(SessionError::new(
                Fault::Config,
                sqlstate::INVALID_AUTHORIZATION,
                "empty server user",
            ));
        }
        let credential = self.credential_for(db, &target.user);
        let settings = self.pool_settings(&config, db, &target.user, user);
        let pool = Pool::new(
            key.clone(),
            target,
            settings,
            credential,
            self.server_limits.clone(),
        );
        self.pools.borrow_mut().insert(key, pool.clone());
        Ok(pool)
    }

    /// The secret for server logins: the database entry's password for a forced user,
    /// else what the auth table knows.
    fn credential_for(&self, db: &DatabaseConfig, server_user: &str) -> ServerCredential {
        if db.user.is_some() {
            if let Some(p) = &db.password {
                return ServerCredential::Password(p.clone());
            }
        }
        let auth = self.shared.auth.load();
        match auth.get(server_user) {
            Some(u) if u.password().is_some() => {
                ServerCredential::Password(u.password().unwrap_or_default().to_owned())
            }
            Some(u) if u.md5_secret().is_some() => {
                ServerCredential::Md5Secret(u.md5_secret().unwrap_or_default().to_owned())
            }
            _ => match &db.password {
                Some(p) => ServerCredential::Password(p.clone()),
                None => ServerCredential::None,
            },
        }
    }

    /// A pool's settings: `user` is the client's user (per-user pool settings),
    /// `server_user` the one server connections log in as (`max_user_connections`).
    fn pool_settings(
        &self,
        config: &Config,
        db: &DatabaseConfig,
        server_user: &str,
        user: &str,
    ) -> PoolSettings {
        let p = &config.pooler;
        let share = |limit: u32| shard_share(limit, self.count, self.id);
        let max_db = db
            .max_db_connections
            .filter(|&n| n > 0)
            .unwrap_or(p.max_db_connections);
        let max_user = config
            .users
            .get(server_user)
            .and_then(|u| u.max_user_connections)
            .filter(|&n| n > 0)
            .unwrap_or(p.max_user_connections);
        PoolSettings {
            mode: config.pool_mode(db, user),
            size: share(config.pool_size(db, user)),
            min_size: db
                .min_pool_size
                .unwrap_or(p.min_pool_size)
                .min(config.pool_size(db, user))
                / self.count.max(1) as u32,
            reserve_size: if db.reserve_pool_size.unwrap_or(p.reserve_pool_size) == 0 {
                0
            } else {
                share(db.reserve_pool_size.unwrap_or(p.reserve_pool_size))
            },
            reserve_timeout: p.reserve_pool_timeout,
            query_wait_timeout: p.query_wait_timeout,
            server_lifetime: p.server_lifetime,
            server_idle_timeout: p.server_idle_timeout,
            server_check_delay: p.server_check_delay,
            server_check_query: p.server_check_query.clone(),
            server_login_retry: p.server_login_retry,
            connect: self.connect_options_for(p),
            max_db_connections: share(max_db),
            max_user_connections: share(max_user),
        }
    }

    /// Picks up a new config/auth snapshot: pools get their new sizes and secrets.
    fn apply_reload(&self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation == self.seen_generation.get() {
            return;
        }
        self.seen_generation.set(generation);
        let config = self.shared.config.load_full();
        *self.config.borrow_mut() = config.clone();
        // A new auth_query, auth_user or auth_file: answers are asked for again.
        self.auth_cache.clear();
        for pool in self.pools.borrow().values() {
            if let Some(db) = config.database(&pool.key.database) {
                *pool.settings.borrow_mut() =
                    self.pool_settings(&config, db, &pool.target.user, &pool.key.user);
                let credential = self.credential_for(db, &pool.target.user);
                if !matches!(credential, ServerCredential::None) {
                    pool.set_credential(credential);
                }
            }
        }
        if self.id == 0 {
            log::info!("configuration reloaded");
        }
    }

    /// Pool upkeep: close stale idle servers, top up to min_pool_size, publish counters.
    fn tend_pools(self: &Rc<Self>) {
        let mut servers = 0;
        let mut waiting = 0;
        let pools: Vec<Rc<Pool>> = self.pools.borrow().values().cloned().collect();
        for pool in pools {
            let missing = pool.maintain();
            let counts = pool.counts();
            servers += counts.open;
            waiting += counts.waiting;
            if missing > 0
                && !self.is_shutting_down()
                && pool.has_credential()
                && !pool.login_failing()
            {
                let pool = pool.clone();
                crate::readiness::spawn(async move {
                    for _ in 0..missing {
                        if let Err(e) = pool.prefill_one().await {
                            log::warn!(
                                "{}/{}: min_pool_size: {e}",
                                pool.key.database,
                                pool.key.user
                            );
                            break;
                        }
                    }
                })
                .detach();
            }
        }
        let stats = &self.shared.stats[self.id];
        stats.servers.store(servers, Ordering::Relaxed);
        stats.waiting.store(waiting, Ordering::Relaxed);
        stats
            .transactions
            .store(self.transactions.get(), Ordering::Relaxed);
        stats.queries.store(self.queries.get(), Ordering::Relaxed);
    }

    fn close_idle_servers(&self) {
        for pool in self.pools.borrow().values() {
            pool.close_idle();
        }
    }
}

/// Listeners a shard serves.
pub struct Listeners {
    pub tcp: Option<Listener>,
    pub unix: Option<Listener>,
}

/// Binds this shard's listeners: TCP on every shard (SO_REUSEPORT), the Unix socket on
/// shard 0 only (Unix sockets cannot be shared that way).
pub fn bind(shard_id: usize, config: &Config) -> Result<Listeners, String> {
    let p = &config.pooler;
    let tcp =
        if p.listen_addr.is_empty() {
            None
        } else {
            let addr = resolve_listen(&p.listen_addr, p.listen_port)?;
            Some(net::bind_tcp(addr, p.listen_backlog as i32).map_err(|e| {
                format!("could not listen on {addr} (listen_addr, listen_port): {e}")
            })?)
        };
    let unix = match (&p.unix_socket_dir, shard_id) {
        (Some(dir), 0) => {
            let path = net::unix_socket_path(dir, p.listen_port);
            if path.exists() {
                if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                    return Err(format!(
                        "{}: another server is already listening on this socket (unix_socket_dir)",
                        path.display()
                    ));
                }
                let _ = std::fs::remove_file(&path);
            }
            Some(net::bind_unix(&path, p.listen_backlog as i32).map_err(|e| {
                format!(
                    "could not listen on {} (unix_socket_dir): {e}",
                    path.display()
                )
            })?)
        }
        _ => None,
    };
    Ok(Listeners { tcp, unix })
}

fn resolve_listen(addr: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    let host = if addr == "*" { "0.0.0.0" } else { addr };
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("listen_addr \"{addr}\": {e}"))?
        .next()
        .ok_or_else(|| format!("listen_addr \"{addr}\" has no address"))
}

/// Runs a shard until shutdown. `ready` is told once the listeners are bound.
pub async fn run(
    shard: Rc<Shard>,
    mesh: Option<MeshBuilder<ShardMsg, Full>>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let listeners = match bind(shard.id, &shard.config()) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    match crate::readiness::Poller::current() {
        Ok(poller) => {
            poller.set_idle_wait(IDLE_WAIT);
            if let Some(slot) = shard.shared.bells.get(shard.id) {
                let _ = slot.set(poller.bell());
            }
        }
        Err(e) => log::warn!("shard {}: socket readiness: {e}", shard.id),
    }
    let mut tasks: Vec<Task<()>> = Vec::new();
    if let Some(mesh) = mesh {
        match mesh.join().await {
            Ok((senders, receivers)) => {
                let _ = shard.peers.set(senders);
                tasks.extend(spawn_mesh_receivers(&shard, receivers));
            }
            Err(e) => {
                let _ = ready.send(Err(format!("could not join the shard mesh: {e}")));
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));
    if let Some(tcp) = listeners.tcp {
        tasks.push(crate::readiness::spawn(accept_tcp(shard.clone(), tcp)));
    }
    if let Some(unix) = listeners.unix {
        tasks.push(crate::readiness::spawn(accept_unix(shard.clone(), unix)));
    }

    // Control loop.
    loop {
        glommio::timer::sleep(CONTROL_TICK).await;
        shard.apply_reload();
        shard.tend_pools();
        if shard.shared.shutdown.load(Ordering::Acquire) && !shard.is_shutting_down() {
            shard.shutting_down.set(true);
            // Stop accepting; idle clients are closed, busy ones finish their transaction.
            tasks.clear();
            shard.cancel.signal_shutdown();
        }
        if shard.is_shutting_down() && shard.cancel.is_empty() && shard.shared.client_count() == 0 {
            break;
        }
        if shard.is_shutting_down() {
            shard.cancel.signal_shutdown();
        }
    }
    shard.close_idle_servers();
}

fn spawn_mesh_receivers(shard: &Rc<Shard>, mut receivers: Receivers<ShardMsg>) -> Vec<Task<()>> {
    receivers
        .streams()
        .into_iter()
        .map(|(_, stream)| {
            let shard = shard.clone();
            crate::readiness::spawn(async move {
                use futures_lite::StreamExt;
                let mut stream = stream;
                while let Some(msg) = stream.next().await {
                    match msg {
                        ShardMsg::Cancel(key) => {
                            let shard = shard.clone();
                            crate::readiness::spawn(async move {
                                crate::cancel::cancel_local(&shard, key).await
                            })
                            .detach();
                        }
                        ShardMsg::UnixClient(accepted) => serve_unix(&shard, accepted),
                    }
                }
            })
        })
        .collect()
}

async fn accept_tcp(shard: Rc<Shard>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok((fd, addr)) => {
                let keepalive = Keepalive::from_config(&shard.config().pooler);
                let peer = addr.as_socket().map(Peer::Tcp).unwrap_or(Peer::Unknown);
                match net::tcp_stream(fd, keepalive) {
                    Ok(stream) => {
                        crate::readiness::spawn(client::serve(shard.clone(), stream, peer))
                            .detach();
                    }
                    Err(e) => log::warn!("could not set up a client connection: {e}"),
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves a Unix-socket client on this shard.
fn serve_unix(shard: &Rc<Shard>, accepted: std::os::fd::OwnedFd) {
    match net::unix_client(accepted) {
        Ok((stream, uid)) => {
            crate::readiness::spawn(client::serve(shard.clone(), stream, Peer::Unix { uid }))
                .detach();
        }
        Err(e) => log::warn!("could not take a Unix-socket client: {e}"),
    }
}

async fn accept_unix(shard: Rc<Shard>, listener: Listener) {
    let mut next = 0usize;
    loop {
        match listener.accept().await {
            Ok((accepted, _)) => {
                // Spread Unix clients round-robin over the shards.
                let target = next % shard.count;
                next = next.wrapping_add(1);
                if target == shard.id || shard.peers.get().is_none() {
                    serve_unix(&shard, accepted);
                } else {
                    shard.send_to(target, ShardMsg::UnixClient(accepted)).await;
                }
            }
            Err(e) => {
                log::warn!("accept on the Unix socket failed: {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
