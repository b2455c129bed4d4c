//! The integration tests: one binary (one link step on a 2-core machine).
//!
//! Real-cluster tests need `MQAUDIT_CLUSTER_ENV` (set by `scripts/test.sh`);
//! without it they fail, they never skip.

#[path = "../support/mod.rs"]
mod support;

/// Every captured Java frame and body decodes to the values in the capture.
mod fixtures;

/// The remoting client against the protocol fake: correlation, timeouts,
/// peers that die or send garbage, reconnects, ACL signing on the wire.
mod remoting;

/// Property tests: no decoder panics on random and mutated input.
mod robustness;

/// Typed admin calls against the real test cluster, driven by the test driver.
mod cluster;

/// `mqaudit doctor` (the binary) against the real test cluster.
mod doctor;

/// `mqaudit serve` against a private real cluster: the metric contract after a
/// known workload, promtool, broker-b killed; readiness and failures as data.
mod exporter;

/// The collector's call plan and values against a simulated cluster (protocol fake).
mod collection;

/// TLS and basic auth from an exporter-toolkit web config file, via curl.
mod web;

/// Alert rules, their promtool tests, the runbook and the dashboards, checked.
mod artifacts;

/// A real broker failure through mqaudit, Prometheus and Alertmanager to a
/// webhook and back to resolved; every dashboard query through Prometheus.
mod alerting;

/// The loss audit on the real cluster: every stage produced on purpose.
mod audit;

/// Two replicas on one PostgreSQL store: flows split by lease, a kill -9.
mod replicas;

/// The files under deploy/: systemd unit and Kubernetes manifests.
mod deploy;

/// On Java brokers with the real Java client: the exporter and the doctor
/// against `mqadmin`.
mod java;
/// ACL 1.0 on the real 4.9.8 broker (java4 leg only).
mod java_acl;

/// 5.x POP consumption on the real 5.3.3 broker (java5 leg only).
mod java_pop;

/// 5.x controller mode: the real 5.3.3 controller, found through a fake
/// broker in controller mode (java5 leg only).
mod java_controller;

/// The loss audit on Java brokers, fed by the real Java client's trace
/// records and ledgers.
mod java_audit;

/// A window of 80,000 Java-client messages, settled in shares and from
/// disk.
mod java_scale;

/// Ten thousand messages, every case at once, a broker crash and a kill -9
/// of serve: precision and recall per stage.
mod java_mixed;

/// The broker core beyond offsets: name servers, permissions, retention,
/// delay levels, timers and transactions, driven on a private cluster.
mod core;

/// Faults on real clusters: a hung broker.
mod faults;

/// The end-to-end probe on a private cluster: healthy, a dead broker, a
/// crash that cut the commit log.
mod probe;
