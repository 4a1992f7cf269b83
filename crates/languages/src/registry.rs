//! The language registry: the built-in TOML plus optional overrides, checked and indexed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;

use crate::config::{self, LanguageConfig, ToolchainConfig};
use crate::plan::{Mode, Plan};
use crate::template::{Allowed, Template};
use crate::toolchain::Toolchain;
use crate::warm::WarmWorker;
use crate::wrappers::{self, SnippetWrapper};
use crate::LanguageError;

/// The registry compiled into the binary.
pub const BUILTIN_REGISTRY: &str = include_str!("../languages.toml");

/// The set of languages CodeBeaker knows, with their aliases, extensions and toolchains.
///
/// Toolchain discovery runs once per registry, on first use of [`Registry::discover`] or
/// [`Registry::toolchain`], probing every language in parallel.
#[derive(Debug)]
pub struct Registry {
    languages: BTreeMap<String, Language>,
    /// Lower-case name or alias -> canonical name.
    names: BTreeMap<String, String>,
    /// Lower-case extension (without dot) -> canonical name.
    extensions: BTreeMap<String, String>,
    toolchains: OnceLock<BTreeMap<String, Toolchain>>,
    /// The only languages whose toolchains are looked for; `None`: every language.
    only: Option<std::collections::BTreeSet<String>>,
    /// Where the version probes' answers are kept ([`crate::probes`]), and whether they are
    /// reused; `None`: nowhere.
    probe_file: Option<(std::path::PathBuf, bool)>,
}

/// One language: how to recognise it and how to turn code into a [`Plan`].
#[derive(Debug, Clone)]
pub struct Language {
    name: String,
    description: String,
    aliases: Vec<String>,
    extensions: Vec<String>,
    main_file: String,
    main_file_pattern: Option<Regex>,
    /// `main_file_entry`: what declares a name, and what marks the entry point after it.
    main_file_entry: Option<(Regex, Regex)>,
    snippet: Option<SnippetWrapper>,
    env: Vec<(String, Template)>,
    specs: Vec<ToolchainSpec>,
}

/// A validated `[[languages.NAME.toolchains]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct ToolchainSpec {
    pub name: String,
    pub package: String,
    pub tools: BTreeMap<String, Vec<String>>,
    pub version_argv: Vec<Template>,
    pub version_regex: Regex,
    pub compile: Option<Vec<Template>>,
    pub run: Vec<Template>,
    pub artifacts: Vec<Template>,
    pub mounts: Vec<String>,
    pub env: Vec<(String, Template)>,
    pub files: Vec<(String, String)>,
    pub warm: Option<WarmWorker>,
    /// The compile step's reusable cache directory in the box and the program that fills it
    /// (see `build_cache` in the schema).
    pub build_cache: Option<(String, String)>,
}

impl Registry {
    /// The built-in registry (`languages.toml` shipped in the binary).
    pub fn builtin() -> Result<Registry, LanguageError> {
        Self::build(&[("builtin languages.toml", BUILTIN_REGISTRY)])
    }

    /// The built-in registry with `overrides` (TOML, same schema) applied: a `[languages.NAME]`
    /// table for an existing language replaces the fields it sets (a `toolchains` list replaces
    /// the whole list); a new name adds a language; `enabled = false` hides one. Errors name the
    /// offending line or key.
    pub fn with_overrides(overrides: &str) -> Result<Registry, LanguageError> {
        Self::build(&[
            ("builtin languages.toml", BUILTIN_REGISTRY),
            ("overrides", overrides),
        ])
    }

    fn build(sources: &[(&str, &str)]) -> Result<Registry, LanguageError> {
        let mut merged: BTreeMap<String, (LanguageConfig, &str)> = BTreeMap::new();
        for (source, text) in sources {
            let file = config::parse(source, text)?;
            for (name, language) in file.languages {
                let entry = match merged.remove(&name) {
                    Some((base, _)) => base.merged_with(language),
                    None => language,
                };
                merged.insert(name, (entry, source));
            }
        }
        let mut registry = Registry {
            languages: BTreeMap::new(),
            names: BTreeMap::new(),
            extensions: BTreeMap::new(),
            toolchains: OnceLock::new(),
            only: None,
            probe_file: None,
        };
        for (name, (language, source)) in merged {
            if language.enabled == Some(false) {
                continue;
            }
            let language = Language::from_config(&name, language, source)?;
            registry.insert(language, source)?;
        }
        Ok(registry)
    }

    fn insert(&mut self, language: Language, source: &str) -> Result<(), LanguageError> {
        let name = language.name.clone();
        for key in std::iter::once(&language.name).chain(&language.aliases) {
            if let Some(other) = self.names.insert(key.clone(), name.clone()) {
                return Err(LanguageError::config(
                    format!("{source}: languages.{name}.aliases"),
                    format!("'{key}' already names language '{other}'"),
                ));
            }
        }
        for extension in &language.extensions {
            if let Some(other) = self.extensions.insert(extension.clone(), name.clone()) {
                return Err(LanguageError::config(
                    format!("{source}: languages.{name}.extensions"),
                    format!("extension '{extension}' is already claimed by language '{other}'"),
                ));
            }
        }
        self.languages.insert(name, language);
        Ok(())
    }

    /// Finds a language by canonical name or alias, case-insensitively (`py`, `C#`, `golang`).
    pub fn resolve(&self, name_or_alias: &str) -> Result<&Language, LanguageError> {
        let key = name_or_alias.trim().to_lowercase();
        self.names
            .get(&key)
            .and_then(|name| self.languages.get(name))
            .ok_or_else(|| LanguageError::UnsupportedLanguage {
                name: name_or_alias.to_string(),
                known: self.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// The language a file name's extension belongs to (`main.py` -> python), if any.
    pub fn detect_extension(&self, path: impl AsRef<Path>) -> Option<&Language> {
        let extension = path.as_ref().extension()?.to_str()?.to_lowercase();
        self.extensions
            .get(&extension)
            .and_then(|name| self.languages.get(name))
    }

    /// Every language, sorted by name.
    pub fn languages(&self) -> impl Iterator<Item = &Language> {
        self.languages.values()
    }

    /// Every canonical language name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.languages.keys().map(String::as_str)
    }

    /// Looks for the toolchains of these languages only (names or aliases): a command that runs
    /// one language does not probe the others, which [`discover`](Self::discover) then reports
    /// unavailable, "not looked for". Call it before the first discovery.
    pub fn look_only_for<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), LanguageError> {
        let names = names
            .iter()
            .map(|n| Ok(self.resolve(n.as_ref())?.name.clone()))
            .collect::<Result<_, LanguageError>>()?;
        self.only = Some(names);
        Ok(())
    }

    /// Keeps the version probes' answers in the file `path`: with `reuse`, a discovery skips a
    /// probe while the executables it concerns are unchanged (see the `probes` module); without,
    /// every probe runs and its answer replaces the kept one (what `codebeaker doctor` wants).
    /// Call it before the first discovery.
    pub fn keep_probes_in(&mut self, path: impl Into<std::path::PathBuf>, reuse: bool) {
        self.probe_file = Some((path.into(), reuse));
    }

    /// Discovers every language's toolchain (once; later calls return the cached result).
    /// Probes run in parallel, one thread per language.
    pub fn discover(&self) -> &BTreeMap<String, Toolchain> {
        self.toolchains.get_or_init(|| {
            let probes = match &self.probe_file {
                Some((path, reuse)) => crate::probes::ProbeCache::open(Some(path), *reuse),
                None => crate::probes::ProbeCache::default(),
            };
            let wanted = self
                .only
                .as_ref()
                .map(|only| only.iter().cloned().collect::<Vec<_>>().join(", "));
            let found = std::thread::scope(|scope| {
                let probes = &probes;
                let wanted = wanted.as_deref();
                let handles: Vec<_> = self
                    .languages
                    .values()
                    .map(|language| {
                        let looked_for = self
                            .only
                            .as_ref()
                            .is_none_or(|o| o.contains(&language.name));
                        let probe = move || match (looked_for, wanted) {
                            (false, Some(wanted)) => {
                                crate::toolchain::not_looked_for(language, wanted)
                            }
                            _ => Toolchain::discover_with(language, probes),
                        };
                        (language, scope.spawn(probe))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|(language, handle)| {
                        let toolchain = handle.join().unwrap_or_else(|_| Toolchain {
                            language: language.name.clone(),
                            variant: None,
                            available: false,
                            version: None,
                            reason: Some(format!("probing {} panicked", language.name)),
                            executables: BTreeMap::new(),
                            mounts: Vec::new(),
                            relocated: BTreeMap::new(),
                            spec_index: None,
                        });
                        (language.name.clone(), toolchain)
                    })
                    .collect()
            });
            probes.save();
            found
        })
    }

    /// The discovered toolchain of a language (by name or alias), whether available or not.
    pub fn toolchain(&self, name_or_alias: &str) -> Result<&Toolchain, LanguageError> {
        let language = self.resolve(name_or_alias)?;
        self.discover()
            .get(&language.name)
            .ok_or_else(|| LanguageError::UnsupportedLanguage {
                name: name_or_alias.to_string(),
                known: self.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// Resolves `name_or_alias`, checks its toolchain is available, and prepares `code`.
    pub fn prepare(
        &self,
        name_or_alias: &str,
        code: &str,
        mode: Mode,
    ) -> Result<Plan, LanguageError> {
        let language = self.resolve(name_or_alias)?;
        let toolchain = self.toolchain(&language.name)?;
        language.prepare(toolchain, code, mode)
    }
}

impl Language {
    /// Canonical name, e.g. `csharp`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One-line human description, e.g. `C# (.NET SDK when installed, otherwise Mono)`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Other names the language answers to, lower case, e.g. `cs`, `c#`, `dotnet`.
    pub fn aliases(&self) -> &[String] {
        &self.aliases
    }

    /// File extensions without the dot, lower case.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// Default name of the main source file, e.g. `main.go`.
    pub fn main_file(&self) -> &str {
        &self.main_file
    }

    /// The snippet wrapper, or `None` for script-only languages.
    pub fn snippet_wrapper(&self) -> Option<SnippetWrapper> {
        self.snippet
    }

    /// Whether [`Mode::Snippet`] is supported.
    pub fn supports_snippets(&self) -> bool {
        self.snippet.is_some()
    }

    /// The Debian packages that provide a toolchain, in the registry's order of preference.
    pub fn packages(&self) -> Vec<&str> {
        self.specs.iter().map(|s| s.package.as_str()).collect()
    }

    /// Whether any toolchain entry has a compile step.
    pub fn is_compiled(&self) -> bool {
        self.specs.iter().any(|s| s.compile.is_some())
    }

    pub(crate) fn specs(&self) -> &[ToolchainSpec] {
        &self.specs
    }

    pub(crate) fn env(&self) -> &[(String, Template)] {
        &self.env
    }

    /// Probes this language's toolchain now (uncached; see [`Registry::discover`]).
    pub fn discover_toolchain(&self) -> Toolchain {
        Toolchain::discover(self)
    }

    /// The main file name for `code`: `main_file_pattern`'s first capture plus the first
    /// extension when the pattern matches (Java's public class); else the name `main_file_entry`
    /// finds (Java's class that declares `main`); else `main_file`.
    pub(crate) fn main_file_for(&self, code: &str) -> String {
        let named = self
            .main_file_pattern
            .as_ref()
            .and_then(|pattern| pattern.captures(code))
            .and_then(|captures| captures.get(1))
            .or_else(|| {
                let (declares, before) = self.main_file_entry.as_ref()?;
                let entry = before.find(code)?.start();
                declares
                    .captures_iter(&code[..entry])
                    .filter_map(|c| c.get(1))
                    .last()
            });
        named
            .map(|m| match self.extensions.first() {
                Some(extension) => format!("{}.{extension}", m.as_str()),
                None => m.as_str().to_string(),
            })
            .unwrap_or_else(|| self.main_file.clone())
    }

    fn from_config(name: &str, c: LanguageConfig, source: &str) -> Result<Language, LanguageError> {
        let at = |key: &str| format!("{source}: languages.{name}{key}");
        if name.is_empty()
            || name != name.to_lowercase()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_+#-.".contains(ch))
        {
            return Err(LanguageError::config(
                at(""),
                "language names must be lower case letters, digits or _+#-.",
            ));
        }
        let aliases: Vec<String> = c
            .aliases
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.trim().to_lowercase())
            .collect();
        if aliases.iter().any(|a| a.is_empty()) {
            return Err(LanguageError::config(at(".aliases"), "empty alias"));
        }
        let extensions: Vec<String> = c
            .extensions
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.trim().trim_start_matches('.').to_lowercase())
            .collect();
        let main_file = match c.main_file {
            Some(file) => file,
            None => match extensions.first() {
                Some(extension) => format!("main.{extension}"),
                None => {
                    return Err(LanguageError::config(
                        at(""),
                        "set `main_file` or at least one entry in `extensions`",
                    ))
                }
            },
        };
        check_file_name(&main_file).map_err(|m| LanguageError::config(at(".main_file"), m))?;
        let main_file_pattern = c
            .main_file_pattern
            .map(|p| Regex::new(&p))
            .transpose()
            .map_err(|e| LanguageError::config(at(".main_file_pattern"), e.to_string()))?;
        let main_file_entry = c
            .main_file_entry
            .map(|e| {
                let declares = Regex::new(&e.declares).map_err(|e| {
                    LanguageError::config(at(".main_file_entry.declares"), e.to_string())
                })?;
                let before = Regex::new(&e.before).map_err(|e| {
                    LanguageError::config(at(".main_file_entry.before"), e.to_string())
                })?;
                Ok::<_, LanguageError>((declares, before))
            })
            .transpose()?;
        let snippet = match c.snippet.as_deref() {
            None | Some("none") => None,
            Some(wrapper) => Some(SnippetWrapper::from_name(wrapper).ok_or_else(|| {
                let known: Vec<&str> = SnippetWrapper::ALL.iter().map(|w| w.name()).collect();
                LanguageError::config(
                    at(".snippet"),
                    format!(
                        "unknown snippet wrapper '{wrapper}' (known: {}, or \"none\")",
                        known.join(", ")
                    ),
                )
            })?),
        };
        let no_tools = |_: &str| false;
        let env = parse_env(c.env.unwrap_or_default(), &no_tools)
            .map_err(|(key, m)| LanguageError::config(at(&format!(".env.{key}")), m))?;
        let toolchains = c
            .toolchains
            .ok_or_else(|| LanguageError::config(at(""), "missing `toolchains` (at least one)"))?;
        if toolchains.is_empty() {
            return Err(LanguageError::config(
                at(".toolchains"),
                "at least one toolchain is required",
            ));
        }
        let specs = toolchains
            .into_iter()
            .enumerate()
            .map(|(i, t)| ToolchainSpec::from_config(t, &at(&format!(".toolchains[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Language {
            name: name.to_string(),
            description: c.description.unwrap_or_else(|| name.to_string()),
            aliases,
            extensions,
            main_file,
            main_file_pattern,
            main_file_entry,
            snippet,
            env,
            specs,
        })
    }
}

impl ToolchainSpec {
    fn from_config(c: ToolchainConfig, at: &str) -> Result<ToolchainSpec, LanguageError> {
        let err =
            |key: &str, message: String| LanguageError::config(format!("{at}.{key}"), message);
        if c.tools.is_empty() {
            return Err(err("tools", "at least one tool is required".to_string()));
        }
        for (tool, candidates) in &c.tools {
            if candidates.is_empty() {
                return Err(err(
                    &format!("tools.{tool}"),
                    "no candidate paths".to_string(),
                ));
            }
            if let Some(bad) = candidates
                .iter()
                .find(|p| !p.starts_with('/') && !p.starts_with("${"))
            {
                return Err(err(
                    &format!("tools.{tool}"),
                    format!("candidate '{bad}' must be an absolute path"),
                ));
            }
        }
        let has_tool = |name: &str| c.tools.contains_key(name);
        let argv = |key: &str, items: &[String], allowed: Allowed| {
            if items.is_empty() {
                return Err(err(key, "must not be empty".to_string()));
            }
            items
                .iter()
                .map(|item| Template::parse(item, allowed, &has_tool))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| err(key, m))
        };
        let version_argv = argv("version.argv", &c.version.argv, Allowed::ToolsOnly)?;
        let version_regex =
            Regex::new(&c.version.regex).map_err(|e| err("version.regex", e.to_string()))?;
        let compile = c
            .compile
            .as_deref()
            .map(|items| argv("compile", items, Allowed::Argv))
            .transpose()?;
        let run = argv("run", &c.run, Allowed::Argv)?;
        let artifacts = c
            .artifacts
            .iter()
            .map(|a| Template::parse(a, Allowed::Scalar, &has_tool))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| err("artifacts", m))?;
        if compile.is_some() && artifacts.is_empty() {
            return Err(err(
                "artifacts",
                "a toolchain with a compile step must list the files it produces".to_string(),
            ));
        }
        let env = parse_env(c.env, &has_tool).map_err(|(key, m)| err(&format!("env.{key}"), m))?;
        let mut files = Vec::new();
        for (name, contents) in c.files {
            check_file_name(&name).map_err(|m| err(&format!("files.{name}"), m))?;
            let contents = match contents.strip_prefix("builtin:") {
                Some(asset) => wrappers::builtin_asset(asset)
                    .ok_or_else(|| {
                        err(
                            &format!("files.{name}"),
                            format!("no built-in file '{asset}'"),
                        )
                    })?
                    .to_string(),
                None => contents,
            };
            files.push((name, contents));
        }
        for mount in &c.mounts {
            if !mount.starts_with('/') && !mount.starts_with("${") {
                return Err(err("mounts", format!("'{mount}' must be an absolute path")));
            }
        }
        let warm = match c.warm.as_deref() {
            None => None,
            Some(name) => Some(WarmWorker::from_name(name).ok_or_else(|| {
                err(
                    "warm",
                    format!(
                        "unknown warm worker '{name}'; known: {}",
                        WarmWorker::NAMES.join(", ")
                    ),
                )
            })?),
        };
        if let Some(cache) = &c.build_cache {
            let dir = &cache.dir;
            let inside_tmp = dir
                .strip_prefix("/tmp/")
                .is_some_and(|rest| check_file_name(rest).is_ok());
            if !inside_tmp || compile.is_none() {
                return Err(err(
                    "build_cache.dir",
                    format!("'{dir}' must be a directory under /tmp/ of a toolchain with a compile step"),
                ));
            }
        }
        Ok(ToolchainSpec {
            name: c.name,
            package: c.package,
            tools: c.tools,
            version_argv,
            version_regex,
            compile,
            run,
            artifacts,
            mounts: c.mounts,
            env,
            files,
            warm,
            build_cache: c.build_cache.map(|b| (b.dir, b.seed)),
        })
    }
}

fn parse_env(
    env: BTreeMap<String, String>,
    has_tool: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Template)>, (String, String)> {
    env.into_iter()
        .map(|(key, value)| {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err((key, "invalid variable name".to_string()));
            }
            Template::parse(&value, Allowed::Scalar, has_tool)
                .map(|t| (key.clone(), t))
                .map_err(|m| (key, m))
        })
        .collect()
}

/// A plan file name: relative, no `..`, no empty components.
pub(crate) fn check_file_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' must be a relative file name without '..'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_loads() {
        let registry = Registry::builtin().expect("builtin registry");
        let names: Vec<&str> = registry.names().collect();
        assert_eq!(
            names,
            [
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
                "typescript"
            ]
        );
        for (alias, name) in [
            ("py", "python"),
            ("Python3", "python"),
            ("js", "javascript"),
            ("node", "javascript"),
            ("nodejs", "javascript"),
            ("golang", "go"),
            ("cs", "csharp"),
            ("C#", "csharp"),
            ("dotnet", "csharp"),
            ("sh", "bash"),
            ("c++", "cpp"),
            ("cxx", "cpp"),
            ("rs", "rust"),
            ("ts", "typescript"),
            ("rb", "ruby"),
        ] {
            assert_eq!(registry.resolve(alias).expect(alias).name(), name);
        }
    }

    #[test]
    fn unknown_language_lists_known_names() {
        let registry = Registry::builtin().expect("builtin registry");
        let error = registry
            .resolve("cobol")
            .expect_err("cobol is unknown")
            .to_string();
        assert!(error.contains("Unsupported language 'cobol'"), "{error}");
        assert!(
            error.contains("Known languages: bash, c, cpp, csharp, go"),
            "{error}"
        );
    }

    #[test]
    fn detects_extensions() {
        let registry = Registry::builtin().expect("builtin registry");
        let detect = |p: &str| registry.detect_extension(p).map(|l| l.name().to_string());
        assert_eq!(detect("a/b/main.py").as_deref(), Some("python"));
        assert_eq!(detect("Main.JAVA").as_deref(), Some("java"));
        assert_eq!(detect("x.hpp").as_deref(), Some("cpp"));
        assert_eq!(detect("x.mjs").as_deref(), Some("javascript"));
        assert_eq!(detect("README"), None);
        assert_eq!(detect("x.cob"), None);
    }

    #[test]
    fn override_errors_name_the_key() {
        let error = Registry::with_overrides("[languages.python]\nrun = [\"x\"]\n")
            .expect_err("unknown field")
            .to_string();
        assert!(error.contains("overrides"), "{error}");
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("run"), "{error}");

        let error = Registry::with_overrides(
            r#"
[languages.lua]
extensions = ["lua"]
[[languages.lua.toolchains]]
name = "lua"
package = "lua5.4"
tools = { lua = ["/usr/bin/lua5.4"] }
version = { argv = ["{tool:lua}", "-v"], regex = 'Lua (\S+)' }
run = ["{tool:luajit}", "{source}"]
"#,
        )
        .expect_err("unknown tool")
        .to_string();
        assert!(error.contains("languages.lua.toolchains[0].run"), "{error}");
        assert!(error.contains("{tool:luajit}"), "{error}");

        let error = Registry::with_overrides(
            "[languages.lua]\naliases = [\"py\"]\nextensions = [\"lua\"]\n",
        )
        .expect_err("no toolchains")
        .to_string();
        assert!(error.contains("languages.lua"), "{error}");
        assert!(error.contains("toolchains"), "{error}");
    }

    #[test]
    fn overrides_merge_and_disable() {
        let registry = Registry::with_overrides(
            "[languages.python]\naliases = [\"py\", \"python3\", \"cpython\"]\n[languages.ruby]\nenabled = false\n",
        )
        .expect("overrides");
        assert_eq!(registry.resolve("cpython").expect("alias").name(), "python");
        assert_eq!(
            registry.resolve("python").expect("kept").main_file(),
            "main.py"
        );
        assert!(registry.resolve("ruby").is_err());
    }

    #[test]
    fn java_main_file_follows_the_public_class() {
        let registry = Registry::builtin().expect("builtin registry");
        let java = registry.resolve("java").expect("java");
        assert_eq!(
            java.main_file_for("public class Solution { }"),
            "Solution.java"
        );
        assert_eq!(java.main_file_for("class Hidden { }"), "Main.java");
    }
}
