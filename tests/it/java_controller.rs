//! 5.x controller mode on the real 5.3.3 broker and controller (java5 leg
//! only; `scripts/rocketmq-cluster.sh up DIR --broker java5 --controller`:
//! a standalone DLedger controller and broker set broker-c of two replicas).
//! The exporter finds the controller through the brokers' `controllerAddr`,
//! names its leader, and follows broker-c's sync-state set as the real
//! controller changes it: both replicas in sync; the slave stopped, the set
//! shrinks to the master (its epoch rises) and `RocketMQInSyncReplicasShrunk`
//! has its series; the slave back, in sync again; the master stopped, the
//! controller elects the slave (the master epoch rises, broker-c's master is
//! the other address); the controller stopped, no leader and a
//! `controller` collector error. Every scrape answers within 1 s.

use std::time::Duration;

use crate::exporter::{Sample, http_get, parse_metrics, sum};
use crate::support::{Daemon, PrivateCluster, cluster, eventually_explained, free_port};

fn scrape(listen: &str) -> Result<Vec<Sample>, String> {
    let (code, body, took) = http_get(listen, "/metrics").ok_or("no answer")?;
    if code != 200 {
        return Err(format!("HTTP {code}"));
    }
    if took >= Duration::from_secs(1) {
        return Err(format!("scrape took {took:?}"));
    }
    Ok(parse_metrics(&body))
}

/// broker-c as the exporter shows it.
#[derive(Debug, PartialEq)]
struct SyncState {
    in_sync: Option<f64>,
    not_in_sync: Option<f64>,
    master_epoch: Option<f64>,
    set_epoch: Option<f64>,
    /// Address of the replica with broker_id 0 in rocketmq_broker_info.
    master: Option<String>,
    /// Addresses of the replicas in the sync-state set.
    in_sync_addrs: Vec<String>,
}

fn sync_state(s: &[Sample]) -> SyncState {
    let of = |family: &str, extra: &[(&str, &str)]| {
        let mut filter = vec![("broker", "broker-c")];
        filter.extend_from_slice(extra);
        sum(s, family, &filter)
    };
    let master = s
        .iter()
        .find(|(n, l, _)| {
            n == "rocketmq_broker_info"
                && l.get("broker").map(String::as_str) == Some("broker-c")
                && l.get("broker_id").map(String::as_str) == Some("0")
        })
        .and_then(|(_, l, _)| l.get("addr").cloned());
    let mut in_sync_addrs: Vec<String> = s
        .iter()
        .filter(|(n, l, v)| {
            n == "rocketmq_broker_replica_in_sync"
                && l.get("broker").map(String::as_str) == Some("broker-c")
                && *v == 1.0
        })
        .filter_map(|(_, l, _)| l.get("addr").cloned())
        .collect();
    in_sync_addrs.sort();
    SyncState {
        in_sync: of(
            "rocketmq_broker_sync_state_replicas",
            &[("state", "in_sync")],
        ),
        not_in_sync: of(
            "rocketmq_broker_sync_state_replicas",
            &[("state", "not_in_sync")],
        ),
        master_epoch: of("rocketmq_broker_master_epoch", &[]),
        set_epoch: of("rocketmq_broker_sync_state_set_epoch", &[]),
        master,
        in_sync_addrs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_leader_and_a_broker_sets_in_sync_replicas_follow_the_real_controller() {
    assert_eq!(
        cluster().flavour.as_str(),
        "java5",
        "controller mode needs the 5.3.3 broker: run this module in the java5 leg"
    );
    let private = std::sync::Arc::new(
        tokio::task::spawn_blocking(|| PrivateCluster::start_with(&["--controller"]))
            .await
            .expect("private cluster"),
    );
    let controller = private.get("CONTROLLER_ADDR").to_string();
    let replicas = [
        ("broker-c-0", private.get("BROKER_C0_ADDR").to_string()),
        ("broker-c-1", private.get("BROKER_C1_ADDR").to_string()),
    ];
    let listen = format!("127.0.0.1:{}", free_port());
    // Discovery (broker configs, the brokers' ids) every cycle: each change
    // of the topology shows within seconds.
    let config = std::env::temp_dir().join(crate::support::unique("mqaudit-controller.toml"));
    std::fs::write(
        &config,
        format!(
            "[[cluster]]\nname = \"{}\"\nnamesrv = [\"{}\"]\n\n[collect]\ninterval_seconds = 2\n\
             timeout_seconds = 1\ndiscovery_interval_seconds = 2\n\n[web]\nlisten_address = \"{listen}\"\n",
            private.get("ROCKETMQ_CLUSTER"),
            private.get("NAMESRV_ADDR"),
        ),
    )
    .expect("config");
    let _serve = Daemon::mqaudit(&["serve", "--config", &config.to_string_lossy()]);
    let controller_state = |s: &[Sample]| {
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
    let first = eventually_explained(
        120,
        "both replicas in sync, the controller leading",
        || async {
            let s = scrape(&listen)?;
            let state = sync_state(&s);
            let ctl = controller_state(&s);
            if ctl == (Some(1.0), Some(1.0), Some(1.0))
                && state.in_sync == Some(2.0)
                && state.not_in_sync == Some(0.0)
                && state.master.is_some()
                && state.master_epoch.is_some_and(|e| e >= 1.0)
            {
                Ok(state)
            } else {
                Err(format!(
                    "controller (up, leader, has leader) {ctl:?}, broker-c {state:?}"
                ))
            }
        },
    )
    .await;
    let master = first.master.clone().expect("a master");
    let (master_node, slave_node, slave_addr) = if replicas[0].1 == master {
        (replicas[0].0, replicas[1].0, replicas[1].1.clone())
    } else {
        (replicas[1].0, replicas[0].0, replicas[0].1.clone())
    };
    assert!(
        replicas.iter().any(|(_, a)| *a == master),
        "broker-c's master {master} is one of its replicas {replicas:?}"
    );

    // The slave stopped: the master drops it from the sync-state set.
    let p = private.clone();
    tokio::task::spawn_blocking(move || p.node("stop", slave_node))
        .await
        .expect("stop the slave");
    let shrunk = eventually_explained(120, "the sync-state set shrunk to the master", || async {
        let state = sync_state(&scrape(&listen)?);
        if state.in_sync == Some(1.0)
            && state.not_in_sync == Some(1.0)
            && state.in_sync_addrs == [master.clone()]
            && state.set_epoch > first.set_epoch
        {
            Ok(state)
        } else {
            Err(format!("{state:?} (before: {first:?})"))
        }
    })
    .await;

    // Back: it catches up and rejoins.
    let p = private.clone();
    tokio::task::spawn_blocking(move || p.node("start", slave_node))
        .await
        .expect("start the slave");
    let rejoined = eventually_explained(120, "the slave back in the sync-state set", || async {
        let state = sync_state(&scrape(&listen)?);
        if state.in_sync == Some(2.0) && state.set_epoch > shrunk.set_epoch {
            Ok(state)
        } else {
            Err(format!("{state:?}"))
        }
    })
    .await;

    // The master stopped: the controller elects the in-sync slave.
    let p = private.clone();
    tokio::task::spawn_blocking(move || p.node("stop", master_node))
        .await
        .expect("stop the master");
    eventually_explained(120, "the slave elected broker-c's master", || async {
        let state = sync_state(&scrape(&listen)?);
        if state.master.as_deref() == Some(slave_addr.as_str())
            && state.master_epoch > rejoined.master_epoch
        {
            Ok(())
        } else {
            Err(format!("{state:?} (want master {slave_addr})"))
        }
    })
    .await;

    // The controller stopped: no leader, and the collector says why.
    let errors = |s: &[Sample]| {
        sum(
            s,
            "mqaudit_collector_errors_total",
            &[("collector", "controller")],
        )
        .unwrap_or(0.0)
    };
    let before = errors(&scrape(&listen).expect("scrape"));
    let p = private.clone();
    tokio::task::spawn_blocking(move || p.node("stop", "controller"))
        .await
        .expect("stop the controller");
    eventually_explained(60, "the controller down, no leader", || async {
        let s = scrape(&listen)?;
        let ctl = controller_state(&s);
        if ctl.0 == Some(0.0) && ctl.2 == Some(0.0) && errors(&s) > before {
            Ok(())
        } else {
            Err(format!(
                "controller (up, leader, has leader) {ctl:?}, errors {} (before {before})",
                errors(&s)
            ))
        }
    })
    .await;
}
