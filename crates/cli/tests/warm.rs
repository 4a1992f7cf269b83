//! The warm path: programs run in a pre-started worker inside the box. Every containment promise
//! of a cold run holds here too, and a run never sees what an earlier run left in memory.

use codebeaker_languages::WarmWorker;
use codebeaker_sandbox::{
    BoxLimits, BoxSpec, FileRoot, RunSpec, Sandbox, SandboxBox, Verdict, WarmSpec, MIB,
};
use std::time::Duration;

use crate::common::{run, sandbox, text};

fn spec() -> WarmSpec {
    let argv = WarmWorker::Python
        .argv("/usr/bin/python3".into(), None)
        .expect("python needs nothing built");
    WarmSpec {
        key: "python".into(),
        argv,
        env: vec![("PYTHONUTF8".into(), "1".into())],
    }
}

/// A Python program run through the warm worker.
fn warm(code: &str) -> RunSpec {
    let mut cmd = RunSpec::new(["/usr/bin/python3", "-B", "/tmp/prog/main.py"]);
    cmd.files = vec![(
        FileRoot::Tmp,
        "prog/main.py".into(),
        code.as_bytes().to_vec(),
        false,
    )];
    cmd.cleanup = Some((FileRoot::Tmp, "prog".into()));
    cmd.env = vec![("PYTHONUTF8".into(), "1".into())];
    cmd.warm = Some(spec());
    cmd
}

async fn new_box(sb: &Sandbox, limits: BoxLimits) -> SandboxBox {
    let bx = sb
        .create_box(&BoxSpec {
            limits,
            binds: Vec::new(),
        })
        .await
        .expect("box");
    bx.start_worker(&spec(), true).await.expect("worker");
    bx
}

/// The worker's pid as the box sees it (a process running the worker's source).
async fn worker_pid(bx: &SandboxBox) -> String {
    let out = bx
        .run(&RunSpec::new([
            "/bin/sh",
            "-c",
            "for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' < $p/cmdline)\" in '/usr/bin/python3 -B -s -c'*) echo ${p#/proc/};; esac; done",
        ]))
        .await
        .unwrap();
    text(&out.stdout).trim().to_string()
}

#[test]
fn runs_are_fresh_forks_that_share_nothing() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let first = bx
        .run(&warm("import os, sys, builtins\nbuiltins.LEAK = 1\nsys.modules['json'].LEAK = 2\nos.environ['LEAK'] = '3'\nglobal_fd = open('/tmp/left-open', 'w')\nprint(os.getpid(), os.getppid())"))
        .await
        .unwrap();
        assert_eq!(first.status, Verdict::Ok, "{}", text(&first.stderr));
        let worker = worker_pid(&bx).await;
        assert!(!worker.is_empty(), "the worker runs");
        let parent = text(&first.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        assert_eq!(
            parent, worker,
            "the run was forked by the worker, not started cold"
        );
        let second = bx
        .run(&warm("import os, sys, builtins, json\nprint(hasattr(builtins, 'LEAK'), hasattr(json, 'LEAK'), 'LEAK' in os.environ, any('left-open' in os.readlink(f'/proc/self/fd/{n}') for n in range(64) if os.path.lexists(f'/proc/self/fd/{n}')))"))
        .await
        .unwrap();
        assert_eq!(
            text(&second.stdout),
            "False False False False\n",
            "{}",
            text(&second.stderr)
        );
        bx.destroy().await.unwrap();
    });
}

#[test]
fn stdin_exit_codes_tracebacks_and_snippet_descriptors() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let mut cmd = warm("import sys, json, os\ndata = json.load(os.fdopen(3))\nos.fdopen(4, 'w').write(json.dumps(data['v'] * 2))\nprint(sys.stdin.read().upper())\nsys.exit(3)");
        cmd.stdin = b"hello \xc3\xa9".to_vec();
        cmd.fd3_input = Some(br#"{"v": 21}"#.to_vec());
        cmd.capture_fd4 = true;
        let out = bx.run(&cmd).await.unwrap();
        assert_eq!(
            (out.status, out.exit_code),
            (Verdict::RuntimeError, Some(3))
        );
        assert_eq!(text(&out.stdout), "HELLO É\n");
        assert_eq!(out.result.as_deref(), Some(&b"42"[..]));
        let out = bx
            .run(&warm("x = 1\nraise KeyError('nope')"))
            .await
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("Traceback (most recent call last):"),
            "{stderr}"
        );
        assert!(
            stderr.contains("main.py\", line 2") && stderr.contains("KeyError: 'nope'"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("warm worker"),
            "no worker frames in the traceback: {stderr}"
        );
        bx.destroy().await.unwrap();
    });
}

#[test]
fn limits_hold_on_the_warm_path() {
    run(async {
        let sb = sandbox();
        let limits = BoxLimits {
            memory_bytes: 128 * MIB,
            max_processes: 32,
            ..BoxLimits::default()
        };
        let bx = new_box(sb, limits).await;
        let mut spin = warm("while True: pass");
        spin.limits.wall_time = Duration::from_millis(500);
        assert_eq!(bx.run(&spin).await.unwrap().status, Verdict::Timeout);
        let mut cpu = warm("while True: pass");
        cpu.limits.cpu_time = Duration::from_secs(1);
        assert_eq!(
            bx.run(&cpu).await.unwrap().status,
            Verdict::Timeout,
            "RLIMIT_CPU applies to the forked run"
        );
        assert_eq!(
            bx.run(&warm("b = b'x' * (1 << 30)")).await.unwrap().status,
            Verdict::MemoryLimit
        );
        let flood = bx
            .run(&warm("import sys\nsys.stdout.write('A' * (50 << 20))"))
            .await
            .unwrap();
        assert_eq!(flood.status, Verdict::OutputLimit);
        let mut bomb = warm(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    );
        bomb.limits.wall_time = Duration::from_secs(1);
        let out = bx.run(&bomb).await.unwrap();
        assert!(
            matches!(
                out.status,
                Verdict::Timeout | Verdict::RuntimeError | Verdict::Killed
            ),
            "{:?}",
            out.status
        );
        let daemon = bx
            .run(&warm(
                "import subprocess\nsubprocess.Popen(['setsid', 'sleep', '300'])\nprint('ok')",
            ))
            .await
            .unwrap();
        assert_eq!(text(&daemon.stdout), "ok\n");
        let mut stopped = warm("import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)");
        stopped.limits.wall_time = Duration::from_millis(300);
        assert_eq!(bx.run(&stopped).await.unwrap().status, Verdict::Timeout);
        // Nothing of any of that is left, and a new worker serves the next run.
        let ps = bx
            .run(&RunSpec::new([
                "/bin/sh",
                "-c",
                "for p in /proc/[0-9]*; do n=${p#/proc/}; [ $n = $$ ] || echo $n; done",
            ]))
            .await
            .unwrap();
        assert_eq!(
            text(&ps.stdout).lines().count(),
            1,
            "only the init: the last run hit a limit, so the box was emptied, worker included: {}",
            text(&ps.stdout)
        );
        let ok = bx.run(&warm("print('still warm')")).await.unwrap();
        assert_eq!(text(&ok.stdout), "still warm\n");
        bx.destroy().await.unwrap();
    });
}

/// The worker runs under a uid of its own: a run can neither read it through `/proc` nor signal
/// it, and the next run is a fork of the same worker.
#[test]
fn a_run_cannot_reach_into_or_signal_its_worker() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let probe = "import os\nppid = os.getppid()\nfor name in ['mem', 'environ', 'fd']:\n    try:\n        p = f'/proc/{ppid}/{name}'\n        (os.listdir if name == 'fd' else lambda q: open(q, 'rb').read(1))(p)\n        print(name, 'open')\n    except OSError as e:\n        print(name, type(e).__name__)";
        let out = bx.run(&warm(probe)).await.unwrap();
        assert_eq!(
            text(&out.stdout),
            "mem PermissionError\nenviron PermissionError\nfd PermissionError\n",
            "{}",
            text(&out.stderr)
        );
        let worker = worker_pid(&bx).await;
        let out = bx
        .run(&warm(
            "import os, signal\nfor sig in [signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM]:\n    try:\n        os.kill(os.getppid(), sig)\n        print(sig.name, 'sent')\n    except PermissionError:\n        print(sig.name, 'refused')\nprint(os.getuid(), os.getgid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])",
        ))
        .await
        .unwrap();
        assert_eq!(
            text(&out.stdout),
            "SIGKILL refused\nSIGSTOP refused\nSIGTERM refused\n1000 1000 0000000000000000\n",
            "{}",
            text(&out.stderr)
        );
        let out = bx
            .run(&warm("import os\nprint(os.getppid())"))
            .await
            .unwrap();
        assert_eq!(
            (out.status, text(&out.stdout).trim().to_string()),
            (Verdict::Ok, worker),
            "served by the same worker"
        );
        bx.destroy().await.unwrap();
    });
}

#[test]
fn programs_run_again_report_as_the_interpreter_does() {
    run(async {
        let sb = sandbox();
        let bx = new_box(sb, BoxLimits::default()).await;
        let failing = "def inner():\n    raise ValueError('deep')\n\ninner()\n";
        for _ in 0..2 {
            // Each child compiles its program itself (the worker keeps no run's source).
            let out = bx.run(&warm(failing)).await.unwrap();
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains("File \"/tmp/prog/main.py\", line 4, in <module>"),
                "{stderr}"
            );
            assert!(
                stderr.contains("File \"/tmp/prog/main.py\", line 2, in inner"),
                "{stderr}"
            );
        }
        let a = bx.run(&warm("print('a')")).await.unwrap();
        let b = bx.run(&warm("print('b')")).await.unwrap();
        assert_eq!(
            (text(&a.stdout), text(&b.stdout)),
            ("a\n".to_string(), "b\n".to_string())
        );
        let syntax = bx.run(&warm("def broken(:\n")).await.unwrap();
        assert_eq!(syntax.status, Verdict::RuntimeError);
        assert!(
            text(&syntax.stderr).contains("SyntaxError"),
            "{}",
            text(&syntax.stderr)
        );
        bx.destroy().await.unwrap();
    });
}
