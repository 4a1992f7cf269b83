//! `POST execute`: one program compiled (when its language is) and run as one one-shot run of
//! the engine, answered in Piston's shape:
//! `{language, version, run, compile?}`, each stage `{stdout, stderr, output, code, signal,
//! message, status, cpu_time, wall_time, memory}` (times in milliseconds, memory in bytes).
//!
//! Each stream of a stage keeps at most [`OUTPUT_MAX`] bytes, as Piston's default
//! `output_max_size`: a program that writes more is stopped, and its stage ends `OL` (stdout) or
//! `EL` (stderr) with `signal: "SIGKILL"`. A failed compile is also the `run` stage, as Piston
//! answers it.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use codebeaker_engine::{Caller, CompileInfo, ExecutionRecord, ExecutionState, OneShotHooks};
use codebeaker_sandbox::{OutputChunk, Stream, Verdict};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::job::{self, Job};
use super::{engine_refusal, PistonError};
use crate::rpc::{language_label, wait_for_execution, watch_one_shot};
use crate::state::AppState;

/// Bytes kept of each stream of a stage (Piston's default `output_max_size`).
pub(crate) const OUTPUT_MAX: usize = 1024;

/// Extra time a run may take beyond its own limits before the door gives up waiting: for the
/// queue, the box and the compile.
const WAIT_MARGIN: Duration = Duration::from_secs(60);

const ROUTE: &str = "/api/v2/execute";

/// Piston's status of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Status {
    /// Exited non-zero.
    RE,
    /// Died of a signal.
    SG,
    /// Ran out of time.
    TO,
    /// Wrote more to stdout than a stage keeps.
    OL,
    /// Wrote more to stderr than a stage keeps.
    EL,
    /// CodeBeaker failed.
    XX,
}

/// One stage of Piston's answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stage {
    pub stdout: String,
    pub stderr: String,
    pub output: String,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub message: Option<String>,
    pub status: Option<Status>,
    pub cpu_time: Option<u64>,
    pub wall_time: Option<u64>,
    pub memory: Option<u64>,
}

/// Piston's answer.
#[derive(Debug, Serialize)]
struct Answer {
    language: String,
    version: String,
    run: Stage,
    #[serde(skip_serializing_if = "Option::is_none")]
    compile: Option<Stage>,
}

/// The name of signal `number` (`SIGSEGV`), as Piston reports it.
pub(crate) fn signal_name(number: i32) -> Option<String> {
    nix::sys::signal::Signal::try_from(number)
        .ok()
        .map(|s| s.as_str().to_string())
}

/// A stage's output as it came: each stream kept up to [`OUTPUT_MAX`] bytes, and both together
/// in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    output: Vec<u8>,
    /// The stream that went past the bound first, if one did.
    overflow: Option<Stream>,
}

impl Collected {
    /// Keeps what `chunk` adds within the bound; true when the chunk went past it.
    fn add(&mut self, chunk: &OutputChunk) -> bool {
        let kept = match chunk.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let room = OUTPUT_MAX.saturating_sub(kept.len());
        let take = chunk.data.len().min(room);
        kept.extend_from_slice(&chunk.data[..take]);
        self.output.extend_from_slice(&chunk.data[..take]);
        let over = take < chunk.data.len();
        if over && self.overflow.is_none() {
            self.overflow = Some(chunk.stream);
        }
        over
    }

    /// The same, for output that did not stream (a failed compile's): stdout, then stderr.
    fn of(stdout: &[u8], stderr: &[u8]) -> Collected {
        let mut collected = Collected::default();
        for (stream, data) in [(Stream::Stdout, stdout), (Stream::Stderr, stderr)] {
            collected.add(&OutputChunk {
                stream,
                data: data.to_vec(),
            });
        }
        collected
    }
}

/// A queued run: its id, and word of its program's start (never sent when its compile failed).
pub(crate) struct Submitted {
    pub id: String,
    pub started: oneshot::Receiver<Option<CompileInfo>>,
}

/// Queues `job` for `caller` with `hooks` (the `started` hook is the door's own), counted and
/// audited like every one-shot run.
pub(crate) fn submit(
    state: &AppState,
    caller: &Caller,
    job: &Job,
    mut hooks: OneShotHooks,
    route: &str,
) -> Result<Submitted, PistonError> {
    let (started_tx, started) = oneshot::channel();
    hooks.started = Some(started_tx);
    let id = state
        .engine
        .submit_execution_with(caller, job.request.clone(), hooks)
        .map_err(|e| engine_refusal(caller, route, e))?;
    let language = language_label(state, Some(&job.runtime.registry_name));
    watch_one_shot(state, caller, &id, language);
    Ok(Submitted { id, started })
}

/// Waits for the run `id` to end: at most as long as its limits allow, and never past the
/// server's shutdown.
pub(crate) async fn finished(
    state: &AppState,
    caller: &Caller,
    job: &Job,
    id: &str,
) -> Result<ExecutionRecord, PistonError> {
    let limits = job
        .request
        .limits
        .unwrap_or(state.engine.config().run_limits);
    let compile = job
        .request
        .compile_limits
        .map_or(Duration::ZERO, |l| l.wall_time);
    let longest = limits.wall_time + compile + WAIT_MARGIN;
    let record = wait_for_execution(state, caller, id, longest)
        .await
        .map_err(|e| PistonError::new(StatusCode::INTERNAL_SERVER_ERROR, e.message))?;
    match record.status {
        ExecutionState::Completed | ExecutionState::Failed => Ok(record),
        ExecutionState::Queued | ExecutionState::Running => Err(PistonError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the run did not end in time (the server may be shutting down); retry later",
        )),
    }
}

/// The stage a record ends with, given the output it wrote.
pub(crate) fn stage(record: &ExecutionRecord, collected: &Collected) -> Stage {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let verdict = record.outcome.unwrap_or(Verdict::InternalError);
    let signal_number = record.signal;
    let (status, message) = match (collected.overflow, verdict) {
        (Some(Stream::Stdout), _) => (Some(Status::OL), Some("stdout length exceeded".into())),
        (Some(Stream::Stderr), _) => (Some(Status::EL), Some("stderr length exceeded".into())),
        (None, Verdict::Ok) => (None, None),
        (None, Verdict::RuntimeError | Verdict::CompileError) => match signal_number {
            Some(n) => (Some(Status::SG), Some(format!("Caught fatal signal {n}"))),
            None => (
                Some(Status::RE),
                Some(format!(
                    "Exited with error status {}",
                    record.exit_code.unwrap_or(1)
                )),
            ),
        },
        (None, Verdict::Timeout) => (Some(Status::TO), Some("Time limit exceeded".into())),
        (None, Verdict::MemoryLimit) => (
            Some(Status::SG),
            Some(
                record
                    .message
                    .clone()
                    .unwrap_or_else(|| "Memory limit exceeded".into()),
            ),
        ),
        (None, Verdict::OutputLimit) => (Some(Status::OL), Some("output length exceeded".into())),
        (None, Verdict::Killed) => (Some(Status::SG), Some("Caught fatal signal 9".into())),
        (None, Verdict::InternalError) => (
            Some(Status::XX),
            Some(
                record
                    .error
                    .clone()
                    .or_else(|| record.message.clone())
                    .unwrap_or_else(|| "internal error".into()),
            ),
        ),
    };
    let signal = match status {
        Some(Status::TO | Status::OL | Status::EL) => Some("SIGKILL".to_string()),
        _ => signal_number.and_then(signal_name).or_else(|| {
            // Killed from outside, or by the kernel for memory: SIGKILL.
            (status == Some(Status::SG)).then(|| "SIGKILL".to_string())
        }),
    };
    Stage {
        stdout: text(&collected.stdout),
        stderr: text(&collected.stderr),
        output: text(&collected.output),
        code: if signal.is_some() {
            None
        } else {
            record.exit_code
        },
        signal,
        message,
        status,
        cpu_time: record.cpu_time.map(crate::audit::millis),
        wall_time: record.wall_time.map(crate::audit::millis),
        memory: record.peak_memory_bytes,
    }
}

/// The compile stage of a compile that went through (no output: its artifacts may come from the
/// compile cache, where no compiler ran).
pub(crate) fn compiled_stage(info: Option<CompileInfo>) -> Stage {
    Stage {
        stdout: String::new(),
        stderr: String::new(),
        output: String::new(),
        code: Some(0),
        signal: None,
        message: None,
        status: None,
        cpu_time: None,
        wall_time: info.map(|i| u64::try_from(i.duration.as_millis()).unwrap_or(u64::MAX)),
        memory: None,
    }
}

/// The stage of a compile that failed, from its record.
pub(crate) fn failed_compile_stage(record: &ExecutionRecord) -> Stage {
    let collected = Collected::of(record.stdout.as_bytes(), record.stderr.as_bytes());
    let mut stage = stage(record, &collected);
    if let Some(compile) = record.compile {
        stage.wall_time = u64::try_from(compile.duration.as_millis()).ok();
    }
    stage
}

/// `POST execute`.
pub(crate) async fn execute(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, PistonError> {
    let caller = super::caller(&state, &headers, ROUTE)?;
    let body =
        body.map_err(|rejection| PistonError::new(rejection.status(), rejection.body_text()))?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| {
        PistonError::bad_request(format!("the request body is not valid JSON: {e}"))
    })?;
    let job = job::job(&state, &body, false)?;
    let (output_tx, mut output) = mpsc::unbounded_channel();
    let (cancel, cancelled) = oneshot::channel();
    let hooks = OneShotHooks {
        output: Some(output_tx),
        cancel: Some(cancelled),
        ..OneShotHooks::default()
    };
    let mut submitted = submit(&state, &caller, &job, hooks, ROUTE)?;
    // The output ends when the program does (its sender goes with the run).
    let collecting = async move {
        let mut collected = Collected::default();
        let mut cancel = Some(cancel);
        while let Some(chunk) = output.recv().await {
            if collected.add(&chunk) {
                if let Some(stop) = cancel.take() {
                    let _ = stop.send(());
                }
            }
        }
        collected
    };
    let (collected, record) =
        tokio::join!(collecting, finished(&state, &caller, &job, &submitted.id));
    let record = record?;
    let started = submitted.started.try_recv().ok();
    let (run, compile) = match (job.runtime.compiled, started, record.compile) {
        (false, ..) => (stage(&record, &collected), None),
        (true, Some(info), _) => (stage(&record, &collected), Some(compiled_stage(info))),
        // The compile ran and failed: Piston answers it as both stages.
        (true, None, Some(_)) => {
            let failed = failed_compile_stage(&record);
            (failed.clone(), Some(failed))
        }
        // Nothing ran (CodeBeaker failed before the compile).
        (true, None, None) => {
            let failed = stage(&record, &collected);
            (failed.clone(), Some(failed))
        }
    };
    let answer = Answer {
        language: job.runtime.language.clone(),
        version: job.runtime.version.clone(),
        run,
        compile,
    };
    serde_json::to_value(answer).map(Json).map_err(|e| {
        let error = crate::error::internal_error(&e);
        PistonError::new(StatusCode::INTERNAL_SERVER_ERROR, error.message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: Verdict, exit_code: Option<i32>, signal: Option<i32>) -> ExecutionRecord {
        ExecutionRecord {
            id: "x".into(),
            status: ExecutionState::Completed,
            exit_code,
            stdout: String::new(),
            stderr: String::new(),
            timed_out: outcome == Verdict::Timeout,
            truncated: false,
            outcome: Some(outcome),
            error: None,
            output: None,
            signal,
            cpu_time: Some(Duration::from_millis(1)),
            wall_time: Some(Duration::from_millis(5)),
            created_at: std::time::SystemTime::now(),
            finished_at: None,
            peak_memory_bytes: Some(4096),
            message: None,
            compile: None,
        }
    }

    #[test]
    fn statuses_and_signals_are_pistons() {
        let none = Collected::default();
        let ok = stage(&record(Verdict::Ok, Some(0), None), &none);
        assert_eq!((ok.status, ok.code, ok.signal), (None, Some(0), None));
        let re = stage(&record(Verdict::RuntimeError, Some(3), None), &none);
        assert_eq!(
            (re.status, re.code, re.signal.as_deref()),
            (Some(Status::RE), Some(3), None)
        );
        assert_eq!(re.message.as_deref(), Some("Exited with error status 3"));
        let sg = stage(&record(Verdict::RuntimeError, None, Some(11)), &none);
        assert_eq!(
            (sg.status, sg.code, sg.signal.as_deref()),
            (Some(Status::SG), None, Some("SIGSEGV"))
        );
        let to = stage(&record(Verdict::Timeout, None, Some(9)), &none);
        assert_eq!(
            (to.status, to.code, to.signal.as_deref()),
            (Some(Status::TO), None, Some("SIGKILL"))
        );
        let killed = stage(&record(Verdict::Killed, None, None), &none);
        assert_eq!(
            (killed.status, killed.signal.as_deref()),
            (Some(Status::SG), Some("SIGKILL"))
        );
        let xx = stage(&record(Verdict::InternalError, None, None), &none);
        assert_eq!(xx.status, Some(Status::XX));
    }

    #[test]
    fn each_stream_keeps_its_bound_and_the_first_over_it_names_the_status() {
        let mut collected = Collected::default();
        let chunk = |stream, n| OutputChunk {
            stream,
            data: vec![b'x'; n],
        };
        assert!(!collected.add(&chunk(Stream::Stderr, 10)));
        assert!(!collected.add(&chunk(Stream::Stdout, OUTPUT_MAX)));
        assert!(collected.add(&chunk(Stream::Stdout, 1)));
        assert!(collected.add(&chunk(Stream::Stderr, OUTPUT_MAX)));
        assert_eq!(collected.stdout.len(), OUTPUT_MAX);
        assert_eq!(collected.stderr.len(), OUTPUT_MAX);
        assert_eq!(collected.output.len(), 2 * OUTPUT_MAX);
        let ol = stage(&record(Verdict::Killed, None, Some(9)), &collected);
        assert_eq!(
            (ol.status, ol.code, ol.signal.as_deref()),
            (Some(Status::OL), None, Some("SIGKILL"))
        );
        assert_eq!(ol.message.as_deref(), Some("stdout length exceeded"));
    }
}
