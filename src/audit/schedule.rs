//! The audit schedule: run each flow on its cron expression, one run after
//! another (never overlapping), and publish the audit metrics after each.
//! The next fire is computed from the previous fire time, not from the clock
//! after a sleep, so a slow run delays the next one instead of skipping or
//! repeating a slot. Time comes from a [`Clock`]; shutdown is a
//! [`CancellationToken`] that also abandons a run in flight (the store is
//! crash-safe: an abandoned run is a killed one). With replicas sharing a
//! store, a fire runs only on the replica owning the flow's lease.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::lease::Ownership;
use super::runner::Auditor;
use super::store::Store;
use crate::clock::Clock;
use crate::config::FlowConfig;
use crate::metrics::SnapshotStore;

/// The first fire strictly after `after`.
pub fn next_fire(schedule: &cron::Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&after).next()
}

/// Recompute and publish every flow's audit series.
pub async fn publish(store: &Store, flows: &[FlowConfig], snapshot: &SnapshotStore) {
    match super::exposition(store, flows).await {
        Ok(exposition) => snapshot.publish("~audit", exposition),
        Err(error) => tracing::warn!(message = "Cannot read the audit store for metrics.", %error),
    }
}

/// Run `auditor` on its schedule until `shutdown` is cancelled, at each
/// fire only if this replica owns the flow (always, with the SQLite store).
pub async fn run(
    auditor: Arc<Auditor>,
    flows: Vec<FlowConfig>,
    ownership: Ownership,
    snapshot: Arc<SnapshotStore>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let schedule = auditor.flow().schedule.clone();
    // Failed runs by error kind, counted here as well as in the store: a
    // store that refuses writes (disk full) cannot record its own failure.
    let errors = Arc::new(std::sync::Mutex::new(RunErrors::default()));
    let fired = fire_on_schedule(&schedule, &clock, &shutdown, |now_ms| {
        let (auditor, flows, snapshot) = (auditor.clone(), flows.clone(), snapshot.clone());
        let (errors, ownership) = (errors.clone(), ownership.clone());
        async move {
            let flow = auditor.flow().name.clone();
            if !ownership.start(&flow) {
                tracing::debug!(message = "Another replica owns the flow; not auditing it.", flow = %flow);
                return;
            }
            // The next fire retries what was not saved.
            let outcome = auditor.run(now_ms, None, &|_, _| {}).await;
            ownership.done(&flow);
            if let Err(error) = outcome {
                let exposition = {
                    let mut errors = errors
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    errors.count(error.kind());
                    errors.exposition(&auditor.flow().name)
                };
                snapshot.publish(
                    &format!("~audit-errors-{}", auditor.flow().name),
                    exposition,
                );
            }
            publish(auditor.store(), &flows, &snapshot).await;
        }
    })
    .await;
    if fired == Fired::Exhausted {
        tracing::warn!(message = "Schedule has no future fire; audit stops.", flow = %auditor.flow().name);
    }
}

/// A flow's failed runs since the daemon started, by error kind.
#[derive(Debug, Default)]
struct RunErrors(std::collections::BTreeMap<&'static str, u64>);

impl RunErrors {
    fn count(&mut self, kind: &'static str) {
        *self.0.entry(kind).or_default() += 1;
    }

    /// `mqaudit_audit_run_errors_total`, one series per kind seen.
    fn exposition(&self, flow: &str) -> crate::metrics::Exposition {
        let mut out = crate::metrics::Exposition::new();
        for (kind, n) in &self.0 {
            out.sample(
                "mqaudit_audit_run_errors_total",
                &[("flow", flow), ("error_kind", kind)],
                *n as f64,
            );
        }
        out
    }
}

/// Why [`fire_on_schedule`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Shutdown was asked for (while waiting or during a run).
    Cancelled,
    /// The schedule has no future fire.
    Exhausted,
}

/// Call `job` with the clock's time at each fire of `schedule`, one call
/// at a time, until `shutdown` is cancelled or the schedule ends. A job
/// still running at shutdown is dropped at its next await.
pub async fn fire_on_schedule<F, Fut>(
    schedule: &cron::Schedule,
    clock: &Clock,
    shutdown: &CancellationToken,
    mut job: F,
) -> Fired
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut last = clock.now_utc();
    loop {
        let Some(next) = next_fire(schedule, last) else {
            return Fired::Exhausted;
        };
        tokio::select! {
            _ = clock.sleep_until(next) => {}
            _ = shutdown.cancelled() => return Fired::Cancelled,
        }
        tokio::select! {
            _ = job(clock.now_ms()) => {}
            _ = shutdown.cancelled() => return Fired::Cancelled,
        }
        last = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use std::sync::Mutex;
    use std::time::Duration;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn next_fire_follows_the_seconds_field() {
        let schedule = cron::Schedule::from_str("0 */5 * * * *").expect("cron");
        assert_eq!(
            next_fire(&schedule, at("2026-11-21T10:02:30Z")),
            Some(at("2026-11-21T10:05:00Z"))
        );
        // Strictly after: a fire time yields the following slot, never itself.
        assert_eq!(
            next_fire(&schedule, at("2026-11-21T10:05:00Z")),
            Some(at("2026-11-21T10:10:00Z"))
        );
        let every_second = cron::Schedule::from_str("* * * * * *").expect("cron");
        assert_eq!(
            next_fire(&every_second, at("2026-11-21T10:05:00Z")),
            Some(at("2026-11-21T10:05:01Z"))
        );
    }

    /// The fires seen under paused time, each job taking `run` virtual time.
    async fn fires(schedule: &str, from: &str, run: Duration, count: usize) -> Vec<String> {
        let schedule = cron::Schedule::from_str(schedule).expect("cron");
        let clock = Clock::following_tokio(at(from).timestamp_millis());
        let shutdown = CancellationToken::new();
        let seen = Mutex::new(Vec::new());
        let fired = fire_on_schedule(&schedule, &clock, &shutdown, |now_ms| {
            let text = DateTime::from_timestamp_millis(now_ms)
                .expect("time")
                .format("%H:%M:%S")
                .to_string();
            let mut seen_now = seen.lock().expect("lock");
            seen_now.push(text);
            if seen_now.len() == count {
                shutdown.cancel();
            }
            drop(seen_now);
            tokio::time::sleep(run)
        })
        .await;
        assert_eq!(fired, Fired::Cancelled);
        seen.into_inner().expect("lock")
    }

    #[tokio::test(start_paused = true)]
    async fn fires_on_the_slots_of_the_schedule() {
        assert_eq!(
            fires(
                "0 */5 * * * *",
                "2026-11-21T10:02:30Z",
                Duration::from_secs(1),
                3
            )
            .await,
            ["10:05:00", "10:10:00", "10:15:00"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_run_delays_the_next_slot_and_never_skips_or_repeats_one() {
        // Each run takes 7 minutes: the 10:10 slot fires late, at 10:12,
        // the 10:15 slot at 10:19, and so on — every slot once, in order.
        assert_eq!(
            fires(
                "0 */5 * * * *",
                "2026-11-21T10:02:30Z",
                Duration::from_secs(7 * 60),
                4
            )
            .await,
            ["10:05:00", "10:12:00", "10:19:00", "10:26:00"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_waiting_returns_without_running() {
        let schedule = cron::Schedule::from_str("0 0 * * * *").expect("cron");
        let clock = Clock::following_tokio(at("2026-11-21T10:02:30Z").timestamp_millis());
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            cancel.cancel();
        });
        let mut runs = 0;
        let fired = fire_on_schedule(&schedule, &clock, &shutdown, |_| {
            runs += 1;
            async {}
        })
        .await;
        assert_eq!((fired, runs), (Fired::Cancelled, 0));
        assert_eq!(
            clock.now_ms(),
            at("2026-11-21T10:03:30Z").timestamp_millis()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_a_run_in_flight() {
        let schedule = cron::Schedule::from_str("* * * * * *").expect("cron");
        let clock = Clock::following_tokio(at("2026-11-21T10:00:00Z").timestamp_millis());
        let shutdown = CancellationToken::new();
        let finished = std::sync::atomic::AtomicBool::new(false);
        let fired = fire_on_schedule(&schedule, &clock, &shutdown, |_| {
            let (shutdown, finished) = (shutdown.clone(), &finished);
            async move {
                shutdown.cancel();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                finished.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .await;
        assert_eq!(fired, Fired::Cancelled);
        assert!(!finished.load(std::sync::atomic::Ordering::SeqCst));
        // Abandoned at once, not after the hour.
        assert_eq!(
            clock.now_ms(),
            at("2026-11-21T10:00:01Z").timestamp_millis()
        );
    }
}
