//! CodeBeaker's knowledge of programming languages.
//!
//! This crate turns *(language, code, mode)* into a [`Plan`]: the files to write into a build
//! directory, an optional compile step, a run step, and a compile cache key. It never runs user
//! code itself: the engine runs plans inside sandbox boxes, and data flows one way (the engine
//! uses this crate and the sandbox crate; neither knows about the engine).
//!
//! The parts:
//!
//! - **Registry** ([`Registry`]): languages are data, in `languages.toml` shipped in the binary and
//!   extendable by a TOML override of the same schema. Each language has a name, aliases, file
//!   extensions, one or more toolchain entries (candidate executable paths, the Debian package
//!   that provides them, a version probe, compile and run argv templates, environment, extra
//!   read-only mounts) and optionally a snippet wrapper. Adding a language that needs no new
//!   behaviour is a configuration change; see `docs/languages.md`.
//! - **Discovery** ([`Toolchain`]): finds the executables (resolving symlinks to learn which
//!   directories a box must mount), runs the version probes in parallel once, and explains what
//!   to install when something is missing.
//! - **Plans** ([`Language::prepare`], [`Plan`]): [`Mode::Script`] runs a whole program with
//!   stdin/stdout; [`Mode::Snippet`] implements the snippet ABI (input JSON on fd 3 as
//!   `input_data`, `result` written as JSON to fd 4) with a wrapper per language
//!   ([`SnippetWrapper`]). Plans are directory-independent; [`Plan::compile_step`] and
//!   [`Plan::run_step`] render argv for the directories the engine chooses.
//! - **Warm workers** ([`WarmWorker`]): pre-started interpreters (Python, Node.js) that fork a
//!   fresh child per run; a toolchain names one with `warm = "NAME"`. Node's fork server is a small
//!   Node-API addon whose build is itself a [`Plan`] ([`WarmWorker::host_plan`]).
//! - **Context kernels** ([`ContextKernel`]): the long-lived interpreters (Python, and Node.js
//!   and Bash behind a Python relay) that run a context's cells in one namespace.
//! - **Compile cache** ([`CompileCache`]): content-addressed by [`Plan::cache_key`], atomic
//!   inserts, per-key locks so a program compiles once, and a byte budget per owner
//!   ([`CacheOwner`]): each caller evicts only its own least recently used entries, and the
//!   engine's own artifacts are never evicted.
//!
//! ```no_run
//! use codebeaker_languages::{Mode, Registry};
//! use std::path::Path;
//!
//! let registry = Registry::builtin()?;
//! let python = registry.resolve("py")?;
//! let toolchain = registry.toolchain("python")?;
//! let plan = python.prepare(toolchain, "result = {'output': input_data['value'] * 2}", Mode::Snippet)?;
//! let run = plan.run_step(Path::new("/build/src"), Path::new("/build/out"));
//! assert_eq!(run.argv[0], "/usr/bin/python3");
//! # Ok::<(), codebeaker_languages::LanguageError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod config;
mod error;
mod kernels;
mod plan;
mod probes;
mod registry;
mod template;
mod toolchain;
mod warm;
mod wrappers;

pub use cache::{CacheLock, CacheOwner, CompileCache};
pub use error::LanguageError;
pub use kernels::ContextKernel;
pub use plan::{Mode, Plan, PlanFile, Step, DEFAULT_PATH};
pub use registry::{Language, Registry, BUILTIN_REGISTRY};
pub use toolchain::{on_host, Toolchain};
pub use warm::WarmWorker;
pub use wrappers::SnippetWrapper;
