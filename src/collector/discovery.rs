//! The `discovery` collector: which brokers, topics and groups the cluster
//! has. Cached for `discovery_interval`: cluster info (106, as the namesrv
//! collector just got it from the first name server that answered), and per
//! broker its config (26); per master its topic configs (21) and
//! subscription groups (201). It writes no series of its own; the
//! other collectors read what it learnt.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::{BoxFuture, Collector, Cycle, bounded};
use crate::admin::{BrokerConfig, ClusterInfo, TopicConfig, is_builtin_group};
use crate::metrics::Exposition;

/// A broker that left the name server stays polled (and shown down) this long.
const FORGET_VANISHED_BROKER: Duration = Duration::from_secs(3600);

/// A broker process known from the name server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Node {
    /// Broker (group) name.
    pub broker: String,
    /// Broker id, 0 for the master.
    pub id: u64,
    /// `ip:port`.
    pub addr: String,
}

impl Node {
    /// True for a master.
    pub fn is_master(&self) -> bool {
        self.id == 0
    }
}

/// What discovery learnt; reused until it is `discovery_interval` old.
#[derive(Debug, Default)]
pub(super) struct Discovered {
    refreshed: Option<Instant>,
    /// Every broker, with when the name server last listed it.
    nodes: BTreeMap<Node, Instant>,
    /// Topic → its config (queues, permission, attributes), per master address.
    pub topics: BTreeMap<String, BTreeMap<String, TopicConfig>>,
    /// Broker config per address.
    pub config: BTreeMap<String, BrokerConfig>,
    /// Consumer groups the masters know (built-in groups removed).
    pub groups: BTreeSet<String>,
    /// (group, topic) pairs a master serves in POP mode (5.x).
    pub pop_modes: BTreeSet<(String, String)>,
}

impl Discovered {
    /// Every known broker.
    pub fn nodes(&self) -> Vec<Node> {
        self.nodes.keys().cloned().collect()
    }

    /// Every known master.
    pub fn masters(&self) -> Vec<Node> {
        self.nodes
            .keys()
            .filter(|n| n.is_master())
            .cloned()
            .collect()
    }

    /// True when no broker is known yet.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn is_due(&self, interval: Duration) -> bool {
        self.refreshed.is_none_or(|t| t.elapsed() >= interval)
    }

    /// Take in the name server's brokers of `cluster`; forget those gone
    /// for long.
    fn learn_nodes(&mut self, cluster: &str, info: &ClusterInfo) {
        let now = Instant::now();
        // An address is one process with one identity. A slave promoted in
        // place (same address, now id 0) can stay listed under its old id
        // until its registration expires: the lowest id listed at an
        // address wins, and any other identity known at it is dropped.
        let mut listed: BTreeMap<&str, Node> = BTreeMap::new();
        for data in info
            .broker_addr_table
            .values()
            .filter(|d| d.cluster == cluster || info.cluster_addr_table.len() == 1)
        {
            for (id, addr) in &data.broker_addrs {
                let node = Node {
                    broker: data.broker_name.clone(),
                    id: *id,
                    addr: addr.clone(),
                };
                match listed.get(addr.as_str()) {
                    Some(kept) if kept.id <= node.id => {}
                    _ => {
                        listed.insert(addr.as_str(), node);
                    }
                }
            }
        }
        for node in listed.into_values() {
            // Re-keyed by address (a restarted broker may change port) and
            // by identity (see above).
            self.nodes.retain(|n, _| {
                let same_identity = n.broker == node.broker && n.id == node.id;
                same_identity == (n.addr == node.addr)
            });
            self.nodes.insert(node, now);
        }
        self.nodes
            .retain(|_, seen| seen.elapsed() < FORGET_VANISHED_BROKER);
    }
}

/// The discovery collector.
pub(super) struct Discovery;

impl Collector for Discovery {
    fn name(&self) -> &'static str {
        "discovery"
    }

    fn needs_brokers(&self) -> bool {
        false
    }

    fn collect<'a>(&'a self, cycle: &'a mut Cycle<'_>, _: &'a mut Exposition) -> BoxFuture<'a> {
        Box::pin(async move {
            if cycle.discovered.is_due(cycle.collect.discovery_interval) {
                refresh(cycle).await;
            }
        })
    }
}

async fn refresh(cycle: &mut Cycle<'_>) {
    // The namesrv collector has just asked every name server.
    let info = match (
        cycle.facts.cluster_info.take(),
        cycle.facts.name_servers_failed.take(),
    ) {
        (Some(info), _) => Ok(info),
        (None, Some(e)) => Err(e),
        (None, None) => bounded(cycle.deadline, cycle.cluster.cluster_info()).await,
    };
    match info {
        Ok(info) => cycle.discovered.learn_nodes(cycle.cluster.name(), &info),
        Err(e) => {
            let names = cycle.cluster.name_servers().join(",");
            cycle.failed("discovery", "cluster_info", &names, &e);
            tracing::warn!(message = "No name server answered; keeping the previous discovery.", cluster = %cycle.cluster.name());
            return;
        }
    }
    broker_configs(cycle).await;
    topics_and_groups(cycle).await;
    cycle.discovered.refreshed = Some(Instant::now());
}

/// 26 of every broker.
async fn broker_configs(cycle: &mut Cycle<'_>) {
    let nodes = cycle.discovered.nodes();
    let configs = cycle
        .join(nodes.iter().map(|n| {
            let (admin, addr, deadline) = (cycle.admin(), n.addr.clone(), cycle.deadline);
            async move { bounded(deadline, admin.broker_config(&addr)).await }
        }))
        .await;
    for (node, result) in nodes.iter().zip(configs) {
        match result {
            Ok(config) => {
                cycle.discovered.config.insert(node.addr.clone(), config);
            }
            Err(e) => cycle.failed("discovery", "broker_config", &node.addr, &e),
        }
    }
}

/// 21 and 201 of every master.
async fn topics_and_groups(cycle: &mut Cycle<'_>) {
    let masters = cycle.discovered.masters();
    let tables = cycle
        .join(masters.iter().map(|n| {
            let (admin, addr, deadline) = (cycle.admin(), n.addr.clone(), cycle.deadline);
            async move {
                let topics = bounded(deadline, admin.all_topic_config(&addr)).await;
                let groups = bounded(deadline, admin.subscription_groups(&addr)).await;
                let pop = bounded(deadline, admin.pop_modes(&addr)).await;
                (topics, groups, pop)
            }
        }))
        .await;
    let mut groups = BTreeSet::new();
    let mut pop_modes = BTreeSet::new();
    let mut pop_complete = true;
    for (node, (topics, group_table, pop)) in masters.iter().zip(tables) {
        match pop {
            // None: a broker without request modes (4.x), no POP there.
            Ok(Some(modes)) => pop_modes.extend(modes),
            Ok(None) => {}
            Err(e) => {
                pop_complete = false;
                cycle.failed("discovery", "pop_modes", &node.addr, &e);
            }
        }
        match topics {
            Ok(table) => {
                let topics = table
                    .into_values()
                    .map(|t| (t.topic_name.clone(), t))
                    .collect();
                cycle.discovered.topics.insert(node.addr.clone(), topics);
            }
            // An empty broker answers "No topic in this broker".
            Err(e) if e.is_nothing_stored() => {
                cycle
                    .discovered
                    .topics
                    .insert(node.addr.clone(), BTreeMap::new());
            }
            Err(e) => cycle.failed("discovery", "all_topic_config", &node.addr, &e),
        }
        match group_table {
            Ok(table) => groups.extend(table.into_keys().filter(|g| !is_builtin_group(g))),
            Err(e) if e.is_nothing_stored() => {}
            Err(e) => cycle.failed("discovery", "subscription_groups", &node.addr, &e),
        }
    }
    cycle.discovered.groups = groups;
    // A master that did not answer keeps what it said before.
    if !pop_complete {
        pop_modes.extend(cycle.discovered.pop_modes.iter().cloned());
    }
    cycle.discovered.pop_modes = pop_modes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::BrokerData;

    fn listing(members: &[(u64, &str)]) -> ClusterInfo {
        let mut info = ClusterInfo::default();
        info.broker_addr_table.insert(
            "a".into(),
            BrokerData {
                cluster: "c".into(),
                broker_name: "a".into(),
                broker_addrs: members
                    .iter()
                    .map(|(id, addr)| (*id, addr.to_string()))
                    .collect(),
            },
        );
        info.cluster_addr_table.insert("c".into(), vec!["a".into()]);
        info
    }

    fn known(d: &Discovered) -> Vec<(u64, String)> {
        d.nodes().into_iter().map(|n| (n.id, n.addr)).collect()
    }

    #[test]
    fn a_slave_promoted_in_place_is_only_the_master() {
        let mut d = Discovered::default();
        d.learn_nodes("c", &listing(&[(0, "m:1"), (1, "s:1")]));
        assert_eq!(known(&d), [(0, "m:1".into()), (1, "s:1".into())]);
        // The master stopped, its slave restarted as id 0; the name server
        // still lists the slave registration.
        d.learn_nodes("c", &listing(&[(0, "s:1"), (1, "s:1")]));
        assert_eq!(known(&d), [(0, "s:1".into())]);
        d.learn_nodes("c", &listing(&[(0, "s:1")]));
        assert_eq!(known(&d), [(0, "s:1".into())]);
        // A restarted broker on a new port replaces its old address.
        d.learn_nodes("c", &listing(&[(0, "s:2"), (1, "m:1")]));
        assert_eq!(known(&d), [(0, "s:2".into()), (1, "m:1".into())]);
    }
}
