//! Sessions: one box per session, alive until closed, idle too long, or too old.
//!
//! Commands on one session run one at a time in arrival order (a fair lock around the box);
//! different sessions run in parallel. Sessions belong to the caller that created them and are
//! invisible to every other caller. Bounds: sessions in total and per caller.
//!
//! A command that runs a program can be stopped from outside while it runs
//! ([`Engine::cancel_command`](crate::Engine::cancel_command)): the session keeps the running
//! command's cancel handle beside the box lock, not under it, since the lock is held by the very
//! command to be stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use codebeaker_sandbox::{BoxLimits, SandboxBox, SandboxError};

use crate::{Engine, EngineError};

/// Who is asking. Every session and one-shot execution belongs to one caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller(pub String);

impl Caller {
    /// The caller when authentication is off.
    pub fn anonymous() -> Caller {
        Caller("anonymous".to_string())
    }
}

/// What `session.create` may ask for; `None` takes the configured default.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub language: String,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    pub memory_limit_mb: Option<u64>,
    /// Relative CPU weight in Docker's units: 1024 is one core.
    pub cpu_shares: Option<u64>,
}

/// A session as callers see it.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    pub id: String,
    /// The box's name on the host (its cgroup's name; never shown to callers).
    pub box_name: String,
    /// The box's id as callers see it (the protocol's `containerId`): random, naming nothing of
    /// the host.
    pub container_id: String,
    pub language: String,
    pub created_at: SystemTime,
    pub last_activity: SystemTime,
    pub execution_count: u64,
    /// A command is running.
    pub busy: bool,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub memory_limit_bytes: u64,
    pub cpu_millis: u64,
}

pub(crate) struct Session {
    pub id: String,
    pub caller: Caller,
    pub language: String,
    pub bx: tokio::sync::Mutex<Option<SandboxBox>>,
    box_name: String,
    container_id: String,
    created_at: SystemTime,
    created: Instant,
    last_activity: Mutex<(SystemTime, Instant)>,
    executions: AtomicU64,
    busy: AtomicBool,
    /// The cancel of the command that holds the box lock now; `None` between commands.
    cancel: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    idle_timeout: Duration,
    max_lifetime: Duration,
    limits: BoxLimits,
    /// The session's contexts (their kernels live in the box; see `contexts.rs`).
    pub(crate) contexts: Mutex<crate::contexts::ContextTable>,
}

impl Session {
    pub fn snapshot(&self) -> SessionSnapshot {
        let (last, _) = *self.last_activity.lock().unwrap_or_else(|p| p.into_inner());
        SessionSnapshot {
            id: self.id.clone(),
            box_name: self.box_name.clone(),
            container_id: self.container_id.clone(),
            language: self.language.clone(),
            created_at: self.created_at,
            last_activity: last,
            execution_count: self.executions.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            memory_limit_bytes: self.limits.memory_bytes,
            cpu_millis: self.limits.cpu_millis,
        }
    }

    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|p| p.into_inner()) =
            (SystemTime::now(), Instant::now());
    }

    /// Why the reaper should close this session now, if it should.
    fn expired(&self, now: Instant) -> Option<EndReason> {
        if now.duration_since(self.created) >= self.max_lifetime {
            return Some(EndReason::MaxLifetime);
        }
        let (_, last) = *self.last_activity.lock().unwrap_or_else(|p| p.into_inner());
        if !self.busy.load(Ordering::Relaxed) && now.duration_since(last) >= self.idle_timeout {
            return Some(EndReason::IdleTimeout);
        }
        None
    }

    fn ended(&self, reason: EndReason) -> SessionEnded {
        SessionEnded {
            id: self.id.clone(),
            caller: self.caller.clone(),
            language: self.language.clone(),
            reason,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its caller closed it.
    Closed,
    /// It was idle longer than its idle timeout.
    IdleTimeout,
    /// It reached its maximum lifetime.
    MaxLifetime,
    /// Its box died (its init exited, or it stopped answering and was killed).
    BoxDied,
    /// The engine shut down.
    Shutdown,
}

impl EndReason {
    /// The reason in words, as the engine logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::IdleTimeout => "idle timeout",
            EndReason::MaxLifetime => "maximum lifetime reached",
            EndReason::BoxDied => "its box died",
            EndReason::Shutdown => "engine shutdown",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session that ended, as its subscribers hear of it ([`Engine::on_session_end`]).
#[derive(Debug, Clone)]
pub struct SessionEnded {
    pub id: String,
    pub caller: Caller,
    /// The registry's name of its language.
    pub language: String,
    pub reason: EndReason,
}

type EndListener = Arc<dyn Fn(&SessionEnded) + Send + Sync>;

/// The listeners of [`Engine::on_session_end`], by subscription number.
#[derive(Default)]
struct Listeners {
    next: u64,
    all: Vec<(u64, EndListener)>,
}

/// A listener of session ends, called until this is dropped.
#[must_use = "the listener is removed when the subscription is dropped"]
pub struct SessionEndSubscription {
    listeners: std::sync::Weak<Mutex<Listeners>>,
    id: u64,
}

impl Drop for SessionEndSubscription {
    fn drop(&mut self) {
        if let Some(listeners) = self.listeners.upgrade() {
            let mut listeners = listeners.lock().unwrap_or_else(|p| p.into_inner());
            listeners.all.retain(|(id, _)| *id != self.id);
        }
    }
}

/// Marks a session busy for as long as it lives.
pub(crate) struct Busy<'a>(&'a Session);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.executions.fetch_add(1, Ordering::Relaxed);
        self.0.busy.store(false, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Keeps the cancel handle of the session's running command for as long as it lives.
pub(crate) struct Cancellable<'a>(&'a Session);

impl Cancellable<'_> {
    /// Takes the command's cancel handle in the session: the receiver, which stops the run when
    /// [`Session::cancel`] fires it, goes to the command. Called with the box lock held, so the
    /// slot holds the one command that runs.
    pub(crate) fn arm(session: &Session) -> (Cancellable<'_>, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *session.cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        (Cancellable(session), rx)
    }
}

impl Drop for Cancellable<'_> {
    fn drop(&mut self) {
        self.0
            .cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

impl Session {
    /// Stops the command running now, if it runs a program: false when no command runs or the
    /// running one has no program to stop (a file operation).
    pub(crate) fn cancel(&self) -> bool {
        let handle = self.cancel.lock().unwrap_or_else(|p| p.into_inner()).take();
        // The send fails when the command holds no receiver: nothing of it can be stopped.
        handle.is_some_and(|tx| tx.send(()).is_ok())
    }
}

/// Every live session.
#[derive(Default)]
pub(crate) struct SessionTable {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    listeners: Arc<Mutex<Listeners>>,
}

impl SessionTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn busy(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| s.busy.load(Ordering::Relaxed))
            .count()
    }

    /// Tells every listener that a session ended (outside the table's lock).
    fn announce(&self, ended: &SessionEnded) {
        let listeners: Vec<EndListener> = {
            let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            listeners.all.iter().map(|(_, l)| Arc::clone(l)).collect()
        };
        for listener in listeners {
            listener(ended);
        }
    }

    /// The caller of the session whose box is called `box_name`.
    pub fn caller_of_box(&self, box_name: &str) -> Option<Caller> {
        self.lock()
            .values()
            .find(|s| s.box_name == box_name)
            .map(|s| s.caller.clone())
    }
}

impl Engine {
    /// Calls `listener` for every session that ends from now on, whatever ended it, until the
    /// returned subscription is dropped: the server counts and logs sessions the engine ended
    /// on its own this way. It is called on the task that ended the session, after the session
    /// is gone from the table and its box destroyed: it must be quick and must not block.
    pub fn on_session_end(
        &self,
        listener: impl Fn(&SessionEnded) + Send + Sync + 'static,
    ) -> SessionEndSubscription {
        let mut listeners = self
            .sessions
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let id = listeners.next;
        listeners.next += 1;
        listeners.all.push((id, Arc::new(listener)));
        SessionEndSubscription {
            listeners: Arc::downgrade(&self.sessions.listeners),
            id,
        }
    }

    /// Creates a session: a new box for `caller`, with the session's own limits.
    pub async fn create_session(
        &self,
        caller: &Caller,
        opts: SessionOptions,
    ) -> Result<SessionSnapshot, EngineError> {
        let language = self.registry().resolve(&opts.language)?.name().to_string();
        let toolchain = self.registry().toolchain(&language)?;
        if !toolchain.available {
            let reason = toolchain
                .reason
                .clone()
                .unwrap_or_else(|| format!("{language} is not available"));
            return Err(EngineError::LanguageUnavailable(reason));
        }
        let cfg = &self.config().sessions;
        let idle_timeout = bounded(
            "idleTimeoutMinutes",
            opts.idle_timeout,
            cfg.idle_timeout,
            cfg.max_idle_timeout,
        )?;
        let max_lifetime = bounded(
            "maxLifetimeMinutes",
            opts.max_lifetime,
            cfg.max_lifetime,
            cfg.max_lifetime_cap,
        )?;
        let mut limits = self.config().box_limits;
        if let Some(mb) = opts.memory_limit_mb {
            limits.memory_bytes = self.config().memory_limit("memoryLimitMB", mb)?;
        }
        if let Some(shares) = opts.cpu_shares {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
            if shares == 0 {
                return Err(EngineError::InvalidInput(
                    "cpuShares must be positive (1024 = one core)".into(),
                ));
            }
            limits.cpu_millis = (shares.saturating_mul(1000) / 1024).clamp(100, cores * 1000);
        }
        {
            let table = self.sessions.lock();
            if table.len() >= cfg.max_sessions {
                return Err(EngineError::LimitReached(format!(
                    "the server holds its maximum of {} sessions; close one or retry later",
                    cfg.max_sessions
                )));
            }
            let mine = table.values().filter(|s| s.caller == *caller).count();
            if mine >= cfg.max_sessions_per_caller {
                return Err(EngineError::LimitReached(format!(
                    "you hold the maximum of {} sessions per caller; close one first",
                    cfg.max_sessions_per_caller
                )));
            }
        }
        let bx = self.create_box_with(limits).await?;
        // A box from the pool runs every language's worker; the session keeps its own.
        let workers = self.prestart_workers(&bx, Some(&language), false).await;
        if let Err(e) = bx.keep_workers(&workers).await {
            tracing::debug!(error = %e, "stopping other languages' workers failed");
        }
        let now = (SystemTime::now(), Instant::now());
        let session = Arc::new(Session {
            id: uuid::Uuid::new_v4().to_string(),
            caller: caller.clone(),
            language,
            box_name: bx.name().to_string(),
            container_id: bx.public_id(),
            bx: tokio::sync::Mutex::new(Some(bx)),
            created_at: now.0,
            created: now.1,
            last_activity: Mutex::new(now),
            executions: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            cancel: Mutex::new(None),
            idle_timeout,
            max_lifetime,
            limits,
            contexts: Mutex::default(),
        });
        let snapshot = session.snapshot();
        self.sessions.lock().insert(session.id.clone(), session);
        tracing::info!(session = %snapshot.id, language = %snapshot.language, caller = %caller.0, "session created");
        Ok(snapshot)
    }

    /// The caller's session `id`, or `SessionNotFound` (also for other callers' sessions).
    pub(crate) fn session(&self, caller: &Caller, id: &str) -> Result<Arc<Session>, EngineError> {
        self.sessions
            .lock()
            .get(id)
            .filter(|s| s.caller == *caller)
            .cloned()
            .ok_or_else(|| EngineError::SessionNotFound(id.to_string()))
    }

    /// Marks the session busy until the guard drops (which also counts the execution).
    pub(crate) fn mark_busy<'a>(&self, session: &'a Session) -> Busy<'a> {
        session.busy.store(true, Ordering::Relaxed);
        session.touch();
        Busy(session)
    }

    /// Closes the caller's session: every process, mount, cgroup and file of it is released.
    pub async fn close_session(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<SessionEnded, EngineError> {
        let session = self.session(caller, id)?;
        self.sessions.lock().remove(id);
        Ok(self.destroy_session(&session, EndReason::Closed).await)
    }

    /// A command found the session's box dead (see [`box_died`]): the session can never run
    /// anything again. Takes it out of the table, destroys what is left of the box (its cgroup,
    /// its setup process), and returns the error that tells the caller the session is closed.
    pub(crate) async fn close_dead_session(
        &self,
        session: &Session,
        bx: Option<SandboxBox>,
        cause: EngineError,
    ) -> EngineError {
        self.sessions.lock().remove(&session.id);
        if let Some(bx) = bx {
            if let Err(e) = bx.destroy().await {
                tracing::warn!(session = %session.id, error = %e, "destroying a dead box failed");
            }
        }
        tracing::warn!(session = %session.id, box_name = %session.box_name, cause = %cause, "a session's box died; the session is closed");
        self.sessions.announce(&session.ended(EndReason::BoxDied));
        EngineError::SessionClosed {
            id: session.id.clone(),
            cause: cause.to_string(),
        }
    }

    /// Destroys the box of a session already out of the table, and tells the listeners.
    async fn destroy_session(&self, session: &Session, why: EndReason) -> SessionEnded {
        // Waits for a command in progress: commands run to their end (their own limits bound them).
        let bx = session.bx.lock().await.take();
        if let Some(bx) = bx {
            if let Err(e) = bx.destroy().await {
                tracing::warn!(session = %session.id, error = %e, "destroying a session's box failed");
            }
        }
        tracing::info!(session = %session.id, reason = %why, "session ended");
        let ended = session.ended(why);
        self.sessions.announce(&ended);
        ended
    }

    /// The caller's sessions.
    pub fn list_sessions(&self, caller: &Caller) -> Vec<SessionSnapshot> {
        let mut list: Vec<SessionSnapshot> = self
            .sessions
            .lock()
            .values()
            .filter(|s| s.caller == *caller)
            .map(|s| s.snapshot())
            .collect();
        list.sort_by_key(|s| s.created_at);
        list
    }

    /// Closes sessions that are idle too long or too old, and forgets old one-shot results.
    pub async fn reap(&self) {
        let now = Instant::now();
        let expired: Vec<(Arc<Session>, EndReason)> = {
            let mut table = self.sessions.lock();
            let ids: Vec<(String, EndReason)> = table
                .iter()
                .filter_map(|(id, s)| s.expired(now).map(|why| (id.clone(), why)))
                .collect();
            ids.into_iter()
                .filter_map(|(id, why)| table.remove(&id).map(|s| (s, why)))
                .collect()
        };
        for (session, why) in expired {
            self.destroy_session(&session, why).await;
        }
        self.executions
            .forget_old(self.config().execution_retention);
    }

    /// The engine's upkeep, for as long as the engine lives: first build the warm workers'
    /// native parts, then [`reap`](Self::reap) every `reap_interval`, and refill the pool of
    /// ready boxes whenever one was taken.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let interval = self.config().sessions.reap_interval;
        tokio::spawn(async move {
            if let Some(engine) = weak.upgrade() {
                engine.build_warm_hosts().await;
            }
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let reap = {
                    let Some(engine) = weak.upgrade() else { return };
                    engine.refill_pool().await;
                    let taken = Arc::clone(&engine.pool.taken);
                    drop(engine);
                    tokio::select! {
                        _ = tick.tick() => true,
                        _ = taken.notified() => false,
                    }
                };
                let Some(engine) = weak.upgrade() else { return };
                if reap {
                    engine.reap().await;
                    engine.remove_left_behind().await;
                }
            }
        })
    }

    /// Retries removing the cgroups of destroyed boxes whose processes did not die in time
    /// (see [`codebeaker_sandbox::Sandbox::remove_left_behind`]), off the async workers.
    async fn remove_left_behind(self: &Arc<Self>) {
        if self.sandbox().has_left_behind() {
            let engine = Arc::clone(self);
            let _ =
                tokio::task::spawn_blocking(move || engine.sandbox().remove_left_behind()).await;
        }
    }

    /// Closes every session and waits for the boxes being destroyed in the background (for
    /// shutdown).
    pub async fn shutdown(&self) {
        for bx in self.pool.drain() {
            if let Err(e) = bx.destroy().await {
                tracing::warn!(error = %e, "destroying a pooled box failed");
            }
        }
        let all: Vec<Arc<Session>> = self.sessions.lock().drain().map(|(_, s)| s).collect();
        for session in all {
            self.destroy_session(&session, EndReason::Shutdown).await;
        }
        self.finish_background().await;
        // A last try for groups an earlier destroy had to leave (blocking: we are stopping).
        if self.sandbox().has_left_behind() {
            let left = self.sandbox().remove_left_behind();
            if left > 0 {
                tracing::warn!(left, "box cgroups could not be removed; the next CodeBeaker process to start removes them");
            }
        }
    }
}

/// Whether a command's error means its box is dead: the init exited or was killed
/// (`BoxGone`), or the box stopped answering and was killed (`Unresponsive`).
pub(crate) fn box_died(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Sandbox(SandboxError::BoxGone | SandboxError::Unresponsive)
    )
}

fn bounded(
    field: &'static str,
    asked: Option<Duration>,
    default: Duration,
    max: Duration,
) -> Result<Duration, EngineError> {
    match asked {
        None => Ok(default),
        Some(d) => crate::config::bounded_time(field, d, crate::config::TimeUnit::Minutes, max),
    }
}
