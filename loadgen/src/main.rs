//! loadgen: pgring's load generator. See loadgen/README.md.

mod conninfo;
mod pg;
mod stats;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::json;

use conninfo::Target;
use pg::{Conn, ScramCache};
use stats::{micros, ErrorLog, SharedStats, Stats, Summary};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connection before a closed-loop client retries.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for pgring and PostgreSQL: transaction and handshake latency with HDR histograms",
    long_about = "Load generator for pgring and PostgreSQL.\n\n\
        Each worker thread runs one glommio executor (pinned to a core when possible) that \
        drives its share of the connections in a closed loop. Latencies are recorded in \
        HDR histograms (µs) per thread and merged at the end. A progress line goes to \
        stderr every second; the final table to stdout; --json writes a machine-readable \
        report (schema in loadgen/README.md).\n\n\
        TARGET is a libpq conninfo string or a postgres:// URL; PGHOST (default 127.0.0.1), \
        PGPORT (5432), PGUSER, PGPASSWORD and PGDATABASE fill in what it leaves out.",
    after_help = "Examples:\n  \
        loadgen tx 'host=127.0.0.1 port=6432 user=app password=secret dbname=app' --clients 64\n  \
        loadgen tx postgres://app:secret@127.0.0.1:6432/app --clients 8 --script tx.sql --duration 30\n  \
        PGPASSWORD=secret loadgen handshake 'port=6432 user=app' --concurrency 4 --json hs.json\n\n\
        Exit status: 0 on success; 1 when nothing succeeded or the error rate exceeds \
        --max-error-rate; 2 on usage errors."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Closed-loop transactions: each client runs the script again and again on one connection.
    #[command(after_help = "Examples:\n  \
        loadgen tx 'port=6432 user=app password=secret' --clients 32 --duration 20\n  \
        loadgen tx postgres://app:secret@localhost:6432/app --clients 4 --script bench.sql --json tx.json\n\n\
        The script is split at semicolons (outside quotes); each statement is sent as one \
        simple-protocol Query and its ReadyForQuery awaited. One transaction = the whole \
        script; its latency is from the first Query sent to the last ReadyForQuery. A \
        transaction in which any statement got an ErrorResponse counts as an error. Broken \
        connections are re-opened.")]
    Tx(TxArgs),
    /// Connection setup: connect → startup → auth → ReadyForQuery → Terminate, in a loop.
    #[command(after_help = "Examples:\n  \
        loadgen handshake 'port=6432 user=app password=secret' --concurrency 4\n  \
        loadgen handshake postgres://app:secret@127.0.0.1:5432/app --no-scram-cache --json hs.json\n\n\
        Phases: tcp = TCP connect; auth = StartupMessage sent → ReadyForQuery; total = both. \
        Supports trust, cleartext, md5 and SCRAM-SHA-256. For SCRAM the salted-password keys \
        are derived once per (salt, iterations) and reused (ScramCredential::Keys), so \
        the client's PBKDF2 does not dominate; --no-scram-cache runs PBKDF2 on every login \
        like a fresh libpq client.")]
    Handshake(HandshakeArgs),
}

#[derive(Args)]
struct Common {
    /// libpq conninfo ("host=… port=… user=… password=… dbname=…") or postgres:// URL;
    /// empty: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE only.
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
    /// Exit non-zero when errors / (completed + errors) exceeds this.
    #[arg(long, default_value_t = 0.01, value_name = "FRACTION")]
    max_error_rate: f64,
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
    /// Query protocol (only "simple" for now).
    #[arg(long, default_value = "simple", value_parser = ["simple"])]
    protocol: String,
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

/// Everything a worker thread needs.
struct Shared {
    target: Target,
    addr: SocketAddr,
    deadline: Instant,
    errors: Mutex<ErrorLog>,
}

impl Shared {
    fn error(&self, stats: &SharedStats, message: String) {
        stats.lock().unwrap().errors += 1;
        self.errors.lock().unwrap().add(message);
    }
}

enum Mode {
    Tx { statements: Rc<Vec<String>> },
    Handshake { scram_cache: bool },
}

async fn tx_client(
    shared: Arc<Shared>,
    stats: Arc<SharedStats>,
    statements: Rc<Vec<String>>,
    cache: Rc<std::cell::RefCell<ScramCache>>,
) {
    while Instant::now() < shared.deadline {
        let conn = async {
            let mut conn = Conn::connect(shared.addr, CONNECT_TIMEOUT).await?;
            conn.login(&shared.target, &cache).await?;
            anyhow::Ok(conn)
        }
        .await;
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                shared.error(&stats, format!("{e:#}"));
                glommio::timer::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        loop {
            if Instant::now() >= shared.deadline {
                conn.terminate().await;
                return;
            }
            let start = Instant::now();
            match conn.run_script(&statements).await {
                Ok(None) => {
                    let us = micros(start.elapsed());
                    let mut s = stats.lock().unwrap();
                    s.completed += 1;
                    s.total.saturating_record(us);
                }
                Ok(Some(server_error)) => shared.error(&stats, server_error.to_string()),
                Err(e) => {
                    shared.error(&stats, format!("{e:#}"));
                    break;
                }
            }
        }
    }
}

async fn handshake_client(
    shared: Arc<Shared>,
    stats: Arc<SharedStats>,
    cache: Rc<std::cell::RefCell<ScramCache>>,
) {
    while Instant::now() < shared.deadline {
        let start = Instant::now();
        let mut conn = match Conn::connect(shared.addr, CONNECT_TIMEOUT).await {
            Ok(c) => c,
            Err(e) => {
                shared.error(&stats, format!("{e:#}"));
                glommio::timer::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let connected = Instant::now();
        match conn.login(&shared.target, &cache).await {
            Ok(info) => {
                let done = Instant::now();
                {
                    let mut s = stats.lock().unwrap();
                    s.completed += 1;
                    s.tcp.saturating_record(micros(connected - start));
                    s.auth.saturating_record(micros(done - connected));
                    s.total.saturating_record(micros(done - start));
                    s.scram_keys_cached |= info.scram_keys_cached;
                    s.auth_method = Some(info.method.as_str());
                }
                conn.terminate().await;
            }
            Err(e) => {
                shared.error(&stats, format!("{e:#}"));
                // A failed login is usually fast to repeat; don't flood the server.
                glommio::timer::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Starts `threads` executors, each running its share of `clients` loops; returns when
/// all have finished, printing progress every second.
fn run(
    shared: Arc<Shared>,
    mode: Arc<dyn Fn() -> Mode + Send + Sync>,
    threads: usize,
    clients: usize,
) -> Result<(Stats, Duration)> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = threads.clamp(1, clients.max(1));
    let per_thread: Vec<Arc<SharedStats>> = (0..threads)
        .map(|_| Arc::new(Mutex::new(Stats::default())))
        .collect();
    let finished = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for (id, thread_stats) in per_thread.iter().enumerate() {
        let n = clients / threads + usize::from(id < clients % threads);
        let spawn = |placement| {
            let shared = shared.clone();
            let stats = thread_stats.clone();
            let mode = mode.clone();
            let finished = finished.clone();
            LocalExecutorBuilder::new(placement)
                .name(&format!("loadgen-{id}"))
                .spawn(move || async move {
                    let mode = mode();
                    let cache = match &mode {
                        Mode::Handshake { scram_cache } => ScramCache::new(*scram_cache),
                        Mode::Tx { .. } => ScramCache::new(true),
                    };
                    let mut tasks = Vec::with_capacity(n);
                    for _ in 0..n {
                        let shared = shared.clone();
                        let stats = stats.clone();
                        let task = match &mode {
                            Mode::Tx { statements } => glommio::spawn_local(tx_client(
                                shared,
                                stats,
                                statements.clone(),
                                cache.clone(),
                            )),
                            Mode::Handshake { .. } => {
                                glommio::spawn_local(handshake_client(shared, stats, cache.clone()))
                            }
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

    let mut last_completed = 0u64;
    let mut last_tick = started;
    let mut next_tick = started + Duration::from_secs(1);
    while finished.load(Ordering::SeqCst) < threads {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if now < next_tick {
            continue;
        }
        next_tick += Duration::from_secs(1);
        let mut merged = Stats::default();
        for s in &per_thread {
            merged.merge(&s.lock().unwrap());
        }
        let interval = now.duration_since(last_tick).as_secs_f64();
        let rate = (merged.completed - last_completed) as f64 / interval.max(1e-9);
        last_completed = merged.completed;
        last_tick = now;
        eprintln!(
            "[{:6.1}s] completed {:>9}  rate {:>9.0}/s  errors {:>6}  p50 {:>7} µs  p99 {:>7} µs",
            now.duration_since(started).as_secs_f64(),
            merged.completed,
            rate,
            merged.errors,
            merged.total.value_at_quantile(0.5),
            merged.total.value_at_quantile(0.99),
        );
    }
    for h in handles {
        h.join()
            .map_err(|e| anyhow::anyhow!("joining an executor: {e}"))?;
    }
    let elapsed = started.elapsed();
    let mut merged = Stats::default();
    for s in &per_thread {
        merged.merge(&s.lock().unwrap());
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
    let (common, mode_name, clients, mode): (_, _, _, Arc<dyn Fn() -> Mode + Send + Sync>) =
        match cli.command {
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
                let statements = Arc::new(statements);
                (
                    args.common,
                    "tx",
                    args.clients,
                    Arc::new(move || Mode::Tx {
                        statements: Rc::new(statements.as_ref().clone()),
                    }),
                )
            }
            Command::Handshake(args) => {
                if args.concurrency == 0 {
                    bail!("--concurrency must be at least 1");
                }
                let scram_cache = !args.no_scram_cache;
                (
                    args.common,
                    "handshake",
                    args.concurrency,
                    Arc::new(move || Mode::Handshake { scram_cache }),
                )
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
    let threads = common.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let shared = Arc::new(Shared {
        target: target.clone(),
        addr,
        deadline: Instant::now() + Duration::from_secs_f64(common.duration),
        errors: Mutex::new(ErrorLog::default()),
    });
    let threads_used = threads.clamp(1, clients);
    let (stats, elapsed) = run(shared.clone(), mode, threads, clients)?;

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

    println!(
        "{mode_name}: {}@{}:{}/{}  threads {threads_used}  {} {clients}  {:.2} s",
        target.user,
        target.host,
        target.port,
        target.dbname,
        if mode_name == "tx" {
            "clients"
        } else {
            "concurrency"
        },
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
        },
        "threads": threads_used,
        "duration_s": (secs * 1000.0).round() / 1000.0,
        "completed": stats.completed,
        "errors": stats.errors,
        "error_rate": error_rate,
        "rate_per_s": (rate * 10.0).round() / 10.0,
        "latency_us": total,
        "error_messages": errors
            .iter()
            .map(|(m, c)| json!({"message": m, "count": c}))
            .collect::<Vec<_>>(),
    });
    if mode_name == "tx" {
        report["clients"] = json!(clients);
        print_table(&[("transaction", total)]);
    } else {
        let tcp = Summary::of(&stats.tcp);
        let auth = Summary::of(&stats.auth);
        report["concurrency"] = json!(clients);
        report["phases_us"] = json!({ "tcp": tcp, "auth": auth });
        report["scram_keys_cached"] = json!(stats.scram_keys_cached);
        report["auth_method"] = json!(stats.auth_method);
        println!(
            "auth method {}  scram_keys_cached {}",
            stats.auth_method.unwrap_or("-"),
            stats.scram_keys_cached
        );
        print_table(&[("total", total), ("tcp", tcp), ("auth", auth)]);
    }
    if !errors.is_empty() {
        eprintln!("first distinct errors:");
        for (m, c) in &errors {
            eprintln!("  {c:>8} × {m}");
        }
    }
    if let Some(path) = &common.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        if path.as_os_str() == "-" {
            print!("{text}");
        } else {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
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
    Ok(ExitCode::SUCCESS)
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
