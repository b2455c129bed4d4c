//! A window's reconciliation in bounded memory: the records a window holds
//! beyond `[audit] memory_budget` go to spill files, are hash-partitioned by
//! the identity that matches them, and are reconciled partition by
//! partition. A large window that fits is settled the same way in memory
//! ([`settle`]): in shares small enough for a core's caches, on every core.
//!
//! What comes out is the window reduced to what needs a verdict: every
//! produced message not consumed exactly once (missing, duplicated), every
//! batch member (matched only once its stored id is learned), the
//! consumptions those matched, and every consumption that matched nothing.
//! A message consumed exactly once is settled and only counted. Reconciling
//! the reduced window in memory gives the same outcome as the whole window:
//! a settled message and its one consumption take no part in any other
//! match.
//!
//! Partitioning is exact only when every record is found in one partition
//! by the identity its match goes through: all records carry a reliable
//! message id (trace flows, ledgers with ids), or all carry exactly one key
//! (key ledgers). A window of neither shape that exceeds the budget is
//! reconciled whole, in memory, and says so ([`Reduced::over_budget`]):
//! a correct verdict over budget beats a wrong one within it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::model::{Consumed, MessageKind, Produced, SendStatus, TxState};
use super::reconcile::Reconciler;

/// Bytes one record costs in memory beyond its strings: the struct, the
/// reconciler's index entries, links and count (measured on the bench's
/// 10M-key window: about 200 bytes a record all told).
const RECORD_OVERHEAD: u64 = 160;
/// Spill file buffers.
const IO_BUFFER: usize = 1 << 16;
/// Windows held in memory with at least this many produced messages are
/// settled in shares, on every core, before their verdicts (below it, the
/// shares and threads cost more than they save).
const SETTLE_FIRST: usize = 1 << 16;

/// How a window's records reach their partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// By message id: every record has one and no produced id is a batch
    /// member's (which the broker may have stored under another).
    ById,
    /// By the one key every record carries.
    ByKey,
}

/// What the records seen so far allow.
#[derive(Debug, Clone, Copy)]
struct Shape {
    all_ids: bool,
    one_key: bool,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            all_ids: true,
            one_key: true,
        }
    }
}

impl Shape {
    fn produced(&mut self, m: &Produced) {
        self.all_ids &= m.msg_id.is_some() && !m.batch;
        self.one_key &= m.keys.len() == 1;
    }

    fn consumed(&mut self, c: &Consumed) {
        self.all_ids &= c.msg_id.is_some();
        self.one_key &= c.keys.len() == 1;
    }

    fn split(self) -> Option<Split> {
        if self.all_ids {
            Some(Split::ById)
        } else if self.one_key {
            Some(Split::ByKey)
        } else {
            None
        }
    }
}

/// A window reduced to what needs a verdict.
#[derive(Debug, Default)]
pub struct Reduced {
    /// Produced messages not settled, in the order they were added.
    pub produced: Vec<Produced>,
    /// Their consumptions and every unmatched one.
    pub consumed: Vec<Consumed>,
    /// Produced messages consumed exactly once, dropped with their
    /// consumption.
    pub settled: u64,
    /// Partitions reconciled (0: the window fit the budget, nothing
    /// spilled).
    pub partitions: usize,
    /// The window exceeded the budget but could not be partitioned (see
    /// the module doc): it was reconciled whole.
    pub over_budget: bool,
    /// Shares a window held in memory was settled in ([`settle`]; 0: it
    /// was too small to be worth it, or it was spilled).
    pub shares: usize,
}

/// One side's records, in memory until the budget is reached, then in a
/// spill file.
struct Side<T> {
    memory: Vec<T>,
    file: Option<BufWriter<File>>,
    count: u64,
}

impl<T> Default for Side<T> {
    fn default() -> Side<T> {
        Side {
            memory: Vec::new(),
            file: None,
            count: 0,
        }
    }
}

/// Collects a window's records within a memory budget.
pub struct WindowSpill {
    budget: u64,
    dir: PathBuf,
    held: u64,
    shape: Shape,
    produced: Side<Produced>,
    consumed: Side<Consumed>,
}

/// Spill directories of this process are told apart by a counter.
static SPILLS: AtomicU64 = AtomicU64::new(0);

impl WindowSpill {
    /// A spill that holds up to `budget` bytes of records in memory and
    /// writes the rest under `parent` (in a directory of its own, removed
    /// when it is dropped).
    pub fn new(budget: u64, parent: &Path) -> WindowSpill {
        let n = SPILLS.fetch_add(1, Ordering::Relaxed);
        WindowSpill {
            budget: budget.max(1 << 20),
            dir: parent.join(format!("mqaudit-spill-{}-{n}", std::process::id())),
            held: 0,
            shape: Shape::default(),
            produced: Side::default(),
            consumed: Side::default(),
        }
    }

    /// Remove what spills of dead processes left under `parent` (a
    /// `kill -9` mid-window): their directories are named by process id.
    fn sweep(parent: &Path) {
        let Ok(entries) = std::fs::read_dir(parent) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("mqaudit-spill-"))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let alive = Path::new(&format!("/proc/{pid}")).exists();
            if pid != std::process::id() && !alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// True once records went to disk.
    pub fn spilled(&self) -> bool {
        self.produced.file.is_some()
    }

    /// Add a produced message.
    ///
    /// # Errors
    /// The spill file could not be written.
    pub fn produced(&mut self, m: Produced) -> io::Result<()> {
        self.shape.produced(&m);
        self.produced.count += 1;
        if let Some(file) = &mut self.produced.file {
            return encode_produced(file, &m);
        }
        self.held += produced_bytes(&m);
        self.produced.memory.push(m);
        self.spill_if_over()
    }

    /// Add a consumption.
    ///
    /// # Errors
    /// The spill file could not be written.
    pub fn consumed(&mut self, c: Consumed) -> io::Result<()> {
        self.shape.consumed(&c);
        self.consumed.count += 1;
        if let Some(file) = &mut self.consumed.file {
            return encode_consumed(file, &c);
        }
        self.held += consumed_bytes(&c);
        self.consumed.memory.push(c);
        self.spill_if_over()
    }

    /// A quarter of the budget for the records as they arrive (growing
    /// vectors, the allocator's slack and the reconciler's index take the
    /// rest).
    fn spill_if_over(&mut self) -> io::Result<()> {
        if self.held <= self.budget / 4 {
            return Ok(());
        }
        static SWEPT: std::sync::Once = std::sync::Once::new();
        if let Some(parent) = self.dir.parent() {
            SWEPT.call_once(|| WindowSpill::sweep(parent));
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut produced = writer(&self.dir.join("produced"))?;
        for m in self.produced.memory.drain(..) {
            encode_produced(&mut produced, &m)?;
        }
        let mut consumed = writer(&self.dir.join("consumed"))?;
        for c in self.consumed.memory.drain(..) {
            encode_consumed(&mut consumed, &c)?;
        }
        self.produced.memory = Vec::new();
        self.consumed.memory = Vec::new();
        self.produced.file = Some(produced);
        self.consumed.file = Some(consumed);
        self.held = 0;
        Ok(())
    }

    /// Reduce the window.
    ///
    /// # Errors
    /// A spill file could not be written or read back.
    pub fn finish(mut self) -> io::Result<Reduced> {
        let (Some(produced), Some(consumed)) =
            (self.produced.file.take(), self.consumed.file.take())
        else {
            let produced = std::mem::take(&mut self.produced.memory);
            let consumed = std::mem::take(&mut self.consumed.memory);
            return Ok(match self.shape.split() {
                Some(split) if produced.len() >= SETTLE_FIRST => {
                    settle(produced, consumed, split, threads())
                }
                _ => Reduced {
                    produced,
                    consumed,
                    ..Reduced::default()
                },
            });
        };
        finish_file(produced)?;
        finish_file(consumed)?;
        let Some(split) = self.shape.split() else {
            return self.whole();
        };
        let threads = threads();
        let parts = self.partitions(threads);
        let sizes = self.partition(split, parts)?;
        // Partitions are reduced `threads` at a time (the budget was split
        // for that), each taken by the next free thread, and put back
        // together in partition order.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let pieces = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let part = next.fetch_add(1, Ordering::Relaxed);
                            if part >= parts {
                                return Ok(done);
                            }
                            let mut piece = Reduced::default();
                            self.reduce_part(part, sizes[part], &mut piece)?;
                            done.push((part, piece));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("partition thread panicked")))
                })
                .collect::<io::Result<Vec<Vec<(usize, Reduced)>>>>()
        })?;
        let mut pieces: Vec<(usize, Reduced)> = pieces.into_iter().flatten().collect();
        pieces.sort_by_key(|(part, _)| *part);
        let mut reduced = Reduced {
            partitions: parts,
            ..Reduced::default()
        };
        for (_, piece) in pieces {
            reduced.produced.extend(piece.produced);
            reduced.consumed.extend(piece.consumed);
            reduced.settled += piece.settled;
        }
        Ok(reduced)
    }

    /// Partitions such that one partition's produced side and index use
    /// at most a third of the budget (the allocator keeps some of the
    /// previous partition's memory while the next one loads).
    fn partitions(&self, threads: usize) -> usize {
        let produced = std::fs::metadata(self.dir.join("produced")).map_or(0, |m| m.len());
        // The encoded size undercounts memory by the per-record overhead.
        let bytes = produced + self.produced.count * RECORD_OVERHEAD;
        let per_part = (self.budget / 3 / threads as u64).max(1);
        (bytes.div_ceil(per_part) as usize).clamp(1, 4096)
    }

    /// Write each spilled record to its partition's file.
    fn partition(&self, split: Split, parts: usize) -> io::Result<Vec<usize>> {
        // Both sides at once, each on a thread of its own.
        std::thread::scope(|scope| {
            let consumed = scope.spawn(|| self.partition_consumed(split, parts));
            let produced = self.partition_produced(split, parts);
            let consumed = consumed
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("partition thread panicked")));
            consumed.and(produced)
        })
    }

    /// The partition files' buffers share an eighth of the budget.
    fn part_buffer(&self, parts: usize) -> usize {
        usize::try_from(self.budget / 8 / parts as u64 / 2)
            .unwrap_or(IO_BUFFER)
            .clamp(4096, IO_BUFFER)
    }

    fn partition_produced(&self, split: Split, parts: usize) -> io::Result<Vec<usize>> {
        let route = |hash: u64| part_of(hash, parts);
        let mut sizes = vec![0; parts];
        let buffer = self.part_buffer(parts);
        let mut files = (0..parts)
            .map(|p| writer_with(&self.dir.join(format!("p{p}")), buffer))
            .collect::<io::Result<Vec<_>>>()?;
        let mut input = reader(&self.dir.join("produced"))?;
        while let Some(m) = decode_produced(&mut input)? {
            let part = route(route_hash(identity(split, m.msg_id.as_deref(), &m.keys)));
            sizes[part] += 1;
            encode_produced(&mut files[part], &m)?;
        }
        for file in files {
            finish_file(file)?;
        }
        std::fs::remove_file(self.dir.join("produced"))?;
        Ok(sizes)
    }

    fn partition_consumed(&self, split: Split, parts: usize) -> io::Result<()> {
        let route = |hash: u64| part_of(hash, parts);
        let buffer = self.part_buffer(parts);
        let mut files = (0..parts)
            .map(|p| writer_with(&self.dir.join(format!("c{p}")), buffer))
            .collect::<io::Result<Vec<_>>>()?;
        let mut input = reader(&self.dir.join("consumed"))?;
        while let Some(c) = decode_consumed(&mut input)? {
            let part = route(route_hash(identity(split, c.msg_id.as_deref(), &c.keys)));
            encode_consumed(&mut files[part], &c)?;
        }
        for file in files {
            finish_file(file)?;
        }
        std::fs::remove_file(self.dir.join("consumed"))
    }

    /// Reconcile one partition; keep what is not settled.
    fn reduce_part(&self, part: usize, size: usize, reduced: &mut Reduced) -> io::Result<()> {
        let mut produced = Vec::with_capacity(size);
        let mut input = reader(&self.dir.join(format!("p{part}")))?;
        while let Some(m) = decode_produced(&mut input)? {
            produced.push(m);
        }
        // Consumptions are streamed once. Kept at once: those matching
        // nothing, and every one after a message's first (it is then
        // duplicated). A message's first is only located; it is read back
        // at the end for the messages kept (few: missing ones have none).
        let mut reconciler = Reconciler::new(&produced);
        let path = self.dir.join(format!("c{part}"));
        let mut first = vec![u64::MAX; produced.len()];
        let mut kept: Vec<(u64, Consumed)> = Vec::new();
        let mut input = Counting::new(reader(&path)?);
        loop {
            let at = input.read;
            let Some(c) = decode_consumed(&mut input)? else {
                break;
            };
            match reconciler.consume(&c) {
                None => kept.push((at, c)),
                Some(i) if first[i] == u64::MAX => first[i] = at,
                Some(_) => kept.push((at, c)),
            }
        }
        let counts = reconciler.counts().to_vec();
        drop(reconciler);
        let mut firsts: Vec<u64> = (0..produced.len())
            .filter(|&i| (counts[i] != 1 || produced[i].batch) && first[i] != u64::MAX)
            .map(|i| first[i])
            .collect();
        drop(first);
        firsts.sort_unstable();
        let mut input = reader(&path)?;
        for at in firsts {
            input.seek(io::SeekFrom::Start(at))?;
            let c = decode_consumed(&mut input)?.ok_or_else(|| corrupt("offset"))?;
            kept.push((at, c));
        }
        // In the order they were read.
        kept.sort_unstable_by_key(|(at, _)| *at);
        reduced.consumed.extend(kept.into_iter().map(|(_, c)| c));
        for (i, m) in produced.into_iter().enumerate() {
            if counts[i] != 1 || m.batch {
                reduced.produced.push(m);
            } else {
                reduced.settled += 1;
            }
        }
        std::fs::remove_file(self.dir.join(format!("p{part}")))?;
        std::fs::remove_file(path)
    }

    /// A window that cannot be partitioned, read back whole.
    fn whole(&self) -> io::Result<Reduced> {
        let mut reduced = Reduced {
            partitions: 1,
            over_budget: true,
            ..Reduced::default()
        };
        let mut input = reader(&self.dir.join("produced"))?;
        while let Some(m) = decode_produced(&mut input)? {
            reduced.produced.push(m);
        }
        let mut input = reader(&self.dir.join("consumed"))?;
        while let Some(c) = decode_consumed(&mut input)? {
            reduced.consumed.push(c);
        }
        Ok(reduced)
    }
}

impl Drop for WindowSpill {
    fn drop(&mut self) {
        // Best effort: a directory left behind by a crash holds only this
        // window's copy of records its sources still have.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Produced messages a share of a window settled in memory aims at: its
/// index (a few MiB) stays in the core's caches, where one index over the
/// whole window would miss them on every lookup.
const SHARE: usize = 1 << 16;

/// A window held in memory, settled on `threads` threads: the identities
/// are routed to shares, each share's records reconciled by the next free
/// thread, and what needs a verdict kept (as [`WindowSpill::finish`] does
/// partition by partition). What is kept stays in the order it came.
pub fn settle(
    produced: Vec<Produced>,
    consumed: Vec<Consumed>,
    split: Split,
    threads: usize,
) -> Reduced {
    let threads = threads.clamp(1, 64);
    let shares = produced.len().div_ceil(SHARE).clamp(threads, 4096);
    let produced_shares = route_all(&produced, threads, shares, |m| {
        identity(split, m.msg_id.as_deref(), &m.keys)
    });
    let consumed_shares = route_all(&consumed, threads, shares, |c| {
        identity(split, c.msg_id.as_deref(), &c.keys)
    });
    // Per share: the produced messages kept and the consumptions kept.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let kept: Vec<(Vec<u32>, Vec<u32>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (produced, consumed) = (&produced, &consumed);
                let (produced_shares, consumed_shares, next) =
                    (&produced_shares, &consumed_shares, &next);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let s = next.fetch_add(1, Ordering::Relaxed);
                        if s >= shares {
                            return done;
                        }
                        done.push(settle_share(
                            produced,
                            consumed,
                            &produced_shares[s],
                            &consumed_shares[s],
                        ));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    drop((produced_shares, consumed_shares));
    let mut keep_produced = vec![false; produced.len()];
    let mut keep_consumed = vec![false; consumed.len()];
    for (messages, consumptions) in &kept {
        for &i in messages {
            keep_produced[i as usize] = true;
        }
        for &i in consumptions {
            keep_consumed[i as usize] = true;
        }
    }
    drop(kept);
    let total = produced.len() as u64;
    let produced: Vec<Produced> = produced
        .into_iter()
        .zip(keep_produced)
        .filter_map(|(m, keep)| keep.then_some(m))
        .collect();
    let consumed: Vec<Consumed> = consumed
        .into_iter()
        .zip(keep_consumed)
        .filter_map(|(c, keep)| keep.then_some(c))
        .collect();
    Reduced {
        settled: total - produced.len() as u64,
        produced,
        consumed,
        partitions: 0,
        over_budget: false,
        shares,
    }
}

/// Route every record to one of `shares` by its identity: the indices of
/// each share, ascending. Hashed on `threads` threads, a chunk each.
fn route_all<T: Sync>(
    records: &[T],
    threads: usize,
    shares: usize,
    identity_of: impl Fn(&T) -> &str + Sync,
) -> Vec<Vec<u32>> {
    let chunk = records.len().div_ceil(threads).max(1);
    let routed: Vec<Vec<Vec<u32>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = records
            .chunks(chunk)
            .enumerate()
            .map(|(c, records)| {
                let identity_of = &identity_of;
                scope.spawn(move || {
                    let mut out = vec![Vec::with_capacity(records.len() / shares + 1); shares];
                    for (i, r) in records.iter().enumerate() {
                        let at = (c * chunk + i) as u32;
                        out[part_of(route_hash(identity_of(r)), shares)].push(at);
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    (0..shares)
        .map(|s| {
            routed
                .iter()
                .flat_map(|chunk| chunk[s].iter().copied())
                .collect()
        })
        .collect()
}

/// Reconcile one share: the produced messages it keeps (not consumed
/// exactly once, or batch members) and the consumptions it keeps (those
/// that matched nothing, and every consumption of a kept message).
fn settle_share(
    produced: &[Produced],
    consumed: &[Consumed],
    members: &[u32],
    share: &[u32],
) -> (Vec<u32>, Vec<u32>) {
    const NOTHING: u32 = u32::MAX;
    let mut reconciler = Reconciler::for_members(produced, members);
    // By position in the share's members.
    let matched: Vec<u32> = share
        .iter()
        .map(|&c| {
            reconciler
                .consume(&consumed[c as usize])
                .map_or(NOTHING, |at| at as u32)
        })
        .collect();
    let counts = reconciler.counts();
    let kept = |at: u32| counts[at as usize] != 1 || produced[members[at as usize] as usize].batch;
    let messages = (0..members.len() as u32)
        .filter(|&at| kept(at))
        .map(|at| members[at as usize])
        .collect();
    let consumptions = share
        .iter()
        .zip(matched)
        .filter(|&(_, at)| at == NOTHING || kept(at))
        .map(|(&c, _)| c)
        .collect();
    (messages, consumptions)
}

/// The hash records are routed by: FNV-1a, a few cycles a byte where the
/// reconciler's SipHash takes tens, and independent of it (the
/// reconciler's index never sees all its keys alike in some bits). Only
/// ever compared within one process: nothing routed is kept.
fn route_hash(identity: &str) -> u64 {
    identity.bytes().fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The partition of a hash, from its high bits (FNV-1a's low bits mix
/// least).
fn part_of(hash: u64, parts: usize) -> usize {
    (((hash >> 32) * parts as u64) >> 32) as usize
}

/// The identity a record is routed by.
fn identity<'a>(split: Split, msg_id: Option<&'a str>, keys: &'a [String]) -> &'a str {
    match split {
        Split::ById => msg_id.unwrap_or(""),
        Split::ByKey => keys.first().map_or("", String::as_str),
    }
}

/// Bytes a produced record holds in memory, estimated.
pub(crate) fn produced_bytes(m: &Produced) -> u64 {
    let strings = m.msg_id.as_ref().map_or(0, String::len)
        + m.keys.iter().map(|k| k.len() + 24).sum::<usize>()
        + m.offset_msg_id.as_ref().map_or(0, String::len)
        + m.tags.as_ref().map_or(0, String::len)
        + m.properties
            .as_ref()
            .map_or(0, |p| p.iter().map(|(k, v)| k.len() + v.len() + 64).sum());
    strings as u64 + std::mem::size_of::<Produced>() as u64 + RECORD_OVERHEAD
}

/// Bytes a consumption holds in memory, estimated.
pub(crate) fn consumed_bytes(c: &Consumed) -> u64 {
    let strings = c.msg_id.as_ref().map_or(0, String::len)
        + c.keys.iter().map(|k| k.len() + 24).sum::<usize>();
    strings as u64 + std::mem::size_of::<Consumed>() as u64
}

/// A reader that counts the bytes read through it (a record's offset).
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R> Counting<R> {
    fn new(inner: R) -> Counting<R> {
        Counting { inner, read: 0 }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

fn writer(path: &Path) -> io::Result<BufWriter<File>> {
    writer_with(path, IO_BUFFER)
}

fn writer_with(path: &Path, buffer: usize) -> io::Result<BufWriter<File>> {
    Ok(BufWriter::with_capacity(buffer, File::create(path)?))
}

/// Threads reducing partitions at once: the cores there are, at most 8.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

fn reader(path: &Path) -> io::Result<BufReader<File>> {
    Ok(BufReader::with_capacity(IO_BUFFER, File::open(path)?))
}

fn finish_file(mut file: BufWriter<File>) -> io::Result<()> {
    file.flush()
}

// The spill encoding: little-endian lengths and integers, strings as
// length + bytes, `None` as length u32::MAX. Private to this process and
// this window: no versioning needed.

const ABSENT: u32 = u32::MAX;

fn put_str(out: &mut impl Write, s: Option<&str>) -> io::Result<()> {
    match s {
        None => out.write_all(&ABSENT.to_le_bytes()),
        Some(s) => {
            let len = u32::try_from(s.len())
                .ok()
                .filter(|n| *n != ABSENT)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "string too long"))?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(s.as_bytes())
        }
    }
}

fn put_keys(out: &mut impl Write, keys: &[String]) -> io::Result<()> {
    out.write_all(&(keys.len() as u32).to_le_bytes())?;
    keys.iter().try_for_each(|k| put_str(out, Some(k)))
}

fn index_of<T: PartialEq>(all: &[T], value: &T) -> u8 {
    all.iter().position(|v| v == value).unwrap_or(0) as u8
}

fn encode_produced(out: &mut impl Write, m: &Produced) -> io::Result<()> {
    put_str(out, m.msg_id.as_deref())?;
    put_keys(out, &m.keys)?;
    out.write_all(&m.time_ms.to_le_bytes())?;
    put_str(out, m.offset_msg_id.as_deref())?;
    put_str(out, m.tags.as_deref())?;
    match &m.properties {
        None => out.write_all(&ABSENT.to_le_bytes())?,
        Some(p) => {
            out.write_all(&(p.len() as u32).to_le_bytes())?;
            for (k, v) in p {
                put_str(out, Some(k))?;
                put_str(out, Some(v))?;
            }
        }
    }
    let transaction = m
        .transaction
        .map_or(u8::MAX, |t| index_of(TxState::ALL, &t));
    out.write_all(&[
        index_of(SendStatus::ALL, &m.status),
        index_of(MessageKind::ALL, &m.kind),
        transaction,
        u8::from(m.batch),
    ])
}

fn encode_consumed(out: &mut impl Write, c: &Consumed) -> io::Result<()> {
    put_str(out, c.msg_id.as_deref())?;
    put_keys(out, &c.keys)?;
    out.write_all(&c.time_ms.to_le_bytes())
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("spill file: bad {what}"),
    )
}

/// A u32, or `None` at a clean end of file.
fn get_u32_or_end(input: &mut impl Read) -> io::Result<Option<u32>> {
    let mut b = [0_u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut b[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            n => got += n,
        }
    }
    Ok(Some(u32::from_le_bytes(b)))
}

fn get_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut b = [0_u8; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn get_string(input: &mut impl Read, len: u32) -> io::Result<Option<String>> {
    if len == ABSENT {
        return Ok(None);
    }
    let mut bytes = vec![0_u8; len as usize];
    input.read_exact(&mut bytes)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| corrupt("string"))
}

fn get_str(input: &mut impl Read) -> io::Result<Option<String>> {
    let len = get_u32(input)?;
    get_string(input, len)
}

fn get_keys(input: &mut impl Read) -> io::Result<Vec<String>> {
    let n = get_u32(input)?;
    (0..n)
        .map(|_| get_str(input)?.ok_or_else(|| corrupt("key")))
        .collect()
}

fn get_i64(input: &mut impl Read) -> io::Result<i64> {
    let mut b = [0_u8; 8];
    input.read_exact(&mut b)?;
    Ok(i64::from_le_bytes(b))
}

fn decode_produced(input: &mut impl Read) -> io::Result<Option<Produced>> {
    let Some(len) = get_u32_or_end(input)? else {
        return Ok(None);
    };
    let msg_id = get_string(input, len)?;
    let keys = get_keys(input)?;
    let time_ms = get_i64(input)?;
    let offset_msg_id = get_str(input)?;
    let tags = get_str(input)?;
    let properties = match get_u32(input)? {
        ABSENT => None,
        n => Some(
            (0..n)
                .map(|_| {
                    let k = get_str(input)?.ok_or_else(|| corrupt("property"))?;
                    let v = get_str(input)?.ok_or_else(|| corrupt("property"))?;
                    Ok((k, v))
                })
                .collect::<io::Result<_>>()?,
        ),
    };
    let mut tail = [0_u8; 4];
    input.read_exact(&mut tail)?;
    let pick = |all: usize, i: u8, what: &str| {
        if usize::from(i) < all {
            Ok(usize::from(i))
        } else {
            Err(corrupt(what))
        }
    };
    Ok(Some(Produced {
        msg_id,
        keys,
        time_ms,
        offset_msg_id,
        tags,
        properties,
        status: SendStatus::ALL[pick(SendStatus::ALL.len(), tail[0], "status")?],
        kind: MessageKind::ALL[pick(MessageKind::ALL.len(), tail[1], "kind")?],
        transaction: match tail[2] {
            u8::MAX => None,
            i => Some(TxState::ALL[pick(TxState::ALL.len(), i, "transaction")?]),
        },
        batch: tail[3] != 0,
    }))
}

fn decode_consumed(input: &mut impl Read) -> io::Result<Option<Consumed>> {
    let Some(len) = get_u32_or_end(input)? else {
        return Ok(None);
    };
    Ok(Some(Consumed {
        msg_id: get_string(input, len)?,
        keys: get_keys(input)?,
        time_ms: get_i64(input)?,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn produced(id: Option<&str>, keys: &[&str], batch: bool) -> Produced {
        Produced {
            msg_id: id.map(str::to_string),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            time_ms: 7,
            offset_msg_id: None,
            tags: Some("t".into()),
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
            time_ms: 9,
        }
    }

    /// Missing, duplicated and orphaned references of a window.
    fn outcome(p: &[Produced], c: &[Consumed]) -> (Vec<String>, Vec<(String, u32)>, Vec<String>) {
        let mut r = Reconciler::new(p);
        let orphans: Vec<String> = c
            .iter()
            .filter(|x| r.consume(x).is_none())
            .map(|x| format!("{:?}{:?}", x.msg_id, x.keys))
            .collect();
        let o = r.finish();
        let name = |m: &Produced| format!("{:?}{:?}", m.msg_id, m.keys);
        let mut missing: Vec<String> = o.missing.iter().map(|i| name(&p[*i])).collect();
        let mut dup: Vec<(String, u32)> = o
            .duplicated
            .iter()
            .map(|(i, n)| (name(&p[*i]), *n))
            .collect();
        let mut orphans = orphans;
        missing.sort();
        dup.sort();
        orphans.sort();
        (missing, dup, orphans)
    }

    /// A pseudo-random window (xorshift): ids or keys, losses, repeats,
    /// reused keys, orphans.
    fn window(seed: u64, n: usize, ids: bool) -> (Vec<Produced>, Vec<Consumed>) {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut p = Vec::new();
        let mut c = Vec::new();
        for i in 0..n {
            let r = next() % 100;
            // Keys reused by a few messages (an order's life cycle).
            let key = format!("k{}", if r < 10 { i / 3 } else { i });
            let id = format!("ID{i}");
            let m = if ids {
                produced(Some(&id), &[&key], false)
            } else {
                produced(None, &[&key], false)
            };
            let deliveries = match r % 10 {
                0 => 0,
                1 => 2,
                _ => 1,
            };
            for _ in 0..deliveries {
                c.push(consumed(ids.then_some(id.as_str()), &[&key]));
            }
            if r == 99 {
                c.push(consumed(ids.then_some("ORPHAN"), &["orphan"]));
            }
            p.push(m);
        }
        (p, c)
    }

    fn reduce(p: &[Produced], c: &[Consumed], budget: u64) -> Reduced {
        let dir = std::env::temp_dir();
        let mut spill = WindowSpill::new(budget, &dir);
        for m in p {
            spill.produced(m.clone()).expect("in test");
        }
        for x in c {
            spill.consumed(x.clone()).expect("in test");
        }
        spill.finish().expect("in test")
    }

    #[test]
    fn a_spilled_window_reduces_to_the_same_outcome_as_the_whole() {
        for (seed, ids) in [(1, true), (2, false), (3, true), (4, false)] {
            let (p, c) = window(seed, 30_000, ids);
            let whole = outcome(&p, &c);
            assert!(!whole.0.is_empty() && !whole.1.is_empty() && !whole.2.is_empty());
            // 1 MiB: several partitions.
            let reduced = reduce(&p, &c, 1 << 20);
            assert!(reduced.partitions > 1, "{}", reduced.partitions);
            assert!(!reduced.over_budget);
            assert!(reduced.produced.len() < p.len() / 2);
            assert_eq!(
                reduced.settled + reduced.produced.len() as u64,
                p.len() as u64
            );
            assert_eq!(
                outcome(&reduced.produced, &reduced.consumed),
                whole,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_window_settled_on_several_threads_reduces_to_the_same_outcome_in_order() {
        for (seed, ids) in [(11, true), (12, false)] {
            let (mut p, mut c) = window(seed, 20_000, ids);
            if !ids {
                // A batch member in a key ledger: matched only once its
                // stored id is learned, so never settled.
                p.push(produced(None, &["batch-key"], true));
                c.push(consumed(None, &["batch-key"]));
            }
            let whole = outcome(&p, &c);
            let split = if ids { Split::ById } else { Split::ByKey };
            for threads in [1, 2, 3, 8] {
                let reduced = settle(p.clone(), c.clone(), split, threads);
                assert_eq!(
                    outcome(&reduced.produced, &reduced.consumed),
                    whole,
                    "seed {seed}, {threads} threads"
                );
                assert_eq!(
                    reduced.settled + reduced.produced.len() as u64,
                    p.len() as u64
                );
                assert!(reduced.produced.len() < p.len() / 2);
                assert_eq!(ids, !reduced.produced.iter().any(|m| m.batch));
                // What is kept is a subsequence of what came, in order.
                let mut rest = c.iter();
                for kept in &reduced.consumed {
                    assert!(rest.any(|x| x == kept), "consumptions out of order");
                }
                let mut rest = p.iter();
                for kept in &reduced.produced {
                    assert!(rest.any(|x| x == kept), "messages out of order");
                }
            }
        }
    }

    #[test]
    fn a_large_window_held_in_memory_is_settled_before_its_verdicts() {
        let (p, c) = window(13, SETTLE_FIRST + 1_000, true);
        let whole = outcome(&p, &c);
        let reduced = reduce(&p, &c, 1 << 40);
        assert_eq!(reduced.partitions, 0, "nothing spilled");
        assert!(reduced.settled > p.len() as u64 / 2, "{}", reduced.settled);
        assert_eq!(outcome(&reduced.produced, &reduced.consumed), whole);
    }

    #[test]
    fn a_share_reconciler_reports_its_members_alone() {
        let p: Vec<Produced> = (0..6)
            .map(|i| produced(Some(&format!("ID{i}")), &[], false))
            .collect();
        let members = [1, 3, 5];
        let mut r = Reconciler::for_members(&p, &members);
        // Indices are positions in the members.
        assert_eq!(r.consume(&consumed(Some("ID3"), &[])), Some(1));
        assert_eq!(r.consume(&consumed(Some("ID2"), &[])), None, "not a member");
        r.consume(&consumed(Some("ID5"), &[]));
        r.consume(&consumed(Some("ID5"), &[]));
        let o = r.finish();
        assert_eq!(o.missing, vec![0], "ID1");
        assert_eq!(o.duplicated, vec![(2, 1)], "ID5");
        assert_eq!((o.consumed, o.matched), (4, 3));
    }

    #[test]
    fn a_window_within_budget_is_returned_whole_without_disk() {
        let (p, c) = window(5, 1_000, true);
        let reduced = reduce(&p, &c, 64 << 20);
        assert_eq!((reduced.partitions, reduced.settled), (0, 0));
        assert_eq!(
            (reduced.produced.len(), reduced.consumed.len()),
            (p.len(), c.len())
        );
    }

    #[test]
    fn a_window_of_no_partitionable_shape_is_reconciled_whole_and_says_so() {
        // Two keys per message, no ids: a consumption may carry either key.
        let mut p = Vec::new();
        let mut c = Vec::new();
        for i in 0..20_000 {
            let (a, b) = (format!("a{i}"), format!("b{i}"));
            p.push(produced(None, &[&a, &b], false));
            if i % 7 != 0 {
                c.push(consumed(None, &[if i % 2 == 0 { &a } else { &b }]));
            }
        }
        let reduced = reduce(&p, &c, 1 << 20);
        assert!(reduced.over_budget);
        assert_eq!(reduced.produced.len(), p.len());
        assert_eq!(
            outcome(&reduced.produced, &reduced.consumed),
            outcome(&p, &c)
        );
    }

    #[test]
    fn batch_members_are_never_settled() {
        let mut p = vec![produced(Some("b1"), &["k"], true)];
        let mut c = vec![consumed(Some("b1"), &["k"])];
        for i in 0..20_000 {
            let id = format!("ID{i}");
            p.push(produced(Some(&id), &[], false));
            c.push(consumed(Some(&id), &[]));
        }
        // A batch member makes the id split unreliable: key split impossible
        // too (no keys): reconciled whole.
        let reduced = reduce(&p, &c, 1 << 20);
        assert!(reduced.over_budget);
        assert!(reduced.produced.iter().any(|m| m.batch));
    }

    #[test]
    fn the_spill_encoding_round_trips_every_field() {
        let mut m = produced(Some("A"), &["k1", "k2"], true);
        m.offset_msg_id = Some("OFF".into());
        m.properties = Some(BTreeMap::from([("a".into(), "b".into())]));
        m.transaction = Some(*TxState::ALL.last().expect("in test"));
        m.status = *SendStatus::ALL.last().expect("in test");
        m.kind = *MessageKind::ALL.last().expect("in test");
        let mut bytes = Vec::new();
        encode_produced(&mut bytes, &m).expect("in test");
        encode_consumed(&mut bytes, &consumed(None, &["x"])).expect("in test");
        let mut input = bytes.as_slice();
        let back = decode_produced(&mut input)
            .expect("in test")
            .expect("in test");
        assert_eq!(format!("{back:?}"), format!("{m:?}"));
        let c = decode_consumed(&mut input)
            .expect("in test")
            .expect("in test");
        assert_eq!((c.msg_id, c.keys), (None, vec!["x".to_string()]));
        assert!(decode_consumed(&mut input).expect("in test").is_none());
        // A truncated record is an error, not an end.
        let mut short = &bytes[..bytes.len() - 3];
        decode_produced(&mut short).expect("in test");
        assert!(decode_consumed(&mut short).is_err());
    }
}
