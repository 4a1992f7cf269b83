//! JSON-RPC methods: one request in, at most one response out, with the engine doing the work.
//!
//! Every request goes through [`handle_request`]: rate limit, method lookup, params decoding
//! (`-32602` naming the field), the engine call, and the mapping of engine errors to codes.
//! Streaming notifications of `session.execute` go out through the connection's [`EventSink`]
//! before the response is returned.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use codebeaker_engine::{Caller, CellRequest, ContextOptions, OneShotRequest, SessionOptions};
use codebeaker_protocol::commands::{Command, CommandType, RunStatus as WireStatus};
use codebeaker_protocol::contexts::{
    ContextCloseResult, ContextCreateParams, ContextListParams, ContextListResult, ContextParams,
    ContextRunParams,
};
use codebeaker_protocol::jsonrpc::{ErrorObject, Id, Request, Response};
use codebeaker_protocol::methods::{
    ExecutionEvent, ExecutionRunParams, ExecutionRunResult, ExecutionStatus, ExecutionStatusParams,
    InitializeParams, InitializeResult, Method, NoParams, SessionCloseParams, SessionCloseResult,
    SessionCreateParams, SessionExecuteParams, SessionListResult,
};
use codebeaker_protocol::params::{
    decode_params_reporting, unknown_field_warning, unknown_fields_error,
};
use futures_util::FutureExt;
use serde::Serialize;
use serde_json::Value;

use crate::audit;
use crate::convert;
use crate::error::{engine_error, internal_error};
use crate::metrics::RunKind;
use crate::rate_limit::RateLimiter;
use crate::state::AppState;
use crate::ws::EventSink;

/// The name this server reports in `initialize`.
pub const SERVER_NAME: &str = "codebeaker";

type RpcResult = Result<Value, ErrorObject>;

/// Handles one request: `None` for a notification (which is run all the same). Never panics
/// outward: a panic becomes `-32603` with an error id.
/// Decodes one request's params: the fields its params type does not know are kept for the
/// result's `warnings`, or refused when the connection is strict.
pub(crate) struct Decoder {
    method: &'static str,
    strict: bool,
    warnings: Vec<String>,
}

impl Decoder {
    pub(crate) fn new(method: &'static str, strict: bool) -> Decoder {
        Decoder {
            method,
            strict,
            warnings: Vec::new(),
        }
    }

    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &mut self,
        params: Option<Value>,
    ) -> Result<T, ErrorObject> {
        let (value, unknown) = decode_params_reporting(self.method, params)?;
        if self.strict && !unknown.is_empty() {
            return Err(unknown_fields_error(self.method, &unknown));
        }
        self.warnings
            .extend(unknown.iter().map(|f| unknown_field_warning(f)));
        Ok(value)
    }

    /// Adds the warnings to a result object as `warnings` (a result without any is unchanged).
    pub(crate) fn annotate(self, result: RpcResult) -> RpcResult {
        let mut value = result?;
        if let (false, Value::Object(fields)) = (self.warnings.is_empty(), &mut value) {
            fields.insert("warnings".into(), Value::from(self.warnings));
        }
        Ok(value)
    }
}

/// Handles one request. `strict` is the connection's: `initialize` with `strict: true` sets it,
/// and from then on params with unknown fields are refused.
pub(crate) async fn handle_request(
    state: &AppState,
    caller: &Caller,
    request: Request,
    events: Option<&EventSink>,
    strict: &AtomicBool,
) -> Option<Response> {
    let started = Instant::now();
    let method = Method::from_name(&request.method);
    let label = method.map_or("unknown", Method::name);
    let id = request.id.clone();
    // What a refusal is about, for the audit log (read leniently: the params are decoded later).
    let session_id = matches!(
        method,
        Some(
            Method::SessionExecute
                | Method::SessionClose
                | Method::ContextCreate
                | Method::ContextRun
                | Method::ContextList
                | Method::ContextRestart
                | Method::ContextClose
        )
    )
    .then(|| session_id_of(request.params.as_ref()).map(str::to_owned))
    .flatten();
    let command = matches!(method, Some(Method::SessionExecute))
        .then(|| command_type_of(request.params.as_ref()))
        .flatten();
    let result = match state.limiter.check(caller) {
        Err(retry_after_ms) => {
            state.metrics.rate_limited();
            Err(RateLimiter::error(retry_after_ms))
        }
        Ok(()) => match method {
            None => Err(ErrorObject::method_not_found(&request.method)),
            Some(method) => {
                let mut decoder = Decoder::new(method.name(), strict.load(Ordering::Relaxed));
                let call = dispatch(
                    state,
                    caller,
                    method,
                    id.clone(),
                    request.params,
                    events,
                    &mut decoder,
                    strict,
                );
                match AssertUnwindSafe(call).catch_unwind().await {
                    Ok(result) => decoder.annotate(result),
                    Err(_) => Err(internal_error(&format_args!(
                        "the handler of {label} panicked"
                    ))),
                }
            }
        },
    };
    state.metrics.rpc(
        label,
        result.as_ref().err().map(|e| e.code),
        started.elapsed(),
    );
    if let Err(error) = &result {
        let subject = audit::Subject {
            session_id: session_id.as_deref(),
            command,
        };
        audit::refused(caller, label, error, subject);
    }
    match (id, result) {
        (Some(id), Ok(value)) => Some(Response::result(id, value)),
        (Some(id), Err(error)) => Some(Response::error(Some(id), error)),
        (None, Ok(_)) => None,
        (None, Err(error)) => {
            tracing::debug!(method = %request.method, error = %error, "a notification failed");
            None
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> RpcResult {
    serde_json::to_value(value).map_err(|e| internal_error(&e))
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    state: &AppState,
    caller: &Caller,
    method: Method,
    id: Option<Id>,
    params: Option<Value>,
    events: Option<&EventSink>,
    decoder: &mut Decoder,
    strict: &AtomicBool,
) -> RpcResult {
    match method {
        Method::Initialize => {
            let params: InitializeParams = decoder.decode(params)?;
            if let Some(on) = params.strict {
                strict.store(on, Ordering::Relaxed);
            }
            to_json(&initialize(state))
        }
        Method::LanguageList => {
            let _: NoParams = decoder.decode(params)?;
            to_json(&codebeaker_engine::wire::language_list(&state.engine))
        }
        Method::SessionCreate => session_create(state, caller, decoder.decode(params)?).await,
        Method::SessionExecute => {
            session_execute(state, caller, id, decoder.decode(params)?, events).await
        }
        Method::SessionClose => {
            let params: SessionCloseParams = decoder.decode(params)?;
            let id = &params.session_id;
            let ended = state
                .engine
                .close_session(caller, id)
                .await
                .map_err(engine_error)?;
            state.metrics.session_closed("client", 1);
            audit::session_closed(caller, id, Some(&ended.language), "client");
            to_json(&SessionCloseResult {
                session_id: params.session_id,
                closed: true,
            })
        }
        Method::SessionList => {
            let _: NoParams = decoder.decode(params)?;
            let runtime = state.engine.isolation().backend;
            let sessions = state
                .engine
                .list_sessions(caller)
                .iter()
                .map(|s| codebeaker_engine::wire::session_info(s, runtime))
                .collect();
            to_json(&SessionListResult { sessions })
        }
        Method::ExecutionRun => {
            let (request, wait) = one_shot_request(decoder, params)?;
            let language = language_label(state, Some(&request.language));
            let execution_id = state
                .engine
                .submit_execution(caller, request)
                .map_err(engine_error)?;
            watch_one_shot(state, caller, &execution_id, language);
            match wait {
                // Without `wait`, the original shape: `{executionId, status: "queued"}`.
                None => to_json(&ExecutionRunResult {
                    execution_id,
                    status: ExecutionStatus::Queued,
                }),
                Some(wait) => {
                    let record = wait_for_execution(state, caller, &execution_id, wait).await?;
                    Ok(codebeaker_engine::wire::execution_status_json(record))
                }
            }
        }
        Method::ContextCreate => {
            let params: ContextCreateParams = decoder.decode(params)?;
            let opts = ContextOptions {
                language: params.language,
                cwd: params.cwd,
                env: params.env,
            };
            let context = state
                .engine
                .create_context(caller, &params.session_id, opts)
                .await
                .map_err(engine_error)?;
            to_json(&context.info())
        }
        Method::ContextRun => context_run(state, caller, id, decoder.decode(params)?, events).await,
        Method::ContextList => {
            let params: ContextListParams = decoder.decode(params)?;
            let contexts = state
                .engine
                .list_contexts(caller, &params.session_id)
                .map_err(engine_error)?;
            to_json(&ContextListResult {
                contexts: contexts.iter().map(|c| c.info()).collect(),
            })
        }
        Method::ContextRestart => {
            let params: ContextParams = decoder.decode(params)?;
            let context = state
                .engine
                .restart_context(caller, &params.session_id, &params.context_id)
                .await
                .map_err(engine_error)?;
            to_json(&context.info())
        }
        Method::ContextClose => {
            let params: ContextParams = decoder.decode(params)?;
            state
                .engine
                .close_context(caller, &params.session_id, &params.context_id)
                .await
                .map_err(engine_error)?;
            to_json(&ContextCloseResult {
                context_id: params.context_id,
                closed: true,
            })
        }
        Method::ExecutionStatus => {
            let params: ExecutionStatusParams = decoder.decode(params)?;
            let wait = Duration::from_millis(params.wait.unwrap_or(0));
            let record = wait_for_execution(state, caller, &params.execution_id, wait).await?;
            Ok(codebeaker_engine::wire::execution_status_json(record))
        }
    }
}

/// `initialize`'s result.
pub(crate) fn initialize(state: &AppState) -> InitializeResult {
    let limits = convert::limits(&state.engine, &state.config);
    codebeaker_engine::wire::initialize(&state.engine, SERVER_NAME, limits)
}

async fn session_create(
    state: &AppState,
    caller: &Caller,
    params: SessionCreateParams,
) -> RpcResult {
    let backend = state.engine.isolation().backend;
    if let Some(runtime) = params.runtime.as_deref() {
        // A preference: the session runs on this server's backend, and the result says which.
        if !runtime.eq_ignore_ascii_case(backend) {
            tracing::debug!(
                asked = runtime,
                backend,
                "session.create: runtime preference not available; using the server's backend"
            );
        }
    }
    let minutes = |m: u64| Duration::from_secs(m.saturating_mul(60));
    let options = SessionOptions {
        language: params.language,
        idle_timeout: params.idle_timeout_minutes.map(minutes),
        max_lifetime: params.max_lifetime_minutes.map(minutes),
        memory_limit_mb: params.memory_limit_mb,
        cpu_shares: params.cpu_shares,
    };
    // Refusals are written to the audit log by `handle_request`.
    let opening = crate::sessions::Opening {
        route: None,
        noun: "session(s)",
        make_room: "close one first",
    };
    let snapshot = crate::sessions::open_session(state, caller, options, opening).await?;
    to_json(&codebeaker_engine::wire::session_created(
        &snapshot,
        backend,
        params.cpu_shares,
    ))
}

async fn session_execute(
    state: &AppState,
    caller: &Caller,
    id: Option<Id>,
    params: SessionExecuteParams,
    events: Option<&EventSink>,
) -> RpcResult {
    let stream = params.wants_stream();
    let SessionExecuteParams {
        session_id,
        command,
        ..
    } = params;
    let kind = command.command_type();
    // For `execute`: the language asked for (`None` inside: the session's).
    let run_language = match &command {
        Command::Execute(c) => Some(c.language.clone()),
        _ => None,
    };
    let started = Instant::now();
    let outcome = match events.filter(|_| stream) {
        None => {
            state
                .engine
                .execute_command(caller, &session_id, command, None)
                .await
        }
        Some(events) => {
            let emit = |event: ExecutionEvent| events.send_text(event.to_notification().to_json());
            state
                .engine
                .execute_command_streamed(caller, &session_id, command, id, emit)
                .await
        }
    }
    .map_err(engine_error);
    let elapsed = started.elapsed();
    match &outcome {
        // Refused (an unknown session): handle_request logs it as a refusal.
        Err(error)
            if audit::refusal_reason(error.code, Method::SessionExecute.name()).is_some() => {}
        Err(error) => {
            state.metrics.command(kind.as_str());
            let record = audit::CommandRecord {
                session_id: &session_id,
                command: kind.as_str(),
                success: false,
                duration: elapsed,
                status: None,
                error: Some(error),
            };
            audit::command(caller, record);
        }
        Ok(outcome) => {
            state.metrics.command(kind.as_str());
            let run = outcome.run();
            let status = run.map(|r| r.status.as_str());
            if let (Some(asked), Some(status)) = (run_language, status) {
                let name = asked.or_else(|| {
                    state
                        .engine
                        .list_sessions(caller)
                        .into_iter()
                        .find(|s| s.id == session_id)
                        .map(|s| s.language)
                });
                let ran_for = run.map(|r| Duration::from_millis(r.duration_ms));
                state.metrics.execution(
                    RunKind::Session,
                    language_label(state, name.as_deref()),
                    status,
                    ran_for,
                );
            }
            let record = audit::CommandRecord {
                session_id: &session_id,
                command: kind.as_str(),
                success: outcome.success,
                duration: outcome.duration,
                status,
                error: None,
            };
            audit::command(caller, record);
        }
    }
    to_json(&codebeaker_engine::wire::execute_result(outcome?))
}

/// `context.run`: one cell, its output streamed as `execution.*` notifications when asked, and
/// counted and written to the audit log like a command (`cell`).
async fn context_run(
    state: &AppState,
    caller: &Caller,
    id: Option<Id>,
    params: ContextRunParams,
    events: Option<&EventSink>,
) -> RpcResult {
    let stream = params.stream.unwrap_or(false);
    let ContextRunParams {
        session_id,
        context_id,
        code,
        env,
        timeout_ms,
        memory_limit,
        ..
    } = params;
    let req = CellRequest {
        code,
        env,
        timeout: timeout_ms.map(Duration::from_millis),
        memory_limit_mb: memory_limit,
    };
    let started = Instant::now();
    // A receiver whose sender is gone never fires.
    let (_, never) = tokio::sync::oneshot::channel();
    let outcome = match events.filter(|_| stream) {
        None => {
            state
                .engine
                .run_cell(caller, &session_id, &context_id, req, None, never)
                .await
        }
        Some(events) => {
            let emit = |event: ExecutionEvent| events.send_text(event.to_notification().to_json());
            state
                .engine
                .run_cell_streamed(caller, &session_id, &context_id, req, id, never, emit)
                .await
        }
    }
    .map_err(engine_error);
    cell_accounted(state, caller, &session_id, started.elapsed(), &outcome);
    to_json(&outcome?.result())
}

/// Counts a command that ran in a session (or that the engine failed to run, with its error)
/// and writes it to the audit log, for the doors whose commands are not `session.execute`s.
pub(crate) fn command_accounted(
    state: &AppState,
    caller: &Caller,
    session_id: &str,
    kind: &'static str,
    outcome: Result<&codebeaker_engine::CommandOutcome, &ErrorObject>,
    elapsed: Duration,
) {
    state.metrics.command(kind);
    let record = match outcome {
        Ok(outcome) => audit::CommandRecord {
            session_id,
            command: kind,
            success: outcome.success,
            duration: outcome.duration,
            status: outcome.run().map(|r| r.status.as_str()),
            error: None,
        },
        Err(error) => audit::CommandRecord {
            session_id,
            command: kind,
            success: false,
            duration: elapsed,
            status: None,
            error: Some(error),
        },
    };
    audit::command(caller, record);
}

/// Counts a cell and writes it to the audit log as the command `cell` (a refusal, such as an
/// unknown session, is logged by `handle_request`).
pub(crate) fn cell_accounted(
    state: &AppState,
    caller: &Caller,
    session_id: &str,
    elapsed: Duration,
    outcome: &Result<codebeaker_engine::CellOutcome, ErrorObject>,
) {
    let status = outcome.as_ref().ok().map(|o| wire_status(o.status));
    match outcome {
        Err(error) if audit::refusal_reason(error.code, Method::ContextRun.name()).is_some() => {}
        _ => {
            state.metrics.command("cell");
            let record = audit::CommandRecord {
                session_id,
                command: "cell",
                success: outcome.as_ref().is_ok_and(|o| o.success()),
                duration: outcome.as_ref().map_or(elapsed, |o| o.duration),
                status: status.map(|s| s.as_str()),
                error: outcome.as_ref().err(),
            };
            audit::command(caller, record);
        }
    }
}

fn wire_status(status: codebeaker_sandbox::Verdict) -> WireStatus {
    codebeaker_engine::wire::run_status(status)
}

/// A language as a metric label: the registry's name for it, or `unknown` (labels take no
/// free text from clients).
pub(crate) fn language_label(state: &AppState, name: Option<&str>) -> String {
    name.and_then(|n| state.engine.registry().resolve(n).ok())
        .map_or_else(|| "unknown".to_string(), |l| l.name().to_string())
}

/// The one-shot run `id` as soon as it has ended, or its record when `wait` is over (or when the
/// server begins to shut down, so that a long-poll never holds up a shutdown), whichever comes
/// first. A zero `wait` answers at once.
pub(crate) async fn wait_for_execution(
    state: &AppState,
    caller: &Caller,
    id: &str,
    wait: Duration,
) -> Result<codebeaker_engine::ExecutionRecord, ErrorObject> {
    if !wait.is_zero() {
        let mut shutdown = state.shutdown_signal();
        tokio::select! {
            record = state.engine.wait_execution(caller, id, wait) => {
                return record.map_err(engine_error);
            }
            _ = shutdown.wait_for(|stopping| *stopping) => {}
        }
    }
    state
        .engine
        .execution_status(caller, id)
        .map_err(engine_error)
}

/// Logs a queued one-shot run, and counts it (metrics, audit log) once it has ended, woken by
/// the engine when it ends.
pub(crate) fn watch_one_shot(
    state: &AppState,
    caller: &Caller,
    execution_id: &str,
    language: String,
) {
    audit::execution_queued(caller, execution_id, &language);
    let state = state.clone();
    let caller = caller.clone();
    let id = execution_id.to_string();
    tokio::spawn(async move {
        // Gone: forgotten after its retention (or the engine is gone); nothing to count.
        let Ok(record) = state.engine.execution_ended(&caller, &id).await else {
            return;
        };
        if !convert::execution_finished(&record) {
            return;
        }
        let status = record
            .outcome
            .map_or(
                WireStatus::InternalError,
                codebeaker_engine::wire::run_status,
            )
            .as_str();
        let ran_for = record.wall_time;
        state
            .metrics
            .execution(RunKind::OneShot, language.clone(), status, ran_for);
        let ms = ran_for.map(audit::millis);
        audit::execution_finished(&caller, &id, &language, status, ms);
    });
}

/// `execution.run` params (also the body of `POST /api/execution`) as an engine request, and
/// how long to wait for the run to end before answering (`wait`; `None`: answer at once with
/// the original `{executionId, status: "queued"}`).
///
/// Besides the protocol's fields, `input` (any JSON) makes the run a snippet, as in `execute`.
/// `packages` is refused (install packages in a session); `cpuLimit` is accepted and not applied
/// (every box gets the server's CPU quota).
pub(crate) fn one_shot_request(
    decoder: &mut Decoder,
    params: Option<Value>,
) -> Result<(OneShotRequest, Option<Duration>), ErrorObject> {
    let method = decoder.method;
    let params: ExecutionRunParams = decoder.decode(params)?;
    if !params.packages.is_empty() {
        return Err(ErrorObject::invalid_params(format!(
            "invalid params for {method}: packages: runs cannot install packages (boxes have no network); the packages the operator installs on the host are in every box (docs/languages.md, \"Packages\")"
        ))
        .with_data(serde_json::json!({ "field": "packages" })));
    }
    if let Some(cpu) = params.cpu_limit {
        tracing::debug!(
            cpu_limit = cpu,
            "{method}: cpuLimit is not applied to one-shot runs"
        );
    }
    let request = OneShotRequest {
        language: params.language,
        code: params.code,
        stdin: params.stdin,
        input: params.input,
        timeout: params.timeout.map(Duration::from_secs),
        timeout_ms: params.timeout_ms.map(Duration::from_millis),
        memory_limit_mb: params.memory_limit,
        ..Default::default()
    };
    Ok((request, params.wait.map(Duration::from_millis)))
}

/// The `sessionId` of a request's params, read leniently (the params are decoded properly later).
pub(crate) fn session_id_of(params: Option<&Value>) -> Option<&str> {
    let object = params_object(params)?;
    ["sessionId", "SessionId", "session_id"]
        .iter()
        .find_map(|key| object.get(*key))
        .and_then(Value::as_str)
}

/// The command type of `session.execute` params, read leniently; only known types.
fn command_type_of(params: Option<&Value>) -> Option<&'static str> {
    let command = ["command", "Command"]
        .iter()
        .find_map(|key| params_object(params)?.get(*key))?
        .as_object()?;
    let name = ["type", "Type"]
        .iter()
        .find_map(|key| command.get(*key))?
        .as_str()?;
    CommandType::from_name(name).map(CommandType::as_str)
}

fn params_object(params: Option<&Value>) -> Option<&serde_json::Map<String, Value>> {
    match params? {
        Value::Array(items) if items.len() == 1 => items[0].as_object(),
        other => other.as_object(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_params_keep_input_and_refuse_packages() {
        let (request, wait) = one_shot_request(
            &mut Decoder::new("execution.run", false),
            Some(serde_json::json!({"Language": "python", "Code": "print(1)", "input": {"value": 21}, "timeout": 5})),
        )
        .expect("valid params");
        assert_eq!(request.language, "python");
        assert_eq!(request.input, Some(serde_json::json!({"value": 21})));
        assert_eq!(request.timeout, Some(Duration::from_secs(5)));
        assert_eq!(wait, None);

        let (_, wait) = one_shot_request(
            &mut Decoder::new("execution.run", false),
            Some(serde_json::json!({"language": "python", "code": "print(1)", "wait": 1500})),
        )
        .expect("valid params");
        assert_eq!(wait, Some(Duration::from_millis(1500)));
        let error = one_shot_request(
            &mut Decoder::new("execution.run", false),
            Some(serde_json::json!({"language": "python", "code": "print(1)", "wait": 60001})),
        )
        .expect_err("wait is bounded");
        assert_eq!(error.code, -32602);
        assert!(error.message.contains("wait"), "{}", error.message);

        let error = one_shot_request(
            &mut Decoder::new("execution.run", false),
            Some(serde_json::json!({"language": "python", "code": "", "packages": ["requests"]})),
        )
        .expect_err("packages are refused");
        assert_eq!(error.code, -32602);
        assert!(error.message.contains("packages"), "{}", error.message);

        let error = one_shot_request(
            &mut Decoder::new("execution.run", false),
            Some(serde_json::json!({"language": "python"})),
        )
        .expect_err("code is required");
        assert!(error.message.contains("`code`"), "{}", error.message);
    }
}
