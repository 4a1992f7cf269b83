//! The client's error type.

use std::time::Duration;

use codebeaker_protocol::jsonrpc::{ErrorCode, ErrorObject};

/// What can go wrong when talking to CodeBeaker.
///
/// A program that fails (exits non-zero, does not compile, runs out of time) is *not* an error:
/// it is a result with `success: false`. These are failures to get an answer at all, or answers
/// that say the request itself was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket URL cannot be used.
    #[error("invalid WebSocket URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The first connection attempt of [`crate::Client::connect`] failed.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The server's URL.
        url: String,
        /// Why the attempt failed.
        reason: String,
    },
    /// No connection could be (re)established within the time a request may wait for one.
    #[error("not connected to {url} (gave up waiting after {waited:?}; last error: {last_error})")]
    Unavailable {
        /// The server's URL.
        url: String,
        /// How long the request waited for a connection.
        waited: Duration,
        /// Why the last connection attempt failed.
        last_error: String,
    },
    /// The connection dropped while the request was in flight. The request may or may not have
    /// run on the server; the client reconnects by itself, so a later request can succeed.
    #[error("connection to {url} lost while `{method}` was in flight (it may or may not have run); reconnecting")]
    ConnectionLost {
        /// The method of the request that was in flight.
        method: String,
        /// The server's URL.
        url: String,
    },
    /// No response arrived within the request's timeout.
    #[error("`{method}` got no response within {timeout:?}")]
    Timeout {
        /// The method of the request.
        method: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The server (or the embedded engine) answered with a JSON-RPC error.
    #[error("`{method}` failed: {error}")]
    Rpc {
        /// The method of the request.
        method: String,
        /// The error object, with its code.
        error: ErrorObject,
    },
    /// The server's answer does not have the shape the protocol promises.
    #[error("unexpected response to `{method}`: {reason}")]
    InvalidResponse {
        /// The method of the request.
        method: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The language is neither in the language mapping nor offered by the server. The message
    /// contains `Unsupported language`, which existing callers look for.
    #[error("Unsupported language: {language} ({detail})")]
    UnsupportedLanguage {
        /// The language as asked for.
        language: String,
        /// What is offered instead, or why it cannot run.
        detail: String,
    },
    /// No pooled session could be leased within the pool's acquire timeout.
    #[error("no session could be leased within {waited:?}: {detail}")]
    PoolTimeout {
        /// How long the caller waited.
        waited: Duration,
        /// The pool's state at that moment.
        detail: String,
    },
    /// The pool was closed.
    #[error("the session pool is closed")]
    PoolClosed,
    /// The client was shut down.
    #[error("the client is closed")]
    Closed,
    /// A setting is out of range; the message names it.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The JSON-RPC error code, when the server answered with an error.
    pub fn rpc_code(&self) -> Option<i64> {
        match self {
            ClientError::Rpc { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// True when the server said the session does not exist (closed, reaped, or the server
    /// restarted).
    pub fn is_session_not_found(&self) -> bool {
        self.rpc_code() == Some(ErrorCode::SessionNotFound.code())
    }

    /// True when the failure is about the link to the server rather than the request itself:
    /// lost or unavailable connections and timeouts. Such a request may succeed when retried.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            ClientError::ConnectionLost { .. }
                | ClientError::Unavailable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Closed
        )
    }

    /// True when the request was refused because of what it asked (bad params, unsupported
    /// language): retrying the same request cannot help, and the session it ran in is intact.
    pub fn is_request_error(&self) -> bool {
        match self {
            ClientError::UnsupportedLanguage { .. } => true,
            ClientError::Rpc { error, .. } => matches!(
                error.error_code(),
                Some(
                    ErrorCode::InvalidParams
                        | ErrorCode::UnsupportedLanguage
                        | ErrorCode::MethodNotFound
                )
            ),
            _ => false,
        }
    }

    pub(crate) fn rpc(method: &str, error: ErrorObject) -> Self {
        ClientError::Rpc {
            method: method.to_string(),
            error,
        }
    }

    pub(crate) fn invalid_response(method: &str, reason: impl std::fmt::Display) -> Self {
        ClientError::InvalidResponse {
            method: method.to_string(),
            reason: reason.to_string(),
        }
    }
}
