//! A cheap monotonic clock for pool bookkeeping.
//!
//! The pool stamps a server connection when it is released and looks at the stamp when
//! it is taken again, to apply `server_lifetime`, `server_idle_timeout` and
//! `server_check_delay`: in transaction pooling that is several clock reads per
//! transaction. Those settings are whole seconds, so the kernel's coarse monotonic clock
//! (advanced once per timer tick, a few milliseconds) is precise enough, and reading it is
//! a plain load from the vDSO page instead of a timestamp-counter read, which is slow
//! under some hypervisors.

use std::time::Duration;

/// A reading of `CLOCK_MONOTONIC_COARSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CoarseInstant(Duration);

impl CoarseInstant {
    pub fn now() -> CoarseInstant {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists on
        // every Linux that has io_uring.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        debug_assert_eq!(rc, 0);
        CoarseInstant(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: CoarseInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// `self` plus `d` (saturating: a far-off deadline stays far off).
    pub fn saturating_add(self, d: Duration) -> CoarseInstant {
        CoarseInstant(self.0.saturating_add(d))
    }

    pub fn elapsed(self) -> Duration {
        CoarseInstant::now().saturating_duration_since(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_forward_with_real_time() {
        let start = CoarseInstant::now();
        std::thread::sleep(Duration::from_millis(30));
        let later = CoarseInstant::now();
        assert!(later >= start);
        // A coarse tick is at most 10 ms (HZ=100), so 30 ms show at least 20.
        assert!(later.saturating_duration_since(start) >= Duration::from_millis(20));
        assert_eq!(start.saturating_duration_since(later), Duration::ZERO);
    }
}
