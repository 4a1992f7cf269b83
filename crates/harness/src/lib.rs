//! CodeBeaker's harness: the load tester and the benchmarks that compare CodeBeaker with
//! baselines (a bare process, bubblewrap, and Docker when its daemon runs).
//!
//! - [`load`]: many WebSocket clients against a server at once, attack programs mixed in, every
//!   frame checked against the protocol, and a census at the end of what the boxes left on the
//!   host (`codebeaker load`).
//! - [`bench`](mod@bench): three suites (`codebeaker bench`): box creation and runs against a
//!   bare process and bubblewrap ([`bench::sandbox`]), the original .NET CodeBeaker's snippet
//!   per language against the bare toolchain ([`bench::languages`]), and the per-request paths
//!   of a platform through the real client and in-process, against Docker ([`bench::warm`]).
//!
//! This crate is not part of the product API: it exists so that the `codebeaker` command can
//! offer `load` and `bench` as thin entry points without carrying the harness itself. Its
//! options, reports and errors change whenever the measurements do.

pub mod bench;
mod error;
pub mod load;

pub use error::{Context, HarnessError};
