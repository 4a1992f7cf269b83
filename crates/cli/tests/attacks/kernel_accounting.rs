//! Tenant-isolation attacks: shared kernel accounting. Every box has its own host uid/gid range
//! and its user namespace is owned by the box's own ids, so the kernel's per-user counters (pipe
//! buffers, file descriptors in flight, queued signals, message-queue bytes, inotify instances)
//! are never shared between boxes or charged to host root. While mallory's box holds as much of
//! each as it can, alice's box (and the host) still gets its share.

use super::*;

/// Runs mallory's `hog` (which prints `held` once it holds the resource, then keeps it until its
/// run ends) and, once it holds it, alice's `probe`; returns both runs.
async fn while_held(language: &str, hog: &str, probe: &str) -> (Value, Value) {
    let (mut alice, mut mallory) = two_callers().await;
    let a = alice.open(json!({"language": language})).await;
    let m = mallory.open(json!({"language": language})).await;
    let written = mallory
        .exec(
            &m,
            json!({"type": "write_file", "path": "hog.py", "content": hog}),
        )
        .await;
    assert_eq!(written["success"], true, "{written}");
    let hold = async { mallory.run(&m, "bash", "python3 hog.py", RUN_MS).await };
    let probe_after = async {
        // The hog marks the moment it holds everything with a file in its workspace, which the
        // host cannot see; it also needs under a second. Wait well past that.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        alice.run(&a, "python", probe, RUN_MS).await
    };
    let (held, probed) = tokio::join!(hold, probe_after);
    alice.close(a).await;
    mallory.close(m).await;
    (held, probed)
}

fn hog(body: &str) -> String {
    format!("import ctypes, fcntl, os, signal, socket, sys, time\n{body}\nprint('held', flush=True)\ntime.sleep(5)\n")
}

#[test]
fn boxes_run_under_host_ids_of_their_own() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let a = alice.open(json!({"language": "bash"})).await;
        let m = mallory.open(json!({"language": "bash"})).await;
        let probe = "cat /proc/self/uid_map /proc/self/gid_map";
        let (ra, rm) = tokio::join!(
            alice.run(&a, "bash", probe, RUN_MS),
            mallory.run(&m, "bash", probe, RUN_MS)
        );
        let base = |run: &Value| -> Vec<u32> {
            assert_eq!(run["success"], true, "{run}");
            text(&run["result"]["stdout"])
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
                .collect()
        };
        let (ia, im) = (base(&ra), base(&rm));
        assert_eq!(ia.len(), 2, "{ra}");
        assert_eq!(im.len(), 2, "{rm}");
        assert!(
            ia[0].abs_diff(im[0]) >= 65536 && ia[1].abs_diff(im[1]) >= 65536,
            "two live boxes share host ids: alice {ia:?}, mallory {im:?}"
        );
        alice.close(a).await;
        mallory.close(m).await;
    });
}

#[test]
fn one_box_cannot_shrink_anothers_pipe_buffers() {
    attack(async {
        // 80 pipes of 1 MiB reserve 20480 pages, past the default per-user soft limit (16384
        // pages): were the boxes one user, alice's pipes would be cut to one page and refused a
        // bigger size.
        let hog = hog(
            "pipes = []\nfor _ in range(80):\n    r, w = os.pipe()\n    try:\n        fcntl.fcntl(w, 1031, 1 << 20)\n    except OSError:\n        break\n    pipes.append((r, w))\nprint(len(pipes), flush=True)",
        );
        let probe = "import fcntl, os\nr, w = os.pipe()\nprint(fcntl.fcntl(w, 1032))\nprint(fcntl.fcntl(w, 1031, 1 << 20))";
        let (held, probed) = while_held("python", &hog, probe).await;
        assert!(text(&held["result"]["stdout"]).contains("held"), "{held}");
        assert_eq!(probed["success"], true, "{probed}");
        assert_eq!(
            text(&probed["result"]["stdout"]),
            "65536\n1048576\n",
            "alice's pipes were shrunk by mallory's: {probed}"
        );
    });
}

#[test]
fn one_box_cannot_exhaust_anothers_fd_passing() {
    attack(async {
        // Descriptors in flight (sent over a unix socket, never received) are counted per user
        // against RLIMIT_NOFILE: mallory keeps as many in flight as the kernel lets her.
        let hog = hog(
            "a, b = socket.socketpair()\na.setblocking(False)\nfds = [os.open('/dev/null', os.O_RDONLY) for _ in range(200)]\nsent = 0\ntry:\n    while sent < 100000:\n        socket.send_fds(a, [b'x'], fds)\n        sent += len(fds)\nexcept OSError as e:\n    print('stopped', e.errno, sent, flush=True)",
        );
        let probe = "import os, socket\na, b = socket.socketpair()\nfd = os.open('/dev/null', os.O_RDONLY)\nsocket.send_fds(a, [b'x'], [fd])\nprint('sent')";
        let (held, probed) = while_held("python", &hog, probe).await;
        assert!(text(&held["result"]["stdout"]).contains("held"), "{held}");
        assert_eq!(
            text(&probed["result"]["stdout"]),
            "sent\n",
            "alice could not pass a descriptor while mallory held hers in flight: {probed}"
        );
    });
}

#[test]
fn one_box_cannot_take_anothers_queued_signals() {
    attack(async {
        // Queued real-time signals are counted per user against RLIMIT_SIGPENDING.
        let hog = hog(
            "libc = ctypes.CDLL(None, use_errno=True)\nsig = signal.SIGRTMIN\nsignal.pthread_sigmask(signal.SIG_BLOCK, [sig])\nn = 0\nwhile n < 200000 and libc.sigqueue(os.getpid(), sig, ctypes.c_void_p(0)) == 0:\n    n += 1\nprint('queued', n, flush=True)",
        );
        let probe = "import ctypes, os, signal\nlibc = ctypes.CDLL(None, use_errno=True)\nsig = signal.SIGRTMIN\nsignal.pthread_sigmask(signal.SIG_BLOCK, [sig])\nok = sum(libc.sigqueue(os.getpid(), sig, ctypes.c_void_p(0)) == 0 for _ in range(16))\nprint(ok)";
        let (held, probed) = while_held("python", &hog, probe).await;
        let out = text(&held["result"]["stdout"]);
        assert!(out.contains("held"), "{held}");
        let queued: u64 = out
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(queued <= 1024, "one run queued {queued} signals: {held}");
        assert_eq!(
            text(&probed["result"]["stdout"]),
            "16\n",
            "alice could not queue signals while mallory held hers: {probed}"
        );
    });
}

#[test]
fn message_queues_left_by_one_box_do_not_starve_another() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let a = alice.open(json!({"language": "python"})).await;
        let m = mallory.open(json!({"language": "python"})).await;
        // POSIX message queues outlive the run that made them (they live as long as the box's
        // IPC namespace); their bytes are counted per user against RLIMIT_MSGQUEUE.
        let make = "import ctypes, os\nrt = ctypes.CDLL(None, use_errno=True)\nrt.mq_open.restype = ctypes.c_int\nn = 0\nwhile n < 1000 and rt.mq_open(('/q%d' % n).encode(), os.O_CREAT | os.O_RDWR, 0o600, None) >= 0:\n    n += 1\nprint(n, ctypes.get_errno())";
        let first = mallory.run(&m, "python", make, RUN_MS).await;
        assert_eq!(first["success"], true, "{first}");
        let made: u64 = text(&first["result"]["stdout"])
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(made < 1000, "message queues are unbounded: {first}");
        let probed = alice.run(&a, "python", make, RUN_MS).await;
        let got: u64 = text(&probed["result"]["stdout"])
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            got >= 1,
            "alice could not create a message queue after mallory's run: {probed}"
        );
        alice.close(a).await;
        mallory.close(m).await;
    });
}

#[test]
fn inotify_instances_of_a_box_are_not_host_roots() {
    attack(async {
        let (_alice, mut mallory) = two_callers().await;
        let m = mallory.open(json!({"language": "python"})).await;
        // Mallory takes every inotify instance her box lets her take (or none, where inotify is
        // refused) and holds them; the host's own root must still get one.
        let hog = "import ctypes, time\nlibc = ctypes.CDLL(None, use_errno=True)\nfds = []\nwhile len(fds) < 4096:\n    fd = libc.inotify_init1(0)\n    if fd < 0:\n        break\n    fds.append(fd)\nprint(len(fds), ctypes.get_errno(), flush=True)\ntime.sleep(3)";
        let hold = mallory.run(&m, "python", hog, RUN_MS);
        let host = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            // SAFETY: inotify_init1 returns a new descriptor or -1; it is closed at once.
            let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
            let err = std::io::Error::last_os_error();
            if fd >= 0 {
                // SAFETY: closing the descriptor just made.
                unsafe { libc::close(fd) };
            }
            (fd, err)
        };
        let (held, (fd, err)) = tokio::join!(hold, host);
        assert_eq!(held["success"], true, "{held}");
        let taken: u64 = text(&held["result"]["stdout"])
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(
            taken <= 16,
            "one box took {taken} inotify instances: {held}"
        );
        assert!(
            fd >= 0,
            "host root could not create an inotify instance while a box held its own: {err}"
        );
        mallory.close(m).await;
    });
}
