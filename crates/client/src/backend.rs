//! The one interface over "a CodeBeaker": a remote server over WebSocket ([`crate::Client`]) or
//! an engine in this process ([`crate::Embedded`]). The pool, the runtime service and the batch
//! executor only see this trait.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use codebeaker_protocol::commands::{
    ApplyPatchCommand, ApplyPatchResult, Command, CopyFileCommand, CopyFileResult,
    CreateDirCommand, CreateDirResult, DeleteFileCommand, DeleteFileResult, DiffCommand,
    DiffResult, Encoding, ExecuteCommand, InstallPackagesCommand, ListFilesCommand,
    ListFilesResult, ReadFileCommand, ReadFileResult, RunResult, ShellCommand, WriteFileCommand,
    WriteFileResult, WriteMode,
};
use codebeaker_protocol::contexts::{
    ContextCloseResult, ContextCreateParams, ContextInfo, ContextListResult, ContextParams,
    ContextRunParams, ContextRunResult,
};
use codebeaker_protocol::methods::{
    ExecutionEvent, ExecutionRunParams, ExecutionRunResult, ExecutionStatus, ExecutionStatusResult,
    InitializeResult, LanguageListResult, SessionCloseResult, SessionCreateParams,
    SessionCreateResult, SessionExecuteParams, SessionExecuteResult, SessionListResult,
    MAX_WAIT_MS,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::ClientError;

/// A boxed, sendable future: what [`Backend`]'s methods return, so that the trait can be used as
/// `Arc<dyn Backend>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How one `session.execute` call is made.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Give up waiting for the answer after this long ([`ClientError::Timeout`]); the backend's
    /// default request timeout when `None`. This bounds the wait on the client; to have the
    /// server kill a program, also set the command's own `timeoutMs`.
    pub timeout: Option<Duration>,
    /// Ask the server to stream (`"stream": true`) and deliver its `execution.started`,
    /// `execution.output` and `execution.completed` notifications for this request here. Every
    /// event is in the channel before the call returns.
    pub events: Option<UnboundedSender<ExecutionEvent>>,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout: Some(timeout),
            events: None,
        }
    }
}

/// The protocol's methods, typed. Implemented by [`crate::Client`] (WebSocket JSON-RPC) and
/// [`crate::Embedded`] (an in-process engine). Use [`BackendExt`] for one-line helpers per
/// command.
///
/// Methods return [`BoxFuture`]s so that `Arc<dyn Backend>` works; call them like async
/// functions.
pub trait Backend: Send + Sync + 'static {
    /// Where requests go, for messages: the server's URL, or `embedded`.
    fn endpoint(&self) -> String;

    /// `initialize`: server name, version, protocol version and capabilities.
    fn initialize(&self) -> BoxFuture<'_, Result<InitializeResult, ClientError>>;

    /// `language.list`: every language the server knows, with availability.
    fn language_list(&self) -> BoxFuture<'_, Result<LanguageListResult, ClientError>>;

    /// `session.create`: a new session (one sandbox box).
    fn session_create(
        &self,
        params: SessionCreateParams,
    ) -> BoxFuture<'_, Result<SessionCreateResult, ClientError>>;

    /// `session.execute`: one command in a session. Command-level failures come back as
    /// `success: false`; `Err` means no answer (or a JSON-RPC error).
    fn session_execute(
        &self,
        params: SessionExecuteParams,
        options: CallOptions,
    ) -> BoxFuture<'_, Result<SessionExecuteResult, ClientError>>;

    /// `session.close`.
    fn session_close<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<SessionCloseResult, ClientError>>;

    /// `session.list`: this caller's sessions.
    fn session_list(&self) -> BoxFuture<'_, Result<SessionListResult, ClientError>>;

    /// `execution.run`: queue a one-shot run without a session.
    fn execution_run(
        &self,
        params: ExecutionRunParams,
    ) -> BoxFuture<'_, Result<ExecutionRunResult, ClientError>>;

    /// `execution.status`: where a one-shot run is, and its result once it has ended.
    fn execution_status<'a>(
        &'a self,
        execution_id: &'a str,
    ) -> BoxFuture<'a, Result<ExecutionStatusResult, ClientError>>;

    /// `execution.status` with `wait` (a long-poll): answers as soon as the run has ended, or
    /// when `wait` (at most [`MAX_WAIT_MS`] milliseconds; longer is cut to that) is over, with
    /// the run's state then. The default answers at once, for backends that cannot wait.
    fn execution_status_wait<'a>(
        &'a self,
        execution_id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<ExecutionStatusResult, ClientError>> {
        let _ = wait;
        self.execution_status(execution_id)
    }

    /// `context.create`: a stateful code context in a session (Python, JavaScript or Bash).
    /// Backends without contexts answer [`ClientError::Config`].
    fn context_create(
        &self,
        params: ContextCreateParams,
    ) -> BoxFuture<'_, Result<ContextInfo, ClientError>> {
        let _ = params;
        Box::pin(async move { Err(no_contexts(self)) })
    }

    /// `context.run`: one cell; with `options.events`, its `execution.*` events as it runs.
    fn context_run(
        &self,
        params: ContextRunParams,
        options: CallOptions,
    ) -> BoxFuture<'_, Result<ContextRunResult, ClientError>> {
        let _ = (params, options);
        Box::pin(async move { Err(no_contexts(self)) })
    }

    /// `context.list`: a session's contexts.
    fn context_list<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<ContextListResult, ClientError>> {
        let _ = session_id;
        Box::pin(async move { Err(no_contexts(self)) })
    }

    /// `context.restart`: a new kernel, the state cleared.
    fn context_restart(
        &self,
        params: ContextParams,
    ) -> BoxFuture<'_, Result<ContextInfo, ClientError>> {
        let _ = params;
        Box::pin(async move { Err(no_contexts(self)) })
    }

    /// `context.close`: the context and everything it started end.
    fn context_close(
        &self,
        params: ContextParams,
    ) -> BoxFuture<'_, Result<ContextCloseResult, ClientError>> {
        let _ = params;
        Box::pin(async move { Err(no_contexts(self)) })
    }

    /// `execution.run` with `wait`: queues the run and answers as soon as it has ended, or when
    /// `wait` (at most [`MAX_WAIT_MS`] milliseconds) is over, with its record as
    /// `execution.status` reports it (then still `queued` or `running`). One round trip for a
    /// short run. The default queues the run with [`execution_run`](Self::execution_run) and
    /// reports it as `queued` at once, for backends that cannot wait.
    fn execution_run_wait(
        &self,
        params: ExecutionRunParams,
        wait: Duration,
    ) -> BoxFuture<'_, Result<ExecutionStatusResult, ClientError>> {
        let _ = wait;
        Box::pin(async move {
            let queued = self
                .execution_run(ExecutionRunParams {
                    wait: None,
                    ..params
                })
                .await?;
            Ok(not_finished(queued))
        })
    }
}

/// The record of a run that was only queued so far (`execution.run` without `wait`).
fn no_contexts<B: Backend + ?Sized>(backend: &B) -> ClientError {
    ClientError::Config(format!(
        "{} does not offer contexts (context.*)",
        backend.endpoint()
    ))
}

pub(crate) fn not_finished(queued: ExecutionRunResult) -> ExecutionStatusResult {
    ExecutionStatusResult {
        execution_id: queued.execution_id,
        status: queued.status,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        duration_ms: None,
        timeout: false,
        result: None,
        error: None,
    }
}

/// `wait` as the whole milliseconds `execution.status` takes: at most [`MAX_WAIT_MS`].
pub(crate) fn wait_millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis())
        .unwrap_or(u64::MAX)
        .min(MAX_WAIT_MS)
}

/// The answer to one command, with its result typed: `{success, result, error, durationMs}`.
pub type CommandReply<T> = SessionExecuteResult<T>;

/// Decodes the `result` of a command reply into its typed form.
pub fn typed_reply<T: DeserializeOwned>(
    reply: SessionExecuteResult,
) -> Result<CommandReply<T>, ClientError> {
    let result = match reply.result {
        None | Some(Value::Null) => None,
        Some(value) => Some(serde_json::from_value(value).map_err(|e| {
            ClientError::invalid_response("session.execute", format!("command result: {e}"))
        })?),
    };
    Ok(SessionExecuteResult {
        success: reply.success,
        result,
        error: reply.error,
        duration_ms: reply.duration_ms,
    })
}

/// One helper per command, for every [`Backend`] (including `dyn Backend`).
///
/// ```no_run
/// # async fn demo(client: codebeaker_client::Client) -> Result<(), codebeaker_client::ClientError> {
/// use codebeaker_client::{Backend, BackendExt};
/// use codebeaker_protocol::methods::SessionCreateParams;
///
/// let session = client
///     .session_create(SessionCreateParams { language: "python".into(), ..Default::default() })
///     .await?;
/// let id = &session.session_id;
/// client.write_file(id, "data.txt", "hello").await?;
/// let read = client.read_file(id, "data.txt").await?;
/// assert_eq!(read.result.map(|r| r.content).as_deref(), Some("hello"));
/// let run = client.shell(id, "cat", &["data.txt"]).await?;
/// assert_eq!(run.result.map(|r| r.stdout).as_deref(), Some("hello"));
/// client.session_close(id).await?;
/// # Ok(()) }
/// ```
pub trait BackendExt: Backend {
    /// Runs any command and decodes its result as `T` (which must fit the command's type).
    fn command<T: DeserializeOwned>(
        &self,
        session_id: &str,
        command: Command,
        options: CallOptions,
    ) -> impl Future<Output = Result<CommandReply<T>, ClientError>> + Send {
        let params = SessionExecuteParams {
            session_id: session_id.to_string(),
            command,
            stream: None,
        };
        async move { typed_reply(self.session_execute(params, options).await?) }
    }

    /// `execute` as a plain script: stdout, stderr and the typed outcome.
    fn run_code(
        &self,
        session_id: &str,
        code: &str,
    ) -> impl Future<Output = Result<CommandReply<RunResult>, ClientError>> + Send {
        let command = Command::Execute(ExecuteCommand {
            code: code.to_string(),
            ..Default::default()
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `execute` as a snippet: `input` is bound to `input_data`, and the value the code leaves in
    /// `result` comes back as the run result's `output`. `timeout_ms` is the server-side limit.
    fn run_snippet(
        &self,
        session_id: &str,
        code: &str,
        input: Value,
        timeout_ms: Option<u64>,
    ) -> impl Future<Output = Result<CommandReply<RunResult>, ClientError>> + Send {
        let command = Command::Execute(ExecuteCommand {
            code: code.to_string(),
            input: Some(input),
            timeout_ms,
            ..Default::default()
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `write_file` with UTF-8 text, creating or replacing the file.
    fn write_file(
        &self,
        session_id: &str,
        path: &str,
        content: &str,
    ) -> impl Future<Output = Result<CommandReply<WriteFileResult>, ClientError>> + Send {
        let command = Command::WriteFile(WriteFileCommand {
            path: path.to_string(),
            content: content.to_string(),
            mode: WriteMode::Create,
            encoding: Encoding::Utf8,
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `write_file` with bytes (sent as base64), creating or replacing the file.
    fn write_file_bytes(
        &self,
        session_id: &str,
        path: &str,
        content: &[u8],
    ) -> impl Future<Output = Result<CommandReply<WriteFileResult>, ClientError>> + Send {
        use base64::Engine as _;
        let command = Command::WriteFile(WriteFileCommand {
            path: path.to_string(),
            content: base64::engine::general_purpose::STANDARD.encode(content),
            mode: WriteMode::Create,
            encoding: Encoding::Base64,
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `write_file` in `Append` mode.
    fn append_file(
        &self,
        session_id: &str,
        path: &str,
        content: &str,
    ) -> impl Future<Output = Result<CommandReply<WriteFileResult>, ClientError>> + Send {
        let command = Command::WriteFile(WriteFileCommand {
            path: path.to_string(),
            content: content.to_string(),
            mode: WriteMode::Append,
            encoding: Encoding::Utf8,
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `read_file`: text when the file is UTF-8, base64 otherwise (the result says which).
    fn read_file(
        &self,
        session_id: &str,
        path: &str,
    ) -> impl Future<Output = Result<CommandReply<ReadFileResult>, ClientError>> + Send {
        let command = Command::ReadFile(ReadFileCommand {
            path: path.to_string(),
            encoding: None,
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `shell`: runs an executable with arguments (no shell parses anything).
    fn shell(
        &self,
        session_id: &str,
        command: &str,
        args: &[&str],
    ) -> impl Future<Output = Result<CommandReply<RunResult>, ClientError>> + Send {
        let command = Command::Shell(ShellCommand {
            command: command.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `create_dir`, creating missing parents.
    fn create_dir(
        &self,
        session_id: &str,
        path: &str,
    ) -> impl Future<Output = Result<CommandReply<CreateDirResult>, ClientError>> + Send {
        let command = Command::CreateDir(CreateDirCommand {
            path: path.to_string(),
            recursive: true,
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `delete_file`; `recursive` is needed for a non-empty directory.
    fn delete_file(
        &self,
        session_id: &str,
        path: &str,
        recursive: bool,
    ) -> impl Future<Output = Result<CommandReply<DeleteFileResult>, ClientError>> + Send {
        let command = Command::DeleteFile(DeleteFileCommand {
            path: path.to_string(),
            recursive,
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `copy_file`.
    fn copy_file(
        &self,
        session_id: &str,
        source: &str,
        destination: &str,
        overwrite: bool,
    ) -> impl Future<Output = Result<CommandReply<CopyFileResult>, ClientError>> + Send {
        let command = Command::CopyFile(CopyFileCommand {
            source: source.to_string(),
            destination: destination.to_string(),
            overwrite,
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `list_files` with every option (see [`ListFilesCommand`]).
    fn list_files(
        &self,
        session_id: &str,
        list: ListFilesCommand,
    ) -> impl Future<Output = Result<CommandReply<ListFilesResult>, ClientError>> + Send {
        self.command(session_id, Command::ListFiles(list), CallOptions::default())
    }

    /// `diff` of two texts.
    fn diff_text(
        &self,
        session_id: &str,
        original: &str,
        modified: &str,
    ) -> impl Future<Output = Result<CommandReply<DiffResult>, ClientError>> + Send {
        let command = Command::Diff(DiffCommand {
            original_path: None,
            original_content: Some(original.to_string()),
            modified_path: None,
            modified_content: Some(modified.to_string()),
            context_lines: codebeaker_protocol::commands::DEFAULT_CONTEXT_LINES,
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `diff` with every option (files or texts on either side).
    fn diff(
        &self,
        session_id: &str,
        diff: DiffCommand,
    ) -> impl Future<Output = Result<CommandReply<DiffResult>, ClientError>> + Send {
        self.command(session_id, Command::Diff(diff), CallOptions::default())
    }

    /// `apply_patch` of a unified diff to the files it names.
    fn apply_patch(
        &self,
        session_id: &str,
        patch: &str,
        dry_run: bool,
    ) -> impl Future<Output = Result<CommandReply<ApplyPatchResult>, ClientError>> + Send {
        let command = Command::ApplyPatch(ApplyPatchCommand {
            patch: patch.to_string(),
            dry_run,
            ..Default::default()
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `install_packages` with the session language's package manager.
    fn install_packages(
        &self,
        session_id: &str,
        packages: &[&str],
    ) -> impl Future<Output = Result<CommandReply<RunResult>, ClientError>> + Send {
        let command = Command::InstallPackages(InstallPackagesCommand {
            packages: packages.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        });
        self.command(session_id, command, CallOptions::default())
    }

    /// `session.execute` with streaming: every `execution.*` notification of this request goes
    /// to `events` (all of them before this returns), and the whole result comes back as usual.
    fn session_execute_streaming(
        &self,
        params: SessionExecuteParams,
        timeout: Option<Duration>,
        events: UnboundedSender<ExecutionEvent>,
    ) -> BoxFuture<'_, Result<SessionExecuteResult, ClientError>> {
        self.session_execute(
            params,
            CallOptions {
                timeout,
                events: Some(events),
            },
        )
    }

    /// A one-shot run: `execution.run` with `wait`, then, for a run that has not ended by then,
    /// `execution.status` with `wait`, until the run has ended or `wait` has passed (then the
    /// last status, still `queued` or `running`, is returned). Both calls are long-polls that
    /// answer the moment the run ends, so a short run costs one round trip. `params.wait` is
    /// ignored (`wait` says how long to wait).
    ///
    /// A server that does not long-poll answers at once (`execution.run` then with only
    /// `{executionId, status}`); then the status is asked for again after a short pause that
    /// grows up to 100 ms.
    fn run_once(
        &self,
        params: ExecutionRunParams,
        wait: Duration,
    ) -> impl Future<Output = Result<ExecutionStatusResult, ClientError>> + Send {
        async move {
            let deadline = Instant::now() + wait;
            let finished = |s: &ExecutionStatusResult| {
                matches!(
                    s.status,
                    ExecutionStatus::Completed | ExecutionStatus::Failed
                )
            };
            let mut delay = Duration::from_millis(5);
            let mut asked = Duration::from_millis(wait_millis(wait));
            let mut started = Instant::now();
            let mut status = self.execution_run_wait(params, asked).await?;
            loop {
                if finished(&status) || Instant::now() >= deadline {
                    return Ok(status);
                }
                // An answer well before the wait was over, for a run still going: this server
                // does not long-poll, so pause before asking again.
                if started.elapsed() < asked / 2 {
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(delay.min(left)).await;
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                asked = Duration::from_millis(wait_millis(left));
                started = Instant::now();
                status = self
                    .execution_status_wait(&status.execution_id, asked)
                    .await?;
            }
        }
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}
