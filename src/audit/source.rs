//! Record sources: where a flow's produced and consumed records come from.
//! Each returns the records whose event time lies in a window `[from, to)`.
//!
//! * `jsonl`: JSON-lines files, `{"key": ..., "time_ms": ...[, "msg_id": ...]}`,
//!   read through [`super::jsonl`]'s chunk index (a window reads only the
//!   chunks that can hold it, and each file's new tail);
//! * `http`: `GET url?from=MS&to=MS` answering a JSON array of such objects,
//!   or pages `{"records": [...], "next": CURSOR}` followed with
//!   `&cursor=CURSOR` until `next` is null (timeout per attempt, retries
//!   with backoff, a size limit per page);
//! * `sql`: a PostgreSQL query taking the bounds as `$1`, `$2` (timestamptz)
//!   and returning key, time (timestamptz, timestamp or epoch ms) and an
//!   optional msgId, read through a server-side cursor in batches;
//! * `rocketmq_trace`: the trace records the ingest stored (see `trace`).
//!
//! Ledger records stream: each is turned into a produced or consumed record
//! as it arrives, so no source holds a window's raw records (a file's batch,
//! a cursor's batch or one HTTP page at most).
//!
//! A source never returns a partial answer: any bad row or failed request is
//! an error for the whole fetch, so a run fails and is retried rather than
//! reporting losses that are really a broken source.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use sqlx::{Column, Row};

use super::jsonl::JsonlIndex;
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

/// Where a ledger's records go as they are read, one at a time; an error
/// stops the fetch.
pub type RecordSink<'a> = dyn FnMut(Record) -> Result<(), SourceError> + Send + 'a;

impl From<super::store::StoreError> for SourceError {
    fn from(e: super::store::StoreError) -> SourceError {
        trace_failed(e)
    }
}

/// The trace source's store failed.
fn trace_failed(e: super::store::StoreError) -> SourceError {
    SourceError::Failed {
        source_kind: "rocketmq_trace",
        detail: e.to_string(),
    }
}

/// A Pub trace row as a produced message.
fn trace_produced(
    r: &super::store::TraceRow,
    kind: MessageKind,
    transaction: Option<TxState>,
) -> Produced {
    Produced {
        msg_id: Some(r.msg_id.clone()),
        keys: r.key_list(),
        time_ms: r.time_ms,
        offset_msg_id: r.offset_msg_id.clone(),
        tags: r.tags.clone(),
        properties: None,
        // A Pub is written only for a stored message: success = false
        // means stored but not SEND_OK.
        status: if r.success {
            SendStatus::SendOk
        } else {
            SendStatus::NotOk
        },
        kind,
        transaction,
        batch: r.batch,
    }
}

/// Rows per `FETCH` from the sql source's cursor.
const SQL_BATCH_ROWS: usize = 10_000;
/// Pages one HTTP fetch follows at most (a server that never ends its
/// cursor chain is an error, not an endless run).
const HTTP_MAX_PAGES: usize = 100_000;

/// A configured source, ready to fetch.
pub struct Source {
    config: SourceConfig,
    flow: String,
    /// Lazily connected PostgreSQL pool (sql sources).
    pg: tokio::sync::OnceCell<sqlx::PgPool>,
    http: reqwest::Client,
    /// Chunk indexes of the jsonl source's files.
    jsonl: Arc<JsonlIndex>,
}

impl Source {
    /// A source for one side of a flow.
    pub fn new(config: SourceConfig, flow: &str) -> Source {
        Source {
            config,
            flow: flow.to_string(),
            pg: tokio::sync::OnceCell::new(),
            http: reqwest::Client::new(),
            jsonl: Arc::new(JsonlIndex::default()),
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
        let mut messages = Vec::new();
        let unauditable = self
            .stream_produced(store, topic, (from_ms, to_ms), &mut |m| {
                messages.push(m);
                Ok(())
            })
            .await?;
        Ok(ProducedFetch {
            messages,
            unauditable,
        })
    }

    /// Hand the flow's produced messages with event time in `[from, to)`
    /// to `sink` as they are read; returns how many records could not be
    /// audited (neither key nor message id).
    ///
    /// # Errors
    /// Any failure or malformed record fails the whole fetch, as does an
    /// error of the sink.
    pub async fn stream_produced(
        &self,
        store: &Store,
        topic: &str,
        (from_ms, to_ms): (i64, i64),
        sink: &mut (dyn FnMut(Produced) -> Result<(), SourceError> + Send),
    ) -> Result<u64, SourceError> {
        let mut unauditable = 0;
        if self.is_trace() {
            // Transaction halves wait for their recorded state (looked up
            // in chunks at the end); every other message goes on at once.
            let mut halves = Vec::new();
            store
                .for_each_trace_row(&self.flow, TraceSide::Pub, (from_ms, to_ms), |r| {
                    let kind = MessageKind::from_trace(r.msg_type);
                    if kind == MessageKind::Transaction {
                        halves.push(r);
                        Ok(())
                    } else {
                        sink(trace_produced(&r, kind, None))
                    }
                })
                .await?;
            for chunk in halves.chunks(10_000) {
                let ids: Vec<&str> = chunk.iter().map(|r| r.msg_id.as_str()).collect();
                let states = store
                    .tx_states(&self.flow, &ids)
                    .await
                    .map_err(trace_failed)?;
                for r in chunk {
                    let state = states
                        .get(&r.msg_id)
                        .and_then(|s| TxState::from_java(s))
                        .unwrap_or(TxState::Unknown);
                    sink(trace_produced(r, MessageKind::Transaction, Some(state)))?;
                }
            }
            return Ok(0);
        }
        let kind = self.kind();
        let mut n = 0_usize;
        self.for_each_record(from_ms, to_ms, &mut |record| {
            n += 1;
            if record.topic.as_deref().is_some_and(|t| t != topic) {
                return Ok(());
            }
            let produced = record.produced().map_err(|detail| SourceError::Malformed {
                source_kind: kind,
                detail: format!("record {n}: {detail}"),
            })?;
            if produced.keys.is_empty() && produced.msg_id.is_none() {
                unauditable += 1;
                Ok(())
            } else {
                sink(produced)
            }
        })
        .await?;
        Ok(unauditable)
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
        let mut records = Vec::new();
        let unauditable = self
            .stream_consumed(store, (topic, group), (from_ms, to_ms), &mut |c| {
                records.push(c);
                Ok(())
            })
            .await?;
        Ok(ConsumedFetch {
            records,
            unauditable,
        })
    }

    /// Hand the flow group's consumptions with event time in `[from, to)`
    /// to `sink` as they are read; returns how many records could not be
    /// audited.
    ///
    /// # Errors
    /// Any failure or malformed record fails the whole fetch, as does an
    /// error of the sink.
    pub async fn stream_consumed(
        &self,
        store: &Store,
        (topic, group): (&str, &str),
        (from_ms, to_ms): (i64, i64),
        sink: &mut (dyn FnMut(Consumed) -> Result<(), SourceError> + Send),
    ) -> Result<u64, SourceError> {
        let mut unauditable = 0;
        if self.is_trace() {
            store
                .for_each_trace_row(&self.flow, TraceSide::Sub, (from_ms, to_ms), |r| {
                    if !r.success {
                        return Ok(());
                    }
                    sink(Consumed {
                        keys: r.key_list(),
                        msg_id: Some(r.msg_id),
                        time_ms: r.time_ms,
                    })
                })
                .await?;
            return Ok(0);
        }
        self.for_each_record(from_ms, to_ms, &mut |record| {
            if record.topic.as_deref().is_some_and(|t| t != topic)
                || record.group.as_deref().is_some_and(|g| g != group)
            {
                return Ok(());
            }
            let consumed = record.consumed();
            if consumed.keys.is_empty() && consumed.msg_id.is_none() {
                unauditable += 1;
                Ok(())
            } else {
                sink(consumed)
            }
        })
        .await?;
        Ok(unauditable)
    }

    /// Hand a ledger's records with event time in `[from_ms, to_ms)` to
    /// `sink` as they are read.
    ///
    /// # Errors
    /// Any failure or malformed record fails the whole fetch (records
    /// already handed over are then to be discarded); a trace source has
    /// no ledger records.
    pub async fn for_each_record(
        &self,
        from_ms: i64,
        to_ms: i64,
        sink: &mut RecordSink<'_>,
    ) -> Result<(), SourceError> {
        match &self.config {
            SourceConfig::RocketmqTrace { .. } => Err(SourceError::Failed {
                source_kind: "rocketmq_trace",
                detail: "the trace source has no ledger records".to_string(),
            }),
            SourceConfig::Jsonl { path } => {
                stream_jsonl(&self.jsonl, path, from_ms, to_ms, sink).await
            }
            SourceConfig::Http {
                url,
                timeout_seconds,
                retries,
                max_bytes,
            } => {
                let limits = HttpLimits {
                    timeout: *timeout_seconds,
                    retries: *retries,
                    max_bytes: *max_bytes,
                };
                self.fetch_http(url, limits, from_ms, to_ms, sink).await
            }
            SourceConfig::Sql {
                url,
                query,
                timeout_seconds,
                time_zone,
            } => {
                self.fetch_sql(
                    url,
                    query,
                    *timeout_seconds,
                    *time_zone,
                    (from_ms, to_ms),
                    sink,
                )
                .await
            }
        }
    }

    /// Every page of the window, one after the other; each page is asked
    /// with its own retries.
    async fn fetch_http(
        &self,
        url: &str,
        limits: HttpLimits,
        from_ms: i64,
        to_ms: i64,
        sink: &mut RecordSink<'_>,
    ) -> Result<(), SourceError> {
        let mut cursor: Option<String> = None;
        for _ in 0..HTTP_MAX_PAGES {
            let page_url = http_page_url(url, from_ms, to_ms, cursor.as_deref())?;
            let page = self.http_page(&page_url, limits).await?;
            for record in page.records {
                sink(record)?;
            }
            match page.next {
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(SourceError::Malformed {
                        source_kind: "http",
                        detail: format!(
                            "GET {page_url}: \"next\" repeats the cursor it was asked with"
                        ),
                    });
                }
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
        Err(SourceError::Malformed {
            source_kind: "http",
            detail: format!("GET {url}: more than {HTTP_MAX_PAGES} pages for one window"),
        })
    }

    async fn http_page(&self, url: &str, limits: HttpLimits) -> Result<Page, SourceError> {
        let mut last = None;
        for attempt in 0..=limits.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
            }
            match self
                .http_attempt(url, limits.timeout, limits.max_bytes)
                .await
            {
                Ok(page) => return Ok(page),
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
    ) -> Result<Page, SourceError> {
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
            Page::parse(&body).map_err(|e| SourceError::Malformed {
                source_kind: "http",
                detail: format!("GET {url}: {e}"),
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
        (from_ms, to_ms): (i64, i64),
        sink: &mut RecordSink<'_>,
    ) -> Result<(), SourceError> {
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
            // A server-side cursor, read a batch at a time: the window's
            // rows never sit whole in this process (nor in the driver's
            // buffers). Read-only; the transaction's end closes the cursor,
            // and a dropped one (error, timeout) rolls back.
            let (from, to) = (utc(from_ms), utc(to_ms));
            let mut tx = pool
                .begin()
                .await
                .map_err(|e| failed(format!("begin: {e}")))?;
            sqlx::query("SET TRANSACTION READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(format!("read-only transaction: {e}")))?;
            let declare = format!(
                "DECLARE mqaudit_records NO SCROLL CURSOR FOR {}",
                query.trim().trim_end_matches(';')
            );
            // Not cached as prepared statements: the cursor's name is
            // reused by every fetch, and its row type is the query's.
            sqlx::query(&declare)
                .persistent(false)
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(format!("query: {e}")))?;
            let fetch = format!("FETCH FORWARD {SQL_BATCH_ROWS} FROM mqaudit_records");
            let mut index = 0_usize;
            loop {
                let rows = sqlx::query(&fetch)
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| failed(format!("query: {e}")))?;
                for row in &rows {
                    sink(sql_record(index, row, zone)?)?;
                    index += 1;
                }
                if rows.len() < SQL_BATCH_ROWS {
                    break;
                }
            }
            tx.commit()
                .await
                .map_err(|e| failed(format!("end of the read: {e}")))
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

/// Read the files on a blocking thread, handing records over in batches
/// through a small bounded channel (the reader waits while the audit is
/// busy: at most a few batches are in flight).
async fn stream_jsonl(
    index: &Arc<JsonlIndex>,
    pattern: &str,
    from_ms: i64,
    to_ms: i64,
    sink: &mut RecordSink<'_>,
) -> Result<(), SourceError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Record>, SourceError>>(4);
    let (index, pattern) = (index.clone(), pattern.to_string());
    let reader = tokio::task::spawn_blocking(move || {
        let read = index.read_window(&pattern, from_ms, to_ms, &mut |batch| {
            tx.blocking_send(Ok(batch)).is_ok()
        });
        if let Err(e) = read {
            let _ = tx.blocking_send(Err(e));
        }
    });
    while let Some(batch) = rx.recv().await {
        for record in batch? {
            sink(record)?;
        }
    }
    reader.await.map_err(|e| SourceError::Failed {
        source_kind: "jsonl",
        detail: format!("reader thread: {e}"),
    })
}

/// The HTTP source's per-attempt limits.
#[derive(Debug, Clone, Copy)]
struct HttpLimits {
    timeout: u64,
    retries: u32,
    max_bytes: u64,
}

/// One HTTP answer: a bare array is the whole window; an object is a page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    records: Vec<Record>,
    /// The cursor of the next page; absent or null on the last.
    #[serde(default)]
    next: Option<String>,
}

impl Page {
    fn parse(body: &[u8]) -> Result<Page, String> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => serde_json::from_slice::<Vec<Record>>(body)
                .map(|records| Page {
                    records,
                    next: None,
                })
                .map_err(|e| format!("not a JSON array of records: {e}")),
            Some(b'{') => serde_json::from_slice::<Page>(body).map_err(|e| {
                format!("not a page {{\"records\": [...], \"next\": cursor or null}}: {e}")
            }),
            _ => Err("not a JSON array of records nor a page object".to_string()),
        }
    }
}

/// The window's URL, with the page's cursor after the first.
fn http_page_url(
    url: &str,
    from_ms: i64,
    to_ms: i64,
    cursor: Option<&str>,
) -> Result<String, SourceError> {
    let mut parsed = reqwest::Url::parse(url).map_err(|e| SourceError::Failed {
        source_kind: "http",
        detail: format!("{url}: {e}"),
    })?;
    {
        let mut query = parsed.query_pairs_mut();
        query
            .append_pair("from", &from_ms.to_string())
            .append_pair("to", &to_ms.to_string());
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
    }
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_answer_is_an_array_or_a_page() {
        let whole = Page::parse(b" [{\"key\":\"a\",\"time_ms\":1}]").expect("array");
        assert_eq!((whole.records.len(), whole.next), (1, None));
        let page =
            Page::parse(br#"{"records":[{"key":"a","time_ms":1}],"next":"p2"}"#).expect("page");
        assert_eq!((page.records.len(), page.next.as_deref()), (1, Some("p2")));
        let last = Page::parse(br#"{"records":[],"next":null}"#).expect("last page");
        assert_eq!(last.next, None);
        for bad in [&br#"{"rows":[]}"#[..], b"42", b""] {
            assert!(
                Page::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            http_page_url("http://h/r?x=1", 5, 9, Some("a b&c")).expect("url"),
            "http://h/r?x=1&from=5&to=9&cursor=a+b%26c"
        );
        assert_eq!(
            http_page_url("http://h/r", 5, 9, None).expect("url"),
            "http://h/r?from=5&to=9"
        );
    }
}
