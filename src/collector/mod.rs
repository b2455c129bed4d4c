//! The collection engine: one loop per cluster that polls the name server
//! and brokers through [`Admin`] and publishes a fresh [`Exposition`] each
//! cycle. Collectors never open sockets.
//!
//! Call plan (see `docs/collection.md` for the formula):
//! * discovery, cached for `discovery_interval`: cluster info (106), and per
//!   broker its config (26); per master its topic configs (21) and
//!   subscription groups (201);
//! * every cycle, concurrently under one limit and one deadline: runtime info
//!   (28) of every broker; HA status (907) and all groups' consume stats in
//!   one call (317) of every master; then topic stats (202) only for topics
//!   the consume stats did not cover (plus a rotating slice of covered topics
//!   to refresh min offsets), consumer connections (203) once per group per
//!   master holding its offsets, and a bounded number of one-message pulls
//!   (11) to date oldest unconsumed messages the offset history cannot.
//!
//! A failed call is data: the broker's `rocketmq_broker_up` is 0 or the
//! collector's `mqaudit_collector_success` is 0 with errors counted by kind;
//! the cycle and the scrape always complete.

mod state;

pub use state::State;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::admin::{
    Admin, ConsumeStats, ConsumerConnection, HaStatus, PullStatus, RuntimeInfo, TopicOffset,
    is_builtin_group,
};
use crate::body::json::MessageQueue;
use crate::body::text::BrokerConfig;
use crate::config::{ClusterConfig, CollectConfig, Granularity};
use crate::metrics::{Exposition, SnapshotStore};
use crate::posture::{self, SlaveFacts};
use crate::remoting::Error;
use crate::remoting::codes::response;

/// Group used for side-effect-free pulls (exists on every broker).
const PULL_GROUP: &str = "TOOLS_CONSUMER";
/// A broker that left the name server stays polled (and shown down) this long.
const FORGET_VANISHED_BROKER: Duration = Duration::from_secs(3600);
/// Collector names (values of the `collector` label).
const COLLECTORS: [&str; 4] = ["discovery", "broker", "topic", "consumer"];

/// Counts clusters that finished a first full cycle; `/-/ready` needs all.
#[derive(Debug)]
pub struct Readiness {
    expected: usize,
    done: AtomicUsize,
}

impl Readiness {
    /// Ready once `expected` clusters have each completed a cycle.
    pub fn new(expected: usize) -> Readiness {
        Readiness {
            expected,
            done: AtomicUsize::new(0),
        }
    }
    /// True after every cluster's first full cycle.
    pub fn is_ready(&self) -> bool {
        self.done.load(Ordering::Acquire) >= self.expected
    }
    fn mark(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// A broker process known from the name server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Node {
    broker: String,
    id: u64,
    addr: String,
}

/// What discovery learnt; reused until it is `discovery_interval` old.
#[derive(Debug, Default)]
struct Discovery {
    refreshed: Option<Instant>,
    /// Every broker, with when the name server last listed it.
    nodes: BTreeMap<Node, Instant>,
    /// Topic → queue count, per master address.
    topics: BTreeMap<String, BTreeMap<String, i32>>,
    /// Broker config per address.
    config: BTreeMap<String, BrokerConfig>,
    /// Consumer groups the masters know (built-in groups removed).
    groups: BTreeSet<String>,
}

/// One cluster's collector.
pub struct ClusterCollector {
    cluster: ClusterConfig,
    collect: CollectConfig,
    admin: Admin,
    limiter: Arc<Semaphore>,
    /// Serialises calls whose bodies are large (all groups' consume stats),
    /// so their parse trees never coexist: peak memory stays one body.
    heavy: Arc<Semaphore>,
    discovery: Discovery,
    state: State,
    cycle: u64,
    errors: BTreeMap<(&'static str, &'static str), u64>,
    last_success: BTreeMap<&'static str, f64>,
}

/// Failures and timings of one cycle, per collector.
#[derive(Default)]
struct CycleHealth {
    failed: BTreeSet<&'static str>,
    duration: BTreeMap<&'static str, f64>,
}

impl ClusterCollector {
    /// A collector for one cluster; `admin` should report requests to the
    /// self metrics.
    pub fn new(cluster: ClusterConfig, collect: CollectConfig, admin: Admin) -> ClusterCollector {
        ClusterCollector {
            limiter: Arc::new(Semaphore::new(collect.concurrency)),
            heavy: Arc::new(Semaphore::new(1)),
            cluster,
            collect,
            admin,
            discovery: Discovery::default(),
            state: State::default(),
            cycle: 0,
            errors: BTreeMap::new(),
            last_success: BTreeMap::new(),
        }
    }

    /// Cluster name.
    pub fn name(&self) -> &str {
        &self.cluster.name
    }

    /// Collect every interval until `shutdown` fires, publishing each cycle.
    pub async fn run(
        mut self,
        store: Arc<SnapshotStore>,
        ready: Arc<Readiness>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(self.collect.interval);
        // A slow cycle delays the next one instead of bursting to catch up.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            let exposition = self.run_cycle(now_ms()).await;
            store.publish(&self.cluster.name, exposition);
            if first {
                ready.mark();
                first = false;
            }
        }
    }

    /// One full cycle: refresh discovery if due, gather, and render.
    pub async fn run_cycle(&mut self, now_ms: i64) -> Exposition {
        let started = Instant::now();
        let deadline = started + self.collect.budget;
        let mut health = CycleHealth::default();
        self.cycle += 1;

        let discovery_started = Instant::now();
        if self
            .discovery
            .refreshed
            .is_none_or(|t| t.elapsed() >= self.collect.discovery_interval)
        {
            self.refresh_discovery(deadline, &mut health).await;
        }
        health
            .duration
            .insert("discovery", discovery_started.elapsed().as_secs_f64());

        let mut out = Exposition::new();
        if self.discovery.nodes.is_empty() {
            health.failed.insert("broker");
            health.failed.insert("topic");
            health.failed.insert("consumer");
        } else {
            self.gather_and_render(now_ms, deadline, &mut health, &mut out)
                .await;
        }
        self.render_health(now_ms, &health, &mut out);
        tracing::debug!(
            message = "Collection cycle done.",
            cluster = %self.cluster.name,
            cycle = self.cycle,
            seconds = started.elapsed().as_secs_f64(),
            failed = ?health.failed,
        );
        out
    }

    fn error(
        &mut self,
        health: &mut CycleHealth,
        collector: &'static str,
        call: &str,
        target: &str,
        error: &Error,
    ) {
        health.failed.insert(collector);
        *self.errors.entry((collector, error.kind())).or_default() += 1;
        tracing::debug!(message = "Admin call failed.", cluster = %self.cluster.name, collector, call, target, %error);
    }

    async fn refresh_discovery(&mut self, deadline: Instant, health: &mut CycleHealth) {
        let mut cluster_info = None;
        for namesrv in &self.cluster.namesrv.clone() {
            match bounded(deadline, self.admin.cluster_info(namesrv)).await {
                Ok(info) => {
                    cluster_info = Some(info);
                    break;
                }
                Err(e) => self.error(health, "discovery", "cluster_info", namesrv, &e),
            }
        }
        let Some(info) = cluster_info else {
            tracing::warn!(message = "No name server answered; keeping the previous discovery.", cluster = %self.cluster.name);
            return;
        };
        let now = Instant::now();
        for data in info
            .broker_addr_table
            .values()
            .filter(|d| d.cluster == self.cluster.name || info.cluster_addr_table.len() == 1)
        {
            for (id, addr) in &data.broker_addrs {
                // Re-keying by address: a restarted broker may change port.
                self.discovery.nodes.retain(|n, _| {
                    !(n.broker == data.broker_name && n.id == *id && n.addr != *addr)
                });
                self.discovery.nodes.insert(
                    Node {
                        broker: data.broker_name.clone(),
                        id: *id,
                        addr: addr.clone(),
                    },
                    now,
                );
            }
        }
        self.discovery
            .nodes
            .retain(|_, seen| seen.elapsed() < FORGET_VANISHED_BROKER);

        let nodes: Vec<Node> = self.discovery.nodes.keys().cloned().collect();
        let configs = self
            .join(nodes.iter().map(|n| {
                let (admin, addr) = (self.admin.clone(), n.addr.clone());
                async move { bounded(deadline, admin.broker_config(&addr)).await }
            }))
            .await;
        for (node, result) in nodes.iter().zip(configs) {
            match result {
                Ok(config) => {
                    self.discovery.config.insert(node.addr.clone(), config);
                }
                Err(e) => self.error(health, "discovery", "broker_config", &node.addr, &e),
            }
        }
        let masters: Vec<Node> = nodes.iter().filter(|n| n.id == 0).cloned().collect();
        let topic_configs = self
            .join(masters.iter().map(|n| {
                let (admin, addr) = (self.admin.clone(), n.addr.clone());
                async move {
                    let topics = bounded(deadline, admin.all_topic_config(&addr)).await;
                    let groups = bounded(deadline, admin.subscription_groups(&addr)).await;
                    (topics, groups)
                }
            }))
            .await;
        let mut groups = BTreeSet::new();
        for (node, (topics, group_table)) in masters.iter().zip(topic_configs) {
            match topics {
                Ok(table) => {
                    let topics = table
                        .into_values()
                        .map(|t| (t.topic_name, t.read_queue_nums.max(t.write_queue_nums)))
                        .collect();
                    self.discovery.topics.insert(node.addr.clone(), topics);
                }
                // An empty broker answers "No topic in this broker".
                Err(Error::Remote {
                    code: response::SYSTEM_ERROR,
                    ..
                }) => {
                    self.discovery
                        .topics
                        .insert(node.addr.clone(), BTreeMap::new());
                }
                Err(e) => self.error(health, "discovery", "all_topic_config", &node.addr, &e),
            }
            match group_table {
                Ok(table) => groups.extend(table.into_keys().filter(|g| !is_builtin_group(g))),
                Err(Error::Remote {
                    code: response::SYSTEM_ERROR,
                    ..
                }) => {}
                Err(e) => self.error(health, "discovery", "subscription_groups", &node.addr, &e),
            }
        }
        self.discovery.groups = groups;
        self.discovery.refreshed = Some(Instant::now());
    }

    async fn gather_and_render(
        &mut self,
        now_ms: i64,
        deadline: Instant,
        health: &mut CycleHealth,
        out: &mut Exposition,
    ) {
        let nodes: Vec<Node> = self.discovery.nodes.keys().cloned().collect();
        let masters: Vec<Node> = nodes.iter().filter(|n| n.id == 0).cloned().collect();
        let broker_started = Instant::now();

        // Phase 1: runtime of every broker; HA and consume stats of masters.
        let runtimes = self
            .join(nodes.iter().map(|n| {
                let (admin, addr) = (self.admin.clone(), n.addr.clone());
                async move { bounded(deadline, admin.runtime_info(&addr)).await }
            }))
            .await;
        let master_facts = self
            .join(masters.iter().map(|n| {
                let (admin, addr, heavy) = (self.admin.clone(), n.addr.clone(), self.heavy.clone());
                async move {
                    let ha = bounded(deadline, admin.ha_status(&addr)).await;
                    // One broker's consume stats can be megabytes: parse one at a time.
                    let _one_at_a_time = heavy.acquire_owned().await;
                    let stats = bounded(deadline, admin.broker_consume_stats(&addr)).await;
                    (ha, stats)
                }
            }))
            .await;

        let mut runtime_by_addr: BTreeMap<String, RuntimeInfo> = BTreeMap::new();
        for (node, result) in nodes.iter().zip(runtimes) {
            match result {
                Ok(runtime) => {
                    runtime_by_addr.insert(node.addr.clone(), runtime);
                }
                Err(e) => self.error(health, "broker", "runtime_info", &node.addr, &e),
            }
        }
        let mut ha_by_addr = BTreeMap::new();
        let mut consume_by_master: BTreeMap<String, Vec<(String, ConsumeStats)>> = BTreeMap::new();
        for (node, (ha, stats)) in masters.iter().zip(master_facts) {
            match ha {
                Ok(ha) => {
                    ha_by_addr.insert(node.addr.clone(), ha);
                }
                Err(e) => self.error(health, "broker", "ha_status", &node.addr, &e),
            }
            match stats {
                Ok(stats) => {
                    consume_by_master.insert(node.addr.clone(), stats);
                }
                Err(e) => self.error(health, "consumer", "broker_consume_stats", &node.addr, &e),
            }
        }
        self.render_brokers(&nodes, &runtime_by_addr, &ha_by_addr, out);
        health
            .duration
            .insert("broker", broker_started.elapsed().as_secs_f64());

        // Phase 2: topic stats where consume stats did not answer, consumer
        // connections, and pulls to date lag.
        let topic_started = Instant::now();
        let mut queues: BTreeMap<MessageQueue, i64> = BTreeMap::new(); // max offsets
        let mut covered: BTreeSet<(String, String)> = BTreeSet::new(); // (master addr, topic)
        for (addr, groups) in &consume_by_master {
            for (_, stats) in groups {
                for (queue, offsets) in &stats.offsets {
                    queues.insert(queue.clone(), offsets.broker_offset);
                    covered.insert((addr.clone(), queue.topic.clone()));
                }
            }
        }
        let slice = self.cycle % self.collect.min_offset_refresh_cycles;
        let mut wanted: Vec<(Node, String)> = Vec::new();
        for master in &masters {
            let Some(topics) = self.discovery.topics.get(&master.addr) else {
                continue;
            };
            for topic in topics
                .keys()
                .filter(|t| self.collect.topics.allows(t) || t.starts_with("%DLQ%"))
            {
                let is_covered = covered.contains(&(master.addr.clone(), topic.clone()));
                let refresh = stable_hash(topic) % self.collect.min_offset_refresh_cycles == slice;
                // Masters that failed consume stats: fall back to topic stats for everything.
                let stats_failed = !consume_by_master.contains_key(&master.addr);
                if !is_covered || refresh || stats_failed {
                    wanted.push((master.clone(), topic.clone()));
                }
            }
        }
        let stats = self
            .join(wanted.iter().map(|(node, topic)| {
                let (admin, addr, topic) = (self.admin.clone(), node.addr.clone(), topic.clone());
                async move { bounded(deadline, admin.topic_stats(&addr, &topic)).await }
            }))
            .await;
        let mut dlq_depth: BTreeMap<String, i64> = BTreeMap::new();
        // Brokers whose every topic was read this cycle: only their missing
        // queues are really gone (see State::retain_queues).
        let mut answered: BTreeSet<String> = masters
            .iter()
            .filter(|m| {
                consume_by_master.contains_key(&m.addr) && runtime_by_addr.contains_key(&m.addr)
            })
            .map(|m| m.broker.clone())
            .collect();
        for ((node, topic), result) in wanted.iter().zip(stats) {
            match result {
                Ok(table) => {
                    for (
                        queue,
                        TopicOffset {
                            min_offset,
                            max_offset,
                            ..
                        },
                    ) in table
                    {
                        self.state.observe_min_offset(&queue, min_offset);
                        if let Some(group) = topic.strip_prefix("%DLQ%") {
                            *dlq_depth.entry(group.to_string()).or_default() +=
                                (max_offset - min_offset).max(0);
                        }
                        queues.insert(queue, max_offset);
                    }
                }
                // Deleted since discovery: it simply has no series this cycle.
                Err(e) if e.remote_code() == Some(response::TOPIC_NOT_EXIST) => {}
                Err(e) => {
                    answered.remove(&node.broker);
                    self.error(health, "topic", "topic_stats", &node.addr, &e);
                }
            }
        }
        for (queue, max) in &queues {
            self.state.observe_max_offset(queue, *max, now_ms);
        }
        self.state.retain_queues(queues.keys(), &answered);
        self.render_topics(&queues, out);
        health
            .duration
            .insert("topic", topic_started.elapsed().as_secs_f64());

        let consumer_started = Instant::now();
        self.consumers(
            &masters,
            &consume_by_master,
            dlq_depth,
            now_ms,
            deadline,
            health,
            out,
        )
        .await;
        health
            .duration
            .insert("consumer", consumer_started.elapsed().as_secs_f64());
    }

    #[allow(clippy::too_many_arguments)]
    async fn consumers(
        &mut self,
        masters: &[Node],
        consume_by_master: &BTreeMap<String, Vec<(String, ConsumeStats)>>,
        dlq_depth: BTreeMap<String, i64>,
        now_ms: i64,
        deadline: Instant,
        health: &mut CycleHealth,
        out: &mut Exposition,
    ) {
        // (group, master addr, stats) for every group the consume stats name.
        let mut per_group: BTreeMap<String, Vec<(String, &ConsumeStats)>> = BTreeMap::new();
        for (addr, groups) in consume_by_master {
            for (group, stats) in groups {
                if !is_builtin_group(group) && self.collect.groups.allows(group) {
                    per_group
                        .entry(group.clone())
                        .or_default()
                        .push((addr.clone(), stats));
                }
            }
        }
        for group in self
            .discovery
            .groups
            .iter()
            .filter(|g| self.collect.groups.allows(g))
        {
            per_group.entry(group.clone()).or_default();
        }
        for group in dlq_depth.keys().filter(|g| self.collect.groups.allows(g)) {
            per_group.entry(group.clone()).or_default();
        }

        // Consumer connections: one master per group. A consumer heartbeats to
        // every broker of its subscriptions, so any master holding the group's
        // offsets lists all its instances. Which master rotates per cycle, so
        // one that stopped answering is not asked forever.
        let mut asks: Vec<(String, String)> = Vec::new();
        for (group, holders) in &per_group {
            let with_offsets: Vec<&String> = holders
                .iter()
                .filter(|(_, s)| !s.offsets.is_empty())
                .map(|(a, _)| a)
                .collect();
            let pick = if with_offsets.is_empty() {
                masters
                    .get(self.cycle as usize % masters.len().max(1))
                    .map(|m| &m.addr)
            } else {
                Some(with_offsets[self.cycle as usize % with_offsets.len()])
            };
            if let Some(addr) = pick {
                asks.push((group.clone(), addr.clone()));
            }
        }
        let answers = self
            .join(asks.iter().map(|(group, addr)| {
                let (admin, group, addr) = (self.admin.clone(), group.clone(), addr.clone());
                async move { bounded(deadline, admin.consumer_connections(&addr, &group)).await }
            }))
            .await;
        let mut clients: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut broadcast: BTreeSet<String> = BTreeSet::new();
        for ((group, addr), answer) in asks.iter().zip(answers) {
            let entry = clients.entry(group.clone()).or_default();
            match answer {
                Ok(Some(ConsumerConnection {
                    connection_set,
                    message_model,
                    ..
                })) => {
                    entry.extend(connection_set.into_iter().map(|c| c.client_id));
                    if message_model.as_deref() == Some("BROADCASTING") {
                        broadcast.insert(group.clone());
                    }
                }
                Ok(None) => {}
                Err(e) => self.error(health, "consumer", "consumer_connections", addr, &e),
            }
        }

        // Lag in seconds: date each lagging queue's oldest unconsumed message.
        let mut undated: Vec<(String, MessageQueue, i64)> = Vec::new();
        for holders in per_group.values() {
            for (addr, stats) in holders {
                for (queue, o) in &stats.offsets {
                    if o.lag() > 0 && self.state.store_time(queue, o.consumer_offset).is_none() {
                        undated.push((addr.clone(), queue.clone(), o.consumer_offset));
                    }
                }
            }
        }
        undated.sort();
        undated.dedup();
        undated.truncate(self.collect.lag_pulls_per_cycle);
        let pulls = self
            .join(
                undated.iter().map(|(addr, queue, offset)| {
                    let (admin, addr, queue, offset) =
                        (self.admin.clone(), addr.clone(), queue.clone(), *offset);
                    async move {
                        bounded(deadline, admin.pull(&addr, PULL_GROUP, &queue, offset, 1)).await
                    }
                }),
            )
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
                        self.state
                            .remember_store_time(queue, *offset, m.store_timestamp);
                    }
                }
                Ok(_) => {}
                Err(e) => self.error(health, "consumer", "pull", addr, &e),
            }
        }

        let cluster = self.cluster.name.clone();
        let by_queue = self.collect.granularity == Granularity::Queue;
        for (group, holders) in &per_group {
            let retry_topic = format!("%RETRY%{group}");
            let consumers = clients.get(group).map_or(0, BTreeSet::len);
            out.sample(
                "rocketmq_consumer_group_consumers",
                &[("rocketmq_cluster", &cluster), ("group", group)],
                consumers as f64,
            );
            out.sample(
                "rocketmq_consumer_group_dlq_messages",
                &[("rocketmq_cluster", &cluster), ("group", group)],
                dlq_depth.get(group).copied().unwrap_or(0) as f64,
            );
            let mut retry = 0;
            // (topic, broker) → (offset sum, lag sum, max age ms, every lagging queue dated)
            let mut per_topic: BTreeMap<(String, String), (i64, i64, i64, bool)> = BTreeMap::new();
            for (_, stats) in holders {
                for (queue, o) in &stats.offsets {
                    if let Some(min) = self.state.min_offset(queue) {
                        self.state
                            .observe_expiry(group, queue, o.consumer_offset, min);
                    }
                    if queue.topic == retry_topic {
                        retry += o.lag();
                        continue;
                    }
                    if !self.collect.topics.allows(&queue.topic) {
                        continue;
                    }
                    let entry = per_topic
                        .entry((queue.topic.clone(), queue.broker_name.clone()))
                        .or_insert((0, 0, 0, true));
                    entry.0 += o.consumer_offset;
                    entry.1 += o.lag();
                    if o.lag() > 0 {
                        match self.state.store_time(queue, o.consumer_offset) {
                            Some(stored) => entry.2 = entry.2.max(now_ms - stored),
                            None => entry.3 = false,
                        }
                    } else {
                        self.state.forget_pulled_below(queue, o.consumer_offset);
                    }
                    if by_queue {
                        let id = queue.queue_id.to_string();
                        let labels = [
                            ("rocketmq_cluster", cluster.as_str()),
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
                        if !broadcast.contains(group) {
                            out.sample(
                                "rocketmq_consumer_group_lag_messages",
                                &labels,
                                o.lag() as f64,
                            );
                        }
                    }
                }
            }
            out.sample(
                "rocketmq_consumer_group_retry_messages",
                &[("rocketmq_cluster", &cluster), ("group", group)],
                retry as f64,
            );
            for ((topic, broker), (offset, lag, age_ms, dated)) in per_topic {
                let labels = [
                    ("rocketmq_cluster", cluster.as_str()),
                    ("group", group),
                    ("topic", &topic),
                    ("broker", &broker),
                ];
                if !by_queue {
                    out.sample("rocketmq_consumer_group_offset", &labels, offset as f64);
                }
                if broadcast.contains(group) {
                    continue;
                }
                if !by_queue {
                    out.sample("rocketmq_consumer_group_lag_messages", &labels, lag as f64);
                }
                // Never a guessed age: only when every lagging queue is dated.
                if dated {
                    out.sample(
                        "rocketmq_consumer_group_lag_seconds",
                        &labels,
                        age_ms.max(0) as f64 / 1000.0,
                    );
                }
            }
        }
        for (group, topic, broker, count) in self.state.expired() {
            if self.collect.groups.allows(group) && self.collect.topics.allows(topic) {
                let labels = [
                    ("rocketmq_cluster", cluster.as_str()),
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

    fn render_brokers(
        &self,
        nodes: &[Node],
        runtime_by_addr: &BTreeMap<String, RuntimeInfo>,
        ha_by_addr: &BTreeMap<String, HaStatus>,
        out: &mut Exposition,
    ) {
        let cluster = self.cluster.name.as_str();
        for node in nodes {
            let id = node.id.to_string();
            let labels = [
                ("rocketmq_cluster", cluster),
                ("broker", node.broker.as_str()),
                ("broker_id", id.as_str()),
            ];
            let runtime = runtime_by_addr.get(&node.addr);
            out.sample(
                "rocketmq_broker_up",
                &labels,
                if runtime.is_some() { 1.0 } else { 0.0 },
            );
            let Some(runtime) = runtime else { continue };
            let config = self.discovery.config.get(&node.addr);
            let role = config
                .and_then(|c| c.get("brokerRole"))
                .or_else(|| runtime.get("brokerRole"))
                .unwrap_or("");
            let flush = config.and_then(|c| c.get("flushDiskType")).unwrap_or("");
            out.sample(
                "rocketmq_broker_info",
                &[
                    labels[0],
                    labels[1],
                    labels[2],
                    ("version", runtime.version().unwrap_or("")),
                    ("role", role),
                    ("flush_disk_type", flush),
                    ("addr", &node.addr),
                ],
                1.0,
            );
            let mut int = |name: &'static str, key: &str, scale: f64| {
                if let Ok(Some(v)) = runtime.int(key) {
                    out.sample(name, &labels, v as f64 / scale);
                }
            };
            int(
                "rocketmq_broker_boot_timestamp_seconds",
                "bootTimestamp",
                1000.0,
            );
            int(
                "rocketmq_broker_commitlog_max_offset_bytes",
                "commitLogMaxOffset",
                1.0,
            );
            int(
                "rocketmq_broker_commitlog_min_offset_bytes",
                "commitLogMinOffset",
                1.0,
            );
            int(
                "rocketmq_broker_dispatch_lag_bytes",
                "dispatchBehindBytes",
                1.0,
            );
            // -1 means the broker could not read its disk: no value, not a ratio.
            if let Ok(Some(v)) = runtime.decimal("commitLogDiskRatio")
                && v >= 0.0
            {
                out.sample("rocketmq_broker_commitlog_disk_used_ratio", &labels, v);
            }
            if let Ok(Some(v)) = runtime.flush_lag_bytes() {
                out.sample("rocketmq_broker_flush_lag_bytes", &labels, v as f64);
            }
            for (name, key) in [
                ("rocketmq_broker_put_messages_per_second", "putTps"),
                ("rocketmq_broker_get_messages_per_second", "getTotalTps"),
            ] {
                if let Ok(Some(tps)) = runtime.tps(key)
                    && let Some(rate) = tps.last_60s.or(tps.last_10s)
                {
                    out.sample(name, &labels, rate);
                }
            }
            if node.id != 0 {
                continue;
            }
            let slaves: Vec<&Node> = nodes
                .iter()
                .filter(|n| n.broker == node.broker && n.id != 0)
                .collect();
            let facts: Vec<SlaveFacts<'_>> = slaves
                .iter()
                .map(|s| SlaveFacts {
                    broker_id: s.id,
                    addr: &s.addr,
                    max_offset: runtime_by_addr
                        .get(&s.addr)
                        .and_then(|r| r.int("commitLogMaxOffset").ok().flatten()),
                })
                .collect();
            let master_max = runtime.int("commitLogMaxOffset").ok().flatten();
            let replicas = posture::replicas(master_max, &facts, ha_by_addr.get(&node.addr));
            for replica in &replicas {
                let slave_id = replica.broker_id.to_string();
                let slave_labels = [labels[0], labels[1], ("broker_id", slave_id.as_str())];
                if let Some(lag) = replica.lag_bytes {
                    out.sample(
                        "rocketmq_broker_replication_lag_bytes",
                        &slave_labels,
                        lag as f64,
                    );
                }
                if let Some(in_sync) = replica.in_sync {
                    out.sample(
                        "rocketmq_broker_replication_in_sync",
                        &slave_labels,
                        if in_sync { 1.0 } else { 0.0 },
                    );
                }
            }
            let role = (!role.is_empty()).then_some(role);
            let flush = (!flush.is_empty()).then_some(flush);
            for reason in posture::durability_risks(role, flush, replicas.len()) {
                out.sample(
                    "rocketmq_broker_durability_risk",
                    &[labels[0], labels[1], labels[2], ("reason", reason)],
                    1.0,
                );
            }
        }
    }

    fn render_topics(&self, queues: &BTreeMap<MessageQueue, i64>, out: &mut Exposition) {
        let cluster = self.cluster.name.as_str();
        let by_queue = self.collect.granularity == Granularity::Queue;
        let mut sums: BTreeMap<(&str, &str), (i64, Option<i64>)> = BTreeMap::new();
        for (queue, max) in queues
            .iter()
            .filter(|(q, _)| self.collect.topics.allows(&q.topic))
        {
            let min = self.state.min_offset(queue);
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
                // A topic's min sum is known only if every queue's is.
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
        for (topic, broker, count) in self.state.regressions() {
            if self.collect.topics.allows(topic) {
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

    fn render_health(&mut self, now_ms: i64, health: &CycleHealth, out: &mut Exposition) {
        let cluster = self.cluster.name.as_str();
        for collector in COLLECTORS {
            let labels = [("rocketmq_cluster", cluster), ("collector", collector)];
            let ok = !health.failed.contains(collector);
            if ok {
                self.last_success.insert(collector, now_ms as f64 / 1000.0);
            }
            out.sample(
                "mqaudit_collector_success",
                &labels,
                if ok { 1.0 } else { 0.0 },
            );
            out.sample(
                "mqaudit_collector_duration_seconds",
                &labels,
                health.duration.get(collector).copied().unwrap_or(0.0),
            );
            if let Some(t) = self.last_success.get(collector) {
                out.sample(
                    "mqaudit_collector_last_success_timestamp_seconds",
                    &labels,
                    *t,
                );
            }
            for kind in ["timeout", "io", "protocol", "remote"] {
                let count = self.errors.get(&(collector, kind)).copied().unwrap_or(0);
                out.sample(
                    "mqaudit_collector_errors_total",
                    &[labels[0], labels[1], ("error_type", kind)],
                    count as f64,
                );
            }
        }
    }

    /// Run futures under the cluster's concurrency limit; results in order.
    async fn join<F, T>(&self, futures: impl Iterator<Item = F>) -> Vec<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        crate::concurrent::join_limited(&self.limiter, futures).await
    }
}

/// Run an admin call, giving up at the cycle deadline.
async fn bounded<T>(
    deadline: Instant,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            addr: "(cycle)".to_string(),
            what: "the collection cycle's budget".to_string(),
            after: Duration::ZERO,
        }),
    }
}

/// A hash stable across runs (FNV-1a), to spread min-offset refreshes.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Wall-clock now in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
