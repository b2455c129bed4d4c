//! `mqaudit serve`: the composition root. Builds a [`Cluster`] handle and a
//! collector per cluster, an auditor per flow, and the HTTP server from a
//! resolved [`Config`]; runs them until SIGTERM or SIGINT; then shuts down
//! within one grace period: every task gets the same cancellation token,
//! in-flight cycles and audit runs are abandoned (the audit store is
//! crash-safe), and whatever has not finished when the period ends is
//! aborted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, Cluster};
use crate::audit::runner::Auditor;
use crate::clock::Clock;
use crate::collector::{ClusterCollector, Readiness};
use crate::config::Config;
use crate::http::{self, AppState, WebSecurity};
use crate::metrics::{SelfMetrics, SnapshotStore};

/// How long the daemon's tasks (open HTTP connections among them) get
/// after a shutdown signal.
pub const GRACE: Duration = Duration::from_secs(5);

/// A running daemon (returned by [`start`] for tests that drive it).
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// Signal shutdown and wait for every task, at most [`GRACE`]; tasks
    /// still running then are aborted. Returns how many were.
    pub async fn stop(mut self) -> usize {
        self.shutdown.cancel();
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(GRACE, all_done).await.is_ok() {
            return 0;
        }
        let left = self.tasks.len();
        tracing::warn!(
            message = "Tasks still running after the grace period; aborting them.",
            tasks = left,
            grace_seconds = GRACE.as_secs()
        );
        self.tasks.shutdown().await;
        left
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The web config file is invalid (a usage error: exit 64).
    #[error("web config: {0}")]
    WebConfig(String),
    /// The audit store cannot be opened.
    #[error("audit store: {0}")]
    Audit(#[source] crate::audit::store::StoreError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Bind the listener and start collectors, auditors and server.
///
/// # Errors
/// An invalid web config file, an audit store that cannot be opened, or a
/// listen address that cannot be bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let security = match &config.web.config_file {
        Some(path) => WebSecurity::load(path).map_err(StartError::WebConfig)?,
        None => WebSecurity::open(),
    };
    let bind_error = |source| StartError::Bind {
        addr: config.web.listen_address.clone(),
        source,
    };
    let listener = TcpListener::bind(&config.web.listen_address)
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let shutdown = CancellationToken::new();
    let clock = Clock::system();
    let snapshot = Arc::new(SnapshotStore::new());
    let self_metrics = SelfMetrics::new();
    let readiness = Arc::new(Readiness::new(config.clusters.len()));
    let clusters: HashMap<String, Cluster> = config
        .clusters
        .iter()
        .map(|c| {
            let admin = Admin::connect(config.collect.timeout, c.acl.clone())
                .with_observer(self_metrics.request_observer(&c.name));
            (
                c.name.clone(),
                Cluster::new(c.name.clone(), c.namesrv.clone(), admin),
            )
        })
        .collect();
    let mut tasks = JoinSet::new();
    let run = crate::probe::Probe::new_run_id(clock.now_ms());
    for c in &config.clusters {
        let Some(cluster) = clusters.get(&c.name) else {
            continue;
        };
        let mut collect = config.collect.clone();
        if let Some(probe) = &c.probe {
            // The probe's group and topic are the probe's: never in the
            // user-facing group metrics.
            collect.groups = collect.groups.excluding(&probe.group);
            let probe = crate::probe::Probe::new(
                cluster.clone(),
                probe.clone(),
                clock.clone(),
                run.clone(),
            );
            tasks.spawn(probe.run(snapshot.clone(), shutdown.clone()));
        }
        let collector = ClusterCollector::new(cluster.clone(), collect);
        tasks.spawn(collector.run(
            clock.clone(),
            snapshot.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
    }
    let audit = start_audit(&config, &clusters, &clock, &snapshot, &shutdown, &mut tasks).await?;
    let (tls, basic_auth) = (security.tls.is_some(), security.requires_auth());
    let state = Arc::new(AppState {
        snapshot,
        self_metrics,
        readiness,
        telemetry_path: config.web.telemetry_path.clone(),
        security: Arc::new(security),
        audit,
    });
    tasks.spawn(http::serve(listener, state, shutdown.clone(), GRACE));
    tracing::info!(
        message = "Serving.",
        %addr,
        tls,
        basic_auth,
        clusters = config.clusters.len(),
        interval_seconds = config.collect.interval.as_secs()
    );
    Ok(Running {
        addr,
        shutdown,
        tasks,
    })
}

/// Open the audit store and schedule every flow; `None` without flows.
async fn start_audit(
    config: &Config,
    clusters: &HashMap<String, Cluster>,
    clock: &Clock,
    snapshot: &Arc<SnapshotStore>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Option<Arc<crate::http::api::AuditState>>, StartError> {
    if config.flows.is_empty() {
        return Ok(None);
    }
    let store = crate::audit::store::Store::open_configured(&config.audit)
        .await
        .map_err(StartError::Audit)?
        .fenced_by(&config.audit.replica);
    let ownership =
        crate::audit::lease::Ownership::new(&store, &config.audit.replica, config.audit.lease);
    let mut auditors = HashMap::new();
    for flow in &config.flows {
        // Resolution guarantees every flow names a configured cluster.
        let Some(cluster) = clusters.get(&flow.cluster) else {
            continue;
        };
        let auditor = Auditor::new(
            flow.clone(),
            config.audit.clone(),
            store.clone(),
            cluster.clone(),
            clock.clone(),
        );
        auditors.insert(flow.name.clone(), Arc::new(auditor));
    }
    crate::audit::schedule::publish(&store, &config.flows, snapshot).await;
    publish_owners(&store, &ownership, &config.flows, snapshot).await;
    if store.is_shared() {
        // Every replica republishes the shared store's audit series after
        // each lease round, so replicas that do not own a flow report its
        // figures too, alike.
        let (keeper_store, flows, snapshot) =
            (store.clone(), config.flows.clone(), snapshot.clone());
        let names = config.flows.iter().map(|f| f.name.clone()).collect();
        let publisher = ownership.clone();
        tasks.spawn(
            ownership
                .clone()
                .keep(store.clone(), names, shutdown.clone(), move || {
                    let (store, flows, snapshot, ownership) = (
                        keeper_store.clone(),
                        flows.clone(),
                        snapshot.clone(),
                        publisher.clone(),
                    );
                    async move {
                        crate::audit::schedule::publish(&store, &flows, &snapshot).await;
                        publish_owners(&store, &ownership, &flows, &snapshot).await;
                    }
                }),
        );
    }
    tasks.spawn(crate::audit::retention::run(
        store.clone(),
        config.audit.retention,
        clock.clone(),
        snapshot.clone(),
        shutdown.clone(),
    ));
    for auditor in auditors.values() {
        tasks.spawn(crate::audit::schedule::run(
            auditor.clone(),
            config.flows.clone(),
            ownership.clone(),
            snapshot.clone(),
            clock.clone(),
            shutdown.clone(),
        ));
    }
    Ok(Some(Arc::new(crate::http::api::AuditState {
        store,
        auditors,
    })))
}

/// Publish who owns which flow (`mqaudit_audit_flow_owner`).
async fn publish_owners(
    store: &crate::audit::store::Store,
    ownership: &crate::audit::lease::Ownership,
    flows: &[crate::config::FlowConfig],
    snapshot: &SnapshotStore,
) {
    let names: Vec<String> = flows.iter().map(|f| f.name.clone()).collect();
    match crate::audit::lease::owners(store, ownership.replica(), &names).await {
        Ok(owners) => snapshot.publish(
            "~audit-owners",
            crate::audit::owner_exposition(&owners, flows),
        ),
        Err(error) => tracing::warn!(message = "Cannot read flow leases for metrics.", %error),
    }
}

/// Run until SIGTERM or SIGINT.
///
/// # Errors
/// When the server cannot start.
pub async fn run(config: Config) -> Result<(), StartError> {
    let running = start(config).await?;
    wait_for_signal().await;
    tracing::info!(message = "Shutting down.");
    running.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
