//! `codebeaker mcp`: the MCP server over stdio, for an agent's MCP client to start, with an
//! engine in this process (no server, no token). The tools are the server's own
//! ([`codebeaker_server::mcp`]); this is the entry: settings, the engine, the transport, and the
//! clean-up when the client closes stdin. Logs go to stderr: stdout is the protocol.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use codebeaker_engine::Caller;
use codebeaker_server::AppState;

use crate::serve::Config;

#[derive(Args)]
pub struct McpArgs {
    /// Configuration file (TOML), as `codebeaker serve` reads it: its limits, sessions,
    /// languages and `[mcp]` settings apply; see docs/configuration.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub async fn main(args: McpArgs) -> Result<i32> {
    let (config, _) = Config::load(args.config.as_deref(), None)?;
    let engine = crate::serve::start_engine(&config).await?;
    let reaper = engine.spawn_reaper();
    let state = AppState::new(config.server_config(), Arc::clone(&engine))?;
    let serving = codebeaker_server::mcp::serve_stdio(state, Caller::anonymous());
    // A client that stops its server with a signal (they send SIGTERM when it does not exit
    // after stdin closes) still gets every box closed.
    let served = tokio::select! {
        served = serving => served,
        () = stop_signal() => Ok(()),
    };
    reaper.abort();
    // Whatever the client left open, every box is gone before the command ends.
    engine.shutdown().await;
    served?;
    Ok(0)
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM and SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: closing the sandboxes"),
        _ = int.recv() => tracing::info!("SIGINT: closing the sandboxes"),
    }
}
