//! The loss audit on the real test cluster: each stage produced on purpose,
//! with exact counts and the exact set of keys per stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mqaudit::admin::{Admin, Cluster};
use mqaudit::audit::model::FindingKind;
use mqaudit::audit::runner::Auditor;
use mqaudit::audit::store::{Finding, FlowTotals};
use mqaudit::body::json::MessageQueue;
use mqaudit::clock::Clock;
use mqaudit::config::Config;
use mqaudit::remoting::{ClientOptions, Pool};

use crate::support::driver::Driver;
use crate::support::{cluster, eventually, now_ms, unique};

const MINUTE: i64 = 60_000;

/// The two scenarios that send to broker-a and write its trace topic
/// themselves run one at a time: side by side, the rocketmq-rust broker
/// closed one's connection mid-send (seen when only they ran).
static TRACE_WRITERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Write `{key, time_ms[, msg_id]}` lines.
fn write_ledger(path: &Path, records: &[(&str, i64, Option<&str>)]) {
    let text: String = records
        .iter()
        .map(|(k, t, m)| match m {
            Some(m) => format!("{{\"key\":\"{k}\",\"time_ms\":{t},\"msg_id\":\"{m}\"}}\n"),
            None => format!("{{\"key\":\"{k}\",\"time_ms\":{t}}}\n"),
        })
        .collect();
    std::fs::write(path, text).expect("write ledger");
}

pub(crate) async fn auditor(dir: &Path, flow_toml: &str) -> Auditor {
    auditor_with_env(dir, flow_toml, None).await
}

/// An auditor reading at most `budget` trace messages per run.
pub(crate) async fn auditor_with_budget(dir: &Path, flow_toml: &str, budget: usize) -> Auditor {
    auditor_on(
        dir,
        flow_toml,
        &cluster().namesrv,
        &format!("trace_ingest_budget = {budget}"),
    )
    .await
}

/// An auditor of the cluster at `namesrv`, with extra `[audit]` lines.
pub(crate) async fn auditor_on(dir: &Path, flow_toml: &str, namesrv: &str, audit: &str) -> Auditor {
    let text = format!(
        "[[cluster]]\nname = \"test\"\nnamesrv = [\"{namesrv}\"]\n\n[audit]\ndata_dir = \"{}\"\n{audit}\n\n{flow_toml}",
        dir.join("data").display()
    );
    let config = Config::from_toml_str(&text, |_| None).expect("config");
    let store = crate::support::store::open(&config.audit.data_dir).await;
    let admin = Admin::new(
        Arc::new(Pool::new(ClientOptions::default())),
        Duration::from_secs(5),
    );
    Auditor::new(
        config.flows[0].clone(),
        config.audit.clone(),
        store,
        Cluster::new("test", vec![namesrv.to_string()], admin),
        Clock::system(),
    )
}

/// An auditor whose sources see `url` as every environment variable (the sql source's URL).
pub(crate) async fn auditor_with_env(dir: &Path, flow_toml: &str, url: Option<String>) -> Auditor {
    let c = cluster();
    let text = format!(
        "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n\n[audit]\ndata_dir = \"{}\"\n\n{flow_toml}",
        c.namesrv,
        dir.join("data").display()
    );
    let env_value = url.clone().unwrap_or_else(|| "unused".to_string());
    let config = Config::from_toml_str(&text, |_| Some(env_value.clone())).expect("config");
    let store = crate::support::store::open(&config.audit.data_dir).await;
    let admin = Admin::new(
        Arc::new(Pool::new(ClientOptions::default())),
        Duration::from_secs(5),
    );
    Auditor::new(
        config.flows[0].clone(),
        config.audit.clone(),
        store,
        Cluster::new("test", vec![c.namesrv.clone()], admin),
        Clock::system(),
    )
}

/// Lost counters by stage, the non-zero ones.
pub(crate) fn lost(totals: &FlowTotals) -> Vec<(&str, i64)> {
    totals
        .counters
        .get("lost")
        .into_iter()
        .flatten()
        .filter(|(_, v)| **v > 0)
        .map(|(stage, v)| (stage.as_str(), *v))
        .collect()
}

/// Missing keys by (status, stage).
pub(crate) fn by_stage(findings: &[Finding]) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.kind == FindingKind::Missing) {
        out.entry((
            f.status.as_str().to_string(),
            f.stage.map(|s| s.as_str().to_string()).unwrap_or_default(),
        ))
        .or_default()
        .push(f.key.clone());
    }
    out
}

/// Expected missing keys by (status, stage), from (status, stage, key) triples.
pub(crate) fn stages(entries: &[(&str, &str, String)]) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (status, stage, key) in entries {
        out.entry((status.to_string(), stage.to_string()))
            .or_default()
            .push(key.clone());
    }
    out
}

/// Where a scenario keeps its producer ledger (outbox) and consumer log.
enum Ledger {
    /// JSON-lines files in a directory.
    Jsonl(PathBuf),
    /// PostgreSQL tables `outbox` and `consume_log`.
    Sql {
        dir: PathBuf,
        pool: sqlx::PgPool,
        _server: crate::support::postgres::Postgres,
    },
}

impl Ledger {
    fn jsonl() -> Ledger {
        let dir = std::env::temp_dir().join(unique("mqaudit-audit"));
        std::fs::create_dir_all(&dir).expect("dir");
        Ledger::Jsonl(dir)
    }

    async fn sql() -> Ledger {
        let server = tokio::task::spawn_blocking(crate::support::postgres::Postgres::start)
            .await
            .expect("postgres");
        let pool = sqlx::PgPool::connect(&server.url).await.expect("connect");
        for statement in [
            "CREATE TABLE outbox (key text, sent_at timestamptz, msg_id text)",
            "CREATE TABLE consume_log (msg_key text, consumed_at timestamptz)",
        ] {
            sqlx::query(statement).execute(&pool).await.expect("create");
        }
        let dir = std::env::temp_dir().join(unique("mqaudit-audit-sql"));
        std::fs::create_dir_all(&dir).expect("dir");
        // The sql source reads the connection string from this variable.
        std::fs::write(dir.join("url"), &server.url).expect("write");
        Ledger::Sql {
            dir,
            pool,
            _server: server,
        }
    }

    fn dir(&self) -> PathBuf {
        match self {
            Ledger::Jsonl(dir) | Ledger::Sql { dir, .. } => dir.clone(),
        }
    }

    /// Replace the producer ledger (`produced`) or the consumer log.
    async fn write(&self, produced: bool, records: &[(&str, i64, Option<&str>)]) {
        match self {
            Ledger::Jsonl(dir) => write_ledger(
                &dir.join(if produced {
                    "produced.jsonl"
                } else {
                    "consumed.jsonl"
                }),
                records,
            ),
            Ledger::Sql { pool, .. } => {
                let table = if produced { "outbox" } else { "consume_log" };
                sqlx::query(&format!("TRUNCATE {table}"))
                    .execute(pool)
                    .await
                    .expect("truncate");
                for (key, time, msg_id) in records {
                    let at = chrono::DateTime::from_timestamp_millis(*time).expect("time");
                    let insert = if produced {
                        sqlx::query("INSERT INTO outbox VALUES ($1, $2, $3)")
                            .bind(*key)
                            .bind(at)
                            .bind(*msg_id)
                    } else {
                        sqlx::query("INSERT INTO consume_log VALUES ($1, $2)")
                            .bind(*key)
                            .bind(at)
                    };
                    insert.execute(pool).await.expect("insert");
                }
            }
        }
    }

    /// The flow's `produced = ...` and `consumed = ...` TOML values.
    fn sources(&self) -> (String, String) {
        match self {
            Ledger::Jsonl(dir) => (
                format!("{{ kind = \"jsonl\", path = \"{}\" }}", dir.join("produced.jsonl").display()),
                format!("{{ kind = \"jsonl\", path = \"{}\" }}", dir.join("consumed.jsonl").display()),
            ),
            Ledger::Sql { .. } => (
                "{ kind = \"sql\", url_env = \"MQAUDIT_TEST_PG_URL\", query = \"SELECT key, sent_at, msg_id FROM outbox WHERE sent_at >= $1 AND sent_at < $2\" }".to_string(),
                "{ kind = \"sql\", url_env = \"MQAUDIT_TEST_PG_URL\", query = \"SELECT msg_key, consumed_at FROM consume_log WHERE consumed_at >= $1 AND consumed_at < $2\" }".to_string(),
            ),
        }
    }

    /// The environment the flow's sources read.
    fn env(&self) -> Option<String> {
        match self {
            Ledger::Jsonl(_) => None,
            Ledger::Sql { dir, .. } => std::fs::read_to_string(dir.join("url")).ok(),
        }
    }
}

#[tokio::test]
async fn jsonl_flow_names_send_consume_dead_letter_duplicates_orphans_and_late_arrivals() {
    ledger_scenario(Ledger::jsonl()).await;
}

#[tokio::test]
async fn sql_flow_on_postgresql_names_the_same_stages() {
    ledger_scenario(Ledger::sql().await).await;
}

/// Stage the scenario on broker-a: queue 0 holds k0..k5 then k8, queue 1
/// holds k7 then k6 (k9 is never sent); the group committed queue 0 past k8
/// and queue 1 past k7 only; k7 was sent straight to the DLQ. Waits until the
/// index and the DLQ answer. Returns (topic, group, sends by key).
async fn stage_messages(
    driver: &Driver,
    prefix: &str,
) -> (
    String,
    String,
    BTreeMap<&'static str, crate::support::driver::Sent>,
) {
    let c = cluster();
    let (topic, group) = (unique(prefix), unique(&format!("{prefix}Group")));
    driver.create_topic(&c.broker_a, &topic, 2).await;
    driver.heartbeat(&c.broker_a, &group, &[&topic]).await;
    // Queue 0: k0..k5 then k8; queue 1: k7 then k6. k9 is never sent.
    let mut sent = BTreeMap::new();
    for (key, queue) in [
        ("k0", 0),
        ("k1", 0),
        ("k2", 0),
        ("k3", 0),
        ("k4", 0),
        ("k5", 0),
        ("k8", 0),
        ("k7", 1),
        ("k6", 1),
    ] {
        let s = driver
            .send(
                &c.broker_a,
                "broker-a",
                &topic,
                queue,
                &format!("{topic}-{key}"),
                b"x",
            )
            .await;
        sent.insert(key, s);
    }
    let key = |k: &str| format!("{topic}-{k}");
    // The consumer committed queue 0 past k8 (offset 6) and queue 1 past k7 (offset 0), not k6.
    driver
        .commit(
            &c.broker_a,
            &group,
            &MessageQueue {
                topic: topic.clone(),
                broker_name: "broker-a".into(),
                queue_id: 0,
            },
            7,
        )
        .await;
    driver
        .commit(
            &c.broker_a,
            &group,
            &MessageQueue {
                topic: topic.clone(),
                broker_name: "broker-a".into(),
                queue_id: 1,
            },
            1,
        )
        .await;
    // k7 failed for good: straight to the DLQ.
    let q1 = MessageQueue {
        topic: topic.clone(),
        broker_name: "broker-a".into(),
        queue_id: 1,
    };
    let k7 = eventually(15, "k7 pullable", || async {
        let m = driver.pull(&c.broker_a, &group, &q1, 0, 1).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    driver.send_back(&c.broker_a, &group, &k7[0], -1, 16).await;
    // Wait until the index answers for the last keys sent (dispatch is asynchronous).
    for k in ["k6", "k8"] {
        let wanted = key(k);
        eventually(15, "indexed", || async {
            let found = driver
                .admin
                .query_message_by_key(
                    &c.broker_a,
                    &topic,
                    &wanted,
                    now_ms() - 10 * MINUTE,
                    now_ms() + MINUTE,
                )
                .await
                .ok()?;
            (!found.is_empty()).then_some(())
        })
        .await;
    }
    eventually(15, "k7 in the DLQ", || async {
        let dlq = format!("%DLQ%{group}");
        let found = driver
            .admin
            .query_message_by_key(
                &c.broker_a,
                &dlq,
                &key("k7"),
                now_ms() - 10 * MINUTE,
                now_ms() + MINUTE,
            )
            .await
            .ok()?;
        (!found.is_empty()).then_some(())
    })
    .await;

    (topic, group, sent)
}

/// The producer/consumer-ledger scenario, for any ledger kind.
async fn ledger_scenario(ledger: Ledger) {
    let c = cluster();
    let driver = Driver::new();
    let (topic, group, sent) = stage_messages(&driver, "Audited").await;
    let key = |k: &str| format!("{topic}-{k}");
    let dir = ledger.dir();
    let w0 = (now_ms() / MINUTE) * MINUTE - MINUTE;
    let produced: Vec<(String, i64, Option<String>)> = (0..10)
        .map(|i| {
            let k = format!("k{i}");
            let msg_id = sent.get(k.as_str()).map(|s| s.msg_id.clone());
            (key(&k), w0 + 1_000 + i, msg_id)
        })
        .collect();
    let produced_refs: Vec<(&str, i64, Option<&str>)> = produced
        .iter()
        .map(|(k, t, m)| (k.as_str(), *t, m.as_deref()))
        .collect();
    ledger.write(true, &produced_refs).await;
    let (k0, k1, k2, k3, k4, k5, k6) = (
        key("k0"),
        key("k1"),
        key("k2"),
        key("k3"),
        key("k4"),
        key("k5"),
        key("k6"),
    );
    let mut consumed = vec![
        (k0.as_str(), w0 + 30_000, None),
        (k0.as_str(), w0 + 31_000, None),
        (k1.as_str(), w0 + 32_000, None),
        (k2.as_str(), w0 + 33_000, None),
        (k3.as_str(), w0 + 34_000, None),
        (k4.as_str(), w0 + 35_000, None),
        (k5.as_str(), w0 + 36_000, None),
        ("ghost-never-produced", w0 + 37_000, None),
    ];
    ledger.write(false, &consumed).await;
    let (produced_source, consumed_source) = ledger.sources();
    let flow = format!(
        "[[flow]]\nname = \"ledger\"\ncluster = \"test\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\nschedule = \"0 * * * * *\"\nwindow_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\nproduced = {produced_source}\nconsumed = {consumed_source}\n"
    );
    let auditor = auditor_with_env(&dir, &flow, ledger.env()).await;
    let window = Some((w0, w0 + MINUTE));

    // Before the deadline: everything missing is pending or in the DLQ.
    let summary = auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("run 1");
    assert_eq!(summary.windows.len(), 1);
    assert_eq!(
        (summary.windows[0].produced, summary.windows[0].consumed),
        (10, 7)
    );
    let findings = auditor
        .store()
        .window_findings("ledger", w0)
        .await
        .expect("findings");
    let expected = stages(&[
        ("dead_letter", "dead_letter", key("k7")),
        ("pending", "consume", key("k8")),
        ("pending", "late", key("k6")),
        ("pending", "send", key("k9")),
    ]);
    assert_eq!(by_stage(&findings), expected);
    let dup: Vec<(String, i64)> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::Duplicated)
        .map(|f| (f.key.clone(), f.count))
        .collect();
    assert_eq!(dup, [(k0.clone(), 1)]);
    let orphans: Vec<(String, i64)> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::Orphaned)
        .map(|f| (f.key.clone(), f.count))
        .collect();
    assert_eq!(orphans, [("ghost-never-produced".to_string(), 1)]);
    let k8 = findings.iter().find(|f| f.key == key("k8")).expect("k8");
    let evidence = k8.evidence.as_ref().expect("evidence");
    assert_eq!(
        (
            evidence["broker"].as_str(),
            evidence["queue_id"].as_i64(),
            evidence["queue_offset"].as_i64(),
            evidence["group_offset"].as_i64()
        ),
        (Some("broker-a"), Some(0), Some(6), Some(7))
    );

    // The slow consumer catches up on k6 before the deadline: resolved, not lost.
    consumed.push((k6.as_str(), w0 + 50_000, None));
    ledger.write(false, &consumed).await;
    let summary = auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("run 2");
    assert_eq!(summary.windows[0].resolved, 1);
    let findings = auditor
        .store()
        .window_findings("ledger", w0)
        .await
        .expect("findings");
    assert_eq!(
        findings
            .iter()
            .find(|f| f.key == k6)
            .map(|f| f.status.as_str()),
        Some("resolved")
    );

    // After the deadline: the rest is lost, with its stage.
    let after_deadline = w0 + MINUTE + 600_000 + 1;
    let started = std::time::Instant::now();
    auditor
        .run(after_deadline, window, &|_, _| {})
        .await
        .expect("final run");
    let final_took = started.elapsed().as_millis() as i64;
    let findings = auditor
        .store()
        .window_findings("ledger", w0)
        .await
        .expect("findings");
    let expected = stages(&[
        ("dead_letter", "dead_letter", key("k7")),
        ("lost", "consume", key("k8")),
        ("lost", "send", key("k9")),
        ("resolved", "late", key("k6")),
    ]);
    assert_eq!(by_stage(&findings), expected);
    let totals = auditor.store().totals("ledger").await.expect("totals");
    assert_eq!(lost(&totals), [("consume", 1), ("send", 1)]);
    assert_eq!(
        (
            totals.counter("dead_lettered", ""),
            totals.counter("duplicated", ""),
            totals.counter("orphaned", ""),
            totals.pending
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(
        (
            totals.counter("produced", ""),
            totals.counter("consumed", "")
        ),
        (10, 8)
    );

    // Re-running the window changes nothing: idempotent. The last success
    // is when the later of the two runs ended (each its start plus what it
    // took; they start 1 ms apart).
    let started = std::time::Instant::now();
    auditor
        .run(after_deadline + 1, window, &|_, _| {})
        .await
        .expect("re-run");
    let took = started.elapsed().as_millis() as i64;
    let rerun = auditor.store().totals("ledger").await.expect("totals");
    let ended = rerun.last_success_ms.expect("a successful run");
    let latest_possible = after_deadline + 1 + took.max(final_took);
    assert!(
        (after_deadline + 1..=latest_possible).contains(&ended),
        "runs started at {after_deadline} (took {final_took} ms) and {} (took {took} ms), the last success is recorded at {ended}",
        after_deadline + 1
    );
    assert_eq!(
        rerun,
        FlowTotals {
            runs: vec![("success".to_string(), 4)],
            last_success_ms: Some(ended),
            ..totals.clone()
        }
    );
    assert_eq!(
        auditor
            .store()
            .window_findings("ledger", w0)
            .await
            .expect("findings")
            .len(),
        findings.len()
    );

    // `mqaudit lookup` prints the key's chain: finding, ledger records, where the broker has it.
    let (store_lines, store_env) = crate::support::store::serve_config(&dir.join("data")).await;
    std::fs::write(
        dir.join("lookup.toml"),
        format!(
            "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n\n[audit]\n{store_lines}\n{flow}",
            c.namesrv,
        ),
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .args([
            "lookup",
            "--flow",
            "ledger",
            "--key",
            &key("k8"),
            "--config",
        ])
        .arg(dir.join("lookup.toml"))
        .env("MQAUDIT_TEST_PG_URL", ledger.env().unwrap_or_default())
        .envs(store_env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("lookup");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let chain: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("lookup prints JSON");
    assert_eq!(
        (
            chain["findings"][0]["status"].as_str(),
            chain["findings"][0]["stage"].as_str()
        ),
        (Some("lost"), Some("consume"))
    );
    assert_eq!(chain["producer_records"][0]["time_ms"], w0 + 1_008);
    assert_eq!(chain["consumer_records"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        (
            chain["broker"][0]["queue_offset"].as_i64(),
            chain["broker"][0]["consumed_by_offset"].as_bool()
        ),
        (Some(6), Some(true))
    );

    // The metrics come from the store.
    let text = {
        let store = mqaudit::metrics::SnapshotStore::new();
        store.publish(
            "audit",
            mqaudit::audit::exposition(auditor.store(), std::slice::from_ref(auditor.flow()))
                .await
                .expect("exposition"),
        );
        String::from_utf8(store.current().to_vec()).expect("utf8")
    };
    for line in [
        "mqaudit_messages_lost_total{flow=\"ledger\",stage=\"send\"} 1",
        "mqaudit_messages_lost_total{flow=\"ledger\",stage=\"consume\"} 1",
        "mqaudit_messages_dead_lettered_total{flow=\"ledger\"} 1",
        "mqaudit_messages_duplicated_total{flow=\"ledger\"} 1",
        "mqaudit_messages_orphaned_total{flow=\"ledger\"} 1",
        "mqaudit_messages_pending{flow=\"ledger\"} 0",
        "mqaudit_audit_runs_total{flow=\"ledger\",result=\"success\"} 4",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let _ = std::fs::remove_dir_all(PathBuf::from(&dir));
}

#[tokio::test]
async fn serve_audits_on_schedule_and_serves_metrics_and_the_json_api() {
    let c = cluster();
    let dir = std::env::temp_dir().join(unique("mqaudit-serve-audit"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (topic, group) = (unique("Scheduled"), unique("ScheduledGroup"));
    let w0 = (now_ms() / MINUTE) * MINUTE - MINUTE;
    let lost_key = format!("{topic}-never-sent");
    write_ledger(
        &dir.join("produced.jsonl"),
        &[(lost_key.as_str(), w0 + 5_000, None)],
    );
    write_ledger(&dir.join("consumed.jsonl"), &[]);
    let (store_lines, store_env) = crate::support::store::serve_config(&dir.join("data")).await;
    let text = format!(
        "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n\n[web]\nlisten_address = \"127.0.0.1:0\"\n\n[audit]\n{store_lines}\n\
         [[flow]]\nname = \"scheduled\"\ncluster = \"test\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\nschedule = \"* * * * * *\"\n\
         window_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\n\
         produced = {{ kind = \"jsonl\", path = \"{}\" }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
        c.namesrv,
        dir.join("produced.jsonl").display(),
        dir.join("consumed.jsonl").display()
    );
    let mut config = Config::from_toml_str(&text, |k| {
        store_env
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    })
    .expect("config");
    config.collect.interval = Duration::from_secs(30);
    let running = mqaudit::app::start(config).await.expect("start");
    let addr = running.addr.to_string();
    let get = |path: String| {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || crate::exporter::http_get(&addr, &path))
                .await
                .ok()
                .flatten()
        }
    };
    // The scheduler fires within a second and audits the last settled window.
    let findings = eventually(20, "the scheduled run's finding in the API", || async {
        let (status, body, _) = get("/api/v1/audit/findings?flow=scheduled".to_string()).await?;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let list = v["data"].as_array()?.clone();
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(findings[0]["key"], lost_key.as_str());
    assert_eq!(
        (
            findings[0]["status"].as_str(),
            findings[0]["stage"].as_str()
        ),
        (Some("pending"), Some("send"))
    );
    let (_, body, _) = get("/api/v1/flows".to_string()).await.expect("flows");
    let flows: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(flows["status"], "success");
    assert_eq!(flows["data"][0]["name"], "scheduled");
    assert_eq!(flows["data"][0]["totals"]["pending"], 1);
    let (_, body, _) = get("/api/v1/audit/runs?flow=scheduled".to_string())
        .await
        .expect("runs");
    let runs: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        runs["data"]
            .as_array()
            .is_some_and(|r| r.iter().any(|run| run["result"] == "success")),
        "{body}"
    );
    let (_, body, _) = get(format!("/api/v1/keys/{lost_key}?flow=scheduled"))
        .await
        .expect("key");
    let chain: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(chain["data"]["key"], lost_key.as_str());
    assert_eq!(chain["data"]["producer_records"][0]["time_ms"], w0 + 5_000);
    assert_eq!(chain["data"]["findings"][0]["stage"], "send");
    let (status, body, _) = get("/api/v1/audit/findings?flow=nope".to_string())
        .await
        .expect("bad flow");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"errorType\":\"bad_data\""), "{body}");
    let (_, metrics, _) = get("/metrics".to_string()).await.expect("metrics");
    assert!(
        metrics.contains("mqaudit_messages_pending{flow=\"scheduled\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE mqaudit_messages_lost_total counter"),
        "{metrics}"
    );
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn pub_record(
    topic: &str,
    sent: &crate::support::driver::Sent,
    time_ms: i64,
) -> mqaudit::body::trace::TraceRecord {
    mqaudit::body::trace::TraceRecord::Pub(mqaudit::body::trace::PubRecord {
        timestamp: time_ms,
        region_id: "DefaultRegion".into(),
        group: "mqaudit_test_producer".into(),
        topic: topic.to_string(),
        msg_id: sent.msg_id.clone(),
        tags: "null".into(),
        keys: sent.key.clone(),
        store_host: sent.broker_addr.clone(),
        body_length: 1,
        cost_time_ms: 1,
        msg_type: 0,
        offset_msg_id: sent.offset_msg_id.clone(),
        success: true,
        client_host: None,
    })
}

fn sub_after(
    msg_id: &str,
    key: &str,
    group: &str,
    time_ms: i64,
) -> mqaudit::body::trace::TraceRecord {
    mqaudit::body::trace::TraceRecord::SubAfter(mqaudit::body::trace::SubAfterRecord {
        request_id: format!("req-{msg_id}-{time_ms}"),
        msg_id: msg_id.to_string(),
        cost_time_ms: 1,
        success: true,
        keys: key.to_string(),
        context_code: Some(0),
        timestamp: Some(time_ms),
        group: Some(group.to_string()),
    })
}

#[tokio::test]
async fn trace_flow_reads_the_trace_topic_with_its_own_cursors_and_names_each_stage() {
    let _one_at_a_time = TRACE_WRITERS.lock().await;
    let c = cluster();
    let driver = Driver::new();
    let (topic, group, sent) = stage_messages(&driver, "Traced").await;
    let key = |k: &str| format!("{topic}-{k}");
    // A trace flow cannot show `send` (a failed send writes no Pub). Its k9 is
    // a Pub with success for a message the broker does not have: acknowledged, gone.
    let w0 = (now_ms() / MINUTE) * MINUTE - MINUTE;
    let mut k9 = sent["k0"].clone();
    k9.key = key("k9");
    k9.msg_id = driver.new_msg_id();
    k9.offset_msg_id = String::new();
    let mut records: Vec<mqaudit::body::trace::TraceRecord> = Vec::new();
    for (i, k) in ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"]
        .iter()
        .enumerate()
    {
        records.push(pub_record(&topic, &sent[k], w0 + 1_000 + i as i64));
    }
    records.push(pub_record(&topic, &k9, w0 + 1_009));
    for (i, k) in ["k0", "k0", "k1", "k2", "k3", "k4", "k5"]
        .iter()
        .enumerate()
    {
        records.push(sub_after(
            &sent[k].msg_id,
            &sent[k].key,
            &group,
            w0 + 30_000 + i as i64,
        ));
    }
    // A message on the topic whose producer wrote no Pub, consumed: an
    // orphan. A consumption of a message of another topic (the group may
    // consume several) is not.
    let ghost = driver
        .send(&c.broker_a, "broker-a", &topic, 1, &key("ghost"), b"x")
        .await;
    records.push(sub_after(&ghost.msg_id, &ghost.key, &group, w0 + 40_000));
    records.push(sub_after(
        "7F00000100000000000000000000FFFF",
        &format!("{topic}-elsewhere"),
        &group,
        w0 + 40_500,
    ));
    // A consumption by another group is not this flow's.
    records.push(sub_after(
        &sent["k8"].msg_id,
        &sent["k8"].key,
        "another-group",
        w0 + 41_000,
    ));
    driver.write_trace(&c.broker_a, "broker-a", &records).await;
    for k in ["k6", "k8", "ghost"] {
        let wanted = key(k);
        eventually(15, "indexed", || async {
            let found = driver
                .admin
                .query_message_by_key(
                    &c.broker_a,
                    &topic,
                    &wanted,
                    now_ms() - 10 * MINUTE,
                    now_ms() + MINUTE,
                )
                .await
                .ok()?;
            (!found.is_empty()).then_some(())
        })
        .await;
    }

    let dir = std::env::temp_dir().join(unique("mqaudit-trace-audit"));
    std::fs::create_dir_all(&dir).expect("dir");
    let flow = format!(
        "[[flow]]\nname = \"traced\"\ncluster = \"test\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\nschedule = \"0 * * * * *\"\nwindow_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\nproduced = {{ kind = \"rocketmq_trace\" }}\nconsumed = {{ kind = \"rocketmq_trace\" }}\n"
    );
    let auditor = auditor(&dir, &flow).await;
    let window = Some((w0, w0 + MINUTE));
    let summary = eventually(15, "the trace records ingested and audited", || async {
        let s = auditor
            .run(now_ms(), window, &|_, _| {})
            .await
            .expect("run");
        (s.windows[0].produced == 10).then_some(s)
    })
    .await;
    assert!(summary.trace_messages >= 1);
    assert_eq!(summary.windows[0].consumed, 7);
    let findings = auditor
        .store()
        .window_findings("traced", w0)
        .await
        .expect("findings");
    // k8: the group passed it and no SubAfter says it was processed; with
    // no ledger to tell a lost trace record from a lost message: unconfirmed.
    let expected = stages(&[
        ("dead_letter", "dead_letter", key("k7")),
        ("pending", "late", key("k6")),
        ("pending", "store", key("k9")),
        ("pending", "unconfirmed", key("k8")),
    ]);
    assert_eq!(by_stage(&findings), expected);
    let dup: Vec<(String, i64)> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::Duplicated)
        .map(|f| (f.key.clone(), f.count))
        .collect();
    assert_eq!(dup, [(key("k0"), 1)]);
    let orphans: Vec<String> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::Orphaned)
        .map(|f| f.key.clone())
        .collect();
    assert_eq!(orphans, [key("ghost")]);

    // k6 consumed late (a new trace message); the cursor picks it up.
    driver
        .write_trace(
            &c.broker_a,
            "broker-a",
            &[sub_after(
                &sent["k6"].msg_id,
                &sent["k6"].key,
                &group,
                w0 + 50_000,
            )],
        )
        .await;
    eventually(15, "the late SubAfter ingested", || async {
        let s = auditor
            .run(now_ms(), window, &|_, _| {})
            .await
            .expect("run");
        (s.windows[0].resolved == 1).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let last = auditor
        .run(w0 + MINUTE + 600_000 + 1, window, &|_, _| {})
        .await
        .expect("final");
    // Where the run's time went (trace ingest, reading the window's
    // records): its parts are never more than the whole.
    let took = u64::try_from(started.elapsed().as_millis()).expect("ms");
    assert!(
        last.ingest_ms + last.read_ms <= took,
        "{last:?} in {took} ms"
    );
    assert!(
        last.ingest_pull_ms + last.ingest_store_ms <= last.ingest_ms,
        "{last:?}"
    );
    let totals = auditor.store().totals("traced").await.expect("totals");
    assert_eq!(lost(&totals), [("store", 1), ("unconfirmed", 1)]);
    assert_eq!(
        (
            totals.counter("dead_lettered", ""),
            totals.counter("duplicated", ""),
            totals.counter("orphaned", ""),
            totals.pending
        ),
        (1, 1, 1, 0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the test compares of two auditors' findings (the evidence holds
/// live broker answers).
fn verdict_facts(findings: &[Finding]) -> Vec<(String, String, String, i64, String, String)> {
    let mut facts: Vec<_> = findings
        .iter()
        .map(|f| {
            (
                f.id.clone(),
                f.kind.as_str().to_string(),
                f.key.clone(),
                f.count,
                f.status.as_str().to_string(),
                f.stage.map(|s| s.as_str().to_string()).unwrap_or_default(),
            )
        })
        .collect();
    facts.sort();
    facts
}

/// Open windows re-audited from what earlier runs read (`reuse`) come out
/// exactly as when re-read whole: two auditors of one trace flow, each with
/// its own store, one keeping records between runs and one with
/// `reuse_budget = 0`, run side by side while trace records arrive late,
/// out of order and into what was already read — and a third process
/// ingesting between two of the first's runs, which then must not trust
/// what it kept.
#[tokio::test]
async fn reused_records_audit_exactly_as_a_whole_re_read_while_records_arrive_late() {
    let _one_at_a_time = TRACE_WRITERS.lock().await;
    let c = cluster();
    let driver = Driver::new();
    let (topic, group) = (unique("Reused"), unique("ReusedGroup"));
    driver.create_topic(&c.broker_a, &topic, 2).await;
    driver.heartbeat(&c.broker_a, &group, &[&topic]).await;
    let key = |i: usize| format!("{topic}-k{i}");
    let mut sent = Vec::new();
    for i in 0..12 {
        sent.push(
            driver
                .send(
                    &c.broker_a,
                    "broker-a",
                    &topic,
                    (i % 2) as i32,
                    &key(i),
                    b"x",
                )
                .await,
        );
    }
    let w0 = (now_ms() / MINUTE) * MINUTE - 2 * MINUTE;
    let w1 = w0 + MINUTE;
    let sub = |i: usize, time_ms: i64| sub_after(&sent[i].msg_id, &sent[i].key, &group, time_ms);
    let dir = std::env::temp_dir().join(unique("mqaudit-reuse"));
    let flow = format!(
        "[[flow]]\nname = \"reused\"\ncluster = \"test\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\nschedule = \"0 * * * * *\"\nwindow_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\nproduced = {{ kind = \"rocketmq_trace\" }}\nconsumed = {{ kind = \"rocketmq_trace\" }}\n"
    );
    let reusing = auditor_on(&dir.join("reusing"), &flow, &c.namesrv, "").await;
    let rereading = auditor_on(
        &dir.join("rereading"),
        &flow,
        &c.namesrv,
        "reuse_budget = 0",
    )
    .await;
    let windows = Some((w0, w1 + MINUTE));
    // Run both until `done` holds for both (each trace message is ingested
    // whole or not at all), then they must agree on everything.
    // `resolved` says what changed since the store's previous audit: the
    // same in both stores unless another process audited one of them.
    let side_by_side =
        |what: &'static str,
         same_history: bool,
         done: fn(&[mqaudit::audit::runner::WindowSummary]) -> bool| {
            let (reusing, rereading) = (&reusing, &rereading);
            async move {
                let (a, b) = eventually(20, what, || async {
                    let now = now_ms();
                    let a = reusing.run(now, windows, &|_, _| {}).await.expect("run");
                    let b = rereading.run(now, windows, &|_, _| {}).await.expect("run");
                    (done(&a.windows) && done(&b.windows)).then_some((a, b))
                })
                .await;
                let mut windows = (a.windows.clone(), b.windows.clone());
                if !same_history {
                    for w in windows.0.iter_mut().chain(windows.1.iter_mut()) {
                        w.resolved = 0;
                    }
                }
                assert_eq!(windows.0, windows.1, "{what}: reused against re-read");
                for start in [w0, w1] {
                    let (fa, fb) = (
                        reusing
                            .store()
                            .window_findings("reused", start)
                            .await
                            .expect("findings"),
                        rereading
                            .store()
                            .window_findings("reused", start)
                            .await
                            .expect("findings"),
                    );
                    assert_eq!(
                        verdict_facts(&fa),
                        verdict_facts(&fb),
                        "{what}: window {start}"
                    );
                }
                assert_eq!(
                    b.reused_records, 0,
                    "{what}: reuse_budget = 0 keeps nothing"
                );
                a
            }
        };
    let missing = |w: &mqaudit::audit::runner::WindowSummary| -> u64 {
        w.missing.values().flat_map(|m| m.values()).sum()
    };

    // A: k0..k5 sent in w0, k6..k9 in w1; k0, k1 and k6 consumed in w1.
    let mut a: Vec<_> = (0..6)
        .map(|i| pub_record(&topic, &sent[i], w0 + 1_000 + i as i64))
        .collect();
    a.extend((6..10).map(|i| pub_record(&topic, &sent[i], w1 + 1_000 + i as i64)));
    a.extend([sub(0, w1 + 5_000), sub(1, w1 + 6_000), sub(6, w1 + 7_000)]);
    driver.write_trace(&c.broker_a, "broker-a", &a).await;
    let first = side_by_side("first reads", true, |w| {
        w[0].produced == 6 && w[1].produced == 4 && w[1].consumed == 1
    })
    .await;
    assert_eq!(first.windows[0].consumed, 2);

    // B: into what was read already (matched consumptions: 4, k0 twice): k2 consumed before k0's and k1's
    // consumptions, k0 consumed again, and k10's Pub late into w0.
    driver
        .write_trace(
            &c.broker_a,
            "broker-a",
            &[
                sub(2, w1 + 2_000),
                sub(0, w1 + 50_000),
                pub_record(&topic, &sent[10], w0 + 30_000),
            ],
        )
        .await;
    side_by_side("late records into read windows", true, |w| {
        w[0].produced == 7 && w[0].duplicated == 1 && w[0].consumed == 4
    })
    .await;

    // C: k7 consumed, and k11 (sent, its Pub never written) consumed within
    // w1: an orphan. Ingested first by another process on the same store:
    // the reusing auditor's cursors move under it, so it must read again.
    driver
        .write_trace(
            &c.broker_a,
            "broker-a",
            &[sub(7, w1 + 40_000), sub(11, w1 + 20_000)],
        )
        .await;
    let other = auditor_on(&dir.join("reusing"), &flow, &c.namesrv, "").await;
    eventually(20, "the other process ingests C", || async {
        let s = other.run(now_ms(), windows, &|_, _| {}).await.expect("run");
        (s.windows[1].consumed == 2).then_some(())
    })
    .await;
    let third = side_by_side("after another process ingested", false, |w| {
        w[1].consumed == 2 && w.iter().map(|w| w.orphaned).sum::<u64>() == 1
    })
    .await;
    assert_eq!(third.reused_records, 0, "nothing kept is trusted then");

    // D: nothing new: everything is replayed, nothing read again.
    let last = side_by_side("nothing new", true, |w| w[1].consumed == 2).await;
    // Both windows' 11 messages, and their consumptions (all in w1).
    assert!(last.reused_records >= 11 + 7, "{last:?}");

    // The construction's verdicts.
    let store = reusing.store();
    let f0 = store.window_findings("reused", w0).await.expect("findings");
    let f1 = store.window_findings("reused", w1).await.expect("findings");
    let of_kind = |findings: &[Finding], kind: FindingKind| -> Vec<(String, i64)> {
        let mut v: Vec<_> = findings
            .iter()
            .filter(|f| f.kind == kind && (kind != FindingKind::Missing || f.is_open()))
            .map(|f| (f.key.clone(), f.count))
            .collect();
        v.sort();
        v
    };
    let ones = |ks: &[usize]| -> Vec<(String, i64)> {
        let mut v: Vec<_> = ks.iter().map(|i| (key(*i), 1)).collect();
        v.sort();
        v
    };
    assert_eq!(of_kind(&f0, FindingKind::Missing), ones(&[3, 4, 5, 10]));
    assert_eq!(of_kind(&f1, FindingKind::Missing), ones(&[8, 9]));
    assert_eq!(of_kind(&f0, FindingKind::Duplicated), ones(&[0]));
    let orphans: Vec<_> = [&f0, &f1]
        .into_iter()
        .flat_map(|f| of_kind(f, FindingKind::Orphaned))
        .collect();
    assert_eq!(orphans, ones(&[11]));
    assert_eq!(
        (missing(&last.windows[0]), missing(&last.windows[1])),
        (4, 2)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record source over HTTP whose behaviour the test switches.
fn http_source(mode: Arc<std::sync::Mutex<&'static str>>, body: String) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mode = *mode.lock().expect("lock");
            let body = body.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let mut stream = reader.into_inner();
                let reply = match mode {
                    "ok" => format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
                    "500" => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops".to_string(),
                    "malformed" => "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\n[{\"key\": 42}]  ".to_string(),
                    _ => {
                        std::thread::sleep(Duration::from_secs(4));
                        return;
                    }
                };
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    format!("http://{addr}/records")
}

#[tokio::test]
async fn a_failing_source_fails_the_run_with_a_clear_error_keeps_findings_and_recovers() {
    let dir = std::env::temp_dir().join(unique("mqaudit-bad-source"));
    std::fs::create_dir_all(&dir).expect("dir");
    let w0 = (now_ms() / MINUTE) * MINUTE - MINUTE;
    let key = unique("never-sent");
    let mode = Arc::new(std::sync::Mutex::new("ok"));
    let url = http_source(
        mode.clone(),
        format!("[{{\"key\":\"{key}\",\"time_ms\":{}}}]", w0 + 2_000),
    );
    std::fs::write(dir.join("consumed.jsonl"), "").expect("write");
    let flow = format!(
        "[[flow]]\nname = \"http\"\ncluster = \"test\"\ntopic = \"{}\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\nwindow_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\nproduced = {{ kind = \"http\", url = \"{url}\", timeout_seconds = 1, retries = 1 }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
        unique("NoSuchTopic"),
        dir.join("consumed.jsonl").display()
    );
    let auditor = auditor(&dir, &flow).await;
    let window = Some((w0, w0 + MINUTE));
    auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("good run");
    let before = auditor
        .store()
        .window_findings("http", w0)
        .await
        .expect("findings");
    assert_eq!(
        before
            .iter()
            .map(|f| (f.key.as_str(), f.stage.map(|s| s.as_str())))
            .collect::<Vec<_>>(),
        [(key.as_str(), Some("send"))]
    );

    for (behaviour, expected) in [
        ("500", "HTTP 500"),
        ("malformed", "malformed"),
        ("hang", "timed out after 1 s"),
    ] {
        *mode.lock().expect("lock") = behaviour;
        let error = auditor
            .run(now_ms(), window, &|_, _| {})
            .await
            .expect_err(behaviour);
        assert!(
            error.to_string().contains(expected) && error.to_string().contains("produced"),
            "{behaviour}: {error}"
        );
        // Previous findings are kept as they were.
        let kept = auditor
            .store()
            .window_findings("http", w0)
            .await
            .expect("findings");
        assert_eq!(kept, before, "{behaviour}");
    }
    *mode.lock().expect("lock") = "ok";
    auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("recovered");
    let runs = auditor.store().runs(Some("http"), 10).await.expect("runs");
    let failures: Vec<&str> = runs
        .iter()
        .filter(|r| r.result.as_deref() == Some("failure"))
        .filter_map(|r| r.error.as_deref())
        .collect();
    assert_eq!(failures.len(), 3, "{runs:?}");
    let totals = auditor.store().totals("http").await.expect("totals");
    assert_eq!(
        totals.runs,
        [("failure".to_string(), 3), ("success".to_string(), 2)]
    );
    assert_eq!(totals.pending, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new flow whose first runs fail (its ledger not created yet) for longer
/// than its deadline still audits from where its first attempted run began:
/// the origin is kept in the store, not taken afresh by the first run that
/// succeeds. Times are passed to the runs, so "ten minutes later" is exact.
#[tokio::test]
async fn a_new_flows_failing_first_runs_do_not_move_where_its_audit_begins() {
    let dir = std::env::temp_dir().join(unique("mqaudit-origin"));
    std::fs::create_dir_all(&dir).expect("dir");
    let t0 = (now_ms() / MINUTE) * MINUTE;
    let (produced, consumed) = (dir.join("produced.jsonl"), dir.join("consumed.jsonl"));
    let flow = format!(
        "[[flow]]\nname = \"origin\"\ncluster = \"test\"\ntopic = \"{}\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n\
         window_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 120\n\
         produced = {{ kind = \"jsonl\", path = \"{}\" }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
        unique("NoSuchTopic"),
        produced.display(),
        consumed.display()
    );
    let auditor = auditor(&dir, &flow).await;
    // The first run at t0 begins a deadline back, at t0 - 2 min, and fails:
    // neither ledger exists yet.
    for late in [0, MINUTE, 2 * MINUTE] {
        let error = auditor
            .run(t0 + late, None, &|_, _| {})
            .await
            .expect_err("no ledger yet");
        assert!(error.to_string().contains("produced"), "{error}");
    }
    // A message sent 90 s before t0, never consumed; one after, consumed.
    write_ledger(
        &produced,
        &[("early", t0 - 90_000, None), ("later", t0 + 30_000, None)],
    );
    write_ledger(&consumed, &[("later", t0 + 31_000, None)]);
    // Ten minutes on, the first run that succeeds still begins at t0 - 2 min
    // (a fresh origin would be t0 + 8 min, past both messages).
    let summary = auditor
        .run(t0 + 10 * MINUTE, None, &|_, _| {})
        .await
        .expect("the ledgers are there");
    let starts: Vec<i64> = summary.windows.iter().map(|w| w.start_ms).collect();
    assert_eq!(
        starts,
        (0..12)
            .map(|i| t0 - 2 * MINUTE + i * MINUTE)
            .collect::<Vec<_>>(),
        "{summary:#?}"
    );
    let early = auditor
        .store()
        .window_findings("origin", t0 - 2 * MINUTE)
        .await
        .expect("findings");
    assert_eq!(
        early
            .iter()
            .map(|f| (
                f.key.as_str(),
                f.status.as_str(),
                f.stage.map(|s| s.as_str())
            ))
            .collect::<Vec<_>>(),
        [("early", "lost", Some("send"))]
    );
    let totals = auditor.store().totals("origin").await.expect("totals");
    assert_eq!(totals.counter("lost", "send"), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn kill_minus_9_in_the_middle_of_a_run_neither_loses_nor_invents_a_finding() {
    let c = cluster();
    let dir = std::env::temp_dir().join(unique("mqaudit-kill9"));
    std::fs::create_dir_all(&dir).expect("dir");
    // 400 one-second windows, each with 3 keys produced, 2 consumed (one twice).
    let end = (now_ms() / 1_000) * 1_000 - 1_000;
    let start = end - 400_000;
    let (mut produced, mut consumed) = (String::new(), String::new());
    for (i, t) in (start..end).step_by(1_000).enumerate() {
        for j in 0..3 {
            produced.push_str(&format!(
                "{{\"key\":\"w{i}-k{j}\",\"time_ms\":{}}}\n",
                t + 10 * j
            ));
        }
        consumed.push_str(&format!(
            "{{\"key\":\"w{i}-k0\",\"time_ms\":{}}}\n{{\"key\":\"w{i}-k0\",\"time_ms\":{}}}\n",
            t + 100,
            t + 200
        ));
        consumed.push_str(&format!(
            "{{\"key\":\"w{i}-k1\",\"time_ms\":{}}}\n",
            t + 300
        ));
    }
    std::fs::write(dir.join("produced.jsonl"), produced).expect("write");
    std::fs::write(dir.join("consumed.jsonl"), consumed).expect("write");
    let mut stores = BTreeMap::new();
    for data in ["control", "crash"] {
        stores.insert(
            data,
            crate::support::store::serve_config(&dir.join(data)).await,
        );
    }
    let config = |data: &str| {
        let path = dir.join(format!("{data}.toml"));
        let (store_lines, env) = &stores[data];
        std::fs::write(
            &path,
            format!(
                "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n\n[audit]\n{store_lines}diagnose_budget = 100000\n\n\
                 [[flow]]\nname = \"crash\"\ncluster = \"test\"\ntopic = \"{}\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n\
                 window_seconds = 1\nsettle_seconds = 0\ndeadline_seconds = 3600\n\
                 produced = {{ kind = \"jsonl\", path = \"{}\" }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
                c.namesrv,
                unique("NoSuchTopic"),
                dir.join("produced.jsonl").display(),
                dir.join("consumed.jsonl").display()
            ),
        )
        .expect("write config");
        (path, env.clone())
    };
    let audit = move |(config, env): &(PathBuf, Vec<(&str, String)>)| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mqaudit"));
        command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        command
            .args([
                "audit",
                "--flow",
                "crash",
                "--once",
                "--from",
                &start.to_string(),
                "--to",
                &end.to_string(),
                "--config",
            ])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    let control = config("control");
    let status = tokio::task::spawn_blocking(move || audit(&control).status())
        .await
        .expect("task")
        .expect("run");
    assert!(status.success());

    // The same run, killed with SIGKILL part-way, then run again.
    let crash = config("crash");
    let mut child = audit(&crash).spawn().expect("spawn");
    let crash_store = crate::support::store::open(&dir.join("crash")).await;
    let mut saw_partial = false;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let saved = crash_store
            .latest_window_end("crash")
            .await
            .expect("read")
            .unwrap_or(start);
        if saved > start + 30_000 {
            saw_partial = saved < end;
            break;
        }
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(
        saw_partial,
        "the run finished before it could be killed: make it longer"
    );
    let status = tokio::task::spawn_blocking(move || audit(&crash).status())
        .await
        .expect("task")
        .expect("run");
    assert!(status.success());

    let control_store = crate::support::store::open(&dir.join("control")).await;
    let facts =
        |findings: Vec<Finding>| -> Vec<(i64, String, String, i64, String, Option<String>)> {
            let mut v: Vec<_> = findings
                .into_iter()
                .map(|f| {
                    (
                        f.window_start_ms,
                        f.key,
                        f.kind.as_str().to_string(),
                        f.count,
                        f.status.as_str().to_string(),
                        f.stage.map(|s| s.as_str().to_string()),
                    )
                })
                .collect();
            v.sort();
            v
        };
    let a = facts(
        control_store
            .findings(Some("crash"), None, None, 1_000_000)
            .await
            .expect("control"),
    );
    let b = facts(
        crash_store
            .findings(Some("crash"), None, None, 1_000_000)
            .await
            .expect("crash"),
    );
    assert_eq!(
        a.len(),
        400 * 2,
        "one missing and one duplicated key per window"
    );
    assert_eq!(
        a, b,
        "findings after kill -9 and a re-run differ from an uninterrupted run"
    );
    let (ta, tb) = (
        control_store.totals("crash").await.expect("totals"),
        crash_store.totals("crash").await.expect("totals"),
    );
    assert_eq!(ta.counters, tb.counters);
    assert_eq!(ta.pending, tb.pending);
    assert_eq!(
        (
            ta.counter("produced", ""),
            ta.pending,
            ta.counter("duplicated", "")
        ),
        (1_200, 400, 400)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_window_past_the_memory_budget_is_reconciled_from_disk_with_the_same_findings() {
    let c = cluster();
    let dir = std::env::temp_dir().join(unique("mqaudit-budget"));
    std::fs::create_dir_all(&dir).expect("dir");
    // One 60 s window of 6,000 keys: 1 in 100 never consumed, 1 in 100
    // consumed twice, 1 in 50 reused by a second message (both consumed),
    // and 10 consumptions of keys nobody produced.
    let n = 6_000;
    let end = (now_ms() / 60_000) * 60_000 - 60_000;
    let start = end - 60_000;
    let (mut produced, mut consumed) = (String::new(), String::new());
    let line = |key: &str, t: i64| format!("{{\"key\":\"{key}\",\"time_ms\":{t}}}\n");
    for i in 0..n {
        let t = start + i * 9;
        let key = format!("order-{i}");
        produced.push_str(&line(&key, t));
        let deliveries = match i % 100 {
            7 => 0,
            3 => 2,
            _ => 1,
        };
        for d in 0..deliveries {
            consumed.push_str(&line(&key, t + 1 + d));
        }
        if i % 50 == 11 {
            produced.push_str(&line(&key, t + 2));
            consumed.push_str(&line(&key, t + 3));
        }
    }
    for j in 0..10 {
        consumed.push_str(&line(&format!("nobody-{j}"), start + 5 + j));
    }
    std::fs::write(dir.join("produced.jsonl"), produced).expect("write");
    std::fs::write(dir.join("consumed.jsonl"), consumed).expect("write");
    let topic = unique("NoSuchTopic");
    let mut stores = BTreeMap::new();
    for name in ["whole", "spilled"] {
        stores.insert(
            name,
            crate::support::store::serve_config(&dir.join(name)).await,
        );
    }
    let run = |name: &str, budget: &str| {
        let data = dir.join(name);
        let (store_lines, env) = &stores[name];
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n\n[audit]\n{store_lines}diagnose_budget = 100000\n{budget}\n\
                 [[flow]]\nname = \"big\"\ncluster = \"test\"\ntopic = \"{topic}\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n\
                 window_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 3600\n\
                 produced = {{ kind = \"jsonl\", path = \"{}\" }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
                c.namesrv,
                dir.join("produced.jsonl").display(),
                dir.join("consumed.jsonl").display()
            ),
        )
        .expect("write config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mqaudit"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["--log.format", "json", "audit", "--flow", "big", "--once"])
            .args(["--from", &start.to_string(), "--to", &end.to_string()])
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run mqaudit audit");
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{name}: {log}");
        (data, log)
    };
    let (whole_dir, whole_log) = run("whole", "");
    let (spilled_dir, spilled_log) = run("spilled", "memory_budget = \"1 MiB\"");
    let spill = "reconciled from disk";
    assert!(!whole_log.contains(spill), "{whole_log}");
    let partitions = spilled_log
        .lines()
        .find(|l| l.contains(spill))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["partitions"].as_u64())
        .unwrap_or_else(|| panic!("no spill logged: {spilled_log}"));
    assert!(partitions >= 2, "{partitions} partitions");
    let leftovers = std::fs::read_dir(spilled_dir.join("spill"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "spill files left behind");

    let facts = |findings: Vec<Finding>| {
        let mut v: Vec<(String, String, i64, String, Option<String>)> = findings
            .into_iter()
            .map(|f| {
                (
                    f.key,
                    f.kind.as_str().to_string(),
                    f.count,
                    f.status.as_str().to_string(),
                    f.stage.map(|s| s.as_str().to_string()),
                )
            })
            .collect();
        v.sort();
        v
    };
    let whole = crate::support::store::open(&whole_dir).await;
    let spilled = crate::support::store::open(&spilled_dir).await;
    let a = facts(
        whole
            .findings(Some("big"), None, None, 100_000)
            .await
            .expect("whole"),
    );
    let b = facts(
        spilled
            .findings(Some("big"), None, None, 100_000)
            .await
            .expect("spilled"),
    );
    let of_kind = |v: &[(String, String, i64, String, Option<String>)], kind: &str| {
        let mut keys: Vec<String> = v
            .iter()
            .filter(|f| f.1 == kind)
            .map(|f| f.0.clone())
            .collect();
        keys.sort();
        keys
    };
    let expected = |r: i64| {
        let mut keys: Vec<String> = (0..n)
            .filter(|i| i % 100 == r)
            .map(|i| format!("order-{i}"))
            .collect();
        keys.sort();
        keys
    };
    // Fixed by construction, not read from the output.
    assert_eq!(of_kind(&a, "missing"), expected(7));
    assert_eq!(of_kind(&a, "duplicated"), expected(3));
    let mut nobody: Vec<String> = (0..10).map(|j| format!("nobody-{j}")).collect();
    nobody.sort();
    assert_eq!(of_kind(&a, "orphaned"), nobody);
    assert_eq!(
        a, b,
        "findings of the spilled window differ from the whole window's"
    );
    let (ta, tb) = (
        whole.totals("big").await.expect("totals"),
        spilled.totals("big").await.expect("totals"),
    );
    assert_eq!(ta.counters, tb.counters);
    let reused = (0..n).filter(|i| i % 50 == 11).count() as i64;
    assert_eq!(ta.counter("produced", ""), n + reused);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Zero `file` from byte `from` to its end.
pub(crate) fn zero_from(file: &Path, from: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let len = f.metadata().expect("metadata").len();
    f.seek(SeekFrom::Start(from)).expect("seek");
    f.write_all(&vec![0u8; (len - from) as usize])
        .expect("zero");
    f.sync_all().expect("sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_loss_after_a_crash_is_named_store_and_counted_as_an_offset_regression() {
    use crate::support::{Daemon, PrivateCluster, free_port};
    let cluster = Arc::new(
        tokio::task::spawn_blocking(PrivateCluster::start)
            .await
            .expect("cluster"),
    );
    let (namesrv, broker_b, store_dir) = (
        cluster.get("NAMESRV_ADDR").to_string(),
        cluster.get("BROKER_B_ADDR").to_string(),
        PathBuf::from(cluster.get("BROKER_B_STORE")),
    );
    let driver = Driver::new();
    let (topic, group) = (unique("Crashed"), unique("CrashedGroup"));
    driver.create_topic(&broker_b, &topic, 1).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(
            driver
                .send(
                    &broker_b,
                    "broker-b",
                    &topic,
                    0,
                    &format!("{topic}-k{i}"),
                    &[b'x'; 100],
                )
                .await,
        );
    }
    // Trace records of the sends (all acknowledged) and of the first 5 consumptions,
    // on broker-a's trace topic (the crash below cuts broker-b only).
    let broker_a = cluster.get("BROKER_A_ADDR").to_string();
    let w0 = (now_ms() / MINUTE) * MINUTE - MINUTE;
    let mut trace_records: Vec<mqaudit::body::trace::TraceRecord> = sent
        .iter()
        .enumerate()
        .map(|(i, s)| pub_record(&topic, s, w0 + 1_000 + i as i64))
        .collect();
    trace_records.extend(
        sent[..5]
            .iter()
            .enumerate()
            .map(|(i, s)| sub_after(&s.msg_id, &s.key, &group, w0 + 20_000 + i as i64)),
    );
    driver
        .write_trace(&broker_a, "broker-a", &trace_records)
        .await;

    // The exporter watches while it happens.
    let listen = format!("127.0.0.1:{}", free_port());
    let _serve = Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_mqaudit"))
            .args([
                "serve",
                "--namesrv",
                &namesrv,
                "--web.listen-address",
                &listen,
                "--collect.interval-seconds",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let max_offset = |listen: String, topic: String| async move {
        let (_, body, _) =
            tokio::task::spawn_blocking(move || crate::exporter::http_get(&listen, "/metrics"))
                .await
                .ok()??;
        let s = crate::exporter::parse_metrics(&body);
        Some((
            crate::exporter::sum(&s, "rocketmq_topic_max_offset", &[("topic", &topic)]),
            crate::exporter::sum(
                &s,
                "rocketmq_topic_offset_regressions_total",
                &[("topic", &topic)],
            ),
        ))
    };
    eventually(20, "the exporter sees 10 messages", || {
        let (l, t) = (listen.clone(), topic.clone());
        async move { (max_offset(l, t).await?.0 == Some(10.0)).then_some(()) }
    })
    .await;

    // Crash broker-b and lose the tail from k5 on, as an unflushed page cache would.
    let cut = mqaudit::audit::diagnose::decode_offset_msg_id(&sent[5].offset_msg_id)
        .expect("offset msg id")
        .1 as u64;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("kill", "broker-b"))
        .await
        .expect("kill");
    zero_from(&store_dir.join("commitlog/00000000000000000000"), cut);
    // rocketmq-rust does not truncate consume queues to the recovered commit log: cut them too (20-byte entries).
    zero_from(
        &store_dir.join(format!("consumequeue/{topic}/0/00000000000000000000")),
        5 * 20,
    );
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("start", "broker-b"))
        .await
        .expect("start");

    let (after, regressions) = eventually(40, "the exporter sees the regression", || {
        let (l, t) = (listen.clone(), topic.clone());
        async move {
            let (max, regressions) = max_offset(l, t).await?;
            (max == Some(5.0) && regressions.is_some_and(|r| r >= 1.0))
                .then_some((max, regressions))
        }
    })
    .await;
    assert_eq!(after, Some(5.0));
    assert!(regressions.is_some_and(|r| r >= 1.0));

    // The same loss, audited three ways: a jsonl ledger, a PostgreSQL outbox
    // and consume log (sql), and the trace records (rocketmq_trace).
    let dir = std::env::temp_dir().join(unique("mqaudit-store-loss"));
    std::fs::create_dir_all(&dir).expect("dir");
    let produced: Vec<(&str, i64, Option<&str>)> = sent
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.key.as_str(),
                w0 + 1_000 + i as i64,
                Some(s.msg_id.as_str()),
            )
        })
        .collect();
    let consumed: Vec<(&str, i64, Option<&str>)> = sent[..5]
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), w0 + 20_000 + i as i64, None))
        .collect();
    let jsonl = Ledger::Jsonl(dir.clone());
    let sql = Ledger::sql().await;
    for ledger in [&jsonl, &sql] {
        ledger.write(true, &produced).await;
        ledger.write(false, &consumed).await;
    }
    let trace_sources = (
        "{ kind = \"rocketmq_trace\" }".to_string(),
        "{ kind = \"rocketmq_trace\" }".to_string(),
    );
    let lost_keys: Vec<String> = sent[5..].iter().map(|s| s.key.clone()).collect();
    for (name, (produced_source, consumed_source), url) in [
        ("jsonl", jsonl.sources(), jsonl.env()),
        ("sql", sql.sources(), sql.env()),
        ("trace", trace_sources, None),
    ] {
        let text = format!(
            "[[cluster]]\nname = \"crash\"\nnamesrv = [\"{namesrv}\"]\n\n[audit]\ndata_dir = \"{}\"\n\n[[flow]]\nname = \"{name}\"\ncluster = \"crash\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\nschedule = \"0 * * * * *\"\nwindow_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\nproduced = {produced_source}\nconsumed = {consumed_source}\n",
            dir.join(format!("data-{name}")).display()
        );
        let env_value = url.clone();
        let config = Config::from_toml_str(&text, |_| env_value.clone().or(Some("unused".into())))
            .expect("config");
        let store = crate::support::store::open(&config.audit.data_dir).await;
        let admin = Admin::new(
            Arc::new(Pool::new(ClientOptions::default())),
            Duration::from_secs(5),
        );
        let auditor = Auditor::new(
            config.flows[0].clone(),
            config.audit.clone(),
            store,
            Cluster::new("crash", vec![namesrv.clone()], admin),
            Clock::system(),
        );
        auditor
            .run(w0 + MINUTE + 600_001, Some((w0, w0 + MINUTE)), &|_, _| {})
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let findings = auditor
            .store()
            .window_findings(name, w0)
            .await
            .expect("findings");
        let expected: BTreeMap<(String, String), Vec<String>> =
            [(("lost".to_string(), "store".to_string()), lost_keys.clone())]
                .into_iter()
                .collect();
        assert_eq!(by_stage(&findings), expected, "{name}: {findings:#?}");
        assert_eq!(
            lost(&auditor.store().totals(name).await.expect("totals")),
            [("store", 5)],
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `expired` uses the protocol fake: the real test broker cannot delete
/// commit-log files on demand. The fake name server routes the topic to a
/// fake broker whose commit log now starts at 1 GiB, which has not got the
/// message (QUERY_MESSAGE finds nothing, on the topic or the DLQ).
#[tokio::test]
async fn an_acknowledged_message_below_the_brokers_min_offset_is_expired_and_above_it_store() {
    use crate::support::fake::{Action, FakePeer, fail, ok};
    let broker = FakePeer::start(|req| match req.code {
        12 => Action::Reply(fail(22, "can not find message")),
        28 => Action::Reply(ok("{\"table\":{\"commitLogMinOffset\":\"1073741824\",\"commitLogMaxOffset\":\"2147483648\"}}")),
        _ => Action::Reply(fail(3, "not supported by the fake")),
    })
    .await;
    let broker_addr = broker.addr.clone();
    let namesrv = FakePeer::start(move |req| match (req.code, req.ext("topic")) {
        (105, Some("Orders")) => Action::Reply(ok(format!(
            "{{\"brokerDatas\":[{{\"brokerAddrs\":{{\"0\":\"{broker_addr}\"}},\"brokerName\":\"broker-x\",\"cluster\":\"c\"}}],\"queueDatas\":[{{\"brokerName\":\"broker-x\",\"perm\":6,\"readQueueNums\":1,\"writeQueueNums\":1,\"topicSysFlag\":0}}]}}"
        ))),
        _ => Action::Reply(fail(17, "topic not exist")),
    })
    .await;
    let port: u16 = broker
        .addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    let offset_msg_id = |offset: u64| format!("7F000001{:08X}{offset:016X}", u32::from(port));
    let admin = Admin::new(
        Arc::new(Pool::new(ClientOptions::default())),
        Duration::from_secs(2),
    );
    let fake_cluster = Cluster::new("fake", vec![namesrv.addr.clone()], admin);
    use mqaudit::audit::diagnose::{ConsumerEvidence, Diagnoser, Verdict};
    use mqaudit::audit::model::{MessageKind, Produced, SendStatus, Stage};
    let mut diagnoser = Diagnoser::new(
        &fake_cluster,
        "Orders",
        "g",
        None,
        ConsumerEvidence::Ledger,
        100,
    );
    let message = |offset_msg_id: Option<String>, status: SendStatus| Produced {
        msg_id: Some("7F0000010000000000000000000000AA".to_string()),
        keys: vec!["order-1".to_string()],
        time_ms: now_ms() - MINUTE,
        offset_msg_id,
        tags: None,
        properties: None,
        status,
        kind: MessageKind::Normal,
        transaction: None,
        batch: false,
    };
    let stage = |d: &mqaudit::audit::diagnose::Diagnosis| match d.verdict {
        Verdict::Missing { stage, .. } => stage,
        Verdict::NotSubscribed | Verdict::Compacted | Verdict::RolledBack => {
            panic!("{:?}", d.evidence)
        }
    };
    let below = message(Some(offset_msg_id(4096)), SendStatus::SendOk);
    let above = message(Some(offset_msg_id(1_500_000_000)), SendStatus::SendOk);
    let expired = diagnoser.diagnose(&below, 0, now_ms()).await;
    assert_eq!(stage(&expired), Stage::Expired, "{:?}", expired.evidence);
    assert_eq!(expired.evidence["commit_log_min_offset"], 1_073_741_824);
    let store = diagnoser.diagnose(&above, 0, now_ms()).await;
    assert_eq!(stage(&store), Stage::Store, "{:?}", store.evidence);
    // Without proof of acknowledgement it was never sent.
    let unsent = Produced {
        msg_id: None,
        offset_msg_id: None,
        ..message(None, SendStatus::Unknown)
    };
    assert_eq!(
        stage(&diagnoser.diagnose(&unsent, 0, now_ms()).await),
        Stage::Send
    );
    // A budget of zero leaves messages undiagnosed (tried again next run).
    let mut broke = Diagnoser::new(
        &fake_cluster,
        "Orders",
        "g",
        None,
        ConsumerEvidence::Ledger,
        0,
    );
    assert_eq!(
        stage(&broke.diagnose(&below, 0, now_ms()).await),
        Stage::Undiagnosed
    );
}

/// A ledger `timestamp` column without a time zone is read in the zone the
/// source names, never guessed as UTC; without one the run fails and says
/// what to set. Consumptions a clock skew before the window count.
#[tokio::test]
async fn ledger_timestamps_without_a_zone_need_one_and_clock_skew_is_allowed() {
    let server = tokio::task::spawn_blocking(crate::support::postgres::Postgres::start)
        .await
        .expect("postgres");
    let pool = sqlx::PgPool::connect(&server.url).await.expect("connect");
    for statement in [
        "CREATE TABLE outbox_local (key text, sent_at timestamp)",
        "CREATE TABLE consume_local (key text, consumed_at timestamp)",
    ] {
        sqlx::query(statement).execute(&pool).await.expect("create");
    }
    let tokyo: chrono_tz::Tz = "Asia/Tokyo".parse().expect("zone");
    let w0 = (now_ms() / MINUTE) * MINUTE - 10 * MINUTE;
    let local = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("time")
            .with_timezone(&tokyo)
            .naive_local()
    };
    // Produced 1 s into the window (Tokyo wall clock); consumed 2 s before
    // the window by a consumer whose clock runs behind.
    for (key, at) in [("tz-1", w0 + 1_000), ("tz-2", w0 + 2_000)] {
        sqlx::query("INSERT INTO outbox_local VALUES ($1, $2)")
            .bind(key)
            .bind(local(at))
            .execute(&pool)
            .await
            .expect("insert");
    }
    for (key, at) in [("tz-1", w0 - 2_000), ("tz-2", w0 + 30_000)] {
        sqlx::query("INSERT INTO consume_local VALUES ($1, $2)")
            .bind(key)
            .bind(local(at))
            .execute(&pool)
            .await
            .expect("insert");
    }
    let dir = std::env::temp_dir().join(unique("mqaudit-tz"));
    let flow = |zone: &str| {
        format!(
            "[[flow]]\nname = \"tz\"\ncluster = \"test\"\ntopic = \"{}\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n\
             window_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\n\
             produced = {{ kind = \"sql\", url_env = \"PG\", {zone}query = \"SELECT key, sent_at FROM outbox_local WHERE sent_at >= $1 AND sent_at < $2\" }}\n\
             consumed = {{ kind = \"sql\", url_env = \"PG\", {zone}query = \"SELECT key, consumed_at FROM consume_local WHERE consumed_at >= $1 AND consumed_at < $2\" }}\n",
            unique("NoSuchTopic")
        )
    };
    let window = Some((w0, w0 + MINUTE));
    // No zone: a clear error, nothing guessed.
    let unzoned = auditor_with_env(&dir.join("unzoned"), &flow(""), Some(server.url.clone())).await;
    let error = unzoned
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect_err("a timestamp without time zone and no zone configured");
    assert!(
        error.to_string().contains("without time zone") && error.to_string().contains("time_zone"),
        "{error}"
    );
    // In Tokyo's zone: both produced in the window, both consumed (tz-1
    // within the allowed clock skew), nothing missing.
    let zoned = auditor_with_env(
        &dir.join("zoned"),
        &flow("time_zone = \"Asia/Tokyo\", "),
        Some(server.url.clone()),
    )
    .await;
    let summary = zoned.run(now_ms(), window, &|_, _| {}).await.expect("run");
    assert_eq!(
        (summary.windows[0].produced, summary.windows[0].consumed),
        (2, 2),
        "{summary:#?}"
    );
    assert!(summary.windows[0].missing.is_empty(), "{summary:#?}");
    // Read as UTC the rows would fall nine hours away: an unknown zone is a
    // configuration error, not a guess.
    let bad = Config::from_toml_str(
        &format!(
            "[[cluster]]\nname = \"test\"\nnamesrv = [\"127.0.0.1:1\"]\n\n{}",
            flow("time_zone = \"Mars/Olympus\", ")
        ),
        |_| Some("x".to_string()),
    )
    .expect_err("unknown zone");
    assert!(bad.to_string().contains("time_zone"), "{bad}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// PostgreSQL restarted while a ledger query runs: the run fails with a
/// clear error naming the source, earlier findings stay as they were, and
/// the next run (new connections) audits the window exactly: the one key
/// never consumed, nothing invented.
#[tokio::test]
async fn postgres_restarted_mid_query_fails_the_run_clearly_and_the_next_run_recovers() {
    let server = std::sync::Arc::new(
        tokio::task::spawn_blocking(crate::support::postgres::Postgres::start)
            .await
            .expect("postgres"),
    );
    let pool = sqlx::PgPool::connect(&server.url).await.expect("connect");
    for statement in [
        "CREATE TABLE outbox (key text, sent_at timestamptz)",
        "CREATE TABLE consumed (key text, consumed_at timestamptz)",
        "CREATE TABLE slow (on_ boolean)",
        "INSERT INTO slow VALUES (false)",
    ] {
        sqlx::query(statement).execute(&pool).await.expect("create");
    }
    let w0 = (now_ms() / MINUTE) * MINUTE - 10 * MINUTE;
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).expect("time");
    for i in 0..5 {
        let key = format!("pg-{i}");
        sqlx::query("INSERT INTO outbox VALUES ($1, $2)")
            .bind(&key)
            .bind(at(w0 + 1_000 + i))
            .execute(&pool)
            .await
            .expect("insert");
        if i != 3 {
            sqlx::query("INSERT INTO consumed VALUES ($1, $2)")
                .bind(&key)
                .bind(at(w0 + 5_000 + i))
                .execute(&pool)
                .await
                .expect("insert");
        }
    }
    pool.close().await;
    // The produced query sleeps 3 s while `slow` says so: long enough to
    // restart the server under it.
    let flow = format!(
        "[[flow]]\nname = \"pg\"\ncluster = \"test\"\ntopic = \"{}\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n\
         window_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\n\
         produced = {{ kind = \"sql\", url_env = \"PG\", query = \"SELECT key, sent_at FROM outbox, (SELECT CASE WHEN on_ THEN pg_sleep(3) END FROM slow) AS pause WHERE sent_at >= $1 AND sent_at < $2\" }}\n\
         consumed = {{ kind = \"sql\", url_env = \"PG\", query = \"SELECT key, consumed_at FROM consumed WHERE consumed_at >= $1 AND consumed_at < $2\" }}\n",
        unique("NoSuchTopic")
    );
    let dir = std::env::temp_dir().join(unique("mqaudit-pg-restart"));
    let auditor = auditor_with_env(&dir, &flow, Some(server.url.clone())).await;
    let window = Some((w0, w0 + MINUTE));
    let summary = auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("first run");
    let missing_keys =
        |findings: &[Finding]| -> Vec<String> { findings.iter().map(|f| f.key.clone()).collect() };
    assert_eq!(
        (summary.windows[0].produced, summary.windows[0].consumed),
        (5, 4),
        "{summary:#?}"
    );
    let before = auditor
        .store()
        .window_findings("pg", w0)
        .await
        .expect("findings");
    assert_eq!(missing_keys(&before), ["pg-3"]);

    // Slow the produced query down, and restart the server under it.
    let admin = sqlx::PgPool::connect(&server.url).await.expect("connect");
    sqlx::query("UPDATE slow SET on_ = true")
        .execute(&admin)
        .await
        .expect("slow on");
    admin.close().await;
    let restarter = server.clone();
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        tokio::task::spawn_blocking(move || restarter.restart())
            .await
            .expect("restart");
    });
    let error = auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect_err("a run whose query the restart cut");
    restart.await.expect("restart task");
    let text = error.to_string();
    eprintln!("the run cut by the restart: {text}");
    assert!(text.contains("produced") && text.contains("sql"), "{text}");
    let kept = auditor
        .store()
        .window_findings("pg", w0)
        .await
        .expect("findings");
    assert_eq!(kept, before, "findings after the failed run");
    let runs = auditor.store().runs(Some("pg"), 1).await.expect("runs");
    assert_eq!(runs[0].result.as_deref(), Some("failure"), "{:?}", runs[0]);

    // Back up (the query still slow, now uncut): the same verdict.
    let summary = auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("run after the restart");
    assert_eq!(
        (summary.windows[0].produced, summary.windows[0].consumed),
        (5, 4),
        "{summary:#?}"
    );
    let after = auditor
        .store()
        .window_findings("pg", w0)
        .await
        .expect("findings");
    assert_eq!(missing_keys(&after), ["pg-3"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A window bigger than one cursor batch (10,000 rows) streams whole from
/// PostgreSQL, and an HTTP source that pages is followed to its last page:
/// the missing keys, spread over every batch and page, are exactly the
/// ones left out by construction.
#[tokio::test]
async fn sql_cursor_batches_and_http_pages_are_read_to_the_end() {
    let server = tokio::task::spawn_blocking(crate::support::postgres::Postgres::start)
        .await
        .expect("postgres");
    let pool = sqlx::PgPool::connect(&server.url).await.expect("connect");
    let w0 = (now_ms() / MINUTE) * MINUTE - 10 * MINUTE;
    let rows = 25_003_i64;
    for statement in [
        "CREATE TABLE outbox_big (key text, sent_at bigint)".to_string(),
        "CREATE TABLE consume_big (key text, consumed_at bigint)".to_string(),
        format!(
            "INSERT INTO outbox_big SELECT 'big-' || i, {w0} + i % 60000 FROM generate_series(0, {}) i",
            rows - 1
        ),
        // Every key but i % 10000 == 17: three missing, one per batch.
        format!(
            "INSERT INTO consume_big SELECT 'big-' || i, {w0} + i % 60000 FROM generate_series(0, {}) i WHERE i % 10000 <> 17",
            rows - 1
        ),
    ] {
        sqlx::query(&statement).execute(&pool).await.expect("load");
    }
    let dir = std::env::temp_dir().join(unique("mqaudit-big-sql"));
    std::fs::create_dir_all(&dir).expect("dir");
    let flow = format!(
        "[[flow]]\nname = \"big\"\ncluster = \"test\"\ntopic = \"{}\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n\
         window_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\n\
         produced = {{ kind = \"sql\", url_env = \"PG\", query = \"SELECT key, sent_at FROM outbox_big WHERE sent_at >= (extract(epoch from $1::timestamptz) * 1000)::bigint AND sent_at < (extract(epoch from $2::timestamptz) * 1000)::bigint;\" }}\n\
         consumed = {{ kind = \"sql\", url_env = \"PG\", query = \"SELECT key, consumed_at FROM consume_big WHERE consumed_at >= (extract(epoch from $1::timestamptz) * 1000)::bigint AND consumed_at < (extract(epoch from $2::timestamptz) * 1000)::bigint\" }}\n",
        unique("NoSuchTopic")
    );
    let auditor = auditor_with_env(&dir, &flow, Some(server.url.clone())).await;
    let window = Some((w0, w0 + MINUTE));
    let summary = auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("run");
    assert_eq!(
        summary.windows[0].produced, rows as u64,
        "every row through the cursor"
    );
    assert_eq!(summary.windows[0].consumed, rows as u64 - 3);
    let missing = |findings: &[Finding]| {
        let mut keys: Vec<String> = findings
            .iter()
            .filter(|f| f.kind == FindingKind::Missing)
            .map(|f| f.key.clone())
            .collect();
        keys.sort();
        keys
    };
    let findings = auditor
        .store()
        .window_findings("big", w0)
        .await
        .expect("findings");
    assert_eq!(missing(&findings), ["big-10017", "big-17", "big-20017"]);

    // HTTP pages: five records over three pages; the consumer saw the
    // first page's two only.
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = |i: i64| format!("{{\"key\":\"page-{i}\",\"time_ms\":{}}}", w0 + 1_000 + i);
    let pages: BTreeMap<&str, String> = [
        (
            "",
            format!(
                "{{\"records\":[{},{}],\"next\":\"p2\"}}",
                record(0),
                record(1)
            ),
        ),
        (
            "cursor=p2",
            format!(
                "{{\"records\":[{},{}],\"next\":\"p 3&\"}}",
                record(2),
                record(3)
            ),
        ),
        (
            "cursor=p+3%26",
            format!("{{\"records\":[{}],\"next\":null}}", record(4)),
        ),
    ]
    .into_iter()
    .collect();
    std::thread::spawn({
        let asked = asked.clone();
        move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let target = request.split_whitespace().nth(1).unwrap_or("").to_string();
                asked.lock().expect("lock").push(target.clone());
                let cursor = target
                    .split(['?', '&'])
                    .find(|p| p.starts_with("cursor="))
                    .unwrap_or("");
                let body = pages.get(cursor).cloned().unwrap_or_default();
                let _ = reader.into_inner().write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        }
    });
    let consumed = dir.join("paged-consumed.jsonl");
    std::fs::write(&consumed, format!("{}\n{}\n", record(0), record(1))).expect("write");
    let paged = auditor_with_env(
        &dir.join("paged"),
        &format!(
            "[[flow]]\nname = \"paged\"\ncluster = \"test\"\ntopic = \"{}\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n\
             window_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\n\
             produced = {{ kind = \"http\", url = \"http://{addr}/records\", timeout_seconds = 5 }}\n\
             consumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
            unique("NoSuchTopic"),
            consumed.display()
        ),
        None,
    )
    .await;
    let summary = paged
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("paged run");
    assert_eq!(summary.windows[0].produced, 5, "{summary:#?}");
    let findings = paged
        .store()
        .window_findings("paged", w0)
        .await
        .expect("findings");
    assert_eq!(missing(&findings), ["page-2", "page-3", "page-4"]);
    let asked = asked.lock().expect("lock").clone();
    assert_eq!(asked.len(), 3, "one request per page: {asked:?}");
    assert!(
        asked
            .iter()
            .all(|a| a.contains(&format!("from={w0}&to={}", w0 + MINUTE))),
        "every page asks for the same window: {asked:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A message the group passed without a consume record is lost at
/// `consume` only while nothing says otherwise: a retry copy waiting out
/// its delay (bound for `%RETRY%group`) is `retrying`, and a DLQ copy that
/// appears after the verdict (a consumer still retrying under load, an
/// index that lags) turns it into `dead_letter` on the next run. Run in the
/// Java legs too (scripts/test.sh): the DLQ and delay topic are then the
/// Java broker's own.
#[tokio::test]
async fn a_consume_loss_is_re_checked_for_a_late_dead_letter_copy_and_a_delayed_retry_is_retrying()
{
    let c = cluster();
    let driver = Driver::new();
    let (topic, group) = (unique("LateDlq"), unique("LateDlqGroup"));
    driver.create_topic(&c.broker_a, &topic, 1).await;
    driver.heartbeat(&c.broker_a, &group, &[&topic]).await;
    let queue = MessageQueue {
        topic: topic.clone(),
        broker_name: "broker-a".into(),
        queue_id: 0,
    };
    let (late_dlq, delayed) = (format!("{topic}-late-dlq"), format!("{topic}-delayed"));
    let sent_dlq = driver
        .send(&c.broker_a, "broker-a", &topic, 0, &late_dlq, b"x")
        .await;
    let sent_delayed = driver
        .send(&c.broker_a, "broker-a", &topic, 0, &delayed, b"x")
        .await;
    // The consumer acknowledged both and recorded neither.
    driver.commit(&c.broker_a, &group, &queue, 2).await;
    let pulled = eventually(15, "both pullable", || async {
        let m = driver.pull(&c.broker_a, &group, &queue, 0, 2).await;
        (m.len() == 2).then_some(m)
    })
    .await;
    // `delayed` failed once: sent back for a retry two hours on (level 18),
    // so its copy stays in the delay topic for the whole test.
    driver
        .send_back(&c.broker_a, &group, &pulled[1], 18, 16)
        .await;
    let indexed = |t: String, k: String| {
        let driver = &driver;
        let broker = c.broker_a.clone();
        async move {
            let found = driver
                .admin
                .query_message_by_key(&broker, &t, &k, now_ms() - 10 * MINUTE, now_ms() + MINUTE)
                .await
                .ok()?;
            (!found.is_empty()).then_some(())
        }
    };
    eventually(15, "the delayed retry copy indexed", || {
        indexed("SCHEDULE_TOPIC_XXXX".to_string(), delayed.clone())
    })
    .await;

    let dir = std::env::temp_dir().join(unique("mqaudit-late-dlq"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (produced, consumed) = (dir.join("produced.jsonl"), dir.join("consumed.jsonl"));
    // The window two minutes back: past its 30 s deadline.
    let w0 = (now_ms() / MINUTE) * MINUTE - 2 * MINUTE;
    write_ledger(
        &produced,
        &[
            (&late_dlq, w0 + 1_000, Some(&sent_dlq.msg_id)),
            (&delayed, w0 + 2_000, Some(&sent_delayed.msg_id)),
        ],
    );
    write_ledger(&consumed, &[]);
    let flow = format!(
        "[[flow]]\nname = \"late-dlq\"\ncluster = \"test\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\n\
         schedule = \"0 * * * * *\"\nwindow_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 30\n\
         produced = {{ kind = \"jsonl\", path = \"{}\" }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
        produced.display(),
        consumed.display()
    );
    let auditor = auditor(&dir, &flow).await;
    let window = Some((w0, w0 + MINUTE));
    let findings = || async {
        by_stage(
            &auditor
                .store()
                .window_findings("late-dlq", w0)
                .await
                .expect("findings"),
        )
    };

    auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("run 1");
    assert_eq!(
        findings().await,
        stages(&[
            ("lost", "consume", late_dlq.clone()),
            ("lost", "retrying", delayed.clone()),
        ])
    );

    // The consumer's last attempt fails: `late-dlq` goes to the DLQ.
    driver
        .send_back(&c.broker_a, &group, &pulled[0], -1, 16)
        .await;
    eventually(15, "the DLQ copy indexed", || {
        indexed(format!("%DLQ%{group}"), late_dlq.clone())
    })
    .await;
    let summary = auditor
        .run(now_ms(), window, &|_, _| {})
        .await
        .expect("run 2");
    assert!(!summary.windows[0].final_, "{summary:#?}");
    assert_eq!(
        findings().await,
        stages(&[
            ("dead_letter", "dead_letter", late_dlq.clone()),
            ("lost", "retrying", delayed.clone()),
        ])
    );
    // The evidence names the copies found.
    let stored = auditor
        .store()
        .window_findings("late-dlq", w0)
        .await
        .expect("findings");
    let copy = |key: &str| {
        let f = stored.iter().find(|f| f.key == key).expect("finding");
        f.evidence.as_ref().expect("evidence")["copy"].clone()
    };
    assert_eq!(copy(&late_dlq)["topic"], format!("%DLQ%{group}"));
    assert_eq!(
        (
            copy(&delayed)["topic"].clone(),
            copy(&delayed)["bound_for"].clone()
        ),
        (
            serde_json::json!("SCHEDULE_TOPIC_XXXX"),
            serde_json::json!(format!("%RETRY%{group}"))
        )
    );
    let totals = auditor.store().totals("late-dlq").await.expect("totals");
    // Counted lost once at the verdict (counters never go down), and
    // dead-lettered once at the correction.
    assert_eq!(
        (
            totals.counter("lost", "consume"),
            totals.counter("lost", "retrying"),
            totals.counter("dead_lettered", "")
        ),
        (1, 1, 1),
        "{totals:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 5.x consumer's `SubBefore` often lands in another trace message than
/// its `SubAfter`: a run meets hundreds of halves, many to a statement.
/// Whether the pair is in one round's pulls, in two queues, or in two runs,
/// across statement boundaries, with a duplicate half: each consumption is
/// written once, with the `SubBefore`'s time and attempt and the
/// `SubAfter`'s outcome, and only the halves still alone wait (on SQLite,
/// and on PostgreSQL in the suite's second pass).
#[tokio::test]
async fn split_consumption_halves_meet_in_bulk_within_a_round_and_across_runs() {
    use mqaudit::audit::store::{Cursor, HalfKind, SubHalf, TracePull, TraceSide};
    let dir = std::env::temp_dir().join(unique("mqaudit-halves"));
    let store = crate::support::store::open(&dir.join("data")).await;
    // Consumption i: request r{i/10}, message m{i}; its SubBefore at
    // 10_000 + i, attempt i % 3; its SubAfter fails when i % 7 == 0 and
    // names keys only for odd i (then the SubBefore's keys stand).
    let before = |i: i64| SubHalf {
        kind: HalfKind::Before,
        request_id: format!("r{}", i / 10),
        msg_id: format!("m{i}"),
        time_ms: 10_000 + i,
        retry_times: i32::try_from(i % 3).expect("small"),
        keys: format!("b{i}"),
        success: false,
    };
    let after = |i: i64| SubHalf {
        kind: HalfKind::After,
        request_id: format!("r{}", i / 10),
        msg_id: format!("m{i}"),
        time_ms: 50_000 + i,
        retry_times: 0,
        keys: if i % 2 == 1 {
            format!("a{i}")
        } else {
            String::new()
        },
        success: i % 7 != 0,
    };
    let expected = |i: i64| {
        (
            format!("m{i}"),
            10_000 + i,
            i % 7 != 0,
            i32::try_from(i % 3).expect("small"),
            if i % 2 == 1 {
                format!("a{i}")
            } else {
                format!("b{i}")
            },
        )
    };
    let at = |queue_id| Cursor {
        flow: "f",
        source: "trace",
        broker: "broker-a",
        queue_id,
    };
    let consumed = |rows: Vec<mqaudit::audit::store::TraceRow>| {
        let mut got: Vec<_> = rows
            .into_iter()
            .map(|r| (r.msg_id, r.time_ms, r.success, r.reconsume, r.keys))
            .collect();
        got.sort_by_key(|g| g.1);
        got
    };
    // Run 1, one round of two queues: 0..100 meet within it (the SubBefore
    // in queue 0 or 1, the SubAfter in queue 1, m50's SubBefore twice);
    // 100..200 are SubBefores alone.
    let queue_0: Vec<SubHalf> = (0..150).map(before).collect();
    let queue_1: Vec<SubHalf> = (150..200)
        .map(before)
        .chain(std::iter::once(before(50)))
        .chain((0..100).map(after))
        .collect();
    let written = store
        .ingest_trace_pulls(&[
            TracePull {
                cursor: at(0),
                rows: &[],
                halves: &queue_0,
                next_offset: 1,
                caught_up_ms: None,
            },
            TracePull {
                cursor: at(1),
                rows: &[],
                halves: &queue_1,
                next_offset: 1,
                caught_up_ms: None,
            },
        ])
        .await
        .expect("run 1");
    assert_eq!(
        written.consumed_from_ms,
        Some(10_000),
        "run 1 wrote from m0"
    );
    let subs = store
        .trace_rows("f", TraceSide::Sub, 0, i64::MAX)
        .await
        .expect("subs");
    assert_eq!(consumed(subs), (0..100).map(expected).collect::<Vec<_>>());
    assert_eq!(
        store.stats().await.expect("stats").rows["trace_halves"],
        100
    );

    // Run 2: 100..200's SubAfters meet the stored SubBefores; 200..300's
    // SubAfters wait.
    let queue_0: Vec<SubHalf> = (100..300).map(after).collect();
    let written = store
        .ingest_trace_pulls(&[TracePull {
            cursor: at(0),
            rows: &[],
            halves: &queue_0,
            next_offset: 2,
            caught_up_ms: None,
        }])
        .await
        .expect("run 2");
    assert_eq!(
        written.consumed_from_ms,
        Some(10_100),
        "run 2 wrote from m100"
    );
    let subs = store
        .trace_rows("f", TraceSide::Sub, 0, i64::MAX)
        .await
        .expect("subs");
    assert_eq!(consumed(subs), (0..200).map(expected).collect::<Vec<_>>());
    assert_eq!(
        store.stats().await.expect("stats").rows["trace_halves"],
        100
    );
    assert_eq!(
        store.forget_halves("f", i64::MAX).await.expect("forget"),
        100,
        "the SubAfters of 200..300 wait"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
