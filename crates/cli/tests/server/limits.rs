//! Bounds, authentication and rate limits, each on a server of its own: the in-flight bound,
//! tokens, retry-after, shutdown, arrival order, oversized messages and idle connections.

use super::*;

#[test]
fn requests_over_the_in_flight_bound_are_refused_at_once() {
    run(async {
        let server = start(ServerConfig {
            max_in_flight: 1,
            ..local_config()
        })
        .await;
        let mut client = Client::connect(server.local_addr()).await;
        let session = client.create_session("python").await;
        let slow = json!({"jsonrpc": "2.0", "id": 100, "method": "session.execute",
            "params": {"sessionId": session, "command": {"type": "shell", "command": "sleep", "args": ["1"]}}});
        let quick = json!({"jsonrpc": "2.0", "id": 101, "method": "language.list"});
        client.send_text(&format!("{slow}\n{quick}\n")).await;
        let first = client.recv().await;
        assert_eq!(first["id"], 101, "the refusal comes first: {first}");
        assert_eq!(first["error"]["code"], -32002);
        let second = client.recv().await;
        assert_eq!(second["id"], 100);
        assert_eq!(second["result"]["success"], true, "{second}");
        client.close_session(&session).await;
        server.shutdown().await.expect("shutdown");
    });
}

#[test]
fn auth_requires_a_token_and_callers_see_only_their_own_sessions() {
    run(async {
        let server = start(ServerConfig {
            auth: AuthConfig {
                tokens: vec![
                    TokenConfig {
                        token: "token-alice".into(),
                        caller: "alice".into(),
                    },
                    TokenConfig {
                        token: "token-bob".into(),
                        caller: "bob".into(),
                    },
                ],
            },
            ..local_config()
        })
        .await;
        let addr = server.local_addr();
        let url = format!("ws://{addr}/ws/jsonrpc");

        match Client::connect_to(&url, None).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
            }
            Err(other) => panic!("expected HTTP 401, got {other}"),
            Ok(_) => panic!("connected without a token"),
        }
        match Client::connect_to(&url, Some("wrong")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
            }
            Err(other) => panic!("expected HTTP 401, got {other}"),
            Ok(_) => panic!("connected with a wrong token"),
        }
        let rest = http(addr, "GET", "/api/languages", None, None).await;
        assert_eq!(rest.status, 401);
        assert_eq!(rest.json()["error"]["code"], -32004);
        assert!(rest.headers.contains_key("www-authenticate"));
        assert_eq!(http(addr, "GET", "/metrics", None, None).await.status, 401);
        assert_eq!(http(addr, "GET", "/health", None, None).await.status, 200);
        assert_eq!(
            http(addr, "GET", "/api/languages", Some("token-bob"), None)
                .await
                .status,
            200
        );

        let mut alice = Client::connect_to(&url, Some("token-alice"))
            .await
            .expect("alice connects");
        let session = alice.create_session("python").await;
        // Bob passes his token in the query string, as browsers must.
        let mut bob = Client::connect_to(&format!("{url}?token=token-bob"), None)
            .await
            .expect("bob connects");
        let error = bob
            .err(
                "session.execute",
                json!({"sessionId": session, "command": {"type": "read_file", "path": "x"}}),
            )
            .await;
        assert_eq!(error["code"], -32001);
        let error = bob
            .err("session.close", json!({"sessionId": session}))
            .await;
        assert_eq!(error["code"], -32001);
        let bobs = bob.ok("session.list", json!({})).await;
        assert!(!bobs["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|s| s["sessionId"] == json!(session)));
        let alices = alice.ok("session.list", json!({})).await;
        assert!(alices["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|s| s["sessionId"] == json!(session)));

        // One-shot runs are private too.
        let queued = alice
            .ok(
                "execution.run",
                json!({"language": "python", "code": "print(1)"}),
            )
            .await;
        let error = bob
            .err(
                "execution.status",
                json!({"executionId": queued["executionId"]}),
            )
            .await;
        assert_eq!(error["code"], -32001);

        alice.close_session(&session).await;
        server.shutdown().await.expect("shutdown");
    });
}

#[test]
fn rate_limits_answer_with_retry_after() {
    run(async {
        let server = start(ServerConfig {
            rate_limit: Some(RateLimitConfig {
                // Slow enough that no token comes back while the test runs.
                requests_per_second: 0.1,
                burst: 2,
            }),
            ..local_config()
        })
        .await;
        let addr = server.local_addr();
        let mut client = Client::connect(addr).await;
        client.ok("language.list", json!({})).await;
        client.ok("language.list", json!({})).await;
        let error = client.err("language.list", json!({})).await;
        assert_eq!(error["code"], -32005);
        assert!(
            error["data"]["retryAfterMs"]
                .as_u64()
                .is_some_and(|ms| ms > 0),
            "{error}"
        );

        let rest = http(addr, "GET", "/api/languages", None, None).await;
        assert_eq!(rest.status, 429);
        assert_eq!(rest.json()["error"]["code"], -32005);
        let retry_after: u64 = rest
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!(retry_after >= 1);
        // Health is never limited.
        assert_eq!(
            http(addr, "GET", "/health/live", None, None).await.status,
            200
        );
        server.shutdown().await.expect("shutdown");
    });
}

#[test]
fn shutdown_closes_connections_with_going_away() {
    run(async {
        let server = start(local_config()).await;
        let mut client = Client::connect(server.local_addr()).await;
        client.ok("language.list", json!({})).await;
        server.shutdown().await.expect("shutdown");
        let frame = tokio::time::timeout(FRAME_TIMEOUT, client.ws.next())
            .await
            .expect("a close in time");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => {
                assert_eq!(u16::from(close.code), 1001);
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    });
}

#[test]
fn requests_for_one_session_run_in_arrival_order() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let session = client.create_session("python").await;
        let frame: Vec<String> = (1..=6)
            .map(|i| {
                json!({"jsonrpc": "2.0", "id": 1000 + i, "method": "session.execute",
                    "params": {"sessionId": session, "command": {"type": "write_file", "path": "order.txt", "content": i.to_string(), "mode": "Append"}}})
                .to_string()
            })
            .collect();
        client.send_text(&frame.join("\n")).await;
        for _ in 0..6 {
            let response = client.recv().await;
            assert_eq!(response["result"]["success"], true, "{response}");
        }
        let read = client
            .execute(&session, json!({"type": "read_file", "path": "order.txt"}))
            .await;
        assert_eq!(read["result"]["content"], "123456");
        client.close_session(&session).await;
    });
}

#[test]
fn oversized_messages_and_idle_connections_are_closed() {
    run(async {
        let server = start(ServerConfig {
            max_message_bytes: 1024,
            idle_timeout: Duration::from_secs(2),
            ..local_config()
        })
        .await;
        let mut client = Client::connect(server.local_addr()).await;
        let padding = "x".repeat(4096);
        client
            .send_text(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"language.list","params":{{"pad":"{padding}"}}}}"#
            ))
            .await;
        match tokio::time::timeout(FRAME_TIMEOUT, client.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(close))))) => assert_eq!(u16::from(close.code), 1009),
            other => panic!("expected close 1009, got {other:?}"),
        }

        let body = format!(r##"{{"language":"python","code":"# {padding}"}}"##);
        let too_big = http(
            server.local_addr(),
            "POST",
            "/api/execution",
            None,
            Some(&body),
        )
        .await;
        assert_eq!(too_big.status, 413, "{}", too_big.body);
        assert!(too_big.json()["error"]["message"].is_string());

        let mut idle = Client::connect(server.local_addr()).await;
        idle.ok("language.list", json!({})).await;
        match tokio::time::timeout(FRAME_TIMEOUT, idle.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(close))))) => {
                assert_eq!(u16::from(close.code), 1000);
                assert_eq!(close.reason.as_str(), "idle timeout");
            }
            other => panic!("expected an idle close, got {other:?}"),
        }
        server.shutdown().await.expect("shutdown");
    });
}
