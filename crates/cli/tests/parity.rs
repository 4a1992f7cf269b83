//! Embedded mode answers exactly like the server: the same streamed command, an error and
//! `language.list` through the WebSocket client (a real server on an ephemeral port) and through
//! [`Embedded`] over the same engine, every event and result compared.

use std::sync::Arc;
use std::time::Duration;

use codebeaker_client::{Backend, CallOptions, Client, ClientConfig, ClientError, Embedded};
use codebeaker_engine::Caller;
use codebeaker_protocol::commands::{Command, ExecuteCommand};
use codebeaker_protocol::methods::{
    SessionCreateParams, SessionExecuteParams, SessionExecuteResult,
};
use serde_json::Value;

use crate::common::{engine, run_within, server};

/// Prints `aé` and `b` with the two bytes of `é` in two writes, a flush and a pause between
/// them so that they reach the engine as two chunks; then a line on stderr, and exit code 3.
const SPLIT_UTF8: &str = "import sys, time\n\
sys.stdout.buffer.write(b'a\\xc3'); sys.stdout.flush(); time.sleep(0.3)\n\
sys.stdout.buffer.write(b'\\xa9b\\n'); sys.stdout.flush(); time.sleep(0.3)\n\
sys.stderr.write('warn\\n'); sys.stderr.flush()\n\
sys.exit(3)\n";

/// What one backend answered: the events (ids, session ids and times blanked, since they differ
/// by nature) and the result or error as JSON (times blanked too).
#[derive(Debug, PartialEq)]
struct Answer {
    events: Vec<Value>,
    outcome: Value,
}

fn blank(value: &mut Value) {
    if let Value::Object(map) = value {
        for (key, v) in map.iter_mut() {
            match key.as_str() {
                "requestId" | "sessionId" => *v = Value::Null,
                "durationMs" | "cpuTimeMs" | "peakMemoryBytes" => *v = Value::Null,
                _ => blank(v),
            }
        }
    }
}

async fn streamed(backend: &dyn Backend, session_id: &str, code: &str) -> Answer {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let params = SessionExecuteParams {
        session_id: session_id.to_string(),
        command: Command::Execute(ExecuteCommand {
            code: code.into(),
            ..Default::default()
        }),
        stream: None,
    };
    let options = CallOptions {
        timeout: Some(Duration::from_secs(120)),
        events: Some(tx),
    };
    let result: Result<SessionExecuteResult, ClientError> =
        backend.session_execute(params, options).await;
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        let mut json: Value =
            serde_json::from_str(&event.to_notification().to_json()).expect("event JSON");
        blank(&mut json);
        events.push(json);
    }
    let mut outcome = match result {
        Ok(r) => serde_json::to_value(r).expect("result as JSON"),
        Err(ClientError::Rpc { error, .. }) => {
            serde_json::json!({"code": error.code, "message": error.message})
        }
        Err(other) => panic!("{}: not an answer: {other}", backend.endpoint()),
    };
    blank(&mut outcome);
    Answer { events, outcome }
}

fn output_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["method"] == "execution.output" && e["params"]["stream"] == "stdout")
        .map(|e| e["params"]["data"].as_str().expect("data").to_string())
        .collect()
}

#[test]
fn embedded_answers_exactly_like_the_server() {
    run_within(Duration::from_secs(300), async {
        let url = format!("ws://{}/ws/jsonrpc", server().await);
        let client = Client::connect(ClientConfig::new(url))
            .await
            .expect("connect");
        let embedded = Embedded::with_caller(Arc::clone(engine()), Caller::anonymous());
        let backends: [&dyn Backend; 2] = [&client, &embedded];
        let mut answers = Vec::new();
        for backend in backends {
            let session = backend
                .session_create(SessionCreateParams {
                    language: "python".into(),
                    ..Default::default()
                })
                .await
                .expect("session.create");
            let run = streamed(backend, &session.session_id, SPLIT_UTF8).await;
            let unknown = streamed(backend, "no-such-session", "print(1)").await;
            backend
                .session_close(&session.session_id)
                .await
                .expect("session.close");
            let languages = backend.language_list().await.expect("language.list");
            let init = backend.initialize().await.expect("initialize");
            answers.push((run, unknown, languages, init));
        }
        let (ws, em) = (&answers[0], &answers[1]);

        // The split character arrives whole, in order, from both.
        assert_eq!(output_of(&ws.0.events), "aéb\n", "{:#?}", ws.0.events);
        assert!(
            !format!("{:?}", em.0.events).contains('\u{fffd}'),
            "{:#?}",
            em.0.events
        );
        let methods: Vec<&str> =
            ws.0.events
                .iter()
                .map(|e| e["method"].as_str().unwrap_or(""))
                .collect();
        assert_eq!(methods.first(), Some(&"execution.started"), "{methods:?}");
        assert_eq!(methods.last(), Some(&"execution.completed"), "{methods:?}");
        assert_eq!(ws.0.outcome["success"], false, "{}", ws.0.outcome);
        assert_eq!(ws.0.outcome["result"]["exitCode"], 3, "{}", ws.0.outcome);
        assert_eq!(
            ws.0, em.0,
            "the streamed run: server first, embedded second"
        );

        // An unknown session: announced and completed as failed, then the same error.
        let methods: Vec<&str> =
            ws.1.events
                .iter()
                .map(|e| e["method"].as_str().unwrap_or(""))
                .collect();
        assert_eq!(
            methods,
            ["execution.started", "execution.completed"],
            "{:#?}",
            ws.1.events
        );
        assert_eq!(ws.1.events[1]["params"]["success"], false);
        assert_eq!(ws.1.outcome["code"], -32001, "{}", ws.1.outcome);
        assert_eq!(
            ws.1, em.1,
            "the unknown session: server first, embedded second"
        );

        assert_eq!(ws.2, em.2, "language.list");
        assert!(ws
            .2
            .languages
            .iter()
            .any(|l| l.name == "python" && l.extensions.contains(&"py".to_string())));
        assert_eq!(ws.3.capabilities.languages, em.3.capabilities.languages);
        assert_eq!(ws.3.capabilities.commands, em.3.capabilities.commands);
        assert_eq!(ws.3.capabilities.isolation, em.3.capabilities.isolation);
        assert_eq!(ws.3.protocol_version, em.3.protocol_version);
    });
}
