//! Benchmark: the trace ingest's store writes alone, no broker.
//!
//! `Store::ingest_trace_pulls` into a fresh SQLite store (WAL,
//! `synchronous=FULL`), `--rounds R` rounds (default 200) as a run under a
//! 5.3.3 client's load makes them: two trace queues' pulls a round, `--rows
//! N` rows a round (default 420: half `Pub`, half whole consumptions) and
//! one split consumption per ten rows (its `SubBefore` alone in this round;
//! its `SubAfter` in the same round for half of them, the next round for
//! the others). `--repeat K` times (default 5), each on a fresh store; it
//! prints the median and the rows per second, for docs/benchmarks.md.
//!
//! `cargo bench --bench trace_store`

/// The same allocator as the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use mqaudit::audit::store::{Cursor, HalfKind, Store, SubHalf, TracePull, TraceRow, TraceSide};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

/// Trace row `n` of the run: a `Pub` or a whole consumption.
fn row(n: usize) -> TraceRow {
    let sub = n % 2 == 1;
    TraceRow {
        side: if sub { TraceSide::Sub } else { TraceSide::Pub },
        msg_id: format!("7F00000100002A9F0000000000{:012X}", n / 2),
        keys: format!("load-1-{}", n / 2),
        time_ms: 1_796_684_040_000 + i64::try_from(n).expect("small"),
        offset_msg_id: (!sub).then(|| format!("7F00000100002A9F00000000{n:010X}")),
        store_host: (!sub).then(|| "127.0.0.1:10911".to_string()),
        tags: None,
        success: true,
        msg_type: 0,
        reconsume: 0,
        tx_state: None,
        batch: false,
    }
}

/// Half of split consumption `n`.
fn half(kind: HalfKind, n: usize) -> SubHalf {
    SubHalf {
        kind,
        request_id: format!("{:032X}", n / 4),
        msg_id: format!("7F00000100002A9F0000000001{n:012X}"),
        time_ms: 1_796_684_040_000 + i64::try_from(n).expect("small"),
        retry_times: 0,
        keys: format!("split-{n}"),
        success: true,
    }
}

/// One run of `rounds` rounds into a fresh store; its time.
async fn run(rounds: usize, rows_per_round: usize, repetition: usize) -> Duration {
    let dir = std::env::temp_dir().join(format!(
        "mqaudit-trace-store-{}-{repetition}",
        std::process::id()
    ));
    let store = Store::open(&dir).await.expect("open");
    let splits = rows_per_round / 10;
    let started = Instant::now();
    for round in 0..rounds {
        let rows: Vec<TraceRow> = (0..rows_per_round)
            .map(|i| row(round * rows_per_round + i))
            .collect();
        let split = |i: usize| round * splits + i;
        let mut halves: Vec<SubHalf> = (0..splits)
            .map(|i| half(HalfKind::Before, split(i)))
            .collect();
        // Half the pairs meet in this round, the others' SubAfter comes in
        // the next.
        halves.extend(
            (0..splits)
                .step_by(2)
                .map(|i| half(HalfKind::After, split(i))),
        );
        if round > 0 {
            halves.extend(
                (1..splits)
                    .step_by(2)
                    .map(|i| half(HalfKind::After, split(i) - splits)),
            );
        }
        let (rows_a, rows_b) = rows.split_at(rows.len() / 2);
        let (halves_a, halves_b) = halves.split_at(halves.len() / 2);
        let cursor = |queue_id| Cursor {
            flow: "bench",
            source: "trace",
            broker: "broker-a",
            queue_id,
        };
        let offset = i64::try_from(round + 1).expect("small");
        store
            .ingest_trace_pulls(&[
                TracePull {
                    cursor: cursor(0),
                    rows: rows_a,
                    halves: halves_a,
                    next_offset: offset,
                    caught_up_ms: None,
                },
                TracePull {
                    cursor: cursor(1),
                    rows: rows_b,
                    halves: halves_b,
                    next_offset: offset,
                    caught_up_ms: None,
                },
            ])
            .await
            .expect("ingest");
    }
    let took = started.elapsed();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = arg(&args, "--rounds", 200);
    let rows = arg(&args, "--rows", 420);
    let repeat = arg(&args, "--repeat", 5).max(1);
    let mut times = Vec::with_capacity(repeat);
    for repetition in 0..repeat {
        times.push(run(rounds, rows, repetition).await.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let total = rounds * rows;
    println!(
        "trace store: {rounds} rounds of {rows} rows and {} split halves: median {median:.3} s of {repeat} ({:.0} rows/s, {:.1} us a row); all: {times:.3?}",
        rows / 10 + rows / 20,
        total as f64 / median,
        median * 1e6 / total as f64
    );
}
