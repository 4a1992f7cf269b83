//! Benchmarks the client end to end: the original .NET CodeBeaker's Python snippet through the runtime service, cold
//! (a new session for every run) and warm (pooled), then a batch of 200 items at concurrency 1, 4
//! and 8; over WebSocket (a server started in this process on an ephemeral port) and embedded
//! (the engine called directly).
//!
//! ```text
//! cargo run --release -p codebeaker-client --example bench [-- --cold 20 --warm 100 --items 200]
//! ```
//!
//! Needs what the engine needs (root, namespaces; cgroups unless degraded mode is acceptable).
//! This binary is also each box's setup process, like the `codebeaker` binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use codebeaker_client::batch::percentile;
use codebeaker_client::{
    Backend, BatchExecutor, BatchItem, BatchOptions, Client, ClientConfig, CodeBeakerOptions,
    Embedded, ItemStatus, RuntimeService,
};
use codebeaker_engine::{Engine, EngineConfig};
use codebeaker_server::{Server, ServerConfig};
use serde_json::json;

const SNIPPET: &str = "result = {'output': input_data['value'] * 2}";

struct Args {
    cold: usize,
    warm: usize,
    items: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cold: 20,
        warm: 100,
        items: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a number"))?
            .parse::<usize>()
            .map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--cold" => args.cold = value.max(1),
            "--warm" => args.warm = value.max(1),
            "--items" => args.items = value.max(1),
            other => {
                return Err(format!(
                    "unknown option {other}; use --cold, --warm, --items"
                ))
            }
        }
    }
    Ok(args)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(codebeaker_sandbox::INIT_ARG) {
        codebeaker_sandbox::init::main(&argv[2..]);
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(bench(args)) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn options() -> CodeBeakerOptions {
    CodeBeakerOptions {
        enable_auto_cleanup: false,
        ..CodeBeakerOptions::default()
    }
}

/// Times `runs` executions of the snippet; returns (median, p99) in milliseconds.
async fn time_runs(runtime: &RuntimeService, runs: usize) -> Result<(f64, f64), String> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let started = Instant::now();
        let result = runtime
            .execute(SNIPPET, "python", json!({"value": i}), Some(10_000))
            .await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if result.output != Some(json!({"output": i * 2})) {
            return Err(format!("run {i} failed: {:?}", result.error));
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 50.0), percentile(&times, 99.0)))
}

async fn bench_mode(
    name: &str,
    backend: Arc<dyn Backend>,
    args: &Args,
) -> Result<Vec<String>, String> {
    let mut rows = Vec::new();

    // Cold: every run retires its session, so the next one creates a new box.
    let cold = RuntimeService::new(
        Arc::clone(&backend),
        CodeBeakerOptions {
            max_executions_per_session: Some(1),
            ..options()
        },
    )
    .map_err(|e| e.to_string())?;
    time_runs(&cold, 2).await?; // first use of the language: caches, page cache
    let (p50, p99) = time_runs(&cold, args.cold).await?;
    rows.push(format!(
        "| {name} | snippet, cold (new session) | {} runs | p50 {p50:.1} ms | p99 {p99:.1} ms |",
        args.cold
    ));
    cold.pool().close().await;

    // Warm: one pooled session, reused.
    let warm = RuntimeService::new(Arc::clone(&backend), options()).map_err(|e| e.to_string())?;
    time_runs(&warm, 3).await?;
    let (p50, p99) = time_runs(&warm, args.warm).await?;
    rows.push(format!(
        "| {name} | snippet, warm (pooled) | {} runs | p50 {p50:.1} ms | p99 {p99:.1} ms |",
        args.warm
    ));
    warm.pool().close().await;

    for concurrency in [1, 4, 8] {
        let runtime = RuntimeService::new(
            Arc::clone(&backend),
            CodeBeakerOptions {
                session_pool_size: concurrency,
                ..options()
            },
        )
        .map_err(|e| e.to_string())?;
        runtime
            .pool()
            .warm_up("python", concurrency)
            .await
            .map_err(|e| e.to_string())?;
        let items: Vec<BatchItem> = (0..args.items)
            .map(|n| BatchItem {
                id: json!(n),
                input: json!({"value": n}),
            })
            .collect();
        let batch = BatchExecutor::new(
            runtime.clone(),
            BatchOptions {
                max_concurrency: concurrency,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let report = batch.run(SNIPPET, "python", items).await;
        let s = &report.summary;
        if s.count(ItemStatus::Ok) != s.total {
            return Err(format!(
                "batch at concurrency {concurrency}: {:?}",
                s.counts
            ));
        }
        rows.push(format!(
            "| {name} | batch of {} at concurrency {concurrency} (warm pool) | {:.2} s | {:.1} items/s | p50 {} ms, p99 {} ms |",
            s.total,
            s.duration_ms as f64 / 1000.0,
            s.items_per_second,
            s.latency_p50_ms,
            s.latency_p99_ms
        ));
        runtime.pool().close().await;
    }
    Ok(rows)
}

async fn bench(args: Args) -> Result<(), String> {
    let engine = tokio::task::spawn_blocking(|| Engine::new(EngineConfig::default()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("starting the engine: {e}"))?;
    let engine = Arc::new(engine);
    let isolation = engine.isolation().clone();
    let server = Server::bind(
        ServerConfig {
            listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            ..ServerConfig::default()
        },
        Arc::clone(&engine),
    )
    .await
    .map_err(|e| e.to_string())?
    .spawn();
    let url = format!("ws://{}/ws/jsonrpc", server.local_addr());
    let client = Client::connect(ClientConfig::new(url.clone()))
        .await
        .map_err(|e| e.to_string())?;

    let mut rows = vec![
        "| mode | what | size | time | figure |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    rows.extend(bench_mode("websocket", Arc::new(client), &args).await?);
    rows.extend(
        bench_mode(
            "embedded",
            Arc::new(Embedded::new(Arc::clone(&engine))),
            &args,
        )
        .await?,
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await;
    engine.shutdown().await;

    println!(
        "client benchmark: the original .NET CodeBeaker's Python snippet through the runtime service; isolation {} (cgroup {:?}, seccomp {}), {} cores",
        isolation.backend,
        isolation.cgroup,
        isolation.seccomp,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
