//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum LanguageError {
    /// The requested name is neither a language nor an alias. The message keeps the
    /// `Unsupported language` wording that existing CodeBeaker clients look for.
    #[error("Unsupported language '{name}'. Known languages: {known}")]
    UnsupportedLanguage {
        /// The name as the caller gave it.
        name: String,
        /// Comma-separated canonical names of every enabled language.
        known: String,
    },

    /// The built-in registry or an override is malformed. `location` names the source (and,
    /// where known, the line) and the key, e.g. `overrides: languages.foo.toolchains[0].run`.
    #[error("invalid language registry ({location}): {message}")]
    Config {
        /// Source name plus key path of the offending entry.
        location: String,
        /// What is wrong with it.
        message: String,
    },

    /// No toolchain for the language was found on this machine (or its version probe failed).
    /// `reason` names the package to install, e.g.
    /// `go is not installed: install the Debian package golang-go`.
    #[error("{reason}")]
    ToolchainUnavailable {
        /// Canonical language name.
        language: String,
        /// Human-readable reason, naming the package to install.
        reason: String,
    },

    /// The toolchain handed to [`crate::Language::prepare`] belongs to another language.
    #[error("toolchain for '{toolchain}' cannot prepare code for '{language}'")]
    ToolchainMismatch {
        /// The language asked to prepare.
        language: String,
        /// The language the toolchain was discovered for.
        toolchain: String,
    },

    /// The language runs whole programs only.
    #[error("snippet mode is not supported for {language}; use script mode")]
    SnippetUnsupported {
        /// Canonical language name.
        language: String,
    },

    /// A key handed to the compile cache is not a lowercase hex SHA-256.
    #[error("invalid compile cache key '{0}': expected 64 lowercase hex digits")]
    InvalidCacheKey(String),

    /// A file name handed to the compile cache would leave its entry directory.
    #[error("invalid artifact file name '{0}': must be a relative path without '..'")]
    InvalidFileName(String),

    /// A file given to go beside a program's main file ([`crate::Plan::add_files`]) cannot be
    /// written there; `reason` says why.
    #[error("file {name:?} cannot be written beside the program: {reason}")]
    InvalidSourceFile {
        /// The name as the caller gave it.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An I/O operation on the compile cache failed.
    #[error("compile cache: {action} {path}: {source}")]
    Cache {
        /// What was being done, e.g. `create directory`.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl LanguageError {
    pub(crate) fn config(location: impl Into<String>, message: impl Into<String>) -> Self {
        LanguageError::Config {
            location: location.into(),
            message: message.into(),
        }
    }

    pub(crate) fn cache(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LanguageError::Cache {
            action,
            path: path.into(),
            source,
        }
    }
}
