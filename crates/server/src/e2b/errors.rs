//! The E2B door's errors, in the two shapes its clients read: the control plane's and `/files`'
//! `{"code": <status>, "message": ...}`, and envd's Connect errors; and the 502 "was not found"
//! that tells the SDKs a sandbox is gone.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::connect::{Code, ConnectError};

/// A JSON-RPC error of the engine as a Connect error.
pub(crate) fn rpc_error(error: &codebeaker_protocol::jsonrpc::ErrorObject) -> ConnectError {
    use codebeaker_protocol::jsonrpc::ErrorCode;
    let code = match ErrorCode::from_code(error.code) {
        Some(ErrorCode::InvalidParams | ErrorCode::InvalidRequest | ErrorCode::ParseError) => {
            Code::InvalidArgument
        }
        Some(ErrorCode::UnsupportedLanguage) => Code::FailedPrecondition,
        Some(ErrorCode::SessionNotFound) => Code::NotFound,
        Some(ErrorCode::LimitReached | ErrorCode::RateLimited) => Code::ResourceExhausted,
        Some(ErrorCode::Unauthorized) => Code::Unauthenticated,
        _ => Code::Internal,
    };
    ConnectError::new(code, error.message.clone())
}

/// A command-level failure of a file command (the box's words) as a Connect error.
pub(crate) fn refusal(message: &str) -> ConnectError {
    let lower = message.to_ascii_lowercase();
    let code = if lower.contains("no such file or directory") {
        Code::NotFound
    } else if lower.contains("already exists") {
        Code::AlreadyExists
    } else if lower.contains("permission denied") {
        Code::PermissionDenied
    } else {
        Code::InvalidArgument
    };
    ConnectError::new(code, message)
}

/// A control-plane error: `{"code": <status>, "message": ...}` (the only shape the SDKs read).
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        plain_error(self.status, &self.message)
    }
}

pub(crate) fn plain_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "code": status.as_u16(), "message": message }).to_string(),
    )
        .into_response()
}

/// Why an envd request failed.
#[derive(Debug)]
pub(crate) enum EnvdError {
    /// The sandbox is unknown, killed, or not the credentials' owner's.
    Gone(String),
    /// Anything else, as Connect says it.
    Connect(ConnectError),
}

impl From<ConnectError> for EnvdError {
    fn from(error: ConnectError) -> Self {
        EnvdError::Connect(error)
    }
}

/// The 502 that tells the SDKs a sandbox is gone (they look for "was not found").
pub(crate) fn gone(id: &str) -> Response {
    plain_error(
        StatusCode::BAD_GATEWAY,
        &format!("The sandbox {id} was not found"),
    )
}

impl IntoResponse for EnvdError {
    fn into_response(self) -> Response {
        match self {
            EnvdError::Gone(id) => gone(&id),
            EnvdError::Connect(error) => error.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_connect_codes() {
        assert_eq!(
            refusal("a.txt: no such file or directory").code,
            Code::NotFound
        );
        assert_eq!(refusal("d: already exists").code, Code::AlreadyExists);
        assert_eq!(refusal("x: permission denied").code, Code::PermissionDenied);
        assert_eq!(
            refusal("path \"/etc\" is outside the workspace").code,
            Code::InvalidArgument
        );
    }
}
