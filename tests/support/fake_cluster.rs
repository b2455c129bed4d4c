//! FakeCluster: a **protocol fake** of a whole RocketMQ cluster (one name
//! server, N master brokers) for scale no real test cluster can reach on a
//! 2-core machine: thousands of topics and groups, with a fixed added latency
//! per call. Bodies are written in Java's fastjson dialect (bare numeric keys,
//! `MessageQueue` object keys), as a Java broker would send them.
//!
//! The layout is deterministic from a [`Spec`]:
//! * topic `t` lives on brokers `t % B .. t % B + brokers_per_topic`, with
//!   `queues` queues on each;
//! * group `g` consumes topics `g * topics_per_group ..` (only the first
//!   `consumed_topics` topics have a consumer), and has a `%RETRY%` topic
//!   with one queue on each broker of its first topic;
//! * the first `dlq_groups` groups have a `%DLQ%` topic on their first broker.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqaudit::body::message::{MessageRecord, encode_record};
use mqaudit::remoting::Command;

use super::fake::{Action, FakePeer};

/// The simulated cluster's shape.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Master brokers.
    pub brokers: usize,
    /// Application topics.
    pub topics: usize,
    /// Queues per topic per broker.
    pub queues: i32,
    /// Brokers each topic is spread over.
    pub brokers_per_topic: usize,
    /// Consumer groups.
    pub groups: usize,
    /// Topics each group consumes.
    pub topics_per_group: usize,
    /// Groups with a non-empty DLQ.
    pub dlq_groups: usize,
    /// The first this many groups consume in BROADCASTING mode.
    pub broadcast_groups: usize,
    /// Added to every response.
    pub latency: Duration,
}

impl Spec {
    /// The benchmark cluster of the exporter issue.
    pub fn large() -> Spec {
        Spec {
            brokers: 4,
            topics: 10_000,
            queues: 8,
            brokers_per_topic: 2,
            groups: 2_000,
            topics_per_group: 4,
            dlq_groups: 200,
            broadcast_groups: 0,
            latency: Duration::from_millis(1),
        }
    }

    /// A 100-topic cluster.
    pub fn small() -> Spec {
        Spec {
            brokers: 2,
            topics: 100,
            queues: 8,
            brokers_per_topic: 1,
            groups: 20,
            topics_per_group: 4,
            dlq_groups: 2,
            broadcast_groups: 0,
            latency: Duration::from_millis(1),
        }
    }

    /// Topics that have a consumer group.
    pub fn consumed_topics(&self) -> usize {
        (self.groups * self.topics_per_group).min(self.topics)
    }

    fn topic_brokers(&self, t: usize) -> Vec<usize> {
        (0..self.brokers_per_topic)
            .map(|i| (t + i) % self.brokers)
            .collect()
    }

    fn group_topics(&self, g: usize) -> Vec<usize> {
        (0..self.topics_per_group)
            .map(|j| g * self.topics_per_group + j)
            .filter(|&t| t < self.topics)
            .collect()
    }

    /// Σ over groups of the brokers holding the group's offsets.
    pub fn group_broker_pairs(&self) -> u64 {
        (0..self.groups)
            .map(|g| {
                let brokers: std::collections::BTreeSet<usize> = self
                    .group_topics(g)
                    .into_iter()
                    .flat_map(|t| self.topic_brokers(t))
                    .collect();
                brokers.len() as u64
            })
            .sum()
    }

    /// Every topic name with the brokers and queue count it has.
    pub fn all_topics(&self) -> Vec<(String, Vec<usize>, i32)> {
        let mut out: Vec<(String, Vec<usize>, i32)> = (0..self.topics)
            .map(|t| (format!("topic-{t}"), self.topic_brokers(t), self.queues))
            .collect();
        for g in 0..self.groups {
            if let Some(&first) = self.group_topics(g).first() {
                out.push((format!("%RETRY%group-{g}"), self.topic_brokers(first), 1));
            }
        }
        for g in 0..self.dlq_groups.min(self.groups) {
            if let Some(&first) = self.group_topics(g).first() {
                out.push((
                    format!("%DLQ%group-{g}"),
                    vec![self.topic_brokers(first)[0]],
                    1,
                ));
            }
        }
        out
    }

    /// The official rocketmq-exporter's admin calls for one collection of
    /// this cluster, by its plan (field survey §1.1):
    /// per topic `4 + 2·B_t + G_t·(2 + Q_t + 3·B_t)`, where `B_t` is the
    /// topic's brokers, `Q_t` its queues over all brokers and `G_t` the groups
    /// consuming it (retry and DLQ topics are topics to it too).
    pub fn official_exporter_calls(&self) -> u64 {
        let mut consumers: BTreeMap<String, u64> = BTreeMap::new();
        for g in 0..self.groups {
            for t in self.group_topics(g) {
                *consumers.entry(format!("topic-{t}")).or_default() += 1;
            }
            // A group's retry topic is consumed by that group.
            *consumers.entry(format!("%RETRY%group-{g}")).or_default() += 1;
        }
        self.all_topics()
            .iter()
            .map(|(name, brokers, queues)| {
                let b = brokers.len() as u64;
                let q = b * *queues as u64;
                let g = consumers.get(name).copied().unwrap_or(0);
                4 + 2 * b + g * (2 + q + 3 * b)
            })
            .sum()
    }

    fn max_offset(topic: &str, queue: i32) -> i64 {
        let h = topic
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        1_000 + ((h as i64 + i64::from(queue) * 13) % 1_000).abs()
    }

    fn consumer_offset(topic: &str, queue: i32, group: usize) -> i64 {
        Spec::max_offset(topic, queue) - (group % 5) as i64
    }
}

/// A running fake cluster.
pub struct FakeCluster {
    /// Name-server address.
    pub namesrv: String,
    /// Broker addresses, index = broker number.
    pub brokers: Vec<String>,
    peers: Vec<FakePeer>,
}

/// One broker's pre-built answers.
struct BrokerAnswers {
    name: String,
    topic_config: Bytes,
    groups: Bytes,
    consume_stats: Bytes,
    runtime: Bytes,
    /// topic → TopicStatsTable body.
    topic_stats: BTreeMap<String, Bytes>,
    /// Groups with offsets on this broker.
    online: Vec<String>,
}

impl FakeCluster {
    /// Build every body and start the peers.
    pub async fn start(spec: Spec) -> FakeCluster {
        let topics = spec.all_topics();
        let mut brokers_answers: Vec<BrokerAnswers> = (0..spec.brokers)
            .map(|b| BrokerAnswers {
                name: format!("broker-{b}"),
                topic_config: Bytes::new(),
                groups: Bytes::new(),
                consume_stats: Bytes::new(),
                runtime: Bytes::new(),
                topic_stats: BTreeMap::new(),
                online: Vec::new(),
            })
            .collect();
        for (b, answers) in brokers_answers.iter_mut().enumerate() {
            let mine: Vec<&(String, Vec<usize>, i32)> =
                topics.iter().filter(|(_, bs, _)| bs.contains(&b)).collect();
            let mut text = String::from(
                "{\"dataVersion\":{\"counter\":1,\"timestamp\":0},\"topicConfigTable\":{",
            );
            for (i, (name, _, queues)) in mine.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(
                    text,
                    "{sep}\"{name}\":{{\"order\":false,\"perm\":6,\"readQueueNums\":{queues},\"topicFilterType\":\"SINGLE_TAG\",\"topicName\":\"{name}\",\"topicSysFlag\":0,\"writeQueueNums\":{queues}}}"
                );
                let mut stats = String::from("{\"offsetTable\":{");
                for q in 0..*queues {
                    let sep = if q == 0 { "" } else { "," };
                    let max = Spec::max_offset(name, q);
                    let min = if name.starts_with("%DLQ%") {
                        max - 3
                    } else {
                        0
                    };
                    let _ = write!(
                        stats,
                        "{sep}{{\"brokerName\":\"{}\",\"queueId\":{q},\"topic\":\"{name}\"}}:{{\"lastUpdateTimestamp\":0,\"maxOffset\":{max},\"minOffset\":{min}}}",
                        answers.name
                    );
                }
                stats.push_str("}}");
                answers.topic_stats.insert(name.clone(), Bytes::from(stats));
            }
            text.push_str("}}");
            answers.topic_config = Bytes::from(text);

            let mut groups = String::from(
                "{\"dataVersion\":{\"counter\":1,\"timestamp\":0},\"subscriptionGroupTable\":{",
            );
            let mut stats = String::from("{\"brokerAddr\":\"fake\",\"consumeStatsList\":[");
            let mut first_group = true;
            for g in 0..spec.groups {
                let consumed: Vec<usize> = spec
                    .group_topics(g)
                    .into_iter()
                    .filter(|&t| spec.topic_brokers(t).contains(&b))
                    .collect();
                let retry_here = spec
                    .group_topics(g)
                    .first()
                    .is_some_and(|&t| spec.topic_brokers(t).contains(&b));
                if consumed.is_empty() && !retry_here {
                    continue;
                }
                let group = format!("group-{g}");
                let sep = if first_group { "" } else { "," };
                first_group = false;
                let _ = write!(
                    groups,
                    "{sep}\"{group}\":{{\"brokerId\":0,\"consumeBroadcastEnable\":true,\"consumeEnable\":true,\"consumeFromMinEnable\":true,\"groupName\":\"{group}\",\"retryMaxTimes\":16,\"retryQueueNums\":1}}"
                );
                let _ = write!(stats, "{sep}{{\"{group}\":[");
                let mut queues_written = 0;
                let mut entries = String::new();
                let mut add = |topic: &str, queues: i32| {
                    for q in 0..queues {
                        let sep = if queues_written == 0 { "" } else { "," };
                        queues_written += 1;
                        let _ = write!(
                            entries,
                            "{sep}{{\"brokerName\":\"broker-{b}\",\"queueId\":{q},\"topic\":\"{topic}\"}}:{{\"brokerOffset\":{},\"consumerOffset\":{},\"lastTimestamp\":0}}",
                            Spec::max_offset(topic, q),
                            Spec::consumer_offset(topic, q, g)
                        );
                    }
                };
                for t in &consumed {
                    add(&format!("topic-{t}"), spec.queues);
                }
                if retry_here {
                    add(&format!("%RETRY%{group}"), 1);
                }
                let _ = write!(
                    stats,
                    "{{\"consumeTps\":0.0,\"offsetTable\":{{{entries}}}}}]}}"
                );
                answers.online.push(group);
            }
            groups.push_str("}}");
            stats.push_str("],\"totalDiff\":0}");
            answers.groups = Bytes::from(groups);
            answers.consume_stats = Bytes::from(stats);
            answers.runtime = Bytes::from(
                "{\"table\":{\"bootTimestamp\":\"1700000000000\",\"brokerVersionDesc\":\"V4_9_8\",\"brokerVersion\":\"409\",\"commitLogMaxOffset\":\"1073741824\",\"commitLogMinOffset\":\"0\",\"commitLogDiskRatio\":\"0.42\",\"remainHowManyDataToFlush\":\"1.5 MiB\",\"dispatchBehindBytes\":\"0\",\"putTps\":\"120.5 110.0 100.0\",\"getTotalTps\":\"300.0 290.0 280.0\"}}",
            );
        }

        let latency = spec.latency;
        let broadcast: Arc<Vec<String>> = Arc::new(
            (0..spec.broadcast_groups)
                .map(|g| format!("group-{g}"))
                .collect(),
        );
        let mut peers = Vec::new();
        let mut addrs = Vec::new();
        for answers in brokers_answers {
            let answers = Arc::new(answers);
            let broadcast = broadcast.clone();
            let peer = FakePeer::start(move |req| {
                let reply = |body: Bytes| Action::ReplyAfter(latency, super::fake::ok(body));
                match req.code {
                    21 => reply(answers.topic_config.clone()),
                    201 => reply(answers.groups.clone()),
                    317 => reply(answers.consume_stats.clone()),
                    28 => reply(answers.runtime.clone()),
                    26 => reply(Bytes::from_static(b"brokerRole=ASYNC_MASTER\nflushDiskType=ASYNC_FLUSH\nbrokerName=fake\n")),
                    907 => reply(Bytes::from_static(b"{\"haConnectionInfo\":[],\"inSyncSlaveNums\":0,\"master\":true,\"masterCommitLogMaxOffset\":1073741824}")),
                    202 => match req.ext("topic").and_then(|t| answers.topic_stats.get(t)) {
                        Some(body) => reply(body.clone()),
                        None => Action::ReplyAfter(latency, super::fake::fail(17, "topic not exist")),
                    },
                    203 => {
                        let group = req.ext("consumerGroup").unwrap_or("");
                        if answers.online.iter().any(|g| g == group) {
                            let model = if broadcast.iter().any(|g| g == group) { "BROADCASTING" } else { "CLUSTERING" };
                            reply(Bytes::from(format!(
                                "{{\"connectionSet\":[{{\"clientAddr\":\"10.0.0.1:5000\",\"clientId\":\"10.0.0.1@{group}\",\"language\":\"JAVA\",\"version\":409}}],\"consumeType\":\"CONSUME_PASSIVELY\",\"messageModel\":\"{model}\",\"subscriptionTable\":{{}}}}"
                            )))
                        } else {
                            Action::ReplyAfter(latency, super::fake::fail(206, "not online"))
                        }
                    }
                    11 => {
                        let offset: i64 = req.ext("queueOffset").and_then(|o| o.parse().ok()).unwrap_or(0);
                        let record = MessageRecord {
                            queue_id: req.ext("queueId").and_then(|q| q.parse().ok()).unwrap_or(0),
                            queue_offset: offset,
                            commit_log_offset: 0,
                            sys_flag: 0,
                            born_timestamp: 1_700_000_000_000,
                            born_host: SocketAddr::from(([10, 0, 0, 1], 5000)),
                            store_timestamp: 1_700_000_000_000,
                            store_host: SocketAddr::from(([10, 0, 0, 2], 10911)),
                            reconsume_times: 0,
                            prepared_transaction_offset: 0,
                            body: Bytes::from_static(b"x"),
                            topic: req.ext("topic").unwrap_or("").to_string(),
                            properties: BTreeMap::new(),
                        };
                        let mut response = super::fake::ok(encode_record(&record, false));
                        for (k, v) in [("nextBeginOffset", offset + 1), ("minOffset", 0), ("maxOffset", offset + 10), ("suggestWhichBrokerId", 0)] {
                            response.ext_fields.insert(k.to_string(), v.to_string());
                        }
                        Action::ReplyAfter(latency, response)
                    }
                    _ => Action::ReplyAfter(latency, super::fake::fail(3, "not supported by the fake")),
                }
            })
            .await;
            addrs.push(peer.addr.clone());
            peers.push(peer);
        }

        let mut cluster = String::from("{\"brokerAddrTable\":{");
        for (b, addr) in addrs.iter().enumerate() {
            let sep = if b == 0 { "" } else { "," };
            let _ = write!(
                cluster,
                "{sep}\"broker-{b}\":{{\"brokerAddrs\":{{0:\"{addr}\"}},\"brokerName\":\"broker-{b}\",\"cluster\":\"Sim\"}}"
            );
        }
        cluster.push_str("},\"clusterAddrTable\":{\"Sim\":[");
        for b in 0..spec.brokers {
            let sep = if b == 0 { "" } else { "," };
            let _ = write!(cluster, "{sep}\"broker-{b}\"");
        }
        cluster.push_str("]}}");
        let cluster = Bytes::from(cluster);
        let namesrv = FakePeer::start(move |req: &Command| match req.code {
            106 => Action::ReplyAfter(latency, super::fake::ok(cluster.clone())),
            _ => Action::ReplyAfter(latency, super::fake::fail(3, "not supported by the fake")),
        })
        .await;
        FakeCluster {
            namesrv: namesrv.addr.clone(),
            brokers: addrs,
            peers: {
                peers.push(namesrv);
                peers
            },
        }
    }
}
