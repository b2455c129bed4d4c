//! What the collector remembers between cycles, and the pure logic on it:
//! per-queue max-offset history (to date the oldest unconsumed message
//! without pulling it), offset regressions, and messages expired before
//! consumption. Time is always passed in; nothing here does I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::body::json::MessageQueue;

/// Samples kept per queue. At a 30 s interval this is 64 minutes of history.
const HISTORY_SAMPLES: usize = 128;

/// Cross-cycle state of one cluster's collector.
#[derive(Debug, Default)]
pub struct State {
    /// Per queue: (time ms, max offset) samples, oldest first.
    history: HashMap<MessageQueue, VecDeque<(i64, i64)>>,
    /// Per queue: the last max offset seen.
    last_max: HashMap<MessageQueue, i64>,
    /// Per (topic, broker): max-offset regressions counted so far.
    regressions: BTreeMap<(String, String), u64>,
    /// Per (group, queue): offset up to which expired messages were counted.
    expired_upto: HashMap<(String, MessageQueue), i64>,
    /// Per (group, topic, broker): expired messages counted so far.
    expired: BTreeMap<(String, String, String), u64>,
    /// Store time (ms) of the message at (queue, offset), learnt by pulling.
    pulled: HashMap<(MessageQueue, i64), i64>,
}

impl State {
    /// Record a queue's max offset seen at `now_ms`; count a regression when
    /// it went backwards. Returns true on a regression.
    pub fn observe_max_offset(
        &mut self,
        queue: &MessageQueue,
        max_offset: i64,
        now_ms: i64,
    ) -> bool {
        let regressed = self
            .last_max
            .get(queue)
            .is_some_and(|&last| max_offset < last);
        if regressed {
            *self
                .regressions
                .entry((queue.topic.clone(), queue.broker_name.clone()))
                .or_default() += 1;
            // The old history describes offsets that no longer exist.
            self.history.remove(queue);
        }
        self.last_max.insert(queue.clone(), max_offset);
        let samples = self.history.entry(queue.clone()).or_default();
        if samples.back().is_none_or(|&(_, last)| last != max_offset) {
            samples.push_back((now_ms, max_offset));
            if samples.len() > HISTORY_SAMPLES {
                samples.pop_front();
            }
        }
        regressed
    }

    /// Regressions counted per (topic, broker), including zeros for every
    /// queue ever seen (so the counter exists before its first increment).
    pub fn regressions(&self) -> BTreeMap<(String, String), u64> {
        let mut out: BTreeMap<(String, String), u64> = self
            .last_max
            .keys()
            .map(|q| ((q.topic.clone(), q.broker_name.clone()), 0))
            .collect();
        for (key, count) in &self.regressions {
            out.insert(key.clone(), *count);
        }
        out
    }

    /// Count messages of `queue` that retention deleted before `group`
    /// consumed them: everything below `min_offset` and at or above the
    /// committed offset, each message once.
    pub fn observe_expiry(
        &mut self,
        group: &str,
        queue: &MessageQueue,
        committed: i64,
        min_offset: i64,
    ) {
        let key = (group.to_string(), queue.clone());
        let counted = self.expired_upto.get(&key).copied().unwrap_or(i64::MIN);
        let from = committed.max(counted);
        let entry = self
            .expired
            .entry((
                group.to_string(),
                queue.topic.clone(),
                queue.broker_name.clone(),
            ))
            .or_default();
        if min_offset > from {
            *entry += (min_offset - from) as u64;
        }
        self.expired_upto.insert(key, counted.max(min_offset));
    }

    /// Expired-before-consumed counts per (group, topic, broker).
    pub fn expired(&self) -> &BTreeMap<(String, String, String), u64> {
        &self.expired
    }

    /// Remember the store time of a pulled message.
    pub fn remember_store_time(&mut self, queue: &MessageQueue, offset: i64, store_ms: i64) {
        self.pulled.insert((queue.clone(), offset), store_ms);
    }

    /// Estimate when the message at `offset` of `queue` was stored: from a
    /// pulled timestamp if known, else by interpolating the max-offset history
    /// (it was written between the last sample not covering it and the first
    /// sample covering it). `None` when the offset predates the history.
    pub fn store_time(&self, queue: &MessageQueue, offset: i64) -> Option<i64> {
        if let Some(&t) = self.pulled.get(&(queue.clone(), offset)) {
            return Some(t);
        }
        let samples = self.history.get(queue)?;
        let covering = samples.iter().position(|&(_, max)| max > offset)?;
        if covering == 0 {
            return None;
        }
        let (t0, m0) = samples[covering - 1];
        let (t1, m1) = samples[covering];
        // Offsets m0..m1 were written in (t0, t1]; place `offset` linearly.
        let fraction = (offset - m0 + 1) as f64 / (m1 - m0) as f64;
        Some(t0 + ((t1 - t0) as f64 * fraction).round() as i64)
    }

    /// Forget everything about queues not in `live` (deleted topics), so
    /// memory follows the cluster.
    pub fn retain_queues(&mut self, live: &std::collections::HashSet<MessageQueue>) {
        self.history.retain(|q, _| live.contains(q));
        self.last_max.retain(|q, _| live.contains(q));
        self.pulled.retain(|(q, _), _| live.contains(q));
        self.expired_upto.retain(|(_, q), _| live.contains(q));
    }

    /// Drop pulled timestamps for offsets a group has consumed past.
    pub fn forget_pulled_below(&mut self, queue: &MessageQueue, offset: i64) {
        self.pulled.retain(|(q, o), _| q != queue || *o >= offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: i32) -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id: id,
        }
    }

    #[test]
    fn history_dates_an_offset_between_the_samples_around_it() {
        let mut state = State::default();
        state.observe_max_offset(&q(0), 10, 1_000);
        state.observe_max_offset(&q(0), 20, 11_000);
        state.observe_max_offset(&q(0), 20, 21_000); // unchanged: no new sample
        state.observe_max_offset(&q(0), 30, 31_000);
        // Offset 10 (the 11th message) was written in (1 s, 11 s]: first tenth.
        assert_eq!(state.store_time(&q(0), 10), Some(2_000));
        assert_eq!(state.store_time(&q(0), 19), Some(11_000));
        // Offset 25 in (21 s?, 31 s]: the history has (11 s, 20) then (31 s, 30).
        assert_eq!(state.store_time(&q(0), 25), Some(23_000));
        // Before the history began: unknown, never guessed.
        assert_eq!(state.store_time(&q(0), 5), None);
        // Beyond the max: not written yet.
        assert_eq!(state.store_time(&q(0), 30), None);
        state.remember_store_time(&q(0), 5, 500);
        assert_eq!(state.store_time(&q(0), 5), Some(500));
    }

    #[test]
    fn regressions_are_counted_per_topic_and_broker() {
        let mut state = State::default();
        assert!(!state.observe_max_offset(&q(0), 100, 0));
        assert!(!state.observe_max_offset(&q(1), 50, 0));
        assert!(state.observe_max_offset(&q(0), 60, 1));
        assert!(!state.observe_max_offset(&q(0), 70, 2));
        assert!(state.observe_max_offset(&q(1), 10, 3));
        assert_eq!(state.regressions()[&("T".to_string(), "b".to_string())], 2);
    }

    #[test]
    fn expired_messages_are_counted_once() {
        let mut state = State::default();
        state.observe_expiry("g", &q(0), 5, 0); // nothing deleted yet
        state.observe_expiry("g", &q(0), 5, 8); // 5, 6, 7 deleted unconsumed
        state.observe_expiry("g", &q(0), 5, 8); // same again: no double count
        state.observe_expiry("g", &q(0), 5, 12); // 8..11 more
        state.observe_expiry("g", &q(0), 20, 25); // group jumped: 20..24
        let key = ("g".to_string(), "T".to_string(), "b".to_string());
        assert_eq!(state.expired()[&key], 3 + 4 + 5);
    }
}
