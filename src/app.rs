//! `mqaudit serve`: the composition root. Builds a collector per cluster and
//! the HTTP server from a resolved [`Config`], runs them until SIGTERM or
//! SIGINT, then shuts down within a grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::collector::{ClusterCollector, Readiness};
use crate::config::Config;
use crate::http::{self, AppState, WebSecurity};
use crate::metrics::{SelfMetrics, SnapshotStore};
use crate::remoting::{ClientOptions, Pool};

/// How long open HTTP connections get after a shutdown signal.
const GRACE: Duration = Duration::from_secs(5);

/// A running daemon (returned by [`start`] for tests that drive it).
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: std::net::SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Signal shutdown and wait for every task.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
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
    Audit(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Bind the listener and start collectors and server.
///
/// # Errors
/// An invalid web config file, or a listen address that cannot be bound.
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
    let (shutdown, watcher) = watch::channel(false);
    let snapshot = Arc::new(SnapshotStore::new());
    let self_metrics = SelfMetrics::new();
    let readiness = Arc::new(Readiness::new(config.clusters.len()));
    let mut tasks = Vec::new();
    for cluster in &config.clusters {
        let pool = Arc::new(Pool::new(ClientOptions {
            request_timeout: config.collect.timeout,
            acl: cluster.acl.clone(),
        }));
        let admin = Admin::new(pool, config.collect.timeout)
            .with_observer(self_metrics.request_observer(&cluster.name));
        let collector = ClusterCollector::new(cluster.clone(), config.collect.clone(), admin);
        tasks.push(tokio::spawn(collector.run(
            snapshot.clone(),
            readiness.clone(),
            watcher.clone(),
        )));
    }
    let audit = if config.flows.is_empty() {
        None
    } else {
        let store = crate::audit::store::Store::open(&config.audit.data_dir)
            .await
            .map_err(|e| StartError::Audit(e.to_string()))?;
        let mut auditors = std::collections::HashMap::new();
        for flow in &config.flows {
            let Some(cluster) = config.clusters.iter().find(|c| c.name == flow.cluster) else {
                continue;
            };
            let pool = Arc::new(Pool::new(ClientOptions {
                request_timeout: config.collect.timeout,
                acl: cluster.acl.clone(),
            }));
            let admin = Admin::new(pool, config.collect.timeout)
                .with_observer(self_metrics.request_observer(&cluster.name));
            let auditor = crate::audit::runner::Auditor::new(
                flow.clone(),
                config.audit.clone(),
                store.clone(),
                admin,
                cluster.namesrv.clone(),
                |n| std::env::var(n).ok(),
            );
            auditors.insert(flow.name.clone(), Arc::new(auditor));
        }
        crate::audit::schedule::publish(&store, &config.flows, &snapshot).await;
        for auditor in auditors.values() {
            tasks.push(tokio::spawn(crate::audit::schedule::run(
                auditor.clone(),
                config.flows.clone(),
                snapshot.clone(),
                watcher.clone(),
            )));
        }
        Some(Arc::new(crate::http::api::AuditState { store, auditors }))
    };
    let (tls, basic_auth) = (security.tls.is_some(), security.requires_auth());
    let state = Arc::new(AppState {
        snapshot,
        self_metrics,
        readiness,
        telemetry_path: config.web.telemetry_path.clone(),
        security: Arc::new(security),
        audit,
    });
    tasks.push(tokio::spawn(http::serve(listener, state, watcher, GRACE)));
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
