//! `codebeaker load`: many WebSocket clients at once against a server, for a fixed time or a fixed
//! number of runs, with attack programs mixed in, and a check at the end that nothing leaked.
//!
//! Each client is one WebSocket that opens a session (python, javascript, bash, go in turn), runs
//! a few programs in it, closes it, and starts over until the time or the runs are used up.
//! Normal programs have a known answer (a snippet's output, an upper-cased stdin, an exit code);
//! attack programs (fork bomb, memory bomb, output flood, infinite loop, daemons, `kill -9 -1`)
//! must end with the typed status their limit implies, and the session must go on working after
//! them. Every frame the server sends is checked against the protocol: JSON-RPC 2.0, the id of
//! the request in flight, exactly one of `result` and `error`, results of the documented shape,
//! streamed notifications in order and agreeing with the response.
//!
//! The server is the one `--server` names (loopback only), or one started in this process on an
//! ephemeral port. Its resident memory and open descriptors are sampled every second. At the end:
//! box cgroups of the server's pid, processes in the boxes' uid range, mounts on the sandbox's
//! root mount point, and the server's descriptors against its start. The exit code is 0 when
//! there were no protocol errors, no wrong results and no leaks, 1 otherwise.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use codebeaker_engine::Engine;
use codebeaker_server::{Server, ServerHandle};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::parse;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Most clients one load run may start.
const MAX_CLIENTS: usize = 1000;
/// Longest a `--runs` soak may take when no `--duration` bounds it.
const MAX_SOAK_TIME: Duration = Duration::from_secs(4 * 3600);
/// Time limit of normal programs: generous, so that an overloaded host does not fail them.
const NORMAL_TIMEOUT_MS: u64 = 30_000;
/// Time limit of attacks that only stop at their limit (loops, bombs).
const ATTACK_TIMEOUT_MS: u64 = 2_000;
/// Memory limit of memory bombs, in MB.
const BOMB_MEMORY_MB: u64 = 64;
/// How long beyond a run's own limit a client waits for the answer before it counts "no answer".
const REPLY_MARGIN: Duration = Duration::from_secs(60);
/// Timeout of `session.create`, `session.close` and other quick requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Error and wrong-result examples kept for the report.
const MAX_SAMPLES: usize = 20;
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
/// Languages the load knows programs for.
const LANGUAGES: &[&str] = &["python", "javascript", "bash", "go"];

#[derive(Args)]
pub struct LoadArgs {
    /// A running server, e.g. ws://127.0.0.1:5000/ws/jsonrpc (loopback only); without one, a
    /// server starts in this process on an ephemeral port.
    #[arg(long)]
    server: Option<String>,
    /// Pid of the `--server` process, for its memory, descriptors and boxes (default: the
    /// process listening on the URL's port).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Bearer token for a server with authentication on.
    #[arg(long, env = "CODEBEAKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Configuration of the in-process server, as `codebeaker serve --config` (the
    /// `CODEBEAKER_*` environment applies too).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Concurrent WebSocket clients (1-1000).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// How long to load the server [default: 60s; with --runs, until the runs are done, at
    /// most 4h].
    #[arg(long, value_parser = parse::duration)]
    duration: Option<Duration>,
    /// Soak mode: stop after this many runs instead of after a duration.
    #[arg(long)]
    runs: Option<u64>,
    /// Mix attack programs (fork bomb, memory bomb, output flood, infinite loop, daemons,
    /// kill -9 -1) into the runs, one in four.
    #[arg(long)]
    attacks: bool,
    /// Languages of the sessions, comma-separated: python, javascript, bash, go.
    #[arg(long, value_delimiter = ',', default_value = "python,javascript,bash")]
    languages: Vec<String>,
    /// Seed of the program mix (the same seed makes the same choices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON on standard output (the summary still goes to standard error).
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------------------------------------
// Programs.

/// What a program's run must look like.
#[derive(Clone, Copy)]
enum Check {
    /// A snippet: its output must be what the language's `snippet_input` says.
    Snippet,
    /// Reads `hello <n>` on stdin and prints it upper-cased with a newline.
    Upper,
    /// Exits with code 3: `runtime_error`.
    Exit3,
    /// An attack: it must end with one of these statuses.
    Ends(&'static [&'static str]),
}

struct Program {
    name: &'static str,
    code: &'static str,
    check: Check,
    timeout_ms: u64,
    memory_mb: Option<u64>,
}

const fn normal(name: &'static str, code: &'static str, check: Check) -> Program {
    Program {
        name,
        code,
        check,
        timeout_ms: NORMAL_TIMEOUT_MS,
        memory_mb: None,
    }
}

/// An attack that runs until its limit stops it.
const fn bounded(name: &'static str, code: &'static str, ends: &'static [&'static str]) -> Program {
    Program {
        name,
        code,
        check: Check::Ends(ends),
        timeout_ms: ATTACK_TIMEOUT_MS,
        memory_mb: None,
    }
}

/// An attack that ends by itself (its limit is the normal one).
const fn quick(name: &'static str, code: &'static str, ends: &'static [&'static str]) -> Program {
    Program {
        name,
        code,
        check: Check::Ends(ends),
        timeout_ms: NORMAL_TIMEOUT_MS,
        memory_mb: None,
    }
}

const fn bomb(name: &'static str, code: &'static str, ends: &'static [&'static str]) -> Program {
    Program {
        name,
        code,
        check: Check::Ends(ends),
        timeout_ms: 10_000,
        memory_mb: Some(BOMB_MEMORY_MB),
    }
}

const TIMEOUT: &[&str] = &["timeout"];
/// A memory bomb hits its memory limit, unless an overloaded host runs it out of time first.
const MEMORY: &[&str] = &["memory_limit", "timeout"];
const OUTPUT: &[&str] = &["output_limit"];
const OK: &[&str] = &["ok"];
/// `kill -9 -1` kills every process of the sandbox user but the caller; where the program runs in
/// a warm worker, the worker is among them and the run may end `killed`.
const KILL_ALL: &[&str] = &["ok", "killed"];

const PYTHON_NORMAL: &[Program] = &[
    normal(
        "snippet",
        "result = {'sum': sum(input_data['xs']), 'n': len(input_data['xs'])}",
        Check::Snippet,
    ),
    normal(
        "stdin",
        "import sys\nprint(sys.stdin.read().upper())",
        Check::Upper,
    ),
    normal("exit3", "import sys\nsys.exit(3)", Check::Exit3),
];

const PYTHON_ATTACKS: &[Program] = &[
    bounded(
        "fork_bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        TIMEOUT,
    ),
    bomb(
        "memory_bomb",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n",
        MEMORY,
    ),
    quick(
        "output_flood",
        "import sys\nwhile True:\n    sys.stdout.write('x' * 4096 + '\\n')\n",
        OUTPUT,
    ),
    bounded("infinite_loop", "while True:\n    pass\n", TIMEOUT),
    quick(
        "daemon",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(600)\n    os._exit(0)\nos.wait()\nprint('parent done')\n",
        OK,
    ),
    quick(
        "kill_all",
        "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError:\n    pass\nprint('survived')\n",
        KILL_ALL,
    ),
];

const JAVASCRIPT_NORMAL: &[Program] = &[
    normal(
        "snippet",
        "const result = { sum: input_data.xs.reduce((a, b) => a + b, 0), n: input_data.xs.length };",
        Check::Snippet,
    ),
    normal(
        "stdin",
        "console.log(require('fs').readFileSync(0, 'utf8').toUpperCase());",
        Check::Upper,
    ),
    normal("exit3", "process.exit(3);", Check::Exit3),
];

const JAVASCRIPT_ATTACKS: &[Program] = &[
    bounded("infinite_loop", "for (;;) {}\n", TIMEOUT),
    bomb(
        "memory_bomb",
        "const chunks = [];\nfor (;;) chunks.push(Buffer.alloc(8 << 20, 1));\n",
        MEMORY,
    ),
    quick(
        "output_flood",
        "const fs = require('fs');\nconst line = 'x'.repeat(4096) + '\\n';\nfor (;;) fs.writeSync(1, line);\n",
        OUTPUT,
    ),
    quick(
        "kill_all",
        "try { process.kill(-1, 'SIGKILL'); } catch (e) {}\nconsole.log('survived');\n",
        KILL_ALL,
    ),
];

const BASH_NORMAL: &[Program] = &[
    normal(
        "snippet",
        "n=${input_data//[^0-9]/}\nresult=\"{\\\"double\\\": $((n * 2))}\"",
        Check::Snippet,
    ),
    normal("stdin", "read -r line\necho \"${line^^}\"", Check::Upper),
    normal("exit3", "exit 3", Check::Exit3),
];

const BASH_ATTACKS: &[Program] = &[
    bounded(
        "fork_bomb",
        "bomb() { bomb | bomb & }\nbomb\nwhile :; do :; done\n",
        TIMEOUT,
    ),
    bomb("memory_bomb", "x=x\nwhile :; do x=$x$x; done\n", MEMORY),
    quick("output_flood", "yes flood\n", OUTPUT),
    bounded("infinite_loop", "while :; do :; done\n", TIMEOUT),
    quick(
        "daemon",
        "nohup sleep 600 >/dev/null 2>&1 &\n(setsid sleep 600 >/dev/null 2>&1 &)\necho started\n",
        OK,
    ),
    quick("kill_all", "kill -9 -1\necho survived\n", KILL_ALL),
];

const GO_NORMAL: &[Program] = &[normal(
    "snippet",
    "value := input_data[\"value\"].(float64)\nresult := map[string]interface{}{\"output\": value * 2}",
    Check::Snippet,
)];

/// The programs of one language.
struct Language {
    name: &'static str,
    normal: &'static [Program],
    attacks: &'static [Program],
}

fn language(name: &str) -> Option<Language> {
    let (name, normal, attacks) = match name {
        "python" => ("python", PYTHON_NORMAL, PYTHON_ATTACKS),
        "javascript" => ("javascript", JAVASCRIPT_NORMAL, JAVASCRIPT_ATTACKS),
        "bash" => ("bash", BASH_NORMAL, BASH_ATTACKS),
        "go" => ("go", GO_NORMAL, &[] as &[Program]),
        _ => return None,
    };
    Some(Language {
        name,
        normal,
        attacks,
    })
}

impl Language {
    /// A snippet input and the output the language's snippet must produce for it.
    fn snippet_input(&self, rng: &mut Rng) -> (Value, Value) {
        match self.name {
            "bash" => {
                let n = 1 + rng.below(100_000);
                (json!({ "n": n }), json!({ "double": n * 2 }))
            }
            "go" => {
                let v = rng.below(100_000);
                (json!({ "value": v }), json!({ "output": v * 2 }))
            }
            _ => {
                let xs: Vec<u64> = (0..1 + rng.below(8)).map(|_| rng.below(1000)).collect();
                let sum: u64 = xs.iter().sum();
                (json!({ "xs": xs }), json!({ "sum": sum, "n": xs.len() }))
            }
        }
    }
}

/// A small deterministic generator (xorshift64*): the same seed makes the same program mix.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ---------------------------------------------------------------------------------------------
// One JSON-RPC connection that checks every frame.

/// Why a call got no result.
enum Failure {
    /// The server refused for now (`-32002` limit reached, `-32005` rate limited).
    Busy(String),
    /// A well-formed JSON-RPC error the load did not expect.
    Rpc { code: i64, message: String },
    /// No answer, or an answer that breaks the protocol: the connection cannot be trusted.
    Broken(String),
}

struct Conn {
    ws: Ws,
    next_id: u64,
}

impl Conn {
    async fn connect(url: &str, token: Option<&str>) -> Result<Conn> {
        let mut request = url.into_client_request()?;
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("Authorization", format!("Bearer {token}").parse()?);
        }
        let (ws, _) =
            tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .context("connecting timed out")??;
        Ok(Conn { ws, next_id: 1 })
    }

    /// Sends one request and waits for its response. Notifications are only expected when
    /// `events` is given (a streamed `session.execute`); they are collected there.
    async fn call(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
        mut events: Option<&mut Vec<Value>>,
    ) -> Result<Value, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(e) = self.ws.send(Message::text(request.to_string())).await {
            return Err(Failure::Broken(format!("{method}: sending failed: {e}")));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => {
                    return Err(Failure::Broken(format!(
                        "{method}: no response within {timeout:?}"
                    )))
                }
                Ok(None) => {
                    return Err(Failure::Broken(format!(
                        "{method}: the connection closed while waiting for the response"
                    )))
                }
                Ok(Some(Err(e))) => {
                    return Err(Failure::Broken(format!("{method}: WebSocket error: {e}")))
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let text = match frame {
                Message::Text(text) => text,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Binary(_) => {
                    return Err(Failure::Broken(format!("{method}: a binary frame")))
                }
                Message::Close(close) => {
                    return Err(Failure::Broken(format!(
                        "{method}: the server closed the connection ({close:?})"
                    )))
                }
            };
            let message: Value = serde_json::from_str(text.as_str()).map_err(|e| {
                Failure::Broken(format!(
                    "{method}: a frame that is not JSON ({e}): {text:.200}"
                ))
            })?;
            let Some(object) = message.as_object() else {
                return Err(Failure::Broken(format!(
                    "{method}: a frame that is not one JSON object: {text:.200}"
                )));
            };
            if object.get("jsonrpc") != Some(&json!("2.0")) {
                return Err(Failure::Broken(format!(
                    "{method}: `jsonrpc` is not \"2.0\": {text:.200}"
                )));
            }
            match object.get("id") {
                Some(got) if !got.is_null() => {
                    if *got != json!(id) {
                        return Err(Failure::Broken(format!(
                            "{method}: a response for id {got}, expected {id}"
                        )));
                    }
                    return match (object.get("result"), object.get("error")) {
                        (Some(result), None) => Ok(result.clone()),
                        (None, Some(error)) => Err(rpc_failure(method, error, &text)),
                        _ => Err(Failure::Broken(format!(
                            "{method}: a response must carry exactly one of result and error: {text:.200}"
                        ))),
                    };
                }
                _ => {
                    let name = object.get("method").and_then(Value::as_str);
                    let params = object.get("params").cloned().unwrap_or(Value::Null);
                    match (name, events.as_deref_mut()) {
                        (Some(name), Some(events))
                            if name.starts_with("execution.")
                                && params.get("requestId") == Some(&json!(id)) =>
                        {
                            events.push(json!({"method": name, "params": params}));
                        }
                        _ => {
                            return Err(Failure::Broken(format!(
                                "{method}: an unexpected notification or a message without id: {text:.200}"
                            )))
                        }
                    }
                }
            }
        }
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ws.close(None)).await;
    }
}

fn rpc_failure(method: &str, error: &Value, text: &str) -> Failure {
    let (Some(code), Some(message)) = (
        error.get("code").and_then(Value::as_i64),
        error.get("message").and_then(Value::as_str),
    ) else {
        return Failure::Broken(format!(
            "{method}: an error without an integer code and a message: {text:.200}"
        ));
    };
    match code {
        -32002 | -32005 => Failure::Busy(message.to_string()),
        _ => Failure::Rpc {
            code,
            message: format!("{method}: {message}"),
        },
    }
}

/// A checked `session.execute` result.
struct RunView {
    success: bool,
    status: String,
    /// `None` when the server sent it as base64.
    stdout: Option<String>,
    exit_code: Option<i64>,
    output: Option<Value>,
    error: Option<String>,
}

/// Checks a `session.execute` result against the protocol's shape.
fn check_execute(result: &Value) -> Result<RunView, String> {
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
fn check_stream(events: &[Value], session_id: &str, run: &RunView) -> Result<String, String> {
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

// ---------------------------------------------------------------------------------------------
// The clients.

/// What the clients share.
struct Plan {
    url: String,
    token: Option<String>,
    languages: Vec<Language>,
    attacks: bool,
    seed: u64,
    deadline: Instant,
    /// Runs left in soak mode.
    tickets: Option<AtomicU64>,
    /// Live counters for the progress line.
    runs: AtomicU64,
    errors: AtomicU64,
}

impl Plan {
    fn over(&self) -> bool {
        Instant::now() >= self.deadline
            || self
                .tickets
                .as_ref()
                .is_some_and(|t| t.load(Ordering::Relaxed) == 0)
    }

    /// Takes the right to start one more run.
    fn take_run(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        match &self.tickets {
            None => true,
            Some(t) => t
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// What one client saw; merged into the report.
#[derive(Default)]
struct Tally {
    runs: u64,
    latencies_us: Vec<u64>,
    normal_latencies_us: Vec<u64>,
    by_status: BTreeMap<String, u64>,
    by_program: BTreeMap<String, BTreeMap<String, u64>>,
    protocol_errors: u64,
    error_samples: Vec<String>,
    wrong_results: u64,
    wrong_samples: Vec<String>,
    normal_timeouts: u64,
    busy: u64,
    sessions_lost: u64,
    lost_samples: Vec<String>,
    sessions_created: u64,
    sessions_closed: u64,
    reconnects: u64,
    streamed: u64,
}

impl Tally {
    fn protocol_error(&mut self, plan: &Plan, what: String) {
        self.protocol_errors += 1;
        plan.errors.fetch_add(1, Ordering::Relaxed);
        if self.error_samples.len() < MAX_SAMPLES {
            self.error_samples.push(what);
        }
    }

    fn wrong(&mut self, what: String) {
        self.wrong_results += 1;
        if self.wrong_samples.len() < MAX_SAMPLES {
            self.wrong_samples.push(what);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.runs += other.runs;
        self.latencies_us.extend(other.latencies_us);
        self.normal_latencies_us.extend(other.normal_latencies_us);
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, statuses) in other.by_program {
            let mine = self.by_program.entry(k).or_default();
            for (s, v) in statuses {
                *mine.entry(s).or_default() += v;
            }
        }
        self.protocol_errors += other.protocol_errors;
        self.error_samples.extend(other.error_samples);
        self.error_samples.truncate(MAX_SAMPLES);
        self.wrong_results += other.wrong_results;
        self.wrong_samples.extend(other.wrong_samples);
        self.wrong_samples.truncate(MAX_SAMPLES);
        self.normal_timeouts += other.normal_timeouts;
        self.busy += other.busy;
        self.sessions_lost += other.sessions_lost;
        self.lost_samples.extend(other.lost_samples);
        self.lost_samples.truncate(MAX_SAMPLES);
        self.sessions_created += other.sessions_created;
        self.sessions_closed += other.sessions_closed;
        self.reconnects += other.reconnects;
        self.streamed += other.streamed;
    }
}

/// One client: sessions one after another, a few runs in each, until the plan is over.
async fn client(index: usize, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new(plan.seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut conn: Option<Conn> = None;
    // A session whose connection broke: closed as soon as there is a connection again.
    let mut orphan: Option<String> = None;
    let mut cycle = index;
    while !plan.over() {
        if conn.is_none() {
            match Conn::connect(&plan.url, plan.token.as_deref()).await {
                Ok(c) => {
                    if tally.sessions_created > 0 || orphan.is_some() {
                        tally.reconnects += 1;
                    }
                    conn = Some(c);
                }
                Err(e) => {
                    tally.protocol_error(&plan, format!("connecting: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Some(id) = orphan.take() {
            close_session(c, &id, &plan, &mut tally).await;
        }
        let language = &plan.languages[cycle % plan.languages.len()];
        cycle += 1;
        let session_id = match c
            .call(
                "session.create",
                json!({"language": language.name}),
                REQUEST_TIMEOUT,
                None,
            )
            .await
        {
            Ok(result) => match check_created(&result, language.name) {
                Ok(id) => id,
                Err(e) => {
                    tally.protocol_error(&plan, format!("session.create: {e}"));
                    if let Some(id) = result.get("sessionId").and_then(Value::as_str) {
                        orphan = Some(id.to_string());
                    }
                    continue;
                }
            },
            Err(Failure::Busy(_)) => {
                tally.busy += 1;
                tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
                continue;
            }
            Err(Failure::Rpc { code, message }) => {
                tally.protocol_error(&plan, format!("{code}: {message}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(Failure::Broken(e)) => {
                tally.protocol_error(&plan, e);
                conn = None;
                continue;
            }
        };
        tally.sessions_created += 1;
        let runs_here = 3 + rng.below(10);
        let mut alive = true;
        for _ in 0..runs_here {
            if !plan.take_run() {
                break;
            }
            let Some(c) = conn.as_mut() else { break };
            match one_run(c, &session_id, language, &plan, &mut rng, &mut tally).await {
                RunEnd::Fine => {}
                RunEnd::SessionGone => {
                    alive = false;
                    break;
                }
                RunEnd::ConnectionBroken => {
                    conn = None;
                    break;
                }
            }
        }
        match conn.as_mut() {
            Some(c) if alive => close_session(c, &session_id, &plan, &mut tally).await,
            Some(_) => {}
            None => orphan = Some(session_id),
        }
    }
    if let Some(id) = orphan.take() {
        if let Ok(mut c) = Conn::connect(&plan.url, plan.token.as_deref()).await {
            close_session(&mut c, &id, &plan, &mut tally).await;
            c.close().await;
        }
    }
    if let Some(c) = conn {
        c.close().await;
    }
    tally
}

fn check_created(result: &Value, language: &str) -> Result<String, String> {
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

async fn close_session(c: &mut Conn, id: &str, plan: &Plan, tally: &mut Tally) {
    match c
        .call(
            "session.close",
            json!({"sessionId": id}),
            REQUEST_TIMEOUT,
            None,
        )
        .await
    {
        Ok(result) => {
            if result.get("closed") == Some(&json!(true)) && result["sessionId"] == id {
                tally.sessions_closed += 1;
            } else {
                tally.protocol_error(plan, format!("session.close: unexpected result {result}"));
            }
        }
        Err(Failure::Busy(m)) => tally.protocol_error(plan, format!("session.close refused: {m}")),
        Err(Failure::Rpc { code, message }) => {
            tally.protocol_error(plan, format!("{code}: {message}"))
        }
        Err(Failure::Broken(e)) => tally.protocol_error(plan, e),
    }
}

enum RunEnd {
    Fine,
    SessionGone,
    ConnectionBroken,
}

/// One `session.execute` of a normal or attack program, checked.
async fn one_run(
    c: &mut Conn,
    session_id: &str,
    language: &Language,
    plan: &Plan,
    rng: &mut Rng,
    tally: &mut Tally,
) -> RunEnd {
    let attack = plan.attacks && !language.attacks.is_empty() && rng.below(4) == 0;
    let program = if attack {
        &language.attacks[rng.below(language.attacks.len() as u64) as usize]
    } else {
        &language.normal[rng.below(language.normal.len() as u64) as usize]
    };
    let mut command =
        json!({"type": "execute", "code": program.code, "timeoutMs": program.timeout_ms});
    let mut expected_output = None;
    let mut stdin_number = 0;
    match program.check {
        Check::Snippet => {
            let (input, output) = language.snippet_input(rng);
            command["input"] = input;
            expected_output = Some(output);
        }
        Check::Upper => {
            stdin_number = rng.below(1_000_000);
            command["stdin"] = json!(format!("hello {stdin_number}"));
        }
        Check::Exit3 | Check::Ends(_) => {}
    }
    if let Some(mb) = program.memory_mb {
        command["memoryLimit"] = json!(mb);
    }
    let stream = rng.below(4) == 0;
    let params = json!({"sessionId": session_id, "command": command, "stream": stream});
    let mut events = Vec::new();
    let started = Instant::now();
    let timeout = Duration::from_millis(program.timeout_ms) + REPLY_MARGIN;
    let reply = c
        .call(
            "session.execute",
            params,
            timeout,
            stream.then_some(&mut events),
        )
        .await;
    let elapsed = started.elapsed();
    tally.runs += 1;
    plan.runs.fetch_add(1, Ordering::Relaxed);
    let label = format!("{}/{}", language.name, program.name);
    let result = match reply {
        Ok(result) => result,
        Err(Failure::Busy(_)) => {
            tally.busy += 1;
            *tally
                .by_program
                .entry(label)
                .or_default()
                .entry("refused_busy".into())
                .or_default() += 1;
            return RunEnd::Fine;
        }
        Err(Failure::Rpc { code, message }) => {
            // An attack may wreck its box beyond what the host waits for (the box is then
            // destroyed and the session closed, with -32001 saying so): a typed outcome of the
            // attack. A normal program must never lose its session.
            if attack && code == -32001 && message.contains("box died") {
                tally.sessions_lost += 1;
                *tally
                    .by_program
                    .entry(label)
                    .or_default()
                    .entry("session_lost".into())
                    .or_default() += 1;
                if tally.lost_samples.len() < MAX_SAMPLES {
                    tally.lost_samples.push(message);
                }
            } else {
                tally.protocol_error(plan, format!("{label}: {code}: {message}"));
            }
            return if code == -32001 {
                RunEnd::SessionGone
            } else {
                RunEnd::Fine
            };
        }
        Err(Failure::Broken(e)) => {
            tally.protocol_error(plan, format!("{label}: {e}"));
            return RunEnd::ConnectionBroken;
        }
    };
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    tally.latencies_us.push(micros);
    if !attack {
        tally.normal_latencies_us.push(micros);
    }
    let run = match check_execute(&result) {
        Ok(run) => run,
        Err(e) => {
            tally.protocol_error(plan, format!("{label}: session.execute result: {e}"));
            return RunEnd::Fine;
        }
    };
    *tally.by_status.entry(run.status.clone()).or_default() += 1;
    *tally
        .by_program
        .entry(label.clone())
        .or_default()
        .entry(run.status.clone())
        .or_default() += 1;
    if stream {
        tally.streamed += 1;
        match check_stream(&events, session_id, &run) {
            Ok(streamed) => {
                let complete = matches!(program.check, Check::Upper) && run.status == "ok";
                if complete && run.stdout.as_deref() != Some(streamed.as_str()) {
                    tally.protocol_error(
                        plan,
                        format!(
                            "{label}: streamed stdout {streamed:?} differs from the result's {:?}",
                            run.stdout
                        ),
                    );
                }
            }
            Err(e) => tally.protocol_error(plan, format!("{label}: streaming: {e}")),
        }
    }
    let describe = |run: &RunView| {
        format!(
            "status {}, exit code {:?}, stdout {:.120?}, output {:?}, error {:.300?}",
            run.status, run.exit_code, run.stdout, run.output, run.error
        )
    };
    match program.check {
        _ if !attack && run.status == "timeout" => tally.normal_timeouts += 1,
        Check::Snippet => {
            if run.status != "ok" || run.output != expected_output {
                tally.wrong(format!(
                    "{label}: expected output {:?}; got {}",
                    expected_output,
                    describe(&run)
                ));
            }
        }
        Check::Upper => {
            let expected = format!("HELLO {stdin_number}\n");
            if run.status != "ok" || run.stdout.as_deref() != Some(expected.as_str()) {
                tally.wrong(format!(
                    "{label}: expected stdout {expected:?}; got {}",
                    describe(&run)
                ));
            }
        }
        Check::Exit3 => {
            if run.status != "runtime_error" || run.exit_code != Some(3) {
                tally.wrong(format!(
                    "{label}: expected runtime_error with exit code 3; got {}",
                    describe(&run)
                ));
            }
        }
        Check::Ends(statuses) => {
            if !statuses.contains(&run.status.as_str()) {
                tally.wrong(format!(
                    "{label}: expected {}; got {}",
                    statuses.join(" or "),
                    describe(&run)
                ));
            }
        }
    }
    RunEnd::Fine
}

// ---------------------------------------------------------------------------------------------
// Looking at the server from the outside: memory, descriptors, boxes.

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn descriptors(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Names of the box cgroups of `pid` (`cb-<pid>-<n>`), in every hierarchy.
fn box_cgroups(pid: u32) -> BTreeSet<String> {
    let prefix = format!("cb-{pid}-");
    let mut parents = vec![PathBuf::from("/sys/fs/cgroup/codebeaker")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        parents.extend(entries.flatten().map(|e| e.path().join("codebeaker")));
    }
    let mut names = BTreeSet::new();
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && entry.path().is_dir() {
                names.insert(name);
            }
        }
    }
    names
}

/// Processes in the boxes' uid range that belong to `server`'s boxes, or to no box at all.
fn box_processes(server: u32, id_base: u32) -> Vec<String> {
    let mine = format!("/codebeaker/cb-{server}-");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        let Some(uid) = uid else { continue };
        if !(u64::from(id_base)..u64::from(id_base) + codebeaker_sandbox::id_span())
            .contains(&u64::from(uid))
        {
            continue;
        }
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let other_box = cgroups.contains("/codebeaker/cb-") && !cgroups.contains(&mine);
        if other_box {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline: String = String::from_utf8_lossy(&cmdline)
            .split(['\0', '\n'])
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(120)
            .collect();
        found.push(format!("pid {pid} uid {uid}: {}", cmdline.trim()));
    }
    found
}

/// Mounts on the sandbox's root mount point in `pid`'s mount namespace.
fn root_mounts(pid: u32, mountpoint: &std::path::Path) -> usize {
    let target = mountpoint.to_string_lossy();
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(target.as_ref()))
        .count()
}

/// Everything the leak check counts, at one moment.
#[derive(Debug, Clone, Default)]
struct Probe {
    cgroups: BTreeSet<String>,
    processes: Vec<String>,
    mounts: usize,
    descriptors: usize,
}

impl Probe {
    fn take(target: &Target) -> Probe {
        Probe {
            cgroups: box_cgroups(target.pid),
            processes: box_processes(target.pid, target.id_base),
            mounts: root_mounts(target.pid, &target.root_mountpoint),
            descriptors: descriptors(target.pid).unwrap_or(0),
        }
    }

    /// Nothing above `base`.
    fn within(&self, base: &Probe) -> bool {
        self.cgroups.len() <= base.cgroups.len()
            && self.processes.len() <= base.processes.len()
            && self.mounts <= base.mounts
            && self.descriptors <= base.descriptors
    }
}

/// The pid of the process listening on TCP `port` (of this network namespace).
fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.insert(format!("socket:[{}]", cols[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.contains(link.to_string_lossy().as_ref()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// The port of a `ws://` URL whose host is loopback; anything else is refused.
fn loopback_port(url: &str) -> Result<u16> {
    let Some(rest) = url.strip_prefix("ws://") else {
        bail!("--server must be a ws:// URL on this host (loopback), got {url:?}");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .with_context(|| format!("malformed address in {url:?}"))?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("the load generator only drives servers on this host's loopback (127.0.0.1, ::1, localhost), not {host:?}");
    }
    match port {
        None => Ok(80),
        Some(p) => p
            .parse()
            .with_context(|| format!("bad port {p:?} in {url:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The server under load.

struct Target {
    url: String,
    pid: u32,
    id_base: u32,
    root_mountpoint: PathBuf,
    /// The server this process runs, when it runs one.
    local: Option<Local>,
}

struct Local {
    engine: Arc<Engine>,
    server: ServerHandle,
    reaper: tokio::task::JoinHandle<()>,
    pool_size: usize,
}

impl Target {
    async fn in_process(args: &LoadArgs) -> Result<Target> {
        let listen: SocketAddr = "127.0.0.1:0".parse()?;
        let (config, _) = crate::serve::Config::load(args.config.as_deref(), Some(listen))?;
        let server_config = config.server_config();
        let mut engine_config = config.engine_config()?;
        // Every client holds one session at a time, all as the same (anonymous) caller.
        let sessions = &mut engine_config.sessions;
        sessions.max_sessions = sessions.max_sessions.max(args.clients * 2);
        sessions.max_sessions_per_caller = sessions.max_sessions_per_caller.max(args.clients * 2);
        let id_base = engine_config.sandbox.id_base;
        let root_mountpoint = engine_config.sandbox.state_dir.join("root");
        let pool_size = engine_config.box_pool_size;
        let engine = tokio::task::spawn_blocking(move || Engine::new(engine_config))
            .await
            .context("starting the engine")?
            .context("starting the engine")?;
        let engine = Arc::new(engine);
        let reaper = engine.spawn_reaper();
        let server = Server::bind(server_config, Arc::clone(&engine))
            .await?
            .spawn();
        let url = format!("ws://{}/ws/jsonrpc", server.local_addr());
        let target = Target {
            url,
            pid: std::process::id(),
            id_base,
            root_mountpoint,
            local: Some(Local {
                engine,
                server,
                reaper,
                pool_size,
            }),
        };
        target.wait_until_idle(Duration::from_secs(15)).await;
        Ok(target)
    }

    fn external(args: &LoadArgs, url: &str) -> Result<Target> {
        let port = loopback_port(url)?;
        let pid = match args.server_pid {
            Some(pid) => pid,
            None => pid_listening_on(port).with_context(|| {
                format!("no process of this host listens on port {port}; is the server running? (or pass --server-pid)")
            })?,
        };
        if descriptors(pid).is_none() {
            bail!("cannot read /proc/{pid}/fd: the server process must be visible to this one (run as root)");
        }
        let defaults = codebeaker_sandbox::SandboxConfig::default();
        Ok(Target {
            url: url.to_string(),
            pid,
            id_base: defaults.id_base,
            root_mountpoint: defaults.state_dir.join("root"),
            local: None,
        })
    }

    /// Waits (at most `limit`) until an in-process server has no session and a full box pool,
    /// or until an external server's boxes stop changing.
    async fn wait_until_idle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        let mut last = usize::MAX;
        let mut stable_since = Instant::now();
        while Instant::now() < until {
            match &self.local {
                Some(local) => {
                    let stats = local.engine.stats();
                    if stats.sessions == 0 && stats.pooled_boxes >= local.pool_size {
                        return;
                    }
                }
                None => {
                    let n = box_cgroups(self.pid).len();
                    if n != last {
                        last = n;
                        stable_since = Instant::now();
                    } else if stable_since.elapsed() >= Duration::from_secs(2) {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Latency {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn latency(samples: &mut [u64]) -> Latency {
    samples.sort_unstable();
    let at = |p: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1] as f64 / 1000.0
    };
    Latency {
        p50_ms: at(50.0),
        p90_ms: at(90.0),
        p99_ms: at(99.0),
        max_ms: samples.last().map_or(0.0, |&v| v as f64 / 1000.0),
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Sample {
    t_secs: f64,
    rss_bytes: u64,
    descriptors: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Memory {
    rss_first_bytes: u64,
    rss_last_bytes: u64,
    rss_max_bytes: u64,
    descriptors_first: usize,
    descriptors_last: usize,
    descriptors_max: usize,
    samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Leaks {
    /// How the counts were taken.
    measured: &'static str,
    box_cgroups: usize,
    box_cgroup_names: Vec<String>,
    processes: usize,
    process_list: Vec<String>,
    mounts: usize,
    descriptors_start: usize,
    descriptors_end: usize,
    descriptors_leaked: usize,
}

impl Leaks {
    fn total(&self) -> usize {
        self.box_cgroups + self.processes + self.mounts + self.descriptors_leaked
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    server: String,
    server_pid: u32,
    clients: usize,
    languages: Vec<String>,
    attacks: bool,
    duration_limit_secs: Option<f64>,
    run_limit: Option<u64>,
    elapsed_secs: f64,
    runs: u64,
    runs_per_second: f64,
    latency: Latency,
    normal_latency: Latency,
    sessions_created: u64,
    sessions_closed: u64,
    /// Sessions an attack wrecked so badly that the host destroyed the box (`-32001`, "box
    /// died"): reported, not counted as errors; a normal program losing its session is one.
    sessions_lost_to_attacks: u64,
    sessions_lost_samples: Vec<String>,
    reconnects: u64,
    streamed_runs: u64,
    outcomes: BTreeMap<String, u64>,
    by_program: BTreeMap<String, BTreeMap<String, u64>>,
    protocol_errors: u64,
    protocol_error_samples: Vec<String>,
    wrong_results: u64,
    wrong_result_samples: Vec<String>,
    /// Normal programs that ran out of their 30 s on an overloaded host (not counted as wrong).
    normal_timeouts: u64,
    /// Requests the server refused for now (-32002, -32005); retried.
    refused_busy: u64,
    memory: Memory,
    leaks: Leaks,
    passed: bool,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn print_summary(r: &Report) {
    let attacks = if r.attacks { "on" } else { "off" };
    eprintln!(
        "load: {} clients, {:.1} s, attacks {attacks}, languages {}; server {} (pid {})",
        r.clients,
        r.elapsed_secs,
        r.languages.join(", "),
        r.server,
        r.server_pid
    );
    eprintln!(
        "runs: {} ({:.1}/s); latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; normal programs p50 {:.1} ms, p99 {:.1} ms",
        r.runs,
        r.runs_per_second,
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        r.normal_latency.p50_ms,
        r.normal_latency.p99_ms
    );
    eprintln!(
        "sessions: {} created, {} closed, {} lost to attacks; {} reconnects; {} streamed runs; {} refused as busy",
        r.sessions_created,
        r.sessions_closed,
        r.sessions_lost_to_attacks,
        r.reconnects,
        r.streamed_runs,
        r.refused_busy
    );
    for s in &r.sessions_lost_samples {
        eprintln!("  session lost: {s}");
    }
    let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!("outcomes: {}", outcomes.join(", "));
    for (program, statuses) in &r.by_program {
        let s: Vec<String> = statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
        eprintln!("  {program:<26} {}", s.join(", "));
    }
    eprintln!(
        "protocol errors: {}; wrong results: {}; normal programs timed out: {}",
        r.protocol_errors, r.wrong_results, r.normal_timeouts
    );
    for s in &r.protocol_error_samples {
        eprintln!("  protocol error: {s}");
    }
    for s in &r.wrong_result_samples {
        eprintln!("  wrong result: {s}");
    }
    let m = &r.memory;
    eprintln!(
        "server memory: RSS first {}, last {}, max {}; descriptors first {}, last {}, max {}",
        mib(m.rss_first_bytes),
        mib(m.rss_last_bytes),
        mib(m.rss_max_bytes),
        m.descriptors_first,
        m.descriptors_last,
        m.descriptors_max
    );
    let l = &r.leaks;
    eprintln!(
        "leaks ({}): box cgroups {}, processes {}, mounts {}, descriptors {} (start {}, end {})",
        l.measured,
        l.box_cgroups,
        l.processes,
        l.mounts,
        l.descriptors_leaked,
        l.descriptors_start,
        l.descriptors_end
    );
    for name in &l.box_cgroup_names {
        eprintln!("  cgroup left: {name}");
    }
    for p in &l.process_list {
        eprintln!("  process left: {p}");
    }
    eprintln!("result: {}", if r.passed { "PASS" } else { "FAIL" });
}

// ---------------------------------------------------------------------------------------------

pub async fn main(args: LoadArgs) -> Result<i32> {
    if !(1..=MAX_CLIENTS).contains(&args.clients) {
        bail!(
            "--clients must be between 1 and {MAX_CLIENTS}, got {}",
            args.clients
        );
    }
    if args.runs == Some(0) {
        bail!("--runs must be at least 1");
    }
    let mut languages = Vec::new();
    for name in &args.languages {
        let name = name.trim().to_ascii_lowercase();
        match language(&name) {
            Some(l) if !languages.iter().any(|k: &Language| k.name == l.name) => languages.push(l),
            Some(_) => {}
            None => bail!(
                "--languages: the load has no programs for {name:?}; choose from {}",
                LANGUAGES.join(", ")
            ),
        }
    }
    if languages.is_empty() {
        bail!("--languages: name at least one language");
    }
    let time_limit = match (args.duration, args.runs) {
        (Some(d), _) => d,
        (None, None) => Duration::from_secs(60),
        (None, Some(_)) => MAX_SOAK_TIME,
    };

    let mut target = match &args.server {
        Some(url) => Target::external(&args, url)?,
        None => Target::in_process(&args).await?,
    };
    let server_label = match &args.server {
        Some(url) => url.clone(),
        None => format!("in-process at {}", target.url),
    };

    // Every language must run there before the clock starts.
    let mut check = Conn::connect(&target.url, args.token.as_deref())
        .await
        .with_context(|| format!("connecting to {}", target.url))?;
    let list = match check
        .call("language.list", json!({}), REQUEST_TIMEOUT, None)
        .await
    {
        Ok(list) => list,
        Err(Failure::Busy(m)) => bail!("language.list refused: {m}"),
        Err(Failure::Rpc { code, message }) => bail!("language.list failed: {code}: {message}"),
        Err(Failure::Broken(e)) => bail!("language.list failed: {e}"),
    };
    for l in &languages {
        let entry = list["languages"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["name"] == l.name));
        if !entry.is_some_and(|e| e["available"] == true) {
            bail!(
                "{} is not available on the server; leave it out of --languages",
                l.name
            );
        }
    }
    check.close().await;

    target.wait_until_idle(Duration::from_secs(10)).await;
    let start = Probe::take(&target);
    let pid = target.pid;
    eprintln!(
        "load: {} clients against {server_label} (pid {pid}) for {}{}",
        args.clients,
        match args.runs {
            Some(n) => format!("{n} runs, at most "),
            None => String::new(),
        },
        humantime::format_duration(time_limit)
    );

    let plan = Arc::new(Plan {
        url: target.url.clone(),
        token: args.token.clone(),
        languages,
        attacks: args.attacks,
        seed: args.seed,
        deadline: Instant::now() + time_limit,
        tickets: args.runs.map(AtomicU64::new),
        runs: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });

    // Memory and descriptors every second, and a progress line every five.
    let started = Instant::now();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        let plan = Arc::clone(&plan);
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let sample = Sample {
                    t_secs: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                    rss_bytes: rss_bytes(pid).unwrap_or(0),
                    descriptors: descriptors(pid).unwrap_or(0),
                };
                if samples.len() % 5 == 0 && !samples.is_empty() {
                    let runs = plan.runs.load(Ordering::Relaxed);
                    eprintln!(
                        "load: {:>5.0} s  {runs} runs ({:.1}/s)  {} errors  server RSS {}  {} descriptors",
                        sample.t_secs,
                        runs as f64 / sample.t_secs.max(0.1),
                        plan.errors.load(Ordering::Relaxed),
                        mib(sample.rss_bytes),
                        sample.descriptors
                    );
                }
                samples.push(sample);
                if !sampling.load(Ordering::Relaxed) {
                    return samples;
                }
            }
        })
    };

    let tasks: Vec<_> = (0..args.clients)
        .map(|i| tokio::spawn(client(i, Arc::clone(&plan))))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.protocol_error(&plan, format!("a client task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await.context("the sampler")?;

    // Leaks: wait for the server to settle back to where it started, then compare.
    let settle_until = Instant::now() + Duration::from_secs(30);
    target.wait_until_idle(Duration::from_secs(20)).await;
    let mut end = Probe::take(&target);
    while !end.within(&start) && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        end = Probe::take(&target);
    }
    let leaks = match target.local.take() {
        Some(local) => {
            // The whole server goes away: nothing of any box may remain.
            let _ = local.server.shutdown().await;
            local.reaper.abort();
            local.engine.shutdown().await;
            drop(local.engine);
            let until = Instant::now() + Duration::from_secs(10);
            let mut after = Probe::take(&target);
            while (!after.cgroups.is_empty() || !after.processes.is_empty() || after.mounts > 0)
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
                after = Probe::take(&target);
            }
            Leaks {
                measured: "after the in-process server shut down; descriptors when idle again vs. at the start",
                box_cgroups: after.cgroups.len(),
                box_cgroup_names: after.cgroups.iter().take(10).cloned().collect(),
                processes: after.processes.len(),
                process_list: after.processes.iter().take(10).cloned().collect(),
                mounts: after.mounts,
                descriptors_start: start.descriptors,
                descriptors_end: end.descriptors,
                descriptors_leaked: end.descriptors.saturating_sub(start.descriptors),
            }
        }
        None => {
            // A running server keeps its pool of ready boxes: only more than at the start counts.
            let box_cgroups = end.cgroups.len().saturating_sub(start.cgroups.len());
            let processes = end.processes.len().saturating_sub(start.processes.len());
            Leaks {
                measured: "when the server was idle again, above its state at the start",
                box_cgroups,
                box_cgroup_names: match box_cgroups {
                    0 => Vec::new(),
                    _ => end
                        .cgroups
                        .difference(&start.cgroups)
                        .take(10)
                        .cloned()
                        .collect(),
                },
                processes,
                process_list: match processes {
                    0 => Vec::new(),
                    _ => end.processes.iter().take(10).cloned().collect(),
                },
                mounts: end.mounts.saturating_sub(start.mounts),
                descriptors_start: start.descriptors,
                descriptors_end: end.descriptors,
                descriptors_leaked: end.descriptors.saturating_sub(start.descriptors),
            }
        }
    };

    let memory = Memory {
        rss_first_bytes: samples.first().map_or(0, |s| s.rss_bytes),
        rss_last_bytes: samples.last().map_or(0, |s| s.rss_bytes),
        rss_max_bytes: samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
        descriptors_first: samples.first().map_or(0, |s| s.descriptors),
        descriptors_last: samples.last().map_or(0, |s| s.descriptors),
        descriptors_max: samples.iter().map(|s| s.descriptors).max().unwrap_or(0),
        samples,
    };
    let passed = tally.protocol_errors == 0 && tally.wrong_results == 0 && leaks.total() == 0;
    let report = Report {
        server: server_label,
        server_pid: pid,
        clients: args.clients,
        languages: plan.languages.iter().map(|l| l.name.to_string()).collect(),
        attacks: args.attacks,
        duration_limit_secs: (args.duration.is_some() || args.runs.is_none())
            .then_some(time_limit.as_secs_f64()),
        run_limit: args.runs,
        elapsed_secs: elapsed.as_secs_f64(),
        runs: tally.runs,
        runs_per_second: tally.runs as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: latency(&mut tally.latencies_us),
        normal_latency: latency(&mut tally.normal_latencies_us),
        sessions_created: tally.sessions_created,
        sessions_closed: tally.sessions_closed,
        sessions_lost_to_attacks: tally.sessions_lost,
        sessions_lost_samples: tally.lost_samples,
        reconnects: tally.reconnects,
        streamed_runs: tally.streamed,
        outcomes: tally.by_status,
        by_program: tally.by_program,
        protocol_errors: tally.protocol_errors,
        protocol_error_samples: tally.error_samples,
        wrong_results: tally.wrong_results,
        wrong_result_samples: tally.wrong_samples,
        normal_timeouts: tally.normal_timeouts,
        refused_busy: tally.busy,
        memory,
        leaks,
        passed,
    };
    print_summary(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if passed { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_driven() {
        assert_eq!(
            loopback_port("ws://127.0.0.1:5000/ws/jsonrpc").unwrap(),
            5000
        );
        assert_eq!(loopback_port("ws://localhost/ws/jsonrpc").unwrap(), 80);
        assert_eq!(loopback_port("ws://[::1]:6000/ws/jsonrpc").unwrap(), 6000);
        assert_eq!(loopback_port("ws://127.1.2.3:7").unwrap(), 7);
        assert!(loopback_port("ws://10.0.0.5:5000/ws/jsonrpc").is_err());
        assert!(loopback_port("ws://example.com:5000/").is_err());
        assert!(loopback_port("wss://127.0.0.1:5000/").is_err());
        assert!(loopback_port("http://127.0.0.1:5000/").is_err());
    }

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

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let l = latency(&mut samples);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(latency(&mut []).p99_ms, 0.0);
    }
}
