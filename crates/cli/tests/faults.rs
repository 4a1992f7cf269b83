//! Faults, end to end, with the real `codebeaker` binary: a server killed with SIGKILL in the
//! middle of a load and restarted on the same port; a box whose init is killed from the host; and
//! short runs of `codebeaker load` (with attacks, by duration and by run count) that must end
//! with no protocol error and nothing left behind.
//!
//! Every test starts its own server process (or load process), so the tests share no state; they
//! run alone all the same ([`crate::common::exclusive`]: no other test runs meanwhile), because a
//! sandbox starting up removes the boxes of dead servers, and the first test must see that the
//! restarted server is the one that does.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codebeaker_client::{
    Backend, BackendExt, Backoff, CallOptions, Client, ClientConfig, ClientError,
    CodeBeakerOptions, ExecuteRequest, RuntimeService,
};
use codebeaker_protocol::commands::{Command, ExecuteCommand};
use codebeaker_protocol::methods::{SessionCreateParams, SessionExecuteParams};
use serde_json::{json, Value};

use crate::common::host::{alive, box_exists, box_of, box_pids, boxes_of, census};
use crate::common::{exclusive, run_alone, BIN};

/// Bound of each test: a hang fails instead of blocking CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(150);

/// How fast a call must fail when what it waits for is gone (not at its own timeout).
const FAIL_FAST: Duration = Duration::from_secs(5);

/// Polls `done` every 50 ms for at most `limit`.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Looking at boxes from the host.

/// PID 1 of box `name`: the process of its cgroup whose pid in its innermost namespace is 1.
fn init_of(name: &str) -> i32 {
    for pid in box_pids(name) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:"));
        if nspid.and_then(|l| l.split_whitespace().last()) == Some("1")
            && nspid.is_some_and(|l| l.split_whitespace().count() > 2)
        {
            return pid;
        }
    }
    panic!("box {name} has no init among {:?}", box_pids(name));
}

/// Processes in the boxes' id range that are in a box of `owner` and not zombies.
fn box_processes_of(owner: u32) -> Vec<String> {
    let owner = owner as i32;
    census()
        .processes
        .iter()
        .filter(|p| {
            p.box_name
                .as_deref()
                .and_then(codebeaker_sandbox::census::owner_pid)
                == Some(owner)
                && alive(p.pid)
        })
        .map(|p| format!("{} (uid {})", p.pid, p.uid))
        .collect()
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: sending a signal to a pid this test found; no memory is involved.
    let r = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------------------------
// `codebeaker serve` as a child process.

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
    listener.local_addr().expect("address").port()
}

struct ServeChild {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl ServeChild {
    /// Starts `codebeaker serve --listen 127.0.0.1:<port>` and waits until it answers.
    async fn start(port: u16, log_filter: &str) -> ServeChild {
        let mut child = Process::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--log", log_filter])
            .env("CODEBEAKER_SANDBOX__BOX_POOL_SIZE", "2")
            .env("CODEBEAKER_SANDBOX__ALLOW_DEGRADED", "false")
            .env("CODEBEAKER_SERVER__SHUTDOWN_GRACE_SECS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start codebeaker serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut server = ServeChild {
            child: Some(child),
            log,
        };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            if let Some(status) = server.child().try_wait().expect("try_wait") {
                panic!("codebeaker serve exited with {status}:\n{}", server.log());
            }
            assert!(
                Instant::now() < until,
                "codebeaker serve did not listen within 60 s:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the server process")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server process").id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// SIGKILL, then reap it.
    fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("the server process");
        kill(child.id() as i32, libc::SIGKILL);
        let status = child.wait().expect("wait for the killed server");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }

    /// SIGTERM, and wait (at most 30 s) for a clean exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill(child.id() as i32, libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "codebeaker serve exited with {status}:\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "codebeaker serve did not stop within 30 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        // A test that failed half-way still stops its server (cleanly, so that its boxes go).
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn client_config(url: &str, reconnect_wait: Duration) -> ClientConfig {
    let mut config = ClientConfig::new(url);
    config.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(300),
        multiplier: 2.0,
    };
    config.reconnect_wait = reconnect_wait;
    config
}

fn pool_options(size: usize) -> CodeBeakerOptions {
    CodeBeakerOptions {
        session_pool_size: size,
        enable_auto_cleanup: false,
        default_timeout_ms: 20_000,
        ..CodeBeakerOptions::default()
    }
}

fn python(code: &str) -> ExecuteRequest {
    ExecuteRequest {
        code: code.into(),
        language: "python".into(),
        input: json!({}),
        timeout_ms: Some(20_000),
        ..Default::default()
    }
}

async fn create(
    client: &Client,
    language: &str,
) -> codebeaker_protocol::methods::SessionCreateResult {
    client
        .session_create(SessionCreateParams {
            language: language.into(),
            ..Default::default()
        })
        .await
        .expect("session.create")
}

/// `session.execute` of `code` (a script) with a time limit of `timeout_ms`.
async fn execute(
    client: &Client,
    session_id: &str,
    code: &str,
    timeout_ms: u64,
) -> Result<codebeaker_protocol::methods::SessionExecuteResult, ClientError> {
    let command = Command::Execute(ExecuteCommand {
        code: code.into(),
        timeout_ms: Some(timeout_ms),
        ..Default::default()
    });
    client
        .session_execute(
            SessionExecuteParams {
                session_id: session_id.into(),
                command,
                stream: None,
            },
            CallOptions::with_timeout(Duration::from_millis(timeout_ms) + Duration::from_secs(30)),
        )
        .await
}

/// One call that failed: what, and when it started and ended.
struct Failed {
    error: ClientError,
    started: Instant,
    ended: Instant,
}

// ---------------------------------------------------------------------------------------------

/// The server is SIGKILLed while clients run programs in it. Calls in flight fail at once; the
/// boxes' inits see their sockets close and everything in the boxes dies; the cgroups stay until
/// a new server starts on the host, which removes them; the client reconnects by itself, old
/// sessions are gone (-32001), new ones work, and the runtime service recovers on a new session.
#[test]
fn a_server_killed_mid_load_loses_its_boxes_and_the_restarted_one_cleans_up() {
    run_alone(TEST_TIMEOUT, async {
        let port = free_port();
        let url = format!("ws://127.0.0.1:{port}/ws/jsonrpc");
        let mut first = ServeChild::start(port, "warn").await;
        let old = first.pid();

        // A client that outlives the restart, a runtime service that is idle at the kill, and
        // one under load (on its own connection, which gives up waiting for a link quickly).
        let client = Client::connect(client_config(&url, Duration::from_secs(60)))
            .await
            .expect("connect");
        let idle = RuntimeService::new(Arc::new(client.clone()), pool_options(2)).expect("runtime");
        let warm = idle.execute("result = 1", "python", json!({}), None).await;
        assert!(warm.success, "{:?}", warm.error);
        let session = create(&client, "python").await;
        let reply = execute(&client, &session.session_id, "print('before')", 10_000)
            .await
            .expect("a run before the kill");
        assert!(reply.success, "{:?}", reply.error);

        let load_client = Client::connect(client_config(&url, Duration::from_secs(2)))
            .await
            .expect("connect");
        let busy = RuntimeService::new(Arc::new(load_client), pool_options(6)).expect("runtime");
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..6)
            .map(|i| {
                let (busy, stop, done) = (busy.clone(), Arc::clone(&stop), Arc::clone(&done));
                tokio::spawn(async move {
                    let mut ok = 0;
                    let mut failed = Vec::new();
                    let code = format!("import time\ntime.sleep(0.{})\nresult = {i}", 1 + i);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        match busy.try_execute(python(&code)).await {
                            Ok(r) if r.success => {
                                ok += 1;
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                panic!("a run under load failed: {:?} {:?}", r.status, r.error)
                            }
                            Err(error) => failed.push(Failed {
                                error,
                                started,
                                ended: Instant::now(),
                            }),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        let long = {
            let (client, id) = (client.clone(), session.session_id.clone());
            tokio::spawn(async move {
                let result = execute(&client, &id, "import time\ntime.sleep(30)", 60_000).await;
                (result, Instant::now())
            })
        };
        let loaded = eventually(Duration::from_secs(60), || {
            done.load(Ordering::Relaxed) >= 12
        })
        .await;
        assert!(
            loaded,
            "the load got going ({} runs)",
            done.load(Ordering::Relaxed)
        );

        let boxes = boxes_of(old);
        assert!(boxes.len() >= 3, "the server's boxes: {boxes:?}");
        let pids: Vec<i32> = boxes.iter().flat_map(|b| box_pids(b)).collect();
        assert!(!pids.is_empty(), "the boxes have processes");
        let killed_at = Instant::now();
        first.kill_hard();

        // Calls in flight fail at once, not at their timeouts.
        let (result, ended) = long.await.expect("the long call");
        assert!(
            matches!(result, Err(ClientError::ConnectionLost { .. })),
            "the call in flight fails with ConnectionLost: {result:?}"
        );
        assert!(
            ended - killed_at < FAIL_FAST,
            "it failed after {:?}",
            ended - killed_at
        );
        stop.store(true, Ordering::Relaxed);
        let mut runs_before = 0;
        for worker in workers {
            let (ok, failed) = tokio::time::timeout(Duration::from_secs(20), worker)
                .await
                .expect("a load worker ends")
                .expect("a load worker");
            runs_before += ok;
            for f in failed {
                assert!(
                    f.error.is_transport(),
                    "a load call failed with {}",
                    f.error
                );
                if f.started < killed_at {
                    assert!(
                        f.ended - killed_at < FAIL_FAST,
                        "a call in flight at the kill failed only after {:?}: {}",
                        f.ended - killed_at,
                        f.error
                    );
                }
            }
        }
        assert!(
            runs_before >= 12,
            "the load ran before the kill ({runs_before} runs)"
        );

        // Every process of every box dies: the inits see their sockets close.
        let gone = eventually(Duration::from_secs(10), || pids.iter().all(|&p| !alive(p))).await;
        assert!(
            gone,
            "box processes still alive after the server died: {:?}",
            { pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>() }
        );
        assert_eq!(box_processes_of(old), Vec::<String>::new());
        // The cgroups stay until a CodeBeaker process starts...
        let left = boxes_of(old);
        assert!(
            !left.is_empty(),
            "the dead server's cgroups are still there"
        );

        // ...and the restarted server removes them at start.
        let mut second = ServeChild::start(port, "codebeaker_sandbox=info,warn").await;
        assert_eq!(boxes_of(old), BTreeSet::new(), "cgroups of the dead server");
        let log = second.log();
        for name in &left {
            assert!(
                log.contains(name.as_str()) && log.contains("removed a box left by a dead process"),
                "the new server's log names {name} as removed:\n{log}"
            );
        }

        // The old session died with its server.
        let err = execute(&client, &session.session_id, "print('after')", 10_000)
            .await
            .expect_err("the old session is gone");
        assert!(err.is_session_not_found(), "{err}");
        // New calls succeed on the reconnected link.
        let fresh = create(&client, "python").await;
        let reply = client
            .run_snippet(&fresh.session_id, "result = 6 * 7", json!({}), Some(10_000))
            .await
            .expect("a run after the restart");
        assert!(reply.success, "{:?}", reply.error);
        assert_eq!(reply.result.and_then(|r| r.output), Some(json!(42)));
        assert!(matches!(
            client.status(),
            codebeaker_client::ConnectionStatus::Connected { generation: 2.. }
        ));
        // The runtime service's pooled session is gone too: it recovers on a new one.
        let discards = idle.stats().discards;
        let after = idle.execute("result = 2", "python", json!({}), None).await;
        assert!(after.success, "{:?}", after.error);
        assert_eq!(after.output, Some(json!(2)));
        assert!(!after.session_reused, "a fresh session");
        assert!(
            idle.stats().discards > discards,
            "the dead session was discarded"
        );
        let again = busy.execute("result = 3", "python", json!({}), None).await;
        assert!(
            again.success,
            "the loaded service recovers too: {:?}",
            again.error
        );

        client
            .session_close(&fresh.session_id)
            .await
            .expect("close");
        idle.pool().close().await;
        busy.pool().close().await;
        let new_pid = second.pid();
        second.stop();
        assert_eq!(
            boxes_of(new_pid),
            BTreeSet::new(),
            "a clean stop leaves no box"
        );
    });
}

/// A box's init is killed from the host. The next command on its session fails at once with an
/// error that says so; the session is closed (not listed, -32001 afterwards) and its box
/// destroyed; the same holds for a run in flight; and the runtime service's pool replaces the
/// session, so that its next execution succeeds.
#[test]
fn a_box_whose_init_is_killed_ends_its_session_clearly_and_the_pool_replaces_it() {
    run_alone(TEST_TIMEOUT, async {
        let port = free_port();
        let url = format!("ws://127.0.0.1:{port}/ws/jsonrpc");
        let mut server = ServeChild::start(port, "warn").await;
        let client = Client::connect(client_config(&url, Duration::from_secs(10)))
            .await
            .expect("connect");

        // An idle session.
        let session = create(&client, "python").await;
        let reply = execute(&client, &session.session_id, "print('hi')", 10_000)
            .await
            .expect("a run");
        assert!(reply.success, "{:?}", reply.error);
        let dead_box = box_of(&session.container_id);
        kill(init_of(&dead_box), libc::SIGKILL);
        let started = Instant::now();
        let err = execute(&client, &session.session_id, "print('again')", 10_000)
            .await
            .expect_err("the box is dead");
        assert!(
            started.elapsed() < FAIL_FAST,
            "it took {:?}",
            started.elapsed()
        );
        assert_box_died(&err, &session.session_id);
        let listed = client.session_list().await.expect("session.list");
        assert!(
            listed
                .sessions
                .iter()
                .all(|s| s.session_id != session.session_id),
            "the session is closed"
        );
        let err = execute(&client, &session.session_id, "print('again')", 10_000)
            .await
            .expect_err("the session is closed");
        assert!(err.is_session_not_found(), "{err}");
        let box_name = dead_box;
        assert!(
            eventually(Duration::from_secs(5), || !box_exists(&box_name)).await,
            "the dead box's cgroup is removed"
        );

        // A run in flight.
        let session = create(&client, "bash").await;
        let running = {
            let (client, id) = (client.clone(), session.session_id.clone());
            tokio::spawn(async move {
                let result = execute(&client, &id, "echo started; sleep 20", 30_000).await;
                (result, Instant::now())
            })
        };
        let box_name = box_of(&session.container_id);
        let sleeping = eventually(Duration::from_secs(10), || {
            box_pids(&box_name).iter().any(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
        })
        .await;
        assert!(sleeping, "the run started");
        let killed_at = Instant::now();
        kill(init_of(&box_name), libc::SIGKILL);
        let (result, ended) = running.await.expect("the running call");
        assert!(
            ended - killed_at < FAIL_FAST,
            "it failed after {:?}",
            ended - killed_at
        );
        assert_box_died(
            &result.expect_err("the box died mid-run"),
            &session.session_id,
        );

        // The pool: its session's box dies while idle; the next execution gets a new session.
        let runtime =
            RuntimeService::new(Arc::new(client.clone()), pool_options(1)).expect("runtime");
        let first = runtime
            .execute("result = 1", "python", json!({}), None)
            .await;
        assert!(first.success, "{:?}", first.error);
        let first_id = first.session_id.clone().expect("a session");
        let listed = client.session_list().await.expect("session.list");
        let pooled = listed
            .sessions
            .iter()
            .find(|s| s.session_id == first_id)
            .expect("the pooled session is listed");
        kill(init_of(&box_of(&pooled.container_id)), libc::SIGKILL);
        let second = runtime
            .execute("result = 2", "python", json!({}), None)
            .await;
        assert!(
            second.success,
            "the pool replaced the dead session: {:?}",
            second.error
        );
        assert_eq!(second.output, Some(json!(2)));
        assert_ne!(second.session_id.as_deref(), Some(first_id.as_str()));
        assert!(runtime.stats().discards >= 1, "{:?}", runtime.stats());
        let third = runtime
            .execute("result = 3", "python", json!({}), None)
            .await;
        assert!(third.success, "{:?}", third.error);
        assert!(third.session_reused, "the replacement is pooled");

        runtime.pool().close().await;
        let pid = server.pid();
        server.stop();
        assert_eq!(boxes_of(pid), BTreeSet::new());
    });
}

/// A dead box's error: `-32001`, saying that the session's box died and the session is closed.
fn assert_box_died(err: &ClientError, session_id: &str) {
    let Some(code) = err.rpc_code() else {
        panic!("expected a JSON-RPC error, got {err}");
    };
    assert_eq!(code, -32001, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(session_id) && message.contains("box died") && message.contains("closed"),
        "the message says what happened: {message}"
    );
}

// ---------------------------------------------------------------------------------------------
// `codebeaker load`, short.

/// Runs `codebeaker load <args> --json` (bounded by `limit`) and returns its report.
fn load(args: &[&str], limit: Duration) -> Value {
    let mut child = Process::new(BIN)
        .arg("load")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start codebeaker load");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= until {
            // SAFETY: signalling our own child; SIGTERM lets it shut its server down.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            panic!(
                "codebeaker load did not finish within {limit:?}:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    eprintln!("{err}");
    assert!(
        status.success(),
        "codebeaker load exited with {status}:\n{err}"
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("the report is JSON ({e}):\n{out}"))
}

fn assert_clean(report: &Value) {
    assert_eq!(report["passed"], json!(true), "{report:#}");
    assert_eq!(
        report["protocolErrors"],
        json!(0),
        "{:#}",
        report["protocolErrorSamples"]
    );
    assert_eq!(
        report["wrongResults"],
        json!(0),
        "{:#}",
        report["wrongResultSamples"]
    );
    let leaks = &report["leaks"];
    for key in ["boxCgroups", "processes", "mounts", "descriptorsLeaked"] {
        assert_eq!(leaks[key], json!(0), "leaked {key}: {leaks:#}");
    }
    assert!(report["memory"]["samples"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
}

/// 20 clients for 10 s with attacks, server in the load process: no protocol error, no wrong
/// result, every attack ended by its limit, nothing left behind.
#[test]
fn a_short_load_with_attacks_has_no_protocol_errors_and_leaves_nothing_behind() {
    let _alone = exclusive();
    let report = load(
        &["--clients", "20", "--duration", "10s", "--attacks"],
        Duration::from_secs(100),
    );
    assert_clean(&report);
    assert!(
        report["runs"].as_u64().is_some_and(|n| n >= 50),
        "{report:#}"
    );
    for status in [
        "ok",
        "runtime_error",
        "timeout",
        "memory_limit",
        "output_limit",
    ] {
        assert!(
            report["outcomes"][status].as_u64().is_some_and(|n| n > 0),
            "no run ended {status}: {:#}",
            report["outcomes"]
        );
    }
    assert!(report["streamedRuns"].as_u64().is_some_and(|n| n > 0));
}

/// Soak mode, short: exactly the runs asked for, then the same checks.
#[test]
fn a_short_soak_stops_after_its_runs_and_leaves_nothing_behind() {
    let _alone = exclusive();
    let report = load(
        &[
            "--clients",
            "8",
            "--runs",
            "150",
            "--attacks",
            "--seed",
            "7",
        ],
        Duration::from_secs(100),
    );
    assert_clean(&report);
    assert_eq!(report["runs"], json!(150), "{report:#}");
    assert_eq!(report["runLimit"], json!(150));
}
