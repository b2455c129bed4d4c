//! Every route, in one match:
//!
//! * `GET /` landing page with links;
//! * `GET <telemetry path>` (default `/metrics`): the last collection
//!   snapshot plus the daemon's own metrics; never calls a broker;
//! * `GET /-/healthy`: 200 while the process serves;
//! * `GET /-/ready`: 200 once every cluster completed a first cycle, else 503.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
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
}

/// Prometheus text exposition format 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answer one request.
pub fn route<B>(state: &AppState, request: Request<B>) -> Response<Full<Bytes>> {
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
            let snapshot = state.snapshot.current();
            let own = state.self_metrics.render();
            let mut body = Vec::with_capacity(snapshot.len() + own.len());
            body.extend_from_slice(&snapshot);
            body.extend_from_slice(&own);
            respond(StatusCode::OK, TEXT_FORMAT, Bytes::from(body))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
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

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn html(body: &str) -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from(body.to_string()),
    )
}
