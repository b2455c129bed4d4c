//! The doctor's verdicts: the loss risks a set of facts shows, each with
//! what was found and one line on what to change. Pure: no I/O, no clock.

use super::{BrokerReport, Facts, GroupReport, LAGGING_SLAVE_BYTES, Risk, Severity, TRACE_TOPIC};
use crate::config::defaults::PROBE_TOPIC;
use crate::posture::{DurabilityRisk, durability_risks};

/// 5.x controller mode: controllers down, no leader, shrunk sync-state sets.
fn controller_risks(facts: &Facts<'_>, risks: &mut Risks) {
    for c in facts.controllers.iter().filter(|c| !c.reachable) {
        risks.add(
            Severity::Warning,
            "controller_unreachable",
            c.addr.clone(),
            format!("controller {} (named by the brokers' controllerAddr) does not answer", c.addr),
            "Restart it: the controller group needs a majority of its DLedger peers to elect masters.",
        );
    }
    let answered = facts.controllers.iter().any(|c| c.reachable);
    let leader = facts
        .controllers
        .iter()
        .any(|c| c.reachable && (c.is_leader || !c.leader_addr.is_empty()));
    if !facts.controllers.is_empty() && !leader {
        risks.add(
            Severity::Critical,
            "controller_no_leader",
            facts
                .controllers
                .iter()
                .map(|c| c.addr.as_str())
                .collect::<Vec<_>>()
                .join(","),
            if answered {
                "the controllers answer but none names a leader".to_string()
            } else {
                "no controller answers".to_string()
            },
            "Restart controllers until a majority of the DLedger group runs: without a leader a failed master is not replaced.",
        );
    }
    for state in facts
        .sync_states
        .iter()
        .filter(|s| !s.not_in_sync.is_empty())
    {
        risks.add(
            Severity::Warning,
            "in_sync_shrunk",
            state.broker_name.clone(),
            format!(
                "{} of {} replicas outside the sync-state set ({}); in sync: {}",
                state.not_in_sync.len(),
                state.not_in_sync.len() + state.in_sync.len(),
                state.not_in_sync.join(", "),
                state.in_sync.join(", ")
            ),
            "Bring the replicas back: an election can only pick an in-sync replica, and with only the master in sync its failure stalls the set.",
        );
    }
}

/// The loss risks the facts show, most severe first.
pub fn verdicts(brokers: &[BrokerReport], groups: &[GroupReport], facts: &Facts<'_>) -> Vec<Risk> {
    let mut risks = Risks::default();
    for broker in brokers {
        broker_risks(broker, &mut risks);
        core_risks(broker, &mut risks);
    }
    for ns in facts.name_servers.iter().filter(|n| !n.reachable) {
        risks.add(
            Severity::Warning,
            "namesrv_unreachable",
            ns.addr.clone(),
            format!("name server {} (named by the brokers' namesrvAddr) does not answer", ns.addr),
            "Restart it: clients and brokers fall back to the others, but all of them down stops every new route.",
        );
    }
    controller_risks(facts, &mut risks);
    for group in groups {
        group_risks(group, &mut risks);
    }
    probe_risks(brokers, facts.probe_topic_brokers, &mut risks);
    if !facts.trace_topic_present {
        risks.add(
            Severity::Info,
            "trace_topic_missing",
            TRACE_TOPIC.to_string(),
            "no route for RMQ_SYS_TRACE_TOPIC".to_string(),
            "Set traceTopicEnable=true on the brokers and enable message trace in clients, so audits need no code change.",
        );
    }
    let mut risks = risks.0;
    risks.sort();
    risks
}

/// No probe at all, or masters the probe's topic does not reach.
fn probe_risks(brokers: &[BrokerReport], probed: &[String], risks: &mut Risks) {
    if probed.is_empty() {
        risks.add(
            Severity::Info,
            "probe_off",
            PROBE_TOPIC.to_string(),
            format!("no route for {PROBE_TOPIC}: no end-to-end probe proves that a message sent now arrives"),
            "Enable [cluster.probe] in mqaudit's configuration (docs/probe.md): 12 small messages a minute per master, on its own topic.",
        );
        return;
    }
    let mut masters: Vec<&str> = brokers
        .iter()
        .filter(|b| b.broker_id == 0)
        .map(|b| b.broker_name.as_str())
        .collect();
    masters.dedup();
    for master in masters
        .into_iter()
        .filter(|m| !probed.iter().any(|p| p == m))
    {
        risks.add(
            Severity::Info,
            "probe_partial",
            format!("{master}/0"),
            format!("master {master} has no writable queue of {PROBE_TOPIC}: the probe does not reach it"),
            "Let the probe create its topic there (create_topic = true), or create it: mqadmin updateTopic -b ADDR -t mqaudit_probe.",
        );
    }
}

#[derive(Default)]
struct Risks(Vec<Risk>);

impl Risks {
    fn add(
        &mut self,
        severity: Severity,
        kind: &str,
        subject: String,
        detail: String,
        advice: &str,
    ) {
        self.0.push(Risk {
            severity,
            kind: kind.to_string(),
            subject,
            detail,
            advice: advice.to_string(),
        });
    }
}

fn broker_risks(broker: &BrokerReport, risks: &mut Risks) {
    let subject = format!("{}/{}", broker.broker_name, broker.broker_id);
    if !broker.reachable {
        risks.add(
            Severity::Critical,
            "broker_unreachable",
            subject,
            format!("{} answered neither runtime info nor config", broker.addr),
            "Check the broker process and network; its queues cannot be read or written.",
        );
        return;
    }
    if broker.broker_id == 0 {
        let found = durability_risks(
            broker.role.as_deref(),
            broker.flush_disk_type.as_deref(),
            broker.replicas.iter().filter(|r| r.is_live()).count(),
        );
        for reason in found {
            let (detail, advice) = durability_advice(broker, reason);
            risks.add(
                Severity::Warning,
                reason.as_str(),
                subject.clone(),
                detail,
                advice,
            );
        }
    }
    for replica in &broker.replicas {
        let behind = replica
            .lag_bytes
            .is_some_and(|lag| lag > LAGGING_SLAVE_BYTES);
        if replica.in_sync == Some(false) || behind {
            risks.add(
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

/// Writes refused, transactions discarded, timers stalled.
fn core_risks(broker: &BrokerReport, risks: &mut Risks) {
    let subject = format!("{}/{}", broker.broker_name, broker.broker_id);
    if broker.broker_id == 0 && broker.writable == Some(false) {
        risks.add(
            Severity::Critical,
            "broker_not_writable",
            subject.clone(),
            "brokerPermission has no write bit: every send to this master is refused".to_string(),
            "If not intended: mqadmin updateBrokerConfig -k brokerPermission -v 6.",
        );
    }
    if let Some(n) = broker.transaction_discarded.filter(|n| *n > 0) {
        risks.add(
            Severity::Critical,
            "transaction_discarded",
            subject.clone(),
            format!("{n} transaction half messages discarded after the check limit (TRANS_CHECK_MAX_TIME_TOPIC)"),
            "Each is a commit never delivered: fix the producers' check listeners and replay the committed ones.",
        );
    }
    // A slave's timer wheel does not deliver: only a master's lag counts.
    if let Some(lag) = broker
        .timer_dequeue_lag_seconds
        .filter(|s| broker.broker_id == 0 && *s > 300)
    {
        risks.add(
            Severity::Warning,
            "timer_stalled",
            subject,
            format!("the timer wheel delivers {lag} s late (timerReadBehind)"),
            "Check the broker's load and disk: due timer messages are not delivered.",
        );
    }
}

/// What a durability risk means for this broker, and what to change.
fn durability_advice(broker: &BrokerReport, risk: DurabilityRisk) -> (String, &'static str) {
    match risk {
        DurabilityRisk::AsyncFlush => (
            format!(
                "flushDiskType=ASYNC_FLUSH; acknowledged data not yet on disk: {}",
                broker
                    .flush_lag_bytes
                    .map_or("unknown".to_string(), |b| format!("{b} bytes"))
            ),
            "Set flushDiskType=SYNC_FLUSH, or rely on a SYNC_MASTER replica: a power loss drops unflushed messages.",
        ),
        DurabilityRisk::AsyncReplication => (
            "brokerRole=ASYNC_MASTER: sends are acknowledged before the slave has them".to_string(),
            "Set brokerRole=SYNC_MASTER so a send waits for the slave; a master failover loses unreplicated messages.",
        ),
        DurabilityRisk::NoReplica => (
            "no slave is registered for this master".to_string(),
            "Add a slave (or use controller mode): losing this broker's disk loses every message it holds.",
        ),
    }
}

fn group_risks(group: &GroupReport, risks: &mut Risks) {
    if !group.pop_topics.is_empty() {
        risks.add(
            Severity::Info,
            "pop_lag_approximate",
            group.group.clone(),
            format!(
                "pops {}: popped, unacknowledged messages count as consumed, so its lag is a lower bound",
                group.pop_topics.join(", ")
            ),
            "Watch its retry topic (%RETRY%group_topic) too: a pop not acknowledged within invisibleTime is redelivered there, not lost.",
        );
    }
    if group.dlq_messages > 0 {
        risks.add(
            Severity::Critical,
            "dlq_not_empty",
            group.group.clone(),
            format!("{} messages in %DLQ%{}", group.dlq_messages, group.group),
            "Find why the consumer fails (mqaudit lookup), fix it, then resend the dead-lettered messages.",
        );
    }
    if group.lag_messages > 0 && group.online_consumers == 0 {
        risks.add(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::is_builtin_group;
    use crate::doctor::{Facts, NameServerReport, ReplicaReport, TRACE_TOPIC};

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
            writable: Some(true),
            file_reserved_hours: Some(72.0),
            transaction_discarded: Some(0),
            timer_dequeue_lag_seconds: Some(0),
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

    /// The verdicts with the probe on every broker (so only the facts a
    /// test sets show).
    fn judge(
        brokers: &[BrokerReport],
        groups: &[crate::doctor::GroupReport],
        trace_topic_present: bool,
        name_servers: &[crate::doctor::NameServerReport],
    ) -> Vec<Risk> {
        let mut probed: Vec<String> = brokers.iter().map(|b| b.broker_name.clone()).collect();
        probed.push("-".into());
        verdicts(
            brokers,
            groups,
            &Facts {
                trace_topic_present,
                probe_topic_brokers: &probed,
                name_servers,
                controllers: &[],
                sync_states: &[],
            },
        )
    }

    #[test]
    fn controllers_without_a_leader_and_a_shrunk_sync_state_set_are_risks() {
        use crate::doctor::{ControllerReport, SyncStateReport};
        let controller = |addr: &str, reachable: bool, is_leader: bool| ControllerReport {
            addr: addr.into(),
            reachable,
            is_leader,
            leader_addr: String::new(),
        };
        let shrunk = [SyncStateReport {
            broker_name: "c".into(),
            master_addr: Some("m:1".into()),
            master_epoch: Some(2),
            in_sync: vec!["m:1".into()],
            not_in_sync: vec!["s:1".into()],
        }];
        let risks = |controllers: &[ControllerReport], states: &[SyncStateReport]| {
            let mut found = kinds(&verdicts(
                &[],
                &[],
                &Facts {
                    trace_topic_present: true,
                    probe_topic_brokers: &[],
                    name_servers: &[],
                    controllers,
                    sync_states: states,
                },
            ));
            found.retain(|(k, _)| k != "probe_off");
            found
        };
        assert_eq!(risks(&[controller("x:1", true, true)], &[]), []);
        assert_eq!(
            risks(
                &[
                    controller("x:1", true, true),
                    controller("y:1", false, false)
                ],
                &shrunk
            ),
            [
                ("controller_unreachable".into(), "y:1".into()),
                ("in_sync_shrunk".into(), "c".into())
            ]
        );
        assert_eq!(
            risks(&[controller("y:1", false, false)], &[]),
            [
                ("controller_no_leader".into(), "y:1".into()),
                ("controller_unreachable".into(), "y:1".into())
            ]
        );
    }

    #[test]
    fn no_probe_is_said_once_and_a_master_the_probe_misses_by_name() {
        let brokers = [
            broker(
                "a",
                0,
                "SYNC_MASTER",
                "SYNC_FLUSH",
                vec![replica(0, Some(true))],
            ),
            broker(
                "b",
                0,
                "SYNC_MASTER",
                "SYNC_FLUSH",
                vec![replica(0, Some(true))],
            ),
        ];
        let facts = |probed: &'static [String]| Facts {
            trace_topic_present: true,
            probe_topic_brokers: probed,
            name_servers: &[],
            controllers: &[],
            sync_states: &[],
        };
        assert_eq!(
            kinds(&verdicts(&brokers, &[], &facts(&[]))),
            [("probe_off".into(), "mqaudit_probe".into())]
        );
        static ONLY_A: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["a".to_string()]);
        assert_eq!(
            kinds(&verdicts(&brokers, &[], &facts(&ONLY_A))),
            [("probe_partial".into(), "b/0".into())]
        );
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
        let risks = judge(&brokers, &[], true, &[]);
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
        let risks = judge(
            &[broker("b", 0, "SYNC_MASTER", "SYNC_FLUSH", vec![])],
            &[],
            true,
            &[],
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
            kinds(&judge(&brokers, &[], true, &[])),
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
            kinds(&judge(&out_of_sync, &[], true, &[])),
            [("lagging_slave".into(), "a/1".into())]
        );
    }

    #[test]
    fn groups_with_dlq_unattended_lag_or_pop_and_a_missing_trace_topic() {
        let group = |name: &str, consumers, lag, dlq| GroupReport {
            group: name.into(),
            online_consumers: consumers,
            message_model: None,
            lag_messages: lag,
            retry_messages: 0,
            dlq_messages: dlq,
            topics: vec![],
            consume_type: None,
            pop_topics: Vec::new(),
        };
        let groups = [
            group("ok", 1, 5, 0),
            group("dead", 1, 0, 3),
            group("idle", 0, 7, 0),
            group("empty", 0, 0, 0),
            GroupReport {
                pop_topics: vec!["T1".into(), "T2".into()],
                ..group("popper", 1, 0, 0)
            },
        ];
        let risks = judge(&[], &groups, false, &[]);
        assert_eq!(
            kinds(&risks),
            [
                ("dlq_not_empty".into(), "dead".into()),
                ("lag_without_consumers".into(), "idle".into()),
                ("pop_lag_approximate".into(), "popper".into()),
                ("trace_topic_missing".into(), TRACE_TOPIC.into())
            ]
        );
        assert_eq!(risks[0].severity, Severity::Critical);
        let pop = risks
            .iter()
            .find(|r| r.kind == "pop_lag_approximate")
            .expect("pop");
        assert_eq!(pop.severity, Severity::Info);
        assert!(pop.detail.starts_with("pops T1, T2:"), "{}", pop.detail);
    }

    #[test]
    fn unreachable_broker_is_critical_and_nothing_else_is_guessed() {
        let mut down = broker("a", 0, "ASYNC_MASTER", "ASYNC_FLUSH", vec![]);
        down.reachable = false;
        assert_eq!(
            kinds(&judge(&[down], &[], true, &[])),
            [("broker_unreachable".into(), "a/0".into())]
        );
    }

    #[test]
    fn built_in_groups_are_not_reported() {
        assert!(is_builtin_group("TOOLS_CONSUMER"));
        assert!(is_builtin_group("CID_ONSAPI_OWNER"));
        assert!(!is_builtin_group("orders"));
    }

    #[test]
    fn read_only_masters_discarded_transactions_stalled_timers_and_dead_name_servers() {
        let mut read_only = broker(
            "a",
            0,
            "SYNC_MASTER",
            "SYNC_FLUSH",
            vec![replica(0, Some(true))],
        );
        read_only.writable = Some(false);
        read_only.transaction_discarded = Some(2);
        read_only.timer_dequeue_lag_seconds = Some(301);
        let mut slave = broker("a", 1, "SLAVE", "SYNC_FLUSH", vec![]);
        slave.writable = Some(false);
        slave.timer_dequeue_lag_seconds = Some(100_000);
        let name_servers = [
            NameServerReport {
                addr: "n:1".into(),
                reachable: true,
                brokers: Some(2),
            },
            NameServerReport {
                addr: "n:2".into(),
                reachable: false,
                brokers: None,
            },
        ];
        let risks = judge(&[read_only, slave], &[], true, &name_servers);
        assert_eq!(
            kinds(&risks),
            [
                ("broker_not_writable".into(), "a/0".into()),
                ("transaction_discarded".into(), "a/0".into()),
                ("namesrv_unreachable".into(), "n:2".into()),
                ("timer_stalled".into(), "a/0".into()),
            ]
        );
    }
}
