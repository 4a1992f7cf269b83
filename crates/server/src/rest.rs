//! The REST endpoints: one-shot executions and languages, for clients that do not speak
//! WebSocket. Errors are `{"error":{"code","message","data"?}}` with the matching HTTP status.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use codebeaker_engine::{Caller, EngineError};
use codebeaker_protocol::jsonrpc::{ErrorCode, ErrorObject};
use codebeaker_protocol::methods::{ExecutionRunResult, ExecutionStatus, Method};
use serde_json::Value;

use crate::audit;
use crate::convert;
use crate::error::{engine_error, HttpError};
use crate::rpc::{language_label, one_shot_request, wait_for_execution, watch_one_shot, Decoder};
use crate::state::AppState;

/// Extra time `?wait=true` allows beyond the longest run, for queueing and compiling.
const WAIT_MARGIN: Duration = Duration::from_secs(60);

/// The query of `POST /api/execution`: `?wait=true` (or `false`) runs now and answers with the
/// finished record. Anything else is refused with a message that names it.
fn submit_wait(pairs: &[(String, String)]) -> Result<bool, HttpError> {
    let mut wait = false;
    for (key, value) in pairs {
        match (key.as_str(), value.as_str()) {
            ("wait", "true" | "1" | "") => wait = true,
            ("wait", "false" | "0") => wait = false,
            ("wait", other) => {
                return Err(query_error(format!(
                    "query parameter `wait` must be true or false, got {other:?}"
                )))
            }
            (other, _) => {
                return Err(query_error(format!(
                    "unknown query parameter `{other}`; POST /api/execution takes only `wait`"
                )))
            }
        }
    }
    Ok(wait)
}

fn query_error(message: String) -> HttpError {
    HttpError::new(
        ErrorObject::invalid_params(message).with_data(serde_json::json!({"field": "query"})),
    )
}

/// `POST /api/execution`: the body is `execution.run`'s params. 202 with
/// `{"executionId","status":"queued"}`; with `?wait=true`, 200 with the finished record (or 202
/// with the record so far if the run outlasts the server's longest time limit). A `wait` in the
/// body (milliseconds) waits that long at most: 200 with the record when the run ended in time,
/// else 202 with the record so far.
pub(crate) async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Query(pairs) = query.map_err(|_| {
        query_error("the query string is not valid URL encoding (`?wait=true`)".into())
    })?;
    let wait = submit_wait(&pairs)?;
    let body = body.map_err(|rejection| {
        HttpError::with_status(
            rejection.status(),
            ErrorObject::invalid_request(rejection.body_text()),
        )
    })?;
    let params: Value =
        serde_json::from_slice(&body).map_err(|e| HttpError::new(ErrorObject::parse_error(e)))?;
    let method = Method::ExecutionRun.name();
    let mut decoder = Decoder::new(method, false);
    let (request, body_wait) = one_shot_request(&mut decoder, Some(params))?;
    let language = language_label(&state, Some(&request.language));
    let execution_id = state
        .engine
        .submit_execution(&caller, request)
        .map_err(|e| refused(&caller, "/api/execution", engine_error(e)))?;
    watch_one_shot(&state, &caller, &execution_id, language);
    let config = state.engine.config();
    let record = match (wait, body_wait) {
        (true, _) => {
            let longest = config.max_run_time + config.compile_limits.wall_time + WAIT_MARGIN;
            state
                .engine
                .wait_execution(&caller, &execution_id, longest)
                .await
                .map_err(engine_error)
        }
        // As `execution.run` with `wait` (which a shutdown also ends).
        (false, Some(wait)) => wait_for_execution(&state, &caller, &execution_id, wait).await,
        (false, None) => {
            let accepted = ExecutionRunResult {
                execution_id,
                status: ExecutionStatus::Queued,
            };
            let accepted = decoder.annotate(Ok(serde_json::to_value(accepted).unwrap_or_default()));
            return Ok((StatusCode::ACCEPTED, Json(accepted?)).into_response());
        }
    }
    .map_err(|e| refused(&caller, "/api/execution", e))?;
    let status = if convert::execution_finished(&record) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let record = decoder.annotate(Ok(codebeaker_engine::wire::execution_status_json(record)))?;
    Ok((status, Json(record)).into_response())
}

/// `GET /api/execution/{id}`: the record, as `execution.status` returns it.
pub(crate) async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let record = state
        .engine
        .execution_status(&caller, &id)
        .map_err(|e| refused(&caller, "/api/execution/{id}", engine_error(e)))?;
    Ok(Json(codebeaker_engine::wire::execution_status_json(record)))
}

/// The REST error for `error`, written to the audit log first when it is a refusal.
fn refused(caller: &Caller, route: &str, error: ErrorObject) -> HttpError {
    audit::refused(caller, route, &error, audit::Subject::default());
    HttpError::new(error)
}

/// `GET /api/languages`: as `language.list`.
pub(crate) async fn languages(
    State(state): State<AppState>,
) -> Json<codebeaker_protocol::methods::LanguageListResult> {
    Json(codebeaker_engine::wire::language_list(&state.engine))
}

/// `GET /api/languages/{name}`: one language by name or alias; 404 when unknown.
pub(crate) async fn language(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let canonical = match state.engine.registry().resolve(&name) {
        Ok(language) => language.name().to_string(),
        Err(error) => {
            let error = engine_error(EngineError::from(error));
            let status = if error.code == ErrorCode::UnsupportedLanguage.code() {
                StatusCode::NOT_FOUND
            } else {
                crate::error::http_status(error.code)
            };
            return Err(HttpError::with_status(status, error));
        }
    };
    let languages = state.engine.languages();
    let found = languages
        .iter()
        .find(|l| l.name == canonical)
        .ok_or_else(|| {
            HttpError::with_status(
                StatusCode::NOT_FOUND,
                ErrorObject::unsupported_language(&name),
            )
        })?;
    serde_json::to_value(found)
        .map(Json)
        .map_err(|e| HttpError::new(crate::error::internal_error(&e)))
}

/// Any other path: 404 with a JSON error.
/// A known path asked with a method it does not take: 405 with the same JSON error body as
/// every other refusal (axum adds the `Allow` header).
pub(crate) async fn method_not_allowed(request: axum::extract::Request) -> HttpError {
    HttpError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorObject::new(
            ErrorCode::MethodNotFound,
            format!(
                "{} does not take {}; see docs/protocol.md for its methods",
                request.uri().path(),
                request.method()
            ),
        ),
    )
}

pub(crate) async fn not_found(request: axum::extract::Request) -> HttpError {
    HttpError::with_status(
        StatusCode::NOT_FOUND,
        ErrorObject::new(
            ErrorCode::MethodNotFound,
            format!(
                "no such endpoint: {} {}",
                request.method(),
                request.uri().path()
            ),
        ),
    )
}
