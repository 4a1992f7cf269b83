//! `GET connect`: Piston's interactive run over a WebSocket.
//!
//! The client sends `{"type":"init", ...execute's fields}` within a second of connecting; the
//! server answers `{"type":"runtime","language","version"}`, then `{"type":"stage","stage":
//! "compile"}` (compiled languages), `{"type":"exit","stage":"compile","code","signal"}` and
//! `{"type":"stage","stage":"run"}`, the program's output as `{"type":"data","stream":
//! "stdout"|"stderr","data"}` as it comes, and `{"type":"exit","stage":"run","code","signal"}`;
//! then it closes with 4999. A failed compile ends with its output and its `exit`.
//!
//! While the program runs, `{"type":"data","stream":"stdin","data":"..."}` reaches its stdin at
//! once, `{"type":"eof"}` (ours: Piston has no end of input) closes its stdin, and
//! `{"type":"signal","signal":"SIGTERM"}` (any signal name) stops it: the run is killed whole and
//! its `exit` says `SIGKILL`. The `init`'s own `stdin` is sent first, as it is.
//!
//! Close codes, as Piston's: 4000 already initialized, 4001 no `init` within a second, 4002 an
//! `error` was sent, 4003 not yet initialized, 4004 can only write to stdin, 4005 invalid signal,
//! 4999 the job completed. A client that goes away stops its run.

use std::str::FromStr;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use codebeaker_engine::stream::Utf8Carry;
use codebeaker_engine::{Caller, CompileInfo, ExecutionRecord, OneShotHooks};
use codebeaker_sandbox::{OutputChunk, StdinEvent, Stream};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::execute::{self, Collected, Submitted};
use super::job::{self, Job};
use super::PistonError;
use crate::state::{AppState, CallerConnection, Crowded};

const ROUTE: &str = "/api/v2/connect";

/// How long a client has to send its `init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(1);

/// stdin messages waiting for the program (each at most one WebSocket message).
const STDIN_QUEUE: usize = 16;

/// Piston's close codes.
const ALREADY_INITIALIZED: u16 = 4000;
const INIT_TIMED_OUT: u16 = 4001;
const NOTIFIED_ERROR: u16 = 4002;
const NOT_INITIALIZED: u16 = 4003;
const ONLY_STDIN: u16 = 4004;
const INVALID_SIGNAL: u16 = 4005;
const JOB_COMPLETED: u16 = 4999;
/// The server is going away (shutdown).
const GOING_AWAY: u16 = 1001;

/// `GET connect`: authenticates and upgrades.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let caller = match super::caller(&state, &headers, ROUTE) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return PistonError::new(
                rejection.status(),
                format!("{}: connect is a WebSocket endpoint", rejection.body_text()),
            )
            .into_response()
        }
    };
    let reserved = match state.reserve_websocket(&caller) {
        Ok(reserved) => reserved,
        Err(crowded) => {
            let (status, message) = match crowded {
                Crowded::Caller(max) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("this caller already holds {max} WebSocket connections, the most one caller may hold; close one first"),
                ),
                Crowded::Server(max) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the server holds {max} WebSocket connections, the most it takes; retry later"),
                ),
            };
            let error = codebeaker_protocol::jsonrpc::ErrorObject::limit_reached(message.clone());
            crate::audit::refused(&caller, ROUTE, &error, crate::audit::Subject::default());
            return PistonError::new(status, message).into_response();
        }
    };
    let max = state.config.max_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|error| tracing::debug!(%error, "Piston WebSocket upgrade failed"))
        .on_upgrade(move |socket| serve(state, caller, socket, reserved))
}

/// A run the connection started.
struct Running {
    job: Job,
    stdin: mpsc::Sender<StdinEvent>,
    cancel: Option<oneshot::Sender<()>>,
    /// The program has started (its compile, if any, went through).
    started: bool,
}

impl Running {
    /// Stops the program (once), as a `signal` message or a client gone asks.
    fn stop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            let _ = cancel.send(());
        }
    }
}

/// How a connection ends.
enum End {
    Close(u16, &'static str),
    /// Send `error` with this message, then close with 4002.
    Error(String),
    /// The client is gone, or cannot be written to: nothing more to send.
    Gone,
}

type Sink = SplitSink<WebSocket, Message>;

async fn serve(state: AppState, caller: Caller, socket: WebSocket, reserved: CallerConnection) {
    let _reserved = reserved;
    let _open = state.connection_opened();
    let (mut sink, mut stream) = socket.split();
    let mut running: Option<Running> = None;
    let end = session(&state, &caller, &mut sink, &mut stream, &mut running).await;
    if let Some(run) = running.as_mut() {
        // A run the client no longer follows is stopped (a finished one is not touched).
        run.stop();
    }
    let timeout = state.config.slow_reader_timeout;
    let close = |code: u16, reason: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let last = match end {
        End::Close(code, reason) => Some(close(code, reason)),
        End::Error(message) => {
            let error = json!({"type": "error", "message": message}).to_string();
            if send(&mut sink, Message::Text(error.into()), timeout).await {
                Some(close(NOTIFIED_ERROR, "Notified Error"))
            } else {
                None
            }
        }
        End::Gone => None,
    };
    if let Some(frame) = last {
        send(&mut sink, frame, timeout).await;
    }
}

/// Sends one frame, giving up after `timeout` (a client that does not read); false when it was
/// not sent.
async fn send(sink: &mut Sink, message: Message, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, sink.send(message)).await,
        Ok(Ok(()))
    )
}

/// The connection from its first message to its end.
async fn session(
    state: &AppState,
    caller: &Caller,
    sink: &mut Sink,
    stream: &mut SplitStream<WebSocket>,
    running: &mut Option<Running>,
) -> End {
    let timeout = state.config.slow_reader_timeout;
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    tokio::pin!(init_deadline);
    let mut shutdown = state.shutdown_signal();
    // Once there is a run: word of its program's start, its output, and its end.
    let mut started: Option<oneshot::Receiver<Option<CompileInfo>>> = None;
    let mut output: Option<mpsc::UnboundedReceiver<OutputChunk>> = None;
    let mut finished: Option<Finished> = None;
    let mut text = OutputText::default();
    loop {
        let mut out = Vec::new();
        tokio::select! {
            // In this order: the start before the output, the output before the end.
            biased;
            heard = async {
                match started.as_mut() {
                    Some(rx) => rx.await.ok(),
                    None => std::future::pending().await,
                }
            }, if started.is_some() => {
                started = None;
                if let (Some(run), Some(info)) = (running.as_mut(), heard) {
                    run.started = true;
                    out.extend(started_messages(run, info));
                }
            }
            chunk = async {
                match output.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            }, if output.is_some() => match chunk {
                Some(chunk) => out.extend(text.message(&chunk)),
                None => {
                    output = None;
                    out.extend(text.finish());
                }
            },
            message = stream.next() => {
                let text = match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return End::Gone,
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(_)) => continue,
                };
                match handle(state, caller, &text, running) {
                    Ok(Some(init)) => {
                        out.extend(init.messages);
                        started = Some(init.started);
                        output = Some(init.output);
                        let (state, caller, job, id) =
                            (state.clone(), caller.clone(), init.job, init.id);
                        finished = Some(Box::pin(async move {
                            execute::finished(&state, &caller, &job, &id).await
                        }));
                    }
                    Ok(None) => {}
                    Err(end) => return end,
                }
            }
            record = async {
                match finished.as_mut() {
                    Some(done) => done.await,
                    None => std::future::pending().await,
                }
            }, if finished.is_some() => {
                let Some(run) = running.as_mut() else { return End::Gone };
                let record = match record {
                    Ok(record) => record,
                    Err(error) => return End::Error(error.message),
                };
                run.cancel = None;
                // Whatever the run said before it ended goes out first.
                if let Some(Ok(info)) = started.as_mut().map(oneshot::Receiver::try_recv) {
                    run.started = true;
                    out.extend(started_messages(run, info));
                }
                if let Some(rx) = output.as_mut() {
                    while let Ok(chunk) = rx.try_recv() {
                        out.extend(text.message(&chunk));
                    }
                }
                out.extend(text.finish());
                out.extend(ended_messages(run, &record));
                for message in out {
                    if !send(sink, Message::Text(message.to_string().into()), timeout).await {
                        return End::Gone;
                    }
                }
                return End::Close(JOB_COMPLETED, "Job Completed");
            }
            () = &mut init_deadline, if running.is_none() => {
                return End::Close(INIT_TIMED_OUT, "Initialization Timeout");
            }
            () = async {
                let _ = shutdown.wait_for(|stopping| *stopping).await;
            } => {
                return End::Close(GOING_AWAY, "server shutting down");
            }
        }
        for message in out {
            if !send(sink, Message::Text(message.to_string().into()), timeout).await {
                return End::Gone;
            }
        }
    }
}

/// The end of a run, as the door waits for it.
type Finished = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<ExecutionRecord, PistonError>> + Send>,
>;

/// What an `init` started: the messages to send, the job and its run's id (for the wait on its
/// end), and the run's hooks the connection follows.
struct Init {
    messages: Vec<Value>,
    job: Job,
    id: String,
    started: oneshot::Receiver<Option<CompileInfo>>,
    output: mpsc::UnboundedReceiver<OutputChunk>,
}

/// One message of the client.
fn handle(
    state: &AppState,
    caller: &Caller,
    text: &[u8],
    running: &mut Option<Running>,
) -> Result<Option<Init>, End> {
    let message: Value = serde_json::from_slice(text)
        .map_err(|e| End::Error(format!("the message is not valid JSON: {e}")))?;
    match message.get("type").and_then(Value::as_str) {
        Some("init") => {
            if running.is_some() {
                return Err(End::Close(ALREADY_INITIALIZED, "Already Initialized"));
            }
            let job = job::job(state, &message, true).map_err(|e| End::Error(e.message))?;
            let (output_tx, output) = mpsc::unbounded_channel();
            let (cancel, cancelled) = oneshot::channel();
            let (stdin, stdin_rx) = mpsc::channel(STDIN_QUEUE);
            let hooks = OneShotHooks {
                output: Some(output_tx),
                cancel: Some(cancelled),
                stdin: Some(stdin_rx),
                ..OneShotHooks::default()
            };
            let Submitted { id, started } = execute::submit(state, caller, &job, hooks, ROUTE)
                .map_err(|e| End::Error(e.message))?;
            let mut messages = vec![json!({
                "type": "runtime",
                "language": job.runtime.language,
                "version": job.runtime.version,
            })];
            if job.runtime.compiled {
                messages.push(json!({"type": "stage", "stage": "compile"}));
            }
            let for_wait = job.clone();
            *running = Some(Running {
                job,
                stdin,
                cancel: Some(cancel),
                started: false,
            });
            Ok(Some(Init {
                messages,
                job: for_wait,
                id,
                started,
                output,
            }))
        }
        Some("data") => {
            let run = running
                .as_mut()
                .ok_or(End::Close(NOT_INITIALIZED, "Not yet initialized"))?;
            if message.get("stream").and_then(Value::as_str) != Some("stdin") {
                return Err(End::Close(ONLY_STDIN, "Can only write to stdin"));
            }
            let Some(data) = message.get("data").and_then(Value::as_str) else {
                return Err(End::Error("data must be a string".into()));
            };
            feed(
                run,
                StdinEvent::Data(data.as_bytes().to_vec(), oneshot::channel().0),
            );
            Ok(None)
        }
        Some("eof") => {
            let run = running
                .as_mut()
                .ok_or(End::Close(NOT_INITIALIZED, "Not yet initialized"))?;
            feed(run, StdinEvent::Close(oneshot::channel().0));
            Ok(None)
        }
        Some("signal") => {
            let run = running
                .as_mut()
                .ok_or(End::Close(NOT_INITIALIZED, "Not yet initialized"))?;
            let valid = message
                .get("signal")
                .and_then(Value::as_str)
                .is_some_and(|name| nix::sys::signal::Signal::from_str(name).is_ok());
            if !valid {
                return Err(End::Close(INVALID_SIGNAL, "Invalid signal"));
            }
            run.stop();
            Ok(None)
        }
        // Piston ignores what it does not know.
        _ => Ok(None),
    }
}

/// Queues `event` for the program's stdin; once the program is gone (or its stdin closed) there
/// is no one to read it, and it is dropped.
fn feed(run: &Running, event: StdinEvent) {
    match run.stdin.try_send(event) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(event)) => {
            // The program is not reading as fast as it is fed: wait for room off this loop, so
            // that its output keeps flowing meanwhile.
            let stdin = run.stdin.clone();
            tokio::spawn(async move {
                let _ = stdin.send(event).await;
            });
        }
    }
}

/// The program's output as `data` messages, decoded per stream by the engine's [`Utf8Carry`], so
/// that a character split across chunks goes out whole.
#[derive(Default)]
struct OutputText {
    stdout: Utf8Carry,
    stderr: Utf8Carry,
}

impl OutputText {
    /// The message of `chunk`, unless all it holds is the start of a character.
    fn message(&mut self, chunk: &OutputChunk) -> Option<Value> {
        let text = match chunk.stream {
            Stream::Stdout => self.stdout.push(&chunk.data),
            Stream::Stderr => self.stderr.push(&chunk.data),
        };
        (!text.is_empty()).then(|| data_message(chunk.stream, text))
    }

    /// The messages of what each stream still holds back, at the end of the output.
    fn finish(&mut self) -> Vec<Value> {
        [
            (Stream::Stdout, self.stdout.finish()),
            (Stream::Stderr, self.stderr.finish()),
        ]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(stream, text)| data_message(stream, text))
        .collect()
    }
}

fn data_message(stream: Stream, data: String) -> Value {
    let stream = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    json!({
        "type": "data",
        "stream": stream,
        "data": data,
    })
}

/// What is sent when the program starts: the compile's end, for a compiled language, and the
/// run stage.
fn started_messages(run: &Running, _info: Option<CompileInfo>) -> Vec<Value> {
    let mut messages = Vec::new();
    if run.job.runtime.compiled {
        messages.push(json!({"type": "exit", "stage": "compile", "code": 0, "signal": null}));
    }
    messages.push(json!({"type": "stage", "stage": "run"}));
    messages
}

/// What is sent when the run has ended: a failed compile's output and `exit`, or the run's
/// `exit`.
fn ended_messages(run: &Running, record: &ExecutionRecord) -> Vec<Value> {
    let mut messages = Vec::new();
    let stage_name = if run.started || !run.job.runtime.compiled {
        "run"
    } else {
        for (stream, text) in [("stdout", &record.stdout), ("stderr", &record.stderr)] {
            if !text.is_empty() {
                messages.push(json!({"type": "data", "stream": stream, "data": text}));
            }
        }
        "compile"
    };
    let stage = execute::stage(record, &Collected::default());
    messages.push(json!({
        "type": "exit",
        "stage": stage_name,
        "code": stage.code,
        "signal": stage.signal,
    }));
    messages
}
