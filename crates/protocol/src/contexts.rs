//! The `context.*` methods: stateful code contexts in a session, whose cells share one namespace.
//!
//! A context is a long-lived interpreter in the session's box (Python, JavaScript or Bash);
//! `context.run` runs one cell in it and answers with the cell's output, its rich results (MIME
//! bundles), its error, and the truth about the context's state (`stateLost`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::commands::RunStatus;
use crate::serde_util::null_as_default;

/// Params of `context.create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextCreateParams {
    /// The session whose box runs the context.
    #[serde(alias = "SessionId", alias = "session_id")]
    pub session_id: String,
    /// `python`, `javascript` or `bash` (aliases resolved); the session's language when absent.
    #[serde(alias = "Language", default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Working directory of the context in the box; `/workspace` when absent.
    #[serde(alias = "Cwd", default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment variables of the context.
    #[serde(
        alias = "Env",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
}

/// A context, as `context.create`, `context.list` and `context.restart` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextInfo {
    /// The context's id.
    pub context_id: String,
    /// The session it lives in.
    pub session_id: String,
    /// The registry's name of its language.
    pub language: String,
    /// Its working directory in the box.
    pub cwd: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Cells run in it so far, since its creation.
    pub execution_count: u64,
}

/// Params of `context.run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextRunParams {
    /// The session.
    #[serde(alias = "SessionId", alias = "session_id")]
    pub session_id: String,
    /// The context.
    #[serde(alias = "ContextId", alias = "context_id")]
    pub context_id: String,
    /// The cell's code.
    #[serde(alias = "Code")]
    pub code: String,
    /// Environment variables for this cell only (over the context's).
    #[serde(
        alias = "Env",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit of the cell in milliseconds; on it the cell is interrupted.
    #[serde(
        alias = "TimeoutMs",
        alias = "timeout_ms",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ms: Option<u64>,
    /// Memory limit of the box while the cell runs, in MiB.
    #[serde(
        alias = "MemoryLimit",
        alias = "memory_limit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_limit: Option<u64>,
    /// Send `execution.*` notifications while the cell runs.
    #[serde(alias = "Stream", default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// One rich result of a cell: the value of its final expression (`isMainResult`), a
/// `display(...)` call, or a figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellResult {
    /// MIME type to representation: `text/plain`, `text/html`, `image/png` (base64), ...
    pub data: BTreeMap<String, Value>,
    /// The value of the cell's final expression.
    pub is_main_result: bool,
}

/// A cell's exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellError {
    /// The exception's type, e.g. `ZeroDivisionError`.
    pub name: String,
    /// Its message.
    pub value: String,
    /// The traceback, pointing at the cell's lines.
    pub traceback: String,
}

/// Result of `context.run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextRunResult {
    /// The cell ran to its end without an exception and no limit hit.
    pub success: bool,
    /// How the cell ended: `ok`, `runtime_error` (an exception), `timeout`, `memory_limit`,
    /// `output_limit`, `killed` (cancelled).
    pub status: RunStatus,
    /// What the cell printed.
    pub stdout: String,
    /// What the cell wrote to stderr.
    pub stderr: String,
    /// Its rich results, in order.
    pub results: Vec<CellResult>,
    /// Its exception, `null` when there was none.
    pub error: Option<CellError>,
    /// The kernel's count of cells, this one included (it restarts with the kernel).
    pub execution_count: u64,
    /// The context's state from before this cell is gone: its kernel was lost (a limit, a
    /// crash, a sweep of the box) and this cell ran in a new one, or it was lost during this
    /// cell.
    pub state_lost: bool,
    /// How many kernels the context has had (1 until it is first restarted or lost).
    pub generation: u64,
    /// Output was cut at the output limit.
    pub truncated: bool,
    /// Why a limit stopped the cell, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Time the cell took, in milliseconds.
    pub duration_ms: u64,
}

/// Params of `context.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextListParams {
    /// The session.
    #[serde(alias = "SessionId", alias = "session_id")]
    pub session_id: String,
}

/// Result of `context.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextListResult {
    /// The session's contexts, oldest first.
    pub contexts: Vec<ContextInfo>,
}

/// Params of `context.restart` and `context.close`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextParams {
    /// The session.
    #[serde(alias = "SessionId", alias = "session_id")]
    pub session_id: String,
    /// The context.
    #[serde(alias = "ContextId", alias = "context_id")]
    pub context_id: String,
}

/// Result of `context.close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextCloseResult {
    /// The context that was closed.
    pub context_id: String,
    /// `true`: its kernel and everything it started are gone.
    pub closed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_params_accept_snake_case_and_nulls() {
        let params: ContextRunParams = serde_json::from_value(serde_json::json!({
            "session_id": "s", "context_id": "c", "code": "1", "env": null, "timeout_ms": 5
        }))
        .expect("params");
        assert_eq!(params.context_id, "c");
        assert_eq!(params.timeout_ms, Some(5));
        assert!(params.env.is_empty());
    }

    #[test]
    fn run_result_is_camel_case() {
        let result = ContextRunResult {
            success: true,
            status: RunStatus::Ok,
            stdout: String::new(),
            stderr: String::new(),
            results: vec![CellResult {
                data: BTreeMap::from([("text/plain".to_string(), Value::from("2"))]),
                is_main_result: true,
            }],
            error: None,
            execution_count: 2,
            state_lost: false,
            generation: 1,
            truncated: false,
            message: None,
            duration_ms: 1,
        };
        let json = serde_json::to_value(result).expect("json");
        assert_eq!(json["results"][0]["isMainResult"], true);
        assert_eq!(json["stateLost"], false);
        assert_eq!(json["executionCount"], 2);
        assert!(json["error"].is_null());
    }
}
