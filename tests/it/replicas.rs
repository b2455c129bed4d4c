//! Two `mqaudit serve` replicas on one real PostgreSQL store and the real
//! test cluster: ten flows split about half each by lease, each flow
//! audited once per schedule tick, and a `kill -9` of one replica in the
//! middle of an audit → the other takes its flows within a lease period,
//! and the findings equal a single-replica run's (nothing lost, nothing
//! doubled); when it comes back it gets its share again and both replicas
//! export the same audit series from the shared store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::exporter::{http_get, parse_metrics};
use crate::support::postgres::Postgres;
use crate::support::{Daemon, cluster, eventually, free_port, now_ms, unique};

const FLOWS: usize = 10;
const LEASE_SECONDS: u64 = 6;
const TICK_MS: i64 = 2_000;

/// Keys per flow, and which of them no consumer record names.
const KEYS: usize = 12;
const NEVER_CONSUMED: [usize; 2] = [3, 7];

/// One flow's `[[flow]]` table; its ledgers under `dir`.
fn flow_toml(dir: &Path, i: usize, topic: &str) -> String {
    format!(
        "[[flow]]\nname = \"f{i}\"\ncluster = \"test\"\ntopic = \"{topic}\"\ngroup = \"g{i}\"\n\
         schedule = \"*/2 * * * * *\"\nwindow_seconds = 10\nsettle_seconds = 0\ndeadline_seconds = 30\nrecheck_horizon_seconds = 0\n\
         produced = {{ kind = \"jsonl\", path = \"{}\" }}\nconsumed = {{ kind = \"jsonl\", path = \"{}\" }}\n",
        dir.join(format!("f{i}-produced.jsonl")).display(),
        dir.join(format!("f{i}-consumed.jsonl")).display()
    )
}

/// Flow → (key, status, stage, count) of its missing-message findings.
type Verdicts = BTreeMap<String, BTreeSet<(String, String, String, i64)>>;

async fn verdicts(store: &mqaudit::audit::store::Store) -> Verdicts {
    let mut out = Verdicts::new();
    for i in 0..FLOWS {
        let flow = format!("f{i}");
        let findings = store
            .findings(Some(&flow), None, None, 10_000)
            .await
            .expect("findings");
        out.insert(
            flow,
            findings
                .into_iter()
                .filter(|f| f.kind == mqaudit::audit::model::FindingKind::Missing)
                .map(|f| {
                    (
                        f.key,
                        f.status.as_str().to_string(),
                        f.stage.map(|s| s.as_str().to_string()).unwrap_or_default(),
                        f.count,
                    )
                })
                .collect(),
        );
    }
    out
}

/// One exported sample, comparable: name, labels, value's bits.
type Series = (String, Vec<(String, String)>, u64);

/// flow → owner, from a replica's `/metrics`.
fn owners(listen: &str) -> Option<BTreeMap<String, String>> {
    let (_, body, _) = http_get(listen, "/metrics")?;
    let samples = parse_metrics(&body);
    let owners: BTreeMap<String, String> = samples
        .iter()
        .filter(|(name, _, value)| name == "mqaudit_audit_flow_owner" && *value == 1.0)
        .filter_map(|(_, labels, _)| {
            Some((labels.get("flow")?.clone(), labels.get("replica")?.clone()))
        })
        .collect();
    Some(owners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_the_flows_audit_each_once_per_tick_and_survive_a_kill_minus_9() {
    let c = cluster();
    let postgres = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("postgres");
    let dir = std::env::temp_dir().join(unique("mqaudit-replicas"));
    std::fs::create_dir_all(&dir).expect("dir");

    // Ledgers fixed by construction: every flow sends KEYS messages over
    // the half minute before now and the next few seconds; all but two
    // are consumed.
    let t0 = now_ms();
    let topic = unique("NoSuchTopic");
    let mut expected_missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in 0..FLOWS {
        let (mut produced, mut consumed) = (String::new(), String::new());
        for k in 0..KEYS {
            let key = format!("f{i}-k{k}");
            let at = t0 - 25_000 + (k as i64) * 2_500;
            produced.push_str(&format!("{{\"key\":\"{key}\",\"time_ms\":{at}}}\n"));
            if NEVER_CONSUMED.contains(&k) {
                expected_missing
                    .entry(format!("f{i}"))
                    .or_default()
                    .insert(key);
            } else {
                consumed.push_str(&format!("{{\"key\":\"{key}\",\"time_ms\":{}}}\n", at + 100));
            }
        }
        std::fs::write(dir.join(format!("f{i}-produced.jsonl")), produced).expect("write");
        std::fs::write(dir.join(format!("f{i}-consumed.jsonl")), consumed).expect("write");
    }
    let flows: String = (0..FLOWS).map(|i| flow_toml(&dir, i, &topic)).collect();
    let replica_config = |name: &str| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n\n[audit]\ndata_dir = \"{}\"\n\
                 store = \"postgres\"\nstore_url_env = \"MQAUDIT_REPLICA_STORE\"\n\
                 lease_seconds = {LEASE_SECONDS}\nreplica = \"{name}\"\n\n{flows}",
                c.namesrv,
                dir.join(name).display()
            ),
        )
        .expect("write config");
        path
    };
    let listen: BTreeMap<&str, String> = ["a", "b"]
        .into_iter()
        .map(|n| (n, format!("127.0.0.1:{}", free_port())))
        .collect();
    let spawn = |name: &str| {
        Daemon(
            std::process::Command::new(env!("CARGO_BIN_EXE_mqaudit"))
                .args(["serve", "--config"])
                .arg(replica_config(name))
                .args(["--web.listen-address", &listen[name]])
                .env("MQAUDIT_REPLICA_STORE", &postgres.url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("serve"),
        )
    };
    let mut a = spawn("a");
    let _b = spawn("b");

    // Both replicas report the same owners, five flows each.
    let split = eventually(60, "two replicas holding five flows each", || {
        let listen = listen.clone();
        async move {
            let (from_a, from_b) =
                tokio::task::spawn_blocking(move || (owners(&listen["a"]), owners(&listen["b"])))
                    .await
                    .ok()?;
            let (from_a, from_b) = (from_a?, from_b?);
            let per: BTreeMap<&str, usize> = from_a.values().fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.as_str()).or_default() += 1;
                m
            });
            (from_a.len() == FLOWS
                && from_a == from_b
                && per.get("a") == Some(&5)
                && per.get("b") == Some(&5))
            .then_some(from_a)
        }
    })
    .await;
    let split_at = now_ms();
    let flows_of_a: Vec<String> = split
        .iter()
        .filter(|(_, r)| r.as_str() == "a")
        .map(|(f, _)| f.clone())
        .collect();

    // Kill -9 replica a while one of its audits is in flight.
    let db = sqlx::PgPool::connect(&postgres.url).await.expect("connect");
    let in_flight = "SELECT COUNT(*) FROM runs WHERE finished_ms IS NULL AND flow = ANY($1)";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut caught = false;
    while Instant::now() < deadline {
        let running: i64 = sqlx::query(in_flight)
            .bind(&flows_of_a)
            .fetch_one(&db)
            .await
            .expect("runs")
            .get(0);
        if running > 0 {
            caught = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.0.kill().expect("kill -9 replica a");
    let _ = a.0.wait();
    let killed_at = Instant::now();
    let killed_at_ms = now_ms();
    assert!(caught, "never saw one of a's audits in flight");
    let abandoned: i64 = sqlx::query(in_flight)
        .bind(&flows_of_a)
        .fetch_one(&db)
        .await
        .expect("runs")
        .get(0);

    // b takes a's flows within a lease period (plus one renewal round).
    let listen_b = listen["b"].clone();
    eventually(
        LEASE_SECONDS + LEASE_SECONDS / 3 + 4,
        "replica b owning all ten flows",
        || {
            let listen_b = listen_b.clone();
            async move {
                let owners = tokio::task::spawn_blocking(move || owners(&listen_b))
                    .await
                    .ok()??;
                (owners.len() == FLOWS && owners.values().all(|r| r == "b")).then_some(())
            }
        },
    )
    .await;
    let takeover = killed_at.elapsed();
    let taken_over_at = now_ms();
    eprintln!(
        "replica b took a's {} flows {:.1} s after the kill ({abandoned} audit(s) abandoned in flight)",
        flows_of_a.len(),
        takeover.as_secs_f64()
    );

    // Every window final: the store's verdicts are the construction's.
    let store = mqaudit::audit::store::Store::open_postgres(&postgres.url)
        .await
        .expect("store");
    // The daemons keep opening windows as time passes, so "final" means
    // every window that holds a produced key; later ones are empty.
    let last_send = t0 - 25_000 + (KEYS as i64 - 1) * 2_500;
    let settled_at = t0 + 10_000 + 30_000 + 10_000;
    let shared = eventually(120, "every flow's windows with sends final", || {
        let store = store.clone();
        async move {
            if now_ms() < settled_at + 2 * TICK_MS {
                return None;
            }
            for i in 0..FLOWS {
                let flow = format!("f{i}");
                let open = store.open_windows(&flow).await.ok()?;
                if open.iter().any(|(start, _)| *start <= last_send) {
                    return None;
                }
                if store.latest_window_end(&flow).await.ok()?? <= last_send {
                    return None;
                }
            }
            Some(verdicts(&store).await)
        }
    })
    .await;
    for (flow, missing) in &expected_missing {
        let keys: BTreeSet<String> = shared[flow].iter().map(|(k, ..)| k.clone()).collect();
        assert_eq!(&keys, missing, "{flow}: missing keys");
        let totals = store.totals(flow).await.expect("totals");
        let lost: i64 = totals
            .counters
            .get("lost")
            .map_or(0, |by_stage| by_stage.values().sum());
        assert_eq!(
            lost + totals.counter("dead_lettered", ""),
            missing.len() as i64,
            "{flow}: each missing message counted once: {totals:?}"
        );
    }

    // Each flow audited exactly once per schedule tick, by either replica:
    // never twice anywhere, and once in every tick while its owner was
    // settled (after the split; for a's flows, outside the takeover).
    let read_at = now_ms();
    let rows = sqlx::query("SELECT flow, started_ms FROM runs ORDER BY flow, started_ms")
        .fetch_all(&db)
        .await
        .expect("runs");
    let mut ticks: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for r in &rows {
        let (flow, started): (String, i64) = (r.get(0), r.get(1));
        *ticks
            .entry((flow, started.div_euclid(TICK_MS)))
            .or_default() += 1;
    }
    let doubled: Vec<_> = ticks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "flows audited twice in one tick: {doubled:?}"
    );
    let tick = |ms: i64| ms.div_euclid(TICK_MS);
    let mut skipped = Vec::new();
    for i in 0..FLOWS {
        let flow = format!("f{i}");
        let moved = flows_of_a.contains(&flow);
        for t in tick(split_at) + 2..tick(read_at) - 1 {
            if moved && (tick(killed_at_ms) - 1..=tick(taken_over_at) + 1).contains(&t) {
                continue;
            }
            if !ticks.contains_key(&(flow.clone(), t)) {
                skipped.push((flow.clone(), t * TICK_MS));
            }
        }
    }
    assert!(
        skipped.is_empty(),
        "ticks with no audit of a settled flow: {skipped:?}"
    );
    assert!(
        ticks.len() >= FLOWS * 10,
        "too few runs to show anything: {}",
        ticks.len()
    );

    // A single replica on its own (SQLite) store, over the same windows,
    // finds exactly the same.
    let control_dir = dir.join("control");
    let control_config = dir.join("control.toml");
    std::fs::write(
        &control_config,
        format!(
            "[[cluster]]\nname = \"test\"\nnamesrv = [\"{}\"]\n\n[audit]\ndata_dir = \"{}\"\n\n{flows}",
            c.namesrv,
            control_dir.display()
        ),
    )
    .expect("write");
    let origin = (t0 - 30_000).div_euclid(10_000) * 10_000 - 10_000;
    for i in 0..FLOWS {
        let config = control_config.clone();
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_mqaudit"))
                .args(["audit", "--flow", &format!("f{i}"), "--once"])
                .args([
                    "--from",
                    &origin.to_string(),
                    "--to",
                    &settled_at.to_string(),
                ])
                .arg("--config")
                .arg(config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
        })
        .await
        .expect("task")
        .expect("control run");
        assert!(status.success(), "control run of f{i}");
    }
    let control = mqaudit::audit::store::Store::open(&control_dir)
        .await
        .expect("control store");
    assert_eq!(verdicts(&control).await, shared);

    // a comes back: it gets its share again, and both replicas export the
    // same message series, read from the shared store.
    let _a = spawn("a");
    let listen_both = listen.clone();
    let series = eventually(
        60,
        "a rejoined, both exporting the same message series",
        || {
            let listen = listen_both.clone();
            async move {
                let (a, b) = tokio::task::spawn_blocking(move || {
                    let messages = |addr: &str| {
                        let (_, body, _) = http_get(addr, "/metrics")?;
                        let owners = owners(addr)?;
                        let series: BTreeSet<Series> = parse_metrics(&body)
                            .into_iter()
                            .filter(|(name, ..)| name.starts_with("mqaudit_messages_"))
                            .map(|(name, labels, value)| {
                                (name, labels.into_iter().collect(), value.to_bits())
                            })
                            .collect();
                        Some((owners, series))
                    };
                    (messages(&listen["a"]), messages(&listen["b"]))
                })
                .await
                .ok()?;
                let ((owners_a, series_a), (owners_b, series_b)) = (a?, b?);
                let share = |r: &str| owners_a.values().filter(|o| o.as_str() == r).count();
                (owners_a == owners_b && share("a") == 5 && share("b") == 5 && series_a == series_b)
                    .then_some(series_a)
            }
        },
    )
    .await;
    for i in 0..FLOWS {
        let flow = format!("f{i}");
        let lost: f64 = series
            .iter()
            .filter(|(name, labels, _)| {
                name == "mqaudit_messages_lost_total"
                    && labels.iter().any(|(k, v)| k == "flow" && *v == flow)
            })
            .map(|(.., bits)| f64::from_bits(*bits))
            .sum();
        assert_eq!(
            lost,
            NEVER_CONSUMED.len() as f64,
            "{flow}: lost messages exported"
        );
    }
}

/// A shared store of schema version 3 is upgraded in place: its trace
/// table re-keyed by time first (one key serving ingest and reads by
/// time), every row carried over, and a second replica opening it after
/// the upgrade changes nothing.
#[tokio::test]
async fn a_version_3_postgres_store_has_its_trace_re_keyed_with_every_row() {
    use mqaudit::audit::store::{Store, TraceSide};
    let postgres = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("postgres");
    let store = Store::open_postgres(&postgres.url).await.expect("create");
    drop(store);
    let pool = sqlx::PgPool::connect(&postgres.url).await.expect("connect");
    let row = |side: &str, id: &str, time: i64, success: i64, tx: &str| {
        format!(
            "INSERT INTO trace (flow, side, msg_id, time_ms, keys, offset_msg_id, store_host, tags, success, msg_type, reconsume, tx_state, batch, source)
             VALUES ('f', '{side}', '{id}', {time}, 'key-{id}', NULL, NULL, NULL, {success}, 0, 0, {tx}, 0, 'rocketmq_trace')"
        )
    };
    // Version 3's trace table, as version 3 created it on PostgreSQL.
    for statement in [
        "DROP TABLE trace".to_string(),
        "CREATE TABLE trace (flow TEXT COLLATE \"C\" NOT NULL, side TEXT COLLATE \"C\" NOT NULL, msg_id TEXT COLLATE \"C\" NOT NULL, time_ms BIGINT NOT NULL, keys TEXT COLLATE \"C\" NOT NULL, offset_msg_id TEXT COLLATE \"C\", store_host TEXT COLLATE \"C\", tags TEXT COLLATE \"C\", success BIGINT NOT NULL, msg_type BIGINT NOT NULL, reconsume BIGINT NOT NULL, tx_state TEXT COLLATE \"C\", batch BIGINT NOT NULL, source TEXT COLLATE \"C\" NOT NULL, PRIMARY KEY (flow, side, msg_id, time_ms, keys, source))".to_string(),
        "CREATE INDEX trace_by_time ON trace (flow, side, time_ms)".to_string(),
        row("pub", "m2", 200, 1, "NULL"),
        row("pub", "m1", 100, 1, "NULL"),
        row("sub", "m1", 150, 0, "NULL"),
        row("sub", "m1", 160, 1, "NULL"),
        row("tx", "m2", 210, 1, "'COMMIT_MESSAGE'"),
        "UPDATE schema_version SET version = 3".to_string(),
    ] {
        sqlx::query(&statement).execute(&pool).await.expect(&statement);
    }

    for replica in ["upgrades", "finds it upgraded"] {
        let store = Store::open_postgres(&postgres.url).await.expect(replica);
        let pubs = store
            .trace_rows("f", TraceSide::Pub, 0, 1_000)
            .await
            .expect("rows");
        let ids: Vec<(&str, i64)> = pubs
            .iter()
            .map(|r| (r.msg_id.as_str(), r.time_ms))
            .collect();
        assert_eq!(ids, [("m1", 100), ("m2", 200)], "{replica}: in time order");
        assert_eq!(
            store
                .trace_rows("f", TraceSide::Sub, 0, 1_000)
                .await
                .expect("rows")
                .len(),
            2
        );
        assert_eq!(
            store.tx_states("f", &["m2"]).await.expect("tx"),
            [("m2".to_string(), "COMMIT_MESSAGE".to_string())]
                .into_iter()
                .collect()
        );
        assert_eq!(
            store
                .failed_attempts("f", &["m1", "m2"])
                .await
                .expect("failed"),
            [("m1".to_string(), 1)].into_iter().collect()
        );
    }
    let key: String = sqlx::query(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'trace'::regclass AND indisprimary",
    )
    .fetch_one(&pool)
    .await
    .expect("key")
    .get(0);
    assert!(
        key.contains("(flow, side, time_ms, msg_id, keys, source)"),
        "{key}"
    );
    let indexes: Vec<String> = sqlx::query(
        "SELECT indexname FROM pg_indexes WHERE tablename IN ('trace', 'trace_v3') ORDER BY indexname",
    )
    .fetch_all(&pool)
    .await
    .expect("indexes")
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(
        indexes,
        ["trace_failed_by_msg_id", "trace_pkey", "trace_tx_by_msg_id"],
        "the new table has the key's usual name; nothing of the old one is left"
    );
    let version: i64 = sqlx::query("SELECT MAX(version) FROM schema_version")
        .fetch_one(&pool)
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, 4);
}
