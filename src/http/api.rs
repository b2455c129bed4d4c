//! The JSON API, in Prometheus's envelope
//! (`{"status":"success","data":...}` or `{"status":"error","errorType":...,"error":...}`):
//!
//! * `GET /api/v1/flows`: configured flows and their totals;
//! * `GET /api/v1/audit/runs?flow=`: recent runs, newest first;
//! * `GET /api/v1/audit/findings?flow=&stage=&since=`: findings (`since` in epoch ms or RFC 3339);
//! * `GET /api/v1/keys/{key}?flow=`: one key's full chain (asks the brokers).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::audit::runner::Auditor;
use crate::audit::store::Store;

/// What the API reads.
pub struct AuditState {
    /// The store.
    pub store: Store,
    /// One auditor per flow, by name.
    pub auditors: HashMap<String, Arc<Auditor>>,
}

impl std::fmt::Debug for AuditState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditState")
            .field("flows", &self.auditors.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// (status, body) of an API request.
pub async fn handle(audit: Option<&AuditState>, path: &str, query: &str) -> (u16, Value) {
    let params = parse_query(query);
    let Some(audit) = audit else {
        return error(404, "not_found", "no [[flow]] is configured");
    };
    let flow = params.get("flow").map(String::as_str);
    if let Some(flow) = flow
        && !audit.auditors.contains_key(flow)
    {
        return error(400, "bad_data", &format!("unknown flow {flow:?}"));
    }
    let result: Result<Value, String> = match path {
        "/api/v1/flows" => {
            let mut flows = Vec::new();
            let mut names: Vec<&String> = audit.auditors.keys().collect();
            names.sort();
            for name in names {
                let a = &audit.auditors[name];
                let f = a.flow();
                let totals = audit.store.totals(name).await.map_err(|e| e.to_string());
                flows.push(json!({
                    "name": f.name, "cluster": f.cluster, "topic": f.topic, "group": f.group,
                    "schedule": f.schedule.to_string(), "window_seconds": f.window.as_secs(),
                    "settle_seconds": f.settle.as_secs(), "deadline_seconds": f.deadline.as_secs(),
                    "clock_skew_seconds": f.clock_skew.as_secs(),
                    "recheck_horizon_seconds": f.recheck_horizon.as_secs(),
                    "subscription": f.subscription.as_ref().map(ToString::to_string),
                    "totals": totals
                        .and_then(|t| serde_json::to_value(t).map_err(|e| e.to_string()))
                        .unwrap_or_else(|e| json!({"error": e})),
                }));
            }
            Ok(json!(flows))
        }
        "/api/v1/audit/runs" => audit
            .store
            .runs(flow, 100)
            .await
            .map(|r| json!(r))
            .map_err(|e| e.to_string()),
        "/api/v1/audit/findings" => {
            let since = match params.get("since").map(|s| parse_time(s)).transpose() {
                Ok(since) => since,
                Err(e) => return error(400, "bad_data", &e),
            };
            let stage = params.get("stage").map(String::as_str);
            audit
                .store
                .findings(flow, stage, since, 1000)
                .await
                .map(|f| json!(f))
                .map_err(|e| e.to_string())
        }
        p if p.starts_with("/api/v1/keys/") => {
            let key = percent_encoding::percent_decode_str(&p["/api/v1/keys/".len()..])
                .decode_utf8_lossy()
                .into_owned();
            let auditor = match flow.or_else(|| {
                (audit.auditors.len() == 1)
                    .then(|| audit.auditors.keys().next().map(String::as_str))
                    .flatten()
            }) {
                Some(name) => &audit.auditors[name],
                None => return error(400, "bad_data", "several flows: give ?flow="),
            };
            crate::audit::lookup::chain(auditor, &key, auditor.clock().now_ms()).await
        }
        _ => return error(404, "not_found", "no such API route"),
    };
    match result {
        Ok(data) => (200, json!({"status": "success", "data": data})),
        Err(e) => error(500, "internal", &e),
    }
}

fn error(status: u16, kind: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({"status": "error", "errorType": kind, "error": message}),
    )
}

fn parse_time(text: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()))
        .map_err(|_| format!("{text:?} is neither epoch milliseconds nor RFC 3339"))
}

/// A query string's parameters, percent- and `+`-decoded (malformed escapes
/// kept as written). Public for the property tests.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let q = parse_query("flow=or%20ders&stage=lost&since=&x");
        assert_eq!(q["flow"], "or ders");
        assert_eq!(q["stage"], "lost");
        assert_eq!(q["since"], "");
        assert_eq!(q["x"], "");
        // Malformed escapes are kept as written, never a panic.
        assert_eq!(parse_query("k=a%2Fb%zz%4")["k"], "a/b%zz%4");
        assert_eq!(parse_query("k=%FF")["k"], "\u{fffd}");
    }
}
