//! Tenant-isolation attacks: build products. Compile-cache entries and the Node worker's addon
//! are shared by every caller, so mallory tries to make the shared copy hers: by planting a
//! toolchain configuration where her compiles read it, by leaving a process behind that swaps
//! compile outputs, by evicting alice's entries (and the addon) and compiling them again her way.
//! Alice must get the honest program every time, and her JavaScript must keep running warm.

use super::*;

use codebeaker_engine::EngineConfig;

/// What every poisoned program prints instead of its own output.
const POISON: &str = "POISONED";

/// A fresh value per test process, so that every program here is a compile-cache miss.
fn nonce(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{what}-{}-{nanos:x}", std::process::id())
}

/// A `-toolexec` program for Go: runs each tool, then replaces whatever the linker wrote with a
/// script that prints [`POISON`].
const GO_TOOLEXEC: &str = r#"#!/bin/sh
"$@" || exit $?
case "$1" in
  */link)
    out=; prev=
    for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
    [ -n "$out" ] && printf '#!/bin/sh\necho POISONED\n' > "$out"
    ;;
esac
exit 0
"#;

/// A survivor: `survivor NAME FILE` returns at once, leaving behind a process whose main thread
/// has exited (a zombie leader) and whose second thread, for two minutes, replaces every
/// `/tmp/.codebeaker/*/out/NAME` it sees with the contents of FILE.
const SURVIVOR_C: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *target;
static char poison[1 << 20];
static ssize_t poison_len;

static char seen[1 << 20];

static void plant(const char *dir) {
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/out/%s", dir, target);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    ssize_t n = read(fd, seen, sizeof seen);
    close(fd);
    if (n == poison_len && memcmp(seen, poison, (size_t)n) == 0) return;
    snprintf(tmp, sizeof tmp, "%s/out/.swap", dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (fd < 0) return;
    if (write(fd, poison, (size_t)poison_len) == poison_len) rename(tmp, path);
    close(fd);
}

static void *swap(void *arg) {
    (void)arg;
    time_t end = time(NULL) + 120;
    while (time(NULL) < end) {
        DIR *d = opendir("/tmp/.codebeaker");
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (e->d_name[0] == '.') continue;
                char dir[4096];
                snprintf(dir, sizeof dir, "/tmp/.codebeaker/%s", e->d_name);
                plant(dir);
            }
            closedir(d);
        }
        usleep(200);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    target = argv[1];
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return 3;
    poison_len = read(fd, poison, sizeof poison);
    close(fd);
    if (poison_len <= 0) return 4;
    if (fork() != 0) return 0;
    setsid();
    pthread_t t;
    pthread_create(&t, NULL, swap, NULL);
    syscall(SYS_exit, 0);
    return 0;
}
"#;

/// The Node worker's addon as CodeBeaker builds it, plus what mallory adds: on load, it leaves a
/// mark in the box of whoever loads it.
fn evil_addon_source() -> String {
    format!(
        "{}\n__attribute__((constructor)) static void mallory_was_here(void) {{\n    \
         int fd = open(\"/tmp/ADDON_POISONED\", O_WRONLY | O_CREAT, 0644);\n    \
         if (fd >= 0) close(fd);\n}}\n",
        include_str!("../../../languages/assets/warm/node.c")
    )
}

/// A C program that prints `text`, with `padding` bytes of initialised data (so that it takes
/// that much room in the compile cache).
fn c_program(text: &str, padding: usize) -> String {
    format!(
        "#include <stdio.h>\nstatic volatile char pad[{}] = {{1}};\n\
         int main(void) {{ puts(\"{text}\"); return pad[0] - 1; }}\n",
        padding.max(1)
    )
}

/// What alice's JavaScript reports: whether it ran in the warm worker, and whether a poisoned
/// addon marked the box.
const JS_PROBE: &str = "const fs = require('fs');\n\
    console.log(process.execArgv.includes('--single-threaded') ? 'warm' : 'cold', \
    fs.existsSync('/tmp/ADDON_POISONED') ? 'poisoned' : 'clean');";

/// Runs a bash script in `session` and insists that it succeeded.
async fn bash_ok(client: &mut Client, session: &Session, script: &str) -> Value {
    let run = client.run(session, "bash", script, RUN_MS).await;
    assert_eq!(run["success"], true, "{run}");
    run
}

/// Builds the survivor in mallory's session and starts it against `target`, with `poison` (a
/// file of her box) as what it plants.
async fn start_survivor(mallory: &mut Client, session: &Session, target: &str, poison: &str) {
    let written = mallory
        .exec(
            session,
            json!({"type": "write_file", "path": "survivor.c", "content": SURVIVOR_C}),
        )
        .await;
    assert_eq!(written["success"], true, "{written}");
    bash_ok(
        mallory,
        session,
        "gcc -O2 -pthread -o /tmp/survivor /workspace/survivor.c",
    )
    .await;
    bash_ok(
        mallory,
        session,
        &format!("/tmp/survivor {target} {poison} </dev/null >/dev/null 2>&1"),
    )
    .await;
}

/// An engine of its own with a small compile-cache budget per caller (and a cache of its own,
/// starting empty), served with alice's and mallory's tokens: so that filling a budget is cheap.
/// The cache's directory is removed when the returned guard drops.
async fn two_callers_with_small_cache(max_bytes: u64) -> (Client, Client, tempfile::TempDir) {
    // Not under /tmp: every box has a /tmp of its own over it, which would hide the cache.
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let config = EngineConfig {
        cache_dir: dir.path().join("compile"),
        cache_max_bytes: max_bytes,
        ..common::engine_config(0)
    };
    let (alice, mallory) = two_callers_of(common::start_engine(config), "small-cache").await;
    (alice, mallory, dir)
}

#[test]
fn a_planted_go_config_does_not_reach_the_shared_compile_cache() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let m = mallory.open(json!({"language": "go"})).await;
        bash_ok(
            &mut mallory,
            &m,
            &format!(
                "mkdir -p /tmp/.config/go\ncat > /tmp/evil.sh <<'EOF'\n{GO_TOOLEXEC}EOF\n\
                 chmod +x /tmp/evil.sh\n\
                 echo 'GOFLAGS=-toolexec=/tmp/evil.sh' > /tmp/.config/go/env\n"
            ),
        )
        .await;
        let word = nonce("go");
        let program = format!(
            "package main\n\nimport \"fmt\"\n\nfunc main() {{ fmt.Println(\"honest {word}\") }}\n"
        );
        let honest = format!("honest {word}\n");
        // What mallory gets herself is hers to spoil; what is stored is not.
        mallory.run(&m, "go", &program, RUN_MS).await;

        let a = alice.open(json!({"language": "go"})).await;
        let mine = alice.run(&a, "go", &program, RUN_MS).await;
        assert_eq!(mine["success"], true, "{mine}");
        assert_eq!(
            mine["result"]["stdout"],
            json!(honest),
            "alice got mallory's program: {mine}"
        );
        assert_eq!(mine["result"]["compileCacheHit"], true, "{mine}");
        alice.close(a).await;
        mallory.close(m).await;
    });
}

#[test]
fn a_survivor_cannot_swap_compile_outputs() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let m = mallory.open(json!({"language": "bash"})).await;
        bash_ok(
            &mut mallory,
            &m,
            "printf '#!/bin/sh\\necho POISONED\\n' > /tmp/poison",
        )
        .await;
        start_survivor(&mut mallory, &m, "main", "/tmp/poison").await;
        let word = nonce("c");
        let program = c_program(&format!("honest {word}"), 1);
        let honest = format!("honest {word}\n");
        mallory.run(&m, "c", &program, RUN_MS).await;

        let a = alice.open(json!({"language": "c"})).await;
        let mine = alice.run(&a, "c", &program, RUN_MS).await;
        assert_eq!(
            mine["result"]["stdout"],
            json!(honest),
            "alice got mallory's program: {mine}"
        );
        assert!(!text(&mine["result"]["stdout"]).contains(POISON), "{mine}");
        alice.close(a).await;
        mallory.close(m).await;
    });
}

#[test]
fn evicting_then_recompiling_leaves_alices_entries_and_the_addon_alone() {
    attack(async {
        let (mut alice, mut mallory, _cache) = two_callers_with_small_cache(4 * MIB_U64).await;
        let word = nonce("evict");
        let program = c_program(&format!("honest {word}"), 1);
        let honest = format!("honest {word}\n");

        let a = alice.open(json!({"language": "c"})).await;
        let first = alice.run(&a, "c", &program, RUN_MS).await;
        assert_eq!(first["result"]["stdout"], json!(honest), "{first}");
        assert_eq!(first["result"]["compileCacheHit"], false, "{first}");
        let js = alice.open(json!({"language": "javascript"})).await;
        let before = alice.run(&js, "javascript", JS_PROBE, RUN_MS).await;
        assert_eq!(before["result"]["stdout"], "warm clean\n", "{before}");
        alice.close(js).await;

        // Mallory fills the cache three times over, then leaves a survivor that poisons her next
        // compiles and compiles alice's program herself.
        let m = mallory.open(json!({"language": "bash"})).await;
        bash_ok(
            &mut mallory,
            &m,
            "printf '#!/bin/sh\\necho POISONED\\n' > /tmp/poison",
        )
        .await;
        for i in 0..12 {
            let filler = c_program(&format!("filler {word} {i}"), 1 << 20);
            mallory.run(&m, "c", &filler, RUN_MS).await;
        }
        start_survivor(&mut mallory, &m, "main", "/tmp/poison").await;
        mallory.run(&m, "c", &program, RUN_MS).await;

        // Alice's entry is still hers, and honest.
        let again = alice.run(&a, "c", &program, RUN_MS).await;
        assert_eq!(again["result"]["stdout"], json!(honest), "{again}");
        assert_eq!(
            again["result"]["compileCacheHit"], true,
            "mallory evicted alice's entry: {again}"
        );
        // The addon too: a new JavaScript session still runs warm.
        let js = alice.open(json!({"language": "javascript"})).await;
        let after = alice.run(&js, "javascript", JS_PROBE, RUN_MS).await;
        assert_eq!(after["result"]["stdout"], "warm clean\n", "{after}");
        alice.close(js).await;
        alice.close(a).await;
        mallory.close(m).await;
    });
}

#[test]
fn the_node_addon_is_never_built_where_a_caller_can_reach_it() {
    attack(async {
        // A cache of its own: the addon is not built yet when mallory starts.
        let (mut alice, mut mallory, _cache) = two_callers_with_small_cache(64 * MIB_U64).await;
        let m = mallory.open(json!({"language": "bash"})).await;
        let written = mallory
            .exec(
                &m,
                json!({"type": "write_file", "path": "evil.c", "content": evil_addon_source()}),
            )
            .await;
        assert_eq!(written["success"], true, "{written}");
        bash_ok(
            &mut mallory,
            &m,
            "gcc -shared -fPIC -O2 -o /tmp/evil.node /workspace/evil.c",
        )
        .await;
        start_survivor(&mut mallory, &m, "warm.node", "/tmp/evil.node").await;
        // Her first JavaScript is the first time this engine needs the addon.
        mallory
            .run(&m, "javascript", "console.log('hello')", RUN_MS)
            .await;

        let js = alice.open(json!({"language": "javascript"})).await;
        for _ in 0..2 {
            let run = alice.run(&js, "javascript", JS_PROBE, RUN_MS).await;
            assert_eq!(
                run["result"]["stdout"], "warm clean\n",
                "alice's JavaScript ran cold or under mallory's addon: {run}"
            );
        }
        alice.close(js).await;
        mallory.close(m).await;
    });
}

const MIB_U64: u64 = 1024 * 1024;
