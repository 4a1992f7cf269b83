//! The submission routes: `POST /submissions` (`wait`, `base64_encoded`, `fields`),
//! `GET /submissions/{token}`, and their batch forms.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use codebeaker_engine::{Caller, EngineError};
use serde_json::{json, Value};

use super::submission::{self, FieldErrors, Parsed};
use super::{error, Judge0, Refusal};
use crate::audit;
use crate::rpc::{language_label, wait_for_execution, watch_one_shot};

/// The query of a submission route.
struct Options {
    base64: bool,
    wait: bool,
    fields: Vec<&'static str>,
}

/// Reads `base64_encoded`, `wait` and `fields` as Judge0 1.13.1 does (`true` is the only true;
/// other parameters are ignored); unknown fields are Judge0's 400.
fn options(query: &HashMap<String, String>) -> Result<Options, Refusal> {
    let fields = submission::requested_fields(query.get("fields").map(String::as_str))
        .map_err(|message| error(StatusCode::BAD_REQUEST, message))?;
    Ok(Options {
        base64: query.get("base64_encoded").is_some_and(|v| v == "true"),
        wait: query.get("wait").is_some_and(|v| v == "true"),
        fields,
    })
}

/// The request body as JSON, or the 400 to answer.
fn body_json(body: Result<Bytes, BytesRejection>) -> Result<Value, Refusal> {
    let body = body.map_err(|rejection| error(rejection.status(), rejection.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the request body is not JSON ({e}); send the submission as a JSON object"),
        )
    })
}

/// Validates submissions off the async runtime (base64 and zip work is bounded, but not free).
async fn parse_all(
    door: &Arc<Judge0>,
    caller: &Caller,
    bodies: Vec<Value>,
    base64: bool,
) -> Result<Vec<Result<Parsed, FieldErrors>>, Refusal> {
    let config = door.config.clone();
    let base = door.state.engine().config().run_limits;
    let languages = Arc::clone(&door.languages);
    let caller = caller.clone();
    tokio::task::spawn_blocking(move || {
        bodies
            .iter()
            .map(|body| submission::parse(body, base64, base, &config, &languages, &caller))
            .collect()
    })
    .await
    .map_err(|e| {
        let error_id = crate::error::internal_error(&e).data;
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("validating the submission failed ({error_id:?})"),
        )
    })
}

/// Queues a validated submission as a one-shot run; its token, or the error body and status.
fn submit(door: &Judge0, caller: &Caller, parsed: Parsed) -> Result<String, (StatusCode, Value)> {
    let state = &door.state;
    let label = language_label(state, Some(&parsed.request.language));
    match state.engine().submit_execution(caller, parsed.request) {
        Ok(token) => {
            watch_one_shot(state, caller, &token, label);
            door.remember(&token, parsed.submission);
            Ok(token)
        }
        Err(e) => {
            let answer = match &e {
                EngineError::LimitReached(_) => Some((
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "queue is full"}),
                )),
                EngineError::OutOfRange { field, message } => Some((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Value::Object(
                        [(field.to_string(), json!([message]))]
                            .into_iter()
                            .collect(),
                    ),
                )),
                EngineError::UnsupportedLanguage(m) | EngineError::LanguageUnavailable(m) => {
                    Some((
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"language_id": [m]}),
                    ))
                }
                _ => None,
            };
            let refusal = crate::error::engine_error(e);
            audit::refused(
                caller,
                "/judge0/submissions",
                &refusal,
                audit::Subject::default(),
            );
            Err(answer.unwrap_or_else(|| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": refusal.message}),
                )
            }))
        }
    }
}

/// The submission `token` of `caller` as JSON, or `None` when it is not there (unknown,
/// another caller's, or forgotten).
fn written(
    door: &Judge0,
    caller: &Caller,
    token: &str,
    record: Option<codebeaker_engine::ExecutionRecord>,
    options: &Options,
) -> Option<Value> {
    let submission = door.submission(caller, token)?;
    let record = match record {
        Some(record) => record,
        None => match door.state.engine().execution_status(caller, token) {
            Ok(record) => record,
            Err(_) => {
                door.forget(caller, token);
                return None;
            }
        },
    };
    Some(submission::render(
        &submission,
        &record,
        options.base64,
        &options.fields,
    ))
}

/// `POST /submissions`: 201 `{token}`, or with `wait=true` the finished submission; 422 with
/// the field errors; 503 `{"error":"queue is full"}`.
pub(crate) async fn create(
    State(door): State<Arc<Judge0>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let options = match options(&query) {
        Ok(options) => options,
        Err(refusal) => return refusal.into_response(),
    };
    let body = match body_json(body) {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    let parsed = match parse_all(&door, &caller, vec![body], options.base64).await {
        Ok(mut all) => all.remove(0),
        Err(refusal) => return refusal.into_response(),
    };
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(errors) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(errors)).into_response();
        }
    };
    let longest = parsed
        .submission
        .longest(door.state.engine().config().compile_limits.wall_time);
    let token = match submit(&door, &caller, parsed) {
        Ok(token) => token,
        Err((status, body)) => return (status, Json(body)).into_response(),
    };
    if !options.wait {
        return (StatusCode::CREATED, Json(json!({ "token": token }))).into_response();
    }
    let record = wait_for_execution(&door.state, &caller, &token, longest)
        .await
        .ok();
    match written(&door, &caller, &token, record, &options) {
        Some(body) => (StatusCode::CREATED, Json(body)).into_response(),
        None => (StatusCode::CREATED, Json(json!({ "token": token }))).into_response(),
    }
}

/// `GET /submissions/{token}`: the submission with `fields`; 404 when it is not the caller's.
pub(crate) async fn show(
    State(door): State<Arc<Judge0>>,
    Extension(caller): Extension<Caller>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let options = match options(&query) {
        Ok(options) => options,
        Err(refusal) => return refusal.into_response(),
    };
    match written(&door, &caller, &token, None, &options) {
        Some(body) => Json(body).into_response(),
        None => {
            let refusal = codebeaker_protocol::jsonrpc::ErrorObject::new(
                codebeaker_protocol::jsonrpc::ErrorCode::SessionNotFound,
                format!("submission {token} not found"),
            );
            audit::refused(
                &caller,
                "/judge0/submissions/{token}",
                &refusal,
                audit::Subject::default(),
            );
            error(
                StatusCode::NOT_FOUND,
                format!("submission {token} not found (results are kept for a limited time)"),
            )
            .into_response()
        }
    }
}

/// `POST /submissions/batch` `{submissions: [...]}`: each `{token}` or its field errors; 201 when
/// at least one was queued, else 422.
pub(crate) async fn batch_create(
    State(door): State<Arc<Judge0>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let base64 = query.get("base64_encoded").is_some_and(|v| v == "true");
    let body = match body_json(body) {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    let bodies = match body.get("submissions") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    if let Err(refusal) = batch_size(&door, bodies.len()) {
        return refusal.into_response();
    }
    let parsed = match parse_all(&door, &caller, bodies, base64).await {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    let mut answers = Vec::new();
    let mut queued = false;
    for one in parsed {
        answers.push(match one {
            Err(errors) => json!(errors),
            Ok(parsed) => match submit(&door, &caller, parsed) {
                Ok(token) => {
                    queued = true;
                    json!({ "token": token })
                }
                Err((_, body)) => body,
            },
        });
    }
    let status = if queued {
        StatusCode::CREATED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, Json(Value::Array(answers))).into_response()
}

/// Judge0's bounds of a batch: at least one, at most `max_submission_batch_size`.
fn batch_size(door: &Judge0, n: usize) -> Result<(), Refusal> {
    let max = door.config.max_submission_batch_size;
    if n > max {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("number of submissions in a batch should be less than or equal to {max}"),
        ));
    }
    if n == 0 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "there should be at least one submission in a batch",
        ));
    }
    Ok(())
}

/// `GET /submissions/batch?tokens=a,b`: `{submissions: [...]}`, `null` for each token that is not
/// the caller's.
pub(crate) async fn batch_show(
    State(door): State<Arc<Judge0>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let options = match options(&query) {
        Ok(options) => options,
        Err(refusal) => return refusal.into_response(),
    };
    let tokens = headers
        .get("tokens")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.get("tokens").cloned())
        .unwrap_or_default();
    let tokens: Vec<&str> = tokens
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if let Err(refusal) = batch_size(&door, tokens.len()) {
        return refusal.into_response();
    }
    let submissions: Vec<Value> = tokens
        .iter()
        .map(|token| written(&door, &caller, token, None, &options).unwrap_or(Value::Null))
        .collect();
    Json(json!({ "submissions": submissions })).into_response()
}
