//! envd's `process.Process` service: commands in the sandbox's box.
//!
//! `Start` runs one command line as the SDKs send it (`/bin/bash -l -c <cmd>`, with `cwd` and
//! `envs`) through the engine's one executor, and streams `start{pid}` first, then the output as
//! `data` events in order, keepalives while it is quiet, and `end{exitCode, exited, status}`,
//! always closed by the end-of-stream envelope. The command is killed at `Connect-Timeout-Ms`
//! (bounded by the engine's longest run); a client that goes away does not stop it.
//!
//! `Connect` follows a running command from then on (its earlier output is not kept).
//! `SendSignal` (SIGKILL or SIGTERM) stops a command through the engine's cancel: the box ends
//! the program at once (SIGTERM too: there is no grace period), and its stream ends as envd's
//! does for a killed process, `end{exitCode: -1, exited: false, status: "signal: killed"}` with
//! the same words as its `error`, so the SDKs' `wait()` raises their command-exit error. A
//! command still waiting for the box behind another is stopped as soon as its turn comes.
//!
//! A command started with `stdin: true` keeps its stdin open: `SendInput` (`{process, input:
//! {stdin: <base64>}}`) appends to it and `CloseStdin` closes it (the program then reads its
//! end); each answers once the box has taken the input, and a piece refused (stdin closed, or
//! more unread input than the box holds for a program) is `failed_precondition` with the reason.
//! A command started without it has its stdin closed from the start, as envd's commands without
//! `stdin` do, and refuses both. What the engine cannot do yet is answered `unimplemented` with
//! the reason: `StreamInput`, terminals (`pty`) and `Update`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use codebeaker_protocol::commands::{Command, ShellCommand};
use codebeaker_sandbox::{OutputChunk, StdinEvent, Stream};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use super::connect::{self, Code, ConnectError, STREAM_CONTENT_TYPE};
use super::{E2b, EnvdError, RunningProcess, Sandbox};

/// Keepalive interval when the client does not ask for one (seconds).
const DEFAULT_KEEPALIVE_SECS: u64 = 50;
/// Envelopes a `Connect`ed follower may fall behind by before it skips some.
const FOLLOWER_BUFFER: usize = 256;
/// Envelopes waiting for a slow client before output is held back.
const STREAM_BUFFER: usize = 64;
/// `SendInput`s for one command that may wait for the box to take the one before them.
const STDIN_BUFFER: usize = 16;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StartRequest {
    process: Option<ProcessConfig>,
    pty: Option<Value>,
    tag: Option<String>,
    stdin: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ProcessConfig {
    cmd: String,
    args: Vec<String>,
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SelectorRequest {
    process: Option<Selector>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InputRequest {
    process: Option<Selector>,
    input: Option<ProcessInput>,
}

/// envd's `ProcessInput`: proto3 JSON's base64 of the bytes for the command's stdin (or its
/// terminal, which no command here has).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProcessInput {
    stdin: Option<String>,
    pty: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SignalRequest {
    process: Option<Selector>,
    /// The proto3 JSON of envd's `Signal` enum: its name, or its number.
    signal: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Selector {
    pid: Option<u32>,
    tag: Option<String>,
}

/// `POST /process.Process/{method}`.
pub(crate) async fn call(
    State(e2b): State<Arc<E2b>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = "/process.Process";
    let sandbox = match e2b.envd_sandbox(&headers, route) {
        Ok(sandbox) => sandbox,
        Err(error) => return error.into_response(),
    };
    let result = match method.as_str() {
        "Start" => return start(e2b, sandbox, &headers, &body).await,
        "Connect" => {
            return match connect::decode_stream_request::<SelectorRequest>(&body) {
                Ok(request) => follow(&e2b, &sandbox, request.process.unwrap_or_default()),
                Err(error) => connect::stream_error(&error),
            };
        }
        "List" => Ok(list(&e2b, &sandbox)),
        "SendSignal" => connect::decode_unary::<SignalRequest>(&body)
            .map_err(EnvdError::from)
            .and_then(|r| signal(&e2b, &sandbox, r).map_err(EnvdError::from)),
        "SendInput" => match connect::decode_unary::<InputRequest>(&body) {
            Ok(r) => send_input(&e2b, &sandbox, r).await.map_err(EnvdError::from),
            Err(e) => Err(e.into()),
        },
        "CloseStdin" => match connect::decode_unary::<SelectorRequest>(&body) {
            Ok(r) => feed(&e2b, &sandbox, r.process.unwrap_or_default(), None)
                .await
                .map_err(EnvdError::from),
            Err(e) => Err(e.into()),
        },
        "StreamInput" => Err(ConnectError::unimplemented(
            "StreamInput",
            "input is sent one piece at a time: use SendInput (send_stdin / sendStdin)",
        )
        .into()),
        "Update" => Err(ConnectError::unimplemented(
            "Update",
            "terminals (PTY) are not available, so there is nothing to resize",
        )
        .into()),
        other => Err(ConnectError::new(
            Code::Unimplemented,
            format!("process.Process/{other} is not a method of this server"),
        )
        .into()),
    };
    match result {
        Ok(message) => connect::unary(message),
        Err(error) => error.into_response(),
    }
}

/// The sandbox's running command with the selector's pid or tag.
fn selected(e2b: &E2b, sandbox: &Sandbox, selector: &Selector) -> Option<(u32, RunningProcess)> {
    e2b.processes(&sandbox.id).into_iter().find(|(pid, p)| {
        selector.pid == Some(*pid) || (selector.tag.is_some() && selector.tag == p.tag)
    })
}

/// The error for a method addressed to a command that does not run: `not_found` when no command
/// of the sandbox has that pid or tag (so that `kill()` answers false).
fn not_found(selector: Selector) -> ConnectError {
    let which = selector
        .pid
        .map(|p| format!("pid {p}"))
        .or(selector.tag.map(|t| format!("tag {t}")))
        .unwrap_or_else(|| "no process selected".into());
    ConnectError::new(Code::NotFound, format!("process with {which} not found"))
}

/// `SendInput`: the bytes for the selected command's stdin.
async fn send_input(
    e2b: &E2b,
    sandbox: &Sandbox,
    request: InputRequest,
) -> Result<Value, ConnectError> {
    let input = request.input.unwrap_or_default();
    if input.pty.is_some() {
        return Err(ConnectError::unimplemented(
            "terminal input (pty)",
            "commands run without a terminal; send their input as stdin",
        ));
    }
    let data = match input.stdin.as_deref() {
        None => Vec::new(),
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| ConnectError::invalid(format!("input.stdin is not base64: {e}")))?,
    };
    feed(
        e2b,
        sandbox,
        request.process.unwrap_or_default(),
        Some(data),
    )
    .await
}

/// Sends `data` to the selected command's stdin, or with `None` closes it, and waits until the
/// box has taken it.
async fn feed(
    e2b: &E2b,
    sandbox: &Sandbox,
    selector: Selector,
    data: Option<Vec<u8>>,
) -> Result<Value, ConnectError> {
    let Some((pid, process)) = selected(e2b, sandbox, &selector) else {
        return Err(not_found(selector));
    };
    let Some(stdin) = process.stdin else {
        return Err(ConnectError::new(
            Code::FailedPrecondition,
            format!("process {pid} was started without stdin: start it with stdin: true to send it input"),
        ));
    };
    let (reply, answer) = oneshot::channel();
    let event = match data {
        Some(data) => StdinEvent::Data(data, reply),
        None => StdinEvent::Close(reply),
    };
    let ended = || ConnectError::new(Code::NotFound, format!("process with pid {pid} not found"));
    if stdin.send(event).await.is_err() {
        return Err(ended());
    }
    match answer.await {
        Ok(Ok(())) => Ok(json!({})),
        Ok(Err(e)) => Err(ConnectError::new(Code::FailedPrecondition, e.to_string())),
        // The command ended before its box took the input.
        Err(_) => Err(ended()),
    }
}

/// `SendSignal`: SIGKILL and SIGTERM stop the selected command; `not_found` when no command of
/// the sandbox has that pid or tag (so that `kill()` answers false).
fn signal(e2b: &E2b, sandbox: &Sandbox, request: SignalRequest) -> Result<Value, ConnectError> {
    let selector = request.process.unwrap_or_default();
    let Some((pid, process)) = selected(e2b, sandbox, &selector) else {
        return Err(not_found(selector));
    };
    let known = match &request.signal {
        Value::String(name) => matches!(name.as_str(), "SIGNAL_SIGKILL" | "SIGNAL_SIGTERM"),
        Value::Number(n) => matches!(n.as_u64(), Some(9 | 15)),
        _ => false,
    };
    if !known {
        return Err(ConnectError::new(
            Code::Unimplemented,
            format!("invalid signal: {}", request.signal),
        ));
    }
    let stop = super::lock(&process.stop).take();
    // A second signal finds the first one's stop taken: the command is ending already.
    if let Some(stop) = stop {
        let _ = stop.send(());
        tracing::debug!(sandbox = %sandbox.id, pid, signal = %request.signal, "command stopped");
    }
    Ok(json!({}))
}

/// Where a `Connect`ed follower is in its stream.
enum Follow {
    Start(Bytes, broadcast::Receiver<Bytes>),
    Events(broadcast::Receiver<Bytes>),
    Done,
}

/// `Connect`: the running command's events from now on (`start{pid}` first), to its end.
fn follow(e2b: &E2b, sandbox: &Sandbox, selector: Selector) -> Response {
    let Some((pid, process)) = selected(e2b, sandbox, &selector) else {
        return connect::stream_error(&not_found(selector));
    };
    let start = event(json!({ "start": { "pid": pid } }));
    let state = Follow::Start(start, process.events.subscribe());
    let stream = futures_util::stream::unfold(state, |state| async move {
        match state {
            Follow::Start(start, events) => Some((
                Ok::<Bytes, std::convert::Infallible>(start),
                Follow::Events(events),
            )),
            Follow::Events(mut events) => loop {
                match events.recv().await {
                    Ok(bytes) => {
                        let next = if bytes.first() == Some(&connect::END_STREAM) {
                            Follow::Done
                        } else {
                            Follow::Events(events)
                        };
                        return Some((Ok(bytes), next));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    // The command's stream is over without its end reaching this follower.
                    Err(broadcast::error::RecvError::Closed) => {
                        return Some((Ok(connect::end_of_stream(None)), Follow::Done));
                    }
                }
            },
            Follow::Done => None,
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)],
        Body::from_stream(stream),
    )
        .into_response()
}

fn list(e2b: &E2b, sandbox: &Sandbox) -> Value {
    let processes: Vec<Value> = e2b
        .processes(&sandbox.id)
        .into_iter()
        .map(|(pid, p)| {
            json!({
                "config": { "cmd": p.cmd, "args": p.args, "envs": p.envs, "cwd": p.cwd },
                "pid": pid,
                "tag": p.tag,
            })
        })
        .collect();
    json!({ "processes": processes })
}

fn event(event: Value) -> Bytes {
    connect::envelope(0, &json!({ "event": event }))
}

/// `Start`: a server stream over the run.
async fn start(e2b: Arc<E2b>, sandbox: Sandbox, headers: &HeaderMap, body: &[u8]) -> Response {
    let request: StartRequest = match connect::decode_stream_request(body) {
        Ok(request) => request,
        Err(error) => return connect::stream_error(&error),
    };
    if request.pty.is_some() {
        return connect::stream_error(&ConnectError::unimplemented(
            "a terminal (pty)",
            "commands run without a terminal; run them without pty",
        ));
    }
    let Some(config) = request.process.filter(|p| !p.cmd.trim().is_empty()) else {
        return connect::stream_error(&ConnectError::invalid("process.cmd is required"));
    };
    // The path's lexical check up front, so that a bad cwd fails before `start`.
    if let Some(cwd) = &config.cwd {
        if let Err(e) = codebeaker_engine::paths::resolve(cwd) {
            return connect::stream_error(&ConnectError::invalid(format!("cwd: {e}")));
        }
    }
    let max = e2b.state.engine.config().max_run_time;
    let timeout = connect::timeout_ms(headers)
        .map(Duration::from_millis)
        .map_or(max, |t| t.min(max));
    let keepalive = headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_KEEPALIVE_SECS)
        .clamp(1, 300);
    let mut env = sandbox.env_vars.clone();
    env.extend(config.envs.clone());
    let command = Command::Shell(ShellCommand {
        command: config.cmd.clone(),
        args: config.args.clone(),
        working_directory: config.cwd.clone(),
        env,
        stdin: None,
        timeout_ms: Some(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        ),
        stream: None,
    });
    let (events, _) = broadcast::channel(FOLLOWER_BUFFER);
    let killed = Arc::new(Notify::new());
    let (stop, stopped) = oneshot::channel();
    let (stdin, stdin_rx) = match request.stdin {
        Some(true) => {
            let (tx, rx) = mpsc::channel(STDIN_BUFFER);
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let pid = e2b.process_started(RunningProcess {
        sandbox_id: sandbox.id.clone(),
        cmd: config.cmd,
        args: config.args,
        envs: config.envs,
        cwd: config.cwd,
        tag: request.tag,
        events: events.clone(),
        killed: Arc::clone(&killed),
        stop: Arc::new(std::sync::Mutex::new(Some(stop))),
        stdin,
    });
    let (tx, mut rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    tokio::spawn(async move {
        let keepalive = Duration::from_secs(keepalive);
        let outlets = Outlets {
            tx,
            followers: events,
            killed,
            stopped,
            stdin: stdin_rx,
        };
        drive(&e2b, sandbox, command, pid, keepalive, outlets).await;
        e2b.process_ended(pid);
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<Bytes, std::convert::Infallible>))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Where a run's events go: its own answer, its followers, the news that the sandbox is gone,
/// and the signal that stops the command.
struct Outlets {
    tx: mpsc::Sender<Bytes>,
    followers: broadcast::Sender<Bytes>,
    killed: Arc<Notify>,
    stopped: oneshot::Receiver<()>,
    stdin: Option<mpsc::Receiver<StdinEvent>>,
}

/// Runs the command and sends its events; a client that stopped reading does not stop it.
async fn drive(
    e2b: &Arc<E2b>,
    sandbox: Sandbox,
    command: Command,
    pid: u32,
    keepalive: Duration,
    outlets: Outlets,
) {
    let Outlets {
        tx,
        followers,
        killed,
        stopped,
        stdin,
    } = outlets;
    let _ = tx.send(event(json!({ "start": { "pid": pid } }))).await;
    let send = |bytes: Bytes| {
        let tx = tx.clone();
        // No follower, or one too slow (it skips what it missed): neither holds the command up.
        let _ = followers.send(bytes.clone());
        async move {
            let _ = tx.send(bytes).await;
        }
    };
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<OutputChunk>();
    // On its own task, so that a client slow to read never stops the command from being driven.
    let door = Arc::clone(e2b);
    let run_sandbox = sandbox.id.clone();
    let mut run = tokio::spawn(async move {
        door.run_cancellable(&sandbox, command, Some(out_tx), stopped, stdin)
            .await
    });
    let mut tick = tokio::time::interval(keepalive);
    tick.reset();
    let sandbox_id = run_sandbox;
    let outcome = loop {
        tokio::select! {
            biased;
            Some(chunk) = out_rx.recv() => {
                send(data(&chunk)).await;
                tick.reset();
            }
            outcome = &mut run => break outcome.unwrap_or_else(|e| {
                Err(EnvdError::Connect(ConnectError::new(Code::Internal, format!("the command's task failed: {e}"))))
            }),
            () = killed.notified() => {
                // Not "was not found": the SDKs then ask the sandbox's health, find it gone, and
                // say it was killed while the command ran.
                let error = ConnectError::new(
                    Code::Unavailable,
                    format!("the stream of sandbox {sandbox_id} ended: the sandbox was killed"),
                );
                send(connect::end_of_stream(Some(&error))).await;
                return;
            }
            _ = tick.tick() => send(event(json!({ "keepalive": {} }))).await,
        }
    };
    while let Ok(chunk) = out_rx.try_recv() {
        send(data(&chunk)).await;
    }
    let ending = match outcome {
        Err(EnvdError::Gone(id)) => Err(ConnectError::new(
            Code::Unavailable,
            format!("The sandbox {id} was not found"),
        )),
        Err(EnvdError::Connect(error)) => Err(error),
        Ok(outcome) => match outcome.run() {
            None => Err(super::refusal(
                outcome
                    .error
                    .as_deref()
                    .unwrap_or("the command was refused"),
            )),
            Some(run) if run.timed_out => Err(ConnectError::new(
                Code::DeadlineExceeded,
                format!(
                    "the command ran past its timeout of {} ms and was killed",
                    run.duration_ms
                ),
            )),
            Some(run) => {
                let (exit_code, exited, status) = match (run.exit_code, run.signal) {
                    (Some(code), _) => (code, true, format!("exit status {code}")),
                    (None, Some(signal)) => (-1, false, format!("signal: {}", signal_name(signal))),
                    (None, None) => (-1, false, run.status.as_str().to_string()),
                };
                let stopped =
                    run.status.as_str() == "killed" && run.message.as_deref() == Some("cancelled");
                let mut end = json!({ "exitCode": exit_code, "exited": exited, "status": status });
                if stopped {
                    // What envd says of a process it killed: Go's words for the wait's error.
                    end = json!({ "exitCode": -1, "exited": false, "status": "signal: killed", "error": "signal: killed" });
                } else if run.status.as_str() != "ok" && run.status.as_str() != "runtime_error" {
                    end["error"] = json!(run
                        .message
                        .clone()
                        .unwrap_or_else(|| run.status.as_str().to_string()));
                }
                send(event(json!({ "end": end }))).await;
                Ok(())
            }
        },
    };
    send(connect::end_of_stream(ending.err().as_ref())).await;
}

fn data(chunk: &OutputChunk) -> Bytes {
    let encoded = base64::engine::general_purpose::STANDARD.encode(&chunk.data);
    let key = match chunk.stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    event(json!({ "data": { key: encoded } }))
}

/// Go's words for a signal, as envd's `status` has them.
fn signal_name(signal: i32) -> String {
    match signal {
        9 => "killed".into(),
        15 => "terminated".into(),
        11 => "segmentation fault".into(),
        6 => "aborted".into(),
        2 => "interrupt".into(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_requests_decode_as_the_sdk_sends_them() {
        let body = connect::envelope(
            0,
            &json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi"], "envs": {"A": "1"}, "cwd": "sub"}, "stdin": false}),
        );
        let request: StartRequest = connect::decode_stream_request(&body).expect("decodes");
        let process = request.process.expect("process");
        assert_eq!(process.cmd, "/bin/bash");
        assert_eq!(process.args, ["-l", "-c", "echo hi"]);
        assert_eq!(process.envs["A"], "1");
        assert_eq!(process.cwd.as_deref(), Some("sub"));
        assert_eq!(request.stdin, Some(false));
    }

    #[test]
    fn output_chunks_become_base64_data_events() {
        let chunk = OutputChunk {
            stream: Stream::Stderr,
            data: b"hi\n".to_vec(),
        };
        let bytes = data(&chunk);
        let message: Value = serde_json::from_slice(&bytes[5..]).expect("json");
        assert_eq!(message, json!({"event": {"data": {"stderr": "aGkK"}}}));
    }
}
