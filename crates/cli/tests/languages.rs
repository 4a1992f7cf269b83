//! Every language through the real engine in real boxes: the original .NET CodeBeaker's snippet
//! ABI, script mode, runtime and compile errors with the user's line numbers, the compile cache,
//! and the errors a user gets for unknown languages and missing toolchains.

use codebeaker_engine::{CodeRequest, EngineError, Execution};
use codebeaker_sandbox::Verdict;
use serde_json::{json, Value};

use crate::common::{engine, engine_config, run, shared, BIN};

/// A nonce that makes each test's program new to the compile cache.
fn nonce() -> String {
    format!("{}-{:?}", std::process::id(), std::time::SystemTime::now())
}

/// Runs `code` once in `language` through the shared engine.
async fn run_code(language: &str, code: &str, input: Option<Value>, stdin: &str) -> Execution {
    let engine = engine();
    engine
        .run_once(CodeRequest {
            language: language.into(),
            code: code.into(),
            input,
            stdin: stdin.as_bytes().to_vec(),
            limits: engine.config().run_limits,
            ..CodeRequest::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{language}: {e}"))
}

async fn snippet(language: &str, code: &str, input: Value) -> Execution {
    run_code(language, code, Some(input), "").await
}

fn assert_ok(e: &Execution) {
    assert_eq!(
        e.outcome.status,
        Verdict::Ok,
        "{}: {:?}\nstderr: {}",
        e.language,
        e.error,
        String::from_utf8_lossy(&e.outcome.stderr)
    );
}

#[test]
fn the_original_four_programs_give_42() {
    run(async {
        let programs = [
        ("python", "result = {'output': input_data['value'] * 2}"),
        ("javascript", "const result = { output: input_data.value * 2 };"),
        ("go", "value := input_data[\"value\"].(float64)\nresult := map[string]interface{}{\"output\": value * 2}"),
        (
            "csharp",
            "var value = input_data.GetProperty(\"value\").GetInt32();\nvar result = new { output = value * 2 };",
        ),
    ];
        for (language, code) in programs {
            let e = snippet(language, code, json!({"value": 21})).await;
            assert_ok(&e);
            assert_eq!(e.output, Some(json!({"output": 42})), "{language}");
            assert_eq!(
                serde_json::to_string(e.output.as_ref().unwrap()).unwrap(),
                r#"{"output":42}"#,
                "{language}: 42, not 42.0"
            );
        }
    });
}

#[test]
fn snippet_variants_from_the_protocol() {
    run(async {
        let e = snippet(
            "javascript",
            "result = { lang: 'javascript', n: input_data.n };",
            json!({"n": 1}),
        )
        .await;
        assert_ok(&e);
        assert_eq!(e.output, Some(json!({"lang": "javascript", "n": 1})));
        let e = snippet(
            "go",
            &format!("// {}\nresult := []int{{1, 2, 3}}", nonce()),
            json!({}),
        )
        .await;
        assert_ok(&e);
        assert_eq!(
            e.output,
            Some(json!([1, 2, 3])),
            "a Go snippet that never reads input_data"
        );
        let csharp = format!(
        "// {}\nvar items = new System.Collections.Generic.List<object>();\n\
         foreach (var x in input_data.GetProperty(\"xs\").EnumerateArray()) items.Add(x.GetDouble() * 2);\n\
         var names = new System.Collections.Generic.Dictionary<string, object>();\n\
         foreach (var p in input_data.GetProperty(\"o\").EnumerateObject()) names[p.Name] = p.Value.ValueKind.ToString();\n\
         var result = new {{ s = input_data.GetProperty(\"s\").GetString(), b = input_data.GetProperty(\"b\").GetBoolean(), \
         big = input_data.GetProperty(\"big\").GetInt64(), items, names }};",
        nonce()
    );
        let e = snippet(
        "csharp",
        &csharp,
        json!({"s": "héllo ✓", "b": true, "big": 9007199254740993i64, "xs": [1, 2.5], "o": {"a": null, "b": [1]}}),
    )
    .await;
        assert_ok(&e);
        assert_eq!(
            e.output,
            Some(
                json!({"s": "héllo ✓", "b": true, "big": 9007199254740993i64, "items": [2, 5], "names": {"a": "Null", "b": "Array"}})
            )
        );
    });
}

#[test]
fn json_round_trips_exactly() {
    run(async {
        let input = json!({"s": "héllo ✓ 日本", "n": null, "a": [1, 2.5, -3], "o": {"x": {"y": true}}, "big": 9007199254740993i64, "f": 0.1});
        for (language, code) in [
            ("python", "result = input_data"),
            ("ruby", "result = input_data"),
        ] {
            let e = snippet(language, code, input.clone()).await;
            assert_ok(&e);
            assert_eq!(e.output.as_ref(), Some(&input), "{language}");
        }
        // JavaScript numbers are doubles, and so are Go's (the original Go snippet asserts
        // `.(float64)`): everything up to 2^53 round-trips.
        let mut small = input.clone();
        small["big"] = json!(9007199254740991i64);
        let e = snippet("javascript", "result = input_data;", small.clone()).await;
        assert_eq!(e.output, Some(small.clone()));
        let e = snippet("go", "result := input_data", small.clone()).await;
        assert_eq!(e.output, Some(small));
    });
}

#[test]
fn script_mode_reads_stdin_and_writes_stdout() {
    run(async {
        let n = nonce();
        let programs = [
        ("python", "import sys\nprint(sys.stdin.read().upper(), end='')".to_string()),
        ("javascript", "process.stdout.write(require('fs').readFileSync(0, 'utf8').toUpperCase())".to_string()),
        ("bash", "tr a-z A-Z".to_string()),
        ("ruby", "print STDIN.read.upcase".to_string()),
        ("go", format!("package main\n// {n}\nimport (\"io\"; \"os\"; \"strings\")\nfunc main() {{ b, _ := io.ReadAll(os.Stdin); os.Stdout.WriteString(strings.ToUpper(string(b))) }}")),
        ("c", format!("// {n}\n#include <stdio.h>\n#include <ctype.h>\nint main(void) {{ int c; while ((c = getchar()) != EOF) putchar(toupper(c)); return 0; }}")),
        ("cpp", format!("// {n}\n#include <iostream>\n#include <cctype>\nint main() {{ char c; while (std::cin.get(c)) std::cout << (char)std::toupper(c); }}")),
        ("rust", format!("// {n}\nuse std::io::Read;\nfn main() {{ let mut s = String::new(); std::io::stdin().read_to_string(&mut s).unwrap(); print!(\"{{}}\", s.to_uppercase()); }}")),
        ("java", format!("// {n}\npublic class Main {{ public static void main(String[] a) throws Exception {{ System.out.print(new String(System.in.readAllBytes()).toUpperCase()); }} }}")),
        ("csharp", format!("// {n}\nclass P {{ static void Main() {{ System.Console.Write(System.Console.In.ReadToEnd().ToUpper()); }} }}")),
    ];
        for (language, code) in programs {
            let e = run_code(language, &code, None, "shout").await;
            assert_ok(&e);
            assert_eq!(
                String::from_utf8_lossy(&e.outcome.stdout),
                "SHOUT",
                "{language}"
            );
        }
    });
}

#[test]
fn runtime_errors_carry_the_languages_own_message() {
    run(async {
        let cases = [
            (
                "python",
                "# This will cause an error\nundefined_variable",
                "NameError",
            ),
            ("javascript", "\nnull.x;", "TypeError"),
            (
                "go",
                "var m map[string]int\nm[\"a\"] = 1\nresult := 1",
                "assignment to entry in nil map",
            ),
            (
                "csharp",
                "object o = null;\nvar result = o.ToString();",
                "NullReferenceException",
            ),
            ("ruby", "raise ArgumentError, 'bad'", "bad"),
            ("bash", "echo oops >&2; exit 3", "oops"),
        ];
        for (language, code, expected) in cases {
            let e = snippet(language, code, json!({})).await;
            assert_eq!(
                e.outcome.status,
                Verdict::RuntimeError,
                "{language}: {:?}",
                e.error
            );
            let error = e.error.unwrap_or_default();
            assert!(error.contains(expected), "{language}: {error}");
        }
        let e = snippet(
            "python",
            "x = 1\ny = 2\nraise ValueError('line three')",
            json!({}),
        )
        .await;
        assert!(
            e.error.as_deref().unwrap_or_default().contains("line 3"),
            "{:?}",
            e.error
        );
    });
}

#[test]
fn compile_errors_point_at_the_users_lines() {
    run(async {
        let n = nonce();
        let cases = [
        ("go", format!("// {n}\nx := 1\nresult := undefinedThing"), "3:"),
        ("csharp", format!("// {n}\nvar x = 1;\nvar result = undefinedThing;"), "(3,"),
        ("c", format!("// {n}\nint main(void) {{\n  return undefined_thing;\n}}"), ":3:"),
        ("rust", format!("// {n}\nfn main() {{\n    let x: i32 = \"s\";\n}}"), ":3:"),
        ("java", format!("// {n}\npublic class Main {{ public static void main(String[] a) {{\n int x = \"s\"; }} }}"), ":3:"),
    ];
        for (language, code, line) in cases {
            let input = (language == "go" || language == "csharp").then(|| json!({}));
            let e = run_code(language, &code, input, "").await;
            assert_eq!(
                e.outcome.status,
                Verdict::CompileError,
                "{language}: {:?}",
                e.error
            );
            let error = e.error.unwrap_or_default();
            assert!(
                error.contains(line),
                "{language}: expected {line} in {error}"
            );
            assert!(
                !error.contains("/tmp/.codebeaker"),
                "{language}: no wrapper paths: {error}"
            );
        }
    });
}

#[test]
fn the_second_run_of_a_compiled_program_does_not_compile() {
    run(async {
        for (language, code) in [
            (
                "go",
                format!("// {}\nresult := map[string]int{{\"n\": 1}}", nonce()),
            ),
            (
                "csharp",
                format!("// {}\nvar result = new {{ n = 1 }};", nonce()),
            ),
        ] {
            let first = snippet(language, &code, json!({})).await;
            assert_ok(&first);
            assert_eq!(
                first.compile.map(|c| c.cache_hit),
                Some(false),
                "{language}: first run compiles"
            );
            let second = snippet(language, &code, json!({})).await;
            assert_ok(&second);
            assert_eq!(
                second.compile.map(|c| c.cache_hit),
                Some(true),
                "{language}: second run is a cache hit"
            );
            assert_eq!(second.output, Some(json!({"n": 1})));
        }
    });
}

#[test]
fn unknown_languages_and_missing_toolchains_are_clear_errors() {
    run(async {
        let engine = engine();
        let err = engine
            .run_once(CodeRequest {
                language: "cobol".into(),
                code: "x".into(),
                input: None,
                stdin: Vec::new(),
                limits: engine.config().run_limits,
                ..CodeRequest::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::UnsupportedLanguage(_)));
        let msg = err.to_string();
        assert!(
            msg.contains("Unsupported language") && msg.contains("python") && msg.contains("go"),
            "{msg}"
        );

        let mut cfg = engine_config(0);
        cfg.languages_override = Some(
            r#"
[languages.cobol]
description = "COBOL, added by configuration"
extensions = ["cob"]
main_file = "main.cob"
[[languages.cobol.toolchains]]
name = "gnucobol"
package = "gnucobol4"
tools = { cobc = ["/usr/bin/cobc-not-installed"] }
version = { argv = ["{tool:cobc}", "--version"], regex = '(\d+\.\d+)' }
run = ["{tool:cobc}", "-x", "{source}"]
"#
            .into(),
        );
        let engine = codebeaker_engine::Engine::new(cfg)
            .expect("an engine with a language added by configuration");
        let err = engine
            .run_once(CodeRequest {
                language: "cobol".into(),
                code: "x".into(),
                input: None,
                stdin: Vec::new(),
                limits: engine.config().run_limits,
                ..CodeRequest::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::LanguageUnavailable(_)), "{err}");
        assert!(
            err.to_string().contains("gnucobol4"),
            "names the package: {err}"
        );
    });
}

#[test]
fn cli_snippet_mode_prints_output_and_explains_bad_input() {
    // The commands start sandboxes of their own.
    let _shared = shared();
    let out = std::process::Command::new(BIN)
        .args([
            "run",
            "--lang",
            "py",
            "-c",
            "print('to stderr'); result = {'output': input_data['value'] * 2}",
            "--input",
            r#"{"value":21}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"output\":42}\n");
    let out = std::process::Command::new(BIN)
        .args([
            "run",
            "--lang",
            "python",
            "-c",
            "result = 1",
            "--input",
            "{\"value\": 21,\n oops}",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--input is not valid JSON") && stderr.contains("line 2"),
        "{stderr}"
    );
    let out = std::process::Command::new(BIN)
        .args(["run", "--lang", "cobol", "-c", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unsupported language 'cobol'"));
    let out = std::process::Command::new(BIN)
        .args(["run", "examples/hello.py"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn benchmarks_run_and_report_every_case() {
    // The commands start sandboxes of their own.
    let _shared = shared();
    let out = std::process::Command::new(BIN)
        .args(["bench", "--iterations", "2", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cases: Vec<&str> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["case"].as_str().unwrap())
        .collect();
    assert_eq!(
        cases,
        [
            "bare process",
            "bubblewrap",
            "box creation",
            "box creation + run",
            "run in existing box"
        ]
    );
    assert!(
        report["cases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["samples"] == 2),
        "{report}"
    );

    // Every figure, each but the baseline with its ratio to the baseline of the same run.
    let figures = report["figures"].as_array().unwrap();
    assert_eq!(figures.len(), cases.len(), "{report}");
    assert!(figures[0]["baseline"].is_null(), "{report}");
    for f in &figures[1..] {
        assert_eq!(f["baseline"], "bare process", "{report}");
        let expected = f["value"].as_f64().unwrap() / figures[0]["value"].as_f64().unwrap();
        assert!(
            (f["ratio"].as_f64().unwrap() - expected).abs() < 1e-9,
            "{f}"
        );
    }

    // The regression guard: a run against itself moved nothing; against a copy in which one
    // figure's ratio doubled, it names that figure and only it.
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.json"), dir.path().join("new.json"));
    std::fs::write(&old, serde_json::to_vec(&report).unwrap()).unwrap();
    let mut slower = report.clone();
    let last = slower["figures"]
        .as_array_mut()
        .unwrap()
        .last_mut()
        .unwrap();
    last["ratio"] = serde_json::json!(last["ratio"].as_f64().unwrap() * 2.0);
    std::fs::write(&new, serde_json::to_vec(&slower).unwrap()).unwrap();
    let compare = |a: &std::path::Path, b: &std::path::Path| {
        let out = std::process::Command::new(BIN)
            .args(["bench", "--compare"])
            .args([a, b])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let same = compare(&old, &old);
    assert!(
        same.starts_with("0 of 5 figures moved by more than 10 %"),
        "{same}"
    );
    let moved = compare(&old, &new);
    let lines: Vec<&str> = moved.lines().collect();
    assert_eq!(lines.len(), 2, "{moved}");
    assert!(
        lines[0].starts_with("sandbox / run in existing box: ratio to bare process")
            && lines[0].ends_with("(+100 %, worse)"),
        "{moved}"
    );
    assert!(lines[1].starts_with("1 of 5 figures moved"), "{moved}");
}

#[test]
fn every_example_runs() {
    // The commands start sandboxes of their own.
    let _shared = shared();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut seen = 0;
    for entry in std::fs::read_dir(format!("{root}/examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // The batch example's program and items have a test of their own (below).
        if name == "prog.py" || name == "items.jsonl" {
            continue;
        }
        let mut args = vec!["run".to_string(), path.to_string_lossy().into_owned()];
        let expected = if name.starts_with("snippet") {
            args.extend(["--input".into(), r#"{"value": 21}"#.into()]);
            "{\"output\":42}\n".to_string()
        } else {
            args.extend(["--stdin".into(), "Ada".into()]);
            "hello, Ada, from a CodeBeaker box\n".to_string()
        };
        let out = std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen += 1;
    }
    assert!(seen >= 11, "an example per language");
}

/// The README's batch example: one program over the items of `examples/items.jsonl`, each
/// item's output in its line of the JSON Lines answer, in order.
#[test]
fn the_batch_example_runs() {
    let _shared = shared();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = std::process::Command::new(BIN)
        .current_dir(root)
        .args(["batch", "--lang", "python", "--code", "examples/prog.py"])
        .args(["--items", "examples/items.jsonl", "-j", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let outputs: Vec<(&str, &Value)> = lines
        .iter()
        .map(|l| (l["id"].as_str().unwrap_or(""), &l["result"]["output"]))
        .collect();
    assert_eq!(
        outputs,
        [
            ("a", &json!({"words": 4, "longest": "quick"})),
            ("b", &json!({"words": 5, "longest": "jumps"})),
            ("c", &json!({"words": 0, "longest": null})),
            ("d", &json!({"words": 7, "longest": "sandboxes"})),
        ],
        "{stderr}"
    );
}

/// A reader that stops early (`| head`) ends the command quietly with 0: no panic, no error.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::io::Read;
    let _shared = shared();
    for args in [
        &[
            "run",
            "--lang",
            "python",
            "-c",
            "for i in range(200000): print(i)",
        ][..],
        &[
            "run",
            "--lang",
            "python",
            "-c",
            "print('x' * 200000)",
            "--json",
        ][..],
        &["languages", "--json"][..],
    ] {
        let mut child = std::process::Command::new(BIN)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 10];
        child
            .stdout
            .take()
            .expect("stdout")
            .read_exact(&mut first)
            .expect("some output");
        // The read end is dropped here: every later write of the command fails with EPIPE.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// `batch` runs every item as a snippet: a language without a snippet mode is refused before the
/// first item, with what to do instead, not failed item by item.
#[test]
fn batch_refuses_a_language_without_snippets_up_front() {
    let _shared = shared();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = std::process::Command::new(BIN)
        .current_dir(root)
        .args(["batch", "--lang", "c", "--code", "examples/hello.c"])
        .args(["--items", "examples/items.jsonl", "--no-progress"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("c has no snippet mode"), "{stderr}");
    assert!(out.stdout.is_empty(), "no item ran");
}

/// A Java program runs whatever its class is called, public or not, as judges run them: the
/// class that declares `main` names the file and is the class that runs.
#[test]
fn java_runs_the_class_that_declares_main() {
    run(async {
        let n = nonce();
        for code in [
            format!("// {n}\nclass Solution {{\n  static int f() {{ return 41; }}\n  public static void main(String[] a) {{ System.out.println(f() + 1); }}\n}}"),
            format!("// {n}\nimport java.util.*;\nclass Helper {{ static int one() {{ return 1; }} }}\nfinal class App {{\n  public static void main(String[] a) {{ System.out.println(41 + Helper.one()); }}\n}}"),
            format!("// {n}\nclass Helper {{ static int one() {{ return 1; }} }}\npublic class Named {{\n  public static void main(String[] a) {{ System.out.println(41 + Helper.one()); }}\n}}"),
        ] {
            let e = run_code("java", &code, None, "").await;
            assert_ok(&e);
            assert_eq!(String::from_utf8_lossy(&e.outcome.stdout), "42\n", "{code}");
        }
    });
}

/// Boxes have no network, so packages come from the host: what the operator installs there
/// (Debian's python3-numpy, a global npm module) is importable in every box.
#[test]
fn packages_installed_on_the_host_are_in_every_box() {
    run(async {
        let e = run_code(
            "python",
            "import numpy\nprint(int(numpy.array([20, 22]).sum()))",
            None,
            "",
        )
        .await;
        assert_ok(&e);
        assert_eq!(String::from_utf8_lossy(&e.outcome.stdout), "42\n");
        // npm is a global module wherever Node's packages put it.
        let e = run_code(
            "javascript",
            "console.log(typeof require.resolve('npm'))",
            None,
            "",
        )
        .await;
        assert_ok(&e);
        assert_eq!(String::from_utf8_lossy(&e.outcome.stdout), "string\n");
    });
}
