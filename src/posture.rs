//! A broker group's durability posture, from facts already fetched: each
//! slave's replication lag and in-sync state, and a master's durability
//! risks. Shared by `doctor` (a report) and `collector` (metrics) so both say
//! the same thing. Pure: no I/O.

use serde::Serialize;

use crate::admin::HaStatus;

/// Replication state of one slave, seen from its master.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Replica {
    /// Slave broker id.
    pub broker_id: u64,
    /// Slave address.
    pub addr: String,
    /// Master max offset − slave max offset, in bytes (≥ 0).
    pub lag_bytes: Option<i64>,
    /// The master's in-sync verdict, when its HA status names this slave unambiguously.
    pub in_sync: Option<bool>,
    /// `ha_status` (the master's GET_BROKER_HA_STATUS), `commit_log_offsets`
    /// (both brokers' runtime info), or `slave_down` (the slave answered
    /// nothing this cycle: no copy is being made, whatever the master's HA
    /// table still lists).
    pub source: String,
}

impl Replica {
    /// A slave that answered this cycle: a copy is being kept.
    pub fn is_live(&self) -> bool {
        self.source != "slave_down"
    }
}

/// One slave as input: id, address, and its commit-log max offset if read.
pub struct SlaveFacts<'a> {
    /// Slave broker id.
    pub broker_id: u64,
    /// Slave address.
    pub addr: &'a str,
    /// Its `commitLogMaxOffset`.
    pub max_offset: Option<i64>,
    /// It answered its runtime info this cycle.
    pub live: bool,
}

/// Each slave's replication state. HA status entries are keyed by the
/// slave's HA socket, not its broker address, so they are attributed only
/// when there is exactly one slave and one connection; otherwise lag comes
/// from comparing commit-log max offsets and `in_sync` stays unknown. A
/// slave that answered nothing is not in sync and its lag is unknown: a
/// master's HA table can keep a dead slave's connection (rocketmq-rust does,
/// with its last `diff`), and the name server lists a stopped slave until it
/// expires — neither is a copy.
pub fn replicas(
    master_max_offset: Option<i64>,
    slaves: &[SlaveFacts<'_>],
    ha: Option<&HaStatus>,
) -> Vec<Replica> {
    let connections = match ha {
        Some(HaStatus::Available(info)) if info.master => info.ha_connection_info.as_slice(),
        _ => &[],
    };
    slaves
        .iter()
        .map(|slave| {
            if !slave.live {
                Replica {
                    broker_id: slave.broker_id,
                    addr: slave.addr.to_string(),
                    lag_bytes: None,
                    in_sync: Some(false),
                    source: "slave_down".to_string(),
                }
            } else if slaves.len() == 1 && connections.len() == 1 {
                Replica {
                    broker_id: slave.broker_id,
                    addr: slave.addr.to_string(),
                    lag_bytes: Some(connections[0].diff.max(0)),
                    in_sync: Some(connections[0].in_sync),
                    source: "ha_status".to_string(),
                }
            } else {
                Replica {
                    broker_id: slave.broker_id,
                    addr: slave.addr.to_string(),
                    lag_bytes: master_max_offset
                        .zip(slave.max_offset)
                        .map(|(m, s)| (m - s).max(0)),
                    in_sync: None,
                    source: "commit_log_offsets".to_string(),
                }
            }
        })
        .collect()
}

/// Why a master can lose acknowledged messages (the `reason` label of
/// `rocketmq_broker_durability_risk`, the `kind` of a doctor risk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DurabilityRisk {
    /// `ASYNC_FLUSH`: acknowledged before it is on disk; a crash loses the
    /// unflushed tail.
    AsyncFlush,
    /// An `ASYNC_MASTER` with a slave: acknowledged before the slave has it;
    /// a failover loses what was not yet replicated.
    AsyncReplication,
    /// No slave: the master's disk is the only copy.
    NoReplica,
}

impl DurabilityRisk {
    /// Every risk, in report order.
    pub const ALL: [DurabilityRisk; 3] = [
        DurabilityRisk::AsyncFlush,
        DurabilityRisk::AsyncReplication,
        DurabilityRisk::NoReplica,
    ];

    /// The exported text.
    pub fn as_str(self) -> &'static str {
        match self {
            DurabilityRisk::AsyncFlush => "async_flush",
            DurabilityRisk::AsyncReplication => "async_replication",
            DurabilityRisk::NoReplica => "no_replica",
        }
    }
}

/// Durability risks of a master, from its `brokerRole`, `flushDiskType`
/// and number of live slaves (see [`Replica::is_live`]).
pub fn durability_risks(
    role: Option<&str>,
    flush_disk_type: Option<&str>,
    replica_count: usize,
) -> Vec<DurabilityRisk> {
    let mut risks = Vec::new();
    if flush_disk_type == Some("ASYNC_FLUSH") {
        risks.push(DurabilityRisk::AsyncFlush);
    }
    if role == Some("ASYNC_MASTER") && replica_count > 0 {
        risks.push(DurabilityRisk::AsyncReplication);
    }
    if replica_count == 0 {
        risks.push(DurabilityRisk::NoReplica);
    }
    risks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{HaConnectionInfo, HaRuntimeInfo};

    fn ha(connections: Vec<(i64, bool)>) -> HaStatus {
        HaStatus::Available(HaRuntimeInfo {
            master: true,
            ha_connection_info: connections
                .into_iter()
                .map(|(diff, in_sync)| HaConnectionInfo {
                    diff,
                    in_sync,
                    slave_ack_offset: 0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn one_slave_one_connection_uses_ha_status() {
        let slaves = [SlaveFacts {
            broker_id: 1,
            addr: "s:1",
            max_offset: Some(10),
            live: true,
        }];
        let r = replicas(Some(100), &slaves, Some(&ha(vec![(7, true)])));
        assert_eq!(
            (r[0].lag_bytes, r[0].in_sync, r[0].source.as_str()),
            (Some(7), Some(true), "ha_status")
        );
    }

    #[test]
    fn ambiguous_ha_falls_back_to_offsets() {
        let slaves = [
            SlaveFacts {
                broker_id: 1,
                addr: "s:1",
                max_offset: Some(90),
                live: true,
            },
            SlaveFacts {
                broker_id: 2,
                addr: "s:2",
                max_offset: None,
                live: true,
            },
        ];
        let r = replicas(Some(100), &slaves, Some(&ha(vec![(0, true), (5, false)])));
        assert_eq!((r[0].lag_bytes, r[0].in_sync), (Some(10), None));
        assert_eq!(r[1].lag_bytes, None);
        // A stale connection entry (rocketmq-rust after a slave restart) is ambiguous too.
        let one = [SlaveFacts {
            broker_id: 1,
            addr: "s:1",
            max_offset: Some(100),
            live: true,
        }];
        let r = replicas(Some(100), &one, Some(&ha(vec![(0, true), (1200, false)])));
        assert_eq!(
            (r[0].lag_bytes, r[0].source.as_str()),
            (Some(0), "commit_log_offsets")
        );
    }

    #[test]
    fn a_dead_slave_is_not_in_sync_and_its_stale_ha_entry_is_ignored() {
        let dead = [SlaveFacts {
            broker_id: 1,
            addr: "s:1",
            max_offset: None,
            live: false,
        }];
        // rocketmq-rust keeps the dead slave's connection with diff 0.
        let r = replicas(Some(100), &dead, Some(&ha(vec![(0, true)])));
        assert_eq!(
            (r[0].lag_bytes, r[0].in_sync, r[0].is_live()),
            (None, Some(false), false)
        );
    }

    fn texts(risks: Vec<DurabilityRisk>) -> Vec<&'static str> {
        risks.into_iter().map(DurabilityRisk::as_str).collect()
    }

    #[test]
    fn risks_by_configuration() {
        assert_eq!(
            texts(durability_risks(
                Some("ASYNC_MASTER"),
                Some("ASYNC_FLUSH"),
                1
            )),
            ["async_flush", "async_replication"]
        );
        assert_eq!(
            texts(durability_risks(Some("SYNC_MASTER"), Some("SYNC_FLUSH"), 1)),
            Vec::<&str>::new()
        );
        assert_eq!(
            texts(durability_risks(Some("SYNC_MASTER"), Some("SYNC_FLUSH"), 0)),
            ["no_replica"]
        );
        assert_eq!(
            texts(durability_risks(
                Some("ASYNC_MASTER"),
                Some("SYNC_FLUSH"),
                0
            )),
            ["no_replica"]
        );
    }
}
