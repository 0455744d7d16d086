//! The log: lines to stderr or `logfile`, with a timestamp, the process id and a level,
//! in the shape PostgreSQL and PgBouncer use (`2026-01-01 12:00:00.000 UTC [123] LOG …`).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    /// The log file, or `None` for stderr. Logging is off the hot path: a mutex is fine.
    file: Option<Mutex<File>>,
    level: LevelFilter,
    /// Read once: `std::process::id` is a system call each time, and every connection
    /// logs two lines with the default `log_connections`/`log_disconnections`.
    pid: u32,
}

thread_local! {
    /// Each thread formats its lines in its own buffer: with the default
    /// `log_connections`/`log_disconnections` every connection logs two lines, and a shard
    /// should not allocate for them.
    static LINE: RefCell<LineBuf> = RefCell::new(LineBuf::default());
}

/// A line being formatted, and the date and time to the second of the last one (most
/// lines fall in the same second as the line before).
#[derive(Default)]
struct LineBuf {
    text: String,
    /// `YYYY-MM-DD HH:MM:SS` of `second`.
    stamp: String,
    second: Option<u64>,
}

impl LineBuf {
    /// `2026-01-01 12:00:00.000 UTC [pid] LEVEL message\n` into `self.text`.
    fn format(&mut self, now: SystemTime, pid: u32, level: &str, message: &std::fmt::Arguments) {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let second = since_epoch.as_secs();
        if self.second != Some(second) {
            // "2026-01-01T12:00:00Z" → "2026-01-01 12:00:00"
            let rfc3339 =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second));
            self.stamp.clear();
            let _ = write!(self.stamp, "{rfc3339}");
            self.stamp.truncate(19);
            self.stamp.replace_range(10..11, " ");
            self.second = Some(second);
        }
        self.text.clear();
        let _ = writeln!(
            self.text,
            "{}.{:03} UTC [{pid}] {level} {message}",
            self.stamp,
            since_epoch.subsec_millis()
        );
        // A very long line (a large error) does not keep its buffer for good.
        if self.text.capacity() > 64 * 1024 {
            self.text.shrink_to(4096);
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with("pgring")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARNING",
            Level::Info => "LOG",
            Level::Debug | Level::Trace => "DEBUG",
        };
        let write = |line: &LineBuf| match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.text.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.text.as_bytes());
            }
        };
        let now = SystemTime::now();
        let done = LINE
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut line) => {
                    line.format(now, self.pid, level, record.args());
                    write(&line);
                    true
                }
                // Logging from inside a message being formatted: no shared buffer.
                Err(_) => false,
            })
            // A thread whose locals are gone (it is exiting).
            .unwrap_or(false);
        if !done {
            let mut line = LineBuf::default();
            line.format(now, self.pid, level, record.args());
            write(&line);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_postgresql_s_shape_and_the_stamp_follows_the_clock() {
        let mut line = LineBuf::default();
        let at = |secs: u64, millis: u64| {
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
        };
        // 2026-01-01 12:00:00 UTC
        line.format(
            at(1_767_268_800, 7),
            42,
            "LOG",
            &format_args!("hello {}", 1),
        );
        assert_eq!(line.text, "2026-01-01 12:00:00.007 UTC [42] LOG hello 1\n");
        line.format(
            at(1_767_268_800, 999),
            42,
            "WARNING",
            &format_args!("same second"),
        );
        assert_eq!(
            line.text,
            "2026-01-01 12:00:00.999 UTC [42] WARNING same second\n"
        );
        line.format(
            at(1_767_268_861, 0),
            42,
            "ERROR",
            &format_args!("next minute"),
        );
        assert_eq!(
            line.text,
            "2026-01-01 12:01:01.000 UTC [42] ERROR next minute\n"
        );
        // A clock before 1970 does not panic.
        line.format(
            UNIX_EPOCH - Duration::from_secs(5),
            1,
            "LOG",
            &format_args!("x"),
        );
        assert_eq!(line.text, "1970-01-01 00:00:00.000 UTC [1] LOG x\n");
    }
}
