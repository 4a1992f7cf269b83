//! The benchmarks behind `codebeaker bench`: three suites that time CodeBeaker beside a
//! baseline doing the same work, and print medians, p99 and ratios. Timings are reported, never
//! asserted: machines are noisy.
//!
//! - [`sandbox`]: box creation and sandboxed runs against a bare process and bubblewrap.
//! - [`languages`]: the original .NET CodeBeaker's snippet per language, first run and cache
//!   hit, against the bare toolchain.
//! - [`warm`]: the per-request paths of a platform, through the real client over WebSocket and
//!   in-process, against Docker when its daemon runs.
//!
//! `--suite all` runs the three in turn. With `--json` every run also writes its
//! [`figures`](figures::Figure), each with the baseline from the same run, which
//! [`figures::compare`] compares between two runs (the regression guard).

pub mod figures;
pub mod languages;
pub mod sandbox;
pub mod warm;

use std::path::Path;

use serde_json::{json, Value};

use crate::HarnessError;
use figures::{Change, Figure};

/// Which suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Boxes against bare processes and bubblewrap.
    Sandbox,
    /// The original .NET CodeBeaker's snippets: first run, cache hit, and the bare toolchain.
    Languages,
    /// The per-request paths over WebSocket and in-process, against Docker.
    Warm,
    /// The three above, one after another.
    All,
}

impl Suite {
    /// The suites by the names `--suite` takes.
    pub const NAMES: [&str; 4] = ["sandbox", "languages", "warm", "all"];

    /// The name `--suite` takes for this suite.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Sandbox => "sandbox",
            Suite::Languages => "languages",
            Suite::Warm => "warm",
            Suite::All => "all",
        }
    }

    /// The suite named `name`, as `--suite` takes it.
    pub fn named(name: &str) -> Option<Suite> {
        match name {
            "sandbox" => Some(Suite::Sandbox),
            "languages" => Some(Suite::Languages),
            "warm" => Some(Suite::Warm),
            "all" => Some(Suite::All),
            _ => None,
        }
    }
}

/// One benchmark run, as `codebeaker bench`'s flags give it.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub suite: Suite,
    /// Timed iterations per case (after warm-up).
    pub iterations: usize,
    /// The program every case of the sandbox suite runs.
    pub program: String,
    /// With the warm suite: how many idle Python sessions to hold for the memory figure.
    pub idle_sessions: usize,
    /// With the warm suite: measure only these parts (default: all; see [`warm::PARTS`]).
    pub only: Vec<String>,
    /// Print the results as JSON.
    pub json: bool,
}

/// What one suite measured: its JSON report (`Null` when it printed text) and its figures.
pub struct Output {
    pub json: Value,
    pub figures: Vec<Figure>,
}

/// Runs the chosen suite (or all) and prints its report; returns the exit code. With `json`, the
/// report is one JSON object: a single suite's own fields, or `suites` with each suite's, and
/// `figures` with every figure of the run.
pub async fn run(options: BenchOptions) -> Result<i32, HarnessError> {
    let suites: &[Suite] = match options.suite {
        Suite::All => &[Suite::Sandbox, Suite::Languages, Suite::Warm],
        ref one => std::slice::from_ref(one),
    };
    let mut reports = serde_json::Map::new();
    let mut figures = Vec::new();
    for (i, suite) in suites.iter().enumerate() {
        if !options.json && suites.len() > 1 {
            let gap = if i > 0 { "\n" } else { "" };
            println!("{gap}== {} ==", suite.name());
        }
        let output = run_one(*suite, &options).await?;
        reports.insert(suite.name().to_owned(), output.json);
        figures.extend(output.figures);
    }
    if options.json {
        let mut report = match options.suite {
            Suite::All => json!({ "suites": reports }),
            _ => reports.into_iter().next().map_or(json!({}), |(_, one)| one),
        };
        if let Value::Object(fields) = &mut report {
            fields.insert("figures".to_owned(), serde_json::to_value(&figures)?);
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(0)
}

async fn run_one(suite: Suite, options: &BenchOptions) -> Result<Output, HarnessError> {
    match suite {
        Suite::Sandbox => sandbox::run(options.iterations, &options.program, options.json).await,
        Suite::Languages => languages::run(options.iterations, options.json).await,
        Suite::Warm => {
            warm::run(
                options.iterations,
                options.idle_sessions,
                &options.only,
                options.json,
            )
            .await
        }
        Suite::All => Err(HarnessError::Step(
            "the suite `all` is run suite by suite".to_owned(),
        )),
    }
}

/// Reads the figures of a run that `codebeaker bench --json` wrote to `path`.
pub fn read_figures(path: &Path) -> Result<Vec<Figure>, HarnessError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        HarnessError::Step(format!(
            "cannot read the benchmark run {}: {e}",
            path.display()
        ))
    })?;
    let report: Value = serde_json::from_str(&text).map_err(|e| {
        HarnessError::Step(format!(
            "{} is not the JSON of `codebeaker bench --json`: {e}",
            path.display()
        ))
    })?;
    let figures = report.get("figures").cloned().ok_or_else(|| {
        HarnessError::Step(format!(
            "{} has no `figures`: write it with `codebeaker bench --suite ... --json`",
            path.display()
        ))
    })?;
    serde_json::from_value(figures).map_err(|e| {
        HarnessError::Step(format!(
            "the figures in {} are malformed: {e}",
            path.display()
        ))
    })
}

/// `codebeaker bench --compare OLD NEW`: prints what moved by more than `threshold` (a
/// fraction) between the two runs, and a line that says how many figures were compared.
pub fn print_comparison(old: &Path, new: &Path, threshold: f64) -> Result<i32, HarnessError> {
    let (old_figures, new_figures) = (read_figures(old)?, read_figures(new)?);
    let changes = figures::compare(&old_figures, &new_figures, threshold);
    for change in &changes {
        println!("{change}");
    }
    let moved = changes
        .iter()
        .filter(|c| matches!(c, Change::Moved { .. }))
        .count();
    println!(
        "{moved} of {} figures moved by more than {:.0} % (by their ratio to the same run's baseline where they have one)",
        old_figures.len(),
        threshold * 100.0
    );
    Ok(0)
}
