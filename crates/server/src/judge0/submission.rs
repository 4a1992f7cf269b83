//! A submission: Judge0's request fields validated against the door's maxima (with the error
//! bodies Judge0's model gives: `{"field": ["message", ...]}`), turned into one engine one-shot
//! run; and a submission written back with the fields a client asks for.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use codebeaker_engine::{Caller, ExecutionRecord, OneShotRequest};
use codebeaker_sandbox::{RunLimits, Verdict, MIB};
use serde_json::{json, Map, Value};

use super::config::Judge0Config;
use super::files;
use super::languages::Judge0Language;
use super::status::{verdict, Judged, Status, StatusJson};

/// Field errors, as Judge0 answers a 422: each field with its messages.
pub(crate) type FieldErrors = BTreeMap<String, Vec<String>>;

/// The longest `compiler_options`, `command_line_arguments` and `callback_url` Judge0 takes.
const MAX_TEXT_OPTION: usize = 512;

/// The smallest memory limit Judge0 takes, in KB.
const MIN_MEMORY_KB: u64 = 2048;

/// What the engine's boxes need at least, in MiB: a smaller `memory_limit` is raised to it.
const MIN_BOX_MEMORY_MB: u64 = 16;

/// Characters Judge0 removes from `command_line_arguments` before the shell splits them.
const STRIPPED: [char; 6] = ['$', '&', ';', '<', '>', '|'];

/// Every field a submission can be written with (`fields=*`): those Judge0's serializer has
/// that its official SDK knows.
pub(crate) const ALL_FIELDS: [&str; 37] = [
    "source_code",
    "language_id",
    "language",
    "stdin",
    "expected_output",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "status",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "wall_time",
    "memory",
    "token",
    "exit_code",
    "exit_signal",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    // Judge0 keeps these too; they are always null or false here.
    "queued_at",
    "started_at",
];

/// The fields written when a client asks for none.
pub(crate) const DEFAULT_FIELDS: [&str; 8] = [
    "token",
    "time",
    "memory",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "status",
];

/// The fields of `?fields=`: the defaults when absent, every one for `*`; unknown names are
/// the error Judge0 gives (`invalid fields: [a, b]`).
pub(crate) fn requested_fields(asked: Option<&str>) -> Result<Vec<&'static str>, String> {
    let asked = asked.map(str::trim).unwrap_or_default();
    if asked.is_empty() {
        return Ok(DEFAULT_FIELDS.to_vec());
    }
    let mut fields = Vec::new();
    let mut invalid = Vec::new();
    for name in asked.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "*" {
            // The SDK's fields: Judge0's `queued_at`/`started_at` would break its model.
            fields.extend(ALL_FIELDS.iter().take(ALL_FIELDS.len() - 2));
            continue;
        }
        match ALL_FIELDS.iter().find(|f| **f == name) {
            Some(field) => fields.push(*field),
            None => invalid.push(name.to_string()),
        }
    }
    if !invalid.is_empty() {
        return Err(format!("invalid fields: [{}]", invalid.join(", ")));
    }
    fields.dedup();
    Ok(fields)
}

/// What the door keeps of a submission besides the engine's record of its run.
#[derive(Debug, Clone)]
pub(crate) struct Submission {
    pub caller: Caller,
    pub language: Judge0Language,
    pub source_code: String,
    pub stdin: Option<String>,
    pub expected_output: Option<String>,
    pub compiler_options: Option<String>,
    pub command_line_arguments: Option<String>,
    /// As sent (base64).
    pub additional_files: Option<String>,
    pub number_of_runs: u64,
    pub cpu_time_limit: f64,
    pub cpu_extra_time: f64,
    pub wall_time_limit: f64,
    pub memory_limit: u64,
    pub stack_limit: u64,
    pub max_processes_and_or_threads: u64,
    pub max_file_size: u64,
    pub redirect_stderr_to_stdout: bool,
}

impl Submission {
    /// About how many bytes it holds.
    pub fn size(&self) -> u64 {
        let text = [
            Some(&self.source_code),
            self.stdin.as_ref(),
            self.expected_output.as_ref(),
            self.compiler_options.as_ref(),
            self.command_line_arguments.as_ref(),
            self.additional_files.as_ref(),
        ];
        let bytes: usize = text.iter().flatten().map(|t| t.len()).sum();
        (bytes + 512) as u64
    }

    /// The limits its verdict is judged against.
    pub fn judged(&self) -> Judged {
        Judged {
            cpu_time_limit: seconds(self.cpu_time_limit),
            wall_time_limit: seconds(self.wall_time_limit),
        }
    }

    /// How long `wait=true` waits at most: every run, its compile, and a margin for the queue.
    pub fn longest(&self, compile: Duration) -> Duration {
        let run = seconds(self.wall_time_limit).saturating_mul(self.number_of_runs as u32);
        run + compile + Duration::from_secs(60)
    }
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

/// A submission as asked for, and the run that carries it out.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub submission: Submission,
    pub request: OneShotRequest,
}

/// Validates one submission (`body`, a JSON object) as Judge0's model does. `base64`: the
/// request's `base64_encoded=true` (then `source_code`, `stdin` and `expected_output` are
/// base64). The run's limits are `base` (the engine's) with the submission's. Decodes and
/// unpacks `additional_files`; call it off the async runtime.
pub(crate) fn parse(
    body: &Value,
    base64: bool,
    base: RunLimits,
    config: &Judge0Config,
    languages: &BTreeMap<u32, Judge0Language>,
    caller: &Caller,
) -> Result<Parsed, FieldErrors> {
    let mut errors = FieldErrors::new();
    let Some(object) = body.as_object() else {
        errors.insert(
            "submission".into(),
            vec!["must be a JSON object of submission fields".into()],
        );
        return Err(errors);
    };
    let mut fields = Fields {
        object,
        errors: &mut errors,
    };
    let source_code = fields
        .encoded("source_code", base64)
        .filter(|s| !s.trim().is_empty());
    if source_code.is_none() && !fields.errors.contains_key("source_code") {
        fields.error("source_code", "can't be blank");
    }
    let stdin = fields.encoded("stdin", base64);
    let expected_output = fields.encoded("expected_output", base64);
    let language = match fields.number("language_id") {
        None => {
            fields.error("language_id", "can't be blank");
            None
        }
        Some(id) => {
            let found = (id.fract() == 0.0 && id >= 0.0 && id <= f64::from(u32::MAX))
                .then(|| languages.get(&(id as u32)))
                .flatten();
            if found.is_none() {
                fields.error(
                    "language_id",
                    &format!("language with id {} doesn't exist", ruby_number(id)),
                );
            }
            found.cloned()
        }
    };
    let c = config;
    let number_of_runs = fields.limit("number_of_runs", Above(0.0), Whole(c.max_number_of_runs));
    let cpu_time_limit = fields.limit("cpu_time_limit", AtLeast(0.0), Real(c.max_cpu_time_limit));
    let cpu_extra_time = fields.limit("cpu_extra_time", AtLeast(0.0), Real(c.max_cpu_extra_time));
    let wall_time_limit =
        fields.limit("wall_time_limit", AtLeast(1.0), Real(c.max_wall_time_limit));
    let memory_limit = fields.limit(
        "memory_limit",
        AtLeast(MIN_MEMORY_KB as f64),
        Whole(c.max_memory_limit),
    );
    let stack_limit = fields.limit("stack_limit", AtLeast(0.0), Whole(c.max_stack_limit));
    let max_processes = fields.limit(
        "max_processes_and_or_threads",
        Above(0.0),
        Whole(c.max_max_processes_and_or_threads),
    );
    let max_file_size = fields.limit("max_file_size", AtLeast(0.0), Whole(c.max_max_file_size));
    for key in [
        "enable_per_process_and_thread_time_limit",
        "enable_per_process_and_thread_memory_limit",
    ] {
        if fields.flag(key) == Some(true) {
            fields.error(key, "this option cannot be enabled");
        }
    }
    if fields.flag("enable_network") == Some(true) {
        fields.error(
            "enable_network",
            "enabling network is not allowed: boxes have no network here",
        );
    }
    let redirect = fields
        .flag("redirect_stderr_to_stdout")
        .unwrap_or(c.redirect_stderr_to_stdout);
    let compiler_options = fields
        .text("compiler_options")
        .filter(|s| !s.trim().is_empty());
    if let Some(options) = &compiler_options {
        if options.chars().count() > MAX_TEXT_OPTION {
            fields.error(
                "compiler_options",
                "is too long (maximum is 512 characters)",
            );
        }
        fields.error(
            "compiler_options",
            "setting compiler options is not allowed: every language compiles with the flags of its registry entry",
        );
    }
    let command_line_arguments = fields
        .text("command_line_arguments")
        .filter(|s| !s.trim().is_empty());
    let mut args = Vec::new();
    if let Some(text) = &command_line_arguments {
        if text.chars().count() > MAX_TEXT_OPTION {
            fields.error(
                "command_line_arguments",
                "is too long (maximum is 512 characters)",
            );
        }
        let cleaned: String = text
            .chars()
            .filter(|c| !STRIPPED.contains(c) && *c != '`')
            .collect();
        match shlex::split(&cleaned) {
            Some(words) => args = words,
            None => fields.error(
                "command_line_arguments",
                "cannot be split into arguments (an unclosed quote?)",
            ),
        }
    }
    if fields
        .text("callback_url")
        .is_some_and(|u| !u.trim().is_empty())
    {
        fields.error(
            "callback_url",
            "setting callback is not allowed: this server never makes requests to an address a submitter chooses; poll GET /submissions/{token} (or use wait=true) instead",
        );
    }
    let additional_files = fields
        .text("additional_files")
        .filter(|s| !s.trim().is_empty());
    let mut workspace_files = Vec::new();
    if let Some(text) = &additional_files {
        match decode(text) {
            Err(()) => fields.error("additional_files", "is not valid base64"),
            Ok(archive) => match files::unpack(&archive, c.max_extract_size.saturating_mul(1024)) {
                Ok(unpacked) => workspace_files = unpacked,
                Err(why) => fields.error("additional_files", &why),
            },
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(source_code), Some(language)) = (source_code, language) else {
        // Both were reported above.
        return Err(errors);
    };
    let submission = Submission {
        caller: caller.clone(),
        language,
        source_code,
        stdin,
        expected_output,
        compiler_options,
        command_line_arguments,
        additional_files,
        number_of_runs: number_of_runs.map_or(c.number_of_runs, |n| n as u64),
        // 0 is "no limit" to isolate; here it is the most this server gives.
        cpu_time_limit: Some(cpu_time_limit.unwrap_or(c.cpu_time_limit))
            .filter(|limit| *limit > 0.0)
            .unwrap_or(c.max_cpu_time_limit),
        cpu_extra_time: cpu_extra_time.unwrap_or(c.cpu_extra_time),
        wall_time_limit: wall_time_limit.unwrap_or(c.wall_time_limit),
        memory_limit: memory_limit.map_or(c.memory_limit, |n| n as u64),
        stack_limit: stack_limit.map_or(c.stack_limit, |n| n as u64),
        max_processes_and_or_threads: max_processes
            .map_or(c.max_processes_and_or_threads, |n| n as u64),
        max_file_size: max_file_size.map_or(c.max_file_size, |n| n as u64),
        redirect_stderr_to_stdout: redirect,
    };
    let s = &submission;
    let request = OneShotRequest {
        language: s.language.language.clone(),
        code: s.source_code.clone(),
        stdin: s.stdin.clone(),
        limits: Some(RunLimits {
            wall_time: seconds(s.wall_time_limit),
            // The program is stopped at its limit plus the extra time; over the limit is a
            // time limit all the same (`status::verdict`).
            cpu_time: seconds(s.cpu_time_limit + s.cpu_extra_time).max(Duration::from_millis(1)),
            memory_bytes: Some(s.memory_limit.div_ceil(1024).max(MIN_BOX_MEMORY_MB) * MIB),
            // More than the engine's own limit is cut to it.
            file_size_bytes: s.max_file_size.saturating_mul(1024),
            ..base
        }),
        args,
        stderr_to_stdout: s.redirect_stderr_to_stdout,
        workspace_files,
        runs: u32::try_from(s.number_of_runs).unwrap_or(1),
        ..OneShotRequest::default()
    };
    Ok(Parsed {
        submission,
        request,
    })
}

/// Base64 as Ruby's `decode64` takes it: line breaks and other whitespace anywhere, padding or
/// none.
fn decode(text: &str) -> Result<Vec<u8>, ()> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    LENIENT.decode(compact.as_bytes()).map_err(|_| ())
}

fn encode(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// The lower bound of a numeric field.
#[derive(Clone, Copy)]
enum Bound {
    Above(f64),
    AtLeast(f64),
}
use Bound::{Above, AtLeast};

/// The upper bound of a numeric field: a whole number, or a real one (Ruby prints `15.0`).
#[derive(Clone, Copy)]
enum Max {
    Whole(u64),
    Real(f64),
}
use Max::{Real, Whole};

impl Max {
    fn value(self) -> f64 {
        match self {
            Whole(n) => n as f64,
            Real(n) => n,
        }
    }

    fn text(self) -> String {
        match self {
            Whole(n) => n.to_string(),
            Real(n) => match decimal(n) {
                Value::String(s) => s,
                other => other.to_string(),
            },
        }
    }
}

/// The fields of one submission object, and the errors found in them.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: &'a mut FieldErrors,
}

impl Fields<'_> {
    fn error(&mut self, key: &str, message: &str) {
        self.errors
            .entry(key.to_string())
            .or_default()
            .push(message.to_string());
    }

    /// A present value: null, and an empty string, are absent (Rails reads both as nil).
    fn value(&self, key: &str) -> Option<&Value> {
        self.object
            .get(key)
            .filter(|v| !v.is_null() && v.as_str() != Some(""))
    }

    fn text(&mut self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.error(key, "is invalid");
                None
            }
        }
    }

    /// A text field that is base64 when the request says so.
    fn encoded(&mut self, key: &str, base64: bool) -> Option<String> {
        let text = self.text(key)?;
        if !base64 {
            return Some(text);
        }
        match decode(&text) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(()) => {
                self.error(key, "is not valid base64 (base64_encoded=true)");
                None
            }
        }
    }

    fn number(&mut self, key: &str) -> Option<f64> {
        let parsed = match self.value(key)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed.filter(|n| n.is_finite()) {
            Some(n) => Some(n),
            None => {
                self.error(key, "is not a number");
                None
            }
        }
    }

    /// A numeric limit within `low` and `max`; the messages are Rails' numericality ones.
    fn limit(&mut self, key: &str, low: Bound, max: Max) -> Option<f64> {
        let value = self.number(key)?;
        let low_ok = match low {
            Above(min) => value > min,
            AtLeast(min) => value >= min,
        };
        if !low_ok {
            let message = match low {
                Above(min) => format!("must be greater than {}", ruby_number(min)),
                AtLeast(min) => format!("must be greater than or equal to {}", ruby_number(min)),
            };
            self.error(key, &message);
            return None;
        }
        if value > max.value() {
            self.error(
                key,
                &format!("must be less than or equal to {}", max.text()),
            );
            return None;
        }
        Some(value)
    }

    /// A boolean as Rails casts one.
    fn flag(&mut self, key: &str) -> Option<bool> {
        Some(match self.value(key)? {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "false" | "f" | "0" | "off" | "no" | "n"
            ),
            _ => true,
        })
    }
}

/// A number as Ruby prints it in Judge0's messages: whole numbers without a fraction.
fn ruby_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A decimal field as Judge0 writes one (a string: `"5.0"`, `"0.5"`).
fn decimal(n: f64) -> Value {
    Value::String(if n.fract() == 0.0 {
        format!("{n:.1}")
    } else {
        format!("{n}")
    })
}

/// A time as Judge0 writes one: seconds, as a string with three decimals.
fn time(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| {
        Value::String(format!("{:.3}", d.as_secs_f64()))
    })
}

fn timestamp(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_millis(t).to_string())
    })
}

/// The submission `sub`, whose run is `record`, with `fields`; text fields in base64 when
/// `base64`.
pub(crate) fn render(
    sub: &Submission,
    record: &ExecutionRecord,
    base64: bool,
    fields: &[&str],
) -> Value {
    let v = verdict(record, sub.expected_output.as_deref(), sub.judged());
    let done = !v.status.pending();
    let compiled_out = record.outcome == Some(Verdict::CompileError);
    let ran = done && !compiled_out && v.status != Status::INTERNAL_ERROR;
    let text = |t: Option<&str>| match t {
        None => Value::Null,
        Some(t) if base64 => Value::String(encode(t)),
        Some(t) => Value::String(t.to_string()),
    };
    fn nonempty(ran: bool, t: &str) -> Option<&str> {
        (ran && !t.is_empty()).then_some(t)
    }
    let mut out = Map::new();
    for field in fields {
        let value = match *field {
            "source_code" => text(Some(&sub.source_code)),
            "language_id" => json!(sub.language.id),
            "language" => json!({"id": sub.language.id, "name": sub.language.name}),
            "stdin" => text(sub.stdin.as_deref()),
            "expected_output" => text(sub.expected_output.as_deref()),
            "stdout" => text(nonempty(ran, &record.stdout)),
            "stderr" => text(nonempty(ran, &record.stderr)),
            "compile_output" => text(compiled_out.then_some(record.error.as_deref()).flatten()),
            "message" => text(v.message.as_deref()),
            "status" => json!(StatusJson::from(v.status)),
            "status_id" => json!(v.status.0),
            "created_at" => timestamp(Some(record.created_at)),
            "finished_at" => timestamp(record.finished_at),
            "time" => time(record.cpu_time.filter(|_| ran)),
            "wall_time" => time(record.wall_time.filter(|_| ran)),
            "memory" => record
                .peak_memory_bytes
                .filter(|_| ran)
                .map_or(Value::Null, |b| json!(b / 1024)),
            "token" => json!(record.id),
            "exit_code" => match ran {
                true => json!(record.exit_code.unwrap_or(0)),
                false => Value::Null,
            },
            "exit_signal" => json!(v.signal.filter(|_| ran)),
            "number_of_runs" => json!(sub.number_of_runs),
            "cpu_time_limit" => decimal(sub.cpu_time_limit),
            "cpu_extra_time" => decimal(sub.cpu_extra_time),
            "wall_time_limit" => decimal(sub.wall_time_limit),
            "memory_limit" => json!(sub.memory_limit),
            "stack_limit" => json!(sub.stack_limit),
            "max_processes_and_or_threads" => json!(sub.max_processes_and_or_threads),
            "enable_per_process_and_thread_time_limit"
            | "enable_per_process_and_thread_memory_limit"
            | "enable_network" => json!(false),
            "max_file_size" => json!(sub.max_file_size),
            "compiler_options" => json!(sub.compiler_options),
            "command_line_arguments" => json!(sub.command_line_arguments),
            "redirect_stderr_to_stdout" => json!(sub.redirect_stderr_to_stdout),
            "additional_files" => json!(sub.additional_files),
            _ => Value::Null,
        };
        out.insert((*field).to_string(), value);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn languages() -> BTreeMap<u32, Judge0Language> {
        let python = Judge0Language {
            id: 71,
            name: "Python (3.11.2)".into(),
            language: "python".into(),
            is_archived: false,
            source_file: "main.py".into(),
            compile_cmd: None,
            run_cmd: "python3 main.py".into(),
        };
        [(71, python)].into()
    }

    fn parse_json(body: Value, base64: bool) -> Result<Parsed, FieldErrors> {
        parse(
            &body,
            base64,
            RunLimits::default(),
            &Judge0Config::default(),
            &languages(),
            &Caller::anonymous(),
        )
    }

    #[test]
    fn a_plain_submission_becomes_a_run_with_judge0s_defaults() {
        let parsed = parse_json(json!({"source_code": "print(1)", "language_id": 71}), false)
            .expect("valid");
        let r = parsed.request;
        assert_eq!(
            (r.language.as_str(), r.code.as_str()),
            ("python", "print(1)")
        );
        let limits = r.limits.expect("the door's limits");
        assert_eq!(limits.wall_time, Duration::from_secs(10));
        assert_eq!(limits.cpu_time, Duration::from_secs(6));
        assert_eq!(limits.memory_bytes, Some(125 * MIB));
        assert_eq!(limits.file_size_bytes, 1024 * 1024);
        assert_eq!(r.runs, 1);
    }

    #[test]
    fn base64_fields_are_decoded() {
        let parsed = parse_json(
            json!({"source_code": "cHJpbnQoMSk=\n", "language_id": "71", "stdin": "aGk", "command_line_arguments": "a 'b c' $HOME;x"}),
            true,
        )
        .expect("valid");
        assert_eq!(parsed.request.code, "print(1)");
        assert_eq!(parsed.request.stdin.as_deref(), Some("hi"));
        assert_eq!(parsed.request.args, ["a", "b c", "HOMEx"]);
    }

    #[test]
    fn errors_are_judge0s_field_messages() {
        let errors = parse_json(
            json!({"language_id": 999, "cpu_time_limit": 16, "memory_limit": 100, "number_of_runs": 0, "wall_time_limit": "x", "callback_url": "http://169.254.169.254/", "enable_network": true}),
            false,
        )
        .expect_err("invalid");
        let first = |k: &str| {
            errors
                .get(k)
                .and_then(|m| m.first())
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(first("source_code"), "can't be blank");
        assert_eq!(first("language_id"), "language with id 999 doesn't exist");
        assert_eq!(
            first("cpu_time_limit"),
            "must be less than or equal to 15.0"
        );
        assert_eq!(
            first("memory_limit"),
            "must be greater than or equal to 2048"
        );
        assert_eq!(first("number_of_runs"), "must be greater than 0");
        assert_eq!(first("wall_time_limit"), "is not a number");
        assert!(first("callback_url").starts_with("setting callback is not allowed"));
        assert!(first("enable_network").starts_with("enabling network is not allowed"));
    }

    #[test]
    fn fields_are_checked() {
        assert_eq!(requested_fields(None).expect("defaults"), DEFAULT_FIELDS);
        assert_eq!(
            requested_fields(Some("token,stdout")).expect("ok"),
            ["token", "stdout"]
        );
        assert!(requested_fields(Some("*"))
            .expect("all")
            .contains(&"exit_code"));
        assert_eq!(
            requested_fields(Some("token,nope,worse")).expect_err("invalid"),
            "invalid fields: [nope, worse]"
        );
    }

    #[test]
    fn numbers_print_as_in_judge0() {
        assert_eq!(ruby_number(15.0), "15");
        assert_eq!(ruby_number(0.5), "0.5");
        assert_eq!(decimal(5.0), json!("5.0"));
        assert_eq!(decimal(0.25), json!("0.25"));
        assert_eq!(time(Some(Duration::from_micros(1500))), json!("0.002"));
    }
}
