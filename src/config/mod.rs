//! Configuration: the TOML file as written ([`raw`]: unknown keys rejected,
//! closed sets as enums, optional keys as `Option`), command-line
//! [`Overrides`] applied to that raw form, and one resolver per section
//! (`resolve`) that applies the [`defaults`], checks every value (ranges
//! and upper bounds included) and reads every secret from the environment,
//! once. Everything else uses the resolved [`Config`].
//!
//! Loading takes the file's contents, so tests never touch the filesystem;
//! secrets are named by environment variable and read through a lookup
//! function the caller supplies. Every option and its default is documented
//! in `config/example.toml`, and a test keeps the two in step.

pub mod defaults;
mod filter;
pub mod raw;
mod resolve;

use std::time::Duration;

pub use filter::NameFilter;
pub(crate) use filter::glob;
pub use raw::{Granularity, RawConfig, SubscriptionConfig, TraceKey};

use crate::admin::AclCredentials;

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The file is not valid TOML or has unknown keys, wrong types or a value
    /// outside a closed set. The message names the line and column.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Dotted path of the option (or the flag that set it).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A secret read from the environment: shown as `***` in debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Clusters, at least one, with unique names.
    pub clusters: Vec<ClusterConfig>,
    /// Collection settings.
    pub collect: CollectConfig,
    /// HTTP settings.
    pub web: WebConfig,
    /// Audit settings.
    pub audit: AuditConfig,
    /// Audited flows, with unique names.
    pub flows: Vec<FlowConfig>,
}

/// One cluster, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `rocketmq_cluster` label value.
    pub name: String,
    /// Name servers, in order of preference.
    pub namesrv: Vec<String>,
    /// ACL credentials, read from the environment at load.
    pub acl: Option<AclCredentials>,
    /// The end-to-end probe; `None` when off.
    pub probe: Option<ProbeConfig>,
}

/// `[cluster.probe]`, resolved (present only when enabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The probe topic.
    pub topic: String,
    /// Create it when missing.
    pub create_topic: bool,
    /// Queues per master when creating it.
    pub queues: i32,
    /// Group named in pulls.
    pub group: String,
    /// Between rounds.
    pub interval: Duration,
    /// Longest an acknowledged message may take to be readable.
    pub deadline: Duration,
    /// How long read messages are kept and re-verified.
    pub verify_window: Duration,
    /// Re-verify every this many rounds.
    pub verify_every_rounds: u64,
}

/// Collection settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectConfig {
    /// Between cycle starts.
    pub interval: Duration,
    /// Per admin call.
    pub timeout: Duration,
    /// Per cycle.
    pub budget: Duration,
    /// Between discovery refreshes.
    pub discovery_interval: Duration,
    /// Calls in flight per cluster.
    pub concurrency: usize,
    /// Per-queue or per-topic series.
    pub granularity: Granularity,
    /// Min-offset refresh period, in cycles.
    pub min_offset_refresh_cycles: u64,
    /// Pull budget per cycle for lag in seconds.
    pub lag_pulls_per_cycle: usize,
    /// Topic filter.
    pub topics: NameFilter,
    /// Group filter.
    pub groups: NameFilter,
}

/// HTTP settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct WebConfig {
    /// Listen address.
    pub listen_address: String,
    /// Metrics path, starting with `/`.
    pub telemetry_path: String,
    /// Exporter-toolkit web config file.
    pub config_file: Option<String>,
}

/// Audit settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// Store directory.
    pub data_dir: std::path::PathBuf,
    /// Broker calls per run for diagnosis.
    pub diagnose_budget: usize,
    /// Trace messages per run per flow.
    pub trace_ingest_budget: usize,
    /// Trace pulls one flow's run has in flight at once.
    pub trace_concurrency: usize,
    /// Bytes of one window's records held in memory before they spill.
    pub memory_budget: u64,
    /// Bytes of trace records one flow keeps between runs (0: none; every
    /// open window re-read whole).
    pub reuse_budget: u64,
    /// Which database holds the store.
    pub store: StoreKind,
    /// How long a replica's claim on a flow lasts without renewal.
    pub lease: Duration,
    /// This replica's name (leases, the owner gauge).
    pub replica: String,
    /// What the store keeps, and for how long.
    pub retention: Retention,
}

/// Where the audit store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreKind {
    /// `DATA_DIR/audit.db`: one process.
    Sqlite,
    /// A PostgreSQL database several replicas share, flows split by lease.
    Postgres {
        /// Its URL, read from `store_url_env` (kept out of the file: it
        /// carries a password).
        url: Secret,
    },
}

/// How long the audit store keeps what it no longer needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// Trace rows (at least every flow's window, deadline, skew and
    /// re-check horizon, plus an hour: a window must see its evidence).
    pub trace: Duration,
    /// Final windows.
    pub windows: Duration,
    /// Findings of final windows.
    pub findings: Duration,
    /// Finished runs.
    pub runs: Duration,
    /// Between pruning passes.
    pub interval: Duration,
}

/// One flow, resolved.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// Name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// Topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Parsed schedule.
    pub schedule: cron::Schedule,
    /// Window length.
    pub window: Duration,
    /// Settle time.
    pub settle: Duration,
    /// Deadline after the window's end.
    pub deadline: Duration,
    /// Allowed clock skew between producer and consumer records.
    pub clock_skew: Duration,
    /// How long after the deadline lost findings are re-checked.
    pub recheck_horizon: Duration,
    /// The configured subscription (else learned from the broker).
    pub subscription: Option<crate::audit::subscription::Subscription>,
    /// Producer source.
    pub produced: SourceConfig,
    /// Consumer source.
    pub consumed: SourceConfig,
}

impl PartialEq for FlowConfig {
    fn eq(&self, other: &Self) -> bool {
        let key = |f: &FlowConfig| {
            (
                f.name.clone(),
                f.cluster.clone(),
                f.topic.clone(),
                f.group.clone(),
                f.schedule.to_string(),
                [
                    f.window,
                    f.settle,
                    f.deadline,
                    f.clock_skew,
                    f.recheck_horizon,
                ],
            )
        };
        key(self) == key(other)
            && self.subscription == other.subscription
            && self.produced == other.produced
            && self.consumed == other.consumed
    }
}

/// Where a flow's records come from, resolved (secrets read, zones parsed).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// The trace topic: every `Pub` of a stored message = produced, `SubAfter`
    /// success for the group = consumed.
    RocketmqTrace {
        /// How findings name a message.
        key: TraceKey,
        /// The trace topic.
        topic: String,
    },
    /// A PostgreSQL query; `$1`, `$2` are the window bounds (timestamptz).
    Sql {
        /// The connection string, read from `url_env` at load.
        url: Secret,
        /// The query.
        query: String,
        /// Query timeout, seconds.
        timeout_seconds: u64,
        /// The zone a `timestamp without time zone` column is in; without
        /// it such a column is an error.
        time_zone: Option<chrono_tz::Tz>,
    },
    /// `GET url?from=MS&to=MS` returning a JSON array of records.
    Http {
        /// Base URL.
        url: String,
        /// Per attempt, seconds.
        timeout_seconds: u64,
        /// Attempts after the first.
        retries: u32,
        /// Largest response accepted, bytes.
        max_bytes: u64,
    },
    /// JSON-lines files; `*` globs in the file name.
    Jsonl {
        /// File path or pattern.
        path: String,
    },
}

/// Command-line flags that override the file (`serve`), applied to the raw
/// configuration before it is resolved, so one validator checks both.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--namesrv`: the one cluster's name servers.
    pub namesrv: Option<String>,
    /// `--web.listen-address`.
    pub listen_address: Option<String>,
    /// `--web.telemetry-path`.
    pub telemetry_path: Option<String>,
    /// `--web.config.file`.
    pub web_config_file: Option<String>,
    /// `--collect.interval-seconds`.
    pub interval_seconds: Option<u64>,
    /// `--collect.timeout-seconds`.
    pub timeout_seconds: Option<u64>,
}

impl Overrides {
    /// Apply the flags to `raw`. Without any `[[cluster]]`, `--namesrv`
    /// makes the one cluster `serve --namesrv` watches.
    ///
    /// # Errors
    /// `--namesrv` on a file with several clusters.
    pub fn apply(&self, raw: &mut RawConfig) -> Result<(), ConfigError> {
        if let Some(namesrv) = &self.namesrv {
            match raw.clusters.as_mut_slice() {
                [] => raw.clusters.push(raw::RawCluster {
                    name: defaults::CLUSTER_NAME.to_string(),
                    namesrv: vec![namesrv.clone()],
                    ..raw::RawCluster::default()
                }),
                [one] => one.namesrv = vec![namesrv.clone()],
                _ => {
                    return Err(invalid(
                        "--namesrv",
                        "can only override a configuration with exactly one [[cluster]]",
                    ));
                }
            }
        }
        let set = |slot: &mut Option<String>, value: &Option<String>| {
            if value.is_some() {
                slot.clone_from(value);
            }
        };
        set(&mut raw.web.listen_address, &self.listen_address);
        set(&mut raw.web.telemetry_path, &self.telemetry_path);
        set(&mut raw.web.config_file, &self.web_config_file);
        if self.interval_seconds.is_some() {
            raw.collect.interval_seconds = self.interval_seconds;
        }
        if self.timeout_seconds.is_some() {
            raw.collect.timeout_seconds = self.timeout_seconds;
        }
        Ok(())
    }
}

impl Config {
    /// Parse and validate a TOML document. `env` looks up environment
    /// variables named in the file (`std::env::var` in production).
    ///
    /// # Errors
    /// `Parse` with line and column for syntax, unknown keys, types and
    /// values outside a closed set; `Invalid` naming the option for values
    /// that make no sense.
    pub fn from_toml_str(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, &Overrides::default(), env)
    }

    /// As [`Config::from_toml_str`], with command-line flags on top.
    ///
    /// # Errors
    /// As [`Config::from_toml_str`]; an invalid flag is named by the option
    /// it sets.
    pub fn from_toml_with(
        text: &str,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse(e.to_string().trim_end().to_string()))?;
        overrides.apply(&mut raw)?;
        Config::from_raw(raw, env)
    }

    /// Validate and resolve a raw configuration.
    ///
    /// # Errors
    /// As [`Config::from_toml_str`].
    pub fn from_raw(
        raw: RawConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let clusters = resolve::clusters(raw.clusters, &env)?;
        let collect = resolve::collect(raw.collect)?;
        let web = resolve::web(raw.web)?;
        let audit = resolve::audit(raw.audit, &env)?;
        let flows = resolve::flows(raw.flows, &clusters, &env)?;
        resolve::check_retention(&audit.retention, &flows)?;
        Ok(Config {
            clusters,
            collect,
            web,
            audit,
            flows,
        })
    }

    /// The configuration `serve --namesrv ADDR` uses without a file, flags
    /// on top: one cluster named `default`, every other option at its
    /// default.
    ///
    /// # Errors
    /// When the address is not `host:port`, or a flag is invalid.
    pub fn for_namesrv_with(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::default();
        overrides.apply(&mut raw)?;
        Config::from_raw(raw, |_| None)
    }

    /// [`Config::for_namesrv_with`] and no other flag.
    ///
    /// # Errors
    /// When the address is not `host:port`.
    pub fn for_namesrv(namesrv: &str) -> Result<Config, ConfigError> {
        Config::for_namesrv_with(&Overrides {
            namesrv: Some(namesrv.to_string()),
            ..Overrides::default()
        })
    }
}

#[cfg(test)]
mod tests;
