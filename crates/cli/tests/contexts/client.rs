//! The Rust client's contexts, over a server and in process: the same answers either way.

use std::sync::Arc;

use codebeaker_client::{Backend, CallOptions, Client, ClientConfig, Embedded};
use codebeaker_engine::Caller;
use codebeaker_protocol::contexts::{ContextCreateParams, ContextParams, ContextRunParams};
use codebeaker_protocol::methods::{ExecutionEvent, SessionCreateParams};

use crate::common::{engine, run, server};

async fn notebook(backend: &dyn Backend) {
    let session = backend
        .session_create(SessionCreateParams {
            language: "python".into(),
            ..Default::default()
        })
        .await
        .expect("session");
    let session_id = session.session_id.clone();
    let context = backend
        .context_create(ContextCreateParams {
            session_id: session_id.clone(),
            ..Default::default()
        })
        .await
        .expect("context");
    let cell = |code: &str| ContextRunParams {
        session_id: session_id.clone(),
        context_id: context.context_id.clone(),
        code: code.into(),
        ..Default::default()
    };
    backend
        .context_run(cell("x = 20"), CallOptions::default())
        .await
        .expect("cell");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = CallOptions {
        events: Some(tx),
        ..CallOptions::default()
    };
    let result = backend
        .context_run(cell("print('x is', x)\nx * 2 + 2"), options)
        .await
        .expect("cell");
    assert_eq!(result.stdout, "x is 20\n", "{result:?}");
    assert_eq!(result.results[0].data["text/plain"], "42");
    assert!(result.results[0].is_main_result);
    let mut streamed = String::new();
    while let Ok(event) = rx.try_recv() {
        if let ExecutionEvent::Output(output) = event {
            streamed.push_str(&output.data);
        }
    }
    assert_eq!(streamed, "x is 20\n");
    let listed = backend.context_list(&session_id).await.expect("list");
    assert_eq!(listed.contexts.len(), 1);
    let params = ContextParams {
        session_id: session_id.clone(),
        context_id: context.context_id.clone(),
    };
    backend
        .context_restart(params.clone())
        .await
        .expect("restart");
    let cleared = backend
        .context_run(cell("'x' in globals()"), CallOptions::default())
        .await
        .expect("cell");
    assert_eq!(cleared.results[0].data["text/plain"], "False");
    assert!(backend.context_close(params).await.expect("close").closed);
    backend.session_close(&session_id).await.expect("close");
}

#[test]
fn the_client_runs_cells_over_a_server() {
    run(async {
        let url = format!("ws://{}/ws/jsonrpc", server().await);
        let client = Client::connect(ClientConfig::new(url))
            .await
            .expect("connect");
        notebook(&client).await;
    });
}

#[test]
fn embedded_mode_runs_the_same_cells() {
    run(async {
        let caller = Caller("contexts-embedded".into());
        let embedded = Embedded::with_caller(Arc::clone(engine()), caller);
        notebook(&embedded).await;
    });
}
