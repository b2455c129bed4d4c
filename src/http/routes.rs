//! Every route, in one match:
//!
//! * `GET /` landing page with links;
//! * `GET <telemetry path>` (default `/metrics`): the last collection
//!   snapshot plus the daemon's own metrics; never calls a broker;
//! * `GET /-/healthy`: 200 while the process serves;
//! * `GET /-/ready`: 200 once every cluster completed a first cycle, else 503.
//!
//! With basic auth configured every route needs credentials (401 otherwise),
//! as with exporter-toolkit.

use std::sync::Arc;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Method, Request, Response, StatusCode, header};

use crate::collector::Readiness;
use crate::metrics::{SelfMetrics, SnapshotStore};

/// What handlers read. Cheap to share.
#[derive(Debug)]
pub struct AppState {
    /// Latest collection snapshot.
    pub snapshot: Arc<SnapshotStore>,
    /// The daemon's own metrics.
    pub self_metrics: SelfMetrics,
    /// Readiness after the first cycle.
    pub readiness: Arc<Readiness>,
    /// Where metrics are served.
    pub telemetry_path: String,
    /// TLS, basic auth and extra headers from `--web.config.file`.
    pub security: Arc<super::WebSecurity>,
    /// The audit's store and flows, when any flow is configured.
    pub audit: Option<Arc<super::api::AuditState>>,
}

/// Authenticate, route, and add the configured headers.
pub async fn handle<B>(state: Arc<AppState>, request: Request<B>) -> Response<Chunks> {
    let mut response = if state.security.requires_auth() {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let security = state.security.clone();
        // bcrypt is slow on purpose: keep it off the async workers.
        let access =
            tokio::task::spawn_blocking(move || security.check(authorization.as_deref())).await;
        match access {
            Ok(super::web_config::Access::Allowed) => dispatch(&state, request).await,
            _ => {
                let mut denied = text(StatusCode::UNAUTHORIZED, "authentication required\n");
                denied.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"mqaudit\""),
                );
                denied
            }
        }
    } else {
        dispatch(&state, request).await
    };
    for (name, value) in &state.security.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// Prometheus text exposition format 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A response body made of shared chunks: the metrics snapshot is written
/// straight from the collector's buffers, without concatenating them.
#[derive(Debug, Default)]
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: impl IntoIterator<Item = Bytes>) -> Chunks {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks { chunks, remaining }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.chunks.pop_front() {
            Some(chunk) => {
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// JSON API under `/api/v1/`, everything else in [`route`].
async fn dispatch<B>(state: &AppState, request: Request<B>) -> Response<Chunks> {
    let path = request.uri().path();
    if path.starts_with("/api/v1/") && request.method() == Method::GET {
        let query = request.uri().query().unwrap_or("");
        let (status, body) = super::api::handle(state.audit.as_deref(), path, query).await;
        let mut response = respond(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "application/json",
            Chunks::new([Bytes::from(body.to_string())]),
        );
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        return response;
    }
    route(state, request)
}

/// Answer one request.
pub fn route<B>(state: &AppState, request: Request<B>) -> Response<Chunks> {
    let path = request.uri().path();
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
    }
    match path {
        "/" => html(&landing(&state.telemetry_path)),
        "/-/healthy" => text(StatusCode::OK, "OK\n"),
        "/-/ready" if state.readiness.is_ready() => text(StatusCode::OK, "OK\n"),
        "/-/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first collection cycle\n",
        ),
        p if p == state.telemetry_path => {
            let own = Bytes::from(state.self_metrics.render());
            let gzip = accepts_gzip(request.headers());
            let body = if gzip {
                // The snapshot compressed once per publish, then the
                // daemon's own few lines compressed per request, as one
                // gzip member.
                Chunks::new(state.snapshot.gzipped().finish(&own))
            } else {
                let snapshot = state.snapshot.chunks();
                Chunks::new(snapshot.iter().cloned().chain(std::iter::once(own)))
            };
            let mut response = respond(StatusCode::OK, TEXT_FORMAT, body);
            let headers = response.headers_mut();
            headers.insert(
                header::VARY,
                header::HeaderValue::from_static("Accept-Encoding"),
            );
            if gzip {
                headers.insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static("gzip"),
                );
            }
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// True when `Accept-Encoding` lists `gzip` (or `*`) with a non-zero weight.
fn accepts_gzip(headers: &header::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let weight = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (name.eq_ignore_ascii_case("gzip") || name == "*") && weight > 0.0
        })
}

fn landing(telemetry_path: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><title>mqaudit</title></head><body><h1>mqaudit</h1>\
         <p>Watches Apache RocketMQ for message loss.</p><ul>\
         <li><a href=\"{telemetry_path}\">Metrics</a></li>\
         <li><a href=\"/-/healthy\">Health</a></li><li><a href=\"/-/ready\">Readiness</a></li>\
         </ul><p>version {}</p></body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Chunks) -> Response<Chunks> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Chunks> {
    let body = Chunks::new([Bytes::from_static(body.as_bytes())]);
    respond(status, "text/plain; charset=utf-8", body)
}

fn html(body: &str) -> Response<Chunks> {
    let body = Chunks::new([Bytes::from(body.to_string())]);
    respond(StatusCode::OK, "text/html; charset=utf-8", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> header::HeaderMap {
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            header::HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn gzip_is_chosen_when_accepted_with_a_weight() {
        for yes in ["gzip", "GZIP", "deflate, gzip;q=0.5", "*", "identity, gzip"] {
            assert!(accepts_gzip(&with(yes)), "{yes}");
        }
        for no in ["identity", "gzip;q=0", "deflate", "br, gzip ; q=0.0"] {
            assert!(!accepts_gzip(&with(no)), "{no}");
        }
        assert!(!accepts_gzip(&header::HeaderMap::new()));
    }
}
