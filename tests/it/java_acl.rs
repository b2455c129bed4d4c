//! ACL 1.0 on a real Apache RocketMQ 4.9.8 broker (`aclEnable`, a
//! plain_acl.yml): signed calls collect, refused ones are `permission`
//! errors. Runs in the java4 leg only: 5.3.3 has no ACL 1.0 validator (its
//! `aclEnable` is ignored), and its ACL 2.0 keeps users in a RocksDB store,
//! stubbed in the distribution the tests use (see docs/testing.md).

use std::process::{Command, Stdio};

use crate::exporter::{http_get, parse_metrics};
use crate::support::{Daemon, free_port, unique};

/// ACL 1.0 on a real Java broker (`aclEnable`, a plain_acl.yml with an
/// admin account): mqaudit signs every call with the configured keys and
/// collects; with a wrong secret, or no keys, every broker call is refused
/// and shown as `permission` errors with the brokers down — never silence.
/// The doctor signs the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_signed_calls_collect_and_refused_ones_are_permission_errors() {
    let private =
        tokio::task::spawn_blocking(|| crate::support::PrivateCluster::start_with(&["--acl"]))
            .await
            .expect("private ACL cluster");
    let namesrv = private.get("NAMESRV_ADDR").to_string();
    let (ak, sk) = (
        private.get("ACL_ADMIN_ACCESS_KEY").to_string(),
        private.get("ACL_ADMIN_SECRET_KEY").to_string(),
    );
    let dir = std::env::temp_dir().join(unique("mqaudit-acl"));
    std::fs::create_dir_all(&dir).expect("dir");
    for (case, secret) in [
        ("signed", Some(sk.as_str())),
        ("wrong secret", Some("not-the-secret")),
        ("unsigned", None),
    ] {
        let listen = format!("127.0.0.1:{}", free_port());
        let keys = if secret.is_some() {
            "access_key_env = \"MQ_AK\"\nsecret_key_env = \"MQ_SK\"\n"
        } else {
            ""
        };
        let config = dir.join(format!("{}.toml", case.replace(' ', "-")));
        std::fs::write(
            &config,
            format!(
                "[[cluster]]\nname = \"acl\"\nnamesrv = [\"{namesrv}\"]\n{keys}\n[collect]\ninterval_seconds = 2\n\n[web]\nlisten_address = \"{listen}\"\n"
            ),
        )
        .expect("config");
        let _serve = Daemon(
            Command::new(env!("CARGO_BIN_EXE_mqaudit"))
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .env("MQ_AK", &ak)
                .env("MQ_SK", secret.unwrap_or(""))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mqaudit serve"),
        );
        crate::support::eventually_explained(60, case, || async {
            let (_, body, _) = http_get(&listen, "/metrics").ok_or("no answer")?;
            let s = parse_metrics(&body);
            let up = crate::exporter::sum(&s, "rocketmq_broker_up", &[("broker_id", "0")]);
            let denied = crate::exporter::sum(
                &s,
                "mqaudit_collector_errors_total",
                &[("collector", "broker"), ("error_type", "permission")],
            );
            let ok = match secret {
                Some(s) if s == sk => up == Some(2.0) && denied == Some(0.0),
                _ => up == Some(0.0) && denied.is_some_and(|n| n >= 1.0),
            };
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{case}: masters up {up:?}, permission errors {denied:?}"
                ))
            }
        })
        .await;
    }
    // The doctor signs with keys from named environment variables.
    let output = Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .args(["doctor", "--namesrv", &namesrv, "--format", "json"])
        .args([
            "--acl.access-key-env",
            "MQ_AK",
            "--acl.secret-key-env",
            "MQ_SK",
        ])
        .env("MQ_AK", &ak)
        .env("MQ_SK", &sk)
        .output()
        .expect("doctor");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let reachable: Vec<bool> = report["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| b["reachable"] == true)
        .collect();
    assert_eq!(reachable, [true, true, true], "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
