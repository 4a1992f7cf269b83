//! One-shot executions (`execution.run` / `execution.status`, `POST /api/execution`): queued,
//! run in a fresh box in the background, and kept for a bounded time.
//!
//! Finished records are also bounded per caller, in number and in bytes
//! ([`RecordLimits`](crate::RecordLimits)): when a run ends, that caller's oldest finished records
//! are forgotten until both bounds hold again (its newest record is always kept). Only the
//! caller's own records are dropped, so that one caller's flood never costs another its results.
//!
//! A record moves Queued → Running → Completed/Failed under one lock, so a finished run is never
//! reported as running and a running one never as finished. Each record carries a
//! [`watch`](tokio::sync::watch) flag that is raised, under the same lock, when the record becomes
//! final: [`Engine::wait_execution`] (the long-poll of `execution.status`, `execution.run` with
//! `wait`, and `POST /api/execution?wait=true`) sleeps on it and wakes the moment the run ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use codebeaker_languages::PlanFile;
use codebeaker_sandbox::{OutputChunk, RunLimits, StdinEvent, Verdict};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::RecordLimits;
use crate::executor::RunHooks;
use crate::session::Caller;
use crate::{CodeRequest, CompileInfo, Engine, EngineError};

/// A one-shot run as asked for.
#[derive(Debug, Clone, Default)]
pub struct OneShotRequest {
    pub language: String,
    pub code: String,
    pub stdin: Option<String>,
    /// Present: snippet mode.
    pub input: Option<Value>,
    /// The time limit as `timeout` (whole seconds, the original .NET field) gives it.
    pub timeout: Option<Duration>,
    /// The time limit as `timeoutMs` gives it; wins over `timeout`.
    pub timeout_ms: Option<Duration>,
    pub memory_limit_mb: Option<u64>,
    /// Files written beside the main file ([`CodeRequest::files`]), compiled with it when they
    /// have its extension.
    pub files: Vec<PlanFile>,
    /// Files written into the box's workspace (paths relative to it) before the program starts;
    /// the program's working directory is the workspace.
    pub workspace_files: Vec<(String, Vec<u8>)>,
    /// Arguments after the program's own command line ([`CodeRequest::args`]).
    pub args: Vec<String>,
    /// The run's limits whole, in place of the defaults, `timeout` and `memory_limit_mb`: for a
    /// door that takes limits of its own (build it from [`EngineConfig::run_limits`]). Checked
    /// against the configured bounds: times within 1 ms and the longest run, memory within
    /// 16 MiB and the most; the file size is cut to the engine's; the output and open-file
    /// bounds stay the engine's.
    ///
    /// [`EngineConfig::run_limits`]: crate::EngineConfig::run_limits
    pub limits: Option<RunLimits>,
    /// The compile step's limits ([`CodeRequest::compile_limits`]), checked against the
    /// configured compile limits.
    pub compile_limits: Option<RunLimits>,
    /// The program's stderr goes to its stdout: one stream, in the order written.
    pub stderr_to_stdout: bool,
    /// How many times the program runs, each time in a fresh box; it stops at the first run
    /// that does not end `ok`. 0 and 1 both mean once; more cannot take hooks
    /// ([`Engine::submit_execution_with`]).
    pub runs: u32,
}

/// What a caller of [`Engine::submit_execution_with`] attaches to its run while it goes on.
/// Each part is optional; none is [`Engine::submit_execution`].
#[derive(Debug, Default)]
pub struct OneShotHooks {
    /// Receives the program's stdout and stderr as they come, in the order the box read them
    /// (the compile step's output is not streamed: a failed compile's is in the record).
    pub output: Option<mpsc::UnboundedSender<OutputChunk>>,
    /// A value sent on its sender stops the program (its run ends `killed`), also when sent
    /// before the program starts; dropping the sender leaves the run alone.
    pub cancel: Option<oneshot::Receiver<()>>,
    /// Keeps the program's stdin open after the request's `stdin`, for these events, until
    /// [`StdinEvent::Close`] or until every sender is dropped.
    pub stdin: Option<mpsc::Receiver<StdinEvent>>,
    /// Told when the program starts, after its compile step (with how compiling went, for a
    /// compiled language); never told when the compile failed or the run could not start.
    pub started: Option<oneshot::Sender<Option<CompileInfo>>>,
}

impl OneShotHooks {
    fn into_run_hooks(self) -> RunHooks {
        RunHooks {
            output: self.output,
            // A receiver whose sender is gone never fires.
            cancel: self.cancel.unwrap_or_else(|| oneshot::channel().1),
            stdin: self.stdin,
            started: self.started,
        }
    }
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
    pub timed_out: bool,
    /// Output was cut at the output limit.
    pub truncated: bool,
    /// The typed outcome, once the run has ended.
    pub outcome: Option<Verdict>,
    pub error: Option<String>,
    /// The snippet's `result`.
    pub output: Option<Value>,
    /// The signal that ended the program, if one did.
    pub signal: Option<i32>,
    /// CPU time of every process of the run (of the compile step, when that failed), its wall
    /// time and the box's peak memory (when the kernel reports it), once it has ended; with
    /// `runs` > 1, the mean over the runs that ran.
    pub cpu_time: Option<Duration>,
    pub wall_time: Option<Duration>,
    pub peak_memory_bytes: Option<u64>,
    /// When the run was queued, and when it ended.
    pub created_at: SystemTime,
    pub finished_at: Option<SystemTime>,
    /// The sandbox's short explanation of a timeout, memory limit, output limit or internal
    /// error.
    pub message: Option<String>,
    /// How compiling went, for a compiled language (also when the compile failed).
    pub compile: Option<CompileInfo>,
}

struct Entry {
    caller: Caller,
    record: ExecutionRecord,
    finished: Option<Instant>,
    /// Raised once, together with `finished`, when the record has become final.
    ended: watch::Sender<bool>,
}

impl Entry {
    /// Makes the record final and wakes everyone waiting for it.
    fn finish(&mut self) {
        self.finished = Some(Instant::now());
        self.record.finished_at = Some(SystemTime::now());
        self.ended.send_replace(true);
    }
}

impl ExecutionRecord {
    /// About how many bytes the record holds.
    fn size(&self) -> u64 {
        let output = self
            .output
            .as_ref()
            .map_or(0, |v| serde_json::to_string(v).map_or(0, |t| t.len()));
        let text =
            self.stdout.len() + self.stderr.len() + self.error.as_ref().map_or(0, String::len);
        (self.id.len() + text + output + RECORD_OVERHEAD) as u64
    }
}

/// What a record costs besides its text: the entry, its key, the map slot and the watch flag.
const RECORD_OVERHEAD: usize = 256;

/// Every one-shot run the engine still remembers.
#[derive(Default)]
struct Records {
    entries: HashMap<String, Entry>,
    /// Per caller: its finished records (id and size), oldest first.
    finished: HashMap<Caller, CallerRecords>,
}

#[derive(Default)]
struct CallerRecords {
    order: VecDeque<(String, u64)>,
    bytes: u64,
}

impl Records {
    /// Marks `id` final and forgets its caller's oldest finished records past `limits`.
    fn finish(&mut self, id: &str, limits: RecordLimits) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.finish();
        let size = entry.record.size();
        let mine = self.finished.entry(entry.caller.clone()).or_default();
        mine.order.push_back((id.to_string(), size));
        mine.bytes += size;
        while mine.order.len() > 1
            && (mine.order.len() > limits.max_per_caller
                || mine.bytes > limits.max_bytes_per_caller)
        {
            let Some((old, bytes)) = mine.order.pop_front() else {
                break;
            };
            mine.bytes = mine.bytes.saturating_sub(bytes);
            self.entries.remove(&old);
        }
    }
}

/// Every one-shot run the engine still remembers.
pub(crate) struct ExecutionStore {
    entries: Mutex<Records>,
    /// One-shot runs queued or running (the refill of the box pool waits for them).
    in_flight: watch::Sender<usize>,
}

impl Default for ExecutionStore {
    fn default() -> Self {
        ExecutionStore {
            entries: Mutex::default(),
            in_flight: watch::Sender::new(0),
        }
    }
}

/// Counts a one-shot run as in flight for as long as it lives.
struct InFlight<'a>(&'a watch::Sender<usize>);

impl<'a> InFlight<'a> {
    fn new(counter: &'a watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n += 1);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl ExecutionStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops finished records older than `retention`.
    pub fn forget_old(&self, retention: Duration) {
        let now = Instant::now();
        let mut records = self.lock();
        let Records { entries, finished } = &mut *records;
        entries.retain(|_, e| e.finished.is_none_or(|t| now.duration_since(t) < retention));
        finished.retain(|_, mine| {
            mine.order.retain(|(id, _)| entries.contains_key(id));
            mine.bytes = mine.order.iter().map(|(_, bytes)| bytes).sum();
            !mine.order.is_empty()
        });
    }

    pub fn count(&self, state: ExecutionState) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.record.status == state)
            .count()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.lock().entries.get_mut(id) {
            f(e);
        }
    }

    /// Fills in the final record of `id`, makes it final, and applies the caller's bounds.
    fn finish(&self, id: &str, limits: RecordLimits, f: impl FnOnce(&mut ExecutionRecord)) {
        let mut records = self.lock();
        if let Some(e) = records.entries.get_mut(id) {
            f(&mut e.record);
            records.finish(id, limits);
        }
    }

    /// Waits until no one-shot run is queued or running, or `at_most` has passed.
    pub async fn idle(&self, at_most: Duration) {
        let mut in_flight = self.in_flight.subscribe();
        let _ = tokio::time::timeout(at_most, in_flight.wait_for(|n| *n == 0)).await;
    }
}

impl Engine {
    /// Queues a one-shot run and returns its id at once; the run happens in the background.
    pub fn submit_execution(
        self: &Arc<Self>,
        caller: &Caller,
        req: OneShotRequest,
    ) -> Result<String, EngineError> {
        self.submit_execution_with(caller, req, OneShotHooks::default())
    }

    /// Like [`submit_execution`](Self::submit_execution), with `hooks` attached to the run: its
    /// output as it comes, a cancel, stdin fed while it runs, and word of its start.
    pub fn submit_execution_with(
        self: &Arc<Self>,
        caller: &Caller,
        req: OneShotRequest,
        hooks: OneShotHooks,
    ) -> Result<String, EngineError> {
        self.registry().resolve(&req.language)?;
        if !req.files.is_empty() {
            // Files a run could not write are refused now, not found out in the background.
            let mode = match req.input {
                Some(_) => codebeaker_languages::Mode::Snippet,
                None => codebeaker_languages::Mode::Script,
            };
            let mut plan = self.registry().prepare(&req.language, &req.code, mode)?;
            plan.add_files(req.files.clone())?;
        }
        let hooked = hooks.output.is_some()
            || hooks.cancel.is_some()
            || hooks.stdin.is_some()
            || hooks.started.is_some();
        if hooked && req.runs > 1 {
            return Err(EngineError::InvalidInput(format!(
                "runs: a run with hooks runs once, got {}; ask for runs: 1",
                req.runs
            )));
        }
        let config = self.config();
        // One check against the configured bounds: a door's limits whole, or the defaults with
        // `timeout` and `memory_limit_mb`.
        let limits = match req.limits {
            Some(asked) => {
                config.checked_limits("limits", asked, config.run_limits, config.max_run_time)?
            }
            None => {
                let mut limits = config.run_limits;
                use crate::config::TimeUnit;
                let asked = match (req.timeout_ms, req.timeout) {
                    (Some(t), _) => Some(config.run_time("timeoutMs", t, TimeUnit::Millis)?),
                    (None, Some(t)) => Some(config.run_time("timeout", t, TimeUnit::Seconds)?),
                    (None, None) => None,
                };
                if let Some(t) = asked {
                    limits.wall_time = t;
                    limits.cpu_time = t;
                }
                if let Some(mb) = req.memory_limit_mb {
                    limits.memory_bytes = Some(config.memory_limit("memoryLimit", mb)?);
                }
                limits
            }
        };
        let compile_limits = match req.compile_limits {
            Some(asked) => {
                let base = config.compile_limits;
                Some(config.checked_limits("compileLimits", asked, base, base.wall_time)?)
            }
            None => None,
        };
        let stdin = config.checked_stdin("stdin", req.stdin)?;
        let id = uuid::Uuid::new_v4().to_string();
        {
            let mut records = self.executions.lock();
            let entries = &mut records.entries;
            let pending = entries.values().filter(|e| e.finished.is_none()).count();
            if pending >= self.config().max_queued_executions {
                return Err(EngineError::LimitReached(format!(
                    "{pending} one-shot runs are already waiting; retry later"
                )));
            }
            let per_caller = self.config().max_queued_executions_per_caller;
            let mine = entries
                .values()
                .filter(|e| e.finished.is_none() && e.caller == *caller)
                .count();
            if mine >= per_caller {
                return Err(EngineError::LimitReached(format!(
                    "you have {mine} one-shot runs waiting or running, the most one caller may \
                     have ({per_caller}); wait for some to end (execution.status with wait) and \
                     submit again"
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
                        timed_out: false,
                        truncated: false,
                        outcome: None,
                        error: None,
                        output: None,
                        signal: None,
                        cpu_time: None,
                        wall_time: None,
                        peak_memory_bytes: None,
                        created_at: SystemTime::now(),
                        finished_at: None,
                        message: None,
                        compile: None,
                    },
                    finished: None,
                    ended: watch::channel(false).0,
                },
            );
        }
        let code = CodeRequest {
            language: req.language,
            code: req.code,
            input: req.input,
            stdin,
            limits,
            files: req.files,
            args: req.args,
            compile_limits,
            stderr_to_stdout: req.stderr_to_stdout,
        };
        let (files, runs) = (req.workspace_files, req.runs.max(1));
        // The hooks go to the first (and, with hooks, only) run.
        let mut hooks = Some(hooks.into_run_hooks());
        let engine = Arc::clone(self);
        let run_id = id.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            let in_flight = InFlight::new(&engine.executions.in_flight);
            let permit = engine.one_shot_slots.acquire(&caller.0).await;
            engine
                .executions
                .update(&run_id, |e| e.record.status = ExecutionState::Running);
            let mut costs = RunCosts::default();
            let (result, bx) = loop {
                let hooks = hooks.take().unwrap_or_else(|| RunHooks::streaming(None));
                let (result, bx) = engine.run_in_fresh_box(&caller, &code, &files, hooks).await;
                if let Ok(run) = &result {
                    costs.add(&run.outcome);
                }
                let again = costs.runs < runs
                    && matches!(&result, Ok(run) if run.outcome.status == Verdict::Ok);
                if !again {
                    break (result, bx);
                }
                if let Some(bx) = bx {
                    engine.destroy_in_background(bx);
                }
            };
            let limits = engine.config().execution_records;
            engine.executions.finish(&run_id, limits, |r| match result {
                Ok(run) => {
                    let o = &run.outcome;
                    r.status = if o.status == Verdict::InternalError {
                        ExecutionState::Failed
                    } else {
                        ExecutionState::Completed
                    };
                    r.exit_code = o.exit_code;
                    r.signal = o.signal;
                    r.stdout = String::from_utf8_lossy(&o.stdout).into_owned();
                    r.stderr = String::from_utf8_lossy(&o.stderr).into_owned();
                    let (cpu, wall, memory) = costs.mean();
                    r.cpu_time = Some(cpu);
                    r.wall_time = Some(wall);
                    r.peak_memory_bytes = memory;
                    r.timed_out = o.timed_out();
                    r.truncated = o.truncated;
                    r.outcome = Some(o.status);
                    r.error = run.error;
                    r.output = run.output;
                    r.message = o.message.clone();
                    r.compile = run.compile;
                }
                Err(err) => {
                    r.status = ExecutionState::Failed;
                    r.outcome = Some(Verdict::InternalError);
                    r.error = Some(err.to_string());
                }
            });
            // The result is visible and waiters are woken; the clean-up happens after, off the
            // caller's path. The box's processes are killed first thing, so the slot can go to
            // the next run at once.
            drop(permit);
            drop(in_flight);
            if let Some(bx) = bx {
                engine.destroy_in_background(bx);
            }
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
            .entries
            .get(id)
            .filter(|e| e.caller == *caller)
            .map(|e| e.record.clone())
            .ok_or_else(|| not_found(id))
    }

    /// Waits until the run `id` has ended, or `timeout` has passed, and returns its record then
    /// (final, or still `queued`/`running` when the wait ran out). Wakes as soon as the run ends
    /// (no polling); a zero `timeout` answers at once, like [`execution_status`](Self::execution_status).
    pub async fn wait_execution(
        &self,
        caller: &Caller,
        id: &str,
        timeout: Duration,
    ) -> Result<ExecutionRecord, EngineError> {
        self.wait_execution_until(caller, id, Some(timeout)).await
    }

    /// Waits, without a time limit, until the run `id` has ended, and returns its final record.
    pub async fn execution_ended(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ExecutionRecord, EngineError> {
        self.wait_execution_until(caller, id, None).await
    }

    async fn wait_execution_until(
        &self,
        caller: &Caller,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecutionRecord, EngineError> {
        let mut ended = {
            let records = self.executions.lock();
            let entry = records
                .entries
                .get(id)
                .filter(|e| e.caller == *caller)
                .ok_or_else(|| not_found(id))?;
            if entry.finished.is_some() || timeout.is_some_and(|t| t.is_zero()) {
                return Ok(entry.record.clone());
            }
            entry.ended.subscribe()
        };
        // `Err` from `wait_for` means the record was dropped (the engine is gone); the lookup
        // below then reports it as not found.
        match timeout {
            Some(timeout) => {
                let _ = tokio::time::timeout(timeout, ended.wait_for(|done| *done)).await;
            }
            None => {
                let _ = ended.wait_for(|done| *done).await;
            }
        }
        self.execution_status(caller, id)
    }
}

/// What the runs of one one-shot execution cost, summed.
#[derive(Default)]
struct RunCosts {
    runs: u32,
    cpu: Duration,
    wall: Duration,
    memory: Option<u64>,
}

impl RunCosts {
    fn add(&mut self, outcome: &codebeaker_sandbox::RunOutcome) {
        self.runs += 1;
        self.cpu += outcome.cpu_time;
        self.wall += outcome.wall_time;
        if let Some(bytes) = outcome.peak_memory_bytes {
            self.memory = Some(self.memory.unwrap_or(0).saturating_add(bytes));
        }
    }

    /// Mean CPU time, wall time and peak memory over the runs.
    fn mean(&self) -> (Duration, Duration, Option<u64>) {
        let n = self.runs.max(1);
        (
            self.cpu / n,
            self.wall / n,
            self.memory.map(|m| m / u64::from(n)),
        )
    }
}

fn not_found(id: &str) -> EngineError {
    EngineError::NotFound(format!(
        "execution {id} not found (results are kept for a limited time)"
    ))
}
