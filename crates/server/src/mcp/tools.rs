//! The MCP tools and the languages resource: one handler ([`Tools`]) that both transports serve.
//!
//! Every tool is one engine call made the way the other doors make it: `run_code` is a one-shot
//! run (`execution.run`'s queue, limits, metrics and audit), the `sandbox_*` tools are the
//! sandbox's session's commands and contexts (`session.execute`, `context.run`), and a sandbox is
//! opened and closed as `session.create` / `session.close` open and close sessions.
//!
//! What the agent should read (a program that failed, a timeout, an unknown sandbox, a limit) is
//! a tool result with `isError: true` and a text that says what to do; a protocol error is kept
//! for a call that is not a call of these tools (an unknown tool, arguments of the wrong shape).

use std::sync::Arc;
use std::time::{Duration, Instant};

use codebeaker_engine::{
    Caller, CellOutcome, CellRequest, ContextOptions, EngineError, ExecutionRecord, ExecutionState,
    OneShotRequest, SessionOptions,
};
use codebeaker_languages::ContextKernel;
use codebeaker_protocol::commands::{
    Command, CommandResult, ExecuteCommand, FileKind, ListFilesCommand, ReadFileCommand,
    ShellCommand, WriteFileCommand, WriteMode,
};
use codebeaker_sandbox::Verdict;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::sandboxes::{self, Sandbox, Sandboxes};
use crate::audit;
use crate::error::engine_error;
use crate::rpc::{
    cell_accounted, command_accounted, language_label, wait_for_execution, watch_one_shot,
};
use crate::sessions::{open_session, Opening};
use crate::state::AppState;

/// The URI of the languages resource.
pub const LANGUAGES_URI: &str = "codebeaker://languages";

/// The names of the tools, in the order `tools/list` gives them.
pub const TOOL_NAMES: [&str; 8] = [
    "run_code",
    "sandbox_create",
    "sandbox_run_code",
    "sandbox_shell",
    "sandbox_write_file",
    "sandbox_read_file",
    "sandbox_list_dir",
    "sandbox_close",
];

/// Extra time a one-shot run may take beyond its own limit before the tool stops waiting: for
/// the queue, the box and the compile.
const WAIT_MARGIN: Duration = Duration::from_secs(60);

/// What the server tells the agent about itself at `initialize`.
const INSTRUCTIONS: &str = "CodeBeaker runs code in isolated sandboxes on this machine. Use \
run_code for a one-off program in any language of the codebeaker://languages resource (a fresh \
box each time, nothing kept). For work that keeps state, create a sandbox with sandbox_create: \
sandbox_run_code runs cells in it whose variables persist between calls (python, javascript, \
bash), sandbox_shell runs shell commands in its workspace (/workspace), and the file tools read \
and write that workspace. Close a sandbox with sandbox_close when done; every sandbox is closed \
when this MCP session ends.";

/// The MCP handler: the tools and the languages resource, over the server's state, for one MCP
/// client (its sandboxes). Clones share the client.
#[derive(Clone)]
pub struct Tools {
    state: AppState,
    /// The caller of every call when the transport has no authentication (stdio); over HTTP each
    /// request names its own, as the auth middleware found it.
    local_caller: Option<Caller>,
    sandboxes: Arc<Sandboxes>,
}

/// A tool's answer: a result (an error result included), or a protocol error.
type Answer = Result<CallToolResult, McpError>;

fn text_result(text: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

fn error_result(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// What the agent reads for a sandbox id that is not one of its open sandboxes: the same words
/// for a made-up id, a closed sandbox, and another client's.
fn unknown_sandbox(id: &str) -> CallToolResult {
    error_result(format!(
        "unknown sandbox {id}: no open sandbox of this MCP session has that id (it may have been \
         closed, or ended after being idle too long); create one with sandbox_create and use the \
         sandbox_id it returns"
    ))
}

#[derive(Deserialize)]
struct RunCodeArgs {
    language: String,
    code: String,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct CreateArgs {
    #[serde(default)]
    language: Option<String>,
}

#[derive(Deserialize)]
struct RunCellArgs {
    sandbox_id: String,
    code: String,
    #[serde(default)]
    language: Option<String>,
}

#[derive(Deserialize)]
struct ShellArgs {
    sandbox_id: String,
    command: String,
}

#[derive(Deserialize)]
struct WriteArgs {
    sandbox_id: String,
    path: String,
    content: String,
}

#[derive(Deserialize)]
struct ReadArgs {
    sandbox_id: String,
    path: String,
}

#[derive(Deserialize)]
struct ListArgs {
    sandbox_id: String,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Deserialize)]
struct CloseArgs {
    sandbox_id: String,
}

/// A JSON Schema object for a tool's input.
fn schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let schema = json!({
        "type": "object",
        "properties": properties,
        "required": required,
    });
    match schema {
        Value::Object(object) => Arc::new(object),
        _ => Arc::new(JsonObject::new()),
    }
}

const SANDBOX_ID: &str = "The sandbox_id that sandbox_create returned.";

/// The tools, with input schemas an agent can act on.
pub fn tool_list() -> Vec<Tool> {
    let sandbox_id = json!({"type": "string", "description": SANDBOX_ID});
    vec![
        Tool::new(
            "run_code",
            "Run a program once in a fresh isolated box and return its status, exit code, stdout \
             and stderr. Nothing is kept afterwards: use a sandbox for work that needs state or \
             files. The codebeaker://languages resource lists the languages.",
            schema(
                json!({
                    "language": {"type": "string", "description": "The language: python, javascript, typescript, bash, go, rust, c, cpp, java, ... (a name or an alias of codebeaker://languages)."},
                    "code": {"type": "string", "description": "The whole program's source."},
                    "stdin": {"type": "string", "description": "Text fed to the program's standard input."},
                    "timeout_ms": {"type": "integer", "minimum": 1, "description": "Wall-clock limit in milliseconds (the server's default when absent; the server's maximum bounds it)."}
                }),
                &["language", "code"],
            ),
        ),
        Tool::new(
            "sandbox_create",
            "Create a sandbox: an isolated box with a workspace (/workspace) and a code context \
             whose variables persist between sandbox_run_code calls. Returns its sandbox_id. \
             Close it with sandbox_close when done; it is closed anyway when this MCP session \
             ends.",
            schema(
                json!({
                    "language": {"type": "string", "description": "The language of its code context: python (the default), javascript or bash keep variables between calls; other languages run each cell as a program."}
                }),
                &[],
            ),
        ),
        Tool::new(
            "sandbox_run_code",
            "Run a cell of code in the sandbox's context: variables, functions and imports defined \
             by earlier cells are there, and the value of a final expression is returned (as \
             in a notebook). Output, the result, errors and images (e.g. matplotlib figures) come \
             back.",
            schema(
                json!({
                    "sandbox_id": sandbox_id,
                    "code": {"type": "string", "description": "The cell's code."},
                    "language": {"type": "string", "description": "Run it in the sandbox's context of this language (python, javascript, bash; made on first use); the sandbox's language when absent."}
                }),
                &["sandbox_id", "code"],
            ),
        ),
        Tool::new(
            "sandbox_shell",
            "Run a shell command (bash -c) in the sandbox's workspace and return its exit code, \
             stdout and stderr. Files it writes stay in the workspace.",
            schema(
                json!({
                    "sandbox_id": sandbox_id,
                    "command": {"type": "string", "description": "The command line, e.g. `ls -la` or `python3 main.py`."}
                }),
                &["sandbox_id", "command"],
            ),
        ),
        Tool::new(
            "sandbox_write_file",
            "Write a text file in the sandbox's workspace, replacing it if it exists (parent \
             directories are created).",
            schema(
                json!({
                    "sandbox_id": sandbox_id,
                    "path": {"type": "string", "description": "Path relative to the workspace, or starting with /workspace/."},
                    "content": {"type": "string", "description": "The file's whole content."}
                }),
                &["sandbox_id", "path", "content"],
            ),
        ),
        Tool::new(
            "sandbox_read_file",
            "Read a file of the sandbox's workspace (text; a binary file comes back as base64).",
            schema(
                json!({
                    "sandbox_id": sandbox_id,
                    "path": {"type": "string", "description": "Path relative to the workspace, or starting with /workspace/."}
                }),
                &["sandbox_id", "path"],
            ),
        ),
        Tool::new(
            "sandbox_list_dir",
            "List a directory of the sandbox's workspace: names (directories end with /), and the \
             sizes of files.",
            schema(
                json!({
                    "sandbox_id": sandbox_id,
                    "path": {"type": "string", "description": "The directory, relative to the workspace; the workspace itself when absent."}
                }),
                &["sandbox_id"],
            ),
        ),
        Tool::new(
            "sandbox_close",
            "Close a sandbox: its box, workspace and contexts are gone.",
            schema(json!({ "sandbox_id": sandbox_id }), &["sandbox_id"]),
        ),
    ]
}

/// The arguments of a call as `T`; a protocol error naming the problem when they do not fit.
fn arguments<T: DeserializeOwned>(
    tool: &str,
    arguments: Option<JsonObject>,
) -> Result<T, McpError> {
    let value = Value::Object(arguments.unwrap_or_default());
    serde_json::from_value(value).map_err(|e| {
        McpError::invalid_params(
            format!("invalid arguments for {tool}: {e} (tools/list has its input schema)"),
            None,
        )
    })
}

impl Tools {
    /// The handler of one MCP client over `state`, its sandboxes bounded by the server's
    /// `mcp.max_sandboxes_per_client`. `local_caller` is the caller of every call on a
    /// transport without authentication (stdio); `None` reads it from each HTTP request.
    pub fn new(state: AppState, local_caller: Option<Caller>) -> Tools {
        let max = state.config.mcp.max_sandboxes_per_client;
        Tools {
            sandboxes: Sandboxes::new(state.clone(), max),
            state,
            local_caller,
        }
    }

    /// Closes every sandbox of the client and waits for them to be gone.
    pub async fn close_all(&self) {
        self.sandboxes.close_all().await;
    }

    /// The caller a request speaks for.
    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        if let Some(caller) = &self.local_caller {
            return Ok(caller.clone());
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| McpError::internal_error("the request names no caller", None))
    }

    /// The registry's name of `asked`, or an error result listing the languages.
    fn language(&self, asked: &str) -> Result<String, CallToolResult> {
        let registry = self.state.engine.registry();
        registry
            .resolve(asked.trim())
            .map(|l| l.name().to_string())
            .map_err(|_| {
                error_result(format!(
                    "language {asked:?} is not supported; the languages are: {} (see the \
                     codebeaker://languages resource)",
                    registry.names().collect::<Vec<_>>().join(", ")
                ))
            })
    }

    async fn dispatch(&self, caller: &Caller, call: CallToolRequestParams) -> Answer {
        let name = call.name.as_ref();
        let args = call.arguments;
        match name {
            "run_code" => self.run_code(caller, arguments(name, args)?).await,
            "sandbox_create" => self.create(caller, arguments(name, args)?).await,
            "sandbox_run_code" => self.run_cell(caller, arguments(name, args)?).await,
            "sandbox_shell" => {
                let args: ShellArgs = arguments(name, args)?;
                let command = Command::Shell(ShellCommand {
                    command: "bash".into(),
                    args: vec!["-c".into(), args.command],
                    ..ShellCommand::default()
                });
                self.command(caller, &args.sandbox_id, command).await
            }
            "sandbox_write_file" => {
                let args: WriteArgs = arguments(name, args)?;
                let command = Command::WriteFile(WriteFileCommand {
                    path: args.path,
                    content: args.content,
                    mode: WriteMode::Overwrite,
                    ..WriteFileCommand::default()
                });
                self.command(caller, &args.sandbox_id, command).await
            }
            "sandbox_read_file" => {
                let args: ReadArgs = arguments(name, args)?;
                let command = Command::ReadFile(ReadFileCommand {
                    path: args.path,
                    encoding: None,
                });
                self.command(caller, &args.sandbox_id, command).await
            }
            "sandbox_list_dir" => {
                let args: ListArgs = arguments(name, args)?;
                let command = Command::ListFiles(ListFilesCommand {
                    path: args.path.unwrap_or_else(|| ".".into()),
                    include_hidden: true,
                    ..ListFilesCommand::default()
                });
                self.command(caller, &args.sandbox_id, command).await
            }
            "sandbox_close" => {
                let args: CloseArgs = arguments(name, args)?;
                self.close(caller, &args.sandbox_id).await
            }
            other => Err(McpError::invalid_params(
                format!(
                    "unknown tool {other:?}; the tools are: {}",
                    TOOL_NAMES.join(", ")
                ),
                None,
            )),
        }
    }

    /// `run_code`: one one-shot run, waited for.
    async fn run_code(&self, caller: &Caller, args: RunCodeArgs) -> Answer {
        let state = &self.state;
        let language = match self.language(&args.language) {
            Ok(language) => language,
            Err(refused) => return Ok(refused),
        };
        let request = OneShotRequest {
            language: language.clone(),
            code: args.code,
            stdin: args.stdin,
            timeout: args.timeout_ms.map(Duration::from_millis),
            ..OneShotRequest::default()
        };
        let id = match state.engine.submit_execution(caller, request) {
            Ok(id) => id,
            Err(error) => return Ok(self.refused(caller, "run_code", error)),
        };
        watch_one_shot(state, caller, &id, language_label(state, Some(&language)));
        let config = state.engine.config();
        let limit = args
            .timeout_ms
            .map_or(config.run_limits.wall_time, Duration::from_millis);
        let longest = limit + config.compile_limits.wall_time + WAIT_MARGIN;
        let record = match wait_for_execution(state, caller, &id, longest).await {
            Ok(record) => record,
            Err(error) => return Ok(error_result(error.message)),
        };
        Ok(one_shot_result(&record, limit))
    }

    /// The error result of an engine refusal (an unknown language, a limit out of range, the
    /// queue full), written to the audit log as a refusal of `tool`.
    fn refused(&self, caller: &Caller, tool: &str, error: EngineError) -> CallToolResult {
        let error = engine_error(error);
        let route = format!("tools/call {tool}");
        audit::refused(caller, &route, &error, audit::Subject::default());
        error_result(error.message)
    }

    /// `sandbox_create`: a session of the caller, with a context of its language when the
    /// language has one.
    async fn create(&self, caller: &Caller, args: CreateArgs) -> Answer {
        let state = &self.state;
        let language = match self.language(args.language.as_deref().unwrap_or("python")) {
            Ok(language) => language,
            Err(refused) => return Ok(refused),
        };
        // Sandboxes the engine ended on its own (idle, lifetime) make room.
        let open: Vec<String> = state
            .engine
            .list_sessions(caller)
            .into_iter()
            .map(|s| s.id)
            .collect();
        self.sandboxes.forget_all_but(&open);
        let Some(slot) = self.sandboxes.reserve() else {
            return Ok(error_result(format!(
                "this MCP session holds {} sandbox(es), the most it may; close one with \
                 sandbox_close first (or reuse one: sandbox_run_code, sandbox_shell)",
                self.sandboxes.max()
            )));
        };
        let options = SessionOptions {
            language: language.clone(),
            ..SessionOptions::default()
        };
        let opening = Opening {
            route: Some("tools/call sandbox_create"),
            noun: "sandbox(es)",
            make_room: "close one with sandbox_close first",
        };
        let snapshot = match open_session(state, caller, options, opening).await {
            Ok(snapshot) => snapshot,
            Err(error) => return Ok(error_result(error.message)),
        };
        let sandbox = Sandbox {
            id: snapshot.id.clone(),
            caller: caller.clone(),
            language: language.clone(),
        };
        let kept = if ContextKernel::for_language(&language).is_some() {
            let opts = ContextOptions {
                language: Some(language.clone()),
                ..ContextOptions::default()
            };
            match state.engine.create_context(caller, &sandbox.id, opts).await {
                Ok(context) => {
                    self.sandboxes
                        .set_context(&sandbox.id, &language, context.id);
                    "its variables persist between sandbox_run_code calls"
                }
                Err(error) => {
                    sandboxes::close(state, &sandbox, "client").await;
                    let error = engine_error(error);
                    return Ok(error_result(format!(
                        "the sandbox's {language} context could not start: {}",
                        error.message
                    )));
                }
            }
        } else {
            "each sandbox_run_code call runs as a program (only python, javascript and bash keep \
             variables between calls); files persist"
        };
        slot.done(sandbox);
        Ok(text_result(format!(
            "sandbox_id: {}\nA {language} sandbox ({kept}). Its workspace is /workspace. Close \
             it with sandbox_close when done.",
            snapshot.id
        )))
    }

    /// The context cells of `language` run in, in `sandbox`: the one made before, or a new one.
    async fn context_for(&self, sandbox: &Sandbox, language: &str) -> Result<String, EngineError> {
        let engine = &self.state.engine;
        let _making = self.sandboxes.making.lock().await;
        if let Some(id) = self.sandboxes.context(&sandbox.id, language) {
            let contexts = engine.list_contexts(&sandbox.caller, &sandbox.id)?;
            if contexts.iter().any(|c| c.id == id) {
                return Ok(id);
            }
        }
        let opts = ContextOptions {
            language: Some(language.to_string()),
            ..ContextOptions::default()
        };
        let context = engine
            .create_context(&sandbox.caller, &sandbox.id, opts)
            .await?;
        self.sandboxes
            .set_context(&sandbox.id, language, context.id.clone());
        Ok(context.id)
    }

    /// `sandbox_run_code`: a cell in the sandbox's context of the language (or, for a language
    /// without contexts, a program run in the sandbox).
    async fn run_cell(&self, caller: &Caller, args: RunCellArgs) -> Answer {
        let Some(sandbox) = self.sandboxes.get(caller, &args.sandbox_id) else {
            return Ok(unknown_sandbox(&args.sandbox_id));
        };
        let language = match &args.language {
            None => sandbox.language.clone(),
            Some(asked) => match self.language(asked) {
                Ok(language) => language,
                Err(refused) => return Ok(refused),
            },
        };
        if ContextKernel::for_language(&language).is_none() {
            let command = Command::Execute(ExecuteCommand {
                code: args.code,
                language: Some(language),
                ..ExecuteCommand::default()
            });
            return self.command(caller, &sandbox.id, command).await;
        }
        let context = match self.context_for(&sandbox, &language).await {
            Ok(context) => context,
            Err(error) => return Ok(self.sandbox_failure(&sandbox, error)),
        };
        let cell = CellRequest {
            code: args.code,
            ..CellRequest::default()
        };
        let started = Instant::now();
        // A receiver whose sender is gone never fires.
        let (_, never) = tokio::sync::oneshot::channel();
        let outcome = self
            .state
            .engine
            .run_cell(caller, &sandbox.id, &context, cell, None, never)
            .await;
        let gone = matches!(
            &outcome,
            Err(EngineError::SessionNotFound(_) | EngineError::SessionClosed { .. })
        );
        let outcome = outcome.map_err(engine_error);
        cell_accounted(
            &self.state,
            caller,
            &sandbox.id,
            started.elapsed(),
            &outcome,
        );
        match outcome {
            Ok(cell) => Ok(cell_result(&cell)),
            Err(_) if gone => {
                self.sandboxes.forget(&sandbox.id);
                Ok(unknown_sandbox(&sandbox.id))
            }
            Err(error) => Ok(error_result(error.message)),
        }
    }

    /// The answer to an engine error about `sandbox`: unknown when its session is gone.
    fn sandbox_failure(&self, sandbox: &Sandbox, error: EngineError) -> CallToolResult {
        match error {
            EngineError::SessionNotFound(_) | EngineError::SessionClosed { .. } => {
                self.sandboxes.forget(&sandbox.id);
                unknown_sandbox(&sandbox.id)
            }
            other => error_result(engine_error(other).message),
        }
    }

    /// One command in the sandbox's session, counted and written to the audit log like a
    /// `session.execute`.
    async fn command(&self, caller: &Caller, sandbox_id: &str, command: Command) -> Answer {
        let Some(sandbox) = self.sandboxes.get(caller, sandbox_id) else {
            return Ok(unknown_sandbox(sandbox_id));
        };
        let kind = command.command_type().as_str();
        let state = &self.state;
        let started = Instant::now();
        let outcome = state
            .engine
            .execute_command(caller, &sandbox.id, command, None)
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // Gone: a refusal, as for an unknown session, and not a command.
            Err(error @ (EngineError::SessionNotFound(_) | EngineError::SessionClosed { .. })) => {
                return Ok(self.sandbox_failure(&sandbox, error));
            }
            Err(error) => {
                let error = engine_error(error);
                let elapsed = started.elapsed();
                command_accounted(state, caller, &sandbox.id, kind, Err(&error), elapsed);
                return Ok(error_result(error.message));
            }
        };
        command_accounted(
            state,
            caller,
            &sandbox.id,
            kind,
            Ok(&outcome),
            started.elapsed(),
        );
        Ok(command_result(&outcome))
    }

    /// `sandbox_close`.
    async fn close(&self, caller: &Caller, sandbox_id: &str) -> Answer {
        if self.sandboxes.get(caller, sandbox_id).is_none() {
            return Ok(unknown_sandbox(sandbox_id));
        }
        let Some(sandbox) = self.sandboxes.forget(sandbox_id) else {
            return Ok(unknown_sandbox(sandbox_id));
        };
        match sandboxes::close(&self.state, &sandbox, "client").await {
            true => Ok(text_result(format!("sandbox {sandbox_id} closed"))),
            false => Ok(unknown_sandbox(sandbox_id)),
        }
    }

    /// The languages resource: every language with its version, whether it is installed, runs
    /// warm, and has a context that keeps variables.
    fn languages(&self) -> Value {
        let languages: Vec<Value> = self
            .state
            .engine
            .languages()
            .into_iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "aliases": l.aliases,
                    "version": l.version,
                    "available": l.available,
                    "reason": l.reason,
                    "warm": l.warm,
                    "compiled": l.compiled,
                    "contexts": ContextKernel::for_language(&l.name).is_some(),
                })
            })
            .collect();
        json!({ "languages": languages })
    }
}

/// Bytes of each stream (and of a file read) a tool result keeps; the rest is cut with a note.
pub const OUTPUT_MAX: usize = 32 * 1024;

/// `text` cut to at most `max` bytes (at a character boundary), with a note saying how much was
/// left out and how to see it.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}\n[... {} more bytes not shown: write the output to a file in a sandbox and read it \
         in parts, e.g. with head or tail]\n",
        &text[..end],
        text.len() - end
    ))
}

/// The text of a run's status line and streams.
fn run_text(
    status: &str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    millis: Option<u128>,
    stdout: &str,
    stderr: &str,
) -> String {
    let mut text = format!("status: {status}");
    match (exit_code, signal) {
        (Some(code), _) => text.push_str(&format!(", exit code {code}")),
        (None, Some(signal)) => text.push_str(&format!(", killed by signal {signal}")),
        (None, None) => {}
    }
    if let Some(ms) = millis {
        text.push_str(&format!(", {ms} ms"));
    }
    text.push('\n');
    for (name, stream) in [("stdout", stdout), ("stderr", stderr)] {
        if !stream.is_empty() {
            text.push_str(&format!("--- {name}\n{}", clip(stream, OUTPUT_MAX)));
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    text
}

/// What the agent should do about a run that did not end `ok`.
fn advice(verdict: Verdict, limit: Option<Duration>, message: Option<&str>) -> String {
    let why = message.map(|m| format!(" ({m})")).unwrap_or_default();
    match verdict {
        Verdict::Ok => String::new(),
        Verdict::RuntimeError => {
            "The program failed: read stderr above, fix the code and run it again.".into()
        }
        Verdict::CompileError => {
            "The code did not compile: fix the errors above and run it again.".into()
        }
        Verdict::Timeout => match limit {
            Some(limit) => format!(
                "The run was stopped at its time limit of {} ms{why}: make it faster, or give a \
                 larger timeout_ms.",
                limit.as_millis()
            ),
            None => format!("The run was stopped at its time limit{why}: make it faster."),
        },
        Verdict::MemoryLimit => {
            format!("The run was stopped: it used more memory than its limit{why}.")
        }
        Verdict::OutputLimit => {
            format!("The run was stopped: it wrote more output than its limit{why}; write less, or to a file.")
        }
        Verdict::Killed => format!("The run was killed{why}."),
        Verdict::InternalError => format!("CodeBeaker failed to run it{why}; try again."),
    }
}

/// `run_code`'s answer for a finished one-shot run.
fn one_shot_result(record: &ExecutionRecord, limit: Duration) -> CallToolResult {
    match record.status {
        ExecutionState::Queued | ExecutionState::Running => {
            return error_result(
                "the run did not end in time (the server is busy or shutting down); try again"
                    .into(),
            )
        }
        ExecutionState::Completed | ExecutionState::Failed => {}
    }
    let verdict = record.outcome.unwrap_or(Verdict::InternalError);
    let status = codebeaker_engine::wire::run_status(verdict);
    let millis = record.wall_time.map(|d| d.as_millis());
    let mut text = if verdict == Verdict::CompileError {
        // The error holds the compiler's whole output; the streams repeat it.
        let mut text = format!("status: {}\n", status.as_str());
        if let Some(error) = &record.error {
            text.push_str(&format!("--- compiler\n{}\n", clip(error, OUTPUT_MAX)));
        }
        text
    } else {
        let mut text = run_text(
            status.as_str(),
            record.exit_code,
            record.signal,
            millis,
            &record.stdout,
            &record.stderr,
        );
        if let (Some(error), Verdict::InternalError) = (&record.error, verdict) {
            text.push_str(&format!("--- error\n{error}\n"));
        }
        text
    };
    if verdict == Verdict::Ok {
        return text_result(text);
    }
    text.push_str(&advice(verdict, Some(limit), record.message.as_deref()));
    error_result(text)
}

/// A command's answer: a run's streams, a file, a listing, or what went wrong.
fn command_result(outcome: &codebeaker_engine::CommandOutcome) -> CallToolResult {
    let refused = || {
        error_result(format!(
            "{}; check the path (relative to /workspace) and try again",
            outcome.error.as_deref().unwrap_or("the command failed")
        ))
    };
    let Some(result) = &outcome.result else {
        return refused();
    };
    match result {
        CommandResult::Run(run) => {
            let status = run.status.as_str();
            let text = run_text(
                status,
                run.exit_code,
                run.signal,
                Some(u128::from(run.duration_ms)),
                &run.stdout,
                &run.stderr,
            );
            if outcome.success && status == "ok" {
                return text_result(text);
            }
            let verdict = match status {
                "timeout" => Verdict::Timeout,
                "memory_limit" => Verdict::MemoryLimit,
                "output_limit" => Verdict::OutputLimit,
                "killed" => Verdict::Killed,
                "compile_error" => Verdict::CompileError,
                "internal_error" => Verdict::InternalError,
                _ => Verdict::RuntimeError,
            };
            let mut text = text;
            text.push_str(&advice(verdict, None, run.message.as_deref()));
            error_result(text)
        }
        CommandResult::WriteFile(written) => {
            text_result(format!("wrote {} ({} bytes)", written.path, written.bytes))
        }
        CommandResult::ReadFile(file) => {
            let binary = file.encoding == codebeaker_protocol::commands::Encoding::Base64;
            let head = if binary {
                format!(
                    "{} is binary ({} bytes); its content in base64:\n",
                    file.path, file.bytes
                )
            } else {
                String::new()
            };
            text_result(format!("{head}{}", clip(&file.content, OUTPUT_MAX)))
        }
        CommandResult::ListFiles(listing) => {
            let mut text = String::new();
            for entry in &listing.entries {
                match entry.kind {
                    FileKind::Directory => text.push_str(&format!("{}/\n", entry.name)),
                    FileKind::Symlink => text.push_str(&format!("{} (symlink)\n", entry.name)),
                    _ => text.push_str(&format!("{} ({} bytes)\n", entry.name, entry.size)),
                }
            }
            if listing.entries.is_empty() {
                text.push_str(&format!("{} is empty\n", listing.path));
            }
            if listing.truncated {
                text.push_str("(the listing stops at the server's limit on entries)\n");
            }
            text_result(text)
        }
        other => text_result(serde_json::to_string(other).unwrap_or_default()),
    }
}

/// A cell's answer: its output, its results (images as image content), its error.
fn cell_result(cell: &CellOutcome) -> CallToolResult {
    let mut content = Vec::new();
    let mut text = String::new();
    let stdout = String::from_utf8_lossy(&cell.stdout);
    let stderr = String::from_utf8_lossy(&cell.stderr);
    for (name, stream) in [("stdout", &stdout), ("stderr", &stderr)] {
        if !stream.is_empty() {
            text.push_str(&format!("--- {name}\n{}", clip(stream, OUTPUT_MAX)));
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    let mut images = Vec::new();
    for result in &cell.results {
        for mime in ["image/png", "image/jpeg"] {
            if let Some(Value::String(data)) = result.data.get(mime) {
                images.push(ContentBlock::image(data.clone(), mime));
            }
        }
        match result.data.get("text/plain").and_then(Value::as_str) {
            Some(plain) => {
                let label = if result.is_main_result {
                    "result"
                } else {
                    "display"
                };
                text.push_str(&format!("--- {label}\n{}\n", clip(plain, OUTPUT_MAX)));
            }
            None => {
                let kinds: Vec<&str> = result.data.keys().map(String::as_str).collect();
                text.push_str(&format!("--- display ({})\n", kinds.join(", ")));
            }
        }
    }
    if cell.state_lost {
        text.push_str(
            "Note: the context's kernel was lost and restarted before this cell, so the \
             variables of earlier cells are gone; run the cells that define them again.\n",
        );
    }
    let failed = !cell.success();
    if let Some(error) = &cell.error {
        text.push_str(&format!("--- error\n{}: {}\n", error.name, error.value));
        if !error.traceback.is_empty() {
            text.push_str(&clip(&error.traceback, OUTPUT_MAX));
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        text.push_str("The cell raised an error: fix the code and run the cell again.");
    } else if failed {
        let status = codebeaker_engine::wire::run_status(cell.status);
        text.push_str(&format!("status: {}\n", status.as_str()));
        text.push_str(&advice(cell.status, None, cell.message.as_deref()));
    }
    if text.is_empty() {
        text.push_str("(the cell printed nothing and has no result)");
    }
    content.push(ContentBlock::text(text));
    content.extend(images);
    if failed {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .build();
        ServerConfig::new(capabilities)
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
            .with_server_info(Implementation::new(
                crate::SERVER_NAME,
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(INSTRUCTIONS)
    }

    /// The versions with an `initialize` handshake: a sandbox belongs to an MCP session, and
    /// 2026-07-28 has no sessions.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tool_list()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tool_list().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&context)?;
        let tool = request.name.to_string();
        if let Err(retry_after_ms) = self.state.limiter.check(&caller) {
            self.state.metrics.rate_limited();
            let error = crate::rate_limit::RateLimiter::error(retry_after_ms);
            audit::refused(
                &caller,
                &format!("tools/call {tool}"),
                &error,
                audit::Subject::default(),
            );
            return Ok(error_result(format!("{}; call again then", error.message)).into());
        }
        let started = Instant::now();
        let answer = self.dispatch(&caller, request).await;
        let code = answer.as_ref().err().map(|error| i64::from(error.code.0));
        self.state
            .metrics
            .rpc(mcp_label(&tool), code, started.elapsed());
        answer.map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let resource = Resource::new(LANGUAGES_URI, "languages")
            .with_title("Languages")
            .with_description(
                "The languages run_code and sandboxes run here: versions, whether each is \
                 installed, runs warm (from a pre-started interpreter), and keeps variables \
                 between sandbox_run_code calls.",
            )
            .with_mime_type("application/json");
        Ok(ListResourcesResult::with_all_items(vec![resource]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if request.uri != LANGUAGES_URI {
            return Err(McpError::resource_not_found(
                format!(
                    "no resource {}; the resource is {LANGUAGES_URI}",
                    request.uri
                ),
                None,
            ));
        }
        let text = serde_json::to_string_pretty(&self.languages())
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let contents =
            ResourceContents::text(text, LANGUAGES_URI).with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

/// The metric label of a tool call: `mcp.<tool>` for the tools, `mcp.unknown` for any other
/// name (labels take no free text from clients).
fn mcp_label(tool: &str) -> &'static str {
    match tool {
        "run_code" => "mcp.run_code",
        "sandbox_create" => "mcp.sandbox_create",
        "sandbox_run_code" => "mcp.sandbox_run_code",
        "sandbox_shell" => "mcp.sandbox_shell",
        "sandbox_write_file" => "mcp.sandbox_write_file",
        "sandbox_read_file" => "mcp.sandbox_read_file",
        "sandbox_list_dir" => "mcp.sandbox_list_dir",
        "sandbox_close" => "mcp.sandbox_close",
        _ => "mcp.unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codebeaker_protocol::contexts::{CellError, CellResult};
    use std::collections::BTreeMap;

    fn cell(results: Vec<CellResult>, error: Option<CellError>) -> CellOutcome {
        CellOutcome {
            status: if error.is_some() {
                Verdict::RuntimeError
            } else {
                Verdict::Ok
            },
            stdout: b"printed\n".to_vec(),
            stderr: Vec::new(),
            results,
            error,
            execution_count: 1,
            state_lost: false,
            generation: 1,
            truncated: false,
            message: None,
            duration: Duration::from_millis(1),
        }
    }

    fn text(result: &CallToolResult) -> String {
        serde_json::to_value(result).expect("json")["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn every_tool_is_listed_once_with_an_object_schema() {
        let tools = tool_list();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, TOOL_NAMES);
        for tool in &tools {
            assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
            for (field, spec) in tool.input_schema["properties"]
                .as_object()
                .expect("properties")
            {
                assert!(spec["description"].is_string(), "{}.{field}", tool.name);
            }
        }
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary_with_a_note() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(10);
        let cut = clip(&long, 5);
        assert!(cut.starts_with("éé\n"), "{cut}");
        assert!(cut.contains("16 more bytes not shown"), "{cut}");
    }

    #[test]
    fn a_cell_returns_its_output_result_and_images() {
        let data = BTreeMap::from([
            ("text/plain".to_string(), json!("<Figure>")),
            ("image/png".to_string(), json!("iVBORw0KGgo=")),
        ]);
        let main = CellResult {
            data: BTreeMap::from([("text/plain".to_string(), json!("42"))]),
            is_main_result: true,
        };
        let figure = CellResult {
            data,
            is_main_result: false,
        };
        let result = cell_result(&cell(vec![figure, main], None));
        assert_ne!(result.is_error, Some(true));
        let value = serde_json::to_value(&result).expect("json");
        let shown = text(&result);
        assert!(shown.contains("--- stdout\nprinted\n"), "{shown}");
        assert!(shown.contains("--- result\n42\n"), "{shown}");
        assert_eq!(value["content"][1]["type"], "image");
        assert_eq!(value["content"][1]["mimeType"], "image/png");
        assert_eq!(value["content"][1]["data"], "iVBORw0KGgo=");
    }

    #[test]
    fn an_exception_is_an_error_result_that_says_what_to_do() {
        let error = CellError {
            name: "NameError".into(),
            value: "name 'y' is not defined".into(),
            traceback: "Traceback ...".into(),
        };
        let result = cell_result(&cell(Vec::new(), Some(error)));
        assert_eq!(result.is_error, Some(true));
        let shown = text(&result);
        assert!(
            shown.contains("NameError: name 'y' is not defined"),
            "{shown}"
        );
        assert!(shown.contains("fix the code"), "{shown}");
    }

    #[test]
    fn a_timeout_names_its_limit_and_the_way_out() {
        let advice = advice(Verdict::Timeout, Some(Duration::from_millis(1500)), None);
        assert!(
            advice.contains("1500 ms") && advice.contains("timeout_ms"),
            "{advice}"
        );
    }
}
