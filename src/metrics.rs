//! Metric families, the text exposition writer, the snapshot served on
//! `/metrics`, and the daemon's own metrics.
//!
//! Collection builds a fresh [`Exposition`] per cluster per cycle; the
//! [`SnapshotStore`] swaps it in as pre-encoded shared chunks, so a
//! scrape only clones bytes and never calls a broker. Series of deleted
//! topics and groups vanish because nothing carries over between cycles.
//!
//! Every family is declared once, in [`FAMILIES`], with its type and help;
//! `docs/metrics.md` documents each one and a test keeps the two in step.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing count (name ends in `_total`).
    Counter,
    /// Cumulative buckets, sum and count (`_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// (name, type, help) of every family the collector emits.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "rocketmq_broker_up",
        Kind::Gauge,
        "1 if the last poll of this broker (GET_BROKER_RUNTIME_INFO) succeeded, else 0.",
    ),
    (
        "rocketmq_broker_info",
        Kind::Gauge,
        "Always 1; labels carry version, brokerRole, flushDiskType and address (GET_BROKER_CONFIG, runtime info).",
    ),
    (
        "rocketmq_broker_boot_timestamp_seconds",
        Kind::Gauge,
        "When the broker's message store started (runtime bootTimestamp); a change means a restart.",
    ),
    (
        "rocketmq_broker_commitlog_max_offset_bytes",
        Kind::Gauge,
        "Commit-log bytes ever written (runtime commitLogMaxOffset).",
    ),
    (
        "rocketmq_broker_commitlog_min_offset_bytes",
        Kind::Gauge,
        "First commit-log byte still stored (runtime commitLogMinOffset).",
    ),
    (
        "rocketmq_broker_commitlog_disk_used_ratio",
        Kind::Gauge,
        "Used fraction of the commit-log disk, 0-1 (runtime commitLogDiskRatio).",
    ),
    (
        "rocketmq_broker_flush_lag_bytes",
        Kind::Gauge,
        "Bytes acknowledged but not yet flushed to disk (runtime remainHowManyDataToFlush, unit honoured).",
    ),
    (
        "rocketmq_broker_dispatch_lag_bytes",
        Kind::Gauge,
        "Commit-log bytes not yet dispatched to consume queues and index (runtime dispatchBehindBytes).",
    ),
    (
        "rocketmq_broker_replication_lag_bytes",
        Kind::Gauge,
        "Per slave: master commit-log max offset minus the slave's (GET_BROKER_HA_STATUS when it names the slave, else both brokers' runtime info); broker_id is the slave's.",
    ),
    (
        "rocketmq_broker_replication_in_sync",
        Kind::Gauge,
        "Per slave: 1 if the master reports it in sync (GET_BROKER_HA_STATUS), 0 if it reports it out of sync or the slave answered nothing this cycle; absent when the master does not say.",
    ),
    (
        "rocketmq_controller_up",
        Kind::Gauge,
        "Per controller (5.x controller mode, addresses from the brokers' controllerAddr): 1 if it answered CONTROLLER_GET_METADATA_INFO this cycle, else 0.",
    ),
    (
        "rocketmq_controller_is_leader",
        Kind::Gauge,
        "Per controller that answered: 1 if it is the controller group's leader, else 0.",
    ),
    (
        "rocketmq_controller_has_leader",
        Kind::Gauge,
        "1 if a controller that answered names a leader, else 0: without one no master can be elected when a master fails.",
    ),
    (
        "rocketmq_broker_sync_state_replicas",
        Kind::Gauge,
        "Per broker set in controller mode: its replicas by state (in_sync: in the controller's sync-state set, an election picks among them; not_in_sync: registered, outside it). A shrinking in-sync set means the next election can lose what only the others had.",
    ),
    (
        "rocketmq_broker_master_epoch",
        Kind::Gauge,
        "Per broker set in controller mode: the controller's master epoch, bumped at every election.",
    ),
    (
        "rocketmq_broker_sync_state_set_epoch",
        Kind::Gauge,
        "Per broker set in controller mode: the sync-state set's epoch, bumped at every change of the in-sync set.",
    ),
    (
        "rocketmq_broker_replica_in_sync",
        Kind::Gauge,
        "Per replica of a broker set in controller mode (broker_id as the controller assigned it, addr): 1 in the sync-state set, 0 outside it.",
    ),
    (
        "rocketmq_broker_put_messages_per_second",
        Kind::Gauge,
        "Messages stored per second over the broker's last minute (runtime putTps).",
    ),
    (
        "rocketmq_broker_get_messages_per_second",
        Kind::Gauge,
        "Messages read per second over the broker's last minute (runtime getTotalTps).",
    ),
    (
        "rocketmq_broker_durability_risk",
        Kind::Gauge,
        "1 per durability risk of a master: reason async_flush (ASYNC_FLUSH), async_replication (ASYNC_MASTER with a slave), no_replica (no slave registered).",
    ),
    (
        "rocketmq_topic_max_offset",
        Kind::Gauge,
        "Consume-queue max offset: messages ever written, summed over the topic's queues on the broker (or per queue).",
    ),
    (
        "rocketmq_topic_min_offset",
        Kind::Gauge,
        "Consume-queue min offset: first message still stored, summed over queues (or per queue); may be up to min_offset_refresh_cycles old.",
    ),
    (
        "rocketmq_topic_offset_regressions_total",
        Kind::Counter,
        "Times a queue's max offset went backwards between cycles: evidence of storage loss.",
    ),
    (
        "rocketmq_consumer_group_offset",
        Kind::Gauge,
        "Committed consumer offset, summed over queues (or per queue) (GET_BROKER_CONSUME_STATS).",
    ),
    (
        "rocketmq_consumer_group_lag_messages",
        Kind::Gauge,
        "Broker max offset minus committed offset, clamped at 0 per queue; not exported for broadcast groups; approximate for POP groups (see rocketmq_consumer_group_info).",
    ),
    (
        "rocketmq_consumer_group_lag_seconds",
        Kind::Gauge,
        "Age of the oldest unconsumed message, max over queues; estimated from the exporter's offset history, dated by a cached pull when history cannot tell.",
    ),
    (
        "rocketmq_consumer_group_consumers",
        Kind::Gauge,
        "Online consumer instances (GET_CONSUMER_CONNECTION_LIST, distinct client ids over masters).",
    ),
    (
        "rocketmq_consumer_group_retry_messages",
        Kind::Gauge,
        "Unconsumed messages in %RETRY%<group>.",
    ),
    (
        "rocketmq_consumer_group_dlq_messages",
        Kind::Gauge,
        "Messages held in %DLQ%<group> (max minus min offset).",
    ),
    (
        "rocketmq_consumer_group_expired_messages_total",
        Kind::Counter,
        "Messages deleted by retention before the group consumed them (queue min offset passed the committed offset).",
    ),
    (
        "rocketmq_consumer_group_retention_margin_seconds",
        Kind::Gauge,
        "Time left before retention (the broker's fileReservedTime) deletes the group's oldest unconsumed message: reserve minus lag_seconds; negative means it may already be gone.",
    ),
    (
        "rocketmq_consumer_group_info",
        Kind::Gauge,
        "Always 1 while a consumer is online; labels consume_type (CONSUME_PASSIVELY push, CONSUME_ACTIVELY pull, CONSUME_POP 5.x POP: lag is approximate, messages popped but not yet acknowledged count as consumed) and message_model.",
    ),
    (
        "rocketmq_consumer_group_pop_mode",
        Kind::Gauge,
        "1 per (group, topic) a 5.x master serves in POP mode (GET_ALL_MESSAGE_REQUEST_MODE, set by mqadmin setConsumeMode), online consumers or not: the group's lag there is approximate (messages popped but not yet acknowledged count as consumed).",
    ),
    (
        "rocketmq_namesrv_up",
        Kind::Gauge,
        "1 if the name server answered GET_BROKER_CLUSTER_INFO this cycle, else 0; every configured name server is asked every cycle.",
    ),
    (
        "rocketmq_namesrv_brokers",
        Kind::Gauge,
        "Broker processes of the cluster this name server lists (one that lost registrations routes clients to fewer brokers).",
    ),
    (
        "rocketmq_broker_writable",
        Kind::Gauge,
        "1 if brokerPermission has the write bit (sends accepted), else 0 (every send refused).",
    ),
    (
        "rocketmq_broker_file_reserved_time_seconds",
        Kind::Gauge,
        "How long the broker keeps commit-log files (fileReservedTime); older unconsumed messages expire.",
    ),
    (
        "rocketmq_topic_info",
        Kind::Gauge,
        "Always 1 per topic and master; labels message_type and cleanup_policy (5.x topic attributes; UNSPECIFIED and DELETE on 4.x), perm (rw, r-, -w, --) and order.",
    ),
    (
        "rocketmq_schedule_backlog_messages",
        Kind::Gauge,
        "Delay-level messages held in SCHEDULE_TOPIC_XXXX and not yet delivered, per level (runtime scheduleMessageOffset_<level>).",
    ),
    (
        "rocketmq_schedule_delivery_lag_seconds",
        Kind::Gauge,
        "How long the level's next message is past its due time (store time plus the level's delay); 0 while not due; absent while undated.",
    ),
    (
        "rocketmq_timer_messages",
        Kind::Gauge,
        "5.x timer messages in the timer wheel (runtime timerCongestNum).",
    ),
    (
        "rocketmq_timer_enqueue_lag_messages",
        Kind::Gauge,
        "5.x timer-topic messages not yet enqueued into the wheel (runtime timerOffsetBehind).",
    ),
    (
        "rocketmq_timer_dequeue_lag_seconds",
        Kind::Gauge,
        "How far the 5.x timer wheel's delivery is behind (runtime timerReadBehind).",
    ),
    (
        "rocketmq_transaction_half_messages",
        Kind::Gauge,
        "Transaction half messages not yet resolved, approximately: RMQ_SYS_TRANS_HALF_TOPIC beyond the check service (CID_RMQ_SYS_TRANS) minus resolutions in RMQ_SYS_TRANS_OP_HALF_TOPIC not yet applied.",
    ),
    (
        "rocketmq_transaction_half_oldest_age_seconds",
        Kind::Gauge,
        "Age of the half message at the check service's offset (the oldest possibly unresolved one).",
    ),
    (
        "rocketmq_transaction_discarded_messages_total",
        Kind::Counter,
        "Half messages discarded after transactionCheckMax checks (moved to TRANS_CHECK_MAX_TIME_TOPIC, never delivered: each a lost commit), by original topic, since the exporter started.",
    ),
    (
        "mqaudit_collector_success",
        Kind::Gauge,
        "1 if the collector's last cycle completed without error, else 0.",
    ),
    (
        "mqaudit_collector_duration_seconds",
        Kind::Gauge,
        "Duration of the collector's last cycle.",
    ),
    (
        "mqaudit_collector_last_success_timestamp_seconds",
        Kind::Gauge,
        "When the collector last completed without error.",
    ),
    (
        "mqaudit_collector_errors_total",
        Kind::Counter,
        "Failed admin calls per collector, by error_type (timeout, io, protocol, permission, remote).",
    ),
    (
        "mqaudit_audit_store_bytes",
        Kind::Gauge,
        "Size of the audit store on disk (database and write-ahead log); flat in steady state under [audit.retention].",
    ),
    (
        "mqaudit_audit_store_rows",
        Kind::Gauge,
        "Rows per table of the audit store.",
    ),
    (
        "mqaudit_audit_pruned_rows_total",
        Kind::Counter,
        "Rows deleted by retention per table since the daemon started.",
    ),
    (
        "mqaudit_audit_prune_failures_total",
        Kind::Counter,
        "Pruning passes that failed (tried again next interval) since the daemon started.",
    ),
    (
        "mqaudit_audit_run_errors_total",
        Kind::Counter,
        "Failed audit runs of a flow by error kind (source kinds, trace, store, lease, broadcast) since the daemon started; counted in memory, so a store that refuses writes is seen too.",
    ),
    (
        "mqaudit_audit_flow_owner",
        Kind::Gauge,
        "1 for the replica holding the flow's audit lease (every flow this replica's with the SQLite store); read from the shared store, so every replica reports the same owners.",
    ),
    (
        "mqaudit_audit_flows_unowned",
        Kind::Gauge,
        "Configured flows no replica holds a live lease on: nobody audits them until one is taken (at most a lease period after a replica dies).",
    ),
    (
        "mqaudit_audit_runs_total",
        Kind::Counter,
        "Audit runs of a flow by result (success, failure), from the audit store.",
    ),
    (
        "mqaudit_audit_last_success_timestamp_seconds",
        Kind::Gauge,
        "End of the flow's last successful audit run.",
    ),
    (
        "mqaudit_messages_produced_total",
        Kind::Counter,
        "Messages the flow's group should consume, counted in audited windows (rolled-back and not-subscribed messages excluded); never decreases across re-audits and restarts.",
    ),
    (
        "mqaudit_messages_consumed_total",
        Kind::Counter,
        "Consumptions matched to produced messages of the flow's audited windows.",
    ),
    (
        "mqaudit_messages_lost_total",
        Kind::Counter,
        "Messages declared lost past their deadline, counted once, by the stage they had then (send, store, expired, consume, retrying, late, transaction, unconfirmed, undiagnosed). A later consumption counts in mqaudit_messages_resolved_late_total, never subtracted here.",
    ),
    (
        "mqaudit_messages_lost",
        Kind::Gauge,
        "Messages currently lost, by stage (falls when a lost message is consumed late).",
    ),
    (
        "mqaudit_messages_resolved_late_total",
        Kind::Counter,
        "Messages consumed after they had been declared lost or dead-lettered (a corrected verdict).",
    ),
    (
        "mqaudit_messages_dead_lettered_total",
        Kind::Counter,
        "Missing messages found in %DLQ%<group>, counted once.",
    ),
    (
        "mqaudit_messages_duplicated_total",
        Kind::Counter,
        "Deliveries beyond the first of the same message.",
    ),
    (
        "mqaudit_messages_orphaned_total",
        Kind::Counter,
        "Deliveries of messages never produced (within the deadline before the window).",
    ),
    (
        "mqaudit_messages_at_risk_total",
        Kind::Counter,
        "Messages stored but not acknowledged SEND_OK (SLAVE_NOT_AVAILABLE, FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT): the ones a failover or power loss drops.",
    ),
    (
        "mqaudit_messages_not_subscribed_total",
        Kind::Counter,
        "Messages of the topic the group's subscription (tags or SQL92) does not select: not the group's to consume.",
    ),
    (
        "mqaudit_messages_compacted_total",
        Kind::Counter,
        "Acknowledged messages gone from a compacted topic (5.x cleanup.policy COMPACTION keeps only the latest message per key): dropped by design, never lost.",
    ),
    (
        "mqaudit_messages_rolled_back_total",
        Kind::Counter,
        "Transactional messages rolled back: never produced.",
    ),
    (
        "mqaudit_messages_unauditable_total",
        Kind::Counter,
        "Producer records with neither a key nor a message id: counted, cannot be audited.",
    ),
    (
        "mqaudit_messages_pending",
        Kind::Gauge,
        "Messages missing and not yet lost: deadline not passed, still scheduled or in a transaction being checked, or not diagnosed yet.",
    ),
    (
        "mqaudit_probe_up",
        Kind::Gauge,
        "1 if the probe's last round sent to and read from this broker without an error, else 0.",
    ),
    (
        "mqaudit_probe_messages_sent_total",
        Kind::Counter,
        "Probe sends by the broker's answer: SEND_OK, FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT, SLAVE_NOT_AVAILABLE (stored, not yet durable), or failed (not stored).",
    ),
    (
        "mqaudit_probe_messages_received_total",
        Kind::Counter,
        "Acknowledged probe messages read back.",
    ),
    (
        "mqaudit_probe_latency_seconds",
        Kind::Histogram,
        "From a probe message's send to its first read, by broker.",
    ),
    (
        "mqaudit_probe_messages_lost_total",
        Kind::Counter,
        "Acknowledged probe messages no longer readable (stage store): passed over by the reader, or gone from their offset when re-verified after a restart.",
    ),
    (
        "mqaudit_probe_messages_duplicated_total",
        Kind::Counter,
        "Probe messages read more than once.",
    ),
    (
        "mqaudit_probe_messages_reordered_total",
        Kind::Counter,
        "Probe messages read after a later one of the same queue.",
    ),
    (
        "mqaudit_probe_messages_verified_total",
        Kind::Counter,
        "Read probe messages found again at their offset by a re-verification.",
    ),
    (
        "mqaudit_probe_messages_pending",
        Kind::Gauge,
        "Acknowledged probe messages not read back yet.",
    ),
    (
        "mqaudit_probe_messages_unreadable",
        Kind::Gauge,
        "Acknowledged probe messages past the deadline that a pull does not return yet: stored but not readable.",
    ),
    (
        "mqaudit_probe_errors_total",
        Kind::Counter,
        "Probe calls that failed, by operation (route, create_topic, send, read, verify) and error kind.",
    ),
];

/// One cluster's (or one subsystem's) metrics for one cycle, as text lines
/// grouped by family.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    lines: BTreeMap<&'static str, String>,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Add one sample. `name` must be in [`FAMILIES`].
    ///
    /// # Panics
    /// In debug builds, when `name` is not a declared family (a programming error).
    pub fn sample(&mut self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        debug_assert!(
            FAMILIES.iter().any(|f| f.0 == name),
            "undeclared metric family {name}"
        );
        let out = self.lines.entry(name).or_default();
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(key);
                out.push_str("=\"");
                escape_label(out, val);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        write_value(out, value);
        out.push('\n');
    }

    /// Add one histogram series: `buckets` are (upper bound, cumulative
    /// count) in increasing order, without `+Inf` (that is `count`).
    pub fn histogram(
        &mut self,
        name: &'static str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        debug_assert!(
            FAMILIES
                .iter()
                .any(|f| f.0 == name && f.1 == Kind::Histogram),
            "undeclared histogram family {name}"
        );
        let mut pairs: Vec<String> = labels
            .iter()
            .map(|(key, val)| {
                let mut pair = format!("{key}=\"");
                escape_label(&mut pair, val);
                pair.push('"');
                pair
            })
            .collect();
        let out = self.lines.entry(name).or_default();
        let mut line = |suffix: &str, pairs: &[String], value: f64| {
            out.push_str(name);
            out.push_str(suffix);
            if !pairs.is_empty() {
                out.push('{');
                out.push_str(&pairs.join(","));
                out.push('}');
            }
            out.push(' ');
            write_value(out, value);
            out.push('\n');
        };
        line("_sum", &pairs, sum);
        line("_count", &pairs, count as f64);
        for (le, n) in buckets
            .iter()
            .map(|(le, n)| (le.to_string(), *n))
            .chain([("+Inf".to_string(), count)])
        {
            pairs.push(format!("le=\"{le}\""));
            line("_bucket", &pairs, n as f64);
            pairs.pop();
        }
    }

    /// Move every sample of `other` into this one.
    pub fn merge(&mut self, other: Exposition) {
        for (name, text) in other.lines {
            self.lines.entry(name).or_default().push_str(&text);
        }
    }

    /// Families that have at least one sample.
    pub fn family_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.lines.keys().copied()
    }
}

fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// The latest exposition of every cluster, pre-rendered as a list of chunks
/// (per family: the HELP/TYPE header, then each cluster's lines). Chunks are
/// shared, not copied: a scrape clones the list and writes the chunks.
///
/// Prometheus asks for gzip. The compressed copy of a snapshot is made once,
/// by the first scrape that wants it, and shared by every later one until
/// the next publish: a 50 MB exposition is not compressed per request.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    parts: Mutex<BTreeMap<String, BTreeMap<&'static str, Bytes>>>,
    rendered: RwLock<Arc<Rendered>>,
}

/// One published snapshot: its chunks, and its compressed start once asked for.
#[derive(Debug, Default)]
struct Rendered {
    chunks: Arc<Vec<Bytes>>,
    gzip: std::sync::OnceLock<Arc<GzipStart>>,
}

/// The start of a gzip member: the header and `data` deflated up to a
/// byte-aligned sync flush, not final — a tail can still follow — and the
/// CRC of `data`. One member, not two: some clients read only the first.
#[derive(Debug)]
pub struct GzipStart {
    bytes: Bytes,
    crc: flate2::Crc,
}

/// The fixed gzip header: deflate, no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl GzipStart {
    /// Compress `data` fast (a scrape is latency-bound).
    pub fn new(data: impl IntoIterator<Item = impl AsRef<[u8]>>) -> GzipStart {
        use std::io::Write as _;
        let mut crc = flate2::Crc::new();
        let mut encoder =
            flate2::write::DeflateEncoder::new(GZIP_HEADER.to_vec(), flate2::Compression::fast());
        for chunk in data {
            crc.update(chunk.as_ref());
            // Writing into a Vec cannot fail.
            let _ = encoder.write_all(chunk.as_ref());
        }
        // A sync flush: everything so far out, byte-aligned, stream open.
        let _ = encoder.flush();
        let bytes = Bytes::from(std::mem::take(encoder.get_mut()));
        GzipStart { bytes, crc }
    }

    /// The whole member: this start, then `tail` deflated as the final
    /// blocks, then the trailer (CRC and length of everything).
    pub fn finish(&self, tail: &[u8]) -> [Bytes; 2] {
        use std::io::Write as _;
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = encoder.write_all(tail);
        let mut end = encoder.finish().unwrap_or_default();
        let mut tail_crc = flate2::Crc::new();
        tail_crc.update(tail);
        let mut crc = flate2::Crc::new();
        crc.combine(&self.crc);
        crc.combine(&tail_crc);
        end.extend_from_slice(&crc.sum().to_le_bytes());
        end.extend_from_slice(&crc.amount().to_le_bytes());
        [self.bytes.clone(), Bytes::from(end)]
    }
}

impl SnapshotStore {
    /// An empty store.
    pub fn new() -> SnapshotStore {
        SnapshotStore::default()
    }

    /// Replace one cluster's part and re-render the chunk list.
    pub fn publish(&self, cluster: &str, exposition: Exposition) {
        // String -> Bytes takes the allocation over: no copy of the series text.
        let part: BTreeMap<&'static str, Bytes> = exposition
            .lines
            .into_iter()
            .map(|(name, text)| (name, Bytes::from(text)))
            .collect();
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        parts.insert(cluster.to_string(), part);
        let mut chunks = Vec::new();
        for (name, kind, help) in FAMILIES {
            let mut header_written = false;
            for part in parts.values() {
                if let Some(lines) = part.get(name) {
                    if !header_written {
                        let mut header = String::new();
                        let _ = writeln!(header, "# HELP {name} {help}");
                        let _ = writeln!(header, "# TYPE {name} {}", kind.as_str());
                        chunks.push(Bytes::from(header));
                        header_written = true;
                    }
                    chunks.push(lines.clone());
                }
            }
        }
        *self.rendered.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Rendered {
            chunks: Arc::new(chunks),
            gzip: std::sync::OnceLock::new(),
        });
    }

    fn rendered(&self) -> Arc<Rendered> {
        self.rendered
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current snapshot as shared chunks (a cheap clone).
    pub fn chunks(&self) -> Arc<Vec<Bytes>> {
        self.rendered().chunks.clone()
    }

    /// The current snapshot compressed as the start of a gzip member, at
    /// most once per published snapshot (the first caller compresses,
    /// concurrent ones wait for it).
    pub fn gzipped(&self) -> Arc<GzipStart> {
        let rendered = self.rendered();
        rendered
            .gzip
            .get_or_init(|| Arc::new(GzipStart::new(rendered.chunks.iter())))
            .clone()
    }

    /// The current snapshot as one contiguous text (a copy; for tests and tools).
    pub fn current(&self) -> Bytes {
        let chunks = self.chunks();
        let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
        for chunk in chunks.iter() {
            out.extend_from_slice(chunk);
        }
        Bytes::from(out)
    }
}

/// The daemon's own metrics, updated in place (they describe the daemon, not
/// the cluster): requests by code and result, build info.
#[derive(Clone)]
pub struct SelfMetrics {
    registry: Registry,
    requests: IntCounterVec,
}

impl std::fmt::Debug for SelfMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SelfMetrics")
    }
}

impl SelfMetrics {
    /// Register the self metrics in a fresh registry.
    pub fn new() -> SelfMetrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "mqaudit_broker_requests_total",
                "Admin requests sent to name servers and brokers, by request code and result (ok, timeout, io, protocol, remote; remote includes answers such as 'consumer not online').",
            ),
            &["rocketmq_cluster", "code", "result"],
        )
        .expect("metric opts are static and valid");
        let build = IntGaugeVec::new(
            Opts::new(
                "mqaudit_build_info",
                "Always 1; the version label is the mqaudit version.",
            ),
            &["version"],
        )
        .expect("metric opts are static and valid");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric name");
        registry
            .register(Box::new(build))
            .expect("unique metric name");
        SelfMetrics { registry, requests }
    }

    /// Count one request.
    pub fn observe_request(&self, cluster: &str, code: i32, result: &str) {
        self.requests
            .with_label_values(&[cluster, &code.to_string(), result])
            .inc();
    }

    /// An observer to hand to [`crate::admin::Admin::with_observer`] for one cluster.
    pub fn request_observer(&self, cluster: &str) -> crate::admin::RequestObserver {
        let metrics = self.clone();
        let cluster = cluster.to_string();
        Arc::new(move |code, result| metrics.observe_request(&cluster, code, result))
    }

    /// The self metrics in text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for SelfMetrics {
    fn default() -> Self {
        SelfMetrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_follow_the_conventions() {
        for (name, kind, help) in FAMILIES {
            assert!(
                name.starts_with("rocketmq_") || name.starts_with("mqaudit_"),
                "{name}"
            );
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert_eq!(
                *kind == Kind::Counter,
                name.ends_with("_total"),
                "{name}: _total iff counter"
            );
            assert!(!help.is_empty() && !help.contains('\n'), "{name}");
        }
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "duplicate family");
    }

    #[test]
    fn the_gzip_copy_decompresses_to_the_snapshot_and_is_made_once_per_publish() {
        use std::io::Read as _;
        let store = SnapshotStore::new();
        let mut e = Exposition::new();
        for i in 0..1_000 {
            e.sample("rocketmq_broker_up", &[("broker", &format!("b{i}"))], 1.0);
        }
        store.publish("c", e);
        let start = store.gzipped();
        let tail = b"mqaudit_build_info{version=\"x\"} 1\n";
        let member: Vec<u8> = start.finish(tail).concat();
        // One member: the single-member decoder reads all of it.
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&member[..])
            .read_to_end(&mut text)
            .expect("gunzip");
        let mut expected = store.current().to_vec();
        expected.extend_from_slice(tail);
        assert_eq!(text, expected);
        assert!(
            member.len() * 5 < text.len(),
            "{} of {}",
            member.len(),
            text.len()
        );
        // Shared, not recompressed.
        assert!(Arc::ptr_eq(&store.gzipped(), &start));
        store.publish("c", Exposition::new());
        assert!(!Arc::ptr_eq(&store.gzipped(), &start));
        let mut empty = Vec::new();
        flate2::read::GzDecoder::new(&store.gzipped().finish(b"")[..].concat()[..])
            .read_to_end(&mut empty)
            .expect("gunzip empty");
        assert!(empty.is_empty());
    }

    #[test]
    fn docs_metrics_md_documents_every_family() {
        let docs = include_str!("../docs/metrics.md");
        for name in FAMILIES
            .iter()
            .map(|f| f.0)
            .chain(["mqaudit_broker_requests_total", "mqaudit_build_info"])
        {
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "docs/metrics.md lacks {name}"
            );
        }
    }

    #[test]
    fn snapshot_writes_help_and_type_once_across_clusters_and_escapes_labels() {
        let store = SnapshotStore::new();
        let mut a = Exposition::new();
        a.sample(
            "rocketmq_broker_up",
            &[("rocketmq_cluster", "a"), ("broker", "x\"y\\z\n")],
            1.0,
        );
        let mut b = Exposition::new();
        b.sample("rocketmq_broker_up", &[("rocketmq_cluster", "b")], 0.0);
        b.sample("rocketmq_broker_flush_lag_bytes", &[], 1.5);
        store.publish("a", a);
        store.publish("b", b);
        let text = String::from_utf8(store.current().to_vec()).expect("utf8");
        assert_eq!(text.matches("# TYPE rocketmq_broker_up gauge").count(), 1);
        assert!(text.contains("broker=\"x\\\"y\\\\z\\n\""), "{text}");
        assert!(text.contains("rocketmq_broker_up{rocketmq_cluster=\"b\"} 0\n"));
        assert!(text.contains("rocketmq_broker_flush_lag_bytes 1.5\n"));
        // Republishing a cluster replaces its series: deleted things vanish.
        store.publish("b", Exposition::new());
        let text = String::from_utf8(store.current().to_vec()).expect("utf8");
        assert!(!text.contains("cluster=\"b\""));
    }

    #[test]
    fn self_metrics_count_requests() {
        let metrics = SelfMetrics::new();
        metrics.observe_request("c", 28, "ok");
        metrics.observe_request("c", 28, "ok");
        let text = String::from_utf8(metrics.render()).expect("utf8");
        assert!(
            text.contains(
                "mqaudit_broker_requests_total{code=\"28\",result=\"ok\",rocketmq_cluster=\"c\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("mqaudit_build_info{version="));
    }
}
