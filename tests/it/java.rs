//! On the Java brokers users run (Apache RocketMQ 4.9.8 and 5.3.3), after a
//! workload written by the real Java client: the exporter's numbers and the
//! doctor's brokers equal what `mqadmin` — an oracle we did not write —
//! prints for the same cluster. Runs in the java4 and java5 legs only.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::exporter::{Sample, http_get, parse_metrics};
use crate::support::java::{Consume, ConsumerProgress, Msg, Produce, client};
use crate::support::{Daemon, cluster, eventually, free_port, unique};

/// The value of one series whose labels include every pair of `filter`
/// (exactly one must match).
fn one(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> Option<f64> {
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
    assert!(
        matching.len() <= 1,
        "{name} {filter:?} matched {} series",
        matching.len()
    );
    matching.first().copied()
}

/// The doctor's JSON entry for one broker, now.
fn doctor_broker(namesrv: &str, name: &str, id: i64) -> serde_json::Value {
    let report = crate::doctor::doctor_json(namesrv);
    report["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .find(|b| b["broker_name"] == name && b["broker_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("doctor lists no {name}/{id}"))
}

/// Sum over matching series; 0 when none.
fn total(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    crate::exporter::sum(samples, name, filter).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_and_doctor_agree_with_mqadmin_after_a_java_client_workload() {
    let c = cluster();
    let java = client();
    let topic = unique("JavaExported");
    let (group, producer_group) = (unique("JavaGroup"), unique("JavaProducer"));
    java.create_topic(&topic, 4).await;

    // 40 keyed messages over both masters, three of which the group keeps
    // failing into its DLQ; then 10 more the group never sees (lag).
    let plan: Vec<Msg> = (0..40)
        .map(|i| Msg::key(&format!("exp-{i}")).tag("TagA"))
        .collect();
    let first = java
        .produce(&topic, &producer_group, &plan, Produce::default())
        .await;
    assert!(
        first.iter().all(|p| p.stored()),
        "every send stored: {first:?}"
    );
    let failing = ["exp-3", "exp-17", "exp-30"];
    let consumer = java
        .consume(
            &topic,
            &group,
            Consume {
                fail: failing.iter().map(|k| k.to_string()).collect(),
                max_reconsume: 1,
                ..Consume::default()
            },
        )
        .await;
    // Each failing key is delivered twice (first try, one retry), then dead-lettered.
    consumer
        .wait_until(
            120,
            "37 successes and every failing key retried once",
            |d| {
                let ok = d.iter().filter(|d| d.result == "success").count();
                let retried = failing.iter().all(|k| {
                    d.iter()
                        .any(|d| d.key.as_deref() == Some(*k) && d.reconsume == 1)
                });
                ok >= 37 && retried
            },
        )
        .await;
    // The last failure's send-back to the DLQ follows the listener's return.
    let dlq = format!("%DLQ%{group}");
    eventually(60, "three messages in the DLQ", || async {
        let status = java.mqadmin(&["topicStatus", "-t", &dlq]).await;
        let depth: i64 = status
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some(cols.get(3)?.parse::<i64>().ok()? - cols.get(2)?.parse::<i64>().ok()?)
            })
            .sum();
        (depth == 3).then_some(())
    })
    .await;
    consumer.stop().await;
    let later: Vec<Msg> = (40..50)
        .map(|i| Msg::key(&format!("exp-{i}")).tag("TagA"))
        .collect();
    java.produce(&topic, &producer_group, &later, Produce::default())
        .await;

    // The oracle's view, once the cluster is quiet.
    let progress = java.consumer_progress(&group).await;
    let topic_status = java.topic_status(&topic).await;
    let dlq_status = java.topic_status(&dlq).await;
    let retry_topic = format!("%RETRY%{group}");
    assert_eq!(
        topic_status.values().map(|(_, max)| max).sum::<i64>(),
        50,
        "mqadmin sees all 50 messages: {topic_status:?}"
    );
    assert_eq!(
        progress.diff_total, 10,
        "mqadmin's diff total: {progress:?}"
    );

    // queryMsgByKey and mqaudit's QUERY_MESSAGE find the same message.
    let key7 = first
        .iter()
        .find(|p| p.key.as_deref() == Some("exp-7"))
        .expect("exp-7 sent");
    let oracle = eventually(60, "exp-7 indexed", || async {
        let found = java.query_msg_by_key(&topic, "exp-7").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(
        oracle,
        [(
            key7.msg_id.clone().expect("id"),
            key7.queue_id,
            key7.queue_offset
        )],
        "queryMsgByKey"
    );
    let admin = mqaudit::admin::Admin::new(
        std::sync::Arc::new(mqaudit::remoting::Pool::new(
            mqaudit::remoting::ClientOptions::default(),
        )),
        Duration::from_secs(5),
    );
    let broker_addr = if key7.broker.as_deref() == Some("broker-a") {
        &c.broker_a
    } else {
        &c.broker_b
    };
    let ours = admin
        .query_message_by_key(
            broker_addr,
            &topic,
            "exp-7",
            key7.time_ms - 60_000,
            key7.time_ms + 600_000,
        )
        .await
        .expect("QUERY_MESSAGE");
    assert_eq!(
        ours.iter()
            .map(|m| (
                m.uniq_key().unwrap_or_default().to_string(),
                m.queue_id,
                m.queue_offset
            ))
            .collect::<Vec<_>>(),
        oracle,
        "mqaudit's QUERY_MESSAGE against queryMsgByKey"
    );

    // The exporter, at queue granularity, on the same cluster.
    let dir = std::env::temp_dir().join(unique("mqaudit-java-exporter"));
    std::fs::create_dir_all(&dir).expect("dir");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = dir.join("mqaudit.toml");
    std::fs::write(
        &config,
        format!(
            "[[cluster]]\nname = \"{}\"\nnamesrv = [\"{}\"]\n\n[collect]\ninterval_seconds = 1\ntimeout_seconds = 1\n\
             granularity = \"queue\"\n\n[web]\nlisten_address = \"{listen}\"\n",
            c.name, c.namesrv
        ),
    )
    .expect("config");
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mqaudit"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mqaudit serve"),
    );
    let samples = eventually(60, "the exporter to see the workload", || async {
        let (status, body, _) = http_get(&listen, "/metrics")?;
        assert_eq!(status, 200);
        let s = parse_metrics(&body);
        let max = total(&s, "rocketmq_topic_max_offset", &[("topic", &topic)]);
        let dlq_depth = total(
            &s,
            "rocketmq_consumer_group_dlq_messages",
            &[("group", &group)],
        );
        (max == 50.0 && dlq_depth == 3.0).then_some(s)
    })
    .await;

    // Max offsets, per queue, equal topicStatus.
    for ((broker, queue), (_, max)) in &topic_status {
        let q = queue.to_string();
        assert_eq!(
            one(
                &samples,
                "rocketmq_topic_max_offset",
                &[("topic", &topic), ("broker", broker), ("queue_id", &q)]
            ),
            Some(*max as f64),
            "max offset of {broker}/{queue}"
        );
    }
    // Lag, per queue, equals consumerProgress's Diff; the totals agree.
    let mut lag_total = 0.0;
    for ((t, broker, queue), (broker_offset, consumer_offset, diff)) in &progress.queues {
        let q = queue.to_string();
        if *t == topic {
            assert_eq!(
                one(
                    &samples,
                    "rocketmq_consumer_group_lag_messages",
                    &[
                        ("group", &group),
                        ("topic", &topic),
                        ("broker", broker),
                        ("queue_id", &q)
                    ]
                ),
                Some(*diff as f64),
                "lag of {broker}/{queue} (broker offset {broker_offset}, consumer offset {consumer_offset})"
            );
            assert_eq!(
                one(
                    &samples,
                    "rocketmq_consumer_group_offset",
                    &[
                        ("group", &group),
                        ("topic", &topic),
                        ("broker", broker),
                        ("queue_id", &q)
                    ]
                ),
                Some(*consumer_offset as f64),
                "committed offset of {broker}/{queue}"
            );
            lag_total += *diff as f64;
        }
    }
    let retry_diff: i64 = progress
        .queues
        .iter()
        .filter(|((t, _, _), _)| *t == retry_topic)
        .map(|(_, (_, _, diff))| diff)
        .sum();
    assert_eq!(lag_total + retry_diff as f64, progress.diff_total as f64);
    assert_eq!(
        total(
            &samples,
            "rocketmq_consumer_group_lag_messages",
            &[("group", &group), ("topic", &topic)]
        ),
        lag_total
    );
    // Retry backlog equals the %RETRY% rows' Diff; DLQ depth equals topicStatus.
    assert_eq!(
        total(
            &samples,
            "rocketmq_consumer_group_retry_messages",
            &[("group", &group)]
        ),
        retry_diff as f64
    );
    let dlq_depth: i64 = dlq_status.values().map(|(min, max)| max - min).sum();
    assert_eq!(dlq_depth, 3);
    assert_eq!(
        total(
            &samples,
            "rocketmq_consumer_group_dlq_messages",
            &[("group", &group)]
        ),
        3.0
    );

    // Brokers: the same names, ids, addresses, roles and flush types as
    // clusterList and getBrokerConfig; flush and commit-log figures as brokerStatus.
    let listed = java.cluster_list().await;
    assert_eq!(listed.len(), 3, "clusterList: {listed:?}");
    let doctor = Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .args(["doctor", "--namesrv", &c.namesrv, "--format", "json"])
        .output()
        .expect("run doctor");
    assert!(
        doctor.status.success(),
        "doctor failed: {}",
        String::from_utf8_lossy(&doctor.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    let brokers = report["brokers"].as_array().expect("brokers");
    let from_doctor: Vec<(String, i64, String)> = brokers
        .iter()
        .map(|b| {
            (
                b["broker_name"].as_str().expect("name").to_string(),
                b["broker_id"].as_i64().expect("id"),
                b["addr"].as_str().expect("addr").to_string(),
            )
        })
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(
        from_doctor, listed_sorted,
        "doctor and clusterList name the same brokers"
    );
    for (b, (name, id, addr)) in brokers.iter().zip(&listed_sorted) {
        let config = java.broker_config(addr).await;
        assert_eq!(
            b["role"].as_str(),
            config.get("brokerRole").map(String::as_str),
            "{name}/{id} role"
        );
        assert_eq!(
            b["flush_disk_type"].as_str(),
            config.get("flushDiskType").map(String::as_str),
            "{name}/{id} flushDiskType"
        );
        // Commit-log and flush figures move with any traffic (other tests
        // share the cluster; the probe test writes every second): compare
        // them inside a quiet interval, when brokerStatus reads the same
        // before and after the doctor and a scrape. Every interval that is
        // not quiet still checks ours lies between the two readings, so a
        // busy cluster bounds the figure instead of skipping it; only the
        // exact flush-lag comparison needs a quiet one.
        let id_label = id.to_string();
        let mut compared = false;
        let mut bounded = 0;
        let give_up = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < give_up {
            let before = java.broker_status(addr).await;
            let doctor = doctor_broker(&c.namesrv, name, *id);
            let exported = {
                let (_, body, _) = http_get(&listen, "/metrics").expect("scrape");
                one(
                    &parse_metrics(&body),
                    "rocketmq_broker_commitlog_max_offset_bytes",
                    &[("broker", name), ("broker_id", &id_label)],
                )
            };
            let after = java.broker_status(addr).await;
            let max = |s: &BTreeMap<String, String>| -> Option<i64> {
                s.get("commitLogMaxOffset")?.parse().ok()
            };
            // mqadmin itself can time out on a loaded machine (it then
            // prints no figures): that interval proves nothing either way.
            let (Some(low), Some(high)) = (max(&before), max(&after)) else {
                eprintln!(
                    "{name}/{id}: brokerStatus gave no commitLogMaxOffset: {before:?} / {after:?}"
                );
                continue;
            };
            let ours = doctor["commit_log_max_offset"]
                .as_i64()
                .expect("doctor max");
            if low != high {
                assert!(
                    (low..=high).contains(&ours),
                    "{name}/{id}: doctor {ours} outside [{low}, {high}]"
                );
                let exported = exported.expect("exported max") as i64;
                assert!(
                    exported <= high,
                    "{name}/{id}: exported {exported} above {high}"
                );
                bounded += 1;
                continue;
            }
            assert_eq!(ours, low, "{name}/{id} commit log max");
            assert_eq!(
                exported,
                Some(low as f64),
                "{name}/{id} exported commit log max"
            );
            // "0 B", "1.2 KiB": the doctor converts the unit. With the commit
            // log's max unchanged, the unflushed tail can only shrink while
            // the flush thread runs, so the doctor's reading lies between the
            // two mqadmin readings (within the rounding of one decimal).
            let unflushed = |s: &BTreeMap<String, String>| -> (String, u64) {
                let text = s["remainHowManyDataToFlush"].clone();
                let bytes = mqaudit::body::text::parse_human_bytes(&text).expect("human bytes");
                (text, bytes)
            };
            let ((before_text, most), (after_text, least)) =
                (unflushed(&before), unflushed(&after));
            let ours_lag = doctor["flush_lag_bytes"]
                .as_u64()
                .expect("doctor flush lag");
            let slack = |v: u64| v / 20 + 1;
            assert!(
                ours_lag + slack(least) >= least && ours_lag <= most + slack(most),
                "{name}/{id}: doctor flush lag {ours_lag} B outside mqadmin's \
                 [{after_text}, {before_text}]"
            );
            if before_text == after_text {
                assert!(
                    ours_lag.abs_diff(least) <= slack(least),
                    "{name}/{id} flush lag {ours_lag} B vs {after_text}"
                );
            }
            compared = true;
            break;
        }
        assert!(
            compared || bounded >= 5,
            "{name}/{id}: neither a quiet interval nor five bounded readings in 120 s"
        );
        if !compared {
            eprintln!(
                "{name}/{id}: never quiet in 120 s; commit log max bounded {bounded} times, \
                 flush lag not compared exactly"
            );
        }
    }
    // broker-a's replication lag, in a quiet interval: the master and its
    // slave read the same commit-log max before and after the doctor, and
    // the doctor says 0. Other tests write to the cluster meanwhile, so an
    // interval that is not quiet only bounds the lag (never negative, never
    // more than the master ever was ahead of the slave in it).
    let mut quiet = false;
    let mut bounded = 0;
    let give_up = std::time::Instant::now() + Duration::from_secs(120);
    let max =
        |s: &BTreeMap<String, String>| -> Option<i64> { s.get("commitLogMaxOffset")?.parse().ok() };
    while std::time::Instant::now() < give_up {
        let (m1, s1) = (
            max(&java.broker_status(&c.broker_a).await),
            max(&java.broker_status(&c.broker_a_slave).await),
        );
        let lag = doctor_broker(&c.namesrv, "broker-a", 0)["replicas"][0]["lag_bytes"].as_i64();
        let (m2, s2) = (
            max(&java.broker_status(&c.broker_a).await),
            max(&java.broker_status(&c.broker_a_slave).await),
        );
        // mqadmin can time out on a loaded machine: no figures, no proof.
        let (Some(m1), Some(s1), Some(m2), Some(s2)) = (m1, s1, m2, s2) else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let lag = lag.expect("the doctor reports broker-a's replica lag");
        assert!(
            (0..=m2 - s1.min(s2)).contains(&lag),
            "replica lag {lag} outside [0, {}] (master {m1}..{m2}, slave {s1}..{s2})",
            m2 - s1.min(s2)
        );
        bounded += 1;
        if m1 == m2 && s1 == s2 && s1 == m1 && lag == 0 {
            quiet = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        quiet || bounded >= 5,
        "broker-a's replica lag: neither a quiet interval nor five bounded readings in 120 s"
    );
    if !quiet {
        eprintln!(
            "broker-a's slave never caught up in a quiet interval: lag bounded {bounded} times"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The mqadmin reader itself, on both versions' table layouts.
#[test]
fn consumer_progress_reads_both_versions() {
    let v4 = "#Topic  #Broker Name  #QID  #Broker Offset  #Consumer Offset  #Diff  #LastTime\n\
              JT1  broker-a  0  5  3  2  2026-11-25 19:48:02\n\
              %RETRY%CG1  broker-b  0  0  0  0  N/A\n\nConsume TPS: 0.15\nDiff Total: 2\n";
    let p = ConsumerProgress::parse(v4);
    assert_eq!(p.diff_total, 2);
    assert_eq!(p.queues[&("JT1".into(), "broker-a".into(), 0)], (5, 3, 2));
    let v5 = "#Topic  #Broker Name  #QID  #Broker Offset  #Consumer Offset  #Diff  #Inflight  #LastTime\n\
              JT1  broker-b  3  1  0  1  0  N/A\n\nConsume TPS: 0.30\nConsume Diff Total: 1\nConsume Inflight Total: 0\n";
    let p = ConsumerProgress::parse(v5);
    assert_eq!(p.diff_total, 1);
    assert_eq!(p.queues[&("JT1".into(), "broker-b".into(), 3)], (1, 0, 1));
}
