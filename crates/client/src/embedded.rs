//! Embedded mode: the [`Backend`] API over an engine in this process, no server, no socket.
//!
//! Every method calls the engine directly and returns exactly the shapes the server would send:
//! the same results, the same `success: false` for command-level failures, and engine errors
//! turned into the same JSON-RPC error codes ([`ClientError::Rpc`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use codebeaker_engine::{Caller, Engine, EngineError, OneShotRequest, SessionOptions};
use codebeaker_protocol::contexts::{
    ContextCloseResult, ContextCreateParams, ContextInfo, ContextListResult, ContextParams,
    ContextRunParams, ContextRunResult,
};
use codebeaker_protocol::jsonrpc::{ErrorCode, ErrorObject};
use codebeaker_protocol::methods::{
    ExecutionEvent, ExecutionRunParams, ExecutionRunResult, ExecutionStatus, ExecutionStatusResult,
    InitializeResult, LanguageListResult, Method, SessionCloseResult, SessionCreateParams,
    SessionCreateResult, SessionExecuteParams, SessionExecuteResult, SessionListResult,
};
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

    fn context_create(
        &self,
        params: ContextCreateParams,
    ) -> BoxFuture<'_, Result<ContextInfo, ClientError>> {
        Box::pin(async move {
            let opts = codebeaker_engine::ContextOptions {
                language: params.language,
                cwd: params.cwd,
                env: params.env,
            };
            self.engine
                .create_context(&self.caller, &params.session_id, opts)
                .await
                .map(|c| c.info())
                .map_err(|e| engine_error(Method::ContextCreate, e))
        })
    }

    fn context_run(
        &self,
        params: ContextRunParams,
        options: CallOptions,
    ) -> BoxFuture<'_, Result<ContextRunResult, ClientError>> {
        Box::pin(async move {
            let req = codebeaker_engine::CellRequest {
                code: params.code,
                env: params.env,
                timeout: params.timeout_ms.map(std::time::Duration::from_millis),
                memory_limit_mb: params.memory_limit,
            };
            let (_, never) = tokio::sync::oneshot::channel();
            let (session, context) = (&params.session_id, &params.context_id);
            let run = async {
                match options.events {
                    None => {
                        self.engine
                            .run_cell(&self.caller, session, context, req, None, never)
                            .await
                    }
                    Some(events) => {
                        let emit = |event: ExecutionEvent| {
                            let _ = events.send(event);
                            std::future::ready(())
                        };
                        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
                        let id = Some(codebeaker_protocol::jsonrpc::Id::from(id));
                        self.engine
                            .run_cell_streamed(&self.caller, session, context, req, id, never, emit)
                            .await
                    }
                }
            };
            let outcome =
                match options.timeout {
                    Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| {
                        ClientError::Timeout {
                            method: Method::ContextRun.name().into(),
                            timeout: limit,
                        }
                    })?,
                    None => run.await,
                };
            outcome
                .map(|o| o.result())
                .map_err(|e| engine_error(Method::ContextRun, e))
        })
    }

    fn context_list<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<ContextListResult, ClientError>> {
        Box::pin(async move {
            let contexts = self
                .engine
                .list_contexts(&self.caller, session_id)
                .map_err(|e| engine_error(Method::ContextList, e))?;
            Ok(ContextListResult {
                contexts: contexts.iter().map(|c| c.info()).collect(),
            })
        })
    }

    fn context_restart(
        &self,
        params: ContextParams,
    ) -> BoxFuture<'_, Result<ContextInfo, ClientError>> {
        Box::pin(async move {
            self.engine
                .restart_context(&self.caller, &params.session_id, &params.context_id)
                .await
                .map(|c| c.info())
                .map_err(|e| engine_error(Method::ContextRestart, e))
        })
    }

    fn context_close(
        &self,
        params: ContextParams,
    ) -> BoxFuture<'_, Result<ContextCloseResult, ClientError>> {
        Box::pin(async move {
            self.engine
                .close_context(&self.caller, &params.session_id, &params.context_id)
                .await
                .map_err(|e| engine_error(Method::ContextClose, e))?;
            Ok(ContextCloseResult {
                context_id: params.context_id,
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
                ..OneShotRequest::default()
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
    /// `session.execute`, with its events through the engine's one event stream when the
    /// caller asked for them (as the server streams when asked).
    async fn execute(
        &self,
        params: SessionExecuteParams,
        request_id: u64,
        events: Option<mpsc::UnboundedSender<ExecutionEvent>>,
    ) -> Result<SessionExecuteResult, ClientError> {
        let SessionExecuteParams {
            session_id,
            command,
            ..
        } = params;
        let outcome = match events {
            None => {
                self.engine
                    .execute_command(&self.caller, &session_id, command, None)
                    .await
            }
            Some(events) => {
                let emit = |event: ExecutionEvent| {
                    // A receiver that is gone drops the event: the command goes on without it.
                    let _ = events.send(event);
                    std::future::ready(())
                };
                let request_id = Some(codebeaker_protocol::jsonrpc::Id::from(request_id));
                self.engine
                    .execute_command_streamed(&self.caller, &session_id, command, request_id, emit)
                    .await
            }
        };
        outcome
            .map(codebeaker_engine::wire::execute_result)
            .map_err(|e| engine_error(Method::SessionExecute, e))
    }
}
