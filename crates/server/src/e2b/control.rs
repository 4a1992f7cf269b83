//! The control plane: create, list, inspect, connect to, extend and kill sandboxes.
//!
//! Shapes follow E2B's OpenAPI file as today's SDKs read it: create answers 201 with
//! `sandboxID`, `templateID`, `clientID`, `envdVersion` and `envdAccessToken`; details and list
//! entries carry `startedAt`, `endAt`, `cpuCount`, `memoryMB`, `diskSizeMB`, `state` and
//! `envdVersion`; every error is `{"code": <status>, "message": ...}`. Statuses the SDKs retry
//! (429, 502, 503, 504) are only used for what a retry can cure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use codebeaker_engine::{Caller, SessionOptions};
use codebeaker_protocol::jsonrpc::{ErrorCode, ErrorObject};
use codebeaker_sandbox::MIB;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, E2b, Sandbox, CLIENT_ID, ENVD_VERSION};
use crate::audit;

/// A sandbox's lifetime when create does not say (E2B's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `DELETE` waits for the box to go before it answers all the same.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Entries of one `GET /v2/sandboxes` page when the request does not say.
const DEFAULT_PAGE: usize = 100;

type ApiResult = Result<Response, ApiError>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    /// Seconds the sandbox lives.
    timeout: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct TimeoutBody {
    /// Seconds from now.
    timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RefreshBody {
    /// Seconds from now.
    duration: Option<u64>,
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

fn decode_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        decode(body)
    }
}

/// An engine error as the control plane says it.
fn api_error(error: &ErrorObject) -> ApiError {
    let status = match ErrorCode::from_code(error.code) {
        Some(ErrorCode::LimitReached | ErrorCode::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
        Some(ErrorCode::SessionNotFound) => StatusCode::NOT_FOUND,
        Some(ErrorCode::Unauthorized) => StatusCode::UNAUTHORIZED,
        Some(ErrorCode::InternalError) | None => StatusCode::INTERNAL_SERVER_ERROR,
        Some(_) => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, error.message.clone())
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found"))
}

/// The 404 of a sandbox the caller has not (another caller's, a killed one, a made-up id),
/// written to the audit log as a JSON-RPC `session_not_found` refusal is.
fn refused_not_found(caller: &Caller, route: &str, id: &str) -> ApiError {
    let error = ErrorObject::session_not_found(id);
    let subject = audit::Subject {
        session_id: Some(id),
        command: None,
    };
    audit::refused(caller, route, &error, subject);
    not_found(id)
}

fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `POST /v2/sandboxes` and `POST /sandboxes`: a new session of the template's profile.
pub(crate) async fn create(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let route = "/sandboxes";
    let caller = e2b.api_caller(&headers, route)?;
    let request: NewSandbox = decode(&body)?;
    let Some(template) = e2b.templates.template(&request.template_id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "template '{}' not found; the templates of this server are: {}",
                request.template_id,
                e2b.templates.known().join(", ")
            ),
        ));
    };
    let state = &e2b.state;
    let sessions = &state.engine.config().sessions;
    if request.timeout == Some(0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "timeout must be at least 1 second",
        ));
    }
    let lifetime = request
        .timeout
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
        .min(sessions.max_lifetime_cap);
    let options = SessionOptions {
        language: template.language().to_string(),
        // The sandbox's own timeout ends it (see `E2b::reap`); the engine's bounds are the caps.
        idle_timeout: Some(sessions.max_idle_timeout),
        max_lifetime: Some(sessions.max_lifetime_cap),
        memory_limit_mb: template.memory_mb,
        cpu_shares: template.cpu_count.map(|n| u64::from(n) * 1024),
    };
    let opening = crate::sessions::Opening {
        route: Some(route),
        noun: "sandbox(es)",
        make_room: "kill one first",
    };
    let snapshot = crate::sessions::open_session(state, &caller, options, opening)
        .await
        .map_err(|error| api_error(&error))?;
    let now = SystemTime::now();
    let sandbox = Sandbox {
        id: snapshot.id.clone(),
        caller: caller.clone(),
        template: request.template_id,
        metadata: request.metadata.unwrap_or_default(),
        env_vars: request.env_vars.unwrap_or_default(),
        access_token: uuid::Uuid::new_v4().simple().to_string(),
        started_at: snapshot.created_at,
        end_at: now + lifetime,
        latest_end: snapshot.created_at + snapshot.max_lifetime,
        cpu_count: (snapshot.cpu_millis / 1000).max(1),
        memory_mb: snapshot.memory_limit_bytes / MIB,
    };
    // Seeded before the sandbox is handed out, so that no command sees the workspace without them.
    for (path, content) in &template.files {
        let seeded = super::files::write(&e2b, &sandbox, path, content.as_bytes()).await;
        if let Err(error) = seeded {
            e2b.close(&sandbox, "client").await;
            let why = match error {
                super::EnvdError::Gone(_) => "the sandbox's box ended".to_string(),
                super::EnvdError::Connect(error) => error.message,
            };
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "seeding {path} of template '{}' failed: {why}",
                    sandbox.template
                ),
            ));
        }
    }
    let answer = created_json(&sandbox);
    e2b.insert(sandbox);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// What create and connect answer with.
fn created_json(sandbox: &Sandbox) -> Value {
    json!({
        "sandboxID": sandbox.id,
        "templateID": sandbox.template,
        "alias": sandbox.template,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": sandbox.access_token,
        // The code interpreter SDK sends it (not the envd token) on `/contexts`.
        "trafficAccessToken": sandbox.access_token,
        "domain": null,
    })
}

/// A sandbox as `GET /sandboxes/{id}` and the lists show it.
fn detail_json(e2b: &E2b, sandbox: &Sandbox) -> Value {
    let disk_mb = e2b.state.engine.config().box_limits.workspace_bytes / MIB;
    json!({
        "sandboxID": sandbox.id,
        "templateID": sandbox.template,
        "alias": sandbox.template,
        "clientID": CLIENT_ID,
        "startedAt": timestamp(sandbox.started_at),
        "endAt": timestamp(sandbox.end_at),
        "cpuCount": sandbox.cpu_count,
        "memoryMB": sandbox.memory_mb,
        "diskSizeMB": disk_mb,
        "state": "running",
        "envdVersion": ENVD_VERSION,
        "metadata": sandbox.metadata,
    })
}

/// The caller's sandbox `id`, if its session still runs.
fn live_sandbox(e2b: &E2b, caller: &Caller, id: &str, route: &str) -> Result<Sandbox, ApiError> {
    let sandbox = e2b
        .sandbox(caller, id)
        .ok_or_else(|| refused_not_found(caller, route, id))?;
    let alive = e2b
        .state
        .engine
        .list_sessions(caller)
        .iter()
        .any(|s| s.id == sandbox.id);
    if !alive {
        e2b.forget(id);
        return Err(refused_not_found(caller, route, id));
    }
    Ok(sandbox)
}

/// `GET /sandboxes/{id}`.
pub(crate) async fn info(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = e2b.api_caller(&headers, "/sandboxes/{id}")?;
    let sandbox = live_sandbox(&e2b, &caller, &id, "/sandboxes/{id}")?;
    Ok(Json(detail_json(&e2b, &sandbox)).into_response())
}

/// The filters of a list request: `metadata` (`k=v&k2=v2`, URL-encoded as one value), `state`
/// (repeated or comma-separated), `limit` and `nextToken`.
#[derive(Debug, Default)]
struct ListQuery {
    metadata: Vec<(String, String)>,
    states: Vec<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

fn list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid query: {e}")))?;
    let mut query = ListQuery::default();
    for (key, value) in pairs {
        match key.as_str() {
            "metadata" => {
                let filters: Vec<(String, String)> =
                    serde_urlencoded::from_str(&value).map_err(|e| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            format!("invalid metadata filter: {e}"),
                        )
                    })?;
                query.metadata.extend(filters);
            }
            "state" => query
                .states
                .extend(value.split(',').map(|s| s.trim().to_string())),
            "limit" => {
                let limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        ApiError::new(StatusCode::BAD_REQUEST, "limit must be a positive number")
                    })?;
                query.limit = Some(limit);
            }
            "nextToken" => query.next_token = Some(value),
            _ => {}
        }
    }
    Ok(query)
}

/// The caller's running sandboxes that pass the filters.
fn listed(e2b: &E2b, caller: &Caller, query: &ListQuery) -> Vec<Sandbox> {
    if !query.states.is_empty() && !query.states.iter().any(|s| s == "running") {
        return Vec::new();
    }
    let alive: std::collections::HashSet<String> = e2b
        .state
        .engine
        .list_sessions(caller)
        .into_iter()
        .map(|s| s.id)
        .collect();
    e2b.sandboxes(caller)
        .into_iter()
        .filter(|s| alive.contains(&s.id))
        .filter(|s| {
            query
                .metadata
                .iter()
                .all(|(k, v)| s.metadata.get(k) == Some(v))
        })
        .collect()
}

/// `GET /sandboxes`: every running sandbox of the caller.
pub(crate) async fn list_v1(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let caller = e2b.api_caller(&headers, "/sandboxes")?;
    let query = list_query(raw.as_deref())?;
    let entries: Vec<Value> = listed(&e2b, &caller, &query)
        .iter()
        .map(|s| detail_json(&e2b, s))
        .collect();
    Ok(Json(entries).into_response())
}

/// `GET /v2/sandboxes`: one page; the next page's token is in `x-next-token`.
pub(crate) async fn list_v2(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let caller = e2b.api_caller(&headers, "/v2/sandboxes")?;
    let query = list_query(raw.as_deref())?;
    let all = listed(&e2b, &caller, &query);
    let start = match &query.next_token {
        None => 0,
        Some(token) => all.iter().position(|s| s.id == *token).unwrap_or(all.len()),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|s| detail_json(&e2b, s))
        .collect();
    let mut response = Json(page).into_response();
    if let Some(next) = all.get(start.saturating_add(limit)) {
        if let Ok(value) = HeaderValue::from_str(&next.id) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-next-token"), value);
        }
    }
    Ok(response)
}

/// `DELETE /sandboxes/{id}`: 204, or 404 when the caller has no such sandbox.
pub(crate) async fn kill(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = e2b.api_caller(&headers, "/sandboxes/{id}")?;
    let route = "/sandboxes/{id}";
    let sandbox = e2b
        .sandbox(&caller, &id)
        .ok_or_else(|| refused_not_found(&caller, route, &id))?;
    // A sandbox whose command is still running is gone at once and ends with that command.
    let closing = e2b.close_soon(sandbox, "client");
    if let Ok(Ok(false)) = tokio::time::timeout(KILL_WAIT, closing).await {
        return Err(refused_not_found(&caller, route, &id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The new end of a sandbox `seconds` from now, within the engine's maximum lifetime.
fn end_in(sandbox: &Sandbox, seconds: u64) -> SystemTime {
    SystemTime::now()
        .checked_add(Duration::from_secs(seconds))
        .map_or(sandbox.latest_end, |end| end.min(sandbox.latest_end))
}

/// `POST /sandboxes/{id}/timeout`: the sandbox now ends `timeout` seconds from now.
pub(crate) async fn set_timeout(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let caller = e2b.api_caller(&headers, "/sandboxes/{id}/timeout")?;
    let request: TimeoutBody = decode_or_default(&body)?;
    let seconds = request.timeout.unwrap_or(DEFAULT_TIMEOUT.as_secs());
    live_sandbox(&e2b, &caller, &id, "/sandboxes/{id}/timeout")?;
    if !e2b.update(&caller, &id, |s| s.end_at = end_in(s, seconds)) {
        return Err(not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /sandboxes/{id}/refreshes`: the sandbox lives at least `duration` seconds more.
pub(crate) async fn refresh(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let caller = e2b.api_caller(&headers, "/sandboxes/{id}/refreshes")?;
    let request: RefreshBody = decode_or_default(&body)?;
    let seconds = request.duration.unwrap_or(DEFAULT_TIMEOUT.as_secs());
    live_sandbox(&e2b, &caller, &id, "/sandboxes/{id}/refreshes")?;
    e2b.update(&caller, &id, |s| {
        s.end_at = s.end_at.max(end_in(s, seconds))
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v2/sandboxes/{id}/connect`: the sandbox's create answer again; it lives at least
/// `timeout` seconds more.
pub(crate) async fn connect(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let caller = e2b.api_caller(&headers, "/sandboxes/{id}/connect")?;
    let request: TimeoutBody = decode_or_default(&body)?;
    let mut sandbox = live_sandbox(&e2b, &caller, &id, "/sandboxes/{id}/connect")?;
    if let Some(seconds) = request.timeout {
        let end = sandbox.end_at.max(end_in(&sandbox, seconds));
        sandbox.end_at = end;
        e2b.update(&caller, &id, |s| s.end_at = end);
    }
    Ok((StatusCode::OK, Json(created_json(&sandbox))).into_response())
}

/// `POST /sandboxes/{id}/pause`: not possible here (a box's memory is not saved).
pub(crate) async fn pause(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = e2b.api_caller(&headers, "/sandboxes/{id}/pause")?;
    live_sandbox(&e2b, &caller, &id, "/sandboxes/{id}/pause")?;
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "pausing a sandbox is not supported by this server: a box's memory cannot be saved; kill it and create a new one",
    ))
}

/// Any other control-plane call (metrics, logs, snapshots, forks, template builds, ...): 501,
/// in the shape the SDKs read, naming the call.
pub(crate) async fn unsupported(
    State(e2b): State<Arc<E2b>>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiResult {
    e2b.api_caller(&headers, "/sandboxes")?;
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{method} {} is not supported by this server (see docs/e2b.md for what is)",
            uri.path()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_read_metadata_states_and_pages() {
        let query = list_query(Some(
            "metadata=user%3Dalice%26app%3Dprod&state=running,paused&limit=2&nextToken=abc",
        ))
        .expect("valid");
        assert_eq!(
            query.metadata,
            [
                ("user".into(), "alice".into()),
                ("app".into(), "prod".into())
            ]
        );
        assert_eq!(query.states, ["running", "paused"]);
        assert_eq!(query.limit, Some(2));
        assert_eq!(query.next_token.as_deref(), Some("abc"));
        assert!(list_query(Some("limit=0")).is_err());
        assert!(list_query(None).expect("empty").metadata.is_empty());
    }

    #[test]
    fn timeouts_end_within_the_longest_lifetime_whatever_is_asked() {
        let now = SystemTime::now();
        let sandbox = Sandbox {
            id: "s".into(),
            caller: Caller::anonymous(),
            template: "base".into(),
            metadata: BTreeMap::new(),
            env_vars: BTreeMap::new(),
            access_token: "t".into(),
            started_at: now,
            end_at: now,
            latest_end: now + Duration::from_secs(3600),
            cpu_count: 1,
            memory_mb: 512,
        };
        assert_eq!(end_in(&sandbox, u64::MAX), sandbox.latest_end);
        assert_eq!(end_in(&sandbox, 7200), sandbox.latest_end);
        let soon = end_in(&sandbox, 60);
        assert!(soon < sandbox.latest_end && soon >= now + Duration::from_secs(59));
    }

    #[test]
    fn engine_errors_keep_retryable_statuses_for_transient_ones() {
        let limit = api_error(&ErrorObject::limit_reached("full"));
        assert_eq!(limit.status, StatusCode::TOO_MANY_REQUESTS);
        let bad = api_error(&ErrorObject::invalid_params("memory"));
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    }
}
