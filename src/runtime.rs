//! Process-level wiring: build the shared state, start one executor per shard, then let
//! the main thread handle signals (reload, shutdown) and the periodic stats line.
//!
//! The main thread never touches a shard's state: it swaps snapshots in [`Shared`] and
//! flips flags that each shard's control tick picks up.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::auth::hba::HbaRules;
use crate::auth::ident::IdentMaps;
use crate::auth::table::AuthTable;
use crate::auth::userlist::parse_userlist;
use crate::config::{Config, ConfigError};
use crate::shard::{self, Shard, ShardMsg, Shared};

/// Iterations for SCRAM verifiers pgring derives from plaintext passwords (PostgreSQL's
/// default).
pub const SCRAM_ITERATIONS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("auth_file {path}: {message}")]
    AuthFile { path: PathBuf, message: String },
    /// auth_hba_file or auth_ident_file; the message names the file and line.
    #[error("{0}")]
    AuthRules(String),
    #[error(
        "could not start shard {shard}: {reason}\n\
         pgring runs on io_uring: check that it is enabled (/proc/sys/kernel/io_uring_disabled \
         should be 0) and that the locked-memory limit is large enough (`ulimit -l`; raise it with \
         `ulimit -l unlimited` or LimitMEMLOCK=infinity under systemd)"
    )]
    Executor { shard: usize, reason: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Listen(String),
    #[error("shards = {0} is more than pgring's cancel keys can name ({max})", max = crate::cancel::MAX_SHARDS)]
    TooManyShards(usize),
    #[error("could not install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("pidfile {path}: {source}")]
    Pidfile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Builds the auth table from the files the config names: auth_file (an empty user list
/// when there is none), auth_hba_file and auth_ident_file.
pub fn load_auth_table(config: &Config) -> Result<AuthTable, StartError> {
    let entries = match &config.pooler.auth_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| StartError::AuthFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            parse_userlist(&text).map_err(|e| StartError::AuthFile {
                path: path.clone(),
                message: e.to_string(),
            })?
        }
        None => Vec::new(),
    };
    let hba = match &config.pooler.auth_hba_file {
        Some(path) => Some(HbaRules::load(path).map_err(|e| StartError::AuthRules(e.to_string()))?),
        None => None,
    };
    let ident = match &config.pooler.auth_ident_file {
        Some(path) => {
            Some(IdentMaps::load(path).map_err(|e| StartError::AuthRules(e.to_string()))?)
        }
        None => None,
    };
    Ok(
        AuthTable::from_entries(entries, SCRAM_ITERATIONS, crate::auth::scram::random_salt)
            .with_rules(hba, ident)
            .with_roles(&config.pooler.admin_users, &config.pooler.stats_users),
    )
}

/// A running pgring.
pub struct Runtime {
    shared: Arc<Shared>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    config_path: PathBuf,
    /// Installed before the shards listen, so that a signal sent as soon as the port
    /// answers is served rather than taking its default action (SIGHUP would end pgring).
    signals: signal_hook::iterator::Signals,
}

/// Raises the soft locked-memory limit to the hard one: io_uring's registered buffers
/// count against it.
fn raise_memlock_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
}

/// Starts every shard and returns once all of them listen.
pub fn start(config: Config) -> Result<Runtime, StartError> {
    let shards = config.pooler.shards.max(1);
    if shards > crate::cancel::MAX_SHARDS {
        return Err(StartError::TooManyShards(shards));
    }
    raise_memlock_limit();
    let auth = load_auth_table(&config)?;
    let tls = crate::tls::server_config(&config.pooler)?;
    let server_tls = crate::tls::client_config(&config.pooler)?;
    let config_path = config.path.clone();
    let shared = Arc::new(Shared::new(
        Arc::new(config),
        Arc::new(auth),
        tls,
        server_tls,
        shards,
    ));
    let signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .map_err(StartError::Signals)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mesh = (shards > 1).then(|| MeshBuilder::<ShardMsg, _>::full(shards, 1024));
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(shards);
    for id in 0..shards {
        let shared = shared.clone();
        let mesh = mesh.clone();
        let ready = ready_tx.clone();
        let spawn = |placement| {
            let shared = shared.clone();
            let mesh = mesh.clone();
            let ready = ready.clone();
            LocalExecutorBuilder::new(placement)
                .name(&format!("pgring-shard-{id}"))
                .preempt_timer(shard::PREEMPT_TIMER)
                .spawn(move || {
                    crate::readiness::Counted::new(async move {
                        let shard = Shard::new(id, shards, shared);
                        shard::run(shard, mesh, ready).await;
                    })
                })
        };
        let handle = match spawn(Placement::Fixed(id % cores)) {
            Ok(h) => h,
            // Pinning can fail when the process may not run on that core (taskset,
            // cgroups): run unpinned rather than not at all.
            Err(_) => spawn(Placement::Unbound).map_err(|e| StartError::Executor {
                shard: id,
                reason: e.to_string(),
            })?,
        };
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                shared.begin_shutdown();
                return Err(StartError::Listen(message));
            }
            Err(_) => {
                // A shard thread ended before saying it listens: its executor could not
                // be built (io_uring refused, locked memory too small). Stop the others
                // and report the first failure with what to change.
                shared.begin_shutdown();
                let mut failure = StartError::Listen("a shard exited while starting".into());
                for (shard, handle) in handles.into_iter().enumerate() {
                    if let Err(e) = handle.join() {
                        if matches!(failure, StartError::Listen(_)) {
                            failure = StartError::Executor {
                                shard,
                                reason: e.to_string(),
                            };
                        }
                    }
                }
                return Err(failure);
            }
        }
    }
    Ok(Runtime {
        shared,
        handles,
        config_path,
        signals,
    })
}

impl Runtime {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the config file, auth_file and TLS files; on any error the running
    /// configuration (all of it, TLS included) is kept and the error logged.
    pub fn reload(&self) {
        let config = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        let running = self.shared.config.load();
        for (key, changed) in [
            (
                "listen_addr",
                config.pooler.listen_addr != running.pooler.listen_addr,
            ),
            (
                "listen_port",
                config.pooler.listen_port != running.pooler.listen_port,
            ),
            (
                "unix_socket_dir",
                config.pooler.unix_socket_dir != running.pooler.unix_socket_dir,
            ),
            ("shards", config.pooler.shards != running.pooler.shards),
            (
                "listen_backlog",
                config.pooler.listen_backlog != running.pooler.listen_backlog,
            ),
        ] {
            if changed {
                log::warn!("reload: {key} changed; it takes effect only after a restart");
            }
        }
        let auth = match load_auth_table(&config) {
            Ok(a) => a,
            Err(e) => {
                log::error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        let tls = match crate::tls::server_config(&config.pooler) {
            Ok(t) => t,
            Err(e) => {
                log::error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        let server_tls = match crate::tls::client_config(&config.pooler) {
            Ok(t) => t,
            Err(e) => {
                log::error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        self.shared
            .reload(Arc::new(config), Arc::new(auth), tls, server_tls);
    }

    /// Serves signals until shutdown: SIGHUP reloads; SIGINT/SIGTERM stop accepting, let
    /// clients finish their transactions for up to `shutdown_timeout`, then exit.
    pub fn wait(mut self) -> Result<(), StartError> {
        let mut last_stats = Instant::now();
        let mut last_counts = (0u64, 0u64);
        loop {
            let pending: Vec<i32> = self.signals.pending().collect();
            for signal in pending {
                match signal {
                    SIGHUP => {
                        log::info!("got SIGHUP, reloading the configuration");
                        self.reload();
                    }
                    _ => {
                        log::info!("got signal {signal}, shutting down");
                        return self.shutdown();
                    }
                }
            }
            let period = self.shared.config.load().pooler.stats_period;
            if !period.is_zero() && last_stats.elapsed() >= period {
                last_counts = self.log_stats(last_stats.elapsed(), last_counts);
                last_stats = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_stats(&self, elapsed: Duration, (tx_before, q_before): (u64, u64)) -> (u64, u64) {
        let (mut tx, mut q, mut servers, mut waiting) = (0u64, 0u64, 0u32, 0u32);
        for s in &self.shared.stats {
            tx += s.transactions.load(Ordering::Relaxed);
            q += s.queries.load(Ordering::Relaxed);
            servers += s.servers.load(Ordering::Relaxed);
            waiting += s.waiting.load(Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64().max(0.001);
        log::info!(
            "stats: {:.0} xacts/s, {:.0} queries/s, {} clients, {} server connections, {} waiting",
            (tx - tx_before) as f64 / secs,
            (q - q_before) as f64 / secs,
            self.shared.client_count(),
            servers,
            waiting
        );
        (tx, q)
    }

    fn shutdown(self) -> Result<(), StartError> {
        let timeout = self.shared.config.load().pooler.shutdown_timeout;
        self.shared.begin_shutdown();
        let (done_tx, done_rx) = mpsc::channel();
        let handles = self.handles;
        std::thread::spawn(move || {
            for h in handles {
                let _ = h.join();
            }
            let _ = done_tx.send(());
        });
        let wait = if timeout.is_zero() {
            Duration::from_secs(u64::MAX / 4)
        } else {
            timeout
        };
        if done_rx.recv_timeout(wait).is_err() {
            log::warn!(
                "shutdown_timeout reached with {} clients still connected; closing them",
                self.shared.client_count()
            );
        }
        Ok(())
    }
}

/// Writes the pidfile (removed again by [`PidFile`]'s Drop).
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile, StartError> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            StartError::Pidfile {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
