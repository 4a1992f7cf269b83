//! The slots one-shot runs take, shared fairly among callers.
//!
//! A FIFO semaphore gives a slot to whoever asked first, so one caller who queues a thousand runs
//! makes every other caller wait behind all of them. Here a slot that comes free goes to the
//! waiting caller with the fewest runs holding a slot (the one who asked first among equals), so
//! a caller alone still gets every slot, and two callers get half each however many runs one of
//! them queued. Tokio's semaphore has no notion of whose permit it is, and no crate we know
//! offers a weighted-by-owner fair semaphore, hence these few lines.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// `slots` slots, handed out fairly among callers.
#[derive(Debug)]
pub(crate) struct FairSlots {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    free: usize,
    /// Slots held, by caller (callers holding none are absent).
    held: HashMap<String, usize>,
    /// Who waits, in the order they asked.
    waiting: VecDeque<(String, oneshot::Sender<SlotPermit>)>,
}

/// A slot, given back when dropped (to the waiting caller who holds the fewest).
#[derive(Debug)]
pub(crate) struct SlotPermit {
    state: Arc<Mutex<State>>,
    caller: String,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FairSlots {
    pub(crate) fn new(slots: usize) -> FairSlots {
        FairSlots {
            state: Arc::new(Mutex::new(State {
                free: slots.max(1),
                held: HashMap::new(),
                waiting: VecDeque::new(),
            })),
        }
    }

    /// A slot for `caller`: at once when one is free and nobody waits, else when this caller is
    /// the fairest choice for a slot that comes free.
    pub(crate) async fn acquire(&self, caller: &str) -> SlotPermit {
        let rx = {
            let mut st = lock(&self.state);
            if st.free > 0 && st.waiting.is_empty() {
                st.free -= 1;
                *st.held.entry(caller.to_owned()).or_default() += 1;
                return SlotPermit {
                    state: Arc::clone(&self.state),
                    caller: caller.to_owned(),
                };
            }
            let (tx, rx) = oneshot::channel();
            st.waiting.push_back((caller.to_owned(), tx));
            rx
        };
        match rx.await {
            Ok(permit) => permit,
            // The sender is dropped only with the whole set of slots, which outlives its users;
            // should it ever happen, wait again rather than run without a slot.
            Err(_) => Box::pin(self.acquire(caller)).await,
        }
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        if let Some(n) = st.held.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                st.held.remove(&self.caller);
            }
        }
        st.free += 1;
        while st.free > 0 && !st.waiting.is_empty() {
            let fairest = (0..st.waiting.len())
                .min_by_key(|&i| st.held.get(&st.waiting[i].0).copied().unwrap_or(0))
                .unwrap_or(0);
            let Some((caller, tx)) = st.waiting.remove(fairest) else {
                break;
            };
            st.free -= 1;
            *st.held.entry(caller.clone()).or_default() += 1;
            let permit = SlotPermit {
                state: Arc::clone(&self.state),
                caller,
            };
            // A waiter that gave up drops the permit it is sent; that must not re-enter this
            // lock, so undo by hand.
            if let Err(mut unused) = tx.send(permit) {
                let caller = std::mem::take(&mut unused.caller);
                std::mem::forget(unused);
                if let Some(n) = st.held.get_mut(&caller) {
                    *n -= 1;
                    if *n == 0 {
                        st.held.remove(&caller);
                    }
                }
                st.free += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_caller_alone_gets_every_slot() {
        let slots = FairSlots::new(3);
        let a = slots.acquire("a").await;
        let b = slots.acquire("a").await;
        let c = slots.acquire("a").await;
        assert_eq!(lock(&slots.state).held["a"], 3);
        drop((a, b, c));
        let st = lock(&slots.state);
        assert_eq!(st.free, 3);
        assert!(st.held.is_empty());
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_waiter_who_holds_fewest() {
        let slots = Arc::new(FairSlots::new(2));
        let first = slots.acquire("mallory").await;
        let second = slots.acquire("mallory").await;
        // Mallory queues three more runs, then alice one.
        let (tx, mut granted) = tokio::sync::mpsc::unbounded_channel();
        for who in ["mallory", "mallory", "mallory", "alice"] {
            let (slots, tx) = (Arc::clone(&slots), tx.clone());
            tokio::spawn(async move {
                let permit = slots.acquire(who).await;
                tx.send((who, permit)).ok();
            });
            tokio::task::yield_now().await;
        }
        assert_eq!(lock(&slots.state).waiting.len(), 4);
        // Mallory still holds one slot, alice none: alice is next, then mallory.
        drop(first);
        let (who, alices) = granted.recv().await.expect("a grant");
        assert_eq!(who, "alice");
        drop(second);
        let (who, _mallorys) = granted.recv().await.expect("a grant");
        assert_eq!(who, "mallory");
        drop(alices);
        let (who, _) = granted.recv().await.expect("a grant");
        assert_eq!(who, "mallory");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_loses_no_slot() {
        let slots = FairSlots::new(1);
        let held = slots.acquire("a").await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), slots.acquire("b")).await;
        assert!(gave_up.is_err());
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(1), slots.acquire("c")).await;
        assert!(again.is_ok(), "the slot came back");
        let st = lock(&slots.state);
        assert_eq!(st.free, 0);
        assert!(st.waiting.is_empty());
    }
}
