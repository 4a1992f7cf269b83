//! The harness's one error type: what stopped a load run or a benchmark before it could report.
//!
//! Failures the harness measures (a wrong result, a protocol error, a leak) are not errors: they
//! go into the report and its exit code. A [`HarnessError`] means there is no report: a flag the
//! harness cannot use, a server or host it cannot drive, or a step of a benchmark that failed.

use std::fmt::Display;

use codebeaker_client::ClientError;
use codebeaker_engine::EngineError;
use codebeaker_languages::LanguageError;
use codebeaker_sandbox::cgroup::CgroupError;
use codebeaker_sandbox::SandboxError;
use codebeaker_server::ServerError;

/// Why a load run or a benchmark stopped without a report.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A flag's value the harness cannot use; the message names the flag.
    #[error("{0}")]
    Usage(String),
    /// The server under load cannot be driven as asked: not on loopback, not found, or without
    /// a language the run needs.
    #[error("{0}")]
    Target(String),
    /// A benchmarked step did not do what it must (a run that failed, a wrong answer).
    #[error("{0}")]
    Step(String),
    /// What the harness was doing when `source` failed.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<HarnessError>,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Language(#[from] LanguageError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The census of what boxes leave on the host could not be taken.
    #[error(transparent)]
    Census(#[from] CgroupError),
    #[error(transparent)]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Something the harness waits for did not come in time.
    #[error(transparent)]
    Timeout(#[from] tokio::time::error::Elapsed),
    /// A task of the harness panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

impl HarnessError {
    /// The error and its causes, outermost first, joined by `: ` (as `{:#}` prints an
    /// `anyhow::Error`): for messages that end up in a report rather than in an exit.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }
}

/// `.context(...)` for results whose error converts into a [`HarnessError`]: the error is kept
/// as the source of one that says what was being done.
pub trait Context<T> {
    /// Wraps the error with `what`.
    fn context(self, what: impl Display) -> Result<T, HarnessError>;

    /// Wraps the error with a message made only when there is an error.
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T, HarnessError>;
}

impl<T, E: Into<HarnessError>> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> Result<T, HarnessError> {
        self.with_context(|| what)
    }

    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T, HarnessError> {
        self.map_err(|e| HarnessError::Context {
            what: what().to_string(),
            source: Box::new(e.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_cause_as_the_source() {
        let failed: Result<(), std::io::Error> = Err(std::io::Error::other("no such thing"));
        let e = failed.context("starting python3").unwrap_err();
        assert_eq!(e.to_string(), "starting python3");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("no such thing"));
        assert_eq!(e.chain(), "starting python3: no such thing");
    }
}
