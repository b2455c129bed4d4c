//! Flow ownership among replicas that share a PostgreSQL store: each flow
//! is audited by the one replica holding its lease, a row with an expiry in
//! the database's own clock (no clock of ours is compared with another's).
//!
//! Every replica keeps a heartbeat row and, every third of a lease period,
//! renews what it holds and claims free or expired flows up to its fair
//! share (flows over live replicas, rounded up); above its share it lets go
//! of flows it is not auditing, so a replica that joins gets about half.
//! A replica believes it owns a flow only until the lease it last renewed
//! runs out by its own monotonic clock, measured from before the renewal
//! was sent: the database's expiry is never earlier, so two replicas never
//! both believe. A save after the lease moved is refused by the store's
//! fence (the lease row, checked in the save's own transaction), so a
//! replica paused past its lease cannot write over its successor.
//!
//! With the SQLite store there is one process: it owns every flow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::store::{Store, StoreError};

/// The database's clock, in epoch milliseconds (PostgreSQL).
pub(super) const DB_NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The tables leases need, created with the PostgreSQL store's schema (in
/// its types, as the rest of the schema).
pub(super) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS replicas (name TEXT PRIMARY KEY, seen_ms INTEGER NOT NULL)",
    // `taken`: how many times the flow changed hands.
    "CREATE TABLE IF NOT EXISTS leases (
        flow TEXT PRIMARY KEY, owner TEXT NOT NULL,
        expires_ms INTEGER NOT NULL, taken INTEGER NOT NULL DEFAULT 1)",
];

/// This replica's view of which flows it owns.
#[derive(Debug, Clone)]
pub struct Ownership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Every flow ours when the store is not shared.
    shared: bool,
    replica: String,
    lease: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Flow → until when (our monotonic clock) we may act as its owner.
    held: BTreeMap<String, Instant>,
    /// Flows with an audit in flight: never released while running.
    busy: BTreeSet<String>,
}

impl Ownership {
    /// Ownership for `replica` over `store`: leases when the store is
    /// shared, every flow otherwise.
    pub fn new(store: &Store, replica: &str, lease: Duration) -> Ownership {
        Ownership {
            inner: Arc::new(Inner {
                shared: store.is_shared(),
                replica: replica.to_string(),
                lease,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this replica may audit `flow` now.
    pub fn owns(&self, flow: &str) -> bool {
        !self.inner.shared
            || self
                .state()
                .held
                .get(flow)
                .is_some_and(|until| Instant::now() < *until)
    }

    /// Mark `flow`'s audit as running (returns false, marking nothing, when
    /// this replica does not own it); [`Ownership::done`] ends it.
    pub fn start(&self, flow: &str) -> bool {
        if !self.owns(flow) {
            return false;
        }
        self.state().busy.insert(flow.to_string());
        true
    }

    /// `flow`'s audit ended.
    pub fn done(&self, flow: &str) {
        self.state().busy.remove(flow);
    }

    /// One round against the shared store: heartbeat, renew, release above
    /// the fair share, claim up to it. Returns the flows held after it.
    ///
    /// # Errors
    /// Store failures; ownership then lapses by itself at its deadline.
    pub async fn refresh(
        &self,
        store: &Store,
        flows: &[String],
    ) -> Result<Vec<String>, StoreError> {
        if !self.inner.shared {
            return Ok(flows.to_vec());
        }
        let sent = Instant::now();
        let lease_ms = i64::try_from(self.inner.lease.as_millis()).unwrap_or(i64::MAX);
        let replica = self.inner.replica.as_str();
        let pool = store.pool();
        sqlx::query(&format!(
            "INSERT INTO replicas (name, seen_ms) VALUES ($1, {DB_NOW_MS})
             ON CONFLICT (name) DO UPDATE SET seen_ms = excluded.seen_ms"
        ))
        .bind(replica)
        .execute(pool)
        .await
        .map_err(|e| StoreError::database("lease heartbeat", e))?;
        let live: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM replicas WHERE seen_ms > {DB_NOW_MS} - $1"
        ))
        .bind(lease_ms)
        .fetch_one(pool)
        .await
        .map_err(|e| StoreError::database("lease replicas", e))?
        .get(0);
        let share = fair_share(flows.len(), usize::try_from(live.max(1)).unwrap_or(1));
        let mut held: Vec<String> = sqlx::query(&format!(
            "UPDATE leases SET expires_ms = {DB_NOW_MS} + $2 WHERE owner = $1 RETURNING flow"
        ))
        .bind(replica)
        .bind(lease_ms)
        .fetch_all(pool)
        .await
        .map_err(|e| StoreError::database("lease renew", e))?
        .iter()
        .map(|r| r.get::<String, _>(0))
        .filter(|f| flows.contains(f))
        .collect();
        held.sort();
        // Above the share: let go of idle flows, last in our order first.
        let busy = self.state().busy.clone();
        let mut released = Vec::new();
        while held.len() > share {
            let Some(pos) = held.iter().rposition(|f| !busy.contains(f)) else {
                break;
            };
            let flow = held.remove(pos);
            sqlx::query("DELETE FROM leases WHERE flow = $1 AND owner = $2")
                .bind(&flow)
                .bind(replica)
                .execute(pool)
                .await
                .map_err(|e| StoreError::database("lease release", e))?;
            released.push(flow);
        }
        // Below it: claim free or expired flows, in an order of our own so
        // replicas starting together do not all reach for the same flow.
        let mut candidates: Vec<&String> = flows.iter().filter(|f| !held.contains(f)).collect();
        candidates.sort_by_key(|f| spread(replica, f));
        for flow in candidates {
            if held.len() >= share {
                break;
            }
            let taken = sqlx::query(&format!(
                "INSERT INTO leases (flow, owner, expires_ms) VALUES ($1, $2, {DB_NOW_MS} + $3)
                 ON CONFLICT (flow) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms,
                 taken = leases.taken + 1
                 WHERE leases.expires_ms < {DB_NOW_MS} OR leases.owner = excluded.owner
                 RETURNING flow"
            ))
            .bind(flow)
            .bind(replica)
            .bind(lease_ms)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::database("lease claim", e))?;
            if taken.is_some() {
                tracing::info!(message = "Took the flow's lease.", flow = %flow, replica);
                held.push(flow.clone());
            }
        }
        for flow in &released {
            tracing::info!(message = "Released the flow's lease to balance replicas.", flow = %flow, replica);
        }
        let until = sent + self.inner.lease.mul_f64(0.9);
        let mut state = self.state();
        state.held = held.iter().map(|f| (f.clone(), until)).collect();
        Ok(held)
    }

    /// Keep leases fresh until `shutdown`, calling `after` after each round
    /// (to republish the audit series every replica reports alike). At
    /// shutdown the leases are handed back so another replica need not
    /// wait out their expiry.
    pub async fn keep<F, Fut>(
        self,
        store: Store,
        flows: Vec<String>,
        shutdown: CancellationToken,
        mut after: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        if !self.inner.shared {
            return;
        }
        let every = self.inner.lease / 3;
        loop {
            if let Err(error) = self.refresh(&store, &flows).await {
                tracing::warn!(message = "Cannot renew flow leases; they lapse unless renewed.", %error);
            }
            after().await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        self.state().held.clear();
        if let Err(error) = sqlx::query("DELETE FROM leases WHERE owner = $1")
            .bind(&self.inner.replica)
            .execute(store.pool())
            .await
        {
            tracing::warn!(message = "Cannot hand back flow leases at shutdown.", %error);
        }
    }
}

/// Flows each of `replicas` live replicas should hold, rounded up.
pub fn fair_share(flows: usize, replicas: usize) -> usize {
    flows.div_ceil(replicas.max(1))
}

/// A replica's own order of flows (FNV-1a of both names).
fn spread(replica: &str, flow: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in replica.bytes().chain([0]).chain(flow.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Who owns which flow now, by the shared store (`mqaudit_audit_flow_owner`);
/// with the SQLite store, this replica owns them all.
///
/// # Errors
/// Store failures.
pub async fn owners(
    store: &Store,
    replica: &str,
    flows: &[String],
) -> Result<BTreeMap<String, String>, StoreError> {
    if !store.is_shared() {
        return Ok(flows
            .iter()
            .map(|f| (f.clone(), replica.to_string()))
            .collect());
    }
    let rows = sqlx::query(&format!(
        "SELECT flow, owner FROM leases WHERE expires_ms > {DB_NOW_MS}"
    ))
    .fetch_all(store.pool())
    .await
    .map_err(|e| StoreError::database("read leases", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .filter(|(f, _)| flows.contains(f))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fair_share_rounds_up_so_every_flow_has_a_taker() {
        assert_eq!(fair_share(10, 2), 5);
        assert_eq!(fair_share(11, 2), 6);
        assert_eq!(fair_share(1, 3), 1);
        assert_eq!(fair_share(0, 2), 0);
        assert_eq!(fair_share(4, 0), 4);
    }

    #[test]
    fn replicas_order_flows_differently() {
        let flows: Vec<String> = (0..10).map(|i| format!("flow-{i}")).collect();
        let order = |replica: &str| {
            let mut f = flows.clone();
            f.sort_by_key(|x| spread(replica, x));
            f
        };
        assert_ne!(order("a"), order("b"));
        assert_eq!(order("a"), order("a"));
    }
}
