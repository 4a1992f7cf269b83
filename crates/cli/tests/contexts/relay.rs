//! JavaScript and Bash contexts: the same core as Python's, through the Python kernel's relay.

use serde_json::json;

use super::python::{cell, context, main_text};
use crate::common::run;

#[test]
fn javascript_cells_keep_declarations_and_await() {
    run(async {
        let (mut c, s, x) = context("javascript").await;
        cell(&mut c, &s, &x, "let x = 1").await;
        let second = cell(&mut c, &s, &x, "x += 1; x").await;
        assert_eq!(main_text(&second), "2", "{second}");
        cell(&mut c, &s, &x, "const path = require('path')").await;
        assert_eq!(
            main_text(&cell(&mut c, &s, &x, "path.basename('/a/b.txt')").await),
            "'b.txt'"
        );
        cell(
            &mut c,
            &s,
            &x,
            "class Box { constructor(v) { this.v = v } twice() { return this.v * 2 } }",
        )
        .await;
        assert_eq!(
            main_text(&cell(&mut c, &s, &x, "new Box(21).twice()").await),
            "42"
        );
        let failed = cell(&mut c, &s, &x, "null.boom").await;
        assert_eq!(failed["error"]["name"], "TypeError", "{failed}");
        assert_eq!(
            main_text(&cell(&mut c, &s, &x, "x").await),
            "2",
            "state survives an error"
        );
        let printed = cell(&mut c, &s, &x, "console.log('hi'); 'v'").await;
        assert_eq!(printed["stdout"], "hi\n");
        assert_eq!(main_text(&printed), "'v'");
        let awaited = cell(
            &mut c,
            &s,
            &x,
            "const later = await new Promise(r => setTimeout(() => r(5), 10))\nlater + x",
        )
        .await;
        assert_eq!(main_text(&awaited), "7", "{awaited}");
        assert_eq!(
            main_text(&cell(&mut c, &s, &x, "later").await),
            "5",
            "an awaited cell's declarations persist"
        );
        let slow = c
            .ok("context.run", json!({"sessionId": s, "contextId": x, "code": "while (true) {}", "timeoutMs": 500}))
            .await;
        assert_eq!(slow["status"], "timeout", "{slow}");
        assert_eq!(slow["stateLost"], false, "{slow}");
        assert_eq!(
            main_text(&cell(&mut c, &s, &x, "x").await),
            "2",
            "an interrupted cell keeps the state"
        );
        c.close_session(&s).await;
    });
}

#[test]
fn bash_cells_keep_variables_functions_and_cd() {
    run(async {
        let (mut c, s, x) = context("bash").await;
        cell(
            &mut c,
            &s,
            &x,
            "GREETING=hello; cd /tmp; greet() { echo \"$GREETING $1\"; }",
        )
        .await;
        let out = cell(&mut c, &s, &x, "greet world; pwd").await;
        assert_eq!(out["stdout"], "hello world\n/tmp\n", "{out}");
        let err = cell(&mut c, &s, &x, "echo oops >&2; false").await;
        assert_eq!(err["stderr"], "oops\n");
        let slow = c
            .ok("context.run", json!({"sessionId": s, "contextId": x, "code": "sleep 30; echo not-reached", "timeoutMs": 500}))
            .await;
        assert_eq!(slow["status"], "timeout", "{slow}");
        assert_eq!(slow["stateLost"], false, "{slow}");
        assert_eq!(slow["stdout"], "");
        let still = cell(&mut c, &s, &x, "echo $GREETING").await;
        assert_eq!(still["stdout"], "hello\n", "{still}");
        // `exit` ends the shell: the context says its state is gone.
        let exited = cell(&mut c, &s, &x, "exit 3").await;
        assert_eq!(exited["stateLost"], true, "{exited}");
        let fresh = cell(&mut c, &s, &x, "echo \"[$GREETING]\"").await;
        assert_eq!(fresh["stdout"], "[]\n", "{fresh}");
        c.close_session(&s).await;
    });
}
