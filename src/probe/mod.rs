//! The end-to-end probe: every interval, one small message to every
//! writable queue of every master of the probe's own topic, read back with
//! side-effect-free pulls through the same remoting client — the only way
//! to know that a message sent *now* to broker-b queue 3 arrives, and that
//! what a broker acknowledged before a restart is still there after it.
//!
//! Each broker is probed by its own task within a round (a hung broker
//! delays only itself); its state — the [`ledger`] of each queue, counters,
//! the latency histogram — lives in a [`BrokerProbe`] that the round hands
//! to the task and takes back. The round's exposition is published under
//! its own key, beside the cluster's collection. State is in memory: a
//! restarted daemon starts a new run (bodies carry the run, so an earlier
//! run's messages are never taken for this one's), reading from each
//! queue's end.
//!
//! Traffic: masters × writable queues messages per interval (2 queues,
//! 10 s: 12 messages a minute per master), plus one pull per queue per
//! round and a re-verification every `verify_every_rounds`.

pub mod ledger;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, Cluster, Error, MessageQueue, Outgoing, PullStatus, SendStatus};
use crate::clock::Clock;
use crate::config::ProbeConfig;
use crate::metrics::{Exposition, SnapshotStore};

use ledger::{Loss, QueueLedger, Read};

/// Latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Messages per pull.
const PULL_BATCH: i32 = 32;
/// Most pulls per queue per round (a backlog is read over several rounds).
const PULLS_PER_ROUND: usize = 16;
/// Largest probe body read.
const MAX_BODY: usize = 4096;
/// The `sent` label of a send that stored nothing.
const FAILED: &str = "failed";

/// A latency histogram.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, n) in BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Everything the probe knows of one broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerProbe {
    /// Master address last seen in the route.
    addr: String,
    /// When the route last named this broker, epoch ms.
    seen_ms: i64,
    queues: BTreeMap<i32, QueueLedger>,
    next_seq: u64,
    sent: BTreeMap<&'static str, u64>,
    received: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    verified: u64,
    errors: BTreeMap<(&'static str, &'static str), u64>,
    latency: Histogram,
    up: bool,
    /// The broker could not be reached in an earlier round: verify on return.
    was_down: bool,
}

/// What one broker's round needs.
#[derive(Clone)]
struct RoundPlan {
    admin: Admin,
    config: ProbeConfig,
    run: Arc<str>,
    cluster: Arc<str>,
    broker: String,
    write_queues: i32,
    read_queues: i32,
    verify: bool,
    clock: Clock,
}

/// The probe of one cluster.
pub struct Probe {
    cluster: Cluster,
    config: ProbeConfig,
    clock: Clock,
    run: Arc<str>,
    brokers: BTreeMap<String, BrokerProbe>,
    route_errors: BTreeMap<(&'static str, &'static str), u64>,
    round: u64,
    limiter: Arc<Semaphore>,
}

impl Probe {
    /// A probe of `cluster`; `run` tells its messages from earlier runs'.
    pub fn new(cluster: Cluster, config: ProbeConfig, clock: Clock, run: String) -> Probe {
        Probe {
            cluster,
            config,
            clock,
            run: run.into(),
            brokers: BTreeMap::new(),
            route_errors: BTreeMap::new(),
            round: 0,
            limiter: Arc::new(Semaphore::new(16)),
        }
    }

    /// A run id from the time and the process.
    pub fn new_run_id(now_ms: i64) -> String {
        format!("{now_ms:x}-{:x}", std::process::id())
    }

    /// Probe every interval until `shutdown`, publishing each round.
    pub async fn run(mut self, snapshot: Arc<SnapshotStore>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let key = format!("probe/{}", self.cluster.name());
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let exposition = tokio::select! {
                exposition = self.round() => exposition,
                _ = shutdown.cancelled() => return,
            };
            snapshot.publish(&key, exposition);
        }
    }

    /// One round: route, then every broker at once; returns the metrics.
    pub async fn round(&mut self) -> Exposition {
        self.round += 1;
        let now_ms = self.clock.now_ms();
        let topic = self.config.topic.clone();
        let mut plans: BTreeMap<String, (i32, i32)> = BTreeMap::new();
        match self.cluster.topic_route(&topic).await {
            Ok(route) => {
                for data in &route.broker_datas {
                    let Some(addr) = data.master_addr() else {
                        continue;
                    };
                    let (write, read) = route.queues_of(&data.broker_name).map_or((0, 0), |q| {
                        (
                            if q.perm & 2 != 0 {
                                q.write_queue_nums
                            } else {
                                0
                            },
                            if q.perm & 4 != 0 {
                                q.read_queue_nums
                            } else {
                                0
                            },
                        )
                    });
                    let broker = self.brokers.entry(data.broker_name.clone()).or_default();
                    broker.addr = addr.to_string();
                    broker.seen_ms = now_ms;
                    plans.insert(data.broker_name.clone(), (write, read));
                }
            }
            Err(e) if e.is_topic_missing() && self.config.create_topic => {
                self.create_topic(&topic).await;
            }
            Err(e) => {
                tracing::warn!(
                    message = "Probe topic route failed.",
                    cluster = self.cluster.name(),
                    topic,
                    error = %e
                );
                *self.route_errors.entry(("route", e.kind())).or_default() += 1;
            }
        }
        // A broker the route stopped naming (the name server dropped a dead
        // master) is still probed at its last address for a while: its
        // failing sends are the signal. Gone for a whole window: forgotten.
        let window_ms = i64::try_from(self.config.verify_window.as_millis()).unwrap_or(i64::MAX);
        self.brokers
            .retain(|_, b| now_ms.saturating_sub(b.seen_ms) <= window_ms);
        let every = self.config.verify_every_rounds;
        let tasks: Vec<_> = self
            .brokers
            .iter_mut()
            .map(|(name, broker)| {
                let (write, read) = plans
                    .get(name)
                    .copied()
                    .unwrap_or((broker.queues.len() as i32, broker.queues.len() as i32));
                let plan = RoundPlan {
                    admin: self.cluster.admin().clone(),
                    config: self.config.clone(),
                    run: self.run.clone(),
                    cluster: self.cluster.name().into(),
                    broker: name.clone(),
                    write_queues: write,
                    read_queues: read,
                    verify: self.round.is_multiple_of(every),
                    clock: self.clock.clone(),
                };
                let state = std::mem::take(broker);
                async move { (plan.broker.clone(), probe_broker(plan, state).await) }
            })
            .collect();
        for (name, state) in crate::concurrent::join_limited(&self.limiter, tasks.into_iter()).await
        {
            self.brokers.insert(name, state);
        }
        self.render()
    }

    async fn create_topic(&mut self, topic: &str) {
        let info = match self.cluster.cluster_info().await {
            Ok(info) => info,
            Err(e) => {
                *self
                    .route_errors
                    .entry(("create_topic", e.kind()))
                    .or_default() += 1;
                return;
            }
        };
        for data in info.broker_addr_table.values() {
            let Some(addr) = data.master_addr() else {
                continue;
            };
            match self
                .cluster
                .admin()
                .create_topic(addr, topic, self.config.queues)
                .await
            {
                Ok(()) => tracing::info!(
                    message = "Created the probe topic.",
                    cluster = self.cluster.name(),
                    broker = data.broker_name,
                    topic,
                    queues = self.config.queues
                ),
                Err(e) => {
                    tracing::warn!(
                        message = "Cannot create the probe topic.",
                        cluster = self.cluster.name(),
                        broker = data.broker_name,
                        topic,
                        error = %e
                    );
                    *self
                        .route_errors
                        .entry(("create_topic", e.kind()))
                        .or_default() += 1;
                }
            }
        }
    }

    fn render(&self) -> Exposition {
        let mut out = Exposition::new();
        let cluster = self.cluster.name();
        for ((operation, kind), n) in &self.route_errors {
            out.sample(
                "mqaudit_probe_errors_total",
                &[
                    ("rocketmq_cluster", cluster),
                    ("broker", ""),
                    ("operation", operation),
                    ("kind", kind),
                ],
                *n as f64,
            );
        }
        for (name, b) in &self.brokers {
            let labels = [("rocketmq_cluster", cluster), ("broker", name.as_str())];
            out.sample("mqaudit_probe_up", &labels, f64::from(u8::from(b.up)));
            for status in [
                SendStatus::Ok.as_str(),
                SendStatus::FlushDiskTimeout.as_str(),
                SendStatus::FlushSlaveTimeout.as_str(),
                SendStatus::SlaveNotAvailable.as_str(),
                FAILED,
            ] {
                let n = b.sent.get(status).copied().unwrap_or(0);
                out.sample(
                    "mqaudit_probe_messages_sent_total",
                    &[
                        ("rocketmq_cluster", cluster),
                        ("broker", name),
                        ("status", status),
                    ],
                    n as f64,
                );
            }
            out.sample(
                "mqaudit_probe_messages_received_total",
                &labels,
                b.received as f64,
            );
            out.sample(
                "mqaudit_probe_messages_lost_total",
                &[
                    ("rocketmq_cluster", cluster),
                    ("broker", name),
                    ("stage", "store"),
                ],
                b.lost as f64,
            );
            out.sample(
                "mqaudit_probe_messages_duplicated_total",
                &labels,
                b.duplicated as f64,
            );
            out.sample(
                "mqaudit_probe_messages_reordered_total",
                &labels,
                b.reordered as f64,
            );
            out.sample(
                "mqaudit_probe_messages_verified_total",
                &labels,
                b.verified as f64,
            );
            let pending: usize = b.queues.values().map(QueueLedger::pending).sum();
            let unreadable: usize = b.queues.values().map(QueueLedger::unreadable).sum();
            out.sample("mqaudit_probe_messages_pending", &labels, pending as f64);
            out.sample(
                "mqaudit_probe_messages_unreadable",
                &labels,
                unreadable as f64,
            );
            let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(b.latency.buckets).collect();
            out.histogram(
                "mqaudit_probe_latency_seconds",
                &labels,
                &buckets,
                b.latency.sum,
                b.latency.count,
            );
            for ((operation, kind), n) in &b.errors {
                out.sample(
                    "mqaudit_probe_errors_total",
                    &[
                        ("rocketmq_cluster", cluster),
                        ("broker", name),
                        ("operation", operation),
                        ("kind", kind),
                    ],
                    *n as f64,
                );
            }
        }
        out
    }

    /// Per broker: (pending, unreadable, lost, received) — for tests and `doctor`.
    pub fn tallies(&self) -> BTreeMap<String, (usize, usize, u64, u64)> {
        self.brokers
            .iter()
            .map(|(name, b)| {
                (
                    name.clone(),
                    (
                        b.queues.values().map(QueueLedger::pending).sum(),
                        b.queues.values().map(QueueLedger::unreadable).sum(),
                        b.lost,
                        b.received,
                    ),
                )
            })
            .collect()
    }
}

/// One broker's round: start unread queues at their end, send one message
/// per writable queue, read every queue to its end, judge, verify.
async fn probe_broker(plan: RoundPlan, mut b: BrokerProbe) -> BrokerProbe {
    let mut reachable = true;
    let fail = |b: &mut BrokerProbe, operation: &'static str, e: &Error| {
        tracing::warn!(
            message = "Probe call failed.",
            cluster = &*plan.cluster,
            broker = plan.broker,
            operation,
            error = %e
        );
        *b.errors.entry((operation, e.kind())).or_default() += 1;
    };
    let queue = |queue_id| MessageQueue {
        topic: plan.config.topic.clone(),
        broker_name: plan.broker.clone(),
        queue_id,
    };
    let addr = b.addr.clone();
    for queue_id in 0..plan.read_queues.max(plan.write_queues) {
        if b.queues
            .get(&queue_id)
            .is_some_and(|q| q.next_offset().is_some())
        {
            continue;
        }
        match plan
            .admin
            .max_offset(&addr, &plan.config.topic, queue_id)
            .await
        {
            Ok(end) => b.queues.entry(queue_id).or_default().seek(end),
            Err(e) => {
                fail(&mut b, "read", &e);
                reachable = false;
                break;
            }
        }
    }
    if reachable {
        for queue_id in 0..plan.write_queues {
            let seq = b.next_seq;
            b.next_seq += 1;
            let sent_ms = plan.clock.now_ms();
            let body = ledger::body(&plan.run, seq, sent_ms);
            let msg_id = format!("{}-{}-{queue_id}-{seq}", plan.run, plan.broker);
            let message = Outgoing {
                producer_group: &plan.config.group,
                topic: &plan.config.topic,
                queue_id,
                msg_id: &msg_id,
                tag: Some("probe"),
                body: body.as_bytes(),
                born_ms: sent_ms,
            };
            match plan.admin.send(&addr, &message).await {
                Ok(sent) => {
                    *b.sent.entry(sent.status.as_str()).or_default() += 1;
                    b.queues.entry(sent.queue_id).or_default().acked(
                        seq,
                        sent.queue_offset,
                        sent_ms,
                        sent.status,
                    );
                }
                Err(e) => {
                    *b.sent.entry(FAILED).or_default() += 1;
                    fail(&mut b, "send", &e);
                    if !e.is_answer() {
                        // Unreachable: the other queues would only wait too.
                        reachable = false;
                        break;
                    }
                }
            }
        }
    }
    let mut backwards = false;
    let mut ends = BTreeMap::new();
    if reachable {
        for queue_id in 0..plan.read_queues {
            match read_queue(&plan, &addr, &queue(queue_id), &mut b).await {
                Ok((end, moved)) => {
                    backwards |= moved;
                    ends.insert(queue_id, end);
                }
                Err(e) => {
                    fail(&mut b, "read", &e);
                    reachable = false;
                    break;
                }
            }
        }
    }
    let now_ms = plan.clock.now_ms();
    if reachable {
        let returned = b.was_down;
        let verify = plan.verify || returned || backwards;
        if verify {
            for (queue_id, _) in ends.clone() {
                match verify_queue(&plan, &addr, &queue(queue_id), &mut b).await {
                    Ok(lost) => report(&plan, queue_id, &lost, &mut b),
                    Err(e) => {
                        fail(&mut b, "verify", &e);
                        reachable = false;
                        break;
                    }
                }
            }
        }
        let deadline_ms = now_ms - i64::try_from(plan.config.deadline.as_millis()).unwrap_or(0);
        for queue_id in ends.into_keys() {
            let lost = b.queues.entry(queue_id).or_default().judge(deadline_ms);
            report(&plan, queue_id, &lost, &mut b);
        }
    }
    let window_ms = i64::try_from(plan.config.verify_window.as_millis()).unwrap_or(i64::MAX);
    for q in b.queues.values_mut() {
        q.forget_before(now_ms.saturating_sub(window_ms));
    }
    b.up = reachable;
    b.was_down = !reachable;
    b
}

/// Read one queue to its end (within the round's pulls); returns the
/// queue's end and whether the broker moved the reader backwards.
async fn read_queue(
    plan: &RoundPlan,
    addr: &str,
    queue: &MessageQueue,
    b: &mut BrokerProbe,
) -> Result<(i64, bool), Error> {
    let mut moved_back = false;
    let mut end = 0;
    for _ in 0..PULLS_PER_ROUND {
        let ledger = b.queues.entry(queue.queue_id).or_default();
        let offset = ledger.next_offset().unwrap_or(0);
        let pull = plan
            .admin
            .pull(addr, &plan.config.group, queue, offset, PULL_BATCH)
            .await?;
        end = pull.max_offset;
        let now_ms = plan.clock.now_ms();
        match pull.status {
            PullStatus::Found => {
                for m in &pull.messages {
                    let parsed = m.uncompressed_body(MAX_BODY).ok();
                    let ours = parsed
                        .as_deref()
                        .and_then(ledger::parse_body)
                        .filter(|(run, _, _)| *run == &*plan.run);
                    let ledger = b.queues.entry(queue.queue_id).or_default();
                    let Some((_, seq, _)) = ours else {
                        ledger.skip(m.queue_offset);
                        continue;
                    };
                    match ledger.read(seq, m.queue_offset, now_ms) {
                        Read::Received {
                            latency_ms,
                            reordered,
                        } => {
                            b.received += 1;
                            b.reordered += u64::from(reordered);
                            b.latency.observe(latency_ms as f64 / 1000.0);
                        }
                        Read::Duplicated => b.duplicated += 1,
                        Read::Foreign => {}
                    }
                }
                let ledger = b.queues.entry(queue.queue_id).or_default();
                if let Some(last) = pull.messages.last() {
                    ledger.skip(last.queue_offset);
                }
                if ledger.next_offset().unwrap_or(0) >= pull.max_offset {
                    break;
                }
            }
            PullStatus::NoNewMessage => break,
            PullStatus::NoMatchedMessage => {
                b.queues
                    .entry(queue.queue_id)
                    .or_default()
                    .seek(pull.next_begin_offset.max(offset + 1));
            }
            PullStatus::OffsetIllegal => {
                // The queue ends (or starts) elsewhere than the reader
                // thought: after a restart that lost its tail, it is shorter.
                // Messages acknowledged since (sent this round, after the
                // restart) sit below the broker's suggestion: read them.
                moved_back |= pull.next_begin_offset < offset;
                let ledger = b.queues.entry(queue.queue_id).or_default();
                let to = ledger
                    .lowest_pending_offset()
                    .filter(|&p| p < offset)
                    .map_or(pull.next_begin_offset, |p| p.min(pull.next_begin_offset));
                ledger.seek(to);
                if to == offset {
                    break;
                }
            }
        }
    }
    let ledger = b.queues.entry(queue.queue_id).or_default();
    Ok((end, moved_back || ledger.went_backwards(end)))
}

/// Read the kept messages of one queue again; returns the ones gone.
async fn verify_queue(
    plan: &RoundPlan,
    addr: &str,
    queue: &MessageQueue,
    b: &mut BrokerProbe,
) -> Result<Vec<Loss>, Error> {
    let ledger = b.queues.entry(queue.queue_id).or_default();
    let wanted = ledger.to_verify();
    let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    let mut offset = first.0;
    while offset <= last.0 {
        let pull = plan
            .admin
            .pull(addr, &plan.config.group, queue, offset, PULL_BATCH)
            .await?;
        match pull.status {
            PullStatus::Found => {
                for m in &pull.messages {
                    let body = m.uncompressed_body(MAX_BODY).ok();
                    if let Some((run, seq, _)) = body.as_deref().and_then(ledger::parse_body)
                        && run == &*plan.run
                    {
                        found.push((m.queue_offset, seq));
                    }
                }
                offset = pull
                    .messages
                    .last()
                    .map_or(pull.next_begin_offset, |m| m.queue_offset + 1);
            }
            PullStatus::NoMatchedMessage if pull.next_begin_offset > offset => {
                offset = pull.next_begin_offset;
            }
            // The queue ends before the rest: gone.
            _ => break,
        }
    }
    let ledger = b.queues.entry(queue.queue_id).or_default();
    let lost = ledger.verified(&found);
    b.verified += (wanted.len() - lost.len()) as u64;
    Ok(lost)
}

/// Count and log store losses.
fn report(plan: &RoundPlan, queue_id: i32, lost: &[Loss], b: &mut BrokerProbe) {
    for loss in lost {
        tracing::error!(
            message = "Probe message acknowledged by the broker is gone.",
            cluster = &*plan.cluster,
            broker = plan.broker,
            topic = plan.config.topic,
            queue_id,
            queue_offset = loss.offset,
            seq = loss.seq,
            status = loss.status.as_str(),
            sent_ms = loss.sent_ms,
            read_before = loss.was_read,
        );
    }
    b.lost += lost.len() as u64;
}
