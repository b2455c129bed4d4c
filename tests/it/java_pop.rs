//! 5.x POP consumption on the real 5.3.3 broker with the real Java client
//! (`setClientRebalance(false)` on a group put in POP mode with `mqadmin
//! setConsumeMode`): the broker pops and tracks acks. The exporter's lag for
//! the group equals `mqadmin consumerProgress`, exactly, both when all is
//! consumed and when the group stopped with five messages behind; its POP
//! retry topic (`%RETRY%<group>_<topic>`) is counted as the group's retry
//! topic, never exported as a group of its own; and the group's POP mode
//! is read from the broker (`rocketmq_consumer_group_pop_mode`), online or
//! not, since a remoting client in POP mode heartbeats as a push consumer;
//! the doctor lists the group's POP topics with an info verdict, and the
//! consumers dashboard's POP panel, evaluated by a real Prometheus, shows
//! the group's lag.
//! Runs in the java5 leg only:
//! 4.9.8 has no POP.

use crate::alerting::{panel_query, prometheus_query, spawn};
use crate::exporter::{Sample, http_get, parse_metrics, sum};
use crate::support::java::{Consume, Msg, Produce, client};
use crate::support::{Daemon, cluster, eventually_explained, free_port, unique};

fn lag(samples: &[Sample], group: &str, topic: &str) -> Option<f64> {
    sum(
        samples,
        "rocketmq_consumer_group_lag_messages",
        &[("group", group), ("topic", topic)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_group_has_the_lag_mqadmin_shows_and_its_retry_topic_is_no_group() {
    let java = client();
    assert!(
        java.is_v5(),
        "POP consumption needs a 5.x broker: run this module in the java5 leg"
    );
    let topic = unique("JavaPop");
    let group = unique("JavaPopGroup");
    let c = cluster();
    java.create_topic_on(&topic, 4, &c.broker_a).await;
    java.mqadmin(&[
        "setConsumeMode",
        "-b",
        &c.broker_a,
        "-t",
        &topic,
        "-g",
        &group,
        "-m",
        "POP",
        "-q",
        "8",
    ])
    .await;
    let plan: Vec<Msg> = (0..10).map(|i| Msg::key(&format!("pop-{i}"))).collect();
    java.produce(
        &topic,
        &unique("JavaPopProducer"),
        &plan,
        Produce::default(),
    )
    .await;
    let consumer = java
        .consume(
            &topic,
            &group,
            Consume {
                pop: true,
                ..Consume::default()
            },
        )
        .await;
    consumer
        .wait_until(120, "all ten popped and acknowledged", |d| {
            (0..10).all(|i| {
                let key = format!("pop-{i}");
                d.iter()
                    .any(|d| d.key.as_deref() == Some(key.as_str()) && d.result == "success")
            })
        })
        .await;

    let listen = format!("127.0.0.1:{}", free_port());
    let _serve = Daemon::mqaudit(&[
        "serve",
        "--namesrv",
        &c.namesrv,
        "--web.listen-address",
        &listen,
        "--collect.interval-seconds",
        "2",
    ]);
    // A real Prometheus scrapes it, so the dashboard's POP panel is
    // evaluated on the real broker's figures.
    let dir = std::env::temp_dir().join(unique("mqaudit-pop-prometheus"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mqaudit\n    static_configs:\n      - targets: ['{listen}']\n"
        ),
    )
    .expect("prometheus config");
    let prom = format!("127.0.0.1:{}", free_port());
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={prom}"),
        ],
        &dir.join("prometheus.log"),
    );
    // Acks reach the committed offset asynchronously: wait for zero lag,
    // which mqadmin must show too, in a cycle that also read the online
    // consumer's connection (a cycle whose connection call timed out on a
    // loaded machine has no group info).
    let samples = eventually_explained(90, "the POP group caught up", || async {
        let (_, body, _) = http_get(&listen, "/metrics").ok_or("no answer")?;
        let s = parse_metrics(&body);
        let online = s
            .iter()
            .any(|(n, l, _)| n == "rocketmq_consumer_group_info" && l.get("group") == Some(&group));
        match lag(&s, &group, &topic) {
            Some(0.0) if online => Ok(s),
            other => Err(format!("lag {other:?}, group info exported: {online}")),
        }
    })
    .await;
    assert_eq!(java.consumer_progress(&group).await.diff_total, 0);
    let groups: Vec<&str> = samples
        .iter()
        .filter(|(n, _, _)| n == "rocketmq_consumer_group_info")
        .filter_map(|(_, l, _)| l.get("group").map(String::as_str))
        .filter(|g| g.contains(group.as_str()))
        .collect();
    assert_eq!(groups, [group.as_str()], "the POP retry topic is no group");
    let info = samples
        .iter()
        .find(|(n, l, _)| n == "rocketmq_consumer_group_info" && l.get("group") == Some(&group))
        .expect("the POP group is listed");
    // A remoting-protocol client in POP mode says CONSUME_PASSIVELY in its
    // heartbeat (only the 5.x proxy's gRPC clients say CONSUME_POP); its
    // lag is still the broker's committed offsets, advanced by the acks.
    assert_eq!(
        info.1.get("consume_type").map(String::as_str),
        Some("CONSUME_PASSIVELY"),
        "{:?}",
        info.1
    );

    // So POP is known from the broker's request modes instead (the mode
    // mqadmin setConsumeMode set), online consumers or not.
    assert_eq!(
        sum(
            &samples,
            "rocketmq_consumer_group_pop_mode",
            &[("group", group.as_str()), ("topic", topic.as_str())]
        ),
        Some(1.0),
        "the group's POP mode on its topic"
    );
    assert_eq!(
        samples
            .iter()
            .filter(|(n, l, _)| n == "rocketmq_consumer_group_pop_mode"
                && l.get("group") == Some(&group))
            .count(),
        1,
        "POP on its one topic only"
    );

    // The group stops; five more arrive: lag 5, exactly as mqadmin says.
    consumer.stop().await;
    let late: Vec<Msg> = (10..15).map(|i| Msg::key(&format!("pop-{i}"))).collect();
    java.produce(
        &topic,
        &unique("JavaPopProducer"),
        &late,
        Produce::default(),
    )
    .await;
    let behind = eventually_explained(60, "five behind", || async {
        let (_, body, _) = http_get(&listen, "/metrics").ok_or("no answer")?;
        let s = parse_metrics(&body);
        match lag(&s, &group, &topic) {
            Some(l) if l == 5.0 => Ok(l),
            other => Err(format!("lag {other:?}")),
        }
    })
    .await;
    let progress = java.consumer_progress(&group).await;
    assert_eq!(progress.diff_total as f64, behind, "{progress:?}");
    // The consumers dashboard's POP panel shows the group's lag, through
    // Prometheus, labelled by group and topic.
    let query = panel_query("rocketmq-consumers.json", "POP groups: lag (a lower bound)");
    let shown = eventually_explained(60, "the POP panel shows the lag", || {
        let (prom, query, group, topic) =
            (prom.clone(), query.clone(), group.clone(), topic.clone());
        async move {
            let answer = tokio::task::spawn_blocking(move || prometheus_query(&prom, &query))
                .await
                .map_err(|e| e.to_string())?;
            let series: Vec<(String, String, String)> = answer["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let label = |k: &str| r["metric"][k].as_str().unwrap_or("").to_string();
                    (
                        label("group"),
                        label("topic"),
                        r["value"][1].as_str().unwrap_or("").to_string(),
                    )
                })
                .filter(|(g, _, _)| *g == group)
                .collect();
            match series.as_slice() {
                [(_, t, v)] if *t == topic && v == "5" => Ok(series),
                _ => Err(format!("{series:?}")),
            }
        }
    })
    .await;
    assert_eq!(shown.len(), 1);
    // Offline, still known as POP.
    let (_, body, _) = http_get(&listen, "/metrics").expect("scrape");
    assert_eq!(
        sum(
            &parse_metrics(&body),
            "rocketmq_consumer_group_pop_mode",
            &[("group", group.as_str()), ("topic", topic.as_str())]
        ),
        Some(1.0),
        "POP mode with no consumer online"
    );
    // The doctor says so too: the group's POP topic and the info verdict
    // that its lag is a lower bound.
    let report = crate::doctor::doctor_json(&c.namesrv);
    let entry = report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == group.as_str())
        .expect("the POP group in the doctor's groups");
    assert_eq!(entry["pop_topics"], serde_json::json!([topic]), "{entry}");
    assert_eq!(entry["lag_messages"].as_f64(), Some(behind), "{entry}");
    let verdict = report["risks"]
        .as_array()
        .expect("risks")
        .iter()
        .find(|r| r["subject"] == group.as_str() && r["kind"] == "pop_lag_approximate")
        .expect("the pop_lag_approximate verdict");
    assert_eq!(verdict["severity"], "info", "{verdict}");
    assert!(
        verdict["detail"].as_str().expect("detail").contains(&topic),
        "{verdict}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
