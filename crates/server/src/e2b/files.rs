//! envd's `/files`: `GET` downloads one file as raw bytes, `POST` uploads files, as
//! `multipart/form-data` (a `file` part per file, its file name the path) or as one
//! `application/octet-stream` body with `?path=`, gzip-compressed when `Content-Encoding: gzip`
//! says so (downloads are compressed for `Accept-Encoding: gzip`). Parent directories are
//! created as envd does. A compressed upload is inflated only up to the engine's largest write.
//! Errors are `{"code": <status>, "message": ...}`: 404 for a missing file, 400 for a path the
//! workspace refuses, 502 for a gone sandbox.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use codebeaker_protocol::commands::{
    Command, CommandResult, CreateDirCommand, Encoding, ReadFileCommand, WriteFileCommand,
    WriteMode,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{Code, ConnectError};
use super::{plain_error, refusal, E2b, EnvdError, Sandbox};

/// Files one multipart upload may carry (each is written by its own engine commands).
const MAX_FILES_PER_UPLOAD: usize = 1000;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FilesQuery {
    path: Option<String>,
    /// Accepted and not used: every command runs as the box's one user.
    #[allow(dead_code)]
    username: Option<String>,
}

/// An envd error in the shape of the `/files` endpoints.
fn files_error(error: EnvdError) -> Response {
    match error {
        EnvdError::Gone(id) => super::gone(&id),
        EnvdError::Connect(error) => {
            let status = match error.code {
                Code::NotFound => StatusCode::NOT_FOUND,
                Code::AlreadyExists => StatusCode::CONFLICT,
                Code::PermissionDenied => StatusCode::FORBIDDEN,
                Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
                _ => StatusCode::BAD_REQUEST,
            };
            plain_error(status, &error.message)
        }
    }
}

/// `GET /files?path=`: the file's bytes.
pub(crate) async fn download(
    State(e2b): State<Arc<E2b>>,
    query: Result<Query<FilesQuery>, QueryRejection>,
    request: Request,
) -> Response {
    let sandbox = match e2b.envd_sandbox(request.headers(), "/files") {
        Ok(sandbox) => sandbox,
        Err(error) => return files_error(error),
    };
    let Some(path) = query
        .ok()
        .and_then(|Query(q)| q.path)
        .filter(|p| !p.is_empty())
    else {
        return files_error(ConnectError::invalid("the path query parameter is required").into());
    };
    let gzip = request
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let bytes = match read(&e2b, &sandbox, &path).await {
        Ok(bytes) => bytes,
        Err(error) => return files_error(error),
    };
    if !gzip {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response();
    }
    match tokio::task::spawn_blocking(move || compress(&bytes)).await {
        Ok(Ok(compressed)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            compressed,
        )
            .into_response(),
        Ok(Err(e)) => files_error(
            ConnectError::new(Code::Internal, format!("compressing {path}: {e}")).into(),
        ),
        Err(e) => files_error(
            ConnectError::new(Code::Internal, format!("compressing {path}: {e}")).into(),
        ),
    }
}

fn compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}

/// Inflates a gzip upload, refusing one that inflates past `max` bytes.
fn inflate(data: &[u8], max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("the upload is not valid gzip: {e}"))?;
    if out.len() as u64 > max {
        return Err(format!(
            "the upload inflates past the {max}-byte limit for one file"
        ));
    }
    Ok(out)
}

async fn read(e2b: &E2b, sandbox: &Sandbox, path: &str) -> Result<Vec<u8>, EnvdError> {
    let command = Command::ReadFile(ReadFileCommand {
        path: path.to_string(),
        encoding: Some(Encoding::Base64),
    });
    let outcome = e2b.run(sandbox, command, None).await?;
    match outcome.result {
        Some(CommandResult::ReadFile(file)) => {
            let content = match file.encoding {
                Encoding::Base64 => base64::engine::general_purpose::STANDARD
                    .decode(file.content.as_bytes())
                    .map_err(|e| {
                        ConnectError::new(Code::Internal, format!("reading {path}: {e}"))
                    })?,
                _ => file.content.into_bytes(),
            };
            Ok(content)
        }
        _ => Err(refusal(outcome.error.as_deref().unwrap_or("reading failed")).into()),
    }
}

/// `POST /files`: writes each uploaded file; answers `[{path, name, type}]`.
pub(crate) async fn upload(
    State(e2b): State<Arc<E2b>>,
    query: Result<Query<FilesQuery>, QueryRejection>,
    request: Request,
) -> Response {
    let sandbox = match e2b.envd_sandbox(request.headers(), "/files") {
        Ok(sandbox) => sandbox,
        Err(error) => return files_error(error),
    };
    let query_path = query
        .ok()
        .and_then(|Query(q)| q.path)
        .filter(|p| !p.is_empty());
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let gzip = match request
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or_default().trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e == "identity" => false,
        Some(e) if e == "gzip" && !content_type.starts_with("multipart/") => true,
        Some(e) => {
            return files_error(
                ConnectError::invalid(format!(
                    "Content-Encoding {e:?} is not accepted here: gzip an octet-stream upload, or send it uncompressed"
                ))
                .into(),
            )
        }
    };
    let mut uploads: Vec<(String, Vec<u8>)> = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = match Multipart::from_request(request, &()).await {
            Ok(multipart) => multipart,
            Err(e) => return files_error(ConnectError::invalid(e.body_text()).into()),
        };
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return files_error(ConnectError::invalid(e.body_text()).into()),
            };
            if field.name() != Some("file") {
                continue;
            }
            if uploads.len() >= MAX_FILES_PER_UPLOAD {
                return files_error(
                    ConnectError::invalid(format!(
                        "an upload may carry at most {MAX_FILES_PER_UPLOAD} files; split it"
                    ))
                    .into(),
                );
            }
            let name = field.file_name().map(str::to_string);
            let data = match field.bytes().await {
                Ok(data) => data.to_vec(),
                Err(e) => return files_error(ConnectError::invalid(e.body_text()).into()),
            };
            uploads.push((name.unwrap_or_default(), data));
        }
        // One file with `?path=`: the query names it (as envd does).
        if let ([(name, _)], Some(path)) = (uploads.as_mut_slice(), &query_path) {
            *name = path.clone();
        }
    } else {
        let Some(path) = query_path else {
            return files_error(
                ConnectError::invalid("the path query parameter is required").into(),
            );
        };
        let limit = e2b.state.config.max_message_bytes;
        match axum::body::to_bytes(request.into_body(), limit).await {
            Ok(data) if gzip => {
                let max = e2b.state.engine.config().files.max_write_bytes;
                match tokio::task::spawn_blocking(move || inflate(&data, max)).await {
                    Ok(Ok(data)) => uploads.push((path, data)),
                    Ok(Err(why)) => return files_error(ConnectError::invalid(why).into()),
                    Err(e) => {
                        return files_error(ConnectError::new(Code::Internal, e.to_string()).into())
                    }
                }
            }
            Ok(data) => uploads.push((path, data.to_vec())),
            Err(e) => {
                return files_error(
                    ConnectError::invalid(format!("reading the upload: {e}")).into(),
                )
            }
        }
    }
    if uploads.is_empty() {
        return files_error(
            ConnectError::invalid("no file in the upload (a multipart `file` part)").into(),
        );
    }
    let mut written = Vec::new();
    for (path, data) in uploads {
        if path.is_empty() {
            return files_error(ConnectError::invalid("an uploaded file has no path").into());
        }
        match write(&e2b, &sandbox, &path, &data).await {
            Ok(info) => written.push(info),
            Err(error) => return files_error(error),
        }
    }
    Json(written).into_response()
}

/// Writes one file, creating its parent directories first.
pub(crate) async fn write(
    e2b: &E2b,
    sandbox: &Sandbox,
    path: &str,
    data: &[u8],
) -> Result<Value, EnvdError> {
    let resolved = codebeaker_engine::paths::resolve(path)
        .map_err(|e| ConnectError::invalid(e.to_string()))?;
    if let Some((parent, _)) = resolved.relative().rsplit_once('/') {
        let command = Command::CreateDir(CreateDirCommand {
            path: parent.to_string(),
            recursive: true,
        });
        let outcome = e2b.run(sandbox, command, None).await?;
        if !outcome.success {
            return Err(refusal(outcome.error.as_deref().unwrap_or("mkdir failed")).into());
        }
    }
    let command = Command::WriteFile(WriteFileCommand {
        path: path.to_string(),
        content: base64::engine::general_purpose::STANDARD.encode(data),
        mode: WriteMode::default(),
        encoding: Encoding::Base64,
    });
    let outcome = e2b.run(sandbox, command, None).await?;
    match outcome.result {
        Some(CommandResult::WriteFile(file)) => Ok(json!({
            "path": file.path,
            "name": resolved.file_name(),
            "type": "file",
        })),
        _ => Err(refusal(outcome.error.as_deref().unwrap_or("writing failed")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips_and_bombs_are_refused() {
        let data = b"some text, some text, some text".repeat(100);
        let compressed = compress(&data).expect("compress");
        assert!(compressed.len() < data.len());
        assert_eq!(inflate(&compressed, 1 << 20).expect("inflate"), data);
        let error = inflate(&compressed, 100).expect_err("past the limit");
        assert!(error.contains("100-byte limit"), "{error}");
        assert!(inflate(b"not gzip", 100).is_err());
    }
}
