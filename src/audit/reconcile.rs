//! Reconciliation of one window, by key (design section 6), pure and
//! allocation-lean:
//!
//! * the produced side is a [`ProducedBatch`]: every key in one string arena,
//!   with its event time;
//! * counts live in a map keyed by a 64-bit hash of the key, not the key;
//! * the consumed side is streamed through [`Reconciler::consume`] and never
//!   held: a consumed key whose hash was never produced is an orphan, and its
//!   string is kept (orphans are rare); every other key string is recovered
//!   from the produced arena, and only for mismatches.
//!
//! missing(k) = produced(k) − consumed(k) where positive;
//! duplicated(k) = consumed(k) − produced(k) where positive and produced(k) > 0;
//! orphaned(k) = consumed(k) where produced(k) = 0.
//!
//! Two keys whose hashes collide would be counted as one; with 64-bit hashes
//! the chance over 10 million keys is about 3 in a million per window.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Produced records of a window: keys in one arena, and their event times.
#[derive(Debug, Default, Clone)]
pub struct ProducedBatch {
    arena: String,
    /// End offset of each key in `arena`.
    ends: Vec<u32>,
    /// Event time (epoch ms) of each record.
    times: Vec<i64>,
}

impl ProducedBatch {
    /// An empty batch.
    pub fn new() -> ProducedBatch {
        ProducedBatch::default()
    }

    /// Add one produced record.
    ///
    /// # Panics
    /// When the arena exceeds 4 GiB of keys (far beyond a window's size).
    pub fn push(&mut self, key: &str, time_ms: i64) {
        self.arena.push_str(key);
        self.ends
            .push(u32::try_from(self.arena.len()).expect("a window's keys fit in 4 GiB"));
        self.times.push(time_ms);
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Key and time of record `i`.
    pub fn get(&self, i: usize) -> (&str, i64) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        (&self.arena[start..self.ends[i] as usize], self.times[i])
    }

    /// Every record.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// The stable 64-bit hash of a key (SipHash-2-4 with fixed keys: the same
/// across runs and processes, so stored findings and re-runs agree).
pub fn key_hash(key: &str) -> u64 {
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    hasher.write(key.as_bytes());
    hasher.finish()
}

/// Keys are already hashes: the map must not hash them again.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Per-hash counts and the first produced record with that hash.
#[derive(Debug, Clone, Copy)]
struct Tally {
    produced: u32,
    consumed: u32,
    first: u32,
}

/// A key produced in the window and not (or not enough times) consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The key.
    pub key: String,
    /// Earliest event time of its produced records, epoch ms.
    pub produced_at: i64,
    /// produced − consumed.
    pub count: u32,
}

/// The outcome of one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Produced records.
    pub produced: u64,
    /// Consumed records that counted (all, including duplicates and orphans).
    pub consumed: u64,
    /// Missing keys, sorted by key.
    pub missing: Vec<Missing>,
    /// (key, consumed − produced) for keys consumed more than produced.
    pub duplicated: Vec<(String, u32)>,
    /// (key, consumed) for keys consumed but never produced in the window.
    pub orphaned: Vec<(String, u32)>,
}

impl Reconciliation {
    /// Total missing messages (sum of counts).
    pub fn missing_total(&self) -> u64 {
        self.missing.iter().map(|m| u64::from(m.count)).sum()
    }
    /// Total duplicate deliveries.
    pub fn duplicated_total(&self) -> u64 {
        self.duplicated.iter().map(|(_, n)| u64::from(*n)).sum()
    }
    /// Total orphaned deliveries.
    pub fn orphaned_total(&self) -> u64 {
        self.orphaned.iter().map(|(_, n)| u64::from(*n)).sum()
    }
}

/// Counts one window.
pub struct Reconciler<'a> {
    produced: &'a ProducedBatch,
    tallies: HashMap<u64, Tally, BuildHasherDefault<Identity>>,
    orphans: HashMap<u64, (String, u32), BuildHasherDefault<Identity>>,
    consumed: u64,
}

impl<'a> Reconciler<'a> {
    /// Count the produced side.
    pub fn new(produced: &'a ProducedBatch) -> Reconciler<'a> {
        let mut tallies: HashMap<u64, Tally, BuildHasherDefault<Identity>> =
            HashMap::with_capacity_and_hasher(produced.len(), BuildHasherDefault::default());
        for i in 0..produced.len() {
            let (key, _) = produced.get(i);
            tallies
                .entry(key_hash(key))
                .and_modify(|t| t.produced += 1)
                .or_insert(Tally {
                    produced: 1,
                    consumed: 0,
                    first: i as u32,
                });
        }
        Reconciler {
            produced,
            tallies,
            orphans: HashMap::default(),
            consumed: 0,
        }
    }

    /// Count one consumed record.
    pub fn consume(&mut self, key: &str) {
        self.consumed += 1;
        let hash = key_hash(key);
        match self.tallies.get_mut(&hash) {
            Some(tally) => tally.consumed += 1,
            None => {
                self.orphans
                    .entry(hash)
                    .or_insert_with(|| (key.to_string(), 0))
                    .1 += 1
            }
        }
    }

    /// The result, key strings only for mismatches.
    pub fn finish(self) -> Reconciliation {
        let mut missing = Vec::new();
        let mut duplicated = Vec::new();
        for tally in self.tallies.values() {
            if tally.produced == tally.consumed {
                continue;
            }
            let (key, _) = self.produced.get(tally.first as usize);
            if tally.produced > tally.consumed {
                missing.push(Missing {
                    key: key.to_string(),
                    produced_at: i64::MAX,
                    count: tally.produced - tally.consumed,
                });
            } else {
                duplicated.push((key.to_string(), tally.consumed - tally.produced));
            }
        }
        // Earliest produced time of each missing key: one pass over the batch,
        // touching only missing hashes.
        if !missing.is_empty() {
            let index: HashMap<u64, usize, BuildHasherDefault<Identity>> = missing
                .iter()
                .enumerate()
                .map(|(i, m)| (key_hash(&m.key), i))
                .collect();
            for (key, time) in self.produced.iter() {
                if let Some(&i) = index.get(&key_hash(key)) {
                    missing[i].produced_at = missing[i].produced_at.min(time);
                }
            }
        }
        missing.sort_by(|a, b| a.key.cmp(&b.key));
        duplicated.sort();
        let mut orphaned: Vec<(String, u32)> = self.orphans.into_values().collect();
        orphaned.sort();
        Reconciliation {
            produced: self.produced.len() as u64,
            consumed: self.consumed,
            missing,
            duplicated,
            orphaned,
        }
    }
}

/// Reconcile a produced batch against consumed keys.
pub fn reconcile<'k>(
    produced: &ProducedBatch,
    consumed: impl IntoIterator<Item = &'k str>,
) -> Reconciliation {
    let mut reconciler = Reconciler::new(produced);
    for key in consumed {
        reconciler.consume(key);
    }
    reconciler.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: &[(&str, i64)]) -> ProducedBatch {
        let mut b = ProducedBatch::new();
        for (k, t) in records {
            b.push(k, *t);
        }
        b
    }

    #[test]
    fn table_of_cases() {
        struct Case {
            name: &'static str,
            produced: &'static [(&'static str, i64)],
            consumed: &'static [&'static str],
            missing: &'static [(&'static str, i64, u32)],
            duplicated: &'static [(&'static str, u32)],
            orphaned: &'static [(&'static str, u32)],
        }
        let cases = [
            Case {
                name: "all consumed once",
                produced: &[("a", 1), ("b", 2)],
                consumed: &["b", "a"],
                missing: &[],
                duplicated: &[],
                orphaned: &[],
            },
            Case {
                name: "one missing",
                produced: &[("a", 1), ("b", 2)],
                consumed: &["a"],
                missing: &[("b", 2, 1)],
                duplicated: &[],
                orphaned: &[],
            },
            Case {
                name: "consumed twice",
                produced: &[("a", 1)],
                consumed: &["a", "a", "a"],
                missing: &[],
                duplicated: &[("a", 2)],
                orphaned: &[],
            },
            Case {
                name: "never produced",
                produced: &[("a", 1)],
                consumed: &["a", "z", "z"],
                missing: &[],
                duplicated: &[],
                orphaned: &[("z", 2)],
            },
            Case {
                name: "produced twice, consumed once: one missing, earliest time",
                produced: &[("a", 9), ("a", 4)],
                consumed: &["a"],
                missing: &[("a", 4, 1)],
                duplicated: &[],
                orphaned: &[],
            },
            Case {
                name: "empty window",
                produced: &[],
                consumed: &[],
                missing: &[],
                duplicated: &[],
                orphaned: &[],
            },
            Case {
                name: "nothing consumed",
                produced: &[("a", 1), ("b", 1)],
                consumed: &[],
                missing: &[("a", 1, 1), ("b", 1, 1)],
                duplicated: &[],
                orphaned: &[],
            },
        ];
        for case in cases {
            let produced = batch(case.produced);
            let result = reconcile(&produced, case.consumed.iter().copied());
            let missing: Vec<(String, i64, u32)> = result
                .missing
                .iter()
                .map(|m| (m.key.clone(), m.produced_at, m.count))
                .collect();
            let expected: Vec<(String, i64, u32)> = case
                .missing
                .iter()
                .map(|(k, t, n)| (k.to_string(), *t, *n))
                .collect();
            assert_eq!(missing, expected, "{}", case.name);
            assert_eq!(
                result.duplicated,
                case.duplicated
                    .iter()
                    .map(|(k, n)| (k.to_string(), *n))
                    .collect::<Vec<_>>(),
                "{}",
                case.name
            );
            assert_eq!(
                result.orphaned,
                case.orphaned
                    .iter()
                    .map(|(k, n)| (k.to_string(), *n))
                    .collect::<Vec<_>>(),
                "{}",
                case.name
            );
            assert_eq!(
                (result.produced, result.consumed),
                (case.produced.len() as u64, case.consumed.len() as u64),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn key_hash_is_stable_across_runs() {
        // Fixed SipHash keys: this value must never change (stored findings depend on it).
        assert_eq!(key_hash("order-1"), key_hash("order-1"));
        assert_ne!(key_hash("order-1"), key_hash("order-2"));
        assert_eq!(key_hash(""), 0x1e92_4b9d_7377_00d7);
    }
}
