//! The loss audit: on a schedule, compare what producers sent with what
//! consumers processed, key by key, and name the stage where each missing
//! key was lost (design sections 1 and 6).
//!
//! * [`reconcile`]: pure counting of one window by key hash;
//! * [`source`]: record sources (jsonl, http, sql, rocketmq_trace);
//! * [`jsonl`]: the jsonl source's files, read through a chunk index by event time;
//! * [`store`]: the crash-safe store, SQLite or PostgreSQL (windows, findings, runs, trace, cursors);
//! * [`lease`]: which replica audits which flow, when replicas share a PostgreSQL store;
//! * [`trace`]: ingest of `RMQ_SYS_TRACE_TOPIC` with the flow's own cursors;
//! * [`diagnose`]: the stage of each missing key, asked of the brokers within a budget;
//! * [`window`]: which windows a run audits (pure);
//! * [`runner`]: one run and one window's audit end to end;
//! * [`schedule`]: each flow on its cron schedule, runs never overlapping;
//! * [`lookup`]: one key's full chain;
//! * [`retention`]: pruning the store, and its size;
//! * [`reuse`]: the trace records a flow's runs keep, so open windows are not re-read whole.

pub mod diagnose;
pub mod jsonl;
pub mod lease;
pub mod lookup;
pub mod model;
pub mod partition;
pub mod reconcile;
pub mod retention;
pub mod reuse;
pub mod runner;
pub mod schedule;
pub mod source;
pub mod store;
pub mod subscription;
pub mod trace;
pub mod window;

use crate::config::FlowConfig;
use crate::metrics::Exposition;
use model::Stage;

/// Counters exported as `mqaudit_messages_<name>_total`, from the store's
/// monotonic counters.
const MESSAGE_COUNTERS: &[(&str, &str)] = &[
    ("produced", "mqaudit_messages_produced_total"),
    ("consumed", "mqaudit_messages_consumed_total"),
    ("dead_lettered", "mqaudit_messages_dead_lettered_total"),
    ("duplicated", "mqaudit_messages_duplicated_total"),
    ("orphaned", "mqaudit_messages_orphaned_total"),
    ("resolved_late", "mqaudit_messages_resolved_late_total"),
    ("at_risk", "mqaudit_messages_at_risk_total"),
    ("not_subscribed", "mqaudit_messages_not_subscribed_total"),
    ("compacted", "mqaudit_messages_compacted_total"),
    ("rolled_back", "mqaudit_messages_rolled_back_total"),
    ("unauditable", "mqaudit_messages_unauditable_total"),
];

/// The `mqaudit_audit_*` and `mqaudit_messages_*` series of every flow,
/// computed from the store (so they survive restarts exactly, and counters
/// never go down).
///
/// # Errors
/// Store failures.
pub async fn exposition(
    store: &store::Store,
    flows: &[FlowConfig],
) -> Result<Exposition, store::StoreError> {
    let mut out = Exposition::new();
    for flow in flows {
        let totals = store.totals(&flow.name).await?;
        let name = flow.name.as_str();
        let labels = [("flow", name)];
        for result in ["success", "failure"] {
            let count = totals
                .runs
                .iter()
                .find(|(r, _)| r == result)
                .map_or(0, |(_, n)| *n);
            out.sample(
                "mqaudit_audit_runs_total",
                &[("flow", name), ("result", result)],
                count as f64,
            );
        }
        if let Some(ms) = totals.last_success_ms {
            out.sample(
                "mqaudit_audit_last_success_timestamp_seconds",
                &labels,
                ms as f64 / 1000.0,
            );
        }
        for (counter, family) in MESSAGE_COUNTERS {
            out.sample(family, &labels, totals.counter(counter, "") as f64);
        }
        for stage in Stage::LOSSES {
            let stage = stage.as_str();
            out.sample(
                "mqaudit_messages_lost_total",
                &[("flow", name), ("stage", stage)],
                totals.counter("lost", stage) as f64,
            );
            out.sample(
                "mqaudit_messages_lost",
                &[("flow", name), ("stage", stage)],
                totals.lost_now.get(stage).copied().unwrap_or(0) as f64,
            );
        }
        out.sample("mqaudit_messages_pending", &labels, totals.pending as f64);
    }
    Ok(out)
}

/// `mqaudit_audit_flow_owner` (1 per flow, labelled with the replica that
/// holds its lease) and `mqaudit_audit_flows_unowned`, from `owners` (what
/// [`lease::owners`] read from the store, so every replica reports alike).
pub fn owner_exposition(
    owners: &std::collections::BTreeMap<String, String>,
    flows: &[FlowConfig],
) -> Exposition {
    let mut out = Exposition::new();
    let mut unowned = 0;
    for flow in flows {
        match owners.get(&flow.name) {
            Some(replica) => out.sample(
                "mqaudit_audit_flow_owner",
                &[("flow", flow.name.as_str()), ("replica", replica.as_str())],
                1.0,
            ),
            None => unowned += 1,
        }
    }
    out.sample("mqaudit_audit_flows_unowned", &[], f64::from(unowned));
    out
}
