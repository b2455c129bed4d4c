//! The two writes mqaudit makes, both for its own probe topic and never for
//! a user's: SEND_MESSAGE (10) of one small message to one queue, and
//! UPDATE_AND_CREATE_TOPIC (17) of the probe topic on a master.
//!
//! A send's answer is its durability: `SEND_OK`, or stored but not yet
//! durable (`FLUSH_DISK_TIMEOUT`, `FLUSH_SLAVE_TIMEOUT`,
//! `SLAVE_NOT_AVAILABLE`); any other code is an error (nothing stored).

use std::collections::BTreeMap;

use super::{Admin, Error, Fields, ensure_success, header, header_int, remote_error};
use crate::body::message::encode_properties;
use crate::remoting::Command;
use crate::remoting::codes::{request as code, response};

/// How a broker answered a send that stored the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SendStatus {
    /// Stored and as durable as the broker is configured to make it.
    Ok,
    /// Stored; the synchronous flush to disk timed out.
    FlushDiskTimeout,
    /// Stored; the synchronous replication to the slave timed out.
    FlushSlaveTimeout,
    /// Stored; a `SYNC_MASTER` has no slave to replicate to.
    SlaveNotAvailable,
}

impl SendStatus {
    /// The Java client's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::Ok => "SEND_OK",
            SendStatus::FlushDiskTimeout => "FLUSH_DISK_TIMEOUT",
            SendStatus::FlushSlaveTimeout => "FLUSH_SLAVE_TIMEOUT",
            SendStatus::SlaveNotAvailable => "SLAVE_NOT_AVAILABLE",
        }
    }
}

/// A stored message: where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The broker's answer.
    pub status: SendStatus,
    /// The broker's message id (store host + commit-log offset).
    pub offset_msg_id: String,
    /// Queue it was stored in.
    pub queue_id: i32,
    /// Its offset in that queue.
    pub queue_offset: i64,
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Producer group named in the request.
    pub producer_group: &'a str,
    /// Topic.
    pub topic: &'a str,
    /// Queue.
    pub queue_id: i32,
    /// Client message id (`UNIQ_KEY`).
    pub msg_id: &'a str,
    /// Tag, if any.
    pub tag: Option<&'a str>,
    /// Body.
    pub body: &'a [u8],
    /// Born time, epoch ms.
    pub born_ms: i64,
}

impl Admin {
    /// 10 SEND_MESSAGE of one message to one queue of the broker at `broker`.
    ///
    /// # Errors
    /// Transport errors; any response code but the four that mean "stored"
    /// (a busy broker, a missing topic, no permission: nothing stored).
    pub async fn send(&self, broker: &str, message: &Outgoing<'_>) -> Result<Sent, Error> {
        let mut properties = BTreeMap::new();
        properties.insert("UNIQ_KEY".to_string(), message.msg_id.to_string());
        properties.insert("WAIT".to_string(), "true".to_string());
        if let Some(tag) = message.tag {
            properties.insert("TAGS".to_string(), tag.to_string());
        }
        let fields = Fields::new()
            .with("producerGroup", message.producer_group)
            .with("topic", message.topic)
            .with("defaultTopic", "TBW102")
            .with("defaultTopicQueueNums", 4)
            .with("queueId", message.queue_id)
            .with("sysFlag", 0)
            .with("bornTimestamp", message.born_ms)
            .with("flag", 0)
            .with("properties", encode_properties(&properties))
            .with("reconsumeTimes", 0)
            .with("unitMode", false)
            .with("batch", false);
        let request =
            Command::request(code::SEND_MESSAGE, fields.0).with_body(message.body.to_vec());
        let response = self.invoke(broker, code::SEND_MESSAGE, request).await?;
        let status = match response.code {
            response::SUCCESS => SendStatus::Ok,
            response::FLUSH_DISK_TIMEOUT => SendStatus::FlushDiskTimeout,
            response::FLUSH_SLAVE_TIMEOUT => SendStatus::FlushSlaveTimeout,
            response::SLAVE_NOT_AVAILABLE => SendStatus::SlaveNotAvailable,
            _ => return Err(remote_error(code::SEND_MESSAGE, &response)),
        };
        Ok(Sent {
            status,
            offset_msg_id: header(&response, "SEND_MESSAGE", "msgId")?.to_string(),
            queue_id: header_int(&response, "SEND_MESSAGE", "queueId")?,
            queue_offset: header_int(&response, "SEND_MESSAGE", "queueOffset")?,
        })
    }

    /// 17 UPDATE_AND_CREATE_TOPIC: create (or update) `topic` on the
    /// broker at `broker` with `queues` read and write queues, read-write.
    ///
    /// # Errors
    /// As [`Admin::cluster_info`].
    pub async fn create_topic(&self, broker: &str, topic: &str, queues: i32) -> Result<(), Error> {
        let fields = Fields::new()
            .with("topic", topic)
            .with("defaultTopic", "TBW102")
            .with("readQueueNums", queues)
            .with("writeQueueNums", queues)
            .with("perm", 6)
            .with("topicFilterType", "SINGLE_TAG")
            .with("topicSysFlag", 0)
            .with("order", false);
        let request = Command::request(code::UPDATE_AND_CREATE_TOPIC, fields.0);
        let response = self
            .invoke(broker, code::UPDATE_AND_CREATE_TOPIC, request)
            .await?;
        ensure_success(code::UPDATE_AND_CREATE_TOPIC, response).map(|_| ())
    }
}
