//! Which windows a run audits. Pure: the time and what the store holds are
//! passed in, so the selection is tested with paused time and no I/O.
//!
//! A window `[start, start + window)` is auditable once it has settled
//! (`now - settle >= end`). A run audits the windows still open (not
//! final) and every settled window after the latest one audited. A flow's
//! origin is fixed by its first attempted run, a deadline back, and kept in
//! the store: a new deployment audits the recent past with no blind spot,
//! and first runs that fail (a ledger not there yet, a broker down) do not
//! move it, so no early window is skipped. An explicit range
//! (`audit --once --from --to`) audits exactly the settled windows it
//! overlaps.

use std::collections::BTreeSet;
use std::time::Duration;

/// Most windows one run audits (a run after long downtime catches up over
/// several runs).
pub const MAX_WINDOWS_PER_RUN: usize = 10_000;

/// A flow's window settings.
#[derive(Debug, Clone, Copy)]
pub struct Windowing {
    /// Window length.
    pub window: Duration,
    /// How old a window must be before it is audited.
    pub settle: Duration,
    /// How long after its end a window's missing messages are lost.
    pub deadline: Duration,
}

/// What the store says about the flow's windows.
#[derive(Debug, Clone, Default)]
pub struct Audited {
    /// Starts of windows audited but not final.
    pub open: Vec<i64>,
    /// End of the latest window audited, if any.
    pub latest_end: Option<i64>,
    /// Where the flow's auditing began (its first attempted run's
    /// [`origin`]), used while no window is saved yet.
    pub origin: Option<i64>,
}

/// Where a flow first run at `now_ms` begins: a deadline before what has
/// settled, at a window boundary.
pub fn origin(w: Windowing, now_ms: i64) -> i64 {
    let len = millis(w.window).max(1);
    let settled = now_ms.saturating_sub(millis(w.settle));
    floor_to(settled.saturating_sub(millis(w.deadline)), len)
}

/// The starts of the windows to audit at `now_ms`, in order.
pub fn select(w: Windowing, now_ms: i64, range: Option<(i64, i64)>, audited: &Audited) -> Vec<i64> {
    let len = millis(w.window).max(1);
    let settled = now_ms.saturating_sub(millis(w.settle));
    let mut starts = BTreeSet::new();
    let from = match range {
        Some((from, _)) => floor_to(from, len),
        None => {
            starts.extend(audited.open.iter().copied());
            let resume = audited
                .latest_end
                .or(audited.origin)
                .unwrap_or_else(|| origin(w, now_ms));
            floor_to(resume, len)
        }
    };
    let to = range.map_or(i64::MAX, |(_, to)| to);
    let mut start = from;
    while start < to && start.saturating_add(len) <= settled && starts.len() < MAX_WINDOWS_PER_RUN {
        starts.insert(start);
        start = start.saturating_add(len);
    }
    starts.into_iter().collect()
}

/// The window start at or before `t`.
fn floor_to(t: i64, len: i64) -> i64 {
    t.div_euclid(len).saturating_mul(len)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::schedule::{Fired, fire_on_schedule};
    use crate::clock::Clock;
    use std::str::FromStr;

    const MIN: i64 = 60_000;

    fn w(window_min: u64, settle_min: u64, deadline_min: u64) -> Windowing {
        Windowing {
            window: Duration::from_secs(window_min * 60),
            settle: Duration::from_secs(settle_min * 60),
            deadline: Duration::from_secs(deadline_min * 60),
        }
    }

    #[test]
    fn a_first_run_reaches_back_a_deadline() {
        // 10:12, 5-minute windows settled 2 minutes, deadline 30 minutes:
        // 09:40 .. 10:05 (10:05 ends at 10:10 <= 10:10).
        let now = 612 * MIN;
        let starts = select(w(5, 2, 30), now, None, &Audited::default());
        assert_eq!(starts.first(), Some(&(580 * MIN)));
        assert_eq!(starts.last(), Some(&(605 * MIN)));
        assert_eq!(starts.len(), 6);
    }

    #[test]
    fn the_origin_of_a_first_run_that_failed_holds_until_a_window_is_saved() {
        // The first attempt at 10:12 fixed the origin at 09:40; a run at
        // 11:00 with nothing saved yet still begins there, not at 10:28.
        let w = w(5, 2, 30);
        let first = origin(w, 612 * MIN);
        assert_eq!(first, 580 * MIN);
        let audited = Audited {
            origin: Some(first),
            ..Audited::default()
        };
        let starts = select(w, 660 * MIN, None, &audited);
        assert_eq!(starts.first(), Some(&(580 * MIN)));
        assert_eq!(starts.last(), Some(&(650 * MIN)));
        // Once a window is saved the latest end decides.
        let audited = Audited {
            latest_end: Some(640 * MIN),
            origin: Some(first),
            ..Audited::default()
        };
        assert_eq!(
            select(w, 660 * MIN, None, &audited).first(),
            Some(&(640 * MIN))
        );
    }

    #[test]
    fn later_runs_continue_after_the_latest_and_recheck_open_windows() {
        let audited = Audited {
            open: vec![500 * MIN, 590 * MIN],
            latest_end: Some(600 * MIN),
            origin: None,
        };
        assert_eq!(
            select(w(5, 2, 30), 612 * MIN, None, &audited),
            [500 * MIN, 590 * MIN, 600 * MIN, 605 * MIN]
        );
        // Nothing settled yet after the latest: only the open ones.
        assert_eq!(
            select(w(5, 2, 30), 606 * MIN, None, &audited),
            [500 * MIN, 590 * MIN]
        );
    }

    #[test]
    fn a_range_audits_exactly_the_settled_windows_it_overlaps() {
        let audited = Audited {
            open: vec![1],
            latest_end: Some(0),
            origin: None,
        };
        assert_eq!(
            select(
                w(5, 2, 30),
                612 * MIN,
                Some((587 * MIN, 601 * MIN)),
                &audited
            ),
            [585 * MIN, 590 * MIN, 595 * MIN, 600 * MIN]
        );
        // Not yet settled: left for later.
        assert!(
            select(
                w(5, 2, 30),
                606 * MIN,
                Some((605 * MIN, 610 * MIN)),
                &audited
            )
            .is_empty()
        );
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let huge = Windowing {
            window: Duration::from_secs(u64::MAX),
            settle: Duration::from_secs(u64::MAX),
            deadline: Duration::from_secs(u64::MAX),
        };
        assert!(select(huge, 612 * MIN, None, &Audited::default()).is_empty());
    }

    /// Scheduled runs under paused time, each selecting its windows and
    /// "auditing" them: every window is audited exactly once, in order,
    /// with no gap, even across a run that took longer than the schedule.
    #[tokio::test(start_paused = true)]
    async fn scheduled_runs_cover_every_window_once() {
        let schedule = cron::Schedule::from_str("0 */5 * * * *").expect("cron");
        let start_ms = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:02:30Z")
            .expect("time")
            .timestamp_millis();
        let clock = Clock::following_tokio(start_ms);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let windowing = w(5, 2, 30);
        let audited = std::sync::Mutex::new(Audited::default());
        let seen = std::sync::Mutex::new(Vec::<i64>::new());
        let fired = fire_on_schedule(&schedule, &clock, &shutdown, |now_ms| {
            let starts = select(windowing, now_ms, None, &audited.lock().expect("lock"));
            let mut state = audited.lock().expect("lock");
            if let Some(last) = starts.last() {
                state.latest_end = Some(last + 5 * MIN);
            }
            seen.lock().expect("lock").extend(&starts);
            if clock.now_ms() > start_ms + 120 * MIN {
                shutdown.cancel();
            }
            // The fourth run is slow: 12 minutes.
            let slow = seen.lock().expect("lock").len() > 8 && now_ms % (20 * MIN) == 0;
            tokio::time::sleep(Duration::from_secs(if slow { 12 * 60 } else { 1 }))
        })
        .await;
        assert_eq!(fired, Fired::Cancelled);
        let seen = seen.into_inner().expect("lock");
        let first = (start_ms - 2 * MIN - 30 * MIN).div_euclid(5 * MIN) * 5 * MIN;
        let expected: Vec<i64> = (0..seen.len() as i64)
            .map(|i| first + i * 5 * MIN)
            .collect();
        assert_eq!(seen, expected, "every window once, in order");
        assert!(seen.len() > 20, "{} windows", seen.len());
    }
}
