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
    let need = |n: usize| -> Result<(), BodyError> {
        if fields.len() < n {
            Err(BodyError::new(
                "trace record",
                format!(
                    "{} has {} fields, needs at least {n}",
                    fields[0],
                    fields.len()
                ),
            ))
        } else {
            Ok(())
        }
    };
    let s = |i: usize| fields[i].to_string();
    match fields.first().copied() {
        Some("Pub") => {
            need(13)?;
            let (offset_msg_id, success) = if fields.len() == 13 {
                (String::new(), true)
            } else {
                (s(12), boolean(fields[13], "success")?)
            };
            Ok(TraceRecord::Pub(PubRecord {
                timestamp: int(fields[1], "timeStamp")?,
                region_id: s(2),
                group: s(3),
                topic: s(4),
                msg_id: s(5),
                tags: s(6),
                keys: s(7),
                store_host: s(8),
                body_length: int(fields[9], "bodyLength")?,
                cost_time_ms: int(fields[10], "costTime")?,
                msg_type: int(fields[11], "msgType")? as i32,
                offset_msg_id,
                success,
                client_host: fields.get(14).map(|h| h.to_string()),
            }))
        }
        Some("SubBefore") => {
            need(8)?;
            Ok(TraceRecord::SubBefore(SubBeforeRecord {
                timestamp: int(fields[1], "timeStamp")?,
                region_id: s(2),
                group: s(3),
                request_id: s(4),
                msg_id: s(5),
                retry_times: int(fields[6], "retryTimes")? as i32,
                keys: s(7),
                client_host: fields.get(8).map(|h| h.to_string()),
            }))
        }
        Some("SubAfter") => {
            need(6)?;
            Ok(TraceRecord::SubAfter(SubAfterRecord {
                request_id: s(1),
                msg_id: s(2),
                cost_time_ms: int(fields[3], "costTime")?,
                success: boolean(fields[4], "success")?,
                keys: s(5),
                context_code: fields
                    .get(6)
                    .map(|c| int(c, "contextCode").map(|c| c as i32))
                    .transpose()?,
                timestamp: if fields.len() >= 9 {
                    Some(int(fields[7], "timeStamp")?)
                } else {
                    None
                },
                group: (fields.len() >= 9).then(|| s(8)),
            }))
        }
        Some("EndTransaction") => {
            need(13)?;
            Ok(TraceRecord::EndTransaction(EndTransactionRecord {
                timestamp: int(fields[1], "timeStamp")?,
                region_id: s(2),
                group: s(3),
                topic: s(4),
                msg_id: s(5),
                tags: s(6),
                keys: s(7),
                store_host: s(8),
                msg_type: int(fields[9], "msgType")? as i32,
                transaction_id: s(10),
                transaction_state: s(11),
                from_transaction_check: boolean(fields[12], "fromTransactionCheck")?,
            }))
        }
        Some("Recall") => {
            need(7)?;
            Ok(TraceRecord::Recall(RecallRecord {
                timestamp: int(fields[1], "timeStamp")?,
                region_id: s(2),
                group: s(3),
                topic: s(4),
                msg_id: s(5),
                success: boolean(fields[6], "success")?,
            }))
        }
        other => Err(BodyError::new(
            "trace record",
            format!("unknown record type {:?}", other.unwrap_or("")),
        )),
    }
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
    let mut push = |fields: &[&str]| {
        out.push_str(&fields.join("\u{1}"));
        out.push(RECORD);
    };
    for record in records {
        match record {
            TraceRecord::Pub(r) => {
                let (ts, len, cost, ty) = (
                    r.timestamp.to_string(),
                    r.body_length.to_string(),
                    r.cost_time_ms.to_string(),
                    r.msg_type.to_string(),
                );
                let success = r.success.to_string();
                let mut fields = vec![
                    "Pub",
                    &ts,
                    &r.region_id,
                    &r.group,
                    &r.topic,
                    &r.msg_id,
                    &r.tags,
                    &r.keys,
                    &r.store_host,
                    &len,
                    &cost,
                    &ty,
                    &r.offset_msg_id,
                    &success,
                ];
                if let Some(host) = &r.client_host {
                    fields.push(host);
                }
                push(&fields);
            }
            TraceRecord::SubBefore(r) => {
                let (ts, retry) = (r.timestamp.to_string(), r.retry_times.to_string());
                push(&[
                    "SubBefore",
                    &ts,
                    &r.region_id,
                    &r.group,
                    &r.request_id,
                    &r.msg_id,
                    &retry,
                    &r.keys,
                ]);
            }
            TraceRecord::SubAfter(r) => {
                let cost = r.cost_time_ms.to_string();
                let success = r.success.to_string();
                let code = r.context_code.unwrap_or(0).to_string();
                let mut fields = vec![
                    "SubAfter",
                    &r.request_id,
                    &r.msg_id,
                    &cost,
                    &success,
                    &r.keys,
                    &code,
                ];
                let ts = r.timestamp.map(|t| t.to_string());
                if let (Some(ts), Some(group)) = (&ts, &r.group) {
                    fields.push(ts);
                    fields.push(group);
                }
                push(&fields);
            }
            TraceRecord::EndTransaction(r) => {
                let (ts, ty, check) = (
                    r.timestamp.to_string(),
                    r.msg_type.to_string(),
                    r.from_transaction_check.to_string(),
                );
                push(&[
                    "EndTransaction",
                    &ts,
                    &r.region_id,
                    &r.group,
                    &r.topic,
                    &r.msg_id,
                    &r.tags,
                    &r.keys,
                    &r.store_host,
                    &ty,
                    &r.transaction_id,
                    &r.transaction_state,
                    &check,
                ]);
            }
            TraceRecord::Recall(r) => {
                let (ts, success) = (r.timestamp.to_string(), r.success.to_string());
                push(&[
                    "Recall",
                    &ts,
                    &r.region_id,
                    &r.group,
                    &r.topic,
                    &r.msg_id,
                    &success,
                ]);
            }
        }
    }
    out
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
