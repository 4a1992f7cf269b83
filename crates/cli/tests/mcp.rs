//! The MCP door, end to end: the official MCP Python SDK (the pinned `mcp` that
//! `scripts/compat-clients.sh` installs under `target/compat/`) over stdio, starting the built
//! `codebeaker mcp`, and over streamable HTTP against `/mcp` of a real server on an ephemeral
//! port, over real boxes. Each flow of `tests/mcp/client_flows.py` runs on both transports; the
//! lifecycle checks (a session's sandboxes are closed when it ends) look at the engine (HTTP) and
//! at the host's boxes (stdio). The attacks of one caller or session on another are in
//! `attacks/mcp.rs`, the benchmark at the end of this file.
//!
//! Alone, as root: `cargo test -p codebeaker --test tests mcp::`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use codebeaker_engine::Caller;
use codebeaker_server::mcp::McpConfig;
use codebeaker_server::{AuthConfig, ServerConfig, TokenConfig};

use crate::common::compat::{self, Conversation};
use crate::common::host::boxes_of;
use crate::common::{self, runtime};

/// The tokens of the callers of the MCP server, and their caller names.
pub const ALICE: &str = "mcp-alice-token";
pub const MALLORY: &str = "mcp-mallory-token";
pub const ALICE_CALLER: &str = "mcp-alice";

/// Sandboxes one MCP client of the test servers may hold.
pub const MAX_SANDBOXES: usize = 2;

/// An MCP server over the shared engine with auth on for alice and mallory, serving for the
/// whole test run, with `idle` as its MCP session timeout.
fn serve(idle: Duration) -> SocketAddr {
    let token = |token: &str, caller: &str| TokenConfig {
        token: token.into(),
        caller: caller.into(),
    };
    let config = ServerConfig {
        auth: AuthConfig {
            tokens: vec![token(ALICE, ALICE_CALLER), token(MALLORY, "mcp-mallory")],
        },
        mcp: McpConfig {
            max_sandboxes_per_client: MAX_SANDBOXES,
            session_idle_timeout: idle,
            ..McpConfig::default()
        },
        ..common::local_config()
    };
    let engine = Arc::clone(common::engine());
    runtime().block_on(common::serve_forever(engine, config))
}

/// The server most tests use (the default MCP session timeout).
pub fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| serve(McpConfig::default().session_idle_timeout))
}

/// A server whose MCP sessions end after two idle seconds.
fn impatient_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| serve(Duration::from_secs(2)))
}

/// The URL of `/mcp` on `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/mcp")
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client_flows.py")
}

/// The Python of the MCP SDK, and `client_flows.py` with `args`.
fn python(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(compat::python("mcp", "The MCP Python SDK"));
    command.arg(script()).args(args);
    command
}

/// `client_flows.py http <url> <token> <flow>`.
pub fn over_http(addr: SocketAddr, token: &str, flow: &str) -> std::process::Command {
    python(&["http", &url(addr), token, flow])
}

/// `client_flows.py stdio <codebeaker> <flow>`.
fn over_stdio(flow: &str) -> std::process::Command {
    python(&["stdio", common::BIN, flow])
}

/// Runs `flow` to its end and checks that it said so.
pub fn run_flow(command: std::process::Command, flow: &str) -> String {
    // The program's sandboxes are boxes of this process (HTTP) or of its own server (stdio).
    let _shared = common::shared();
    let stdout = compat::run(command);
    assert!(
        stdout.contains(&format!("flow {flow}: all checks passed")),
        "{stdout}"
    );
    stdout
}

fn both(flow: &str) {
    run_flow(over_http(server(), ALICE, flow), flow);
    run_flow(over_stdio(flow), flow);
}

#[test]
fn initialize_and_tools_list_every_tool_with_its_schema() {
    both("tools");
}

#[test]
fn run_code_in_python_javascript_bash_and_go() {
    both("run");
}

#[test]
fn a_syntax_error_and_a_timeout_are_error_results() {
    both("errors");
}

#[test]
fn a_sandbox_keeps_variables_and_files_until_closed() {
    both("sandbox");
}

#[test]
fn the_languages_resource() {
    both("resource");
}

#[test]
fn a_client_holds_a_bounded_number_of_sandboxes() {
    both("bound");
}

/// The ids of alice's open sessions, through the engine.
fn alices_sessions() -> Vec<String> {
    common::engine()
        .list_sessions(&Caller(ALICE_CALLER.into()))
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// Waits (a little) until the session `id` of alice is gone; fails the test if it stays.
async fn gone(id: &str, why: &str) {
    let started = Instant::now();
    while alices_sessions().iter().any(|s| s == id) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "sandbox {id} is still open after {why}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `open <sandbox> <pid>`, as the lifecycle flows print it.
fn opened(line: &str) -> (String, String) {
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("open"), "{line}");
    let sandbox = words.next().expect("a sandbox id").to_string();
    let pid = words.next().expect("a pid").to_string();
    (sandbox, pid)
}

#[test]
fn deleting_the_http_session_closes_its_sandboxes() {
    let addr = server();
    let _shared = common::shared();
    runtime().block_on(async {
        let mut client = Conversation::start(over_http(addr, ALICE, "lifecycle"));
        let (sandbox, _) = opened(&client.line().await);
        assert!(
            alices_sessions().contains(&sandbox),
            "the sandbox is a session"
        );
        // The client leaves: its transport deletes the MCP session.
        client.say("leave").await;
        let rest = client.finish().await;
        assert!(rest.contains("all checks passed"), "{rest}");
        gone(&sandbox, "its MCP session was deleted").await;
    });
}

#[test]
fn an_idle_http_session_times_out_and_closes_its_sandboxes() {
    let addr = impatient_server();
    let _shared = common::shared();
    runtime().block_on(async {
        let mut client = Conversation::start(over_http(addr, ALICE, "idle"));
        let (sandbox, _) = opened(&client.line().await);
        assert!(
            alices_sessions().contains(&sandbox),
            "the sandbox is a session"
        );
        // Silent for longer than the server's two seconds.
        client.say("5").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        gone(&sandbox, "its MCP session timed out").await;
        client.finish().await;
    });
}

#[test]
fn the_stdio_server_closes_every_box_when_its_client_leaves() {
    let _shared = common::shared();
    runtime().block_on(async {
        let mut client = Conversation::start(over_stdio("lifecycle"));
        let (_, pid) = opened(&client.line().await);
        let pid: u32 = pid.parse().expect("a pid");
        assert!(
            !boxes_of(pid).is_empty(),
            "the sandbox is a box of codebeaker mcp ({pid})"
        );
        // The client leaves: it closes the server's stdin, and the server exits.
        client.say("leave").await;
        let rest = client.finish().await;
        assert!(rest.contains("all checks passed"), "{rest}");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "codebeaker mcp exited"
        );
        assert!(
            boxes_of(pid).is_empty(),
            "codebeaker mcp left boxes: {:?}",
            boxes_of(pid)
        );
    });
}

// ---------------------------------------------------------------------------------------------
// The benchmark of docs/mcp.md (one run, by hand).

fn bench_samples(command: std::process::Command) -> Vec<f64> {
    let _shared = common::shared();
    let stdout = compat::run(command);
    let times: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the bench's JSON");
    times["run_ms"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect()
}

#[test]
#[ignore = "a benchmark: cargo test --release -p codebeaker --test tests mcp::bench -- --ignored --nocapture"]
fn bench_run_code_over_stdio_and_http_beside_json_rpc() {
    const RUNS: usize = 200;
    let runs = RUNS.to_string();
    let mut stdio = bench_samples(python(&["stdio", common::BIN, "bench", &runs]));
    let mut http = bench_samples(python(&["http", &url(server()), ALICE, "bench", &runs]));
    let mut rpc = {
        let _shared = common::shared();
        runtime().block_on(async {
            let mut client = common::Client::connect(common::server().await).await;
            let run =
                serde_json::json!({"language": "python", "code": "print('hi')", "wait": 30000});
            client.ok("execution.run", run.clone()).await;
            let mut times = Vec::new();
            for _ in 0..RUNS {
                let started = Instant::now();
                let record = client.ok("execution.run", run.clone()).await;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(record["stdout"], "hi\n", "{record}");
            }
            times
        })
    };
    for (name, samples) in [
        ("MCP run_code over stdio (Python SDK)", &mut stdio),
        ("MCP run_code over streamable HTTP (Python SDK)", &mut http),
        ("JSON-RPC execution.run with wait over WebSocket", &mut rpc),
    ] {
        assert_eq!(samples.len(), RUNS);
        let (median, p99) = common::median_p99(samples);
        println!("bench {name}: median {median:.1} ms, p99 {p99:.1} ms ({RUNS} runs)");
    }
}
