//! Contexts: long-lived kernels in a session's box whose cells share one namespace, through
//! the sandbox, the engine, JSON-RPC and E2B's code interpreter.

mod bench;
mod client;
mod kernels;
mod python;
mod relay;
mod repl;
