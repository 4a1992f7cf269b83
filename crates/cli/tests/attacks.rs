//! The attack suite ("prove it"): hostile programs and requests, each sent **through the real
//! server** (WebSocket JSON-RPC on 127.0.0.1 over a real engine and real boxes), each asserting the
//! typed outcome it must end in, and then that the host, the server and the other sessions are
//! unharmed ([`unharmed`]):
//!
//! - a canary session, created before any attack, still runs `print(6 * 7)` and still holds the
//!   file it wrote;
//! - the server still answers `initialize` on a new connection;
//! - host files (`/etc/passwd`, `/etc/shadow`, a canary file of the test) are unchanged, and none of
//!   the files the attacks try to plant exists on the host;
//! - no host process with a uid in the box range lives outside a live box;
//!
//! and, for every session an attack used, that closing it removes its cgroup and every host process
//! of its box ([`Client::close`]).
//!
//! Every case and its expected outcome is listed in `docs/security.md` ("Running the attack
//! suite"). The attacks go through the server and the engine every area shares
//! ([`common::server`], [`common::engine`]), on the shared runtime; attacks use short wall limits
//! so that the suite stays fast.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use codebeaker_server::{AuthConfig, ServerConfig, ServerHandle, TokenConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::host::{self, box_processes, dying, processes_with};
use crate::common::{
    self, engine, local_config, secret, server, Client, FRAME_TIMEOUT, SECRET_VAR,
};

/// Files the attacks try to plant on the host; none may exist afterwards.
const PLANTED: &[&str] = &[
    "/PWNED",
    "/tmp/PWNED",
    "/etc/PWNED",
    "/root/PWNED",
    "/workspace",
];

/// How far past its wall limit a run may end here. The promise is "within about 100 ms"; this
/// bound is generous because the suite shares small machines with other work, and still well
/// below the host's own 5 s grace, after which it would declare the box unresponsive: a run that
/// ends within it was ended by the box's init, as designed.
const OVERSHOOT_MS: u64 = 3500;

/// The wall limit of runs that must end on their own (probes, and attacks that end in another
/// limit first): generous, so that a loaded machine cannot turn them into timeouts.
const RUN_MS: u64 = 30_000;

/// The default output cap of a run (stdout and stderr together).
const OUTPUT_CAP: usize = 1024 * 1024;

// The tenant-isolation cases, one module per class of attack; each uses [`two_callers`].
mod build_products;
mod host_facts;
mod kernel_accounting;
mod server_bounds;
mod survivors;
mod warm_state;

// ------------------------------------------------------------------------------------------
// The servers, the canary and the host baseline. The engine and the default server are the
// ones every area shares ([`common::engine`], [`common::server`]); [`common::engine`] puts
// [`SECRET_VAR`] in the environment before its first box.

async fn start(config: ServerConfig) -> ServerHandle {
    common::start_server(Arc::clone(engine()), config).await
}

/// Two callers with their own tokens on one server over the shared engine: `alice`, the victim,
/// and `mallory`, the attacker. The server serves for the whole test run.
async fn two_callers() -> (Client, Client) {
    static URL: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let url = URL
        .get_or_init(|| async {
            let config = ServerConfig {
                auth: AuthConfig {
                    tokens: vec![
                        TokenConfig {
                            token: "two-callers-alice".into(),
                            caller: "alice".into(),
                        },
                        TokenConfig {
                            token: "two-callers-mallory".into(),
                            caller: "mallory".into(),
                        },
                    ],
                },
                ..local_config()
            };
            let addr = common::serve_forever(Arc::clone(engine()), config).await;
            format!("ws://{addr}/ws/jsonrpc")
        })
        .await;
    let alice = Client::connect_to(url, Some("two-callers-alice"))
        .await
        .expect("alice connects");
    let mallory = Client::connect_to(url, Some("two-callers-mallory"))
        .await
        .expect("mallory connects");
    (alice, mallory)
}

/// What the host looked like before the first attack.
struct Baseline {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    /// A file of the host that holds [`secret`]; boxes must not reach it.
    canary_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn baseline() -> &'static Baseline {
    static BASELINE: OnceLock<Baseline> = OnceLock::new();
    BASELINE.get_or_init(|| {
        for path in PLANTED {
            assert!(
                !Path::new(path).exists(),
                "{path} exists on the host before the attacks; remove it so the suite can tell"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let canary_file = dir.path().join("host-canary.txt");
        std::fs::write(&canary_file, secret()).expect("write the host canary");
        let files = [
            "/etc/passwd",
            "/etc/shadow",
            "/etc/group",
            "/etc/hostname",
            "/etc/hosts",
        ]
        .iter()
        .map(PathBuf::from)
        .chain(std::iter::once(canary_file.clone()))
        .map(|p| {
            let content = std::fs::read(&p).ok();
            (p, content)
        })
        .collect();
        Baseline {
            files,
            canary_file,
            _dir: dir,
        }
    })
}

/// The canary: a session created before the attacks, which every attack must leave working.
struct Canary {
    id: String,
    content: String,
}

async fn canary() -> &'static Canary {
    static CANARY: tokio::sync::OnceCell<Canary> = tokio::sync::OnceCell::const_new();
    CANARY
        .get_or_init(|| async {
            let mut client = Client::connect(server().await).await;
            let session = client.open(json!({"language": "python"})).await;
            let content = format!("canary {}", secret());
            let written = client
                .exec(
                    &session,
                    json!({"type": "write_file", "path": "canary.txt", "content": content}),
                )
                .await;
            assert_eq!(written["success"], true, "{written}");
            // Never closed: the canary lives as long as the test process.
            Canary {
                id: session.id,
                content,
            }
        })
        .await
}

/// Runs one attack test: the canary exists before the attack, and everything is checked after.
fn attack<F: Future<Output = ()>>(body: F) {
    common::run(async {
        baseline();
        canary().await;
        body.await;
        unharmed().await;
    });
}

/// The host, the server and the canary session are unharmed.
async fn unharmed() {
    // The server answers on a new connection.
    let mut client = Client::connect(server().await).await;
    let init = client.ok("initialize", json!({})).await;
    assert_eq!(init["serverInfo"]["name"], "codebeaker", "{init}");

    // The canary session still computes, and still holds its file.
    let canary = canary().await;
    let run = client
        .call(
            "session.execute",
            json!({"sessionId": canary.id, "command": {"type": "execute", "code": "print(6 * 7)"}}),
        )
        .await;
    assert_eq!(run["result"]["success"], true, "canary: {run}");
    assert_eq!(run["result"]["result"]["stdout"], "42\n", "canary: {run}");
    let read = client
        .call(
            "session.execute",
            json!({"sessionId": canary.id, "command": {"type": "read_file", "path": "canary.txt"}}),
        )
        .await;
    assert_eq!(
        read["result"]["result"]["content"],
        json!(canary.content),
        "canary file: {read}"
    );

    // Host files are as they were; nothing was planted.
    for (path, before) in &baseline().files {
        assert_eq!(
            &std::fs::read(path).ok(),
            before,
            "{} changed on the host",
            path.display()
        );
    }
    for path in PLANTED {
        assert!(!Path::new(path).exists(), "{path} appeared on the host");
    }

    // No process in the box id range lives outside a live box.
    no_stray_box_processes().await;
}

// ------------------------------------------------------------------------------------------
// Host-side views of boxes, from the census ([`common::host`]).

/// Polls `check` (which returns what is wrong, or nothing) for up to twenty seconds.
async fn eventually(what: &str, mut check: impl FnMut() -> Option<String>) {
    let started = Instant::now();
    loop {
        match check() {
            None => return,
            Some(problem) if started.elapsed() > Duration::from_secs(20) => {
                panic!("{what}: {problem}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Every host process in the box id range is in a box of another process (a concurrent test run)
/// or in a live box of this one; none escaped its box or outlived it.
async fn no_stray_box_processes() {
    let me = std::process::id() as i32;
    eventually("a box process outside any live box", || {
        let census = host::census();
        let stray: Vec<_> = census
            .processes
            .iter()
            .filter(|p| match &p.box_name {
                Some(name) => {
                    codebeaker_sandbox::census::owner_pid(name) == Some(me)
                        && census.named(name).is_none()
                }
                None => true,
            })
            .filter(|p| !dying(p.pid))
            .collect();
        (!stray.is_empty()).then(|| format!("{stray:?}"))
    })
    .await;
}

/// Waits until a box process whose command line or name contains `marker` runs on the host.
async fn wait_for_host_process(marker: &str) {
    eventually(&format!("no box process named {marker} started"), || {
        processes_with(marker)
            .is_empty()
            .then(|| "not yet".to_string())
    })
    .await;
}

/// Free bytes of the host filesystem that holds `path`.
fn host_free_bytes(path: &str) -> u64 {
    let c = std::ffi::CString::new(path).expect("path");
    // SAFETY: statvfs fills a zeroed struct we own, from a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0, "statvfs {path}");
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

// ------------------------------------------------------------------------------------------
// A small JSON-RPC client.

/// A session as the attacks use it.
struct Session {
    id: String,
    /// The box's name on the host, which is also its cgroup's name (the `containerId` callers
    /// see is its random part).
    box_name: String,
}

/// The session commands the attacks use.
impl Client {
    async fn open(&mut self, params: Value) -> Session {
        let created = self.ok("session.create", params).await;
        Session {
            id: created["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
            box_name: host::box_name(
                std::process::id(),
                created["containerId"].as_str().expect("containerId"),
            ),
        }
    }

    /// Runs a command; returns `{success, result, error, durationMs}`.
    async fn exec(&mut self, session: &Session, command: Value) -> Value {
        self.ok(
            "session.execute",
            json!({"sessionId": session.id, "command": command}),
        )
        .await
    }

    /// Runs `code` in `language` with a wall limit.
    async fn run(
        &mut self,
        session: &Session,
        language: &str,
        code: &str,
        timeout_ms: u64,
    ) -> Value {
        self.exec(
            session,
            json!({"type": "execute", "language": language, "code": code, "timeoutMs": timeout_ms}),
        )
        .await
    }

    /// The session still runs a program correctly.
    async fn still_works(&mut self, session: &Session) {
        let run = self
            .run(session, "bash", "echo still $((6 * 7))", RUN_MS)
            .await;
        assert_eq!(run["success"], true, "the session is broken: {run}");
        assert_eq!(run["result"]["stdout"], "still 42\n", "{run}");
    }

    /// Processes in the session's box besides its init, its warm workers and the probe itself:
    /// `pid comm state cmdline` lines. A zombie does not count: it is dead, and only waits to
    /// be reaped (a killed multi-threaded program stays one while its threads finish exiting).
    async fn leftovers(&mut self, session: &Session) -> Vec<String> {
        let probe = r#"for p in /proc/[0-9]*; do
  n=${p#/proc/}
  [ "$n" = 1 ] || [ "$n" = $$ ] || {
    stat=$(cat $p/stat 2>/dev/null)
    state=${stat##*) }
    state=${state%% *}
    cmd=$(tr '\0' ' ' < $p/cmdline 2>/dev/null)
    case "$state:$cmd" in
      :*|Z:*|X:*|*"warm worker"*) ;;
      *) echo "$n $(cat $p/comm 2>/dev/null) $state $cmd" ;;
    esac
  }
done"#;
        let run = self.run(session, "bash", probe, RUN_MS).await;
        assert_eq!(run["success"], true, "{run}");
        text(&run["result"]["stdout"])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// Closes the session, then checks that its cgroup is gone and that no host process of its
    /// box survives.
    async fn close(&mut self, session: Session) {
        let closed = self
            .ok("session.close", json!({"sessionId": session.id}))
            .await;
        assert_eq!(closed["closed"], true, "{closed}");
        let name = session.box_name.clone();
        assert!(
            !engine().sandbox().own_boxes().contains(&name),
            "the cgroup of {name} is left after close"
        );
        eventually(&format!("processes of {name} outlived its close"), || {
            let left: Vec<_> = box_processes()
                .into_iter()
                .filter(|p| p.box_name.as_deref() == Some(name.as_str()))
                .collect();
            (!left.is_empty()).then(|| format!("{left:?}"))
        })
        .await;
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn status(run: &Value) -> &str {
    text(&run["result"]["status"])
}

fn duration_ms(run: &Value) -> u64 {
    run["result"]["durationMs"].as_u64().expect("durationMs")
}

/// A command-level refusal: `success: false` with a message that says something.
fn assert_refused(response: &Value, what: &str) -> String {
    assert_eq!(
        response["success"], false,
        "{what} must be refused: {response}"
    );
    let error = text(&response["error"]).to_string();
    assert!(error.len() > 5, "{what}: no clear error: {response}");
    error
}

// ------------------------------------------------------------------------------------------
// Processes: fork bombs, thread bombs.

#[test]
fn fork_and_thread_bombs_hit_the_process_limit() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "bash"})).await;
        let bombs = [
            ("bash", ":(){ :|:& };:\nsleep 10"),
            (
                "python",
                "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
            ),
            ("c", "#include <unistd.h>\nint main(void) { for (;;) fork(); }"),
        ];
        for (language, code) in bombs {
            let run = c.run(&s, language, code, 2000).await;
            assert!(
                matches!(status(&run), "timeout" | "runtime_error" | "killed"),
                "{language} fork bomb: {run}"
            );
            assert!(duration_ms(&run) < 2000 + OVERSHOOT_MS, "{language}: {run}");
            assert_eq!(
                c.leftovers(&s).await,
                Vec::<String>::new(),
                "{language}: the bomb is gone"
            );
            c.still_works(&s).await;
        }
        // The box's process limit held: the kernel refused forks past it.
        let max = host::box_file(&s.box_name, "pids.max").expect("pids.max");
        assert_eq!(max.trim(), "128");
        let events = host::box_file(&s.box_name, "pids.events").expect("pids.events");
        let refused: u64 = events
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("pids.events max count");
        assert!(refused > 0, "the bombs never reached pids.max: {events}");

        // Threads count against the same limit.
        let threads = c
            .run(
                &s,
                "python",
                "import os, threading, time\nn = 0\ntry:\n    while True:\n        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n        n += 1\nexcept RuntimeError as e:\n    print('threads', n, e, flush=True)\nos._exit(0)",
                RUN_MS,
            )
            .await;
        assert_eq!(status(&threads), "ok", "{threads}");
        let n: u64 = text(&threads["result"]["stdout"])
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("thread count: {threads}"));
        assert!((10..128).contains(&n), "{n} threads started: {threads}");
        c.still_works(&s).await;
        c.close(s).await;
    });
}

// ------------------------------------------------------------------------------------------
// Memory.

#[test]
fn memory_bombs_hit_the_box_memory_limit() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c
            .open(json!({"language": "python", "memoryLimitMB": 128}))
            .await;
        let limit: u64 = 128 << 20;
        let bombs = [
            ("python", "single allocation", "b = b'x' * (1 << 30)\nprint(len(b))"),
            (
                "python",
                "slow growth",
                "import time\nchunks = []\nwhile True:\n    chunks.append(b'x' * (1 << 20))\n    time.sleep(0.001)",
            ),
            (
                "python",
                "many processes each under the limit",
                "import os, time\nfor i in range(8):\n    if os.fork() == 0:\n        b = bytearray(32 << 20)\n        for j in range(0, len(b), 4096):\n            b[j] = 1\n        time.sleep(3)\n        os._exit(0)\nfor i in range(8):\n    os.wait()",
            ),
            (
                "bash",
                "a shell string",
                "a=$(head -c 300000000 /dev/zero | tr '\\0' x); echo ${#a}",
            ),
        ];
        for (language, what, code) in bombs {
            let run = c.run(&s, language, code, RUN_MS).await;
            let stderr = text(&run["result"]["stderr"]);
            assert!(
                status(&run) == "memory_limit"
                    || (status(&run) == "runtime_error" && stderr.contains("MemoryError")),
                "{what}: {run}"
            );
            assert_eq!(run["success"], false, "{what}: {run}");
            if status(&run) == "memory_limit" {
                assert_eq!(run["result"]["oomKilled"], true, "{what}: {run}");
            }
            if let Some(peak) = run["result"]["peakMemoryBytes"].as_u64() {
                assert!(peak <= limit, "{what}: peak {peak} over the limit");
            }
            // The box survives its program's death.
            c.still_works(&s).await;
        }
        c.close(s).await;
        // The next run, in a new session, works.
        let s = c.open(json!({"language": "python"})).await;
        let run = c.run(&s, "python", "print(sum(range(10)))", RUN_MS).await;
        assert_eq!(run["result"]["stdout"], "45\n", "{run}");
        c.close(s).await;
    });
}

/// The memory a box's tmpfs files take counts against the box's memory limit. When files fill
/// it, the box's own init (PID 1, in the same memory cgroup) must still answer: the OOM killer
/// passes it over, and it reads files for the host in small pieces, needing no memory the box
/// no longer has.
#[test]
fn a_box_whose_memory_is_full_of_files_keeps_answering() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c
            .open(json!({"language": "python", "memoryLimitMB": 64}))
            .await;
        let fill = c
            .run(
                &s,
                "bash",
                "head -c 30000000 /dev/zero > /workspace/a; head -c 30000000 /dev/zero > /workspace/b; du -sm /workspace",
                RUN_MS,
            )
            .await;
        assert!(matches!(status(&fill), "ok" | "memory_limit"), "{fill}");
        // The init reads the file for the host: whatever happens, an answer, not a lost box.
        let read = c
            .call(
                "session.execute",
                json!({"sessionId": s.id, "command": {"type": "read_file", "path": "a", "encoding": "base64"}}),
            )
            .await;
        assert!(read.get("result").is_some(), "{read}");
        let deleted = c
            .exec(&s, json!({"type": "delete_file", "path": "a"}))
            .await;
        assert_eq!(deleted["success"], true, "{deleted}");
        c.still_works(&s).await;
        c.close(s).await;
    });
}

// ------------------------------------------------------------------------------------------
// CPU.

#[test]
fn cpu_spinners_in_many_threads_time_out_within_the_wall_limit() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let limit = 1500;
        let spinners = [
            (
                "python",
                "processes",
                "import os\nfor i in range(8):\n    if os.fork() == 0:\n        while True:\n            pass\nwhile True:\n    pass",
            ),
            (
                "python",
                "threads",
                "import threading\ndef spin():\n    while True:\n        pass\nfor i in range(8):\n    threading.Thread(target=spin).start()\nspin()",
            ),
            (
                "bash",
                "subshells",
                "for i in 1 2 3 4 5 6 7 8; do (while :; do :; done) & done; wait",
            ),
            (
                "c",
                "pthreads",
                "#include <pthread.h>\nstatic void *spin(void *a) { for (;;) {} return a; }\nint main(void) {\n    pthread_t t[16];\n    for (int i = 0; i < 16; i++) pthread_create(&t[i], 0, spin, 0);\n    spin(0);\n}",
            ),
        ];
        for (language, what, code) in spinners {
            let run = c.run(&s, language, code, limit).await;
            assert_eq!(status(&run), "timeout", "{what}: {run}");
            assert_eq!(run["result"]["timedOut"], true, "{what}: {run}");
            let took = duration_ms(&run);
            assert!(
                (limit..limit + OVERSHOOT_MS).contains(&took),
                "{what}: ended after {took} ms with a {limit} ms limit: {run}"
            );
            assert_eq!(c.leftovers(&s).await, Vec::<String>::new(), "{what}");
        }
        c.still_works(&s).await;
        c.close(s).await;
    });
}

// ------------------------------------------------------------------------------------------
// Output.

#[test]
fn output_floods_on_stdout_and_stderr_are_cut_at_the_limit() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let floods = [
            (
                "python",
                "import sys\nfor i in range(200000):\n    sys.stdout.write('A' * 1000)\n    sys.stderr.write('B' * 1000)",
            ),
            // stdout starts first, so that its first bytes exist even when the machine is busy.
            ("bash", "yes AAAAAAA & sleep 0.05; yes BBBBBBB >&2 & wait"),
        ];
        for (language, code) in floods {
            let run = c.run(&s, language, code, RUN_MS).await;
            assert_eq!(status(&run), "output_limit", "{language}: {run}");
            assert_eq!(run["result"]["truncated"], true);
            assert_eq!(run["success"], false);
            let stdout = text(&run["result"]["stdout"]);
            let stderr = text(&run["result"]["stderr"]);
            assert_eq!(
                stdout.len() + stderr.len(),
                OUTPUT_CAP,
                "{language}: stdout and stderr together are cut at the cap"
            );
            assert!(
                stdout.starts_with("AAAAAAA"),
                "{language}: the first bytes are kept"
            );
            assert!(
                stdout.chars().all(|ch| ch == 'A' || ch == '\n'),
                "{language}"
            );
            assert!(
                stderr.chars().all(|ch| ch == 'B' || ch == '\n'),
                "{language}"
            );
            assert!(
                duration_ms(&run) < RUN_MS,
                "{language}: the output cap, not the clock, ends the flood"
            );
            assert_eq!(c.leftovers(&s).await, Vec::<String>::new(), "{language}");
        }
        c.still_works(&s).await;
        c.close(s).await;
    });
}

// ------------------------------------------------------------------------------------------
// Files: sparse and huge files, filling the tmpfs mounts, deep trees, symlinks, FIFOs.

#[test]
fn sparse_and_terabyte_files_fail_with_efbig() {
    attack(async {
        let free_before = host_free_bytes("/");
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let run = c
            .run(
                &s,
                "bash",
                "for d in /workspace /tmp /dev/shm; do truncate -s 1T $d/huge; echo \"$d rc=$? size=$(stat -c %s $d/huge)\"; done",
                RUN_MS,
            )
            .await;
        let stdout = text(&run["result"]["stdout"]);
        for dir in ["/workspace", "/tmp", "/dev/shm"] {
            // truncate is killed by SIGXFSZ (128 + 25) and leaves the empty file it created.
            assert!(
                stdout.contains(&format!("{dir} rc=153 size=0")),
                "{dir}: {run}"
            );
        }
        let run = c
            .run(
                &s,
                "python",
                "import errno, os, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\nfor d in ['/workspace', '/tmp', '/dev/shm']:\n    fd = os.open(d + '/sparse', os.O_WRONLY | os.O_CREAT)\n    for what, f in [('ftruncate', lambda: os.ftruncate(fd, 1 << 40)), ('pwrite', lambda: os.pwrite(fd, b'x', 1 << 40)), ('pwrite70M', lambda: os.pwrite(fd, b'x', 70 << 20))]:\n        try:\n            f()\n            print(d, what, 'OK', os.fstat(fd).st_size)\n        except OSError as e:\n            print(d, what, errno.errorcode[e.errno])\n    os.close(fd)",
                RUN_MS,
            )
            .await;
        assert_eq!(status(&run), "ok", "{run}");
        let stdout = text(&run["result"]["stdout"]);
        assert_eq!(stdout.lines().count(), 9, "{run}");
        for line in stdout.lines() {
            assert!(line.ends_with(" EFBIG"), "{line}");
        }
        // A sparse file under the file size limit is allowed, takes no space, and is too large
        // for the file commands, which say so.
        let run = c
            .run(
                &s,
                "bash",
                "truncate -s 60M /workspace/sparse60 && du -k /workspace/sparse60",
                RUN_MS,
            )
            .await;
        assert_eq!(
            text(&run["result"]["stdout"]),
            "0\t/workspace/sparse60\n",
            "{run}"
        );
        let read = c
            .exec(&s, json!({"type": "read_file", "path": "sparse60"}))
            .await;
        assert!(
            assert_refused(&read, "reading a 60 MiB file").contains("larger than"),
            "{read}"
        );
        let diff = c
            .exec(
                &s,
                json!({"type": "diff", "original_path": "sparse60", "modified_content": "x"}),
            )
            .await;
        assert!(assert_refused(&diff, "diffing a 60 MiB file").contains("larger than"));
        c.still_works(&s).await;
        c.close(s).await;
        // Nothing of it reached the host's disk (a generous margin for other work on the host).
        let free_after = host_free_bytes("/");
        assert!(
            free_after + (4 << 30) > free_before,
            "the host lost {} bytes of disk",
            free_before - free_after
        );
    });
}

#[test]
fn filling_workspace_tmp_and_shm_hits_enospc_at_the_caps() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        // The number of files in /workspace is capped too.
        let run = c
            .run(
                &s,
                "python",
                "import errno, os\nos.mkdir('/workspace/many')\nn = 0\ntry:\n    while True:\n        open('/workspace/many/f%d' % n, 'w').close()\n        n += 1\nexcept OSError as e:\n    print(n, errno.errorcode[e.errno])",
                RUN_MS,
            )
            .await;
        let stdout = text(&run["result"]["stdout"]);
        let (count, errno) = stdout.trim().split_once(' ').expect("count and errno");
        let count: u64 = count.parse().expect("count");
        assert_eq!(errno, "ENOSPC", "{run}");
        assert!((15_000..=16_384).contains(&count), "{count} files: {run}");
        let deleted = c
            .exec(
                &s,
                json!({"type": "delete_file", "path": "many", "recursive": true}),
            )
            .await;
        assert_eq!(deleted["success"], true, "{deleted}");

        // Bytes: 16 MiB files until the mount is full.
        let run = c
            .run(
                &s,
                "python",
                "import errno, os\nchunk = b'\\0' * (16 << 20)\nfor d, cap in [('/workspace', 256), ('/tmp', 64), ('/dev/shm', 64)]:\n    os.makedirs(d + '/fill', exist_ok=True)\n    written = 0\n    try:\n        for i in range(100):\n            with open('%s/fill/f%d' % (d, i), 'wb') as f:\n                f.write(chunk)\n            written += len(chunk)\n    except OSError as e:\n        st = os.statvfs(d)\n        used = (st.f_blocks - st.f_bfree) * st.f_frsize\n        print(d, cap, used >> 20, errno.errorcode[e.errno])",
                RUN_MS,
            )
            .await;
        assert_eq!(status(&run), "ok", "{run}");
        let stdout = text(&run["result"]["stdout"]);
        assert_eq!(stdout.lines().count(), 3, "{run}");
        for line in stdout.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (cap, used): (u64, u64) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
            assert_eq!(fields[3], "ENOSPC", "{line}");
            assert!(
                used <= cap && used + 16 >= cap,
                "{line}: used {used} MiB of {cap}"
            );
        }
        // A full workspace refuses writes with a clear error, and the session goes on.
        let write = c
            .exec(
                &s,
                json!({"type": "write_file", "path": "more.txt", "content": "x".repeat(1 << 20)}),
            )
            .await;
        assert!(
            assert_refused(&write, "writing to a full workspace").contains("space"),
            "{write}"
        );
        c.still_works(&s).await;
        let deleted = c
            .exec(
                &s,
                json!({"type": "delete_file", "path": "fill", "recursive": true}),
            )
            .await;
        assert_eq!(deleted["success"], true, "{deleted}");
        let write = c
            .exec(
                &s,
                json!({"type": "write_file", "path": "more.txt", "content": "x".repeat(1 << 20)}),
            )
            .await;
        assert_eq!(write["success"], true, "room again: {write}");
        c.close(s).await;
    });
}

#[test]
fn deep_trees_and_symlink_loops_get_bounded_answers() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let run = c
            .run(
                &s,
                "python",
                "import os\nos.mkdir('/workspace/deep')\nos.chdir('/workspace/deep')\nfor i in range(1500):\n    if i == 1000:\n        open('mid.txt', 'w').write('middle')\n    os.mkdir('d')\n    os.chdir('d')\nopen('f.txt', 'w').write('bottom')\nprint('ok')",
                RUN_MS,
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "ok\n", "{run}");
        let run = c
            .run(
                &s,
                "bash",
                "cd /workspace && ln -s loop loop && ln -s a b && ln -s b a && mkdir -p l/m && ln -s .. l/m/up && ln -s . l/self && echo planted",
                RUN_MS,
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "planted\n", "{run}");

        for (max_depth, deepest) in [(None, 64), (Some(100_000), 1502)] {
            let mut command = json!({"type": "list_files", "path": ".", "recursive": true});
            if let Some(d) = max_depth {
                command["max_depth"] = json!(d);
            }
            let started = Instant::now();
            let listed = c.exec(&s, command).await;
            assert!(started.elapsed() < Duration::from_secs(5), "no hang");
            assert_eq!(listed["success"], true, "{listed}");
            let entries = listed["result"]["entries"].as_array().expect("entries");
            assert!(entries.len() <= 10_000);
            let depth = entries
                .iter()
                .map(|e| text(&e["path"]).matches('/').count() - 1)
                .max()
                .unwrap_or(0);
            assert!(
                depth <= deepest,
                "{depth} levels listed with max_depth {max_depth:?}"
            );
            for e in entries {
                let path = text(&e["path"]);
                assert!(
                    !path.contains("/self/") && !path.contains("/up/") && !path.contains("/loop/"),
                    "a symlink was followed: {path}"
                );
                if ["loop", "a", "b", "up", "self"].contains(&text(&e["name"])) {
                    assert_eq!(e["type"], "symlink", "{e}");
                }
            }
        }
        let mid = format!("deep/{}mid.txt", "d/".repeat(1000));
        let read = c.exec(&s, json!({"type": "read_file", "path": mid})).await;
        assert_eq!(read["result"]["content"], "middle", "{read}");
        let bottom = format!("deep/{}f.txt", "d/".repeat(1500));
        let read = c
            .exec(&s, json!({"type": "read_file", "path": bottom}))
            .await;
        assert_eq!(read["result"]["content"], "bottom", "{read}");
        let too_long = format!("deep/{}f.txt", "d/".repeat(2100));
        let read = c
            .exec(&s, json!({"type": "read_file", "path": too_long}))
            .await;
        assert!(assert_refused(&read, "a path over 4096 bytes").contains("longer than"));
        let deleted = c
            .exec(
                &s,
                json!({"type": "delete_file", "path": "deep", "recursive": true}),
            )
            .await;
        if deleted["success"] == false {
            assert!(
                assert_refused(&deleted, "deleting a 1500-level tree").contains("levels"),
                "{deleted}"
            );
        }
        for path in ["loop", "a", "l/m/up/m/up/x", "l/self/self/x", "loop/x"] {
            let read = c.exec(&s, json!({"type": "read_file", "path": path})).await;
            assert!(
                assert_refused(&read, path).contains("symlink"),
                "{path}: {read}"
            );
        }
        for command in [
            json!({"type": "list_files", "path": "l/self"}),
            json!({"type": "create_dir", "path": "loop/x"}),
            json!({"type": "write_file", "path": "a/x", "content": "x"}),
        ] {
            let refused = c.exec(&s, command.clone()).await;
            assert_refused(&refused, &command.to_string());
        }
        // The program can still clean up its own tree.
        let run = c
            .run(&s, "bash", "rm -rf /workspace/deep && echo gone", RUN_MS)
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "gone\n", "{run}");
        c.close(s).await;
    });
}

#[test]
fn planted_symlinks_out_of_the_workspace_are_never_followed() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let host_canary = baseline().canary_file.display().to_string();
        let plant = format!(
            "cd /workspace\nln -s / rootlink\nln -s /proc/1/root p1root\nln -s /proc/self/root selfroot\nln -s /etc/shadow shadow\nln -s /etc etc\nln -s /tmp tmplink\nln -s {host_canary} hostcanary\necho hi > ok.txt\nln /etc/passwd hard 2>&1 || echo no-hardlink\necho planted"
        );
        let run = c.run(&s, "bash", &plant, RUN_MS).await;
        let stdout = text(&run["result"]["stdout"]);
        assert!(stdout.ends_with("no-hardlink\nplanted\n"), "{run}");

        let through_dir = ["rootlink", "p1root", "selfroot", "etc", "tmplink"];
        let through_file = ["shadow", "hostcanary"];
        let mut commands = Vec::new();
        for link in through_dir {
            let inner = if link == "tmplink" { "x" } else { "etc/passwd" };
            let path = format!("{link}/{inner}");
            let planted = format!("{link}/PWNED");
            commands.extend([
                json!({"type": "read_file", "path": path}),
                json!({"type": "write_file", "path": planted, "content": "pwned"}),
                json!({"type": "write_file", "path": path, "content": "pwned", "mode": "Append"}),
                json!({"type": "copy_file", "source": path, "destination": "copy.txt"}),
                json!({"type": "copy_file", "source": "ok.txt", "destination": planted}),
                json!({"type": "list_files", "path": link}),
                json!({"type": "list_files", "path": format!("{link}/etc"), "recursive": true}),
                json!({"type": "create_dir", "path": format!("{link}/newdir")}),
                json!({"type": "diff", "original_path": path, "modified_content": "x"}),
                json!({"type": "diff", "original_path": "ok.txt", "modified_path": path}),
                json!({"type": "apply_patch", "patch": format!("--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-root\n+pwned\n")}),
                json!({"type": "apply_patch", "patch": format!("--- /dev/null\n+++ b/{planted}\n@@ -0,0 +1 @@\n+pwned\n")}),
            ]);
        }
        for link in through_file {
            commands.extend([
                json!({"type": "read_file", "path": link}),
                json!({"type": "write_file", "path": link, "content": "pwned"}),
                json!({"type": "write_file", "path": link, "content": "pwned", "mode": "Append"}),
                json!({"type": "copy_file", "source": link, "destination": "copy.txt"}),
                json!({"type": "copy_file", "source": "ok.txt", "destination": link, "overwrite": true}),
                json!({"type": "diff", "original_path": link, "modified_content": "x"}),
                json!({"type": "apply_patch", "patch": "--- a/ok.txt\n+++ b/ok.txt\n@@ -1 +1 @@\n-hi\n+pwned\n", "target_path": link}),
            ]);
        }
        for command in &commands {
            let response = c.exec(&s, command.clone()).await;
            let error = assert_refused(&response, &command.to_string());
            assert!(
                error.contains("symlink"),
                "{command}: the error should say why: {error}"
            );
        }
        // Deleting through a link removes nothing there.
        for path in [
            "rootlink/etc/passwd",
            "p1root/etc/hostname",
            "etc/hosts",
            "tmplink/x",
        ] {
            let response = c
                .exec(
                    &s,
                    json!({"type": "delete_file", "path": path, "recursive": true}),
                )
                .await;
            assert_refused(&response, path);
            assert_eq!(response["result"]["deleted"], false, "{response}");
        }
        // Inside the box, the link targets are untouched too, and nothing was written beside them.
        let check = c
            .run(
                &s,
                "bash",
                "cat /etc/hostname; grep -c pwned /etc/passwd /etc/hosts; ls /tmp /workspace | grep -c -e PWNED -e copy.txt -e newdir; cat /workspace/ok.txt",
                RUN_MS,
            )
            .await;
        assert_eq!(
            text(&check["result"]["stdout"]),
            "codebeaker\n/etc/passwd:0\n/etc/hosts:0\n0\nhi\n",
            "{check}"
        );
        c.close(s).await;
    });
}

#[test]
fn fifos_and_sockets_in_the_workspace_do_not_hang_file_commands() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let run = c
            .run(
                &s,
                "python",
                "import os, socket\nos.mkfifo('/workspace/fifo')\nsocket.socket(socket.AF_UNIX).bind('/workspace/sock')\nopen('/workspace/ok.txt', 'w').write('hi\\n')\nprint('planted')",
                RUN_MS,
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "planted\n", "{run}");
        for special in ["fifo", "sock"] {
            for command in [
                json!({"type": "read_file", "path": special}),
                json!({"type": "write_file", "path": special, "content": "x"}),
                json!({"type": "write_file", "path": special, "content": "x", "mode": "Append"}),
                json!({"type": "copy_file", "source": special, "destination": "copy.txt"}),
                json!({"type": "copy_file", "source": "ok.txt", "destination": special, "overwrite": true}),
                json!({"type": "diff", "original_path": special, "modified_content": "x"}),
                json!({"type": "apply_patch", "patch": "--- a/ok.txt\n+++ b/ok.txt\n@@ -1 +1 @@\n-hi\n+ho\n", "target_path": special}),
            ] {
                let started = Instant::now();
                let response = c.exec(&s, command.clone()).await;
                assert!(
                    started.elapsed() < Duration::from_secs(4),
                    "{command} took {:?}",
                    started.elapsed()
                );
                let error = assert_refused(&response, &command.to_string());
                assert!(error.contains("not a regular file"), "{command}: {error}");
            }
        }
        c.still_works(&s).await;
        c.close(s).await;
    });
}

// ------------------------------------------------------------------------------------------
// Processes that try to outlive their run or their session, and signals.

#[test]
fn processes_cannot_outlive_their_run_or_their_session() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "bash"})).await;

        let run = c.run(&s, "bash", "kill -9 -1; echo after", RUN_MS).await;
        assert!(matches!(status(&run), "ok" | "killed"), "{run}");
        c.still_works(&s).await;

        let run = c.run(&s, "bash", "kill -STOP 0; echo never", 1000).await;
        assert_eq!(status(&run), "timeout", "{run}");
        assert_eq!(text(&run["result"]["stdout"]), "", "{run}");
        assert!(duration_ms(&run) < 1000 + OVERSHOOT_MS, "{run}");
        c.still_works(&s).await;

        let marker = format!("cb-daemon-{}", std::process::id());
        let daemons = format!(
            "(setsid bash -c 'exec -a {marker}-1 sleep 300' &)\n(bash -c 'exec -a {marker}-2 sleep 300' &)\nnohup bash -c 'exec -a {marker}-3 sleep 300' >/dev/null 2>&1 &\ndisown\nsetsid -f bash -c 'trap \"\" HUP TERM; exec -a {marker}-4 sleep 300'\necho started"
        );
        let run = c.run(&s, "bash", &daemons, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        assert_eq!(text(&run["result"]["stdout"]), "started\n", "{run}");
        assert_eq!(c.leftovers(&s).await, Vec::<String>::new());
        assert!(
            processes_with(&marker).is_empty(),
            "{:?}",
            processes_with(&marker)
        );

        // A double fork that would write a file later, after the run.
        let run = c
            .run(
                &s,
                "python",
                "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(1.5)\n        open('/workspace/late.txt', 'w').write('I outlived my run')\n    os._exit(0)\nprint('parent done')",
                RUN_MS,
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "parent done\n", "{run}");
        let run = c.run(&s, "bash", "sleep 2; ls /workspace", RUN_MS).await;
        assert_eq!(text(&run["result"]["stdout"]), "", "{run}");

        // A python program kills every process it may signal, its warm worker included.
        let run = c
            .run(
                &s,
                "python",
                "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('survived')",
                RUN_MS,
            )
            .await;
        assert!(matches!(status(&run), "ok" | "killed"), "{run}");
        let run = c.run(&s, "python", "print('next')", RUN_MS).await;
        assert_eq!(text(&run["result"]["stdout"]), "next\n", "{run}");

        // Daemons started by the last run before the close do not outlive the session.
        let last = format!(
            "(setsid bash -c 'exec -a {marker}-last sleep 300' &)\nsetsid -f bash -c 'exec -a {marker}-last2 sleep 300'\necho started"
        );
        let run = c.run(&s, "bash", &last, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        c.close(s).await;
        assert!(processes_with(&marker).is_empty());
    });
}

/// A Python program that stops every process it may signal stops its own warm worker, which can
/// then no longer report the program's exit. The run still ends within its wall limit, and the
/// session recovers.
#[test]
fn stopping_the_warm_worker_ends_the_run_within_its_wall_limit() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let limit = 1500;
        let run = c
            .run(
                &s,
                "python",
                "import os, signal\nos.kill(-1, signal.SIGSTOP)\nprint('stopped all')",
                limit,
            )
            .await;
        assert!(matches!(status(&run), "ok" | "timeout" | "killed"), "{run}");
        // Waiting for the stopped worker's report once made such runs end exactly 2 s late.
        assert!(duration_ms(&run) < limit + 1500, "{run}");
        let run = c.run(&s, "python", "print('next')", RUN_MS).await;
        assert_eq!(text(&run["result"]["stdout"]), "next\n", "{run}");
        c.close(s).await;
    });
}

// ------------------------------------------------------------------------------------------
// What a box can see: host processes, the server's environment, other boxes.

#[test]
fn a_box_sees_no_host_process_server_environment_or_other_box() {
    attack(async {
        let addr = server().await;
        let mut a = Client::connect(addr).await;
        let mut b = Client::connect(addr).await;
        let sa = a.open(json!({"language": "bash"})).await;
        let sb = b.open(json!({"language": "python"})).await;
        let marker = format!("cb-other-box-{}", std::process::id());
        let exe = std::env::current_exe().expect("test exe");
        let exe_name = exe
            .file_name()
            .and_then(|n| n.to_str())
            .expect("exe name")
            .to_string();
        let secret = secret().to_string();
        let host_canary = baseline().canary_file.display().to_string();
        let probe = format!(
            r#"import os
found = []
pids = [p for p in os.listdir('/proc') if p.isdigit()]
for p in pids:
    for f in ['cmdline', 'environ', 'status', 'comm']:
        try:
            data = open('/proc/%s/%s' % (p, f), 'rb').read().decode('latin-1')
        except OSError:
            continue
        for needle in [{secret:?}, {marker:?}, {exe_name:?}, 'cargo', '{SECRET_VAR}']:
            if needle in data:
                found.append('%s/%s has %s' % (p, f, needle))
for k, v in os.environ.items():
    if {secret:?} in v or k == '{SECRET_VAR}':
        found.append('env ' + k)
for path in [{host_canary:?}, '/proc/1/root/etc/shadow', '/proc/1/environ', '/proc/1/fd/0',
             '/proc/1/cwd', '/etc/shadow', '/etc/ssh', '/root/.ssh', '/root/.bash_history',
             '/root/.cargo', '/root/.pyenv', '/home', '/sys/fs/cgroup', '/run/codebeaker']:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, 'rb').read()
        found.append('readable ' + path)
    except OSError:
        pass
print('pids', len(pids))
print('found', found)
"#
        );
        let sleeper = format!("exec -a {marker} sleep 3");
        let (held, probed) = tokio::join!(a.run(&sa, "bash", &sleeper, RUN_MS), async {
            // The other box's program is running while this box looks.
            wait_for_host_process(&marker).await;
            b.run(&sb, "python", &probe, RUN_MS).await
        });
        assert!(matches!(status(&held), "ok" | "timeout"), "{held}");
        assert_eq!(status(&probed), "ok", "{probed}");
        let stdout = text(&probed["result"]["stdout"]);
        assert!(stdout.contains("found []\n"), "{probed}");
        let pids: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("pids "))
            .and_then(|n| n.parse().ok())
            .expect("pid count");
        assert!(
            pids <= 4,
            "only the box's own init, worker and program are visible: {probed}"
        );
        a.close(sa).await;
        b.close(sb).await;
    });
}

// ------------------------------------------------------------------------------------------
// The network.

#[test]
fn network_egress_fails_everywhere() {
    attack(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let host_port = listener.local_addr().expect("addr").port();
        let server_port = server().await.port();
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let probe = format!(
            r#"import errno, socket
targets = [('tcp', '1.1.1.1', 53), ('tcp', '10.0.0.1', 80), ('tcp', '192.168.0.1', 80),
           ('tcp', '169.254.169.254', 80), ('tcp', '127.0.0.1', {server_port}),
           ('tcp', '127.0.0.1', {host_port}), ('udp', '1.1.1.1', 53), ('udp', '169.254.169.254', 53),
           ('tcp6', '2606:4700:4700::1111', 53)]
for kind, host, port in targets:
    s = socket.socket(socket.AF_INET6 if kind == 'tcp6' else socket.AF_INET,
                      socket.SOCK_DGRAM if kind == 'udp' else socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        if kind == 'udp':
            s.sendto(b'x', (host, port))
        else:
            s.connect((host, port))
        print('REACHED', kind, host, port)
    except OSError as e:
        print('failed', kind, host, port, errno.errorcode.get(e.errno, type(e).__name__))
try:
    print('REACHED dns', socket.getaddrinfo('example.com', 80))
except OSError as e:
    print('failed dns', type(e).__name__)
srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen()
socket.create_connection(srv.getsockname(), timeout=1)
print('own loopback ok')
"#
        );
        let run = c.run(&s, "python", &probe, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        let stdout = text(&run["result"]["stdout"]);
        assert!(!stdout.contains("REACHED"), "{run}");
        assert_eq!(stdout.matches("failed ").count(), 10, "{run}");
        for line in stdout
            .lines()
            .filter(|l| l.starts_with("failed tcp 127.0.0.1"))
        {
            assert!(
                line.ends_with("ECONNREFUSED"),
                "the box's loopback is its own: {line}"
            );
        }
        assert!(stdout.ends_with("own loopback ok\n"), "{run}");
        let run = c
            .run(
                &s,
                "bash",
                &format!("exec 3<>/dev/tcp/1.1.1.1/53 && echo REACHED; exec 3<>/dev/tcp/127.0.0.1/{host_port} && echo REACHED; echo done"),
                RUN_MS,
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "done\n", "{run}");
        assert_eq!(
            listener.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "nothing reached the host's loopback"
        );
        c.close(s).await;
    });
}

// ------------------------------------------------------------------------------------------
// Kernel interfaces.

#[test]
fn dangerous_syscalls_are_refused_and_32_bit_calls_kill() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let probe = r#"import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    print(name, r, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()) if r == -1 else 'ALLOWED')
call('ptrace', 101, 16, 1, 0, 0)
call('mount', 165, 0, 0, 0, 0, 0)
call('umount2', 166, 0, 0)
call('unshare', 272, 0x10000000)
call('unshare_net', 272, 0x40000000)
call('setns', 308, 0, 0)
call('keyctl', 250, 0, 0, 0, 0)
call('add_key', 248, 0, 0, 0, 0, 0)
call('bpf', 321, 0, 0, 0)
call('io_uring_setup', 425, 1, 0)
call('userfaultfd', 323, 0)
call('perf_event_open', 298, 0, 0, -1, -1, 0)
call('process_vm_readv', 310, 1, 0, 0, 0, 0, 0)
call('kexec_load', 246, 0, 0, 0, 0)
call('init_module', 175, 0, 0, 0)
call('pivot_root', 155, 0, 0)
call('chroot', 161, 0)
call('open_by_handle_at', 304, 0, 0, 0)
call('pidfd_getfd', 438, 0, 0, 0)
call('clone_newns', 56, 0x00020000 | 17, 0, 0, 0, 0)
call('reboot', 169, 0, 0, 0, 0)
call('syslog', 103, 3, 0, 0)
call('fsopen', 430, 0, 0)
call('clone3', 435, 0, 0)
call('x32_getpid', 39 | 0x40000000)
for family, name in [(16, 'netlink'), (17, 'packet'), (40, 'vsock')]:
    try:
        socket.socket(family, socket.SOCK_STREAM if family == 40 else socket.SOCK_RAW, 0)
        print(name, 0, 'ALLOWED')
    except OSError as e:
        print(name, -1, errno.errorcode.get(e.errno))
"#;
        let run = c.run(&s, "python", probe, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        let stdout = text(&run["result"]["stdout"]);
        assert_eq!(stdout.lines().count(), 28, "{run}");
        for line in stdout.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let expected = if ["clone3", "x32_getpid"].contains(&parts[0]) {
                "ENOSYS"
            } else {
                "EPERM"
            };
            assert_eq!(parts[1..], ["-1", expected], "{line}");
        }

        // 32-bit system calls: `int 0x80` from machine code in an executable page, and from C.
        let int80_python = "import ctypes, mmap\nbuf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\nbuf.write(bytes([0xb8, 0x14, 0, 0, 0, 0xcd, 0x80, 0xc3]))\nf = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))\nprint('calling', flush=True)\nprint('returned', f(), flush=True)";
        let int80_c = "#include <stdio.h>\nint main(void) {\n    long r;\n    printf(\"calling\\n\");\n    fflush(stdout);\n    __asm__ volatile(\"int $0x80\" : \"=a\"(r) : \"a\"(20L) : \"memory\");\n    printf(\"returned %ld\\n\", r);\n    return 0;\n}";
        for (language, code) in [("python", int80_python), ("c", int80_c)] {
            let run = c.run(&s, language, code, RUN_MS).await;
            assert_eq!(status(&run), "runtime_error", "{language}: {run}");
            assert_eq!(run["result"]["signal"], libc::SIGSYS, "{language}: {run}");
            assert_eq!(
                text(&run["result"]["stdout"]),
                "calling\n",
                "{language}: {run}"
            );
        }
        c.still_works(&s).await;
        c.close(s).await;
    });
}

// ------------------------------------------------------------------------------------------
// Sessions against sessions.

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

// ------------------------------------------------------------------------------------------
// Giant requests, NUL bytes, invalid UTF-8.

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
