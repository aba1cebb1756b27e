//! The injected clock: where the engine, the snapshotter and the job loops learn the wall time.
//!
//! Sleeping is done with `tokio::time`, which is virtual under tokio's paused clock and under
//! turmoil. Wall time (for snapshot names, keep-rule grids and status) comes from a [`Clock`], so
//! that a simulation reads the same instants on every run of a seed. The production daemon's
//! clock reads the system time; it lives in `bin`, the only place allowed to.

use std::fmt;

use jiff::{SignedDuration, Timestamp};

/// A source of wall time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall time.
    fn now(&self) -> Timestamp;
}

/// Wall time that advances with tokio's clock from a fixed start: virtual (and deterministic)
/// under `tokio::time::pause` and under turmoil, real otherwise.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_wall: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start_wall` now and advances with tokio's time from here on.
    pub fn starting_at(start_wall: Timestamp) -> Self {
        Self {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.start);
        let elapsed = SignedDuration::try_from(elapsed).unwrap_or(SignedDuration::MAX);
        self.start_wall
            .checked_add(elapsed)
            .unwrap_or(Timestamp::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn advances_with_tokio_time_only() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = TokioClock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), start + SignedDuration::from_hours(1));
    }
}
