//! Argv templates with `{placeholder}`s.
//!
//! Templates are parsed when the registry is loaded, so a typo such as `{srcdir}` is reported
//! with the key it appears under instead of surfacing at run time.
//!
//! | placeholder | expands to |
//! |---|---|
//! | `{src_dir}` | absolute directory holding the plan's files |
//! | `{out_dir}` | absolute directory for compiled artifacts |
//! | `{source}` | `{src_dir}/{main_file}` |
//! | `{sources}` | one argv element per plan file with the main file's extension (whole element only) |
//! | `{main_file}` | the main file's name, e.g. `Main.java` |
//! | `{stem}` | the main file's name without extension, e.g. `Main` |
//! | `{tool:NAME}` | absolute path of toolchain executable `NAME` |
//! | `{{`, `}}` | a literal brace |

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    SrcDir,
    OutDir,
    Source,
    Sources,
    MainFile,
    Stem,
    Tool(String),
}

/// Which placeholders a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// Everything, including `{sources}` as a whole element (compile and run argv).
    Argv,
    /// Everything except `{sources}` (env values, artifact names).
    Scalar,
    /// Only `{tool:NAME}` (version probes run before any plan exists).
    ToolsOnly,
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    segments: Vec<Segment>,
    text: String,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Values the placeholders expand to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context<'a> {
    pub src_dir: Option<&'a Path>,
    pub out_dir: Option<&'a Path>,
    pub main_file: Option<&'a str>,
    pub sources: &'a [String],
    pub tools: Option<&'a BTreeMap<String, PathBuf>>,
}

impl Template {
    /// Parses `text`, checking placeholders against `allowed` and tool names against `tools`.
    pub(crate) fn parse(
        text: &str,
        allowed: Allowed,
        tools: &dyn Fn(&str) -> bool,
    ) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if matches!(chars.peek(), Some((_, '{'))) => {
                    chars.next();
                    literal.push('{');
                }
                '}' if matches!(chars.peek(), Some((_, '}'))) => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(format!("unmatched '}}' in \"{text}\" (write '}}}}')")),
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed '{{' in \"{text}\""))?;
                    let name = &rest[..end];
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                    let segment = match name {
                        "src_dir" => Segment::SrcDir,
                        "out_dir" => Segment::OutDir,
                        "source" => Segment::Source,
                        "sources" => Segment::Sources,
                        "main_file" => Segment::MainFile,
                        "stem" => Segment::Stem,
                        _ => match name.strip_prefix("tool:") {
                            Some(tool) if tools(tool) => Segment::Tool(tool.to_string()),
                            Some(tool) => {
                                return Err(format!(
                                    "{{tool:{tool}}} in \"{text}\" names no entry of `tools`"
                                ))
                            }
                            None => {
                                return Err(format!(
                                    "unknown placeholder {{{name}}} in \"{text}\" (known: {{src_dir}}, {{out_dir}}, {{source}}, {{sources}}, {{main_file}}, {{stem}}, {{tool:NAME}})"
                                ))
                            }
                        },
                    };
                    if allowed == Allowed::ToolsOnly && !matches!(segment, Segment::Tool(_)) {
                        return Err(format!(
                            "only {{tool:NAME}} may be used in \"{text}\" (probes run before any plan exists)"
                        ));
                    }
                    if segment == Segment::Sources
                        && (allowed != Allowed::Argv || text != "{sources}")
                    {
                        return Err(format!(
                            "{{sources}} must be a whole argv element, found \"{text}\""
                        ));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(segment);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template {
            segments,
            text: text.to_string(),
        })
    }

    /// The template as written in the registry.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Expands the template into argv elements (several for `{sources}`).
    pub(crate) fn render_into(&self, ctx: &Context<'_>, out: &mut Vec<String>) {
        if self.segments == [Segment::Sources] {
            let src = ctx.src_dir.map(path_str).unwrap_or_default();
            out.extend(ctx.sources.iter().map(|name| join(&src, name)));
            return;
        }
        out.push(self.render(ctx));
    }

    /// Expands the template into one string.
    pub(crate) fn render(&self, ctx: &Context<'_>) -> String {
        let mut s = String::new();
        let src = ctx.src_dir.map(path_str).unwrap_or_default();
        let main_file = ctx.main_file.unwrap_or_default();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => s.push_str(text),
                Segment::SrcDir => s.push_str(&src),
                Segment::OutDir => s.push_str(&ctx.out_dir.map(path_str).unwrap_or_default()),
                Segment::Source => s.push_str(&join(&src, main_file)),
                Segment::Sources => {
                    let all: Vec<String> = ctx.sources.iter().map(|n| join(&src, n)).collect();
                    s.push_str(&all.join(" "));
                }
                Segment::MainFile => s.push_str(main_file),
                Segment::Stem => s.push_str(stem(main_file)),
                Segment::Tool(name) => {
                    if let Some(path) = ctx.tools.and_then(|tools| tools.get(name)) {
                        s.push_str(&path_str(path));
                    }
                }
            }
        }
        s
    }
}

/// `Main.java` -> `Main`.
pub(crate) fn stem(file: &str) -> &str {
    match file.rfind('.') {
        Some(0) | None => file,
        Some(dot) => &file[..dot],
    }
}

fn path_str(path: &Path) -> String {
    let s = path.to_string_lossy().into_owned();
    if s.len() > 1 {
        s.trim_end_matches('/').to_string()
    } else {
        s
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_tool(_: &str) -> bool {
        true
    }

    #[test]
    fn renders_placeholders_and_braces() {
        let t = Template::parse("-out:{out_dir}/{stem}.exe{{x}}", Allowed::Argv, &any_tool)
            .expect("parse");
        let ctx = Context {
            out_dir: Some(Path::new("/o/")),
            main_file: Some("main.cs"),
            ..Context::default()
        };
        assert_eq!(t.render(&ctx), "-out:/o/main.exe{x}");
    }

    #[test]
    fn sources_expand_to_several_elements() {
        let t = Template::parse("{sources}", Allowed::Argv, &any_tool).expect("parse");
        let sources = vec!["a.cs".to_string(), "b.cs".to_string()];
        let ctx = Context {
            src_dir: Some(Path::new("/s")),
            sources: &sources,
            ..Context::default()
        };
        let mut argv = Vec::new();
        t.render_into(&ctx, &mut argv);
        assert_eq!(argv, ["/s/a.cs", "/s/b.cs"]);
    }

    #[test]
    fn rejects_bad_templates() {
        let none = |_: &str| false;
        assert!(Template::parse("{srcdir}", Allowed::Argv, &any_tool)
            .unwrap_err()
            .contains("unknown placeholder {srcdir}"));
        assert!(Template::parse("{tool:gcc}", Allowed::Argv, &none)
            .unwrap_err()
            .contains("names no entry"));
        assert!(Template::parse("x{sources}", Allowed::Argv, &any_tool).is_err());
        assert!(Template::parse("{src_dir}", Allowed::ToolsOnly, &any_tool).is_err());
        assert!(Template::parse("{open", Allowed::Argv, &any_tool).is_err());
    }
}
