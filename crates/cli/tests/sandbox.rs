//! The native sandbox, exercised with real programs in real boxes: every containment promise of
//! a box ends in its typed status and leaves the host and the box's neighbours untouched.

use codebeaker_sandbox::{
    BoxLimits, BoxSpec, FileRoot, RunSpec, Sandbox, SandboxBox, StdinEvent, Verdict, MIB,
};
use std::time::Duration;

use crate::common::{run, sandbox, text};

async fn new_box(sb: &Sandbox, limits: BoxLimits) -> SandboxBox {
    sb.create_box(&BoxSpec {
        limits,
        binds: Vec::new(),
    })
    .await
    .expect("create box")
}

fn sh(script: &str) -> RunSpec {
    RunSpec::new(["/bin/sh", "-c", script])
}

fn py(code: &str) -> RunSpec {
    RunSpec::new(["/usr/bin/python3", "-c", code])
}

/// Destroys the box and checks that its cgroup and its processes are gone.
async fn destroy_and_check(sb: &Sandbox, bx: SandboxBox) {
    let name = bx.name().to_string();
    bx.destroy().await.expect("destroy");
    assert!(
        !sb.own_boxes().contains(&name),
        "cgroup of {name} left behind"
    );
}

/// Processes visible in the box besides the init and the probe itself.
async fn leftover_processes(bx: &SandboxBox) -> String {
    let out = bx
        .run(&sh("for p in /proc/[0-9]*; do n=${p#/proc/}; [ \"$n\" = 1 ] || [ \"$n\" = $$ ] || echo \"$n $(cat $p/comm 2>/dev/null)\"; done"))
        .await
        .expect("run");
    text(&out.stdout)
}

#[test]
fn plain_run_is_isolated_and_unprivileged() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let out = bx
        .run(&sh("id -u; id -g; hostname; echo \"$HOME\"; env | grep -c CARGO || true; ls /; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /home /root 2>&1 | head -2"))
        .await
        .unwrap();
        assert_eq!(out.status, Verdict::Ok, "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], "1000", "programs run as the sandbox uid");
        assert_eq!(lines[1], "1000");
        assert_eq!(lines[2], "codebeaker", "own UTS namespace");
        assert_eq!(lines[3], "/tmp");
        assert_eq!(lines[4], "0", "no host environment variable leaks in");
        assert!(
            !stdout.contains("home\n") && !stdout.contains("root\n"),
            "/home and /root are not there: {stdout}"
        );
        assert!(stdout.contains("No such file"), "{stdout}");
        assert!(out.exit_code == Some(0) && out.signal.is_none());
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn infinite_loop_times_out_promptly() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let mut cmd = py("while True: pass");
        cmd.limits.wall_time = Duration::from_millis(700);
        let out = bx.run(&cmd).await.unwrap();
        assert_eq!(out.status, Verdict::Timeout);
        assert!(out.timed_out());
        assert!(out.wall_time >= Duration::from_millis(700));
        eprintln!(
            "timeout overshoot: {:?}",
            out.wall_time - Duration::from_millis(700)
        );
        // Generous bound: the promise is "within 100 ms", reported above; only a gross failure fails.
        assert!(
            out.wall_time < Duration::from_millis(700 + 1000),
            "ended after {:?}",
            out.wall_time
        );
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn cpu_time_limit_holds() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let mut cmd = py("while True: pass");
        cmd.limits.wall_time = Duration::from_secs(10);
        cmd.limits.cpu_time = Duration::from_secs(1);
        let out = bx.run(&cmd).await.unwrap();
        assert_eq!(out.status, Verdict::Timeout, "{out:?}");
        assert!(out.message.unwrap().contains("CPU"));
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    run(async {
        let sb = sandbox();
        let limits = BoxLimits {
            memory_bytes: 128 * MIB,
            ..BoxLimits::default()
        };
        let bx = new_box(sb, limits).await;
        let out = bx
            .run(&py("b = b'x' * (1 << 30)\nprint(len(b))"))
            .await
            .unwrap();
        assert_eq!(out.status, Verdict::MemoryLimit, "{out:?}");
        assert!(out.oom_killed());
        // The box survives its program's death.
        let again = bx.run(&sh("echo alive")).await.unwrap();
        assert_eq!(text(&again.stdout), "alive\n");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn per_run_memory_limit_applies_and_is_restored() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let mut cmd = py("b = b'x' * (200 << 20)\nprint(len(b))");
        cmd.limits.memory_bytes = Some(64 * MIB);
        assert_eq!(bx.run(&cmd).await.unwrap().status, Verdict::MemoryLimit);
        let out = bx
            .run(&py("b = b'x' * (200 << 20)\nprint(len(b))"))
            .await
            .unwrap();
        assert_eq!(
            out.status,
            Verdict::Ok,
            "the box's own 512 MiB limit is back: {out:?}"
        );
        assert!(out.peak_memory_bytes.unwrap() >= 200 * MIB);
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn fork_bombs_are_contained() {
    run(async {
        let sb = sandbox();
        let limits = BoxLimits {
            max_processes: 32,
            ..BoxLimits::default()
        };
        for bomb in [
        sh(":(){ :|:& };:"),
        py("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"),
    ] {
        let bx = new_box(sb, limits).await;
        let mut cmd = bomb;
        cmd.limits.wall_time = Duration::from_secs(2);
        let out = bx.run(&cmd).await.unwrap();
        assert!(
            matches!(out.status, Verdict::Timeout | Verdict::RuntimeError | Verdict::Killed),
            "{:?}",
            out.status
        );
        assert_eq!(leftover_processes(&bx).await, "", "the bomb is gone after the run");
        destroy_and_check(sb, bx).await;
        // A new box works as usual.
        let bx = new_box(sb, limits).await;
        assert_eq!(bx.run(&sh("echo ok")).await.unwrap().status, Verdict::Ok);
        destroy_and_check(sb, bx).await;
    }
    });
}

#[test]
fn output_flood_is_cut_at_the_limit() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let out = bx
            .run(&py("import sys\nsys.stdout.write('A' * (100 << 20))"))
            .await
            .unwrap();
        assert_eq!(out.status, Verdict::OutputLimit);
        assert!(out.truncated);
        assert_eq!(
            out.stdout.len() as u64,
            codebeaker_sandbox::RunLimits::default().output_bytes
        );
        assert!(
            out.stdout.iter().all(|&b| b == b'A'),
            "the first bytes are kept"
        );
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn non_utf8_output_and_stdin_survive() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let mut cmd = sh("cat; printf '\\377\\376' >&2");
        cmd.stdin = vec![0, 1, 0xff, b'x'];
        let out = bx.run(&cmd).await.unwrap();
        assert_eq!(out.stdout, vec![0, 1, 0xff, b'x']);
        assert_eq!(out.stderr, vec![0xff, 0xfe]);
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn network_is_loopback_only() {
    run(async {
        let sb = sandbox();
        let host_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = host_listener.local_addr().unwrap().port();
        let bx = new_box(sb, BoxLimits::default()).await;
        let code = format!(
            "import socket\n\
         for addr in [('1.1.1.1', 53), ('127.0.0.1', {port})]:\n\
         \x20   s = socket.socket(); s.settimeout(2)\n\
         \x20   try:\n\
         \x20       s.connect(addr); print('connected', addr)\n\
         \x20   except OSError as e:\n\
         \x20       print('failed', addr[0], type(e).__name__)\n\
         srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()\n\
         c = socket.create_connection(srv.getsockname()); print('loopback ok')\n"
        );
        let out = bx.run(&py(&code)).await.unwrap();
        let stdout = text(&out.stdout);
        assert!(!stdout.contains("connected"), "{stdout}");
        assert!(
            stdout.contains("failed 1.1.1.1") && stdout.contains("failed 127.0.0.1"),
            "{stdout}{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("loopback ok"),
            "the box's own loopback works: {stdout}"
        );
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn host_files_are_out_of_reach() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let shadow = bx.run(&sh("cat /etc/shadow")).await.unwrap();
        assert_eq!(shadow.status, Verdict::RuntimeError);
        assert!(
            text(&shadow.stderr).contains("No such file"),
            "{}",
            text(&shadow.stderr)
        );
        let usr = bx.run(&sh("echo x > /usr/evil")).await.unwrap();
        assert_eq!(usr.status, Verdict::RuntimeError);
        assert!(
            text(&usr.stderr).contains("Read-only file system")
                || text(&usr.stderr).contains("Permission denied")
        );
        let etc = bx.run(&sh("echo x > /etc/passwd")).await.unwrap();
        assert_eq!(etc.status, Verdict::RuntimeError);
        assert!(!std::path::Path::new("/usr/evil").exists());
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn privileged_operations_are_refused() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let code = "import ctypes, os\n\
                libc = ctypes.CDLL(None, use_errno=True)\n\
                for name, call in [('unshare', lambda: libc.unshare(0x10000000)), ('mount', lambda: libc.mount(b'x', b'/tmp', b'tmpfs', 0, None)), ('ptrace', lambda: libc.ptrace(16, 1, None, None)), ('keyctl', lambda: libc.syscall(250, 0, 0, 0, 0)), ('bpf', lambda: libc.syscall(321, 0, 0, 0)), ('io_uring_setup', lambda: libc.syscall(425, 1, 0)), ('userfaultfd', lambda: libc.syscall(323, 0)), ('netlink', lambda: libc.socket(16, 3, 0))]:\n\
                \x20   r = call(); print(name, r, ctypes.get_errno())\n";
        let out = bx.run(&py(code)).await.unwrap();
        assert_eq!(out.status, Verdict::Ok, "{}", text(&out.stderr));
        for line in text(&out.stdout).lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(parts[1], "-1", "{line}");
            assert_eq!(parts[2], libc::EPERM.to_string(), "{line}");
        }
        assert_eq!(text(&out.stdout).lines().count(), 8);
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn filling_the_workspace_hits_enospc_at_the_cap() {
    run(async {
        let sb = sandbox();
        let limits = BoxLimits {
            workspace_bytes: 8 * MIB,
            ..BoxLimits::default()
        };
        let bx = new_box(sb, limits).await;
        let out = bx
            .run(&sh(
                "head -c 16777216 /dev/zero > /workspace/big; echo rc=$?; du -k /workspace/big",
            ))
            .await
            .unwrap();
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(all.contains("No space left on device"), "{all}");
        let kib: u64 = text(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(kib <= 8 * 1024, "{kib} KiB written");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn daemons_do_not_outlive_the_run() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let out = bx
            .run(&sh(
                "(setsid sh -c 'sleep 300 & sleep 300' &) ; (sleep 300 &) ; echo started",
            ))
            .await
            .unwrap();
        assert_eq!(out.status, Verdict::Ok);
        assert_eq!(text(&out.stdout), "started\n");
        assert_eq!(leftover_processes(&bx).await, "");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn stopped_program_still_times_out() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let mut cmd = sh("kill -STOP $$; echo never");
        cmd.limits.wall_time = Duration::from_millis(500);
        let out = bx.run(&cmd).await.unwrap();
        assert_eq!(out.status, Verdict::Timeout);
        assert_eq!(text(&out.stdout), "");
        assert_eq!(leftover_processes(&bx).await, "");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn boxes_do_not_see_each_other() {
    run(async {
        let sb = sandbox();
        let a = new_box(sb, BoxLimits::default()).await;
        let b = new_box(sb, BoxLimits::default()).await;
        let out = a.run(&sh("echo secret > /workspace/a.txt; echo secret > /tmp/a.txt; echo secret > /dev/shm/a.txt")).await.unwrap();
        assert_eq!(out.status, Verdict::Ok, "{}", text(&out.stderr));
        let out = b
            .run(&sh(
                "ls /workspace /tmp /dev/shm; cat /workspace/a.txt /tmp/a.txt",
            ))
            .await
            .unwrap();
        assert_eq!(out.status, Verdict::RuntimeError);
        assert!(!text(&out.stdout).contains("a.txt"));
        assert_eq!(
            leftover_processes(&b).await,
            "",
            "only the box's init and the probe are visible"
        );
        let init = b.run(&sh("cat /proc/1/comm")).await.unwrap();
        assert_eq!(
            text(&init.stdout),
            "codebeaker\n",
            "PID 1 is the box's own init"
        );
        destroy_and_check(sb, a).await;
        destroy_and_check(sb, b).await;
    });
}

#[test]
fn file_operations_stay_in_the_workspace() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        bx.write_file(
            FileRoot::Workspace,
            "dir/sub/hello.txt",
            b"hi\xff".to_vec(),
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            bx.read_file(FileRoot::Workspace, "dir/sub/hello.txt", 100)
                .await
                .unwrap(),
            b"hi\xff"
        );
        bx.run(&sh(
            "ln -s /etc /workspace/etc; ln -s /proc/1/root /workspace/root1",
        ))
        .await
        .unwrap();
        for path in [
            "etc/passwd",
            "root1/etc/passwd",
            "../etc/passwd",
            "dir/../../etc/passwd",
        ] {
            assert!(
                bx.read_file(FileRoot::Workspace, path, 1 << 20)
                    .await
                    .is_err(),
                "{path} must be refused"
            );
            assert!(
                bx.write_file(FileRoot::Workspace, path, b"x".to_vec(), false)
                    .await
                    .is_err(),
                "{path} must be refused"
            );
        }
        assert!(
            bx.read_file(FileRoot::Workspace, "dir/sub/hello.txt", 2)
                .await
                .is_err(),
            "larger than max"
        );
        let out = bx
            .run(&sh("stat -c '%u %a' /workspace/dir/sub/hello.txt"))
            .await
            .unwrap();
        assert_eq!(
            text(&out.stdout),
            "1000 644\n",
            "files belong to the sandbox user"
        );
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn snippet_descriptors_carry_input_and_result() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let mut cmd = py("import json, os\nd = json.load(os.fdopen(3))\nos.fdopen(4, 'w').write(json.dumps({'out': d['v'] * 2}))\nprint('stdout is separate')");
        cmd.fd3_input = Some(br#"{"v": 21}"#.to_vec());
        cmd.capture_fd4 = true;
        let out = bx.run(&cmd).await.unwrap();
        assert_eq!(out.status, Verdict::Ok, "{}", text(&out.stderr));
        assert_eq!(out.result.as_deref(), Some(&br#"{"out": 42}"#[..]));
        assert_eq!(text(&out.stdout), "stdout is separate\n");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn exit_codes_signals_and_missing_programs() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let out = bx.run(&sh("exit 3")).await.unwrap();
        assert_eq!(
            (out.status, out.exit_code),
            (Verdict::RuntimeError, Some(3))
        );
        let out = bx.run(&sh("kill -SEGV $$")).await.unwrap();
        assert_eq!(
            (out.status, out.signal),
            (Verdict::RuntimeError, Some(libc::SIGSEGV))
        );
        let out = bx.run(&RunSpec::new(["no-such-program"])).await.unwrap();
        assert_eq!(
            (out.status, out.exit_code),
            (Verdict::RuntimeError, Some(127))
        );
        assert!(text(&out.stderr).contains("command not found"));
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn streaming_delivers_output_while_running() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let out = bx
            .run_streaming(&sh("echo one; sleep 0.2; echo two >&2"), Some(tx))
            .await
            .unwrap();
        let mut chunks = Vec::new();
        while let Ok(c) = rx.try_recv() {
            chunks.push(c);
        }
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(text(&joined), "one\ntwo\n");
        assert_eq!(text(&out.stdout), "one\n");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn cancelled_run_ends_at_once_and_the_box_goes_on() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let mut cmd = sh("echo started; sleep 30; echo never");
        cmd.limits.wall_time = crate::common::patient(Duration::from_secs(60));
        let (output, mut chunks) = tokio::sync::mpsc::unbounded_channel();
        let (cancel, cancelled) = tokio::sync::oneshot::channel();
        let started = std::time::Instant::now();
        let (out, ()) = tokio::join!(bx.run_cancellable(&cmd, Some(output), cancelled), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.send(()).expect("the run still listens");
        });
        let out = out.expect("a cancelled run is an outcome, not an error");
        let took = started.elapsed();
        assert_eq!(out.status, Verdict::Killed, "{out:?}");
        assert_eq!(out.message.as_deref(), Some("cancelled"));
        assert!(
            took < crate::common::patient(Duration::from_secs(3)),
            "cancel took {took:?}"
        );
        assert_eq!(text(&out.stdout), "started\n");
        let streamed = chunks
            .recv()
            .await
            .expect("output streamed before the cancel");
        assert_eq!(text(&streamed.data), "started\n");

        // The box runs the next command normally, and nothing of the cancelled one is left.
        let next = bx.run(&sh("echo next")).await.expect("run after cancel");
        assert_eq!(next.status, Verdict::Ok, "{}", text(&next.stderr));
        assert_eq!(text(&next.stdout), "next\n");
        assert_eq!(leftover_processes(&bx).await, "");
        destroy_and_check(sb, bx).await;
    });
}

/// Sends one stdin event and waits for the box's answer.
async fn send_stdin(
    tx: &tokio::sync::mpsc::Sender<StdinEvent>,
    data: Option<&[u8]>,
) -> Result<(), codebeaker_sandbox::SandboxError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let event = match data {
        Some(data) => StdinEvent::Data(data.to_vec(), reply),
        None => StdinEvent::Close(reply),
    };
    tx.send(event).await.expect("the run takes stdin");
    answer.await.expect("the run answers")
}

#[test]
fn stdin_sent_during_the_run_reaches_the_program_in_order() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let mut cmd = RunSpec::new(["cat"]);
        cmd.stdin = b"zero\n".to_vec();
        cmd.limits.wall_time = crate::common::patient(Duration::from_secs(30));
        let (output, mut chunks) = tokio::sync::mpsc::unbounded_channel();
        let (_cancel, cancelled) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let started = std::time::Instant::now();
        let (out, ()) = tokio::join!(
            bx.run_with_stdin(&cmd, Some(output), cancelled, Some(rx)),
            async {
                let mut seen = String::new();
                for piece in ["one\n", "two\n"] {
                    send_stdin(&tx, Some(piece.as_bytes()))
                        .await
                        .expect("taken");
                    // cat echoes each piece before the next is sent: the pipe stays open between.
                    while !seen.ends_with(piece) {
                        let chunk = chunks.recv().await.expect("echo streamed");
                        seen.push_str(&text(&chunk.data));
                    }
                }
                assert_eq!(seen, "zero\none\ntwo\n");
                send_stdin(&tx, None).await.expect("closed");
                // Input after the close is refused: by the box, or, once cat has ended and the
                // run is over, by the channel no one reads any more.
                let (reply, answer) = tokio::sync::oneshot::channel();
                if tx
                    .send(StdinEvent::Data(b"late\n".to_vec(), reply))
                    .await
                    .is_ok()
                {
                    let refused = answer.await.expect("the run answers");
                    assert!(refused.is_err(), "input after close is refused");
                }
            }
        );
        let out = out.expect("run");
        assert_eq!(out.status, Verdict::Ok, "{out:?}");
        assert_eq!(text(&out.stdout), "zero\none\ntwo\n");
        assert!(
            started.elapsed() < crate::common::patient(Duration::from_secs(10)),
            "cat ended on close"
        );

        // A run whose stdin senders are all dropped sees its stdin closed, and the box goes on.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (_cancel, cancelled) = tokio::sync::oneshot::channel();
        drop(tx);
        let out = bx
            .run_with_stdin(&sh("cat; echo after"), None, cancelled, Some(rx))
            .await
            .expect("run");
        assert_eq!(
            text(&out.stdout),
            "after\n",
            "a dropped sender closes stdin"
        );
        let next = bx.run(&sh("echo next")).await.expect("run after");
        assert_eq!(text(&next.stdout), "next\n");
        assert_eq!(leftover_processes(&bx).await, "");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn large_stdin_and_streamed_output_cross_without_blocking_each_other() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        // cat echoes megabytes while more megabytes come in: the box blocks on sending output
        // until it is read, so the host must read while its input goes out.
        let mut cmd = RunSpec::new(["cat"]);
        cmd.limits.wall_time = crate::common::patient(Duration::from_secs(30));
        cmd.limits.output_bytes = 16 * MIB;
        let (output, mut chunks) = tokio::sync::mpsc::unbounded_channel();
        let (_cancel, cancelled) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let piece = vec![b'y'; 2 * MIB as usize];
        let (out, ()) = tokio::join!(
            bx.run_with_stdin(&cmd, Some(output), cancelled, Some(rx)),
            async {
                for _ in 0..4 {
                    // Past the bound of unread input the piece is refused: send it again once
                    // cat has read more.
                    let mut tries = 0;
                    while let Err(e) = send_stdin(&tx, Some(&piece)).await {
                        tries += 1;
                        assert!(tries < 500, "cat never read its input: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                send_stdin(&tx, None).await.expect("closed");
            }
        );
        let out = out.expect("run");
        assert_eq!(out.status, Verdict::Ok, "{:?}", out.message);
        assert_eq!(out.stdout.len(), 8 * MIB as usize);
        let mut streamed = 0;
        while let Ok(chunk) = chunks.try_recv() {
            streamed += chunk.data.len();
        }
        assert_eq!(streamed, 8 * MIB as usize);
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn stdin_past_the_bound_is_refused_and_late_stdin_leaves_the_box_in_step() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        // The program never reads its stdin: what is sent waits in the box, up to the bound.
        let mut cmd = sh("sleep 30");
        cmd.limits.wall_time = crate::common::patient(Duration::from_secs(60));
        let (cancel, cancelled) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (out, ()) = tokio::join!(bx.run_with_stdin(&cmd, None, cancelled, Some(rx)), async {
            let piece = vec![b'x'; 3 * 1024 * 1024];
            send_stdin(&tx, Some(&piece))
                .await
                .expect("under the bound");
            let refused = send_stdin(&tx, Some(&piece))
                .await
                .expect_err("past the bound");
            assert!(
                refused.to_string().contains("has not read"),
                "the refusal says why: {refused}"
            );
            cancel.send(()).expect("the run still listens");
        });
        let out = out.expect("run");
        assert_eq!(out.status, Verdict::Killed, "{out:?}");

        // Input that comes after the program ended is refused, and the next request gets its own
        // answer.
        let (_cancel, cancelled) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send(StdinEvent::Data(b"late".to_vec(), reply))
            .await
            .expect("queued");
        let out = bx
            .run_with_stdin(
                &RunSpec::new(["no-such-program"]),
                None,
                cancelled,
                Some(rx),
            )
            .await
            .expect("run");
        assert_eq!(out.exit_code, Some(127), "{out:?}");
        assert!(
            answer.await.expect("answered").is_err(),
            "late input refused"
        );
        bx.write_file(FileRoot::Workspace, "f.txt", b"in step".to_vec(), false)
            .await
            .expect("write after stray stdin");
        let next = bx.run(&sh("cat f.txt")).await.expect("run");
        assert_eq!(text(&next.stdout), "in step");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn cancel_that_comes_after_the_run_leaves_the_box_in_step() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        // A program that does not exist ends before the box ever looks for a cancel, so this
        // cancel reaches the box between requests; its answer must not become the next reply.
        let (cancel, cancelled) = tokio::sync::oneshot::channel();
        cancel.send(()).expect("receiver alive");
        let out = bx
            .run_cancellable(&RunSpec::new(["no-such-program"]), None, cancelled)
            .await
            .expect("run");
        assert_eq!(out.exit_code, Some(127), "{out:?}");
        bx.write_file(FileRoot::Workspace, "f.txt", b"in step".to_vec(), false)
            .await
            .expect("write after a stray cancel");
        let next = bx.run(&sh("cat f.txt")).await.expect("run");
        assert_eq!(text(&next.stdout), "in step");
        // A cancel sender dropped without sending leaves the run alone.
        let (dropped, never) = tokio::sync::oneshot::channel::<()>();
        drop(dropped);
        let out = bx
            .run_cancellable(&sh("sleep 0.3; echo done"), None, never)
            .await
            .expect("run");
        assert_eq!(out.status, Verdict::Ok);
        assert_eq!(text(&out.stdout), "done\n");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn directory_operations_never_follow_symlinks() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        bx.create_dir(FileRoot::Workspace, "a/b/c", true)
            .await
            .unwrap();
        assert!(
            bx.create_dir(FileRoot::Workspace, "x/y", false)
                .await
                .is_err(),
            "parents need recursive"
        );
        bx.write_file(FileRoot::Workspace, "a/b/c/f.txt", b"one".to_vec(), false)
            .await
            .unwrap();
        bx.append_file(FileRoot::Workspace, "a/b/c/f.txt", b"+two".to_vec())
            .await
            .unwrap();
        assert_eq!(
            bx.read_file(FileRoot::Workspace, "a/b/c/f.txt", 100)
                .await
                .unwrap(),
            b"one+two"
        );
        assert_eq!(
            bx.copy(FileRoot::Workspace, "a/b/c/f.txt", "copy/f2.txt", false)
                .await
                .unwrap(),
            7
        );
        assert!(bx
            .copy(FileRoot::Workspace, "a/b/c/f.txt", "copy/f2.txt", false)
            .await
            .unwrap_err()
            .to_string()
            .contains("overwrite"));
        // A symlink loop, a link to the host's root and a deep tree.
        bx.run(&sh("cd /workspace && ln -s loop loop && ln -s / rootlink && mkdir -p deep && cd deep && for i in $(seq 60); do mkdir d && cd d; done")).await.unwrap();
        let (entries, truncated) = bx
            .list(FileRoot::Workspace, "", true, 100, 10_000)
            .await
            .unwrap();
        assert!(!truncated);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.contains(&"a/b/c/f.txt") && paths.contains(&"copy/f2.txt"),
            "{paths:?}"
        );
        assert!(
            !paths.iter().any(|p| p.starts_with("rootlink/")),
            "symlinks are listed, not followed"
        );
        let link = entries.iter().find(|e| e.path == "rootlink").unwrap();
        assert_eq!(link.kind, codebeaker_sandbox::EntryKind::Symlink);
        let (few, truncated) = bx
            .list(FileRoot::Workspace, "", true, 100, 3)
            .await
            .unwrap();
        assert!(truncated && few.len() == 3);
        assert!(bx.read_file(FileRoot::Workspace, "loop", 10).await.is_err());
        assert!(bx
            .list(FileRoot::Workspace, "rootlink", false, 1, 10)
            .await
            .is_err());
        assert!(
            bx.remove(FileRoot::Workspace, "a", false).await.is_err(),
            "non-empty needs recursive"
        );
        assert!(bx.remove(FileRoot::Workspace, "a", true).await.unwrap());
        assert!(bx.remove(FileRoot::Workspace, "deep", true).await.unwrap());
        assert!(
            bx.remove(FileRoot::Workspace, "rootlink", true)
                .await
                .unwrap(),
            "removes the link only"
        );
        assert!(
            !bx.remove(FileRoot::Workspace, "a", true).await.unwrap(),
            "already gone"
        );
        assert!(
            bx.remove(FileRoot::Workspace, "", true).await.is_err(),
            "the workspace itself stays"
        );
        let out = bx.run(&sh("ls /bin/sh && ls /workspace")).await.unwrap();
        assert_eq!(text(&out.stdout), "/bin/sh\ncopy\nloop\n");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn a_stdin_larger_than_the_box_memory_is_fed_as_the_program_reads() {
    run(async {
        let sb = sandbox();
        let limits = BoxLimits {
            memory_bytes: 48 * MIB,
            ..BoxLimits::default()
        };
        let bx = new_box(sb, limits).await;
        // 96 MiB of stdin into a box of 48 MiB: all of it reaches a program that reads it in
        // pieces, byte for byte and in order.
        let input: Vec<u8> = (0..96 * MIB as usize).map(|i| (i % 251) as u8).collect();
        let expected: String = {
            use sha2::Digest;
            sha2::Sha256::digest(&input)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let mut cmd = py(concat!(
            "import hashlib, sys\n",
            "h = hashlib.sha256()\nn = 0\n",
            "while b := sys.stdin.buffer.read(1 << 16):\n",
            "    h.update(b)\n",
            "    n += len(b)\n",
            "print(n, h.hexdigest())\n",
        ));
        cmd.stdin = input;
        cmd.limits.wall_time = crate::common::patient(Duration::from_secs(60));
        cmd.limits.cpu_time = crate::common::patient(Duration::from_secs(60));
        let out = bx.run(&cmd).await.expect("run");
        assert_eq!(out.status, Verdict::Ok, "{out:?}");
        assert_eq!(text(&out.stdout), format!("{} {expected}\n", 96 * MIB));

        // A program that reads none of a large stdin just ends, and the box goes on.
        let mut cmd = sh("echo ignored");
        cmd.stdin = vec![b'x'; 24 * MIB as usize];
        let out = bx.run(&cmd).await.expect("run");
        assert_eq!(out.status, Verdict::Ok, "{out:?}");
        assert_eq!(text(&out.stdout), "ignored\n");

        // The rest of a large stdin comes before the input sent while the program runs.
        let mut cmd = sh("wc -c");
        cmd.stdin = vec![b'y'; 3 * MIB as usize];
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (_cancel, cancelled) = tokio::sync::oneshot::channel();
        let (out, ()) = tokio::join!(bx.run_with_stdin(&cmd, None, cancelled, Some(rx)), async {
            send_stdin(&tx, Some(b"tail")).await.expect("taken");
            send_stdin(&tx, None).await.expect("closed");
        });
        let out = out.expect("run");
        assert_eq!(out.status, Verdict::Ok, "{out:?}");
        assert_eq!(text(&out.stdout).trim(), (3 * MIB + 4).to_string());
        assert_eq!(leftover_processes(&bx).await, "");
        destroy_and_check(sb, bx).await;
    });
}

#[test]
fn cli_run_feeds_a_large_stdin_and_refuses_one_past_the_bound() {
    // The commands start sandboxes of their own.
    let _shared = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    // 60 MiB on stdin with a 32 MiB memory limit (the box's own processes need some of it on
    // cgroup v2, which counts more kernel memory): the box is fed as the program reads.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'z'; 60 << 20]).unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .args([
            "run",
            "--lang",
            "bash",
            "-c",
            "wc -c",
            "--memory",
            "32M",
            "--timeout",
        ])
        .arg(format!(
            "{}s",
            crate::common::patient(Duration::from_secs(120)).as_secs()
        ))
        .arg(format!("--stdin=@{}", big.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{:?}: {stderr}{}",
        out.status,
        text(&out.stdout)
    );
    assert_eq!(text(&out.stdout).trim(), (60u64 << 20).to_string());
    // Past the bound (64 MiB by default) the run is refused before any box is made, and the
    // error says what the bound is and what to do.
    let huge = dir.path().join("huge");
    std::fs::write(&huge, vec![b'z'; (64 << 20) + 1]).unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .args(["run", "--lang", "bash", "-c", "wc -c"])
        .arg(format!("--stdin=@{}", huge.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("stdin is 67108865 bytes")
            && stderr.contains("limits.max_stdin_bytes")
            && stderr.contains("file in the workspace"),
        "{stderr}"
    );
}
