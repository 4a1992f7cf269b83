//! The protocol checks of what the server answers: a `session.create` result, a
//! `session.execute` result of the documented shape, and a streamed run's notifications in order
//! and agreeing with the response.

use serde_json::Value;

/// The statuses a run result may have.
const STATUSES: &[&str] = &[
    "ok",
    "runtime_error",
    "compile_error",
    "timeout",
    "memory_limit",
    "output_limit",
    "killed",
    "internal_error",
];

pub(super) struct RunView {
    pub(super) success: bool,
    pub(super) status: String,
    /// `None` when the server sent it as base64.
    pub(super) stdout: Option<String>,
    pub(super) exit_code: Option<i64>,
    pub(super) output: Option<Value>,
    pub(super) error: Option<String>,
}

/// Checks a `session.execute` result against the protocol's shape.
pub(super) fn check_execute(result: &Value) -> Result<RunView, String> {
    let success = result
        .get("success")
        .and_then(Value::as_bool)
        .ok_or("`success` is not a boolean")?;
    result
        .get("durationMs")
        .and_then(Value::as_u64)
        .ok_or("`durationMs` is not a number")?;
    let error = match result.get("error") {
        Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("`error` is neither a string nor null".into()),
        None => return Err("`error` is missing (it must be null on success)".into()),
    };
    let run = match result.get("result") {
        Some(Value::Object(run)) => run,
        None | Some(Value::Null) => {
            if success || error.is_none() {
                return Err("no run result, yet no failure with an error".into());
            }
            return Ok(RunView {
                success,
                status: "refused".into(),
                stdout: None,
                exit_code: None,
                output: None,
                error,
            });
        }
        Some(_) => return Err("`result` is neither an object nor null".into()),
    };
    let status = run
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| STATUSES.contains(s))
        .ok_or_else(|| format!("unknown run status {:?}", run.get("status")))?
        .to_string();
    for field in ["stdout", "stderr"] {
        if !run.get(field).is_some_and(Value::is_string) {
            return Err(format!("`{field}` is not a string"));
        }
    }
    for field in ["timedOut", "oomKilled", "truncated"] {
        if !run.get(field).is_some_and(Value::is_boolean) {
            return Err(format!("`{field}` is not a boolean"));
        }
    }
    for field in ["exitCode", "signal"] {
        if !run.get(field).is_some_and(|v| v.is_null() || v.is_i64()) {
            return Err(format!("`{field}` is neither an integer nor null"));
        }
    }
    if !run.get("durationMs").is_some_and(Value::is_u64) {
        return Err("the run's `durationMs` is not a number".into());
    }
    if success != (status == "ok") {
        return Err(format!("success is {success} but the status is {status}"));
    }
    if run["timedOut"].as_bool() != Some(status == "timeout") {
        return Err(format!("timedOut disagrees with the status {status}"));
    }
    if run["oomKilled"].as_bool() != Some(status == "memory_limit") {
        return Err(format!("oomKilled disagrees with the status {status}"));
    }
    let base64 = run.get("stdoutEncoding").and_then(Value::as_str) == Some("base64");
    Ok(RunView {
        success,
        status,
        stdout: (!base64).then(|| run["stdout"].as_str().unwrap_or_default().to_string()),
        exit_code: run.get("exitCode").and_then(Value::as_i64),
        output: run.get("output").cloned(),
        error,
    })
}

/// Checks a streamed run's notifications: `started` first, `output` chunks numbered from 0
/// without gaps, `completed` last and agreeing with the response. Returns the streamed stdout.
pub(super) fn check_stream(
    events: &[Value],
    session_id: &str,
    run: &RunView,
) -> Result<String, String> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err("a streamed run sent no notifications".into());
    };
    if first["method"] != "execution.started"
        || first["params"]["sessionId"] != session_id
        || first["params"]["command"] != "execute"
    {
        return Err(format!(
            "the first notification is not execution.started: {first}"
        ));
    }
    if events.len() < 2 || last["method"] != "execution.completed" {
        return Err(format!(
            "the last notification is not execution.completed: {last}"
        ));
    }
    if last["params"]["success"].as_bool() != Some(run.success)
        || last["params"]["status"].as_str() != Some(run.status.as_str())
    {
        return Err(format!(
            "execution.completed ({}) disagrees with the response (success {}, status {})",
            last["params"], run.success, run.status
        ));
    }
    let mut stdout = String::new();
    for (seq, event) in events[1..events.len() - 1].iter().enumerate() {
        let p = &event["params"];
        if event["method"] != "execution.output" || p["seq"].as_u64() != Some(seq as u64) {
            return Err(format!("output notification {seq} out of order: {event}"));
        }
        let data = p["data"].as_str().ok_or("output data is not a string")?;
        match p["stream"].as_str() {
            Some("stdout") => stdout.push_str(data),
            Some("stderr") => {}
            other => return Err(format!("unknown output stream {other:?}")),
        }
    }
    Ok(stdout)
}

/// Checks a `session.create` result for `language`; returns the session id.
pub(super) fn check_created(result: &Value, language: &str) -> Result<String, String> {
    let id = result
        .get("sessionId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("no sessionId")?;
    if !result.get("containerId").is_some_and(Value::is_string) {
        return Err("no containerId".into());
    }
    if result.get("language").and_then(Value::as_str) != Some(language) {
        return Err(format!(
            "language is {:?}, asked for {language}",
            result["language"]
        ));
    }
    if result.get("state").and_then(Value::as_str) != Some("Active") {
        return Err(format!("state is {:?}, expected Active", result["state"]));
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn execute_results_are_checked_against_the_protocol() {
        let good = json!({"success": true, "error": null, "durationMs": 5, "result": {
            "stdout": "hi\n", "stderr": "", "exitCode": 0, "signal": null, "status": "ok",
            "timedOut": false, "oomKilled": false, "truncated": false, "durationMs": 4}});
        let run = check_execute(&good).unwrap();
        assert_eq!(run.status, "ok");
        assert_eq!(run.stdout.as_deref(), Some("hi\n"));
        let mut bad = good.clone();
        bad["success"] = json!(false);
        assert!(check_execute(&bad).is_err());
        let mut bad = good.clone();
        bad["result"]["status"] = json!("exploded");
        assert!(check_execute(&bad).is_err());
        let mut bad = good.clone();
        bad.as_object_mut().unwrap().remove("error");
        assert!(check_execute(&bad).is_err());
        let refused = json!({"success": false, "error": "no", "durationMs": 0, "result": null});
        assert_eq!(check_execute(&refused).unwrap().status, "refused");
    }

    #[test]
    fn streams_must_be_in_order_and_agree_with_the_response() {
        let run = RunView {
            success: true,
            status: "ok".into(),
            stdout: Some("ab".into()),
            exit_code: Some(0),
            output: None,
            error: None,
        };
        let started = json!({"method": "execution.started", "params": {"sessionId": "s", "command": "execute"}});
        let out = |seq: u64, data: &str| json!({"method": "execution.output", "params": {"stream": "stdout", "data": data, "seq": seq}});
        let done =
            json!({"method": "execution.completed", "params": {"success": true, "status": "ok"}});
        let events = vec![started.clone(), out(0, "a"), out(1, "b"), done.clone()];
        assert_eq!(check_stream(&events, "s", &run).unwrap(), "ab");
        let gap = vec![started.clone(), out(0, "a"), out(2, "b"), done.clone()];
        assert!(check_stream(&gap, "s", &run).is_err());
        assert!(check_stream(&[started, out(0, "a")], "s", &run).is_err());
    }
}
