//! The `jsonl` source's files: which files a pattern names, and reading a
//! window's records from them without re-reading what cannot hold it.
//!
//! Ledger files are appended to. Each file gets an index of chunks (a byte
//! range of whole lines, its first line number, and the least and greatest
//! event time in it), built as the file is first read and extended by each
//! read of its new tail. A window then reads only the chunks whose time
//! span overlaps it, plus the tail: a file is parsed whole once, not once
//! per window per run. A file that shrank, was replaced (another inode) or
//! was rewritten (its first or its last indexed 4 KiB changed) is indexed
//! afresh. A line that does not parse fails the read and is not
//! indexed, so it fails every read until it is fixed; an unterminated last
//! line (a writer mid-append) is read but not indexed, and read again once
//! it ends.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::source::{Record, SourceError};

/// Records per batch handed over to the audit.
pub const BATCH_RECORDS: usize = 4_096;
/// Lines per chunk of a file's index.
const CHUNK_LINES: u64 = 4_096;
/// Bytes at the start and before the end of the indexed part checked
/// against their hashes before the index is trusted.
const FINGERPRINT_BYTES: u64 = 4_096;

/// Whole lines `[start, end)` of a file, from line `first_line` (1-based).
#[derive(Debug, Clone, Copy)]
struct Chunk {
    start: u64,
    end: u64,
    first_line: u64,
    /// Least and greatest event time (MAX and MIN for blank lines only).
    min_ms: i64,
    max_ms: i64,
}

impl Chunk {
    fn overlaps(&self, from_ms: i64, to_ms: i64) -> bool {
        self.min_ms < to_ms && self.max_ms >= from_ms
    }
}

#[derive(Debug, Default)]
struct FileIndex {
    /// (device, inode) of the file indexed.
    identity: (u64, u64),
    /// Bytes covered by `chunks`.
    indexed_to: u64,
    /// The line number after the last indexed line.
    next_line: u64,
    chunks: Vec<Chunk>,
    /// Hashes of the first and the last `FINGERPRINT_BYTES` indexed.
    fingerprint: (u64, u64),
}

/// The hash of `len` bytes at `start`; `None` when they cannot be read.
fn hash_range(reader: &mut BufReader<std::fs::File>, start: u64, len: u64) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    use std::io::Read;
    reader.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::with_capacity(len as usize);
    reader.by_ref().take(len).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 != len {
        return None;
    }
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

/// The fingerprint of the indexed part `[0, indexed_to)`.
fn fingerprint(reader: &mut BufReader<std::fs::File>, indexed_to: u64) -> Option<(u64, u64)> {
    let len = indexed_to.min(FINGERPRINT_BYTES);
    Some((
        hash_range(reader, 0, len)?,
        hash_range(reader, indexed_to - len, len)?,
    ))
}

/// What one read cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Bytes read from every file.
    pub bytes_read: u64,
}

/// The chunk indexes of one source's files (kept for the daemon's life;
/// a restart builds them again with one full read).
#[derive(Debug, Default)]
pub struct JsonlIndex {
    files: Mutex<HashMap<PathBuf, FileIndex>>,
}

/// Records in the window, handed over in batches; `emit` answers false
/// to stop the read.
struct Batches<'e> {
    out: Vec<Record>,
    emit: &'e mut dyn FnMut(Vec<Record>) -> bool,
    stopped: bool,
}

impl Batches<'_> {
    fn push(&mut self, record: Record) {
        self.out.push(record);
        if self.out.len() == BATCH_RECORDS {
            let full = std::mem::replace(&mut self.out, Vec::with_capacity(BATCH_RECORDS));
            self.stopped = !(self.emit)(full);
        }
    }
}

impl JsonlIndex {
    /// The records of every file matching `pattern` with event time in
    /// `[from_ms, to_ms)`, in file order, in batches to `emit`.
    ///
    /// # Errors
    /// A file that cannot be read, or a line that does not parse (named by
    /// file and line number).
    pub fn read_window(
        &self,
        pattern: &str,
        from_ms: i64,
        to_ms: i64,
        emit: &mut dyn FnMut(Vec<Record>) -> bool,
    ) -> Result<ReadStats, SourceError> {
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stats = ReadStats::default();
        let mut batches = Batches {
            out: Vec::with_capacity(BATCH_RECORDS),
            emit,
            stopped: false,
        };
        for path in jsonl_files(pattern)? {
            let index = files.entry(path.clone()).or_default();
            read_file(&path, index, (from_ms, to_ms), &mut batches, &mut stats)?;
            if batches.stopped {
                return Ok(stats);
            }
        }
        if !batches.out.is_empty() {
            (batches.emit)(std::mem::take(&mut batches.out));
        }
        Ok(stats)
    }
}

fn failed(path: &Path, e: impl std::fmt::Display) -> SourceError {
    SourceError::Failed {
        source_kind: "jsonl",
        detail: format!("{}: {e}", path.display()),
    }
}

/// One line: `None` when blank.
fn parse_line(path: &Path, line_no: u64, bytes: &[u8]) -> Result<Option<Record>, SourceError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| SourceError::Malformed {
            source_kind: "jsonl",
            detail: format!("{}:{line_no}: {e}", path.display()),
        })
}

fn read_file(
    path: &Path,
    index: &mut FileIndex,
    (from_ms, to_ms): (i64, i64),
    batches: &mut Batches<'_>,
    stats: &mut ReadStats,
) -> Result<(), SourceError> {
    let file = std::fs::File::open(path).map_err(|e| failed(path, e))?;
    let meta = file.metadata().map_err(|e| failed(path, e))?;
    let identity = (meta.dev(), meta.ino());
    let mut reader = BufReader::new(file);
    let trusted = index.identity == identity
        && meta.len() >= index.indexed_to
        && (index.indexed_to == 0
            || fingerprint(&mut reader, index.indexed_to) == Some(index.fingerprint));
    if !trusted {
        *index = FileIndex {
            identity,
            next_line: 1,
            ..FileIndex::default()
        };
    }
    let mut line = Vec::new();
    let in_window = |r: &Record| r.time_ms >= from_ms && r.time_ms < to_ms;

    // Indexed chunks that can hold the window.
    for chunk in index.chunks.iter().filter(|c| c.overlaps(from_ms, to_ms)) {
        reader
            .seek(SeekFrom::Start(chunk.start))
            .map_err(|e| failed(path, e))?;
        let (mut at, mut line_no) = (chunk.start, chunk.first_line);
        while at < chunk.end {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| failed(path, format!("line {line_no}: {e}")))?;
            if n == 0 {
                return Err(failed(path, "shorter than when it was indexed"));
            }
            stats.bytes_read += n as u64;
            at += n as u64;
            if let Some(record) = parse_line(path, line_no, &line)?
                && in_window(&record)
            {
                batches.push(record);
                if batches.stopped {
                    return Ok(());
                }
            }
            line_no += 1;
        }
    }

    // The tail, indexed as it is read; a chunk joins the index only once
    // every line of it parsed.
    reader
        .seek(SeekFrom::Start(index.indexed_to))
        .map_err(|e| failed(path, e))?;
    let fresh = |start: u64, first_line: u64| Chunk {
        start,
        end: start,
        first_line,
        min_ms: i64::MAX,
        max_ms: i64::MIN,
    };
    let mut chunk = fresh(index.indexed_to, index.next_line);
    let mut lines = 0;
    loop {
        line.clear();
        let line_no = chunk.first_line + lines;
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| failed(path, format!("line {line_no}: {e}")))?;
        if n == 0 {
            break;
        }
        stats.bytes_read += n as u64;
        let terminated = line.ends_with(b"\n");
        let record = parse_line(path, line_no, &line)?;
        if let Some(record) = &record
            && terminated
        {
            chunk.min_ms = chunk.min_ms.min(record.time_ms);
            chunk.max_ms = chunk.max_ms.max(record.time_ms);
        }
        if let Some(record) = record.filter(in_window) {
            batches.push(record);
            if batches.stopped {
                return Ok(());
            }
        }
        if !terminated {
            break;
        }
        chunk.end += n as u64;
        lines += 1;
        if lines == CHUNK_LINES {
            index.chunks.push(chunk);
            index.indexed_to = chunk.end;
            index.next_line = chunk.first_line + lines;
            chunk = fresh(chunk.end, index.next_line);
            lines = 0;
        }
    }
    if lines > 0 {
        index.chunks.push(chunk);
        index.indexed_to = chunk.end;
        index.next_line = chunk.first_line + lines;
    }
    if index.indexed_to > 0 {
        match fingerprint(&mut reader, index.indexed_to) {
            Some(f) => index.fingerprint = f,
            // Cannot be checked next time: start over then.
            None => *index = FileIndex::default(),
        }
    }
    Ok(())
}

/// Files matching `pattern` (a path whose file name may hold `*`/`?`),
/// sorted.
fn jsonl_files(pattern: &str) -> Result<Vec<PathBuf>, SourceError> {
    let path = Path::new(pattern);
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Err(failed(path, "names no file"));
    };
    if !name.contains(['*', '?']) {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let entries = std::fs::read_dir(dir).map_err(|e| failed(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| crate::config::glob(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        index: &JsonlIndex,
        pattern: &str,
        from: i64,
        to: i64,
    ) -> Result<(Vec<Record>, ReadStats), SourceError> {
        let mut all = Vec::new();
        let stats = index.read_window(pattern, from, to, &mut |batch| {
            all.extend(batch);
            true
        })?;
        Ok((all, stats))
    }

    fn keys(records: &[Record]) -> Vec<&str> {
        records
            .iter()
            .map(|r| r.key.as_deref().unwrap_or(""))
            .collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mqaudit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn lines(range: std::ops::Range<i64>) -> String {
        range
            .map(|i| format!("{{\"key\":\"k{i}\",\"time_ms\":{i}}}\n"))
            .collect()
    }

    #[test]
    fn filters_by_window_and_names_the_bad_line() {
        let dir = temp_dir("jsonl");
        std::fs::write(
            dir.join("a.jsonl"),
            "{\"key\":\"k1\",\"time_ms\":5}\n\n{\"key\":\"k2\",\"time_ms\":15,\"msg_id\":\"M\"}\n",
        )
        .expect("write");
        std::fs::write(dir.join("b.jsonl"), "{\"key\":\"k3\",\"time_ms\":9}\n").expect("write");
        let pattern = dir.join("*.jsonl").to_string_lossy().into_owned();
        let index = JsonlIndex::default();
        let (records, _) = read(&index, &pattern, 0, 10).expect("reads");
        assert_eq!(keys(&records), ["k1", "k3"]);
        std::fs::write(
            dir.join("c.jsonl"),
            "{\"key\":\"k4\",\"time_ms\":1}\n{\"key\":7}\n",
        )
        .expect("write");
        for _ in 0..2 {
            // Not indexed past the bad line: it fails every read.
            let err = read(&index, &pattern, 0, 10).expect_err("bad line");
            assert_eq!(err.kind(), "malformed");
            assert!(err.to_string().contains("c.jsonl:2"), "{err}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn hands_over_batches_and_stops_when_told() {
        let dir = temp_dir("jsonl-batches");
        let n = BATCH_RECORDS as i64 * 2 + 5;
        std::fs::write(dir.join("big.jsonl"), lines(0..n)).expect("write");
        let pattern = dir.join("big.jsonl").to_string_lossy().into_owned();
        let mut sizes = Vec::new();
        JsonlIndex::default()
            .read_window(&pattern, 0, i64::MAX, &mut |batch| {
                sizes.push(batch.len());
                true
            })
            .expect("reads");
        assert_eq!(sizes, [BATCH_RECORDS, BATCH_RECORDS, 5]);
        let mut first = 0;
        JsonlIndex::default()
            .read_window(&pattern, 0, i64::MAX, &mut |batch| {
                first += batch.len();
                false
            })
            .expect("stops");
        assert_eq!(first, BATCH_RECORDS, "stopped after the first batch");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_window_reads_only_the_chunks_that_can_hold_it_and_the_new_tail() {
        let dir = temp_dir("jsonl-index");
        let path = dir.join("ledger.jsonl");
        let body = lines(0..20_000);
        std::fs::write(&path, &body).expect("write");
        let pattern = path.to_string_lossy().into_owned();
        let index = JsonlIndex::default();
        // First read: the whole file, indexed.
        let (records, stats) = read(&index, &pattern, 0, 100).expect("first");
        assert_eq!(records.len(), 100);
        assert_eq!(stats.bytes_read, body.len() as u64);
        // A later window: one chunk of 4,096 lines.
        let (records, stats) = read(&index, &pattern, 10_000, 10_100).expect("later");
        assert_eq!(keys(&records)[..2], ["k10000", "k10001"]);
        assert_eq!(records.len(), 100);
        let chunk_bytes = lines(8_192..12_288).len() as u64;
        assert_eq!(stats.bytes_read, chunk_bytes);
        // Appended lines: only they are read for a window past the rest.
        let appended = lines(20_000..20_010);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut file, appended.as_bytes()).expect("append");
        let (records, stats) = read(&index, &pattern, 20_000, 30_000).expect("tail");
        assert_eq!(records.len(), 10);
        assert_eq!(stats.bytes_read, appended.len() as u64);
        // A writer mid-line: the unterminated line is read, not indexed;
        // once it ends it is read again, with what follows.
        std::io::Write::write_all(&mut file, b"{\"key\":\"u\",\"time_ms\":20010}").expect("append");
        let (records, _) = read(&index, &pattern, 20_010, 30_000).expect("unterminated");
        assert_eq!(keys(&records), ["u"]);
        std::io::Write::write_all(&mut file, b"\n{\"key\":\"v\",\"time_ms\":20011}\n")
            .expect("append");
        let (records, _) = read(&index, &pattern, 20_010, 30_000).expect("ended");
        assert_eq!(keys(&records), ["u", "v"]);
        // The file rewritten shorter: indexed afresh, nothing stale.
        std::fs::write(&path, lines(5..8)).expect("rewrite");
        let (records, stats) = read(&index, &pattern, 0, 100).expect("rewritten");
        assert_eq!(keys(&records), ["k5", "k6", "k7"]);
        assert_eq!(stats.bytes_read, lines(5..8).len() as u64);
        // Rewritten longer in place (same inode, other content): the
        // fingerprint no longer matches, so it is indexed afresh too.
        std::fs::write(&path, lines(1_000..1_200)).expect("rewrite longer");
        let (records, _) = read(&index, &pattern, 1_000, 1_200).expect("rewritten longer");
        assert_eq!(records.len(), 200);
        assert_eq!(keys(&records)[0], "k1000");
        // Rewritten with its old content first (a superset): read as an
        // append, nothing missed.
        std::fs::write(&path, lines(1_000..1_300)).expect("rewrite superset");
        let (records, stats) = read(&index, &pattern, 1_000, 1_300).expect("superset");
        assert_eq!(records.len(), 300);
        assert_eq!(stats.bytes_read, lines(1_000..1_300).len() as u64);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod stress {
    use super::*;

    /// Reads while another thread appends (a read may meet a half-written
    /// line and fail: it is retried by the next run), then every window
    /// through the index built that way equals a full scan.
    #[test]
    fn an_index_built_during_concurrent_appends_reads_like_a_full_scan() {
        let dir = std::env::temp_dir().join(format!("mqaudit-jsonl-stress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("l.jsonl");
        std::fs::write(&path, "").expect("create");
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .expect("open");
                let mut x: u64 = 12345;
                for i in 0..20_000u64 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let t = (x >> 33) % 100_000;
                    f.write_all(format!("{{\"key\":\"k{i}\",\"time_ms\":{t}}}\n").as_bytes())
                        .expect("w");
                }
            })
        };
        let index = JsonlIndex::default();
        let pattern = path.to_string_lossy().into_owned();
        let mut n = 0;
        while !writer.is_finished() {
            let from = (n * 7919) % 100_000;
            let _ = index.read_window(&pattern, from, from + 1_000, &mut |_| true);
            n += 1;
        }
        writer.join().expect("writer");
        let all: Vec<Record> = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("line"))
            .collect();
        for from in (0..100_000).step_by(2_500) {
            let mut got = Vec::new();
            index
                .read_window(&pattern, from, from + 2_500, &mut |b| {
                    got.extend(b.into_iter().map(|r| r.key.unwrap_or_default()));
                    true
                })
                .expect("read");
            let want: Vec<String> = all
                .iter()
                .filter(|r| r.time_ms >= from && r.time_ms < from + 2_500)
                .map(|r| r.key.clone().unwrap_or_default())
                .collect();
            assert_eq!(got, want, "window {from} after {n} reads during the writes");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
