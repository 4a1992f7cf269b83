//! Hostile requests: giant code and files, NUL bytes and invalid UTF-8, and code that does not
//! compile, each with a bounded answer or a clear error.

use super::*;

#[test]
fn giant_code_and_giant_files_are_bounded() {
    attack(async {
        let addr = server().await;
        let mut c = Client::connect(addr).await;
        let s = c.open(json!({"language": "python"})).await;

        // 15 MiB of code fits in a message and runs.
        let code = format!("# {}\nprint('big ok')", "x".repeat(15 << 20));
        let run = c.run(&s, "python", &code, RUN_MS).await;
        assert_eq!(
            text(&run["result"]["stdout"]),
            "big ok\n",
            "{}",
            &run.to_string()[..500.min(run.to_string().len())]
        );

        // 20 MiB does not: the server closes the connection with 1009 (message too big).
        let mut big = Client::connect(addr).await;
        let code = format!("# {}\nprint('too big')", "x".repeat(20 << 20));
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "session.execute",
            "params": {"sessionId": s.id, "command": {"type": "execute", "code": code}}});
        let _ = big.ws.send(Message::text(request.to_string())).await;
        match tokio::time::timeout(FRAME_TIMEOUT, big.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(close))))) => assert_eq!(u16::from(close.code), 1009),
            other => panic!("expected close 1009, got {other:?}"),
        }

        // A file over the write limit, on a server that takes messages that large.
        let roomy = start(ServerConfig {
            max_message_bytes: 96 << 20,
            ..local_config()
        })
        .await;
        let mut r = Client::connect(roomy.local_addr()).await;
        let write = r
            .exec(
                &s,
                json!({"type": "write_file", "path": "huge.txt", "content": "y".repeat((64 << 20) + 1)}),
            )
            .await;
        assert!(
            assert_refused(&write, "a write over 64 MiB").contains("limit"),
            "{write}"
        );
        roomy.shutdown().await.expect("shutdown");
        let listed = c.exec(&s, json!({"type": "list_files", "path": "."})).await;
        assert_eq!(listed["result"]["entries"], json!([]), "{listed}");
        c.still_works(&s).await;
        c.close(s).await;
    });
}

#[test]
fn nul_bytes_and_invalid_utf8_get_clear_errors_or_base64() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);

        // Output that is not UTF-8 comes back as base64, byte for byte.
        let run = c
            .run(
                &s,
                "python",
                "import sys\nsys.stdout.buffer.write(b'\\xff\\x00\\xfe')\nsys.stderr.buffer.write(b'\\x80ok')",
                RUN_MS,
            )
            .await;
        assert_eq!(status(&run), "ok", "{run}");
        assert_eq!(run["result"]["stdoutEncoding"], "base64");
        assert_eq!(run["result"]["stdout"], b64(b"\xff\x00\xfe"));
        assert_eq!(run["result"]["stderrEncoding"], "base64");
        assert_eq!(run["result"]["stderr"], b64(b"\x80ok"));

        // NUL bytes on stdin arrive as sent.
        let run = c
            .exec(
                &s,
                json!({"type": "execute", "code": "import sys\nprint(sys.stdin.buffer.read().hex())", "stdin": "a\u{0}b\u{ff}"}),
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "610062c3bf\n", "{run}");

        // NUL bytes in code: a typed failure with a message.
        let run = c.run(&s, "bash", "echo a\u{0}b", RUN_MS).await;
        assert_eq!(status(&run), "runtime_error", "{run}");
        assert_refused(&run, "bash code with a NUL byte");

        // NUL bytes in paths.
        for command in [
            json!({"type": "read_file", "path": "a\u{0}b"}),
            json!({"type": "write_file", "path": "a\u{0}b", "content": "x"}),
            json!({"type": "create_dir", "path": "a\u{0}b"}),
            json!({"type": "delete_file", "path": "a\u{0}b"}),
            json!({"type": "list_files", "path": "a\u{0}b"}),
            json!({"type": "copy_file", "source": "a\u{0}b", "destination": "c"}),
            json!({"type": "diff", "original_path": "a\u{0}b", "modified_content": "x"}),
            json!({"type": "shell", "command": "ls", "workingDirectory": "a\u{0}b"}),
        ] {
            let response = c.exec(&s, command.clone()).await;
            assert!(
                assert_refused(&response, &command.to_string()).contains("NUL"),
                "{response}"
            );
        }

        // Binary files round-trip as base64; text-only commands refuse them clearly.
        let binary = b"\x00\xff\x00\xfebinary";
        let written = c
            .exec(
                &s,
                json!({"type": "write_file", "path": "bin.dat", "content": b64(binary), "encoding": "base64"}),
            )
            .await;
        assert_eq!(written["success"], true, "{written}");
        let read = c
            .exec(&s, json!({"type": "read_file", "path": "bin.dat"}))
            .await;
        assert_eq!(read["result"]["encoding"], "base64");
        assert_eq!(read["result"]["content"], b64(binary));
        for command in [
            json!({"type": "read_file", "path": "bin.dat", "encoding": "utf8"}),
            json!({"type": "diff", "original_path": "bin.dat", "modified_content": "x"}),
            json!({"type": "apply_patch", "patch": "--- a/bin.dat\n+++ b/bin.dat\n@@ -1 +1 @@\n-x\n+y\n"}),
            json!({"type": "write_file", "path": "x", "content": "not base64!", "encoding": "base64"}),
        ] {
            let response = c.exec(&s, command.clone()).await;
            assert_refused(&response, &command.to_string());
        }

        // File names that are not UTF-8: listed (lossily), a clear error when asked for by that
        // name, and removable with their directory.
        let run = c
            .run(
                &s,
                "bash",
                "mkdir /workspace/odd && touch /workspace/$'bad\\xff\\xfename' /workspace/odd/$'\\x80' && echo ok",
                RUN_MS,
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "ok\n", "{run}");
        let listed = c
            .exec(
                &s,
                json!({"type": "list_files", "path": ".", "recursive": true}),
            )
            .await;
        assert_eq!(listed["success"], true, "{listed}");
        assert!(
            listed["result"]["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .any(|e| e["path"] == "/workspace/odd/\u{fffd}"),
            "{listed}"
        );
        let lossy = listed["result"]["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| text(&e["name"]).to_string())
            .find(|n| n.starts_with("bad"))
            .expect("the odd name is listed");
        assert!(lossy.contains('\u{fffd}'), "{lossy:?}");
        let read = c
            .exec(&s, json!({"type": "read_file", "path": lossy}))
            .await;
        assert_refused(&read, "a lossy file name");
        let deleted = c
            .exec(
                &s,
                json!({"type": "delete_file", "path": "odd", "recursive": true}),
            )
            .await;
        assert_eq!(deleted["success"], true, "{deleted}");

        // JSON that cannot hold a string (a lone surrogate): a JSON-RPC error, and the connection
        // goes on.
        c.send_text(&format!(
            r#"{{"jsonrpc":"2.0","id":"lone","method":"session.execute","params":{{"sessionId":"{}","command":{{"type":"execute","code":"print(1)\ud800"}}}}}}"#,
            s.id
        ))
        .await;
        let response = c.recv().await;
        assert!(
            matches!(response["error"]["code"].as_i64(), Some(-32700 | -32602)),
            "{response}"
        );
        c.still_works(&s).await;
        c.close(s).await;
    });
}

/// Python code that cannot be compiled (a NUL byte, a syntax error) fails with the interpreter's
/// own message, on the warm path as on the cold one.
#[test]
fn python_code_that_does_not_compile_reports_why() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        for (code, expected) in [("x = 1\u{0}", "null"), ("print(", "SyntaxError")] {
            let run = c.run(&s, "python", code, RUN_MS).await;
            assert_eq!(run["success"], false, "{run}");
            assert!(
                text(&run["error"]).contains(expected),
                "{code:?}: the error should say why: {run}"
            );
        }
        c.close(s).await;
    });
}
