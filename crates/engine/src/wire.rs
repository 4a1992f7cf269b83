//! Engine values in the protocol's shapes: the one place that converts them, used by the server
//! and by the client's embedded mode alike, so both answer exactly the same.

use std::time::{Duration, SystemTime};

use codebeaker_protocol::commands::RunStatus as WireStatus;
use codebeaker_protocol::commands::{CommandType, RunResult};
use codebeaker_protocol::jsonrpc::{ErrorCode, ErrorObject};
use codebeaker_protocol::methods::{
    Capabilities, ExecutionStatus, ExecutionStatusResult, InitializeResult, IsolationInfo,
    LanguageListResult, Limits, ServerInfo, SessionConfig, SessionCreateResult,
    SessionExecuteResult, SessionInfo, SessionState,
};
use codebeaker_sandbox::cgroup::CgroupVersion;
use codebeaker_sandbox::{Isolation, Verdict, MIB};
use serde_json::Value;

use crate::{
    CommandOutcome, Engine, EngineError, ExecutionRecord, ExecutionState, SessionSnapshot,
};

/// `session.execute`'s result for a command's outcome (`result` omitted when the command was
/// refused before it produced one).
pub fn execute_result(outcome: CommandOutcome) -> SessionExecuteResult {
    SessionExecuteResult {
        success: outcome.success,
        result: outcome
            .result
            .and_then(|r| serde_json::to_value(r).ok())
            .filter(|v| !v.is_null()),
        error: outcome.error,
        duration_ms: millis(outcome.duration),
    }
}

/// RFC 3339 in UTC, whole seconds: `2025-10-27T10:00:00Z`.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Whole minutes, rounded up (a 90-second timeout is reported as 2 minutes, not 1).
fn minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A run's status on the wire.
pub fn run_status(s: Verdict) -> WireStatus {
    match s {
        Verdict::Ok => WireStatus::Ok,
        Verdict::RuntimeError => WireStatus::RuntimeError,
        Verdict::CompileError => WireStatus::CompileError,
        Verdict::Timeout => WireStatus::Timeout,
        Verdict::MemoryLimit => WireStatus::MemoryLimit,
        Verdict::OutputLimit => WireStatus::OutputLimit,
        Verdict::Killed => WireStatus::Killed,
        Verdict::InternalError => WireStatus::InternalError,
    }
}

/// The isolation in force, as `initialize` reports it.
pub fn isolation(isolation: &Isolation) -> IsolationInfo {
    IsolationInfo {
        backend: isolation.backend.to_string(),
        cgroup_version: isolation.cgroup.map(|v| match v {
            CgroupVersion::V1 => 1,
            CgroupVersion::V2 => 2,
        }),
        seccomp: isolation.seccomp,
        network_policy: isolation.network.to_string(),
        warnings: isolation.notes.clone(),
    }
}

/// `initialize`'s result, for a server or an in-process backend named `server_name`, with the
/// transport's `limits`.
pub fn initialize(engine: &Engine, server_name: &str, limits: Limits) -> InitializeResult {
    InitializeResult {
        server_info: ServerInfo {
            name: server_name.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        protocol_version: codebeaker_protocol::PROTOCOL_VERSION.into(),
        capabilities: Capabilities {
            streaming: true,
            languages: engine.languages(),
            // Only what can succeed here: `install_packages` needs a network, and boxes have
            // none (it is still answered, with an error that says so).
            commands: CommandType::ALL
                .iter()
                .filter(|c| **c != CommandType::InstallPackages)
                .map(|c| c.as_str().to_string())
                .collect(),
            limits,
            isolation: isolation(engine.isolation()),
        },
    }
}

/// `language.list`'s result.
pub fn language_list(engine: &Engine) -> LanguageListResult {
    LanguageListResult {
        languages: engine.languages(),
    }
}

/// The limits `initialize` reports: the engine's, plus the transport's own when there is one.
pub fn limits(
    engine: &Engine,
    max_message_bytes: Option<u64>,
    max_in_flight: Option<u64>,
) -> Limits {
    let config = engine.config();
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Limits {
        max_message_bytes,
        max_in_flight_requests: max_in_flight,
        max_sessions: Some(as_u64(config.sessions.max_sessions)),
        max_sessions_per_caller: Some(as_u64(config.sessions.max_sessions_per_caller)),
        default_timeout_ms: Some(millis(config.run_limits.wall_time)),
        max_timeout_ms: Some(millis(config.max_run_time)),
        default_memory_limit_mb: Some(config.box_limits.memory_bytes / MIB),
        max_memory_limit_mb: Some(config.max_memory_bytes / MIB),
        max_output_bytes: Some(config.run_limits.output_bytes),
        max_file_bytes: Some(config.files.max_write_bytes),
        max_workspace_bytes: Some(config.box_limits.workspace_bytes),
        max_files: Some(config.box_limits.workspace_files),
    }
}

fn session_state(s: &SessionSnapshot) -> SessionState {
    if s.busy {
        SessionState::Busy
    } else {
        SessionState::Active
    }
}

/// `session.create`'s result.
pub fn session_created(
    s: &SessionSnapshot,
    runtime: &str,
    cpu_shares: Option<u64>,
) -> SessionCreateResult {
    SessionCreateResult {
        session_id: s.id.clone(),
        container_id: s.container_id.clone(),
        language: s.language.clone(),
        runtime: runtime.to_string(),
        created_at: rfc3339(s.created_at),
        state: session_state(s),
        config: SessionConfig {
            idle_timeout_minutes: minutes(s.idle_timeout),
            max_lifetime_minutes: minutes(s.max_lifetime),
            memory_limit_mb: s.memory_limit_bytes / MIB,
            cpu_shares,
        },
    }
}

/// One entry of `session.list`.
pub fn session_info(s: &SessionSnapshot, runtime: &str) -> SessionInfo {
    SessionInfo {
        session_id: s.id.clone(),
        container_id: s.container_id.clone(),
        language: s.language.clone(),
        runtime: runtime.to_string(),
        state: session_state(s),
        created_at: rfc3339(s.created_at),
        last_activity: rfc3339(s.last_activity),
        execution_count: s.execution_count,
    }
}

/// `execution.status`'s result. `completed` means the program ran to its end (its `result`
/// says how, and may be a failure); `failed` means CodeBeaker could not run it.
pub fn execution_status(record: ExecutionRecord) -> ExecutionStatusResult {
    let status = match record.status {
        ExecutionState::Queued => ExecutionStatus::Queued,
        ExecutionState::Running => ExecutionStatus::Running,
        ExecutionState::Completed => ExecutionStatus::Completed,
        ExecutionState::Failed => ExecutionStatus::Failed,
    };
    let result = match (status, record.outcome) {
        (ExecutionStatus::Completed, Some(verdict)) => Some(RunResult {
            stdout: record.stdout.clone(),
            stderr: record.stderr.clone(),
            stdout_encoding: None,
            stderr_encoding: None,
            exit_code: record.exit_code,
            signal: record.signal,
            status: run_status(verdict),
            timed_out: record.timed_out,
            oom_killed: verdict == Verdict::MemoryLimit,
            truncated: record.truncated,
            duration_ms: record.wall_time.map_or(0, millis),
            cpu_time_ms: record.cpu_time.map_or(0, millis),
            peak_memory_bytes: record.peak_memory_bytes,
            output: record.output.clone(),
            message: record.message.clone(),
            compile_ms: record.compile.as_ref().map(|c| millis(c.duration)),
            compile_cache_hit: record.compile.as_ref().map(|c| c.cache_hit),
        }),
        _ => None,
    };
    ExecutionStatusResult {
        status,
        execution_id: record.id,
        exit_code: record.exit_code,
        stdout: record.stdout,
        stderr: record.stderr,
        duration_ms: record.wall_time.map(millis),
        timeout: record.timed_out,
        result,
        error: record.error,
    }
}

/// [`execution_status`] as JSON.
pub fn execution_status_json(record: ExecutionRecord) -> Value {
    serde_json::to_value(execution_status(record)).unwrap_or(Value::Null)
}

/// The JSON-RPC error for an engine error. `internal` builds the error for failures of
/// CodeBeaker itself (the server logs them under an opaque id and hides the detail).
pub fn error_object(
    error: EngineError,
    internal: impl FnOnce(&EngineError) -> ErrorObject,
) -> ErrorObject {
    match error {
        EngineError::UnsupportedLanguage(m) | EngineError::LanguageUnavailable(m) => {
            ErrorObject::new(ErrorCode::UnsupportedLanguage, m)
        }
        EngineError::InvalidInput(m) => ErrorObject::invalid_params(m),
        EngineError::OutOfRange { field, message } => {
            ErrorObject::invalid_params(message).with_data(serde_json::json!({ "field": field }))
        }
        EngineError::SessionNotFound(id) => ErrorObject::session_not_found(&id),
        // The session was closed because its box died: gone like a closed session, and the
        // message says why.
        e @ EngineError::SessionClosed { .. } => {
            ErrorObject::new(ErrorCode::SessionNotFound, e.to_string())
        }
        // An unknown one-shot execution: the protocol's "not found" code.
        EngineError::NotFound(m) => ErrorObject::new(ErrorCode::SessionNotFound, m),
        EngineError::LimitReached(m) => ErrorObject::limit_reached(m),
        other => internal(&other),
    }
}
