//! Warm workers: pre-started interpreters that run a toolchain's programs without paying the
//! interpreter's start-up for each run. The sandbox's init starts one per box on first use and
//! talks to it over a socket on fd 3 (the protocol is in the worker's own source). A worker runs a
//! program exactly as the toolchain's run step would, so a toolchain names one with `warm =
//! "NAME"` and nothing else changes.

/// A built-in warm worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarmWorker {
    /// CPython: forks a pre-started interpreter for each run (`assets/warm/python.py`).
    Python,
}

const PYTHON_SOURCE: &str = include_str!("../assets/warm/python.py");

impl WarmWorker {
    /// Names usable in a toolchain's `warm` key.
    pub const NAMES: &'static [&'static str] = &["python"];

    /// The worker called `name` in a toolchain's `warm` key.
    pub fn from_name(name: &str) -> Option<WarmWorker> {
        match name {
            "python" => Some(WarmWorker::Python),
            _ => None,
        }
    }

    /// The worker's name.
    pub fn name(self) -> &'static str {
        match self {
            WarmWorker::Python => "python",
        }
    }

    /// Arguments after the interpreter that start the worker.
    pub fn args(self) -> [&'static str; 3] {
        match self {
            WarmWorker::Python => ["-B", "-c", PYTHON_SOURCE],
        }
    }
}
