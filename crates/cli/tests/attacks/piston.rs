//! Tenant-isolation attacks through the Piston door: a caller's Piston runs share nothing with
//! another's, the door takes only this server's tokens, and a caller that floods it (requests,
//! or interactive connections it holds open) spends only its own rate and its own connections.

use super::*;

use crate::common::http::{send, Answer};

const ALICE: &str = "piston-alice";
const MALLORY: &str = "piston-mallory";
/// A caller with a small rate of its own.
const FLOODER: &str = "piston-flooder";

/// A server with auth on for `alice`, `mallory` and `flooder`; `flooder` has a small rate of
/// its own, and every caller may hold two WebSocket connections.
async fn piston_server() -> SocketAddr {
    static ADDR: tokio::sync::OnceCell<SocketAddr> = tokio::sync::OnceCell::const_new();
    *ADDR
        .get_or_init(|| async {
            let token = |token: &str, caller: &str| TokenConfig {
                token: token.into(),
                caller: caller.into(),
            };
            let config = ServerConfig {
                auth: AuthConfig {
                    tokens: vec![
                        token(ALICE, "alice"),
                        token(MALLORY, "mallory"),
                        token(FLOODER, "flooder"),
                    ],
                },
                caller_quotas: [(
                    "flooder".to_string(),
                    codebeaker_server::CallerQuota {
                        max_sessions: None,
                        rate_limit: Some(codebeaker_server::RateLimitConfig {
                            requests_per_second: 0.2,
                            burst: 3,
                        }),
                    },
                )]
                .into(),
                max_connections_per_caller: 2,
                ..local_config()
            };
            common::serve_forever(Arc::clone(engine()), config).await
        })
        .await
}

/// `POST /api/v2/execute` of `body` with `key` sent as Piston's clients send it.
async fn execute_as(addr: SocketAddr, key: Option<&str>, body: &Value) -> Answer {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(key) = key {
        headers.push(("authorization", key));
    }
    send(
        addr,
        "POST",
        "/api/v2/execute",
        &headers,
        body.to_string().into_bytes(),
    )
    .await
}

fn python(code: &str) -> Value {
    json!({"language": "python", "version": "*", "files": [{"content": code}], "run_timeout": RUN_MS})
}

#[test]
fn piston_runs_of_two_callers_share_nothing() {
    attack(async {
        let addr = piston_server().await;
        let tag = format!("{:x}", std::process::id() & 0xffff);
        let leave = format!(
            "import time\nfor d in ['/workspace', '/tmp', '/dev/shm']:\n    open(d + '/piston-secret-{tag}', 'w').write('from alice')\nprint('alice-{tag}', flush=True)\ntime.sleep(3)"
        );
        let leave = python(&leave);
        let look = "import os\nfound = []\nfor d in ['/workspace', '/tmp', '/dev/shm']:\n    for root, dirs, files in os.walk(d):\n        found += [f for f in files if 'secret' in f]\nprint('found', found)";
        let (left, looked) = tokio::join!(execute_as(addr, Some(ALICE), &leave), async {
            // While alice's run holds its files.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            execute_as(addr, Some(&format!("Bearer {MALLORY}")), &python(look)).await
        });
        assert_eq!(left.status, 200, "{}", left.text());
        assert_eq!(left.json()["run"]["stdout"], format!("alice-{tag}\n"));
        assert_eq!(looked.status, 200, "{}", looked.text());
        assert_eq!(
            looked.json()["run"]["stdout"],
            "found []\n",
            "{}",
            looked.text()
        );
        assert!(!looked.text().contains(&format!("alice-{tag}")));
        // And after alice's run has ended.
        let again = execute_as(addr, Some(MALLORY), &python(look)).await;
        assert_eq!(
            again.json()["run"]["stdout"],
            "found []\n",
            "{}",
            again.text()
        );
    });
}

#[test]
fn the_piston_door_takes_only_this_servers_tokens() {
    attack(async {
        let addr = piston_server().await;
        let body = python("print('ran')");
        for key in [
            None,
            Some("wrong"),
            Some("Bearer wrong"),
            Some("Basic cGlzdG9u"),
        ] {
            let answer = execute_as(addr, key, &body).await;
            assert_eq!(answer.status, 401, "{key:?}: {}", answer.text());
            assert!(answer.json()["message"].is_string(), "{}", answer.text());
        }
        let runtimes = send(addr, "GET", "/api/v2/runtimes", &[], Vec::new()).await;
        assert_eq!(runtimes.status, 401, "{}", runtimes.text());
        let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v2/connect")).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("a connect without a token must be refused: {other:?}"),
        }
        for key in [ALICE, &format!("Bearer {ALICE}")] {
            let answer = execute_as(addr, Some(key), &body).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(answer.json()["run"]["stdout"], "ran\n");
        }
    });
}

#[test]
fn a_caller_flooding_the_piston_door_spends_only_its_own_rate() {
    attack(async {
        let addr = piston_server().await;
        let get = |key: &'static str| async move {
            send(
                addr,
                "GET",
                "/api/v2/runtimes",
                &[("authorization", key)],
                Vec::new(),
            )
            .await
        };
        let mut limited = None;
        for _ in 0..10 {
            let answer = get(FLOODER).await;
            if answer.status == 429 {
                limited = Some(answer);
                break;
            }
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
        let limited = limited.expect("the flood is rate limited");
        assert!(limited.headers.contains_key("retry-after"));
        assert!(
            limited.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains("rate limit")),
            "{}",
            limited.text()
        );
        // The same bucket as the rest of the server: Piston is no second budget.
        let rest = send(
            addr,
            "GET",
            "/api/languages",
            &[("authorization", &format!("Bearer {FLOODER}"))],
            Vec::new(),
        )
        .await;
        assert_eq!(rest.status, 429, "{}", rest.text());
        // Alice is untouched.
        for _ in 0..10 {
            assert_eq!(get(ALICE).await.status, 200);
        }
        let ran = execute_as(addr, Some(ALICE), &python("print('alice ran')")).await;
        assert_eq!(ran.json()["run"]["stdout"], "alice ran\n", "{}", ran.text());
    });
}

#[test]
fn connections_a_caller_holds_open_do_not_keep_another_out() {
    attack(async {
        let addr = piston_server().await;
        let open = |key: &str| {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = format!("ws://{addr}/api/v2/connect")
                .into_client_request()
                .expect("request");
            request
                .headers_mut()
                .insert("authorization", key.parse().expect("header"));
            tokio_tungstenite::connect_async(request)
        };
        let hold = json!({"type": "init", "language": "python", "version": "*", "files": [{"content": "import time\ntime.sleep(30)"}], "run_timeout": RUN_MS});
        let mut held = Vec::new();
        for _ in 0..2 {
            let (mut socket, _) = open(ALICE).await.expect("alice connects");
            socket
                .send(Message::text(hold.to_string()))
                .await
                .expect("init");
            held.push(socket);
        }
        match open(ALICE).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429)
            }
            other => panic!("a third connection of one caller must be refused: {other:?}"),
        }
        // Mallory holds none of them, and runs as usual meanwhile.
        let (mut socket, _) = open(MALLORY).await.expect("mallory connects");
        let init = json!({"type": "init", "language": "python", "version": "*", "files": [{"content": "print('mallory ran')"}]});
        socket
            .send(Message::text(init.to_string()))
            .await
            .expect("init");
        let mut stdout = String::new();
        let code = loop {
            let frame = tokio::time::timeout(FRAME_TIMEOUT, socket.next())
                .await
                .expect("a frame in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).expect("JSON");
                    if message["type"] == "data" && message["stream"] == "stdout" {
                        stdout.push_str(message["data"].as_str().unwrap_or_default());
                    }
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("the connection failed: {other:?}"),
            }
        };
        assert_eq!((code, stdout.as_str()), (Some(4999), "mallory ran\n"));
        // Closing the held connections stops their runs, and gives their places back.
        drop(held);
        let mut again = None;
        for _ in 0..100 {
            if let Ok((socket, _)) = open(ALICE).await {
                again = Some(socket);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut socket = again.expect("alice connects again once hers are closed");
        socket.close(None).await.expect("close");
    });
}
