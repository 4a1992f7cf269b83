//! Tenant-isolation attacks: warm_state. A warm run is a fork of its worker, so whatever the
//! worker holds (memory, descriptors) every later run holds too, and whatever a run changes in
//! its worker every later run inherits. Mallory's runs try to leave something for later runs, hers
//! and alice's; none may find anything, and alice's runs see only defaults.

use super::*;

/// Runs `code` in `language` until a run comes from the session's warm worker (the first may
/// start cold while the worker starts); returns that run's stdout. `code` prints its parent pid
/// first, on a line of its own: a cold run's parent is the box's init (pid 1).
async fn run_warm(c: &mut Client, s: &Session, language: &str, code: &str) -> String {
    for _ in 0..50 {
        let run = c.run(s, language, code, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        let out = text(&run["result"]["stdout"]).to_string();
        if out.lines().next().is_some_and(|ppid| ppid.trim() != "1") {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no {language} run came from a warm worker");
}

/// The parent pid line of a run's output, and the rest.
fn split_ppid(out: &str) -> (&str, &str) {
    out.split_once('\n').unwrap_or((out, ""))
}

/// A secret that only run 1 of the attacker ever held, as one identifier, and the two halves a
/// probe looks for without ever putting them together in its own memory.
fn run_secret() -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (
        format!("cbwarm_{:x}_", std::process::id()),
        format!("{:x}zq", nanos & 0xffff_ffff_ffff),
    )
}

/// A Python program that looks for `head` followed by `tail` everywhere it can reach: the frames
/// above it (the worker's), `sys.modules['__main__']`, every object the garbage collector knows
/// and everything they reference, `linecache`, and, last, every byte of its own memory (which is
/// a copy of the worker's). It prints its parent pid, then what it found.
fn python_probe(head: &str, tail: &str) -> String {
    format!(
        r#"import gc, linecache, os, sys
print(os.getppid())
HEAD, TAIL = {head:?}, {tail:?}
HEAD_B, TAIL_B = HEAD.encode(), TAIL.encode()

def has(x):
    if isinstance(x, str):
        h, t = HEAD, TAIL
    elif isinstance(x, (bytes, bytearray)):
        h, t = HEAD_B, TAIL_B
    else:
        return False
    i = x.find(h)
    while i >= 0:
        if x[i + len(h):i + len(h) + len(t)] == t:
            return True
        i = x.find(h, i + 1)
    return False

def memory():
    # First, before the searches below copy anything: every readable mapping of this process
    # (which may make itself dumpable to read its own /proc/self/mem).
    import ctypes
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)
    mem = open('/proc/self/mem', 'rb', 0)
    with open('/proc/self/maps') as maps:
        regions = maps.read().splitlines()
    overlap = len(HEAD_B) + len(TAIL_B)
    for line in regions:
        fields = line.split()
        if fields[1][0] != 'r' or (len(fields) > 5 and fields[5].startswith('[v')):
            continue
        lo, hi = (int(v, 16) for v in fields[0].split('-'))
        pos = lo
        while pos < hi:
            n = min(1 << 20, hi - pos)
            try:
                mem.seek(pos)
                chunk = mem.read(min(n + overlap, hi - pos))
            except (OSError, ValueError, OverflowError):
                break
            if has(chunk):
                return True
            pos += n
    return False

found = []
if memory():
    found.append('memory')
frames, f = [], sys._getframe(0).f_back
while f is not None:
    if f.f_globals is not globals():
        frames += [k for k in f.f_globals if not k.startswith('__')]
    f = f.f_back
if frames:
    found.append('worker names in outer frames: ' + ','.join(sorted(set(frames))[:8]))
if sys.modules['__main__'].__dict__ is not globals():
    found.append('__main__ is not this program')
seen, todo = set(), list(gc.get_objects())
while todo and len(seen) < 3000000:
    o = todo.pop()
    if id(o) in seen:
        continue
    seen.add(id(o))
    if has(o):
        found.append('gc: ' + type(o).__name__)
        break
    todo.extend(gc.get_referents(o))
if any(len(v) > 2 and has(''.join(v[2])) for v in list(linecache.cache.values())):
    found.append('linecache')
print('found', found)
"#
    )
}

/// Run 1 of a Python session holds a secret in its source; no later run of that session, nor of
/// another caller's, finds it anywhere, and none reaches the worker's own namespace.
#[test]
fn a_python_run_finds_nothing_of_an_earlier_run_or_of_its_worker() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let sa = alice.open(json!({"language": "python"})).await;
        let sm = mallory.open(json!({"language": "python"})).await;
        let (head, tail) = run_secret();
        let secret = format!("{head}{tail}");
        // Script mode: the program is the source itself, the way the worker once cached it.
        let plant = format!(
            "import os\nprint(os.getppid())\n{secret} = '{secret}'\nkept = ['{secret}' * 3]\nprint('planted')"
        );
        let planted = run_warm(&mut mallory, &sm, "python", &plant).await;
        let (worker, rest) = split_ppid(&planted);
        assert_eq!(rest, "planted\n", "{planted}");
        // A snippet run in between, as a platform would send: its input and code hold nothing.
        let run = mallory
            .exec(
                &sm,
                json!({"type": "execute", "code": "result = input_data", "input": {"v": 1}}),
            )
            .await;
        assert_eq!(run["success"], true, "{run}");

        let probe = python_probe(&head, &tail);
        let looked = run_warm(&mut mallory, &sm, "python", &probe).await;
        let (probe_worker, found) = split_ppid(&looked);
        assert_eq!(
            probe_worker, worker,
            "the probe must be a fork of the worker that ran the secret: {looked}"
        );
        assert_eq!(found, "found []\n", "mallory's run 1 reached her run 2");
        let looked = run_warm(&mut alice, &sa, "python", &probe).await;
        assert_eq!(
            split_ppid(&looked).1,
            "found []\n",
            "mallory's run reached alice's"
        );
        alice.close(sa).await;
        mallory.close(sm).await;
    });
}

/// A JavaScript program that prints its parent pid, its thread count, then every descriptor
/// above 4 it holds as `fd link` lines.
const NODE_FDS: &str = r#"const fs = require('fs');
console.log(process.ppid);
console.log(fs.readFileSync('/proc/self/status', 'utf8').match(/Threads:\s*(\d+)/)[0].replace(/\s+/, ' '));
for (const name of fs.readdirSync('/proc/self/fd')) {
  if (Number(name) < 5) continue;
  try {
    console.log(name, fs.readlinkSync('/proc/self/fd/' + name));
  } catch (_) { /* closed meanwhile (the directory listing's own) */ }
}
"#;

/// The pipes (by inode) among `NODE_FDS` output lines.
fn pipes(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|link| link.starts_with("pipe:"))
        .collect()
}

/// How many descriptors of `kind` (`eventpoll`, `eventfd`) a `NODE_FDS` listing holds.
fn count(listing: &str, kind: &str) -> usize {
    let link = format!("anon_inode:[{kind}]");
    listing
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(link.as_str()))
        .count()
}

/// A warm Node run holds no descriptor of its worker's (today's channel between runs): it has
/// one thread, so one event loop, and holds one loop's epoll and eventfd, its own; and none of
/// the pipes above 4 that one run holds is held by the next (pipe inodes are never reused soon).
#[test]
fn a_node_run_holds_no_descriptor_of_its_worker_or_of_an_earlier_run() {
    attack(async {
        let (_alice, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "javascript"})).await;
        let first = run_warm(&mut mallory, &s, "javascript", NODE_FDS).await;
        let second = run_warm(&mut mallory, &s, "javascript", NODE_FDS).await;
        let (w1, fds1) = split_ppid(&first);
        let (w2, fds2) = split_ppid(&second);
        assert_eq!(
            w1, w2,
            "both runs are forks of one worker: {first}\n{second}"
        );
        for listing in [fds1, fds2] {
            assert!(listing.starts_with("Threads: 1\n"), "{listing}");
            assert!(
                count(listing, "eventpoll") <= 1 && count(listing, "eventfd") <= 1,
                "descriptors of the worker's other event loops:\n{listing}"
            );
        }
        let earlier = pipes(fds1);
        let shared: Vec<&str> = pipes(fds2)
            .into_iter()
            .filter(|p| earlier.contains(p))
            .collect();
        assert!(
            shared.is_empty(),
            "pipes held by both runs (the worker's): {shared:?}\nrun 1:\n{fds1}\nrun 2:\n{fds2}"
        );
        // The run's own loop still works: timers, a child process, a pipe.
        let run = mallory
            .run(
                &s,
                "javascript",
                "setTimeout(() => console.log(require('child_process').execSync('echo ok').toString().trim()), 10);",
                RUN_MS,
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "ok\n", "{run}");
        mallory.close(s).await;
    });
}

/// What a Python run sees of itself and of its parent: its parent pid, its own open-files limit
/// and nice value, and its parent's (from `/proc`, which anyone may read).
const PY_LIMITS: &str = r#"import os, resource
ppid = os.getppid()
print(ppid)
limits = open(f'/proc/{ppid}/limits').read()
worker_nofile = [l.split()[3:5] for l in limits.splitlines() if l.startswith('Max open files')][0]
worker_nice = open(f'/proc/{ppid}/stat').read().rsplit(')', 1)[1].split()[16]
print('self', resource.getrlimit(resource.RLIMIT_NOFILE), os.getpriority(os.PRIO_PROCESS, 0))
print('worker', worker_nofile, worker_nice)
"#;

/// A run lowers its worker's open-files limit, raises its nice value and stops it: each is
/// refused, and the next run, warm from the same worker and prompt, sees the defaults that
/// another caller's fresh session sees.
#[test]
fn a_run_cannot_change_or_stop_its_worker() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let sa = alice.open(json!({"language": "python"})).await;
        let sm = mallory.open(json!({"language": "python"})).await;
        let defaults = run_warm(&mut alice, &sa, "python", PY_LIMITS).await;
        let before = run_warm(&mut mallory, &sm, "python", PY_LIMITS).await;
        let (worker, seen) = split_ppid(&before);
        assert_eq!(seen, split_ppid(&defaults).1, "{before}\n{defaults}");

        let tamper = r#"import os, resource, signal
print(os.getppid())
ppid = os.getppid()
for name, attempt in [
    ('prlimit', lambda: resource.prlimit(ppid, resource.RLIMIT_NOFILE, (16, 16))),
    ('setpriority', lambda: os.setpriority(os.PRIO_PROCESS, ppid, 19)),
    ('sigstop', lambda: os.kill(ppid, signal.SIGSTOP)),
]:
    try:
        attempt()
        print(name, 'done')
    except PermissionError:
        print(name, 'refused')
"#;
        let limit = 3000;
        let run = mallory.run(&sm, "python", tamper, limit).await;
        let out = text(&run["result"]["stdout"]);
        assert_eq!(
            split_ppid(out),
            (
                worker,
                "prlimit refused\nsetpriority refused\nsigstop refused\n"
            ),
            "{run}"
        );
        assert!(duration_ms(&run) < limit + OVERSHOOT_MS, "{run}");

        let started = Instant::now();
        let after = run_warm(&mut mallory, &sm, "python", PY_LIMITS).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the next run waited {:?}",
            started.elapsed()
        );
        assert_eq!(
            split_ppid(&after),
            (worker, split_ppid(&defaults).1),
            "the next run is a fork of the same, unchanged worker, with the defaults: {after}"
        );
        let again = run_warm(&mut alice, &sa, "python", PY_LIMITS).await;
        assert_eq!(split_ppid(&again).1, split_ppid(&defaults).1, "{again}");
        alice.close(sa).await;
        mallory.close(sm).await;
    });
}

/// A run plants code where a starting Python worker would once have imported it (its current
/// directory, first on `sys.path` under `-c`, and the user site-packages under `HOME`), then
/// makes the box restart its worker (a run that times out ends every process of the box). The
/// new worker runs none of it, and later runs stay warm.
#[test]
fn a_run_cannot_plant_code_in_the_next_worker() {
    attack(async {
        let (_alice, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "python"})).await;
        let before = run_warm(&mut mallory, &s, "python", "import os\nprint(os.getppid())").await;
        // Cold runs may import what they planted (their own files); only a worker must not.
        let planted = "import builtins\nif b'warm worker' in open('/proc/self/cmdline', 'rb').read():\n    open('/workspace/planted-ran', 'a').write(__name__ + '\\n')\n    builtins.CB_PLANTED = True\n";
        let plant = format!(
            "import os, site, sys\nprint(os.getppid())\ncode = {planted:?}\nfor name in ['json', 'collections', 'datetime', 'decimal', 'random', 'string', 'ctypes', 'socket', 'traceback']:\n    open(f'/workspace/{{name}}.py', 'w').write(code)\nuser_site = site.getusersitepackages()\nos.makedirs(user_site, exist_ok=True)\nopen(os.path.join(user_site, 'cbplant.pth'), 'w').write('import usercustomize\\n')\nopen(os.path.join(user_site, 'sitecustomize.py'), 'w').write(code)\nopen(os.path.join(user_site, 'usercustomize.py'), 'w').write(code)\nprint(user_site)"
        );
        let run = mallory.run(&s, "python", &plant, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        let run = mallory.run(&s, "python", "while True: pass", 500).await;
        assert_eq!(status(&run), "timeout", "{run}");
        let probe = "import builtins, os\nprint(os.getppid())\nprint(hasattr(builtins, 'CB_PLANTED'), os.path.exists('/workspace/planted-ran'))";
        let after = run_warm(&mut mallory, &s, "python", probe).await;
        let (worker, seen) = split_ppid(&after);
        assert_ne!(
            worker,
            split_ppid(&before).0,
            "the worker was restarted: {after}"
        );
        assert_eq!(seen, "False False\n", "the new worker ran planted code");
        mallory.close(s).await;
    });
}
