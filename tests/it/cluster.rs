//! Typed admin calls against the real test cluster (rocketmq-rust name server,
//! broker-a ASYNC_MASTER + slave, broker-b SYNC_MASTER), driven by the test
//! driver. Each test uses its own topics and groups.

use std::collections::BTreeSet;

use mqaudit::admin::HaStatus;
use mqaudit::body::json::MessageQueue;
use mqaudit::body::trace::{self, PubRecord, SubAfterRecord, TraceRecord};

use crate::support::driver::{Driver, Sent, TRACE_TOPIC};
use crate::support::{Flavour, cluster, eventually, now_ms, unique};

fn queue(topic: &str, broker: &str, id: i32) -> MessageQueue {
    MessageQueue {
        topic: topic.to_string(),
        broker_name: broker.to_string(),
        queue_id: id,
    }
}

/// Sum of max offsets of `topic` on one broker (GET_TOPIC_STATS_INFO).
async fn max_offset_sum(driver: &Driver, broker: &str, topic: &str) -> i64 {
    match driver.admin.topic_stats(broker, topic).await {
        Ok(table) => table.iter().map(|(_, o)| o.max_offset).sum(),
        Err(e) if e.remote_code() == Some(17) => 0,
        Err(e) => panic!("topic stats {topic} on {broker}: {e}"),
    }
}

#[tokio::test]
async fn the_name_server_lists_all_three_brokers_in_cluster_mqaudit_test() {
    let c = cluster();
    let driver = Driver::new();
    let info = driver
        .admin
        .cluster_info(&c.namesrv)
        .await
        .expect("cluster info");
    assert_eq!(
        info.cluster_addr_table.keys().collect::<Vec<_>>(),
        [&c.name]
    );
    let a = &info.broker_addr_table["broker-a"];
    assert_eq!(a.master_addr(), Some(c.broker_a.as_str()));
    assert_eq!(
        a.slaves().map(|(_, addr)| addr).collect::<Vec<_>>(),
        [c.broker_a_slave.as_str()]
    );
    let b = &info.broker_addr_table["broker-b"];
    assert_eq!(
        (b.master_addr(), b.slaves().count()),
        (Some(c.broker_b.as_str()), 0)
    );
    let config = driver
        .admin
        .broker_config(&c.broker_a)
        .await
        .expect("config");
    assert_eq!(
        (config.get("brokerRole"), config.get("flushDiskType")),
        (Some("ASYNC_MASTER"), Some("ASYNC_FLUSH"))
    );
    let config = driver
        .admin
        .broker_config(&c.broker_b)
        .await
        .expect("config");
    assert_eq!(
        (config.get("brokerRole"), config.get("flushDiskType")),
        (Some("SYNC_MASTER"), Some("SYNC_FLUSH"))
    );
    let runtime = driver
        .admin
        .runtime_info(&c.broker_b)
        .await
        .expect("runtime");
    assert!(runtime.int("commitLogMaxOffset").expect("int").is_some());
    assert!(runtime.flush_lag_bytes().expect("unit honoured").is_some());
}

#[tokio::test]
async fn topic_max_offsets_sum_to_messages_sent_and_query_finds_each_key_on_its_broker() {
    let c = cluster();
    let driver = Driver::new();
    let topic = unique("Sent");
    driver.create_topic(&c.broker_a, &topic, 4).await;
    driver.create_topic(&c.broker_b, &topic, 4).await;
    let begin = now_ms() - 60_000;
    const N: usize = 40;
    let mut sent: Vec<Sent> = Vec::new();
    for i in 0..N {
        let (addr, name) = if i % 2 == 0 {
            (&c.broker_a, "broker-a")
        } else {
            (&c.broker_b, "broker-b")
        };
        let queue_id = ((i / 2) % 4) as i32;
        sent.push(
            driver
                .send(
                    addr,
                    name,
                    &topic,
                    queue_id,
                    &format!("key-{i}"),
                    b"payload",
                )
                .await,
        );
    }
    // Consume queues are built asynchronously: wait for the dispatch.
    let total = eventually(15, "both brokers dispatched every message", || async {
        let a = max_offset_sum(&driver, &c.broker_a, &topic).await;
        let b = max_offset_sum(&driver, &c.broker_b, &topic).await;
        (a + b == N as i64).then_some((a, b))
    })
    .await;
    assert_eq!(total, (N as i64 / 2, N as i64 / 2));

    // GET_MAX_OFFSET / GET_MIN_OFFSET agree with the stats table per queue.
    let stats = driver
        .admin
        .topic_stats(&c.broker_a, &topic)
        .await
        .expect("stats");
    assert_eq!(stats.len(), 4);
    for (q, offsets) in &stats {
        assert_eq!(q.broker_name, "broker-a");
        assert_eq!(
            driver
                .admin
                .max_offset(&c.broker_a, &topic, q.queue_id)
                .await
                .expect("max"),
            offsets.max_offset
        );
        assert_eq!(
            driver
                .admin
                .min_offset(&c.broker_a, &topic, q.queue_id)
                .await
                .expect("min"),
            offsets.min_offset
        );
        assert_eq!(offsets.max_offset, 5);
    }

    // Key 7 went to broker-b: QUERY_MESSAGE finds it there, not on broker-a.
    let target = &sent[7];
    assert_eq!(target.broker_name, "broker-b");
    let found = eventually(15, "key-7 indexed on broker-b", || async {
        let found = driver
            .admin
            .query_message_by_key(&c.broker_b, &topic, "key-7", begin, now_ms() + 60_000)
            .await
            .expect("query");
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].queue_id, found[0].queue_offset),
        (target.queue_id, target.queue_offset)
    );
    assert_eq!(found[0].uniq_key(), Some(target.msg_id.as_str()));
    assert_eq!(found[0].offset_msg_id(), target.offset_msg_id);
    let elsewhere = driver
        .admin
        .query_message_by_key(&c.broker_a, &topic, "key-7", begin, now_ms() + 60_000)
        .await
        .expect("query a");
    assert!(
        elsewhere.is_empty(),
        "key-7 must not be on broker-a: {elsewhere:?}"
    );

    // By unique key (client msgId), and by commit-log offset.
    let by_id = driver
        .admin
        .query_message_by_unique_key(
            &c.broker_b,
            &topic,
            &target.msg_id,
            begin,
            now_ms() + 60_000,
        )
        .await
        .expect("unique query");
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].keys().collect::<Vec<_>>(), ["key-7"]);
    let viewed = driver
        .admin
        .view_message(&c.broker_b, by_id[0].commit_log_offset)
        .await
        .expect("view");
    assert_eq!(
        (viewed.topic.as_str(), viewed.queue_offset),
        (topic.as_str(), target.queue_offset)
    );

    // The route and the topic list know the topic; broker-a's config holds it.
    let route = driver
        .admin
        .topic_route(&c.namesrv, &topic)
        .await
        .expect("route");
    let brokers: BTreeSet<&str> = route
        .queue_datas
        .iter()
        .map(|q| q.broker_name.as_str())
        .collect();
    assert_eq!(brokers, BTreeSet::from(["broker-a", "broker-b"]));
    assert!(
        driver
            .admin
            .topic_list(&c.namesrv)
            .await
            .expect("list")
            .contains(&topic)
    );
    let configs = driver
        .admin
        .all_topic_config(&c.broker_a)
        .await
        .expect("topic configs");
    assert_eq!(configs[&topic].write_queue_nums, 4);
    let missing = driver
        .admin
        .topic_route(&c.namesrv, &unique("NoSuchTopic"))
        .await
        .expect_err("unknown");
    assert_eq!(missing.remote_code(), Some(17));
}

#[tokio::test]
async fn consume_stats_show_lag_n_minus_k_after_the_group_commits_k() {
    let c = cluster();
    let driver = Driver::new();
    let topic = unique("Lag");
    let group = unique("LagGroup");
    driver.create_topic(&c.broker_a, &topic, 2).await;
    const N: i64 = 10;
    for i in 0..N {
        driver
            .send(
                &c.broker_a,
                "broker-a",
                &topic,
                (i % 2) as i32,
                &format!("lag-{i}"),
                b"x",
            )
            .await;
    }
    eventually(15, "dispatch", || async {
        (max_offset_sum(&driver, &c.broker_a, &topic).await == N).then_some(())
    })
    .await;
    driver.heartbeat(&c.broker_a, &group, &[&topic]).await;
    // The consumer reads everything but commits only k = 3 + 2.
    let q0 = queue(&topic, "broker-a", 0);
    let q1 = queue(&topic, "broker-a", 1);
    assert_eq!(driver.pull_all(&c.broker_a, &group, &q0, 0).await.len(), 5);
    driver.commit(&c.broker_a, &group, &q0, 3).await;
    driver.commit(&c.broker_a, &group, &q1, 2).await;
    let k = 5;
    let stats = driver
        .admin
        .consume_stats(&c.broker_a, &group, Some(&topic))
        .await
        .expect("consume stats");
    assert_eq!(stats.offsets.len(), 2);
    assert_eq!(stats.lag_where(|t| t == topic), N - k);
    let per_queue: Vec<(i32, i64, i64)> = stats
        .offsets
        .iter()
        .map(|(q, o)| (q.queue_id, o.broker_offset, o.consumer_offset))
        .collect();
    assert_eq!(per_queue, [(0, 5, 3), (1, 5, 2)]);
    let all_topics = driver
        .admin
        .consume_stats(&c.broker_a, &group, None)
        .await
        .expect("all topics");
    assert_eq!(all_topics.lag_where(|t| t == topic), N - k);
    assert_eq!(
        driver
            .admin
            .consumer_offset(&c.broker_a, &group, &topic, 0)
            .await
            .expect("offset"),
        Some(3)
    );
    let never = driver
        .admin
        .consumer_offset(&c.broker_a, &unique("NeverCommitted"), &topic, 0)
        .await
        .expect("offset");
    // A 4.9 broker cannot say "never committed": it ignores
    // setZeroIfNotFound and answers 0 while the queue still starts at 0
    // (ConsumerManageProcessor.queryConsumerOffset). 5.x and rocketmq-rust
    // answer QUERY_NOT_FOUND.
    let expected_never = if c.flavour == Flavour::Java4 {
        Some(0)
    } else {
        None
    };
    assert_eq!(never, expected_never);
    // The heartbeat made the group online, and the broker knows its config.
    let connection = driver
        .admin
        .consumer_connections(&c.broker_a, &group)
        .await
        .expect("connections");
    let connection = connection.expect("group is online");
    assert_eq!(connection.connection_set.len(), 1);
    assert_eq!(connection.message_model.as_deref(), Some("CLUSTERING"));
    assert!(connection.subscription_table.contains_key(&topic));
    let offline = driver
        .admin
        .consumer_connections(&c.broker_a, &unique("Offline"))
        .await
        .expect("offline");
    assert!(offline.is_none(), "an unknown group is not online");
    let groups = driver
        .admin
        .subscription_groups(&c.broker_a)
        .await
        .expect("groups");
    assert!(
        groups.contains_key(&group),
        "201 lists the group: {:?}",
        groups.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_message_sent_back_with_delay_level_minus_one_is_counted_in_the_dlq() {
    let c = cluster();
    let driver = Driver::new();
    let topic = unique("Dlq");
    let group = unique("DlqGroup");
    driver.create_topic(&c.broker_b, &topic, 1).await;
    for i in 0..3 {
        driver
            .send(
                &c.broker_b,
                "broker-b",
                &topic,
                0,
                &format!("dlq-{i}"),
                b"x",
            )
            .await;
    }
    let q = queue(&topic, "broker-b", 0);
    let messages = eventually(15, "three messages pullable", || async {
        let all = driver.pull_all(&c.broker_b, &group, &q, 0).await;
        (all.len() == 3).then_some(all)
    })
    .await;
    for message in &messages[..2] {
        driver.send_back(&c.broker_b, &group, message, -1, 16).await;
    }
    let dlq = format!("%DLQ%{group}");
    let depth = eventually(15, "two messages in the DLQ", || async {
        let depth = max_offset_sum(&driver, &c.broker_b, &dlq).await;
        (depth >= 2).then_some(depth)
    })
    .await;
    assert_eq!(depth, 2);
    let parked = driver
        .pull_all(&c.broker_b, &group, &queue(&dlq, "broker-b", 0), 0)
        .await;
    let keys: BTreeSet<String> = parked
        .iter()
        .flat_map(|m| m.keys().map(str::to_string))
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["dlq-0".to_string(), "dlq-1".to_string()])
    );
    assert!(
        parked
            .iter()
            .all(|m| m.properties.get("RETRY_TOPIC") == Some(&topic))
    );
}

#[tokio::test]
async fn trace_records_written_by_the_driver_decode_to_the_same_keys() {
    let c = cluster();
    let driver = Driver::new();
    let topic = unique("Traced");
    let group = unique("TracedGroup");
    driver.create_topic(&c.broker_a, &topic, 1).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            driver
                .send(
                    &c.broker_a,
                    "broker-a",
                    &topic,
                    0,
                    &format!("trace-{i}"),
                    b"x",
                )
                .await,
        );
    }
    let mut records = Vec::new();
    for s in &sent {
        records.push(TraceRecord::Pub(PubRecord {
            timestamp: now_ms(),
            region_id: "DefaultRegion".into(),
            group: "mqaudit_test_producer".into(),
            topic: topic.clone(),
            msg_id: s.msg_id.clone(),
            tags: "null".into(),
            keys: s.key.clone(),
            store_host: s.broker_addr.clone(),
            body_length: 1,
            cost_time_ms: 1,
            msg_type: 0,
            offset_msg_id: s.offset_msg_id.clone(),
            success: true,
            client_host: None,
        }));
        records.push(TraceRecord::SubAfter(SubAfterRecord {
            request_id: format!("req-{}", s.msg_id),
            msg_id: s.msg_id.clone(),
            cost_time_ms: 2,
            success: true,
            keys: s.key.clone(),
            context_code: Some(0),
            timestamp: Some(now_ms()),
            group: Some(group.clone()),
        }));
    }
    let written = driver.write_trace(&c.broker_a, "broker-a", &records).await;
    let q = queue(TRACE_TOPIC, "broker-a", written.queue_id);
    let stored = eventually(15, "trace message pullable", || async {
        let found = driver
            .pull(&c.broker_a, &group, &q, written.queue_offset, 1)
            .await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert!(!stored[0].is_compressed());
    let decoded = trace::decode(&stored[0].body).expect("trace body decodes");
    assert_eq!(decoded, records);
    let pub_keys: Vec<String> = decoded
        .iter()
        .filter_map(|r| match r {
            TraceRecord::Pub(p) if p.success => Some(p.keys.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        pub_keys,
        sent.iter().map(|s| s.key.clone()).collect::<Vec<_>>()
    );
    // The trace message is findable by any msgId it covers, as the dashboard does.
    let by_msg_id = eventually(15, "trace indexed by msgId", || async {
        let found = driver
            .admin
            .query_message_by_key(
                &c.broker_a,
                TRACE_TOPIC,
                &sent[2].msg_id,
                now_ms() - 60_000,
                now_ms() + 60_000,
            )
            .await
            .expect("query");
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(by_msg_id[0].queue_offset, written.queue_offset);
}

#[tokio::test]
async fn the_slave_catches_up_and_ha_status_shows_an_in_sync_slave() {
    let c = cluster();
    let driver = Driver::new();
    let topic = unique("Replicated");
    driver.create_topic(&c.broker_a, &topic, 1).await;
    for i in 0..10 {
        driver
            .send(
                &c.broker_a,
                "broker-a",
                &topic,
                0,
                &format!("rep-{i}"),
                &[7u8; 512],
            )
            .await;
    }
    // A 4.9 broker answers GET_BROKER_RUNTIME_INFO with a remote error
    // (NoSuchElementException in its TPS sampling) until its stats thread
    // has sampled once: retried, and named if it lasts.
    let offset = |addr: &'static str| {
        let driver = &driver;
        async move {
            driver
                .admin
                .runtime_info(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?
                .int("commitLogMaxOffset")
                .expect("int")
                .ok_or(format!("{addr}: no commitLogMaxOffset"))
        }
    };
    let (master, slave) =
        crate::support::eventually_explained(30, "slave commit log equals master's", || async {
            let (master, slave) = (offset(&c.broker_a).await?, offset(&c.broker_a_slave).await?);
            if master == slave && master > 0 {
                Ok((master, slave))
            } else {
                Err(format!("master at {master}, slave at {slave}"))
            }
        })
        .await;
    assert_eq!(master - slave, 0);
    if c.flavour == Flavour::Java4 {
        // 4.9 has no GET_BROKER_HA_STATUS: the posture falls back to commit-log
        // offsets (shown above), and the call says it is unsupported.
        match driver
            .admin
            .ha_status(&c.broker_a)
            .await
            .expect("ha status")
        {
            HaStatus::NotAvailable { code, .. } => {
                assert_eq!(code, 3, "REQUEST_CODE_NOT_SUPPORTED")
            }
            other => panic!("a 4.9 broker reported HA status: {other:?}"),
        }
        return;
    }
    let info = eventually(20, "HA status in sync with diff 0", || async {
        match driver
            .admin
            .ha_status(&c.broker_a)
            .await
            .expect("ha status")
        {
            HaStatus::Available(info)
                if info.in_sync_slave_nums >= 1
                    && info
                        .ha_connection_info
                        .iter()
                        .any(|h| h.in_sync && h.diff == 0) =>
            {
                Some(info)
            }
            _ => None,
        }
    })
    .await;
    assert!(info.master);
    assert!(info.master_commit_log_max_offset >= master);
    match driver
        .admin
        .ha_status(&c.broker_a_slave)
        .await
        .expect("slave ha")
    {
        HaStatus::Available(slave_info) => assert!(!slave_info.master),
        other => panic!("slave HA status: {other:?}"),
    }
}
