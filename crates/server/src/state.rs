//! What every handler shares: the engine, the settings, auth, rate limits, metrics, and the
//! shutdown signal.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::Mutex;

use codebeaker_engine::{Caller, EndReason, Engine, SessionEndSubscription};
use codebeaker_protocol::jsonrpc::ErrorObject;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::sessions::{CreateSlot, SessionTracker};
use crate::{ServerConfig, ServerError};

/// How long a readiness answer is reused before boxes are tried again.
const READINESS_TTL: Duration = Duration::from_secs(5);

/// The state shared by every request; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

#[doc(hidden)]
pub struct Shared {
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: ServerConfig,
    pub(crate) auth: Auth,
    pub(crate) limiter: RateLimiter,
    pub(crate) metrics: Metrics,
    pub(crate) sessions: SessionTracker,
    pub(crate) started: Instant,
    shutdown: watch::Sender<bool>,
    readiness: tokio::sync::Mutex<Option<Readiness>>,
    connection_seq: AtomicU64,
    /// Open WebSocket connections (shutdown waits for them).
    connections: watch::Sender<usize>,
    /// WebSocket connections per caller, counted from the upgrade request on.
    per_caller: Mutex<HashMap<String, usize>>,
}

/// Why a WebSocket upgrade was refused.
pub(crate) enum Crowded {
    /// The caller holds its most connections.
    Caller(usize),
    /// The server holds its most connections.
    Server(usize),
}

/// Counts a WebSocket connection against its caller's bound for as long as it lives.
pub(crate) struct CallerConnection {
    state: AppState,
    caller: String,
}

impl Drop for CallerConnection {
    fn drop(&mut self) {
        let mut counts = self
            .state
            .0
            .per_caller
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

/// Counts a WebSocket connection as open for as long as it lives.
pub(crate) struct ConnectionGuard(AppState);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
             .0
            .connections
            .send_modify(|open| *open = open.saturating_sub(1));
        self.0.metrics.ws_closed();
    }
}

/// The last answer to "can the engine create boxes?".
#[derive(Clone)]
pub(crate) struct Readiness {
    pub checked: Instant,
    /// `None` when ready; else why not.
    pub problem: Option<String>,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Builds the state for a server over `engine`. Fails when the settings are out of range.
    pub fn new(config: ServerConfig, engine: Arc<Engine>) -> Result<AppState, ServerError> {
        config.validate()?;
        let (shutdown, _) = watch::channel(false);
        let own_rates = config
            .caller_quotas
            .iter()
            .filter_map(|(caller, quota)| Some((caller.clone(), quota.rate_limit?)))
            .collect();
        Ok(AppState(Arc::new(Shared {
            auth: Auth::new(&config.auth),
            limiter: RateLimiter::new(config.rate_limit, own_rates),
            metrics: Metrics::new()?,
            sessions: SessionTracker::default(),
            engine,
            config,
            started: Instant::now(),
            shutdown,
            readiness: tokio::sync::Mutex::new(None),
            connection_seq: AtomicU64::new(0),
            connections: watch::channel(0).0,
            per_caller: Mutex::new(HashMap::new()),
        })))
    }

    /// The engine this server fronts.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.0.engine
    }

    /// Takes a place in `caller`'s own session quota (the `max_sessions` of its token) while a
    /// session is made for it, counting its open sessions and its creations under way: `None`
    /// when its token sets no quota, a `limit_reached` error when the quota is full. `held`
    /// names what the caller holds and `remedy` how to make room, in the words of its door.
    pub(crate) fn reserve_session(
        &self,
        caller: &Caller,
        held: &str,
        remedy: &str,
    ) -> Result<Option<CreateSlot>, ErrorObject> {
        let quota = self.config.caller_quotas.get(&caller.0);
        let Some(max) = quota.and_then(|q| q.max_sessions) else {
            return Ok(None);
        };
        self.sessions
            .reserve(caller, max, || self.engine.list_sessions(caller).len())
            .map(Some)
            .ok_or_else(|| {
                ErrorObject::limit_reached(format!(
                    "caller `{}` may hold at most {max} {held} at once (the max_sessions of its token); {remedy}",
                    caller.0
                ))
            })
    }

    /// Tells every open WebSocket connection to close, and readiness to fail.
    pub fn begin_shutdown(&self) {
        self.0.shutdown.send_replace(true);
    }

    pub(crate) fn shutting_down(&self) -> bool {
        *self.0.shutdown.borrow()
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.0.shutdown.subscribe()
    }

    pub(crate) fn connection_opened(&self) -> ConnectionGuard {
        self.0.connections.send_modify(|open| *open += 1);
        self.0.metrics.ws_opened();
        ConnectionGuard(self.clone())
    }

    /// Open WebSocket connections.
    pub(crate) fn open_websockets(&self) -> usize {
        *self.0.connections.borrow()
    }

    /// Counts one more WebSocket connection of `caller`, unless the caller or the server is at
    /// its bound.
    pub(crate) fn reserve_websocket(&self, caller: &Caller) -> Result<CallerConnection, Crowded> {
        let max = self.0.config.max_connections;
        let mut counts = self.0.per_caller.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = counts.values().sum();
        if total >= max {
            return Err(Crowded::Server(max));
        }
        let per_caller = self.0.config.max_connections_per_caller;
        let mine = counts.entry(caller.0.clone()).or_insert(0);
        if *mine >= per_caller {
            return Err(Crowded::Caller(per_caller));
        }
        *mine += 1;
        Ok(CallerConnection {
            state: self.clone(),
            caller: caller.0.clone(),
        })
    }

    /// Resolves when no WebSocket connection is open.
    pub(crate) async fn connections_closed(&self) {
        let mut open = self.0.connections.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.0.connection_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether the engine can create boxes: a box is created and destroyed, at most once every
    /// few seconds (probes in between get the last answer).
    pub(crate) async fn readiness(&self) -> Readiness {
        if self.shutting_down() {
            return Readiness {
                checked: Instant::now(),
                problem: Some("the server is shutting down".into()),
            };
        }
        let mut last = self.0.readiness.lock().await;
        if let Some(r) = last
            .as_ref()
            .filter(|r| r.checked.elapsed() < READINESS_TTL)
        {
            return r.clone();
        }
        let problem = match self.0.engine.create_box().await {
            Ok(bx) => {
                if let Err(e) = bx.destroy().await {
                    tracing::warn!(error = %e, "destroying the readiness probe's box failed");
                }
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "readiness probe: cannot create a box");
                Some(format!("cannot create a box: {e}"))
            }
        };
        let readiness = Readiness {
            checked: Instant::now(),
            problem,
        };
        *last = Some(readiness.clone());
        readiness
    }

    /// Accounts for the sessions the engine ends on its own (idle timeout, maximum lifetime, a
    /// box that died) as it ends them: counts them (`reaped`) and writes their audit events,
    /// until the subscription is dropped. A `session.close` accounts for its own session, and
    /// sessions ended by the engine's shutdown are not counted.
    pub(crate) fn account_session_ends(&self) -> SessionEndSubscription {
        let shared = Arc::downgrade(&self.0);
        self.0.engine.on_session_end(move |ended| {
            if matches!(ended.reason, EndReason::Closed | EndReason::Shutdown) {
                return;
            }
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.metrics.session_closed("reaped", 1);
            crate::audit::session_closed(&ended.caller, &ended.id, Some(&ended.language), "reaped");
        })
    }

    /// The last readiness answer, without probing.
    pub(crate) async fn last_readiness(&self) -> Option<Readiness> {
        self.0.readiness.lock().await.clone()
    }
}
