//! mqaudit watches Apache RocketMQ for message loss.
//!
//! # Layout
//!
//! In data-flow order, each layer using only the ones below it (the full
//! table, and where to add a collector, a source or a stage, is in
//! `docs/architecture.md`):
//!
//! * [`remoting`]: frames, TCP connections, request/response correlation,
//!   ACL signing. The only module that opens sockets.
//! * [`body`]: pure readers for response bodies (three JSON dialects, broker
//!   config text, human byte strings, stored messages, trace records).
//! * [`admin`]: typed RocketMQ admin calls over a [`remoting::Pool`], the
//!   [`admin::Cluster`] handle (name-server fallback), and the model types
//!   and errors everything above speaks. Above it, nothing imports
//!   `remoting` or `body`.
//! * [`concurrent`]: many admin calls at once under one limit.
//! * [`posture`]: durability posture (replication per slave, durability
//!   risks) from admin facts; shared by doctor and collector.
//! * [`backlog`]: a group's lag, retry and DLQ backlog from admin facts;
//!   shared by doctor and collector.
//! * [`clock`]: wall-clock time, passed in (the scheduler, the collector
//!   and the auditor never read a global clock).
//! * [`doctor`]: the message-loss checklist built from admin calls.
//! * [`collector`]: the per-cluster collection loop, one collector per
//!   subsystem, building a fresh [`metrics::Exposition`] each cycle.
//! * [`audit`]: the message-level loss audit (sources, window selection,
//!   reconcile, diagnosis, store, schedule).
//! * [`metrics`]: metric families, the pre-encoded snapshot, self metrics.
//! * [`config`]: TOML configuration: raw form, flag overrides, one resolver
//!   per section, every default in one place.
//! * [`http`]: the HTTP server (`/metrics`, health, readiness, JSON API).
//! * [`app`]: `serve`: wires config, collectors, auditors and the server,
//!   and shuts down within one grace period.
//! * [`logging`]: logfmt and JSON log output.
//! * [`cli`]: command-line parsing and the commands' entry points.

pub mod admin;
pub mod app;
pub mod audit;
pub mod backlog;
pub mod body;
pub mod cli;
pub mod clock;
pub mod collector;
pub mod concurrent;
pub mod config;
pub mod doctor;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod posture;
pub mod probe;
pub mod remoting;
