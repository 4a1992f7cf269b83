//! Warm workers: pre-started interpreters that run a toolchain's programs without paying the
//! interpreter's start-up for each run. The sandbox's init starts one per box on first use and
//! talks to it over a socket on fd 3 (the protocol is in the worker's own source). A worker runs a
//! program exactly as the toolchain's run step would, so a toolchain names one with `warm =
//! "NAME"` and nothing else changes.
//!
//! A worker keeps nothing a run can read or change: it never holds a run's request or program in
//! its own memory (every later run is a copy of that memory), it empties its own namespace in the
//! child before the program starts, and it runs under a uid of its own that the box's programs do
//! not share, so no run can signal it, change its rlimits or priority, or read it through
//! `/proc`; the child takes the run's uid before anything of the run happens. The box's init
//! checks a worker before each run and replaces one that changed anyway.
//!
//! Some workers need a native part built before they can start (Node.js has no `fork()`, so its
//! worker loads a small addon that is the fork server): [`WarmWorker::host_plan`] describes that
//! build as an ordinary C compile, which the engine runs in a box and keeps in the compile cache
//! like any program.

use std::path::Path;

use crate::plan::Plan;
use crate::toolchain::Toolchain;
use crate::LanguageError;

/// A built-in warm worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarmWorker {
    /// CPython: forks a pre-started interpreter for each run (`assets/warm/python.py`).
    Python,
    /// Node.js: forks a pre-started Node for each run (`assets/warm/node.js`), through a
    /// Node-API addon built from `assets/warm/node.c`.
    Node,
}

const PYTHON_SOURCE: &str = include_str!("../assets/warm/python.py");
/// The Python snippet runner, which the Python worker compiles once at start: every snippet runs
/// it, and it is CodeBeaker's own (the worker compiles no run's source).
const PYTHON_SNIPPET_RUNNER: &str = include_str!("../assets/python/main.py");
const NODE_SOURCE: &str = include_str!("../assets/warm/node.js");
const NODE_HOST_SOURCE: &str = include_str!("../assets/warm/node.c");

/// The file the Node worker's addon is built into.
const NODE_HOST_ARTIFACT: &str = "warm.node";

impl WarmWorker {
    /// Names usable in a toolchain's `warm` key.
    pub const NAMES: &'static [&'static str] = &["python", "node"];

    /// The worker called `name` in a toolchain's `warm` key.
    pub fn from_name(name: &str) -> Option<WarmWorker> {
        match name {
            "python" => Some(WarmWorker::Python),
            "node" => Some(WarmWorker::Node),
            _ => None,
        }
    }

    /// The worker's name.
    pub fn name(self) -> &'static str {
        match self {
            WarmWorker::Python => "python",
            WarmWorker::Node => "node",
        }
    }

    /// Whether the worker needs its native part built first ([`WarmWorker::host_plan`]).
    pub fn needs_host(self) -> bool {
        matches!(self, WarmWorker::Node)
    }

    /// The command that starts the worker: the toolchain's interpreter and the worker's
    /// arguments. `host_dir` is where the native part was built (the compile cache entry of
    /// [`WarmWorker::host_plan`]); `None` for a worker that needs one means it cannot start.
    pub fn argv(self, interpreter: String, host_dir: Option<&Path>) -> Option<Vec<String>> {
        let mut argv = vec![interpreter];
        match self {
            // `-s`: no user site-packages, which live under a HOME that runs write.
            WarmWorker::Python => argv
                .extend(["-B", "-s", "-c", PYTHON_SOURCE, PYTHON_SNIPPET_RUNNER].map(String::from)),
            WarmWorker::Node => {
                let addon = host_dir?.join(NODE_HOST_ARTIFACT);
                // V8 without background threads: the worker forks, and a fork keeps only the
                // forking thread.
                argv.extend(["--single-threaded", "-e", NODE_SOURCE].map(String::from));
                argv.push(addon.to_string_lossy().into_owned());
            }
        }
        Some(argv)
    }

    /// The build of the worker's native part with the C toolchain `c` (a shared library from
    /// one C file), or `None` when the worker needs nothing built.
    pub fn host_plan(self, c: &Toolchain) -> Option<Result<Plan, LanguageError>> {
        match self {
            WarmWorker::Python => None,
            WarmWorker::Node => Some(Plan::shared_library(
                c,
                "gcc",
                "node.c",
                NODE_HOST_SOURCE,
                NODE_HOST_ARTIFACT,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in WarmWorker::NAMES {
            let worker = WarmWorker::from_name(name).expect("known name");
            assert_eq!(worker.name(), *name);
        }
        assert_eq!(WarmWorker::from_name("perl"), None);
    }

    #[test]
    fn node_needs_its_addon_and_python_does_not() {
        let node = WarmWorker::Node;
        assert!(node.needs_host());
        assert_eq!(node.argv("/usr/bin/node".into(), None), None);
        let argv = node
            .argv("/usr/bin/node".into(), Some(Path::new("/cache/ab")))
            .expect("argv");
        assert_eq!(argv[0], "/usr/bin/node");
        assert_eq!(argv[1], "--single-threaded");
        assert_eq!(argv.last().map(String::as_str), Some("/cache/ab/warm.node"));
        let python = WarmWorker::Python;
        assert!(!python.needs_host());
        assert_eq!(
            python
                .argv("/usr/bin/python3".into(), None)
                .map(|a| a[1..4].to_vec()),
            Some(vec!["-B".to_string(), "-s".into(), "-c".into()])
        );
    }
}
