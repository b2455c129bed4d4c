//! The shipped alert rules and dashboards, checked mechanically:
//! every alert has severity, summary, templated description and a runbook
//! link to an existing section; every alert is covered by a promtool test;
//! every metric used exists in the exporter's families or in design
//! section 5; every dashboard follows the conventions; and promtool itself
//! checks and unit-tests the rules.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn files(dir: &str, suffix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root().join(dir))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    out.sort();
    out
}

/// The audit families of design section 5 (a contract with the audit alerts and dashboard).
const AUDIT_FAMILIES: &[&str] = &[
    "mqaudit_audit_runs_total",
    "mqaudit_audit_last_success_timestamp_seconds",
    "mqaudit_messages_produced_total",
    "mqaudit_messages_consumed_total",
    "mqaudit_messages_lost_total",
    "mqaudit_messages_dead_lettered_total",
    "mqaudit_messages_duplicated_total",
    "mqaudit_messages_orphaned_total",
    "mqaudit_messages_pending",
];

fn known_metrics(recorded: &BTreeSet<String>) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = mqaudit::metrics::FAMILIES
        .iter()
        .map(|f| f.0.to_string())
        .collect();
    // A histogram is queried by its series' names.
    for (name, kind, _) in mqaudit::metrics::FAMILIES {
        if *kind == mqaudit::metrics::Kind::Histogram {
            known.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        }
    }
    known.extend(["mqaudit_broker_requests_total", "mqaudit_build_info"].map(String::from));
    known.extend(AUDIT_FAMILIES.iter().map(|s| s.to_string()));
    known.extend(recorded.iter().cloned());
    known
}

/// Metric names (and recording-rule names) used in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = expr[i..].starts_with("rocketmq") || expr[i..].starts_with("mqaudit");
        let boundary = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        if starts && boundary {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(expr.len(), |e| i + e);
            // `rocketmq_cluster` is the one label name with the prefix (in
            // matchers and in by/on clauses); everything else is a metric.
            if &expr[i..end] != "rocketmq_cluster" {
                out.insert(expr[i..end].to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn rules() -> Vec<(String, Yaml)> {
    let doc: Yaml =
        serde_yaml_ng::from_str(&read("alerts/mqaudit.rules.yml")).expect("rules parse");
    doc["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| {
            let name = g["name"].as_str().expect("group name").to_string();
            g["rules"]
                .as_sequence()
                .expect("rules")
                .iter()
                .map(move |r| (name.clone(), r.clone()))
        })
        .collect()
}

#[test]
fn alert_rules_have_severity_summary_description_and_a_runbook_section() {
    let runbook = read("docs/runbook.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let all = rules();
    let groups: BTreeSet<&str> = all.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(
        groups,
        BTreeSet::from([
            "mqaudit-exporter",
            "rocketmq-broker",
            "rocketmq-core",
            "rocketmq-durability",
            "rocketmq-consumer",
            "mqaudit-audit",
            "mqaudit-probe"
        ])
    );
    let alerts: Vec<&Yaml> = all
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r["alert"].is_string())
        .collect();
    assert!(alerts.len() >= 20, "only {} alerts", alerts.len());
    for rule in alerts {
        let name = rule["alert"].as_str().expect("name");
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        let a = &rule["annotations"];
        assert!(
            a["summary"].as_str().is_some_and(|s| !s.contains("{{")),
            "{name}: summary must be plain text"
        );
        assert!(
            a["description"]
                .as_str()
                .is_some_and(|d| d.contains("{{ $labels.") || d.contains("{{ $value")),
            "{name}: description must be templated"
        );
        let url = a["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: runbook_url"));
        let anchor = url.split_once('#').map(|(_, a)| a).unwrap_or("");
        assert_eq!(anchor, name.to_ascii_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(anchor),
            "{name}: docs/runbook.md has no section {anchor}"
        );
        // Event alerts (a counter increased, a value changed) fire at once; state alerts need `for`.
        let expr = rule["expr"].as_str().expect("expr");
        let event = ["increase(", "changes(", "delta(rocketmq_consumer_group_dlq"]
            .iter()
            .any(|f| expr.contains(f))
            && !expr.contains(" and ");
        assert!(
            event || rule["for"].is_string(),
            "{name}: a state alert needs `for`"
        );
    }
}

#[test]
fn every_alert_is_covered_by_a_firing_and_a_silent_promtool_case() {
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for file in files("alerts/tests", ".test.yml") {
        let doc: Yaml = serde_yaml_ng::from_str(&read(&file)).expect("test file parses");
        for test in doc["tests"].as_sequence().expect("tests") {
            for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = case["alertname"].as_str().expect("alertname").to_string();
                if case["exp_alerts"]
                    .as_sequence()
                    .is_some_and(|a| !a.is_empty())
                {
                    firing.insert(name);
                } else {
                    silent.insert(name);
                }
            }
        }
    }
    for (_, rule) in rules() {
        if let Some(name) = rule["alert"].as_str() {
            assert!(firing.contains(name), "{name} has no firing case");
            assert!(silent.contains(name), "{name} has no silent case");
        }
    }
}

#[test]
fn every_metric_in_rules_and_dashboards_exists() {
    let recorded: BTreeSet<String> = rules()
        .iter()
        .filter_map(|(_, r)| r["record"].as_str().map(String::from))
        .collect();
    let known = known_metrics(&recorded);
    for (_, rule) in rules() {
        for name in metric_names(rule["expr"].as_str().expect("expr")) {
            assert!(known.contains(&name), "rule uses unknown metric {name}");
        }
    }
    for file in files("dashboards", ".json") {
        let dash: Json = serde_json::from_str(&read(&file)).expect("dashboard parses");
        for panel in dash["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                for name in metric_names(target["expr"].as_str().expect("expr")) {
                    assert!(
                        known.contains(&name),
                        "{file}: panel {:?} uses unknown metric {name}",
                        panel["title"]
                    );
                }
            }
        }
        for variable in dash["templating"]["list"].as_array().expect("variables") {
            if let Some(query) = variable["definition"].as_str() {
                for name in metric_names(query) {
                    assert!(
                        known.contains(&name),
                        "{file}: variable uses unknown metric {name}"
                    );
                }
            }
        }
    }
}

#[test]
fn dashboards_follow_the_conventions() {
    let mut uids = BTreeSet::new();
    let dashboards = files("dashboards", ".json");
    assert!(dashboards.len() >= 4);
    for file in dashboards {
        let dash: Json = serde_json::from_str(&read(&file)).expect("dashboard parses");
        assert!(dash["id"].is_null(), "{file}: id must be null");
        let uid = dash["uid"].as_str().expect("uid");
        assert!(uids.insert(uid.to_string()), "{file}: duplicate uid {uid}");
        let variables: BTreeSet<&str> = dash["templating"]["list"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for required in ["datasource", "rocketmq_cluster", "broker", "topic", "group"] {
            assert!(
                variables.contains(required),
                "{file}: no {required} variable"
            );
        }
        for panel in dash["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().unwrap_or("?");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {title}: panel data source"
            );
            assert!(
                panel["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty()),
                "{file}: {title}: no unit"
            );
            assert!(
                panel["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("rocketmq_") || d.contains("mqaudit_")),
                "{file}: {title}: description must name the metric"
            );
            for target in panel["targets"].as_array().expect("targets") {
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{file}: {title}: target data source"
                );
                let expr = target["expr"].as_str().expect("expr");
                for (i, _) in expr.match_indices('[') {
                    let window = &expr[i..expr[i..].find(']').map_or(expr.len(), |e| i + e + 1)];
                    assert!(
                        window == "[$__rate_interval]" || window == "[$__range]",
                        "{file}: {title}: range {window} in {expr}"
                    );
                }
            }
        }
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let check = Command::new("promtool")
        .args(["check", "rules", "alerts/mqaudit.rules.yml"])
        .current_dir(root())
        .output()
        .expect("promtool is required (Debian package prometheus; scripts/test.sh installs it)");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let tests = files("alerts/tests", ".test.yml");
    let run = Command::new("promtool")
        .args(["test", "rules"])
        .args(&tests)
        .current_dir(root())
        .output()
        .expect("promtool");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{output}");
    assert_eq!(output.matches("SUCCESS").count(), tests.len(), "{output}");
}

#[test]
fn the_design_audit_families_are_emitted_by_the_exporter() {
    let declared: BTreeSet<&str> = mqaudit::metrics::FAMILIES.iter().map(|f| f.0).collect();
    for family in AUDIT_FAMILIES {
        assert!(
            declared.contains(family),
            "design section 5 names {family}, the exporter does not declare it"
        );
    }
}

#[test]
fn the_metric_name_extractor_skips_label_names() {
    let names = metric_names(
        r#"sum by (group) (rate(rocketmq_consumer_group_offset{rocketmq_cluster=~"$c"}[1m])) / mqaudit_build_info and rocketmq:x:y"#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "rocketmq_consumer_group_offset".to_string(),
            "mqaudit_build_info".to_string(),
            "rocketmq:x:y".to_string()
        ])
    );
}
