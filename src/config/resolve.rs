//! One resolver per section: raw values in, defaults applied, every value
//! checked (upper bounds included, so no duration overflows a millisecond
//! count), secrets read from the environment once.

use std::str::FromStr;
use std::time::Duration;

use super::defaults as d;
use super::raw::{
    RawAudit, RawBytes, RawCluster, RawCollect, RawFlow, RawProbe, RawRetention, RawSource, RawWeb,
    SubscriptionConfig,
};
use super::{
    AuditConfig, ClusterConfig, CollectConfig, ConfigError, FlowConfig, NameFilter, ProbeConfig,
    Retention, Secret, SourceConfig, StoreKind, WebConfig, invalid,
};
use crate::admin::AclCredentials;
use crate::audit::subscription::Subscription;

/// Longest collection interval: a day.
const MAX_INTERVAL_SECONDS: u64 = 24 * 3600;
/// Longest discovery interval: a week.
const MAX_DISCOVERY_SECONDS: u64 = 7 * 24 * 3600;
/// Longest flow duration (window, settle, deadline, skew, horizon): a year.
const MAX_FLOW_SECONDS: u64 = 366 * 24 * 3600;
/// Longest source timeout: an hour.
const MAX_SOURCE_TIMEOUT_SECONDS: u64 = 3600;
/// Longest retention: ten years.
const MAX_RETENTION_SECONDS: u64 = 10 * 366 * 24 * 3600;
/// Most retries of an http source.
const MAX_HTTP_RETRIES: u32 = 100;

/// `value` within `min..=max`, else an error naming `field`.
fn within(field: &str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("{value} is not between {min} and {max}"),
        ))
    }
}

pub(super) fn clusters(
    raw: Vec<RawCluster>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<ClusterConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            "cluster",
            "at least one [[cluster]] is required (or pass --namesrv)",
        ));
    }
    let mut clusters: Vec<ClusterConfig> = Vec::new();
    for (i, cluster) in raw.into_iter().enumerate() {
        let field = |f: &str| format!("cluster[{i}].{f}");
        if cluster.name.trim().is_empty() {
            return Err(invalid(field("name"), "must not be empty"));
        }
        if clusters.iter().any(|c| c.name == cluster.name) {
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
        let acl = acl(&cluster, env, &field)?;
        let probe = match &cluster.probe {
            Some(raw) => probe(raw, &field)?,
            None => None,
        };
        clusters.push(ClusterConfig {
            name: cluster.name,
            namesrv: cluster.namesrv,
            acl,
            probe,
        });
    }
    Ok(clusters)
}

fn probe(
    raw: &RawProbe,
    field: &impl Fn(&str) -> String,
) -> Result<Option<ProbeConfig>, ConfigError> {
    if !raw.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let name = |value: &Option<String>, key: &str, default: &str| {
        let value = value.clone().unwrap_or_else(|| default.to_string());
        let valid = !value.is_empty()
            && value.len() <= 127
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            Ok(value)
        } else {
            Err(invalid(
                field(&format!("probe.{key}")),
                "1 to 127 characters of letters, digits, '_' and '-'",
            ))
        }
    };
    let seconds = |value: Option<u64>, key: &str, default: u64| {
        let value = value.unwrap_or(default);
        if value == 0 || value > 86_400 {
            Err(invalid(
                field(&format!("probe.{key}")),
                "must be between 1 and 86400",
            ))
        } else {
            Ok(Duration::from_secs(value))
        }
    };
    let interval = seconds(
        raw.interval_seconds,
        "interval_seconds",
        d::PROBE_INTERVAL_SECONDS,
    )?;
    let deadline = seconds(
        raw.deadline_seconds,
        "deadline_seconds",
        d::PROBE_DEADLINE_SECONDS,
    )?;
    let verify_window = seconds(
        raw.verify_window_seconds,
        "verify_window_seconds",
        d::PROBE_VERIFY_WINDOW_SECONDS,
    )?;
    if deadline < interval {
        return Err(invalid(
            field("probe.deadline_seconds"),
            "must be at least interval_seconds",
        ));
    }
    let queues = raw.queues.unwrap_or(d::PROBE_QUEUES);
    if !(1..=64).contains(&queues) {
        return Err(invalid(field("probe.queues"), "must be between 1 and 64"));
    }
    let verify_every_rounds = raw
        .verify_every_rounds
        .unwrap_or(d::PROBE_VERIFY_EVERY_ROUNDS);
    if verify_every_rounds == 0 {
        return Err(invalid(
            field("probe.verify_every_rounds"),
            "must be at least 1",
        ));
    }
    Ok(Some(ProbeConfig {
        topic: name(&raw.topic, "topic", d::PROBE_TOPIC)?,
        create_topic: raw.create_topic.unwrap_or(true),
        queues,
        group: name(&raw.group, "group", d::PROBE_GROUP)?,
        interval,
        deadline,
        verify_window,
        verify_every_rounds,
    }))
}

fn acl(
    cluster: &RawCluster,
    env: &impl Fn(&str) -> Option<String>,
    field: &impl Fn(&str) -> String,
) -> Result<Option<AclCredentials>, ConfigError> {
    match (&cluster.access_key_env, &cluster.secret_key_env) {
        (None, None) => Ok(None),
        (Some(ak), Some(sk)) => {
            let read = |name: &str, f: &str| {
                env(name).ok_or_else(|| {
                    invalid(field(f), format!("environment variable {name} is not set"))
                })
            };
            Ok(Some(AclCredentials {
                access_key: read(ak, "access_key_env")?,
                secret_key: read(sk, "secret_key_env")?,
                security_token: None,
            }))
        }
        _ => Err(invalid(
            field("access_key_env"),
            "access_key_env and secret_key_env go together",
        )),
    }
}

pub(super) fn collect(c: RawCollect) -> Result<CollectConfig, ConfigError> {
    let interval = within(
        "collect.interval_seconds",
        c.interval_seconds.unwrap_or(d::COLLECT_INTERVAL_SECONDS),
        1,
        MAX_INTERVAL_SECONDS,
    )?;
    // The default timeout fits any interval: one second below it, at most
    // the default. An explicit one must be below the interval (or 1 s for a
    // 1 s interval).
    let timeout = match c.timeout_seconds {
        Some(t) => t,
        None => d::COLLECT_TIMEOUT_SECONDS
            .min(interval.saturating_sub(1))
            .max(1),
    };
    if timeout == 0 || timeout >= interval.max(2) {
        return Err(invalid(
            "collect.timeout_seconds",
            format!("must be at least 1 and less than interval_seconds ({interval})"),
        ));
    }
    let budget = c.budget_seconds.unwrap_or(interval);
    if budget == 0 || budget > interval {
        return Err(invalid(
            "collect.budget_seconds",
            "must be between 1 and interval_seconds",
        ));
    }
    let discovery = within(
        "collect.discovery_interval_seconds",
        c.discovery_interval_seconds
            .unwrap_or(d::DISCOVERY_INTERVAL_SECONDS.max(interval)),
        interval,
        MAX_DISCOVERY_SECONDS,
    )
    .map_err(|_| {
        invalid(
            "collect.discovery_interval_seconds",
            format!("must be at least interval_seconds ({interval}) and at most a week"),
        )
    })?;
    let concurrency = c.concurrency.unwrap_or(d::CONCURRENCY);
    if concurrency == 0 {
        return Err(invalid("collect.concurrency", "must be at least 1"));
    }
    let min_offset_refresh_cycles = c
        .min_offset_refresh_cycles
        .unwrap_or(d::MIN_OFFSET_REFRESH_CYCLES);
    if min_offset_refresh_cycles == 0 {
        return Err(invalid(
            "collect.min_offset_refresh_cycles",
            "must be at least 1",
        ));
    }
    Ok(CollectConfig {
        interval: Duration::from_secs(interval),
        timeout: Duration::from_secs(timeout),
        budget: Duration::from_secs(budget),
        discovery_interval: Duration::from_secs(discovery),
        concurrency,
        granularity: c.granularity.unwrap_or_default(),
        min_offset_refresh_cycles,
        lag_pulls_per_cycle: c.lag_pulls_per_cycle.unwrap_or(d::LAG_PULLS_PER_CYCLE),
        topics: NameFilter::new(c.include_topics, c.exclude_topics),
        groups: NameFilter::new(c.include_groups, c.exclude_groups),
    })
}

pub(super) fn web(w: RawWeb) -> Result<WebConfig, ConfigError> {
    let listen_address = w
        .listen_address
        .unwrap_or_else(|| d::LISTEN_ADDRESS.to_string());
    check_host_port(&listen_address).map_err(|reason| invalid("web.listen_address", reason))?;
    let telemetry_path = w
        .telemetry_path
        .unwrap_or_else(|| d::TELEMETRY_PATH.to_string());
    if !telemetry_path.starts_with('/') || telemetry_path.len() < 2 {
        return Err(invalid(
            "web.telemetry_path",
            "must start with / and name a path, e.g. /metrics",
        ));
    }
    if ["/", "/-/healthy", "/-/ready"].contains(&telemetry_path.as_str())
        || telemetry_path.starts_with("/api/")
    {
        return Err(invalid(
            "web.telemetry_path",
            "collides with a built-in route",
        ));
    }
    Ok(WebConfig {
        listen_address,
        telemetry_path,
        config_file: w.config_file,
    })
}

/// A replica's name when none is configured: host and process id, unique
/// among replicas and readable in the owner gauge.
fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "mqaudit".to_string());
    format!("{host}-{}", std::process::id())
}

pub(super) fn audit(
    a: RawAudit,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<AuditConfig, ConfigError> {
    let retention = retention(&a.retention)?;
    let data_dir = a.data_dir.unwrap_or_else(|| d::DATA_DIR.to_string());
    if data_dir.trim().is_empty() {
        return Err(invalid("audit.data_dir", "must not be empty"));
    }
    let trace_concurrency = a.trace_concurrency.unwrap_or(d::TRACE_CONCURRENCY);
    if trace_concurrency == 0 {
        return Err(invalid("audit.trace_concurrency", "must be at least 1"));
    }
    let store = match a.store.as_deref().unwrap_or("sqlite") {
        "sqlite" => {
            if a.store_url_env.is_some() {
                return Err(invalid(
                    "audit.store_url_env",
                    "is for store = \"postgres\"",
                ));
            }
            StoreKind::Sqlite
        }
        "postgres" => {
            let url_env = a
                .store_url_env
                .unwrap_or_else(|| d::STORE_URL_ENV.to_string());
            let url = env(&url_env).filter(|u| !u.is_empty()).ok_or_else(|| {
                invalid(
                    "audit.store_url_env",
                    format!("environment variable {url_env:?} is not set"),
                )
            })?;
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "audit.store_url_env",
                    format!("${url_env} must hold a postgres:// URL"),
                ));
            }
            StoreKind::Postgres { url: Secret(url) }
        }
        other => {
            return Err(invalid(
                "audit.store",
                format!("{other:?}: expected \"sqlite\" or \"postgres\""),
            ));
        }
    };
    let memory_budget = match &a.memory_budget {
        None => d::MEMORY_BUDGET,
        Some(raw) => bytes("audit.memory_budget", raw)?,
    };
    let memory_budget = within(
        "audit.memory_budget",
        memory_budget,
        d::MIN_MEMORY_BUDGET,
        1 << 50,
    )?;
    let reuse_budget = match &a.reuse_budget {
        None => d::REUSE_BUDGET,
        Some(raw) => within(
            "audit.reuse_budget",
            bytes("audit.reuse_budget", raw)?,
            0,
            1 << 50,
        )?,
    };
    let lease_seconds = within(
        "audit.lease_seconds",
        a.lease_seconds.unwrap_or(d::LEASE_SECONDS),
        3,
        3600,
    )?;
    let replica = a.replica.unwrap_or_else(default_replica_name);
    if replica.trim().is_empty() || replica.len() > 200 {
        return Err(invalid("audit.replica", "must be 1 to 200 characters"));
    }
    Ok(AuditConfig {
        store,
        lease: Duration::from_secs(lease_seconds),
        replica,
        data_dir: std::path::PathBuf::from(data_dir),
        diagnose_budget: a.diagnose_budget.unwrap_or(d::DIAGNOSE_BUDGET),
        trace_ingest_budget: a
            .trace_ingest_budget
            .unwrap_or(d::TRACE_INGEST_BUDGET)
            .max(1),
        trace_concurrency,
        memory_budget,
        reuse_budget,
        retention,
    })
}

/// A size in bytes from a number or text with a binary unit.
fn bytes(field: &str, raw: &RawBytes) -> Result<u64, ConfigError> {
    let text = match raw {
        RawBytes::Bytes(n) => return Ok(*n),
        RawBytes::Text(text) => text.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => {
            return Err(invalid(
                field,
                format!("{text:?}: unknown unit {other:?} (B, KiB, MiB, GiB, TiB)"),
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1_u64 << shift))
        .ok_or_else(|| invalid(field, format!("{text:?}: not a size")))
}

fn retention(r: &RawRetention) -> Result<Retention, ConfigError> {
    let seconds = |name: &str, value: Option<u64>, default: u64, min: u64| {
        within(
            &format!("audit.retention.{name}"),
            value.unwrap_or(default),
            min,
            MAX_RETENTION_SECONDS,
        )
        .map(Duration::from_secs)
    };
    Ok(Retention {
        trace: seconds(
            "trace_seconds",
            r.trace_seconds,
            d::RETAIN_TRACE_SECONDS,
            3600,
        )?,
        windows: seconds(
            "windows_seconds",
            r.windows_seconds,
            d::RETAIN_WINDOWS_SECONDS,
            3600,
        )?,
        findings: seconds(
            "findings_seconds",
            r.findings_seconds,
            d::RETAIN_FINDINGS_SECONDS,
            3600,
        )?,
        runs: seconds("runs_seconds", r.runs_seconds, d::RETAIN_RUNS_SECONDS, 3600)?,
        interval: seconds(
            "interval_seconds",
            r.interval_seconds,
            d::PRUNE_INTERVAL_SECONDS,
            1,
        )?,
    })
}

/// Trace rows must outlive every flow's need for them: a window reads its
/// consumptions up to its re-check horizon.
pub(super) fn check_retention(
    retention: &Retention,
    flows: &[FlowConfig],
) -> Result<(), ConfigError> {
    for flow in flows {
        let need = flow.window
            + flow.clock_skew
            + flow.deadline
            + flow.recheck_horizon
            + Duration::from_secs(3600);
        if retention.trace < need {
            return Err(invalid(
                "audit.retention.trace_seconds",
                format!(
                    "{} s is shorter than flow {:?} needs its trace ({} s: window, clock skew, deadline and re-check horizon, plus an hour)",
                    retention.trace.as_secs(),
                    flow.name,
                    need.as_secs()
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn flows(
    raw: Vec<RawFlow>,
    clusters: &[ClusterConfig],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<FlowConfig>, ConfigError> {
    let mut flows: Vec<FlowConfig> = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
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
        flows.push(flow(f, &field, env)?);
    }
    Ok(flows)
}

fn flow(
    f: RawFlow,
    field: &impl Fn(&str) -> String,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<FlowConfig, ConfigError> {
    let schedule = cron::Schedule::from_str(&f.schedule).map_err(|e| {
        invalid(
            field("schedule"),
            format!(
                "{:?} is not a cron expression with a seconds field ({e})",
                f.schedule
            ),
        )
    })?;
    let seconds = |name: &str, value: Option<u64>, default: u64, min: u64| {
        within(
            &field(name),
            value.unwrap_or(default),
            min,
            MAX_FLOW_SECONDS,
        )
        .map(Duration::from_secs)
    };
    let subscription = match &f.subscription {
        None => None,
        Some(SubscriptionConfig::Tags(text)) => Some(Subscription::tags(text)),
        Some(SubscriptionConfig::Sql { sql }) => Some(
            Subscription::sql(sql).map_err(|e| invalid(field("subscription"), e.to_string()))?,
        ),
    };
    Ok(FlowConfig {
        window: seconds("window_seconds", f.window_seconds, d::WINDOW_SECONDS, 1)?,
        settle: seconds("settle_seconds", f.settle_seconds, d::SETTLE_SECONDS, 0)?,
        deadline: seconds(
            "deadline_seconds",
            f.deadline_seconds,
            d::DEADLINE_SECONDS,
            0,
        )?,
        clock_skew: seconds(
            "clock_skew_seconds",
            f.clock_skew_seconds,
            d::CLOCK_SKEW_SECONDS,
            0,
        )?,
        recheck_horizon: seconds(
            "recheck_horizon_seconds",
            f.recheck_horizon_seconds,
            d::RECHECK_HORIZON_SECONDS,
            0,
        )?,
        produced: source(f.produced, &field("produced"), env)?,
        consumed: source(f.consumed, &field("consumed"), env)?,
        name: f.name,
        cluster: f.cluster,
        topic: f.topic,
        group: f.group,
        schedule,
        subscription,
    })
}

/// One source; `side` is its dotted path (`flow[0].produced`).
fn source(
    raw: RawSource,
    side: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<SourceConfig, ConfigError> {
    let field = |f: &str| format!("{side}.{f}");
    match raw {
        RawSource::RocketmqTrace { key, topic } => {
            let topic = topic.unwrap_or_else(|| d::TRACE_TOPIC.to_string());
            if topic.trim().is_empty() {
                return Err(invalid(field("topic"), "must not be empty"));
            }
            Ok(SourceConfig::RocketmqTrace {
                key: key.unwrap_or_default(),
                topic,
            })
        }
        RawSource::Sql {
            url_env,
            query,
            timeout_seconds,
            time_zone,
        } => sql_source(&field, url_env, query, timeout_seconds, time_zone, env),
        RawSource::Http {
            url,
            timeout_seconds,
            retries,
            max_bytes,
        } => {
            if !url.starts_with("http://") {
                return Err(invalid(
                    field("url"),
                    format!("{url:?} is not an http:// URL (https sources are not built in)"),
                ));
            }
            let retries = retries.unwrap_or(d::HTTP_RETRIES);
            if retries > MAX_HTTP_RETRIES {
                return Err(invalid(
                    field("retries"),
                    format!("{retries} is more than {MAX_HTTP_RETRIES}"),
                ));
            }
            let max_bytes = max_bytes.unwrap_or(d::HTTP_MAX_BYTES);
            if max_bytes == 0 {
                return Err(invalid(field("max_bytes"), "must be at least 1"));
            }
            Ok(SourceConfig::Http {
                url,
                timeout_seconds: source_timeout(&field, timeout_seconds)?,
                retries,
                max_bytes,
            })
        }
        RawSource::Jsonl { path } => {
            if path.trim().is_empty() {
                return Err(invalid(field("path"), "must not be empty"));
            }
            Ok(SourceConfig::Jsonl { path })
        }
    }
}

fn source_timeout(field: &impl Fn(&str) -> String, value: Option<u64>) -> Result<u64, ConfigError> {
    within(
        &field("timeout_seconds"),
        value.unwrap_or(d::SOURCE_TIMEOUT_SECONDS),
        1,
        MAX_SOURCE_TIMEOUT_SECONDS,
    )
}

/// An sql source: its zone parsed and its connection string read, once.
fn sql_source(
    field: &impl Fn(&str) -> String,
    url_env: String,
    query: String,
    timeout_seconds: Option<u64>,
    time_zone: Option<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<SourceConfig, ConfigError> {
    let time_zone = match time_zone {
        None => None,
        Some(zone) => Some(zone.parse::<chrono_tz::Tz>().map_err(|_| {
            invalid(
                field("time_zone"),
                format!("{zone:?} is not an IANA time zone (e.g. \"UTC\", \"Europe/Berlin\")"),
            )
        })?),
    };
    let url = env(&url_env).ok_or_else(|| {
        invalid(
            field("url_env"),
            format!("environment variable {url_env} is not set"),
        )
    })?;
    Ok(SourceConfig::Sql {
        url: Secret(url),
        query,
        timeout_seconds: source_timeout(field, timeout_seconds)?,
        time_zone,
    })
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
