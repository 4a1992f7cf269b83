//! The JSON-RPC envelope: ids, requests, responses, errors and whole-frame decoding.

use codebeaker_protocol::jsonrpc::{
    parse_frame, parse_server_frame, ErrorCode, ErrorObject, Frame, FrameKind, Id, Incoming,
    Notification, Request, Response, ResponseBody, ServerMessage,
};
use serde_json::{json, Value};

/// The one message of a single-message frame.
fn single(text: &str) -> Incoming {
    let Frame { kind, mut messages } = parse_frame(text);
    assert_eq!(kind, FrameKind::Single, "{text:?}");
    assert_eq!(messages.len(), 1, "{text:?}");
    messages.remove(0)
}

fn accepted(text: &str) -> Request {
    match single(text) {
        Incoming::Request(request) => request,
        Incoming::Invalid(response) => panic!("{text:?} was refused: {response:?}"),
    }
}

/// The error response a frame produces, as JSON.
fn refusal(text: &str) -> Value {
    match single(text) {
        Incoming::Invalid(response) => serde_json::to_value(&response).unwrap(),
        Incoming::Request(request) => panic!("{text:?} was accepted: {request:?}"),
    }
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn numeric_id_is_echoed_as_a_number() {
    let request = accepted(r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#);
    assert_eq!(request.id, Some(Id::from(1u64)));
    let response = Response::result(request.id.unwrap(), json!({}));
    assert_eq!(
        response.to_json(),
        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#
    );
}

#[test]
fn string_id_is_echoed_as_a_string() {
    let request = accepted(r#"{"jsonrpc":"2.0","id":"1","method":"initialize"}"#);
    assert_eq!(request.id, Some(Id::from("1")));
    let response = Response::result(request.id.unwrap(), Value::Null);
    assert_eq!(
        response.to_json(),
        r#"{"jsonrpc":"2.0","id":"1","result":null}"#
    );

    let request = accepted(r#"{"jsonrpc":"2.0","id":"abc","method":"initialize"}"#);
    assert_eq!(
        to_json(&Response::result(request.id.unwrap(), json!(true))),
        json!({"jsonrpc":"2.0","id":"abc","result":true})
    );
}

#[test]
fn fractional_negative_and_large_ids_keep_their_value() {
    for (text, echoed) in [
        ("1.5", "1.5"),
        ("-7", "-7"),
        ("0", "0"),
        ("18446744073709551615", "18446744073709551615"),
        ("-9223372036854775808", "-9223372036854775808"),
        // Past 64-bit integers: the text as it came, never a float's rendering of it.
        ("1e3", "1e3"),
        ("1.50", "1.50"),
        ("18446744073709551616", "18446744073709551616"),
        ("-2E-7", "-2E-7"),
    ] {
        let request = accepted(&format!(
            r#"{{"jsonrpc":"2.0","id":{text},"method":"initialize"}}"#
        ));
        let response = Response::result(request.id.unwrap(), json!(0));
        assert_eq!(
            response.to_json(),
            format!(r#"{{"jsonrpc":"2.0","id":{echoed},"result":0}}"#)
        );
    }
}

#[test]
fn only_a_missing_id_is_a_notification_a_null_id_is_answered() {
    let request = accepted(r#"{"jsonrpc":"2.0","method":"session.list"}"#);
    assert!(request.is_notification());
    assert_eq!(request.id, None);
    let request = accepted(r#"{"jsonrpc":"2.0","id":null,"method":"session.list"}"#);
    assert!(!request.is_notification());
    assert_eq!(request.id, Some(Id::Null));
    let answer: Value =
        serde_json::from_str(&Response::result(Id::Null, json!({"sessions": []})).to_json())
            .expect("JSON");
    assert_eq!(
        answer,
        json!({"jsonrpc":"2.0","id":null,"result":{"sessions":[]}})
    );
}

#[test]
fn id_of_the_wrong_type_is_an_invalid_request_with_null_id() {
    for id in [r#"{"a":1}"#, "[1]", "true", "false"] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize"}}"#);
        let error = refusal(&text);
        assert_eq!(error["id"], Value::Null, "{text}");
        assert_eq!(error["error"]["code"], -32600, "{text}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains("`id`"),
            "{error}"
        );
        assert!(error.get("result").is_none());
    }
}

#[test]
fn invalid_requests_keep_the_id_when_it_could_be_read() {
    let cases = [
        (
            r#"{"jsonrpc":"1.0","id":7,"method":"initialize"}"#,
            json!(7),
            "`jsonrpc`",
        ),
        (r#"{"id":7,"method":"initialize"}"#, json!(7), "`jsonrpc`"),
        (
            r#"{"jsonrpc":2.0,"id":"x","method":"initialize"}"#,
            json!("x"),
            "`jsonrpc`",
        ),
        (r#"{"jsonrpc":"2.0","id":7}"#, json!(7), "missing `method`"),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":1}"#,
            json!(7),
            "`method` must be a string",
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"initialize","params":"x"}"#,
            json!(7),
            "`params`",
        ),
        (
            r#"{"jsonrpc":"2.0","method":null}"#,
            Value::Null,
            "`method` must be a string",
        ),
    ];
    for (text, id, needle) in cases {
        let error = refusal(text);
        assert_eq!(error["id"], id, "{text}");
        assert_eq!(error["error"]["code"], -32600, "{text}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{text}: {message}");
    }
}

#[test]
fn valid_json_that_is_not_a_request_is_invalid_request() {
    for text in ["42", "\"hello\"", "null", "true"] {
        let error = refusal(text);
        assert_eq!(error["error"]["code"], -32600, "{text}");
        assert_eq!(error["id"], Value::Null);
    }
}

#[test]
fn null_params_read_as_absent_and_unknown_members_are_ignored() {
    let request = accepted(
        r#"{"jsonrpc":"2.0","id":3,"method":"session.list","params":null,"extra":{"x":1}}"#,
    );
    assert_eq!(request.params, None);
    let request = accepted(r#"{"jsonrpc":"2.0","id":3,"method":"m","params":[1,2]}"#);
    assert_eq!(request.params, Some(json!([1, 2])));
}

#[test]
fn garbage_text_is_a_parse_error_with_null_id() {
    for text in [
        "garbage",
        "{",
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize""#,
        "",
        "   \n\r\n",
        "\u{0}",
        "[",
    ] {
        let error = refusal(text);
        assert_eq!(
            error,
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":error["error"]["message"]}}),
            "{text:?}"
        );
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("parse error"));
    }
}

#[test]
fn seed_client_request_with_trailing_newline() {
    let text = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"session.execute\",\"params\":{\"sessionId\":\"abc\",\"command\":{\"type\":\"write_file\",\"path\":\"/workspace/input.json\",\"content\":\"{}\",\"mode\":\"Create\"}}}\n";
    let request = accepted(text);
    assert_eq!(request.id, Some(Id::from(1u64)));
    assert_eq!(request.method, "session.execute");
    assert_eq!(
        request.params,
        Some(
            json!({"sessionId":"abc","command":{"type":"write_file","path":"/workspace/input.json","content":"{}","mode":"Create"}})
        )
    );
    // Also with \r\n and leading blank lines.
    let crlf = format!("\r\n\r\n{}\r\n", text.trim_end());
    assert_eq!(accepted(&crlf), request);
}

#[test]
fn newline_separated_messages_are_lines() {
    let text = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}\n\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"session.list\"}\n";
    let frame = parse_frame(text);
    assert_eq!(frame.kind, FrameKind::Lines);
    let ids: Vec<_> = frame
        .messages
        .iter()
        .map(|m| match m {
            Incoming::Request(r) => r.id.clone(),
            Incoming::Invalid(r) => panic!("refused: {r:?}"),
        })
        .collect();
    assert_eq!(ids, vec![Some(Id::from(1u64)), Some(Id::from(2u64))]);

    // Each response goes back as its own frame.
    let frames = frame.kind.encode(vec![
        Response::result(Id::from(1u64), json!("a")),
        Response::result(Id::from(2u64), json!("b")),
    ]);
    assert_eq!(
        frames,
        vec![
            r#"{"jsonrpc":"2.0","id":1,"result":"a"}"#.to_string(),
            r#"{"jsonrpc":"2.0","id":2,"result":"b"}"#.to_string(),
        ]
    );
}

#[test]
fn a_broken_line_does_not_spoil_the_others() {
    let text = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}\nnot json at all\r\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\"\n{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"initialize\"}\n";
    let frame = parse_frame(text);
    assert_eq!(frame.kind, FrameKind::Lines);
    let summary: Vec<Value> = frame
        .messages
        .iter()
        .map(|m| match m {
            Incoming::Request(r) => to_json(&r.id),
            Incoming::Invalid(r) => to_json(r)["error"]["code"].clone(),
        })
        .collect();
    assert_eq!(
        summary,
        vec![json!(1), json!(-32700), json!(-32700), json!(3)]
    );
}

#[test]
fn a_notification_among_lines_gets_no_response_but_a_bad_one_does() {
    let text = "{\"jsonrpc\":\"2.0\",\"method\":\"session.list\"}\n{\"jsonrpc\":\"1.0\",\"method\":\"session.list\"}\n";
    let frame = parse_frame(text);
    assert_eq!(frame.kind, FrameKind::Lines);
    assert!(matches!(&frame.messages[0], Incoming::Request(r) if r.is_notification()));
    assert!(matches!(&frame.messages[1], Incoming::Invalid(r) if r.id.is_none()));
}

#[test]
fn a_batch_array_cannot_be_one_of_several_lines() {
    let text = "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}]\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\"}";
    let frame = parse_frame(text);
    assert_eq!(frame.kind, FrameKind::Lines);
    assert!(
        matches!(&frame.messages[0], Incoming::Invalid(r) if to_json(r)["error"]["code"] == -32600)
    );
    assert!(matches!(&frame.messages[1], Incoming::Request(_)));
}

#[test]
fn batch_with_a_notification() {
    let text = r#"[
        {"jsonrpc":"2.0","id":1,"method":"initialize"},
        {"jsonrpc":"2.0","method":"session.list"},
        {"jsonrpc":"2.0","id":"b","method":"language.list"},
        {"foo":"boo"},
        1
    ]"#;
    let frame = parse_frame(text);
    assert_eq!(frame.kind, FrameKind::Batch);
    assert_eq!(frame.messages.len(), 5);

    // The server answers the requests and passes the invalid ones through.
    let mut responses = Vec::new();
    for message in frame.messages {
        match message {
            Incoming::Request(request) => {
                if let Some(id) = request.id {
                    responses.push(Response::result(id, json!(request.method)));
                }
            }
            Incoming::Invalid(response) => responses.push(response),
        }
    }
    let frames = FrameKind::Batch.encode(responses);
    assert_eq!(frames.len(), 1);
    let batch: Value = serde_json::from_str(&frames[0]).unwrap();
    assert_eq!(
        batch,
        json!([
            {"jsonrpc":"2.0","id":1,"result":"initialize"},
            {"jsonrpc":"2.0","id":"b","result":"language.list"},
            {"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: missing `jsonrpc` (must be \"2.0\")"}},
            {"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: expected a request object, got a number"}}
        ])
    );
}

#[test]
fn batch_of_only_notifications_produces_nothing() {
    let frame = parse_frame(
        r#"[{"jsonrpc":"2.0","method":"session.list"},{"jsonrpc":"2.0","method":"initialize"}]"#,
    );
    assert_eq!(frame.kind, FrameKind::Batch);
    assert!(frame
        .messages
        .iter()
        .all(|m| matches!(m, Incoming::Request(r) if r.is_notification())));
    assert!(frame.kind.encode(Vec::new()).is_empty());
}

#[test]
fn empty_batch_is_one_invalid_request_not_an_array() {
    let frame = parse_frame(" [ ] \n");
    assert_eq!(frame.kind, FrameKind::Single);
    let Incoming::Invalid(response) = &frame.messages[0] else {
        panic!("accepted an empty batch")
    };
    assert_eq!(
        frame.kind.encode(vec![response.clone()]),
        vec![
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: empty batch"}}"#
                .to_string()
        ]
    );
}

#[test]
fn batch_of_garbage_elements_answers_each() {
    let frame = parse_frame("[1,2,3]");
    assert_eq!(frame.kind, FrameKind::Batch);
    assert_eq!(frame.messages.len(), 3);
    assert!(frame
        .messages
        .iter()
        .all(|m| matches!(m, Incoming::Invalid(r) if r.id.is_none())));
}

#[test]
fn invalid_json_batch_is_a_single_parse_error() {
    let frame = parse_frame(
        r#"[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"1"},{"jsonrpc":"2.0","method""#,
    );
    assert_eq!(frame.kind, FrameKind::Single);
    assert!(
        matches!(&frame.messages[0], Incoming::Invalid(r) if to_json(r)["error"]["code"] == -32700)
    );
}

#[test]
fn single_kind_with_a_notification_sends_nothing() {
    let frame = parse_frame(r#"{"jsonrpc":"2.0","method":"session.list"}"#);
    assert_eq!(frame.kind.encode(Vec::new()), Vec::<String>::new());
}

#[test]
fn responses_never_carry_both_result_and_error() {
    let ok = to_json(&Response::result(Id::from(5u64), json!({"a": 1})));
    assert_eq!(ok, json!({"jsonrpc":"2.0","id":5,"result":{"a":1}}));
    assert!(ok.get("error").is_none());

    let err = to_json(&Response::error(
        Some(Id::from(5u64)),
        ErrorObject::session_not_found("s1"),
    ));
    assert_eq!(
        err,
        json!({"jsonrpc":"2.0","id":5,"error":{"code":-32001,"message":"session not found: s1"}})
    );
    assert!(err.get("result").is_none());

    // A null result is still a result, and still has no error.
    let null = to_json(&Response::result(Id::from(5u64), Value::Null));
    assert_eq!(null, json!({"jsonrpc":"2.0","id":5,"result":null}));
}

#[test]
fn error_responses_with_data() {
    let limited = Response::error(Some(Id::from("r")), ErrorObject::rate_limited(1500));
    assert_eq!(
        to_json(&limited),
        json!({"jsonrpc":"2.0","id":"r","error":{"code":-32005,"message":"rate limited: retry after 1500 ms","data":{"retryAfterMs":1500}}})
    );
    let internal = to_json(&ErrorObject::internal("e-42"));
    assert_eq!(internal["code"], -32603);
    assert_eq!(internal["data"], json!({"errorId": "e-42"}));
    assert!(internal["message"].as_str().unwrap().contains("e-42"));
}

#[test]
fn error_code_table() {
    let table = [
        (ErrorCode::ParseError, -32700),
        (ErrorCode::InvalidRequest, -32600),
        (ErrorCode::MethodNotFound, -32601),
        (ErrorCode::InvalidParams, -32602),
        (ErrorCode::InternalError, -32603),
        (ErrorCode::SessionNotFound, -32001),
        (ErrorCode::LimitReached, -32002),
        (ErrorCode::UnsupportedLanguage, -32003),
        (ErrorCode::Unauthorized, -32004),
        (ErrorCode::RateLimited, -32005),
    ];
    for (code, number) in table {
        assert_eq!(code.code(), number);
        assert_eq!(ErrorCode::from_code(number), Some(code));
        assert_eq!(ErrorObject::new(code, "x").error_code(), Some(code));
    }
    assert_eq!(ErrorCode::ALL.len(), table.len());
    assert_eq!(ErrorCode::from_code(-1), None);
    assert!(ErrorObject::unsupported_language("rust")
        .message
        .contains("Unsupported language"));
    assert_eq!(ErrorObject::method_not_found("nope").code, -32601);
}

#[test]
fn response_round_trips_and_tolerates_the_original_servers_both_members() {
    for response in [
        Response::result(Id::from(1u64), json!({"x": [1, 2]})),
        Response::result(Id::from("a"), Value::Null),
        Response::error(None, ErrorObject::parse_error("bad")),
        Response::error(Some(Id::from(2u64)), ErrorObject::rate_limited(5)),
    ] {
        let text = response.to_json();
        let back: Response = serde_json::from_str(&text).unwrap();
        assert_eq!(back, response, "{text}");
    }
    let both: Response =
        serde_json::from_value(json!({"jsonrpc":"2.0","id":1,"result":{"a":1},"error":null}))
            .unwrap();
    assert_eq!(both.body, ResponseBody::Result(json!({"a": 1})));
    let both: Response = serde_json::from_value(
        json!({"jsonrpc":"2.0","id":1,"result":null,"error":{"code":-32001,"message":"gone"}}),
    )
    .unwrap();
    assert!(both.is_error());
    assert!(serde_json::from_value::<Response>(json!({"jsonrpc":"2.0","id":1})).is_err());
    assert!(
        serde_json::from_value::<Response>(json!({"jsonrpc":"1.0","id":1,"result":1})).is_err()
    );
}

#[test]
fn request_serializes_for_clients() {
    let request = Request::new(7u64, "session.close", Some(json!({"sessionId": "s"})));
    assert_eq!(
        to_json(&request),
        json!({"jsonrpc":"2.0","id":7,"method":"session.close","params":{"sessionId":"s"}})
    );
    let notification = Request::notification("session.list", None);
    assert_eq!(
        to_json(&notification),
        json!({"jsonrpc":"2.0","method":"session.list"})
    );
    let back: Request = serde_json::from_value(to_json(&request)).unwrap();
    assert_eq!(back, request);
    assert!(serde_json::from_value::<Request>(json!({"id": 1})).is_err());
}

#[test]
fn server_frames_decode_for_clients() {
    let notification = Notification::new("execution.output", Some(json!({"seq": 0})));
    assert_eq!(
        notification.to_json(),
        r#"{"jsonrpc":"2.0","method":"execution.output","params":{"seq":0}}"#
    );
    let text = format!(
        "{}\n{}\n",
        notification.to_json(),
        Response::result(Id::from(1u64), json!(1)).to_json()
    );
    let messages = parse_server_frame(&text).unwrap();
    assert_eq!(
        messages,
        vec![
            ServerMessage::Notification(notification),
            ServerMessage::Response(Response::result(Id::from(1u64), json!(1))),
        ]
    );
    let batch = FrameKind::Batch.encode(vec![
        Response::result(Id::from(1u64), json!(1)),
        Response::error(Some(Id::from(2u64)), ErrorObject::method_not_found("x")),
    ]);
    assert_eq!(parse_server_frame(&batch[0]).unwrap().len(), 2);
    assert!(parse_server_frame("nonsense").is_err());
}
