//! A demonstration workload for the quick start, against a cluster started
//! by `scripts/rocketmq-cluster.sh` (reads its `cluster.env`):
//!
//! * keyed messages on three topics spread over broker-a and broker-b;
//! * `quickstart-healthy`: consumes and commits everything;
//! * `quickstart-lagging`: commits only the first half;
//! * `quickstart-failing`: every tenth message fails and goes to `%DLQ%`;
//! * for the loss audit, topic `quickstart-audited` with a producer ledger
//!   and a consumer ledger (JSON lines under `DIR/ledger/`) of group
//!   `quickstart-audit`, losing messages on purpose: one never sent (`send`),
//!   one acknowledged without a consumer record (`consume`), one
//!   dead-lettered, and three on broker-b the group has not read yet, which
//!   `scripts/quickstart.sh` then destroys (kill -9 and a cut commit-log
//!   tail: `store`). It prints `audit-expect STATUS STAGE KEY` lines and the
//!   `audit-cut` the script applies.
//!
//! Usage: `cargo run --example workload -- DIR/cluster.env [MESSAGES_PER_TOPIC]`

/// The test driver: a producer and consumer on mqaudit's own codec.
#[path = "../tests/support/driver.rs"]
#[allow(dead_code)]
mod driver;

use std::io::Write as _;

use mqaudit::body::json::MessageQueue;

use driver::Driver;

/// The audited topic and group of the quick start's flow.
const AUDITED_TOPIC: &str = "quickstart-audited";
const AUDITED_GROUP: &str = "quickstart-audit";

const TOPICS: [&str; 3] = [
    "quickstart-orders",
    "quickstart-payments",
    "quickstart-shipments",
];
const QUEUES: i32 = 4;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let env_path = args
        .next()
        .unwrap_or_else(|| usage("missing DIR/cluster.env"));
    let per_topic: i64 = args
        .next()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| usage("MESSAGES_PER_TOPIC is a number"))
        })
        .unwrap_or(200);
    let text = std::fs::read_to_string(&env_path)
        .unwrap_or_else(|e| usage(&format!("cannot read {env_path}: {e}")));
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .unwrap_or_else(|| usage(&format!("{env_path} lacks {key}")))
    };
    let brokers = [
        (get("BROKER_A_ADDR"), "broker-a"),
        (get("BROKER_B_ADDR"), "broker-b"),
    ];
    let driver = Driver::new();

    for topic in TOPICS {
        for (addr, _) in &brokers {
            driver.create_topic(addr, topic, QUEUES).await;
        }
    }
    let mut sent = 0;
    for topic in TOPICS {
        for i in 0..per_topic {
            let (addr, name) = &brokers[(i % 2) as usize];
            let queue = ((i / 2) % i64::from(QUEUES)) as i32;
            driver
                .send(
                    addr,
                    name,
                    topic,
                    queue,
                    &format!("{topic}-{i}"),
                    b"quickstart",
                )
                .await;
            sent += 1;
        }
    }
    println!("sent {sent} keyed messages to {} topics", TOPICS.len());

    for (group, commit_fraction, fail_every) in [
        ("quickstart-healthy", 1.0, 0),
        ("quickstart-lagging", 0.5, 0),
        ("quickstart-failing", 1.0, 10),
    ] {
        let (mut dead, mut behind) = (0, 0);
        for topic in TOPICS {
            for (addr, name) in &brokers {
                driver.heartbeat(addr, group, &[topic]).await;
                for queue_id in 0..QUEUES {
                    let queue = MessageQueue {
                        topic: topic.to_string(),
                        broker_name: name.to_string(),
                        queue_id,
                    };
                    let messages = driver.pull_all(addr, group, &queue, 0).await;
                    for (n, message) in messages.iter().enumerate() {
                        if fail_every > 0 && n % fail_every == 0 {
                            driver.send_back(addr, group, message, -1, 16).await;
                            dead += 1;
                        }
                    }
                    let end = messages.last().map_or(0, |m| m.queue_offset + 1);
                    let committed = (end as f64 * commit_fraction) as i64;
                    driver.commit(addr, group, &queue, committed).await;
                    behind += end - committed;
                }
            }
        }
        println!(
            "group {group}: committed {:.0}% of every queue, {dead} messages dead-lettered",
            commit_fraction * 100.0
        );
        // Machine-readable expectations for scripts/quickstart.sh --check.
        println!("expect lag {group} {behind}");
        println!("expect dlq {group} {dead}");
    }

    let cluster_dir = std::path::PathBuf::from(get("MQAUDIT_CLUSTER_DIR"));
    audited(&driver, &brokers, &cluster_dir.join("ledger")).await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The audited flow's traffic and ledgers, with losses made on purpose.
async fn audited(driver: &Driver, brokers: &[(String, &str); 2], ledger_dir: &std::path::Path) {
    std::fs::create_dir_all(ledger_dir)
        .unwrap_or_else(|e| usage(&format!("{}: {e}", ledger_dir.display())));
    let mut produced = std::fs::File::create(ledger_dir.join("produced.jsonl"))
        .unwrap_or_else(|e| usage(&format!("produced ledger: {e}")));
    let mut consumed = std::fs::File::create(ledger_dir.join("consumed.jsonl"))
        .unwrap_or_else(|e| usage(&format!("consumed ledger: {e}")));
    for (addr, _) in brokers {
        driver.create_topic(addr, AUDITED_TOPIC, 2).await;
    }
    // order-0..13 on broker-a (queues 0, 1), order-14..19 on broker-b queue 0.
    let mut sent = Vec::new();
    for i in 0..20 {
        let (addr, name, queue) = if i < 14 {
            (&brokers[0].0, brokers[0].1, i % 2)
        } else {
            (&brokers[1].0, brokers[1].1, 0)
        };
        let key = format!("order-{i}");
        let s = driver
            .send(addr, name, AUDITED_TOPIC, queue, &key, b"order")
            .await;
        let line = serde_json::json!({
            "key": key, "time_ms": now_ms(), "msg_id": s.msg_id,
            "offset_msg_id": s.offset_msg_id, "status": "SEND_OK",
        });
        writeln!(produced, "{line}").unwrap_or_else(|e| usage(&format!("produced ledger: {e}")));
        sent.push(s);
    }
    // In the outbox, never sent: lost at `send`.
    let line = serde_json::json!({"key": "order-20", "time_ms": now_ms(), "status": "NOT_SENT"});
    writeln!(produced, "{line}").unwrap_or_else(|e| usage(&format!("produced ledger: {e}")));

    // The consumer: everything on broker-a; on broker-b only order-14..16.
    // order-5 is acknowledged without a consume-log line; order-9 fails into
    // the DLQ.
    for (addr, name) in brokers {
        driver
            .heartbeat(addr, AUDITED_GROUP, &[AUDITED_TOPIC])
            .await;
        for queue_id in 0..2 {
            let queue = MessageQueue {
                topic: AUDITED_TOPIC.to_string(),
                broker_name: name.to_string(),
                queue_id,
            };
            let messages = driver.pull_all(addr, AUDITED_GROUP, &queue, 0).await;
            let keep = if *name == "broker-b" {
                3
            } else {
                messages.len()
            };
            for message in &messages[..keep.min(messages.len())] {
                let key = message.keys().next().unwrap_or_default().to_string();
                if key == "order-9" {
                    driver.send_back(addr, AUDITED_GROUP, message, -1, 16).await;
                    continue;
                }
                if key == "order-5" {
                    continue;
                }
                let line = serde_json::json!({
                    "key": key, "time_ms": now_ms(), "msg_id": message.uniq_key(),
                });
                writeln!(consumed, "{line}")
                    .unwrap_or_else(|e| usage(&format!("consumed ledger: {e}")));
            }
            let end = messages[..keep.min(messages.len())]
                .last()
                .map_or(0, |m| m.queue_offset + 1);
            driver.commit(addr, AUDITED_GROUP, &queue, end).await;
        }
    }
    // Where scripts/quickstart.sh cuts broker-b's store: from order-17 on.
    let cut = mqaudit::audit::diagnose::decode_offset_msg_id(&sent[17].offset_msg_id)
        .map_or(0, |(_, offset)| offset);
    println!(
        "audit-cut broker-b {AUDITED_TOPIC} 0 {cut} {}",
        sent[17].queue_offset
    );
    println!(
        "sent 20 keyed messages to {AUDITED_TOPIC}, wrote ledgers under {}",
        ledger_dir.display()
    );
    for (status, stage, key) in [
        ("lost", "send", "order-20"),
        ("lost", "consume", "order-5"),
        ("dead_letter", "dead_letter", "order-9"),
        ("lost", "store", "order-17"),
        ("lost", "store", "order-18"),
        ("lost", "store", "order-19"),
    ] {
        println!("audit-expect {status} {stage} {key}");
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "workload: {problem}\nusage: cargo run --example workload -- DIR/cluster.env [MESSAGES_PER_TOPIC]"
    );
    std::process::exit(64);
}
