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
use crate::http::{self, AppState};
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

/// Bind the listener and start collectors and server.
///
/// # Errors
/// When the listen address cannot be bound.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let listener = TcpListener::bind(&config.web.listen_address).await?;
    let addr = listener.local_addr()?;
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
    let state = Arc::new(AppState {
        snapshot,
        self_metrics,
        readiness,
        telemetry_path: config.web.telemetry_path.clone(),
    });
    tasks.push(tokio::spawn(http::serve(listener, state, watcher, GRACE)));
    tracing::info!(message = "Serving.", %addr, clusters = config.clusters.len(), interval_seconds = config.collect.interval.as_secs());
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
pub async fn run(config: Config) -> std::io::Result<()> {
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
