//! One-shot executions: `execution.run`, then `execution.status`, with and without a wait.

use super::*;

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
        // A limit out of range names its field and the valid range.
        for (params, field, range) in [
            (json!({"timeout": 100000}), "timeout", "between 1 and"),
            (json!({"memoryLimit": 1}), "memoryLimit", "between 16 and"),
        ] {
            let mut request = json!({"language": "python", "code": "print(1)"});
            request
                .as_object_mut()
                .expect("object")
                .extend(params.as_object().expect("object").clone());
            let error = client.err("execution.run", request).await;
            assert_eq!(error["code"], -32602, "{error}");
            assert_eq!(error["data"]["field"], field, "{error}");
            let message = error["message"].as_str().unwrap_or_default();
            assert!(message.contains(range), "{error}");
        }
        let session = client.create_session("python").await;
        let error = client
            .err(
                "session.execute",
                json!({"sessionId": session, "command": {"type": "execute", "code": "1", "timeoutMs": 0}}),
            )
            .await;
        assert_eq!(error["data"]["field"], "timeoutMs", "{error}");
        client.close_session(&session).await;
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
        assert_eq!(finished["result"]["status"], "ok");
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
        assert!(going.get("result").is_none(), "{going}");
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
        assert_eq!(finished["result"]["output"], json!({"output": 42}));
        assert_eq!(finished["result"]["status"], "ok");
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

/// A one-shot's `result`, a session `execute`'s result and `codebeaker run --json` are one type:
/// the same fields with the same names and, for the same program, the same values.
#[test]
fn one_shots_sessions_and_the_cli_answer_with_one_run_result() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)";
        let one_shot = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": code, "wait": 60000}),
            )
            .await;
        assert_eq!(one_shot["status"], "completed", "{one_shot}");
        let one_shot = one_shot["result"].clone();
        let session = client.create_session("python").await;
        let executed = client
            .execute(&session, json!({"type": "execute", "code": code}))
            .await;
        let executed = executed["result"].clone();
        client.close_session(&session).await;
        let cli = std::process::Command::new(crate::common::BIN)
            .args(["run", "--lang", "python", "--json", "-c", code])
            .output()
            .unwrap();
        let cli: Value = serde_json::from_slice(&cli.stdout).expect("run --json prints JSON");
        let keys = |v: &Value| -> Vec<String> {
            let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
            keys.retain(|k| k != "language" && k != "error");
            keys.sort();
            keys
        };
        assert_eq!(keys(&one_shot), keys(&executed), "{one_shot}\n{executed}");
        assert_eq!(keys(&cli), keys(&executed), "{cli}\n{executed}");
        for field in [
            "stdout",
            "stderr",
            "exitCode",
            "signal",
            "status",
            "timedOut",
            "oomKilled",
            "truncated",
        ] {
            assert_eq!(
                one_shot[field], executed[field],
                "{field}: {one_shot}\n{executed}"
            );
            assert_eq!(cli[field], executed[field], "{field}: {cli}\n{executed}");
        }
        assert_eq!(executed["status"], "runtime_error");
        assert_eq!(executed["exitCode"], 3);
        for result in [&one_shot, &executed, &cli] {
            assert!(result["cpuTimeMs"].is_u64(), "{result}");
            assert!(result["durationMs"].is_u64(), "{result}");
        }

        // A limit in milliseconds, as `execute` takes it, and the typed timeout in the result.
        let timed_out = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": "while True: pass", "timeoutMs": 500, "wait": 60000}),
            )
            .await;
        assert_eq!(timed_out["timeout"], true, "{timed_out}");
        assert_eq!(timed_out["result"]["status"], "timeout", "{timed_out}");
        assert_eq!(timed_out["result"]["timedOut"], true, "{timed_out}");
    });
}
