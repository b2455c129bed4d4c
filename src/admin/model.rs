//! Plain data returned by admin calls, with field names as Java serializes
//! them (camelCase). Unknown fields are ignored so newer brokers and
//! rocketmq-rust's extra fields do not break reading; fields a caller needs
//! are required, so a body missing them is an error, not a silent zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::body::BodyError;
use crate::body::json::MessageQueue;
use crate::body::text;

/// True for groups every broker creates for itself (Java
/// `SubscriptionGroupManager.init`) and the trace dispatcher's internal groups:
/// not application consumers.
pub fn is_builtin_group(group: &str) -> bool {
    const BUILT_IN: [&str; 4] = [
        "TOOLS_CONSUMER",
        "FILTERSRV_CONSUMER",
        "SELF_TEST_C_GROUP",
        "CID_RMQ_SYS_TRANS",
    ];
    BUILT_IN.contains(&group) || group.starts_with("CID_ONS") || group.starts_with("_INNER_TRACE_")
}

/// Broker id of a master in `brokerAddrs` (`MixAll.MASTER_ID`).
pub const MASTER_ID: u64 = 0;

/// GET_BROKER_CLUSTER_INFO: clusters, broker groups and their addresses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// Broker name → the group's members.
    #[serde(default)]
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// Cluster name → broker names.
    #[serde(default)]
    pub cluster_addr_table: BTreeMap<String, Vec<String>>,
}

/// One broker group (a master and its slaves) as the name server knows it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerData {
    /// Cluster the group belongs to.
    pub cluster: String,
    /// Group name, shared by master and slaves.
    pub broker_name: String,
    /// Broker id → `ip:port`. Id 0 is the master; slave ids need not be contiguous.
    #[serde(default)]
    pub broker_addrs: BTreeMap<u64, String>,
}

impl BrokerData {
    /// The master's address, if the master is registered.
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&MASTER_ID).map(String::as_str)
    }

    /// Slaves as `(broker id, address)`.
    pub fn slaves(&self) -> impl Iterator<Item = (u64, &str)> {
        self.broker_addrs
            .iter()
            .filter(|(id, _)| **id != MASTER_ID)
            .map(|(id, addr)| (*id, addr.as_str()))
    }
}

/// GET_ROUTEINFO_BY_TOPIC.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicRoute {
    /// Queue counts and permissions per broker group.
    #[serde(default)]
    pub queue_datas: Vec<QueueData>,
    /// The broker groups serving the topic.
    #[serde(default)]
    pub broker_datas: Vec<BrokerData>,
}

impl TopicRoute {
    /// The topic's queues on broker group `broker_name`, if it has any there.
    pub fn queues_of(&self, broker_name: &str) -> Option<&QueueData> {
        self.queue_datas
            .iter()
            .find(|q| q.broker_name == broker_name)
    }
}

/// A topic's queues on one broker group.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueData {
    /// Broker group.
    pub broker_name: String,
    /// Readable queues.
    pub read_queue_nums: i32,
    /// Writable queues.
    pub write_queue_nums: i32,
    /// `PermName` bits: 4 read, 2 write, 1 inherit.
    pub perm: i32,
    /// Named `topicSynFlag` up to 4.8.0.
    #[serde(default, alias = "topicSynFlag")]
    pub topic_sys_flag: i32,
}

/// GET_ALL_TOPIC_LIST_FROM_NAMESERVER.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopicList {
    #[serde(default)]
    pub topic_list: Vec<String>,
}

/// GET_ALL_TOPIC_CONFIG body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopicConfigWrapper {
    #[serde(default)]
    pub topic_config_table: BTreeMap<String, TopicConfig>,
}

/// One topic's configuration on a broker.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfig {
    /// Topic name.
    pub topic_name: String,
    /// Readable queues.
    pub read_queue_nums: i32,
    /// Writable queues.
    pub write_queue_nums: i32,
    /// Permission bits.
    pub perm: i32,
    /// True for ordered topics.
    #[serde(default)]
    pub order: bool,
    /// System flag bits.
    #[serde(default)]
    pub topic_sys_flag: i32,
    /// 5.x topic attributes (`message.type`, `cleanup.policy`, …); empty on
    /// 4.x and rocketmq-rust.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Permission bit: the topic or broker accepts writes.
pub const PERM_WRITE: i32 = 0x2;
/// Permission bit: the topic or broker serves reads.
pub const PERM_READ: i32 = 0x4;

/// `rw`, `r-`, `-w` or `--` for a permission value.
pub fn perm_text(perm: i32) -> &'static str {
    match (perm & PERM_READ != 0, perm & PERM_WRITE != 0) {
        (true, true) => "rw",
        (true, false) => "r-",
        (false, true) => "-w",
        (false, false) => "--",
    }
}

impl TopicConfig {
    /// The 5.x `message.type` attribute (`NORMAL`, `FIFO`, `DELAY`,
    /// `TRANSACTION`, `MIXED`), `UNSPECIFIED` when absent (4.x topics).
    pub fn message_type(&self) -> &str {
        self.attribute("message.type").unwrap_or("UNSPECIFIED")
    }

    /// The 5.x `cleanup.policy` attribute: `DELETE` (the default) or
    /// `COMPACTION` (the broker keeps only the latest message per key).
    pub fn cleanup_policy(&self) -> &str {
        self.attribute("cleanup.policy").unwrap_or("DELETE")
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        // Stored without the +/- prefix of update requests; accept both.
        self.attributes
            .iter()
            .find(|(k, _)| k.trim_start_matches(['+', '-']) == name)
            .map(|(_, v)| v.as_str())
    }
}

/// GET_ALL_SUBSCRIPTIONGROUP_CONFIG body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionGroupWrapper {
    #[serde(default)]
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
}

/// One consumer group's configuration on a broker.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionGroupConfig {
    /// Group name.
    pub group_name: String,
    /// False when consumption is disabled for the group.
    #[serde(default = "yes")]
    pub consume_enable: bool,
    /// Whether broadcast consumption is allowed.
    #[serde(default = "yes")]
    pub consume_broadcast_enable: bool,
    /// Deliveries before a message goes to the DLQ (used when the client sends none).
    #[serde(default = "sixteen")]
    pub retry_max_times: i32,
    /// Queues of the group's retry topic.
    #[serde(default = "one")]
    pub retry_queue_nums: i32,
}

fn yes() -> bool {
    true
}
fn sixteen() -> i32 {
    16
}
fn one() -> i32 {
    1
}

/// Min and max offset of one queue (GET_TOPIC_STATS_INFO).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicOffset {
    /// First offset still stored; retention moves it up.
    pub min_offset: i64,
    /// One past the last offset written.
    pub max_offset: i64,
    /// Store time of the last message, epoch ms (0 for an empty queue).
    #[serde(default)]
    pub last_update_timestamp: i64,
}

/// A group's position on one queue (GET_CONSUME_STATS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetWrapper {
    /// Queue max offset.
    pub broker_offset: i64,
    /// Committed offset (Java turns "none" into 0).
    pub consumer_offset: i64,
    /// Furthest pulled offset (5.x).
    #[serde(default)]
    pub pull_offset: Option<i64>,
    /// Store time of the last consumed message, epoch ms (0 if none).
    #[serde(default)]
    pub last_timestamp: i64,
}

impl OffsetWrapper {
    /// Messages not yet consumed. Can be negative on the wire (offsets are
    /// read at different instants); clamped to 0 here.
    pub fn lag(&self) -> i64 {
        (self.broker_offset - self.consumer_offset).max(0)
    }
}

/// GET_CONSUME_STATS result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumeStats {
    /// Consumption rate reported by the broker.
    pub consume_tps: f64,
    /// Per-queue positions, sorted by queue.
    pub offsets: Vec<(MessageQueue, OffsetWrapper)>,
}

impl ConsumeStats {
    /// Total lag over the queues of topics `include` accepts.
    pub fn lag_where(&self, include: impl Fn(&str) -> bool) -> i64 {
        self.offsets
            .iter()
            .filter(|(q, _)| include(&q.topic))
            .map(|(_, o)| o.lag())
            .sum()
    }
}

/// GET_CONSUMER_CONNECTION_LIST result.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerConnection {
    /// Online consumer instances.
    #[serde(default)]
    pub connection_set: Vec<ClientConnection>,
    /// `CONSUME_ACTIVELY` (pull), `CONSUME_PASSIVELY` (push) or `CONSUME_POP`.
    #[serde(default)]
    pub consume_type: Option<String>,
    /// `CLUSTERING` or `BROADCASTING`.
    #[serde(default)]
    pub message_model: Option<String>,
    /// Topic → subscription expression.
    #[serde(default)]
    pub subscription_table: BTreeMap<String, SubscriptionData>,
}

impl ConsumerConnection {
    /// True for POP consumers (5.x).
    pub fn is_pop(&self) -> bool {
        self.consume_type.as_deref() == Some("CONSUME_POP")
    }

    /// True for broadcast groups, whose offsets live on the clients.
    pub fn is_broadcast(&self) -> bool {
        self.message_model.as_deref() == Some("BROADCASTING")
    }
}

/// One online client.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    /// Client id (`ip@pid`).
    #[serde(default)]
    pub client_id: String,
    /// Client socket address.
    #[serde(default)]
    pub client_addr: String,
    /// Client language.
    #[serde(default)]
    pub language: Option<serde_json::Value>,
    /// Client version ordinal.
    #[serde(default)]
    pub version: Option<i64>,
}

/// A subscription of a consumer group.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionData {
    /// Topic.
    #[serde(default)]
    pub topic: String,
    /// Expression (`*`, `TagA || TagB`, or an SQL92 filter).
    #[serde(default)]
    pub sub_string: String,
    /// `TAG` or `SQL92`.
    #[serde(default)]
    pub expression_type: Option<String>,
}

/// GET_BROKER_HA_STATUS (5.x). Master or slave view of replication.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HaRuntimeInfo {
    /// True on a master.
    pub master: bool,
    /// Master's commit-log max offset (0 on a slave).
    #[serde(default)]
    pub master_commit_log_max_offset: i64,
    /// Slaves within `haMaxGapNotInSync`.
    #[serde(default)]
    pub in_sync_slave_nums: i32,
    /// One entry per connected slave (master only).
    #[serde(default)]
    pub ha_connection_info: Vec<HaConnectionInfo>,
    /// The slave's own view (slave only; zeros on a master).
    #[serde(default)]
    pub ha_client_runtime_info: Option<HaClientRuntimeInfo>,
}

/// A master's view of one slave connection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HaConnectionInfo {
    /// The slave's HA socket address (not its broker address).
    #[serde(default)]
    pub addr: String,
    /// Last offset the slave acknowledged (-1 before its first report).
    pub slave_ack_offset: i64,
    /// Master max offset − slave ack offset: replication lag in bytes.
    pub diff: i64,
    /// Within the in-sync gap.
    #[serde(default)]
    pub in_sync: bool,
    /// Replication throughput.
    #[serde(default)]
    pub transferred_byte_in_second: i64,
}

/// A slave's view of its replication.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HaClientRuntimeInfo {
    /// Master HA address it follows.
    #[serde(default)]
    pub master_addr: Option<String>,
    /// Its own commit-log max offset.
    #[serde(default)]
    pub max_offset: i64,
    /// Last time data arrived, epoch ms.
    #[serde(default)]
    pub last_read_timestamp: i64,
}

/// Result of GET_BROKER_HA_STATUS: brokers without an HA service (4.x,
/// DLedger, rocketmq-rust without HA) answer with an error code, which is a
/// fact about the broker, not a failed call.
#[derive(Debug, Clone, PartialEq)]
pub enum HaStatus {
    /// The broker reported its HA state.
    Available(HaRuntimeInfo),
    /// The broker has no HA status to give; `reason` is its remark.
    NotAvailable {
        /// Response code (1 system error, 3 unsupported).
        code: i32,
        /// Broker's explanation.
        reason: String,
    },
}

/// The runtime `KVTable` of a broker (GET_BROKER_RUNTIME_INFO): every value is
/// a string; accessors parse with units honoured.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct RuntimeInfo {
    /// Key → value, verbatim.
    pub table: BTreeMap<String, String>,
}

impl RuntimeInfo {
    /// A raw value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.table.get(key).map(String::as_str)
    }

    /// An integer value; `Ok(None)` when the broker does not report the key.
    ///
    /// # Errors
    /// When the key is present but not an integer.
    pub fn int(&self, key: &str) -> Result<Option<i64>, BodyError> {
        self.get(key)
            .map(|v| {
                v.trim().parse().map_err(|_| {
                    BodyError::new(key.to_string(), format!("{v:?} is not an integer"))
                })
            })
            .transpose()
    }

    /// A decimal value (locale comma accepted).
    ///
    /// # Errors
    /// When present but not a number.
    pub fn decimal(&self, key: &str) -> Result<Option<f64>, BodyError> {
        self.get(key).map(text::parse_decimal).transpose()
    }

    /// A human byte count (`"1.1 KiB"`), in bytes.
    ///
    /// # Errors
    /// When present but unreadable.
    pub fn bytes(&self, key: &str) -> Result<Option<u64>, BodyError> {
        self.get(key).map(text::parse_human_bytes).transpose()
    }

    /// A TPS triple.
    ///
    /// # Errors
    /// When present but unreadable.
    pub fn tps(&self, key: &str) -> Result<Option<text::Tps>, BodyError> {
        self.get(key).map(text::parse_tps).transpose()
    }

    /// Bytes written but not yet flushed to disk (`remainHowManyDataToFlush`).
    ///
    /// # Errors
    /// When present but unreadable.
    pub fn flush_lag_bytes(&self) -> Result<Option<u64>, BodyError> {
        self.bytes("remainHowManyDataToFlush")
    }

    /// Broker version as text: `brokerVersionDesc` (`V4_9_2`), else `brokerVersion`.
    pub fn version(&self) -> Option<&str> {
        self.get("brokerVersionDesc")
            .or_else(|| self.get("brokerVersion"))
    }
}

/// The outcome of one PULL_MESSAGE.
#[derive(Debug, Clone, PartialEq)]
pub struct PullResult {
    /// What the broker found.
    pub status: PullStatus,
    /// Where the next pull should start.
    pub next_begin_offset: i64,
    /// Queue min offset at the time of the pull.
    pub min_offset: i64,
    /// Queue max offset at the time of the pull.
    pub max_offset: i64,
    /// Records returned (empty unless `Found`).
    pub messages: Vec<crate::body::message::MessageRecord>,
}

/// PULL_MESSAGE status, from the response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    /// Messages returned.
    Found,
    /// Nothing new at this offset.
    NoNewMessage,
    /// Messages exist but none matched the filter.
    NoMatchedMessage,
    /// The offset was out of range (below min: the messages were deleted).
    OffsetIllegal,
}
