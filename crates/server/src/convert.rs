//! The server's side of converting engine values to the protocol's shapes; everything else of it
//! is shared with the embedded client in [`codebeaker_engine::wire`].

use codebeaker_engine::{Engine, ExecutionRecord, ExecutionState};
use codebeaker_protocol::methods::Limits;

use crate::ServerConfig;

/// The limits `initialize` reports: the connection's own and the engine's.
pub(crate) fn limits(engine: &Engine, server: &ServerConfig) -> Limits {
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    codebeaker_engine::wire::limits(
        engine,
        Some(as_u64(server.max_message_bytes)),
        Some(as_u64(server.max_in_flight)),
    )
}

/// Whether a one-shot run has ended (for `?wait=true`).
pub(crate) fn execution_finished(record: &ExecutionRecord) -> bool {
    matches!(
        record.status,
        ExecutionState::Completed | ExecutionState::Failed
    )
}
