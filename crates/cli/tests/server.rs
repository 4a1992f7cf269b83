//! The server end to end: a real server on an ephemeral port over a real engine, real boxes, and
//! real WebSocket and HTTP clients. Covers the JSON-RPC envelope and framing, every method, the
//! streaming notifications, the REST endpoints, health and metrics, authentication, rate limits,
//! the in-flight bound, and sessions outliving their connection.
//!
//! Every test runs on one shared runtime with one shared engine (boxes are tied to the runtime
//! that made them), and closes the sessions it opens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use codebeaker_engine::{Engine, EngineConfig, SessionConfig};
use codebeaker_server::{
    AuthConfig, CallerQuota, RateLimitConfig, Server, ServerConfig, ServerHandle, TokenConfig,
};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::host::{self, boxes_of};
use crate::common::{
    self, engine, local_config, run, runtime, server as shared_server, Client, FRAME_TIMEOUT,
};

async fn start(config: ServerConfig) -> ServerHandle {
    common::start_server(Arc::clone(engine()), config).await
}

// ------------------------------------------------------------------------------------------
// A small HTTP client.

struct HttpResponse {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl HttpResponse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_string())))
        .expect("request");
    let response = tokio::time::timeout(FRAME_TIMEOUT, sender.send_request(request))
        .await
        .expect("a response in time")
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

// ------------------------------------------------------------------------------------------
// The envelope and framing.

#[test]
fn initialize_reports_server_languages_commands_limits_and_isolation() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let result = client
            .ok(
                "initialize",
                json!({"clientInfo": {"name": "test", "version": "1"}}),
            )
            .await;
        assert_eq!(result["serverInfo"]["name"], "codebeaker");
        assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(result["protocolVersion"], "1.0");
        let capabilities = &result["capabilities"];
        assert_eq!(capabilities["streaming"], true);
        let languages = capabilities["languages"].as_array().expect("languages");
        assert!(languages
            .iter()
            .any(|l| l["name"] == "python" && l["available"] == true));
        let commands = capabilities["commands"].as_array().expect("commands");
        for command in ["execute", "write_file", "read_file", "shell", "apply_patch"] {
            assert!(commands.contains(&json!(command)), "{command}");
        }
        assert_eq!(capabilities["limits"]["maxMessageBytes"], 16 * 1024 * 1024);
        assert!(capabilities["limits"]["maxSessions"].as_u64().is_some());
        assert_eq!(capabilities["isolation"]["backend"], "native");
        assert!(capabilities["isolation"]["seccomp"].is_boolean());
    });
}

#[test]
fn language_list_names_languages_with_aliases() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let result = client.ok("language.list", json!({})).await;
        let languages = result["languages"].as_array().expect("languages");
        let python = languages
            .iter()
            .find(|l| l["name"] == "python")
            .expect("python");
        assert!(python["aliases"]
            .as_array()
            .expect("aliases")
            .contains(&json!("py")));
        assert!(python["version"].is_string());
        // Which languages run warm: Python and JavaScript have workers, Go starts its binary.
        let warm = |name: &str| {
            languages
                .iter()
                .find(|l| l["name"] == name)
                .map(|l| l["warm"].clone())
        };
        assert_eq!(warm("python"), Some(json!(true)));
        assert_eq!(warm("javascript"), Some(json!(true)));
        assert_eq!(warm("go"), Some(json!(false)));
    });
}

#[test]
fn ids_are_echoed_as_numbers_and_as_strings() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client
            .send_text(r#"{"jsonrpc":"2.0","id":7,"method":"language.list"}"#)
            .await;
        assert_eq!(client.recv().await["id"], json!(7));
        client
            .send_text(r#"{"jsonrpc":"2.0","id":"abc-1","method":"language.list"}"#)
            .await;
        let response = client.recv().await;
        assert_eq!(response["id"], json!("abc-1"));
        assert!(response.get("error").is_none());
        assert!(response.get("result").is_some());
    });
}

#[test]
fn a_notification_gets_no_response() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client
            .send_text(r#"{"jsonrpc":"2.0","method":"language.list"}"#)
            .await;
        client
            .send_text(r#"{"jsonrpc":"2.0","id":null,"method":"no.such.method"}"#)
            .await;
        client.expect_silence(Duration::from_millis(300)).await;
        let response = client.call("language.list", json!({})).await;
        assert_eq!(response["id"], json!(1));
    });
}

#[test]
fn newline_separated_messages_in_one_frame_get_one_response_each() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client
            .send_text(
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"language.list\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"session.list\"}\n",
            )
            .await;
        let mut ids = vec![
            client.recv().await["id"].clone(),
            client.recv().await["id"].clone(),
        ];
        ids.sort_by_key(|id| id.as_u64());
        assert_eq!(ids, vec![json!(1), json!(2)]);
    });
}

#[test]
fn a_batch_gets_one_array_of_responses() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client
            .send_text(
                r#"[{"jsonrpc":"2.0","id":1,"method":"language.list"},
                    {"jsonrpc":"2.0","method":"session.list"},
                    {"jsonrpc":"2.0","id":2,"method":"nope"},
                    {"jsonrpc":"1.0","id":3,"method":"language.list"}]"#,
            )
            .await;
        let responses = client.recv().await;
        let responses = responses.as_array().expect("an array frame");
        assert_eq!(responses.len(), 3, "{responses:?}");
        assert!(responses[0]["result"]["languages"].is_array());
        assert_eq!(responses[1]["error"]["code"], -32601);
        assert_eq!(responses[2]["id"], 3);
        assert_eq!(responses[2]["error"]["code"], -32600);
    });
}

#[test]
fn malformed_input_gets_the_right_error_codes() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client.send_text("{this is not json").await;
        let response = client.recv().await;
        assert_eq!(response["error"]["code"], -32700);
        assert_eq!(response["id"], Value::Null);
        assert!(response.get("result").is_none());

        client
            .ws
            .send(Message::binary(b"{}".to_vec()))
            .await
            .expect("send");
        assert_eq!(client.recv().await["error"]["code"], -32600);

        let error = client.err("no.such.method", json!({})).await;
        assert_eq!(error["code"], -32601);

        let error = client.err("session.create", json!({})).await;
        assert_eq!(error["code"], -32602);
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("language"),
            "{error}"
        );

        let error = client
            .err(
                "session.execute",
                json!({"sessionId": "x", "command": {"type": "frobnicate"}}),
            )
            .await;
        assert_eq!(error["code"], -32602);
        assert_eq!(error["data"]["field"], "command");
    });
}

#[test]
fn unsupported_languages_and_unknown_sessions_have_their_codes() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let error = client
            .err("session.create", json!({"language": "cobol-2077"}))
            .await;
        assert_eq!(error["code"], -32003);
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Unsupported language"),
            "{error}"
        );
        let error = client
            .err(
                "session.execute",
                json!({"sessionId": "no-such-session", "command": {"type": "read_file", "path": "a"}}),
            )
            .await;
        assert_eq!(error["code"], -32001);
        let error = client
            .err("session.close", json!({"sessionId": "no-such-session"}))
            .await;
        assert_eq!(error["code"], -32001);
        let error = client
            .err("execution.status", json!({"executionId": "no-such-run"}))
            .await;
        assert_eq!(error["code"], -32001);
    });
}

// ------------------------------------------------------------------------------------------
// Sessions and commands.

#[test]
fn the_seeds_session_flow_writes_runs_and_closes() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let created = client
            .ok(
                "session.create",
                json!({"language": "python", "idleTimeoutMinutes": 30, "maxLifetimeMinutes": 120, "memoryLimitMB": 256}),
            )
            .await;
        let session = created["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        assert_eq!(created["language"], "python");
        assert_eq!(created["state"], "Active");
        assert!(created["createdAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert!(created["containerId"].is_string());
        assert_eq!(created["config"]["memoryLimitMB"], 256);
        assert_eq!(created["config"]["idleTimeoutMinutes"], 30);

        let written = client
            .execute(
                &session,
                json!({"type": "write_file", "path": "/workspace/input.json", "content": "{\"value\": 21}", "mode": "Create"}),
            )
            .await;
        assert_eq!(written["success"], true, "{written}");
        assert_eq!(written["error"], Value::Null);

        let script = client
            .execute(
                &session,
                json!({"type": "execute", "code": "import json\nprint(json.load(open('/workspace/input.json'))['value'] * 2)"}),
            )
            .await;
        assert_eq!(script["success"], true, "{script}");
        assert_eq!(script["result"]["stdout"], "42\n");
        assert_eq!(script["result"]["exitCode"], 0);
        assert!(script["durationMs"].is_u64());

        let snippet = client
            .execute(
                &session,
                json!({"type": "execute", "code": "result = {'output': input_data['value'] * 2}", "input": {"value": 21}}),
            )
            .await;
        assert_eq!(snippet["success"], true, "{snippet}");
        assert_eq!(snippet["result"]["output"], json!({"output": 42}));

        let listed = client.ok("session.list", json!({})).await;
        let mine = listed["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .find(|s| s["sessionId"] == json!(session))
            .cloned()
            .expect("listed");
        assert_eq!(mine["executionCount"], 3);
        assert_eq!(mine["language"], "python");

        client.close_session(&session).await;
        let error = client
            .err(
                "session.execute",
                json!({"sessionId": session, "command": {"type": "read_file", "path": "input.json"}}),
            )
            .await;
        assert_eq!(error["code"], -32001);
    });
}

#[test]
fn command_failures_are_results_with_success_false() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let session = client.create_session("python").await;

        let shell = client
            .execute(
                &session,
                json!({"type": "shell", "command": "sh", "args": ["-c", "echo out; echo err >&2; exit 1"]}),
            )
            .await;
        assert_eq!(shell["success"], false, "{shell}");
        assert_eq!(shell["result"]["exitCode"], 1);
        assert_eq!(shell["result"]["stdout"], "out\n");
        assert_eq!(shell["result"]["status"], "runtime_error");
        assert!(shell["error"].is_string());

        for path in [
            "../../etc/passwd",
            "/etc/passwd",
            "/workspace/../etc/shadow",
        ] {
            let escaped = client
                .execute(&session, json!({"type": "read_file", "path": path}))
                .await;
            assert_eq!(escaped["success"], false, "{path}: {escaped}");
            assert!(escaped["error"].is_string(), "{path}: {escaped}");
        }
        let escaped = client
            .execute(
                &session,
                json!({"type": "write_file", "path": "../outside.txt", "content": "x"}),
            )
            .await;
        assert_eq!(escaped["success"], false, "{escaped}");

        let missing = client
            .execute(&session, json!({"type": "read_file", "path": "nope.txt"}))
            .await;
        assert_eq!(missing["success"], false, "{missing}");

        let raised = client
            .execute(
                &session,
                json!({"type": "execute", "code": "# This will cause an error\nundefined_variable", "input": {}}),
            )
            .await;
        assert_eq!(raised["success"], false, "{raised}");
        assert!(
            raised["error"]
                .as_str()
                .unwrap_or_default()
                .contains("undefined_variable"),
            "{raised}"
        );

        client.close_session(&session).await;
    });
}

#[test]
fn streaming_notifications_arrive_before_the_final_response() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let session = client.create_session("python").await;
        let response = client
            .call(
                "session.execute",
                json!({
                    "sessionId": session,
                    "stream": true,
                    "command": {"type": "execute", "code": "import sys, time\nprint('hello', flush=True)\ntime.sleep(0.2)\nprint('oops', file=sys.stderr, flush=True)\nprint('world', flush=True)"},
                }),
            )
            .await;
        let request_id = response["id"].clone();
        assert_eq!(response["result"]["success"], true, "{response}");
        assert_eq!(response["result"]["result"]["stdout"], "hello\nworld\n");

        let events = std::mem::take(&mut client.notifications);
        let methods: Vec<&str> = events
            .iter()
            .map(|e| e["method"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(methods.first(), Some(&"execution.started"), "{methods:?}");
        assert_eq!(methods.last(), Some(&"execution.completed"), "{methods:?}");
        for event in &events {
            assert_eq!(event["params"]["requestId"], request_id, "{event}");
            assert_eq!(event["params"]["sessionId"], json!(session), "{event}");
        }
        let outputs: Vec<&Value> = events
            .iter()
            .filter(|e| e["method"] == "execution.output")
            .collect();
        let mut stdout = String::new();
        let mut stderr = String::new();
        for (i, output) in outputs.iter().enumerate() {
            assert_eq!(output["params"]["seq"], i, "seq counts from 0 without gaps");
            let data = output["params"]["data"].as_str().unwrap_or_default();
            match output["params"]["stream"].as_str() {
                Some("stdout") => stdout.push_str(data),
                Some("stderr") => stderr.push_str(data),
                other => panic!("stream {other:?}"),
            }
        }
        assert_eq!(stdout, "hello\nworld\n");
        assert_eq!(stderr, "oops\n");
        let completed = &events[events.len() - 1]["params"];
        assert_eq!(completed["success"], true);
        assert_eq!(completed["status"], "ok");

        // Asked on the command instead of the params, for a shell command.
        let response = client
            .call(
                "session.execute",
                json!({"sessionId": session, "command": {"type": "shell", "command": "echo", "args": ["hi"], "stream": true}}),
            )
            .await;
        assert_eq!(response["result"]["success"], true, "{response}");
        let events = std::mem::take(&mut client.notifications);
        assert!(events
            .iter()
            .any(|e| e["method"] == "execution.output" && e["params"]["data"] == "hi\n"));

        // Without streaming, no notifications.
        client
            .execute(
                &session,
                json!({"type": "shell", "command": "echo", "args": ["quiet"]}),
            )
            .await;
        assert!(client.notifications.is_empty());

        client.close_session(&session).await;
    });
}

#[test]
fn a_session_outlives_its_connection() {
    run(async {
        let addr = shared_server().await;
        let mut first = Client::connect(addr).await;
        let session = first.create_session("python").await;
        first
            .execute(
                &session,
                json!({"type": "write_file", "path": "kept.txt", "content": "still here"}),
            )
            .await;
        first.ws.close(None).await.expect("close");
        drop(first);

        let mut second = Client::connect(addr).await;
        let listed = second.ok("session.list", json!({})).await;
        assert!(listed["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|s| s["sessionId"] == json!(session)));
        let read = second
            .execute(&session, json!({"type": "read_file", "path": "kept.txt"}))
            .await;
        assert_eq!(read["success"], true, "{read}");
        assert_eq!(read["result"]["content"], "still here");
        second.close_session(&session).await;
    });
}

// ------------------------------------------------------------------------------------------
// One-shot executions.

#[test]
fn execution_run_then_status_until_completed() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let queued = client
            .ok(
                "execution.run",
                json!({"Language": "python", "Code": "print('hi from a one-shot run')", "Timeout": 30}),
            )
            .await;
        assert_eq!(queued["status"], "queued");
        let id = queued["executionId"]
            .as_str()
            .expect("executionId")
            .to_string();
        let mut finished = None;
        let mut seen = Vec::new();
        for _ in 0..1200 {
            let status = client
                .ok("execution.status", json!({"executionId": id}))
                .await;
            let state = status["status"].as_str().unwrap_or_default().to_string();
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state == "completed" || state == "failed" {
                finished = Some(status);
                break;
            }
            assert!(
                status["durationMs"].is_null(),
                "a run that is not finished has no duration: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let finished = finished.expect("the run finishes");
        assert_eq!(finished["status"], "completed", "{finished}");
        assert_eq!(finished["stdout"], "hi from a one-shot run\n");
        assert_eq!(finished["exitCode"], 0);
        assert_eq!(finished["timeout"], false);
        assert!(finished["durationMs"].is_u64());
        let order = ["queued", "running", "completed"];
        let positions: Vec<usize> = seen
            .iter()
            .map(|s| order.iter().position(|o| o == s).expect("a known status"))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "statuses went {seen:?}"
        );
        // Once finished, always finished.
        let again = client
            .ok("execution.status", json!({"executionId": id}))
            .await;
        assert_eq!(again["status"], "completed");

        let error = client
            .err(
                "execution.run",
                json!({"language": "python", "code": "print(1)", "packages": ["requests"]}),
            )
            .await;
        assert_eq!(error["code"], -32602);
        let error = client
            .err(
                "execution.run",
                json!({"language": "cobol-2077", "code": "x"}),
            )
            .await;
        assert_eq!(error["code"], -32003);
    });
}

#[test]
fn execution_status_with_wait_answers_when_the_run_ends() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let queued = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": "print('waited for')"}),
            )
            .await;
        let id = queued["executionId"].as_str().expect("executionId");
        // Generous: the answer comes when the run ends, long before this.
        let finished = client
            .ok(
                "execution.status",
                json!({"executionId": id, "wait": 60000}),
            )
            .await;
        assert_eq!(finished["status"], "completed", "{finished}");
        assert_eq!(finished["stdout"], "waited for\n");
        assert_eq!(finished["exitCode"], 0);
        assert_eq!(finished["outcome"], "ok");
        assert!(finished["durationMs"].is_u64(), "{finished}");
        // Waiting on a finished run answers with the same record; `Wait` and `null` work too.
        for params in [
            json!({"executionId": id, "wait": 5000}),
            json!({"ExecutionId": id, "Wait": 0}),
            json!({"executionId": id, "wait": null}),
        ] {
            let again = client.ok("execution.status", params).await;
            assert_eq!(again, finished);
        }
    });
}

#[test]
fn execution_status_with_a_short_wait_reports_a_run_still_going() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let queued = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": "import time\ntime.sleep(2)\nprint('slept')", "timeout": 30}),
            )
            .await;
        let id = queued["executionId"].as_str().expect("executionId");
        let going = client
            .ok("execution.status", json!({"executionId": id, "wait": 100}))
            .await;
        let state = going["status"].as_str().expect("status");
        assert!(
            state == "queued" || state == "running",
            "a two-second run is not over after a 100 ms wait: {going}"
        );
        assert!(going["durationMs"].is_null(), "{going}");
        assert!(going["exitCode"].is_null(), "{going}");
        assert!(going.get("outcome").is_none(), "{going}");
        // Then wait for the end, as long as it takes.
        let mut finished = going;
        for _ in 0..10 {
            finished = client
                .ok(
                    "execution.status",
                    json!({"executionId": id, "wait": 60000}),
                )
                .await;
            if finished["status"] != "queued" && finished["status"] != "running" {
                break;
            }
        }
        assert_eq!(finished["status"], "completed", "{finished}");
        assert_eq!(finished["stdout"], "slept\n");
    });
}

#[test]
fn execution_run_with_wait_answers_with_the_finished_record() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let finished = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": "result = {'output': input_data['value'] * 2}", "input": {"value": 21}, "wait": 60000}),
            )
            .await;
        assert_eq!(finished["status"], "completed", "{finished}");
        assert_eq!(finished["output"], json!({"output": 42}));
        assert_eq!(finished["outcome"], "ok");
        let id = finished["executionId"].as_str().expect("executionId");
        let status = client
            .ok("execution.status", json!({"executionId": id}))
            .await;
        assert_eq!(status, finished);

        // Without `wait`, the original answer and nothing else.
        let queued = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": "print(1)"}),
            )
            .await;
        let keys: Vec<&String> = queued.as_object().expect("an object").keys().collect();
        assert_eq!(keys, ["executionId", "status"], "{queued}");
        assert_eq!(queued["status"], "queued");

        // A short wait on a long run: the record so far.
        let going = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": "import time\ntime.sleep(2)", "wait": 50}),
            )
            .await;
        let state = going["status"].as_str().expect("status");
        assert!(state == "queued" || state == "running", "{going}");
        let id = going["executionId"].as_str().expect("executionId");
        let done = client
            .ok(
                "execution.status",
                json!({"executionId": id, "wait": 60000}),
            )
            .await;
        assert_eq!(done["status"], "completed", "{done}");
    });
}

#[test]
fn a_bad_wait_is_refused_with_invalid_params() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let queued = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": "print(1)"}),
            )
            .await;
        let id = queued["executionId"].as_str().expect("executionId");
        for (wait, shown) in [
            (json!(-1), "-1"),
            (json!(60001), "60001"),
            (json!(1.5), "1.5"),
            (json!("1000"), "a string"),
            (json!(true), "a boolean"),
        ] {
            for (method, params) in [
                ("execution.status", json!({"executionId": id, "wait": wait})),
                (
                    "execution.run",
                    json!({"language": "python", "code": "print(1)", "wait": wait}),
                ),
            ] {
                let error = client.err(method, params).await;
                assert_eq!(error["code"], -32602, "{method} {wait}: {error}");
                assert_eq!(error["data"]["field"], "wait", "{error}");
                let message = error["message"].as_str().expect("message");
                assert!(
                    message.contains(method)
                        && message.contains("wait")
                        && message.contains("from 0 to 60000")
                        && message.contains(shown),
                    "{message}"
                );
            }
        }
        // An unknown execution is still "not found", with or without a wait.
        let error = client
            .err(
                "execution.status",
                json!({"executionId": "no-such-run", "wait": 100}),
            )
            .await;
        assert_eq!(error["code"], -32001);
    });
}

// ------------------------------------------------------------------------------------------
// REST, health, metrics.

#[test]
fn rest_executions_and_languages() {
    run(async {
        let addr = shared_server().await;
        let accepted = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"python","code":"print(6 * 7)"}"#),
        )
        .await;
        assert_eq!(accepted.status, 202, "{}", accepted.body);
        let accepted = accepted.json();
        assert_eq!(accepted["status"], "queued");
        let id = accepted["executionId"].as_str().expect("id").to_string();
        let mut record = Value::Null;
        for _ in 0..1200 {
            let response = http(addr, "GET", &format!("/api/execution/{id}"), None, None).await;
            assert_eq!(response.status, 200, "{}", response.body);
            record = response.json();
            if record["status"] == "completed" || record["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["stdout"], "42\n");

        let waited = http(
            addr,
            "POST",
            "/api/execution?wait=true",
            None,
            Some(r#"{"language":"python","code":"result = {'output': input_data['value'] * 2}","input":{"value":21}}"#),
        )
        .await;
        assert_eq!(waited.status, 200, "{}", waited.body);
        let waited = waited.json();
        assert_eq!(waited["status"], "completed", "{waited}");
        assert_eq!(waited["output"], json!({"output": 42}));
        assert_eq!(waited["outcome"], "ok");

        let failed = http(
            addr,
            "POST",
            "/api/execution?wait=true",
            None,
            Some(r#"{"language":"python","code":"import sys; sys.exit(3)"}"#),
        )
        .await
        .json();
        assert_eq!(failed["status"], "completed", "it ran: {failed}");
        assert_eq!(failed["exitCode"], 3);
        assert_eq!(failed["outcome"], "runtime_error");

        let body_wait = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"python","code":"print('body wait')","wait":60000}"#),
        )
        .await;
        assert_eq!(body_wait.status, 200, "{}", body_wait.body);
        assert_eq!(body_wait.json()["stdout"], "body wait\n");
        let bad_wait = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"python","code":"print(1)","wait":-5}"#),
        )
        .await;
        assert_eq!(bad_wait.status, 400);
        assert_eq!(bad_wait.json()["error"]["code"], -32602);

        let missing = http(addr, "GET", "/api/execution/no-such-run", None, None).await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.json()["error"]["code"], -32001);

        let garbage = http(addr, "POST", "/api/execution", None, Some("{nope")).await;
        assert_eq!(garbage.status, 400);
        assert_eq!(garbage.json()["error"]["code"], -32700);

        let no_code = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"python"}"#),
        )
        .await;
        assert_eq!(no_code.status, 400);
        assert_eq!(no_code.json()["error"]["code"], -32602);

        let unsupported = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"cobol-2077","code":"x"}"#),
        )
        .await;
        assert_eq!(unsupported.status, 400);
        assert_eq!(unsupported.json()["error"]["code"], -32003);

        let languages = http(addr, "GET", "/api/languages", None, None).await;
        assert_eq!(languages.status, 200);
        assert!(languages.json()["languages"]
            .as_array()
            .expect("languages")
            .iter()
            .any(|l| l["name"] == "javascript"));

        let python = http(addr, "GET", "/api/languages/py", None, None).await;
        assert_eq!(python.status, 200, "{}", python.body);
        assert_eq!(python.json()["name"], "python");

        let unknown = http(addr, "GET", "/api/languages/cobol-2077", None, None).await;
        assert_eq!(unknown.status, 404);
        let error = unknown.json();
        assert_eq!(error["error"]["code"], -32003);
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("Unsupported language"), "{message}");
        assert!(
            message.contains("python"),
            "lists the known languages: {message}"
        );

        let nowhere = http(addr, "GET", "/api/nowhere", None, None).await;
        assert_eq!(nowhere.status, 404);
        assert!(nowhere.json()["error"]["message"].is_string());
    });
}

#[test]
fn health_and_metrics() {
    run(async {
        let addr = shared_server().await;
        // Some traffic first, so that the request metrics exist.
        let mut client = Client::connect(addr).await;
        client.ok("language.list", json!({})).await;
        client.err("no.such.method", json!({})).await;

        let health = http(addr, "GET", "/health", None, None).await;
        assert_eq!(health.status, 200);
        let health = health.json();
        assert!(
            health["status"] == "ok" || health["status"] == "degraded",
            "{health}"
        );
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
        assert!(health["uptimeSeconds"].is_u64());
        assert!(health["sessions"]["open"].is_u64());
        assert_eq!(health["isolation"]["backend"], "native");

        assert_eq!(
            http(addr, "GET", "/health/live", None, None).await.status,
            200
        );
        let ready = http(addr, "GET", "/health/ready", None, None).await;
        assert_eq!(ready.status, 200, "{}", ready.body);

        let metrics = http(addr, "GET", "/metrics", None, None).await;
        assert_eq!(metrics.status, 200);
        let content_type = metrics
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        for name in [
            "codebeaker_rpc_requests_total{",
            "method=\"language.list\"",
            "code=\"-32601\"",
            "codebeaker_rpc_request_duration_seconds_bucket{",
            "codebeaker_http_requests_total{",
            "codebeaker_ws_connections",
            "codebeaker_sessions",
            "codebeaker_boxes_created_total",
        ] {
            assert!(
                metrics.body.contains(name),
                "{name} missing:\n{}",
                metrics.body
            );
        }
    });
}

// ------------------------------------------------------------------------------------------
// Bounds, auth, rate limits: servers of their own.

#[test]
fn requests_over_the_in_flight_bound_are_refused_at_once() {
    run(async {
        let server = start(ServerConfig {
            max_in_flight: 1,
            ..local_config()
        })
        .await;
        let mut client = Client::connect(server.local_addr()).await;
        let session = client.create_session("python").await;
        let slow = json!({"jsonrpc": "2.0", "id": 100, "method": "session.execute",
            "params": {"sessionId": session, "command": {"type": "shell", "command": "sleep", "args": ["1"]}}});
        let quick = json!({"jsonrpc": "2.0", "id": 101, "method": "language.list"});
        client.send_text(&format!("{slow}\n{quick}\n")).await;
        let first = client.recv().await;
        assert_eq!(first["id"], 101, "the refusal comes first: {first}");
        assert_eq!(first["error"]["code"], -32002);
        let second = client.recv().await;
        assert_eq!(second["id"], 100);
        assert_eq!(second["result"]["success"], true, "{second}");
        client.close_session(&session).await;
        server.shutdown().await.expect("shutdown");
    });
}

#[test]
fn auth_requires_a_token_and_callers_see_only_their_own_sessions() {
    run(async {
        let server = start(ServerConfig {
            auth: AuthConfig {
                tokens: vec![
                    TokenConfig {
                        token: "token-alice".into(),
                        caller: "alice".into(),
                    },
                    TokenConfig {
                        token: "token-bob".into(),
                        caller: "bob".into(),
                    },
                ],
            },
            ..local_config()
        })
        .await;
        let addr = server.local_addr();
        let url = format!("ws://{addr}/ws/jsonrpc");

        match Client::connect_to(&url, None).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
            }
            Err(other) => panic!("expected HTTP 401, got {other}"),
            Ok(_) => panic!("connected without a token"),
        }
        match Client::connect_to(&url, Some("wrong")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
            }
            Err(other) => panic!("expected HTTP 401, got {other}"),
            Ok(_) => panic!("connected with a wrong token"),
        }
        let rest = http(addr, "GET", "/api/languages", None, None).await;
        assert_eq!(rest.status, 401);
        assert_eq!(rest.json()["error"]["code"], -32004);
        assert!(rest.headers.contains_key("www-authenticate"));
        assert_eq!(http(addr, "GET", "/metrics", None, None).await.status, 401);
        assert_eq!(http(addr, "GET", "/health", None, None).await.status, 200);
        assert_eq!(
            http(addr, "GET", "/api/languages", Some("token-bob"), None)
                .await
                .status,
            200
        );

        let mut alice = Client::connect_to(&url, Some("token-alice"))
            .await
            .expect("alice connects");
        let session = alice.create_session("python").await;
        // Bob passes his token in the query string, as browsers must.
        let mut bob = Client::connect_to(&format!("{url}?token=token-bob"), None)
            .await
            .expect("bob connects");
        let error = bob
            .err(
                "session.execute",
                json!({"sessionId": session, "command": {"type": "read_file", "path": "x"}}),
            )
            .await;
        assert_eq!(error["code"], -32001);
        let error = bob
            .err("session.close", json!({"sessionId": session}))
            .await;
        assert_eq!(error["code"], -32001);
        let bobs = bob.ok("session.list", json!({})).await;
        assert!(!bobs["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|s| s["sessionId"] == json!(session)));
        let alices = alice.ok("session.list", json!({})).await;
        assert!(alices["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|s| s["sessionId"] == json!(session)));

        // One-shot runs are private too.
        let queued = alice
            .ok(
                "execution.run",
                json!({"language": "python", "code": "print(1)"}),
            )
            .await;
        let error = bob
            .err(
                "execution.status",
                json!({"executionId": queued["executionId"]}),
            )
            .await;
        assert_eq!(error["code"], -32001);

        alice.close_session(&session).await;
        server.shutdown().await.expect("shutdown");
    });
}

#[test]
fn rate_limits_answer_with_retry_after() {
    run(async {
        let server = start(ServerConfig {
            rate_limit: Some(RateLimitConfig {
                // Slow enough that no token comes back while the test runs.
                requests_per_second: 0.1,
                burst: 2,
            }),
            ..local_config()
        })
        .await;
        let addr = server.local_addr();
        let mut client = Client::connect(addr).await;
        client.ok("language.list", json!({})).await;
        client.ok("language.list", json!({})).await;
        let error = client.err("language.list", json!({})).await;
        assert_eq!(error["code"], -32005);
        assert!(
            error["data"]["retryAfterMs"]
                .as_u64()
                .is_some_and(|ms| ms > 0),
            "{error}"
        );

        let rest = http(addr, "GET", "/api/languages", None, None).await;
        assert_eq!(rest.status, 429);
        assert_eq!(rest.json()["error"]["code"], -32005);
        let retry_after: u64 = rest
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!(retry_after >= 1);
        // Health is never limited.
        assert_eq!(
            http(addr, "GET", "/health/live", None, None).await.status,
            200
        );
        server.shutdown().await.expect("shutdown");
    });
}

#[test]
fn shutdown_closes_connections_with_going_away() {
    run(async {
        let server = start(local_config()).await;
        let mut client = Client::connect(server.local_addr()).await;
        client.ok("language.list", json!({})).await;
        server.shutdown().await.expect("shutdown");
        let frame = tokio::time::timeout(FRAME_TIMEOUT, client.ws.next())
            .await
            .expect("a close in time");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => {
                assert_eq!(u16::from(close.code), 1001);
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    });
}

#[test]
fn requests_for_one_session_run_in_arrival_order() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let session = client.create_session("python").await;
        let frame: Vec<String> = (1..=6)
            .map(|i| {
                json!({"jsonrpc": "2.0", "id": 1000 + i, "method": "session.execute",
                    "params": {"sessionId": session, "command": {"type": "write_file", "path": "order.txt", "content": i.to_string(), "mode": "Append"}}})
                .to_string()
            })
            .collect();
        client.send_text(&frame.join("\n")).await;
        for _ in 0..6 {
            let response = client.recv().await;
            assert_eq!(response["result"]["success"], true, "{response}");
        }
        let read = client
            .execute(&session, json!({"type": "read_file", "path": "order.txt"}))
            .await;
        assert_eq!(read["result"]["content"], "123456");
        client.close_session(&session).await;
    });
}

#[test]
fn oversized_messages_and_idle_connections_are_closed() {
    run(async {
        let server = start(ServerConfig {
            max_message_bytes: 1024,
            idle_timeout: Duration::from_secs(2),
            ..local_config()
        })
        .await;
        let mut client = Client::connect(server.local_addr()).await;
        let padding = "x".repeat(4096);
        client
            .send_text(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"language.list","params":{{"pad":"{padding}"}}}}"#
            ))
            .await;
        match tokio::time::timeout(FRAME_TIMEOUT, client.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(close))))) => assert_eq!(u16::from(close.code), 1009),
            other => panic!("expected close 1009, got {other:?}"),
        }

        let body = format!(r##"{{"language":"python","code":"# {padding}"}}"##);
        let too_big = http(
            server.local_addr(),
            "POST",
            "/api/execution",
            None,
            Some(&body),
        )
        .await;
        assert_eq!(too_big.status, 413, "{}", too_big.body);
        assert!(too_big.json()["error"]["message"].is_string());

        let mut idle = Client::connect(server.local_addr()).await;
        idle.ok("language.list", json!({})).await;
        match tokio::time::timeout(FRAME_TIMEOUT, idle.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(close))))) => {
                assert_eq!(u16::from(close.code), 1000);
                assert_eq!(close.reason.as_str(), "idle timeout");
            }
            other => panic!("expected an idle close, got {other:?}"),
        }
        server.shutdown().await.expect("shutdown");
    });
}

// ------------------------------------------------------------------------------------------
// `codebeaker serve` configuration: defaults < file < environment < flags.

fn print_config(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = std::process::Command::new(common::BIN);
    command.arg("serve").arg("--print-config").args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("CODEBEAKER_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("run codebeaker serve");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn serve_config_layers_file_environment_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("codebeaker.toml");
    std::fs::write(
        &file,
        r#"
[server]
listen = "127.0.0.1:6001"
max_in_flight = 8

[sessions]
max_per_caller = 3

[auth]
tokens = [{ token = "s3cret", caller = "alice" }]
"#,
    )
    .expect("write config");
    let file = file.to_str().expect("utf-8 path");

    let (ok, stdout, stderr) = print_config(
        &["--config", file],
        &[
            ("CODEBEAKER_SERVER__MAX_IN_FLIGHT", "9"),
            ("CODEBEAKER_RATE_LIMIT__REQUESTS_PER_SECOND", "5"),
        ],
    );
    assert!(ok, "{stderr}");
    let config: toml::Value = toml::from_str(&stdout).expect("the printed config is TOML");
    assert_eq!(config["server"]["listen"].as_str(), Some("127.0.0.1:6001"));
    assert_eq!(
        config["server"]["max_in_flight"].as_integer(),
        Some(9),
        "env beats file"
    );
    assert_eq!(config["sessions"]["max_per_caller"].as_integer(), Some(3));
    assert_eq!(
        config["rate_limit"]["requests_per_second"].as_float(),
        Some(5.0)
    );
    assert_eq!(
        config["server"]["idle_timeout_secs"].as_integer(),
        Some(600),
        "default"
    );
    assert!(!stdout.contains("s3cret"), "secrets are not printed");

    let (ok, stdout, stderr) = print_config(
        &["--config", file, "--listen", "127.0.0.1:6002"],
        &[("CODEBEAKER_SERVER__LISTEN", "127.0.0.1:6003")],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("listen = \"127.0.0.1:6002\""),
        "flags beat all: {stdout}"
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 2\n",
    )
    .expect("write");
    let bad = dir.path().join("bad.toml");
    let (ok, _, stderr) = print_config(&["--config", bad.to_str().expect("path")], &[]);
    assert!(!ok);
    assert!(stderr.contains("lisen"), "names the unknown key: {stderr}");
    assert!(stderr.contains("bad.toml"), "names the file: {stderr}");

    let (ok, _, stderr) = print_config(&[], &[("CODEBEAKER_LIMITS__MEMORY_MB", "lots")]);
    assert!(!ok);
    assert!(
        stderr.contains("limits.memory_mb"),
        "names the key: {stderr}"
    );

    let (ok, _, stderr) = print_config(&[], &[("CODEBEAKER_LIMITS__MEMORY_MB", "4")]);
    assert!(!ok);
    assert!(
        stderr.contains("limits.memory_mb") && stderr.contains("at least 16"),
        "says which key and why: {stderr}"
    );

    let (ok, _, stderr) = print_config(&["--config", "/nonexistent/codebeaker.toml"], &[]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/codebeaker.toml"), "{stderr}");
}

// ------------------------------------------------------------------------------------------
// Metrics that move, the audit log, per-caller quotas.

/// The value of `name{labels}` in a Prometheus text body: the sum over every series of that
/// name whose labels include all of `labels`; `None` when there is none.
fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let pairs: Vec<&str> = series_labels.split(',').collect();
        if labels
            .iter()
            .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
        {
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

async fn scrape(addr: SocketAddr, bearer: Option<&str>) -> String {
    let response = http(addr, "GET", "/metrics", bearer, None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// Scrapes until `name{labels}` reaches `at_least` (things counted in the background, such as
/// one-shot runs, lag behind their answers), and returns the last body.
async fn scrape_until(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) -> String {
    let mut body = String::new();
    for _ in 0..200 {
        body = scrape(addr, None).await;
        if metric(&body, name, labels).is_some_and(|v| v >= at_least) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name}{labels:?} never reached {at_least}:\n{body}");
}

#[test]
fn metrics_count_executions_sessions_commands_and_errors() {
    run(async {
        // A server of its own: its recorder counts only this test's traffic.
        let server = start(local_config()).await;
        let addr = server.local_addr();
        let before = scrape(addr, None).await;
        for (name, labels) in [
            ("codebeaker_sessions_created_total", vec![]),
            (
                "codebeaker_sessions_closed_total",
                vec![("reason", "client")],
            ),
            (
                "codebeaker_sessions_closed_total",
                vec![("reason", "reaped")],
            ),
        ] {
            assert_eq!(
                metric(&before, name, &labels),
                Some(0.0),
                "{name} is there from the first scrape:\n{before}"
            );
        }

        let mut client = Client::connect(addr).await;
        let session = client.create_session("python").await;
        let ok = client
            .execute(
                &session,
                json!({"type": "execute", "code": "result = {'output': input_data['value'] * 2}", "input": {"value": 21}}),
            )
            .await;
        assert_eq!(ok["success"], true, "{ok}");
        let failed = client
            .execute(
                &session,
                json!({"type": "execute", "language": "py", "code": "raise SystemExit(3)"}),
            )
            .await;
        assert_eq!(failed["result"]["status"], "runtime_error", "{failed}");
        client
            .execute(
                &session,
                json!({"type": "write_file", "path": "a.txt", "content": "x"}),
            )
            .await;
        client
            .execute(&session, json!({"type": "shell", "command": "true"}))
            .await;
        client.close_session(&session).await;
        let error = client
            .err("session.close", json!({"sessionId": session}))
            .await;
        assert_eq!(error["code"], -32001);
        client.err("no.such.method", json!({})).await;

        let queued = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": "print(42)"}),
            )
            .await;
        let id = queued["executionId"].clone();
        loop {
            let status = client
                .ok("execution.status", json!({"executionId": id}))
                .await;
            if status["status"] == "completed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let missing = http(addr, "GET", "/api/execution/no-such-run", None, None).await;
        assert_eq!(missing.status, 404);

        let body = scrape_until(
            addr,
            "codebeaker_executions_finished_total",
            &[("kind", "one_shot")],
            1.0,
        )
        .await;
        let value = |name: &str, labels: &[(&str, &str)]| metric(&body, name, labels);
        let finished = "codebeaker_executions_finished_total";
        let python_ok = [("language", "python"), ("status", "ok")];
        assert_eq!(
            value(finished, &[python_ok[0], python_ok[1], ("kind", "session")]),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value(
                finished,
                &[
                    ("language", "python"),
                    ("status", "runtime_error"),
                    ("kind", "session")
                ]
            ),
            Some(1.0),
            "an alias counts under the language's name:\n{body}"
        );
        assert_eq!(
            value(
                finished,
                &[python_ok[0], python_ok[1], ("kind", "one_shot")]
            ),
            Some(1.0),
            "{body}"
        );
        let durations = "codebeaker_execution_duration_seconds";
        assert_eq!(
            value(&format!("{durations}_count"), &[("language", "python")]),
            Some(3.0),
            "{body}"
        );
        for le in ["0.001", "60", "+Inf"] {
            assert!(
                value(
                    &format!("{durations}_bucket"),
                    &[("language", "python"), ("le", le)]
                )
                .is_some(),
                "bucket {le}:\n{body}"
            );
        }
        assert_eq!(
            value("codebeaker_sessions_created_total", &[]),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value("codebeaker_sessions_closed_total", &[("reason", "client")]),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value("codebeaker_session_create_duration_seconds_count", &[]),
            Some(1.0),
            "{body}"
        );
        assert!(
            value("codebeaker_session_create_duration_seconds_sum", &[]).is_some_and(|s| s > 0.0),
            "{body}"
        );
        for (kind, n) in [("execute", 2.0), ("write_file", 1.0), ("shell", 1.0)] {
            assert_eq!(
                value("codebeaker_commands_total", &[("type", kind)]),
                Some(n),
                "{kind}:\n{body}"
            );
        }
        assert_eq!(
            value("codebeaker_commands_total", &[("type", "read_file")]),
            None
        );
        assert_eq!(
            value("codebeaker_errors_total", &[("code", "-32601")]),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value("codebeaker_errors_total", &[("code", "-32001")]),
            Some(2.0),
            "one JSON-RPC, one REST:\n{body}"
        );
        assert!(value("codebeaker_sessions", &[]).is_some(), "{body}");
        server.shutdown().await.expect("shutdown");
    });
}

#[test]
fn a_callers_own_session_quota_and_rate_limit_leave_other_callers_alone() {
    run(async {
        let mut config = ServerConfig {
            auth: AuthConfig {
                tokens: vec![
                    TokenConfig {
                        token: "token-alice".into(),
                        caller: "quota-alice".into(),
                    },
                    TokenConfig {
                        token: "token-bob".into(),
                        caller: "quota-bob".into(),
                    },
                    TokenConfig {
                        token: "token-carol".into(),
                        caller: "quota-carol".into(),
                    },
                ],
            },
            ..local_config()
        };
        config.caller_quotas.insert(
            "quota-alice".into(),
            CallerQuota {
                max_sessions: Some(1),
                rate_limit: None,
            },
        );
        config.caller_quotas.insert(
            "quota-carol".into(),
            CallerQuota {
                max_sessions: None,
                rate_limit: Some(RateLimitConfig {
                    requests_per_second: 0.1,
                    burst: 2,
                }),
            },
        );
        let server = start(config).await;
        let url = format!("ws://{}/ws/jsonrpc", server.local_addr());
        let mut alice = Client::connect_to(&url, Some("token-alice"))
            .await
            .expect("alice connects");
        let mut bob = Client::connect_to(&url, Some("token-bob"))
            .await
            .expect("bob connects");

        let first = alice.create_session("python").await;
        let error = alice
            .err("session.create", json!({"language": "python"}))
            .await;
        assert_eq!(error["code"], -32002, "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("quota-alice")
                && message.contains("at most 1")
                && message.contains("max_sessions"),
            "says whose quota and which: {message}"
        );
        // Two creations at once cannot both slip under the quota.
        alice.close_session(&first).await;
        alice
            .send_text(
                "{\"jsonrpc\":\"2.0\",\"id\":900,\"method\":\"session.create\",\"params\":{\"language\":\"python\"}}\n{\"jsonrpc\":\"2.0\",\"id\":901,\"method\":\"session.create\",\"params\":{\"language\":\"python\"}}\n",
            )
            .await;
        let (a, b) = (alice.recv().await, alice.recv().await);
        let created: Vec<&Value> = [&a, &b]
            .into_iter()
            .filter(|r| r.get("result").is_some())
            .collect();
        let refused: Vec<&Value> = [&a, &b]
            .into_iter()
            .filter(|r| r["error"]["code"] == -32002)
            .collect();
        assert_eq!((created.len(), refused.len()), (1, 1), "{a}\n{b}");
        let kept = created[0]["result"]["sessionId"]
            .as_str()
            .expect("id")
            .to_string();

        // Bob has no quota of his own: the engine's per-caller bound applies.
        let bobs = [
            bob.create_session("python").await,
            bob.create_session("python").await,
        ];

        // Carol has a rate of her own; the others have none.
        let mut carol = Client::connect_to(&url, Some("token-carol"))
            .await
            .expect("carol connects");
        carol.ok("language.list", json!({})).await;
        carol.ok("language.list", json!({})).await;
        let error = carol.err("language.list", json!({})).await;
        assert_eq!(error["code"], -32005, "{error}");
        for _ in 0..5 {
            bob.ok("language.list", json!({})).await;
        }

        alice.close_session(&kept).await;
        for session in &bobs {
            bob.close_session(session).await;
        }
        server.shutdown().await.expect("shutdown");
    });
}

#[test]
fn the_seeds_dotnet_client_flow_step_by_step() {
    // The frames as the seed's CodeBeakerClient sends them: one message per text frame, ended
    // by `\n`, integer ids, camelCase params, `commandName` for the shell command.
    const WRAPPER: &str = "import json\n\nwith open('/workspace/input.json', 'r') as f:\n    input_data = json.load(f)\n\n# User code\nresult = {'output': input_data['value'] * 2}\n\nwith open('/workspace/output.json', 'w') as f:\n    json.dump(result, f)\n";
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let mut next_id = 0u64;
        let mut call = async |client: &mut Client, method: &str, params: Value| -> Value {
            next_id += 1;
            let frame =
                json!({"jsonrpc": "2.0", "id": next_id, "method": method, "params": params});
            client.send_text(&format!("{frame}\n")).await;
            let response = client.recv().await;
            assert_eq!(response["jsonrpc"], "2.0", "{response}");
            assert_eq!(
                response["id"],
                json!(next_id),
                "the integer id is echoed: {response}"
            );
            assert!(response["id"].is_u64(), "{response}");
            assert!(
                response.get("result").is_some() != response.get("error").is_some(),
                "exactly one of result and error: {response}"
            );
            assert!(
                response.get("error").is_none(),
                "{method} failed: {response}"
            );
            response["result"].clone()
        };
        let created = call(&mut client, "session.create", json!({"language": "python"})).await;
        let session = created["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        assert_eq!(created["state"], "Active");

        let execute = |command: Value| json!({"sessionId": session, "command": command});
        let input = call(
            &mut client,
            "session.execute",
            execute(json!({"type": "write_file", "path": "/workspace/input.json", "content": "{\"value\": 21}", "mode": "Create"})),
        )
        .await;
        assert_eq!(input["success"], true, "{input}");
        assert_eq!(input["error"], Value::Null);
        let program = call(
            &mut client,
            "session.execute",
            execute(json!({"type": "write_file", "path": "/workspace/program.py", "content": WRAPPER, "mode": "Create"})),
        )
        .await;
        assert_eq!(program["success"], true, "{program}");
        let ran = call(
            &mut client,
            "session.execute",
            execute(json!({"type": "shell", "commandName": "python3", "args": ["program.py"], "workingDirectory": "/workspace"})),
        )
        .await;
        assert_eq!(ran["success"], true, "{ran}");
        assert_eq!(ran["result"]["exitCode"], 0, "{ran}");
        let output = call(
            &mut client,
            "session.execute",
            execute(json!({"type": "read_file", "path": "/workspace/output.json"})),
        )
        .await;
        assert_eq!(output["success"], true, "{output}");
        let content = output["result"]["content"].as_str().expect("text content");
        let parsed: Value = serde_json::from_str(content).expect("output.json is JSON");
        assert_eq!(parsed, json!({"output": 42}));

        let closed = call(&mut client, "session.close", json!({"sessionId": session})).await;
        assert_eq!(closed["closed"], true);
        assert_eq!(closed["sessionId"], json!(session));
    });
}

#[test]
fn a_session_past_its_maximum_lifetime_is_closed_and_its_box_freed() {
    run(async {
        let config = EngineConfig {
            sessions: SessionConfig {
                max_lifetime: Duration::from_secs(1),
                reap_interval: Duration::from_millis(100),
                ..SessionConfig::default()
            },
            ..common::engine_config(0)
        };
        let engine = tokio::task::spawn_blocking(move || Engine::new(config))
            .await
            .expect("join")
            .expect("engine");
        let engine = Arc::new(engine);
        let reaper = engine.spawn_reaper();
        let server = Server::bind(local_config(), engine.clone())
            .await
            .expect("bind")
            .spawn();
        let addr = server.local_addr();
        let mut client = Client::connect(addr).await;
        let created = client
            .ok("session.create", json!({"language": "python"}))
            .await;
        let session = created["sessionId"].as_str().expect("id").to_string();
        let container = created["containerId"]
            .as_str()
            .expect("containerId")
            .to_string();
        assert!(engine
            .sandbox()
            .own_boxes()
            .contains(&host::box_name(std::process::id(), &container)));
        let wrote = client
            .execute(
                &session,
                json!({"type": "write_file", "path": "a", "content": "x"}),
            )
            .await;
        assert_eq!(wrote["success"], true);

        let started = std::time::Instant::now();
        let box_name = host::box_name(std::process::id(), &container);
        while engine.sandbox().own_boxes().contains(&box_name) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the box {container} outlived its session's lifetime"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let error = client
            .err(
                "session.execute",
                json!({"sessionId": session, "command": {"type": "read_file", "path": "a"}}),
            )
            .await;
        assert_eq!(error["code"], -32001, "{error}");
        let listed = client.ok("session.list", json!({})).await;
        assert_eq!(listed["sessions"], json!([]));
        // The server noticed: counted as reaped, not as closed by the client.
        let body = scrape_until(
            addr,
            "codebeaker_sessions_closed_total",
            &[("reason", "reaped")],
            1.0,
        )
        .await;
        assert_eq!(
            metric(
                &body,
                "codebeaker_sessions_closed_total",
                &[("reason", "client")]
            ),
            Some(0.0)
        );
        server.shutdown().await.expect("shutdown");
        reaper.abort();
        engine.shutdown().await;
    });
}

/// Everything the tracing events of the audit log write, as JSON lines.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn events(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

#[test]
fn the_audit_log_names_the_caller_for_sessions_commands_and_refusals() {
    // The events are captured by a subscriber of this thread (the global one may be taken), so
    // this test runs its own server on a current-thread runtime: every task runs here.
    let _shared = common::shared();
    let engine = engine();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "{}=info",
            codebeaker_server::AUDIT_TARGET
        )))
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let session = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let mut config = ServerConfig {
                auth: AuthConfig {
                    tokens: vec![
                        TokenConfig {
                            token: "token-auditor".into(),
                            caller: "auditor".into(),
                        },
                        TokenConfig {
                            token: "token-throttled".into(),
                            caller: "throttled".into(),
                        },
                    ],
                },
                ..local_config()
            };
            config.caller_quotas.insert(
                "auditor".into(),
                CallerQuota {
                    max_sessions: Some(1),
                    rate_limit: None,
                },
            );
            config.caller_quotas.insert(
                "throttled".into(),
                CallerQuota {
                    max_sessions: None,
                    rate_limit: Some(RateLimitConfig {
                        requests_per_second: 0.1,
                        burst: 1,
                    }),
                },
            );
            let server = Server::bind(config, Arc::clone(engine)).await.expect("bind").spawn();
            let url = format!("ws://{}/ws/jsonrpc", server.local_addr());
            assert!(Client::connect_to(&url, Some("stolen")).await.is_err());

            let mut auditor = Client::connect_to(&url, Some("token-auditor"))
                .await
                .expect("connect");
            let session = auditor.create_session("python").await;
            auditor
                .execute(
                    &session,
                    json!({"type": "write_file", "path": "a.txt", "content": "secret content"}),
                )
                .await;
            auditor
                .execute(&session, json!({"type": "execute", "code": "print(1)"}))
                .await;
            let error = auditor
                .err("session.create", json!({"language": "python"}))
                .await;
            assert_eq!(error["code"], -32002);
            auditor.close_session(&session).await;
            let error = auditor
                .err(
                    "session.execute",
                    json!({"sessionId": session, "command": {"type": "read_file", "path": "a.txt"}}),
                )
                .await;
            assert_eq!(error["code"], -32001);

            let mut throttled = Client::connect_to(&url, Some("token-throttled"))
                .await
                .expect("connect");
            throttled.ok("language.list", json!({})).await;
            assert_eq!(throttled.err("language.list", json!({})).await["code"], -32005);
            server.shutdown().await.expect("shutdown");
            session
        })
    });
    drop(runtime);

    let events = captured.events();
    assert!(
        !events.is_empty(),
        "no audit event was captured: the events did not reach this thread's subscriber"
    );
    for event in &events {
        assert_eq!(event["target"], codebeaker_server::AUDIT_TARGET, "{event}");
        assert_eq!(event["level"], "INFO", "{event}");
        assert!(
            event["caller"].is_string(),
            "every event names the caller: {event}"
        );
        assert!(event["event"].is_string(), "{event}");
    }
    let find = |what: &str, matches: &dyn Fn(&Value) -> bool| -> Value {
        events
            .iter()
            .find(|e| e["event"] == what && matches(e))
            .cloned()
            .unwrap_or_else(|| panic!("no {what} event like that among {events:#?}"))
    };
    let mine = |e: &Value| e["caller"] == "auditor" && e["session_id"] == json!(session);
    let created = find("session.create", &mine);
    assert_eq!(created["success"], true);
    assert_eq!(created["language"], "python");
    assert!(created["container_id"].is_string() && created["duration_ms"].is_u64());
    let wrote = find("command", &|e| mine(e) && e["command"] == "write_file");
    assert_eq!(wrote["success"], true);
    assert!(wrote["duration_ms"].is_u64());
    let ran = find("command", &|e| mine(e) && e["command"] == "execute");
    assert_eq!(
        (ran["success"].clone(), ran["status"].clone()),
        (json!(true), json!("ok"))
    );
    let closed = find("session.close", &mine);
    assert_eq!(closed["reason"], "client");
    let not_found = find("refused", &mine);
    assert_eq!(not_found["reason"], "session_not_found");
    assert_eq!(not_found["code"], -32001);
    assert_eq!(not_found["command"], "read_file");
    let quota = find("refused", &|e| e["reason"] == "limit_reached");
    assert_eq!(quota["caller"], "auditor");
    assert_eq!(quota["method"], "session.create");
    let throttled = find("refused", &|e| e["reason"] == "rate_limited");
    assert_eq!(throttled["caller"], "throttled");
    let stranger = find("refused", &|e| e["reason"] == "unauthorized");
    assert_eq!(stranger["caller"], "-");
    assert!(
        stranger["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{stranger}"
    );
    let text = serde_json::to_string(&events).expect("json");
    for secret in ["secret content", "token-auditor", "stolen"] {
        assert!(!text.contains(secret), "{secret} reached the audit log");
    }
}

// ------------------------------------------------------------------------------------------
// `codebeaker serve` stopped with SIGTERM.

#[test]
fn sigterm_lets_a_running_command_finish_then_closes_every_box() {
    // The server it starts removes the boxes of dead processes.
    let _shared = common::shared();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = std::process::Command::new(common::BIN);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--log",
            "warn,codebeaker::audit=info",
            "--log-format",
            "json",
        ]);
    for (key, _) in std::env::vars() {
        if key.starts_with("CODEBEAKER_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .env("CODEBEAKER_SANDBOX__ALLOW_DEGRADED", "false")
        .env("CODEBEAKER_SANDBOX__BOX_POOL_SIZE", "1")
        .env("CODEBEAKER_SERVER__SHUTDOWN_GRACE_SECS", "10")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start codebeaker serve");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());

    runtime().block_on(async {
        let started = std::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("codebeaker serve exited with {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "codebeaker serve did not listen within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut client = Client::connect(SocketAddr::from(([127, 0, 0, 1], port))).await;
        let created = client
            .ok("session.create", json!({"language": "python"}))
            .await;
        let session = created["sessionId"].as_str().expect("id").to_string();
        let container = created["containerId"].as_str().expect("containerId").to_string();
        assert!(
            boxes_of(pid).contains(&host::box_name(pid, &container)),
            "the session's box has a cgroup: {:?}",
            boxes_of(pid)
        );
        let slow = json!({"jsonrpc": "2.0", "id": 77, "method": "session.execute",
            "params": {"sessionId": session, "command": {"type": "shell", "command": "sleep", "args": ["1"]}}});
        client.send_text(&slow.to_string()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // SAFETY: signalling the child this test started; no memory is involved.
        let sent = unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        assert_eq!(sent, 0, "{}", std::io::Error::last_os_error());

        let response = client.response(&json!(77)).await;
        assert_eq!(response["result"]["success"], true, "the running command finished: {response}");
        assert!(
            response["result"]["durationMs"].as_u64().is_some_and(|ms| ms >= 900),
            "{response}"
        );
        match tokio::time::timeout(FRAME_TIMEOUT, client.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(close))))) => assert_eq!(u16::from(close.code), 1001),
            Ok(None | Some(Ok(Message::Close(None)))) => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
    });

    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("codebeaker serve did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = log.join().unwrap_or_default();
    assert!(
        status.success(),
        "codebeaker serve exited with {status}:\n{log}"
    );
    assert_eq!(
        boxes_of(pid),
        std::collections::BTreeSet::<String>::new(),
        "every box is gone:\n{log}"
    );
    // The audit log went to stderr as JSON lines, as configured.
    let audit: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["target"] == "codebeaker::audit")
        .collect();
    assert!(
        audit
            .iter()
            .any(|e| e["fields"]["event"] == "command" && e["fields"]["caller"] == "anonymous"),
        "{log}"
    );
}
