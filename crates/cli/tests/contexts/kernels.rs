//! Kernels in a box, straight through the sandbox: cells, interrupts, lost state, and the end of
//! everything a context started.

use std::path::Path;

use codebeaker_languages::ContextKernel;
use codebeaker_sandbox::{BoxLimits, BoxSpec, KernelSpec, RunLimits, RunSpec, SandboxBox, Verdict};
use serde_json::Value;

use crate::common::{run, sandbox, text};

fn spec(kernel: ContextKernel) -> KernelSpec {
    let interpreter = match kernel {
        ContextKernel::Python => "/usr/bin/python3",
        ContextKernel::Javascript => "/usr/bin/node",
        ContextKernel::Bash => "/bin/bash",
    };
    KernelSpec {
        argv: kernel.argv(Path::new("/usr/bin/python3"), Path::new(interpreter)),
        env: Vec::new(),
        cwd: "/workspace".into(),
        limits: RunLimits::default(),
    }
}

async fn new_box() -> SandboxBox {
    sandbox()
        .create_box(&BoxSpec {
            limits: BoxLimits::default(),
            binds: Vec::new(),
        })
        .await
        .expect("create box")
}

async fn cell(
    bx: &SandboxBox,
    context: &str,
    code: &str,
) -> (codebeaker_sandbox::RunOutcome, Value) {
    let mut cmd = RunSpec::new(Vec::<String>::new());
    cmd.cell = Some(context.to_string());
    cmd.fd3_input = Some(code.as_bytes().to_vec());
    cmd.capture_fd4 = true;
    let out = bx.run(&cmd).await.expect("cell");
    let result = out
        .result
        .as_deref()
        .and_then(|r| serde_json::from_slice(r).ok())
        .unwrap_or(Value::Null);
    (out, result)
}

#[test]
fn python_cells_share_one_namespace() {
    run(async {
        let bx = new_box().await;
        bx.start_context("c1", &spec(ContextKernel::Python))
            .await
            .expect("start");
        let (out, result) = cell(&bx, "c1", "x = 1\nprint('hi')").await;
        assert_eq!(out.status, Verdict::Ok, "{result} {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "hi\n");
        let (out, result) = cell(&bx, "c1", "x += 1; x").await;
        assert_eq!(out.status, Verdict::Ok, "{result}");
        assert_eq!(result["results"][0]["data"]["text/plain"], "2", "{result}");
        assert_eq!(out.cell.map(|c| c.state_lost), Some(false));
        bx.destroy().await.expect("destroy");
    });
}

#[test]
fn a_timeout_interrupts_the_cell_and_a_lost_kernel_says_so() {
    run(async {
        let bx = new_box().await;
        bx.start_context("c", &spec(ContextKernel::Python))
            .await
            .expect("start");
        cell(&bx, "c", "kept = 41").await;
        let mut cmd = RunSpec::new(Vec::<String>::new());
        cmd.cell = Some("c".into());
        cmd.fd3_input = Some(b"import time\nwhile True: time.sleep(0.01)".to_vec());
        cmd.capture_fd4 = true;
        cmd.limits.wall_time = std::time::Duration::from_millis(300);
        let out = bx.run(&cmd).await.expect("cell");
        assert_eq!(out.status, Verdict::Timeout);
        let result: Value =
            serde_json::from_slice(out.result.as_deref().unwrap_or_default()).expect("result");
        assert_eq!(result["error"]["name"], "KeyboardInterrupt", "{result}");
        assert_eq!(out.cell.map(|c| c.state_lost), Some(false));
        let (_, result) = cell(&bx, "c", "kept + 1").await;
        assert_eq!(result["results"][0]["data"]["text/plain"], "42", "{result}");
        // A kernel that ignores the interrupt is ended, and the context says its state is gone.
        cmd.fd3_input = Some(b"import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: time.sleep(0.01)".to_vec());
        let out = bx.run(&cmd).await.expect("cell");
        assert_eq!(out.status, Verdict::Timeout);
        assert_eq!(out.cell.map(|c| c.state_lost), Some(true));
        let (out, result) = cell(&bx, "c", "'kept' in globals()").await;
        assert_eq!(
            result["results"][0]["data"]["text/plain"], "False",
            "{result}"
        );
        assert_eq!(
            out.cell.map(|c| (c.generation, c.state_lost)),
            Some((2, false))
        );
        // An unclean plain run sweeps the box: the next cell says so.
        cell(&bx, "c", "again = 1").await;
        let mut sweep = RunSpec::new(["/bin/sh", "-c", "sleep 10"]);
        sweep.limits.wall_time = std::time::Duration::from_millis(200);
        assert_eq!(bx.run(&sweep).await.expect("run").status, Verdict::Timeout);
        let (out, _) = cell(&bx, "c", "1").await;
        assert_eq!(
            out.cell.map(|c| (c.generation, c.state_lost)),
            Some((3, true))
        );
        bx.destroy().await.expect("destroy");
    });
}

#[test]
fn nothing_a_closed_context_started_survives() {
    run(async {
        let bx = new_box().await;
        bx.start_context("c", &spec(ContextKernel::Python))
            .await
            .expect("start");
        let (out, result) = cell(
            &bx,
            "c",
            "import subprocess\nsubprocess.Popen(['/bin/sh', '-c', '(setsid sleep 1000 &) ; sleep 1000'])\n",
        )
        .await;
        assert_eq!(out.status, Verdict::Ok, "{result}");
        let count = "ls /proc | grep -c '^[0-9]'";
        let before = text(
            &bx.run(&RunSpec::new(["/bin/sh", "-c", count]))
                .await
                .expect("run")
                .stdout,
        );
        assert!(before.trim().parse::<u32>().unwrap_or(0) >= 5, "{before}");
        assert!(bx.close_context("c").await.expect("close"));
        assert!(!bx.close_context("c").await.expect("close again"));
        let after = text(
            &bx.run(&RunSpec::new(["/bin/sh", "-c", count]))
                .await
                .expect("run")
                .stdout,
        );
        // The init, the probe's shell and its ls and grep.
        assert!(
            after.trim().parse::<u32>().unwrap_or(99) <= 4,
            "left: {after}"
        );
        bx.destroy().await.expect("destroy");
    });
}
