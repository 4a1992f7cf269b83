//! The [`Engine`] itself: construction, languages, one-shot runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use codebeaker_languages::{CompileCache, Registry};
use codebeaker_protocol::methods::LanguageInfo;
use std::sync::atomic::{AtomicU64, Ordering};

use codebeaker_sandbox::{Bind, BoxLimits, BoxSpec, FileRoot, Isolation, Sandbox, SandboxBox};

use crate::executions::{ExecutionState, ExecutionStore};
use crate::pool::BoxPool;
use crate::session::{Caller, SessionTable};

use crate::executor::{CodeRequest, Execution};
use crate::{EngineConfig, EngineError};

/// Where every box sees the compile cache (read-only), whatever its host directory.
pub const BOX_CACHE: &str = "/opt/codebeaker/cache";

/// Runs code in boxes. Cheap to share: wrap it in an `Arc`.
pub struct Engine {
    config: EngineConfig,
    sandbox: Sandbox,
    registry: Registry,
    cache: Arc<CompileCache>,
    /// Read-only binds every box gets: the toolchains found here and the compile cache, each at
    /// its box path.
    binds: Vec<Bind>,
    pub(crate) sessions: SessionTable,
    pub(crate) executions: ExecutionStore,
    pub(crate) one_shot_slots: crate::fair::FairSlots,
    pub(crate) pool: BoxPool,
    /// Boxes being destroyed off their callers' paths (see `destroy_in_background`).
    background: std::sync::Mutex<tokio::task::JoinSet<()>>,
    /// Plans of an empty script, by language, for languages with a warm worker: what the
    /// worker's start command is rendered from when a box starts its workers ahead of use.
    warm_plans: std::collections::BTreeMap<String, codebeaker_languages::Plan>,
    /// Where each warm worker's native part was built, once known, or when building it last
    /// failed (that worker's runs start cold until a later build succeeds).
    pub(crate) warm_hosts: tokio::sync::Mutex<
        std::collections::HashMap<
            codebeaker_languages::WarmWorker,
            Result<PathBuf, std::time::Instant>,
        >,
    >,
    /// Toolchains' shared, read-only build caches by key, once made, or when making one last
    /// failed (see `Engine::build_cache`).
    pub(crate) build_caches:
        tokio::sync::Mutex<std::collections::HashMap<String, Result<PathBuf, std::time::Instant>>>,
    boxes_created: AtomicU64,
}

/// Counters for health and metrics.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineStats {
    pub sessions: usize,
    pub busy_sessions: usize,
    pub executions_queued: usize,
    pub executions_running: usize,
    pub boxes_created: u64,
    /// Ready boxes waiting in the pool.
    pub pooled_boxes: usize,
}

impl Engine {
    /// Checks the host, loads the language registry, finds the toolchains, opens the compile
    /// cache. Blocking (toolchain probes run here); call it before serving.
    pub fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        let sandbox = Sandbox::new(config.sandbox.clone())?;
        let registry = registry_of(&config)?;
        let cache = CompileCache::open(&config.cache_dir, config.cache_max_bytes).map_err(|e| {
            EngineError::Internal(format!(
                "opening the compile cache {}: {e}",
                config.cache_dir.display()
            ))
        })?;
        let mut binds: Vec<Bind> = registry
            .discover()
            .values()
            .filter(|t| t.available)
            .flat_map(|t| {
                t.mounts.iter().map(|m| Bind {
                    source: m.clone(),
                    target: t.box_path(m),
                })
            })
            .collect();
        binds.push(Bind {
            source: cache.root().to_path_buf(),
            target: PathBuf::from(BOX_CACHE),
        });
        // By box path, so that a bind inside another one is attached after it.
        binds.sort_by(|a, b| a.target.cmp(&b.target).then(a.source.cmp(&b.source)));
        binds.dedup();
        let warm_plans = warm_plans(&registry, config.warm_workers);
        let one_shot_slots = crate::fair::FairSlots::new(config.max_concurrent_executions);
        Ok(Engine {
            config,
            sandbox,
            registry,
            cache: Arc::new(cache),
            binds,
            sessions: SessionTable::default(),
            executions: ExecutionStore::default(),
            one_shot_slots,
            pool: BoxPool::default(),
            background: Default::default(),
            warm_plans,
            warm_hosts: Default::default(),
            build_caches: Default::default(),
            boxes_created: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn cache(&self) -> &Arc<CompileCache> {
        &self.cache
    }

    /// Where boxes see `host`, a path in the compile cache (its directories are named by host
    /// path): under [`BOX_CACHE`], so that no path in a box names the host's cache directory.
    pub(crate) fn in_box(&self, host: &Path) -> PathBuf {
        match host.strip_prefix(self.cache.root()) {
            Ok(rest) => Path::new(BOX_CACHE).join(rest),
            Err(_) => host.to_path_buf(),
        }
    }

    /// The isolation boxes get on this host.
    pub fn isolation(&self) -> &Isolation {
        self.sandbox.isolation()
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Every language of the registry, with what discovery found, in the shape `language.list`
    /// and `codebeaker languages` show (see [`languages`]).
    pub fn languages(&self) -> Vec<LanguageInfo> {
        language_infos(&self.registry, &self.warm_plans)
    }

    /// A new box with the engine's limits and binds.
    pub async fn create_box(&self) -> Result<SandboxBox, EngineError> {
        self.create_box_with(self.config.box_limits).await
    }

    /// A new box with the engine's binds and the given limits.
    pub async fn create_box_with(&self, limits: BoxLimits) -> Result<SandboxBox, EngineError> {
        if limits == self.config.box_limits {
            if let Some(bx) = self.pool.take() {
                return Ok(bx);
            }
        }
        self.new_box(limits).await
    }

    /// A box made now (never from the pool).
    pub(crate) async fn new_box(&self, limits: BoxLimits) -> Result<SandboxBox, EngineError> {
        let spec = BoxSpec {
            limits,
            binds: self.binds.clone(),
        };
        let bx = self.sandbox.create_box(&spec).await?;
        self.boxes_created.fetch_add(1, Ordering::Relaxed);
        Ok(bx)
    }

    /// Builds the warm workers' native parts now (each in a clean build box, pinned in the
    /// compile cache), so that no run waits for them. Failures are logged by [`Engine::warm_spec`]
    /// and retried on need.
    pub(crate) async fn build_warm_hosts(&self) {
        let dir = std::path::Path::new(codebeaker_sandbox::FileRoot::Tmp.dir());
        for plan in self.warm_plans.values() {
            let _ = self.warm_spec(plan, dir, dir).await;
        }
    }

    /// Starts the warm worker of `language` in `bx` (of every language with one when `None`), so
    /// the box's first run is warm too. Failures only cost speed: runs fall back to a cold start.
    /// With `wait_ready` it returns once the workers are ready (for boxes that wait in the pool).
    /// Returns the workers started (or found running).
    pub(crate) async fn prestart_workers(
        &self,
        bx: &SandboxBox,
        language: Option<&str>,
        wait_ready: bool,
    ) -> Vec<codebeaker_sandbox::WarmSpec> {
        let mut started = Vec::new();
        for (name, plan) in &self.warm_plans {
            if language.is_some_and(|l| l != name) {
                continue;
            }
            let dir = std::path::Path::new(codebeaker_sandbox::FileRoot::Tmp.dir());
            let Some(spec) = self.warm_spec(plan, dir, dir).await else {
                continue;
            };
            match bx.start_worker(&spec, wait_ready).await {
                Ok(()) => started.push(spec),
                Err(e) => {
                    tracing::debug!(language = %name, error = %e, "starting a warm worker failed")
                }
            }
        }
        started
    }

    /// Counters for health and metrics.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            sessions: self.sessions.len(),
            busy_sessions: self.sessions.busy(),
            executions_queued: self.executions.count(ExecutionState::Queued),
            executions_running: self.executions.count(ExecutionState::Running),
            boxes_created: self.boxes_created.load(Ordering::Relaxed),
            pooled_boxes: self.pool.len(),
        }
    }

    /// Runs code once in a fresh box, then destroys the box; a compile it needs is charged to
    /// the anonymous caller.
    pub async fn run_once(&self, req: CodeRequest) -> Result<Execution, EngineError> {
        self.config().check_stdin("stdin", req.stdin.len())?;
        let hooks = crate::executor::RunHooks::streaming(None);
        let (result, bx) = self
            .run_in_fresh_box(&Caller::anonymous(), &req, &[], hooks)
            .await;
        if let Some(bx) = bx {
            destroy_quietly(bx).await;
        }
        result
    }

    /// Runs code in a fresh (or pooled) box, with `files` (paths relative to the workspace)
    /// written into its workspace first, and hands the box back for the caller to destroy, so
    /// a caller that reports results can do so before paying for the clean-up.
    pub(crate) async fn run_in_fresh_box(
        &self,
        caller: &Caller,
        req: &CodeRequest,
        files: &[(String, Vec<u8>)],
        hooks: crate::executor::RunHooks,
    ) -> (Result<Execution, EngineError>, Option<SandboxBox>) {
        // Unknown languages fail before any box is made.
        if let Err(e) = self.registry.resolve(&req.language) {
            return (Err(e.into()), None);
        }
        // A pooled box has its warm workers running already; a box made for this one run starts
        // the program cold, since a worker's own start-up would only add to it.
        let (bx, pooled) = match self.pool.take() {
            Some(bx) => (bx, true),
            None => match self.new_box(self.config.box_limits).await {
                Ok(bx) => (bx, false),
                Err(e) => return (Err(e), None),
            },
        };
        for (path, data) in files {
            // The box resolves the path inside its own view of the workspace.
            if let Err(e) = bx
                .write_file(FileRoot::Workspace, path, data.clone(), false)
                .await
            {
                let error = EngineError::InvalidInput(format!("writing the file {path}: {e}"));
                return (Err(error), Some(bx));
            }
        }
        let result = match pooled {
            true => self.execute_for(caller, &bx, req, hooks).await,
            false => self.execute_cold(caller, &bx, req, hooks).await,
        };
        (result, Some(bx))
    }
}

impl Engine {
    /// Destroys a box off the caller's path (a one-shot run's box once its result is visible, a
    /// build box once its products are read), on a blocking thread: killing a box waits for its
    /// processes to die, sleeping between checks, and on an async worker that would stall
    /// whatever the worker runs next. [`Engine::shutdown`] waits for every such destroy, so a
    /// process that ends right after its last run (`codebeaker run`) leaves nothing behind.
    pub(crate) fn destroy_in_background(&self, bx: SandboxBox) {
        let runtime = tokio::runtime::Handle::current();
        let mut tasks = self.background.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn_blocking(move || runtime.block_on(destroy_quietly(bx)));
    }

    /// Waits for the destroys [`destroy_in_background`](Self::destroy_in_background) started.
    pub(crate) async fn finish_background(&self) {
        let mut tasks =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
    }
}

/// Destroys a box, logging (not returning) a failure: the box is gone from the caller's view.
pub(crate) async fn destroy_quietly(bx: SandboxBox) {
    if let Err(e) = bx.destroy().await {
        tracing::warn!(error = %e, "destroying a one-shot box failed");
    }
}

/// The registry the configuration names: the built-in one, with its overrides if any.
fn registry_of(config: &EngineConfig) -> Result<Registry, EngineError> {
    let mut registry = match &config.languages_override {
        Some(toml) => Registry::with_overrides(toml)?,
        None => Registry::builtin()?,
    };
    if let Some(only) = &config.only_languages {
        registry.look_only_for(only)?;
    }
    if let Some(file) = &config.probe_cache_file {
        registry.keep_probes_in(file, !config.fresh_probes);
    }
    Ok(registry)
}

/// Plans of an empty script, by language, for the available languages with a warm worker (none
/// when warm workers are off).
fn warm_plans(
    registry: &Registry,
    enabled: bool,
) -> std::collections::BTreeMap<String, codebeaker_languages::Plan> {
    if !enabled {
        return Default::default();
    }
    registry
        .discover()
        .iter()
        .filter(|(_, t)| t.available)
        .filter_map(|(name, _)| {
            let plan = registry
                .prepare(name, "", codebeaker_languages::Mode::Script)
                .ok()?;
            plan.warm().is_some().then(|| (name.clone(), plan))
        })
        .collect()
}

/// Every language of the registry the configuration names, as an engine made from it would
/// list them ([`Engine::languages`]), without making one: no sandbox, so no root needed. `warm`
/// is false when the language has no warm worker, warm workers are off, or the worker's native
/// part cannot be built here.
pub fn languages(config: &EngineConfig) -> Result<Vec<LanguageInfo>, EngineError> {
    let registry = registry_of(config)?;
    let plans = warm_plans(&registry, config.warm_workers);
    Ok(language_infos(&registry, &plans))
}

fn language_infos(
    registry: &Registry,
    warm_plans: &std::collections::BTreeMap<String, codebeaker_languages::Plan>,
) -> Vec<LanguageInfo> {
    let toolchains = registry.discover();
    let c_available = toolchains.get("c").is_some_and(|t| t.available);
    registry
        .languages()
        .map(|l| {
            let t = toolchains.get(l.name());
            LanguageInfo {
                name: l.name().to_string(),
                aliases: l.aliases().to_vec(),
                extensions: l.extensions().to_vec(),
                version: t.and_then(|t| t.version.clone()),
                available: t.is_some_and(|t| t.available),
                reason: t.and_then(|t| t.reason.clone()),
                snippets: l.supports_snippets(),
                compiled: l.is_compiled(),
                warm: warm_plans
                    .get(l.name())
                    .and_then(|plan| plan.warm())
                    .is_some_and(|worker| !worker.needs_host() || c_available),
            }
        })
        .collect()
}
