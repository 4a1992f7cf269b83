//! `GET /ws/jsonrpc`: JSON-RPC 2.0 over WebSocket text frames.
//!
//! One connection is a reader loop and a writer task. The reader decodes each text frame with
//! [`parse_frame`] and starts every request as its own task, bounded by
//! [`ServerConfig::max_in_flight`](crate::ServerConfig::max_in_flight); a request over the
//! bound is answered at once with `-32002`. Requests for one session (`session.execute`,
//! `session.close`) start in the order they arrived on the connection. The writer sends
//! responses and notifications as text frames, in the order they are queued, and pings.
//!
//! A connection closes when the client closes it, after
//! [`ServerConfig::idle_timeout`](crate::ServerConfig::idle_timeout) without a message and with
//! nothing in flight, when the peer answers nothing for three ping intervals, when a message is
//! larger than the limit (close code 1009), and when the server shuts down (close code 1001,
//! after in-flight requests finish). Closing a connection never closes its sessions: they belong
//! to the caller, who may come back on another connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response as HttpResponse;
use axum::Extension;
use codebeaker_engine::Caller;
use codebeaker_protocol::jsonrpc::{
    parse_frame, ErrorObject, FrameKind, Incoming, Request, Response,
};
use codebeaker_protocol::methods::Method;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::state::AppState;
use crate::{audit, rpc};

/// Frames queued for the writer before producers wait (backpressure on slow readers).
const OUTBOUND_QUEUE: usize = 256;
/// A peer silent (no frame at all) for this many ping intervals is considered gone.
const DEAD_AFTER_PINGS: u32 = 3;
/// Session queues kept per connection before finished ones are pruned.
const SESSION_QUEUE_PRUNE: usize = 64;
/// How long queued frames get to go out after the server decided to close a connection.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// Why a connection's reader stopped.
enum End {
    /// The server closes it: a close frame is queued behind the pending frames.
    Closing(&'static str),
    /// The peer is gone (closed, failed, or silent): nothing more can be delivered.
    Gone(&'static str),
}

/// What the writer task sends.
enum Outbound {
    Text(String),
    Close(u16, String),
}

/// Where a request's notifications (and responses) go: the connection's writer queue.
#[derive(Clone)]
pub(crate) struct EventSink(mpsc::Sender<Outbound>);

impl EventSink {
    /// Queues a text frame. A connection that is gone drops it: the work goes on without it.
    pub async fn send_text(&self, text: String) {
        let _ = self.0.send(Outbound::Text(text)).await;
    }

    /// Queues a close frame behind the frames already queued (giving up on a writer that
    /// cannot take it in time).
    async fn close(&self, code: u16, reason: &str) {
        let close = Outbound::Close(code, reason.to_string());
        let _ = tokio::time::timeout(CLOSE_FLUSH, self.0.send(close)).await;
    }
}

/// The upgrade handler.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ws: WebSocketUpgrade,
) -> HttpResponse {
    let max = state.config.max_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| serve_connection(state, caller, socket))
}

async fn serve_connection(state: AppState, caller: Caller, socket: WebSocket) {
    let id = state.next_connection_id();
    let span = tracing::info_span!("ws", conn = id, caller = %caller.0);
    async move {
        let _open = state.connection_opened();
        tracing::debug!("connection opened");
        let (sink, stream) = socket.split();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let writer =
            tokio::spawn(write_loop(sink, rx, state.config.ping_interval).in_current_span());
        let mut connection = Connection {
            permits: Arc::new(Semaphore::new(state.config.max_in_flight)),
            unsent: Arc::new(watch::channel(0).0),
            state,
            caller,
            out: EventSink(tx),
            session_queues: HashMap::new(),
        };
        let end = connection.read_loop(stream).await;
        drop(connection);
        match end {
            End::Closing(reason) => {
                tracing::debug!(reason, "closing the connection");
                // The close frame is queued after every response already queued; give the
                // writer a moment to deliver them.
                let mut writer = writer;
                if tokio::time::timeout(CLOSE_FLUSH, &mut writer)
                    .await
                    .is_err()
                {
                    writer.abort();
                }
            }
            End::Gone(reason) => {
                tracing::debug!(reason, "connection gone");
                writer.abort();
            }
        }
    }
    .instrument(span)
    .await;
}

struct Connection {
    state: AppState,
    caller: Caller,
    out: EventSink,
    permits: Arc<Semaphore>,
    /// Tasks started on this connection that have not queued their response yet (see
    /// [`Unsent`]); shutdown waits for none to be left.
    unsent: Arc<watch::Sender<usize>>,
    /// Per session: a receiver that completes when the last request started for it is done.
    session_queues: HashMap<String, oneshot::Receiver<()>>,
}

/// Counts a task as owing the connection a frame, from its start until its response is queued
/// (which is after its in-flight slot is given back), so that a shutdown closes the connection
/// only after every response.
struct Unsent(Arc<watch::Sender<usize>>);

impl Unsent {
    fn new(count: &Arc<watch::Sender<usize>>) -> Unsent {
        count.send_modify(|n| *n += 1);
        Unsent(Arc::clone(count))
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A started request: answered already, or running.
enum Started {
    Done(Option<Response>),
    Running(JoinHandle<Option<Response>>),
}

impl Connection {
    fn in_flight(&self) -> usize {
        self.state.config.max_in_flight - self.permits.available_permits()
    }

    /// Reads frames until the connection ends; returns why it ended.
    async fn read_loop(&mut self, mut stream: futures_util::stream::SplitStream<WebSocket>) -> End {
        let config = &self.state.config;
        let idle_timeout = config.idle_timeout;
        let dead_after = (!config.ping_interval.is_zero())
            .then(|| config.ping_interval.saturating_mul(DEAD_AFTER_PINGS));
        let max_message_bytes = config.max_message_bytes;
        let mut shutdown = self.state.shutdown_signal();
        let mut last_message = Instant::now();
        let mut last_heard = Instant::now();
        loop {
            let mut deadline = last_message + idle_timeout;
            if let Some(dead_after) = dead_after {
                deadline = deadline.min(last_heard + dead_after);
            }
            tokio::select! {
                () = async { let _ = shutdown.wait_for(|stopping| *stopping).await; } => {
                    self.drain().await;
                    self.out.close(close_code::AWAY, "server shutting down").await;
                    return End::Closing("server shutting down");
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if dead_after.is_some_and(|d| now.duration_since(last_heard) >= d) {
                        return End::Gone("the peer stopped answering pings");
                    }
                    if self.in_flight() > 0 {
                        // Waiting for our answer is not idleness.
                        last_message = now;
                        continue;
                    }
                    self.out.close(close_code::NORMAL, "idle timeout").await;
                    return End::Closing("idle timeout");
                }
                frame = stream.next() => {
                    last_heard = Instant::now();
                    match frame {
                        None => return End::Gone("closed by the client"),
                        Some(Err(error)) => {
                            if is_capacity_error(error) {
                                let reason = format!("message too big: the limit is {max_message_bytes} bytes");
                                self.out.close(close_code::SIZE, &reason).await;
                                return End::Closing("message too big");
                            }
                            return End::Gone("connection error");
                        }
                        Some(Ok(Message::Text(text))) => {
                            last_message = last_heard;
                            self.on_text(text.as_str()).await;
                        }
                        Some(Ok(Message::Binary(_))) => {
                            last_message = last_heard;
                            self.state.metrics.rpc("invalid", Some(-32600), Duration::ZERO);
                            let error = ErrorObject::invalid_request(
                                "binary frames are not supported: send JSON-RPC messages as text frames",
                            );
                            self.send(FrameKind::Single, Response::error(None, error)).await;
                        }
                        Some(Ok(Message::Ping(_))) => last_message = last_heard,
                        Some(Ok(Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => return End::Gone("closed by the client"),
                    }
                }
            }
        }
    }

    /// Waits (at most the shutdown grace period) for the requests in flight to finish and their
    /// responses to be queued.
    async fn drain(&self) {
        let grace = self.state.config.shutdown_grace;
        let mut unsent = self.unsent.subscribe();
        if tokio::time::timeout(grace, unsent.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.in_flight(),
                "requests still running after the shutdown grace period"
            );
        }
    }

    async fn send(&self, kind: FrameKind, response: Response) {
        for frame in kind.encode(vec![response]) {
            self.out.send_text(frame).await;
        }
    }

    async fn on_text(&mut self, text: &str) {
        let frame = parse_frame(text);
        if frame.kind == FrameKind::Batch {
            self.on_batch(frame.messages);
            return;
        }
        for message in frame.messages {
            match message {
                Incoming::Invalid(response) => {
                    self.count_invalid(&response);
                    self.send(frame.kind, response).await;
                }
                Incoming::Request(request) => {
                    if let Started::Done(Some(response)) = self.start(request, Some(frame.kind)) {
                        self.send(frame.kind, response).await;
                    }
                }
            }
        }
    }

    /// Starts every request of a batch; one task gathers the responses into one array frame.
    fn on_batch(&mut self, messages: Vec<Incoming>) {
        let mut slots = Vec::with_capacity(messages.len());
        for message in messages {
            slots.push(match message {
                Incoming::Invalid(response) => {
                    self.count_invalid(&response);
                    Started::Done(Some(response))
                }
                Incoming::Request(request) => self.start(request, None),
            });
        }
        let out = self.out.clone();
        let unsent = Unsent::new(&self.unsent);
        tokio::spawn(
            async move {
                let _unsent = unsent;
                let mut responses = Vec::new();
                for slot in slots {
                    match slot {
                        Started::Done(response) => responses.extend(response),
                        Started::Running(task) => {
                            if let Ok(response) = task.await {
                                responses.extend(response);
                            }
                        }
                    }
                }
                for frame in FrameKind::Batch.encode(responses) {
                    out.send_text(frame).await;
                }
            }
            .in_current_span(),
        );
    }

    fn count_invalid(&self, response: &Response) {
        let code = response.clone().into_result().err().map(|e| e.code);
        self.state.metrics.rpc("invalid", code, Duration::ZERO);
    }

    /// Starts one request. With `reply` the task sends its own response (as a frame of that
    /// kind); without, the response is returned through the task's handle (for batches).
    fn start(&mut self, request: Request, reply: Option<FrameKind>) -> Started {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Started::Done(self.over_limit(request));
        };
        let turn = self.session_turn(&request);
        let state = self.state.clone();
        let caller = self.caller.clone();
        let out = self.out.clone();
        let unsent = Unsent::new(&self.unsent);
        let task = async move {
            let _unsent = unsent;
            let permit: OwnedSemaphorePermit = permit;
            let done = match turn {
                Some((previous, done)) => {
                    if let Some(previous) = previous {
                        // Err only means the previous request's task is gone: our turn either way.
                        let _ = previous.await;
                    }
                    Some(done)
                }
                None => None,
            };
            let response = rpc::handle_request(&state, &caller, request, Some(&out)).await;
            // The request is over before its response leaves: a client that sends its next
            // request on receiving this response must find the slot free and its turn come.
            drop(done);
            drop(permit);
            match (reply, response) {
                (Some(kind), Some(response)) => {
                    for frame in kind.encode(vec![response]) {
                        out.send_text(frame).await;
                    }
                    None
                }
                (_, response) => response,
            }
        };
        Started::Running(tokio::spawn(task.in_current_span()))
    }

    fn over_limit(&self, request: Request) -> Option<Response> {
        let max = self.state.config.max_in_flight;
        let error = ErrorObject::limit_reached(format!(
            "{max} requests are already in flight on this connection; wait for a response before sending more"
        ));
        let method = Method::from_name(&request.method);
        let label = method.map_or("unknown", Method::name);
        self.state
            .metrics
            .rpc(label, Some(error.code), Duration::ZERO);
        let session_id = matches!(method, Some(Method::SessionExecute | Method::SessionClose))
            .then(|| rpc::session_id_of(request.params.as_ref()))
            .flatten();
        let subject = audit::Subject {
            session_id,
            command: None,
        };
        audit::refused(&self.caller, label, &error, subject);
        match request.id {
            Some(id) => Some(Response::error(Some(id), error)),
            None => {
                tracing::debug!(method = %request.method, "notification dropped: too many requests in flight");
                None
            }
        }
    }

    /// For requests that act on a session: the receiver to wait on before starting (the previous
    /// request for that session on this connection) and the sender that marks this one done.
    fn session_turn(
        &mut self,
        request: &Request,
    ) -> Option<(Option<oneshot::Receiver<()>>, oneshot::Sender<()>)> {
        if !matches!(
            Method::from_name(&request.method),
            Some(Method::SessionExecute | Method::SessionClose)
        ) {
            return None;
        }
        let session_id = rpc::session_id_of(request.params.as_ref())?;
        if self.session_queues.len() >= SESSION_QUEUE_PRUNE {
            self.session_queues.retain(|_, previous| {
                matches!(
                    previous.try_recv(),
                    Err(oneshot::error::TryRecvError::Empty)
                )
            });
        }
        let (done, next) = oneshot::channel();
        let previous = self.session_queues.insert(session_id.to_string(), next);
        Some((previous, done))
    }
}

fn is_capacity_error(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    matches!(
        error.into_inner().downcast::<WsError>().map(|e| *e),
        Ok(WsError::Capacity(_))
    )
}

/// Sends queued frames in order, and pings; ends after a close frame, or when the socket fails,
/// or when every producer is gone.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    ping_interval: Duration,
) {
    let pinging = !ping_interval.is_zero();
    let period = if pinging {
        ping_interval
    } else {
        Duration::from_secs(3600)
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            outbound = rx.recv() => match outbound {
                Some(Outbound::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Close(code, reason)) => {
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                None => {
                    let _ = sink.close().await;
                    break;
                }
            },
            _ = ping.tick(), if pinging => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
}
