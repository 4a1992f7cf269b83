//! Sessions and every command through the engine, in real boxes: the behaviour the server and the
//! embedded client share.

use codebeaker_engine::{Engine, EngineError, ExecutionState, OneShotRequest, SessionOptions};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{caller, command, engine, engine_config, open_session, run};

#[test]
fn the_original_clients_runtime_flow_in_a_session() {
    run(async {
        let engine = engine();
        let me = caller("dotnet");
        let id = open_session(engine, &me, "python").await;
        let (ok, result, _) = command(engine, &me, &id, json!({"type": "write_file", "path": "/workspace/input.json", "content": "{}", "mode": "Create"})).await;
        assert!(ok);
        assert_eq!(result, json!({"path": "/workspace/input.json", "bytes": 2}));
        let (ok, result, error) = command(engine, &me, &id, json!({"type": "execute", "code": "result = {'output': input_data['value'] * 2}", "input": {"value": 21}})).await;
        assert!(ok, "{error:?}");
        assert_eq!(result["output"], json!({"output": 42}));
        assert_eq!(result["status"], "ok");
        let (ok, _, error) = command(engine, &me, &id, json!({"type": "execute", "code": "# This will cause an error\nundefined_variable", "input": {}})).await;
        assert!(!ok);
        assert!(error.unwrap().contains("NameError"));
        let sessions = engine.list_sessions(&me);
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].execution_count, 3);
        let box_name = sessions[0].box_name.clone();
        engine.close_session(&me, &id).await.unwrap();
        assert!(engine.list_sessions(&me).is_empty());
        assert!(
            !engine.sandbox().own_boxes().contains(&box_name),
            "closing releases the box"
        );
        assert!(matches!(
            engine.close_session(&me, &id).await,
            Err(EngineError::SessionNotFound(_))
        ));
    });
}

#[test]
fn file_commands() {
    run(async {
        let engine = engine();
        let me = caller("files");
        let id = open_session(engine, &me, "bash").await;
        let run = |c: Value| command(engine, &me, &id, c);
        assert!(
            run(json!({"type": "write_file", "path": "notes/a.txt", "content": "one\n"}))
                .await
                .0
        );
        assert!(run(json!({"type": "write_file", "path": "notes/a.txt", "content": "two\n", "mode": "Append"})).await.0);
        let (_, r, _) = run(json!({"type": "read_file", "path": "/workspace/notes/a.txt"})).await;
        assert_eq!(
            r,
            json!({"path": "/workspace/notes/a.txt", "content": "one\ntwo\n", "encoding": "utf8", "bytes": 8})
        );
        assert!(run(json!({"type": "write_file", "path": "bin.dat", "content": "AP8=", "encoding": "base64"})).await.0);
        let (_, r, _) = run(json!({"type": "read_file", "path": "bin.dat"})).await;
        assert_eq!(
            (r["content"].as_str(), r["encoding"].as_str()),
            (Some("AP8="), Some("base64")),
            "non-UTF-8 comes back as base64"
        );
        let (ok, _, e) =
            run(json!({"type": "read_file", "path": "bin.dat", "encoding": "utf8"})).await;
        assert!(!ok && e.unwrap().contains("base64"));
        assert!(
            run(json!({"type": "create_dir", "path": "deep/er/dir"}))
                .await
                .0
        );
        assert!(run(json!({"type": "copy_file", "source": "notes/a.txt", "destination": "deep/er/dir/b.txt"})).await.0);
        let (ok, _, e) = run(
        json!({"type": "copy_file", "source": "notes/a.txt", "destination": "deep/er/dir/b.txt"}),
    )
    .await;
        assert!(!ok && e.unwrap().contains("overwrite"));
        assert!(
            run(json!({"type": "write_file", "path": ".hidden", "content": "x"}))
                .await
                .0
        );
        let (_, r, _) = run(
            json!({"type": "list_files", "path": ".", "recursive": true, "pattern": "**/*.txt"}),
        )
        .await;
        let paths: Vec<&str> = r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            ["/workspace/notes/a.txt", "/workspace/deep/er/dir/b.txt"]
        );
        let (_, r, _) = run(json!({"type": "list_files"})).await;
        let names: Vec<&str> = r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["bin.dat", "deep", "notes"],
            "hidden files only on request"
        );
        let entry = &r["entries"][0];
        assert_eq!(
            (entry["type"].as_str(), entry["size"].as_u64()),
            (Some("file"), Some(2))
        );
        assert!(entry["modified"].as_str().unwrap().ends_with('Z'));
        let (_, r, _) = run(json!({"type": "list_files", "include_hidden": true})).await;
        assert_eq!(r["entries"].as_array().unwrap().len(), 4);
        let (ok, _, e) = run(json!({"type": "delete_file", "path": "deep"})).await;
        assert!(!ok && e.unwrap().contains("recursive"));
        let (ok, r, _) =
            run(json!({"type": "delete_file", "path": "deep", "recursive": true})).await;
        assert!(ok && r["deleted"] == json!(true));
        let (ok, r, e) = run(json!({"type": "delete_file", "path": "deep"})).await;
        assert!(!ok && r["deleted"] == json!(false) && e.unwrap().contains("no such file"));
        engine.close_session(&me, &id).await.unwrap();
    });
}

#[test]
fn paths_that_leave_the_workspace_are_refused() {
    run(async {
        let engine = engine();
        let me = caller("paths");
        let id = open_session(engine, &me, "bash").await;
        let run = |c: Value| command(engine, &me, &id, c);
        assert!(
            run(
                json!({"type": "shell", "command": "ln", "args": ["-s", "/etc", "/workspace/etc"]})
            )
            .await
            .0
        );
        assert!(run(json!({"type": "shell", "command": "ln", "args": ["-s", "/proc/1/root", "/workspace/r"]})).await.0);
        for path in [
            "../etc/passwd",
            "/etc/passwd",
            "/workspace/../etc/passwd",
            "etc/passwd",
            "r/etc/passwd",
            "a\u{0}b",
        ] {
            for command in [
                json!({"type": "read_file", "path": path}),
                json!({"type": "write_file", "path": path, "content": "x"}),
                json!({"type": "delete_file", "path": path}),
                json!({"type": "create_dir", "path": format!("{path}/d")}),
                json!({"type": "list_files", "path": path}),
                json!({"type": "copy_file", "source": path, "destination": "copy"}),
                json!({"type": "copy_file", "source": "/workspace/etc", "destination": path}),
            ] {
                let (ok, _, error) = run(command.clone()).await;
                assert!(!ok, "{command} must be refused");
                assert!(error.is_some_and(|e| !e.is_empty()), "{command} says why");
            }
        }
        let (ok, _, e) =
            run(json!({"type": "shell", "command": "pwd", "workingDirectory": "../.."})).await;
        assert!(!ok && e.unwrap().contains("leaves the workspace"));
        let (ok, _, e) =
            run(json!({"type": "delete_file", "path": "/workspace", "recursive": true})).await;
        assert!(!ok && e.unwrap().contains("workspace itself"));
        engine.close_session(&me, &id).await.unwrap();
    });
}

#[test]
fn shell_reports_success_only_for_exit_code_zero() {
    run(async {
        let engine = engine();
        let me = caller("shell");
        let id = open_session(engine, &me, "bash").await;
        let run = |c: Value| command(engine, &me, &id, c);
        run(json!({"type": "create_dir", "path": "sub"})).await;
        let (ok, r, _) = run(json!({"type": "shell", "command": "sh", "args": ["-c", "pwd; echo $GREETING; cat"], "workingDirectory": "sub", "env": {"GREETING": "hi"}, "stdin": "in"})).await;
        assert!(ok);
        assert_eq!(r["stdout"], "/workspace/sub\nhi\nin");
        assert_eq!(r["exitCode"], 0);
        let (ok, r, e) =
            run(json!({"type": "shell", "command": "sh", "args": ["-c", "echo bad >&2; exit 1"]}))
                .await;
        assert!(
            !ok,
            "exit code 1 is not success (the original server said it was)"
        );
        assert_eq!(r["exitCode"], 1);
        assert!(e.unwrap().contains("exited with code 1: bad"));
        let (ok, r, _) =
            run(json!({"type": "shell", "command": "sleep", "args": ["5"], "timeoutMs": 300}))
                .await;
        assert!(!ok && r["status"] == "timeout" && r["timedOut"] == json!(true));
        let (ok, _, e) = run(json!({"type": "shell", "commandName": "no-such-tool"})).await;
        assert!(!ok && e.unwrap().contains("not found"));
        let (ok, _, e) = run(json!({"type": "install_packages", "packages": ["requests"]})).await;
        assert!(!ok && e.unwrap().contains("network"));
        engine.close_session(&me, &id).await.unwrap();
    });
}

#[test]
fn diff_and_apply_patch() {
    run(async {
        let engine = engine();
        let me = caller("patch");
        let id = open_session(engine, &me, "python").await;
        let run = |c: Value| command(engine, &me, &id, c);
        run(json!({"type": "write_file", "path": "app.py", "content": "a = 1\nb = 2\nc = 3\n"}))
            .await;
        let (ok, r, _) = run(json!({"type": "diff", "original_path": "app.py", "modified_content": "a = 1\nb = 20\nc = 3\nd = 4\n"})).await;
        assert!(ok);
        assert_eq!(
            (
                r["additions"].as_u64(),
                r["deletions"].as_u64(),
                r["identical"].as_bool()
            ),
            (Some(2), Some(1), Some(false))
        );
        let patch = r["diff"]
            .as_str()
            .unwrap()
            .replace("--- /workspace/app.py", "--- a/app.py")
            .replace("+++ content", "+++ b/app.py");
        let (ok, r, e) = run(json!({"type": "apply_patch", "patch": patch, "dry_run": true})).await;
        assert!(ok, "{e:?}");
        assert_eq!(r["hunksApplied"], 1);
        let (_, unchanged, _) = run(json!({"type": "read_file", "path": "app.py"})).await;
        assert_eq!(
            unchanged["content"], "a = 1\nb = 2\nc = 3\n",
            "a dry run changes nothing"
        );
        let (ok, _, _) = run(json!({"type": "apply_patch", "patch": patch})).await;
        assert!(ok);
        let (_, patched, _) = run(json!({"type": "read_file", "path": "app.py"})).await;
        assert_eq!(patched["content"], "a = 1\nb = 20\nc = 3\nd = 4\n");
        // Applying it again: the context no longer matches, the hunk fails, nothing changes.
        let (ok, r, e) = run(json!({"type": "apply_patch", "patch": patch})).await;
        assert!(!ok);
        assert_eq!(
            (r["hunksApplied"].as_u64(), r["hunksFailed"].as_u64()),
            (Some(0), Some(1))
        );
        assert!(e.unwrap().contains("context does not match"));
        let (_, same, _) = run(json!({"type": "read_file", "path": "app.py"})).await;
        assert_eq!(same["content"], patched["content"]);
        let (ok, r, _) =
            run(json!({"type": "diff", "original_content": "x\n", "modified_content": "x\n"}))
                .await;
        assert!(ok && r["identical"] == json!(true) && r["diff"] == "");
        let (ok, _, e) = run(json!({"type": "apply_patch", "patch": "not a patch"})).await;
        assert!(!ok && e.unwrap().contains("invalid patch"));
        engine.close_session(&me, &id).await.unwrap();
    });
}

#[test]
fn sessions_belong_to_their_caller_and_are_bounded() {
    run(async {
        let mut cfg = engine_config(0);
        cfg.sessions.max_sessions_per_caller = 2;
        cfg.sessions.idle_timeout = Duration::from_millis(300);
        let engine = Engine::new(cfg).unwrap();
        let (alice, bob) = (caller("alice"), caller("bob"));
        let a1 = open_session(&engine, &alice, "python").await;
        let _a2 = open_session(&engine, &alice, "javascript").await;
        let err = engine
            .create_session(
                &alice,
                SessionOptions {
                    language: "python".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::LimitReached(_)), "{err}");
        let b1 = open_session(&engine, &bob, "python").await;
        assert!(engine.list_sessions(&bob).iter().all(|s| s.id == b1));
        let stolen = engine
            .execute_command(
                &bob,
                &a1,
                serde_json::from_value(json!({"type": "read_file", "path": "x"})).unwrap(),
                None,
            )
            .await;
        assert!(matches!(stolen, Err(EngineError::SessionNotFound(_))));
        assert!(matches!(
            engine.close_session(&bob, &a1).await,
            Err(EngineError::SessionNotFound(_))
        ));
        let unsupported = engine
            .create_session(
                &bob,
                SessionOptions {
                    language: "cobol".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(unsupported.to_string().contains("Unsupported language"));
        // The reaper closes idle sessions and their boxes.
        tokio::time::sleep(Duration::from_millis(400)).await;
        engine.reap().await;
        assert!(engine.list_sessions(&alice).is_empty() && engine.list_sessions(&bob).is_empty());
        assert_eq!(engine.stats().sessions, 0);
    });
}

#[test]
fn one_shot_executions_are_queued_then_reported() {
    run(async {
        let engine = engine();
        let me = caller("oneshot");
        let id = engine
            .submit_execution(
                &me,
                OneShotRequest {
                    language: "python".into(),
                    code: "print(input().upper())".into(),
                    stdin: Some("hey".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        let record = engine
            .wait_execution(&me, &id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(record.status, ExecutionState::Completed);
        assert_eq!(record.stdout, "HEY\n");
        assert_eq!(record.exit_code, Some(0));
        assert!(
            engine.execution_status(&caller("other"), &id).is_err(),
            "not visible to other callers"
        );
        let failing = engine
            .submit_execution(
                &me,
                OneShotRequest {
                    language: "python".into(),
                    code: "raise SystemExit(4)".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let record = engine
            .wait_execution(&me, &failing, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            (record.status, record.exit_code),
            (ExecutionState::Completed, Some(4)),
            "a program that exits non-zero has completed; its outcome says how"
        );
        assert_eq!(
            record.outcome,
            Some(codebeaker_sandbox::Verdict::RuntimeError)
        );
        assert!(engine
            .submit_execution(
                &me,
                OneShotRequest {
                    language: "cobol".into(),
                    ..Default::default()
                }
            )
            .is_err());
    });
}

#[test]
fn streaming_output_reaches_the_caller_while_the_program_runs() {
    run(async {
        let engine = engine();
        let me = caller("stream");
        let id = open_session(engine, &me, "python").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let command = serde_json::from_value(json!({"type": "execute", "code": "import time\nprint('a', flush=True)\ntime.sleep(0.1)\nprint('b')"})).unwrap();
        let out = engine
            .execute_command(&me, &id, command, Some(tx))
            .await
            .unwrap();
        assert!(out.success);
        let mut streamed = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            streamed.extend(chunk.data);
        }
        assert_eq!(String::from_utf8_lossy(&streamed), "a\nb\n");
        engine.close_session(&me, &id).await.unwrap();
    });
}

/// Runs `command` in session `id` of `who` and cancels it from outside once its first output
/// arrives; returns (whether the cancel found it running, success, result, how long it took).
async fn cancelled_after_start(
    engine: &Engine,
    who: &codebeaker_engine::Caller,
    id: &str,
    command: Value,
) -> (bool, bool, Value, Duration) {
    let command = serde_json::from_value(command).expect("valid command");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = std::time::Instant::now();
    let (out, found) = tokio::join!(engine.execute_command(who, id, command, Some(tx)), async {
        let first = rx
            .recv()
            .await
            .expect("the program prints before it sleeps");
        assert_eq!(String::from_utf8_lossy(&first.data), "started\n");
        engine
            .cancel_command(who, id)
            .expect("the caller's own session")
    });
    let out = out.expect("a cancelled command is an outcome, not an error");
    let result = serde_json::to_value(&out.result).expect("a result as JSON");
    (found, out.success, result, started.elapsed())
}

#[test]
fn a_running_command_is_cancelled_and_the_session_goes_on() {
    run(async {
        let engine = engine();
        let me = caller("cancel");
        let id = open_session(engine, &me, "python").await;
        assert!(
            !engine.cancel_command(&me, &id).unwrap(),
            "an idle session has nothing to cancel"
        );

        let shell = json!({"type": "shell", "command": "sh", "args": ["-c", "echo started; sleep 30; echo never"], "timeoutMs": 60000});
        let (found, ok, result, took) = cancelled_after_start(engine, &me, &id, shell).await;
        assert!(found, "the shell command was running");
        assert!(!ok, "{result}");
        assert_eq!(result["status"], "killed", "{result}");
        assert_eq!(result["stdout"], "started\n", "{result}");
        assert!(took < Duration::from_secs(10), "cancel took {took:?}");

        let execute = json!({"type": "execute", "code": "import time\nprint('started', flush=True)\ntime.sleep(30)\nprint('never')", "timeoutMs": 60000});
        let (found, ok, result, took) = cancelled_after_start(engine, &me, &id, execute).await;
        assert!(found, "the execute command was running");
        assert!(!ok, "{result}");
        assert_eq!(result["status"], "killed", "{result}");
        assert_eq!(result["stdout"], "started\n", "{result}");
        assert!(took < Duration::from_secs(10), "cancel took {took:?}");

        // The session runs the next command at once, and a cancel between commands finds none.
        let (ok, result, error) = command(
            engine,
            &me,
            &id,
            json!({"type": "shell", "command": "echo", "args": ["next"]}),
        )
        .await;
        assert!(ok, "{error:?}");
        assert_eq!(result["stdout"], "next\n");
        assert!(!engine.cancel_command(&me, &id).unwrap());
        let (ok, result, error) = command(
            engine,
            &me,
            &id,
            json!({"type": "execute", "code": "print(6 * 7)"}),
        )
        .await;
        assert!(ok, "{error:?}");
        assert_eq!(result["stdout"], "42\n");
        engine.close_session(&me, &id).await.unwrap();
        assert!(matches!(
            engine.cancel_command(&me, &id),
            Err(EngineError::SessionNotFound(_))
        ));
    });
}

#[test]
fn sessions_take_ready_boxes_from_the_pool() {
    run(async {
        let mut cfg = engine_config(0);
        cfg.box_pool_size = 2;
        let engine = Arc::new(Engine::new(cfg).unwrap());
        let upkeep = engine.spawn_reaper();
        let wait_for_pool = |n: usize| {
            let engine = Arc::clone(&engine);
            async move {
                for _ in 0..500 {
                    if engine.stats().pooled_boxes == n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("the pool never reached {n} boxes");
            }
        };
        wait_for_pool(2).await;
        let me = caller("pool");
        // The boxes there are now: the pool's. (Counting boxes made would race the refill.)
        let pooled = engine.sandbox().own_boxes();
        let id = open_session(&engine, &me, "python").await;
        let session_box = engine.list_sessions(&me)[0].box_name.clone();
        assert!(
            pooled.contains(&session_box),
            "the session's box {session_box} came from the pool {pooled:?}"
        );
        wait_for_pool(2).await;
        let (ok, r, _) = command(
            &engine,
            &me,
            &id,
            json!({"type": "execute", "code": "result = 1", "input": {}}),
        )
        .await;
        assert!(ok && r["output"] == json!(1));
        upkeep.abort();
        engine.shutdown().await;
        assert!(engine.list_sessions(&me).is_empty());
        assert_eq!(
            engine.stats().pooled_boxes,
            0,
            "shutdown destroys the pooled boxes too"
        );
    });
}

#[test]
fn execute_reports_compile_time_and_cache_hits() {
    run(async {
        let engine = engine();
        let me = caller("compile");
        let id = open_session(engine, &me, "go").await;
        let code = format!("// {:?}\nresult := 7", std::time::SystemTime::now());
        let (ok, first, e) = command(
            engine,
            &me,
            &id,
            json!({"type": "execute", "code": code, "input": {}}),
        )
        .await;
        assert!(ok, "{e:?}");
        assert_eq!(first["compileCacheHit"], json!(false));
        assert!(first["compileMs"].as_u64().is_some());
        let (_, second, _) = command(
            engine,
            &me,
            &id,
            json!({"type": "execute", "code": code, "input": {}}),
        )
        .await;
        assert_eq!(
            (
                second["compileCacheHit"].clone(),
                second["compileMs"].clone()
            ),
            (json!(true), json!(0))
        );
        let (_, python, _) = command(
            engine,
            &me,
            &id,
            json!({"type": "execute", "language": "python", "code": "result = 1", "input": {}}),
        )
        .await;
        assert!(
            python.get("compileMs").is_none(),
            "interpreted languages have no compile fields"
        );
        engine.close_session(&me, &id).await.unwrap();
    });
}
