//! Tenant-isolation attacks: server_bounds. The server's own work is bounded: a hostile caller
//! can neither freeze it with costly text work, nor grow its memory with results, replies or
//! frames it never reads, nor keep others out with connections that send nothing.

use super::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's resident memory (this process), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// `GET path` on a fresh connection: the status code and the body, or what went wrong.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// How long `/health/live` takes to answer 200 on a fresh connection (panics when it does not).
async fn live_latency(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(30), http_get(addr, "/health/live"))
        .await
        .expect("/health/live answers at all");
    assert_eq!(answer.as_ref().map(|(c, _)| *c), Ok(200), "{answer:?}");
    started.elapsed()
}

/// A server of its own (special settings) over the shared engine, with alice's and mallory's
/// tokens; returns its address.
async fn special_server(tweak: impl FnOnce(&mut ServerConfig)) -> SocketAddr {
    let mut config = alice_and_mallory("bounds");
    tweak(&mut config);
    common::serve_forever(Arc::clone(engine()), config).await
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws/jsonrpc")
}

/// Lines that no other text shares.
fn unrelated_text(tag: &str, lines: usize) -> String {
    (0..lines).map(|i| format!("{tag} {i}\n")).collect()
}

#[test]
fn a_diff_of_large_unrelated_texts_is_refused_while_health_stays_fast() {
    attack(async {
        let addr = server().await;
        let (mut alice, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "bash"})).await;
        let original = unrelated_text("a", 60_000);
        let modified = unrelated_text("b", 60_000);
        // Several at once on one connection: more than the server has cores.
        let mut ids = Vec::new();
        for i in 0..6 {
            let id = json!(format!("diff-{i}"));
            let request = json!({"jsonrpc": "2.0", "id": id, "method": "session.execute", "params": {
                "sessionId": s.id,
                "command": {"type": "diff", "original_content": original, "modified_content": modified}
            }});
            mallory.send_text(&request.to_string()).await;
            ids.push(id);
        }
        // While they run, the server answers its health probe at once, again and again.
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            slowest = slowest.max(live_latency(addr).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            slowest < Duration::from_secs(1),
            "/health/live took {slowest:?} while the diffs ran"
        );
        for id in &ids {
            let response = tokio::time::timeout(Duration::from_secs(60), mallory.response(id))
                .await
                .expect("a costly diff is answered, not left running");
            let error = &response["error"];
            assert_eq!(error["code"], -32602, "{response}");
            let message = text(&error["message"]);
            assert!(
                message.contains("differ too much") && message.contains("text_max_diff_cost"),
                "the error says what bound and what to do: {message}"
            );
        }
        // Inputs over the byte bound are refused before any work, naming the bound.
        let huge = "x".repeat(5 * 1024 * 1024);
        let error = mallory
            .err(
                "session.execute",
                json!({"sessionId": s.id, "command": {"type": "diff", "original_content": huge, "modified_content": "y"}}),
            )
            .await;
        assert_eq!(error["code"], -32602, "{error}");
        assert!(text(&error["message"]).contains("4194304 bytes"), "{error}");
        // Honest diffs still work, for both callers.
        let small = mallory
            .exec(
                &s,
                json!({"type": "diff", "original_content": "a\nb\n", "modified_content": "a\nc\n"}),
            )
            .await;
        assert_eq!(small["result"]["additions"], 1, "{small}");
        let a = alice.open(json!({"language": "bash"})).await;
        let big_edit = alice
            .exec(
                &a,
                json!({"type": "diff", "original_content": original, "modified_content": original.replace("a 30000\n", "changed\n")}),
            )
            .await;
        assert_eq!(big_edit["success"], true, "{big_edit}");
        assert_eq!(big_edit["result"]["deletions"], 1, "{big_edit}");
        alice.close(a).await;
        mallory.close(s).await;
    });
}

#[test]
fn an_apply_patch_with_a_huge_hunk_start_is_invalid_params() {
    attack(async {
        let (_alice, mut mallory) = two_callers().await;
        let s = mallory.open(json!({"language": "bash"})).await;
        let written = mallory
            .exec(
                &s,
                json!({"type": "write_file", "path": "f.txt", "content": "a\n"}),
            )
            .await;
        assert_eq!(written["success"], true, "{written}");
        for start in [u64::MAX.to_string(), (u64::MAX - 1).to_string()] {
            // Two lines of the old side: start + 2 is past `usize::MAX`.
            let patch = format!("--- a/f.txt\n+++ b/f.txt\n@@ -{start},2 +1,2 @@\n a\n-b\n+c\n");
            let error = mallory
                .err(
                    "session.execute",
                    json!({"sessionId": s.id, "command": {"type": "apply_patch", "patch": patch}}),
                )
                .await;
            assert_eq!(error["code"], -32602, "hunk start {start}: {error}");
            assert!(
                text(&error["message"]).contains("past the last line"),
                "{error}"
            );
        }
        let read = mallory
            .exec(&s, json!({"type": "read_file", "path": "f.txt"}))
            .await;
        assert_eq!(
            read["result"]["content"], "a\n",
            "nothing was written: {read}"
        );
        mallory.close(s).await;
    });
}

#[test]
fn one_shot_records_are_bounded_per_caller_and_a_flood_drops_only_the_flooders() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let victim = alice
            .ok(
                "execution.run",
                json!({"language": "bash", "code": "echo alice", "wait": 60_000}),
            )
            .await;
        assert_eq!(victim["stdout"], "alice\n", "{victim}");
        let victim_id = victim["executionId"].as_str().expect("id").to_string();

        // Each run keeps about 900 KB of output; 80 of them are far over a caller's 32 MiB.
        let code = "head -c 900000 /dev/zero | tr '\\0' x";
        let before = rss_bytes();
        let mut ids = Vec::new();
        for _ in 0..80 {
            let queued = mallory
                .ok("execution.run", json!({"language": "bash", "code": code}))
                .await;
            ids.push(queued["executionId"].as_str().expect("id").to_string());
        }
        for id in ids.iter().rev().take(4) {
            let done = mallory
                .ok(
                    "execution.status",
                    json!({"executionId": id, "wait": 60_000}),
                )
                .await;
            assert_eq!(done["status"], "completed", "{done}");
        }
        // Wait for the rest to end too.
        for id in &ids {
            let _ = mallory
                .call(
                    "execution.status",
                    json!({"executionId": id, "wait": 60_000}),
                )
                .await;
        }
        let grown = rss_bytes().saturating_sub(before);
        // The newest are kept, the oldest are gone.
        let newest = mallory
            .ok("execution.status", json!({"executionId": ids[79]}))
            .await;
        assert_eq!(
            text(&newest["stdout"]).len(),
            900_000,
            "the newest record is whole"
        );
        let oldest = mallory
            .err("execution.status", json!({"executionId": ids[0]}))
            .await;
        assert_eq!(oldest["code"], -32001, "{oldest}");
        let mut kept = 0;
        for id in &ids {
            let status = mallory
                .call("execution.status", json!({"executionId": id}))
                .await;
            if status.get("result").is_some() {
                kept += 1;
            }
        }
        assert!(
            (20..=40).contains(&kept),
            "{kept} of mallory's 80 records kept (32 MiB of 900 KB records is about 36)"
        );
        // Alice's record is untouched by mallory's flood.
        let still = alice
            .ok("execution.status", json!({"executionId": victim_id}))
            .await;
        assert_eq!(still["stdout"], "alice\n", "{still}");
        assert!(
            grown < 64 * 1024 * 1024,
            "the server grew by {} MiB holding one caller's results",
            grown / (1024 * 1024)
        );
    });
}

#[test]
fn a_client_that_does_not_read_is_slowed_then_closed() {
    attack(async {
        let addr = special_server(|c| {
            c.slow_reader_timeout = Duration::from_secs(3);
            c.max_unsent_bytes = 8 * 1024 * 1024;
        })
        .await;
        let mut mallory = Client::connect_to(&ws_url(addr), Some("bounds-mallory"))
            .await
            .expect("connect");
        let s = mallory.open(json!({"language": "bash"})).await;
        let made = mallory
            .run(
                &s,
                "bash",
                "head -c 4000000 /dev/zero | tr '\\0' y > /workspace/big.txt",
                RUN_MS,
            )
            .await;
        assert_eq!(made["success"], true, "{made}");
        let before = rss_bytes();
        // 4 MB replies, asked for and never read: 150 of them would be 600 MB.
        let mut sent = 0;
        let started = Instant::now();
        for i in 0..150 {
            let request = json!({"jsonrpc": "2.0", "id": 1000 + i, "method": "session.execute",
                "params": {"sessionId": s.id, "command": {"type": "read_file", "path": "big.txt"}}});
            let send = mallory.ws.send(Message::text(request.to_string()));
            match tokio::time::timeout(Duration::from_secs(2), send).await {
                Ok(Ok(())) => sent += 1,
                // The server stopped reading us (slowed), or closed us.
                _ => break,
            }
        }
        let mut peak = rss_bytes().saturating_sub(before);
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            peak = peak.max(rss_bytes().saturating_sub(before));
        }
        // Now read what is there: the connection must end, with far fewer of the big replies
        // than were asked for (the small `-32002` refusals of requests over the in-flight bound
        // may all be there).
        let mut replies = 0;
        let mut big = 0;
        let mut close = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, mallory.ws.next()).await {
                Err(_) => panic!("the connection was never closed ({replies} replies read)"),
                Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    close = frame;
                    break;
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    replies += 1;
                    if text.len() > 1_000_000 {
                        big += 1;
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
        assert!(
            big < 20,
            "{big} of {sent} 4 MB replies (and {replies} replies in all) were delivered: the client was never cut off (after {:?})",
            started.elapsed()
        );
        if let Some(frame) = close {
            assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
            assert!(frame.reason.contains("did not read"), "{frame:?}");
        }
        assert!(
            peak < 300 * 1024 * 1024,
            "the server grew by {} MiB for one client that does not read",
            peak / (1024 * 1024)
        );
        // The session is the caller's, not the connection's: it still works.
        let mut again = Client::connect_to(&ws_url(addr), Some("bounds-mallory"))
            .await
            .expect("reconnect");
        again.still_works(&s).await;
        again.close(s).await;
    });
}

#[test]
fn a_frame_of_many_broken_lines_is_answered_boundedly() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        // 16 MiB is the frame limit; 4 million broken messages in one frame.
        let frame = "{\n".repeat(4 * 1024 * 1024);
        let before = rss_bytes();
        mallory.send_text(&frame).await;
        let mut replies = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(3), mallory.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    replies.push(text.to_string());
                    assert!(replies.len() <= 1000, "more than 1000 replies to one frame");
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        let grown = rss_bytes().saturating_sub(before);
        assert_eq!(replies.len(), 257, "256 messages read and one refusal");
        let last: Value = serde_json::from_str(replies.last().expect("a reply")).expect("JSON");
        assert_eq!(last["error"]["code"], -32600, "{last}");
        assert!(
            text(&last["error"]["message"]).contains("more than 256 messages"),
            "{last}"
        );
        assert!(
            grown < 256 * 1024 * 1024,
            "one frame grew the server by {} MiB",
            grown / (1024 * 1024)
        );
        // A batch longer than the bound is refused whole, with one error.
        let batch = format!("[{}]", vec!["1"; 100_000].join(","));
        mallory.send_text(&batch).await;
        let refused = mallory.recv().await;
        assert_eq!(refused["error"]["code"], -32600, "{refused}");
        // The connection, and the other caller, carry on.
        mallory.ok("initialize", json!({})).await;
        alice.ok("initialize", json!({})).await;
    });
}

#[test]
fn connection_caps_refuse_clearly_and_health_keeps_answering() {
    attack(async {
        let addr = special_server(|c| {
            c.max_connections = 64;
            c.max_connections_per_caller = 2;
            c.header_read_timeout = Duration::from_secs(2);
        })
        .await;
        let url = ws_url(addr);
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(
                Client::connect_to(&url, Some("bounds-mallory"))
                    .await
                    .expect("within the caller's bound"),
            );
        }
        match Client::connect_to(&url, Some("bounds-mallory")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 429, "{response:?}");
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                assert!(
                    body.contains("-32002") && body.contains("close one first"),
                    "{body}"
                );
            }
            Err(other) => panic!("a third connection must get a clear 429: {other}"),
            Ok(_) => panic!("a third connection of one caller was accepted"),
        }
        // The other caller is not counted against mallory's bound.
        let mut alice = Client::connect_to(&url, Some("bounds-alice"))
            .await
            .expect("alice connects");
        alice.ok("initialize", json!({})).await;

        // Slowloris: many connections that never finish their request head.
        let mut lingering = Vec::new();
        for _ in 0..300 {
            if let Ok(mut stream) = TcpStream::connect(addr).await {
                let _ = stream
                    .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    .await;
                lingering.push(stream);
            }
        }
        for _ in 0..5 {
            let took = live_latency(addr).await;
            assert!(took < Duration::from_secs(2), "/health/live took {took:?}");
        }
        let health = http_get(addr, "/health").await.expect("/health");
        assert_eq!(health.0, 200, "{health:?}");
        // The open WebSocket connections were not pushed out, and still answer.
        alice.ok("initialize", json!({})).await;
        held[0].ok("initialize", json!({})).await;
        // Half-open connections do not live past the header timeout.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut open = 0;
        for stream in &mut lingering {
            let mut byte = [0u8; 1];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(5), stream.read(&mut byte)).await
            {
                if n > 0 {
                    open += 1;
                }
            } else {
                open += 1;
            }
        }
        assert_eq!(
            open, 0,
            "{open} half-open connections outlived the header timeout"
        );
    });
}

/// Mallory's queue of one-shot runs holds back neither alice's next run nor her submissions: a
/// slot that comes free goes to the caller who holds the fewest, and one caller's runs waiting
/// are bounded on their own. The engine is this test's own, with two slots, so that the shared
/// engine's other users cannot blur who got which slot.
#[test]
fn a_callers_queue_of_one_shots_neither_holds_back_nor_locks_out_another() {
    attack(async {
        let mut config = common::engine_config(0);
        config.max_concurrent_executions = 2;
        config.max_queued_executions_per_caller = 8;
        let (mut alice, mut mallory) = two_callers_of(common::start_engine(config), "fair").await;

        // Mallory fills her share of the queue with runs of a few seconds each; the ninth is
        // refused, and the refusal says why.
        let slow = json!({"language": "bash", "code": "sleep 2; echo mallory"});
        let mut ids = Vec::new();
        for _ in 0..8 {
            let queued = mallory.ok("execution.run", slow.clone()).await;
            ids.push(queued["executionId"].as_str().expect("id").to_string());
        }
        let refused = mallory.err("execution.run", slow.clone()).await;
        assert_eq!(refused["code"], -32002, "{refused}");
        let message = refused["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("the most one caller may have (8)"),
            "{refused}"
        );

        // Alice is not locked out, and her run takes the first slot that comes free, ahead of
        // mallory's six still waiting.
        let run = alice
            .ok(
                "execution.run",
                json!({"language": "bash", "code": "echo alice", "wait": 60_000}),
            )
            .await;
        assert_eq!(run["stdout"], "alice\n", "{run}");
        let mut still_queued = 0;
        for id in &ids {
            let status = mallory
                .ok("execution.status", json!({"executionId": id}))
                .await;
            if status["status"] == "queued" {
                still_queued += 1;
            }
        }
        assert!(
            still_queued >= 4,
            "alice's run waited behind mallory's: only {still_queued} of mallory's 8 runs were still queued when it ended"
        );
        // Mallory's runs all end, none lost.
        for id in &ids {
            let done = mallory
                .ok(
                    "execution.status",
                    json!({"executionId": id, "wait": 60_000}),
                )
                .await;
            assert_eq!(done["stdout"], "mallory\n", "{done}");
        }
    });
}
