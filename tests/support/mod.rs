//! Test support for pgring's integration tests: a throwaway real PostgreSQL cluster
//! ([`PgCluster`]), a launcher for the pgring binary ([`Pgring`]) and preconfigured
//! `psql`/`pgbench` commands.
//!
//! Use it from an integration test with `mod support;`. Each test binary uses a subset of
//! the items, hence the `dead_code` allowances.
//!
//! Environment knobs:
//! - `PGRING_PG_BIN`: folder of the PostgreSQL server binaries (default: the newest
//!   `/usr/lib/postgresql/*/bin`).
//! - `PGRING_PG_USER`: the unprivileged user the server runs as when the tests run as root
//!   (default `postgres`). PostgreSQL refuses to run as root.
//! - `PGRING_TEST_TMPDIR`: where the temporary folders go (default: the system temp folder).
//!   When running as root it must be traversable by the unprivileged user.
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The superuser `initdb` creates.
pub const SUPERUSER: &str = "postgres";
/// Its password (the cluster only accepts SCRAM by default, so it needs one).
pub const SUPERUSER_PASSWORD: &str = "pgring-test-superuser";

/// The pg_hba.conf every cluster starts with: SCRAM everywhere.
pub const DEFAULT_HBA: &[&str] = &[
    "local all all scram-sha-256",
    "host all all 127.0.0.1/32 scram-sha-256",
    "host all all ::1/128 scram-sha-256",
];

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const PGRING_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A free TCP port on 127.0.0.1 (bind to port 0, read the port, release it).
///
/// Another process may grab it before it is used; callers that start servers retry.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// The folder of the PostgreSQL binaries: `$PGRING_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` holding a `postgres` binary. Panics if there is none.
pub fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGRING_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("postgres").is_file(),
            "PGRING_PG_BIN={} holds no `postgres` binary",
            dir.display()
        );
        return dir;
    }
    find_pg_bin_dir().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server found under /usr/lib/postgresql/*/bin; \
             run scripts/install-deps.sh or set PGRING_PG_BIN"
        )
    })
}

fn find_pg_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PGRING_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir("/usr/lib/postgresql").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(version) = name
            .split('.')
            .map(str::parse::<u32>)
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        if !bin.join("postgres").is_file() || !bin.join("initdb").is_file() {
            continue;
        }
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
}

/// `name` from the PostgreSQL binaries folder when it is there, else from `PATH`.
fn client_binary(name: &str) -> PathBuf {
    match find_pg_bin_dir() {
        Some(dir) if dir.join(name).is_file() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// Sets the libpq environment of `cmd` (and clears the variables that could redirect it).
fn libpq_env(cmd: &mut Command, port: u16, user: &str, password: &str, db: &str) {
    for var in [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGPASSFILE",
        "PGOPTIONS",
        "PGHOSTADDR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGDATABASE", db)
        .env("PGCONNECT_TIMEOUT", "10");
    if password.is_empty() {
        cmd.env_remove("PGPASSWORD");
    } else {
        cmd.env("PGPASSWORD", password);
    }
}

/// `psql -X -At -v ON_ERROR_STOP=1` aimed at 127.0.0.1:`port` through `PG*` variables.
/// Add `-c <sql>` (or feed stdin) and run it. An empty `password` leaves PGPASSWORD unset.
pub fn psql_cmd(port: u16, user: &str, password: &str, db: &str) -> Command {
    psql_cmd_with(client_binary("psql"), port, user, password, db)
}

fn psql_cmd_with(psql: PathBuf, port: u16, user: &str, password: &str, db: &str) -> Command {
    let mut cmd = Command::new(psql);
    libpq_env(&mut cmd, port, user, password, db);
    cmd.args(["-X", "-At", "-v", "ON_ERROR_STOP=1"]);
    cmd
}

/// psql through pgring at 127.0.0.1:`port` to database `app` as `user`, running `sql`, with
/// libpq's TLS settings cleared first (no `PGSSL*`, no channel binding, and client
/// certificate paths that do not exist, so that files in `~/.postgresql` play no part:
/// a root.crt there would turn `require` into `verify-ca`), then `env` on top.
pub fn psql_tls(port: u16, user: &str, password: &str, env: &[(&str, &str)], sql: &str) -> Output {
    let mut cmd = psql_cmd(port, user, password, "app");
    for var in [
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGREQUIRESSL",
        "PGCHANNELBINDING",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGSSLCERT", "/nonexistent/postgresql.crt")
        .env("PGSSLKEY", "/nonexistent/postgresql.key");
    cmd.envs(env.iter().copied());
    cmd.arg("-c").arg(sql);
    cmd.output().expect("run psql")
}

/// A command's output as text.
pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Checks that psql succeeded (showing pgring's log when not) and returns its stdout.
#[track_caller]
pub fn assert_psql_ok(out: &Output, pgring: &Pgring) -> String {
    assert!(
        out.status.success(),
        "psql failed: {}\n--- pgring.log ---\n{}",
        text(&out.stderr),
        pgring.log()
    );
    text(&out.stdout)
}

/// Checks that psql failed with `needle` in its error.
#[track_caller]
pub fn assert_psql_fails(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "psql succeeded: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains(needle),
        "expected {needle:?} in psql's error: {}",
        text(&out.stderr)
    );
}

/// `pgbench` aimed at 127.0.0.1:`port` through `PG*` variables; add its arguments.
pub fn pgbench_cmd(port: u16, user: &str, password: &str, db: &str) -> Command {
    let mut cmd = Command::new(client_binary("pgbench"));
    libpq_env(&mut cmd, port, user, password, db);
    cmd
}

/// Quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn send_signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: plain syscall on a pid we own; failure is reported through the return value.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl RunAs {
    fn lookup() -> Option<RunAs> {
        if !is_root() {
            return None;
        }
        let user = std::env::var("PGRING_PG_USER").unwrap_or_else(|_| "postgres".into());
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, &user])
                .output()
                .expect("run `id`");
            assert!(
                out.status.success(),
                "the tests run as root and PostgreSQL refuses to; they run the server as \
                 user `{user}`, which does not exist ({}). Install the postgresql package \
                 (scripts/install-deps.sh) or set PGRING_PG_USER to an unprivileged user",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric id")
        };
        Some(RunAs {
            uid: id("-u"),
            gid: id("-g"),
        })
    }

    fn chown(run_as: Option<RunAs>, path: &Path) {
        if let Some(r) = run_as {
            std::os::unix::fs::chown(path, Some(r.uid), Some(r.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

fn temp_dir(prefix: &str) -> TempDir {
    let base = std::env::var_os("PGRING_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("create a temp dir in {}: {e}", base.display()))
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A private PostgreSQL cluster in a temporary folder, running as a child process.
///
/// Auth is SCRAM everywhere ([`DEFAULT_HBA`]); the superuser is [`SUPERUSER`] with
/// [`SUPERUSER_PASSWORD`]. It listens on 127.0.0.1:[`port`](Self::port) and on a Unix
/// socket in [`socket_dir`](Self::socket_dir). Dropping it stops the server and removes the
/// folder.
pub struct PgCluster {
    bin: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    // Declared last: removed after the server is stopped.
    dir: TempDir,
}

impl PgCluster {
    /// initdb + start a cluster with the default settings; panics with the reason on failure.
    pub fn start() -> PgCluster {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra `-c name=value` server settings.
    pub fn start_with(settings: &[(&str, &str)]) -> PgCluster {
        let bin = pg_bin_dir();
        let run_as = RunAs::lookup();
        let dir = temp_dir("pgring-pg-");
        // The server user must reach the socket and the log; data/ itself is 0700.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        RunAs::chown(run_as, dir.path());
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        let log = dir.path().join("postgres.log");
        fs::create_dir(&sock).expect("mkdir sock");
        RunAs::chown(run_as, &sock);

        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n")).expect("write pwfile");
        RunAs::chown(run_as, &pwfile);

        let mut cluster = PgCluster {
            bin,
            run_as,
            port: 0,
            data,
            sock,
            log,
            child: None,
            dir,
        };

        let out = cluster
            .server_command("initdb")
            .arg("-D")
            .arg(&cluster.data)
            .args(["--auth=scram-sha-256", "-U", SUPERUSER, "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("spawn initdb");
        assert!(out.status.success(), "initdb failed: {}", output_text(&out));
        let _ = fs::remove_file(&pwfile);
        cluster.write_hba(DEFAULT_HBA);

        // The port may be taken between free_port() and the bind: retry a few times.
        let mut attempts = 0;
        loop {
            attempts += 1;
            cluster.port = free_port();
            cluster.spawn_server(settings);
            match cluster.wait_ready() {
                Ok(()) => break,
                Err(msg) if attempts < 5 && msg.contains("could not") && msg.contains("bind") => {
                    cluster.stop();
                }
                Err(msg) => panic!(
                    "PostgreSQL did not start on port {}: {msg}\n--- postgres.log ---\n{}",
                    cluster.port,
                    cluster.log_contents()
                ),
            }
        }
        cluster
    }

    /// A command for one of the server binaries, as the unprivileged user when we are root.
    fn server_command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        // The server user may not be able to read our working directory.
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C");
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        if let Some(r) = self.run_as {
            cmd.uid(r.uid).gid(r.gid);
        }
        cmd
    }

    fn spawn_server(&mut self, settings: &[(&str, &str)]) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open postgres.log");
        let log2 = log.try_clone().expect("dup log");
        let mut cmd = self.server_command("postgres");
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.sock);
        let defaults = [
            ("listen_addresses", "127.0.0.1"),
            ("max_connections", "300"),
            ("shared_buffers", "32MB"),
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("logging_collector", "off"),
        ];
        for (k, v) in defaults.iter().chain(settings) {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.join("postgres").display()));
        self.child = Some(child);
    }

    /// Polls until the server answers a real query as the superuser.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pg_isready = self.bin.join("pg_isready");
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "postgres exited early ({status}): {}",
                    tail(&self.log_contents(), 20)
                ));
            }
            let accepting = if pg_isready.is_file() {
                Command::new(&pg_isready)
                    .args(["-q", "-h", "127.0.0.1", "-t", "2", "-d", "postgres"])
                    .args(["-p", &self.port.to_string(), "-U", SUPERUSER])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            } else {
                let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
                TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
            };
            if accepting {
                let out = self.psql_output("SELECT 1");
                if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!("SELECT 1 failed: {}", output_text(&out)));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fast shutdown (SIGINT), SIGKILL after [`STOP_TIMEOUT`].
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        send_signal(child.id(), libc::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The folder holding the server's Unix socket `.s.PGSQL.<port>`.
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    pub fn superuser(&self) -> &'static str {
        SUPERUSER
    }

    pub fn superuser_password(&self) -> &'static str {
        SUPERUSER_PASSWORD
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The folder of the server binaries this cluster runs.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The postmaster's pid (None once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far.
    pub fn log_contents(&self) -> String {
        String::from_utf8_lossy(&self.log_bytes()).into_owned()
    }

    fn log_bytes(&self) -> Vec<u8> {
        fs::read(&self.log).unwrap_or_default()
    }

    /// A libpq/tokio-postgres connection string for this cluster over TCP.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} connect_timeout=10",
            self.port,
            q(user),
            q(password),
            q(db)
        )
    }

    fn psql_output(&self, sql: &str) -> Output {
        let psql = match self.bin.join("psql") {
            p if p.is_file() => p,
            _ => client_binary("psql"),
        };
        let mut cmd = psql_cmd_with(psql, self.port, SUPERUSER, SUPERUSER_PASSWORD, "postgres");
        // Through stdin, so that statements run one by one (CREATE DATABASE cannot run in
        // the implicit transaction of a multi-statement `-c`).
        let mut child = cmd
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql");
        let mut stdin = child.stdin.take().expect("psql stdin");
        let sql = sql.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(sql.as_bytes());
            let _ = stdin.write_all(b"\n");
        });
        let out = child.wait_with_output().expect("wait psql");
        let _ = writer.join();
        out
    }

    /// Runs `sql` (any number of statements) with psql as the superuser over TCP and returns
    /// its stdout (`-At`: unaligned, tuples only). Panics with psql's stderr on failure.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.psql_output(sql);
        assert!(
            out.status.success(),
            "psql failed on port {}: {sql}\n{}",
            self.port,
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `CREATE ROLE name LOGIN PASSWORD 'password' <extra>`; `extra` is raw SQL role options
    /// (e.g. `SUPERUSER`, `CONNECTION LIMIT 5`). The password is stored as SCRAM unless the
    /// cluster was started with `password_encryption=md5`.
    pub fn create_role(&self, name: &str, password: &str, extra: &str) {
        self.psql(&format!(
            "CREATE ROLE {} LOGIN PASSWORD {} {extra};",
            quote_ident(name),
            quote_literal(password)
        ));
    }

    /// `CREATE DATABASE name OWNER owner`.
    pub fn create_database(&self, name: &str, owner: &str) {
        self.psql(&format!(
            "CREATE DATABASE {} OWNER {};",
            quote_ident(name),
            quote_ident(owner)
        ));
    }

    fn write_hba(&self, lines: &[&str]) {
        let path = self.data.join("pg_hba.conf");
        let mut text = String::from("# written by pgring's test support\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        // Truncates the file initdb made, so it keeps its owner.
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        RunAs::chown(self.run_as, &path);
    }

    /// Writes `contents` to `name` in the data folder, owned by the server's user with mode
    /// 0600 (PostgreSQL refuses a key file others can read), and returns its path.
    pub fn write_data_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.data.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        RunAs::chown(self.run_as, &path);
        path
    }

    /// Replaces pg_hba.conf with `lines` and reloads; new connections use the new rules
    /// when this returns. Panics if the file has errors. Keep a line that lets the
    /// superuser in over TCP (e.g. `host all postgres 127.0.0.1/32 scram-sha-256`) or
    /// [`psql`](Self::psql) stops working.
    pub fn set_hba(&self, lines: &[&str]) {
        self.write_hba(lines);
        // Still connected under the old rules: check the new file before loading it.
        let errors = self.psql(
            "SELECT line_number || ': ' || error FROM pg_hba_file_rules WHERE error IS NOT NULL",
        );
        assert!(errors.trim().is_empty(), "bad pg_hba.conf lines:\n{errors}");
        self.reload();
    }

    /// SIGHUP to the postmaster, then waits until it has logged the reload. The postmaster
    /// reloads pg_hba.conf right after logging that, before it accepts anything else, so
    /// connections made after this returns see the new rules.
    pub fn reload(&self) {
        let start = self.log_bytes().len();
        let since = || String::from_utf8_lossy(&self.log_bytes()[start..]).into_owned();
        let pid = self.pid().expect("server not running");
        assert!(send_signal(pid, libc::SIGHUP), "SIGHUP to {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !since().contains("received SIGHUP, reloading configuration files") {
            assert!(
                Instant::now() < deadline,
                "postgres did not log the reload:\n{}",
                tail(&self.log_contents(), 20)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Give a rejected file's message (logged right after) a moment to show up.
        std::thread::sleep(Duration::from_millis(50));
        let log = since();
        assert!(
            !log.contains("was not reloaded"),
            "postgres refused the new configuration:\n{log}"
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- postgres.log (port {}, last 40 lines) ---\n{}",
                self.port,
                tail(&self.log_contents(), 40)
            );
        }
        self.stop();
        // `dir` (a TempDir) is removed when the fields drop.
    }
}

/// The pgring binary under test, started with a config file in a temporary folder.
pub struct Pgring {
    child: Option<Child>,
    port: u16,
    addr: SocketAddr,
    log: PathBuf,
    dir: TempDir,
}

/// `listen_port = N` from the config text.
fn parse_key<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| {
            let v = v.split('#').next().unwrap_or("").trim();
            v.trim_matches('"').trim_matches('\'')
        })
    })
}

impl Pgring {
    /// Writes `config_toml` as `pgring.toml` and each `(name, contents)` of `files` into a
    /// fresh temp folder, starts `pgring --config <dir>/pgring.toml` with stdout and stderr
    /// going to `<dir>/pgring.log`, and waits until `listen_port` (read from the config;
    /// `listen_addr` too when it is a concrete address) accepts TCP connections and pgring
    /// has logged that every shard listens (the Unix socket included). The config must not
    /// set `logfile`: the log is read from pgring's stderr.
    ///
    /// The text `{dir}` in the config and the files is replaced by the folder's path (handy
    /// for `unix_socket_dir`, `auth_file`, `logfile`...).
    pub fn start(config_toml: &str, files: &[(&str, &str)]) -> Pgring {
        let dir = temp_dir("pgring-");
        let dir_str = dir.path().to_str().expect("utf-8 temp path").to_owned();
        let config_toml = config_toml.replace("{dir}", &dir_str);
        let port: u16 = parse_key(&config_toml, "listen_port")
            .expect("the config must set `listen_port = N` (see support::free_port)")
            .parse()
            .expect("listen_port is a number");
        let ip = match parse_key(&config_toml, "listen_addr") {
            Some(a)
                if a.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| !ip.is_unspecified()) =>
            {
                a.parse().unwrap()
            }
            _ => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        let config_path = dir.path().join("pgring.toml");
        fs::write(&config_path, &config_toml).expect("write pgring.toml");
        for (name, contents) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("mkdir");
            }
            fs::write(&path, contents.replace("{dir}", &dir_str))
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        let log = dir.path().join("pgring.log");
        let log_file = File::create(&log).expect("create pgring.log");
        let log_file2 = log_file.try_clone().expect("dup log");
        // Cargo names the binary only for the pgring package's own tests; other packages
        // that include this module (loadgen's) do not launch pgring.
        let Some(binary) = option_env!("CARGO_BIN_EXE_pgring") else {
            panic!("Pgring::start is only available to the pgring package's tests");
        };
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_file2))
            .spawn()
            .expect("spawn pgring");
        let mut pgring = Pgring {
            child: Some(child),
            port,
            addr: SocketAddr::new(ip, port),
            log,
            dir,
        };
        pgring.wait_listening();
        pgring
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + PGRING_READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "pgring exited before listening on {} ({status})\n--- pgring.log ---\n{}",
                    self.addr,
                    self.log()
                );
            }
            // The TCP port may answer (any shard) before shard 0 has bound the Unix
            // socket; pgring logs "listening on" once every shard is listening.
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)).is_ok()
                && self.log().contains(" listening on ")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pgring not listening on {} after {PGRING_READY_TIMEOUT:?}\n--- pgring.log ---\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder holding pgring.toml, pgring.log and the extra files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("pgring reaped").id()
    }

    /// pgring's stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sends `sig` (e.g. `libc::SIGHUP`, `libc::SIGTERM`); false if the process is gone.
    pub fn signal(&self, sig: libc::c_int) -> bool {
        match &self.child {
            Some(c) => send_signal(c.id(), sig),
            None => false,
        }
    }

    /// Waits up to `timeout` for pgring to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Pgring {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- pgring.log (port {}, last 60 lines) ---\n{}",
                self.port,
                tail(&self.log(), 60)
            );
        }
    }
}

/// A pgring config listening on 127.0.0.1:`port` (and a Unix socket in pgring's own
/// folder), md5 against `userlist.txt`, the given extra `[pooler]` lines, and database
/// `app` on `pg`.
pub fn app_config(pg: &PgCluster, port: u16, pooler: &str) -> String {
    format!(
        r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{{dir}}"
auth_type = "md5"
auth_file = "userlist.txt"
stats_period = 0
{pooler}

[databases]
app = {{ host = "127.0.0.1", port = {pgport}, dbname = "app" }}
"#,
        pgport = pg.port()
    )
}
