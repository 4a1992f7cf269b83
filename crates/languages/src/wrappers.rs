//! Snippet wrappers: the programs that implement the snippet ABI around a user's code.
//!
//! A wrapper reads the whole input JSON from file descriptor 3 until end of file, binds it to
//! `input_data`, runs the user's code, and writes the JSON serialization of `result` to file
//! descriptor 4 (once, then closes it) and exits 0. If the code never sets `result` it writes
//! nothing to fd 4, prints `snippet did not set `result`` on stderr and exits 1. Exceptions and
//! panics exit non-zero with the language's own message on stderr, pointing at the user's lines.
//!
//! Interpreted languages keep the user's code in a file of its own (`snippet.py`, ...) that the
//! wrapper loads under that name. Compiled languages inline the code into the wrapper and use the
//! compiler's line directives (`//line` in Go, `#line` in C#), so diagnostics and stack traces name
//! `snippet.go` / `snippet.cs` with the user's own line numbers.

use std::sync::LazyLock;

use regex::Regex;

/// A snippet wrapper implementation, chosen by a language's `snippet = "..."` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnippetWrapper {
    /// `exec` in a fresh namespace (`snippet.py`).
    Python,
    /// `vm.Script` run in the main realm (`snippet.js`); `result` may be `const`, `let`, `var` or
    /// an undeclared assignment.
    JavaScript,
    /// Code inlined into a function body; `input_data` is `map[string]interface{}`.
    Go,
    /// Code inlined into a method body; `input_data` is a `System.Text.Json.JsonElement`.
    CSharp,
    /// `snippet.sh` sourced into the wrapper shell; `input_data` and `result` are JSON text.
    Bash,
    /// `snippet.rb` evaluated in a fresh binding.
    Ruby,
}

/// A file the wrapper adds to the plan.
pub(crate) struct WrappedFile {
    pub name: String,
    pub contents: String,
}

impl SnippetWrapper {
    /// Every wrapper, in the order they are documented.
    pub const ALL: [SnippetWrapper; 6] = [
        SnippetWrapper::Python,
        SnippetWrapper::JavaScript,
        SnippetWrapper::Go,
        SnippetWrapper::CSharp,
        SnippetWrapper::Bash,
        SnippetWrapper::Ruby,
    ];

    /// The name used in the registry's `snippet` key.
    pub fn name(self) -> &'static str {
        match self {
            SnippetWrapper::Python => "python",
            SnippetWrapper::JavaScript => "javascript",
            SnippetWrapper::Go => "go",
            SnippetWrapper::CSharp => "csharp",
            SnippetWrapper::Bash => "bash",
            SnippetWrapper::Ruby => "ruby",
        }
    }

    /// Looks a wrapper up by its registry name.
    pub fn from_name(name: &str) -> Option<SnippetWrapper> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Changes whenever the generated code changes, so compile cache keys change with it.
    pub fn version(self) -> &'static str {
        match self {
            SnippetWrapper::Python => "python-1",
            SnippetWrapper::JavaScript => "javascript-1",
            SnippetWrapper::Go => "go-1",
            SnippetWrapper::CSharp => "csharp-1",
            SnippetWrapper::Bash => "bash-1",
            SnippetWrapper::Ruby => "ruby-1",
        }
    }

    /// The file name under which diagnostics report the user's code.
    pub fn user_file(self) -> &'static str {
        match self {
            SnippetWrapper::Python => "<snippet>",
            SnippetWrapper::JavaScript => "snippet.js",
            SnippetWrapper::Go => "snippet.go",
            SnippetWrapper::CSharp => "snippet.cs",
            SnippetWrapper::Bash => "snippet.sh",
            SnippetWrapper::Ruby => "snippet.rb",
        }
    }

    /// Produces the main file (named `main_file`) and any support files for `code`.
    pub(crate) fn wrap(self, code: &str, main_file: &str) -> Vec<WrappedFile> {
        let file = |name: &str, contents: String| WrappedFile {
            name: name.to_string(),
            contents,
        };
        match self {
            SnippetWrapper::Python => vec![
                file(main_file, PYTHON_MAIN.to_string()),
                file("snippet.py", code.to_string()),
            ],
            SnippetWrapper::JavaScript => vec![
                file(main_file, JAVASCRIPT_MAIN.to_string()),
                file("snippet.js", code.to_string()),
            ],
            SnippetWrapper::Ruby => vec![
                file(main_file, RUBY_MAIN.to_string()),
                file("snippet.rb", code.to_string()),
            ],
            SnippetWrapper::Bash => vec![
                file(main_file, BASH_MAIN.to_string()),
                file("snippet.sh", code.to_string()),
            ],
            SnippetWrapper::Go => vec![file(main_file, wrap_go(code, main_file))],
            SnippetWrapper::CSharp => vec![file(main_file, wrap_csharp(code))],
        }
    }

    /// For script mode: the launcher that runs a whole program as if it were `main_file` in the
    /// working directory (which is also first on its import path), with the program's code in a
    /// file beside it; `None` for languages whose programs run as they are. A launcher writes
    /// `syntax` on descriptor 4 when the program does not compile, and closes it before the
    /// program starts.
    pub(crate) fn launch(self, code: &str, main_file: &str) -> Option<Vec<WrappedFile>> {
        let file = |name: &str, contents: String| WrappedFile {
            name: name.to_string(),
            contents,
        };
        match self {
            SnippetWrapper::Python => Some(vec![
                file(main_file, PYTHON_SCRIPT.to_string()),
                file("program.py", code.to_string()),
            ]),
            SnippetWrapper::JavaScript => Some(vec![
                file(main_file, JAVASCRIPT_SCRIPT.to_string()),
                file("program.js", code.to_string()),
            ]),
            SnippetWrapper::Ruby => Some(vec![
                file(main_file, RUBY_SCRIPT.to_string()),
                file("program.rb", code.to_string()),
            ]),
            _ => None,
        }
    }

    /// True when a compiler's output says the snippet never declared `result` (compiled wrappers
    /// turn that into a compile error rather than a run-time message).
    pub(crate) fn result_missing_in(self, diagnostics: &str) -> bool {
        match self {
            SnippetWrapper::CSharp => CSHARP_MISSING_RESULT.is_match(diagnostics),
            _ => false,
        }
    }
}

const PYTHON_MAIN: &str = include_str!("../assets/python/main.py");
const PYTHON_SCRIPT: &str = include_str!("../assets/python/script.py");
const JAVASCRIPT_MAIN: &str = include_str!("../assets/javascript/main.js");
const JAVASCRIPT_SCRIPT: &str = include_str!("../assets/javascript/script.js");
const RUBY_MAIN: &str = include_str!("../assets/ruby/main.rb");
const RUBY_SCRIPT: &str = include_str!("../assets/ruby/script.rb");
const BASH_MAIN: &str = include_str!("../assets/bash/main.sh");

/// Files a registry entry can reference as `builtin:NAME` in a toolchain's `files`.
pub(crate) fn builtin_asset(name: &str) -> Option<&'static str> {
    match name {
        "csharp/SystemTextJson.cs" => Some(include_str!("../assets/csharp/SystemTextJson.cs")),
        _ => None,
    }
}

/// mcs: `main.cs(12,16): error CS0103: The name `result' does not exist in the current context`;
/// Roslyn: `... error CS0103: The name 'result' does not exist in the current context`.
static CSHARP_MISSING_RESULT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"main\.cs\(\d+,\d+\): error CS0103: The name .result. does not exist")
        .expect("static regex")
});

/// Leading import/using lines split off the user's code so they can be placed at file level.
struct Hoisted {
    /// `(1-based user line, text)` of each hoisted line.
    lines: Vec<(usize, String)>,
    /// The user's code with hoisted lines blanked, so line numbers are unchanged.
    body: Vec<String>,
}

/// Splits leading lines accepted by `is_directive` (blank and `//` comment lines may sit among
/// them) off `code`. `block_open` starts a multi-line directive that runs to a line ending in `)`.
fn hoist(
    code: &str,
    is_directive: &dyn Fn(&str) -> bool,
    block_open: &dyn Fn(&str) -> bool,
) -> Hoisted {
    let mut body: Vec<String> = code.lines().map(str::to_string).collect();
    let mut lines = Vec::new();
    let mut in_block = false;
    for (index, line) in body.iter_mut().enumerate() {
        let trimmed = line.trim().to_string();
        let trimmed = trimmed.as_str();
        if in_block {
            lines.push((index + 1, std::mem::take(line)));
            if trimmed.starts_with(')') {
                in_block = false;
            }
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with("//") {
            continue;
        }
        if block_open(trimmed) {
            in_block = true;
            lines.push((index + 1, std::mem::take(line)));
        } else if is_directive(trimmed) {
            lines.push((index + 1, std::mem::take(line)));
        } else {
            break;
        }
    }
    Hoisted { lines, body }
}

/// Packages every Go snippet may use without importing them, with a symbol that marks each as used.
const GO_PREIMPORTS: [(&str, &str); 9] = [
    ("encoding/json", "json.Marshal"),
    ("errors", "errors.New"),
    ("fmt", "fmt.Sprint"),
    ("math", "math.Abs"),
    ("os", "os.Exit"),
    ("sort", "sort.Ints"),
    ("strconv", "strconv.Itoa"),
    ("strings", "strings.Contains"),
    ("time", "time.Now"),
];

static GO_IMPORT_SPEC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[\s(])(?:([A-Za-z_][A-Za-z0-9_]*|\.)\s+)?"([^"]+)""#).expect("static regex")
});

fn wrap_go(code: &str, main_file: &str) -> String {
    let hoisted = hoist(
        code,
        &|line| {
            line.starts_with("import ")
                || line.starts_with("import\"")
                || line.starts_with("import\t")
        },
        &|line| {
            let rest = line.strip_prefix("import").map(str::trim_start);
            matches!(rest, Some(r) if r.starts_with('(') && !r.contains(')'))
        },
    );
    // A user import of a pre-imported package under its own name replaces ours (Go rejects the
    // same name imported twice).
    let mut user_paths = Vec::new();
    for (_, line) in &hoisted.lines {
        let trimmed = line.trim();
        let specs = trimmed.strip_prefix("import").unwrap_or(trimmed);
        for spec in GO_IMPORT_SPEC.captures_iter(specs) {
            let path = spec.get(2).map_or("", |m| m.as_str());
            let default_name = path.rsplit('/').next().unwrap_or(path);
            match spec.get(1).map(|m| m.as_str()) {
                None => user_paths.push(path.to_string()),
                Some(alias) if alias == default_name => user_paths.push(path.to_string()),
                Some(_) => {}
            }
        }
    }
    let preimports: Vec<(&str, &str)> = GO_PREIMPORTS
        .iter()
        .copied()
        .filter(|(path, _)| !user_paths.iter().any(|p| p == path))
        .collect();

    let mut out = Lines::default();
    out.push("// Code generated by CodeBeaker for a Go snippet. DO NOT EDIT.");
    out.push("");
    out.push("package main");
    out.push("");
    out.push("import (");
    for line in [
        "\t__cb_bytes \"bytes\"",
        "\t__cb_json \"encoding/json\"",
        "\t__cb_fmt \"fmt\"",
        "\t__cb_io \"io\"",
        "\t__cb_os \"os\"",
        "\t__cb_syscall \"syscall\"",
    ] {
        out.push(line);
    }
    for (path, _) in &preimports {
        out.push(&format!("\t\"{path}\""));
    }
    out.push(")");
    for (line_no, text) in &hoisted.lines {
        out.push(&format!("//line snippet.go:{line_no}:1"));
        out.push(text);
    }
    out.resume(main_file);
    out.push("");
    for (_, symbol) in &preimports {
        out.push(&format!("var _ = {symbol}"));
    }
    out.push("");
    out.push("type __cbUnset struct{}");
    out.push("");
    out.push("func __cbSnippet(input_data map[string]interface{}) (__cbResult interface{}) {");
    out.push("\t__cbResult = __cbUnset{}");
    out.push("\tvar result interface{} = __cbUnset{}");
    out.push("\t_ = result");
    out.push("\t_ = input_data");
    out.push("\t{");
    out.push("//line snippet.go:1:1");
    for line in &hoisted.body {
        out.push(line);
    }
    out.resume(main_file);
    out.push("\t\t__cbResult = result");
    out.push("\t}");
    out.push("\treturn");
    out.push("}");
    out.push(GO_MAIN);
    out.text
}

const GO_MAIN: &str = r#"
func main() {
	__cb_syscall.CloseOnExec(3)
	__cb_syscall.CloseOnExec(4)
	raw, err := __cb_io.ReadAll(__cb_os.NewFile(3, "snippet-input"))
	if err != nil {
		__cb_fmt.Fprintf(__cb_os.Stderr, "codebeaker: cannot read the snippet input: %v\n", err)
		__cb_os.Exit(1)
	}
	var input map[string]interface{}
	if len(__cb_bytes.TrimSpace(raw)) > 0 {
		if err := __cb_json.Unmarshal(raw, &input); err != nil {
			__cb_fmt.Fprintf(__cb_os.Stderr, "codebeaker: the snippet input must be a JSON object: %v\n", err)
			__cb_os.Exit(1)
		}
	}
	value := __cbSnippet(input)
	if _, unset := value.(__cbUnset); unset {
		__cb_fmt.Fprintln(__cb_os.Stderr, "snippet did not set `result`")
		__cb_os.Exit(1)
	}
	var buffer __cb_bytes.Buffer
	encoder := __cb_json.NewEncoder(&buffer)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(value); err != nil {
		__cb_fmt.Fprintf(__cb_os.Stderr, "codebeaker: `result` is not JSON-serializable: %v\n", err)
		__cb_os.Exit(1)
	}
	output := __cb_os.NewFile(4, "snippet-output")
	if _, err := output.Write(__cb_bytes.TrimSuffix(buffer.Bytes(), []byte("\n"))); err != nil {
		__cb_fmt.Fprintf(__cb_os.Stderr, "codebeaker: cannot write the snippet result: %v\n", err)
		__cb_os.Exit(1)
	}
	output.Close()
}"#;

static CSHARP_USING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^using\s+(?:static\s+)?[A-Za-z_][A-Za-z0-9_.]*\s*(?:=\s*[^;()]+)?;\s*(?://.*)?$")
        .expect("static regex")
});

fn wrap_csharp(code: &str) -> String {
    let hoisted = hoist(code, &|line| CSHARP_USING.is_match(line), &|_| false);
    let mut out = Lines::default();
    out.push("// Code generated by CodeBeaker for a C# snippet. DO NOT EDIT.");
    out.push("#pragma warning disable 105, 162, 168, 219, 1998");
    for namespace in [
        "System",
        "System.Collections.Generic",
        "System.Globalization",
        "System.IO",
        "System.Linq",
        "System.Text",
        "System.Text.Json",
    ] {
        out.push(&format!("using {namespace};"));
    }
    for (line_no, text) in &hoisted.lines {
        out.push(&format!("#line {line_no} \"snippet.cs\""));
        out.push(text);
    }
    out.push("#line default");
    out.push("");
    out.push("static class __CbSnippet");
    out.push("{");
    out.push("    static object __CbRun(JsonElement input_data)");
    out.push("    {");
    out.push("#line 1 \"snippet.cs\"");
    for line in &hoisted.body {
        out.push(line);
    }
    out.push("#line default");
    out.push("        return result;");
    out.push("    }");
    out.push(CSHARP_MAIN);
    out.push("}");
    out.text
}

const CSHARP_MAIN: &str = r#"
    static int Main()
    {
        string raw;
        try
        {
            using (var stream = new FileStream("/proc/self/fd/3", FileMode.Open, FileAccess.Read))
            using (var reader = new StreamReader(stream, new UTF8Encoding(false)))
                raw = reader.ReadToEnd();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine("codebeaker: cannot read the snippet input: " + e.Message);
            return 1;
        }
        JsonElement input = default(JsonElement);
        if (raw.Trim().Length > 0)
        {
            try
            {
                input = JsonSerializer.Deserialize<JsonElement>(raw);
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("codebeaker: the snippet input is not valid JSON: " + e.Message);
                return 1;
            }
        }
        object value;
        try
        {
            value = __CbRun(input);
        }
        catch (Exception e)
        {
            Console.Out.Flush();
            Console.Error.WriteLine("Unhandled exception. " + e);
            return 1;
        }
        string json;
        try
        {
            json = JsonSerializer.Serialize(value);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine("codebeaker: `result` is not JSON-serializable: " + e.Message);
            return 1;
        }
        byte[] bytes = new UTF8Encoding(false).GetBytes(json);
        try
        {
            using (var output = new FileStream("/proc/self/fd/4", FileMode.Open, FileAccess.Write))
                output.Write(bytes, 0, bytes.Length);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine("codebeaker: cannot write the snippet result: " + e.Message);
            return 1;
        }
        return 0;
    }"#;

/// A string builder that knows which line it is on, to emit line directives that resume the
/// generated file's own numbering.
#[derive(Default)]
struct Lines {
    text: String,
    count: usize,
}

impl Lines {
    fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        self.count += 1 + line.matches('\n').count();
    }

    /// `//line main.go:N:1` where N is the number of the line after the directive.
    fn resume(&mut self, main_file: &str) {
        let next = self.count + 2;
        self.push(&format!("//line {main_file}:{next}:1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_hoists_imports_and_keeps_line_numbers() {
        let code = "import \"strings\"\nimport (\n\tm \"math\"\n)\nx := strings.ToUpper(\"a\")\n_ = m.Pi\nresult := x";
        let generated = wrap_go(code, "main.go");
        // pre-imported "strings" is dropped in favour of the user's own import
        assert!(!generated.contains("\t\"strings\"\n"));
        assert!(generated.contains("//line snippet.go:1:1\nimport \"strings\""));
        assert!(generated.contains("//line snippet.go:3:1\n\tm \"math\""));
        // the body keeps five lines before `result` so it stays on user line 7
        let body = generated
            .split("//line snippet.go:1:1\n")
            .nth(2)
            .expect("body directive");
        assert_eq!(body.lines().nth(6), Some("result := x"));
        // resumed numbering is the real line number
        for (index, line) in generated.lines().enumerate() {
            if let Some(n) = line.strip_prefix("//line main.go:") {
                let n = n.strip_suffix(":1").expect("column");
                assert_eq!(n.parse::<usize>().expect("number"), index + 2);
            }
        }
    }

    #[test]
    fn csharp_hoists_using_directives_only() {
        let code = "using System.Text.RegularExpressions;\nusing (var s = new MemoryStream()) { }\nvar result = 1;";
        let generated = wrap_csharp(code);
        assert!(generated.contains("#line 1 \"snippet.cs\"\nusing System.Text.RegularExpressions;"));
        assert!(generated.contains("using (var s = new MemoryStream()) { }"));
    }

    #[test]
    fn wrapper_names_round_trip() {
        for wrapper in SnippetWrapper::ALL {
            assert_eq!(SnippetWrapper::from_name(wrapper.name()), Some(wrapper));
        }
    }
}
