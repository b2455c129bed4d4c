//! End to end through real Prometheus and Alertmanager (Debian packages):
//! mqaudit watches a private real cluster, Prometheus scrapes it with the
//! shipped rules (only `for:` durations shortened so the test takes seconds),
//! Alertmanager delivers to a webhook this test serves. broker-b is killed:
//! RocketMQBrokerDown fires in Prometheus and reaches the webhook; broker-b
//! restarts: the alert resolves and the resolution reaches the webhook. Every
//! dashboard panel query then evaluates through Prometheus's HTTP API.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqaudit::body::json::MessageQueue;
use serde_json::Value;

use crate::exporter::http_get;
use crate::support::driver::Driver;
use crate::support::{Daemon, PrivateCluster, eventually, free_port, unique};

/// Panels with no data in a healthy cluster, and why. Each must still evaluate.
const EMPTY_WHEN_HEALTHY: &[(&str, &str)] = &[
    (
        "Since last successful audit",
        "no audit flow configured (the audit families come with the loss audit)",
    ),
    ("Lost by stage", "no audit flow configured"),
    ("Pending", "no audit flow configured"),
    ("Produced and consumed", "no audit flow configured"),
    ("Duplicated and orphaned", "no audit flow configured"),
    ("Audit runs by result", "no audit flow configured"),
    (
        "Transactions discarded",
        "no transaction was discarded: a healthy cluster's normal state (tests/it/core.rs drives one)",
    ),
    (
        "Controller: up and leader (5.x controller mode)",
        "no broker runs in controller mode (tests/it/java_controller.rs drives the real 5.3.3 controller)",
    ),
    (
        "POP groups: lag (a lower bound)",
        "no group pops on rocketmq-rust (tests/it/java_pop.rs evaluates this panel through Prometheus on 5.3.3)",
    ),
    (
        "In-sync replicas by broker set (5.x controller mode)",
        "no broker runs in controller mode (the rendering is unit-tested in collector::controller)",
    ),
];

/// Percent-encode a query parameter (every byte but ASCII letters and digits).
pub(crate) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A webhook receiver: records every POST body.
fn webhook(port: u16) -> Arc<Mutex<Vec<String>>> {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind webhook");
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                store
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    received
}

pub(crate) fn spawn(program: &str, args: &[String], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).expect("log file");
    Daemon(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{program} is required (Debian packages prometheus, prometheus-alertmanager): {e}")),
    )
}

/// The shipped rules with every `for:` shortened to 2 s.
fn fast_rules(dir: &Path) -> PathBuf {
    let rules = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("alerts/mqaudit.rules.yml"),
    )
    .expect("rules");
    let fast: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for: ") {
                format!("{}for: 2s", &l[..l.find("for:").unwrap_or(0)])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("rules.yml");
    std::fs::write(&path, fast).expect("write rules");
    path
}

pub(crate) fn prometheus_query(addr: &str, query: &str) -> Value {
    let encoded = url_encode(query);
    let (status, body, _) = http_get(addr, &format!("/api/v1/query?query={encoded}"))
        .unwrap_or_else(|| panic!("query {query}"));
    let value: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {query}: {e}: {body}"));
    assert_eq!(
        (status, value["status"].as_str()),
        (200, Some("success")),
        "query {query}: {body}"
    );
    value
}

fn firing_broker_down(addr: &str) -> bool {
    firing(addr, "RocketMQBrokerDown")
}

/// `alert` is firing in Prometheus for broker-b.
fn firing(addr: &str, alert: &str) -> bool {
    let (_, body, _) = http_get(addr, "/api/v1/alerts").expect("alerts API");
    let value: Value = serde_json::from_str(&body).expect("alerts JSON");
    value["data"]["alerts"].as_array().is_some_and(|alerts| {
        alerts.iter().any(|a| {
            a["labels"]["alertname"] == alert
                && a["labels"]["broker"] == "broker-b"
                && a["state"] == "firing"
        })
    })
}

fn delivered(received: &Arc<Mutex<Vec<String>>>, status: &str) -> bool {
    received.lock().expect("lock").iter().any(|body| {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        v["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "RocketMQBrokerDown"
                    && a["labels"]["broker"] == "broker-b"
                    && a["status"] == status
            })
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_travels_from_a_real_broker_failure_to_the_webhook_and_resolves() {
    let cluster = tokio::task::spawn_blocking(PrivateCluster::start)
        .await
        .expect("cluster");
    let dir = std::env::temp_dir().join(unique("mqaudit-alerting"));
    std::fs::create_dir_all(&dir).expect("dir");

    // A workload so consumer panels have data: lag and a dead-lettered message.
    let driver = Driver::new();
    let (broker_a, namesrv) = (
        cluster.get("BROKER_A_ADDR").to_string(),
        cluster.get("NAMESRV_ADDR").to_string(),
    );
    let (topic, group) = (unique("Alerted"), unique("AlertedGroup"));
    driver.create_topic(&broker_a, &topic, 1).await;
    for i in 0..6 {
        driver
            .send(&broker_a, "broker-a", &topic, 0, &format!("al-{i}"), b"x")
            .await;
    }
    let queue = MessageQueue {
        topic: topic.clone(),
        broker_name: "broker-a".into(),
        queue_id: 0,
    };
    driver.heartbeat(&broker_a, &group, &[&topic]).await;
    let first = eventually(15, "pullable", || async {
        let m = driver.pull(&broker_a, &group, &queue, 0, 1).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    driver.send_back(&broker_a, &group, &first[0], -1, 16).await;
    driver.commit(&broker_a, &group, &queue, 2).await;

    let (mq_port, am_port, prom_port, hook_port) =
        (free_port(), free_port(), free_port(), free_port());
    let received = webhook(hook_port);
    let mqaudit_addr = format!("127.0.0.1:{mq_port}");
    // The end-to-end probe runs too, so its dashboard panels are checked
    // on real data.
    let config = dir.join("mqaudit.toml");
    std::fs::write(
        &config,
        format!(
            "[[cluster]]\nname = \"alerting\"\nnamesrv = [\"{namesrv}\"]\n[cluster.probe]\nenabled = true\ntopic = \"{}\"\ninterval_seconds = 1\ndeadline_seconds = 5\n",
            unique("AlertProbe")
        ),
    )
    .expect("mqaudit config");
    let _mqaudit = spawn(
        env!("CARGO_BIN_EXE_mqaudit"),
        &[
            "serve",
            "--config",
            config.to_str().expect("utf-8"),
            "--web.listen-address",
            &mqaudit_addr,
            "--collect.interval-seconds",
            "1",
        ]
        .map(String::from),
        &dir.join("mqaudit.log"),
    );
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, broker]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/\n        send_resolved: true\n"
        ),
    )
    .expect("write");
    let am_addr = format!("127.0.0.1:{am_port}");
    let _alertmanager = spawn(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address={am_addr}"),
            "--cluster.listen-address=".to_string(),
        ],
        &dir.join("alertmanager.log"),
    );
    let rules = fast_rules(&dir);
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am_addr}']\nscrape_configs:\n  - job_name: mqaudit\n    static_configs:\n      - targets: ['{mqaudit_addr}']\n",
            rules.display()
        ),
    )
    .expect("write");
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address={prom_addr}"),
        ],
        &dir.join("prometheus.log"),
    );

    let prom = prom_addr.clone();
    let ready = tokio::task::spawn_blocking(move || {
        for _ in 0..600 {
            let v = prometheus_query_soft(&prom, "sum(rocketmq_broker_up)");
            if v == Some(3.0) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    })
    .await
    .expect("task");
    assert!(
        ready,
        "Prometheus never saw the three brokers up; logs in {}",
        dir.display()
    );
    // Let rate windows fill before evaluating the dashboards.
    tokio::time::sleep(Duration::from_secs(12)).await;

    // Every dashboard panel query evaluates; all but the documented ones have data.
    let prom = prom_addr.clone();
    tokio::task::spawn_blocking(move || check_dashboards(&prom))
        .await
        .expect("dashboards");

    // Kill broker-b: the alert fires in Prometheus and is delivered.
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("kill", "broker-b"))
        .await
        .expect("kill");
    let prom = prom_addr.clone();
    eventually(60, "RocketMQBrokerDown firing in Prometheus", || {
        let prom = prom.clone();
        async move {
            tokio::task::spawn_blocking(move || firing_broker_down(&prom))
                .await
                .ok()?
                .then_some(())
        }
    })
    .await;
    // The probe's sends to it fail: its own alert fires too.
    let prom = prom_addr.clone();
    eventually(60, "MqauditProbeSendFailing firing in Prometheus", || {
        let prom = prom.clone();
        async move {
            tokio::task::spawn_blocking(move || firing(&prom, "MqauditProbeSendFailing"))
                .await
                .ok()?
                .then_some(())
        }
    })
    .await;
    eventually(60, "the firing alert delivered to the webhook", || {
        let received = received.clone();
        async move { delivered(&received, "firing").then_some(()) }
    })
    .await;

    // Restart broker-b: the alert resolves and the resolution is delivered.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("start", "broker-b"))
        .await
        .expect("start");
    let prom = prom_addr.clone();
    eventually(90, "RocketMQBrokerDown resolved in Prometheus", || {
        let prom = prom.clone();
        async move {
            (!tokio::task::spawn_blocking(move || firing_broker_down(&prom))
                .await
                .ok()?)
            .then_some(())
        }
    })
    .await;
    eventually(60, "the resolution delivered to the webhook", || {
        let received = received.clone();
        async move { delivered(&received, "resolved").then_some(()) }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn prometheus_query_soft(addr: &str, query: &str) -> Option<f64> {
    let encoded = url_encode(query);
    let (_, body, _) = http_get(addr, &format!("/api/v1/query?query={encoded}"))?;
    let value: Value = serde_json::from_str(&body).ok()?;
    value["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// A dashboard panel's first query as Grafana would send it with every
/// variable at "all".
pub(crate) fn panel_query(dashboard: &str, title: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("dashboards")
        .join(dashboard);
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let panel = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?} in {dashboard}"));
    grafana_to_promql(panel["targets"][0]["expr"].as_str().expect("expr"))
}

fn grafana_to_promql(expr: &str) -> String {
    ["$rocketmq_cluster", "$broker", "$topic", "$group", "$flow"]
        .iter()
        .fold(expr.to_string(), |q, var| q.replace(var, ".*"))
        .replace("$__rate_interval", "10s")
        .replace("$__range", "1m")
}

fn check_dashboards(prom: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut empty = BTreeSet::new();
    let mut evaluated = 0;
    for entry in std::fs::read_dir(dir).expect("dashboards") {
        let path = entry.expect("entry").path();
        let dash: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        for panel in dash["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().expect("title");
            let mut has_data = false;
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                let query = grafana_to_promql(expr);
                let value = prometheus_query(prom, &query);
                evaluated += 1;
                has_data |= value["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty());
            }
            if !has_data {
                empty.insert(title.to_string());
            }
        }
        // Every variable's values resolve too.
        for variable in dash["templating"]["list"].as_array().expect("variables") {
            let Some(definition) = variable["definition"].as_str() else {
                continue;
            };
            let inner = definition
                .trim_start_matches("label_values(")
                .trim_end_matches(')');
            let (selector, label) = inner
                .rsplit_once(',')
                .expect("label_values(selector, label)");
            let selector = selector.replace("$rocketmq_cluster", ".*");
            let encoded = url_encode(&selector);
            let (status, body, _) = http_get(
                prom,
                &format!("/api/v1/label/{}/values?match[]={encoded}", label.trim()),
            )
            .expect("label values");
            let values: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(status, 200, "{body}");
            let documented_empty = label.trim() == "flow";
            assert!(
                documented_empty || values["data"].as_array().is_some_and(|v| !v.is_empty()),
                "variable {} has no values: {body}",
                variable["name"]
            );
        }
    }
    let expected: BTreeSet<String> = EMPTY_WHEN_HEALTHY
        .iter()
        .map(|(t, _)| t.to_string())
        .collect();
    assert_eq!(
        empty, expected,
        "panels without data differ from the documented list"
    );
    assert!(evaluated >= 30, "only {evaluated} queries");
}
