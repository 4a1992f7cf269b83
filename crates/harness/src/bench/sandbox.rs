//! The sandbox suite: box creation and sandboxed runs in one go, side by side with a bare
//! process and bubblewrap doing the same.

use std::process::Stdio;
use std::time::{Duration, Instant};

use codebeaker_client::batch::percentile;
use codebeaker_sandbox::{BoxSpec, RunSpec, Sandbox, SandboxConfig, Verdict};

use super::{Figure, Output};
use crate::{Context, HarnessError};

/// One timed case and its samples, or why it was skipped.
struct Case {
    name: &'static str,
    samples: Vec<Duration>,
    note: Option<String>,
}

/// Runs `argv` to its end with no input or output; returns how long it took.
fn time_process(argv: &[&str]) -> Result<Duration, HarnessError> {
    let start = Instant::now();
    let status = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("starting {}", argv[0]))?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(HarnessError::Step(format!(
            "{} failed: {status}",
            argv.join(" ")
        )));
    }
    Ok(elapsed)
}

/// bubblewrap running `program -c pass` with the host's /usr (and its /bin, /lib... links)
/// read-only and everything else unshared.
fn bwrap_argv(program: &str) -> Vec<&str> {
    let mut argv = vec![
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
    ];
    for dir in ["bin", "lib", "lib64", "sbin"] {
        let path = format!("/{dir}");
        if let Ok(link) = std::fs::read_link(&path) {
            argv.extend([
                "--symlink",
                leak(link.to_string_lossy().into_owned()),
                leak(path),
            ]);
        } else if std::path::Path::new(&path).exists() {
            argv.extend(["--ro-bind", leak(path.clone()), leak(path)]);
        }
    }
    argv.extend([
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", program, "-c", "pass",
    ]);
    argv
}

/// `s` for the rest of the process: bubblewrap's few arguments live as long as the bench.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Times each case `iterations` times running `program -c pass`, and prints the report.
pub async fn run(iterations: usize, program: &str, json: bool) -> Result<Output, HarnessError> {
    let n = iterations;
    let warmup = 3;
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let spec = BoxSpec::default();
    let pass = RunSpec::new([program, "-c", "pass"]);
    let mut cases = Vec::new();

    let mut bare = Vec::new();
    for i in 0..n + warmup {
        let t = time_process(&[program, "-c", "pass"])?;
        if i >= warmup {
            bare.push(t);
        }
    }
    cases.push(Case {
        name: "bare process",
        samples: bare,
        note: None,
    });

    let bwrap = bwrap_argv(program);
    let mut samples = Vec::new();
    let mut note = None;
    for i in 0..n + warmup {
        match time_process(&bwrap) {
            Ok(t) if i >= warmup => samples.push(t),
            Ok(_) => {}
            Err(e) => {
                note = Some(format!(
                    "skipped: {} (install Debian's bubblewrap)",
                    e.chain()
                ));
                samples.clear();
                break;
            }
        }
    }
    cases.push(Case {
        name: "bubblewrap",
        samples,
        note,
    });

    let mut create = Vec::new();
    let mut create_run = Vec::new();
    for i in 0..n + warmup {
        let start = Instant::now();
        let bx = sandbox.create_box(&spec).await?;
        let created = start.elapsed();
        let out = bx.run(&pass).await?;
        let total = start.elapsed();
        bx.destroy().await?;
        if out.status != Verdict::Ok {
            return Err(HarnessError::Step(format!(
                "the sandboxed run failed: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if i >= warmup {
            create.push(created);
            create_run.push(total);
        }
    }
    cases.push(Case {
        name: "box creation",
        samples: create,
        note: None,
    });
    cases.push(Case {
        name: "box creation + run",
        samples: create_run,
        note: None,
    });

    let bx = sandbox.create_box(&spec).await?;
    let mut warm = Vec::new();
    for i in 0..n + warmup {
        let start = Instant::now();
        let out = bx.run(&pass).await?;
        if out.status != Verdict::Ok {
            return Err(HarnessError::Step(format!(
                "the sandboxed run failed: {}",
                out.status
            )));
        }
        if i >= warmup {
            warm.push(start.elapsed());
        }
    }
    bx.destroy().await?;
    cases.push(Case {
        name: "run in existing box",
        samples: warm,
        note: None,
    });

    report(&cases, program, json)
}

/// Prints medians, p99 and the ratio of each median to the bare process's.
fn report(cases: &[Case], program: &str, json: bool) -> Result<Output, HarnessError> {
    let stats: Vec<(&Case, Duration, Duration)> = cases
        .iter()
        .map(|c| {
            let mut s = c.samples.clone();
            s.sort();
            (c, percentile(&s, 50.0), percentile(&s, 99.0))
        })
        .collect();
    let bare = stats.first().map(|s| s.1).unwrap_or(Duration::ZERO);
    let ratio = |d: Duration| {
        if bare.is_zero() {
            0.0
        } else {
            d.as_secs_f64() / bare.as_secs_f64()
        }
    };
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let bare_name = cases.first().map_or("bare process", |c| c.name);
    let figures = stats
        .iter()
        .filter(|(c, _, _)| c.note.is_none())
        .map(|(c, med, p99)| {
            let baseline = (c.name != bare_name).then_some((bare_name, ms(&bare)));
            Figure::time("sandbox", c.name, ms(med), Some(ms(p99)), baseline)
        })
        .collect();
    if json {
        let rows: Vec<_> = stats
            .iter()
            .map(|(c, med, p99)| {
                serde_json::json!({
                    "case": c.name, "samples": c.samples.len(),
                    "medianMs": med.as_secs_f64() * 1e3, "p99Ms": p99.as_secs_f64() * 1e3,
                    "ratioToBare": ratio(*med), "note": c.note,
                })
            })
            .collect();
        let json = serde_json::json!({"program": format!("{program} -c pass"), "cases": rows});
        return Ok(Output { json, figures });
    }
    println!("program: {program} -c pass");
    println!(
        "{:<22} {:>8} {:>10} {:>10} {:>8}",
        "case", "samples", "median ms", "p99 ms", "× bare"
    );
    for (c, med, p99) in &stats {
        if let Some(note) = &c.note {
            println!("{:<22} {note}", c.name);
            continue;
        }
        println!(
            "{:<22} {:>8} {:>10.2} {:>10.2} {:>8.2}",
            c.name,
            c.samples.len(),
            med.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            ratio(*med)
        );
    }
    Ok(Output {
        json: serde_json::Value::Null,
        figures,
    })
}
