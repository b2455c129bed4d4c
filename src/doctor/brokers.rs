//! The doctor's broker facts: every registered broker's runtime info and
//! config, every master's HA status, and each slave's replication state
//! (see [`crate::posture::replicas`] for how HA status is attributed).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{BrokerReport, Errors, NameServerReport};
use crate::admin::{
    Admin, BrokerConfig, BrokerData, Cluster, ClusterInfo, Error, HaStatus, RuntimeInfo,
};
use crate::concurrent::join_limited;
use crate::posture::{SlaveFacts, replicas};

/// What one broker answered; masters also their HA status and discarded
/// transactions.
type Answers = (
    Result<RuntimeInfo, Error>,
    Result<BrokerConfig, Error>,
    Option<Result<HaStatus, Error>>,
    Option<Result<i64, Error>>,
);

/// Where half messages given up on go.
const DISCARD_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";

/// One report per registered broker, masters with their replicas; and the
/// name servers the brokers' `namesrvAddr` names.
pub(super) async fn examine(
    admin: &Admin,
    info: &ClusterInfo,
    limiter: &Arc<Semaphore>,
    errors: &mut Errors,
) -> (
    Vec<BrokerReport>,
    std::collections::BTreeSet<String>,
    BTreeMap<String, std::collections::BTreeSet<String>>,
) {
    let every_broker: Vec<(&BrokerData, u64, String)> = info
        .broker_addr_table
        .values()
        .flat_map(|data| {
            data.broker_addrs
                .iter()
                .map(move |(id, addr)| (data, *id, addr.clone()))
        })
        .collect();
    let answers = join_limited(
        limiter,
        every_broker.iter().map(|(_, id, addr)| {
            let (admin, addr, id) = (admin.clone(), addr.clone(), *id);
            async move { ask(&admin, &addr, id == 0).await }
        }),
    )
    .await;
    let mut runtime_by_addr: BTreeMap<String, RuntimeInfo> = BTreeMap::new();
    let mut ha_by_addr: BTreeMap<String, HaStatus> = BTreeMap::new();
    let mut brokers = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    // Controller address → the broker sets in controller mode naming it.
    let mut controllers: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for ((data, id, addr), (runtime, config, ha, discarded)) in every_broker.iter().zip(answers) {
        let runtime = errors.record("runtime_info", addr, runtime);
        let config = errors.record("broker_config", addr, config);
        if let Some(list) = config.as_ref().and_then(|c| c.get("namesrvAddr")) {
            named.extend(
                list.split(';')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string),
            );
        }
        for controller in config.iter().flat_map(|c| c.controller_addrs()) {
            controllers
                .entry(controller.to_string())
                .or_default()
                .insert(data.broker_name.clone());
        }
        if let Some(ha) = ha.and_then(|ha| errors.record("ha_status", addr, ha)) {
            ha_by_addr.insert(addr.clone(), ha);
        }
        let mut report = report(data, *id, addr, runtime.as_ref(), config.as_ref(), errors);
        report.transaction_discarded =
            discarded.and_then(|d| errors.record("topic_stats", addr, d));
        brokers.push(report);
        if let Some(runtime) = runtime {
            runtime_by_addr.insert(addr.clone(), runtime);
        }
    }
    for report in brokers.iter_mut().filter(|b| b.broker_id == 0) {
        if let Some(data) = info.broker_addr_table.get(&report.broker_name) {
            report.replicas = slaves_of(report, data, &runtime_by_addr, &ha_by_addr);
        }
    }
    (brokers, named, controllers)
}

/// Runtime info and config of a broker; HA status and discarded
/// transactions of a master.
async fn ask(admin: &Admin, addr: &str, master: bool) -> Answers {
    let runtime = admin.runtime_info(addr).await;
    let config = admin.broker_config(addr).await;
    if !master {
        return (runtime, config, None, None);
    }
    let ha = admin.ha_status(addr).await;
    let discarded = match admin.topic_stats(addr, DISCARD_TOPIC).await {
        Ok(table) => Ok(crate::backlog::held_messages(&table)),
        // Never created: nothing was ever discarded.
        Err(e) if e.is_topic_missing() => Ok(0),
        Err(e) => Err(e),
    };
    (runtime, config, Some(ha), Some(discarded))
}

/// The name server asked and every other one the brokers' `namesrvAddr`
/// names, each asked for the cluster.
pub(super) async fn name_servers(
    cluster: &Cluster,
    named: &std::collections::BTreeSet<String>,
    limiter: &Arc<Semaphore>,
) -> Vec<NameServerReport> {
    let mut addrs: std::collections::BTreeSet<String> =
        cluster.name_servers().iter().cloned().collect();
    addrs.extend(named.iter().cloned());
    let addrs: Vec<String> = addrs.into_iter().collect();
    let answers = join_limited(
        limiter,
        addrs.iter().map(|addr| {
            let (admin, addr) = (cluster.admin().clone(), addr.clone());
            async move { admin.cluster_info(&addr).await }
        }),
    )
    .await;
    addrs
        .into_iter()
        .zip(answers)
        .map(|(addr, answer)| NameServerReport {
            addr,
            reachable: answer.is_ok(),
            brokers: answer.ok().map(|i| {
                i.broker_addr_table
                    .values()
                    .map(|d| d.broker_addrs.len())
                    .sum()
            }),
        })
        .collect()
}

fn report(
    data: &BrokerData,
    id: u64,
    addr: &str,
    runtime: Option<&RuntimeInfo>,
    config: Option<&BrokerConfig>,
    errors: &mut Errors,
) -> BrokerReport {
    let role = config
        .and_then(|c| c.get("brokerRole"))
        .or_else(|| runtime.and_then(|r| r.get("brokerRole")))
        .map(str::to_string);
    let mut report = BrokerReport {
        cluster: data.cluster.clone(),
        broker_name: data.broker_name.clone(),
        broker_id: id,
        addr: addr.to_string(),
        reachable: runtime.is_some() || config.is_some(),
        role,
        flush_disk_type: config
            .and_then(|c| c.get("flushDiskType"))
            .map(str::to_string),
        version: runtime.and_then(|r| r.version()).map(str::to_string),
        flush_lag_bytes: None,
        commit_log_min_offset: None,
        commit_log_max_offset: None,
        disk_ratio: None,
        replicas: Vec::new(),
        writable: None,
        file_reserved_hours: None,
        transaction_discarded: None,
        timer_dequeue_lag_seconds: None,
    };
    if let Some(config) = config {
        report.writable = Some(
            config
                .get("brokerPermission")
                .and_then(|p| p.trim().parse::<i32>().ok())
                .is_none_or(|p| p & crate::admin::PERM_WRITE != 0),
        );
        report.file_reserved_hours = config
            .get("fileReservedTime")
            .and_then(|h| h.trim().parse().ok());
    }
    if let Some(runtime) = runtime {
        report.timer_dequeue_lag_seconds = errors.value(addr, runtime.int("timerReadBehind"));
        report.flush_lag_bytes = errors.value(addr, runtime.flush_lag_bytes());
        report.commit_log_min_offset = errors.value(addr, runtime.int("commitLogMinOffset"));
        report.commit_log_max_offset = errors.value(addr, runtime.int("commitLogMaxOffset"));
        report.disk_ratio = errors.value(addr, runtime.decimal("commitLogDiskRatio"));
    }
    report
}

fn slaves_of(
    master: &BrokerReport,
    data: &BrokerData,
    runtime_by_addr: &BTreeMap<String, RuntimeInfo>,
    ha_by_addr: &BTreeMap<String, HaStatus>,
) -> Vec<crate::posture::Replica> {
    let slaves: Vec<SlaveFacts<'_>> = data
        .slaves()
        .map(|(broker_id, addr)| SlaveFacts {
            broker_id,
            addr,
            max_offset: runtime_by_addr
                .get(addr)
                .and_then(|r| r.int("commitLogMaxOffset").ok().flatten()),
            live: runtime_by_addr.contains_key(addr),
        })
        .collect();
    replicas(
        master.commit_log_max_offset,
        &slaves,
        ha_by_addr.get(&master.addr),
    )
}
