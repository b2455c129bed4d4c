//! The broker core beyond offsets, through `mqaudit serve` on a private
//! real cluster of the suite's flavour, each state driven on purpose: a
//! delay-level message held (Java), a timer message held (5.x), a
//! transaction half message left unresolved until the broker discards it
//! (Java), a 5.x FIFO topic, the retention margin of a lagging group, a
//! master switched read-only and back, and the name server killed and
//! restarted. Exact values throughout.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use mqaudit::admin::MessageQueue;

use crate::exporter::{http_get, parse_metrics, sum};
use crate::support::driver::Driver;
use crate::support::{
    Daemon, Flavour, PrivateCluster, cluster, eventually_explained, free_port, now_ms, unique,
};

type Samples = Vec<(String, BTreeMap<String, String>, f64)>;
/// (kind, subject) of a doctor risk.
type Named = (String, String);

fn scrape(listen: &str) -> Result<Samples, String> {
    let (status, body, took) = http_get(listen, "/metrics").ok_or("no answer")?;
    if status != 200 || took > Duration::from_secs(1) {
        return Err(format!("scrape: status {status} in {took:?}"));
    }
    Ok(parse_metrics(&body))
}

/// Note a figure that differs from what it should be.
fn want(wrong: &mut Vec<String>, what: &str, got: Option<f64>, expected: Option<f64>) {
    if got != expected {
        wrong.push(format!("{what}: {got:?}, want {expected:?}"));
    }
}

/// `mqaudit doctor --format json` against a name server: its risks as
/// (kind, subject), and its name servers as (addr, reachable).
fn doctor(namesrv: &str) -> (Vec<Named>, Vec<(String, bool)>) {
    let report = crate::doctor::doctor_json(namesrv);
    let risks = report["risks"]
        .as_array()
        .expect("risks")
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("").to_string(),
                r["subject"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let name_servers = report["name_servers"]
        .as_array()
        .expect("name_servers")
        .iter()
        .map(|n| {
            (
                n["addr"].as_str().unwrap_or("").to_string(),
                n["reachable"] == true,
            )
        })
        .collect();
    (risks, name_servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_core_states_driven_on_a_real_cluster() {
    let flavour = cluster().flavour;
    let java = flavour != Flavour::Rust;
    let v5 = flavour == Flavour::Java5;
    let private = std::sync::Arc::new(
        tokio::task::spawn_blocking(PrivateCluster::start)
            .await
            .expect("private cluster"),
    );
    let (namesrv, broker_a, broker_b) = (
        private.get("NAMESRV_ADDR").to_string(),
        private.get("BROKER_A_ADDR").to_string(),
        private.get("BROKER_B_ADDR").to_string(),
    );
    let driver = Driver::new();
    let topic = unique("Core");
    driver.create_topic(&broker_a, &topic, 2).await;
    let fifo = unique("CoreFifo");
    if v5 {
        driver
            .create_topic_with(&broker_a, &fifo, 1, Some("+message.type=FIFO"))
            .await;
    }
    // A group that consumed 1 of 4 messages of queue 0: lag 3, dated.
    let group = unique("CoreGroup");
    for i in 0..4 {
        driver
            .send(&broker_a, "broker-a", &topic, 0, &format!("core-{i}"), b"x")
            .await;
    }
    driver.heartbeat(&broker_a, &group, &[&topic]).await;
    let queue = MessageQueue {
        topic: topic.clone(),
        broker_name: "broker-a".to_string(),
        queue_id: 0,
    };
    driver.commit(&broker_a, &group, &queue, 1).await;
    let on_a = (broker_a.as_str(), "broker-a", topic.as_str(), 1);
    if java {
        // Level 18 holds it two minutes on the test cluster.
        driver
            .send_with(on_a, "core-delayed", b"x", &[("DELAY", "18")], 0)
            .await;
    }
    if v5 {
        let due = (now_ms() + 120_000).to_string();
        driver
            .send_with(on_a, "core-timer", b"x", &[("TIMER_DELIVER_MS", &due)], 0)
            .await;
    }

    // Discovery (broker configs among it) refreshed every 3 s (a cycle of
    // 3 s leaves Java brokers a 2 s call timeout on a loaded machine), so a
    // permission switch shows within seconds.
    let listen = format!("127.0.0.1:{}", free_port());
    let config = std::env::temp_dir().join(unique("mqaudit-core.toml"));
    std::fs::write(
        &config,
        format!(
            "[[cluster]]\nname = \"core\"\nnamesrv = [\"{namesrv}\"]\n\n[collect]\ninterval_seconds = 3\ndiscovery_interval_seconds = 3\n\n[web]\nlisten_address = \"{listen}\"\n"
        ),
    )
    .expect("config");
    let _serve = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mqaudit"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mqaudit serve"),
    );
    let on = |broker: &'static str| [("broker", broker)];
    eventually_explained(90, "the core figures", || async {
        let s = scrape(&listen)?;
        let mut wrong = Vec::new();
        want(
            &mut wrong,
            "name server up",
            sum(&s, "rocketmq_namesrv_up", &[]),
            Some(1.0),
        );
        want(
            &mut wrong,
            "brokers listed",
            sum(&s, "rocketmq_namesrv_brokers", &[]),
            Some(3.0),
        );
        want(
            &mut wrong,
            "masters writable",
            sum(&s, "rocketmq_broker_writable", &[("broker_id", "0")]),
            Some(2.0),
        );
        want(
            &mut wrong,
            "reserve",
            sum(
                &s,
                "rocketmq_broker_file_reserved_time_seconds",
                &on("broker-a"),
            ),
            Some(2.0 * 72.0 * 3600.0),
        );
        let info = |t: &str, label: &str| {
            s.iter()
                .find(|(n, l, _)| n == "rocketmq_topic_info" && l["topic"] == t)
                .map(|(_, l, _)| l[label].clone())
        };
        if info(&topic, "message_type").as_deref() != Some("UNSPECIFIED")
            || info(&topic, "cleanup_policy").as_deref() != Some("DELETE")
            || info(&topic, "perm").as_deref() != Some("rw")
        {
            wrong.push(format!("topic info of {topic}"));
        }
        if v5 && info(&fifo, "message_type").as_deref() != Some("FIFO") {
            wrong.push(format!("{fifo} is {:?}", info(&fifo, "message_type")));
        }
        // The margin is the reserve less the age of the oldest unconsumed message.
        let g = [("group", group.as_str()), ("topic", topic.as_str())];
        let lag = sum(&s, "rocketmq_consumer_group_lag_seconds", &g);
        let margin = sum(&s, "rocketmq_consumer_group_retention_margin_seconds", &g);
        match (lag, margin) {
            (Some(lag), Some(margin)) if (margin - (72.0 * 3600.0 - lag)).abs() < 1e-6 => {}
            other => wrong.push(format!("lag and margin {other:?}")),
        }
        want(
            &mut wrong,
            "lag",
            sum(&s, "rocketmq_consumer_group_lag_messages", &g),
            Some(3.0),
        );
        if java {
            let level = [("broker", "broker-a"), ("level", "18")];
            want(
                &mut wrong,
                "level 18 held",
                sum(&s, "rocketmq_schedule_backlog_messages", &level),
                Some(1.0),
            );
            want(
                &mut wrong,
                "level 18 not due",
                sum(&s, "rocketmq_schedule_delivery_lag_seconds", &level),
                Some(0.0),
            );
        }
        if v5 {
            want(
                &mut wrong,
                "timer held",
                sum(&s, "rocketmq_timer_messages", &on("broker-a")),
                Some(1.0),
            );
        }
        want(
            &mut wrong,
            "collectors",
            sum(&s, "mqaudit_collector_success", &[]),
            Some(8.0),
        );
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("{wrong:?}"))
        }
    })
    .await;

    if java {
        // A half message nobody resolves: pending, checked, discarded. The
        // cluster checks after 2 s and discards after two checks, a pending
        // spell a 3 s collection on a loaded machine can miss; so the check
        // is held back (the broker reads its transaction timeout at every
        // check round) until the pending message has been seen.
        driver
            .update_broker_config(&broker_a, "transactionTimeOut", "600000")
            .await;
        let half = [("TRAN_MSG", "true"), ("PGROUP", "CoreNobody")];
        driver
            .send_with(on_a, "core-unresolved", b"x", &half, 4)
            .await;
        eventually_explained(30, "the half message pending", || async {
            let s = scrape(&listen)?;
            let pending = sum(&s, "rocketmq_transaction_half_messages", &on("broker-a"));
            match pending {
                Some(n) if n >= 1.0 => Ok(()),
                other => Err(format!("pending {other:?}")),
            }
        })
        .await;
        driver
            .update_broker_config(&broker_a, "transactionTimeOut", "2000")
            .await;
        eventually_explained(90, "the half message discarded", || async {
            let s = scrape(&listen)?;
            let labels = [("broker", "broker-a"), ("topic", topic.as_str())];
            let discarded = sum(&s, "rocketmq_transaction_discarded_messages_total", &labels);
            let pending = sum(&s, "rocketmq_transaction_half_messages", &on("broker-a"));
            match (discarded, pending) {
                (Some(1.0), Some(0.0)) => Ok(()),
                other => Err(format!("discarded and pending {other:?}")),
            }
        })
        .await;
        // The doctor names it too.
        let (risks, _) = doctor(&namesrv);
        assert!(
            risks.contains(&(
                "transaction_discarded".to_string(),
                "broker-a/0".to_string()
            )),
            "{risks:?}"
        );
    }

    // broker-b read-only, then writable again.
    driver
        .update_broker_config(&broker_b, "brokerPermission", "4")
        .await;
    eventually_explained(60, "broker-b read-only", || async {
        let s = scrape(&listen)?;
        match sum(&s, "rocketmq_broker_writable", &on("broker-b")) {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    driver
        .update_broker_config(&broker_b, "brokerPermission", "6")
        .await;

    // The name server killed: shown down, scrapes keep answering; restarted: up.
    let c = private.clone();
    tokio::task::spawn_blocking(move || c.node("kill", "namesrv"))
        .await
        .expect("kill namesrv");
    eventually_explained(30, "the name server down", || async {
        let s = scrape(&listen)?;
        match (
            sum(&s, "rocketmq_namesrv_up", &[]),
            sum(&s, "mqaudit_collector_success", &[("collector", "namesrv")]),
        ) {
            (Some(0.0), Some(0.0)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let c = private.clone();
    tokio::task::spawn_blocking(move || c.node("start", "namesrv"))
        .await
        .expect("restart namesrv");
    eventually_explained(90, "the name server back", || async {
        let s = scrape(&listen)?;
        match (
            sum(&s, "rocketmq_namesrv_up", &[]),
            sum(&s, "rocketmq_broker_writable", &on("broker-b")),
        ) {
            (Some(1.0), Some(1.0)) => Ok(()),
            other => Err(format!("up and broker-b writable {other:?}")),
        }
    })
    .await;
}

/// An acknowledged message gone from its topic is a `store` loss — unless
/// the topic is compacted (5.x `cleanup.policy = COMPACTION`, which keeps
/// only the latest message per key): dropped by design, counted apart. The
/// gone message is a ledger record whose broker id points past the end of
/// the real broker's commit log; the topics and their policies are real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_drops_messages_by_design_a_normal_one_loses_them() {
    let c = cluster();
    let driver = Driver::new();
    let port: u16 = c
        .broker_a
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    let gone_id = format!("7F000001{:08X}{:016X}", u32::from(port), 1u64 << 40);
    let mut cases = vec![(unique("Normal"), None, "lost/store")];
    if c.flavour == Flavour::Java5 {
        cases.push((
            unique("Compacted"),
            Some("+cleanup.policy=COMPACTION"),
            "compacted",
        ));
    }
    for (topic, attributes, expected) in cases {
        driver
            .create_topic_with(&c.broker_a, &topic, 1, attributes)
            .await;
        let dir = std::env::temp_dir().join(unique("mqaudit-compacted"));
        std::fs::create_dir_all(&dir).expect("dir");
        let start = (now_ms() / 60_000 - 2) * 60_000;
        let produced = dir.join("produced.jsonl");
        let consumed = dir.join("consumed.jsonl");
        std::fs::write(
            &produced,
            format!(
                "{{\"key\":\"gone-1\",\"time_ms\":{},\"msg_id\":\"7F00000100000000000000000000C0DE\",\"offset_msg_id\":\"{gone_id}\",\"status\":\"SEND_OK\"}}\n",
                start + 1_000
            ),
        )
        .expect("ledger");
        std::fs::write(&consumed, "").expect("ledger");
        let flow = format!(
            "[[flow]]\nname = \"f\"\ncluster = \"test\"\ntopic = \"{topic}\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n\
             window_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 0\nsubscription = \"*\"\n\
             produced = {{ kind = \"jsonl\", path = \"{}\" }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
            produced.display(),
            consumed.display()
        );
        let auditor = crate::audit::auditor(&dir, &flow).await;
        auditor
            .run(now_ms(), Some((start, start + 60_000)), &|_, _| {})
            .await
            .expect("audit run");
        let findings = auditor
            .store()
            .findings(Some("f"), None, None, 100)
            .await
            .expect("findings");
        let verdicts: Vec<String> = findings
            .iter()
            .map(|f| {
                format!(
                    "{}/{}",
                    f.status.as_str(),
                    f.stage.map_or("?", |s| s.as_str())
                )
            })
            .collect();
        let totals = auditor.store().totals("f").await.expect("totals");
        match expected {
            "compacted" => {
                assert!(verdicts.is_empty(), "{topic}: {verdicts:?}");
                assert_eq!(totals.counter("compacted", ""), 1, "{topic}");
                assert_eq!(totals.counter("produced", ""), 0, "{topic}");
            }
            _ => {
                assert_eq!(verdicts, [expected], "{topic}: {findings:?}");
                assert_eq!(totals.counter("compacted", ""), 0, "{topic}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
