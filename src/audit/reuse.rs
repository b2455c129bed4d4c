//! What one flow's runs keep of the trace records they read, so that an open
//! window (re-audited every run until it is final) replays what was read
//! before and reads from the store only what is new.
//!
//! Two things are kept, within `[audit] reuse_budget` bytes:
//! * each open window's produced messages (the trace's `Pub` rows of
//!   `[start, end)`, transaction halves with their recorded state);
//! * one consumption timeline for all windows: the group's consumptions of
//!   `[from, to)`, in the order the store returns them (by event time), from
//!   the oldest open window's start minus the clock skew to the latest read.
//!   Each window's consumptions are a slice of it, so a run reads the new
//!   consumptions once, not once per open window.
//!
//! A replay hands the audit the very records, in the very order, a whole
//! re-read would: what is kept is dropped as soon as the store may hold
//! something else.
//! * The flow's own ingest says the least event time it wrote per side
//!   ([`TraceWritten`]): a window whose end is past the least `Pub` time
//!   written is read again (and one holding transaction halves, after any
//!   `EndTransaction`); the timeline is cut back to the least consumption
//!   time written and read again from there.
//! * Anyone else's ingest (another replica held the flow for a while, an
//!   `audit --once` of it ran): the flow's trace cursors are not where this
//!   process left them, and everything is dropped. Trace rows are only ever
//!   written with their cursor, in one transaction.
//! * A failed run drops everything.
//!
//! Retention never deletes a row an open window reads (trace rows are kept
//! for every flow's window, deadline, skew and re-check horizon plus an
//! hour). Ledgers (`jsonl`, `sql`, `http`) can change anywhere at any time
//! and are re-read whole.

use std::collections::BTreeMap;

use super::model::{Consumed, Produced};
use super::partition::{consumed_bytes, produced_bytes};
use super::store::TraceWritten;

/// Runs without a timeline after one outgrew the budget: it is not read
/// twice every run while the traffic stays that high.
const COOL_OFF_RUNS: u32 = 10;

/// A window's produced messages, as the source streamed them.
#[derive(Debug, Clone)]
pub struct KeptProduced {
    /// Window end, epoch ms.
    end_ms: i64,
    /// The messages (rolled-back halves included: the audit counts them).
    pub messages: Vec<Produced>,
    /// Records with neither key nor message id.
    pub unauditable: u64,
    /// A message is a transaction half: an `EndTransaction` may change it.
    transactions: bool,
    bytes: u64,
}

impl KeptProduced {
    /// What a window's stream handed over.
    pub fn new(end_ms: i64, messages: Vec<Produced>, unauditable: u64) -> KeptProduced {
        let transactions = messages.iter().any(|m| m.transaction.is_some());
        let bytes = messages.iter().map(produced_bytes).sum();
        KeptProduced {
            end_ms,
            messages,
            unauditable,
            transactions,
            bytes,
        }
    }
}

/// The group's consumptions of `[from_ms, to_ms)`, in source order.
#[derive(Debug, Default)]
struct Timeline {
    from_ms: i64,
    to_ms: i64,
    records: Vec<Consumed>,
    bytes: u64,
}

impl Timeline {
    /// The first record at or after `at_ms` (records are in time order).
    fn index_of(&self, at_ms: i64) -> usize {
        self.records.partition_point(|c| c.time_ms < at_ms)
    }

    /// Keep only `[from_ms, to_ms)` of it.
    fn keep(&mut self, from_ms: i64, to_ms: i64) {
        let end = self.index_of(to_ms);
        for c in &self.records[end..] {
            self.bytes -= consumed_bytes(c);
        }
        self.records.truncate(end);
        self.to_ms = self.to_ms.min(to_ms);
        let start = self.index_of(from_ms);
        for c in &self.records[..start] {
            self.bytes -= consumed_bytes(c);
        }
        self.records.drain(..start);
        self.from_ms = self.from_ms.max(from_ms);
    }
}

/// The consumptions a run must read to complete the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// From, epoch ms.
    pub from_ms: i64,
    /// To, epoch ms.
    pub to_ms: i64,
    /// The timeline is empty: the read starts it.
    pub whole: bool,
}

/// One flow's kept records.
#[derive(Debug, Default)]
pub struct RecordCache {
    budget: u64,
    /// The flow's trace cursors as this process left them.
    positions: Option<Vec<(String, i32, i64)>>,
    produced: BTreeMap<i64, KeptProduced>,
    timeline: Option<Timeline>,
    /// Where this run's read of the timeline began: what is before it was
    /// read by earlier runs.
    fresh_from_ms: i64,
    cool_off: u32,
}

impl RecordCache {
    /// A cache of at most `budget` bytes (0 keeps nothing).
    pub fn new(budget: u64) -> RecordCache {
        RecordCache {
            budget,
            ..RecordCache::default()
        }
    }

    /// Whether it keeps anything at all.
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.produced.values().map(|p| p.bytes).sum::<u64>()
            + self.timeline.as_ref().map_or(0, |t| t.bytes)
    }

    /// Drop everything.
    pub fn clear(&mut self) {
        self.positions = None;
        self.produced.clear();
        self.timeline = None;
    }

    /// Before an ingest: the flow's cursors as the store has them. Not
    /// where this process left them: someone else wrote trace rows.
    pub fn check_positions(&mut self, positions: &[(String, i32, i64)]) {
        if self.positions.as_deref() != Some(positions) {
            self.clear();
        }
    }

    /// After this process's ingest: where it moved the cursors, and what
    /// it wrote, which is no longer whole in what is kept.
    pub fn ingested(
        &mut self,
        mut positions: Vec<(String, i32, i64)>,
        moved: &[(String, i32, i64)],
        written: TraceWritten,
    ) {
        for (broker, queue, offset) in moved {
            match positions
                .iter_mut()
                .find(|(b, q, _)| b == broker && q == queue)
            {
                Some(position) => position.2 = *offset,
                None => positions.push((broker.clone(), *queue, *offset)),
            }
        }
        positions.sort();
        self.positions = Some(positions);
        if let Some(from) = written.produced_from_ms {
            self.produced.retain(|_, p| p.end_ms <= from);
        }
        if written.transactions {
            self.produced.retain(|_, p| !p.transactions);
        }
        if let Some(from) = written.consumed_from_ms
            && let Some(timeline) = &mut self.timeline
        {
            if from <= timeline.from_ms {
                self.timeline = None;
            } else {
                let keep_from = timeline.from_ms;
                timeline.keep(keep_from, from);
            }
        }
    }

    /// Forget the windows other than `starts` (not audited this run, or
    /// final now).
    pub fn audit_only(&mut self, starts: &[i64]) {
        self.produced.retain(|start, _| starts.contains(start));
    }

    /// A window's kept produced messages.
    pub fn produced(&self, start_ms: i64) -> Option<&KeptProduced> {
        self.produced.get(&start_ms)
    }

    /// Keep a window's produced messages, if they fit beside what is kept.
    pub fn keep_produced(&mut self, start_ms: i64, kept: KeptProduced) {
        self.produced.remove(&start_ms);
        if self.bytes() + kept.bytes <= self.budget {
            self.produced.insert(start_ms, kept);
        }
    }

    /// What a run needing consumptions of `[from_ms, to_ms)` must read:
    /// `None` when the timeline already holds it (then trimmed to it) or is
    /// cooling off after outgrowing the budget.
    pub fn gap(&mut self, from_ms: i64, to_ms: i64) -> Option<Gap> {
        if !self.enabled() {
            return None;
        }
        if self.cool_off > 0 {
            self.cool_off -= 1;
            self.timeline = None;
            return None;
        }
        match &mut self.timeline {
            Some(t) if t.from_ms <= from_ms && from_ms <= t.to_ms => {
                t.keep(from_ms, t.to_ms);
                self.fresh_from_ms = t.to_ms;
                (t.to_ms < to_ms).then_some(Gap {
                    from_ms: t.to_ms,
                    to_ms,
                    whole: false,
                })
            }
            _ => {
                self.timeline = None;
                self.fresh_from_ms = from_ms;
                Some(Gap {
                    from_ms,
                    to_ms,
                    whole: true,
                })
            }
        }
    }

    /// The consumptions of a gap, read; `false` when the timeline would
    /// outgrow the budget (then nothing is kept and a cool-off begins).
    pub fn fill(&mut self, gap: Gap, records: Vec<Consumed>) -> bool {
        let added: u64 = records.iter().map(consumed_bytes).sum();
        let timeline = self.timeline.get_or_insert_with(|| Timeline {
            from_ms: gap.from_ms,
            to_ms: gap.from_ms,
            ..Timeline::default()
        });
        timeline.records.extend(records);
        timeline.bytes += added;
        timeline.to_ms = gap.to_ms;
        // The timeline comes first: it saves every window's read. Windows'
        // produced messages make room, the newest first (the oldest are
        // re-audited the most times before they are final).
        while self.bytes() > self.budget {
            let Some(newest) = self.produced.keys().next_back().copied() else {
                break;
            };
            self.produced.remove(&newest);
        }
        if self.bytes() > self.budget {
            self.outgrown();
            return false;
        }
        true
    }

    /// A timeline read stopped past the budget: none is kept, and none
    /// read for a while.
    pub fn outgrown(&mut self) {
        self.timeline = None;
        self.cool_off = COOL_OFF_RUNS;
    }

    /// The kept consumptions of `[from_ms, to_ms)`, in source order, and
    /// how many of them earlier runs read; `None` unless the timeline holds
    /// all of it.
    pub fn consumed(&self, from_ms: i64, to_ms: i64) -> Option<(&[Consumed], u64)> {
        let t = self.timeline.as_ref()?;
        if !(t.from_ms <= from_ms && to_ms <= t.to_ms) {
            return None;
        }
        let (start, end) = (t.index_of(from_ms), t.index_of(to_ms));
        let earlier = t.index_of(self.fresh_from_ms).clamp(start, end) - start;
        Some((&t.records[start..end], earlier as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumed(id: &str, time_ms: i64) -> Consumed {
        Consumed {
            msg_id: Some(id.to_string()),
            keys: vec![format!("k-{id}")],
            time_ms,
        }
    }

    fn produced(id: &str, time_ms: i64) -> Produced {
        Produced {
            msg_id: Some(id.to_string()),
            keys: vec![format!("k-{id}")],
            time_ms,
            offset_msg_id: None,
            tags: None,
            properties: None,
            status: crate::audit::model::SendStatus::SendOk,
            kind: crate::audit::model::MessageKind::Normal,
            transaction: None,
            batch: false,
        }
    }

    fn ids(records: &[Consumed]) -> Vec<&str> {
        records.iter().filter_map(|c| c.msg_id.as_deref()).collect()
    }

    fn at(positions: &[(&str, i32, i64)]) -> Vec<(String, i32, i64)> {
        positions
            .iter()
            .map(|(b, q, o)| (b.to_string(), *q, *o))
            .collect()
    }

    #[test]
    fn the_timeline_is_read_once_then_only_its_new_tail_and_sliced_per_window() {
        let mut cache = RecordCache::new(1 << 20);
        let gap = cache.gap(0, 100).expect("an empty timeline is read whole");
        assert_eq!((gap.from_ms, gap.to_ms, gap.whole), (0, 100, true));
        assert!(cache.fill(gap, vec![consumed("a", 10), consumed("b", 50)]));
        assert_eq!(cache.gap(0, 100), None, "nothing new to read");
        let gap = cache.gap(20, 150).expect("the tail");
        assert_eq!((gap.from_ms, gap.to_ms, gap.whole), (100, 150, false));
        assert!(cache.fill(gap, vec![consumed("c", 120)]));
        assert_eq!(ids(cache.consumed(20, 150).expect("kept").0), ["b", "c"]);
        assert_eq!(
            cache.consumed(20, 150).expect("kept").1,
            1,
            "b was read before"
        );
        assert_eq!(ids(cache.consumed(60, 121).expect("kept").0), ["c"]);
        assert_eq!(
            cache.consumed(60, 121).expect("kept").1,
            0,
            "c is this run's"
        );
        assert_eq!(cache.gap(20, 150), None);
        assert_eq!(
            cache.consumed(20, 150).expect("kept").1,
            2,
            "both read before"
        );
        assert_eq!(cache.consumed(10, 150), None, "trimmed to what runs need");
        assert_eq!(cache.consumed(20, 151), None, "never read past its end");
        let gap = cache.gap(5, 150).expect("an earlier start: read whole");
        assert!(gap.whole);
    }

    #[test]
    fn an_ingest_cuts_back_what_it_wrote_and_someone_elses_drops_all() {
        let mut cache = RecordCache::new(1 << 20);
        cache.check_positions(&at(&[("b", 0, 5)]));
        cache.ingested(
            at(&[("b", 0, 5)]),
            &at(&[("b", 0, 9), ("b", 1, 2)]),
            TraceWritten::default(),
        );
        let gap = cache.gap(0, 100).expect("kept");
        cache.fill(
            gap,
            vec![consumed("a", 10), consumed("b", 60), consumed("c", 90)],
        );
        cache.keep_produced(0, KeptProduced::new(60, vec![produced("a", 5)], 0));
        cache.keep_produced(60, KeptProduced::new(120, vec![produced("b", 65)], 0));
        // Our own ingest wrote a Pub at 70 and a consumption at 60.
        cache.check_positions(&at(&[("b", 0, 9), ("b", 1, 2)]));
        cache.ingested(
            at(&[("b", 0, 9), ("b", 1, 2)]),
            &at(&[("b", 0, 12)]),
            TraceWritten {
                produced_from_ms: Some(70),
                consumed_from_ms: Some(60),
                transactions: false,
            },
        );
        assert!(cache.produced(0).is_some(), "ends before the Pub written");
        assert!(cache.produced(60).is_none(), "holds the Pub's time");
        assert_eq!(ids(cache.consumed(0, 60).expect("kept").0), ["a"]);
        assert_eq!(cache.consumed(0, 61), None);
        let gap = cache.gap(0, 100).expect("kept");
        assert_eq!((gap.from_ms, gap.whole), (60, false));
        // Someone else moved a cursor: nothing kept is trusted.
        cache.check_positions(&at(&[("b", 0, 13), ("b", 1, 2)]));
        assert!(cache.produced(0).is_none());
        assert_eq!(cache.consumed(0, 10), None);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn transactions_drop_only_windows_with_halves_and_the_budget_holds() {
        let mut cache = RecordCache::new(1 << 20);
        let mut half = produced("h", 5);
        half.transaction = Some(crate::audit::model::TxState::Unknown);
        cache.keep_produced(0, KeptProduced::new(60, vec![half], 0));
        cache.keep_produced(60, KeptProduced::new(120, vec![produced("p", 65)], 0));
        cache.ingested(
            Vec::new(),
            &[],
            TraceWritten {
                transactions: true,
                ..TraceWritten::default()
            },
        );
        assert!(cache.produced(0).is_none());
        assert!(cache.produced(60).is_some());
        // A timeline beyond the budget is not kept, and not read again for
        // a while.
        let mut small = RecordCache::new(300);
        small.keep_produced(0, KeptProduced::new(60, vec![produced("p", 5)], 0));
        let gap = small.gap(0, 100).expect("kept");
        let many: Vec<Consumed> = (0..10).map(|i| consumed(&i.to_string(), i)).collect();
        assert!(!small.fill(gap, many));
        assert_eq!(small.bytes(), 0, "the produced entry made room first");
        assert_eq!(small.gap(0, 100), None, "cooling off");
        assert!(small.bytes() <= 300);
    }
}
