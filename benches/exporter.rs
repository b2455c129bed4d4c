//! Exporter benchmarks (numbers in docs/benchmarks.md):
//!
//! * `cycle`: collection cycles against a simulated cluster (FakeCluster, a
//!   protocol fake in a child process: 10,000 topics × 8 queues on 2 of 4
//!   brokers, 2,000 groups, 1 ms added per call). Reports cycle durations,
//!   admin calls per cycle against the official exporter's plan for the same
//!   cluster, and this process's peak RSS.
//! * `scrape`: `/metrics` with 500,000 series, p50/p99 over 200 scrapes.
//! * `idle`: RSS of `mqaudit serve` watching a 100-topic simulated cluster.
//!
//! `cargo bench --bench exporter` runs all three; `-- cycle|scrape|idle` one.

/// The same allocator as the binary, so memory figures match production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqaudit::admin::Admin;
use mqaudit::collector::ClusterCollector;
use mqaudit::config::Config;
use mqaudit::metrics::{Exposition, SnapshotStore};
use mqaudit::remoting::{ClientOptions, Pool};
use support::fake_cluster::{FakeCluster, Spec};

fn status_kib(pid: &str, key: &str) -> u64 {
    support::proc_status_kib(pid, key).unwrap_or(0)
}

/// Run a FakeCluster in a child process; returns the child and the name server.
fn spawn_fake(which: &str) -> (std::process::Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--serve-fake", which])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn fake cluster");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("namesrv line");
    let namesrv = line
        .trim()
        .strip_prefix("NAMESRV=")
        .expect("NAMESRV=")
        .to_string();
    (child, namesrv)
}

fn serve_fake(which: &str) {
    let spec = if which == "large" {
        Spec::large()
    } else {
        Spec::small()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let fake = FakeCluster::start(spec).await;
        println!("NAMESRV={}", fake.namesrv);
        std::io::stdout().flush().expect("flush");
        // Serve until the parent closes stdin.
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .expect("stdin");
    });
}

fn cycle() {
    let spec = Spec::large();
    let (mut child, namesrv) = spawn_fake("large");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let counts: Arc<Mutex<BTreeMap<i32, u64>>> = Arc::default();
    let mut config = Config::for_namesrv(&namesrv).expect("config");
    config.collect.interval = Duration::from_secs(30);
    config.collect.budget = Duration::from_secs(30);
    let observed = counts.clone();
    let admin = Admin::new(
        Arc::new(Pool::new(ClientOptions::default())),
        config.collect.timeout,
    )
    .with_observer(Arc::new(move |code, _| {
        *observed.lock().expect("lock").entry(code).or_default() += 1;
    }));
    let c = &config.clusters[0];
    let cluster = mqaudit::admin::Cluster::new(c.name.clone(), c.namesrv.clone(), admin);
    let mut collector = ClusterCollector::new(cluster, config.collect.clone());
    let store = SnapshotStore::new();
    let mut rows = Vec::new();
    runtime.block_on(async {
        for i in 0..8 {
            let started = Instant::now();
            let exposition = collector.run_cycle(1_700_000_100_000 + i * 30_000).await;
            store.publish("sim", exposition);
            let took = started.elapsed();
            let calls = std::mem::take(&mut *counts.lock().expect("lock"));
            eprintln!(
                "  after cycle {}: RSS {} MiB, peak {} MiB",
                i + 1,
                status_kib("self", "VmRSS:") / 1024,
                status_kib("self", "VmHWM:") / 1024
            );
            rows.push((took, calls));
        }
    });
    drop(child.stdin.take());
    let _ = child.wait();
    let official = spec.official_exporter_calls();
    println!(
        "cycle: simulated cluster {} topics x {} queues on {} of {} brokers, {} groups, +{:?}/call",
        spec.topics, spec.queues, spec.brokers_per_topic, spec.brokers, spec.groups, spec.latency
    );
    for (i, (took, calls)) in rows.iter().enumerate() {
        let total: u64 = calls.values().sum();
        println!(
            "  cycle {}: {:>6.2} s, {:>6} calls {:?}",
            i + 1,
            took.as_secs_f64(),
            total,
            calls
        );
    }
    let mut durations: Vec<f64> = rows.iter().map(|(t, _)| t.as_secs_f64()).collect();
    durations.sort_by(|a, b| a.total_cmp(b));
    let steady = rows
        .last()
        .map(|(_, c)| c.values().sum::<u64>())
        .unwrap_or(1);
    let worst = rows
        .iter()
        .map(|(_, c)| c.values().sum::<u64>())
        .max()
        .unwrap_or(1);
    let series = std::str::from_utf8(&store.current())
        .map(|t| t.lines().filter(|l| !l.starts_with('#')).count())
        .unwrap_or(0);
    println!(
        "  median cycle {:.2} s, max {:.2} s; series per snapshot {series}",
        durations[durations.len() / 2],
        durations[durations.len() - 1]
    );
    println!(
        "  official exporter plan: {official} calls; ours: {steady} (steady), {worst} (worst cycle); ratio {:.1}x steady, {:.1}x worst",
        official as f64 / steady as f64,
        official as f64 / worst as f64
    );
    println!(
        "  peak RSS (VmHWM) {} MiB",
        status_kib("self", "VmHWM:") / 1024
    );
}

fn scrape() {
    const SERIES: usize = 500_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut exposition = Exposition::new();
        for i in 0..SERIES {
            let topic = format!("topic-{}", i / 50);
            let queue = (i % 50).to_string();
            exposition.sample("rocketmq_topic_max_offset", &[("rocketmq_cluster", "sim"), ("topic", &topic), ("broker", "broker-0"), ("queue_id", &queue)], (i * 7) as f64);
        }
        let mut config = Config::for_namesrv("127.0.0.1:1").expect("config");
        config.web.listen_address = "127.0.0.1:0".to_string();
        config.collect.interval = Duration::from_secs(3600);
        config.collect.timeout = Duration::from_secs(1);
        config.collect.budget = Duration::from_secs(1);
        config.collect.discovery_interval = Duration::from_secs(3600);
        let store = Arc::new(SnapshotStore::new());
        store.publish("sim", exposition);
        let state = Arc::new(mqaudit::http::AppState {
            snapshot: store,
            self_metrics: mqaudit::metrics::SelfMetrics::new(),
            readiness: Arc::new(mqaudit::collector::Readiness::new(0)),
            telemetry_path: "/metrics".to_string(),
            security: Arc::new(mqaudit::http::WebSecurity::open()),
            audit: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(mqaudit::http::serve(listener, state, stop.clone(), Duration::from_secs(1)));
        // Identity and gzip alternate, so both see the same machine state.
        // The first gzip scrape compresses the snapshot; the rest reuse it.
        let first_gzip_ms = std::sync::Arc::new(std::sync::Mutex::new(0.0));
        let first = first_gzip_ms.clone();
        let results = tokio::task::spawn_blocking(move || {
            let mut runs: [(Vec<f64>, usize); 2] = [(Vec::new(), 0), (Vec::new(), 0)];
            for i in 0..400 {
                let gzip = i % 2 == 1;
                let started = Instant::now();
                let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
                let accept = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
                write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n").expect("write");
                let mut body = Vec::new();
                stream.read_to_end(&mut body).expect("read");
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if gzip && i == 1 {
                    *first.lock().expect("lock") = ms;
                    continue;
                }
                let run = &mut runs[usize::from(gzip)];
                run.0.push(ms);
                run.1 = body.len();
            }
            runs
        })
        .await
        .expect("scrapes");
        let first_gzip_ms = *first_gzip_ms.lock().expect("lock");
        for ((mut times, bytes), name) in results.into_iter().zip(["identity", "gzip"]) {
            times.sort_by(|a, b| a.total_cmp(b));
            let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
            println!("scrape ({name}): {SERIES} series, {:.2} MiB per response, {} scrapes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", bytes as f64 / 1048576.0, times.len(), p(0.5), p(0.99), p(1.0));
        }
        println!("scrape (gzip): the first gzip scrape, which compresses the snapshot: {first_gzip_ms:.1} ms");
    });
}

fn idle() {
    let (mut fake, namesrv) = spawn_fake("small");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .args([
            "serve",
            "--namesrv",
            &namesrv,
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
            "--collect.interval-seconds",
            "2",
            "--log.level",
            "warn",
        ])
        .spawn()
        .expect("spawn mqaudit serve");
    let pid = serve.id().to_string();
    let mut samples = Vec::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(2));
        samples.push(status_kib(&pid, "VmRSS:"));
    }
    let peak = status_kib(&pid, "VmHWM:");
    let _ = serve.kill();
    let _ = serve.wait();
    drop(fake.stdin.take());
    let _ = fake.wait();
    let settled = &samples[samples.len() / 2..];
    println!(
        "idle: mqaudit serve, 100-topic simulated cluster, 2 s interval, 20 s: RSS after 10 s..20 s {:?} KiB; last {} KiB ({:.1} MiB); peak {:.1} MiB",
        settled,
        samples.last().copied().unwrap_or(0),
        samples.last().copied().unwrap_or(0) as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-fake") {
        serve_fake(args.get(i + 1).map(String::as_str).unwrap_or("small"));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let only: Vec<&str> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let run = |name: &str| only.is_empty() || only.contains(&name);
    if run("cycle") {
        cycle();
    }
    if run("scrape") {
        scrape();
    }
    if run("idle") {
        idle();
    }
}
