//! One message's full chain, for `mqaudit lookup` and `/api/v1/keys/{key}`,
//! by any of its keys or its message id: the stored findings, the producer
//! and consumer records the sources hold for it, the trace records, the
//! subscription rule that applies to the group, and, asked of the brokers
//! now, where the topic stores it, the group's committed offset on that
//! queue, and its `%RETRY%` and `%DLQ%` copies.

use serde_json::{Value, json};

use super::runner::Auditor;
use super::source::ProducedFetch;

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

    let produced = match auditor
        .produced_source()
        .fetch_produced(store, &flow.topic, from, window_end)
        .await
    {
        Ok(ProducedFetch { messages, .. }) => json!(
            messages
                .into_iter()
                .filter(|m| matches(key, m.msg_id.as_deref(), &m.keys))
                .collect::<Vec<_>>()
        ),
        Err(e) => json!({"error": e.to_string()}),
    };
    let consumed = match auditor
        .consumed_source()
        .fetch_consumed(store, &flow.topic, &flow.group, from, now_ms.max(from + 1))
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
    };
    let subscription = match auditor.subscription(now_ms).await {
        Ok(Some(applied)) => json!({
            "rule": applied.subscription.to_string(),
            "from": applied.origin,
        }),
        Ok(None) => json!({"rule": "*", "from": "none known: every message counts"}),
        Err(e) => json!({"error": e.to_string()}),
    };

    let admin = auditor.admin();
    let mut broker = Vec::new();
    for topic in [
        flow.topic.clone(),
        format!("%RETRY%{}", flow.group),
        format!("%DLQ%{}", flow.group),
    ] {
        let mut route = None;
        for namesrv in auditor.namesrv() {
            if let Ok(r) = admin.topic_route(namesrv, &topic).await {
                route = Some(r);
                break;
            }
        }
        for data in route.map(|r| r.broker_datas).unwrap_or_default() {
            // The master, or a slave when the master is down.
            let addrs: Vec<&str> = data
                .master_addr()
                .into_iter()
                .chain(data.slaves().map(|(_, a)| a))
                .collect();
            let (begin, end) = (from - 10 * 60 * 1000, now_ms + 60_000);
            let mut answer = None;
            for addr in addrs {
                let by_key = admin
                    .query_message_by_key(addr, &topic, key, begin, end)
                    .await;
                let found = match by_key {
                    Ok(found) if !found.is_empty() => Ok(found),
                    _ => {
                        admin
                            .query_message_by_unique_key(addr, &topic, key, begin, end)
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
                    for record in records {
                        let group_offset = if topic == flow.topic {
                            admin
                                .consumer_offset(addr, &flow.group, &topic, record.queue_id)
                                .await
                                .ok()
                                .flatten()
                        } else {
                            None
                        };
                        broker.push(json!({
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
                        }));
                    }
                }
                Some(Err(e)) => broker.push(
                    json!({"broker": data.broker_name, "topic": topic, "error": e.to_string()}),
                ),
                None => {}
            }
        }
    }
    Ok(json!({
        "flow": flow.name,
        "key": key,
        "subscription": subscription,
        "findings": findings,
        "producer_records": produced,
        "consumer_records": consumed,
        "broker": broker,
        "trace": trace,
    }))
}
