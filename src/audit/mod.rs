//! The loss audit: on a schedule, compare what producers sent with what
//! consumers processed, key by key, and name the stage where each missing
//! key was lost (design sections 1 and 6).
//!
//! * [`reconcile`]: pure counting of one window by key hash;
//! * [`source`]: record sources (jsonl, http, sql, rocketmq_trace);
//! * [`store`]: the crash-safe SQLite store (windows, findings, runs, trace, cursors);

pub mod reconcile;
pub mod source;
pub mod store;
