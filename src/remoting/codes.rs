//! Request and response codes, named as the Java `RequestCode` /
//! `ResponseCode` classes name them (identical in 4.9.x and 5.x).

/// Request codes this crate sends.
pub mod request {
    /// Send a message (header `SendMessageRequestHeader`): the probe, and the test driver.
    pub const SEND_MESSAGE: i32 = 10;
    /// Create or update a topic on a broker.
    pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
    /// Pull messages from a queue.
    pub const PULL_MESSAGE: i32 = 11;
    /// Look messages up by key (index file).
    pub const QUERY_MESSAGE: i32 = 12;
    /// Committed offset of a group on one queue.
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    /// Commit a group's offset on one queue.
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    /// Every topic config held by a broker.
    pub const GET_ALL_TOPIC_CONFIG: i32 = 21;
    /// Broker configuration as properties text.
    pub const GET_BROKER_CONFIG: i32 = 26;
    /// Broker runtime `KVTable`.
    pub const GET_BROKER_RUNTIME_INFO: i32 = 28;
    /// Max consume-queue offset of one queue.
    pub const GET_MAX_OFFSET: i32 = 30;
    /// Min consume-queue offset of one queue.
    pub const GET_MIN_OFFSET: i32 = 31;
    /// The first queue offset stored at or after a time.
    pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
    /// One message by commit-log offset.
    pub const VIEW_MESSAGE_BY_ID: i32 = 33;
    /// Client heartbeat (registers producers/consumers).
    pub const HEART_BEAT: i32 = 34;
    /// A consumer returns a message for retry or to the DLQ.
    pub const CONSUMER_SEND_MSG_BACK: i32 = 36;
    /// Online consumer ids of a group.
    pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
    /// Topic route from the name server.
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    /// Cluster → brokers → addresses from the name server.
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    /// Every subscription group config held by a broker.
    pub const GET_ALL_SUBSCRIPTIONGROUP_CONFIG: i32 = 201;
    /// Min/max offsets of every queue of a topic.
    pub const GET_TOPIC_STATS_INFO: i32 = 202;
    /// Every group's consume stats on a broker, in one call.
    pub const GET_BROKER_CONSUME_STATS: i32 = 317;
    /// Online consumer connections of a group.
    pub const GET_CONSUMER_CONNECTION_LIST: i32 = 203;
    /// Every topic name known to the name server.
    pub const GET_ALL_TOPIC_LIST_FROM_NAMESERVER: i32 = 206;
    /// Offsets and lag of a group, per queue.
    pub const GET_CONSUME_STATS: i32 = 208;
    /// Replication state (5.x only).
    pub const GET_BROKER_HA_STATUS: i32 = 907;
    /// Every (topic, group) set to POP or PULL consumption (5.x).
    pub const GET_ALL_MESSAGE_REQUEST_MODE: i32 = 402;
    /// A controller's view of its group: leader id and address (5.x).
    pub const CONTROLLER_GET_METADATA_INFO: i32 = 1005;
    /// Broker sets' masters, epochs and in-sync replicas (5.x, leader only).
    pub const CONTROLLER_GET_SYNC_STATE_DATA: i32 = 1006;
}

/// Response codes this crate branches on.
pub mod response {
    /// Success.
    pub const SUCCESS: i32 = 0;
    /// Generic failure; also "HA service not available".
    pub const SYSTEM_ERROR: i32 = 1;
    /// Broker overloaded.
    pub const SYSTEM_BUSY: i32 = 2;
    /// The peer does not know the request code.
    pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
    /// ACL: the credentials may not make this call.
    pub const NO_PERMISSION: i32 = 16;
    /// Send: stored, but the synchronous flush timed out (not yet on disk).
    pub const FLUSH_DISK_TIMEOUT: i32 = 10;
    /// Send: stored, but a SYNC_MASTER has no slave to replicate to.
    pub const SLAVE_NOT_AVAILABLE: i32 = 11;
    /// Send: stored, but the slave did not confirm in time.
    pub const FLUSH_SLAVE_TIMEOUT: i32 = 12;
    /// Topic unknown to the peer.
    pub const TOPIC_NOT_EXIST: i32 = 17;
    /// Pull: no new message at this offset.
    pub const PULL_NOT_FOUND: i32 = 19;
    /// Pull: retry at once (no matching message).
    pub const PULL_RETRY_IMMEDIATELY: i32 = 20;
    /// Pull: the offset is out of range; see `nextBeginOffset`.
    pub const PULL_OFFSET_MOVED: i32 = 21;
    /// Query: nothing matched, or no committed offset.
    pub const QUERY_NOT_FOUND: i32 = 22;
    /// Group has no online consumer on this broker.
    pub const CONSUMER_NOT_ONLINE: i32 = 206;
}
