//! Why an admin call failed, in the terms callers act on. Transport failures
//! (timeout, I/O, garbage on the wire) and undecodable bodies come up from
//! [`crate::remoting`] and [`crate::body`]; a failure response code is
//! [`Error::Remote`]. Callers above `admin` branch on the predicates here,
//! never on response codes, so the wire's numbers stay in this layer.

use std::time::Duration;

use crate::body::BodyError;
use crate::remoting;
use crate::remoting::codes::response;

/// Everything an admin call can fail with.
///
/// [`Error::kind`] gives a fixed, bounded label for metrics; the `Display`
/// text carries the context for logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No answer (or no connection) within the allowed time.
    #[error("timed out after {after:?} waiting for {what} from {addr}")]
    Timeout {
        /// The peer, or `(deadline)` for the caller's own budget.
        addr: String,
        /// What we were waiting for ("connect", "response to code 28").
        what: String,
        /// The limit that ran out.
        after: Duration,
    },
    /// The socket failed or the peer closed it.
    #[error("I/O error with {addr}: {message}")]
    Io {
        /// The peer.
        addr: String,
        /// What failed, with the OS error.
        message: String,
    },
    /// The peer sent bytes that are not valid RocketMQ, or a body that does
    /// not decode.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer answered with a failure response code.
    #[error("remote error code {code} for request code {request}: {remark}")]
    Remote {
        /// The request code that failed.
        request: i32,
        /// The response code.
        code: i32,
        /// The peer's remark, or empty.
        remark: String,
    },
}

impl Error {
    /// A protocol error with the given context.
    pub fn protocol(message: impl Into<String>) -> Error {
        Error::Protocol(message.into())
    }

    /// The caller's own time budget ran out before the call finished.
    pub fn deadline(what: impl Into<String>) -> Error {
        Error::Timeout {
            addr: "(deadline)".to_string(),
            what: what.into(),
            after: Duration::ZERO,
        }
    }

    /// A bounded label for this error: `timeout`, `io`, `protocol`,
    /// `permission` (the broker's ACL refused the call) or `remote`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Timeout { .. } => "timeout",
            Error::Io { .. } => "io",
            Error::Protocol(_) => "protocol",
            Error::Remote { .. } if self.is_permission() => "permission",
            Error::Remote { .. } => "remote",
        }
    }

    /// Every value [`Error::kind`] can return, for metrics that list each.
    pub const KINDS: [&'static str; 5] = ["timeout", "io", "protocol", "permission", "remote"];

    /// The peer answered, with a failure code: asking another peer of the
    /// same kind would not help (unlike a timeout or a broken connection).
    pub fn is_answer(&self) -> bool {
        matches!(self, Error::Remote { .. })
    }

    /// The topic does not exist on the peer asked (a deleted topic, a DLQ
    /// never written to).
    pub fn is_topic_missing(&self) -> bool {
        self.code() == Some(response::TOPIC_NOT_EXIST)
    }

    /// The broker has nothing of the kind asked for: an empty broker answers
    /// "No topic in this broker" (or no subscription groups) with a generic
    /// failure code rather than an empty table.
    pub fn is_nothing_stored(&self) -> bool {
        self.code() == Some(response::SYSTEM_ERROR) && !self.is_permission()
    }

    /// The failure response code, for reports and tests; code above
    /// `admin` branches on the predicates instead.
    pub fn remote_code(&self) -> Option<i32> {
        self.code()
    }

    /// The broker's ACL refused the call: `NO_PERMISSION`, or (4.x, whose
    /// ACL hook throws before any handler) a generic failure whose remark
    /// is the `AclException`.
    pub fn is_permission(&self) -> bool {
        match self {
            Error::Remote { code, remark, .. } => {
                *code == response::NO_PERMISSION
                    || (*code == response::SYSTEM_ERROR && remark.contains("AclException"))
            }
            _ => false,
        }
    }

    /// The peer does not know the request (an older or other broker).
    pub fn is_unsupported(&self) -> bool {
        self.code() == Some(response::REQUEST_CODE_NOT_SUPPORTED)
    }

    fn code(&self) -> Option<i32> {
        match self {
            Error::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<remoting::Error> for Error {
    fn from(error: remoting::Error) -> Error {
        match error {
            remoting::Error::Timeout { addr, what, after } => Error::Timeout { addr, what, after },
            remoting::Error::Io { addr, message } => Error::Io { addr, message },
            remoting::Error::Protocol(message) => Error::Protocol(message),
            remoting::Error::Remote {
                request,
                code,
                remark,
            } => Error::Remote {
                request,
                code,
                remark,
            },
        }
    }
}

impl From<BodyError> for Error {
    fn from(error: BodyError) -> Error {
        Error::Protocol(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(code: i32) -> Error {
        Error::Remote {
            request: 202,
            code,
            remark: String::new(),
        }
    }

    #[test]
    fn predicates_name_what_callers_branch_on() {
        assert!(remote(response::TOPIC_NOT_EXIST).is_topic_missing());
        assert!(!remote(response::SYSTEM_ERROR).is_topic_missing());
        assert!(remote(response::SYSTEM_ERROR).is_nothing_stored());
        assert!(remote(response::SYSTEM_ERROR).is_answer());
        assert!(!Error::deadline("cycle").is_answer());
        assert_eq!(Error::deadline("cycle").kind(), "timeout");
        assert_eq!(remote(response::NO_PERMISSION).kind(), "permission");
        let acl_4x = Error::Remote {
            request: 28,
            code: response::SYSTEM_ERROR,
            remark: "org.apache.rocketmq.acl.common.AclException: No accessKey is configured"
                .into(),
        };
        assert_eq!(acl_4x.kind(), "permission");
        assert!(
            !acl_4x.is_nothing_stored(),
            "a refusal is not an empty broker"
        );
        assert_eq!(remote(response::SYSTEM_BUSY).kind(), "remote");
        assert!(Error::KINDS.contains(&Error::protocol("x").kind()));
    }

    #[test]
    fn transport_and_body_errors_keep_their_text() {
        let io = remoting::Error::Io {
            addr: "127.0.0.1:1".to_string(),
            message: "refused".to_string(),
        };
        let text = io.to_string();
        let converted = Error::from(io);
        assert_eq!(converted.to_string(), text);
        assert_eq!(converted.kind(), "io");
        let body = Error::from(BodyError::new("KVTable", "not an object"));
        assert_eq!(body.kind(), "protocol");
        assert!(body.to_string().contains("KVTable"), "{body}");
    }
}
