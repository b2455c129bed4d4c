//! The exporter as an operator runs it: `mqaudit serve --namesrv ...` with no
//! config file, against a private real cluster (started by
//! scripts/rocketmq-cluster.sh so killing a broker cannot disturb other
//! tests), after a known workload; then broker-b is killed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mqaudit::body::json::MessageQueue;

use crate::support::driver::Driver;
use crate::support::{
    Daemon, PrivateCluster, eventually, eventually_explained, free_port, script, unique,
};

/// `/metrics`, parsed; an error unless it is a 200 answered within 1 s.
pub fn scrape_within_1s(listen: &str) -> Result<Vec<Sample>, String> {
    let (code, body, took) = http_get(listen, "/metrics").ok_or("no answer")?;
    if code != 200 {
        return Err(format!("HTTP {code}"));
    }
    if took >= Duration::from_secs(1) {
        return Err(format!("scrape took {took:?}"));
    }
    Ok(parse_metrics(&body))
}

/// Plain HTTP GET; returns status, body and how long it took.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String, Duration)> {
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    // hyper may chunk the body; undo chunked framing for the test's reading.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body, started.elapsed()))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2.min(rest.len() - n)..];
    }
    out
}

/// One sample: name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parse exposition text (only what the exporter writes: no timestamps).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().expect("sample value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels = BTreeMap::new();
                let body = rest.trim_end_matches('}');
                let mut rest = body;
                while let Some((key, after)) = rest.split_once("=\"") {
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let mut end = after.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, e)) = chars.next() {
                                    value.push(if e == 'n' { '\n' } else { e });
                                }
                            }
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    labels.insert(key.trim_start_matches(',').to_string(), value);
                    rest = &after[end..];
                }
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// Sum of `name` over samples whose labels include every pair of `filter`.
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && filter
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required (Debian package prometheus; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("promtool");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool check metrics: {complaints}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_config_exports_a_known_workload_and_survives_broker_b_dying() {
    let cluster = tokio::task::spawn_blocking(PrivateCluster::start)
        .await
        .expect("start");
    let (namesrv, broker_a, broker_b) = (
        cluster.get("NAMESRV_ADDR"),
        cluster.get("BROKER_A_ADDR"),
        cluster.get("BROKER_B_ADDR"),
    );
    let driver = Driver::new();
    let topic = unique("Exported");
    let (group, dead_group) = (unique("ExportedGroup"), unique("DeadGroup"));
    driver.create_topic(broker_a, &topic, 2).await;
    driver.create_topic(broker_b, &topic, 2).await;
    for i in 0..20 {
        let (addr, name) = if i % 2 == 0 {
            (broker_a, "broker-a")
        } else {
            (broker_b, "broker-b")
        };
        driver
            .send(addr, name, &topic, i / 2 % 2, &format!("exp-{i}"), b"x")
            .await;
    }
    let q = |broker: &str, id| MessageQueue {
        topic: topic.clone(),
        broker_name: broker.to_string(),
        queue_id: id,
    };
    // The group (registered by a heartbeat, as a consumer would) commits k = 3 + 1 + 2 + 0 = 6 of 20.
    driver.heartbeat(broker_a, &group, &[&topic]).await;
    driver.heartbeat(broker_b, &group, &[&topic]).await;
    for (addr, broker, id, offset) in [
        (broker_a, "broker-a", 0, 3),
        (broker_a, "broker-a", 1, 1),
        (broker_b, "broker-b", 0, 2),
        (broker_b, "broker-b", 1, 0),
    ] {
        driver.commit(addr, &group, &q(broker, id), offset).await;
    }
    // Another group dead-letters 3 messages of broker-b.
    let messages = eventually(15, "broker-b messages pullable", || async {
        let m = driver
            .pull_all(broker_b, &dead_group, &q("broker-b", 0), 0)
            .await;
        (m.len() == 5).then_some(m)
    })
    .await;
    for m in &messages[..3] {
        driver.send_back(broker_b, &dead_group, m, -1, 16).await;
    }

    let listen = format!("127.0.0.1:{}", free_port());
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mqaudit"))
            .args([
                "serve",
                "--namesrv",
                namesrv,
                "--web.listen-address",
                &listen,
                // A cycle budget a loaded two-core host with three JVM
                // brokers meets every cycle.
                "--collect.interval-seconds",
                "2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mqaudit serve"),
    );

    let settled = eventually_explained(60, "the exporter to report the workload", || async {
        let (status, body, _) =
            http_get(&listen, "/metrics").ok_or_else(|| "no answer".to_string())?;
        assert_eq!(status, 200);
        let s = parse_metrics(&body);
        let seen = [
            (
                "max offsets",
                sum(&s, "rocketmq_topic_max_offset", &[("topic", &topic)]),
                Some(20.0),
            ),
            (
                "lag",
                sum(
                    &s,
                    "rocketmq_consumer_group_lag_messages",
                    &[("group", &group), ("topic", &topic)],
                ),
                Some(14.0),
            ),
            (
                "dlq",
                sum(
                    &s,
                    "rocketmq_consumer_group_dlq_messages",
                    &[("group", &dead_group)],
                ),
                Some(3.0),
            ),
            (
                "replication lag",
                sum(
                    &s,
                    "rocketmq_broker_replication_lag_bytes",
                    &[("broker", "broker-a"), ("broker_id", "1")],
                ),
                Some(0.0),
            ),
            // A cycle in which every collector finished within its budget.
            (
                "collectors succeeding",
                sum(&s, "mqaudit_collector_success", &[]),
                Some(8.0),
            ),
        ];
        let wrong: Vec<String> = seen
            .iter()
            .filter(|(_, got, want)| got != want)
            .map(|(what, got, want)| format!("{what} {got:?} (want {want:?})"))
            .collect();
        // Dated by a pull in a cycle that had time for it (a cold JVM
        // broker can spend a first cycle's budget before the pulls).
        let dated = sum(
            &s,
            "rocketmq_consumer_group_lag_seconds",
            &[("group", &group), ("topic", &topic)],
        )
        .is_some();
        if wrong.is_empty() && dated {
            Ok(body)
        } else {
            Err(format!("{wrong:?}, lag dated: {dated}"))
        }
    })
    .await;
    let s = parse_metrics(&settled);
    promtool_check(&settled);
    // docs/metrics.md documents every family the exporter really emits.
    let docs =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .expect("docs/metrics.md");
    for (name, _, _) in &s {
        assert!(
            docs.contains(&format!("`{name}`")),
            "docs/metrics.md does not document {name}"
        );
    }
    // Per-topic max offsets sum to the messages sent, 10 on each broker.
    assert_eq!(
        sum(
            &s,
            "rocketmq_topic_max_offset",
            &[("topic", &topic), ("broker", "broker-a")]
        ),
        Some(10.0)
    );
    assert_eq!(
        sum(
            &s,
            "rocketmq_topic_max_offset",
            &[("topic", &topic), ("broker", "broker-b")]
        ),
        Some(10.0)
    );
    assert_eq!(
        sum(
            &s,
            "rocketmq_consumer_group_offset",
            &[("group", &group), ("topic", &topic)]
        ),
        Some(6.0)
    );
    assert_eq!(
        sum(
            &s,
            "rocketmq_consumer_group_lag_messages",
            &[("group", &group), ("broker", "broker-a")]
        ),
        Some(6.0)
    );
    for (broker, id) in [("broker-a", "0"), ("broker-a", "1"), ("broker-b", "0")] {
        assert_eq!(
            sum(
                &s,
                "rocketmq_broker_up",
                &[("broker", broker), ("broker_id", id)]
            ),
            Some(1.0),
            "{broker}/{id}"
        );
    }
    let risks = |broker: &str| -> Vec<String> {
        s.iter()
            .filter(|(n, l, v)| {
                n == "rocketmq_broker_durability_risk" && l["broker"] == broker && *v == 1.0
            })
            .map(|(_, l, _)| l["reason"].clone())
            .collect()
    };
    assert_eq!(risks("broker-a"), ["async_flush", "async_replication"]);
    // broker-b is SYNC_MASTER + SYNC_FLUSH: no flush or replication risk. It has
    // no slave, which is its one (true) risk.
    assert_eq!(risks("broker-b"), ["no_replica"]);
    assert!(
        sum(
            &s,
            "rocketmq_consumer_group_lag_seconds",
            &[("group", &group), ("topic", &topic)]
        )
        .is_some_and(|v| v >= 0.0)
    );
    assert_eq!(sum(&s, "mqaudit_collector_success", &[]), Some(8.0));

    // Kill broker-b. The next cycles show it down, everything else keeps its
    // values, and /metrics keeps answering 200 within a second.
    let before_a = sum(
        &s,
        "rocketmq_topic_max_offset",
        &[("topic", &topic), ("broker", "broker-a")],
    );
    tokio::task::spawn_blocking({
        let dir = cluster.dir.clone();
        move || {
            let status = Command::new(script())
                .arg("kill")
                .arg(&dir)
                .arg("broker-b")
                .status()
                .expect("kill");
            assert!(status.success());
        }
    })
    .await
    .expect("kill broker-b");
    let slowest = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let down = eventually(20, "broker-b reported down", || {
        let listen = listen.clone();
        let slowest = slowest.clone();
        async move {
            let (status, body, took) = http_get(&listen, "/metrics").expect("scrape answers");
            assert_eq!(status, 200);
            let mut worst = slowest.lock().expect("lock");
            *worst = (*worst).max(took);
            let s = parse_metrics(&body);
            (sum(&s, "rocketmq_broker_up", &[("broker", "broker-b")]) == Some(0.0))
                .then_some((s, body))
        }
    })
    .await;
    let (down, down_text) = down;
    let slowest = *slowest.lock().expect("lock");
    assert!(
        slowest < Duration::from_secs(1),
        "a scrape took {slowest:?}"
    );
    assert_eq!(
        sum(&down, "rocketmq_broker_up", &[("broker", "broker-a")]),
        Some(2.0)
    );
    assert_eq!(
        sum(
            &down,
            "rocketmq_topic_max_offset",
            &[("topic", &topic), ("broker", "broker-a")]
        ),
        before_a
    );
    assert_eq!(
        sum(
            &down,
            "rocketmq_consumer_group_lag_messages",
            &[("group", &group), ("broker", "broker-a")]
        ),
        Some(6.0)
    );
    assert_eq!(
        sum(
            &down,
            "rocketmq_broker_replication_lag_bytes",
            &[("broker", "broker-a")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sum(
            &down,
            "rocketmq_broker_durability_risk",
            &[("broker", "broker-a")]
        ),
        Some(2.0)
    );
    assert!(
        sum(
            &down,
            "mqaudit_collector_errors_total",
            &[("collector", "broker")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        sum(
            &down,
            "mqaudit_collector_success",
            &[("collector", "broker")]
        ),
        Some(0.0)
    );
    promtool_check(&down_text);

    // SIGTERM: clean exit.
    let pid = daemon.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = daemon.0.try_wait().expect("wait") {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_silent_name_server_is_data_and_readiness_waits_for_the_first_cycle() {
    use crate::support::fake::{Action, FakePeer};
    let fake = FakePeer::start(|_| Action::Silence).await;
    let mut config = mqaudit::config::Config::for_namesrv(&fake.addr).expect("config");
    config.web.listen_address = "127.0.0.1:0".to_string();
    config.collect.interval = Duration::from_secs(2);
    config.collect.timeout = Duration::from_secs(1);
    config.collect.budget = Duration::from_secs(2);
    let running = mqaudit::app::start(config).await.expect("start");
    let addr = running.addr.to_string();
    let ready_early = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || http_get(&addr, "/-/ready")
    })
    .await
    .expect("task");
    assert_eq!(ready_early.map(|r| r.0), Some(503));
    let samples = eventually(10, "a failed first cycle to be published", || {
        let addr = addr.clone();
        async move {
            let (status, body, _) =
                tokio::task::spawn_blocking(move || http_get(&addr, "/metrics"))
                    .await
                    .ok()??;
            assert_eq!(status, 200);
            let s = parse_metrics(&body);
            sum(
                &s,
                "mqaudit_collector_success",
                &[("collector", "discovery")],
            )
            .map(|_| s)
        }
    })
    .await;
    assert_eq!(
        sum(
            &samples,
            "mqaudit_collector_success",
            &[("collector", "discovery")]
        ),
        Some(0.0)
    );
    assert!(
        sum(
            &samples,
            "mqaudit_collector_errors_total",
            &[("collector", "discovery"), ("error_type", "timeout")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(
        sum(
            &samples,
            "mqaudit_broker_requests_total",
            &[("code", "106"), ("result", "timeout")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(sum(&samples, "mqaudit_build_info", &[]).is_some());
    let addr2 = addr.clone();
    let (ready, healthy, missing, landing) = tokio::task::spawn_blocking(move || {
        (
            http_get(&addr2, "/-/ready"),
            http_get(&addr2, "/-/healthy"),
            http_get(&addr2, "/nope"),
            http_get(&addr2, "/"),
        )
    })
    .await
    .expect("task");
    assert_eq!(ready.map(|r| r.0), Some(200));
    assert_eq!(healthy.map(|r| r.0), Some(200));
    assert_eq!(missing.map(|r| r.0), Some(404));
    assert!(landing.is_some_and(|(s, body, _)| s == 200 && body.contains("/metrics")));
    running.stop().await;
}
