//! The router and the listening server.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use codebeaker_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::trace::TraceLayer;

use crate::error::ErrorCodeTag;
use crate::state::AppState;
use crate::{auth, health, rate_limit, rest, ws, ServerConfig, ServerError};

/// The whole HTTP surface over `state`:
///
/// | path | auth | |
/// |---|---|---|
/// | `GET /ws/jsonrpc` | yes (header or `?token=`) | JSON-RPC over WebSocket |
/// | `POST /api/execution`, `GET /api/execution/{id}` | yes, rate limited | one-shot runs |
/// | `GET /api/languages`, `GET /api/languages/{name}` | yes, rate limited | languages |
/// | `GET /metrics` | yes | Prometheus text |
/// | `GET /health`, `/health/live`, `/health/ready` | no | health |
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
    Router::new()
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .merge(protected)
        .route_layer(from_fn_with_state(state.clone(), count_http))
        .fallback(rest::not_found)
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

/// Accounts for sessions the engine ends on its own (metrics, audit log), as often as the engine
/// looks for them (within 100 ms … 10 s).
async fn sweep_sessions(state: AppState) {
    let every = state
        .engine
        .config()
        .sessions
        .reap_interval
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.sweep_sessions();
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

    /// Serves until `shutdown` resolves; then stops accepting, lets each WebSocket connection
    /// finish its requests in flight (up to the grace period), closes them (close code 1001),
    /// and returns. It does not touch the engine: close its sessions with
    /// [`Engine::shutdown`] afterwards.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = self.state.clone();
        let grace = state.config.shutdown_grace;
        let app = router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tracing::info!(addr = %self.addr, "serving");
        let signal_state = state.clone();
        let serving = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: no new connections");
                signal_state.begin_shutdown();
            })
            .into_future();
        let sweeper = tokio::spawn(sweep_sessions(state.clone()));
        let served = serving.await.map_err(ServerError::Serve);
        sweeper.abort();
        served?;
        // Upgraded WebSocket connections outlive the HTTP server; wait for them to close.
        let margin = Duration::from_secs(2);
        if tokio::time::timeout(grace + margin, state.connections_closed())
            .await
            .is_err()
        {
            tracing::warn!("WebSocket connections still open after the shutdown grace period");
        }
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
