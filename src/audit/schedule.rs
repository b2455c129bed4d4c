//! The audit schedule: run each flow on its cron expression, one run after
//! another (never overlapping), and publish the audit metrics after each.
//! The next fire is computed from the previous fire time, not from the clock
//! after a sleep, so a slow run delays the next one instead of skipping or
//! repeating a slot.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::runner::Auditor;
use super::store::Store;
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

/// Run `auditor` on its schedule until `shutdown` fires.
pub async fn run(
    auditor: Arc<Auditor>,
    flows: Vec<FlowConfig>,
    snapshot: Arc<SnapshotStore>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = Utc::now();
    loop {
        let Some(next) = next_fire(&auditor.flow().schedule, last) else {
            tracing::warn!(message = "Schedule has no future fire; audit stops.", flow = %auditor.flow().name);
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        // The run records its own failure; the next fire retries what was not saved.
        let _ = auditor
            .run(crate::collector::now_ms(), None, &|_, _| {})
            .await;
        publish(auditor.store(), &flows, &snapshot).await;
        last = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn next_fire_follows_the_seconds_field() {
        let schedule = cron::Schedule::from_str("0 */5 * * * *").expect("cron");
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
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
}
