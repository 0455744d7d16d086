//! Open-loop pacing for `tx --rate R`: the run's transaction slots are at `n / R` seconds
//! after the start (n = 0, 1, 2, …) and are dealt round-robin to the clients, so client
//! `c` of `C` owns slots `c, c + C, c + 2C, …`, one every `C / R` seconds. A client that
//! falls behind does not skip slots: it runs them back to back until it has caught up, and
//! each transaction's latency is measured from its slot (its intended start), which is
//! what corrects for coordinated omission.

use std::time::{Duration, Instant};

/// Offset of slot `n` from the start at `rate` slots per second.
pub fn slot_offset(n: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(n as f64 / rate)
}

/// How many slots fall before `duration` (the ones a run of that length schedules).
pub fn slots_within(duration: Duration, rate: f64) -> u64 {
    // The smallest n with n / rate >= duration.
    let n = (duration.as_secs_f64() * rate).ceil() as u64;
    // Guard against rounding in either direction.
    let mut n = n.saturating_sub(1);
    while slot_offset(n, rate) < duration {
        n += 1;
    }
    n
}

/// One client's slots.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    rate: f64,
    clients: u64,
    /// The client's next slot number (global numbering).
    next: u64,
}

impl Schedule {
    /// The schedule of client `client` (0-based) of `clients`, total `rate` per second,
    /// from `start`.
    pub fn new(start: Instant, rate: f64, client: usize, clients: usize) -> Schedule {
        assert!(rate > 0.0 && client < clients);
        Schedule {
            start,
            rate,
            clients: clients as u64,
            next: client as u64,
        }
    }

    /// The intended start of the next transaction, without consuming it.
    pub fn peek(&self) -> Instant {
        self.start + slot_offset(self.next, self.rate)
    }

    /// The intended start of the next transaction; moves on to the one after.
    pub fn take(&mut self) -> Instant {
        let at = self.peek();
        self.next += self.clients;
        at
    }

    /// Slots from the next one up to (excluding) `deadline`, consumed: those a client
    /// that stops now leaves unstarted.
    pub fn drain_before(&mut self, deadline: Instant) -> u64 {
        let mut n = 0;
        while self.peek() < deadline {
            self.take();
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_dealt_round_robin() {
        let start = Instant::now();
        // 500/s over 4 clients: client 1 owns slots 1, 5, 9 → 2 ms, 10 ms, 18 ms.
        let mut s = Schedule::new(start, 500.0, 1, 4);
        assert_eq!(s.take() - start, Duration::from_millis(2));
        assert_eq!(s.take() - start, Duration::from_millis(10));
        assert_eq!(s.peek() - start, Duration::from_millis(18));
        assert_eq!(s.take() - start, Duration::from_millis(18));
        // A single client gets every slot.
        let mut s = Schedule::new(start, 4.0, 0, 1);
        let got: Vec<_> = (0..4).map(|_| s.take() - start).collect();
        assert_eq!(got, [0, 250, 500, 750].map(Duration::from_millis).to_vec());
    }

    #[test]
    fn a_run_schedules_rate_times_duration() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(4);
        let clients = 3;
        let total: u64 = (0..clients)
            .map(|c| Schedule::new(start, 500.0, c, clients).drain_before(deadline))
            .sum();
        assert_eq!(total, 2000);
        assert_eq!(slots_within(Duration::from_secs(4), 500.0), 2000);
        assert_eq!(slots_within(Duration::from_millis(4001), 500.0), 2001);
        assert_eq!(slots_within(Duration::from_secs(1), 3.0), 3);
        assert_eq!(slots_within(Duration::from_secs_f64(0.1), 7.0), 1);
    }

    #[test]
    fn a_late_client_keeps_its_backlog() {
        let start = Instant::now();
        let mut s = Schedule::new(start, 1000.0, 0, 1);
        // The client was stuck for 10 ms: slots 0..=9 are all already due, still in order,
        // each with its own intended start, so their latencies include the wait.
        let now = start + Duration::from_millis(10);
        let due: Vec<_> = std::iter::from_fn(|| (s.peek() < now).then(|| s.take())).collect();
        assert_eq!(due.len(), 10);
        assert!(due
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_millis(1)));
        // Stopping at 15 ms leaves slots 10..=14 unstarted.
        assert_eq!(s.drain_before(start + Duration::from_millis(15)), 5);
        assert_eq!(s.peek() - start, Duration::from_millis(15));
    }
}
