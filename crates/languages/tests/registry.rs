//! Registry, discovery and plan behaviour that needs the real machine (toolchains on disk).

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use codebeaker_languages::{LanguageError, Mode, Registry};
use serde_json::json;

/// Every language with a toolchain on this machine (typescript's tsc is not one of them).
const INSTALLED: [&str; 10] = [
    "bash",
    "c",
    "cpp",
    "csharp",
    "go",
    "java",
    "javascript",
    "python",
    "ruby",
    "rust",
];

#[test]
fn discovery_finds_every_installed_toolchain() {
    let registry = Registry::builtin().expect("registry");
    let started = Instant::now();
    let toolchains = registry.discover();
    eprintln!("discovery took {:?}", started.elapsed());
    for language in INSTALLED {
        let toolchain = &toolchains[language];
        assert!(
            toolchain.available,
            "toolchain for {language} missing: {}",
            toolchain.reason.as_deref().unwrap_or_default()
        );
        let version = toolchain.version.as_deref().unwrap_or_default();
        assert!(
            version.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{language}: version {version:?}"
        );
        for path in toolchain.executables.values() {
            assert!(path.is_absolute(), "{language}: {}", path.display());
        }
    }
    // Cached: a second call returns the same map without probing.
    assert!(std::ptr::eq(toolchains, registry.discover()));
}

#[test]
fn python_prefers_debians_interpreter_over_the_path_shim() {
    let toolchain = common::toolchain("python");
    assert_eq!(
        toolchain.executables["python3"],
        Path::new("/usr/bin/python3")
    );
    let plan = common::plan("python", "print(1)", Mode::Script);
    let run = plan.run_step(Path::new("/src"), Path::new("/out"));
    assert_eq!(run.argv, ["/usr/bin/python3", "-B", "/src/main.py"]);
}

#[test]
fn mounts_follow_resolved_executables() {
    let go = common::toolchain("go");
    let real = std::fs::canonicalize(&go.executables["go"]).expect("go resolves");
    let goroot: PathBuf = real.ancestors().nth(2).expect("GOROOT").to_path_buf();
    assert!(
        go.mounts.contains(&goroot),
        "{:?} lacks {}",
        go.mounts,
        goroot.display()
    );
    // Debian links $GOROOT/src into /usr/share: the target must be mounted too.
    let src = std::fs::canonicalize(goroot.join("src")).expect("GOROOT/src");
    assert!(
        go.mounts.iter().any(|m| src.starts_with(m)),
        "{:?} lacks {}",
        go.mounts,
        src.display()
    );

    let csharp = common::toolchain("csharp");
    if csharp.variant.as_deref() == Some("mono") {
        assert!(
            csharp.mounts.contains(&PathBuf::from("/usr/lib/mono")),
            "{:?}",
            csharp.mounts
        );
    }
    let java = common::toolchain("java");
    let jdk = std::fs::canonicalize(&java.executables["java"]).expect("java resolves");
    assert!(
        java.mounts.iter().any(|m| jdk.starts_with(m)),
        "{:?}",
        java.mounts
    );
}

#[test]
fn csharp_uses_dotnet_when_present_else_mono() {
    let toolchain = common::toolchain("csharp");
    let dotnet = [
        "/usr/bin/dotnet",
        "/usr/share/dotnet/dotnet",
        "/usr/lib/dotnet/dotnet",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    let expected = if dotnet { "dotnet" } else { "mono" };
    assert_eq!(toolchain.variant.as_deref(), Some(expected));
}

#[test]
fn script_only_languages_refuse_snippets() {
    for language in ["c", "cpp", "rust", "java", "typescript"] {
        let registry = common::registry();
        let lang = registry.resolve(language).expect("known");
        assert!(!lang.supports_snippets());
        let toolchain = registry.toolchain(language).expect("known");
        let error = lang
            .prepare(toolchain, "int x;", Mode::Snippet)
            .expect_err("snippet refused");
        assert_eq!(
            error.to_string(),
            format!("snippet mode is not supported for {language}; use script mode")
        );
    }
}

#[test]
fn unknown_languages_are_unsupported() {
    let error = common::registry()
        .prepare("cobol", "DISPLAY 'HI'.", Mode::Script)
        .expect_err("cobol");
    assert!(matches!(error, LanguageError::UnsupportedLanguage { .. }));
    let message = error.to_string();
    assert!(
        message.starts_with("Unsupported language 'cobol'. Known languages: bash, c, cpp"),
        "{message}"
    );
}

#[test]
fn missing_toolchains_name_the_package() {
    let registry = Registry::with_overrides(
        r#"
[languages.go]
[[languages.go.toolchains]]
name = "go"
package = "golang-go"
tools = { go = ["/nonexistent/go/bin/go"] }
version = { argv = ["{tool:go}", "version"], regex = 'go(\S+)' }
compile = ["{tool:go}", "build", "-o", "{out_dir}/main", "{source}"]
run = ["{out_dir}/main"]
artifacts = ["main"]
"#,
    )
    .expect("override");
    let toolchain = registry.toolchain("golang").expect("go is registered");
    assert!(!toolchain.available);
    let reason = toolchain.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("go is not installed: install the Debian package golang-go"),
        "{reason}"
    );
    assert!(reason.contains("/nonexistent/go/bin/go"), "{reason}");
    let error = registry
        .prepare("go", "result := 1", Mode::Snippet)
        .expect_err("unavailable");
    assert!(matches!(error, LanguageError::ToolchainUnavailable { .. }));
    assert_eq!(error.to_string(), reason);
}

#[test]
fn a_language_can_be_added_by_configuration_alone() {
    // Perl (essential on Debian) with no snippet support, and a second Python that reuses the
    // Python snippet wrapper with isolated mode.
    let registry = Registry::with_overrides(
        r#"
[languages.perl]
description = "Perl 5"
aliases = ["pl"]
extensions = ["pl"]

[[languages.perl.toolchains]]
name = "perl"
package = "perl"
tools = { perl = ["/usr/bin/perl"] }
version = { argv = ["{tool:perl}", "-e", "print $^V"], regex = 'v(\d+\.\d+\.\d+)' }
run = ["{tool:perl}", "{source}"]

[languages.python-isolated]
aliases = ["pyi"]
extensions = ["pyi"]
main_file = "main.py"
snippet = "python"

[[languages.python-isolated.toolchains]]
name = "cpython"
package = "python3"
tools = { python3 = ["/usr/bin/python3"] }
version = { argv = ["{tool:python3}", "--version"], regex = 'Python (\S+)' }
run = ["{tool:python3}", "-I", "-B", "{source}"]
"#,
    )
    .expect("override");
    assert_eq!(
        registry.detect_extension("x.pl").map(|l| l.name()),
        Some("perl")
    );

    let perl = registry.resolve("pl").expect("alias");
    let toolchain = registry.toolchain("perl").expect("registered");
    assert!(toolchain.available, "{:?}", toolchain.reason);
    let plan = perl
        .prepare(
            toolchain,
            "my $n = <STDIN>; chomp $n; print \"Hello, $n!\\n\";",
            Mode::Script,
        )
        .expect("plan");
    let outcome = common::execute(&plan, "Beaker\n", "");
    assert_eq!(outcome.run().stdout, "Hello, Beaker!\n");

    let plan = registry
        .prepare(
            "pyi",
            "result = {'output': input_data['value'] * 2}",
            Mode::Snippet,
        )
        .expect("plan");
    let outcome = common::execute(&plan, "", r#"{"value":21}"#);
    assert_eq!(outcome.json(), json!({"output": 42}));
}

#[test]
fn cache_keys_follow_the_program_not_the_directory() {
    let a = common::plan("go", "result := 1", Mode::Snippet);
    let b = common::plan("go", "result := 1", Mode::Snippet);
    let c = common::plan("go", "result := 2", Mode::Snippet);
    let script = common::plan("go", "result := 1", Mode::Script);
    let key = a.cache_key().expect("compiled");
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a.cache_key(), b.cache_key());
    assert_ne!(a.cache_key(), c.cache_key());
    assert_ne!(a.cache_key(), script.cache_key());
    assert!(common::plan("python", "result = 1", Mode::Snippet)
        .cache_key()
        .is_none());

    // Steps render for any directories; the key does not depend on them.
    let first = a
        .compile_step(Path::new("/one/src"), Path::new("/one/out"))
        .expect("compile");
    let second = a
        .compile_step(Path::new("/two/src"), Path::new("/two/out"))
        .expect("compile");
    assert!(
        first.argv.contains(&"/one/out/main".to_string()),
        "{:?}",
        first.argv
    );
    assert!(
        second.argv.contains(&"/two/src/main.go".to_string()),
        "{:?}",
        second.argv
    );
    assert_eq!(
        a.run_step(Path::new("/s"), Path::new("/cache/k")).argv,
        ["/cache/k/main"]
    );
    let env: Vec<&str> = first.env.iter().map(|(k, _)| k.as_str()).collect();
    for key in ["PATH", "HOME", "GOCACHE"] {
        assert!(env.contains(&key), "{env:?}");
    }
}

#[test]
fn csharp_on_mono_compiles_the_json_stand_in() {
    let plan = common::plan("csharp", "var result = 1;", Mode::Snippet);
    if plan.toolchain_variant() != "mono" {
        return;
    }
    let names: Vec<&str> = plan.files().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["main.cs", "SystemTextJson.cs"]);
    let compile = plan
        .compile_step(Path::new("/s"), Path::new("/o"))
        .expect("compile");
    assert!(compile
        .argv
        .ends_with(&["/s/main.cs".to_string(), "/s/SystemTextJson.cs".to_string()]));
}

#[test]
fn configuration_examples_in_the_docs_load() {
    let doc = include_str!("../../../docs/languages.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| !block.contains("NAME"))
        .collect();
    assert!(blocks.len() >= 2, "examples found: {}", blocks.len());
    for block in blocks {
        let registry = Registry::with_overrides(block)
            .unwrap_or_else(|e| panic!("example does not load: {e}\n{block}"));
        assert!(registry.resolve("perl").is_ok() || registry.resolve("pascal").is_ok());
    }
}

/// A registry whose `counted` language's version probe appends a line to `marker` each time it
/// runs, beside the built-in languages.
fn counting_registry(marker: &std::path::Path) -> Registry {
    Registry::with_overrides(&format!(
        r#"
[languages.counted]
extensions = ["counted"]

[[languages.counted.toolchains]]
name = "sh"
package = "dash"
tools = {{ sh = ["/bin/sh"] }}
version = {{ argv = ["{{tool:sh}}", "-c", "echo probed >> {marker}; echo counted 1.2.3"], regex = 'counted (\S+)' }}
run = ["{{tool:sh}}", "{{source}}"]
"#,
        marker = marker.display()
    ))
    .expect("override")
}

fn probes_run(marker: &std::path::Path) -> usize {
    std::fs::read_to_string(marker).map_or(0, |t| t.lines().count())
}

#[test]
fn a_registry_told_its_languages_probes_no_other_toolchain() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("probes");
    let mut registry = counting_registry(&marker);
    registry.look_only_for(&["py"]).expect("python is known");
    let toolchains = registry.discover();
    assert!(toolchains["python"].available, "{:?}", toolchains["python"]);
    assert_eq!(probes_run(&marker), 0, "the other language was probed");
    let counted = &toolchains["counted"];
    assert!(!counted.available);
    assert!(
        counted
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("not looked for") && r.contains("python")),
        "{counted:?}"
    );
    let error = counting_registry(&marker)
        .look_only_for(&["cobol"])
        .expect_err("an unknown language");
    assert!(error.to_string().contains("cobol"), "{error}");
}

#[test]
fn version_probes_are_kept_until_an_executable_changes() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("probes");
    let file = dir.path().join("toolchains.json");
    let discover = |reuse: bool| {
        let mut registry = counting_registry(&marker);
        registry.keep_probes_in(&file, reuse);
        let toolchain = registry.discover()["counted"].clone();
        assert!(toolchain.available, "{toolchain:?}");
        assert_eq!(toolchain.version.as_deref(), Some("1.2.3"));
    };
    discover(true);
    assert_eq!(probes_run(&marker), 1);
    // A second command: the kept answer, no probe.
    discover(true);
    assert_eq!(probes_run(&marker), 1, "the kept answer was not used");
    // Fresh probes (doctor, languages) run whatever is kept.
    discover(false);
    assert_eq!(probes_run(&marker), 2);
    // A kept answer names the executables it was probed with: another one is probed again.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("/bin/sh", "/bin/other-sh")).unwrap();
    discover(true);
    assert_eq!(
        probes_run(&marker),
        3,
        "an answer for another executable was reused"
    );
}
