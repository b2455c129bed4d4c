//! 5.x controller mode against the real 5.3.3 controller (java5 leg only;
//! `scripts/rocketmq-cluster.sh up DIR --broker java5 --controller` adds a
//! standalone DLedger controller). The broker that names it is a fake — a
//! protocol fake answering as name server and as one broker in controller
//! mode (`enableControllerMode=true`, `controllerAddr` = the real
//! controller) — because brokers in controller mode cannot register on the
//! shared distribution (its controller cannot apply their broker-id
//! requests: fastjson finds no default constructor for ApplyBrokerIdEvent).
//! Real: the controller's metadata and sync-state answers. Shown: the
//! controller up and leading, the group with a leader, no sync-state series
//! for a broker set the controller does not know, no controller error; the
//! controller stopped: down, no leader, and a `controller` collector error.
//! A populated sync-state set is rendered from a constructed body in the
//! collector's unit tests.

use std::time::Duration;

use bytes::Bytes;

use crate::exporter::{Sample, scrape_within_1s, sum};
use crate::support::fake::{Action, FakePeer, fail, ok};
use crate::support::{Daemon, PrivateCluster, cluster, eventually_explained, free_port};

/// `mqaudit doctor --format json` against `namesrv`: its controllers as
/// (addr, reachable, is_leader) and its risk kinds.
fn doctor(namesrv: &str) -> (Vec<(String, bool, bool)>, Vec<String>) {
    let report = crate::doctor::doctor_json(namesrv);
    let controllers = report["controllers"]
        .as_array()
        .expect("controllers")
        .iter()
        .map(|c| {
            (
                c["addr"].as_str().unwrap_or("").to_string(),
                c["reachable"].as_bool().unwrap_or(false),
                c["is_leader"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let risks = report["risks"]
        .as_array()
        .expect("risks")
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or("").to_string())
        .collect();
    (controllers, risks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_controller_is_found_through_a_broker_in_controller_mode_and_its_leader_shown() {
    assert_eq!(
        cluster().flavour.as_str(),
        "java5",
        "controller mode needs 5.3.3: run this module in the java5 leg"
    );
    let private = std::sync::Arc::new(
        tokio::task::spawn_blocking(|| PrivateCluster::start_with(&["--controller"]))
            .await
            .expect("private cluster"),
    );
    let controller = private.get("CONTROLLER_ADDR").to_string();

    // The fake: name server and broker-c's master at one address.
    let addr = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let config = Bytes::from(format!(
        "brokerRole=ASYNC_MASTER\nflushDiskType=ASYNC_FLUSH\nbrokerName=broker-c\n\
         enableControllerMode=true\ncontrollerAddr={controller}\n"
    ));
    let fake = FakePeer::start({
        let addr = addr.clone();
        move |req| match req.code {
            106 => {
                let me = addr.get().cloned().unwrap_or_default();
                Action::Reply(ok(format!(
                    "{{\"brokerAddrTable\":{{\"broker-c\":{{\"brokerAddrs\":{{0:\"{me}\"}},\"brokerName\":\"broker-c\",\"cluster\":\"Ctl\"}}}},\"clusterAddrTable\":{{\"Ctl\":[\"broker-c\"]}}}}"
                )))
            }
            26 => Action::Reply(ok(config.clone())),
            28 => Action::Reply(ok(
                "{\"table\":{\"brokerVersionDesc\":\"V5_3_3\",\"commitLogMaxOffset\":\"0\",\"commitLogMinOffset\":\"0\"}}",
            )),
            _ => Action::Reply(fail(3, "not supported by the fake")),
        }
    })
    .await;
    addr.set(fake.addr.clone()).expect("set once");

    let listen = format!("127.0.0.1:{}", free_port());
    let config_path = std::env::temp_dir().join(crate::support::unique("mqaudit-controller.toml"));
    std::fs::write(
        &config_path,
        format!(
            "[[cluster]]\nname = \"Ctl\"\nnamesrv = [\"{}\"]\n\n[collect]\ninterval_seconds = 2\n\
             timeout_seconds = 1\ndiscovery_interval_seconds = 2\n\n[web]\nlisten_address = \"{listen}\"\n",
            fake.addr
        ),
    )
    .expect("config");
    let _serve = Daemon::mqaudit(&["serve", "--config", &config_path.to_string_lossy()]);
    let state = |s: &[Sample]| {
        (
            sum(
                s,
                "rocketmq_controller_up",
                &[("controller", controller.as_str())],
            ),
            sum(
                s,
                "rocketmq_controller_is_leader",
                &[("controller", controller.as_str())],
            ),
            sum(s, "rocketmq_controller_has_leader", &[]),
        )
    };
    let errors = |s: &[Sample]| {
        sum(
            s,
            "mqaudit_collector_errors_total",
            &[("collector", "controller")],
        )
        .unwrap_or(0.0)
    };
    let s = eventually_explained(120, "the real controller up and leading", || async {
        let s = scrape_within_1s(&listen)?;
        match state(&s) {
            (Some(1.0), Some(1.0), Some(1.0)) => Ok(s),
            other => Err(format!("controller (up, leader, has leader): {other:?}")),
        }
    })
    .await;
    // The controller knows no broker-c: nothing to show, and no error (its
    // sync-state answer is an empty table, not a failure).
    assert_eq!(
        sum(&s, "rocketmq_broker_sync_state_replicas", &[]),
        None,
        "no sync-state series for a broker set the controller does not know"
    );
    // Every answer of the real controller parses: no protocol error, ever.
    // A timeout while its JVM warms up (1 s here, on a loaded machine) is
    // not a parse failure, but once it is up and leading no call may fail.
    assert_eq!(
        sum(
            &s,
            "mqaudit_collector_errors_total",
            &[("collector", "controller"), ("error_type", "protocol")],
        )
        .unwrap_or(0.0),
        0.0,
        "the real controller's answers all parse"
    );
    let settled = errors(&s);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let s = scrape_within_1s(&listen).expect("scrape");
    assert_eq!(
        state(&s),
        (Some(1.0), Some(1.0), Some(1.0)),
        "still up and leading"
    );
    assert_eq!(
        errors(&s),
        settled,
        "no controller call fails while it is up and leading (three cycles)"
    );

    // The doctor sees the same: the controller up and leading, no risk.
    let fake_addr = fake.addr.clone();
    let (controllers, risks) = tokio::task::spawn_blocking(move || doctor(&fake_addr))
        .await
        .expect("doctor");
    assert_eq!(controllers, [(controller.clone(), true, true)]);
    assert!(
        !risks
            .iter()
            .any(|k| k.starts_with("controller") || k == "in_sync_shrunk"),
        "{risks:?}"
    );

    let p = private.clone();
    tokio::task::spawn_blocking(move || p.node("stop", "controller"))
        .await
        .expect("stop the controller");
    eventually_explained(60, "the controller down, no leader", || async {
        let s = scrape_within_1s(&listen)?;
        match (state(&s), errors(&s)) {
            ((Some(0.0), None, Some(0.0)), e) if e > 0.0 => Ok(()),
            other => Err(format!("(up, leader, has leader), errors: {other:?}")),
        }
    })
    .await;
    let fake_addr = fake.addr.clone();
    let (controllers, risks) = tokio::task::spawn_blocking(move || doctor(&fake_addr))
        .await
        .expect("doctor");
    assert_eq!(controllers, [(controller.clone(), false, false)]);
    for kind in ["controller_no_leader", "controller_unreachable"] {
        assert!(risks.iter().any(|k| k == kind), "{kind} in {risks:?}");
    }
}
