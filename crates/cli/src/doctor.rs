//! `codebeaker doctor`: which isolation primitives work here, what is degraded, and what to do;
//! with `--leaks`, what boxes left behind on this host.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use codebeaker_sandbox::census::Census;
use codebeaker_sandbox::{BoxSpec, RunSpec, Sandbox, SandboxConfig};

#[derive(Args)]
pub struct DoctorArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
    /// Instead of the checks, list what boxes left on this host and exit 1 if there is anything:
    /// cgroups of boxes whose owner process is gone, processes in the boxes' id range that are
    /// not in a box of a live owner, and mounts on the sandbox's root mount point
    /// (/run/codebeaker/root). A live CodeBeaker's boxes are never counted. Removes nothing.
    #[arg(long)]
    leaks: bool,
    /// With --leaks: write what boxes have on the host now (live ones too) to FILE and exit 0,
    /// for a later `--leaks --since FILE`.
    #[arg(long, value_name = "FILE", requires = "leaks")]
    record: Option<PathBuf>,
    /// With --leaks: count only what is not in FILE (written by --record), so that a test run
    /// that records at its start counts only what appeared during it: boxes that another
    /// CodeBeaker on the host had then, or still runs now, do not fail the check.
    #[arg(
        long,
        value_name = "FILE",
        requires = "leaks",
        conflicts_with = "record"
    )]
    since: Option<PathBuf>,
}

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    fix: Option<&'static str>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn static_checks() -> Vec<Check> {
    let mut checks = Vec::new();
    // Not a requirement: as an ordinary user the boxes are rootless (see the notes).
    let root = codebeaker_sandbox::ids::is_root();
    checks.push(Check {
        name: "user",
        ok: true,
        detail: if root {
            "running as root: each box maps its own range of host ids".into()
        } else {
            format!(
                "not root: {}",
                codebeaker_sandbox::ids::rootless_map().describe()
            )
        },
        fix: None,
    });
    let userns = read("/proc/sys/user/max_user_namespaces").unwrap_or_else(|| "unknown".into());
    checks.push(Check {
        name: "user namespaces",
        ok: userns != "0",
        detail: format!("user.max_user_namespaces = {userns}"),
        fix: Some("sysctl -w user.max_user_namespaces=15000"),
    });
    for (name, file) in [
        ("pid namespaces", "/proc/self/ns/pid"),
        ("mount namespaces", "/proc/self/ns/mnt"),
        ("network namespaces", "/proc/self/ns/net"),
        ("ipc namespaces", "/proc/self/ns/ipc"),
        ("uts namespaces", "/proc/self/ns/uts"),
        ("cgroup namespaces", "/proc/self/ns/cgroup"),
    ] {
        let ok = std::path::Path::new(file).exists();
        checks.push(Check {
            name,
            ok,
            detail: if ok {
                "supported by the kernel".into()
            } else {
                format!("{file} missing")
            },
            fix: Some("use a kernel built with CONFIG_NAMESPACES and the matching options"),
        });
    }
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false);
    checks.push(Check {
        name: "seccomp",
        ok: seccomp,
        detail: if seccomp {
            "seccomp filters available".into()
        } else {
            "kernel without seccomp".into()
        },
        fix: Some("use a kernel built with CONFIG_SECCOMP_FILTER"),
    });
    checks
}

pub async fn main(args: DoctorArgs) -> Result<i32> {
    if args.leaks {
        return leaks(&args);
    }
    let mut checks = static_checks();
    let mut isolation = None;
    match Sandbox::new(SandboxConfig::default()) {
        Ok(sandbox) => {
            let iso = sandbox.isolation().clone();
            checks.push(Check {
                name: "cgroups",
                ok: iso.cgroup.is_some(),
                detail: sandbox.cgroup_description().unwrap_or_else(|| "no usable cgroup hierarchy: boxes are degraded to rlimits".into()),
                fix: Some(if codebeaker_sandbox::ids::is_root() {
                    "mount cgroup2 with the memory, pids and cpu controllers (or the v1 memory, pids, cpu and cpuacct hierarchies)"
                } else {
                    "rootless: start CodeBeaker in a cgroup v2 group of its own delegated to you, e.g. `systemd-run --user --scope -p Delegate=yes codebeaker ...` (docs/operations.md)"
                }),
            });
            let live = async {
                let bx = sandbox.create_box(&BoxSpec::default()).await?;
                let out = bx
                    .run(&RunSpec::new(["/bin/sh", "-c", "id -u; hostname"]))
                    .await;
                bx.destroy().await?;
                out
            }
            .await;
            let (ok, detail) = match live {
                Ok(o) if o.status == codebeaker_sandbox::Verdict::Ok => (
                    true,
                    format!(
                        "a box ran a program as {}",
                        String::from_utf8_lossy(&o.stdout)
                            .trim()
                            .replace('\n', " on host ")
                    ),
                ),
                Ok(o) => (
                    false,
                    format!(
                        "a test program ended as {}: {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                ),
                Err(e) => (false, e.to_string()),
            };
            checks.push(Check {
                name: "box",
                ok,
                detail,
                fix: Some("see the messages above"),
            });
            isolation = Some(iso);
        }
        Err(e) => checks.push(Check {
            name: "sandbox",
            ok: false,
            detail: e.to_string(),
            fix: None,
        }),
    }
    let verdict = verdict(&checks);
    if args.json {
        let items: Vec<_> = checks
            .iter()
            .map(|c| serde_json::json!({"check": c.name, "ok": c.ok, "detail": c.detail, "fix": if c.ok { None } else { c.fix }}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "usable": verdict != Verdict::Unusable,
                "degraded": verdict == Verdict::Degraded,
                "isolation": isolation,
                "checks": items
            }))?
        )?;
    } else {
        for c in &checks {
            outln!(
                "{:<20} {:<8} {}",
                c.name,
                if c.ok { "ok" } else { "MISSING" },
                c.detail
            )?;
            if let (false, Some(fix)) = (c.ok, c.fix) {
                outln!("{:<20} {:<8} fix: {fix}", "", "")?;
            }
        }
        if let Some(iso) = &isolation {
            let label = if iso.degraded { "degraded" } else { "note" };
            for note in &iso.notes {
                outln!("{label:<20} {:<8} {note}", "")?;
            }
        }
        outln!("\n{}", verdict.sentence())?;
    }
    Ok(verdict.exit_code())
}

/// What doctor concludes from its checks: it never says more than the lines above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Every check passed.
    Full,
    /// A box ran, but some check is MISSING (cgroups, most often): programs run with weaker
    /// limits than the configuration says.
    Degraded,
    /// No box could run.
    Unusable,
}

fn verdict(checks: &[Check]) -> Verdict {
    let box_ran = checks.iter().any(|c| c.name == "box" && c.ok);
    if !box_ran {
        Verdict::Unusable
    } else if checks.iter().all(|c| c.ok) {
        Verdict::Full
    } else {
        Verdict::Degraded
    }
}

impl Verdict {
    fn sentence(self) -> &'static str {
        match self {
            Verdict::Full => "CodeBeaker can isolate programs on this host.",
            Verdict::Degraded => {
                "CodeBeaker runs programs in boxes on this host, but degraded: what is MISSING \
                 above is not enforced (without cgroups, memory and process limits are per-process \
                 rlimits and CPU is not capped). Fix what is MISSING for full isolation."
            }
            Verdict::Unusable => {
                "CodeBeaker cannot isolate programs on this host: fix what is MISSING above."
            }
        }
    }

    /// 0 full, 2 degraded (boxes run, some limit is weaker), 1 unusable.
    fn exit_code(self) -> i32 {
        match self {
            Verdict::Full => 0,
            Verdict::Unusable => 1,
            Verdict::Degraded => 2,
        }
    }
}

/// `doctor --leaks`: the census of what boxes left, never a [`Sandbox`] (whose start removes
/// the boxes of dead owners, the very thing this reports).
fn leaks(args: &DoctorArgs) -> Result<i32> {
    let census =
        Census::take(&SandboxConfig::default()).context("counting the boxes on this host")?;
    if let Some(path) = &args.record {
        let text = serde_json::to_string_pretty(&census)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        outln!(
            "recorded {} box cgroups, {} processes in the boxes' id range and {} root mounts in {}",
            census.boxes.len(),
            census.processes.len(),
            census.mounts.len(),
            path.display()
        )?;
        return Ok(0);
    }
    let mut left = census.left_behind();
    if let Some(path) = &args.since {
        left = left.without(&read_census(path)?);
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"leaks": !left.is_empty(), "left_behind": left})
            )?
        )?;
    } else {
        for b in &left.boxes {
            let owner = b
                .owner
                .map_or("no owner".to_string(), |p| format!("owner {p} gone"));
            outln!(
                "leaked cgroup: {} ({owner}; processes {:?})",
                b.name,
                b.pids
            )?;
            for dir in &b.dirs {
                outln!("    {}", dir.display())?;
            }
        }
        for p in &left.processes {
            let inside = p.box_name.as_deref().unwrap_or("no box");
            outln!(
                "leaked process: pid {} uid {} state {} ({inside}): {}",
                p.pid,
                p.uid,
                p.state,
                if p.cmdline.is_empty() {
                    &p.comm
                } else {
                    &p.cmdline
                }
            )?;
        }
        for m in &left.mounts {
            outln!("leaked mount on {}", m.display())?;
        }
        if left.is_empty() {
            outln!("leak check: no box left behind")?;
        } else {
            outln!("leak check failed")?;
        }
    }
    Ok(if left.is_empty() { 0 } else { 1 })
}

fn read_census(path: &Path) -> Result<Census> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a census written by `codebeaker doctor --leaks --record`",
            path.display()
        )
    })
}
