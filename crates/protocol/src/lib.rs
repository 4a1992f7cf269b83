//! CodeBeaker's wire protocol: the one place where the shapes on the wire are defined.
//!
//! CodeBeaker is spoken to as JSON-RPC 2.0 over WebSocket text frames. The server, the Rust client
//! and the CLI all use this crate, so a field renamed here is renamed everywhere, and a client
//! written against the original .NET server keeps working as long as these types accept what it
//! sends. The compatibility contract is `docs/protocol.md`; the tests in `tests/` pin its exact JSON.
//!
//! The crate holds types and pure functions only: no I/O, no async runtime, no sandbox. It is
//! organised the way a message travels:
//!
//! - [`jsonrpc`]: the envelope. [`jsonrpc::parse_frame`] turns one incoming text frame (a single
//!   message, a batch array, or several messages separated by `\n`) into requests and ready-made
//!   error responses; [`jsonrpc::FrameKind::encode`] turns the responses back into text frames.
//! - [`methods`]: every method's name, params and result, and the streaming notifications.
//! - [`contexts`]: the `context.*` methods' params and results (stateful code contexts).
//! - [`commands`]: the commands `session.execute` carries (`write_file`, `shell`, ...) and their
//!   results, including the typed [`commands::RunResult`] of a program run.
//! - [`params`]: decoding a request's params into a method's type, with `-32602` errors that say
//!   which field is wrong and why.
//!
//! Names follow the protocol: camelCase on output; on input camelCase and also PascalCase (the
//! original server accepted both), plus snake_case for multi-word fields. Command fields that the
//! protocol spells in snake_case (`include_hidden`, `dry_run`, ...) stay snake_case on output and
//! also accept camelCase.
//!
//! ```
//! use codebeaker_protocol::jsonrpc::{parse_frame, Incoming, Response};
//! use codebeaker_protocol::methods::{Method, SessionExecuteParams};
//! use codebeaker_protocol::params::decode_params;
//!
//! let text = r#"{"jsonrpc":"2.0","id":1,"method":"session.execute","params":{"sessionId":"abc","command":{"type":"read_file","path":"a.txt"}}}"#;
//! let frame = parse_frame(text);
//! let mut responses = Vec::new();
//! for message in frame.messages {
//!     match message {
//!         Incoming::Request(request) => {
//!             assert_eq!(Method::from_name(&request.method), Some(Method::SessionExecute));
//!             let params: SessionExecuteParams =
//!                 decode_params(&request.method, request.params).unwrap();
//!             assert_eq!(params.session_id, "abc");
//!             if let Some(id) = request.id {
//!                 responses.push(Response::result(id, serde_json::json!({"success": true})));
//!             }
//!         }
//!         Incoming::Invalid(error_response) => responses.push(error_response),
//!     }
//! }
//! let frames = frame.kind.encode(responses);
//! assert_eq!(frames, vec![r#"{"jsonrpc":"2.0","id":1,"result":{"success":true}}"#.to_string()]);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod commands;
pub mod contexts;
pub mod jsonrpc;
pub mod methods;
pub mod params;
mod serde_util;

/// The version of the CodeBeaker protocol this crate describes, reported by `initialize`.
pub const PROTOCOL_VERSION: &str = "1.0";
