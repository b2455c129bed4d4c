//! Benchmark: reconcile 10,000,000 produced and 10,000,000 consumed keys with
//! 0.1 % missing and 0.1 % duplicated, on one core and (the window held
//! whole, settled on every core) on all, and in the same run the
//! same reconciliation as a group-by and anti-join in PostgreSQL (a private
//! server from the Debian package, parallel workers off: one core too) and
//! in DuckDB (pinned, from PyPI, in the benchmark's own virtual environment
//! under `target/bench-venv`; every core).
//!
//! `cargo bench --bench reconcile` (`-- --keys N` to change the size).
//!
//! `cargo bench --bench reconcile -- --spill` instead reconciles windows of
//! 1M, 10M and 50M keys within `memory_budget = 256 MiB` (spilled and
//! partitioned, `src/audit/partition.rs`), each in a child process of its
//! own so its peak RSS is its own (`--windows 1000000,...` and
//! `--budget-mib N` to change them).

/// The same allocator as the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use mqaudit::audit::model::{Consumed, MessageKind, Produced, SendStatus};
use mqaudit::audit::partition::{Reduced, Split, WindowSpill, settle};
use mqaudit::audit::reconcile::{Outcome, Reconciler};

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let budget_mib: u64 = arg("--budget-mib")
        .and_then(|b| b.parse().ok())
        .unwrap_or(256);
    if let Some(n) = arg("--spill-window").and_then(|n| n.parse().ok()) {
        spill_window(n, budget_mib);
        return;
    }
    if args.iter().any(|a| a == "--spill") {
        let windows = arg("--windows").unwrap_or_else(|| "1000000,10000000,50000000".into());
        for n in windows.split(',') {
            let status = std::process::Command::new(&args[0])
                .args(["--spill-window", n, "--budget-mib", &budget_mib.to_string()])
                .status()
                .expect("run a window");
            assert!(status.success(), "window {n} failed");
        }
        return;
    }
    let n: u64 = arg("--keys")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000);
    let key = |i: u64| format!("order-{i:09}");

    // Produced side: every message once, keyed, no message id (a key ledger).
    let batch: Vec<Produced> = (0..n)
        .map(|i| Produced {
            msg_id: None,
            keys: vec![key(i)],
            time_ms: 1_700_000_000_000 + i as i64,
            offset_msg_id: None,
            tags: None,
            properties: None,
            status: SendStatus::Unknown,
            kind: MessageKind::Normal,
            transaction: None,
            batch: false,
        })
        .collect();
    // Consumed side streamed: skip keys with i % 1000 == 7, deliver i % 1000 == 3 twice.
    let started = Instant::now();
    let mut reconciler = Reconciler::new(&batch);
    let mut record = Consumed {
        msg_id: None,
        keys: vec![String::with_capacity(16)],
        time_ms: 0,
    };
    for i in 0..n {
        let r = i % 1_000;
        if r == 7 {
            continue;
        }
        record.keys[0].clear();
        use std::fmt::Write as _;
        let _ = write!(record.keys[0], "order-{i:09}");
        reconciler.consume(&record);
        if r == 3 {
            reconciler.consume(&record);
        }
    }
    let result = reconciler.finish();
    let ours = started.elapsed().as_secs_f64();
    assert_eq!(result.missing.len() as u64, n / 1_000);
    assert_eq!(result.duplicated.len() as u64, n / 1_000);
    assert_eq!(result.matched, result.consumed);
    println!(
        "reconcile: {n} produced, {} consumed: {} missing, {} duplicated in {ours:.2} s on one thread; peak RSS {} MiB",
        result.consumed,
        result.missing.len(),
        result.duplicated.len(),
        peak_rss_mib()
    );

    // The same window held whole, as the runner holds one within its
    // budget, settled on every core, then the rest reconciled on one.
    let mut consumed = Vec::with_capacity(n as usize + n as usize / 1_000);
    for i in 0..n {
        let r = i % 1_000;
        if r == 7 {
            continue;
        }
        for _ in 0..if r == 3 { 2 } else { 1 } {
            consumed.push(Consumed {
                msg_id: None,
                keys: vec![key(i)],
                time_ms: 0,
            });
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let one_thread_settled = held_window(batch.clone(), consumed.clone(), 1, ours);
    let all_cores = held_window(batch, consumed, threads, ours);

    // PostgreSQL on the same data, generated server-side.
    let server = support::postgres::Postgres::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&server.url).await.expect("connect");
        let load = Instant::now();
        for statement in [
            "SET max_parallel_workers_per_gather = 0".to_string(),
            "CREATE UNLOGGED TABLE produced (key text NOT NULL)".to_string(),
            "CREATE UNLOGGED TABLE consumed (key text NOT NULL)".to_string(),
            format!("INSERT INTO produced SELECT 'order-' || lpad(i::text, 9, '0') FROM generate_series(0, {}) i", n - 1),
            format!(
                "INSERT INTO consumed SELECT 'order-' || lpad(i::text, 9, '0') FROM generate_series(0, {}) i, \
                 LATERAL generate_series(1, CASE WHEN i % 1000 = 3 THEN 2 WHEN i % 1000 = 7 THEN 0 ELSE 1 END)",
                n - 1
            ),
            "ANALYZE produced".to_string(),
            "ANALYZE consumed".to_string(),
        ] {
            sqlx::query(&statement).execute(&pool).await.expect("load");
        }
        let loaded = load.elapsed().as_secs_f64();
        let query = "SET max_parallel_workers_per_gather = 0; \
            SELECT count(*) FILTER (WHERE p.n > COALESCE(c.n, 0)) AS missing, \
                   count(*) FILTER (WHERE COALESCE(c.n, 0) > p.n) AS duplicated \
            FROM (SELECT key, count(*) AS n FROM produced GROUP BY key) p \
            LEFT JOIN (SELECT key, count(*) AS n FROM consumed GROUP BY key) c USING (key)";
        let mut conn = pool.acquire().await.expect("conn");
        sqlx::query("SET max_parallel_workers_per_gather = 0").execute(&mut *conn).await.expect("set");
        let started = Instant::now();
        let row: (i64, i64) = sqlx::query_as(&query["SET max_parallel_workers_per_gather = 0; ".len()..]).fetch_one(&mut *conn).await.expect("query");
        let pg = started.elapsed().as_secs_f64();
        let orphans: (i64,) = sqlx::query_as("SELECT count(*) FROM consumed c WHERE NOT EXISTS (SELECT 1 FROM produced p WHERE p.key = c.key)")
            .fetch_one(&mut *conn)
            .await
            .expect("anti-join");
        let pg_total = started.elapsed().as_secs_f64();
        assert_eq!((row.0 as u64, row.1 as u64, orphans.0), (n / 1_000, n / 1_000, 0));
        println!(
            "postgresql: same data (loaded in {loaded:.1} s): group-by join {pg:.2} s, + orphan anti-join {pg_total:.2} s (one core); \
             mqaudit is {:.1}x faster than the group-by alone, {:.1}x with the anti-join",
            pg / ours,
            pg_total / ours
        );
    });
    duckdb(n, ours, one_thread_settled, all_cores, threads);
}

/// Reconcile what a window of `n` keys was reduced to, as the runner does,
/// and check it found the constructed 0.1 % missing and duplicated.
fn reconcile_reduced(reduced: &Reduced, n: u64) -> Outcome {
    let mut reconciler = Reconciler::new(&reduced.produced);
    for c in &reduced.consumed {
        reconciler.consume(c);
    }
    let result = reconciler.finish();
    assert_eq!(result.missing.len() as u64, n / 1_000);
    assert_eq!(result.duplicated.len() as u64, n / 1_000);
    assert_eq!(reduced.settled + reduced.produced.len() as u64, n);
    result
}

/// The window held whole, as the runner holds one within its budget,
/// settled in shares on `threads` threads, then the rest reconciled on one
/// (`src/audit/partition.rs`): the seconds it took.
fn held_window(
    batch: Vec<Produced>,
    consumed: Vec<Consumed>,
    threads: usize,
    streamed: f64,
) -> f64 {
    let n = batch.len() as u64;
    let started = Instant::now();
    let reduced = settle(batch, consumed, Split::ByKey, threads);
    let result = reconcile_reduced(&reduced, n);
    let took = started.elapsed().as_secs_f64();
    println!(
        "reconcile, window held: settled on {threads} thread(s) ({} settled, {} kept), the rest reconciled: \
         {} missing, {} duplicated in {took:.2} s ({:.2}x the streamed one-thread time); peak RSS {} MiB",
        reduced.settled,
        reduced.produced.len(),
        result.missing.len(),
        result.duplicated.len(),
        took / streamed,
        peak_rss_mib()
    );
    took
}

/// One window of `n` keys (0.1 % missing, 0.1 % duplicated) streamed
/// through a spill within `budget_mib`, reduced, then the reduced window
/// reconciled in memory as the runner does.
fn spill_window(n: u64, budget_mib: u64) {
    let dir = std::env::temp_dir();
    let started = Instant::now();
    let mut spill = WindowSpill::new(budget_mib << 20, &dir);
    for i in 0..n {
        spill
            .produced(Produced {
                msg_id: None,
                keys: vec![format!("order-{i:09}")],
                time_ms: 1_700_000_000_000 + i as i64,
                offset_msg_id: None,
                tags: None,
                properties: None,
                status: SendStatus::Unknown,
                kind: MessageKind::Normal,
                transaction: None,
                batch: false,
            })
            .expect("spill produced");
    }
    for i in 0..n {
        let r = i % 1_000;
        if r == 7 {
            continue;
        }
        for _ in 0..if r == 3 { 2 } else { 1 } {
            spill
                .consumed(Consumed {
                    msg_id: None,
                    keys: vec![format!("order-{i:09}")],
                    time_ms: 0,
                })
                .expect("spill consumed");
        }
    }
    let read = started.elapsed().as_secs_f64();
    let reduced = spill.finish().expect("reduce");
    let result = reconcile_reduced(&reduced, n);
    let total = started.elapsed().as_secs_f64();
    assert!(!reduced.over_budget);
    println!(
        "spill: window of {n} keys, budget {budget_mib} MiB: {} partitions, {} missing, {} duplicated, {} settled; \
         {total:.2} s ({:.2} s per million; {read:.2} s taking the records in), peak RSS {} MiB",
        reduced.partitions,
        result.missing.len(),
        result.duplicated.len(),
        reduced.settled,
        total / (n as f64 / 1e6),
        peak_rss_mib()
    );
}

/// The pinned DuckDB the comparison runs on.
const DUCKDB: &str = "duckdb==2.0.1";

/// The same data and queries in DuckDB, on every core.
fn duckdb(n: u64, ours: f64, one_thread_settled: f64, all_cores: f64, threads: usize) {
    use std::process::Command;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/bench-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 -m venv (Debian: python3-venv)");
        assert!(made.success(), "python3 -m venv failed");
    }
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", DUCKDB])
        .status()
        .expect("pip");
    assert!(pip.success(), "pip install {DUCKDB} failed");
    let out = Command::new(&python)
        .arg(root.join("benches/duckdb/reconcile.py"))
        .arg(n.to_string())
        .output()
        .expect("run the DuckDB leg");
    assert!(
        out.status.success(),
        "DuckDB leg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("DuckDB leg JSON");
    let count = |k: &str| r[k].as_u64().expect(k);
    assert_eq!(
        (count("missing"), count("duplicated"), count("orphans")),
        (n / 1_000, n / 1_000, 0),
        "DuckDB agrees"
    );
    let (group_by, total) = (
        r["group_by"].as_f64().expect("group_by"),
        r["total"].as_f64().expect("total"),
    );
    println!(
        "duckdb {}: same data (loaded in {:.1} s): group-by join {group_by:.2} s, + orphan anti-join {total:.2} s ({} threads); \
         mqaudit takes {:.2}x DuckDB's group-by time, {:.2}x with the anti-join streamed on one thread; \
         {:.2}x and {:.2}x held and settled on one thread; {:.2}x and {:.2}x on {threads} threads",
        r["version"].as_str().unwrap_or("?"),
        r["loaded"].as_f64().unwrap_or(0.0),
        count("threads"),
        ours / group_by,
        ours / total,
        one_thread_settled / group_by,
        one_thread_settled / total,
        all_cores / group_by,
        all_cores / total
    );
}
