//! The one executor for code: language plan → files in the box → compile (or a cache hit) → run
//! → typed outcome and, for snippets, the JSON `output`.
//!
//! Source files go to a private directory under the box's `/tmp`, removed after the run, so a run
//! never sees the sources of an earlier one. Compiled artifacts live in the compile cache, which
//! every box sees read-only at the same path; the run starts the cached artifact directly.
//!
//! # Shared build products come from clean build boxes
//!
//! A compile-cache entry is shared with every caller, so it must not depend on anything a caller
//! controls but the source itself. A cache miss is therefore never compiled in the caller's own
//! box (whose `/tmp`, `HOME` and processes the caller's earlier runs could have prepared), but in
//! a *build box*: made for this one compile, never from the pool, running nothing but the steps
//! below, destroyed afterwards.
//!
//! 1. The caller's source files are copied into the build box's fresh `/tmp` (its `HOME`).
//! 2. For a toolchain with a build cache (Go), the engine's read-only copy of it is copied in
//!    ([`Engine::build_cache`]): made once, itself in a clean build box, pinned in the cache.
//! 3. The compile step runs with the toolchain's pinned environment from the registry (nothing is
//!    inherited; `GOENV=off`, an explicit class path for javac, ...).
//! 4. The outputs are read back once the compile run has ended: the sandbox ends every process of
//!    a run with it, the build box runs nothing else, and a probe in the box checks that only
//!    its init is left, so nothing can change them while they are read. They are read against a
//!    byte budget counted on the bytes actually read, never on a listing.
//! 5. They are stored under the caller as [`CacheOwner`]: the caller's own budget pays for them,
//!    and no other caller's stores can evict them. The Node worker's addon and Go's build cache are
//!    [`CacheOwner::Pinned`], never evicted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codebeaker_languages::{CacheLock, CacheOwner, LanguageError, Mode, Plan};
use codebeaker_sandbox::{
    EntryKind, FileRoot, OutputChunk, RunLimits, RunOutcome, RunSpec, SandboxBox, SandboxError,
    StdinEvent, Verdict, WarmSpec, MIB,
};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::oneshot;

use crate::session::Caller;
use crate::{Engine, EngineError};

/// How long after a failed build of a warm worker's native part (or of a toolchain's build
/// cache) the engine tries again.
const WARM_HOST_RETRY: Duration = Duration::from_secs(60);

/// Most bytes of compiled artifacts read out of a build box for one program, counted on the bytes
/// read.
const MAX_ARTIFACT_BYTES: u64 = 64 * MIB;

/// Most bytes of a toolchain's build cache read out of a build box (Go's standard library as the
/// registry's seed uses it is about 30 MiB).
const MAX_BUILD_CACHE_BYTES: u64 = 512 * MIB;

/// Most files read out of a build box at once.
const MAX_ARTIFACT_FILES: u32 = 10_000;

/// Where a build box keeps the sources and the outputs of its one compile (under `/tmp`).
const BUILD_SRC: &str = "build/src";
const BUILD_OUT: &str = "build/out";

static RUN_SEQ: AtomicU64 = AtomicU64::new(0);

/// Code to run.
#[derive(Debug, Clone, Default)]
pub struct CodeRequest {
    /// Language name or alias.
    pub language: String,
    pub code: String,
    /// Present: snippet mode, bound to `input_data`. Absent: script mode.
    pub input: Option<serde_json::Value>,
    pub stdin: Vec<u8>,
    pub limits: RunLimits,
    /// Files written beside the main file (see [`Plan::add_files`]): the program's other
    /// sources, headers and data. Those with the main file's extension are compiled with it.
    pub files: Vec<codebeaker_languages::PlanFile>,
    /// Arguments after the program's own command line (the run goes cold: a warm worker takes
    /// none).
    pub args: Vec<String>,
    /// The program's stderr goes to its stdout, one stream in the order written (the run goes
    /// cold).
    pub stderr_to_stdout: bool,
    /// Limits of the compile step, when one runs (a compile-cache hit runs none); `None`: the
    /// engine's `compile_limits`.
    pub compile_limits: Option<RunLimits>,
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
        self.outcome.status == Verdict::Ok
    }
}

fn to_abs(rel: &str) -> PathBuf {
    Path::new(FileRoot::Tmp.dir()).join(rel)
}

/// What a caller attaches to a program while it runs: where its output goes as it comes, the
/// receiver whose firing stops it, for a program started with its stdin open, the input
/// sent to it while it runs (see `SandboxBox::run_with_stdin`), and who is told when the
/// program starts, after its compile step.
pub(crate) struct RunHooks {
    pub output: Option<UnboundedSender<OutputChunk>>,
    pub cancel: oneshot::Receiver<()>,
    pub stdin: Option<mpsc::Receiver<StdinEvent>>,
    pub started: Option<oneshot::Sender<Option<CompileInfo>>>,
}

impl RunHooks {
    /// Hooks that stream to `output` and never cancel (the cancel's sender is gone).
    pub(crate) fn streaming(output: Option<UnboundedSender<OutputChunk>>) -> RunHooks {
        let (_, cancel) = oneshot::channel();
        RunHooks {
            output,
            cancel,
            stdin: None,
            started: None,
        }
    }
}

/// Compiled files as read out of a build box: `(name in the output directory, contents,
/// executable)`.
type Artifacts = Vec<(String, Vec<u8>, bool)>;

impl Engine {
    /// Runs `req` in `bx`. The one path every `execute` takes, in a session or one-shot. A
    /// compile this needs is charged to the caller whose session owns `bx` (to the anonymous
    /// caller for a box of no session).
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
        self.execute_hooked(bx, req, RunHooks::streaming(output))
            .await
    }

    /// Like [`execute_in_streaming`](Self::execute_in_streaming), with a cancel as well.
    pub(crate) async fn execute_hooked(
        &self,
        bx: &SandboxBox,
        req: &CodeRequest,
        hooks: RunHooks,
    ) -> Result<Execution, EngineError> {
        let caller = self.caller_of(bx);
        self.execute_with(&caller, bx, req, hooks, true).await
    }

    /// Like [`execute_hooked`](Self::execute_hooked) for `caller`'s one-shot box.
    pub(crate) async fn execute_for(
        &self,
        caller: &Caller,
        bx: &SandboxBox,
        req: &CodeRequest,
        hooks: RunHooks,
    ) -> Result<Execution, EngineError> {
        self.execute_with(caller, bx, req, hooks, true).await
    }

    /// Like [`execute_for`](Self::execute_for), never through a warm worker: for a box that runs
    /// one program only, where starting a worker would cost more than the run.
    pub(crate) async fn execute_cold(
        &self,
        caller: &Caller,
        bx: &SandboxBox,
        req: &CodeRequest,
        hooks: RunHooks,
    ) -> Result<Execution, EngineError> {
        self.execute_with(caller, bx, req, hooks, false).await
    }

    async fn execute_with(
        &self,
        caller: &Caller,
        bx: &SandboxBox,
        req: &CodeRequest,
        hooks: RunHooks,
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
        let mut plan = language.prepare(toolchain, &req.code, mode)?;
        if !req.files.is_empty() {
            plan.add_files(req.files.clone())?;
        }
        let n = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!(".codebeaker/run-{n}");
        let result = self
            .execute_plan(caller, bx, req, &plan, &base, hooks, warm)
            .await;
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
    #[allow(clippy::too_many_arguments)]
    async fn execute_plan(
        &self,
        caller: &Caller,
        bx: &SandboxBox,
        req: &CodeRequest,
        plan: &Plan,
        base: &str,
        hooks: RunHooks,
        warm: bool,
    ) -> Result<(Execution, bool), EngineError> {
        let src_rel = format!("{base}/src");
        let out_rel = format!("{base}/out");
        let (src_abs, out_abs) = (to_abs(&src_rel), to_abs(&out_rel));
        let files = source_files(plan, &src_rel);
        let mut compile = None;
        let artifact_dir = match plan.cache_key() {
            Some(key) if plan.has_compile_step() => {
                let owner = CacheOwner::Caller(caller.0.clone());
                let limits = req.compile_limits.unwrap_or(self.config().compile_limits);
                match self.compiled(&owner, plan, key, limits).await? {
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
        // A warm worker runs the plan's own command line, with nothing added or redirected.
        let plain = req.args.is_empty() && !req.stderr_to_stdout;
        let warm = match warm && plain {
            true => self.warm_spec(plan, &src_abs, &artifact_dir).await,
            false => None,
        };
        let mut argv = step.argv;
        argv.extend(req.args.iter().cloned());
        if req.stderr_to_stdout {
            // The shell replaces itself with the program once fd 2 is fd 1: one stream.
            let merge = ["/bin/sh", "-c", "exec \"$@\" 2>&1", "sh"];
            argv.splice(0..0, merge.map(String::from));
        }
        let snippet = req
            .input
            .as_ref()
            .map(|v| serde_json::to_vec(v).unwrap_or_default());
        // A launcher says on descriptor 4 that the program did not compile.
        let syntax_verdict = snippet.is_none() && plan.reports_syntax_errors();
        let cmd = RunSpec {
            argv,
            env: step.env,
            cwd: None,
            stdin: req.stdin.clone(),
            capture_fd4: snippet.is_some() || syntax_verdict,
            fd3_input: snippet,
            limits: req.limits,
            warm,
            files,
            cleanup: Some((FileRoot::Tmp, base.to_string())),
            cell: None,
        };
        if let Some(started) = hooks.started {
            let _ = started.send(compile);
        }
        let mut outcome = bx
            .run_with_stdin(&cmd, hooks.output, hooks.cancel, hooks.stdin)
            .await?;
        let rewrite = |text: &[u8]| {
            plan.rewrite_diagnostics(&String::from_utf8_lossy(text), &src_abs, &artifact_dir)
        };
        if syntax_verdict
            && outcome.status == Verdict::RuntimeError
            && outcome.result.as_deref() == Some(b"syntax".as_slice())
        {
            outcome.status = Verdict::CompileError;
        }
        if syntax_verdict {
            outcome.result = None;
        }
        let mut output = None;
        if req.input.is_some() && outcome.status == Verdict::Ok {
            match outcome
                .result
                .as_deref()
                .map(serde_json::from_slice::<serde_json::Value>)
            {
                Some(Ok(value)) => output = Some(value),
                Some(Err(e)) => {
                    outcome.status = Verdict::RuntimeError;
                    outcome.message = Some(format!("the snippet's result is not valid JSON: {e}"));
                }
                None => {
                    outcome.status = Verdict::RuntimeError;
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

    /// The caller whose session owns `bx`, or the anonymous caller.
    fn caller_of(&self, bx: &SandboxBox) -> Caller {
        self.sessions
            .caller_of_box(bx.name())
            .unwrap_or_else(Caller::anonymous)
    }

    /// Finds the program's artifacts in the cache (recording `owner`'s use), or compiles them in
    /// a clean build box with `limits` and stores them under `owner`.
    async fn compiled(
        &self,
        owner: &CacheOwner,
        plan: &Plan,
        key: &str,
        limits: RunLimits,
    ) -> Result<Compiled, EngineError> {
        let hit = |dir| Compiled::Ready {
            dir,
            info: CompileInfo {
                cache_hit: true,
                duration: Duration::ZERO,
            },
        };
        let cache = Arc::clone(self.cache());
        let (k, o) = (key.to_string(), owner.clone());
        if let Some(dir) = blocking(move || cache.claim(&k, &o)).await? {
            return Ok(hit(dir));
        }
        // One compile per program at a time, across boxes and processes.
        let cache = Arc::clone(self.cache());
        let k = key.to_string();
        let lock = blocking(move || cache.lock(&k)).await?;
        let (cache, o) = (Arc::clone(self.cache()), owner.clone());
        let (lock, found) = blocking(move || {
            let found = cache.claim_locked(&lock, &o);
            found.map(|f| (lock, f))
        })
        .await?;
        if let Some(dir) = found {
            return Ok(hit(dir));
        }
        let started = Instant::now();
        let built = self.build(plan, limits).await?;
        let info = CompileInfo {
            cache_hit: false,
            duration: started.elapsed(),
        };
        let files = match built {
            Ok(files) => files,
            Err(mut failed) => {
                failed.compile = Some(info);
                return Ok(Compiled::Failed(failed));
            }
        };
        let dir = self.store(lock, owner, files).await?;
        Ok(Compiled::Ready { dir, info })
    }

    /// Stores `files` as the entry of `lock`'s key, owned by `owner`.
    async fn store(
        &self,
        lock: CacheLock,
        owner: &CacheOwner,
        files: Artifacts,
    ) -> Result<PathBuf, EngineError> {
        let (cache, owner) = (Arc::clone(self.cache()), owner.clone());
        blocking(move || cache.insert(lock.key(), &owner, &files))
            .await
            .map_err(|e| EngineError::Internal(format!("storing the compiled program: {e}")))
    }

    /// Compiles `plan` in a build box made for it, destroyed afterwards; `Err` inside is the
    /// compile's own failure, for the caller to see.
    async fn build(
        &self,
        plan: &Plan,
        limits: RunLimits,
    ) -> Result<Result<Artifacts, Box<Execution>>, EngineError> {
        let seed = match plan.build_cache_dir() {
            Some(_) => self.build_cache(plan).await,
            None => None,
        };
        let bx = self.build_box().await?;
        let seed = seed.map(|dir| self.in_box(&dir));
        let built = self.build_in(&bx, plan, seed.as_deref(), limits).await;
        self.destroy_in_background(bx);
        built.map_err(build_box_error)
    }

    /// A box for one compile: never from the pool, never given to a caller, no warm workers.
    async fn build_box(&self) -> Result<SandboxBox, EngineError> {
        self.new_box(self.config().box_limits)
            .await
            .map_err(build_box_error)
    }

    /// Steps 1–4 of the module docs, in `bx`, the compile step with `limits`.
    async fn build_in(
        &self,
        bx: &SandboxBox,
        plan: &Plan,
        seed: Option<&Path>,
        limits: RunLimits,
    ) -> Result<Result<Artifacts, Box<Execution>>, EngineError> {
        let (src_abs, out_abs) = (to_abs(BUILD_SRC), to_abs(BUILD_OUT));
        if let (Some(dir), Some(seed)) = (plan.build_cache_dir(), seed) {
            self.copy_build_cache(bx, seed, dir).await?;
        }
        bx.create_dir(FileRoot::Tmp, BUILD_OUT, true).await?;
        let Some(step) = plan.compile_step(&src_abs, &out_abs) else {
            return Err(EngineError::Internal(
                "compiled language without a compile step".into(),
            ));
        };
        let cmd = RunSpec {
            argv: step.argv,
            env: step.env,
            cwd: Some(src_abs.to_string_lossy().into_owned()),
            stdin: Vec::new(),
            fd3_input: None,
            capture_fd4: false,
            limits,
            warm: None,
            files: source_files(plan, BUILD_SRC),
            cleanup: None,
            cell: None,
        };
        let outcome = bx.run(&cmd).await?;
        if outcome.status != Verdict::Ok {
            return Ok(Err(Box::new(compile_failure(
                plan, outcome, &src_abs, &out_abs,
            ))));
        }
        // The compile run has ended, and with it every process it started; nothing else runs in
        // this box. What is read now can no longer change: checked, not assumed.
        self.ensure_empty(bx).await?;
        let files = read_back(bx, BUILD_OUT, MAX_ARTIFACT_BYTES).await?;
        for artifact in plan.artifacts() {
            if !files.iter().any(|(name, _, _)| *name == artifact) {
                let message = format!("the compiler did not produce {artifact}");
                return Err(EngineError::Internal(message));
            }
        }
        Ok(Ok(files))
    }

    /// Fails unless no process but the init lives in the build box: a process the compile left
    /// behind could still change its outputs while they are read. Looked at from inside the box
    /// (its own PID namespace shows every process of the box, and the probe starts none of its
    /// own); a process that is still being reaped gets a moment to go.
    async fn ensure_empty(&self, bx: &SandboxBox) -> Result<(), EngineError> {
        const PROBE: &str =
            "cd /proc && for p in [0-9]*; do [ \"$p\" = 1 ] || [ \"$p\" = $$ ] || echo \"$p\"; done";
        let mut probe = RunSpec::new(["/bin/sh", "-c", PROBE]);
        probe.cwd = Some(FileRoot::Tmp.dir().to_string());
        probe.limits = self.config().compile_limits;
        for attempt in 0..3 {
            let outcome = bx.run(&probe).await?;
            let left = String::from_utf8_lossy(&outcome.stdout);
            if outcome.status == Verdict::Ok && left.trim().is_empty() {
                return Ok(());
            }
            if attempt == 2 {
                return Err(EngineError::Internal(format!(
                    "the compiler left processes running in its build box ({}); nothing was \
                     stored",
                    left.split_whitespace().collect::<Vec<_>>().join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Copies the engine's read-only build cache `seed` (its path in the box) to `dir` in the
    /// build box.
    async fn copy_build_cache(
        &self,
        bx: &SandboxBox,
        seed: &Path,
        dir: &str,
    ) -> Result<(), EngineError> {
        let mut copy = RunSpec::new([
            "/bin/cp".to_string(),
            "-R".to_string(),
            format!("{}/.", seed.display()),
            dir.to_string(),
        ]);
        copy.cwd = Some(FileRoot::Tmp.dir().to_string());
        copy.limits = self.config().compile_limits;
        let outcome = bx.run(&copy).await?;
        if outcome.status != Verdict::Ok {
            // Only speed is lost: the compile fills its own cache.
            tracing::warn!(
                status = %outcome.status,
                stderr = %String::from_utf8_lossy(&outcome.stderr).trim_end(),
                "copying the build cache into a build box failed"
            );
        }
        Ok(())
    }

    /// The engine's read-only copy of `plan`'s toolchain build cache (Go's standard library
    /// build products), made on first need in a clean build box by compiling the registry's seed
    /// program, and pinned in the compile cache. `None` when it cannot be made (compiles then
    /// fill their own, slowly; said in the log and tried again after [`WARM_HOST_RETRY`]).
    async fn build_cache(&self, plan: &Plan) -> Option<PathBuf> {
        let key = plan.build_cache_key()?;
        let mut seeds = self.build_caches.lock().await;
        let retry = match seeds.get(&key) {
            None => true,
            Some(Ok(_)) => false,
            Some(Err(failed)) => failed.elapsed() >= WARM_HOST_RETRY,
        };
        if retry {
            let made = self.make_build_cache(plan, &key).await.map_err(|e| {
                tracing::warn!(
                    language = plan.language(),
                    error = %e,
                    "the toolchain's shared build cache could not be made; compiles fill their own"
                );
                Instant::now()
            });
            seeds.insert(key.clone(), made);
        }
        seeds.get(&key)?.as_ref().ok().cloned()
    }

    async fn make_build_cache(&self, plan: &Plan, key: &str) -> Result<PathBuf, EngineError> {
        let (dir, seed) = match (plan.build_cache_dir(), plan.build_cache_seed()) {
            (Some(dir), Some(seed)) => (dir.to_string(), seed.to_string()),
            _ => return Err(EngineError::Internal("no build cache".into())),
        };
        let cache = Arc::clone(self.cache());
        let k = key.to_string();
        if let Some(found) = blocking(move || cache.claim(&k, &CacheOwner::Pinned)).await? {
            return Ok(found);
        }
        let cache = Arc::clone(self.cache());
        let k = key.to_string();
        let lock = blocking(move || cache.lock(&k)).await?;
        let cache = Arc::clone(self.cache());
        let (lock, found) = blocking(move || {
            let found = cache.claim_locked(&lock, &CacheOwner::Pinned);
            found.map(|f| (lock, f))
        })
        .await?;
        if let Some(found) = found {
            return Ok(found);
        }
        let seed_plan = self
            .registry()
            .prepare(plan.language(), &seed, Mode::Script)?;
        let started = Instant::now();
        let bx = self.build_box().await?;
        let built = async {
            match self
                .build_in(&bx, &seed_plan, None, self.config().compile_limits)
                .await?
            {
                Ok(_) => {}
                Err(failed) => {
                    return Err(EngineError::Internal(format!(
                        "compiling the original .NET CodeBeaker program failed: {}",
                        failed.error.unwrap_or_default()
                    )))
                }
            }
            let rel = dir.strip_prefix("/tmp/").unwrap_or(&dir);
            read_back(&bx, rel, MAX_BUILD_CACHE_BYTES).await
        }
        .await;
        self.destroy_in_background(bx);
        let files = built.map_err(build_box_error)?;
        let bytes: usize = files.iter().map(|(_, data, _)| data.len()).sum();
        tracing::info!(
            language = plan.language(),
            files = files.len(),
            bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "made the toolchain's shared build cache"
        );
        self.store(lock, &CacheOwner::Pinned, files).await
    }
}

impl Engine {
    /// The warm worker that runs `plan`'s run step, if warm workers are on and the plan's
    /// toolchain has one that can start here. A worker's native part is built on first need in
    /// a clean build box and pinned in the compile cache; when it cannot be built, that worker's
    /// runs start cold (said in the log) and the build is tried again after [`WARM_HOST_RETRY`].
    pub(crate) async fn warm_spec(
        &self,
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
                let built = self.build_warm_host(worker).await.map_err(|e| {
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

    /// Builds `worker`'s native part in a clean build box (or finds it in the compile cache),
    /// pinned, and returns its cache directory.
    async fn build_warm_host(
        &self,
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
        match self
            .compiled(
                &CacheOwner::Pinned,
                &plan,
                &key,
                self.config().compile_limits,
            )
            .await?
        {
            Compiled::Ready { dir, .. } => Ok(dir),
            Compiled::Failed(execution) => Err(EngineError::Internal(format!(
                "compiling it failed: {}",
                execution.error.unwrap_or_default()
            ))),
        }
    }
}

/// Reads every regular file under `rel` (in the box's `/tmp`) out of the box, against `budget`
/// bytes counted on what is actually read: a file that grows after the listing, or more files
/// than listed sizes say, cannot take more.
async fn read_back(bx: &SandboxBox, rel: &str, budget: u64) -> Result<Artifacts, EngineError> {
    let (entries, truncated) = bx
        .list(FileRoot::Tmp, rel, true, 16, MAX_ARTIFACT_FILES)
        .await?;
    if truncated {
        return Err(EngineError::Internal(format!(
            "the compiler produced more than {MAX_ARTIFACT_FILES} files"
        )));
    }
    let too_large = || {
        EngineError::Internal(format!(
            "the compiled program is larger than {} MiB, more than the compile cache takes",
            budget / MIB
        ))
    };
    let mut files = Vec::new();
    let mut remaining = budget;
    for entry in entries.iter().filter(|e| e.kind == EntryKind::File) {
        let data = match bx.read_file(FileRoot::Tmp, &entry.path, remaining).await {
            Ok(data) => data,
            // The box refuses a file larger than asked, by its size and by the bytes it read.
            Err(SandboxError::Request(m)) if m.contains("is larger than") => {
                return Err(too_large())
            }
            Err(e) => return Err(e.into()),
        };
        remaining = remaining
            .checked_sub(data.len() as u64)
            .ok_or_else(too_large)?;
        let name = entry
            .path
            .strip_prefix(&format!("{rel}/"))
            .unwrap_or(&entry.path)
            .to_string();
        files.push((name, data, entry.mode & 0o111 != 0));
    }
    Ok(files)
}

/// The execution a failed compile step ends in, with the compiler's diagnostics.
fn compile_failure(
    plan: &Plan,
    mut outcome: RunOutcome,
    src_abs: &Path,
    out_abs: &Path,
) -> Execution {
    if outcome.status == Verdict::RuntimeError {
        outcome.status = Verdict::CompileError;
    }
    let mut text = String::from_utf8_lossy(&outcome.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&outcome.stdout));
    let diagnostics = plan.rewrite_diagnostics(&text, src_abs, out_abs);
    let error = Some(match outcome.status {
        Verdict::CompileError => diagnostics.trim_end().to_string(),
        _ => format!(
            "compiling failed: {} ({})\n{}",
            outcome.status,
            outcome.message.clone().unwrap_or_default(),
            diagnostics.trim_end()
        ),
    });
    Execution {
        language: plan.language().to_string(),
        outcome,
        output: None,
        error,
        compile: None,
        total: Duration::ZERO,
    }
}

/// A build box's failure is the engine's, never the caller's box's: it must not read as the
/// death of the caller's session (see `session::box_died`).
fn build_box_error(e: EngineError) -> EngineError {
    match e {
        EngineError::Sandbox(e) => EngineError::Internal(format!("the build box failed: {e}")),
        other => other,
    }
}

/// Runs blocking compile-cache work off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, EngineError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LanguageError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
        .map_err(|e| EngineError::Internal(format!("compile cache: {e}")))
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

enum Compiled {
    Ready { dir: PathBuf, info: CompileInfo },
    Failed(Box<Execution>),
}

/// The user-facing error of a run that did not succeed.
fn failure_message(outcome: &RunOutcome, stderr: &str) -> Option<String> {
    let stderr = stderr.trim_end();
    match outcome.status {
        Verdict::Ok => None,
        Verdict::RuntimeError | Verdict::CompileError => {
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
