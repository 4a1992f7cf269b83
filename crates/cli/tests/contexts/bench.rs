//! The contexts benchmark (reported, never asserted): a trivial Python cell in an existing
//! context over WebSocket beside a warm snippet-less run in the same session, and the memory an
//! idle context takes in its box.

use std::time::{Duration, Instant};

use codebeaker_client::batch::percentile;
use serde_json::json;

use crate::common::host::{box_file, box_name};
use crate::common::{run, server, Client};

const ROUNDS: usize = 300;

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = percentile(&times, 50.0);
    let p99 = percentile(&times, 99.0);
    println!(
        "bench {name}: median {:.2} ms, p99 {:.2} ms ({} rounds)",
        ms(median),
        ms(p99),
        times.len()
    );
}

/// Memory charged to the box's cgroup now, in bytes (v1 or v2).
fn box_memory(name: &str) -> u64 {
    ["memory.current", "memory.usage_in_bytes"]
        .iter()
        .find_map(|f| box_file(name, f))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "a benchmark: cargo test -p codebeaker --test tests contexts::bench -- --ignored --nocapture"]
fn a_trivial_cell_beside_a_warm_run() {
    run(async {
        let mut c = Client::connect(server().await).await;
        let created = c.ok("session.create", json!({"language": "python"})).await;
        let session = created["sessionId"].as_str().expect("id").to_string();
        let name = box_name(
            std::process::id(),
            created["containerId"].as_str().expect("id"),
        );
        let context = c.ok("context.create", json!({"sessionId": session})).await;
        let context = context["contextId"].as_str().expect("id").to_string();
        let cell = json!({"sessionId": session, "contextId": context, "code": "x = 1"});
        let warm = json!({"sessionId": session, "command": {"type": "execute", "code": "x = 1"}});
        for _ in 0..20 {
            c.ok("context.run", cell.clone()).await;
            c.ok("session.execute", warm.clone()).await;
        }
        let (mut cells, mut runs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let r = c.ok("context.run", cell.clone()).await;
            cells.push(start.elapsed());
            assert_eq!(r["success"], true, "{r}");
            let start = Instant::now();
            let r = c.ok("session.execute", warm.clone()).await;
            runs.push(start.elapsed());
            assert_eq!(r["success"], true, "{r}");
        }
        summary("python cell in an existing context (WebSocket)", cells);
        summary("warm python run in the same session (WebSocket)", runs);
        // Memory per idle context: the box's cgroup before and after ten more idle contexts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = box_memory(&name);
        for _ in 0..10 {
            c.ok("context.create", json!({"sessionId": session})).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = box_memory(&name);
        println!(
            "bench memory per idle python context: {:.1} MiB (box cgroup, 10 contexts)",
            after.saturating_sub(before) as f64 / 10.0 / (1024.0 * 1024.0)
        );
        c.close_session(&session).await;
    });
}
