//! The sandboxes of one MCP client: the sessions it created, bounded, and closed when the client
//! goes (its MCP session ends).
//!
//! A client sees only its own sandboxes: a sandbox id is looked up in its own table, and the
//! engine checks the caller besides, so another client's id (of the same caller or another) is
//! as unknown as a made-up one. Creations under way count against the bound, so that concurrent
//! `sandbox_create` calls cannot pass it together.
//!
//! The table goes with the last handle of its client. Then every sandbox still in it is closed on
//! a task of its own (dropping cannot wait); [`Sandboxes::close_all`] closes them and waits, for
//! the stdio server that exits after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use codebeaker_engine::{Caller, EngineError};

use crate::audit;
use crate::state::AppState;

/// One sandbox: a session of the client's caller, and the contexts its cells run in.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    /// The session id.
    pub id: String,
    pub caller: Caller,
    /// The language it was created with: its cells' when a call names none.
    pub language: String,
}

#[derive(Default)]
struct Table {
    open: Vec<Sandbox>,
    /// `sandbox_create` calls under way.
    creating: usize,
    /// The context of each (sandbox, language) that cells run in.
    contexts: HashMap<(String, String), String>,
}

/// The sandboxes of one MCP client.
pub(crate) struct Sandboxes {
    state: AppState,
    max: usize,
    table: Mutex<Table>,
    /// Held while a sandbox's context is looked up or made, so that two cells do not make two.
    pub making: tokio::sync::Mutex<()>,
}

/// A place taken in the client's bound while its `sandbox_create` runs.
pub(crate) struct Creating<'a>(&'a Sandboxes);

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        let mut table = self.0.lock();
        table.creating = table.creating.saturating_sub(1);
    }
}

impl Creating<'_> {
    /// Adds the sandbox the creation made.
    pub fn done(self, sandbox: Sandbox) {
        self.0.lock().open.push(sandbox);
    }
}

impl Sandboxes {
    pub fn new(state: AppState, max: usize) -> Arc<Sandboxes> {
        Arc::new(Sandboxes {
            state,
            max,
            table: Mutex::new(Table::default()),
            making: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most sandboxes the client may hold at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a place for one more sandbox; `None` when the client holds its most.
    pub fn reserve(&self) -> Option<Creating<'_>> {
        let mut table = self.lock();
        if table.open.len() + table.creating >= self.max {
            return None;
        }
        table.creating += 1;
        Some(Creating(self))
    }

    /// The client's sandbox `id`, when it is the caller's (a sandbox is never someone else's).
    pub fn get(&self, caller: &Caller, id: &str) -> Option<Sandbox> {
        self.lock()
            .open
            .iter()
            .find(|s| s.id == id && s.caller == *caller)
            .cloned()
    }

    /// The context cells of `language` run in, in sandbox `id`, if one was made.
    pub fn context(&self, id: &str, language: &str) -> Option<String> {
        self.lock()
            .contexts
            .get(&(id.to_string(), language.to_string()))
            .cloned()
    }

    pub fn set_context(&self, id: &str, language: &str, context: String) {
        self.lock()
            .contexts
            .insert((id.to_string(), language.to_string()), context);
    }

    /// Forgets the sandboxes whose sessions are not among `open` (the engine ended them: idle,
    /// past their lifetime, their box died).
    pub fn forget_all_but(&self, open: &[String]) {
        let mut table = self.lock();
        table.open.retain(|s| open.contains(&s.id));
        let Table {
            open: kept,
            contexts,
            ..
        } = &mut *table;
        contexts.retain(|(sandbox, _), _| kept.iter().any(|s| &s.id == sandbox));
    }

    /// Takes sandbox `id` out of the table (it is gone, or about to be closed).
    pub fn forget(&self, id: &str) -> Option<Sandbox> {
        let mut table = self.lock();
        table.contexts.retain(|(sandbox, _), _| sandbox != id);
        let at = table.open.iter().position(|s| s.id == id)?;
        Some(table.open.remove(at))
    }

    /// Closes every sandbox of the client and waits for them to be gone.
    pub async fn close_all(&self) {
        let open = std::mem::take(&mut self.lock().open);
        for sandbox in open {
            close(&self.state, &sandbox, "client").await;
        }
    }
}

impl Drop for Sandboxes {
    fn drop(&mut self) {
        let open = std::mem::take(&mut self.lock().open);
        if open.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (the process is ending): the engine's shutdown closes them.
            return;
        };
        let state = self.state.clone();
        runtime.spawn(async move {
            for sandbox in open {
                close(&state, &sandbox, "client").await;
            }
        });
    }
}

/// Closes the session of `sandbox`, counted and written to the audit log as a session closed by
/// its client (`reason` `client`) or ended for it (`reaped`). False when it was already gone.
pub(crate) async fn close(state: &AppState, sandbox: &Sandbox, reason: &'static str) -> bool {
    match state
        .engine
        .close_session(&sandbox.caller, &sandbox.id)
        .await
    {
        Ok(ended) => {
            state.metrics.session_closed(reason, 1);
            audit::session_closed(&sandbox.caller, &sandbox.id, Some(&ended.language), reason);
            true
        }
        Err(EngineError::SessionNotFound(_)) => false,
        Err(error) => {
            tracing::warn!(sandbox = %sandbox.id, %error, "closing an MCP sandbox's session failed");
            false
        }
    }
}
