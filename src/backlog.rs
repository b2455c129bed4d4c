//! A consumer group's backlog, from facts already fetched: what is lag on
//! its topics, what waits in its `%RETRY%` topic, what sits in its `%DLQ%`
//! topic, and when broker-side lag means nothing (broadcast groups keep
//! their offsets on the clients). Shared by `doctor` (a report) and the
//! collector (metrics) so both count the same way. Pure: no I/O.

use crate::admin::{ConsumeStats, MessageQueue, TopicOffset};

/// Prefix of a group's retry topic (`%RETRY%<group>`).
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic (`%DLQ%<group>`).
pub const DLQ_PREFIX: &str = "%DLQ%";

/// `%RETRY%<group>`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// `%DLQ%<group>`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// The group a `%DLQ%<group>` topic belongs to.
pub fn dlq_group(topic: &str) -> Option<&str> {
    topic.strip_prefix(DLQ_PREFIX)
}

/// The group a `%RETRY%`/`%DLQ%` topic belongs to. 5.x POP consumers
/// retry through `%RETRY%<group>+<topic>` (unambiguous) and
/// `%RETRY%<group>_<topic>`: the latter names `<group>` when that group is
/// in `known` and the whole suffix is not, else the whole suffix.
pub fn group_of_system_topic<'t>(
    topic: &'t str,
    known: &std::collections::BTreeSet<String>,
) -> Option<&'t str> {
    if let Some(group) = topic.strip_prefix(DLQ_PREFIX) {
        return Some(group);
    }
    let suffix = topic.strip_prefix(RETRY_PREFIX)?;
    if let Some((group, _)) = suffix.split_once('+') {
        return Some(group);
    }
    if !known.contains(suffix) {
        for (at, _) in suffix.match_indices('_') {
            if known.contains(&suffix[..at]) {
                return Some(&suffix[..at]);
            }
        }
    }
    Some(suffix)
}

/// Messages held in a DLQ (or any topic) from its queues' min and max
/// offsets: what retention has not yet deleted.
pub fn held_messages(queues: &[(MessageQueue, TopicOffset)]) -> i64 {
    queues
        .iter()
        .map(|(_, o)| (o.max_offset - o.min_offset).max(0))
        .sum()
}

/// True when the message model keeps offsets on the broker, so that broker
/// offsets minus committed offsets is the group's lag. Broadcast groups
/// commit on the clients: their broker-side "lag" is meaningless.
pub fn lag_is_meaningful(message_model: Option<&str>) -> bool {
    message_model != Some("BROADCASTING")
}

/// A group's backlog on one broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Unconsumed messages on the group's topics (its retry topic excluded).
    pub lag: i64,
    /// Unconsumed messages in its `%RETRY%` topic.
    pub retry: i64,
}

impl Backlog {
    /// Split `group`'s consume stats into lag and retry backlog.
    pub fn of(group: &str, stats: &ConsumeStats) -> Backlog {
        let mut backlog = Backlog::default();
        for (queue, offsets) in &stats.offsets {
            if is_retry_topic_of(group, &queue.topic) {
                backlog.retry += offsets.lag();
            } else {
                backlog.lag += offsets.lag();
            }
        }
        backlog
    }
}

/// True when `topic` is one of `group`'s retry topics: `%RETRY%<group>`,
/// or a 5.x POP retry topic `%RETRY%<group>+<topic>` / `%RETRY%<group>_<topic>`
/// (within the group's own consume stats, where another group's retry
/// topic cannot appear).
pub fn is_retry_topic_of(group: &str, topic: &str) -> bool {
    topic.strip_prefix(RETRY_PREFIX).is_some_and(|rest| {
        rest == group
            || rest
                .strip_prefix(group)
                .is_some_and(|pop| pop.starts_with('+') || pop.starts_with('_'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::OffsetWrapper;

    fn queue(topic: &str, id: i32) -> MessageQueue {
        MessageQueue {
            topic: topic.to_string(),
            broker_name: "broker-a".to_string(),
            queue_id: id,
        }
    }

    fn at(broker: i64, consumer: i64) -> OffsetWrapper {
        OffsetWrapper {
            broker_offset: broker,
            consumer_offset: consumer,
            ..OffsetWrapper::default()
        }
    }

    #[test]
    fn lag_and_retry_split_by_the_groups_own_retry_topic() {
        let stats = ConsumeStats {
            consume_tps: 0.0,
            offsets: vec![
                (queue("Orders", 0), at(10, 4)),
                (queue("Orders", 1), at(3, 3)),
                (queue("%RETRY%g", 0), at(7, 5)),
                // Another group's retry topic is a topic like any other.
                (queue("%RETRY%other", 0), at(2, 0)),
                // Offsets read at different instants: never negative lag.
                (queue("Orders", 2), at(5, 6)),
            ],
        };
        assert_eq!(Backlog::of("g", &stats), Backlog { lag: 8, retry: 2 });
    }

    #[test]
    fn names_of_retry_and_dead_letter_topics() {
        assert_eq!(retry_topic("g"), "%RETRY%g");
        assert_eq!(dlq_topic("g"), "%DLQ%g");
        assert_eq!(dlq_group("%DLQ%g"), Some("g"));
        assert_eq!(dlq_group("%RETRY%g"), None);
        let known: std::collections::BTreeSet<String> =
            ["g", "a_b"].into_iter().map(String::from).collect();
        assert_eq!(group_of_system_topic("%RETRY%g", &known), Some("g"));
        assert_eq!(group_of_system_topic("%DLQ%g", &known), Some("g"));
        assert_eq!(group_of_system_topic("Orders", &known), None);
        // 5.x POP retry topics are not groups.
        assert_eq!(group_of_system_topic("%RETRY%g+Orders", &known), Some("g"));
        assert_eq!(group_of_system_topic("%RETRY%g_Orders", &known), Some("g"));
        // A group whose name has an underscore keeps it.
        assert_eq!(group_of_system_topic("%RETRY%a_b", &known), Some("a_b"));
        assert_eq!(group_of_system_topic("%RETRY%x_y", &known), Some("x_y"));
        assert!(is_retry_topic_of("g", "%RETRY%g"));
        assert!(is_retry_topic_of("g", "%RETRY%g+Orders"));
        assert!(is_retry_topic_of("g", "%RETRY%g_Orders"));
        assert!(!is_retry_topic_of("g", "%RETRY%gg"));
    }

    #[test]
    fn held_messages_count_what_retention_kept() {
        let table = [
            (
                queue("%DLQ%g", 0),
                TopicOffset {
                    min_offset: 2,
                    max_offset: 5,
                    last_update_timestamp: 0,
                },
            ),
            (
                queue("%DLQ%g", 1),
                TopicOffset {
                    min_offset: 4,
                    max_offset: 4,
                    last_update_timestamp: 0,
                },
            ),
        ];
        assert_eq!(held_messages(&table), 3);
        assert!(lag_is_meaningful(Some("CLUSTERING")));
        assert!(lag_is_meaningful(None));
        assert!(!lag_is_meaningful(Some("BROADCASTING")));
    }
}
