//! Health and metrics: `/health` (a summary for people), `/health/live` and `/health/ready`
//! (for orchestrators), and `/metrics` (Prometheus).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::AppState;

/// `GET /health`: always 200 while serving; `status` is `ok`, or `degraded` when isolation is
/// weaker than the full design, the last readiness probe failed, or the server is shutting down.
pub(crate) async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let engine = &state.engine;
    let stats = engine.stats();
    let isolation = engine.isolation();
    let mut problems: Vec<String> = Vec::new();
    if isolation.degraded {
        problems.push("isolation is degraded (see isolation.warnings)".into());
    }
    let ready = state.last_readiness().await;
    if let Some(problem) = ready.as_ref().and_then(|r| r.problem.clone()) {
        problems.push(problem);
    }
    if state.shutting_down() {
        problems.push("the server is shutting down".into());
    }
    Json(json!({
        "status": if problems.is_empty() { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": state.started.elapsed().as_secs(),
        "sessions": { "open": stats.sessions, "busy": stats.busy_sessions },
        "executions": { "queued": stats.executions_queued, "running": stats.executions_running },
        "boxesCreated": stats.boxes_created,
        "ready": ready.map(|r| r.problem.is_none()),
        "isolation": codebeaker_engine::wire::isolation(isolation),
        "problems": problems,
    }))
}

/// `GET /health/live`: 200 for as long as the server answers.
pub(crate) async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /health/ready`: 200 when the engine can create a box, else 503 with the reason.
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let readiness = state.readiness().await;
    match readiness.problem {
        None => (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response(),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": problem })),
        )
            .into_response(),
    }
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state
        .metrics
        .render(&state.engine.stats(), state.started.elapsed());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
