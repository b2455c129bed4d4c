//! `mqaudit doctor`: the message-loss checklist against a live cluster.
//!
//! [`examine`] gathers facts through [`Admin`] (concurrently, bounded, every
//! call with the admin timeout); [`verdicts`] is pure and turns facts into
//! risks, each with one line on what to change. A call that fails is recorded
//! in the report (`errors`) and never aborts the report, except when the name
//! server itself cannot be read.
//!
//! The JSON form of [`Report`] is a stable interface, documented in
//! `docs/doctor.md`; add fields, never rename or remove them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::admin::{Admin, BrokerData, HaStatus, RuntimeInfo, is_builtin_group};
use crate::concurrent::join_limited;
use crate::posture::{SlaveFacts, durability_risks, replicas};
use crate::remoting::Error;
use crate::remoting::codes::response;

/// Trace topic clients write to by default.
pub const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// A slave further behind than this is "lagging" even if the broker calls it
/// in sync (Java's own in-sync gap, `haMaxGapNotInSync`, is 256 MiB).
pub const LAGGING_SLAVE_BYTES: i64 = 16 * 1024 * 1024;
/// Concurrent admin calls the doctor makes.
const CONCURRENCY: usize = 16;

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Report format version; bumped only for incompatible changes.
    pub format_version: u32,
    /// Name server asked.
    pub namesrv: String,
    /// Clusters the name server knows.
    pub clusters: Vec<String>,
    /// Every registered broker, masters and slaves.
    pub brokers: Vec<BrokerReport>,
    /// Every consumer group found.
    pub groups: Vec<GroupReport>,
    /// Whether `RMQ_SYS_TRACE_TOPIC` is routed.
    pub trace_topic_present: bool,
    /// Loss risks, most severe first.
    pub risks: Vec<Risk>,
    /// Calls that failed while gathering (the report is partial where listed).
    pub errors: Vec<ProbeError>,
}

/// One broker's durability facts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BrokerReport {
    /// Cluster name.
    pub cluster: String,
    /// Broker (group) name.
    pub broker_name: String,
    /// 0 for the master.
    pub broker_id: u64,
    /// `ip:port`.
    pub addr: String,
    /// False when neither runtime info nor config could be read.
    pub reachable: bool,
    /// `ASYNC_MASTER`, `SYNC_MASTER` or `SLAVE`.
    pub role: Option<String>,
    /// `ASYNC_FLUSH` or `SYNC_FLUSH`.
    pub flush_disk_type: Option<String>,
    /// Broker version text.
    pub version: Option<String>,
    /// Bytes written but not yet flushed to disk.
    pub flush_lag_bytes: Option<u64>,
    /// First commit-log byte still stored.
    pub commit_log_min_offset: Option<i64>,
    /// Commit-log bytes ever written.
    pub commit_log_max_offset: Option<i64>,
    /// Used fraction of the commit-log disk, 0–1.
    pub disk_ratio: Option<f64>,
    /// For masters: one entry per registered slave.
    pub replicas: Vec<ReplicaReport>,
}

/// Replication state of one slave (shared with the collector).
pub type ReplicaReport = crate::posture::Replica;

/// One consumer group's backlog.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupReport {
    /// Group name.
    pub group: String,
    /// Distinct online consumer instances over all masters.
    pub online_consumers: usize,
    /// `CLUSTERING` or `BROADCASTING` when a consumer is online.
    pub message_model: Option<String>,
    /// Unconsumed messages on the group's topics (excluding retry); 0 for broadcast groups.
    pub lag_messages: i64,
    /// Unconsumed messages in `%RETRY%group`.
    pub retry_messages: i64,
    /// Messages held in `%DLQ%group`.
    pub dlq_messages: i64,
    /// Topics the group has offsets for (excluding retry).
    pub topics: Vec<String>,
}

/// A risk of losing messages, with what to change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Risk {
    /// `critical`, `warning` or `info`.
    pub severity: Severity,
    /// Stable identifier: `async_flush`, `async_replication`, `no_replica`,
    /// `lagging_slave`, `dlq_not_empty`, `lag_without_consumers`,
    /// `trace_topic_missing`, `broker_unreachable`.
    pub kind: String,
    /// What it is about: a broker (`broker-a/0`) or a group.
    pub subject: String,
    /// What was found.
    pub detail: String,
    /// One line on what to change.
    pub advice: String,
}

/// How bad a risk is.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Messages are being lost or cannot be read now.
    Critical,
    /// A failure would lose messages.
    Warning,
    /// Visibility is missing.
    Info,
}

/// A call that failed while gathering.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeError {
    /// What was asked (`runtime_info`, `consume_stats`...).
    pub call: String,
    /// Of whom.
    pub target: String,
    /// `timeout`, `io`, `protocol` or `remote`.
    pub kind: String,
    /// The error text.
    pub message: String,
}

/// Gather every fact and compute the verdicts.
///
/// # Errors
/// Only when the name server's cluster info cannot be read; every other
/// failure is recorded in [`Report::errors`].
pub async fn examine(admin: &Admin, namesrv: &str) -> Result<Report, Error> {
    let cluster = admin.cluster_info(namesrv).await?;
    let limiter = Arc::new(Semaphore::new(CONCURRENCY));
    let mut errors = Vec::new();

    let groups_by_name: Vec<&BrokerData> = cluster.broker_addr_table.values().collect();
    let every_broker: Vec<(String, &BrokerData, u64, String)> = groups_by_name
        .iter()
        .flat_map(|data| {
            data.broker_addrs
                .iter()
                .map(move |(id, addr)| (data.broker_name.clone(), *data, *id, addr.clone()))
        })
        .collect();

    // Runtime info and config of every broker; HA status of every master.
    let facts = join_limited(
        &limiter,
        every_broker.iter().map(|(_, _, id, addr)| {
            let (admin, addr, id) = (admin.clone(), addr.clone(), *id);
            async move {
                let runtime = admin.runtime_info(&addr).await;
                let config = admin.broker_config(&addr).await;
                let ha = if id == 0 {
                    Some(admin.ha_status(&addr).await)
                } else {
                    None
                };
                (runtime, config, ha)
            }
        }),
    )
    .await;

    let mut runtime_by_addr: BTreeMap<String, RuntimeInfo> = BTreeMap::new();
    let mut ha_by_addr: BTreeMap<String, HaStatus> = BTreeMap::new();
    let mut brokers = Vec::new();
    for ((name, data, id, addr), (runtime, config, ha)) in every_broker.iter().zip(facts) {
        let runtime = record(&mut errors, "runtime_info", addr, runtime);
        let config = record(&mut errors, "broker_config", addr, config);
        if let Some(ha) = ha.and_then(|ha| record(&mut errors, "ha_status", addr, ha)) {
            ha_by_addr.insert(addr.clone(), ha);
        }
        let role = config
            .as_ref()
            .and_then(|c| c.get("brokerRole").map(str::to_string))
            .or_else(|| {
                runtime
                    .as_ref()
                    .and_then(|r| r.get("brokerRole").map(str::to_string))
            });
        let mut report = BrokerReport {
            cluster: data.cluster.clone(),
            broker_name: name.clone(),
            broker_id: *id,
            addr: addr.clone(),
            reachable: runtime.is_some() || config.is_some(),
            role,
            flush_disk_type: config
                .as_ref()
                .and_then(|c| c.get("flushDiskType").map(str::to_string)),
            version: runtime
                .as_ref()
                .and_then(|r| r.version().map(str::to_string)),
            flush_lag_bytes: None,
            commit_log_min_offset: None,
            commit_log_max_offset: None,
            disk_ratio: None,
            replicas: Vec::new(),
        };
        if let Some(runtime) = runtime {
            report.flush_lag_bytes = value(&mut errors, addr, runtime.flush_lag_bytes());
            report.commit_log_min_offset =
                value(&mut errors, addr, runtime.int("commitLogMinOffset"));
            report.commit_log_max_offset =
                value(&mut errors, addr, runtime.int("commitLogMaxOffset"));
            report.disk_ratio = value(&mut errors, addr, runtime.decimal("commitLogDiskRatio"));
            runtime_by_addr.insert(addr.clone(), runtime);
        }
        brokers.push(report);
    }

    // Replication per slave (see posture::replicas for how HA status is attributed).
    for report in brokers.iter_mut().filter(|b| b.broker_id == 0) {
        let Some(data) = cluster.broker_addr_table.get(&report.broker_name) else {
            continue;
        };
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
        report.replicas = replicas(
            report.commit_log_max_offset,
            &slaves,
            ha_by_addr.get(&report.addr),
        );
    }

    let masters: Vec<String> = cluster
        .broker_addr_table
        .values()
        .filter_map(|d| d.master_addr().map(str::to_string))
        .collect();
    let groups = examine_groups(admin, namesrv, &masters, &limiter, &mut errors).await;

    let trace_topic_present = match admin.topic_route(namesrv, TRACE_TOPIC).await {
        Ok(route) => !route.queue_datas.is_empty(),
        Err(e) if e.remote_code() == Some(response::TOPIC_NOT_EXIST) => false,
        Err(e) => {
            errors.push(probe_error("topic_route", namesrv, &e));
            false
        }
    };

    let risks = verdicts(&brokers, &groups, trace_topic_present);
    Ok(Report {
        format_version: 1,
        namesrv: namesrv.to_string(),
        clusters: cluster.cluster_addr_table.keys().cloned().collect(),
        brokers,
        groups,
        trace_topic_present,
        risks,
        errors,
    })
}

/// Groups: known to any master (201), or named by a `%RETRY%`/`%DLQ%` topic.
async fn examine_groups(
    admin: &Admin,
    namesrv: &str,
    masters: &[String],
    limiter: &Arc<Semaphore>,
    errors: &mut Vec<ProbeError>,
) -> Vec<GroupReport> {
    let mut names = BTreeSet::new();
    let configs = join_limited(
        limiter,
        masters.iter().map(|addr| {
            let (admin, addr) = (admin.clone(), addr.clone());
            async move { admin.subscription_groups(&addr).await }
        }),
    )
    .await;
    for (addr, result) in masters.iter().zip(configs) {
        if let Some(table) = record(errors, "subscription_groups", addr, result) {
            names.extend(table.into_keys());
        }
    }
    match admin.topic_list(namesrv).await {
        Ok(topics) => {
            for topic in topics {
                if let Some(group) = topic
                    .strip_prefix("%RETRY%")
                    .or_else(|| topic.strip_prefix("%DLQ%"))
                {
                    names.insert(group.to_string());
                }
            }
        }
        Err(e) => errors.push(probe_error("topic_list", namesrv, &e)),
    }
    names.retain(|g| !is_builtin_group(g));

    let work: Vec<(String, String)> = names
        .iter()
        .flat_map(|g| masters.iter().map(move |m| (g.clone(), m.clone())))
        .collect();
    let results = join_limited(
        limiter,
        work.iter().map(|(group, addr)| {
            let (admin, group, addr) = (admin.clone(), group.clone(), addr.clone());
            async move {
                let connections = admin.consumer_connections(&addr, &group).await;
                let stats = admin.consume_stats(&addr, &group, None).await;
                let dlq = admin.topic_stats(&addr, &format!("%DLQ%{group}")).await;
                (connections, stats, dlq)
            }
        }),
    )
    .await;

    let mut reports: BTreeMap<String, (GroupReport, BTreeSet<String>)> = names
        .iter()
        .map(|g| {
            let report = GroupReport {
                group: g.clone(),
                online_consumers: 0,
                message_model: None,
                lag_messages: 0,
                retry_messages: 0,
                dlq_messages: 0,
                topics: Vec::new(),
            };
            (g.clone(), (report, BTreeSet::new()))
        })
        .collect();
    for ((group, addr), (connections, stats, dlq)) in work.iter().zip(results) {
        let Some((report, clients)) = reports.get_mut(group) else {
            continue;
        };
        let retry_topic = format!("%RETRY%{group}");
        if let Some(Some(connection)) = record(errors, "consumer_connections", addr, connections) {
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
        }
        if let Some(stats) = record(errors, "consume_stats", addr, stats) {
            report.lag_messages += stats.lag_where(|t| t != retry_topic);
            report.retry_messages += stats.lag_where(|t| t == retry_topic);
            for (queue, _) in &stats.offsets {
                if queue.topic != retry_topic && !report.topics.contains(&queue.topic) {
                    report.topics.push(queue.topic.clone());
                }
            }
        }
        match dlq {
            Ok(table) => {
                report.dlq_messages += table
                    .iter()
                    .map(|(_, o)| (o.max_offset - o.min_offset).max(0))
                    .sum::<i64>();
            }
            // No DLQ topic on this broker: nothing was dead-lettered there.
            Err(e) if e.remote_code() == Some(response::TOPIC_NOT_EXIST) => {}
            Err(e) => errors.push(probe_error("topic_stats", addr, &e)),
        }
    }
    reports
        .into_values()
        .map(|(mut report, clients)| {
            report.online_consumers = clients.len();
            if report.message_model.as_deref() == Some("BROADCASTING") {
                // Broadcast offsets live on the clients; broker lag means nothing.
                report.lag_messages = 0;
            }
            report.topics.sort();
            report
        })
        .collect()
}

/// The loss risks the facts show, most severe first. Pure: no I/O, no clock.
pub fn verdicts(
    brokers: &[BrokerReport],
    groups: &[GroupReport],
    trace_topic_present: bool,
) -> Vec<Risk> {
    let mut risks = Vec::new();
    let mut risk = |severity, kind: &str, subject: String, detail: String, advice: &str| {
        risks.push(Risk {
            severity,
            kind: kind.to_string(),
            subject,
            detail,
            advice: advice.to_string(),
        });
    };
    for broker in brokers {
        let subject = format!("{}/{}", broker.broker_name, broker.broker_id);
        if !broker.reachable {
            risk(
                Severity::Critical,
                "broker_unreachable",
                subject.clone(),
                format!("{} answered neither runtime info nor config", broker.addr),
                "Check the broker process and network; its queues cannot be read or written.",
            );
            continue;
        }
        if broker.broker_id == 0 {
            let risks = durability_risks(
                broker.role.as_deref(),
                broker.flush_disk_type.as_deref(),
                broker.replicas.len(),
            );
            for reason in risks {
                let (detail, advice) = match reason {
                    "async_flush" => (
                        format!(
                            "flushDiskType=ASYNC_FLUSH; acknowledged data not yet on disk: {}",
                            broker
                                .flush_lag_bytes
                                .map_or("unknown".to_string(), |b| format!("{b} bytes"))
                        ),
                        "Set flushDiskType=SYNC_FLUSH, or rely on a SYNC_MASTER replica: a power loss drops unflushed messages.",
                    ),
                    "async_replication" => (
                        "brokerRole=ASYNC_MASTER: sends are acknowledged before the slave has them"
                            .to_string(),
                        "Set brokerRole=SYNC_MASTER so a send waits for the slave; a master failover loses unreplicated messages.",
                    ),
                    _ => (
                        "no slave is registered for this master".to_string(),
                        "Add a slave (or use controller mode): losing this broker's disk loses every message it holds.",
                    ),
                };
                risk(Severity::Warning, reason, subject.clone(), detail, advice);
            }
        }
        for replica in &broker.replicas {
            let behind = replica
                .lag_bytes
                .is_some_and(|lag| lag > LAGGING_SLAVE_BYTES);
            if replica.in_sync == Some(false) || behind {
                risk(
                    Severity::Warning,
                    "lagging_slave",
                    format!("{}/{}", broker.broker_name, replica.broker_id),
                    format!(
                        "slave {} is {} bytes behind (in sync: {})",
                        replica.addr,
                        replica.lag_bytes.map_or("?".to_string(), |l| l.to_string()),
                        replica
                            .in_sync
                            .map_or("unknown".to_string(), |s| s.to_string())
                    ),
                    "Check the slave's disk and network; until it catches up a master failure loses the difference.",
                );
            }
        }
    }
    for group in groups {
        if group.dlq_messages > 0 {
            risk(
                Severity::Critical,
                "dlq_not_empty",
                group.group.clone(),
                format!("{} messages in %DLQ%{}", group.dlq_messages, group.group),
                "Find why the consumer fails (mqaudit lookup), fix it, then resend the dead-lettered messages.",
            );
        }
        if group.lag_messages > 0 && group.online_consumers == 0 {
            risk(
                Severity::Warning,
                "lag_without_consumers",
                group.group.clone(),
                format!(
                    "{} messages waiting and no consumer online",
                    group.lag_messages
                ),
                "Start the group's consumers (or delete the group): retention (fileReservedTime) will delete what waits.",
            );
        }
    }
    if !trace_topic_present {
        risk(
            Severity::Info,
            "trace_topic_missing",
            TRACE_TOPIC.to_string(),
            "no route for RMQ_SYS_TRACE_TOPIC".to_string(),
            "Set traceTopicEnable=true on the brokers and enable message trace in clients, so audits need no code change.",
        );
    }
    risks.sort();
    risks
}

fn probe_error(call: &str, target: &str, error: &Error) -> ProbeError {
    ProbeError {
        call: call.to_string(),
        target: target.to_string(),
        kind: error.kind().to_string(),
        message: error.to_string(),
    }
}

fn record<T>(
    errors: &mut Vec<ProbeError>,
    call: &str,
    target: &str,
    result: Result<T, Error>,
) -> Option<T> {
    result
        .map_err(|e| errors.push(probe_error(call, target, &e)))
        .ok()
}

fn value<T>(
    errors: &mut Vec<ProbeError>,
    target: &str,
    result: Result<Option<T>, crate::body::BodyError>,
) -> Option<T> {
    match result {
        Ok(value) => value,
        Err(e) => {
            errors.push(ProbeError {
                call: "runtime_info".to_string(),
                target: target.to_string(),
                kind: "protocol".to_string(),
                message: e.to_string(),
            });
            None
        }
    }
}

/// Render the report for a terminal.
pub fn render_text(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mqaudit doctor — name server {} — clusters: {}",
        report.namesrv,
        report.clusters.join(", ")
    );
    let _ = writeln!(out, "\nBROKERS");
    let _ = writeln!(
        out,
        "  {:<18} {:>2}  {:<21} {:<12} {:<10} {:>12} {:>14} {:>14} {:>6}  version",
        "broker",
        "id",
        "addr",
        "role",
        "flush",
        "flush lag B",
        "commitlog min",
        "commitlog max",
        "disk"
    );
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    for b in &report.brokers {
        let _ = writeln!(
            out,
            "  {:<18} {:>2}  {:<21} {:<12} {:<10} {:>12} {:>14} {:>14} {:>6}  {}{}",
            b.broker_name,
            b.broker_id,
            b.addr,
            opt(b.role.clone()),
            opt(b
                .flush_disk_type
                .as_ref()
                .map(|f| f.trim_end_matches("_FLUSH").to_string())),
            opt(b.flush_lag_bytes.map(|v| v.to_string())),
            opt(b.commit_log_min_offset.map(|v| v.to_string())),
            opt(b.commit_log_max_offset.map(|v| v.to_string())),
            opt(b.disk_ratio.map(|v| format!("{:.0}%", v * 100.0))),
            opt(b.version.clone()),
            if b.reachable { "" } else { "  UNREACHABLE" }
        );
        for r in &b.replicas {
            let _ = writeln!(
                out,
                "      ↳ slave {} {}: replication lag {} bytes, in sync: {} (from {})",
                r.broker_id,
                r.addr,
                opt(r.lag_bytes.map(|v| v.to_string())),
                opt(r.in_sync.map(|v| if v {
                    "yes".to_string()
                } else {
                    "NO".to_string()
                })),
                r.source
            );
        }
    }
    let _ = writeln!(out, "\nCONSUMER GROUPS");
    if report.groups.is_empty() {
        let _ = writeln!(out, "  (none)");
    } else {
        let _ = writeln!(
            out,
            "  {:<40} {:>9} {:>12} {:>8} {:>8}  model",
            "group", "consumers", "lag", "retry", "dlq"
        );
        for g in &report.groups {
            let _ = writeln!(
                out,
                "  {:<40} {:>9} {:>12} {:>8} {:>8}  {}",
                g.group,
                g.online_consumers,
                g.lag_messages,
                g.retry_messages,
                g.dlq_messages,
                opt(g.message_model.clone())
            );
        }
    }
    let _ = writeln!(out, "\nVERDICTS");
    if report.risks.is_empty() {
        let _ = writeln!(out, "  no loss risk found");
    }
    for r in &report.risks {
        let severity = match r.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING ",
            Severity::Info => "INFO    ",
        };
        let _ = writeln!(
            out,
            "  {severity} {:<22} {}: {}",
            r.kind, r.subject, r.detail
        );
        let _ = writeln!(out, "           → {}", r.advice);
    }
    if !report.errors.is_empty() {
        let _ = writeln!(out, "\nINCOMPLETE: {} calls failed", report.errors.len());
        for e in &report.errors {
            let _ = writeln!(out, "  {} {} [{}]: {}", e.call, e.target, e.kind, e.message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(
        name: &str,
        id: u64,
        role: &str,
        flush: &str,
        replicas: Vec<ReplicaReport>,
    ) -> BrokerReport {
        BrokerReport {
            cluster: "c".into(),
            broker_name: name.into(),
            broker_id: id,
            addr: format!("{name}:{id}"),
            reachable: true,
            role: Some(role.into()),
            flush_disk_type: Some(flush.into()),
            version: None,
            flush_lag_bytes: Some(10),
            commit_log_min_offset: Some(0),
            commit_log_max_offset: Some(100),
            disk_ratio: Some(0.1),
            replicas,
        }
    }

    fn replica(lag: i64, in_sync: Option<bool>) -> ReplicaReport {
        ReplicaReport {
            broker_id: 1,
            addr: "s:1".into(),
            lag_bytes: Some(lag),
            in_sync,
            source: "ha_status".into(),
        }
    }

    fn kinds(risks: &[Risk]) -> Vec<(String, String)> {
        risks
            .iter()
            .map(|r| (r.kind.clone(), r.subject.clone()))
            .collect()
    }

    #[test]
    fn async_master_with_async_flush_and_a_slave_gets_two_warnings() {
        let brokers = [broker(
            "a",
            0,
            "ASYNC_MASTER",
            "ASYNC_FLUSH",
            vec![replica(0, Some(true))],
        )];
        let risks = verdicts(&brokers, &[], true);
        assert_eq!(
            kinds(&risks),
            [
                ("async_flush".into(), "a/0".into()),
                ("async_replication".into(), "a/0".into())
            ]
        );
        assert!(risks[0].detail.contains("10 bytes"));
    }

    #[test]
    fn sync_master_without_slave_only_lacks_a_replica() {
        let risks = verdicts(
            &[broker("b", 0, "SYNC_MASTER", "SYNC_FLUSH", vec![])],
            &[],
            true,
        );
        assert_eq!(kinds(&risks), [("no_replica".into(), "b/0".into())]);
    }

    #[test]
    fn slaves_never_get_master_verdicts_and_lagging_slaves_are_flagged() {
        let brokers = [
            broker(
                "a",
                0,
                "SYNC_MASTER",
                "SYNC_FLUSH",
                vec![replica(LAGGING_SLAVE_BYTES + 1, Some(true))],
            ),
            broker("a", 1, "SLAVE", "ASYNC_FLUSH", vec![]),
        ];
        assert_eq!(
            kinds(&verdicts(&brokers, &[], true)),
            [("lagging_slave".into(), "a/1".into())]
        );
        let out_of_sync = [broker(
            "a",
            0,
            "SYNC_MASTER",
            "SYNC_FLUSH",
            vec![replica(0, Some(false))],
        )];
        assert_eq!(
            kinds(&verdicts(&out_of_sync, &[], true)),
            [("lagging_slave".into(), "a/1".into())]
        );
    }

    #[test]
    fn groups_with_dlq_or_unattended_lag_and_a_missing_trace_topic() {
        let group = |name: &str, consumers, lag, dlq| GroupReport {
            group: name.into(),
            online_consumers: consumers,
            message_model: None,
            lag_messages: lag,
            retry_messages: 0,
            dlq_messages: dlq,
            topics: vec![],
        };
        let groups = [
            group("ok", 1, 5, 0),
            group("dead", 1, 0, 3),
            group("idle", 0, 7, 0),
            group("empty", 0, 0, 0),
        ];
        let risks = verdicts(&[], &groups, false);
        assert_eq!(
            kinds(&risks),
            [
                ("dlq_not_empty".into(), "dead".into()),
                ("lag_without_consumers".into(), "idle".into()),
                ("trace_topic_missing".into(), TRACE_TOPIC.into())
            ]
        );
        assert_eq!(risks[0].severity, Severity::Critical);
    }

    #[test]
    fn unreachable_broker_is_critical_and_nothing_else_is_guessed() {
        let mut down = broker("a", 0, "ASYNC_MASTER", "ASYNC_FLUSH", vec![]);
        down.reachable = false;
        assert_eq!(
            kinds(&verdicts(&[down], &[], true)),
            [("broker_unreachable".into(), "a/0".into())]
        );
    }

    #[test]
    fn built_in_groups_are_not_reported() {
        assert!(is_builtin_group("TOOLS_CONSUMER"));
        assert!(is_builtin_group("CID_ONSAPI_OWNER"));
        assert!(!is_builtin_group("orders"));
    }
}
