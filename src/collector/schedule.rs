//! The `schedule` collector: messages a master holds for later delivery.
//!
//! * Delay levels (4.x and 5.x): per level, the backlog in
//!   `SCHEDULE_TOPIC_XXXX` (its queue's max offset against runtime
//!   `scheduleMessageOffset_<level>` = `"<delivered up to>,<max offset>"`,
//!   or the queue's start before the level's first delivery), and how long the next message of
//!   the level is past its due time (its store time, from the offset
//!   history or a cached one-message pull, plus the level's delay from
//!   `messageDelayLevel`): 0 while it is not due yet; growing when the
//!   schedule service stalls.
//! * Timer messages (5.x timer wheel): messages in the wheel
//!   (`timerCongestNum`), timer-topic messages not yet enqueued
//!   (`timerOffsetBehind`), and how far dequeueing is behind
//!   (`timerReadBehind`, seconds).

use std::collections::BTreeMap;

use super::discovery::Node;
use super::{BoxFuture, Collector, Cycle, bounded};
use crate::admin::{MessageQueue, PullStatus, RuntimeInfo};
use crate::metrics::Exposition;

/// Where 4.x and 5.x hold delay-level messages (queue = level − 1).
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// Group named in the side-effect-free pulls (exists on every broker).
const PULL_GROUP: &str = "TOOLS_CONSUMER";
/// Java's default `messageDelayLevel`.
const DEFAULT_DELAY_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// The schedule collector.
pub(super) struct Schedule;

/// One level's state on one master.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Level {
    level: u32,
    /// Offset in the level's queue delivered up to (the next to deliver).
    delivered: i64,
    /// The queue's max offset.
    max: i64,
}

impl Collector for Schedule {
    fn name(&self) -> &'static str {
        "schedule"
    }

    fn collect<'a>(&'a self, cycle: &'a mut Cycle<'_>, out: &'a mut Exposition) -> BoxFuture<'a> {
        Box::pin(async move {
            let masters = cycle.discovered.masters();
            let mut levels: BTreeMap<String, Vec<Level>> = BTreeMap::new();
            for master in &masters {
                if let Some(runtime) = cycle.facts.runtime.get(&master.addr) {
                    levels.insert(master.addr.clone(), levels_on(cycle, master, runtime));
                }
            }
            date_heads(cycle, &masters, &levels).await;
            for master in &masters {
                let Some(runtime) = cycle.facts.runtime.get(&master.addr) else {
                    continue;
                };
                let level_list = levels
                    .get(&master.addr)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                render_levels(cycle, master, level_list, out);
                render_timer(cycle, master, runtime, out);
            }
        })
    }
}

/// Every level of a master: its queue's max offset (read by the topic
/// collector) against how far the schedule service delivered. A broker
/// reports `scheduleMessageOffset_<level>` only once it delivered a message
/// of the level; before that nothing was delivered: from the queue's start.
fn levels_on(cycle: &Cycle<'_>, master: &Node, runtime: &RuntimeInfo) -> Vec<Level> {
    let reported: BTreeMap<u32, Level> = levels_of(runtime)
        .into_iter()
        .map(|l| (l.level, l))
        .collect();
    let mut levels: BTreeMap<u32, Level> = BTreeMap::new();
    for (queue, max) in cycle
        .facts
        .queues
        .iter()
        .filter(|(q, _)| q.topic == SCHEDULE_TOPIC && q.broker_name == master.broker)
    {
        let Ok(level) = u32::try_from(queue.queue_id + 1) else {
            continue;
        };
        let delivered = reported.get(&level).map_or_else(
            || cycle.state.min_offset(queue).unwrap_or(0),
            |l| l.delivered,
        );
        levels.insert(
            level,
            Level {
                level,
                delivered,
                max: *max,
            },
        );
    }
    // Levels the broker reports whose queue was not read this cycle.
    for (level, l) in reported {
        levels.entry(level).or_insert(l);
    }
    levels.into_values().collect()
}

/// Every `scheduleMessageOffset_<level>` the broker reports.
fn levels_of(runtime: &RuntimeInfo) -> Vec<Level> {
    let mut levels: Vec<Level> = runtime
        .table
        .iter()
        .filter_map(|(key, value)| {
            let level = key.strip_prefix("scheduleMessageOffset_")?.parse().ok()?;
            let (delivered, max) = value.split_once(',')?;
            Some(Level {
                level,
                delivered: delivered.trim().parse().ok()?,
                max: max.trim().parse().ok()?,
            })
        })
        .collect();
    levels.sort_by_key(|l| l.level);
    levels
}

fn queue_of(master: &Node, level: u32) -> MessageQueue {
    MessageQueue {
        topic: SCHEDULE_TOPIC.to_string(),
        broker_name: master.broker.clone(),
        queue_id: level as i32 - 1,
    }
}

/// Pull the next undelivered message of every level with a backlog whose
/// store time is not known yet (one message each, within the pull budget).
async fn date_heads(
    cycle: &mut Cycle<'_>,
    masters: &[Node],
    levels: &BTreeMap<String, Vec<Level>>,
) {
    let mut wanted: Vec<(String, MessageQueue, i64)> = Vec::new();
    for master in masters {
        for level in levels.get(&master.addr).into_iter().flatten() {
            let queue = queue_of(master, level.level);
            cycle.state.forget_pulled_below(&queue, level.delivered);
            if level.max > level.delivered
                && cycle.state.store_time(&queue, level.delivered).is_none()
            {
                wanted.push((master.addr.clone(), queue, level.delivered));
            }
        }
    }
    wanted.truncate(cycle.collect.lag_pulls_per_cycle);
    let deadline = cycle.deadline;
    let pulls = cycle
        .join(wanted.iter().map(|(addr, queue, offset)| {
            let (admin, addr, queue, offset) =
                (cycle.admin(), addr.clone(), queue.clone(), *offset);
            async move { bounded(deadline, admin.pull(&addr, PULL_GROUP, &queue, offset, 1)).await }
        }))
        .await;
    for ((addr, queue, offset), pull) in wanted.iter().zip(pulls) {
        match pull {
            Ok(pull) if pull.status == PullStatus::Found => {
                if let Some(m) = pull.messages.iter().find(|m| m.queue_offset == *offset) {
                    cycle
                        .state
                        .remember_store_time(queue, *offset, m.store_timestamp);
                }
            }
            Ok(_) => {}
            Err(e) => cycle.failed("schedule", "pull", addr, &e),
        }
    }
}

fn render_levels(cycle: &Cycle<'_>, master: &Node, levels: &[Level], out: &mut Exposition) {
    let delays = delay_levels_ms(
        cycle
            .discovered
            .config
            .get(&master.addr)
            .and_then(|c| c.get("messageDelayLevel"))
            .unwrap_or(DEFAULT_DELAY_LEVELS),
    );
    for level in levels {
        let text = level.level.to_string();
        let labels = [
            ("rocketmq_cluster", cycle.cluster.name()),
            ("broker", master.broker.as_str()),
            ("level", text.as_str()),
        ];
        let backlog = (level.max - level.delivered).max(0);
        out.sample(
            "rocketmq_schedule_backlog_messages",
            &labels,
            backlog as f64,
        );
        let delay = delays.get(level.level as usize - 1).copied();
        let lag_ms = if backlog == 0 {
            Some(0)
        } else {
            let queue = queue_of(master, level.level);
            cycle
                .state
                .store_time(&queue, level.delivered)
                .zip(delay)
                .map(|(stored, delay)| (cycle.now_ms - stored - delay).max(0))
        };
        // Never a guess: no series while the head is undated.
        if let Some(lag_ms) = lag_ms {
            out.sample(
                "rocketmq_schedule_delivery_lag_seconds",
                &labels,
                lag_ms as f64 / 1000.0,
            );
        }
    }
}

fn render_timer(cycle: &Cycle<'_>, master: &Node, runtime: &RuntimeInfo, out: &mut Exposition) {
    let labels = [
        ("rocketmq_cluster", cycle.cluster.name()),
        ("broker", master.broker.as_str()),
    ];
    for (name, key) in [
        ("rocketmq_timer_messages", "timerCongestNum"),
        ("rocketmq_timer_enqueue_lag_messages", "timerOffsetBehind"),
        ("rocketmq_timer_dequeue_lag_seconds", "timerReadBehind"),
    ] {
        if let Ok(Some(v)) = runtime.int(key) {
            out.sample(name, &labels, v.max(0) as f64);
        }
    }
}

/// `messageDelayLevel` (`"1s 5s 10s 30s 1m … 2h"`) in milliseconds per
/// level; a malformed entry ends the list (its level has no due time).
pub fn delay_levels_ms(text: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for entry in text.split_whitespace() {
        let (number, unit) = entry.split_at(entry.len() - 1);
        let scale = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => break,
        };
        match number.parse::<i64>() {
            Ok(n) => out.push(n * scale),
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_levels_parse_with_units() {
        assert_eq!(
            delay_levels_ms("1s 5s 1m 2h 1d"),
            [1_000, 5_000, 60_000, 7_200_000, 86_400_000]
        );
        assert_eq!(delay_levels_ms("1s x 5s"), [1_000]);
        assert_eq!(delay_levels_ms(DEFAULT_DELAY_LEVELS).len(), 18);
    }

    #[test]
    fn levels_come_from_the_runtime_table() {
        let mut runtime = RuntimeInfo::default();
        for (k, v) in [
            ("scheduleMessageOffset_18", "3,5"),
            ("scheduleMessageOffset_3", "4,4"),
            ("scheduleMessageOffset_x", "1,1"),
            ("scheduleMessageOffset_4", "bad"),
            ("putTps", "1.0"),
        ] {
            runtime.table.insert(k.to_string(), v.to_string());
        }
        assert_eq!(
            levels_of(&runtime),
            [
                Level {
                    level: 3,
                    delivered: 4,
                    max: 4
                },
                Level {
                    level: 18,
                    delivered: 3,
                    max: 5
                }
            ]
        );
    }
}
