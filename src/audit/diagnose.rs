//! Diagnosis of a missing key against the brokers, within a per-run budget
//! of broker calls (design sections 1 and 6):
//!
//! 1. QUERY_MESSAGE by key on the topic's masters. Found: where (broker,
//!    queue, offset, store time); then the group's committed offset on that
//!    queue. Not past the message: `pending` (plain lag).
//! 2. Past it, or not on the topic: QUERY_MESSAGE on `%DLQ%<group>` (a
//!    dead-lettered message also stays on its topic). Found: `dead_letter`.
//! 3. Past it and not in the DLQ: `consume` (the group moved on without a
//!    consumer record).
//! 4. Nowhere: if the send was acknowledged (a trace `Pub` with success, or a
//!    msgId in the producer ledger) the broker lost it: `expired` when its
//!    commit-log offset is below the broker's min offset (retention), else
//!    `store`. Never acknowledged: `send`.
//!
//! When the budget runs out, or a call fails, the key is `undiagnosed` and
//! is tried again next run.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;

use crate::admin::Admin;
use crate::remoting::codes::response;

/// Where a message was lost (or that it is not lost yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The producer never got it to a broker.
    Send,
    /// Acknowledged, then gone from the broker's store.
    Store,
    /// Deleted by retention before the group consumed it.
    Expired,
    /// The broker has it and the group moved past it, with no consumer record.
    Consume,
    /// In `%DLQ%<group>`.
    DeadLetter,
    /// The broker has it and the group has not reached it yet.
    Pending,
    /// Budget ran out or a broker call failed; tried again next run.
    Undiagnosed,
}

impl Stage {
    /// The `stage` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Send => "send",
            Stage::Store => "store",
            Stage::Expired => "expired",
            Stage::Consume => "consume",
            Stage::DeadLetter => "dead_letter",
            Stage::Pending => "pending",
            Stage::Undiagnosed => "undiagnosed",
        }
    }
}

/// A stage and the broker evidence for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    /// The stage.
    pub stage: Stage,
    /// What the brokers said.
    pub evidence: serde_json::Value,
}

/// What is known about a missing key before asking the brokers.
#[derive(Debug, Clone, Default)]
pub struct KeyFacts<'a> {
    /// The audit key.
    pub key: &'a str,
    /// True when the key is a client message id (query by unique key).
    pub key_is_msg_id: bool,
    /// Earliest produced time, epoch ms.
    pub produced_at_ms: i64,
    /// Proof of acknowledgement: a msgId from the trace or the ledger.
    pub msg_id: Option<&'a str>,
    /// The broker message id from a trace `Pub` (encodes host and commit-log offset).
    pub offset_msg_id: Option<&'a str>,
}

/// Diagnoses keys for one flow during one run.
pub struct Diagnoser<'a> {
    admin: &'a Admin,
    namesrv: &'a [String],
    topic: String,
    group: String,
    budget: usize,
    /// topic → [(broker name, master address)]; `None` when the topic has no route.
    routes: HashMap<String, Option<Vec<(String, String)>>>,
}

impl<'a> Diagnoser<'a> {
    /// A diagnoser spending at most `budget` broker calls.
    pub fn new(
        admin: &'a Admin,
        namesrv: &'a [String],
        topic: &str,
        group: &str,
        budget: usize,
    ) -> Diagnoser<'a> {
        Diagnoser {
            admin,
            namesrv,
            topic: topic.to_string(),
            group: group.to_string(),
            budget,
            routes: HashMap::new(),
        }
    }

    /// Calls left.
    pub fn budget(&self) -> usize {
        self.budget
    }

    fn spend(&mut self) -> bool {
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        true
    }

    async fn masters(&mut self, topic: &str) -> Result<Option<Vec<(String, String)>>, String> {
        if let Some(cached) = self.routes.get(topic) {
            return Ok(cached.clone());
        }
        if !self.spend() {
            return Err("budget".to_string());
        }
        let mut last = String::new();
        for namesrv in self.namesrv {
            match self.admin.topic_route(namesrv, topic).await {
                Ok(route) => {
                    let masters: Vec<(String, String)> = route
                        .broker_datas
                        .iter()
                        .filter_map(|b| {
                            b.master_addr()
                                .map(|a| (b.broker_name.clone(), a.to_string()))
                        })
                        .collect();
                    self.routes.insert(topic.to_string(), Some(masters.clone()));
                    return Ok(Some(masters));
                }
                Err(e) if e.remote_code() == Some(response::TOPIC_NOT_EXIST) => {
                    self.routes.insert(topic.to_string(), None);
                    return Ok(None);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// Find the key on one topic's masters: (broker, addr, record).
    async fn find(
        &mut self,
        topic: &str,
        facts: &KeyFacts<'_>,
        now_ms: i64,
    ) -> Result<Option<(String, String, crate::body::message::MessageRecord)>, String> {
        let Some(masters) = self.masters(topic).await? else {
            return Ok(None);
        };
        let begin = facts.produced_at_ms - 10 * 60 * 1000;
        let end = now_ms + 60 * 1000;
        for (broker, addr) in masters {
            if !self.spend() {
                return Err("budget".to_string());
            }
            let found = if facts.key_is_msg_id {
                self.admin
                    .query_message_by_unique_key(&addr, topic, facts.key, begin, end)
                    .await
            } else {
                self.admin
                    .query_message_by_key(&addr, topic, facts.key, begin, end)
                    .await
            };
            match found {
                Ok(records) => {
                    if let Some(record) = records.into_iter().next() {
                        return Ok(Some((broker, addr, record)));
                    }
                }
                Err(e) => return Err(format!("QUERY_MESSAGE on {broker}: {e}")),
            }
        }
        Ok(None)
    }

    /// Diagnose one missing key.
    pub async fn diagnose(&mut self, facts: &KeyFacts<'_>, now_ms: i64) -> Diagnosis {
        match self.try_diagnose(facts, now_ms).await {
            Ok(diagnosis) => diagnosis,
            Err(reason) if reason == "budget" => Diagnosis {
                stage: Stage::Undiagnosed,
                evidence: json!({"reason": "diagnosis budget exhausted"}),
            },
            Err(reason) => Diagnosis {
                stage: Stage::Undiagnosed,
                evidence: json!({"reason": reason}),
            },
        }
    }

    async fn try_diagnose(
        &mut self,
        facts: &KeyFacts<'_>,
        now_ms: i64,
    ) -> Result<Diagnosis, String> {
        let topic = self.topic.clone();
        let mut on_topic = None;
        if let Some((broker, addr, record)) = self.find(&topic, facts, now_ms).await? {
            if !self.spend() {
                return Err("budget".to_string());
            }
            let committed = self
                .admin
                .consumer_offset(&addr, &self.group, &topic, record.queue_id)
                .await
                .map_err(|e| format!("QUERY_CONSUMER_OFFSET on {broker}: {e}"))?;
            let evidence = json!({
                "broker": broker,
                "queue_id": record.queue_id,
                "queue_offset": record.queue_offset,
                "store_timestamp_ms": record.store_timestamp,
                "msg_id": record.uniq_key(),
                "group_offset": committed,
            });
            if committed.is_none_or(|c| c <= record.queue_offset) {
                return Ok(Diagnosis {
                    stage: Stage::Pending,
                    evidence,
                });
            }
            on_topic = Some(evidence);
        }
        // Passed by the group, or not on the topic: a consumer that gave up
        // sent it to the DLQ (the original stays on the topic).
        let dlq = format!("%DLQ%{}", self.group);
        if let Some((broker, _, record)) = self.find(&dlq, facts, now_ms).await? {
            return Ok(Diagnosis {
                stage: Stage::DeadLetter,
                evidence: json!({
                    "broker": broker,
                    "dlq_topic": dlq,
                    "queue_offset": record.queue_offset,
                    "store_timestamp_ms": record.store_timestamp,
                    "reconsume_times": record.reconsume_times,
                    "on_topic": on_topic,
                }),
            });
        }
        if let Some(evidence) = on_topic {
            return Ok(Diagnosis {
                stage: Stage::Consume,
                evidence,
            });
        }
        if facts.msg_id.is_none() {
            return Ok(Diagnosis {
                stage: Stage::Send,
                evidence: json!({"found": false, "acknowledged": false}),
            });
        }
        // Acknowledged, now gone. Retention, if its commit-log offset is below the broker's min.
        if let Some((host, offset)) = facts.offset_msg_id.and_then(decode_offset_msg_id) {
            let masters = self.masters(&topic).await?.unwrap_or_default();
            if let Some((broker, addr)) = masters.into_iter().find(|(_, a)| *a == host) {
                if !self.spend() {
                    return Err("budget".to_string());
                }
                let runtime = self
                    .admin
                    .runtime_info(&addr)
                    .await
                    .map_err(|e| format!("runtime info of {broker}: {e}"))?;
                let min = runtime.int("commitLogMinOffset").ok().flatten();
                let evidence = json!({"found": false, "acknowledged": true, "broker": broker, "commit_log_offset": offset, "commit_log_min_offset": min});
                if min.is_some_and(|m| offset < m) {
                    return Ok(Diagnosis {
                        stage: Stage::Expired,
                        evidence,
                    });
                }
                return Ok(Diagnosis {
                    stage: Stage::Store,
                    evidence,
                });
            }
        }
        Ok(Diagnosis {
            stage: Stage::Store,
            evidence: json!({"found": false, "acknowledged": true, "msg_id": facts.msg_id}),
        })
    }
}

/// `offsetMsgId` → (`ip:port`, commit-log offset), IPv4 form (32 hex chars).
pub fn decode_offset_msg_id(id: &str) -> Option<(String, i64)> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&id[i * 2..i * 2 + 2], 16).ok();
    let ip = format!("{}.{}.{}.{}", byte(0)?, byte(1)?, byte(2)?, byte(3)?);
    let port = i32::from_str_radix(&id[8..16], 16).ok()?;
    let offset = i64::from_str_radix(&id[16..32], 16).ok()?;
    Some((format!("{ip}:{port}"), offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_msg_id_decodes_the_java_example() {
        assert_eq!(
            decode_offset_msg_id("0A090F2800002A9F0000229E897CF382"),
            Some(("10.9.15.40:10911".to_string(), 0x229E_897C_F382))
        );
        assert_eq!(decode_offset_msg_id("nope"), None);
    }
}
