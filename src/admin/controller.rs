//! Requests to a 5.x controller (the DLedger group that elects masters and
//! keeps each broker set's in-sync replicas when brokers run with
//! `enableControllerMode`): its metadata (who leads the controller group)
//! and the sync-state data of broker sets. Read only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Admin, Error, Fields, ensure_success, header};
use crate::body::json;
use crate::remoting::Command;
use crate::remoting::codes::request as code;

/// CONTROLLER_GET_METADATA_INFO: one controller's view of its group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControllerMetadata {
    /// DLedger group name.
    pub group: String,
    /// Id of the controller leader (`n0`…), empty while there is none.
    pub leader_id: String,
    /// Remoting address of the leader, empty while there is none.
    pub leader_addr: String,
    /// True when the answering controller is the leader.
    pub is_leader: bool,
    /// The group's peers as configured (`n0-host:port;n1-…`).
    pub peers: String,
}

/// CONTROLLER_GET_SYNC_STATE_DATA: broker set name → its replicas.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerReplicasInfo {
    /// Per broker set.
    #[serde(default)]
    pub replicas_info_table: BTreeMap<String, ReplicasInfo>,
}

/// One broker set's master and replicas, as the controller holds them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasInfo {
    /// The elected master's broker id (absent or -1 while there is none).
    #[serde(default)]
    pub master_broker_id: Option<i64>,
    /// The master's address, empty while there is none.
    #[serde(default)]
    pub master_address: Option<String>,
    /// Bumped at every election.
    #[serde(default)]
    pub master_epoch: Option<i64>,
    /// Bumped at every change of the in-sync set.
    #[serde(default)]
    pub sync_state_set_epoch: Option<i64>,
    /// Replicas in the sync-state set: an election picks among them.
    #[serde(default)]
    pub in_sync_replicas: Vec<ReplicaIdentity>,
    /// Registered replicas outside it.
    #[serde(default)]
    pub not_in_sync_replicas: Vec<ReplicaIdentity>,
}

/// One replica of a broker set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaIdentity {
    /// Broker set name.
    #[serde(default)]
    pub broker_name: String,
    /// Broker id the controller assigned.
    #[serde(default)]
    pub broker_id: i64,
    /// Address.
    #[serde(default)]
    pub broker_address: String,
    /// The controller's heartbeat view: false once it missed heartbeats.
    #[serde(default)]
    pub alive: Option<bool>,
}

impl Admin {
    /// 1005 CONTROLLER_GET_METADATA_INFO (any controller of the group).
    ///
    /// # Errors
    /// Transport errors, a failure code, or a missing header field.
    pub async fn controller_metadata(&self, controller: &str) -> Result<ControllerMetadata, Error> {
        let response = self
            .call_ok(
                controller,
                code::CONTROLLER_GET_METADATA_INFO,
                Fields::new(),
            )
            .await?;
        let what = "CONTROLLER_GET_METADATA_INFO";
        let optional = |name: &str| response.ext(name).unwrap_or("").to_string();
        Ok(ControllerMetadata {
            group: optional("group"),
            leader_id: optional("controllerLeaderId"),
            leader_addr: optional("controllerLeaderAddress"),
            is_leader: header(&response, what, "isLeader")? == "true",
            peers: optional("peers"),
        })
    }

    /// 1006 CONTROLLER_GET_SYNC_STATE_DATA for `broker_names` (the
    /// controller leader answers; a follower refuses).
    ///
    /// # Errors
    /// Transport errors, a failure code, or a body that does not parse.
    pub async fn sync_state_data(
        &self,
        controller: &str,
        broker_names: &[String],
    ) -> Result<BrokerReplicasInfo, Error> {
        let body = serde_json::to_vec(broker_names)
            .map_err(|e| Error::protocol(format!("encode broker names: {e}")))?;
        let request =
            Command::request(code::CONTROLLER_GET_SYNC_STATE_DATA, BTreeMap::new()).with_body(body);
        let response = self
            .invoke(controller, code::CONTROLLER_GET_SYNC_STATE_DATA, request)
            .await?;
        let response = ensure_success(code::CONTROLLER_GET_SYNC_STATE_DATA, response)?;
        Ok(json::parse_as(&response.body, "BrokerReplicasInfo")?)
    }
}
