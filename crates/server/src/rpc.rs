//! JSON-RPC methods: one request in, at most one response out, with the engine doing the work.
//!
//! Every request goes through [`handle_request`]: rate limit, method lookup, params decoding
//! (`-32602` naming the field), the engine call, and the mapping of engine errors to codes.
//! Streaming notifications of `session.execute` go out through the connection's [`EventSink`]
//! before the response is returned.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use codebeaker_engine::{Caller, CommandOutcome, OneShotRequest, SessionOptions};
use codebeaker_protocol::commands::{CommandType, RunStatus as WireStatus};
use codebeaker_protocol::jsonrpc::{ErrorObject, Id, Request, Response};
use codebeaker_protocol::methods::{
    Capabilities, ExecutionCompleted, ExecutionEvent, ExecutionOutput, ExecutionRunParams,
    ExecutionRunResult, ExecutionStarted, ExecutionStatus, ExecutionStatusParams, InitializeParams,
    InitializeResult, Method, NoParams, OutputStream, ServerInfo, SessionCloseParams,
    SessionCloseResult, SessionCreateParams, SessionExecuteParams, SessionExecuteResult,
    SessionListResult,
};
use codebeaker_protocol::params::decode_params;
use codebeaker_sandbox::{OutputChunk, Stream};
use futures_util::FutureExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::convert;
use crate::error::{engine_error, internal_error};
use crate::rate_limit::RateLimiter;
use crate::state::AppState;
use crate::ws::EventSink;

/// The name this server reports in `initialize`.
pub const SERVER_NAME: &str = "codebeaker";

/// Streamed output is sent in notifications of at most about this many bytes.
const MAX_NOTIFICATION_BYTES: usize = 64 * 1024;

type RpcResult = Result<Value, ErrorObject>;

/// Handles one request: `None` for a notification (which is run all the same). Never panics
/// outward: a panic becomes `-32603` with an error id.
pub(crate) async fn handle_request(
    state: &AppState,
    caller: &Caller,
    request: Request,
    events: Option<&EventSink>,
) -> Option<Response> {
    let started = Instant::now();
    let method = Method::from_name(&request.method);
    let label = method.map_or("unknown", Method::name);
    let id = request.id.clone();
    let result = match state.limiter.check(caller) {
        Err(retry_after_ms) => {
            state.metrics.rate_limited();
            Err(RateLimiter::error(retry_after_ms))
        }
        Ok(()) => match method {
            None => Err(ErrorObject::method_not_found(&request.method)),
            Some(method) => {
                let call = dispatch(state, caller, method, id.clone(), request.params, events);
                match AssertUnwindSafe(call).catch_unwind().await {
                    Ok(result) => result,
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

async fn dispatch(
    state: &AppState,
    caller: &Caller,
    method: Method,
    id: Option<Id>,
    params: Option<Value>,
    events: Option<&EventSink>,
) -> RpcResult {
    let name = method.name();
    match method {
        Method::Initialize => {
            let _: InitializeParams = decode_params(name, params)?;
            to_json(&initialize(state))
        }
        Method::LanguageList => {
            let _: NoParams = decode_params(name, params)?;
            Ok(serde_json::json!({ "languages": state.engine.languages() }))
        }
        Method::SessionCreate => session_create(state, caller, decode_params(name, params)?).await,
        Method::SessionExecute => {
            session_execute(state, caller, id, decode_params(name, params)?, events).await
        }
        Method::SessionClose => {
            let params: SessionCloseParams = decode_params(name, params)?;
            state
                .engine
                .close_session(caller, &params.session_id)
                .await
                .map_err(engine_error)?;
            to_json(&SessionCloseResult {
                session_id: params.session_id,
                closed: true,
            })
        }
        Method::SessionList => {
            let _: NoParams = decode_params(name, params)?;
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
            let request = one_shot_request(name, params)?;
            let execution_id = state
                .engine
                .submit_execution(caller, request)
                .map_err(engine_error)?;
            to_json(&ExecutionRunResult {
                execution_id,
                status: ExecutionStatus::Queued,
            })
        }
        Method::ExecutionStatus => {
            let params: ExecutionStatusParams = decode_params(name, params)?;
            let record = state
                .engine
                .execution_status(caller, &params.execution_id)
                .map_err(engine_error)?;
            Ok(codebeaker_engine::wire::execution_status_json(record))
        }
    }
}

/// `initialize`'s result.
pub(crate) fn initialize(state: &AppState) -> InitializeResult {
    let engine = &state.engine;
    InitializeResult {
        server_info: ServerInfo {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        protocol_version: codebeaker_protocol::PROTOCOL_VERSION.into(),
        capabilities: Capabilities {
            streaming: true,
            languages: engine
                .languages()
                .iter()
                .map(codebeaker_engine::wire::language)
                .collect(),
            commands: CommandType::ALL
                .iter()
                .map(|t| t.as_str().to_string())
                .collect(),
            limits: convert::limits(engine, &state.config),
            isolation: codebeaker_engine::wire::isolation(engine.isolation()),
        },
    }
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
    let snapshot = state
        .engine
        .create_session(caller, options)
        .await
        .map_err(engine_error)?;
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
    let outcome = match events.filter(|_| stream) {
        None => state
            .engine
            .execute_command(caller, &session_id, command, None)
            .await
            .map_err(engine_error)?,
        Some(events) => {
            let kind = command.command_type();
            let streamed = Streamed {
                events,
                request_id: id,
                session_id: session_id.clone(),
            };
            streamed
                .run(kind, |tx| {
                    state
                        .engine
                        .execute_command(caller, &session_id, command, Some(tx))
                })
                .await?
        }
    };
    to_json(&execute_result(outcome))
}

fn execute_result(outcome: CommandOutcome) -> SessionExecuteResult {
    SessionExecuteResult {
        success: outcome.success,
        result: (!outcome.result.is_null()).then_some(outcome.result),
        error: outcome.error,
        duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

/// A command whose progress is streamed as `execution.*` notifications.
struct Streamed<'a> {
    events: &'a EventSink,
    request_id: Option<Id>,
    session_id: String,
}

impl Streamed<'_> {
    async fn run<F, Fut>(self, kind: CommandType, execute: F) -> Result<CommandOutcome, ErrorObject>
    where
        F: FnOnce(mpsc::UnboundedSender<OutputChunk>) -> Fut,
        Fut: std::future::Future<Output = Result<CommandOutcome, codebeaker_engine::EngineError>>,
    {
        let started = Instant::now();
        self.emit(ExecutionEvent::Started(ExecutionStarted {
            request_id: self.request_id.clone(),
            session_id: self.session_id.clone(),
            command: kind.as_str().to_string(),
        }))
        .await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (done, mut finished) = oneshot::channel::<()>();
        // The command and the forwarding of its output run side by side, so that a client slow
        // to read its notifications never stops the command from being driven.
        let running = async {
            let result = execute(tx).await;
            let _ = done.send(());
            result
        };
        let forwarding = async {
            let mut output = OutputForwarder::default();
            loop {
                tokio::select! {
                    biased;
                    Some(chunk) = rx.recv() => {
                        let mut chunks = vec![chunk];
                        while let Ok(more) = rx.try_recv() {
                            chunks.push(more);
                        }
                        for event in output.push(&self, chunks) {
                            self.emit(event).await;
                        }
                    }
                    // The end of the command, not the end of the channel, ends the stream: the
                    // sender may outlive the call.
                    _ = &mut finished => break,
                }
            }
            let mut rest = Vec::new();
            while let Ok(chunk) = rx.try_recv() {
                rest.push(chunk);
            }
            let mut tail = output.push(&self, rest);
            tail.extend(output.finish(&self));
            for event in tail {
                self.emit(event).await;
            }
        };
        let (result, ()) = tokio::join!(running, forwarding);
        let (success, status, duration) = match &result {
            Ok(outcome) => (
                outcome.success,
                run_status_of(kind, &outcome.result),
                outcome.duration,
            ),
            Err(_) => (false, None, started.elapsed()),
        };
        self.emit(ExecutionEvent::Completed(ExecutionCompleted {
            request_id: self.request_id.clone(),
            session_id: self.session_id.clone(),
            success,
            status,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        }))
        .await;
        result.map_err(engine_error)
    }

    async fn emit(&self, event: ExecutionEvent) {
        self.events
            .send_text(event.to_notification().to_json())
            .await;
    }
}

/// The run status in a run command's result, for `execution.completed`.
fn run_status_of(kind: CommandType, result: &Value) -> Option<WireStatus> {
    match kind {
        CommandType::Execute | CommandType::Shell | CommandType::InstallPackages => result
            .get("status")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok()),
        _ => None,
    }
}

/// Turns output chunks into `execution.output` events: consecutive chunks of one stream are
/// merged, UTF-8 sequences split across chunks are kept whole, and `seq` counts from 0 across
/// both streams.
#[derive(Default)]
struct OutputForwarder {
    seq: u64,
    stdout: Utf8Carry,
    stderr: Utf8Carry,
}

impl OutputForwarder {
    fn push(&mut self, target: &Streamed<'_>, chunks: Vec<OutputChunk>) -> Vec<ExecutionEvent> {
        let mut events = Vec::new();
        let mut current: Option<(Stream, String)> = None;
        for chunk in chunks {
            let text = match chunk.stream {
                Stream::Stdout => self.stdout.push(&chunk.data),
                Stream::Stderr => self.stderr.push(&chunk.data),
            };
            if text.is_empty() {
                continue;
            }
            match &mut current {
                Some((stream, buffer))
                    if *stream == chunk.stream
                        && buffer.len() + text.len() <= MAX_NOTIFICATION_BYTES =>
                {
                    buffer.push_str(&text);
                }
                _ => {
                    if let Some((stream, data)) = current.take() {
                        events.push(self.event(target, stream, data));
                    }
                    current = Some((chunk.stream, text));
                }
            }
        }
        if let Some((stream, data)) = current {
            events.push(self.event(target, stream, data));
        }
        events
    }

    fn finish(&mut self, target: &Streamed<'_>) -> Vec<ExecutionEvent> {
        let mut events = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let text = match stream {
                Stream::Stdout => self.stdout.finish(),
                Stream::Stderr => self.stderr.finish(),
            };
            if !text.is_empty() {
                events.push(self.event(target, stream, text));
            }
        }
        events
    }

    fn event(&mut self, target: &Streamed<'_>, stream: Stream, data: String) -> ExecutionEvent {
        let seq = self.seq;
        self.seq += 1;
        ExecutionEvent::Output(ExecutionOutput {
            request_id: target.request_id.clone(),
            session_id: target.session_id.clone(),
            stream: match stream {
                Stream::Stdout => OutputStream::Stdout,
                Stream::Stderr => OutputStream::Stderr,
            },
            data,
            seq,
        })
    }
}

/// Decodes a byte stream as UTF-8 chunk by chunk, holding back a character split across chunks
/// until its remaining bytes arrive. Bytes that are not UTF-8 become U+FFFD.
#[derive(Default)]
struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let cut = incomplete_tail_start(&self.pending);
        let text = String::from_utf8_lossy(&self.pending[..cut]).into_owned();
        self.pending.drain(..cut);
        text
    }

    fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Where a UTF-8 sequence that is cut off at the end of `bytes` starts (`bytes.len()` when the
/// end is not inside a sequence).
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=n.min(3) {
        let byte = bytes[n - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: the sequence started further back
        }
        let needed = match byte {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if needed > back { n - back } else { n };
    }
    n
}

/// `execution.run` params (also the body of `POST /api/execution`) as an engine request.
///
/// Besides the protocol's fields, `input` (any JSON) makes the run a snippet, as in `execute`.
/// `packages` is refused (install packages in a session); `cpuLimit` is accepted and not applied
/// (every box gets the server's CPU quota).
pub(crate) fn one_shot_request(
    method: &str,
    params: Option<Value>,
) -> Result<OneShotRequest, ErrorObject> {
    let input = params.as_ref().and_then(|p| {
        let object = match p {
            Value::Array(items) if items.len() == 1 => items[0].as_object(),
            other => other.as_object(),
        }?;
        ["input", "Input"]
            .iter()
            .find_map(|k| object.get(*k))
            .filter(|v| !v.is_null())
            .cloned()
    });
    let params: ExecutionRunParams = decode_params(method, params)?;
    if !params.packages.is_empty() {
        return Err(ErrorObject::invalid_params(format!(
            "invalid params for {method}: packages: one-shot runs cannot install packages; create a session and use the install_packages command"
        ))
        .with_data(serde_json::json!({ "field": "packages" })));
    }
    if let Some(cpu) = params.cpu_limit {
        tracing::debug!(
            cpu_limit = cpu,
            "{method}: cpuLimit is not applied to one-shot runs"
        );
    }
    Ok(OneShotRequest {
        language: params.language,
        code: params.code,
        stdin: params.stdin,
        input,
        timeout: params.timeout.map(Duration::from_secs),
        memory_limit_mb: params.memory_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let text = "héllo → wörld 🎉";
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let mut carry = Utf8Carry::default();
            let mut out = carry.push(&bytes[..split]);
            out.push_str(&carry.push(&bytes[split..]));
            out.push_str(&carry.finish());
            assert_eq!(out, text, "split at {split}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut carry = Utf8Carry::default();
        let mut out = carry.push(b"a\xffb\xe2\x82");
        out.push_str(&carry.finish());
        assert_eq!(out, "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn one_shot_params_keep_input_and_refuse_packages() {
        let request = one_shot_request(
            "execution.run",
            Some(serde_json::json!({"Language": "python", "Code": "print(1)", "input": {"value": 21}, "timeout": 5})),
        )
        .expect("valid params");
        assert_eq!(request.language, "python");
        assert_eq!(request.input, Some(serde_json::json!({"value": 21})));
        assert_eq!(request.timeout, Some(Duration::from_secs(5)));

        let error = one_shot_request(
            "execution.run",
            Some(serde_json::json!({"language": "python", "code": "", "packages": ["requests"]})),
        )
        .expect_err("packages are refused");
        assert_eq!(error.code, -32602);
        assert!(error.message.contains("packages"), "{}", error.message);

        let error = one_shot_request(
            "execution.run",
            Some(serde_json::json!({"language": "python"})),
        )
        .expect_err("code is required");
        assert!(error.message.contains("`code`"), "{}", error.message);
    }
}
