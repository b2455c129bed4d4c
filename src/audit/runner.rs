//! One flow's audit runs: which windows to audit, and for each window fetch,
//! reconcile, diagnose, and save.
//!
//! Windows are aligned to `window_seconds` since the epoch. A run audits
//! every window that ended at least `settle_seconds` ago and is not yet
//! final: new windows since the last run (catching up after downtime; a
//! flow's first run starts a deadline back, so nothing recent is skipped), and
//! earlier windows whose deadline had not passed at their last audit (so
//! missing keys are re-checked until consumed, resolved late, or past the
//! deadline, lost). A window audited after its deadline is final.
//!
//! For a window `[start, end)`: produced records in the window are matched
//! against consumed records in `[start, min(now, end + deadline))`; orphans
//! are consumed records in the window whose key was not produced in
//! `[start - deadline, end)`. Runs of one flow never overlap (the caller
//! runs them one after another).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::json;

use super::diagnose::{Diagnoser, KeyFacts, Stage};
use super::reconcile::{ProducedBatch, Reconciler, key_hash};
use super::source::{Side, Source, SourceError};
use super::store::{Finding, Status, Store, StoreError, WindowCounts};
use super::trace::{self, IngestError};
use crate::admin::Admin;
use crate::config::{AuditConfig, FlowConfig, SourceConfig};

/// Windows one run may catch up at most.
const MAX_WINDOWS_PER_RUN: usize = 10_000;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A record source failed.
    #[error("{side} {error}")]
    Source {
        /// `produced` or `consumed`.
        side: &'static str,
        /// The error.
        error: SourceError,
    },
    /// Reading the trace topic failed.
    #[error("{0}")]
    Ingest(#[from] IngestError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// One window's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowSummary {
    /// Window start, epoch ms.
    pub start_ms: i64,
    /// Window end, epoch ms.
    pub end_ms: i64,
    /// Audited after its deadline: findings are final.
    pub final_: bool,
    /// Produced records.
    pub produced: u64,
    /// Consumed records matched against the window's keys.
    pub consumed: u64,
    /// Missing keys by stage, with their status (`pending`, `lost`, `dead_letter`).
    pub missing: BTreeMap<String, BTreeMap<String, u64>>,
    /// Keys found consumed since the previous audit of the window.
    pub resolved: u64,
    /// Duplicate deliveries.
    pub duplicated: u64,
    /// Orphaned deliveries.
    pub orphaned: u64,
}

/// A run's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    /// Flow.
    pub flow: String,
    /// Trace messages ingested this run.
    pub trace_messages: usize,
    /// Windows audited, in order.
    pub windows: Vec<WindowSummary>,
}

/// Audits one flow.
pub struct Auditor {
    flow: FlowConfig,
    store: Store,
    admin: Admin,
    namesrv: Vec<String>,
    produced: Source,
    consumed: Source,
    audit: AuditConfig,
}

impl Auditor {
    /// An auditor for `flow`; `namesrv` are its cluster's name servers.
    pub fn new(
        flow: FlowConfig,
        audit: AuditConfig,
        store: Store,
        admin: Admin,
        namesrv: Vec<String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Auditor {
        let env = &env;
        let produced = Source::new(flow.produced.clone(), Side::Produced, &flow.name, env);
        let consumed = Source::new(flow.consumed.clone(), Side::Consumed, &flow.name, env);
        Auditor {
            flow,
            store,
            admin,
            namesrv,
            produced,
            consumed,
            audit,
        }
    }

    /// The flow.
    pub fn flow(&self) -> &FlowConfig {
        &self.flow
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The admin client.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The cluster's name servers.
    pub fn namesrv(&self) -> &[String] {
        &self.namesrv
    }

    /// One run, recorded in the store. `range` (epoch ms) audits exactly the
    /// windows overlapping it instead of the scheduled selection. `progress`
    /// is told (done, total) after each window.
    ///
    /// # Errors
    /// The first failure; windows saved before it stay saved.
    pub async fn run(
        &self,
        now_ms: i64,
        range: Option<(i64, i64)>,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<RunSummary, AuditError> {
        let run = self.store.begin_run(&self.flow.name, now_ms).await?;
        let result = self.run_inner(now_ms, range, progress).await;
        let (error, windows) = match &result {
            Ok(summary) => (None, summary.windows.len() as i64),
            Err(e) => (Some(e.to_string()), 0),
        };
        self.store
            .finish_run(
                run,
                crate::collector::now_ms().max(now_ms),
                error.as_deref(),
                windows,
            )
            .await?;
        match &result {
            Ok(summary) => {
                let missing: u64 = summary
                    .windows
                    .iter()
                    .flat_map(|w| w.missing.values())
                    .flat_map(|m| m.values())
                    .sum();
                tracing::info!(
                    message = "Audit run done.",
                    flow = %self.flow.name,
                    windows = summary.windows.len(),
                    first_window_ms = summary.windows.first().map(|w| w.start_ms),
                    last_window_ms = summary.windows.last().map(|w| w.end_ms),
                    produced = summary.windows.iter().map(|w| w.produced).sum::<u64>(),
                    consumed = summary.windows.iter().map(|w| w.consumed).sum::<u64>(),
                    missing,
                );
            }
            Err(error) => {
                tracing::warn!(message = "Audit run failed; windows not saved will be retried.", flow = %self.flow.name, %error)
            }
        }
        result
    }

    /// Window starts this run should audit.
    async fn windows(
        &self,
        now_ms: i64,
        range: Option<(i64, i64)>,
    ) -> Result<Vec<i64>, StoreError> {
        let w = self.flow.window.as_millis() as i64;
        let settled = now_ms - self.flow.settle.as_millis() as i64;
        let mut starts = std::collections::BTreeSet::new();
        match range {
            Some((from, to)) => {
                let mut start = from.div_euclid(w) * w;
                while start < to && start + w <= settled && starts.len() < MAX_WINDOWS_PER_RUN {
                    starts.insert(start);
                    start += w;
                }
            }
            None => {
                for (start, _) in self.store.open_windows(&self.flow.name).await? {
                    starts.insert(start);
                }
                let first = match self.store.latest_window_end(&self.flow.name).await? {
                    Some(end) => end,
                    // First run: every window still within its deadline, so a
                    // new deployment audits the recent past with no blind spot.
                    None => (settled - self.flow.deadline.as_millis() as i64).div_euclid(w) * w,
                };
                let mut start = first;
                while start + w <= settled && starts.len() < MAX_WINDOWS_PER_RUN {
                    starts.insert(start);
                    start += w;
                }
            }
        }
        Ok(starts.into_iter().collect())
    }

    async fn run_inner(
        &self,
        now_ms: i64,
        range: Option<(i64, i64)>,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<RunSummary, AuditError> {
        let mut summary = RunSummary {
            flow: self.flow.name.clone(),
            ..RunSummary::default()
        };
        if self.produced.is_trace() || self.consumed.is_trace() {
            let by_msg_id = [&self.flow.produced, &self.flow.consumed]
                .iter()
                .any(|s| matches!(s, SourceConfig::RocketmqTrace { key } if key == "msg_id"));
            summary.trace_messages = trace::ingest(
                &self.admin,
                &self.store,
                &self.namesrv,
                &self.flow,
                by_msg_id,
                self.audit.trace_ingest_budget,
            )
            .await?;
        }
        let starts = self.windows(now_ms, range).await?;
        let mut diagnoser = Diagnoser::new(
            &self.admin,
            &self.namesrv,
            &self.flow.topic,
            &self.flow.group,
            self.audit.diagnose_budget,
        );
        for (i, start) in starts.iter().enumerate() {
            summary
                .windows
                .push(self.audit_window(*start, now_ms, &mut diagnoser).await?);
            progress(i + 1, starts.len());
        }
        Ok(summary)
    }

    async fn fetch(
        &self,
        side: Side,
        from: i64,
        to: i64,
    ) -> Result<Vec<super::source::Record>, AuditError> {
        let (source, name) = match side {
            Side::Produced => (&self.produced, "produced"),
            Side::Consumed => (&self.consumed, "consumed"),
        };
        source
            .fetch(&self.store, from, to)
            .await
            .map_err(|error| AuditError::Source { side: name, error })
    }

    async fn audit_window(
        &self,
        start: i64,
        now_ms: i64,
        diagnoser: &mut Diagnoser<'_>,
    ) -> Result<WindowSummary, AuditError> {
        let w = self.flow.window.as_millis() as i64;
        let deadline = self.flow.deadline.as_millis() as i64;
        let end = start + w;
        let is_final = now_ms >= end + deadline;

        let produced = self.fetch(Side::Produced, start, end).await?;
        let consumed = self
            .fetch(Side::Consumed, start, now_ms.min(end + deadline).max(end))
            .await?;
        let mut batch = ProducedBatch::new();
        for record in &produced {
            batch.push(&record.key, record.time_ms);
        }
        let mut reconciler = Reconciler::new(&batch);
        let produced_hashes: HashSet<u64> = produced.iter().map(|r| key_hash(&r.key)).collect();
        let mut matched = 0u64;
        for record in &consumed {
            // Consumption of keys produced in other windows belongs to those windows.
            if produced_hashes.contains(&key_hash(&record.key)) {
                reconciler.consume(&record.key);
                matched += 1;
            }
        }
        let result = reconciler.finish();

        // Orphans: consumed in this window, produced neither here nor within a deadline before.
        let in_window: Vec<&str> = consumed
            .iter()
            .filter(|r| r.time_ms < end)
            .map(|r| r.key.as_str())
            .collect();
        let mut orphans: BTreeMap<String, u32> = BTreeMap::new();
        if !in_window.is_empty() {
            let unknown: Vec<&str> = in_window
                .iter()
                .copied()
                .filter(|k| !produced_hashes.contains(&key_hash(k)))
                .collect();
            if !unknown.is_empty() {
                let earlier = self.fetch(Side::Produced, start - deadline, start).await?;
                let earlier: HashSet<u64> = earlier.iter().map(|r| key_hash(&r.key)).collect();
                for key in unknown
                    .into_iter()
                    .filter(|k| !earlier.contains(&key_hash(k)))
                {
                    *orphans.entry(key.to_string()).or_default() += 1;
                }
            }
        }

        let previous: HashMap<(String, String), Finding> = self
            .store
            .window_findings(&self.flow.name, start)
            .await?
            .into_iter()
            .map(|f| ((f.key.clone(), f.kind.clone()), f))
            .collect();
        let msg_ids: HashMap<&str, &super::source::Record> = produced
            .iter()
            .filter(|r| r.msg_id.is_some())
            .map(|r| (r.key.as_str(), r))
            .collect();
        let key_is_msg_id =
            matches!(&self.flow.produced, SourceConfig::RocketmqTrace { key } if key == "msg_id");

        let mut summary = WindowSummary {
            start_ms: start,
            end_ms: end,
            final_: is_final,
            produced: result.produced,
            consumed: matched,
            ..WindowSummary::default()
        };
        let mut findings = Vec::new();
        for missing in &result.missing {
            let earlier = previous.get(&(missing.key.clone(), "missing".to_string()));
            // A dead-lettered key stays dead-lettered: no need to ask again.
            let (stage, evidence) = match earlier {
                Some(f) if f.status == Status::DeadLetter.as_str() => {
                    (Stage::DeadLetter, f.evidence.clone().unwrap_or_default())
                }
                _ => {
                    let record = msg_ids.get(missing.key.as_str());
                    let offset_msg_id = if self.produced.is_trace() {
                        self.store
                            .trace_for_key(&self.flow.name, &missing.key)
                            .await?
                            .into_iter()
                            .find_map(|t| t.offset_msg_id)
                    } else {
                        None
                    };
                    let facts = KeyFacts {
                        key: &missing.key,
                        key_is_msg_id,
                        produced_at_ms: missing.produced_at,
                        msg_id: record.and_then(|r| r.msg_id.as_deref()),
                        offset_msg_id: offset_msg_id.as_deref(),
                    };
                    let diagnosis = diagnoser.diagnose(&facts, now_ms).await;
                    (diagnosis.stage, diagnosis.evidence)
                }
            };
            let (status, stage) = match (stage, is_final) {
                (Stage::DeadLetter, _) => (Status::DeadLetter, Stage::DeadLetter),
                // Past the deadline, a message the group has not reached was not consumed in time.
                (Stage::Pending, true) => (Status::Lost, Stage::Consume),
                (stage, true) => (Status::Lost, stage),
                (stage, false) => (Status::Pending, stage),
            };
            *summary
                .missing
                .entry(status.as_str().to_string())
                .or_default()
                .entry(stage.as_str().to_string())
                .or_default() += u64::from(missing.count);
            findings.push(Finding {
                flow: self.flow.name.clone(),
                window_start_ms: start,
                key: missing.key.clone(),
                kind: "missing".to_string(),
                count: i64::from(missing.count),
                produced_at_ms: Some(missing.produced_at),
                status: status.as_str().to_string(),
                stage: Some(stage.as_str().to_string()),
                evidence: Some(evidence),
                first_seen_ms: earlier.map_or(now_ms, |f| f.first_seen_ms),
                updated_ms: now_ms,
            });
        }
        summary.resolved = previous
            .values()
            .filter(|f| {
                f.kind == "missing"
                    && f.status == Status::Pending.as_str()
                    && !result.missing.iter().any(|m| m.key == f.key)
            })
            .count() as u64;
        for (key, count) in &result.duplicated {
            summary.duplicated += u64::from(*count);
            findings.push(final_finding(
                &self.flow.name,
                start,
                key,
                "duplicated",
                *count,
                now_ms,
                &previous,
            ));
        }
        for (key, count) in &orphans {
            summary.orphaned += u64::from(*count);
            findings.push(final_finding(
                &self.flow.name,
                start,
                key,
                "orphaned",
                *count,
                now_ms,
                &previous,
            ));
        }
        let counts = WindowCounts {
            produced: result.produced as i64,
            consumed: matched as i64,
        };
        self.store
            .save_window(
                &self.flow.name,
                (start, end),
                counts,
                is_final,
                &findings,
                now_ms,
            )
            .await?;
        Ok(summary)
    }
}

fn final_finding(
    flow: &str,
    start: i64,
    key: &str,
    kind: &str,
    count: u32,
    now_ms: i64,
    previous: &HashMap<(String, String), Finding>,
) -> Finding {
    let earlier = previous.get(&(key.to_string(), kind.to_string()));
    Finding {
        flow: flow.to_string(),
        window_start_ms: start,
        key: key.to_string(),
        kind: kind.to_string(),
        count: i64::from(count),
        produced_at_ms: None,
        status: "final".to_string(),
        stage: None,
        evidence: Some(json!({})),
        first_seen_ms: earlier.map_or(now_ms, |f| f.first_seen_ms),
        updated_ms: now_ms,
    }
}
