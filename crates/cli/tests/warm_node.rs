//! The warm path for JavaScript, through the engine: runs are forks of one pre-started Node in
//! the session's box (its fork server built on first use and kept in the compile cache), they
//! behave as `node main.js` would, share nothing with each other, and every limit still holds.

use codebeaker_engine::{Caller, Engine, SessionOptions};
use codebeaker_protocol::commands::Command;
use serde_json::{json, Value};

use crate::common::{caller, command, engine, engine_config, open_session, run};

/// A JavaScript session of a caller named `name`, through the shared engine.
async fn session(name: &str) -> (Caller, String) {
    let who = caller(name);
    let id = open_session(engine(), &who, "javascript").await;
    (who, id)
}

async fn script(who: &Caller, id: &str, code: &str) -> Value {
    command(engine(), who, id, json!({"type": "execute", "code": code}))
        .await
        .1
}

/// The result with its output cut short, for assertion messages.
fn brief(result: &Value) -> Value {
    let mut result = result.clone();
    for stream in ["stdout", "stderr"] {
        if let Some(text) = result[stream].as_str() {
            result[stream] = Value::String(text.chars().take(300).collect());
        }
    }
    result
}

fn stdout(result: &Value) -> &str {
    result["stdout"].as_str().unwrap_or_default()
}

#[test]
fn runs_are_forks_of_one_worker_that_share_nothing() {
    run(async {
        let (who, id) = session("node-fresh").await;
        // The first run may start cold (the worker is still starting); after it, runs are warm.
        script(&who, &id, "0").await;
        let first = script(
            &who,
            &id,
            "globalThis.LEAK = 1; process.env.LEAK = '1'; Object.prototype.polluted = true;\n\
         require('fs').openSync('/tmp/left-open', 'w');\n\
         console.log(process.pid, process.ppid, require('fs').readlinkSync('/proc/self'));",
        )
        .await;
        assert_eq!(first["status"], "ok", "{first}");
        let fields: Vec<&str> = stdout(&first).split_whitespace().collect();
        assert_eq!(fields.len(), 3, "{first}");
        assert_eq!(fields[0], fields[2], "process.pid is the run's own pid");
        assert_ne!(
            fields[1], "1",
            "the run was forked by the worker, not started cold"
        );
        let second = script(
        &who,
        &id,
        "const fs = require('fs');\n\
         const open = fs.readdirSync('/proc/self/fd').some((n) => { try { return fs.readlinkSync('/proc/self/fd/' + n).includes('left-open'); } catch (_) { return false; } });\n\
         console.log(typeof LEAK, 'LEAK' in process.env, ({}).polluted === true, open, process.ppid);",
    )
    .await;
        let text = stdout(&second);
        assert!(
            text.starts_with("undefined false false false "),
            "nothing of the earlier run is visible: {second}"
        );
        assert_eq!(
            text.split_whitespace().last(),
            Some(fields[1]),
            "both runs came from the same worker"
        );
        engine().close_session(&who, &id).await.unwrap();
    });
}

#[test]
fn programs_behave_as_under_node() {
    run(async {
        let (who, id) = session("node-behaviour").await;
        script(&who, &id, "0").await;
        // Snippets, with a result computed after a timer.
        let (ok, result, error) = command(engine(),
        &who,
        &id,
        json!({"type": "execute", "input": {"value": 21},
               "code": "var result = new Promise((r) => setTimeout(() => r({ output: input_data.value * 2 }), 20));"}),
    )
    .await;
        assert!(ok, "{error:?} {result}");
        assert_eq!(result["output"], json!({"output": 42}));
        // The worker's own names and Node's globals for `-e` scripts are not the program's.
        let (ok, result, error) = command(engine(),
        &who,
        &id,
        json!({"type": "execute", "input": {},
               "code": "const request = 1; let path = 2; const native = 3;\nvar result = [typeof module, typeof exports, typeof __filename, typeof globalThis.require];"}),
    )
    .await;
        assert!(ok, "{error:?} {result}");
        assert_eq!(
            result["output"],
            json!(["undefined", "undefined", "undefined", "function"]),
            "only the snippet runner's `require` is global"
        );
        // stdin, argv, cwd, environment and 'exit' listeners.
        let (ok, result, _) = command(engine(),
        &who,
        &id,
        json!({"type": "execute", "stdin": "a line\n",
               "code": "process.on('exit', (c) => console.log('exit', c));\n\
                        console.log(JSON.stringify(require('fs').readFileSync(0, 'utf8')), process.argv.length, process.cwd(), process.env.HOME);"}),
    )
    .await;
        assert!(ok, "{result}");
        assert_eq!(stdout(&result), "\"a line\\n\" 2 /workspace /tmp\nexit 0\n");
        // Exit codes: process.exit, process.exitCode, an uncaught exception, a failing listener.
        for (code, exit) in [
            ("process.exit(3)", 3),
            ("process.exitCode = 4", 4),
            ("throw new Error('boom')", 1),
            ("process.on('exit', () => { throw new Error('late') })", 1),
            (
                "process.on('exit', () => { throw new Error('late') }); process.exit(5)",
                5,
            ),
        ] {
            let result = script(&who, &id, code).await;
            assert_eq!(result["exitCode"], exit, "{code}: {result}");
            assert_eq!(result["status"], "runtime_error", "{code}: {result}");
        }
        let thrown = script(&who, &id, "function f() { throw new Error('boom') }\nf();").await;
        assert!(
            thrown["stderr"]
                .as_str()
                .unwrap_or_default()
                .contains("Error: boom"),
            "{thrown}"
        );
        // ES modules load through dynamic import as they do under node.
        let result = script(
            &who,
            &id,
            "import('node:path').then((p) => console.log(p.basename('/a/b.txt')));",
        )
        .await;
        assert_eq!(stdout(&result), "b.txt\n", "{result}");
        // Threads a fork does not inherit start again in the child: worker threads, libuv's pool
        // (asynchronous fs, zlib) and crypto.
        let threads = script(
        &who,
        &id,
        "const { Worker } = require('worker_threads');\n\
         new Worker(\"require('worker_threads').parentPort.postMessage(6 * 7)\", { eval: true })\n  .on('message', (m) => console.log('worker', m));\n\
         require('fs').readFile('/etc/hostname', (e) => console.log('readFile', !e));\n\
         require('zlib').gzip('hello', (e, b) => console.log('gzip', b.length > 0));\n\
         console.log('sha256', require('crypto').createHash('sha256').update('x').digest('hex').slice(0, 8));",
    )
    .await;
        let mut lines: Vec<&str> = stdout(&threads).lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            ["gzip true", "readFile true", "sha256 2d711642", "worker 42"],
            "{threads}"
        );
        // The program is the main module, as under node; with a package.json of type "module" in
        // the workspace (where the program runs as if it lived), it is an ES module, and one
        // elsewhere changes nothing.
        let main = script(
            &who,
            &id,
            "console.log(require.main === module, module.id, typeof __filename)",
        )
        .await;
        assert_eq!(stdout(&main), "true . string\n", "{main}");
        script(
            &who,
            &id,
            "require('fs').writeFileSync('/tmp/package.json', '{\"type\": \"module\"}')",
        )
        .await;
        let still = script(&who, &id, "console.log(typeof require)").await;
        assert_eq!(stdout(&still), "function\n", "{still}");
        script(
            &who,
            &id,
            "const fs = require('fs');\n\
             fs.writeFileSync('package.json', '{\"type\": \"module\"}');\n\
             fs.writeFileSync('helper.js', 'export const twice = (x) => 2 * x;');",
        )
        .await;
        let esm = script(
            &who,
            &id,
            "import { basename } from 'node:path';\nimport { twice } from './helper.js';\n\
         console.log(basename('/a/b.txt'), typeof require, twice(21), import.meta.url);",
        )
        .await;
        assert_eq!(
            stdout(&esm),
            "b.txt undefined 42 file:///workspace/main.js\n",
            "{esm}"
        );
        engine().close_session(&who, &id).await.unwrap();
    });
}

#[test]
fn limits_hold_on_the_node_warm_path() {
    run(async {
        let (who, id) = session("node-limits").await;
        script(&who, &id, "0").await;
        let cases = [
            (
                json!({"type": "execute", "timeout": 1, "code": "for (;;) {}"}),
                "timeout",
            ),
            (
                json!({"type": "execute", "code": "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));"}),
                "memory_limit",
            ),
            (
                json!({"type": "execute", "code": "const s = 'x'.repeat(1 << 16); for (;;) require('fs').writeSync(1, s);"}),
                "output_limit",
            ),
        ];
        for (command, status) in cases {
            let (ok, result, _) =
                crate::common::command(engine(), &who, &id, command.clone()).await;
            assert!(!ok, "{command}: {}", brief(&result));
            assert_eq!(result["status"], status, "{command}: {}", brief(&result));
            // The box is emptied after such a run; the next run still works.
            let next = script(&who, &id, "console.log('still here')").await;
            assert_eq!(stdout(&next), "still here\n", "after {command}: {next}");
        }
        // A process left behind is gone after the run, and the worker is not reachable.
        let result = script(
        &who,
        &id,
        "const { spawn } = require('child_process');\n\
         spawn('/bin/sleep', ['30'], { detached: true, stdio: 'ignore' }).unref();\n\
         try { process.kill(process.ppid, 'SIGKILL'); console.log('killed its worker'); } catch (e) { console.log(e.code); }",
    )
    .await;
        assert_eq!(result["status"], "ok", "{result}");
        let after = script(
        &who,
        &id,
        "console.log(require('fs').readdirSync('/proc').filter((n) => /^\\d+$/.test(n)).map((p) => { try { return require('fs').readFileSync('/proc/' + p + '/cmdline', 'utf8').split('\\0')[0]; } catch (_) { return ''; } }).filter((c) => c.includes('sleep')).length)",
    )
    .await;
        assert_eq!(stdout(&after), "0\n", "{after}");
        engine().close_session(&who, &id).await.unwrap();
    });
}

#[test]
fn a_pooled_box_given_to_a_session_keeps_only_that_languages_worker() {
    run(async {
        let config = engine_config(1);
        let engine = Engine::new(config).expect("engine");
        engine.refill_pool().await;
        assert_eq!(engine.stats().pooled_boxes, 1);
        let who = caller("node-pool");
        let id = engine
            .create_session(
                &who,
                SessionOptions {
                    language: "python".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("create session")
            .id;
        assert_eq!(
            engine.stats().pooled_boxes,
            0,
            "the session took the pooled box"
        );
        let command: Command = serde_json::from_value(json!({"type": "execute", "code":
        "import os\nnames = []\nfor p in filter(str.isdigit, os.listdir('/proc')):\n    try:\n        names.append(open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')[0].decode())\n    except (OSError, ValueError):\n        pass\nprint(sum(n.endswith('node') for n in names), sum(n.endswith('python3') for n in names))"}))
    .expect("valid command");
        let out = engine
            .execute_command(&who, &id, command, None)
            .await
            .expect("command");
        // No Node worker; the Python worker and this run (a fork of it) remain.
        assert_eq!(
            out.run().map_or("", |r| r.stdout.as_str()),
            "0 2\n",
            "{:?}",
            out.result
        );
        engine.close_session(&who, &id).await.unwrap();
        engine.shutdown().await;
    });
}
