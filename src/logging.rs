//! The log: lines to stderr or `logfile`, with a timestamp, the process id and a level,
//! in the shape PostgreSQL and PgBouncer use (`2026-01-01 12:00:00.000 UTC [123] LOG …`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    /// The log file, or `None` for stderr. Logging is off the hot path: a mutex is fine.
    file: Option<Mutex<File>>,
    level: LevelFilter,
    /// Read once: `std::process::id` is a system call each time, and every connection
    /// logs two lines with the default `log_connections`/`log_disconnections`.
    pid: u32,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with("pgring")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        // "2026-01-01T12:00:00.000Z" → "2026-01-01 12:00:00.000 UTC"
        let stamp = now.replacen('T', " ", 1).replace('Z', " UTC");
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARNING",
            Level::Info => "LOG",
            Level::Debug | Level::Trace => "DEBUG",
        };
        let line = format!("{stamp} [{}] {level} {}\n", self.pid, record.args());
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. `verbose`: 0 = LOG and above, 1 = DEBUG, 2 = everything.
pub fn init(logfile: Option<&Path>, verbose: u8) -> std::io::Result<()> {
    let file = match logfile {
        Some(path) => Some(Mutex::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        )),
        None => None,
    };
    let level = match verbose {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let logger = Logger {
        file,
        level,
        pid: std::process::id(),
    };
    // A second init (tests) keeps the first logger.
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    Ok(())
}
