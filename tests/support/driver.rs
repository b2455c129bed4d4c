//! The test driver: a minimal producer and consumer built on mqaudit's own
//! codec (`remoting::Command` over a `remoting::Pool`), deterministic where
//! the rocketmq-rust client is not (no background threads, no spurious
//! retries). It sends keyed messages, heartbeats a consumer group, pulls and
//! commits offsets, sends messages back for retry or straight to the DLQ, and
//! writes Java-format trace records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mqaudit::admin::{Admin, PullStatus};
use mqaudit::body::json::MessageQueue;
use mqaudit::body::message::{MessageRecord, encode_properties};
use mqaudit::body::trace::{self, TraceRecord};
use mqaudit::remoting::codes::{request, response};
use mqaudit::remoting::{ClientOptions, Command, Pool};

/// Request code 17 UPDATE_AND_CREATE_TOPIC (broker).
const UPDATE_AND_CREATE_TOPIC: i32 = 17;
/// The trace topic Java clients write to by default.
pub const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";

/// What a successful send returned.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The key the message carries (`KEYS`).
    pub key: String,
    /// Client message id (`UNIQ_KEY`).
    pub msg_id: String,
    /// Broker message id from the response.
    pub offset_msg_id: String,
    /// Broker address it was sent to.
    pub broker_addr: String,
    /// Broker name it was sent to.
    pub broker_name: String,
    /// Queue it landed in.
    pub queue_id: i32,
    /// Consume-queue offset it got.
    pub queue_offset: i64,
}

/// The driver. One pool, shared by every call.
pub struct Driver {
    pub admin: Admin,
    pool: Arc<Pool>,
    counter: AtomicU32,
}

impl Driver {
    /// A driver with its own connection pool.
    pub fn new() -> Driver {
        let pool = Arc::new(Pool::new(ClientOptions::default()));
        Driver {
            admin: Admin::new(pool.clone(), Duration::from_secs(10)),
            pool,
            counter: AtomicU32::new(0),
        }
    }

    async fn invoke_ok(&self, addr: &str, command: Command) -> Command {
        self.invoke_accepting(addr, command, &[response::SUCCESS])
            .await
    }

    /// Invoke and require one of `accepted` response codes.
    async fn invoke_accepting(&self, addr: &str, command: Command, accepted: &[i32]) -> Command {
        let code = command.code;
        let response = self
            .pool
            .invoke(addr, command, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("request {code} to {addr} failed: {e}"));
        assert!(
            accepted.contains(&response.code),
            "request {code} to {addr}: code {} remark {:?}",
            response.code,
            response.remark
        );
        response
    }

    /// Create (or update) `topic` on one broker with `queues` read/write queues.
    pub async fn create_topic(&self, broker_addr: &str, topic: &str, queues: i32) {
        self.create_topic_with(broker_addr, topic, queues, None)
            .await;
    }

    /// Create (or update) `topic` with 5.x attributes (`+message.type=FIFO`,
    /// comma-separated, as `mqadmin updateTopic -a` sends them).
    pub async fn create_topic_with(
        &self,
        broker_addr: &str,
        topic: &str,
        queues: i32,
        attributes: Option<&str>,
    ) {
        let mut fields = BTreeMap::new();
        if let Some(attributes) = attributes {
            fields.insert("attributes".to_string(), attributes.to_string());
        }
        for (k, v) in [
            ("topic", topic.to_string()),
            ("defaultTopic", "TBW102".to_string()),
            ("readQueueNums", queues.to_string()),
            ("writeQueueNums", queues.to_string()),
            ("perm", "6".to_string()),
            ("topicFilterType", "SINGLE_TAG".to_string()),
            ("topicSysFlag", "0".to_string()),
            ("order", "false".to_string()),
        ] {
            fields.insert(k.to_string(), v);
        }
        self.invoke_ok(
            broker_addr,
            Command::request(UPDATE_AND_CREATE_TOPIC, fields),
        )
        .await;
    }

    /// A client message id in the shape of Java's `UNIQ_KEY` (32 hex chars).
    pub fn new_msg_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        format!(
            "7F000001{:04X}{:08X}{:08X}{:04X}",
            std::process::id() & 0xFFFF,
            (self as *const _ as usize as u32),
            now as u32,
            n & 0xFFFF
        )
    }

    /// Send one keyed message to a queue of `topic` on the broker at `broker_addr`.
    pub async fn send(
        &self,
        broker_addr: &str,
        broker_name: &str,
        topic: &str,
        queue_id: i32,
        key: &str,
        body: &[u8],
    ) -> Sent {
        let to = (broker_addr, broker_name, topic, queue_id);
        self.send_with(to, key, body, &[], 0).await
    }

    /// Send a message with extra properties (`DELAY`, `TIMER_DELIVER_MS`,
    /// `TRAN_MSG`…) and a sysFlag (4: a transaction half message), to
    /// (broker address, broker name, topic, queue id).
    pub async fn send_with(
        &self,
        (broker_addr, broker_name, topic, queue_id): (&str, &str, &str, i32),
        key: &str,
        body: &[u8],
        extra: &[(&str, &str)],
        sys_flag: i32,
    ) -> Sent {
        let msg_id = self.new_msg_id();
        let mut properties = BTreeMap::new();
        properties.insert("KEYS".to_string(), key.to_string());
        properties.insert("UNIQ_KEY".to_string(), msg_id.clone());
        properties.insert("WAIT".to_string(), "true".to_string());
        for (k, v) in extra {
            properties.insert(k.to_string(), v.to_string());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut fields = BTreeMap::new();
        for (k, v) in [
            ("producerGroup", "mqaudit_test_producer".to_string()),
            ("topic", topic.to_string()),
            ("defaultTopic", "TBW102".to_string()),
            ("defaultTopicQueueNums", "4".to_string()),
            ("queueId", queue_id.to_string()),
            ("sysFlag", sys_flag.to_string()),
            ("bornTimestamp", now.to_string()),
            ("flag", "0".to_string()),
            ("properties", encode_properties(&properties)),
            ("reconsumeTimes", "0".to_string()),
            ("unitMode", "false".to_string()),
            ("batch", "false".to_string()),
        ] {
            fields.insert(k.to_string(), v);
        }
        let command = Command::request(request::SEND_MESSAGE, fields).with_body(body.to_vec());
        // Stored but not yet durable is still stored: a Java SYNC_MASTER
        // without a slave answers SLAVE_NOT_AVAILABLE (11) for every send.
        // A busy broker (flow control: SYSTEM_BUSY, the request expired in
        // its send queue) stored nothing; like the Java client, send again.
        let mut busy = 0;
        let response = loop {
            let response = self
                .invoke_accepting(
                    broker_addr,
                    command.clone(),
                    &[
                        response::SUCCESS,
                        response::FLUSH_DISK_TIMEOUT,
                        response::SLAVE_NOT_AVAILABLE,
                        response::FLUSH_SLAVE_TIMEOUT,
                        response::SYSTEM_BUSY,
                    ],
                )
                .await;
            if response.code != response::SYSTEM_BUSY {
                break response;
            }
            busy += 1;
            assert!(
                busy < 20,
                "{broker_addr} stayed busy for 20 sends of {key}: {:?}",
                response.remark
            );
            tokio::time::sleep(Duration::from_millis(100 * busy)).await;
        };
        let ext = |name: &str| {
            response
                .ext(name)
                .unwrap_or_else(|| panic!("send response lacks {name}: {:?}", response.ext_fields))
                .to_string()
        };
        Sent {
            key: key.to_string(),
            msg_id,
            offset_msg_id: ext("msgId"),
            broker_addr: broker_addr.to_string(),
            broker_name: broker_name.to_string(),
            queue_id: ext("queueId").parse().expect("queueId is an integer"),
            queue_offset: ext("queueOffset")
                .parse()
                .expect("queueOffset is an integer"),
        }
    }

    /// UPDATE_BROKER_CONFIG (25): set `key` to `value` on one broker, as
    /// `mqadmin updateBrokerConfig` does.
    pub async fn update_broker_config(&self, broker_addr: &str, key: &str, value: &str) {
        let command = Command::request(25, BTreeMap::new())
            .with_body(format!("{key}={value}\n").into_bytes());
        self.invoke_ok(broker_addr, command).await;
    }

    /// Register `group` as an online push consumer of `topics` on a broker.
    pub async fn heartbeat(&self, broker_addr: &str, group: &str, topics: &[&str]) {
        let subscriptions: Vec<serde_json::Value> = topics
            .iter()
            .map(|t| {
                serde_json::json!({
                    "classFilterMode": false, "topic": t, "subString": "*",
                    "tagsSet": [], "codeSet": [], "subVersion": 0, "expressionType": "TAG"
                })
            })
            .collect();
        let body = serde_json::json!({
            "clientID": format!("127.0.0.1@mqaudit-test-{}", std::process::id()),
            "producerDataSet": [],
            "consumerDataSet": [{
                "groupName": group,
                "consumeType": "CONSUME_PASSIVELY",
                "messageModel": "CLUSTERING",
                "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET",
                "subscriptionDataSet": subscriptions,
                "unitMode": false
            }]
        });
        let command = Command::request(request::HEART_BEAT, BTreeMap::new())
            .with_body(serde_json::to_vec(&body).expect("heartbeat encodes"));
        self.invoke_ok(broker_addr, command).await;
    }

    /// Pull up to `max` messages from `offset` without committing.
    pub async fn pull(
        &self,
        broker_addr: &str,
        group: &str,
        queue: &MessageQueue,
        offset: i64,
        max: i32,
    ) -> Vec<MessageRecord> {
        let result = self
            .admin
            .pull(broker_addr, group, queue, offset, max)
            .await
            .unwrap_or_else(|e| panic!("pull {queue:?}@{offset} failed: {e}"));
        match result.status {
            PullStatus::Found => result.messages,
            _ => Vec::new(),
        }
    }

    /// Pull every message of a queue from `from` to its current end.
    pub async fn pull_all(
        &self,
        broker_addr: &str,
        group: &str,
        queue: &MessageQueue,
        from: i64,
    ) -> Vec<MessageRecord> {
        let mut out = Vec::new();
        let mut offset = from;
        loop {
            let batch = self.pull(broker_addr, group, queue, offset, 32).await;
            if batch.is_empty() {
                return out;
            }
            offset = batch.last().map(|m| m.queue_offset + 1).unwrap_or(offset);
            out.extend(batch);
        }
    }

    /// Commit `group`'s offset on one queue (UPDATE_CONSUMER_OFFSET).
    pub async fn commit(&self, broker_addr: &str, group: &str, queue: &MessageQueue, offset: i64) {
        let mut fields = BTreeMap::new();
        fields.insert("consumerGroup".to_string(), group.to_string());
        fields.insert("topic".to_string(), queue.topic.clone());
        fields.insert("queueId".to_string(), queue.queue_id.to_string());
        fields.insert("commitOffset".to_string(), offset.to_string());
        self.invoke_ok(
            broker_addr,
            Command::request(request::UPDATE_CONSUMER_OFFSET, fields),
        )
        .await;
    }

    /// Send a consumed message back (CONSUMER_SEND_MSG_BACK). `delay_level`
    /// −1 puts it straight into `%DLQ%group`; 0 schedules a retry.
    pub async fn send_back(
        &self,
        broker_addr: &str,
        group: &str,
        message: &MessageRecord,
        delay_level: i32,
        max_reconsume_times: i32,
    ) {
        let mut fields = BTreeMap::new();
        for (k, v) in [
            ("offset", message.commit_log_offset.to_string()),
            ("group", group.to_string()),
            ("delayLevel", delay_level.to_string()),
            (
                "originMsgId",
                message.uniq_key().unwrap_or_default().to_string(),
            ),
            ("originTopic", message.topic.clone()),
            ("unitMode", "false".to_string()),
            ("maxReconsumeTimes", max_reconsume_times.to_string()),
        ] {
            fields.insert(k.to_string(), v);
        }
        self.invoke_ok(
            broker_addr,
            Command::request(request::CONSUMER_SEND_MSG_BACK, fields),
        )
        .await;
    }

    /// Write trace records to `RMQ_SYS_TRACE_TOPIC` as Java's trace dispatcher
    /// does: one message, body = encoded records, `KEYS` = every msgId and key.
    pub async fn write_trace(
        &self,
        broker_addr: &str,
        broker_name: &str,
        records: &[TraceRecord],
    ) -> Sent {
        let mut keys: Vec<String> = Vec::new();
        for record in records {
            keys.push(record.msg_id().to_string());
            keys.extend(record.keys().map(str::to_string));
        }
        keys.sort();
        keys.dedup();
        let body = trace::encode(records);
        self.send(
            broker_addr,
            broker_name,
            TRACE_TOPIC,
            0,
            &keys.join(" "),
            body.as_bytes(),
        )
        .await
    }
}
