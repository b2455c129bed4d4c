//! One flow's audit runs: which windows to audit, and for each window fetch,
//! reconcile, diagnose, and save.
//!
//! Windows are aligned to `window_seconds` since the epoch. A run audits
//! every window that ended at least `settle_seconds` ago and is not yet
//! final: new windows since the last run (catching up after downtime; a
//! flow's audit begins a deadline before its first attempted run, an origin
//! kept in the store, so nothing recent is skipped even when the first runs
//! fail), and earlier windows still open.
//!
//! For a window `[start, end)`: its produced messages are matched against
//! the group's consumptions from `start - clock_skew` up to now (at most the
//! re-check horizon past the deadline). A missing message is `pending` until
//! the deadline (`end + deadline`) has passed — and, for trace sources,
//! until every trace queue was read past it — then `lost` at its stage, or
//! `dead_letter`. Lost findings are re-checked until the horizon; a later
//! consumption marks them `resolved_late`. A window is final once past the
//! horizon, or past the deadline with nothing left to re-check.
//!
//! Runs of one flow never overlap (the caller runs them one after another).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::json;

use super::diagnose::{ConsumerEvidence, Diagnoser, Diagnosis, Verdict, send_attrs};
use super::model::{Consumed, FindingKind, Produced, Stage, Status, TxState};
use super::partition::WindowSpill;
use super::reconcile::Reconciler;
use super::reuse::{KeptProduced, RecordCache};
use super::source::{Source, SourceError};
use super::store::{Finding, Store, StoreError, WindowCounts};
use super::subscription::Subscription;
use super::trace::{self, IngestError};
use super::window;
use crate::admin::Cluster;
use crate::clock::Clock;
use crate::config::{AuditConfig, FlowConfig, SourceConfig, TraceKey};

/// A minute, in ms.
const MINUTE_MS: i64 = 60_000;
/// The learned-facts name of the group's subscription.
const LEARNED_SUBSCRIPTION: &str = "subscription";
/// The learned fact holding a flow's origin (ms since the epoch).
const LEARNED_ORIGIN: &str = "window_origin";
/// The kind of the error that stops a timeline read past the reuse budget.
const OUTGROWN: &str = "reuse";

/// How a window's records were had.
#[derive(Debug, Clone, Copy, Default)]
struct Read {
    /// Time spent reading them (and spilling or settling them), ms.
    ms: u64,
    /// Records replayed from earlier runs' reads.
    reused: u64,
}

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
    /// The group consumes in a way the audit cannot reconcile.
    #[error(
        "group {group} consumes {topic} in BROADCASTING mode: every client instance receives every message and keeps its offsets locally, so one flow cannot say which instance lost what; audit refused (audit a clustering group, or one flow per instance with its own consumer ledger)"
    )]
    Broadcast {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
    },
    /// A window past the memory budget could not be spilled to disk.
    #[error("spilling a window's records under {dir}: {error}")]
    Spill {
        /// The spill directory's parent.
        dir: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

impl AuditError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditError::Source { error, .. } => error.kind(),
            AuditError::Store(super::store::StoreError::LeaseLost { .. })
            | AuditError::Ingest(IngestError::Store(super::store::StoreError::LeaseLost {
                ..
            })) => "lease",
            AuditError::Ingest(_) => "trace",
            AuditError::Store(_) => "store",
            AuditError::Broadcast { .. } => "broadcast",
            AuditError::Spill { .. } => "spill",
        }
    }
}

/// One window's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowSummary {
    /// Window start, epoch ms.
    pub start_ms: i64,
    /// Window end, epoch ms.
    pub end_ms: i64,
    /// Nothing left to re-check: findings are final.
    pub final_: bool,
    /// Its deadline has passed (and the trace was read past it).
    pub past_deadline: bool,
    /// Messages the group should have consumed.
    pub produced: u64,
    /// Consumptions matched to them.
    pub consumed: u64,
    /// Missing messages by status, then stage.
    pub missing: BTreeMap<String, BTreeMap<String, u64>>,
    /// Missing before, consumed since the previous audit of the window.
    pub resolved: u64,
    /// Duplicate deliveries.
    pub duplicated: u64,
    /// Orphaned deliveries.
    pub orphaned: u64,
    /// Messages the group's subscription does not select.
    pub not_subscribed: u64,
    /// Acknowledged messages a compacted topic dropped by design.
    pub compacted: u64,
    /// Stored but not `SEND_OK` (lost on a failover or power loss).
    pub at_risk: u64,
    /// Transactional messages rolled back (never produced).
    pub rolled_back: u64,
    /// Records with neither key nor message id.
    pub unauditable: u64,
}

/// A run's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    /// Flow.
    pub flow: String,
    /// Trace messages ingested this run.
    pub trace_messages: usize,
    /// Time spent ingesting them, ms.
    pub ingest_ms: u64,
    /// Of that, waiting for the trace topic's pulls (decoding included), ms.
    pub ingest_pull_ms: u64,
    /// Of that, storing what they read, ms.
    pub ingest_store_ms: u64,
    /// The flow's trace rows the ingest stored.
    pub trace_rows: usize,
    /// Consumption halves it met or left waiting in the store.
    pub trace_halves: usize,
    /// Store transactions the ingest took.
    pub ingest_commits: usize,
    /// Time spent reading the windows' records from their sources (and
    /// spilling or settling them), ms; the rest of a run is reconciling,
    /// diagnosing and saving.
    pub read_ms: u64,
    /// Records earlier runs read, replayed instead of read again
    /// ([`super::reuse`]; a window's slice of the consumptions this run read
    /// once for all windows is not counted).
    pub reused_records: u64,
    /// The subscription applied, and where it came from.
    pub subscription: Option<String>,
    /// Windows audited, in order.
    pub windows: Vec<WindowSummary>,
}

/// Audits one flow.
pub struct Auditor {
    flow: FlowConfig,
    store: Store,
    cluster: Cluster,
    clock: Clock,
    produced: Source,
    consumed: Source,
    audit: AuditConfig,
    /// What earlier runs read of the trace, kept for the open windows.
    reuse: std::sync::Mutex<RecordCache>,
}

/// Where the subscription applied in a run came from.
#[derive(Debug, Clone)]
pub struct AppliedSubscription {
    /// The rule.
    pub subscription: Subscription,
    /// `config`, `broker` (learned now) or `learned` (remembered, consumer offline).
    pub origin: &'static str,
}

impl std::fmt::Display for AppliedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (from {})", self.subscription, self.origin)
    }
}

/// The window's time bounds.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    start: i64,
    end: i64,
    deadline_at: i64,
    horizon_at: i64,
}

/// One window under audit: what every phase of [`Auditor::audit_window`] reads.
struct Window<'w> {
    bounds: Bounds,
    now_ms: i64,
    past_deadline: bool,
    subscription: Option<&'w AppliedSubscription>,
    messages: &'w [Produced],
    /// The window's findings of the previous run, by (id, kind).
    previous: &'w HashMap<(String, FindingKind), Finding>,
}

/// The diagnoses of a window's missing messages.
#[derive(Default)]
struct Verdicts {
    /// Message index → its diagnosis.
    by_message: HashMap<usize, Diagnosis>,
    /// A batch member's stored id was learnt: consumptions may match now.
    learned_alias: bool,
}

impl Auditor {
    /// An auditor for `flow`, on its `cluster`, telling time by `clock`.
    pub fn new(
        flow: FlowConfig,
        audit: AuditConfig,
        store: Store,
        cluster: Cluster,
        clock: Clock,
    ) -> Auditor {
        let produced = Source::new(flow.produced.clone(), &flow.name);
        let consumed = Source::new(flow.consumed.clone(), &flow.name);
        let reuse = std::sync::Mutex::new(RecordCache::new(audit.reuse_budget));
        Auditor {
            reuse,
            flow,
            store,
            cluster,
            clock,
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

    /// The flow's cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The clock its runs are timed by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The producer-side source.
    pub fn produced_source(&self) -> &Source {
        &self.produced
    }

    /// The consumer-side source.
    pub fn consumed_source(&self) -> &Source {
        &self.consumed
    }

    /// The trace topic the flow reads, if a side is a trace source.
    pub fn trace_topic(&self) -> Option<&str> {
        [&self.flow.produced, &self.flow.consumed]
            .into_iter()
            .find_map(|s| match s {
                SourceConfig::RocketmqTrace { topic, .. } => Some(topic.as_str()),
                _ => None,
            })
    }

    /// The kept records (a poisoned lock only means a panic mid-update:
    /// nothing kept is trusted then).
    fn reuse(&self) -> std::sync::MutexGuard<'_, RecordCache> {
        self.reuse.lock().unwrap_or_else(|poisoned| {
            let mut cache = poisoned.into_inner();
            cache.clear();
            cache
        })
    }

    /// Whether the run keeps records for the next: only trace sides are kept.
    fn reuses(&self) -> bool {
        self.trace_topic().is_some() && self.reuse().enabled()
    }

    fn reference_by_msg_id(&self) -> bool {
        matches!(
            &self.flow.produced,
            SourceConfig::RocketmqTrace {
                key: TraceKey::MsgId,
                ..
            }
        )
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
        let started = std::time::Instant::now();
        // A store that refuses writes (disk full, read-only) must be said
        // even though it cannot record the failed run itself.
        let run = match self.store.begin_run(&self.flow.name, now_ms).await {
            Ok(run) => run,
            Err(error) => {
                tracing::warn!(message = "Audit run not started: the audit store refused a write.", flow = %self.flow.name, %error);
                return Err(error.into());
            }
        };
        let result = self.run_inner(now_ms, range, progress).await;
        if result.is_err() {
            // What a failed run read or ingested is not known whole.
            self.reuse().clear();
        }
        let (error, windows) = match &result {
            Ok(summary) => (None, summary.windows.len() as i64),
            Err(e) => (Some(e.to_string()), 0),
        };
        // The run ends what it took after its start: `now_ms` is the run's
        // time (logical under test), the elapsed time is real.
        let finished_ms =
            now_ms.saturating_add(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        if let Err(store_error) = self
            .store
            .finish_run(run, finished_ms, error.as_deref(), windows)
            .await
        {
            tracing::warn!(message = "Audit run not recorded: the audit store refused a write.", flow = %self.flow.name, error = %store_error, run_error = error.as_deref());
            return Err(store_error.into());
        }
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
                    subscription = summary.subscription.as_deref(),
                    trace_messages = summary.trace_messages,
                    ingest_ms = summary.ingest_ms,
                    ingest_pull_ms = summary.ingest_pull_ms,
                    ingest_store_ms = summary.ingest_store_ms,
                    trace_rows = summary.trace_rows,
                    trace_halves = summary.trace_halves,
                    ingest_commits = summary.ingest_commits,
                    read_ms = summary.read_ms,
                    reused_records = summary.reused_records,
                    elapsed_ms = elapsed_ms(started),
                );
            }
            Err(error) => {
                tracing::warn!(message = "Audit run failed; windows not saved will be retried.", flow = %self.flow.name, error_kind = error.kind(), %error, elapsed_ms = elapsed_ms(started))
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
        let windowing = window::Windowing {
            window: self.flow.window,
            settle: self.flow.settle,
            deadline: self.flow.deadline,
        };
        // A window older than the windows' retention may have been pruned
        // with what it counted: auditing it again would count it twice.
        let kept_from = now_ms.saturating_sub(
            i64::try_from(self.audit.retention.windows.as_millis()).unwrap_or(i64::MAX),
        );
        let window_ms = i64::try_from(self.flow.window.as_millis()).unwrap_or(i64::MAX);
        let audited = match range {
            Some(_) => window::Audited::default(),
            None => {
                let latest_end = self.store.latest_window_end(&self.flow.name).await?;
                let origin = match latest_end {
                    Some(_) => None,
                    None => Some(self.origin(windowing, now_ms).await?),
                };
                window::Audited {
                    open: self
                        .store
                        .open_windows(&self.flow.name)
                        .await?
                        .into_iter()
                        .map(|(start, _)| start)
                        .collect(),
                    // Never resume before what retention keeps: those
                    // windows would all be filtered out below, and a run
                    // capped at MAX_WINDOWS_PER_RUN would make no progress.
                    latest_end: latest_end.map(|end| end.max(kept_from.saturating_sub(window_ms))),
                    origin: origin.map(|o| o.max(kept_from.saturating_sub(window_ms))),
                }
            }
        };
        Ok(window::select(windowing, now_ms, range, &audited)
            .into_iter()
            .filter(|start| start.saturating_add(window_ms) >= kept_from)
            .collect())
    }

    /// Where the flow's auditing began: fixed by its first attempted run and
    /// kept in the store, so that first runs which fail (a ledger not there
    /// yet, a broker down) do not move it and no early window is skipped.
    async fn origin(&self, windowing: window::Windowing, now_ms: i64) -> Result<i64, StoreError> {
        if let Some((text, _)) = self.store.learned(&self.flow.name, LEARNED_ORIGIN).await?
            && let Ok(origin) = text.parse::<i64>()
        {
            return Ok(origin);
        }
        let origin = window::origin(windowing, now_ms);
        self.store
            .learn(&self.flow.name, LEARNED_ORIGIN, &origin.to_string(), now_ms)
            .await?;
        Ok(origin)
    }

    /// The subscription to apply: configured, else the online consumers'
    /// (remembered for when they are offline). Refuses broadcast groups.
    pub async fn subscription(
        &self,
        now_ms: i64,
    ) -> Result<Option<AppliedSubscription>, AuditError> {
        let connection = self.consumer_connection().await;
        if let Some(connection) = &connection
            && connection.is_broadcast()
        {
            return Err(AuditError::Broadcast {
                group: self.flow.group.clone(),
                topic: self.flow.topic.clone(),
            });
        }
        if let Some(subscription) = &self.flow.subscription {
            return Ok(Some(AppliedSubscription {
                subscription: subscription.clone(),
                origin: "config",
            }));
        }
        if let Some(data) = connection
            .as_ref()
            .and_then(|c| c.subscription_table.get(&self.flow.topic))
        {
            let text =
                json!({"type": data.expression_type, "expression": data.sub_string}).to_string();
            self.store
                .learn(&self.flow.name, LEARNED_SUBSCRIPTION, &text, now_ms)
                .await?;
            if let Ok(subscription) =
                Subscription::from_broker(data.expression_type.as_deref(), &data.sub_string)
            {
                return Ok(Some(AppliedSubscription {
                    subscription,
                    origin: "broker",
                }));
            }
        }
        if let Some((text, _)) = self
            .store
            .learned(&self.flow.name, LEARNED_SUBSCRIPTION)
            .await?
        {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Ok(subscription) = Subscription::from_broker(
                value["type"].as_str(),
                value["expression"].as_str().unwrap_or("*"),
            ) {
                return Ok(Some(AppliedSubscription {
                    subscription,
                    origin: "learned",
                }));
            }
        }
        Ok(None)
    }

    /// The group's online consumers, asked of the topic's masters (`None`
    /// when offline or unreachable: the audit then works without).
    async fn consumer_connection(&self) -> Option<crate::admin::ConsumerConnection> {
        let route = self.cluster.topic_route(&self.flow.topic).await.ok()?;
        for data in &route.broker_datas {
            let Some(master) = data.master_addr() else {
                continue;
            };
            if let Ok(Some(connection)) = self
                .cluster
                .admin()
                .consumer_connections(master, &self.flow.group)
                .await
            {
                return Some(connection);
            }
        }
        None
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
        let starts = self.windows(now_ms, range).await?;
        if let Some(topic) = self.trace_topic() {
            // A new flow's trace starts where its first window needs it:
            // consumptions of that window may come a clock skew earlier.
            let since = starts.first().copied().unwrap_or(now_ms)
                - self.flow.clock_skew.as_millis() as i64
                - MINUTE_MS;
            let ingest_started = std::time::Instant::now();
            let positions = if self.reuses() {
                let positions = self
                    .store
                    .cursor_positions(&self.flow.name, trace::SOURCE)
                    .await?;
                self.reuse().check_positions(&positions);
                Some(positions)
            } else {
                None
            };
            let ingested = trace::ingest(
                &self.cluster,
                &self.store,
                &self.flow,
                &trace::Ingest {
                    topic,
                    budget: self.audit.trace_ingest_budget,
                    concurrency: self.audit.trace_concurrency,
                    since_ms: since,
                    now_ms,
                },
            )
            .await?;
            summary.trace_messages = ingested.messages;
            summary.ingest_pull_ms = ingested.pull_ms;
            summary.ingest_store_ms = ingested.store_ms;
            summary.trace_rows = ingested.rows;
            summary.trace_halves = ingested.halves;
            summary.ingest_commits = ingested.commits;
            if let Some(positions) = positions {
                self.reuse()
                    .ingested(positions, &ingested.moved, ingested.written);
            }
            summary.ingest_ms = elapsed_ms(ingest_started);
        }
        if self.reuses() {
            self.reuse().audit_only(&starts);
            let read_started = std::time::Instant::now();
            self.read_timeline(&starts, now_ms).await?;
            summary.read_ms += elapsed_ms(read_started);
        }
        let subscription = self.subscription(now_ms).await?;
        summary.subscription = subscription.as_ref().map(ToString::to_string);
        let consumer = if self.consumed.is_trace() {
            ConsumerEvidence::Trace
        } else {
            ConsumerEvidence::Ledger
        };
        let mut diagnoser = Diagnoser::new(
            &self.cluster,
            &self.flow.topic,
            &self.flow.group,
            subscription.as_ref().map(|s| s.subscription.clone()),
            consumer,
            self.audit.diagnose_budget,
        );
        for (i, start) in starts.iter().enumerate() {
            let (window, read) = self
                .audit_window(*start, now_ms, subscription.as_ref(), &mut diagnoser)
                .await?;
            summary.windows.push(window);
            summary.read_ms += read.ms;
            summary.reused_records += read.reused;
            progress(i + 1, starts.len());
        }
        if self.reuses() {
            // A window final now is not audited again: what it kept goes.
            let open: Vec<i64> = summary
                .windows
                .iter()
                .filter(|w| !w.final_)
                .map(|w| w.start_ms)
                .collect();
            self.reuse().audit_only(&open);
        }
        Ok(summary)
    }

    async fn fetch_produced(
        &self,
        from: i64,
        to: i64,
    ) -> Result<super::source::ProducedFetch, AuditError> {
        self.produced
            .fetch_produced(&self.store, &self.flow.topic, from, to)
            .await
            .map_err(|error| AuditError::Source {
                side: "produced",
                error,
            })
    }

    /// Read the consumptions this run's windows need and the kept timeline
    /// lacks (once for all windows), into the timeline.
    async fn read_timeline(&self, starts: &[i64], now_ms: i64) -> Result<(), AuditError> {
        if !self.consumed.is_trace() || starts.is_empty() {
            return Ok(());
        }
        let from = starts
            .iter()
            .map(|s| self.consume_range(self.bounds(*s), now_ms).0);
        let to = starts
            .iter()
            .map(|s| self.consume_range(self.bounds(*s), now_ms).1);
        let (Some(from), Some(to)) = (from.min(), to.max()) else {
            return Ok(());
        };
        let Some(gap) = self.reuse().gap(from, to) else {
            return Ok(());
        };
        let budget = self.audit.reuse_budget;
        let (mut records, mut bytes) = (Vec::new(), 0);
        let read = self
            .consumed
            .stream_consumed(
                &self.store,
                (&self.flow.topic, &self.flow.group),
                (gap.from_ms, gap.to_ms),
                &mut |c| {
                    bytes += super::partition::consumed_bytes(&c);
                    if bytes > budget {
                        // Past the budget: stop reading; the windows read
                        // their own ranges.
                        return Err(SourceError::Failed {
                            source_kind: OUTGROWN,
                            detail: String::new(),
                        });
                    }
                    records.push(c);
                    Ok(())
                },
            )
            .await;
        let kept = match read {
            Ok(_) => self.reuse().fill(gap, records),
            Err(SourceError::Failed {
                source_kind: OUTGROWN,
                ..
            }) => {
                self.reuse().outgrown();
                false
            }
            Err(error) => {
                return Err(AuditError::Source {
                    side: "consumed",
                    error,
                });
            }
        };
        if !kept {
            tracing::info!(flow = %self.flow.name, budget, "Trace consumptions of the open windows outgrew the reuse budget: each window reads its own for a while.");
        }
        Ok(())
    }

    /// The consumptions a window is matched against: from its start minus
    /// the clock skew to now, at most its re-check horizon, at least its end.
    fn consume_range(&self, bounds: Bounds, now_ms: i64) -> (i64, i64) {
        let skew = self.flow.clock_skew.as_millis() as i64;
        (
            bounds.start - skew,
            now_ms.min(bounds.horizon_at).max(bounds.end),
        )
    }

    fn bounds(&self, start: i64) -> Bounds {
        let end = start + self.flow.window.as_millis() as i64;
        let deadline_at = end + self.flow.deadline.as_millis() as i64;
        Bounds {
            start,
            end,
            deadline_at,
            horizon_at: deadline_at + self.flow.recheck_horizon.as_millis() as i64,
        }
    }

    /// The deadline has passed, and every trace queue was read past it.
    async fn past_deadline(&self, bounds: Bounds, now_ms: i64) -> Result<bool, StoreError> {
        if now_ms < bounds.deadline_at {
            return Ok(false);
        }
        if self.trace_topic().is_none() {
            return Ok(true);
        }
        Ok(self
            .store
            .caught_up(&self.flow.name, trace::SOURCE)
            .await?
            .is_some_and(|t| t >= bounds.deadline_at))
    }

    /// The finding identity and reference of a message.
    fn identity(&self, message: &Produced) -> (String, String) {
        let reference = if self.reference_by_msg_id() {
            message.msg_id.as_deref().or(message.reference())
        } else {
            message.reference()
        }
        .unwrap_or("")
        .to_string();
        let id = message
            .msg_id
            .clone()
            .unwrap_or_else(|| format!("key:{reference}"));
        (id, reference)
    }

    async fn audit_window(
        &self,
        start: i64,
        now_ms: i64,
        subscription: Option<&AppliedSubscription>,
        diagnoser: &mut Diagnoser<'_>,
    ) -> Result<(WindowSummary, Read), AuditError> {
        let bounds = self.bounds(start);
        let past_deadline = self.past_deadline(bounds, now_ms).await?;
        let mut summary = WindowSummary {
            start_ms: bounds.start,
            end_ms: bounds.end,
            past_deadline,
            ..WindowSummary::default()
        };
        let read_started = std::time::Instant::now();
        let mut read = Read::default();
        let (messages, consumed, settled) = self
            .window_records(bounds, now_ms, &mut summary, &mut read.reused)
            .await?;
        read.ms = elapsed_ms(read_started);
        let mut reconciler = Reconciler::new(&messages);
        for (i, m) in messages.iter().enumerate().filter(|(_, m)| m.batch) {
            if let Some(id) = &m.msg_id
                && let Some((stored, keys)) = self.store.alias(&self.flow.name, id).await?
            {
                reconciler.add_alias(i, &stored, &keys);
            }
        }
        let mut unmatched: Vec<&Consumed> = consumed
            .iter()
            .filter(|record| reconciler.consume(record).is_none())
            .collect();
        let previous: HashMap<(String, FindingKind), Finding> = self
            .store
            .window_findings(&self.flow.name, bounds.start)
            .await?
            .into_iter()
            .map(|f| ((f.id.clone(), f.kind), f))
            .collect();
        let window = Window {
            bounds,
            now_ms,
            past_deadline,
            subscription,
            messages: &messages,
            previous: &previous,
        };
        let verdicts = self
            .diagnose_missing(&window, &mut reconciler, diagnoser)
            .await?;
        if verdicts.learned_alias {
            unmatched.retain(|record| reconciler.rematch(record).is_none());
        }
        let outcome = reconciler.finish();
        let (mut findings, not_the_groups) = self.missing_findings(
            &window,
            &outcome.missing,
            &verdicts.by_message,
            &mut summary,
        );
        summary.produced = (messages.len() as u64).saturating_sub(not_the_groups) + settled;
        summary.consumed = outcome.matched + settled;
        summary.resolved = previous
            .values()
            .filter(|f| f.is_open() && !findings.iter().any(|n| n.id == f.id))
            .count() as u64;
        for (i, extra) in &outcome.duplicated {
            summary.duplicated += u64::from(*extra);
            findings.push(self.duplicate_finding(&window, &messages[*i], *extra));
        }
        for (reference, (msg_id, keys, count)) in
            self.orphans(bounds, &unmatched, now_ms, diagnoser).await?
        {
            summary.orphaned += u64::from(count);
            let id = msg_id.clone().unwrap_or_else(|| format!("key:{reference}"));
            findings.push(final_finding(
                &self.flow.name,
                bounds.start,
                (id, reference, msg_id, keys),
                FindingKind::Orphaned,
                count,
                now_ms,
            ));
        }
        dedupe_ids(&mut findings);
        self.save(&window, &mut summary, &findings).await?;
        Ok((summary, read))
    }

    /// The window's produced messages (rolled-back transactions counted
    /// apart: never produced) and its consumptions, from the window start
    /// minus the clock skew to the re-check horizon — within the memory
    /// budget: a larger window is spilled, partitioned and reduced to what
    /// needs a verdict (`partition`), and the messages consumed exactly
    /// once are only counted (the third value).
    async fn window_records(
        &self,
        bounds: Bounds,
        now_ms: i64,
        summary: &mut WindowSummary,
        reused: &mut u64,
    ) -> Result<(Vec<Produced>, Vec<Consumed>, u64), AuditError> {
        let parent = self.audit.data_dir.join("spill");
        let spill_error = |error: std::io::Error| SourceError::Failed {
            source_kind: "spill",
            detail: error.to_string(),
        };
        let mut spill = WindowSpill::new(self.audit.memory_budget, &parent);
        let (mut rolled_back, mut at_risk) = (0, 0);
        let mut take = |m: Produced| {
            if m.transaction == Some(TxState::Rollback) {
                rolled_back += 1;
                return Ok(());
            }
            at_risk += u64::from(m.status.at_risk());
            spill.produced(m).map_err(spill_error)
        };
        let reuse_produced = self.reuses() && self.produced.is_trace();
        let replayed = if reuse_produced {
            self.replay_produced(bounds.start, &mut take)
        } else {
            Ok(None)
        };
        let unauditable = match replayed {
            Ok(Some((unauditable, n))) => {
                *reused += n;
                unauditable
            }
            Err(error) => self.spilled(Err(error), &parent, "produced")?,
            Ok(None) => {
                // Kept for the next runs as it streams by, while it fits.
                let budget = self.audit.reuse_budget;
                let (mut kept, mut kept_bytes) = (reuse_produced.then(Vec::new), 0);
                let streamed = self
                    .produced
                    .stream_produced(
                        &self.store,
                        &self.flow.topic,
                        (bounds.start, bounds.end),
                        &mut |m| {
                            if let Some(list) = &mut kept {
                                kept_bytes += super::partition::produced_bytes(&m);
                                if kept_bytes > budget {
                                    kept = None;
                                } else {
                                    list.push(m.clone());
                                }
                            }
                            take(m)
                        },
                    )
                    .await;
                let unauditable = self.spilled(streamed, &parent, "produced")?;
                if let Some(messages) = kept {
                    self.reuse().keep_produced(
                        bounds.start,
                        KeptProduced::new(bounds.end, messages, unauditable),
                    );
                }
                unauditable
            }
        };
        let (consume_from, consume_to) = self.consume_range(bounds, now_ms);
        let replayed = if self.reuses() && self.consumed.is_trace() {
            self.replay_consumed((consume_from, consume_to), &mut |c| {
                spill.consumed(c).map_err(spill_error)
            })
        } else {
            None
        };
        let consumed = match replayed {
            Some(replayed) => replayed.map(|n| {
                *reused += n;
                0
            }),
            None => {
                self.consumed
                    .stream_consumed(
                        &self.store,
                        (&self.flow.topic, &self.flow.group),
                        (consume_from, consume_to),
                        &mut |c| spill.consumed(c).map_err(spill_error),
                    )
                    .await
            }
        };
        self.spilled(consumed, &parent, "consumed")?;
        summary.unauditable = unauditable;
        summary.rolled_back = rolled_back;
        summary.at_risk = at_risk;
        let spilled = spill.spilled();
        let reduced = tokio::task::spawn_blocking(move || spill.finish())
            .await
            .map_err(|e| AuditError::Spill {
                dir: parent.display().to_string(),
                error: std::io::Error::other(e.to_string()),
            })?
            .map_err(|error| AuditError::Spill {
                dir: parent.display().to_string(),
                error,
            })?;
        if spilled {
            tracing::info!(
                flow = %self.flow.name,
                window_ms = bounds.start,
                partitions = reduced.partitions,
                settled = reduced.settled,
                kept = reduced.produced.len(),
                over_budget = reduced.over_budget,
                "Window past the memory budget reconciled from disk."
            );
            if reduced.over_budget {
                tracing::warn!(
                    flow = %self.flow.name,
                    window_ms = bounds.start,
                    "Window past the memory budget held whole: its records carry neither a message id on every record nor exactly one key, so it cannot be partitioned."
                );
            }
        }
        if reduced.shares > 0 {
            tracing::info!(
                flow = %self.flow.name,
                window_ms = bounds.start,
                shares = reduced.shares,
                settled = reduced.settled,
                kept = reduced.produced.len(),
                "Large window settled in shares in memory."
            );
        }
        Ok((reduced.produced, reduced.consumed, reduced.settled))
    }

    /// Hand a window's kept produced messages to `take`: (unauditable
    /// records, messages), or `None` when none are kept.
    fn replay_produced(
        &self,
        start_ms: i64,
        take: &mut dyn FnMut(Produced) -> Result<(), SourceError>,
    ) -> Result<Option<(u64, u64)>, SourceError> {
        let cache = self.reuse();
        let Some(kept) = cache.produced(start_ms) else {
            return Ok(None);
        };
        for m in &kept.messages {
            take(m.clone())?;
        }
        Ok(Some((kept.unauditable, kept.messages.len() as u64)))
    }

    /// Hand the kept consumptions of `range` to `take`: how many of them
    /// earlier runs read, or `None` unless all of them are kept.
    fn replay_consumed(
        &self,
        (from_ms, to_ms): (i64, i64),
        take: &mut dyn FnMut(Consumed) -> Result<(), SourceError>,
    ) -> Option<Result<u64, SourceError>> {
        let cache = self.reuse();
        let (records, earlier) = cache.consumed(from_ms, to_ms)?;
        for c in records {
            if let Err(error) = take(c.clone()) {
                return Some(Err(error));
            }
        }
        Some(Ok(earlier))
    }

    /// A streamed side's result, the spill's own failures told apart from
    /// the source's.
    fn spilled(
        &self,
        result: Result<u64, SourceError>,
        parent: &std::path::Path,
        side: &'static str,
    ) -> Result<u64, AuditError> {
        match result {
            Ok(n) => Ok(n),
            Err(SourceError::Failed {
                source_kind: "spill",
                detail,
            }) => Err(AuditError::Spill {
                dir: parent.display().to_string(),
                error: std::io::Error::other(detail),
            }),
            Err(error) => Err(AuditError::Source { side, error }),
        }
    }

    /// Diagnose every message nothing consumed (reusing an earlier verdict
    /// where it still holds); learn the ids batch members were stored under.
    async fn diagnose_missing(
        &self,
        window: &Window<'_>,
        reconciler: &mut Reconciler<'_>,
        diagnoser: &mut Diagnoser<'_>,
    ) -> Result<Verdicts, AuditError> {
        let messages = window.messages;
        let missing_now: Vec<usize> = reconciler
            .counts()
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == 0)
            .map(|(i, _)| i)
            .collect();
        // Deliveries the consumer reported failed (trace consumers only).
        let attempts = if self.consumed.is_trace() {
            let ids: Vec<&str> = missing_now
                .iter()
                .filter_map(|i| messages[*i].msg_id.as_deref())
                .collect();
            self.store.failed_attempts(&self.flow.name, &ids).await?
        } else {
            BTreeMap::new()
        };
        let mut verdicts = Verdicts::default();
        for i in missing_now {
            let message = &messages[i];
            let (id, _) = self.identity(message);
            let earlier = window.previous.get(&(id, FindingKind::Missing));
            let diagnosis = match reuse(earlier, window.subscription, message) {
                // Lost at `consume` (or `unconfirmed`) says the group passed
                // the message and no DLQ copy was found: a consumer still
                // retrying under load, or a broker whose index lags, puts
                // the copy there later. Look in the DLQ again (one lookup)
                // while the window is re-checked and spare budget allows
                // (new messages come first); only a copy found changes the
                // verdict.
                Some(mut d)
                    if earlier.is_some_and(awaits_dead_letter_copy)
                        && diagnoser.budget() > self.audit.diagnose_budget / 2 =>
                {
                    if let Some(copy) = diagnoser.dead_letter_copy(message, window.now_ms).await {
                        d.verdict = Verdict::Missing {
                            stage: Stage::DeadLetter,
                            waiting: false,
                        };
                        if !d.evidence.is_object() {
                            d.evidence = json!({});
                        }
                        d.evidence["copy"] = copy;
                    }
                    d
                }
                Some(d) => d,
                None => {
                    let failed = message
                        .msg_id
                        .as_ref()
                        .and_then(|id| attempts.get(id))
                        .map_or(0, |n| u32::try_from(*n).unwrap_or(u32::MAX));
                    diagnoser.diagnose(message, failed, window.now_ms).await
                }
            };
            if let Some((stored, keys)) = &diagnosis.alias
                && let Some(msg_id) = &message.msg_id
            {
                self.store
                    .save_alias(&self.flow.name, msg_id, stored, keys)
                    .await?;
                reconciler.add_alias(i, stored, keys);
                verdicts.learned_alias = true;
            }
            verdicts.by_message.insert(i, diagnosis);
        }
        Ok(verdicts)
    }

    /// A finding per message still missing, counted in `summary`; messages
    /// the subscription does not select are counted apart.
    fn missing_findings(
        &self,
        window: &Window<'_>,
        missing: &[usize],
        verdicts: &HashMap<usize, Diagnosis>,
        summary: &mut WindowSummary,
    ) -> (Vec<Finding>, u64) {
        let mut findings = Vec::new();
        // Messages of the window that were never the group's to consume.
        let mut not_the_groups = 0;
        for &i in missing {
            let message = &window.messages[i];
            let Some(diagnosis) = verdicts.get(&i) else {
                continue;
            };
            let stage = match diagnosis.verdict {
                Verdict::NotSubscribed => {
                    summary.not_subscribed += 1;
                    not_the_groups += 1;
                    continue;
                }
                Verdict::Compacted => {
                    summary.compacted += 1;
                    not_the_groups += 1;
                    continue;
                }
                Verdict::RolledBack => {
                    summary.rolled_back += 1;
                    not_the_groups += 1;
                    continue;
                }
                Verdict::Missing { stage, waiting } => (stage, waiting),
            };
            let past_horizon = window.now_ms >= window.bounds.horizon_at;
            let status = status_of(stage, window.past_deadline, past_horizon);
            *summary
                .missing
                .entry(status.as_str().to_string())
                .or_default()
                .entry(stage.0.as_str().to_string())
                .or_default() += 1;
            let (id, reference) = self.identity(message);
            let mut attrs = send_attrs(message);
            if let Some(s) = window.subscription {
                attrs["subscription"] = json!(s.to_string());
            }
            findings.push(Finding {
                flow: self.flow.name.clone(),
                window_start_ms: window.bounds.start,
                id,
                kind: FindingKind::Missing,
                key: reference,
                msg_id: message.msg_id.clone(),
                keys: message.keys.clone(),
                count: 1,
                produced_at_ms: Some(message.time_ms),
                status,
                stage: Some(stage.0),
                evidence: Some(diagnosis.evidence.clone()),
                attrs: Some(attrs),
                first_seen_ms: window.now_ms,
                updated_ms: window.now_ms,
            });
        }
        dedupe_ids(&mut findings);
        (findings, not_the_groups)
    }

    fn duplicate_finding(&self, window: &Window<'_>, message: &Produced, extra: u32) -> Finding {
        let (id, reference) = self.identity(message);
        final_finding(
            &self.flow.name,
            window.bounds.start,
            (id, reference, message.msg_id.clone(), message.keys.clone()),
            FindingKind::Duplicated,
            extra,
            window.now_ms,
        )
    }

    /// Store the window's counts and findings in one transaction; a window
    /// is final when nothing can change any more.
    async fn save(
        &self,
        window: &Window<'_>,
        summary: &mut WindowSummary,
        findings: &[Finding],
    ) -> Result<(), AuditError> {
        let open_findings = findings.iter().any(Finding::is_open);
        let is_final =
            window.now_ms >= window.bounds.horizon_at || (window.past_deadline && !open_findings);
        summary.final_ = is_final;
        let counts: WindowCounts = [
            ("produced", summary.produced as i64),
            ("consumed", summary.consumed as i64),
            ("duplicated", summary.duplicated as i64),
            ("orphaned", summary.orphaned as i64),
            ("not_subscribed", summary.not_subscribed as i64),
            ("compacted", summary.compacted as i64),
            ("at_risk", summary.at_risk as i64),
            ("rolled_back", summary.rolled_back as i64),
            ("unauditable", summary.unauditable as i64),
        ]
        .into_iter()
        .collect();
        self.store
            .save_window(
                &self.flow.name,
                (window.bounds.start, window.bounds.end),
                &counts,
                is_final,
                findings,
                window.now_ms,
            )
            .await?;
        Ok(())
    }

    /// Consumptions in the window that match no message produced in it or
    /// within a deadline before it: (reference, (msg id, keys, deliveries)).
    async fn orphans(
        &self,
        bounds: Bounds,
        unmatched: &[&Consumed],
        now_ms: i64,
        diagnoser: &mut Diagnoser<'_>,
    ) -> Result<BTreeMap<String, (Option<String>, Vec<String>, u32)>, AuditError> {
        let candidates: Vec<&Consumed> = unmatched
            .iter()
            .copied()
            .filter(|r| r.time_ms >= bounds.start && r.time_ms < bounds.end)
            .collect();
        let mut out: BTreeMap<String, (Option<String>, Vec<String>, u32)> = BTreeMap::new();
        if candidates.is_empty() {
            return Ok(out);
        }
        // A message may be consumed until the horizon past its deadline.
        let lookback = (self.flow.deadline + self.flow.recheck_horizon).as_millis() as i64;
        let earlier = self
            .fetch_produced(bounds.start - lookback, bounds.start)
            .await?;
        let mut before = Reconciler::new(&earlier.messages);
        for (i, m) in earlier.messages.iter().enumerate().filter(|(_, m)| m.batch) {
            if let Some(id) = &m.msg_id
                && let Some((stored, keys)) = self.store.alias(&self.flow.name, id).await?
            {
                before.add_alias(i, &stored, &keys);
            }
        }
        let trace_consumer = self.consumed.is_trace();
        let mut checked: HashMap<String, bool> = HashMap::new();
        for record in candidates {
            if before.consume(record).is_some() {
                continue;
            }
            // A trace consumer's group may consume other topics too: only a
            // message stored on the flow's topic is the flow's orphan.
            if trace_consumer && let Some(id) = &record.msg_id {
                let on_topic = match checked.get(id) {
                    Some(v) => *v,
                    None => {
                        let v = diagnoser
                            .on_flow_topic(id, record.time_ms, now_ms)
                            .await
                            .unwrap_or(false);
                        checked.insert(id.clone(), v);
                        v
                    }
                };
                if !on_topic {
                    continue;
                }
            }
            let reference = record.reference().unwrap_or("").to_string();
            let entry = out
                .entry(reference)
                .or_insert_with(|| (record.msg_id.clone(), record.keys.clone(), 0));
            entry.2 += 1;
        }
        Ok(out)
    }
}

/// Milliseconds since `started`.
fn elapsed_ms(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A status from a stage, the deadline and the horizon.
fn status_of(stage: (Stage, bool), past_deadline: bool, past_horizon: bool) -> Status {
    match stage {
        (Stage::DeadLetter, _) => Status::DeadLetter,
        _ if !past_deadline => Status::Pending,
        // Still on its way (scheduled, a half message being checked), or not
        // diagnosed yet: never a verdict while it can still be re-checked.
        (_, true) | (Stage::Undiagnosed, _) if !past_horizon => Status::Pending,
        _ => Status::Lost,
    }
}

/// A verdict that cannot change, reused without asking the brokers again;
/// `None` when it must be (re-)diagnosed.
fn reuse(
    earlier: Option<&Finding>,
    subscription: Option<&AppliedSubscription>,
    message: &Produced,
) -> Option<Diagnosis> {
    // The subscription decides without a broker call when the source has
    // what it needs (the tag, or the properties for SQL92).
    if let Some(s) = subscription
        && s.subscription
            .selects(message.tags.as_deref(), message.properties.as_ref())
            == Some(false)
        && (message.tags.is_some() || message.properties.is_some())
    {
        return Some(Diagnosis {
            verdict: Verdict::NotSubscribed,
            evidence: json!({"subscription": s.to_string(), "tags": message.tags}),
            alias: None,
        });
    }
    let earlier = earlier?;
    let settled = matches!(earlier.status, Status::DeadLetter)
        || (earlier.status == Status::Lost
            && matches!(
                earlier.stage,
                Some(
                    Stage::Send
                        | Stage::Store
                        | Stage::Expired
                        | Stage::Consume
                        | Stage::Unconfirmed
                        | Stage::Transaction
                )
            ));
    if !settled {
        return None;
    }
    Some(Diagnosis {
        verdict: Verdict::Missing {
            stage: earlier.stage.unwrap_or(Stage::Undiagnosed),
            waiting: false,
        },
        evidence: earlier.evidence.clone().unwrap_or_default(),
        alias: None,
    })
}

/// A lost verdict a later dead-letter copy would correct: the consumer
/// passed the message, and no copy was found in its DLQ yet.
fn awaits_dead_letter_copy(earlier: &Finding) -> bool {
    earlier.status == Status::Lost
        && matches!(earlier.stage, Some(Stage::Consume | Stage::Unconfirmed))
}

/// Two messages without an id and with the same key get distinct ids.
fn dedupe_ids(findings: &mut [Finding]) {
    let mut seen: HashSet<(String, FindingKind)> = HashSet::new();
    for f in findings.iter_mut() {
        let mut n = 1;
        let base = f.id.clone();
        while !seen.insert((f.id.clone(), f.kind)) {
            n += 1;
            f.id = format!("{base}#{n}");
        }
    }
}

fn final_finding(
    flow: &str,
    start: i64,
    (id, key, msg_id, keys): (String, String, Option<String>, Vec<String>),
    kind: FindingKind,
    count: u32,
    now_ms: i64,
) -> Finding {
    Finding {
        flow: flow.to_string(),
        window_start_ms: start,
        id,
        kind,
        key,
        msg_id,
        keys,
        count: i64::from(count),
        produced_at_ms: None,
        status: Status::Final,
        stage: None,
        evidence: Some(json!({})),
        attrs: None,
        first_seen_ms: now_ms,
        updated_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_deadline_and_horizon() {
        use Stage::*;
        assert_eq!(status_of((Late, false), false, false), Status::Pending);
        assert_eq!(status_of((Late, false), true, false), Status::Lost);
        assert_eq!(
            status_of((DeadLetter, false), false, false),
            Status::DeadLetter
        );
        assert_eq!(status_of((Scheduled, true), true, false), Status::Pending);
        assert_eq!(status_of((Scheduled, true), true, true), Status::Lost);
        assert_eq!(
            status_of((Undiagnosed, false), true, false),
            Status::Pending
        );
        assert_eq!(status_of((Undiagnosed, false), true, true), Status::Lost);
        assert_eq!(status_of((Transaction, false), true, false), Status::Lost);
    }
}
