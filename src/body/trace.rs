//! Message-trace records, the bodies clients write to `RMQ_SYS_TRACE_TOPIC`
//! (Java `TraceDataEncoder`): fields separated by `\x01`, records ended by
//! `\x02`, several records per body.
//!
//! Field counts vary by client version and are all accepted: `Pub` with 13
//! (no offsetMsgId; success implied), 14 (Java) or 15+ (Go, rocketmq-rust add
//! clientHost); `SubBefore` with 8 or 9; `SubAfter` with 6–7 (old Java) or
//! 9 (with timestamp and group); `EndTransaction` with 13; `Recall` with 7.
//! The 4.9.x `AccessChannel.CLOUD` quirk, where a `SubAfter` ends with `\x01`
//! and no `\x02` so the next record is glued on, is split apart.

use super::BodyError;

const FIELD: char = '\u{1}';
const RECORD: char = '\u{2}';
const TYPES: [&str; 5] = ["Pub", "SubBefore", "SubAfter", "EndTransaction", "Recall"];

/// One trace record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceRecord {
    /// A producer's send attempt.
    Pub(PubRecord),
    /// A consumer is about to process a message.
    SubBefore(SubBeforeRecord),
    /// A consumer finished processing a message.
    SubAfter(SubAfterRecord),
    /// A transactional message was committed or rolled back.
    EndTransaction(EndTransactionRecord),
    /// A message was recalled (5.x).
    Recall(RecallRecord),
}

/// `Pub`: type, timeStamp, regionId, groupName, topic, msgId, tags, keys,
/// storeHost, bodyLength, costTime, msgType, offsetMsgId, success[, clientHost].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubRecord {
    /// When the send started, epoch ms.
    pub timestamp: i64,
    /// Broker region.
    pub region_id: String,
    /// Producer group.
    pub group: String,
    /// Topic sent to.
    pub topic: String,
    /// Client message id (`UNIQ_KEY`).
    pub msg_id: String,
    /// Tags (`null` text when none).
    pub tags: String,
    /// Message keys, space-separated as the client joined them.
    pub keys: String,
    /// Broker `ip:port` the send went to.
    pub store_host: String,
    /// Body size in bytes.
    pub body_length: i64,
    /// Send latency, ms.
    pub cost_time_ms: i64,
    /// `MessageType` ordinal (0 normal, 1 half, 2 commit, 3 delay, 4 order).
    pub msg_type: i32,
    /// Broker message id (empty for 13-field records).
    pub offset_msg_id: String,
    /// True when the send returned `SEND_OK`.
    pub success: bool,
    /// Producer host, written by some clients.
    pub client_host: Option<String>,
}

/// `SubBefore`: type, timeStamp, regionId, groupName, requestId, msgId,
/// retryTimes, keys[, clientHost].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubBeforeRecord {
    /// When consumption started, epoch ms.
    pub timestamp: i64,
    /// Region of the message.
    pub region_id: String,
    /// Consumer group.
    pub group: String,
    /// Id shared with the matching `SubAfter`.
    pub request_id: String,
    /// Client message id.
    pub msg_id: String,
    /// Redeliveries so far.
    pub retry_times: i32,
    /// Message keys.
    pub keys: String,
    /// Consumer host, written by some clients.
    pub client_host: Option<String>,
}

/// `SubAfter`: type, requestId, msgId, costTime, success, keys[, contextCode
/// [, timeStamp, groupName]].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAfterRecord {
    /// Id shared with the matching `SubBefore`.
    pub request_id: String,
    /// Client message id.
    pub msg_id: String,
    /// Processing time, ms.
    pub cost_time_ms: i64,
    /// True when the listener returned success.
    pub success: bool,
    /// Message keys.
    pub keys: String,
    /// `ConsumeReturnType` ordinal (0 success, 1 timeout, 2 exception, 3 null, 4 failed).
    pub context_code: Option<i32>,
    /// When consumption finished, epoch ms (newer clients only).
    pub timestamp: Option<i64>,
    /// Consumer group (newer clients only; older ones leave it to SubBefore).
    pub group: Option<String>,
}

/// `EndTransaction`: type, timeStamp, regionId, groupName, topic, msgId, tags,
/// keys, storeHost, msgType, transactionId, transactionState, fromTransactionCheck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndTransactionRecord {
    /// Epoch ms.
    pub timestamp: i64,
    /// Broker region.
    pub region_id: String,
    /// Producer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Client message id.
    pub msg_id: String,
    /// Tags.
    pub tags: String,
    /// Keys.
    pub keys: String,
    /// Broker address.
    pub store_host: String,
    /// `MessageType` ordinal.
    pub msg_type: i32,
    /// Transaction id.
    pub transaction_id: String,
    /// `COMMIT_MESSAGE`, `ROLLBACK_MESSAGE` or `UNKNOW`.
    pub transaction_state: String,
    /// True when decided by a broker check-back.
    pub from_transaction_check: bool,
}

/// `Recall` (5.x): type, timeStamp, regionId, groupName, topic, msgId, success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallRecord {
    /// Epoch ms.
    pub timestamp: i64,
    /// Region.
    pub region_id: String,
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Client message id.
    pub msg_id: String,
    /// True when the recall succeeded.
    pub success: bool,
}

impl TraceRecord {
    /// The client message id the record is about.
    pub fn msg_id(&self) -> &str {
        match self {
            TraceRecord::Pub(r) => &r.msg_id,
            TraceRecord::SubBefore(r) => &r.msg_id,
            TraceRecord::SubAfter(r) => &r.msg_id,
            TraceRecord::EndTransaction(r) => &r.msg_id,
            TraceRecord::Recall(r) => &r.msg_id,
        }
    }

    /// The message keys, where the record carries them.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let keys = match self {
            TraceRecord::Pub(r) => r.keys.as_str(),
            TraceRecord::SubBefore(r) => r.keys.as_str(),
            TraceRecord::SubAfter(r) => r.keys.as_str(),
            TraceRecord::EndTransaction(r) => r.keys.as_str(),
            TraceRecord::Recall(_) => "",
        };
        keys.split(' ').filter(|k| !k.is_empty() && *k != "null")
    }
}

/// Decode every record of a trace body.
///
/// # Errors
/// When the body is not UTF-8, a record has an unknown type, too few fields,
/// or a number/boolean field that does not parse.
pub fn decode(body: &[u8]) -> Result<Vec<TraceRecord>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        BodyError::new(
            "trace body",
            format!("not valid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let mut records = Vec::new();
    for (index, chunk) in text.split(RECORD).enumerate() {
        let chunk = chunk.trim_matches(['\n', '\r']);
        if chunk.is_empty() {
            continue;
        }
        let mut fields: Vec<&str> = chunk.split(FIELD).collect();
        // Split off records glued after a CLOUD-style SubAfter ("…contextCode\x01Pub\x01…").
        while !fields.is_empty() {
            let take = glued_record_length(&fields);
            let rest = fields.split_off(take);
            records.push(
                decode_record(&fields).map_err(|e| e.context(&format!("trace record {index}")))?,
            );
            fields = rest;
        }
    }
    Ok(records)
}

/// How many of `fields` belong to the first record: all of them, unless a
/// record type name appears where a new record would start after a SubAfter.
fn glued_record_length(fields: &[&str]) -> usize {
    if fields.first() == Some(&"SubAfter")
        && let Some(at) = fields.iter().skip(6).position(|f| TYPES.contains(f))
    {
        return at + 6;
    }
    fields.len()
}

fn decode_record(fields: &[&str]) -> Result<TraceRecord, BodyError> {
    // A trailing empty field comes from "…\x01\x02" (5.x CLOUD SubAfter).
    let fields = match fields.split_last() {
        Some((last, rest)) if last.is_empty() && rest.len() >= 6 => rest,
        _ => fields,
    };
    let f = Fields(fields);
    match fields.first().copied() {
        Some("Pub") => decode_pub(f.need(13)?),
        Some("SubBefore") => decode_sub_before(f.need(8)?),
        Some("SubAfter") => decode_sub_after(f.need(6)?),
        Some("EndTransaction") => decode_end_transaction(f.need(13)?),
        Some("Recall") => decode_recall(f.need(7)?),
        other => Err(BodyError::new(
            "trace record",
            format!("unknown record type {:?}", other.unwrap_or("")),
        )),
    }
}

/// A record's fields, type name first.
#[derive(Clone, Copy)]
struct Fields<'a>(&'a [&'a str]);

impl<'a> Fields<'a> {
    /// These fields, when there are at least `n`.
    fn need(self, n: usize) -> Result<Fields<'a>, BodyError> {
        if self.0.len() < n {
            return Err(BodyError::new(
                "trace record",
                format!(
                    "{} has {} fields, needs at least {n}",
                    self.0[0],
                    self.0.len()
                ),
            ));
        }
        Ok(self)
    }
    fn len(self) -> usize {
        self.0.len()
    }
    fn text(self, i: usize) -> String {
        self.0[i].to_string()
    }
    fn optional(self, i: usize) -> Option<String> {
        self.0.get(i).map(|h| h.to_string())
    }
    fn int(self, i: usize, name: &str) -> Result<i64, BodyError> {
        int(self.0[i], name)
    }
    fn int32(self, i: usize, name: &str) -> Result<i32, BodyError> {
        self.int(i, name).map(|v| v as i32)
    }
    fn boolean(self, i: usize, name: &str) -> Result<bool, BodyError> {
        boolean(self.0[i], name)
    }
}

fn decode_pub(f: Fields<'_>) -> Result<TraceRecord, BodyError> {
    // 13 fields: clients before offsetMsgId and success were added.
    let (offset_msg_id, success) = if f.len() == 13 {
        (String::new(), true)
    } else {
        (f.text(12), f.boolean(13, "success")?)
    };
    Ok(TraceRecord::Pub(PubRecord {
        timestamp: f.int(1, "timeStamp")?,
        region_id: f.text(2),
        group: f.text(3),
        topic: f.text(4),
        msg_id: f.text(5),
        tags: f.text(6),
        keys: f.text(7),
        store_host: f.text(8),
        body_length: f.int(9, "bodyLength")?,
        cost_time_ms: f.int(10, "costTime")?,
        msg_type: f.int32(11, "msgType")?,
        offset_msg_id,
        success,
        client_host: f.optional(14),
    }))
}

fn decode_sub_before(f: Fields<'_>) -> Result<TraceRecord, BodyError> {
    Ok(TraceRecord::SubBefore(SubBeforeRecord {
        timestamp: f.int(1, "timeStamp")?,
        region_id: f.text(2),
        group: f.text(3),
        request_id: f.text(4),
        msg_id: f.text(5),
        retry_times: f.int32(6, "retryTimes")?,
        keys: f.text(7),
        client_host: f.optional(8),
    }))
}

fn decode_sub_after(f: Fields<'_>) -> Result<TraceRecord, BodyError> {
    // 9 fields: newer clients add the time and the group.
    let newer = f.len() >= 9;
    Ok(TraceRecord::SubAfter(SubAfterRecord {
        request_id: f.text(1),
        msg_id: f.text(2),
        cost_time_ms: f.int(3, "costTime")?,
        success: f.boolean(4, "success")?,
        keys: f.text(5),
        context_code: if f.len() > 6 {
            Some(f.int32(6, "contextCode")?)
        } else {
            None
        },
        timestamp: if newer {
            Some(f.int(7, "timeStamp")?)
        } else {
            None
        },
        group: newer.then(|| f.text(8)),
    }))
}

fn decode_end_transaction(f: Fields<'_>) -> Result<TraceRecord, BodyError> {
    Ok(TraceRecord::EndTransaction(EndTransactionRecord {
        timestamp: f.int(1, "timeStamp")?,
        region_id: f.text(2),
        group: f.text(3),
        topic: f.text(4),
        msg_id: f.text(5),
        tags: f.text(6),
        keys: f.text(7),
        store_host: f.text(8),
        msg_type: f.int32(9, "msgType")?,
        transaction_id: f.text(10),
        transaction_state: f.text(11),
        from_transaction_check: f.boolean(12, "fromTransactionCheck")?,
    }))
}

fn decode_recall(f: Fields<'_>) -> Result<TraceRecord, BodyError> {
    Ok(TraceRecord::Recall(RecallRecord {
        timestamp: f.int(1, "timeStamp")?,
        region_id: f.text(2),
        group: f.text(3),
        topic: f.text(4),
        msg_id: f.text(5),
        success: f.boolean(6, "success")?,
    }))
}

fn int(text: &str, field: &str) -> Result<i64, BodyError> {
    text.trim().parse().map_err(|_| {
        BodyError::new(
            "trace record",
            format!("{field} {text:?} is not an integer"),
        )
    })
}

fn boolean(text: &str, field: &str) -> Result<bool, BodyError> {
    // Java's Boolean.parseBoolean: "true" in any case is true, anything else false.
    // We are stricter: anything but true/false is corrupt data.
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(BodyError::new(
            "trace record",
            format!("{field} {text:?} is not a boolean"),
        )),
    }
}

/// Encode records exactly as Java's `TraceDataEncoder` does (14-field Pub,
/// 8-field SubBefore, 9-field SubAfter when timestamp and group are set).
pub fn encode(records: &[TraceRecord]) -> String {
    let mut out = String::new();
    for record in records {
        out.push_str(&encoded_fields(record).join("\u{1}"));
        out.push(RECORD);
    }
    out
}

fn encoded_fields(record: &TraceRecord) -> Vec<String> {
    match record {
        TraceRecord::Pub(r) => {
            let mut fields = vec![
                "Pub".to_string(),
                r.timestamp.to_string(),
                r.region_id.clone(),
                r.group.clone(),
                r.topic.clone(),
                r.msg_id.clone(),
                r.tags.clone(),
                r.keys.clone(),
                r.store_host.clone(),
                r.body_length.to_string(),
                r.cost_time_ms.to_string(),
                r.msg_type.to_string(),
                r.offset_msg_id.clone(),
                r.success.to_string(),
            ];
            fields.extend(r.client_host.clone());
            fields
        }
        TraceRecord::SubBefore(r) => vec![
            "SubBefore".to_string(),
            r.timestamp.to_string(),
            r.region_id.clone(),
            r.group.clone(),
            r.request_id.clone(),
            r.msg_id.clone(),
            r.retry_times.to_string(),
            r.keys.clone(),
        ],
        TraceRecord::SubAfter(r) => {
            let mut fields = vec![
                "SubAfter".to_string(),
                r.request_id.clone(),
                r.msg_id.clone(),
                r.cost_time_ms.to_string(),
                r.success.to_string(),
                r.keys.clone(),
                r.context_code.unwrap_or(0).to_string(),
            ];
            if let (Some(ts), Some(group)) = (r.timestamp, &r.group) {
                fields.push(ts.to_string());
                fields.push(group.clone());
            }
            fields
        }
        TraceRecord::EndTransaction(r) => vec![
            "EndTransaction".to_string(),
            r.timestamp.to_string(),
            r.region_id.clone(),
            r.group.clone(),
            r.topic.clone(),
            r.msg_id.clone(),
            r.tags.clone(),
            r.keys.clone(),
            r.store_host.clone(),
            r.msg_type.to_string(),
            r.transaction_id.clone(),
            r.transaction_state.clone(),
            r.from_transaction_check.to_string(),
        ],
        TraceRecord::Recall(r) => vec![
            "Recall".to_string(),
            r.timestamp.to_string(),
            r.region_id.clone(),
            r.group.clone(),
            r.topic.clone(),
            r.msg_id.clone(),
            r.success.to_string(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_seven_field_sub_after_and_nine_field_form_both_decode() {
        let seven = "SubAfter\u{1}r\u{1}m\u{1}5\u{1}true\u{1}k1 k2\u{1}0\u{2}";
        let nine = "SubAfter\u{1}r\u{1}m\u{1}5\u{1}false\u{1}k\u{1}4\u{1}1700\u{1}G\u{2}";
        let records = decode(format!("{seven}{nine}").as_bytes()).expect("decodes");
        let TraceRecord::SubAfter(a) = &records[0] else {
            panic!("not SubAfter")
        };
        assert!(a.success && a.group.is_none());
        assert_eq!(records[0].keys().collect::<Vec<_>>(), ["k1", "k2"]);
        let TraceRecord::SubAfter(b) = &records[1] else {
            panic!("not SubAfter")
        };
        assert_eq!(
            (b.success, b.context_code, b.timestamp, b.group.as_deref()),
            (false, Some(4), Some(1700), Some("G"))
        );
    }

    #[test]
    fn cloud_glued_sub_after_is_split() {
        let glued = "SubAfter\u{1}r\u{1}m\u{1}5\u{1}true\u{1}k\u{1}0\u{1}SubAfter\u{1}r2\u{1}m2\u{1}5\u{1}true\u{1}k2\u{1}0\u{1}\u{2}";
        let records = decode(glued.as_bytes()).expect("decodes");
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].msg_id(), "m2");
    }

    #[test]
    fn pub_with_13_fields_is_an_implied_success() {
        let old = "Pub\u{1}1\u{1}R\u{1}G\u{1}T\u{1}M\u{1}null\u{1}K\u{1}h:1\u{1}3\u{1}4\u{1}0\u{1}extra\u{2}";
        // 13 fields: the last is the (old) offsetMsgId slot absent; Java treats as success.
        let records = decode(old.as_bytes()).expect("decodes");
        let TraceRecord::Pub(p) = &records[0] else {
            panic!("not Pub")
        };
        assert!(p.success);
        assert_eq!(records[0].keys().collect::<Vec<_>>(), ["K"]);
    }

    #[test]
    fn encode_decode_round_trip() {
        let records = vec![
            TraceRecord::Pub(PubRecord {
                timestamp: 1,
                region_id: "R".into(),
                group: "P".into(),
                topic: "T".into(),
                msg_id: "M".into(),
                tags: "null".into(),
                keys: "a b".into(),
                store_host: "h:1".into(),
                body_length: 7,
                cost_time_ms: 2,
                msg_type: 0,
                offset_msg_id: "O".into(),
                success: true,
                client_host: None,
            }),
            TraceRecord::SubAfter(SubAfterRecord {
                request_id: "q".into(),
                msg_id: "M".into(),
                cost_time_ms: 1,
                success: true,
                keys: "a b".into(),
                context_code: Some(0),
                timestamp: Some(9),
                group: Some("G".into()),
            }),
        ];
        assert_eq!(
            decode(encode(&records).as_bytes()).expect("decodes"),
            records
        );
    }

    #[test]
    fn corrupt_records_are_errors() {
        for bad in [
            &b"Nope\x01x\x02"[..],
            b"Pub\x011\x02",
            b"Pub\x01x\x01R\x01G\x01T\x01M\x01t\x01k\x01h\x013\x014\x010\x01O\x01true\x02",
            b"SubAfter\x01r\x01m\x015\x01maybe\x01k\x02",
            b"\xff\x01",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
