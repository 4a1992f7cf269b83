//! The original .NET CodeBeaker's snippet programs: input `{"value":21}` must give exactly `{"output":42}`.

use crate::common;

use serde_json::json;

const INPUT: &str = r#"{"value":21}"#;

fn assert_seed(language: &str, code: &str) {
    let (_, outcome) = common::snippet(language, code, INPUT);
    let raw = String::from_utf8_lossy(outcome.result.as_deref().unwrap_or_default()).into_owned();
    assert_eq!(outcome.json(), json!({"output": 42}), "{language}");
    assert_eq!(raw, r#"{"output":42}"#, "{language}: exact bytes");
}

#[test]
fn python_seed() {
    assert_seed("python", "result = {'output': input_data['value'] * 2}");
}

#[test]
fn javascript_seed() {
    assert_seed(
        "javascript",
        "const result = { output: input_data.value * 2 };",
    );
}

#[test]
fn go_seed() {
    assert_seed(
        "go",
        "value := input_data[\"value\"].(float64)\nresult := map[string]interface{}{\"output\": value * 2}",
    );
}

#[test]
fn csharp_seed() {
    assert_seed(
        "csharp",
        "var value = input_data.GetProperty(\"value\").GetInt32();\nvar result = new { output = value * 2 };",
    );
}

#[test]
fn seed_session_programs() {
    for (language, code, expected) in [
        ("python", "result = {'count': 1}", json!({"count": 1})),
        (
            "python",
            "result = {'lang': 'python'}",
            json!({"lang": "python"}),
        ),
        (
            "javascript",
            "const result = {lang: 'javascript'};",
            json!({"lang": "javascript"}),
        ),
    ] {
        let (_, outcome) = common::snippet(language, code, "{}");
        assert_eq!(outcome.json(), expected, "{language}: {code}");
    }
}

#[test]
fn seed_error_program_fails_with_a_message() {
    let (plan, outcome) = common::snippet(
        "python",
        "# This will cause an error\nundefined_variable",
        "{}",
    );
    let run = outcome.run();
    assert!(!run.status.success());
    let stderr = outcome.run_error(&plan);
    assert!(stderr.contains("NameError"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(outcome.result.as_deref().unwrap_or_default().is_empty());
}
