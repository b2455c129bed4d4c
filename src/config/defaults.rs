//! Every default of the configuration, in one place. `config/example.toml`
//! spells each one out, and a test checks that it does.

/// `[collect] interval_seconds`.
pub const COLLECT_INTERVAL_SECONDS: u64 = 30;
/// `[collect] timeout_seconds`, when the interval allows it (else one
/// second below the interval, at least one).
pub const COLLECT_TIMEOUT_SECONDS: u64 = 5;
/// `[collect] discovery_interval_seconds`, when at least the interval.
pub const DISCOVERY_INTERVAL_SECONDS: u64 = 120;
/// `[collect] concurrency`.
pub const CONCURRENCY: usize = 64;
/// `[collect] min_offset_refresh_cycles`.
pub const MIN_OFFSET_REFRESH_CYCLES: u64 = 10;
/// `[collect] lag_pulls_per_cycle`.
pub const LAG_PULLS_PER_CYCLE: usize = 200;

/// `[cluster.probe] topic`.
pub const PROBE_TOPIC: &str = "mqaudit_probe";
/// `[cluster.probe] group`.
pub const PROBE_GROUP: &str = "mqaudit_probe";
/// `[cluster.probe] queues`.
pub const PROBE_QUEUES: i32 = 2;
/// `[cluster.probe] interval_seconds`.
pub const PROBE_INTERVAL_SECONDS: u64 = 10;
/// `[cluster.probe] deadline_seconds`.
pub const PROBE_DEADLINE_SECONDS: u64 = 60;
/// `[cluster.probe] verify_window_seconds`: ten minutes.
pub const PROBE_VERIFY_WINDOW_SECONDS: u64 = 600;
/// `[cluster.probe] verify_every_rounds`: every five minutes at the default interval.
pub const PROBE_VERIFY_EVERY_ROUNDS: u64 = 30;

/// `[web] listen_address`.
pub const LISTEN_ADDRESS: &str = "0.0.0.0:9857";
/// `[web] telemetry_path`.
pub const TELEMETRY_PATH: &str = "/metrics";

/// `[audit] data_dir`.
pub const DATA_DIR: &str = "./mqaudit-data";
/// `[audit] diagnose_budget`.
pub const DIAGNOSE_BUDGET: usize = 500;
/// `[audit] trace_ingest_budget`.
pub const TRACE_INGEST_BUDGET: usize = 100_000;
/// `[audit] trace_concurrency`: trace queues pulled at once, across brokers.
pub const TRACE_CONCURRENCY: usize = 8;
/// `[audit] memory_budget`: 256 MiB.
pub const MEMORY_BUDGET: u64 = 256 << 20;
/// `[audit] reuse_budget`: 128 MiB per flow.
pub const REUSE_BUDGET: u64 = 128 << 20;
/// `[audit] memory_budget` at least (smaller spills nearly every record).
pub const MIN_MEMORY_BUDGET: u64 = 1 << 20;
/// `[audit] store_url_env`.
pub const STORE_URL_ENV: &str = "MQAUDIT_STORE_URL";
/// `[audit] lease_seconds`: a dead replica's flows move within this.
pub const LEASE_SECONDS: u64 = 30;

/// `[audit.retention] trace_seconds`: three days.
pub const RETAIN_TRACE_SECONDS: u64 = 3 * 24 * 3600;
/// `[audit.retention] windows_seconds`: 30 days.
pub const RETAIN_WINDOWS_SECONDS: u64 = 30 * 24 * 3600;
/// `[audit.retention] findings_seconds`: 90 days.
pub const RETAIN_FINDINGS_SECONDS: u64 = 90 * 24 * 3600;
/// `[audit.retention] runs_seconds`: 30 days.
pub const RETAIN_RUNS_SECONDS: u64 = 30 * 24 * 3600;
/// `[audit.retention] interval_seconds`: ten minutes.
pub const PRUNE_INTERVAL_SECONDS: u64 = 600;

/// `[[flow]] window_seconds`.
pub const WINDOW_SECONDS: u64 = 300;
/// `[[flow]] settle_seconds`.
pub const SETTLE_SECONDS: u64 = 120;
/// `[[flow]] deadline_seconds`.
pub const DEADLINE_SECONDS: u64 = 3600;
/// `[[flow]] clock_skew_seconds`.
pub const CLOCK_SKEW_SECONDS: u64 = 5;
/// `[[flow]] recheck_horizon_seconds`.
pub const RECHECK_HORIZON_SECONDS: u64 = 24 * 3600;

/// A `rocketmq_trace` source's `topic`.
pub const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// An `sql` or `http` source's `timeout_seconds`.
pub const SOURCE_TIMEOUT_SECONDS: u64 = 30;
/// An `http` source's `retries`.
pub const HTTP_RETRIES: u32 = 2;
/// An `http` source's `max_bytes`.
pub const HTTP_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The name of the one cluster `serve --namesrv` watches without a file.
pub const CLUSTER_NAME: &str = "default";
