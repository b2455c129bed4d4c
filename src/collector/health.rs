//! The collectors' own health: which failed this cycle, how long each
//! took, when each last succeeded, and errors counted by kind across
//! cycles — the `mqaudit_collector_*` families.

use std::collections::{BTreeMap, BTreeSet};

use crate::admin::Error;
use crate::metrics::Exposition;

/// Collector health of one cluster, kept across cycles.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// Collectors that failed this cycle.
    failed: BTreeSet<&'static str>,
    /// Seconds each collector took this cycle.
    duration: BTreeMap<&'static str, f64>,
    /// Errors so far, by collector and kind.
    errors: BTreeMap<(&'static str, &'static str), u64>,
    /// Epoch seconds of each collector's last successful cycle.
    last_success: BTreeMap<&'static str, f64>,
}

impl Health {
    /// Forget the previous cycle's failures and timings.
    pub fn start_cycle(&mut self) {
        self.failed.clear();
        self.duration.clear();
    }

    /// `collector` failed this cycle with `error`.
    pub fn failed(&mut self, collector: &'static str, error: &Error) {
        self.failed.insert(collector);
        *self.errors.entry((collector, error.kind())).or_default() += 1;
    }

    /// `collector` could not run this cycle (nothing to collect from).
    pub fn skipped(&mut self, collector: &'static str) {
        self.failed.insert(collector);
    }

    /// `collector` took `seconds`.
    pub fn took(&mut self, collector: &'static str, seconds: f64) {
        self.duration.insert(collector, seconds);
    }

    /// Collectors that failed this cycle.
    pub fn failures(&self) -> &BTreeSet<&'static str> {
        &self.failed
    }

    /// Write the `mqaudit_collector_*` series of `collectors`.
    pub fn render(
        &mut self,
        cluster: &str,
        collectors: &[&'static str],
        now_ms: i64,
        out: &mut Exposition,
    ) {
        for &collector in collectors {
            let labels = [("rocketmq_cluster", cluster), ("collector", collector)];
            let ok = !self.failed.contains(collector);
            if ok {
                self.last_success.insert(collector, now_ms as f64 / 1000.0);
            }
            out.sample(
                "mqaudit_collector_success",
                &labels,
                if ok { 1.0 } else { 0.0 },
            );
            out.sample(
                "mqaudit_collector_duration_seconds",
                &labels,
                self.duration.get(collector).copied().unwrap_or(0.0),
            );
            if let Some(t) = self.last_success.get(collector) {
                out.sample(
                    "mqaudit_collector_last_success_timestamp_seconds",
                    &labels,
                    *t,
                );
            }
            for kind in Error::KINDS {
                let count = self.errors.get(&(collector, kind)).copied().unwrap_or(0);
                out.sample(
                    "mqaudit_collector_errors_total",
                    &[labels[0], labels[1], ("error_type", kind)],
                    count as f64,
                );
            }
        }
    }
}
