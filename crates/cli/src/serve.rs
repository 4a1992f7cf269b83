//! `codebeaker serve`: the JSON-RPC/REST server over one engine.
//!
//! Configuration is layered, each layer overriding the one before: built-in defaults, the TOML
//! file of `--config`, `CODEBEAKER_*` environment variables (nested keys joined with `__`, e.g.
//! `CODEBEAKER_SERVER__LISTEN=0.0.0.0:5000`), then flags. Unknown keys are errors that name the
//! key and where it came from. Every key is documented in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use codebeaker_engine::{
    Engine, EngineConfig, FileLimits, RecordLimits, SessionLimits, TextLimits,
};
use codebeaker_sandbox::{BoxLimits, MIB};
use codebeaker_server::{
    AuthConfig, CallerQuota, RateLimitConfig, Server, ServerConfig, TokenConfig, CLOSE_MARGIN,
    DEFAULT_LISTEN,
};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that configure the server.
pub const ENV_PREFIX: &str = "CODEBEAKER_";

/// The variables of the one `CODEBEAKER_*` namespace that belong to the client commands
/// (`batch`, `load`: the server to talk to and its token), not to the server's settings: the
/// server ignores them, so one environment can hold both.
pub const CLIENT_VARIABLES: [&str; 2] = ["SERVER", "TOKEN"];

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5000, or `server.listen` from the config].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Configuration file (TOML); see docs/configuration.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole configuration file. Every section and key is optional.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub auth: AuthSection,
    pub rate_limit: RateLimitSection,
    pub sessions: SessionsSection,
    pub executions: ExecutionsSection,
    pub limits: LimitsSection,
    pub sandbox: SandboxSection,
    pub cache: CacheSection,
    pub languages: LanguagesSection,
    /// The E2B-compatible API: its templates (`[e2b.templates.<id>]`).
    pub e2b: codebeaker_server::e2b::E2bConfig,
    /// The Judge0 API: its limits' defaults and maxima (`[judge0]`).
    pub judge0: codebeaker_server::judge0::Judge0Config,
    /// The MCP door: sandboxes per client, the HTTP session timeout, allowed hosts (`[mcp]`).
    pub mcp: codebeaker_server::mcp::McpConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub listen: SocketAddr,
    pub max_message_bytes: u64,
    pub max_in_flight: u64,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub max_messages_per_frame: u64,
    pub max_unsent_bytes: u64,
    pub slow_reader_timeout_secs: u64,
    pub max_connections: u64,
    pub max_connections_per_caller: u64,
    pub header_read_timeout_secs: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    pub tokens: Vec<TokenEntry>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub token: String,
    pub caller: String,
    /// Sessions the caller may hold at once (the `sessions` bounds still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u64>,
    /// The caller's own sustained rate, in place of `rate_limit.requests_per_second`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// The caller's own burst, in place of `rate_limit.burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("token", &"<redacted>")
            .field("caller", &self.caller)
            .field("max_sessions", &self.max_sessions)
            .field("requests_per_second", &self.requests_per_second)
            .field("burst", &self.burst)
            .finish()
    }
}

impl TokenEntry {
    /// The entry's own limits (`None` fields keep the server-wide ones). `global` is the
    /// server-wide rate limit, which a lone `burst` applies to.
    fn quota(&self, global: Option<RateLimitConfig>) -> Result<CallerQuota, String> {
        let max_sessions = match self.max_sessions {
            None => None,
            Some(0) => return Err("`max_sessions` must be at least 1".into()),
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        if self.burst == Some(0) {
            return Err("`burst` must be at least 1".into());
        }
        let rate_limit = match (self.requests_per_second, self.burst) {
            (None, None) => None,
            (Some(rate), burst) => {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(format!(
                        "`requests_per_second` must be a positive number, got {rate}"
                    ));
                }
                Some(RateLimitConfig {
                    requests_per_second: rate,
                    burst: burst.unwrap_or_else(|| rounded_up(rate)),
                })
            }
            (None, Some(burst)) => match global {
                Some(global) => Some(RateLimitConfig { burst, ..global }),
                None => {
                    return Err(
                        "`burst` without `requests_per_second` needs rate_limit.requests_per_second (rate limiting is off)".into(),
                    )
                }
            },
        };
        Ok(CallerQuota {
            max_sessions,
            rate_limit,
        })
    }
}

/// A validated, finite, positive rate rounded up, as a burst (clamped into u32).
fn rounded_up(rate: f64) -> u32 {
    rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// Sustained requests per second per caller; 0 (the default) turns rate limiting off.
    pub requests_per_second: f64,
    /// Requests allowed at once; defaults to `requests_per_second` rounded up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsSection {
    pub max_total: u64,
    pub max_per_caller: u64,
    pub idle_timeout_minutes: u64,
    pub max_idle_timeout_minutes: u64,
    pub max_lifetime_minutes: u64,
    pub max_lifetime_cap_minutes: u64,
    pub reap_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionsSection {
    pub max_queued: u64,
    pub max_queued_per_caller: u64,
    pub max_concurrent: u64,
    pub retention_secs: u64,
    pub max_records_per_caller: u64,
    pub max_record_bytes_per_caller: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub run_timeout_secs: f64,
    pub max_run_timeout_secs: f64,
    pub compile_timeout_secs: f64,
    pub output_bytes: u64,
    pub file_size_bytes: u64,
    pub open_files: u64,
    pub memory_mb: u64,
    pub max_memory_mb: u64,
    pub max_stdin_bytes: u64,
    pub max_processes: u64,
    pub cpu_millis: u64,
    pub workspace_bytes: u64,
    pub workspace_files: u64,
    pub tmp_bytes: u64,
    pub tmp_files: u64,
    pub max_write_bytes: u64,
    pub max_read_bytes: u64,
    pub max_list_entries: u32,
    pub text_max_bytes: u64,
    pub text_max_lines: u64,
    pub text_max_diff_cost: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSection {
    pub state_dir: PathBuf,
    pub allow_degraded: bool,
    pub move_to_leaf: bool,
    pub id_base: u32,
    pub box_pool_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LanguagesSection {
    /// A TOML file that extends or overrides the built-in language registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Run programs in pre-started warm workers where the language has one.
    pub warm_workers: bool,
}

/// Each section's defaults are the whole file's defaults (so that a partial section in a file
/// deserializes on its own too).
macro_rules! section_defaults {
    ($($section:ident: $ty:ty),*) => {$(
        impl Default for $ty {
            fn default() -> Self {
                Config::default().$section
            }
        }
    )*};
}

section_defaults!(
    server: ServerSection,
    sessions: SessionsSection,
    executions: ExecutionsSection,
    limits: LimitsSection,
    sandbox: SandboxSection,
    cache: CacheSection,
    languages: LanguagesSection
);

fn whole_minutes(d: Duration) -> u64 {
    d.as_secs() / 60
}

impl Default for Config {
    fn default() -> Self {
        let server = ServerConfig::default();
        let engine = EngineConfig::default();
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Config {
            server: ServerSection {
                listen: DEFAULT_LISTEN,
                max_message_bytes: as_u64(server.max_message_bytes),
                max_in_flight: as_u64(server.max_in_flight),
                ping_interval_secs: server.ping_interval.as_secs(),
                idle_timeout_secs: server.idle_timeout.as_secs(),
                shutdown_grace_secs: server.shutdown_grace.as_secs(),
                max_messages_per_frame: as_u64(server.max_messages_per_frame),
                max_unsent_bytes: as_u64(server.max_unsent_bytes),
                slow_reader_timeout_secs: server.slow_reader_timeout.as_secs(),
                max_connections: as_u64(server.max_connections),
                max_connections_per_caller: as_u64(server.max_connections_per_caller),
                header_read_timeout_secs: server.header_read_timeout.as_secs(),
            },
            auth: AuthSection::default(),
            rate_limit: RateLimitSection::default(),
            sessions: SessionsSection {
                max_total: as_u64(engine.sessions.max_sessions),
                max_per_caller: as_u64(engine.sessions.max_sessions_per_caller),
                idle_timeout_minutes: whole_minutes(engine.sessions.idle_timeout),
                max_idle_timeout_minutes: whole_minutes(engine.sessions.max_idle_timeout),
                max_lifetime_minutes: whole_minutes(engine.sessions.max_lifetime),
                max_lifetime_cap_minutes: whole_minutes(engine.sessions.max_lifetime_cap),
                reap_interval_secs: engine.sessions.reap_interval.as_secs(),
            },
            executions: ExecutionsSection {
                max_queued: as_u64(engine.max_queued_executions),
                max_queued_per_caller: as_u64(engine.max_queued_executions_per_caller),
                max_concurrent: as_u64(engine.max_concurrent_executions),
                retention_secs: engine.execution_retention.as_secs(),
                max_records_per_caller: as_u64(engine.execution_records.max_per_caller),
                max_record_bytes_per_caller: engine.execution_records.max_bytes_per_caller,
            },
            limits: LimitsSection {
                run_timeout_secs: engine.run_limits.wall_time.as_secs_f64(),
                max_run_timeout_secs: engine.max_run_time.as_secs_f64(),
                compile_timeout_secs: engine.compile_limits.wall_time.as_secs_f64(),
                output_bytes: engine.run_limits.output_bytes,
                file_size_bytes: engine.run_limits.file_size_bytes,
                open_files: engine.run_limits.open_files,
                memory_mb: engine.box_limits.memory_bytes / MIB,
                max_memory_mb: engine.max_memory_bytes / MIB,
                max_stdin_bytes: engine.max_stdin_bytes,
                max_processes: engine.box_limits.max_processes,
                cpu_millis: engine.box_limits.cpu_millis,
                workspace_bytes: engine.box_limits.workspace_bytes,
                workspace_files: engine.box_limits.workspace_files,
                tmp_bytes: engine.box_limits.tmp_bytes,
                tmp_files: engine.box_limits.tmp_files,
                max_write_bytes: engine.files.max_write_bytes,
                max_read_bytes: engine.files.max_read_bytes,
                max_list_entries: engine.files.max_list_entries,
                text_max_bytes: engine.text.max_bytes,
                text_max_lines: engine.text.max_lines,
                text_max_diff_cost: engine.text.max_diff_cost,
            },
            sandbox: SandboxSection {
                state_dir: engine.sandbox.state_dir.clone(),
                allow_degraded: engine.sandbox.allow_degraded,
                move_to_leaf: engine.sandbox.move_to_leaf,
                id_base: engine.sandbox.id_base,
                box_pool_size: as_u64(engine.box_pool_size),
            },
            cache: CacheSection {
                dir: engine.cache_dir.clone(),
                max_bytes: engine.cache_max_bytes,
            },
            languages: LanguagesSection {
                file: None,
                warm_workers: engine.warm_workers,
            },
            e2b: server.e2b.clone(),
            judge0: server.judge0.clone(),
            mcp: server.mcp.clone(),
        }
    }
}

impl Config {
    /// Defaults < `file` < `CODEBEAKER_*` environment < `listen` flag.
    pub fn load(file: Option<&Path>, listen: Option<SocketAddr>) -> Result<(Config, Figment)> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                bail!("the configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed(ENV_PREFIX)
            .ignore(&CLIENT_VARIABLES)
            .split("__");
        figment = figment.merge(env);
        if let Some(listen) = listen {
            figment = figment.merge(Serialized::default("server.listen", listen.to_string()));
        }
        let config: Config = figment.extract().map_err(|errors| {
            let lines: Vec<String> = errors.into_iter().map(|e| describe(&e)).collect();
            anyhow::anyhow!("invalid configuration:\n  {}", lines.join("\n  "))
        })?;
        config.validate().map_err(|(key, why)| {
            anyhow::anyhow!(
                "invalid configuration: {key}: {why}{}",
                source_of(&figment, key)
            )
        })?;
        Ok((config, figment))
    }

    /// Range checks serde cannot do; the error names the key.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let positive = |key: &'static str, v: u64| {
            if v == 0 {
                Err((key, "must be at least 1".to_string()))
            } else {
                Ok(())
            }
        };
        let seconds = |key: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(())
            } else {
                Err((
                    key,
                    format!("must be a number of seconds between 0 and 86400, got {v}"),
                ))
            }
        };
        let s = &self.server;
        if s.max_message_bytes < 1024 {
            return Err(("server.max_message_bytes", "must be at least 1024".into()));
        }
        positive("server.max_in_flight", s.max_in_flight)?;
        positive("server.idle_timeout_secs", s.idle_timeout_secs)?;
        positive("server.max_messages_per_frame", s.max_messages_per_frame)?;
        positive(
            "server.slow_reader_timeout_secs",
            s.slow_reader_timeout_secs,
        )?;
        positive("server.max_connections", s.max_connections)?;
        positive(
            "server.max_connections_per_caller",
            s.max_connections_per_caller,
        )?;
        positive(
            "server.header_read_timeout_secs",
            s.header_read_timeout_secs,
        )?;
        if s.max_unsent_bytes < s.max_message_bytes.min(1024 * 1024) {
            return Err((
                "server.max_unsent_bytes",
                "must be at least 1048576 (or server.max_message_bytes, when that is smaller)"
                    .into(),
            ));
        }
        positive(
            "executions.max_records_per_caller",
            self.executions.max_records_per_caller,
        )?;
        positive(
            "executions.max_record_bytes_per_caller",
            self.executions.max_record_bytes_per_caller,
        )?;
        positive("limits.text_max_bytes", self.limits.text_max_bytes)?;
        positive("limits.text_max_lines", self.limits.text_max_lines)?;
        positive("limits.text_max_diff_cost", self.limits.text_max_diff_cost)?;
        let r = &self.rate_limit;
        if !r.requests_per_second.is_finite() || r.requests_per_second < 0.0 {
            return Err((
                "rate_limit.requests_per_second",
                "must be 0 (off) or a positive number".into(),
            ));
        }
        if r.burst == Some(0) {
            return Err(("rate_limit.burst", "must be at least 1".into()));
        }
        let global = self.global_rate_limit();
        let mut quotas: BTreeMap<&str, CallerQuota> = BTreeMap::new();
        for (i, token) in self.auth.tokens.iter().enumerate() {
            if token.token.trim().is_empty() || token.caller.trim().is_empty() {
                return Err((
                    "auth.tokens",
                    format!("entry {i}: `token` and `caller` must not be empty"),
                ));
            }
            let quota = token
                .quota(global)
                .map_err(|why| ("auth.tokens", format!("entry {i}: {why}")))?;
            // Quotas belong to the caller: its tokens must agree on them.
            if let Some(other) = quotas.insert(&token.caller, quota) {
                if other != quota {
                    return Err((
                        "auth.tokens",
                        format!(
                            "entry {i}: caller `{}` has another token with other max_sessions, requests_per_second or burst; a caller's tokens must share them",
                            token.caller
                        ),
                    ));
                }
            }
        }
        let n = &self.sessions;
        positive("sessions.max_total", n.max_total)?;
        positive("sessions.max_per_caller", n.max_per_caller)?;
        positive("sessions.idle_timeout_minutes", n.idle_timeout_minutes)?;
        positive("sessions.max_lifetime_minutes", n.max_lifetime_minutes)?;
        positive("sessions.reap_interval_secs", n.reap_interval_secs)?;
        if n.idle_timeout_minutes > n.max_idle_timeout_minutes {
            return Err((
                "sessions.idle_timeout_minutes",
                "must not exceed sessions.max_idle_timeout_minutes".into(),
            ));
        }
        if n.max_lifetime_minutes > n.max_lifetime_cap_minutes {
            return Err((
                "sessions.max_lifetime_minutes",
                "must not exceed sessions.max_lifetime_cap_minutes".into(),
            ));
        }
        let e = &self.executions;
        positive("executions.max_queued", e.max_queued)?;
        positive("executions.max_concurrent", e.max_concurrent)?;
        let l = &self.limits;
        seconds("limits.run_timeout_secs", l.run_timeout_secs)?;
        seconds("limits.max_run_timeout_secs", l.max_run_timeout_secs)?;
        seconds("limits.compile_timeout_secs", l.compile_timeout_secs)?;
        if l.run_timeout_secs > l.max_run_timeout_secs {
            return Err((
                "limits.run_timeout_secs",
                "must not exceed limits.max_run_timeout_secs".into(),
            ));
        }
        if l.memory_mb < 16 {
            return Err(("limits.memory_mb", "must be at least 16".into()));
        }
        if l.memory_mb > l.max_memory_mb {
            return Err((
                "limits.memory_mb",
                "must not exceed limits.max_memory_mb".into(),
            ));
        }
        positive("limits.output_bytes", l.output_bytes)?;
        positive("limits.max_stdin_bytes", l.max_stdin_bytes)?;
        positive("limits.open_files", l.open_files)?;
        positive("limits.max_processes", l.max_processes)?;
        positive("limits.cpu_millis", l.cpu_millis)?;
        positive("limits.workspace_bytes", l.workspace_bytes)?;
        positive("limits.workspace_files", l.workspace_files)?;
        positive("limits.tmp_bytes", l.tmp_bytes)?;
        positive("limits.tmp_files", l.tmp_files)?;
        positive("limits.max_list_entries", u64::from(l.max_list_entries))?;
        Ok(())
    }

    /// The server-wide rate limit, `None` when off.
    fn global_rate_limit(&self) -> Option<RateLimitConfig> {
        (self.rate_limit.requests_per_second > 0.0).then(|| RateLimitConfig {
            requests_per_second: self.rate_limit.requests_per_second,
            burst: self
                .rate_limit
                .burst
                .unwrap_or_else(|| rounded_up(self.rate_limit.requests_per_second)),
        })
    }

    /// The server's settings.
    pub fn server_config(&self) -> ServerConfig {
        let s = &self.server;
        let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let rate_limit = self.global_rate_limit();
        let caller_quotas = self
            .auth
            .tokens
            .iter()
            // Validated: every entry has a quota, and a caller's entries agree.
            .filter_map(|t| Some((t.caller.clone(), t.quota(rate_limit).ok()?)))
            .filter(|(_, quota)| *quota != CallerQuota::default())
            .collect();
        ServerConfig {
            listen: s.listen,
            max_message_bytes: as_usize(s.max_message_bytes),
            max_in_flight: as_usize(s.max_in_flight),
            ping_interval: Duration::from_secs(s.ping_interval_secs),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            auth: AuthConfig {
                tokens: self
                    .auth
                    .tokens
                    .iter()
                    .map(|t| TokenConfig {
                        token: t.token.clone(),
                        caller: t.caller.clone(),
                    })
                    .collect(),
            },
            rate_limit,
            caller_quotas,
            shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
            max_messages_per_frame: as_usize(s.max_messages_per_frame),
            max_unsent_bytes: as_usize(s.max_unsent_bytes),
            slow_reader_timeout: Duration::from_secs(s.slow_reader_timeout_secs),
            max_connections: as_usize(s.max_connections),
            max_connections_per_caller: as_usize(s.max_connections_per_caller),
            header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
            e2b: self.e2b.clone(),
            judge0: self.judge0.clone(),
            mcp: self.mcp.clone(),
        }
    }

    /// The engine's settings (reads the language override file, if any). Fields the file has
    /// no key for keep the engine's defaults.
    pub fn engine_config(&self) -> Result<EngineConfig> {
        let l = &self.limits;
        let n = &self.sessions;
        let e = &self.executions;
        let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let minutes = |m: u64| Duration::from_secs(m.saturating_mul(60));
        let run_time = Duration::from_secs_f64(l.run_timeout_secs);
        let compile_time = Duration::from_secs_f64(l.compile_timeout_secs);
        let mut config = EngineConfig::default();

        config.sandbox.state_dir = self.sandbox.state_dir.clone();
        config.sandbox.id_base = self.sandbox.id_base;
        config.sandbox.allow_degraded = self.sandbox.allow_degraded;
        config.sandbox.move_to_leaf = self.sandbox.move_to_leaf;
        config.box_pool_size = as_usize(self.sandbox.box_pool_size);

        config.box_limits = BoxLimits {
            memory_bytes: l.memory_mb.saturating_mul(MIB),
            max_processes: l.max_processes,
            cpu_millis: l.cpu_millis,
            workspace_bytes: l.workspace_bytes,
            tmp_bytes: l.tmp_bytes,
            workspace_files: l.workspace_files,
            tmp_files: l.tmp_files,
        };
        config.run_limits.wall_time = run_time;
        config.run_limits.cpu_time = run_time;
        config.run_limits.output_bytes = l.output_bytes;
        config.run_limits.file_size_bytes = l.file_size_bytes;
        config.run_limits.open_files = l.open_files;
        config.compile_limits.wall_time = compile_time;
        config.compile_limits.cpu_time = compile_time;
        config.max_run_time = Duration::from_secs_f64(l.max_run_timeout_secs);
        config.max_memory_bytes = l.max_memory_mb.saturating_mul(MIB);
        config.max_stdin_bytes = l.max_stdin_bytes;
        config.files = FileLimits {
            max_write_bytes: l.max_write_bytes,
            max_read_bytes: l.max_read_bytes,
            max_list_entries: l.max_list_entries,
        };

        config.cache_dir = self.cache.dir.clone();
        config.cache_max_bytes = self.cache.max_bytes;
        config.languages_override = match &self.languages.file {
            None => None,
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!(
                    "languages.file: reading the language override file {}",
                    path.display()
                )
            })?),
        };
        config.warm_workers = self.languages.warm_workers;

        config.sessions = SessionLimits {
            max_sessions: as_usize(n.max_total),
            max_sessions_per_caller: as_usize(n.max_per_caller),
            idle_timeout: minutes(n.idle_timeout_minutes),
            max_idle_timeout: minutes(n.max_idle_timeout_minutes),
            max_lifetime: minutes(n.max_lifetime_minutes),
            max_lifetime_cap: minutes(n.max_lifetime_cap_minutes),
            reap_interval: Duration::from_secs(n.reap_interval_secs),
        };
        config.max_queued_executions = as_usize(e.max_queued);
        config.max_queued_executions_per_caller = as_usize(e.max_queued_per_caller);
        config.max_concurrent_executions = as_usize(e.max_concurrent);
        config.execution_retention = Duration::from_secs(e.retention_secs);
        config.execution_records = RecordLimits {
            max_per_caller: as_usize(e.max_records_per_caller),
            max_bytes_per_caller: e.max_record_bytes_per_caller,
        };
        config.text = TextLimits {
            max_bytes: l.text_max_bytes,
            max_lines: l.text_max_lines,
            max_diff_cost: l.text_max_diff_cost,
        };
        Ok(config)
    }
}

/// One configuration error as `key: what is wrong (in where)`.
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".");
    let origin = error.metadata.as_ref().map(|md| match &md.source {
        Some(source) => source.to_string(),
        None if md.name.contains("environment") => format!(
            "environment variable {ENV_PREFIX}{}",
            error.path.join("__").to_uppercase()
        ),
        None => md.name.to_string(),
    });
    match (key.is_empty(), origin) {
        (true, Some(origin)) => format!("{} (in {origin})", error.kind),
        (true, None) => error.kind.to_string(),
        (false, Some(origin)) => format!("{key}: {} (in {origin})", error.kind),
        (false, None) => format!("{key}: {}", error.kind),
    }
}

/// ` (in <source>)` for the layer that set `key`, when known.
fn source_of(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(md) => match &md.source {
            Some(source) => format!(" (in {source})"),
            None if md.name.contains("environment") => format!(
                " (in environment variable {ENV_PREFIX}{})",
                key.replace('.', "__").to_uppercase()
            ),
            None => format!(" (in {})", md.name),
        },
        None => String::new(),
    }
}

pub async fn main(args: ServeArgs) -> Result<i32> {
    let (config, _) = Config::load(args.config.as_deref(), args.listen)?;
    if args.print_config {
        print!(
            "{}",
            toml::to_string_pretty(&redacted(&config)).context("printing the configuration")?
        );
        return Ok(0);
    }
    let server_config = config.server_config();
    let engine = start_engine(&config).await?;
    let reaper = engine.spawn_reaper();
    let server = Server::bind(server_config, engine.clone()).await?;
    let addr = server.local_addr();
    tracing::info!(%addr, "listening");
    if args.log_format == LogFormat::Text {
        eprintln!("codebeaker: serving on ws://{addr}/ws/jsonrpc (Ctrl-C to stop)");
    }
    let grace = server_config_grace(&config);
    let served = server.serve(shutdown_signal(grace)).await;
    reaper.abort();
    if tokio::time::timeout(grace + CLOSE_MARGIN + ENGINE_STOP, engine.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the engine did not stop in time; exiting anyway");
    }
    served?;
    tracing::info!("stopped");
    Ok(0)
}

/// The engine of `config`, started off the async workers (toolchain probes and host checks
/// block); a degraded isolation is logged.
pub async fn start_engine(config: &Config) -> Result<Arc<Engine>> {
    let engine_config = config.engine_config()?;
    let engine = tokio::task::spawn_blocking(move || Engine::new(engine_config))
        .await
        .context("starting the engine")?
        .context("starting the engine")?;
    let isolation = engine.isolation();
    if isolation.degraded {
        tracing::warn!(notes = ?isolation.notes, "isolation is degraded");
    }
    Ok(Arc::new(engine))
}

/// The configuration with token secrets replaced, for printing.
fn redacted(config: &Config) -> Config {
    let mut copy = config.clone();
    for token in &mut copy.auth.tokens {
        token.token = "<redacted>".into();
    }
    copy
}

/// How long the engine gets to close its sessions after the server has stopped, beyond the grace.
const ENGINE_STOP: Duration = Duration::from_secs(10);

fn server_config_grace(config: &Config) -> Duration {
    Duration::from_secs(config.server.shutdown_grace_secs)
}

/// Resolves on Ctrl-C or SIGTERM, and from then on holds the process to a hard deadline: the
/// server gives up on its connections at most [`CLOSE_MARGIN`] after the grace period, the engine
/// gets as long again plus [`ENGINE_STOP`], and a process still running after all that plus a
/// second exits at once, whatever is still running.
async fn shutdown_signal(grace: Duration) {
    wait_for_signal().await;
    let deadline = (grace + CLOSE_MARGIN).saturating_mul(2) + ENGINE_STOP + Duration::from_secs(1);
    let watchdog = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            tracing::error!(
                deadline_secs = deadline.as_secs(),
                "shutdown did not finish in time; exiting now"
            );
            std::process::exit(1);
        });
    if let Err(e) = watchdog {
        tracing::warn!(error = %e, "cannot start the shutdown deadline");
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_engine_and_server_defaults() {
        let config = Config::default();
        config.validate().expect("defaults are valid");
        let server = config.server_config();
        assert_eq!(server.listen, DEFAULT_LISTEN);
        assert_eq!(server.max_message_bytes, 16 * 1024 * 1024);
        assert!(server.rate_limit.is_none());
        let engine = config.engine_config().expect("engine config");
        let defaults = EngineConfig::default();
        assert_eq!(engine.run_limits, defaults.run_limits);
        assert_eq!(engine.box_limits, defaults.box_limits);
        assert_eq!(engine.sessions.idle_timeout, defaults.sessions.idle_timeout);
        assert_eq!(engine.max_run_time, defaults.max_run_time);
        assert!(server.caller_quotas.is_empty());
    }

    fn token(caller: &str, secret: &str) -> TokenEntry {
        TokenEntry {
            token: secret.into(),
            caller: caller.into(),
            max_sessions: None,
            requests_per_second: None,
            burst: None,
        }
    }

    #[test]
    fn e2b_templates_come_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("codebeaker.toml");
        std::fs::write(
            &file,
            "[e2b.templates.node-app]\nlanguages = [\"javascript\"]\nmemory_mb = 256\n\
             files = { \"src/index.js\" = \"console.log(1)\\n\" }\n",
        )
        .expect("write");
        let (config, _) = Config::load(Some(&file), None).expect("valid");
        let server = config.server_config();
        server.validate().expect("the server accepts it");
        let template = server.e2b.template("node-app").expect("the template");
        assert_eq!(template.language(), "javascript");
        assert_eq!(template.memory_mb, Some(256));
        assert_eq!(template.files["src/index.js"], "console.log(1)\n");
        assert!(server.e2b.template("base").is_some(), "built-ins stay");

        std::fs::write(&file, "[e2b.templates.tiny]\nmemory_mb = 1\n").expect("write");
        let (config, _) = Config::load(Some(&file), None).expect("parses");
        let error = config
            .server_config()
            .validate()
            .expect_err("too little memory");
        assert!(
            error.to_string().contains("e2b.templates.tiny.memory_mb"),
            "{error}"
        );
        std::fs::write(&file, "[e2b.templates.x]\nlanguage = \"python\"\n").expect("write");
        assert!(
            Config::load(Some(&file), None).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn token_entries_carry_per_caller_quotas() {
        let mut config = Config::default();
        config.rate_limit.requests_per_second = 10.0;
        config.auth.tokens = vec![
            TokenEntry {
                max_sessions: Some(2),
                requests_per_second: Some(0.5),
                ..token("alice", "a")
            },
            TokenEntry {
                burst: Some(50),
                ..token("bob", "b")
            },
            token("carol", "c"),
        ];
        config.validate().expect("valid");
        let server = config.server_config();
        server.validate().expect("the server accepts it");
        let alice = server.caller_quotas["alice"];
        assert_eq!(alice.max_sessions, Some(2));
        assert_eq!(
            alice.rate_limit,
            Some(RateLimitConfig {
                requests_per_second: 0.5,
                burst: 1
            })
        );
        // A lone burst keeps the server-wide rate.
        assert_eq!(
            server.caller_quotas["bob"].rate_limit,
            Some(RateLimitConfig {
                requests_per_second: 10.0,
                burst: 50
            })
        );
        assert!(!server.caller_quotas.contains_key("carol"));
    }

    #[test]
    fn bad_token_quotas_are_refused() {
        for (entries, says) in [
            (
                vec![TokenEntry {
                    max_sessions: Some(0),
                    ..token("a", "1")
                }],
                "max_sessions",
            ),
            (
                vec![TokenEntry {
                    requests_per_second: Some(-1.0),
                    ..token("a", "1")
                }],
                "requests_per_second",
            ),
            (
                vec![TokenEntry {
                    burst: Some(5),
                    ..token("a", "1")
                }],
                "rate limiting is off",
            ),
            (
                vec![
                    TokenEntry {
                        max_sessions: Some(1),
                        ..token("a", "1")
                    },
                    token("a", "2"),
                ],
                "must share",
            ),
        ] {
            let mut config = Config::default();
            config.auth.tokens = entries;
            let (key, why) = config.validate().expect_err(says);
            assert_eq!(key, "auth.tokens");
            assert!(why.contains(says), "{why}");
        }
    }
}
