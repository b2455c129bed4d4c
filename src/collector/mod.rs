//! The collection engine: one loop per cluster that polls the name servers
//! and brokers through a [`Cluster`] handle and publishes a fresh
//! [`Exposition`] each cycle. Collectors never open sockets.
//!
//! A cycle runs the `COLLECTORS` in order, concurrently inside each under
//! one concurrency limit and one deadline; each reads what the ones before
//! it gathered (`Facts`) and writes its own families:
//!
//! | collector | file | calls |
//! |---|---|---|
//! | `namesrv` | `namesrv.rs` | 106 of every configured name server |
//! | `discovery` | `discovery.rs` | (the name servers' answer); per broker 26; per master 21, 201 — cached for `discovery_interval` |
//! | `broker` | `brokers.rs` | per broker 28; per master 907 |
//! | `topic` | `topics.rs` | per master 317 (all groups' consume stats); 202 only for uncovered topics, DLQs and a rotating min-offset slice |
//! | `consumer` | `consumers.rs` | 203 once per group; at most `lag_pulls_per_cycle` one-message pulls (11) |
//! | `schedule` | `schedule.rs` | (runtime info); a one-message pull (11) per delay level whose next message is undated |
//! | `transaction` | `transactions.rs` | per master 202 and 14 of the half and op topics, 202 of the discard topic; a pull for the oldest half message and for new discarded ones |
//!
//! See `docs/collection.md` for the call-count formula. A failed call is
//! data: the broker's `rocketmq_broker_up` is 0 or the collector's
//! `mqaudit_collector_success` is 0 with errors counted by kind; the cycle
//! and the scrape always complete.
//!
//! To add a collector: a file here with a unit struct implementing
//! `Collector`, its facts (if later collectors need them) in `Facts`, and
//! a row in `COLLECTORS`.

mod brokers;
mod consumers;
mod controller;
mod discovery;
mod health;
mod namesrv;
mod schedule;
mod state;
mod topics;
mod transactions;

pub use state::State;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::{
    Admin, Cluster, ClusterInfo, ConsumeStats, Error, HaStatus, MessageQueue, RuntimeInfo,
};
use crate::clock::Clock;
use crate::config::CollectConfig;
use crate::metrics::{Exposition, SnapshotStore};

use discovery::{Discovered, Node};
use health::Health;

/// What [`Collector::collect`] returns.
type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One subsystem's collector: gathers its facts within the cycle's budget
/// (recording failures in the cycle) and writes its families.
trait Collector: Sync {
    /// The `collector` label value.
    fn name(&self) -> &'static str;

    /// False for collectors that run before any broker is known.
    fn needs_brokers(&self) -> bool {
        true
    }

    /// Gather and render.
    fn collect<'a>(&'a self, cycle: &'a mut Cycle<'_>, out: &'a mut Exposition) -> BoxFuture<'a>;
}

/// Every collector, in the order a cycle runs them.
const COLLECTORS: [&dyn Collector; 8] = [
    &namesrv::NameServers,
    &discovery::Discovery,
    &brokers::Brokers,
    &topics::Topics,
    &consumers::Consumers,
    &schedule::Schedule,
    &transactions::Transactions,
    &controller::Controllers,
];

/// Counts clusters that finished a first full cycle; `/-/ready` needs all.
#[derive(Debug)]
pub struct Readiness {
    expected: usize,
    done: AtomicUsize,
}

impl Readiness {
    /// Ready once `expected` clusters have each completed a cycle.
    pub fn new(expected: usize) -> Readiness {
        Readiness {
            expected,
            done: AtomicUsize::new(0),
        }
    }
    /// True after every cluster's first full cycle.
    pub fn is_ready(&self) -> bool {
        self.done.load(Ordering::Acquire) >= self.expected
    }
    fn mark(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// What collectors gathered this cycle, for the collectors after them.
#[derive(Debug, Default)]
struct Facts {
    /// The first name server's answer (namesrv).
    cluster_info: Option<ClusterInfo>,
    /// The last name server's error, when none answered (namesrv).
    name_servers_failed: Option<Error>,
    /// Runtime info per broker address (brokers).
    runtime: BTreeMap<String, RuntimeInfo>,
    /// HA status per master address (brokers).
    ha: BTreeMap<String, HaStatus>,
    /// All groups' consume stats per master address (topics).
    consume: BTreeMap<String, Vec<(String, ConsumeStats)>>,
    /// Max offset of every queue read (topics).
    queues: BTreeMap<MessageQueue, i64>,
    /// Messages held in `%DLQ%<group>`, per group (topics).
    dlq_depth: BTreeMap<String, i64>,
}

/// Everything a collector may use during one cycle.
struct Cycle<'c> {
    cluster: &'c Cluster,
    collect: &'c CollectConfig,
    /// Cycles run so far, this one included (rotations turn with it).
    number: u64,
    now_ms: i64,
    /// Every call gives up here.
    deadline: Instant,
    limiter: Arc<Semaphore>,
    /// Serialises calls whose bodies are large (all groups' consume stats),
    /// so their parse trees never coexist: peak memory stays one body.
    heavy: Arc<Semaphore>,
    discovered: &'c mut Discovered,
    state: &'c mut State,
    health: &'c mut Health,
    facts: Facts,
}

impl Cycle<'_> {
    /// The admin client, to move into concurrent calls.
    fn admin(&self) -> Admin {
        self.cluster.admin().clone()
    }

    /// A call of `collector` failed: counted, and logged with its context.
    fn failed(&mut self, collector: &'static str, call: &str, target: &str, error: &Error) {
        self.health.failed(collector, error);
        tracing::debug!(message = "Admin call failed.", cluster = %self.cluster.name(), collector, call, target, %error);
    }

    /// Broker role and flush type, from its config, else its runtime info.
    fn role_and_flush(&self, node: &Node) -> (Option<&str>, Option<&str>) {
        let config = self.discovered.config.get(&node.addr);
        let role = config
            .and_then(|c| c.get("brokerRole"))
            .or_else(|| self.facts.runtime.get(&node.addr)?.get("brokerRole"))
            .filter(|r| !r.is_empty());
        let flush = config
            .and_then(|c| c.get("flushDiskType"))
            .filter(|f| !f.is_empty());
        (role, flush)
    }

    /// Run futures under the cluster's concurrency limit; results in order.
    async fn join<F, T>(&self, futures: impl Iterator<Item = F>) -> Vec<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        crate::concurrent::join_limited(&self.limiter, futures).await
    }
}

/// One cluster's collector.
pub struct ClusterCollector {
    cluster: Cluster,
    collect: CollectConfig,
    limiter: Arc<Semaphore>,
    heavy: Arc<Semaphore>,
    discovered: Discovered,
    state: State,
    health: Health,
    cycle: u64,
}

impl ClusterCollector {
    /// A collector for one cluster; its admin should report requests to
    /// the self metrics.
    pub fn new(cluster: Cluster, collect: CollectConfig) -> ClusterCollector {
        ClusterCollector {
            limiter: Arc::new(Semaphore::new(collect.concurrency)),
            heavy: Arc::new(Semaphore::new(1)),
            cluster,
            collect,
            discovered: Discovered::default(),
            state: State::default(),
            health: Health::default(),
            cycle: 0,
        }
    }

    /// Cluster name.
    pub fn name(&self) -> &str {
        self.cluster.name()
    }

    /// Collect every interval until `shutdown` is cancelled, publishing each
    /// cycle; a cycle in flight at shutdown is abandoned, not finished.
    pub async fn run(
        mut self,
        clock: Clock,
        store: Arc<SnapshotStore>,
        ready: Arc<Readiness>,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(self.collect.interval);
        // A slow cycle delays the next one instead of bursting to catch up.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let exposition = tokio::select! {
                exposition = self.run_cycle(clock.now_ms()) => exposition,
                _ = shutdown.cancelled() => return,
            };
            store.publish(self.cluster.name(), exposition);
            if first {
                ready.mark();
                first = false;
            }
        }
    }

    /// One full cycle at wall-clock time `now_ms`: every collector, then
    /// the collectors' own health.
    pub async fn run_cycle(&mut self, now_ms: i64) -> Exposition {
        let started = Instant::now();
        self.cycle += 1;
        self.health.start_cycle();
        let mut out = Exposition::new();
        let mut cycle = Cycle {
            cluster: &self.cluster,
            collect: &self.collect,
            number: self.cycle,
            now_ms,
            deadline: started + self.collect.budget,
            limiter: self.limiter.clone(),
            heavy: self.heavy.clone(),
            discovered: &mut self.discovered,
            state: &mut self.state,
            health: &mut self.health,
            facts: Facts::default(),
        };
        for collector in COLLECTORS {
            // Without brokers the others have nothing to ask.
            if collector.needs_brokers() && cycle.discovered.is_empty() {
                cycle.health.skipped(collector.name());
                continue;
            }
            let collector_started = Instant::now();
            collector.collect(&mut cycle, &mut out).await;
            cycle
                .health
                .took(collector.name(), collector_started.elapsed().as_secs_f64());
        }
        let names = COLLECTORS.map(|c| c.name());
        self.health
            .render(self.cluster.name(), &names, now_ms, &mut out);
        tracing::debug!(
            message = "Collection cycle done.",
            cluster = %self.cluster.name(),
            cycle = self.cycle,
            seconds = started.elapsed().as_secs_f64(),
            failed = ?self.health.failures(),
        );
        out
    }
}

/// Run an admin call, giving up at the cycle deadline.
async fn bounded<T>(
    deadline: Instant,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(result) => result,
        Err(_) => Err(Error::deadline("the collection cycle's budget")),
    }
}

/// A hash stable across runs (FNV-1a), to spread min-offset refreshes.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
