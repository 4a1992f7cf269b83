//! The session pool: sessions kept open between runs, leased to one caller at a time.
//!
//! # Keys
//!
//! Sessions are pooled by [`PoolKey`]: a language and an optional tenant (a user, a task, a
//! program). A session is only ever handed to callers with the same key, so unrelated callers
//! never share a workspace.
//!
//! # Bounds, and why the pool can neither starve nor deadlock
//!
//! Two bounds hold at every moment: at most [`PoolConfig::max_sessions`] sessions exist (idle,
//! leased, being created or being closed, all counted), and at most
//! [`PoolConfig::max_leases`] are leased. The original .NET CodeBeaker's pool counted live sessions against its
//! slots and so could run out of slots while all of them sat idle under another language; this
//! one accounts for every slot and every lease in one place, under one lock, and never waits
//! while capacity could be made:
//!
//! 1. A caller that finds an idle session for its key takes it.
//! 2. Otherwise, with a free slot, it reserves the slot and creates a session.
//! 3. Otherwise it queues (first come, first served). While callers queue, idle sessions of
//!    *other* keys are evicted (closed) to free slots for them: as many as there are queued
//!    callers that could use a slot, minus the slots already being freed.
//!
//! So a caller waits only while every slot is leased or being closed. Leases end when their
//! holder drops them (a [`Lease`] gives its session back in `Drop`, even on panic or
//! cancellation), closes end within [`PoolConfig::close_timeout`], and each ending re-runs the
//! hand-out under the lock: there is no state in which capacity is free and a caller still
//! waits. The queue is FIFO; a later caller may take an idle session of its own key ahead of the
//! head of the queue (a reuse is far cheaper than an eviction plus a create), but at most
//! [`MAX_BYPASS`] times, so the head is never starved. The one way to deadlock remains the
//! caller's: holding a lease while waiting for another from the same pool. The runtime service
//! and the batch executor take exactly one lease per execution.
//!
//! Every wait is bounded by [`PoolConfig::acquire_timeout`] and ends with
//! [`ClientError::PoolTimeout`] describing the pool's state.
//!
//! # Health
//!
//! A session is closed instead of reused when it is older than [`PoolConfig::max_lifetime`],
//! has run [`PoolConfig::max_executions_per_session`] commands, was idle longer than
//! [`PoolConfig::idle_timeout`], or was marked broken: a command on it timed out, hit a
//! limit (`timeout`, `memory_limit`, `killed`, `internal_error`), the connection dropped under it,
//! or the server answered with a protocol-level error ([`Lease::execute`] marks these
//! itself). Idle sessions are taken out of the pool under the lock before they are closed, so
//! no caller can lease a session that is being closed.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use codebeaker_protocol::commands::Command;
use codebeaker_protocol::methods::{
    SessionCreateParams, SessionExecuteParams, SessionExecuteResult,
};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::backend::{Backend, CallOptions};
use crate::ClientError;

/// How many times a later caller may take an idle session of its own key ahead of the caller at
/// the head of the queue.
pub const MAX_BYPASS: u32 = 8;

/// What sessions are pooled by: language and an optional tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PoolKey {
    /// The language as the server names it, e.g. `python`.
    pub language: String,
    /// Callers with different tenants never share a session.
    pub tenant: Option<String>,
}

impl PoolKey {
    /// A key for a language, shared by every caller without a tenant.
    pub fn language(language: impl Into<String>) -> Self {
        PoolKey {
            language: language.into(),
            tenant: None,
        }
    }

    /// A key for a language and a tenant.
    pub fn tenant(language: impl Into<String>, tenant: impl Into<String>) -> Self {
        PoolKey {
            language: language.into(),
            tenant: Some(tenant.into()),
        }
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "{}/{t}", self.language),
            None => f.write_str(&self.language),
        }
    }
}

/// What `session.create` asks for on behalf of the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSettings {
    /// The sandbox backend, e.g. `native`; the server's default when `None`.
    pub runtime: Option<String>,
    /// Memory limit of each session's box, in MB.
    pub memory_limit_mb: Option<u64>,
    /// CPU weight of each session's box (1024 = one core).
    pub cpu_shares: Option<u64>,
}

/// How the pool behaves. [`PoolConfig::default`] mirrors the original .NET CodeBeaker's defaults.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Sessions in existence at most, of every key together (10, the original .NET CodeBeaker's pool size).
    pub max_sessions: usize,
    /// Sessions leased at once at most; `None` means `max_sessions`.
    pub max_leases: Option<usize>,
    /// Longest a caller waits for a lease (30 s).
    pub acquire_timeout: Duration,
    /// An idle session older than this since its last use is closed (30 min). The server is
    /// asked for one minute more, so that the pool always retires a session first.
    pub idle_timeout: Duration,
    /// A session older than this is closed at its next release (120 min); the server is asked
    /// for one minute more.
    pub max_lifetime: Duration,
    /// A session that has run this many commands is closed at its next release (1000); `None`
    /// for no limit.
    pub max_executions_per_session: Option<u64>,
    /// Longest the pool waits for a `session.close` (10 s); the slot is freed after that
    /// regardless.
    pub close_timeout: Duration,
    /// Close expired idle sessions every this often in a background task; `None` runs no task
    /// (expired sessions are still never handed out, and [`SessionPool::cleanup`] closes them).
    pub cleanup_interval: Option<Duration>,
    /// What new sessions ask the server for.
    pub session: SessionSettings,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_sessions: 10,
            max_leases: None,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30 * 60),
            max_lifetime: Duration::from_secs(120 * 60),
            max_executions_per_session: Some(1000),
            close_timeout: Duration::from_secs(10),
            cleanup_interval: None,
            session: SessionSettings::default(),
        }
    }
}

impl PoolConfig {
    fn validate(&self) -> Result<(), ClientError> {
        let bad = |what: &str| Err(ClientError::Config(format!("session pool: {what}")));
        if self.max_sessions == 0 {
            return bad("max_sessions must be at least 1");
        }
        if self.max_leases == Some(0) {
            return bad("max_leases must be at least 1");
        }
        if self.acquire_timeout.is_zero() {
            return bad("acquire_timeout must be positive");
        }
        if self.idle_timeout.is_zero() || self.max_lifetime.is_zero() {
            return bad("idle_timeout and max_lifetime must be positive");
        }
        if self.max_executions_per_session == Some(0) {
            return bad("max_executions_per_session must be at least 1 (or None)");
        }
        if self.close_timeout.is_zero() {
            return bad("close_timeout must be positive");
        }
        if self.cleanup_interval.is_some_and(|i| i.is_zero()) {
            return bad("cleanup_interval must be positive (or None)");
        }
        Ok(())
    }

    fn lease_bound(&self) -> usize {
        self.max_leases.unwrap_or(self.max_sessions)
    }
}

/// A snapshot of the pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStats {
    /// Sessions that exist: idle + active + closing (the bound is `maxSessions`).
    pub total: usize,
    /// Leased right now (including leases whose session is still being created).
    pub active: usize,
    /// Open and waiting in the pool.
    pub idle: usize,
    /// Being closed (they still hold their slot).
    pub closing: usize,
    /// Leases that could be handed out right now without waiting: idle sessions plus free
    /// slots, within the lease bound.
    pub available: usize,
    /// Callers queued for a lease.
    pub waiting: usize,
    /// The bound on sessions.
    pub max_sessions: usize,
    /// The bound on leases.
    pub max_leases: usize,
    /// Commands run per open session, on average (0 when none is open).
    pub average_executions_per_session: f64,
    /// Age of the oldest open session, in milliseconds.
    pub oldest_session_age_ms: Option<u64>,
    /// Sessions created.
    pub creates: u64,
    /// Leases served by an existing session.
    pub reuses: u64,
    /// Sessions closed because they were broken (timed out, failed, box died).
    pub discards: u64,
    /// Idle sessions closed to make room for another key.
    pub evictions: u64,
    /// Sessions closed for age, idleness or execution count.
    pub expirations: u64,
    /// `session.create` calls that failed.
    pub create_failures: u64,
    /// Callers that gave up waiting.
    pub acquire_timeouts: u64,
}

struct PooledSession {
    id: String,
    key: PoolKey,
    created: Instant,
    last_used: Instant,
    executions: u64,
}

impl PooledSession {
    /// Why this session must not be handed out any more, if it must not.
    fn expired(&self, config: &PoolConfig, now: Instant) -> Option<&'static str> {
        if now.duration_since(self.created) >= config.max_lifetime {
            Some("maximum lifetime reached")
        } else if now.duration_since(self.last_used) >= config.idle_timeout {
            Some("idle timeout")
        } else if config
            .max_executions_per_session
            .is_some_and(|max| self.executions >= max)
        {
            Some("maximum executions reached")
        } else {
            None
        }
    }
}

enum GrantKind {
    /// An idle session of the waiter's key (the lease is already counted).
    Reuse(PooledSession),
    /// A reserved slot (and lease) for a new session.
    Create,
}

/// A grant travelling to a waiter. If the waiter is gone by the time it would be received, its
/// `Drop` gives the session or slot back.
struct Grant {
    pool: Weak<PoolInner>,
    kind: Option<GrantKind>,
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let (Some(kind), Some(pool)) = (self.kind.take(), self.pool.upgrade()) {
            let to_close = {
                let mut st = pool.lock();
                pool.undo(&mut st, kind);
                pool.dispatch(&mut st)
            };
            pool.spawn_closes(to_close);
        }
    }
}

struct Waiter {
    id: u64,
    key: PoolKey,
    bypassed: u32,
    tx: oneshot::Sender<Grant>,
}

#[derive(Default)]
struct Counters {
    creates: u64,
    reuses: u64,
    discards: u64,
    evictions: u64,
    expirations: u64,
    create_failures: u64,
    acquire_timeouts: u64,
}

#[derive(Default)]
struct State {
    /// Ordered by last use, oldest first.
    idle: Vec<PooledSession>,
    leased: usize,
    closing: usize,
    waiters: VecDeque<Waiter>,
    closed: bool,
    /// Every open session (idle or leased): creation time and commands run, for statistics.
    live: HashMap<String, (Instant, u64)>,
    counters: Counters,
}

impl State {
    fn total(&self) -> usize {
        self.idle.len() + self.leased + self.closing
    }
}

struct PoolInner {
    backend: Arc<dyn Backend>,
    config: PoolConfig,
    max_leases: usize,
    state: Mutex<State>,
    next_waiter: AtomicU64,
}

/// A bounded pool of sessions over any [`Backend`]. Cheap to clone; clones share the pool.
///
/// ```no_run
/// # async fn demo(client: codebeaker_client::Client) -> Result<(), codebeaker_client::ClientError> {
/// use std::sync::Arc;
/// use codebeaker_client::{CallOptions, PoolConfig, SessionPool};
/// use codebeaker_protocol::commands::{Command, ExecuteCommand};
///
/// let pool = SessionPool::new(Arc::new(client), PoolConfig { max_sessions: 4, ..Default::default() })?;
/// let mut lease = pool.acquire("python").await?;
/// let reply = lease
///     .execute(
///         Command::Execute(ExecuteCommand { code: "print(6 * 7)".into(), ..Default::default() }),
///         CallOptions::default(),
///     )
///     .await?;
/// assert!(reply.success);
/// drop(lease); // back to the pool, ready for the next python caller
/// println!("{:?}", pool.stats());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionPool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPool")
            .field("backend", &self.inner.backend.endpoint())
            .field("stats", &self.stats())
            .finish()
    }
}

impl SessionPool {
    /// A pool over `backend`. Starts the cleanup task when [`PoolConfig::cleanup_interval`] is
    /// set (which needs a tokio runtime).
    pub fn new(backend: Arc<dyn Backend>, config: PoolConfig) -> Result<SessionPool, ClientError> {
        config.validate()?;
        let max_leases = config.lease_bound();
        let inner = Arc::new(PoolInner {
            backend,
            max_leases,
            config,
            state: Mutex::new(State::default()),
            next_waiter: AtomicU64::new(1),
        });
        if let Some(interval) = inner.config.cleanup_interval {
            let weak = Arc::downgrade(&inner);
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.lock().closed {
                        return;
                    }
                    let closed = inner.cleanup().await;
                    if closed > 0 {
                        tracing::debug!(closed, "pool cleanup closed expired sessions");
                    }
                }
            });
        }
        Ok(SessionPool { inner })
    }

    /// The backend the pool's sessions live on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// A lease on a session of `language` (no tenant).
    pub async fn acquire(&self, language: &str) -> Result<Lease, ClientError> {
        self.acquire_key(PoolKey::language(language)).await
    }

    /// A lease on a session for `key`: an idle one, a new one, or the first to become
    /// available, within [`PoolConfig::acquire_timeout`].
    pub async fn acquire_key(&self, key: PoolKey) -> Result<Lease, ClientError> {
        let inner = &self.inner;
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + inner.config.acquire_timeout);
        // Fast path: nobody queues, so taking what is there keeps the queue's order.
        let (granted, to_close) = {
            let mut st = inner.lock();
            if st.closed {
                return Err(ClientError::PoolClosed);
            }
            let mut to_close = Vec::new();
            let granted = if st.waiters.is_empty() {
                inner.try_grant(&mut st, &key, &mut to_close)
            } else {
                None
            };
            (granted, to_close)
        };
        inner.spawn_closes(to_close);
        if let Some(kind) = granted {
            return inner.fulfil(key, kind, started).await;
        }
        let (waiter_id, mut rx, to_close) = {
            let mut st = inner.lock();
            if st.closed {
                return Err(ClientError::PoolClosed);
            }
            let id = inner.next_waiter.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(Waiter {
                id,
                key: key.clone(),
                bypassed: 0,
                tx,
            });
            let to_close = inner.dispatch(&mut st);
            (id, rx, to_close)
        };
        inner.spawn_closes(to_close);
        let grant = match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(grant)) => grant,
            Ok(Err(_)) => return Err(ClientError::PoolClosed),
            Err(_) => {
                let mut st = inner.lock();
                let before = st.waiters.len();
                st.waiters.retain(|w| w.id != waiter_id);
                if st.waiters.len() == before {
                    // Granted just as the time ran out: the grant is in the channel. Use it.
                    drop(st);
                    match rx.try_recv() {
                        Ok(grant) => grant,
                        Err(_) => return Err(ClientError::PoolClosed),
                    }
                } else {
                    st.counters.acquire_timeouts += 1;
                    let detail = inner.describe(&st, &key);
                    return Err(ClientError::PoolTimeout {
                        waited: started.elapsed(),
                        detail,
                    });
                }
            }
        };
        let mut grant = grant;
        match grant.kind.take() {
            Some(kind) => inner.fulfil(key, kind, started).await,
            None => Err(ClientError::PoolClosed),
        }
    }

    /// Opens up to `count` idle sessions for `language` ahead of use, within the bounds (free
    /// slots only; nothing is evicted). Returns how many were opened.
    pub async fn warm_up(&self, language: &str, count: usize) -> Result<usize, ClientError> {
        self.warm_up_key(PoolKey::language(language), count).await
    }

    /// [`SessionPool::warm_up`] for a key.
    pub async fn warm_up_key(&self, key: PoolKey, count: usize) -> Result<usize, ClientError> {
        let inner = &self.inner;
        let mut reserved = 0;
        {
            let mut st = inner.lock();
            if st.closed {
                return Err(ClientError::PoolClosed);
            }
            while reserved < count
                && st.total() < inner.config.max_sessions
                && st.leased < inner.max_leases
            {
                st.leased += 1;
                reserved += 1;
            }
        }
        let started = Instant::now();
        let creates = (0..reserved).map(|_| inner.fulfil(key.clone(), GrantKind::Create, started));
        let results = futures_util::future::join_all(creates).await;
        let mut opened = 0;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(lease) => {
                    opened += 1;
                    drop(lease);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (opened, first_error) {
            (0, Some(e)) => Err(e),
            _ => Ok(opened),
        }
    }

    /// Closes idle sessions that are past their idle timeout, lifetime or execution count, and
    /// waits for the closes. Returns how many were closed.
    pub async fn cleanup(&self) -> usize {
        self.inner.cleanup().await
    }

    /// The pool's numbers right now.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let st = inner.lock();
        let now = Instant::now();
        let open = st.live.len();
        let executions: u64 = st.live.values().map(|(_, n)| n).sum();
        let free_slots = inner.config.max_sessions.saturating_sub(st.total());
        PoolStats {
            total: st.total(),
            active: st.leased,
            idle: st.idle.len(),
            closing: st.closing,
            available: inner
                .max_leases
                .saturating_sub(st.leased)
                .min(st.idle.len() + free_slots),
            waiting: st.waiters.len(),
            max_sessions: inner.config.max_sessions,
            max_leases: inner.max_leases,
            average_executions_per_session: if open == 0 {
                0.0
            } else {
                executions as f64 / open as f64
            },
            oldest_session_age_ms: st
                .live
                .values()
                .map(|(created, _)| now.duration_since(*created))
                .max()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            creates: st.counters.creates,
            reuses: st.counters.reuses,
            discards: st.counters.discards,
            evictions: st.counters.evictions,
            expirations: st.counters.expirations,
            create_failures: st.counters.create_failures,
            acquire_timeouts: st.counters.acquire_timeouts,
        }
    }

    /// Closes every idle session and refuses new leases; leased sessions are closed when they
    /// come back. Waits for the idle ones to close.
    pub async fn close(&self) {
        let inner = &self.inner;
        let idle = {
            let mut st = inner.lock();
            st.closed = true;
            st.waiters.clear();
            let idle: Vec<PooledSession> = st.idle.drain(..).collect();
            st.closing += idle.len();
            idle
        };
        let closes = idle.into_iter().map(|s| inner.close_and_finish(s));
        futures_util::future::join_all(closes).await;
    }
}

impl PoolInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pool's state in words, for errors.
    fn describe(&self, st: &State, key: &PoolKey) -> String {
        format!(
            "waiting for {key}: {} of {} sessions leased (lease bound {}), {} idle, {} closing, {} callers queued",
            st.leased,
            self.config.max_sessions,
            self.max_leases,
            st.idle.len(),
            st.closing,
            st.waiters.len()
        )
    }

    /// Moves expired idle sessions to `to_close`.
    fn reap_expired(&self, st: &mut State, to_close: &mut Vec<PooledSession>) {
        let now = Instant::now();
        let mut i = 0;
        while i < st.idle.len() {
            if let Some(why) = st.idle[i].expired(&self.config, now) {
                let s = st.idle.remove(i);
                tracing::debug!(session = %s.id, key = %s.key, reason = why, "retiring an idle session");
                st.counters.expirations += 1;
                st.closing += 1;
                to_close.push(s);
            } else {
                i += 1;
            }
        }
    }

    /// What `key` can have right now, accounted for: an idle session of its key (most recently
    /// used first), or a free slot.
    fn try_grant(
        &self,
        st: &mut State,
        key: &PoolKey,
        to_close: &mut Vec<PooledSession>,
    ) -> Option<GrantKind> {
        self.reap_expired(st, to_close);
        if st.leased >= self.max_leases {
            return None;
        }
        if let Some(i) = st.idle.iter().rposition(|s| s.key == *key) {
            let s = st.idle.remove(i);
            st.leased += 1;
            return Some(GrantKind::Reuse(s));
        }
        if st.total() < self.config.max_sessions {
            st.leased += 1;
            return Some(GrantKind::Create);
        }
        None
    }

    /// Gives back what a grant held (the waiter was gone).
    fn undo(&self, st: &mut State, kind: GrantKind) {
        st.leased = st.leased.saturating_sub(1);
        if let GrantKind::Reuse(s) = kind {
            let at = st
                .idle
                .iter()
                .position(|o| o.last_used > s.last_used)
                .unwrap_or(st.idle.len());
            st.idle.insert(at, s);
        }
    }

    /// Hands out whatever can be handed out to the queue, in order, and evicts idle sessions of
    /// other keys when queued callers need their slots. Returns sessions to close (already
    /// counted as closing). Call with the lock held, after any change that may free capacity.
    fn dispatch(self: &Arc<Self>, st: &mut State) -> Vec<PooledSession> {
        let mut to_close = Vec::new();
        self.reap_expired(st, &mut to_close);
        if st.closed {
            return to_close;
        }
        loop {
            st.waiters.retain(|w| !w.tx.is_closed());
            if st.waiters.is_empty() || st.leased >= self.max_leases {
                break;
            }
            // A waiter whose key has an idle session, the head first; others only while the
            // head has not been passed over too often.
            let head_may_be_bypassed = st.waiters[0].bypassed < MAX_BYPASS;
            let mut reuse = None;
            for (wi, w) in st.waiters.iter().enumerate() {
                if wi > 0 && !head_may_be_bypassed {
                    break;
                }
                if let Some(si) = st.idle.iter().rposition(|s| s.key == w.key) {
                    reuse = Some((wi, si));
                    break;
                }
            }
            let (wi, kind) = match reuse {
                Some((wi, si)) => {
                    if wi > 0 {
                        st.waiters[0].bypassed += 1;
                    }
                    (wi, GrantKind::Reuse(st.idle.remove(si)))
                }
                None if st.total() < self.config.max_sessions => (0, GrantKind::Create),
                None => break,
            };
            st.leased += 1;
            let Some(waiter) = st.waiters.remove(wi) else {
                self.undo(st, kind);
                break;
            };
            let grant = Grant {
                pool: Arc::downgrade(self),
                kind: Some(kind),
            };
            if let Err(mut grant) = waiter.tx.send(grant) {
                if let Some(kind) = grant.kind.take() {
                    self.undo(st, kind);
                }
            }
        }
        // Queued callers that could proceed with a slot, against the slots already coming free.
        let needing = st
            .waiters
            .len()
            .min(self.max_leases.saturating_sub(st.leased));
        while needing > st.closing && !st.idle.is_empty() {
            let s = st.idle.remove(0);
            tracing::debug!(session = %s.id, key = %s.key, "evicting an idle session to make room");
            st.counters.evictions += 1;
            st.closing += 1;
            to_close.push(s);
        }
        to_close
    }

    /// Turns a grant into a lease: at once for a reuse, after `session.create` for a slot. The
    /// create runs in its own task, so that a caller that gives up mid-way cannot leak the
    /// session or the slot: the task returns either to the pool.
    async fn fulfil(
        self: &Arc<Self>,
        key: PoolKey,
        kind: GrantKind,
        started: Instant,
    ) -> Result<Lease, ClientError> {
        match kind {
            GrantKind::Reuse(session) => {
                self.lock().counters.reuses += 1;
                Ok(Lease {
                    pool: Arc::clone(self),
                    session: Some(session),
                    reused: true,
                    broken: None,
                    waited: started.elapsed(),
                })
            }
            GrantKind::Create => {
                let reservation = Reservation {
                    pool: Arc::clone(self),
                    armed: true,
                };
                let (tx, rx) = oneshot::channel();
                let pool = Arc::clone(self);
                tokio::spawn(async move {
                    let result = pool.create(&key).await;
                    let outcome = match result {
                        Ok(session) => {
                            let mut reservation = reservation;
                            reservation.armed = false;
                            {
                                let mut st = pool.lock();
                                st.counters.creates += 1;
                                st.live.insert(session.id.clone(), (session.created, 0));
                            }
                            Ok(Lease {
                                pool: Arc::clone(&pool),
                                session: Some(session),
                                reused: false,
                                broken: None,
                                waited: started.elapsed(),
                            })
                        }
                        Err(e) => {
                            pool.lock().counters.create_failures += 1;
                            drop(reservation);
                            Err(e)
                        }
                    };
                    // If the caller is gone, dropping the lease gives the session back.
                    let _ = tx.send(outcome);
                });
                match rx.await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(ClientError::PoolClosed),
                }
            }
        }
    }

    async fn create(&self, key: &PoolKey) -> Result<PooledSession, ClientError> {
        let minutes = |d: Duration| d.as_secs().div_ceil(60) + 1;
        let settings = &self.config.session;
        let params = SessionCreateParams {
            language: key.language.clone(),
            runtime: settings.runtime.clone(),
            idle_timeout_minutes: Some(minutes(self.config.idle_timeout)),
            max_lifetime_minutes: Some(minutes(self.config.max_lifetime)),
            memory_limit_mb: settings.memory_limit_mb,
            cpu_shares: settings.cpu_shares,
        };
        let created = self.backend.session_create(params).await?;
        let now = Instant::now();
        tracing::debug!(session = %created.session_id, key = %key, "session created for the pool");
        Ok(PooledSession {
            id: created.session_id,
            key: key.clone(),
            created: now,
            last_used: now,
            executions: 0,
        })
    }

    /// A lease came back.
    fn give_back(self: &Arc<Self>, mut session: PooledSession, broken: Option<String>) {
        let to_close = {
            let mut st = self.lock();
            st.leased = st.leased.saturating_sub(1);
            session.last_used = Instant::now();
            if let Some(entry) = st.live.get_mut(&session.id) {
                entry.1 = session.executions;
            }
            let retire = if let Some(reason) = &broken {
                tracing::debug!(session = %session.id, key = %session.key, reason = %reason, "discarding a broken session");
                st.counters.discards += 1;
                true
            } else if st.closed {
                true
            } else if let Some(why) = session.expired(&self.config, Instant::now()) {
                tracing::debug!(session = %session.id, key = %session.key, reason = why, "retiring a session");
                st.counters.expirations += 1;
                true
            } else {
                false
            };
            let mut to_close = Vec::new();
            if retire {
                st.closing += 1;
                to_close.push(session);
            } else {
                st.idle.push(session);
            }
            to_close.extend(self.dispatch(&mut st));
            to_close
        };
        self.spawn_closes(to_close);
    }

    /// Closes sessions (already counted as closing) in the background.
    fn spawn_closes(self: &Arc<Self>, sessions: Vec<PooledSession>) {
        if sessions.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                for session in sessions {
                    let pool = Arc::clone(self);
                    handle.spawn(async move { pool.close_and_finish(session).await });
                }
            }
            Err(_) => {
                // No runtime to close them on (the program is ending): the server's idle
                // timeout closes them. Free their slots.
                tracing::warn!(
                    count = sessions.len(),
                    "no async runtime: leaving sessions to the server's idle timeout"
                );
                let mut pending = sessions;
                while !pending.is_empty() {
                    let mut st = self.lock();
                    for s in &pending {
                        st.closing = st.closing.saturating_sub(1);
                        st.live.remove(&s.id);
                    }
                    // Each round can only evict idle sessions, so this ends.
                    pending = self.dispatch(&mut st);
                }
            }
        }
    }

    /// Closes a session that is counted as closing, then frees its slot.
    async fn close_and_finish(self: &Arc<Self>, session: PooledSession) {
        let close = self.backend.session_close(&session.id);
        match tokio::time::timeout(self.config.close_timeout, close).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_session_not_found() => {}
            Ok(Err(e)) => {
                tracing::warn!(session = %session.id, error = %e, "closing a pooled session failed")
            }
            Err(_) => {
                tracing::warn!(session = %session.id, timeout = ?self.config.close_timeout, "closing a pooled session timed out; freeing its slot")
            }
        }
        let to_close = {
            let mut st = self.lock();
            st.closing = st.closing.saturating_sub(1);
            st.live.remove(&session.id);
            self.dispatch(&mut st)
        };
        self.spawn_closes(to_close);
    }

    async fn cleanup(self: &Arc<Self>) -> usize {
        let expired = {
            let mut st = self.lock();
            let mut expired = Vec::new();
            self.reap_expired(&mut st, &mut expired);
            expired
        };
        let count = expired.len();
        let closes = expired.into_iter().map(|s| self.close_and_finish(s));
        futures_util::future::join_all(closes).await;
        count
    }
}

/// A reserved slot; freed in `Drop` unless a session was made for it.
struct Reservation {
    pool: Arc<PoolInner>,
    armed: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.armed {
            let to_close = {
                let mut st = self.pool.lock();
                st.leased = st.leased.saturating_sub(1);
                self.pool.dispatch(&mut st)
            };
            self.pool.spawn_closes(to_close);
        }
    }
}

/// Exclusive use of one pooled session until dropped. Dropping gives the session back to the
/// pool, or closes it when it was marked broken or has expired.
pub struct Lease {
    pool: Arc<PoolInner>,
    session: Option<PooledSession>,
    reused: bool,
    broken: Option<String>,
    waited: Duration,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("session_id", &self.session_id())
            .field("reused", &self.reused)
            .field("broken", &self.broken)
            .finish()
    }
}

impl Lease {
    /// The session's id, for [`crate::BackendExt`] helpers.
    pub fn session_id(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.id.as_str())
    }

    /// The key the session is pooled under.
    pub fn key(&self) -> Option<&PoolKey> {
        self.session.as_ref().map(|s| &s.key)
    }

    /// True when the session existed before this lease (no `session.create` was needed).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Commands run in the session so far.
    pub fn executions(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.executions)
    }

    /// Time from asking for the lease to having it (including creating a session).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The backend the session lives on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.pool.backend
    }

    /// Whether the session will be closed instead of reused.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Runs a command in the session. Marks the session broken when there was no answer
    /// (timeout, lost connection), when the server answered with a protocol-level error other
    /// than a refused request, or when a run ended `timeout`, `memory_limit`, `killed` or
    /// `internal_error`.
    pub async fn execute(
        &mut self,
        command: Command,
        options: CallOptions,
    ) -> Result<SessionExecuteResult, ClientError> {
        let Some(session) = self.session.as_mut() else {
            return Err(ClientError::PoolClosed);
        };
        let params = SessionExecuteParams {
            session_id: session.id.clone(),
            command,
            stream: None,
        };
        let result = self.pool.backend.session_execute(params, options).await;
        session.executions += 1;
        match &result {
            Err(e) if breaks_session(e) => self.broken = Some(e.to_string()),
            Ok(reply) => {
                let status = reply
                    .result
                    .as_ref()
                    .and_then(|r| r.get("status"))
                    .and_then(|s| s.as_str());
                if let Some(status @ ("timeout" | "memory_limit" | "killed" | "internal_error")) =
                    status
                {
                    self.broken = Some(format!("a run ended {status}"));
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Closes the session instead of giving it back when the lease ends.
    pub fn discard(&mut self, reason: impl Into<String>) {
        self.broken = Some(reason.into());
    }

    /// Ends the lease now (same as dropping it).
    pub fn release(self) {}
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.give_back(session, self.broken.take());
        }
    }
}

/// Whether an error leaves the session in an unknown state.
pub(crate) fn breaks_session(e: &ClientError) -> bool {
    use codebeaker_protocol::jsonrpc::ErrorCode;
    match e {
        ClientError::Rpc { error, .. } => matches!(
            error.error_code(),
            Some(ErrorCode::SessionNotFound | ErrorCode::InternalError) | None
        ),
        ClientError::InvalidResponse { .. } => true,
        other => other.is_transport(),
    }
}
