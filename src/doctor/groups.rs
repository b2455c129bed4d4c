//! The doctor's group facts: every consumer group a master knows (201) or a
//! `%RETRY%`/`%DLQ%` topic names, with its online consumers, lag, retry and
//! dead-letter backlog over every master (counted as [`crate::backlog`]
//! counts them for the exporter).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Errors, GroupReport};
use crate::admin::{
    Admin, Cluster, ConsumeStats, ConsumerConnection, Error, MessageQueue, TopicOffset,
    is_builtin_group,
};
use crate::backlog::{self, Backlog};
use crate::concurrent::join_limited;

/// What one master said about one group.
type Answers = (
    Result<Option<ConsumerConnection>, Error>,
    Result<ConsumeStats, Error>,
    Result<Vec<(MessageQueue, TopicOffset)>, Error>,
);

/// One report per group, sorted by name.
pub(super) async fn examine(
    cluster: &Cluster,
    masters: &[String],
    limiter: &Arc<Semaphore>,
    errors: &mut Errors,
) -> Vec<GroupReport> {
    let names = group_names(cluster, masters, limiter, errors).await;
    let work: Vec<(String, String)> = names
        .iter()
        .flat_map(|g| masters.iter().map(move |m| (g.clone(), m.clone())))
        .collect();
    let mut pop_topics = pop_topics(cluster.admin(), masters, limiter, errors).await;
    let answers = join_limited(
        limiter,
        work.iter().map(|(group, addr)| {
            let (admin, group, addr) = (cluster.admin().clone(), group.clone(), addr.clone());
            async move { ask(&admin, &addr, &group).await }
        }),
    )
    .await;
    let mut reports: BTreeMap<String, (GroupReport, BTreeSet<String>)> = names
        .iter()
        .map(|g| (g.clone(), (empty_report(g), BTreeSet::new())))
        .collect();
    for ((group, addr), answers) in work.iter().zip(answers) {
        if let Some((report, clients)) = reports.get_mut(group) {
            take_in(report, clients, addr, answers, errors);
        }
    }
    reports
        .into_values()
        .map(|(mut report, clients)| {
            report.online_consumers = clients.len();
            // A group no master serves in POP mode pops nothing.
            report.pop_topics = pop_topics
                .remove(&report.group)
                .into_iter()
                .flatten()
                .collect();
            if !backlog::lag_is_meaningful(report.message_model.as_deref()) {
                report.lag_messages = 0;
            }
            report.topics.sort();
            report
        })
        .collect()
}

/// Groups known to any master, or named by a `%RETRY%`/`%DLQ%` topic;
/// built-in groups left out.
async fn group_names(
    cluster: &Cluster,
    masters: &[String],
    limiter: &Arc<Semaphore>,
    errors: &mut Errors,
) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let configs = join_limited(
        limiter,
        masters.iter().map(|addr| {
            let (admin, addr) = (cluster.admin().clone(), addr.clone());
            async move { admin.subscription_groups(&addr).await }
        }),
    )
    .await;
    for (addr, result) in masters.iter().zip(configs) {
        if let Some(table) = errors.record("subscription_groups", addr, result) {
            names.extend(table.into_keys());
        }
    }
    match cluster.topic_list().await {
        Ok(topics) => {
            let known = names.clone();
            names.extend(
                topics
                    .iter()
                    .filter_map(|t| backlog::group_of_system_topic(t, &known))
                    .map(str::to_string),
            );
        }
        Err(e) => errors.push("topic_list", &cluster.name_servers().join(","), &e),
    }
    names.retain(|g| !is_builtin_group(g));
    names
}

/// group → the topics some master serves it in POP mode (402, one call per
/// master: the broker keeps one table for every group).
async fn pop_topics(
    admin: &Admin,
    masters: &[String],
    limiter: &Arc<Semaphore>,
    errors: &mut Errors,
) -> BTreeMap<String, BTreeSet<String>> {
    let answers = join_limited(
        limiter,
        masters.iter().map(|addr| {
            let (admin, addr) = (admin.clone(), addr.clone());
            async move { admin.pop_modes(&addr).await }
        }),
    )
    .await;
    let mut by_group: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (addr, answer) in masters.iter().zip(answers) {
        // `None`: a 4.x master, which has no POP.
        if let Some(Some(modes)) = errors.record("pop_modes", addr, answer) {
            for (group, topic) in modes {
                by_group.entry(group).or_default().insert(topic);
            }
        }
    }
    by_group
}

async fn ask(admin: &Admin, addr: &str, group: &str) -> Answers {
    let connections = admin.consumer_connections(addr, group).await;
    let stats = admin.consume_stats(addr, group, None).await;
    let dlq = admin.topic_stats(addr, &backlog::dlq_topic(group)).await;
    (connections, stats, dlq)
}

fn empty_report(group: &str) -> GroupReport {
    GroupReport {
        group: group.to_string(),
        online_consumers: 0,
        message_model: None,
        lag_messages: 0,
        retry_messages: 0,
        dlq_messages: 0,
        topics: Vec::new(),
        consume_type: None,
        pop_topics: Vec::new(),
    }
}

/// Add one master's answers to a group's report.
fn take_in(
    report: &mut GroupReport,
    clients: &mut BTreeSet<String>,
    addr: &str,
    (connections, stats, dlq): Answers,
    errors: &mut Errors,
) {
    if let Some(Some(connection)) = errors.record("consumer_connections", addr, connections) {
        clients.extend(
            connection
                .connection_set
                .iter()
                .map(|c| c.client_id.clone()),
        );
        report.message_model = connection
            .message_model
            .clone()
            .or(report.message_model.take());
        report.consume_type = connection
            .consume_type
            .clone()
            .or(report.consume_type.take());
    }
    if let Some(stats) = errors.record("consume_stats", addr, stats) {
        let Backlog { lag, retry } = Backlog::of(&report.group, &stats);
        report.lag_messages += lag;
        report.retry_messages += retry;
        for (queue, _) in &stats.offsets {
            if !backlog::is_retry_topic_of(&report.group, &queue.topic)
                && !report.topics.contains(&queue.topic)
            {
                report.topics.push(queue.topic.clone());
            }
        }
    }
    match dlq {
        Ok(table) => report.dlq_messages += backlog::held_messages(&table),
        // No DLQ topic on this broker: nothing was dead-lettered there.
        Err(e) if e.is_topic_missing() => {}
        Err(e) => errors.push("topic_stats", addr, &e),
    }
}
