//! Tenant-isolation attacks through the MCP door (streamable HTTP, auth on, two tokens): a
//! sandbox is seen only by the MCP session that created it (another session of the same caller,
//! and another caller, get the answer of a made-up id from every sandbox tool), an MCP session
//! id is no use to another caller, a client cannot pass its sandbox bound even all at once, and
//! no token or a wrong one is refused.

use super::*;

use crate::common::compat::Conversation;
use crate::common::http::send;
use crate::common::runtime;
use crate::mcp::{over_http, run_flow, server, ALICE, MALLORY};

/// One JSON-RPC message to `/mcp` as the caller of `token` (`None`: no Authorization), in the
/// MCP session `session` if given.
async fn post(token: Option<&str>, session: Option<&str>, message: Value) -> common::http::Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    if let Some(session) = session {
        headers.push(("mcp-session-id", session));
    }
    send(
        server(),
        "POST",
        "/mcp",
        &headers,
        message.to_string().into_bytes(),
    )
    .await
}

/// A new MCP session of the caller of `token`: its id.
async fn initialize(token: &str) -> String {
    let answer = post(Some(token), None, initialize_message()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let id = answer
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("a session id: {:?}", answer.headers))
        .to_string();
    let initialized = post(
        Some(token),
        Some(&id),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(initialized.status, 202, "{}", initialized.text());
    id
}

fn initialize_message() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "attack", "version": "0"}}})
}

fn tools_list() -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
}

#[test]
fn another_session_or_caller_cannot_reach_a_sandbox() {
    let addr = server();
    let _shared = common::shared();
    runtime().block_on(async {
        let mut victim = Conversation::start(over_http(addr, ALICE, "victim"));
        let line = victim.line().await;
        let sandbox = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("{line}"))
            .to_string();
        // Another MCP session of the same caller, then another caller.
        for token in [ALICE, MALLORY] {
            let mut intruder = over_http(addr, token, "intruder");
            intruder.arg(&sandbox);
            // Not `run_flow`: this test holds the shared lock already.
            let stdout = tokio::task::spawn_blocking(move || common::compat::run(intruder))
                .await
                .expect("the intruder ran");
            assert!(
                stdout.contains("flow intruder: all checks passed"),
                "{stdout}"
            );
            assert!(!stdout.contains("victim-secret"), "{stdout}");
        }
        victim.say("check").await;
        let rest = victim.finish().await;
        assert!(rest.contains("flow victim: all checks passed"), "{rest}");
    });
}

#[test]
fn an_mcp_session_id_is_no_use_to_another_caller() {
    server();
    attack(async {
        let session = initialize(ALICE).await;
        let mine = post(Some(ALICE), Some(&session), tools_list()).await;
        assert_eq!(mine.status, 200, "{}", mine.text());
        assert!(mine.text().contains("sandbox_create"), "{}", mine.text());

        let theirs = post(Some(MALLORY), Some(&session), tools_list()).await;
        let made_up = post(Some(MALLORY), Some("no-such-session"), tools_list()).await;
        assert_eq!(theirs.status, 404, "{}", theirs.text());
        assert_eq!(
            (theirs.status, theirs.text()),
            (made_up.status, made_up.text())
        );
        // Nor can it end the session.
        let delete = send(
            server(),
            "DELETE",
            "/mcp",
            &[
                ("authorization", &format!("Bearer {MALLORY}")),
                ("mcp-session-id", &session),
            ],
            Vec::new(),
        )
        .await;
        assert_eq!(delete.status, 404, "{}", delete.text());
        let still = post(Some(ALICE), Some(&session), tools_list()).await;
        assert_eq!(still.status, 200, "{}", still.text());
    });
}

#[test]
fn a_client_cannot_pass_its_sandbox_bound_all_at_once() {
    let addr = server();
    run_flow(over_http(addr, ALICE, "flood"), "flood");
}

#[test]
fn no_token_or_a_wrong_one_is_refused() {
    server();
    attack(async {
        for token in [None, Some("not-a-token")] {
            let answer = post(token, None, initialize_message()).await;
            assert_eq!(answer.status, 401, "{token:?}: {}", answer.text());
            assert!(answer.headers.get("mcp-session-id").is_none());
        }
    });
}
