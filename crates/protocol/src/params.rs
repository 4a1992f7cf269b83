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
    serde_path_to_error::deserialize(params).map_err(|error| invalid_params(method, &error))
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
