//! The third-party clients the compatibility tests drive: where `scripts/compat-clients.sh`
//! installs them, and running one of their programs against a server of the tests.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Longest a client program may run (the SDKs retry and wait; a hung one must not hang the suite).
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(240);

/// Where `scripts/compat-clients.sh` installs the clients.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/compat")
}

/// The Python of the clients' virtualenv, which must import `module` (`what` names the client in
/// the failure); fails, never skips, when it is missing.
pub fn python(module: &str, what: &str) -> PathBuf {
    let python = dir().join("venv/bin/python");
    let installed = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "{what} is not installed at {}: run scripts/compat-clients.sh first",
        python.display()
    );
    python
}

/// Runs a client program set up in `command` on the shared runtime, panicking with its output
/// unless it exits 0 within [`PROGRAM_TIMEOUT`]; returns its stdout.
pub fn run(mut command: Command) -> String {
    let shown = format!("{command:?}");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = super::runtime().block_on(async {
        let child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        tokio::time::timeout(PROGRAM_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{shown} ran longer than {PROGRAM_TIMEOUT:?}"))
            .expect("wait for the program")
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
