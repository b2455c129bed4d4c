//! What the collector remembers between cycles, and the pure logic on it:
//! per-queue max-offset history (to date the oldest unconsumed message
//! without pulling it), min offsets, offset regressions, and messages expired
//! before consumption. Time is always passed in; nothing here does I/O.
//!
//! Memory is per queue, and clusters have hundreds of thousands of queues, so
//! names are interned once and every map is keyed by small integer ids.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::admin::MessageQueue;

/// Samples kept per queue. When full, every other old sample is dropped, so
/// the history keeps reaching back (ever more coarsely) instead of forgetting.
const HISTORY_SAMPLES: usize = 32;

/// Interned name id.
type Id = u32;
/// A queue as ids: (topic, broker, queue id).
type QueueKey = (Id, Id, i32);

/// Names seen, each stored once.
#[derive(Debug, Default)]
struct Names {
    ids: HashMap<Arc<str>, Id>,
    names: Vec<Arc<str>>,
}

impl Names {
    fn id(&mut self, name: &str) -> Id {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as Id;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    fn get(&self, name: &str) -> Option<Id> {
        self.ids.get(name).copied()
    }

    fn name(&self, id: Id) -> &str {
        &self.names[id as usize]
    }
}

/// Everything known about one queue.
#[derive(Debug, Default)]
struct QueueState {
    /// Last max offset seen.
    last_max: i64,
    /// Last min offset read, if any.
    min_offset: Option<i64>,
    /// (time ms, max offset) samples, oldest first, one per change.
    samples: Vec<(i64, i64)>,
}

/// Cross-cycle state of one cluster's collector.
#[derive(Debug, Default)]
pub struct State {
    names: Names,
    queues: HashMap<QueueKey, QueueState>,
    /// Per (topic, broker): max-offset regressions counted so far.
    regressions: BTreeMap<(Id, Id), u64>,
    /// Per (group, queue): offset up to which expired messages were counted.
    expired_upto: HashMap<(Id, QueueKey), i64>,
    /// Per (group, topic, broker): expired messages counted so far.
    expired: BTreeMap<(Id, Id, Id), u64>,
    /// Store time (ms) of the message at (queue, offset), learnt by pulling.
    pulled: HashMap<(QueueKey, i64), i64>,
    /// Per broker: the next discarded half message to read.
    discard_cursor: HashMap<Id, i64>,
    /// Per (broker, original topic): discarded half messages read.
    discarded: BTreeMap<(Id, Id), u64>,
}

impl State {
    fn key(&mut self, queue: &MessageQueue) -> QueueKey {
        (
            self.names.id(&queue.topic),
            self.names.id(&queue.broker_name),
            queue.queue_id,
        )
    }

    fn lookup(&self, queue: &MessageQueue) -> Option<QueueKey> {
        Some((
            self.names.get(&queue.topic)?,
            self.names.get(&queue.broker_name)?,
            queue.queue_id,
        ))
    }

    /// Record a queue's max offset seen at `now_ms`; count a regression when
    /// it went backwards. Returns true on a regression.
    pub fn observe_max_offset(
        &mut self,
        queue: &MessageQueue,
        max_offset: i64,
        now_ms: i64,
    ) -> bool {
        let key = self.key(queue);
        let mut regressed = false;
        let state = self.queues.entry(key).or_insert_with(|| QueueState {
            last_max: max_offset,
            ..QueueState::default()
        });
        if max_offset < state.last_max {
            regressed = true;
            // The old history describes offsets that no longer exist.
            state.samples.clear();
        }
        state.last_max = max_offset;
        if state
            .samples
            .last()
            .is_none_or(|&(_, last)| last != max_offset)
        {
            if state.samples.len() >= HISTORY_SAMPLES {
                thin(&mut state.samples);
            }
            state.samples.push((now_ms, max_offset));
        }
        let counter = self.regressions.entry((key.0, key.1)).or_default();
        if regressed {
            *counter += 1;
        }
        regressed
    }

    /// Remember a queue's min offset.
    pub fn observe_min_offset(&mut self, queue: &MessageQueue, min_offset: i64) {
        let key = self.key(queue);
        self.queues.entry(key).or_default().min_offset = Some(min_offset);
    }

    /// The last min offset read for a queue.
    pub fn min_offset(&self, queue: &MessageQueue) -> Option<i64> {
        self.queues.get(&self.lookup(queue)?)?.min_offset
    }

    fn live_pairs(&self) -> HashSet<(Id, Id)> {
        self.queues.keys().map(|(t, b, _)| (*t, *b)).collect()
    }

    /// Regressions counted per live (topic, broker), zeros included so the
    /// counter exists before its first increment. A deleted topic's counter
    /// is not listed but kept, so it continues if the topic returns.
    pub fn regressions(&self) -> Vec<(&str, &str, u64)> {
        let live = self.live_pairs();
        self.regressions
            .iter()
            .filter(|(pair, _)| live.contains(pair))
            .map(|((t, b), n)| (self.names.name(*t), self.names.name(*b), *n))
            .collect()
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
        let key = self.key(queue);
        let group = self.names.id(group);
        let counted = self
            .expired_upto
            .get(&(group, key))
            .copied()
            .unwrap_or(i64::MIN);
        let from = committed.max(counted);
        let entry = self.expired.entry((group, key.0, key.1)).or_default();
        if min_offset > from {
            *entry += (min_offset - from) as u64;
        }
        self.expired_upto
            .insert((group, key), counted.max(min_offset));
    }

    /// Expired-before-consumed counts as (group, topic, broker, count), for
    /// live (topic, broker) pairs.
    pub fn expired(&self) -> Vec<(&str, &str, &str, u64)> {
        let live = self.live_pairs();
        self.expired
            .iter()
            .filter(|((_, t, b), _)| live.contains(&(*t, *b)))
            .map(|((g, t, b), n)| {
                (
                    self.names.name(*g),
                    self.names.name(*t),
                    self.names.name(*b),
                    *n,
                )
            })
            .collect()
    }

    /// Remember the store time of a pulled message.
    pub fn remember_store_time(&mut self, queue: &MessageQueue, offset: i64, store_ms: i64) {
        let key = self.key(queue);
        self.pulled.insert((key, offset), store_ms);
    }

    /// Estimate when the message at `offset` of `queue` was stored: from a
    /// pulled timestamp if known, else by interpolating the max-offset history
    /// (it was written between the last sample not covering it and the first
    /// sample covering it). `None` when the offset predates the history.
    pub fn store_time(&self, queue: &MessageQueue, offset: i64) -> Option<i64> {
        let key = self.lookup(queue)?;
        if let Some(&t) = self.pulled.get(&(key, offset)) {
            return Some(t);
        }
        let samples = &self.queues.get(&key)?.samples;
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

    /// Forget queues of brokers that answered fully this cycle but no longer
    /// list them (deleted topics), so memory follows the cluster. Queues of a
    /// broker that did not answer are kept: when it comes back, a shorter max
    /// offset must count as a regression, not look new. Regression and expiry
    /// counters are kept too: counters never reset.
    pub fn retain_queues<'a>(
        &mut self,
        live: impl Iterator<Item = &'a MessageQueue>,
        answered: &std::collections::BTreeSet<String>,
    ) {
        let live: HashSet<QueueKey> = live.filter_map(|q| self.lookup(q)).collect();
        let answered: HashSet<Id> = answered.iter().filter_map(|b| self.names.get(b)).collect();
        let keep = |k: &QueueKey| live.contains(k) || !answered.contains(&k.1);
        self.queues.retain(|k, _| keep(k));
        self.pulled.retain(|(k, _), _| keep(k));
        self.expired_upto.retain(|(_, k), _| keep(k));
    }

    /// Drop pulled timestamps for offsets a group has consumed past.
    pub fn forget_pulled_below(&mut self, queue: &MessageQueue, offset: i64) {
        if let Some(key) = self.lookup(queue) {
            self.pulled.retain(|(k, o), _| *k != key || *o >= offset);
        }
    }

    /// Where reading a broker's discarded half messages goes on, starting
    /// at `initial` the first time.
    pub fn discard_cursor_or(&mut self, broker: &str, initial: i64) -> i64 {
        let id = self.names.id(broker);
        *self.discard_cursor.entry(id).or_insert(initial)
    }

    /// Discarded half messages of `broker` are read up to `offset`.
    pub fn set_discard_cursor(&mut self, broker: &str, offset: i64) {
        let id = self.names.id(broker);
        self.discard_cursor.insert(id, offset);
    }

    /// One more discarded half message of `topic` on `broker`.
    pub fn count_discard(&mut self, broker: &str, topic: &str) {
        let key = (self.names.id(broker), self.names.id(topic));
        *self.discarded.entry(key).or_default() += 1;
    }

    /// (broker, topic, discarded so far) for every pair seen.
    pub fn discards(&self) -> Vec<(&str, &str, u64)> {
        self.discarded
            .iter()
            .map(|((b, t), n)| (self.names.name(*b), self.names.name(*t), *n))
            .collect()
    }
}

/// Halve the older half of the samples, keeping the newest half intact.
fn thin(samples: &mut Vec<(i64, i64)>) {
    let half = samples.len() / 2;
    let mut kept: Vec<(i64, i64)> = samples[..half].iter().step_by(2).copied().collect();
    kept.extend_from_slice(&samples[half..]);
    *samples = kept;
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
        // Offset 25: the history has (11 s, 20) then (31 s, 30).
        assert_eq!(state.store_time(&q(0), 25), Some(23_000));
        // Before the history began: unknown, never guessed.
        assert_eq!(state.store_time(&q(0), 5), None);
        // Beyond the max: not written yet.
        assert_eq!(state.store_time(&q(0), 30), None);
        state.remember_store_time(&q(0), 5, 500);
        assert_eq!(state.store_time(&q(0), 5), Some(500));
    }

    #[test]
    fn a_full_history_thins_old_samples_but_still_reaches_back() {
        let mut state = State::default();
        for i in 0..1_000 {
            state.observe_max_offset(&q(0), i * 10, i * 1_000);
        }
        let key = state.lookup(&q(0)).expect("known");
        let samples = &state.queues[&key].samples;
        assert!(samples.len() <= HISTORY_SAMPLES);
        // The newest samples are exact; an old offset is still dated (coarsely).
        // 9,985 is the 6th of offsets 9,980..9,989, written in (998 s, 999 s].
        assert_eq!(state.store_time(&q(0), 9_985), Some(998_600));
        assert!(state.store_time(&q(0), samples[1].1 - 1).is_some());
    }

    #[test]
    fn regressions_are_counted_per_topic_and_broker() {
        let mut state = State::default();
        assert!(!state.observe_max_offset(&q(0), 100, 0));
        assert!(!state.observe_max_offset(&q(1), 50, 0));
        assert!(state.observe_max_offset(&q(0), 60, 1));
        assert!(!state.observe_max_offset(&q(0), 70, 2));
        assert!(state.observe_max_offset(&q(1), 10, 3));
        assert_eq!(state.regressions(), [("T", "b", 2)]);
        // A deleted topic's counter vanishes from the output but is not reset.
        state.retain_queues(
            std::iter::empty(),
            &std::collections::BTreeSet::from(["b".to_string()]),
        );
        assert!(state.regressions().is_empty());
        state.observe_max_offset(&q(0), 5, 4);
        assert_eq!(state.regressions(), [("T", "b", 2)]);
    }

    #[test]
    fn a_broker_that_did_not_answer_keeps_its_queues_so_a_shorter_restart_is_a_regression() {
        let mut state = State::default();
        state.observe_max_offset(&q(0), 10, 0);
        // broker "b" down this cycle: nothing listed, and it did not answer.
        state.retain_queues(std::iter::empty(), &std::collections::BTreeSet::new());
        assert!(
            state.observe_max_offset(&q(0), 5, 2),
            "the restart lost 5 messages"
        );
        assert_eq!(state.regressions(), [("T", "b", 1)]);
    }

    #[test]
    fn expired_messages_are_counted_once() {
        let mut state = State::default();
        state.observe_expiry("g", &q(0), 5, 0); // nothing deleted yet
        state.observe_expiry("g", &q(0), 5, 8); // 5, 6, 7 deleted unconsumed
        state.observe_expiry("g", &q(0), 5, 8); // same again: no double count
        state.observe_expiry("g", &q(0), 5, 12); // 8..11 more
        state.observe_expiry("g", &q(0), 20, 25); // group jumped: 20..24
        state.observe_max_offset(&q(0), 30, 0);
        assert_eq!(state.expired(), [("g", "T", "b", 3 + 4 + 5)]);
    }
}
