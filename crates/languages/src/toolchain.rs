//! Toolchain discovery: finding a language's executables, probing their version, and working out
//! which directories a box must mount read-only for them to run.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;

use crate::probes::ProbeCache;
use crate::registry::{Language, ToolchainSpec};
use crate::template::Context;

/// How long a version probe may take before the toolchain is declared broken.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Directories every box is expected to provide anyway; a toolchain root equal to one of these is
/// not listed in [`Toolchain::mounts`].
const SYSTEM_ROOTS: [&str; 6] = ["/", "/usr", "/usr/local", "/bin", "/sbin", "/opt"];

/// What discovery found for one language on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Toolchain {
    /// Canonical language name.
    pub language: String,
    /// Name of the registry toolchain entry that was chosen (`mono`, `dotnet`, `cpython`, ...),
    /// `None` when nothing is available.
    pub variant: Option<String>,
    /// Whether code in this language can be prepared and run.
    pub available: bool,
    /// Version reported by the toolchain's version probe, e.g. `3.11.2`.
    pub version: Option<String>,
    /// Why the language is unavailable, naming the Debian package to install.
    pub reason: Option<String>,
    /// Absolute path of each toolchain executable in the box, keyed by its `tools` name, as found
    /// (before symlinks are resolved, so `/usr/bin/go`), moved under `/opt/toolchains` when its
    /// directory is [`relocated`](Self::relocated).
    pub executables: BTreeMap<String, PathBuf>,
    /// Host directories (and files) outside the base system that a box must bind read-only: roots
    /// of resolved executables (`/usr/lib/go-1.19`), what their top-level symlinks point to
    /// (`/usr/share/go-1.19/src`), and the entry's `mounts`. The box sees each at
    /// [`box_path`](Self::box_path).
    pub mounts: Vec<PathBuf>,
    /// Where the box sees those of `mounts` that live outside the standard system directories
    /// (under `/root`, `/home`, ...): under `/opt/toolchains`, so that no path in a box names a
    /// place particular to this host. [`executables`](Self::executables) are already box paths.
    pub relocated: BTreeMap<PathBuf, PathBuf>,
    #[serde(skip)]
    pub(crate) spec_index: Option<usize>,
}

impl Toolchain {
    /// Discovers the toolchain of `language`: the first registry entry whose tools are all found
    /// and whose version probe succeeds wins.
    pub fn discover(language: &Language) -> Toolchain {
        Self::discover_with(language, &ProbeCache::default())
    }

    /// [`discover`](Self::discover), taking a version probe's answer from `probes` while the
    /// executables it concerns are unchanged, and keeping the answers of the probes it runs.
    pub(crate) fn discover_with(language: &Language, probes: &ProbeCache) -> Toolchain {
        let mut failures = Vec::new();
        for (index, spec) in language.specs().iter().enumerate() {
            match discover_spec(spec, probes) {
                Ok((executables, version)) => {
                    let mounts = mounts_for(&executables, &spec.mounts);
                    let relocated = relocations(language.name(), &mounts);
                    let executables = executables
                        .into_iter()
                        .map(|(tool, path)| {
                            let path = in_box(&relocated, &path);
                            (tool, path)
                        })
                        .collect();
                    tracing::debug!(
                        language = language.name(),
                        variant = %spec.name,
                        %version,
                        "toolchain found"
                    );
                    return Toolchain {
                        language: language.name().to_string(),
                        variant: Some(spec.name.clone()),
                        available: true,
                        version: Some(version),
                        reason: None,
                        executables,
                        mounts,
                        relocated,
                        spec_index: Some(index),
                    };
                }
                Err(failure) => failures.push((spec, failure)),
            }
        }
        let reason = unavailable_reason(language.name(), &failures);
        tracing::debug!(language = language.name(), %reason, "toolchain unavailable");
        Toolchain {
            language: language.name().to_string(),
            variant: None,
            available: false,
            version: None,
            reason: Some(reason),
            executables: BTreeMap::new(),
            mounts: Vec::new(),
            relocated: BTreeMap::new(),
            spec_index: None,
        }
    }

    /// Where a box sees the host path `host` of one of [`mounts`](Self::mounts).
    pub fn box_path(&self, host: &Path) -> PathBuf {
        self.relocated
            .get(host)
            .cloned()
            .unwrap_or_else(|| host.to_path_buf())
    }
}

/// `text` (an argument or environment value of a plan) with every relocated toolchain's box path
/// replaced by its host path: for running a plan outside a box (benchmarks, tests).
pub fn on_host(toolchains: &BTreeMap<String, Toolchain>, text: &str) -> String {
    let mut text = text.to_string();
    for toolchain in toolchains.values() {
        for (host, in_box) in &toolchain.relocated {
            text = text.replace(&*in_box.to_string_lossy(), &host.to_string_lossy());
        }
    }
    text
}

/// Where boxes see toolchains that live outside the standard system directories.
pub const BOX_TOOLCHAINS: &str = "/opt/toolchains";

/// Standard system directories: a toolchain directory under one of them names nothing particular
/// to this host, and the box sees it at its own path (some programs also need it there: a JDK's
/// `/etc/java-17-openjdk`, Debian's Ruby gems in `/var/lib/gems`).
const STANDARD_PREFIXES: [&str; 10] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/var/lib",
];

/// Box paths for those of `mounts` outside [`STANDARD_PREFIXES`]:
/// `/opt/toolchains/<language>/<directory name>` (a number added when two names meet).
/// Toolchains found there work when they locate their own files relative to their executables
/// (rustup's, Go's, a JDK's); one with its host path compiled in does not, and is better
/// installed under `/usr` or `/opt`.
fn relocations(language: &str, mounts: &[PathBuf]) -> BTreeMap<PathBuf, PathBuf> {
    let mut relocated = BTreeMap::new();
    let mut taken = std::collections::BTreeSet::new();
    for mount in mounts {
        if STANDARD_PREFIXES.iter().any(|p| mount.starts_with(p)) {
            continue;
        }
        let name = mount
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".to_string());
        let base = Path::new(BOX_TOOLCHAINS).join(language);
        let mut target = base.join(&name);
        let mut n = 2;
        while !taken.insert(target.clone()) {
            target = base.join(format!("{name}-{n}"));
            n += 1;
        }
        relocated.insert(mount.clone(), target);
    }
    relocated
}

/// `path` as a box sees it: moved to its relocated mount's box path when it lies in one (by the
/// path found, or else by where its symlinks lead).
fn in_box(relocated: &BTreeMap<PathBuf, PathBuf>, path: &Path) -> PathBuf {
    let moved = |p: &Path| {
        relocated
            .iter()
            .find_map(|(host, target)| p.strip_prefix(host).ok().map(|rest| target.join(rest)))
    };
    moved(path)
        .or_else(|| {
            std::fs::canonicalize(path)
                .ok()
                .and_then(|real| moved(&real))
        })
        .unwrap_or_else(|| path.to_path_buf())
}

enum Failure {
    Missing { tool: String, looked: Vec<String> },
    Probe(String),
}

fn unavailable_reason(language: &str, failures: &[(&ToolchainSpec, Failure)]) -> String {
    // A toolchain that is installed but broken is the more useful thing to report.
    if let Some((spec, Failure::Probe(message))) = failures
        .iter()
        .find(|(_, f)| matches!(f, Failure::Probe(_)))
    {
        return format!(
            "{language} is installed but does not work ({} toolchain: {message}); reinstall the Debian package {}",
            spec.name, spec.package
        );
    }
    // Mention the last-resort variant first: it is the one a Debian machine can install.
    let packages: Vec<&str> = failures
        .iter()
        .rev()
        .map(|(s, _)| s.package.as_str())
        .collect();
    let details: Vec<String> = failures
        .iter()
        .filter_map(|(spec, failure)| match failure {
            Failure::Missing { tool, looked } => Some(format!(
                "{}: no `{tool}` at {}",
                spec.name,
                if looked.is_empty() {
                    "any configured path".to_string()
                } else {
                    looked.join(", ")
                }
            )),
            Failure::Probe(_) => None,
        })
        .collect();
    format!(
        "{language} is not installed: install the Debian package {} ({})",
        packages.join(" or "),
        details.join("; ")
    )
}

/// A toolchain that was not looked for: the command that made the registry uses other languages
/// only ([`Registry::look_only_for`](crate::Registry::look_only_for)).
pub(crate) fn not_looked_for(language: &Language, wanted: &str) -> Toolchain {
    Toolchain {
        language: language.name().to_string(),
        variant: None,
        available: false,
        version: None,
        reason: Some(format!(
            "{}'s toolchain was not looked for: this command uses only {wanted}",
            language.name()
        )),
        executables: BTreeMap::new(),
        mounts: Vec::new(),
        relocated: BTreeMap::new(),
        spec_index: None,
    }
}

fn discover_spec(
    spec: &ToolchainSpec,
    probes: &ProbeCache,
) -> Result<(BTreeMap<String, PathBuf>, String), Failure> {
    let mut executables = BTreeMap::new();
    for (tool, candidates) in &spec.tools {
        let mut looked = Vec::new();
        let found = candidates.iter().find_map(|pattern| {
            expand_candidate(pattern, &mut looked)
                .into_iter()
                .find(|path| is_executable(path))
        });
        match found {
            Some(path) => {
                executables.insert(tool.clone(), path);
            }
            None => {
                return Err(Failure::Missing {
                    tool: tool.clone(),
                    looked,
                })
            }
        }
    }
    let ctx = Context {
        tools: Some(&executables),
        ..Context::default()
    };
    let argv: Vec<String> = spec.version_argv.iter().map(|t| t.render(&ctx)).collect();
    let key = ProbeCache::key(&argv, &executables);
    let output = match key.as_deref().and_then(|k| probes.get(k)) {
        Some(output) => output,
        None => {
            let output = run_probe(&argv).map_err(Failure::Probe)?;
            if let Some(key) = key {
                probes.put(key, output.clone());
            }
            output
        }
    };
    let version = spec
        .version_regex
        .captures(&output)
        .and_then(|c| c.get(1).or_else(|| c.get(0)))
        .map(|m| m.as_str().to_string())
        .ok_or_else(|| {
            let first = output.lines().next().unwrap_or("").trim();
            Failure::Probe(format!(
                "`{}` printed \"{first}\", which does not match /{}/",
                argv.join(" "),
                spec.version_regex.as_str()
            ))
        })?;
    Ok((executables, version))
}

/// Runs a version probe with a clean environment; returns stdout followed by stderr.
fn run_probe(argv: &[String]) -> Result<String, String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "empty version probe".to_string())?;
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", crate::plan::DEFAULT_PATH)
        .env("HOME", "/tmp")
        .env("LANG", "C.UTF-8")
        .env("DOTNET_CLI_TELEMETRY_OPTOUT", "1")
        .env("DOTNET_NOLOGO", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", argv.join(" ")))?;
    // Probes print a line or two: far below a pipe's capacity, so waiting before reading is safe.
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{}` did not finish within {}s",
                    argv.join(" "),
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for `{}`: {e}", argv.join(" "))),
        }
    };
    let mut text = String::new();
    let mut buffer = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_end(&mut buffer);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_end(&mut buffer);
    }
    text.push_str(&String::from_utf8_lossy(&buffer));
    if !status.success() {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!(
            "`{}` failed ({status}): {}",
            argv.join(" "),
            first.trim()
        ));
    }
    Ok(text)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

static ENV_VAR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("static regex"));

/// Expands `${VAR}` (a candidate with an unset or empty variable matches nothing) and `*`/`?`
/// wildcards (matches sorted, highest name first so `go-1.21` beats `go-1.19`). Every candidate
/// considered is appended to `looked`, unexpanded.
pub(crate) fn expand_candidate(pattern: &str, looked: &mut Vec<String>) -> Vec<PathBuf> {
    let mut unset = false;
    let expanded = ENV_VAR.replace_all(pattern, |caps: &regex::Captures<'_>| {
        match std::env::var(&caps[1]) {
            Ok(value) if !value.is_empty() => value,
            _ => {
                unset = true;
                String::new()
            }
        }
    });
    if unset {
        return Vec::new();
    }
    // What was looked at is reported as written (`${HOME}/...`): the reason reaches callers, who
    // learn no host path from it.
    looked.push(pattern.to_string());
    if !expanded.contains(['*', '?']) {
        return vec![PathBuf::from(expanded.as_ref())];
    }
    let mut paths = vec![PathBuf::from("/")];
    for component in expanded.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &paths {
            if component.contains(['*', '?']) {
                let Ok(entries) = std::fs::read_dir(base) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| wildcard_match(component, name))
                    .collect();
                names.sort_unstable_by(|a, b| b.cmp(a));
                next.extend(names.into_iter().map(|n| base.join(n)));
            } else {
                next.push(base.join(component));
            }
        }
        paths = next;
    }
    paths
}

/// Shell-style matching of `*` (any run) and `?` (one character); a leading `.` must be explicit.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn is_system_root(path: &Path) -> bool {
    SYSTEM_ROOTS.iter().any(|root| path == Path::new(root))
}

fn is_documentation(path: &Path) -> bool {
    path.starts_with("/usr/share/doc") || path.starts_with("/usr/share/man")
}

/// The read-only mounts a toolchain needs; see [`Toolchain::mounts`].
fn mounts_for(executables: &BTreeMap<String, PathBuf>, configured: &[String]) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = Vec::new();
    for path in executables.values() {
        let Ok(real) = std::fs::canonicalize(path) else {
            continue;
        };
        let Some(dir) = real.parent() else { continue };
        let in_bin = matches!(
            dir.file_name().and_then(|n| n.to_str()),
            Some("bin" | "sbin")
        );
        let Some(root) = dir.parent().filter(|_| in_bin) else {
            continue;
        };
        if is_system_root(root) {
            continue;
        }
        mounts.push(root.to_path_buf());
        // Debian's Go links $GOROOT/src to /usr/share/go-1.19/src: follow one level of such links.
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.filter_map(|e| e.ok()) {
                let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
                if !is_link {
                    continue;
                }
                if let Ok(target) = std::fs::canonicalize(entry.path()) {
                    if !target.starts_with(root) && !is_documentation(&target) {
                        mounts.push(target);
                    }
                }
            }
        }
    }
    for pattern in configured {
        let mut looked = Vec::new();
        for path in expand_candidate(pattern, &mut looked) {
            if let Ok(real) = std::fs::canonicalize(&path) {
                if path != real && !is_system_root(&real) {
                    // Mount the link's target too; the link itself lives in an already listed or
                    // system directory.
                    mounts.push(real);
                }
                mounts.push(path);
            }
        }
    }
    mounts.sort();
    mounts.dedup();
    // Drop paths already covered by a listed parent.
    let mut result: Vec<PathBuf> = Vec::new();
    for path in mounts {
        if !result.iter().any(|parent| path.starts_with(parent)) {
            result.push(path);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(
            "stable-*",
            "stable-x86_64-unknown-linux-gnu"
        ));
        assert!(wildcard_match("python3.*", "python3.11"));
        assert!(!wildcard_match("python3.*", "python3"));
        assert!(wildcard_match("go-1.?9", "go-1.19"));
        assert!(!wildcard_match("*", ".hidden"));
    }

    #[test]
    fn host_specific_mounts_get_neutral_box_paths() {
        let mounts: Vec<PathBuf> = [
            "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu",
            "/usr/lib/gcc",
            "/var/lib/gems",
            "/home/a/tools/x",
            "/home/b/x",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let relocated = relocations("rust", &mounts);
        let expected: BTreeMap<PathBuf, PathBuf> = [
            (
                "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu",
                "/opt/toolchains/rust/stable-x86_64-unknown-linux-gnu",
            ),
            ("/home/a/tools/x", "/opt/toolchains/rust/x"),
            ("/home/b/x", "/opt/toolchains/rust/x-2"),
        ]
        .iter()
        .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
        .collect();
        assert_eq!(relocated, expected);
        assert_eq!(
            in_box(
                &relocated,
                Path::new("/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc")
            ),
            Path::new("/opt/toolchains/rust/stable-x86_64-unknown-linux-gnu/bin/rustc")
        );
        assert_eq!(
            in_box(&relocated, Path::new("/usr/bin/cc")),
            Path::new("/usr/bin/cc")
        );
    }

    #[test]
    fn unset_variables_skip_the_candidate() {
        let mut looked = Vec::new();
        let paths = expand_candidate("${CODEBEAKER_SURELY_UNSET_VAR}/bin/x", &mut looked);
        assert!(paths.is_empty());
        assert!(looked.is_empty());
    }

    #[test]
    fn globs_expand_against_the_filesystem() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["go-1.19", "go-1.21", "other"] {
            std::fs::create_dir_all(dir.path().join(name).join("bin")).expect("mkdir");
        }
        let mut looked = Vec::new();
        let pattern = format!("{}/go-*/bin", dir.path().display());
        let paths = expand_candidate(&pattern, &mut looked);
        assert_eq!(
            paths,
            vec![
                dir.path().join("go-1.21/bin"),
                dir.path().join("go-1.19/bin")
            ]
        );
    }
}
