//! Every command of the protocol, run in a session's box. The one command executor: the server
//! and the embedded client both come through [`Engine::execute_command`].
//!
//! Command-level failures (a program that exits non-zero, a file that does not exist, a path that
//! would leave the workspace) come back as a [`CommandOutcome`] with `success: false` and an
//! error that says what happened; only failures of CodeBeaker itself are errors.

use std::time::{Duration, Instant};

use base64::Engine as _;
use codebeaker_protocol::commands::{
    ApplyPatchCommand, ApplyPatchResult, Command, CommandResult, CopyFileResult, CreateDirResult,
    DeleteFileResult, DiffCommand, DiffResult, DiffSide, Encoding, ExecuteCommand, FileEntry,
    FileKind, HunkFailure, ListFilesCommand, ListFilesResult, ReadFileResult, RunResult,
    ShellCommand, WriteFileResult, WriteMode,
};
use codebeaker_sandbox::{
    EntryKind, FileRoot, OutputChunk, RunOutcome, RunSpec, SandboxBox, SandboxError, StdinEvent,
    Verdict,
};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::oneshot;

use crate::config::{TextLimits, TimeUnit};
use crate::executor::RunHooks;
use crate::paths::{self, WorkspacePath};
use crate::session::{Caller, Cancellable};
use crate::{CodeRequest, Engine, EngineError, Execution};

/// The result of one command.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    pub success: bool,
    /// The command's result, typed; `None` when the command was refused before it produced one
    /// (an unknown language, a path outside the workspace).
    pub result: Option<CommandResult>,
    pub error: Option<String>,
    pub duration: Duration,
}

impl CommandOutcome {
    /// The run's result, for `execute`, `shell` and `install_packages` once they ran.
    pub fn run(&self) -> Option<&RunResult> {
        match &self.result {
            Some(CommandResult::Run(run)) => Some(run),
            _ => None,
        }
    }
}

/// A command-level failure: reported to the caller, not an engine error.
struct Refused(String);

impl From<paths::PathError> for Refused {
    fn from(e: paths::PathError) -> Self {
        Refused(e.to_string())
    }
}

type Step<T> = Result<T, Refused>;

/// Turns a box error into a command-level refusal when it is about the request (a missing
/// file, a refused symlink), and into an engine error when the box itself failed.
fn box_call<T>(r: Result<T, SandboxError>) -> Result<Step<T>, EngineError> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(SandboxError::Request(msg)) => Ok(Err(Refused(msg))),
        Err(e) => Err(e.into()),
    }
}

/// What a command ends with: whether it succeeded, its result, and the error to report.
type Answer = (bool, Option<CommandResult>, Option<String>);

/// A command that was refused: no result, and why.
fn refused(msg: String) -> Result<Answer, EngineError> {
    Ok((false, None, Some(msg)))
}

/// The answer of a command that either produced its result or was refused.
fn answer(step: Step<CommandResult>) -> Answer {
    match step {
        Ok(result) => (true, Some(result), None),
        Err(Refused(msg)) => (false, None, Some(msg)),
    }
}

fn rfc3339(secs: i64) -> Option<String> {
    let t = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// Output bytes as protocol text: UTF-8 as is, anything else as base64 with its encoding named.
/// Fires `stop` when either cancel fires, and never when both senders are gone; never ends, so
/// that it lives exactly as long as the command it is raced against.
pub(crate) async fn forward_cancel(
    from_session: oneshot::Receiver<()>,
    from_caller: oneshot::Receiver<()>,
    stop: oneshot::Sender<()>,
) -> std::convert::Infallible {
    let fired = tokio::select! {
        Ok(()) = from_session => true,
        Ok(()) = from_caller => true,
        else => false,
    };
    if fired {
        // The run may have ended already; then there is nothing left to stop.
        let _ = stop.send(());
    }
    std::future::pending().await
}

fn text_field(bytes: &[u8]) -> (String, Option<Encoding>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Some(Encoding::Base64),
        ),
    }
}

/// The protocol's run result for a sandbox outcome.
pub fn run_result(o: &RunOutcome, output: Option<serde_json::Value>) -> RunResult {
    let (stdout, stdout_encoding) = text_field(&o.stdout);
    let (stderr, stderr_encoding) = text_field(&o.stderr);
    RunResult {
        stdout,
        stderr,
        stdout_encoding,
        stderr_encoding,
        exit_code: o.exit_code,
        signal: o.signal,
        status: crate::wire::run_status(o.status),
        timed_out: o.timed_out(),
        oom_killed: o.oom_killed(),
        truncated: o.truncated,
        duration_ms: o.wall_time.as_millis() as u64,
        cpu_time_ms: o.cpu_time.as_millis() as u64,
        peak_memory_bytes: o.peak_memory_bytes,
        output,
        message: o.message.clone(),
        compile_ms: None,
        compile_cache_hit: None,
    }
}

impl Engine {
    /// Runs one command in the caller's session `session_id`, in arrival order with the
    /// session's other commands. `output` receives stdout/stderr chunks while a program runs.
    pub async fn execute_command(
        &self,
        caller: &Caller,
        session_id: &str,
        command: Command,
        output: Option<UnboundedSender<OutputChunk>>,
    ) -> Result<CommandOutcome, EngineError> {
        // A receiver whose sender is gone never fires.
        let (_, never) = oneshot::channel();
        self.execute_command_cancellable(caller, session_id, command, output, never)
            .await
    }

    /// Like [`execute_command`](Self::execute_command), and a value sent on `cancel` stops this
    /// command's program, as [`cancel_command`](Self::cancel_command) does while it runs. A
    /// cancel sent while the command still waits for the session's box stops its program as
    /// soon as it starts; dropping the sender leaves the command alone.
    pub async fn execute_command_cancellable(
        &self,
        caller: &Caller,
        session_id: &str,
        command: Command,
        output: Option<UnboundedSender<OutputChunk>>,
        cancel: oneshot::Receiver<()>,
    ) -> Result<CommandOutcome, EngineError> {
        self.execute_command_hooked(caller, session_id, command, output, cancel, None)
            .await
    }

    /// Like [`execute_command_cancellable`](Self::execute_command_cancellable), with the
    /// program's stdin kept open after the command's own `stdin`: each [`StdinEvent`] sent on
    /// `stdin`'s sender while the program runs reaches it in order, and
    /// [`StdinEvent::Close`] (or dropping every sender) closes it. Only the caller that holds
    /// the sender can feed the program, and only this command's program: a command that runs
    /// none (a file operation) drops the receiver, so its events fail to send.
    pub async fn execute_command_with_stdin(
        &self,
        caller: &Caller,
        session_id: &str,
        command: Command,
        output: Option<UnboundedSender<OutputChunk>>,
        cancel: oneshot::Receiver<()>,
        stdin: mpsc::Receiver<StdinEvent>,
    ) -> Result<CommandOutcome, EngineError> {
        self.execute_command_hooked(caller, session_id, command, output, cancel, Some(stdin))
            .await
    }

    async fn execute_command_hooked(
        &self,
        caller: &Caller,
        session_id: &str,
        command: Command,
        output: Option<UnboundedSender<OutputChunk>>,
        cancel: oneshot::Receiver<()>,
        stdin: Option<mpsc::Receiver<StdinEvent>>,
    ) -> Result<CommandOutcome, EngineError> {
        let session = self.session(caller, session_id)?;
        let started = Instant::now();
        let mut guard = session.bx.lock().await;
        let Some(bx) = guard.as_ref() else {
            return Err(EngineError::SessionNotFound(session_id.to_string()));
        };
        let _busy = self.mark_busy(&session);
        // Only a command that runs a program can be stopped; for the others the session's
        // cancel finds nothing to stop.
        let runs_program = matches!(command, Command::Execute(_) | Command::Shell(_));
        let (_cancellable, from_session) = match runs_program {
            true => {
                let (armed, from_session) = Cancellable::arm(&session);
                (Some(armed), from_session)
            }
            false => (None, oneshot::channel().1),
        };
        let (stop, stopped) = oneshot::channel();
        let hooks = RunHooks {
            output,
            cancel: stopped,
            stdin: stdin.filter(|_| runs_program),
            started: None,
        };
        let dispatched = tokio::select! {
            answer = self.dispatch(bx, &session.language, command, hooks) => answer,
            never = forward_cancel(from_session, cancel, stop) => match never {},
        };
        let (success, result, error) = match dispatched {
            Err(e) if crate::session::box_died(&e) => {
                let dead = guard.take();
                drop(guard);
                return Err(self.close_dead_session(&session, dead, e).await);
            }
            other => other?,
        };
        Ok(CommandOutcome {
            success,
            result,
            error,
            duration: started.elapsed(),
        })
    }

    /// Stops the command that runs now in the caller's session `session_id`: true when a
    /// running program was told to stop (its command then ends with a `Killed` run), false when
    /// none runs (the session is idle, or its command is a file operation). Another caller's
    /// session is `SessionNotFound`, as everywhere else. Commands that wait for the session's box
    /// behind the running one are left alone.
    pub fn cancel_command(&self, caller: &Caller, session_id: &str) -> Result<bool, EngineError> {
        let session = self.session(caller, session_id)?;
        let cancelled = session.cancel();
        tracing::debug!(session = %session_id, cancelled, "cancel asked for");
        Ok(cancelled)
    }

    /// Runs `command` in `bx`: each command has its own function below.
    async fn dispatch(
        &self,
        bx: &SandboxBox,
        session_language: &str,
        command: Command,
        hooks: RunHooks,
    ) -> Result<Answer, EngineError> {
        let limits = &self.config().files;
        let text = self.config().text;
        let step = match command {
            Command::Execute(c) => return self.execute(bx, session_language, c, hooks).await,
            Command::Shell(c) => return self.shell(bx, c, hooks).await,
            Command::ApplyPatch(c) => return apply_patch(bx, c, limits.max_read_bytes, text).await,
            Command::DeleteFile(c) => return delete_file(bx, &c.path, c.recursive).await,
            Command::WriteFile(c) => {
                let max = limits.max_write_bytes;
                self.write_file(bx, &c.path, &c.content, c.mode, c.encoding, max)
                    .await?
            }
            Command::ReadFile(c) => {
                read_file(bx, &c.path, c.encoding, limits.max_read_bytes).await?
            }
            Command::CreateDir(c) => create_dir(bx, &c.path, c.recursive).await?,
            Command::CopyFile(c) => copy_file(bx, &c.source, &c.destination, c.overwrite).await?,
            Command::ListFiles(c) => list_files(bx, &c, limits.max_list_entries).await?,
            Command::Diff(c) => diff(bx, &c, limits.max_read_bytes, text).await?,
            Command::InstallPackages(_) => Err(Refused(
                "install_packages needs network access, and this session's box has none \
                 (network policy: none, loopback only); packages the operator installs on the \
                 host are in every box (see docs/languages.md, \"Packages\"), or put the \
                 packages' files into the workspace"
                    .into(),
            )),
        };
        Ok(answer(step))
    }

    /// `execute`: the code in the language asked for (or the session's), with the run limits
    /// bounded by the configured maximums.
    async fn execute(
        &self,
        bx: &SandboxBox,
        session_language: &str,
        c: ExecuteCommand,
        hooks: RunHooks,
    ) -> Result<Answer, EngineError> {
        let mut run_limits = self.config().run_limits;
        if let Some(ms) = c.effective_timeout_ms() {
            let asked = Duration::from_millis(ms);
            run_limits.wall_time = self
                .config()
                .run_time("timeoutMs", asked, TimeUnit::Millis)?;
            run_limits.cpu_time = run_limits.wall_time;
        }
        if let Some(mb) = c.memory_limit {
            run_limits.memory_bytes = Some(self.config().memory_limit("memoryLimit", mb)?);
        }
        let req = CodeRequest {
            language: c.language.unwrap_or_else(|| session_language.to_string()),
            code: c.code,
            input: c.input,
            stdin: self.config().checked_stdin("stdin", c.stdin)?,
            limits: run_limits,
            ..CodeRequest::default()
        };
        match self.execute_hooked(bx, &req, hooks).await {
            Ok(execution) => Ok(execution_result(execution)),
            Err(
                e @ (EngineError::UnsupportedLanguage(_) | EngineError::LanguageUnavailable(_)),
            ) => refused(e.to_string()),
            Err(e) => Err(e),
        }
    }

    /// `shell`: one command line in the workspace (or a directory in it).
    async fn shell(
        &self,
        bx: &SandboxBox,
        c: ShellCommand,
        hooks: RunHooks,
    ) -> Result<Answer, EngineError> {
        // The lexical half here; the box refuses symlinks on the way (see paths.rs).
        let cwd = match c
            .working_directory
            .as_deref()
            .map(paths::resolve)
            .transpose()
        {
            Ok(cwd) => cwd.map(|p| p.absolute()),
            Err(e) => return refused(format!("workingDirectory: {e}")),
        };
        if c.command.trim().is_empty() {
            return refused("shell: `command` is empty".into());
        }
        let mut cmd = RunSpec::new(std::iter::once(c.command).chain(c.args));
        cmd.env = c.env.into_iter().collect();
        cmd.cwd = cwd;
        cmd.stdin = self.config().checked_stdin("stdin", c.stdin)?;
        cmd.limits = self.config().run_limits;
        if let Some(ms) = c.timeout_ms {
            let asked = Duration::from_millis(ms);
            cmd.limits.wall_time = self
                .config()
                .run_time("timeoutMs", asked, TimeUnit::Millis)?;
            cmd.limits.cpu_time = cmd.limits.wall_time;
        }
        let outcome = bx
            .run_with_stdin(&cmd, hooks.output, hooks.cancel, hooks.stdin)
            .await?;
        let success = outcome.status == Verdict::Ok;
        let error = (!success).then(|| shell_error(&outcome));
        let result = CommandResult::Run(run_result(&outcome, None));
        Ok((success, Some(result), error))
    }

    async fn write_file(
        &self,
        bx: &SandboxBox,
        path: &str,
        content: &str,
        mode: WriteMode,
        encoding: Encoding,
        max: u64,
    ) -> Result<Step<CommandResult>, EngineError> {
        let p = match paths::resolve(path) {
            Ok(p) if p.is_root() => {
                return Ok(Err(Refused(
                    "write_file needs a file path, not the workspace".into(),
                )))
            }
            Ok(p) => p,
            Err(e) => return Ok(Err(e.into())),
        };
        let data = match encoding {
            Encoding::Base64 => {
                match base64::engine::general_purpose::STANDARD.decode(content.trim()) {
                    Ok(d) => d,
                    Err(e) => return Ok(Err(Refused(format!("content is not valid base64: {e}")))),
                }
            }
            _ => content.as_bytes().to_vec(),
        };
        if data.len() as u64 > max {
            return Ok(Err(Refused(format!(
                "content is larger than the {max}-byte limit for one write"
            ))));
        }
        let bytes = data.len() as u64;
        let r = match mode {
            WriteMode::Append => {
                bx.append_file(FileRoot::Workspace, p.relative(), data)
                    .await
            }
            _ => {
                bx.write_file(FileRoot::Workspace, p.relative(), data, false)
                    .await
            }
        };
        Ok(box_call(r)?.map(|()| {
            CommandResult::WriteFile(WriteFileResult {
                path: p.absolute(),
                bytes,
            })
        }))
    }
}

fn execution_result(e: Execution) -> Answer {
    let success = e.success();
    let mut run = run_result(&e.outcome, e.output.clone());
    if let Some(c) = e.compile {
        run.compile_ms = Some(c.duration.as_millis() as u64);
        run.compile_cache_hit = Some(c.cache_hit);
    }
    (
        success,
        Some(CommandResult::Run(run)),
        if success { None } else { e.error },
    )
}

fn shell_error(o: &RunOutcome) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stderr = stderr.trim_end();
    let why = match (o.status, o.exit_code, o.signal) {
        (Verdict::RuntimeError, Some(code), _) => format!("exited with code {code}"),
        (Verdict::RuntimeError, _, Some(sig)) => format!("killed by signal {sig}"),
        (status, _, _) => format!("{status}: {}", o.message.clone().unwrap_or_default()),
    };
    if stderr.is_empty() {
        why
    } else {
        format!("{why}: {stderr}")
    }
}

async fn create_dir(
    bx: &SandboxBox,
    path: &str,
    recursive: bool,
) -> Result<Step<CommandResult>, EngineError> {
    let p = match paths::resolve(path) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.into())),
    };
    let done = || CommandResult::CreateDir(CreateDirResult { path: p.absolute() });
    if p.is_root() {
        return Ok(Ok(done()));
    }
    let r = bx
        .create_dir(FileRoot::Workspace, p.relative(), recursive)
        .await;
    Ok(box_call(r)?.map(|()| done()))
}

/// `delete_file`: a path that does not exist is a failure with a result (`deleted: false`).
async fn delete_file(bx: &SandboxBox, path: &str, recursive: bool) -> Result<Answer, EngineError> {
    let p = match paths::resolve(path) {
        Ok(p) if p.is_root() => return refused("refusing to delete the workspace itself".into()),
        Ok(p) => p,
        Err(e) => return refused(e.to_string()),
    };
    let result = |deleted| {
        Some(CommandResult::DeleteFile(DeleteFileResult {
            path: p.absolute(),
            deleted,
        }))
    };
    match box_call(
        bx.remove(FileRoot::Workspace, p.relative(), recursive)
            .await,
    )? {
        Ok(true) => Ok((true, result(true), None)),
        Ok(false) => {
            let error = format!("{}: no such file or directory", p.absolute());
            Ok((false, result(false), Some(error)))
        }
        Err(Refused(msg)) => refused(msg),
    }
}

async fn read_bytes(
    bx: &SandboxBox,
    p: &WorkspacePath,
    max: u64,
) -> Result<Step<Vec<u8>>, EngineError> {
    if p.is_root() {
        return Ok(Err(Refused("the workspace is a directory".into())));
    }
    box_call(bx.read_file(FileRoot::Workspace, p.relative(), max).await)
}

async fn read_file(
    bx: &SandboxBox,
    path: &str,
    encoding: Option<Encoding>,
    max: u64,
) -> Result<Step<CommandResult>, EngineError> {
    let p = match paths::resolve(path) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.into())),
    };
    let data = match read_bytes(bx, &p, max).await? {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    let bytes = data.len() as u64;
    let (content, encoding) = match (encoding, String::from_utf8(data)) {
        (Some(Encoding::Base64), Ok(s)) => (
            base64::engine::general_purpose::STANDARD.encode(s),
            Encoding::Base64,
        ),
        (_, Ok(s)) => (s, Encoding::Utf8),
        (Some(Encoding::Utf8), Err(_)) => {
            return Ok(Err(Refused(format!(
                "{} is not UTF-8 text; read it with encoding base64",
                p.absolute()
            ))))
        }
        (_, Err(e)) => (
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            Encoding::Base64,
        ),
    };
    Ok(Ok(CommandResult::ReadFile(ReadFileResult {
        path: p.absolute(),
        content,
        encoding,
        bytes,
    })))
}

async fn copy_file(
    bx: &SandboxBox,
    source: &str,
    destination: &str,
    overwrite: bool,
) -> Result<Step<CommandResult>, EngineError> {
    let (s, d) = match (paths::resolve(source), paths::resolve(destination)) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(e.into())),
    };
    if s.is_root() || d.is_root() {
        return Ok(Err(Refused(
            "copy_file copies files, not the workspace".into(),
        )));
    }
    Ok(box_call(
        bx.copy(FileRoot::Workspace, s.relative(), d.relative(), overwrite)
            .await,
    )?
    .map(|_| {
        CommandResult::CopyFile(CopyFileResult {
            source: s.absolute(),
            destination: d.absolute(),
        })
    }))
}

async fn list_files(
    bx: &SandboxBox,
    c: &ListFilesCommand,
    max_entries: u32,
) -> Result<Step<CommandResult>, EngineError> {
    let p = match paths::resolve(&c.path) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.into())),
    };
    let pattern = match c.pattern.as_deref().map(globset::Glob::new).transpose() {
        Ok(g) => g.map(|g| g.compile_matcher()),
        Err(e) => return Ok(Err(Refused(format!("pattern is not a valid glob: {e}")))),
    };
    let depth = if c.recursive {
        c.max_depth.unwrap_or(64).max(1)
    } else {
        1
    };
    let (entries, truncated) = match box_call(
        bx.list(
            FileRoot::Workspace,
            p.relative(),
            c.recursive,
            depth,
            max_entries,
        )
        .await,
    )? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let prefix = if p.is_root() {
        String::new()
    } else {
        format!("{}/", p.relative())
    };
    let entries = entries
        .into_iter()
        .filter_map(|e| {
            let below = e.path.strip_prefix(&prefix).unwrap_or(&e.path).to_string();
            if !c.include_hidden && below.split('/').any(|part| part.starts_with('.')) {
                return None;
            }
            if pattern.as_ref().is_some_and(|g| !g.is_match(&below)) {
                return None;
            }
            Some(FileEntry {
                name: below.rsplit('/').next().unwrap_or_default().to_string(),
                path: format!("/workspace/{}", e.path),
                kind: match e.kind {
                    EntryKind::File => FileKind::File,
                    EntryKind::Dir => FileKind::Directory,
                    EntryKind::Symlink => FileKind::Symlink,
                    EntryKind::Other => FileKind::Other,
                },
                size: e.size,
                modified: rfc3339(e.modified),
            })
        })
        .collect();
    Ok(Ok(CommandResult::ListFiles(ListFilesResult {
        path: p.absolute(),
        entries,
        truncated,
    })))
}

/// Reads one side of a diff: a workspace file, or literal text.
async fn side_text(
    bx: &SandboxBox,
    side: DiffSide<'_>,
    max: u64,
) -> Result<Step<(String, String)>, EngineError> {
    match side {
        DiffSide::Content(text) => Ok(Ok((text.to_string(), "content".to_string()))),
        DiffSide::Path(path) => {
            let p = match paths::resolve(path) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e.into())),
            };
            Ok(read_bytes(bx, &p, max).await?.and_then(|data| {
                String::from_utf8(data)
                    .map(|s| (s, p.absolute()))
                    .map_err(|_| Refused(format!("{} is not UTF-8 text", p.absolute())))
            }))
        }
    }
}

/// Slots for the text work of `diff` and `apply_patch`, which runs on the server itself: one per
/// core, so that a flood of costly diffs waits its turn instead of taking every CPU the server
/// needs to answer anything else.
fn text_work_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        tokio::sync::Semaphore::new(cores)
    })
}

/// Runs CPU-bound work on a blocking thread, off the async workers that answer every other
/// request (health probes included), once a slot of [`text_work_slots`] is free.
async fn off_runtime<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    let _slot = text_work_slots()
        .acquire()
        .await
        .map_err(|e| EngineError::Internal(format!("{what}: {e}")))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Internal(format!("{what} failed: {e}")))
}

/// Lines of a text as `diff` counts them.
fn line_count(text: &str) -> u64 {
    let newlines = text.bytes().filter(|&b| b == b'\n').count() as u64;
    newlines + u64::from(!text.is_empty() && !text.ends_with('\n'))
}

/// Checks one input of `diff` or `apply_patch` against the text limits.
fn check_text(
    command: &str,
    what: &str,
    text: &str,
    limits: TextLimits,
) -> Result<(), EngineError> {
    let bytes = text.len() as u64;
    if bytes > limits.max_bytes {
        return Err(EngineError::InvalidInput(format!(
            "{command}: {what} is {bytes} bytes; {command} takes at most {} bytes (limits.text_max_bytes)",
            limits.max_bytes
        )));
    }
    let lines = line_count(text);
    if lines > limits.max_lines {
        return Err(EngineError::InvalidInput(format!(
            "{command}: {what} has {lines} lines; {command} takes at most {} lines (limits.text_max_lines)",
            limits.max_lines
        )));
    }
    Ok(())
}

async fn diff(
    bx: &SandboxBox,
    c: &DiffCommand,
    max: u64,
    limits: TextLimits,
) -> Result<Step<CommandResult>, EngineError> {
    let (original, a_name) = match side_text(bx, c.original(), max).await? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let (modified, b_name) = match side_text(bx, c.modified(), max).await? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    check_text(
        "diff",
        &format!("the original ({a_name})"),
        &original,
        limits,
    )?;
    check_text(
        "diff",
        &format!("the modified text ({b_name})"),
        &modified,
        limits,
    )?;
    let context = c.context_lines as usize;
    let result = off_runtime("diff", move || {
        diff_texts(&original, &modified, a_name, b_name, context, limits)
    })
    .await??;
    Ok(Ok(CommandResult::Diff(result)))
}

/// The diff of two texts, unless finding it would cost more than the limit allows.
fn diff_texts(
    original: &str,
    modified: &str,
    a_name: String,
    b_name: String,
    context: usize,
    limits: TextLimits,
) -> Result<DiffResult, EngineError> {
    let identical = original == modified;
    if !identical && !crate::patch::diff_within(original, modified, limits.max_diff_cost) {
        return Err(EngineError::InvalidInput(format!(
            "diff: these texts ({} and {} lines) differ too much to diff here: finding their \
             differences would take more than {} steps (limits.text_max_diff_cost); diff smaller \
             pieces of them, or texts with more lines in common",
            line_count(original),
            line_count(modified),
            limits.max_diff_cost
        )));
    }
    let patch = diffy::DiffOptions::new()
        .set_context_len(context)
        .set_original_filename(a_name)
        .set_modified_filename(b_name)
        .create_patch(original, modified);
    let (mut additions, mut deletions) = (0u64, 0u64);
    for hunk in patch.hunks() {
        for line in hunk.lines() {
            match line {
                diffy::Line::Insert(_) => additions += 1,
                diffy::Line::Delete(_) => deletions += 1,
                diffy::Line::Context(_) => {}
            }
        }
    }
    let diff = if identical {
        String::new()
    } else {
        patch.to_string()
    };
    Ok(DiffResult {
        diff,
        additions,
        deletions,
        identical,
    })
}

async fn apply_patch(
    bx: &SandboxBox,
    c: ApplyPatchCommand,
    max: u64,
    limits: TextLimits,
) -> Result<Answer, EngineError> {
    check_text("apply_patch", "the patch", &c.patch, limits)?;
    // No file here has more lines than it may have bytes: a hunk header past that is a bad
    // request, whatever the file.
    let max_line = usize::try_from(max).unwrap_or(usize::MAX);
    let ApplyPatchCommand {
        patch,
        strip,
        target_path,
        dry_run,
        ..
    } = c;
    let parsed = off_runtime("apply_patch", move || {
        crate::patch::parse(&patch, strip, max_line)
    })
    .await?;
    let files = match parsed {
        Ok(f) => f,
        Err(crate::patch::PatchError::OutOfRange(e)) => {
            return Err(EngineError::InvalidInput(format!("apply_patch: {e}")))
        }
        Err(e @ crate::patch::PatchError::Malformed(_)) => {
            return refused(format!("invalid patch: {e}"))
        }
    };
    let mut result = ApplyPatchResult {
        files: Vec::new(),
        hunks_applied: 0,
        hunks_failed: 0,
        dry_run,
        failures: Vec::new(),
    };
    let mut writes = Vec::new();
    for file in files {
        let target = target_path.as_deref().unwrap_or(&file.path);
        let p = match paths::resolve(target) {
            Ok(p) if !p.is_root() => p,
            Ok(_) => return refused("the patch targets the workspace itself".into()),
            Err(e) => return refused(e.to_string()),
        };
        let original = if file.creates {
            String::new()
        } else {
            match read_bytes(bx, &p, max).await? {
                Ok(d) => match String::from_utf8(d) {
                    Ok(s) => s,
                    Err(_) => return refused(format!("{} is not UTF-8 text", p.absolute())),
                },
                Err(Refused(msg)) => {
                    return refused(format!("cannot patch {}: {msg}", p.absolute()))
                }
            }
        };
        let hunks = file.hunks;
        let applied = off_runtime("apply_patch", move || {
            crate::patch::apply(&original, &hunks)
        })
        .await?;
        result.hunks_applied += applied.applied;
        result.hunks_failed += applied.failures.len() as u32;
        for (hunk, reason) in applied.failures {
            result.failures.push(HunkFailure {
                path: p.absolute(),
                hunk,
                reason,
            });
        }
        result.files.push(p.absolute());
        writes.push((p, applied.text, file.deletes));
    }
    if result.hunks_failed > 0 {
        let first = &result.failures[0];
        let error = format!(
            "{} hunk(s) did not apply, so nothing was changed; first: {} hunk {}: {}",
            result.hunks_failed, first.path, first.hunk, first.reason
        );
        return Ok((false, Some(CommandResult::ApplyPatch(result)), Some(error)));
    }
    if !dry_run {
        for (p, text, deletes) in writes {
            let r = if deletes {
                bx.remove(FileRoot::Workspace, p.relative(), false)
                    .await
                    .map(|_| ())
            } else {
                bx.write_file(FileRoot::Workspace, p.relative(), text.into_bytes(), false)
                    .await
            };
            if let Err(Refused(msg)) = box_call(r)? {
                return refused(msg);
            }
        }
    }
    Ok((true, Some(CommandResult::ApplyPatch(result)), None))
}
