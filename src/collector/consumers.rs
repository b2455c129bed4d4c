//! The `consumer` collector: per group, its online consumers (203, once
//! per group per cycle, from a master that holds its offsets), committed
//! offsets, lag in messages and in seconds, retry and DLQ depth, and
//! messages expired before consumption, the time left before retention
//! would expire the oldest unconsumed message, and the group's consume type
//! (push, pull or 5.x POP) and model. Lag and retry are split as
//! [`crate::backlog`] splits them (shared with `doctor`); broadcast groups
//! have no broker-side lag. Lag in seconds comes from the offset history,
//! and from a bounded number of one-message pulls (11) for what the
//! history cannot date — never a guessed value.

use std::collections::{BTreeMap, BTreeSet};

use super::discovery::Node;
use super::{BoxFuture, Collector, Cycle, bounded};
use crate::admin::{ConsumeStats, ConsumerConnection, MessageQueue, OffsetWrapper, PullStatus};
use crate::backlog;
use crate::config::Granularity;
use crate::metrics::Exposition;

/// Group used for side-effect-free pulls (exists on every broker).
const PULL_GROUP: &str = "TOOLS_CONSUMER";

/// The consumer collector.
pub(super) struct Consumers;

impl Collector for Consumers {
    fn name(&self) -> &'static str {
        "consumer"
    }

    fn collect<'a>(&'a self, cycle: &'a mut Cycle<'_>, out: &'a mut Exposition) -> BoxFuture<'a> {
        Box::pin(async move {
            let consume = std::mem::take(&mut cycle.facts.consume);
            let groups = groups(cycle, &consume);
            let online = connections(cycle, &groups).await;
            date_lag(cycle, &groups).await;
            for (group, holders) in &groups {
                render_group(cycle, group, holders, &online, out);
            }
            render_expired(cycle, out);
            let cluster = cycle.cluster.name();
            for (group, topic) in &cycle.discovered.pop_modes {
                if groups.contains_key(group) {
                    out.sample(
                        "rocketmq_consumer_group_pop_mode",
                        &[
                            ("rocketmq_cluster", cluster),
                            ("group", group),
                            ("topic", topic),
                        ],
                        1.0,
                    );
                }
            }
        })
    }
}

/// A group's consume stats on each master that has some: (master, stats).
type Holders<'s> = Vec<(String, &'s ConsumeStats)>;

/// What the group's online consumers look like.
#[derive(Debug, Default)]
struct Online {
    /// Distinct client ids over the masters asked.
    clients: BTreeSet<String>,
    /// Offsets live on the clients: no broker-side lag.
    broadcast: bool,
    /// `consumeType` and `messageModel`, when a consumer is online.
    kind: Option<(String, String)>,
}

/// Every group to report: those the consume stats name, those discovery
/// knows, and those with a DLQ; filtered by the group filter.
fn groups<'s>(
    cycle: &Cycle<'_>,
    consume: &'s BTreeMap<String, Vec<(String, ConsumeStats)>>,
) -> BTreeMap<String, Holders<'s>> {
    let allows = |g: &str| cycle.collect.groups.allows(g);
    let mut per_group: BTreeMap<String, Holders<'s>> = BTreeMap::new();
    for (addr, groups) in consume {
        for (group, stats) in groups {
            if !crate::admin::is_builtin_group(group) && allows(group) {
                per_group
                    .entry(group.clone())
                    .or_default()
                    .push((addr.clone(), stats));
            }
        }
    }
    for group in cycle.discovered.groups.iter().filter(|g| allows(g)) {
        per_group.entry(group.clone()).or_default();
    }
    for group in cycle.facts.dlq_depth.keys().filter(|g| allows(g)) {
        per_group.entry(group.clone()).or_default();
    }
    per_group
}

/// Which master to ask for a group's consumers. A consumer heartbeats to
/// every broker of its subscriptions, so any master holding the group's
/// offsets lists all its instances; which one rotates per cycle, so one
/// that stopped answering is not asked forever.
fn pick_master<'a>(
    cycle: &Cycle<'_>,
    holders: &'a Holders<'_>,
    masters: &'a [Node],
) -> Option<&'a str> {
    let with_offsets: Vec<&str> = holders
        .iter()
        .filter(|(_, s)| !s.offsets.is_empty())
        .map(|(a, _)| a.as_str())
        .collect();
    let turn = cycle.number as usize;
    if with_offsets.is_empty() {
        masters
            .get(turn % masters.len().max(1))
            .map(|m| m.addr.as_str())
    } else {
        Some(with_offsets[turn % with_offsets.len()])
    }
}

async fn connections(
    cycle: &mut Cycle<'_>,
    groups: &BTreeMap<String, Holders<'_>>,
) -> BTreeMap<String, Online> {
    let masters = cycle.discovered.masters();
    let asks: Vec<(String, String)> = groups
        .iter()
        .filter_map(|(group, holders)| {
            pick_master(cycle, holders, &masters).map(|addr| (group.clone(), addr.to_string()))
        })
        .collect();
    let deadline = cycle.deadline;
    let answers = cycle
        .join(asks.iter().map(|(group, addr)| {
            let (admin, group, addr) = (cycle.admin(), group.clone(), addr.clone());
            async move { bounded(deadline, admin.consumer_connections(&addr, &group)).await }
        }))
        .await;
    let mut online: BTreeMap<String, Online> = BTreeMap::new();
    for ((group, addr), answer) in asks.iter().zip(answers) {
        let entry = online.entry(group.clone()).or_default();
        match answer {
            Ok(Some(ConsumerConnection {
                connection_set,
                message_model,
                consume_type,
                ..
            })) => {
                entry
                    .clients
                    .extend(connection_set.into_iter().map(|c| c.client_id));
                entry.broadcast = !backlog::lag_is_meaningful(message_model.as_deref());
                if let (Some(t), Some(m)) = (consume_type, message_model) {
                    entry.kind = Some((t, m));
                }
            }
            Ok(None) => {}
            Err(e) => cycle.failed("consumer", "consumer_connections", addr, &e),
        }
    }
    online
}

/// Lag in seconds: pull the oldest unconsumed message of lagging queues
/// the offset history cannot date, within the cycle's pull budget.
async fn date_lag(cycle: &mut Cycle<'_>, groups: &BTreeMap<String, Holders<'_>>) {
    let mut undated: Vec<(String, MessageQueue, i64)> = Vec::new();
    for holders in groups.values() {
        for (addr, stats) in holders {
            for (queue, o) in &stats.offsets {
                if o.lag() > 0 && cycle.state.store_time(queue, o.consumer_offset).is_none() {
                    undated.push((addr.clone(), queue.clone(), o.consumer_offset));
                }
            }
        }
    }
    undated.sort();
    undated.dedup();
    undated.truncate(cycle.collect.lag_pulls_per_cycle);
    let deadline = cycle.deadline;
    let pulls = cycle
        .join(undated.iter().map(|(addr, queue, offset)| {
            let (admin, addr, queue, offset) =
                (cycle.admin(), addr.clone(), queue.clone(), *offset);
            async move { bounded(deadline, admin.pull(&addr, PULL_GROUP, &queue, offset, 1)).await }
        }))
        .await;
    for ((addr, queue, offset), result) in undated.iter().zip(pulls) {
        match result {
            Ok(pull) if pull.status == PullStatus::Found => {
                if let Some(m) = pull
                    .messages
                    .iter()
                    .find(|m| m.queue_offset == *offset)
                    .or(pull.messages.first())
                {
                    cycle
                        .state
                        .remember_store_time(queue, *offset, m.store_timestamp);
                }
            }
            Ok(_) => {}
            Err(e) => cycle.failed("consumer", "pull", addr, &e),
        }
    }
}

/// Per (topic, broker) sums of one group.
#[derive(Debug)]
struct TopicSums {
    offset: i64,
    lag: i64,
    /// Age of the oldest unconsumed message, ms.
    max_age_ms: i64,
    /// Every lagging queue was dated.
    dated: bool,
}

fn render_group(
    cycle: &mut Cycle<'_>,
    group: &str,
    holders: &Holders<'_>,
    online: &BTreeMap<String, Online>,
    out: &mut Exposition,
) {
    let cluster = cycle.cluster.name().to_string();
    let online = online.get(group);
    let broadcast = online.is_some_and(|o| o.broadcast);
    let group_labels = [("rocketmq_cluster", cluster.as_str()), ("group", group)];
    out.sample(
        "rocketmq_consumer_group_consumers",
        &group_labels,
        online.map_or(0, |o| o.clients.len()) as f64,
    );
    out.sample(
        "rocketmq_consumer_group_dlq_messages",
        &group_labels,
        cycle.facts.dlq_depth.get(group).copied().unwrap_or(0) as f64,
    );
    if let Some((consume_type, model)) = online.and_then(|o| o.kind.as_ref()) {
        out.sample(
            "rocketmq_consumer_group_info",
            &[
                group_labels[0],
                group_labels[1],
                ("consume_type", consume_type),
                ("message_model", model),
            ],
            1.0,
        );
    }
    let mut retry = 0;
    let mut per_topic: BTreeMap<(String, String), TopicSums> = BTreeMap::new();
    for (_, stats) in holders {
        for (queue, o) in &stats.offsets {
            if let Some(min) = cycle.state.min_offset(queue) {
                cycle
                    .state
                    .observe_expiry(group, queue, o.consumer_offset, min);
            }
            if backlog::is_retry_topic_of(group, &queue.topic) {
                retry += o.lag();
                continue;
            }
            if !cycle.collect.topics.allows(&queue.topic) {
                continue;
            }
            add_queue(cycle, &mut per_topic, queue, o);
            if cycle.collect.granularity == Granularity::Queue {
                render_queue(&cluster, group, queue, o, broadcast, out);
            }
        }
    }
    out.sample(
        "rocketmq_consumer_group_retry_messages",
        &group_labels,
        retry as f64,
    );
    render_topics(cycle, &cluster, group, per_topic, broadcast, out);
}

fn add_queue(
    cycle: &mut Cycle<'_>,
    per_topic: &mut BTreeMap<(String, String), TopicSums>,
    queue: &MessageQueue,
    o: &OffsetWrapper,
) {
    let sums = per_topic
        .entry((queue.topic.clone(), queue.broker_name.clone()))
        .or_insert(TopicSums {
            offset: 0,
            lag: 0,
            max_age_ms: 0,
            dated: true,
        });
    sums.offset += o.consumer_offset;
    sums.lag += o.lag();
    if o.lag() > 0 {
        match cycle.state.store_time(queue, o.consumer_offset) {
            Some(stored) => sums.max_age_ms = sums.max_age_ms.max(cycle.now_ms - stored),
            None => sums.dated = false,
        }
    } else {
        cycle.state.forget_pulled_below(queue, o.consumer_offset);
    }
}

fn render_queue(
    cluster: &str,
    group: &str,
    queue: &MessageQueue,
    o: &OffsetWrapper,
    broadcast: bool,
    out: &mut Exposition,
) {
    let id = queue.queue_id.to_string();
    let labels = [
        ("rocketmq_cluster", cluster),
        ("group", group),
        ("topic", &queue.topic),
        ("broker", &queue.broker_name),
        ("queue_id", &id),
    ];
    out.sample(
        "rocketmq_consumer_group_offset",
        &labels,
        o.consumer_offset as f64,
    );
    if !broadcast {
        out.sample(
            "rocketmq_consumer_group_lag_messages",
            &labels,
            o.lag() as f64,
        );
    }
}

fn render_topics(
    cycle: &Cycle<'_>,
    cluster: &str,
    group: &str,
    per_topic: BTreeMap<(String, String), TopicSums>,
    broadcast: bool,
    out: &mut Exposition,
) {
    let by_queue = cycle.collect.granularity == Granularity::Queue;
    for ((topic, broker), sums) in per_topic {
        let labels = [
            ("rocketmq_cluster", cluster),
            ("group", group),
            ("topic", &topic),
            ("broker", &broker),
        ];
        if !by_queue {
            out.sample(
                "rocketmq_consumer_group_offset",
                &labels,
                sums.offset as f64,
            );
        }
        if broadcast {
            continue;
        }
        if !by_queue {
            out.sample(
                "rocketmq_consumer_group_lag_messages",
                &labels,
                sums.lag as f64,
            );
        }
        // Never a guessed age: only when every lagging queue is dated.
        if sums.dated {
            let age = sums.max_age_ms.max(0) as f64 / 1000.0;
            out.sample("rocketmq_consumer_group_lag_seconds", &labels, age);
            // Time left before retention deletes the oldest unconsumed
            // message (commit-log files are kept fileReservedTime hours).
            if let Some(hours) = reserved_hours_of(cycle, &broker) {
                out.sample(
                    "rocketmq_consumer_group_retention_margin_seconds",
                    &labels,
                    hours * 3600.0 - age,
                );
            }
        }
    }
}

/// The `fileReservedTime` of the master named `broker`.
fn reserved_hours_of(cycle: &Cycle<'_>, broker: &str) -> Option<f64> {
    let master = cycle
        .discovered
        .masters()
        .into_iter()
        .find(|m| m.broker == broker)?;
    super::brokers::reserved_hours(cycle.discovered.config.get(&master.addr)?)
}

fn render_expired(cycle: &Cycle<'_>, out: &mut Exposition) {
    let cluster = cycle.cluster.name();
    for (group, topic, broker, count) in cycle.state.expired() {
        if cycle.collect.groups.allows(group) && cycle.collect.topics.allows(topic) {
            let labels = [
                ("rocketmq_cluster", cluster),
                ("group", group),
                ("topic", topic),
                ("broker", broker),
            ];
            out.sample(
                "rocketmq_consumer_group_expired_messages_total",
                &labels,
                count as f64,
            );
        }
    }
}
