//! The `rocketmq_trace` source's ingest: read the trace topic
//! (`RMQ_SYS_TRACE_TOPIC` unless the flow names another) from every master
//! with the flow's own cursors — side-effect-free pulls: no consumer group
//! registered, no offset committed — keep the records about the flow, and
//! store them with the advanced cursor in one transaction.
//!
//! * `Pub` for the flow's topic, whatever its send status: a stored message
//!   is produced; `success = false` (not `SEND_OK`) marks it at risk. A batch
//!   `Pub` (comma-separated ids) is one row per message.
//! * `EndTransaction` for the flow's topic: a half message's outcome.
//! * `SubAfter` for the flow's group (its group and time from the record, or
//!   from the `SubBefore` of the same request for older clients), success or
//!   not; only successes count as consumed. Older clients' dispatchers batch
//!   `SubBefore` and `SubAfter` independently: a pair split across trace
//!   messages (or queues, or brokers) meets in the store as two halves.
//!
//! Queues are read round-robin, one pull per queue per round, so no queue
//! starves when the per-run budget runs out; up to `concurrency` pulls are
//! in flight at once, across brokers and queues, so a run waits on the
//! slowest broker once per round rather than on every broker in turn.
//! Rounds' pulls are stored together, one transaction for all their rows
//! and cursors once they hold some thousands of rows (or an error or the
//! end comes): the store has one writer, and a transaction of few large
//! statements is what keeps a starved machine's store up with the pulls.
//!
//! A queue read to its end records when: a window is final only once every
//! trace queue was read past its end plus the deadline (trace is sent
//! asynchronously and arrives late).

use std::collections::HashMap;

use crate::admin::{
    Admin, Cluster, Error, MessageQueue, MessageRecord, PubRecord, PullStatus, SubAfterRecord,
    TraceRecord, decode_trace,
};
use crate::config::FlowConfig;

use super::store::{
    Cursor, HalfKind, Store, SubHalf, TracePull, TraceRow, TraceSide, TraceWritten,
};

/// The topic Java clients trace to by default.
pub const DEFAULT_TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// Group named in the side-effect-free pulls (exists on every broker).
const PULL_GROUP: &str = "TOOLS_CONSUMER";
/// Cursor name in the store.
pub const SOURCE: &str = "trace";
/// Messages per pull.
const PULL_BATCH: i32 = 32;
/// Rows and halves read before they are stored: one transaction, and one
/// sync, for rounds of pulls (a kill loses at most these, read again).
const ROWS_PER_COMMIT: usize = 4096;
/// Largest trace message body read, once inflated (a batch of records).
const MAX_TRACE_BODY: usize = 64 * 1024 * 1024;

/// Why an ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A broker call failed.
    #[error("reading trace topic {topic}: {error}")]
    Broker {
        /// The trace topic.
        topic: String,
        /// The failure.
        error: Error,
    },
    /// A trace message could not be decoded.
    #[error("decoding a {topic} message at {broker} queue {queue} offset {offset}: {detail}")]
    Decode {
        /// The trace topic.
        topic: String,
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

/// What one ingest reads.
#[derive(Debug, Clone, Copy)]
pub struct Ingest<'a> {
    /// The trace topic.
    pub topic: &'a str,
    /// Most messages to read.
    pub budget: usize,
    /// Pulls in flight at once (at least 1).
    pub concurrency: usize,
    /// Where a queue without a cursor starts (store time, epoch ms).
    pub since_ms: i64,
    /// Now, recorded as when a queue was read to its end.
    pub now_ms: i64,
}

/// What one ingest did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ingested {
    /// Trace messages read.
    pub messages: usize,
    /// The least event times of the rows written.
    pub written: TraceWritten,
    /// Where the queues it moved now stand: (broker, queue, next offset).
    pub moved: Vec<(String, i32, i64)>,
    /// Time spent waiting for pulls (decoding included), ms.
    pub pull_ms: u64,
    /// Time spent storing what they read, ms.
    pub store_ms: u64,
    /// The flow's rows among them (produced, consumed, transaction
    /// outcomes).
    pub rows: usize,
    /// Consumption halves whose other half was not in the same message.
    pub halves: usize,
    /// Store transactions it took.
    pub commits: usize,
}

/// One trace queue being read.
struct QueueCursor {
    queue: MessageQueue,
    master: String,
    offset: i64,
    done: bool,
}

/// Ingest new trace messages for `flow` from `trace_topic`, at most `budget`
/// messages; returns how many were read, what rows it wrote and where it
/// left the queues it moved. `now_ms` is recorded as the time a
/// queue was read to its end. A queue without a cursor (a new flow) starts
/// at the first message stored at `since_ms`, not at the topic's beginning
/// (a trace topic holds days of every application's records).
///
/// # Errors
/// Broker, decoding or store failures; what was stored before stays stored.
pub async fn ingest(
    cluster: &Cluster,
    store: &Store,
    flow: &FlowConfig,
    plan: &Ingest<'_>,
) -> Result<Ingested, IngestError> {
    let Ingest {
        topic: trace_topic,
        budget,
        concurrency,
        since_ms,
        now_ms,
    } = *plan;
    let broker_error = |error: Error| IngestError::Broker {
        topic: trace_topic.to_string(),
        error,
    };
    let admin = cluster.admin();
    let route = cluster
        .topic_route(trace_topic)
        .await
        .map_err(broker_error)?;
    let mut queues = Vec::new();
    for data in &route.broker_datas {
        let Some(master) = data.master_addr() else {
            continue;
        };
        let count = route
            .queues_of(&data.broker_name)
            .map_or(0, |q| q.read_queue_nums);
        for queue_id in 0..count {
            let offset = match store
                .cursor(&flow.name, SOURCE, &data.broker_name, queue_id)
                .await?
            {
                Some(offset) => offset,
                None => match admin
                    .offset_at(master, trace_topic, queue_id, since_ms)
                    .await
                {
                    Ok(offset) => offset,
                    // A broker without the time index call: from the start.
                    Err(e) if e.is_answer() => admin
                        .min_offset(master, trace_topic, queue_id)
                        .await
                        .map_err(broker_error)?,
                    Err(e) => return Err(broker_error(e)),
                },
            };
            queues.push(QueueCursor {
                queue: MessageQueue {
                    topic: trace_topic.to_string(),
                    broker_name: data.broker_name.clone(),
                    queue_id,
                },
                master: master.to_string(),
                offset,
                done: false,
            });
        }
    }
    let mut read = 0;
    let mut written = TraceWritten::default();
    let mut moved = std::collections::BTreeMap::new();
    let mut stored = Stored::default();
    let mut pulling = std::time::Duration::ZERO;
    // Pulls read but not yet stored, and how many rows and halves they hold.
    let mut unstored: Vec<Unstored> = Vec::new();
    let mut unstored_rows = 0;
    // Round-robin: one pull per queue per round, `concurrency` at a time.
    // Each pull's batch is fixed before it starts, so the budget holds
    // exactly however the pulls interleave. The pulls run concurrently; what
    // they read is stored together, rounds at a time, in one transaction
    // with their cursors (a single writer: concurrent SQLite writers would
    // wait on each other; and on a starved machine each statement's trip
    // to the database thread waits for a core, so fewer, larger
    // transactions are what make the store keep up).
    while read < budget && queues.iter().any(|q| !q.done) {
        let mut open: Vec<&mut QueueCursor> = queues.iter_mut().filter(|q| !q.done).collect();
        while !open.is_empty() && read < budget {
            let take = open.len().min(concurrency.max(1));
            let mut left = budget - read;
            let mut batches = Vec::with_capacity(take);
            for cursor in open.drain(..take) {
                if left == 0 {
                    break;
                }
                let batch = PULL_BATCH.min(i32::try_from(left).unwrap_or(PULL_BATCH));
                left -= usize::try_from(batch).unwrap_or(0);
                batches.push((cursor, batch));
            }
            let pull_started = std::time::Instant::now();
            let fetched = futures_util::future::join_all(
                batches
                    .iter()
                    .map(|(cursor, batch)| fetch(admin, flow, cursor, *batch, now_ms)),
            )
            .await;
            pulling += pull_started.elapsed();
            // Every pull that succeeded is stored before the first error,
            // if any, is returned.
            let mut first_error = None;
            for ((cursor, _), result) in batches.into_iter().zip(fetched) {
                match result {
                    Ok(f) => {
                        cursor.offset = f.next_offset;
                        cursor.done = f.done;
                        read += f.messages;
                        unstored_rows += f.rows.len() + f.halves.len();
                        unstored.push(Unstored {
                            broker: cursor.queue.broker_name.clone(),
                            queue_id: cursor.queue.queue_id,
                            fetched: f,
                        });
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if first_error.is_some() || unstored_rows >= ROWS_PER_COMMIT {
                written.merge(stored.store(store, flow, &mut unstored, &mut moved).await?);
                unstored_rows = 0;
            }
            if let Some(e) = first_error {
                return Err(match e {
                    PullError::Broker(error) => broker_error(error),
                    PullError::Other(e) => e,
                });
            }
        }
    }
    written.merge(stored.store(store, flow, &mut unstored, &mut moved).await?);
    // A half still alone once every queue was read past its window's
    // deadline will not meet its other half.
    if let Some(read_to) = store.caught_up(&flow.name, SOURCE).await? {
        let horizon = flow.window + flow.deadline + flow.clock_skew;
        let horizon_ms = i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX);
        store
            .forget_halves(&flow.name, read_to.saturating_sub(horizon_ms))
            .await?;
    }
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Ok(Ingested {
        messages: read,
        written,
        pull_ms: ms(pulling),
        store_ms: ms(stored.took),
        rows: stored.rows,
        halves: stored.halves,
        commits: stored.commits,
        moved: moved
            .into_iter()
            .map(|((broker, queue), offset)| (broker, queue, offset))
            .collect(),
    })
}

enum PullError {
    Broker(Error),
    Other(IngestError),
}

/// A pull read and decoded, waiting to be stored.
struct Unstored {
    broker: String,
    queue_id: i32,
    fetched: Fetched,
}

/// What an ingest stored so far.
#[derive(Default)]
struct Stored {
    rows: usize,
    halves: usize,
    commits: usize,
    took: std::time::Duration,
}

impl Stored {
    /// Store `pulls` (emptied) in one transaction with their cursors, and
    /// note where their queues now stand in `moved`.
    async fn store(
        &mut self,
        store: &Store,
        flow: &FlowConfig,
        pulls: &mut Vec<Unstored>,
        moved: &mut std::collections::BTreeMap<(String, i32), i64>,
    ) -> Result<TraceWritten, IngestError> {
        if pulls.is_empty() {
            return Ok(TraceWritten::default());
        }
        let started = std::time::Instant::now();
        let batch: Vec<TracePull<'_>> = pulls
            .iter()
            .map(|p| TracePull {
                cursor: Cursor {
                    flow: &flow.name,
                    source: SOURCE,
                    broker: &p.broker,
                    queue_id: p.queue_id,
                },
                rows: &p.fetched.rows,
                halves: &p.fetched.halves,
                next_offset: p.fetched.next_offset,
                caught_up_ms: p.fetched.caught_up_ms,
            })
            .collect();
        let written = store.ingest_trace_pulls(&batch).await?;
        self.took += started.elapsed();
        self.commits += 1;
        for p in pulls.drain(..) {
            self.rows += p.fetched.rows.len();
            self.halves += p.fetched.halves.len();
            // In reading order: a queue's later pull stands.
            moved.insert((p.broker, p.queue_id), p.fetched.next_offset);
        }
        Ok(written)
    }
}

/// What one pull of one queue read, decoded, and where its cursor goes.
struct Fetched {
    rows: Vec<TraceRow>,
    halves: Vec<SubHalf>,
    messages: usize,
    next_offset: i64,
    caught_up_ms: Option<i64>,
    done: bool,
}

/// One pull of one queue, decoded into the flow's rows; stores nothing.
async fn fetch(
    admin: &Admin,
    flow: &FlowConfig,
    cursor: &QueueCursor,
    batch: i32,
    now_ms: i64,
) -> Result<Fetched, PullError> {
    let pull = admin
        .pull(
            &cursor.master,
            PULL_GROUP,
            &cursor.queue,
            cursor.offset,
            batch,
        )
        .await
        .map_err(PullError::Broker)?;
    let broker = &cursor.queue.broker_name;
    let queue_id = cursor.queue.queue_id;
    let nothing = |next_offset: i64, caught_up_ms: Option<i64>, done: bool| Fetched {
        rows: Vec::new(),
        halves: Vec::new(),
        messages: 0,
        next_offset,
        caught_up_ms,
        done,
    };
    match pull.status {
        PullStatus::Found => {
            let mut rows = Vec::new();
            let mut halves = Vec::new();
            for message in &pull.messages {
                let (found, split) = rows_of(message, flow).map_err(|detail| {
                    PullError::Other(IngestError::Decode {
                        topic: cursor.queue.topic.clone(),
                        broker: broker.clone(),
                        queue: queue_id,
                        offset: message.queue_offset,
                        detail,
                    })
                })?;
                rows.extend(found);
                halves.extend(split);
            }
            let next = pull
                .messages
                .last()
                .map_or(pull.next_begin_offset, |m| m.queue_offset + 1);
            // At the end after this batch: everything stored until now is read.
            let caught_up = (next >= pull.max_offset).then_some(now_ms);
            Ok(Fetched {
                rows,
                halves,
                messages: pull.messages.len(),
                next_offset: next,
                caught_up_ms: caught_up,
                done: caught_up.is_some(),
            })
        }
        // Messages below the min offset were deleted: skip ahead.
        PullStatus::OffsetIllegal if pull.next_begin_offset > cursor.offset => {
            Ok(nothing(pull.next_begin_offset, None, false))
        }
        _ => {
            // Nothing here: a gap the broker skips (nextBeginOffset moves
            // past it), or the end of the queue, read to its end now.
            let next = pull.next_begin_offset.max(cursor.offset);
            let at_end = next >= pull.max_offset;
            Ok(nothing(
                next,
                at_end.then_some(now_ms),
                at_end || next == cursor.offset,
            ))
        }
    }
}

/// `null` is how Java writes an absent tag or key list.
fn present(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text != "null").then(|| text.to_string())
}

fn keys_text(record: &TraceRecord) -> String {
    record.keys().collect::<Vec<_>>().join(" ")
}

/// The flow's rows in one trace message, and the halves of consumptions
/// whose other half is not in it.
fn rows_of(
    message: &MessageRecord,
    flow: &FlowConfig,
) -> Result<(Vec<TraceRow>, Vec<SubHalf>), String> {
    let body = message
        .uncompressed_body(MAX_TRACE_BODY)
        .map_err(|e| e.to_string())?;
    let records = decode_trace(&body).map_err(|e| e.to_string())?;
    // Older clients write SubAfter without group and time; SubBefore has
    // them, and the delivery attempt.
    let before: HashMap<&str, SubBefore<'_>> = records
        .iter()
        .filter_map(|r| match r {
            TraceRecord::SubBefore(b) => Some((
                b.request_id.as_str(),
                SubBefore {
                    group: &b.group,
                    time_ms: b.timestamp,
                    retry_times: b.retry_times,
                },
            )),
            _ => None,
        })
        .collect();
    let mut rows = Vec::new();
    let mut halves = Vec::new();
    let mut paired = std::collections::HashSet::new();
    for record in &records {
        match record {
            TraceRecord::Pub(p) if p.topic == flow.topic => rows.extend(pub_rows(record, p)),
            TraceRecord::EndTransaction(t) if t.topic == flow.topic => rows.push(TraceRow {
                side: TraceSide::Tx,
                msg_id: t.msg_id.clone(),
                keys: keys_text(record),
                time_ms: t.timestamp,
                offset_msg_id: None,
                store_host: present(&t.store_host),
                tags: present(&t.tags),
                success: true,
                msg_type: t.msg_type,
                reconsume: 0,
                tx_state: Some(t.transaction_state.clone()),
                batch: false,
            }),
            TraceRecord::SubAfter(a) => {
                let earlier = before.get(a.request_id.as_str());
                if earlier.is_some() {
                    paired.insert((a.request_id.as_str(), a.msg_id.as_str()));
                }
                let group = a.group.as_deref().or(earlier.map(|b| b.group));
                if group == Some(flow.group.as_str()) {
                    rows.push(sub_row(record, a, earlier, message.store_timestamp));
                } else if group.is_none() {
                    // Whose it is, only its SubBefore elsewhere can say.
                    halves.push(SubHalf {
                        kind: HalfKind::After,
                        request_id: a.request_id.clone(),
                        msg_id: a.msg_id.clone(),
                        time_ms: message.store_timestamp,
                        retry_times: 0,
                        keys: keys_text(record),
                        success: a.success,
                    });
                }
            }
            _ => {}
        }
    }
    // The group's SubBefore records whose SubAfter is not in this message.
    for record in &records {
        if let TraceRecord::SubBefore(b) = record
            && b.group == flow.group
            && !paired.contains(&(b.request_id.as_str(), b.msg_id.as_str()))
        {
            halves.push(SubHalf {
                kind: HalfKind::Before,
                request_id: b.request_id.clone(),
                msg_id: b.msg_id.clone(),
                time_ms: b.timestamp,
                retry_times: b.retry_times,
                keys: keys_text(record),
                success: false,
            });
        }
    }
    Ok((rows, halves))
}

/// What a `SubBefore` says of the same delivery.
struct SubBefore<'a> {
    group: &'a str,
    time_ms: i64,
    retry_times: i32,
}

/// One row per message of a `Pub`: a batch is one record with
/// comma-separated ids and offset ids (and no per-message keys or tags).
fn pub_rows(record: &TraceRecord, p: &PubRecord) -> Vec<TraceRow> {
    let ids: Vec<&str> = p.msg_id.split(',').filter(|s| !s.is_empty()).collect();
    let offsets: Vec<&str> = p.offset_msg_id.split(',').collect();
    let batch = ids.len() > 1;
    ids.iter()
        .enumerate()
        .map(|(i, id)| TraceRow {
            side: TraceSide::Pub,
            msg_id: id.to_string(),
            keys: if batch {
                String::new()
            } else {
                keys_text(record)
            },
            time_ms: p.timestamp,
            offset_msg_id: offsets.get(i).and_then(|o| present(o)),
            store_host: present(&p.store_host),
            tags: if batch { None } else { present(&p.tags) },
            success: p.success,
            msg_type: p.msg_type,
            reconsume: 0,
            tx_state: None,
            batch,
        })
        .collect()
}

/// A consumption: its time from the record, its `SubBefore`, or the trace
/// message's store time for the oldest clients.
fn sub_row(
    record: &TraceRecord,
    a: &SubAfterRecord,
    earlier: Option<&SubBefore<'_>>,
    stored_ms: i64,
) -> TraceRow {
    TraceRow {
        side: TraceSide::Sub,
        msg_id: a.msg_id.clone(),
        keys: keys_text(record),
        time_ms: a
            .timestamp
            .or(earlier.map(|b| b.time_ms))
            .unwrap_or(stored_ms),
        offset_msg_id: None,
        store_host: None,
        tags: None,
        success: a.success,
        msg_type: 0,
        reconsume: earlier.map_or(0, |b| b.retry_times),
        tx_state: None,
        batch: false,
    }
}
