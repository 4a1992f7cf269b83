//! The per-caller session quota of authenticated tokens: the `session.create` calls under way,
//! counted against the caller's `max_sessions` together with its open sessions; and
//! [`open_session`], the one way every door (JSON-RPC, E2B, MCP) opens a session: the quota, the
//! engine call, the metrics and the audit log.
//!
//! The engine owns sessions and says when one ends ([`codebeaker_engine::Engine::on_session_end`]);
//! the server keeps no copy of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use codebeaker_engine::{Caller, SessionOptions, SessionSnapshot};
use codebeaker_protocol::jsonrpc::ErrorObject;

use crate::audit;
use crate::error::engine_error;
use crate::state::AppState;

/// How a door opens a session: the words of its quota refusal, and who logs its refusals.
pub(crate) struct Opening<'a> {
    /// The route refusals are written to the audit log under; `None` when the door logs them
    /// itself (JSON-RPC's `handle_request` does, for every method).
    pub route: Option<&'a str>,
    /// What the door calls a session in a refusal, e.g. `session(s)` or `sandbox(es)`.
    pub noun: &'a str,
    /// How the client makes room, e.g. `close one first`.
    pub make_room: &'a str,
}

/// Opens a session of `caller`: within the caller's own `max_sessions` (a token's quota; the
/// engine enforces its own bounds), counted in the metrics and written to the audit log.
pub(crate) async fn open_session(
    state: &AppState,
    caller: &Caller,
    options: SessionOptions,
    opening: Opening<'_>,
) -> Result<SessionSnapshot, ErrorObject> {
    let refused = |error: &ErrorObject| {
        if let Some(route) = opening.route {
            audit::refused(caller, route, error, audit::Subject::default());
        }
    };
    let _slot = match state.reserve_session(caller, opening.noun, opening.make_room) {
        Ok(slot) => slot,
        Err(error) => {
            refused(&error);
            return Err(error);
        }
    };
    let language = options.language.clone();
    let started = Instant::now();
    let created = state.engine.create_session(caller, options).await;
    let elapsed = started.elapsed();
    let snapshot = match created {
        Ok(snapshot) => snapshot,
        Err(e) => {
            let error = engine_error(e);
            match audit::refusal_reason(error.code, "session.create") {
                Some(_) => refused(&error),
                None => audit::session_create_failed(caller, &language, &error, elapsed),
            }
            return Err(error);
        }
    };
    state.metrics.session_created(elapsed);
    audit::session_created(
        caller,
        &snapshot.id,
        &snapshot.container_id,
        &snapshot.language,
        elapsed,
    );
    Ok(snapshot)
}

#[derive(Default)]
struct Inner {
    /// `session.create` calls under way, per caller (counted against the caller's quota).
    creating: HashMap<Caller, usize>,
}

/// The server's view of its sessions. Cheap to share.
#[derive(Default, Clone)]
pub(crate) struct SessionTracker(Arc<Mutex<Inner>>);

/// A place taken in a caller's session quota while its `session.create` runs.
pub(crate) struct CreateSlot {
    tracker: SessionTracker,
    caller: Caller,
}

impl Drop for CreateSlot {
    fn drop(&mut self) {
        let mut inner = self.tracker.lock();
        if let Some(n) = inner.creating.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.creating.remove(&self.caller);
            }
        }
    }
}

impl SessionTracker {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place in `caller`'s quota of `max` sessions, counting its open sessions (`open`)
    /// and its creations under way; `None` when the quota is full. Holding the lock while
    /// counting makes concurrent creations of one caller see each other.
    pub fn reserve(
        &self,
        caller: &Caller,
        max: usize,
        open: impl FnOnce() -> usize,
    ) -> Option<CreateSlot> {
        let mut inner = self.lock();
        let creating = inner.creating.get(caller).copied().unwrap_or(0);
        if open().saturating_add(creating) >= max {
            return None;
        }
        *inner.creating.entry(caller.clone()).or_insert(0) += 1;
        Some(CreateSlot {
            tracker: self.clone(),
            caller: caller.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_under_way_count_against_the_quota() {
        let tracker = SessionTracker::default();
        let alice = Caller("alice".into());
        let bob = Caller("bob".into());
        let first = tracker.reserve(&alice, 2, || 0).expect("room for two");
        let second = tracker.reserve(&alice, 2, || 0).expect("room for two");
        assert!(tracker.reserve(&alice, 2, || 0).is_none(), "two under way");
        assert!(tracker.reserve(&bob, 2, || 0).is_some(), "bob has his own");
        drop(first);
        assert!(
            tracker.reserve(&alice, 2, || 1).is_none(),
            "one open, one under way"
        );
        drop(second);
        assert!(tracker.reserve(&alice, 2, || 1).is_some());
        assert!(tracker.lock().creating.is_empty(), "slots are given back");
    }
}
