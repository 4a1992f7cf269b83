//! The WebSocket JSON-RPC connection: one socket, many concurrent requests, reconnecting by itself.
//!
//! # How a request travels
//!
//! [`Client::call`] takes a fresh numeric id, registers a pending entry (id → reply channel, and
//! the caller's event channel when it streams) on the *current* link, and queues the text frame.
//! A single task per link reads frames, splits them into messages with
//! [`parse_server_frame`](codebeaker_protocol::jsonrpc::parse_server_frame) (one message, a batch
//! array, or several messages separated by `\n`, with or without a trailing `\n`) and routes
//! them:
//!
//! - a response goes to the pending entry of its id; numeric ids and the same number sent back as
//!   a string both match. A response with a `null` id or an id nobody waits for is logged and
//!   dropped: it can never leave a caller hanging, because every caller also has a timeout;
//! - an `execution.*` notification goes to the event channel of the request named by its
//!   `requestId`, before that request's response is delivered;
//! - anything that is not JSON is logged and dropped.
//!
//! WebSocket fragmentation is reassembled by tungstenite before a message reaches us, so text is
//! only ever decoded whole: a multibyte character split across frames arrives intact.
//!
//! # Failure
//!
//! Each request waits at most its timeout ([`ClientError::Timeout`]). When the link drops (read
//! error, close frame, or no frame at all, not even a pong, for three ping intervals), every
//! request in flight on it fails at once with [`ClientError::ConnectionLost`], and a background
//! task reconnects with exponential backoff (capped, with jitter). Requests made while no link is
//! up wait for the next one, within their timeout and [`ClientConfig::reconnect_wait`], and fail
//! with [`ClientError::Unavailable`] after that. A request that never left the client is retried
//! on the next link; one that did is never resent (it may not be idempotent).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codebeaker_protocol::jsonrpc::{Id, Notification, Request, Response, ServerMessage, Version};
use codebeaker_protocol::methods::{
    ExecutionEvent, ExecutionRunParams, ExecutionRunResult, ExecutionStatusParams,
    ExecutionStatusResult, InitializeParams, InitializeResult, LanguageListResult, Method,
    NoParams, SessionCloseParams, SessionCloseResult, SessionCreateParams, SessionCreateResult,
    SessionExecuteParams, SessionExecuteResult, SessionListResult,
};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::backend::{Backend, BoxFuture, CallOptions};
use crate::ClientError;

/// How the connection behaves. [`ClientConfig::new`] gives the defaults for a URL.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's endpoint, e.g. `ws://localhost:5000/ws/jsonrpc`.
    pub url: String,
    /// Default time a request waits for its response (30 s). [`CallOptions::timeout`] overrides
    /// it per call.
    pub request_timeout: Duration,
    /// Time one connection attempt may take, TCP and WebSocket handshake together (10 s).
    pub connect_timeout: Duration,
    /// Longest a request waits for a link to come (back) up before failing with
    /// [`ClientError::Unavailable`] (10 s). Its own timeout bounds it too.
    pub reconnect_wait: Duration,
    /// Interval of the keep-alive pings (15 s); `None` sends none. A link that receives nothing
    /// at all for three intervals is considered dead and replaced.
    pub ping_interval: Option<Duration>,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// Largest message accepted from the server, in bytes (64 MiB).
    pub max_message_bytes: usize,
    /// Sent as `Authorization: Bearer <token>` when the server requires authentication.
    pub auth_token: Option<String>,
    /// Requests in flight at once at most (32, the server's default bound per connection);
    /// further requests wait their turn on the client, within their timeout, instead of being
    /// refused by the server with "limit reached".
    pub max_in_flight: usize,
}

impl ClientConfig {
    /// The defaults, for a server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            reconnect_wait: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(15)),
            backoff: Backoff::default(),
            max_message_bytes: 64 * 1024 * 1024,
            auth_token: None,
            max_in_flight: 32,
        }
    }

    fn validate(&self) -> Result<(), ClientError> {
        let bad = |what: &str| Err(ClientError::Config(what.to_string()));
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be positive");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive");
        }
        if self.ping_interval.is_some_and(|p| p.is_zero()) {
            return bad("ping_interval must be positive (or None for no pings)");
        }
        if self.max_message_bytes < 1024 {
            return bad("max_message_bytes must be at least 1024");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        self.backoff.validate()
    }
}

impl Default for ClientConfig {
    /// The original .NET CodeBeaker's default endpoint, `ws://localhost:5000/ws/jsonrpc`.
    fn default() -> Self {
        ClientConfig::new(crate::DEFAULT_WEBSOCKET_URL)
    }
}

/// Exponential backoff between reconnection attempts: `initial`, then times `multiplier` each
/// failed attempt, never more than `max`, each delay shortened by up to 20% at random so that
/// many clients do not reconnect in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay (100 ms).
    pub initial: Duration,
    /// Cap (5 s).
    pub max: Duration,
    /// Growth per failed attempt (2).
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    fn validate(&self) -> Result<(), ClientError> {
        if self.initial.is_zero() || self.max < self.initial {
            return Err(ClientError::Config(
                "backoff: initial must be positive and not above max".into(),
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ClientError::Config(
                "backoff: multiplier must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The delay before attempt `attempt` (1 = the first retry), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    fn jittered(&self, attempt: u32) -> Duration {
        let delay = self.delay(attempt);
        delay.mul_f64(1.0 - 0.2 * random_fraction())
    }
}

/// A number in [0, 1) that differs between calls and processes (for jitter only).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The state of the connection, as [`Client::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// A link is up.
    Connected {
        /// How many links this client has had, this one included.
        generation: u64,
    },
    /// No link is up; attempts are being made.
    Connecting {
        /// Failed attempts since the last link was up.
        attempt: u32,
        /// Why the last link dropped or the last attempt failed.
        last_error: Option<String>,
    },
    /// The client was shut down.
    Closed,
}

/// A pending request on one link.
struct Pending {
    method: String,
    reply: oneshot::Sender<Result<Value, ClientError>>,
    events: Option<mpsc::UnboundedSender<ExecutionEvent>>,
}

/// One WebSocket connection. Its pending map becomes `None` when it dies, so that a request
/// either registers before the death (and is failed by it) or sees that the link is gone.
struct Link {
    generation: u64,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Mutex<Option<HashMap<u64, Pending>>>,
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashMap<u64, Pending>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request; `false` when the link is already dead.
    fn register(&self, id: u64, pending: Pending) -> bool {
        match self.lock().as_mut() {
            Some(map) => {
                map.insert(id, pending);
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64) -> Option<Pending> {
        self.lock().as_mut().and_then(|map| map.remove(&id))
    }

    /// Marks the link dead and fails every request in flight on it.
    fn fail_all(&self, url: &str) {
        let pending = self.lock().take().unwrap_or_default();
        if !pending.is_empty() {
            tracing::warn!(
                url,
                in_flight = pending.len(),
                "connection lost with requests in flight"
            );
        }
        for (_, p) in pending {
            let error = ClientError::ConnectionLost {
                method: p.method.clone(),
                url: url.to_string(),
            };
            let _ = p.reply.send(Err(error));
        }
    }

    fn deliver_response(&self, response: Response) {
        let id = match &response.id {
            None | Some(Id::Null) => {
                match &response.body {
                    codebeaker_protocol::jsonrpc::ResponseBody::Error(e) => {
                        tracing::warn!(code = e.code, message = %e.message, "dropping an error response with a null id")
                    }
                    codebeaker_protocol::jsonrpc::ResponseBody::Result(_) => {
                        tracing::warn!("dropping a response with a null id")
                    }
                }
                return;
            }
            Some(id) => id.as_u64(),
        };
        let pending = id.and_then(|id| self.remove(id));
        let Some(pending) = pending else {
            tracing::warn!(id = ?response.id, "dropping a response to an unknown request id");
            return;
        };
        let result = response
            .into_result()
            .map_err(|error| ClientError::rpc(&pending.method, error));
        let _ = pending.reply.send(result);
    }

    fn deliver_notification(&self, notification: Notification) {
        let event = match ExecutionEvent::from_notification(&notification) {
            Ok(Some(event)) => event,
            Ok(None) => {
                tracing::debug!(method = %notification.method, "ignoring an unknown notification");
                return;
            }
            Err(e) => {
                tracing::warn!(method = %notification.method, error = %e, "dropping a malformed notification");
                return;
            }
        };
        let request_id = match &event {
            ExecutionEvent::Started(e) => &e.request_id,
            ExecutionEvent::Output(e) => &e.request_id,
            ExecutionEvent::Completed(e) => &e.request_id,
        };
        let id = request_id.as_ref().and_then(Id::as_u64);
        let guard = self.lock();
        let events = id
            .and_then(|id| guard.as_ref().and_then(|map| map.get(&id)))
            .and_then(|p| p.events.as_ref());
        match events {
            Some(events) => {
                let _ = events.send(event);
            }
            None => {
                tracing::debug!(request_id = ?request_id, "dropping an event for no waiting request")
            }
        }
    }

    fn deliver_text(&self, text: &str) {
        match codebeaker_protocol::jsonrpc::parse_server_frame(text) {
            Ok(messages) => messages.into_iter().for_each(|m| self.deliver(m)),
            Err(_) => {
                // One bad message must not lose its neighbours: fall back to line by line.
                for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
                    match codebeaker_protocol::jsonrpc::parse_server_frame(line) {
                        Ok(messages) => messages.into_iter().for_each(|m| self.deliver(m)),
                        Err(e) => {
                            let head: String = line.chars().take(200).collect();
                            tracing::warn!(error = %e, message = %head, "dropping a message that is not JSON-RPC")
                        }
                    }
                }
            }
        }
    }

    fn deliver(&self, message: ServerMessage) {
        match message {
            ServerMessage::Response(r) => self.deliver_response(r),
            ServerMessage::Notification(n) => self.deliver_notification(n),
        }
    }
}

/// Removes a pending entry when the caller stops waiting (timeout or cancellation).
struct PendingGuard<'a> {
    link: &'a Link,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.link.remove(self.id);
    }
}

#[derive(Clone)]
enum LinkState {
    Connecting {
        attempt: u32,
        last_error: Option<String>,
    },
    Up(Arc<Link>),
    Closed,
}

struct Shared {
    config: ClientConfig,
    in_flight: tokio::sync::Semaphore,
    next_id: AtomicU64,
    state: watch::Sender<LinkState>,
    shutdown: watch::Sender<bool>,
}

/// Shuts the background task down when the last [`Client`] clone is dropped.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// A connection to a CodeBeaker server: WebSocket JSON-RPC, concurrent requests, automatic
/// reconnection. Cheap to clone; clones share the connection, and the last one dropped closes
/// it.
///
/// ```no_run
/// # async fn demo() -> Result<(), codebeaker_client::ClientError> {
/// use codebeaker_client::{Backend, Client, ClientConfig};
///
/// let client = Client::connect(ClientConfig::new("ws://127.0.0.1:5000/ws/jsonrpc")).await?;
/// let info = client.initialize().await?;
/// println!("{} {}", info.server_info.name, info.server_info.version);
/// for language in client.language_list().await?.languages {
///     println!("{} available={}", language.name, language.available);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shared.config.url)
            .field("status", &self.status())
            .finish()
    }
}

impl Client {
    /// Connects, and fails if the first attempt fails; after that the client reconnects by
    /// itself whenever the link drops. Must be called within a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let client = Client::new(config)?;
        let mut state = client.shared.state.subscribe();
        let outcome = state
            .wait_for(|s| !matches!(s, LinkState::Connecting { attempt: 0, .. }))
            .await
            .map(|s| s.clone());
        match outcome {
            Ok(LinkState::Up(_)) => Ok(client),
            Ok(LinkState::Connecting { last_error, .. }) => Err(ClientError::Connect {
                url: client.shared.config.url.clone(),
                reason: last_error.unwrap_or_else(|| "unknown error".into()),
            }),
            Ok(LinkState::Closed) | Err(_) => Err(ClientError::Closed),
        }
    }

    /// A client that connects in the background and keeps reconnecting; requests wait for the
    /// link (see [`ClientConfig::reconnect_wait`]). Fails only on a bad configuration or URL.
    /// Must be called within a tokio runtime.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        check_url(&config.url)?;
        let (state, _) = watch::channel(LinkState::Connecting {
            attempt: 0,
            last_error: None,
        });
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            in_flight: tokio::sync::Semaphore::new(config.max_in_flight),
            config,
            next_id: AtomicU64::new(1),
            state,
            shutdown,
        });
        tokio::spawn(run_connection(Arc::clone(&shared)));
        Ok(Client {
            _owner: Arc::new(Owner {
                shared: Arc::clone(&shared),
            }),
            shared,
        })
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// Whether a link is up right now.
    pub fn status(&self) -> ConnectionStatus {
        match &*self.shared.state.borrow() {
            LinkState::Up(link) => ConnectionStatus::Connected {
                generation: link.generation,
            },
            LinkState::Connecting {
                attempt,
                last_error,
            } => ConnectionStatus::Connecting {
                attempt: *attempt,
                last_error: last_error.clone(),
            },
            LinkState::Closed => ConnectionStatus::Closed,
        }
    }

    /// Closes the connection now (also for every clone). Requests in flight fail with
    /// [`ClientError::ConnectionLost`], later ones with [`ClientError::Closed`].
    pub fn close(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Any method, with params and result as serde types. `timeout` defaults to
    /// [`ClientConfig::request_timeout`].
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
        timeout: Option<Duration>,
    ) -> Result<R, ClientError> {
        let params = serde_json::to_value(params).map_err(|e| {
            ClientError::Config(format!("the params of {method} cannot be serialized: {e}"))
        })?;
        let value = self.call_value(method, Some(params), timeout, None).await?;
        serde_json::from_value(value).map_err(|e| ClientError::invalid_response(method, e))
    }

    /// Sends a request and waits for its result as JSON.
    pub async fn call_value(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Option<Duration>,
        events: Option<mpsc::UnboundedSender<ExecutionEvent>>,
    ) -> Result<Value, ClientError> {
        if *self.shared.shutdown.borrow() {
            return Err(ClientError::Closed);
        }
        let timeout = timeout.unwrap_or(self.shared.config.request_timeout);
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            jsonrpc: Version,
            id: Some(Id::from(id)),
            method: method.to_string(),
            params,
        };
        let text = serde_json::to_string(&request).map_err(|e| {
            ClientError::Config(format!("the request {method} cannot be serialized: {e}"))
        })?;
        let _permit = match tokio::time::timeout_at(deadline, self.shared.in_flight.acquire()).await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(ClientError::Closed),
            Err(_) => {
                return Err(ClientError::Timeout {
                    method: method.to_string(),
                    timeout,
                })
            }
        };
        loop {
            let link = self.wait_link(started, deadline, method, timeout).await?;
            let (reply_tx, reply_rx) = oneshot::channel();
            let pending = Pending {
                method: method.to_string(),
                reply: reply_tx,
                events: events.clone(),
            };
            if !link.register(id, pending) {
                // The link died before the request left: safe to try the next one.
                continue;
            }
            let guard = PendingGuard { link: &link, id };
            if link.outgoing.send(Message::text(text.clone())).is_err() {
                // Never written: the link's writer is gone. Try the next link.
                drop(guard);
                tokio::task::yield_now().await;
                continue;
            }
            let outcome = tokio::time::timeout_at(deadline, reply_rx).await;
            drop(guard);
            return match outcome {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(ClientError::ConnectionLost {
                    method: method.to_string(),
                    url: self.shared.config.url.clone(),
                }),
                Err(_) => Err(ClientError::Timeout {
                    method: method.to_string(),
                    timeout,
                }),
            };
        }
    }

    /// The current link, waiting for one within the request's deadline and `reconnect_wait`.
    async fn wait_link(
        &self,
        started: Instant,
        deadline: tokio::time::Instant,
        method: &str,
        timeout: Duration,
    ) -> Result<Arc<Link>, ClientError> {
        let mut state = self.shared.state.subscribe();
        let wait_until = deadline.min(tokio::time::Instant::from_std(
            started + self.shared.config.reconnect_wait,
        ));
        let waited = tokio::time::timeout_at(
            wait_until,
            state.wait_for(|s| matches!(s, LinkState::Up(_) | LinkState::Closed)),
        )
        .await;
        match waited {
            Ok(Ok(state)) => match &*state {
                LinkState::Up(link) => Ok(Arc::clone(link)),
                _ => Err(ClientError::Closed),
            },
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                if wait_until >= deadline {
                    return Err(ClientError::Timeout {
                        method: method.to_string(),
                        timeout,
                    });
                }
                let last_error = match &*self.shared.state.borrow() {
                    LinkState::Connecting { last_error, .. } => last_error.clone(),
                    _ => None,
                };
                Err(ClientError::Unavailable {
                    url: self.shared.config.url.clone(),
                    waited: started.elapsed(),
                    last_error: last_error.unwrap_or_else(|| "still connecting".into()),
                })
            }
        }
    }

    async fn method<P: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        params: &P,
    ) -> Result<R, ClientError> {
        self.call(method.name(), params, None).await
    }
}

fn check_url(url: &str) -> Result<(), ClientError> {
    let invalid = |reason: &str| {
        Err(ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        })
    };
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return invalid("it must start with ws:// (wss:// needs a TLS-enabled build)");
    }
    if url.starts_with("wss://") {
        return invalid("TLS (wss://) is not built into this client; put a TLS-terminating proxy in front or use ws://");
    }
    if let Err(e) = url.into_client_request() {
        return invalid(&e.to_string());
    }
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_once(config: &ClientConfig) -> Result<Socket, String> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(token) = &config.auth_token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the auth token is not a valid header value".to_string())?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(config.connect_timeout, connect).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no handshake within {:?}", config.connect_timeout)),
    }
}

/// The background task: connect, serve the link until it drops, back off, reconnect; until the
/// client is dropped or closed.
async fn run_connection(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut attempt: u32 = 0;
    let mut generation: u64 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let connected = tokio::select! {
            r = connect_once(&shared.config) => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        match connected {
            Ok(socket) => {
                generation += 1;
                let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
                let link = Arc::new(Link {
                    generation,
                    outgoing,
                    pending: Mutex::new(Some(HashMap::new())),
                });
                tracing::debug!(url = %shared.config.url, generation, "connected");
                shared.state.send_replace(LinkState::Up(Arc::clone(&link)));
                let reason =
                    serve_link(&shared.config, socket, &link, outgoing_rx, &mut shutdown).await;
                // Requests must not pick this link any more before it fails them.
                shared.state.send_replace(LinkState::Connecting {
                    attempt: 1,
                    last_error: Some(reason.clone()),
                });
                link.fail_all(&shared.config.url);
                if *shutdown.borrow() {
                    break;
                }
                // Requests in flight were reported by `fail_all`; a drop with nothing in flight
                // (e.g. the server closing an idle connection) is routine.
                tracing::info!(url = %shared.config.url, reason = %reason, "connection lost; reconnecting");
                attempt = 1;
            }
            Err(error) => {
                attempt = attempt.saturating_add(1);
                tracing::debug!(url = %shared.config.url, attempt, error = %error, "connection attempt failed");
                shared.state.send_replace(LinkState::Connecting {
                    attempt,
                    last_error: Some(error),
                });
            }
        }
        let delay = shared.config.backoff.jittered(attempt);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    shared.state.send_replace(LinkState::Closed);
}

/// Reads and writes one link until it drops; returns why it dropped.
async fn serve_link(
    config: &ClientConfig,
    socket: Socket,
    link: &Link,
    mut outgoing: mpsc::UnboundedReceiver<Message>,
    shutdown: &mut watch::Receiver<bool>,
) -> String {
    let (mut sink, mut stream) = socket.split();
    let silence_limit = config.ping_interval.map(|p| p * 3);
    let reader = async {
        loop {
            let next = match silence_limit {
                Some(limit) => match tokio::time::timeout(limit, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => return format!("nothing received for {limit:?} (not even a pong)"),
                },
                None => stream.next().await,
            };
            match next {
                Some(Ok(Message::Text(text))) => link.deliver_text(text.as_str()),
                Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                    Ok(text) => link.deliver_text(text),
                    Err(_) => tracing::warn!(
                        len = bytes.len(),
                        "dropping a binary message that is not UTF-8"
                    ),
                },
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) => format!(
                            "the server closed the connection ({} {})",
                            u16::from(f.code),
                            f.reason
                        ),
                        None => "the server closed the connection".to_string(),
                    }
                }
                Some(Ok(_)) => {} // ping (answered by tungstenite), pong, raw frame
                Some(Err(e)) => return format!("read error: {e}"),
                None => return "the connection ended".to_string(),
            }
        }
    };
    let writer = async {
        let mut ping = config.ping_interval.map(|p| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        loop {
            let message = tokio::select! {
                m = outgoing.recv() => match m {
                    Some(m) => m,
                    None => return "the client stopped sending".to_string(),
                },
                _ = async {
                    match ping.as_mut() {
                        Some(tick) => { tick.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => Message::Ping(Vec::new().into()),
            };
            if let Err(e) = sink.send(message).await {
                return format!("write error: {e}");
            }
        }
    };
    let reason = tokio::select! {
        r = reader => r,
        r = writer => r,
        _ = shutdown.wait_for(|s| *s) => "the client was closed".to_string(),
    };
    // Best effort: tell the server we are going. The sink may already be gone.
    let mut socket = match sink.reunite(stream) {
        Ok(socket) => socket,
        Err(_) => return reason,
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), socket.close(None)).await;
    reason
}

impl Backend for Client {
    fn endpoint(&self) -> String {
        self.shared.config.url.clone()
    }

    fn initialize(&self) -> BoxFuture<'_, Result<InitializeResult, ClientError>> {
        Box::pin(async move {
            let params = InitializeParams {
                client_info: Some(codebeaker_protocol::methods::ClientInfo {
                    name: "codebeaker-client".into(),
                    version: Some(env!("CARGO_PKG_VERSION").into()),
                }),
                protocol_version: Some(codebeaker_protocol::PROTOCOL_VERSION.into()),
                // What this client sends is typed, so a field the server does not know is a
                // mistake (a raw command's misspelling): have it refused, not ignored.
                strict: Some(true),
            };
            self.method(Method::Initialize, &params).await
        })
    }

    fn language_list(&self) -> BoxFuture<'_, Result<LanguageListResult, ClientError>> {
        Box::pin(async move { self.method(Method::LanguageList, &NoParams {}).await })
    }

    fn session_create(
        &self,
        params: SessionCreateParams,
    ) -> BoxFuture<'_, Result<SessionCreateResult, ClientError>> {
        Box::pin(async move { self.method(Method::SessionCreate, &params).await })
    }

    fn session_execute(
        &self,
        mut params: SessionExecuteParams,
        options: CallOptions,
    ) -> BoxFuture<'_, Result<SessionExecuteResult, ClientError>> {
        Box::pin(async move {
            let method = Method::SessionExecute.name();
            if options.events.is_some() {
                params.stream = Some(true);
            }
            let params = serde_json::to_value(&params).map_err(|e| {
                ClientError::Config(format!("the params of {method} cannot be serialized: {e}"))
            })?;
            let value = self
                .call_value(method, Some(params), options.timeout, options.events)
                .await?;
            serde_json::from_value(value).map_err(|e| ClientError::invalid_response(method, e))
        })
    }

    fn session_close<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<SessionCloseResult, ClientError>> {
        Box::pin(async move {
            let params = SessionCloseParams {
                session_id: session_id.to_string(),
            };
            self.method(Method::SessionClose, &params).await
        })
    }

    fn session_list(&self) -> BoxFuture<'_, Result<SessionListResult, ClientError>> {
        Box::pin(async move { self.method(Method::SessionList, &NoParams {}).await })
    }

    fn context_create(
        &self,
        params: codebeaker_protocol::contexts::ContextCreateParams,
    ) -> BoxFuture<'_, Result<codebeaker_protocol::contexts::ContextInfo, ClientError>> {
        Box::pin(async move { self.method(Method::ContextCreate, &params).await })
    }

    fn context_run(
        &self,
        mut params: codebeaker_protocol::contexts::ContextRunParams,
        options: CallOptions,
    ) -> BoxFuture<'_, Result<codebeaker_protocol::contexts::ContextRunResult, ClientError>> {
        Box::pin(async move {
            let method = Method::ContextRun.name();
            if options.events.is_some() {
                params.stream = Some(true);
            }
            let params = serde_json::to_value(&params).map_err(|e| {
                ClientError::Config(format!("the params of {method} cannot be serialized: {e}"))
            })?;
            let value = self
                .call_value(method, Some(params), options.timeout, options.events)
                .await?;
            serde_json::from_value(value).map_err(|e| ClientError::invalid_response(method, e))
        })
    }

    fn context_list<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<codebeaker_protocol::contexts::ContextListResult, ClientError>> {
        Box::pin(async move {
            let params = codebeaker_protocol::contexts::ContextListParams {
                session_id: session_id.to_string(),
            };
            self.method(Method::ContextList, &params).await
        })
    }

    fn context_restart(
        &self,
        params: codebeaker_protocol::contexts::ContextParams,
    ) -> BoxFuture<'_, Result<codebeaker_protocol::contexts::ContextInfo, ClientError>> {
        Box::pin(async move { self.method(Method::ContextRestart, &params).await })
    }

    fn context_close(
        &self,
        params: codebeaker_protocol::contexts::ContextParams,
    ) -> BoxFuture<'_, Result<codebeaker_protocol::contexts::ContextCloseResult, ClientError>> {
        Box::pin(async move { self.method(Method::ContextClose, &params).await })
    }

    fn execution_run(
        &self,
        params: ExecutionRunParams,
    ) -> BoxFuture<'_, Result<ExecutionRunResult, ClientError>> {
        Box::pin(async move { self.method(Method::ExecutionRun, &params).await })
    }

    fn execution_status<'a>(
        &'a self,
        execution_id: &'a str,
    ) -> BoxFuture<'a, Result<ExecutionStatusResult, ClientError>> {
        Box::pin(async move {
            let params = ExecutionStatusParams {
                execution_id: execution_id.to_string(),
                wait: None,
            };
            self.method(Method::ExecutionStatus, &params).await
        })
    }

    fn execution_run_wait(
        &self,
        params: ExecutionRunParams,
        wait: Duration,
    ) -> BoxFuture<'_, Result<ExecutionStatusResult, ClientError>> {
        Box::pin(async move {
            let method = Method::ExecutionRun.name();
            let wait = crate::backend::wait_millis(wait);
            let params = ExecutionRunParams {
                wait: Some(wait),
                ..params
            };
            let timeout = self.shared.config.request_timeout + Duration::from_millis(wait);
            let value: Value = self.call(method, &params, Some(timeout)).await?;
            // A server that does not know `wait` answers `{executionId, status}` only.
            if value.get("stdout").is_some() {
                serde_json::from_value(value).map_err(|e| ClientError::invalid_response(method, e))
            } else {
                serde_json::from_value(value)
                    .map(crate::backend::not_finished)
                    .map_err(|e| ClientError::invalid_response(method, e))
            }
        })
    }

    fn execution_status_wait<'a>(
        &'a self,
        execution_id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<ExecutionStatusResult, ClientError>> {
        Box::pin(async move {
            let wait = crate::backend::wait_millis(wait);
            let params = ExecutionStatusParams {
                execution_id: execution_id.to_string(),
                wait: Some(wait),
            };
            // The answer may take the whole wait: allow for it on top of the usual timeout.
            let timeout = self.shared.config.request_timeout + Duration::from_millis(wait);
            self.call(Method::ExecutionStatus.name(), &params, Some(timeout))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff::default();
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(30), Duration::from_secs(5));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5));
        for attempt in 1..10 {
            let j = b.jittered(attempt);
            assert!(j <= b.delay(attempt) && j >= b.delay(attempt).mul_f64(0.8));
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("ws://localhost:5000/ws/jsonrpc").is_ok());
        assert!(matches!(
            check_url("http://x"),
            Err(ClientError::InvalidUrl { .. })
        ));
        assert!(matches!(
            check_url("ws://"),
            Err(ClientError::InvalidUrl { .. })
        ));
    }

    fn link() -> (Link, mpsc::UnboundedReceiver<Message>) {
        let (outgoing, rx) = mpsc::unbounded_channel();
        let link = Link {
            generation: 1,
            outgoing,
            pending: Mutex::new(Some(HashMap::new())),
        };
        (link, rx)
    }

    fn pending(link: &Link, id: u64) -> oneshot::Receiver<Result<Value, ClientError>> {
        let (reply, rx) = oneshot::channel();
        assert!(link.register(
            id,
            Pending {
                method: "m".into(),
                reply,
                events: None
            }
        ));
        rx
    }

    #[test]
    fn responses_match_numeric_and_string_ids_and_frames_may_hold_several() {
        let (link, _rx) = link();
        let mut a = pending(&link, 1);
        let mut b = pending(&link, 2);
        let mut c = pending(&link, 3);
        link.deliver_text(
            "{\"jsonrpc\":\"2.0\",\"id\":\"2\",\"result\":{\"x\":2}}\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1}\n",
        );
        assert_eq!(a.try_recv().unwrap().unwrap(), serde_json::json!(1));
        assert_eq!(b.try_recv().unwrap().unwrap(), serde_json::json!({"x": 2}));
        // null id and unknown ids are dropped; the waiter stays pending (its timeout bounds it).
        link.deliver_text(
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#,
        );
        link.deliver_text(r#"{"jsonrpc":"2.0","id":99,"result":true}"#);
        link.deliver_text("not json at all");
        assert!(c.try_recv().is_err());
        link.deliver_text(r#"[{"jsonrpc":"2.0","id":3,"error":{"code":-32001,"message":"session not found: x"}}]"#);
        let err = c.try_recv().unwrap().unwrap_err();
        assert!(err.is_session_not_found(), "{err}");
    }

    #[test]
    fn a_dead_link_fails_everything_in_flight_and_refuses_new_requests() {
        let (link, _rx) = link();
        let mut a = pending(&link, 1);
        link.fail_all("ws://x");
        assert!(matches!(
            a.try_recv().unwrap(),
            Err(ClientError::ConnectionLost { .. })
        ));
        let (reply, _r) = oneshot::channel();
        assert!(!link.register(
            2,
            Pending {
                method: "m".into(),
                reply,
                events: None
            }
        ));
    }

    #[test]
    fn events_go_to_the_request_named_by_request_id() {
        let (link, _rx) = link();
        let (reply, _r) = oneshot::channel();
        let (events, mut events_rx) = mpsc::unbounded_channel();
        link.register(
            7,
            Pending {
                method: "session.execute".into(),
                reply,
                events: Some(events),
            },
        );
        link.deliver_text(
            r#"{"jsonrpc":"2.0","method":"execution.output","params":{"requestId":7,"sessionId":"s","stream":"stdout","data":"é✓","seq":0}}"#,
        );
        link.deliver_text(
            r#"{"jsonrpc":"2.0","method":"execution.output","params":{"requestId":8,"sessionId":"s","stream":"stdout","data":"no","seq":0}}"#,
        );
        match events_rx.try_recv().unwrap() {
            ExecutionEvent::Output(o) => assert_eq!(o.data, "é✓"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(events_rx.try_recv().is_err());
    }
}
