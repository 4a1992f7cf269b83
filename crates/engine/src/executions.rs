//! One-shot executions (`execution.run` / `execution.status`, `POST /api/execution`): queued,
//! run in a fresh box in the background, and kept for a bounded time.
//!
//! A record moves Queued → Running → Completed/Failed under one lock, so a finished run is never
//! reported as running and a running one never as finished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codebeaker_sandbox::{RunStatus, MIB};
use serde_json::Value;

use crate::session::Caller;
use crate::{CodeRequest, Engine, EngineError};

/// A one-shot run as asked for.
#[derive(Debug, Clone, Default)]
pub struct OneShotRequest {
    pub language: String,
    pub code: String,
    pub stdin: Option<String>,
    /// Present: snippet mode.
    pub input: Option<Value>,
    pub timeout: Option<Duration>,
    pub memory_limit_mb: Option<u64>,
}

/// Where a one-shot run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    Queued,
    Running,
    /// Ran to its end, whatever its exit code: `outcome` says how it ended.
    Completed,
    /// Could not run (see `error`): CodeBeaker failed, or the language is unavailable.
    Failed,
}

/// What `execution.status` reports.
#[derive(Debug, Clone)]
pub struct ExecutionRecord {
    pub id: String,
    pub status: ExecutionState,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: Option<u64>,
    pub timed_out: bool,
    /// The typed outcome, once the run has ended.
    pub outcome: Option<RunStatus>,
    pub error: Option<String>,
    /// The snippet's `result`.
    pub output: Option<Value>,
}

struct Entry {
    caller: Caller,
    record: ExecutionRecord,
    finished: Option<Instant>,
}

/// Every one-shot run the engine still remembers.
#[derive(Default)]
pub(crate) struct ExecutionStore {
    entries: Mutex<HashMap<String, Entry>>,
}

impl ExecutionStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops finished records older than `retention`.
    pub fn forget_old(&self, retention: Duration) {
        let now = Instant::now();
        self.lock()
            .retain(|_, e| e.finished.is_none_or(|t| now.duration_since(t) < retention));
    }

    pub fn count(&self, state: ExecutionState) -> usize {
        self.lock()
            .values()
            .filter(|e| e.record.status == state)
            .count()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.lock().get_mut(id) {
            f(e);
        }
    }
}

impl Engine {
    /// Queues a one-shot run and returns its id at once; the run happens in the background.
    pub fn submit_execution(
        self: &Arc<Self>,
        caller: &Caller,
        req: OneShotRequest,
    ) -> Result<String, EngineError> {
        self.registry().resolve(&req.language)?;
        let mut limits = self.config().run_limits;
        if let Some(t) = req.timeout {
            if t.is_zero() || t > self.config().max_run_time {
                return Err(EngineError::InvalidInput(format!(
                    "timeout must be between 1 and {} seconds",
                    self.config().max_run_time.as_secs()
                )));
            }
            limits.wall_time = t;
            limits.cpu_time = t;
        }
        if let Some(mb) = req.memory_limit_mb {
            if mb < 16 || mb.saturating_mul(MIB) > self.config().max_memory_bytes {
                return Err(EngineError::InvalidInput(format!(
                    "memoryLimit must be between 16 and {} MB",
                    self.config().max_memory_bytes / MIB
                )));
            }
            limits.memory_bytes = Some(mb * MIB);
        }
        let id = uuid::Uuid::new_v4().to_string();
        {
            let mut entries = self.executions.lock();
            let pending = entries.values().filter(|e| e.finished.is_none()).count();
            if pending >= self.config().max_queued_executions {
                return Err(EngineError::LimitReached(format!(
                    "{pending} one-shot runs are already waiting; retry later"
                )));
            }
            entries.insert(
                id.clone(),
                Entry {
                    caller: caller.clone(),
                    record: ExecutionRecord {
                        id: id.clone(),
                        status: ExecutionState::Queued,
                        exit_code: None,
                        stdout: String::new(),
                        stderr: String::new(),
                        duration_ms: None,
                        timed_out: false,
                        outcome: None,
                        error: None,
                        output: None,
                    },
                    finished: None,
                },
            );
        }
        let code = CodeRequest {
            language: req.language,
            code: req.code,
            input: req.input,
            stdin: req.stdin.unwrap_or_default().into_bytes(),
            limits,
        };
        let engine = Arc::clone(self);
        let run_id = id.clone();
        tokio::spawn(async move {
            let permit = engine.one_shot_slots.acquire().await;
            engine
                .executions
                .update(&run_id, |e| e.record.status = ExecutionState::Running);
            let (result, bx) = engine.run_in_fresh_box(&code).await;
            engine.executions.update(&run_id, |e| {
                let r = &mut e.record;
                match result {
                    Ok(run) => {
                        let o = &run.outcome;
                        r.status = if o.status == RunStatus::InternalError {
                            ExecutionState::Failed
                        } else {
                            ExecutionState::Completed
                        };
                        r.exit_code = o.exit_code;
                        r.stdout = String::from_utf8_lossy(&o.stdout).into_owned();
                        r.stderr = String::from_utf8_lossy(&o.stderr).into_owned();
                        r.duration_ms = Some(o.wall_time.as_millis() as u64);
                        r.timed_out = o.timed_out();
                        r.outcome = Some(o.status);
                        r.error = run.error;
                        r.output = run.output;
                    }
                    Err(err) => {
                        r.status = ExecutionState::Failed;
                        r.outcome = Some(RunStatus::InternalError);
                        r.error = Some(err.to_string());
                    }
                }
                e.finished = Some(Instant::now());
            });
            // The result is visible; the clean-up happens after, off the caller's path.
            if let Some(bx) = bx {
                crate::engine::destroy_quietly(bx).await;
            }
            drop(permit);
        });
        Ok(id)
    }

    /// The caller's one-shot run `id`.
    pub fn execution_status(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ExecutionRecord, EngineError> {
        self.executions
            .lock()
            .get(id)
            .filter(|e| e.caller == *caller)
            .map(|e| e.record.clone())
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "execution {id} not found (results are kept for a limited time)"
                ))
            })
    }

    /// Waits until the run `id` has ended (or `timeout` passes) and returns its record.
    pub async fn wait_execution(
        &self,
        caller: &Caller,
        id: &str,
        timeout: Duration,
    ) -> Result<ExecutionRecord, EngineError> {
        let deadline = Instant::now() + timeout;
        loop {
            let record = self.execution_status(caller, id)?;
            if matches!(
                record.status,
                ExecutionState::Completed | ExecutionState::Failed
            ) || Instant::now() >= deadline
            {
                return Ok(record);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
