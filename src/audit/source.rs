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

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use sqlx::Row;

use super::store::Store;
use crate::config::SourceConfig;

/// One record: a key, when it happened, and the message id if known.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Record {
    /// The audit key.
    pub key: String,
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// Message id (proves the broker acknowledged the send), if recorded.
    #[serde(default)]
    pub msg_id: Option<String>,
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

/// Which side of a flow a source feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Producer records.
    Produced,
    /// Consumer records.
    Consumed,
}

impl Side {
    /// The trace table's side name.
    pub fn trace_side(self) -> &'static str {
        match self {
            Side::Produced => "pub",
            Side::Consumed => "sub",
        }
    }
}

/// A configured source, ready to fetch.
pub struct Source {
    config: SourceConfig,
    side: Side,
    flow: String,
    /// Lazily connected PostgreSQL pool (sql sources).
    pg: tokio::sync::OnceCell<sqlx::PgPool>,
    /// Connection string (sql sources), read once at start.
    pg_url: Option<String>,
    http: reqwest::Client,
}

impl Source {
    /// A source for one side of a flow. `env` reads the environment (sql URLs).
    pub fn new(
        config: SourceConfig,
        side: Side,
        flow: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Source {
        let pg_url = match &config {
            SourceConfig::Sql { url_env, .. } => env(url_env),
            _ => None,
        };
        Source {
            config,
            side,
            flow: flow.to_string(),
            pg: tokio::sync::OnceCell::new(),
            pg_url,
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

    /// The records with event time in `[from_ms, to_ms)`.
    ///
    /// # Errors
    /// Any failure or malformed record fails the whole fetch.
    pub async fn fetch(
        &self,
        store: &Store,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Record>, SourceError> {
        match &self.config {
            SourceConfig::RocketmqTrace { .. } => {
                let rows = store
                    .trace_rows(&self.flow, self.side.trace_side(), from_ms, to_ms)
                    .await
                    .map_err(|e| SourceError::Failed {
                        source_kind: "rocketmq_trace",
                        detail: e.to_string(),
                    })?;
                Ok(rows
                    .into_iter()
                    .map(|r| Record {
                        key: r.key,
                        time_ms: r.time_ms,
                        msg_id: Some(r.msg_id),
                    })
                    .collect())
            }
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
                query,
                timeout_seconds,
                ..
            } => {
                self.fetch_sql(query, *timeout_seconds, from_ms, to_ms)
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
        query: &str,
        timeout: u64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Record>, SourceError> {
        let failed = |detail: String| SourceError::Failed {
            source_kind: "sql",
            detail,
        };
        let work = async {
            let url = self.pg_url.clone().ok_or_else(|| {
                failed("connection string environment variable not set".to_string())
            })?;
            let pool = self
                .pg
                .get_or_try_init(|| async {
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(Duration::from_secs(timeout))
                        .connect(&url)
                        .await
                })
                .await
                .map_err(|e| failed(format!("connect: {e}")))?;
            let (from, to) = (utc(from_ms), utc(to_ms));
            let rows = sqlx::query(query)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await
                .map_err(|e| failed(format!("query: {e}")))?;
            rows.iter()
                .enumerate()
                .map(|(i, row)| sql_record(i, row))
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

fn sql_record(index: usize, row: &sqlx::postgres::PgRow) -> Result<Record, SourceError> {
    let malformed = |detail: String| SourceError::Malformed {
        source_kind: "sql",
        detail: format!("row {index}: {detail}"),
    };
    let key: Option<String> = row
        .try_get(0)
        .map_err(|e| malformed(format!("column 1 (key) is not text: {e}")))?;
    let key = key.ok_or_else(|| malformed("key is NULL".to_string()))?;
    let time_ms = if let Ok(t) = row.try_get::<Option<DateTime<Utc>>, _>(1) {
        t.map(|t| t.timestamp_millis())
    } else if let Ok(t) = row.try_get::<Option<NaiveDateTime>, _>(1) {
        t.map(|t| t.and_utc().timestamp_millis())
    } else if let Ok(t) = row.try_get::<Option<i64>, _>(1) {
        t
    } else {
        return Err(malformed(
            "column 2 (time) is not timestamptz, timestamp or bigint epoch ms".to_string(),
        ));
    };
    let time_ms = time_ms.ok_or_else(|| malformed("time is NULL".to_string()))?;
    let msg_id = if row.len() > 2 {
        row.try_get::<Option<String>, _>(2)
            .map_err(|e| malformed(format!("column 3 (msg_id) is not text: {e}")))?
    } else {
        None
    };
    Ok(Record {
        key,
        time_ms,
        msg_id,
    })
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
            records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
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
