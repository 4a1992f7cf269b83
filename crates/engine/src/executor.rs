//! The one executor for code: language plan → files in the box → compile (or a cache hit) → run
//! → typed outcome and, for snippets, the JSON `output`.
//!
//! Source files go to a private directory under the box's `/tmp`, removed after the run, so a run
//! never sees the sources of an earlier one. Compiled artifacts are read out of the box once and
//! stored in the compile cache, which every box sees read-only at the same path; the next run of
//! the same program starts the cached artifact directly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use codebeaker_languages::{Mode, Plan};
use codebeaker_sandbox::{
    Command, EntryKind, FileRoot, OutputChunk, RunLimits, RunOutcome, RunStatus, SandboxBox,
    WarmSpec,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::{Engine, EngineError};

/// How long after a failed build of a warm worker's native part the engine tries again.
const WARM_HOST_RETRY: Duration = Duration::from_secs(60);

/// Most bytes of compiled artifacts read out of a box for one program.
const MAX_ARTIFACT_BYTES: u64 = 256 * 1024 * 1024;

static RUN_SEQ: AtomicU64 = AtomicU64::new(0);

/// Code to run.
#[derive(Debug, Clone)]
pub struct CodeRequest {
    /// Language name or alias.
    pub language: String,
    pub code: String,
    /// Present: snippet mode, bound to `input_data`. Absent: script mode.
    pub input: Option<serde_json::Value>,
    pub stdin: Vec<u8>,
    pub limits: RunLimits,
}

/// How compiling went, for compiled languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileInfo {
    /// The artifact came from the compile cache.
    pub cache_hit: bool,
    /// Time spent compiling (zero on a cache hit).
    pub duration: Duration,
}

/// The result of running code.
#[derive(Debug, Clone)]
pub struct Execution {
    /// Canonical language name.
    pub language: String,
    /// The run's typed outcome; `status` is `compile_error` when the code did not compile.
    pub outcome: RunOutcome,
    /// The snippet's `result`, as JSON.
    pub output: Option<serde_json::Value>,
    /// Why it failed, in the language's own words where there are any.
    pub error: Option<String>,
    pub compile: Option<CompileInfo>,
    /// Time from the request to the end of the run.
    pub total: Duration,
}

impl Execution {
    /// Whether the code ran to the end without error (and, for snippets, produced `result`).
    pub fn success(&self) -> bool {
        self.outcome.status == RunStatus::Ok
    }
}

fn to_abs(rel: &str) -> PathBuf {
    Path::new(FileRoot::Tmp.dir()).join(rel)
}

impl Engine {
    /// Runs `req` in `bx`. The one path every `execute` takes, in a session or one-shot.
    pub async fn execute_in(
        &self,
        bx: &SandboxBox,
        req: &CodeRequest,
    ) -> Result<Execution, EngineError> {
        self.execute_in_streaming(bx, req, None).await
    }

    /// Like [`execute_in`](Self::execute_in), sending the program's output to `output` as it
    /// comes (the compile step's output is not streamed).
    pub async fn execute_in_streaming(
        &self,
        bx: &SandboxBox,
        req: &CodeRequest,
        output: Option<UnboundedSender<OutputChunk>>,
    ) -> Result<Execution, EngineError> {
        self.execute_with(bx, req, output, true).await
    }

    /// Like [`execute_in`](Self::execute_in), never through a warm worker: for a box that runs
    /// one program only, where starting a worker would cost more than the run.
    pub(crate) async fn execute_cold(
        &self,
        bx: &SandboxBox,
        req: &CodeRequest,
    ) -> Result<Execution, EngineError> {
        self.execute_with(bx, req, None, false).await
    }

    async fn execute_with(
        &self,
        bx: &SandboxBox,
        req: &CodeRequest,
        output: Option<UnboundedSender<OutputChunk>>,
        warm: bool,
    ) -> Result<Execution, EngineError> {
        let started = Instant::now();
        let registry = self.registry();
        let language = registry.resolve(&req.language)?;
        let toolchain = registry.toolchain(language.name())?;
        let mode = if req.input.is_some() {
            Mode::Snippet
        } else {
            Mode::Script
        };
        let plan = language.prepare(toolchain, &req.code, mode)?;
        let n = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!(".codebeaker/run-{n}");
        let result = self.execute_plan(bx, req, &plan, &base, output, warm).await;
        // The run itself removes its directory; anything that ended earlier did not.
        if !matches!(result, Ok((_, true))) {
            if let Err(e) = bx.remove(FileRoot::Tmp, &base, true).await {
                tracing::debug!(error = %e, "removing a run's sources failed");
            }
        }
        let (mut execution, _) = result?;
        execution.total = started.elapsed();
        Ok(execution)
    }

    /// Runs the plan; the flag says whether the run removed the plan's directory itself.
    async fn execute_plan(
        &self,
        bx: &SandboxBox,
        req: &CodeRequest,
        plan: &Plan,
        base: &str,
        output: Option<UnboundedSender<OutputChunk>>,
        warm: bool,
    ) -> Result<(Execution, bool), EngineError> {
        let src_rel = format!("{base}/src");
        let out_rel = format!("{base}/out");
        let (src_abs, out_abs) = (to_abs(&src_rel), to_abs(&out_rel));
        // The sources travel with the first command that needs them: the compile step on a
        // cache miss, else the run itself.
        let mut files = source_files(plan, &src_rel);
        let mut compile = None;
        let artifact_dir = match plan.cache_key() {
            Some(key) if plan.has_compile_step() => {
                match self
                    .compiled(
                        bx,
                        plan,
                        key,
                        &BuildDirs {
                            src_abs: &src_abs,
                            out_rel: &out_rel,
                            out_abs: &out_abs,
                        },
                        &mut files,
                    )
                    .await?
                {
                    Compiled::Ready { dir, info } => {
                        compile = Some(info);
                        self.in_box(&dir)
                    }
                    Compiled::Failed(execution) => return Ok((*execution, false)),
                }
            }
            _ => out_abs.clone(),
        };
        let step = plan.run_step(&src_abs, &artifact_dir);
        let warm = match warm {
            true => self.warm_spec(bx, plan, &src_abs, &artifact_dir).await,
            false => None,
        };
        let snippet = req
            .input
            .as_ref()
            .map(|v| serde_json::to_vec(v).unwrap_or_default());
        let cmd = Command {
            argv: step.argv,
            env: step.env,
            cwd: None,
            stdin: req.stdin.clone(),
            capture_fd4: snippet.is_some(),
            fd3_input: snippet,
            limits: req.limits,
            warm,
            files,
            cleanup: Some((FileRoot::Tmp, base.to_string())),
        };
        let mut outcome = bx.run_streaming(&cmd, output).await?;
        let rewrite = |text: &[u8]| {
            plan.rewrite_diagnostics(&String::from_utf8_lossy(text), &src_abs, &artifact_dir)
        };
        let mut output = None;
        if req.input.is_some() && outcome.status == RunStatus::Ok {
            match outcome
                .result
                .as_deref()
                .map(serde_json::from_slice::<serde_json::Value>)
            {
                Some(Ok(value)) => output = Some(value),
                Some(Err(e)) => {
                    outcome.status = RunStatus::RuntimeError;
                    outcome.message = Some(format!("the snippet's result is not valid JSON: {e}"));
                }
                None => {
                    outcome.status = RunStatus::RuntimeError;
                    outcome.message = Some("snippet did not set `result`".into());
                }
            }
        }
        let error = failure_message(&outcome, &rewrite(&outcome.stderr));
        let execution = Execution {
            language: plan.language().to_string(),
            outcome,
            output,
            error,
            compile,
            total: Duration::ZERO,
        };
        Ok((execution, true))
    }

    /// Finds the program's artifacts in the cache, or compiles them in the box and stores them.
    async fn compiled(
        &self,
        bx: &SandboxBox,
        plan: &Plan,
        key: &str,
        dirs: &BuildDirs<'_>,
        files: &mut Vec<(FileRoot, String, Vec<u8>, bool)>,
    ) -> Result<Compiled, EngineError> {
        let BuildDirs {
            src_abs,
            out_rel,
            out_abs,
        } = *dirs;
        let cache = self.cache();
        if let Some(dir) = cache.lookup(key) {
            return Ok(Compiled::Ready {
                dir,
                info: CompileInfo {
                    cache_hit: true,
                    duration: Duration::ZERO,
                },
            });
        }
        // One compile per program at a time, across boxes and processes.
        let lock = {
            let cache = cache.clone();
            let key = key.to_string();
            tokio::task::spawn_blocking(move || cache.lock(&key))
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?
                .map_err(|e| EngineError::Internal(e.to_string()))?
        };
        if let Some(dir) = cache.lookup(key) {
            return Ok(Compiled::Ready {
                dir,
                info: CompileInfo {
                    cache_hit: true,
                    duration: Duration::ZERO,
                },
            });
        }
        let started = Instant::now();
        bx.create_dir(FileRoot::Tmp, out_rel, true).await?;
        let Some(step) = plan.compile_step(src_abs, out_abs) else {
            return Err(EngineError::Internal(
                "compiled language without a compile step".into(),
            ));
        };
        let cmd = Command {
            argv: step.argv,
            env: step.env,
            cwd: Some(src_abs.to_string_lossy().into_owned()),
            stdin: Vec::new(),
            fd3_input: None,
            capture_fd4: false,
            limits: self.config().compile_limits,
            warm: None,
            files: std::mem::take(files),
            cleanup: None,
        };
        let mut outcome = bx.run(&cmd).await?;
        let info = CompileInfo {
            cache_hit: false,
            duration: started.elapsed(),
        };
        if outcome.status != RunStatus::Ok {
            if outcome.status == RunStatus::RuntimeError {
                outcome.status = RunStatus::CompileError;
            }
            let mut text = String::from_utf8_lossy(&outcome.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&outcome.stdout));
            let diagnostics = plan.rewrite_diagnostics(&text, src_abs, out_abs);
            let error = Some(match outcome.status {
                RunStatus::CompileError => diagnostics.trim_end().to_string(),
                _ => format!(
                    "compiling failed: {} ({})\n{}",
                    outcome.status,
                    outcome.message.clone().unwrap_or_default(),
                    diagnostics.trim_end()
                ),
            });
            return Ok(Compiled::Failed(Box::new(Execution {
                language: plan.language().to_string(),
                outcome,
                output: None,
                error,
                compile: Some(info),
                total: Duration::ZERO,
            })));
        }
        let (entries, truncated) = bx.list(FileRoot::Tmp, out_rel, true, 16, 10_000).await?;
        if truncated {
            return Err(EngineError::Internal(
                "the compiler produced too many files".into(),
            ));
        }
        let mut files = Vec::new();
        let mut total = 0u64;
        for entry in entries.iter().filter(|e| e.kind == EntryKind::File) {
            total += entry.size;
            if total > MAX_ARTIFACT_BYTES {
                return Err(EngineError::Internal(
                    "compiled artifacts are too large to cache".into(),
                ));
            }
            let data = bx
                .read_file(FileRoot::Tmp, &entry.path, MAX_ARTIFACT_BYTES)
                .await?;
            let name = entry
                .path
                .strip_prefix(&format!("{out_rel}/"))
                .unwrap_or(&entry.path)
                .to_string();
            files.push((name, data, entry.mode & 0o111 != 0));
        }
        for artifact in plan.artifacts() {
            if !files.iter().any(|(name, _, _)| *name == artifact) {
                let message = format!("the compiler did not produce {artifact}");
                return Err(EngineError::Internal(message));
            }
        }
        let cache = cache.clone();
        let key = key.to_string();
        let dir = tokio::task::spawn_blocking(move || {
            let _lock = lock;
            cache.insert(&key, &files)
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
        .map_err(|e| EngineError::Internal(format!("storing the compiled program: {e}")))?;
        Ok(Compiled::Ready { dir, info })
    }
}

impl Engine {
    /// The warm worker that runs `plan`'s run step, if warm workers are on and the plan's
    /// toolchain has one that can start here. A worker's native part is built on first need, in
    /// `bx`, and kept in the compile cache; when it cannot be built, that worker's runs start
    /// cold (said in the log) and the build is tried again after [`WARM_HOST_RETRY`].
    pub(crate) async fn warm_spec(
        &self,
        bx: &SandboxBox,
        plan: &Plan,
        src_dir: &Path,
        out_dir: &Path,
    ) -> Option<WarmSpec> {
        if !self.config().warm_workers {
            return None;
        }
        let worker = plan.warm()?;
        let host = if worker.needs_host() {
            let mut hosts = self.warm_hosts.lock().await;
            let retry = match hosts.get(&worker) {
                None => true,
                Some(Ok(_)) => false,
                Some(Err(failed)) => failed.elapsed() >= WARM_HOST_RETRY,
            };
            if retry {
                let built = self.build_warm_host(bx, worker).await.map_err(|e| {
                    tracing::warn!(
                        worker = worker.name(),
                        error = %e,
                        "the warm worker's native part could not be built; its runs start cold"
                    );
                    Instant::now()
                });
                hosts.insert(worker, built);
            }
            Some(self.in_box(hosts.get(&worker)?.as_ref().ok()?))
        } else {
            None
        };
        plan.warm_worker(src_dir, out_dir, host.as_deref())
            .map(warm_spec)
    }

    /// Compiles `worker`'s native part in `bx` (or finds it in the compile cache) and returns
    /// its cache directory.
    async fn build_warm_host(
        &self,
        bx: &SandboxBox,
        worker: codebeaker_languages::WarmWorker,
    ) -> Result<PathBuf, EngineError> {
        let c = self.registry().toolchain("c")?;
        let plan = worker
            .host_plan(c)
            .ok_or_else(|| EngineError::Internal("this worker builds nothing".into()))??;
        let key = plan
            .cache_key()
            .ok_or_else(|| EngineError::Internal("a native build without a cache key".into()))?
            .to_string();
        let n = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!(".codebeaker/warm-{n}");
        let (src_rel, out_rel) = (format!("{base}/src"), format!("{base}/out"));
        let (src_abs, out_abs) = (to_abs(&src_rel), to_abs(&out_rel));
        let mut files = source_files(&plan, &src_rel);
        let dirs = BuildDirs {
            src_abs: &src_abs,
            out_rel: &out_rel,
            out_abs: &out_abs,
        };
        let compiled = self.compiled(bx, &plan, &key, &dirs, &mut files).await;
        if let Err(e) = bx.remove(FileRoot::Tmp, &base, true).await {
            tracing::debug!(error = %e, "removing a native build's directory failed");
        }
        match compiled? {
            Compiled::Ready { dir, .. } => Ok(dir),
            Compiled::Failed(execution) => Err(EngineError::Internal(format!(
                "compiling it failed: {}",
                execution.error.unwrap_or_default()
            ))),
        }
    }
}

/// A plan's files as the box writes them: under `src_rel` in the box's `/tmp`.
fn source_files(plan: &Plan, src_rel: &str) -> Vec<(FileRoot, String, Vec<u8>, bool)> {
    plan.files()
        .iter()
        .map(|f| {
            let path = format!("{src_rel}/{}", f.name);
            (FileRoot::Tmp, path, f.contents.clone(), f.executable)
        })
        .collect()
}

/// The sandbox's description of a warm worker; workers are shared by runs with the same argv and
/// environment.
pub(crate) fn warm_spec(step: codebeaker_languages::Step) -> WarmSpec {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    step.argv.hash(&mut h);
    step.env.hash(&mut h);
    WarmSpec {
        key: format!("{:016x}", h.finish()),
        argv: step.argv,
        env: step.env,
    }
}

/// Where a compile step reads and writes, inside the box.
#[derive(Clone, Copy)]
struct BuildDirs<'a> {
    src_abs: &'a Path,
    /// The output directory relative to `/tmp` (for the box's file operations).
    out_rel: &'a str,
    out_abs: &'a Path,
}

enum Compiled {
    Ready { dir: PathBuf, info: CompileInfo },
    Failed(Box<Execution>),
}

/// The user-facing error of a run that did not succeed.
fn failure_message(outcome: &RunOutcome, stderr: &str) -> Option<String> {
    let stderr = stderr.trim_end();
    match outcome.status {
        RunStatus::Ok => None,
        RunStatus::RuntimeError | RunStatus::CompileError => {
            Some(match (stderr.is_empty(), &outcome.message) {
                (false, _) => stderr.to_string(),
                (true, Some(m)) => m.clone(),
                (true, None) => match (outcome.exit_code, outcome.signal) {
                    (_, Some(s)) => format!("killed by signal {s}"),
                    (Some(c), _) => format!("exited with code {c}"),
                    _ => "failed".to_string(),
                },
            })
        }
        status => {
            let why = outcome
                .message
                .clone()
                .unwrap_or_else(|| status.to_string());
            Some(if stderr.is_empty() {
                format!("{status}: {why}")
            } else {
                format!("{status}: {why}\n{stderr}")
            })
        }
    }
}
