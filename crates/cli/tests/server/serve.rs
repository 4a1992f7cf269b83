//! `codebeaker serve` as a process: its configuration layers (defaults < file < environment <
//! flags) and a SIGTERM that lets a running command finish, then closes every box.

use super::*;

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
