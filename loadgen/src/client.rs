//! The client loops of the three modes, and connection setup with libpq's sslmode rules.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use pgring::config::TlsMode;

use crate::conninfo::Target;
use crate::pg::{Conn, LoginInfo, QueryProtocol, ScramCache, ServerError, TlsAnswer, TlsFailed};
use crate::schedule::Schedule;
use crate::stats::{micros, ErrorLog, SharedStats};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect, TLS and login together.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed connection before a closed-loop client retries.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Idle mode: connections being opened at once per thread.
pub const IDLE_OPEN_CONCURRENCY: u64 = 32;

/// What all threads share.
pub struct Shared {
    pub target: Target,
    pub addr: SocketAddr,
    pub start: Instant,
    pub deadline: Instant,
    duration: Duration,
    /// `tx`: when the measured run began, once every client had logged in (or tried).
    go: OnceLock<Instant>,
    ready: AtomicUsize,
    pub errors: Mutex<ErrorLog>,
    /// Source addresses for client sockets, used round-robin; empty: the kernel's choice.
    pub source_addrs: Vec<IpAddr>,
    next_source: AtomicUsize,
}

impl Shared {
    pub fn new(
        target: Target,
        addr: SocketAddr,
        start: Instant,
        duration: Duration,
        source_addrs: Vec<IpAddr>,
    ) -> Shared {
        Shared {
            target,
            addr,
            start,
            deadline: start + duration,
            duration,
            go: OnceLock::new(),
            ready: AtomicUsize::new(0),
            errors: Mutex::new(ErrorLog::default()),
            source_addrs,
            next_source: AtomicUsize::new(0),
        }
    }

    /// When the measured part began: after the `tx` clients' first logins, else the start.
    pub fn measured_start(&self) -> Instant {
        self.go.get().copied().unwrap_or(self.start)
    }

    /// `tx`: when the measured run began, once it has.
    pub fn go_time(&self) -> Option<Instant> {
        self.go.get().copied()
    }

    /// How long the measured run lasts (`--duration`).
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Marks one of `clients` ready and waits (cooperatively) until all are, or until the
    /// login timeout has passed since the start; returns the measured run's start and
    /// deadline, the same for every client. Like pgbench, the clock starts once the
    /// connections are open, so their logins do not count as transaction latency.
    async fn all_ready(&self, clients: usize) -> (Instant, Instant) {
        self.ready.fetch_add(1, Ordering::SeqCst);
        let give_up = self.start + LOGIN_TIMEOUT + Duration::from_secs(1);
        while self.go.get().is_none()
            && self.ready.load(Ordering::SeqCst) < clients
            && Instant::now() < give_up
        {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let go = *self.go.get_or_init(Instant::now);
        (go, go + self.duration)
    }

    fn source(&self) -> Option<IpAddr> {
        if self.source_addrs.is_empty() {
            return None;
        }
        let i = self.next_source.fetch_add(1, Ordering::Relaxed);
        Some(self.source_addrs[i % self.source_addrs.len()])
    }
}

/// One executor thread's context.
pub struct Local {
    pub shared: Arc<Shared>,
    pub stats: Arc<SharedStats>,
    /// This thread's rustls configuration (and so its TLS session cache); `None` for
    /// `sslmode=disable`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub cache: Rc<RefCell<ScramCache>>,
}

/// A connection ready for queries, and how long its phases took.
pub struct Established {
    pub conn: Conn,
    pub info: LoginInfo,
    pub tcp: Duration,
    /// SSLRequest sent → handshake done or refusal read; `None` without an SSLRequest.
    pub tls: Option<Duration>,
    pub auth: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TlsUse {
    Off,
    /// SSLRequest; plaintext when the server answers 'N'.
    Try,
    /// SSLRequest; 'N' is an error.
    Must,
}

impl Local {
    pub fn error(&self, message: String) {
        self.stats.lock().unwrap().errors += 1;
        self.shared.errors.lock().unwrap().add(message);
    }

    /// Notes what a login did in the stats.
    fn note_login(&self, e: &Established) {
        let mut s = self.stats.lock().unwrap();
        s.scram_keys_cached |= e.info.scram_keys_cached;
        s.auth_method = Some(e.info.method.as_str());
        s.channel_bindings += u64::from(e.info.channel_binding);
        if let Some(tls) = e.conn.tls {
            s.tls_logins += 1;
            s.tls_resumed += u64::from(tls.resumed);
            s.tls_version = Some(tls.version);
        }
    }

    async fn attempt(&self, tls_use: TlsUse) -> Result<Established> {
        let target = &self.shared.target;
        let t0 = Instant::now();
        let mut conn =
            Conn::connect(self.shared.addr, self.shared.source(), CONNECT_TIMEOUT).await?;
        let t1 = Instant::now();
        let mut tls = None;
        if tls_use != TlsUse::Off {
            let config = self
                .tls
                .as_ref()
                .ok_or_else(|| anyhow!("no TLS configuration"))?;
            let answer = conn.start_tls(&target.host, config).await?;
            if answer == TlsAnswer::Refused && tls_use == TlsUse::Must {
                bail!(
                    "the server does not support SSL, and sslmode={} requires it",
                    target.sslmode.keyword()
                );
            }
            tls = Some(t1.elapsed());
        }
        let t2 = Instant::now();
        let info = conn.login(target, &self.cache).await?;
        Ok(Established {
            conn,
            info,
            tcp: t1 - t0,
            tls,
            auth: t2.elapsed(),
        })
    }

    /// Connects and logs in as the target's sslmode says, libpq's way: `disable` never
    /// sends an SSLRequest; `allow` tries plaintext first and TLS when the server refuses
    /// the plaintext login; `prefer` tries TLS and falls back to plaintext when the server
    /// answers 'N' or the handshake fails (not when a certificate check fails); `require`
    /// and the `verify-*` modes need TLS. Bounded by a login timeout.
    pub async fn establish(&self) -> Result<Established> {
        let work = async {
            match self.shared.target.sslmode {
                TlsMode::Disable => self.attempt(TlsUse::Off).await,
                TlsMode::Allow => match self.attempt(TlsUse::Off).await {
                    Err(e) if e.downcast_ref::<ServerError>().is_some() => {
                        self.attempt(TlsUse::Must).await
                    }
                    r => r,
                },
                TlsMode::Prefer => match self.attempt(TlsUse::Try).await {
                    Err(e)
                        if e.downcast_ref::<TlsFailed>()
                            .is_some_and(|f| !f.verification) =>
                    {
                        self.attempt(TlsUse::Off).await
                    }
                    r => r,
                },
                TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => {
                    self.attempt(TlsUse::Must).await
                }
            }
        };
        let timeout = async {
            glommio::timer::sleep(LOGIN_TIMEOUT).await;
            Err(anyhow!(
                "no ReadyForQuery within {} s of connecting",
                LOGIN_TIMEOUT.as_secs()
            ))
        };
        let established = futures_lite::future::or(work, timeout).await?;
        self.note_login(&established);
        Ok(established)
    }
}

/// What a `tx` client runs.
#[derive(Clone)]
pub struct TxPlan {
    pub statements: Vec<String>,
    pub protocol: QueryProtocol,
    pub connect_per_tx: bool,
    /// Open loop: transactions per second over all clients.
    pub rate: Option<f64>,
    pub clients: usize,
}

/// One `tx` client, number `index` of `plan.clients`.
///
/// Unless it connects per transaction, the client logs in first; the measured run starts
/// when all clients have (see [`Shared::all_ready`]).
pub async fn tx_client(local: Rc<Local>, plan: Rc<TxPlan>, index: usize) {
    let mut conn: Option<Conn> = None;
    if !plan.connect_per_tx {
        match local.establish().await {
            Ok(e) => conn = Some(e.conn),
            Err(e) => local.error(format!("{e:#}")),
        }
    }
    let (start, deadline) = local.shared.all_ready(plan.clients).await;
    let mut schedule = plan
        .rate
        .map(|r| Schedule::new(start, r, index, plan.clients));
    loop {
        let mut intended = match &mut schedule {
            Some(s) => {
                if s.peek() >= deadline {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    let missed = s.drain_before(deadline);
                    local.stats.lock().unwrap().missed += missed;
                    break;
                }
                let at = s.take();
                if at > now {
                    glommio::timer::sleep(at - now).await;
                }
                at
            }
            None => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
        };
        if conn.is_none() {
            match local.establish().await {
                Ok(e) => conn = Some(e.conn),
                Err(e) => {
                    local.error(format!("{e:#}"));
                    if schedule.is_none() {
                        glommio::timer::sleep(RETRY_PAUSE).await;
                    }
                    continue;
                }
            }
            // A closed loop that keeps its connection times the script only.
            if schedule.is_none() && !plan.connect_per_tx {
                intended = Instant::now();
            }
        }
        let c = conn.as_mut().expect("connected above");
        match c.run_script(&plan.statements, plan.protocol).await {
            Ok(None) => {
                let us = micros(intended.elapsed());
                let mut s = local.stats.lock().unwrap();
                s.completed += 1;
                s.total.saturating_record(us);
            }
            Ok(Some(server_error)) => local.error(server_error.to_string()),
            Err(e) => {
                local.error(format!("{e:#}"));
                conn = None;
            }
        }
        if plan.connect_per_tx {
            if let Some(c) = conn.take() {
                c.terminate().await;
            }
        }
    }
    if let Some(c) = conn {
        c.terminate().await;
    }
}

/// One `handshake` loop: connect, TLS, login, Terminate, again.
pub async fn handshake_client(local: Rc<Local>) {
    while Instant::now() < local.shared.deadline {
        let start = Instant::now();
        match local.establish().await {
            Ok(e) => {
                let total = start.elapsed();
                {
                    let mut s = local.stats.lock().unwrap();
                    s.completed += 1;
                    s.tcp.saturating_record(micros(e.tcp));
                    if let Some(tls) = e.tls {
                        s.tls.saturating_record(micros(tls));
                    }
                    s.auth.saturating_record(micros(e.auth));
                    s.total.saturating_record(micros(total));
                }
                e.conn.terminate().await;
            }
            Err(e) => {
                local.error(format!("{e:#}"));
                // A failed login is usually fast to repeat; don't flood the server.
                glommio::timer::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// One `idle` connection: open it (at most [`IDLE_OPEN_CONCURRENCY`] opening at once per
/// thread), hold it until the deadline, then Terminate.
pub async fn idle_client(local: Rc<Local>, opening: Rc<glommio::sync::Semaphore>) {
    let permit = opening.acquire_permit(1).await;
    let start = Instant::now();
    let result = if start < local.shared.deadline {
        Some(local.establish().await)
    } else {
        None
    };
    drop(permit);
    let mut conn = match result {
        Some(Ok(e)) => {
            let mut s = local.stats.lock().unwrap();
            s.completed += 1;
            s.connected += 1;
            s.opens_done += 1;
            s.tcp.saturating_record(micros(e.tcp));
            if let Some(tls) = e.tls {
                s.tls.saturating_record(micros(tls));
            }
            s.auth.saturating_record(micros(e.auth));
            s.total.saturating_record(micros(start.elapsed()));
            e.conn
        }
        Some(Err(e)) => {
            local.stats.lock().unwrap().opens_done += 1;
            local.error(format!("{e:#}"));
            return;
        }
        None => {
            local.stats.lock().unwrap().opens_done += 1;
            return;
        }
    };
    match conn.hold(local.shared.deadline).await {
        Ok(()) => conn.terminate().await,
        Err(e) => {
            local.stats.lock().unwrap().connected -= 1;
            local.error(format!("{e:#}"));
        }
    }
}
