//! A small JSON-RPC client over a real WebSocket, as a caller of the server sees it: calls,
//! their responses, and the notifications that arrive in between.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one frame before it fails (instead of hanging).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(120);

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
        serde_json::from_str(&self.recv_text().await).expect("the frame is JSON")
    }

    /// The next text frame as it came.
    pub async fn recv_text(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match frame {
                Message::Text(text) => return text.as_str().to_owned(),
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

    /// Creates a session in `language`; returns its id.
    pub async fn create_session(&mut self, language: &str) -> String {
        let result = self
            .ok("session.create", json!({"language": language}))
            .await;
        result["sessionId"].as_str().expect("sessionId").to_string()
    }

    /// Runs a command in `session`; returns `{success, result, error, durationMs}`.
    pub async fn execute(&mut self, session: &str, command: Value) -> Value {
        self.ok(
            "session.execute",
            json!({"sessionId": session, "command": command}),
        )
        .await
    }

    /// Closes `session`, which must have been open.
    pub async fn close_session(&mut self, session: &str) {
        let result = self
            .ok("session.close", json!({"sessionId": session}))
            .await;
        assert_eq!(result["closed"], json!(true));
    }
}
