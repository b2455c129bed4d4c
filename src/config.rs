//! Configuration: the TOML file as written ([`RawConfig`], unknown keys
//! rejected) and the validated, resolved form everything else uses
//! ([`Config`]). Loading takes the file's contents, so tests never touch the
//! filesystem; secrets are named by environment variable and read once, at
//! resolution, through a lookup function the caller supplies.
//!
//! Every option and its default is documented in `config/example.toml`.

use std::time::Duration;

use serde::Deserialize;

use crate::remoting::AclCredentials;

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The file is not valid TOML or has unknown keys or wrong types. The
    /// message names the line and column.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Dotted path of the option.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The file exactly as written.
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

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// Directory of the audit store (`audit.db`).
    pub data_dir: String,
    /// Broker calls one run may spend diagnosing missing keys.
    pub diagnose_budget: usize,
    /// Most trace messages one run ingests per flow.
    pub trace_ingest_budget: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            data_dir: "./mqaudit-data".to_string(),
            diagnose_budget: 500,
            trace_ingest_budget: 100_000,
        }
    }
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
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// A window is audited once it is this old, seconds.
    #[serde(default = "default_settle")]
    pub settle_seconds: u64,
    /// A key still missing this long after its window ended is lost, seconds.
    #[serde(default = "default_deadline")]
    pub deadline_seconds: u64,
    /// Consumptions are matched from the window start minus this (producer
    /// and consumer clocks differ), seconds.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Lost findings are re-checked this long after the deadline; a later
    /// consumption marks them `resolved_late`, seconds.
    #[serde(default = "default_recheck_horizon")]
    pub recheck_horizon_seconds: u64,
    /// The group's subscription to the topic: a tag expression
    /// (`"TagA || TagB"`) or `{ sql = "..." }`. Default: learned from the
    /// broker (the online consumers' subscription), else every message.
    #[serde(default)]
    pub subscription: Option<SubscriptionConfig>,
    /// Producer-side source.
    pub produced: SourceConfig,
    /// Consumer-side source.
    pub consumed: SourceConfig,
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

fn default_window() -> u64 {
    300
}
fn default_settle() -> u64 {
    120
}
fn default_deadline() -> u64 {
    3600
}
fn default_clock_skew() -> u64 {
    5
}
fn default_recheck_horizon() -> u64 {
    24 * 3600
}

/// Where a flow's records come from (`kind` selects).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// The trace topic: every `Pub` of a stored message = produced, `SubAfter`
    /// success for the group = consumed.
    RocketmqTrace {
        /// How findings name a message: `keys` (its first key, the default)
        /// or `msg_id` (the client message id).
        #[serde(default = "default_trace_key")]
        key: String,
        /// The trace topic (customised trace topics exist).
        #[serde(default = "default_trace_topic")]
        topic: String,
    },
    /// A PostgreSQL query; `$1`, `$2` are the window bounds (timestamptz);
    /// it returns the key and the event time (timestamptz or epoch ms), and optionally the msgId.
    Sql {
        /// Environment variable holding the connection string.
        url_env: String,
        /// The query.
        query: String,
        /// Query timeout, seconds.
        #[serde(default = "default_source_timeout")]
        timeout_seconds: u64,
        /// IANA zone (`UTC`, `Europe/Berlin`) a `timestamp without time zone`
        /// column is in; without it such a column is an error.
        #[serde(default)]
        time_zone: Option<String>,
    },
    /// `GET url?from=MS&to=MS` returning a JSON array of `{key, time_ms[, msg_id]}`.
    Http {
        /// Base URL.
        url: String,
        /// Per attempt, seconds.
        #[serde(default = "default_source_timeout")]
        timeout_seconds: u64,
        /// Attempts after the first.
        #[serde(default = "default_retries")]
        retries: u32,
        /// Largest response accepted, bytes.
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
    },
    /// JSON-lines files (`{key, time_ms[, msg_id]}` per line); `*` globs in the file name.
    Jsonl {
        /// File path or pattern.
        path: String,
    },
}

fn default_trace_key() -> String {
    "keys".to_string()
}
fn default_trace_topic() -> String {
    crate::audit::trace::DEFAULT_TRACE_TOPIC.to_string()
}
fn default_source_timeout() -> u64 {
    30
}
fn default_retries() -> u32 {
    2
}
fn default_max_bytes() -> u64 {
    256 * 1024 * 1024
}

/// `[[cluster]]`.
#[derive(Debug, Clone, Deserialize)]
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
}

/// `[collect]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCollect {
    /// Seconds between collection cycles.
    pub interval_seconds: u64,
    /// Timeout of each admin call.
    pub timeout_seconds: u64,
    /// Longest a whole cycle may take; calls not done by then are abandoned.
    pub budget_seconds: Option<u64>,
    /// Seconds between discovery refreshes (cluster info, topic and group lists, broker config).
    pub discovery_interval_seconds: u64,
    /// Admin calls in flight per cluster.
    pub concurrency: usize,
    /// `topic` (per topic and broker) or `queue` (adds `queue_id`).
    pub granularity: String,
    /// Refresh min offsets of topics whose max offsets come from consume stats every N cycles.
    pub min_offset_refresh_cycles: u64,
    /// Most messages pulled per cycle to date the oldest unconsumed message.
    pub lag_pulls_per_cycle: usize,
    /// Topic name patterns to include (`*` and `?` wildcards); empty = all.
    pub include_topics: Vec<String>,
    /// Topic name patterns to exclude; applied after include.
    pub exclude_topics: Vec<String>,
    /// Consumer group patterns to include; empty = all.
    pub include_groups: Vec<String>,
    /// Consumer group patterns to exclude.
    pub exclude_groups: Vec<String>,
}

impl Default for RawCollect {
    fn default() -> Self {
        RawCollect {
            interval_seconds: 30,
            timeout_seconds: 5,
            budget_seconds: None,
            discovery_interval_seconds: 120,
            concurrency: 64,
            granularity: "topic".to_string(),
            min_offset_refresh_cycles: 10,
            lag_pulls_per_cycle: 200,
            include_topics: Vec::new(),
            exclude_topics: Vec::new(),
            include_groups: Vec::new(),
            exclude_groups: Vec::new(),
        }
    }
}

/// `[web]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWeb {
    /// `host:port` to listen on.
    pub listen_address: String,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// Exporter-toolkit web config file (TLS, basic auth).
    pub config_file: Option<String>,
}

impl Default for RawWeb {
    fn default() -> Self {
        RawWeb {
            listen_address: "0.0.0.0:9857".to_string(),
            telemetry_path: "/metrics".to_string(),
            config_file: None,
        }
    }
}

/// Metric label granularity for per-queue data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Sum per topic and broker.
    Topic,
    /// One series per queue (`queue_id` label).
    Queue,
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

/// Audit settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// Store directory.
    pub data_dir: std::path::PathBuf,
    /// Broker calls per run for diagnosis.
    pub diagnose_budget: usize,
    /// Trace messages per run per flow.
    pub trace_ingest_budget: usize,
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
        (
            &self.name,
            &self.cluster,
            &self.topic,
            &self.group,
            self.window,
            self.settle,
            self.deadline,
            self.clock_skew,
            self.recheck_horizon,
            &self.subscription,
            &self.produced,
            &self.consumed,
        ) == (
            &other.name,
            &other.cluster,
            &other.topic,
            &other.group,
            other.window,
            other.settle,
            other.deadline,
            other.clock_skew,
            other.recheck_horizon,
            &other.subscription,
            &other.produced,
            &other.consumed,
        ) && self.schedule.to_string() == other.schedule.to_string()
    }
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

impl Config {
    /// Parse and validate a TOML document. `env` looks up environment
    /// variables named in the file (`std::env::var` in production).
    ///
    /// # Errors
    /// `Parse` with line and column for syntax, unknown keys and types;
    /// `Invalid` naming the option for values that make no sense.
    pub fn from_toml_str(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse(e.to_string().trim_end().to_string()))?;
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
        if raw.clusters.is_empty() {
            return Err(invalid(
                "cluster",
                "at least one [[cluster]] is required (or pass --namesrv)",
            ));
        }
        let mut clusters = Vec::new();
        for (i, cluster) in raw.clusters.into_iter().enumerate() {
            let field = |f: &str| format!("cluster[{i}].{f}");
            if cluster.name.trim().is_empty() {
                return Err(invalid(field("name"), "must not be empty"));
            }
            if clusters
                .iter()
                .any(|c: &ClusterConfig| c.name == cluster.name)
            {
                return Err(invalid(
                    field("name"),
                    format!("duplicate cluster name {:?}", cluster.name),
                ));
            }
            if cluster.namesrv.is_empty() {
                return Err(invalid(
                    field("namesrv"),
                    "at least one name-server address is required",
                ));
            }
            for addr in &cluster.namesrv {
                check_host_port(addr).map_err(|reason| invalid(field("namesrv"), reason))?;
            }
            let acl = match (&cluster.access_key_env, &cluster.secret_key_env) {
                (None, None) => None,
                (Some(ak), Some(sk)) => {
                    let read = |name: &str, f: &str| {
                        env(name).ok_or_else(|| {
                            invalid(field(f), format!("environment variable {name} is not set"))
                        })
                    };
                    Some(AclCredentials {
                        access_key: read(ak, "access_key_env")?,
                        secret_key: read(sk, "secret_key_env")?,
                        security_token: None,
                    })
                }
                _ => {
                    return Err(invalid(
                        field("access_key_env"),
                        "access_key_env and secret_key_env go together",
                    ));
                }
            };
            clusters.push(ClusterConfig {
                name: cluster.name,
                namesrv: cluster.namesrv,
                acl,
            });
        }

        let c = raw.collect;
        if c.interval_seconds == 0 {
            return Err(invalid("collect.interval_seconds", "must be at least 1"));
        }
        if c.timeout_seconds == 0 || c.timeout_seconds >= c.interval_seconds.max(2) {
            return Err(invalid(
                "collect.timeout_seconds",
                format!(
                    "must be at least 1 and less than interval_seconds ({})",
                    c.interval_seconds
                ),
            ));
        }
        let budget = c.budget_seconds.unwrap_or(c.interval_seconds);
        if budget == 0 || budget > c.interval_seconds {
            return Err(invalid(
                "collect.budget_seconds",
                "must be between 1 and interval_seconds",
            ));
        }
        if c.discovery_interval_seconds < c.interval_seconds {
            return Err(invalid(
                "collect.discovery_interval_seconds",
                "must be at least interval_seconds",
            ));
        }
        if c.concurrency == 0 {
            return Err(invalid("collect.concurrency", "must be at least 1"));
        }
        if c.min_offset_refresh_cycles == 0 {
            return Err(invalid(
                "collect.min_offset_refresh_cycles",
                "must be at least 1",
            ));
        }
        let granularity = match c.granularity.as_str() {
            "topic" => Granularity::Topic,
            "queue" => Granularity::Queue,
            other => {
                return Err(invalid(
                    "collect.granularity",
                    format!("{other:?} is not \"topic\" or \"queue\""),
                ));
            }
        };
        let collect = CollectConfig {
            interval: Duration::from_secs(c.interval_seconds),
            timeout: Duration::from_secs(c.timeout_seconds),
            budget: Duration::from_secs(budget),
            discovery_interval: Duration::from_secs(c.discovery_interval_seconds),
            concurrency: c.concurrency,
            granularity,
            min_offset_refresh_cycles: c.min_offset_refresh_cycles,
            lag_pulls_per_cycle: c.lag_pulls_per_cycle,
            topics: NameFilter::new(c.include_topics, c.exclude_topics),
            groups: NameFilter::new(c.include_groups, c.exclude_groups),
        };

        let w = raw.web;
        check_host_port(&w.listen_address)
            .map_err(|reason| invalid("web.listen_address", reason))?;
        if !w.telemetry_path.starts_with('/') || w.telemetry_path.len() < 2 {
            return Err(invalid(
                "web.telemetry_path",
                "must start with / and name a path, e.g. /metrics",
            ));
        }
        if ["/", "/-/healthy", "/-/ready"].contains(&w.telemetry_path.as_str())
            || w.telemetry_path.starts_with("/api/")
        {
            return Err(invalid(
                "web.telemetry_path",
                "collides with a built-in route",
            ));
        }
        let web = WebConfig {
            listen_address: w.listen_address,
            telemetry_path: w.telemetry_path,
            config_file: w.config_file,
        };

        let a = raw.audit;
        if a.data_dir.trim().is_empty() {
            return Err(invalid("audit.data_dir", "must not be empty"));
        }
        let audit = AuditConfig {
            data_dir: std::path::PathBuf::from(a.data_dir),
            diagnose_budget: a.diagnose_budget,
            trace_ingest_budget: a.trace_ingest_budget.max(1),
        };
        let mut flows: Vec<FlowConfig> = Vec::new();
        for (i, f) in raw.flows.into_iter().enumerate() {
            let field = |x: &str| format!("flow[{i}].{x}");
            if f.name.trim().is_empty() || flows.iter().any(|g| g.name == f.name) {
                return Err(invalid(
                    field("name"),
                    format!("must be non-empty and unique, got {:?}", f.name),
                ));
            }
            if !clusters.iter().any(|c| c.name == f.cluster) {
                return Err(invalid(
                    field("cluster"),
                    format!("no [[cluster]] named {:?}", f.cluster),
                ));
            }
            let schedule =
                <cron::Schedule as std::str::FromStr>::from_str(&f.schedule).map_err(|e| {
                    invalid(
                        field("schedule"),
                        format!(
                            "{:?} is not a cron expression with a seconds field ({e})",
                            f.schedule
                        ),
                    )
                })?;
            if f.window_seconds == 0 {
                return Err(invalid(field("window_seconds"), "must be at least 1"));
            }
            const MAX_FLOW_SECONDS: u64 = 366 * 24 * 3600;
            for (name, value) in [
                ("window_seconds", f.window_seconds),
                ("settle_seconds", f.settle_seconds),
                ("deadline_seconds", f.deadline_seconds),
                ("clock_skew_seconds", f.clock_skew_seconds),
                ("recheck_horizon_seconds", f.recheck_horizon_seconds),
            ] {
                if value > MAX_FLOW_SECONDS {
                    return Err(invalid(
                        field(name),
                        format!("{value} is more than a year ({MAX_FLOW_SECONDS} s)"),
                    ));
                }
            }
            let subscription = match &f.subscription {
                None => None,
                Some(SubscriptionConfig::Tags(text)) => {
                    Some(crate::audit::subscription::Subscription::tags(text))
                }
                Some(SubscriptionConfig::Sql { sql }) => Some(
                    crate::audit::subscription::Subscription::sql(sql)
                        .map_err(|e| invalid(field("subscription"), e.to_string()))?,
                ),
            };
            for (side, source) in [("produced", &f.produced), ("consumed", &f.consumed)] {
                match source {
                    SourceConfig::RocketmqTrace { key, .. } if key != "keys" && key != "msg_id" => {
                        return Err(invalid(
                            field(&format!("{side}.key")),
                            format!("{key:?} is not \"keys\" or \"msg_id\""),
                        ));
                    }
                    SourceConfig::RocketmqTrace { topic, .. } if topic.trim().is_empty() => {
                        return Err(invalid(
                            field(&format!("{side}.topic")),
                            "must not be empty",
                        ));
                    }
                    SourceConfig::Sql {
                        url_env,
                        timeout_seconds,
                        time_zone,
                        ..
                    } => {
                        if let Some(zone) = time_zone
                            && zone.parse::<chrono_tz::Tz>().is_err()
                        {
                            return Err(invalid(
                                field(&format!("{side}.time_zone")),
                                format!(
                                    "{zone:?} is not an IANA time zone (e.g. \"UTC\", \"Europe/Berlin\")"
                                ),
                            ));
                        }
                        if env(url_env).is_none() {
                            return Err(invalid(
                                field(&format!("{side}.url_env")),
                                format!("environment variable {url_env} is not set"),
                            ));
                        }
                        if *timeout_seconds == 0 {
                            return Err(invalid(
                                field(&format!("{side}.timeout_seconds")),
                                "must be at least 1",
                            ));
                        }
                    }
                    SourceConfig::Http {
                        url,
                        timeout_seconds,
                        ..
                    } => {
                        if !url.starts_with("http://") {
                            return Err(invalid(
                                field(&format!("{side}.url")),
                                format!(
                                    "{url:?} is not an http:// URL (https sources are not built in)"
                                ),
                            ));
                        }
                        if *timeout_seconds == 0 {
                            return Err(invalid(
                                field(&format!("{side}.timeout_seconds")),
                                "must be at least 1",
                            ));
                        }
                    }
                    _ => {}
                }
            }
            flows.push(FlowConfig {
                name: f.name,
                cluster: f.cluster,
                topic: f.topic,
                group: f.group,
                schedule,
                window: Duration::from_secs(f.window_seconds),
                settle: Duration::from_secs(f.settle_seconds),
                deadline: Duration::from_secs(f.deadline_seconds),
                clock_skew: Duration::from_secs(f.clock_skew_seconds),
                recheck_horizon: Duration::from_secs(f.recheck_horizon_seconds),
                subscription,
                produced: f.produced,
                consumed: f.consumed,
            });
        }
        Ok(Config {
            clusters,
            collect,
            web,
            audit,
            flows,
        })
    }

    /// The configuration `serve --namesrv ADDR` uses without a file: one
    /// cluster named `default`, every other option at its default.
    ///
    /// # Errors
    /// When the address is not `host:port`.
    pub fn for_namesrv(namesrv: &str) -> Result<Config, ConfigError> {
        let raw = RawConfig {
            audit: RawAudit::default(),
            flows: Vec::new(),
            clusters: vec![RawCluster {
                name: "default".to_string(),
                namesrv: vec![namesrv.to_string()],
                access_key_env: None,
                secret_key_env: None,
            }],
            ..RawConfig::default()
        };
        Config::from_raw(raw, |_| None)
    }
}

fn check_host_port(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    if host.is_empty() {
        return Err(format!("{addr:?} has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{addr:?} has no valid port"))?;
    Ok(())
}

/// Include/exclude patterns with `*` (any run) and `?` (one character).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NameFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl NameFilter {
    /// A filter; empty `include` means everything.
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> NameFilter {
        NameFilter { include, exclude }
    }

    /// True when `name` is included and not excluded.
    pub fn allows(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob(p, name)))
            && !self.exclude.iter().any(|p| glob(p, name))
    }
}

/// Wildcard match: `*` any run of characters, `?` exactly one.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn example_and_minimal_files_parse() {
        for (name, text) in [
            ("example.toml", include_str!("../config/example.toml")),
            ("minimal.toml", include_str!("../config/minimal.toml")),
            ("quickstart.toml", include_str!("../config/quickstart.toml")),
        ] {
            let env = |k: &str| {
                (k == "ROCKETMQ_ACCESS_KEY" || k == "ROCKETMQ_SECRET_KEY").then(|| "x".to_string())
            };
            Config::from_toml_str(text, env).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn example_documents_every_default() {
        let example =
            Config::from_toml_str(include_str!("../config/example.toml"), |_| Some("x".into()))
                .expect("example");
        let minimal =
            Config::from_toml_str(include_str!("../config/minimal.toml"), no_env).expect("minimal");
        // The example spells out the defaults: same settings as the minimal file.
        assert_eq!(example.collect, minimal.collect);
        assert_eq!(example.web, minimal.web);
        assert_eq!(example.audit, minimal.audit);
    }

    #[test]
    fn flows_parse_with_every_source_kind_and_bad_ones_name_the_option() {
        let base = "[[cluster]]\nname = \"prod\"\nnamesrv = [\"h:1\"]\n";
        let flow = |schedule: &str, produced: &str, consumed: &str| {
            format!(
                "{base}[[flow]]\nname = \"orders\"\ncluster = \"prod\"\ntopic = \"t\"\ngroup = \"g\"\nschedule = \"{schedule}\"\nproduced = {produced}\nconsumed = {consumed}\n"
            )
        };
        let ok = flow(
            "0 */5 * * * *",
            "{ kind = \"rocketmq_trace\", key = \"msg_id\" }",
            "{ kind = \"sql\", url_env = \"DB\", query = \"SELECT 1\" }",
        );
        let config =
            Config::from_toml_str(&ok, |k| (k == "DB").then(|| "postgres://x".to_string()))
                .expect("valid");
        assert_eq!(config.flows[0].window, Duration::from_secs(300));
        assert_eq!(config.flows[0].deadline, Duration::from_secs(3600));
        for (text, field) in [
            (
                flow(
                    "*/5 * * * *",
                    "{ kind = \"jsonl\", path = \"p\" }",
                    "{ kind = \"jsonl\", path = \"p\" }",
                ),
                "flow[0].schedule",
            ),
            (
                flow(
                    "0 * * * * *",
                    "{ kind = \"rocketmq_trace\", key = \"id\" }",
                    "{ kind = \"jsonl\", path = \"p\" }",
                ),
                "flow[0].produced.key",
            ),
            (
                flow(
                    "0 * * * * *",
                    "{ kind = \"sql\", url_env = \"NOPE\", query = \"q\" }",
                    "{ kind = \"jsonl\", path = \"p\" }",
                ),
                "flow[0].produced.url_env",
            ),
            (
                flow(
                    "0 * * * * *",
                    "{ kind = \"http\", url = \"ftp://x\" }",
                    "{ kind = \"jsonl\", path = \"p\" }",
                ),
                "flow[0].produced.url",
            ),
        ] {
            match Config::from_toml_str(&text, no_env) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let unknown = flow(
            "0 * * * * *",
            "{ kind = \"jsonl\", path = \"p\", paht = \"q\" }",
            "{ kind = \"jsonl\", path = \"p\" }",
        );
        assert!(
            Config::from_toml_str(&unknown, no_env)
                .expect_err("unknown key")
                .to_string()
                .contains("paht")
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let err = Config::from_toml_str(
            "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n\n[collect]\nintervall_seconds = 5\n",
            no_env,
        )
        .expect_err("typo");
        let text = err.to_string();
        assert!(
            text.contains("line 6") && text.contains("intervall_seconds"),
            "{text}"
        );
    }

    #[test]
    fn invalid_values_name_the_option() {
        let base = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n";
        for (extra, field) in [
            (
                "[collect]\ninterval_seconds = 5\ntimeout_seconds = 5\n",
                "collect.timeout_seconds",
            ),
            (
                "[collect]\ngranularity = \"partition\"\n",
                "collect.granularity",
            ),
            (
                "[collect]\ninterval_seconds = 60\ndiscovery_interval_seconds = 10\n",
                "collect.discovery_interval_seconds",
            ),
            ("[web]\nlisten_address = \"nope\"\n", "web.listen_address"),
            (
                "[web]\ntelemetry_path = \"/-/ready\"\n",
                "web.telemetry_path",
            ),
        ] {
            match Config::from_toml_str(&format!("{base}{extra}"), no_env) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{extra}: {other:?}"),
            }
        }
        let err = Config::from_toml_str("[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\naccess_key_env = \"AK\"\nsecret_key_env = \"SK\"\n", no_env)
            .expect_err("missing env");
        assert!(err.to_string().contains("AK is not set"), "{err}");
        assert!(Config::from_toml_str("", no_env).is_err());
    }

    #[test]
    fn namesrv_only_config_uses_defaults() {
        let config = Config::for_namesrv("127.0.0.1:9876").expect("valid");
        assert_eq!(config.clusters[0].name, "default");
        assert_eq!(config.collect.interval, Duration::from_secs(30));
        assert!(Config::for_namesrv("no-port").is_err());
    }

    #[test]
    fn glob_filters() {
        let filter = NameFilter::new(vec!["order*".into(), "pay?".into()], vec!["*_test".into()]);
        assert!(filter.allows("orders"));
        assert!(filter.allows("pay1"));
        assert!(!filter.allows("pay12"));
        assert!(!filter.allows("orders_test"));
        assert!(!filter.allows("billing"));
        assert!(NameFilter::default().allows("anything"));
        assert!(glob("*a*b*", "xxaxxbxx"));
        assert!(!glob("a*b", "ab_"));
    }
}
