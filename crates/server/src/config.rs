//! The server's own settings: where it listens, the bounds of a connection, authentication and
//! rate limits. Everything about running code (sessions, limits, the sandbox) is the engine's
//! configuration; the `codebeaker serve` command reads both from one file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::ServerError;

/// Default listen address: the address the original .NET client dials (`ws://localhost:5000/ws/jsonrpc`).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    5000,
));

/// How the server behaves on the wire. [`ServerConfig::default`] is what `codebeaker serve` uses
/// when it is told nothing.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see [`crate::Server::local_addr`]).
    pub listen: SocketAddr,
    /// Largest WebSocket message (and frame), and largest REST request body, in bytes. A larger
    /// WebSocket message closes the connection with close code 1009; a larger body gets HTTP 413.
    pub max_message_bytes: usize,
    /// Requests processed at once on one WebSocket connection. A request over the bound is
    /// answered at once with `-32002` (it is not queued).
    pub max_in_flight: usize,
    /// Interval of the server's WebSocket pings. A peer that sends nothing at all (not even a
    /// pong) for three intervals is disconnected. Zero disables pings.
    pub ping_interval: Duration,
    /// A connection that has sent no message and has no request in flight for this long is
    /// closed (close code 1000, reason `idle timeout`).
    pub idle_timeout: Duration,
    /// Bearer tokens; when there are none, authentication is off.
    pub auth: AuthConfig,
    /// Requests per caller; `None` turns rate limiting off (except for callers with a rate of
    /// their own in `caller_quotas`).
    pub rate_limit: Option<RateLimitConfig>,
    /// Limits of particular callers (by caller name) that replace the server-wide ones: the
    /// `max_sessions`, `requests_per_second` and `burst` of `auth.tokens` entries.
    pub caller_quotas: BTreeMap<String, CallerQuota>,
    /// After a shutdown is asked for, how long open connections get to finish; then they are
    /// dropped and [`crate::Server::serve`] returns, however busy they are.
    pub shutdown_grace: Duration,
    /// Messages read from one WebSocket text frame (lines, or the elements of a batch). The
    /// rest of a longer frame is not read and gets one `-32600`; a longer batch is refused whole.
    pub max_messages_per_frame: usize,
    /// Bytes of replies and notifications one WebSocket connection may have waiting to be
    /// written to its socket; past it, the requests of the connection wait (the client is slowed).
    pub max_unsent_bytes: usize,
    /// A connection whose replies cannot be written for this long (its client does not read) is
    /// closed with close code 1008.
    pub slow_reader_timeout: Duration,
    /// Open connections (HTTP and WebSocket together). Past it, the oldest connection that is
    /// not in a request (one still sending its request head, or idle between requests) is
    /// dropped to make room; when there is none, the new connection gets HTTP 503.
    pub max_connections: usize,
    /// Open WebSocket connections of one caller; past it the upgrade gets HTTP 429.
    pub max_connections_per_caller: usize,
    /// How long a client has to send a whole request head (also between the requests of a
    /// kept-alive connection) before its connection is closed.
    pub header_read_timeout: Duration,
    /// The E2B-compatible API's settings: its templates.
    pub e2b: crate::e2b::E2bConfig,
    /// The Judge0 API's settings: its limits' defaults and maxima.
    pub judge0: crate::judge0::Judge0Config,
    /// The MCP door's settings: sandboxes per client, the HTTP session timeout, allowed hosts.
    pub mcp: crate::mcp::McpConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            max_message_bytes: 16 * 1024 * 1024,
            max_in_flight: 32,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            auth: AuthConfig::default(),
            rate_limit: None,
            caller_quotas: BTreeMap::new(),
            shutdown_grace: Duration::from_secs(10),
            max_messages_per_frame: 256,
            max_unsent_bytes: 64 * 1024 * 1024,
            slow_reader_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_caller: 64,
            header_read_timeout: Duration::from_secs(10),
            e2b: crate::e2b::E2bConfig::default(),
            judge0: crate::judge0::Judge0Config::default(),
            mcp: crate::mcp::McpConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Checks that every value makes sense; the error names the setting and says why.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |key: &str, why: &str| Err(ServerError::Config(format!("{key}: {why}")));
        if self.max_message_bytes < 1024 {
            return bad("max_message_bytes", "must be at least 1024");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.idle_timeout.is_zero() {
            return bad("idle_timeout", "must be positive");
        }
        if self.max_messages_per_frame == 0 {
            return bad("max_messages_per_frame", "must be at least 1");
        }
        if self.max_unsent_bytes < self.max_message_bytes.min(1024 * 1024) {
            return bad(
                "max_unsent_bytes",
                "must be at least 1 MiB (or max_message_bytes, when that is smaller)",
            );
        }
        if self.slow_reader_timeout.is_zero() {
            return bad("slow_reader_timeout", "must be positive");
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.max_connections_per_caller == 0 {
            return bad("max_connections_per_caller", "must be at least 1");
        }
        if self.header_read_timeout.is_zero() {
            return bad("header_read_timeout", "must be positive");
        }
        self.e2b.validate().map_err(ServerError::Config)?;
        self.judge0.validate().map_err(ServerError::Config)?;
        self.mcp.validate().map_err(ServerError::Config)?;
        if let Some(rate) = &self.rate_limit {
            rate.validate("rate_limit")?;
        }
        for (caller, quota) in &self.caller_quotas {
            if quota.max_sessions == Some(0) {
                return Err(ServerError::Config(format!(
                    "caller_quotas.{caller}.max_sessions: must be at least 1"
                )));
            }
            if let Some(rate) = &quota.rate_limit {
                rate.validate(&format!("caller_quotas.{caller}.rate_limit"))?;
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, token) in self.auth.tokens.iter().enumerate() {
            if token.token.trim().is_empty() {
                return Err(ServerError::Config(format!(
                    "auth.tokens[{i}].token: must not be empty"
                )));
            }
            if token.caller.trim().is_empty() {
                return Err(ServerError::Config(format!(
                    "auth.tokens[{i}].caller: must not be empty"
                )));
            }
            if !seen.insert(token.token.as_str()) {
                return Err(ServerError::Config(format!(
                    "auth.tokens[{i}].token: the same token is configured twice"
                )));
            }
        }
        Ok(())
    }
}

/// Authentication by bearer token. Off when `tokens` is empty.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The accepted tokens, each naming the caller it stands for.
    pub tokens: Vec<TokenConfig>,
}

impl AuthConfig {
    /// True when at least one token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// One accepted token. Its caller name owns the sessions and executions created with it.
#[derive(Clone)]
pub struct TokenConfig {
    /// The secret sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// Who the token stands for.
    pub caller: String,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("caller", &self.caller)
            .finish()
    }
}

/// A token bucket per caller: `burst` requests at once, refilled at `requests_per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained rate.
    pub requests_per_second: f64,
    /// Bucket size: requests allowed at once after a quiet spell.
    pub burst: u32,
}

impl RateLimitConfig {
    fn validate(&self, key: &str) -> Result<(), ServerError> {
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(ServerError::Config(format!(
                "{key}.requests_per_second: must be a positive number"
            )));
        }
        if self.burst == 0 {
            return Err(ServerError::Config(format!(
                "{key}.burst: must be at least 1"
            )));
        }
        Ok(())
    }
}

/// One caller's own limits; `None` keeps the server-wide setting.
///
/// ```
/// use codebeaker_server::{CallerQuota, RateLimitConfig, ServerConfig};
/// let mut config = ServerConfig::default();
/// config.caller_quotas.insert(
///     "batch-service".into(),
///     CallerQuota {
///         max_sessions: Some(4),
///         rate_limit: Some(RateLimitConfig { requests_per_second: 20.0, burst: 40 }),
///     },
/// );
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallerQuota {
    /// Sessions the caller may hold at once. The engine's own per-caller and total bounds
    /// still apply; over this one `session.create` is refused with `-32002`.
    pub max_sessions: Option<usize>,
    /// The caller's token bucket, in place of [`ServerConfig::rate_limit`] (also when that is
    /// off).
    pub rate_limit: Option<RateLimitConfig>,
}
