//! Soak benchmark (not CI: it runs for an hour; figures in
//! docs/benchmarks.md, plot in docs/soak.svg).
//!
//! `mqaudit serve` (this build's binary) against the real Java test cluster
//! of `MQAUDIT_CLUSTER_ENV` for `MQAUDIT_SOAK_SECONDS` (default 3,600): the
//! real Java client produces 50 messages every 10 s (ledger and trace on),
//! one push consumer consumes them all the while, a ledger flow and a trace
//! flow are audited every minute, and broker-b is restarted (SIGTERM, then
//! start) every 10 minutes. Every 10 s it samples serve's RSS, open file
//! descriptors, CPU time, the audit store's size and a scrape's latency, and
//! writes them to `target/soak/soak.csv` and `target/soak/soak.svg`; the
//! summary compares the first sampled ten minutes after warm-up with the
//! last ten.
//!
//! `scripts/soak.sh [SECONDS] [--broker java4|java5]` starts the cluster
//! and runs it.
//!
//! With `MQAUDIT_SOAK_LOAD=max` (`scripts/soak.sh SECONDS --load max`) it is
//! the end-to-end load benchmark instead: no restarts, and real Java
//! producers (`MQAUDIT_SOAK_PRODUCERS`, default 4) send back to back,
//! 20,000 messages a run, as fast as the client's trace pipeline lets them
//! without dropping a trace record (each producer its own ledger file, the
//! ledger flow reading `produced-*.jsonl`). The summary adds the rate
//! sustained, the audit time of every flow (the runs that started while
//! traffic ran, as long as serve's log says they took) over the traffic
//! time, and serve's peak RSS (`VmHWM`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::java::{Consume, Msg, Produce};

const SAMPLE: Duration = Duration::from_secs(10);
const RESTART_EVERY: Duration = Duration::from_secs(600);
const WARM_UP: Duration = Duration::from_secs(600);

/// One sample of serve's footprint.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: f64,
    rss_mib: f64,
    fds: f64,
    cpu_s: f64,
    store_mib: f64,
    scrape_ms: f64,
}

/// User + system CPU seconds of `pid` (fields 14 and 15 of /proc/PID/stat,
/// in clock ticks of 1/100 s on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name may hold spaces: fields count from after its ")".
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn open_fds(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(f64::NAN, |d| d.count() as f64)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    dir_bytes(&path)
                } else {
                    e.metadata().map_or(0, |m| m.len())
                }
            })
            .sum()
    })
}

/// GET `path` from `addr`; the body and how long the whole answer took.
fn get(addr: &str, path: &str) -> Result<(String, Duration), String> {
    let start = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    let took = start.elapsed();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok((body.to_string(), took))
}

/// Sum of every series of `family` in an exposition.
fn family_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn cluster_script(args: &[&str]) {
    let status =
        Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rocketmq-cluster.sh"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/rocketmq-cluster.sh");
    assert!(status.success(), "rocketmq-cluster.sh {args:?} failed");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        f64::NAN
    } else {
        values[values.len() / 2]
    }
}

/// Four stacked line charts over time, one per footprint series.
fn svg(samples: &[Sample], restarts: &[f64], title: &str) -> String {
    type Pick = fn(&Sample) -> f64;
    let panels: [(&str, Pick); 5] = [
        ("RSS (MiB)", |s| s.rss_mib),
        ("open file descriptors", |s| s.fds),
        ("CPU (% of one core, per 10 s sample)", |s| s.cpu_s),
        ("audit store (MiB)", |s| s.store_mib),
        ("scrape latency (ms)", |s| s.scrape_ms),
    ];
    let (width, panel_h, left, top) = (900.0, 150.0, 70.0, 40.0);
    let plot_w = width - left - 20.0;
    let end_s = samples.last().map_or(1.0, |s| s.at_s).max(1.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">{title}</text>\n",
        top + panels.len() as f64 * (panel_h + 30.0) + 20.0
    );
    // CPU is plotted as a rate: seconds used between samples.
    let cpu_rate: Vec<f64> = samples
        .windows(2)
        .map(|w| 100.0 * (w[1].cpu_s - w[0].cpu_s) / (w[1].at_s - w[0].at_s).max(1e-9))
        .collect();
    for (i, (name, pick)) in panels.iter().enumerate() {
        let y0 = top + i as f64 * (panel_h + 30.0);
        let points: Vec<(f64, f64)> = if i == 2 {
            samples
                .iter()
                .skip(1)
                .map(|s| s.at_s)
                .zip(cpu_rate.iter().copied())
                .collect()
        } else {
            samples.iter().map(|s| (s.at_s, pick(s))).collect()
        };
        let finite = points.iter().map(|p| p.1).filter(|v| v.is_finite());
        let max = finite.fold(0.0_f64, f64::max).max(1e-9) * 1.1;
        out += &format!(
            "<text x=\"{left}\" y=\"{}\">{name}</text>\n<rect x=\"{left}\" y=\"{}\" width=\"{plot_w}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#999\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.1}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n",
            y0 + 12.0,
            y0 + 16.0,
            left - 4.0,
            y0 + 28.0,
            left - 4.0,
            y0 + 16.0 + panel_h
        );
        for r in restarts {
            let x = left + r / end_s * plot_w;
            out += &format!(
                "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#e88\" stroke-dasharray=\"3,3\"/>\n",
                y0 + 16.0,
                y0 + 16.0 + panel_h
            );
        }
        let path: Vec<String> = points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|(t, v)| {
                format!(
                    "{:.1},{:.1}",
                    left + t / end_s * plot_w,
                    y0 + 16.0 + panel_h - v / max * panel_h
                )
            })
            .collect();
        out += &format!(
            "<polyline fill=\"none\" stroke=\"#2060c0\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            path.join(" ")
        );
    }
    let axis_y = top + panels.len() as f64 * (panel_h + 30.0);
    out += &format!(
        "<text x=\"{left}\" y=\"{axis_y}\">0 min</text>\n<text x=\"{}\" y=\"{axis_y}\" text-anchor=\"end\">{:.0} min (dashed: broker-b restarts)</text>\n</svg>\n",
        left + plot_w,
        end_s / 60.0
    );
    out
}

/// Producers under load: `MQAUDIT_SOAK_PRODUCERS`, default 4.
fn load_producers() -> usize {
    std::env::var("MQAUDIT_SOAK_PRODUCERS").ok().map_or(4, |v| {
        v.parse().expect("MQAUDIT_SOAK_PRODUCERS is a number")
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What one producer sent.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    failed: u64,
}

/// Runs of the real Java producer back to back, 20,000 keyed messages each
/// (trace on, a ledger line per send), until `seconds` from `start`.
async fn produce_flat_out(
    java: &'static support::java::JavaClient,
    producer: usize,
    topic: String,
    group: String,
    ledger: PathBuf,
    start: Instant,
    seconds: u64,
) -> Tally {
    let mut tally = Tally::default();
    let mut run = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        run += 1;
        let plan: Vec<Msg> = (0..20_000)
            .map(|i| Msg::key(&format!("load-{producer}-{run}-{i}")))
            .collect();
        let opts = Produce {
            ledger: Some(ledger.clone()),
            ..Produce::default()
        };
        let results = java.produce(&topic, &group, &plan, opts).await;
        tally.sent += results.len() as u64;
        tally.failed += results.iter().filter(|r| !r.stored()).count() as u64;
    }
    tally
}

/// What the runs of one flow took, from serve's log.
#[derive(Default)]
struct AuditTime {
    runs: u64,
    /// Seconds, summed over the runs.
    seconds: f64,
    /// The longest run, seconds.
    longest: f64,
    /// Trace ingest, seconds summed (`ingest_ms`).
    ingest: f64,
    /// Of that, waiting for pulls and storing (`ingest_pull_ms`,
    /// `ingest_store_ms`).
    ingest_pull: f64,
    ingest_store: f64,
    /// Reading the windows' records from their sources, seconds summed
    /// (`read_ms`).
    read: f64,
    /// Records earlier runs read, replayed instead (`reused_records`).
    reused: u64,
    /// Trace messages, the flow's rows and halves in them, and store
    /// transactions (`trace_messages`, `trace_rows`, `trace_halves`,
    /// `ingest_commits`).
    trace: [u64; 4],
}

/// Per flow, the runs that started while traffic ran, from serve's "Audit
/// run done." and "Audit run failed" log lines (`elapsed_ms`, timed by the
/// runner; a failed run has no split).
fn audit_time(
    serve_log: &Path,
    from_ms: i64,
    to_ms: i64,
) -> std::collections::BTreeMap<String, AuditTime> {
    let text = std::fs::read_to_string(serve_log).expect("serve log");
    let field = |line: &str, name: &str| -> Option<String> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        let rest = &line[at..];
        Some(
            rest.split_whitespace()
                .next()?
                .trim_matches('"')
                .to_string(),
        )
    };
    let seconds_of = |line: &str, name: &str| -> f64 {
        field(line, name)
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |ms| ms / 1000.0)
    };
    let mut runs = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("msg=\"Audit run ")) {
        let ts = line
            .strip_prefix("ts=")
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string);
        let (Some(ts), Some(flow), Some(elapsed)) =
            (ts, field(line, "flow"), field(line, "elapsed_ms"))
        else {
            continue;
        };
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(&ts) else {
            continue;
        };
        let at_ms = at.timestamp_millis();
        let Ok(elapsed) = elapsed.parse::<f64>() else {
            continue;
        };
        // The line is written when the run ends.
        let started_ms = at_ms - elapsed as i64;
        if started_ms < from_ms || started_ms >= to_ms {
            continue;
        }
        let entry: &mut AuditTime = runs.entry(flow).or_default();
        entry.runs += 1;
        entry.seconds += elapsed / 1000.0;
        entry.longest = entry.longest.max(elapsed / 1000.0);
        entry.ingest += seconds_of(line, "ingest_ms");
        entry.ingest_pull += seconds_of(line, "ingest_pull_ms");
        entry.ingest_store += seconds_of(line, "ingest_store_ms");
        entry.read += seconds_of(line, "read_ms");
        let count = |name: &str| {
            field(line, name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        entry.reused += count("reused_records");
        for (sum, name) in entry.trace.iter_mut().zip([
            "trace_messages",
            "trace_rows",
            "trace_halves",
            "ingest_commits",
        ]) {
            *sum += count(name);
        }
    }
    runs
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("MQAUDIT_SOAK_SECONDS")
        .ok()
        .map(|v| v.parse().expect("MQAUDIT_SOAK_SECONDS is a number"))
        .unwrap_or(3600);
    let load = match std::env::var("MQAUDIT_SOAK_LOAD") {
        Ok(v) if v == "max" => true,
        Ok(v) if v.is_empty() => false,
        Ok(v) => panic!("MQAUDIT_SOAK_LOAD is \"max\" or unset, not {v:?}"),
        Err(_) => false,
    };
    let cluster = support::cluster();
    let java = support::java::client();
    let cluster_dir = cluster.dir.to_string_lossy().into_owned();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soak");
    std::fs::create_dir_all(&out).expect("target/soak");
    let work = std::env::temp_dir().join(support::unique("mqaudit-soak"));
    std::fs::create_dir_all(&work).expect("soak dir");
    let (topic, group, producer_group) = (
        support::unique("Soak"),
        support::unique("SoakGroup"),
        support::unique("SoakProducer"),
    );
    java.create_topic(&topic, 4).await;
    let (produced, consumed) = (work.join("produced.jsonl"), work.join("consumed.jsonl"));
    // Under load, one ledger file per producer (two writers never share one).
    let produced_ledgers = work.join("produced-*.jsonl");
    let consumer = java
        .consume(
            &topic,
            &group,
            Consume {
                ledger: Some(consumed.clone()),
                ..Consume::default()
            },
        )
        .await;

    let listen = format!("127.0.0.1:{}", free_port());
    let data_dir = work.join("audit");
    let flow = |name: &str, produced_src: &str, consumed_src: &str| {
        format!(
            "[[flow]]\nname = \"{name}\"\ncluster = \"{}\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\n\
             schedule = \"0 * * * * *\"\nwindow_seconds = 60\nsettle_seconds = 10\n\
             deadline_seconds = 180\nrecheck_horizon_seconds = 300\n\
             produced = {produced_src}\nconsumed = {consumed_src}\n\n",
            cluster.name
        )
    };
    let jsonl = |p: &Path| format!("{{ kind = \"jsonl\", path = \"{}\" }}", p.display());
    let trace = "{ kind = \"rocketmq_trace\" }";
    // The shortest retentions the configuration accepts for these flows
    // (an hour for windows, findings and runs; for trace rows window 60 +
    // clock skew 5 + deadline 180 + re-check horizon 300 + an hour = 4145
    // s), so a soak of 100 minutes or more runs past every one of them and
    // shows the store level off.
    // Under load every run is kept to the end (the audit time is summed
    // from them).
    let runs_seconds = if load {
        (seconds + 3600).max(3600)
    } else {
        3600
    };
    let config = format!(
        "[[cluster]]\nname = \"{}\"\nnamesrv = [\"{}\"]\n\n[collect]\ninterval_seconds = 10\n\
         timeout_seconds = 2\ndiscovery_interval_seconds = 30\n\n[web]\nlisten_address = \"{listen}\"\n\n\
         [audit]\ndata_dir = \"{}\"\n\n[audit.retention]\ntrace_seconds = 4200\nwindows_seconds = 3600\n\
         findings_seconds = 3600\nruns_seconds = {runs_seconds}\ninterval_seconds = 300\n\n{}{}",
        cluster.name,
        cluster.namesrv,
        data_dir.display(),
        flow(
            "soak-ledger",
            &jsonl(if load { &produced_ledgers } else { &produced }),
            &jsonl(&consumed)
        ),
        flow("soak-trace", trace, trace),
    );
    let config_path = work.join("mqaudit.toml");
    std::fs::write(&config_path, config).expect("config");
    let log = std::fs::File::create(work.join("serve.log")).expect("serve log");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start mqaudit serve");
    let pid = serve.id();
    let ready = Instant::now();
    while get(&listen, "/-/ready").is_err() {
        if let Ok(Some(status)) = serve.try_wait() {
            let log = std::fs::read_to_string(work.join("serve.log")).unwrap_or_default();
            panic!("mqaudit serve exited ({status}): {log}");
        }
        assert!(
            ready.elapsed() < Duration::from_secs(120),
            "serve never ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "soak: {seconds} s, serve pid {pid} on {listen}, {} broker, work dir {}",
        java.version(),
        work.display()
    );

    let start = Instant::now();
    let traffic_from_ms = now_ms();
    let traffic_from_cpu_s = cpu_seconds(pid);
    let producers = if load {
        (0..load_producers())
            .map(|p| {
                let (topic, group) = (topic.clone(), producer_group.clone());
                let ledger = work.join(format!("produced-{p}.jsonl"));
                tokio::spawn(produce_flat_out(
                    java, p, topic, group, ledger, start, seconds,
                ))
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut samples = Vec::new();
    let mut restarts = Vec::new();
    let (mut sent, mut failed_sends, mut failed_runs, mut scrape_errors) = (0u64, 0u64, 0u64, 0u64);
    let mut next_restart = RESTART_EVERY;
    let mut batch = 0u64;
    let mut last_metrics = String::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        // Under load the producers run on their own: no restarts, only samples.
        if !load && start.elapsed() >= next_restart {
            next_restart += RESTART_EVERY;
            restarts.push(start.elapsed().as_secs_f64());
            eprintln!(
                "soak: restarting broker-b at {:.0} s",
                start.elapsed().as_secs_f64()
            );
            cluster_script(&["stop", &cluster_dir, "broker-b"]);
            cluster_script(&["start", &cluster_dir, "broker-b"]);
        }
        if !load {
            batch += 1;
            let plan: Vec<Msg> = (0..50)
                .map(|i| Msg::key(&format!("soak-{batch}-{i}")))
                .collect();
            let (java2, topic2, group2, ledger) = (
                java,
                topic.clone(),
                producer_group.clone(),
                produced.clone(),
            );
            let run = tokio::spawn(async move {
                java2
                    .produce(
                        &topic2,
                        &group2,
                        &plan,
                        Produce {
                            ledger: Some(ledger),
                            ..Produce::default()
                        },
                    )
                    .await
            });
            match run.await {
                Ok(results) => {
                    sent += results.len() as u64;
                    failed_sends += results.iter().filter(|r| !r.stored()).count() as u64;
                }
                Err(e) => {
                    failed_runs += 1;
                    eprintln!("soak: a producer run failed: {e}");
                }
            }
        }
        let scrape_ms = match get(&listen, "/metrics") {
            Ok((body, took)) => {
                last_metrics = body;
                took.as_secs_f64() * 1000.0
            }
            Err(e) => {
                scrape_errors += 1;
                eprintln!("soak: scrape failed: {e}");
                f64::NAN
            }
        };
        samples.push(Sample {
            at_s: start.elapsed().as_secs_f64(),
            rss_mib: support::proc_status_kib(&pid.to_string(), "VmRSS:")
                .map_or(f64::NAN, |k| k as f64 / 1024.0),
            fds: open_fds(pid),
            cpu_s: cpu_seconds(pid),
            store_mib: dir_bytes(&data_dir) as f64 / (1024.0 * 1024.0),
            scrape_ms,
        });
        if let Ok(Some(status)) = serve.try_wait() {
            panic!("mqaudit serve exited during the soak: {status}");
        }
        tokio::time::sleep(SAMPLE.saturating_sub(tick.elapsed())).await;
    }
    // Traffic ends when the last producer run does.
    for producer in producers {
        match producer.await {
            Ok(tally) => {
                sent += tally.sent;
                failed_sends += tally.failed;
            }
            Err(e) => {
                failed_runs += 1;
                eprintln!("soak: a producer failed: {e}");
            }
        }
    }
    let traffic_s = start.elapsed().as_secs_f64();
    let traffic_to_ms = now_ms();
    let traffic_cpu_s = cpu_seconds(pid) - traffic_from_cpu_s;
    let peak_rss_mib = support::proc_status_kib(&pid.to_string(), "VmHWM:")
        .map_or(f64::NAN, |k| k as f64 / 1024.0);
    let deliveries = consumer.stop().await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = serve.wait().expect("serve exit");

    let mut csv = String::from("seconds,rss_mib,open_fds,cpu_seconds,store_mib,scrape_ms\n");
    for s in &samples {
        csv += &format!(
            "{:.0},{:.2},{},{:.2},{:.3},{:.2}\n",
            s.at_s, s.rss_mib, s.fds, s.cpu_s, s.store_mib, s.scrape_ms
        );
    }
    std::fs::write(out.join("soak.csv"), csv).expect("soak.csv");
    let title = format!(
        "mqaudit serve, {:.0} min soak on Apache RocketMQ {} (2 cores)",
        seconds as f64 / 60.0,
        java.version()
    );
    std::fs::write(out.join("soak.svg"), svg(&samples, &restarts, &title)).expect("soak.svg");

    // First ten sampled minutes after warm-up against the last ten.
    let span = |from: f64, to: f64, pick: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples
            .iter()
            .filter(|s| s.at_s >= from && s.at_s < to)
            .map(pick)
            .filter(|v| v.is_finite())
            .collect();
        median(&mut v)
    };
    let end = samples.last().map_or(0.0, |s| s.at_s);
    let (early, late) = (
        (WARM_UP.as_secs_f64(), WARM_UP.as_secs_f64() + 600.0),
        (end - 600.0, end + 1.0),
    );
    let cpu_pct = |from: f64, to: f64| {
        let inside: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at_s >= from && s.at_s < to)
            .collect();
        match (inside.first(), inside.last()) {
            (Some(a), Some(b)) if b.at_s > a.at_s => {
                100.0 * (b.cpu_s - a.cpu_s) / (b.at_s - a.at_s)
            }
            _ => f64::NAN,
        }
    };
    println!(
        "soak summary ({} samples, {} broker-b restarts)",
        samples.len(),
        restarts.len()
    );
    println!("                       minutes 10-20     last 10 minutes");
    type Pick = fn(&Sample) -> f64;
    let rows: [(&str, Pick); 4] = [
        ("RSS MiB (median)", |s| s.rss_mib),
        ("open fds (median)", |s| s.fds),
        ("store MiB (median)", |s| s.store_mib),
        ("scrape ms (median)", |s| s.scrape_ms),
    ];
    for (name, pick) in rows {
        println!(
            "{name:<22} {:>12.2} {:>18.2}",
            span(early.0, early.1, pick),
            span(late.0, late.1, pick)
        );
    }
    println!(
        "{:<22} {:>12.2} {:>18.2}",
        "CPU % of one core",
        cpu_pct(early.0, early.1),
        cpu_pct(late.0, late.1)
    );
    let max_scrape = samples
        .iter()
        .map(|s| s.scrape_ms)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    println!("slowest scrape {max_scrape:.1} ms, {scrape_errors} failed scrapes");
    println!(
        "sent {sent} messages ({failed_sends} sends failed, {failed_runs} producer runs failed), {} deliveries",
        deliveries.len()
    );
    for family in [
        "mqaudit_messages_produced_total",
        "mqaudit_messages_consumed_total",
        "mqaudit_messages_lost_total",
        "mqaudit_messages_duplicated_total",
        "mqaudit_audit_runs_total",
        "mqaudit_audit_run_errors_total",
        "mqaudit_audit_pruned_rows_total",
        "mqaudit_collector_errors_total",
    ] {
        println!("{family} {}", family_sum(&last_metrics, family) + 0.0);
    }
    if load {
        let runs = audit_time(&work.join("serve.log"), traffic_from_ms, traffic_to_ms);
        println!(
            "load: {sent} messages in {traffic_s:.0} s ({:.0} messages/s sustained by {} producers), \
             serve peak RSS {peak_rss_mib:.0} MiB",
            sent as f64 / traffic_s,
            load_producers()
        );
        let mut total = 0.0;
        for (flow, t) in &runs {
            total += t.seconds;
            println!(
                "load: flow {flow}: {} runs, audit time {:.1} s ({:.3} of traffic time), longest run {:.1} s; \
                 trace ingest {:.1} s (pulls {:.1} s, storing {:.1} s), reading the windows' records {:.1} s, the rest (reconcile, diagnose, save) {:.1} s; {} records replayed from earlier runs' reads; \
                 ingested {} trace messages, {} rows and {} halves in {} store transactions",
                t.runs,
                t.seconds,
                t.seconds / traffic_s,
                t.longest,
                t.ingest,
                t.ingest_pull,
                t.ingest_store,
                t.read,
                t.seconds - t.ingest - t.read,
                t.reused,
                t.trace[0],
                t.trace[1],
                t.trace[2],
                t.trace[3]
            );
        }
        println!(
            "load: both flows: audit time {total:.1} s over {traffic_s:.0} s of traffic = {:.3}",
            total / traffic_s
        );
        // What serve cost the machine the cluster ran on, collectors and
        // exporter included: wall time above is what starved cores made of it.
        println!(
            "load: serve CPU time (user + system) while traffic ran: {traffic_cpu_s:.1} s = {:.3} of traffic time",
            traffic_cpu_s / traffic_s
        );
    }
    println!("serve exited with {exit}; csv and svg in {}", out.display());
    let _ = std::fs::remove_dir_all(&work);
}
