//! The Piston v2 front door: Piston's clients (editor plugins, chat bots, teaching sites) run
//! unchanged against this server by changing their base URL to `http://HOST:PORT/api/v2/` (or
//! the hosted service's `/api/v2/piston/`).
//!
//! | route | what |
//! |---|---|
//! | `GET runtimes` | the languages found on this host, with SemVer versions and Piston's aliases ([`runtimes`]) |
//! | `POST execute` | one program, compiled and run ([`execute`]) |
//! | `GET connect` | the same, interactively over a WebSocket ([`connect`]) |
//! | `GET`/`POST`/`DELETE packages` | 403: toolchains come from the host, not from Piston's packages |
//!
//! Each route answers with and without a trailing slash, under both prefixes; anything else
//! under `/api/v2/` is Piston's 404 `{"message":"Not Found"}`. Errors are Piston's
//! `{"message": ...}` bodies. A request's body is read as JSON whatever its content type says
//! (a published client sends `text/plain`).
//!
//! Like the other doors it is a translation: a request is checked ([`job`]) and becomes one
//! one-shot run of the engine (its queue, limits and records), with the server's auth (the
//! `Authorization` header: a bare token, as Piston's clients send it, or `Bearer <token>`),
//! rate limits, metrics and audit log.

mod connect;
mod execute;
mod job;
mod runtimes;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::{Json, Router};
use codebeaker_engine::{Caller, EngineError};
use codebeaker_protocol::jsonrpc::{ErrorCode, ErrorObject};

use crate::audit;
use crate::rate_limit::RateLimiter;
use crate::state::AppState;

/// The two prefixes Piston's clients use: a self-hosted Piston's, and the hosted service's.
const PREFIXES: [&str; 2] = ["/api/v2", "/api/v2/piston"];

/// What the package endpoints answer.
const NO_PACKAGES: &str = "CodeBeaker does not install Piston packages: the languages it runs \
     are the toolchains installed on this host, found when the server starts (GET \
     /api/v2/runtimes lists them); to add one, install it with the host's package manager (for \
     example `apt-get install golang-go`) and restart the server";

/// A refusal in Piston's shape: an HTTP status and `{"message": ...}`.
#[derive(Debug)]
pub(crate) struct PistonError {
    pub status: StatusCode,
    pub message: String,
    /// For 429: when to retry, in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl PistonError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PistonError {
            status,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// A 400: what was wrong with the request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        PistonError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for PistonError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(ms) = self.retry_after_ms {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
        }
        response
    }
}

/// The Piston error for an engine error that refused a run, written to the audit log when it is
/// a refusal the log records.
pub(crate) fn engine_refusal(caller: &Caller, route: &str, error: EngineError) -> PistonError {
    let error = crate::error::engine_error(error);
    let status = match ErrorCode::from_code(error.code) {
        Some(ErrorCode::LimitReached | ErrorCode::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
        Some(
            ErrorCode::InvalidParams
            | ErrorCode::InvalidRequest
            | ErrorCode::ParseError
            | ErrorCode::UnsupportedLanguage,
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    audit::refused(caller, route, &error, audit::Subject::default());
    PistonError::new(status, error.message)
}

/// The caller a Piston request speaks for, rate limited like every other request of it:
/// anonymous when auth is off, else the owner of the token in `Authorization` (bare, as Piston's
/// clients send their key, or as `Bearer <token>`).
pub(crate) fn caller(
    state: &AppState,
    headers: &HeaderMap,
    route: &str,
) -> Result<Caller, PistonError> {
    let caller = key_caller(state, headers).map_err(|error| {
        audit::unauthorized(route, None, &error);
        PistonError::new(StatusCode::UNAUTHORIZED, error.message)
    })?;
    if let Err(retry_after_ms) = state.limiter.check(&caller) {
        state.metrics.rate_limited();
        let error = RateLimiter::error(retry_after_ms);
        audit::refused(&caller, route, &error, audit::Subject::default());
        return Err(PistonError {
            retry_after_ms: Some(retry_after_ms),
            ..PistonError::new(StatusCode::TOO_MANY_REQUESTS, error.message)
        });
    }
    Ok(caller)
}

fn key_caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ErrorObject> {
    if !state.auth.enabled() {
        return Ok(Caller::anonymous());
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ErrorObject::unauthorized(
            "missing API key: send `Authorization: <token>` with a token of this server (the \
             api_key / key of Piston's clients)",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| ErrorObject::unauthorized("the Authorization header is not valid text"))?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token,
        _ => value,
    };
    state.auth.authenticate_token(token)
}

/// Piston's answer to any path under `/api/v2/` it does not know, and to a known path asked with
/// a method it does not take.
async fn not_found() -> PistonError {
    PistonError::new(StatusCode::NOT_FOUND, "Not Found")
}

async fn packages() -> PistonError {
    PistonError::new(StatusCode::FORBIDDEN, NO_PACKAGES)
}

/// `route` at `path` under both prefixes, with and without a trailing slash; other methods are
/// Piston's 404.
fn everywhere(
    mut router: Router<AppState>,
    path: &str,
    route: MethodRouter<AppState>,
) -> Router<AppState> {
    let route = route.fallback(not_found);
    for prefix in PREFIXES {
        router = router
            .route(&format!("{prefix}/{path}"), route.clone())
            .route(&format!("{prefix}/{path}/"), route.clone());
    }
    router
}

/// Mounts the door on the server's router.
pub(crate) fn mount(router: Router<AppState>) -> Router<AppState> {
    let mut router = everywhere(router, "runtimes", get(runtimes::list));
    router = everywhere(router, "execute", post(execute::execute));
    router = everywhere(router, "connect", get(connect::upgrade));
    router = everywhere(
        router,
        "packages",
        get(packages).post(packages).delete(packages),
    );
    for prefix in PREFIXES {
        router = router.route(&format!("{prefix}/packages/{{*rest}}"), any(packages));
    }
    router
        .route("/api/v2", any(not_found))
        .route("/api/v2/", any(not_found))
        .route("/api/v2/{*rest}", any(not_found))
}
