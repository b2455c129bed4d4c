//! The `broker` collector: each broker's runtime info (28) and each
//! master's HA status (907), rendered as the `rocketmq_broker_*` families:
//! up, info, boot time, commit-log extent and disk use, flush and dispatch
//! lag, TPS, replication lag and in-sync state per slave, durability risks
//! (see [`crate::posture`], shared with `doctor`), and from its config
//! whether it accepts writes and how long it keeps commit-log files.

use std::collections::BTreeMap;

use super::discovery::Node;
use super::{BoxFuture, Collector, Cycle, bounded};
use crate::admin::{HaStatus, PERM_READ, PERM_WRITE, RuntimeInfo};
use crate::metrics::Exposition;
use crate::posture::{self, SlaveFacts};

/// The broker collector.
pub(super) struct Brokers;

impl Collector for Brokers {
    fn name(&self) -> &'static str {
        "broker"
    }

    fn collect<'a>(&'a self, cycle: &'a mut Cycle<'_>, out: &'a mut Exposition) -> BoxFuture<'a> {
        Box::pin(async move {
            gather(cycle).await;
            let nodes = cycle.discovered.nodes();
            for node in &nodes {
                render_node(cycle, node, out);
                if node.is_master() {
                    render_replication(cycle, node, &nodes, out);
                }
            }
        })
    }
}

async fn gather(cycle: &mut Cycle<'_>) {
    let nodes = cycle.discovered.nodes();
    let deadline = cycle.deadline;
    let answers = cycle
        .join(nodes.iter().map(|n| {
            let (admin, addr, master) = (cycle.admin(), n.addr.clone(), n.is_master());
            async move {
                let runtime = bounded(deadline, admin.runtime_info(&addr)).await;
                let ha = if master {
                    Some(bounded(deadline, admin.ha_status(&addr)).await)
                } else {
                    None
                };
                (runtime, ha)
            }
        }))
        .await;
    for (node, (runtime, ha)) in nodes.iter().zip(answers) {
        match runtime {
            Ok(runtime) => {
                cycle.facts.runtime.insert(node.addr.clone(), runtime);
            }
            Err(e) => cycle.failed("broker", "runtime_info", &node.addr, &e),
        }
        match ha {
            Some(Ok(ha)) => {
                cycle.facts.ha.insert(node.addr.clone(), ha);
            }
            Some(Err(e)) => cycle.failed("broker", "ha_status", &node.addr, &e),
            None => {}
        }
    }
}

/// Up, info and the runtime figures of one broker.
fn render_node(cycle: &Cycle<'_>, node: &Node, out: &mut Exposition) {
    let id = node.id.to_string();
    let labels = [
        ("rocketmq_cluster", cycle.cluster.name()),
        ("broker", node.broker.as_str()),
        ("broker_id", id.as_str()),
    ];
    let runtime = cycle.facts.runtime.get(&node.addr);
    out.sample(
        "rocketmq_broker_up",
        &labels,
        if runtime.is_some() { 1.0 } else { 0.0 },
    );
    let Some(runtime) = runtime else { return };
    let (role, flush) = cycle.role_and_flush(node);
    out.sample(
        "rocketmq_broker_info",
        &[
            labels[0],
            labels[1],
            labels[2],
            ("version", runtime.version().unwrap_or("")),
            ("role", role.unwrap_or("")),
            ("flush_disk_type", flush.unwrap_or("")),
            ("addr", &node.addr),
        ],
        1.0,
    );
    render_runtime(runtime, &labels, out);
    render_config(cycle, node, &labels, out);
}

/// What the broker's config says about writes and retention.
fn render_config(cycle: &Cycle<'_>, node: &Node, labels: &[(&str, &str)], out: &mut Exposition) {
    let Some(config) = cycle.discovered.config.get(&node.addr) else {
        return;
    };
    // brokerPermission (default 6, read and write): without the write bit
    // every send is refused (an operator's read-only switch, or a broker
    // being drained).
    let perm = config
        .get("brokerPermission")
        .and_then(|p| p.trim().parse::<i32>().ok())
        .unwrap_or(PERM_READ | PERM_WRITE);
    out.sample(
        "rocketmq_broker_writable",
        labels,
        if perm & PERM_WRITE != 0 { 1.0 } else { 0.0 },
    );
    if let Some(hours) = reserved_hours(config) {
        out.sample(
            "rocketmq_broker_file_reserved_time_seconds",
            labels,
            hours * 3600.0,
        );
    }
}

/// `fileReservedTime`: hours a commit-log file is kept (default 72).
pub(super) fn reserved_hours(config: &crate::admin::BrokerConfig) -> Option<f64> {
    config
        .get("fileReservedTime")
        .and_then(|h| h.trim().parse::<f64>().ok())
        .filter(|h| *h > 0.0)
}

/// The `KVTable` figures, each only when the broker reports it.
fn render_runtime(runtime: &RuntimeInfo, labels: &[(&str, &str)], out: &mut Exposition) {
    for (name, key, scale) in [
        (
            "rocketmq_broker_boot_timestamp_seconds",
            "bootTimestamp",
            1000.0,
        ),
        (
            "rocketmq_broker_commitlog_max_offset_bytes",
            "commitLogMaxOffset",
            1.0,
        ),
        (
            "rocketmq_broker_commitlog_min_offset_bytes",
            "commitLogMinOffset",
            1.0,
        ),
        (
            "rocketmq_broker_dispatch_lag_bytes",
            "dispatchBehindBytes",
            1.0,
        ),
    ] {
        if let Ok(Some(v)) = runtime.int(key) {
            out.sample(name, labels, v as f64 / scale);
        }
    }
    // -1 means the broker could not read its disk: no value, not a ratio.
    if let Ok(Some(v)) = runtime.decimal("commitLogDiskRatio")
        && v >= 0.0
    {
        out.sample("rocketmq_broker_commitlog_disk_used_ratio", labels, v);
    }
    if let Ok(Some(v)) = runtime.flush_lag_bytes() {
        out.sample("rocketmq_broker_flush_lag_bytes", labels, v as f64);
    }
    for (name, key) in [
        ("rocketmq_broker_put_messages_per_second", "putTps"),
        ("rocketmq_broker_get_messages_per_second", "getTotalTps"),
    ] {
        if let Ok(Some(tps)) = runtime.tps(key)
            && let Some(rate) = tps.last_60s.or(tps.last_10s)
        {
            out.sample(name, labels, rate);
        }
    }
}

/// A master's slaves: replication lag and in-sync state; its durability risks.
fn render_replication(cycle: &Cycle<'_>, master: &Node, nodes: &[Node], out: &mut Exposition) {
    let runtime_by_addr: &BTreeMap<String, RuntimeInfo> = &cycle.facts.runtime;
    let Some(runtime) = runtime_by_addr.get(&master.addr) else {
        return;
    };
    let cluster = cycle.cluster.name();
    let facts: Vec<SlaveFacts<'_>> = nodes
        .iter()
        .filter(|n| n.broker == master.broker && !n.is_master())
        .map(|s| SlaveFacts {
            broker_id: s.id,
            addr: &s.addr,
            max_offset: runtime_by_addr
                .get(&s.addr)
                .and_then(|r| r.int("commitLogMaxOffset").ok().flatten()),
            live: runtime_by_addr.contains_key(&s.addr),
        })
        .collect();
    let master_max = runtime.int("commitLogMaxOffset").ok().flatten();
    let ha: Option<&HaStatus> = cycle.facts.ha.get(&master.addr);
    let replicas = posture::replicas(master_max, &facts, ha);
    for replica in &replicas {
        let slave_id = replica.broker_id.to_string();
        let labels = [
            ("rocketmq_cluster", cluster),
            ("broker", master.broker.as_str()),
            ("broker_id", slave_id.as_str()),
        ];
        if let Some(lag) = replica.lag_bytes {
            out.sample("rocketmq_broker_replication_lag_bytes", &labels, lag as f64);
        }
        if let Some(in_sync) = replica.in_sync {
            out.sample(
                "rocketmq_broker_replication_in_sync",
                &labels,
                if in_sync { 1.0 } else { 0.0 },
            );
        }
    }
    let (role, flush) = cycle.role_and_flush(master);
    let live = replicas.iter().filter(|r| r.is_live()).count();
    for reason in posture::durability_risks(role, flush, live) {
        out.sample(
            "rocketmq_broker_durability_risk",
            &[
                ("rocketmq_cluster", cluster),
                ("broker", master.broker.as_str()),
                ("broker_id", "0"),
                ("reason", reason.as_str()),
            ],
            1.0,
        );
    }
}
