//! `codebeaker languages`: every language, its version here, whether its runs are warm, and why
//! it is unavailable if so.

use anyhow::Result;
use clap::Args;
use codebeaker_engine::EngineConfig;

#[derive(Args)]
pub struct LanguagesArgs {
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn main(args: LanguagesArgs) -> Result<i32> {
    // Discovery only: no box is made, so this needs no root. Every probe runs (what is there
    // now), and its answer is kept for the commands that follow.
    let config = EngineConfig {
        fresh_probes: true,
        ..EngineConfig::default()
    };
    let languages = codebeaker_engine::languages(&config)?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "languages": languages }))?
        )?;
        return Ok(0);
    }
    outln!(
        "{:<12} {:<10} {:<9} {:<8} {:<5} aliases",
        "language",
        "version",
        "available",
        "snippets",
        "warm"
    )?;
    for l in &languages {
        outln!(
            "{:<12} {:<10} {:<9} {:<8} {:<5} {}",
            l.name,
            l.version.as_deref().unwrap_or("-"),
            if l.available { "yes" } else { "no" },
            if l.snippets { "yes" } else { "no" },
            if l.warm { "yes" } else { "no" },
            l.aliases.join(", ")
        )?;
        if let Some(reason) = l.reason.as_deref().filter(|_| !l.available) {
            outln!("{:<12} {reason}", "")?;
        }
    }
    Ok(0)
}
