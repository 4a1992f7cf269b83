//! Property tests of the snippet wrappers: whatever names user code picks (the wrapper's own
//! among them) and whatever JSON it is given, the value it leaves in `result` comes back exactly,
//! and nothing the wrapper uses leaks into or collides with the user's code.

use crate::common;

use proptest::prelude::*;
use serde_json::Value;

/// Names a snippet may use: plain identifiers, the wrappers' internal names, and the modules the
/// wrappers import.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,8}".prop_filter("keywords", |n| !KEYWORDS.contains(&n.as_str())),
        Just("__cb_main".to_string()),
        Just("__cb_result".to_string()),
        Just("json".to_string()),
        Just("os".to_string()),
        Just("sys".to_string()),
        Just("fs".to_string()),
        Just("require".to_string()),
        Just("process".to_string()),
    ]
}

const KEYWORDS: &[&str] = &[
    "and",
    "as",
    "assert",
    "async",
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "def",
    "default",
    "del",
    "delete",
    "do",
    "elif",
    "else",
    "enum",
    "except",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "from",
    "function",
    "global",
    "if",
    "import",
    "in",
    "instanceof",
    "is",
    "lambda",
    "let",
    "match",
    "new",
    "none",
    "nonlocal",
    "not",
    "null",
    "or",
    "pass",
    "raise",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "type",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
    "result",
    "input_data",
    "arguments",
    "eval",
];

/// JSON values that every language round-trips exactly (integers within 2^53).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(Value::from),
        "[a-zA-Z0-9 éü✓日本\"\\\\\n\t]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn run(language: &str, code: &str, input: &Value) -> Option<Value> {
    let (_, outcome) = common::snippet(language, code, &input.to_string());
    outcome
        .result
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn python_snippets_keep_their_names_and_values(var in name(), input in json_value()) {
        let code = format!("{var} = input_data\nresult = {{'echo': {var}, 'name': {var:?}}}");
        let out = run("python", &code, &input);
        prop_assert_eq!(out, Some(serde_json::json!({"echo": input, "name": var})));
    }

    #[test]
    fn javascript_snippets_keep_their_names_and_values(var in name(), input in json_value()) {
        let code = format!("const {var} = input_data;\nconst result = {{ echo: {var}, name: {var:?} }};");
        let out = run("javascript", &code, &input);
        prop_assert_eq!(out, Some(serde_json::json!({"echo": input, "name": var})));
    }
}
