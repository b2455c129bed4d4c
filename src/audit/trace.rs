//! The `rocketmq_trace` source's ingest: read `RMQ_SYS_TRACE_TOPIC` from
//! every master with the flow's own cursors (side-effect-free pulls: no
//! consumer group registered, no offset committed on the broker), keep the
//! records about the flow, and store them with the advanced cursor in one
//! transaction.
//!
//! Produced = a `Pub` with success for the flow's topic; consumed = a
//! `SubAfter` with success for the flow's group (its group comes from the
//! record, or from the `SubBefore` with the same request id when an older
//! client wrote a 7-field `SubAfter`). The key is each of the message keys,
//! or the message id, as the flow says.

use std::collections::HashMap;
use std::io::Read;

use crate::admin::{Admin, PullStatus};
use crate::body::json::MessageQueue;
use crate::body::message::MessageRecord;
use crate::body::trace::{self, TraceRecord};
use crate::config::FlowConfig;
use crate::remoting::Error;

use super::store::{Store, TraceRow};

/// The topic Java clients trace to by default.
pub const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// Group named in the side-effect-free pulls (exists on every broker).
const PULL_GROUP: &str = "TOOLS_CONSUMER";
/// Cursor name in the store.
const SOURCE: &str = "trace";

/// Why an ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A broker call failed.
    #[error("reading {TRACE_TOPIC}: {0}")]
    Broker(#[from] Error),
    /// A trace message could not be decoded.
    #[error("decoding a {TRACE_TOPIC} message at {broker} queue {queue} offset {offset}: {detail}")]
    Decode {
        /// Broker name.
        broker: String,
        /// Queue.
        queue: i32,
        /// Offset.
        offset: i64,
        /// What was wrong.
        detail: String,
    },
    /// The store failed.
    #[error("{0}")]
    Store(#[from] super::store::StoreError),
}

/// Ingest new trace messages for `flow`, at most `budget` messages; returns
/// how many were read.
///
/// # Errors
/// Broker, decoding or store failures; what was stored before stays stored.
pub async fn ingest(
    admin: &Admin,
    store: &Store,
    namesrv: &[String],
    flow: &FlowConfig,
    key_by_msg_id: bool,
    budget: usize,
) -> Result<usize, IngestError> {
    let mut route = None;
    let mut last_error = None;
    for addr in namesrv {
        match admin.topic_route(addr, TRACE_TOPIC).await {
            Ok(r) => {
                route = Some(r);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let route = match (route, last_error) {
        (Some(route), _) => route,
        (None, Some(e)) => return Err(e.into()),
        (None, None) => return Ok(0),
    };
    let mut read = 0;
    for data in &route.broker_datas {
        let Some(master) = data.master_addr() else {
            continue;
        };
        let queues = route
            .queue_datas
            .iter()
            .find(|q| q.broker_name == data.broker_name)
            .map_or(0, |q| q.read_queue_nums);
        for queue_id in 0..queues {
            let queue = MessageQueue {
                topic: TRACE_TOPIC.to_string(),
                broker_name: data.broker_name.clone(),
                queue_id,
            };
            let mut offset = match store
                .cursor(&flow.name, SOURCE, &data.broker_name, queue_id)
                .await?
            {
                Some(offset) => offset,
                None => admin.min_offset(master, TRACE_TOPIC, queue_id).await?,
            };
            while read < budget {
                let pull = admin.pull(master, PULL_GROUP, &queue, offset, 32).await?;
                let (rows, next) = match pull.status {
                    PullStatus::Found => {
                        let mut rows = Vec::new();
                        for message in &pull.messages {
                            rows.extend(rows_of(message, flow, key_by_msg_id).map_err(
                                |detail| IngestError::Decode {
                                    broker: data.broker_name.clone(),
                                    queue: queue_id,
                                    offset: message.queue_offset,
                                    detail,
                                },
                            )?);
                        }
                        read += pull.messages.len();
                        let next = pull
                            .messages
                            .last()
                            .map_or(pull.next_begin_offset, |m| m.queue_offset + 1);
                        (rows, next)
                    }
                    // Messages below the min offset were deleted: skip ahead.
                    PullStatus::OffsetIllegal if pull.next_begin_offset > offset => {
                        (Vec::new(), pull.next_begin_offset)
                    }
                    _ => break,
                };
                // Rows and the cursor that passes them go in one transaction.
                store
                    .ingest_trace(&flow.name, SOURCE, &data.broker_name, queue_id, &rows, next)
                    .await?;
                offset = next;
            }
        }
    }
    Ok(read)
}

/// The flow's rows in one trace message.
fn rows_of(
    message: &MessageRecord,
    flow: &FlowConfig,
    key_by_msg_id: bool,
) -> Result<Vec<TraceRow>, String> {
    let body = if message.is_compressed() {
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(&message.body[..])
            .take(64 * 1024 * 1024)
            .read_to_end(&mut inflated)
            .map_err(|e| format!("compressed body does not inflate: {e}"))?;
        inflated
    } else {
        message.body.to_vec()
    };
    let records = trace::decode(&body).map_err(|e| e.to_string())?;
    // Older clients write SubAfter without group and time: take them from the
    // SubBefore of the same consume request.
    let before: HashMap<&str, (&str, i64)> = records
        .iter()
        .filter_map(|r| match r {
            TraceRecord::SubBefore(b) => {
                Some((b.request_id.as_str(), (b.group.as_str(), b.timestamp)))
            }
            _ => None,
        })
        .collect();
    let mut rows = Vec::new();
    for record in &records {
        match record {
            TraceRecord::Pub(p) if p.success && p.topic == flow.topic => {
                for key in keys_of(record, key_by_msg_id) {
                    rows.push(TraceRow {
                        side: "pub".to_string(),
                        key,
                        msg_id: p.msg_id.clone(),
                        time_ms: p.timestamp,
                        offset_msg_id: Some(p.offset_msg_id.clone()).filter(|o| !o.is_empty()),
                        store_host: Some(p.store_host.clone()),
                    });
                }
            }
            TraceRecord::SubAfter(a) if a.success => {
                let group = a
                    .group
                    .as_deref()
                    .or_else(|| before.get(a.request_id.as_str()).map(|b| b.0));
                if group != Some(flow.group.as_str()) {
                    continue;
                }
                let time = a
                    .timestamp
                    .or_else(|| before.get(a.request_id.as_str()).map(|b| b.1))
                    .unwrap_or(message.store_timestamp);
                for key in keys_of(record, key_by_msg_id) {
                    rows.push(TraceRow {
                        side: "sub".to_string(),
                        key,
                        msg_id: a.msg_id.clone(),
                        time_ms: time,
                        offset_msg_id: None,
                        store_host: None,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(rows)
}

fn keys_of(record: &TraceRecord, by_msg_id: bool) -> Vec<String> {
    if by_msg_id {
        vec![record.msg_id().to_string()]
    } else {
        record.keys().map(str::to_string).collect()
    }
}
