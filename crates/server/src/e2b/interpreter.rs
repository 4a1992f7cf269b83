//! E2B's code interpreter (the sandbox's port 49999): `POST /execute` and `/contexts`, over the
//! engine's contexts, so that the `e2b-code-interpreter` SDKs' `run_code`,
//! `create_code_context` and the rest run unchanged.
//!
//! A code-interpreter context is an engine context of the sandbox's session, under the same id.
//! `run_code` without a context runs in the sandbox's default context of its language (Python
//! when none is named), made on first use. `/execute` answers newline-delimited JSON events as
//! the cell goes: `stdout` and `stderr` (with an integer `timestamp` in nanoseconds) while it
//! runs, then each `result` (the MIME bundle under E2B's names, `is_main_result`), the `error`
//! when there is one, `number_of_executions` and `end_of_execution`. A client that goes away
//! interrupts the cell, as a deadline would. Cells are counted and written to the audit log as
//! the command `cell`, like `context.run`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use codebeaker_engine::{CellOutcome, CellRequest, ContextOptions, EngineError};
use codebeaker_protocol::methods::{ExecutionEvent, OutputStream};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::{lock, ApiError, E2b, Sandbox};
use crate::error::engine_error;

/// How many event lines wait for a client slow to read.
const LINES_BUFFER: usize = 256;

/// The body of `POST /execute` (the SDKs send nulls for what they leave out).
#[derive(Debug, Deserialize)]
pub(crate) struct ExecuteRequest {
    code: String,
    #[serde(default)]
    context_id: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
}

/// The body of `POST /contexts`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CreateContext {
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
}

/// The default contexts of each sandbox, by language.
#[derive(Default)]
pub(crate) struct Defaults {
    map: std::sync::Mutex<HashMap<(String, String), String>>,
    /// Held while a default context is made, so that two first cells make one.
    making: tokio::sync::Mutex<()>,
}

impl Defaults {
    /// Forgets a sandbox's default contexts (it is gone).
    pub(crate) fn forget(&self, sandbox_id: &str) {
        lock(&self.map).retain(|(sandbox, _), _| sandbox != sandbox_id);
    }
}

fn bad_request(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message.to_string())
}

/// An engine error as the code interpreter answers it.
fn engine_failure(e2b: &E2b, sandbox: &Sandbox, error: EngineError) -> ApiError {
    match error {
        EngineError::SessionNotFound(_) | EngineError::SessionClosed { .. } => {
            e2b.forget(&sandbox.id);
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("The sandbox {} was not found", sandbox.id),
            )
        }
        EngineError::NotFound(message) => ApiError::new(StatusCode::NOT_FOUND, message),
        EngineError::InvalidInput(message)
        | EngineError::UnsupportedLanguage(message)
        | EngineError::LanguageUnavailable(message)
        | EngineError::OutOfRange { message, .. } => bad_request(message),
        EngineError::LimitReached(message) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, message),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            engine_error(other).message,
        ),
    }
}

/// The registry's name of an E2B language name (`python`, `js`, `javascript`, `bash`, ...).
fn language_of(e2b: &E2b, asked: Option<&str>) -> Result<String, ApiError> {
    let asked = asked
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or("python");
    e2b.state
        .engine
        .registry()
        .resolve(asked)
        .map(|l| l.name().to_string())
        .map_err(|_| {
            bad_request(format!(
                "language {asked} is not supported; contexts run python, javascript and bash"
            ))
        })
}

fn context_json(context: &codebeaker_engine::ContextSnapshot) -> Value {
    json!({ "id": context.id, "language": context.language, "cwd": context.cwd })
}

/// `POST /contexts`.
pub(crate) async fn create(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sandbox = match e2b.envd_sandbox(&headers, "/contexts") {
        Ok(sandbox) => sandbox,
        Err(error) => return error.into_response(),
    };
    let request: CreateContext = if body.is_empty() {
        CreateContext::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return bad_request(format!("the body is not a context: {e}")).into_response()
            }
        }
    };
    let language = match language_of(&e2b, request.language.as_deref()) {
        Ok(language) => language,
        Err(error) => return error.into_response(),
    };
    let opts = ContextOptions {
        language: Some(language),
        cwd: request.cwd,
        env: sandbox.env_vars.clone(),
    };
    match e2b
        .state
        .engine
        .create_context(&sandbox.caller, &sandbox.id, opts)
        .await
    {
        Ok(context) => Json(context_json(&context)).into_response(),
        Err(error) => engine_failure(&e2b, &sandbox, error).into_response(),
    }
}

/// `GET /contexts`.
pub(crate) async fn list(State(e2b): State<Arc<E2b>>, headers: HeaderMap) -> Response {
    let sandbox = match e2b.envd_sandbox(&headers, "/contexts") {
        Ok(sandbox) => sandbox,
        Err(error) => return error.into_response(),
    };
    match e2b.state.engine.list_contexts(&sandbox.caller, &sandbox.id) {
        Ok(contexts) => Json(contexts.iter().map(context_json).collect::<Vec<_>>()).into_response(),
        Err(error) => engine_failure(&e2b, &sandbox, error).into_response(),
    }
}

/// `DELETE /contexts/{id}`.
pub(crate) async fn remove(
    State(e2b): State<Arc<E2b>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let sandbox = match e2b.envd_sandbox(&headers, "/contexts") {
        Ok(sandbox) => sandbox,
        Err(error) => return error.into_response(),
    };
    lock(&e2b.interpreter.map).retain(|(s, _), context| !(s == &sandbox.id && context == &id));
    match e2b
        .state
        .engine
        .close_context(&sandbox.caller, &sandbox.id, &id)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => engine_failure(&e2b, &sandbox, error).into_response(),
    }
}

/// `POST /contexts/{id}/restart`.
pub(crate) async fn restart(
    State(e2b): State<Arc<E2b>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let sandbox = match e2b.envd_sandbox(&headers, "/contexts") {
        Ok(sandbox) => sandbox,
        Err(error) => return error.into_response(),
    };
    match e2b
        .state
        .engine
        .restart_context(&sandbox.caller, &sandbox.id, &id)
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => engine_failure(&e2b, &sandbox, error).into_response(),
    }
}

/// The context a cell runs in: the one named (which must exist), or the sandbox's default
/// context of the language, made now when it has none.
async fn context_for(
    e2b: &E2b,
    sandbox: &Sandbox,
    request: &ExecuteRequest,
) -> Result<String, ApiError> {
    let engine = &e2b.state.engine;
    let exists = |id: &str| -> Result<bool, ApiError> {
        engine
            .list_contexts(&sandbox.caller, &sandbox.id)
            .map(|list| list.iter().any(|c| c.id == id))
            .map_err(|error| engine_failure(e2b, sandbox, error))
    };
    if let Some(id) = request.context_id.as_deref() {
        if request.language.is_some() {
            return Err(bad_request(
                "give context_id or language, not both (a context has its language)",
            ));
        }
        return match exists(id)? {
            true => Ok(id.to_string()),
            false => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("context {id} not found"),
            )),
        };
    }
    let language = language_of(e2b, request.language.as_deref())?;
    let key = (sandbox.id.clone(), language.clone());
    let _making = e2b.interpreter.making.lock().await;
    let known = lock(&e2b.interpreter.map).get(&key).cloned();
    if let Some(id) = known {
        if exists(&id)? {
            return Ok(id);
        }
    }
    let opts = ContextOptions {
        language: Some(language),
        cwd: None,
        env: sandbox.env_vars.clone(),
    };
    let context = engine
        .create_context(&sandbox.caller, &sandbox.id, opts)
        .await
        .map_err(|error| engine_failure(e2b, sandbox, error))?;
    lock(&e2b.interpreter.map).insert(key, context.id.clone());
    Ok(context.id)
}

/// One event line.
fn line(event: Value) -> Bytes {
    let mut text = event.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// E2B's field of each MIME type of a result.
const FIELDS: &[(&str, &str)] = &[
    ("text/plain", "text"),
    ("text/html", "html"),
    ("text/markdown", "markdown"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("application/pdf", "pdf"),
    ("text/latex", "latex"),
    ("application/json", "json"),
    ("application/javascript", "javascript"),
];

/// The events that end a cell: its results, its error, its count, and the end.
fn closing_events(outcome: &CellOutcome) -> Vec<Value> {
    let mut events = Vec::new();
    for result in &outcome.results {
        let mut event = json!({ "type": "result", "is_main_result": result.is_main_result });
        let mut extra = serde_json::Map::new();
        for (mime, value) in &result.data {
            match FIELDS.iter().find(|(m, _)| m == mime) {
                Some((_, field)) => event[*field] = value.clone(),
                None => {
                    extra.insert(mime.clone(), value.clone());
                }
            }
        }
        event["extra"] = Value::Object(extra);
        events.push(event);
    }
    let lost = if outcome.state_lost {
        "; the context's kernel was lost and restarted, so its earlier state is gone"
    } else {
        ""
    };
    match &outcome.error {
        Some(error) => events.push(json!({
            "type": "error",
            "name": error.name,
            "value": format!("{}{lost}", error.value),
            "traceback": error.traceback,
        })),
        None if !outcome.success() || outcome.state_lost => {
            let status = codebeaker_engine::wire::run_status(outcome.status);
            let why = outcome
                .message
                .clone()
                .unwrap_or_else(|| status.as_str().to_string());
            events.push(json!({
                "type": "error",
                "name": status.as_str(),
                "value": format!("{why}{lost}"),
                "traceback": "",
            }));
        }
        None => {}
    }
    events.push(json!({
        "type": "number_of_executions",
        "execution_count": outcome.execution_count,
    }));
    events.push(json!({ "type": "end_of_execution" }));
    events
}

/// `POST /execute`.
pub(crate) async fn execute(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sandbox = match e2b.envd_sandbox(&headers, "/execute") {
        Ok(sandbox) => sandbox,
        Err(error) => return error.into_response(),
    };
    let request: ExecuteRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return bad_request(format!("the body is not an execution request: {e}"))
                .into_response()
        }
    };
    let context_id = match context_for(&e2b, &sandbox, &request).await {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let cell = CellRequest {
        code: request.code,
        env: request.env_vars.unwrap_or_default(),
        // The SDK bounds the cell with its own read timeout; the engine's longest run is ours.
        timeout: Some(e2b.state.engine.config().max_run_time),
        memory_limit_mb: None,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(LINES_BUFFER);
    tokio::spawn(drive(e2b, sandbox, context_id, cell, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<Bytes, std::convert::Infallible>(bytes), rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Runs the cell and sends its events; a client that goes away interrupts it.
async fn drive(
    e2b: Arc<E2b>,
    sandbox: Sandbox,
    context_id: String,
    cell: CellRequest,
    tx: mpsc::Sender<Bytes>,
) {
    let started = Instant::now();
    let (cancel, cancelled) = oneshot::channel();
    let lines = tx.clone();
    let emit = move |event: ExecutionEvent| {
        let lines = lines.clone();
        async move {
            if let ExecutionEvent::Output(output) = event {
                let kind = match output.stream {
                    OutputStream::Stdout => "stdout",
                    OutputStream::Stderr => "stderr",
                };
                let event = json!({"type": kind, "text": output.data, "timestamp": now_nanos()});
                let _ = lines.send(line(event)).await;
            }
        }
    };
    let engine = &e2b.state.engine;
    let run = engine.run_cell_streamed(
        &sandbox.caller,
        &sandbox.id,
        &context_id,
        cell,
        None,
        cancelled,
        emit,
    );
    tokio::pin!(run);
    let outcome = tokio::select! {
        outcome = &mut run => outcome,
        () = tx.closed() => {
            let _ = cancel.send(());
            run.await
        }
    };
    let outcome = outcome.map_err(|error| (sandbox_gone(&error), engine_error(error)));
    let for_audit = match &outcome {
        Ok(cell) => Ok(cell.clone()),
        Err((_, error)) => Err(error.clone()),
    };
    crate::rpc::cell_accounted(
        &e2b.state,
        &sandbox.caller,
        &sandbox.id,
        started.elapsed(),
        &for_audit,
    );
    let events = match outcome {
        Ok(cell) => closing_events(&cell),
        Err((gone, error)) => {
            if gone {
                e2b.forget(&sandbox.id);
            }
            vec![
                json!({"type": "error", "name": "SandboxError", "value": error.message, "traceback": ""}),
                json!({ "type": "end_of_execution" }),
            ]
        }
    };
    for event in events {
        if tx.send(line(event)).await.is_err() {
            return;
        }
    }
}

/// Whether an engine error means the sandbox is gone.
fn sandbox_gone(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::SessionNotFound(_) | EngineError::SessionClosed { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use codebeaker_protocol::contexts::{CellError, CellResult};
    use codebeaker_sandbox::Verdict;
    use std::time::Duration;

    fn outcome(results: Vec<CellResult>, error: Option<CellError>) -> CellOutcome {
        CellOutcome {
            status: if error.is_some() {
                Verdict::RuntimeError
            } else {
                Verdict::Ok
            },
            stdout: Vec::new(),
            stderr: Vec::new(),
            results,
            error,
            execution_count: 3,
            state_lost: false,
            generation: 1,
            truncated: false,
            message: None,
            duration: Duration::from_millis(1),
        }
    }

    #[test]
    fn results_use_e2b_field_names_and_the_cell_ends_with_its_count() {
        let data = BTreeMap::from([
            ("text/plain".to_string(), json!("2")),
            ("image/png".to_string(), json!("iVBOR")),
            ("application/x-custom".to_string(), json!("x")),
        ]);
        let events = closing_events(&outcome(
            vec![CellResult {
                data,
                is_main_result: true,
            }],
            None,
        ));
        assert_eq!(events[0]["type"], "result");
        assert_eq!(events[0]["text"], "2");
        assert_eq!(events[0]["png"], "iVBOR");
        assert_eq!(events[0]["is_main_result"], true);
        assert_eq!(events[0]["extra"]["application/x-custom"], "x");
        assert_eq!(
            events[1],
            json!({"type": "number_of_executions", "execution_count": 3})
        );
        assert_eq!(events[2], json!({"type": "end_of_execution"}));
    }

    #[test]
    fn an_exception_is_an_error_event() {
        let error = CellError {
            name: "ValueError".into(),
            value: "bad".into(),
            traceback: "Traceback".into(),
        };
        let events = closing_events(&outcome(Vec::new(), Some(error)));
        assert_eq!(
            events[0],
            json!({"type": "error", "name": "ValueError", "value": "bad", "traceback": "Traceback"})
        );
    }
}
