//! The Judge0 CE front door: Judge0's clients (its official Python SDK, the many judges and
//! editors that speak its REST API) run unchanged against this server, under `/judge0`.
//!
//! A client's endpoint is `http://HOST:PORT/judge0`. A submission is one of the engine's
//! one-shot runs: its token is the run's execution id, owned by the caller that made it (another
//! caller's token is unknown to it), and it goes through the engine's queue, limits, quotas,
//! metrics and audit log like `POST /api/execution`. Nothing here runs code a second way; this
//! module only translates Judge0's shapes:
//!
//! - [`config`]: the `[judge0]` settings (limits' defaults and maxima, lowered to the engine's);
//! - `languages`: Judge0 CE 1.13.1's language ids for the toolchains found here (a data table);
//! - `submission`: validating a submission into an engine request (Judge0's 422 bodies), and
//!   writing one back with the fields a client asks for;
//! - `status`: statuses 1–14 and the verdict of a finished run;
//! - `files`: `additional_files`, a zip unpacked (bounded) into the run's workspace;
//! - `api` and `info`: the routes.
//!
//! Who a request speaks for: the server's tokens, sent as Judge0's `X-Auth-Token` or as
//! `Authorization: Bearer` (anonymous when auth is off), rate limited per caller like every other
//! request. `callback_url` is refused: the server never makes a request to an address a
//! submitter chooses.

mod api;
pub mod config;
mod files;
mod info;
mod languages;
mod status;
mod submission;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use codebeaker_engine::Caller;
use serde_json::json;

use crate::audit;
use crate::rate_limit::RateLimiter;
use crate::state::AppState;
pub use config::Judge0Config;
use languages::Judge0Language;
use submission::Submission;

/// The Judge0 version this door answers as. The SDK maps its language aliases by it.
pub const JUDGE0_VERSION: &str = "1.13.1";

/// Where the door is mounted.
pub const PREFIX: &str = "/judge0";

/// Judge0's authentication header.
const AUTH_HEADER: &str = "x-auth-token";

/// The door's state: its settings (within the engine's limits), its languages, and what it
/// keeps of each submission.
pub(crate) struct Judge0 {
    pub state: AppState,
    pub config: Judge0Config,
    pub languages: Arc<BTreeMap<u32, Judge0Language>>,
    submissions: Mutex<Store>,
}

/// The submissions the door remembers, bounded per caller like the engine's records: past a
/// caller's bound its oldest are forgotten (only its own), and one whose run the engine has
/// forgotten is dropped when it is next looked up.
#[derive(Default)]
struct Store {
    by_token: HashMap<String, Arc<Submission>>,
    per_caller: HashMap<Caller, CallerSubmissions>,
}

#[derive(Default)]
struct CallerSubmissions {
    order: VecDeque<(String, u64)>,
    bytes: u64,
}

/// A refusal in Judge0's shape: `{"error": ...}` with its status (and `Retry-After`, in seconds,
/// for a rate limit).
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(value) = self
            .retry_after
            .and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// A Judge0 error body, `{"error": ...}`, with its status.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        retry_after: None,
    }
}

impl Judge0 {
    fn new(state: &AppState) -> Arc<Judge0> {
        let engine = state.engine();
        let c = engine.config();
        let config = state.config.judge0.within(
            c.max_run_time.as_secs_f64(),
            c.max_memory_bytes / 1024,
            c.run_limits.file_size_bytes / 1024,
        );
        Arc::new(Judge0 {
            state: state.clone(),
            config,
            languages: Arc::new(languages::available(engine)),
            submissions: Mutex::default(),
        })
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.submissions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `submission` under `token`, forgetting its caller's oldest past the bounds.
    pub(crate) fn remember(&self, token: &str, submission: Submission) {
        let engine = self.state.engine().config();
        let max_count = engine.execution_records.max_per_caller + engine.max_queued_executions;
        let max_bytes = engine.execution_records.max_bytes_per_caller;
        let size = submission.size();
        let caller = submission.caller.clone();
        let mut store = self.store();
        let Store {
            by_token,
            per_caller,
        } = &mut *store;
        by_token.insert(token.to_string(), Arc::new(submission));
        let mine = per_caller.entry(caller).or_default();
        mine.order.push_back((token.to_string(), size));
        mine.bytes += size;
        while mine.order.len() > 1 && (mine.order.len() > max_count || mine.bytes > max_bytes) {
            let Some((old, bytes)) = mine.order.pop_front() else {
                break;
            };
            mine.bytes = mine.bytes.saturating_sub(bytes);
            by_token.remove(&old);
        }
    }

    /// The caller's submission `token`: another caller's is not there for it.
    pub(crate) fn submission(&self, caller: &Caller, token: &str) -> Option<Arc<Submission>> {
        self.store()
            .by_token
            .get(token)
            .filter(|s| s.caller == *caller)
            .cloned()
    }

    /// Forgets `token` (its run is gone from the engine).
    pub(crate) fn forget(&self, caller: &Caller, token: &str) {
        let mut store = self.store();
        if store
            .by_token
            .get(token)
            .is_some_and(|s| s.caller == *caller)
        {
            store.by_token.remove(token);
            if let Some(mine) = store.per_caller.get_mut(caller) {
                if let Some(at) = mine.order.iter().position(|(t, _)| t == token) {
                    if let Some((_, bytes)) = mine.order.remove(at) {
                        mine.bytes = mine.bytes.saturating_sub(bytes);
                    }
                }
                if mine.order.is_empty() {
                    store.per_caller.remove(caller);
                }
            }
        }
    }

    /// The caller a request speaks for: the token in `X-Auth-Token` or `Authorization: Bearer`
    /// (anonymous when auth is off), rate limited; else the 401 or 429 to answer.
    fn caller(&self, headers: &HeaderMap, route: &str) -> Result<Caller, Refusal> {
        let auth = &self.state.auth;
        let caller = if !auth.enabled() {
            Caller::anonymous()
        } else {
            let found = match headers.get(AUTH_HEADER) {
                Some(token) => {
                    let mut as_bearer = HeaderMap::new();
                    match token
                        .to_str()
                        .ok()
                        .and_then(|t| HeaderValue::from_str(&format!("Bearer {}", t.trim())).ok())
                    {
                        Some(value) => {
                            as_bearer.insert(header::AUTHORIZATION, value);
                            auth.authenticate(&as_bearer, None)
                        }
                        None => Err(codebeaker_protocol::jsonrpc::ErrorObject::unauthorized(
                            "the X-Auth-Token header is not valid text",
                        )),
                    }
                }
                None if headers.contains_key(header::AUTHORIZATION) => {
                    auth.authenticate(headers, None)
                }
                None => Err(codebeaker_protocol::jsonrpc::ErrorObject::unauthorized(
                    "missing token: send X-Auth-Token (or Authorization: Bearer) with a token of this server",
                )),
            };
            match found {
                Ok(caller) => caller,
                Err(e) => {
                    audit::unauthorized(route, None, &e);
                    return Err(error(StatusCode::UNAUTHORIZED, e.message));
                }
            }
        };
        if let Err(retry_after_ms) = self.state.limiter.check(&caller) {
            self.state.metrics.rate_limited();
            let e = RateLimiter::error(retry_after_ms);
            audit::refused(&caller, route, &e, audit::Subject::default());
            return Err(Refusal {
                retry_after: Some(retry_after_ms.div_ceil(1000).max(1)),
                ..error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("rate limit reached; retry in {retry_after_ms} ms"),
                )
            });
        }
        Ok(caller)
    }
}

/// Middleware: puts the request's [`Caller`] into its extensions, or answers 401 or 429.
async fn authenticate(
    State(door): State<Arc<Judge0>>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    match door.caller(request.headers(), &route) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Any other path under `/judge0`: Judge0's 404.
async fn not_found(request: Request) -> Refusal {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such Judge0 endpoint: {} {}; see docs/judge0.md",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Mounts the door under [`PREFIX`].
pub(crate) fn mount(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let door = Judge0::new(state);
    let routes = Router::new()
        .route("/submissions", post(api::create))
        .route(
            "/submissions/batch",
            post(api::batch_create).get(api::batch_show),
        )
        .route("/submissions/{token}", get(api::show))
        .route("/languages", get(info::languages))
        .route("/languages/all", get(info::languages))
        .route("/languages/{id}", get(info::language))
        .route("/statuses", get(info::statuses))
        .route("/config_info", get(info::config_info))
        .route("/about", get(info::about))
        .route("/version", get(info::version))
        .route("/system_info", get(info::system_info))
        .route("/workers", get(info::workers))
        .route_layer(from_fn_with_state(Arc::clone(&door), authenticate))
        .fallback(not_found)
        .with_state(door);
    router.nest(PREFIX, routes)
}
