//! The methods a client can call, their params and results, and the notifications the server
//! sends while a command runs.
//!
//! Params are camelCase; on input they also accept PascalCase (the original server accepted it
//! for `execution.*` and matched `session.*` case-insensitively) and snake_case for multi-word
//! fields. Params fields that may be absent also accept `null`, and unknown members are ignored.
//! Results are camelCase. Timestamps are RFC 3339 strings in UTC, e.g. `2025-10-27T10:00:00Z`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::commands::{Command, RunResult, RunStatus};
use crate::jsonrpc::{Id, Notification};
use crate::serde_util::{json_kind, loose_str_enum, null_as_default};

/// The methods of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `initialize`: server name, version, protocol version and capabilities.
    Initialize,
    /// `language.list`: the languages and whether each is available.
    LanguageList,
    /// `session.create`: a new session (one sandbox box) for a language.
    SessionCreate,
    /// `session.execute`: run one [`Command`] in a session.
    SessionExecute,
    /// `session.close`: close a session and release everything it held.
    SessionClose,
    /// `session.list`: the caller's sessions.
    SessionList,
    /// `execution.run`: queue a one-shot run without a session.
    ExecutionRun,
    /// `execution.status`: the state and result of a one-shot run.
    ExecutionStatus,
    /// `context.create`: a stateful code context in a session (see [`crate::contexts`]).
    ContextCreate,
    /// `context.run`: run one cell in a context.
    ContextRun,
    /// `context.list`: a session's contexts.
    ContextList,
    /// `context.restart`: clear a context's state (a new kernel).
    ContextRestart,
    /// `context.close`: end a context and everything it started.
    ContextClose,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 13] = [
        Method::Initialize,
        Method::LanguageList,
        Method::SessionCreate,
        Method::SessionExecute,
        Method::SessionClose,
        Method::SessionList,
        Method::ExecutionRun,
        Method::ExecutionStatus,
        Method::ContextCreate,
        Method::ContextRun,
        Method::ContextList,
        Method::ContextRestart,
        Method::ContextClose,
    ];

    /// The method's name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Initialize => "initialize",
            Method::LanguageList => "language.list",
            Method::SessionCreate => "session.create",
            Method::SessionExecute => "session.execute",
            Method::SessionClose => "session.close",
            Method::SessionList => "session.list",
            Method::ExecutionRun => "execution.run",
            Method::ExecutionStatus => "execution.status",
            Method::ContextCreate => "context.create",
            Method::ContextRun => "context.run",
            Method::ContextList => "context.list",
            Method::ContextRestart => "context.restart",
            Method::ContextClose => "context.close",
        }
    }

    /// The method with exactly this name (names are case-sensitive). `None` means the request
    /// must be answered with `-32601` (method not found), e.g. with
    /// [`crate::jsonrpc::ErrorObject::method_not_found`].
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Params that carry nothing (`language.list`, `session.list`); any object is accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoParams {}

// ---------------------------------------------------------------------------------------------
// initialize

/// Who the client is (optional in `initialize`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The client's name.
    #[serde(alias = "Name")]
    pub name: String,
    /// The client's version.
    #[serde(alias = "Version", skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Params of `initialize`; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    /// Who the client is.
    #[serde(
        alias = "client_info",
        alias = "ClientInfo",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_info: Option<ClientInfo>,
    /// The protocol version the client speaks.
    #[serde(
        alias = "protocol_version",
        alias = "ProtocolVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol_version: Option<String>,
    /// Refuse, on this connection, params with fields the server does not know (`-32602` naming
    /// them) instead of ignoring them with a `warnings` entry in the result.
    #[serde(alias = "Strict", default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// The server's name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// `codebeaker`.
    pub name: String,
    /// The server's version.
    pub version: String,
}

/// A language the server knows (in `initialize` and `language.list`).
///
/// The first five fields are the original's; the rest say how runs of the language behave and
/// default to `false`/empty when a server does not send them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LanguageInfo {
    /// The canonical name, e.g. `python`.
    pub name: String,
    /// Other names accepted for it, e.g. `py`, `python3`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The toolchain's version, `null` when it is not installed.
    pub version: Option<String>,
    /// The toolchain is installed and usable.
    pub available: bool,
    /// Why it is not available; omitted when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The file extensions of its source files, without the dot, e.g. `py`.
    #[serde(default)]
    pub extensions: Vec<String>,
    /// `execute` with `input` runs a snippet (the code sets `result`).
    #[serde(default)]
    pub snippets: bool,
    /// Code is compiled before it runs (and the compile output cached).
    #[serde(default)]
    pub compiled: bool,
    /// Runs go to a warm worker: a pre-started interpreter that forks per run.
    #[serde(default)]
    pub warm: bool,
}

/// The limits in force; each is omitted when the server has none to report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest incoming message, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<u64>,
    /// Requests processed at once on one connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight_requests: Option<u64>,
    /// Sessions open at once on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u64>,
    /// Sessions open at once for one caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_caller: Option<u64>,
    /// Time limit of a run when none is asked for, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_timeout_ms: Option<u64>,
    /// Largest time limit a run may ask for, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<u64>,
    /// Memory limit of a session when none is asked for, in MB.
    #[serde(
        default,
        rename = "defaultMemoryLimitMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_memory_limit_mb: Option<u64>,
    /// Largest memory limit a session may ask for, in MB.
    #[serde(
        default,
        rename = "maxMemoryLimitMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory_limit_mb: Option<u64>,
    /// Captured stdout and stderr of one run together, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// Largest file that can be written or read, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_bytes: Option<u64>,
    /// Total size of a session's workspace, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workspace_bytes: Option<u64>,
    /// Number of files in a session's workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u64>,
}

/// The isolation in force, so callers know what they get (and what is degraded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IsolationInfo {
    /// The sandbox backend, e.g. `native` or `docker`.
    pub backend: String,
    /// The cgroup version limits are enforced with (1 or 2); `null` when no cgroup is used
    /// (rlimits only).
    pub cgroup_version: Option<u8>,
    /// A seccomp filter is installed in every box.
    pub seccomp: bool,
    /// The network policy of sessions, e.g. `none`.
    pub network_policy: String,
    /// What is weaker than the full design on this host, in plain words; empty when nothing is.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What the server can do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// The server sends `execution.*` notifications when asked to stream.
    pub streaming: bool,
    /// The languages, with versions and availability.
    pub languages: Vec<LanguageInfo>,
    /// The command types `session.execute` accepts.
    pub commands: Vec<String>,
    /// The limits in force.
    pub limits: Limits,
    /// The isolation in force.
    pub isolation: IsolationInfo,
}

/// Result of `initialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    /// The server's name and version.
    pub server_info: ServerInfo,
    /// [`crate::PROTOCOL_VERSION`].
    pub protocol_version: String,
    /// What the server can do.
    pub capabilities: Capabilities,
}

// ---------------------------------------------------------------------------------------------
// language.list

/// Result of `language.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanguageListResult {
    /// Every language the server knows, available or not.
    pub languages: Vec<LanguageInfo>,
}

// ---------------------------------------------------------------------------------------------
// session.*

/// Params of `session.create`. Only `language` is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreateParams {
    /// The session's language, e.g. `python` (aliases such as `py` are resolved by the server).
    #[serde(alias = "Language")]
    pub language: String,
    /// The sandbox backend to use, e.g. `native` or `docker`; the server's default when absent.
    /// Also read from `runtimeType` and `runtimePreference` (the original server's names).
    #[serde(
        alias = "Runtime",
        alias = "runtimeType",
        alias = "RuntimeType",
        alias = "runtime_type",
        alias = "runtimePreference",
        alias = "RuntimePreference",
        alias = "runtime_preference",
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime: Option<String>,
    /// Close the session after this many idle minutes.
    #[serde(
        alias = "IdleTimeoutMinutes",
        alias = "idle_timeout_minutes",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout_minutes: Option<u64>,
    /// Close the session this many minutes after creation, busy or not.
    #[serde(
        alias = "MaxLifetimeMinutes",
        alias = "max_lifetime_minutes",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_lifetime_minutes: Option<u64>,
    /// Memory limit of the session's box, in MB.
    #[serde(
        rename = "memoryLimitMB",
        alias = "MemoryLimitMB",
        alias = "memoryLimitMb",
        alias = "MemoryLimitMb",
        alias = "memory_limit_mb",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_limit_mb: Option<u64>,
    /// Relative CPU weight (Docker-style shares, 1024 = one normal share).
    #[serde(
        alias = "CpuShares",
        alias = "cpu_shares",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_shares: Option<u64>,
}

loose_str_enum! {
    /// The state of a session. Serialized PascalCase (the original .NET client expects `Active`); any
    /// case is accepted.
    pub enum SessionState ("session state") {
        /// `Active`: open and ready for commands.
        Active => "Active",
        /// `Busy`: running a command (further commands wait their turn).
        Busy => "Busy",
        /// `Closing`: being torn down.
        Closing => "Closing",
        /// `Closed`: gone.
        Closed => "Closed",
    }
}

/// The effective settings of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionConfig {
    /// Idle minutes before the session is closed.
    pub idle_timeout_minutes: u64,
    /// Minutes after creation before the session is closed.
    pub max_lifetime_minutes: u64,
    /// Memory limit of the box, in MB.
    #[serde(rename = "memoryLimitMB")]
    pub memory_limit_mb: u64,
    /// Relative CPU weight, omitted when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
}

/// Result of `session.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreateResult {
    /// The new session's id.
    pub session_id: String,
    /// The id of the session's sandbox box.
    pub container_id: String,
    /// The session's language (canonical name).
    pub language: String,
    /// The sandbox backend in use, e.g. `native`.
    pub runtime: String,
    /// Creation time, RFC 3339 in UTC.
    pub created_at: String,
    /// `Active` for a new session.
    pub state: SessionState,
    /// The effective settings.
    pub config: SessionConfig,
}

/// Params of `session.execute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionExecuteParams {
    /// The session to run in.
    #[serde(alias = "SessionId", alias = "session_id")]
    pub session_id: String,
    /// What to do.
    #[serde(alias = "Command")]
    pub command: Command,
    /// Send `execution.*` notifications while the command runs.
    #[serde(alias = "Stream", skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

impl SessionExecuteParams {
    /// True when the params or the command ask for streaming.
    pub fn wants_stream(&self) -> bool {
        self.stream.unwrap_or(false) || self.command.wants_stream()
    }
}

/// Result of `session.execute`: `{"success", "result", "error", "durationMs"}`.
///
/// `error` is always present, `null` on success (the original .NET client reads it). `result` is the
/// command's result (see [`crate::commands::CommandResult`]), `null` when there is none, for
/// example when a file to read does not exist. A failed command is `success: false` with an
/// `error` message, not a JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionExecuteResult<R = Value> {
    /// The command did what it was asked (for runs: exit code 0 and no limit hit).
    pub success: bool,
    /// The command's result.
    pub result: Option<R>,
    /// What went wrong, `null` on success.
    pub error: Option<String>,
    /// Time the command took, in milliseconds.
    pub duration_ms: u64,
}

impl<R> SessionExecuteResult<R> {
    /// A command that did what it was asked.
    pub fn ok(result: R, duration_ms: u64) -> Self {
        SessionExecuteResult {
            success: true,
            result: Some(result),
            error: None,
            duration_ms,
        }
    }

    /// A command that failed, with what went wrong and whatever result it has (a run's output,
    /// for example).
    pub fn failed(error: impl Into<String>, result: Option<R>, duration_ms: u64) -> Self {
        SessionExecuteResult {
            success: false,
            result,
            error: Some(error.into()),
            duration_ms,
        }
    }
}

/// Params of `session.close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCloseParams {
    /// The session to close.
    #[serde(alias = "SessionId", alias = "session_id")]
    pub session_id: String,
}

/// Result of `session.close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCloseResult {
    /// The session that was closed.
    pub session_id: String,
    /// `true`: everything the session held is released.
    pub closed: bool,
}

/// One session in a `session.list` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The session's id.
    pub session_id: String,
    /// The id of its sandbox box.
    pub container_id: String,
    /// Its language.
    pub language: String,
    /// Its sandbox backend.
    pub runtime: String,
    /// Its state.
    pub state: SessionState,
    /// Creation time, RFC 3339 in UTC.
    pub created_at: String,
    /// Time of the last command, RFC 3339 in UTC.
    pub last_activity: String,
    /// Commands run so far.
    pub execution_count: u64,
}

/// Result of `session.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionListResult {
    /// The caller's sessions (all sessions when authentication is off).
    pub sessions: Vec<SessionInfo>,
}

// ---------------------------------------------------------------------------------------------
// execution.*

/// Params of `execution.run`: a one-shot run without a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRunParams {
    /// The language.
    #[serde(alias = "Language")]
    pub language: String,
    /// The source code.
    #[serde(alias = "Code")]
    pub code: String,
    /// Text fed to standard input.
    #[serde(alias = "Stdin", skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Time limit in seconds (the original .NET field); `timeoutMs` wins when both are given.
    #[serde(alias = "Timeout", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Time limit in milliseconds, as `execute` takes it.
    #[serde(
        default,
        alias = "TimeoutMs",
        alias = "timeout_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ms: Option<u64>,
    /// Memory limit in MB.
    #[serde(
        alias = "MemoryLimit",
        alias = "memory_limit",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_limit: Option<u64>,
    /// CPU limit in cores (may be fractional).
    #[serde(
        alias = "CpuLimit",
        alias = "cpu_limit",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_limit: Option<f64>,
    /// Packages to install before running.
    #[serde(
        default,
        alias = "Packages",
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub packages: Vec<String>,
    /// Wait up to this many milliseconds (0 to [`MAX_WAIT_MS`]) for the run to end, and answer
    /// with its record as `execution.status` reports it instead of `{executionId, status}`.
    /// Absent (or `null`): answer at once with `{"executionId", "status": "queued"}`, as always.
    #[serde(
        default,
        alias = "Wait",
        deserialize_with = "wait_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub wait: Option<u64>,
    /// The snippet's input: with it the code runs in snippet mode (`input_data`, `result`).
    #[serde(default, alias = "Input", skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

/// The longest `wait` (in milliseconds) `execution.run` and `execution.status` accept.
pub const MAX_WAIT_MS: u64 = 60_000;

/// Reads a `wait` field: `null` or absent is no wait, else a whole number of milliseconds from 0
/// to [`MAX_WAIT_MS`]; anything else is refused with a message that says what is allowed.
fn wait_ms<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = Option::<Value>::deserialize(deserializer)?;
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match (value.as_u64(), &value) {
        (Some(ms), _) if ms <= MAX_WAIT_MS => Ok(Some(ms)),
        (_, Value::Number(n)) => Err(serde::de::Error::custom(format_args!(
            "must be a whole number of milliseconds from 0 to {MAX_WAIT_MS}, got {n}"
        ))),
        (_, other) => Err(serde::de::Error::custom(format_args!(
            "must be a whole number of milliseconds from 0 to {MAX_WAIT_MS}, got {}",
            json_kind(other)
        ))),
    }
}

loose_str_enum! {
    /// Where a one-shot run is. A finished run is never `running`, and a run that has not
    /// finished is never `completed` or `failed`.
    pub enum ExecutionStatus ("execution status") {
        /// `queued`: waiting for a slot.
        Queued => "queued" | "pending",
        /// `running`.
        Running => "running",
        /// `completed`: the program ran and ended; `outcome` says how (it may have failed).
        Completed => "completed",
        /// `failed`: CodeBeaker could not run it; `error` says why.
        Failed => "failed",
    }
}

/// Result of `execution.run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRunResult {
    /// The id to pass to `execution.status`.
    pub execution_id: String,
    /// `queued` (or already further along).
    pub status: ExecutionStatus,
}

/// Params of `execution.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStatusParams {
    /// The id `execution.run` returned.
    #[serde(alias = "ExecutionId", alias = "execution_id")]
    pub execution_id: String,
    /// Long-poll: when the run has not ended yet, wait up to this many milliseconds (0 to
    /// [`MAX_WAIT_MS`]) for it to end before answering. The answer comes as soon as the run ends,
    /// or when the wait is over with the run's state then. Absent (or `null`): answer at once.
    #[serde(
        default,
        alias = "Wait",
        deserialize_with = "wait_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub wait: Option<u64>,
}

/// Result of `execution.status`: where the run is, in the original .NET server's fields
/// (`executionId`, `status`, `exitCode`, `stdout`, `stderr`, `durationMs`, `timeout`), and once
/// it has completed, its [`RunResult`] (`result`): the very type `execute` answers with, so that
/// a one-shot and a session run are read the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStatusResult {
    /// The run's id.
    pub execution_id: String,
    /// Where the run is.
    pub status: ExecutionStatus,
    /// Exit code once completed (`null` before, or when killed by a signal).
    pub exit_code: Option<i32>,
    /// Captured standard output so far (all of it once completed).
    pub stdout: String,
    /// Captured standard error so far.
    pub stderr: String,
    /// Wall-clock time in milliseconds once completed, else `null`.
    pub duration_ms: Option<u64>,
    /// The run hit its time limit (the .NET name of `result.timedOut`).
    pub timeout: bool,
    /// How the run ended, once completed (`status` completed); omitted before, and when
    /// CodeBeaker could not run it (`status` failed: `error` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,
    /// Why the run failed or what the outcome means; omitted when there is nothing to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// streaming notifications

/// Name of the notification sent when a streamed command starts.
pub const EXECUTION_STARTED: &str = "execution.started";
/// Name of the notification that carries a chunk of output.
pub const EXECUTION_OUTPUT: &str = "execution.output";
/// Name of the notification sent when a streamed command ends (before the final response).
pub const EXECUTION_COMPLETED: &str = "execution.completed";

loose_str_enum! {
    /// Which output stream a chunk came from.
    pub enum OutputStream ("output stream") {
        /// `stdout`.
        Stdout => "stdout",
        /// `stderr`.
        Stderr => "stderr",
    }
}

/// Params of `execution.started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStarted {
    /// The JSON-RPC id of the `session.execute` request this belongs to.
    pub request_id: Option<Id>,
    /// The session.
    pub session_id: String,
    /// The command's type, e.g. `execute`.
    pub command: String,
}

/// Params of `execution.output`: `{"requestId","sessionId","stream","data","seq"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionOutput {
    /// The JSON-RPC id of the `session.execute` request this belongs to.
    pub request_id: Option<Id>,
    /// The session.
    pub session_id: String,
    /// `stdout` or `stderr`.
    pub stream: OutputStream,
    /// The chunk (invalid UTF-8 replaced by U+FFFD; the final result has the exact bytes).
    pub data: String,
    /// Chunk number across both streams of this command, from 0, without gaps.
    pub seq: u64,
}

/// Params of `execution.completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionCompleted {
    /// The JSON-RPC id of the `session.execute` request this belongs to.
    pub request_id: Option<Id>,
    /// The session.
    pub session_id: String,
    /// Same as the final result's `success`.
    pub success: bool,
    /// How a run ended; omitted for commands that are not runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// Time the command took, in milliseconds.
    pub duration_ms: u64,
}

/// One of the streaming notifications, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionEvent {
    /// `execution.started`.
    Started(ExecutionStarted),
    /// `execution.output`.
    Output(ExecutionOutput),
    /// `execution.completed`.
    Completed(ExecutionCompleted),
}

impl ExecutionEvent {
    /// The notification's name.
    pub fn method(&self) -> &'static str {
        match self {
            ExecutionEvent::Started(_) => EXECUTION_STARTED,
            ExecutionEvent::Output(_) => EXECUTION_OUTPUT,
            ExecutionEvent::Completed(_) => EXECUTION_COMPLETED,
        }
    }

    /// The notification to send.
    pub fn to_notification(&self) -> Notification {
        let params = match self {
            ExecutionEvent::Started(p) => serde_json::to_value(p),
            ExecutionEvent::Output(p) => serde_json::to_value(p),
            ExecutionEvent::Completed(p) => serde_json::to_value(p),
        };
        // These structs hold only strings, numbers and ids, which always serialize.
        Notification::new(self.method(), params.ok())
    }

    /// Reads a notification: `Ok(None)` for a notification that is not one of these,
    /// `Err` when it is one but its params do not fit.
    pub fn from_notification(
        notification: &Notification,
    ) -> Result<Option<ExecutionEvent>, serde_json::Error> {
        let params = || notification.params.clone().unwrap_or(Value::Null);
        Ok(Some(match notification.method.as_str() {
            EXECUTION_STARTED => ExecutionEvent::Started(serde_json::from_value(params())?),
            EXECUTION_OUTPUT => ExecutionEvent::Output(serde_json::from_value(params())?),
            EXECUTION_COMPLETED => ExecutionEvent::Completed(serde_json::from_value(params())?),
            _ => return Ok(None),
        }))
    }
}
