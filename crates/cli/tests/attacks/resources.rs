//! Resource attacks: fork and thread bombs, memory bombs (in memory and in files), CPU spinners
//! in many threads and output floods, each ended by its limit with the box still answering.

use super::*;

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
