//! `GET /ws/jsonrpc`: JSON-RPC 2.0 over WebSocket text frames.
//!
//! One connection is a reader loop and a writer task. The reader decodes each text frame with
//! [`parse_frame`] and starts every request as its own task, bounded by
//! [`ServerConfig::max_in_flight`](crate::ServerConfig::max_in_flight); a request over the
//! bound is answered at once with `-32002`. Requests for one session (`session.execute`,
//! `session.close`) start in the order they arrived on the connection. The writer sends
//! responses and notifications as text frames, in the order they are queued, and pings.
//!
//! Replies are bounded per connection in count and in bytes. A request holds its in-flight slot
//! until its reply is taken by the writer to be written to the socket (not merely queued), and
//! every frame waiting to be written holds its size against
//! [`ServerConfig::max_unsent_bytes`](crate::ServerConfig::max_unsent_bytes): a client that does
//! not read slows its own requests down, and when nothing can be written to it for
//! [`ServerConfig::slow_reader_timeout`](crate::ServerConfig::slow_reader_timeout) the connection
//! is closed with close code 1008. A frame is read up to
//! [`ServerConfig::max_messages_per_frame`](crate::ServerConfig::max_messages_per_frame)
//! messages, and the replies the server makes up itself (parse errors, invalid requests,
//! `-32002` refusals) take a rate-limit token and an in-flight slot like any request.
//!
//! A connection closes when the client closes it, after
//! [`ServerConfig::idle_timeout`](crate::ServerConfig::idle_timeout) without a message and with
//! nothing in flight, when the peer answers nothing for three ping intervals, when a message is
//! larger than the limit (close code 1009), and when the server shuts down (close code 1001,
//! after in-flight requests finish). Closing a connection never closes its sessions: they belong
//! to the caller, who may come back on another connection.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Extension;
use codebeaker_engine::Caller;
use codebeaker_protocol::jsonrpc::{
    parse_frame_bounded, ErrorObject, FrameKind, Incoming, Request, Response,
};
use codebeaker_protocol::methods::Method;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::HttpError;
use crate::rate_limit::RateLimiter;
use crate::state::{AppState, CallerConnection, Crowded};
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

/// Unsent bytes are counted in units of this many bytes (semaphore permits are `u32`s).
const BYTE_UNIT: usize = 1024;

/// What the writer task sends.
enum Outbound {
    /// A frame, with what it holds until it is written: its bytes of the connection's budget and,
    /// for a reply, the request's in-flight slot.
    Text(String, Held),
    Close(u16, String),
}

/// What a queued frame holds until the writer takes it.
#[derive(Default)]
struct Held {
    bytes: Option<OwnedSemaphorePermit>,
    slots: Vec<OwnedSemaphorePermit>,
}

/// Where a request's notifications (and responses) go: the connection's writer queue.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: mpsc::Sender<Outbound>,
    /// The connection's budget of unsent bytes, in [`BYTE_UNIT`]s; closed when the writer ends.
    budget: Arc<Semaphore>,
    budget_units: u32,
}

impl EventSink {
    /// Queues a text frame. A connection that is gone drops it: the work goes on without it.
    pub async fn send_text(&self, text: String) {
        self.send_held(text, Vec::new()).await;
    }

    /// Queues a frame that gives back `slots` when the writer takes it. Waits while the frames
    /// already waiting hold the connection's whole byte budget (a frame larger than the budget
    /// waits for all of it).
    async fn send_held(&self, text: String, slots: Vec<OwnedSemaphorePermit>) {
        let units = u32::try_from(text.len().div_ceil(BYTE_UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_units);
        let Ok(bytes) = self.budget.clone().acquire_many_owned(units).await else {
            return; // the writer is gone
        };
        let held = Held {
            bytes: Some(bytes),
            slots,
        };
        let _ = self.tx.send(Outbound::Text(text, held)).await;
    }

    /// Queues a close frame behind the frames already queued (giving up on a writer that
    /// cannot take it in time).
    async fn close(&self, code: u16, reason: &str) {
        let close = Outbound::Close(code, reason.to_string());
        let _ = tokio::time::timeout(CLOSE_FLUSH, self.tx.send(close)).await;
    }
}

/// The upgrade handler.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ws: WebSocketUpgrade,
) -> HttpResponse {
    let reserved = match state.reserve_websocket(&caller) {
        Ok(reserved) => reserved,
        Err(crowded) => {
            let (status, error) = match crowded {
                Crowded::Caller(max) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorObject::limit_reached(format!(
                        "caller `{}` already holds {max} WebSocket connections, the most one caller may hold; close one first",
                        caller.0
                    )),
                ),
                Crowded::Server(max) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorObject::limit_reached(format!(
                        "the server holds {max} WebSocket connections, the most it takes; retry later"
                    )),
                ),
            };
            audit::refused(&caller, "/ws/jsonrpc", &error, audit::Subject::default());
            return HttpError::with_status(status, error).into_response();
        }
    };
    let max = state.config.max_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| serve_connection(state, caller, socket, reserved))
}

async fn serve_connection(
    state: AppState,
    caller: Caller,
    socket: WebSocket,
    reserved: CallerConnection,
) {
    let _reserved = reserved;
    let id = state.next_connection_id();
    let span = tracing::info_span!("ws", conn = id, caller = %caller.0);
    async move {
        let _open = state.connection_opened();
        tracing::debug!("connection opened");
        let (sink, stream) = socket.split();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let budget_units =
            u32::try_from(state.config.max_unsent_bytes.div_ceil(BYTE_UNIT)).unwrap_or(u32::MAX);
        let budget = Arc::new(Semaphore::new(budget_units as usize));
        let writer = tokio::spawn(
            write_loop(
                sink,
                rx,
                Arc::clone(&budget),
                state.config.ping_interval,
                state.config.slow_reader_timeout,
            )
            .in_current_span(),
        );
        let mut connection = Connection {
            permits: Arc::new(Semaphore::new(state.config.max_in_flight)),
            unsent: Arc::new(watch::channel(0).0),
            state,
            caller,
            out: EventSink {
                tx,
                budget,
                budget_units,
            },
            session_queues: HashMap::new(),
            strict: Arc::new(AtomicBool::new(false)),
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
    /// Params with unknown fields are refused rather than warned about (`initialize`'s `strict`).
    strict: Arc<AtomicBool>,
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

/// A started request: answered already, or running (a batch's request gives back its response
/// and its in-flight slot, which the batch's frame holds until written).
enum Started {
    Done(Option<Response>),
    Running(JoinHandle<(Option<Response>, Option<OwnedSemaphorePermit>)>),
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
                () = self.out.tx.closed() => {
                    return End::Gone("the client does not read its replies");
                }
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
                            let error = ErrorObject::invalid_request(
                                "binary frames are not supported: send JSON-RPC messages as text frames",
                            );
                            let response = Response::error(None, error);
                            self.count_invalid(&response);
                            self.send_own(FrameKind::Single, response).await;
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

    /// Sends a reply the server made up itself (not the answer of a started request). It costs
    /// the caller a rate-limit token (past its rate, the reply says so instead) and holds an
    /// in-flight slot until written when one is free; when none is, the reader itself waits for
    /// the queue, which stops it reading more.
    async fn send_own(&self, kind: FrameKind, response: Response) {
        let response = match self.state.limiter.check(&self.caller) {
            Ok(()) => response,
            Err(retry_after_ms) => {
                self.state.metrics.rate_limited();
                let error = RateLimiter::error(retry_after_ms);
                audit::refused(&self.caller, "invalid", &error, audit::Subject::default());
                Response::error(response.id.clone(), error)
            }
        };
        let slots: Vec<OwnedSemaphorePermit> = self
            .permits
            .clone()
            .try_acquire_owned()
            .ok()
            .into_iter()
            .collect();
        let mut slots = Some(slots);
        for frame in kind.encode(vec![response]) {
            self.out
                .send_held(frame, slots.take().unwrap_or_default())
                .await;
        }
    }

    async fn on_text(&mut self, text: &str) {
        let frame = parse_frame_bounded(text, self.state.config.max_messages_per_frame);
        if frame.kind == FrameKind::Batch {
            self.on_batch(frame.messages);
            return;
        }
        for message in frame.messages {
            match message {
                Incoming::Invalid(response) => {
                    self.count_invalid(&response);
                    self.send_own(frame.kind, response).await;
                }
                Incoming::Request(request) => {
                    if let Started::Done(Some(response)) = self.start(request, Some(frame.kind)) {
                        self.send_own(frame.kind, response).await;
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
                let mut held = Vec::new();
                for slot in slots {
                    match slot {
                        Started::Done(response) => responses.extend(response),
                        Started::Running(task) => {
                            if let Ok((response, permit)) = task.await {
                                responses.extend(response);
                                held.extend(permit);
                            }
                        }
                    }
                }
                let mut held = Some(held);
                for frame in FrameKind::Batch.encode(responses) {
                    out.send_held(frame, held.take().unwrap_or_default()).await;
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
        let strict = Arc::clone(&self.strict);
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
            let response = rpc::handle_request(&state, &caller, request, Some(&out), &strict).await;
            // The request is over before its response leaves: a client that sends its next
            // request on receiving this response must find its turn come. Its slot goes with
            // the response, and is given back as the writer takes it to the socket.
            drop(done);
            match (reply, response) {
                (Some(kind), Some(response)) => {
                    let mut permit = Some(permit);
                    for frame in kind.encode(vec![response]) {
                        out.send_held(frame, permit.take().into_iter().collect())
                            .await;
                    }
                    (None, None)
                }
                (Some(_), None) => (None, None),
                (None, response) => (response, Some(permit)),
            }
        };
        Started::Running(tokio::spawn(task.in_current_span()))
    }

    fn over_limit(&self, request: Request) -> Option<Response> {
        let max = self.state.config.max_in_flight;
        let error = ErrorObject::limit_reached(format!(
            "{max} requests are already in flight on this connection (answers not yet read count too); read the responses before sending more"
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
    budget: Arc<Semaphore>,
    ping_interval: Duration,
    slow_reader_timeout: Duration,
) {
    write_frames(&mut sink, &mut rx, ping_interval, slow_reader_timeout).await;
    // Producers waiting for room give up, and every frame still queued gives back what it held.
    budget.close();
    rx.close();
    while rx.try_recv().is_ok() {}
}

/// Writes one frame, or gives up on a client that has not taken it within `timeout`.
async fn write_or_give_up(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    timeout: Duration,
) -> Result<(), &'static str> {
    match tokio::time::timeout(timeout, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the socket failed"),
        Err(_) => Err("slow reader"),
    }
}

async fn write_frames(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut mpsc::Receiver<Outbound>,
    ping_interval: Duration,
    slow_reader_timeout: Duration,
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
        let written = tokio::select! {
            outbound = rx.recv() => match outbound {
                Some(Outbound::Text(text, held)) => {
                    // Slot first: a client may send its next request as soon as it reads this.
                    drop(held.slots);
                    let written = write_or_give_up(sink, Message::Text(text.into()), slow_reader_timeout).await;
                    drop(held.bytes);
                    written
                }
                Some(Outbound::Close(code, reason)) => {
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = tokio::time::timeout(CLOSE_FLUSH, sink.send(Message::Close(Some(frame)))).await;
                    return;
                }
                None => {
                    let _ = tokio::time::timeout(CLOSE_FLUSH, sink.close()).await;
                    return;
                }
            },
            _ = ping.tick(), if pinging => {
                write_or_give_up(sink, Message::Ping(Default::default()), slow_reader_timeout).await
            }
        };
        match written {
            Ok(()) => {}
            Err("slow reader") => {
                let secs = slow_reader_timeout.as_secs_f64();
                tracing::info!(
                    timeout_secs = secs,
                    "closing a connection whose client does not read its replies"
                );
                let frame = CloseFrame {
                    code: close_code::POLICY,
                    reason: format!("the client did not read its replies for {secs} s").into(),
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    sink.send(Message::Close(Some(frame))),
                )
                .await;
                return;
            }
            Err(_) => return,
        }
    }
}
