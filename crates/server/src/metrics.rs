//! Prometheus metrics. Each server owns its recorder (not the process-global one), so several
//! servers in one process keep separate counts.

use std::time::Duration;

use codebeaker_engine::EngineStats;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::ServerError;

/// JSON-RPC requests by `method` and `code` (`ok` or the error code).
pub const RPC_REQUESTS: &str = "codebeaker_rpc_requests_total";
/// JSON-RPC request duration by `method`, in seconds.
pub const RPC_DURATION: &str = "codebeaker_rpc_request_duration_seconds";
/// HTTP requests by `route` and `status`.
pub const HTTP_REQUESTS: &str = "codebeaker_http_requests_total";
/// HTTP request duration by `route`, in seconds (WebSocket upgrades count until the upgrade).
pub const HTTP_DURATION: &str = "codebeaker_http_request_duration_seconds";
/// Open WebSocket connections.
pub const WS_CONNECTIONS: &str = "codebeaker_ws_connections";
/// Requests refused by the rate limit.
pub const RATE_LIMITED: &str = "codebeaker_rate_limited_total";
/// Open sessions (from the engine).
pub const SESSIONS: &str = "codebeaker_sessions";
/// Sessions running a command (from the engine).
pub const SESSIONS_BUSY: &str = "codebeaker_sessions_busy";
/// One-shot executions by `state` (`queued`, `running`), from the engine.
pub const EXECUTIONS: &str = "codebeaker_executions";
/// Boxes created since the engine started.
pub const BOXES_CREATED: &str = "codebeaker_boxes_created_total";
/// Seconds since the server started.
pub const UPTIME: &str = "codebeaker_uptime_seconds";
/// Programs that ran to an end, by `language` (the registry's name, or `unknown`), `status`
/// (the run result's: `ok`, `runtime_error`, `compile_error`, `timeout`, `memory_limit`,
/// `output_limit`, `killed`, `internal_error`) and `kind` (`session` for `execute` commands,
/// `one_shot` for `execution.run` and `POST /api/execution`).
pub const EXECUTIONS_FINISHED: &str = "codebeaker_executions_finished_total";
/// Wall-clock time of those programs (the run result's `durationMs`), by `language` and `kind`,
/// in seconds.
pub const EXECUTION_DURATION: &str = "codebeaker_execution_duration_seconds";
/// Sessions created through this server.
pub const SESSIONS_CREATED: &str = "codebeaker_sessions_created_total";
/// Sessions ended, by `reason`: `client` (`session.close`) or `reaped` (ended by the engine:
/// idle timeout, maximum lifetime, or its box died).
pub const SESSIONS_CLOSED: &str = "codebeaker_sessions_closed_total";
/// Time of a successful `session.create` in the engine, in seconds: taking a ready box from the
/// pool or creating one, plus starting its warm worker. (The engine does not report the time of
/// box creation alone.)
pub const SESSION_CREATE_DURATION: &str = "codebeaker_session_create_duration_seconds";
/// `session.execute` commands that ran (not refused), by `type`.
pub const COMMANDS: &str = "codebeaker_commands_total";
/// Error responses, JSON-RPC and REST, by `code`.
pub const ERRORS: &str = "codebeaker_errors_total";

/// Histogram buckets, in seconds: from a fast file command to a long run.
const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Where a finished program ran (the `kind` label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RunKind {
    Session,
    OneShot,
}

impl RunKind {
    fn label(self) -> &'static str {
        match self {
            RunKind::Session => "session",
            RunKind::OneShot => "one_shot",
        }
    }
}

/// The server's recorder and the handle that renders it.
pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Metrics {
    pub fn new() -> Result<Self, ServerError> {
        let mut builder = PrometheusBuilder::new();
        for histogram in [
            RPC_DURATION,
            HTTP_DURATION,
            EXECUTION_DURATION,
            SESSION_CREATE_DURATION,
        ] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(histogram.into()), &DURATION_BUCKETS)
                .map_err(|e| ServerError::Metrics(e.to_string()))?;
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics { recorder, handle };
        metrics.describe();
        Ok(metrics)
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    fn describe(&self) {
        self.with(|| {
            metrics::describe_counter!(RPC_REQUESTS, "JSON-RPC requests by method and result code");
            metrics::describe_histogram!(
                RPC_DURATION,
                metrics::Unit::Seconds,
                "JSON-RPC request duration by method"
            );
            metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route and status");
            metrics::describe_histogram!(
                HTTP_DURATION,
                metrics::Unit::Seconds,
                "HTTP request duration by route"
            );
            metrics::describe_gauge!(WS_CONNECTIONS, "open WebSocket connections");
            metrics::describe_counter!(RATE_LIMITED, "requests refused by the rate limit");
            metrics::describe_gauge!(SESSIONS, "open sessions");
            metrics::describe_gauge!(SESSIONS_BUSY, "sessions running a command");
            metrics::describe_gauge!(EXECUTIONS, "one-shot executions by state");
            metrics::describe_counter!(BOXES_CREATED, "boxes created since start");
            metrics::describe_gauge!(UPTIME, "seconds since the server started");
            metrics::describe_counter!(
                EXECUTIONS_FINISHED,
                "programs that ran to an end, by language, status and kind"
            );
            metrics::describe_histogram!(
                EXECUTION_DURATION,
                metrics::Unit::Seconds,
                "wall-clock time of programs, by language and kind"
            );
            metrics::describe_counter!(SESSIONS_CREATED, "sessions created");
            metrics::describe_counter!(SESSIONS_CLOSED, "sessions ended, by reason");
            metrics::describe_histogram!(
                SESSION_CREATE_DURATION,
                metrics::Unit::Seconds,
                "time of a successful session.create (box from the pool or new, warm worker)"
            );
            metrics::describe_counter!(COMMANDS, "session.execute commands that ran, by type");
            metrics::describe_counter!(ERRORS, "error responses (JSON-RPC and REST) by code");
            // Present from the first scrape, not only after the first event.
            metrics::gauge!(WS_CONNECTIONS).set(0.0);
            metrics::counter!(SESSIONS_CREATED).absolute(0);
            metrics::counter!(RATE_LIMITED).absolute(0);
            for reason in ["client", "reaped"] {
                metrics::counter!(SESSIONS_CLOSED, "reason" => reason).absolute(0);
            }
        });
    }

    /// One JSON-RPC request: `method` is the method name (or `unknown`/`invalid`), `code` is
    /// `ok` or the error code (also counted in [`ERRORS`]).
    pub fn rpc(&self, method: &'static str, code: Option<i64>, elapsed: Duration) {
        let code = code.map_or_else(|| "ok".to_string(), |c| c.to_string());
        self.with(|| {
            if code != "ok" {
                metrics::counter!(ERRORS, "code" => code.clone()).increment(1);
            }
            metrics::counter!(RPC_REQUESTS, "method" => method, "code" => code).increment(1);
            metrics::histogram!(RPC_DURATION, "method" => method).record(elapsed.as_secs_f64());
        });
    }

    /// A REST error response with this JSON-RPC code.
    pub fn rest_error(&self, code: i64) {
        self.with(|| metrics::counter!(ERRORS, "code" => code.to_string()).increment(1));
    }

    /// A program ran to an end. `language` must be a registry name or `unknown` (labels must
    /// stay few); `status` a run status name; `duration` its wall-clock time, when it ran.
    pub fn execution(
        &self,
        kind: RunKind,
        language: String,
        status: &'static str,
        duration: Option<Duration>,
    ) {
        let kind = kind.label();
        self.with(|| {
            metrics::counter!(EXECUTIONS_FINISHED, "language" => language.clone(), "status" => status, "kind" => kind)
                .increment(1);
            if let Some(duration) = duration {
                metrics::histogram!(EXECUTION_DURATION, "language" => language, "kind" => kind)
                    .record(duration.as_secs_f64());
            }
        });
    }

    /// A session was created in `elapsed`.
    pub fn session_created(&self, elapsed: Duration) {
        self.with(|| {
            metrics::counter!(SESSIONS_CREATED).increment(1);
            metrics::histogram!(SESSION_CREATE_DURATION).record(elapsed.as_secs_f64());
        });
    }

    /// A session ended (`reason`: `client` or `reaped`).
    pub fn session_closed(&self, reason: &'static str, count: u64) {
        self.with(|| metrics::counter!(SESSIONS_CLOSED, "reason" => reason).increment(count));
    }

    /// A `session.execute` command ran.
    pub fn command(&self, kind: &'static str) {
        self.with(|| metrics::counter!(COMMANDS, "type" => kind).increment(1));
    }

    /// One HTTP request.
    pub fn http(&self, route: String, status: u16, elapsed: Duration) {
        self.with(|| {
            metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "status" => status.to_string())
                .increment(1);
            metrics::histogram!(HTTP_DURATION, "route" => route).record(elapsed.as_secs_f64());
        });
    }

    pub fn ws_opened(&self) {
        self.with(|| metrics::gauge!(WS_CONNECTIONS).increment(1.0));
    }

    pub fn ws_closed(&self) {
        self.with(|| metrics::gauge!(WS_CONNECTIONS).decrement(1.0));
    }

    pub fn rate_limited(&self) {
        self.with(|| metrics::counter!(RATE_LIMITED).increment(1));
    }

    /// The Prometheus text exposition, with the engine's gauges as of now.
    pub fn render(&self, stats: &EngineStats, uptime: Duration) -> String {
        self.with(|| {
            metrics::gauge!(SESSIONS).set(stats.sessions as f64);
            metrics::gauge!(SESSIONS_BUSY).set(stats.busy_sessions as f64);
            metrics::gauge!(EXECUTIONS, "state" => "queued").set(stats.executions_queued as f64);
            metrics::gauge!(EXECUTIONS, "state" => "running").set(stats.executions_running as f64);
            metrics::counter!(BOXES_CREATED).absolute(stats.boxes_created);
            metrics::gauge!(UPTIME).set(uptime.as_secs_f64());
        });
        self.handle.render()
    }
}
