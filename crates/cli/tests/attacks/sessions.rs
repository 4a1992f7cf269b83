//! Sessions against sessions: a session sees nothing of another's files, IPC or sockets, and
//! another caller's session is not found, not even to stop its running command or feed its stdin.

use super::*;

#[test]
fn sessions_see_nothing_of_each_others_files_ipc_or_sockets() {
    attack(async {
        let addr = server().await;
        let mut a = Client::connect(addr).await;
        let mut b = Client::connect(addr).await;
        let sa = a.open(json!({"language": "python"})).await;
        let sb = b.open(json!({"language": "python"})).await;
        let tag = format!("{:x}", std::process::id() & 0xffff);
        let leave = format!(
            "import ctypes\nfor d in ['/workspace', '/tmp', '/dev/shm']:\n    open(d + '/secret-{tag}', 'w').write('from A')\nlibc = ctypes.CDLL(None, use_errno=True)\nprint('shm', libc.shmget(0x5EC12E7, 4096, 0o1666))"
        );
        let run = a.run(&sa, "python", &leave, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        assert!(!text(&run["result"]["stdout"]).contains("shm -1"), "{run}");

        // While A listens on an abstract unix socket and a loopback port, B looks for all of it.
        let ready = format!("cbr-{tag}");
        let listen = format!(
            "import ctypes, socket, time\nu = socket.socket(socket.AF_UNIX)\nu.bind('\\0cb-attack-{tag}')\nu.listen()\nt = socket.socket()\nt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\nt.bind(('127.0.0.1', 47123))\nt.listen()\nc = socket.socket(socket.AF_UNIX)\nc.connect('\\0cb-attack-{tag}')\nprint('self-connect ok', flush=True)\nctypes.CDLL(None).prctl(15, b'{ready}', 0, 0, 0)\ntime.sleep(3)"
        );
        let look = format!(
            "import ctypes, errno, os, socket\nlibc = ctypes.CDLL(None, use_errno=True)\nfound = []\nfor d in ['/workspace', '/tmp', '/dev/shm']:\n    for root, dirs, files in os.walk(d):\n        found += [f for f in files if 'secret' in f]\nif libc.shmget(0x5EC12E7, 0, 0) != -1:\n    found.append('shm')\nfor family, address in [(socket.AF_UNIX, '\\0cb-attack-{tag}'), (socket.AF_INET, ('127.0.0.1', 47123))]:\n    s = socket.socket(family)\n    try:\n        s.connect(address)\n        found.append(repr(address))\n    except OSError as e:\n        pass\nprint('found', found)"
        );
        let (held, looked) = tokio::join!(a.run(&sa, "python", &listen, RUN_MS), async {
            wait_for_host_process(&ready).await;
            b.run(&sb, "python", &look, RUN_MS).await
        });
        assert!(
            text(&held["result"]["stdout"]).starts_with("self-connect ok\n"),
            "{held}"
        );
        assert_eq!(text(&looked["result"]["stdout"]), "found []\n", "{looked}");
        let listed = b
            .exec(
                &sb,
                json!({"type": "list_files", "path": ".", "recursive": true}),
            )
            .await;
        assert_eq!(listed["result"]["entries"], json!([]), "{listed}");
        let read = b
            .exec(
                &sb,
                json!({"type": "read_file", "path": format!("secret-{tag}")}),
            )
            .await;
        assert_refused(&read, "another session's file");
        a.close(sa).await;
        b.close(sb).await;
    });
}

#[test]
fn another_callers_session_is_not_found() {
    attack(async {
        let server = start(ServerConfig {
            auth: AuthConfig {
                tokens: vec![
                    TokenConfig {
                        token: "token-alice".into(),
                        caller: "alice".into(),
                    },
                    TokenConfig {
                        token: "token-mallory".into(),
                        caller: "mallory".into(),
                    },
                ],
            },
            ..local_config()
        })
        .await;
        let url = format!("ws://{}/ws/jsonrpc", server.local_addr());
        let mut alice = Client::connect_to(&url, Some("token-alice"))
            .await
            .expect("alice connects");
        let mut mallory = Client::connect_to(&url, Some("token-mallory"))
            .await
            .expect("mallory connects");
        match Client::connect_to(&url, None).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401)
            }
            Err(other) => panic!("expected HTTP 401, got {other}"),
            Ok(_) => panic!("connected without a token"),
        }
        let s = alice.open(json!({"language": "python"})).await;
        let written = alice
            .exec(
                &s,
                json!({"type": "write_file", "path": "mine.txt", "content": "alice's"}),
            )
            .await;
        assert_eq!(written["success"], true);
        let queued = alice
            .ok(
                "execution.run",
                json!({"language": "python", "code": "print(1)"}),
            )
            .await;

        let commands = [
            json!({"type": "execute", "code": "print(open('/workspace/mine.txt').read())"}),
            json!({"type": "shell", "command": "cat", "args": ["mine.txt"]}),
            json!({"type": "read_file", "path": "mine.txt"}),
            json!({"type": "write_file", "path": "mine.txt", "content": "mallory's"}),
            json!({"type": "delete_file", "path": "mine.txt"}),
            json!({"type": "copy_file", "source": "mine.txt", "destination": "x.txt"}),
            json!({"type": "list_files", "path": "."}),
            json!({"type": "create_dir", "path": "d"}),
            json!({"type": "diff", "original_path": "mine.txt", "modified_content": "x"}),
            json!({"type": "apply_patch", "patch": "--- a/mine.txt\n+++ b/mine.txt\n@@ -1 +1 @@\n-alice's\n+mallory's\n"}),
        ];
        for id in [s.id.as_str(), s.box_name.as_str()] {
            for command in &commands {
                let error = mallory
                    .err(
                        "session.execute",
                        json!({"sessionId": id, "command": command}),
                    )
                    .await;
                assert_eq!(error["code"], -32001, "{command}: {error}");
            }
            let error = mallory.err("session.close", json!({"sessionId": id})).await;
            assert_eq!(error["code"], -32001, "{error}");
        }
        let error = mallory
            .err(
                "execution.status",
                json!({"executionId": queued["executionId"]}),
            )
            .await;
        assert_eq!(error["code"], -32001);
        let listed = mallory.ok("session.list", json!({})).await;
        assert_eq!(listed["sessions"], json!([]), "{listed}");

        let read = alice
            .exec(&s, json!({"type": "read_file", "path": "mine.txt"}))
            .await;
        assert_eq!(read["result"]["content"], "alice's", "{read}");
        alice.still_works(&s).await;
        alice.close(s).await;
        server.shutdown().await.expect("shutdown");
    });
}

#[test]
fn another_caller_cannot_cancel_a_running_command() {
    attack(async {
        let engine = engine();
        let alice = common::caller("alice-cancel");
        let mallory = common::caller("mallory-cancel");
        let mine = common::open_session(engine, &alice, "python").await;
        let theirs = common::open_session(engine, &mallory, "python").await;
        let box_name = engine.list_sessions(&alice)[0].box_name.clone();
        let command = serde_json::from_value(json!({"type": "shell", "command": "sh", "args": ["-c", "echo started; sleep 2; echo finished"], "timeoutMs": 20000})).expect("valid command");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (out, ()) = tokio::join!(
            engine.execute_command(&alice, &mine, command, Some(tx)),
            async {
                let first = rx.recv().await.expect("alice's command prints first");
                assert_eq!(String::from_utf8_lossy(&first.data), "started\n");
                // Alice's session id, her box's name, and mallory's own idle session.
                for id in [mine.as_str(), box_name.as_str()] {
                    let refused = engine.cancel_command(&mallory, id);
                    assert!(
                        matches!(
                            refused,
                            Err(codebeaker_engine::EngineError::SessionNotFound(_))
                        ),
                        "{id}: {refused:?}"
                    );
                }
                assert!(!engine
                    .cancel_command(&mallory, &theirs)
                    .expect("mallory's own session"));
            }
        );
        let out = out.expect("alice's command");
        let result = serde_json::to_value(&out.result).expect("a result as JSON");
        assert!(out.success, "alice's command ran to its end: {result}");
        assert_eq!(result["stdout"], "started\nfinished\n", "{result}");
        engine
            .close_session(&mallory, &theirs)
            .await
            .expect("close");
        engine.close_session(&alice, &mine).await.expect("close");
    });
}

/// Sends one piece of stdin (or, with `None`, the close) and waits for the box's answer.
async fn feed(
    tx: &tokio::sync::mpsc::Sender<codebeaker_sandbox::StdinEvent>,
    data: Option<&str>,
) -> Result<(), codebeaker_sandbox::SandboxError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let event = match data {
        Some(data) => codebeaker_sandbox::StdinEvent::Data(data.as_bytes().to_vec(), reply),
        None => codebeaker_sandbox::StdinEvent::Close(reply),
    };
    tx.send(event).await.expect("the command takes stdin");
    answer.await.expect("the box answers")
}

#[test]
fn another_caller_cannot_feed_a_running_commands_stdin() {
    attack(async {
        let engine = engine();
        let alice = common::caller("alice-stdin");
        let mallory = common::caller("mallory-stdin");
        let mine = common::open_session(engine, &alice, "python").await;
        let theirs = common::open_session(engine, &mallory, "python").await;
        let box_name = engine.list_sessions(&alice)[0].box_name.clone();
        let cat = || -> codebeaker_protocol::commands::Command {
            serde_json::from_value(json!({"type": "shell", "command": "cat", "timeoutMs": 20000}))
                .expect("valid command")
        };
        let (alice_in, alice_rx) = tokio::sync::mpsc::channel(4);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (_cancel, never) = tokio::sync::oneshot::channel();
        let (out, ()) = tokio::join!(
            engine.execute_command_with_stdin(&alice, &mine, cat(), Some(tx), never, alice_rx),
            async {
                feed(&alice_in, Some("alice\n"))
                    .await
                    .expect("alice's input");
                let first = rx.recv().await.expect("alice's cat echoes");
                assert_eq!(String::from_utf8_lossy(&first.data), "alice\n");
                // Alice's session id and her box's name: mallory's command with stdin is not
                // started there, and its stdin channel goes nowhere.
                for id in [mine.as_str(), box_name.as_str()] {
                    let (mallory_in, mallory_rx) = tokio::sync::mpsc::channel(4);
                    let (_cancel, never) = tokio::sync::oneshot::channel();
                    let refused = engine
                        .execute_command_with_stdin(&mallory, id, cat(), None, never, mallory_rx)
                        .await;
                    assert!(
                        matches!(
                            refused,
                            Err(codebeaker_engine::EngineError::SessionNotFound(_))
                        ),
                        "{id}: {refused:?}"
                    );
                    let (reply, _) = tokio::sync::oneshot::channel();
                    let event = codebeaker_sandbox::StdinEvent::Data(b"mallory\n".to_vec(), reply);
                    assert!(
                        mallory_in.send(event).await.is_err(),
                        "{id}: stdin went nowhere"
                    );
                }
                // Mallory's own command with stdin gets her input only.
                let (mallory_in, mallory_rx) = tokio::sync::mpsc::channel(4);
                let (_cancel, never) = tokio::sync::oneshot::channel();
                let (own, ()) = tokio::join!(
                    engine.execute_command_with_stdin(
                        &mallory,
                        &theirs,
                        cat(),
                        None,
                        never,
                        mallory_rx
                    ),
                    async {
                        feed(&mallory_in, Some("mallory\n"))
                            .await
                            .expect("her own input");
                        feed(&mallory_in, None).await.expect("her own close");
                    }
                );
                let own = serde_json::to_value(&own.expect("mallory's command").result)
                    .expect("a result as JSON");
                assert_eq!(own["stdout"], "mallory\n", "{own}");
                feed(&alice_in, None).await.expect("alice closes");
            }
        );
        let out = out.expect("alice's command");
        let result = serde_json::to_value(&out.result).expect("a result as JSON");
        assert!(out.success, "alice's command ran to its end: {result}");
        assert_eq!(
            result["stdout"], "alice\n",
            "only alice's input reached her cat: {result}"
        );
        engine
            .close_session(&mallory, &theirs)
            .await
            .expect("close");
        engine.close_session(&alice, &mine).await.expect("close");
    });
}
