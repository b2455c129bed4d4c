//! The doctor's broker facts: every registered broker's runtime info and
//! config, every master's HA status, and each slave's replication state
//! (see [`crate::posture::replicas`] for how HA status is attributed).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{BrokerReport, Errors};
use crate::admin::{Admin, BrokerConfig, BrokerData, ClusterInfo, Error, HaStatus, RuntimeInfo};
use crate::concurrent::join_limited;
use crate::posture::{SlaveFacts, replicas};

/// What one broker answered.
type Answers = (
    Result<RuntimeInfo, Error>,
    Result<BrokerConfig, Error>,
    Option<Result<HaStatus, Error>>,
);

/// One report per registered broker, masters with their replicas.
pub(super) async fn examine(
    admin: &Admin,
    info: &ClusterInfo,
    limiter: &Arc<Semaphore>,
    errors: &mut Errors,
) -> Vec<BrokerReport> {
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
    for ((data, id, addr), (runtime, config, ha)) in every_broker.iter().zip(answers) {
        let runtime = errors.record("runtime_info", addr, runtime);
        let config = errors.record("broker_config", addr, config);
        if let Some(ha) = ha.and_then(|ha| errors.record("ha_status", addr, ha)) {
            ha_by_addr.insert(addr.clone(), ha);
        }
        brokers.push(report(
            data,
            *id,
            addr,
            runtime.as_ref(),
            config.as_ref(),
            errors,
        ));
        if let Some(runtime) = runtime {
            runtime_by_addr.insert(addr.clone(), runtime);
        }
    }
    for report in brokers.iter_mut().filter(|b| b.broker_id == 0) {
        if let Some(data) = info.broker_addr_table.get(&report.broker_name) {
            report.replicas = slaves_of(report, data, &runtime_by_addr, &ha_by_addr);
        }
    }
    brokers
}

/// Runtime info and config of a broker; HA status of a master.
async fn ask(admin: &Admin, addr: &str, master: bool) -> Answers {
    let runtime = admin.runtime_info(addr).await;
    let config = admin.broker_config(addr).await;
    let ha = if master {
        Some(admin.ha_status(addr).await)
    } else {
        None
    };
    (runtime, config, ha)
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
    };
    if let Some(runtime) = runtime {
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
        })
        .collect();
    replicas(
        master.commit_log_max_offset,
        &slaves,
        ha_by_addr.get(&master.addr),
    )
}
