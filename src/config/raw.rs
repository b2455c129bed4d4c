//! The configuration file exactly as written: every optional key is an
//! `Option` (its default lives in [`super::defaults`] and is applied by the
//! resolver, never here), closed sets are enums, unknown keys are errors.

use serde::Deserialize;

/// The file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// RocketMQ clusters to watch.
    #[serde(default, rename = "cluster")]
    pub clusters: Vec<RawCluster>,
    /// Collection settings shared by every cluster.
    #[serde(default)]
    pub collect: RawCollect,
    /// HTTP server.
    #[serde(default)]
    pub web: RawWeb,
    /// Loss-audit settings shared by every flow.
    #[serde(default)]
    pub audit: RawAudit,
    /// Audited flows (topic + group with a producer and a consumer source).
    #[serde(default, rename = "flow")]
    pub flows: Vec<RawFlow>,
}

/// `[[cluster]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Value of the `rocketmq_cluster` label.
    pub name: String,
    /// Name-server addresses, `host:port`; the first that answers is used.
    pub namesrv: Vec<String>,
    /// Environment variable holding the ACL 1.0 access key (ACL off when absent).
    #[serde(default)]
    pub access_key_env: Option<String>,
    /// Environment variable holding the ACL 1.0 secret key.
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// `[cluster.probe]`: the end-to-end probe (off unless enabled).
    #[serde(default)]
    pub probe: Option<RawProbe>,
}

/// `[cluster.probe]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProbe {
    /// Run the probe.
    pub enabled: Option<bool>,
    /// The probe's own topic (never a user topic).
    pub topic: Option<String>,
    /// Create the topic on every master when it is missing.
    pub create_topic: Option<bool>,
    /// Queues per master when creating it.
    pub queues: Option<i32>,
    /// The group named in the probe's pulls (never commits an offset).
    pub group: Option<String>,
    /// Seconds between probe rounds (one message per writable queue).
    pub interval_seconds: Option<u64>,
    /// Seconds an acknowledged message may take to be readable.
    pub deadline_seconds: Option<u64>,
    /// Seconds read messages are kept and re-verified.
    pub verify_window_seconds: Option<u64>,
    /// Re-verify every N rounds (also after a broker was unreachable).
    pub verify_every_rounds: Option<u64>,
}

/// `[collect]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCollect {
    /// Seconds between collection cycles.
    pub interval_seconds: Option<u64>,
    /// Timeout of each admin call.
    pub timeout_seconds: Option<u64>,
    /// Longest a whole cycle may take; calls not done by then are abandoned.
    pub budget_seconds: Option<u64>,
    /// Seconds between discovery refreshes.
    pub discovery_interval_seconds: Option<u64>,
    /// Admin calls in flight per cluster.
    pub concurrency: Option<usize>,
    /// Per topic and broker, or per queue.
    pub granularity: Option<Granularity>,
    /// Refresh min offsets of covered topics every N cycles.
    pub min_offset_refresh_cycles: Option<u64>,
    /// Most messages pulled per cycle to date the oldest unconsumed message.
    pub lag_pulls_per_cycle: Option<usize>,
    /// Topic name patterns to include (`*` and `?` wildcards); empty = all.
    pub include_topics: Vec<String>,
    /// Topic name patterns to exclude; applied after include.
    pub exclude_topics: Vec<String>,
    /// Consumer group patterns to include; empty = all.
    pub include_groups: Vec<String>,
    /// Consumer group patterns to exclude.
    pub exclude_groups: Vec<String>,
}

/// Metric label granularity for per-queue data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// Sum per topic and broker.
    #[default]
    Topic,
    /// One series per queue (`queue_id` label).
    Queue,
}

/// `[web]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWeb {
    /// `host:port` to listen on.
    pub listen_address: Option<String>,
    /// Path of the metrics endpoint.
    pub telemetry_path: Option<String>,
    /// Exporter-toolkit web config file (TLS, basic auth).
    pub config_file: Option<String>,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// Directory of the audit store (`audit.db`).
    pub data_dir: Option<String>,
    /// Broker calls one run may spend diagnosing missing keys.
    pub diagnose_budget: Option<usize>,
    /// Most trace messages one run ingests per flow.
    pub trace_ingest_budget: Option<usize>,
    /// Trace pulls one flow's run has in flight at once.
    pub trace_concurrency: Option<usize>,
    /// Memory one window's records may take before they spill to disk:
    /// bytes, or a string with a unit (`"256 MiB"`).
    pub memory_budget: Option<RawBytes>,
    /// Trace records one flow keeps between runs, so open windows are not
    /// re-read whole: bytes, or a string with a unit; 0 keeps none.
    pub reuse_budget: Option<RawBytes>,
    /// `sqlite` (the default, under `data_dir`) or `postgres` (shared by replicas).
    pub store: Option<String>,
    /// The environment variable holding the PostgreSQL store's URL.
    pub store_url_env: Option<String>,
    /// How long a replica's claim on a flow lasts without renewal (postgres store).
    pub lease_seconds: Option<u64>,
    /// This replica's name in leases and `mqaudit_audit_flow_owner`.
    pub replica: Option<String>,
    /// How long the store keeps what it no longer needs.
    pub retention: RawRetention,
}

/// A size: a number of bytes, or text with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawBytes {
    /// Bytes.
    Bytes(u64),
    /// `"256 MiB"`, `"1GiB"`, `"512 KiB"`, `"1048576"`.
    Text(String),
}

/// `[audit.retention]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    /// Trace rows, by their time.
    pub trace_seconds: Option<u64>,
    /// Final windows, by their end.
    pub windows_seconds: Option<u64>,
    /// Findings of final windows, by the window's end.
    pub findings_seconds: Option<u64>,
    /// Finished runs, by their start.
    pub runs_seconds: Option<u64>,
    /// Between pruning passes.
    pub interval_seconds: Option<u64>,
}

/// `[[flow]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlow {
    /// Flow name (the `flow` label).
    pub name: String,
    /// `[[cluster]]` name.
    pub cluster: String,
    /// Topic audited.
    pub topic: String,
    /// Consumer group audited.
    pub group: String,
    /// Cron expression with a seconds field, e.g. `0 */5 * * * *`.
    pub schedule: String,
    /// Window length, seconds.
    #[serde(default)]
    pub window_seconds: Option<u64>,
    /// A window is audited once it is this old, seconds.
    #[serde(default)]
    pub settle_seconds: Option<u64>,
    /// A key still missing this long after its window ended is lost, seconds.
    #[serde(default)]
    pub deadline_seconds: Option<u64>,
    /// Consumptions are matched from the window start minus this, seconds.
    #[serde(default)]
    pub clock_skew_seconds: Option<u64>,
    /// Lost findings are re-checked this long after the deadline, seconds.
    #[serde(default)]
    pub recheck_horizon_seconds: Option<u64>,
    /// The group's subscription to the topic (else learned from the broker).
    #[serde(default)]
    pub subscription: Option<SubscriptionConfig>,
    /// Producer-side source.
    pub produced: RawSource,
    /// Consumer-side source.
    pub consumed: RawSource,
}

/// `subscription = "TagA || TagB"` or `subscription = { sql = "a > 1" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SubscriptionConfig {
    /// A tag expression.
    Tags(String),
    /// An SQL92 filter.
    Sql {
        /// The expression.
        sql: String,
    },
}

/// How findings of a trace flow name a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceKey {
    /// Its first key (the default).
    #[default]
    Keys,
    /// Its client message id.
    MsgId,
}

/// Where a flow's records come from (`kind` selects).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSource {
    /// The trace topic.
    RocketmqTrace {
        /// How findings name a message.
        #[serde(default)]
        key: Option<TraceKey>,
        /// The trace topic (customised trace topics exist).
        #[serde(default)]
        topic: Option<String>,
    },
    /// A PostgreSQL query.
    Sql {
        /// Environment variable holding the connection string.
        url_env: String,
        /// The query.
        query: String,
        /// Query timeout, seconds.
        #[serde(default)]
        timeout_seconds: Option<u64>,
        /// IANA zone a `timestamp without time zone` column is in.
        #[serde(default)]
        time_zone: Option<String>,
    },
    /// `GET url?from=MS&to=MS` returning a JSON array of records.
    Http {
        /// Base URL.
        url: String,
        /// Per attempt, seconds.
        #[serde(default)]
        timeout_seconds: Option<u64>,
        /// Attempts after the first.
        #[serde(default)]
        retries: Option<u32>,
        /// Largest response accepted, bytes.
        #[serde(default)]
        max_bytes: Option<u64>,
    },
    /// JSON-lines files; `*` globs in the file name.
    Jsonl {
        /// File path or pattern.
        path: String,
    },
}
