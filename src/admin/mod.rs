//! Typed RocketMQ admin calls. Each method builds one request, sends it
//! through the [`Pool`] (the only way this module reaches the network), checks
//! the response code, and decodes the body with [`crate::body`].
//!
//! Response codes that are *answers* rather than failures are mapped to
//! values: "consumer not online" is `None`, "no committed offset" is `None`,
//! "query found nothing" is an empty list, "no HA service" is
//! [`HaStatus::NotAvailable`]. Everything else that is not `SUCCESS` is a
//! [`Error::Remote`] carrying the code and the broker's remark.
//!
//! This module is the boundary between the wire and the meaning: above it,
//! nothing imports [`crate::remoting`] or [`crate::body`]. It re-exports the
//! model types callers read ([`MessageQueue`], [`BrokerConfig`],
//! [`MessageRecord`], trace records), answers in its own [`Error`], and
//! hands out [`Cluster`], which owns name-server fallback.

mod cluster;
mod controller;
mod error;
pub mod model;
mod produce;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use cluster::Cluster;
pub use controller::{BrokerReplicasInfo, ControllerMetadata, ReplicaIdentity, ReplicasInfo};
pub use error::Error;
pub use model::*;
pub use produce::{Outgoing, SendStatus, Sent};

pub use crate::body::BodyError;
pub use crate::body::json::MessageQueue;
pub use crate::body::message::MessageRecord;
pub use crate::body::text::BrokerConfig;
pub use crate::body::trace::{
    EndTransactionRecord, PubRecord, RecallRecord, SubAfterRecord, SubBeforeRecord, TraceRecord,
    decode as decode_trace,
};
pub use crate::remoting::AclCredentials;

use crate::body::{json, message, text};
use crate::remoting::codes::{request as code, response};
use crate::remoting::{ClientOptions, Command, Pool};

/// The sysFlag for a side-effect-free pull: SUBSCRIPTION only (no offset
/// commit, no long polling), per protocol notes §3.13.
const PULL_SYSFLAG_SUBSCRIPTION: i32 = 0x4;
/// Most messages one QUERY_MESSAGE returns (`maxMsgsNumBatch` default).
pub const QUERY_MAX_MESSAGES: i32 = 64;

/// Told of every request: its code and result (`ok`, `timeout`, `io`,
/// `protocol`, `remote` for any non-success response code).
pub type RequestObserver = Arc<dyn Fn(i32, &'static str) + Send + Sync>;

/// Typed admin calls against name servers and brokers.
#[derive(Clone)]
pub struct Admin {
    pool: Arc<Pool>,
    timeout: Duration,
    observer: Option<RequestObserver>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One QUERY_MESSAGE: a key (or, `unique`, a client message id) on a
/// topic, stored within a time range.
#[derive(Debug, Clone, Copy)]
struct Query<'a> {
    topic: &'a str,
    key: &'a str,
    begin_ms: i64,
    end_ms: i64,
    unique: bool,
}

/// Header fields, built fluently.
struct Fields(BTreeMap<String, String>);

impl Fields {
    fn new() -> Fields {
        Fields(BTreeMap::new())
    }
    fn with(mut self, name: &str, value: impl ToString) -> Fields {
        self.0.insert(name.to_string(), value.to_string());
        self
    }
}

impl Admin {
    /// Admin calls over a pool of their own: each call bounded by
    /// `timeout`, signed with `acl` when given.
    pub fn connect(timeout: Duration, acl: Option<AclCredentials>) -> Admin {
        let pool = Pool::new(ClientOptions {
            request_timeout: timeout,
            acl,
        });
        Admin::new(Arc::new(pool), timeout)
    }

    /// Admin calls over `pool`, each bounded by `timeout`.
    pub fn new(pool: Arc<Pool>, timeout: Duration) -> Admin {
        Admin {
            pool,
            timeout,
            observer: None,
        }
    }

    /// The same calls, each reported to `observer`.
    pub fn with_observer(mut self, observer: RequestObserver) -> Admin {
        self.observer = Some(observer);
        self
    }

    /// The pool requests go through.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn call(&self, addr: &str, code: i32, fields: Fields) -> Result<Command, Error> {
        self.invoke(addr, code, Command::request(code, fields.0))
            .await
    }

    /// Send `request` (of `code`) and observe the outcome.
    async fn invoke(&self, addr: &str, code: i32, request: Command) -> Result<Command, Error> {
        let result = self
            .pool
            .invoke(addr, request, self.timeout)
            .await
            .map_err(Error::from);
        if let Some(observer) = &self.observer {
            let outcome = match &result {
                Ok(response) if response.code == response::SUCCESS => "ok",
                Ok(_) => "remote",
                Err(error) => error.kind(),
            };
            observer(code, outcome);
        }
        result
    }

    /// Send and require `SUCCESS`.
    async fn call_ok(&self, addr: &str, code: i32, fields: Fields) -> Result<Command, Error> {
        let response = self.call(addr, code, fields).await?;
        ensure_success(code, response)
    }

    /// 106 GET_BROKER_CLUSTER_INFO (name server).
    ///
    /// # Errors
    /// Transport errors, a failure code, or a body that does not parse.
    pub async fn cluster_info(&self, namesrv: &str) -> Result<ClusterInfo, Error> {
        let response = self
            .call_ok(namesrv, code::GET_BROKER_CLUSTER_INFO, Fields::new())
            .await?;
        Ok(json::parse_as(&response.body, "ClusterInfo")?)
    }

    /// 105 GET_ROUTEINFO_BY_TOPIC (name server). An unknown topic is
    /// `Remote` with code 17 (`TOPIC_NOT_EXIST`).
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn topic_route(&self, namesrv: &str, topic: &str) -> Result<TopicRoute, Error> {
        let fields = Fields::new()
            .with("topic", topic)
            .with("acceptStandardJsonOnly", true);
        let response = self
            .call_ok(namesrv, code::GET_ROUTEINFO_BY_TOPIC, fields)
            .await?;
        Ok(json::parse_as(&response.body, "TopicRouteData")?)
    }

    /// 206 GET_ALL_TOPIC_LIST_FROM_NAMESERVER. Includes retry, DLQ, system
    /// topics and the cluster/broker pseudo-topics.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn topic_list(&self, namesrv: &str) -> Result<Vec<String>, Error> {
        let response = self
            .call_ok(
                namesrv,
                code::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
                Fields::new(),
            )
            .await?;
        let list: TopicList = json::parse_as(&response.body, "TopicList")?;
        Ok(list.topic_list)
    }

    /// 21 GET_ALL_TOPIC_CONFIG (broker): every topic the broker holds.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn all_topic_config(
        &self,
        broker: &str,
    ) -> Result<BTreeMap<String, TopicConfig>, Error> {
        let response = self
            .call_ok(broker, code::GET_ALL_TOPIC_CONFIG, Fields::new())
            .await?;
        let wrapper: TopicConfigWrapper =
            json::parse_as(&response.body, "TopicConfigSerializeWrapper")?;
        Ok(wrapper.topic_config_table)
    }

    /// 28 GET_BROKER_RUNTIME_INFO (broker).
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn runtime_info(&self, broker: &str) -> Result<RuntimeInfo, Error> {
        let response = self
            .call_ok(broker, code::GET_BROKER_RUNTIME_INFO, Fields::new())
            .await?;
        Ok(json::parse_as(&response.body, "KVTable")?)
    }

    /// 26 GET_BROKER_CONFIG (broker).
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn broker_config(&self, broker: &str) -> Result<BrokerConfig, Error> {
        let response = self
            .call_ok(broker, code::GET_BROKER_CONFIG, Fields::new())
            .await?;
        Ok(text::parse_broker_config(&response.body)?)
    }

    /// 202 GET_TOPIC_STATS_INFO (broker): min/max offset of every queue of
    /// `topic` on this broker, sorted by queue. Unknown topic: `Remote` 17.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn topic_stats(
        &self,
        broker: &str,
        topic: &str,
    ) -> Result<Vec<(MessageQueue, TopicOffset)>, Error> {
        let fields = Fields::new().with("topic", topic);
        let response = self
            .call_ok(broker, code::GET_TOPIC_STATS_INFO, fields)
            .await?;
        let body = json::parse(&response.body).map_err(|e| e.context("TopicStatsTable"))?;
        let mut table = json::message_queue_map(&body["offsetTable"], "TopicStatsTable")?;
        table.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(table)
    }

    /// 208 GET_CONSUME_STATS (broker). Without a topic: every topic the group
    /// has offsets for on this broker, including `%RETRY%group`.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn consume_stats(
        &self,
        broker: &str,
        group: &str,
        topic: Option<&str>,
    ) -> Result<ConsumeStats, Error> {
        let mut fields = Fields::new().with("consumerGroup", group);
        if let Some(topic) = topic {
            fields = fields.with("topic", topic);
        }
        let response = self
            .call_ok(broker, code::GET_CONSUME_STATS, fields)
            .await?;
        let body = json::parse(&response.body).map_err(|e| e.context("ConsumeStats"))?;
        let mut offsets = json::message_queue_map(&body["offsetTable"], "ConsumeStats")?;
        offsets.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(ConsumeStats {
            consume_tps: body["consumeTps"].as_f64().unwrap_or(0.0),
            offsets,
        })
    }

    /// 317 GET_BROKER_CONSUME_STATS (broker): every group's consume stats on
    /// this broker in one call (broker and committed offset of every queue the
    /// group has offsets for, including `%RETRY%group`). One entry per group,
    /// queues sorted.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn broker_consume_stats(
        &self,
        broker: &str,
    ) -> Result<Vec<(String, ConsumeStats)>, Error> {
        let fields = Fields::new().with("isOrder", false);
        let response = self
            .call_ok(broker, code::GET_BROKER_CONSUME_STATS, fields)
            .await?;
        let body = json::parse(&response.body).map_err(|e| e.context("ConsumeStatsList"))?;
        let mut out: Vec<(String, ConsumeStats)> = Vec::new();
        let list = body["consumeStatsList"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for entry in list {
            let Some(groups) = entry.as_object() else {
                return Err(Error::protocol("ConsumeStatsList entry is not an object"));
            };
            for (group, stats_list) in groups {
                let mut merged = ConsumeStats::default();
                for stats in stats_list.as_array().map(Vec::as_slice).unwrap_or_default() {
                    merged.consume_tps += stats["consumeTps"].as_f64().unwrap_or(0.0);
                    merged.offsets.extend(json::message_queue_map(
                        &stats["offsetTable"],
                        "ConsumeStatsList",
                    )?);
                }
                merged.offsets.sort_by(|a, b| a.0.cmp(&b.0));
                out.push((group.clone(), merged));
            }
        }
        Ok(out)
    }

    /// 203 GET_CONSUMER_CONNECTION_LIST (broker). `None` when the group has
    /// no consumer online on this broker (code 206).
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn consumer_connections(
        &self,
        broker: &str,
        group: &str,
    ) -> Result<Option<ConsumerConnection>, Error> {
        let fields = Fields::new().with("consumerGroup", group);
        let response = self
            .call(broker, code::GET_CONSUMER_CONNECTION_LIST, fields)
            .await?;
        if response.code == response::CONSUMER_NOT_ONLINE {
            return Ok(None);
        }
        let response = ensure_success(code::GET_CONSUMER_CONNECTION_LIST, response)?;
        Ok(Some(json::parse_as(&response.body, "ConsumerConnection")?))
    }

    /// 201 GET_ALL_SUBSCRIPTIONGROUP_CONFIG (broker): every consumer group the
    /// broker knows, online or not.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn subscription_groups(
        &self,
        broker: &str,
    ) -> Result<BTreeMap<String, SubscriptionGroupConfig>, Error> {
        let response = self
            .call_ok(
                broker,
                code::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
                Fields::new(),
            )
            .await?;
        let wrapper: SubscriptionGroupWrapper =
            json::parse_as(&response.body, "SubscriptionGroupWrapper")?;
        Ok(wrapper.subscription_group_table)
    }

    /// 12 QUERY_MESSAGE by key on one broker, filtered as Java's
    /// `MQAdminImpl.queryMessage` does (the index stores only key hashes, so
    /// raw results can contain other keys and topics). Nothing found: empty.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn query_message_by_key(
        &self,
        broker: &str,
        topic: &str,
        key: &str,
        begin_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<MessageRecord>, Error> {
        let query = Query {
            topic,
            key,
            begin_ms,
            end_ms,
            unique: false,
        };
        let records = self.query_message(broker, query).await?;
        Ok(records
            .into_iter()
            .filter(|m| m.topic == topic && m.keys().any(|k| k == key))
            .collect())
    }

    /// 12 QUERY_MESSAGE by unique key (client msgId, `_UNIQUE_KEY_QUERY=true`);
    /// keeps records whose `UNIQ_KEY` matches, earliest stored first.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn query_message_by_unique_key(
        &self,
        broker: &str,
        topic: &str,
        msg_id: &str,
        begin_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<MessageRecord>, Error> {
        let query = Query {
            topic,
            key: msg_id,
            begin_ms,
            end_ms,
            unique: true,
        };
        let records = self.query_message(broker, query).await?;
        let mut records: Vec<MessageRecord> = records
            .into_iter()
            .filter(|m| m.topic == topic && m.uniq_key() == Some(msg_id))
            .collect();
        records.sort_by_key(|m| m.store_timestamp);
        Ok(records)
    }

    async fn query_message(
        &self,
        broker: &str,
        query: Query<'_>,
    ) -> Result<Vec<MessageRecord>, Error> {
        let fields = Fields::new()
            .with("topic", query.topic)
            .with("key", query.key)
            .with("maxNum", QUERY_MAX_MESSAGES)
            .with("beginTimestamp", query.begin_ms)
            .with("endTimestamp", query.end_ms)
            .with("_UNIQUE_KEY_QUERY", query.unique);
        let response = self.call(broker, code::QUERY_MESSAGE, fields).await?;
        if response.code == response::QUERY_NOT_FOUND {
            return Ok(Vec::new());
        }
        let response = ensure_success(code::QUERY_MESSAGE, response)?;
        Ok(message::decode_all(&response.body)?)
    }

    /// 33 VIEW_MESSAGE_BY_ID: the record at a commit-log offset.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`]; also when the body holds no record.
    pub async fn view_message(
        &self,
        broker: &str,
        commit_log_offset: i64,
    ) -> Result<MessageRecord, Error> {
        let fields = Fields::new().with("offset", commit_log_offset);
        let response = self
            .call_ok(broker, code::VIEW_MESSAGE_BY_ID, fields)
            .await?;
        let (record, _) = message::decode_one(&response.body)?;
        Ok(record)
    }

    /// 11 PULL_MESSAGE without side effects: no offset commit, no long poll.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`]; "not found", "retry" and "offset moved"
    /// are statuses, not errors.
    pub async fn pull(
        &self,
        broker: &str,
        group: &str,
        queue: &MessageQueue,
        offset: i64,
        max_messages: i32,
    ) -> Result<PullResult, Error> {
        let fields = Fields::new()
            .with("consumerGroup", group)
            .with("topic", &queue.topic)
            .with("queueId", queue.queue_id)
            .with("queueOffset", offset)
            .with("maxMsgNums", max_messages)
            .with("sysFlag", PULL_SYSFLAG_SUBSCRIPTION)
            .with("commitOffset", 0)
            .with("suspendTimeoutMillis", 0)
            .with("subscription", "*")
            .with("subVersion", 0)
            .with("expressionType", "TAG");
        let response = self.call(broker, code::PULL_MESSAGE, fields).await?;
        let status = match response.code {
            response::SUCCESS => PullStatus::Found,
            response::PULL_NOT_FOUND => PullStatus::NoNewMessage,
            response::PULL_RETRY_IMMEDIATELY => PullStatus::NoMatchedMessage,
            response::PULL_OFFSET_MOVED => PullStatus::OffsetIllegal,
            _ => return Err(remote_error(code::PULL_MESSAGE, &response)),
        };
        let header_i64 = |name: &str| header_int(&response, "PULL_MESSAGE", name);
        let messages = if status == PullStatus::Found {
            message::decode_all(&response.body)?
        } else {
            Vec::new()
        };
        Ok(PullResult {
            status,
            next_begin_offset: header_i64("nextBeginOffset")?,
            min_offset: header_i64("minOffset")?,
            max_offset: header_i64("maxOffset")?,
            messages,
        })
    }

    /// 30 GET_MAX_OFFSET: one past the last message of a queue.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn max_offset(&self, broker: &str, topic: &str, queue_id: i32) -> Result<i64, Error> {
        let fields = Fields::new().with("topic", topic).with("queueId", queue_id);
        let response = self.call_ok(broker, code::GET_MAX_OFFSET, fields).await?;
        offset_header(code::GET_MAX_OFFSET, &response)
    }

    /// 31 GET_MIN_OFFSET: first offset still stored in a queue.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn min_offset(&self, broker: &str, topic: &str, queue_id: i32) -> Result<i64, Error> {
        let fields = Fields::new().with("topic", topic).with("queueId", queue_id);
        let response = self.call_ok(broker, code::GET_MIN_OFFSET, fields).await?;
        offset_header(code::GET_MIN_OFFSET, &response)
    }

    /// 29 SEARCH_OFFSET_BY_TIMESTAMP: the first offset of a queue whose
    /// message was stored at or after `timestamp_ms` (the max offset when none).
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn offset_at(
        &self,
        broker: &str,
        topic: &str,
        queue_id: i32,
        timestamp_ms: i64,
    ) -> Result<i64, Error> {
        let fields = Fields::new()
            .with("topic", topic)
            .with("queueId", queue_id)
            .with("timestamp", timestamp_ms);
        let response = self
            .call_ok(broker, code::SEARCH_OFFSET_BY_TIMESTAMP, fields)
            .await?;
        offset_header(code::SEARCH_OFFSET_BY_TIMESTAMP, &response)
    }

    /// 14 QUERY_CONSUMER_OFFSET: a group's committed offset on one queue,
    /// `None` when it never committed there.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn consumer_offset(
        &self,
        broker: &str,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<Option<i64>, Error> {
        // 5.x brokers answer "offset 0" for a group with no offset unless
        // told not to, which would hide "never consumed" behind "consumed nothing".
        let fields = Fields::new()
            .with("consumerGroup", group)
            .with("topic", topic)
            .with("queueId", queue_id)
            .with("setZeroIfNotFound", false);
        let response = self
            .call(broker, code::QUERY_CONSUMER_OFFSET, fields)
            .await?;
        if response.code == response::QUERY_NOT_FOUND {
            return Ok(None);
        }
        let response = ensure_success(code::QUERY_CONSUMER_OFFSET, response)?;
        let offset = offset_header(code::QUERY_CONSUMER_OFFSET, &response)?;
        // rocketmq-rust answers SUCCESS with -1 for "no offset".
        Ok((offset >= 0).then_some(offset))
    }

    /// 907 GET_BROKER_HA_STATUS. A broker without HA status (4.x, or no HA
    /// service) gives [`HaStatus::NotAvailable`], not an error.
    ///
    /// # Errors
    /// Transport errors, other failure codes, or a body that does not parse.
    pub async fn ha_status(&self, broker: &str) -> Result<HaStatus, Error> {
        let response = self
            .call(broker, code::GET_BROKER_HA_STATUS, Fields::new())
            .await?;
        match response.code {
            response::SUCCESS => Ok(HaStatus::Available(json::parse_as(
                &response.body,
                "HARuntimeInfo",
            )?)),
            response::SYSTEM_ERROR | response::REQUEST_CODE_NOT_SUPPORTED => {
                Ok(HaStatus::NotAvailable {
                    code: response.code,
                    reason: response.remark.unwrap_or_default(),
                })
            }
            _ => Err(remote_error(code::GET_BROKER_HA_STATUS, &response)),
        }
    }
}

/// GET_ALL_MESSAGE_REQUEST_MODE's body: topic → group → its mode.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestModes {
    #[serde(default)]
    message_request_mode_map: BTreeMap<String, BTreeMap<String, RequestMode>>,
}

#[derive(Debug, serde::Deserialize)]
struct RequestMode {
    #[serde(default)]
    mode: String,
}

impl Admin {
    /// 402 GET_ALL_MESSAGE_REQUEST_MODE (5.x): the (group, topic) pairs a
    /// broker serves in POP mode (`mqadmin setConsumeMode`), whether or not
    /// a consumer is online. A broker without it (4.x) gives `None`.
    ///
    /// # Errors
    /// Transport errors, other failure codes, or a body that does not parse.
    pub async fn pop_modes(&self, broker: &str) -> Result<Option<Vec<(String, String)>>, Error> {
        let response = self
            .call(broker, code::GET_ALL_MESSAGE_REQUEST_MODE, Fields::new())
            .await?;
        match response.code {
            response::SUCCESS => {
                let modes: RequestModes =
                    json::parse_as(&response.body, "MessageRequestModeSerializeWrapper")?;
                Ok(Some(
                    modes
                        .message_request_mode_map
                        .into_iter()
                        .flat_map(|(topic, groups)| {
                            groups
                                .into_iter()
                                .filter(|(_, m)| m.mode == "POP")
                                .map(move |(group, _)| (group, topic.clone()))
                        })
                        .collect(),
                ))
            }
            response::SYSTEM_ERROR | response::REQUEST_CODE_NOT_SUPPORTED => Ok(None),
            _ => Err(remote_error(code::GET_ALL_MESSAGE_REQUEST_MODE, &response)),
        }
    }
}

fn ensure_success(request: i32, response: Command) -> Result<Command, Error> {
    if response.code == response::SUCCESS {
        Ok(response)
    } else {
        Err(remote_error(request, &response))
    }
}

/// Header field `name` of `response`, required.
fn header<'a>(response: &'a Command, request: &str, name: &str) -> Result<&'a str, Error> {
    response
        .ext(name)
        .ok_or_else(|| Error::protocol(format!("{request} response lacks header field {name}")))
}

/// Header field `name` of `response`, a required integer.
fn header_int<T: std::str::FromStr>(
    response: &Command,
    request: &str,
    name: &str,
) -> Result<T, Error> {
    let value = header(response, request, name)?;
    value.parse().map_err(|_| {
        Error::protocol(format!(
            "{request} header {name}={value:?} is not an integer"
        ))
    })
}

fn remote_error(request: i32, response: &Command) -> Error {
    Error::Remote {
        request,
        code: response.code,
        remark: response.remark.clone().unwrap_or_default(),
    }
}

fn offset_header(request: i32, response: &Command) -> Result<i64, Error> {
    let value = response.ext("offset").ok_or_else(|| {
        Error::protocol(format!(
            "response to code {request} lacks header field offset"
        ))
    })?;
    value.parse().map_err(|_| {
        Error::protocol(format!(
            "offset {value:?} in response to code {request} is not an integer"
        ))
    })
}
