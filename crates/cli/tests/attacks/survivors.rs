//! Tenant-isolation attacks: survivors. A run ends empty: every process it started is gone when
//! it ends, whatever it did (threads whose leader exited, `setsid`, `SIGSTOP`, re-parenting,
//! children of a warm run), and nothing it left burns CPU or writes files between runs.

use super::*;

/// A program that leaves a process whose main thread has called `SYS_exit` while another thread
/// keeps writing a heartbeat into the workspace: its leader shows as a zombie, the process lives
/// on. `{detach}` is how the process gets away from the run (a fork, or `setsid`).
fn zombie_leader(detach: &str, marker: &str) -> String {
    format!(
        r#"import ctypes, os, sys, threading, time
{detach}
beating = threading.Event()
def beat():
    n = 0
    while True:
        n += 1
        with open('/workspace/beat.tmp', 'w') as f:
            f.write(str(n))
        os.replace('/workspace/beat.tmp', '/workspace/beat')
        beating.set()
        x = 0
        for i in range(200000):
            x += i
        time.sleep(0.01)
threading.Thread(target=beat, name='{marker}').start()
# The leader leaves only once the survivor beats, however slow the machine.
beating.wait(60)
time.sleep(0.2)
ctypes.CDLL(None).syscall(60, 0)
"#
    )
}

/// Reads the heartbeat twice, a second apart, in a new run: a survivor would have moved it.
const HEARTBEAT_PROBE: &str = "a=$(cat /workspace/beat 2>/dev/null); sleep 1; b=$(cat /workspace/beat 2>/dev/null); echo \"$a $b\"";

fn assert_heartbeat_stopped(run: &Value) {
    assert_eq!(run["success"], true, "{run}");
    let out = text(&run["result"]["stdout"]).trim().to_string();
    let (a, b) = out.split_once(' ').unwrap_or((&out, ""));
    assert!(
        !a.is_empty(),
        "the survivor never beat, so the probe proves nothing: {run}"
    );
    assert_eq!(
        a, b,
        "a process of the previous run is still running: {run}"
    );
}

/// CPU time of the box's cgroup (v1 cpuacct or v2 cpu.stat), in nanoseconds.
fn box_cpu_ns(box_name: &str) -> Option<u64> {
    if let Some(v) = host::box_file(box_name, "cpuacct.usage") {
        return v.trim().parse().ok();
    }
    host::box_file(box_name, "cpu.stat").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|us| us * 1000)
    })
}

#[test]
fn a_zombie_leader_with_live_threads_does_not_outlive_its_run() {
    attack(async {
        let (_alice, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "bash"})).await;
        let marker = format!("cb-zleader-{}", std::process::id());
        // A cold run (bash) starts the program in the background and ends at once.
        let script = zombie_leader("", &marker);
        let written = mallory
            .exec(
                &s,
                json!({"type": "write_file", "path": "zl.py", "content": script}),
            )
            .await;
        assert_eq!(written["success"], true, "{written}");
        let run = mallory
            .run(
                &s,
                "bash",
                // The run ends once the survivor beats, however slow the machine.
                &format!("(exec -a {marker} python3 zl.py &) ; for i in $(seq 600); do [ -e beat ] && break; sleep 0.1; done; sleep 0.2; echo started"),
                RUN_MS,
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "started\n", "{run}");
        let probe = mallory.run(&s, "bash", HEARTBEAT_PROBE, RUN_MS).await;
        assert_heartbeat_stopped(&probe);
        assert!(
            processes_with(&marker).is_empty(),
            "{:?}",
            processes_with(&marker)
        );
        mallory.close(s).await;
    });
}

#[test]
fn a_warm_runs_children_do_not_outlive_it_or_burn_cpu_between_runs() {
    attack(async {
        let (_alice, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "python"})).await;
        // Short enough for a process name (15 bytes), which is where the host finds it.
        let marker = format!("wl{}", std::process::id() % 1_000_000);
        // In a warm Python run: a forked child in a session of its own becomes the zombie-leader
        // survivor.
        let detach = format!(
            r#"if os.fork() != 0:
    print('parent done', flush=True)
    for _ in range(600):
        if os.path.exists('/workspace/beat'):
            break
        time.sleep(0.1)
    time.sleep(0.2)
    sys.exit(0)
os.setsid()
ctypes.CDLL(None).prctl(15, b'{marker}', 0, 0, 0)"#
        );
        let code = zombie_leader(&detach, &marker);
        let run = mallory.run(&s, "python", &code, RUN_MS).await;
        assert_eq!(text(&run["result"]["stdout"]), "parent done\n", "{run}");
        let probe = mallory.run(&s, "bash", HEARTBEAT_PROBE, RUN_MS).await;
        assert_heartbeat_stopped(&probe);
        // Between runs nothing of the box may use the CPU: measured over a quiet window after
        // the probe, so that what the probe itself costs (much more on a slow, emulated machine)
        // does not count. A survivor spinning through it would use most of the 1.5 s.
        let cpu_before = box_cpu_ns(&s.box_name).expect("the box's CPU time");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let used = box_cpu_ns(&s.box_name).expect("the box's CPU time") - cpu_before;
        assert!(
            used < 300_000_000,
            "the box used {} ms of CPU between runs",
            used / 1_000_000
        );
        assert!(processes_with(&marker).is_empty());
        assert_eq!(mallory.leftovers(&s).await, Vec::<String>::new());
        // The session still runs warm afterwards.
        mallory.still_works(&s).await;
        mallory.close(s).await;
    });
}
