//! Retention of the audit store: every `[audit.retention] interval` the
//! rows it no longer needs are deleted in small batches (a short pause
//! between batches, so an audit run never waits long for the write lock),
//! and the store's size and rows per table are measured and published.
//! SQLite reuses the freed pages, so in steady state the file stops growing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::store::{Cutoffs, Pruned, Store, StoreError};
use crate::clock::Clock;
use crate::config::Retention;
use crate::metrics::{Exposition, SnapshotStore};

/// Rows deleted per table per batch.
pub const BATCH: i64 = 2_000;
/// Pause between batches.
const PAUSE: Duration = Duration::from_millis(20);

/// The cutoffs at `now_ms`.
pub fn cutoffs(retention: &Retention, now_ms: i64) -> Cutoffs {
    let before =
        |d: Duration| now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Cutoffs {
        trace_ms: before(retention.trace),
        windows_ms: before(retention.windows),
        findings_ms: before(retention.findings),
        runs_ms: before(retention.runs),
    }
}

/// Delete in batches until nothing is left to delete (or `shutdown`);
/// rows deleted per table.
///
/// # Errors
/// A database error; earlier batches stay deleted.
pub async fn prune_all(
    store: &Store,
    cutoffs: &Cutoffs,
    shutdown: &CancellationToken,
) -> Result<Pruned, StoreError> {
    let mut total = Pruned::default();
    loop {
        let batch = store.prune(cutoffs, BATCH).await?;
        total.trace += batch.trace;
        total.windows += batch.windows;
        total.findings += batch.findings;
        total.runs += batch.runs;
        let more = [batch.trace, batch.windows, batch.findings, batch.runs]
            .iter()
            .any(|n| *n >= BATCH as u64);
        if !more || shutdown.is_cancelled() {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Prune and measure every interval until `shutdown`, publishing the
/// store's families; a failure is logged and counted, and tried again next
/// interval.
pub async fn run(
    store: Store,
    retention: Retention,
    clock: Clock,
    snapshot: Arc<SnapshotStore>,
    shutdown: CancellationToken,
) {
    let mut pruned: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut failures = 0u64;
    loop {
        let now_ms = clock.now_ms();
        match prune_all(&store, &cutoffs(&retention, now_ms), &shutdown).await {
            Ok(batch) => {
                for (table, n) in [
                    ("trace", batch.trace),
                    ("windows", batch.windows),
                    ("findings", batch.findings),
                    ("runs", batch.runs),
                ] {
                    *pruned.entry(table).or_default() += n;
                }
                if batch.total() > 0 {
                    tracing::info!(
                        message = "Audit store pruned.",
                        trace = batch.trace,
                        windows = batch.windows,
                        findings = batch.findings,
                        runs = batch.runs
                    );
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(message = "Cannot prune the audit store; trying again next interval.", %error);
            }
        }
        match store.stats().await {
            Ok(stats) => {
                let mut out = Exposition::new();
                out.sample("mqaudit_audit_store_bytes", &[], stats.bytes as f64);
                for (table, rows) in &stats.rows {
                    out.sample(
                        "mqaudit_audit_store_rows",
                        &[("table", table)],
                        *rows as f64,
                    );
                }
                for (table, n) in &pruned {
                    out.sample(
                        "mqaudit_audit_pruned_rows_total",
                        &[("table", table)],
                        *n as f64,
                    );
                }
                out.sample("mqaudit_audit_prune_failures_total", &[], failures as f64);
                snapshot.publish("~audit-store", out);
            }
            Err(error) => tracing::warn!(message = "Cannot measure the audit store.", %error),
        }
        tokio::select! {
            _ = tokio::time::sleep(retention.interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
