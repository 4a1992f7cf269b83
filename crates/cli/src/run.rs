//! `codebeaker run`: one program in a fresh box, its exit code mirrored.

use anyhow::{bail, Context, Result};
use clap::Args;
use codebeaker_engine::{CodeRequest, Engine, EngineConfig};
use codebeaker_sandbox::{RunOutcome, Verdict};
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
    /// Language name or alias (see `codebeaker languages`).
    #[arg(short, long)]
    lang: Option<String>,
    /// Snippet mode: this JSON (or @file) is bound to `input_data`, and the value the code leaves
    /// in `result` is printed as JSON.
    #[arg(long)]
    input: Option<String>,
    /// Standard input: text, @file, or - for this command's own standard input.
    #[arg(long)]
    stdin: Option<String>,
    /// Wall-clock limit, e.g. 5s or 500ms (CPU time is limited to the same).
    #[arg(long, default_value = "10s", value_parser = parse::duration)]
    timeout: Duration,
    /// Memory limit of the run: 256M, 1.5G, or a bare number of MiB (512); between 16M and
    /// this host's memory.
    #[arg(long, value_parser = parse::memory)]
    memory: Option<u64>,
    /// Print the whole typed outcome as JSON instead of the program's output.
    #[arg(long)]
    json: bool,
}

/// Parses `--input`: JSON text or `@file`, with the position of a syntax error.
fn parse_input(arg: &str) -> Result<serde_json::Value> {
    let bytes = parse::text_or_file(arg)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "--input is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

pub async fn main(args: RunArgs) -> Result<i32> {
    let code = match (&args.file, &args.code) {
        (Some(file), _) => {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        }
        (None, Some(code)) => code.clone(),
        (None, None) => bail!("give a program file or -c CODE"),
    };
    let input = args.input.as_deref().map(parse_input).transpose()?;
    let stdin = match &args.stdin {
        Some(s) => parse::text_or_file(s)?,
        None => Vec::new(),
    };
    // The language first, from the registry's names alone: the engine then looks for that one
    // toolchain only, and the others are never probed.
    let registry = codebeaker_languages::Registry::builtin()?;
    let language = match (&args.lang, &args.file) {
        (Some(lang), _) => lang.clone(),
        (None, Some(file)) => match registry.detect_extension(file) {
            Some(l) => l.name().to_string(),
            None => bail!(
                "cannot tell the language of {} from its extension; give --lang ({})",
                file.display(),
                registry.names().collect::<Vec<_>>().join(", ")
            ),
        },
        (None, None) => bail!(
            "give --lang with -c ({})",
            registry.names().collect::<Vec<_>>().join(", ")
        ),
    };
    let engine = Engine::new(EngineConfig {
        only_languages: Some(vec![language.clone()]),
        ..EngineConfig::default()
    })?;
    let mut limits = engine.config().run_limits;
    limits.wall_time = args.timeout;
    limits.cpu_time = args.timeout;
    limits.memory_bytes = args.memory;
    let snippet = input.is_some();
    let run = engine
        .run_once(CodeRequest {
            language,
            code,
            input,
            stdin,
            limits,
            ..CodeRequest::default()
        })
        .await;
    // Whatever the run did, every box it made is gone before the command ends.
    engine.shutdown().await;
    let run = run?;
    let outcome = &run.outcome;
    if args.json {
        // The run result every API answers with, and what only this command knows.
        let mut result = codebeaker_engine::run_result(outcome, run.output.clone());
        if let Some(c) = &run.compile {
            result.compile_cache_hit = Some(c.cache_hit);
            result.compile_ms = Some(c.duration.as_millis() as u64);
        }
        let mut json = serde_json::to_value(result)?;
        json["language"] = run.language.clone().into();
        json["error"] = run.error.clone().into();
        outln!("{}", serde_json::to_string_pretty(&json)?)?;
    } else if outcome.status == Verdict::CompileError {
        // The outcome's output is the compiler's, and the error already holds all of it (with
        // the user's file names and line numbers): print it once.
        eprintln!("{}", run.error.as_deref().unwrap_or_default());
    } else if snippet {
        // stdout carries only the snippet's output, so it can be piped.
        std::io::stderr().write_all(&outcome.stdout)?;
        if let Some(output) = &run.output {
            outln!("{output}")?;
        }
        if let Some(error) = &run.error {
            eprintln!("{error}");
        }
    } else {
        std::io::stdout().write_all(&outcome.stdout)?;
        std::io::stderr().write_all(&outcome.stderr)?;
        if !matches!(
            outcome.status,
            Verdict::Ok | Verdict::RuntimeError | Verdict::CompileError
        ) {
            let why = outcome.message.as_deref().unwrap_or_default();
            eprintln!("codebeaker: {} ({why})", outcome.status);
        }
    }
    Ok(exit_code(outcome))
}

/// The exit code `codebeaker run` mirrors: the program's own, `128 + signal` when it died of a
/// signal, 1 when the code did not compile, 124 for a time limit, 137 for the memory limit, 141 for the output limit, 125 when
/// CodeBeaker itself failed.
pub fn exit_code(o: &RunOutcome) -> i32 {
    match o.status {
        Verdict::Timeout => 124,
        Verdict::MemoryLimit => 137,
        Verdict::OutputLimit => 141,
        Verdict::InternalError => 125,
        Verdict::CompileError => 1,
        _ => o.exit_code.unwrap_or_else(|| 128 + o.signal.unwrap_or(0)),
    }
}
