//! [`CodeBeakerOptions`]: the original .NET CodeBeaker's `CodeBeakerOptions`, with the same names and defaults, from
//! code or from a TOML or JSON file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{Backoff, ClientConfig};
use crate::pool::{PoolConfig, SessionSettings};
use crate::ClientError;

/// The original .NET CodeBeaker's default endpoint.
pub const DEFAULT_WEBSOCKET_URL: &str = "ws://localhost:5000/ws/jsonrpc";

/// Everything the runtime service can be told. The first ten fields are the original .NET CodeBeaker's
/// `CodeBeakerOptions`, with its defaults; the rest are ours.
///
/// In a file, keys are snake_case (`session_pool_size`); the original .NET CodeBeaker's PascalCase
/// (`SessionPoolSize`) and camelCase are accepted too, and a JSON file may wrap the options in a
/// `"CodeBeaker"` object as the original .NET CodeBeaker's `appsettings.CodeBeaker.json` does. Unknown keys are an
/// error that names them.
///
/// ```
/// use codebeaker_client::CodeBeakerOptions;
///
/// let defaults = CodeBeakerOptions::default();
/// assert_eq!(defaults.websocket_url, "ws://localhost:5000/ws/jsonrpc");
/// assert_eq!(defaults.session_pool_size, 10);
///
/// let options = CodeBeakerOptions::from_json_str(r#"{"CodeBeaker": {"WebSocketUrl": "ws://10.0.0.5:5000/ws/jsonrpc", "SessionPoolSize": 4}}"#).unwrap();
/// assert_eq!(options.session_pool_size, 4);
/// assert_eq!(options.default_timeout_ms, 30000);
///
/// let toml = CodeBeakerOptions::from_toml_str("session_pool_size = 2\nenable_auto_cleanup = false\n").unwrap();
/// assert!(!toml.enable_auto_cleanup);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeBeakerOptions {
    /// The server's endpoint (`ws://localhost:5000/ws/jsonrpc`).
    #[serde(alias = "WebSocketUrl", alias = "webSocketUrl", alias = "websocketUrl")]
    pub websocket_url: String,
    /// Sessions in the pool at most, every language together (10).
    #[serde(alias = "SessionPoolSize", alias = "sessionPoolSize")]
    pub session_pool_size: usize,
    /// An idle session is closed after this many minutes (30).
    #[serde(
        alias = "SessionIdleTimeoutMinutes",
        alias = "sessionIdleTimeoutMinutes"
    )]
    pub session_idle_timeout_minutes: u64,
    /// A session is closed this many minutes after creation (120).
    #[serde(
        alias = "SessionMaxLifetimeMinutes",
        alias = "sessionMaxLifetimeMinutes"
    )]
    pub session_max_lifetime_minutes: u64,
    /// Memory limit of each session's box, in MB (512).
    #[serde(
        alias = "MemoryLimitMB",
        alias = "memoryLimitMB",
        alias = "memoryLimitMb"
    )]
    pub memory_limit_mb: u64,
    /// CPU weight of each session's box, 1024 = one core (1024).
    #[serde(alias = "CpuShares", alias = "cpuShares")]
    pub cpu_shares: u64,
    /// Time limit of a run when the caller gives none, in milliseconds (30000).
    #[serde(alias = "DefaultTimeoutMs", alias = "defaultTimeoutMs")]
    pub default_timeout_ms: u64,
    /// Run the pool's cleanup task (true).
    #[serde(alias = "EnableAutoCleanup", alias = "enableAutoCleanup")]
    pub enable_auto_cleanup: bool,
    /// Interval of the cleanup task, in minutes (5).
    #[serde(alias = "CleanupIntervalMinutes", alias = "cleanupIntervalMinutes")]
    pub cleanup_interval_minutes: u64,
    /// Caller's language name (lowercase) → the server's (python, javascript, go, csharp map to
    /// themselves).
    #[serde(alias = "LanguageMapping", alias = "languageMapping")]
    pub language_mapping: BTreeMap<String, String>,

    /// Only languages in `language_mapping` may run (false: any language the server offers).
    #[serde(alias = "StrictLanguageMapping", alias = "strictLanguageMapping")]
    pub strict_language_mapping: bool,
    /// Runs in progress at once at most; `None` means `session_pool_size`.
    #[serde(alias = "MaxConcurrentExecutions", alias = "maxConcurrentExecutions")]
    pub max_concurrent_executions: Option<usize>,
    /// Longest a run waits for a pooled session, in milliseconds (30000).
    #[serde(alias = "AcquireTimeoutMs", alias = "acquireTimeoutMs")]
    pub acquire_timeout_ms: u64,
    /// Time the client waits beyond a run's own time limit before giving up on the answer, in
    /// milliseconds (5000). It covers the round trip, and compiling on a cold compile cache.
    #[serde(alias = "TimeoutGraceMs", alias = "timeoutGraceMs")]
    pub timeout_grace_ms: u64,
    /// Default timeout of requests other than runs, in milliseconds (30000).
    #[serde(alias = "RequestTimeoutMs", alias = "requestTimeoutMs")]
    pub request_timeout_ms: u64,
    /// A session is closed after this many runs (1000); `None` for no limit.
    #[serde(alias = "MaxExecutionsPerSession", alias = "maxExecutionsPerSession")]
    pub max_executions_per_session: Option<u64>,
    /// Longest wait between reconnection attempts, in milliseconds (5000).
    #[serde(alias = "ReconnectMaxDelayMs", alias = "reconnectMaxDelayMs")]
    pub reconnect_max_delay_ms: u64,
    /// Bearer token for a server with authentication on.
    #[serde(alias = "AuthToken", alias = "authToken")]
    pub auth_token: Option<String>,
}

impl Default for CodeBeakerOptions {
    fn default() -> Self {
        let language_mapping = ["python", "javascript", "go", "csharp"]
            .into_iter()
            .map(|l| (l.to_string(), l.to_string()))
            .collect();
        CodeBeakerOptions {
            websocket_url: DEFAULT_WEBSOCKET_URL.to_string(),
            session_pool_size: 10,
            session_idle_timeout_minutes: 30,
            session_max_lifetime_minutes: 120,
            memory_limit_mb: 512,
            cpu_shares: 1024,
            default_timeout_ms: 30_000,
            enable_auto_cleanup: true,
            cleanup_interval_minutes: 5,
            language_mapping,
            strict_language_mapping: false,
            max_concurrent_executions: None,
            acquire_timeout_ms: 30_000,
            timeout_grace_ms: 5_000,
            request_timeout_ms: 30_000,
            max_executions_per_session: Some(1000),
            reconnect_max_delay_ms: 5_000,
            auth_token: None,
        }
    }
}

impl CodeBeakerOptions {
    /// Reads options from a `.toml` or `.json` file (by extension; anything else is tried as
    /// TOML). Missing keys keep their defaults.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Config(format!("reading {}: {e}", path.display())))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let parsed = if is_json {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        };
        parsed.map_err(|e| match e {
            ClientError::Config(m) => ClientError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Reads options from JSON, optionally wrapped in `{"CodeBeaker": {...}}`.
    pub fn from_json_str(text: &str) -> Result<Self, ClientError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ClientError::Config(format!("not valid JSON: {e}")))?;
        let value = match value {
            serde_json::Value::Object(mut map) => {
                let wrapper = ["CodeBeaker", "codeBeaker", "codebeaker"]
                    .into_iter()
                    .find(|k| map.get(*k).is_some_and(|v| v.is_object()));
                match wrapper {
                    Some(k) => map.remove(k).unwrap_or_default(),
                    None => serde_json::Value::Object(map),
                }
            }
            other => other,
        };
        let options: CodeBeakerOptions = serde_json::from_value(value)
            .map_err(|e| ClientError::Config(format!("options: {e}")))?;
        options.validate()?;
        Ok(options)
    }

    /// Reads options from TOML, optionally under a `[codebeaker]` table.
    pub fn from_toml_str(text: &str) -> Result<Self, ClientError> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| ClientError::Config(format!("not valid TOML: {e}")))?;
        let wrapper = ["codebeaker", "CodeBeaker"]
            .into_iter()
            .find(|k| table.get(*k).is_some_and(|v| v.is_table()));
        if let Some(k) = wrapper {
            if let Some(toml::Value::Table(inner)) = table.remove(k) {
                table = inner;
            }
        }
        let options: CodeBeakerOptions = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ClientError::Config(format!("options: {e}")))?;
        options.validate()?;
        Ok(options)
    }

    /// Checks that every value makes sense; the error names the setting.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |what: &str| Err(ClientError::Config(what.to_string()));
        if self.session_pool_size == 0 {
            return bad("session_pool_size must be at least 1");
        }
        if self.session_idle_timeout_minutes == 0 || self.session_max_lifetime_minutes == 0 {
            return bad(
                "session_idle_timeout_minutes and session_max_lifetime_minutes must be at least 1",
            );
        }
        if self.default_timeout_ms == 0 {
            return bad("default_timeout_ms must be positive");
        }
        if self.enable_auto_cleanup && self.cleanup_interval_minutes == 0 {
            return bad(
                "cleanup_interval_minutes must be at least 1 when enable_auto_cleanup is on",
            );
        }
        if self.max_concurrent_executions == Some(0) {
            return bad("max_concurrent_executions must be at least 1");
        }
        if self.acquire_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return bad("acquire_timeout_ms and request_timeout_ms must be positive");
        }
        if self.max_executions_per_session == Some(0) {
            return bad("max_executions_per_session must be at least 1");
        }
        if self.reconnect_max_delay_ms < 100 {
            return bad("reconnect_max_delay_ms must be at least 100");
        }
        if self.memory_limit_mb < 16 {
            return bad("memory_limit_mb must be at least 16");
        }
        if self.cpu_shares == 0 {
            return bad("cpu_shares must be positive");
        }
        Ok(())
    }

    /// The connection settings these options imply.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.websocket_url.clone());
        config.request_timeout = Duration::from_millis(self.request_timeout_ms);
        config.auth_token = self.auth_token.clone();
        config.backoff = Backoff {
            max: Duration::from_millis(self.reconnect_max_delay_ms),
            ..Backoff::default()
        };
        config
    }

    /// The pool settings these options imply.
    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            max_sessions: self.session_pool_size,
            max_leases: self.max_concurrent_executions,
            acquire_timeout: Duration::from_millis(self.acquire_timeout_ms),
            idle_timeout: Duration::from_secs(self.session_idle_timeout_minutes * 60),
            max_lifetime: Duration::from_secs(self.session_max_lifetime_minutes * 60),
            max_executions_per_session: self.max_executions_per_session,
            close_timeout: Duration::from_secs(10),
            cleanup_interval: self
                .enable_auto_cleanup
                .then(|| Duration::from_secs(self.cleanup_interval_minutes * 60)),
            session: SessionSettings {
                runtime: None,
                memory_limit_mb: Some(self.memory_limit_mb),
                cpu_shares: Some(self.cpu_shares),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_original_clients() {
        let o = CodeBeakerOptions::default();
        assert_eq!(o.websocket_url, "ws://localhost:5000/ws/jsonrpc");
        assert_eq!(o.session_pool_size, 10);
        assert_eq!(o.session_idle_timeout_minutes, 30);
        assert_eq!(o.session_max_lifetime_minutes, 120);
        assert_eq!(o.memory_limit_mb, 512);
        assert_eq!(o.cpu_shares, 1024);
        assert_eq!(o.default_timeout_ms, 30_000);
        assert!(o.enable_auto_cleanup);
        assert_eq!(o.cleanup_interval_minutes, 5);
        let langs: Vec<&str> = o.language_mapping.keys().map(String::as_str).collect();
        assert_eq!(langs, ["csharp", "go", "javascript", "python"]);
    }

    #[test]
    fn the_original_appsettings_file_reads() {
        let text = r#"{
          "CodeBeaker": {
            "WebSocketUrl": "ws://localhost:5000/ws/jsonrpc",
            "SessionPoolSize": 10,
            "SessionIdleTimeoutMinutes": 30,
            "SessionMaxLifetimeMinutes": 120,
            "MemoryLimitMB": 512,
            "CpuShares": 1024,
            "DefaultTimeoutMs": 30000,
            "EnableAutoCleanup": true,
            "CleanupIntervalMinutes": 5,
            "LanguageMapping": {"python": "python", "javascript": "javascript", "go": "go", "csharp": "csharp"}
          },
          "Execution": {"Provider": "CodeBeaker"}
        }"#;
        let o = CodeBeakerOptions::from_json_str(text).unwrap();
        assert_eq!(o, CodeBeakerOptions::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = CodeBeakerOptions::from_toml_str("session_pool_sise = 3").unwrap_err();
        assert!(e.to_string().contains("session_pool_sise"), "{e}");
        let e = CodeBeakerOptions::from_toml_str("session_pool_size = 0").unwrap_err();
        assert!(e.to_string().contains("session_pool_size"), "{e}");
        let o = CodeBeakerOptions::from_toml_str("[codebeaker]\nsession_pool_size = 3").unwrap();
        assert_eq!(o.session_pool_size, 3);
    }

    #[test]
    fn pool_config_follows_the_options() {
        let o = CodeBeakerOptions {
            enable_auto_cleanup: false,
            session_pool_size: 5,
            ..Default::default()
        };
        let p = o.pool_config();
        assert_eq!(p.max_sessions, 5);
        assert_eq!(p.cleanup_interval, None);
        assert_eq!(p.idle_timeout, Duration::from_secs(1800));
        assert_eq!(p.session.memory_limit_mb, Some(512));
    }
}
