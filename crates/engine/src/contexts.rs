//! Contexts: stateful code contexts in a session, whose cells share one namespace.
//!
//! A context is a long-lived interpreter (a *kernel*) in the session's box, started by the box's
//! init ([`SandboxBox::start_context`]); a cell is a run that the init hands to that kernel
//! instead of starting a program, so that what one cell defines is there for the next, and the
//! run's limits (deadline, output, memory, cancel) hold per cell. A cell stopped by a limit
//! interrupts its kernel first (Python's `KeyboardInterrupt`) and keeps the context's state when
//! the kernel survives; a kernel that is lost (killed by a limit, crashed, ended with the box's
//! other processes after a run that did not end cleanly) is started again by the next cell,
//! which says `state_lost`. Everything a context started ends with it (`close`, `restart`, the
//! session's end).
//!
//! Contexts belong to their session: every call names the caller's session (another caller's
//! is `SessionNotFound`) and runs under the session's box lock, in arrival order with its
//! commands. Each context has its own namespace, working directory and environment; contexts of
//! one session share its workspace, its uid and its box's limits, exactly as its runs do.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use codebeaker_languages::{ContextKernel, Mode};
use codebeaker_protocol::contexts::{CellError, CellResult, ContextInfo, ContextRunResult};
use codebeaker_protocol::jsonrpc::Id;
use codebeaker_protocol::methods::{ExecutionCompleted, ExecutionEvent, ExecutionStarted};
use codebeaker_sandbox::{KernelSpec, OutputChunk, RunOutcome, RunSpec, SandboxBox, Verdict};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use crate::commands::forward_cancel;
use crate::config::TimeUnit;
use crate::session::{Caller, Cancellable, Session};
use crate::stream::{forward_output, Target};
use crate::{Engine, EngineError};

/// Most contexts one session holds.
pub const MAX_CONTEXTS_PER_SESSION: usize = 16;

/// What `context.create` may ask for.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// `python`, `javascript` or `bash` (aliases resolved); the session's language when `None`.
    pub language: Option<String>,
    /// Working directory in the box; `/workspace` when `None`.
    pub cwd: Option<String>,
    /// The context's environment, over the defaults every program gets.
    pub env: BTreeMap<String, String>,
}

/// A context as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSnapshot {
    pub id: String,
    pub session_id: String,
    /// The registry's name of its language.
    pub language: String,
    pub cwd: String,
    pub created_at: SystemTime,
    /// Cells run in it since it was created.
    pub execution_count: u64,
}

impl ContextSnapshot {
    /// The protocol's shape of it.
    pub fn info(&self) -> ContextInfo {
        ContextInfo {
            context_id: self.id.clone(),
            session_id: self.session_id.clone(),
            language: self.language.clone(),
            cwd: self.cwd.clone(),
            created_at: crate::wire::rfc3339(self.created_at),
            execution_count: self.execution_count,
        }
    }
}

/// One cell to run.
#[derive(Debug, Clone, Default)]
pub struct CellRequest {
    pub code: String,
    /// Environment variables for this cell only, over the context's.
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit; the engine's default run time when `None`.
    pub timeout: Option<Duration>,
    /// Memory limit of the box while the cell runs, in MiB.
    pub memory_limit_mb: Option<u64>,
}

/// How a cell went.
#[derive(Debug, Clone)]
pub struct CellOutcome {
    pub status: Verdict,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Its rich results, in order (the final expression's value has `is_main_result`).
    pub results: Vec<CellResult>,
    /// Its exception, if it raised one (or was interrupted).
    pub error: Option<CellError>,
    /// The kernel's count of cells, this one included.
    pub execution_count: u64,
    /// The context's earlier state is gone (see the module doc).
    pub state_lost: bool,
    /// Kernels the context has had.
    pub generation: u64,
    pub truncated: bool,
    /// Why a limit stopped the cell.
    pub message: Option<String>,
    pub duration: Duration,
}

impl CellOutcome {
    /// Whether the cell ran to its end without an exception or a limit.
    pub fn success(&self) -> bool {
        self.status == Verdict::Ok && self.error.is_none()
    }

    /// The protocol's shape of it (`context.run`'s result).
    pub fn result(&self) -> ContextRunResult {
        ContextRunResult {
            success: self.success(),
            status: crate::wire::run_status(self.status),
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
            results: self.results.clone(),
            error: self.error.clone(),
            execution_count: self.execution_count,
            state_lost: self.state_lost,
            generation: self.generation,
            truncated: self.truncated,
            message: self.message.clone(),
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A session's contexts.
#[derive(Default)]
pub(crate) struct ContextTable {
    map: BTreeMap<String, ContextEntry>,
}

struct ContextEntry {
    language: String,
    cwd: String,
    /// Its own environment, which a restart keeps.
    env: BTreeMap<String, String>,
    created_at: SystemTime,
    /// Creation order, for listing.
    order: Instant,
    executions: u64,
}

impl ContextTable {
    fn snapshot(&self, session_id: &str, id: &str) -> Option<ContextSnapshot> {
        self.map.get(id).map(|e| ContextSnapshot {
            id: id.to_string(),
            session_id: session_id.to_string(),
            language: e.language.clone(),
            cwd: e.cwd.clone(),
            created_at: e.created_at,
            execution_count: e.executions,
        })
    }
}

fn context_not_found(id: &str) -> EngineError {
    EngineError::NotFound(format!(
        "context {id} not found in this session; create one with context.create"
    ))
}

impl Engine {
    /// Creates a context in the caller's session `session_id`: a new kernel in its box, ready
    /// when this returns.
    pub async fn create_context(
        &self,
        caller: &Caller,
        session_id: &str,
        opts: ContextOptions,
    ) -> Result<ContextSnapshot, EngineError> {
        let session = self.session(caller, session_id)?;
        let language = match opts.language.as_deref().filter(|l| !l.trim().is_empty()) {
            Some(asked) => self.registry().resolve(asked)?.name().to_string(),
            None => session.language.clone(),
        };
        let cwd = opts.cwd.unwrap_or_else(|| "/workspace".to_string());
        if !cwd.starts_with('/') {
            return Err(EngineError::InvalidInput(format!(
                "cwd '{cwd}' must be an absolute path in the box (under /workspace or /tmp)"
            )));
        }
        let spec = self.kernel_spec(&language, &cwd, &opts.env)?;
        let guard = session.bx.lock().await;
        let Some(bx) = guard.as_ref() else {
            return Err(EngineError::SessionNotFound(session_id.to_string()));
        };
        if lock(&session.contexts).map.len() >= MAX_CONTEXTS_PER_SESSION {
            return Err(EngineError::LimitReached(format!(
                "the session holds its maximum of {MAX_CONTEXTS_PER_SESSION} contexts; close one first"
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let started = bx.start_context(&id, &spec).await;
        self.settle(&session, guard, started).await?;
        let mut table = lock(&session.contexts);
        table.map.insert(
            id.clone(),
            ContextEntry {
                language,
                cwd,
                env: opts.env,
                created_at: SystemTime::now(),
                order: Instant::now(),
                executions: 0,
            },
        );
        tracing::debug!(session = %session_id, context = %id, "context created");
        table
            .snapshot(session_id, &id)
            .ok_or_else(|| EngineError::Internal("a context vanished".into()))
    }

    /// The contexts of the caller's session, oldest first.
    pub fn list_contexts(
        &self,
        caller: &Caller,
        session_id: &str,
    ) -> Result<Vec<ContextSnapshot>, EngineError> {
        let session = self.session(caller, session_id)?;
        let table = lock(&session.contexts);
        let mut ids: Vec<(&String, &ContextEntry)> = table.map.iter().collect();
        ids.sort_by_key(|(_, e)| e.order);
        Ok(ids
            .into_iter()
            .filter_map(|(id, _)| table.snapshot(session_id, id))
            .collect())
    }

    /// Clears context `context_id`'s state: its kernel and everything it started end, and a
    /// new kernel starts (ready when this returns).
    pub async fn restart_context(
        &self,
        caller: &Caller,
        session_id: &str,
        context_id: &str,
    ) -> Result<ContextSnapshot, EngineError> {
        let session = self.session(caller, session_id)?;
        let (language, cwd, env) = {
            let table = lock(&session.contexts);
            let entry = table
                .map
                .get(context_id)
                .ok_or_else(|| context_not_found(context_id))?;
            (entry.language.clone(), entry.cwd.clone(), entry.env.clone())
        };
        let spec = self.kernel_spec(&language, &cwd, &env)?;
        let guard = session.bx.lock().await;
        let Some(bx) = guard.as_ref() else {
            return Err(EngineError::SessionNotFound(session_id.to_string()));
        };
        let started = bx.start_context(context_id, &spec).await;
        self.settle(&session, guard, started).await?;
        let snapshot = lock(&session.contexts).snapshot(session_id, context_id);
        snapshot.ok_or_else(|| context_not_found(context_id))
    }

    /// Closes context `context_id`: its kernel and everything it started end.
    pub async fn close_context(
        &self,
        caller: &Caller,
        session_id: &str,
        context_id: &str,
    ) -> Result<(), EngineError> {
        let session = self.session(caller, session_id)?;
        if !lock(&session.contexts).map.contains_key(context_id) {
            return Err(context_not_found(context_id));
        }
        let guard = session.bx.lock().await;
        let Some(bx) = guard.as_ref() else {
            return Err(EngineError::SessionNotFound(session_id.to_string()));
        };
        lock(&session.contexts).map.remove(context_id);
        let closed = bx.close_context(context_id).await;
        self.settle(&session, guard, closed).await?;
        Ok(())
    }

    /// Runs one cell in context `context_id` of the caller's session, in arrival order with the
    /// session's commands. `output` receives stdout/stderr chunks while it runs; a value sent on
    /// `cancel` interrupts it (as a limit would).
    pub async fn run_cell(
        &self,
        caller: &Caller,
        session_id: &str,
        context_id: &str,
        req: CellRequest,
        output: Option<UnboundedSender<OutputChunk>>,
        cancel: oneshot::Receiver<()>,
    ) -> Result<CellOutcome, EngineError> {
        let session = self.session(caller, session_id)?;
        if !lock(&session.contexts).map.contains_key(context_id) {
            return Err(context_not_found(context_id));
        }
        let mut limits = self.config().run_limits;
        if let Some(asked) = req.timeout {
            limits.wall_time = self
                .config()
                .run_time("timeoutMs", asked, TimeUnit::Millis)?;
        }
        if let Some(mb) = req.memory_limit_mb {
            limits.memory_bytes = Some(self.config().memory_limit("memoryLimit", mb)?);
        }
        let mut cmd = RunSpec::new(Vec::<String>::new());
        cmd.cell = Some(context_id.to_string());
        cmd.env = req.env.into_iter().collect();
        cmd.fd3_input = Some(req.code.into_bytes());
        cmd.capture_fd4 = true;
        cmd.limits = limits;
        let started = Instant::now();
        let guard = session.bx.lock().await;
        let Some(bx) = guard.as_ref() else {
            return Err(EngineError::SessionNotFound(session_id.to_string()));
        };
        // Closed while this cell waited for the box.
        if !lock(&session.contexts).map.contains_key(context_id) {
            return Err(context_not_found(context_id));
        }
        let _busy = self.mark_busy(&session);
        let (_armed, from_session) = Cancellable::arm(&session);
        let (stop, stopped) = oneshot::channel();
        let run = bx.run_with_stdin(&cmd, output, stopped, None);
        let ran = tokio::select! {
            ran = run => ran,
            never = forward_cancel(from_session, cancel, stop) => match never {},
        };
        let outcome = match ran {
            Ok(outcome) => outcome,
            Err(e) => {
                let e = EngineError::from(e);
                if crate::session::box_died(&e) {
                    let mut guard = guard;
                    let dead = guard.take();
                    drop(guard);
                    return Err(self.close_dead_session(&session, dead, e).await);
                }
                return Err(match e {
                    // The box refused the cell (its kernel did not start again): say why.
                    EngineError::Sandbox(codebeaker_sandbox::SandboxError::Request(m)) => {
                        EngineError::Internal(m)
                    }
                    other => other,
                });
            }
        };
        if let Some(entry) = lock(&session.contexts).map.get_mut(context_id) {
            entry.executions += 1;
        }
        Ok(cell_outcome(outcome, started.elapsed()))
    }

    /// Runs a cell as [`run_cell`](Self::run_cell) does, announcing its progress through
    /// `emit` as `session.execute` does ([`crate::stream`]): `execution.started` (command
    /// `cell`), `execution.output` in order, `execution.completed` last.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_cell_streamed<E, F>(
        &self,
        caller: &Caller,
        session_id: &str,
        context_id: &str,
        req: CellRequest,
        request_id: Option<Id>,
        cancel: oneshot::Receiver<()>,
        emit: E,
    ) -> Result<CellOutcome, EngineError>
    where
        E: Fn(ExecutionEvent) -> F,
        F: Future<Output = ()>,
    {
        let started = Instant::now();
        let target = Target {
            request_id,
            session_id: session_id.to_string(),
        };
        emit(ExecutionEvent::Started(ExecutionStarted {
            request_id: target.request_id.clone(),
            session_id: target.session_id.clone(),
            command: "cell".to_string(),
        }))
        .await;
        let result = forward_output(&target, &emit, |tx| {
            self.run_cell(caller, session_id, context_id, req, Some(tx), cancel)
        })
        .await;
        let (success, status, duration) = match &result {
            Ok(outcome) => (
                outcome.success(),
                Some(crate::wire::run_status(outcome.status)),
                outcome.duration,
            ),
            Err(_) => (false, None, started.elapsed()),
        };
        emit(ExecutionEvent::Completed(ExecutionCompleted {
            request_id: target.request_id,
            session_id: target.session_id,
            success,
            status,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        }))
        .await;
        result
    }

    /// The kernel of a `language` context: the language's kernel command, its toolchain's
    /// environment, and the run limits.
    fn kernel_spec(
        &self,
        language: &str,
        cwd: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<KernelSpec, EngineError> {
        let kernel = ContextKernel::for_language(language).ok_or_else(|| {
            EngineError::LanguageUnavailable(format!(
                "contexts run {}; {language} has no context kernel",
                ContextKernel::LANGUAGES.join(", ")
            ))
        })?;
        let registry = self.registry();
        let available = |name: &str| -> Result<_, EngineError> {
            let toolchain = registry.toolchain(name)?;
            if !toolchain.available {
                return Err(EngineError::LanguageUnavailable(
                    toolchain
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("{name} is not available")),
                ));
            }
            Ok(toolchain)
        };
        // Every kernel is (or is relayed by) the Python kernel.
        let python = available("python")?;
        let python_exe = python
            .executables
            .get("python3")
            .ok_or_else(|| EngineError::Internal("the python toolchain has no python3".into()))?;
        let toolchain = available(language)?;
        let tool = match kernel {
            ContextKernel::Python => "python3",
            ContextKernel::Javascript => "node",
            ContextKernel::Bash => "bash",
        };
        let interpreter = toolchain.executables.get(tool).ok_or_else(|| {
            EngineError::Internal(format!("the {language} toolchain has no {tool}"))
        })?;
        // The toolchain's own environment, as its runs get it.
        let plan = registry
            .resolve(language)?
            .prepare(toolchain, "", Mode::Script)?;
        let step = plan.run_step(std::path::Path::new("/tmp"), std::path::Path::new("/tmp"));
        let mut vars: BTreeMap<String, String> = step.env.into_iter().collect();
        vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(KernelSpec {
            argv: kernel.argv(python_exe, interpreter),
            env: vars.into_iter().collect(),
            cwd: cwd.to_string(),
            limits: self.config().run_limits,
        })
    }

    /// The result of a box call of a context operation, made with the box lock `guard` held:
    /// a refusal of the box is the caller's error, a dead box closes the session.
    async fn settle<T>(
        &self,
        session: &Session,
        mut guard: tokio::sync::MutexGuard<'_, Option<SandboxBox>>,
        result: Result<T, codebeaker_sandbox::SandboxError>,
    ) -> Result<T, EngineError> {
        match result {
            Ok(value) => Ok(value),
            Err(codebeaker_sandbox::SandboxError::Request(message)) => {
                Err(EngineError::InvalidInput(message))
            }
            Err(e) => {
                let e = EngineError::from(e);
                if crate::session::box_died(&e) {
                    let dead = guard.take();
                    drop(guard);
                    return Err(self.close_dead_session(session, dead, e).await);
                }
                Err(e)
            }
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A cell's outcome from the run's: the kernel's result (results, error, count) and the init's
/// report on the kernel.
fn cell_outcome(outcome: RunOutcome, duration: Duration) -> CellOutcome {
    let parsed: Value = outcome
        .result
        .as_deref()
        .and_then(|r| serde_json::from_slice(r).ok())
        .unwrap_or(Value::Null);
    let results = parsed["results"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| {
                    let data = r["data"].as_object()?;
                    Some(CellResult {
                        data: data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        is_main_result: r["main"].as_bool().unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let error = parsed["error"].as_object().map(|e| {
        let text = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        CellError {
            name: text("name"),
            value: text("value"),
            traceback: text("traceback"),
        }
    });
    let report = outcome.cell.unwrap_or(codebeaker_sandbox::CellReport {
        generation: 0,
        state_lost: true,
    });
    // An exception is the cell's result, not a failure of the run: its status is
    // `runtime_error` unless a limit says more.
    let mut status = outcome.status;
    let mut message = outcome.message.clone();
    if status == Verdict::Killed && report.state_lost && message.as_deref() != Some("cancelled") {
        message = Some("the context's kernel was killed; its state is lost".to_string());
    }
    if status == Verdict::Ok && error.is_some() {
        status = Verdict::RuntimeError;
    }
    CellOutcome {
        status,
        stdout: outcome.stdout,
        stderr: outcome.stderr,
        results,
        error,
        execution_count: parsed["execution_count"].as_u64().unwrap_or(0),
        state_lost: report.state_lost,
        generation: report.generation,
        truncated: outcome.truncated,
        message,
        duration,
    }
}
