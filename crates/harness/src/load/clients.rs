//! The clients and what they measure: each client is one WebSocket that opens a session (the
//! languages in turn), runs a few programs in it, closes it, and starts over until the plan is
//! over; every run is checked and counted in the client's [`Tally`], merged into the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::checks::{check_created, check_execute, check_stream, RunView};
use super::programs::{Check, Language, Rng};
use super::wire::{Conn, Failure, REQUEST_TIMEOUT};

/// How long beyond a run's own limit a client waits for the answer before it counts "no answer".
const REPLY_MARGIN: Duration = Duration::from_secs(60);
/// Error and wrong-result examples kept for the report.
const MAX_SAMPLES: usize = 20;

/// What the clients share.
pub(super) struct Plan {
    pub(super) url: String,
    pub(super) token: Option<String>,
    pub(super) languages: Vec<Language>,
    pub(super) attacks: bool,
    pub(super) seed: u64,
    pub(super) deadline: Instant,
    /// Runs left in soak mode.
    pub(super) tickets: Option<AtomicU64>,
    /// Live counters for the progress line.
    pub(super) runs: AtomicU64,
    pub(super) errors: AtomicU64,
}

impl Plan {
    fn over(&self) -> bool {
        Instant::now() >= self.deadline
            || self
                .tickets
                .as_ref()
                .is_some_and(|t| t.load(Ordering::Relaxed) == 0)
    }

    /// Takes the right to start one more run.
    fn take_run(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        match &self.tickets {
            None => true,
            Some(t) => t
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// What one client saw; merged into the report.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) runs: u64,
    pub(super) latencies_us: Vec<u64>,
    pub(super) normal_latencies_us: Vec<u64>,
    pub(super) by_status: BTreeMap<String, u64>,
    pub(super) by_program: BTreeMap<String, BTreeMap<String, u64>>,
    pub(super) protocol_errors: u64,
    pub(super) error_samples: Vec<String>,
    pub(super) wrong_results: u64,
    pub(super) wrong_samples: Vec<String>,
    pub(super) normal_timeouts: u64,
    pub(super) busy: u64,
    pub(super) sessions_lost: u64,
    pub(super) lost_samples: Vec<String>,
    pub(super) sessions_created: u64,
    pub(super) sessions_closed: u64,
    pub(super) reconnects: u64,
    pub(super) streamed: u64,
}

impl Tally {
    pub(super) fn protocol_error(&mut self, plan: &Plan, what: String) {
        self.protocol_errors += 1;
        plan.errors.fetch_add(1, Ordering::Relaxed);
        if self.error_samples.len() < MAX_SAMPLES {
            self.error_samples.push(what);
        }
    }

    fn wrong(&mut self, what: String) {
        self.wrong_results += 1;
        if self.wrong_samples.len() < MAX_SAMPLES {
            self.wrong_samples.push(what);
        }
    }

    pub(super) fn merge(&mut self, other: Tally) {
        self.runs += other.runs;
        self.latencies_us.extend(other.latencies_us);
        self.normal_latencies_us.extend(other.normal_latencies_us);
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, statuses) in other.by_program {
            let mine = self.by_program.entry(k).or_default();
            for (s, v) in statuses {
                *mine.entry(s).or_default() += v;
            }
        }
        self.protocol_errors += other.protocol_errors;
        self.error_samples.extend(other.error_samples);
        self.error_samples.truncate(MAX_SAMPLES);
        self.wrong_results += other.wrong_results;
        self.wrong_samples.extend(other.wrong_samples);
        self.wrong_samples.truncate(MAX_SAMPLES);
        self.normal_timeouts += other.normal_timeouts;
        self.busy += other.busy;
        self.sessions_lost += other.sessions_lost;
        self.lost_samples.extend(other.lost_samples);
        self.lost_samples.truncate(MAX_SAMPLES);
        self.sessions_created += other.sessions_created;
        self.sessions_closed += other.sessions_closed;
        self.reconnects += other.reconnects;
        self.streamed += other.streamed;
    }
}

/// One client: sessions one after another, a few runs in each, until the plan is over.
pub(super) async fn client(index: usize, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new(plan.seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut conn: Option<Conn> = None;
    // A session whose connection broke: closed as soon as there is a connection again.
    let mut orphan: Option<String> = None;
    let mut cycle = index;
    while !plan.over() {
        if conn.is_none() {
            match Conn::connect(&plan.url, plan.token.as_deref()).await {
                Ok(c) => {
                    if tally.sessions_created > 0 || orphan.is_some() {
                        tally.reconnects += 1;
                    }
                    conn = Some(c);
                }
                Err(e) => {
                    tally.protocol_error(&plan, format!("connecting: {}", e.chain()));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Some(id) = orphan.take() {
            close_session(c, &id, &plan, &mut tally).await;
        }
        let language = &plan.languages[cycle % plan.languages.len()];
        cycle += 1;
        let session_id = match c
            .call(
                "session.create",
                json!({"language": language.name}),
                REQUEST_TIMEOUT,
                None,
            )
            .await
        {
            Ok(result) => match check_created(&result, language.name) {
                Ok(id) => id,
                Err(e) => {
                    tally.protocol_error(&plan, format!("session.create: {e}"));
                    if let Some(id) = result.get("sessionId").and_then(Value::as_str) {
                        orphan = Some(id.to_string());
                    }
                    continue;
                }
            },
            Err(Failure::Busy(_)) => {
                tally.busy += 1;
                tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
                continue;
            }
            Err(Failure::Rpc { code, message }) => {
                tally.protocol_error(&plan, format!("{code}: {message}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(Failure::Broken(e)) => {
                tally.protocol_error(&plan, e);
                conn = None;
                continue;
            }
        };
        tally.sessions_created += 1;
        let runs_here = 3 + rng.below(10);
        let mut alive = true;
        for _ in 0..runs_here {
            if !plan.take_run() {
                break;
            }
            let Some(c) = conn.as_mut() else { break };
            match one_run(c, &session_id, language, &plan, &mut rng, &mut tally).await {
                RunEnd::Fine => {}
                RunEnd::SessionGone => {
                    alive = false;
                    break;
                }
                RunEnd::ConnectionBroken => {
                    conn = None;
                    break;
                }
            }
        }
        match conn.as_mut() {
            Some(c) if alive => close_session(c, &session_id, &plan, &mut tally).await,
            Some(_) => {}
            None => orphan = Some(session_id),
        }
    }
    if let Some(id) = orphan.take() {
        if let Ok(mut c) = Conn::connect(&plan.url, plan.token.as_deref()).await {
            close_session(&mut c, &id, &plan, &mut tally).await;
            c.close().await;
        }
    }
    if let Some(c) = conn {
        c.close().await;
    }
    tally
}

/// Closes session `id`; a close that fails or answers oddly is a protocol error.
async fn close_session(c: &mut Conn, id: &str, plan: &Plan, tally: &mut Tally) {
    match c
        .call(
            "session.close",
            json!({"sessionId": id}),
            REQUEST_TIMEOUT,
            None,
        )
        .await
    {
        Ok(result) => {
            if result.get("closed") == Some(&json!(true)) && result["sessionId"] == id {
                tally.sessions_closed += 1;
            } else {
                tally.protocol_error(plan, format!("session.close: unexpected result {result}"));
            }
        }
        Err(Failure::Busy(m)) => tally.protocol_error(plan, format!("session.close refused: {m}")),
        Err(Failure::Rpc { code, message }) => {
            tally.protocol_error(plan, format!("{code}: {message}"))
        }
        Err(Failure::Broken(e)) => tally.protocol_error(plan, e),
    }
}

/// What a run left for the client to go on with.
enum RunEnd {
    /// The session goes on.
    Fine,
    /// The session is closed (its box died or it is unknown): start another.
    SessionGone,
    /// The connection cannot be trusted any more: connect again.
    ConnectionBroken,
}

/// One `session.execute` of a normal or attack program, checked.
async fn one_run(
    c: &mut Conn,
    session_id: &str,
    language: &Language,
    plan: &Plan,
    rng: &mut Rng,
    tally: &mut Tally,
) -> RunEnd {
    let attack = plan.attacks && !language.attacks.is_empty() && rng.below(4) == 0;
    let program = if attack {
        &language.attacks[rng.below(language.attacks.len() as u64) as usize]
    } else {
        &language.normal[rng.below(language.normal.len() as u64) as usize]
    };
    let mut command =
        json!({"type": "execute", "code": program.code, "timeoutMs": program.timeout_ms});
    let mut expected_output = None;
    let mut stdin_number = 0;
    match program.check {
        Check::Snippet => {
            let (input, output) = language.snippet_input(rng);
            command["input"] = input;
            expected_output = Some(output);
        }
        Check::Upper => {
            stdin_number = rng.below(1_000_000);
            command["stdin"] = json!(format!("hello {stdin_number}"));
        }
        Check::Exit3 | Check::Ends(_) => {}
    }
    if let Some(mb) = program.memory_mb {
        command["memoryLimit"] = json!(mb);
    }
    let stream = rng.below(4) == 0;
    let params = json!({"sessionId": session_id, "command": command, "stream": stream});
    let mut events = Vec::new();
    let started = Instant::now();
    let timeout = Duration::from_millis(program.timeout_ms) + REPLY_MARGIN;
    let reply = c
        .call(
            "session.execute",
            params,
            timeout,
            stream.then_some(&mut events),
        )
        .await;
    let elapsed = started.elapsed();
    tally.runs += 1;
    plan.runs.fetch_add(1, Ordering::Relaxed);
    let label = format!("{}/{}", language.name, program.name);
    let result = match reply {
        Ok(result) => result,
        Err(Failure::Busy(_)) => {
            tally.busy += 1;
            *tally
                .by_program
                .entry(label)
                .or_default()
                .entry("refused_busy".into())
                .or_default() += 1;
            return RunEnd::Fine;
        }
        Err(Failure::Rpc { code, message }) => {
            // An attack may wreck its box beyond what the host waits for (the box is then
            // destroyed and the session closed, with -32001 saying so): a typed outcome of the
            // attack. A normal program must never lose its session.
            if attack && code == -32001 && message.contains("box died") {
                tally.sessions_lost += 1;
                *tally
                    .by_program
                    .entry(label)
                    .or_default()
                    .entry("session_lost".into())
                    .or_default() += 1;
                if tally.lost_samples.len() < MAX_SAMPLES {
                    tally.lost_samples.push(message);
                }
            } else {
                tally.protocol_error(plan, format!("{label}: {code}: {message}"));
            }
            return if code == -32001 {
                RunEnd::SessionGone
            } else {
                RunEnd::Fine
            };
        }
        Err(Failure::Broken(e)) => {
            tally.protocol_error(plan, format!("{label}: {e}"));
            return RunEnd::ConnectionBroken;
        }
    };
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    tally.latencies_us.push(micros);
    if !attack {
        tally.normal_latencies_us.push(micros);
    }
    let run = match check_execute(&result) {
        Ok(run) => run,
        Err(e) => {
            tally.protocol_error(plan, format!("{label}: session.execute result: {e}"));
            return RunEnd::Fine;
        }
    };
    *tally.by_status.entry(run.status.clone()).or_default() += 1;
    *tally
        .by_program
        .entry(label.clone())
        .or_default()
        .entry(run.status.clone())
        .or_default() += 1;
    if stream {
        tally.streamed += 1;
        match check_stream(&events, session_id, &run) {
            Ok(streamed) => {
                let complete = matches!(program.check, Check::Upper) && run.status == "ok";
                if complete && run.stdout.as_deref() != Some(streamed.as_str()) {
                    tally.protocol_error(
                        plan,
                        format!(
                            "{label}: streamed stdout {streamed:?} differs from the result's {:?}",
                            run.stdout
                        ),
                    );
                }
            }
            Err(e) => tally.protocol_error(plan, format!("{label}: streaming: {e}")),
        }
    }
    let describe = |run: &RunView| {
        format!(
            "status {}, exit code {:?}, stdout {:.120?}, output {:?}, error {:.300?}",
            run.status, run.exit_code, run.stdout, run.output, run.error
        )
    };
    match program.check {
        _ if !attack && run.status == "timeout" => tally.normal_timeouts += 1,
        Check::Snippet => {
            if run.status != "ok" || run.output != expected_output {
                tally.wrong(format!(
                    "{label}: expected output {:?}; got {}",
                    expected_output,
                    describe(&run)
                ));
            }
        }
        Check::Upper => {
            let expected = format!("HELLO {stdin_number}\n");
            if run.status != "ok" || run.stdout.as_deref() != Some(expected.as_str()) {
                tally.wrong(format!(
                    "{label}: expected stdout {expected:?}; got {}",
                    describe(&run)
                ));
            }
        }
        Check::Exit3 => {
            if run.status != "runtime_error" || run.exit_code != Some(3) {
                tally.wrong(format!(
                    "{label}: expected runtime_error with exit code 3; got {}",
                    describe(&run)
                ));
            }
        }
        Check::Ends(statuses) => {
            if !statuses.contains(&run.status.as_str()) {
                tally.wrong(format!(
                    "{label}: expected {}; got {}",
                    statuses.join(" or "),
                    describe(&run)
                ));
            }
        }
    }
    RunEnd::Fine
}
