//! The load tester behind `codebeaker load`: many WebSocket clients at once against a server,
//! for a fixed time or a fixed number of runs, with attack programs mixed in, and a check at the
//! end that nothing leaked.
//!
//! Each client is one WebSocket that opens a session (python, javascript, bash, go in turn), runs
//! a few programs in it, closes it, and starts over until the time or the runs are used up.
//! Normal programs have a known answer (a snippet's output, an upper-cased stdin, an exit code);
//! attack programs (fork bomb, memory bomb, output flood, infinite loop, daemons, `kill -9 -1`)
//! must end with the typed status their limit implies, and the session must go on working after
//! them. Every frame the server sends is checked against the protocol: JSON-RPC 2.0, the id of
//! the request in flight, exactly one of `result` and `error`, results of the documented shape,
//! streamed notifications in order and agreeing with the response.
//!
//! The server is an external one (loopback only), or one started in this process on an
//! ephemeral port. Its resident memory and open descriptors are sampled every second. At the end:
//! box cgroups of the server's pid, processes in the boxes' uid range, mounts on the sandbox's
//! root mount point (all three from the sandbox's census), and the server's descriptors against
//! its start. The exit code is 0 when there were no protocol errors, no wrong results and no
//! leaks, 1 otherwise.
//!
//! Its jobs, one module each: `programs` (the workload mix), `wire` (the raw WebSocket
//! driver), `checks` (what the protocol says an answer must look like), `clients` (the
//! clients and what they measure), `target` (the server under load), `leaks` (the
//! server's memory, descriptors and boxes), and `report`.

mod checks;
mod clients;
mod leaks;
mod programs;
mod report;
mod target;
mod wire;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codebeaker_engine::EngineConfig;
use codebeaker_server::ServerConfig;

use crate::HarnessError;
use clients::{client, Plan, Tally};
use leaks::{Probe, Sampler};
use report::{latency, print_summary, Memory, Report};
use target::Target;

/// Most clients one load run may start.
pub const MAX_CLIENTS: usize = 1000;
/// Longest a `--runs` soak may take when no `--duration` bounds it.
const MAX_SOAK_TIME: Duration = Duration::from_secs(4 * 3600);

/// The server a load run drives.
pub enum LoadServer {
    /// A running server at `url`, e.g. `ws://127.0.0.1:5000/ws/jsonrpc` (loopback only); its
    /// process is `pid`, or else the one listening on the URL's port.
    External { url: String, pid: Option<u32> },
    /// A server started in this process with these configurations; `server.listen` should be an
    /// ephemeral loopback port (`127.0.0.1:0`).
    InProcess {
        server: Box<ServerConfig>,
        engine: Box<EngineConfig>,
    },
}

/// One load run, as `codebeaker load`'s flags give it.
pub struct LoadOptions {
    pub server: LoadServer,
    /// Bearer token for a server with authentication on.
    pub token: Option<String>,
    /// Concurrent WebSocket clients (1 to [`MAX_CLIENTS`]).
    pub clients: usize,
    /// How long to load the server [default: 60 s; with `runs`, until the runs are done, at
    /// most 4 h].
    pub duration: Option<Duration>,
    /// Soak mode: stop after this many runs instead of after a duration.
    pub runs: Option<u64>,
    /// Mix attack programs into the runs, one in four.
    pub attacks: bool,
    /// Languages of the sessions: python, javascript, bash, go.
    pub languages: Vec<String>,
    /// Seed of the program mix (the same seed makes the same choices).
    pub seed: u64,
    /// Print the report as JSON on standard output (the summary still goes to standard error).
    pub json: bool,
}

/// Runs the load and reports it; returns the exit code (0 passed, 1 failed).
pub async fn run(args: LoadOptions) -> Result<i32, HarnessError> {
    if !(1..=MAX_CLIENTS).contains(&args.clients) {
        return Err(HarnessError::Usage(format!(
            "--clients must be between 1 and {MAX_CLIENTS}, got {}",
            args.clients
        )));
    }
    if args.runs == Some(0) {
        return Err(HarnessError::Usage("--runs must be at least 1".into()));
    }
    let languages = programs::for_languages(&args.languages)?;
    let time_limit = match (args.duration, args.runs) {
        (Some(d), _) => d,
        (None, None) => Duration::from_secs(60),
        (None, Some(_)) => MAX_SOAK_TIME,
    };

    let (mut target, server_label) = match args.server {
        LoadServer::External { url, pid } => (Target::external(&url, pid)?, url),
        LoadServer::InProcess { server, engine } => {
            let target = Target::in_process(*server, *engine, args.clients).await?;
            let label = format!("in-process at {}", target.url);
            (target, label)
        }
    };

    // Every language must run there before the clock starts.
    target::check_languages(&target.url, args.token.as_deref(), &languages).await?;

    target.wait_until_idle(Duration::from_secs(10)).await;
    let start = Probe::take(&target)?;
    let pid = target.pid;
    eprintln!(
        "load: {} clients against {server_label} (pid {pid}) for {}{}",
        args.clients,
        match args.runs {
            Some(n) => format!("{n} runs, at most "),
            None => String::new(),
        },
        humantime::format_duration(time_limit)
    );

    let plan = Arc::new(Plan {
        url: target.url.clone(),
        token: args.token.clone(),
        languages,
        attacks: args.attacks,
        seed: args.seed,
        deadline: Instant::now() + time_limit,
        tickets: args.runs.map(AtomicU64::new),
        runs: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });

    // Memory and descriptors every second, and a progress line every five.
    let started = Instant::now();
    let sampler = Sampler::start(pid, started, Arc::clone(&plan));

    let tasks: Vec<_> = (0..args.clients)
        .map(|i| tokio::spawn(client(i, Arc::clone(&plan))))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.protocol_error(&plan, format!("a client task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    let samples = sampler.stop().await?;

    let leaks = leaks::measure(&mut target, &start).await?;

    let memory = Memory::of(samples);
    let passed = tally.protocol_errors == 0 && tally.wrong_results == 0 && leaks.total() == 0;
    let report = Report {
        server: server_label,
        server_pid: pid,
        clients: args.clients,
        languages: plan.languages.iter().map(|l| l.name.to_string()).collect(),
        attacks: args.attacks,
        duration_limit_secs: (args.duration.is_some() || args.runs.is_none())
            .then_some(time_limit.as_secs_f64()),
        run_limit: args.runs,
        elapsed_secs: elapsed.as_secs_f64(),
        runs: tally.runs,
        runs_per_second: tally.runs as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: latency(&mut tally.latencies_us),
        normal_latency: latency(&mut tally.normal_latencies_us),
        sessions_created: tally.sessions_created,
        sessions_closed: tally.sessions_closed,
        sessions_lost_to_attacks: tally.sessions_lost,
        sessions_lost_samples: tally.lost_samples,
        reconnects: tally.reconnects,
        streamed_runs: tally.streamed,
        outcomes: tally.by_status,
        by_program: tally.by_program,
        protocol_errors: tally.protocol_errors,
        protocol_error_samples: tally.error_samples,
        wrong_results: tally.wrong_results,
        wrong_result_samples: tally.wrong_samples,
        normal_timeouts: tally.normal_timeouts,
        refused_busy: tally.busy,
        memory,
        leaks,
        passed,
    };
    print_summary(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if passed { 0 } else { 1 })
}
