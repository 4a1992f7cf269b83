//! Tenant-isolation attacks: host facts. A box learns nothing of the host or of other callers
//! beyond what programs need: no kernel interface that reaches host-wide state (AIO, secret
//! memory, process comparison, seccomp user notification), no live notifications of what other
//! callers open in the read-only files every box shares, no host path (mount points,
//! `/proc/1/cmdline`, `PATH`, error messages), no symlink taken as a working directory, and
//! `/tmp` and `/dev/shm` capped in files like `/workspace`.

use super::*;

/// A Python helper that calls raw system calls and prints `name result errno` lines.
const SYSCALL_PROBE: &str = r#"import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    print(name, r, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()) if r == -1 else 'ALLOWED', flush=True)
    return r
"#;

#[test]
fn aio_secret_memory_kcmp_notify_listeners_and_file_watches_are_refused() {
    attack(async {
        let (_, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "python"})).await;
        let probe = format!(
            r#"{SYSCALL_PROBE}
import os
ctx = ctypes.c_ulong(0)
buf = ctypes.create_string_buffer(64)
call('io_setup', 206, 128, ctypes.addressof(ctx))
call('io_submit', 209, 0, 0, 0)
call('io_getevents', 208, 0, 0, 0, 0, 0)
call('io_pgetevents', 333, 0, 0, 0, 0, 0, 0)
call('io_cancel', 210, 0, 0, 0)
call('io_destroy', 207, 0)
call('memfd_secret', 447, 0)
pid = os.getpid()
call('kcmp', 312, pid, pid, 0, 0, 0)
call('process_madvise', 440, 0, 0, 0, 0, 0)
call('cachestat', 451, 0, 0, 0, 0)
call('fanotify_mark', 301, 0, 0, 0, 0, 0)
call('quotactl_fd', 443, 0, 0, 0, 0)
call('move_pages', 279, 0, 0, 0, 0, 0, 0)
call('migrate_pages', 256, 0, 0, 0, 0)
fd = os.open('/usr', os.O_RDONLY)
call('dnotify', 72, fd, 1026, 0x80000001)
call('inotify_init', 253)
call('inotify_init1', 294, 0)
call('inotify_add_watch', 254, 0, 0, 0)
# seccomp: an allow-all filter of the program's own is fine, a user-notification listener not.
class Filter(ctypes.Structure):
    _fields_ = [('code', ctypes.c_ushort), ('jt', ctypes.c_ubyte), ('jf', ctypes.c_ubyte), ('k', ctypes.c_uint)]
class Prog(ctypes.Structure):
    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.POINTER(Filter))]
allow = (Filter * 1)(Filter(0x06, 0, 0, 0x7fff0000))
prog = Prog(1, allow)
call('seccomp_listener', 317, 1, 8, ctypes.addressof(prog))
call('seccomp_listener_high_bits', 317, 1 | (1 << 32), 8 | (1 << 32), ctypes.addressof(prog))
call('dnotify_high_bits', 72, fd, 1026 | (1 << 32), 0x80000001)
call('seccomp_own_filter', 317, 1, 0, ctypes.addressof(prog))
"#
        );
        let run = mallory.run(&s, "python", &probe, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        let stdout = text(&run["result"]["stdout"]);
        assert_eq!(stdout.lines().count(), 22, "{run}");
        for line in stdout.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let expected: &[&str] = match parts[0] {
                "seccomp_own_filter" => &["0", "ALLOWED"],
                name if name.starts_with("inotify") => &["-1", "ENOSYS"],
                _ => &["-1", "EPERM"],
            };
            assert_eq!(&parts[1..], expected, "{line}: {run}");
        }
        mallory.still_works(&s).await;
        mallory.close(s).await;
    });
}

#[test]
fn one_caller_cannot_watch_which_shared_files_another_opens() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let victim = alice.open(json!({"language": "python"})).await;
        let spy = mallory.open(json!({"language": "python"})).await;
        // Mallory watches the interpreter's library and the compile cache, with inotify and with
        // dnotify, and reports every event (or the error) for a few seconds.
        let watch = format!(
            r#"{SYSCALL_PROBE}
import fcntl, os, select, signal, sys, time
dirs = ['/usr/lib/python3', '/usr/lib/python3/dist-packages'] + [p for p in sys.path if p.startswith('/usr/lib/python3')]
dirs = [d for d in dirs if os.path.isdir(d)]
events = []
signal.signal(signal.SIGIO, lambda *a: events.append('dnotify'))
for d in dirs:
    try:
        fd = os.open(d, os.O_RDONLY)
        fcntl.fcntl(fd, fcntl.F_NOTIFY, fcntl.DN_ACCESS | fcntl.DN_MULTISHOT)
    except OSError as e:
        print('dnotify', -1, errno.errorcode[e.errno], flush=True)
        break
ino = call('inotify_init1', 294, os.O_NONBLOCK)
if ino >= 0:
    for d in dirs:
        libc.inotify_add_watch(int(ino), d.encode(), 0x20 | 0x1)
print('ready', flush=True)
end = time.time() + 6
while time.time() < end:
    if ino >= 0 and select.select([ino], [], [], 0.2)[0]:
        events.append('inotify')
        os.read(ino, 65536)
    time.sleep(0.05)
print('events', len(events), sorted(set(events)))
"#
        );
        let victim_runs = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            for _ in 0..3 {
                let run = alice
                    .run(
                        &victim,
                        "python",
                        "import json, email.parser, http.client, decimal, sqlite3\nprint('alice ok')",
                        RUN_MS,
                    )
                    .await;
                assert_eq!(run["result"]["stdout"], "alice ok\n", "{run}");
            }
        };
        let (watched, ()) = tokio::join!(mallory.run(&spy, "python", &watch, RUN_MS), victim_runs);
        assert_eq!(status(&watched), "ok", "{watched}");
        let out = text(&watched["result"]["stdout"]);
        assert!(out.contains("dnotify -1 EPERM"), "{watched}");
        assert!(out.contains("inotify_init1 -1 ENOSYS"), "{watched}");
        assert!(
            out.lines().any(|l| l == "events 0 []"),
            "mallory saw alice's opens: {watched}"
        );
        alice.close(victim).await;
        mallory.close(spy).await;
    });
}

/// Host paths a box must never see.
fn host_paths() -> Vec<String> {
    let engine = engine();
    let mut paths = vec![
        common::BIN.to_string(),
        "/root".to_string(),
        engine.config().sandbox.state_dir.display().to_string(),
        engine.config().cache_dir.display().to_string(),
    ];
    // Every toolchain directory that lives outside the standard system directories.
    for toolchain in engine.registry().discover().values() {
        for mount in toolchain.relocated.keys() {
            paths.push(mount.display().to_string());
        }
    }
    paths
}

fn assert_no_host_path(what: &str, text: &str) {
    for path in host_paths() {
        assert!(
            !text.contains(&path),
            "{what} names the host path {path}:\n{text}"
        );
    }
}

#[test]
fn no_host_path_in_mount_points_init_cmdline_path_or_errors() {
    attack(async {
        let (_, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "rust"})).await;
        // Compiled, cached and run from the cache: the toolchain and the cache are reachable at
        // their box paths.
        let run = mallory
            .run(&s, "rust", "fn main() { println!(\"rust ok\"); }", RUN_MS)
            .await;
        assert_eq!(run["result"]["stdout"], "rust ok\n", "{run}");

        let probe = "awk '{print $5}' /proc/self/mountinfo; echo; tr '\\0' ' ' < /proc/1/cmdline; echo; echo \"PATH=$PATH\"; env";
        let run = mallory.run(&s, "bash", probe, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        let stdout = text(&run["result"]["stdout"]);
        assert!(stdout.contains("/workspace"), "{run}");
        assert!(stdout.contains("__box-init"), "{run}");
        // The compile cache and relocated toolchains are there, at their box paths.
        assert!(stdout.contains(codebeaker_engine::BOX_CACHE), "{run}");
        for toolchain in engine().registry().discover().values() {
            if toolchain.available && toolchain.language == "rust" {
                for target in toolchain.relocated.values() {
                    assert!(stdout.contains(&target.display().to_string()), "{run}");
                }
            }
        }
        assert_no_host_path("mount points, /proc/1/cmdline and the environment", stdout);

        // The run's own view of where its tools are, and errors of failed compiles and runs.
        let failures = [
            (
                "rust",
                "fn main() { let x: u32 = \"no\"; let v: Vec<u8> = Vec::new(); v[3]; }",
            ),
            (
                "rust",
                "fn main() { let v: Vec<u8> = Vec::new(); println!(\"{}\", std::env::current_exe().unwrap().display()); println!(\"{}\", v[3]); }",
            ),
            ("python", "import sys, os\nprint(sys.executable, os.getcwd(), sys.path)\nraise ValueError('boom')"),
            ("bash", "cd /nonexistent; exit 3"),
        ];
        for (language, code) in failures {
            let run = mallory.run(&s, language, code, RUN_MS).await;
            assert_eq!(run["success"], false, "{language} must fail: {run}");
            assert_no_host_path(&format!("a failed {language} run"), &run.to_string());
        }
        let shell = mallory
            .exec(
                &s,
                json!({"type": "shell", "command": "no-such-program", "args": ["x"]}),
            )
            .await;
        assert_eq!(shell["success"], false, "{shell}");
        assert_no_host_path("a failed shell command", &shell.to_string());
        mallory.still_works(&s).await;
        mallory.close(s).await;
    });
}

#[test]
fn a_working_directory_through_a_planted_symlink_is_refused() {
    attack(async {
        let (_, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "python"})).await;
        let plant = mallory
            .run(
                &s,
                "bash",
                "mkdir -p /workspace/real/sub && ln -s / /workspace/up && ln -s /proc/1/root /workspace/initroot && ln -s real /workspace/alias && ln -s /tmp /workspace/tmp",
                RUN_MS,
            )
            .await;
        assert_eq!(plant["success"], true, "{plant}");
        for cwd in [
            "up",
            "up/etc",
            "initroot",
            "alias",
            "alias/sub",
            "/workspace/tmp",
        ] {
            let shell = mallory
                .exec(
                    &s,
                    json!({"type": "shell", "command": "pwd", "workingDirectory": cwd}),
                )
                .await;
            let error = assert_refused(&shell, &format!("workingDirectory {cwd}"));
            assert!(error.contains("symlink"), "{cwd}: {shell}");
            assert_eq!(
                shell["result"]["stdout"].as_str().unwrap_or_default(),
                "",
                "{cwd}: the command ran: {shell}"
            );
        }
        for (cwd, expected) in [
            ("real/sub", "/workspace/real/sub\n"),
            ("/workspace", "/workspace\n"),
        ] {
            let shell = mallory
                .exec(
                    &s,
                    json!({"type": "shell", "command": "pwd", "workingDirectory": cwd}),
                )
                .await;
            assert_eq!(shell["success"], true, "{cwd}: {shell}");
            assert_eq!(shell["result"]["stdout"], expected, "{shell}");
        }
        let escape = mallory
            .exec(
                &s,
                json!({"type": "shell", "command": "pwd", "workingDirectory": "../etc"}),
            )
            .await;
        assert!(
            assert_refused(&escape, "workingDirectory ../etc").contains("workingDirectory"),
            "{escape}"
        );
        mallory.close(s).await;
    });
}

#[test]
fn tmp_and_dev_shm_cap_their_number_of_files() {
    attack(async {
        let (_, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "python"})).await;
        let run = mallory
            .run(
                &s,
                "python",
                "import errno, os\nfor d in ['/tmp', '/dev/shm']:\n    os.makedirs(d + '/many', exist_ok=True)\n    n = 0\n    try:\n        while n < 200000:\n            open('%s/many/f%d' % (d, n), 'w').close()\n            n += 1\n        print(d, n, 'NONE')\n    except OSError as e:\n        print(d, n, errno.errorcode[e.errno])",
                RUN_MS,
            )
            .await;
        assert_eq!(status(&run), "ok", "{run}");
        let stdout = text(&run["result"]["stdout"]);
        assert_eq!(stdout.lines().count(), 2, "{run}");
        for line in stdout.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let count: u64 = fields[1].parse().expect("count");
            assert_eq!(fields[2], "ENOSPC", "{line}: {run}");
            assert!((15_000..=16_384).contains(&count), "{line}: {run}");
        }
        let clean = mallory
            .run(
                &s,
                "bash",
                "rm -rf /tmp/many /dev/shm/many && touch /tmp/x /dev/shm/x && echo room",
                RUN_MS,
            )
            .await;
        assert_eq!(clean["result"]["stdout"], "room\n", "{clean}");
        mallory.close(s).await;
    });
}

#[test]
fn programs_are_the_oom_killers_first_choice_and_cannot_sink_below_the_init() {
    attack(async {
        let (_, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "python"})).await;
        // The init is at -1000 where the host grants CAP_SYS_RESOURCE, else at the server's own
        // score; what it starts is at 1000 and may not go below the init.
        let bash = "init=$(cat /proc/1/oom_score_adj); echo init $init me $(cat /proc/self/oom_score_adj); below=$((init > -1000 ? init - 1 : -1000)); echo $below > /proc/self/oom_score_adj && echo lowered; echo -17 > /proc/self/oom_adj && echo lowered; true";
        let python = "init = int(open('/proc/1/oom_score_adj').read())\nprint('init', init, 'me', open('/proc/self/oom_score_adj').read().strip())\ntry:\n    with open('/proc/self/oom_score_adj', 'w') as f:\n        f.write(str(max(init - 1, -1000)))\n    print('lowered')\nexcept OSError as e:\n    print('refused', e.errno)";
        for (language, code) in [("bash", bash), ("python", python)] {
            let run = mallory.run(&s, language, code, RUN_MS).await;
            let stdout = text(&run["result"]["stdout"]);
            let fields: Vec<&str> = stdout
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            assert_eq!(fields.first(), Some(&"init"), "{language}: {run}");
            let init: i32 = fields[1].parse().expect("init's score");
            assert!(init < 1000, "{language}: {run}");
            assert_eq!(fields[3], "1000", "{language}: {run}");
            assert!(!stdout.contains("lowered"), "{language}: {run}");
        }
        mallory.close(s).await;
    });
}
