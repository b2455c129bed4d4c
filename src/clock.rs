//! Wall-clock time, passed in rather than read from a global, so that
//! scheduling and window selection can be tested with paused time and no
//! network. [`Clock::system`] is the real clock; [`Clock::following_tokio`]
//! starts at a given instant and moves only as tokio's (pausable) time does.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of wall-clock time, in epoch milliseconds. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Clock {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    System,
    /// `start_ms` at `start`, then tokio's elapsed time.
    Tokio {
        start_ms: i64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { kind: Kind::System }
    }

    /// A clock that reads `start_ms` now and then advances with tokio's
    /// time: under `tokio::time::pause` it moves only when tokio's time is
    /// advanced (or auto-advances past a sleep). Must be made inside a tokio
    /// runtime.
    pub fn following_tokio(start_ms: i64) -> Clock {
        Clock {
            kind: Kind::Tokio {
                start_ms,
                start: tokio::time::Instant::now(),
            },
        }
    }

    /// Now, in epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &self.kind {
            Kind::System => system_now_ms(),
            Kind::Tokio { start_ms, start } => start_ms
                .saturating_add(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Now, as a UTC date-time.
    pub fn now_utc(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_default()
    }

    /// Sleep until the wall-clock time `at` (at once when it has passed).
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        let wait = at.timestamp_millis().saturating_sub(self.now_ms()).max(0);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_only_with_tokio_time() {
        let clock = Clock::following_tokio(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now_ms(), 1_001_500);
        let at = DateTime::from_timestamp_millis(1_010_000).expect("time");
        clock.sleep_until(at).await;
        assert_eq!(clock.now_ms(), 1_010_000);
        // A time already passed does not wait.
        clock.sleep_until(at).await;
        assert_eq!(clock.now_ms(), 1_010_000);
    }

    #[test]
    fn the_system_clock_is_after_2025() {
        assert!(Clock::system().now_ms() > 1_735_689_600_000);
    }
}
