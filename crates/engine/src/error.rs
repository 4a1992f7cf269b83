//! The engine's error type. Each variant maps to one JSON-RPC error code in the server.

use codebeaker_languages::LanguageError;
use codebeaker_sandbox::SandboxError;

/// What can go wrong when asking the engine to do something. A program that fails is not an
/// error: it is an [`crate::Execution`] with a status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The language is not in the registry. The message keeps the `Unsupported language` wording
    /// clients look for.
    #[error("{0}")]
    UnsupportedLanguage(String),
    /// The language is known but cannot run here (toolchain missing, snippet mode unsupported).
    #[error("{0}")]
    LanguageUnavailable(String),
    /// The request itself is malformed; the message says which field and why.
    #[error("{0}")]
    InvalidInput(String),
    /// A limit the request asked for is outside what this engine allows: `field` is the
    /// request's name for it, the message gives the valid range.
    #[error("{message}")]
    OutOfRange {
        field: &'static str,
        message: String,
    },
    /// No such session, or not one this caller may see.
    #[error("session {0} not found")]
    SessionNotFound(String),
    /// A command found the session's box dead (its init exited or was killed, or it stopped
    /// answering): the session was closed and its box destroyed. The protocol's "not found" code.
    #[error("session {id} is closed: its box died ({cause}); create a new session")]
    SessionClosed { id: String, cause: String },
    /// No such one-shot execution (or not this caller's, or forgotten); the message says which.
    #[error("{0}")]
    NotFound(String),
    /// A bound was reached (sessions, queued work); retry later.
    #[error("{0}")]
    LimitReached(String),
    /// The sandbox failed (not the program in it).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// Something inside CodeBeaker failed.
    #[error("{0}")]
    Internal(String),
}

impl From<LanguageError> for EngineError {
    fn from(e: LanguageError) -> Self {
        match e {
            LanguageError::UnsupportedLanguage { .. } => {
                EngineError::UnsupportedLanguage(e.to_string())
            }
            LanguageError::ToolchainUnavailable { .. }
            | LanguageError::SnippetUnsupported { .. } => {
                EngineError::LanguageUnavailable(e.to_string())
            }
            LanguageError::InvalidSourceFile { .. } => EngineError::InvalidInput(e.to_string()),
            other => EngineError::Internal(other.to_string()),
        }
    }
}
