//! Embedded mode: the [`Backend`] API over an engine in this process, no server, no socket.
//!
//! Every method calls the engine directly and returns exactly the shapes the server would send:
//! the same results, the same `success: false` for command-level failures, and engine errors
//! turned into the same JSON-RPC error codes ([`ClientError::Rpc`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use codebeaker_engine::{Caller, Engine, EngineError, OneShotRequest, SessionOptions};
use codebeaker_protocol::commands::{CommandType, RunStatus as WireStatus};
use codebeaker_protocol::jsonrpc::{ErrorCode, ErrorObject};
use codebeaker_protocol::methods::{
    ExecutionCompleted, ExecutionEvent, ExecutionOutput, ExecutionRunParams, ExecutionRunResult,
    ExecutionStarted, ExecutionStatus, ExecutionStatusResult, InitializeResult, LanguageListResult,
    Method, OutputStream, SessionCloseResult, SessionCreateParams, SessionCreateResult,
    SessionExecuteParams, SessionExecuteResult, SessionListResult,
};
use codebeaker_sandbox::{OutputChunk, Stream};
use tokio::sync::mpsc;

use crate::backend::{Backend, BoxFuture, CallOptions};
use crate::ClientError;

/// An in-process engine behind the [`Backend`] API, acting as `caller`.
///
/// The engine runs code in real sandbox boxes exactly as a server would; only the transport is
/// gone. Sessions belong to `caller` as they would to an authenticated connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use codebeaker_client::{CodeBeakerOptions, Embedded, RuntimeService};
/// use codebeaker_engine::{Engine, EngineConfig};
///
/// let engine = Arc::new(Engine::new(EngineConfig::default())?);
/// let backend = Arc::new(Embedded::new(engine));
/// let runtime = RuntimeService::new(backend, CodeBeakerOptions::default())?;
/// let result = runtime
///     .execute("result = {'output': input_data['value'] * 2}", "python", serde_json::json!({"value": 21}), None)
///     .await;
/// assert_eq!(result.output, Some(serde_json::json!({"output": 42})));
/// # Ok(()) }
/// ```
pub struct Embedded {
    engine: Arc<Engine>,
    caller: Caller,
    /// Numbers the `session.execute` calls, standing in for JSON-RPC ids in events.
    next_request: AtomicU64,
}

impl Embedded {
    /// The engine, acting as the anonymous caller (as a server with authentication off).
    pub fn new(engine: Arc<Engine>) -> Self {
        Embedded::with_caller(engine, Caller::anonymous())
    }

    /// The engine, acting as `caller`: its sessions are invisible to every other caller.
    pub fn with_caller(engine: Arc<Engine>, caller: Caller) -> Self {
        Embedded {
            engine,
            caller,
            next_request: AtomicU64::new(1),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Who the sessions belong to.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

/// The JSON-RPC error the server would send for an engine error.
fn engine_error(method: Method, error: EngineError) -> ClientError {
    // In process there is no log to hide the detail from: say what failed.
    let object = codebeaker_engine::wire::error_object(error, |other| {
        ErrorObject::new(ErrorCode::InternalError, format!("internal error: {other}"))
    });
    ClientError::rpc(method.name(), object)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Backend for Embedded {
    fn endpoint(&self) -> String {
        "embedded".to_string()
    }

    fn initialize(&self) -> BoxFuture<'_, Result<InitializeResult, ClientError>> {
        Box::pin(async move {
            let limits = codebeaker_engine::wire::limits(&self.engine, None, None);
            Ok(codebeaker_engine::wire::initialize(
                &self.engine,
                "codebeaker-embedded",
                limits,
            ))
        })
    }

    fn language_list(&self) -> BoxFuture<'_, Result<LanguageListResult, ClientError>> {
        Box::pin(async move { Ok(codebeaker_engine::wire::language_list(&self.engine)) })
    }

    fn session_create(
        &self,
        params: SessionCreateParams,
    ) -> BoxFuture<'_, Result<SessionCreateResult, ClientError>> {
        Box::pin(async move {
            let backend = self.engine.isolation().backend;
            if let Some(runtime) = params.runtime.as_deref() {
                if !runtime.eq_ignore_ascii_case(backend) {
                    return Err(ClientError::rpc(
                        Method::SessionCreate.name(),
                        ErrorObject::invalid_params(format!(
                            "runtime {runtime:?} is not available; this engine runs {backend:?}"
                        )),
                    ));
                }
            }
            let options = SessionOptions {
                language: params.language,
                idle_timeout: params
                    .idle_timeout_minutes
                    .map(|m| Duration::from_secs(m.saturating_mul(60))),
                max_lifetime: params
                    .max_lifetime_minutes
                    .map(|m| Duration::from_secs(m.saturating_mul(60))),
                memory_limit_mb: params.memory_limit_mb,
                cpu_shares: params.cpu_shares,
            };
            let s = self
                .engine
                .create_session(&self.caller, options)
                .await
                .map_err(|e| engine_error(Method::SessionCreate, e))?;
            Ok(codebeaker_engine::wire::session_created(
                &s,
                backend,
                params.cpu_shares,
            ))
        })
    }

    fn session_execute(
        &self,
        params: SessionExecuteParams,
        options: CallOptions,
    ) -> BoxFuture<'_, Result<SessionExecuteResult, ClientError>> {
        Box::pin(async move {
            let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
            let timeout = options.timeout;
            let run = self.execute(params, request_id, options.events);
            match timeout {
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(result) => result,
                    Err(_) => Err(ClientError::Timeout {
                        method: Method::SessionExecute.name().into(),
                        timeout: limit,
                    }),
                },
                None => run.await,
            }
        })
    }

    fn session_close<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<SessionCloseResult, ClientError>> {
        Box::pin(async move {
            self.engine
                .close_session(&self.caller, session_id)
                .await
                .map_err(|e| engine_error(Method::SessionClose, e))?;
            Ok(SessionCloseResult {
                session_id: session_id.to_string(),
                closed: true,
            })
        })
    }

    fn session_list(&self) -> BoxFuture<'_, Result<SessionListResult, ClientError>> {
        Box::pin(async move {
            let runtime = self.engine.isolation().backend;
            let sessions = self
                .engine
                .list_sessions(&self.caller)
                .iter()
                .map(|s| codebeaker_engine::wire::session_info(s, runtime))
                .collect();
            Ok(SessionListResult { sessions })
        })
    }

    fn execution_run(
        &self,
        params: ExecutionRunParams,
    ) -> BoxFuture<'_, Result<ExecutionRunResult, ClientError>> {
        Box::pin(async move {
            if !params.packages.is_empty() {
                return Err(ClientError::rpc(
                    Method::ExecutionRun.name(),
                    ErrorObject::invalid_params(
                        "packages: boxes have no network access; put the packages' files into a session's workspace instead",
                    ),
                ));
            }
            let request = OneShotRequest {
                language: params.language,
                code: params.code,
                stdin: params.stdin,
                input: None,
                timeout: params.timeout.map(Duration::from_secs),
                memory_limit_mb: params.memory_limit,
            };
            let id = self
                .engine
                .submit_execution(&self.caller, request)
                .map_err(|e| engine_error(Method::ExecutionRun, e))?;
            Ok(ExecutionRunResult {
                execution_id: id,
                status: ExecutionStatus::Queued,
            })
        })
    }

    fn execution_status<'a>(
        &'a self,
        execution_id: &'a str,
    ) -> BoxFuture<'a, Result<ExecutionStatusResult, ClientError>> {
        Box::pin(async move {
            self.engine
                .execution_status(&self.caller, execution_id)
                .map(codebeaker_engine::wire::execution_status)
                .map_err(|e| engine_error(Method::ExecutionStatus, e))
        })
    }

    fn execution_run_wait(
        &self,
        params: ExecutionRunParams,
        wait: Duration,
    ) -> BoxFuture<'_, Result<ExecutionStatusResult, ClientError>> {
        Box::pin(async move {
            let queued = self.execution_run(params).await?;
            self.execution_status_wait(&queued.execution_id, wait).await
        })
    }

    fn execution_status_wait<'a>(
        &'a self,
        execution_id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<ExecutionStatusResult, ClientError>> {
        Box::pin(async move {
            let wait = Duration::from_millis(crate::backend::wait_millis(wait));
            self.engine
                .wait_execution(&self.caller, execution_id, wait)
                .await
                .map(codebeaker_engine::wire::execution_status)
                .map_err(|e| engine_error(Method::ExecutionStatus, e))
        })
    }
}

impl Embedded {
    async fn execute(
        &self,
        params: SessionExecuteParams,
        request_id: u64,
        events: Option<mpsc::UnboundedSender<ExecutionEvent>>,
    ) -> Result<SessionExecuteResult, ClientError> {
        let method = Method::SessionExecute;
        let session_id = params.session_id;
        let command_name = params.command.command_type().as_str().to_string();
        let is_run = matches!(
            params.command.command_type(),
            CommandType::Execute | CommandType::Shell | CommandType::InstallPackages
        );
        let Some(events) = events else {
            let outcome = self
                .engine
                .execute_command(&self.caller, &session_id, params.command, None)
                .await
                .map_err(|e| engine_error(method, e))?;
            return Ok(SessionExecuteResult {
                success: outcome.success,
                result: Some(outcome.result),
                error: outcome.error,
                duration_ms: millis(outcome.duration),
            });
        };
        // The session must exist before `execution.started` is announced.
        if !self
            .engine
            .list_sessions(&self.caller)
            .iter()
            .any(|s| s.id == session_id)
        {
            return Err(engine_error(
                method,
                EngineError::SessionNotFound(session_id),
            ));
        }
        let rid = Some(codebeaker_protocol::jsonrpc::Id::from(request_id));
        let _ = events.send(ExecutionEvent::Started(ExecutionStarted {
            request_id: rid.clone(),
            session_id: session_id.clone(),
            command: command_name,
        }));
        let (chunks_tx, mut chunks) = mpsc::unbounded_channel::<OutputChunk>();
        let forward = {
            let events = events.clone();
            let rid = rid.clone();
            let session_id = session_id.clone();
            async move {
                let mut seq = 0u64;
                while let Some(chunk) = chunks.recv().await {
                    let _ = events.send(ExecutionEvent::Output(ExecutionOutput {
                        request_id: rid.clone(),
                        session_id: session_id.clone(),
                        stream: match chunk.stream {
                            Stream::Stdout => OutputStream::Stdout,
                            Stream::Stderr => OutputStream::Stderr,
                        },
                        data: String::from_utf8_lossy(&chunk.data).into_owned(),
                        seq,
                    }));
                    seq += 1;
                }
            }
        };
        let run = async {
            let r = self
                .engine
                .execute_command(&self.caller, &session_id, params.command, Some(chunks_tx))
                .await;
            // `chunks_tx` was moved into the engine call and is dropped with it, which ends
            // `forward` once every chunk is through.
            r
        };
        let (outcome, ()) = tokio::join!(run, forward);
        let outcome = outcome.map_err(|e| engine_error(method, e))?;
        let status = if is_run {
            outcome
                .result
                .get("status")
                .and_then(|s| serde_json::from_value::<WireStatus>(s.clone()).ok())
        } else {
            None
        };
        let duration_ms = millis(outcome.duration);
        let _ = events.send(ExecutionEvent::Completed(ExecutionCompleted {
            request_id: rid,
            session_id,
            success: outcome.success,
            status,
            duration_ms,
        }));
        Ok(SessionExecuteResult {
            success: outcome.success,
            result: Some(outcome.result),
            error: outcome.error,
            duration_ms,
        })
    }
}
