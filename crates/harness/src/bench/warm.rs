//! The warm suite (`codebeaker bench --suite warm`): the paths a platform uses on every
//! request, in one run, side by side with a bare process and Docker (when a daemon runs): warm
//! snippets in an existing session over the WebSocket server and in-process, `session.create`
//! from the pool, one-shot runs cold and from the pool, throughput on all cores, and the memory
//! of idle sessions. `--only` picks some of these parts.
//!
//! Over WebSocket, every request goes through [`codebeaker_client::Client`], so the figures are
//! what a user's client sees, its decoding and bookkeeping included.

use codebeaker_client::batch::percentile;
use codebeaker_client::{Backend, BackendExt, Client, ClientConfig};
use codebeaker_engine::{Caller, Engine, EngineConfig, SessionOptions};
use codebeaker_protocol::methods::{ExecutionRunParams, ExecutionStatus, SessionCreateParams};
use codebeaker_server::{Server, ServerConfig};
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Figure, Output};
use crate::HarnessError;

/// The parts of the suite, as `--only` names them.
pub const PARTS: [&str; 7] = [
    "bare",
    "docker",
    "session-create",
    "warm",
    "one-shot",
    "throughput",
    "idle",
];

/// How long a one-shot measurement lets the server wait for a run to end (the `wait` param).
const ONE_SHOT_WAIT_MS: u64 = 60_000;

const PY_SEED: &str = "result = {'output': input_data['value'] * 2}";
const SEEDS: &[(&str, &str)] = &[
    ("python", PY_SEED),
    ("javascript", "const result = { output: input_data.value * 2 };"),
    ("go", "value := input_data[\"value\"].(float64)\nresult := map[string]interface{}{\"output\": value * 2}"),
    ("csharp", "var value = input_data.GetProperty(\"value\").GetInt32();\nvar result = new { output = value * 2 };"),
];

/// How long a request through the client may wait for its answer: generous, so that a slow
/// host makes slow figures rather than failures.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A client connected to the server at `url`.
async fn connect(url: &str) -> Result<Client, HarnessError> {
    let config = ClientConfig {
        request_timeout: REQUEST_TIMEOUT,
        ..ClientConfig::new(url)
    };
    Ok(Client::connect(config).await?)
}

/// A new session in `language`; returns its id.
async fn create_session(client: &Client, language: &str) -> Result<String, HarnessError> {
    let created = client
        .session_create(SessionCreateParams {
            language: language.into(),
            ..Default::default()
        })
        .await?;
    Ok(created.session_id)
}

/// One row of the report: a case and its samples, or why it was skipped.
struct Row {
    name: String,
    samples: Vec<Duration>,
    note: Option<String>,
}

/// A measured row.
fn row(name: impl Into<String>, samples: Vec<Duration>) -> Row {
    Row {
        name: name.into(),
        samples,
        note: None,
    }
}

/// A row for a case that could not be measured, and why.
fn skipped(name: impl Into<String>, why: impl Into<String>) -> Row {
    Row {
        name: name.into(),
        samples: Vec::new(),
        note: Some(why.into()),
    }
}

/// Median and p99 of `samples`.
fn stats(samples: &[Duration]) -> (Duration, Duration) {
    let mut s = samples.to_vec();
    s.sort();
    (percentile(&s, 50.0), percentile(&s, 99.0))
}

/// Times `n` calls of `f`, one after another.
async fn time_n<F, Fut>(n: usize, mut f: F) -> Result<Vec<Duration>, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), HarnessError>>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f().await?;
        out.push(start.elapsed());
    }
    Ok(out)
}

/// A server over `engine` on an ephemeral loopback port.
async fn serve_loopback(
    engine: &Arc<Engine>,
) -> Result<codebeaker_server::ServerHandle, HarnessError> {
    let config = ServerConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServerConfig::default()
    };
    Ok(Server::bind(config, Arc::clone(engine)).await?.spawn())
}

/// An engine configuration with `pool` ready boxes and room for many sessions.
fn engine_config(pool: usize) -> EngineConfig {
    let mut config = EngineConfig {
        box_pool_size: pool,
        ..EngineConfig::default()
    };
    config.sessions.max_sessions = 2048;
    config.sessions.max_sessions_per_caller = 2048;
    config
}

/// Waits (at most 10 s) until the engine has `n` ready boxes.
async fn wait_for_pool(engine: &Engine, n: usize) {
    for _ in 0..2000 {
        if engine.stats().pooled_boxes >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Times bare `python3` running the snippet `code` on the input `{"value": 21}`.
fn bare_python(code: &str) -> Result<Duration, HarnessError> {
    let start = Instant::now();
    let status = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            &format!(
                "import json\ninput_data = {{'value': 21}}\n{code}\nprint(json.dumps(result))"
            ),
        ])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(HarnessError::Step("bare python failed".into()));
    }
    Ok(start.elapsed())
}

/// Docker baselines: `docker run --rm` and `docker exec` of the original .NET CodeBeaker's
/// Python snippet program, with an image imported from this host's Python (no registry needed).
fn docker_rows(n: usize) -> Vec<Row> {
    let ok = std::process::Command::new("docker")
        .args(["info"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !ok.is_ok_and(|s| s.success()) {
        let why = "skipped: no Docker daemon (see docs/operations.md#benchmarks)";
        return vec![skipped("docker run", why), skipped("docker exec", why)];
    }
    let result = (|| -> Result<Vec<Row>, HarnessError> {
        let have = std::process::Command::new("docker")
            .args(["image", "inspect", "codebeaker-bench"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !have.success() {
            let script = "set -e; libs=$(ldd /usr/bin/python3 | grep -o '/[^ ]*'); \
                tar -C / -ch usr/bin/python3 usr/lib/python3.11 $(echo $libs | sed 's#^/##; s# /# #g') 2>/dev/null \
                | docker import - codebeaker-bench >/dev/null";
            let built = std::process::Command::new("sh")
                .args(["-c", script])
                .status()?;
            if !built.success() {
                return Err(HarnessError::Step("building the bench image failed".into()));
            }
        }
        let program = format!(
            "import json\ninput_data = {{'value': 21}}\n{PY_SEED}\nprint(json.dumps(result))"
        );
        let mut run = Vec::new();
        for _ in 0..n.min(20) {
            let start = Instant::now();
            let s = std::process::Command::new("docker")
                .args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "codebeaker-bench",
                    "/usr/bin/python3",
                    "-c",
                    &program,
                ])
                .stdout(Stdio::null())
                .status()?;
            if !s.success() {
                return Err(HarnessError::Step("docker run failed".into()));
            }
            run.push(start.elapsed());
        }
        let name = format!("codebeaker-bench-{}", std::process::id());
        let started = std::process::Command::new("docker")
            .args([
                "run",
                "-d",
                "--rm",
                "--network",
                "none",
                "--name",
                &name,
                "codebeaker-bench",
                "/usr/bin/python3",
                "-c",
                "import time; time.sleep(3600)",
            ])
            .stdout(Stdio::null())
            .status()?;
        if !started.success() {
            return Err(HarnessError::Step("starting a container failed".into()));
        }
        let mut exec = Vec::new();
        for _ in 0..n {
            let start = Instant::now();
            let s = std::process::Command::new("docker")
                .args(["exec", &name, "/usr/bin/python3", "-c", &program])
                .stdout(Stdio::null())
                .status()?;
            if !s.success() {
                break;
            }
            exec.push(start.elapsed());
        }
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        Ok(vec![
            row("docker run (python snippet)", run),
            row("docker exec (python snippet)", exec),
        ])
    })();
    result.unwrap_or_else(|e| vec![skipped("docker", format!("skipped: {}", e.chain()))])
}

/// `MemAvailable` of the host, in bytes (0 when unknown).
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// One-shot runs as a client sees them, with the long-poll: `execution.run`, then
/// `execution.status` with `wait` until the run has ended.
async fn one_shot(client: &Client) -> Result<(), HarnessError> {
    let queued = client
        .execution_run(ExecutionRunParams {
            language: "python".into(),
            code: "print(42)".into(),
            ..Default::default()
        })
        .await?;
    loop {
        let s = client
            .execution_status_wait(
                &queued.execution_id,
                Duration::from_millis(ONE_SHOT_WAIT_MS),
            )
            .await?;
        match s.status {
            ExecutionStatus::Completed => return Ok(()),
            ExecutionStatus::Failed => {
                return Err(HarnessError::Step(format!("one-shot run failed: {s:?}")))
            }
            ExecutionStatus::Queued | ExecutionStatus::Running => {}
        }
    }
}

/// The same in one round trip: `execution.run` with `wait`.
async fn one_shot_waiting(client: &Client) -> Result<(), HarnessError> {
    let s = client
        .execution_run_wait(
            ExecutionRunParams {
                language: "python".into(),
                code: "print(42)".into(),
                ..Default::default()
            },
            Duration::from_millis(ONE_SHOT_WAIT_MS),
        )
        .await?;
    match s.status {
        ExecutionStatus::Completed => Ok(()),
        ExecutionStatus::Failed => Err(HarnessError::Step(format!("one-shot run failed: {s:?}"))),
        ExecutionStatus::Queued | ExecutionStatus::Running => Err(HarnessError::Step(format!(
            "one-shot run still not finished after {ONE_SHOT_WAIT_MS} ms: {s:?}"
        ))),
    }
}

/// Measures the parts `only` names (all when empty) with `iterations` samples per case (at least
/// five), holding `idle_sessions` sessions for the memory figure, and prints the report.
pub async fn run(
    iterations: usize,
    idle_sessions: usize,
    only: &[String],
    json_out: bool,
) -> Result<Output, HarnessError> {
    let n = iterations.max(5);
    let want = |part: &str| only.is_empty() || only.iter().any(|p| p == part);
    let engine = Arc::new(Engine::new(engine_config(4))?);
    let upkeep = engine.spawn_reaper();
    let server = serve_loopback(&engine).await?;
    let url = format!("ws://{}/ws/jsonrpc", server.local_addr());
    let client = connect(&url).await?;
    wait_for_pool(&engine, 4).await;
    let mut rows = Vec::new();
    let mut extra = serde_json::Map::new();

    if want("bare") {
        rows.push(row(
            "bare python3 (snippet program)",
            (0..n)
                .map(|_| bare_python(PY_SEED))
                .collect::<Result<_, HarnessError>>()?,
        ));
    }
    if want("docker") {
        rows.extend(docker_rows(n));
    }
    if want("session-create") {
        session_create(&engine, &client, n, &mut rows).await?;
    }
    if want("warm") {
        warm_snippets(&engine, &client, n, &mut rows).await?;
    }
    if want("one-shot") {
        one_shots(&engine, &client, n, &mut rows).await?;
    }
    if want("throughput") {
        throughput(&url, n, &mut extra).await?;
    }
    if want("idle") {
        idle(&engine, idle_sessions, &mut extra).await?;
    }

    drop(client);
    server.shutdown().await?;
    upkeep.abort();
    engine.shutdown().await;
    report(&rows, &extra, json_out)
}

/// `session.create` from the pool (the pool refills between calls).
async fn session_create(
    engine: &Engine,
    client: &Client,
    n: usize,
    rows: &mut Vec<Row>,
) -> Result<(), HarnessError> {
    let mut creates = Vec::new();
    let mut created = Vec::new();
    for _ in 0..n.min(50) {
        wait_for_pool(engine, 1).await;
        let start = Instant::now();
        let id = create_session(client, "python").await?;
        creates.push(start.elapsed());
        created.push(id);
    }
    for id in created {
        client.session_close(&id).await?;
    }
    rows.push(row("session.create (pool)", creates));
    Ok(())
}

/// Warm snippets in an existing session, over WebSocket and in-process.
async fn warm_snippets(
    engine: &Arc<Engine>,
    client: &Client,
    n: usize,
    rows: &mut Vec<Row>,
) -> Result<(), HarnessError> {
    for (language, code) in SEEDS {
        let id = create_session(client, language).await?;
        for _ in 0..3 {
            let reply = client
                .run_snippet(&id, code, json!({"value": 21}), None)
                .await?;
            if !reply.success {
                return Err(HarnessError::Step(format!(
                    "{language}: {}",
                    reply.error.unwrap_or_default()
                )));
            }
        }
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            client
                .run_snippet(&id, code, json!({"value": 21}), None)
                .await?;
            samples.push(start.elapsed());
        }
        rows.push(row(format!("warm {language} snippet (WebSocket)"), samples));
        client.session_close(&id).await?;
    }

    // The same warm Python snippet in-process.
    let me = Caller::anonymous();
    let session = engine
        .create_session(
            &me,
            SessionOptions {
                language: "python".into(),
                ..Default::default()
            },
        )
        .await?;
    let command: codebeaker_protocol::commands::Command = serde_json::from_value(
        json!({"type": "execute", "code": PY_SEED, "input": {"value": 21}}),
    )?;
    let samples = time_n(n, || {
        let (engine, me, id, command) = (engine, &me, &session.id, command.clone());
        async move {
            engine
                .execute_command(me, id, command, None)
                .await
                .map(|_| ())
                .map_err(Into::into)
        }
    })
    .await?;
    rows.push(row("warm python snippet (in-process)", samples));
    engine.close_session(&me, &session.id).await?;
    Ok(())
}

/// One-shot runs from the pool and in cold boxes: `execution.run`, then `execution.status`
/// with `wait` (a long-poll that answers when the run ends); and `execution.run` with `wait`.
async fn one_shots(
    engine: &Engine,
    client: &Client,
    n: usize,
    rows: &mut Vec<Row>,
) -> Result<(), HarnessError> {
    let mut pooled = Vec::new();
    let mut pooled_waiting = Vec::new();
    for i in 0..2 * n.min(50) {
        wait_for_pool(engine, 4).await;
        let start = Instant::now();
        if i % 2 == 0 {
            one_shot(client).await?;
            pooled.push(start.elapsed());
        } else {
            one_shot_waiting(client).await?;
            pooled_waiting.push(start.elapsed());
        }
    }
    rows.push(row("one-shot python (pool)", pooled));
    rows.push(row("one-shot python (pool, run+wait)", pooled_waiting));
    let cold_engine = Arc::new(Engine::new(engine_config(0))?);
    let cold_server = serve_loopback(&cold_engine).await?;
    let cold_client = connect(&format!("ws://{}/ws/jsonrpc", cold_server.local_addr())).await?;
    let mut cold = Vec::new();
    let mut cold_waiting = Vec::new();
    for i in 0..2 * n.min(50) {
        let start = Instant::now();
        if i % 2 == 0 {
            one_shot(&cold_client).await?;
            cold.push(start.elapsed());
        } else {
            one_shot_waiting(&cold_client).await?;
            cold_waiting.push(start.elapsed());
        }
    }
    rows.push(row("one-shot python (cold box)", cold));
    rows.push(row("one-shot python (cold, run+wait)", cold_waiting));
    drop(cold_client);
    cold_server.shutdown().await?;
    cold_engine.shutdown().await;
    Ok(())
}

/// Throughput: warm Python snippets from several connections at once.
async fn throughput(
    url: &str,
    n: usize,
    extra: &mut serde_json::Map<String, Value>,
) -> Result<(), HarnessError> {
    let workers = 8;
    let per_worker = (n * 4).max(100);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await?;
            let id = create_session(&client, "python").await?;
            for _ in 0..per_worker {
                client
                    .run_snippet(&id, PY_SEED, json!({"value": 21}), None)
                    .await?;
            }
            client.session_close(&id).await?;
            Ok::<_, HarnessError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let per_sec = (workers * per_worker) as f64 / start.elapsed().as_secs_f64();
    extra.insert("throughputPerSecond".into(), json!(per_sec));
    Ok(())
}

/// Idle sessions and their memory.
async fn idle(
    engine: &Engine,
    idle_sessions: usize,
    extra: &mut serde_json::Map<String, Value>,
) -> Result<(), HarnessError> {
    let me = Caller::anonymous();
    let before = mem_available();
    let mut ids = Vec::new();
    for _ in 0..idle_sessions {
        let s = engine
            .create_session(
                &me,
                SessionOptions {
                    language: "python".into(),
                    ..Default::default()
                },
            )
            .await?;
        ids.push(s.id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = mem_available();
    let per_session = before.saturating_sub(after) / idle_sessions.max(1) as u64;
    extra.insert("idleSessions".into(), json!(ids.len()));
    extra.insert("memoryPerIdleSessionBytes".into(), json!(per_session));
    for id in ids {
        engine.close_session(&me, &id).await?;
    }
    Ok(())
}

/// Prints each case's median and p99, and the ratios of the bare process and `docker exec` to it.
fn report(
    rows: &[Row],
    extra: &serde_json::Map<String, Value>,
    json_out: bool,
) -> Result<Output, HarnessError> {
    let reference = |name: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(name) && !r.samples.is_empty())
            .map(|r| stats(&r.samples).0)
    };
    let bare = reference("bare python3");
    let exec = reference("docker exec");
    let ratio =
        |base: Option<Duration>, d: Duration| base.map(|b| b.as_secs_f64() / d.as_secs_f64());
    let bare_name = rows
        .iter()
        .find(|r| r.name.starts_with("bare python3") && !r.samples.is_empty())
        .map(|r| r.name.as_str());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut figures: Vec<Figure> = rows
        .iter()
        .filter(|r| r.note.is_none() && !r.samples.is_empty())
        .map(|r| {
            let (med, p99) = stats(&r.samples);
            let baseline = bare_name
                .zip(bare)
                .filter(|(name, _)| *name != r.name)
                .map(|(name, b)| (name, ms(b)));
            Figure::time("warm", r.name.as_str(), ms(med), Some(ms(p99)), baseline)
        })
        .collect();
    for (key, unit) in [
        ("throughputPerSecond", "runs/s"),
        ("memoryPerIdleSessionBytes", "bytes"),
    ] {
        if let Some(v) = extra.get(key).and_then(Value::as_f64) {
            figures.push(Figure::value("warm", key, v, unit));
        }
    }
    if json_out {
        let out: Vec<Value> = rows
            .iter()
            .map(|r| {
                let (med, p99) = stats(&r.samples);
                json!({"case": r.name, "samples": r.samples.len(), "medianMs": med.as_secs_f64() * 1e3, "p99Ms": p99.as_secs_f64() * 1e3,
                       "bareOverThis": ratio(bare, med), "dockerExecOverThis": ratio(exec, med), "note": r.note})
            })
            .collect();
        let json = json!({"cases": out, "extra": extra});
        return Ok(Output { json, figures });
    }
    println!(
        "{:<36} {:>7} {:>10} {:>10} {:>11} {:>12}",
        "case", "samples", "median ms", "p99 ms", "bare ÷ this", "d.exec ÷ this"
    );
    for r in rows {
        if let Some(note) = &r.note {
            println!("{:<36} {note}", r.name);
            continue;
        }
        let (med, p99) = stats(&r.samples);
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}×"));
        println!(
            "{:<36} {:>7} {:>10.2} {:>10.2} {:>11} {:>12}",
            r.name,
            r.samples.len(),
            med.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            f(ratio(bare, med)),
            f(ratio(exec, med))
        );
    }
    for (k, v) in extra {
        println!("{k}: {v}");
    }
    Ok(Output {
        json: Value::Null,
        figures,
    })
}
