//! envd's `filesystem.Filesystem` service over the engine's file commands: `Stat`, `ListDir`
//! (with `depth`), `MakeDir`, `Move` and `Remove`. Paths are the workspace's (relative, or
//! absolute under `/workspace`), resolved by the engine's one path resolver. Watching a
//! directory needs events from the box, which the engine does not give yet: the watch methods
//! answer `unimplemented`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use codebeaker_protocol::commands::{
    Command, CommandResult, CreateDirCommand, DeleteFileCommand, FileEntry, FileKind,
    ListFilesCommand, ShellCommand,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, Code, ConnectError};
use super::{refusal, E2b, EnvdError, Sandbox};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PathRequest {
    path: String,
    depth: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MoveRequest {
    source: String,
    destination: String,
}

/// `POST /filesystem.Filesystem/{method}`.
pub(crate) async fn call(
    State(e2b): State<Arc<E2b>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sandbox = match e2b.envd_sandbox(&headers, "/filesystem.Filesystem") {
        Ok(sandbox) => sandbox,
        Err(error) => return error.into_response(),
    };
    let result = match method.as_str() {
        "Stat" => match connect::decode_unary::<PathRequest>(&body) {
            Ok(r) => stat(&e2b, &sandbox, &r.path)
                .await
                .map(|entry| json!({ "entry": entry })),
            Err(error) => Err(error.into()),
        },
        "ListDir" => match connect::decode_unary::<PathRequest>(&body) {
            Ok(r) => list_dir(&e2b, &sandbox, &r.path, r.depth.unwrap_or(1)).await,
            Err(error) => Err(error.into()),
        },
        "MakeDir" => match connect::decode_unary::<PathRequest>(&body) {
            Ok(r) => make_dir(&e2b, &sandbox, &r.path).await,
            Err(error) => Err(error.into()),
        },
        "Move" => match connect::decode_unary::<MoveRequest>(&body) {
            Ok(r) => rename(&e2b, &sandbox, &r.source, &r.destination).await,
            Err(error) => Err(error.into()),
        },
        "Remove" => match connect::decode_unary::<PathRequest>(&body) {
            Ok(r) => remove(&e2b, &sandbox, &r.path).await,
            Err(error) => Err(error.into()),
        },
        "WatchDir" => {
            return connect::stream_error(&ConnectError::unimplemented(
                "watching a directory",
                "the box does not report file events yet",
            ))
        }
        "CreateWatcher" | "GetWatcherEvents" | "RemoveWatcher" => Err(ConnectError::unimplemented(
            "watching a directory",
            "the box does not report file events yet",
        )
        .into()),
        other => Err(ConnectError::new(
            Code::Unimplemented,
            format!("filesystem.Filesystem/{other} is not a method of this server"),
        )
        .into()),
    };
    match result {
        Ok(message) => connect::unary(message),
        Err(error) => error.into_response(),
    }
}

/// An engine file entry as envd's `EntryInfo`.
fn entry_info(entry: &FileEntry) -> Value {
    let kind = match entry.kind {
        FileKind::Directory => "FILE_TYPE_DIRECTORY",
        FileKind::File => "FILE_TYPE_FILE",
        _ => "FILE_TYPE_UNSPECIFIED",
    };
    let mut info = json!({
        "name": entry.name,
        "type": kind,
        "path": entry.path,
        "size": entry.size,
        "isSymlink": entry.kind == FileKind::Symlink,
    });
    if let Some(modified) = &entry.modified {
        info["modifiedTime"] = json!(modified);
    }
    info
}

/// Lists `path` (`depth` levels), or says why not.
async fn list(
    e2b: &E2b,
    sandbox: &Sandbox,
    path: &str,
    depth: u32,
) -> Result<Result<Vec<FileEntry>, String>, EnvdError> {
    let command = Command::ListFiles(ListFilesCommand {
        path: if path.is_empty() {
            ".".into()
        } else {
            path.into()
        },
        recursive: depth > 1,
        pattern: None,
        include_hidden: true,
        max_depth: Some(depth.max(1)),
    });
    let outcome = e2b.run(sandbox, command, None).await?;
    Ok(match outcome.result {
        Some(CommandResult::ListFiles(listed)) => Ok(listed.entries),
        _ => Err(outcome.error.unwrap_or_else(|| "listing failed".into())),
    })
}

/// `Stat`: a directory is one that can be listed; anything else is found in its parent's list.
async fn stat(e2b: &E2b, sandbox: &Sandbox, path: &str) -> Result<Value, EnvdError> {
    let resolved = codebeaker_engine::paths::resolve(if path.is_empty() { "." } else { path })
        .map_err(|e| ConnectError::invalid(e.to_string()))?;
    if resolved.is_root() {
        return Ok(json!({
            "name": "workspace",
            "type": "FILE_TYPE_DIRECTORY",
            "path": resolved.absolute(),
        }));
    }
    let relative = resolved.relative();
    let (parent, name) = match relative.rsplit_once('/') {
        Some((parent, name)) => (parent.to_string(), name.to_string()),
        None => (".".to_string(), relative.to_string()),
    };
    match list(e2b, sandbox, &parent, 1).await? {
        Ok(entries) => entries
            .iter()
            .find(|e| e.name == name)
            .map(entry_info)
            .ok_or_else(|| {
                ConnectError::new(
                    Code::NotFound,
                    format!("{}: no such file or directory", resolved.absolute()),
                )
                .into()
            }),
        Err(why) => Err(refusal(&why).into()),
    }
}

async fn list_dir(
    e2b: &E2b,
    sandbox: &Sandbox,
    path: &str,
    depth: u32,
) -> Result<Value, EnvdError> {
    match list(e2b, sandbox, path, depth).await? {
        Ok(mut entries) => {
            // envd walks the tree depth-first (a directory's contents right after it, each
            // directory's entries by name); the engine lists breadth-first.
            entries.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
            let entries: Vec<Value> = entries.iter().map(entry_info).collect();
            Ok(json!({ "entries": entries }))
        }
        Err(why) => Err(refusal(&why).into()),
    }
}

/// `MakeDir`: creates the directory and its parents; `already_exists` when it is there.
async fn make_dir(e2b: &E2b, sandbox: &Sandbox, path: &str) -> Result<Value, EnvdError> {
    match stat(e2b, sandbox, path).await {
        Ok(_) => {
            return Err(
                ConnectError::new(Code::AlreadyExists, format!("{path}: already exists")).into(),
            )
        }
        Err(EnvdError::Connect(ConnectError {
            code: Code::NotFound,
            ..
        })) => {}
        Err(error) => return Err(error),
    }
    let command = Command::CreateDir(CreateDirCommand {
        path: path.to_string(),
        recursive: true,
    });
    let outcome = e2b.run(sandbox, command, None).await?;
    if !outcome.success {
        return Err(refusal(outcome.error.as_deref().unwrap_or("mkdir failed")).into());
    }
    Ok(json!({ "entry": stat(e2b, sandbox, path).await? }))
}

/// `Move`: `mv -T` inside the box (it replaces a file at the destination, as envd's rename does).
async fn rename(
    e2b: &E2b,
    sandbox: &Sandbox,
    source: &str,
    destination: &str,
) -> Result<Value, EnvdError> {
    let resolve = |p: &str| {
        codebeaker_engine::paths::resolve(p)
            .map(|p| p.absolute())
            .map_err(|e| EnvdError::from(ConnectError::invalid(e.to_string())))
    };
    let (from, to) = (resolve(source)?, resolve(destination)?);
    let command = Command::Shell(ShellCommand {
        command: "mv".into(),
        args: vec!["-T".into(), "--".into(), from, to.clone()],
        ..ShellCommand::default()
    });
    let outcome = e2b.run(sandbox, command, None).await?;
    if !outcome.success {
        let why = outcome
            .run()
            .map(|r| r.stderr.trim().to_string())
            .filter(|s| !s.is_empty())
            .or(outcome.error)
            .unwrap_or_else(|| "rename failed".into());
        return Err(refusal(&why).into());
    }
    Ok(json!({ "entry": stat(e2b, sandbox, &to).await? }))
}

/// `Remove`: a file, or a directory with everything in it. As envd's, it removes what is there
/// the way `rm -rf` does: a path that does not exist is no error.
async fn remove(e2b: &E2b, sandbox: &Sandbox, path: &str) -> Result<Value, EnvdError> {
    let command = Command::DeleteFile(DeleteFileCommand {
        path: path.to_string(),
        recursive: true,
    });
    let outcome = e2b.run(sandbox, command, None).await?;
    if !outcome.success {
        let error = refusal(outcome.error.as_deref().unwrap_or("remove failed"));
        if error.code != Code::NotFound {
            return Err(error.into());
        }
    }
    Ok(json!({}))
}
