//! loadgen: pgring's load generator. See loadgen/README.md.

mod client;
mod conninfo;
mod pg;
mod report;
mod schedule;
mod stats;
mod tls;

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::json;

use client::{Local, Shared, TxPlan};
use pg::{QueryProtocol, ScramCache};
use stats::{Stats, Summary};

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for pgring and PostgreSQL: transaction, handshake and idle-connection \
             measurements with HDR histograms",
    long_about = "Load generator for pgring and PostgreSQL.\n\n\
        Modes: `tx` runs transactions (closed loop, or open loop at --rate); `handshake` \
        measures connection setup (TCP, TLS, authentication); `idle` opens many connections \
        and holds them (and can report a process's memory per connection).\n\n\
        Each worker thread runs one glommio executor (pinned to a core when possible) that \
        drives its share of the connections. Latencies are recorded in HDR histograms (µs) \
        per thread and merged. A progress line goes to stderr every second, the final table \
        to stdout; --json writes a machine-readable report (schema in loadgen/README.md), \
        --hdr an HDR interval log, --plot an SVG percentile plot.\n\n\
        TARGET is a libpq conninfo string or a postgres:// URL. Keys: host, port, user, \
        password, dbname, application_name, sslmode (disable, allow, prefer [default], \
        require, verify-ca, verify-full), sslrootcert, sslcert, sslkey, channel_binding \
        (disable, prefer [default], require). PGHOST (default 127.0.0.1), PGPORT (5432), \
        PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY and \
        PGCHANNELBINDING fill in what it leaves out.",
    after_help = "Examples:\n  \
        loadgen tx 'host=127.0.0.1 port=6432 user=app password=secret dbname=app' --clients 64\n  \
        loadgen tx postgres://app:secret@127.0.0.1:6432/app --clients 8 --rate 5000 --duration 30 --plot tx.svg\n  \
        loadgen handshake 'port=6432 user=app password=secret sslmode=verify-full sslrootcert=ca.pem' --json hs.json\n  \
        loadgen idle 'port=6432 user=app password=secret' --clients 10000 --pid $(pgrep -o pgring)\n\n\
        Exit status: 0 on success; 1 when nothing succeeded or the error rate exceeds \
        --max-error-rate; 2 on usage or setup errors."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transactions: each client runs the script again and again, as fast as it can (closed
    /// loop) or at --rate (open loop).
    #[command(after_help = "Examples:\n  \
        loadgen tx 'port=6432 user=app password=secret' --clients 32 --duration 20\n  \
        loadgen tx postgres://app:secret@localhost:6432/app --clients 4 --script bench.sql --json tx.json\n  \
        loadgen tx 'port=6432 user=app password=secret' --clients 16 --rate 2000 --protocol prepared\n  \
        loadgen tx 'port=6432 user=app password=secret sslmode=require' --connect-per-tx --rate 100\n\n\
        The script is split at semicolons (outside quotes and -- comments); one transaction = \
        the whole script, each statement sent as --protocol says and its ReadyForQuery awaited. \
        A transaction in which any statement got an ErrorResponse counts as an error. Broken \
        connections are re-opened.\n\n\
        Closed loop (no --rate): latency is first message sent → last ReadyForQuery. Open \
        loop (--rate R): transaction n is due at n/R s after the start, dealt round-robin to \
        the clients; latency is measured from that intended start, so a server stall shows \
        up in full (no coordinated omission); a client that falls behind runs its backlog \
        back to back. Give enough --clients that R fits (each client does one transaction at \
        a time). Due transactions not started by the end are reported as `missed`.")]
    Tx(TxArgs),
    /// Connection setup: connect → SSLRequest/TLS → startup → auth → ReadyForQuery →
    /// Terminate, in a loop.
    #[command(after_help = "Examples:\n  \
        loadgen handshake 'port=6432 user=app password=secret' --concurrency 4\n  \
        loadgen handshake postgres://app:secret@127.0.0.1:5432/app --no-scram-cache --json hs.json\n  \
        loadgen handshake 'port=6432 user=app password=secret sslmode=verify-full sslrootcert=ca.pem' --no-tls-resume\n\n\
        Phases: tcp = TCP connect; tls = SSLRequest sent → TLS handshake done (or the \
        server's 'N' read; absent with sslmode=disable); auth = StartupMessage sent → \
        ReadyForQuery; total = all. Supports trust, cleartext, md5 and SCRAM-SHA-256 (with \
        channel binding over TLS). For SCRAM the salted-password keys are derived once per \
        (salt, iterations) and reused, so the client's PBKDF2 does not dominate; \
        --no-scram-cache runs PBKDF2 on every login like a fresh libpq client. TLS sessions \
        are resumed from a per-thread cache unless --no-tls-resume.")]
    Handshake(HandshakeArgs),
    /// Idle connections: open --clients connections, hold them for --duration, report how
    /// many were held.
    #[command(after_help = "Examples:\n  \
        loadgen idle 'port=6432 user=app password=secret' --clients 5000 --duration 30\n  \
        loadgen idle 'port=6432 user=app password=secret' --clients 100000 \\\n      \
        --source-addrs 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 --pid $(pgrep -o pgring)\n\n\
        Connections are opened at most 32 at a time per thread, each with the full login. A \
        connection the server closes (or sends an error on) while held counts as an error. \
        With --pid, the process's VmRSS is read before opening and while all connections \
        are held; the report gives the difference per held connection. Beyond about 28000 \
        connections to one address, give more --source-addrs (each has its own ephemeral \
        ports).")]
    Idle(IdleArgs),
}

#[derive(Args)]
struct Common {
    /// libpq conninfo ("host=… port=… user=… password=… dbname=… sslmode=…") or
    /// postgres:// URL; empty: the PG* environment variables only.
    #[arg(default_value = "", hide_default_value = true)]
    target: String,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    duration: f64,
    /// Worker threads, one glommio executor each [default: one per core].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Write the JSON report to FILE ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write an HDR histogram interval log (compressed V2, one histogram per tag per
    /// second, µs) to FILE.
    #[arg(long, value_name = "FILE")]
    hdr: Option<PathBuf>,
    /// Write an SVG latency percentile-distribution plot to FILE.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Bind client sockets to these source addresses, round-robin (comma-separated).
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    source_addrs: Vec<IpAddr>,
    /// Report this process's CPU time (utime + stime of all its threads, from
    /// /proc/PID/stat) over the measured run, and per completed operation.
    #[arg(long, value_name = "PID")]
    cpu_pid: Option<u32>,
    /// Exit non-zero when errors / (completed + errors) exceeds this.
    #[arg(long, default_value_t = 0.01, value_name = "FRACTION")]
    max_error_rate: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// One Query message per statement.
    Simple,
    /// Unnamed Parse, Bind, Execute, Sync per statement.
    Extended,
    /// Named statements parsed once per connection, then Bind, Execute, Sync.
    Prepared,
}

#[derive(Args)]
struct TxArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent connections, spread over the threads.
    #[arg(long, default_value_t = 1, value_name = "N")]
    clients: usize,
    /// SQL file run as one transaction [default: "SELECT 1"].
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// How statements are sent.
    #[arg(long, value_enum, default_value = "simple")]
    protocol: ProtocolArg,
    /// Open loop: R transactions per second in total, latency from each one's intended
    /// start.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Connect and log in for every transaction (Terminate after it); the latency includes
    /// the login.
    #[arg(long)]
    connect_per_tx: bool,
}

#[derive(Args)]
struct HandshakeArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent handshake loops, spread over the threads.
    #[arg(long, default_value_t = 1, value_name = "N")]
    concurrency: usize,
    /// Run PBKDF2 on every SCRAM login instead of caching the derived keys.
    #[arg(long)]
    no_scram_cache: bool,
    /// Resume TLS sessions: one rustls configuration with a session cache per thread
    /// (the default).
    #[arg(long, overrides_with = "no_tls_resume")]
    tls_resume: bool,
    /// A full TLS handshake every time (session resumption disabled).
    #[arg(long, overrides_with = "tls_resume")]
    no_tls_resume: bool,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open and hold, spread over the threads.
    #[arg(long, default_value_t = 100, value_name = "N")]
    clients: usize,
    /// Report this process's resident memory (VmRSS) before and while holding.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
}

#[derive(Clone)]
enum Mode {
    Tx(TxPlan),
    Handshake { scram_cache: bool },
    Idle,
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Tx(_) => "tx",
            Mode::Handshake { .. } => "handshake",
            Mode::Idle => "idle",
        }
    }

    /// Whether the report has per-phase histograms.
    fn phases(&self) -> bool {
        !matches!(self, Mode::Tx(_))
    }
}

/// `idle --pid`: the process's RSS before opening and while holding.
struct PidWatch {
    pid: u32,
    before_kb: u64,
    /// The last sample taken while every connection was open: (VmRSS kB, connections held).
    holding: Option<(u64, u64)>,
    /// Whether every connection had been opened (or had failed) when `holding` was taken.
    all_open: bool,
    last_sample: Option<Instant>,
}

/// `--cpu-pid`: the process's CPU ticks at both ends of the measured run.
struct CpuWatch {
    pid: u32,
    /// The measured run's window is the whole run (`idle`), not start → start + duration.
    whole_run: bool,
    before: Option<(Instant, u64)>,
    after: Option<(Instant, u64)>,
}

impl CpuWatch {
    fn sample(&self) -> Option<(Instant, u64)> {
        report::cpu_ticks(self.pid)
            .ok()
            .map(|t| (Instant::now(), t))
    }

    /// Takes the samples that are due: the first once the measured run has begun (`tx`:
    /// when every client has logged in), the second when its duration has passed.
    fn poll(&mut self, shared: &Shared, tx: bool) {
        if self.before.is_none() {
            let begun = if tx { shared.go_time().is_some() } else { true };
            if begun {
                self.before = self.sample();
            }
            return;
        }
        if self.after.is_none() && !self.whole_run {
            let end = shared.measured_start() + shared.duration();
            if Instant::now() >= end {
                self.after = self.sample();
            }
        }
    }
}

/// What [`run`] starts.
struct RunSpec {
    mode: Arc<Mode>,
    /// The TLS configuration each thread copies (see [`tls::per_thread`]).
    tls_config: Option<Arc<rustls::ClientConfig>>,
    tls_resume: bool,
    threads: usize,
    clients: usize,
}

/// Starts `spec.threads` executors running their share of `spec.clients` loops; returns
/// when all have finished, printing progress every second (and feeding `hdr`, `pid`).
fn run(
    shared: Arc<Shared>,
    spec: &RunSpec,
    mut hdr: Option<&mut report::HdrLog>,
    mut pid: Option<&mut PidWatch>,
    mut cpu: Option<&mut CpuWatch>,
) -> Result<(Stats, Duration)> {
    let RunSpec {
        mode,
        tls_config,
        tls_resume,
        threads,
        clients,
    } = spec;
    let (tls_resume, threads, clients) = (*tls_resume, *threads, *clients);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = threads.clamp(1, clients.max(1));
    let per_thread: Vec<Arc<Mutex<Stats>>> = (0..threads)
        .map(|_| Arc::new(Mutex::new(Stats::default())))
        .collect();
    let finished = Arc::new(AtomicUsize::new(0));
    let started = shared.start;
    let mut handles = Vec::with_capacity(threads);
    let mut first_index = 0;
    for (id, thread_stats) in per_thread.iter().enumerate() {
        let n = clients / threads + usize::from(id < clients % threads);
        let base = first_index;
        first_index += n;
        let spawn = |placement| {
            let shared = shared.clone();
            let stats = thread_stats.clone();
            let mode = mode.clone();
            let finished = finished.clone();
            let tls_config = tls_config.clone();
            LocalExecutorBuilder::new(placement)
                .name(&format!("loadgen-{id}"))
                .spawn(move || async move {
                    let scram_cache = match &*mode {
                        Mode::Handshake { scram_cache } => *scram_cache,
                        _ => true,
                    };
                    let local = Rc::new(Local {
                        shared,
                        stats,
                        tls: tls_config.map(|c| tls::per_thread(&c, tls_resume)),
                        cache: ScramCache::new(scram_cache),
                    });
                    let plan = match &*mode {
                        Mode::Tx(plan) => Some(Rc::new(plan.clone())),
                        _ => None,
                    };
                    let opening =
                        Rc::new(glommio::sync::Semaphore::new(client::IDLE_OPEN_CONCURRENCY));
                    let mut tasks = Vec::with_capacity(n);
                    for i in 0..n {
                        let local = local.clone();
                        let task = match &*mode {
                            Mode::Tx(_) => pgring::readiness::spawn(client::tx_client(
                                local,
                                plan.clone().expect("tx plan"),
                                base + i,
                            )),
                            Mode::Handshake { .. } => {
                                pgring::readiness::spawn(client::handshake_client(local))
                            }
                            Mode::Idle => pgring::readiness::spawn(client::idle_client(
                                local,
                                opening.clone(),
                            )),
                        };
                        tasks.push(task);
                    }
                    for t in tasks {
                        t.await;
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                })
        };
        let handle = match spawn(Placement::Fixed(id % cores)) {
            Ok(h) => h,
            Err(_) => spawn(Placement::Unbound)
                .map_err(|e| anyhow::anyhow!("starting an executor: {e}"))?,
        };
        handles.push(handle);
    }

    let merge = || {
        let mut merged = Stats::default();
        for s in &per_thread {
            merged.merge(&s.lock().unwrap());
        }
        merged
    };
    let idle = matches!(**mode, Mode::Idle);
    let tx = matches!(**mode, Mode::Tx(_));
    // Finer polling with --cpu-pid, so that its samples fall close to the window's ends.
    let poll = if cpu.is_some() {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(20)
    };
    let mut last_completed = 0u64;
    let mut last_tick = started;
    let mut next_tick = started + Duration::from_secs(1);
    while finished.load(Ordering::SeqCst) < threads {
        std::thread::sleep(poll);
        if let Some(w) = cpu.as_deref_mut() {
            w.poll(&shared, tx);
        }
        let now = Instant::now();
        if let Some(w) = pid.as_deref_mut() {
            let (opens_done, connected) = per_thread.iter().fold((0, 0), |(o, c), s| {
                let s = s.lock().unwrap();
                (o + s.opens_done, c + s.connected)
            });
            let settled = w
                .last_sample
                .is_none_or(|t| now - t >= Duration::from_millis(500));
            if opens_done >= clients as u64
                && settled
                && now + Duration::from_millis(100) < shared.deadline
            {
                if let Ok(kb) = report::rss_kb(w.pid) {
                    // The first sample only marks the moment all were open; let the
                    // process settle before the one that counts.
                    if w.last_sample.is_some() {
                        w.holding = Some((kb, connected));
                        w.all_open = true;
                    }
                    w.last_sample = Some(now);
                }
            } else if w.holding.is_none()
                && connected > 0
                && now + Duration::from_millis(300) >= shared.deadline
                && now + Duration::from_millis(100) < shared.deadline
            {
                // Not every connection opened in time (a slow or overloaded server): the
                // memory of those held still counts, flagged with all_open = false.
                if let Ok(kb) = report::rss_kb(w.pid) {
                    w.holding = Some((kb, connected));
                    w.all_open = opens_done >= clients as u64;
                }
            }
        }
        if now < next_tick {
            continue;
        }
        next_tick += Duration::from_secs(1);
        let merged = merge();
        let interval = now.duration_since(last_tick).as_secs_f64();
        let rate = (merged.completed - last_completed) as f64 / interval.max(1e-9);
        last_completed = merged.completed;
        last_tick = now;
        if let Some(log) = hdr.as_deref_mut() {
            log.interval(now - started, &merged.named(mode.phases()))?;
        }
        if idle {
            eprintln!(
                "[{:6.1}s] connected {:>9}  opened {:>9}  errors {:>6}  open p50 {:>7} µs  p99 {:>7} µs",
                (now - started).as_secs_f64(),
                merged.connected,
                merged.completed,
                merged.errors,
                merged.total.value_at_quantile(0.5),
                merged.total.value_at_quantile(0.99),
            );
        } else {
            eprintln!(
                "[{:6.1}s] completed {:>9}  rate {:>9.0}/s  errors {:>6}  p50 {:>7} µs  p99 {:>7} µs",
                (now - started).as_secs_f64(),
                merged.completed,
                rate,
                merged.errors,
                merged.total.value_at_quantile(0.5),
                merged.total.value_at_quantile(0.99),
            );
        }
    }
    for h in handles {
        h.join()
            .map_err(|e| anyhow::anyhow!("joining an executor: {e}"))?;
    }
    let elapsed = shared.measured_start().elapsed();
    if let Some(w) = cpu {
        if w.before.is_none() {
            w.before = w.sample();
        }
        if w.after.is_none() {
            w.after = w.sample();
        }
    }
    let merged = merge();
    if let Some(log) = hdr {
        log.interval(started.elapsed(), &merged.named(mode.phases()))?;
    }
    Ok((merged, elapsed))
}

fn print_table(rows: &[(&str, Summary)]) {
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "latency µs", "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    for (name, s) in rows {
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10.1}",
            name, s.p50, s.p90, s.p99, s.p999, s.max, s.mean
        );
    }
}

fn write_output(path: &PathBuf, bytes: &[u8]) -> Result<()> {
    if path.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(bytes)?;
        Ok(())
    } else {
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    let mut tls_resume = true;
    let mut pid = None;
    let (common, clients, mode) = match cli.command {
        Command::Tx(args) => {
            let statements = match &args.script {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    split_script(&text)
                }
                None => vec!["SELECT 1".to_string()],
            };
            if statements.is_empty() {
                bail!("the script has no statements");
            }
            if args.clients == 0 {
                bail!("--clients must be at least 1");
            }
            if let Some(r) = args.rate {
                if !(r > 0.0 && r.is_finite()) {
                    bail!("--rate must be a positive number of transactions per second");
                }
            }
            let protocol = match args.protocol {
                ProtocolArg::Simple => QueryProtocol::Simple,
                ProtocolArg::Extended => QueryProtocol::Extended,
                ProtocolArg::Prepared => QueryProtocol::Prepared,
            };
            let plan = TxPlan {
                statements,
                protocol,
                connect_per_tx: args.connect_per_tx,
                rate: args.rate,
                clients: args.clients,
            };
            (args.common, args.clients, Mode::Tx(plan))
        }
        Command::Handshake(args) => {
            if args.concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            tls_resume = !args.no_tls_resume;
            let scram_cache = !args.no_scram_cache;
            (
                args.common,
                args.concurrency,
                Mode::Handshake { scram_cache },
            )
        }
        Command::Idle(args) => {
            if args.clients == 0 {
                bail!("--clients must be at least 1");
            }
            pid = args.pid;
            (args.common, args.clients, Mode::Idle)
        }
    };
    if !(common.duration > 0.0 && common.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    let target = conninfo::parse(&common.target)?;
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}:{}", target.host, target.port))?
        .next()
        .with_context(|| format!("{} has no address", target.host))?;
    if let Some(bad) = common
        .source_addrs
        .iter()
        .find(|a| a.is_ipv4() != addr.is_ipv4())
    {
        bail!("source address {bad} is not of the same family as {addr}");
    }
    let tls_config = tls::client_config(&target, tls_resume)?;
    let threads = common.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let mut pid_watch = match pid {
        Some(p) => Some(PidWatch {
            pid: p,
            before_kb: report::rss_kb(p).with_context(|| format!("--pid {p}"))?,
            holding: None,
            all_open: false,
            last_sample: None,
        }),
        None => None,
    };
    let mut cpu_watch = match common.cpu_pid {
        Some(p) => {
            report::cpu_ticks(p).with_context(|| format!("--cpu-pid {p}"))?;
            Some(CpuWatch {
                pid: p,
                whole_run: matches!(mode, Mode::Idle),
                before: None,
                after: None,
            })
        }
        None => None,
    };
    let mode_name = mode.name();
    let wall_start = SystemTime::now();
    let mut hdr = match &common.hdr {
        Some(_) => Some(report::HdrLog::new(
            wall_start,
            &format!("{mode_name} {}:{}", target.host, target.port),
        )?),
        None => None,
    };
    let start = Instant::now();
    let shared = Arc::new(Shared::new(
        target.clone(),
        addr,
        start,
        Duration::from_secs_f64(common.duration),
        common.source_addrs.clone(),
    ));
    let threads_used = threads.clamp(1, clients);
    let mode = Arc::new(mode);
    let spec = RunSpec {
        mode: mode.clone(),
        tls_config,
        tls_resume,
        threads,
        clients,
    };
    let (stats, elapsed) = run(
        shared.clone(),
        &spec,
        hdr.as_mut(),
        pid_watch.as_mut(),
        cpu_watch.as_mut(),
    )?;

    let secs = elapsed.as_secs_f64();
    let rate = stats.completed as f64 / secs.max(1e-9);
    let attempts = stats.completed + stats.errors;
    let error_rate = if attempts == 0 {
        0.0
    } else {
        stats.errors as f64 / attempts as f64
    };
    let total = Summary::of(&stats.total);
    let errors = shared.errors.lock().unwrap().list();

    let size_label = match *mode {
        Mode::Handshake { .. } => "concurrency",
        _ => "clients",
    };
    println!(
        "{mode_name}: {}@{}:{}/{}  sslmode {}  threads {threads_used}  {size_label} {clients}  {:.2} s",
        target.user,
        target.host,
        target.port,
        target.dbname,
        target.sslmode.keyword(),
        secs
    );
    println!(
        "completed {}  errors {} ({:.2}%)  rate {:.1}/s",
        stats.completed,
        stats.errors,
        error_rate * 100.0,
        rate
    );
    let mut report = json!({
        "mode": mode_name,
        "target": {
            "host": target.host,
            "port": target.port,
            "user": target.user,
            "dbname": target.dbname,
            "sslmode": target.sslmode.keyword(),
            "channel_binding": target.channel_binding.keyword(),
        },
        "threads": threads_used,
        "duration_s": (secs * 1000.0).round() / 1000.0,
        "completed": stats.completed,
        "errors": stats.errors,
        "error_rate": error_rate,
        "rate_per_s": (rate * 10.0).round() / 10.0,
        "latency_us": total,
        "auth_method": stats.auth_method,
        "scram_keys_cached": stats.scram_keys_cached,
        "channel_binding": stats.channel_bindings > 0,
        "tls": {
            "logins": stats.tls_logins,
            "resumed": stats.tls_resumed,
            "version": stats.tls_version,
            "resumption": tls_resume,
        },
        "source_addrs": common.source_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "error_messages": errors
            .iter()
            .map(|(m, c)| json!({"message": m, "count": c}))
            .collect::<Vec<_>>(),
    });
    if let Some(w) = &cpu_watch {
        let hz = report::clk_tck();
        let value = match (w.before, w.after) {
            (Some((t0, c0)), Some((t1, c1))) => {
                let seconds = c1.saturating_sub(c0) as f64 / hz as f64;
                let per_op = (stats.completed > 0).then(|| seconds * 1e6 / stats.completed as f64);
                println!(
                    "pid {}: CPU {:.2} s over {:.2} s, {} µs per {}",
                    w.pid,
                    seconds,
                    (t1 - t0).as_secs_f64(),
                    per_op.map_or("-".into(), |u| format!("{u:.1}")),
                    match *mode {
                        Mode::Tx(_) => "transaction",
                        Mode::Handshake { .. } => "login",
                        Mode::Idle => "connection",
                    }
                );
                json!({
                    "pid": w.pid,
                    "clk_tck": hz,
                    "ticks_before": c0,
                    "ticks_after": c1,
                    "window_s": ((t1 - t0).as_secs_f64() * 1000.0).round() / 1000.0,
                    "cpu_seconds": seconds,
                    "us_per_completed": per_op.map(|u| (u * 100.0).round() / 100.0),
                })
            }
            _ => {
                json!({ "pid": w.pid, "clk_tck": hz, "cpu_seconds": null, "us_per_completed": null })
            }
        };
        report["cpu"] = value;
    }
    if stats.tls_logins > 0 {
        println!(
            "tls {}  logins over TLS {}  resumed {}  channel binding {}",
            stats.tls_version.unwrap_or("-"),
            stats.tls_logins,
            stats.tls_resumed,
            stats.channel_bindings > 0
        );
    }
    let phases = || {
        let tcp = Summary::of(&stats.tcp);
        let tls = Summary::of(&stats.tls);
        let auth = Summary::of(&stats.auth);
        (tcp, tls, auth)
    };
    match &*mode {
        Mode::Tx(plan) => {
            report["clients"] = json!(clients);
            report["protocol"] = json!(plan.protocol.as_str());
            report["connect_per_tx"] = json!(plan.connect_per_tx);
            report["rate_target_per_s"] = json!(plan.rate);
            report["missed"] = json!(stats.missed);
            if let Some(r) = plan.rate {
                println!(
                    "open loop: target {r}/s, scheduled {}, missed {} (latency from intended start)",
                    schedule::slots_within(Duration::from_secs_f64(common.duration), r),
                    stats.missed
                );
            }
            print_table(&[("transaction", total)]);
        }
        Mode::Handshake { .. } => {
            let (tcp, tls, auth) = phases();
            report["concurrency"] = json!(clients);
            report["phases_us"] = json!({ "tcp": tcp, "tls": tls, "auth": auth });
            println!(
                "auth method {}  scram_keys_cached {}",
                stats.auth_method.unwrap_or("-"),
                stats.scram_keys_cached
            );
            print_table(&[("total", total), ("tcp", tcp), ("tls", tls), ("auth", auth)]);
        }
        Mode::Idle => {
            let (tcp, tls, auth) = phases();
            report["clients"] = json!(clients);
            report["connected"] = json!(stats.connected);
            report["phases_us"] = json!({ "tcp": tcp, "tls": tls, "auth": auth });
            println!("connected {} of {clients} at the end", stats.connected);
            if let Some(w) = &pid_watch {
                let (holding_kb, per_conn) = match w.holding {
                    Some((kb, held)) if held > 0 => (
                        Some(kb),
                        Some((kb as f64 - w.before_kb as f64) * 1024.0 / held as f64),
                    ),
                    Some((kb, _)) => (Some(kb), None),
                    None => (None, None),
                };
                report["pid"] = json!({
                    "pid": w.pid,
                    "rss_before_kb": w.before_kb,
                    "rss_holding_kb": holding_kb,
                    "bytes_per_connection": per_conn.map(|b| b.round()),
                    "all_open": w.all_open,
                });
                println!(
                    "pid {}: VmRSS {} kB before, {} while holding, {} bytes per connection",
                    w.pid,
                    w.before_kb,
                    holding_kb.map_or("-".into(), |k| format!("{k} kB")),
                    per_conn.map_or("-".into(), |b| format!("{b:.0}"))
                );
            }
            print_table(&[("open", total), ("tcp", tcp), ("tls", tls), ("auth", auth)]);
        }
    }
    if !errors.is_empty() {
        eprintln!("first distinct errors:");
        for (m, c) in &errors {
            eprintln!("  {c:>8} × {m}");
        }
    }
    if let Some(path) = &common.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        write_output(path, text.as_bytes())?;
    }
    if let (Some(path), Some(log)) = (&common.hdr, hdr) {
        write_output(path, &log.into_bytes())?;
    }
    if let Some(path) = &common.plot {
        let title = format!(
            "loadgen {mode_name}: {} at {:.0}/s, {} errors",
            stats.completed, rate, stats.errors
        );
        let series = match *mode {
            Mode::Tx(_) => vec![("transaction", &stats.total)],
            Mode::Handshake { .. } => stats.named(true),
            Mode::Idle => {
                let mut v = stats.named(true);
                v[0].0 = "open";
                v
            }
        };
        write_output(path, report::svg_plot(&title, &series).as_bytes())?;
    }
    if stats.completed == 0 {
        eprintln!("loadgen: nothing succeeded");
        return Ok(ExitCode::from(1));
    }
    if error_rate > common.max_error_rate {
        eprintln!(
            "loadgen: error rate {:.4} exceeds --max-error-rate {}",
            error_rate, common.max_error_rate
        );
        return Ok(ExitCode::from(1));
    }
    if stats.missed > 0 {
        eprintln!(
            "loadgen: {} scheduled transactions were not started by the end (too few --clients for --rate?)",
            stats.missed
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits a script at `;` outside single quotes, double quotes and `--` comments.
fn split_script(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                ';' => out.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            },
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::split_script;

    #[test]
    fn script_splitting() {
        let s = split_script(
            "BEGIN;\n-- a comment; with a semicolon\nUPDATE t SET v = 'a;b' WHERE id = 1;\nSELECT \"x;y\" FROM t;\nCOMMIT;\n",
        );
        assert_eq!(
            s,
            vec![
                "BEGIN",
                "UPDATE t SET v = 'a;b' WHERE id = 1",
                "SELECT \"x;y\" FROM t",
                "COMMIT"
            ]
        );
        assert_eq!(split_script("SELECT 1"), vec!["SELECT 1"]);
        assert!(split_script("  ;\n-- only\n").is_empty());
    }
}
