//! Snippet ABI behaviour per language, end to end with the real toolchains (no sandbox).

use crate::common;

use serde_json::{json, Value};

/// Non-ASCII text, null, mixed numbers, nesting, an integer above 2^53 and a float.
const ROUND_TRIP: &str = r#"{"s":"héllo ✓ 日本","n":null,"a":[1,2.5,-3],"o":{"x":{"y":true}},"big":9007199254740993,"f":0.1}"#;

fn round_trip_input() -> Value {
    serde_json::from_str(ROUND_TRIP).expect("valid JSON")
}

/// The round-trip input as a language that reads numbers as IEEE doubles sees it.
fn round_trip_as_doubles() -> Value {
    let mut value = round_trip_input();
    value["big"] = json!(9007199254740992_u64);
    value
}

// ---------------------------------------------------------------- round trips

#[test]
fn python_round_trips_exactly() {
    let (_, outcome) = common::snippet("python", "result = input_data", ROUND_TRIP);
    assert_eq!(outcome.json(), round_trip_input());
}

#[test]
fn ruby_round_trips_exactly() {
    let (_, outcome) = common::snippet("ruby", "result = input_data", ROUND_TRIP);
    assert_eq!(outcome.json(), round_trip_input());
}

#[test]
fn csharp_round_trips_exactly() {
    // JsonElement keeps each number's original text.
    let (_, outcome) = common::snippet("csharp", "var result = input_data;", ROUND_TRIP);
    assert_eq!(outcome.json(), round_trip_input());
}

#[test]
fn bash_round_trips_the_text() {
    let (_, outcome) = common::snippet("bash", "result=\"$input_data\"", ROUND_TRIP);
    assert_eq!(outcome.json(), round_trip_input());
}

#[test]
fn javascript_round_trips_except_integers_above_2_pow_53() {
    let (_, outcome) = common::snippet("javascript", "const result = input_data;", ROUND_TRIP);
    assert_eq!(outcome.json(), round_trip_as_doubles());
}

#[test]
fn go_round_trips_except_integers_above_2_pow_53() {
    // The original .NET CodeBeaker's contract is `input_data["value"].(float64)`: numbers arrive as float64.
    let (_, outcome) = common::snippet("go", "result = input_data", ROUND_TRIP);
    assert_eq!(outcome.json(), round_trip_as_doubles());
}

#[test]
fn non_ascii_output_is_utf8_where_the_language_writes_it_raw() {
    for language in ["python", "javascript", "go", "ruby"] {
        let code = match language {
            "go" => "result = input_data[\"s\"]",
            "javascript" => "result = input_data.s",
            _ => "result = input_data['s']",
        };
        let (_, outcome) = common::snippet(language, code, ROUND_TRIP);
        let raw = String::from_utf8(outcome.result.clone().unwrap_or_default()).expect("utf-8");
        assert_eq!(raw, "\"héllo ✓ 日本\"", "{language}");
    }
}

// ---------------------------------------------------------------- result handling

#[test]
fn missing_result_is_an_error_everywhere() {
    for (language, code) in [
        ("python", "x = 1"),
        ("javascript", "let x = 1;"),
        ("go", "x := 1\n_ = x"),
        ("ruby", "x = 1"),
        ("bash", "x=1"),
    ] {
        let (plan, outcome) = common::snippet(language, code, "{}");
        let run = outcome.run();
        assert!(!run.status.success(), "{language}");
        assert!(
            outcome
                .run_error(&plan)
                .contains("snippet did not set `result`"),
            "{language}: {}",
            run.stderr
        );
        assert_eq!(outcome.result.as_deref(), Some(&b""[..]), "{language}");
    }
    // C# checks declarations at compile time.
    let (plan, outcome) = common::snippet("csharp", "var x = 1;", "{}");
    let diagnostics = outcome.compile_error(&plan);
    assert!(plan.result_missing(&diagnostics), "{diagnostics}");
    assert!(
        diagnostics.contains("snippet did not set `result`"),
        "{diagnostics}"
    );
}

#[test]
fn javascript_accepts_every_way_to_set_result() {
    for code in [
        "result = { output: input_data.value * 2 };",
        "let result = { output: input_data.value * 2 };",
        "var result = { output: input_data.value * 2 };",
        "const result = Promise.resolve({ output: input_data.value * 2 });",
        "function twice(x) { return x * 2 }\nresult = { output: twice(input_data.value) }",
    ] {
        let (_, outcome) = common::snippet("javascript", code, r#"{"value":21}"#);
        assert_eq!(outcome.json(), json!({"output": 42}), "{code}");
    }
}

#[test]
fn go_snippets_need_not_read_input_data() {
    for code in [
        "result := map[string]interface{}{\"ok\": true}",
        "result = 42",
        "fmt.Println(\"side effect\")\nresult := []int{1, 2, 3}",
    ] {
        let (_, outcome) = common::snippet("go", code, "{}");
        assert!(
            outcome.run().status.success(),
            "{code}: {}",
            outcome.run().stderr
        );
        assert_ne!(outcome.json(), Value::Null, "{code}");
    }
}

#[test]
fn go_snippets_may_import_packages() {
    let code = "import (\n\t\"strings\"\n\tu \"unicode\"\n)\nname := input_data[\"name\"].(string)\nresult := map[string]interface{}{\"upper\": strings.ToUpper(name), \"letter\": u.IsLetter('x'), \"len\": len(name)}";
    let (_, outcome) = common::snippet("go", code, r#"{"name":"gopher"}"#);
    assert_eq!(
        outcome.json(),
        json!({"upper": "GOPHER", "letter": true, "len": 6})
    );
}

#[test]
fn stdout_stays_the_users() {
    for (language, code) in [
        ("python", "print('hello')\nresult = 1"),
        ("javascript", "console.log('hello');\nconst result = 1;"),
        ("go", "fmt.Println(\"hello\")\nresult := 1"),
        ("csharp", "Console.WriteLine(\"hello\");\nvar result = 1;"),
        ("ruby", "puts 'hello'\nresult = 1"),
        ("bash", "echo hello\nresult=1"),
    ] {
        let (_, outcome) = common::snippet(language, code, "{}");
        assert_eq!(outcome.json(), json!(1), "{language}");
        assert_eq!(outcome.run().stdout, "hello\n", "{language}");
    }
}

#[test]
fn wrapper_names_do_not_collide_with_user_names() {
    let (_, outcome) = common::snippet("python", "names = sorted(globals())\nresult = names", "{}");
    assert_eq!(
        outcome.json(),
        json!(["__builtins__", "__name__", "input_data"])
    );
    for (language, code, expected) in [
        (
            "javascript",
            "const fs = 1, path = 2, vm = 3, raw = 4, input = 5, code = 6, report = 7;\nconst result = fs + path + vm + raw + input + code + report;",
            json!(28),
        ),
        (
            "go",
            "input := 1\nraw := 2\nvalue := 3\nerr := 4\njson := 5\nfmt := 6\nresult := input + raw + value + err + json + fmt",
            json!(21),
        ),
        (
            "csharp",
            "var raw = 1; var input = 2; var value = 3; var json = 4; var bytes = 5;\nvar result = raw + input + value + json + bytes;",
            json!(15),
        ),
        (
            "ruby",
            "raw = 1; input = 2; output = 3; code = 4; scope = 5\nresult = raw + input + output + code + scope",
            json!(15),
        ),
    ] {
        let (_, outcome) = common::snippet(language, code, "{}");
        assert_eq!(outcome.json(), expected, "{language}");
    }
}

#[test]
fn unserializable_results_fail_clearly() {
    for (language, code) in [
        ("python", "result = {1, 2}"),
        ("javascript", "const result = () => 1;"),
        ("go", "result = func() {}"),
        ("csharp", "var result = new { f = double.NaN };"),
    ] {
        let (plan, outcome) = common::snippet(language, code, "{}");
        assert!(!outcome.run().status.success(), "{language}");
        let stderr = outcome.run_error(&plan);
        assert!(
            stderr.contains("`result` is not JSON-serializable"),
            "{language}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------- C# System.Text.Json subset

#[test]
fn csharp_json_element_api() {
    let input = r#"{"name":"Ada","pi":2.75,"ok":true,"items":[1,2,3],"obj":{"a":1,"b":"x"},"big":9007199254740993,"nothing":null}"#;
    let code = r#"
var name = input_data.GetProperty("name").GetString();
var pi = input_data.GetProperty("pi").GetDouble();
var ok = input_data.GetProperty("ok").GetBoolean();
var sum = 0;
foreach (var item in input_data.GetProperty("items").EnumerateArray()) sum += item.GetInt32();
var keys = new List<string>();
foreach (var p in input_data.GetProperty("obj").EnumerateObject()) keys.Add(p.Name + "=" + p.Value.ToString());
var big = input_data.GetProperty("big").GetInt64();
var kinds = new[] {
    input_data.ValueKind.ToString(),
    input_data.GetProperty("items").ValueKind.ToString(),
    input_data.GetProperty("nothing").ValueKind.ToString(),
    input_data.GetProperty("name").ValueKind.ToString(),
    input_data.GetProperty("pi").ValueKind.ToString(),
    input_data.GetProperty("ok").ValueKind.ToString(),
    (input_data.GetProperty("ok").ValueKind == JsonValueKind.True).ToString(),
};
JsonElement missing;
var has = input_data.TryGetProperty("nope", out missing);
int notInt;
var piIsInt = input_data.GetProperty("pi").TryGetInt32(out notInt);
var result = new {
    name, pi, ok, sum, keys, big, kinds, has, piIsInt,
    len = input_data.GetProperty("items").GetArrayLength(),
    second = input_data.GetProperty("items")[1].GetInt32(),
    raw = input_data.GetProperty("obj").GetRawText(),
    dec = input_data.GetProperty("pi").GetDecimal(),
    nullString = input_data.GetProperty("nothing").GetString(),
    parsed = JsonSerializer.Deserialize<JsonElement>("{\"a\":[1,2]}").GetProperty("a")[1].GetInt32(),
    doc = JsonDocument.Parse("[true]").RootElement[0].GetBoolean(),
};
"#;
    let (_, outcome) = common::snippet("csharp", code, input);
    assert_eq!(
        outcome.json(),
        json!({
            "name": "Ada", "pi": 2.75, "ok": true, "sum": 6, "keys": ["a=1", "b=x"],
            "big": 9007199254740993_u64,
            "kinds": ["Object", "Array", "Null", "String", "Number", "True", "True"],
            "has": false, "piIsInt": false, "len": 3, "second": 2, "raw": "{\"a\":1,\"b\":\"x\"}",
            "dec": 2.75, "nullString": null, "parsed": 2, "doc": true
        })
    );
}

#[test]
fn csharp_json_element_errors_match_dotnet() {
    for (code, exception) in [
        (
            "var result = input_data.GetProperty(\"missing\");",
            "KeyNotFoundException",
        ),
        (
            "var result = input_data.GetProperty(\"s\").GetInt32();",
            "InvalidOperationException",
        ),
        (
            "var result = input_data.GetProperty(\"f\").GetInt32();",
            "FormatException",
        ),
    ] {
        let (plan, outcome) = common::snippet("csharp", code, r#"{"s":"x","f":2.5}"#);
        assert!(!outcome.run().status.success(), "{code}");
        let stderr = outcome.run_error(&plan);
        assert!(stderr.contains(exception), "{code}: {stderr}");
        assert!(stderr.contains("snippet.cs:1"), "{code}: {stderr}");
    }
}

#[test]
fn csharp_serializer_handles_common_shapes() {
    let code = r#"
var dict = new Dictionary<string, object> { { "x", 1 }, { "y", "two" } };
var result = new {
    arr = new[] { 1, 2, 3 },
    list = new List<object> { true, null, 1.5, "s" },
    dict,
    sorted = new SortedDictionary<string, int> { { "b", 2 }, { "a", 1 } },
    d = 0.1,
    whole = 42.0,
    neg = -3,
    big = 9007199254740993L,
    dec = 1.50m,
    f = 2.5f,
    s = "héllo ✓ 日本 \"q\" \\ \n\t<&>",
    n = (string)null,
    c = 'c',
    nested = new { inner = new List<object> { new { deep = true } } },
    el = input_data,
    empty = new object[0],
    e = DayOfWeek.Tuesday,
};
"#;
    let (_, outcome) = common::snippet("csharp", code, r#"{"k":[1,{"z":null}]}"#);
    let raw = String::from_utf8(outcome.result.clone().unwrap_or_default()).expect("utf-8");
    assert!(raw.contains(r#""whole":42,"#), "{raw}");
    assert!(raw.contains(r#""d":0.1,"#), "{raw}");
    assert!(raw.contains(r#""dec":1.50,"#), "{raw}");
    assert!(
        raw.is_ascii(),
        "System.Text.Json escapes non-ASCII by default: {raw}"
    );
    assert_eq!(
        outcome.json(),
        json!({
            "arr": [1, 2, 3], "list": [true, null, 1.5, "s"], "dict": {"x": 1, "y": "two"},
            "sorted": {"a": 1, "b": 2}, "d": 0.1, "whole": 42, "neg": -3,
            "big": 9007199254740993_u64, "dec": 1.5, "f": 2.5,
            "s": "héllo ✓ 日本 \"q\" \\ \n\t<&>", "n": null, "c": "c",
            "nested": {"inner": [{"deep": true}]}, "el": {"k": [1, {"z": null}]}, "empty": [], "e": 2
        })
    );
}

#[test]
fn csharp_snippets_may_add_using_directives() {
    let code = "using System.Text.RegularExpressions;\nvar m = Regex.Match(input_data.GetProperty(\"s\").GetString(), \"[0-9]+\");\nvar result = int.Parse(m.Value);";
    let (_, outcome) = common::snippet("csharp", code, r#"{"s":"abc123def"}"#);
    assert_eq!(outcome.json(), json!(123));
}

// ---------------------------------------------------------------- errors point at user lines

#[test]
fn runtime_errors_name_the_user_line() {
    for (language, code, expect) in [
        ("python", "x = 1\nraise ValueError('boom')", vec!["line 2", "ValueError: boom"]),
        ("javascript", "let x = 1;\nnull.foo;", vec!["snippet.js:2", "TypeError"]),
        ("go", "var a []int\nresult := a[3]", vec!["snippet.go:2", "index out of range"]),
        (
            "csharp",
            "var x = 1;\nif (x == 1) throw new InvalidOperationException(\"boom\");\nvar result = x;",
            vec!["snippet.cs:2", "InvalidOperationException: boom"],
        ),
        ("ruby", "x = 1\nraise 'boom'", vec!["snippet.rb:2", "boom (RuntimeError)"]),
        ("bash", "x=1\nresult=$(( 1 / 0 ))", vec!["snippet.sh: line 2", "division by 0"]),
    ] {
        let (plan, outcome) = common::snippet(language, code, "{}");
        assert!(!outcome.run().status.success(), "{language}");
        let stderr = outcome.run_error(&plan);
        for needle in expect {
            assert!(stderr.contains(needle), "{language}: {needle:?} not in\n{stderr}");
        }
        assert!(!stderr.contains(&*outcome.src_dir.to_string_lossy()), "{stderr}");
    }
}

#[test]
fn syntax_errors_name_the_user_line() {
    for (language, code, needle) in [
        ("python", "x = 1\ny = (", "line 2"),
        ("javascript", "let x = 1;\nlet y = ;", "snippet.js:2"),
        ("ruby", "x = 1\ny = (", "snippet.rb:2"),
    ] {
        let (plan, outcome) = common::snippet(language, code, "{}");
        assert!(!outcome.run().status.success(), "{language}");
        let stderr = outcome.run_error(&plan);
        assert!(
            stderr.contains(needle),
            "{language}: {needle:?} not in\n{stderr}"
        );
    }
}

#[test]
fn compile_errors_name_the_user_line() {
    for (language, code, needle) in [
        (
            "go",
            "x := 1\nresult := y + x",
            "snippet.go:2:11: undefined: y",
        ),
        (
            "csharp",
            "var x = 1;\nvar result = y;",
            "snippet.cs(2,14): error CS0103",
        ),
    ] {
        let (plan, outcome) = common::snippet(language, code, "{}");
        let diagnostics = outcome.compile_error(&plan);
        assert!(
            diagnostics.contains(needle),
            "{language}: {needle:?} not in\n{diagnostics}"
        );
    }
}
