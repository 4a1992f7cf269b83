//! The E2B-compatible API, end to end: E2B's own Python and JavaScript SDKs (the pinned versions
//! `scripts/compat-clients.sh` installs under `target/compat/`) against a real server on an
//! ephemeral port, over real boxes, and raw HTTP for what the SDKs would never send. Two callers
//! attacking each other's sandboxes are in `attacks::e2b`.
//!
//! Alone, as root: `cargo test -p codebeaker --test tests e2b::`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::common::http::{send as http_to, Answer, Captured};
use crate::common::{self, runtime};
use std::time::Duration;

use base64::Engine as _;
use codebeaker_server::e2b::{E2bConfig, TemplateConfig};
use codebeaker_server::{AuthConfig, Server, ServerConfig, TokenConfig};
use serde_json::{json, Value};

/// The API keys of the two callers (in the `e2b_<hex>` shape the SDKs insist on).
pub(crate) const ALICE_KEY: &str = "e2b_a11ce0000000000000000000000000000000000a";
pub(crate) const MALLORY_KEY: &str = "e2b_ba0000000000000000000000000000000000000b";
/// A caller whose token allows one session at a time.
const CAROL_KEY: &str = "e2b_ca201000000000000000000000000000000000c";

/// How long one HTTP exchange may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// A server over the shared engine, serving for the whole test run.
fn serve(config: ServerConfig) -> SocketAddr {
    runtime().block_on(common::serve_forever(Arc::clone(common::engine()), config))
}

/// The server with auth on for `alice` and `mallory`, and a template of its own.
pub(crate) fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let token = |token: &str, caller: &str| TokenConfig {
            token: token.into(),
            caller: caller.into(),
        };
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            auth: AuthConfig {
                tokens: vec![
                    token(ALICE_KEY, "alice"),
                    token(MALLORY_KEY, "mallory"),
                    token(CAROL_KEY, "carol"),
                ],
            },
            caller_quotas: [(
                "carol".to_string(),
                codebeaker_server::CallerQuota {
                    max_sessions: Some(1),
                    rate_limit: None,
                },
            )]
            .into(),
            e2b: E2bConfig {
                templates: [(
                    "seeded".to_string(),
                    TemplateConfig {
                        languages: vec!["python".into()],
                        memory_mb: Some(256),
                        cpu_count: None,
                        files: [(
                            "src/app/main.py".to_string(),
                            "print('seeded')\n".to_string(),
                        )]
                        .into(),
                    },
                )]
                .into(),
            },
            ..ServerConfig::default()
        };
        serve(config)
    })
}

/// Runs `test` on the runtime, with the server up (started outside the runtime: it blocks on it).
pub(crate) fn block_on<F: std::future::Future>(test: F) -> F::Output {
    server();
    let _shared = common::shared();
    runtime().block_on(test)
}

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2b")
}

/// A program of `tests/e2b/` run with an SDK pointed at the server as `key`; panics with its
/// output unless it exits 0. Returns its stdout.
fn run_program(program: &str, args: &[&str], key: &str) -> String {
    let addr = server();
    // The program's sandboxes are boxes of this process, like any test's.
    let _shared = common::shared();
    let url = format!("http://{addr}");
    let js = common::compat::dir().join("js");
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .env("E2B_API_KEY", key)
        .env("E2B_JS_PREFIX", &js)
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_ACCESS_TOKEN");
    common::compat::run(command)
}

/// The Python interpreter of the SDK's virtualenv; fails (does not skip) when it is missing.
fn python() -> String {
    common::compat::python("e2b", "E2B's Python SDK")
        .display()
        .to_string()
}

/// `node`, with the JavaScript SDK installed; fails (does not skip) when it is missing.
fn node() -> String {
    let sdk = common::compat::dir().join("js/node_modules/e2b/package.json");
    assert!(
        sdk.is_file(),
        "E2B's JavaScript SDK is not installed at {}: run scripts/compat-clients.sh first",
        sdk.display()
    );
    "node".into()
}

fn python_flow(flow: &str) {
    let script = tests_dir().join("python_flows.py");
    let stdout = run_program(&python(), &[&script.display().to_string(), flow], ALICE_KEY);
    assert!(
        stdout.contains(&format!("flow {flow}: all checks passed")),
        "{stdout}"
    );
}

/// A flow of `interpreter_flows.py` (the code interpreter SDK), which must pass all its checks.
fn interpreter_flow(flow: &str) -> String {
    let python = python();
    let installed = std::process::Command::new(&python)
        .args(["-c", "import e2b_code_interpreter"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "E2B's code interpreter SDK is not installed in {python}: run scripts/compat-clients.sh first"
    );
    let script = tests_dir().join("interpreter_flows.py");
    let stdout = run_program(&python, &[&script.display().to_string(), flow], ALICE_KEY);
    assert!(
        stdout.contains(&format!("flow {flow}: all checks passed")),
        "{stdout}"
    );
    stdout
}

#[test]
fn interpreter_sdk_statefulness() {
    interpreter_flow("statefulness");
}

#[test]
fn interpreter_sdk_errors_and_interrupts() {
    interpreter_flow("errors");
}

#[test]
fn interpreter_sdk_contexts() {
    interpreter_flow("contexts");
}

#[test]
fn interpreter_sdk_streaming_callbacks() {
    interpreter_flow("streaming");
}

#[test]
fn interpreter_sdk_charts() {
    interpreter_flow("charts");
}

#[test]
fn interpreter_sdk_javascript_and_bash() {
    interpreter_flow("languages");
}

/// A trivial cell through the code interpreter SDK, median and p99 (reported, never asserted).
#[test]
#[ignore = "a benchmark: run with --ignored and read its output"]
fn interpreter_sdk_bench() {
    let stdout = interpreter_flow("bench");
    let mut times: Vec<f64> = stdout
        .lines()
        .find_map(|line| line.strip_prefix("bench-cell-ms "))
        .and_then(|list| serde_json::from_str(list).ok())
        .unwrap_or_else(|| panic!("no cell times in:\n{stdout}"));
    let (median, p99) = common::median_p99(&mut times);
    println!(
        "bench sdk-cell: median {median:.2} ms, p99 {p99:.2} ms ({} cells)",
        times.len()
    );
}

#[test]
fn python_sdk_commands() {
    python_flow("commands");
}

#[test]
fn python_sdk_files() {
    python_flow("files");
}

#[test]
fn python_sdk_lifecycle() {
    python_flow("lifecycle");
}

#[test]
fn python_sdk_async() {
    python_flow("async");
}

/// A subset of the SDK's own test suite: the calls of its command, file and sandbox cases.
#[test]
fn python_sdk_own_test_cases() {
    python_flow("sdk_cases");
}

#[test]
fn python_sdk_two_sandboxes_are_isolated() {
    python_flow("isolation");
}

#[test]
fn javascript_sdk_core_flow() {
    let script = tests_dir().join("core_flow.mjs");
    let stdout = run_program(&node(), &[&script.display().to_string()], ALICE_KEY);
    assert!(
        stdout.contains("js core flow: all checks passed"),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP, for what the SDKs would never send.

pub(crate) async fn http(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    http_to(server(), method, path, headers, body).await
}

/// A sandbox of the caller with `key`: its id and envd access token.
pub(crate) async fn create(key: &str) -> (String, String) {
    let answer = http(
        "POST",
        "/v2/sandboxes",
        &[("x-api-key", key), ("content-type", "application/json")],
        json!({"templateID": "base", "timeout": 120})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let body = answer.json();
    let id = body["sandboxID"].as_str().expect("sandboxID").to_string();
    let token = body["envdAccessToken"]
        .as_str()
        .expect("envdAccessToken")
        .to_string();
    (id, token)
}

/// One Connect envelope.
fn envelope(message: &Value) -> Vec<u8> {
    let json = message.to_string().into_bytes();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(json.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// The messages of a Connect stream's answer.
pub(crate) fn envelopes(mut body: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let message = serde_json::from_slice(&body[5..5 + length]).expect("an envelope of JSON");
        out.push((body[0], message));
        body = &body[5 + length..];
    }
    assert!(body.is_empty(), "a cut envelope at the end");
    out
}

/// `process.Process/Start` of `cmd` in `sandbox` with `headers` for credentials.
pub(crate) async fn start(sandbox: &str, credentials: &[(&str, &str)], cmd: &str) -> Answer {
    let request = json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}});
    start_request(sandbox, credentials, &request).await
}

/// `process.Process/Start` with the whole `request` as the SDKs send it.
async fn start_request(sandbox: &str, credentials: &[(&str, &str)], request: &Value) -> Answer {
    let mut headers = vec![
        ("e2b-sandbox-id", sandbox),
        ("content-type", "application/connect+json"),
        ("connect-protocol-version", "1"),
    ];
    headers.extend_from_slice(credentials);
    http(
        "POST",
        "/process.Process/Start",
        &headers,
        envelope(request),
    )
    .await
}

pub(crate) fn assert_gone(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 502, "{what}: {}", answer.text());
    let body = answer.json();
    assert_eq!(body["code"], 502, "{what}: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("was not found")),
        "{what}: {body}"
    );
}

#[test]
fn start_streams_start_data_end_and_the_end_of_stream() {
    block_on(async {
        let (id, token) = create(ALICE_KEY).await;
        let answer = start(
            &id,
            &[("x-access-token", &token)],
            "echo out; echo err >&2; exit 4",
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            answer
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/connect+json")
        );
        let events = envelopes(&answer.body);
        let (first_flag, first) = &events[0];
        assert_eq!(*first_flag, 0);
        assert!(first["event"]["start"]["pid"].as_u64().is_some(), "{first}");
        let data: Vec<&Value> = events
            .iter()
            .filter_map(|(_, m)| m["event"].get("data"))
            .collect();
        assert!(data.iter().any(|d| d["stdout"] == "b3V0Cg=="), "{data:?}");
        assert!(data.iter().any(|d| d["stderr"] == "ZXJyCg=="), "{data:?}");
        let (_, end) = &events[events.len() - 2];
        assert_eq!(end["event"]["end"]["exitCode"], 4, "{end}");
        assert_eq!(end["event"]["end"]["exited"], true, "{end}");
        assert_eq!(end["event"]["end"]["status"], "exit status 4", "{end}");
        let (last_flag, last) = &events[events.len() - 1];
        assert_eq!(
            *last_flag, 0x02,
            "the stream ends with the end-of-stream envelope"
        );
        assert_eq!(*last, json!({}));
        let killed = http(
            "DELETE",
            &format!("/sandboxes/{id}"),
            &[("x-api-key", ALICE_KEY)],
            Vec::new(),
        )
        .await;
        assert_eq!(killed.status, 204, "{}", killed.text());
    });
}

/// A unary envd call in `sandbox` with `credentials`.
async fn unary(sandbox: &str, credentials: (&str, &str), method: &str, body: Value) -> Answer {
    http(
        "POST",
        method,
        &[
            ("e2b-sandbox-id", sandbox),
            ("content-type", "application/json"),
            credentials,
        ],
        body.to_string().into_bytes(),
    )
    .await
}

#[test]
fn send_input_feeds_a_command_started_with_stdin_and_close_stdin_ends_it() {
    block_on(async {
        let (id, token) = create(ALICE_KEY).await;
        let (own, own_token) = create(MALLORY_KEY).await;
        let alice = ("x-access-token", token.as_str());
        let cat =
            json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "cat"]}, "stdin": true});
        let credentials = [alice];
        let (answer, pid) = tokio::join!(start_request(&id, &credentials, &cat), async {
            let pid = loop {
                let listed = unary(&id, alice, "/process.Process/List", json!({})).await;
                assert_eq!(listed.status, 200, "{}", listed.text());
                if let Some(pid) = listed.json()["processes"][0]["pid"].as_u64() {
                    break pid;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let input = |text: &str| {
                let stdin = base64::engine::general_purpose::STANDARD.encode(text);
                json!({"process": {"pid": pid}, "input": {"stdin": stdin}})
            };
            let sent = unary(&id, alice, "/process.Process/SendInput", input("one\n")).await;
            assert_eq!(sent.status, 200, "{}", sent.text());
            assert_eq!(sent.json(), json!({}));
            // Mallory, with her own token or key, on alice's sandbox: it is not there.
            for credentials in [
                ("x-access-token", own_token.as_str()),
                ("x-api-key", MALLORY_KEY),
            ] {
                for (method, body) in [
                    ("/process.Process/SendInput", input("mallory\n")),
                    (
                        "/process.Process/CloseStdin",
                        json!({"process": {"pid": pid}}),
                    ),
                ] {
                    let refused = unary(&id, credentials, method, body).await;
                    assert_gone(&refused, &format!("mallory's {method} on alice's command"));
                }
            }
            // In her own sandbox, alice's pid names nothing.
            let own_credentials = ("x-access-token", own_token.as_str());
            let elsewhere = unary(
                &own,
                own_credentials,
                "/process.Process/SendInput",
                input("x"),
            )
            .await;
            assert_eq!(elsewhere.status, 404, "{}", elsewhere.text());
            assert_eq!(elsewhere.json()["code"], "not_found");
            let sent = unary(&id, alice, "/process.Process/SendInput", input("two\n")).await;
            assert_eq!(sent.status, 200, "{}", sent.text());
            let closed = json!({"process": {"pid": pid}});
            let closed = unary(&id, alice, "/process.Process/CloseStdin", closed).await;
            assert_eq!(closed.status, 200, "{}", closed.text());
            assert_eq!(closed.json(), json!({}));
            pid
        });
        assert_eq!(answer.status, 200, "{}", answer.text());
        let events = envelopes(&answer.body);
        assert_eq!(events[0].1["event"]["start"]["pid"], pid);
        let stdout: Vec<u8> = events
            .iter()
            .filter_map(|(_, m)| m["event"]["data"]["stdout"].as_str())
            .flat_map(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .expect("base64 output")
            })
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&stdout),
            "one\ntwo\n",
            "alice's input only, in order"
        );
        let (_, end) = &events[events.len() - 2];
        assert_eq!(
            end["event"]["end"]["exitCode"], 0,
            "cat ended on the close: {end}"
        );

        // The command is gone; one started without stdin refuses input and reads it closed.
        let late = json!({"process": {"pid": pid}, "input": {"stdin": "eA=="}});
        let late = unary(&id, alice, "/process.Process/SendInput", late).await;
        assert_eq!(late.status, 404, "{}", late.text());
        let answer = start(&id, &[alice], "cat; echo after").await;
        let events = envelopes(&answer.body);
        let (_, end) = &events[events.len() - 2];
        assert_eq!(end["event"]["end"]["exitCode"], 0, "{end}");
        assert!(
            events
                .iter()
                .any(|(_, m)| m["event"]["data"]["stdout"] == "YWZ0ZXIK"),
            "cat without stdin reads it closed"
        );
        assert_eq!(kill(ALICE_KEY, &id).await, 204);
        assert_eq!(kill(MALLORY_KEY, &own).await, 204);
    });
}

#[test]
fn send_signal_stops_a_command_and_its_stream_ends_as_killed() {
    block_on(async {
        let (id, token) = create(ALICE_KEY).await;
        let (own, own_token) = create(MALLORY_KEY).await;
        let alice = ("x-access-token", token.as_str());
        let started = std::time::Instant::now();
        let credentials = [alice];
        let (answer, pid) = tokio::join!(
            start(&id, &credentials, "echo started; sleep 30; echo never"),
            async {
                let pid = loop {
                    let listed = unary(&id, alice, "/process.Process/List", json!({})).await;
                    assert_eq!(listed.status, 200, "{}", listed.text());
                    if let Some(pid) = listed.json()["processes"][0]["pid"].as_u64() {
                        break pid;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                tokio::time::sleep(Duration::from_millis(300)).await;
                let kill = json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"});
                // Mallory, with her own token or key, on alice's sandbox: it is not there.
                for credentials in [
                    ("x-access-token", own_token.as_str()),
                    ("x-api-key", MALLORY_KEY),
                ] {
                    let refused = unary(
                        &id,
                        credentials,
                        "/process.Process/SendSignal",
                        kill.clone(),
                    )
                    .await;
                    assert_gone(&refused, "mallory signals alice's command");
                }
                // In her own sandbox, alice's pid names nothing.
                let elsewhere = unary(
                    &own,
                    ("x-access-token", own_token.as_str()),
                    "/process.Process/SendSignal",
                    kill.clone(),
                )
                .await;
                assert_eq!(elsewhere.status, 404, "{}", elsewhere.text());
                assert_eq!(elsewhere.json()["code"], "not_found");
                let odd = json!({"process": {"pid": pid}, "signal": "SIGNAL_UNSPECIFIED"});
                let odd = unary(&id, alice, "/process.Process/SendSignal", odd).await;
                assert_eq!(odd.json()["code"], "unimplemented", "{}", odd.text());
                let term = json!({"process": {"pid": pid}, "signal": 15});
                let sent = unary(&id, alice, "/process.Process/SendSignal", term).await;
                assert_eq!(sent.status, 200, "{}", sent.text());
                assert_eq!(sent.json(), json!({}));
                pid
            }
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the command was stopped, not waited for: {:?}",
            started.elapsed()
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        let events = envelopes(&answer.body);
        assert_eq!(events[0].1["event"]["start"]["pid"], pid);
        let stdout: Vec<&Value> = events
            .iter()
            .filter_map(|(_, m)| m["event"]["data"].get("stdout"))
            .collect();
        assert_eq!(
            stdout,
            [&json!("c3RhcnRlZAo=")],
            "only what came before the signal"
        );
        let (_, end) = &events[events.len() - 2];
        assert_eq!(
            end["event"]["end"],
            json!({"exitCode": -1, "exited": false, "status": "signal: killed", "error": "signal: killed"}),
            "{end}"
        );
        assert_eq!(events[events.len() - 1], (0x02, json!({})));

        // The command is gone, and the sandbox runs the next one at once.
        let again = json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"});
        let again = unary(&id, alice, "/process.Process/SendSignal", again).await;
        assert_eq!(again.status, 404, "{}", again.text());
        let next = start(&id, &[alice], "echo next").await;
        let events = envelopes(&next.body);
        let (_, end) = &events[events.len() - 2];
        assert_eq!(end["event"]["end"]["exitCode"], 0, "{end}");
        assert_eq!(kill(ALICE_KEY, &id).await, 204);
        assert_eq!(kill(MALLORY_KEY, &own).await, 204);
    });
}

#[test]
fn killing_a_sandbox_stops_its_command_and_releases_its_box_at_once() {
    block_on(async {
        let (id, token) = create(ALICE_KEY).await;
        let alice = codebeaker_engine::Caller("alice".into());
        let engine = common::engine();
        let box_name = engine
            .list_sessions(&alice)
            .into_iter()
            .find(|s| s.id == id)
            .expect("the sandbox is a session of alice")
            .box_name;
        let credentials = [("x-access-token", token.as_str())];
        let (answer, ()) = tokio::join!(start(&id, &credentials, "sleep 30"), async {
            while !engine
                .list_sessions(&alice)
                .iter()
                .any(|s| s.id == id && s.busy)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(kill(ALICE_KEY, &id).await, 204);
        });
        assert_eq!(answer.status, 200, "{}", answer.text());
        let killed = std::time::Instant::now();
        while engine.sandbox().own_boxes().contains(&box_name) {
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "the box outlived its killed sandbox's command by {:?}",
                killed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn control_plane_errors_are_code_and_message() {
    block_on(async {
        let unknown = http(
            "POST",
            "/v2/sandboxes",
            &[
                ("x-api-key", ALICE_KEY),
                ("content-type", "application/json"),
            ],
            json!({"templateID": "no-such-template"})
                .to_string()
                .into_bytes(),
        )
        .await;
        assert_eq!(unknown.status, 404, "{}", unknown.text());
        let body = unknown.json();
        assert_eq!(body["code"], 404);
        let message = body["message"].as_str().expect("message");
        assert!(
            message.contains("base") && message.contains("code-interpreter-v1"),
            "{message}"
        );

        let missing = http(
            "GET",
            "/sandboxes/nope",
            &[("x-api-key", ALICE_KEY)],
            Vec::new(),
        )
        .await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.json()["code"], 404);
        let gone = http(
            "DELETE",
            "/sandboxes/nope",
            &[("x-api-key", ALICE_KEY)],
            Vec::new(),
        )
        .await;
        assert_eq!(gone.status, 404);

        for path in [
            "/sandboxes/nope/metrics",
            "/v2/sandboxes/nope/logs",
            "/templates",
        ] {
            let unsupported = http("GET", path, &[("x-api-key", ALICE_KEY)], Vec::new()).await;
            assert_eq!(unsupported.status, 501, "{path}: {}", unsupported.text());
            assert_eq!(unsupported.json()["code"], 501, "{path}");
            assert!(unsupported.text().contains("not supported"), "{path}");
        }

        let health = http(
            "GET",
            "/health",
            &[("e2b-sandbox-id", "nope"), ("x-access-token", "whatever")],
            Vec::new(),
        )
        .await;
        assert_gone(&health, "the health of an unknown sandbox");
        let own = http("GET", "/health", &[], Vec::new()).await;
        assert_eq!(own.status, 200, "plain /health stays the server's own");
        assert!(own.json().get("isolation").is_some());
    });
}

#[test]
fn configured_templates_seed_the_workspace_and_set_the_box() {
    block_on(async {
        let answer = http(
            "POST",
            "/v2/sandboxes",
            &[
                ("x-api-key", ALICE_KEY),
                ("content-type", "application/json"),
            ],
            json!({"templateID": "seeded"}).to_string().into_bytes(),
        )
        .await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        let created = answer.json();
        assert_eq!(created["templateID"], "seeded");
        let id = created["sandboxID"].as_str().expect("id").to_string();
        let token = created["envdAccessToken"]
            .as_str()
            .expect("token")
            .to_string();
        let run = start(
            &id,
            &[("x-access-token", &token)],
            "python3 src/app/main.py",
        )
        .await;
        let stdout: String = envelopes(&run.body)
            .iter()
            .filter_map(|(_, m)| m["event"]["data"]["stdout"].as_str().map(str::to_string))
            .collect();
        assert_eq!(
            stdout,
            "c2VlZGVkCg==",
            "the seeded program ran: {}",
            run.text()
        );
        let info = http(
            "GET",
            &format!("/sandboxes/{id}"),
            &[("x-api-key", ALICE_KEY)],
            Vec::new(),
        )
        .await;
        assert_eq!(info.json()["memoryMB"], 256, "{}", info.text());
        assert_eq!(kill(ALICE_KEY, &id).await, 204);
    });
}

#[test]
fn files_travel_gzipped_when_asked() {
    block_on(async {
        let (id, token) = create(ALICE_KEY).await;
        // `hi\n`, gzipped.
        let gzipped: Vec<u8> = vec![
            31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 203, 200, 228, 2, 0, 122, 122, 111, 237, 3, 0, 0, 0,
        ];
        let envd = |extra: &'static [(&'static str, &'static str)]| {
            let mut headers = vec![
                ("e2b-sandbox-id", id.as_str()),
                ("x-access-token", token.as_str()),
            ];
            headers.extend_from_slice(extra);
            headers
        };
        let upload = http(
            "POST",
            "/files?path=hi.txt",
            &envd(&[
                ("content-type", "application/octet-stream"),
                ("content-encoding", "gzip"),
            ]),
            gzipped.clone(),
        )
        .await;
        assert_eq!(upload.status, 200, "{}", upload.text());
        assert_eq!(upload.json()[0]["name"], "hi.txt");
        let plain = http("GET", "/files?path=hi.txt", &envd(&[]), Vec::new()).await;
        assert_eq!(plain.body, b"hi\n", "stored inflated");
        assert!(plain.headers.get("content-encoding").is_none());
        let zipped = http(
            "GET",
            "/files?path=hi.txt",
            &envd(&[("accept-encoding", "gzip")]),
            Vec::new(),
        )
        .await;
        assert_eq!(
            zipped
                .headers
                .get("content-encoding")
                .and_then(|v| v.to_str().ok()),
            Some("gzip")
        );
        assert_eq!(&zipped.body[..2], &[31, 139], "a gzip stream");
        let broken = http(
            "POST",
            "/files?path=bad.txt",
            &envd(&[
                ("content-type", "application/octet-stream"),
                ("content-encoding", "gzip"),
            ]),
            b"not gzip at all".to_vec(),
        )
        .await;
        assert_eq!(broken.status, 400, "{}", broken.text());
        assert_eq!(broken.json()["code"], 400);
        assert_eq!(kill(ALICE_KEY, &id).await, 204);
    });
}

#[test]
fn a_callers_session_quota_bounds_its_sandboxes() {
    block_on(async {
        let (first, _) = create(CAROL_KEY).await;
        let second = http(
            "POST",
            "/v2/sandboxes",
            &[
                ("x-api-key", CAROL_KEY),
                ("content-type", "application/json"),
            ],
            json!({"templateID": "base"}).to_string().into_bytes(),
        )
        .await;
        assert_eq!(second.status, 429, "{}", second.text());
        let body = second.json();
        assert_eq!(body["code"], 429);
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("at most 1")),
            "{body}"
        );
        assert_eq!(kill(CAROL_KEY, &first).await, 204);
        let (third, _) = create(CAROL_KEY).await;
        assert_eq!(kill(CAROL_KEY, &third).await, 204);
    });
}

#[test]
fn quiet_commands_get_keepalives() {
    block_on(async {
        let (id, token) = create(ALICE_KEY).await;
        let answer = start(
            &id,
            &[("x-access-token", &token), ("keepalive-ping-interval", "1")],
            "sleep 2.5; echo done",
        )
        .await;
        let events = envelopes(&answer.body);
        let keepalives = events
            .iter()
            .filter(|(_, m)| m["event"].get("keepalive").is_some())
            .count();
        assert!(
            keepalives >= 2,
            "keepalives while the command slept: {events:?}"
        );
        let (_, end) = &events[events.len() - 2];
        assert_eq!(end["event"]["end"]["exitCode"], 0, "{end}");
        assert_eq!(kill(ALICE_KEY, &id).await, 204);
    });
}

#[test]
fn lists_page_through_next_tokens_and_filter_by_metadata() {
    block_on(async {
        let tag = uuid_like();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let answer = http(
                "POST",
                "/v2/sandboxes",
                &[
                    ("x-api-key", MALLORY_KEY),
                    ("content-type", "application/json"),
                ],
                json!({"templateID": "base", "metadata": {"page": tag}})
                    .to_string()
                    .into_bytes(),
            )
            .await;
            assert_eq!(answer.status, 201, "{}", answer.text());
            ids.push(answer.json()["sandboxID"].as_str().expect("id").to_string());
        }
        let filter = format!("metadata=page%3D{tag}");
        let mut seen = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..5 {
            let token = next
                .as_ref()
                .map(|t| format!("&nextToken={t}"))
                .unwrap_or_default();
            let page = http(
                "GET",
                &format!("/v2/sandboxes?limit=2&{filter}{token}"),
                &[("x-api-key", MALLORY_KEY)],
                Vec::new(),
            )
            .await;
            assert_eq!(page.status, 200, "{}", page.text());
            let entries = page.json();
            let entries = entries.as_array().expect("a list");
            assert!(entries.len() <= 2, "a page of at most limit entries");
            for entry in entries {
                assert_eq!(entry["metadata"]["page"], tag.as_str());
                assert_eq!(entry["state"], "running");
                seen.push(entry["sandboxID"].as_str().expect("id").to_string());
            }
            next = page
                .headers
                .get("x-next-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        assert_eq!(seen, ids, "every sandbox once, oldest first");
        let none = http(
            "GET",
            &format!("/sandboxes?{filter}&state=paused"),
            &[("x-api-key", MALLORY_KEY)],
            Vec::new(),
        )
        .await;
        assert_eq!(none.json(), json!([]), "no sandbox is paused");
        for id in ids {
            assert_eq!(kill(MALLORY_KEY, &id).await, 204);
        }
    });
}

/// A value no other test uses.
fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("t{nanos}")
}

/// The value of the first sample of `metric` whose labels contain `labels`, in `/metrics`.
async fn metric(name: &str, labels: &str) -> f64 {
    let text = http(
        "GET",
        "/metrics",
        &[("authorization", &format!("Bearer {ALICE_KEY}"))],
        Vec::new(),
    )
    .await
    .text();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

#[test]
fn e2b_work_is_counted_in_the_metrics() {
    block_on(async {
        let created = metric("codebeaker_sessions_created_total", "").await;
        let shells = metric("codebeaker_commands_total", "type=\"shell\"").await;
        let (id, token) = create(ALICE_KEY).await;
        let answer = start(&id, &[("x-access-token", &token)], "true").await;
        assert_eq!(answer.status, 200);
        assert!(metric("codebeaker_sessions_created_total", "").await > created);
        assert!(metric("codebeaker_commands_total", "type=\"shell\"").await > shells);
        assert_eq!(kill(ALICE_KEY, &id).await, 204);
    });
}

/// A server with auth off and a small rate limit.
fn open_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        serve(ServerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            rate_limit: Some(codebeaker_server::RateLimitConfig {
                requests_per_second: 2.0,
                burst: 4,
            }),
            ..ServerConfig::default()
        })
    })
}

#[test]
fn auth_off_accepts_any_key_and_the_rate_limit_applies() {
    let addr = open_server();
    block_on(async {
        let created = http_to(
            addr,
            "POST",
            "/v2/sandboxes",
            &[
                ("x-api-key", "e2b_1234"),
                ("content-type", "application/json"),
            ],
            json!({"templateID": "base"}).to_string().into_bytes(),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let id = created.json()["sandboxID"]
            .as_str()
            .expect("id")
            .to_string();
        // Another key is the same anonymous caller, and envd needs no token.
        let info = http_to(
            addr,
            "GET",
            &format!("/sandboxes/{id}"),
            &[("x-api-key", "e2b_99")],
            Vec::new(),
        )
        .await;
        assert_eq!(info.status, 200, "{}", info.text());
        let health = http_to(
            addr,
            "GET",
            "/health",
            &[("e2b-sandbox-id", &id)],
            Vec::new(),
        )
        .await;
        assert_eq!(health.status, 204, "{}", health.text());
        let mut limited = None;
        for _ in 0..20 {
            let answer = http_to(
                addr,
                "GET",
                "/v2/sandboxes",
                &[("x-api-key", "e2b_1234")],
                Vec::new(),
            )
            .await;
            if answer.status == 429 {
                limited = Some(answer);
                break;
            }
        }
        let limited = limited.expect("the rate limit refuses a burst of requests");
        assert_eq!(limited.json()["code"], 429, "{}", limited.text());
        let mut killed = 0;
        for _ in 0..20 {
            killed = http_to(
                addr,
                "DELETE",
                &format!("/sandboxes/{id}"),
                &[("x-api-key", "e2b_1234")],
                Vec::new(),
            )
            .await
            .status;
            if killed != 429 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(killed, 204);
    });
}

/// Kills sandbox `id` as the caller with `key`; the status.
pub(crate) async fn kill(key: &str, id: &str) -> u16 {
    http(
        "DELETE",
        &format!("/sandboxes/{id}"),
        &[("x-api-key", key)],
        Vec::new(),
    )
    .await
    .status
}

// ---------------------------------------------------------------------------------------------
// The benchmark of docs/e2b.md (one run, by hand).

/// One JSON-RPC request on `ws` and its response's `result`.
async fn rpc(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    id: u64,
    method: &str,
    params: Value,
) -> Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(request.to_string()))
        .await
        .expect("send");
    loop {
        let frame = tokio::time::timeout(HTTP_TIMEOUT, ws.next())
            .await
            .expect("an answer in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            let message: Value = serde_json::from_str(&text).expect("JSON");
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{message}");
                return message["result"].clone();
            }
        }
    }
}

#[test]
#[ignore = "a benchmark: cargo test --release -p codebeaker --test tests e2b::bench -- --ignored --nocapture"]
fn bench_python_sdk_beside_json_rpc() {
    const CYCLES: usize = 100;
    const RUNS: usize = 300;
    let script = tests_dir().join("bench.py");
    let stdout = run_program(
        &python(),
        &[
            &script.display().to_string(),
            &CYCLES.to_string(),
            &RUNS.to_string(),
        ],
        ALICE_KEY,
    );
    let times: Value = serde_json::from_str(stdout.trim()).expect("the bench's JSON");
    let samples = |key: &str| -> Vec<f64> {
        times[key]
            .as_array()
            .expect("samples")
            .iter()
            .filter_map(Value::as_f64)
            .collect()
    };
    let (mut sdk_cycle, mut sdk_run) = (samples("cycle_ms"), samples("run_ms"));
    assert_eq!((sdk_cycle.len(), sdk_run.len()), (CYCLES, RUNS));

    let (mut rpc_cycle, mut rpc_run) = block_on(async {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ws/jsonrpc", server())
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {ALICE_KEY}").parse().expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect");
        let echo =
            json!({"type": "shell", "command": "/bin/bash", "args": ["-l", "-c", "echo hi"]});
        let mut id = 0;
        let mut next = || {
            id += 1;
            id
        };
        let mut cycle = Vec::new();
        for _ in 0..=CYCLES {
            let started = std::time::Instant::now();
            let created = rpc(
                &mut ws,
                next(),
                "session.create",
                json!({"language": "python"}),
            )
            .await;
            let session = created["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string();
            let ran = rpc(
                &mut ws,
                next(),
                "session.execute",
                json!({"sessionId": session, "command": echo}),
            )
            .await;
            assert_eq!(ran["result"]["stdout"], "hi\n", "{ran}");
            rpc(
                &mut ws,
                next(),
                "session.close",
                json!({"sessionId": session}),
            )
            .await;
            cycle.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        cycle.remove(0);
        let created = rpc(
            &mut ws,
            next(),
            "session.create",
            json!({"language": "python"}),
        )
        .await;
        let session = created["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let mut run = Vec::new();
        for _ in 0..RUNS {
            let started = std::time::Instant::now();
            let ran = rpc(
                &mut ws,
                next(),
                "session.execute",
                json!({"sessionId": session, "command": echo}),
            )
            .await;
            run.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(ran["result"]["stdout"], "hi\n", "{ran}");
        }
        rpc(
            &mut ws,
            next(),
            "session.close",
            json!({"sessionId": session}),
        )
        .await;
        (cycle, run)
    });
    let row = |what: &str, samples: &mut [f64]| {
        let (median, p99) = common::median_p99(samples);
        println!("| {what} | {} | {median:.1} | {p99:.1} |", samples.len());
    };
    println!("| calls | n | median ms | p99 ms |");
    println!("|---|---|---|---|");
    row(
        "E2B Python SDK: create + run(echo hi) + kill",
        &mut sdk_cycle,
    );
    row("JSON-RPC: session.create + execute + close", &mut rpc_cycle);
    row(
        "E2B Python SDK: commands.run(echo hi), existing sandbox",
        &mut sdk_run,
    );
    row("JSON-RPC: session.execute, existing session", &mut rpc_run);
}

// ---------------------------------------------------------------------------------------------
// The audit log.

#[test]
fn the_audit_log_names_the_caller_of_e2b_work_and_refusals() {
    // Captured by a subscriber of this thread, so this test runs its own server on a
    // current-thread runtime: every task of the server runs here.
    // It runs alone: tracing caches each event site's interest across threads, and other tests
    // hitting the same sites while this thread's subscriber comes and goes could leave an event
    // cached as wanted by no one, and dropped here.
    let _alone = common::exclusive();
    let engine = Arc::clone(common::engine());
    let captured = Captured::default();
    let subscriber = captured.audit_subscriber();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let token = |token: &str, caller: &str| TokenConfig {
                token: token.into(),
                caller: caller.into(),
            };
            let config = ServerConfig {
                listen: "127.0.0.1:0".parse().expect("address"),
                auth: AuthConfig {
                    tokens: vec![token(ALICE_KEY, "alice"), token(MALLORY_KEY, "mallory")],
                },
                ..ServerConfig::default()
            };
            let server = Server::bind(config, engine).await.expect("bind").spawn();
            let addr = server.local_addr();
            let created = http_to(
                addr,
                "POST",
                "/v2/sandboxes",
                &[
                    ("x-api-key", ALICE_KEY),
                    ("content-type", "application/json"),
                ],
                json!({"templateID": "base"}).to_string().into_bytes(),
            )
            .await
            .json();
            let id = created["sandboxID"].as_str().expect("id").to_string();
            let token = created["envdAccessToken"]
                .as_str()
                .expect("token")
                .to_string();
            let envd = [
                ("e2b-sandbox-id", id.as_str()),
                ("x-access-token", token.as_str()),
            ];
            let mut headers = envd.to_vec();
            headers.push(("content-type", "application/connect+json"));
            let request = json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "true"]}});
            let ran = http_to(
                addr,
                "POST",
                "/process.Process/Start",
                &headers,
                envelope(&request),
            )
            .await;
            assert_eq!(ran.status, 200);
            let mut headers = envd.to_vec();
            headers.push(("content-type", "application/octet-stream"));
            let wrote = http_to(addr, "POST", "/files?path=a.txt", &headers, b"a".to_vec()).await;
            assert_eq!(wrote.status, 200, "{}", wrote.text());
            let peek = http_to(
                addr,
                "GET",
                &format!("/sandboxes/{id}"),
                &[("x-api-key", MALLORY_KEY)],
                Vec::new(),
            )
            .await;
            assert_eq!(peek.status, 404);
            let run = http_to(
                addr,
                "GET",
                "/files?path=a.txt",
                &[("e2b-sandbox-id", id.as_str()), ("x-api-key", MALLORY_KEY)],
                Vec::new(),
            )
            .await;
            assert_eq!(run.status, 502);
            let killed = http_to(
                addr,
                "DELETE",
                &format!("/sandboxes/{id}"),
                &[("x-api-key", ALICE_KEY)],
                Vec::new(),
            )
            .await;
            assert_eq!(killed.status, 204);
            server.shutdown().await.expect("shutdown");
            id
        })
    });
    drop(runtime);
    let events = captured.events();
    let find = |what: &str, matches: &dyn Fn(&Value) -> bool| -> Value {
        events
            .iter()
            .find(|e| e["event"] == what && matches(e))
            .cloned()
            .unwrap_or_else(|| panic!("no {what} event like that among {events:#?}"))
    };
    let alices = |e: &Value| e["caller"] == "alice" && e["session_id"] == json!(sandbox);
    assert_eq!(find("session.create", &alices)["success"], true);
    let shell = find("command", &|e| alices(e) && e["command"] == "shell");
    assert_eq!(shell["success"], true, "{shell}");
    find("command", &|e| alices(e) && e["command"] == "write_file");
    assert_eq!(find("session.close", &alices)["reason"], "client");
    let refusals: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "refused" && e["caller"] == "mallory")
        .collect();
    assert_eq!(refusals.len(), 2, "mallory's two tries: {events:#?}");
    for refusal in refusals {
        assert_eq!(refusal["reason"], "session_not_found", "{refusal}");
        assert_eq!(refusal["session_id"], json!(sandbox), "{refusal}");
    }
}
