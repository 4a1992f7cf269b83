//! The regression guard: every figure of a run with the baseline measured in the same run
//! (`codebeaker bench --json` writes them under `figures`), and the comparison of two such runs
//! (`codebeaker bench --compare OLD NEW`, `scripts/bench-compare.sh`).
//!
//! Two runs on a noisy machine differ in absolute times for reasons that have nothing to do with
//! the code; a figure's ratio to its baseline from the same run (a bare process, bubblewrap, the
//! bare toolchain) moves far less. So the comparison uses the ratio where a figure has one and
//! the value itself only where it has none, and reports what moved by more than a threshold,
//! never failing on it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One figure of a benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Figure {
    /// The suite that measured it: `sandbox`, `languages` or `warm`.
    pub suite: String,
    /// The case, as the suite's table names it.
    pub case: String,
    /// The median in milliseconds, or the figure's value in [`Figure::unit`].
    pub value: f64,
    /// `ms` (lower is better), `runs/s` (higher is better) or `bytes` (lower is better).
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// The case this figure is divided by, measured in the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// `value` divided by the baseline's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

impl Figure {
    /// A time figure, with its ratio to `baseline` (its name and median) when there is one.
    pub fn time(
        suite: &str,
        case: impl Into<String>,
        median_ms: f64,
        p99_ms: Option<f64>,
        baseline: Option<(&str, f64)>,
    ) -> Figure {
        let (baseline, ratio) = match baseline {
            Some((name, base)) if base > 0.0 => (Some(name.to_owned()), Some(median_ms / base)),
            _ => (None, None),
        };
        Figure {
            suite: suite.to_owned(),
            case: case.into(),
            value: median_ms,
            unit: "ms".to_owned(),
            p99_ms,
            baseline,
            ratio,
        }
    }

    /// A figure that is not a time (a throughput, a size).
    pub fn value(suite: &str, case: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure {
            suite: suite.to_owned(),
            case: case.into(),
            value,
            unit: unit.to_owned(),
            p99_ms: None,
            baseline: None,
            ratio: None,
        }
    }

    fn higher_is_better(&self) -> bool {
        self.ratio.is_none() && self.unit == "runs/s"
    }
}

/// A figure that moved between two runs, or is in only one of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Moved {
        suite: String,
        case: String,
        /// What was compared: `ratio to <baseline>` or the unit.
        what: String,
        old: f64,
        new: f64,
        /// `new / old - 1`, as a fraction.
        change: f64,
        worse: bool,
    },
    OnlyOld {
        suite: String,
        case: String,
    },
    OnlyNew {
        suite: String,
        case: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Moved {
                suite,
                case,
                what,
                old,
                new,
                change,
                worse,
            } => write!(
                f,
                "{suite} / {case}: {what} {old:.3} -> {new:.3} ({:+.0} %, {})",
                change * 100.0,
                if *worse { "worse" } else { "better" }
            ),
            Change::OnlyOld { suite, case } => {
                write!(f, "{suite} / {case}: only in the old run")
            }
            Change::OnlyNew { suite, case } => {
                write!(f, "{suite} / {case}: only in the new run")
            }
        }
    }
}

/// The figures that moved by more than `threshold` (a fraction: 0.1 is 10 %) from `old` to
/// `new`, by ratio where both runs have one for the figure and by value otherwise, in `old`'s
/// order, then the figures that only one run has.
pub fn compare(old: &[Figure], new: &[Figure], threshold: f64) -> Vec<Change> {
    let key = |f: &Figure| (f.suite.clone(), f.case.clone());
    let new_by_key: BTreeMap<_, &Figure> = new.iter().map(|f| (key(f), f)).collect();
    let old_by_key: BTreeMap<_, &Figure> = old.iter().map(|f| (key(f), f)).collect();
    let mut changes = Vec::new();
    for o in old {
        let Some(n) = new_by_key.get(&key(o)) else {
            changes.push(Change::OnlyOld {
                suite: o.suite.clone(),
                case: o.case.clone(),
            });
            continue;
        };
        let (what, a, b) = match (o.ratio, n.ratio, &o.baseline) {
            (Some(a), Some(b), Some(base)) if o.baseline == n.baseline => {
                (format!("ratio to {base}"), a, b)
            }
            _ if o.unit == n.unit => (o.unit.clone(), o.value, n.value),
            _ => continue,
        };
        if a <= 0.0 || !a.is_finite() || !b.is_finite() {
            continue;
        }
        let change = b / a - 1.0;
        if change.abs() > threshold {
            let worse = if o.higher_is_better() && n.higher_is_better() {
                change < 0.0
            } else {
                change > 0.0
            };
            changes.push(Change::Moved {
                suite: o.suite.clone(),
                case: o.case.clone(),
                what,
                old: a,
                new: b,
                change,
                worse,
            });
        }
    }
    for n in new {
        if !old_by_key.contains_key(&key(n)) {
            changes.push(Change::OnlyNew {
                suite: n.suite.clone(),
                case: n.case.clone(),
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sandboxed_ms: f64, bare_ms: f64, throughput: f64) -> Vec<Figure> {
        vec![
            Figure::time("sandbox", "bare process", bare_ms, None, None),
            Figure::time(
                "sandbox",
                "run in existing box",
                sandboxed_ms,
                Some(sandboxed_ms * 2.0),
                Some(("bare process", bare_ms)),
            ),
            Figure::value("warm", "throughput", throughput, "runs/s"),
        ]
    }

    #[test]
    fn a_slower_machine_moves_the_times_but_not_the_ratios() {
        // Everything twice as slow: the bare process moved, the ratio did not.
        let changes = compare(&run(10.0, 5.0, 1000.0), &run(20.0, 10.0, 1000.0), 0.1);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            matches!(&changes[0], Change::Moved { case, what, worse: true, .. } if case == "bare process" && what == "ms"),
            "{changes:?}"
        );
    }

    #[test]
    fn ratios_and_values_that_moved_past_the_threshold_are_reported_with_their_direction() {
        let changes = compare(&run(10.0, 5.0, 1000.0), &run(12.0, 5.0, 800.0), 0.1);
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "sandbox / run in existing box: ratio to bare process 2.000 -> 2.400 (+20 %, worse)",
                "warm / throughput: runs/s 1000.000 -> 800.000 (-20 %, worse)",
            ]
        );
        // Within the threshold nothing is reported.
        assert!(compare(&run(10.0, 5.0, 1000.0), &run(10.9, 5.0, 950.0), 0.1).is_empty());
        // Faster is "better".
        let faster = compare(&run(10.0, 5.0, 1000.0), &run(5.0, 5.0, 2000.0), 0.1);
        assert!(faster
            .iter()
            .all(|c| matches!(c, Change::Moved { worse: false, .. })));
    }

    #[test]
    fn figures_in_one_run_only_are_named() {
        let mut new = run(10.0, 5.0, 1000.0);
        new.push(Figure::value("warm", "idle session memory", 1.0, "bytes"));
        let old = &run(10.0, 5.0, 1000.0)[1..];
        let lines: Vec<String> = compare(old, &new, 0.1)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "sandbox / bare process: only in the new run",
                "warm / idle session memory: only in the new run"
            ]
        );
    }

    #[test]
    fn figures_round_trip_through_json() {
        let figures = run(10.0, 5.0, 1000.0);
        let text = serde_json::to_string(&figures).unwrap();
        assert!(text.contains("\"p99Ms\":20.0"), "{text}");
        let back: Vec<Figure> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, figures);
    }
}
