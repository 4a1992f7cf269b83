//! Python contexts over JSON-RPC: the notebook semantics a caller relies on.

use serde_json::{json, Value};

use crate::common::{run, server, Client};

/// A client with a Python session and one context in it.
pub(super) async fn context(language: &str) -> (Client, String, String) {
    let mut client = Client::connect(server().await).await;
    let session = client.create_session("python").await;
    let context = client
        .ok(
            "context.create",
            json!({"sessionId": session, "language": language}),
        )
        .await;
    assert_eq!(context["sessionId"], session.as_str());
    let id = context["contextId"]
        .as_str()
        .expect("contextId")
        .to_string();
    (client, session, id)
}

/// Runs `code` as a cell; returns `context.run`'s result.
pub(super) async fn cell(client: &mut Client, session: &str, context: &str, code: &str) -> Value {
    client
        .ok(
            "context.run",
            json!({"sessionId": session, "contextId": context, "code": code}),
        )
        .await
}

/// The `text/plain` of a cell's main result.
pub(super) fn main_text(result: &Value) -> String {
    result["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["isMainResult"] == true))
        .and_then(|r| r["data"]["text/plain"].as_str())
        .unwrap_or_else(|| panic!("no main result in {result}"))
        .to_string()
}

#[test]
fn cells_share_state_and_answer_like_a_notebook() {
    run(async {
        let (mut c, s, x) = context("python").await;
        let first = cell(&mut c, &s, &x, "x = 1").await;
        assert_eq!(first["success"], true, "{first}");
        assert_eq!(first["results"], json!([]), "an assignment has no result");
        let second = cell(&mut c, &s, &x, "x += 1; x").await;
        assert_eq!(main_text(&second), "2");
        assert_eq!(second["executionCount"], 2);
        assert_eq!(second["stateLost"], false);
        // An import persists.
        cell(&mut c, &s, &x, "import json as j").await;
        let dumped = cell(&mut c, &s, &x, "j.dumps({'a': [1, 2]})").await;
        assert_eq!(main_text(&dumped), "'{\"a\": [1, 2]}'");
        // A class defined in one cell is used in the next.
        cell(&mut c, &s, &x, "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n    def norm2(self):\n        return self.x ** 2 + self.y ** 2").await;
        let norm = cell(&mut c, &s, &x, "Point(3, 4).norm2()").await;
        assert_eq!(main_text(&norm), "25");
        // An exception leaves earlier state intact, and points at the cell's own lines.
        let failed = cell(&mut c, &s, &x, "y = 5\n1 / 0").await;
        assert_eq!(failed["success"], false);
        assert_eq!(failed["status"], "runtime_error");
        assert_eq!(failed["error"]["name"], "ZeroDivisionError");
        assert_eq!(failed["error"]["value"], "division by zero");
        let traceback = failed["error"]["traceback"].as_str().unwrap_or_default();
        assert!(
            traceback.contains("line 2") && traceback.contains("1 / 0"),
            "{traceback}"
        );
        assert!(
            !traceback.contains("kernel"),
            "no frame of the kernel: {traceback}"
        );
        let kept = cell(&mut c, &s, &x, "(x, y)").await;
        assert_eq!(main_text(&kept), "(2, 5)");
        // print is output, the final expression is the result.
        let both = cell(&mut c, &s, &x, "print('printed')\n'value'").await;
        assert_eq!(both["stdout"], "printed\n");
        assert_eq!(main_text(&both), "'value'");
        let printed = cell(&mut c, &s, &x, "print(x)").await;
        assert_eq!(printed["stdout"], "2\n");
        assert_eq!(
            printed["results"],
            json!([]),
            "print returns None: no result"
        );
        // A syntax error is an error too, and the kernel goes on.
        let syntax = cell(&mut c, &s, &x, "def (:").await;
        assert_eq!(syntax["error"]["name"], "SyntaxError");
        assert_eq!(main_text(&cell(&mut c, &s, &x, "x").await), "2");
        // Top-level await.
        let awaited = cell(
            &mut c,
            &s,
            &x,
            "import asyncio\nawait asyncio.sleep(0)\n40 + x",
        )
        .await;
        assert_eq!(main_text(&awaited), "42");
        c.close_session(&s).await;
    });
}

#[test]
fn rich_results_carry_every_mime_type_offered() {
    run(async {
        let (mut c, s, x) = context("python").await;
        let code = "class Rich:\n    def _repr_html_(self): return '<b>hi</b>'\n    def _repr_markdown_(self): return '**hi**'\n    def _repr_latex_(self): return r'$x^2$'\n    def _repr_json_(self): return {'a': 1}\n    def _repr_svg_(self): return '<svg/>'\n    def _repr_png_(self): return b'\\x89PNG'\n    def __repr__(self): return 'Rich()'\nRich()";
        let rich = cell(&mut c, &s, &x, code).await;
        let data = &rich["results"][0]["data"];
        assert_eq!(data["text/plain"], "Rich()", "{rich}");
        assert_eq!(data["text/html"], "<b>hi</b>");
        assert_eq!(data["text/markdown"], "**hi**");
        assert_eq!(data["text/latex"], "$x^2$");
        assert_eq!(data["application/json"], json!({"a": 1}));
        assert_eq!(data["image/svg+xml"], "<svg/>");
        assert_eq!(data["image/png"], "iVBORw==");
        let shown = cell(&mut c, &s, &x, "display(Rich())\ndisplay(3)\n'main'").await;
        let results = shown["results"].as_array().cloned().unwrap_or_default();
        assert_eq!(results.len(), 3, "{shown}");
        assert_eq!(results[0]["isMainResult"], false);
        assert_eq!(results[1]["data"]["text/plain"], "3");
        assert_eq!(results[2]["isMainResult"], true);
        c.close_session(&s).await;
    });
}

#[test]
fn a_matplotlib_figure_comes_back_as_a_png() {
    run(async {
        let (mut c, s, x) = context("python").await;
        let probe = cell(
            &mut c,
            &s,
            &x,
            "import importlib.util\nimportlib.util.find_spec('matplotlib') is not None",
        )
        .await;
        assert_eq!(
            main_text(&probe),
            "True",
            "matplotlib is not installed in the box: install python3-matplotlib (scripts/test.sh does)"
        );
        let plot = cell(&mut c, &s, &x, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()").await;
        assert_eq!(plot["success"], true, "{plot}");
        let png = plot["results"][0]["data"]["image/png"]
            .as_str()
            .unwrap_or_default();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png)
            .expect("base64");
        assert!(bytes.starts_with(b"\x89PNG\r\n"), "a PNG: {plot}");
        // A figure left open at the end of a cell is shown too, once.
        let open = cell(&mut c, &s, &x, "fig = plt.figure()\n_ = plt.plot([0, 1])").await;
        assert_eq!(open["results"].as_array().map(Vec::len), Some(1), "{open}");
        let none = cell(&mut c, &s, &x, "1").await;
        assert_eq!(none["results"].as_array().map(Vec::len), Some(1));
        c.close_session(&s).await;
    });
}

#[test]
fn limits_interrupt_the_cell_and_say_when_state_is_lost() {
    run(async {
        let (mut c, s, x) = context("python").await;
        cell(&mut c, &s, &x, "kept = 'still here'").await;
        let slow = c
            .ok(
                "context.run",
                json!({"sessionId": s, "contextId": x, "code": "import time\nwhile True: time.sleep(0.01)", "timeoutMs": 500}),
            )
            .await;
        assert_eq!(slow["status"], "timeout", "{slow}");
        assert_eq!(slow["error"]["name"], "KeyboardInterrupt");
        assert_eq!(
            slow["stateLost"], false,
            "the kernel survived the interrupt"
        );
        assert_eq!(
            main_text(&cell(&mut c, &s, &x, "kept").await),
            "'still here'"
        );
        // Memory: the kernel is killed, restarted at the next cell, and both cells say so.
        let big = c
            .ok(
                "context.run",
                json!({"sessionId": s, "contextId": x, "code": "hog = bytearray(1 << 30)\nhog[::4096] = b'x' * len(hog[::4096])", "memoryLimit": 128}),
            )
            .await;
        assert_eq!(big["status"], "memory_limit", "{big}");
        assert_eq!(big["stateLost"], true);
        let after = cell(&mut c, &s, &x, "'kept' in globals()").await;
        assert_eq!(main_text(&after), "False");
        assert_eq!(after["generation"], 2);
        assert_eq!(after["executionCount"], 1, "the new kernel counts from 1");
        // Restart clears the state on request.
        cell(&mut c, &s, &x, "again = 1").await;
        let restarted = c
            .ok("context.restart", json!({"sessionId": s, "contextId": x}))
            .await;
        assert_eq!(restarted["contextId"], x.as_str());
        let cleared = cell(&mut c, &s, &x, "'again' in globals()").await;
        assert_eq!(main_text(&cleared), "False");
        assert_eq!(
            cleared["stateLost"], false,
            "a restart asked for is no loss"
        );
        c.close_session(&s).await;
    });
}

#[test]
fn contexts_have_their_own_names_cwd_and_env() {
    run(async {
        let (mut c, s, a) = context("python").await;
        let b = c
            .ok(
                "context.create",
                json!({"sessionId": s, "cwd": "/tmp", "env": {"GREETING": "hello"}}),
            )
            .await;
        let b = b["contextId"].as_str().expect("id").to_string();
        cell(&mut c, &s, &a, "only_in_a = 1").await;
        let missing = cell(&mut c, &s, &b, "only_in_a").await;
        assert_eq!(missing["error"]["name"], "NameError", "{missing}");
        let where_b = cell(
            &mut c,
            &s,
            &b,
            "import os\n(os.getcwd(), os.environ['GREETING'])",
        )
        .await;
        assert_eq!(main_text(&where_b), "('/tmp', 'hello')");
        let per_cell = c
            .ok(
                "context.run",
                json!({"sessionId": s, "contextId": b, "code": "repr(os.environ.get('ONCE'))", "env": {"ONCE": "1"}}),
            )
            .await;
        assert_eq!(main_text(&per_cell), "\"'1'\"");
        let after = cell(&mut c, &s, &b, "repr(os.environ.get('ONCE'))").await;
        assert_eq!(
            main_text(&after),
            "'None'",
            "the cell's own env is gone after it"
        );
        let listed = c.ok("context.list", json!({"sessionId": s})).await;
        let ids: Vec<&str> = listed["contexts"]
            .as_array()
            .map(|l| l.iter().filter_map(|c| c["contextId"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(ids, vec![a.as_str(), b.as_str()]);
        let closed = c
            .ok("context.close", json!({"sessionId": s, "contextId": a}))
            .await;
        assert_eq!(closed["closed"], true);
        let gone = c
            .err(
                "context.run",
                json!({"sessionId": s, "contextId": a, "code": "1"}),
            )
            .await;
        assert!(
            gone["message"]
                .as_str()
                .unwrap_or_default()
                .contains("not found"),
            "{gone}"
        );
        c.close_session(&s).await;
    });
}

#[test]
fn a_streamed_cell_sends_its_output_as_it_comes() {
    run(async {
        let (mut c, s, x) = context("python").await;
        let result = c
            .ok(
                "context.run",
                json!({"sessionId": s, "contextId": x, "code": "import sys\nprint('one')\nprint('two', file=sys.stderr)\n7", "stream": true}),
            )
            .await;
        assert_eq!(main_text(&result), "7");
        let methods: Vec<&str> = c
            .notifications
            .iter()
            .filter_map(|n| n["method"].as_str())
            .collect();
        assert_eq!(methods.first(), Some(&"execution.started"));
        assert_eq!(methods.last(), Some(&"execution.completed"));
        let output: Vec<(String, String)> = c
            .notifications
            .iter()
            .filter(|n| n["method"] == "execution.output")
            .map(|n| {
                (
                    n["params"]["stream"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    n["params"]["data"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert_eq!(
            output,
            vec![
                ("stdout".into(), "one\n".into()),
                ("stderr".into(), "two\n".into())
            ]
        );
        c.close_session(&s).await;
    });
}
