//! The languages crate against the real machine, one binary with a module per area: the compile
//! cache, the registry and discovery, script mode, the original .NET CodeBeaker's snippet
//! programs, the snippet ABI, and property tests of the wrappers. Every module uses the one
//! [`common`].
//!
//! Run one area with its module path, e.g. `cargo test -p codebeaker-languages --test tests cache::`.

mod common;

mod cache;
mod registry;
mod scripts;
mod seed;
mod snippets;
mod wrapper_props;
