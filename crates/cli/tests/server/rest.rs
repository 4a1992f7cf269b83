//! The REST endpoints, health and metrics over HTTP.

use super::*;

#[test]
fn rest_executions_and_languages() {
    run(async {
        let addr = shared_server().await;
        let accepted = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"python","code":"print(6 * 7)"}"#),
        )
        .await;
        assert_eq!(accepted.status, 202, "{}", accepted.body);
        let accepted = accepted.json();
        assert_eq!(accepted["status"], "queued");
        let id = accepted["executionId"].as_str().expect("id").to_string();
        let mut record = Value::Null;
        for _ in 0..1200 {
            let response = http(addr, "GET", &format!("/api/execution/{id}"), None, None).await;
            assert_eq!(response.status, 200, "{}", response.body);
            record = response.json();
            if record["status"] == "completed" || record["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["stdout"], "42\n");

        let waited = http(
            addr,
            "POST",
            "/api/execution?wait=true",
            None,
            Some(r#"{"language":"python","code":"result = {'output': input_data['value'] * 2}","input":{"value":21}}"#),
        )
        .await;
        assert_eq!(waited.status, 200, "{}", waited.body);
        let waited = waited.json();
        assert_eq!(waited["status"], "completed", "{waited}");
        assert_eq!(waited["result"]["output"], json!({"output": 42}));
        assert_eq!(waited["result"]["status"], "ok");

        let failed = http(
            addr,
            "POST",
            "/api/execution?wait=true",
            None,
            Some(r#"{"language":"python","code":"import sys; sys.exit(3)"}"#),
        )
        .await
        .json();
        assert_eq!(failed["status"], "completed", "it ran: {failed}");
        assert_eq!(failed["exitCode"], 3);
        assert_eq!(failed["result"]["status"], "runtime_error");

        let body_wait = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"python","code":"print('body wait')","wait":60000}"#),
        )
        .await;
        assert_eq!(body_wait.status, 200, "{}", body_wait.body);
        assert_eq!(body_wait.json()["stdout"], "body wait\n");
        let bad_wait = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"python","code":"print(1)","wait":-5}"#),
        )
        .await;
        assert_eq!(bad_wait.status, 400);
        assert_eq!(bad_wait.json()["error"]["code"], -32602);

        let missing = http(addr, "GET", "/api/execution/no-such-run", None, None).await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.json()["error"]["code"], -32001);

        let garbage = http(addr, "POST", "/api/execution", None, Some("{nope")).await;
        assert_eq!(garbage.status, 400);
        assert_eq!(garbage.json()["error"]["code"], -32700);

        let no_code = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"python"}"#),
        )
        .await;
        assert_eq!(no_code.status, 400);
        assert_eq!(no_code.json()["error"]["code"], -32602);

        let unsupported = http(
            addr,
            "POST",
            "/api/execution",
            None,
            Some(r#"{"language":"cobol-2077","code":"x"}"#),
        )
        .await;
        assert_eq!(unsupported.status, 400);
        assert_eq!(unsupported.json()["error"]["code"], -32003);

        let languages = http(addr, "GET", "/api/languages", None, None).await;
        assert_eq!(languages.status, 200);
        assert!(languages.json()["languages"]
            .as_array()
            .expect("languages")
            .iter()
            .any(|l| l["name"] == "javascript"));

        let python = http(addr, "GET", "/api/languages/py", None, None).await;
        assert_eq!(python.status, 200, "{}", python.body);
        assert_eq!(python.json()["name"], "python");

        let unknown = http(addr, "GET", "/api/languages/cobol-2077", None, None).await;
        assert_eq!(unknown.status, 404);
        let error = unknown.json();
        assert_eq!(error["error"]["code"], -32003);
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("Unsupported language"), "{message}");
        assert!(
            message.contains("python"),
            "lists the known languages: {message}"
        );

        let nowhere = http(addr, "GET", "/api/nowhere", None, None).await;
        assert_eq!(nowhere.status, 404);
        assert!(nowhere.json()["error"]["message"].is_string());
    });
}

#[test]
fn health_and_metrics() {
    run(async {
        let addr = shared_server().await;
        // Some traffic first, so that the request metrics exist.
        let mut client = Client::connect(addr).await;
        client.ok("language.list", json!({})).await;
        client.err("no.such.method", json!({})).await;

        let health = http(addr, "GET", "/health", None, None).await;
        assert_eq!(health.status, 200);
        let health = health.json();
        assert!(
            health["status"] == "ok" || health["status"] == "degraded",
            "{health}"
        );
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
        assert!(health["uptimeSeconds"].is_u64());
        assert!(health["sessions"]["open"].is_u64());
        assert_eq!(health["isolation"]["backend"], "native");

        assert_eq!(
            http(addr, "GET", "/health/live", None, None).await.status,
            200
        );
        let ready = http(addr, "GET", "/health/ready", None, None).await;
        assert_eq!(ready.status, 200, "{}", ready.body);

        let metrics = http(addr, "GET", "/metrics", None, None).await;
        assert_eq!(metrics.status, 200);
        let content_type = metrics
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        for name in [
            "codebeaker_rpc_requests_total{",
            "method=\"language.list\"",
            "code=\"-32601\"",
            "codebeaker_rpc_request_duration_seconds_bucket{",
            "codebeaker_http_requests_total{",
            "codebeaker_ws_connections",
            "codebeaker_sessions",
            "codebeaker_boxes_created_total",
        ] {
            assert!(
                metrics.body.contains(name),
                "{name} missing:\n{}",
                metrics.body
            );
        }
    });
}
