//! A pool of ready boxes, so that `session.create` and one-shot runs take a box that is already
//! set up (namespaces, root filesystem, cgroup) instead of waiting for one.
//!
//! Only boxes with the engine's default limits are pooled; a session that asks for other limits
//! gets a fresh box. A pooled box is handed out once and never returns to the pool. The pool is
//! refilled in the background by the engine's upkeep task ([`Engine::spawn_reaper`]).

use std::sync::Mutex;

use codebeaker_sandbox::SandboxBox;

use crate::Engine;

#[derive(Default)]
pub(crate) struct BoxPool {
    ready: Mutex<Vec<SandboxBox>>,
    /// Wakes the upkeep task when a box was taken.
    pub(crate) taken: std::sync::Arc<tokio::sync::Notify>,
}

impl BoxPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SandboxBox>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn take(&self) -> Option<SandboxBox> {
        let bx = self.lock().pop();
        if bx.is_some() {
            self.taken.notify_one();
        }
        bx
    }

    pub fn drain(&self) -> Vec<SandboxBox> {
        self.lock().drain(..).collect()
    }
}

impl Engine {
    /// Creates boxes until the pool holds `box_pool_size` of them.
    pub async fn refill_pool(&self) {
        while self.pool.len() < self.config().box_pool_size {
            match self.new_box(self.config().box_limits).await {
                Ok(bx) => {
                    self.prestart_workers(&bx, None, true).await;
                    self.pool.lock().push(bx);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "filling the pool of ready boxes failed");
                    return;
                }
            }
        }
    }
}
