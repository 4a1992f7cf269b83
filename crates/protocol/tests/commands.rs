//! Commands: every type from its documented JSON, the discriminator anywhere, aliases, defaults,
//! errors, and the exact JSON of every result.

use codebeaker_protocol::commands::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn command(value: Value) -> Command {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
}

fn refused(value: Value) -> String {
    match Command::from_value(value.clone()) {
        Ok(command) => panic!("{value} was accepted as {command:?}"),
        Err(error) => {
            // The serde path gives the same message.
            let via_serde = serde_json::from_value::<Command>(value).unwrap_err();
            assert_eq!(via_serde.to_string(), error.message);
            error.message
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

/// Serializing and decoding again gives the same command.
fn round_trips(command: &Command) {
    let back: Command = serde_json::from_value(to_json(command)).unwrap();
    assert_eq!(&back, command);
    assert_eq!(
        to_json(command)["type"],
        json!(command.command_type().as_str())
    );
}

#[test]
fn execute() {
    let c = command(json!({
        "type": "execute",
        "code": "result = {'output': input_data['value'] * 2}",
        "language": "python",
        "stdin": "x",
        "input": {"value": 21},
        "timeout": 5,
        "memoryLimit": 256,
        "stream": true
    }));
    let Command::Execute(e) = &c else { panic!() };
    assert_eq!(e.language.as_deref(), Some("python"));
    assert_eq!(e.input, Some(json!({"value": 21})));
    assert_eq!(e.timeout, Some(5));
    assert_eq!(e.effective_timeout_ms(), Some(5000));
    assert_eq!(e.memory_limit, Some(256));
    assert!(c.wants_stream());
    round_trips(&c);

    let ms = command(json!({"type":"execute","code":"1","timeoutMs":1500,"timeout":9}));
    let Command::Execute(e) = ms else { panic!() };
    assert_eq!(e.effective_timeout_ms(), Some(1500));

    for spelling in [
        json!({"type":"execute","code":"1","timeout_ms":10,"memory_limit":64}),
        json!({"type":"execute","Code":"1","TimeoutMs":10,"MemoryLimit":64}),
    ] {
        let Command::Execute(e) = command(spelling) else {
            panic!()
        };
        assert_eq!((e.timeout_ms, e.memory_limit), (Some(10), Some(64)));
    }

    // A plain script: no input, nothing optional serialized.
    let plain = command(json!({"type":"execute","code":"print(1)","input":null}));
    assert_eq!(to_json(&plain), json!({"type":"execute","code":"print(1)"}));
    assert!(!plain.wants_stream());
}

#[test]
fn write_file() {
    let c = command(
        json!({"type":"write_file","path":"/workspace/input.json","content":"{}","mode":"Create"}),
    );
    assert_eq!(
        c,
        Command::WriteFile(WriteFileCommand {
            path: "/workspace/input.json".into(),
            content: "{}".into(),
            mode: WriteMode::Create,
            encoding: Encoding::Utf8,
        })
    );
    round_trips(&c);
    assert_eq!(
        to_json(&c),
        json!({"type":"write_file","path":"/workspace/input.json","content":"{}","mode":"Create","encoding":"utf8"})
    );
    for (mode, expected) in [
        ("append", WriteMode::Append),
        ("APPEND", WriteMode::Append),
        ("Overwrite", WriteMode::Overwrite),
        ("overwrite", WriteMode::Overwrite),
        ("create", WriteMode::Create),
    ] {
        let Command::WriteFile(w) = command(
            json!({"type":"write_file","path":"a","content":"","mode":mode,"encoding":"BASE64"}),
        ) else {
            panic!()
        };
        assert_eq!(w.mode, expected);
        assert_eq!(w.encoding, Encoding::Base64);
    }
    let Command::WriteFile(defaults) =
        command(json!({"type":"write_file","path":"a","content":"x","mode":null}))
    else {
        panic!()
    };
    assert_eq!(defaults.mode, WriteMode::Create);
    assert_eq!(defaults.encoding, Encoding::Utf8);
    let message = refused(json!({"type":"write_file","path":"a","content":"x","mode":"Truncate"}));
    assert_eq!(
        message,
        "write_file.mode: unknown write mode `Truncate`; expected one of: Create, Append, Overwrite"
    );
}

#[test]
fn read_file() {
    let c = command(json!({"type":"read_file","path":"out.json"}));
    assert_eq!(
        c,
        Command::ReadFile(ReadFileCommand {
            path: "out.json".into(),
            encoding: None
        })
    );
    round_trips(&c);
    let Command::ReadFile(r) = command(json!({"type":"read_file","path":"x","encoding":"utf-8"}))
    else {
        panic!()
    };
    assert_eq!(r.encoding, Some(Encoding::Utf8));
}

#[test]
fn shell() {
    let c = command(json!({
        "type": "shell",
        "command": "python3",
        "args": ["-c", "print(1)"],
        "workingDirectory": "src",
        "env": {"A": "1"},
        "stdin": "in",
        "timeoutMs": 2000
    }));
    assert_eq!(
        c,
        Command::Shell(ShellCommand {
            command: "python3".into(),
            args: vec!["-c".into(), "print(1)".into()],
            working_directory: Some("src".into()),
            env: BTreeMap::from([("A".to_string(), "1".to_string())]),
            stdin: Some("in".into()),
            timeout_ms: Some(2000),
            stream: None,
        })
    );
    round_trips(&c);
    for spelling in [
        json!({"type":"shell","commandName":"ls","working_directory":"d","timeout_ms":1}),
        json!({"type":"shell","CommandName":"ls","WorkingDirectory":"d","TimeoutMs":1,"Args":null,"Env":null}),
        json!({"type":"execute_shell","commandName":"ls","workingDirectory":"d","timeoutMs":1}),
    ] {
        let Command::Shell(s) = command(spelling.clone()) else {
            panic!("{spelling}")
        };
        assert_eq!(s.command, "ls");
        assert!(s.args.is_empty() && s.env.is_empty());
        assert_eq!(s.working_directory.as_deref(), Some("d"));
        assert_eq!(s.timeout_ms, Some(1));
    }
    assert_eq!(
        refused(json!({"type":"shell","args":[]})),
        "shell: missing field `command`"
    );
}

#[test]
fn create_dir_delete_file_copy_file() {
    let c = command(json!({"type":"create_dir","path":"a/b"}));
    assert_eq!(
        c,
        Command::CreateDir(CreateDirCommand {
            path: "a/b".into(),
            recursive: true
        })
    );
    round_trips(&c);
    let Command::CreateDir(flat) =
        command(json!({"type":"create_dir","path":"a","recursive":false}))
    else {
        panic!()
    };
    assert!(!flat.recursive);
    let Command::CreateDir(null) =
        command(json!({"type":"create_directory","path":"a","recursive":null}))
    else {
        panic!()
    };
    assert!(null.recursive);

    let c = command(json!({"type":"delete_file","path":"a"}));
    assert_eq!(
        c,
        Command::DeleteFile(DeleteFileCommand {
            path: "a".into(),
            recursive: false
        })
    );
    round_trips(&c);
    let Command::DeleteFile(d) = command(json!({"type":"delete_file","path":"a","recursive":true}))
    else {
        panic!()
    };
    assert!(d.recursive);

    let c = command(json!({"type":"copy_file","source":"a","destination":"b"}));
    assert_eq!(
        c,
        Command::CopyFile(CopyFileCommand {
            source: "a".into(),
            destination: "b".into(),
            overwrite: false
        })
    );
    round_trips(&c);
    let Command::CopyFile(o) =
        command(json!({"type":"copy_file","Source":"a","Destination":"b","Overwrite":true}))
    else {
        panic!()
    };
    assert!(o.overwrite);
}

#[test]
fn list_files() {
    let c = command(json!({"type":"list_files"}));
    assert_eq!(c, Command::ListFiles(ListFilesCommand::default()));
    let Command::ListFiles(l) = &c else { panic!() };
    assert_eq!(l.path, ".");
    round_trips(&c);
    let full = command(json!({
        "type": "list_files",
        "path": "src",
        "recursive": true,
        "pattern": "**/*.rs",
        "include_hidden": true,
        "max_depth": 3
    }));
    let expected = Command::ListFiles(ListFilesCommand {
        path: "src".into(),
        recursive: true,
        pattern: Some("**/*.rs".into()),
        include_hidden: true,
        max_depth: Some(3),
    });
    assert_eq!(full, expected);
    assert_eq!(
        to_json(&full),
        json!({"type":"list_files","path":"src","recursive":true,"pattern":"**/*.rs","include_hidden":true,"max_depth":3})
    );
    let camel = command(
        json!({"type":"list_files","path":"src","recursive":true,"pattern":"**/*.rs","includeHidden":true,"maxDepth":3}),
    );
    assert_eq!(camel, expected);
    let Command::ListFiles(nulls) =
        command(json!({"type":"list_files","path":null,"include_hidden":null}))
    else {
        panic!()
    };
    assert_eq!(nulls.path, ".");
}

#[test]
fn diff() {
    let c = command(json!({"type":"diff","original_path":"a.txt","modified_content":"new\n"}));
    let Command::Diff(d) = &c else { panic!() };
    assert_eq!(d.original(), DiffSide::Path("a.txt"));
    assert_eq!(d.modified(), DiffSide::Content("new\n"));
    assert_eq!(d.context_lines, 3);
    round_trips(&c);
    assert_eq!(
        to_json(&c),
        json!({"type":"diff","original_path":"a.txt","modified_content":"new\n","context_lines":3})
    );
    let camel =
        command(json!({"type":"diff","originalContent":"a","modifiedPath":"b","contextLines":0}));
    let Command::Diff(d) = camel else { panic!() };
    assert_eq!(d.original(), DiffSide::Content("a"));
    assert_eq!(d.modified(), DiffSide::Path("b"));
    assert_eq!(d.context_lines, 0);

    assert_eq!(
        refused(json!({"type":"diff","modified_path":"b"})),
        "diff: missing field `original_path` or `original_content`"
    );
    assert_eq!(
        refused(
            json!({"type":"diff","original_path":"a","original_content":"x","modified_path":"b"})
        ),
        "diff: give either `original_path` or `original_content`, not both"
    );
}

#[test]
fn apply_patch() {
    let patch = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n";
    let c = command(json!({"type":"apply_patch","patch":patch}));
    assert_eq!(
        c,
        Command::ApplyPatch(ApplyPatchCommand {
            patch: patch.into(),
            target_path: None,
            dry_run: false,
            strip: None,
        })
    );
    round_trips(&c);
    let full = command(
        json!({"type":"apply_patch","patch":patch,"target_path":"y","dry_run":true,"strip":1}),
    );
    assert_eq!(
        to_json(&full),
        json!({"type":"apply_patch","patch":patch,"target_path":"y","dry_run":true,"strip":1})
    );
    let camel = command(
        json!({"type":"apply_patch","patch":patch,"targetPath":"y","dryRun":true,"strip":1}),
    );
    assert_eq!(camel, full);
}

#[test]
fn install_packages() {
    let c = command(json!({"type":"install_packages","packages":["requests==2.31.0"]}));
    assert_eq!(
        c,
        Command::InstallPackages(InstallPackagesCommand {
            packages: vec!["requests==2.31.0".into()],
            requirements_file: None,
            flags: vec![],
            stream: None,
        })
    );
    round_trips(&c);
    let file = command(
        json!({"type":"install_packages","requirements_file":"requirements.txt","flags":["--no-deps"]}),
    );
    let camel = command(
        json!({"type":"install_packages","requirementsFile":"requirements.txt","flags":["--no-deps"],"packages":null}),
    );
    assert_eq!(file, camel);
    assert_eq!(
        to_json(&file),
        json!({"type":"install_packages","packages":[],"requirements_file":"requirements.txt","flags":["--no-deps"]})
    );
    assert_eq!(
        refused(json!({"type":"install_packages","packages":[]})),
        "install_packages: give `packages` or `requirements_file`"
    );
}

#[test]
fn type_may_come_anywhere() {
    let last = command(
        json!({"path":"/workspace/input.json","content":"{}","mode":"Create","type":"write_file"}),
    );
    let first = command(
        json!({"type":"write_file","path":"/workspace/input.json","content":"{}","mode":"Create"}),
    );
    assert_eq!(last, first);
    // Also from text, where the key order is exactly as written.
    let text = r#"{"path":"p","recursive":false,"type":"create_dir"}"#;
    let from_text: Command = serde_json::from_str(text).unwrap();
    assert_eq!(
        from_text,
        Command::CreateDir(CreateDirCommand {
            path: "p".into(),
            recursive: false
        })
    );
    let middle: Command =
        serde_json::from_str(r#"{"source":"a","type":"copy_file","destination":"b"}"#).unwrap();
    assert_eq!(middle.command_type(), CommandType::CopyFile);
}

#[test]
fn unknown_missing_and_malformed_types_list_the_known_ones() {
    let known = "known types: execute, write_file, read_file, shell, create_dir, delete_file, copy_file, list_files, diff, apply_patch, install_packages";
    assert_eq!(
        refused(json!({"type":"foo"})),
        format!("unknown command type `foo`; {known}")
    );
    assert_eq!(
        refused(json!({"type":"WRITE_FILE","path":"a","content":""})),
        format!("unknown command type `WRITE_FILE`; {known}")
    );
    assert_eq!(
        refused(json!({"path":"a"})),
        format!("missing field `type`; {known}")
    );
    assert_eq!(
        refused(json!({"type":7})),
        format!("`type` must be a string, got a number; {known}")
    );
    assert_eq!(
        refused(json!("write_file")),
        format!("expected a command object with a `type`, got a string; {known}")
    );
}

#[test]
fn command_types_round_trip_by_name() {
    for kind in CommandType::ALL {
        assert_eq!(CommandType::from_name(kind.as_str()), Some(kind));
        assert_eq!(
            serde_json::from_value::<CommandType>(json!(kind.as_str())).unwrap(),
            kind
        );
    }
    assert_eq!(
        CommandType::from_name("execute_shell"),
        Some(CommandType::Shell)
    );
    assert_eq!(
        CommandType::from_name("create_directory"),
        Some(CommandType::CreateDir)
    );
}

fn run_result() -> RunResult {
    RunResult {
        stdout: "42\n".into(),
        stderr: String::new(),
        stdout_encoding: None,
        stderr_encoding: None,
        exit_code: None,
        signal: Some(9),
        status: RunStatus::MemoryLimit,
        timed_out: false,
        oom_killed: true,
        truncated: false,
        duration_ms: 120,
        cpu_time_ms: 80,
        peak_memory_bytes: None,
        output: None,
        message: Some("memory limit of 64 MB reached".into()),
        compile_ms: None,
        compile_cache_hit: None,
    }
}

#[test]
fn run_result_exact_json() {
    let run = run_result();
    assert_eq!(
        to_json(&run),
        json!({"stdout":"42\n","stderr":"","exitCode":null,"signal":9,"status":"memory_limit","timedOut":false,"oomKilled":true,"truncated":false,"durationMs":120,"cpuTimeMs":80,"peakMemoryBytes":null,"message":"memory limit of 64 MB reached"})
    );
    let back: RunResult = serde_json::from_value(to_json(&run)).unwrap();
    assert_eq!(back, run);

    // `output` is omitted when absent, present (even as null) for snippets.
    let mut snippet = run_result();
    snippet.output = Some(Value::Null);
    let json = to_json(&snippet);
    assert_eq!(json["output"], Value::Null);
    assert!(json.as_object().unwrap().contains_key("output"));
    let back: RunResult = serde_json::from_value(json).unwrap();
    assert_eq!(back.output, Some(Value::Null));

    let mut binary = run_result();
    binary.stdout_encoding = Some(Encoding::Base64);
    assert_eq!(to_json(&binary)["stdoutEncoding"], "base64");

    let names: Vec<Value> = RunStatus::ALL.iter().map(to_json).collect();
    assert_eq!(
        names,
        vec![
            json!("ok"),
            json!("runtime_error"),
            json!("compile_error"),
            json!("timeout"),
            json!("memory_limit"),
            json!("output_limit"),
            json!("killed"),
            json!("internal_error")
        ]
    );
}

#[test]
fn command_results_exact_json() {
    let cases: Vec<(CommandType, CommandResult, Value)> = vec![
        (
            CommandType::WriteFile,
            CommandResult::WriteFile(WriteFileResult {
                path: "a".into(),
                bytes: 2,
            }),
            json!({"path":"a","bytes":2}),
        ),
        (
            CommandType::ReadFile,
            CommandResult::ReadFile(ReadFileResult {
                path: "a".into(),
                content: "hi".into(),
                encoding: Encoding::Utf8,
                bytes: 2,
            }),
            json!({"path":"a","content":"hi","encoding":"utf8","bytes":2}),
        ),
        (
            CommandType::CreateDir,
            CommandResult::CreateDir(CreateDirResult { path: "d".into() }),
            json!({"path":"d"}),
        ),
        (
            CommandType::DeleteFile,
            CommandResult::DeleteFile(DeleteFileResult {
                path: "d".into(),
                deleted: true,
            }),
            json!({"path":"d","deleted":true}),
        ),
        (
            CommandType::CopyFile,
            CommandResult::CopyFile(CopyFileResult {
                source: "a".into(),
                destination: "b".into(),
            }),
            json!({"source":"a","destination":"b"}),
        ),
        (
            CommandType::ListFiles,
            CommandResult::ListFiles(ListFilesResult {
                path: ".".into(),
                entries: vec![FileEntry {
                    name: "a.txt".into(),
                    path: "a.txt".into(),
                    kind: FileKind::File,
                    size: 3,
                    modified: Some("2025-10-27T10:00:00Z".into()),
                }],
                truncated: false,
            }),
            json!({"path":".","entries":[{"name":"a.txt","path":"a.txt","type":"file","size":3,"modified":"2025-10-27T10:00:00Z"}]}),
        ),
        (
            CommandType::Diff,
            CommandResult::Diff(DiffResult {
                diff: "--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n".into(),
                additions: 1,
                deletions: 1,
                identical: false,
            }),
            json!({"diff":"--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n","additions":1,"deletions":1,"identical":false}),
        ),
        (
            CommandType::ApplyPatch,
            CommandResult::ApplyPatch(ApplyPatchResult {
                files: vec!["x".into()],
                hunks_applied: 1,
                hunks_failed: 1,
                dry_run: false,
                failures: vec![HunkFailure {
                    path: "x".into(),
                    hunk: 2,
                    reason: "context does not match at line 10".into(),
                }],
            }),
            json!({"files":["x"],"hunksApplied":1,"hunksFailed":1,"dryRun":false,"failures":[{"path":"x","hunk":2,"reason":"context does not match at line 10"}]}),
        ),
        (
            CommandType::Shell,
            CommandResult::Run(run_result()),
            to_json(&run_result()),
        ),
    ];
    for (kind, result, expected) in cases {
        assert_eq!(to_json(&result), expected, "{kind}");
        assert_eq!(
            CommandResult::decode(kind, expected).unwrap(),
            result,
            "{kind}"
        );
    }
    assert!(CommandResult::decode(CommandType::WriteFile, json!({"path": "a"})).is_err());
}
