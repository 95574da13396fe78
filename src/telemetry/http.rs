//! The operations endpoint: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers) and `/readyz` (ready to work: 200, else 503; a JSON body says which check fails).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Telemetry;

/// Binds the endpoint's address; binding fails at start-up, not later.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ([http] listen)"))
}

/// Serves the endpoint on `listener` until `stop` turns true.
pub fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the HTTP endpoint stopped");
        }
    })
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
    t.metrics.set_ready(t.health.readiness().ready);
    let mut body = Vec::new();
    match TextEncoder::new().encode(&t.registry.gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> Response {
    let r = t.health.readiness();
    t.metrics.set_ready(r.ready);
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_vec_pretty(&r).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
