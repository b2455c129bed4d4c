//! `mqaudit doctor`: the message-loss checklist against a live cluster.
//!
//! [`examine`] gathers facts through a [`Cluster`] handle (concurrently,
//! bounded, every call with the admin timeout): broker facts in
//! `brokers`, group facts in `groups`; [`verdicts`] is pure and turns
//! facts into risks, each with one line on what to change; [`render_text`]
//! prints the report for a terminal. A call that fails is recorded in the
//! report (`errors`) and never aborts the report, except when the name
//! server itself cannot be read.
//!
//! The JSON form of [`Report`] is a stable interface, documented in
//! `docs/doctor.md`; add fields, never rename or remove them.

mod brokers;
mod controller;
mod groups;
mod text;
mod verdicts;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::admin::{BodyError, Cluster, Error};

pub use controller::{ControllerReport, SyncStateReport};
pub use text::render_text;
pub use verdicts::verdicts;

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
    /// Masters carrying the end-to-end probe's default topic
    /// (`mqaudit_probe`): empty when no probe watches the cluster.
    pub probe_topic_brokers: Vec<String>,
    /// The name server asked, and every other one the brokers name
    /// (`namesrvAddr`), each probed.
    pub name_servers: Vec<NameServerReport>,
    /// 5.x controllers the brokers in controller mode name (empty without
    /// controller mode).
    pub controllers: Vec<ControllerReport>,
    /// Their broker sets' sync-state data, from the controller leader.
    pub sync_states: Vec<SyncStateReport>,
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
    /// `brokerPermission` allows writes (sends accepted).
    pub writable: Option<bool>,
    /// `fileReservedTime`: hours commit-log files are kept.
    pub file_reserved_hours: Option<f64>,
    /// Masters: transaction half messages discarded after the check limit
    /// and still stored in `TRANS_CHECK_MAX_TIME_TOPIC`.
    pub transaction_discarded: Option<i64>,
    /// 5.x: seconds the timer wheel's delivery is behind (`timerReadBehind`).
    pub timer_dequeue_lag_seconds: Option<i64>,
}

/// One name server.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NameServerReport {
    /// `host:port`.
    pub addr: String,
    /// It answered GET_BROKER_CLUSTER_INFO.
    pub reachable: bool,
    /// Broker processes it lists.
    pub brokers: Option<usize>,
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
    /// `CONSUME_PASSIVELY`, `CONSUME_ACTIVELY` or `CONSUME_POP` (5.x: lag
    /// is approximate) when a consumer is online.
    pub consume_type: Option<String>,
    /// Topics a 5.x master serves this group in POP mode (402, the mode
    /// `mqadmin setConsumeMode` set), online or not; its lag there is
    /// approximate. Empty on 4.x.
    pub pop_topics: Vec<String>,
}

/// A risk of losing messages, with what to change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Risk {
    /// `critical`, `warning` or `info`.
    pub severity: Severity,
    /// Stable identifier, one of the kinds docs/doctor.md lists
    /// (`async_flush`, `no_replica`, `dlq_not_empty`, `pop_lag_approximate`, …).
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

/// The cluster-wide facts the verdicts read besides brokers and groups.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// `RMQ_SYS_TRACE_TOPIC` is routed.
    pub trace_topic_present: bool,
    /// Masters carrying the probe topic.
    pub probe_topic_brokers: &'a [String],
    /// Name servers, each probed.
    pub name_servers: &'a [NameServerReport],
    /// 5.x controllers the brokers in controller mode name.
    pub controllers: &'a [ControllerReport],
    /// Their broker sets' sync-state data.
    pub sync_states: &'a [SyncStateReport],
}

/// Gather every fact and compute the verdicts.
///
/// # Errors
/// Only when no name server's cluster info can be read; every other
/// failure is recorded in [`Report::errors`].
pub async fn examine(cluster: &Cluster) -> Result<Report, Error> {
    let info = cluster.cluster_info().await?;
    let limiter = Arc::new(Semaphore::new(CONCURRENCY));
    let mut errors = Errors::default();
    let (brokers, named, controller_addrs) =
        brokers::examine(cluster.admin(), &info, &limiter, &mut errors).await;
    let (controllers, sync_states) =
        controller::examine(cluster.admin(), &controller_addrs, &mut errors).await;
    let masters: Vec<String> = info
        .broker_addr_table
        .values()
        .filter_map(|d| d.master_addr().map(str::to_string))
        .collect();
    let groups = groups::examine(cluster, &masters, &limiter, &mut errors).await;
    let trace_topic_present = match cluster.topic_route(TRACE_TOPIC).await {
        Ok(route) => !route.queue_datas.is_empty(),
        Err(e) if e.is_topic_missing() => false,
        Err(e) => {
            errors.push("topic_route", &cluster.name_servers().join(","), &e);
            false
        }
    };
    let probe_topic_brokers = match cluster
        .topic_route(crate::config::defaults::PROBE_TOPIC)
        .await
    {
        Ok(route) => route
            .queue_datas
            .iter()
            .filter(|q| q.write_queue_nums > 0)
            .map(|q| q.broker_name.clone())
            .collect(),
        Err(e) if e.is_topic_missing() => Vec::new(),
        Err(e) => {
            errors.push("topic_route", &cluster.name_servers().join(","), &e);
            Vec::new()
        }
    };
    let name_servers = brokers::name_servers(cluster, &named, &limiter).await;
    let facts = Facts {
        trace_topic_present,
        probe_topic_brokers: &probe_topic_brokers,
        name_servers: &name_servers,
        controllers: &controllers,
        sync_states: &sync_states,
    };
    let risks = verdicts(&brokers, &groups, &facts);
    Ok(Report {
        format_version: 1,
        namesrv: cluster.name_servers().join(","),
        clusters: info.cluster_addr_table.keys().cloned().collect(),
        brokers,
        groups,
        trace_topic_present,
        probe_topic_brokers,
        name_servers,
        controllers,
        sync_states,
        risks,
        errors: errors.0,
    })
}

/// The calls that failed while gathering.
#[derive(Debug, Default)]
struct Errors(Vec<ProbeError>);

impl Errors {
    fn push(&mut self, call: &str, target: &str, error: &Error) {
        self.0.push(ProbeError {
            call: call.to_string(),
            target: target.to_string(),
            kind: error.kind().to_string(),
            message: error.to_string(),
        });
    }

    /// The value of a call, or `None` with its error recorded.
    fn record<T>(&mut self, call: &str, target: &str, result: Result<T, Error>) -> Option<T> {
        result.map_err(|e| self.push(call, target, &e)).ok()
    }

    /// A runtime-info figure, or `None` with why it did not parse recorded.
    fn value<T>(&mut self, target: &str, result: Result<Option<T>, BodyError>) -> Option<T> {
        match result {
            Ok(value) => value,
            Err(e) => {
                self.0.push(ProbeError {
                    call: "runtime_info".to_string(),
                    target: target.to_string(),
                    kind: "protocol".to_string(),
                    message: e.to_string(),
                });
                None
            }
        }
    }
}
