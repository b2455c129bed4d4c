//! The end-to-end probe on real brokers (every leg: rocketmq-rust, Java
//! 4.9.8 and 5.3.3), on a private cluster of the leg's flavour: it creates
//! its topic, then a healthy cluster loses nothing and records latency per
//! broker; broker-b killed: its sends fail and nothing acknowledged is
//! counted lost while broker-a goes on; broker-b restarted with its commit
//! log cut after `kill -9`: exactly the cut probe messages are `store`
//! losses, found by the re-verification its return triggers.

use std::sync::Arc;
use std::time::Duration;

use mqaudit::admin::{Admin, Cluster, MessageQueue};
use mqaudit::clock::Clock;
use mqaudit::config::ProbeConfig;
use mqaudit::metrics::SnapshotStore;
use mqaudit::probe::Probe;

use crate::exporter::{parse_metrics, sum};
use crate::support::{PrivateCluster, unique};

/// Zero a store of fixed-size files named by their start offset from
/// byte `offset` on.
fn cut_from(dir: &std::path::Path, file_size: u64, offset: u64) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let Some(start) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if start + file_size > offset {
            crate::audit::zero_from(&path, offset.saturating_sub(start));
        }
    }
}

/// (sent by status, received, lost, latency count) of one broker.
fn broker_metrics(text: &str, broker: &str) -> (f64, f64, f64, f64, f64) {
    let s = parse_metrics(text);
    let l = [("broker", broker)];
    let get = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = l.to_vec();
        labels.extend_from_slice(extra);
        sum(&s, name, &labels).unwrap_or(0.0)
    };
    (
        get("mqaudit_probe_messages_sent_total", &[("status", "failed")]),
        get("mqaudit_probe_messages_received_total", &[]),
        get("mqaudit_probe_messages_lost_total", &[("stage", "store")]),
        get("mqaudit_probe_latency_seconds_count", &[]),
        get("mqaudit_probe_up", &[]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_finds_nothing_lost_when_healthy_or_down_and_exactly_the_cut_messages_after_a_crash()
 {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(PrivateCluster::start)
            .await
            .expect("private cluster"),
    );
    let namesrv = cluster.get("NAMESRV_ADDR").to_string();
    let broker_b = cluster.get("BROKER_B_ADDR").to_string();
    let store_b = std::path::PathBuf::from(cluster.get("BROKER_B_STORE"));
    let topic = unique("Probe");
    let config = ProbeConfig {
        topic: topic.clone(),
        create_topic: true,
        queues: 1,
        group: "mqaudit_probe".into(),
        interval: Duration::from_secs(1),
        deadline: Duration::from_secs(5),
        verify_window: Duration::from_secs(600),
        verify_every_rounds: 1_000,
    };
    let admin = Admin::connect(Duration::from_secs(2), None);
    let probe_cluster = Cluster::new("probe-test", vec![namesrv.clone()], admin.clone());
    let mut probe = Probe::new(probe_cluster, config, Clock::system(), "run1".into());
    let snapshot = SnapshotStore::new();
    let round = async |probe: &mut Probe| {
        let exposition = probe.round().await;
        snapshot.publish("probe", exposition);
        String::from_utf8(snapshot.current().to_vec()).expect("utf-8")
    };

    // Healthy: the probe creates its topic; both brokers answer and every
    // message comes back.
    let mut text = String::new();
    for _ in 0..60 {
        text = round(&mut probe).await;
        let (_, a, _, _, _) = broker_metrics(&text, "broker-a");
        let (_, b, _, _, _) = broker_metrics(&text, "broker-b");
        if a >= 5.0 && b >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for broker in ["broker-a", "broker-b"] {
        let (failed, received, lost, latencies, up) = broker_metrics(&text, broker);
        assert!(received >= 5.0, "{broker} received {received}:\n{text}");
        assert_eq!((lost, up), (0.0, 1.0), "{broker}:\n{text}");
        assert_eq!(latencies, received, "one latency per message on {broker}");
        assert_eq!(failed, 0.0, "{broker}");
    }
    // Read back everything acknowledged before the crash (on a loaded
    // machine the newest message can be readable only a round later).
    let mut tallies = probe.tallies();
    for _ in 0..40 {
        if tallies["broker-a"].0 == 0 && tallies["broker-b"].0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        text = round(&mut probe).await;
        tallies = probe.tallies();
    }
    assert_eq!(tallies["broker-a"].0, 0, "nothing pending: {tallies:?}");
    assert_eq!(tallies["broker-b"].0, 0, "nothing pending: {tallies:?}");

    // What broker-b holds of the probe, read independently of the probe.
    let driver = crate::support::driver::Driver::new();
    let queue = MessageQueue {
        topic: topic.clone(),
        broker_name: "broker-b".into(),
        queue_id: 0,
    };
    let on_b = driver
        .pull_all(&broker_b, "TOOLS_CONSUMER", &queue, 0)
        .await;
    assert!(on_b.len() >= 5, "{} probe messages on broker-b", on_b.len());
    let keep = on_b.len() / 2;
    let cut_at = &on_b[keep];
    let expected_lost = (on_b.len() - keep) as f64;

    // broker-b dies: its sends fail, nothing acknowledged is lost, and
    // broker-a goes on.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("kill", "broker-b"))
        .await
        .expect("kill broker-b");
    let (_, a_before, _, _, _) = broker_metrics(&text, "broker-a");
    for _ in 0..3 {
        text = round(&mut probe).await;
    }
    let (failed, _, lost_b, _, up_b) = broker_metrics(&text, "broker-b");
    let (_, a_after, lost_a, _, up_a) = broker_metrics(&text, "broker-a");
    assert!(failed >= 1.0, "broker-b's sends fail:\n{text}");
    assert_eq!(
        (lost_b, up_b),
        (0.0, 0.0),
        "unreachable is not lost:\n{text}"
    );
    assert_eq!((lost_a, up_a), (0.0, 1.0), "broker-a:\n{text}");
    assert!(
        a_after >= a_before + 3.0,
        "broker-a goes on: {a_before} → {a_after}"
    );

    // Its commit-log tail and consume queue were not on disk: cut them, restart.
    cut_from(
        &store_b.join("commitlog"),
        4 * 1024 * 1024,
        cut_at.commit_log_offset as u64,
    );
    cut_from(
        &store_b.join(format!("consumequeue/{topic}/0")),
        60_000,
        cut_at.queue_offset as u64 * 20,
    );
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node("start", "broker-b"))
        .await
        .expect("restart broker-b");
    let mut settled = 0;
    for _ in 0..90 {
        text = round(&mut probe).await;
        let (_, _, lost, _, up) = broker_metrics(&text, "broker-b");
        settled = if up == 1.0 && lost > 0.0 {
            settled + 1
        } else {
            0
        };
        // A few rounds up and judged: the count must not move on.
        if settled >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, _, lost_b, _, up_b) = broker_metrics(&text, "broker-b");
    let (_, _, lost_a, _, _) = broker_metrics(&text, "broker-a");
    assert_eq!(up_b, 1.0, "broker-b back:\n{text}");
    assert_eq!(
        lost_b, expected_lost,
        "exactly the {expected_lost} cut probe messages are store losses:\n{text}"
    );
    assert_eq!(lost_a, 0.0, "nothing lost on broker-a");
    let tallies = probe.tallies();
    assert_eq!(
        tallies["broker-b"].1, 0,
        "nothing unreadable after the restart: {tallies:?}"
    );
}

/// `curl` the metrics; `gzip` asks for (and lets curl undo) compression.
fn curl_metrics(listen: &str, gzip: bool) -> (String, String) {
    let mut args = vec!["-s", "-S", "-D", "-", "--max-time", "10"];
    if gzip {
        args.push("--compressed");
    }
    let url = format!("http://{listen}/metrics");
    args.push(&url);
    let output = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl is required");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

/// The daemon's own request counters move between two scrapes; the rest
/// of a snapshot does not (the collection interval is an hour).
fn without_self_metrics(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| !l.contains("mqaudit_broker_requests_total"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_configured_probe_hides_its_group_and_answers_gzip_with_the_same_text() {
    let c = crate::support::cluster();
    let dir = std::env::temp_dir().join(unique("mqaudit-probe-serve"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (topic, group) = (unique("ServeProbe"), unique("probe_group"));
    let listen = format!("127.0.0.1:{}", crate::support::free_port());
    let config = dir.join("mqaudit.toml");
    std::fs::write(
        &config,
        format!(
            "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n[cluster.probe]\nenabled = true\ntopic = \"{topic}\"\ngroup = \"{group}\"\ninterval_seconds = 1\ndeadline_seconds = 5\n\n[collect]\ninterval_seconds = 5\n# The probe creates its topic after the first discovery may have run:\n# rediscover every cycle, or the topic waits the default 120 s.\ndiscovery_interval_seconds = 5\n[web]\nlisten_address = \"{listen}\"\n",
            c.namesrv
        ),
    )
    .expect("config");
    let _serve =
        crate::support::Daemon::mqaudit(&["serve", "--config", config.to_str().expect("utf-8")]);
    let text = crate::support::eventually_explained(
        90,
        "the probe reads back on both masters",
        || async {
            let (_, body) = tokio::task::spawn_blocking({
                let listen = listen.clone();
                move || curl_metrics(&listen, false)
            })
            .await
            .map_err(|e| e.to_string())?;
            let a = broker_metrics(&body, "broker-a");
            let b = broker_metrics(&body, "broker-b");
            // Also wait for a collection cycle that saw the probe's group.
            if a.1 >= 3.0 && b.1 >= 3.0 && body.contains(&format!("topic=\"{topic}\"")) {
                Ok(body)
            } else {
                Err(format!("received on broker-a {}, broker-b {}", a.1, b.1))
            }
        },
    )
    .await;
    for broker in ["broker-a", "broker-b"] {
        let (failed, _, lost, latencies, up) = broker_metrics(&text, broker);
        assert_eq!((failed, lost, up), (0.0, 0.0, 1.0), "{broker}:\n{text}");
        assert!(latencies >= 3.0, "{broker}: latency recorded");
    }
    assert!(
        !text.contains(&format!("group=\"{group}\"")),
        "the probe's group is in the group metrics"
    );
    crate::exporter::promtool_check(&text);

    // Stop the probe's churn from mattering: compare two scrapes of one
    // snapshot — identity, then gzip.
    let (head, identity, zipped) = tokio::task::spawn_blocking({
        let listen = listen.clone();
        move || {
            for _ in 0..20 {
                let (_, identity) = curl_metrics(&listen, false);
                let (head, zipped) = curl_metrics(&listen, true);
                let (_, again) = curl_metrics(&listen, false);
                if without_self_metrics(&identity) == without_self_metrics(&again) {
                    return (head, identity, zipped);
                }
            }
            panic!("no two identical snapshots in 20 tries");
        }
    })
    .await
    .expect("scrapes");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert_eq!(
        without_self_metrics(&zipped),
        without_self_metrics(&identity),
        "gzip body decompresses to the same text"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
