//! CodeBeaker's client: talk to a CodeBeaker server over WebSocket JSON-RPC, or drive an engine in
//! this process with the very same API; pool sessions; run programs on JSON inputs; run batches.
//!
//! The crate is layered the way a call travels:
//!
//! - [`Backend`]: the protocol's methods, typed (`initialize`, `language.list`, `session.*`,
//!   `execution.*`), with [`BackendExt`] adding one helper per command (`write_file`,
//!   `read_file`, `shell`, ...). Two implementations:
//!   - [`Client`]: one WebSocket multiplexing concurrent requests, per-request timeouts,
//!     keep-alive pings, automatic reconnection with capped exponential backoff, streamed output
//!     delivered to the request it belongs to. Requests in flight when the link drops fail at once
//!     with [`ClientError::ConnectionLost`]; they never hang until their timeout.
//!   - `Embedded` (feature `embedded`, off by default so that a WebSocket-only user does not
//!     compile the sandbox): an in-process `codebeaker_engine::Engine`, so a program can run
//!     sandboxed code with no server at all; the `embedded` module has an example.
//! - [`SessionPool`]: sessions kept open and leased one caller at a time, keyed by language and
//!   tenant, bounded in sessions and in leases, and free of starvation and deadlock (see the
//!   [`pool`] module for the argument).
//! - [`RuntimeService`]: `execute(code, language, input, timeout_ms)`, the original .NET CodeBeaker's runtime service:
//!   one lease and one round trip per execution, the caller's timeout enforced on the server and
//!   on the client, a typed [`RuntimeResult`].
//! - [`BatchExecutor`]: one program over many inputs, bounded concurrency, results in input
//!   order, a summary with latency percentiles.
//!
//! # Over a server
//!
//! ```no_run
//! # async fn demo() -> Result<(), codebeaker_client::ClientError> {
//! use codebeaker_client::{CodeBeakerOptions, RuntimeService};
//! use serde_json::json;
//!
//! let options = CodeBeakerOptions {
//!     websocket_url: "ws://127.0.0.1:5000/ws/jsonrpc".into(),
//!     session_pool_size: 5,
//!     ..CodeBeakerOptions::default()
//! };
//! let runtime = RuntimeService::connect(options).await?;
//! let result = runtime
//!     .execute("result = {'output': input_data['value'] * 2}", "python", json!({"value": 21}), Some(30_000))
//!     .await;
//! assert!(result.success);
//! assert_eq!(result.output, Some(json!({"output": 42})));
//! # Ok(()) }
//! ```
//!
//! In embedded mode (feature `embedded`), the binary that embeds an engine must hand over to the
//! sandbox's box setup when started as one (see
//! [`codebeaker_sandbox::init`](https://docs.rs/codebeaker-sandbox)), or point
//! `SandboxConfig::init_program` at the `codebeaker` binary.
//!
//! # Low level
//!
//! ```no_run
//! # async fn demo() -> Result<(), codebeaker_client::ClientError> {
//! use codebeaker_client::{Backend, BackendExt, Client, ClientConfig};
//! use codebeaker_protocol::methods::SessionCreateParams;
//!
//! let client = Client::connect(ClientConfig::new("ws://127.0.0.1:5000/ws/jsonrpc")).await?;
//! let session = client
//!     .session_create(SessionCreateParams { language: "bash".into(), ..Default::default() })
//!     .await?;
//! client.write_file(&session.session_id, "hello.txt", "hi\n").await?;
//! let run = client.shell(&session.session_id, "cat", &["hello.txt"]).await?;
//! assert_eq!(run.result.map(|r| r.stdout).as_deref(), Some("hi\n"));
//! client.session_close(&session.session_id).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod batch;
pub mod client;
#[cfg(feature = "embedded")]
pub mod embedded;
mod error;
pub mod options;
pub mod pool;
pub mod runtime;

pub use backend::{typed_reply, Backend, BackendExt, BoxFuture, CallOptions, CommandReply};
pub use batch::{
    BatchExecutor, BatchItem, BatchItemResult, BatchOptions, BatchReport, BatchSummary, ItemStatus,
    ProgressFn, MAX_CONCURRENCY,
};
pub use client::{Backoff, Client, ClientConfig, ConnectionStatus};
#[cfg(feature = "embedded")]
pub use embedded::Embedded;
pub use error::ClientError;
pub use options::{CodeBeakerOptions, DEFAULT_WEBSOCKET_URL};
pub use pool::{Lease, PoolConfig, PoolKey, PoolStats, SessionPool, SessionSettings};
pub use runtime::{ExecuteRequest, RuntimeResult, RuntimeService, RuntimeStatus};
