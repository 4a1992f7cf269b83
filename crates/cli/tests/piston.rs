//! The Piston v2 door, end to end, against the shared server over real boxes: the published
//! Rust client `piston_rs` and Python client `ultra-piston` (pinned; `scripts/compat-clients.sh`
//! installs the latter into `target/compat/venv`), raw HTTP for every validation message and
//! shape, and the interactive WebSocket `connect`.
//!
//! As root: `cargo test -p codebeaker --test tests piston::`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::http::{send, Answer};
use crate::common::{self, run_within};

/// How long one test may take before it fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(300);
/// How long one WebSocket frame may take to come.
const FRAME: Duration = Duration::from_secs(60);

const C_HELLO: &str =
    "#include <stdio.h>\nint main(void) { printf(\"hello from c\\n\"); return 0; }\n";

async fn post(addr: SocketAddr, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
    send(addr, "POST", path, &[("content-type", content_type)], body).await
}

/// `POST /api/v2/execute` with `body` as JSON.
async fn execute(addr: SocketAddr, body: Value) -> Answer {
    post(
        addr,
        "/api/v2/execute",
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

/// `POST /api/v2/execute` that must answer 200; its JSON.
async fn executed(addr: SocketAddr, body: Value) -> Value {
    let answer = execute(addr, body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

/// A request that must be refused with 400 and Piston's `message`.
async fn refused(addr: SocketAddr, body: Value, message: &str) {
    let answer = execute(addr, body.clone()).await;
    assert_eq!(answer.status, 400, "{body}: {}", answer.text());
    assert_eq!(answer.json(), json!({ "message": message }), "{body}");
}

fn python(code: &str) -> Value {
    json!({"language": "python", "version": "*", "files": [{"content": code}]})
}

// ---------------------------------------------------------------------------------------------
// The published clients.

#[test]
fn the_rust_client_runs_python_and_c_and_sees_their_errors() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let client = piston_rs::Client::with_url(&format!("http://{addr}/api/v2"));
        let runtimes = client.fetch_runtimes().await.expect("runtimes");
        let python = runtimes
            .iter()
            .find(|r| r.language == "python")
            .expect("python is a runtime here");
        assert!(python.aliases.iter().any(|a| a == "py"), "{python:?}");
        assert!(runtimes.iter().any(|r| r.language == "c"), "{runtimes:?}");

        let hello = piston_rs::Executor::new()
            .set_language("python")
            .set_version(&python.version)
            .add_file(piston_rs::File::new(
                "main.py",
                "import sys\nprint('hello', sys.argv[1], input())",
                "utf8",
            ))
            .set_stdin("rust")
            .add_arg("piston");
        let ran = client.execute(&hello).await.expect("execute");
        assert_eq!(ran.status, 200, "{ran:?}");
        assert_eq!(ran.language, "python");
        assert_eq!(ran.run.stdout, "hello piston rust\n", "{ran:?}");
        assert_eq!((ran.run.code, ran.run.signal.as_deref()), (Some(0), None));
        assert!(ran.compile.is_none(), "{ran:?}");

        let c = piston_rs::Executor::new()
            .set_language("c")
            .set_version("*")
            .add_file(piston_rs::File::new("hello.c", C_HELLO, "utf8"));
        let ran = client.execute(&c).await.expect("execute");
        assert_eq!(ran.status, 200, "{ran:?}");
        let compile = ran.compile.as_ref().expect("a compile stage");
        assert_eq!(compile.code, Some(0), "{ran:?}");
        assert_eq!(ran.run.stdout, "hello from c\n", "{ran:?}");
        assert_eq!(ran.run.code, Some(0), "{ran:?}");

        let crash = piston_rs::Executor::new()
            .set_language("py")
            .add_file(piston_rs::File::new("", "raise ValueError('boom')", "utf8"));
        let ran = client.execute(&crash).await.expect("execute");
        assert_eq!(ran.run.code, Some(1), "{ran:?}");
        assert!(ran.run.stderr.contains("ValueError: boom"), "{:?}", ran.run);

        let broken = piston_rs::Executor::new()
            .set_language("c")
            .add_file(piston_rs::File::new(
                "main.c",
                "int main(void) { return nope; }\n",
                "utf8",
            ));
        let ran = client.execute(&broken).await.expect("execute");
        let compile = ran.compile.as_ref().expect("a compile stage");
        assert!(compile.code.is_some_and(|c| c != 0), "{ran:?}");
        assert!(compile.stderr.contains("nope"), "{ran:?}");
        assert_eq!(
            ran.run.stderr, compile.stderr,
            "a failed compile is also the run"
        );
        assert_eq!(ran.run.code, compile.code);

        let unknown = piston_rs::Executor::new()
            .set_language("python")
            .set_version("1.0.0")
            .add_file(piston_rs::File::new("", "print(1)", "utf8"));
        let ran = client.execute(&unknown).await.expect("execute");
        assert_eq!(ran.status, 400, "{ran:?}");
        assert!(
            ran.run.stderr.contains("python-1.0.0 runtime is unknown"),
            "{ran:?}"
        );
    });
}

/// The Python of the clients' virtualenv, with the Piston client ultra-piston.
fn venv_python() -> PathBuf {
    common::compat::python("ultra_piston", "the Piston client ultra-piston")
}

#[test]
fn the_python_client_lists_runtimes_and_executes() {
    let python = venv_python();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/piston/ultra_piston_flow.py");
    run_within(LIMIT, async {
        let addr = common::server().await;
        // The client's boxes are this process's, like any test's (`run_within` holds `shared`).
        let output = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(format!("http://{addr}/api/v2/piston/"))
            .kill_on_drop(true)
            .output()
            .await
            .expect("run the client");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("ultra-piston flow: all checks passed"),
            "{}\n--- stdout\n{stdout}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP: validation, encodings, shapes, paths.

#[test]
fn every_validation_message_is_pistons() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let file = json!([{"content": "print(1)"}]);
        refused(addr, json!({}), "language is required as a string").await;
        refused(addr, json!([1, 2]), "language is required as a string").await;
        refused(
            addr,
            json!({"language": 3}),
            "language is required as a string",
        )
        .await;
        refused(
            addr,
            json!({"language": "python"}),
            "version is required as a string",
        )
        .await;
        refused(
            addr,
            json!({"language": "python", "version": "*"}),
            "files is required as an array",
        )
        .await;
        refused(
            addr,
            json!({"language": "python", "version": "*", "files": [{"content": "x"}, {"name": "b"}]}),
            "files[1].content is required as a string",
        )
        .await;
        refused(
            addr,
            json!({"language": "cobol", "version": "*", "files": file}),
            "cobol-* runtime is unknown",
        )
        .await;
        refused(
            addr,
            json!({"language": "python", "version": "2.7", "files": file}),
            "python-2.7 runtime is unknown",
        )
        .await;
        refused(
            addr,
            json!({"language": "python", "version": "not a range", "files": file}),
            "python-not a range runtime is unknown",
        )
        .await;
        refused(
            addr,
            json!({"language": "python", "version": "*", "files": [{"content": "eA==", "encoding": "base64"}]}),
            "files must include at least one utf8 encoded file",
        )
        .await;
        let config = common::engine().config();
        let max_run = config.max_run_time.as_millis();
        let max_compile = config.compile_limits.wall_time.as_millis();
        let max_memory = config.max_memory_bytes;
        for (field, value, message) in [
            (
                "run_timeout",
                json!("10"),
                "If specified, run_timeout must be a number".to_string(),
            ),
            (
                "compile_cpu_time",
                json!(true),
                "If specified, compile_cpu_time must be a number".into(),
            ),
            (
                "run_timeout",
                json!(max_run + 1),
                format!("run_timeout cannot exceed the configured limit of {max_run}"),
            ),
            (
                "compile_timeout",
                json!(max_compile + 1),
                format!("compile_timeout cannot exceed the configured limit of {max_compile}"),
            ),
            (
                "run_memory_limit",
                json!(max_memory + 1),
                format!("run_memory_limit cannot exceed the configured limit of {max_memory}"),
            ),
            (
                "run_timeout",
                json!(-5),
                "run_timeout must be non-negative".into(),
            ),
            (
                "run_cpu_time",
                json!(-1),
                "run_cpu_time must be non-negative".into(),
            ),
            (
                "compile_memory_limit",
                json!(-2),
                "compile_memory_limit must be non-negative".into(),
            ),
            (
                "run_memory_limit",
                json!(1000),
                "run_memory_limit must be at least 16777216 (16 MiB) here".into(),
            ),
        ] {
            let mut body = python("print(1)");
            body[field] = value;
            refused(addr, body, &message).await;
        }
        // Piston checks memory before time: the first of two bad limits is the memory one.
        let mut body = python("print(1)");
        body["run_timeout"] = json!(-1);
        body["compile_memory_limit"] = json!("x");
        refused(
            addr,
            body,
            "If specified, compile_memory_limit must be a number",
        )
        .await;
        // Falsy limits and a memory limit of -1 (what Piston's clients send) are the defaults.
        let mut body = python("print('defaults')");
        for (field, value) in [
            ("run_timeout", json!(0)),
            ("compile_timeout", json!(null)),
            ("run_memory_limit", json!(-1)),
            ("compile_memory_limit", json!(-1)),
            ("run_cpu_time", json!(false)),
        ] {
            body[field] = value;
        }
        let ran = executed(addr, body).await;
        assert_eq!(ran["run"]["stdout"], "defaults\n", "{ran}");
        // Ours: what Piston would have failed on later, or not noticed.
        let mut body = python("print(1)");
        body["stdin"] = json!(5);
        refused(addr, body, "stdin must be a string").await;
        let mut body = python("print(1)");
        body["args"] = json!(["a", 1]);
        refused(addr, body, "args must be an array of strings").await;
        let mut body = python("print(1)");
        body["files"] = json!([{"content": "print(1)"}, {"content": "%%%", "encoding": "base64"}]);
        let answer = execute(addr, body).await;
        assert_eq!(answer.status, 400, "{}", answer.text());
        assert!(
            answer.json()["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("files[1].content is not valid base64")),
            "{}",
            answer.text()
        );
        let mut body = python("print(1)");
        body["files"] = json!([{"content": "print(1)"}, {"name": "../escape.py", "content": "x"}]);
        let answer = execute(addr, body).await;
        assert_eq!(answer.status, 400, "{}", answer.text());
        assert!(answer.text().contains("escape.py"), "{}", answer.text());
        let answer = post(
            addr,
            "/api/v2/execute",
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
        assert_eq!(answer.status, 400, "{}", answer.text());
        assert!(answer.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("not valid JSON")));
    });
}

#[test]
fn files_come_in_every_encoding_and_the_first_utf8_one_is_main() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let b64 = base64::engine::general_purpose::STANDARD;
        // A data file first (not utf8), the main file, a module beside it, hex data in a folder.
        let ran = executed(
            addr,
            json!({
                "language": "py",
                "version": "3",
                "files": [
                    {"name": "data.bin", "content": b64.encode([0u8, 159, 146, 150]), "encoding": "base64"},
                    {"name": "app.py", "content": "import helper, sys\nprint(helper.greet(), open('/dev/stdin').read() == '', sys.argv[1:])\nprint(open(__import__('os').path.dirname(__file__) + '/data.bin', 'rb').read().hex())\nprint(open(__import__('os').path.dirname(__file__) + '/sub/notes.txt').read())"},
                    {"name": "helper.py", "content": "def greet():\n    return 'hi from helper'\n"},
                    {"name": "sub/notes.txt", "content": "6865786564", "encoding": "hex"},
                ],
                "args": ["x", "y"],
            }),
        )
        .await;
        assert_eq!(
            ran["run"]["stdout"], "hi from helper False ['x', 'y']\n009f9296\nhexed\n",
            "{ran}"
        );
        // C: a second source and a header beside the main file are compiled with it.
        let ran = executed(
            addr,
            json!({
                "language": "c",
                "version": "*",
                "files": [
                    {"name": "main.c", "content": "#include \"twice.h\"\n#include <stdio.h>\nint main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n"},
                    {"name": "twice.h", "content": "int twice(int);\n"},
                    {"name": "twice.c", "content": "int twice(int n) { return 2 * n; }\n"},
                ],
            }),
        )
        .await;
        assert_eq!(ran["compile"]["code"], 0, "{ran}");
        assert_eq!(ran["run"]["stdout"], "42\n", "{ran}");
    });
}

#[test]
fn stdin_gets_a_trailing_newline_and_answers_have_pistons_shape() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let mut body = python(
            "import sys\nprint(repr(sys.stdin.read()), flush=True)\nprint('err', file=sys.stderr)",
        );
        body["stdin"] = json!("abc");
        let ran = executed(addr, body).await;
        let run = &ran["run"];
        assert_eq!(run["stdout"], "'abc\\n'\n", "{ran}");
        assert_eq!(run["stderr"], "err\n", "{ran}");
        assert_eq!(run["output"], "'abc\\n'\nerr\n", "both, in order: {ran}");
        assert_eq!(run["code"], 0);
        assert_eq!(run["signal"], Value::Null);
        assert_eq!(run["status"], Value::Null);
        assert_eq!(run["message"], Value::Null);
        for field in ["cpu_time", "wall_time", "memory"] {
            assert!(run[field].is_u64(), "{field}: {ran}");
        }
        assert!(
            run["memory"].as_u64().is_some_and(|m| m > 4096),
            "bytes: {ran}"
        );
        assert_eq!(ran["language"], "python");
        let version = ran["version"].as_str().expect("version");
        assert_eq!(version.split('.').count(), 3, "SemVer: {version}");
        let mut body = python("print(repr(input()))");
        body["stdin"] = json!("kept\n");
        assert_eq!(executed(addr, body).await["run"]["stdout"], "'kept'\n");
    });
}

#[test]
fn limits_end_stages_with_pistons_statuses() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let mut sleepy = python("import time\ntime.sleep(30)");
        sleepy["run_timeout"] = json!(500);
        let ran = executed(addr, sleepy).await;
        let run = &ran["run"];
        assert_eq!(
            (run["status"].as_str(), run["signal"].as_str()),
            (Some("TO"), Some("SIGKILL")),
            "{ran}"
        );
        assert_eq!(run["code"], Value::Null, "{ran}");

        let ran = executed(addr, python("print('x' * 5000)")).await;
        let run = &ran["run"];
        assert_eq!(
            (run["status"].as_str(), run["signal"].as_str()),
            (Some("OL"), Some("SIGKILL")),
            "{ran}"
        );
        assert_eq!(run["message"], "stdout length exceeded");
        assert_eq!(
            run["stdout"].as_str().map(str::len),
            Some(1024),
            "capped per stream: {ran}"
        );

        let ran = executed(addr, python("import sys\nsys.stderr.write('e' * 5000)")).await;
        assert_eq!(ran["run"]["status"], "EL", "{ran}");
        assert_eq!(
            ran["run"]["stderr"].as_str().map(str::len),
            Some(1024),
            "{ran}"
        );

        let ran = executed(
            addr,
            python("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"),
        )
        .await;
        let run = &ran["run"];
        assert_eq!(
            (run["status"].as_str(), run["signal"].as_str()),
            (Some("SG"), Some("SIGSEGV")),
            "{ran}"
        );
        assert_eq!(run["code"], Value::Null, "{ran}");

        let ran = executed(addr, python("raise SystemExit(7)")).await;
        let run = &ran["run"];
        assert_eq!(
            (run["status"].as_str(), run["code"].as_i64()),
            (Some("RE"), Some(7)),
            "{ran}"
        );
        assert_eq!(run["message"], "Exited with error status 7");

        let mut hungry = python("x = bytearray(400 * 1024 * 1024)\nprint(len(x))");
        hungry["run_memory_limit"] = json!(64 * 1024 * 1024);
        let ran = executed(addr, hungry).await;
        assert_eq!(ran["run"]["status"], "SG", "{ran}");
        assert_eq!(ran["run"]["signal"], "SIGKILL", "{ran}");

        let mut slow_compile = json!({"language": "c", "version": "*", "files": [{"content": format!("{C_HELLO}\n// {}", std::process::id())}]});
        slow_compile["compile_timeout"] = json!(1);
        let ran = executed(addr, slow_compile).await;
        assert_eq!(ran["compile"]["status"], "TO", "{ran}");
        assert_eq!(ran["run"], ran["compile"], "{ran}");
    });
}

#[test]
fn any_content_type_aliases_trailing_slashes_and_the_hosted_prefix() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let body = json!({"language": "python3", "version": "*", "files": [{"content": "print('plain')"}]});
        for path in [
            "/api/v2/execute",
            "/api/v2/execute/",
            "/api/v2/piston/execute",
            "/api/v2/piston/execute/",
        ] {
            let answer = post(
                addr,
                path,
                "text/plain;charset=UTF-8",
                body.to_string().into_bytes(),
            )
            .await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.text());
            assert_eq!(answer.json()["run"]["stdout"], "plain\n", "{path}");
        }
        let answer = send(
            addr,
            "POST",
            "/api/v2/execute",
            &[],
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!(answer.status, 200, "no content type: {}", answer.text());
        for path in [
            "/api/v2/runtimes",
            "/api/v2/runtimes/",
            "/api/v2/piston/runtimes",
            "/api/v2/piston/runtimes/",
        ] {
            let answer = send(addr, "GET", path, &[], Vec::new()).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.text());
            let runtimes = answer.json();
            let cpp = runtimes
                .as_array()
                .and_then(|all| all.iter().find(|r| r["language"] == "c++"))
                .unwrap_or_else(|| panic!("c++ in {runtimes}"));
            assert_eq!(cpp["runtime"], "gcc", "{cpp}");
        }
        for alias in ["cpp", "c++", "g++"] {
            let ran = executed(addr, json!({"language": alias, "version": "*", "files": [{"content": "#include <iostream>\nint main() { std::cout << \"cpp\" << std::endl; }\n"}]})).await;
            assert_eq!(ran["language"], "c++", "{alias}: {ran}");
            assert_eq!(ran["run"]["stdout"], "cpp\n", "{alias}: {ran}");
        }
        for alias in ["js", "node", "node-js"] {
            let ran = executed(addr, json!({"language": alias, "version": "*", "files": [{"content": "console.log(process.argv.length > 1)"}]})).await;
            assert_eq!(ran["language"], "javascript", "{alias}: {ran}");
            assert_eq!(ran["run"]["stdout"], "true\n", "{alias}: {ran}");
        }
    });
}

#[test]
fn unknown_routes_are_not_found_and_packages_are_forbidden() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        for (method, path) in [
            ("GET", "/api/v2/nothing"),
            ("GET", "/api/v2/piston/nothing/here"),
            ("GET", "/api/v2/execute"),
            ("POST", "/api/v2/runtimes"),
            ("GET", "/api/v2"),
        ] {
            let answer = send(addr, method, path, &[], Vec::new()).await;
            assert_eq!(answer.status, 404, "{method} {path}: {}", answer.text());
            assert_eq!(
                answer.json(),
                json!({"message": "Not Found"}),
                "{method} {path}"
            );
        }
        for (method, path) in [
            ("GET", "/api/v2/packages"),
            ("POST", "/api/v2/packages"),
            ("DELETE", "/api/v2/packages/"),
            ("POST", "/api/v2/piston/packages"),
            ("POST", "/api/v2/packages/python/3.10.0"),
        ] {
            let answer = send(
                addr,
                method,
                path,
                &[("content-type", "application/json")],
                br#"{"language":"bash","version":"5.x"}"#.to_vec(),
            )
            .await;
            assert_eq!(answer.status, 403, "{method} {path}: {}", answer.text());
            let message = answer.json()["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                message.contains("toolchains installed on this host"),
                "{message}"
            );
            assert!(message.contains("/api/v2/runtimes"), "{message}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The WebSocket `connect`.

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, path: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .expect("connect");
    socket
}

async fn say(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("send");
}

/// What the server sent next: a JSON message, or the close code and reason it closed with.
#[derive(Debug)]
enum Heard {
    Json(Value),
    Closed(u16, String),
}

async fn hear(socket: &mut Socket) -> Heard {
    loop {
        let frame = tokio::time::timeout(FRAME, socket.next())
            .await
            .expect("a frame in time");
        match frame {
            Some(Ok(Message::Text(text))) => {
                return Heard::Json(serde_json::from_str(&text).expect("JSON"))
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                return Heard::Closed(u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None => return Heard::Closed(0, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("the connection failed: {e}"),
        }
    }
}

async fn json_message(socket: &mut Socket) -> Value {
    match hear(socket).await {
        Heard::Json(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Reads until the close, collecting every message; returns them and the close code.
async fn until_closed(socket: &mut Socket) -> (Vec<Value>, u16) {
    let mut messages = Vec::new();
    loop {
        match hear(socket).await {
            Heard::Json(message) => messages.push(message),
            Heard::Closed(code, _) => return (messages, code),
        }
    }
}

/// The stdout a list of messages carried.
fn stdout_of(messages: &[Value]) -> String {
    messages
        .iter()
        .filter(|m| m["type"] == "data" && m["stream"] == "stdout")
        .filter_map(|m| m["data"].as_str())
        .collect()
}

/// Waits for stdout to hold `text`, collecting every message on the way.
async fn until_stdout(socket: &mut Socket, seen: &mut Vec<Value>, text: &str) {
    while !stdout_of(seen).contains(text) {
        match hear(socket).await {
            Heard::Json(message) => seen.push(message),
            Heard::Closed(code, reason) => {
                panic!("closed ({code} {reason}) before {text:?}: {seen:?}")
            }
        }
    }
}

#[test]
fn connect_feeds_stdin_while_the_program_runs_and_ends_its_input() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let mut socket = connect(addr, "/api/v2/connect").await;
        let code = "import sys\nprint('ready', flush=True)\nline = sys.stdin.readline()\nprint('got', line.strip(), flush=True)\nrest = sys.stdin.read()\nprint('rest', len(rest), flush=True)\nprint('warn', file=sys.stderr)\n";
        say(&mut socket, json!({"type": "init", "language": "python", "version": "*", "files": [{"content": code}], "run_timeout": 60000})).await;
        let runtime = json_message(&mut socket).await;
        assert_eq!(runtime["type"], "runtime", "{runtime}");
        assert_eq!(runtime["language"], "python");
        assert!(runtime["version"].is_string());
        let mut seen = Vec::new();
        until_stdout(&mut socket, &mut seen, "ready\n").await;
        assert_eq!(
            seen[0],
            json!({"type": "stage", "stage": "run"}),
            "{seen:?}"
        );
        // The program is running and waiting: this line reaches it now.
        say(
            &mut socket,
            json!({"type": "data", "stream": "stdin", "data": "first line\n"}),
        )
        .await;
        until_stdout(&mut socket, &mut seen, "got first line\n").await;
        say(
            &mut socket,
            json!({"type": "data", "stream": "stdin", "data": "abc"}),
        )
        .await;
        say(&mut socket, json!({"type": "eof"})).await;
        let (rest, code) = until_closed(&mut socket).await;
        seen.extend(rest);
        assert_eq!(code, 4999, "{seen:?}");
        assert!(stdout_of(&seen).ends_with("rest 3\n"), "{seen:?}");
        assert!(
            seen.iter()
                .any(|m| *m == json!({"type": "data", "stream": "stderr", "data": "warn\n"})),
            "{seen:?}"
        );
        assert_eq!(
            seen.last(),
            Some(&json!({"type": "exit", "stage": "run", "code": 0, "signal": null})),
            "{seen:?}"
        );
    });
}

#[test]
fn connect_keeps_a_character_split_across_output_chunks_whole() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let mut socket = connect(addr, "/api/v2/connect").await;
        // The two bytes of `é` in two writes, with a pause between them so that they reach the
        // door as two chunks.
        let code = "import sys, time\nsys.stdout.buffer.write(b'a\\xc3'); sys.stdout.flush(); time.sleep(0.3)\nsys.stdout.buffer.write(b'\\xa9b\\n'); sys.stdout.flush()\n";
        say(&mut socket, json!({"type": "init", "language": "python", "version": "*", "files": [{"content": code}]})).await;
        let (seen, code) = until_closed(&mut socket).await;
        assert_eq!(code, 4999, "{seen:?}");
        assert_eq!(stdout_of(&seen), "a\u{e9}b\n", "{seen:?}");
    });
}

#[test]
fn connect_signal_stops_the_program() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let mut socket = connect(addr, "/api/v2/piston/connect").await;
        // Left alone, it would run until its (maximum) run timeout, past this test's limit.
        let max_run = common::engine().config().max_run_time.as_millis();
        let code = "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.05)\n";
        say(&mut socket, json!({"type": "init", "language": "python", "version": "*", "files": [{"content": code}], "run_timeout": max_run, "run_cpu_time": max_run})).await;
        let mut seen = Vec::new();
        until_stdout(&mut socket, &mut seen, "looping\n").await;
        say(&mut socket, json!({"type": "signal", "signal": "SIGTERM"})).await;
        let (rest, code) = until_closed(&mut socket).await;
        seen.extend(rest);
        assert_eq!(code, 4999, "{seen:?}");
        assert_eq!(
            seen.last(),
            Some(&json!({"type": "exit", "stage": "run", "code": null, "signal": "SIGKILL"})),
            "{seen:?}"
        );
    });
}

#[test]
fn connect_reports_a_compiled_languages_stages() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let mut socket = connect(addr, "/api/v2/connect").await;
        say(&mut socket, json!({"type": "init", "language": "c", "version": "*", "files": [{"content": C_HELLO}]})).await;
        let (messages, code) = until_closed(&mut socket).await;
        assert_eq!(code, 4999, "{messages:?}");
        let kinds: Vec<String> = messages
            .iter()
            .map(|m| match m["type"].as_str() {
                Some("stage") => format!("stage {}", m["stage"].as_str().unwrap_or_default()),
                Some("exit") => format!(
                    "exit {} {}",
                    m["stage"].as_str().unwrap_or_default(),
                    m["code"]
                ),
                Some(other) => other.to_string(),
                None => "?".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "runtime",
                "stage compile",
                "exit compile 0",
                "stage run",
                "data",
                "exit run 0"
            ],
            "{messages:?}"
        );
        assert_eq!(stdout_of(&messages), "hello from c\n");

        let mut socket = connect(addr, "/api/v2/connect").await;
        say(&mut socket, json!({"type": "init", "language": "c", "version": "*", "files": [{"content": "int main(void) { return missing; }\n"}]})).await;
        let (messages, code) = until_closed(&mut socket).await;
        assert_eq!(code, 4999, "{messages:?}");
        assert!(
            !messages.iter().any(|m| m["stage"] == "run"),
            "no run after a failed compile: {messages:?}"
        );
        assert!(
            messages.iter().any(|m| m["type"] == "data"
                && m["data"].as_str().is_some_and(|d| d.contains("missing"))),
            "{messages:?}"
        );
        let exit = messages.last().expect("an exit");
        assert_eq!(
            (exit["type"].as_str(), exit["stage"].as_str()),
            (Some("exit"), Some("compile")),
            "{messages:?}"
        );
        assert!(
            exit["code"].as_i64().is_some_and(|c| c != 0),
            "{messages:?}"
        );
    });
}

#[test]
fn connect_closes_with_pistons_codes() {
    run_within(LIMIT, async {
        let addr = common::server().await;
        let init = json!({"type": "init", "language": "python", "version": "*", "files": [{"content": "import time\ntime.sleep(20)"}]});

        // 4001: no init within a second.
        let mut socket = connect(addr, "/api/v2/connect").await;
        let (messages, code) = until_closed(&mut socket).await;
        assert_eq!((code, messages.len()), (4001, 0), "{messages:?}");

        // 4003: data or a signal before the init.
        for early in [
            json!({"type": "data", "stream": "stdin", "data": "x"}),
            json!({"type": "signal", "signal": "SIGKILL"}),
        ] {
            let mut socket = connect(addr, "/api/v2/connect").await;
            say(&mut socket, early.clone()).await;
            assert_eq!(until_closed(&mut socket).await.1, 4003, "{early}");
        }

        // 4002: an error is sent first (a bad init, or a message that is not JSON).
        let mut socket = connect(addr, "/api/v2/connect").await;
        say(
            &mut socket,
            json!({"type": "init", "language": "cobol", "version": "*", "files": []}),
        )
        .await;
        let (messages, code) = until_closed(&mut socket).await;
        assert_eq!(code, 4002);
        assert_eq!(
            messages,
            [json!({"type": "error", "message": "cobol-* runtime is unknown"})]
        );
        let mut socket = connect(addr, "/api/v2/connect").await;
        socket.send(Message::text("{oops")).await.expect("send");
        let (messages, code) = until_closed(&mut socket).await;
        assert_eq!(code, 4002);
        assert_eq!(
            messages.first().map(|m| m["type"].clone()),
            Some(json!("error")),
            "{messages:?}"
        );

        // 4000, 4004, 4005: after an init, a second one, stdout written, a signal that is none.
        for (after, expected) in [
            (init.clone(), 4000),
            (
                json!({"type": "data", "stream": "stdout", "data": "x"}),
                4004,
            ),
            (json!({"type": "signal", "signal": "SIGNOPE"}), 4005),
        ] {
            let mut socket = connect(addr, "/api/v2/connect").await;
            say(&mut socket, init.clone()).await;
            assert_eq!(json_message(&mut socket).await["type"], "runtime");
            say(&mut socket, after.clone()).await;
            let (_, code) = until_closed(&mut socket).await;
            assert_eq!(code, expected, "{after}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The benchmark of docs/piston.md (one run, by hand).

/// One JSON-RPC request on `socket` and its response's `result`.
async fn rpc(socket: &mut Socket, id: u64, method: &str, params: Value) -> Value {
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    say(socket, request).await;
    loop {
        if let Heard::Json(message) = hear(socket).await {
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{message}");
                return message["result"].clone();
            }
        }
    }
}

#[test]
#[ignore = "a benchmark: cargo test -p codebeaker --test tests piston::bench -- --ignored --nocapture"]
fn bench_execute_beside_json_rpc() {
    const RUNS: usize = 200;
    run_within(Duration::from_secs(3600), async {
        let addr = common::server().await;
        let programs = [
            ("python", "print('hello')".to_string(), "hello\n"),
            ("c", C_HELLO.to_string(), "hello from c\n"),
        ];
        let mut socket = connect(addr, "/ws/jsonrpc").await;
        let mut id = 0;
        for (language, code, expected) in &programs {
            let body = json!({"language": language, "version": "*", "files": [{"content": code}]});
            // Once each first: the compile cache holds the C program from then on, for both doors.
            assert_eq!(
                executed(addr, body.clone()).await["run"]["stdout"],
                *expected
            );
            let mut piston = Vec::new();
            let mut json_rpc = Vec::new();
            for _ in 0..RUNS {
                let started = std::time::Instant::now();
                let ran = executed(addr, body.clone()).await;
                piston.push(started.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(ran["run"]["stdout"], *expected, "{ran}");

                id += 1;
                let started = std::time::Instant::now();
                let ran = rpc(
                    &mut socket,
                    id,
                    "execution.run",
                    json!({"language": language, "code": code, "wait": 60000}),
                )
                .await;
                json_rpc.push(started.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(ran["stdout"], *expected, "{ran}");
            }
            let (pm, pp) = common::median_p99(&mut piston);
            let (jm, jp) = common::median_p99(&mut json_rpc);
            println!(
                "{language} hello, {RUNS} runs: Piston execute median {pm:.1} ms p99 {pp:.1} ms; JSON-RPC execution.run median {jm:.1} ms p99 {jp:.1} ms"
            );
        }
    });
}
