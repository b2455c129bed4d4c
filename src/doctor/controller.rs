//! The doctor's view of 5.x controller mode: every controller the brokers
//! in controller mode name (`controllerAddr`), who leads, and the leader's
//! sync-state data of their broker sets.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Errors;
use crate::admin::Admin;

/// One controller.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ControllerReport {
    /// `host:port` (its DLedger address, where a DLedger controller answers).
    pub addr: String,
    /// It answered CONTROLLER_GET_METADATA_INFO.
    pub reachable: bool,
    /// It leads the controller group.
    pub is_leader: bool,
    /// The leader it names (empty when none).
    pub leader_addr: String,
}

/// One broker set's sync-state data, from the controller leader.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SyncStateReport {
    /// Broker set name.
    pub broker_name: String,
    /// Elected master's address.
    pub master_addr: Option<String>,
    /// +1 at every election.
    pub master_epoch: Option<i64>,
    /// Addresses in the sync-state set.
    pub in_sync: Vec<String>,
    /// Registered replicas outside it.
    pub not_in_sync: Vec<String>,
}

/// Ask every controller in `named` (address → the broker sets naming it);
/// the leader for the sync-state data of those sets.
pub(super) async fn examine(
    admin: &Admin,
    named: &BTreeMap<String, BTreeSet<String>>,
    errors: &mut Errors,
) -> (Vec<ControllerReport>, Vec<SyncStateReport>) {
    let mut controllers = Vec::new();
    let mut leader = None;
    for addr in named.keys() {
        match errors.record(
            "controller_metadata",
            addr,
            admin.controller_metadata(addr).await,
        ) {
            Some(meta) => {
                if meta.is_leader {
                    leader = Some(addr.clone());
                } else if leader.is_none() && !meta.leader_addr.is_empty() {
                    leader = Some(meta.leader_addr.clone());
                }
                controllers.push(ControllerReport {
                    addr: addr.clone(),
                    reachable: true,
                    is_leader: meta.is_leader,
                    leader_addr: meta.leader_addr,
                });
            }
            None => controllers.push(ControllerReport {
                addr: addr.clone(),
                reachable: false,
                is_leader: false,
                leader_addr: String::new(),
            }),
        }
    }
    let Some(leader) = leader else {
        return (controllers, Vec::new());
    };
    let sets: Vec<String> = named
        .values()
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let Some(info) = errors.record(
        "sync_state_data",
        &leader,
        admin.sync_state_data(&leader, &sets).await,
    ) else {
        return (controllers, Vec::new());
    };
    let states = info
        .replicas_info_table
        .into_iter()
        .map(|(broker_name, r)| SyncStateReport {
            broker_name,
            master_addr: r.master_address.filter(|a| !a.is_empty()),
            master_epoch: r.master_epoch,
            in_sync: r
                .in_sync_replicas
                .into_iter()
                .map(|x| x.broker_address)
                .collect(),
            not_in_sync: r
                .not_in_sync_replicas
                .into_iter()
                .map(|x| x.broker_address)
                .collect(),
        })
        .collect();
    (controllers, states)
}
