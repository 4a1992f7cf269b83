//! The workload mix: the programs each language runs under load, what their runs must look like,
//! and the seeded generator that picks among them.
//!
//! Normal programs have a known answer (a snippet's output, an upper-cased stdin, an exit code);
//! attack programs (fork bomb, memory bomb, output flood, infinite loop, daemons, `kill -9 -1`)
//! must end with the typed status their limit implies.

use serde_json::{json, Value};

use crate::HarnessError;

/// Languages the load knows programs for.
pub(super) const LANGUAGES: &[&str] = &["python", "javascript", "bash", "go"];
/// Time limit of normal programs: generous, so that an overloaded host does not fail them.
const NORMAL_TIMEOUT_MS: u64 = 30_000;
/// Time limit of attacks that only stop at their limit (loops, bombs).
const ATTACK_TIMEOUT_MS: u64 = 2_000;
/// Memory limit of memory bombs, in MB.
const BOMB_MEMORY_MB: u64 = 64;

/// What a program's run must look like.
#[derive(Clone, Copy)]
pub(super) enum Check {
    /// A snippet: its output must be what the language's `snippet_input` says.
    Snippet,
    /// Reads `hello <n>` on stdin and prints it upper-cased with a newline.
    Upper,
    /// Exits with code 3: `runtime_error`.
    Exit3,
    /// An attack: it must end with one of these statuses.
    Ends(&'static [&'static str]),
}

pub(super) struct Program {
    pub(super) name: &'static str,
    pub(super) code: &'static str,
    pub(super) check: Check,
    pub(super) timeout_ms: u64,
    pub(super) memory_mb: Option<u64>,
}

const fn normal(name: &'static str, code: &'static str, check: Check) -> Program {
    Program {
        name,
        code,
        check,
        timeout_ms: NORMAL_TIMEOUT_MS,
        memory_mb: None,
    }
}

/// An attack that runs until its limit stops it.
const fn bounded(name: &'static str, code: &'static str, ends: &'static [&'static str]) -> Program {
    Program {
        name,
        code,
        check: Check::Ends(ends),
        timeout_ms: ATTACK_TIMEOUT_MS,
        memory_mb: None,
    }
}

/// An attack that ends by itself (its limit is the normal one).
const fn quick(name: &'static str, code: &'static str, ends: &'static [&'static str]) -> Program {
    Program {
        name,
        code,
        check: Check::Ends(ends),
        timeout_ms: NORMAL_TIMEOUT_MS,
        memory_mb: None,
    }
}

const fn bomb(name: &'static str, code: &'static str, ends: &'static [&'static str]) -> Program {
    Program {
        name,
        code,
        check: Check::Ends(ends),
        timeout_ms: 10_000,
        memory_mb: Some(BOMB_MEMORY_MB),
    }
}

const TIMEOUT: &[&str] = &["timeout"];
/// A memory bomb hits its memory limit, unless an overloaded host runs it out of time first.
const MEMORY: &[&str] = &["memory_limit", "timeout"];
const OUTPUT: &[&str] = &["output_limit"];
const OK: &[&str] = &["ok"];
/// `kill -9 -1` kills every process of the sandbox user but the caller; where the program runs in
/// a warm worker, the worker is among them and the run may end `killed`.
const KILL_ALL: &[&str] = &["ok", "killed"];

const PYTHON_NORMAL: &[Program] = &[
    normal(
        "snippet",
        "result = {'sum': sum(input_data['xs']), 'n': len(input_data['xs'])}",
        Check::Snippet,
    ),
    normal(
        "stdin",
        "import sys\nprint(sys.stdin.read().upper())",
        Check::Upper,
    ),
    normal("exit3", "import sys\nsys.exit(3)", Check::Exit3),
];

const PYTHON_ATTACKS: &[Program] = &[
    bounded(
        "fork_bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        TIMEOUT,
    ),
    bomb(
        "memory_bomb",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n",
        MEMORY,
    ),
    quick(
        "output_flood",
        "import sys\nwhile True:\n    sys.stdout.write('x' * 4096 + '\\n')\n",
        OUTPUT,
    ),
    bounded("infinite_loop", "while True:\n    pass\n", TIMEOUT),
    quick(
        "daemon",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(600)\n    os._exit(0)\nos.wait()\nprint('parent done')\n",
        OK,
    ),
    quick(
        "kill_all",
        "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError:\n    pass\nprint('survived')\n",
        KILL_ALL,
    ),
];

const JAVASCRIPT_NORMAL: &[Program] = &[
    normal(
        "snippet",
        "const result = { sum: input_data.xs.reduce((a, b) => a + b, 0), n: input_data.xs.length };",
        Check::Snippet,
    ),
    normal(
        "stdin",
        "console.log(require('fs').readFileSync(0, 'utf8').toUpperCase());",
        Check::Upper,
    ),
    normal("exit3", "process.exit(3);", Check::Exit3),
];

const JAVASCRIPT_ATTACKS: &[Program] = &[
    bounded("infinite_loop", "for (;;) {}\n", TIMEOUT),
    bomb(
        "memory_bomb",
        "const chunks = [];\nfor (;;) chunks.push(Buffer.alloc(8 << 20, 1));\n",
        MEMORY,
    ),
    quick(
        "output_flood",
        "const fs = require('fs');\nconst line = 'x'.repeat(4096) + '\\n';\nfor (;;) fs.writeSync(1, line);\n",
        OUTPUT,
    ),
    quick(
        "kill_all",
        "try { process.kill(-1, 'SIGKILL'); } catch (e) {}\nconsole.log('survived');\n",
        KILL_ALL,
    ),
];

const BASH_NORMAL: &[Program] = &[
    normal(
        "snippet",
        "n=${input_data//[^0-9]/}\nresult=\"{\\\"double\\\": $((n * 2))}\"",
        Check::Snippet,
    ),
    normal("stdin", "read -r line\necho \"${line^^}\"", Check::Upper),
    normal("exit3", "exit 3", Check::Exit3),
];

const BASH_ATTACKS: &[Program] = &[
    bounded(
        "fork_bomb",
        "bomb() { bomb | bomb & }\nbomb\nwhile :; do :; done\n",
        TIMEOUT,
    ),
    bomb("memory_bomb", "x=x\nwhile :; do x=$x$x; done\n", MEMORY),
    quick("output_flood", "yes flood\n", OUTPUT),
    bounded("infinite_loop", "while :; do :; done\n", TIMEOUT),
    quick(
        "daemon",
        "nohup sleep 600 >/dev/null 2>&1 &\n(setsid sleep 600 >/dev/null 2>&1 &)\necho started\n",
        OK,
    ),
    quick("kill_all", "kill -9 -1\necho survived\n", KILL_ALL),
];

const GO_NORMAL: &[Program] = &[normal(
    "snippet",
    "value := input_data[\"value\"].(float64)\nresult := map[string]interface{}{\"output\": value * 2}",
    Check::Snippet,
)];

/// The programs of one language.
pub(super) struct Language {
    pub(super) name: &'static str,
    pub(super) normal: &'static [Program],
    pub(super) attacks: &'static [Program],
}

/// The languages `names` asks for (`--languages`), each once, in the order first named.
pub(super) fn for_languages(names: &[String]) -> Result<Vec<Language>, HarnessError> {
    let mut languages = Vec::new();
    for name in names {
        let name = name.trim().to_ascii_lowercase();
        match language(&name) {
            Some(l) if !languages.iter().any(|k: &Language| k.name == l.name) => languages.push(l),
            Some(_) => {}
            None => {
                return Err(HarnessError::Usage(format!(
                    "--languages: the load has no programs for {name:?}; choose from {}",
                    LANGUAGES.join(", ")
                )))
            }
        }
    }
    if languages.is_empty() {
        return Err(HarnessError::Usage(
            "--languages: name at least one language".into(),
        ));
    }
    Ok(languages)
}

/// The programs of the language `name`, if the load has any.
pub(super) fn language(name: &str) -> Option<Language> {
    let (name, normal, attacks) = match name {
        "python" => ("python", PYTHON_NORMAL, PYTHON_ATTACKS),
        "javascript" => ("javascript", JAVASCRIPT_NORMAL, JAVASCRIPT_ATTACKS),
        "bash" => ("bash", BASH_NORMAL, BASH_ATTACKS),
        "go" => ("go", GO_NORMAL, &[] as &[Program]),
        _ => return None,
    };
    Some(Language {
        name,
        normal,
        attacks,
    })
}

impl Language {
    /// A snippet input and the output the language's snippet must produce for it.
    pub(super) fn snippet_input(&self, rng: &mut Rng) -> (Value, Value) {
        match self.name {
            "bash" => {
                let n = 1 + rng.below(100_000);
                (json!({ "n": n }), json!({ "double": n * 2 }))
            }
            "go" => {
                let v = rng.below(100_000);
                (json!({ "value": v }), json!({ "output": v * 2 }))
            }
            _ => {
                let xs: Vec<u64> = (0..1 + rng.below(8)).map(|_| rng.below(1000)).collect();
                let sum: u64 = xs.iter().sum();
                (json!({ "xs": xs }), json!({ "sum": sum, "n": xs.len() }))
            }
        }
    }
}

/// A small deterministic generator (xorshift64*): the same seed makes the same program mix.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn languages_are_named_once_and_known() {
        let chosen = for_languages(&names(&["Python", " bash", "python"])).unwrap();
        let chosen: Vec<&str> = chosen.iter().map(|l| l.name).collect();
        assert_eq!(chosen, ["python", "bash"]);
        let Err(e) = for_languages(&names(&["cobol"])) else {
            panic!("cobol has no programs")
        };
        let e = e.to_string();
        assert!(e.contains("no programs for \"cobol\""), "{e}");
        assert!(for_languages(&[]).is_err());
    }
}
