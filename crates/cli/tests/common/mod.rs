//! What every area of the end-to-end tests shares: one multi-threaded runtime, one engine over
//! real boxes and one server over it, the sandbox settings of this build, the lock that lets
//! the fault tests run alone, a JSON-RPC client over a real WebSocket ([`client`]), and the
//! host's view of boxes through the sandbox's census ([`host`]).
//!
//! # One engine, one runtime
//!
//! Boxes are tied to the runtime that made them, so every test that uses [`engine`] runs its
//! body with [`run`] or [`run_within`] on [`runtime`] (but the audit-log test, which captures
//! every event on one thread, runs its server on a runtime of its own). The engine lives in a static and is never
//! shut down; it keeps no pool of ready boxes, which would outlive the test process. Tests that
//! need an engine or a server with settings of their own make it with [`engine_config`],
//! [`start_engine`] and [`start_server`].
//!
//! # Running alone
//!
//! Every sandbox that starts removes the boxes of dead CodeBeaker processes. The fault tests
//! kill servers and watch what the dead server left until a new one removes it, so they take
//! [`exclusive`] (through [`run_alone`]) while every other test takes [`shared`] (through
//! [`run`], [`run_within`], or by hand when it starts `codebeaker` processes itself).

pub mod client;
pub mod compat;
pub mod host;
pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use codebeaker_client::batch::percentile;
use codebeaker_engine::{Caller, Engine, EngineConfig, SessionOptions};
use codebeaker_protocol::commands::Command;
use codebeaker_sandbox::{Sandbox, SandboxConfig};
use codebeaker_server::{Server, ServerConfig, ServerHandle};
use serde_json::Value;

pub use client::{Client, FRAME_TIMEOUT};

/// The `codebeaker` binary of this build: each box's init, and the command the CLI tests run.
pub const BIN: &str = env!("CARGO_BIN_EXE_codebeaker");

/// An environment variable of the test process (and so of the server's) that no box may ever
/// see: [`engine`] sets it to [`secret`] before it makes its first box.
pub const SECRET_VAR: &str = "ATTACK_CANARY_SECRET";

/// A value no box can guess: the content of [`SECRET_VAR`] and of the attacks' host canary file.
pub fn secret() -> &'static str {
    static SECRET: OnceLock<String> = OnceLock::new();
    SECRET.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("cb-secret-{}-{nanos:x}", std::process::id())
    })
}

static ALONE: RwLock<()> = RwLock::new(());

/// Held by every test that may start a sandbox: it keeps the tests that run alone out.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    ALONE.read().unwrap_or_else(|p| p.into_inner())
}

/// Held by a test that must see no other sandbox start while it runs.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    ALONE.write().unwrap_or_else(|p| p.into_inner())
}

/// The runtime every test body runs on (engines and servers live as long as it does).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Runs a test body on the shared runtime.
pub fn run<F: Future<Output = ()>>(body: F) {
    let _shared = shared();
    runtime().block_on(body);
}

/// How many times slower than a native host the machine running the tests may be: the pure
/// cgroup v2 leg, which runs these tests in an emulated guest, sets `TEST_SLOWDOWN`
/// (a whole number from 1 to 100); 1 when unset. Not a `CODEBEAKER_*` variable: those are the
/// server's settings, and the server refuses names it does not know.
pub fn slowdown() -> u32 {
    match std::env::var("TEST_SLOWDOWN") {
        Err(_) => 1,
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(n @ 1..=100) => n,
            _ => panic!("TEST_SLOWDOWN={text:?}: expected a whole number from 1 to 100"),
        },
    }
}

/// `bound` times [`slowdown`]: for a wall-clock bound that is there only so that a test cannot
/// hang, never for a bound the test is about (a timeout that must fire stays as it is).
pub fn patient(bound: Duration) -> Duration {
    bound * slowdown()
}

/// Runs a test body on the shared runtime, failing (not hanging) after `limit` (times
/// [`slowdown`]).
pub fn run_within<F: Future<Output = ()>>(limit: Duration, body: F) {
    let _shared = shared();
    runtime().block_on(async {
        tokio::time::timeout(patient(limit), body)
            .await
            .expect("the test did not finish in time (a deadlock or a hang?)");
    });
}

/// Runs a test body alone (see [`exclusive`]) on a runtime of its own, which ends with the
/// test and takes every task the test left with it; fails (not hangs) after `limit` (times
/// [`slowdown`]).
pub fn run_alone<F: Future<Output = ()>>(limit: Duration, body: F) {
    let _alone = exclusive();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(patient(limit), body)
            .await
            .expect("the test did not finish in time (a hang?)");
    });
}

/// Sandbox settings for tests: this build's binary as each box's init, no degraded isolation.
pub fn sandbox_config() -> SandboxConfig {
    SandboxConfig {
        init_program: Some(BIN.into()),
        allow_degraded: false,
        ..SandboxConfig::default()
    }
}

/// The sandbox the tests of boxes without an engine share, with [`sandbox_config`].
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        Sandbox::new(sandbox_config())
            .expect("the sandbox needs root and cgroups on the test machine")
    })
}

/// Engine settings for tests: [`sandbox_config`] and `box_pool_size` ready boxes.
pub fn engine_config(box_pool_size: usize) -> EngineConfig {
    EngineConfig {
        sandbox: sandbox_config(),
        box_pool_size,
        ..EngineConfig::default()
    }
}

/// An engine with its upkeep task (reaper, pool refill) running on [`runtime`].
pub fn start_engine(config: EngineConfig) -> Arc<Engine> {
    let engine = Arc::new(Engine::new(config).expect("the engine needs root and cgroups here"));
    let _context = runtime().enter();
    engine.spawn_reaper();
    shut_down_at_exit(&engine);
    engine
}

/// Engines that may still be alive when the test binary exits (the shared one, those of servers
/// that serve until the end): their sessions and boxes are closed then, as `codebeaker serve`
/// closes its own when it stops, so that the binary leaves no box behind.
fn shut_down_at_exit(engine: &Arc<Engine>) {
    static ENGINES: Mutex<Vec<std::sync::Weak<Engine>>> = Mutex::new(Vec::new());
    static HOOK: std::sync::Once = std::sync::Once::new();
    extern "C" fn at_exit() {
        let engines: Vec<Arc<Engine>> = ENGINES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        runtime().block_on(async {
            for engine in engines {
                let _ = tokio::time::timeout(Duration::from_secs(30), engine.shutdown()).await;
            }
        });
    }
    ENGINES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::downgrade(engine));
    // SAFETY: `at_exit` is a plain function that stays valid for the life of the process.
    HOOK.call_once(|| unsafe {
        libc::atexit(at_exit);
    });
}

/// The engine the tests share (no pool of ready boxes).
pub fn engine() -> &'static Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        // Set before the first box exists, so every box could inherit it if the sandbox let
        // the host's environment through.
        std::env::set_var(SECRET_VAR, secret());
        start_engine(engine_config(0))
    })
}

/// Server settings for tests: an ephemeral loopback port, defaults otherwise.
pub fn local_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..ServerConfig::default()
    }
}

/// Starts a server over `engine`.
pub async fn start_server(engine: Arc<Engine>, config: ServerConfig) -> ServerHandle {
    Server::bind(config, engine)
        .await
        .expect("bind the server")
        .spawn()
}

/// Starts a server over `engine` that serves until the test process ends; returns its address.
pub async fn serve_forever(engine: Arc<Engine>, config: ServerConfig) -> SocketAddr {
    let handle = start_server(engine, config).await;
    let addr = handle.local_addr();
    std::mem::forget(handle);
    addr
}

/// The server most tests share: default settings (no auth, no rate limit) over [`engine`]; it
/// serves for the life of the test process.
pub async fn server() -> SocketAddr {
    static ADDR: tokio::sync::OnceCell<SocketAddr> = tokio::sync::OnceCell::const_new();
    *ADDR
        .get_or_init(|| serve_forever(Arc::clone(engine()), local_config()))
        .await
}

/// Median and 99th percentile of `samples`, sorted in place, by the workspace's one percentile
/// ([`codebeaker_client::batch::percentile`]), for the benchmarks.
pub fn median_p99(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (percentile(samples, 50.0), percentile(samples, 99.0))
}

/// Bytes a box wrote, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A caller of this test process, named `name` and the process id.
pub fn caller(name: &str) -> Caller {
    Caller(format!("{name}-{}", std::process::id()))
}

/// Creates a session of `who` in `language` through the engine; returns its id.
pub async fn open_session(engine: &Engine, who: &Caller, language: &str) -> String {
    engine
        .create_session(
            who,
            SessionOptions {
                language: language.into(),
                ..Default::default()
            },
        )
        .await
        .expect("create session")
        .id
}

/// Runs a command given as protocol JSON in session `id` of `who`, through the engine;
/// returns (success, result, error).
pub async fn command(
    engine: &Engine,
    who: &Caller,
    id: &str,
    command: Value,
) -> (bool, Value, Option<String>) {
    let command: Command = serde_json::from_value(command).expect("valid command");
    let out = engine
        .execute_command(who, id, command, None)
        .await
        .expect("command");
    let result = serde_json::to_value(&out.result).expect("a result as JSON");
    (out.success, result, out.error)
}
