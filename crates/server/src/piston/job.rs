//! A Piston request (`POST execute`'s body, `connect`'s `init`) checked and turned into one
//! one-shot run of the engine, with Piston's validation messages in Piston's order.
//!
//! - `language`, `version`, `files` are required; each file's `content` is a string; the first
//!   `utf8` file (no `encoding`, or `utf8`) is the main file, the others are written beside it
//!   (their names default to `file<i>.code`, as Piston names them).
//! - `stdin` gets a trailing newline when it has none (as Piston does; `connect` sends it as is).
//! - Limits: `{compile,run}_{memory_limit,timeout,cpu_time}`, checked in Piston's order. A falsy
//!   value (absent, `null`, `0`) is the default; a memory limit of `-1` too (Piston's clients send
//!   it for "no limit"); a non-number, a value over the configured limit or a negative one is
//!   refused with Piston's message.

use std::time::Duration;

use base64::Engine as _;
use codebeaker_engine::{Engine, OneShotRequest};
use codebeaker_languages::PlanFile;
use codebeaker_sandbox::{RunLimits, MIB};
use serde_json::{Map, Value};

use super::runtimes::{self, Runtime};
use super::PistonError;
use crate::state::AppState;

/// Piston's default run timeout and run CPU time, in milliseconds.
const RUN_DEFAULT_MS: u64 = 3_000;
/// Piston's default compile timeout and compile CPU time, in milliseconds.
const COMPILE_DEFAULT_MS: u64 = 10_000;
/// The least memory a box's run may be given (a box with less cannot start its programs).
const LEAST_MEMORY: u64 = 16 * MIB;

/// A checked request: what to run and how.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub runtime: Runtime,
    pub request: OneShotRequest,
}

/// Checks `body` as Piston does and makes the run it asks for. `interactive` (`connect`) sends
/// `stdin` as it is, without Piston's trailing newline.
pub(crate) fn job(state: &AppState, body: &Value, interactive: bool) -> Result<Job, PistonError> {
    let empty = Map::new();
    let body = body.as_object().unwrap_or(&empty);
    let language = required_string(body, "language")?;
    let version = required_string(body, "version")?;
    let Some(files) = body.get("files").and_then(Value::as_array) else {
        return Err(PistonError::bad_request("files is required as an array"));
    };
    for (i, file) in files.iter().enumerate() {
        if !file.get("content").is_some_and(Value::is_string) {
            return Err(PistonError::bad_request(format!(
                "files[{i}].content is required as a string"
            )));
        }
    }
    let Some(runtime) = runtimes::find(state, language, version) else {
        return Err(PistonError::bad_request(format!(
            "{language}-{version} runtime is unknown"
        )));
    };
    let Some(main) = files.iter().position(|f| encoding(f) == Encoding::Utf8) else {
        return Err(PistonError::bad_request(
            "files must include at least one utf8 encoded file",
        ));
    };
    let limits = Limits::of(state.engine(), body)?;

    let mut code = String::new();
    let mut others = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let content = file
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if i == main {
            code = content.to_string();
            continue;
        }
        let name = match file.get("name") {
            None | Some(Value::Null) => format!("file{i}.code"),
            Some(Value::String(name)) if name.is_empty() => format!("file{i}.code"),
            Some(Value::String(name)) => name.clone(),
            Some(_) => {
                return Err(PistonError::bad_request(format!(
                    "files[{i}].name must be a string"
                )))
            }
        };
        let contents = encoding(file).decode(content).map_err(|why| {
            PistonError::bad_request(format!("files[{i}].content is not valid {why}"))
        })?;
        others.push(PlanFile {
            name,
            contents,
            executable: false,
        });
    }
    let mut stdin = match body.get("stdin") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(PistonError::bad_request("stdin must be a string")),
    };
    if !interactive && !stdin.ends_with('\n') {
        stdin.push('\n');
    }
    let args = match body.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| PistonError::bad_request("args must be an array of strings"))?,
        Some(_) => return Err(PistonError::bad_request("args must be an array of strings")),
    };
    // Piston runs the program in the directory of its files: every other file is in the
    // program's working directory (the workspace), and beside the main file for its compile.
    let workspace_files = others
        .iter()
        .map(|f| (f.name.clone(), f.contents.clone()))
        .collect();
    let request = OneShotRequest {
        language: runtime.registry_name.clone(),
        code,
        stdin: (!stdin.is_empty()).then_some(stdin),
        files: others,
        workspace_files,
        args,
        limits: Some(limits.run),
        compile_limits: runtime.compiled.then_some(limits.compile),
        ..OneShotRequest::default()
    };
    Ok(Job { runtime, request })
}

fn required_string<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, PistonError> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| PistonError::bad_request(format!("{field} is required as a string")))
}

/// A file's encoding; an unknown one is `utf8`, as Piston takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Base64,
    Hex,
}

fn encoding(file: &Value) -> Encoding {
    match file.get("encoding").and_then(Value::as_str) {
        Some("base64") => Encoding::Base64,
        Some("hex") => Encoding::Hex,
        _ => Encoding::Utf8,
    }
}

impl Encoding {
    /// The file's bytes; `Err` names the encoding and what is wrong.
    fn decode(self, content: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Utf8 => Ok(content.as_bytes().to_vec()),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(content.trim())
                .map_err(|e| format!("base64: {e}")),
            Encoding::Hex => hex::decode(content.trim()).map_err(|e| format!("hex: {e}")),
        }
    }
}

/// The limits of both stages.
#[derive(Debug, Clone, Copy)]
struct Limits {
    compile: RunLimits,
    run: RunLimits,
}

/// What a stage may ask for at most here, and what it gets when it asks nothing.
struct Bounds {
    timeout_ms: u64,
    cpu_time_ms: u64,
    memory_bytes: u64,
    default_ms: u64,
}

impl Limits {
    fn of(engine: &Engine, body: &Map<String, Value>) -> Result<Limits, PistonError> {
        let config = engine.config();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let bounds = |stage: &str| match stage {
            "compile" => Bounds {
                timeout_ms: millis(config.compile_limits.wall_time),
                cpu_time_ms: millis(config.compile_limits.cpu_time),
                memory_bytes: config.max_memory_bytes,
                default_ms: COMPILE_DEFAULT_MS,
            },
            _ => Bounds {
                timeout_ms: millis(config.max_run_time),
                cpu_time_ms: millis(config.max_run_time),
                memory_bytes: config.max_memory_bytes,
                default_ms: RUN_DEFAULT_MS,
            },
        };
        // Piston's order: each constraint for both stages, memory first.
        let mut asked = std::collections::HashMap::new();
        for constraint in ["memory_limit", "timeout", "cpu_time"] {
            for stage in ["compile", "run"] {
                let b = bounds(stage);
                let most = match constraint {
                    "memory_limit" => b.memory_bytes,
                    "timeout" => b.timeout_ms,
                    _ => b.cpu_time_ms,
                };
                let name = format!("{stage}_{constraint}");
                if let Some(value) = limit(body, &name, constraint, most)? {
                    asked.insert(name, value);
                }
            }
        }
        let stage = |stage: &str, base: RunLimits| -> Result<RunLimits, PistonError> {
            let b = bounds(stage);
            let ms = |constraint: &str, most: u64| {
                let asked = asked.get(&format!("{stage}_{constraint}")).copied();
                let ms = asked.unwrap_or(b.default_ms as f64).min(most as f64);
                Duration::from_micros((ms * 1000.0).ceil().max(1000.0) as u64)
            };
            let memory_bytes = match asked.get(&format!("{stage}_memory_limit")) {
                Some(&bytes) if bytes < LEAST_MEMORY as f64 => {
                    return Err(PistonError::bad_request(format!(
                        "{stage}_memory_limit must be at least {LEAST_MEMORY} (16 MiB) here"
                    )))
                }
                Some(&bytes) => Some(bytes as u64),
                None => base.memory_bytes,
            };
            Ok(RunLimits {
                wall_time: ms("timeout", b.timeout_ms),
                cpu_time: ms("cpu_time", b.cpu_time_ms),
                memory_bytes,
                ..base
            })
        };
        Ok(Limits {
            compile: stage("compile", config.compile_limits)?,
            run: stage("run", config.run_limits)?,
        })
    }
}

/// One limit of the request, checked as Piston checks it: falsy is absent, then a number, at
/// most `most`, not negative. A memory limit of `-1` is absent too.
fn limit(
    body: &Map<String, Value>,
    name: &str,
    constraint: &str,
    most: u64,
) -> Result<Option<f64>, PistonError> {
    let value = match body.get(name) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(value) => value,
    };
    let Some(number) = value.as_f64() else {
        return Err(PistonError::bad_request(format!(
            "If specified, {name} must be a number"
        )));
    };
    if number == 0.0 || (constraint == "memory_limit" && number == -1.0) {
        return Ok(None);
    }
    if number > most as f64 {
        return Err(PistonError::bad_request(format!(
            "{name} cannot exceed the configured limit of {most}"
        )));
    }
    if number < 0.0 {
        return Err(PistonError::bad_request(format!(
            "{name} must be non-negative"
        )));
    }
    Ok(Some(number))
}
