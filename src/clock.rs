//! Time as the cache sees it, injected so that tests can move it by hand.
//!
//! [`Clock::now`] is the time elapsed since the clock was made. The system clock follows
//! `Instant`; a manual clock only moves when told to, so freshness tests run without
//! sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A source of time.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Real time.
    System(Instant),
    /// Time that moves only with [`ManualClock::advance`].
    Manual(ManualClock),
}

impl Clock {
    /// The real clock, starting now.
    pub fn system() -> Clock {
        Clock::System(Instant::now())
    }

    /// Time elapsed since the clock started.
    pub fn now(&self) -> Duration {
        match self {
            Clock::System(start) => start.elapsed(),
            Clock::Manual(manual) => manual.now(),
        }
    }
}

/// A clock for tests: starts at zero, moves by [`ManualClock::advance`].
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// The current time.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    /// A [`Clock`] reading this manual clock.
    pub fn clock(&self) -> Clock {
        Clock::Manual(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        assert_eq!(clock.now(), Duration::ZERO);
        manual.advance(Duration::from_secs(61));
        assert_eq!(clock.now(), Duration::from_secs(61));
    }

    #[test]
    fn system_clock_moves() {
        let clock = Clock::system();
        let before = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now() > before);
    }
}
