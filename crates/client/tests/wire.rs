//! The connection against scripted WebSocket servers that misbehave the way real ones can: ids
//! echoed as strings, responses with null ids, several messages (and a trailing `\n`) in one
//! frame, notifications interleaved, connections that drop or go silent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use codebeaker_client::{Backend, Backoff, CallOptions, Client, ClientConfig, ClientError};
use codebeaker_protocol::commands::{Command, ExecuteCommand};
use codebeaker_protocol::methods::{ExecutionEvent, SessionExecuteParams};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// What the scripted server does with each request it reads.
#[derive(Clone, Copy)]
enum Script {
    /// Echo the id as a string, after a null-id error and an unknown id, all in one frame with
    /// newlines; stream two notifications first for `session.execute`.
    Quirky,
    /// Close the connection on the first request, answer normally afterwards.
    DropFirst,
    /// Never read again after the handshake (so pings go unanswered).
    Silent,
}

async fn serve(script: Script) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut connection = 0;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            connection += 1;
            let n = connection;
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                if matches!(script, Script::Silent) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let request: Value = serde_json::from_str(text.as_str()).expect("json");
                    let id = request["id"].clone();
                    let method = request["method"].as_str().unwrap_or_default().to_string();
                    match script {
                        Script::DropFirst if n == 1 => return,
                        Script::Quirky => {
                            let string_id = Value::String(id.to_string());
                            let mut frame = String::new();
                            if method == "session.execute" {
                                for (seq, data) in ["é✓", "日本\n"].iter().enumerate() {
                                    let note = json!({"jsonrpc":"2.0","method":"execution.output","params":{
                                        "requestId": id, "sessionId": "s", "stream": "stdout", "data": data, "seq": seq}});
                                    frame.push_str(&format!("{note}\n"));
                                }
                                // An event for another request must not reach this caller.
                                let stray = json!({"jsonrpc":"2.0","method":"execution.output","params":{
                                    "requestId": 999_999, "sessionId": "s", "stream": "stdout", "data": "stray", "seq": 0}});
                                frame.push_str(&format!("{stray}\n"));
                            }
                            let null_id = json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}});
                            let unknown = json!({"jsonrpc":"2.0","id":123_456_789,"result":true});
                            let answer = if method == "session.execute" {
                                json!({"jsonrpc":"2.0","id":string_id,"result":{"success":true,"result":{"echo":method},"error":null,"durationMs":1}})
                            } else {
                                json!({"jsonrpc":"2.0","id":string_id,"result":{"languages":[]}})
                            };
                            frame.push_str(&format!("{null_id}\n{unknown}\n{answer}\n"));
                            if ws.send(Message::text(frame)).await.is_err() {
                                return;
                            }
                        }
                        _ => {
                            let answer = json!({"jsonrpc":"2.0","id":id,"result":{"languages":[]}});
                            if ws.send(Message::text(answer.to_string())).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn config(addr: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new(format!("ws://{addr}/ws/jsonrpc"));
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        multiplier: 2.0,
    };
    config
}

#[tokio::test]
async fn quirky_frames_still_reach_the_right_callers() {
    let addr = serve(Script::Quirky).await;
    let client = Client::connect(config(addr)).await.expect("connect");
    // Concurrent requests on one connection, each answered with its id as a string.
    let calls = (0..20).map(|_| client.language_list());
    for result in futures_util::future::join_all(calls).await {
        assert_eq!(result.expect("answer").languages.len(), 0);
    }
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let reply = client
        .session_execute(
            SessionExecuteParams {
                session_id: "s".into(),
                command: Command::Execute(ExecuteCommand::default()),
                stream: None,
            },
            CallOptions {
                timeout: Some(Duration::from_secs(5)),
                events: Some(events),
            },
        )
        .await
        .expect("reply");
    assert!(reply.success);
    let mut text = String::new();
    while let Ok(event) = received.try_recv() {
        if let ExecutionEvent::Output(o) = event {
            text.push_str(&o.data);
        }
    }
    assert_eq!(text, "é✓日本\n", "only this request's events, in order");
}

#[tokio::test]
async fn a_dropped_connection_fails_the_call_at_once_and_the_next_call_reconnects() {
    let addr = serve(Script::DropFirst).await;
    let client = Client::connect(config(addr)).await.expect("connect");
    let started = Instant::now();
    let error = client
        .call::<_, Value>("language.list", &json!({}), Some(Duration::from_secs(30)))
        .await
        .expect_err("the server hung up");
    assert!(
        matches!(error, ClientError::ConnectionLost { .. }),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "failed fast");
    let answer = client.language_list().await.expect("after reconnecting");
    assert!(answer.languages.is_empty());
}

#[tokio::test]
async fn a_silent_connection_is_detected_by_the_keep_alive() {
    let addr = serve(Script::Silent).await;
    let mut config = config(addr);
    config.ping_interval = Some(Duration::from_millis(100));
    let client = Client::connect(config).await.expect("connect");
    let error = client
        .call::<_, Value>("language.list", &json!({}), Some(Duration::from_secs(30)))
        .await
        .expect_err("no answer");
    assert!(
        matches!(error, ClientError::ConnectionLost { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn no_server_means_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let error = Client::connect(config(addr))
        .await
        .expect_err("nobody listens");
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");

    let mut lazy = config(addr);
    lazy.reconnect_wait = Duration::from_millis(300);
    let client = Client::new(lazy).expect("client");
    let error = client.language_list().await.expect_err("still nobody");
    assert!(matches!(error, ClientError::Unavailable { .. }), "{error}");
    assert!(error.to_string().contains("not connected"), "{error}");
}

#[tokio::test]
async fn a_closed_client_refuses_requests() {
    let addr = serve(Script::DropFirst).await;
    let client = Client::connect(config(addr)).await.expect("connect");
    client.close();
    let error = client.language_list().await.expect_err("closed");
    assert!(matches!(error, ClientError::Closed), "{error}");
}
