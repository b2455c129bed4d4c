//! The collector's call plan and values against the FakeCluster protocol fake
//! (a simulated cluster in Java's fastjson dialect): how many calls of each
//! code a cycle makes, that discovery is cached, and that the metrics equal
//! the simulated offsets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqaudit::admin::Admin;
use mqaudit::collector::ClusterCollector;
use mqaudit::config::{Config, Granularity};
use mqaudit::metrics::SnapshotStore;
use mqaudit::remoting::{ClientOptions, Pool};

use crate::exporter::{parse_metrics, sum};
use crate::support::fake_cluster::{FakeCluster, Spec};

type Counts = Arc<Mutex<BTreeMap<i32, u64>>>;

fn collector(namesrv: &str, counts: &Counts) -> ClusterCollector {
    collector_with(namesrv, counts, Granularity::Topic)
}

fn collector_with(namesrv: &str, counts: &Counts, granularity: Granularity) -> ClusterCollector {
    let mut config = Config::for_namesrv(namesrv).expect("config");
    config.collect.granularity = granularity;
    config.collect.min_offset_refresh_cycles = 10;
    let counts = counts.clone();
    let admin = Admin::new(
        Arc::new(Pool::new(ClientOptions::default())),
        Duration::from_secs(5),
    )
    .with_observer(Arc::new(move |code, _| {
        *counts.lock().expect("lock").entry(code).or_default() += 1;
    }));
    let c = &config.clusters[0];
    let cluster = mqaudit::admin::Cluster::new(c.name.clone(), c.namesrv.clone(), admin);
    ClusterCollector::new(cluster, config.collect)
}

fn take(counts: &Counts) -> BTreeMap<i32, u64> {
    std::mem::take(&mut *counts.lock().expect("lock"))
}

fn render(exposition: mqaudit::metrics::Exposition) -> String {
    let store = SnapshotStore::new();
    store.publish("default", exposition);
    String::from_utf8(store.current().to_vec()).expect("utf8")
}

#[tokio::test]
async fn a_cycle_costs_brokers_plus_groups_plus_unconsumed_topics_and_reports_the_simulated_offsets()
 {
    let spec = Spec::small();
    let fake = FakeCluster::start(spec.clone()).await;
    let counts: Counts = Arc::default();
    let mut collector = collector(&fake.namesrv, &counts);

    let first = render(collector.run_cycle(1_700_000_100_000).await);
    let calls = take(&counts);
    let b = spec.brokers as u64;
    // Every name server (one here) is asked for the cluster each cycle, and
    // discovery uses that answer; then config, topic configs and groups per broker.
    assert_eq!(calls.get(&106), Some(&1));
    for code in [26, 21, 201, 28, 907, 317] {
        assert_eq!(calls.get(&code), Some(&b), "code {code}: {calls:?}");
    }
    // One 203 per group (on one master holding its offsets).
    assert_eq!(calls.get(&203), Some(&(spec.groups as u64)));

    // Undated lagging queues are dated by at most lag_pulls_per_cycle pulls a
    // cycle and then cached: after a few cycles a cycle pulls nothing.
    let mut cycles = 1;
    let (second, calls) = loop {
        let text = render(collector.run_cycle(1_700_000_130_000).await);
        let calls = take(&counts);
        cycles += 1;
        assert!(
            calls.get(&11).copied().unwrap_or(0) <= 200,
            "pull budget exceeded: {calls:?}"
        );
        if !calls.contains_key(&11) {
            break (text, calls);
        }
        assert!(cycles < 10, "pulls never stopped: {calls:?}");
    };
    for code in [26, 21, 201] {
        assert_eq!(calls.get(&code), None, "discovery is cached: {calls:?}");
    }
    assert_eq!(
        calls.get(&106),
        Some(&1),
        "the name server is probed: {calls:?}"
    );
    // Topic stats only for topics without a consumer (plus DLQs and the rotating slice).
    let unconsumed = (spec.topics - spec.consumed_topics()) as u64 * spec.brokers_per_topic as u64;
    let topic_stats = calls.get(&202).copied().unwrap_or(0);
    assert!(topic_stats >= unconsumed, "{topic_stats} < {unconsumed}");
    let steady: u64 = calls.values().sum();
    let official = spec.official_exporter_calls();
    assert!(
        official >= 10 * steady,
        "official plan {official} vs ours {steady}: {calls:?}"
    );

    for text in [&first, &second] {
        let s = parse_metrics(text);
        // Topic 0's max offsets as the fake defines them.
        let expected: i64 = (0..spec.queues)
            .map(|q| {
                1_000
                    + (("topic-0"
                        .bytes()
                        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                        as i64
                        + i64::from(q) * 13)
                        % 1_000)
                        .abs()
            })
            .sum();
        assert_eq!(
            sum(&s, "rocketmq_topic_max_offset", &[("topic", "topic-0")]),
            Some(expected as f64)
        );
        // group-3 lags 3 per queue on its 4 topics of 8 queues, plus 3 on its retry queue.
        assert_eq!(
            sum(
                &s,
                "rocketmq_consumer_group_lag_messages",
                &[("group", "group-3")]
            ),
            Some((3 * 8 * 4) as f64)
        );
        assert_eq!(
            sum(
                &s,
                "rocketmq_consumer_group_retry_messages",
                &[("group", "group-3")]
            ),
            Some(3.0)
        );
        assert_eq!(
            sum(
                &s,
                "rocketmq_consumer_group_dlq_messages",
                &[("group", "group-0")]
            ),
            Some(3.0)
        );
        assert_eq!(
            sum(
                &s,
                "rocketmq_consumer_group_consumers",
                &[("group", "group-3")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sum(
                &s,
                "rocketmq_broker_flush_lag_bytes",
                &[("broker", "broker-0")]
            ),
            Some(1_572_864.0)
        );
        assert_eq!(sum(&s, "mqaudit_collector_success", &[]), Some(8.0));
    }
    // The fake's pulled messages were stored at 1_700_000_000 s; lag is dated by them.
    let s = parse_metrics(&second);
    assert_eq!(
        sum(
            &s,
            "rocketmq_consumer_group_lag_seconds",
            &[("group", "group-3"), ("topic", "topic-12")]
        ),
        Some(130.0)
    );
    drop(fake);
}

#[tokio::test]
async fn broadcast_groups_have_offsets_but_no_lag_and_queue_granularity_adds_queue_id() {
    let spec = Spec {
        broadcast_groups: 1,
        ..Spec::small()
    };
    let fake = FakeCluster::start(spec.clone()).await;
    let counts: Counts = Arc::default();
    let mut by_topic = collector(&fake.namesrv, &counts);
    let s = parse_metrics(&render(by_topic.run_cycle(1_700_000_100_000).await));
    // group-1 (clustering) lags; group-0 (broadcast) has offsets but no lag series.
    assert!(
        sum(
            &s,
            "rocketmq_consumer_group_lag_messages",
            &[("group", "group-1")]
        )
        .is_some_and(|v| v > 0.0)
    );
    assert!(
        sum(
            &s,
            "rocketmq_consumer_group_offset",
            &[("group", "group-0")]
        )
        .is_some_and(|v| v > 0.0)
    );
    assert_eq!(
        sum(
            &s,
            "rocketmq_consumer_group_lag_messages",
            &[("group", "group-0")]
        ),
        None
    );
    assert!(
        s.iter()
            .all(|(_, labels, _)| !labels.contains_key("queue_id"))
    );

    let mut by_queue = collector_with(&fake.namesrv, &counts, Granularity::Queue);
    let q = parse_metrics(&render(by_queue.run_cycle(1_700_000_100_000).await));
    let per_queue = q
        .iter()
        .filter(|(n, l, _)| {
            n == "rocketmq_topic_max_offset"
                && l.get("topic").map(String::as_str) == Some("topic-0")
        })
        .count();
    assert_eq!(per_queue, spec.queues as usize);
    // The per-queue series add up to the per-topic one.
    assert_eq!(
        sum(&q, "rocketmq_topic_max_offset", &[("topic", "topic-0")]),
        sum(&s, "rocketmq_topic_max_offset", &[("topic", "topic-0")])
    );
    assert_eq!(
        sum(
            &q,
            "rocketmq_consumer_group_lag_messages",
            &[("group", "group-1")]
        ),
        sum(
            &s,
            "rocketmq_consumer_group_lag_messages",
            &[("group", "group-1")]
        )
    );
    drop(fake);
}
