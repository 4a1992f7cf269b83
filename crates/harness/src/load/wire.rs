//! The raw WebSocket driver: one JSON-RPC connection that sends one request at a time and checks
//! every frame the server sends back.
//!
//! The load tester speaks raw frames rather than through `codebeaker_client` on purpose: it
//! must see what a client library hides. A frame that is not JSON, a response for the wrong id,
//! one with both or neither of `result` and `error`, a notification that is not for the request
//! in flight: each is a protocol error to count, where a client would retry, reconnect or drop
//! it. It also collects a streamed run's notifications exactly as they arrived, to check their
//! order against the response.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, InvalidHeaderValue};
use tokio_tungstenite::tungstenite::Message;

use crate::{Context, HarnessError};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Timeout of connecting, `session.create`, `session.close` and other quick requests.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call got no result.
pub(super) enum Failure {
    /// The server refused for now (`-32002` limit reached, `-32005` rate limited).
    Busy(String),
    /// A well-formed JSON-RPC error the load did not expect.
    Rpc { code: i64, message: String },
    /// No answer, or an answer that breaks the protocol: the connection cannot be trusted.
    Broken(String),
}

/// One WebSocket to the server under load.
pub(super) struct Conn {
    ws: Ws,
    next_id: u64,
}

impl Conn {
    /// Connects to `url`, with `token` as a bearer token when given.
    pub(super) async fn connect(url: &str, token: Option<&str>) -> Result<Conn, HarnessError> {
        let mut request = url.into_client_request()?;
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("Authorization", bearer(token)?);
        }
        let (ws, _) =
            tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .context("connecting timed out")??;
        Ok(Conn { ws, next_id: 1 })
    }

    /// Sends one request and waits for its response. Notifications are only expected when
    /// `events` is given (a streamed `session.execute`); they are collected there.
    pub(super) async fn call(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
        mut events: Option<&mut Vec<Value>>,
    ) -> Result<Value, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(e) = self.ws.send(Message::text(request.to_string())).await {
            return Err(Failure::Broken(format!("{method}: sending failed: {e}")));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => {
                    return Err(Failure::Broken(format!(
                        "{method}: no response within {timeout:?}"
                    )))
                }
                Ok(None) => {
                    return Err(Failure::Broken(format!(
                        "{method}: the connection closed while waiting for the response"
                    )))
                }
                Ok(Some(Err(e))) => {
                    return Err(Failure::Broken(format!("{method}: WebSocket error: {e}")))
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let text = match frame {
                Message::Text(text) => text,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Binary(_) => {
                    return Err(Failure::Broken(format!("{method}: a binary frame")))
                }
                Message::Close(close) => {
                    return Err(Failure::Broken(format!(
                        "{method}: the server closed the connection ({close:?})"
                    )))
                }
            };
            let message: Value = serde_json::from_str(text.as_str()).map_err(|e| {
                Failure::Broken(format!(
                    "{method}: a frame that is not JSON ({e}): {text:.200}"
                ))
            })?;
            let Some(object) = message.as_object() else {
                return Err(Failure::Broken(format!(
                    "{method}: a frame that is not one JSON object: {text:.200}"
                )));
            };
            if object.get("jsonrpc") != Some(&json!("2.0")) {
                return Err(Failure::Broken(format!(
                    "{method}: `jsonrpc` is not \"2.0\": {text:.200}"
                )));
            }
            match object.get("id") {
                Some(got) if !got.is_null() => {
                    if *got != json!(id) {
                        return Err(Failure::Broken(format!(
                            "{method}: a response for id {got}, expected {id}"
                        )));
                    }
                    return match (object.get("result"), object.get("error")) {
                        (Some(result), None) => Ok(result.clone()),
                        (None, Some(error)) => Err(rpc_failure(method, error, &text)),
                        _ => Err(Failure::Broken(format!(
                            "{method}: a response must carry exactly one of result and error: {text:.200}"
                        ))),
                    };
                }
                _ => {
                    let name = object.get("method").and_then(Value::as_str);
                    let params = object.get("params").cloned().unwrap_or(Value::Null);
                    match (name, events.as_deref_mut()) {
                        (Some(name), Some(events))
                            if name.starts_with("execution.")
                                && params.get("requestId") == Some(&json!(id)) =>
                        {
                            events.push(json!({"method": name, "params": params}));
                        }
                        _ => {
                            return Err(Failure::Broken(format!(
                                "{method}: an unexpected notification or a message without id: {text:.200}"
                            )))
                        }
                    }
                }
            }
        }
    }

    /// Closes the connection, waiting at most five seconds for the server's close frame.
    pub(super) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ws.close(None)).await;
    }
}

/// The `Authorization` header of a bearer token.
fn bearer(token: &str) -> Result<HeaderValue, HarnessError> {
    format!("Bearer {token}")
        .parse()
        .map_err(|e: InvalidHeaderValue| HarnessError::Usage(e.to_string()))
}

/// A JSON-RPC error as the load counts it: busy for now, or a failure it did not expect.
fn rpc_failure(method: &str, error: &Value, text: &str) -> Failure {
    let (Some(code), Some(message)) = (
        error.get("code").and_then(Value::as_i64),
        error.get("message").and_then(Value::as_str),
    ) else {
        return Failure::Broken(format!(
            "{method}: an error without an integer code and a message: {text:.200}"
        ));
    };
    match code {
        -32002 | -32005 => Failure::Busy(message.to_string()),
        _ => Failure::Rpc {
            code,
            message: format!("{method}: {message}"),
        },
    }
}
