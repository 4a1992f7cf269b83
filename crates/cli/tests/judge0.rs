//! The Judge0 CE API, end to end: Judge0's official Python SDK (the pinned version
//! `scripts/compat-clients.sh` installs under `target/compat/`) against `/judge0` of a real
//! server on an ephemeral port, over real boxes; then raw HTTP for what the SDK does not show:
//! the shapes of the information routes, Judge0's validation bodies, `fields`, batch bounds and
//! the refusal of `callback_url`. The attacks of one caller on another are in
//! `attacks/judge0.rs`.
//!
//! Alone, as root: `cargo test -p codebeaker --test tests judge0::`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use codebeaker_server::{AuthConfig, CallerQuota, RateLimitConfig, ServerConfig, TokenConfig};
use serde_json::{json, Value};

use crate::common::http::{send, Answer};
use crate::common::{self, runtime};

/// The tokens of the callers of the Judge0 server.
pub const ALICE: &str = "judge0-alice-token";
pub const MALLORY: &str = "judge0-mallory-token";
/// A caller whose token allows two requests, then one every ten seconds.
pub const CAROL: &str = "judge0-carol-token";

/// The server with auth on for `alice`, `mallory` and the rate-limited `carol`, over the shared
/// engine, serving for the whole test run.
pub fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let token = |token: &str, caller: &str| TokenConfig {
            token: token.into(),
            caller: caller.into(),
        };
        let config = ServerConfig {
            auth: AuthConfig {
                tokens: vec![
                    token(ALICE, "j0-alice"),
                    token(MALLORY, "j0-mallory"),
                    token(CAROL, "j0-carol"),
                ],
            },
            caller_quotas: [(
                "j0-carol".to_string(),
                CallerQuota {
                    max_sessions: None,
                    rate_limit: Some(RateLimitConfig {
                        requests_per_second: 0.1,
                        burst: 2,
                    }),
                },
            )]
            .into(),
            ..common::local_config()
        };
        let engine = Arc::clone(common::engine());
        runtime().block_on(common::serve_forever(engine, config))
    })
}

/// One request to the Judge0 door as the caller of `token`.
pub async fn judge0(method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
    let body = body.map_or_else(Vec::new, |b| b.to_string().into_bytes());
    send(
        server(),
        method,
        &format!("/judge0{path}"),
        &[
            ("x-auth-token", token),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

/// Runs a test body on the shared runtime, with the server up.
fn block_on<F: std::future::Future>(test: F) -> F::Output {
    server();
    let _shared = common::shared();
    runtime().block_on(test)
}

/// `tests/judge0/<script> args` with the SDK pointed at the server as alice; panics with its
/// output unless it exits 0. Returns its stdout.
fn run_program(script: &str, args: &[&str]) -> String {
    let addr = server();
    let _shared = common::shared();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/judge0")
        .join(script);
    let mut command =
        std::process::Command::new(common::compat::python("judge0", "Judge0's Python SDK"));
    command
        .arg(&script)
        .args(args)
        .env("JUDGE0_ENDPOINT", format!("http://{addr}/judge0"))
        .env("JUDGE0_TOKEN", ALICE);
    common::compat::run(command)
}

fn sdk_flow(flow: &str) {
    let stdout = run_program("sdk_flows.py", &[flow]);
    assert!(
        stdout.contains(&format!("flow {flow}: all checks passed")),
        "{stdout}"
    );
}

#[test]
fn sdk_verdicts() {
    sdk_flow("verdicts");
}

#[test]
fn sdk_batch() {
    sdk_flow("batch");
}

#[test]
fn sdk_wait_false_then_poll() {
    sdk_flow("poll");
}

#[test]
fn sdk_base64_arguments_and_files() {
    sdk_flow("encodings");
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP.

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn info_routes_have_judge0s_shapes() {
    block_on(async {
        let languages = judge0("GET", "/languages", ALICE, None).await;
        assert_eq!(languages.status, 200, "{}", languages.text());
        let languages = languages.json();
        let python = languages
            .as_array()
            .expect("a list")
            .iter()
            .find(|l| l["id"] == 71)
            .unwrap_or_else(|| panic!("71 is listed: {languages}"))
            .clone();
        let name = python["name"].as_str().expect("a name");
        assert!(
            name.starts_with("Python (3."),
            "named by the toolchain here: {name}"
        );
        assert_ne!(name, "Python (3.8.1)", "not Judge0's toolchain");

        let one = judge0("GET", "/languages/71", ALICE, None).await.json();
        assert_eq!(
            (one["id"].clone(), one["name"].clone()),
            (json!(71), python["name"].clone())
        );
        assert_eq!(one["source_file"], "main.py", "{one}");
        assert_eq!(one["compile_cmd"], Value::Null, "{one}");
        let c = judge0("GET", "/languages/50", ALICE, None).await.json();
        assert!(
            c["compile_cmd"].as_str().is_some_and(|s| s.contains("gcc")),
            "{c}"
        );
        let missing = judge0("GET", "/languages/9999", ALICE, None).await;
        assert_eq!(missing.status, 404);
        assert_eq!(
            missing.json()["error"],
            "language with id 9999 doesn't exist"
        );

        let statuses = judge0("GET", "/statuses", ALICE, None).await.json();
        let statuses = statuses.as_array().expect("a list");
        assert_eq!(statuses.len(), 14);
        assert_eq!(statuses[0], json!({"id": 1, "description": "In Queue"}));
        assert_eq!(
            statuses[10],
            json!({"id": 11, "description": "Runtime Error (NZEC)"})
        );
        assert_eq!(
            statuses[13],
            json!({"id": 14, "description": "Exec Format Error"})
        );

        // Every key the SDK's `Config` model requires.
        let config = judge0("GET", "/config_info", ALICE, None).await.json();
        let required = [
            "allow_enable_network",
            "allow_enable_per_process_and_thread_memory_limit",
            "allow_enable_per_process_and_thread_time_limit",
            "allowed_languages_for_compile_options",
            "callbacks_max_tries",
            "callbacks_timeout",
            "cpu_extra_time",
            "cpu_time_limit",
            "enable_additional_files",
            "enable_batched_submissions",
            "enable_callbacks",
            "enable_command_line_arguments",
            "enable_compiler_options",
            "enable_network",
            "enable_per_process_and_thread_memory_limit",
            "enable_per_process_and_thread_time_limit",
            "enable_submission_delete",
            "enable_wait_result",
            "maintenance_mode",
            "max_cpu_extra_time",
            "max_cpu_time_limit",
            "max_extract_size",
            "max_file_size",
            "max_max_file_size",
            "max_max_processes_and_or_threads",
            "max_memory_limit",
            "max_number_of_runs",
            "max_processes_and_or_threads",
            "max_queue_size",
            "max_stack_limit",
            "max_submission_batch_size",
            "max_wall_time_limit",
            "memory_limit",
            "number_of_runs",
            "redirect_stderr_to_stdout",
            "stack_limit",
            "submission_cache_duration",
            "use_docs_as_homepage",
            "wall_time_limit",
        ];
        assert_eq!(required.len(), 39);
        for key in required {
            assert!(
                config.get(key).is_some_and(|v| !v.is_null()),
                "{key} in {config}"
            );
        }
        assert_eq!(config["enable_callbacks"], false);
        assert_eq!(config["max_submission_batch_size"], 20);

        let about = judge0("GET", "/about", ALICE, None).await.json();
        assert_eq!(about["version"], "1.13.1", "{about}");
        let system = judge0("GET", "/system_info", ALICE, None).await.json();
        assert!(system["CPU(s)"].as_str().is_some(), "{system}");
        let workers = judge0("GET", "/workers", ALICE, None).await.json();
        let queue = &workers[0];
        for key in [
            "queue",
            "size",
            "available",
            "idle",
            "working",
            "paused",
            "failed",
        ] {
            assert!(queue.get(key).is_some(), "{key} in {workers}");
        }
    });
}

#[test]
fn auth_takes_judge0s_header_or_a_bearer_token() {
    block_on(async {
        let none = send(server(), "GET", "/judge0/languages", &[], Vec::new()).await;
        assert_eq!(none.status, 401, "{}", none.text());
        assert!(none.json()["error"]
            .as_str()
            .is_some_and(|m| m.contains("X-Auth-Token")));
        let wrong = judge0("GET", "/languages", "nope", None).await;
        assert_eq!(wrong.status, 401);
        let bearer = send(
            server(),
            "GET",
            "/judge0/statuses",
            &[("authorization", &format!("Bearer {ALICE}"))],
            Vec::new(),
        )
        .await;
        assert_eq!(bearer.status, 200, "{}", bearer.text());
        let unknown = judge0("GET", "/nowhere", ALICE, None).await;
        assert_eq!(unknown.status, 404);
        assert!(unknown.json()["error"].is_string());
    });
}

#[test]
fn wait_true_answers_with_the_finished_submission_and_its_fields() {
    block_on(async {
        let body = json!({"source_code": "print('hi')", "language_id": 71});
        let done = judge0("POST", "/submissions?wait=true", ALICE, Some(body.clone())).await;
        assert_eq!(done.status, 201, "{}", done.text());
        let done = done.json();
        let mut keys: Vec<&str> = done
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "compile_output",
                "memory",
                "message",
                "status",
                "stderr",
                "stdout",
                "time",
                "token"
            ],
            "Judge0's default fields: {done}"
        );
        assert_eq!(done["status"], json!({"id": 3, "description": "Accepted"}));
        assert_eq!(done["stdout"], "hi\n");
        assert_eq!(done["stderr"], Value::Null);
        let time = done["time"].as_str().expect("time is a string of seconds");
        assert!(time.parse::<f64>().is_ok_and(|t| t >= 0.0), "{time}");

        let token = done["token"].as_str().expect("token");
        let chosen = judge0(
            "GET",
            &format!(
                "/submissions/{token}?fields=stdout,exit_code,language,wall_time_limit,created_at"
            ),
            ALICE,
            None,
        )
        .await
        .json();
        assert_eq!(chosen.as_object().map(|o| o.len()), Some(5), "{chosen}");
        assert_eq!(chosen["exit_code"], 0);
        assert_eq!(chosen["language"]["id"], 71);
        assert_eq!(chosen["wall_time_limit"], "10.0");
        assert!(
            chosen["created_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{chosen}"
        );

        let encoded = judge0(
            "GET",
            &format!("/submissions/{token}?base64_encoded=true&fields=stdout,source_code"),
            ALICE,
            None,
        )
        .await
        .json();
        assert_eq!(encoded["stdout"], b64("hi\n"));
        assert_eq!(encoded["source_code"], b64("print('hi')"));

        let invalid = judge0(
            "GET",
            &format!("/submissions/{token}?fields=stdout,nope"),
            ALICE,
            None,
        )
        .await;
        assert_eq!(invalid.status, 400);
        assert_eq!(invalid.json(), json!({"error": "invalid fields: [nope]"}));

        // stderr into stdout, and three runs of one submission.
        let merged = judge0(
            "POST",
            "/submissions?wait=true&fields=stdout,stderr,status",
            ALICE,
            Some(json!({"source_code": "import sys\nprint('a', flush=True)\nprint('b', file=sys.stderr, flush=True)\nprint('c')",
                "language_id": 71, "redirect_stderr_to_stdout": true, "number_of_runs": 3})),
        )
        .await
        .json();
        assert_eq!(merged["stdout"], "a\nb\nc\n", "{merged}");
        assert_eq!(merged["stderr"], Value::Null, "{merged}");
    });
}

#[test]
fn invalid_submissions_get_judge0s_field_errors() {
    block_on(async {
        let answer = judge0(
            "POST",
            "/submissions",
            ALICE,
            Some(
                json!({"language_id": 9999, "cpu_time_limit": 100, "memory_limit": 1000,
                "wall_time_limit": "soon", "max_file_size": -1, "number_of_runs": 21,
                "enable_per_process_and_thread_time_limit": true, "compiler_options": "-O3"}),
            ),
        )
        .await;
        assert_eq!(answer.status, 422, "{}", answer.text());
        let errors = answer.json();
        let expected = json!({
            "source_code": ["can't be blank"],
            "language_id": ["language with id 9999 doesn't exist"],
            "cpu_time_limit": ["must be less than or equal to 15.0"],
            "memory_limit": ["must be greater than or equal to 2048"],
            "wall_time_limit": ["is not a number"],
            "max_file_size": ["must be greater than or equal to 0"],
            "number_of_runs": ["must be less than or equal to 20"],
            "enable_per_process_and_thread_time_limit": ["this option cannot be enabled"],
        });
        for (field, messages) in expected.as_object().expect("object") {
            assert_eq!(&errors[field], messages, "{field} in {errors}");
        }
        assert!(errors["compiler_options"][0]
            .as_str()
            .is_some_and(|m| m.starts_with("setting compiler options is not allowed")));

        let bad64 = judge0(
            "POST",
            "/submissions?base64_encoded=true",
            ALICE,
            Some(json!({"source_code": "not base64!", "language_id": 71})),
        )
        .await;
        assert_eq!(bad64.status, 422);
        assert!(bad64.json()["source_code"][0]
            .as_str()
            .is_some_and(|m| m.contains("base64")));

        let not_json = send(
            server(),
            "POST",
            "/judge0/submissions",
            &[
                ("x-auth-token", ALICE),
                ("content-type", "application/json"),
            ],
            b"{".to_vec(),
        )
        .await;
        assert_eq!(not_json.status, 400);
        assert!(not_json.json()["error"].is_string());
    });
}

#[test]
fn callback_urls_are_refused_and_never_called() {
    block_on(async {
        // A listener the server would reach if it ever made the request.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let answer = judge0(
            "POST",
            "/submissions",
            ALICE,
            Some(json!({"source_code": "print(1)", "language_id": 71, "callback_url": url})),
        )
        .await;
        assert_eq!(answer.status, 422, "{}", answer.text());
        let message = answer.json()["callback_url"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.starts_with("setting callback is not allowed"),
            "{message}"
        );
        assert!(message.contains("never makes requests"), "{message}");
        let called = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
        assert!(
            called.is_err(),
            "the server connected to the callback address"
        );
    });
}

#[test]
fn batches_are_bounded_and_keep_their_order() {
    block_on(async {
        let one = json!({"source_code": "print(7)", "language_id": 71});
        let many: Vec<Value> = (0..21).map(|_| one.clone()).collect();
        let over = judge0(
            "POST",
            "/submissions/batch",
            ALICE,
            Some(json!({"submissions": many})),
        )
        .await;
        assert_eq!(over.status, 400);
        assert_eq!(
            over.json()["error"],
            "number of submissions in a batch should be less than or equal to 20"
        );
        let none = judge0(
            "POST",
            "/submissions/batch",
            ALICE,
            Some(json!({"submissions": []})),
        )
        .await;
        assert_eq!(none.status, 400);
        assert_eq!(
            none.json()["error"],
            "there should be at least one submission in a batch"
        );

        let mixed = judge0(
            "POST",
            "/submissions/batch",
            ALICE,
            Some(json!({"submissions": [one, {"language_id": 71}]})),
        )
        .await;
        assert_eq!(mixed.status, 201, "{}", mixed.text());
        let mixed = mixed.json();
        let token = mixed[0]["token"]
            .as_str()
            .expect("the valid one has a token")
            .to_string();
        assert_eq!(mixed[1], json!({"source_code": ["can't be blank"]}));

        let tokens: Vec<String> = (0..21).map(|_| token.clone()).collect();
        let too_many = judge0(
            "GET",
            &format!("/submissions/batch?tokens={}", tokens.join(",")),
            ALICE,
            None,
        )
        .await;
        assert_eq!(too_many.status, 400);

        let unknown = "00000000-0000-4000-8000-000000000000";
        let mut seen = Value::Null;
        for _ in 0..600 {
            seen = judge0(
                "GET",
                &format!("/submissions/batch?tokens={token},{unknown}&fields=token,status,stdout"),
                ALICE,
                None,
            )
            .await
            .json();
            if seen["submissions"][0]["status"]["id"]
                .as_u64()
                .is_some_and(|id| id > 2)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen["submissions"][0]["stdout"], "7\n", "{seen}");
        assert_eq!(seen["submissions"][1], Value::Null, "{seen}");
    });
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

#[test]
#[ignore = "a benchmark: cargo test -p codebeaker --test tests judge0::bench -- --ignored --nocapture"]
fn bench_wait_true_beside_execution_run() {
    const RUNS: usize = 100;
    block_on(async {
        let hello = json!({"source_code": "print('hello')", "language_id": 71});
        // One of each first: imports, connections and caches are not timed.
        let mut judge = Vec::new();
        for i in 0..=RUNS {
            let started = std::time::Instant::now();
            let done = judge0(
                "POST",
                "/submissions?wait=true&fields=stdout,status",
                ALICE,
                Some(hello.clone()),
            )
            .await;
            if i > 0 {
                judge.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            assert_eq!(done.json()["stdout"], "hello\n", "{}", done.text());
        }
        let url = format!("ws://{}/ws/jsonrpc", server());
        let mut client = common::Client::connect_to(&url, Some(ALICE))
            .await
            .expect("connect");
        let mut rpc = Vec::new();
        for i in 0..=RUNS {
            let started = std::time::Instant::now();
            let done = client
                .ok(
                    "execution.run",
                    json!({"language": "python", "code": "print('hello')", "wait": 60_000}),
                )
                .await;
            if i > 0 {
                rpc.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            assert_eq!(done["stdout"], "hello\n", "{done}");
        }
        println!("| request | n | median ms | p99 ms |");
        println!("|---|---|---|---|");
        for (what, samples) in [
            (
                "Judge0 POST /submissions?wait=true (Python hello)",
                &mut judge,
            ),
            ("JSON-RPC execution.run with wait (Python hello)", &mut rpc),
        ] {
            let (median, p99) = common::median_p99(samples);
            println!("| {what} | {} | {median:.1} | {p99:.1} |", samples.len());
        }
    });
}
