//! The engine: the one API everything calls. The server is a transport over it, the CLI drives
//! it in-process, and the client can drive it directly (embedded mode).
//!
//! It owns the [`Sandbox`](codebeaker_sandbox::Sandbox) that makes boxes, the language
//! [`Registry`](codebeaker_languages::Registry) and the
//! [`CompileCache`](codebeaker_languages::CompileCache), and runs code through one executor
//! ([`Engine::execute_in`]) whether the code runs once in a fresh box ([`Engine::run_once`]) or in
//! a session's box.
//!
//! ```no_run
//! # async fn demo() -> Result<(), codebeaker_engine::EngineError> {
//! use codebeaker_engine::{CodeRequest, Engine, EngineConfig};
//! let engine = Engine::new(EngineConfig::default())?;
//! let run = engine
//!     .run_once(CodeRequest {
//!         language: "python".into(),
//!         code: "result = {'output': input_data['value'] * 2}".into(),
//!         input: Some(serde_json::json!({"value": 21})),
//!         stdin: Vec::new(),
//!         limits: engine.config().run_limits,
//!         ..CodeRequest::default()
//!     })
//!     .await?;
//! assert_eq!(run.output, Some(serde_json::json!({"output": 42})));
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod commands;
mod config;
mod contexts;
mod engine;
mod error;
mod executions;
mod executor;
mod fair;
mod patch;
pub mod paths;
mod pool;
mod session;
pub mod stream;
pub mod wire;

pub use commands::{run_result, CommandOutcome};
pub use config::{EngineConfig, FileLimits, RecordLimits, SessionLimits, TextLimits};
pub use contexts::{
    CellOutcome, CellRequest, ContextOptions, ContextSnapshot, MAX_CONTEXTS_PER_SESSION,
};
pub use engine::{languages, Engine, EngineStats, BOX_CACHE};
pub use error::EngineError;
pub use executions::{ExecutionRecord, ExecutionState, OneShotHooks, OneShotRequest};
pub use executor::{CodeRequest, CompileInfo, Execution};
pub use session::{
    Caller, EndReason, SessionEndSubscription, SessionEnded, SessionOptions, SessionSnapshot,
};
