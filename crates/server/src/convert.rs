//! Engine values in the protocol's shapes.

use std::time::{Duration, SystemTime};

use codebeaker_engine::{
    Engine, ExecutionRecord, ExecutionState, LanguageInfo as EngineLanguage, SessionSnapshot,
};
use codebeaker_protocol::commands::RunStatus as WireStatus;
use codebeaker_protocol::methods::{
    ExecutionStatus, ExecutionStatusResult, IsolationInfo, LanguageInfo, Limits, SessionConfig,
    SessionCreateResult, SessionInfo, SessionState,
};
use codebeaker_sandbox::cgroup::CgroupVersion;
use codebeaker_sandbox::{Isolation, RunStatus, MIB};
use serde_json::Value;

use crate::ServerConfig;

/// RFC 3339 in UTC, whole seconds: `2025-10-27T10:00:00Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Whole minutes, rounded up (a 90-second timeout is reported as 2 minutes, not 1).
fn minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn isolation(isolation: &Isolation) -> IsolationInfo {
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

pub(crate) fn language(l: &EngineLanguage) -> LanguageInfo {
    LanguageInfo {
        name: l.name.clone(),
        aliases: l.aliases.clone(),
        version: l.version.clone(),
        available: l.available,
        reason: l.reason.clone(),
    }
}

/// The limits `initialize` reports: the connection's own and the engine's.
pub(crate) fn limits(engine: &Engine, server: &ServerConfig) -> Limits {
    let config = engine.config();
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Limits {
        max_message_bytes: Some(as_u64(server.max_message_bytes)),
        max_in_flight_requests: Some(as_u64(server.max_in_flight)),
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

pub(crate) fn session_created(
    s: &SessionSnapshot,
    runtime: &str,
    cpu_shares: Option<u64>,
) -> SessionCreateResult {
    SessionCreateResult {
        session_id: s.id.clone(),
        container_id: s.box_name.clone(),
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

pub(crate) fn session_info(s: &SessionSnapshot, runtime: &str) -> SessionInfo {
    SessionInfo {
        session_id: s.id.clone(),
        container_id: s.box_name.clone(),
        language: s.language.clone(),
        runtime: runtime.to_string(),
        state: session_state(s),
        created_at: rfc3339(s.created_at),
        last_activity: rfc3339(s.last_activity),
        execution_count: s.execution_count,
    }
}

pub(crate) fn run_status(s: RunStatus) -> WireStatus {
    match s {
        RunStatus::Ok => WireStatus::Ok,
        RunStatus::RuntimeError => WireStatus::RuntimeError,
        RunStatus::CompileError => WireStatus::CompileError,
        RunStatus::Timeout => WireStatus::Timeout,
        RunStatus::MemoryLimit => WireStatus::MemoryLimit,
        RunStatus::OutputLimit => WireStatus::OutputLimit,
        RunStatus::Killed => WireStatus::Killed,
        RunStatus::InternalError => WireStatus::InternalError,
    }
}

/// The protocol's status of a one-shot run. On the wire `completed` means the program ran and
/// ended (its `outcome` says how, and may be a failure); `failed` means CodeBeaker could not run
/// it. The engine reports a run that ended badly as failed, so that case is mapped here.
fn execution_status(record: &ExecutionRecord) -> ExecutionStatus {
    match record.status {
        ExecutionState::Queued => ExecutionStatus::Queued,
        ExecutionState::Running => ExecutionStatus::Running,
        ExecutionState::Completed => ExecutionStatus::Completed,
        ExecutionState::Failed => match record.outcome {
            Some(outcome) if outcome != RunStatus::InternalError => ExecutionStatus::Completed,
            _ => ExecutionStatus::Failed,
        },
    }
}

/// `execution.status`'s result (also the REST record): the protocol's fields plus the snippet's
/// `output` when there is one.
pub(crate) fn execution_record(record: ExecutionRecord) -> Value {
    let result = ExecutionStatusResult {
        status: execution_status(&record),
        execution_id: record.id,
        exit_code: record.exit_code,
        stdout: record.stdout,
        stderr: record.stderr,
        duration_ms: record.duration_ms,
        timeout: record.timed_out,
        outcome: record.outcome.map(run_status),
        error: record.error,
    };
    let mut value = serde_json::to_value(result).unwrap_or(Value::Null);
    if let (Some(output), Value::Object(map)) = (record.output, &mut value) {
        map.insert("output".into(), output);
    }
    value
}

/// Whether a one-shot run has ended (for `?wait=true`).
pub(crate) fn execution_finished(record: &ExecutionRecord) -> bool {
    matches!(
        record.status,
        ExecutionState::Completed | ExecutionState::Failed
    )
}
