//! The per-caller session quota of authenticated tokens: the `session.create` calls under way,
//! counted against the caller's `max_sessions` together with its open sessions.
//!
//! The engine owns sessions and says when one ends ([`codebeaker_engine::Engine::on_session_end`]);
//! the server keeps no copy of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use codebeaker_engine::Caller;

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
