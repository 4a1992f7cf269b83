//! The E2B front door: E2B's Python and JavaScript SDKs run unchanged against this server.
//!
//! Point them at it with `E2B_API_URL` and `E2B_SANDBOX_URL` (both this server's address). A
//! sandbox is a session of the caller: one box, its workspace, and a lifetime (`timeout`) that
//! this module enforces. Three surfaces share the server's listener (no path collides with
//! CodeBeaker's own):
//!
//! - the **control plane** (`control`): REST JSON under `/sandboxes` and `/v2/sandboxes`, with
//!   `X-API-Key`; errors are `{"code": <int>, "message": ...}`;
//! - **envd** (`process`, `filesystem`, `files`): the Connect protocol (`connect`) and
//!   `/files`, routed by the `E2b-Sandbox-Id` header, with the `X-Access-Token` the create
//!   answer handed out; `GET /health` with that header is the sandbox's health;
//! - the **code interpreter** (`interpreter`): `POST /execute` and `/contexts`, the sandbox's
//!   port 49999, over the engine's contexts;
//! - **templates** ([`templates`]): box profiles named by `templateID`.
//!
//! Who a request speaks for is `access`'s; the shapes of errors are `errors`'. This file holds
//! the door's state (its sandboxes and their running commands), the one way it runs a command,
//! and the routes.
//!
//! Like the JSON-RPC door it is a translation: every command is one engine call, and auth, rate
//! limits, quotas, metrics and the audit log are the server's own. An unknown or killed sandbox
//! on any envd path answers 502 with "was not found", which is how the SDKs learn it is gone.

mod access;
mod connect;
mod control;
mod errors;
mod files;
mod filesystem;
mod interpreter;
mod process;
pub mod templates;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::Router;
use codebeaker_engine::{Caller, CommandOutcome, EngineError, SessionEndSubscription};
use codebeaker_protocol::commands::Command;
use codebeaker_sandbox::OutputChunk;
use tokio::sync::mpsc::UnboundedSender;

use crate::audit;
use crate::error::engine_error;
use crate::state::AppState;
pub(crate) use errors::{gone, plain_error, refusal, ApiError, EnvdError};

pub use templates::{E2bConfig, TemplateConfig};

/// The envd version this server reports. The SDKs gate features on it: 0.1.4 recursive watch,
/// 0.3.0 the stdin flag of `Start`, 0.4.0 no default user, 0.5.2 closing stdin, 0.5.7
/// octet-stream and gzip uploads. The requests of each are understood; what the engine cannot
/// do (watching a directory, recursively or not; `StreamInput`) is answered `unimplemented` with
/// the reason rather than hidden behind a lower version.
pub const ENVD_VERSION: &str = "0.5.7";

/// The `clientID` of every sandbox (E2B names the cluster node; there is one here).
const CLIENT_ID: &str = "codebeaker";

/// The header that names the sandbox of an envd request.
const SANDBOX_HEADER: &str = "e2b-sandbox-id";

/// How often sandboxes past their `endAt` are looked for.
const REAP_EVERY: Duration = Duration::from_millis(500);

/// One sandbox: the session it is, and what E2B says about it besides.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    /// The sandbox id, which is the session id.
    pub id: String,
    pub caller: Caller,
    pub template: String,
    pub metadata: BTreeMap<String, String>,
    /// Environment variables every command of the sandbox gets (a command's own win).
    pub env_vars: BTreeMap<String, String>,
    /// The envd access token handed out at create.
    pub access_token: String,
    pub started_at: SystemTime,
    /// When the sandbox is killed, unless its timeout is set again.
    pub end_at: SystemTime,
    /// The latest `end_at` can be (the engine's maximum session lifetime).
    pub latest_end: SystemTime,
    pub cpu_count: u64,
    pub memory_mb: u64,
}

/// A command started through `process.Process/Start`, while it runs.
#[derive(Debug, Clone)]
pub(crate) struct RunningProcess {
    pub sandbox_id: String,
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub tag: Option<String>,
    /// Every envelope of its stream after `start`, for `Connect`ed followers.
    pub events: tokio::sync::broadcast::Sender<axum::body::Bytes>,
    /// Told when the sandbox is killed: the stream ends then, as a killed E2B sandbox's does.
    pub killed: Arc<tokio::sync::Notify>,
    /// Stops the command (`SendSignal`); taken by the first signal.
    pub stop: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
    /// Feeds the command's stdin (`SendInput`, `CloseStdin`); `None` when it was started
    /// without `stdin: true`, and its stdin is closed from the start.
    pub stdin: Option<tokio::sync::mpsc::Sender<codebeaker_sandbox::StdinEvent>>,
}

type Table = Arc<Mutex<HashMap<String, Sandbox>>>;

/// The E2B door's own state: its sandboxes (the E2B side of sessions), the commands running in
/// them, and its templates. The sessions themselves are the engine's.
pub(crate) struct E2b {
    pub state: AppState,
    pub templates: E2bConfig,
    sandboxes: Table,
    processes: Mutex<HashMap<u32, RunningProcess>>,
    next_pid: AtomicU32,
    /// The code interpreter's default contexts.
    interpreter: interpreter::Defaults,
    /// Forgets the sandboxes whose sessions the engine ended (idle, box died, shutdown).
    _ends: SessionEndSubscription,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl E2b {
    fn new(state: &AppState) -> Arc<E2b> {
        let sandboxes: Table = Arc::default();
        let weak: Weak<Mutex<HashMap<String, Sandbox>>> = Arc::downgrade(&sandboxes);
        let ends = state.engine.on_session_end(move |ended| {
            if let Some(table) = weak.upgrade() {
                lock(&table).remove(&ended.id);
            }
        });
        Arc::new(E2b {
            state: state.clone(),
            templates: state.config.e2b.clone(),
            sandboxes,
            processes: Mutex::new(HashMap::new()),
            next_pid: AtomicU32::new(1000),
            interpreter: interpreter::Defaults::default(),
            _ends: ends,
        })
    }

    pub(crate) fn insert(&self, sandbox: Sandbox) {
        lock(&self.sandboxes).insert(sandbox.id.clone(), sandbox);
    }

    /// The caller's sandbox `id` (another caller's is not there for it).
    pub(crate) fn sandbox(&self, caller: &Caller, id: &str) -> Option<Sandbox> {
        lock(&self.sandboxes)
            .get(id)
            .filter(|s| s.caller == *caller)
            .cloned()
    }

    /// The caller's sandboxes, oldest first.
    pub(crate) fn sandboxes(&self, caller: &Caller) -> Vec<Sandbox> {
        let mut list: Vec<Sandbox> = lock(&self.sandboxes)
            .values()
            .filter(|s| s.caller == *caller)
            .cloned()
            .collect();
        list.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        list
    }

    /// Changes the caller's sandbox `id` in place; false when it is not there.
    pub(crate) fn update(&self, caller: &Caller, id: &str, f: impl FnOnce(&mut Sandbox)) -> bool {
        match lock(&self.sandboxes)
            .get_mut(id)
            .filter(|s| s.caller == *caller)
        {
            Some(sandbox) => {
                f(sandbox);
                true
            }
            None => false,
        }
    }

    /// Makes the sandbox gone for every call, and stops its running commands and ends their
    /// streams.
    pub(crate) fn forget(&self, id: &str) {
        lock(&self.sandboxes).remove(id);
        self.interpreter.forget(id);
        lock(&self.processes).retain(|_, p| {
            if p.sandbox_id == id {
                p.killed.notify_one();
                // Stopped too, so that the box goes at once rather than when they end.
                if let Some(stop) = lock(&p.stop).take() {
                    let _ = stop.send(());
                }
            }
            p.sandbox_id != id
        });
    }

    /// Registers a running command; its pid is this server's number for it, not a process id
    /// of the box.
    pub(crate) fn process_started(&self, process: RunningProcess) -> u32 {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        lock(&self.processes).insert(pid, process);
        pid
    }

    pub(crate) fn process_ended(&self, pid: u32) {
        lock(&self.processes).remove(&pid);
    }

    pub(crate) fn processes(&self, sandbox_id: &str) -> Vec<(u32, RunningProcess)> {
        let mut list: Vec<(u32, RunningProcess)> = lock(&self.processes)
            .iter()
            .filter(|(_, p)| p.sandbox_id == sandbox_id)
            .map(|(pid, p)| (*pid, p.clone()))
            .collect();
        list.sort_by_key(|(pid, _)| *pid);
        list
    }

    /// Closes the session of a sandbox that is killed or past its end, and accounts for it.
    pub(crate) async fn close(&self, sandbox: &Sandbox, reason: &'static str) -> bool {
        self.forget(&sandbox.id);
        match self
            .state
            .engine
            .close_session(&sandbox.caller, &sandbox.id)
            .await
        {
            Ok(ended) => {
                let label = if reason == "client" {
                    "client"
                } else {
                    "reaped"
                };
                self.state.metrics.session_closed(label, 1);
                audit::session_closed(&sandbox.caller, &sandbox.id, Some(&ended.language), label);
                true
            }
            Err(EngineError::SessionNotFound(_)) => false,
            Err(e) => {
                tracing::warn!(sandbox = %sandbox.id, error = %e, "closing a sandbox's session failed");
                false
            }
        }
    }

    /// Closes the sandbox on a task of its own, and makes it gone for every call at once: its
    /// commands are stopped, and the box goes once the engine has seen them end, which no caller
    /// should wait for.
    pub(crate) fn close_soon(
        self: &Arc<Self>,
        sandbox: Sandbox,
        reason: &'static str,
    ) -> tokio::task::JoinHandle<bool> {
        self.forget(&sandbox.id);
        let door = Arc::clone(self);
        tokio::spawn(async move { door.close(&sandbox, reason).await })
    }

    /// Kills the sandboxes past their `endAt`, until the door is dropped.
    async fn reap(door: Weak<E2b>) {
        let mut tick = tokio::time::interval(REAP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(e2b) = door.upgrade() else { return };
            let now = SystemTime::now();
            let expired: Vec<Sandbox> = lock(&e2b.sandboxes)
                .values()
                .filter(|s| s.end_at <= now)
                .cloned()
                .collect();
            for sandbox in expired {
                tracing::info!(sandbox = %sandbox.id, "sandbox timeout reached; killing it");
                drop(e2b.close_soon(sandbox, "timeout"));
            }
        }
    }

    /// Runs one command in the sandbox's session, counted and written to the audit log like a
    /// `session.execute`.
    pub(crate) async fn run(
        &self,
        sandbox: &Sandbox,
        command: Command,
        output: Option<UnboundedSender<OutputChunk>>,
    ) -> Result<CommandOutcome, EnvdError> {
        // A receiver whose sender is gone never fires.
        let (_, never) = tokio::sync::oneshot::channel();
        self.run_cancellable(sandbox, command, output, never, None)
            .await
    }

    /// Like [`run`](Self::run), and a value sent on `cancel` stops the command's program; with
    /// `stdin`, the program's stdin stays open for what is sent on its sender, until closed.
    pub(crate) async fn run_cancellable(
        &self,
        sandbox: &Sandbox,
        command: Command,
        output: Option<UnboundedSender<OutputChunk>>,
        cancel: tokio::sync::oneshot::Receiver<()>,
        stdin: Option<tokio::sync::mpsc::Receiver<codebeaker_sandbox::StdinEvent>>,
    ) -> Result<CommandOutcome, EnvdError> {
        let kind = command.command_type().as_str();
        let started = Instant::now();
        let engine = &self.state.engine;
        let outcome = match stdin {
            Some(stdin) => {
                engine
                    .execute_command_with_stdin(
                        &sandbox.caller,
                        &sandbox.id,
                        command,
                        output,
                        cancel,
                        stdin,
                    )
                    .await
            }
            None => {
                engine
                    .execute_command_cancellable(
                        &sandbox.caller,
                        &sandbox.id,
                        command,
                        output,
                        cancel,
                    )
                    .await
            }
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(EngineError::SessionNotFound(_) | EngineError::SessionClosed { .. }) => {
                self.forget(&sandbox.id);
                return Err(EnvdError::Gone(sandbox.id.clone()));
            }
            Err(e) => {
                let error = engine_error(e);
                let elapsed = started.elapsed();
                let state = &self.state;
                crate::rpc::command_accounted(
                    state,
                    &sandbox.caller,
                    &sandbox.id,
                    kind,
                    Err(&error),
                    elapsed,
                );
                return Err(EnvdError::Connect(errors::rpc_error(&error)));
            }
        };
        let elapsed = started.elapsed();
        crate::rpc::command_accounted(
            &self.state,
            &sandbox.caller,
            &sandbox.id,
            kind,
            Ok(&outcome),
            elapsed,
        );
        Ok(outcome)
    }
}

/// Mounts the door on the server's router: its routes, and the sandbox health check on
/// `GET /health` with an `E2b-Sandbox-Id` header (without it `/health` stays the server's own).
pub(crate) fn mount(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let e2b = E2b::new(state);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(E2b::reap(Arc::downgrade(&e2b)));
    }
    let routes = Router::new()
        // Control plane.
        .route("/sandboxes", post(control::create).get(control::list_v1))
        .route("/v2/sandboxes", post(control::create).get(control::list_v2))
        .route("/sandboxes/{id}", get(control::info).delete(control::kill))
        .route("/v2/sandboxes/{id}", delete(control::kill))
        .route("/sandboxes/{id}/timeout", post(control::set_timeout))
        .route("/sandboxes/{id}/refreshes", post(control::refresh))
        .route("/sandboxes/{id}/connect", post(control::connect))
        .route("/v2/sandboxes/{id}/connect", post(control::connect))
        .route("/sandboxes/{id}/pause", post(control::pause))
        .route("/sandboxes/{id}/{*rest}", any(control::unsupported))
        .route("/v2/sandboxes/{id}/{*rest}", any(control::unsupported))
        .route("/templates", any(control::unsupported))
        .route("/templates/{*rest}", any(control::unsupported))
        .route("/v2/templates", any(control::unsupported))
        .route("/v2/templates/{*rest}", any(control::unsupported))
        // envd.
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/{method}", post(process::call))
        .route("/filesystem.Filesystem/{method}", post(filesystem::call))
        // The code interpreter (the sandbox's port 49999).
        .route("/execute", post(interpreter::execute))
        .route(
            "/contexts",
            post(interpreter::create).get(interpreter::list),
        )
        .route("/contexts/{id}", delete(interpreter::remove))
        .route("/contexts/{id}/restart", post(interpreter::restart))
        .with_state(Arc::clone(&e2b));
    router
        .merge(routes)
        .layer(from_fn_with_state(e2b, sandbox_health))
}

/// Middleware: `GET /health` with `E2b-Sandbox-Id` is the sandbox's health (204, or the 502 of a
/// gone sandbox); every other request passes.
async fn sandbox_health(State(e2b): State<Arc<E2b>>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/health" || !request.headers().contains_key(SANDBOX_HEADER) {
        return next.run(request).await;
    }
    match e2b.envd_sandbox(request.headers(), "/health") {
        Ok(sandbox)
            if e2b
                .state
                .engine
                .list_sessions(&sandbox.caller)
                .iter()
                .any(|s| s.id == sandbox.id) =>
        {
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(sandbox) => {
            e2b.forget(&sandbox.id);
            gone(&sandbox.id)
        }
        Err(error) => error.into_response(),
    }
}
