//! `parse_frame` never panics, whatever arrives, and always leaves the server something sensible
//! to answer.

use codebeaker_protocol::commands::Command;
use codebeaker_protocol::jsonrpc::{parse_frame, FrameKind, Incoming, Response};
use codebeaker_protocol::methods::SessionExecuteParams;
use codebeaker_protocol::params::decode_params;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Checks the invariants of a decoded frame and exercises everything the server would do with it.
fn check(text: &str) {
    let frame = parse_frame(text);
    match frame.kind {
        FrameKind::Single => assert_eq!(frame.messages.len(), 1, "{text:?}"),
        FrameKind::Batch => assert!(!frame.messages.is_empty(), "{text:?}"),
        FrameKind::Lines => assert!(frame.messages.len() >= 2, "{text:?}"),
    }
    let mut responses = Vec::new();
    for message in &frame.messages {
        match message {
            Incoming::Request(request) => {
                let _ =
                    decode_params::<SessionExecuteParams>(&request.method, request.params.clone());
                if let Some(id) = &request.id {
                    responses.push(Response::result(id.clone(), Value::Null));
                }
            }
            Incoming::Invalid(response) => {
                assert!(response.is_error());
                responses.push(response.clone());
            }
        }
    }
    let count = responses.len();
    let frames = frame.kind.encode(responses);
    for out in &frames {
        let value: Value = serde_json::from_str(out).expect("responses are valid JSON");
        match value {
            Value::Array(items) => assert_eq!(items.len(), count),
            Value::Object(object) => {
                assert!(object.contains_key("result") ^ object.contains_key("error"));
            }
            other => panic!("bad response frame {other}"),
        }
    }
}

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z_.A-Z0-9]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("2.0"),
            Just("jsonrpc"),
            Just("id"),
            Just("method"),
            Just("params"),
            Just("session.execute"),
            Just("type"),
            Just("write_file"),
            Just("command"),
            Just("sessionId"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("jsonrpc".to_owned()),
                    Just("id".to_owned()),
                    Just("method".to_owned()),
                    Just("params".to_owned()),
                    Just("type".to_owned()),
                    Just("command".to_owned()),
                    Just("sessionId".to_owned()),
                    "[a-zA-Z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Request-shaped values, so that a good share of generated frames get past the envelope.
fn request_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!(1)), Just(json!("a")), Just(Value::Null), json_value()],
        prop_oneof![Just("session.execute"), Just("session.create"), Just("x")],
        json_value(),
        json_value(),
    )
        .prop_map(|(id, method, command, extra)| {
            json!({"jsonrpc":"2.0","id":id,"method":method,"params":{"sessionId":"s","command":command,"extra":extra}})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn json_ish_strings(text in r#"[\[\]{}",:0-9a-z\n\r \\.eE+-]{0,80}"#) {
        check(&text);
    }

    #[test]
    fn arbitrary_json(value in json_value()) {
        check(&value.to_string());
        let _ = Command::from_value(value);
    }

    #[test]
    fn request_shaped_json(values in prop::collection::vec(request_like(), 1..4), batch in any::<bool>()) {
        let text = if batch {
            Value::Array(values).to_string()
        } else {
            values.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
        };
        check(&text);
    }

    #[test]
    fn mangled_json(value in request_like(), cut in any::<prop::sample::Index>(), insert in "[{}\\[\\]\",:\n]{0,3}") {
        let mut text = value.to_string();
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &insert);
        check(&text);
        check(&text[..at]);
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    check(&deep);
    let deep_object = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"session.execute","params":{}1{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    check(&deep_object);
}
