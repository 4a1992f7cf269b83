//! The router and the listening server.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use codebeaker_engine::Engine;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tower::Service;
use tower_http::trace::TraceLayer;

use crate::error::ErrorCodeTag;
use crate::state::AppState;
use crate::{auth, health, rate_limit, rest, ws, ServerConfig, ServerError};

/// How long after the shutdown grace period [`Server::serve`] still waits for connections to
/// close (time for the close frames of WebSocket connections whose requests ran to the end of it).
pub const CLOSE_MARGIN: Duration = Duration::from_secs(2);

/// The whole HTTP surface over `state`:
///
/// | path | auth | |
/// |---|---|---|
/// | `GET /ws/jsonrpc` | yes (header or `?token=`) | JSON-RPC over WebSocket |
/// | `POST /api/execution`, `GET /api/execution/{id}` | yes, rate limited | one-shot runs |
/// | `GET /api/languages`, `GET /api/languages/{name}` | yes, rate limited | languages |
/// | `GET /metrics` | yes | Prometheus text |
/// | `GET /health`, `/health/live`, `/health/ready` | no | health |
/// | `/sandboxes`, `/v2/sandboxes`, `/files`, `/process.Process/*`, `/filesystem.Filesystem/*` | `X-API-Key`, `X-Access-Token` | the E2B-compatible API ([`crate::e2b`]) |
/// | `/judge0/*` | `X-Auth-Token` or bearer, rate limited | the Judge0 CE API ([`crate::judge0`]) |
/// | `/api/v2/*`, `/api/v2/piston/*` | `Authorization` (a bare token or `Bearer`), rate limited | the Piston v2 API |
/// | `POST`/`GET`/`DELETE /mcp` | yes (header), rate limited per tool call | MCP's streamable HTTP transport ([`crate::mcp`]) |
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/execution", post(rest::submit))
        .route("/api/execution/{id}", get(rest::status))
        .route("/api/languages", get(rest::languages))
        .route("/api/languages/{name}", get(rest::language))
        .route_layer(from_fn_with_state(state.clone(), rate_limit::limit_rest));
    let protected = Router::new()
        .route("/ws/jsonrpc", get(ws::upgrade))
        .route("/metrics", get(health::metrics))
        .merge(api)
        .route_layer(from_fn_with_state(state.clone(), auth::require_caller));
    let own = Router::new()
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .merge(protected);
    let own = crate::judge0::mount(own, &state);
    let own = crate::piston::mount(own);
    let own = crate::mcp::mount(own, &state);
    crate::e2b::mount(own, &state)
        .route_layer(from_fn_with_state(state.clone(), count_http))
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_message_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Middleware: counts requests by route and status.
async fn count_http(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .http(route, response.status().as_u16(), started.elapsed());
    if let Some(ErrorCodeTag(code)) = response.extensions().get::<ErrorCodeTag>() {
        state.metrics.rest_error(*code);
    }
    response
}

/// Writes the audit log's summaries of repeated refusals every `every`.
async fn flush_refusals(every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::audit::flush_refusals();
    }
}

/// A server bound to its address, not yet serving.
///
/// ```no_run
/// # async fn demo(engine: std::sync::Arc<codebeaker_engine::Engine>) -> Result<(), codebeaker_server::ServerError> {
/// use codebeaker_server::{Server, ServerConfig};
/// let config = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
/// let server = Server::bind(config, engine).await?;
/// println!("ws://{}/ws/jsonrpc", server.local_addr());
/// let running = server.spawn();
/// // ... later
/// running.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
}

impl Server {
    /// Validates the settings and binds the listen address (port 0 picks a free port).
    pub async fn bind(config: ServerConfig, engine: Arc<Engine>) -> Result<Server, ServerError> {
        let listen = config.listen;
        let state = AppState::new(config, engine)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        Ok(Server {
            listener,
            addr,
            state,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (engine, settings, metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets each connection finish its
    /// requests in flight (WebSocket connections are closed with close code 1001 once their
    /// requests are answered), and returns at most [`CLOSE_MARGIN`] after the grace period,
    /// dropping whatever connection is still open then. It does not touch the engine: close its sessions with
    /// [`Engine::shutdown`] afterwards.
    ///
    /// Connections are bounded: see [`ServerConfig::max_connections`] and
    /// [`ServerConfig::header_read_timeout`].
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = self.state.clone();
        let grace = state.config.shutdown_grace;
        let app = router(self.state.clone());
        tracing::info!(addr = %self.addr, "serving");
        let _session_ends = state.account_session_ends();
        // As often as the engine reaps (within 100 ms … 10 s).
        let every = state.engine.config().sessions.reap_interval;
        let every = every.clamp(Duration::from_millis(100), Duration::from_secs(10));
        let flusher = tokio::spawn(flush_refusals(every));
        let open = Arc::new(Open::default());
        let (stop, stopping) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, most likely: wait for some to be given back.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            while tasks.try_join_next().is_some() {}
            let max = state.config.max_connections;
            if open.len() + state.open_websockets() >= max && !open.evict_one_idle() {
                tasks.spawn(refuse_connection(stream, max));
                continue;
            }
            let slot = open.register();
            tasks.spawn(serve_http(
                stream,
                peer,
                app.clone(),
                state.config.header_read_timeout,
                slot,
                stopping.clone(),
            ));
        }
        tracing::info!("shutting down: no new connections");
        state.begin_shutdown();
        drop(self.listener);
        stop.send_replace(true);
        // WebSocket connections get their close frame out just after the grace at the latest.
        let deadline = tokio::time::Instant::now() + grace + CLOSE_MARGIN;
        let drained = tokio::time::timeout_at(deadline, async {
            while tasks.join_next().await.is_some() {}
            state.connections_closed().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                http = tasks.len(),
                websocket = state.open_websockets(),
                "connections still open after the shutdown grace period; dropping them"
            );
        }
        tasks.abort_all();
        flusher.abort();
        Ok(())
    }

    /// Serves on a task of the current runtime; the handle shuts it down.
    pub fn spawn(self) -> ServerHandle {
        let addr = self.addr;
        let state = self.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(async move {
            let _ = stopped.await;
        }));
        ServerHandle {
            addr,
            state,
            stop: Some(stop),
            task,
        }
    }
}

/// A server serving on a task (see [`Server::spawn`]).
pub struct ServerHandle {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (engine, settings, metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops the server as [`Server::serve`] describes and waits for it.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e))),
        }
    }
}

/// The HTTP connections open (before any upgrade), oldest first, each with whether it is in a
/// request now.
#[derive(Default)]
struct Open {
    next: AtomicU64,
    connections: Mutex<BTreeMap<u64, Registered>>,
}

struct Registered {
    in_request: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

/// One registered connection; unregisters itself when dropped.
struct Slot {
    id: u64,
    open: Arc<Open>,
    in_request: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Registered>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn register(self: &Arc<Self>) -> Slot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let in_request = Arc::new(AtomicUsize::new(0));
        let evict = Arc::new(Notify::new());
        self.lock().insert(
            id,
            Registered {
                in_request: Arc::clone(&in_request),
                evict: Arc::clone(&evict),
            },
        );
        Slot {
            id,
            open: Arc::clone(self),
            in_request,
            evict,
        }
    }

    /// Drops the oldest connection that is not in a request (still sending its request head, or
    /// idle between requests), so that connections that never send a request cannot keep the
    /// others out. False when every connection is in a request.
    fn evict_one_idle(&self) -> bool {
        let mut connections = self.lock();
        let idle = connections
            .iter()
            .find(|(_, c)| c.in_request.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match idle.and_then(|id| connections.remove(&id)) {
            Some(evicted) => {
                evicted.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Counts a request as running on its connection.
struct InRequest(Arc<AtomicUsize>);

impl InRequest {
    fn new(count: &Arc<AtomicUsize>) -> InRequest {
        count.fetch_add(1, Ordering::AcqRel);
        InRequest(Arc::clone(count))
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one HTTP/1.1 connection (WebSocket upgrades included) until it ends, it is evicted,
/// or the server stops (then it finishes its request and closes).
async fn serve_http(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    slot: Slot,
    mut stopping: watch::Receiver<bool>,
) {
    // Streamed answers are many small writes: without this, each waits for the ACK of the one
    // before (Nagle's algorithm against the client's delayed ACK, about 40 ms).
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, %peer, "setting TCP_NODELAY failed");
    }
    let in_request = Arc::clone(&slot.in_request);
    let service = tower::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let running = InRequest::new(&in_request);
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move {
            let response = app.call(request.map(axum::body::Body::new)).await;
            drop(running);
            response
        }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let connection = http
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let evict = Arc::clone(&slot.evict);
    let evicted = evict.notified();
    let mut evicted = std::pin::pin!(evicted);
    let mut closing = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, %peer, "HTTP connection ended with an error");
                }
                break;
            }
            () = &mut evicted => {
                tracing::debug!(%peer, "dropping a connection that sent no request, to make room");
                break;
            }
            changed = stopping.wait_for(|stop| *stop), if !closing => {
                closing = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
    drop(slot);
}

/// Answers a connection over [`ServerConfig::max_connections`] with HTTP 503 and closes it.
async fn refuse_connection(mut stream: TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    let error = codebeaker_protocol::jsonrpc::ErrorObject::limit_reached(format!(
        "the server holds {max} connections, the most it takes, and all of them are in a request; retry later"
    ));
    let body = serde_json::json!({ "error": error }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
