//! MCP's streamable HTTP transport at `/mcp`: rmcp's tower service (sessions named by the
//! `Mcp-Session-Id` header) behind the server's auth, with each MCP session bound to the caller
//! that opened it.
//!
//! rmcp makes one [`Tools`] per MCP session (its factory is also called for throwaway instances
//! that look up a tool's schema; those hold no sandbox). The session's instance goes when the
//! session ends (a `DELETE`, the idle timeout `mcp.session_idle_timeout_secs`, the server's
//! shutdown), and its sandboxes with it.
//!
//! A session id is a bearer of its sandboxes, so it is bound to its caller: a request naming a
//! session that another caller opened is answered as for a session that does not exist (404),
//! whatever its token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use codebeaker_engine::Caller;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::Tools;
use crate::state::AppState;

/// The path of the MCP endpoint.
pub const PATH: &str = "/mcp";

/// The header that names a request's MCP session.
const SESSION_HEADER: &str = "mcp-session-id";

/// The callers of the open MCP sessions.
struct Owners {
    manager: Arc<LocalSessionManager>,
    callers: Mutex<HashMap<String, Caller>>,
}

impl Owners {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Caller>> {
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new session's caller, and forgets the sessions rmcp no longer has (deleted,
    /// timed out), so that the map holds at most the open sessions and the ones that ended
    /// since the last new one.
    async fn opened(&self, id: String, caller: Caller) {
        let open: Vec<String> = {
            let sessions = self.manager.sessions.read().await;
            sessions.keys().map(|k| k.to_string()).collect()
        };
        let mut callers = self.lock();
        callers.retain(|id, _| open.contains(id));
        callers.insert(id, caller);
    }
}

/// Mounts `/mcp` on the server's router, behind the server's bearer-token auth.
pub(crate) fn mount(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let settings = &state.config.mcp;
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = Some(settings.session_idle_timeout);
    let manager = Arc::new(manager);
    let mut config = StreamableHttpServerConfig::default()
        .with_max_request_body_bytes(state.config.max_message_bytes);
    config = if settings.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(settings.allowed_hosts.clone())
    };
    // At shutdown every MCP session ends (and their long-lived event streams with them), so
    // that connections close within the grace period.
    let cancel = config.cancellation_token.clone();
    let mut stopping = state.shutdown_signal();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            cancel.cancel();
        });
    }
    let for_sessions = state.clone();
    let service = StreamableHttpService::new(
        move || Ok(Tools::new(for_sessions.clone(), None)),
        Arc::clone(&manager),
        config,
    );
    let owners = Arc::new(Owners {
        manager,
        callers: Mutex::new(HashMap::new()),
    });
    let routes = Router::new()
        .route_service(PATH, service)
        .route_layer(from_fn_with_state(owners, bind_sessions))
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::auth::require_caller,
        ));
    router.merge(routes)
}

/// Middleware: a request naming an MCP session passes only when its caller opened it; a
/// response that opens a session records its caller.
async fn bind_sessions(
    State(owners): State<Arc<Owners>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let named = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &named {
        let owner = owners.lock().get(id).cloned();
        if owner.as_ref() != Some(&caller) {
            // rmcp's own answer to a session it does not have.
            return (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response();
        }
        return next.run(request).await;
    }
    let response = next.run(request).await;
    if let Some(id) = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v: &HeaderValue| v.to_str().ok())
    {
        owners.opened(id.to_string(), caller).await;
    }
    response
}
