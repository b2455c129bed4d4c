//! One message's full chain, for `mqaudit lookup` and `/api/v1/keys/{key}`,
//! by any of its keys or its message id: the stored findings, the producer
//! and consumer records the sources hold for it, the trace records, the
//! subscription rule that applies to the group, and, asked of the brokers
//! now, where the topic stores it, the group's committed offset on that
//! queue, and its `%RETRY%` and `%DLQ%` copies.

use serde_json::{Value, json};

use super::runner::Auditor;
use super::source::ProducedFetch;
use crate::admin::{BrokerData, MessageRecord};

/// How far back to search the sources when the key has no finding.
const SEARCH_BACK_MS: i64 = 24 * 3600 * 1000;

fn matches(key: &str, msg_id: Option<&str>, keys: &[String]) -> bool {
    msg_id == Some(key) || keys.iter().any(|k| k == key)
}

/// The chain of `key` in the auditor's flow.
///
/// # Errors
/// Store failures; source and broker failures are reported inside the chain.
pub async fn chain(auditor: &Auditor, key: &str, now_ms: i64) -> Result<Value, String> {
    let flow = auditor.flow();
    let store = auditor.store();
    let findings = store
        .key_findings(Some(&flow.name), key)
        .await
        .map_err(|e| e.to_string())?;
    let trace = store
        .trace_for(&flow.name, key)
        .await
        .map_err(|e| e.to_string())?;
    let from = findings
        .iter()
        .map(|f| f.window_start_ms)
        .chain(trace.iter().map(|t| t.time_ms))
        .min()
        .unwrap_or(now_ms - SEARCH_BACK_MS);
    let window_end = findings
        .iter()
        .map(|f| f.window_start_ms + flow.window.as_millis() as i64)
        .max()
        .unwrap_or(now_ms)
        .max(from + 1);
    let span = Span {
        from,
        window_end,
        now_ms,
    };
    Ok(json!({
        "flow": flow.name,
        "key": key,
        "subscription": subscription(auditor, now_ms).await,
        "findings": findings,
        "producer_records": producer_records(auditor, key, span).await,
        "consumer_records": consumer_records(auditor, key, span).await,
        "broker": broker_copies(auditor, key, span).await,
        "trace": trace,
    }))
}

/// The times a chain searches: from its first sign to now.
#[derive(Debug, Clone, Copy)]
struct Span {
    from: i64,
    window_end: i64,
    now_ms: i64,
}

async fn subscription(auditor: &Auditor, now_ms: i64) -> Value {
    match auditor.subscription(now_ms).await {
        Ok(Some(applied)) => json!({
            "rule": applied.subscription.to_string(),
            "from": applied.origin,
        }),
        Ok(None) => json!({"rule": "*", "from": "none known: every message counts"}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

async fn producer_records(auditor: &Auditor, key: &str, span: Span) -> Value {
    let flow = auditor.flow();
    match auditor
        .produced_source()
        .fetch_produced(auditor.store(), &flow.topic, span.from, span.window_end)
        .await
    {
        Ok(ProducedFetch { messages, .. }) => json!(
            messages
                .into_iter()
                .filter(|m| matches(key, m.msg_id.as_deref(), &m.keys))
                .collect::<Vec<_>>()
        ),
        Err(e) => json!({"error": e.to_string()}),
    }
}

async fn consumer_records(auditor: &Auditor, key: &str, span: Span) -> Value {
    let flow = auditor.flow();
    let until = span.now_ms.max(span.from + 1);
    match auditor
        .consumed_source()
        .fetch_consumed(auditor.store(), &flow.topic, &flow.group, span.from, until)
        .await
    {
        Ok(fetch) => json!(
            fetch
                .records
                .into_iter()
                .filter(|c| matches(key, c.msg_id.as_deref(), &c.keys))
                .collect::<Vec<_>>()
        ),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Where the brokers hold the message now: on the flow's topic, in the
/// group's `%RETRY%` and `%DLQ%` topics. A topic no name server routes has
/// no copies; a route or query that fails is an entry with its error.
async fn broker_copies(auditor: &Auditor, key: &str, span: Span) -> Vec<Value> {
    let flow = auditor.flow();
    let mut copies = Vec::new();
    for topic in [
        flow.topic.clone(),
        format!("%RETRY%{}", flow.group),
        format!("%DLQ%{}", flow.group),
    ] {
        let route = match auditor.cluster().topic_route(&topic).await {
            Ok(route) => route,
            Err(e) if e.is_topic_missing() => continue,
            Err(e) => {
                copies.push(json!({"topic": topic, "error": format!("route: {e}")}));
                continue;
            }
        };
        for data in &route.broker_datas {
            copies.extend(copies_on(auditor, data, &topic, key, span).await);
        }
    }
    copies
}

/// The copies one broker group holds, asked of its master or, when the
/// master is down, a slave.
async fn copies_on(
    auditor: &Auditor,
    data: &BrokerData,
    topic: &str,
    key: &str,
    span: Span,
) -> Vec<Value> {
    let admin = auditor.cluster().admin();
    let (begin, end) = (span.from - 10 * 60 * 1000, span.now_ms + 60_000);
    let mut answer = None;
    for addr in data
        .master_addr()
        .into_iter()
        .chain(data.slaves().map(|(_, a)| a))
    {
        let found = match admin
            .query_message_by_key(addr, topic, key, begin, end)
            .await
        {
            Ok(found) if !found.is_empty() => Ok(found),
            _ => {
                admin
                    .query_message_by_unique_key(addr, topic, key, begin, end)
                    .await
            }
        };
        match found {
            Ok(records) => {
                answer = Some(Ok((addr, records)));
                break;
            }
            Err(e) => answer = Some(Err(e)),
        }
    }
    match answer {
        Some(Ok((addr, records))) => {
            let mut copies = Vec::new();
            for record in &records {
                copies.push(copy(auditor, data, addr, topic, record).await);
            }
            copies
        }
        Some(Err(e)) => {
            vec![json!({"broker": data.broker_name, "topic": topic, "error": e.to_string()})]
        }
        None => Vec::new(),
    }
}

/// One stored copy, with the group's committed offset on its queue.
async fn copy(
    auditor: &Auditor,
    data: &BrokerData,
    addr: &str,
    topic: &str,
    record: &MessageRecord,
) -> Value {
    let flow = auditor.flow();
    let group_offset = if topic == flow.topic {
        auditor
            .cluster()
            .admin()
            .consumer_offset(addr, &flow.group, topic, record.queue_id)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    json!({
        "broker": data.broker_name,
        "asked": addr,
        "topic": topic,
        "queue_id": record.queue_id,
        "queue_offset": record.queue_offset,
        "store_timestamp_ms": record.store_timestamp,
        "msg_id": record.uniq_key(),
        "tags": record.properties.get("TAGS"),
        "reconsume_times": record.reconsume_times,
        "group_offset": group_offset,
        "consumed_by_offset": group_offset.map(|o| o > record.queue_offset),
    })
}
