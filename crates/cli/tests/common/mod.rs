//! What the server-level test binaries share: one multi-threaded runtime, an engine over real
//! boxes, a server on an ephemeral loopback port, and a small JSON-RPC client that speaks to it
//! over a real WebSocket. Each binary uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use codebeaker_engine::{Engine, EngineConfig};
use codebeaker_sandbox::SandboxConfig;
use codebeaker_server::{Server, ServerConfig, ServerHandle};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one frame before it fails (instead of hanging).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(120);

/// The runtime every test of the binary runs on (engines and servers live as long as it does).
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

/// Engine settings for tests: this build's binary as each box's init, no degraded isolation, and
/// `box_pool_size` ready boxes.
pub fn engine_config(box_pool_size: usize) -> EngineConfig {
    EngineConfig {
        sandbox: SandboxConfig {
            init_program: Some(env!("CARGO_BIN_EXE_codebeaker").into()),
            allow_degraded: false,
            ..SandboxConfig::default()
        },
        box_pool_size,
        ..EngineConfig::default()
    }
}

/// An engine with its upkeep task (reaper, pool refill) running on [`runtime`].
pub fn start_engine(config: EngineConfig) -> Arc<Engine> {
    let engine = Arc::new(Engine::new(config).expect("the engine needs root and cgroups here"));
    let _context = runtime().enter();
    engine.spawn_reaper();
    engine
}

/// Server settings for tests: an ephemeral loopback port, defaults otherwise.
pub fn local_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..ServerConfig::default()
    }
}

/// The host name (and cgroup name) of the box of `owner` (the process whose engine made it)
/// that callers know as `container_id`: `cb-<random>` becomes `cb-<owner>-<random>`.
#[allow(dead_code)]
pub fn box_name(owner: u32, container_id: &str) -> String {
    let random = container_id
        .strip_prefix("cb-")
        .unwrap_or_else(|| panic!("container id {container_id:?} does not start with cb-"));
    format!("cb-{owner}-{random}")
}

/// Starts a server over `engine`.
pub async fn start_server(engine: Arc<Engine>, config: ServerConfig) -> ServerHandle {
    Server::bind(config, engine)
        .await
        .expect("bind an ephemeral port")
        .spawn()
}

/// Starts a server over `engine` that serves until the test process ends; returns its address.
pub async fn serve_forever(engine: Arc<Engine>, config: ServerConfig) -> SocketAddr {
    let handle = start_server(engine, config).await;
    let addr = handle.local_addr();
    std::mem::forget(handle);
    addr
}

/// A small JSON-RPC client over a real WebSocket.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Notifications received while waiting for responses, in order.
    pub notifications: Vec<Value>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::connect_to(&format!("ws://{addr}/ws/jsonrpc"), None)
            .await
            .expect("connect")
    }

    pub async fn connect_to(
        url: &str,
        bearer: Option<&str>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(token) = bearer {
            request.headers_mut().insert(
                "Authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Client {
            ws,
            next_id: 1,
            notifications: Vec::new(),
        })
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    /// The next text frame, as JSON.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("the frame is JSON")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(wait, self.ws.next()).await
        {
            panic!("expected no frame, got {text}");
        }
    }

    /// Waits for the response with `id`, keeping notifications that come first.
    pub async fn response(&mut self, id: &Value) -> Value {
        loop {
            let message = self.recv().await;
            if message.get("method").is_some() {
                self.notifications.push(message);
            } else if message.get("id") == Some(id) {
                return message;
            } else {
                panic!("unexpected message while waiting for {id}: {message}");
            }
        }
    }

    /// Calls a method and returns the whole response.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_text(&request.to_string()).await;
        self.response(&id).await
    }

    /// Calls a method that must succeed and returns its result.
    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        let response = self.call(method, params).await;
        assert!(
            response.get("error").is_none(),
            "{method} failed: {response}"
        );
        response["result"].clone()
    }

    /// Calls a method that must fail and returns its error.
    pub async fn err(&mut self, method: &str, params: Value) -> Value {
        let response = self.call(method, params).await;
        assert!(
            response.get("result").is_none(),
            "{method} should fail: {response}"
        );
        response["error"].clone()
    }
}
