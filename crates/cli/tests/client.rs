//! The client end to end: a real server on an ephemeral port over a real engine (real boxes), the
//! original .NET CodeBeaker's eight integration tests over WebSocket and again in embedded mode,
//! and the failures its client had: reconnection, pool pressure across languages, timed-out
//! programs, batches, multibyte output larger than a frame.
//!
//! Every test runs on the shared runtime over the shared engine (boxes are tied to the runtime
//! that made them); servers are the tests' own, since they stop and restart them. Nothing here asserts timings; every test is bounded by a generous timeout so
//! that a deadlock fails instead of hanging.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codebeaker_client::{
    Backend, BackendExt, Backoff, BatchExecutor, BatchItem, BatchOptions, CallOptions, Client,
    ClientConfig, ClientError, CodeBeakerOptions, ConnectionStatus, Embedded, ItemStatus,
    RuntimeService, RuntimeStatus,
};
use codebeaker_engine::Caller;
use codebeaker_protocol::commands::{Command, ExecuteCommand};
use codebeaker_protocol::methods::{ExecutionEvent, SessionCreateParams, SessionExecuteParams};
use codebeaker_server::{ServerConfig, ServerHandle};
use serde_json::{json, Value};

/// Bound of every test: generous, since the first run of Go or C# compiles.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

use crate::common::{self, engine, run_within};

/// A server of the test's own over the shared engine, on `listen` (which may be a port a server
/// of the test used before), with a short shutdown grace.
async fn start_server(listen: SocketAddr) -> ServerHandle {
    let config = ServerConfig {
        listen,
        shutdown_grace: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    common::start_server(Arc::clone(engine()), config).await
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws/jsonrpc")
}

/// The options of the original .NET CodeBeaker's integration tests: pool size 5, idle 30 min,
/// max lifetime 120 min, timeout 30 s, automatic cleanup off.
fn dotnet_options(websocket_url: String) -> CodeBeakerOptions {
    CodeBeakerOptions {
        websocket_url,
        session_pool_size: 5,
        session_idle_timeout_minutes: 30,
        session_max_lifetime_minutes: 120,
        default_timeout_ms: 30_000,
        enable_auto_cleanup: false,
        ..CodeBeakerOptions::default()
    }
}

/// A fresh server, client, pool and runtime service; the body; then everything closed.
async fn over_websocket<F, Fut>(options: impl FnOnce(String) -> CodeBeakerOptions, body: F)
where
    F: FnOnce(RuntimeService) -> Fut,
    Fut: Future<Output = ()>,
{
    let server = start_server("127.0.0.1:0".parse().expect("address")).await;
    let runtime = RuntimeService::connect(options(url(server.local_addr())))
        .await
        .expect("connect");
    body(runtime.clone()).await;
    runtime.pool().close().await;
    drop(runtime);
    server.shutdown().await.expect("server shutdown");
}

/// A fresh pool and runtime service over the engine in this process, as its own caller.
async fn embedded<F, Fut>(name: &str, options: CodeBeakerOptions, body: F)
where
    F: FnOnce(RuntimeService) -> Fut,
    Fut: Future<Output = ()>,
{
    let caller = Caller(format!("client-test-{name}-{}", std::process::id()));
    let backend = Arc::new(Embedded::with_caller(Arc::clone(engine()), caller));
    let runtime = RuntimeService::new(backend, options).expect("runtime service");
    body(runtime.clone()).await;
    runtime.pool().close().await;
}

// ---------------------------------------------------------------------------------------------
// The original .NET CodeBeaker's eight integration tests, with their programs and assertions.

fn assert_output_42(result: &codebeaker_client::RuntimeResult) {
    assert!(result.success, "{:?}", result.error);
    let output = result.output.as_ref().expect("an output");
    assert_eq!(output["output"], json!(42), "{output}");
    assert!(
        output["output"].is_i64(),
        "an integer, not {}",
        output["output"]
    );
}

async fn execute_async_python_code_should_return_correct_result(runtime: RuntimeService) {
    let result = runtime
        .execute(
            "result = {'output': input_data['value'] * 2}",
            "python",
            json!({"value": 21}),
            Some(30_000),
        )
        .await;
    assert_output_42(&result);
}

async fn execute_async_javascript_code_should_return_correct_result(runtime: RuntimeService) {
    let result = runtime
        .execute(
            "const result = { output: input_data.value * 2 };",
            "javascript",
            json!({"value": 21}),
            Some(30_000),
        )
        .await;
    assert_output_42(&result);
}

async fn execute_async_go_code_should_return_correct_result(runtime: RuntimeService) {
    let code = "value := input_data[\"value\"].(float64)\nresult := map[string]interface{}{\"output\": value * 2}";
    let result = runtime
        .execute(code, "go", json!({"value": 21}), Some(30_000))
        .await;
    assert_output_42(&result);
}

async fn execute_async_csharp_code_should_return_correct_result(runtime: RuntimeService) {
    let code = "var value = input_data.GetProperty(\"value\").GetInt32();\nvar result = new { output = value * 2 };";
    let result = runtime
        .execute(code, "csharp", json!({"value": 21}), Some(30_000))
        .await;
    assert_output_42(&result);
}

async fn session_pool_should_reuse_session(runtime: RuntimeService) {
    let first = runtime
        .execute("result = {'count': 1}", "python", json!({}), Some(30_000))
        .await;
    let second = runtime
        .execute("result = {'count': 1}", "python", json!({}), Some(30_000))
        .await;
    assert!(first.success, "{:?}", first.error);
    assert!(second.success, "{:?}", second.error);
    assert_eq!(second.output, Some(json!({"count": 1})));
    let stats = runtime.stats();
    assert!(stats.total <= 2, "{stats:?}");
    assert!(
        second.session_reused,
        "the second run reuses the first's session"
    );
    assert_eq!(first.session_id, second.session_id);
}

async fn session_pool_should_create_multiple_sessions_for_different_languages(
    runtime: RuntimeService,
) {
    let python = runtime
        .execute(
            "result = {'lang': 'python'}",
            "python",
            json!({}),
            Some(30_000),
        )
        .await;
    let javascript = runtime
        .execute(
            "const result = {lang: 'javascript'};",
            "javascript",
            json!({}),
            Some(30_000),
        )
        .await;
    assert!(python.success, "{:?}", python.error);
    assert!(javascript.success, "{:?}", javascript.error);
    assert_eq!(python.output, Some(json!({"lang": "python"})));
    assert_eq!(javascript.output, Some(json!({"lang": "javascript"})));
    let stats = runtime.stats();
    assert!(stats.total >= 2, "{stats:?}");
}

async fn execute_async_with_error_in_code_should_return_error(runtime: RuntimeService) {
    let result = runtime
        .execute(
            "# This will cause an error\nundefined_variable",
            "python",
            json!({}),
            Some(30_000),
        )
        .await;
    assert!(!result.success);
    let error = result.error.expect("an error message");
    assert!(!error.is_empty());
    assert!(error.contains("NameError"), "{error}");
    assert_eq!(result.output, None, "a failed run has no output");
    assert_eq!(result.status, RuntimeStatus::RuntimeError);
}

async fn execute_async_unsupported_language_should_return_error(runtime: RuntimeService) {
    let result = runtime
        .execute("some code", "cobol", json!({}), Some(30_000))
        .await;
    assert!(!result.success);
    let error = result.error.expect("an error message");
    assert!(error.contains("Unsupported language"), "{error}");
    assert_eq!(result.status, RuntimeStatus::UnsupportedLanguage);
    assert_eq!(
        runtime.stats().creates,
        0,
        "no session for an unsupported language"
    );
}

macro_rules! dotnet_tests {
    ($($name:ident),* $(,)?) => {
        mod over_websocket {
            use super::*;
            $(
                #[test]
                fn $name() {
                    run_within(TEST_TIMEOUT, over_websocket(dotnet_options, super::$name));
                }
            )*
        }
        mod embedded_mode {
            use super::*;
            $(
                #[test]
                fn $name() {
                    run_within(TEST_TIMEOUT, embedded(
                        stringify!($name),
                        dotnet_options(String::new()),
                        super::$name,
                    ));
                }
            )*
        }
    };
}

dotnet_tests!(
    execute_async_python_code_should_return_correct_result,
    execute_async_javascript_code_should_return_correct_result,
    execute_async_go_code_should_return_correct_result,
    execute_async_csharp_code_should_return_correct_result,
    session_pool_should_reuse_session,
    session_pool_should_create_multiple_sessions_for_different_languages,
    execute_async_with_error_in_code_should_return_error,
    execute_async_unsupported_language_should_return_error,
);

// ---------------------------------------------------------------------------------------------
// Beyond the original .NET CodeBeaker's tests.

/// The server goes away mid-run and comes back on the same port: the call in flight fails at
/// once with `ConnectionLost` (not at its 60-second timeout), and later calls succeed on the
/// new connection.
#[test]
fn reconnects_after_the_server_restarts_and_fails_in_flight_calls_fast() {
    run_within(TEST_TIMEOUT, async {
        let server = start_server("127.0.0.1:0".parse().expect("address")).await;
        let addr = server.local_addr();
        let mut config = ClientConfig::new(url(addr));
        config.backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            multiplier: 2.0,
        };
        config.reconnect_wait = Duration::from_secs(30);
        let client = Client::connect(config).await.expect("connect");
        let session = client
            .session_create(SessionCreateParams {
                language: "python".into(),
                ..Default::default()
            })
            .await
            .expect("session");
        let in_flight = {
            let client = client.clone();
            let session_id = session.session_id.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let command = Command::Execute(ExecuteCommand {
                    code: "import time\ntime.sleep(20)".into(),
                    timeout_ms: Some(60_000),
                    ..Default::default()
                });
                let result = client
                    .session_execute(
                        SessionExecuteParams {
                            session_id,
                            command,
                            stream: None,
                        },
                        CallOptions::with_timeout(Duration::from_secs(60)),
                    )
                    .await;
                (result, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.shutdown().await.expect("shutdown");
        let (result, elapsed) = in_flight.await.expect("the in-flight task");
        match result {
            Err(ClientError::ConnectionLost { method, .. }) => {
                assert_eq!(method, "session.execute")
            }
            other => panic!("expected ConnectionLost, got {other:?}"),
        }
        assert!(
            elapsed < Duration::from_secs(20),
            "the in-flight call must fail when the link drops, not at its timeout ({elapsed:?})"
        );

        let server = start_server(addr).await;
        let languages = client
            .language_list()
            .await
            .expect("language.list after reconnect");
        assert!(languages.languages.iter().any(|l| l.name == "python"));
        let fresh = client
            .session_create(SessionCreateParams {
                language: "python".into(),
                ..Default::default()
            })
            .await
            .expect("a session after reconnect");
        let run = client
            .run_snippet(&fresh.session_id, "result = 6 * 7", json!({}), Some(10_000))
            .await
            .expect("a run after reconnect");
        assert!(run.success, "{:?}", run.error);
        assert_eq!(run.result.and_then(|r| r.output), Some(json!(42)));
        assert!(matches!(
            client.status(),
            codebeaker_client::ConnectionStatus::Connected { generation: 2.. }
        ));
        client
            .session_close(&fresh.session_id)
            .await
            .expect("close");
        // The first session is still sleeping in the engine; closing it waits for that.
        let _ = client.session_close(&session.session_id).await;
        server.shutdown().await.expect("shutdown");
    });
}

/// The runtime service over a restarting server: its pooled session survives (sessions outlive
/// their connection), and a run after the restart succeeds.
#[test]
fn the_runtime_service_recovers_after_a_restart() {
    run_within(TEST_TIMEOUT, async {
        let server = start_server("127.0.0.1:0".parse().expect("address")).await;
        let addr = server.local_addr();
        let options = dotnet_options(url(addr));
        let client = Arc::new(
            Client::connect(options.client_config())
                .await
                .expect("connect"),
        );
        let runtime = RuntimeService::new(client.clone(), options).expect("runtime");
        let first = runtime
            .execute("result = 1", "python", json!({}), None)
            .await;
        assert!(first.success, "{:?}", first.error);
        server.shutdown().await.expect("shutdown");
        let server = start_server(addr).await;
        // The client notices the restart and reconnects by itself; wait (bounded) for its new
        // link, so the run below is not the one in flight when the old link is found dead.
        let reconnected = async {
            loop {
                if let ConnectionStatus::Connected { generation } = client.status() {
                    if generation > 1 {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), reconnected)
            .await
            .expect("the client reconnects to the restarted server");
        let second = runtime
            .execute("result = 2", "python", json!({}), None)
            .await;
        assert!(second.success, "{:?}", second.error);
        assert_eq!(second.output, Some(json!(2)));
        runtime.pool().close().await;
        server.shutdown().await.expect("shutdown");
    });
}

/// 50 calls at once across three languages through a pool of two sessions: no deadlock, every
/// call succeeds, and the pool never holds more than two sessions.
#[test]
fn a_pool_of_two_serves_fifty_concurrent_calls_across_three_languages() {
    run_within(
        TEST_TIMEOUT,
        over_websocket(
            |url| CodeBeakerOptions {
                session_pool_size: 2,
                acquire_timeout_ms: 240_000,
                ..dotnet_options(url)
            },
            |runtime| async move {
                let peak = Arc::new(AtomicUsize::new(0));
                let monitor = {
                    let runtime = runtime.clone();
                    let peak = Arc::clone(&peak);
                    tokio::spawn(async move {
                        loop {
                            peak.fetch_max(runtime.stats().total, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    })
                };
                let programs = [
                ("python", "result = {'n': input_data['n'], 'lang': 'python'}"),
                (
                    "javascript",
                    "const result = { n: input_data.n, lang: 'javascript' };",
                ),
                (
                    "bash",
                    "n=$(printf '%s' \"$input_data\" | tr -dc 0-9)\nresult=\"{\\\"n\\\": $n, \\\"lang\\\": \\\"bash\\\"}\"",
                ),
            ];
                let calls = (0..50).map(|n| {
                    let runtime = runtime.clone();
                    let (language, code) = programs[n % programs.len()];
                    async move {
                        let result = runtime
                            .execute(code, language, json!({"n": n}), Some(30_000))
                            .await;
                        (n, language, result)
                    }
                });
                let results = futures_util::future::join_all(calls).await;
                monitor.abort();
                for (n, language, result) in results {
                    assert!(result.success, "{language} #{n}: {:?}", result.error);
                    assert_eq!(
                        result.output,
                        Some(json!({"n": n, "lang": language})),
                        "{language} #{n}"
                    );
                }
                let stats = runtime.stats();
                assert!(
                    peak.load(Ordering::Relaxed) <= 2,
                    "peak {} sessions",
                    peak.load(Ordering::Relaxed)
                );
                assert!(stats.total <= 2, "{stats:?}");
                assert_eq!(stats.active, 0, "{stats:?}");
                assert_eq!(stats.waiting, 0, "{stats:?}");
            },
        ),
    );
}

/// A program that runs out of time is killed on the server; its session is discarded, not
/// reused, and the next call works.
#[test]
fn a_timed_out_program_is_killed_and_its_session_discarded() {
    run_within(
        TEST_TIMEOUT,
        over_websocket(dotnet_options, |runtime| async move {
            let started = Instant::now();
            let result = runtime
                .execute("while True:\n    pass", "python", json!({}), Some(500))
                .await;
            assert!(!result.success);
            assert_eq!(result.status, RuntimeStatus::Timeout, "{:?}", result.error);
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "killed on the server, not waited out"
            );
            let stats = runtime.stats();
            assert_eq!(stats.discards, 1, "{stats:?}");
            let timed_out = result.session_id.expect("a session ran it");
            let next = runtime
                .execute("result = {'ok': True}", "python", json!({}), Some(10_000))
                .await;
            assert!(next.success, "{:?}", next.error);
            assert_eq!(next.output, Some(json!({"ok": true})));
            assert_ne!(next.session_id.as_deref(), Some(timed_out.as_str()));
            assert!(!next.session_reused);
            // The discarded session is closed on the server (in the background: poll for it).
            let backend = runtime.backend();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let sessions = backend.session_list().await.expect("session.list");
                if !sessions.sessions.iter().any(|s| s.session_id == timed_out) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the timed-out session was never closed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }),
    );
}

const EVERY_FIFTH_FAILS: &str = "\
if input_data['n'] % 5 == 0:
    raise ValueError('item %d fails' % input_data['n'])
result = {'n': input_data['n'], 'square': input_data['n'] ** 2}
";

fn numbered_items(count: usize) -> Vec<BatchItem> {
    (1..=count)
        .map(|n| BatchItem {
            id: json!(format!("item-{n}")),
            input: json!({"n": n}),
        })
        .collect()
}

/// 200 items at concurrency 8, every fifth failing: exactly 40 failures, results in input order.
#[test]
fn a_batch_of_200_items_reports_40_failures_in_input_order() {
    run_within(
        TEST_TIMEOUT,
        over_websocket(
            |url| CodeBeakerOptions {
                session_pool_size: 8,
                ..dotnet_options(url)
            },
            |runtime| async move {
                let items = numbered_items(200);
                let progressed = Arc::new(AtomicUsize::new(0));
                let counter = Arc::clone(&progressed);
                let batch = BatchExecutor::new(
                    runtime.clone(),
                    BatchOptions {
                        max_concurrency: 8,
                        ..Default::default()
                    },
                )
                .expect("batch")
                .on_progress(Arc::new(move |_| {
                    counter.fetch_add(1, Ordering::Relaxed);
                }));
                let report = batch.run(EVERY_FIFTH_FAILS, "python", items.clone()).await;
                assert_eq!(report.results.len(), 200);
                assert_eq!(progressed.load(Ordering::Relaxed), 200);
                for (i, (item, result)) in items.iter().zip(&report.results).enumerate() {
                    let n = i + 1;
                    assert_eq!(result.index, i);
                    assert_eq!(result.id, item.id, "results are in input order");
                    let run = result.result.as_ref().expect("every item ran");
                    if n % 5 == 0 {
                        assert_eq!(result.status, ItemStatus::Failed, "item {n}");
                        let error = run.error.as_deref().unwrap_or_default();
                        assert!(error.contains(&format!("item {n} fails")), "{error}");
                        assert_eq!(run.output, None);
                    } else {
                        assert_eq!(result.status, ItemStatus::Ok, "item {n}: {:?}", run.error);
                        assert_eq!(run.output, Some(json!({"n": n, "square": n * n})));
                    }
                }
                let summary = &report.summary;
                assert_eq!(summary.total, 200);
                assert_eq!(summary.count(ItemStatus::Failed), 40);
                assert_eq!(summary.count(ItemStatus::Ok), 160);
                assert_eq!(summary.count(ItemStatus::Skipped), 0);
                assert!(summary.latency_p50_ms <= summary.latency_p99_ms);
                assert!(summary.pool.total <= 8, "{:?}", summary.pool);
                assert_eq!(
                    summary.pool.discards, 0,
                    "a failing program does not break its session"
                );
            },
        ),
    );
}

/// With stop-on-first-error, the items after the failure are reported skipped, none dropped.
#[test]
fn stop_on_first_error_skips_the_rest_and_drops_nothing() {
    run_within(
        TEST_TIMEOUT,
        embedded(
            "stop_on_first_error",
            CodeBeakerOptions {
                enable_auto_cleanup: false,
                session_pool_size: 4,
                ..CodeBeakerOptions::default()
            },
            |runtime| async move {
                let program = "if input_data['n'] == 3:\n    raise RuntimeError('three')\nresult = input_data['n']";
                let items = numbered_items(30);
                let serial = BatchExecutor::new(
                    runtime.clone(),
                    BatchOptions {
                        max_concurrency: 1,
                        stop_on_first_error: true,
                        ..Default::default()
                    },
                )
                .expect("batch");
                let report = serial.run(program, "python", items.clone()).await;
                assert_eq!(report.results.len(), 30);
                let statuses: Vec<ItemStatus> = report.results.iter().map(|r| r.status).collect();
                assert_eq!(
                    &statuses[..3],
                    &[ItemStatus::Ok, ItemStatus::Ok, ItemStatus::Failed]
                );
                assert!(
                    statuses[3..].iter().all(|s| *s == ItemStatus::Skipped),
                    "{statuses:?}"
                );
                assert_eq!(report.summary.count(ItemStatus::Skipped), 27);
                for (item, result) in items.iter().zip(&report.results) {
                    assert_eq!(item.id, result.id);
                }

                let parallel = BatchExecutor::new(
                    runtime.clone(),
                    BatchOptions {
                        max_concurrency: 4,
                        stop_on_first_error: true,
                        ..Default::default()
                    },
                )
                .expect("batch");
                let report = parallel.run(program, "python", items.clone()).await;
                assert_eq!(report.results.len(), 30, "nothing dropped");
                assert_eq!(report.results[2].status, ItemStatus::Failed);
                // How many items were already running when the failure came back depends on timing
                // (the serial batch above checks the exact count); none is ever dropped or lost.
                assert_eq!(
                    report.summary.count(ItemStatus::Ok)
                        + report.summary.count(ItemStatus::Failed)
                        + report.summary.count(ItemStatus::Skipped),
                    30
                );
                let first_failure = report
                    .results
                    .iter()
                    .position(|r| r.status == ItemStatus::Failed)
                    .expect("a failure");
                for (i, r) in report.results.iter().enumerate() {
                    assert_eq!(r.index, i);
                    if r.status == ItemStatus::Skipped {
                        assert!(i > first_failure);
                        assert!(r.reason.is_some() && r.result.is_none());
                    }
                }
            },
        ),
    );
}

/// 200 KB of multibyte text (more than one WebSocket frame) comes back byte for byte, as
/// standard output and as the snippet's result.
#[test]
fn multibyte_output_larger_than_a_frame_arrives_intact() {
    run_within(
        TEST_TIMEOUT,
        over_websocket(dotnet_options, |runtime| async move {
            let unit = "é✓日本";
            let repeat = 200 * 1024 / unit.len() + 1;
            let expected = unit.repeat(repeat);
            assert!(expected.len() > 200 * 1024);
            let code = format!(
            "import sys\ntext = '{unit}' * {repeat}\nsys.stdout.write(text)\nresult = {{'text': text}}"
        );
            let result = runtime.execute(&code, "python", json!({}), None).await;
            assert!(result.success, "{:?}", result.error);
            assert_eq!(result.stdout.len(), expected.len());
            assert!(result.stdout == expected, "stdout differs");
            let text = result
                .output
                .as_ref()
                .and_then(|o| o.get("text"))
                .and_then(Value::as_str)
                .expect("the text");
            assert!(text == expected, "output differs");
        }),
    );
}

/// Streamed output reaches the caller of that request, in order, before its result.
#[test]
fn streamed_output_reaches_the_request_it_belongs_to() {
    run_within(TEST_TIMEOUT, async {
        let server = start_server("127.0.0.1:0".parse().expect("address")).await;
        let client = Client::connect(ClientConfig::new(url(server.local_addr())))
            .await
            .expect("connect");
        let session = client
            .session_create(SessionCreateParams {
                language: "python".into(),
                ..Default::default()
            })
            .await
            .expect("session");
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        let command = Command::Execute(ExecuteCommand {
            code: "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.02)"
                .into(),
            ..Default::default()
        });
        let reply = client
            .session_execute_streaming(
                SessionExecuteParams {
                    session_id: session.session_id.clone(),
                    command,
                    stream: None,
                },
                None,
                events,
            )
            .await
            .expect("streamed run");
        assert!(reply.success, "{:?}", reply.error);
        let mut streamed = String::new();
        let mut started = false;
        let mut completed = false;
        while let Ok(event) = received.try_recv() {
            match event {
                ExecutionEvent::Started(_) => started = true,
                ExecutionEvent::Output(o) => streamed.push_str(&o.data),
                ExecutionEvent::Completed(c) => {
                    completed = true;
                    assert!(c.success);
                }
            }
        }
        assert!(started && completed);
        assert_eq!(streamed, "0\n1\n2\n3\n4\n");
        client
            .session_close(&session.session_id)
            .await
            .expect("close");
        server.shutdown().await.expect("shutdown");
    });
}

/// Every command helper works over the wire, and embedded mode gives the same answers.
#[test]
fn command_helpers_work_over_websocket_and_embedded() {
    run_within(TEST_TIMEOUT, async {
        let server = start_server("127.0.0.1:0".parse().expect("address")).await;
        let client = Client::connect(ClientConfig::new(url(server.local_addr())))
            .await
            .expect("connect");
        let embedded =
            Embedded::with_caller(Arc::clone(engine()), Caller("client-test-helpers".into()));
        let backends: [&dyn Backend; 2] = [&client, &embedded];
        let mut answers = Vec::new();
        for backend in backends {
            let session = backend
                .session_create(SessionCreateParams {
                    language: "bash".into(),
                    ..Default::default()
                })
                .await
                .expect("session");
            let id = session.session_id.as_str();
            let dir = backend.create_dir(id, "dir").await.expect("create_dir");
            assert!(dir.success, "{:?}", dir.error);
            let write = backend
                .write_file(id, "dir/a.txt", "one\n")
                .await
                .expect("write");
            assert!(write.success, "{:?}", write.error);
            backend
                .append_file(id, "dir/a.txt", "two\n")
                .await
                .expect("append");
            let read = backend.read_file(id, "dir/a.txt").await.expect("read");
            let content = read.result.expect("content").content;
            assert_eq!(content, "one\ntwo\n");
            backend
                .copy_file(id, "dir/a.txt", "b.txt", false)
                .await
                .expect("copy");
            let shell = backend.shell(id, "cat", &["b.txt"]).await.expect("shell");
            assert_eq!(shell.result.expect("run").stdout, "one\ntwo\n");
            let diff = backend.diff_text(id, "a\n", "b\n").await.expect("diff");
            assert_eq!(diff.result.expect("diff").additions, 1);
            let missing = backend.read_file(id, "nope.txt").await.expect("read");
            assert!(!missing.success && missing.error.is_some());
            let deleted = backend.delete_file(id, "dir", true).await.expect("delete");
            assert!(deleted.success, "{:?}", deleted.error);
            let list = backend
                .list_files(id, Default::default())
                .await
                .expect("list");
            let names: Vec<String> = list
                .result
                .expect("list")
                .entries
                .into_iter()
                .map(|e| e.name)
                .collect();
            answers.push((content, names));
            let listed = backend.session_list().await.expect("session.list");
            assert!(listed.sessions.iter().any(|s| s.session_id == id));
            backend.session_close(id).await.expect("close");
            let gone = backend.run_code(id, "echo hi").await;
            assert!(
                matches!(&gone, Err(e) if e.is_session_not_found()),
                "{gone:?}"
            );
        }
        assert_eq!(
            answers[0], answers[1],
            "embedded mode answers as the server does"
        );
        let init = client.initialize().await.expect("initialize");
        assert!(init.capabilities.streaming);
        let once = client
            .run_once(
                codebeaker_protocol::methods::ExecutionRunParams {
                    language: "python".into(),
                    code: "print('once')".into(),
                    ..Default::default()
                },
                Duration::from_secs(60),
            )
            .await
            .expect("execution.run");
        assert_eq!(once.stdout, "once\n");
        server.shutdown().await.expect("shutdown");
    });
}

/// A one-shot run through the client's long-poll, over WebSocket and embedded: a quick run comes
/// back finished from one call, a run longer than the wait comes back still going, and waiting
/// on it again returns it finished.
#[test]
fn one_shot_runs_long_poll_over_websocket_and_embedded() {
    use codebeaker_protocol::methods::{ExecutionRunParams, ExecutionStatus};
    run_within(TEST_TIMEOUT, async {
        let server = start_server("127.0.0.1:0".parse().expect("address")).await;
        let client = Client::connect(ClientConfig::new(url(server.local_addr())))
            .await
            .expect("connect");
        let embedded =
            Embedded::with_caller(Arc::clone(engine()), Caller("client-test-one-shot".into()));
        let backends: [&dyn Backend; 2] = [&client, &embedded];
        for backend in backends {
            let quick = backend
                .run_once(
                    ExecutionRunParams {
                        language: "python".into(),
                        code: "print('quick')".into(),
                        ..Default::default()
                    },
                    Duration::from_secs(120),
                )
                .await
                .expect("execution.run");
            assert_eq!(quick.status, ExecutionStatus::Completed, "{quick:?}");
            assert_eq!(quick.stdout, "quick\n");
            assert_eq!(quick.exit_code, Some(0));

            let slow = ExecutionRunParams {
                language: "python".into(),
                code: "import time\ntime.sleep(2)\nprint('slow')".into(),
                timeout: Some(30),
                ..Default::default()
            };
            let going = backend
                .execution_run_wait(slow, Duration::from_millis(100))
                .await
                .expect("execution.run with wait");
            assert!(
                matches!(
                    going.status,
                    ExecutionStatus::Queued | ExecutionStatus::Running
                ),
                "a two-second run is not over after a 100 ms wait: {going:?}"
            );
            assert_eq!(going.duration_ms, None);
            let mut done = going.clone();
            for _ in 0..10 {
                done = backend
                    .execution_status_wait(&going.execution_id, Duration::from_secs(60))
                    .await
                    .expect("execution.status with wait");
                if done.status != ExecutionStatus::Queued && done.status != ExecutionStatus::Running
                {
                    break;
                }
            }
            assert_eq!(done.status, ExecutionStatus::Completed, "{done:?}");
            assert_eq!(done.stdout, "slow\n");
            assert_eq!(done.execution_id, going.execution_id);
        }
        drop(client);
        server.shutdown().await.expect("shutdown");
    });
}
