//! Faults on real parts that no other module drives: a broker hung with
//! SIGSTOP for longer than the call timeout, then resumed. The scrape keeps
//! answering within 1 s, the hung broker is shown down with `timeout`
//! errors (never a stale "up"), the healthy brokers keep their values, and
//! the hung one comes back by itself after SIGCONT.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::exporter::{http_get, parse_metrics, sum};
use crate::support::{Daemon, PrivateCluster, eventually_explained, free_port};

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
    let _serve = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mqaudit"))
            .args(["serve", "--namesrv", cluster.get("NAMESRV_ADDR")])
            .args(["--web.listen-address", &listen])
            .args([
                "--collect.interval-seconds",
                "2",
                "--collect.timeout-seconds",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mqaudit serve"),
    );
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
