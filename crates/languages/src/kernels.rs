//! Context kernels: the long-lived interpreters that run a context's cells in one namespace
//! (the sandbox's init starts them and hands them cells; the protocol is in the kernels' own
//! sources, `assets/kernels/`).
//!
//! Every kernel is CodeBeaker's Python kernel (`assets/kernels/python.py`): for Python it runs
//! the cells itself; for JavaScript and Bash it relays them to one Node.js process
//! (`assets/kernels/node.js`: a `vm` context, top-level declarations kept across cells,
//! top-level `await`) or one Bash process (variables, functions and `cd` persist), which keep the
//! state. A JavaScript or Bash context therefore needs Python in the box too.

use std::path::Path;

const PYTHON_KERNEL: &str = include_str!("../assets/kernels/python.py");
const NODE_KERNEL: &str = include_str!("../assets/kernels/node.js");

/// A language that contexts can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextKernel {
    /// Python, IPython-like cells.
    Python,
    /// JavaScript on Node.js.
    Javascript,
    /// Bash.
    Bash,
}

impl ContextKernel {
    /// Canonical language names that have a kernel.
    pub const LANGUAGES: &'static [&'static str] = &["python", "javascript", "bash"];

    /// The kernel of the language with this canonical name.
    pub fn for_language(name: &str) -> Option<ContextKernel> {
        match name {
            "python" => Some(ContextKernel::Python),
            "javascript" => Some(ContextKernel::Javascript),
            "bash" => Some(ContextKernel::Bash),
            _ => None,
        }
    }

    /// The canonical name of the kernel's language.
    pub fn language(self) -> &'static str {
        match self {
            ContextKernel::Python => "python",
            ContextKernel::Javascript => "javascript",
            ContextKernel::Bash => "bash",
        }
    }

    /// The command that starts the kernel: `python` is the box path of the Python interpreter,
    /// `interpreter` that of the language's own (Node.js, Bash; unused for Python).
    pub fn argv(self, python: &Path, interpreter: &Path) -> Vec<String> {
        let python = python.to_string_lossy().into_owned();
        // `-s`: no user site-packages, which live under a HOME that cells write.
        let mut argv = vec![
            python,
            "-B".into(),
            "-s".into(),
            "-c".into(),
            PYTHON_KERNEL.into(),
        ];
        let interpreter = interpreter.to_string_lossy().into_owned();
        match self {
            ContextKernel::Python => {}
            ContextKernel::Javascript => {
                argv.extend(["--relay".into(), "javascript".into(), interpreter]);
                argv.extend(["-e".into(), NODE_KERNEL.into()]);
            }
            ContextKernel::Bash => {
                argv.extend(["--relay".into(), "bash".into(), interpreter]);
                argv.extend(["--norc".into(), "--noprofile".into()]);
            }
        }
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_starts_from_the_python_kernel() {
        for name in ContextKernel::LANGUAGES {
            let kernel = ContextKernel::for_language(name).expect("a kernel");
            assert_eq!(kernel.language(), *name);
            let argv = kernel.argv(Path::new("/usr/bin/python3"), Path::new("/usr/bin/node"));
            assert_eq!(argv[..4], ["/usr/bin/python3", "-B", "-s", "-c"]);
        }
        assert_eq!(ContextKernel::for_language("go"), None);
        let bash = ContextKernel::Bash.argv(Path::new("/p"), Path::new("/bin/bash"));
        assert_eq!(bash[5..8], ["--relay", "bash", "/bin/bash"]);
    }
}
