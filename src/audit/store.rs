//! The audit store: windows, findings, runs, counters, trace records, source
//! cursors and learned facts in one SQLite file under the data directory
//! (WAL, `synchronous=FULL`).
//!
//! Crash safety: everything one window's audit changes — its counts, all its
//! findings and the counters they move — is written in one transaction, and
//! so is each trace-ingest batch with the cursor it advances. A `kill -9`
//! therefore leaves either the old state or the new one; re-running the
//! window rewrites the same rows, so nothing is lost or doubled.
//!
//! Counters only go up: a window's counts add to the flow's counters only
//! beyond the most the window ever contributed, and a finding adds to
//! `lost` or `dead_lettered` once, when it first gets there (its `counted`
//! flag). A correction (a lost message consumed later) is counted apart
//! (`resolved_late`), never subtracted; a lost message whose DLQ copy is
//! found later also adds to `dead_lettered`. What can go down is a gauge,
//! computed from the findings.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::model::{FindingKind, Stage, Status};

/// A store failure, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("audit store: {context}: {source}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The data directory.
    #[error("audit store: {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// This replica no longer holds the flow's lease: another audits it.
    #[error("audit store: {replica} lost the lease on flow {flow}; nothing written")]
    LeaseLost {
        /// Flow.
        flow: String,
        /// This replica.
        replica: String,
    },
    /// The store's configuration.
    #[error("audit store: {what}")]
    Config {
        /// What is wrong.
        what: String,
    },
    /// A stored value that this version cannot read.
    #[error("audit store: unreadable {what}: {value:?}")]
    Corrupt {
        /// Column.
        what: &'static str,
        /// Value.
        value: String,
    },
}

trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl StoreError {
    /// A database failure while doing `context`.
    pub(super) fn database(context: &'static str, source: sqlx::Error) -> StoreError {
        StoreError::Database { context, source }
    }
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database { context, source })
    }
}

/// One stored finding: a missing, duplicated or orphaned message of a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Flow name.
    pub flow: String,
    /// Window start, epoch ms.
    pub window_start_ms: i64,
    /// The message's identity in the window (its id, else its key).
    pub id: String,
    /// What it is about.
    pub kind: FindingKind,
    /// Its reference: first key, else message id.
    pub key: String,
    /// Client message id, when known.
    pub msg_id: Option<String>,
    /// Every key.
    pub keys: Vec<String>,
    /// How many messages (missing), extra deliveries (duplicated) or deliveries (orphaned).
    pub count: i64,
    /// Produced time (missing), epoch ms.
    pub produced_at_ms: Option<i64>,
    /// Where it stands.
    pub status: Status,
    /// Where it is or was lost (missing).
    pub stage: Option<Stage>,
    /// What the brokers said.
    pub evidence: Option<serde_json::Value>,
    /// Facts about the message (send status, at risk, kind, subscription).
    pub attrs: Option<serde_json::Value>,
    /// When first recorded, epoch ms.
    pub first_seen_ms: i64,
    /// When last changed, epoch ms.
    pub updated_ms: i64,
}

impl Finding {
    /// A missing message whose verdict may still change: pending, lost (and
    /// re-checked until the horizon) or dead-lettered.
    pub fn is_open(&self) -> bool {
        self.kind == FindingKind::Missing
            && matches!(
                self.status,
                Status::Pending | Status::Lost | Status::DeadLetter
            )
    }
}

/// One audit run (a scheduled fire or a `--once`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// Row id.
    pub id: i64,
    /// Flow.
    pub flow: String,
    /// Start, epoch ms.
    pub started_ms: i64,
    /// End, epoch ms.
    pub finished_ms: Option<i64>,
    /// `success` or `failure`.
    pub result: Option<String>,
    /// The error, when failed.
    pub error: Option<String>,
    /// Windows audited.
    pub windows: i64,
}

/// A flow's audit figures for metrics and the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowTotals {
    /// Monotonic counters: (name, label) → value. Names: `produced`,
    /// `consumed`, `lost` (label = stage), `dead_lettered`, `resolved_late`,
    /// `duplicated`, `orphaned`, `at_risk`, `not_subscribed`, `compacted`, `rolled_back`,
    /// `unauditable`.
    pub counters: BTreeMap<String, BTreeMap<String, i64>>,
    /// Gauge: missing, not yet lost.
    pub pending: i64,
    /// Gauge: currently lost, by stage (a later consumption removes one).
    pub lost_now: BTreeMap<String, i64>,
    /// Runs by result.
    pub runs: Vec<(String, i64)>,
    /// Last successful run's end, epoch ms.
    pub last_success_ms: Option<i64>,
}

impl FlowTotals {
    /// A counter's value (0 when never moved).
    pub fn counter(&self, name: &str, label: &str) -> i64 {
        self.counters
            .get(name)
            .and_then(|by_label| by_label.get(label))
            .copied()
            .unwrap_or(0)
    }
}

/// Which records a trace row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceSide {
    /// A producer's `Pub`.
    Pub,
    /// The flow group's `SubAfter`.
    Sub,
    /// An `EndTransaction`.
    Tx,
}

impl TraceSide {
    fn as_str(self) -> &'static str {
        match self {
            TraceSide::Pub => "pub",
            TraceSide::Sub => "sub",
            TraceSide::Tx => "tx",
        }
    }

    fn parse(text: &str) -> Result<TraceSide, StoreError> {
        match text {
            "pub" => Ok(TraceSide::Pub),
            "sub" => Ok(TraceSide::Sub),
            "tx" => Ok(TraceSide::Tx),
            other => Err(StoreError::Corrupt {
                what: "trace.side",
                value: other.to_string(),
            }),
        }
    }
}

/// A stored trace record relevant to a flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceRow {
    /// Pub, Sub or Tx.
    pub side: TraceSide,
    /// Client message id.
    pub msg_id: String,
    /// Keys, space-separated (empty for batch members: the batch `Pub` has none).
    pub keys: String,
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// Broker message id (Pub).
    pub offset_msg_id: Option<String>,
    /// Broker address (Pub, Tx).
    pub store_host: Option<String>,
    /// Tag (Pub, Tx).
    pub tags: Option<String>,
    /// Pub: `SEND_OK`; Sub: the listener succeeded.
    pub success: bool,
    /// `MessageType` ordinal (Pub, Tx).
    pub msg_type: i32,
    /// Delivery attempt (Sub).
    pub reconsume: i32,
    /// `COMMIT_MESSAGE`, `ROLLBACK_MESSAGE`, `UNKNOW` (Tx).
    pub tx_state: Option<String>,
    /// Part of a batch send (Pub).
    pub batch: bool,
}

impl TraceRow {
    /// Keys as a list.
    pub fn key_list(&self) -> Vec<String> {
        self.keys
            .split(' ')
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Which half of a consumption's trace a [`SubHalf`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HalfKind {
    /// The flow group's `SubBefore`: group, start time, delivery attempt.
    Before,
    /// A `SubAfter` without a group: the outcome.
    After,
}

impl HalfKind {
    fn as_str(self) -> &'static str {
        match self {
            HalfKind::Before => "before",
            HalfKind::After => "after",
        }
    }

    fn other(self) -> HalfKind {
        match self {
            HalfKind::Before => HalfKind::After,
            HalfKind::After => HalfKind::Before,
        }
    }
}

/// Half of a consumption's trace whose other half is in another trace
/// message: 4.9 clients write `SubAfter` without group or time, and their
/// dispatcher batches `SubBefore` and `SubAfter` independently, so the pair
/// can land in different messages, queues or brokers. The halves meet in
/// the store, matched by request id and message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubHalf {
    /// Before or after.
    pub kind: HalfKind,
    /// Id the pair shares (one per consumed batch).
    pub request_id: String,
    /// Client message id.
    pub msg_id: String,
    /// Before: consumption start; after: the trace message's store time.
    pub time_ms: i64,
    /// Before: the delivery attempt.
    pub retry_times: i32,
    /// Keys, space-separated.
    pub keys: String,
    /// After: the listener succeeded.
    pub success: bool,
}

/// A window's counts; each adds to the flow counter of the same name.
pub type WindowCounts = BTreeMap<&'static str, i64>;

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS windows (
        flow TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
        produced INTEGER NOT NULL, consumed INTEGER NOT NULL,
        final INTEGER NOT NULL, audited_ms INTEGER NOT NULL,
        counts TEXT NOT NULL DEFAULT '{}', counted TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (flow, start_ms))",
    "CREATE TABLE IF NOT EXISTS findings (
        flow TEXT NOT NULL, window_start_ms INTEGER NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL,
        key TEXT NOT NULL, msg_id TEXT, keys TEXT NOT NULL DEFAULT '',
        count INTEGER NOT NULL, produced_at_ms INTEGER, status TEXT NOT NULL, stage TEXT,
        evidence TEXT, attrs TEXT, counted INTEGER NOT NULL DEFAULT 0,
        first_seen_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
        PRIMARY KEY (flow, window_start_ms, id, kind))",
    "CREATE INDEX IF NOT EXISTS findings_by_key ON findings (key)",
    "CREATE INDEX IF NOT EXISTS findings_by_msg_id ON findings (msg_id)",
    "CREATE INDEX IF NOT EXISTS findings_by_status ON findings (flow, status)",
    "CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL, started_ms INTEGER NOT NULL,
        finished_ms INTEGER, result TEXT, error TEXT, windows INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS cursors (
        flow TEXT NOT NULL, source TEXT NOT NULL, broker TEXT NOT NULL, queue_id INTEGER NOT NULL,
        next_offset INTEGER NOT NULL, caught_up_ms INTEGER,
        PRIMARY KEY (flow, source, broker, queue_id))",
    // One row per delivery: the time is part of the key, so a re-ingested
    // trace message changes nothing and a second delivery is a second row.
    // Version 4: keyed by time first. Rows arrive in about time order, so
    // an ingest appends to the key's B-tree instead of writing pages all
    // over it (keyed by message id first, a random place per row, each
    // commit wrote most of the pages it touched: 8x slower on a store of
    // 600,000 rows), and the key serves the windows' reads by time, which
    // had an index of their own.
    "CREATE TABLE IF NOT EXISTS trace (
        flow TEXT NOT NULL, side TEXT NOT NULL, msg_id TEXT NOT NULL, time_ms INTEGER NOT NULL,
        keys TEXT NOT NULL, offset_msg_id TEXT, store_host TEXT, tags TEXT,
        success INTEGER NOT NULL, msg_type INTEGER NOT NULL, reconsume INTEGER NOT NULL,
        tx_state TEXT, batch INTEGER NOT NULL, source TEXT NOT NULL,
        PRIMARY KEY (flow, side, time_ms, msg_id, keys, source))",
    // Lookups by message id of the few rows they need: transaction states,
    // failed deliveries. (Lookups by key scan a flow's rows anyway.)
    "CREATE INDEX IF NOT EXISTS trace_tx_by_msg_id ON trace (flow, msg_id) WHERE side = 'tx'",
    "CREATE INDEX IF NOT EXISTS trace_failed_by_msg_id ON trace (flow, msg_id) WHERE success = 0",
    "DROP INDEX IF EXISTS trace_by_msg_id",
    // Version 3: halves of a consumption that older clients split across
    // trace messages (a group-less `SubAfter`, the group's `SubBefore`),
    // waiting for their other half.
    "CREATE TABLE IF NOT EXISTS trace_halves (
        flow TEXT NOT NULL, request_id TEXT NOT NULL, msg_id TEXT NOT NULL, half TEXT NOT NULL,
        time_ms INTEGER NOT NULL, retry_times INTEGER NOT NULL, keys TEXT NOT NULL,
        success INTEGER NOT NULL, source TEXT NOT NULL,
        PRIMARY KEY (flow, request_id, msg_id, half))",
    "CREATE INDEX IF NOT EXISTS trace_halves_by_time ON trace_halves (flow, time_ms)",
    "CREATE TABLE IF NOT EXISTS aliases (
        flow TEXT NOT NULL, msg_id TEXT NOT NULL, stored_id TEXT NOT NULL, keys TEXT NOT NULL,
        PRIMARY KEY (flow, msg_id))",
    "CREATE TABLE IF NOT EXISTS counters (
        flow TEXT NOT NULL, name TEXT NOT NULL, label TEXT NOT NULL, value INTEGER NOT NULL,
        PRIMARY KEY (flow, name, label))",
    "CREATE TABLE IF NOT EXISTS learned (
        flow TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, updated_ms INTEGER NOT NULL,
        PRIMARY KEY (flow, name))",
];

/// What only the PostgreSQL store has: flow leases (several replicas).
const POSTGRES_ONLY: &[&str] = super::lease::SCHEMA;

/// The store's tables, for its size and row counts.
const STORE_TABLES: [&str; 8] = [
    "trace",
    "trace_halves",
    "windows",
    "findings",
    "runs",
    "cursors",
    "aliases",
    "counters",
];

/// The advisory lock replicas take to create or upgrade the PostgreSQL
/// schema one at a time (any constant; ours spells "mqaudit").
const MIGRATION_LOCK: i64 = 0x006d_7161_7564_6974;

/// Version 1 → 2: findings per message (id, msg_id, keys, attrs, counted),
/// window count maxima, trace rows with the fields the audit now reads (the
/// old rows are dropped and the trace re-read from the brokers), counters
/// seeded with the totals version 1 derived, so they continue from there.
const MIGRATE_1_TO_2: &[&str] = &[
    "ALTER TABLE findings RENAME TO findings_v1",
    "ALTER TABLE windows RENAME TO windows_v1",
    "ALTER TABLE cursors RENAME TO cursors_v1",
    "DROP INDEX IF EXISTS findings_by_key",
    "DROP INDEX IF EXISTS trace_by_time",
    "DROP TABLE IF EXISTS trace",
];

const MIGRATE_1_TO_2_COPY: &[&str] = &[
    "INSERT INTO windows (flow, start_ms, end_ms, produced, consumed, final, audited_ms, counts, counted)
     SELECT flow, start_ms, end_ms, produced, consumed, final, audited_ms,
            json_object('produced', produced, 'consumed', consumed),
            json_object('produced', produced, 'consumed', consumed)
     FROM windows_v1",
    "INSERT INTO findings (flow, window_start_ms, id, kind, key, msg_id, keys, count, produced_at_ms,
         status, stage, evidence, attrs, counted, first_seen_ms, updated_ms)
     SELECT flow, window_start_ms, key, kind, key, NULL, key, count, produced_at_ms,
         CASE WHEN status = 'resolved' THEN 'resolved' ELSE status END,
         CASE WHEN stage = 'pending' THEN 'late' ELSE stage END, evidence, NULL,
         CASE WHEN status IN ('lost', 'dead_letter') THEN 1 ELSE 0 END, first_seen_ms, updated_ms
     FROM findings_v1",
    "INSERT INTO cursors (flow, source, broker, queue_id, next_offset, caught_up_ms)
     SELECT flow, source, broker, queue_id, next_offset, NULL FROM cursors_v1 WHERE source != 'trace'",
    "INSERT INTO counters (flow, name, label, value)
     SELECT flow, 'produced', '', SUM(produced) FROM windows_v1 GROUP BY flow",
    "INSERT INTO counters (flow, name, label, value)
     SELECT flow, 'consumed', '', SUM(consumed) FROM windows_v1 GROUP BY flow",
    "INSERT INTO counters (flow, name, label, value)
     SELECT flow, 'lost', stage, SUM(count) FROM findings_v1 WHERE kind = 'missing' AND status = 'lost' GROUP BY flow, stage",
    "INSERT INTO counters (flow, name, label, value)
     SELECT flow, 'dead_lettered', '', SUM(count) FROM findings_v1 WHERE kind = 'missing' AND status = 'dead_letter' GROUP BY flow",
    "INSERT INTO counters (flow, name, label, value)
     SELECT flow, kind, '', SUM(count) FROM findings_v1 WHERE kind IN ('duplicated', 'orphaned') GROUP BY flow, kind",
    "DROP TABLE findings_v1",
    "DROP TABLE windows_v1",
    "DROP TABLE cursors_v1",
];

/// Columns of a finding, in the order `finding_from_row` reads them.
macro_rules! finding_columns {
    () => {
        "flow, window_start_ms, id, kind, key, msg_id, keys, count, produced_at_ms, status, stage, evidence, attrs, first_seen_ms, updated_ms, counted"
    };
}

/// Columns of a trace row, in the order `trace_from_row` reads them.
macro_rules! trace_columns {
    () => {
        "side, msg_id, keys, time_ms, offset_msg_id, store_host, tags, success, msg_type, reconsume, tx_state, batch"
    };
}

/// Version 3 → 4: the trace table re-keyed by time first (see [`SCHEMA`]).
/// The old table is set aside before the schema creates the new one, then
/// its rows are copied over.
const MIGRATE_3_TO_4: &[&str] = &[
    "DROP INDEX IF EXISTS trace_by_time",
    "ALTER TABLE trace RENAME TO trace_v3",
];

/// PostgreSQL names a key after its table: the set-aside table's is renamed
/// so that the new table can have its own.
const MIGRATE_3_TO_4_POSTGRES: &str =
    "ALTER TABLE trace_v3 RENAME CONSTRAINT trace_pkey TO trace_v3_pkey";

const MIGRATE_3_TO_4_COPY: &[&str] = &[
    concat!(
        "INSERT INTO trace (flow, source, ",
        trace_columns!(),
        ") SELECT flow, source, ",
        trace_columns!(),
        " FROM trace_v3 WHERE true ON CONFLICT DO NOTHING"
    ),
    "DROP TABLE trace_v3",
];

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The replica whose lease a flow's writes must still hold (shared
    /// store): a save after the lease moved is refused, not merged.
    fence: Option<std::sync::Arc<str>>,
}

/// Which database holds the store. The statements are written once, in the
/// SQL both speak (`$N` parameters, `ON CONFLICT`, `RETURNING`); what
/// differs — schema types, locking, row ids, size — is asked of this.
#[derive(Debug, Clone)]
enum Backend {
    /// The embedded default: one file, one process.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A shared PostgreSQL database, for several replicas.
    Postgres,
}

/// A finding with its bookkeeping flag.
struct Stored {
    finding: Finding,
    counted: bool,
}

/// Where a flow reads one queue of a source (a trace topic's queue).
#[derive(Debug, Clone, Copy)]
pub struct Cursor<'a> {
    /// Flow name.
    pub flow: &'a str,
    /// Source name (`trace`).
    pub source: &'a str,
    /// Broker name.
    pub broker: &'a str,
    /// Queue id.
    pub queue_id: i32,
}

/// One pull of a trace queue, to store: its rows and halves, and where the
/// queue's cursor moves.
#[derive(Debug, Clone, Copy)]
pub struct TracePull<'a> {
    /// The queue read.
    pub cursor: Cursor<'a>,
    /// Records relevant to the flow.
    pub rows: &'a [TraceRow],
    /// Consumption halves whose other half was not in the same message.
    pub halves: &'a [SubHalf],
    /// The queue offset to read next.
    pub next_offset: i64,
    /// Set when the queue was read to its end (then, epoch ms).
    pub caught_up_ms: Option<i64>,
}

/// The least event time of the trace rows an ingest wrote, per side: where
/// an earlier read of the flow's rows stops being whole
/// ([`super::reuse`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceWritten {
    /// `Pub` rows.
    pub produced_from_ms: Option<i64>,
    /// Consumption rows (whole, or met halves).
    pub consumed_from_ms: Option<i64>,
    /// An `EndTransaction` row was written: a half's state may have changed.
    pub transactions: bool,
}

impl TraceWritten {
    /// Note a row of `side` at `time_ms`.
    pub fn note(&mut self, side: TraceSide, time_ms: i64) {
        let least = |at: &mut Option<i64>| *at = Some(at.map_or(time_ms, |t| t.min(time_ms)));
        match side {
            TraceSide::Pub => least(&mut self.produced_from_ms),
            TraceSide::Sub => least(&mut self.consumed_from_ms),
            TraceSide::Tx => self.transactions = true,
        }
    }

    /// Both ingests' rows.
    pub fn merge(&mut self, other: TraceWritten) {
        if let Some(t) = other.produced_from_ms {
            self.note(TraceSide::Pub, t);
        }
        if let Some(t) = other.consumed_from_ms {
            self.note(TraceSide::Sub, t);
        }
        self.transactions |= other.transactions;
    }
}

/// Trace rows per INSERT: 14 bound values each, below SQLite's limit
/// on bound variables (32,766), and large enough that the per-statement
/// cost no longer dominates.
const TRACE_ROWS_PER_INSERT: usize = 1024;
/// Consumption halves matched or stored per statement (an OR of 128 keys
/// stays well inside SQLite's expression depth).
const HALVES_PER_STATEMENT: usize = 128;

/// What retention lets go: rows older than these epoch-ms cutoffs.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    /// Trace rows by their time.
    pub trace_ms: i64,
    /// Final windows (without findings left) by their end.
    pub windows_ms: i64,
    /// Findings of final windows by the window's end.
    pub findings_ms: i64,
    /// Finished runs by their start.
    pub runs_ms: i64,
}

/// Rows one prune batch deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Trace rows.
    pub trace: u64,
    /// Windows.
    pub windows: u64,
    /// Findings.
    pub findings: u64,
    /// Runs.
    pub runs: u64,
}

impl Pruned {
    /// Rows deleted over all tables.
    pub fn total(&self) -> u64 {
        self.trace + self.windows + self.findings + self.runs
    }
}

/// The store's size and rows per table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Database plus write-ahead log, bytes.
    pub bytes: u64,
    /// Rows per table.
    pub rows: BTreeMap<&'static str, i64>,
}

/// Counter increments a save adds: (name, label) → by how much.
type Increments = BTreeMap<(String, String), i64>;

impl Store {
    /// A transaction that takes the write lock at once (`BEGIN IMMEDIATE`),
    /// waiting up to the busy timeout for it. A deferred one that reads
    /// first cannot upgrade to a writer once another connection has
    /// committed since its read began: SQLite fails it at once with
    /// `database is locked`, without waiting — and with several flows (and
    /// retention) writing to one store, one flow failed every run.
    ///
    /// PostgreSQL locks rows, not the database: a plain `BEGIN` there.
    async fn write_transaction(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite { .. } => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// How this store's many-parameter statements mark their parameters.
    fn marks(&self) -> Marks {
        match self.backend {
            Backend::Sqlite { .. } => Marks::Anonymous,
            Backend::Postgres => Marks::Numbered,
        }
    }

    /// Whether replicas share this store (PostgreSQL): flows are then
    /// audited under leases.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres)
    }

    /// The pool, for the lease keeper.
    pub(super) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// This store, its flow writes fenced by `replica`'s leases (shared
    /// store only; the SQLite store has one writer).
    pub fn fenced_by(mut self, replica: &str) -> Store {
        if self.is_shared() {
            self.fence = Some(replica.into());
        }
        self
    }

    /// Refuse, inside `tx`, a write for `flow` when the fence's lease on it
    /// is gone. The row lock (`FOR SHARE`) holds a takeover back until this
    /// transaction ends.
    async fn check_fence(&self, tx: &mut AnyConnection, flow: &str) -> Result<(), StoreError> {
        let Some(replica) = &self.fence else {
            return Ok(());
        };
        let held = sqlx::query(&format!(
            "SELECT 1 FROM leases WHERE flow = $1 AND owner = $2 AND expires_ms > {} FOR SHARE",
            super::lease::DB_NOW_MS
        ))
        .bind(flow)
        .bind(&**replica)
        .fetch_optional(&mut *tx)
        .await
        .context("check lease")?;
        if held.is_none() {
            return Err(StoreError::LeaseLost {
                flow: flow.to_string(),
                replica: replica.to_string(),
            });
        }
        Ok(())
    }

    /// The column that names a row for a batched delete.
    fn row_id(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "rowid",
            Backend::Postgres => "ctid",
        }
    }

    /// Open the store `config` names: the SQLite file under its data
    /// directory, or the PostgreSQL database at its URL.
    ///
    /// # Errors
    /// When the database cannot be reached, created or upgraded.
    pub async fn open_configured(config: &crate::config::AuditConfig) -> Result<Store, StoreError> {
        match &config.store {
            crate::config::StoreKind::Sqlite => Store::open(&config.data_dir).await,
            crate::config::StoreKind::Postgres { url } => Store::open_postgres(url.expose()).await,
        }
    }

    /// Open (or create, or upgrade) the store in the PostgreSQL database at
    /// `url`; replicas sharing it share every window, finding and counter.
    ///
    /// # Errors
    /// When the database cannot be reached or the schema created.
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Config {
                what: "the PostgreSQL store's URL must start with postgres://".to_string(),
            });
        }
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_release(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect(url)
            .await
            .context("open")?;
        let store = Store {
            pool,
            backend: Backend::Postgres,
            fence: None,
        };
        store.migrate_postgres().await?;
        Ok(store)
    }

    /// Open (or create, or upgrade) `DIR/audit.db`.
    ///
    /// # Errors
    /// When the directory or database cannot be created, opened or upgraded.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        sqlx::any::install_default_drivers();
        let path = data_dir.join("audit.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            // The busy timeout first: switching to WAL takes a lock another
            // process may hold.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA busy_timeout = 10000",
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            // A connection released still inside a transaction (a commit or
            // rollback that failed, as on a full disk) is closed, not reused:
            // reused, every later write on it failed ("begin_with at
            // non-zero transaction depth") after the space came back.
            .after_release(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect(&url)
            .await
            .context("open")?;
        let store = Store {
            pool,
            backend: Backend::Sqlite { path },
            fence: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.context("migrate")?;
        let version = |row: AnyRow| -> i64 { row.get(0) };
        let current = version(
            sqlx::query("PRAGMA user_version")
                .fetch_one(&mut *conn)
                .await
                .context("schema version")?,
        );
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        // A write lock from the start: another process may be writing, and a
        // read transaction upgraded later would fail instead of waiting.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .context("migrate")?;
        let result = Self::migrate_locked(&mut conn).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        sqlx::query(end)
            .execute(&mut *conn)
            .await
            .context("migrate")?;
        result
    }

    async fn migrate_locked(conn: &mut AnyConnection) -> Result<(), StoreError> {
        let version: i64 = sqlx::query("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await
            .context("schema version")?
            .get(0);
        if version == SCHEMA_VERSION {
            return Ok(()); // another process migrated it meanwhile
        }
        let has = |column: &'static str| {
            sqlx::query("SELECT 1 FROM pragma_table_info('findings') WHERE name = $1").bind(column)
        };
        let v1 = has("kind")
            .fetch_optional(&mut *conn)
            .await
            .context("schema probe")?
            .is_some()
            && has("id")
                .fetch_optional(&mut *conn)
                .await
                .context("schema probe")?
                .is_none();
        // A trace table of versions 2 and 3 still has its index by time.
        let trace_v3 = !v1
            && sqlx::query(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'trace_by_time'",
            )
            .fetch_optional(&mut *conn)
            .await
            .context("schema probe")?
            .is_some();
        if v1 {
            for statement in MIGRATE_1_TO_2 {
                sqlx::query(statement)
                    .execute(&mut *conn)
                    .await
                    .context("migrate 1 to 2")?;
            }
        }
        if trace_v3 {
            for statement in MIGRATE_3_TO_4 {
                sqlx::query(statement)
                    .execute(&mut *conn)
                    .await
                    .context("migrate 3 to 4")?;
            }
        }
        for statement in SCHEMA {
            sqlx::query(statement)
                .execute(&mut *conn)
                .await
                .context("create schema")?;
        }
        if trace_v3 {
            for statement in MIGRATE_3_TO_4_COPY {
                sqlx::query(statement)
                    .execute(&mut *conn)
                    .await
                    .context("migrate 3 to 4")?;
            }
        }
        if v1 {
            for statement in MIGRATE_1_TO_2_COPY {
                sqlx::query(statement)
                    .execute(&mut *conn)
                    .await
                    .context("migrate 1 to 2")?;
            }
        }
        sqlx::query(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .execute(&mut *conn)
            .await
            .context("schema version")?;
        Ok(())
    }

    /// Create or upgrade the PostgreSQL schema, under an advisory lock so
    /// replicas starting together do not race.
    async fn migrate_postgres(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.context("migrate")?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .context("migration lock")?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await
            .context("schema version")?;
        let current: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *tx)
            .await
            .context("schema version")?
            .get(0);
        match current {
            Some(v) if v == SCHEMA_VERSION => return Ok(()),
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Config {
                    what: format!(
                        "the PostgreSQL store has schema version {v}, newer than this mqaudit's {SCHEMA_VERSION}"
                    ),
                });
            }
            _ => {}
        }
        // A trace table of versions 2 and 3 still has its index by time.
        let trace_v3 = sqlx::query(
            "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'trace_by_time'",
        )
        .fetch_optional(&mut *tx)
        .await
        .context("schema probe")?
        .is_some();
        if trace_v3 {
            for statement in MIGRATE_3_TO_4.iter().chain([&MIGRATE_3_TO_4_POSTGRES]) {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .context("migrate 3 to 4")?;
            }
        }
        for statement in SCHEMA.iter().chain(POSTGRES_ONLY) {
            sqlx::query(&postgres_ddl(statement))
                .execute(&mut *tx)
                .await
                .context("create schema")?;
        }
        if trace_v3 {
            for statement in MIGRATE_3_TO_4_COPY {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .context("migrate 3 to 4")?;
            }
        }
        sqlx::query("DELETE FROM schema_version")
            .execute(&mut *tx)
            .await
            .context("schema version")?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(SCHEMA_VERSION)
            .execute(&mut *tx)
            .await
            .context("schema version")?;
        tx.commit().await.context("migrate")?;
        Ok(())
    }

    /// Record the start of a run; returns its id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin_run(&self, flow: &str, now_ms: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("INSERT INTO runs (flow, started_ms) VALUES ($1, $2) RETURNING id")
            .bind(flow)
            .bind(now_ms)
            .fetch_one(&self.pool)
            .await
            .context("begin run")?;
        Ok(row.get(0))
    }

    /// Record the end of a run.
    ///
    /// # Errors
    /// Database errors.
    pub async fn finish_run(
        &self,
        id: i64,
        now_ms: i64,
        error: Option<&str>,
        windows: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET finished_ms = $1, result = $2, error = $3, windows = $4 WHERE id = $5",
        )
        .bind(now_ms)
        .bind(if error.is_some() {
            "failure"
        } else {
            "success"
        })
        .bind(error)
        .bind(windows)
        .bind(id)
        .execute(&self.pool)
        .await
        .context("finish run")?;
        Ok(())
    }

    /// Runs of a flow (or all), newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn runs(&self, flow: Option<&str>, limit: i64) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, flow, started_ms, finished_ms, result, error, windows FROM runs
             WHERE ($1 IS NULL OR flow = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(flow)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("read runs")?;
        Ok(rows
            .iter()
            .map(|r| Run {
                id: r.get(0),
                flow: r.get(1),
                started_ms: r.get(2),
                finished_ms: r.get(3),
                result: r.get(4),
                error: r.get(5),
                windows: r.get(6),
            })
            .collect())
    }

    /// Windows of a flow audited but not final.
    ///
    /// # Errors
    /// Database errors.
    pub async fn open_windows(&self, flow: &str) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT start_ms, end_ms FROM windows WHERE flow = $1 AND final = 0 ORDER BY start_ms",
        )
        .bind(flow)
        .fetch_all(&self.pool)
        .await
        .context("read open windows")?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The end of the latest audited window of a flow.
    ///
    /// # Errors
    /// Database errors.
    pub async fn latest_window_end(&self, flow: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MAX(end_ms) FROM windows WHERE flow = $1")
            .bind(flow)
            .fetch_one(&self.pool)
            .await
            .context("read latest window")?;
        Ok(row.get(0))
    }

    /// A window's current counts (`produced`, `consumed`, ...), if audited.
    ///
    /// # Errors
    /// Database errors.
    pub async fn window_counts(
        &self,
        flow: &str,
        start_ms: i64,
    ) -> Result<Option<BTreeMap<String, i64>>, StoreError> {
        let row = sqlx::query("SELECT counts FROM windows WHERE flow = $1 AND start_ms = $2")
            .bind(flow)
            .bind(start_ms)
            .fetch_optional(&self.pool)
            .await
            .context("read window")?;
        Ok(row.map(|r| json_map(&r.get::<String, _>(0))))
    }

    /// Findings of a window.
    ///
    /// # Errors
    /// Database errors.
    pub async fn window_findings(
        &self,
        flow: &str,
        window_start_ms: i64,
    ) -> Result<Vec<Finding>, StoreError> {
        Ok(self
            .window_stored(flow, window_start_ms)
            .await?
            .into_iter()
            .map(|s| s.finding)
            .collect())
    }

    async fn window_stored(
        &self,
        flow: &str,
        window_start_ms: i64,
    ) -> Result<Vec<Stored>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            finding_columns!(),
            " FROM findings WHERE flow = $1 AND window_start_ms = $2 ORDER BY key, id"
        ))
        .bind(flow)
        .bind(window_start_ms)
        .fetch_all(&self.pool)
        .await
        .context("read window findings")?;
        rows.iter().map(stored_from_row).collect()
    }

    /// Findings, filtered, most recently changed first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn findings(
        &self,
        flow: Option<&str>,
        stage: Option<&str>,
        since_ms: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Finding>, StoreError> {
        let rows = sqlx::query(
            concat!("SELECT ", finding_columns!(), " FROM findings WHERE ($1 IS NULL OR flow = $1) AND ($2 IS NULL OR stage = $2) AND ($3 IS NULL OR updated_ms >= $3) ORDER BY updated_ms DESC, key LIMIT $4"),
        )
        .bind(flow)
        .bind(stage)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("read findings")?;
        rows.iter()
            .map(|r| stored_from_row(r).map(|s| s.finding))
            .collect()
    }

    /// Every finding about one message: by key (any of its keys) or message id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn key_findings(
        &self,
        flow: Option<&str>,
        key: &str,
    ) -> Result<Vec<Finding>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            finding_columns!(),
            " FROM findings WHERE (key = $1 OR msg_id = $1 OR id = $1 OR (' ' || keys || ' ') LIKE ('% ' || $1 || ' %'))
              AND ($2 IS NULL OR flow = $2) ORDER BY window_start_ms, id"
        ))
        .bind(key)
        .bind(flow)
        .fetch_all(&self.pool)
        .await
        .context("read key findings")?;
        rows.iter()
            .map(|r| stored_from_row(r).map(|s| s.finding))
            .collect()
    }

    /// Write one window's audit atomically: its counts, the complete set of
    /// its findings (a missing message no longer missing becomes `resolved`,
    /// or `resolved_late` when it had been lost or dead-lettered — never
    /// deleted), and the counters they move.
    ///
    /// # Errors
    /// Database errors (nothing is written then).
    pub async fn save_window(
        &self,
        flow: &str,
        window: (i64, i64),
        counts: &WindowCounts,
        is_final: bool,
        findings: &[Finding],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let previous = self.window_stored(flow, window.0).await?;
        let mut tx = self.write_transaction().await.context("save window")?;
        self.check_fence(&mut tx, flow).await?;
        let counted_before: BTreeMap<String, i64> =
            sqlx::query("SELECT counted FROM windows WHERE flow = $1 AND start_ms = $2")
                .bind(flow)
                .bind(window.0)
                .fetch_optional(&mut *tx)
                .await
                .context("read window")?
                .map(|r| json_map(&r.get::<String, _>(0)))
                .unwrap_or_default();
        let (mut increments, counted) = count_increments(&counted_before, counts);
        let current: BTreeMap<&str, i64> = counts.iter().map(|(k, v)| (*k, *v)).collect();
        sqlx::query(
            "INSERT INTO windows (flow, start_ms, end_ms, produced, consumed, final, audited_ms, counts, counted)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (flow, start_ms) DO UPDATE SET end_ms = excluded.end_ms, produced = excluded.produced,
             consumed = excluded.consumed, final = excluded.final, audited_ms = excluded.audited_ms,
             counts = excluded.counts, counted = excluded.counted",
        )
        .bind(flow)
        .bind(window.0)
        .bind(window.1)
        .bind(current.get("produced").copied().unwrap_or(0))
        .bind(current.get("consumed").copied().unwrap_or(0))
        .bind(i64::from(is_final))
        .bind(now_ms)
        .bind(serde_json::to_string(&current).unwrap_or_else(|_| "{}".to_string()))
        .bind(serde_json::to_string(&counted).unwrap_or_else(|_| "{}".to_string()))
        .execute(&mut *tx)
        .await
        .context("write window")?;
        let rows = merge_findings(&previous, findings, now_ms, &mut increments);
        write_findings(&mut tx, flow, window.0, &rows).await?;
        for ((name, label), by) in &increments {
            sqlx::query(
                "INSERT INTO counters (flow, name, label, value) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (flow, name, label) DO UPDATE SET value = counters.value + excluded.value",
            )
            .bind(flow)
            .bind(name)
            .bind(label)
            .bind(by)
            .execute(&mut *tx)
            .await
            .context("count")?;
        }
        tx.commit().await.context("save window")?;
        Ok(())
    }

    /// A flow's counters, gauges and runs.
    ///
    /// # Errors
    /// Database errors.
    pub async fn totals(&self, flow: &str) -> Result<FlowTotals, StoreError> {
        let mut totals = FlowTotals::default();
        for r in sqlx::query("SELECT name, label, value FROM counters WHERE flow = $1")
            .bind(flow)
            .fetch_all(&self.pool)
            .await
            .context("read counters")?
        {
            totals
                .counters
                .entry(r.get(0))
                .or_default()
                .insert(r.get(1), r.get(2));
        }
        for r in sqlx::query(
            "SELECT status, COALESCE(stage, ''), CAST(SUM(count) AS BIGINT) FROM findings
             WHERE flow = $1 AND kind = 'missing' AND status IN ('pending', 'lost') GROUP BY status, stage",
        )
        .bind(flow)
        .fetch_all(&self.pool)
        .await
        .context("read gauges")?
        {
            let (status, stage, count): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
            if status == "pending" {
                totals.pending += count;
            } else {
                totals.lost_now.insert(stage, count);
            }
        }
        let rows = sqlx::query("SELECT result, COUNT(*) FROM runs WHERE flow = $1 AND result IS NOT NULL GROUP BY result")
            .bind(flow)
            .fetch_all(&self.pool)
            .await
            .context("read runs")?;
        // Runs pruned by retention still count: the counter never goes down.
        totals.runs = rows
            .iter()
            .map(|r| {
                let result: String = r.get(0);
                let pruned = totals.counter("runs_pruned", &result);
                (result, r.get::<i64, _>(1) + pruned)
            })
            .collect();
        let row =
            sqlx::query("SELECT MAX(finished_ms) FROM runs WHERE flow = $1 AND result = 'success'")
                .bind(flow)
                .fetch_one(&self.pool)
                .await
                .context("read runs")?;
        totals.last_success_ms = row.get(0);
        Ok(totals)
    }

    /// Delete one batch (at most `batch` rows per table) of what retention
    /// lets go, each table in its own short transaction so an audit run
    /// never waits long for the write lock: trace rows, final windows and
    /// the findings of final windows older than their cutoffs, and runs
    /// older than theirs (never a flow's latest run of a result; pruned runs
    /// keep counting in `mqaudit_audit_runs_total`). Counters are separate
    /// rows and never pruned.
    ///
    /// # Errors
    /// Database errors; what was deleted before stays deleted.
    pub async fn prune(&self, cutoffs: &Cutoffs, batch: i64) -> Result<Pruned, StoreError> {
        let id = self.row_id();
        let trace = self
            .delete_batch(
                &format!("DELETE FROM trace WHERE {id} IN (SELECT {id} FROM trace WHERE time_ms < $1 LIMIT $2)"),
                cutoffs.trace_ms,
                batch,
            )
            .await?;
        let findings = self
            .delete_batch(
                &format!("DELETE FROM findings WHERE {id} IN (SELECT f.{id} FROM findings f JOIN windows w
                 ON w.flow = f.flow AND w.start_ms = f.window_start_ms
                 WHERE w.final = 1 AND w.end_ms < $1 LIMIT $2)"),
                cutoffs.findings_ms,
                batch,
            )
            .await?;
        let windows = self
            .delete_batch(
                &format!("DELETE FROM windows WHERE {id} IN (SELECT w.{id} FROM windows w WHERE w.final = 1
                 AND w.end_ms < $1 AND NOT EXISTS (SELECT 1 FROM findings f
                 WHERE f.flow = w.flow AND f.window_start_ms = w.start_ms) LIMIT $2)"),
                cutoffs.windows_ms,
                batch,
            )
            .await?;
        let runs = self.prune_runs(cutoffs.runs_ms, batch).await?;
        Ok(Pruned {
            trace,
            windows,
            findings,
            runs,
        })
    }

    async fn delete_batch(
        &self,
        statement: &str,
        cutoff: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(statement)
            .bind(cutoff)
            .bind(batch)
            .execute(&self.pool)
            .await
            .context("prune")?;
        Ok(done.rows_affected())
    }

    async fn prune_runs(&self, cutoff: i64, batch: i64) -> Result<u64, StoreError> {
        let mut tx = self.write_transaction().await.context("prune runs")?;
        // Keep each flow's latest run of each result (the last success's time).
        let victims = "SELECT r.id FROM runs r WHERE r.finished_ms IS NOT NULL AND r.started_ms < $1
             AND r.id < (SELECT MAX(id) FROM runs l WHERE l.flow = r.flow AND l.result = r.result) LIMIT $2";
        sqlx::query(&format!(
            "INSERT INTO counters (flow, name, label, value)
             SELECT flow, 'runs_pruned', result, COUNT(*) FROM runs WHERE id IN ({victims}) GROUP BY flow, result
             ON CONFLICT (flow, name, label) DO UPDATE SET value = counters.value + excluded.value"
        ))
        .bind(cutoff)
        .bind(batch)
        .execute(&mut *tx)
        .await
        .context("count pruned runs")?;
        let done = sqlx::query(&format!("DELETE FROM runs WHERE id IN ({victims})"))
            .bind(cutoff)
            .bind(batch)
            .execute(&mut *tx)
            .await
            .context("prune runs")?;
        tx.commit().await.context("prune runs")?;
        Ok(done.rows_affected())
    }

    /// The store's size on disk (database and write-ahead log) and its rows
    /// per table.
    ///
    /// # Errors
    /// Database errors.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let size = match &self.backend {
            Backend::Sqlite { .. } => {
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
                    .to_string()
            }
            // Tables with their indexes and TOAST: what the store adds to
            // a database it may share with others.
            Backend::Postgres => format!(
                "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) FROM pg_class c
                 WHERE c.relkind = 'r' AND pg_table_is_visible(c.oid) AND c.relname IN ('{}')",
                STORE_TABLES.join("', '")
            ),
        };
        let bytes: i64 = sqlx::query(&size)
            .fetch_one(&self.pool)
            .await
            .context("store size")?
            .get(0);
        let mut stats = StoreStats {
            bytes: u64::try_from(bytes).unwrap_or(0) + self.wal_bytes(),
            rows: BTreeMap::new(),
        };
        for table in STORE_TABLES {
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&self.pool)
                .await
                .context("count rows")?
                .get(0);
            stats.rows.insert(table, n);
        }
        Ok(stats)
    }

    fn wal_bytes(&self) -> u64 {
        match &self.backend {
            Backend::Sqlite { path } => {
                std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len())
            }
            Backend::Postgres => 0,
        }
    }

    /// A source cursor: the next offset to read of (source, broker, queue).
    ///
    /// # Errors
    /// Database errors.
    pub async fn cursor(
        &self,
        flow: &str,
        source: &str,
        broker: &str,
        queue_id: i32,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT next_offset FROM cursors WHERE flow = $1 AND source = $2 AND broker = $3 AND queue_id = $4")
            .bind(flow)
            .bind(source)
            .bind(broker)
            .bind(queue_id)
            .fetch_optional(&self.pool)
            .await
            .context("read cursor")?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every queue cursor of a source, as (broker, queue, next offset) in
    /// order: whoever wrote trace rows moved one ([`Store::ingest_trace_pulls`]
    /// writes rows and cursors together).
    ///
    /// # Errors
    /// Database errors.
    pub async fn cursor_positions(
        &self,
        flow: &str,
        source: &str,
    ) -> Result<Vec<(String, i32, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT broker, queue_id, next_offset FROM cursors WHERE flow = $1 AND source = $2 ORDER BY broker, queue_id",
        )
        .bind(flow)
        .bind(source)
        .fetch_all(&self.pool)
        .await
        .context("read cursors")?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<i64, _>(1) as i32, r.get(2)))
            .collect())
    }

    /// The time up to which every queue of a source was read to its end
    /// (the least over its queues); `None` while a queue never was.
    ///
    /// # Errors
    /// Database errors.
    pub async fn caught_up(&self, flow: &str, source: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), COUNT(caught_up_ms), MIN(caught_up_ms) FROM cursors WHERE flow = $1 AND source = $2",
        )
        .bind(flow)
        .bind(source)
        .fetch_one(&self.pool)
        .await
        .context("read cursors")?;
        let (queues, read, least): (i64, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        Ok((queues > 0 && read == queues).then_some(least).flatten())
    }

    /// Store ingested trace rows and advance the cursor, in one transaction;
    /// `caught_up_ms` when the queue was read to its end.
    ///
    /// # Errors
    /// Database errors (nothing is written then).
    pub async fn ingest_trace(
        &self,
        cursor: &Cursor<'_>,
        rows: &[TraceRow],
        next_offset: i64,
        caught_up_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        self.ingest_trace_halves(cursor, rows, &[], next_offset, caught_up_ms)
            .await
    }

    /// [`Store::ingest_trace`], with consumption halves split across trace
    /// messages: a half whose other half is stored becomes a consumption
    /// row (the group's, at the `SubBefore`'s time) and the stored half is
    /// removed; a half without one waits for it, in the same transaction.
    ///
    /// # Errors
    /// Database errors (nothing is written then).
    pub async fn ingest_trace_halves(
        &self,
        cursor: &Cursor<'_>,
        rows: &[TraceRow],
        halves: &[SubHalf],
        next_offset: i64,
        caught_up_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        self.ingest_trace_pulls(&[TracePull {
            cursor: *cursor,
            rows,
            halves,
            next_offset,
            caught_up_ms,
        }])
        .await
        .map(|_| ())
    }

    /// Several queues' pulls (rows, halves, advanced cursors) in one
    /// transaction: a commit, and its sync, per round of pulls rather than
    /// per pull; rows go in many to a statement.
    ///
    /// # Errors
    /// Database errors (nothing is written then).
    pub async fn ingest_trace_pulls(
        &self,
        pulls: &[TracePull<'_>],
    ) -> Result<TraceWritten, StoreError> {
        let mut written = TraceWritten::default();
        let mut tx = self.write_transaction().await.context("ingest trace")?;
        let flows: std::collections::BTreeSet<&str> = pulls.iter().map(|p| p.cursor.flow).collect();
        for flow in flows {
            self.check_fence(&mut tx, flow).await?;
        }
        // The halves of all pulls meet together, in the order they were read.
        let mut halves: BTreeMap<(&str, &str), Vec<&SubHalf>> = BTreeMap::new();
        for pull in pulls {
            let Cursor { flow, source, .. } = pull.cursor;
            for row in pull.rows {
                written.note(row.side, row.time_ms);
            }
            Self::insert_trace_rows(&mut tx, self.marks(), flow, source, pull.rows).await?;
            halves
                .entry((flow, source))
                .or_default()
                .extend(pull.halves);
        }
        for ((flow, source), halves) in halves {
            let met = Self::meet_halves(&mut tx, self.marks(), flow, source, &halves).await?;
            for row in &met {
                written.note(TraceSide::Sub, row.time_ms);
            }
            Self::insert_trace_rows(&mut tx, self.marks(), flow, source, &met).await?;
        }
        for pull in pulls {
            let Cursor {
                flow,
                source,
                broker,
                queue_id,
            } = pull.cursor;
            sqlx::query(
                "INSERT INTO cursors (flow, source, broker, queue_id, next_offset, caught_up_ms) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (flow, source, broker, queue_id) DO UPDATE SET next_offset = excluded.next_offset,
                 caught_up_ms = COALESCE(excluded.caught_up_ms, cursors.caught_up_ms)",
            )
            .bind(flow)
            .bind(source)
            .bind(broker)
            .bind(queue_id)
            .bind(pull.next_offset)
            .bind(pull.caught_up_ms)
            .execute(&mut *tx)
            .await
            .context("advance cursor")?;
        }
        tx.commit().await.context("ingest trace")?;
        Ok(written)
    }

    /// Trace rows, many to a statement; a duplicate (a re-read trace
    /// message) is ignored.
    async fn insert_trace_rows(
        tx: &mut AnyConnection,
        marks: Marks,
        flow: &str,
        source: &str,
        rows: &[TraceRow],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(TRACE_ROWS_PER_INSERT) {
            let sql = trace_insert(marks, chunk.len());
            let mut insert = sqlx::query(&sql);
            for row in chunk {
                insert = insert
                    .bind(flow)
                    .bind(source)
                    .bind(row.side.as_str())
                    .bind(&row.msg_id)
                    .bind(&row.keys)
                    .bind(row.time_ms)
                    .bind(&row.offset_msg_id)
                    .bind(&row.store_host)
                    .bind(&row.tags)
                    .bind(i64::from(row.success))
                    .bind(row.msg_type)
                    .bind(row.reconsume)
                    .bind(&row.tx_state)
                    .bind(i64::from(row.batch));
            }
            insert.execute(&mut *tx).await.context("write trace")?;
        }
        Ok(())
    }

    /// Meet `halves` (read in this order) with each other, then with the
    /// halves stored earlier, and return the consumptions they complete;
    /// a met stored half is removed, a half still alone is stored to wait.
    /// A statement takes many halves: one per half made the store, not
    /// the broker, the ingest's bottleneck (a 5.x consumer's `SubBefore`
    /// often lands in another trace message than its `SubAfter`).
    async fn meet_halves(
        tx: &mut AnyConnection,
        marks: Marks,
        flow: &str,
        source: &str,
        halves: &[&SubHalf],
    ) -> Result<Vec<TraceRow>, StoreError> {
        type HalfId<'h> = (&'h str, &'h str, HalfKind);
        fn id(h: &SubHalf) -> HalfId<'_> {
            (h.request_id.as_str(), h.msg_id.as_str(), h.kind)
        }
        let mut met = Vec::new();
        // Those still alone, in reading order; a duplicate of one is one.
        let mut alone: Vec<Option<&SubHalf>> = Vec::new();
        let mut alone_at: HashMap<HalfId<'_>, usize> = HashMap::new();
        for &half in halves {
            let (request_id, msg_id, kind) = id(half);
            if let Some(at) = alone_at.remove(&(request_id, msg_id, kind.other())) {
                if let Some(other) = alone[at].take() {
                    met.push(consumption(half, other));
                }
            } else if let std::collections::hash_map::Entry::Vacant(slot) = alone_at.entry(id(half))
            {
                slot.insert(alone.len());
                alone.push(Some(half));
            }
        }
        let alone: Vec<&SubHalf> = alone.into_iter().flatten().collect();
        let mut stored_met = std::collections::HashSet::new();
        for chunk in alone.chunks(HALVES_PER_STATEMENT) {
            // An OR of whole keys, not a row-value IN: SQLite searches the
            // key for each term, where the IN form scans the flow's halves.
            let terms: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = 2 + 3 * i;
                    format!(
                        "(request_id = {} AND msg_id = {} AND half = {})",
                        marks.nth(n),
                        marks.nth(n + 1),
                        marks.nth(n + 2)
                    )
                })
                .collect();
            let sql = format!(
                "DELETE FROM trace_halves WHERE flow = {} AND ({}) \
                 RETURNING request_id, msg_id, half, time_ms, retry_times, keys, success",
                marks.nth(1),
                terms.join(" OR ")
            );
            let mut delete = sqlx::query(&sql).bind(flow);
            for half in chunk {
                delete = delete
                    .bind(&half.request_id)
                    .bind(&half.msg_id)
                    .bind(half.kind.other().as_str());
            }
            let found = delete
                .fetch_all(&mut *tx)
                .await
                .context("match trace halves")?;
            for row in found {
                let kind = if row.get::<String, _>(2) == HalfKind::Before.as_str() {
                    HalfKind::Before
                } else {
                    HalfKind::After
                };
                let other = SubHalf {
                    kind,
                    request_id: row.get(0),
                    msg_id: row.get(1),
                    time_ms: row.get(3),
                    retry_times: row.get(4),
                    keys: row.get(5),
                    success: row.get::<i64, _>(6) != 0,
                };
                let Some(&half) = chunk.iter().find(|h| {
                    h.kind == kind.other()
                        && h.request_id == other.request_id
                        && h.msg_id == other.msg_id
                }) else {
                    continue;
                };
                met.push(consumption(half, &other));
                stored_met.insert(id(half));
            }
        }
        let waiting: Vec<&SubHalf> = alone
            .into_iter()
            .filter(|h| !stored_met.contains(&id(h)))
            .collect();
        for chunk in waiting.chunks(HALVES_PER_STATEMENT) {
            const COLUMNS: usize = 9;
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", marks.run(i * COLUMNS + 1, COLUMNS)))
                .collect();
            let sql = format!(
                "INSERT INTO trace_halves (flow, request_id, msg_id, half, time_ms, retry_times, keys, success, source) \
                 VALUES {} ON CONFLICT DO NOTHING",
                values.join(", ")
            );
            let mut insert = sqlx::query(&sql);
            for half in chunk {
                insert = insert
                    .bind(flow)
                    .bind(&half.request_id)
                    .bind(&half.msg_id)
                    .bind(half.kind.as_str())
                    .bind(half.time_ms)
                    .bind(half.retry_times)
                    .bind(&half.keys)
                    .bind(i64::from(half.success))
                    .bind(source);
            }
            insert.execute(&mut *tx).await.context("write trace half")?;
        }
        Ok(met)
    }

    /// Forget `flow`'s unmatched halves older than `cutoff_ms`: their other
    /// half will not come (the consumer died between the two, its trace was
    /// dropped, or — for a group-less `SubAfter` — it was another group's).
    /// Returns how many were forgotten.
    ///
    /// # Errors
    /// Database errors.
    pub async fn forget_halves(&self, flow: &str, cutoff_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM trace_halves WHERE flow = $1 AND time_ms < $2")
            .bind(flow)
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await
            .context("forget trace halves")?;
        Ok(done.rows_affected())
    }

    /// Trace rows of a flow's side in `[from, to)`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn trace_rows(
        &self,
        flow: &str,
        side: TraceSide,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<TraceRow>, StoreError> {
        let mut rows = Vec::new();
        self.for_each_trace_row(flow, side, (from_ms, to_ms), |row| {
            rows.push(row);
            Ok::<(), StoreError>(())
        })
        .await?;
        Ok(rows)
    }

    /// Hand the trace rows of a flow's side in `[from, to)` to `sink` as
    /// the database returns them (a window never held whole).
    ///
    /// # Errors
    /// Database errors, and the sink's.
    pub async fn for_each_trace_row<E: From<StoreError>>(
        &self,
        flow: &str,
        side: TraceSide,
        (from_ms, to_ms): (i64, i64),
        mut sink: impl FnMut(TraceRow) -> Result<(), E> + Send,
    ) -> Result<(), E> {
        use futures_util::TryStreamExt as _;
        let mut rows = sqlx::query(
            concat!("SELECT ", trace_columns!(), " FROM trace WHERE flow = $1 AND side = $2 AND time_ms >= $3 AND time_ms < $4 ORDER BY time_ms"),
        )
        .bind(flow)
        .bind(side.as_str())
        .bind(from_ms)
        .bind(to_ms)
        .fetch(&self.pool);
        while let Some(row) = rows.try_next().await.context("read trace")? {
            sink(trace_from_row(&row)?)?;
        }
        Ok(())
    }

    /// The transaction state recorded for each of `msg_ids`: the latest
    /// decision (commit or rollback) when there is one, else the latest
    /// answer. A decision is final: a 5.x broker writes its commit/rollback
    /// op messages in batches (every `transactionOpBatchInterval`), so it
    /// can still check a transaction the producer already decided, and a
    /// check listener answering `UNKNOW` then must not undo the decision.
    ///
    /// # Errors
    /// Database errors.
    pub async fn tx_states(
        &self,
        flow: &str,
        msg_ids: &[&str],
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let mut out = BTreeMap::new();
        for chunk in msg_ids.chunks(500) {
            let marks = Marks::Numbered.run(2, chunk.len());
            let sql = format!(
                "SELECT msg_id, tx_state, time_ms FROM trace WHERE flow = $1 AND side = 'tx' AND msg_id IN ({marks})"
            );
            let mut query = sqlx::query(&sql).bind(flow);
            for id in chunk {
                query = query.bind(*id);
            }
            // Ordered here, not by the database: an ORDER BY time_ms would
            // have it walk all the flow's transaction rows in key order
            // instead of looking up these ids.
            let mut rows = query.fetch_all(&self.pool).await.context("read tx")?;
            rows.sort_by_key(|r| r.get::<i64, _>(2));
            for r in rows {
                let state: Option<String> = r.get(1);
                let Some(state) = state else { continue };
                let decided = |s: &str| {
                    matches!(
                        super::model::TxState::from_java(s),
                        Some(super::model::TxState::Commit | super::model::TxState::Rollback)
                    )
                };
                let id: String = r.get(0);
                if decided(&state) || !out.get(&id).is_some_and(|s: &String| decided(s)) {
                    out.insert(id, state);
                }
            }
        }
        Ok(out)
    }

    /// Failed deliveries (`SubAfter` with success = false) per message id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn failed_attempts(
        &self,
        flow: &str,
        msg_ids: &[&str],
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut out = BTreeMap::new();
        for chunk in msg_ids.chunks(500) {
            let marks = Marks::Numbered.run(2, chunk.len());
            let sql = format!(
                "SELECT msg_id, COUNT(*) FROM trace WHERE flow = $1 AND side = 'sub' AND success = 0 AND msg_id IN ({marks}) GROUP BY msg_id"
            );
            let mut query = sqlx::query(&sql).bind(flow);
            for id in chunk {
                query = query.bind(*id);
            }
            for r in query.fetch_all(&self.pool).await.context("read attempts")? {
                out.insert(r.get(0), r.get(1));
            }
        }
        Ok(out)
    }

    /// Every trace row about one message: by message id or any of its keys.
    ///
    /// # Errors
    /// Database errors.
    pub async fn trace_for(&self, flow: &str, key: &str) -> Result<Vec<TraceRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            trace_columns!(),
            " FROM trace WHERE flow = $1 AND (msg_id = $2 OR (' ' || keys || ' ') LIKE ('% ' || $2 || ' %')) ORDER BY time_ms"
        ))
        .bind(flow)
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .context("read trace")?;
        rows.iter().map(trace_from_row).collect()
    }

    /// The id and keys a message was stored under, when learned.
    ///
    /// # Errors
    /// Database errors.
    pub async fn alias(
        &self,
        flow: &str,
        msg_id: &str,
    ) -> Result<Option<(String, Vec<String>)>, StoreError> {
        let row =
            sqlx::query("SELECT stored_id, keys FROM aliases WHERE flow = $1 AND msg_id = $2")
                .bind(flow)
                .bind(msg_id)
                .fetch_optional(&self.pool)
                .await
                .context("read alias")?;
        Ok(row.map(|r| {
            let keys: String = r.get(1);
            (
                r.get(0),
                keys.split(' ')
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        }))
    }

    /// Remember the id and keys a message was stored under.
    ///
    /// # Errors
    /// Database errors.
    pub async fn save_alias(
        &self,
        flow: &str,
        msg_id: &str,
        stored_id: &str,
        keys: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO aliases (flow, msg_id, stored_id, keys) VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow, msg_id) DO UPDATE SET stored_id = excluded.stored_id, keys = excluded.keys",
        )
        .bind(flow)
        .bind(msg_id)
        .bind(stored_id)
        .bind(keys.join(" "))
        .execute(&self.pool)
        .await
        .context("write alias")?;
        Ok(())
    }

    /// A fact learned about a flow (e.g. the group's subscription), with when.
    ///
    /// # Errors
    /// Database errors.
    pub async fn learned(
        &self,
        flow: &str,
        name: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let row =
            sqlx::query("SELECT value, updated_ms FROM learned WHERE flow = $1 AND name = $2")
                .bind(flow)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .context("read learned")?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Remember a fact about a flow.
    ///
    /// # Errors
    /// Database errors.
    pub async fn learn(
        &self,
        flow: &str,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO learned (flow, name, value, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow, name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
        )
        .bind(flow)
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .context("write learned")?;
        Ok(())
    }
}

/// How a many-parameter statement marks its parameters. On SQLite `$n` is
/// a named parameter, and binding one looks its name up in a list: a
/// statement of thousands of them spent most of the trace ingest there.
/// SQLite's anonymous `?` binds in order at no cost; PostgreSQL knows only
/// `$n`. A statement uses one kind throughout (sqlx numbers anonymous
/// parameters from its first).
#[derive(Debug, Clone, Copy)]
enum Marks {
    /// SQLite: `?`.
    Anonymous,
    /// PostgreSQL: `$1`, `$2`, ...
    Numbered,
}

impl Marks {
    /// The mark of parameter `n` (from 1).
    fn nth(self, n: usize) -> String {
        match self {
            Marks::Anonymous => "?".to_string(),
            Marks::Numbered => format!("${n}"),
        }
    }

    /// `count` parameters from `from`, comma-separated.
    fn run(self, from: usize, count: usize) -> String {
        (from..from + count)
            .map(|n| self.nth(n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The consumption two met halves make: the group's, at the `SubBefore`'s
/// time and delivery attempt, with the `SubAfter`'s outcome (and its keys,
/// unless it has none).
fn consumption(one: &SubHalf, other: &SubHalf) -> TraceRow {
    let (before, after) = match one.kind {
        HalfKind::Before => (one, other),
        HalfKind::After => (other, one),
    };
    TraceRow {
        side: TraceSide::Sub,
        msg_id: before.msg_id.clone(),
        keys: if after.keys.is_empty() {
            before.keys.clone()
        } else {
            after.keys.clone()
        },
        time_ms: before.time_ms,
        offset_msg_id: None,
        store_host: None,
        tags: None,
        success: after.success,
        msg_type: 0,
        reconsume: before.retry_times,
        tx_state: None,
        batch: false,
    }
}

/// An INSERT of `rows` trace rows, a duplicate (a re-read trace message)
/// ignored.
fn trace_insert(marks: Marks, rows: usize) -> String {
    const COLUMNS: usize = 14;
    let mut sql = String::from(concat!(
        "INSERT INTO trace (flow, source, ",
        trace_columns!(),
        ") VALUES "
    ));
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&marks.run(row * COLUMNS + 1, COLUMNS));
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

/// A statement of [`SCHEMA`] in PostgreSQL's types: 64-bit integers, a
/// serial id, and text compared byte by byte as SQLite does (findings and
/// keys list in the same order from either store).
fn postgres_ddl(statement: &str) -> String {
    statement
        .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
        .replace("TEXT", "TEXT COLLATE \"C\"")
}

fn json_map(text: &str) -> BTreeMap<String, i64> {
    serde_json::from_str(text).unwrap_or_default()
}

fn stored_from_row(r: &AnyRow) -> Result<Stored, StoreError> {
    let kind: String = r.get(3);
    let status: String = r.get(9);
    let stage: Option<String> = r.get(10);
    let evidence: Option<String> = r.get(11);
    let attrs: Option<String> = r.get(12);
    let keys: String = r.get(6);
    let corrupt = |what: &'static str, value: &str| StoreError::Corrupt {
        what,
        value: value.to_string(),
    };
    Ok(Stored {
        finding: Finding {
            flow: r.get(0),
            window_start_ms: r.get(1),
            id: r.get(2),
            kind: FindingKind::parse(&kind).ok_or_else(|| corrupt("findings.kind", &kind))?,
            key: r.get(4),
            msg_id: r.get(5),
            keys: keys
                .split(' ')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect(),
            count: r.get(7),
            produced_at_ms: r.get(8),
            status: Status::parse(&status).ok_or_else(|| corrupt("findings.status", &status))?,
            stage: match stage {
                Some(s) => Some(Stage::parse(&s).ok_or_else(|| corrupt("findings.stage", &s))?),
                None => None,
            },
            evidence: evidence.and_then(|e| serde_json::from_str(&e).ok()),
            attrs: attrs.and_then(|e| serde_json::from_str(&e).ok()),
            first_seen_ms: r.get(13),
            updated_ms: r.get(14),
        },
        counted: r.get::<i64, _>(15) != 0,
    })
}

fn trace_from_row(r: &AnyRow) -> Result<TraceRow, StoreError> {
    let side: String = r.get(0);
    Ok(TraceRow {
        side: TraceSide::parse(&side)?,
        msg_id: r.get(1),
        keys: r.get(2),
        time_ms: r.get(3),
        offset_msg_id: r.get(4),
        store_host: r.get(5),
        tags: r.get(6),
        success: r.get::<i64, _>(7) != 0,
        msg_type: r.get(8),
        reconsume: r.get(9),
        tx_state: r.get(10),
        batch: r.get::<i64, _>(11) != 0,
    })
}

/// Counters move by what a window adds beyond its most so far: the
/// increments, and the window's new "most so far".
fn count_increments(
    counted_before: &BTreeMap<String, i64>,
    counts: &WindowCounts,
) -> (Increments, BTreeMap<String, i64>) {
    let mut increments = Increments::new();
    let mut counted = counted_before.clone();
    for (name, value) in counts {
        let before = counted_before.get(*name).copied().unwrap_or(0);
        if *value > before {
            *increments
                .entry((name.to_string(), String::new()))
                .or_default() += value - before;
            counted.insert(name.to_string(), *value);
        }
    }
    (increments, counted)
}

/// The window's findings after this run: earlier missing messages now
/// consumed become `resolved` (or `resolved_late`, counted, when they had
/// been declared lost); a loss or dead letter is counted the first time
/// only; a verdict's time changes only when the verdict does.
fn merge_findings(
    previous: &[Stored],
    findings: &[Finding],
    now_ms: i64,
    increments: &mut Increments,
) -> Vec<Stored> {
    let mut count = |name: &str, label: &str, by: i64| {
        *increments
            .entry((name.to_string(), label.to_string()))
            .or_default() += by;
    };
    let mut rows: Vec<Stored> = Vec::new();
    let new_missing: std::collections::BTreeSet<&str> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::Missing)
        .map(|f| f.id.as_str())
        .collect();
    for old in previous
        .iter()
        .filter(|s| s.finding.kind == FindingKind::Missing)
        .filter(|s| !new_missing.contains(s.finding.id.as_str()))
    {
        let status = match old.finding.status {
            Status::Pending => Status::Resolved,
            Status::Lost | Status::DeadLetter => {
                count("resolved_late", "", old.finding.count);
                Status::ResolvedLate
            }
            other => other,
        };
        let mut finding = old.finding.clone();
        if status != finding.status {
            finding.status = status;
            finding.updated_ms = now_ms;
        }
        rows.push(Stored {
            finding,
            counted: old.counted,
        });
    }
    for f in findings {
        let old = previous
            .iter()
            .find(|s| s.finding.id == f.id && s.finding.kind == f.kind);
        let mut counted = old.is_some_and(|s| s.counted);
        if f.kind == FindingKind::Missing && !counted {
            match f.status {
                Status::Lost => {
                    count("lost", f.stage.map_or("", Stage::as_str), f.count);
                    counted = true;
                }
                Status::DeadLetter => {
                    count("dead_lettered", "", f.count);
                    counted = true;
                }
                _ => {}
            }
        } else if f.kind == FindingKind::Missing
            && f.status == Status::DeadLetter
            && old.is_some_and(|s| s.finding.status == Status::Lost)
        {
            // A loss corrected by a DLQ copy found later: the DLQ counter
            // still sees the message (the lost counter never goes down).
            count("dead_lettered", "", f.count);
        }
        let mut finding = f.clone();
        if let Some(old) = old {
            finding.first_seen_ms = old.finding.first_seen_ms;
            if (old.finding.status, old.finding.stage, old.finding.count)
                == (f.status, f.stage, f.count)
            {
                finding.updated_ms = old.finding.updated_ms;
            }
        }
        rows.push(Stored { finding, counted });
    }
    rows
}

/// Replace a window's findings with `rows`.
async fn write_findings(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    flow: &str,
    window_start_ms: i64,
    rows: &[Stored],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM findings WHERE flow = $1 AND window_start_ms = $2")
        .bind(flow)
        .bind(window_start_ms)
        .execute(&mut **tx)
        .await
        .context("replace findings")?;
    for s in rows {
        let f = &s.finding;
        sqlx::query(concat!(
            "INSERT INTO findings (",
            finding_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(flow)
        .bind(window_start_ms)
        .bind(&f.id)
        .bind(f.kind.as_str())
        .bind(&f.key)
        .bind(&f.msg_id)
        .bind(f.keys.join(" "))
        .bind(f.count)
        .bind(f.produced_at_ms)
        .bind(f.status.as_str())
        .bind(f.stage.map(Stage::as_str))
        .bind(f.evidence.as_ref().map(|e| e.to_string()))
        .bind(f.attrs.as_ref().map(|e| e.to_string()))
        .bind(f.first_seen_ms)
        .bind(f.updated_ms)
        .bind(i64::from(s.counted))
        .execute(&mut **tx)
        .await
        .context("write finding")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mqaudit-store-{name}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn missing(id: &str, status: Status, stage: Stage) -> Finding {
        Finding {
            flow: "f".into(),
            window_start_ms: 0,
            id: id.into(),
            kind: FindingKind::Missing,
            key: id.into(),
            msg_id: None,
            keys: vec![id.into()],
            count: 1,
            produced_at_ms: Some(1),
            status,
            stage: Some(stage),
            evidence: None,
            attrs: None,
            first_seen_ms: 1,
            updated_ms: 1,
        }
    }

    #[tokio::test]
    async fn a_version_1_store_is_upgraded_and_its_totals_carry_on() {
        let d = dir("v1");
        std::fs::create_dir_all(&d).expect("dir");
        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}?mode=rwc",
            d.join("audit.db").display()
        ))
        .await
        .expect("create");
        for statement in [
            "CREATE TABLE windows (flow TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, produced INTEGER NOT NULL, consumed INTEGER NOT NULL, final INTEGER NOT NULL, audited_ms INTEGER NOT NULL, PRIMARY KEY (flow, start_ms))",
            "CREATE TABLE findings (flow TEXT NOT NULL, window_start_ms INTEGER NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, count INTEGER NOT NULL, produced_at_ms INTEGER, status TEXT NOT NULL, stage TEXT, evidence TEXT, first_seen_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, PRIMARY KEY (flow, window_start_ms, key, kind))",
            "CREATE INDEX findings_by_key ON findings (key)",
            "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER, result TEXT, error TEXT, windows INTEGER NOT NULL DEFAULT 0)",
            "CREATE TABLE cursors (flow TEXT NOT NULL, source TEXT NOT NULL, broker TEXT NOT NULL, queue_id INTEGER NOT NULL, next_offset INTEGER NOT NULL, PRIMARY KEY (flow, source, broker, queue_id))",
            "CREATE TABLE trace (flow TEXT NOT NULL, side TEXT NOT NULL, key TEXT NOT NULL, msg_id TEXT NOT NULL, time_ms INTEGER NOT NULL, offset_msg_id TEXT, store_host TEXT, source TEXT NOT NULL, PRIMARY KEY (flow, side, msg_id, key, time_ms, source))",
            "INSERT INTO windows VALUES ('f', 0, 60000, 10, 8, 1, 5)",
            "INSERT INTO findings VALUES ('f', 0, 'k8', 'missing', 1, 1, 'lost', 'consume', NULL, 1, 2)",
            "INSERT INTO findings VALUES ('f', 0, 'k7', 'missing', 1, 1, 'dead_letter', 'dead_letter', NULL, 1, 2)",
            "INSERT INTO findings VALUES ('f', 0, 'k0', 'duplicated', 1, NULL, 'final', NULL, NULL, 1, 2)",
            "INSERT INTO runs (flow, started_ms, finished_ms, result, windows) VALUES ('f', 1, 2, 'success', 1)",
            "INSERT INTO cursors VALUES ('f', 'trace', 'broker-a', 0, 42)",
        ] {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .expect(statement);
        }
        pool.close().await;

        let store = Store::open(&d).await.expect("upgrade");
        let totals = store.totals("f").await.expect("totals");
        assert_eq!(totals.counter("produced", ""), 10);
        assert_eq!(totals.counter("consumed", ""), 8);
        assert_eq!(totals.counter("lost", "consume"), 1);
        assert_eq!(totals.counter("dead_lettered", ""), 1);
        assert_eq!(totals.counter("duplicated", ""), 1);
        assert_eq!(totals.runs, [("success".to_string(), 1)]);
        let findings = store.window_findings("f", 0).await.expect("findings");
        assert_eq!(findings.len(), 3);
        // The old trace rows lack what the audit reads now: re-read from the brokers.
        assert_eq!(
            store
                .cursor("f", "trace", "broker-a", 0)
                .await
                .expect("cursor"),
            None
        );
        // Re-saving the same window adds nothing to the carried-over counters.
        let mut counts = WindowCounts::new();
        counts.insert("produced", 10);
        counts.insert("consumed", 8);
        store
            .save_window("f", (0, 60_000), &counts, true, &findings, 9)
            .await
            .expect("save");
        assert_eq!(
            store.totals("f").await.expect("totals").counters,
            totals.counters
        );
        // Opening again is a no-op.
        drop(store);
        let again = Store::open(&d).await.expect("reopen");
        assert_eq!(
            again.totals("f").await.expect("totals").counters,
            totals.counters
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_version_3_trace_table_is_re_keyed_by_time_and_its_rows_carry_over() {
        let d = dir("v3");
        drop(Store::open(&d).await.expect("create"));
        // Back to version 3's trace table, with rows of every side.
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", d.join("audit.db").display()))
            .await
            .expect("open");
        let old_row = |side: &str, id: &str, time: i64, success: i64, tx: &str| {
            format!(
                "INSERT INTO trace (flow, side, msg_id, time_ms, keys, offset_msg_id, store_host, tags, success, msg_type, reconsume, tx_state, batch, source)
                 VALUES ('f', '{side}', '{id}', {time}, 'key-{id}', NULL, NULL, NULL, {success}, 0, 0, {tx}, 0, 'rocketmq_trace')"
            )
        };
        for statement in [
            "DROP TABLE trace".to_string(),
            "CREATE TABLE trace (flow TEXT NOT NULL, side TEXT NOT NULL, msg_id TEXT NOT NULL, time_ms INTEGER NOT NULL, keys TEXT NOT NULL, offset_msg_id TEXT, store_host TEXT, tags TEXT, success INTEGER NOT NULL, msg_type INTEGER NOT NULL, reconsume INTEGER NOT NULL, tx_state TEXT, batch INTEGER NOT NULL, source TEXT NOT NULL, PRIMARY KEY (flow, side, msg_id, time_ms, keys, source))".to_string(),
            "CREATE INDEX trace_by_time ON trace (flow, side, time_ms)".to_string(),
            old_row("pub", "m2", 200, 1, "NULL"),
            old_row("pub", "m1", 100, 1, "NULL"),
            old_row("sub", "m1", 150, 0, "NULL"),
            old_row("sub", "m1", 160, 1, "NULL"),
            old_row("tx", "m2", 210, 1, "'COMMIT_MESSAGE'"),
            "PRAGMA user_version = 3".to_string(),
        ] {
            sqlx::query(&statement).execute(&pool).await.expect(&statement);
        }
        pool.close().await;

        let store = Store::open(&d).await.expect("upgrade");
        let pubs = store
            .trace_rows("f", TraceSide::Pub, 0, 1_000)
            .await
            .expect("rows");
        let ids: Vec<(&str, i64)> = pubs
            .iter()
            .map(|r| (r.msg_id.as_str(), r.time_ms))
            .collect();
        assert_eq!(ids, [("m1", 100), ("m2", 200)], "in time order");
        let subs = store
            .trace_rows("f", TraceSide::Sub, 0, 1_000)
            .await
            .expect("rows");
        assert_eq!(subs.len(), 2);
        assert_eq!(
            store.tx_states("f", &["m2"]).await.expect("tx"),
            [("m2".to_string(), "COMMIT_MESSAGE".to_string())]
                .into_iter()
                .collect()
        );
        assert_eq!(
            store
                .failed_attempts("f", &["m1", "m2"])
                .await
                .expect("failed"),
            [("m1".to_string(), 1)].into_iter().collect()
        );
        // A re-ingested row is still one row.
        let cursor = Cursor {
            flow: "f",
            source: "rocketmq_trace",
            broker: "b",
            queue_id: 0,
        };
        store
            .ingest_trace(&cursor, &pubs[..1], 1, None)
            .await
            .expect("ingest");
        assert_eq!(
            store
                .trace_rows("f", TraceSide::Pub, 0, 1_000)
                .await
                .expect("rows")
                .len(),
            2
        );
        // The new key and indexes serve every query by an index search.
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", d.join("audit.db").display()))
            .await
            .expect("open");
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE tbl_name LIKE 'trace%' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .expect("schema");
        assert_eq!(
            names,
            [
                "trace",
                "trace_failed_by_msg_id",
                "trace_halves",
                "trace_halves_by_time",
                "trace_tx_by_msg_id"
            ]
        );
        for (query, index) in [
            (
                "SELECT * FROM trace WHERE flow = 'f' AND side = 'sub' AND time_ms >= 0 AND time_ms < 9 ORDER BY time_ms",
                "sqlite_autoindex_trace_1",
            ),
            (
                "SELECT msg_id, tx_state, time_ms FROM trace WHERE flow = 'f' AND side = 'tx' AND msg_id IN ('a', 'b')",
                "trace_tx_by_msg_id",
            ),
            (
                "SELECT msg_id, COUNT(*) FROM trace WHERE flow = 'f' AND side = 'sub' AND success = 0 AND msg_id IN ('a') GROUP BY msg_id",
                "trace_failed_by_msg_id",
            ),
        ] {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {query}"))
                .fetch_all(&pool)
                .await
                .expect("plan")
                .iter()
                .map(|step| step.get::<String, _>("detail"))
                .collect();
            assert!(
                plan.iter()
                    .any(|step| step.contains(&format!("USING INDEX {index}"))),
                "{query}: {plan:?}"
            );
        }
        pool.close().await;
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A small deterministic generator (no dependency for one test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[tokio::test]
    async fn counters_never_decrease_over_random_audits_re_audits_and_restarts() {
        let d = dir("monotonic");
        let mut store = Store::open(&d).await.expect("open");
        let mut rng = Lcg(7);
        let statuses = [Status::Pending, Status::Lost, Status::DeadLetter];
        let stages = [Stage::Late, Stage::Consume, Stage::Store, Stage::DeadLetter];
        let mut last: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for step in 0..300 {
            if rng.next(25) == 0 {
                // A restart: reopen the file.
                drop(store);
                store = Store::open(&d).await.expect("reopen");
            }
            let window = rng.next(3) as i64 * 60_000;
            let findings: Vec<Finding> = (0..rng.next(6))
                .map(|i| {
                    let mut f = missing(
                        &format!("m{i}"),
                        statuses[rng.next(3) as usize],
                        stages[rng.next(4) as usize],
                    );
                    f.window_start_ms = window;
                    f
                })
                .collect();
            let mut counts = WindowCounts::new();
            counts.insert("produced", rng.next(20) as i64);
            counts.insert("consumed", rng.next(20) as i64);
            counts.insert("duplicated", rng.next(3) as i64);
            store
                .save_window(
                    "f",
                    (window, window + 60_000),
                    &counts,
                    false,
                    &findings,
                    step,
                )
                .await
                .expect("save");
            let now = store.totals("f").await.expect("totals").counters;
            for (name, labels) in &last {
                for (label, value) in labels {
                    let current = now
                        .get(name)
                        .and_then(|l| l.get(label))
                        .copied()
                        .unwrap_or(0);
                    assert!(
                        current >= *value,
                        "step {step}: {name}{{{label}}} fell from {value} to {current}"
                    );
                }
            }
            last = now;
        }
        // Something moved, or the test proved nothing.
        assert!(
            last.get("lost")
                .is_some_and(|l| l.values().sum::<i64>() > 0)
        );
        assert!(
            last.get("resolved_late")
                .is_some_and(|l| l.values().sum::<i64>() > 0)
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    fn trace_row(msg_id: &str, time_ms: i64) -> TraceRow {
        TraceRow {
            side: TraceSide::Pub,
            msg_id: msg_id.into(),
            keys: String::new(),
            time_ms,
            offset_msg_id: None,
            store_host: None,
            tags: None,
            success: true,
            msg_type: 0,
            reconsume: 0,
            tx_state: None,
            batch: false,
        }
    }

    /// 4.9 clients split a consumption's SubBefore (group, time, attempt)
    /// and its group-less SubAfter (outcome) across trace messages: in
    /// either order they meet as one consumption row; a lone half (another
    /// group's SubAfter, a consumer that died in between) waits, then is
    /// forgotten, never counted.
    #[tokio::test]
    async fn split_consumption_halves_meet_in_either_order_and_lone_halves_are_forgotten() {
        let d = dir("halves");
        let store = Store::open(&d).await.expect("open");
        let half = |kind, request: &str, msg: &str, time_ms, success| SubHalf {
            kind,
            request_id: request.into(),
            msg_id: msg.into(),
            time_ms,
            retry_times: if kind == HalfKind::Before { 2 } else { 0 },
            keys: if kind == HalfKind::After {
                "k1".into()
            } else {
                String::new()
            },
            success,
        };
        let at = |queue_id| Cursor {
            flow: "f",
            source: "trace",
            broker: "broker-a",
            queue_id,
        };
        // m1: before first (queue 0), after later (queue 1); m2: after
        // first; m3: a failed attempt; m4: only an after (another group's).
        store
            .ingest_trace_halves(
                &at(0),
                &[],
                &[
                    half(HalfKind::Before, "r1", "m1", 1_000, false),
                    half(HalfKind::After, "r2", "m2", 2_500, true),
                    half(HalfKind::Before, "r3", "m3", 3_000, false),
                    half(HalfKind::After, "r4", "m4", 4_000, true),
                ],
                10,
                None,
            )
            .await
            .expect("first halves");
        assert!(
            store
                .trace_rows("f", TraceSide::Sub, 0, i64::MAX)
                .await
                .expect("sub")
                .is_empty()
        );
        store
            .ingest_trace_halves(
                &at(1),
                &[],
                &[
                    half(HalfKind::After, "r1", "m1", 1_500, true),
                    half(HalfKind::Before, "r2", "m2", 2_000, false),
                    half(HalfKind::After, "r3", "m3", 3_500, false),
                    // Same message, another delivery: no match for r1's pair.
                    half(HalfKind::After, "r9", "m1", 9_000, true),
                ],
                10,
                None,
            )
            .await
            .expect("second halves");
        let subs = store
            .trace_rows("f", TraceSide::Sub, 0, i64::MAX)
            .await
            .expect("sub");
        let got: Vec<(&str, i64, bool, i32, &str)> = subs
            .iter()
            .map(|r| {
                (
                    r.msg_id.as_str(),
                    r.time_ms,
                    r.success,
                    r.reconsume,
                    r.keys.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("m1", 1_000, true, 2, "k1"),
                ("m2", 2_000, true, 2, "k1"),
                ("m3", 3_000, false, 2, "k1"),
            ]
        );
        assert_eq!(store.stats().await.expect("stats").rows["trace_halves"], 2);
        assert_eq!(store.forget_halves("f", 5_000).await.expect("forget"), 1);
        assert_eq!(store.forget_halves("f", 10_000).await.expect("forget"), 1);
        assert_eq!(store.stats().await.expect("stats").rows["trace_halves"], 0);
        assert_eq!(
            store
                .trace_rows("f", TraceSide::Sub, 0, i64::MAX)
                .await
                .expect("sub")
                .len(),
            3
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Seen in the mixed scenario: a ledger flow failed every run with
    /// `database is locked` while a trace flow ingested into the same store.
    /// Two writers at once, each reading before it writes: every write
    /// succeeds (each waits for the other's lock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flows_writing_to_one_store_never_fail_with_database_locked() {
        let store = Store::open(&dir("concurrent")).await.expect("store");
        let counts: WindowCounts = [("produced", 5), ("consumed", 4)].into_iter().collect();
        let (a, b) = (store.clone(), store.clone());
        let windows = tokio::spawn(async move {
            for i in 0..200i64 {
                a.save_window(
                    "ledger",
                    (i * 1_000, (i + 1) * 1_000),
                    &counts,
                    false,
                    &[missing(&format!("k{i}"), Status::Pending, Stage::Consume)],
                    i,
                )
                .await?;
            }
            Ok::<_, StoreError>(())
        });
        let trace = tokio::spawn(async move {
            let cursor = Cursor {
                flow: "trace",
                source: "trace",
                broker: "broker-a",
                queue_id: 0,
            };
            for i in 0..200i64 {
                let rows: Vec<TraceRow> = (0..20)
                    .map(|j| trace_row(&format!("m{i}-{j}"), i * 1_000 + j))
                    .collect();
                b.ingest_trace(&cursor, &rows, (i + 1) * 20, None).await?;
            }
            Ok::<_, StoreError>(())
        });
        windows.await.expect("task").expect("every window saved");
        trace
            .await
            .expect("task")
            .expect("every trace batch ingested");
    }

    /// Seen on 5.3.3: a rollback, then two check-backs answered `UNKNOW`
    /// (the broker had not yet written its op message).
    #[tokio::test]
    async fn a_decided_transaction_stays_decided_whatever_later_checks_answer() {
        let store = Store::open(&dir("tx-states")).await.expect("store");
        let tx = |id: &str, time_ms: i64, state: &str| TraceRow {
            side: TraceSide::Tx,
            tx_state: Some(state.into()),
            ..trace_row(id, time_ms)
        };
        let cursor = Cursor {
            flow: "f",
            source: "trace",
            broker: "broker-a",
            queue_id: 0,
        };
        store
            .ingest_trace(
                &cursor,
                &[
                    tx("rolled-back", 1, "ROLLBACK_MESSAGE"),
                    tx("rolled-back", 2, "UNKNOW"),
                    tx("rolled-back", 3, "UNKNOW"),
                    tx("checked-then-committed", 1, "UNKNOW"),
                    tx("checked-then-committed", 2, "COMMIT_MESSAGE"),
                    tx("never-decided", 1, "UNKNOW"),
                    tx("never-decided", 2, "UNKNOW"),
                ],
                7,
                None,
            )
            .await
            .expect("trace");
        let states = store
            .tx_states(
                "f",
                &["rolled-back", "checked-then-committed", "never-decided"],
            )
            .await
            .expect("states");
        assert_eq!(states["rolled-back"], "ROLLBACK_MESSAGE");
        assert_eq!(states["checked-then-committed"], "COMMIT_MESSAGE");
        assert_eq!(states["never-decided"], "UNKNOW");
    }

    #[tokio::test]
    async fn retention_prunes_what_is_no_longer_needed_and_no_counter_goes_down() {
        const DAY: i64 = 86_400_000;
        let now = 100 * DAY;
        let store = Store::open(&dir("retention")).await.expect("store");
        let counts: WindowCounts = [("produced", 5), ("consumed", 4)].into_iter().collect();
        let at = |start: i64, id: &str, status: Status| Finding {
            window_start_ms: start,
            ..missing(id, status, Stage::Store)
        };
        // Old and final (one with a lost finding); old but still open; recent.
        store
            .save_window(
                "f",
                (0, 60_000),
                &counts,
                true,
                &[at(0, "old-lost", Status::Lost)],
                1,
            )
            .await
            .expect("save");
        store
            .save_window("f", (60_000, 120_000), &counts, true, &[], 1)
            .await
            .expect("save");
        store
            .save_window(
                "f",
                (120_000, 180_000),
                &counts,
                false,
                &[at(120_000, "open", Status::Lost)],
                1,
            )
            .await
            .expect("save");
        store
            .save_window("f", (now - 60_000, now), &counts, true, &[], now)
            .await
            .expect("save");
        let cursor = Cursor {
            flow: "f",
            source: "trace",
            broker: "broker-a",
            queue_id: 0,
        };
        store
            .ingest_trace(
                &cursor,
                &[trace_row("old", 1_000), trace_row("new", now - 1_000)],
                2,
                None,
            )
            .await
            .expect("trace");
        for (started, ok) in [(1, true), (2, true), (3, false), (now - 10, true)] {
            let id = store.begin_run("f", started).await.expect("run");
            let error = (!ok).then_some("failed");
            store
                .finish_run(id, started + 1, error, 1)
                .await
                .expect("run");
        }
        let before = store.totals("f").await.expect("totals");
        let retention = crate::config::Retention {
            trace: std::time::Duration::from_secs(3 * 86_400),
            windows: std::time::Duration::from_secs(30 * 86_400),
            findings: std::time::Duration::from_secs(90 * 86_400),
            runs: std::time::Duration::from_secs(30 * 86_400),
            interval: std::time::Duration::from_secs(600),
        };
        let cutoffs = crate::audit::retention::cutoffs(&retention, now);
        // Batches of one row: every table is emptied over several batches.
        let mut passes = 0;
        while store.prune(&cutoffs, 1).await.expect("prune").total() > 0 {
            passes += 1;
            assert!(passes < 20, "pruning never ends");
        }
        assert!(passes >= 2, "{passes}");
        let mut after = store.totals("f").await.expect("totals");
        let pruned_runs = after.counters.remove("runs_pruned");
        assert_eq!(after.counters, before.counters, "counters are never pruned");
        assert_eq!(
            pruned_runs.and_then(|r| r.get("success").copied()),
            Some(2),
            "two old successes pruned, the latest kept"
        );
        assert_eq!(after.runs, before.runs, "pruned runs keep counting");
        assert_eq!(after.last_success_ms, before.last_success_ms);
        let stats = store.stats().await.expect("stats");
        assert!(stats.bytes > 0);
        // Kept: the recent trace row, the open window with its finding, the
        // recent window, and the latest run of each result.
        assert_eq!(stats.rows["trace"], 1);
        assert_eq!(stats.rows["windows"], 2);
        assert_eq!(stats.rows["findings"], 1);
        assert_eq!(stats.rows["runs"], 2);
        assert_eq!(
            store
                .window_findings("f", 120_000)
                .await
                .expect("findings")
                .len(),
            1
        );
        // A second pass finds nothing.
        assert_eq!(store.prune(&cutoffs, 1000).await.expect("prune").total(), 0);
    }

    /// A small deterministic generator (xorshift64*), so a failing case
    /// can be replayed from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Every counter and run total, flattened.
    fn flat(t: &FlowTotals) -> BTreeMap<String, i64> {
        let mut out: BTreeMap<String, i64> = t
            .counters
            .iter()
            .flat_map(|(n, by)| by.iter().map(move |(l, v)| (format!("{n}/{l}"), *v)))
            .collect();
        out.extend(t.runs.iter().map(|(r, n)| (format!("runs/{r}"), *n)));
        out
    }

    #[tokio::test]
    async fn counters_never_go_down_over_random_audits_re_audits_restarts_and_pruning() {
        let statuses = [Status::Pending, Status::Lost, Status::DeadLetter];
        let stages = [Stage::Store, Stage::Consume, Stage::Late, Stage::Send];
        let names = [
            "produced",
            "consumed",
            "duplicated",
            "orphaned",
            "at_risk",
            "not_subscribed",
        ];
        let mut steps = 0;
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let d = dir(&format!("monotonic-{seed}"));
            let mut store = Store::open(&d).await.expect("store");
            let mut seen: BTreeMap<String, i64> = BTreeMap::new();
            for step in 0..40 {
                let now = 1_000_000 + step * 60_000;
                match rng.below(10) {
                    // A restart.
                    0 => {
                        drop(store);
                        store = Store::open(&d).await.expect("reopen");
                    }
                    // Retention at a random cutoff.
                    1 => {
                        let cut = i64::try_from(rng.below(400_000)).unwrap_or(0);
                        let cutoffs = Cutoffs {
                            trace_ms: cut,
                            windows_ms: cut,
                            findings_ms: cut,
                            runs_ms: cut,
                        };
                        store.prune(&cutoffs, 3).await.expect("prune");
                    }
                    // A run with an audit (or re-audit) of a random window.
                    _ => {
                        let run = store.begin_run("f", now).await.expect("run");
                        let start = i64::try_from(rng.below(6)).unwrap_or(0) * 60_000;
                        let counts: WindowCounts = names
                            .iter()
                            .map(|n| (*n, i64::try_from(rng.below(8)).unwrap_or(0)))
                            .collect();
                        let findings: Vec<Finding> = (0..rng.below(4))
                            .map(|i| Finding {
                                window_start_ms: start,
                                count: 1 + i64::try_from(rng.below(3)).unwrap_or(0),
                                ..missing(
                                    &format!("m{}", i + rng.below(3)),
                                    statuses[rng.below(3) as usize],
                                    stages[rng.below(4) as usize],
                                )
                            })
                            .collect();
                        let mut unique = findings;
                        unique.sort_by(|a, b| a.id.cmp(&b.id));
                        unique.dedup_by(|a, b| a.id == b.id);
                        let is_final = rng.below(3) == 0;
                        store
                            .save_window(
                                "f",
                                (start, start + 60_000),
                                &counts,
                                is_final,
                                &unique,
                                now,
                            )
                            .await
                            .expect("save");
                        let error = (rng.below(4) == 0).then_some("a source failed");
                        store
                            .finish_run(run, now + 1, error, 1)
                            .await
                            .expect("finish");
                    }
                }
                let now_totals = flat(&store.totals("f").await.expect("totals"));
                for (name, before) in &seen {
                    let after = now_totals.get(name).copied().unwrap_or(0);
                    assert!(
                        after >= *before,
                        "seed {seed} step {step}: {name} went from {before} to {after}"
                    );
                }
                seen = now_totals;
                steps += 1;
            }
            let _ = std::fs::remove_dir_all(&d);
        }
        assert_eq!(steps, 40 * 40);
    }
}
