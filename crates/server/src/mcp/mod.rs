//! The MCP front door: CodeBeaker as a tool of AI assistants and agent frameworks, over the Model
//! Context Protocol.
//!
//! Two transports serve one handler ([`Tools`]):
//!
//! - **stdio** ([`serve_stdio`], behind `codebeaker mcp`): the agent's MCP client starts the
//!   binary and speaks JSON-RPC over its stdin and stdout, to an engine in the same process; no
//!   server, no token. Logs go to stderr (stdout is the protocol).
//! - **streamable HTTP** at `/mcp` of `codebeaker serve` (`http`): MCP sessions named by the
//!   `Mcp-Session-Id` header, behind the server's bearer-token auth, so that a token names the
//!   caller exactly as on `/ws/jsonrpc`.
//!
//! The tools (`run_code`, `sandbox_create`, `sandbox_run_code`, `sandbox_shell`,
//! `sandbox_write_file`, `sandbox_read_file`, `sandbox_list_dir`, `sandbox_close`) and the
//! languages resource (`codebeaker://languages`) are in `tools`; a client's sandboxes, bounded
//! by [`McpConfig::max_sandboxes_per_client`] and closed when its MCP session ends, are in
//! `sandboxes`. Like every door it is a translation: one-shot runs, sessions, commands and
//! contexts are the engine's, and quotas, rate limits, metrics and the audit log are the
//! server's own.
//!
//! # Why rmcp
//!
//! The protocol's own Rust SDK (`rmcp`, pinned) does the parts that are MCP's and not ours: the
//! JSON-RPC framing and the `initialize` handshake with version negotiation, the stdio
//! transport, and the streamable HTTP transport (sessions, SSE streams and their resumption,
//! `DELETE`, the idle timeout, `Host` checks against DNS rebinding) as a tower service that
//! mounts in the server's axum router beside the other doors. What it cannot know is ours:
//! which caller a request speaks for (the server's auth, put in the request's extensions and
//! read back by the handler) and that an MCP session belongs to that caller (`http` checks it
//! before rmcp sees the request). The server offers only the protocol versions with an
//! `initialize` handshake (up to 2025-11-25): a sandbox lives as long as its MCP session, and
//! the sessionless 2026-07-28 revision would leave it no owner to end with.

mod http;
mod sandboxes;
mod tools;

use std::time::Duration;

use codebeaker_engine::Caller;
use rmcp::ServiceExt;
use serde::{Deserialize, Serialize};

pub(crate) use http::mount;
pub use http::PATH;
pub use tools::{clip, tool_list, Tools, LANGUAGES_URI, OUTPUT_MAX, TOOL_NAMES};

use crate::state::AppState;
use crate::ServerError;

/// The MCP door's settings (the `[mcp]` section of the configuration file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// Sandboxes one MCP client (one MCP session) may hold at once. The caller's own
    /// `max_sessions` and the engine's session bounds still apply.
    pub max_sandboxes_per_client: usize,
    /// An HTTP MCP session with no request for this long ends, and its sandboxes are closed.
    #[serde(with = "seconds", rename = "session_idle_timeout_secs")]
    pub session_idle_timeout: Duration,
    /// The `Host` headers `/mcp` answers (names, or `name:port`); empty answers any. The
    /// default, loopback names only, keeps web pages from reaching a local server through DNS
    /// rebinding; a server that others reach by name lists that name.
    pub allowed_hosts: Vec<String>,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            max_sandboxes_per_client: 4,
            session_idle_timeout: Duration::from_secs(30 * 60),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

impl McpConfig {
    /// Checks that every setting makes sense; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_sandboxes_per_client == 0 {
            return Err("mcp.max_sandboxes_per_client: must be at least 1".into());
        }
        if self.session_idle_timeout.is_zero() {
            return Err("mcp.session_idle_timeout_secs: must be at least 1".into());
        }
        if self.allowed_hosts.iter().any(|h| h.trim().is_empty()) {
            return Err("mcp.allowed_hosts: a host must not be empty".into());
        }
        Ok(())
    }
}

/// A duration as whole seconds in the configuration file.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Serves MCP over this process's stdin and stdout until the client closes stdin, for `caller`
/// (there is no token on stdio); then closes the client's sandboxes.
pub async fn serve_stdio(state: AppState, caller: Caller) -> Result<(), ServerError> {
    let tools = Tools::new(state, Some(caller));
    let running = tools
        .clone()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServerError::Serve(std::io::Error::other(e.to_string())))?;
    let ended = running.waiting().await;
    tools.close_all().await;
    match ended {
        Ok(reason) => {
            tracing::debug!(?reason, "the MCP client ended the session");
            Ok(())
        }
        Err(e) => Err(ServerError::Serve(std::io::Error::other(e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        assert_eq!(McpConfig::default().validate(), Ok(()));
        let none = McpConfig {
            max_sandboxes_per_client: 0,
            ..McpConfig::default()
        };
        assert!(none
            .validate()
            .is_err_and(|e| e.contains("max_sandboxes_per_client")));
        let never = McpConfig {
            session_idle_timeout: Duration::ZERO,
            ..McpConfig::default()
        };
        assert!(never
            .validate()
            .is_err_and(|e| e.contains("session_idle_timeout_secs")));
    }

    #[test]
    fn the_section_reads_seconds_and_refuses_unknown_keys() {
        let config: McpConfig =
            toml::from_str("max_sandboxes_per_client = 2\nsession_idle_timeout_secs = 90\n")
                .expect("valid");
        assert_eq!(config.max_sandboxes_per_client, 2);
        assert_eq!(config.session_idle_timeout, Duration::from_secs(90));
        assert_eq!(config.allowed_hosts, McpConfig::default().allowed_hosts);
        assert!(toml::from_str::<McpConfig>("max_sandboxes = 2\n").is_err());
    }
}
