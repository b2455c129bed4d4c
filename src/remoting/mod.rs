//! The RocketMQ remoting layer: bytes, frames, TCP, and request/response
//! correlation. This is the only module that opens sockets; `admin` and
//! everything above it speak in [`Command`]s through a [`Pool`].
//!
//! It knows nothing about what request codes mean, except the few response
//! codes it must recognise to stay in step with the peer.

mod acl;
mod client;
pub mod codes;
mod frame;

pub use acl::AclCredentials;
pub use client::{Client, ClientOptions, Pool};
pub use frame::{CLIENT_VERSION, Command, Decoded, MAX_FRAME_LENGTH, SerializeType, decode};

use std::time::Duration;

/// Everything that can go wrong talking to a peer.
///
/// [`Error::kind`] gives a fixed, bounded label for metrics; the `Display`
/// text carries the context for logs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer (or no connection) within the allowed time.
    #[error("timed out after {after:?} waiting for {what} from {addr}")]
    Timeout {
        /// The peer.
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
    /// The peer sent bytes that are not valid RocketMQ (or we could not encode).
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

    /// A bounded label for this error: `timeout`, `io`, `protocol` or `remote`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Timeout { .. } => "timeout",
            Error::Io { .. } => "io",
            Error::Protocol(_) => "protocol",
            Error::Remote { .. } => "remote",
        }
    }

    /// The response code when this is a remote error.
    pub fn remote_code(&self) -> Option<i32> {
        match self {
            Error::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}
