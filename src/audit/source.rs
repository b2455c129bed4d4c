//! Record sources: where a flow's produced and consumed records come from.
//! Each returns the records whose event time lies in a window `[from, to)`.
//!
//! * `jsonl`: JSON-lines files, `{"key": ..., "time_ms": ...[, "msg_id": ...]}`;
//! * `http`: `GET url?from=MS&to=MS` answering a JSON array of such objects
//!   (timeout per attempt, retries with backoff, a size limit);
//! * `sql`: a PostgreSQL query taking the bounds as `$1`, `$2` (timestamptz)
//!   and returning key, time (timestamptz, timestamp or epoch ms) and an
//!   optional msgId;
//! * `rocketmq_trace`: the trace records the ingest stored (see `trace`).
//!
//! A source never returns a partial answer: any bad row or failed request is
//! an error for the whole fetch, so a run fails and is retried rather than
//! reporting losses that are really a broken source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use sqlx::{Column, Row};

use super::model::{Consumed, MessageKind, Produced, SendStatus, TxState};
use super::store::{Store, TraceSide};
use crate::config::SourceConfig;

/// One record as a ledger writes it (JSON lines, HTTP, or a SQL row). Only
/// `time_ms` and one of `key`, `keys`, `msg_id` are needed; every other
/// field sharpens the audit when present.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Record {
    /// The message's key (or its first key).
    #[serde(default)]
    pub key: Option<String>,
    /// Every key of the message.
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// Client message id (`SendResult.getMsgId()`, `MessageExt.getMsgId()`).
    #[serde(default)]
    pub msg_id: Option<String>,
    /// Broker message id (`SendResult.getOffsetMsgId()`).
    #[serde(default)]
    pub offset_msg_id: Option<String>,
    /// Topic; records of other topics are not the flow's.
    #[serde(default)]
    pub topic: Option<String>,
    /// Consumer group (consumed side); records of other groups are not the flow's.
    #[serde(default)]
    pub group: Option<String>,
    /// Tag.
    #[serde(default, alias = "tag")]
    pub tags: Option<String>,
    /// User properties (SQL92 subscriptions).
    #[serde(default)]
    pub properties: Option<BTreeMap<String, String>>,
    /// Send status: `SEND_OK`, `FLUSH_DISK_TIMEOUT`, `FLUSH_SLAVE_TIMEOUT`,
    /// `SLAVE_NOT_AVAILABLE`, `FAILED`, `NOT_SENT`.
    #[serde(default)]
    pub status: Option<String>,
    /// `normal`, `delay`, `transaction`, `order`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Transaction outcome: `commit`, `rollback`, `unknown` (or Java's
    /// `COMMIT_MESSAGE`, `ROLLBACK_MESSAGE`, `UNKNOW`).
    #[serde(default)]
    pub transaction: Option<String>,
    /// Sent in a batch.
    #[serde(default)]
    pub batch: bool,
}

impl Record {
    fn key_list(&self) -> Vec<String> {
        match (&self.keys, &self.key) {
            (Some(keys), _) if !keys.is_empty() => keys.clone(),
            (_, Some(key)) if !key.is_empty() => vec![key.clone()],
            _ => Vec::new(),
        }
    }

    /// The producer's view; `Err` names a field this version cannot read.
    pub fn produced(&self) -> Result<Produced, String> {
        let status = match &self.status {
            Some(text) => SendStatus::parse(text).ok_or_else(|| {
                format!("status {text:?} is not one of SEND_OK, FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT, SLAVE_NOT_AVAILABLE, FAILED, NOT_SENT")
            })?,
            // A recorded message id proves the broker acknowledged the send.
            None if self.msg_id.is_some() => SendStatus::SendOk,
            None => SendStatus::Unknown,
        };
        let transaction = match &self.transaction {
            Some(text) => Some(TxState::from_java(text).ok_or_else(|| {
                format!("transaction {text:?} is not commit, rollback or unknown")
            })?),
            None => None,
        };
        let kind = match &self.kind {
            Some(text) => MessageKind::parse(text).ok_or_else(|| {
                format!("kind {text:?} is not normal, delay, transaction or order")
            })?,
            None if transaction.is_some() => MessageKind::Transaction,
            None => MessageKind::Normal,
        };
        Ok(Produced {
            msg_id: self.msg_id.clone().filter(|m| !m.is_empty()),
            keys: self.key_list(),
            time_ms: self.time_ms,
            offset_msg_id: self.offset_msg_id.clone().filter(|m| !m.is_empty()),
            tags: self.tags.clone().filter(|t| !t.is_empty()),
            properties: self.properties.clone(),
            status,
            kind,
            transaction,
            batch: self.batch,
        })
    }

    /// The consumer's view.
    pub fn consumed(&self) -> Consumed {
        Consumed {
            msg_id: self.msg_id.clone().filter(|m| !m.is_empty()),
            keys: self.key_list(),
            time_ms: self.time_ms,
        }
    }
}

/// A window's produced messages, and what was set aside.
#[derive(Debug, Clone, Default)]
pub struct ProducedFetch {
    /// The flow's messages.
    pub messages: Vec<Produced>,
    /// Records with neither key nor message id: counted, cannot be audited.
    pub unauditable: u64,
}

/// A range's consumptions by the flow's group.
#[derive(Debug, Clone, Default)]
pub struct ConsumedFetch {
    /// Successful consumptions.
    pub records: Vec<Consumed>,
    /// Records with neither key nor message id.
    pub unauditable: u64,
}

/// A source that did not answer correctly.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No answer in time.
    #[error("{source_kind} source timed out after {seconds} s: {detail}")]
    Timeout {
        /// `sql`, `http`, ...
        source_kind: &'static str,
        /// The limit.
        seconds: u64,
        /// What was being done.
        detail: String,
    },
    /// The source answered, but not with records.
    #[error("{source_kind} source returned malformed data: {detail}")]
    Malformed {
        /// Source kind.
        source_kind: &'static str,
        /// Where and what.
        detail: String,
    },
    /// The source could not be reached or failed (I/O, HTTP status, database error).
    #[error("{source_kind} source failed: {detail}")]
    Failed {
        /// Source kind.
        source_kind: &'static str,
        /// What failed.
        detail: String,
    },
}

impl SourceError {
    /// A bounded label: `timeout`, `malformed` or `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Timeout { .. } => "timeout",
            SourceError::Malformed { .. } => "malformed",
            SourceError::Failed { .. } => "failed",
        }
    }
}

/// A configured source, ready to fetch.
pub struct Source {
    config: SourceConfig,
    flow: String,
    /// Lazily connected PostgreSQL pool (sql sources).
    pg: tokio::sync::OnceCell<sqlx::PgPool>,
    http: reqwest::Client,
}

impl Source {
    /// A source for one side of a flow.
    pub fn new(config: SourceConfig, flow: &str) -> Source {
        Source {
            config,
            flow: flow.to_string(),
            pg: tokio::sync::OnceCell::new(),
            http: reqwest::Client::new(),
        }
    }

    /// The source's kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self.config {
            SourceConfig::RocketmqTrace { .. } => "rocketmq_trace",
            SourceConfig::Sql { .. } => "sql",
            SourceConfig::Http { .. } => "http",
            SourceConfig::Jsonl { .. } => "jsonl",
        }
    }

    /// True for the trace source (its records must be ingested first).
    pub fn is_trace(&self) -> bool {
        matches!(self.config, SourceConfig::RocketmqTrace { .. })
    }

    /// The flow's produced messages with event time in `[from_ms, to_ms)`.
    ///
    /// # Errors
    /// Any failure or malformed record fails the whole fetch.
    pub async fn fetch_produced(
        &self,
        store: &Store,
        topic: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<ProducedFetch, SourceError> {
        let mut out = ProducedFetch::default();
        if self.is_trace() {
            let failed = |e: super::store::StoreError| SourceError::Failed {
                source_kind: "rocketmq_trace",
                detail: e.to_string(),
            };
            let rows = store
                .trace_rows(&self.flow, TraceSide::Pub, from_ms, to_ms)
                .await
                .map_err(failed)?;
            let halves: Vec<&str> = rows
                .iter()
                .filter(|r| MessageKind::from_trace(r.msg_type) == MessageKind::Transaction)
                .map(|r| r.msg_id.as_str())
                .collect();
            let states = store.tx_states(&self.flow, &halves).await.map_err(failed)?;
            for r in &rows {
                let kind = MessageKind::from_trace(r.msg_type);
                out.messages.push(Produced {
                    msg_id: Some(r.msg_id.clone()),
                    keys: r.key_list(),
                    time_ms: r.time_ms,
                    offset_msg_id: r.offset_msg_id.clone(),
                    tags: r.tags.clone(),
                    properties: None,
                    // A Pub is written only for a stored message: success =
                    // false means stored but not SEND_OK.
                    status: if r.success {
                        SendStatus::SendOk
                    } else {
                        SendStatus::NotOk
                    },
                    kind,
                    transaction: (kind == MessageKind::Transaction).then(|| {
                        states
                            .get(&r.msg_id)
                            .and_then(|s| TxState::from_java(s))
                            .unwrap_or(TxState::Unknown)
                    }),
                    batch: r.batch,
                });
            }
            return Ok(out);
        }
        let kind = self.kind();
        for (n, record) in self.fetch_records(from_ms, to_ms).await?.iter().enumerate() {
            if record.topic.as_deref().is_some_and(|t| t != topic) {
                continue;
            }
            let produced = record.produced().map_err(|detail| SourceError::Malformed {
                source_kind: kind,
                detail: format!("record {}: {detail}", n + 1),
            })?;
            if produced.keys.is_empty() && produced.msg_id.is_none() {
                out.unauditable += 1;
            } else {
                out.messages.push(produced);
            }
        }
        Ok(out)
    }

    /// The flow group's consumptions with event time in `[from_ms, to_ms)`.
    ///
    /// # Errors
    /// Any failure or malformed record fails the whole fetch.
    pub async fn fetch_consumed(
        &self,
        store: &Store,
        topic: &str,
        group: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<ConsumedFetch, SourceError> {
        let mut out = ConsumedFetch::default();
        if self.is_trace() {
            let rows = store
                .trace_rows(&self.flow, TraceSide::Sub, from_ms, to_ms)
                .await
                .map_err(|e| SourceError::Failed {
                    source_kind: "rocketmq_trace",
                    detail: e.to_string(),
                })?;
            out.records = rows
                .into_iter()
                .filter(|r| r.success)
                .map(|r| Consumed {
                    keys: r.key_list(),
                    msg_id: Some(r.msg_id),
                    time_ms: r.time_ms,
                })
                .collect();
            return Ok(out);
        }
        for record in self.fetch_records(from_ms, to_ms).await? {
            if record.topic.as_deref().is_some_and(|t| t != topic)
                || record.group.as_deref().is_some_and(|g| g != group)
            {
                continue;
            }
            let consumed = record.consumed();
            if consumed.keys.is_empty() && consumed.msg_id.is_none() {
                out.unauditable += 1;
            } else {
                out.records.push(consumed);
            }
        }
        Ok(out)
    }

    /// A ledger's raw records with event time in `[from_ms, to_ms)`.
    ///
    /// # Errors
    /// Any failure or malformed record fails the whole fetch; a trace source
    /// has no raw records.
    pub async fn fetch_records(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Record>, SourceError> {
        match &self.config {
            SourceConfig::RocketmqTrace { .. } => Err(SourceError::Failed {
                source_kind: "rocketmq_trace",
                detail: "the trace source has no ledger records".to_string(),
            }),
            SourceConfig::Jsonl { path } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_jsonl(&path, from_ms, to_ms))
                    .await
                    .map_err(|e| SourceError::Failed {
                        source_kind: "jsonl",
                        detail: e.to_string(),
                    })?
            }
            SourceConfig::Http {
                url,
                timeout_seconds,
                retries,
                max_bytes,
            } => {
                self.fetch_http(url, *timeout_seconds, *retries, *max_bytes, from_ms, to_ms)
                    .await
            }
            SourceConfig::Sql {
                url,
                query,
                timeout_seconds,
                time_zone,
            } => {
                self.fetch_sql(url, query, *timeout_seconds, *time_zone, from_ms, to_ms)
                    .await
            }
        }
    }

    async fn fetch_http(
        &self,
        url: &str,
        timeout: u64,
        retries: u32,
        max_bytes: u64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Record>, SourceError> {
        let separator = if url.contains('?') { '&' } else { '?' };
        let full = format!("{url}{separator}from={from_ms}&to={to_ms}");
        let mut last = None;
        for attempt in 0..=retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
            }
            match self.http_attempt(&full, timeout, max_bytes).await {
                Ok(records) => return Ok(records),
                // A malformed answer will not improve by asking again.
                Err(e @ SourceError::Malformed { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(message = "HTTP source attempt failed.", flow = %self.flow, attempt, %e);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(SourceError::Failed {
            source_kind: "http",
            detail: "no attempt made".to_string(),
        }))
    }

    async fn http_attempt(
        &self,
        url: &str,
        timeout: u64,
        max_bytes: u64,
    ) -> Result<Vec<Record>, SourceError> {
        let attempt = async {
            let mut response =
                self.http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| SourceError::Failed {
                        source_kind: "http",
                        detail: format!("GET {url}: {e}"),
                    })?;
            let status = response.status();
            if !status.is_success() {
                return Err(SourceError::Failed {
                    source_kind: "http",
                    detail: format!("GET {url}: HTTP {}", status.as_u16()),
                });
            }
            if response.content_length().is_some_and(|n| n > max_bytes) {
                return Err(SourceError::Malformed {
                    source_kind: "http",
                    detail: format!("GET {url}: body larger than {max_bytes} bytes"),
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| SourceError::Failed {
                source_kind: "http",
                detail: format!("GET {url}: reading body: {e}"),
            })? {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > max_bytes {
                    return Err(SourceError::Malformed {
                        source_kind: "http",
                        detail: format!("GET {url}: body larger than {max_bytes} bytes"),
                    });
                }
            }
            serde_json::from_slice::<Vec<Record>>(&body).map_err(|e| SourceError::Malformed {
                source_kind: "http",
                detail: format!("GET {url}: not a JSON array of records: {e}"),
            })
        };
        tokio::time::timeout(Duration::from_secs(timeout), attempt)
            .await
            .map_err(|_| SourceError::Timeout {
                source_kind: "http",
                seconds: timeout,
                detail: format!("GET {url}"),
            })?
    }

    async fn fetch_sql(
        &self,
        url: &crate::config::Secret,
        query: &str,
        timeout: u64,
        zone: Option<chrono_tz::Tz>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Record>, SourceError> {
        let failed = |detail: String| SourceError::Failed {
            source_kind: "sql",
            detail,
        };
        let work = async {
            let url = url.expose().to_string();
            let pool = self
                .pg
                .get_or_try_init(|| async {
                    let zone_name = zone.map(|z| z.name().to_string());
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(Duration::from_secs(timeout))
                        // The window bounds ($1, $2, timestamptz) meet the
                        // table's timestamps in the zone they were written in.
                        .after_connect(move |conn, _| {
                            let zone_name = zone_name.clone();
                            Box::pin(async move {
                                if let Some(name) = zone_name {
                                    sqlx::query(&format!("SET TIME ZONE '{name}'"))
                                        .execute(conn)
                                        .await?;
                                }
                                Ok(())
                            })
                        })
                        .connect(&url)
                        .await
                })
                .await
                .map_err(|e| failed(format!("connect: {e}")))?;
            // Types are checked before any row is read: a zone-less time
            // column compared with the window bounds in the wrong zone would
            // silently select the wrong rows, not fail on them.
            if zone.is_none() {
                use sqlx::{Executor, TypeInfo};
                let described = pool
                    .describe(query)
                    .await
                    .map_err(|e| failed(format!("describe the query: {e}")))?;
                if described
                    .columns()
                    .get(1)
                    .is_some_and(|c| c.type_info().name() == "TIMESTAMP")
                {
                    return Err(SourceError::Malformed {
                        source_kind: "sql",
                        detail: "column 2 (time) is a timestamp without time zone; set time_zone on the source \
                                 (for example \"UTC\" or \"Europe/Berlin\") to say how to read it"
                            .to_string(),
                    });
                }
            }
            let (from, to) = (utc(from_ms), utc(to_ms));
            let rows = sqlx::query(query)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await
                .map_err(|e| failed(format!("query: {e}")))?;
            rows.iter()
                .enumerate()
                .map(|(i, row)| sql_record(i, row, zone))
                .collect::<Result<Vec<Record>, SourceError>>()
        };
        tokio::time::timeout(Duration::from_secs(timeout), work)
            .await
            .map_err(|_| SourceError::Timeout {
                source_kind: "sql",
                seconds: timeout,
                detail: "query".to_string(),
            })?
    }
}

fn utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Extra columns a query may return, by name, after key, time and msg_id.
const SQL_TEXT_COLUMNS: &[&str] = &[
    "keys",
    "offset_msg_id",
    "topic",
    "group",
    "tags",
    "status",
    "kind",
    "transaction",
    "properties",
];

fn sql_record(
    index: usize,
    row: &sqlx::postgres::PgRow,
    zone: Option<chrono_tz::Tz>,
) -> Result<Record, SourceError> {
    let malformed = |detail: String| SourceError::Malformed {
        source_kind: "sql",
        detail: format!("row {}: {detail}", index + 1),
    };
    let key: Option<String> = row
        .try_get(0)
        .map_err(|e| malformed(format!("column 1 (key) is not text: {e}")))?;
    let time_ms = sql_time(row, zone)
        .map_err(malformed)?
        .ok_or_else(|| malformed("time is NULL".to_string()))?;
    let msg_id = if row.len() > 2 {
        row.try_get::<Option<String>, _>(2)
            .map_err(|e| malformed(format!("column 3 (msg_id) is not text: {e}")))?
    } else {
        None
    };
    let mut record = Record {
        key,
        time_ms,
        msg_id,
        ..Record::default()
    };
    for column in row.columns().iter().skip(3) {
        let name = column.name();
        if !SQL_TEXT_COLUMNS.contains(&name) {
            continue;
        }
        let value: Option<String> = row
            .try_get(column.ordinal())
            .map_err(|e| malformed(format!("column {name} is not text: {e}")))?;
        if let Some(value) = value {
            set_named_column(&mut record, name, value).map_err(malformed)?;
        }
    }
    if record.key.as_deref().is_some_and(str::is_empty) {
        record.key = None;
    }
    Ok(record)
}

/// Column 2, the event time: timestamptz, bigint epoch ms, or a timestamp
/// without time zone read in the configured zone (never guessed as UTC).
fn sql_time(
    row: &sqlx::postgres::PgRow,
    zone: Option<chrono_tz::Tz>,
) -> Result<Option<i64>, String> {
    if let Ok(t) = row.try_get::<Option<DateTime<Utc>>, _>(1) {
        return Ok(t.map(|t| t.timestamp_millis()));
    }
    if let Ok(t) = row.try_get::<Option<NaiveDateTime>, _>(1) {
        let Some(zone) = zone else {
            return Err(
                "column 2 (time) is a timestamp without time zone; set time_zone on the source \
                 (for example \"UTC\" or \"Europe/Berlin\") to say how to read it"
                    .to_string(),
            );
        };
        return t
            .map(|t| {
                zone.from_local_datetime(&t)
                    .earliest()
                    .map(|t| t.timestamp_millis())
                    .ok_or_else(|| format!("{t} does not exist in {zone}"))
            })
            .transpose();
    }
    if let Ok(t) = row.try_get::<Option<i64>, _>(1) {
        return Ok(t);
    }
    Err("column 2 (time) is not timestamptz, timestamp or bigint epoch ms".to_string())
}

/// One of the optional columns read by name.
fn set_named_column(record: &mut Record, name: &str, value: String) -> Result<(), String> {
    match name {
        "keys" => {
            record.keys = Some(
                value
                    .split(' ')
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
        "offset_msg_id" => record.offset_msg_id = Some(value),
        "topic" => record.topic = Some(value),
        "group" => record.group = Some(value),
        "tags" => record.tags = Some(value),
        "status" => record.status = Some(value),
        "kind" => record.kind = Some(value),
        "transaction" => record.transaction = Some(value),
        _ => {
            record.properties =
                Some(serde_json::from_str(&value).map_err(|e| {
                    format!("column properties is not a JSON object of strings: {e}")
                })?);
        }
    }
    Ok(())
}

/// Files matching `pattern` (a path whose file name may hold `*`/`?`).
fn jsonl_files(pattern: &str) -> Result<Vec<PathBuf>, SourceError> {
    let path = Path::new(pattern);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let entries = std::fs::read_dir(dir).map_err(|e| SourceError::Failed {
        source_kind: "jsonl",
        detail: format!("{}: {e}", dir.display()),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| crate::config::glob(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

fn read_jsonl(pattern: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Record>, SourceError> {
    use std::io::BufRead;
    let mut out = Vec::new();
    for file in jsonl_files(pattern)? {
        let handle = std::fs::File::open(&file).map_err(|e| SourceError::Failed {
            source_kind: "jsonl",
            detail: format!("{}: {e}", file.display()),
        })?;
        for (n, line) in std::io::BufReader::new(handle).lines().enumerate() {
            let line = line.map_err(|e| SourceError::Failed {
                source_kind: "jsonl",
                detail: format!("{}:{}: {e}", file.display(), n + 1),
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Record =
                serde_json::from_str(&line).map_err(|e| SourceError::Malformed {
                    source_kind: "jsonl",
                    detail: format!("{}:{}: {e}", file.display(), n + 1),
                })?;
            if record.time_ms >= from_ms && record.time_ms < to_ms {
                out.push(record);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_filters_by_window_and_names_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("mqaudit-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("a.jsonl"),
            "{\"key\":\"k1\",\"time_ms\":5}\n\n{\"key\":\"k2\",\"time_ms\":15,\"msg_id\":\"M\"}\n",
        )
        .expect("write");
        std::fs::write(dir.join("b.jsonl"), "{\"key\":\"k3\",\"time_ms\":9}\n").expect("write");
        let pattern = dir.join("*.jsonl").to_string_lossy().into_owned();
        let records = read_jsonl(&pattern, 0, 10).expect("reads");
        assert_eq!(
            records
                .iter()
                .map(|r| r.key.as_deref().unwrap_or(""))
                .collect::<Vec<_>>(),
            ["k1", "k3"]
        );
        std::fs::write(
            dir.join("c.jsonl"),
            "{\"key\":\"k4\",\"time_ms\":1}\n{\"key\":7}\n",
        )
        .expect("write");
        let err = read_jsonl(&pattern, 0, 10).expect_err("bad line");
        assert_eq!(err.kind(), "malformed");
        assert!(err.to_string().contains("c.jsonl:2"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
