//! Counters and HDR histograms (µs), one set per executor thread, merged for progress
//! lines and the final report.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly (longer ones saturate): one hour in µs.
const MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One thread's results. Guarded by a mutex that only the progress printer contends for.
pub struct Stats {
    pub completed: u64,
    pub errors: u64,
    /// Transaction latency (tx) or connect-to-ReadyForQuery (handshake).
    pub total: Histogram<u64>,
    /// Handshake only: TCP connect.
    pub tcp: Histogram<u64>,
    /// Handshake only: SSLRequest sent → TLS handshake done (or 'N' received).
    pub tls: Histogram<u64>,
    /// Handshake only: StartupMessage sent → ReadyForQuery.
    pub auth: Histogram<u64>,
    pub scram_keys_cached: bool,
    pub auth_method: Option<&'static str>,
    /// Logins over TLS, and how many of their handshakes resumed a session.
    pub tls_logins: u64,
    pub tls_resumed: u64,
    pub tls_version: Option<&'static str>,
    /// Logins that used SCRAM-SHA-256-PLUS.
    pub channel_bindings: u64,
    /// Idle only: connections held now (decremented when one is lost), and open attempts
    /// finished (successful or not).
    pub connected: u64,
    pub opens_done: u64,
    /// tx --rate only: slots before the deadline that were never started.
    pub missed: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            completed: 0,
            errors: 0,
            total: new_histogram(),
            tcp: new_histogram(),
            tls: new_histogram(),
            auth: new_histogram(),
            scram_keys_cached: false,
            auth_method: None,
            tls_logins: 0,
            tls_resumed: 0,
            tls_version: None,
            channel_bindings: 0,
            connected: 0,
            opens_done: 0,
            missed: 0,
        }
    }
}

impl Stats {
    pub fn merge(&mut self, other: &Stats) {
        self.completed += other.completed;
        self.errors += other.errors;
        self.total.add(&other.total).expect("same bounds");
        self.tcp.add(&other.tcp).expect("same bounds");
        self.tls.add(&other.tls).expect("same bounds");
        self.auth.add(&other.auth).expect("same bounds");
        self.scram_keys_cached |= other.scram_keys_cached;
        self.auth_method = self.auth_method.or(other.auth_method);
        self.tls_logins += other.tls_logins;
        self.tls_resumed += other.tls_resumed;
        self.tls_version = self.tls_version.or(other.tls_version);
        self.channel_bindings += other.channel_bindings;
        self.connected += other.connected;
        self.opens_done += other.opens_done;
        self.missed += other.missed;
    }

    /// The histograms by report name, for the given mode's phases.
    pub fn named(&self, phases: bool) -> Vec<(&'static str, &Histogram<u64>)> {
        let mut v = vec![("total", &self.total)];
        if phases {
            v.extend([("tcp", &self.tcp), ("tls", &self.tls), ("auth", &self.auth)]);
        }
        v
    }
}

pub type SharedStats = Mutex<Stats>;

/// The first distinct error messages, with how often each occurred.
#[derive(Default)]
pub struct ErrorLog {
    messages: BTreeMap<String, (usize, u64)>,
}

/// How many distinct messages are kept.
const MAX_DISTINCT_ERRORS: usize = 5;

impl ErrorLog {
    pub fn add(&mut self, message: String) {
        let order = self.messages.len();
        if let Some((_, count)) = self.messages.get_mut(&message) {
            *count += 1;
        } else if order < MAX_DISTINCT_ERRORS {
            self.messages.insert(message, (order, 1));
        }
    }

    /// `(message, count)` in order of first occurrence.
    pub fn list(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .messages
            .iter()
            .map(|(m, (order, count))| (*order, m.clone(), *count))
            .collect();
        v.sort();
        v.into_iter().map(|(_, m, c)| (m, c)).collect()
    }
}

/// The latency summary of the JSON report and the table, in µs.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary {
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
                mean: 0.0,
            };
        }
        Summary {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_merge() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for v in 1..=1000 {
            a.total.record(v).unwrap();
        }
        b.total.record(5000).unwrap();
        a.completed = 1000;
        b.completed = 1;
        b.errors = 2;
        a.merge(&b);
        assert_eq!((a.completed, a.errors), (1001, 2));
        let s = Summary::of(&a.total);
        assert_eq!(s.p50, 501);
        assert!(s.max >= 5000 && s.max <= 5005);
        assert_eq!(Summary::of(&new_histogram()).p99, 0);
    }

    #[test]
    fn error_log_keeps_first_distinct() {
        let mut log = ErrorLog::default();
        for i in 0..10 {
            log.add(format!("e{i}"));
        }
        log.add("e0".into());
        let list = log.list();
        assert_eq!(list.len(), MAX_DISTINCT_ERRORS);
        assert_eq!(list[0], ("e0".to_string(), 2));
        assert_eq!(list[4].0, "e4");
    }
}
