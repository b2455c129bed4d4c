//! The `controller` collector: 5.x controller mode. Brokers that run with
//! `enableControllerMode` name their controllers (`controllerAddr`, in the
//! broker config discovery read); each is asked who leads the controller
//! group (1005), and the leader for the sync-state data (1006) of every
//! broker set in controller mode: its master, epochs and in-sync replicas.
//! Nothing is written when no broker runs in controller mode.

use std::collections::BTreeSet;

use super::{BoxFuture, Collector, Cycle, bounded};
use crate::admin::{BrokerReplicasInfo, ControllerMetadata};
use crate::metrics::Exposition;

/// The controller collector.
pub(super) struct Controllers;

impl Collector for Controllers {
    fn name(&self) -> &'static str {
        "controller"
    }

    fn collect<'a>(&'a self, cycle: &'a mut Cycle<'_>, out: &'a mut Exposition) -> BoxFuture<'a> {
        Box::pin(async move {
            let (controllers, broker_sets) = controller_mode(cycle);
            if controllers.is_empty() {
                return;
            }
            let cluster = cycle.cluster.name().to_string();
            let deadline = cycle.deadline;
            let answers = cycle
                .join(controllers.iter().map(|addr| {
                    let (admin, addr) = (cycle.admin(), addr.clone());
                    async move { bounded(deadline, admin.controller_metadata(&addr)).await }
                }))
                .await;
            let mut leader: Option<String> = None;
            for (addr, answer) in controllers.iter().zip(answers) {
                let labels = [
                    ("rocketmq_cluster", cluster.as_str()),
                    ("controller", addr.as_str()),
                ];
                match answer {
                    Ok(meta) => {
                        out.sample("rocketmq_controller_up", &labels, 1.0);
                        out.sample(
                            "rocketmq_controller_is_leader",
                            &labels,
                            if meta.is_leader { 1.0 } else { 0.0 },
                        );
                        leader = leader.or_else(|| leader_of(addr, &meta));
                    }
                    Err(e) => {
                        out.sample("rocketmq_controller_up", &labels, 0.0);
                        cycle.failed("controller", "controller_metadata", addr, &e);
                    }
                }
            }
            out.sample(
                "rocketmq_controller_has_leader",
                &[("rocketmq_cluster", cluster.as_str())],
                if leader.is_some() { 1.0 } else { 0.0 },
            );
            let Some(leader) = leader else {
                return;
            };
            let names: Vec<String> = broker_sets.into_iter().collect();
            let admin = cycle.admin();
            let answer = bounded(deadline, admin.sync_state_data(&leader, &names)).await;
            let info = match answer {
                Ok(info) => info,
                Err(e) => {
                    cycle.failed("controller", "sync_state_data", &leader, &e);
                    return;
                }
            };
            render_sync_state(&cluster, &info, out);
        })
    }
}

/// The sync-state data of the controller leader: per broker set its
/// replicas by state, epochs, and each replica.
fn render_sync_state(cluster: &str, info: &BrokerReplicasInfo, out: &mut Exposition) {
    for (broker, replicas) in &info.replicas_info_table {
        let labels = [("rocketmq_cluster", cluster), ("broker", broker.as_str())];
        for (state, count) in [
            ("in_sync", replicas.in_sync_replicas.len()),
            ("not_in_sync", replicas.not_in_sync_replicas.len()),
        ] {
            let mut with_state = labels.to_vec();
            with_state.push(("state", state));
            out.sample(
                "rocketmq_broker_sync_state_replicas",
                &with_state,
                count as f64,
            );
        }
        if let Some(epoch) = replicas.master_epoch {
            out.sample("rocketmq_broker_master_epoch", &labels, epoch as f64);
        }
        if let Some(epoch) = replicas.sync_state_set_epoch {
            out.sample(
                "rocketmq_broker_sync_state_set_epoch",
                &labels,
                epoch as f64,
            );
        }
        for (in_sync, replica) in replicas
            .in_sync_replicas
            .iter()
            .map(|r| (true, r))
            .chain(replicas.not_in_sync_replicas.iter().map(|r| (false, r)))
        {
            let id = replica.broker_id.to_string();
            out.sample(
                "rocketmq_broker_replica_in_sync",
                &[
                    ("rocketmq_cluster", cluster),
                    ("broker", broker.as_str()),
                    ("broker_id", id.as_str()),
                    ("addr", replica.broker_address.as_str()),
                ],
                if in_sync { 1.0 } else { 0.0 },
            );
        }
    }
}

/// The controllers the brokers in controller mode name, and their broker
/// sets.
fn controller_mode(cycle: &Cycle<'_>) -> (Vec<String>, BTreeSet<String>) {
    let mut controllers = BTreeSet::new();
    let mut broker_sets = BTreeSet::new();
    for node in cycle.discovered.nodes() {
        let Some(config) = cycle.discovered.config.get(&node.addr) else {
            continue;
        };
        let named = config.controller_addrs();
        if named.is_empty() {
            continue;
        }
        broker_sets.insert(node.broker.clone());
        controllers.extend(named.into_iter().map(str::to_string));
    }
    (controllers.into_iter().collect(), broker_sets)
}

/// The leader's remoting address from one controller's metadata: its own
/// address when it leads, else the one it names.
fn leader_of(addr: &str, meta: &ControllerMetadata) -> Option<String> {
    if meta.is_leader {
        Some(addr.to_string())
    } else if meta.leader_addr.is_empty() {
        None
    } else {
        Some(meta.leader_addr.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SnapshotStore;

    /// A sync-state answer as 5.3.3's BrokerReplicasInfo serializes it
    /// (constructed from the Java class's fields: the shared distribution's
    /// controller cannot register brokers, so none was captured).
    const ANSWER: &str = r#"{"replicasInfoTable":{"broker-c":{"masterBrokerId":1,"masterAddress":"127.0.0.1:30911","masterEpoch":3,"syncStateSetEpoch":5,"inSyncReplicas":[{"brokerName":"broker-c","brokerId":1,"brokerAddress":"127.0.0.1:30911","alive":true}],"notInSyncReplicas":[{"brokerName":"broker-c","brokerId":2,"brokerAddress":"127.0.0.1:30921","alive":false}]}}}"#;

    #[test]
    fn a_shrunk_sync_state_set_is_rendered_by_state_epoch_and_replica() {
        let info: BrokerReplicasInfo =
            crate::body::json::parse_as(ANSWER.as_bytes(), "BrokerReplicasInfo").expect("parse");
        let mut out = Exposition::new();
        render_sync_state("c", &info, &mut out);
        let store = SnapshotStore::new();
        store.publish("c", out);
        let text = String::from_utf8(store.current().to_vec()).expect("utf-8");
        for line in [
            r#"rocketmq_broker_sync_state_replicas{rocketmq_cluster="c",broker="broker-c",state="in_sync"} 1"#,
            r#"rocketmq_broker_sync_state_replicas{rocketmq_cluster="c",broker="broker-c",state="not_in_sync"} 1"#,
            r#"rocketmq_broker_master_epoch{rocketmq_cluster="c",broker="broker-c"} 3"#,
            r#"rocketmq_broker_sync_state_set_epoch{rocketmq_cluster="c",broker="broker-c"} 5"#,
            r#"rocketmq_broker_replica_in_sync{rocketmq_cluster="c",broker="broker-c",broker_id="1",addr="127.0.0.1:30911"} 1"#,
            r#"rocketmq_broker_replica_in_sync{rocketmq_cluster="c",broker="broker-c",broker_id="2",addr="127.0.0.1:30921"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }

    #[test]
    fn the_leader_is_the_answering_controller_or_the_one_it_names() {
        let meta = |is_leader: bool, addr: &str| ControllerMetadata {
            group: "g".into(),
            leader_id: "n0".into(),
            leader_addr: addr.into(),
            is_leader,
            peers: String::new(),
        };
        assert_eq!(leader_of("a:1", &meta(true, "x:9")), Some("a:1".into()));
        assert_eq!(leader_of("a:1", &meta(false, "b:2")), Some("b:2".into()));
        assert_eq!(leader_of("a:1", &meta(false, "")), None);
    }
}
