//! Tenant-isolation attacks: contexts. A context is a long-lived process in a session's box that
//! runs the caller's code; mallory tries to reach alice's contexts through the protocol, to find
//! alice's state from her own, and to leave processes behind her contexts' end. None may work.

use super::*;

/// Creates a context in `session`; returns its id.
async fn context(c: &mut Client, session: &Session, language: &str) -> String {
    let created = c
        .ok(
            "context.create",
            json!({"sessionId": session.id, "language": language}),
        )
        .await;
    text(&created["contextId"]).to_string()
}

async fn cell(c: &mut Client, session: &Session, context: &str, code: &str) -> Value {
    c.ok(
        "context.run",
        json!({"sessionId": session.id, "contextId": context, "code": code, "timeoutMs": RUN_MS}),
    )
    .await
}

#[test]
fn another_callers_contexts_are_not_there() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let sa = alice.open(json!({"language": "python"})).await;
        let ca = context(&mut alice, &sa, "python").await;
        cell(&mut alice, &sa, &ca, "secret = 'alice-only'").await;
        let sm = mallory.open(json!({"language": "python"})).await;
        let cm = context(&mut mallory, &sm, "python").await;
        // Alice's session, through every context method.
        for (method, params) in [
            ("context.create", json!({"sessionId": sa.id})),
            ("context.list", json!({"sessionId": sa.id})),
            (
                "context.run",
                json!({"sessionId": sa.id, "contextId": ca, "code": "secret"}),
            ),
            (
                "context.restart",
                json!({"sessionId": sa.id, "contextId": ca}),
            ),
            (
                "context.close",
                json!({"sessionId": sa.id, "contextId": ca}),
            ),
        ] {
            let error = mallory.err(method, params).await;
            assert!(
                text(&error["message"]).contains("not found"),
                "{method} on another caller's session: {error}"
            );
        }
        // Alice's context id in mallory's own session.
        let error = mallory
            .err(
                "context.run",
                json!({"sessionId": sm.id, "contextId": ca, "code": "secret"}),
            )
            .await;
        assert!(text(&error["message"]).contains("not found"), "{error}");
        let probe = cell(&mut mallory, &sm, &cm, "'secret' in globals()").await;
        assert_eq!(
            probe["results"][0]["data"]["text/plain"], "False",
            "{probe}"
        );
        // Alice's context is untouched.
        let kept = cell(&mut alice, &sa, &ca, "secret").await;
        assert_eq!(
            kept["results"][0]["data"]["text/plain"], "'alice-only'",
            "{kept}"
        );
        assert_eq!(kept["stateLost"], false);
        mallory.close(sm).await;
        alice.close(sa).await;
    });
}

#[test]
fn a_context_sees_no_other_box_and_leaves_nothing_behind_its_close() {
    attack(async {
        let (mut alice, mut mallory) = two_callers().await;
        let sa = alice.open(json!({"language": "python"})).await;
        let ca = context(&mut alice, &sa, "python").await;
        cell(
            &mut alice,
            &sa,
            &ca,
            "import os\nmarker = 'cb-alice-kernel'\nos.environ['CB_ALICE'] = marker",
        )
        .await;
        let sm = mallory.open(json!({"language": "python"})).await;
        let cm = context(&mut mallory, &sm, "python").await;
        // Every process mallory's context can see is of her own box: no kernel of alice's.
        let seen = cell(
            &mut mallory,
            &sm,
            &cm,
            "import os\nfound = []\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n        try:\n            found.append(open(f'/proc/{p}/environ', 'rb').read())\n        except OSError:\n            pass\nany(b'cb-alice' in e for e in found)",
        )
        .await;
        assert_eq!(seen["results"][0]["data"]["text/plain"], "False", "{seen}");
        // Processes that try to outlive the context: a daemon (double fork, new session) and a
        // process that ignores SIGTERM and SIGHUP.
        let started = cell(
            &mut mallory,
            &sm,
            &cm,
            "import subprocess\nsubprocess.Popen(['/bin/sh', '-c', '(setsid sh -c \"trap \\\"\\\" TERM HUP; sleep 1000\" &) ; exec sleep 1000'])\n'started'",
        )
        .await;
        assert_eq!(started["success"], true, "{started}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = mallory.leftovers(&sm).await;
        assert!(
            before.iter().any(|l| l.contains("sleep")),
            "the daemon runs: {before:?}"
        );
        let closed = mallory
            .ok(
                "context.close",
                json!({"sessionId": sm.id, "contextId": cm}),
            )
            .await;
        assert_eq!(closed["closed"], true);
        let after = mallory.leftovers(&sm).await;
        assert!(
            after.is_empty(),
            "a closed context left processes: {after:?}"
        );
        // A restart ends them too.
        let cm = context(&mut mallory, &sm, "python").await;
        cell(
            &mut mallory,
            &sm,
            &cm,
            "import subprocess\nsubprocess.Popen(['/bin/sh', '-c', '(setsid sleep 1000 &)'])",
        )
        .await;
        mallory
            .ok(
                "context.restart",
                json!({"sessionId": sm.id, "contextId": cm}),
            )
            .await;
        let after = mallory.leftovers(&sm).await;
        let stray: Vec<&String> = after.iter().filter(|l| l.contains("sleep")).collect();
        assert!(
            stray.is_empty(),
            "a restarted context left processes: {stray:?}"
        );
        // Alice's context kept its state through all of it.
        let kept = cell(&mut alice, &sa, &ca, "marker").await;
        assert_eq!(
            kept["results"][0]["data"]["text/plain"], "'cb-alice-kernel'",
            "{kept}"
        );
        mallory.still_works(&sm).await;
        mallory.close(sm).await;
        alice.close(sa).await;
    });
}
