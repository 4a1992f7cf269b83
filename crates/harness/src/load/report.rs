//! The report: latency percentiles, the server's memory over the run, the leak counts, and the
//! summary printed to standard error (the JSON form goes to standard output).

use std::collections::BTreeMap;

use codebeaker_client::batch::percentile;
use serde::Serialize;

use super::leaks::Leaks;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Latency {
    pub(super) p50_ms: f64,
    pub(super) p90_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
}

/// Nearest-rank percentiles of run latencies in microseconds, in milliseconds.
pub(super) fn latency(samples: &mut [u64]) -> Latency {
    samples.sort_unstable();
    let at = |p: f64| percentile(samples, p) as f64 / 1000.0;
    Latency {
        p50_ms: at(50.0),
        p90_ms: at(90.0),
        p99_ms: at(99.0),
        max_ms: samples.last().map_or(0.0, |&v| v as f64 / 1000.0),
    }
}

/// The server's memory and descriptors at one moment of the run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Sample {
    pub(super) t_secs: f64,
    pub(super) rss_bytes: u64,
    pub(super) descriptors: usize,
}

/// The server's memory and descriptors over the run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Memory {
    pub(super) rss_first_bytes: u64,
    pub(super) rss_last_bytes: u64,
    pub(super) rss_max_bytes: u64,
    pub(super) descriptors_first: usize,
    pub(super) descriptors_last: usize,
    pub(super) descriptors_max: usize,
    pub(super) samples: Vec<Sample>,
}

impl Memory {
    /// The first, last and largest of `samples`, and the samples themselves.
    pub(super) fn of(samples: Vec<Sample>) -> Memory {
        Memory {
            rss_first_bytes: samples.first().map_or(0, |s| s.rss_bytes),
            rss_last_bytes: samples.last().map_or(0, |s| s.rss_bytes),
            rss_max_bytes: samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
            descriptors_first: samples.first().map_or(0, |s| s.descriptors),
            descriptors_last: samples.last().map_or(0, |s| s.descriptors),
            descriptors_max: samples.iter().map(|s| s.descriptors).max().unwrap_or(0),
            samples,
        }
    }
}

/// The whole report, as `--json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Report {
    pub(super) server: String,
    pub(super) server_pid: u32,
    pub(super) clients: usize,
    pub(super) languages: Vec<String>,
    pub(super) attacks: bool,
    pub(super) duration_limit_secs: Option<f64>,
    pub(super) run_limit: Option<u64>,
    pub(super) elapsed_secs: f64,
    pub(super) runs: u64,
    pub(super) runs_per_second: f64,
    pub(super) latency: Latency,
    pub(super) normal_latency: Latency,
    pub(super) sessions_created: u64,
    pub(super) sessions_closed: u64,
    /// Sessions an attack wrecked so badly that the host destroyed the box (`-32001`, "box
    /// died"): reported, not counted as errors; a normal program losing its session is one.
    pub(super) sessions_lost_to_attacks: u64,
    pub(super) sessions_lost_samples: Vec<String>,
    pub(super) reconnects: u64,
    pub(super) streamed_runs: u64,
    pub(super) outcomes: BTreeMap<String, u64>,
    pub(super) by_program: BTreeMap<String, BTreeMap<String, u64>>,
    pub(super) protocol_errors: u64,
    pub(super) protocol_error_samples: Vec<String>,
    pub(super) wrong_results: u64,
    pub(super) wrong_result_samples: Vec<String>,
    /// Normal programs that ran out of their 30 s on an overloaded host (not counted as wrong).
    pub(super) normal_timeouts: u64,
    /// Requests the server refused for now (-32002, -32005); retried.
    pub(super) refused_busy: u64,
    pub(super) memory: Memory,
    pub(super) leaks: Leaks,
    pub(super) passed: bool,
}

/// `bytes` in MiB, for people.
pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Prints the report for people, on standard error.
pub(super) fn print_summary(r: &Report) {
    let attacks = if r.attacks { "on" } else { "off" };
    eprintln!(
        "load: {} clients, {:.1} s, attacks {attacks}, languages {}; server {} (pid {})",
        r.clients,
        r.elapsed_secs,
        r.languages.join(", "),
        r.server,
        r.server_pid
    );
    eprintln!(
        "runs: {} ({:.1}/s); latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; normal programs p50 {:.1} ms, p99 {:.1} ms",
        r.runs,
        r.runs_per_second,
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        r.normal_latency.p50_ms,
        r.normal_latency.p99_ms
    );
    eprintln!(
        "sessions: {} created, {} closed, {} lost to attacks; {} reconnects; {} streamed runs; {} refused as busy",
        r.sessions_created,
        r.sessions_closed,
        r.sessions_lost_to_attacks,
        r.reconnects,
        r.streamed_runs,
        r.refused_busy
    );
    for s in &r.sessions_lost_samples {
        eprintln!("  session lost: {s}");
    }
    let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!("outcomes: {}", outcomes.join(", "));
    for (program, statuses) in &r.by_program {
        let s: Vec<String> = statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
        eprintln!("  {program:<26} {}", s.join(", "));
    }
    eprintln!(
        "protocol errors: {}; wrong results: {}; normal programs timed out: {}",
        r.protocol_errors, r.wrong_results, r.normal_timeouts
    );
    for s in &r.protocol_error_samples {
        eprintln!("  protocol error: {s}");
    }
    for s in &r.wrong_result_samples {
        eprintln!("  wrong result: {s}");
    }
    let m = &r.memory;
    eprintln!(
        "server memory: RSS first {}, last {}, max {}; descriptors first {}, last {}, max {}",
        mib(m.rss_first_bytes),
        mib(m.rss_last_bytes),
        mib(m.rss_max_bytes),
        m.descriptors_first,
        m.descriptors_last,
        m.descriptors_max
    );
    let l = &r.leaks;
    eprintln!(
        "leaks ({}): box cgroups {}, processes {}, mounts {}, descriptors {} (start {}, end {})",
        l.measured,
        l.box_cgroups,
        l.processes,
        l.mounts,
        l.descriptors_leaked,
        l.descriptors_start,
        l.descriptors_end
    );
    for name in &l.box_cgroup_names {
        eprintln!("  cgroup left: {name}");
    }
    for p in &l.process_list {
        eprintln!("  process left: {p}");
    }
    eprintln!("result: {}", if r.passed { "PASS" } else { "FAIL" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let l = latency(&mut samples);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(latency(&mut []).p99_ms, 0.0);
    }
}
