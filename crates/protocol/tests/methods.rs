//! Methods: names, params in every accepted spelling, results in their exact JSON, and the
//! `-32602` errors for bad params.

use codebeaker_protocol::commands::{Command, RunResult, RunStatus, WriteMode};
use codebeaker_protocol::jsonrpc::{parse_frame, Id, Incoming, Request};
use codebeaker_protocol::methods::*;
use codebeaker_protocol::params::decode_params;
use serde_json::{json, Value};

fn decode<T: serde::de::DeserializeOwned>(method: &str, params: Value) -> T {
    decode_params(method, Some(params)).unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// A run that printed `1` and exited 0, with these costs.
fn ok_run(duration_ms: u64, cpu_time_ms: u64, peak_memory_bytes: u64) -> RunResult {
    RunResult {
        stdout: "1\n".into(),
        stderr: String::new(),
        stdout_encoding: None,
        stderr_encoding: None,
        exit_code: Some(0),
        signal: None,
        status: RunStatus::Ok,
        timed_out: false,
        oom_killed: false,
        truncated: false,
        duration_ms,
        cpu_time_ms,
        peak_memory_bytes: Some(peak_memory_bytes),
        output: None,
        message: None,
        compile_ms: None,
        compile_cache_hit: None,
    }
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn method_names_are_exact() {
    for method in Method::ALL {
        assert_eq!(Method::from_name(method.name()), Some(method));
    }
    assert_eq!(
        Method::from_name("session.execute"),
        Some(Method::SessionExecute)
    );
    assert_eq!(Method::from_name("Session.Execute"), None);
    assert_eq!(Method::from_name("session.execute "), None);
    assert_eq!(Method::from_name("execution.output"), None);
    assert_eq!(Method::from_name(""), None);
}

#[test]
fn session_create_params_in_every_spelling() {
    let expected = SessionCreateParams {
        language: "python".into(),
        runtime: Some("native".into()),
        idle_timeout_minutes: Some(30),
        max_lifetime_minutes: Some(120),
        memory_limit_mb: Some(512),
        cpu_shares: Some(1024),
    };
    let spellings = [
        json!({"language":"python","runtime":"native","idleTimeoutMinutes":30,"maxLifetimeMinutes":120,"memoryLimitMB":512,"cpuShares":1024}),
        json!({"Language":"python","Runtime":"native","IdleTimeoutMinutes":30,"MaxLifetimeMinutes":120,"MemoryLimitMB":512,"CpuShares":1024}),
        json!({"language":"python","runtimeType":"native","idle_timeout_minutes":30,"max_lifetime_minutes":120,"memory_limit_mb":512,"cpu_shares":1024}),
        json!({"language":"python","RuntimePreference":"native","idleTimeoutMinutes":30,"maxLifetimeMinutes":120,"memoryLimitMb":512,"cpuShares":1024}),
        json!({"language":"python","runtimePreference":"native","idleTimeoutMinutes":30,"maxLifetimeMinutes":120,"MemoryLimitMb":512,"cpuShares":1024,"unknown":"ignored"}),
    ];
    for params in spellings {
        let decoded: SessionCreateParams = decode("session.create", params.clone());
        assert_eq!(decoded, expected, "{params}");
    }
    assert_eq!(
        to_json(&expected),
        json!({"language":"python","runtime":"native","idleTimeoutMinutes":30,"maxLifetimeMinutes":120,"memoryLimitMB":512,"cpuShares":1024})
    );
}

#[test]
fn session_create_needs_only_a_language_and_takes_nulls() {
    let minimal: SessionCreateParams = decode("session.create", json!({"language": "go"}));
    assert_eq!(minimal.language, "go");
    assert_eq!(minimal.runtime, None);
    let nulls: SessionCreateParams = decode(
        "session.create",
        json!({"language":"go","runtime":null,"memoryLimitMB":null,"cpuShares":null}),
    );
    assert_eq!(nulls, minimal);
    assert_eq!(to_json(&minimal), json!({"language": "go"}));
}

#[test]
fn seed_client_session_create_request() {
    // The original .NET client: camelCase, nulls left out, defaults 30/120.
    let text = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"session.create\",\"params\":{\"language\":\"python\",\"idleTimeoutMinutes\":30,\"maxLifetimeMinutes\":120}}\n";
    let mut frame = parse_frame(text);
    let Incoming::Request(request) = frame.messages.remove(0) else {
        panic!("refused")
    };
    assert_eq!(
        Method::from_name(&request.method),
        Some(Method::SessionCreate)
    );
    let params: SessionCreateParams = decode_params(&request.method, request.params).unwrap();
    assert_eq!(params.language, "python");
    assert_eq!(params.idle_timeout_minutes, Some(30));
    assert_eq!(params.max_lifetime_minutes, Some(120));
}

#[test]
fn session_create_result_exact_json() {
    let result = SessionCreateResult {
        session_id: "s-1".into(),
        container_id: "box-1".into(),
        language: "python".into(),
        runtime: "native".into(),
        created_at: "2025-10-27T10:00:00Z".into(),
        state: SessionState::Active,
        config: SessionConfig {
            idle_timeout_minutes: 30,
            max_lifetime_minutes: 120,
            memory_limit_mb: 512,
            cpu_shares: None,
        },
    };
    let expected = json!({"sessionId":"s-1","containerId":"box-1","language":"python","runtime":"native","createdAt":"2025-10-27T10:00:00Z","state":"Active","config":{"idleTimeoutMinutes":30,"maxLifetimeMinutes":120,"memoryLimitMB":512}});
    assert_eq!(to_json(&result), expected);
    let back: SessionCreateResult = serde_json::from_value(expected).unwrap();
    assert_eq!(back, result);
    assert_eq!(
        serde_json::from_value::<SessionState>(json!("active")).unwrap(),
        SessionState::Active
    );
}

#[test]
fn seed_client_session_execute_request() {
    let text = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"session.execute\",\"params\":{\"sessionId\":\"abc\",\"command\":{\"type\":\"write_file\",\"path\":\"/workspace/input.json\",\"content\":\"{}\",\"mode\":\"Create\"}}}\n";
    let mut frame = parse_frame(text);
    let Incoming::Request(request) = frame.messages.remove(0) else {
        panic!("refused")
    };
    let params: SessionExecuteParams = decode_params(&request.method, request.params).unwrap();
    assert_eq!(params.session_id, "abc");
    assert!(!params.wants_stream());
    let Command::WriteFile(write) = &params.command else {
        panic!("{:?}", params.command)
    };
    assert_eq!(write.path, "/workspace/input.json");
    assert_eq!(write.content, "{}");
    assert_eq!(write.mode, WriteMode::Create);

    // The original .NET CodeBeaker's runtime service runs programs with `shell` and `commandName`, then reads the
    // output file.
    let shell: SessionExecuteParams = decode(
        "session.execute",
        json!({"sessionId":"abc","command":{"type":"shell","commandName":"python3","args":["/workspace/program.py"]}}),
    );
    let Command::Shell(shell) = shell.command else {
        panic!()
    };
    assert_eq!(shell.command, "python3");
    assert_eq!(shell.args, vec!["/workspace/program.py"]);
    let read: SessionExecuteParams = decode(
        "session.execute",
        json!({"sessionId":"abc","command":{"type":"read_file","path":"/workspace/output.json"}}),
    );
    assert!(matches!(read.command, Command::ReadFile(_)));
}

#[test]
fn session_execute_params_spellings_and_streaming() {
    for params in [
        json!({"sessionId":"s","command":{"type":"read_file","path":"a"},"stream":true}),
        json!({"SessionId":"s","Command":{"type":"read_file","Path":"a"},"Stream":true}),
        json!({"session_id":"s","command":{"path":"a","type":"read_file"},"stream":true}),
    ] {
        let decoded: SessionExecuteParams = decode("session.execute", params.clone());
        assert_eq!(decoded.session_id, "s", "{params}");
        assert!(decoded.wants_stream());
    }
    let by_command: SessionExecuteParams = decode(
        "session.execute",
        json!({"sessionId":"s","command":{"type":"execute","code":"print(1)","stream":true}}),
    );
    assert!(by_command.wants_stream());
}

#[test]
fn session_execute_result_keeps_error_null() {
    let ok = SessionExecuteResult {
        success: true,
        result: Some(json!({"path": "a.txt", "bytes": 2})),
        error: None,
        duration_ms: 3,
    };
    let text = serde_json::to_string(&ok).unwrap();
    assert!(text.contains(r#""error":null"#), "{text}");
    assert_eq!(
        to_json(&ok),
        json!({"success":true,"result":{"path":"a.txt","bytes":2},"error":null,"durationMs":3})
    );
    assert_eq!(
        SessionExecuteResult::ok(json!({"path": "a.txt", "bytes": 2}), 3),
        ok
    );
    let failed: SessionExecuteResult =
        SessionExecuteResult::failed("file not found: a.txt", None, 0);
    assert_eq!(
        to_json(&failed),
        json!({"success":false,"result":null,"error":"file not found: a.txt","durationMs":0})
    );
    let back: SessionExecuteResult = serde_json::from_value(to_json(&failed)).unwrap();
    assert_eq!(back, failed);

    // Typed results serialize the same way.
    let run = SessionExecuteResult {
        success: true,
        result: Some(RunResult {
            output: Some(json!({"output": 42})),
            ..ok_run(12, 10, 1024)
        }),
        error: None,
        duration_ms: 13,
    };
    assert_eq!(
        to_json(&run),
        json!({"success":true,"result":{"stdout":"1\n","stderr":"","exitCode":0,"signal":null,"status":"ok","timedOut":false,"oomKilled":false,"truncated":false,"durationMs":12,"cpuTimeMs":10,"peakMemoryBytes":1024,"output":{"output":42}},"error":null,"durationMs":13})
    );
}

#[test]
fn session_close_and_list() {
    for params in [
        json!({"sessionId": "s"}),
        json!({"SessionId": "s"}),
        json!({"session_id": "s"}),
    ] {
        let p: SessionCloseParams = decode("session.close", params);
        assert_eq!(p.session_id, "s");
    }
    assert_eq!(
        to_json(&SessionCloseResult {
            session_id: "s".into(),
            closed: true
        }),
        json!({"sessionId":"s","closed":true})
    );
    let _: NoParams = decode_params("session.list", None).unwrap();
    let _: NoParams = decode("session.list", json!({"anything": 1}));
    let list = SessionListResult {
        sessions: vec![SessionInfo {
            session_id: "s".into(),
            container_id: "b".into(),
            language: "python".into(),
            runtime: "native".into(),
            state: SessionState::Busy,
            created_at: "2025-10-27T10:00:00Z".into(),
            last_activity: "2025-10-27T10:05:00Z".into(),
            execution_count: 4,
        }],
    };
    assert_eq!(
        to_json(&list),
        json!({"sessions":[{"sessionId":"s","containerId":"b","language":"python","runtime":"native","state":"Busy","createdAt":"2025-10-27T10:00:00Z","lastActivity":"2025-10-27T10:05:00Z","executionCount":4}]})
    );
}

#[test]
fn execution_run_accepts_pascal_case() {
    let pascal: ExecutionRunParams = decode(
        "execution.run",
        json!({"Language":"python","Code":"print(1)","Timeout":5}),
    );
    assert_eq!(pascal.language, "python");
    assert_eq!(pascal.code, "print(1)");
    assert_eq!(pascal.timeout, Some(5));
    let camel: ExecutionRunParams = decode(
        "execution.run",
        json!({"language":"python","code":"print(1)","timeout":5}),
    );
    assert_eq!(pascal, camel);

    let full: ExecutionRunParams = decode(
        "execution.run",
        json!({"Language":"python","Code":"x","Stdin":"in","Timeout":5,"MemoryLimit":256,"CpuLimit":0.5,"Packages":["numpy"]}),
    );
    assert_eq!(full.memory_limit, Some(256));
    assert_eq!(full.cpu_limit, Some(0.5));
    assert_eq!(full.packages, vec!["numpy"]);
    assert_eq!(
        to_json(&full),
        json!({"language":"python","code":"x","stdin":"in","timeout":5,"memoryLimit":256,"cpuLimit":0.5,"packages":["numpy"]})
    );
    let nulls: ExecutionRunParams = decode(
        "execution.run",
        json!({"language":"python","code":"x","packages":null,"stdin":null}),
    );
    assert!(nulls.packages.is_empty());
}

#[test]
fn execution_wait_is_optional_bounded_and_named_in_errors() {
    let p: ExecutionStatusParams = decode("execution.status", json!({"executionId": "e1"}));
    assert_eq!(p.wait, None);
    assert_eq!(
        to_json(&p),
        json!({"executionId": "e1"}),
        "no wait, no field"
    );
    for (wait, expected) in [
        (json!(0), Some(0)),
        (json!(2500), Some(2500)),
        (json!(MAX_WAIT_MS), Some(MAX_WAIT_MS)),
        (Value::Null, None),
    ] {
        let p: ExecutionStatusParams = decode(
            "execution.status",
            json!({"ExecutionId": "e1", "Wait": wait}),
        );
        assert_eq!(p.wait, expected);
        let r: ExecutionRunParams = decode(
            "execution.run",
            json!({"language": "python", "code": "x", "wait": wait}),
        );
        assert_eq!(r.wait, expected);
    }
    let p: ExecutionStatusParams = decode(
        "execution.status",
        json!({"executionId": "e1", "wait": 100}),
    );
    assert_eq!(to_json(&p), json!({"executionId": "e1", "wait": 100}));
    for (wait, shown) in [
        (json!(-1), "-1"),
        (json!(MAX_WAIT_MS + 1), "60001"),
        (json!(0.5), "0.5"),
        (json!("100"), "a string"),
        (json!([100]), "an array"),
    ] {
        for method in ["execution.status", "execution.run"] {
            let params =
                json!({"executionId": "e1", "language": "python", "code": "x", "wait": wait});
            let error = match method {
                "execution.status" => {
                    decode_params::<ExecutionStatusParams>(method, Some(params)).unwrap_err()
                }
                _ => decode_params::<ExecutionRunParams>(method, Some(params)).unwrap_err(),
            };
            assert_eq!(error.code, -32602);
            assert_eq!(
                error.message,
                format!("invalid params for {method}: wait: must be a whole number of milliseconds from 0 to 60000, got {shown}")
            );
            assert_eq!(error.data, Some(json!({"field": "wait"})));
        }
    }
}

#[test]
fn execution_run_and_status_results() {
    assert_eq!(
        to_json(&ExecutionRunResult {
            execution_id: "e1".into(),
            status: ExecutionStatus::Queued
        }),
        json!({"executionId":"e1","status":"queued"})
    );
    let p: ExecutionStatusParams = decode("execution.status", json!({"ExecutionId": "e1"}));
    assert_eq!(p.execution_id, "e1");
    let done = ExecutionStatusResult {
        execution_id: "e1".into(),
        status: ExecutionStatus::Completed,
        exit_code: Some(0),
        stdout: "1\n".into(),
        stderr: String::new(),
        duration_ms: Some(40),
        timeout: false,
        result: Some(ok_run(40, 30, 1 << 20)),
        error: None,
    };
    // The original .NET fields, and the run result `execute` answers with.
    assert_eq!(
        to_json(&done),
        json!({"executionId":"e1","status":"completed","exitCode":0,"stdout":"1\n","stderr":"","durationMs":40,"timeout":false,
               "result":{"stdout":"1\n","stderr":"","exitCode":0,"signal":null,"status":"ok","timedOut":false,"oomKilled":false,
                         "truncated":false,"durationMs":40,"cpuTimeMs":30,"peakMemoryBytes":1048576}})
    );
    let queued = ExecutionStatusResult {
        execution_id: "e2".into(),
        status: ExecutionStatus::Queued,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        duration_ms: None,
        timeout: false,
        result: None,
        error: None,
    };
    assert_eq!(
        to_json(&queued),
        json!({"executionId":"e2","status":"queued","exitCode":null,"stdout":"","stderr":"","durationMs":null,"timeout":false})
    );
    assert_eq!(
        serde_json::from_value::<ExecutionStatus>(json!("Running")).unwrap(),
        ExecutionStatus::Running
    );
}

#[test]
fn initialize_and_language_list() {
    let _: InitializeParams = decode_params("initialize", None).unwrap();
    let p: InitializeParams = decode(
        "initialize",
        json!({"clientInfo":{"name":"cli","version":"1"},"protocolVersion":"1.0"}),
    );
    assert_eq!(p.client_info.unwrap().name, "cli");
    let python = LanguageInfo {
        name: "python".into(),
        aliases: vec!["py".into(), "python3".into()],
        version: Some("3.11.2".into()),
        available: true,
        reason: None,
        extensions: vec!["py".into()],
        warm: true,
        ..LanguageInfo::default()
    };
    assert_eq!(
        to_json(&LanguageListResult {
            languages: vec![python.clone()]
        }),
        json!({"languages":[{"name":"python","aliases":["py","python3"],"version":"3.11.2","available":true,"extensions":["py"],"snippets":false,"compiled":false,"warm":true}]})
    );
    let result = InitializeResult {
        server_info: ServerInfo {
            name: "codebeaker".into(),
            version: "0.1.0".into(),
        },
        protocol_version: codebeaker_protocol::PROTOCOL_VERSION.into(),
        capabilities: Capabilities {
            streaming: true,
            languages: vec![python],
            commands: vec!["execute".into()],
            limits: Limits {
                max_message_bytes: Some(1 << 20),
                default_memory_limit_mb: Some(512),
                ..Limits::default()
            },
            isolation: IsolationInfo {
                backend: "native".into(),
                cgroup_version: Some(1),
                seccomp: true,
                network_policy: "none".into(),
                warnings: vec![],
            },
        },
    };
    let json = to_json(&result);
    assert_eq!(json["serverInfo"]["name"], "codebeaker");
    assert_eq!(json["protocolVersion"], "1.0");
    assert_eq!(
        json["capabilities"]["limits"],
        json!({"maxMessageBytes":1048576,"defaultMemoryLimitMB":512})
    );
    assert_eq!(
        json["capabilities"]["isolation"],
        json!({"backend":"native","cgroupVersion":1,"seccomp":true,"networkPolicy":"none","warnings":[]})
    );
    let back: InitializeResult = serde_json::from_value(json).unwrap();
    assert_eq!(back, result);
}

#[test]
fn streaming_notifications() {
    let output = ExecutionEvent::Output(ExecutionOutput {
        request_id: Some(Id::from(9u64)),
        session_id: "s".into(),
        stream: OutputStream::Stdout,
        data: "hello\n".into(),
        seq: 0,
    });
    let notification = output.to_notification();
    assert_eq!(
        to_json(&notification),
        json!({"jsonrpc":"2.0","method":"execution.output","params":{"requestId":9,"sessionId":"s","stream":"stdout","data":"hello\n","seq":0}})
    );
    assert_eq!(
        ExecutionEvent::from_notification(&notification).unwrap(),
        Some(output)
    );

    let started = ExecutionEvent::Started(ExecutionStarted {
        request_id: Some(Id::from("r")),
        session_id: "s".into(),
        command: "execute".into(),
    });
    assert_eq!(
        to_json(&started.to_notification()),
        json!({"jsonrpc":"2.0","method":"execution.started","params":{"requestId":"r","sessionId":"s","command":"execute"}})
    );
    let completed = ExecutionEvent::Completed(ExecutionCompleted {
        request_id: Some(Id::from("r")),
        session_id: "s".into(),
        success: false,
        status: Some(RunStatus::Timeout),
        duration_ms: 5000,
    });
    assert_eq!(
        to_json(&completed.to_notification())["params"],
        json!({"requestId":"r","sessionId":"s","success":false,"status":"timeout","durationMs":5000})
    );
    let other = codebeaker_protocol::jsonrpc::Notification::new("something.else", None);
    assert_eq!(ExecutionEvent::from_notification(&other).unwrap(), None);
}

#[test]
fn invalid_params_say_which_field_and_why() {
    let missing = decode_params::<SessionCreateParams>("session.create", None).unwrap_err();
    assert_eq!(missing.code, -32602);
    assert_eq!(
        missing.message,
        "invalid params for session.create: missing field `language`"
    );
    assert_eq!(missing.data, None);

    let wrong_type = decode_params::<SessionCreateParams>(
        "session.create",
        Some(json!({"language": "python", "memoryLimitMB": "lots"})),
    )
    .unwrap_err();
    assert_eq!(wrong_type.code, -32602);
    assert!(
        wrong_type.message.starts_with(
            "invalid params for session.create: memoryLimitMB: invalid type: string \"lots\""
        ),
        "{}",
        wrong_type.message
    );
    assert_eq!(wrong_type.data, Some(json!({"field": "memoryLimitMB"})));

    let unknown = decode_params::<SessionExecuteParams>(
        "session.execute",
        Some(json!({"sessionId": "s", "command": {"type": "foo"}})),
    )
    .unwrap_err();
    assert_eq!(
        unknown.message,
        "invalid params for session.execute: command: unknown command type `foo`; known types: execute, write_file, read_file, shell, create_dir, delete_file, copy_file, list_files, diff, apply_patch, install_packages"
    );
    assert_eq!(unknown.data, Some(json!({"field": "command"})));

    let bad_field = decode_params::<SessionExecuteParams>(
        "session.execute",
        Some(json!({"sessionId": "s", "command": {"type": "shell", "command": "ls", "args": [1]}})),
    )
    .unwrap_err();
    assert_eq!(
        bad_field.message,
        "invalid params for session.execute: command: shell.args[0]: invalid type: integer `1`, expected a string"
    );

    let not_object =
        decode_params::<SessionCloseParams>("session.close", Some(json!(["s"]))).unwrap_err();
    assert_eq!(not_object.code, -32602);
    assert!(not_object.message.contains("expected an object"));

    // By-position params with one object argument are that object.
    let positional: SessionCloseParams =
        decode_params("session.close", Some(json!([{"sessionId": "s"}]))).unwrap();
    assert_eq!(positional.session_id, "s");
}

#[test]
fn requests_built_by_clients_decode_on_the_server() {
    let params = SessionExecuteParams {
        session_id: "s".into(),
        command: Command::Execute(codebeaker_protocol::commands::ExecuteCommand {
            code: "result = {'output': input_data['value'] * 2}".into(),
            language: Some("python".into()),
            input: Some(json!({"value": 21})),
            timeout_ms: Some(30000),
            ..Default::default()
        }),
        stream: None,
    };
    let request = Request::new(
        3u64,
        Method::SessionExecute.name(),
        Some(serde_json::to_value(&params).unwrap()),
    );
    let text = serde_json::to_string(&request).unwrap();
    // (Params pass through a `Value`, whose keys are sorted; the server takes `type` anywhere.)
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"jsonrpc":"2.0","id":3,"method":"session.execute","params":{"sessionId":"s","command":{"type":"execute","code":"result = {'output': input_data['value'] * 2}","language":"python","input":{"value":21},"timeoutMs":30000}}})
    );
    let mut frame = parse_frame(&text);
    let Incoming::Request(back) = frame.messages.remove(0) else {
        panic!()
    };
    let decoded: SessionExecuteParams = decode_params(&back.method, back.params).unwrap();
    assert_eq!(decoded, params);
}
