//! `mqaudit doctor` as an operator runs it: the real binary against the real
//! test cluster, in text and JSON.

use std::process::Command;

use serde_json::Value;

use crate::support::driver::Driver;
use crate::support::{cluster, eventually, unique};

fn doctor(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .arg("doctor")
        .args(args)
        .output()
        .expect("run mqaudit");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `mqaudit doctor --namesrv NAMESRV --format json`, parsed; panics with
/// its stderr when it fails.
pub fn doctor_json(namesrv: &str) -> Value {
    let (code, stdout, stderr) = doctor(&["--namesrv", namesrv, "--format", "json"]);
    assert_eq!(code, 0, "mqaudit doctor failed: {stderr}");
    serde_json::from_str(&stdout).expect("doctor JSON")
}

fn risks_of<'a>(report: &'a Value, subject: &str) -> Vec<&'a str> {
    report["risks"]
        .as_array()
        .expect("risks")
        .iter()
        .filter(|r| r["subject"] == subject)
        .map(|r| r["kind"].as_str().expect("kind"))
        .collect()
}

#[tokio::test]
async fn doctor_lists_three_brokers_with_roles_and_flags_broker_a() {
    let c = cluster();
    // A group with a dead-lettered message and lag but no consumer online.
    let driver = Driver::new();
    let topic = unique("Doctor");
    let group = unique("DoctorGroup");
    driver.create_topic(&c.broker_b, &topic, 1).await;
    for i in 0..4 {
        driver
            .send(
                &c.broker_b,
                "broker-b",
                &topic,
                0,
                &format!("doc-{i}"),
                b"x",
            )
            .await;
    }
    let q = mqaudit::body::json::MessageQueue {
        topic: topic.clone(),
        broker_name: "broker-b".into(),
        queue_id: 0,
    };
    let first = eventually(15, "pullable", || async {
        let m = driver.pull(&c.broker_b, &group, &q, 0, 1).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    driver
        .send_back(&c.broker_b, &group, &first[0], -1, 16)
        .await;
    driver.commit(&c.broker_b, &group, &q, 1).await;

    let report = eventually(20, "doctor sees the DLQ message", || async {
        let (code, stdout, stderr) = doctor(&["--namesrv", &c.namesrv, "--format", "json"]);
        assert_eq!(code, 0, "stderr: {stderr}");
        let report: Value = serde_json::from_str(&stdout).expect("JSON report");
        let g = report["groups"]
            .as_array()?
            .iter()
            .find(|g| g["group"] == group.as_str())?
            .clone();
        (g["dlq_messages"] == 1).then_some(report)
    })
    .await;

    let brokers = report["brokers"].as_array().expect("brokers");
    let summary: Vec<(String, u64, String, String)> = brokers
        .iter()
        .map(|b| {
            (
                b["broker_name"].as_str().expect("name").to_string(),
                b["broker_id"].as_u64().expect("id"),
                b["role"].as_str().unwrap_or("?").to_string(),
                b["flush_disk_type"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "broker-a".into(),
                0,
                "ASYNC_MASTER".into(),
                "ASYNC_FLUSH".into()
            ),
            ("broker-a".into(), 1, "SLAVE".into(), "ASYNC_FLUSH".into()),
            (
                "broker-b".into(),
                0,
                "SYNC_MASTER".into(),
                "SYNC_FLUSH".into()
            ),
        ]
    );
    assert!(brokers.iter().all(|b| b["reachable"] == true
        && b["commit_log_max_offset"].is_i64()
        && b["flush_lag_bytes"].is_u64()));
    let replicas = brokers[0]["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0]["addr"], c.broker_a_slave.as_str());
    assert!(replicas[0]["lag_bytes"].is_i64());

    assert_eq!(
        risks_of(&report, "broker-a/0"),
        ["async_flush", "async_replication"]
    );
    assert_eq!(risks_of(&report, "broker-b/0"), ["no_replica"]);
    assert!(
        risks_of(&report, "broker-a/1").is_empty(),
        "slaves get no master verdicts"
    );
    assert_eq!(
        risks_of(&report, &group),
        ["dlq_not_empty", "lag_without_consumers"]
    );
    let g = report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == group.as_str())
        .expect("group");
    assert_eq!(
        (g["lag_messages"].as_i64(), g["online_consumers"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(report["trace_topic_present"], true);
    assert_eq!(report["format_version"], 1);
    // No probe watches the shared cluster (tests use topics of their own).
    assert_eq!(report["probe_topic_brokers"], serde_json::json!([]));
    assert_eq!(risks_of(&report, "mqaudit_probe"), ["probe_off"]);

    let (code, text, _) = doctor(&["--namesrv", &c.namesrv]);
    assert_eq!(code, 0);
    for needle in [
        "BROKERS",
        "broker-a",
        "ASYNC_MASTER",
        "SYNC_MASTER",
        "SLAVE",
        "VERDICTS",
        "async_flush",
        "async_replication",
        "→ Set flushDiskType=SYNC_FLUSH",
    ] {
        assert!(
            text.contains(needle),
            "text report lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn doctor_against_a_dead_name_server_fails_with_a_clear_message() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let (code, stdout, stderr) = doctor(&["--namesrv", &addr, "--timeout-seconds", "2"]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("cannot read cluster info") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[test]
fn doctor_usage_errors_exit_64() {
    let (code, _, stderr) = doctor(&[]);
    assert_eq!(code, 64, "{stderr}");
    let (code, _, stderr) = doctor(&["--namesrv", "x:1", "--acl.access-key-env", "ONLY_ONE"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("together"), "{stderr}");
}

#[test]
fn check_config_accepts_the_shipped_files_and_rejects_a_typo_with_its_line() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "config/example.toml",
        "config/minimal.toml",
        "config/quickstart.toml",
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_mqaudit"))
            .args(["check-config", "--config"])
            .arg(root.join(file))
            .output()
            .expect("run mqaudit");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let bad = std::env::temp_dir().join(crate::support::unique("bad-config"));
    std::fs::write(
        &bad,
        "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n\n[collect]\nintervall_seconds = 5\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run mqaudit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("line 6") && stderr.contains("unknown field `intervall_seconds`"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(bad);
}
