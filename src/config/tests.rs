//! Configuration tests: the shipped files, defaults, every validation
//! naming its option, closed sets, bounds and flag overrides.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn example_and_minimal_files_parse() {
    for (name, text) in [
        ("example.toml", include_str!("../../config/example.toml")),
        ("minimal.toml", include_str!("../../config/minimal.toml")),
        (
            "quickstart.toml",
            include_str!("../../config/quickstart.toml"),
        ),
    ] {
        let env = |k: &str| {
            (k == "ROCKETMQ_ACCESS_KEY" || k == "ROCKETMQ_SECRET_KEY").then(|| "x".to_string())
        };
        Config::from_toml_str(text, env).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn example_documents_every_default() {
    let example = Config::from_toml_str(include_str!("../../config/example.toml"), |_| {
        Some("x".into())
    })
    .expect("example");
    let minimal =
        Config::from_toml_str(include_str!("../../config/minimal.toml"), no_env).expect("minimal");
    // The example spells out the defaults: same settings as the minimal file.
    assert_eq!(example.collect, minimal.collect);
    assert_eq!(example.web, minimal.web);
    assert_eq!(example.audit, minimal.audit);
}

#[test]
fn flows_parse_with_every_source_kind_and_bad_ones_name_the_option() {
    let base = "[[cluster]]\nname = \"prod\"\nnamesrv = [\"h:1\"]\n";
    let flow = |schedule: &str, produced: &str, consumed: &str| {
        format!(
            "{base}[[flow]]\nname = \"orders\"\ncluster = \"prod\"\ntopic = \"t\"\ngroup = \"g\"\nschedule = \"{schedule}\"\nproduced = {produced}\nconsumed = {consumed}\n"
        )
    };
    let ok = flow(
        "0 */5 * * * *",
        "{ kind = \"rocketmq_trace\", key = \"msg_id\" }",
        "{ kind = \"sql\", url_env = \"DB\", query = \"SELECT 1\" }",
    );
    let config = Config::from_toml_str(&ok, |k| (k == "DB").then(|| "postgres://x".to_string()))
        .expect("valid");
    assert_eq!(config.flows[0].window, Duration::from_secs(300));
    assert_eq!(config.flows[0].deadline, Duration::from_secs(3600));
    for (text, field) in [
        (
            flow(
                "*/5 * * * *",
                "{ kind = \"jsonl\", path = \"p\" }",
                "{ kind = \"jsonl\", path = \"p\" }",
            ),
            "flow[0].schedule",
        ),
        (
            flow(
                "0 * * * * *",
                "{ kind = \"sql\", url_env = \"NOPE\", query = \"q\" }",
                "{ kind = \"jsonl\", path = \"p\" }",
            ),
            "flow[0].produced.url_env",
        ),
        (
            flow(
                "0 * * * * *",
                "{ kind = \"http\", url = \"ftp://x\" }",
                "{ kind = \"jsonl\", path = \"p\" }",
            ),
            "flow[0].produced.url",
        ),
    ] {
        match Config::from_toml_str(&text, no_env) {
            Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let unknown = flow(
        "0 * * * * *",
        "{ kind = \"jsonl\", path = \"p\", paht = \"q\" }",
        "{ kind = \"jsonl\", path = \"p\" }",
    );
    assert!(
        Config::from_toml_str(&unknown, no_env)
            .expect_err("unknown key")
            .to_string()
            .contains("paht")
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let err = Config::from_toml_str(
        "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n\n[collect]\nintervall_seconds = 5\n",
        no_env,
    )
    .expect_err("typo");
    let text = err.to_string();
    assert!(
        text.contains("line 6") && text.contains("intervall_seconds"),
        "{text}"
    );
}

#[test]
fn invalid_values_name_the_option() {
    let base = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n";
    for (extra, field) in [
        (
            "[collect]\ninterval_seconds = 5\ntimeout_seconds = 5\n",
            "collect.timeout_seconds",
        ),
        (
            "[collect]\ninterval_seconds = 60\ndiscovery_interval_seconds = 10\n",
            "collect.discovery_interval_seconds",
        ),
        ("[web]\nlisten_address = \"nope\"\n", "web.listen_address"),
        (
            "[web]\ntelemetry_path = \"/-/ready\"\n",
            "web.telemetry_path",
        ),
        (
            "[audit]\ntrace_concurrency = 0\n",
            "audit.trace_concurrency",
        ),
        (
            "[audit]\nmemory_budget = \"256 MB\"\n",
            "audit.memory_budget",
        ),
        ("[audit]\nmemory_budget = \"MiB\"\n", "audit.memory_budget"),
        ("[audit]\nmemory_budget = 1000\n", "audit.memory_budget"),
        (
            "[audit]\nmemory_budget = \"99999999 TiB\"\n",
            "audit.memory_budget",
        ),
        ("[audit]\nreuse_budget = \"lots\"\n", "audit.reuse_budget"),
        (
            "[audit]\nreuse_budget = \"2048 TiB\"\n",
            "audit.reuse_budget",
        ),
    ] {
        match Config::from_toml_str(&format!("{base}{extra}"), no_env) {
            Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{extra}: {other:?}"),
        }
    }
    let err = Config::from_toml_str("[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\naccess_key_env = \"AK\"\nsecret_key_env = \"SK\"\n", no_env)
        .expect_err("missing env");
    assert!(err.to_string().contains("AK is not set"), "{err}");
    assert!(Config::from_toml_str("", no_env).is_err());
}

#[test]
fn the_memory_budget_takes_bytes_or_a_binary_unit() {
    let base = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n[audit]\nmemory_budget = ";
    for (value, bytes) in [
        ("\"256 MiB\"", 256 << 20),
        ("\"1GiB\"", 1 << 30),
        ("\" 2048 KiB \"", 2 << 20),
        ("1048576", 1 << 20),
    ] {
        let config = Config::from_toml_str(&format!("{base}{value}\n"), no_env)
            .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(config.audit.memory_budget, bytes, "{value}");
    }
    let reuse = |extra: &str| {
        Config::from_toml_str(
            &format!("[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n[audit]\n{extra}"),
            no_env,
        )
        .expect("config")
        .audit
        .reuse_budget
    };
    assert_eq!(reuse(""), 128 << 20, "the default");
    assert_eq!(reuse("reuse_budget = 0\n"), 0, "keeps nothing");
    assert_eq!(reuse("reuse_budget = \"16 MiB\"\n"), 16 << 20);
}

#[test]
fn namesrv_only_config_uses_defaults() {
    let config = Config::for_namesrv("127.0.0.1:9876").expect("valid");
    assert_eq!(config.clusters[0].name, "default");
    assert_eq!(config.collect.interval, Duration::from_secs(30));
    assert!(Config::for_namesrv("no-port").is_err());
}

#[test]
fn closed_sets_are_parse_errors_naming_the_line_and_the_choices() {
    let base = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n";
    let err = Config::from_toml_str(
        &format!("{base}[collect]\ngranularity = \"partition\"\n"),
        no_env,
    )
    .expect_err("granularity");
    let text = err.to_string();
    assert!(
        matches!(err, ConfigError::Parse(_)) && text.contains("line 5") && text.contains("queue"),
        "{text}"
    );
    let flow = format!(
        "{base}[[flow]]\nname = \"f\"\ncluster = \"a\"\ntopic = \"t\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n\
         produced = {{ kind = \"rocketmq_trace\", key = \"id\" }}\nconsumed = {{ kind = \"jsonl\", path = \"p\" }}\n"
    );
    let text = Config::from_toml_str(&flow, no_env)
        .expect_err("trace key")
        .to_string();
    assert!(
        text.contains("msg_id") && text.contains("line 10"),
        "{text}"
    );
}

#[test]
fn durations_have_upper_bounds() {
    let base = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n";
    let flow = "[[flow]]\nname = \"f\"\ncluster = \"a\"\ntopic = \"t\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n";
    let jsonl = "{ kind = \"jsonl\", path = \"p\" }";
    for (extra, field) in [
        (
            "[collect]\ninterval_seconds = 9223372036854775807\n".to_string(),
            "collect.interval_seconds",
        ),
        (
            "[collect]\ndiscovery_interval_seconds = 100000000\n".to_string(),
            "collect.discovery_interval_seconds",
        ),
        (
            format!(
                "{flow}deadline_seconds = 9223372036854775807\nproduced = {jsonl}\nconsumed = {jsonl}\n"
            ),
            "flow[0].deadline_seconds",
        ),
        (
            format!(
                "{flow}produced = {{ kind = \"http\", url = \"http://x\", timeout_seconds = 100000 }}\nconsumed = {jsonl}\n"
            ),
            "flow[0].produced.timeout_seconds",
        ),
    ] {
        match Config::from_toml_str(&format!("{base}{extra}"), no_env) {
            Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{extra}"),
            other => panic!("{extra}: {other:?}"),
        }
    }
}

#[test]
fn the_default_timeout_fits_a_short_interval() {
    let base = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n";
    for (interval, timeout) in [(1, 1), (2, 1), (5, 4), (6, 5), (30, 5)] {
        let config = Config::from_toml_str(
            &format!("{base}[collect]\ninterval_seconds = {interval}\n"),
            no_env,
        )
        .unwrap_or_else(|e| panic!("{interval}: {e}"));
        assert_eq!(
            config.collect.timeout,
            Duration::from_secs(timeout),
            "interval {interval}"
        );
        assert_eq!(config.collect.budget, Duration::from_secs(interval));
        assert!(config.collect.discovery_interval >= config.collect.interval);
    }
}

#[test]
fn flags_override_the_file_through_the_same_checks() {
    let file = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n[collect]\ninterval_seconds = 60\ntimeout_seconds = 10\n";
    let overrides = Overrides {
        namesrv: Some("other:9876".to_string()),
        listen_address: Some("127.0.0.1:1".to_string()),
        telemetry_path: Some("/m".to_string()),
        interval_seconds: Some(20),
        ..Overrides::default()
    };
    let config = Config::from_toml_with(file, &overrides, no_env).expect("valid");
    assert_eq!(config.clusters[0].namesrv, ["other:9876"]);
    assert_eq!(config.web.listen_address, "127.0.0.1:1");
    assert_eq!(config.web.telemetry_path, "/m");
    assert_eq!(config.collect.interval, Duration::from_secs(20));
    assert_eq!(config.collect.timeout, Duration::from_secs(10));
    // A flag is checked by the rule for the option it sets.
    for (overrides, field) in [
        (
            Overrides {
                interval_seconds: Some(5),
                ..Overrides::default()
            },
            "collect.timeout_seconds",
        ),
        (
            Overrides {
                telemetry_path: Some("/-/ready".to_string()),
                ..Overrides::default()
            },
            "web.telemetry_path",
        ),
        (
            Overrides {
                listen_address: Some("nope".to_string()),
                ..Overrides::default()
            },
            "web.listen_address",
        ),
        (
            Overrides {
                interval_seconds: Some(0),
                ..Overrides::default()
            },
            "collect.interval_seconds",
        ),
    ] {
        match Config::from_toml_with(file, &overrides, no_env) {
            Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let two = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n[[cluster]]\nname = \"b\"\nnamesrv = [\"h:2\"]\n";
    let namesrv = Overrides {
        namesrv: Some("x:1".to_string()),
        ..Overrides::default()
    };
    assert!(matches!(
        Config::from_toml_with(two, &namesrv, no_env),
        Err(ConfigError::Invalid { field, .. }) if field == "--namesrv"
    ));
    // Without a file: the one default cluster, flags on top.
    let config = Config::for_namesrv_with(&Overrides {
        interval_seconds: Some(1),
        ..namesrv
    })
    .expect("valid");
    assert_eq!(config.clusters[0].name, "default");
    assert_eq!(config.collect.timeout, Duration::from_secs(1));
}

#[test]
fn secrets_are_read_once_and_never_printed() {
    let text = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n[[flow]]\nname = \"f\"\ncluster = \"a\"\ntopic = \"t\"\ngroup = \"g\"\n\
                schedule = \"0 * * * * *\"\nproduced = { kind = \"sql\", url_env = \"DB\", query = \"q\" }\nconsumed = { kind = \"jsonl\", path = \"p\" }\n";
    let reads = std::cell::Cell::new(0);
    let config = Config::from_toml_str(text, |k| {
        reads.set(reads.get() + 1);
        (k == "DB").then(|| "postgres://user:hunter2@db/orders".to_string())
    })
    .expect("valid");
    assert_eq!(reads.get(), 1);
    match &config.flows[0].produced {
        SourceConfig::Sql { url, .. } => {
            assert_eq!(url.expose(), "postgres://user:hunter2@db/orders");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{config:?}").contains("hunter2"));
}

/// What `example.toml` spells out for flows: the `*_seconds` lines of the
/// commented flow block, and each source example's options.
fn example_flow_defaults() -> (String, Vec<String>) {
    let example = include_str!("../../config/example.toml");
    let flow_start = example.find("# [[flow]]").expect("flow block");
    let uncommented = || {
        example[flow_start..]
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
    };
    let mut flow = String::new();
    for line in uncommented() {
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if key.ends_with("_seconds") {
            // Without the trailing comment.
            flow.push_str(line.split('#').next().unwrap_or("").trim());
            flow.push('\n');
        }
    }
    let sources = uncommented()
        .filter(|l| l.starts_with("{ kind = "))
        .map(str::to_string)
        .collect();
    (flow, sources)
}

#[test]
fn example_documents_every_flow_and_source_default() {
    let base = "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n";
    let flow = |extra: &str, produced: &str| {
        format!(
            "{base}[[flow]]\nname = \"f\"\ncluster = \"a\"\ntopic = \"t\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\n{extra}\
             produced = {produced}\nconsumed = {{ kind = \"jsonl\", path = \"p\" }}\n"
        )
    };
    let env = |_: &str| Some("postgres://x".to_string());
    let jsonl = "{ kind = \"jsonl\", path = \"p\" }";
    let (flow_defaults, sources) = example_flow_defaults();
    assert_eq!(flow_defaults.lines().count(), 5, "{flow_defaults}");
    let spelled = Config::from_toml_str(&flow(&flow_defaults, jsonl), env).expect("example flow");
    let bare = Config::from_toml_str(&flow("", jsonl), env).expect("bare flow");
    assert_eq!(spelled.flows, bare.flows);
    // Each source example's options that have defaults, added to the
    // source with only its required options, change nothing.
    let required = [
        ("rocketmq_trace", "kind = \"rocketmq_trace\""),
        ("sql", "kind = \"sql\", url_env = \"DB\", query = \"q\""),
        (
            "http",
            "kind = \"http\", url = \"http://orders:8080/audit/produced\"",
        ),
    ];
    let mut checked = 0;
    for example in &sources {
        let Some((kind, bare_source)) = required
            .iter()
            .find(|(k, _)| example.starts_with(&format!("{{ kind = \"{k}\"")))
        else {
            continue;
        };
        let options: Vec<&str> = example
            .trim_start_matches('{')
            .trim_end_matches(',')
            .trim_end_matches('}')
            .split(", ")
            .map(str::trim)
            .filter(|o| {
                [
                    "key = ",
                    "topic = ",
                    "timeout_seconds = ",
                    "retries = ",
                    "max_bytes = ",
                ]
                .iter()
                .any(|p| o.starts_with(p))
            })
            .collect();
        assert!(
            !options.is_empty(),
            "{kind}: the example spells no default: {example}"
        );
        let spelled_source = format!("{{ {bare_source}, {} }}", options.join(", "));
        let spelled = Config::from_toml_str(&flow("", &spelled_source), env)
            .unwrap_or_else(|e| panic!("{kind}: {spelled_source}: {e}"));
        let bare = Config::from_toml_str(&flow("", &format!("{{ {bare_source} }}")), env)
            .expect("bare source");
        assert_eq!(
            spelled.flows[0].produced, bare.flows[0].produced,
            "{kind}: {spelled_source}"
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "{sources:?}");
}

#[test]
fn the_probe_is_off_unless_enabled_and_bad_settings_name_the_option() {
    let with = |probe: &str| {
        Config::from_toml_str(
            &format!("[[cluster]]\nname = \"prod\"\nnamesrv = [\"h:1\"]\n{probe}"),
            no_env,
        )
    };
    assert_eq!(with("").expect("no probe").clusters[0].probe, None);
    assert_eq!(
        with("[cluster.probe]\ntopic = \"p\"\n")
            .expect("off")
            .clusters[0]
            .probe,
        None
    );
    let on = with("[cluster.probe]\nenabled = true\n")
        .expect("on")
        .clusters[0]
        .probe
        .clone()
        .expect("probe");
    assert_eq!(on.topic, "mqaudit_probe");
    assert_eq!(on.interval, Duration::from_secs(10));
    assert_eq!(on.deadline, Duration::from_secs(60));
    for (text, field) in [
        ("enabled = true\ntopic = \"a b\"", "cluster[0].probe.topic"),
        (
            "enabled = true\ninterval_seconds = 0",
            "cluster[0].probe.interval_seconds",
        ),
        (
            "enabled = true\ninterval_seconds = 30\ndeadline_seconds = 10",
            "cluster[0].probe.deadline_seconds",
        ),
        ("enabled = true\nqueues = 0", "cluster[0].probe.queues"),
    ] {
        let e = with(&format!("[cluster.probe]\n{text}\n")).expect_err(text);
        assert!(e.to_string().contains(field), "{text}: {e}");
    }
    assert!(with("[cluster.probe]\nenabled = true\nbogus = 1\n").is_err());
}
