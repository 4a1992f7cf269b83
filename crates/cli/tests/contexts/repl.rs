//! `codebeaker repl`: cells from stdin keep their state, and its output is the cells' own.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{shared, BIN};

#[test]
fn the_repl_keeps_state_between_cells() {
    let _shared = shared();
    let mut child = Command::new(BIN)
        .args(["repl", "--lang", "python"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start codebeaker repl");
    let cells = "x = 20\ndef f(n):\n    return n * 2\n\nf(x) + 2\nprint('hi')\n1/0\nx\n";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(cells.as_bytes())
        .expect("write the cells");
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, "42\nhi\n20\n", "stderr: {stderr}");
    assert!(stderr.contains("ZeroDivisionError"), "{stderr}");
}
