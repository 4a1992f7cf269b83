//! What the server remembers about the sessions it created: their caller and language (for
//! metric labels and the audit log), the sessions the engine ended on its own (found by
//! [`SessionTracker::sweep`]), and the per-caller session quota.
//!
//! The engine owns sessions; this is only the server's view. A session the engine ends (idle
//! timeout, maximum lifetime, a box that died) is noticed at the next sweep (every reap interval,
//! and at each `/metrics` scrape), and counted and logged as `reaped`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use codebeaker_engine::{Caller, Engine};

struct Tracked {
    caller: Caller,
    language: String,
    /// A `session.close` for it is under way: the engine has (or soon will have) forgotten it,
    /// and the close, not a sweep, accounts for it.
    closing: bool,
}

/// A session the engine ended on its own.
pub(crate) struct Ended {
    pub id: String,
    pub caller: Caller,
    pub language: String,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Tracked>,
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

    /// A session this server created.
    pub fn created(&self, caller: &Caller, id: &str, language: &str) {
        self.lock().sessions.insert(
            id.to_string(),
            Tracked {
                caller: caller.clone(),
                language: language.to_string(),
                closing: false,
            },
        );
    }

    /// The language of a session this server created, if it is the caller's.
    pub fn language_of(&self, caller: &Caller, id: &str) -> Option<String> {
        self.lock()
            .sessions
            .get(id)
            .filter(|t| t.caller == *caller)
            .map(|t| t.language.clone())
    }

    /// A `session.close` of `id` by `caller` starts.
    pub fn closing(&self, caller: &Caller, id: &str) {
        if let Some(t) = self.lock().sessions.get_mut(id) {
            if t.caller == *caller {
                t.closing = true;
            }
        }
    }

    /// The `session.close` of `id` ended: `closed` when it closed the session. Returns the
    /// session's language when this server created it.
    pub fn close_done(&self, caller: &Caller, id: &str, closed: bool) -> Option<String> {
        let mut inner = self.lock();
        let mine = inner.sessions.get(id).is_some_and(|t| t.caller == *caller);
        if !mine {
            return None;
        }
        if closed {
            inner.sessions.remove(id).map(|t| t.language)
        } else {
            if let Some(t) = inner.sessions.get_mut(id) {
                t.closing = false;
            }
            None
        }
    }

    /// Forgets and returns the sessions the engine no longer has (and no close accounts for).
    pub fn sweep(&self, engine: &Engine) -> Vec<Ended> {
        // Only sessions tracked before the engine is asked: a session is tracked after the
        // engine has it, so one missing from the answer below is really gone.
        let candidates: Vec<(String, Caller)> = self
            .lock()
            .sessions
            .iter()
            .filter(|(_, t)| !t.closing)
            .map(|(id, t)| (id.clone(), t.caller.clone()))
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let callers: HashSet<&Caller> = candidates.iter().map(|(_, c)| c).collect();
        let alive: HashSet<String> = callers
            .into_iter()
            .flat_map(|caller| engine.list_sessions(caller))
            .map(|s| s.id)
            .collect();
        let mut inner = self.lock();
        let mut ended = Vec::new();
        for (id, _) in candidates {
            if alive.contains(&id) || inner.sessions.get(&id).is_none_or(|t| t.closing) {
                continue;
            }
            if let Some(t) = inner.sessions.remove(&id) {
                ended.push(Ended {
                    id,
                    caller: t.caller,
                    language: t.language,
                });
            }
        }
        ended
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

    #[test]
    fn a_close_accounts_for_its_session() {
        let tracker = SessionTracker::default();
        let alice = Caller("alice".into());
        tracker.created(&alice, "s1", "python");
        assert_eq!(tracker.language_of(&alice, "s1").as_deref(), Some("python"));
        assert_eq!(tracker.language_of(&Caller("bob".into()), "s1"), None);
        // Another caller's failed close changes nothing.
        tracker.closing(&Caller("bob".into()), "s1");
        assert!(!tracker.lock().sessions["s1"].closing);
        tracker.closing(&alice, "s1");
        assert!(tracker.lock().sessions["s1"].closing);
        assert_eq!(tracker.close_done(&alice, "s1", false), None);
        assert!(!tracker.lock().sessions["s1"].closing);
        tracker.closing(&alice, "s1");
        assert_eq!(
            tracker.close_done(&alice, "s1", true).as_deref(),
            Some("python")
        );
        assert!(tracker.lock().sessions.is_empty());
    }
}
