//! A fake backend with controllable delays and failures, for testing the pool and the runtime
//! service without a sandbox. Real sessions are tested end to end in `crates/cli/tests/client.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use codebeaker_client::{Backend, BoxFuture, CallOptions, ClientError};
use codebeaker_protocol::commands::Command;
use codebeaker_protocol::jsonrpc::ErrorObject;
use codebeaker_protocol::methods::{
    ExecutionRunParams, ExecutionRunResult, ExecutionStatusResult, InitializeResult, LanguageInfo,
    LanguageListResult, SessionCloseResult, SessionConfig, SessionCreateParams,
    SessionCreateResult, SessionExecuteParams, SessionExecuteResult, SessionListResult,
    SessionState,
};
use serde_json::json;

/// Sessions live in a map; `execute` commands are scripted by their code:
/// `sleep:<ms>` waits, `status:<s>` ends with that run status, anything else succeeds with the
/// input as output.
#[derive(Default)]
pub struct FakeBackend {
    pub sessions: Mutex<HashMap<String, String>>,
    pub peak_sessions: AtomicUsize,
    pub creates: AtomicUsize,
    pub closes: AtomicUsize,
    pub create_delay_ms: AtomicU64,
    pub close_delay_ms: AtomicU64,
    next: AtomicU64,
}

impl FakeBackend {
    pub fn new() -> Self {
        FakeBackend::default()
    }

    pub fn open_sessions(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// Forgets every session, as a restarted server would.
    pub fn forget_all(&self) {
        self.sessions.lock().unwrap().clear();
    }
}

fn rpc(method: &str, error: ErrorObject) -> ClientError {
    ClientError::Rpc {
        method: method.into(),
        error,
    }
}

impl Backend for FakeBackend {
    fn endpoint(&self) -> String {
        "fake".into()
    }

    fn initialize(&self) -> BoxFuture<'_, Result<InitializeResult, ClientError>> {
        Box::pin(async { Err(ClientError::Closed) })
    }

    fn language_list(&self) -> BoxFuture<'_, Result<LanguageListResult, ClientError>> {
        Box::pin(async {
            let language = |name: &str, available: bool| LanguageInfo {
                name: name.into(),
                aliases: if name == "python" {
                    vec!["py".into()]
                } else {
                    vec![]
                },
                version: Some("1".into()),
                available,
                reason: (!available).then(|| "not installed".into()),
                ..LanguageInfo::default()
            };
            Ok(LanguageListResult {
                languages: vec![
                    language("python", true),
                    language("javascript", true),
                    language("bash", true),
                    language("ruby", true),
                    language("go", true),
                    language("typescript", false),
                ],
            })
        })
    }

    fn session_create(
        &self,
        params: SessionCreateParams,
    ) -> BoxFuture<'_, Result<SessionCreateResult, ClientError>> {
        Box::pin(async move {
            let delay = self.create_delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if params.language == "cobol" {
                return Err(rpc(
                    "session.create",
                    ErrorObject::unsupported_language("cobol"),
                ));
            }
            let id = format!("s{}", self.next.fetch_add(1, Ordering::Relaxed));
            let open = {
                let mut sessions = self.sessions.lock().unwrap();
                sessions.insert(id.clone(), params.language.clone());
                sessions.len()
            };
            self.peak_sessions.fetch_max(open, Ordering::Relaxed);
            self.creates.fetch_add(1, Ordering::Relaxed);
            Ok(SessionCreateResult {
                session_id: id.clone(),
                container_id: format!("box-{id}"),
                language: params.language,
                runtime: "fake".into(),
                created_at: "2025-10-27T10:00:00Z".into(),
                state: SessionState::Active,
                config: SessionConfig {
                    idle_timeout_minutes: 30,
                    max_lifetime_minutes: 120,
                    memory_limit_mb: 512,
                    cpu_shares: None,
                },
            })
        })
    }

    fn session_execute(
        &self,
        params: SessionExecuteParams,
        options: CallOptions,
    ) -> BoxFuture<'_, Result<SessionExecuteResult, ClientError>> {
        Box::pin(async move {
            let work = async {
                if !self
                    .sessions
                    .lock()
                    .unwrap()
                    .contains_key(&params.session_id)
                {
                    return Err(rpc(
                        "session.execute",
                        ErrorObject::session_not_found(&params.session_id),
                    ));
                }
                let Command::Execute(execute) = params.command else {
                    return Ok(SessionExecuteResult::ok(json!({}), 0));
                };
                let code = execute.code.as_str();
                if let Some(ms) = code.strip_prefix("sleep:") {
                    let ms: u64 = ms.trim().parse().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let status = code.strip_prefix("status:").unwrap_or("ok").trim();
                let ok = status == "ok";
                let result = json!({
                    "stdout": "", "stderr": if ok { "" } else { "boom" },
                    "exitCode": if ok { 0 } else { 1 }, "signal": null,
                    "status": status, "timedOut": status == "timeout", "oomKilled": false,
                    "truncated": false, "durationMs": 1, "cpuTimeMs": 1,
                    "peakMemoryBytes": 1024,
                    "output": execute.input,
                });
                if ok {
                    Ok(SessionExecuteResult::ok(result, 1))
                } else {
                    Ok(SessionExecuteResult::failed(
                        format!("the run ended {status}"),
                        Some(result),
                        1,
                    ))
                }
            };
            match options.timeout {
                Some(limit) => match tokio::time::timeout(limit, work).await {
                    Ok(r) => r,
                    Err(_) => Err(ClientError::Timeout {
                        method: "session.execute".into(),
                        timeout: limit,
                    }),
                },
                None => work.await,
            }
        })
    }

    fn session_close<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<SessionCloseResult, ClientError>> {
        Box::pin(async move {
            let delay = self.close_delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            self.closes.fetch_add(1, Ordering::Relaxed);
            match self.sessions.lock().unwrap().remove(session_id) {
                Some(_) => Ok(SessionCloseResult {
                    session_id: session_id.into(),
                    closed: true,
                }),
                None => Err(rpc(
                    "session.close",
                    ErrorObject::session_not_found(session_id),
                )),
            }
        })
    }

    fn session_list(&self) -> BoxFuture<'_, Result<SessionListResult, ClientError>> {
        Box::pin(async { Ok(SessionListResult::default()) })
    }

    fn execution_run(
        &self,
        _params: ExecutionRunParams,
    ) -> BoxFuture<'_, Result<ExecutionRunResult, ClientError>> {
        Box::pin(async { Err(ClientError::Closed) })
    }

    fn execution_status<'a>(
        &'a self,
        _execution_id: &'a str,
    ) -> BoxFuture<'a, Result<ExecutionStatusResult, ClientError>> {
        Box::pin(async { Err(ClientError::Closed) })
    }
}
