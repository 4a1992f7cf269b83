//! Decoding a request's params into a method's params type, with `-32602` errors that say which
//! field is wrong and why.
//!
//! ```
//! use codebeaker_protocol::methods::SessionCreateParams;
//! use codebeaker_protocol::params::decode_params;
//!
//! let error = decode_params::<SessionCreateParams>("session.create", Some(serde_json::json!({})))
//!     .unwrap_err();
//! assert_eq!(error.code, -32602);
//! assert_eq!(error.message, "invalid params for session.create: missing field `language`");
//! ```

use std::cell::RefCell;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::jsonrpc::ErrorObject;
use crate::serde_util::json_kind;

/// Decodes `params` into `T` for the method named `method` (used only in messages).
///
/// Absent params decode like `{}`, so a method whose params are all optional needs none and a
/// missing required field is reported by name. Params must be an object; a one-element array
/// holding an object (by-position params with a single argument) is accepted as that object.
///
/// Errors are `-32602` with a message such as
/// ``invalid params for session.create: missing field `language` `` or
/// ``invalid params for session.execute: command: unknown command type `foo`; known types: ...``,
/// and, when the problem is inside the params, `data.field` holding the path of the field
/// (`command`, `command.args[0]`, ...).
pub fn decode_params<T: DeserializeOwned>(
    method: &str,
    params: Option<Value>,
) -> Result<T, ErrorObject> {
    decode_params_reporting(method, params).map(|(value, _)| value)
}

/// Like [`decode_params`], and also returns the paths of the fields `T` does not know (they are
/// ignored), e.g. `timout` or `command.timout`, for a warning or, in strict mode, a refusal.
///
/// Fields are found with `serde_ignored`; the fields of a command, which [`crate::commands`]
/// decodes on its own from a JSON value, are reported to the same list while the params decode
/// (a collector of this thread, since decoding is synchronous and serde passes no context down).
pub fn decode_params_reporting<T: DeserializeOwned>(
    method: &str,
    params: Option<Value>,
) -> Result<(T, Vec<String>), ErrorObject> {
    let params = match params {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(object @ Value::Object(_)) => object,
        Some(Value::Array(mut elements)) if elements.len() == 1 && elements[0].is_object() => {
            elements.remove(0)
        }
        Some(other) => {
            return Err(ErrorObject::invalid_params(format!(
                "invalid params for {method}: expected an object with named fields, got {}",
                json_kind(&other)
            )));
        }
    };
    let outer = UNKNOWN.with(|u| u.replace(Some(Vec::new())));
    let mut unknown = Vec::new();
    let decoded = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        params,
        &mut |path: serde_ignored::Path<'_>| unknown.push(path.to_string()),
    ));
    let nested = UNKNOWN.with(|u| u.replace(outer)).unwrap_or_default();
    let value = decoded.map_err(|error| invalid_params(method, &error))?;
    unknown.extend(nested);
    Ok((value, unknown))
}

thread_local! {
    /// Unknown fields met by decoders nested in [`decode_params_reporting`] on this thread.
    static UNKNOWN: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Decodes `value` into `T` as a nested decoder does, reporting the fields `T` does not know
/// (their paths under `prefix`) to the [`decode_params_reporting`] running on this thread, if any.
pub(crate) fn decode_nested<T: DeserializeOwned>(
    prefix: &str,
    value: Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    let mut unknown = Vec::new();
    let decoded = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        value,
        &mut |path: serde_ignored::Path<'_>| unknown.push(format!("{prefix}.{path}")),
    ));
    if !unknown.is_empty() {
        UNKNOWN.with(|u| {
            if let Some(list) = u.borrow_mut().as_mut() {
                list.extend(unknown);
            }
        });
    }
    decoded
}

/// The `-32602` error for unknown fields in strict mode: names the first and lists them all.
pub fn unknown_fields_error(method: &str, unknown: &[String]) -> ErrorObject {
    let names: Vec<String> = unknown.iter().map(|f| format!("`{f}`")).collect();
    ErrorObject::invalid_params(format!(
        "invalid params for {method}: unknown field{} {} (this connection is strict: send only \
         the documented fields)",
        if unknown.len() == 1 { "" } else { "s" },
        names.join(", ")
    ))
    .with_data(serde_json::json!({ "field": unknown.first() }))
}

/// The warning for fields that were ignored, for a result's `warnings`.
pub fn unknown_field_warning(field: &str) -> String {
    format!("unknown field `{field}` ignored: check its spelling against the protocol")
}

/// Turns a decode error (with its field path) into a `-32602` error; see [`decode_params`].
pub fn invalid_params(
    method: &str,
    error: &serde_path_to_error::Error<serde_json::Error>,
) -> ErrorObject {
    let path = error.path().to_string();
    let inner = error.inner();
    if path == "." {
        ErrorObject::invalid_params(format!("invalid params for {method}: {inner}"))
    } else {
        ErrorObject::invalid_params(format!("invalid params for {method}: {path}: {inner}"))
            .with_data(serde_json::json!({ "field": path }))
    }
}
