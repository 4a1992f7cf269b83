//! Sessions and commands over the WebSocket: the original .NET client's session flow, command failures as
//! results, streaming notifications, and sessions outliving their connection.

use super::*;

#[test]
fn the_original_clients_session_flow_writes_runs_and_closes() {
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

/// A session's programs run as if they lived in the workspace: they import the files written
/// there (Python, Node, Ruby; script and snippet mode, warm and cold alike), and nothing of the
/// directory CodeBeaker keeps their code in shows in their argv, file names or tracebacks.
#[test]
fn programs_import_workspace_files_and_see_no_internal_path() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let cases = [
            (
                "python",
                "helper.py",
                "def double(x):\n    return 2 * x\n",
                "import sys, helper\nprint(helper.double(21), sys.argv[0], __file__, sys.path[0])\n",
                "42 main.py /workspace/main.py /workspace\n",
                "def f():\n    raise KeyError('k')\nf()\n",
            ),
            (
                "javascript",
                "helper.js",
                "exports.double = (x) => 2 * x;\n",
                "const h = require('./helper.js');\nconsole.log(h.double(21), process.argv[1], __filename, __dirname, require.main === module);\n",
                "42 /workspace/main.js /workspace/main.js /workspace true\n",
                "function f() { throw new Error('k'); }\nf();\n",
            ),
            (
                "ruby",
                "helper.rb",
                "def double(x) = 2 * x\n",
                "require_relative 'helper'\nputs [double(21), $0, __FILE__, __dir__].join(' ')\n",
                "42 main.rb /workspace/main.rb /workspace\n",
                "def f\n  raise 'k'\nend\nf\n",
            ),
        ];
        for (language, helper, helper_code, program, expected, failing) in cases {
            let created = client
                .ok("session.create", json!({"language": language}))
                .await;
            let session = created["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string();
            let written = client
                .execute(
                    &session,
                    json!({"type": "write_file", "path": helper, "content": helper_code}),
                )
                .await;
            assert_eq!(written["success"], true, "{written}");
            // Twice: the first run may start cold while the box's warm worker starts.
            for round in 0..2 {
                let ran = client
                    .execute(&session, json!({"type": "execute", "code": program}))
                    .await;
                assert_eq!(ran["success"], true, "{language} round {round}: {ran}");
                assert_eq!(
                    ran["result"]["stdout"], expected,
                    "{language} round {round}"
                );
            }
            let failed = client
                .execute(&session, json!({"type": "execute", "code": failing}))
                .await;
            let stderr = failed["result"]["stderr"].as_str().unwrap_or_default();
            assert_eq!(
                failed["result"]["status"], "runtime_error",
                "{language}: {failed}"
            );
            assert!(
                stderr.contains(&format!("/workspace/main.{}", &helper[helper.len() - 2..])),
                "{language}: the traceback names the program in the workspace: {stderr}"
            );
            assert!(
                !failed.to_string().contains(".codebeaker")
                    && !failed.to_string().contains("program."),
                "{language}: no internal path or launcher name shows: {failed}"
            );
            client
                .ok("session.close", json!({"sessionId": session}))
                .await;
        }
        // Snippets import from the workspace too.
        let created = client
            .ok("session.create", json!({"language": "python"}))
            .await;
        let session = created["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        client
            .execute(
                &session,
                json!({"type": "write_file", "path": "helper.py", "content": "def double(x):\n    return 2 * x\n"}),
            )
            .await;
        let snippet = client
            .execute(
                &session,
                json!({"type": "execute", "code": "import helper\nresult = helper.double(input_data)", "input": 21}),
            )
            .await;
        assert_eq!(snippet["result"]["output"], 42, "{snippet}");
        client
            .ok("session.close", json!({"sessionId": session}))
            .await;
    });
}

/// A program that does not parse is a compile error, not a runtime error, in the interpreted
/// languages that can tell, and its message points at the user's line.
#[test]
fn syntax_errors_are_compile_errors() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        for (language, code, says) in [
            (
                "python",
                "print('ok')\nx = (\n",
                "/workspace/main.py\", line 2",
            ),
            (
                "javascript",
                "console.log('ok');\nlet x = ;\n",
                "/workspace/main.js:2",
            ),
            ("ruby", "puts 'ok'\ndef f(\n", "/workspace/main.rb:"),
        ] {
            let created = client
                .ok("session.create", json!({"language": language}))
                .await;
            let session = created["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string();
            let ran = client
                .execute(&session, json!({"type": "execute", "code": code}))
                .await;
            assert_eq!(
                ran["result"]["status"], "compile_error",
                "{language}: {ran}"
            );
            assert_eq!(
                ran["result"]["stdout"], "",
                "{language}: nothing of the program ran"
            );
            let error = ran["error"].as_str().unwrap_or_default();
            assert!(error.contains(says), "{language}: {error}");
            if language == "python" {
                // A program that raises SyntaxError itself while it runs is a runtime error.
                let ran = client
                    .execute(
                        &session,
                        json!({"type": "execute", "code": "raise SyntaxError('mine')"}),
                    )
                    .await;
                assert_eq!(ran["result"]["status"], "runtime_error", "{ran}");
            }
            client
                .ok("session.close", json!({"sessionId": session}))
                .await;
        }
    });
}
