//! Script mode (stdin in, stdout out) per language, and errors that point at the user's lines.

use crate::common;

use codebeaker_languages::Mode;

const GREETERS: [(&str, &str); 10] = [
    ("python", "import sys\nname = sys.stdin.readline().strip()\nprint(f'Hello, {name}!')\n"),
    (
        "javascript",
        "const name = require('fs').readFileSync(0, 'utf8').trim();\nconsole.log(`Hello, ${name}!`);\n",
    ),
    (
        "go",
        "package main\n\nimport (\n\t\"bufio\"\n\t\"fmt\"\n\t\"os\"\n\t\"strings\"\n)\n\nfunc main() {\n\tline, _ := bufio.NewReader(os.Stdin).ReadString('\\n')\n\tfmt.Printf(\"Hello, %s!\\n\", strings.TrimSpace(line))\n}\n",
    ),
    (
        "csharp",
        "using System;\n\nclass Program\n{\n    static void Main()\n    {\n        var name = Console.ReadLine().Trim();\n        Console.WriteLine($\"Hello, {name}!\");\n    }\n}\n",
    ),
    ("bash", "read -r name\necho \"Hello, $name!\"\n"),
    ("ruby", "name = $stdin.gets.strip\nputs \"Hello, #{name}!\"\n"),
    (
        "c",
        "#include <stdio.h>\n#include <string.h>\n\nint main(void) {\n    char name[64];\n    if (!fgets(name, sizeof name, stdin)) return 1;\n    name[strcspn(name, \"\\n\")] = 0;\n    printf(\"Hello, %s!\\n\", name);\n    return 0;\n}\n",
    ),
    (
        "cpp",
        "#include <iostream>\n#include <string>\n\nint main() {\n    std::string name;\n    std::getline(std::cin, name);\n    std::cout << \"Hello, \" << name << \"!\" << std::endl;\n}\n",
    ),
    (
        "rust",
        "use std::io::BufRead;\n\nfn main() {\n    let mut name = String::new();\n    std::io::stdin().lock().read_line(&mut name).unwrap();\n    println!(\"Hello, {}!\", name.trim());\n}\n",
    ),
    (
        "java",
        "import java.util.Scanner;\n\npublic class Greeter {\n    public static void main(String[] args) {\n        String name = new Scanner(System.in).nextLine().trim();\n        System.out.println(\"Hello, \" + name + \"!\");\n    }\n}\n",
    ),
];

#[test]
fn every_language_greets_from_stdin() {
    for (language, code) in GREETERS {
        let (plan, outcome) = common::script(language, code, "Beaker\n");
        let run = outcome.run();
        assert!(
            run.status.success(),
            "{language}: {}\n{}",
            run.status,
            run.stderr
        );
        assert_eq!(run.stdout, "Hello, Beaker!\n", "{language}");
        assert_eq!(
            plan.has_compile_step(),
            plan.cache_key().is_some(),
            "{language}"
        );
        assert!(
            outcome.result.is_none(),
            "{language}: no fd 4 in script mode"
        );
    }
}

#[test]
fn java_main_file_is_named_after_the_public_class() {
    let plan = common::plan("java", GREETERS[9].1, Mode::Script);
    assert_eq!(plan.main_file(), "Greeter.java");
    assert_eq!(plan.artifacts(), ["Greeter.class"]);
}

#[test]
fn csharp_scripts_can_use_system_text_json() {
    let code = "using System;\nusing System.Text.Json;\n\nclass P\n{\n    static void Main()\n    {\n        var doc = JsonDocument.Parse(Console.In.ReadToEnd());\n        Console.WriteLine(JsonSerializer.Serialize(new { sum = doc.RootElement.GetProperty(\"a\").GetInt32() + 1 }));\n    }\n}\n";
    let (_, outcome) = common::script("csharp", code, r#"{"a":41}"#);
    assert_eq!(outcome.run().stdout.trim(), r#"{"sum":42}"#);
}

#[test]
fn runtime_errors_name_the_user_line() {
    for (language, code, needles) in [
        ("python", "x = 1\nraise RuntimeError('boom')\n", vec!["main.py\", line 2", "RuntimeError: boom"]),
        ("javascript", "const x = 1;\nthrow new Error('boom');\n", vec!["main.js:2", "Error: boom"]),
        (
            "go",
            "package main\n\nfunc main() {\n\tvar a []int\n\t_ = a[3]\n}\n",
            vec!["main.go:5", "index out of range"],
        ),
        (
            "csharp",
            "using System;\nclass P {\n    static void Main() {\n        throw new InvalidOperationException(\"boom\");\n    }\n}\n",
            vec!["main.cs:4", "InvalidOperationException: boom"],
        ),
        ("bash", "echo start\nundefined_cmd_xyz\n", vec!["main.sh: line 2", "command not found"]),
        ("ruby", "x = 1\nraise 'boom'\n", vec!["main.rb:2", "boom (RuntimeError)"]),
        (
            "c",
            "#include <assert.h>\nint main(void) {\n    assert(1 == 2);\n    return 0;\n}\n",
            vec!["main.c:3", "Assertion"],
        ),
        (
            "cpp",
            "#include <cassert>\nint main() {\n    assert(1 == 2);\n}\n",
            vec!["main.cpp:3", "Assertion"],
        ),
        (
            "rust",
            "fn main() {\n    let v: Vec<i32> = Vec::new();\n    println!(\"{}\", v[3]);\n}\n",
            vec!["main.rs:3", "index out of bounds"],
        ),
        (
            "java",
            "public class Main {\n    public static void main(String[] args) {\n        throw new IllegalStateException(\"boom\");\n    }\n}\n",
            vec!["Main.java:3", "IllegalStateException: boom"],
        ),
    ] {
        let (plan, outcome) = common::script(language, code, "");
        let run = outcome.run();
        assert!(!run.status.success(), "{language} should fail");
        let stderr = outcome.run_error(&plan);
        for needle in needles {
            assert!(stderr.contains(needle), "{language}: {needle:?} not in\n{stderr}");
        }
    }
}

#[test]
fn compile_errors_name_the_user_line() {
    for (language, code, needle) in [
        (
            "go",
            "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(undefinedThing)\n}\n",
            "main.go:6:14: undefined: undefinedThing",
        ),
        (
            "csharp",
            "class P {\n    static void Main() {\n        int x = y;\n    }\n}\n",
            "main.cs(3,17): error CS0103",
        ),
        ("c", "int main(void) {\n    int x = y;\n    return x;\n}\n", "main.c:2:13: error"),
        ("cpp", "int main() {\n    int x = y;\n    return x;\n}\n", "main.cpp:2:13: error"),
        ("rust", "fn main() {\n    let x: i32 = \"a\";\n}\n", "main.rs:2:18"),
        (
            "java",
            "public class Main {\n    public static void main(String[] args) {\n        int x = y;\n    }\n}\n",
            "Main.java:3: error: cannot find symbol",
        ),
    ] {
        let (plan, outcome) = common::script(language, code, "");
        let diagnostics = outcome.compile_error(&plan);
        assert!(diagnostics.contains(needle), "{language}: {needle:?} not in\n{diagnostics}");
        assert!(
            !diagnostics.contains(&*outcome.src_dir.to_string_lossy()),
            "{language}: absolute paths leak:\n{diagnostics}"
        );
    }
}

#[test]
fn typescript_runs_when_tsc_is_installed() {
    let toolchain = common::registry()
        .toolchain("ts")
        .expect("typescript is registered");
    if !toolchain.available {
        // tsc is not part of this machine's toolchain set; the reason must say what to install.
        let reason = toolchain.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("node-typescript"), "{reason}");
        eprintln!("typescript unavailable here: {reason}");
        return;
    }
    let (_, outcome) = common::script(
        "typescript",
        "const n: number = 41;\nconsole.log(n + 1);\n",
        "",
    );
    assert_eq!(outcome.run().stdout, "42\n");
}

#[test]
fn files_beside_the_main_one_are_compiled_with_it_and_keyed() {
    use codebeaker_languages::PlanFile;
    let file = |name: &str, text: &str| PlanFile {
        name: name.into(),
        contents: text.as_bytes().to_vec(),
        executable: false,
    };
    let main = "#include \"greet.h\"\nint main(void) { greet(\"Beaker\"); return 0; }\n";
    let mut plan = common::plan("c", main, Mode::Script);
    let alone = plan.cache_key().expect("compiled").to_string();
    plan.add_files(vec![
        file("greet.h", "void greet(const char *name);\n"),
        file(
            "lib/greet.c",
            "#include <stdio.h>\nvoid greet(const char *name) { printf(\"Hello, %s!\\n\", name); }\n",
        ),
    ])
    .expect("the files are accepted");
    assert_ne!(
        plan.cache_key(),
        Some(alone.as_str()),
        "the key covers them"
    );
    let outcome = common::execute(&plan, "", "");
    let run = outcome.run();
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    assert_eq!(run.stdout, "Hello, Beaker!\n");

    for (name, why) in [
        ("../escape.c", "`..`"),
        ("/etc/passwd", "relative"),
        ("a//b.c", "empty path component"),
        ("", "empty"),
        ("main.c", "main file"),
    ] {
        let mut plan = common::plan("c", main, Mode::Script);
        let error = plan
            .add_files(vec![file(name, "x")])
            .expect_err(&format!("{name:?} must be refused"));
        assert!(error.to_string().contains(why), "{name:?}: {error}");
    }
}
