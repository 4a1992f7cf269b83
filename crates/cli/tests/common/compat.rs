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

/// A client program that talks with the test while it runs: the test reads the lines it prints
/// and answers on its stdin (for the checks only the test can make between its steps).
pub struct Conversation {
    shown: String,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
}

impl Conversation {
    /// Starts the program set up in `command` (on the shared runtime).
    pub fn start(command: Command) -> Conversation {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let shown = format!("{command:?}");
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let _runtime = super::runtime().enter();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Conversation {
            shown,
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
            stderr,
        }
    }

    /// The next line the program prints; fails the test when it ends or takes too long.
    pub async fn line(&mut self) -> String {
        match tokio::time::timeout(PROGRAM_TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let status = self.child.wait().await;
                let stderr = (&mut self.stderr).await.unwrap_or_default();
                panic!(
                    "{} ended ({status:?}) before saying more:\n{stderr}",
                    self.shown
                )
            }
            Err(_) => panic!("{} said nothing for {PROGRAM_TIMEOUT:?}", self.shown),
        }
    }

    /// Writes `line` to the program's stdin.
    pub async fn say(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the program");
        stdin.flush().await.expect("flush");
    }

    /// Waits for the program to exit 0 within [`PROGRAM_TIMEOUT`]; returns the rest of its
    /// stdout.
    pub async fn finish(mut self) -> String {
        self.stdin.take();
        let mut rest = String::new();
        let read = async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            self.child.wait().await
        };
        let status = tokio::time::timeout(PROGRAM_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| panic!("{} ran longer than {PROGRAM_TIMEOUT:?}", self.shown))
            .expect("wait for the program");
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        assert!(
            status.success(),
            "{} failed ({status}):\n--- stdout\n{rest}\n--- stderr\n{stderr}",
            self.shown
        );
        rest
    }
}
