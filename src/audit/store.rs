//! The audit store: windows, findings, runs, trace records and source cursors
//! in one SQLite file under the data directory (WAL, `synchronous=FULL`).
//!
//! Crash safety: everything one window's audit changes (its counts and all
//! its findings) is written in one transaction, and so is each trace-ingest
//! batch with the cursor it advances. A `kill -9` therefore leaves either the
//! old state or the new one; re-running the window rewrites the same rows
//! (upserts keyed by flow, window and key), so nothing is lost or doubled.
//! Every `mqaudit_messages_*` counter is computed from these tables, so a
//! restart neither resets nor double-counts them.

use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[error("audit store: {0}")]
pub struct StoreError(String);

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// Where a missing key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Deadline not passed: may still be consumed.
    Pending,
    /// Consumed after the window was first audited, before the deadline.
    Resolved,
    /// Past the deadline, not consumed: lost at `stage`.
    Lost,
    /// Parked in `%DLQ%group`.
    DeadLetter,
}

impl Status {
    /// Text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Resolved => "resolved",
            Status::Lost => "lost",
            Status::DeadLetter => "dead_letter",
        }
    }
}

/// One stored finding (a missing, duplicated or orphaned key of a window).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Flow name.
    pub flow: String,
    /// Window start, epoch ms.
    pub window_start_ms: i64,
    /// The key.
    pub key: String,
    /// `missing`, `duplicated` or `orphaned`.
    pub kind: String,
    /// How many messages.
    pub count: i64,
    /// Earliest produced time (missing keys), epoch ms.
    pub produced_at_ms: Option<i64>,
    /// `pending`, `resolved`, `lost`, `dead_letter` (missing); `final` otherwise.
    pub status: String,
    /// `send`, `store`, `expired`, `consume`, `dead_letter`, `pending`, `undiagnosed`.
    pub stage: Option<String>,
    /// What the brokers said (JSON).
    pub evidence: Option<serde_json::Value>,
    /// When first recorded, epoch ms.
    pub first_seen_ms: i64,
    /// When last changed, epoch ms.
    pub updated_ms: i64,
}

/// A window's audited counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    /// Produced records.
    pub produced: i64,
    /// Consumed records counted for the window.
    pub consumed: i64,
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

/// Audit totals of a flow, derived from the stored findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowTotals {
    /// Produced records over audited windows.
    pub produced: i64,
    /// Consumed records over audited windows.
    pub consumed: i64,
    /// Lost messages by stage.
    pub lost: Vec<(String, i64)>,
    /// Messages found in the DLQ.
    pub dead_lettered: i64,
    /// Duplicate deliveries.
    pub duplicated: i64,
    /// Orphaned deliveries.
    pub orphaned: i64,
    /// Missing, deadline not passed.
    pub pending: i64,
    /// Runs by result.
    pub runs: Vec<(String, i64)>,
    /// Last successful run's end, epoch ms.
    pub last_success_ms: Option<i64>,
}

/// A stored trace record relevant to a flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceRow {
    /// `pub` (produced) or `sub` (consumed by the flow's group).
    pub side: String,
    /// The audit key (message keys or msgId, per the flow).
    pub key: String,
    /// Client message id.
    pub msg_id: String,
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// Broker message id (Pub only).
    pub offset_msg_id: Option<String>,
    /// Broker address (Pub only).
    pub store_host: Option<String>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS windows (
        flow TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
        produced INTEGER NOT NULL, consumed INTEGER NOT NULL,
        final INTEGER NOT NULL, audited_ms INTEGER NOT NULL,
        PRIMARY KEY (flow, start_ms))",
    "CREATE TABLE IF NOT EXISTS findings (
        flow TEXT NOT NULL, window_start_ms INTEGER NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
        count INTEGER NOT NULL, produced_at_ms INTEGER, status TEXT NOT NULL, stage TEXT,
        evidence TEXT, first_seen_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
        PRIMARY KEY (flow, window_start_ms, key, kind))",
    "CREATE INDEX IF NOT EXISTS findings_by_key ON findings (key)",
    "CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL, started_ms INTEGER NOT NULL,
        finished_ms INTEGER, result TEXT, error TEXT, windows INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS cursors (
        flow TEXT NOT NULL, source TEXT NOT NULL, broker TEXT NOT NULL, queue_id INTEGER NOT NULL,
        next_offset INTEGER NOT NULL, PRIMARY KEY (flow, source, broker, queue_id))",
    // One row per delivery: the time is part of the key, so a re-ingested
    // trace message changes nothing and a second delivery is a second row.
    "CREATE TABLE IF NOT EXISTS trace (
        flow TEXT NOT NULL, side TEXT NOT NULL, key TEXT NOT NULL, msg_id TEXT NOT NULL,
        time_ms INTEGER NOT NULL, offset_msg_id TEXT, store_host TEXT, source TEXT NOT NULL,
        PRIMARY KEY (flow, side, msg_id, key, time_ms, source))",
    "CREATE INDEX IF NOT EXISTS trace_by_time ON trace (flow, side, time_ms)",
];

/// Columns of a finding, in the order `finding_from_row` reads them.
macro_rules! finding_columns {
    () => {
        "flow, window_start_ms, key, kind, count, produced_at_ms, status, stage, evidence, first_seen_ms, updated_ms"
    };
}

/// Columns of a trace row, in the order `trace_from_row` reads them.
macro_rules! trace_columns {
    () => {
        "side, key, msg_id, time_ms, offset_msg_id, store_host"
    };
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Open (or create) `DIR/audit.db`.
    ///
    /// # Errors
    /// When the directory or database cannot be created or opened.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", data_dir.display())))?;
        let path = data_dir.join("audit.db");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(Store { pool })
    }

    /// Record the start of a run; returns its id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin_run(&self, flow: &str, now_ms: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("INSERT INTO runs (flow, started_ms) VALUES (?, ?) RETURNING id")
            .bind(flow)
            .bind(now_ms)
            .fetch_one(&self.pool)
            .await?;
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
            "UPDATE runs SET finished_ms = ?, result = ?, error = ?, windows = ? WHERE id = ?",
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
        .await?;
        Ok(())
    }

    /// Runs of a flow (or all), newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn runs(&self, flow: Option<&str>, limit: i64) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, flow, started_ms, finished_ms, result, error, windows FROM runs
             WHERE (?1 IS NULL OR flow = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(flow)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
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

    /// Windows of a flow audited but not final (deadline not yet passed at their last audit).
    ///
    /// # Errors
    /// Database errors.
    pub async fn open_windows(&self, flow: &str) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT start_ms, end_ms FROM windows WHERE flow = ? AND final = 0 ORDER BY start_ms",
        )
        .bind(flow)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The end of the latest audited window of a flow.
    ///
    /// # Errors
    /// Database errors.
    pub async fn latest_window_end(&self, flow: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MAX(end_ms) FROM windows WHERE flow = ?")
            .bind(flow)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    /// Findings of a window, keyed by (key, kind).
    ///
    /// # Errors
    /// Database errors.
    pub async fn window_findings(
        &self,
        flow: &str,
        window_start_ms: i64,
    ) -> Result<Vec<Finding>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            finding_columns!(),
            " FROM findings WHERE flow = ? AND window_start_ms = ? ORDER BY key"
        ))
        .bind(flow)
        .bind(window_start_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(finding_from_row).collect())
    }

    /// Findings, filtered.
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
            concat!("SELECT ", finding_columns!(), " FROM findings WHERE (?1 IS NULL OR flow = ?1) AND (?2 IS NULL OR stage = ?2) AND (?3 IS NULL OR updated_ms >= ?3) ORDER BY updated_ms DESC, key LIMIT ?4"),
        )
        .bind(flow)
        .bind(stage)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(finding_from_row).collect())
    }

    /// Every finding about one key.
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
            " FROM findings WHERE key = ?1 AND (?2 IS NULL OR flow = ?2) ORDER BY window_start_ms"
        ))
        .bind(key)
        .bind(flow)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(finding_from_row).collect())
    }

    /// Write one window's audit atomically: its counts and the complete set
    /// of its findings (rows no longer found are marked resolved, never
    /// deleted, so a late arrival stays visible).
    ///
    /// # Errors
    /// Database errors (nothing is written then).
    pub async fn save_window(
        &self,
        flow: &str,
        window: (i64, i64),
        counts: WindowCounts,
        is_final: bool,
        findings: &[Finding],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO windows (flow, start_ms, end_ms, produced, consumed, final, audited_ms) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (flow, start_ms) DO UPDATE SET end_ms = excluded.end_ms, produced = excluded.produced,
             consumed = excluded.consumed, final = excluded.final, audited_ms = excluded.audited_ms",
        )
        .bind(flow)
        .bind(window.0)
        .bind(window.1)
        .bind(counts.produced)
        .bind(counts.consumed)
        .bind(is_final)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        // Missing keys that are no longer missing were consumed late: resolved.
        sqlx::query(
            "UPDATE findings SET status = 'resolved', updated_ms = ?3 WHERE flow = ?1 AND window_start_ms = ?2
             AND kind = 'missing' AND status = 'pending'",
        )
        .bind(flow)
        .bind(window.0)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        // Duplicates and orphans are recounted from scratch.
        sqlx::query(
            "DELETE FROM findings WHERE flow = ? AND window_start_ms = ? AND kind != 'missing'",
        )
        .bind(flow)
        .bind(window.0)
        .execute(&mut *tx)
        .await?;
        for f in findings {
            sqlx::query(
                "INSERT INTO findings (flow, window_start_ms, key, kind, count, produced_at_ms, status, stage, evidence, first_seen_ms, updated_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (flow, window_start_ms, key, kind) DO UPDATE SET count = excluded.count,
                 produced_at_ms = excluded.produced_at_ms, status = excluded.status, stage = excluded.stage,
                 evidence = excluded.evidence, updated_ms = excluded.updated_ms",
            )
            .bind(flow)
            .bind(window.0)
            .bind(&f.key)
            .bind(&f.kind)
            .bind(f.count)
            .bind(f.produced_at_ms)
            .bind(&f.status)
            .bind(&f.stage)
            .bind(f.evidence.as_ref().map(|e| e.to_string()))
            .bind(f.first_seen_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Totals of a flow, derived from the stored windows, findings and runs.
    ///
    /// # Errors
    /// Database errors.
    pub async fn totals(&self, flow: &str) -> Result<FlowTotals, StoreError> {
        let mut totals = FlowTotals::default();
        let row = sqlx::query("SELECT COALESCE(SUM(produced), 0), COALESCE(SUM(consumed), 0) FROM windows WHERE flow = ?")
            .bind(flow)
            .fetch_one(&self.pool)
            .await?;
        (totals.produced, totals.consumed) = (row.get(0), row.get(1));
        let rows = sqlx::query(
            "SELECT kind, status, COALESCE(stage, ''), SUM(count) FROM findings WHERE flow = ? GROUP BY kind, status, stage",
        )
        .bind(flow)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let (kind, status, stage, count): (String, String, String, i64) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            match (kind.as_str(), status.as_str()) {
                ("missing", "lost") => totals.lost.push((stage, count)),
                ("missing", "dead_letter") => totals.dead_lettered += count,
                ("missing", "pending") => totals.pending += count,
                ("duplicated", _) => totals.duplicated += count,
                ("orphaned", _) => totals.orphaned += count,
                _ => {}
            }
        }
        let rows = sqlx::query("SELECT result, COUNT(*) FROM runs WHERE flow = ? AND result IS NOT NULL GROUP BY result")
            .bind(flow)
            .fetch_all(&self.pool)
            .await?;
        totals.runs = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let row =
            sqlx::query("SELECT MAX(finished_ms) FROM runs WHERE flow = ? AND result = 'success'")
                .bind(flow)
                .fetch_one(&self.pool)
                .await?;
        totals.last_success_ms = row.get(0);
        Ok(totals)
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
        let row = sqlx::query("SELECT next_offset FROM cursors WHERE flow = ? AND source = ? AND broker = ? AND queue_id = ?")
            .bind(flow)
            .bind(source)
            .bind(broker)
            .bind(queue_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Store ingested trace rows and advance the cursor, in one transaction.
    ///
    /// # Errors
    /// Database errors (nothing is written then).
    pub async fn ingest_trace(
        &self,
        flow: &str,
        source: &str,
        broker: &str,
        queue_id: i32,
        rows: &[TraceRow],
        next_offset: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for row in rows {
            sqlx::query(
                "INSERT OR IGNORE INTO trace (flow, side, key, msg_id, time_ms, offset_msg_id, store_host, source)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(flow)
            .bind(&row.side)
            .bind(&row.key)
            .bind(&row.msg_id)
            .bind(row.time_ms)
            .bind(&row.offset_msg_id)
            .bind(&row.store_host)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO cursors (flow, source, broker, queue_id, next_offset) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (flow, source, broker, queue_id) DO UPDATE SET next_offset = excluded.next_offset",
        )
        .bind(flow)
        .bind(source)
        .bind(broker)
        .bind(queue_id)
        .bind(next_offset)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Trace rows of a flow's side in `[from, to)`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn trace_rows(
        &self,
        flow: &str,
        side: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<TraceRow>, StoreError> {
        let rows = sqlx::query(
            concat!("SELECT ", trace_columns!(), " FROM trace WHERE flow = ? AND side = ? AND time_ms >= ? AND time_ms < ? ORDER BY time_ms"),
        )
        .bind(flow)
        .bind(side)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(trace_from_row).collect())
    }

    /// Every trace row about one key.
    ///
    /// # Errors
    /// Database errors.
    pub async fn trace_for_key(&self, flow: &str, key: &str) -> Result<Vec<TraceRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            trace_columns!(),
            " FROM trace WHERE flow = ? AND key = ? ORDER BY time_ms"
        ))
        .bind(flow)
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(trace_from_row).collect())
    }
}

fn finding_from_row(r: &sqlx::sqlite::SqliteRow) -> Finding {
    let evidence: Option<String> = r.get(8);
    Finding {
        flow: r.get(0),
        window_start_ms: r.get(1),
        key: r.get(2),
        kind: r.get(3),
        count: r.get(4),
        produced_at_ms: r.get(5),
        status: r.get(6),
        stage: r.get(7),
        evidence: evidence.and_then(|e| serde_json::from_str(&e).ok()),
        first_seen_ms: r.get(9),
        updated_ms: r.get(10),
    }
}

fn trace_from_row(r: &sqlx::sqlite::SqliteRow) -> TraceRow {
    TraceRow {
        side: r.get(0),
        key: r.get(1),
        msg_id: r.get(2),
        time_ms: r.get(3),
        offset_msg_id: r.get(4),
        store_host: r.get(5),
    }
}
