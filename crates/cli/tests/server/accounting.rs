//! What the server counts and records: metrics that move with traffic, per-caller quotas, the
//! original .NET client's flow, sessions past their lifetime, and the audit log.

use super::*;
use crate::common::http::Captured;

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
fn the_original_dotnet_client_flow_step_by_step() {
    // The frames as the original .NET CodeBeakerClient sends them: one message per text frame, ended
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
            sessions: SessionLimits {
                max_lifetime: Duration::from_secs(1),
                reap_interval: Duration::from_millis(100),
                ..SessionLimits::default()
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

#[test]
fn the_audit_log_names_the_caller_for_sessions_commands_and_refusals() {
    // The events are captured by a subscriber of this thread (the global one may be taken), so
    // this test runs its own server on a current-thread runtime: every task runs here.
    // It runs alone: tracing caches each event site's interest across threads, and other tests
    // hitting the same sites while this thread's subscriber comes and goes could leave an event
    // cached as wanted by no one, and dropped here.
    let _alone = common::exclusive();
    let engine = engine();
    let captured = Captured::default();
    let subscriber = captured.audit_subscriber();
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
