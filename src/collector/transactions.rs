//! The `transaction` collector: transaction half messages a master holds,
//! and the ones it gave up on.
//!
//! * Pending: half messages in `RMQ_SYS_TRANS_HALF_TOPIC` beyond the
//!   broker's check service (`CID_RMQ_SYS_TRANS`'s committed offset),
//!   minus resolutions in `RMQ_SYS_TRANS_OP_HALF_TOPIC` it has not yet
//!   applied. Approximate: the check service re-appends a half message it
//!   checked and could not resolve, and applies resolutions in batches.
//! * Oldest pending: the store time of the half message at the check
//!   service's offset (a cached one-message pull).
//! * Discarded: a half message still unresolved after
//!   `transactionCheckMax` checks is moved to `TRANS_CHECK_MAX_TIME_TOPIC`
//!   and never delivered — each is a lost commit. Read once each (the
//!   original topic is its `REAL_TOPIC` property) and counted per topic,
//!   from when the exporter first saw the broker.

use super::discovery::Node;
use super::{BoxFuture, Collector, Cycle, bounded};
use crate::admin::{Admin, Error, MessageQueue, PullStatus};
use crate::metrics::Exposition;

/// Where half messages wait.
pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Where their resolutions (commit, rollback) are written.
pub const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Where half messages given up on go.
pub const DISCARD_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// The broker's own check service group.
const CHECK_GROUP: &str = "CID_RMQ_SYS_TRANS";
/// Group named in the side-effect-free pulls (exists on every broker).
const PULL_GROUP: &str = "TOOLS_CONSUMER";
/// Discarded messages read per broker per cycle.
const DISCARDS_PER_CYCLE: i32 = 32;

/// The transaction collector.
pub(super) struct Transactions;

/// A master's transaction queues, as read this cycle.
#[derive(Debug, Default)]
struct Queues {
    /// (max offset, check service offset) of the half topic.
    half: Option<(i64, Option<i64>)>,
    /// (max offset, check service offset) of the op topic.
    op: Option<(i64, Option<i64>)>,
    /// (min, max) offset of the discard topic.
    discard: Option<(i64, i64)>,
}

impl Queues {
    /// Half messages not yet resolved, approximately.
    fn pending(&self) -> Option<i64> {
        let (half_max, half_done) = self.half?;
        let unchecked = half_max - half_done.unwrap_or(0).min(half_max);
        let unapplied = self
            .op
            .map_or(0, |(max, done)| max - done.unwrap_or(0).min(max));
        Some((unchecked - unapplied).max(0))
    }
}

impl Collector for Transactions {
    fn name(&self) -> &'static str {
        "transaction"
    }

    fn collect<'a>(&'a self, cycle: &'a mut Cycle<'_>, out: &'a mut Exposition) -> BoxFuture<'a> {
        Box::pin(async move {
            let masters = cycle.discovered.masters();
            let deadline = cycle.deadline;
            let answers = cycle
                .join(masters.iter().map(|m| {
                    let (admin, addr) = (cycle.admin(), m.addr.clone());
                    async move { bounded(deadline, read_queues(&admin, &addr)).await }
                }))
                .await;
            for (master, answer) in masters.iter().zip(answers) {
                match answer {
                    Ok(queues) => {
                        render_pending(cycle, master, &queues, out).await;
                        count_discards(cycle, master, queues.discard).await;
                    }
                    Err(e) => cycle.failed("transaction", "transaction queues", &master.addr, &e),
                }
            }
            render_discards(cycle, out);
        })
    }
}

/// Max offsets and the check service's offsets; a topic the broker never
/// created (no transaction yet) is `None`.
async fn read_queues(admin: &Admin, addr: &str) -> Result<Queues, Error> {
    let mut queues = Queues::default();
    for (topic, slot) in [(HALF_TOPIC, &mut queues.half), (OP_TOPIC, &mut queues.op)] {
        let Some((_, max)) = extent(admin, addr, topic).await? else {
            continue;
        };
        let done = admin.consumer_offset(addr, CHECK_GROUP, topic, 0).await?;
        *slot = Some((max, done));
    }
    queues.discard = extent(admin, addr, DISCARD_TOPIC).await?;
    Ok(queues)
}

/// (min, max) offset of a one-queue system topic, `None` when it does not exist.
async fn extent(admin: &Admin, addr: &str, topic: &str) -> Result<Option<(i64, i64)>, Error> {
    match admin.topic_stats(addr, topic).await {
        Ok(table) => Ok(table
            .iter()
            .find(|(q, _)| q.queue_id == 0)
            .map(|(_, o)| (o.min_offset, o.max_offset))),
        Err(e) if e.is_topic_missing() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn render_pending(
    cycle: &mut Cycle<'_>,
    master: &Node,
    queues: &Queues,
    out: &mut Exposition,
) {
    let Some(pending) = queues.pending() else {
        return;
    };
    let cluster = cycle.cluster.name().to_string();
    let labels = [
        ("rocketmq_cluster", cluster.as_str()),
        ("broker", master.broker.as_str()),
    ];
    out.sample(
        "rocketmq_transaction_half_messages",
        &labels,
        pending as f64,
    );
    let Some((_, Some(head))) = queues.half else {
        return;
    };
    if pending == 0 {
        return;
    }
    let queue = MessageQueue {
        topic: HALF_TOPIC.to_string(),
        broker_name: master.broker.clone(),
        queue_id: 0,
    };
    cycle.state.forget_pulled_below(&queue, head);
    if cycle.state.store_time(&queue, head).is_none() {
        let pull = bounded(
            cycle.deadline,
            cycle
                .admin()
                .pull(&master.addr, PULL_GROUP, &queue, head, 1),
        )
        .await;
        match pull {
            Ok(pull) if pull.status == PullStatus::Found => {
                if let Some(m) = pull.messages.first() {
                    cycle
                        .state
                        .remember_store_time(&queue, head, m.store_timestamp);
                }
            }
            Ok(_) => {}
            Err(e) => cycle.failed("transaction", "pull", &master.addr, &e),
        }
    }
    if let Some(stored) = cycle.state.store_time(&queue, head) {
        out.sample(
            "rocketmq_transaction_half_oldest_age_seconds",
            &labels,
            (cycle.now_ms - stored).max(0) as f64 / 1000.0,
        );
    }
}

/// Read discarded half messages not read yet and count them per topic.
async fn count_discards(cycle: &mut Cycle<'_>, master: &Node, discard: Option<(i64, i64)>) {
    let broker = master.broker.as_str();
    let Some((min, max)) = discard else {
        // No discard topic yet: when it appears, read it from its start.
        cycle.state.discard_cursor_or(broker, 0);
        return;
    };
    // First sight of a broker whose discard topic exists: count from now
    // on (a counter since the exporter started).
    let from = cycle.state.discard_cursor_or(broker, max).max(min);
    if from >= max {
        return;
    }
    let queue = MessageQueue {
        topic: DISCARD_TOPIC.to_string(),
        broker_name: master.broker.clone(),
        queue_id: 0,
    };
    let batch = DISCARDS_PER_CYCLE.min(i32::try_from(max - from).unwrap_or(DISCARDS_PER_CYCLE));
    let pull = bounded(
        cycle.deadline,
        cycle
            .admin()
            .pull(&master.addr, PULL_GROUP, &queue, from, batch),
    )
    .await;
    match pull {
        Ok(pull) => {
            let mut next = pull.next_begin_offset.max(from);
            for m in pull.messages.iter().filter(|m| m.queue_offset >= from) {
                let topic = m.properties.get("REAL_TOPIC").map_or("", String::as_str);
                cycle.state.count_discard(broker, topic);
                next = next.max(m.queue_offset + 1);
            }
            // Deleted by retention, or a gap: move on as the broker says.
            cycle.state.set_discard_cursor(broker, next);
        }
        Err(e) => cycle.failed("transaction", "pull", &master.addr, &e),
    }
}

fn render_discards(cycle: &Cycle<'_>, out: &mut Exposition) {
    for (broker, topic, count) in cycle.state.discards() {
        out.sample(
            "rocketmq_transaction_discarded_messages_total",
            &[
                ("rocketmq_cluster", cycle.cluster.name()),
                ("broker", broker),
                ("topic", topic),
            ],
            count as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_is_unchecked_halves_minus_unapplied_resolutions() {
        let q = |half, op| Queues {
            half,
            op,
            discard: None,
        };
        assert_eq!(q(None, None).pending(), None);
        // Three halves, none checked, one resolution not yet applied.
        assert_eq!(q(Some((3, None)), Some((1, None))).pending(), Some(2));
        // Everything checked and applied.
        assert_eq!(q(Some((7, Some(7))), Some((4, Some(4)))).pending(), Some(0));
        // Resolutions ahead of unchecked halves never make it negative.
        assert_eq!(q(Some((5, Some(4))), Some((9, Some(2)))).pending(), Some(0));
    }
}
