//! The `namesrv` collector: every configured name server asked each cycle
//! for the cluster (106), so one that stops answering shows at once — and
//! all of them down is a total outage for new producers and consumers even
//! while every broker is fine. It writes `rocketmq_namesrv_up` and the
//! brokers each one lists (a name server that lost registrations routes
//! clients to fewer brokers); the first answer is handed to discovery.

use super::{BoxFuture, Collector, Cycle, bounded};
use crate::admin::ClusterInfo;
use crate::metrics::Exposition;

/// The name-server collector.
pub(super) struct NameServers;

impl Collector for NameServers {
    fn name(&self) -> &'static str {
        "namesrv"
    }

    fn needs_brokers(&self) -> bool {
        false
    }

    fn collect<'a>(&'a self, cycle: &'a mut Cycle<'_>, out: &'a mut Exposition) -> BoxFuture<'a> {
        Box::pin(async move {
            let addrs = cycle.cluster.name_servers().to_vec();
            let deadline = cycle.deadline;
            let answers = cycle
                .join(addrs.iter().map(|addr| {
                    let (admin, addr) = (cycle.admin(), addr.clone());
                    async move { bounded(deadline, admin.cluster_info(&addr)).await }
                }))
                .await;
            let cluster = cycle.cluster.name().to_string();
            let mut failures = Vec::new();
            for (addr, answer) in addrs.iter().zip(answers) {
                let labels = [
                    ("rocketmq_cluster", cluster.as_str()),
                    ("namesrv", addr.as_str()),
                ];
                match answer {
                    Ok(info) => {
                        out.sample("rocketmq_namesrv_up", &labels, 1.0);
                        out.sample(
                            "rocketmq_namesrv_brokers",
                            &labels,
                            brokers_of(&cluster, &info) as f64,
                        );
                        if cycle.facts.cluster_info.is_none() {
                            cycle.facts.cluster_info = Some(info);
                        }
                    }
                    Err(e) => {
                        out.sample("rocketmq_namesrv_up", &labels, 0.0);
                        cycle.failed("namesrv", "cluster_info", addr, &e);
                        failures.push(e);
                    }
                }
            }
            if failures.len() == addrs.len() {
                cycle.facts.name_servers_failed = failures.pop();
            }
        })
    }
}

/// Broker processes (masters and slaves) of `cluster` the name server lists.
fn brokers_of(cluster: &str, info: &ClusterInfo) -> usize {
    info.broker_addr_table
        .values()
        .filter(|d| d.cluster == cluster || info.cluster_addr_table.len() == 1)
        .map(|d| d.broker_addrs.len())
        .sum()
}
