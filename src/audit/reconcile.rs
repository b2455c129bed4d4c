//! Reconciliation of one window, message by message (design section 6),
//! pure and allocation-lean.
//!
//! A produced message is identified by its message id where the source has
//! one, and by its keys otherwise; a message with several keys is one
//! message. A consumption is matched to the produced message with the same
//! id; without an id (a ledger that records only keys), to a message with
//! one of its keys that has no conflicting id, the least consumed first — so
//! a key reused by several messages (retries, order life cycles) cannot let
//! one message's consumption hide another's loss.
//!
//! The produced side is indexed by 64-bit hashes of ids and keys; candidates
//! are confirmed by comparing the strings, so a hash collision costs a
//! comparison, never a wrong match. The consumed side is streamed through
//! [`Reconciler::consume`] and never held.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::{Consumed, Produced};

/// No link.
const NONE: u32 = u32::MAX;

/// The stable 64-bit hash of an id or key (SipHash-2-4 with fixed keys: the
/// same across runs and processes).
pub fn key_hash(key: &str) -> u64 {
    let mut hasher = siphasher::sip::SipHasher::new();
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

type HashIndex = HashMap<u64, u32, BuildHasherDefault<Identity>>;

/// What a window's reconciliation found, by index into the produced slice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Consumptions counted (matched or not).
    pub consumed: u64,
    /// Consumptions matched to a produced message.
    pub matched: u64,
    /// Produced messages never consumed.
    pub missing: Vec<usize>,
    /// (message, extra deliveries) for messages consumed more than once.
    pub duplicated: Vec<(usize, u32)>,
}

/// Matches consumptions to one window's produced messages.
pub struct Reconciler<'a> {
    produced: &'a [Produced],
    by_id: HashIndex,
    /// Next message with the same id hash (chain through `by_id`).
    id_links: Vec<(u32, u32)>,
    by_key: HashIndex,
    /// (message, next link) chains through `by_key`.
    key_links: Vec<(u32, u32)>,
    /// Stored ids learned later (5.x batch members), by message.
    alias_ids: HashMap<u32, Vec<String>>,
    /// Keys learned later, per alias link.
    alias_keys: HashMap<u32, Vec<String>>,
    counts: Vec<u32>,
    /// The messages indexed, when not the whole slice
    /// ([`Reconciler::for_members`]).
    members: Option<&'a [u32]>,
    consumed: u64,
    matched: u64,
}

impl<'a> Reconciler<'a> {
    /// Index the produced side.
    pub fn new(produced: &'a [Produced]) -> Reconciler<'a> {
        let mut r = Reconciler::sized(produced, produced.iter(), None);
        for (i, message) in produced.iter().enumerate() {
            r.link(i as u32, message);
        }
        r
    }

    /// Index only `members` of the produced side (indices into it): one
    /// share of a window reconciled on several threads at once. It works
    /// as [`Reconciler::new`] on the slice of the members alone: every
    /// message index in and out (matches, counts, aliases, the outcome) is
    /// a position in `members`.
    pub fn for_members(produced: &'a [Produced], members: &'a [u32]) -> Reconciler<'a> {
        let shared = members.iter().map(|&i| &produced[i as usize]);
        let mut r = Reconciler::sized(produced, shared, Some(members));
        for (at, &i) in members.iter().enumerate() {
            r.link(at as u32, &produced[i as usize]);
        }
        r
    }

    /// A message by the reconciler's own index.
    fn message(&self, message: u32) -> &'a Produced {
        match self.members {
            Some(members) => &self.produced[members[message as usize] as usize],
            None => &self.produced[message as usize],
        }
    }

    fn sized(
        produced: &'a [Produced],
        indexed: impl Iterator<Item = &'a Produced>,
        members: Option<&'a [u32]>,
    ) -> Reconciler<'a> {
        // Sized to what the window holds: a key ledger has no ids, and a
        // window reconciled within a memory budget has no room for an
        // empty index.
        let (mut messages, mut ids, mut keys) = (0, 0, 0);
        for m in indexed {
            messages += 1;
            ids += usize::from(m.msg_id.is_some());
            keys += m.keys.len();
        }
        Reconciler {
            produced,
            by_id: HashIndex::with_capacity_and_hasher(ids, Default::default()),
            id_links: Vec::with_capacity(ids),
            by_key: HashIndex::with_capacity_and_hasher(keys, Default::default()),
            key_links: Vec::with_capacity(keys),
            alias_ids: HashMap::new(),
            alias_keys: HashMap::new(),
            counts: vec![0; messages],
            members,
            consumed: 0,
            matched: 0,
        }
    }

    fn link(&mut self, i: u32, message: &Produced) {
        if let Some(id) = &message.msg_id {
            self.link_id(i, id);
        }
        for key in &message.keys {
            self.link_key(i, key);
        }
    }

    fn link_id(&mut self, message: u32, id: &str) {
        let link = self.id_links.len() as u32;
        let head = self.by_id.insert(key_hash(id), link).unwrap_or(NONE);
        self.id_links.push((message, head));
    }

    fn link_key(&mut self, message: u32, key: &str) {
        let link = self.key_links.len() as u32;
        let head = self.by_key.insert(key_hash(key), link).unwrap_or(NONE);
        self.key_links.push((message, head));
    }

    /// Teach it the id (and keys) a message was stored under, when that
    /// differs from what the producer reported (a 5.x batch member).
    pub fn add_alias(&mut self, message: usize, stored_id: &str, keys: &[String]) {
        let m = message as u32;
        self.alias_ids
            .entry(m)
            .or_default()
            .push(stored_id.to_string());
        self.alias_keys
            .entry(m)
            .or_default()
            .extend(keys.iter().cloned());
        self.link_id(m, stored_id);
        for key in keys {
            if !self.message(message as u32).keys.contains(key) {
                self.link_key(m, key);
            }
        }
    }

    fn has_id(&self, message: u32, id: &str) -> bool {
        self.message(message).msg_id.as_deref() == Some(id)
            || self
                .alias_ids
                .get(&message)
                .is_some_and(|ids| ids.iter().any(|a| a == id))
    }

    fn keys_of(&self, message: u32) -> impl Iterator<Item = &str> {
        self.message(message)
            .keys
            .iter()
            .chain(self.alias_keys.get(&message).into_iter().flatten())
            .map(String::as_str)
    }

    fn shares_key(&self, message: u32, consumed: &Consumed) -> bool {
        self.keys_of(message)
            .any(|k| consumed.keys.iter().any(|c| c == k))
    }

    /// The better of two candidates: sharing a key, then not yet consumed,
    /// then produced first.
    fn better(&self, a: u32, b: u32, consumed: &Consumed) -> u32 {
        let rank = |m: u32| {
            (
                !self.shares_key(m, consumed),
                self.counts[m as usize] > 0,
                self.counts[m as usize],
                m,
            )
        };
        if rank(b) < rank(a) { b } else { a }
    }

    fn by_id(&self, id: &str, consumed: &Consumed) -> Option<u32> {
        let mut best: Option<u32> = None;
        let mut link = self.by_id.get(&key_hash(id)).copied().unwrap_or(NONE);
        while link != NONE {
            let (message, next) = self.id_links[link as usize];
            link = next;
            if !self.has_id(message, id) {
                continue; // a hash collision
            }
            // Several messages under one stored id (a 5.x batch): the keys
            // tell them apart when both sides have them.
            let keyed = !consumed.keys.is_empty() && self.keys_of(message).next().is_some();
            if keyed && !self.shares_key(message, consumed) {
                continue;
            }
            best = Some(best.map_or(message, |b| self.better(b, message, consumed)));
        }
        best
    }

    fn by_key(&self, consumed: &Consumed) -> Option<u32> {
        let mut best: Option<u32> = None;
        for key in &consumed.keys {
            let mut link = self.by_key.get(&key_hash(key)).copied().unwrap_or(NONE);
            while link != NONE {
                let (message, next) = self.key_links[link as usize];
                link = next;
                if !self.keys_of(message).any(|k| k == key) {
                    continue; // a hash collision
                }
                // Two different ids are two different messages, whatever their keys.
                let produced = self.message(message);
                if let Some(id) = &consumed.msg_id
                    && produced.id_is_reliable()
                    && !self.has_id(message, id)
                {
                    continue;
                }
                best = Some(best.map_or(message, |b| self.better(b, message, consumed)));
            }
        }
        best
    }

    /// Count one consumption; returns the produced message it matched.
    pub fn consume(&mut self, consumed: &Consumed) -> Option<usize> {
        self.consumed += 1;
        self.rematch(consumed)
    }

    /// Match a consumption counted earlier that matched nothing then (after
    /// [`Reconciler::add_alias`]).
    pub fn rematch(&mut self, consumed: &Consumed) -> Option<usize> {
        let found = consumed
            .msg_id
            .as_deref()
            .and_then(|id| self.by_id(id, consumed))
            .or_else(|| self.by_key(consumed))?;
        self.counts[found as usize] += 1;
        self.matched += 1;
        Some(found as usize)
    }

    /// Times each produced message was consumed so far.
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// The result.
    pub fn finish(self) -> Outcome {
        let mut outcome = Outcome {
            consumed: self.consumed,
            matched: self.matched,
            ..Outcome::default()
        };
        for (i, n) in self.counts.iter().enumerate() {
            match n {
                0 => outcome.missing.push(i),
                1 => {}
                n => outcome.duplicated.push((i, n - 1)),
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::{MessageKind, SendStatus};

    fn produced(id: Option<&str>, keys: &[&str], batch: bool) -> Produced {
        Produced {
            msg_id: id.map(str::to_string),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            time_ms: 0,
            offset_msg_id: None,
            tags: None,
            properties: None,
            status: SendStatus::SendOk,
            kind: MessageKind::Normal,
            transaction: None,
            batch,
        }
    }

    fn consumed(id: Option<&str>, keys: &[&str]) -> Consumed {
        Consumed {
            msg_id: id.map(str::to_string),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            time_ms: 0,
        }
    }

    fn run(p: &[Produced], c: &[Consumed]) -> Outcome {
        let mut r = Reconciler::new(p);
        for x in c {
            r.consume(x);
        }
        r.finish()
    }

    #[test]
    fn matches_by_id_then_by_key() {
        let p = [
            produced(Some("A"), &["k1"], false),
            produced(Some("B"), &["k2"], false),
            produced(None, &["k3"], false),
        ];
        let o = run(&p, &[consumed(Some("B"), &[]), consumed(None, &["k3"])]);
        assert_eq!(o.missing, [0]);
        assert_eq!((o.consumed, o.matched), (2, 2));
    }

    #[test]
    fn a_reused_key_does_not_hide_a_loss() {
        // Order life cycle: two messages with key "order-1"; only the first
        // was consumed, twice (a redelivery).
        let p = [
            produced(Some("A"), &["order-1"], false),
            produced(Some("B"), &["order-1"], false),
        ];
        let o = run(
            &p,
            &[
                consumed(Some("A"), &["order-1"]),
                consumed(Some("A"), &["order-1"]),
            ],
        );
        assert_eq!(o.missing, [1]);
        assert_eq!(o.duplicated, [(0, 1)]);
        // A key-only consumer ledger: each consumption takes a message not yet consumed.
        let o = run(&p, &[consumed(None, &["order-1"])]);
        assert_eq!(o.missing.len(), 1);
        let o = run(
            &p,
            &[consumed(None, &["order-1"]), consumed(None, &["order-1"])],
        );
        assert!(o.missing.is_empty() && o.duplicated.is_empty());
    }

    #[test]
    fn a_message_with_several_keys_is_one_message() {
        let p = [produced(Some("A"), &["k1", "k2"], false)];
        let o = run(&p, &[consumed(None, &["k2"])]);
        assert!(o.missing.is_empty());
        assert_eq!(o.matched, 1);
    }

    #[test]
    fn a_different_id_under_the_same_key_is_another_message() {
        let p = [produced(Some("A"), &["k"], false)];
        let o = run(&p, &[consumed(Some("Z"), &["k"])]);
        assert_eq!(o.missing, [0]);
        assert_eq!(o.matched, 0);
    }

    #[test]
    fn batch_members_stored_under_the_batch_id_match_once_aliased() {
        // 5.x: the producer reports a1 and a2; the broker stores both as "c".
        let p = [
            produced(Some("a1"), &[], true),
            produced(Some("a2"), &[], true),
        ];
        let c = [consumed(Some("c"), &["b1"]), consumed(Some("c"), &["b2"])];
        let mut r = Reconciler::new(&p);
        let unmatched: Vec<&Consumed> = c.iter().filter(|x| r.consume(x).is_none()).collect();
        assert_eq!(unmatched.len(), 2);
        r.add_alias(0, "c", &["b1".to_string()]);
        r.add_alias(1, "c", &["b2".to_string()]);
        let rematched: Vec<Option<usize>> = unmatched.iter().map(|x| r.rematch(x)).collect();
        assert_eq!(rematched, [Some(0), Some(1)]);
        let o = r.finish();
        assert!(o.missing.is_empty() && o.duplicated.is_empty());
        assert_eq!((o.consumed, o.matched), (2, 2));
    }

    #[test]
    fn messages_without_any_consumption_are_missing_in_order() {
        let p = [
            produced(Some("A"), &["a"], false),
            produced(Some("B"), &["b"], false),
        ];
        assert_eq!(run(&p, &[]).missing, [0, 1]);
        assert_eq!(run(&[], &[consumed(Some("A"), &[])]).matched, 0);
    }

    #[test]
    fn key_hash_is_stable_across_runs() {
        // Fixed SipHash keys: this value must never change.
        assert_eq!(key_hash(""), 0x1e92_4b9d_7377_00d7);
        assert_ne!(key_hash("order-1"), key_hash("order-2"));
    }

    #[test]
    fn key_hashes_are_the_ones_stored_by_earlier_versions() {
        // SipHash-2-4 with zero keys, as std's deprecated SipHasher gave:
        // stores written before the switch keep matching.
        for (key, hash) in [
            ("", 0x1e92_4b9d_7377_00d7_u64),
            ("abc", 0x3fc8_8496_4770_eede),
            ("order-123", 0x12b4_462e_fdcf_3694),
            ("7F0000010001ABCDEF", 0xa736_6093_0da7_c0df),
        ] {
            assert_eq!(key_hash(key), hash, "{key:?}");
        }
    }
}
