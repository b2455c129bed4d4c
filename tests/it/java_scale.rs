//! A window past the in-memory settle size on a Java broker: 80,000
//! messages sent by four real Java producers in one window, consumed by the
//! real Java consumer, both sides in their own ledgers. The audit settles
//! the window in shares on every core (`audit::partition::settle`, from
//! 65,536 produced messages) and, with a 1 MiB budget, from disk in
//! partitions; both name exactly the messages the scenario lost, at their
//! stage. Every expected set is fixed by the plan sent and what the
//! consumer was told to do (and, for duplicates, what it reported it
//! delivered), never read back from the audit. Runs in the java4 and java5
//! legs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mqaudit::audit::store::Finding;

use crate::java_audit::offsets_committed;
use crate::support::java::{Consume, Msg, Produce, client};
use crate::support::{eventually_explained, now_ms, unique};

/// Java producers sending at once, each its own JVM and ledger.
const PRODUCERS: usize = 4;
/// Messages each sends: 80,000 in all, past the settle size (65,536) with
/// room for a few sent after the window ends on a slow machine.
const PER_PRODUCER: usize = 20_000;
/// Every this many messages of a producer's plan, one is never sent (the
/// ledger says so: lost at `send`) and one is acknowledged by the consumer
/// without a ledger line (lost at `consume`).
const EVERY: usize = 2_500;
/// How long the four producers may take (measured on two cores: 72 to
/// 146 s, the longest on a freshly started 5.3.3 cluster; 134 s in a CI
/// run): the window is chosen to end after it, and sends that still come
/// later fall in the next window, audited too.
const PRODUCING_MS: i64 = 200_000;

/// A window length in whole seconds whose window holding `now_ms` ends at
/// least `needed_ms` later, and as soon after that as lengths up to three
/// times `needed_ms` allow: (length in s, that window's start in ms).
/// Windows are aligned to their length since the epoch, so the current one
/// ends anywhere from now to a length away; the test waits for it to end.
fn window_ending_after(now_ms: i64, needed_ms: i64) -> (i64, i64) {
    let needed_s = (needed_ms + 999) / 1000;
    (needed_s..=needed_s * 3)
        .map(|len_s| {
            let len = len_s * 1000;
            (len_s, now_ms - now_ms.rem_euclid(len))
        })
        .filter(|(len_s, start)| start + len_s * 1000 - now_ms >= needed_ms)
        .min_by_key(|(len_s, start)| start + len_s * 1000)
        .expect("a length of three times what is needed always fits")
}

/// What the audit found, comparable across stores: (kind, key, count,
/// status, stage), sorted.
fn facts(findings: &[Finding]) -> Vec<(String, String, i64, String, Option<String>)> {
    let mut v: Vec<_> = findings
        .iter()
        .map(|f| {
            (
                f.kind.as_str().to_string(),
                f.key.clone(),
                f.count,
                f.status.as_str().to_string(),
                f.stage.map(|s| s.as_str().to_string()),
            )
        })
        .collect();
    v.sort();
    v
}

/// The keys of the findings of `kind` with `status` and `stage`.
fn keys_of(
    facts: &[(String, String, i64, String, Option<String>)],
    kind: &str,
    status: &str,
    stage: Option<&str>,
) -> BTreeSet<String> {
    facts
        .iter()
        .filter(|f| f.0 == kind && f.3 == status && f.4.as_deref() == stage)
        .map(|f| f.1.clone())
        .collect()
}

/// `mqaudit audit --once` of `[from, to)` on the store under `data`; the
/// JSON log it wrote.
async fn audit_once(
    dir: &Path,
    data: &Path,
    flow: &str,
    budget: &str,
    range: (i64, i64),
) -> String {
    let (store_lines, env) = crate::support::store::serve_config(data).await;
    let config = dir.join(format!(
        "{}.toml",
        data.file_name().expect("name").to_string_lossy()
    ));
    std::fs::write(
        &config,
        format!(
            "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n\n[audit]\n{store_lines}diagnose_budget = 10000\n{budget}\n{flow}",
            crate::support::cluster().namesrv
        ),
    )
    .expect("write config");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--log.format", "json", "audit", "--flow", "scale", "--once"])
        .args(["--from", &range.0.to_string(), "--to", &range.1.to_string()])
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .expect("run mqaudit audit");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{}: {log}", config.display());
    log
}

/// The JSON log line whose message is `message` about the window starting
/// at `window_ms`.
fn logged(log: &str, message: &str, window_ms: i64) -> Option<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == message && v["window_ms"] == window_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_window_of_80_000_messages_is_settled_in_shares_and_from_disk_with_exactly_the_lost_keys()
 {
    let java = client();
    let dir = std::env::temp_dir().join(unique("mqaudit-java-scale"));
    std::fs::create_dir_all(&dir).expect("dir");
    let topic = unique("JavaScale");
    let (group, producer_group) = (unique("JavaScaleGroup"), unique("JavaScaleProducer"));
    java.create_topic(&topic, 4).await;

    // Plans fixed here: key scale-P-I; the losses by construction.
    let key = |p: usize, i: usize| format!("scale-{p}-{i}");
    let mut not_sent = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let plans: Vec<Vec<Msg>> = (0..PRODUCERS)
        .map(|p| {
            (0..PER_PRODUCER)
                .map(|i| {
                    let k = key(p, i);
                    match i % EVERY {
                        1 => {
                            not_sent.insert(k.clone());
                            Msg::key(&k).not_sent()
                        }
                        1_250 => {
                            silent.insert(k.clone());
                            Msg::key(&k)
                        }
                        _ => Msg::key(&k),
                    }
                })
                .collect()
        })
        .collect();
    let total = PRODUCERS * PER_PRODUCER;

    let consumer_ledger = dir.join("consumed.jsonl");
    let consumer = java
        .consume(
            &topic,
            &group,
            Consume {
                ack_no_ledger: silent.iter().cloned().collect(),
                ledger: Some(consumer_ledger.clone()),
                trace: false,
                ..Consume::default()
            },
        )
        .await;

    // The current window ends after the producers are done: its start is
    // before the first send, so every send of the window falls in it.
    let chosen_at = now_ms();
    let (window_s, window_start) = window_ending_after(chosen_at, PRODUCING_MS);
    let window_end = window_start + window_s * 1000;
    let sends = futures_util::future::join_all(plans.iter().enumerate().map(|(p, plan)| {
        java.produce(
            &topic,
            &producer_group,
            plan,
            Produce {
                trace: false,
                ledger: Some(dir.join(format!("produced-{p}.jsonl"))),
                ..Produce::default()
            },
        )
    }))
    .await;
    let sent: Vec<_> = sends.into_iter().flatten().collect();
    let failed: Vec<_> = sent.iter().filter(|s| s.status == "FAILED").collect();
    assert!(failed.is_empty(), "sends that failed: {failed:?}");
    let last_sent = sent.iter().map(|s| s.time_ms).max().expect("sent");
    let in_window = sent
        .iter()
        .filter(|s| (window_start..window_end).contains(&s.time_ms))
        .count();
    eprintln!(
        "{total} messages sent by {PRODUCERS} Java producers in {} ms; {in_window} in the {window_s} s window from {window_start}, the last {} ms before its end",
        last_sent - chosen_at,
        window_end - last_sent
    );
    assert!(
        in_window >= 1 << 16,
        "only {in_window} sends in the window [{window_start}, {window_end}): the producers took longer than {PRODUCING_MS} ms"
    );

    // Everything sent is delivered once at least.
    let delivered = eventually_explained(300, "every message sent delivered", || async {
        let d = consumer.deliveries();
        let keys: BTreeSet<String> = d.iter().filter_map(|d| d.key.clone()).collect();
        if keys.len() == total - not_sent.len() {
            Ok(d)
        } else {
            Err(format!(
                "{} of {} keys delivered",
                keys.len(),
                total - not_sent.len()
            ))
        }
    })
    .await;
    assert!(delivered.iter().all(|d| d.result != "fail"));
    // The audit reads the group's committed offsets: a silent acknowledgement
    // is lost at consume only once the group has committed past it.
    offsets_committed(&group).await;
    let deliveries = consumer.stop().await;
    // Deliveries beyond the first of a key (the client's at-least-once):
    // duplicates the audit must name, from what the consumer reported.
    let mut per_key: BTreeMap<String, i64> = BTreeMap::new();
    for d in deliveries.iter().filter(|d| d.result == "success") {
        *per_key.entry(d.key.clone().expect("keyed")).or_default() += 1;
    }
    let duplicated: BTreeMap<String, i64> = per_key
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (k.clone(), n - 1))
        .collect();
    let acknowledged_silently: BTreeSet<String> = deliveries
        .iter()
        .filter(|d| d.result == "ack_no_ledger")
        .filter_map(|d| d.key.clone())
        .collect();
    assert_eq!(acknowledged_silently, silent, "the consumer did as told");
    // A silent acknowledgement is lost unless the message came again (a
    // redelivery writes its ledger line).
    let lost_at_consume: BTreeSet<String> = silent
        .iter()
        .filter(|k| !per_key.contains_key(*k))
        .cloned()
        .collect();

    // Past the window's end and its deadline (5 s): the verdicts are final.
    // On a slow machine the last sends can fall in the next window: then
    // that one too is audited past its deadline, so every message of the
    // construction has its final verdict.
    let deadline_ms = 5_000;
    let window_ms = window_s * 1000;
    let audited_to = window_start + window_ms * ((last_sent - window_start) / window_ms + 1);
    if audited_to > window_end {
        eprintln!(
            "the last sends fell after the window: the next one is audited too, up to {audited_to}"
        );
    }
    let wait = (audited_to + deadline_ms + 1_000 - now_ms()).max(0);
    tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
    let flow = format!(
        "[[flow]]\nname = \"scale\"\ncluster = \"test\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\n\
         schedule = \"0 * * * * *\"\nwindow_seconds = {window_s}\nsettle_seconds = 0\ndeadline_seconds = {}\n\
         produced = {{ kind = \"jsonl\", path = \"{}\" }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
        deadline_ms / 1000,
        dir.join("produced-*.jsonl").display(),
        consumer_ledger.display()
    );
    let range = (window_start, audited_to);
    let (shares_dir, spilled_dir) = (dir.join("shares"), dir.join("spilled"));
    let shares_log = audit_once(&dir, &shares_dir, &flow, "", range).await;
    let spilled_log = audit_once(
        &dir,
        &spilled_dir,
        &flow,
        "memory_budget = \"1 MiB\"",
        range,
    )
    .await;

    // The default budget holds the window and settles it in shares; the
    // 1 MiB budget spills it and reduces it partition by partition.
    let settled = logged(
        &shares_log,
        "Large window settled in shares in memory.",
        window_start,
    )
    .unwrap_or_else(|| panic!("no settle in shares logged: {shares_log}"));
    let (shares, settled_n, kept) = (
        settled["shares"].as_u64().unwrap_or(0),
        settled["settled"].as_u64().unwrap_or(0),
        settled["kept"].as_u64().unwrap_or(0),
    );
    let spill = logged(
        &spilled_log,
        "Window past the memory budget reconciled from disk.",
        window_start,
    )
    .unwrap_or_else(|| panic!("no spill logged: {spilled_log}"));
    eprintln!("default budget: {settled}\n1 MiB budget: {spill}");
    // Where the run's time went: reading 80,000 ledger records takes time,
    // within the run's; a ledger flow ingests no trace.
    let done = shares_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "Audit run done.")
        .unwrap_or_else(|| panic!("no run logged: {shares_log}"));
    let (read_ms, elapsed_ms) = (
        done["read_ms"].as_u64().unwrap_or(0),
        done["elapsed_ms"].as_u64().unwrap_or(0),
    );
    assert!(read_ms > 0 && read_ms <= elapsed_ms, "{done}");
    assert_eq!(done["ingest_ms"].as_u64(), Some(0), "{done}");
    assert!(shares >= 2, "{shares} shares: {settled}");
    assert_eq!(
        settled_n + kept,
        in_window as u64,
        "settled and kept are the window's produced messages: {settled}"
    );
    assert!(
        spill["partitions"].as_u64().unwrap_or(0) >= 2,
        "the 1 MiB budget reduced the window in partitions: {spill}"
    );

    let shares_store = crate::support::store::open(&shares_dir).await;
    let spilled_store = crate::support::store::open(&spilled_dir).await;
    let found = facts(
        &shares_store
            .findings(Some("scale"), None, None, 1_000_000)
            .await
            .expect("findings"),
    );
    let spilled = facts(
        &spilled_store
            .findings(Some("scale"), None, None, 1_000_000)
            .await
            .expect("findings"),
    );
    // Fixed by construction, not read from the output.
    assert_eq!(keys_of(&found, "missing", "lost", Some("send")), not_sent);
    assert_eq!(
        keys_of(&found, "missing", "lost", Some("consume")),
        lost_at_consume
    );
    let named_duplicates: BTreeMap<String, i64> = found
        .iter()
        .filter(|f| f.0 == "duplicated")
        .map(|f| (f.1.clone(), f.2))
        .collect();
    assert_eq!(named_duplicates, duplicated, "duplicate deliveries");
    assert_eq!(
        found.len(),
        not_sent.len() + lost_at_consume.len() + duplicated.len(),
        "no other finding (no orphan, nothing pending): {:?}",
        found
            .iter()
            .filter(|f| f.0 != "duplicated" && f.3 != "lost")
            .collect::<Vec<_>>()
    );
    assert_eq!(
        found, spilled,
        "the spilled audit differs from the one in shares"
    );
    let (a, b) = (
        shares_store.totals("scale").await.expect("totals"),
        spilled_store.totals("scale").await.expect("totals"),
    );
    assert_eq!(
        (a.counter("produced", ""), a.counter("consumed", "")),
        (
            total as i64,
            (total - not_sent.len() - lost_at_consume.len()) as i64
        ),
        "every produced message counted once, every one consumed matched"
    );
    assert_eq!(a.counters, b.counters);
    let _ = std::fs::remove_dir_all(&dir);
}
