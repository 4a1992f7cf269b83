//! The languages suite (`codebeaker bench --suite languages`): the original .NET CodeBeaker's
//! snippet per language, timed in one run as a first run (compile included), a second run
//! (compile cache hit), the cached program started directly in the same box, and the bare
//! toolchain doing the same outside any box.

use codebeaker_client::batch::percentile;
use codebeaker_engine::{CodeRequest, Engine, EngineConfig};
use codebeaker_languages::{on_host, Mode, Step, Toolchain};
use codebeaker_sandbox::{RunSpec, Verdict};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{Figure, Output};
use crate::{Context, HarnessError};

const SEEDS: &[(&str, &str, &str)] = &[
    ("python", "#", "result = {'output': input_data['value'] * 2}"),
    ("javascript", "//", "const result = { output: input_data.value * 2 };"),
    ("go", "//", "value := input_data[\"value\"].(float64)\nresult := map[string]interface{}{\"output\": value * 2}"),
    (
        "csharp",
        "//",
        "var value = input_data.GetProperty(\"value\").GetInt32();\nvar result = new { output = value * 2 };",
    ),
];

const INPUT: &[u8] = br#"{"value":21}"#;

/// A pipe, both ends close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), HarnessError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(HarnessError::Io(std::io::Error::other(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        ))));
    }
    // SAFETY: both descriptors were just created and belong to nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs a step as a plain host process with the snippet ABI's descriptors, timing it.
/// Runs `step` on the host, its toolchains where the host has them.
fn bare(
    toolchains: &BTreeMap<String, Toolchain>,
    step: &Step,
    cwd: &Path,
    snippet: bool,
) -> Result<Duration, HarnessError> {
    let argv: Vec<String> = step.argv.iter().map(|a| on_host(toolchains, a)).collect();
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| HarnessError::Step("empty argv".into()))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(step.env.iter().map(|(k, v)| (k, on_host(toolchains, v))))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut ends = None;
    if snippet {
        let (in_r, mut in_w) = pipe().map(|(r, w)| (r, std::fs::File::from(w)))?;
        let (out_r, out_w) = pipe()?;
        in_w.write_all(INPUT)?;
        drop(in_w);
        let (a, b) = (in_r.as_raw_fd(), out_w.as_raw_fd());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let a2 = libc::fcntl(a, libc::F_DUPFD, 10);
                let b2 = libc::fcntl(b, libc::F_DUPFD, 10);
                if a2 < 0 || b2 < 0 || libc::dup2(a2, 3) < 0 || libc::dup2(b2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        ends = Some((in_r, out_r, out_w));
    }
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    // The child has its copies; ours of its ends must close so the result pipe reaches EOF.
    let out_r = ends.map(|(in_r, out_r, out_w)| {
        drop((in_r, out_w));
        out_r
    });
    let out = child.wait_with_output()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return Err(HarnessError::Step(format!(
            "{} failed: {}",
            step.argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    if let Some(r) = out_r {
        let mut result = Vec::new();
        std::fs::File::from(r).read_to_end(&mut result)?;
        if result != br#"{"output":42}"# && result != b"{\"output\":42}\n" {
            return Err(HarnessError::Step(format!(
                "bare run produced {}",
                String::from_utf8_lossy(&result)
            )));
        }
    }
    Ok(elapsed)
}

/// One language's cases and their samples.
struct Row {
    language: &'static str,
    cases: Vec<(&'static str, Vec<Duration>)>,
}

/// Times every language's snippet `iterations` times per case (first runs at most five
/// times), and prints the report.
pub async fn run(iterations: usize, json: bool) -> Result<Output, HarnessError> {
    let engine = Engine::new(EngineConfig::default())?;
    let cold_iterations = iterations.clamp(1, 5);
    let mut rows = Vec::new();
    let salt = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    for &(language, comment, seed) in SEEDS {
        let bx = engine.create_box().await?;
        let request = |code: String| CodeRequest {
            language: language.into(),
            code,
            input: Some(serde_json::from_slice(INPUT).unwrap_or_default()),
            stdin: Vec::new(),
            limits: engine.config().run_limits,
            ..CodeRequest::default()
        };
        // Warm the toolchain's own caches in the box (Go's build cache lives in the box's /tmp).
        engine
            .execute_in(&bx, &request(format!("{comment} warm {salt}\n{seed}")))
            .await?;
        let mut first = Vec::new();
        for i in 0..cold_iterations {
            let e = engine
                .execute_in(&bx, &request(format!("{comment} {salt} {i}\n{seed}")))
                .await?;
            if e.outcome.status != Verdict::Ok {
                return Err(HarnessError::Step(format!("{language}: {:?}", e.error)));
            }
            first.push(e.total);
        }
        let code = format!("{comment} {salt} hit\n{seed}");
        engine.execute_in(&bx, &request(code.clone())).await?;
        let mut hit = Vec::new();
        for _ in 0..iterations {
            let e = engine.execute_in(&bx, &request(code.clone())).await?;
            if e.compile.is_some_and(|c| !c.cache_hit) {
                return Err(HarnessError::Step(format!(
                    "{language}: the second run compiled again"
                )));
            }
            hit.push(e.total);
        }
        // The same program prepared by hand: its sources on the host, its artifact in the cache.
        let registry = engine.registry();
        let plan = registry.prepare(language, &code, Mode::Snippet)?;
        let src = tempfile::tempdir()?;
        for f in plan.files() {
            std::fs::write(src.path().join(&f.name), &f.contents)?;
        }
        // The box sees the cache at its own path, not the host's.
        let cache_dir = plan
            .cache_key()
            .map(|k| std::path::Path::new(codebeaker_engine::BOX_CACHE).join(k));
        let out_dir = cache_dir
            .clone()
            .unwrap_or_else(|| src.path().to_path_buf());
        let step = plan.run_step(src.path(), &out_dir);
        // Outside the box, the same program from the cache's host directory.
        let host_out = plan
            .cache_key()
            .map(|k| engine.config().cache_dir.join(k))
            .unwrap_or_else(|| src.path().to_path_buf());
        let host_step = plan.run_step(src.path(), &host_out);
        let toolchains = registry.discover();
        let mut direct = Vec::new();
        if cache_dir.is_some() {
            for _ in 0..iterations {
                let mut cmd = RunSpec::new(step.argv.clone());
                cmd.env = step.env.clone();
                cmd.fd3_input = Some(INPUT.to_vec());
                cmd.capture_fd4 = true;
                let start = Instant::now();
                let out = bx.run(&cmd).await?;
                direct.push(start.elapsed());
                if out.status != Verdict::Ok {
                    return Err(HarnessError::Step(format!(
                        "{language}: direct run failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )));
                }
            }
        }
        bx.destroy().await?;
        let mut bare_first = Vec::new();
        for i in 0..cold_iterations {
            let plan = registry.prepare(
                language,
                &format!("{comment} bare {salt} {i}\n{seed}"),
                Mode::Snippet,
            )?;
            let dir = tempfile::tempdir()?;
            let (srcd, outd) = (dir.path().join("src"), dir.path().join("out"));
            std::fs::create_dir_all(&srcd)?;
            std::fs::create_dir_all(&outd)?;
            for f in plan.files() {
                std::fs::write(srcd.join(&f.name), &f.contents)?;
            }
            let start = Instant::now();
            if let Some(compile) = plan.compile_step(&srcd, &outd) {
                bare(toolchains, &compile, &srcd, false)?;
            }
            bare(toolchains, &plan.run_step(&srcd, &outd), dir.path(), true)?;
            bare_first.push(start.elapsed());
        }
        let mut bare_hit = Vec::new();
        for _ in 0..iterations {
            bare_hit.push(bare(toolchains, &host_step, src.path(), true)?);
        }
        rows.push(Row {
            language,
            cases: vec![
                ("first run", first),
                ("cache hit", hit),
                ("cached program in box", direct),
                ("bare first run", bare_first),
                ("bare cached program", bare_hit),
            ],
        });
    }
    report(&rows, json)
}

/// The median of `samples`, if there are any.
fn median(samples: &[Duration]) -> Option<Duration> {
    let mut s = samples.to_vec();
    s.sort();
    (!s.is_empty()).then(|| percentile(&s, 50.0))
}

/// Prints each language's medians, and what the engine adds over the cached program.
fn report(rows: &[Row], json: bool) -> Result<Output, HarnessError> {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let figures = figures(rows);
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                let cases: serde_json::Map<String, serde_json::Value> = r
                    .cases
                    .iter()
                    .map(|(name, s)| {
                        (
                            name.to_string(),
                            serde_json::json!({"samples": s.len(), "medianMs": ms(median(s))}),
                        )
                    })
                    .collect();
                serde_json::json!({"language": r.language, "cases": cases})
            })
            .collect();
        let json = serde_json::json!({"languages": out});
        return Ok(Output { json, figures });
    }
    println!(
        "the original .NET CodeBeaker's snippet per language, medians in ms (input {{\"value\":21}})"
    );
    println!(
        "{:<11} {:>10} {:>10} {:>12} {:>11} {:>11} {:>14}",
        "language",
        "first run",
        "cache hit",
        "cached in box",
        "bare first",
        "bare cached",
        "hit − cached"
    );
    for r in rows {
        let m: Vec<Option<f64>> = r.cases.iter().map(|(_, s)| ms(median(s))).collect();
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let overhead = match (m[1], m[2].or(m[4])) {
            (Some(hit), Some(base)) => format!("{:+.2}", hit - base),
            _ => "-".into(),
        };
        println!(
            "{:<11} {:>10} {:>10} {:>12} {:>11} {:>11} {:>14}",
            r.language,
            f(m[0]),
            f(m[1]),
            f(m[2]),
            f(m[3]),
            f(m[4]),
            overhead
        );
    }
    println!("hit − cached: what the engine adds over starting the cached program (in the box when compiled, else bare)");
    Ok(Output {
        json: serde_json::Value::Null,
        figures,
    })
}

/// Each language's medians; a first run beside the bare toolchain's first run, a cache hit
/// beside the cached program started in a box (compiled languages) or bare.
fn figures(rows: &[Row]) -> Vec<Figure> {
    let mut figures = Vec::new();
    for r in rows {
        let median_of = |name: &str| {
            r.cases
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, s)| median(s))
                .map(|d| d.as_secs_f64() * 1e3)
        };
        let baseline_of = |name: &str| match name {
            "first run" => Some("bare first run"),
            "cache hit" if median_of("cached program in box").is_some() => {
                Some("cached program in box")
            }
            "cache hit" => Some("bare cached program"),
            _ => None,
        };
        for (name, _) in &r.cases {
            let Some(value) = median_of(name) else {
                continue;
            };
            let baseline = baseline_of(name)
                .and_then(|b| median_of(b).map(|m| (format!("{} {b}", r.language), m)));
            figures.push(Figure::time(
                "languages",
                format!("{} {name}", r.language),
                value,
                None,
                baseline.as_ref().map(|(b, m)| (b.as_str(), *m)),
            ));
        }
    }
    figures
}
