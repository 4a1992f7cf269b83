//! `codebeaker run`: one program in a fresh box, its exit code mirrored.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use codebeaker_sandbox::{
    BoxSpec, Command, FileRoot, RunOutcome, RunStatus, Sandbox, SandboxConfig,
};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::parse;

#[derive(Args)]
pub struct RunArgs {
    /// The program file; its extension picks the language unless --lang is given.
    #[arg(required_unless_present = "code", conflicts_with = "code")]
    file: Option<PathBuf>,
    /// The program's text, instead of a file.
    #[arg(short = 'c', long = "code")]
    code: Option<String>,
    /// Language: python, javascript or bash.
    #[arg(short, long)]
    lang: Option<String>,
    /// Standard input: text, @file, or - for this command's own standard input.
    #[arg(long)]
    stdin: Option<String>,
    /// Wall-clock limit, e.g. 5s or 500ms (CPU time is limited to the same).
    #[arg(long, default_value = "10s", value_parser = parse::duration)]
    timeout: Duration,
    /// Memory limit of the box, e.g. 256M.
    #[arg(long, default_value = "512M", value_parser = parse::size)]
    memory: u64,
    /// Print the whole typed outcome as JSON instead of the program's output.
    #[arg(long)]
    json: bool,
}

/// A language the interim runner knows: how to start a script file.
struct ScriptLanguage {
    name: &'static str,
    extensions: &'static [&'static str],
    interpreter: &'static str,
}

const LANGUAGES: &[ScriptLanguage] = &[
    ScriptLanguage {
        name: "python",
        extensions: &["py"],
        interpreter: "/usr/bin/python3",
    },
    ScriptLanguage {
        name: "javascript",
        extensions: &["js", "mjs", "cjs"],
        interpreter: "/usr/bin/node",
    },
    ScriptLanguage {
        name: "bash",
        extensions: &["sh", "bash"],
        interpreter: "/bin/bash",
    },
];

fn pick_language(lang: Option<&str>, file: Option<&PathBuf>) -> Result<&'static ScriptLanguage> {
    let known = || {
        LANGUAGES
            .iter()
            .map(|l| l.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = lang {
        let name = name.to_ascii_lowercase();
        let alias = match name.as_str() {
            "py" | "python3" => "python",
            "js" | "node" => "javascript",
            "sh" => "bash",
            other => other,
        };
        return LANGUAGES.iter().find(|l| l.name == alias).with_context(|| {
            format!(
                "Unsupported language '{name}'. Known languages: {}",
                known()
            )
        });
    }
    let Some(file) = file else {
        bail!("give --lang with -c; known languages: {}", known())
    };
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    LANGUAGES
        .iter()
        .find(|l| l.extensions.contains(&ext))
        .with_context(|| {
            format!(
                "cannot tell the language of {} from its extension; give --lang ({})",
                file.display(),
                known()
            )
        })
}

pub async fn main(args: RunArgs) -> Result<i32> {
    let lang = pick_language(args.lang.as_deref(), args.file.as_ref())?;
    let code = match (&args.file, &args.code) {
        (Some(file), _) => {
            std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
        }
        (None, Some(code)) => code.as_bytes().to_vec(),
        (None, None) => bail!("give a program file or -c CODE"),
    };
    let stdin = match &args.stdin {
        Some(s) => parse::text_or_file(s)?,
        None => Vec::new(),
    };
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let mut spec = BoxSpec::default();
    spec.limits.memory_bytes = args.memory;
    let bx = sandbox.create_box(&spec).await?;
    let script = format!("main.{}", lang.extensions[0]);
    let outcome = async {
        bx.write_file(FileRoot::Tmp, &script, code, false).await?;
        let mut cmd = Command::new([lang.interpreter.to_string(), format!("/tmp/{script}")]);
        cmd.stdin = stdin;
        cmd.limits.wall_time = args.timeout;
        cmd.limits.cpu_time = args.timeout;
        bx.run(&cmd).await
    }
    .await;
    bx.destroy().await?;
    let outcome = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome_json(&outcome))?);
    } else {
        std::io::stdout().write_all(&outcome.stdout)?;
        std::io::stderr().write_all(&outcome.stderr)?;
        if !matches!(outcome.status, RunStatus::Ok | RunStatus::RuntimeError) {
            let why = outcome.message.as_deref().unwrap_or_default();
            eprintln!("codebeaker: {} ({why})", outcome.status);
        }
    }
    Ok(exit_code(&outcome))
}

/// The exit code `codebeaker run` mirrors: the program's own, `128 + signal` when it died of a
/// signal, 124 for a time limit, 137 for the memory limit, 141 for the output limit, 125 when
/// CodeBeaker itself failed.
pub fn exit_code(o: &RunOutcome) -> i32 {
    match o.status {
        RunStatus::Timeout => 124,
        RunStatus::MemoryLimit => 137,
        RunStatus::OutputLimit => 141,
        RunStatus::InternalError => 125,
        _ => o.exit_code.unwrap_or_else(|| 128 + o.signal.unwrap_or(0)),
    }
}

/// Output bytes as JSON: a string when they are UTF-8, else base64 with an `…Encoding` field.
fn bytes_field(map: &mut serde_json::Map<String, serde_json::Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            map.insert(name.into(), s.into());
        }
        Err(_) => {
            map.insert(
                name.into(),
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into(),
            );
            map.insert(format!("{name}Encoding"), "base64".into());
        }
    }
}

/// The typed outcome in the wire protocol's field names.
pub fn outcome_json(o: &RunOutcome) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("status".into(), o.status.as_str().into());
    map.insert("exitCode".into(), o.exit_code.into());
    map.insert("signal".into(), o.signal.into());
    bytes_field(&mut map, "stdout", &o.stdout);
    bytes_field(&mut map, "stderr", &o.stderr);
    map.insert("truncated".into(), o.truncated.into());
    map.insert("timedOut".into(), o.timed_out().into());
    map.insert("oomKilled".into(), o.oom_killed().into());
    map.insert("durationMs".into(), (o.wall_time.as_millis() as u64).into());
    map.insert("cpuTimeMs".into(), (o.cpu_time.as_millis() as u64).into());
    map.insert("peakMemoryBytes".into(), o.peak_memory_bytes.into());
    map.insert("message".into(), o.message.clone().into());
    serde_json::Value::Object(map)
}
