//! The JSON-RPC envelope and framing: ids, notifications, batches, newline-separated messages,
//! malformed input and the error codes of unknown languages and sessions.

use super::*;

#[test]
fn initialize_reports_server_languages_commands_limits_and_isolation() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let result = client
            .ok(
                "initialize",
                json!({"clientInfo": {"name": "test", "version": "1"}}),
            )
            .await;
        assert_eq!(result["serverInfo"]["name"], "codebeaker");
        assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(result["protocolVersion"], "1.0");
        let capabilities = &result["capabilities"];
        assert_eq!(capabilities["streaming"], true);
        let languages = capabilities["languages"].as_array().expect("languages");
        assert!(languages
            .iter()
            .any(|l| l["name"] == "python" && l["available"] == true));
        let commands = capabilities["commands"].as_array().expect("commands");
        for command in ["execute", "write_file", "read_file", "shell", "apply_patch"] {
            assert!(commands.contains(&json!(command)), "{command}");
        }
        assert!(
            !commands.contains(&json!("install_packages")),
            "install_packages cannot succeed in a box without network, so it is not advertised"
        );
        assert_eq!(capabilities["limits"]["maxMessageBytes"], 16 * 1024 * 1024);
        assert!(capabilities["limits"]["maxSessions"].as_u64().is_some());
        assert_eq!(capabilities["isolation"]["backend"], "native");
        assert!(capabilities["isolation"]["seccomp"].is_boolean());
    });
}

#[test]
fn language_list_names_languages_with_aliases() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let result = client.ok("language.list", json!({})).await;
        let languages = result["languages"].as_array().expect("languages");
        let python = languages
            .iter()
            .find(|l| l["name"] == "python")
            .expect("python");
        assert!(python["aliases"]
            .as_array()
            .expect("aliases")
            .contains(&json!("py")));
        assert!(python["version"].is_string());
        // Which languages run warm: Python and JavaScript have workers, Go starts its binary.
        let warm = |name: &str| {
            languages
                .iter()
                .find(|l| l["name"] == name)
                .map(|l| l["warm"].clone())
        };
        assert_eq!(warm("python"), Some(json!(true)));
        assert_eq!(warm("javascript"), Some(json!(true)));
        assert_eq!(warm("go"), Some(json!(false)));
    });
}

#[test]
fn ids_are_echoed_as_numbers_and_as_strings() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client
            .send_text(r#"{"jsonrpc":"2.0","id":7,"method":"language.list"}"#)
            .await;
        assert_eq!(client.recv().await["id"], json!(7));
        client
            .send_text(r#"{"jsonrpc":"2.0","id":"abc-1","method":"language.list"}"#)
            .await;
        let response = client.recv().await;
        assert_eq!(response["id"], json!("abc-1"));
        assert!(response.get("error").is_none());
        assert!(response.get("result").is_some());
    });
}

/// An id a 64-bit integer cannot hold (an exponent, a fraction, more digits) comes back as the
/// text it was sent as, alone, in a batch, and in the error to an invalid request.
#[test]
fn numeric_ids_are_echoed_as_the_text_they_came_as() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        for id in ["1e3", "1.50", "123456789012345678901234567890", "-2E-7"] {
            client
                .send_text(&format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"session.list"}}"#
                ))
                .await;
            let text = client.recv_text().await;
            assert!(text.contains(&format!(r#""id":{id}"#)), "{id}: {text}");
            assert!(text.contains(r#""result""#), "{id}: {text}");
        }
        client
            .send_text(r#"[{"jsonrpc":"2.0","id":2.5e1,"method":"session.list"},{"jsonrpc":"2.0","id":7,"method":"session.list"}]"#)
            .await;
        let text = client.recv_text().await;
        assert!(
            text.contains(r#""id":2.5e1"#) && text.contains(r#""id":7"#),
            "{text}"
        );
        client
            .send_text(r#"{"jsonrpc":"2.0","id":1e3,"params":{}}"#)
            .await;
        let text = client.recv_text().await;
        assert!(
            text.contains(r#""id":1e3"#) && text.contains("-32600"),
            "{text}"
        );
    });
}

#[test]
fn a_notification_gets_no_response() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client
            .send_text(r#"{"jsonrpc":"2.0","method":"language.list"}"#)
            .await;
        client
            .send_text(r#"{"jsonrpc":"2.0","method":"no.such.method"}"#)
            .await;
        client.expect_silence(Duration::from_millis(300)).await;
        let response = client.call("language.list", json!({})).await;
        assert_eq!(response["id"], json!(1));
    });
}

/// JSON-RPC 2.0: only a missing `id` makes a notification; `"id": null` is answered, with a
/// null id.
#[test]
fn a_null_id_is_answered_with_a_null_id() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client
            .send_text(r#"{"jsonrpc":"2.0","id":null,"method":"no.such.method"}"#)
            .await;
        let answer = client.recv().await;
        assert_eq!(answer["id"], Value::Null, "{answer}");
        assert_eq!(answer["error"]["code"], -32601, "{answer}");
        client
            .send_text(r#"{"jsonrpc":"2.0","id":null,"method":"language.list"}"#)
            .await;
        let answer = client.recv().await;
        assert_eq!(answer["id"], Value::Null, "{answer}");
        assert!(answer["result"]["languages"].is_array(), "{answer}");
    });
}

#[test]
fn newline_separated_messages_in_one_frame_get_one_response_each() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client
            .send_text(
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"language.list\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"session.list\"}\n",
            )
            .await;
        let mut ids = vec![
            client.recv().await["id"].clone(),
            client.recv().await["id"].clone(),
        ];
        ids.sort_by_key(|id| id.as_u64());
        assert_eq!(ids, vec![json!(1), json!(2)]);
    });
}

#[test]
fn a_batch_gets_one_array_of_responses() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client
            .send_text(
                r#"[{"jsonrpc":"2.0","id":1,"method":"language.list"},
                    {"jsonrpc":"2.0","method":"session.list"},
                    {"jsonrpc":"2.0","id":2,"method":"nope"},
                    {"jsonrpc":"1.0","id":3,"method":"language.list"}]"#,
            )
            .await;
        let responses = client.recv().await;
        let responses = responses.as_array().expect("an array frame");
        assert_eq!(responses.len(), 3, "{responses:?}");
        assert!(responses[0]["result"]["languages"].is_array());
        assert_eq!(responses[1]["error"]["code"], -32601);
        assert_eq!(responses[2]["id"], 3);
        assert_eq!(responses[2]["error"]["code"], -32600);
    });
}

#[test]
fn malformed_input_gets_the_right_error_codes() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        client.send_text("{this is not json").await;
        let response = client.recv().await;
        assert_eq!(response["error"]["code"], -32700);
        assert_eq!(response["id"], Value::Null);
        assert!(response.get("result").is_none());

        client
            .ws
            .send(Message::binary(b"{}".to_vec()))
            .await
            .expect("send");
        assert_eq!(client.recv().await["error"]["code"], -32600);

        let error = client.err("no.such.method", json!({})).await;
        assert_eq!(error["code"], -32601);

        let error = client.err("session.create", json!({})).await;
        assert_eq!(error["code"], -32602);
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("language"),
            "{error}"
        );

        let error = client
            .err(
                "session.execute",
                json!({"sessionId": "x", "command": {"type": "frobnicate"}}),
            )
            .await;
        assert_eq!(error["code"], -32602);
        assert_eq!(error["data"]["field"], "command");
    });
}

#[test]
fn unsupported_languages_and_unknown_sessions_have_their_codes() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let error = client
            .err("session.create", json!({"language": "cobol-2077"}))
            .await;
        assert_eq!(error["code"], -32003);
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Unsupported language"),
            "{error}"
        );
        let error = client
            .err(
                "session.execute",
                json!({"sessionId": "no-such-session", "command": {"type": "read_file", "path": "a"}}),
            )
            .await;
        assert_eq!(error["code"], -32001);
        let error = client
            .err("session.close", json!({"sessionId": "no-such-session"}))
            .await;
        assert_eq!(error["code"], -32001);
        let error = client
            .err("execution.status", json!({"executionId": "no-such-run"}))
            .await;
        assert_eq!(error["code"], -32001);
    });
}

/// Unknown fields are not silently ignored: a result says which it ignored (`warnings`), and a
/// connection that asked for `strict` gets them refused with `-32602` naming the field. The
/// original client's fields (PascalCase, `Timeout`, `cpuLimit`) still pass without a warning.
#[test]
fn unknown_fields_are_warned_about_or_refused_when_strict() {
    run(async {
        let mut client = Client::connect(shared_server().await).await;
        let ran = client
            .ok(
                "execution.run",
                json!({"language": "python", "code": "print(1)", "timout": 1, "wait": 30000}),
            )
            .await;
        let warnings = ran["warnings"].as_array().expect("warnings");
        assert_eq!(warnings.len(), 1, "{ran}");
        assert!(
            warnings[0]
                .as_str()
                .unwrap_or_default()
                .contains("`timout`"),
            "{ran}"
        );
        let original = client
            .ok(
                "execution.run",
                json!({"Language": "python", "Code": "print(1)", "Timeout": 5, "cpuLimit": 1}),
            )
            .await;
        assert!(original.get("warnings").is_none(), "{original}");

        // A command's own fields are checked too.
        let session = client.create_session("python").await;
        let ran = client
            .call(
                "session.execute",
                json!({"sessionId": session, "command": {"type": "execute", "code": "print(2)", "timeoutt": 5}}),
            )
            .await;
        let warnings = ran["result"]["warnings"].as_array().expect("warnings");
        assert!(
            warnings[0]
                .as_str()
                .unwrap_or_default()
                .contains("`command.timeoutt`"),
            "{ran}"
        );
        assert_eq!(
            ran["result"]["result"]["stdout"], "2\n",
            "the command still ran: {ran}"
        );

        // Strict: refused, naming the field, and nothing runs.
        let mut strict = Client::connect(shared_server().await).await;
        strict.ok("initialize", json!({"strict": true})).await;
        let error = strict
            .err(
                "session.execute",
                json!({"sessionId": session, "command": {"type": "write_file", "path": "x.txt", "content": "no", "mdoe": "Create"}}),
            )
            .await;
        assert_eq!(error["code"], -32602, "{error}");
        assert_eq!(error["data"]["field"], "command.mdoe", "{error}");
        let read = client
            .execute(&session, json!({"type": "read_file", "path": "x.txt"}))
            .await;
        assert_eq!(read["success"], false, "nothing was written: {read}");
        let error = strict.err("language.list", json!({"verbose": true})).await;
        assert_eq!(error["data"]["field"], "verbose", "{error}");
        client.close_session(&session).await;
    });
}
