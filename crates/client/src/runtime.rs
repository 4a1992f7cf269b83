//! The runtime service: "run this program on this JSON input" in one call, the original .NET CodeBeaker's
//! `CodeBeakerRuntimeService.ExecuteAsync` done right.
//!
//! Each execution is one lease from the pool and **one** round trip: an `execute` command that
//! carries `input`. The server binds the input to `input_data`, runs the code, and returns the
//! value left in `result` as `output` in the same response. There is no `input.json` or
//! `output.json`, so a failed run can never return a stale output of an earlier one: `output` is
//! set only when this run succeeded.
//!
//! The caller's timeout is sent to the server as `timeoutMs` (the program is killed there when it
//! runs out) and enforced on the client too, with [`CodeBeakerOptions::timeout_grace_ms`] on top
//! for the round trip and cold compiles. A language that is neither mapped nor offered fails at
//! once, before any session is made, with an error containing `Unsupported language`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use codebeaker_protocol::commands::{Command, Encoding, ExecuteCommand, RunResult, RunStatus};
use codebeaker_protocol::methods::LanguageInfo;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::{Backend, CallOptions};
use crate::pool::{PoolKey, PoolStats, SessionPool};
use crate::{Client, ClientError, CodeBeakerOptions};

/// How long the server's language list is trusted before it is asked again.
const LANGUAGE_LIST_TTL: Duration = Duration::from_secs(60);

/// How a runtime execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeStatus {
    /// The program ran to the end and produced its result.
    Ok,
    /// The program raised or exited non-zero.
    RuntimeError,
    /// The program did not compile.
    CompileError,
    /// The time limit ran out (on the server, or the client's deadline).
    Timeout,
    /// The memory limit was hit.
    MemoryLimit,
    /// The output limit was hit.
    OutputLimit,
    /// The program was killed from outside.
    Killed,
    /// CodeBeaker itself failed while running it.
    InternalError,
    /// The language is not offered.
    UnsupportedLanguage,
    /// No answer: the connection, the pool or the server failed before a result came back.
    Unavailable,
}

impl RuntimeStatus {
    fn from_run(status: RunStatus) -> Self {
        match status {
            RunStatus::Ok => RuntimeStatus::Ok,
            RunStatus::RuntimeError => RuntimeStatus::RuntimeError,
            RunStatus::CompileError => RuntimeStatus::CompileError,
            RunStatus::Timeout => RuntimeStatus::Timeout,
            RunStatus::MemoryLimit => RuntimeStatus::MemoryLimit,
            RunStatus::OutputLimit => RuntimeStatus::OutputLimit,
            RunStatus::Killed => RuntimeStatus::Killed,
            RunStatus::InternalError => RuntimeStatus::InternalError,
        }
    }

    /// The name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Ok => "ok",
            RuntimeStatus::RuntimeError => "runtime_error",
            RuntimeStatus::CompileError => "compile_error",
            RuntimeStatus::Timeout => "timeout",
            RuntimeStatus::MemoryLimit => "memory_limit",
            RuntimeStatus::OutputLimit => "output_limit",
            RuntimeStatus::Killed => "killed",
            RuntimeStatus::InternalError => "internal_error",
            RuntimeStatus::UnsupportedLanguage => "unsupported_language",
            RuntimeStatus::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one runtime execution (the original .NET CodeBeaker's `EdgeExecutionResult`, typed and complete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeResult {
    /// The program ran to the end and produced its result.
    pub success: bool,
    /// The value the program left in `result`; only ever set when `success` is true.
    pub output: Option<Value>,
    /// What went wrong, in the language's own words where there are any.
    pub error: Option<String>,
    /// Everything the program printed (besides its result).
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// How it ended.
    pub status: RuntimeStatus,
    /// The program's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Time spent getting a session: waiting in the pool, and creating one when none was idle.
    pub queue_ms: u64,
    /// Time spent compiling, when the server reports it (the protocol does not yet).
    pub compile_ms: Option<u64>,
    /// Wall-clock time of the run itself, on the server.
    pub run_ms: u64,
    /// Time of the whole call, as the caller saw it.
    pub total_ms: u64,
    /// Peak memory of the run, when the server knows it.
    pub peak_memory_bytes: Option<u64>,
    /// The session that ran it.
    pub session_id: Option<String>,
    /// The session was reused from the pool (no `session.create` for this run).
    pub session_reused: bool,
}

impl RuntimeResult {
    /// A result for a run that never got an answer.
    pub fn from_error(error: &ClientError, queue_ms: u64, total_ms: u64) -> Self {
        let status = match error {
            ClientError::UnsupportedLanguage { .. } => RuntimeStatus::UnsupportedLanguage,
            ClientError::Rpc { error: e, .. }
                if e.error_code()
                    == Some(codebeaker_protocol::jsonrpc::ErrorCode::UnsupportedLanguage) =>
            {
                RuntimeStatus::UnsupportedLanguage
            }
            ClientError::Timeout { .. } => RuntimeStatus::Timeout,
            _ => RuntimeStatus::Unavailable,
        };
        RuntimeResult {
            success: false,
            output: None,
            error: Some(error.to_string()),
            stdout: String::new(),
            stderr: String::new(),
            status,
            exit_code: None,
            queue_ms,
            compile_ms: None,
            run_ms: 0,
            total_ms,
            peak_memory_bytes: None,
            session_id: None,
            session_reused: false,
        }
    }
}

/// One execution, with everything that can be said about it.
#[derive(Debug, Clone, Default)]
pub struct ExecuteRequest {
    /// The program.
    pub code: String,
    /// The caller's language name (mapped through `language_mapping`).
    pub language: String,
    /// Bound to `input_data`. `null` runs the code as a plain script (no `output`).
    pub input: Value,
    /// Time limit in milliseconds; `default_timeout_ms` when `None`.
    pub timeout_ms: Option<u64>,
    /// Pool sessions under this tenant, so that unrelated callers never share a workspace.
    pub tenant: Option<String>,
    /// Text fed to the program's standard input.
    pub stdin: Option<String>,
}

struct LanguageCache {
    fetched: Instant,
    languages: Arc<Vec<LanguageInfo>>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    pool: SessionPool,
    options: CodeBeakerOptions,
    languages: Mutex<Option<LanguageCache>>,
    /// One `language.list` at a time: concurrent callers wait for it instead of each asking.
    languages_fetch: tokio::sync::Mutex<()>,
}

/// Runs programs on JSON inputs through a pool of sessions. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), codebeaker_client::ClientError> {
/// use codebeaker_client::{CodeBeakerOptions, RuntimeService};
/// use serde_json::json;
///
/// let runtime = RuntimeService::connect(CodeBeakerOptions::default()).await?;
/// let result = runtime
///     .execute("result = {'output': input_data['value'] * 2}", "python", json!({"value": 21}), Some(30_000))
///     .await;
/// assert!(result.success, "{:?}", result.error);
/// assert_eq!(result.output, Some(json!({"output": 42})));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RuntimeService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RuntimeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeService")
            .field("backend", &self.inner.backend.endpoint())
            .field("pool", &self.inner.pool.stats())
            .finish()
    }
}

impl RuntimeService {
    /// Connects to the server at `options.websocket_url` and builds the pool.
    pub async fn connect(options: CodeBeakerOptions) -> Result<RuntimeService, ClientError> {
        options.validate()?;
        let client = Client::connect(options.client_config()).await?;
        RuntimeService::new(Arc::new(client), options)
    }

    /// A service over any backend (a [`Client`], an [`crate::Embedded`] engine, or your own),
    /// with a new pool built from `options`.
    pub fn new(
        backend: Arc<dyn Backend>,
        options: CodeBeakerOptions,
    ) -> Result<RuntimeService, ClientError> {
        options.validate()?;
        let pool = SessionPool::new(Arc::clone(&backend), options.pool_config())?;
        Ok(RuntimeService::with_pool(pool, options))
    }

    /// A service over an existing pool (and its backend).
    pub fn with_pool(pool: SessionPool, options: CodeBeakerOptions) -> RuntimeService {
        RuntimeService {
            inner: Arc::new(Inner {
                backend: Arc::clone(pool.backend()),
                pool,
                options,
                languages: Mutex::new(None),
                languages_fetch: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &SessionPool {
        &self.inner.pool
    }

    /// The pool's statistics.
    pub fn stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// The options.
    pub fn options(&self) -> &CodeBeakerOptions {
        &self.inner.options
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Runs `code` in `language` with `input` bound to `input_data`, and returns the value it
    /// leaves in `result` as `output`. Never fails: anything that goes wrong is a result with
    /// `success: false`, a [`RuntimeStatus`] and an `error` (as the original .NET CodeBeaker's callers expect). Use
    /// [`RuntimeService::try_execute`] to get transport failures as errors instead.
    pub async fn execute(
        &self,
        code: &str,
        language: &str,
        input: Value,
        timeout_ms: Option<u64>,
    ) -> RuntimeResult {
        self.run(ExecuteRequest {
            code: code.to_string(),
            language: language.to_string(),
            input,
            timeout_ms,
            ..Default::default()
        })
        .await
    }

    /// [`RuntimeService::execute`] with every option.
    pub async fn run(&self, request: ExecuteRequest) -> RuntimeResult {
        let started = Instant::now();
        match self.try_execute(request).await {
            Ok(result) => result,
            Err(e) => RuntimeResult::from_error(&e, 0, elapsed_ms(started)),
        }
    }

    /// Like [`RuntimeService::run`], but a run that got no answer (unsupported language, pool
    /// exhausted, connection lost, client-side timeout) is an `Err`. A program that fails is
    /// still `Ok` with `success: false`.
    pub async fn try_execute(&self, request: ExecuteRequest) -> Result<RuntimeResult, ClientError> {
        let started = Instant::now();
        let language = self.resolve_language(&request.language).await?;
        let options = &self.inner.options;
        let timeout_ms = request
            .timeout_ms
            .unwrap_or(options.default_timeout_ms)
            .max(1);
        let deadline = Duration::from_millis(timeout_ms.saturating_add(options.timeout_grace_ms));
        let key = PoolKey {
            language,
            tenant: request.tenant.clone(),
        };
        let command = Command::Execute(ExecuteCommand {
            code: request.code,
            language: None,
            stdin: request.stdin,
            input: (!request.input.is_null()).then_some(request.input),
            timeout: None,
            timeout_ms: Some(timeout_ms),
            memory_limit: None,
            stream: None,
        });
        // A reused session may have been closed under us (the server restarted or reaped it):
        // the command never ran, so one retry on a fresh session is safe.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let acquired = Instant::now();
            let mut lease = self.inner.pool.acquire_key(key.clone()).await?;
            let queue_ms = elapsed_ms(acquired);
            let reused = lease.reused();
            let session_id = lease.session_id().to_string();
            let reply = lease
                .execute(command.clone(), CallOptions::with_timeout(deadline))
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) if e.is_session_not_found() && reused && attempts == 1 => {
                    tracing::debug!(session = %session_id, "pooled session is gone; retrying on a fresh one");
                    lease.discard("the server no longer knows the session");
                    continue;
                }
                Err(e) => return Err(e),
            };
            drop(lease);
            let run: Option<RunResult> = match reply.result {
                None | Some(Value::Null) => None,
                Some(value) => Some(serde_json::from_value(value).map_err(|e| {
                    ClientError::invalid_response("session.execute", format!("run result: {e}"))
                })?),
            };
            let total_ms = elapsed_ms(started);
            let Some(run) = run else {
                // A refusal with no run at all (e.g. the language cannot run in this session).
                let error = reply.error.unwrap_or_else(|| "the run was refused".into());
                let status = if error.contains("Unsupported language") {
                    RuntimeStatus::UnsupportedLanguage
                } else {
                    RuntimeStatus::InternalError
                };
                return Ok(RuntimeResult {
                    success: false,
                    output: None,
                    error: Some(error),
                    stdout: String::new(),
                    stderr: String::new(),
                    status,
                    exit_code: None,
                    queue_ms,
                    compile_ms: None,
                    run_ms: 0,
                    total_ms,
                    peak_memory_bytes: None,
                    session_id: Some(session_id),
                    session_reused: reused,
                });
            };
            let success = reply.success && run.status == RunStatus::Ok;
            let error = if success {
                None
            } else {
                Some(
                    reply
                        .error
                        .or_else(|| run.message.clone())
                        .unwrap_or_else(|| format!("the run ended {}", run.status)),
                )
            };
            return Ok(RuntimeResult {
                success,
                output: if success { run.output } else { None },
                error,
                stdout: decode_text(run.stdout, run.stdout_encoding),
                stderr: decode_text(run.stderr, run.stderr_encoding),
                status: RuntimeStatus::from_run(run.status),
                exit_code: run.exit_code,
                queue_ms,
                compile_ms: run.compile_ms,
                run_ms: run.duration_ms,
                total_ms,
                peak_memory_bytes: run.peak_memory_bytes,
                session_id: Some(session_id),
                session_reused: reused,
            });
        }
    }

    /// The server's name for `language`, or [`ClientError::UnsupportedLanguage`]. Mapped names
    /// win; without strict mapping any language (or alias) the server offers and can run is
    /// accepted as it is.
    pub async fn resolve_language(&self, language: &str) -> Result<String, ClientError> {
        let options = &self.inner.options;
        let asked = language.trim().to_ascii_lowercase();
        let mapped = options.language_mapping.get(&asked).cloned();
        if mapped.is_none() && options.strict_language_mapping {
            return Err(ClientError::UnsupportedLanguage {
                language: language.to_string(),
                detail: format!(
                    "the language mapping has {}",
                    options
                        .language_mapping
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let name = mapped.unwrap_or(asked);
        let languages = self.languages().await?;
        let found = languages
            .iter()
            .find(|l| l.name == name || l.aliases.contains(&name));
        match found {
            Some(l) if l.available => Ok(l.name.clone()),
            Some(l) => Err(ClientError::UnsupportedLanguage {
                language: language.to_string(),
                detail: format!(
                    "the server knows {} but cannot run it: {}",
                    l.name,
                    l.reason
                        .as_deref()
                        .unwrap_or("its toolchain is not installed")
                ),
            }),
            None => Err(ClientError::UnsupportedLanguage {
                language: language.to_string(),
                detail: format!(
                    "available: {}",
                    languages
                        .iter()
                        .filter(|l| l.available)
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// What the server says of `language` (a name or an alias, through the language mapping),
    /// when it can run it: its name, whether it has a snippet mode, ...
    pub async fn language_info(&self, language: &str) -> Result<LanguageInfo, ClientError> {
        let name = self.resolve_language(language).await?;
        let languages = self.languages().await?;
        languages
            .iter()
            .find(|l| l.name == name)
            .cloned()
            .ok_or_else(|| ClientError::UnsupportedLanguage {
                language: language.to_string(),
                detail: "the server no longer lists it".into(),
            })
    }

    /// The server's languages, cached for a minute.
    async fn languages(&self) -> Result<Arc<Vec<LanguageInfo>>, ClientError> {
        if let Some(list) = self.cached_languages() {
            return Ok(list);
        }
        let _fetching = self.inner.languages_fetch.lock().await;
        if let Some(list) = self.cached_languages() {
            return Ok(list);
        }
        let list = Arc::new(self.inner.backend.language_list().await?.languages);
        *self
            .inner
            .languages
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(LanguageCache {
            fetched: Instant::now(),
            languages: Arc::clone(&list),
        });
        Ok(list)
    }
}

impl RuntimeService {
    fn cached_languages(&self) -> Option<Arc<Vec<LanguageInfo>>> {
        let cache = self
            .inner
            .languages
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .filter(|c| c.fetched.elapsed() < LANGUAGE_LIST_TTL)
            .map(|c| Arc::clone(&c.languages))
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Output as text: base64-carried bytes are decoded, invalid UTF-8 replaced.
fn decode_text(text: String, encoding: Option<Encoding>) -> String {
    match encoding {
        Some(Encoding::Base64) => match base64::engine::general_purpose::STANDARD.decode(&text) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => text,
        },
        _ => text,
    }
}
