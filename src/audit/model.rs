//! The audit's vocabulary: what a produced and a consumed message is, and
//! the closed sets the store, the metrics and the API speak — stage, status,
//! finding kind, send status, message kind, transaction state — each with
//! one `as_str` used for storage and export, and one parser for reading back.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

macro_rules! closed_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored and exported text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Read the stored text back.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

closed_set! {
    /// Where a missing message is (or was lost). See docs/audit.md.
    Stage {
        /// The producer never got it stored (ledger flows only).
        Send => "send",
        /// Stored, then gone from the broker's store.
        Store => "store",
        /// Deleted by retention before the group consumed it.
        Expired => "expired",
        /// The group moved past it with no consumer record (ledger flows).
        Consume => "consume",
        /// In `%DLQ%<group>`.
        DeadLetter => "dead_letter",
        /// Walking `%RETRY%<group>`.
        Retrying => "retrying",
        /// The group has not reached it (lag).
        Late => "late",
        /// A transaction half message not resolved (discarded after the
        /// broker's check limit when lost).
        Transaction => "transaction",
        /// Delay-level or timer message not yet deliverable.
        Scheduled => "scheduled",
        /// The group moved past it, no consumer trace record, and no ledger
        /// to say whether it was processed (trace gap or consume loss).
        Unconfirmed => "unconfirmed",
        /// Not diagnosed this run (budget or a broker call failed); retried.
        Undiagnosed => "undiagnosed",
    }
}

impl Stage {
    /// Stages that are losses once the deadline has passed.
    pub const LOSSES: &'static [Stage] = &[
        Stage::Send,
        Stage::Store,
        Stage::Expired,
        Stage::Consume,
        Stage::Retrying,
        Stage::Late,
        Stage::Transaction,
        Stage::Unconfirmed,
        Stage::Undiagnosed,
    ];

    /// Still on its way at the deadline: not declared lost while the
    /// broker holds it for later delivery.
    pub fn keeps_waiting(self) -> bool {
        matches!(self, Stage::Scheduled)
    }
}

closed_set! {
    /// Where a finding stands.
    Status {
        /// Missing, deadline not passed (or still scheduled).
        Pending => "pending",
        /// Missing past the deadline: lost at its stage.
        Lost => "lost",
        /// Parked in the DLQ.
        DeadLetter => "dead_letter",
        /// Consumed before the deadline, after an earlier audit found it missing.
        Resolved => "resolved",
        /// Consumed after it had been declared lost (a corrected verdict, kept).
        ResolvedLate => "resolved_late",
        /// Duplicates and orphans: counted, nothing to re-check.
        Final => "final",
    }
}

closed_set! {
    /// What a finding is about.
    FindingKind {
        /// Produced, not consumed.
        Missing => "missing",
        /// Consumed more than once.
        Duplicated => "duplicated",
        /// Consumed, never produced.
        Orphaned => "orphaned",
    }
}

closed_set! {
    /// How a send ended, as the producer saw it.
    SendStatus {
        /// Stored and, per the broker's settings, durable.
        SendOk => "SEND_OK",
        /// Stored, not yet flushed to disk in time (SYNC_FLUSH).
        FlushDiskTimeout => "FLUSH_DISK_TIMEOUT",
        /// Stored, the slave did not confirm in time (SYNC_MASTER).
        FlushSlaveTimeout => "FLUSH_SLAVE_TIMEOUT",
        /// Stored, no slave to replicate to (SYNC_MASTER).
        SlaveNotAvailable => "SLAVE_NOT_AVAILABLE",
        /// Stored, not `SEND_OK`, exact status unknown (a trace `Pub` with success = false).
        NotOk => "NOT_OK",
        /// The send threw: the broker may or may not have it.
        Failed => "FAILED",
        /// The application recorded it but never sent it.
        NotSent => "NOT_SENT",
        /// The source does not say.
        Unknown => "UNKNOWN",
    }
}

impl SendStatus {
    /// Stored but not durable: the messages a failover or power loss drops.
    pub fn at_risk(self) -> bool {
        matches!(
            self,
            SendStatus::FlushDiskTimeout
                | SendStatus::FlushSlaveTimeout
                | SendStatus::SlaveNotAvailable
                | SendStatus::NotOk
        )
    }

    /// The broker acknowledged storing it.
    pub fn acknowledged(self) -> bool {
        matches!(
            self,
            SendStatus::SendOk
                | SendStatus::FlushDiskTimeout
                | SendStatus::FlushSlaveTimeout
                | SendStatus::SlaveNotAvailable
                | SendStatus::NotOk
        )
    }
}

closed_set! {
    /// What kind of message the producer sent (trace `msgType`, or the ledger).
    MessageKind {
        /// Deliverable at once.
        Normal => "normal",
        /// A delay-level or timer message (deliverable later).
        Delay => "delay",
        /// A transactional message (visible once committed).
        Transaction => "transaction",
        /// An ordered message (same as normal for the audit).
        Order => "order",
    }
}

impl MessageKind {
    /// From the trace `Pub` record's `MessageType` ordinal.
    pub fn from_trace(ordinal: i32) -> MessageKind {
        match ordinal {
            1 | 2 => MessageKind::Transaction,
            3 => MessageKind::Delay,
            4 => MessageKind::Order,
            _ => MessageKind::Normal,
        }
    }
}

closed_set! {
    /// A transactional message's outcome.
    TxState {
        /// Committed: delivered.
        Commit => "commit",
        /// Rolled back: never produced.
        Rollback => "rollback",
        /// Not resolved (the broker keeps checking, then discards it).
        Unknown => "unknown",
    }
}

impl TxState {
    /// From Java's `LocalTransactionState` names (EndTransaction records).
    pub fn from_java(text: &str) -> Option<TxState> {
        match text {
            "COMMIT_MESSAGE" | "commit" => Some(TxState::Commit),
            "ROLLBACK_MESSAGE" | "rollback" => Some(TxState::Rollback),
            "UNKNOW" | "UNKNOWN" | "unknown" => Some(TxState::Unknown),
            _ => None,
        }
    }
}

/// One produced message, from any source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Produced {
    /// Client message id (`UNIQ_KEY`), when the source has it.
    pub msg_id: Option<String>,
    /// Message keys (one message may have several).
    pub keys: Vec<String>,
    /// Event (send) time, epoch ms.
    pub time_ms: i64,
    /// Broker message id (store host and commit-log offset), when known.
    pub offset_msg_id: Option<String>,
    /// Tag, when known.
    pub tags: Option<String>,
    /// User properties, when the source has them (SQL92 subscriptions).
    pub properties: Option<BTreeMap<String, String>>,
    /// How the send ended.
    pub status: SendStatus,
    /// Normal, delay, transaction, order.
    pub kind: MessageKind,
    /// Transactional outcome, when known.
    pub transaction: Option<TxState>,
    /// Sent in a batch: a 5.x broker may store it under the batch's
    /// `UNIQ_KEY` instead of its own, so its id is not proof of identity.
    pub batch: bool,
}

impl Produced {
    /// The reference shown for it: its first key, else its message id.
    pub fn reference(&self) -> Option<&str> {
        self.keys
            .first()
            .map(String::as_str)
            .or(self.msg_id.as_deref())
    }

    /// Its id proves identity on the consumer side (not a batch member).
    pub fn id_is_reliable(&self) -> bool {
        self.msg_id.is_some() && !self.batch
    }
}

/// One consumption (a successful processing by the flow's group).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consumed {
    /// Message id as the consumer saw it, when recorded.
    pub msg_id: Option<String>,
    /// Message keys, when recorded.
    pub keys: Vec<String>,
    /// When processed, epoch ms.
    pub time_ms: i64,
}

impl Consumed {
    /// The reference shown for it.
    pub fn reference(&self) -> Option<&str> {
        self.keys
            .first()
            .map(String::as_str)
            .or(self.msg_id.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_closed_set_reads_back_what_it_writes() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(*s));
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(*s));
        }
        for s in SendStatus::ALL {
            assert_eq!(SendStatus::parse(s.as_str()), Some(*s));
        }
        for k in FindingKind::ALL {
            assert_eq!(FindingKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(Stage::parse("nope"), None);
    }

    #[test]
    fn stored_but_not_durable_sends_are_at_risk_and_acknowledged() {
        for s in [
            SendStatus::SlaveNotAvailable,
            SendStatus::FlushDiskTimeout,
            SendStatus::FlushSlaveTimeout,
            SendStatus::NotOk,
        ] {
            assert!(s.at_risk() && s.acknowledged(), "{s}");
        }
        assert!(!SendStatus::SendOk.at_risk() && SendStatus::SendOk.acknowledged());
        for s in [SendStatus::Failed, SendStatus::NotSent, SendStatus::Unknown] {
            assert!(!s.at_risk() && !s.acknowledged(), "{s}");
        }
    }

    #[test]
    fn trace_message_types_and_transaction_states_map() {
        assert_eq!(MessageKind::from_trace(0), MessageKind::Normal);
        assert_eq!(MessageKind::from_trace(1), MessageKind::Transaction);
        assert_eq!(MessageKind::from_trace(3), MessageKind::Delay);
        assert_eq!(TxState::from_java("UNKNOW"), Some(TxState::Unknown));
        assert_eq!(TxState::from_java("COMMIT_MESSAGE"), Some(TxState::Commit));
        assert_eq!(TxState::from_java("maybe"), None);
    }
}
