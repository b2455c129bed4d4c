//! What the probe knows of one queue: the messages it sent and the broker
//! acknowledged, which of them it has read back, and the verdicts — a pure
//! state machine, fed by the probe's sends and pulls, so every rule is
//! tested without a broker.
//!
//! * An acknowledged message read back is **received** (latency = read time
//!   − send time); one read twice is **duplicated**; one read after a later
//!   sequence number is **reordered**.
//! * An acknowledged message not read back by its deadline, on a queue that
//!   was just read to its end, is **lost** (stage `store`) when the reader
//!   passed its offset without finding it; otherwise it is **unreadable**
//!   (stored, but a pull does not return it: not dispatched, or a queue that
//!   lost its tail and is not refilled yet) and judged again next time.
//! * Read messages are kept for the verification window: a verification
//!   (after the broker was unreachable, after its queue went backwards, and
//!   periodically) reads them again, and one no longer at its offset is a
//!   `store` loss — the check only a probe can make: everything
//!   acknowledged before a restart is still readable after it.
//!
//! Nothing is judged while the queue cannot be read: a dead broker's
//! acknowledged messages stay pending, never lost for being unreachable.

use std::collections::{BTreeMap, VecDeque};

use crate::admin::SendStatus;

/// The body of a probe message: `mqaudit-probe <run> <seq> <sent_ms>`.
/// The run tells this process's messages from an earlier one's.
pub fn body(run: &str, seq: u64, sent_ms: i64) -> String {
    format!("mqaudit-probe {run} {seq} {sent_ms}")
}

/// A probe body's (run, seq, sent_ms); `None` for anything else.
pub fn parse_body(body: &[u8]) -> Option<(&str, u64, i64)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.split(' ');
    if parts.next()? != "mqaudit-probe" {
        return None;
    }
    let run = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_ms = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((run, seq, sent_ms))
}

/// An acknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acked {
    seq: u64,
    offset: i64,
    sent_ms: i64,
    status: SendStatus,
}

/// A store loss: an acknowledged message no longer readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// Sequence number.
    pub seq: u64,
    /// Offset the broker acknowledged.
    pub offset: i64,
    /// When it was sent, epoch ms.
    pub sent_ms: i64,
    /// What the broker answered.
    pub status: SendStatus,
    /// It had been read back before (found missing by a verification).
    pub was_read: bool,
}

/// What reading a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// An acknowledged message, first read: its latency, ms.
    Received {
        /// Read time − send time.
        latency_ms: i64,
        /// A later sequence number was read before it.
        reordered: bool,
    },
    /// Read again.
    Duplicated,
    /// Not this run's (an earlier process, another probe), or a message
    /// whose send was not acknowledged (a timed-out send that was stored).
    Foreign,
}

/// One queue's probe state.
#[derive(Debug, Clone, Default)]
pub struct QueueLedger {
    /// Acknowledged, not yet read, by sequence number.
    pending: BTreeMap<u64, Acked>,
    /// Read back, oldest first, kept for verification.
    read: VecDeque<Acked>,
    /// Highest sequence number read.
    highest_read: Option<u64>,
    /// Where the reader continues.
    next_offset: Option<i64>,
    /// Highest acknowledged offset (a queue below it went backwards).
    highest_acked_offset: Option<i64>,
    /// Pending past the deadline but still at a readable offset.
    unreadable: usize,
}

impl QueueLedger {
    /// Where reading continues; `None` before the queue's start is known.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// Start (or move) reading at `offset`.
    pub fn seek(&mut self, offset: i64) {
        self.next_offset = Some(offset);
    }

    /// The lowest offset of an acknowledged message not read yet.
    pub fn lowest_pending_offset(&self) -> Option<i64> {
        self.pending.values().map(|a| a.offset).min()
    }

    /// Acknowledged messages not read yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Pending past their deadline, not returned by a pull yet.
    pub fn unreadable(&self) -> usize {
        self.unreadable
    }

    /// Messages kept for verification.
    pub fn kept(&self) -> usize {
        self.read.len()
    }

    /// The broker acknowledged message `seq` at `offset`.
    pub fn acked(&mut self, seq: u64, offset: i64, sent_ms: i64, status: SendStatus) {
        self.pending.insert(
            seq,
            Acked {
                seq,
                offset,
                sent_ms,
                status,
            },
        );
        self.highest_acked_offset =
            Some(self.highest_acked_offset.map_or(offset, |h| h.max(offset)));
    }

    /// A message of this run read at `offset`, sent as `seq`, at `now_ms`.
    pub fn read(&mut self, seq: u64, offset: i64, now_ms: i64) -> Read {
        self.next_offset = Some(self.next_offset.map_or(offset + 1, |n| n.max(offset + 1)));
        let Some(acked) = self.pending.remove(&seq) else {
            return if self.read.iter().any(|r| r.seq == seq) {
                Read::Duplicated
            } else {
                Read::Foreign
            };
        };
        let reordered = self.highest_read.is_some_and(|h| h > seq);
        self.highest_read = Some(self.highest_read.map_or(seq, |h| h.max(seq)));
        self.read.push_back(acked);
        Read::Received {
            latency_ms: (now_ms - acked.sent_ms).max(0),
            reordered,
        }
    }

    /// Something at `offset` that is not this run's message (moves the
    /// reader past it).
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = Some(self.next_offset.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// True when the queue (ending at `max_offset`) no longer reaches an
    /// offset the broker acknowledged: it went backwards (a restart lost
    /// its tail), and what was read there must be verified.
    pub fn went_backwards(&self, max_offset: i64) -> bool {
        self.highest_acked_offset.is_some_and(|h| max_offset <= h)
    }

    /// Judge pending messages sent before `deadline_ms`, the queue having
    /// just been read to its end; returns the losses.
    pub fn judge(&mut self, deadline_ms: i64) -> Vec<Loss> {
        let next = self.next_offset.unwrap_or(0);
        let mut lost = Vec::new();
        let mut unreadable = 0;
        self.pending.retain(|_, a| {
            if a.sent_ms >= deadline_ms {
                return true;
            }
            // Passed over: the reader read past its offset without it. A
            // queue that does not reach its offset yet is only slow (the
            // broker dispatches to consume queues asynchronously); one that
            // lost its tail is refilled by later sends, and passed over then.
            if a.offset < next {
                lost.push(Loss {
                    seq: a.seq,
                    offset: a.offset,
                    sent_ms: a.sent_ms,
                    status: a.status,
                    was_read: false,
                });
                false
            } else {
                unreadable += 1;
                true
            }
        });
        self.unreadable = unreadable;
        self.rewatermark();
        lost
    }

    /// The highest acknowledged offset still held (pending or kept): after
    /// a verification or a judgement, a queue is "backwards" again only if
    /// it loses more.
    fn rewatermark(&mut self) {
        self.highest_acked_offset = self
            .pending
            .values()
            .chain(self.read.iter())
            .map(|a| a.offset)
            .max();
    }

    /// Offsets of the kept read messages to verify, oldest first.
    pub fn to_verify(&self) -> Vec<(i64, u64)> {
        self.read.iter().map(|r| (r.offset, r.seq)).collect()
    }

    /// The verification's findings: `found` holds the (offset, seq) pairs
    /// read again where they were. Every other kept message is lost; the
    /// verified ones stay kept.
    pub fn verified(&mut self, found: &[(i64, u64)]) -> Vec<Loss> {
        let mut lost = Vec::new();
        self.read.retain(|r| {
            let here = found.contains(&(r.offset, r.seq));
            if !here {
                lost.push(Loss {
                    seq: r.seq,
                    offset: r.offset,
                    sent_ms: r.sent_ms,
                    status: r.status,
                    was_read: true,
                });
            }
            here
        });
        self.rewatermark();
        lost
    }

    /// Forget read messages sent before `cutoff_ms` (out of the window).
    pub fn forget_before(&mut self, cutoff_ms: i64) {
        while self.read.front().is_some_and(|r| r.sent_ms < cutoff_ms) {
            self.read.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_anything_else_is_not_a_probe() {
        let b = body("r1", 42, 1_000);
        assert_eq!(parse_body(b.as_bytes()), Some(("r1", 42, 1_000)));
        for other in [
            &b"hello"[..],
            b"mqaudit-probe r1 x 1",
            b"mqaudit-probe r1 1 2 3",
            &[0xff, 0xfe],
        ] {
            assert_eq!(parse_body(other), None);
        }
    }

    #[test]
    fn received_duplicated_and_reordered_are_told_apart() {
        let mut q = QueueLedger::default();
        q.seek(10);
        for seq in 1..=3 {
            q.acked(seq, 9 + seq as i64, 1_000, SendStatus::Ok);
        }
        assert_eq!(
            q.read(2, 11, 1_250),
            Read::Received {
                latency_ms: 250,
                reordered: false
            }
        );
        assert_eq!(
            q.read(1, 10, 1_300),
            Read::Received {
                latency_ms: 300,
                reordered: true
            }
        );
        assert_eq!(q.read(2, 11, 1_400), Read::Duplicated);
        assert_eq!(q.read(99, 12, 1_400), Read::Foreign);
        assert_eq!(q.pending(), 1);
        assert_eq!(q.next_offset(), Some(13));
    }

    #[test]
    fn a_message_passed_over_is_lost_one_merely_unread_is_unreadable() {
        let mut q = QueueLedger::default();
        q.seek(0);
        q.acked(1, 0, 1_000, SendStatus::Ok);
        q.acked(2, 1, 1_000, SendStatus::SlaveNotAvailable);
        q.acked(3, 2, 1_000, SendStatus::Ok);
        q.acked(4, 3, 9_000, SendStatus::Ok);
        // Offset 0 held something else; offsets 1 and 2 were not returned
        // (offset 2 not even dispatched yet).
        q.skip(0);
        let lost = q.judge(5_000);
        assert_eq!(lost.iter().map(|l| l.seq).collect::<Vec<_>>(), [1]);
        assert_eq!(q.unreadable(), 2, "seq 2 and 3: stored, not returned");
        assert_eq!(q.pending(), 3, "judged again; seq 4 before its deadline");
        // A restart lost offset 2: a later send is stored there and read.
        q.acked(5, 2, 9_500, SendStatus::Ok);
        q.read(5, 2, 9_600);
        let lost = q.judge(5_000);
        assert_eq!(
            lost.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [2, 3],
            "passed over"
        );
    }

    #[test]
    fn nothing_is_judged_before_its_deadline() {
        let mut q = QueueLedger::default();
        q.seek(0);
        q.acked(1, 0, 10_000, SendStatus::Ok);
        assert!(q.judge(5_000).is_empty());
        assert_eq!(q.pending(), 1);
    }

    #[test]
    fn a_verification_finds_read_messages_that_are_gone() {
        let mut q = QueueLedger::default();
        q.seek(0);
        for seq in 0..4 {
            q.acked(seq, seq as i64, 1_000 + seq as i64, SendStatus::Ok);
            q.read(seq, seq as i64, 2_000);
        }
        assert!(q.went_backwards(2));
        assert!(!q.went_backwards(4));
        assert_eq!(q.to_verify(), [(0, 0), (1, 1), (2, 2), (3, 3)]);
        let lost = q.verified(&[(0, 0), (1, 1)]);
        assert_eq!(
            lost.iter().map(|l| (l.seq, l.was_read)).collect::<Vec<_>>(),
            [(2, true), (3, true)]
        );
        assert_eq!(q.kept(), 2);
        q.forget_before(1_001);
        assert_eq!(q.kept(), 1);
    }
}
