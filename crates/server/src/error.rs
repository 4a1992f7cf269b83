//! The server's own error type, and how engine errors become JSON-RPC errors and HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use codebeaker_engine::EngineError;
use codebeaker_protocol::jsonrpc::{ErrorCode, ErrorObject};

/// What can stop the server from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting is out of range; the message names it.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The metrics recorder could not be built.
    #[error("setting up metrics: {0}")]
    Metrics(String),
}

/// Turns an engine error into the JSON-RPC error a client sees. Internal failures get an opaque
/// error id; the real error is logged with that id and never sent.
pub(crate) fn engine_error(error: EngineError) -> ErrorObject {
    codebeaker_engine::wire::error_object(error, |e| internal_error(e))
}

/// Logs `error` at error level under a fresh id and returns the `-32603` error carrying that id.
pub(crate) fn internal_error(error: &dyn std::fmt::Display) -> ErrorObject {
    let error_id = uuid::Uuid::new_v4().to_string();
    tracing::error!(error_id = %error_id, error = %error, "internal error");
    ErrorObject::internal(error_id)
}

/// The HTTP status that goes with a JSON-RPC error code on the REST endpoints.
pub(crate) fn http_status(code: i64) -> StatusCode {
    match ErrorCode::from_code(code) {
        Some(
            ErrorCode::ParseError
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidParams
            | ErrorCode::UnsupportedLanguage,
        ) => StatusCode::BAD_REQUEST,
        Some(ErrorCode::MethodNotFound | ErrorCode::SessionNotFound) => StatusCode::NOT_FOUND,
        Some(ErrorCode::Unauthorized) => StatusCode::UNAUTHORIZED,
        Some(ErrorCode::LimitReached | ErrorCode::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
        Some(ErrorCode::InternalError) | None => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON-RPC code of a REST error response, in the response's extensions (for metrics).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCodeTag(pub i64);

/// A REST error: `{"error":{"code","message","data"?}}` with an HTTP status.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub status: StatusCode,
    pub error: ErrorObject,
}

impl HttpError {
    /// The error with the status its code implies.
    pub fn new(error: ErrorObject) -> Self {
        HttpError {
            status: http_status(error.code),
            error,
        }
    }

    /// The error with a chosen status.
    pub fn with_status(status: StatusCode, error: ErrorObject) -> Self {
        HttpError { status, error }
    }
}

impl From<ErrorObject> for HttpError {
    fn from(error: ErrorObject) -> Self {
        HttpError::new(error)
    }
}

impl From<EngineError> for HttpError {
    fn from(error: EngineError) -> Self {
        HttpError::new(engine_error(error))
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let retry_after_ms = self
            .error
            .data
            .as_ref()
            .and_then(|d| d.get("retryAfterMs"))
            .and_then(|v| v.as_u64());
        let code = self.error.code;
        let body = serde_json::json!({ "error": self.error });
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCodeTag(code));
        let headers = response.headers_mut();
        if let Some(ms) = retry_after_ms {
            // Retry-After is whole seconds; round up so that a client that obeys it succeeds.
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"codebeaker\""),
            );
        }
        response
    }
}
