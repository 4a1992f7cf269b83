//! A pool of ready boxes, so that `session.create` and one-shot runs take a box that is already
//! set up (namespaces, root filesystem, cgroup, warm workers started and warmed up) instead of
//! waiting for one.
//!
//! Only boxes with the engine's default limits are pooled; a session that asks for other limits
//! gets a fresh box. A pooled box is handed out once and never returns to the pool. The pool is
//! refilled in the background by the engine's upkeep task ([`Engine::spawn_reaper`]), after the
//! one-shot runs in flight (or [`REFILL_YIELD`] at most), so that making a box does not take the
//! CPU from the run that just took one.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use codebeaker_languages::Mode;
use codebeaker_sandbox::SandboxBox;

use crate::{CodeRequest, Engine};

/// Longest the refill waits for one-shot runs in flight to end before making a box anyway.
const REFILL_YIELD: Duration = Duration::from_millis(50);

#[derive(Default)]
pub(crate) struct BoxPool {
    ready: Mutex<Vec<SandboxBox>>,
    /// Wakes the upkeep task when a box was taken.
    pub(crate) taken: std::sync::Arc<tokio::sync::Notify>,
    /// Languages whose warm worker a pooled box starts (and warms up), found once.
    warm_languages: OnceLock<Vec<String>>,
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
            self.executions.idle(REFILL_YIELD).await;
            match self.new_box(self.config().box_limits).await {
                Ok(bx) => {
                    self.prestart_workers(&bx, None, true).await;
                    self.warm_up(&bx).await;
                    self.pool.lock().push(bx);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "filling the pool of ready boxes failed");
                    return;
                }
            }
        }
    }

    /// Runs an empty script once in every language whose warm worker the box has started, so
    /// that the one-time costs of a box's and a worker's first run are paid here, in the
    /// background, and not by the first program the box runs for a caller. A failure only costs
    /// speed.
    async fn warm_up(&self, bx: &SandboxBox) {
        for language in self.warm_languages() {
            let request = CodeRequest {
                language: language.clone(),
                code: String::new(),
                input: None,
                stdin: Vec::new(),
                limits: self.config().run_limits,
                ..CodeRequest::default()
            };
            match self.execute_in(bx, &request).await {
                Ok(run) if run.success() => {}
                Ok(run) => {
                    tracing::debug!(language = %language, status = %run.outcome.status, "a pooled box's warm-up run failed");
                }
                Err(e) => {
                    tracing::debug!(language = %language, error = %e, "a pooled box's warm-up run failed");
                }
            }
        }
    }

    /// The available languages that have a warm worker (none when warm workers are off).
    fn warm_languages(&self) -> &[String] {
        self.pool.warm_languages.get_or_init(|| {
            if !self.config().warm_workers {
                return Vec::new();
            }
            let registry = self.registry();
            registry
                .discover()
                .iter()
                .filter(|(_, toolchain)| toolchain.available)
                .filter(|(name, _)| {
                    registry
                        .prepare(name, "", Mode::Script)
                        .is_ok_and(|plan| plan.warm().is_some())
                })
                .map(|(name, _)| name.clone())
                .collect()
        })
    }
}
