//! `codebeaker load`: the flags of the load tester and the configuration of its in-process
//! server; the load itself is [`codebeaker_harness::load`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use codebeaker_harness::load::{LoadOptions, LoadServer};

use crate::parse;

#[derive(Args)]
pub struct LoadArgs {
    /// A running server, e.g. ws://127.0.0.1:5000/ws/jsonrpc (loopback only); without one, a
    /// server starts in this process on an ephemeral port.
    #[arg(long)]
    server: Option<String>,
    /// Pid of the `--server` process, for its memory, descriptors and boxes (default: the
    /// process listening on the URL's port).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Bearer token for a server with authentication on.
    #[arg(long, env = "CODEBEAKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Configuration of the in-process server, as `codebeaker serve --config` (the
    /// `CODEBEAKER_*` environment applies too).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Concurrent WebSocket clients (1-1000).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// How long to load the server [default: 60s; with --runs, until the runs are done, at
    /// most 4h].
    #[arg(long, value_parser = parse::duration)]
    duration: Option<Duration>,
    /// Soak mode: stop after this many runs instead of after a duration.
    #[arg(long)]
    runs: Option<u64>,
    /// Mix attack programs (fork bomb, memory bomb, output flood, infinite loop, daemons,
    /// kill -9 -1) into the runs, one in four.
    #[arg(long)]
    attacks: bool,
    /// Languages of the sessions, comma-separated: python, javascript, bash, go.
    #[arg(long, value_delimiter = ',', default_value = "python,javascript,bash")]
    languages: Vec<String>,
    /// Seed of the program mix (the same seed makes the same choices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON on standard output (the summary still goes to standard error).
    #[arg(long)]
    json: bool,
}

pub async fn main(args: LoadArgs) -> Result<i32> {
    let server = match args.server {
        Some(url) => LoadServer::External {
            url,
            pid: args.server_pid,
        },
        None => {
            let listen = SocketAddr::from(([127, 0, 0, 1], 0));
            let (config, _) = crate::serve::Config::load(args.config.as_deref(), Some(listen))?;
            LoadServer::InProcess {
                server: Box::new(config.server_config()),
                engine: Box::new(config.engine_config()?),
            }
        }
    };
    let options = LoadOptions {
        server,
        token: args.token,
        clients: args.clients,
        duration: args.duration,
        runs: args.runs,
        attacks: args.attacks,
        languages: args.languages,
        seed: args.seed,
        json: args.json,
    };
    Ok(codebeaker_harness::load::run(options).await?)
}
