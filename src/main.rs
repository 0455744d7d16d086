//! The `pgring` command: parse arguments, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pgring::config::Config;
use pgring::runtime;

#[global_allocator]
static GLOBAL: pgring::alloc::Allocator = pgring::alloc::Allocator;

/// pgring: a thread-per-core PostgreSQL connection pooler.
///
/// Clients connect to pgring as if it were PostgreSQL; pgring lends them connections
/// from small per-(database, user) pools of real server connections. Each CPU core runs
/// a shard with its own listener (SO_REUSEPORT), sessions and pools.
///
/// The config file is TOML with PgBouncer's key names: `[pooler]` (pgbouncer.ini's
/// `[pgbouncer]` section), `[databases]` and `[users]`. configs/reference.toml lists
/// every key with its default.
///
/// Signals: SIGHUP reloads the config and auth_file; SIGINT or SIGTERM stop accepting,
/// let transactions in flight finish (up to shutdown_timeout) and exit.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
#[command(
    after_help = "Examples:\n  pgring --config /etc/pgring/pgring.toml\n  pgring --config pgring.toml --check    # validate and print the effective config"
)]
struct Args {
    /// The TOML config file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,

    /// Validate the config (and auth_file, TLS files), print the effective configuration and exit.
    #[arg(long)]
    check: bool,

    /// More log output (-v: debug, -vv: trace); adds to the config's `verbose`.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgring: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if args.check {
        runtime::load_auth_table(&config)?;
        pgring::tls::server_config(&config.pooler)?;
        pgring::tls::client_config(&config.pooler)?;
        print!("{}", config.to_toml());
        return Ok(());
    }
    pgring::logging::init(
        config.pooler.logfile.as_deref(),
        config.pooler.verbose.saturating_add(args.verbose),
    )?;
    match pgring::alloc::avoid_transparent_huge_pages() {
        Ok(pgring::alloc::HugePages::Off) => {}
        Ok(pgring::alloc::HugePages::LeftToMimalloc) => {
            log::info!("transparent huge pages left to mimalloc (MIMALLOC_ALLOW_THP is set)")
        }
        Err(e) => log::warn!(
            "could not turn transparent huge pages off (prctl PR_SET_THP_DISABLE: {e}); \
             idle connections may cost more memory"
        ),
    }
    let pidfile = match &config.pooler.pidfile {
        Some(path) => Some(runtime::PidFile::create(path)?),
        None => None,
    };
    let shards = config.pooler.shards;
    let listen = format!(
        "{}:{}",
        config.pooler.listen_addr, config.pooler.listen_port
    );
    let unix = config.pooler.unix_socket_dir.clone();
    let rt = runtime::start(config)?;
    log::info!(
        "pgring {} listening on {listen}{} with {shards} shard(s)",
        env!("CARGO_PKG_VERSION"),
        unix.map(|d| format!(" and unix socket dir {}", d.display()))
            .unwrap_or_default()
    );
    rt.wait()?;
    drop(pidfile);
    log::info!("pgring stopped");
    Ok(())
}
