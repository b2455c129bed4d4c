//! A demonstration workload for the quick start, against a cluster started
//! by `scripts/rocketmq-cluster.sh` (reads its `cluster.env`):
//!
//! * keyed messages on three topics spread over broker-a and broker-b;
//! * `quickstart-healthy`: consumes and commits everything;
//! * `quickstart-lagging`: commits only the first half;
//! * `quickstart-failing`: every tenth message fails and goes to `%DLQ%`.
//!
//! Usage: `cargo run --example workload -- DIR/cluster.env [MESSAGES_PER_TOPIC]`

/// The test driver: a producer and consumer on mqaudit's own codec.
#[path = "../tests/support/driver.rs"]
#[allow(dead_code)]
mod driver;

use mqaudit::body::json::MessageQueue;

use driver::Driver;

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
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "workload: {problem}\nusage: cargo run --example workload -- DIR/cluster.env [MESSAGES_PER_TOPIC]"
    );
    std::process::exit(64);
}
