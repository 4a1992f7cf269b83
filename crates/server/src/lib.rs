//! CodeBeaker's network front: a thin transport over the [engine](codebeaker_engine).
//!
//! The server speaks the protocol of `docs/protocol.md` (types in [`codebeaker_protocol`]):
//!
//! - **JSON-RPC 2.0 over WebSocket** at `GET /ws/jsonrpc`: text frames holding one message, a
//!   batch array, or several messages separated by `\n`. Requests on one connection run
//!   concurrently (bounded per connection); requests for one session start in arrival order.
//!   `session.execute` can stream `execution.started` / `execution.output` /
//!   `execution.completed` notifications before its response.
//! - **REST** for one-shot runs and languages: `POST /api/execution`, `GET /api/execution/{id}`,
//!   `GET /api/languages`, `GET /api/languages/{name}`.
//! - **The E2B-compatible API** ([`e2b`]): E2B's control plane and envd, so that E2B's SDKs run
//!   unchanged against this server (`docs/e2b.md`).
//! - **The Judge0 CE API** ([`judge0`]) under `/judge0`: submissions are one-shot runs, so that
//!   Judge0's clients run unchanged against this server (`docs/judge0.md`).
//! - **The Piston v2 API** (`piston`) at `/api/v2/` and `/api/v2/piston/`: `runtimes`,
//!   `execute` and the interactive `connect`, for Piston's clients (`docs/piston.md`).
//! - **MCP** ([`mcp`]): the Model Context Protocol's streamable HTTP transport at `/mcp`, and the
//!   same tools over stdio for `codebeaker mcp` ([`mcp::serve_stdio`]), so that AI agents run
//!   code in sandboxes (`docs/mcp.md`).
//! - **Health and metrics**: `/health`, `/health/live`, `/health/ready`, and `/metrics`
//!   (Prometheus text, from a recorder each server owns).
//! - **Bearer-token auth** (optional): a token names a caller, and a caller sees only its own
//!   sessions and executions. **Rate limits** (optional): a token bucket per caller. **Quotas**
//!   (optional): a caller's own session bound and rate ([`CallerQuota`]).
//! - **An audit log**: structured `tracing` events under the target [`AUDIT_TARGET`]
//!   (`codebeaker::audit`) for sessions created and closed, every command, one-shot runs, and
//!   every refusal, each naming the caller.
//!
//! Nothing here runs code: every method is one call into [`codebeaker_engine::Engine`], and
//! every engine error maps to one JSON-RPC code (internal failures to `-32603` with an opaque
//! `errorId` that is also logged). Modules in the order a request meets them: [`config`],
//! `auth`, `rate_limit`, `ws` (connections), `rpc` (methods), `sessions` (the server's view of
//! its sessions, and quotas), `rest`, `health`, [`metrics`], `audit`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use codebeaker_engine::{Engine, EngineConfig};
//! use codebeaker_server::{Server, ServerConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Arc::new(Engine::new(EngineConfig::default())?);
//! engine.spawn_reaper();
//! let server = Server::bind(ServerConfig::default(), engine.clone()).await?;
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! engine.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
mod auth;
pub mod config;
mod convert;
pub mod e2b;
mod error;
mod health;
pub mod judge0;
pub mod mcp;
pub mod metrics;
mod piston;
mod rate_limit;
mod rest;
mod rpc;
mod server;
mod sessions;
mod state;
mod ws;

pub use audit::TARGET as AUDIT_TARGET;
pub use config::{
    AuthConfig, CallerQuota, RateLimitConfig, ServerConfig, TokenConfig, DEFAULT_LISTEN,
};
pub use error::ServerError;
pub use rpc::SERVER_NAME;
pub use server::{router, Server, ServerHandle, CLOSE_MARGIN};
pub use state::AppState;
