//! The HTTP server: hyper 1.x over tokio, one task per connection, optional
//! TLS and basic auth ([`web_config`]), graceful shutdown (stop accepting, let
//! in-flight requests finish within the grace period). Routes live in
//! `routes`.

pub mod api;
mod routes;
pub mod web_config;

pub use routes::AppState;
pub use web_config::WebSecurity;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `state` on `listener` until `shutdown` is cancelled, then wait up
/// to `grace` for open connections.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let tls = state
        .security
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(message = "Accept failed.", %error);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(routes::handle(state, request).await) }
                    });
                    let builder = {
                        let mut builder = http1::Builder::new();
                        builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
                        builder
                    };
                    let result = match tls {
                        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                            Ok(Err(error)) => {
                                tracing::debug!(message = "TLS handshake failed.", %peer, %error);
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(message = "TLS handshake timed out.", %peer);
                                return;
                            }
                        },
                        None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                    };
                    if let Err(error) = result {
                        tracing::debug!(message = "HTTP connection ended with an error.", %peer, %error);
                    }
                });
            }
            _ = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            message = "HTTP connections still open after the grace period; closing them.",
            grace_seconds = grace.as_secs()
        );
    }
}
