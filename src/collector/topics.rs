//! The `topic` collector: every queue's max and min offset, and offset
//! regressions. Max offsets come first from all groups' consume stats in
//! one call per master (317, also what the consumer collector reads; its
//! failure counts against `consumer`); topic stats (202) are asked only for
//! topics those did not cover, plus a rotating slice of covered topics to
//! refresh min offsets, plus every DLQ topic (its depth).

use std::collections::{BTreeMap, BTreeSet};

use super::discovery::Node;
use super::{BoxFuture, Collector, Cycle, bounded, stable_hash};
use crate::admin::{MessageQueue, TopicOffset, perm_text};
use crate::backlog;
use crate::config::Granularity;
use crate::metrics::Exposition;

/// The topic collector.
pub(super) struct Topics;

impl Collector for Topics {
    fn name(&self) -> &'static str {
        "topic"
    }

    fn collect<'a>(&'a self, cycle: &'a mut Cycle<'_>, out: &'a mut Exposition) -> BoxFuture<'a> {
        Box::pin(async move {
            consume_stats(cycle).await;
            let masters = cycle.discovered.masters();
            let wanted = wanted_topic_stats(cycle, &masters);
            let answered = topic_stats(cycle, &masters, &wanted).await;
            let now_ms = cycle.now_ms;
            for (queue, max) in &cycle.facts.queues {
                cycle.state.observe_max_offset(queue, *max, now_ms);
            }
            cycle
                .state
                .retain_queues(cycle.facts.queues.keys(), &answered);
            render(cycle, out);
        })
    }
}

/// 317 of every master, one at a time: one broker's answer can be
/// megabytes, so their parse trees never coexist.
async fn consume_stats(cycle: &mut Cycle<'_>) {
    let masters = cycle.discovered.masters();
    let deadline = cycle.deadline;
    let answers = cycle
        .join(masters.iter().map(|n| {
            let (admin, addr, heavy) = (cycle.admin(), n.addr.clone(), cycle.heavy.clone());
            async move {
                let _one_at_a_time = heavy.acquire_owned().await;
                bounded(deadline, admin.broker_consume_stats(&addr)).await
            }
        }))
        .await;
    for (node, answer) in masters.iter().zip(answers) {
        match answer {
            Ok(stats) => {
                for (_, group_stats) in &stats {
                    for (queue, offsets) in &group_stats.offsets {
                        cycle
                            .facts
                            .queues
                            .insert(queue.clone(), offsets.broker_offset);
                    }
                }
                cycle.facts.consume.insert(node.addr.clone(), stats);
            }
            Err(e) => cycle.failed("consumer", "broker_consume_stats", &node.addr, &e),
        }
    }
}

/// (master, topic) pairs whose topic stats this cycle needs.
fn wanted_topic_stats(cycle: &Cycle<'_>, masters: &[Node]) -> Vec<(Node, String)> {
    let mut covered: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (addr, groups) in &cycle.facts.consume {
        for (_, stats) in groups {
            for (queue, _) in &stats.offsets {
                covered.insert((addr, &queue.topic));
            }
        }
    }
    let cycles = cycle.collect.min_offset_refresh_cycles;
    let slice = cycle.number % cycles;
    let mut wanted = Vec::new();
    for master in masters {
        let Some(topics) = cycle.discovered.topics.get(&master.addr) else {
            continue;
        };
        // Masters that failed consume stats: topic stats for everything.
        let stats_failed = !cycle.facts.consume.contains_key(&master.addr);
        for topic in topics
            .keys()
            .filter(|t| cycle.collect.topics.allows(t) || backlog::dlq_group(t).is_some())
        {
            let is_covered = covered.contains(&(master.addr.as_str(), topic.as_str()));
            let refresh = stable_hash(topic) % cycles == slice;
            if !is_covered || refresh || stats_failed {
                wanted.push((master.clone(), topic.clone()));
            }
        }
    }
    wanted
}

/// Ask 202 for `wanted`; returns the brokers whose every topic was read
/// this cycle (only their missing queues are really gone: see
/// `State::retain_queues`).
async fn topic_stats(
    cycle: &mut Cycle<'_>,
    masters: &[Node],
    wanted: &[(Node, String)],
) -> BTreeSet<String> {
    let deadline = cycle.deadline;
    let answers = cycle
        .join(wanted.iter().map(|(node, topic)| {
            let (admin, addr, topic) = (cycle.admin(), node.addr.clone(), topic.clone());
            async move { bounded(deadline, admin.topic_stats(&addr, &topic)).await }
        }))
        .await;
    let mut answered: BTreeSet<String> = masters
        .iter()
        .filter(|m| {
            cycle.facts.consume.contains_key(&m.addr) && cycle.facts.runtime.contains_key(&m.addr)
        })
        .map(|m| m.broker.clone())
        .collect();
    for ((node, topic), answer) in wanted.iter().zip(answers) {
        match answer {
            Ok(table) => take_in(cycle, topic, table),
            // Deleted since discovery: it simply has no series this cycle.
            Err(e) if e.is_topic_missing() => {}
            Err(e) => {
                answered.remove(&node.broker);
                cycle.failed("topic", "topic_stats", &node.addr, &e);
            }
        }
    }
    answered
}

fn take_in(cycle: &mut Cycle<'_>, topic: &str, table: Vec<(MessageQueue, TopicOffset)>) {
    if let Some(group) = backlog::dlq_group(topic) {
        *cycle.facts.dlq_depth.entry(group.to_string()).or_default() +=
            backlog::held_messages(&table);
    }
    for (queue, offsets) in table {
        cycle.state.observe_min_offset(&queue, offsets.min_offset);
        cycle.facts.queues.insert(queue, offsets.max_offset);
    }
}

fn render(cycle: &Cycle<'_>, out: &mut Exposition) {
    let cluster = cycle.cluster.name();
    let by_queue = cycle.collect.granularity == Granularity::Queue;
    // (topic, broker) → (max sum, min sum when every queue's is known)
    let mut sums: BTreeMap<(&str, &str), (i64, Option<i64>)> = BTreeMap::new();
    for (queue, max) in cycle
        .facts
        .queues
        .iter()
        .filter(|(q, _)| cycle.collect.topics.allows(&q.topic))
    {
        let min = cycle.state.min_offset(queue);
        if by_queue {
            let id = queue.queue_id.to_string();
            let labels = [
                ("rocketmq_cluster", cluster),
                ("topic", queue.topic.as_str()),
                ("broker", queue.broker_name.as_str()),
                ("queue_id", id.as_str()),
            ];
            out.sample("rocketmq_topic_max_offset", &labels, *max as f64);
            if let Some(min) = min {
                out.sample("rocketmq_topic_min_offset", &labels, min as f64);
            }
        } else {
            let entry = sums
                .entry((&queue.topic, &queue.broker_name))
                .or_insert((0, Some(0)));
            entry.0 += max;
            entry.1 = entry.1.zip(min).map(|(a, b)| a + b);
        }
    }
    for ((topic, broker), (max, min)) in sums {
        let labels = [
            ("rocketmq_cluster", cluster),
            ("topic", topic),
            ("broker", broker),
        ];
        out.sample("rocketmq_topic_max_offset", &labels, max as f64);
        if let Some(min) = min {
            out.sample("rocketmq_topic_min_offset", &labels, min as f64);
        }
    }
    render_topic_info(cycle, out);
    for (topic, broker, count) in cycle.state.regressions() {
        if cycle.collect.topics.allows(topic) {
            let labels = [
                ("rocketmq_cluster", cluster),
                ("topic", topic),
                ("broker", broker),
            ];
            out.sample(
                "rocketmq_topic_offset_regressions_total",
                &labels,
                count as f64,
            );
        }
    }
}

/// One `rocketmq_topic_info` per topic and master: its message type and
/// cleanup policy (5.x attributes; a compacted topic legitimately drops
/// older messages of a key), permission and order flag.
fn render_topic_info(cycle: &Cycle<'_>, out: &mut Exposition) {
    let cluster = cycle.cluster.name();
    for master in cycle.discovered.masters() {
        let Some(topics) = cycle.discovered.topics.get(&master.addr) else {
            continue;
        };
        for (name, config) in topics
            .iter()
            .filter(|(t, _)| cycle.collect.topics.allows(t))
        {
            out.sample(
                "rocketmq_topic_info",
                &[
                    ("rocketmq_cluster", cluster),
                    ("topic", name),
                    ("broker", &master.broker),
                    ("message_type", config.message_type()),
                    ("cleanup_policy", config.cleanup_policy()),
                    ("perm", perm_text(config.perm)),
                    ("order", if config.order { "true" } else { "false" }),
                ],
                1.0,
            );
        }
    }
}
