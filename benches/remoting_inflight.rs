//! Benchmark: one remoting connection to the real test broker on loopback,
//! with 64 small requests in flight (GET_MAX_OFFSET on a trace-topic queue),
//! against 1 in flight on the same connection, side by side in one run.
//!
//! Run: `scripts/rocketmq-cluster.sh up DIR` then
//! `MQAUDIT_CLUSTER_ENV=DIR/cluster.env cargo bench --bench remoting_inflight`
//! (or pass `--addr host:port`). Prints the median, min and max requests per
//! second over the runs, and the ratio of the medians.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mqaudit::remoting::{Client, ClientOptions, Command};
use tokio::time::Instant;

const RUNS: usize = 7;
const REQUESTS_PER_RUN: usize = 40_000;

fn broker_addr() -> String {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--addr") {
        return args.get(i + 1).cloned().expect("--addr needs a value");
    }
    let path = std::env::var("MQAUDIT_CLUSTER_ENV")
        .expect("set MQAUDIT_CLUSTER_ENV=DIR/cluster.env (scripts/rocketmq-cluster.sh up DIR) or pass --addr");
    let text = std::fs::read_to_string(&path).expect("read cluster env");
    text.lines()
        .find_map(|l| l.strip_prefix("BROKER_B_ADDR="))
        .expect("BROKER_B_ADDR in cluster env")
        .to_string()
}

fn request() -> Command {
    let fields = BTreeMap::from([
        ("topic".to_string(), "RMQ_SYS_TRACE_TOPIC".to_string()),
        ("queueId".to_string(), "0".to_string()),
    ]);
    Command::request(30, fields)
}

/// Requests per second with `in_flight` concurrent requesters sharing one client.
async fn run(client: &Arc<Client>, in_flight: usize, total: usize) -> f64 {
    let started = Instant::now();
    let per_task = total / in_flight;
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let response = client.invoke(request()).await.expect("request");
                assert_eq!(
                    response.code, 0,
                    "GET_MAX_OFFSET failed: {:?}",
                    response.remark
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    (per_task * in_flight) as f64 / started.elapsed().as_secs_f64()
}

fn summary(mut rates: Vec<f64>) -> (f64, f64, f64) {
    rates.sort_by(|a, b| a.total_cmp(b));
    (rates[rates.len() / 2], rates[0], rates[rates.len() - 1])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let addr = broker_addr();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = Arc::new(Client::new(
            &addr,
            ClientOptions { request_timeout: Duration::from_secs(10), acl: None },
        ));
        // Warm up: connect and let the broker JIT-free path settle.
        run(&client, 64, 5_000).await;
        let mut wide = Vec::new();
        let mut serial = Vec::new();
        for _ in 0..RUNS {
            wide.push(run(&client, 64, REQUESTS_PER_RUN).await);
            serial.push(run(&client, 1, REQUESTS_PER_RUN / 8).await);
        }
        let (w_med, w_min, w_max) = summary(wide);
        let (s_med, s_min, s_max) = summary(serial);
        println!("remoting_inflight against {addr}, {RUNS} runs each, interleaved");
        println!("  64 in flight: median {w_med:.0} req/s (min {w_min:.0}, max {w_max:.0}), {REQUESTS_PER_RUN} requests per run");
        println!("   1 in flight: median {s_med:.0} req/s (min {s_min:.0}, max {s_max:.0}), {} requests per run", REQUESTS_PER_RUN / 8);
        println!("  ratio of medians: {:.1}x", w_med / s_med);
    });
}
