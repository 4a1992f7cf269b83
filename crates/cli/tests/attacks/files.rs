//! File attacks: sparse and huge files, filling the tmpfs mounts, deep trees, symlink loops,
//! symlinks planted out of the workspace, FIFOs and sockets, each with a bounded answer.

use super::*;

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
