//! The server seen from the outside: its resident memory and open descriptors (from `/proc`),
//! and what its boxes leave on the host, counted by the sandbox's own census
//! ([`codebeaker_sandbox::census`]) so that box names, the id range, cgroup mounts and the root
//! mount point are known in one place.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codebeaker_sandbox::census::{owner_pid, Census};
use codebeaker_sandbox::cgroup::CgroupError;
use serde::Serialize;

use super::clients::Plan;
use super::report::{mib, Sample};
use super::target::Target;
use crate::{Context, HarnessError};

/// Samples of the server's memory and descriptors, one a second, taken while the load runs.
pub(super) struct Sampler {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling process `pid` from `started` on; every five samples, a progress line with
    /// `plan`'s counters goes to standard error.
    pub(super) fn start(pid: u32, started: Instant, plan: Arc<Plan>) -> Sampler {
        let running = Arc::new(AtomicBool::new(true));
        let sampling = Arc::clone(&running);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let sample = Sample {
                    t_secs: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                    rss_bytes: rss_bytes(pid).unwrap_or(0),
                    descriptors: descriptors(pid).unwrap_or(0),
                };
                if samples.len() % 5 == 0 && !samples.is_empty() {
                    let runs = plan.runs.load(Ordering::Relaxed);
                    eprintln!(
                        "load: {:>5.0} s  {runs} runs ({:.1}/s)  {} errors  server RSS {}  {} descriptors",
                        sample.t_secs,
                        runs as f64 / sample.t_secs.max(0.1),
                        plan.errors.load(Ordering::Relaxed),
                        mib(sample.rss_bytes),
                        sample.descriptors
                    );
                }
                samples.push(sample);
                if !sampling.load(Ordering::Relaxed) {
                    return samples;
                }
            }
        });
        Sampler { running, task }
    }

    /// Takes one last sample and returns them all.
    pub(super) async fn stop(self) -> Result<Vec<Sample>, HarnessError> {
        self.running.store(false, Ordering::Relaxed);
        self.task.await.context("the sampler")
    }
}

/// What the run left behind.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Leaks {
    /// How the counts were taken.
    pub(super) measured: &'static str,
    pub(super) box_cgroups: usize,
    pub(super) box_cgroup_names: Vec<String>,
    pub(super) processes: usize,
    pub(super) process_list: Vec<String>,
    pub(super) mounts: usize,
    pub(super) descriptors_start: usize,
    pub(super) descriptors_end: usize,
    pub(super) descriptors_leaked: usize,
}

impl Leaks {
    /// Everything left, counted together: 0 passes.
    pub(super) fn total(&self) -> usize {
        self.box_cgroups + self.processes + self.mounts + self.descriptors_leaked
    }
}

/// Waits for the server to settle back to where it was at `start`, then counts what the run
/// left: for a server in this process, everything of any box once it has shut down; for a
/// running server (which keeps its pool of ready boxes), only what is above `start`.
pub(super) async fn measure(target: &mut Target, start: &Probe) -> Result<Leaks, HarnessError> {
    let settle_until = Instant::now() + Duration::from_secs(30);
    target.wait_until_idle(Duration::from_secs(20)).await;
    let mut end = Probe::take(target)?;
    while !end.within(start) && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        end = Probe::take(target)?;
    }
    let leaks = match target.local.take() {
        Some(local) => {
            // The whole server goes away: nothing of any box may remain.
            let _ = local.server.shutdown().await;
            local.reaper.abort();
            local.engine.shutdown().await;
            drop(local.engine);
            let until = Instant::now() + Duration::from_secs(10);
            let mut after = Probe::take(target)?;
            while (!after.cgroups.is_empty() || !after.processes.is_empty() || after.mounts > 0)
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
                after = Probe::take(target)?;
            }
            Leaks {
                measured: "after the in-process server shut down; descriptors when idle again vs. at the start",
                box_cgroups: after.cgroups.len(),
                box_cgroup_names: after.cgroups.iter().take(10).cloned().collect(),
                processes: after.processes.len(),
                process_list: after.processes.iter().take(10).cloned().collect(),
                mounts: after.mounts,
                descriptors_start: start.descriptors,
                descriptors_end: end.descriptors,
                descriptors_leaked: end.descriptors.saturating_sub(start.descriptors),
            }
        }
        None => {
            // A running server keeps its pool of ready boxes: only more than at the start counts.
            let box_cgroups = end.cgroups.len().saturating_sub(start.cgroups.len());
            let processes = end.processes.len().saturating_sub(start.processes.len());
            Leaks {
                measured: "when the server was idle again, above its state at the start",
                box_cgroups,
                box_cgroup_names: match box_cgroups {
                    0 => Vec::new(),
                    _ => end
                        .cgroups
                        .difference(&start.cgroups)
                        .take(10)
                        .cloned()
                        .collect(),
                },
                processes,
                process_list: match processes {
                    0 => Vec::new(),
                    _ => end.processes.iter().take(10).cloned().collect(),
                },
                mounts: end.mounts.saturating_sub(start.mounts),
                descriptors_start: start.descriptors,
                descriptors_end: end.descriptors,
                descriptors_leaked: end.descriptors.saturating_sub(start.descriptors),
            }
        }
    };
    Ok(leaks)
}

/// Longest command line a process in the report shows, in characters.
const CMDLINE_CHARS: usize = 120;

/// The resident memory of process `pid`, in bytes.
pub(super) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How many descriptors process `pid` has open.
pub(super) fn descriptors(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// How many boxes the server `pid` has on the host now (0 when the census cannot be taken).
pub(super) fn box_count(target: &Target) -> usize {
    Census::take(&target.sandbox).map_or(0, |c| c.boxes_of(server_pid(target.pid)).count())
}

/// Everything the leak check counts, at one moment.
#[derive(Debug, Clone, Default)]
pub(super) struct Probe {
    /// Names of the server's box cgroups (`cb-<pid>-<n>`).
    pub(super) cgroups: BTreeSet<String>,
    /// Processes in the boxes' id range in one of the server's boxes or in no box at all, as
    /// `pid <pid> uid <uid>: <command line>`.
    pub(super) processes: Vec<String>,
    /// Mounts on the sandbox's root mount point.
    pub(super) mounts: usize,
    /// The server's open descriptors.
    pub(super) descriptors: usize,
}

impl Probe {
    /// Takes the census of the host and counts what of it is the server's.
    pub(super) fn take(target: &Target) -> Result<Probe, CgroupError> {
        let census = Census::take(&target.sandbox)?;
        Ok(Probe::of(
            &census,
            target.pid,
            descriptors(target.pid).unwrap_or(0),
        ))
    }

    /// What of `census` belongs to the server `server`: its boxes, and the processes in the
    /// boxes' id range that are in its boxes or in no box (those in another server's boxes are
    /// that server's business).
    fn of(census: &Census, server: u32, descriptors: usize) -> Probe {
        let server = server_pid(server);
        Probe {
            cgroups: census.boxes_of(server).map(|b| b.name.clone()).collect(),
            processes: census
                .processes
                .iter()
                .filter(|p| {
                    p.box_name
                        .as_deref()
                        .is_none_or(|name| owner_pid(name) == Some(server))
                })
                .map(|p| {
                    // One line per process: a program given on the command line has newlines.
                    let cmdline: String = p
                        .cmdline
                        .chars()
                        .map(|c| if c == '\n' { ' ' } else { c })
                        .take(CMDLINE_CHARS)
                        .collect();
                    format!("pid {} uid {}: {}", p.pid, p.uid, cmdline.trim())
                })
                .collect(),
            mounts: census.mounts.len(),
            descriptors,
        }
    }

    /// Nothing above `base`.
    pub(super) fn within(&self, base: &Probe) -> bool {
        self.cgroups.len() <= base.cgroups.len()
            && self.processes.len() <= base.processes.len()
            && self.mounts <= base.mounts
            && self.descriptors <= base.descriptors
    }
}

/// A pid as the census keeps owners (`i32`); one beyond that range owns no box.
fn server_pid(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use codebeaker_sandbox::census::{BoxProcess, HostBox};

    use super::*;

    fn host_box(name: &str) -> HostBox {
        HostBox {
            name: name.into(),
            owner: owner_pid(name),
            owner_alive: true,
            dirs: vec![PathBuf::from("/cgroup/codebeaker").join(name)],
            pids: Vec::new(),
        }
    }

    fn process(pid: i32, box_name: Option<&str>) -> BoxProcess {
        BoxProcess {
            pid,
            uid: 100_000,
            start_ticks: 1,
            state: 'S',
            box_name: box_name.map(Into::into),
            comm: "sleep".into(),
            cmdline: "sleep 600".into(),
        }
    }

    #[test]
    fn only_the_servers_boxes_and_homeless_processes_count() {
        let census = Census {
            boxes: vec![host_box("cb-42-a"), host_box("cb-42-b"), host_box("cb-7-c")],
            processes: vec![
                BoxProcess {
                    cmdline: "python3 -c import os\nos.fork()".into(),
                    ..process(999, None)
                },
                process(1000, Some("cb-42-a")),
                process(1001, Some("cb-7-c")),
                process(1002, None),
            ],
            mounts: vec![PathBuf::from("/run/codebeaker/root")],
        };
        let probe = Probe::of(&census, 42, 9);
        assert_eq!(
            probe.cgroups.iter().map(String::as_str).collect::<Vec<_>>(),
            ["cb-42-a", "cb-42-b"]
        );
        assert_eq!(
            probe.processes,
            [
                "pid 999 uid 100000: python3 -c import os os.fork()",
                "pid 1000 uid 100000: sleep 600",
                "pid 1002 uid 100000: sleep 600"
            ]
        );
        assert_eq!((probe.mounts, probe.descriptors), (1, 9));

        let idle = Probe::of(&Census::default(), 42, 9);
        assert!(idle.within(&probe));
        assert!(!probe.within(&idle));
    }
}
