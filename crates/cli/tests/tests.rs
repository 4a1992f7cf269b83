//! The end-to-end tests of CodeBeaker, one binary with a module per area: the native sandbox and
//! its warm path, languages, sessions and the Node warm path through the engine, contexts, the
//! server, the client, embedded mode against the server (parity), the E2B door with E2B's own SDKs,
//! the Judge0 door with Judge0's SDK, the Piston door with Piston's clients, the MCP door with the
//! MCP Python SDK, faults, and the attack suite. Every module uses the one [`common`]: the shared
//! runtime, engine and server, the WebSocket client, and the census of what boxes leave on the
//! host.
//!
//! Run one area with its module path, e.g. `cargo test -p codebeaker --test tests sandbox::`.

mod common;

mod attacks;
mod client;
mod contexts;
mod e2b;
mod faults;
mod judge0;
mod languages;
mod mcp;
mod parity;
mod piston;
mod sandbox;
mod server;
mod sessions;
mod warm;
mod warm_node;
