//! The audit log: one structured `tracing` event per security-relevant action, at level `info`
//! under the target [`TARGET`] (`codebeaker::audit`), so that it can be routed on its own
//! (`--log warn,codebeaker::audit=info --log-format json`).
//!
//! Every event carries `event` (what happened) and `caller` (who asked: the caller name of the
//! token, `anonymous` with authentication off, or `-` when the request had no valid token).
//!
//! | `event` | when | other fields |
//! |---|---|---|
//! | `session.create` | a `session.create` that reached the engine | `session_id`, `container_id`, `language`, `success`, `duration_ms`; on failure `code`, `error` |
//! | `session.close` | a session ended | `session_id`, `language`, `reason` (`client`: `session.close`; `reaped`: the engine ended it: idle timeout, maximum lifetime, or its box died) |
//! | `command` | every `session.execute` that was not refused | `session_id`, `command` (the type), `success`, `duration_ms`, `status` (run commands); on an error `code`, `error` |
//! | `execution.run` | a one-shot run was queued | `execution_id`, `language` |
//! | `execution.finished` | a one-shot run ended | `execution_id`, `language`, `status`, `duration_ms` |
//! | `refused` | a request was refused | `reason` (`unauthorized`, `rate_limited`, `limit_reached`, `session_not_found`, `execution_not_found`), `method` (or the HTTP route), `code`, `error`; `session_id`, `command` when known; `peer` for `unauthorized` |
//! | `refused.suppressed` | refusals of one caller past [`REFUSALS_PER_WINDOW`] in a window of [`REFUSAL_WINDOW`] were not logged one by one | `suppressed` (how many), `window_secs` |
//!
//! Refusals cost the sender nothing, so their lines are rate-limited per caller (the caller `-`
//! stands for every request without a valid token): the first [`REFUSALS_PER_WINDOW`] of a
//! window are logged, the rest are counted and summarised in one `refused.suppressed` line
//! ("N more refusals of caller X suppressed") when the window ends.
//!
//! Secrets never reach the log: no token, no code, no file content, no program output.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use codebeaker_engine::Caller;
use codebeaker_protocol::jsonrpc::{ErrorCode, ErrorObject};

/// The `tracing` target of every audit event.
pub const TARGET: &str = "codebeaker::audit";

/// The caller name logged when a request carried no valid token.
pub(crate) const UNAUTHENTICATED: &str = "-";

/// Longest client-supplied text logged as is; longer text is cut (with `…`).
const MAX_TEXT: usize = 200;

/// Refusal lines logged per caller in one [`REFUSAL_WINDOW`].
pub const REFUSALS_PER_WINDOW: u32 = 20;
/// The window of [`REFUSALS_PER_WINDOW`].
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// One caller's refusals in the current window.
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

fn windows() -> std::sync::MutexGuard<'static, HashMap<String, Window>> {
    static WINDOWS: LazyLock<Mutex<HashMap<String, Window>>> = LazyLock::new(Mutex::default);
    WINDOWS.lock().unwrap_or_else(|p| p.into_inner())
}

fn summarise(caller: &str, window: &Window) {
    if window.suppressed > 0 {
        tracing::info!(
            target: TARGET,
            event = "refused.suppressed",
            caller,
            suppressed = window.suppressed,
            window_secs = REFUSAL_WINDOW.as_secs(),
            "{} more refusals of caller {caller} suppressed",
            window.suppressed
        );
    }
}

/// Whether a refusal of `caller` gets its own line now.
fn admit_refusal(caller: &str) -> bool {
    let now = Instant::now();
    let mut windows = windows();
    let window = windows.entry(caller.to_string()).or_insert(Window {
        started: now,
        logged: 0,
        suppressed: 0,
    });
    if now.duration_since(window.started) >= REFUSAL_WINDOW {
        summarise(caller, window);
        *window = Window {
            started: now,
            logged: 0,
            suppressed: 0,
        };
    }
    if window.logged < REFUSALS_PER_WINDOW {
        window.logged += 1;
        true
    } else {
        window.suppressed += 1;
        false
    }
}

/// Writes the summaries of the windows that have ended, and forgets them (called now and then,
/// so that a caller that stops being refused still gets its summary).
pub(crate) fn flush_refusals() {
    let now = Instant::now();
    windows().retain(|caller, window| {
        let ended = now.duration_since(window.started) >= REFUSAL_WINDOW;
        if ended {
            summarise(caller, window);
        }
        !ended
    });
}

/// `d` in whole milliseconds, for logs and wire fields.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Text that may come from a client (a session id, an error message quoting the request), made
/// safe for a line-based log: control characters escaped, length bounded.
pub(crate) fn clean(text: &str) -> Cow<'_, str> {
    let short = text.chars().count() <= MAX_TEXT;
    if short && !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_TEXT * 2));
    for c in text.chars().take(MAX_TEXT) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if !short {
        out.push('…');
    }
    Cow::Owned(out)
}

/// Why a request with this error code was refused, if the code is a refusal (not a failure of
/// the request itself). `method` tells a session from a one-shot execution for `-32001`.
pub(crate) fn refusal_reason(code: i64, method: &str) -> Option<&'static str> {
    match ErrorCode::from_code(code)? {
        ErrorCode::Unauthorized => Some("unauthorized"),
        ErrorCode::RateLimited => Some("rate_limited"),
        ErrorCode::LimitReached => Some("limit_reached"),
        ErrorCode::SessionNotFound if method.contains("execution") => Some("execution_not_found"),
        ErrorCode::SessionNotFound => Some("session_not_found"),
        _ => None,
    }
}

/// What a refused request was about, when known.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub session_id: Option<&'a str>,
    pub command: Option<&'static str>,
}

/// A request refused with `error`. Errors that are not refusals are not logged here.
pub(crate) fn refused(caller: &Caller, method: &str, error: &ErrorObject, subject: Subject<'_>) {
    let Some(reason) = refusal_reason(error.code, method) else {
        return;
    };
    if !admit_refusal(&caller.0) {
        return;
    }
    tracing::info!(
        target: TARGET,
        event = "refused",
        caller = %caller.0,
        reason,
        method,
        code = error.code,
        error = %clean(&error.message),
        session_id = subject.session_id.map(clean).as_deref(),
        command = subject.command,
        "request refused"
    );
}

/// A request without a valid token.
pub(crate) fn unauthorized(path: &str, peer: Option<SocketAddr>, error: &ErrorObject) {
    if !admit_refusal(UNAUTHENTICATED) {
        return;
    }
    tracing::info!(
        target: TARGET,
        event = "refused",
        caller = UNAUTHENTICATED,
        reason = "unauthorized",
        method = path,
        code = error.code,
        error = %clean(&error.message),
        peer = peer.map(tracing::field::display),
        "request refused"
    );
}

/// A session was created.
pub(crate) fn session_created(
    caller: &Caller,
    session_id: &str,
    container_id: &str,
    language: &str,
    elapsed: Duration,
) {
    tracing::info!(
        target: TARGET,
        event = "session.create",
        caller = %caller.0,
        session_id,
        container_id,
        language,
        success = true,
        duration_ms = millis(elapsed),
        "session created"
    );
}

/// A `session.create` failed for a reason that is not a refusal (an unsupported language,
/// parameters out of range, a box that could not be made).
pub(crate) fn session_create_failed(
    caller: &Caller,
    language: &str,
    error: &ErrorObject,
    elapsed: Duration,
) {
    tracing::info!(
        target: TARGET,
        event = "session.create",
        caller = %caller.0,
        language = %clean(language),
        success = false,
        duration_ms = millis(elapsed),
        code = error.code,
        error = %clean(&error.message),
        "session not created"
    );
}

/// A session ended: `reason` is `client` (closed with `session.close`) or `reaped` (ended by
/// the engine).
pub(crate) fn session_closed(
    caller: &Caller,
    session_id: &str,
    language: Option<&str>,
    reason: &'static str,
) {
    tracing::info!(
        target: TARGET,
        event = "session.close",
        caller = %caller.0,
        session_id,
        language,
        reason,
        "session closed"
    );
}

/// One `session.execute` command that ran (`code`/`error` set when the engine failed).
pub(crate) struct CommandRecord<'a> {
    pub session_id: &'a str,
    pub command: &'static str,
    pub success: bool,
    pub duration: Duration,
    pub status: Option<&'static str>,
    pub error: Option<&'a ErrorObject>,
}

pub(crate) fn command(caller: &Caller, record: CommandRecord<'_>) {
    tracing::info!(
        target: TARGET,
        event = "command",
        caller = %caller.0,
        session_id = record.session_id,
        command = record.command,
        success = record.success,
        duration_ms = millis(record.duration),
        status = record.status,
        code = record.error.map(|e| e.code),
        error = record.error.map(|e| clean(&e.message)).as_deref(),
        "command"
    );
}

/// A one-shot run was queued.
pub(crate) fn execution_queued(caller: &Caller, execution_id: &str, language: &str) {
    tracing::info!(
        target: TARGET,
        event = "execution.run",
        caller = %caller.0,
        execution_id,
        language,
        "one-shot run queued"
    );
}

/// A one-shot run ended.
pub(crate) fn execution_finished(
    caller: &Caller,
    execution_id: &str,
    language: &str,
    status: &'static str,
    duration_ms: Option<u64>,
) {
    tracing::info!(
        target: TARGET,
        event = "execution.finished",
        caller = %caller.0,
        execution_id,
        language,
        status,
        duration_ms,
        "one-shot run finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_is_made_safe_for_a_line_based_log() {
        assert!(matches!(clean("8346b1fb-1535"), Cow::Borrowed(_)));
        assert_eq!(
            clean("x\n{\"event\":\"forged\"}\r\u{1b}[31m"),
            "x\\n{\"event\":\"forged\"}\\r\\u{1b}[31m"
        );
        let long = "a".repeat(MAX_TEXT + 50);
        let cut = clean(&long);
        assert_eq!(cut.chars().count(), MAX_TEXT + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn refusal_lines_are_bounded_per_caller_and_window() {
        let caller = "audit-test-flooder";
        let admitted = (0..1000).filter(|_| admit_refusal(caller)).count();
        assert_eq!(admitted, REFUSALS_PER_WINDOW as usize);
        // Another caller has its own window.
        assert!(admit_refusal("audit-test-other"));
        let suppressed = windows().get(caller).map(|w| w.suppressed);
        assert_eq!(suppressed, Some(1000 - u64::from(REFUSALS_PER_WINDOW)));
    }

    #[test]
    fn refusals_are_told_from_failures() {
        assert_eq!(refusal_reason(-32004, "/ws/jsonrpc"), Some("unauthorized"));
        assert_eq!(
            refusal_reason(-32005, "language.list"),
            Some("rate_limited")
        );
        assert_eq!(
            refusal_reason(-32002, "session.create"),
            Some("limit_reached")
        );
        assert_eq!(
            refusal_reason(-32001, "session.execute"),
            Some("session_not_found")
        );
        assert_eq!(
            refusal_reason(-32001, "execution.status"),
            Some("execution_not_found")
        );
        for code in [-32700, -32600, -32601, -32602, -32603, -32003, 7] {
            assert_eq!(refusal_reason(code, "session.create"), None, "{code}");
        }
    }
}
