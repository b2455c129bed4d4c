//! Readers for RocketMQ response bodies and the values inside them. Pure
//! functions over bytes: no I/O, no clock, no panics, allocation bounded by
//! the input.
//!
//! * [`json`]: the tolerant reader for standard, fastjson and JSON-in-a-string
//!   dialects, and `MessageQueue`-keyed tables;
//! * [`text`]: broker config (`key=value` or `key:value`), human byte strings,
//!   TPS triples and the other formatted strings of the runtime `KVTable`;
//! * [`message`]: stored message records (QUERY_MESSAGE, PULL, VIEW bodies);
//! * [`trace`]: message-trace records (`RMQ_SYS_TRACE_TOPIC` bodies).

pub mod json;
pub mod message;
pub mod text;
pub mod trace;

/// A body (or a value inside one) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct BodyError {
    what: String,
    detail: String,
}

impl BodyError {
    /// An error reading `what` (a body or field name), with the detail.
    pub fn new(what: impl Into<String>, detail: impl Into<String>) -> BodyError {
        BodyError {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// Say which body the inner error was found in.
    pub fn context(self, what: &str) -> BodyError {
        BodyError {
            detail: format!("{} ({})", self.detail, self.what),
            what: what.to_string(),
        }
    }
}
