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
//! * [`concurrent`]: many admin calls at once under one limit.
//! * [`posture`]: durability posture (replication per slave, durability
//!   risks) from admin facts; shared by doctor and collector.
//! * [`doctor`]: the message-loss checklist built from admin calls.
//! * [`collector`]: the per-cluster collection loop, building a fresh
//!   [`metrics::Exposition`] each cycle.
//! * [`audit`]: the key-level loss audit (sources, reconcile, diagnosis, store).
//! * [`metrics`]: metric families, the pre-encoded snapshot, self metrics.
//! * [`config`]: TOML configuration, validated into a resolved form.
//! * [`http`]: the HTTP server (`/metrics`, health, readiness).
//! * [`app`]: `serve`: wires config, collectors and the server, and shuts down.
//! * [`logging`]: logfmt and JSON log output.
//! * [`cli`]: command-line parsing and the commands' entry points.

pub mod admin;
pub mod app;
pub mod audit;
pub mod body;
pub mod cli;
pub mod collector;
pub mod concurrent;
pub mod config;
pub mod doctor;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod posture;
pub mod remoting;
