//! Diagnosis of a missing message against the brokers, within a per-run
//! budget of broker calls (design sections 1 and 6).
//!
//! 1. Find its stored copy on the flow's topic: by its broker message id
//!    (VIEW_MESSAGE_BY_ID at the commit-log offset — exact), else by client
//!    id (QUERY_MESSAGE by unique key), else by key. Every broker is asked
//!    at its master, or at a slave when the master is down or gone from the
//!    route, so a dead master does not make the audit blind.
//! 2. Found: the subscription decides first (a message the group does not
//!    select is `not_subscribed`); then the group's committed offset on its
//!    queue: not past it → `late`; past it → `%DLQ%group` (`dead_letter`),
//!    `%RETRY%group` or a delayed copy bound for it (`retrying`), else
//!    `consume` (ledger flows) or
//!    `unconfirmed` (trace flows: no consumer record and no ledger to say
//!    whether the trace or the message was lost).
//! 3. Not found on the topic: a delay or timer message still held for later
//!    delivery is `scheduled`; a transaction half message is `transaction`
//!    (still waiting for a commit, or discarded after the broker's check
//!    limit); else an acknowledged send is `expired` (its commit-log offset
//!    is below the broker's min) or `store`, and an unacknowledged one `send`.
//!
//! When the budget runs out, or a call fails on every replica, the message
//! is `undiagnosed` and tried again next run.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::model::{MessageKind, Produced, Stage, TxState};
use super::subscription::Subscription;
use crate::admin::{Cluster, Error, MessageRecord};

/// 4.x and 5.x delay-level messages wait here.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// 5.x timer messages wait here.
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
/// Transaction half messages wait here.
pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Half messages discarded after the broker's check limit go here.
pub const DISCARD_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// The broker's resolutions of half messages (tag `d`, body their offsets).
pub const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Pulls of the op topic one diagnosis may spend.
const OP_PULLS: usize = 8;
/// Group named in the side-effect-free pulls (exists on every broker).
const PULL_GROUP: &str = "TOOLS_CONSUMER";

/// What the brokers say about a missing message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Still missing, at this stage.
    Missing {
        /// Where it is.
        stage: Stage,
        /// Still on its way (scheduled, or a half message the broker is still
        /// checking): not lost at the deadline.
        waiting: bool,
    },
    /// The group's subscription does not select it: not the group's to consume.
    NotSubscribed,
    /// A transaction half message the broker resolved (its op record
    /// exists) and that is not on the topic: rolled back, never produced —
    /// whether or not the producer's `EndTransaction` trace arrived.
    RolledBack,
    /// Acknowledged and gone from a compacted topic (5.x `cleanup.policy =
    /// COMPACTION`, which keeps only the latest message per key): dropped by
    /// design, not lost.
    Compacted,
}

/// A verdict and the broker evidence for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    /// The verdict.
    pub verdict: Verdict,
    /// What the brokers said.
    pub evidence: Value,
    /// The id and keys it was stored under, when they differ from what the
    /// producer reported (a 5.x batch member).
    pub alias: Option<(String, Vec<String>)>,
}

impl Diagnosis {
    fn missing(stage: Stage, evidence: Value) -> Diagnosis {
        Diagnosis {
            verdict: Verdict::Missing {
                stage,
                waiting: false,
            },
            evidence,
            alias: None,
        }
    }

    fn waiting(stage: Stage, evidence: Value) -> Diagnosis {
        Diagnosis {
            verdict: Verdict::Missing {
                stage,
                waiting: true,
            },
            evidence,
            alias: None,
        }
    }
}

/// A broker group: its name and addresses, master first.
#[derive(Debug, Clone)]
struct Replicas {
    name: String,
    /// Master (when in the route) then slaves.
    addrs: Vec<String>,
}

/// Why a diagnosis stopped.
enum Stop {
    Budget,
    Failed(String),
}

/// What the flow's consumer side can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerEvidence {
    /// The application's own consume log: a gap is a `consume` loss.
    Ledger,
    /// Consumer trace records: a gap may be a lost trace record.
    Trace,
}

/// Diagnoses missing messages of one flow during one run.
pub struct Diagnoser<'a> {
    cluster: &'a Cluster,
    topic: String,
    group: String,
    subscription: Option<Subscription>,
    consumer: ConsumerEvidence,
    budget: usize,
    /// topic → its broker groups; `None` when the topic has no route.
    routes: HashMap<String, Option<Vec<Replicas>>>,
    /// broker → `messageDelayLevel` in ms.
    delay_levels: HashMap<String, Vec<i64>>,
    /// The flow topic's `cleanup.policy`, once asked.
    cleanup_policy: Option<String>,
}

impl<'a> Diagnoser<'a> {
    /// A diagnoser spending at most `budget` broker calls.
    pub fn new(
        cluster: &'a Cluster,
        topic: &str,
        group: &str,
        subscription: Option<Subscription>,
        consumer: ConsumerEvidence,
        budget: usize,
    ) -> Diagnoser<'a> {
        Diagnoser {
            cluster,
            topic: topic.to_string(),
            group: group.to_string(),
            subscription,
            consumer,
            budget,
            routes: HashMap::new(),
            delay_levels: HashMap::new(),
            cleanup_policy: None,
        }
    }

    /// Calls left.
    pub fn budget(&self) -> usize {
        self.budget
    }

    fn spend(&mut self) -> Result<(), Stop> {
        if self.budget == 0 {
            return Err(Stop::Budget);
        }
        self.budget -= 1;
        Ok(())
    }

    async fn replicas(&mut self, topic: &str) -> Result<Option<Vec<Replicas>>, Stop> {
        if let Some(cached) = self.routes.get(topic) {
            return Ok(cached.clone());
        }
        self.spend()?;
        match self.cluster.topic_route(topic).await {
            Ok(route) => {
                let groups: Vec<Replicas> = route
                    .broker_datas
                    .iter()
                    .map(|b| Replicas {
                        name: b.broker_name.clone(),
                        addrs: b
                            .master_addr()
                            .into_iter()
                            .chain(b.slaves().map(|(_, a)| a))
                            .map(str::to_string)
                            .collect(),
                    })
                    .filter(|r| !r.addrs.is_empty())
                    .collect();
                self.routes.insert(topic.to_string(), Some(groups.clone()));
                Ok(Some(groups))
            }
            Err(e) if e.is_topic_missing() => {
                self.routes.insert(topic.to_string(), None);
                Ok(None)
            }
            Err(e) => Err(Stop::Failed(format!("route of {topic}: {e}"))),
        }
    }

    /// Ask each replica in turn until one answers; unreachable ones are skipped.
    async fn ask<T, F, Fut>(&mut self, replicas: &Replicas, what: &str, call: F) -> Result<T, Stop>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut last = String::new();
        for addr in &replicas.addrs {
            self.spend()?;
            match call(addr.clone()).await {
                Ok(value) => return Ok(value),
                Err(e) if matches!(e.kind(), "io" | "timeout") => {
                    last = format!("{what} on {} ({addr}): {e}", replicas.name);
                }
                Err(e) => return Err(Stop::Failed(format!("{what} on {}: {e}", replicas.name))),
            }
        }
        Err(Stop::Failed(last))
    }

    /// Look a message up on `topic` by client id or key, on the brokers of
    /// that topic's route: (broker, record).
    async fn find_on(
        &mut self,
        topic: &str,
        id: Option<&str>,
        keys: &[String],
        around_ms: i64,
        now_ms: i64,
    ) -> Result<Option<(String, MessageRecord)>, Stop> {
        let Some(groups) = self.replicas(topic).await? else {
            return Ok(None);
        };
        let span = search_span(around_ms, now_ms);
        self.find_among(&groups, topic, id, keys, span, &|_| true)
            .await
    }

    /// Look a message up on a broker-internal topic (delay, timer and
    /// transaction bookkeeping): on the brokers of the flow's topic, which
    /// hold those copies, whatever the name server says about the topic.
    async fn find_held(
        &mut self,
        held: &str,
        message: &Produced,
        now_ms: i64,
    ) -> Result<Option<(String, MessageRecord)>, Stop> {
        self.find_held_where(held, message, now_ms, &|_| true).await
    }

    /// [`Self::find_held`], taking only a copy `accept` approves (another
    /// group's retry copy shares the message's id and keys).
    async fn find_held_where(
        &mut self,
        held: &str,
        message: &Produced,
        now_ms: i64,
        accept: &(dyn Fn(&MessageRecord) -> bool + Sync),
    ) -> Result<Option<(String, MessageRecord)>, Stop> {
        let flow_topic = self.topic.clone();
        let groups = self.replicas(&flow_topic).await?.unwrap_or_default();
        let id = message.msg_id.as_deref().filter(|_| !message.batch);
        let span = search_span(message.time_ms, now_ms);
        self.find_among(&groups, held, id, &message.keys, span, accept)
            .await
    }

    async fn find_among(
        &mut self,
        groups: &[Replicas],
        topic: &str,
        id: Option<&str>,
        keys: &[String],
        (begin, end): (i64, i64),
        accept: &(dyn Fn(&MessageRecord) -> bool + Sync),
    ) -> Result<Option<(String, MessageRecord)>, Stop> {
        for group in groups {
            let admin = self.cluster.admin();
            let found = match (id, keys.first()) {
                (Some(id), _) => {
                    let (topic, id) = (topic.to_string(), id.to_string());
                    self.ask(group, "QUERY_MESSAGE by id", |addr| {
                        let (topic, id) = (topic.clone(), id.clone());
                        async move {
                            admin
                                .query_message_by_unique_key(&addr, &topic, &id, begin, end)
                                .await
                        }
                    })
                    .await?
                }
                (None, Some(key)) => {
                    let (topic, key) = (topic.to_string(), key.clone());
                    self.ask(group, "QUERY_MESSAGE by key", |addr| {
                        let (topic, key) = (topic.clone(), key.clone());
                        async move {
                            admin
                                .query_message_by_key(&addr, &topic, &key, begin, end)
                                .await
                        }
                    })
                    .await?
                }
                (None, None) => return Ok(None),
            };
            if let Some(record) = found.into_iter().find(|r| accept(r)) {
                return Ok(Some((group.name.clone(), record)));
            }
        }
        Ok(None)
    }

    /// When a held delay or timer copy is due: the timer's own deadline, or
    /// the store time plus the broker's delay for its level.
    async fn due_ms(&mut self, broker: &str, record: &MessageRecord) -> Result<Option<i64>, Stop> {
        if let Some(at) = record
            .properties
            .get("TIMER_OUT_MS")
            .or_else(|| record.properties.get("TIMER_DELIVER_MS"))
            .and_then(|v| v.parse::<i64>().ok())
        {
            return Ok(Some(at));
        }
        let Some(level) = record
            .properties
            .get("DELAY")
            .and_then(|v| v.parse::<usize>().ok())
        else {
            return Ok(None);
        };
        let levels = match self.delay_levels.get(broker) {
            Some(levels) => levels.clone(),
            None => {
                let topic = self.topic.clone();
                let groups = self.replicas(&topic).await?.unwrap_or_default();
                let Some(replicas) = groups.into_iter().find(|g| g.name == broker) else {
                    return Ok(None);
                };
                let admin = self.cluster.admin();
                let config = self
                    .ask(&replicas, "GET_BROKER_CONFIG", |addr| async move {
                        admin.broker_config(&addr).await
                    })
                    .await?;
                let levels = config
                    .get("messageDelayLevel")
                    .map(parse_delay_levels)
                    .unwrap_or_default();
                self.delay_levels.insert(broker.to_string(), levels.clone());
                levels
            }
        };
        Ok(level
            .checked_sub(1)
            .and_then(|i| levels.get(i))
            .map(|delay| record.store_timestamp + delay))
    }

    /// The record at a broker message id, from the broker that stored it
    /// (its master, or a slave: same commit-log offsets).
    async fn view(&mut self, offset_msg_id: &str) -> Result<Option<(String, MessageRecord)>, Stop> {
        let Some((host, offset)) = decode_offset_msg_id(offset_msg_id) else {
            return Ok(None);
        };
        let topic = self.topic.clone();
        let groups = self.replicas(&topic).await?.unwrap_or_default();
        // The host in the id is the master that stored it; if it is gone
        // from the route, any group whose replicas include it, else try it.
        let replicas = groups
            .into_iter()
            .find(|g| g.addrs.contains(&host))
            .unwrap_or(Replicas {
                name: host.clone(),
                addrs: vec![host.clone()],
            });
        let admin = self.cluster.admin();
        let mut last = String::new();
        for addr in &replicas.addrs {
            self.spend()?;
            match admin.view_message(addr, offset).await {
                Ok(record) => return Ok(Some((replicas.name.clone(), record))),
                Err(e) if matches!(e.kind(), "io" | "timeout") => {
                    last = format!("VIEW_MESSAGE_BY_ID on {addr}: {e}");
                }
                // Not at that offset (deleted, truncated, or never written).
                Err(e) if matches!(e.kind(), "remote" | "protocol") => return Ok(None),
                Err(e) => last = e.to_string(),
            }
        }
        // Its broker is unreachable (a dead master the name server has
        // dropped, so its slaves are not known by this address): no
        // evidence either way; the lookups by id and key ask the replicas.
        tracing::debug!(message = "Stored copy not viewable; looking it up instead.", offset_msg_id, %last);
        Ok(None)
    }

    /// Diagnose one missing message. `failed_attempts` counts deliveries the
    /// consumer reported failed (trace `SubAfter` with success = false).
    pub async fn diagnose(
        &mut self,
        message: &Produced,
        failed_attempts: u32,
        now_ms: i64,
    ) -> Diagnosis {
        match self.try_diagnose(message, failed_attempts, now_ms).await {
            Ok(diagnosis) => diagnosis,
            Err(Stop::Budget) => Diagnosis::missing(
                Stage::Undiagnosed,
                json!({"reason": "diagnosis budget exhausted"}),
            ),
            Err(Stop::Failed(reason)) => {
                Diagnosis::missing(Stage::Undiagnosed, json!({"reason": reason}))
            }
        }
    }

    async fn try_diagnose(
        &mut self,
        message: &Produced,
        failed_attempts: u32,
        now_ms: i64,
    ) -> Result<Diagnosis, Stop> {
        let topic = self.topic.clone();
        let mut alias = None;
        // 1. The stored copy: at its broker message id (exact), which for a
        // delay, timer or transactional message is the copy the broker holds
        // until delivery or commit; then on the topic by id or key.
        let mut found = None;
        let mut held = None;
        if let Some(offset_id) = message.offset_msg_id.as_deref()
            && let Some((broker, record)) = self.view(offset_id).await?
        {
            if record.topic == topic {
                if message.batch
                    && let Some(stored) = record.uniq_key()
                    && Some(stored) != message.msg_id.as_deref()
                {
                    alias = Some((
                        stored.to_string(),
                        record.keys().map(str::to_string).collect(),
                    ));
                }
                found = Some((broker, record));
            } else if [SCHEDULE_TOPIC, TIMER_TOPIC, HALF_TOPIC].contains(&record.topic.as_str()) {
                held = Some((broker, record));
            }
        }
        if found.is_none() {
            let id = message.msg_id.as_deref().filter(|_| !message.batch);
            found = self
                .find_on(&topic, id, &message.keys, message.time_ms, now_ms)
                .await?;
        }
        let mut diagnosis = match found {
            Some((broker, record)) => {
                self.on_topic(message, &broker, &record, failed_attempts, now_ms)
                    .await?
            }
            None => self.not_on_topic(message, held, now_ms).await?,
        };
        diagnosis.alias = alias;
        Ok(diagnosis)
    }

    async fn on_topic(
        &mut self,
        message: &Produced,
        broker: &str,
        record: &MessageRecord,
        failed_attempts: u32,
        now_ms: i64,
    ) -> Result<Diagnosis, Stop> {
        let tag = record.properties.get("TAGS").map(String::as_str);
        let mut evidence = json!({
            "broker": broker,
            "queue_id": record.queue_id,
            "queue_offset": record.queue_offset,
            "store_timestamp_ms": record.store_timestamp,
            "msg_id": record.uniq_key(),
            "tags": tag,
        });
        if let Some(subscription) = &self.subscription {
            let user: BTreeMap<String, String> = record.properties.clone();
            if subscription.selects(tag, Some(&user)) == Some(false) {
                evidence["subscription"] = json!(subscription.to_string());
                return Ok(Diagnosis {
                    verdict: Verdict::NotSubscribed,
                    evidence,
                    alias: None,
                });
            }
        }
        let committed = self.committed_offset(broker, record.queue_id).await?;
        evidence["group_offset"] = json!(committed);
        let reached = committed.is_some_and(|c| c > record.queue_offset);
        if !reached && failed_attempts > 0 {
            // The consumer had it and failed: it is retrying, locally (a
            // failed send-back, e.g. to a SYNC_MASTER without a slave, keeps
            // it in the consumer and holds the queue) or through %RETRY%.
            evidence["failed_deliveries"] = json!(failed_attempts);
            return Ok(Diagnosis::missing(Stage::Retrying, evidence));
        }
        if let Some((stage, copy)) = self.copy_of(message, record, reached, now_ms).await? {
            evidence["copy"] = copy;
            return Ok(Diagnosis::missing(stage, evidence));
        }
        if !reached {
            return Ok(Diagnosis::missing(Stage::Late, evidence));
        }
        Ok(Diagnosis::missing(
            match self.consumer {
                ConsumerEvidence::Ledger => Stage::Consume,
                ConsumerEvidence::Trace => Stage::Unconfirmed,
            },
            evidence,
        ))
    }

    /// The group's committed offset on a queue of the flow's topic.
    async fn committed_offset(&mut self, broker: &str, queue_id: i32) -> Result<Option<i64>, Stop> {
        let topic = self.topic.clone();
        let groups = self.replicas(&topic).await?.unwrap_or_default();
        let replicas = groups
            .into_iter()
            .find(|g| g.name == broker)
            .ok_or_else(|| Stop::Failed(format!("{broker} is not in the route of {topic}")))?;
        let admin = self.cluster.admin();
        let group = self.group.clone();
        self.ask(&replicas, "QUERY_CONSUMER_OFFSET", |addr| {
            let (group, topic) = (group.clone(), topic.clone());
            async move { admin.consumer_offset(&addr, &group, &topic, queue_id).await }
        })
        .await
    }

    /// The message's copy in the group's DLQ (when the group reached it: a
    /// consumer that gave up sent it there) or `%RETRY%` topic (a consumer
    /// still retrying holds a copy there; the original stays): the stage it
    /// proves, and the copy as evidence.
    async fn copy_of(
        &mut self,
        message: &Produced,
        record: &MessageRecord,
        reached: bool,
        now_ms: i64,
    ) -> Result<Option<(Stage, Value)>, Stop> {
        let stored_id = record.uniq_key().map(str::to_string);
        let keys: Vec<String> = record.keys().map(str::to_string).collect();
        let near = record.store_timestamp.max(message.time_ms);
        let copies: &[(&str, Stage)] = if reached {
            &[("%DLQ%", Stage::DeadLetter), ("%RETRY%", Stage::Retrying)]
        } else {
            &[("%RETRY%", Stage::Retrying)]
        };
        for &(prefix, stage) in copies {
            let copy_topic = format!("{prefix}{}", self.group);
            if let Some((copy_broker, copy)) = self
                .find_on(&copy_topic, stored_id.as_deref(), &keys, near, now_ms)
                .await?
            {
                return Ok(Some((
                    stage,
                    copy_evidence(&copy_topic, &copy_broker, &copy),
                )));
            }
        }
        if reached {
            // Between attempts a retry copy waits out its delay in the
            // delay-level (or 5.x timer) topic, bound for `%RETRY%group`:
            // neither in the retry topic nor in the DLQ yet, and no loss.
            let retry_topic = format!("%RETRY%{}", self.group);
            let bound_for_retry =
                |r: &MessageRecord| r.properties.get("REAL_TOPIC") == Some(&retry_topic);
            for held in [SCHEDULE_TOPIC, TIMER_TOPIC] {
                if let Some((broker, copy)) = self
                    .find_held_where(held, message, now_ms, &bound_for_retry)
                    .await?
                {
                    let evidence = json!({
                        "topic": held,
                        "bound_for": retry_topic,
                        "broker": broker,
                        "store_timestamp_ms": copy.store_timestamp,
                        "reconsume_times": copy.reconsume_times,
                    });
                    return Ok(Some((Stage::Retrying, evidence)));
                }
            }
        }
        Ok(None)
    }

    /// The message's copy in the group's DLQ, as evidence: one lookup
    /// (QUERY_MESSAGE on `%DLQ%group`), for re-checking a loss the consumer
    /// may have dead-lettered since. `None` when there is none, or when the
    /// lookup could not be made (budget, every replica failed): the earlier
    /// verdict stands.
    pub async fn dead_letter_copy(&mut self, message: &Produced, now_ms: i64) -> Option<Value> {
        let dlq = format!("%DLQ%{}", self.group);
        let id = message.msg_id.as_deref().filter(|_| !message.batch);
        match self
            .find_on(&dlq, id, &message.keys, message.time_ms, now_ms)
            .await
        {
            Ok(Some((broker, copy))) => Some(copy_evidence(&dlq, &broker, &copy)),
            Ok(None) | Err(_) => None,
        }
    }

    async fn not_on_topic(
        &mut self,
        message: &Produced,
        held: Option<(String, MessageRecord)>,
        now_ms: i64,
    ) -> Result<Diagnosis, Stop> {
        let held_in = held.as_ref().map(|(_, r)| r.topic.clone());
        let delayed = message.kind == MessageKind::Delay
            || matches!(held_in.as_deref(), Some(SCHEDULE_TOPIC | TIMER_TOPIC));
        if delayed && let Some(diagnosis) = self.scheduled(message, held.clone(), now_ms).await? {
            return Ok(diagnosis);
        }
        let unresolved = (message.kind == MessageKind::Transaction
            && message.transaction != Some(TxState::Commit))
            || held_in.as_deref() == Some(HALF_TOPIC);
        if unresolved && let Some(diagnosis) = self.half_message(message, held, now_ms).await? {
            return Ok(diagnosis);
        }
        if !message.status.acknowledged() {
            return Ok(Diagnosis::missing(
                Stage::Send,
                json!({"found": false, "acknowledged": false, "send_status": message.status.as_str()}),
            ));
        }
        self.gone(message).await
    }

    /// Held for later delivery and not due yet: `scheduled` (a copy long
    /// past due that never reached the topic was lost on the way: none).
    async fn scheduled(
        &mut self,
        message: &Produced,
        held: Option<(String, MessageRecord)>,
        now_ms: i64,
    ) -> Result<Option<Diagnosis>, Stop> {
        let mut copy = held.filter(|(_, r)| r.topic != HALF_TOPIC);
        for topic in [SCHEDULE_TOPIC, TIMER_TOPIC] {
            if copy.is_none() {
                copy = self.find_held(topic, message, now_ms).await?;
            }
        }
        let Some((broker, record)) = copy else {
            return Ok(None);
        };
        let due = self.due_ms(&broker, &record).await?;
        let evidence = json!({"held_in": record.topic, "broker": broker, "store_timestamp_ms": record.store_timestamp, "due_ms": due});
        Ok(due
            .is_none_or(|due| now_ms < due + 60_000)
            .then(|| Diagnosis::waiting(Stage::Scheduled, evidence)))
    }

    /// An unresolved transaction: discarded after the broker's check limit
    /// (lost), or still a half message the broker checks (waiting).
    async fn half_message(
        &mut self,
        message: &Produced,
        held: Option<(String, MessageRecord)>,
        now_ms: i64,
    ) -> Result<Option<Diagnosis>, Stop> {
        let state = message.transaction.map(TxState::as_str);
        if let Some((broker, record)) = self.find_held(DISCARD_TOPIC, message, now_ms).await? {
            return Ok(Some(Diagnosis::missing(
                Stage::Transaction,
                json!({"discarded": true, "topic": DISCARD_TOPIC, "broker": broker, "store_timestamp_ms": record.store_timestamp, "state": state}),
            )));
        }
        let half = match held.filter(|(_, r)| r.topic == HALF_TOPIC) {
            Some(half) => Some(half),
            None => self.find_held(HALF_TOPIC, message, now_ms).await?,
        };
        let Some((broker, record)) = half else {
            return Ok(None);
        };
        if self.half_resolved(&broker, &record).await? {
            return Ok(Some(Diagnosis {
                verdict: Verdict::RolledBack,
                evidence: json!({"topic": HALF_TOPIC, "broker": broker, "resolved_in": OP_TOPIC, "queue_offset": record.queue_offset}),
                alias: None,
            }));
        }
        Ok(Some(Diagnosis::waiting(
            Stage::Transaction,
            json!({"discarded": false, "topic": HALF_TOPIC, "broker": broker, "store_timestamp_ms": record.store_timestamp, "state": state}),
        )))
    }

    /// Whether the broker resolved a half message (commit or rollback): its
    /// queue offset is in an op record (`RMQ_SYS_TRANS_OP_HALF_TOPIC`, tag
    /// `d`, body its offset — several, comma-separated, in 5.x) stored after
    /// it. At most [`OP_PULLS`] pulls; not found in them is "not resolved".
    async fn half_resolved(&mut self, broker: &str, record: &MessageRecord) -> Result<bool, Stop> {
        let topic = self.topic.clone();
        let groups = self.replicas(&topic).await?.unwrap_or_default();
        let Some(replicas) = groups.into_iter().find(|g| g.name == broker) else {
            return Ok(false);
        };
        let queue = crate::admin::MessageQueue {
            topic: OP_TOPIC.to_string(),
            broker_name: broker.to_string(),
            queue_id: 0,
        };
        let wanted = record.queue_offset.to_string();
        let mut last = String::new();
        for addr in &replicas.addrs {
            self.spend()?;
            let admin = self.cluster.admin();
            let mut offset = match admin
                .offset_at(addr, OP_TOPIC, 0, record.store_timestamp)
                .await
            {
                Ok(offset) => offset,
                // No op topic: the broker never resolved a half message.
                Err(e) if e.is_topic_missing() => return Ok(false),
                Err(e) => {
                    last = format!("{OP_TOPIC} at {addr}: {e}");
                    continue;
                }
            };
            for _ in 0..OP_PULLS {
                self.spend()?;
                let pull = match admin.pull(addr, PULL_GROUP, &queue, offset, 32).await {
                    Ok(pull) => pull,
                    Err(e) => return Err(Stop::Failed(format!("{OP_TOPIC} at {addr}: {e}"))),
                };
                if pull.messages.is_empty() {
                    return Ok(false);
                }
                for m in &pull.messages {
                    let removes = m.properties.get("TAGS").map(String::as_str) == Some("d");
                    if removes
                        && String::from_utf8_lossy(&m.body)
                            .split(',')
                            .any(|o| o.trim() == wanted)
                    {
                        return Ok(true);
                    }
                    offset = offset.max(m.queue_offset + 1);
                }
            }
            return Ok(false);
        }
        Err(Stop::Failed(last))
    }

    /// Acknowledged, now gone: retention if its commit-log offset is below
    /// the broker's min offset, else the store lost it.
    async fn gone(&mut self, message: &Produced) -> Result<Diagnosis, Stop> {
        if self.cleanup_policy().await? == "COMPACTION" {
            return Ok(Diagnosis {
                verdict: Verdict::Compacted,
                evidence: json!({"found": false, "acknowledged": true, "cleanup_policy": "COMPACTION", "msg_id": message.msg_id}),
                alias: None,
            });
        }
        if let Some((host, offset)) = message
            .offset_msg_id
            .as_deref()
            .and_then(decode_offset_msg_id)
        {
            let topic = self.topic.clone();
            let groups = self.replicas(&topic).await?.unwrap_or_default();
            if let Some(replicas) = groups.into_iter().find(|g| g.addrs.contains(&host)) {
                let admin = self.cluster.admin();
                let runtime = self
                    .ask(&replicas, "GET_BROKER_RUNTIME_INFO", |addr| async move {
                        admin.runtime_info(&addr).await
                    })
                    .await?;
                let min = runtime.int("commitLogMinOffset").ok().flatten();
                let evidence = json!({"found": false, "acknowledged": true, "send_status": message.status.as_str(), "broker": replicas.name, "commit_log_offset": offset, "commit_log_min_offset": min});
                if min.is_some_and(|m| offset < m) {
                    return Ok(Diagnosis::missing(Stage::Expired, evidence));
                }
                return Ok(Diagnosis::missing(Stage::Store, evidence));
            }
        }
        Ok(Diagnosis::missing(
            Stage::Store,
            json!({"found": false, "acknowledged": true, "send_status": message.status.as_str(), "msg_id": message.msg_id}),
        ))
    }

    /// The flow topic's `cleanup.policy` (`DELETE` unless a 5.x topic says
    /// `COMPACTION`), from the topic configs of a broker that holds it.
    async fn cleanup_policy(&mut self) -> Result<String, Stop> {
        if let Some(policy) = &self.cleanup_policy {
            return Ok(policy.clone());
        }
        let topic = self.topic.clone();
        let Some(replicas) = self
            .replicas(&topic)
            .await?
            .and_then(|groups| groups.into_iter().next())
        else {
            return Ok("DELETE".to_string());
        };
        let mut last = String::new();
        for addr in &replicas.addrs {
            self.spend()?;
            let policy = match self.cluster.admin().all_topic_config(addr).await {
                Ok(configs) => configs
                    .get(&topic)
                    .map_or("DELETE", |c| c.cleanup_policy())
                    .to_string(),
                // A broker without topic configs to give has no compaction.
                Err(e) if e.is_unsupported() || e.is_nothing_stored() => "DELETE".to_string(),
                Err(e) => {
                    last = format!("topic config of {topic} at {addr}: {e}");
                    continue;
                }
            };
            self.cleanup_policy = Some(policy.clone());
            return Ok(policy);
        }
        // Unknown: never call a compacted topic's drop a loss; retry later.
        Err(Stop::Failed(last))
    }

    /// Whether `msg_id` is stored on the flow's topic (an orphan candidate
    /// from a trace consumer: its group may consume other topics too).
    pub async fn on_flow_topic(
        &mut self,
        msg_id: &str,
        around_ms: i64,
        now_ms: i64,
    ) -> Result<bool, String> {
        let topic = self.topic.clone();
        match self
            .find_on(&topic, Some(msg_id), &[], around_ms, now_ms)
            .await
        {
            Ok(found) => Ok(found.is_some()),
            Err(Stop::Budget) => Err("diagnosis budget exhausted".to_string()),
            Err(Stop::Failed(reason)) => Err(reason),
        }
    }
}

/// `offsetMsgId` → (`ip:port`, commit-log offset), IPv4 form (32 hex chars).
pub fn decode_offset_msg_id(id: &str) -> Option<(String, i64)> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&id[i * 2..i * 2 + 2], 16).ok();
    let ip = format!("{}.{}.{}.{}", byte(0)?, byte(1)?, byte(2)?, byte(3)?);
    let port = i32::from_str_radix(&id[8..16], 16).ok()?;
    let offset = i64::from_str_radix(&id[16..32], 16).ok()?;
    Some((format!("{ip}:{port}"), offset))
}

/// `messageDelayLevel` ("1s 5s 10s 30s 1m 2m ... 2h") → durations in ms.
pub fn parse_delay_levels(text: &str) -> Vec<i64> {
    text.split_whitespace()
        .map(|level| {
            let (number, unit) = level.split_at(level.len().saturating_sub(1));
            let n: i64 = number.parse().unwrap_or(0);
            n * match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => 0,
            }
        })
        .collect()
}

/// At-risk sends carry their status into the finding.
pub fn send_attrs(message: &Produced) -> Value {
    json!({
        "send_status": message.status.as_str(),
        "at_risk": message.status.at_risk(),
        "kind": message.kind.as_str(),
        "transaction": message.transaction.map(TxState::as_str),
        "tags": message.tags,
        "batch": message.batch,
        "offset_msg_id": message.offset_msg_id,
    })
}

/// A retry or DLQ copy, as evidence.
fn copy_evidence(topic: &str, broker: &str, copy: &MessageRecord) -> Value {
    json!({
        "topic": topic,
        "broker": broker,
        "queue_offset": copy.queue_offset,
        "store_timestamp_ms": copy.store_timestamp,
        "reconsume_times": copy.reconsume_times,
    })
}

/// The store-time span a lookup searches: from ten minutes before the
/// message (clock skew, a slow send) to a minute past now.
fn search_span(around_ms: i64, now_ms: i64) -> (i64, i64) {
    (around_ms - 10 * 60 * 1000, now_ms + 60 * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_levels_read_the_brokers_default_and_ours() {
        assert_eq!(
            parse_delay_levels("1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h")[16..],
            [3_600_000, 7_200_000]
        );
        assert_eq!(parse_delay_levels("1s 60s"), [1_000, 60_000]);
    }

    #[test]
    fn offset_msg_id_decodes_the_java_example() {
        assert_eq!(
            decode_offset_msg_id("0A090F2800002A9F0000229E897CF382"),
            Some(("10.9.15.40:10911".to_string(), 0x229E_897C_F382))
        );
        assert_eq!(decode_offset_msg_id("nope"), None);
    }
}
