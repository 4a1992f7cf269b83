//! Runs plans without a sandbox, for tests: compile step then run step in a temporary
//! directory, with the snippet ABI's fd 3 (input) and fd 4 (result) wired to pipes.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use codebeaker_languages::{Mode, Plan, Registry, Step, Toolchain};

/// Compiles and runs can be slow on a busy 2-core machine; this only guards against hangs.
const TIMEOUT: Duration = Duration::from_secs(180);

pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::builtin().expect("builtin registry"))
}

/// The language's toolchain; fails the test (naming the package) when it is not installed.
pub fn toolchain(language: &str) -> &'static Toolchain {
    let toolchain = registry().toolchain(language).expect("known language");
    assert!(
        toolchain.available,
        "toolchain for {language} missing: {}",
        toolchain.reason.as_deref().unwrap_or("(no reason)")
    );
    toolchain
}

pub fn plan(language: &str, code: &str, mode: Mode) -> Plan {
    let lang = registry().resolve(language).expect("known language");
    lang.prepare(toolchain(language), code, mode)
        .expect("prepare")
}

#[derive(Debug)]
pub struct Outcome {
    /// `None` when there is no compile step.
    pub compile: Option<Finished>,
    /// `None` when compiling failed.
    pub run: Option<Finished>,
    /// Bytes written to fd 4 (snippet mode only).
    pub result: Option<Vec<u8>>,
    pub src_dir: PathBuf,
    pub out_dir: PathBuf,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn run(&self) -> &Finished {
        match &self.run {
            Some(run) => run,
            None => panic!(
                "compile failed: {}",
                self.compile.as_ref().map_or("", |c| c.stderr.as_str())
            ),
        }
    }

    /// The snippet result parsed as JSON; panics with the run's stderr when there is none.
    pub fn json(&self) -> serde_json::Value {
        let run = self.run();
        assert!(
            run.status.success(),
            "run failed: {}\n{}",
            run.status,
            run.stderr
        );
        let bytes = self.result.as_ref().expect("snippet mode");
        serde_json::from_slice(bytes).unwrap_or_else(|e| {
            panic!(
                "result is not JSON ({e}): {:?}",
                String::from_utf8_lossy(bytes)
            )
        })
    }

    /// The failed compile step's diagnostics, as the engine would show them.
    pub fn compile_error(&self, plan: &Plan) -> String {
        let compile = self.compile.as_ref().expect("compiled language");
        assert!(!compile.status.success(), "compile unexpectedly succeeded");
        plan.rewrite_diagnostics(
            &format!("{}{}", compile.stdout, compile.stderr),
            &self.src_dir,
            &self.out_dir,
        )
    }

    /// The run step's stderr with directories stripped.
    pub fn run_error(&self, plan: &Plan) -> String {
        plan.rewrite_diagnostics(&self.run().stderr, &self.src_dir, &self.out_dir)
    }
}

/// Writes the plan's files, compiles, runs. `input` is the snippet input (fd 3) for snippet plans.
pub fn execute(plan: &Plan, stdin: &str, input: &str) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let src_dir = dir.path().join("src");
    let out_dir = dir.path().join("out");
    let workspace = dir.path().join("workspace");
    for d in [&src_dir, &out_dir, &workspace] {
        fs::create_dir_all(d).expect("mkdir");
    }
    for file in plan.files() {
        let path = src_dir.join(&file.name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, &file.contents).expect("write source");
        if file.executable {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }
    let mut outcome = Outcome {
        compile: None,
        run: None,
        result: None,
        src_dir: src_dir.clone(),
        out_dir: out_dir.clone(),
        _dir: dir,
    };
    if let Some(step) = plan.compile_step(&src_dir, &out_dir) {
        let (finished, _) = spawn(&step, &src_dir, "", None);
        let ok = finished.status.success();
        outcome.compile = Some(finished);
        if !ok {
            return outcome;
        }
        for artifact in plan.artifacts() {
            assert!(
                out_dir.join(&artifact).exists(),
                "compile did not produce {artifact}"
            );
        }
    }
    let step = plan.run_step(&src_dir, &out_dir);
    let snippet_input = (plan.mode() == Mode::Snippet).then_some(input);
    let (finished, result) = spawn(&step, &workspace, stdin, snippet_input);
    outcome.run = Some(finished);
    outcome.result = result;
    outcome
}

/// Compiles and runs a snippet.
pub fn snippet(language: &str, code: &str, input: &str) -> (Plan, Outcome) {
    let plan = plan(language, code, Mode::Snippet);
    let outcome = execute(&plan, "", input);
    (plan, outcome)
}

/// Compiles and runs a script.
pub fn script(language: &str, code: &str, stdin: &str) -> (Plan, Outcome) {
    let plan = plan(language, code, Mode::Script);
    let outcome = execute(&plan, stdin, "");
    (plan, outcome)
}

/// Runs only the run step, with `out_dir` as the artifact directory (e.g. a cache entry).
pub fn run_from(
    plan: &Plan,
    src_dir: &Path,
    out_dir: &Path,
    input: &str,
) -> (Finished, Option<Vec<u8>>) {
    let workspace = tempfile::tempdir().expect("tempdir");
    let step = plan.run_step(src_dir, out_dir);
    let snippet_input = (plan.mode() == Mode::Snippet).then_some(input);
    spawn(&step, workspace.path(), "", snippet_input)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Plans name relocated toolchains by their box paths (`/opt/toolchains/...`); without a box, they
/// run where the host has them.
fn on_host(text: &str) -> String {
    codebeaker_languages::on_host(registry().discover(), text)
}

fn spawn(step: &Step, cwd: &Path, stdin: &str, input: Option<&str>) -> (Finished, Option<Vec<u8>>) {
    let argv: Vec<String> = step.argv.iter().map(|a| on_host(a)).collect();
    let (program, args) = argv.split_first().expect("argv");
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(step.env.iter().map(|(k, v)| (k, on_host(v))))
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut abi = None;
    if input.is_some() {
        let (input_read, input_write) = pipe();
        let (result_read, result_write) = pipe();
        let (child_in, child_out) = (input_read.as_raw_fd(), result_write.as_raw_fd());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close) run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let a = libc::fcntl(child_in, libc::F_DUPFD, 10);
                let b = libc::fcntl(child_out, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(a);
                libc::close(b);
                Ok(())
            });
        }
        abi = Some((input_read, input_write, result_read, result_write));
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", step.argv));
    let mut threads = Vec::new();
    let mut result_thread = None;
    if let Some((input_read, input_write, result_read, result_write)) = abi {
        drop(input_read);
        drop(result_write);
        let data = input.unwrap_or_default().as_bytes().to_vec();
        threads.push(std::thread::spawn(move || {
            let mut file = fs::File::from(input_write);
            let _ = file.write_all(&data);
        }));
        result_thread = Some(std::thread::spawn(move || {
            let mut file = fs::File::from(result_read);
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            bytes
        }));
    }
    let stdin_data = stdin.as_bytes().to_vec();
    let mut child_stdin = child.stdin.take().expect("stdin");
    threads.push(std::thread::spawn(move || {
        let _ = child_stdin.write_all(&stdin_data);
    }));
    let stdout = reader(child.stdout.take().expect("stdout"));
    let stderr = reader(child.stderr.take().expect("stderr"));
    let status = wait(&mut child, &step.argv);
    for t in threads {
        let _ = t.join();
    }
    let finished = Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    let result = result_thread.map(|t| t.join().expect("result reader"));
    (finished, result)
}

fn reader(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait(child: &mut Child, argv: &[String]) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("{argv:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
