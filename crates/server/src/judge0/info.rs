//! The information routes: `/languages`, `/languages/{id}`, `/statuses`, `/config_info`,
//! `/about`, `/version`, `/system_info`, `/workers`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::status::{Status, StatusJson, STATUSES};
use super::{error, Judge0, JUDGE0_VERSION};

/// `GET /languages`: `[{id, name}]`, the ids that run here.
pub(crate) async fn languages(State(door): State<Arc<Judge0>>) -> Json<Value> {
    Json(Value::Array(
        door.languages
            .values()
            .map(|l| json!({"id": l.id, "name": l.name}))
            .collect(),
    ))
}

/// `GET /languages/{id}`: one language with its source file and commands; 404 when it does not
/// run here.
pub(crate) async fn language(State(door): State<Arc<Judge0>>, Path(id): Path<String>) -> Response {
    match id.parse::<u32>().ok().and_then(|n| door.languages.get(&n)) {
        Some(language) => Json(language.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("language with id {id} doesn't exist"),
        )
        .into_response(),
    }
}

/// `GET /statuses`: `[{id, description}]`, 1 to 14.
pub(crate) async fn statuses() -> Json<Vec<StatusJson>> {
    Json(
        STATUSES
            .iter()
            .map(|(id, _)| StatusJson::from(Status(*id)))
            .collect(),
    )
}

/// `GET /config_info`: Judge0's configuration keys (every one the SDK's model requires), with
/// this server's values.
pub(crate) async fn config_info(State(door): State<Arc<Judge0>>) -> Json<Value> {
    let c = &door.config;
    let engine = door.state.engine().config();
    Json(json!({
        "maintenance_mode": false,
        "enable_wait_result": true,
        "enable_compiler_options": false,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": true,
        "enable_submission_delete": false,
        "enable_callbacks": false,
        "callbacks_max_tries": 0,
        "callbacks_timeout": 0.0,
        "enable_additional_files": true,
        "max_queue_size": engine.max_queued_executions,
        "cpu_time_limit": c.cpu_time_limit,
        "max_cpu_time_limit": c.max_cpu_time_limit,
        "cpu_extra_time": c.cpu_extra_time,
        "max_cpu_extra_time": c.max_cpu_extra_time,
        "wall_time_limit": c.wall_time_limit,
        "max_wall_time_limit": c.max_wall_time_limit,
        "memory_limit": c.memory_limit,
        "max_memory_limit": c.max_memory_limit,
        "stack_limit": c.stack_limit,
        "max_stack_limit": c.max_stack_limit,
        "max_processes_and_or_threads": c.max_processes_and_or_threads,
        "max_max_processes_and_or_threads": c.max_max_processes_and_or_threads,
        "enable_per_process_and_thread_time_limit": false,
        "allow_enable_per_process_and_thread_time_limit": false,
        "enable_per_process_and_thread_memory_limit": false,
        "allow_enable_per_process_and_thread_memory_limit": false,
        "max_file_size": c.max_file_size,
        "max_max_file_size": c.max_max_file_size,
        "number_of_runs": c.number_of_runs,
        "max_number_of_runs": c.max_number_of_runs,
        "redirect_stderr_to_stdout": c.redirect_stderr_to_stdout,
        "max_extract_size": c.max_extract_size,
        "enable_batched_submissions": true,
        "max_submission_batch_size": c.max_submission_batch_size,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": false,
        "enable_network": false,
        "allow_enable_network": false,
    }))
}

/// `GET /about`: the Judge0 version this door answers as (the SDK maps language aliases by it).
pub(crate) async fn about() -> Json<Value> {
    Json(json!({
        "version": JUDGE0_VERSION,
        "homepage": "",
        "source_code": "",
        "maintainer": "CodeBeaker, answering Judge0 CE's API (docs/judge0.md)",
    }))
}

/// `GET /version`: the version as plain text.
pub(crate) async fn version() -> &'static str {
    JUDGE0_VERSION
}

/// `GET /system_info`: the little Judge0's clients read of it (its architecture and CPUs).
pub(crate) async fn system_info() -> Json<Value> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Json(json!({
        "Architecture": std::env::consts::ARCH,
        "CPU(s)": cpus.to_string(),
        "Operating System": std::env::consts::OS,
    }))
}

/// `GET /workers`: one queue, the engine's one-shot runs: how many run at once and how many
/// wait.
pub(crate) async fn workers(State(door): State<Arc<Judge0>>) -> Json<Value> {
    let engine = door.state.engine();
    let stats = engine.stats();
    let total = engine.config().max_concurrent_executions.max(1);
    Json(json!([{
        "queue": JUDGE0_VERSION,
        "size": stats.executions_queued,
        "available": total,
        "idle": total.saturating_sub(stats.executions_running),
        "working": stats.executions_running.min(total),
        "paused": 0,
        "failed": 0,
    }]))
}
