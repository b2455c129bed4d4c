//! One key's full chain, for `mqaudit lookup` and `/api/v1/keys/{key}`:
//! the stored findings, the producer and consumer records the sources hold
//! for it, the trace records, and, asked of the brokers now, where the topic
//! stores it, the group's committed offset on that queue, and the DLQ.

use serde_json::{Value, json};

use super::runner::Auditor;

/// How far back to search the sources when the key has no finding.
const SEARCH_BACK_MS: i64 = 24 * 3600 * 1000;

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
        .trace_for_key(&flow.name, key)
        .await
        .map_err(|e| e.to_string())?;
    let from = findings
        .iter()
        .map(|f| f.window_start_ms)
        .min()
        .unwrap_or(now_ms - SEARCH_BACK_MS);
    let window_end = findings
        .iter()
        .map(|f| f.window_start_ms + flow.window.as_millis() as i64)
        .max()
        .unwrap_or(now_ms);

    let mut produced = Value::Null;
    let mut consumed = Value::Null;
    for (side, slot, to) in [
        (super::source::Side::Produced, &mut produced, window_end),
        (super::source::Side::Consumed, &mut consumed, now_ms),
    ] {
        let config = match side {
            super::source::Side::Produced => flow.produced.clone(),
            super::source::Side::Consumed => flow.consumed.clone(),
        };
        let source =
            super::source::Source::new(config, side, &flow.name, |n| std::env::var(n).ok());
        *slot = match source.fetch(store, from, to.max(from + 1)).await {
            Ok(records) => json!(
                records
                    .into_iter()
                    .filter(|r| r.key == key)
                    .map(|r| json!({"time_ms": r.time_ms, "msg_id": r.msg_id}))
                    .collect::<Vec<_>>()
            ),
            Err(e) => json!({"error": e.to_string()}),
        };
    }

    let admin = auditor.admin();
    let mut broker = Vec::new();
    let mut dlq = Vec::new();
    for (topic, out) in [
        (flow.topic.clone(), &mut broker),
        (format!("%DLQ%{}", flow.group), &mut dlq),
    ] {
        let mut route = None;
        for namesrv in auditor.namesrv() {
            if let Ok(r) = admin.topic_route(namesrv, &topic).await {
                route = Some(r);
                break;
            }
        }
        for data in route.map(|r| r.broker_datas).unwrap_or_default() {
            let Some(addr) = data.master_addr() else {
                continue;
            };
            match admin
                .query_message_by_key(addr, &topic, key, from - 10 * 60 * 1000, now_ms + 60_000)
                .await
            {
                Ok(records) => {
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
                        out.push(json!({
                            "broker": data.broker_name,
                            "topic": topic,
                            "queue_id": record.queue_id,
                            "queue_offset": record.queue_offset,
                            "store_timestamp_ms": record.store_timestamp,
                            "msg_id": record.uniq_key(),
                            "reconsume_times": record.reconsume_times,
                            "group_offset": group_offset,
                            "consumed_by_offset": group_offset.map(|o| o > record.queue_offset),
                        }));
                    }
                }
                Err(e) => out.push(
                    json!({"broker": data.broker_name, "topic": topic, "error": e.to_string()}),
                ),
            }
        }
    }
    Ok(json!({
        "flow": flow.name,
        "key": key,
        "findings": findings,
        "producer_records": produced,
        "consumer_records": consumed,
        "broker": broker,
        "dlq": dlq,
        "trace": trace,
    }))
}
