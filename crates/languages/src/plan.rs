//! Plans: what to write, compile and run for one piece of code.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::registry::Language;
use crate::template::{Context, Template};
use crate::toolchain::Toolchain;
use crate::warm::WarmWorker;
use crate::wrappers::SnippetWrapper;
use crate::LanguageError;

/// `PATH` every step starts with (a language's `env` may replace it).
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Environment every step starts with, before the language's and the toolchain's `env`.
const DEFAULT_ENV: [(&str, &str); 4] = [
    ("PATH", DEFAULT_PATH),
    ("HOME", "/tmp"),
    ("LANG", "C.UTF-8"),
    ("TMPDIR", "/tmp"),
];

/// Bumped whenever the cache key's layout changes, or entries made before must never be used
/// again (v2: v1 entries were compiled in callers' own boxes).
const CACHE_KEY_VERSION: &str = "codebeaker-compile-cache-v2";

/// How code is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A whole program: stdin in, stdout and stderr out, exit code.
    Script,
    /// The snippet ABI: input JSON on fd 3 bound to `input_data`, the value left in `result`
    /// written as JSON to fd 4. stdin, stdout and stderr still belong to the code.
    Snippet,
}

/// A file to write into the source directory before compiling or running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFile {
    /// Path relative to the source directory (no `..`).
    pub name: String,
    /// File contents.
    pub contents: Vec<u8>,
    /// Whether to set the executable bits.
    pub executable: bool,
}

/// A rendered command: absolute argv and the complete environment (start from an empty one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Program (absolute path) and arguments.
    pub argv: Vec<String>,
    /// Every environment variable the step needs, later entries never repeat a key.
    pub env: Vec<(String, String)>,
}

/// Everything needed to build and run one piece of code, independent of where it will happen.
///
/// The engine picks the directories: it writes [`Plan::files`] into a source directory, runs
/// [`Plan::compile_step`] (if any) with that directory writable and the output directory writable,
/// then runs [`Plan::run_step`], for which the output directory may be a read-only compile cache
/// entry. Interpreted languages have no compile step and run from the source directory.
#[derive(Debug, Clone)]
pub struct Plan {
    language: String,
    variant: String,
    version: String,
    mode: Mode,
    files: Vec<PlanFile>,
    main_file: String,
    sources: Vec<String>,
    tools: std::collections::BTreeMap<String, std::path::PathBuf>,
    compile: Option<Vec<Template>>,
    run: Vec<Template>,
    artifacts: Vec<Template>,
    env: Vec<(String, Template)>,
    cache_key: Option<String>,
    wrapper: Option<SnippetWrapper>,
    /// The main file is CodeBeaker's launcher for the program beside it (script mode).
    launcher: bool,
    warm: Option<WarmWorker>,
    /// The compile step's reusable cache directory and the program that fills it.
    build_cache: Option<(String, String)>,
}

impl Language {
    /// Turns `code` into a [`Plan`] using a toolchain discovered for this language.
    ///
    /// Fails with [`LanguageError::ToolchainUnavailable`] when the toolchain is missing (the
    /// message names the package to install) and with [`LanguageError::SnippetUnsupported`] when
    /// `mode` is [`Mode::Snippet`] for a script-only language.
    pub fn prepare(
        &self,
        toolchain: &Toolchain,
        code: &str,
        mode: Mode,
    ) -> Result<Plan, LanguageError> {
        if toolchain.language != self.name() {
            return Err(LanguageError::ToolchainMismatch {
                language: self.name().to_string(),
                toolchain: toolchain.language.clone(),
            });
        }
        let wrapper =
            match mode {
                Mode::Script => None,
                Mode::Snippet => Some(self.snippet_wrapper().ok_or_else(|| {
                    LanguageError::SnippetUnsupported {
                        language: self.name().to_string(),
                    }
                })?),
            };
        let spec = toolchain
            .spec_index
            .filter(|_| toolchain.available)
            .and_then(|index| self.specs().get(index))
            .ok_or_else(|| LanguageError::ToolchainUnavailable {
                language: self.name().to_string(),
                reason: toolchain
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("{} is not available", self.name())),
            })?;

        let main_file = match mode {
            Mode::Script => self.main_file_for(code),
            Mode::Snippet => self.main_file().to_string(),
        };
        let launched = match mode {
            Mode::Script => self
                .snippet_wrapper()
                .and_then(|w| w.launch(code, &main_file)),
            Mode::Snippet => None,
        };
        let launcher = launched.is_some();
        let wrapped = match (wrapper, launched) {
            (Some(wrapper), _) => Some(wrapper.wrap(code, &main_file)),
            (None, launched) => launched,
        };
        let mut files: Vec<PlanFile> = match wrapped {
            None => vec![PlanFile {
                name: main_file.clone(),
                contents: code.as_bytes().to_vec(),
                executable: false,
            }],
            Some(wrapped) => wrapped
                .into_iter()
                .map(|f| PlanFile {
                    name: f.name,
                    contents: f.contents.into_bytes(),
                    executable: false,
                })
                .collect(),
        };
        for (name, contents) in &spec.files {
            if files.iter().any(|f| &f.name == name) {
                continue;
            }
            files.push(PlanFile {
                name: name.clone(),
                contents: contents.as_bytes().to_vec(),
                executable: false,
            });
        }

        let sources = sources_of(&files, &main_file);

        let mut env: Vec<(String, Template)> = Vec::new();
        let no_tools = |_: &str| false;
        for (key, value) in DEFAULT_ENV {
            let template = Template::parse(value, crate::template::Allowed::Scalar, &no_tools)
                .map_err(|m| LanguageError::config("default environment", m))?;
            env.push((key.to_string(), template));
        }
        for (key, value) in self.env().iter().chain(&spec.env) {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }

        let version = toolchain.version.clone().unwrap_or_default();
        let cache_key = spec.compile.as_ref().map(|compile| {
            cache_key(
                self.name(),
                &spec.name,
                &version,
                compile,
                wrapper.map_or("script", |w| w.version()),
                &files,
            )
        });

        Ok(Plan {
            language: self.name().to_string(),
            variant: spec.name.clone(),
            version,
            mode,
            files,
            main_file,
            sources,
            tools: toolchain.executables.clone(),
            compile: spec.compile.clone(),
            run: spec.run.clone(),
            artifacts: spec.artifacts.clone(),
            env,
            cache_key,
            wrapper,
            launcher,
            warm: spec.warm,
            build_cache: spec.build_cache.clone(),
        })
    }
}

/// The files among `files` that the compile step's `{sources}` names: those with the main
/// file's extension (the main file alone when it has none).
fn sources_of(files: &[PlanFile], main_file: &str) -> Vec<String> {
    let extension = main_file.rsplit_once('.').map(|(_, e)| e);
    files
        .iter()
        .map(|f| f.name.clone())
        .filter(|name| match (extension, name.rsplit_once('.')) {
            (Some(main_ext), Some((_, ext))) => ext == main_ext,
            (None, None) => name == main_file,
            _ => false,
        })
        .collect()
}

/// Longest name of a file written beside a program, and of each of its path components.
const MAX_SOURCE_NAME: usize = 1024;
const MAX_SOURCE_COMPONENT: usize = 255;

/// Why `name` cannot name a file under a program's source directory, if it cannot: it must be a
/// relative path of plain components (no `.`, `..`, empty parts or NUL), short enough for any
/// filesystem.
fn source_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    if name.len() > MAX_SOURCE_NAME {
        return Some(format!("the name is longer than {MAX_SOURCE_NAME} bytes"));
    }
    if name.contains('\0') {
        return Some("the name contains a NUL character".into());
    }
    if name.starts_with('/') {
        return Some("the name must be relative to the program's directory".into());
    }
    for part in name.split('/') {
        match part {
            "" => {
                return Some("the name has an empty path component (`//` or a trailing `/`)".into())
            }
            "." | ".." => {
                return Some(format!(
                    "the name has a `{part}` component; files stay in the program's directory"
                ))
            }
            long if long.len() > MAX_SOURCE_COMPONENT => {
                return Some(format!(
                    "a path component is longer than {MAX_SOURCE_COMPONENT} bytes"
                ))
            }
            _ => {}
        }
    }
    None
}

/// Hex SHA-256 over everything that determines a compile step's output. Directories are not
/// part of it: templates are hashed unrendered, so the same program compiled in any directory
/// shares one cache entry.
fn cache_key(
    language: &str,
    variant: &str,
    version: &str,
    compile: &[Template],
    wrapper_version: &str,
    files: &[PlanFile],
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(CACHE_KEY_VERSION.as_bytes());
    field(language.as_bytes());
    field(variant.as_bytes());
    field(version.as_bytes());
    field(wrapper_version.as_bytes());
    field(&(compile.len() as u64).to_le_bytes());
    for part in compile {
        field(part.as_str().as_bytes());
    }
    field(&(files.len() as u64).to_le_bytes());
    for file in files {
        field(file.name.as_bytes());
        field(&[u8::from(file.executable)]);
        field(&file.contents);
    }
    hex::encode(hasher.finalize())
}

impl Plan {
    /// Canonical language name.
    pub fn language(&self) -> &str {
        &self.language
    }

    /// The registry toolchain entry used (`mono`, `go`, ...).
    pub fn toolchain_variant(&self) -> &str {
        &self.variant
    }

    /// The toolchain version the plan was made for.
    pub fn toolchain_version(&self) -> &str {
        &self.version
    }

    /// Script or snippet.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Files to write into the source directory.
    pub fn files(&self) -> &[PlanFile] {
        &self.files
    }

    /// Adds files beside the plan's own, in the same source directory: a program's other
    /// sources, headers and data. Those with the main file's extension are compiled with it
    /// (`{sources}`), and the compile cache key covers every file. A name must be relative and
    /// stay in the directory (subdirectories are made), and must not be one the plan writes
    /// itself (its main file, a snippet wrapper's files, the toolchain's own files).
    pub fn add_files(&mut self, extra: Vec<PlanFile>) -> Result<(), LanguageError> {
        for file in extra {
            let problem = source_name_problem(&file.name).or_else(|| {
                self.files.iter().any(|f| f.name == file.name).then(|| {
                    if file.name == self.main_file {
                        format!(
                            "it is the name of the program's main file ({})",
                            self.main_file
                        )
                    } else {
                        "a file of that name is already written there".to_string()
                    }
                })
            });
            if let Some(reason) = problem {
                return Err(LanguageError::InvalidSourceFile {
                    name: file.name,
                    reason,
                });
            }
            self.files.push(file);
        }
        self.sources = sources_of(&self.files, &self.main_file);
        if let Some(compile) = &self.compile {
            self.cache_key = Some(cache_key(
                &self.language,
                &self.variant,
                &self.version,
                compile,
                self.wrapper.map_or("script", |w| w.version()),
                &self.files,
            ));
        }
        Ok(())
    }

    /// Name of the main file among [`Plan::files`] (`main.go`, `Solution.java`, ...).
    pub fn main_file(&self) -> &str {
        &self.main_file
    }

    /// Whether there is a compile step.
    pub fn has_compile_step(&self) -> bool {
        self.compile.is_some()
    }

    /// Files the compile step must leave in the output directory (relative names). The whole
    /// output directory is what the compile cache stores; these are the ones whose absence means
    /// the compile failed.
    pub fn artifacts(&self) -> Vec<String> {
        let ctx = self.context(None, None);
        self.artifacts.iter().map(|a| a.render(&ctx)).collect()
    }

    /// Compile cache key (lowercase hex SHA-256) for compiled languages, `None` otherwise.
    pub fn cache_key(&self) -> Option<&str> {
        self.cache_key.as_deref()
    }

    /// The file name diagnostics use for the user's code in snippet mode (`snippet.go`, ...).
    pub fn user_file(&self) -> Option<&'static str> {
        self.wrapper.map(SnippetWrapper::user_file)
    }

    /// The compile command for the given absolute directories, if the language is compiled.
    /// Run it with `src_dir` as working directory; it writes only into `src_dir` and `out_dir`
    /// (plus the toolchain's own caches under /tmp, see its `env`).
    pub fn compile_step(&self, src_dir: &Path, out_dir: &Path) -> Option<Step> {
        let compile = self.compile.as_ref()?;
        Some(self.render(compile, src_dir, out_dir))
    }

    /// The run command for the given absolute directories. argv holds only absolute paths, so
    /// any working directory works (the engine uses the session workspace).
    pub fn run_step(&self, src_dir: &Path, out_dir: &Path) -> Step {
        self.render(&self.run, src_dir, out_dir)
    }

    /// The warm worker that can run this plan's run step (see [`WarmWorker`]), rendered for the
    /// same directories: its argv and environment. Workers with the same argv and environment
    /// can be shared by every run of the toolchain in a box.
    /// `host_dir` is where the worker's native part was built, for workers that need one
    /// ([`WarmWorker::needs_host`]); without it they have no start command.
    pub fn warm_worker(
        &self,
        src_dir: &Path,
        out_dir: &Path,
        host_dir: Option<&Path>,
    ) -> Option<Step> {
        let worker = self.warm?;
        let run = self.run_step(src_dir, out_dir);
        let argv = worker.argv(run.argv.first()?.clone(), host_dir)?;
        Some(Step { argv, env: run.env })
    }

    /// Whether the run reports a program that does not compile: its launcher writes `syntax` on
    /// descriptor 4 (which the engine captures) and the run is then a compile error, not a
    /// runtime one.
    pub fn reports_syntax_errors(&self) -> bool {
        self.launcher
    }

    /// The warm worker that can run this plan's run step, if its toolchain has one.
    pub fn warm(&self) -> Option<WarmWorker> {
        self.warm
    }

    /// The directory (in the box, under `/tmp`) that the compile step reuses between compiles,
    /// for toolchains that have one (Go's build cache, `build_cache` in the registry). A compile
    /// in a box whose `/tmp` starts empty would rebuild the toolchain's own libraries there
    /// every time: the engine fills it once by compiling
    /// [`build_cache_seed`](Self::build_cache_seed), keeps it read-only, and copies it in first.
    pub fn build_cache_dir(&self) -> Option<&str> {
        self.build_cache.as_ref().map(|(dir, _)| dir.as_str())
    }

    /// The program (script mode) whose compile fills [`build_cache_dir`](Self::build_cache_dir).
    pub fn build_cache_seed(&self) -> Option<&str> {
        self.build_cache.as_ref().map(|(_, seed)| seed.as_str())
    }

    /// The compile cache key of the filled [`build_cache_dir`](Self::build_cache_dir): the same
    /// for every program of one toolchain, version and compile step.
    pub fn build_cache_key(&self) -> Option<String> {
        let (dir, seed) = self.build_cache.as_ref()?;
        let compile = self.compile.as_deref()?;
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        for text in [
            CACHE_KEY_VERSION,
            "build-cache",
            dir,
            seed,
            &self.language,
            &self.variant,
        ] {
            field(text.as_bytes());
        }
        field(self.version.as_bytes());
        for part in compile {
            field(part.as_str().as_bytes());
        }
        for (key, value) in &self.env {
            field(key.as_bytes());
            field(value.as_str().as_bytes());
        }
        Some(hex::encode(hasher.finalize()))
    }

    /// A plan that compiles one C file `source` (named `file`) into the shared library
    /// `artifact` with the C toolchain `c` and its tool `compiler`: how warm workers' native
    /// parts are built, through the same compile step, cache and box as any program.
    pub(crate) fn shared_library(
        c: &Toolchain,
        compiler: &str,
        file: &str,
        source: &str,
        artifact: &str,
    ) -> Result<Plan, LanguageError> {
        if !c.available || !c.executables.contains_key(compiler) {
            return Err(LanguageError::ToolchainUnavailable {
                language: c.language.clone(),
                reason: c
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("{} is not available", c.language)),
            });
        }
        let tools = |name: &str| name == compiler;
        let parse = |text: String| {
            Template::parse(&text, crate::template::Allowed::Argv, &tools)
                .map_err(|m| LanguageError::config("warm worker build", m))
        };
        let compile = [
            format!("{{tool:{compiler}}}"),
            "-shared".into(),
            "-fPIC".into(),
            "-O2".into(),
            "-pipe".into(),
            "-fdiagnostics-color=never".into(),
            "-o".into(),
            format!("{{out_dir}}/{artifact}"),
            "{sources}".into(),
        ]
        .into_iter()
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
        let files = vec![PlanFile {
            name: file.to_string(),
            contents: source.as_bytes().to_vec(),
            executable: false,
        }];
        let mut env = Vec::new();
        for (key, value) in DEFAULT_ENV {
            env.push((key.to_string(), parse(value.to_string())?));
        }
        let version = c.version.clone().unwrap_or_default();
        let variant = c.variant.clone().unwrap_or_default();
        let cache_key = cache_key(&c.language, &variant, &version, &compile, "shared", &files);
        Ok(Plan {
            language: c.language.clone(),
            variant,
            version,
            mode: Mode::Script,
            files,
            main_file: file.to_string(),
            sources: vec![file.to_string()],
            tools: c.executables.clone(),
            compile: Some(compile),
            run: Vec::new(),
            artifacts: vec![parse(artifact.to_string())?],
            env,
            cache_key: Some(cache_key),
            wrapper: None,
            launcher: false,
            warm: None,
            build_cache: None,
        })
    }

    /// Makes compiler and runtime messages refer to what the user wrote: strips the absolute
    /// source and output directories (`/build/src/main.c:3:5` -> `main.c:3:5`) and, in snippet
    /// mode, explains a missing `result` declaration. Snippet line numbers need no rewriting:
    /// wrappers use line directives or load the code under its own file name.
    pub fn rewrite_diagnostics(&self, text: &str, src_dir: &Path, out_dir: &Path) -> String {
        let mut text = text.to_string();
        for dir in [src_dir, out_dir] {
            let dir = dir.to_string_lossy();
            let dir = dir.trim_end_matches('/');
            if dir.is_empty() {
                continue;
            }
            text = text.replace(&format!("{dir}/"), "");
        }
        if self.result_missing(&text) {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("snippet did not set `result`: declare it, e.g. `var result = ...;`\n");
        }
        text
    }

    /// True when compiler output shows that a snippet never declared `result`.
    pub fn result_missing(&self, diagnostics: &str) -> bool {
        self.wrapper
            .is_some_and(|w| w.result_missing_in(diagnostics))
    }

    fn context<'a>(&'a self, src_dir: Option<&'a Path>, out_dir: Option<&'a Path>) -> Context<'a> {
        Context {
            src_dir,
            out_dir,
            main_file: Some(&self.main_file),
            sources: &self.sources,
            tools: Some(&self.tools),
        }
    }

    fn render(&self, argv: &[Template], src_dir: &Path, out_dir: &Path) -> Step {
        let ctx = self.context(Some(src_dir), Some(out_dir));
        let mut rendered = Vec::new();
        for part in argv {
            part.render_into(&ctx, &mut rendered);
        }
        let env = self
            .env
            .iter()
            .map(|(key, value)| (key.clone(), value.render(&ctx)))
            .collect();
        Step {
            argv: rendered,
            env,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Registry;

    /// Variables through which a compiler would read code, flags or configuration from
    /// somewhere a caller can write: no toolchain of the registry may set them.
    const UNSAFE_ENV: &[&str] = &[
        "CPATH",
        "C_INCLUDE_PATH",
        "CPLUS_INCLUDE_PATH",
        "LIBRARY_PATH",
        "GCC_EXEC_PREFIX",
        "COMPILER_PATH",
        "CCACHE_DIR",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CLASSPATH",
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "_JAVA_OPTIONS",
        "NODE_OPTIONS",
        "NODE_PATH",
        "MONO_PATH",
        "MONO_ENV_OPTIONS",
        "GOROOT",
        "GOEXPERIMENT",
    ];

    #[test]
    fn compile_steps_read_nothing_a_caller_could_have_written() {
        let registry = Registry::builtin().expect("builtin registry");
        for language in registry.languages() {
            for spec in language.specs() {
                let env = language.env().iter().chain(&spec.env);
                for (key, value) in env {
                    // A search path of read-only system directories only (Node's global
                    // modules) points at nothing a caller can write.
                    let system_only = value
                        .as_str()
                        .split(':')
                        .all(|dir| dir.starts_with("/usr/"));
                    assert!(
                        !UNSAFE_ENV.contains(&key.as_str()) || (key == "NODE_PATH" && system_only),
                        "{} ({}) sets {key}",
                        language.name(),
                        spec.name
                    );
                }
            }
        }
        let go = &registry.resolve("go").expect("go").specs()[0];
        let value = |key: &str| {
            go.env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str().to_string())
        };
        // An empty GOFLAGS falls back to the go env file; GOENV=off turns the file off.
        assert_eq!(value("GOENV").as_deref(), Some("off"));
        assert_eq!(value("GOFLAGS").as_deref(), Some(""));
        assert_eq!(value("GOWORK").as_deref(), Some("off"));
        assert!(go.build_cache.is_some(), "Go shares its standard library");
        let java = &registry.resolve("java").expect("java").specs()[0];
        let javac: Vec<&str> = java
            .compile
            .as_ref()
            .expect("javac")
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert!(javac.contains(&"-proc:none"), "{javac:?}");
        assert!(
            javac.windows(2).any(|w| w == ["-cp", "{out_dir}"]),
            "{javac:?}"
        );
    }
}
