//! Benchmark: trace ingest from a real broker, and where its time goes.
//!
//! On the cluster of `MQAUDIT_CLUSTER_ENV` (`scripts/rocketmq-cluster.sh up
//! DIR`), it writes `--messages N` trace messages (default 20,000, half of
//! them a producer's batch of 10 `Pub` records, half a consumer's batch of
//! 10 `SubBefore` + 10 `SubAfter`) to a fresh trace topic of 8 queues on
//! each master, then in the same run, `--rounds R` times (default 3)
//! alternating:
//!
//! - **pull**: every queue read to its end, 32 messages a pull, only the
//!   broker calls and the frame decoding, at 1 and 8 pulls in flight;
//! - **decode**: the trace bodies of what was pulled decoded in memory;
//! - **ingest**: `audit::trace::ingest` (pull, decode, rows into a fresh
//!   store, cursors), at `trace_concurrency` 1 and 8.
//!
//! It prints each leg's median and the ratios, for docs/benchmarks.md.
//!
//! `MQAUDIT_CLUSTER_ENV=DIR/cluster.env cargo bench --bench trace_ingest`

/// The same allocator as the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mqaudit::admin::{Admin, Cluster, PullStatus};
use mqaudit::audit::store::Store;
use mqaudit::audit::trace::{Ingest, ingest};
use mqaudit::body::json::MessageQueue;
use mqaudit::body::trace::{PubRecord, SubAfterRecord, SubBeforeRecord, TraceRecord};
use mqaudit::config::Config;
use mqaudit::remoting::{ClientOptions, Pool};

use support::driver::Driver;

const QUEUES: i32 = 8;
const RECORDS_PER_MESSAGE: usize = 10;
const PULL_BATCH: i32 = 32;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// One trace message's records: a producer's `Pub` batch or a consumer's
/// `SubBefore` + `SubAfter` batch, for messages `first..first + 10`.
fn batch(topic: &str, group: &str, first: usize, consumer: bool, now_ms: i64) -> Vec<TraceRecord> {
    let msg_id = |i: usize| format!("7F00000100002A9F0000000000{i:06X}");
    let key = |i: usize| format!("order-{i:08}");
    let mut records = Vec::new();
    for i in first..first + RECORDS_PER_MESSAGE {
        let time = now_ms + i as i64;
        if consumer {
            let request_id = format!("req-{i}");
            records.push(TraceRecord::SubBefore(SubBeforeRecord {
                timestamp: time,
                region_id: "DefaultRegion".into(),
                group: group.to_string(),
                request_id: request_id.clone(),
                msg_id: msg_id(i),
                retry_times: 0,
                keys: key(i),
                client_host: None,
            }));
            records.push(TraceRecord::SubAfter(SubAfterRecord {
                request_id,
                msg_id: msg_id(i),
                cost_time_ms: 1,
                success: true,
                keys: key(i),
                context_code: Some(0),
                timestamp: Some(time + 1),
                group: Some(group.to_string()),
            }));
        } else {
            records.push(TraceRecord::Pub(PubRecord {
                timestamp: time,
                region_id: "DefaultRegion".into(),
                group: "bench_producer".into(),
                topic: topic.to_string(),
                msg_id: msg_id(i),
                tags: "null".into(),
                keys: key(i),
                store_host: "127.0.0.1:10911".into(),
                body_length: 100,
                cost_time_ms: 1,
                msg_type: 0,
                offset_msg_id: format!("7F00000100002A9F{i:016X}"),
                success: true,
                client_host: None,
            }));
        }
    }
    records
}

/// Every queue read to its end, `in_flight` pulls at a time (one per queue
/// per round, as the ingest does): (messages, their bodies).
async fn pull_all(
    admin: &Admin,
    queues: &[(String, MessageQueue)],
    in_flight: usize,
) -> Vec<bytes::Bytes> {
    let mut offsets = vec![0_i64; queues.len()];
    let mut done = vec![false; queues.len()];
    let mut bodies = Vec::new();
    while done.iter().any(|d| !d) {
        let open: Vec<usize> = (0..queues.len()).filter(|&i| !done[i]).collect();
        for chunk in open.chunks(in_flight) {
            let pulls = chunk.iter().map(|&i| {
                let (addr, queue) = &queues[i];
                admin.pull(addr, "mqaudit_bench", queue, offsets[i], PULL_BATCH)
            });
            let results = futures_util::future::join_all(pulls).await;
            for (&i, result) in chunk.iter().zip(results) {
                let pull = result.expect("pull");
                match pull.status {
                    PullStatus::Found => {
                        offsets[i] = pull
                            .messages
                            .last()
                            .map_or(pull.next_begin_offset, |m| m.queue_offset + 1);
                        done[i] = offsets[i] >= pull.max_offset;
                        bodies.extend(pull.messages.into_iter().map(|m| m.body));
                    }
                    _ => done[i] = true,
                }
            }
        }
    }
    bodies
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let messages = arg(&args, "--messages", 20_000);
    let rounds = arg(&args, "--rounds", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(messages, rounds));
}

async fn run(messages: usize, rounds: usize) {
    let c = support::cluster();
    let driver = Driver::new();
    let (trace_topic, topic, group) = (
        support::unique("BenchTrace"),
        support::unique("BenchOrders"),
        support::unique("BenchGroup"),
    );
    let masters = [
        ("broker-a", c.broker_a.clone()),
        ("broker-b", c.broker_b.clone()),
    ];
    for (_, addr) in &masters {
        driver.create_topic(addr, &trace_topic, QUEUES).await;
    }
    let started_ms = mqaudit::clock::Clock::system().now_ms();
    let write = Instant::now();
    let mut body_bytes = 0;
    for m in 0..messages {
        let (name, addr) = &masters[m % 2];
        let records = batch(
            &topic,
            &group,
            (m / 2) * RECORDS_PER_MESSAGE,
            m % 2 == 1,
            started_ms,
        );
        let body = mqaudit::body::trace::encode(&records);
        body_bytes += body.len();
        let queue = ((m / 2) % QUEUES as usize) as i32;
        driver
            .send(
                addr,
                name,
                &trace_topic,
                queue,
                &format!("bench-{m}"),
                body.as_bytes(),
            )
            .await;
    }
    println!(
        "wrote {messages} trace messages ({} records, {:.1} MiB of bodies) to {trace_topic} ({} queues on each of 2 masters) in {:.1} s",
        messages / 2 * RECORDS_PER_MESSAGE * 3,
        body_bytes as f64 / 1048576.0,
        QUEUES,
        write.elapsed().as_secs_f64()
    );
    // Let both brokers dispatch everything to their consume queues.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let admin = Admin::new(
        Arc::new(Pool::new(ClientOptions::default())),
        Duration::from_secs(10),
    );
    let queues: Vec<(String, MessageQueue)> = masters
        .iter()
        .flat_map(|(name, addr)| {
            (0..QUEUES).map(|q| {
                (
                    addr.clone(),
                    MessageQueue {
                        topic: trace_topic.clone(),
                        broker_name: (*name).to_string(),
                        queue_id: q,
                    },
                )
            })
        })
        .collect();
    let dir = std::env::temp_dir().join(support::unique("mqaudit-bench-trace"));
    let flow_toml = format!(
        "[[cluster]]\nname = \"bench\"\nnamesrv = [\"{}\"]\n\n[audit]\ndata_dir = \"{}\"\n\n\
         [[flow]]\nname = \"bench\"\ncluster = \"bench\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\n\
         schedule = \"0 * * * * *\"\nproduced = {{ kind = \"rocketmq_trace\", topic = \"{trace_topic}\" }}\n\
         consumed = {{ kind = \"rocketmq_trace\", topic = \"{trace_topic}\" }}\n",
        c.namesrv,
        dir.display()
    );
    let config = Config::from_toml_str(&flow_toml, |_| None).expect("config");
    let flow = config.flows[0].clone();
    let cluster = Cluster::new("bench", vec![c.namesrv.clone()], admin.clone());

    let (mut pull_1, mut pull_8, mut decode, mut ingest_1, mut ingest_8) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rows = 0;
    for round in 0..rounds {
        let t = Instant::now();
        let bodies = pull_all(&admin, &queues, 1).await;
        pull_1.push(t.elapsed().as_secs_f64());
        assert_eq!(bodies.len(), messages, "pulled every trace message");
        let t = Instant::now();
        bodies.iter().for_each(|b| {
            rows += mqaudit::body::trace::decode(b).expect("decode").len();
        });
        decode.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let bodies = pull_all(&admin, &queues, 8).await;
        pull_8.push(t.elapsed().as_secs_f64());
        assert_eq!(bodies.len(), messages);
        for (concurrency, out) in [(1, &mut ingest_1), (8, &mut ingest_8)] {
            let data = dir.join(format!("round-{round}-c{concurrency}"));
            let store = Store::open(&data).await.expect("store");
            let t = Instant::now();
            let read = ingest(
                &cluster,
                &store,
                &flow,
                &Ingest {
                    topic: &trace_topic,
                    budget: messages + 1_000,
                    concurrency,
                    since_ms: started_ms - 60_000,
                    now_ms: mqaudit::clock::Clock::system().now_ms(),
                },
            )
            .await
            .expect("ingest")
            .messages;
            out.push(t.elapsed().as_secs_f64());
            assert_eq!(read, messages, "ingested every trace message");
        }
    }
    let per_s = |s: f64| messages as f64 / s;
    let (p1, p8, d, i1, i8) = (
        median(pull_1),
        median(pull_8),
        median(decode),
        median(ingest_1),
        median(ingest_8),
    );
    println!(
        "medians of {rounds} rounds, {messages} trace messages ({} records decoded per round):",
        rows / rounds
    );
    println!(
        "  pull only, 1 in flight:   {p1:7.2} s  {:8.0} msg/s",
        per_s(p1)
    );
    println!(
        "  pull only, 8 in flight:   {p8:7.2} s  {:8.0} msg/s",
        per_s(p8)
    );
    println!(
        "  decode only:              {d:7.2} s  {:8.0} msg/s",
        per_s(d)
    );
    println!(
        "  ingest, concurrency 1:    {i1:7.2} s  {:8.0} msg/s",
        per_s(i1)
    );
    println!(
        "  ingest, concurrency 8:    {i8:7.2} s  {:8.0} msg/s",
        per_s(i8)
    );
    println!(
        "  ratios: ingest c1/c8 {:.2}; ingest c8 / pull-only 8 {:.2}; decode share of ingest c8 {:.0} %",
        i1 / i8,
        i8 / p8,
        d / i8 * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
