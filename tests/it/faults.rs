//! Faults on real parts that no other module drives: a broker hung with
//! SIGSTOP for longer than the call timeout, then resumed. The scrape keeps
//! answering within 1 s, the hung broker is shown down with `timeout`
//! errors (never a stale "up"), the healthy brokers keep their values, and
//! the hung one comes back by itself after SIGCONT.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::exporter::{http_get, parse_metrics, scrape_within_1s, sum};
use crate::support::{Daemon, PrivateCluster, eventually_explained, free_port, now_ms};

/// `rocketmq_broker_up` of one master, and the `timeout` errors counted so far.
fn broker_state(listen: &str, broker: &str) -> Result<(f64, f64, Duration), String> {
    let (code, body, took) = http_get(listen, "/metrics").ok_or("no answer")?;
    if code != 200 {
        return Err(format!("HTTP {code}"));
    }
    let s = parse_metrics(&body);
    let up = sum(
        &s,
        "rocketmq_broker_up",
        &[("broker", broker), ("broker_id", "0")],
    )
    .ok_or(format!("no rocketmq_broker_up for {broker}"))?;
    let timeouts = sum(
        &s,
        "mqaudit_collector_errors_total",
        &[("error_type", "timeout")],
    )
    .unwrap_or(0.0);
    Ok((up, timeouts, took))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_hung_past_the_call_timeout_is_down_with_timeouts_then_back_on_resume() {
    let cluster = std::sync::Arc::new(
        tokio::task::spawn_blocking(PrivateCluster::start)
            .await
            .expect("private cluster"),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let _serve = Daemon::mqaudit(&[
        "serve",
        "--namesrv",
        cluster.get("NAMESRV_ADDR"),
        "--web.listen-address",
        &listen,
        "--collect.interval-seconds",
        "2",
        "--collect.timeout-seconds",
        "1",
    ]);
    let before = eventually_explained(60, "both masters up", || async {
        let (a, _, _) = broker_state(&listen, "broker-a")?;
        let (b, timeouts, _) = broker_state(&listen, "broker-b")?;
        if a == 1.0 && b == 1.0 {
            Ok(timeouts)
        } else {
            Err(format!("broker-a up {a}, broker-b up {b}"))
        }
    })
    .await;

    // Hang broker-b: its process keeps its sockets, and answers nothing.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("pause", "broker-b"))
        .await
        .expect("pause broker-b");
    // The slowest scrape seen, over every phase.
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    let seen = |took: Duration| {
        let mut s = slowest.lock().expect("lock");
        *s = (*s).max(took);
    };
    let hung = eventually_explained(30, "broker-b down with timeouts", || async {
        let (b, timeouts, took) = broker_state(&listen, "broker-b")?;
        seen(took);
        if b == 0.0 && timeouts > before {
            Ok(timeouts)
        } else {
            Err(format!(
                "broker-b up {b}, timeouts {timeouts} (before: {before})"
            ))
        }
    })
    .await;
    // Hung for several more cycles: every scrape answers within 1 s, the
    // healthy master stays up, the hung one stays down.
    for _ in 0..10 {
        let (a, _, took_a) = broker_state(&listen, "broker-a").expect("scrape");
        let (b, _, took_b) = broker_state(&listen, "broker-b").expect("scrape");
        assert_eq!((a, b), (1.0, 0.0), "while broker-b hangs");
        seen(took_a);
        seen(took_b);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("resume", "broker-b"))
        .await
        .expect("resume broker-b");
    eventually_explained(30, "broker-b back after SIGCONT", || async {
        let (b, _, took) = broker_state(&listen, "broker-b")?;
        seen(took);
        if b == 1.0 {
            Ok(())
        } else {
            Err(format!("broker-b up {b}"))
        }
    })
    .await;
    let slowest = *slowest.lock().expect("lock");
    eprintln!(
        "broker-b hung past the 1 s call timeout: {} timeout errors counted, slowest scrape {slowest:?}",
        hung - before
    );
    assert!(
        slowest < Duration::from_secs(1),
        "slowest scrape while a broker hung: {slowest:?}"
    );
}

/// A tmpfs of `size` mounted at `dir` (the disk that fills), unmounted on
/// drop. Mounting needs root, as CI runs; without it the test fails saying so.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "the disk-full fault mounts a small tmpfs, which needs root: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }

    /// Fill every free byte with a filler file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        // The last partial chunk, byte by byte in 4 KiB steps.
        while file.write_all(&chunk[..4096]).is_ok() {}
        while file.write_all(&chunk[..1]).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The audit store's disk fills while `mqaudit serve` audits on schedule:
/// the failed runs are counted (`mqaudit_audit_run_errors_total`, kept in
/// memory because the store cannot record them) and logged, scrapes keep
/// answering within 1 s, nothing found before is lost and nothing is
/// invented; once space returns, the next run audits what arrived meanwhile,
/// and the store reads back intact (`PRAGMA integrity_check`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_stores_disk_full_is_counted_loses_nothing_and_recovers() {
    const MINUTE: i64 = 60_000;
    let dir = std::env::temp_dir().join(crate::support::unique("mqaudit-disk-full"));
    std::fs::create_dir_all(&dir).expect("dir");
    let disk = SmallDisk::mount(&dir.join("disk"), "8m");
    let (produced, consumed) = (dir.join("produced.jsonl"), dir.join("consumed.jsonl"));
    let line = |key: &str, at: i64| format!("{{\"key\":\"{key}\",\"time_ms\":{at}}}\n");
    let append = |path: &std::path::Path, text: String| {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("ledger");
    };
    // Window w0, settled and within its 10 min deadline (the first run
    // reaches back a deadline): five produced, full-3 never consumed, so
    // pending; the next window is empty until the disk is full.
    let w0 = (now_ms() / MINUTE) * MINUTE - 3 * MINUTE;
    let keys = |prefix: &str, n: i64, skip: i64, at: i64, consumed: bool| -> String {
        (0..n)
            .filter(|i| !consumed || *i != skip)
            .map(|i| line(&format!("{prefix}-{i}"), at + 1_000 + i))
            .collect()
    };
    append(&produced, keys("full", 5, 3, w0, false));
    append(&consumed, keys("full", 5, 3, w0, true));
    let listen = format!("127.0.0.1:{}", free_port());
    let config = dir.join("mqaudit.toml");
    std::fs::write(
        &config,
        format!(
            "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n\n[audit]\ndata_dir = \"{}\"\n\n[web]\nlisten_address = \"{listen}\"\n\n\
             [[flow]]\nname = \"full\"\ncluster = \"test\"\ntopic = \"{}\"\ngroup = \"g\"\nschedule = \"*/2 * * * * *\"\n\
             window_seconds = 60\nsettle_seconds = 0\ndeadline_seconds = 600\n\
             produced = {{ kind = \"jsonl\", path = \"{}\" }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
            crate::support::cluster().namesrv,
            disk.0.join("data").display(),
            crate::support::unique("NoSuchTopic"),
            produced.display(),
            consumed.display()
        ),
    )
    .expect("config");
    // serve's log (outside the small disk), shown if the test fails.
    let log_path = dir.join("serve.log");
    let _serve = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mqaudit"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("serve log"))
            .spawn()
            .expect("start mqaudit serve"),
    );
    let log_tail = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    };
    let metric = |body: &str, name: &str, filter: &[(&str, &str)]| -> f64 {
        sum(&parse_metrics(body), name, filter).unwrap_or(0.0)
    };
    let missing = |body: &str| metric(body, "mqaudit_messages_pending", &[("flow", "full")]);
    eventually_explained(60, "full-3 found missing", || async {
        let (_, body, _) = http_get(&listen, "/metrics").ok_or("no answer")?;
        match missing(&body) {
            1.0 => Ok(()),
            n => Err(format!("missing {n}")),
        }
    })
    .await;

    // The disk fills; a later window gets a loss of its own meanwhile.
    let filler = disk.fill();
    let w1 = w0 + MINUTE;
    append(&produced, keys("late", 3, 1, w1, false));
    append(&consumed, keys("late", 3, 1, w1, true));
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    let errors = eventually_explained(60, "store errors counted", || async {
        let (_, body, took) = http_get(&listen, "/metrics").ok_or("no answer")?;
        {
            let mut s = slowest.lock().expect("lock");
            *s = (*s).max(took);
        }
        let errors = metric(
            &body,
            "mqaudit_audit_run_errors_total",
            &[("flow", "full"), ("error_kind", "store")],
        );
        assert_eq!(
            missing(&body),
            1.0,
            "a full disk neither loses nor invents a finding"
        );
        if errors >= 2.0 {
            Ok(errors)
        } else {
            Err(format!("{errors} store errors"))
        }
    })
    .await;

    // Space returns: the next run audits the later window.
    std::fs::remove_file(&filler).expect("remove filler");
    eventually_explained(120, "late-1 found missing after recovery", || async {
        let (_, body, took) = http_get(&listen, "/metrics").ok_or("no answer")?;
        {
            let mut s = slowest.lock().expect("lock");
            *s = (*s).max(took);
        }
        match missing(&body) {
            2.0 => Ok(()),
            n => Err(format!("missing {n}; serve's log ends:\n{}", log_tail())),
        }
    })
    .await;
    drop(_serve);
    let slowest = *slowest.lock().expect("lock");
    eprintln!("disk full: {errors} failed runs counted, slowest scrape {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest scrape: {slowest:?}"
    );
    let store = mqaudit::audit::store::Store::open(&disk.0.join("data"))
        .await
        .expect("the store opens after the disk was full");
    let findings = store
        .findings(Some("full"), None, None, 100)
        .await
        .expect("findings");
    let mut missing: Vec<&str> = findings.iter().map(|f| f.key.as_str()).collect();
    missing.sort_unstable();
    assert_eq!(missing, ["full-3", "late-1"]);
    let db = format!("sqlite://{}", disk.0.join("data/audit.db").display());
    let pool = sqlx::SqlitePool::connect(&db)
        .await
        .expect("open the database");
    let check: (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .expect("integrity check");
    assert_eq!(check.0, "ok");
    pool.close().await;
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every sample of `family` whose labels include `filter`.
fn matching<'a>(
    samples: &'a [crate::exporter::Sample],
    family: &str,
    filter: &[(&str, &str)],
) -> Vec<&'a crate::exporter::Sample> {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == family
                && filter
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// broker-a's slave removed, back, then promoted by hand (master stopped,
/// slave restarted as brokerId 0): the exporter follows each topology. With
/// the slave gone the master's risk is `no_replica` and its replication lag
/// series goes; once it is back, `async_replication` again. After the
/// promotion broker-a's master is the old slave's address, up, with every
/// message the old master acknowledged (the slave had caught up): no offset
/// regression is counted — a promotion is not a loss — and scrapes answer
/// within 1 s throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_removed_back_and_promoted_is_followed_without_crying_loss() {
    let cluster = std::sync::Arc::new(
        tokio::task::spawn_blocking(PrivateCluster::start)
            .await
            .expect("private cluster"),
    );
    let (master, slave) = (
        cluster.get("BROKER_A_ADDR").to_string(),
        cluster.get("BROKER_A_SLAVE_ADDR").to_string(),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let _serve = Daemon::mqaudit(&[
        "serve",
        "--namesrv",
        cluster.get("NAMESRV_ADDR"),
        "--web.listen-address",
        &listen,
        "--collect.interval-seconds",
        "2",
        "--collect.timeout-seconds",
        "1",
    ]);
    let driver = crate::support::driver::Driver::new();
    let topic = crate::support::unique("Promoted");
    driver.create_topic(&master, &topic, 2).await;
    let sent = 40;
    for i in 0..sent {
        driver
            .send(
                &master,
                "broker-a",
                &topic,
                i % 2,
                &format!("p{i}"),
                b"promoted",
            )
            .await;
    }
    let risk = |s: &[crate::exporter::Sample], reason: &str| {
        sum(
            s,
            "rocketmq_broker_durability_risk",
            &[("broker", "broker-a"), ("reason", reason)],
        )
    };
    let lag = |s: &[crate::exporter::Sample]| {
        sum(
            s,
            "rocketmq_broker_replication_lag_bytes",
            &[("broker", "broker-a"), ("broker_id", "1")],
        )
    };
    let max_offset = |s: &[crate::exporter::Sample]| {
        sum(
            s,
            "rocketmq_topic_max_offset",
            &[("topic", topic.as_str()), ("broker", "broker-a")],
        )
    };
    let regressions = |s: &[crate::exporter::Sample]| {
        sum(s, "rocketmq_topic_offset_regressions_total", &[]).unwrap_or(0.0)
    };
    let before = eventually_explained(60, "the slave caught up, every message counted", || async {
        let s = scrape_within_1s(&listen)?;
        match (lag(&s), risk(&s, "async_replication"), max_offset(&s)) {
            (Some(l), Some(r), Some(m)) if l == 0.0 && r == 1.0 && m == f64::from(sent) => {
                Ok(regressions(&s))
            }
            other => Err(format!(
                "lag, async_replication risk, max offset: {other:?}"
            )),
        }
    })
    .await;

    // Removed: the master runs alone.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("stop", "broker-a-s"))
        .await
        .expect("stop the slave");
    eventually_explained(90, "broker-a without a replica", || async {
        let s = scrape_within_1s(&listen)?;
        match (
            risk(&s, "no_replica"),
            risk(&s, "async_replication"),
            lag(&s),
        ) {
            (Some(1.0), None, None) => Ok(()),
            other => Err(format!("no_replica, async_replication, lag: {other:?}")),
        }
    })
    .await;

    // Back.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("start", "broker-a-s"))
        .await
        .expect("start the slave");
    eventually_explained(90, "broker-a replicated again", || async {
        let s = scrape_within_1s(&listen)?;
        match (
            risk(&s, "no_replica"),
            risk(&s, "async_replication"),
            lag(&s),
        ) {
            (None, Some(r), Some(l)) if r == 1.0 && l == 0.0 => Ok(()),
            other => Err(format!("no_replica, async_replication, lag: {other:?}")),
        }
    })
    .await;

    // A promotion keeps what the slave has: wait until it replicated the
    // topic's config (its periodic sync from the master) and its commit
    // log holds every message (replication lag 0). Not the slave's own
    // queue offsets: a restarted rocketmq-rust slave serves them only up to
    // the master's confirm offset, which reaches it with the next
    // replicated data, so with no traffic they can read 0 for good.
    eventually_explained(
        120,
        "the slave knows the topic and has every message",
        || async {
            let topics = driver
                .admin
                .all_topic_config(&slave)
                .await
                .map_err(|e| e.to_string())?;
            let s = scrape_within_1s(&listen)?;
            match (topics.contains_key(&topic), lag(&s), max_offset(&s)) {
                (true, Some(l), Some(m)) if l == 0.0 && m == f64::from(sent) => Ok(()),
                (known, lag, max) => Err(format!(
                    "topic config on the slave: {known}, replication lag {lag:?}, master max offset {max:?}"
                )),
            }
        },
    )
    .await;

    // Promoted: the master stopped, the slave restarted as broker-a's master.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.run(&["promote"]))
        .await
        .expect("promote the slave");
    let after = eventually_explained(120, "the promoted slave is broker-a's master", || async {
        let s = scrape_within_1s(&listen)?;
        let info = matching(
            &s,
            "rocketmq_broker_info",
            &[("broker", "broker-a"), ("broker_id", "0")],
        );
        let addr = info.first().and_then(|(_, l, _)| l.get("addr").cloned());
        let up = sum(
            &s,
            "rocketmq_broker_up",
            &[("broker", "broker-a"), ("broker_id", "0")],
        );
        match (addr, up, max_offset(&s), risk(&s, "no_replica")) {
            (Some(a), Some(u), Some(m), Some(r))
                if a == slave && u == 1.0 && m == f64::from(sent) && r == 1.0 =>
            {
                Ok(regressions(&s))
            }
            other => Err(format!(
                "addr, up, max offset, no_replica: {other:?} (want {slave})"
            )),
        }
    })
    .await;
    // A few more cycles on the new master: still no regression counted.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let last = scrape_within_1s(&listen).expect("scrape");
    assert_eq!(
        (after, regressions(&last)),
        (before, before),
        "a promotion with the slave caught up loses nothing"
    );
    assert_eq!(max_offset(&last), Some(f64::from(sent)));
}
