//! Processes that try to outlive their run or their session, and a stopped warm worker: every run
//! ends within its wall limit and leaves nothing running.

use super::*;

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
