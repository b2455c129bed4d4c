//! mqaudit watches Apache RocketMQ for message loss.
//!
//! # Layout
//!
//! In data-flow order, each layer using only the one below it:
//!
//! * [`remoting`]: frames, TCP connections, request/response correlation,
//!   ACL signing. The only module that opens sockets.
//! * [`body`]: pure readers for response bodies (three JSON dialects, broker
//!   config text, human byte strings, stored messages, trace records).
//! * [`admin`]: typed RocketMQ admin calls over a [`remoting::Pool`].
//! * [`doctor`]: the message-loss checklist built from admin calls.
//! * [`cli`]: command-line parsing and the commands' entry points.

pub mod admin;
pub mod body;
pub mod cli;
pub mod doctor;
pub mod remoting;
