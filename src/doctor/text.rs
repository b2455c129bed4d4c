//! The doctor's report for a terminal: brokers, consumer groups, verdicts,
//! and the calls that failed, one section each.

use std::fmt::Write as _;

use super::{BrokerReport, GroupReport, NameServerReport, ProbeError, Report, Risk, Severity};

/// Render the report for a terminal.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mqaudit doctor — name server {} — clusters: {}",
        report.namesrv,
        report.clusters.join(", ")
    );
    brokers(&mut out, &report.brokers);
    name_servers(&mut out, &report.name_servers);
    controllers(&mut out, report);
    groups(&mut out, &report.groups);
    risks(&mut out, &report.risks);
    errors(&mut out, &report.errors);
    out
}

fn opt(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_string())
}

fn brokers(out: &mut String, brokers: &[BrokerReport]) {
    let _ = writeln!(out, "\nBROKERS");
    let _ = writeln!(
        out,
        "  {:<18} {:>2}  {:<21} {:<12} {:<10} {:>12} {:>14} {:>14} {:>6}  version",
        "broker",
        "id",
        "addr",
        "role",
        "flush",
        "flush lag B",
        "commitlog min",
        "commitlog max",
        "disk"
    );
    for b in brokers {
        let _ = writeln!(
            out,
            "  {:<18} {:>2}  {:<21} {:<12} {:<10} {:>12} {:>14} {:>14} {:>6}  {}{}",
            b.broker_name,
            b.broker_id,
            b.addr,
            opt(b.role.clone()),
            opt(b
                .flush_disk_type
                .as_ref()
                .map(|f| f.trim_end_matches("_FLUSH").to_string())),
            opt(b.flush_lag_bytes.map(|v| v.to_string())),
            opt(b.commit_log_min_offset.map(|v| v.to_string())),
            opt(b.commit_log_max_offset.map(|v| v.to_string())),
            opt(b.disk_ratio.map(|v| format!("{:.0}%", v * 100.0))),
            opt(b.version.clone()),
            match (b.reachable, b.writable) {
                (false, _) => "  UNREACHABLE",
                (true, Some(false)) => "  READ-ONLY",
                _ => "",
            }
        );
        for r in &b.replicas {
            let in_sync = r.in_sync.map(|v| if v { "yes" } else { "NO" }.to_string());
            let _ = writeln!(
                out,
                "      ↳ slave {} {}: replication lag {} bytes, in sync: {} (from {})",
                r.broker_id,
                r.addr,
                opt(r.lag_bytes.map(|v| v.to_string())),
                opt(in_sync),
                r.source
            );
        }
    }
}

fn name_servers(out: &mut String, name_servers: &[NameServerReport]) {
    let _ = writeln!(out, "\nNAME SERVERS");
    for n in name_servers {
        let state = match (n.reachable, n.brokers) {
            (true, Some(b)) => format!("up, lists {b} brokers"),
            (true, None) => "up".to_string(),
            (false, _) => "DOWN".to_string(),
        };
        let _ = writeln!(out, "  {:<21} {state}", n.addr);
    }
}

/// 5.x controller mode only: nothing is printed without it.
fn controllers(out: &mut String, report: &Report) {
    if report.controllers.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nCONTROLLERS");
    for c in &report.controllers {
        let state = match (c.reachable, c.is_leader) {
            (false, _) => "DOWN".to_string(),
            (true, true) => "up, leader".to_string(),
            (true, false) if c.leader_addr.is_empty() => "up, no leader known".to_string(),
            (true, false) => format!("up, follower of {}", c.leader_addr),
        };
        let _ = writeln!(out, "  {:<21} {state}", c.addr);
    }
    for s in &report.sync_states {
        let _ = writeln!(
            out,
            "  {:<21} master {} epoch {}, in sync: {}; not in sync: {}",
            s.broker_name,
            opt(s.master_addr.clone()),
            opt(s.master_epoch.map(|e| e.to_string())),
            if s.in_sync.is_empty() {
                "-".to_string()
            } else {
                s.in_sync.join(", ")
            },
            if s.not_in_sync.is_empty() {
                "-".to_string()
            } else {
                s.not_in_sync.join(", ")
            }
        );
    }
}

fn groups(out: &mut String, groups: &[GroupReport]) {
    let _ = writeln!(out, "\nCONSUMER GROUPS");
    if groups.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let _ = writeln!(
        out,
        "  {:<40} {:>9} {:>12} {:>8} {:>8}  model",
        "group", "consumers", "lag", "retry", "dlq"
    );
    for g in groups {
        let _ = writeln!(
            out,
            "  {:<40} {:>9} {:>12} {:>8} {:>8}  {}",
            g.group,
            g.online_consumers,
            g.lag_messages,
            g.retry_messages,
            g.dlq_messages,
            opt(g.message_model.clone())
        );
        if !g.pop_topics.is_empty() {
            let _ = writeln!(
                out,
                "    pops (lag approximate): {}",
                g.pop_topics.join(", ")
            );
        }
    }
}

fn risks(out: &mut String, risks: &[Risk]) {
    let _ = writeln!(out, "\nVERDICTS");
    if risks.is_empty() {
        let _ = writeln!(out, "  no loss risk found");
    }
    for r in risks {
        let severity = match r.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING ",
            Severity::Info => "INFO    ",
        };
        let _ = writeln!(
            out,
            "  {severity} {:<22} {}: {}",
            r.kind, r.subject, r.detail
        );
        let _ = writeln!(out, "           → {}", r.advice);
    }
}

fn errors(out: &mut String, errors: &[ProbeError]) {
    if errors.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nINCOMPLETE: {} calls failed", errors.len());
    for e in errors {
        let _ = writeln!(out, "  {} {} [{}]: {}", e.call, e.target, e.kind, e.message);
    }
}
