//! The Connect protocol as envd speaks it: JSON codec, no compression, HTTP/1.1.
//!
//! Unary calls are a plain JSON body both ways (`application/json`); errors are an HTTP status
//! with `{"code": "<connect code>", "message": ...}`. Server-streaming calls
//! (`application/connect+json`) take one envelope and answer with envelopes: one flag byte, a
//! 4-byte big-endian length, the JSON message; the last one has flag [`END_STREAM`] and carries
//! `{}` or `{"error": {...}}`.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// The flag of the end-of-stream envelope.
pub(crate) const END_STREAM: u8 = 0x02;
/// The flag of a compressed envelope (refused: this server negotiates no compression).
const COMPRESSED: u8 = 0x01;
/// The content type of a server stream's request and response.
pub(crate) const STREAM_CONTENT_TYPE: &str = "application/connect+json";

/// A Connect error code (the subset envd answers with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (the Connect protocol's table).
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A Connect error: what a unary call answers with, or what ends a stream.
#[derive(Debug, Clone)]
pub(crate) struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ConnectError::new(Code::InvalidArgument, message)
    }

    /// What the engine cannot do yet, said plainly.
    pub(crate) fn unimplemented(what: &str, missing: &str) -> Self {
        ConnectError::new(
            Code::Unimplemented,
            format!("{what} is not supported by this server: {missing}"),
        )
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({ "code": self.code.as_str(), "message": self.message })
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        (
            self.code.status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json().to_string(),
        )
            .into_response()
    }
}

/// A unary answer: 200 with the message as JSON.
pub(crate) fn unary(message: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        message.to_string(),
    )
        .into_response()
}

/// Decodes a unary request body (an empty body is the empty message).
pub(crate) fn decode_unary<T: DeserializeOwned>(body: &[u8]) -> Result<T, ConnectError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ConnectError::invalid(format!(
            "the request is not valid JSON for this method: {e}"
        ))
    })
}

/// Decodes the one envelope of a server-streaming request.
pub(crate) fn decode_stream_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, ConnectError> {
    let Some((&flags, rest)) = body.split_first() else {
        return decode_unary(b"{}");
    };
    if flags & COMPRESSED != 0 {
        return Err(ConnectError::invalid(
            "compressed envelopes are not accepted; send the request uncompressed",
        ));
    }
    let Some(length) = rest.get(..4) else {
        return Err(ConnectError::invalid("the request envelope is cut short"));
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    let message = rest
        .get(4..4usize.saturating_add(length))
        .ok_or_else(|| ConnectError::invalid("the request envelope is cut short"))?;
    decode_unary(message)
}

/// One envelope of a stream.
pub(crate) fn envelope(flags: u8, message: &Value) -> Bytes {
    let json = message.to_string().into_bytes();
    let length = u32::try_from(json.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(5 + json.len());
    out.push(flags);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&json);
    Bytes::from(out)
}

/// The end-of-stream envelope: `{}`, or the error the stream ends with.
pub(crate) fn end_of_stream(error: Option<&ConnectError>) -> Bytes {
    let message = match error {
        None => json!({}),
        Some(error) => json!({ "error": error.to_json() }),
    };
    envelope(END_STREAM, &message)
}

/// A whole stream that is only an error (answered with status 200, as Connect streams are).
pub(crate) fn stream_error(error: &ConnectError) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)],
        end_of_stream(Some(error)),
    )
        .into_response()
}

/// `Connect-Timeout-Ms`, when the client sent one (zero or garbage: none).
pub(crate) fn timeout_ms(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let message = json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi"]}});
        let bytes = envelope(0, &message);
        assert_eq!(bytes[0], 0);
        assert_eq!(
            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize,
            bytes.len() - 5
        );
        let back: Value = decode_stream_request(&bytes).expect("decodes");
        assert_eq!(back, message);
    }

    #[test]
    fn cut_and_compressed_envelopes_are_refused() {
        let bytes = envelope(0, &json!({"a": 1}));
        let error = decode_stream_request::<Value>(&bytes[..bytes.len() - 1]).expect_err("cut");
        assert_eq!(error.code, Code::InvalidArgument);
        let mut compressed = bytes.to_vec();
        compressed[0] = COMPRESSED;
        assert!(decode_stream_request::<Value>(&compressed).is_err());
        assert!(decode_stream_request::<Value>(&[0, 0]).is_err());
    }

    #[test]
    fn the_end_of_stream_carries_the_error() {
        let end = end_of_stream(Some(&ConnectError::new(Code::NotFound, "gone")));
        assert_eq!(end[0], END_STREAM);
        let body: Value = serde_json::from_slice(&end[5..]).expect("json");
        assert_eq!(
            body,
            json!({"error": {"code": "not_found", "message": "gone"}})
        );
        assert_eq!(&end_of_stream(None)[5..], b"{}");
    }
}
