//! `codebeaker doctor`: which isolation primitives work here, what is degraded, and what to do.

use anyhow::Result;
use clap::Args;
use codebeaker_sandbox::{BoxSpec, Command, RunStatus, Sandbox, SandboxConfig};

#[derive(Args)]
pub struct DoctorArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
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
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    checks.push(Check {
        name: "root",
        ok: root,
        detail: if root {
            "running as root".into()
        } else {
            "not running as root".into()
        },
        fix: Some("run codebeaker as root (boxes need uid maps and cgroups)"),
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
    let mut checks = static_checks();
    let mut isolation = None;
    match Sandbox::new(SandboxConfig::default()) {
        Ok(sandbox) => {
            let iso = sandbox.isolation().clone();
            checks.push(Check {
                name: "cgroups",
                ok: iso.cgroup.is_some(),
                detail: sandbox.cgroup_description().unwrap_or_else(|| "no usable cgroup hierarchy: boxes are degraded to rlimits".into()),
                fix: Some("mount cgroup2 with the memory, pids and cpu controllers (or the v1 memory, pids, cpu and cpuacct hierarchies)"),
            });
            let live = async {
                let bx = sandbox.create_box(&BoxSpec::default()).await?;
                let out = bx
                    .run(&Command::new(["/bin/sh", "-c", "id -u; hostname"]))
                    .await;
                bx.destroy().await?;
                out
            }
            .await;
            let (ok, detail) = match live {
                Ok(o) if o.status == RunStatus::Ok => (
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
    let usable = checks
        .iter()
        .find(|c| c.name == "box")
        .is_some_and(|c| c.ok);
    if args.json {
        let items: Vec<_> = checks
            .iter()
            .map(|c| serde_json::json!({"check": c.name, "ok": c.ok, "detail": c.detail, "fix": if c.ok { None } else { c.fix }}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"usable": usable, "isolation": isolation, "checks": items})
            )?
        );
    } else {
        for c in &checks {
            println!(
                "{:<20} {:<8} {}",
                c.name,
                if c.ok { "ok" } else { "MISSING" },
                c.detail
            );
            if let (false, Some(fix)) = (c.ok, c.fix) {
                println!("{:<20} {:<8} fix: {fix}", "", "");
            }
        }
        if let Some(iso) = &isolation {
            for note in &iso.notes {
                println!("{:<20} {:<8} {note}", "degraded", "");
            }
        }
        println!(
            "\n{}",
            if usable {
                "CodeBeaker can isolate programs on this host."
            } else {
                "CodeBeaker cannot isolate programs on this host: fix what is MISSING above."
            }
        );
    }
    Ok(if usable { 0 } else { 1 })
}
