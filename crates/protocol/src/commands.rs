//! The commands `session.execute` carries, and their results.
//!
//! A command is a JSON object whose `type` names it; the `type` member may appear anywhere in
//! the object:
//!
//! ```
//! use codebeaker_protocol::commands::{Command, WriteMode};
//!
//! let command: Command = serde_json::from_value(serde_json::json!({
//!     "path": "/workspace/input.json",
//!     "content": "{}",
//!     "mode": "Create",
//!     "type": "write_file"
//! }))
//! .unwrap();
//! let Command::WriteFile(write) = command else { unreachable!() };
//! assert_eq!(write.mode, WriteMode::Create);
//! ```
//!
//! Field names are those of the protocol (`docs/protocol.md`). The camelCase ones (`workingDirectory`, `timeoutMs`,
//! `memoryLimit`) also accept snake_case and PascalCase; the snake_case ones (`include_hidden`,
//! `max_depth`, `original_path`, `context_lines`, `target_path`, `dry_run`,
//! `requirements_file`) also accept camelCase and PascalCase; single-word fields also accept
//! PascalCase. Fields with a default also take `null` as the default. Unknown members are ignored.
//!
//! For the original .NET CodeBeaker's .NET client, `shell` also accepts `commandName` for `command`, and the type
//! names `execute_shell` and `create_directory` (an earlier version of that client) are read as
//! `shell` and `create_dir`.
//!
//! Command-level failures (a file that does not exist, a program that exits non-zero) are not
//! JSON-RPC errors: they come back in a [`crate::methods::SessionExecuteResult`] with
//! `success: false`.

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

use crate::serde_util::{
    default_true, is_false, json_kind, loose_str_enum, null_as_default, null_as_true, present_value,
};

/// The `type` of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    /// `execute`: run code in a language.
    Execute,
    /// `write_file`: write a file in the workspace.
    WriteFile,
    /// `read_file`: read a file from the workspace.
    ReadFile,
    /// `shell`: run an executable with arguments (no shell is involved).
    Shell,
    /// `create_dir`: create a directory.
    CreateDir,
    /// `delete_file`: delete a file or directory.
    DeleteFile,
    /// `copy_file`: copy a file.
    CopyFile,
    /// `list_files`: list a directory.
    ListFiles,
    /// `diff`: unified diff of two files or texts.
    Diff,
    /// `apply_patch`: apply a unified diff.
    ApplyPatch,
    /// `install_packages`: install packages with the language's package manager.
    InstallPackages,
}

impl CommandType {
    /// Every command type, in the order of the protocol's table.
    pub const ALL: [CommandType; 11] = [
        CommandType::Execute,
        CommandType::WriteFile,
        CommandType::ReadFile,
        CommandType::Shell,
        CommandType::CreateDir,
        CommandType::DeleteFile,
        CommandType::CopyFile,
        CommandType::ListFiles,
        CommandType::Diff,
        CommandType::ApplyPatch,
        CommandType::InstallPackages,
    ];

    /// The name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandType::Execute => "execute",
            CommandType::WriteFile => "write_file",
            CommandType::ReadFile => "read_file",
            CommandType::Shell => "shell",
            CommandType::CreateDir => "create_dir",
            CommandType::DeleteFile => "delete_file",
            CommandType::CopyFile => "copy_file",
            CommandType::ListFiles => "list_files",
            CommandType::Diff => "diff",
            CommandType::ApplyPatch => "apply_patch",
            CommandType::InstallPackages => "install_packages",
        }
    }

    /// The type for a name: the exact names of [`CommandType::as_str`], plus `execute_shell` and
    /// `create_directory`, which an earlier version of the original .NET client sent.
    pub fn from_name(name: &str) -> Option<CommandType> {
        match name {
            "execute_shell" => Some(CommandType::Shell),
            "create_directory" => Some(CommandType::CreateDir),
            _ => CommandType::ALL.into_iter().find(|t| t.as_str() == name),
        }
    }

    /// The known names, comma-separated, for error messages.
    pub fn known_names() -> String {
        let names: Vec<&str> = CommandType::ALL.iter().map(|t| t.as_str()).collect();
        names.join(", ")
    }
}

impl fmt::Display for CommandType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CommandType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CommandType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        CommandType::from_name(&name).ok_or_else(|| {
            de::Error::custom(format_args!(
                "unknown command type `{name}`; known types: {}",
                CommandType::known_names()
            ))
        })
    }
}

loose_str_enum! {
    /// How `write_file` writes (`mode`); any ASCII case is accepted.
    #[derive(Default)]
    pub enum WriteMode ("write mode") {
        /// `Create` (the default): create the file, or truncate and replace an existing one (the
        /// .NET `FileMode.Create` meaning the original server had).
        #[default]
        Create => "Create",
        /// `Append`: add to the end of the file, creating it if needed.
        Append => "Append",
        /// `Overwrite`: replace the file's content, creating it if needed.
        Overwrite => "Overwrite",
    }
}

loose_str_enum! {
    /// How file content is carried in JSON (`encoding`); any ASCII case is accepted, and
    /// `utf-8` too.
    #[derive(Default)]
    pub enum Encoding ("encoding") {
        /// `utf8` (the default): the content is the text itself.
        #[default]
        Utf8 => "utf8" | "utf-8",
        /// `base64`: the content is the bytes in standard base64 with padding.
        Base64 => "base64",
    }
}

fn default_dot() -> String {
    ".".to_owned()
}

fn null_as_dot<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_else(default_dot))
}

/// Default number of context lines of a `diff`.
pub const DEFAULT_CONTEXT_LINES: u32 = 3;

fn default_context_lines() -> u32 {
    DEFAULT_CONTEXT_LINES
}

fn null_as_context_lines<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(deserializer)?.unwrap_or(DEFAULT_CONTEXT_LINES))
}

/// `execute`: runs `code` in a language, as a plain script or, with `input`, as a snippet (the
/// input is bound to `input_data` and the snippet's `result` comes back as `output`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteCommand {
    /// The source code.
    #[serde(alias = "Code")]
    pub code: String,
    /// The language; the session's language when absent.
    #[serde(alias = "Language", skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Text fed to the program's standard input.
    #[serde(alias = "Stdin", skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Any JSON: makes this a snippet run with `input_data` bound to it. `null` reads as absent.
    #[serde(alias = "Input", skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Time limit in seconds; `timeoutMs` wins when both are given.
    #[serde(alias = "Timeout", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Time limit in milliseconds.
    #[serde(
        alias = "timeout_ms",
        alias = "TimeoutMs",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ms: Option<u64>,
    /// Memory limit in MB.
    #[serde(
        alias = "memory_limit",
        alias = "MemoryLimit",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_limit: Option<u64>,
    /// Send `execution.*` notifications while it runs.
    #[serde(alias = "Stream", skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

impl ExecuteCommand {
    /// The time limit in milliseconds: `timeoutMs`, else `timeout` seconds, else `None`.
    pub fn effective_timeout_ms(&self) -> Option<u64> {
        self.timeout_ms
            .or_else(|| self.timeout.map(|s| s.saturating_mul(1000)))
    }
}

/// `write_file`: writes `content` to `path`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteFileCommand {
    /// Path relative to the workspace, or starting with `/workspace/`.
    #[serde(alias = "Path")]
    pub path: String,
    /// The content, as text or base64 according to `encoding`.
    #[serde(alias = "Content")]
    pub content: String,
    /// Create (the default), Append or Overwrite.
    #[serde(default, alias = "Mode", deserialize_with = "null_as_default")]
    pub mode: WriteMode,
    /// `utf8` (the default) or `base64`.
    #[serde(default, alias = "Encoding", deserialize_with = "null_as_default")]
    pub encoding: Encoding,
}

/// `read_file`: reads the file at `path`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadFileCommand {
    /// Path relative to the workspace, or starting with `/workspace/`.
    #[serde(alias = "Path")]
    pub path: String,
    /// How to return the content; when absent the server returns text when the file is UTF-8
    /// and base64 otherwise, and says which in the result.
    #[serde(alias = "Encoding", skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

/// `shell`: runs an executable with arguments, directly (no shell parses anything).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShellCommand {
    /// The executable, looked up on the box's `PATH` when it has no `/`. The original .NET client
    /// sends it as `commandName`.
    #[serde(alias = "commandName", alias = "CommandName", alias = "Command")]
    pub command: String,
    /// Its arguments.
    #[serde(default, alias = "Args", deserialize_with = "null_as_default")]
    pub args: Vec<String>,
    /// Working directory in the workspace; the workspace root when absent.
    #[serde(
        alias = "working_directory",
        alias = "WorkingDirectory",
        skip_serializing_if = "Option::is_none"
    )]
    pub working_directory: Option<String>,
    /// Extra environment variables.
    #[serde(
        default,
        alias = "Env",
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Text fed to standard input.
    #[serde(alias = "Stdin", skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Time limit in milliseconds.
    #[serde(
        alias = "timeout_ms",
        alias = "TimeoutMs",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ms: Option<u64>,
    /// Send `execution.*` notifications while it runs.
    #[serde(alias = "Stream", skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// `create_dir`: creates a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateDirCommand {
    /// Path relative to the workspace, or starting with `/workspace/`.
    #[serde(alias = "Path")]
    pub path: String,
    /// Create missing parents too (default `true`).
    #[serde(
        default = "default_true",
        alias = "Recursive",
        deserialize_with = "null_as_true"
    )]
    pub recursive: bool,
}

/// `delete_file`: deletes a file, or a directory (recursively only when asked).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeleteFileCommand {
    /// Path relative to the workspace, or starting with `/workspace/`.
    #[serde(alias = "Path")]
    pub path: String,
    /// Delete a directory and everything in it (default `false`).
    #[serde(default, alias = "Recursive", deserialize_with = "null_as_default")]
    pub recursive: bool,
}

/// `copy_file`: copies a file within the workspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CopyFileCommand {
    /// The file to copy.
    #[serde(alias = "Source")]
    pub source: String,
    /// Where to put the copy.
    #[serde(alias = "Destination")]
    pub destination: String,
    /// Replace an existing destination (default `false`).
    #[serde(default, alias = "Overwrite", deserialize_with = "null_as_default")]
    pub overwrite: bool,
}

/// `list_files`: lists a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListFilesCommand {
    /// The directory (default `.`, the workspace root).
    #[serde(
        default = "default_dot",
        alias = "Path",
        deserialize_with = "null_as_dot"
    )]
    pub path: String,
    /// Descend into subdirectories (default `false`).
    #[serde(default, alias = "Recursive", deserialize_with = "null_as_default")]
    pub recursive: bool,
    /// Only entries whose path relative to `path` matches this glob (`*`, `?`, `**`, `[...]`).
    #[serde(alias = "Pattern", skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Include names starting with `.` (default `false`).
    #[serde(
        default,
        alias = "includeHidden",
        alias = "IncludeHidden",
        deserialize_with = "null_as_default"
    )]
    pub include_hidden: bool,
    /// How deep to descend when recursive (`1` = only `path`'s own entries); unlimited when absent.
    #[serde(
        alias = "maxDepth",
        alias = "MaxDepth",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_depth: Option<u32>,
}

impl Default for ListFilesCommand {
    fn default() -> Self {
        ListFilesCommand {
            path: default_dot(),
            recursive: false,
            pattern: None,
            include_hidden: false,
            max_depth: None,
        }
    }
}

/// `diff`: a unified diff between two sides, each a workspace file or literal text. Each side
/// needs exactly one of its path and its content; decoding checks that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffCommand {
    /// The original side as a file.
    #[serde(
        alias = "originalPath",
        alias = "OriginalPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub original_path: Option<String>,
    /// The original side as text.
    #[serde(
        alias = "originalContent",
        alias = "OriginalContent",
        skip_serializing_if = "Option::is_none"
    )]
    pub original_content: Option<String>,
    /// The modified side as a file.
    #[serde(
        alias = "modifiedPath",
        alias = "ModifiedPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub modified_path: Option<String>,
    /// The modified side as text.
    #[serde(
        alias = "modifiedContent",
        alias = "ModifiedContent",
        skip_serializing_if = "Option::is_none"
    )]
    pub modified_content: Option<String>,
    /// Lines of context around each change (default 3).
    #[serde(
        default = "default_context_lines",
        alias = "contextLines",
        alias = "ContextLines",
        deserialize_with = "null_as_context_lines"
    )]
    pub context_lines: u32,
}

/// One side of a [`DiffCommand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffSide<'a> {
    /// A file in the workspace.
    Path(&'a str),
    /// Literal text.
    Content(&'a str),
}

impl DiffCommand {
    /// The original side. Decoding guarantees exactly one of path and content; a hand-built
    /// command with both prefers the path, with neither compares against empty text.
    pub fn original(&self) -> DiffSide<'_> {
        side(&self.original_path, &self.original_content)
    }

    /// The modified side; see [`DiffCommand::original`].
    pub fn modified(&self) -> DiffSide<'_> {
        side(&self.modified_path, &self.modified_content)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, path, content) in [
            ("original", &self.original_path, &self.original_content),
            ("modified", &self.modified_path, &self.modified_content),
        ] {
            match (path, content) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "give either `{name}_path` or `{name}_content`, not both"
                    ))
                }
                (None, None) => {
                    return Err(format!("missing field `{name}_path` or `{name}_content`"))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn side<'a>(path: &'a Option<String>, content: &'a Option<String>) -> DiffSide<'a> {
    match (path, content) {
        (Some(path), _) => DiffSide::Path(path),
        (None, Some(content)) => DiffSide::Content(content),
        (None, None) => DiffSide::Content(""),
    }
}

/// `apply_patch`: applies a unified diff to workspace files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyPatchCommand {
    /// The unified diff.
    #[serde(alias = "Patch")]
    pub patch: String,
    /// Apply every file of the patch to this one file instead of the paths the patch names.
    #[serde(
        alias = "targetPath",
        alias = "TargetPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_path: Option<String>,
    /// Check that every hunk applies without changing anything (default `false`).
    #[serde(
        default,
        alias = "dryRun",
        alias = "DryRun",
        deserialize_with = "null_as_default"
    )]
    pub dry_run: bool,
    /// Leading path components to strip from the patch's file names, like `patch -p`; when
    /// absent, `a/` and `b/` prefixes are stripped.
    #[serde(alias = "Strip", skip_serializing_if = "Option::is_none")]
    pub strip: Option<u32>,
}

/// `install_packages`: installs packages with the session language's package manager.
/// Decoding checks that `packages` or `requirements_file` names something.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstallPackagesCommand {
    /// Package names (with version constraints in the manager's own syntax).
    #[serde(default, alias = "Packages", deserialize_with = "null_as_default")]
    pub packages: Vec<String>,
    /// A requirements file in the workspace (e.g. `requirements.txt`, `package.json`).
    #[serde(
        alias = "requirementsFile",
        alias = "RequirementsFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub requirements_file: Option<String>,
    /// Extra flags for the package manager.
    #[serde(default, alias = "Flags", deserialize_with = "null_as_default")]
    pub flags: Vec<String>,
    /// Send `execution.*` notifications while it runs.
    #[serde(alias = "Stream", skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// A command, tagged by `type`.
///
/// Serializes with `type` first. Deserializing accepts `type` anywhere in the object; an
/// unknown, missing or non-string `type` fails with a message that lists the known types, and
/// a bad field fails with a message naming the command type and the field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// `execute`.
    Execute(ExecuteCommand),
    /// `write_file`.
    WriteFile(WriteFileCommand),
    /// `read_file`.
    ReadFile(ReadFileCommand),
    /// `shell`.
    Shell(ShellCommand),
    /// `create_dir`.
    CreateDir(CreateDirCommand),
    /// `delete_file`.
    DeleteFile(DeleteFileCommand),
    /// `copy_file`.
    CopyFile(CopyFileCommand),
    /// `list_files`.
    ListFiles(ListFilesCommand),
    /// `diff`.
    Diff(DiffCommand),
    /// `apply_patch`.
    ApplyPatch(ApplyPatchCommand),
    /// `install_packages`.
    InstallPackages(InstallPackagesCommand),
}

/// Why a JSON value is not a valid command. The message says which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandDecodeError {
    /// The explanation, e.g. ``unknown command type `foo`; known types: execute, ...``.
    pub message: String,
}

impl CommandDecodeError {
    fn new(message: String) -> Self {
        CommandDecodeError { message }
    }
}

fn decode_fields<T: DeserializeOwned>(
    kind: CommandType,
    fields: Value,
) -> Result<T, CommandDecodeError> {
    crate::params::decode_nested("command", fields).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            CommandDecodeError::new(format!("{kind}: {inner}"))
        } else {
            CommandDecodeError::new(format!("{kind}.{path}: {inner}"))
        }
    })
}

impl Command {
    /// This command's `type`.
    pub fn command_type(&self) -> CommandType {
        match self {
            Command::Execute(_) => CommandType::Execute,
            Command::WriteFile(_) => CommandType::WriteFile,
            Command::ReadFile(_) => CommandType::ReadFile,
            Command::Shell(_) => CommandType::Shell,
            Command::CreateDir(_) => CommandType::CreateDir,
            Command::DeleteFile(_) => CommandType::DeleteFile,
            Command::CopyFile(_) => CommandType::CopyFile,
            Command::ListFiles(_) => CommandType::ListFiles,
            Command::Diff(_) => CommandType::Diff,
            Command::ApplyPatch(_) => CommandType::ApplyPatch,
            Command::InstallPackages(_) => CommandType::InstallPackages,
        }
    }

    /// True when the command itself asks for streaming (`"stream": true` on `execute`, `shell`
    /// or `install_packages`).
    pub fn wants_stream(&self) -> bool {
        match self {
            Command::Execute(c) => c.stream,
            Command::Shell(c) => c.stream,
            Command::InstallPackages(c) => c.stream,
            _ => None,
        }
        .unwrap_or(false)
    }

    /// Decodes a command from a JSON value; see [`Command`].
    pub fn from_value(value: Value) -> Result<Command, CommandDecodeError> {
        let known = CommandType::known_names;
        let Value::Object(mut fields) = value else {
            return Err(CommandDecodeError::new(format!(
                "expected a command object with a `type`, got {}; known types: {}",
                json_kind(&value),
                known()
            )));
        };
        let name = match fields.remove("type") {
            Some(Value::String(name)) => name,
            Some(other) => {
                return Err(CommandDecodeError::new(format!(
                    "`type` must be a string, got {}; known types: {}",
                    json_kind(&other),
                    known()
                )))
            }
            None => {
                return Err(CommandDecodeError::new(format!(
                    "missing field `type`; known types: {}",
                    known()
                )))
            }
        };
        let Some(kind) = CommandType::from_name(&name) else {
            return Err(CommandDecodeError::new(format!(
                "unknown command type `{name}`; known types: {}",
                known()
            )));
        };
        let fields = Value::Object(fields);
        let command = match kind {
            CommandType::Execute => Command::Execute(decode_fields(kind, fields)?),
            CommandType::WriteFile => Command::WriteFile(decode_fields(kind, fields)?),
            CommandType::ReadFile => Command::ReadFile(decode_fields(kind, fields)?),
            CommandType::Shell => Command::Shell(decode_fields(kind, fields)?),
            CommandType::CreateDir => Command::CreateDir(decode_fields(kind, fields)?),
            CommandType::DeleteFile => Command::DeleteFile(decode_fields(kind, fields)?),
            CommandType::CopyFile => Command::CopyFile(decode_fields(kind, fields)?),
            CommandType::ListFiles => Command::ListFiles(decode_fields(kind, fields)?),
            CommandType::Diff => {
                let diff: DiffCommand = decode_fields(kind, fields)?;
                diff.validate()
                    .map_err(|reason| CommandDecodeError::new(format!("{kind}: {reason}")))?;
                Command::Diff(diff)
            }
            CommandType::ApplyPatch => Command::ApplyPatch(decode_fields(kind, fields)?),
            CommandType::InstallPackages => {
                let install: InstallPackagesCommand = decode_fields(kind, fields)?;
                if install.packages.is_empty() && install.requirements_file.is_none() {
                    return Err(CommandDecodeError::new(format!(
                        "{kind}: give `packages` or `requirements_file`"
                    )));
                }
                Command::InstallPackages(install)
            }
        };
        Ok(command)
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Command::from_value(value).map_err(de::Error::custom)
    }
}

loose_str_enum! {
    /// Why a run ended (`status` of a [`RunResult`]). Users never have to guess.
    pub enum RunStatus ("run status") {
        /// `ok`: exited with code 0.
        Ok => "ok",
        /// `runtime_error`: exited non-zero, or died of a signal such as SIGSEGV.
        RuntimeError => "runtime_error",
        /// `compile_error`: the program did not compile.
        CompileError => "compile_error",
        /// `timeout`: wall-clock or CPU time ran out.
        Timeout => "timeout",
        /// `memory_limit`: the memory limit was hit.
        MemoryLimit => "memory_limit",
        /// `output_limit`: stdout and stderr together exceeded the output limit.
        OutputLimit => "output_limit",
        /// `killed`: killed from outside (cancelled, or a SIGKILL no limit explains).
        Killed => "killed",
        /// `internal_error`: CodeBeaker itself failed; `message` says what happened.
        InternalError => "internal_error",
    }
}

/// The result of running a program (`execute`, `shell`, `install_packages`, `execution.run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// Captured standard output (base64 when `stdoutEncoding` says so).
    pub stdout: String,
    /// Captured standard error (base64 when `stderrEncoding` says so).
    pub stderr: String,
    /// `base64` when stdout was not UTF-8; omitted for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_encoding: Option<Encoding>,
    /// `base64` when stderr was not UTF-8; omitted for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_encoding: Option<Encoding>,
    /// Exit code when the program exited normally, else `null`.
    pub exit_code: Option<i32>,
    /// Signal number when the program was killed by a signal, else `null`.
    pub signal: Option<i32>,
    /// Why the run ended.
    pub status: RunStatus,
    /// A time limit ran out (`status` is `timeout`).
    pub timed_out: bool,
    /// The memory limit was hit (`status` is `memory_limit`).
    pub oom_killed: bool,
    /// Output was cut at the output limit.
    pub truncated: bool,
    /// Wall-clock time in milliseconds.
    pub duration_ms: u64,
    /// CPU time (user + system) in milliseconds.
    pub cpu_time_ms: u64,
    /// Peak memory in bytes, `null` when the kernel does not report it.
    pub peak_memory_bytes: Option<u64>,
    /// The JSON value a snippet left in `result`; omitted for plain scripts. A snippet whose
    /// result is `null` gives `"output": null`.
    #[serde(
        default,
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<Value>,
    /// A short explanation for `timeout`, `memory_limit`, `output_limit`, `internal_error`;
    /// omitted when there is nothing to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Milliseconds spent compiling (0 when the compile cache had the program); absent for
    /// interpreted languages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_ms: Option<u64>,
    /// Whether the compiled program came from the compile cache; absent for interpreted
    /// languages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_cache_hit: Option<bool>,
}

/// Result of `write_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileResult {
    /// The path as given.
    pub path: String,
    /// Bytes written (after base64 decoding).
    pub bytes: u64,
}

/// Result of `read_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileResult {
    /// The path as given.
    pub path: String,
    /// The content, as text or base64 according to `encoding`.
    pub content: String,
    /// How `content` is encoded.
    pub encoding: Encoding,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// Result of `create_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateDirResult {
    /// The path as given.
    pub path: String,
}

/// Result of `delete_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteFileResult {
    /// The path as given.
    pub path: String,
    /// Something was deleted.
    pub deleted: bool,
}

/// Result of `copy_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyFileResult {
    /// The source as given.
    pub source: String,
    /// The destination as given.
    pub destination: String,
}

loose_str_enum! {
    /// What a directory entry is.
    pub enum FileKind ("file type") {
        /// `file`: a regular file.
        File => "file",
        /// `directory`.
        Directory => "directory" | "dir",
        /// `symlink`: a symbolic link (never followed).
        Symlink => "symlink",
        /// `other`: a FIFO, socket or device.
        Other => "other",
    }
}

/// One entry of a `list_files` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file name.
    pub name: String,
    /// The path relative to the workspace root.
    pub path: String,
    /// `file`, `directory`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, RFC 3339 in UTC (`2025-10-27T10:00:00Z`).
    pub modified: Option<String>,
}

/// Result of `list_files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilesResult {
    /// The directory as given.
    pub path: String,
    /// The entries, breadth-first: the directory's own entries by name, then those of each
    /// subdirectory in turn.
    pub entries: Vec<FileEntry>,
    /// The listing stopped at the server's limit on entries.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// Result of `diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffResult {
    /// The unified diff; empty when the sides are identical.
    pub diff: String,
    /// Lines added.
    pub additions: u64,
    /// Lines removed.
    pub deletions: u64,
    /// The two sides are the same.
    pub identical: bool,
}

/// One hunk that `apply_patch` could not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HunkFailure {
    /// The file the hunk is for.
    pub path: String,
    /// The hunk's number within its file, from 1.
    pub hunk: u32,
    /// Why it failed, e.g. that its context does not match.
    pub reason: String,
}

/// Result of `apply_patch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyPatchResult {
    /// Files changed (or, for a dry run, that would be).
    pub files: Vec<String>,
    /// Hunks applied.
    pub hunks_applied: u32,
    /// Hunks that failed.
    pub hunks_failed: u32,
    /// Nothing was written.
    pub dry_run: bool,
    /// Why each failed hunk failed.
    #[serde(default)]
    pub failures: Vec<HunkFailure>,
}

/// The `result` of a command, typed. Serializes as the inner result's own object.
///
/// Results are not self-describing (`create_dir`'s `{path}` also fits other shapes), so a client
/// decodes one with [`CommandResult::decode`], knowing which command it sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CommandResult {
    /// `execute`, `shell` and `install_packages`.
    Run(RunResult),
    /// `write_file`.
    WriteFile(WriteFileResult),
    /// `read_file`.
    ReadFile(ReadFileResult),
    /// `create_dir`.
    CreateDir(CreateDirResult),
    /// `delete_file`.
    DeleteFile(DeleteFileResult),
    /// `copy_file`.
    CopyFile(CopyFileResult),
    /// `list_files`.
    ListFiles(ListFilesResult),
    /// `diff`.
    Diff(DiffResult),
    /// `apply_patch`.
    ApplyPatch(ApplyPatchResult),
}

impl CommandResult {
    /// Decodes the `result` of a command of type `kind`.
    pub fn decode(kind: CommandType, value: Value) -> Result<CommandResult, serde_json::Error> {
        use serde_json::from_value;
        Ok(match kind {
            CommandType::Execute | CommandType::Shell | CommandType::InstallPackages => {
                CommandResult::Run(from_value(value)?)
            }
            CommandType::WriteFile => CommandResult::WriteFile(from_value(value)?),
            CommandType::ReadFile => CommandResult::ReadFile(from_value(value)?),
            CommandType::CreateDir => CommandResult::CreateDir(from_value(value)?),
            CommandType::DeleteFile => CommandResult::DeleteFile(from_value(value)?),
            CommandType::CopyFile => CommandResult::CopyFile(from_value(value)?),
            CommandType::ListFiles => CommandResult::ListFiles(from_value(value)?),
            CommandType::Diff => CommandResult::Diff(from_value(value)?),
            CommandType::ApplyPatch => CommandResult::ApplyPatch(from_value(value)?),
        })
    }
}
