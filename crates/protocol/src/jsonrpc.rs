//! The JSON-RPC 2.0 envelope: ids, requests, responses, errors, notifications, and the decoding
//! of whole WebSocket text frames.
//!
//! # Frames
//!
//! A text frame from a client holds one of:
//!
//! - a single message: `{"jsonrpc":"2.0","id":1,"method":"...","params":{...}}`
//!   ([`FrameKind::Single`]);
//! - a batch array of messages ([`FrameKind::Batch`]); an empty batch is itself an invalid request
//!   and gets one error response (not an array), as JSON-RPC 2.0 requires;
//! - several messages one after another, separated by `\n` (the .NET client appends `\n` to every
//!   message) ([`FrameKind::Lines`]). Blank lines and a trailing `\n` or `\r\n` are fine. A batch
//!   array cannot be one of several messages in a frame: send it as a frame of its own.
//!
//! [`parse_frame`] never fails and never panics: anything that is not a valid request becomes an
//! [`Incoming::Invalid`] holding the error response to send back (`-32700` with id `null` for text
//! that is not JSON, `-32600` for JSON that is not a request, with the request's id when it could
//! be read). A notification (no `id`, or `"id": null`) is run but answered only when it is
//! malformed. The server answers with [`FrameKind::encode`]: one frame per response for
//! [`FrameKind::Single`] and [`FrameKind::Lines`] (each may go out as soon as it is ready), one
//! array frame for a [`FrameKind::Batch`] (nothing at all when the batch held only notifications).

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use std::fmt;

use crate::serde_util::json_kind;

/// The `jsonrpc` member: always the string `"2.0"`. Deserializing anything else fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Version;

impl Version {
    /// The only version there is.
    pub const STR: &'static str = "2.0";
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(Self::STR)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        if text == Self::STR {
            Ok(Version)
        } else {
            Err(de::Error::custom(format_args!(
                "`jsonrpc` must be \"2.0\", got {text:?}"
            )))
        }
    }
}

/// A request id: a number or a string, echoed back exactly as received.
///
/// Numbers keep their JSON form: `1` stays `1` and `"1"` stays `"1"`. Integers (up to 64 bits)
/// round-trip digit for digit; a request's id that a 64-bit integer cannot hold (a fraction, an
/// exponent, more digits: JSON-RPC discourages them) is kept as the text it came as
/// ([`Id::Exact`]), so `1e3` comes back `1e3`, never `1000.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A numeric id.
    Number(Number),
    /// A string id.
    String(String),
    /// `"id": null`: JSON-RPC 2.0 discourages it, but a request that has it is still answered
    /// (with `"id": null`); only a request without `id` is a notification.
    Null,
    /// A numeric id as the JSON text it came as (`1e3`, `1.50`, `123456789012345678901`), echoed
    /// as that text; made by [`parse_frame`] for numbers [`Id::Number`] would not give back
    /// digit for digit.
    #[serde(skip_deserializing, serialize_with = "raw_number")]
    Exact(String),
}

/// Writes [`Id::Exact`]'s text as the JSON number it is.
fn raw_number<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::value::RawValue::from_string(text.to_owned())
        .map_err(serde::ser::Error::custom)?
        .serialize(serializer)
}

impl Id {
    /// The id as a whole number, when it is one (also a string of digits, as some clients send
    /// the numbers they count their requests with).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Id::Number(n) => n.as_u64(),
            Id::String(s) | Id::Exact(s) => s.trim().parse().ok(),
            Id::Null => None,
        }
    }

    /// Reads an id from a JSON value: `None` for any type an id cannot have (boolean, array,
    /// object).
    fn from_json(value: &Value) -> Option<Id> {
        match value {
            Value::Null => Some(Id::Null),
            Value::Number(n) => Some(Id::Number(n.clone())),
            Value::String(s) => Some(Id::String(s.clone())),
            _ => None,
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
            Id::Null => f.write_str("null"),
            Id::Exact(text) => f.write_str(text),
        }
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Number(n.into())
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id::Number(n.into())
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::String(s)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::String(s.to_owned())
    }
}

/// The error codes CodeBeaker uses, with their numbers on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `-32700`: the frame is not valid JSON. The response's id is `null`.
    ParseError,
    /// `-32600`: valid JSON but not a valid request (wrong `jsonrpc`, missing `method`, ...).
    InvalidRequest,
    /// `-32601`: no method of that name.
    MethodNotFound,
    /// `-32602`: the params do not fit the method; the message says which field and why.
    InvalidParams,
    /// `-32603`: the server failed; `data.errorId` also appears in the server's log.
    InternalError,
    /// `-32001`: no such session (or not visible to this caller).
    SessionNotFound,
    /// `-32002`: a limit was reached (max sessions, max queued work): retry later.
    LimitReached,
    /// `-32003`: the language is not offered by this server.
    UnsupportedLanguage,
    /// `-32004`: the caller is not authenticated or not allowed to do this.
    Unauthorized,
    /// `-32005`: too many requests; `data.retryAfterMs` says when to retry.
    RateLimited,
}

impl ErrorCode {
    /// Every code, in the order of the protocol's table.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::ParseError,
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
        ErrorCode::InternalError,
        ErrorCode::SessionNotFound,
        ErrorCode::LimitReached,
        ErrorCode::UnsupportedLanguage,
        ErrorCode::Unauthorized,
        ErrorCode::RateLimited,
    ];

    /// The number on the wire.
    pub const fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::InternalError => -32603,
            ErrorCode::SessionNotFound => -32001,
            ErrorCode::LimitReached => -32002,
            ErrorCode::UnsupportedLanguage => -32003,
            ErrorCode::Unauthorized => -32004,
            ErrorCode::RateLimited => -32005,
        }
    }

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: i64) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short default message.
    pub const fn default_message(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "parse error",
            ErrorCode::InvalidRequest => "invalid request",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::InvalidParams => "invalid params",
            ErrorCode::InternalError => "internal error",
            ErrorCode::SessionNotFound => "session not found",
            ErrorCode::LimitReached => "limit reached",
            ErrorCode::UnsupportedLanguage => "Unsupported language",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate limited",
        }
    }
}

impl From<ErrorCode> for i64 {
    fn from(code: ErrorCode) -> i64 {
        code.code()
    }
}

/// A JSON-RPC error object: `{"code", "message", "data"?}`. Never carries a stack trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct ErrorObject {
    /// The error code; see [`ErrorCode`] for ours. Kept as a plain integer so a client can decode
    /// codes it does not know.
    pub code: i64,
    /// A short human-readable explanation.
    pub message: String,
    /// Structured detail, omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    /// An error with a code and message and no data.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorObject {
            code: code.code(),
            message: message.into(),
            data: None,
        }
    }

    /// Adds structured detail.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The [`ErrorCode`] of this error, if it is one of ours.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_code(self.code)
    }

    /// `-32700` for text that is not JSON; `detail` is the JSON parser's message.
    pub fn parse_error(detail: impl fmt::Display) -> Self {
        Self::new(ErrorCode::ParseError, format!("parse error: {detail}"))
    }

    /// `-32600` with a reason.
    pub fn invalid_request(reason: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::InvalidRequest,
            format!("invalid request: {reason}"),
        )
    }

    /// `-32601` naming the method.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            ErrorCode::MethodNotFound,
            format!("method not found: {method:?}"),
        )
    }

    /// `-32602` with a message that already says which field is wrong and why (see
    /// [`crate::params`] for building one from a decode error).
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
    }

    /// `-32603` with an opaque id that also appears in the server's log, as `data.errorId`.
    pub fn internal(error_id: impl Into<String>) -> Self {
        let error_id = error_id.into();
        Self::new(
            ErrorCode::InternalError,
            format!("internal error (error id {error_id})"),
        )
        .with_data(serde_json::json!({ "errorId": error_id }))
    }

    /// `-32001` naming the session.
    pub fn session_not_found(session_id: &str) -> Self {
        Self::new(
            ErrorCode::SessionNotFound,
            format!("session not found: {session_id}"),
        )
    }

    /// `-32002` saying which limit; the caller may retry later.
    pub fn limit_reached(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::LimitReached, format!("limit reached: {what}"))
    }

    /// `-32003`; the message contains `Unsupported language`, which existing clients look for.
    pub fn unsupported_language(language: &str) -> Self {
        Self::new(
            ErrorCode::UnsupportedLanguage,
            format!("Unsupported language: {language}"),
        )
    }

    /// `-32004` with a reason.
    pub fn unauthorized(reason: impl fmt::Display) -> Self {
        Self::new(ErrorCode::Unauthorized, format!("unauthorized: {reason}"))
    }

    /// `-32005` with `data.retryAfterMs`.
    pub fn rate_limited(retry_after_ms: u64) -> Self {
        Self::new(
            ErrorCode::RateLimited,
            format!("rate limited: retry after {retry_after_ms} ms"),
        )
        .with_data(serde_json::json!({ "retryAfterMs": retry_after_ms }))
    }
}

/// A request or, without an id, a notification.
///
/// Serializes as `{"jsonrpc":"2.0","id":...,"method":...,"params":...}`, leaving out `id` for a
/// notification and `params` when there are none. Deserializing applies the same checks as
/// [`Request::from_value`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: Version,
    /// The id to echo; `None` (no `id` at all) makes this a notification. `"id": null` is
    /// [`Id::Null`]: answered, with `"id": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    /// The method name; see [`crate::methods::Method::from_name`].
    pub method: String,
    /// The params: an object, or an array for by-position params. `"params": null` reads as
    /// absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// Why a JSON value is not a valid request, and the id to answer with (when it could be read).
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRequest {
    /// The request's id if it was a number or a string; `None` answers with id `null`.
    pub id: Option<Id>,
    /// The `-32600` error to send back.
    pub error: ErrorObject,
}

impl InvalidRequest {
    /// The error response to send back.
    pub fn into_response(self) -> Response {
        Response::error(self.id, self.error)
    }
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl Request {
    /// A request with an id.
    pub fn new(id: impl Into<Id>, method: impl Into<String>, params: Option<Value>) -> Self {
        Request {
            jsonrpc: Version,
            id: Some(id.into()),
            method: method.into(),
            params,
        }
    }

    /// A notification: a request without an id, which gets no response.
    pub fn notification(method: impl Into<String>, params: Option<Value>) -> Self {
        Request {
            jsonrpc: Version,
            id: None,
            method: method.into(),
            params,
        }
    }

    /// True when no response is expected.
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }

    /// Checks one parsed JSON value against the JSON-RPC 2.0 rules for a request.
    ///
    /// Unknown members are ignored. Failures are `-32600` and carry the id when it was a number
    /// or a string.
    pub fn from_value(value: Value) -> Result<Request, InvalidRequest> {
        let Value::Object(mut object) = value else {
            return Err(InvalidRequest {
                id: None,
                error: ErrorObject::invalid_request(format_args!(
                    "expected a request object, got {}",
                    json_kind(&value)
                )),
            });
        };
        let id = match object.get("id").map(Id::from_json) {
            None => None,
            Some(Some(id)) => Some(id),
            Some(None) => {
                return Err(InvalidRequest {
                    id: None,
                    error: ErrorObject::invalid_request("`id` must be a number, a string or null"),
                });
            }
        };
        let fail = |reason: String| InvalidRequest {
            id: id.clone(),
            error: ErrorObject::invalid_request(reason),
        };
        match object.get("jsonrpc") {
            Some(Value::String(v)) if v == Version::STR => {}
            Some(other) => {
                return Err(fail(format!("`jsonrpc` must be \"2.0\", got {other}")));
            }
            None => return Err(fail("missing `jsonrpc` (must be \"2.0\")".into())),
        }
        let method = match object.remove("method") {
            Some(Value::String(method)) => method,
            Some(other) => {
                return Err(fail(format!(
                    "`method` must be a string, got {}",
                    json_kind(&other)
                )));
            }
            None => return Err(fail("missing `method`".into())),
        };
        let params = match object.remove("params") {
            None | Some(Value::Null) => None,
            Some(params @ (Value::Object(_) | Value::Array(_))) => Some(params),
            Some(other) => {
                return Err(fail(format!(
                    "`params` must be an object or an array, got {}",
                    json_kind(&other)
                )));
            }
        };
        Ok(Request {
            jsonrpc: Version,
            id,
            method,
            params,
        })
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Request::from_value(value).map_err(de::Error::custom)
    }
}

/// What a response carries: exactly one of a result or an error.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseBody {
    /// `"result": ...` (may be `null`).
    Result(Value),
    /// `"error": {...}`.
    Error(ErrorObject),
}

/// A response: `{"jsonrpc":"2.0","id":...,"result":...}` or `{"jsonrpc":"2.0","id":...,"error":{...}}`.
///
/// It serializes exactly one of `result` and `error`, never both (the original server sent
/// both, which is a bug). `id` is `null` when the request's id could not be read (parse errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Always `"2.0"`.
    pub jsonrpc: Version,
    /// The request's id, echoed exactly; `None` serializes as `null`.
    pub id: Option<Id>,
    /// The result or the error.
    pub body: ResponseBody,
}

impl Response {
    /// A successful response.
    pub fn result(id: Id, result: Value) -> Self {
        Response {
            jsonrpc: Version,
            id: Some(id),
            body: ResponseBody::Result(result),
        }
    }

    /// A successful response from any serializable result type.
    pub fn result_of<T: Serialize>(id: Id, result: &T) -> Result<Self, serde_json::Error> {
        Ok(Response::result(id, serde_json::to_value(result)?))
    }

    /// An error response; `id` is `None` when the request's id could not be read.
    pub fn error(id: Option<Id>, error: ErrorObject) -> Self {
        Response {
            jsonrpc: Version,
            id,
            body: ResponseBody::Error(error),
        }
    }

    /// True for an error response.
    pub fn is_error(&self) -> bool {
        matches!(self.body, ResponseBody::Error(_))
    }

    /// The result, or the error as `Err`.
    pub fn into_result(self) -> Result<Value, ErrorObject> {
        match self.body {
            ResponseBody::Result(value) => Ok(value),
            ResponseBody::Error(error) => Err(error),
        }
    }

    /// The response as one line of JSON, without a trailing newline.
    pub fn to_json(&self) -> String {
        // A Response holds only strings, numbers and `Value`s with string keys, none of which can
        // fail to serialize; the fallback exists so that this function cannot panic.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error: response could not be serialized"}}"#
                .to_owned()
        })
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("jsonrpc", &self.jsonrpc)?;
        map.serialize_entry("id", &self.id)?;
        match &self.body {
            ResponseBody::Result(result) => map.serialize_entry("result", result)?,
            ResponseBody::Error(error) => map.serialize_entry("error", error)?,
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Response {
    /// Accepts a response with `result` or a non-null `error`. Lenient toward the original
    /// server, which sent both: a non-null `error` wins, and `"error": null` is ignored.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            jsonrpc: Version,
            #[serde(default)]
            id: Option<Id>,
            #[serde(default, deserialize_with = "crate::serde_util::present_value")]
            result: Option<Value>,
            #[serde(default)]
            error: Option<ErrorObject>,
        }
        let raw = Raw::deserialize(deserializer)?;
        let body = match (raw.error, raw.result) {
            (Some(error), _) => ResponseBody::Error(error),
            (None, Some(result)) => ResponseBody::Result(result),
            (None, None) => return Err(de::Error::custom("a response needs `result` or `error`")),
        };
        Ok(Response {
            jsonrpc: raw.jsonrpc,
            id: raw.id,
            body,
        })
    }
}

/// A notification from the server to the client: `{"jsonrpc":"2.0","method":...,"params":...}`,
/// no id, no response. See [`crate::methods::ExecutionEvent`] for the ones CodeBeaker sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Always `"2.0"`.
    pub jsonrpc: Version,
    /// The notification's name, e.g. `execution.output`.
    pub method: String,
    /// Its payload, omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl Notification {
    /// A notification with the given name and params.
    pub fn new(method: impl Into<String>, params: Option<Value>) -> Self {
        Notification {
            jsonrpc: Version,
            method: method.into(),
            params,
        }
    }

    /// The notification as one line of JSON, without a trailing newline.
    pub fn to_json(&self) -> String {
        // Strings and `Value`s with string keys cannot fail to serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One message of an incoming frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A well-formed request, or a notification when its `id` is `None`.
    Request(Request),
    /// Not a valid request: the error response to send back as it is.
    Invalid(Response),
}

/// How a frame was laid out, which decides how its responses go back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// One message (also: one parse error, an empty or whitespace-only frame, an empty batch).
    /// At most one response, as one frame.
    Single,
    /// A non-empty batch array. All its responses go back together as one array frame; none at
    /// all when it held only notifications.
    Batch,
    /// Several messages one after another (separated by `\n`). Each response is its own frame
    /// and may be sent as soon as it is ready.
    Lines,
}

impl FrameKind {
    /// Turns the responses to a frame's messages into the text frames to send back, in order.
    ///
    /// Notifications have no response, so pass only the responses that exist. For
    /// [`FrameKind::Single`] and [`FrameKind::Lines`] this is one frame per response; for
    /// [`FrameKind::Batch`] it is one array frame, or nothing when `responses` is empty.
    pub fn encode(self, responses: Vec<Response>) -> Vec<String> {
        match self {
            FrameKind::Single | FrameKind::Lines => {
                responses.iter().map(Response::to_json).collect()
            }
            FrameKind::Batch if responses.is_empty() => Vec::new(),
            FrameKind::Batch => {
                let parts: Vec<String> = responses.iter().map(Response::to_json).collect();
                vec![format!("[{}]", parts.join(","))]
            }
        }
    }
}

/// A decoded incoming frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// How the frame was laid out; use [`FrameKind::encode`] for the responses.
    pub kind: FrameKind,
    /// Its messages in order.
    pub messages: Vec<Incoming>,
}

impl Frame {
    fn single(message: Incoming) -> Frame {
        Frame {
            kind: FrameKind::Single,
            messages: vec![message],
        }
    }
}

fn parse_error(detail: impl fmt::Display) -> Incoming {
    Incoming::Invalid(Response::error(None, ErrorObject::parse_error(detail)))
}

/// Checks one message; `raw` is its JSON text, read again only for an id [`Id::Number`] would
/// not echo digit for digit.
fn classify(value: Value, raw: Option<&str>) -> Incoming {
    let exact = raw.and_then(|raw| exact_id(&value, raw));
    match Request::from_value(value) {
        Ok(mut request) => {
            if exact.is_some() {
                request.id = exact;
            }
            Incoming::Request(request)
        }
        Err(mut invalid) => {
            if invalid.id.is_some() && exact.is_some() {
                invalid.id = exact;
            }
            Incoming::Invalid(invalid.into_response())
        }
    }
}

/// Whether a message's `id` is a number a 64-bit integer cannot hold.
fn needs_exact_id(value: &Value) -> bool {
    matches!(value.get("id"), Some(Value::Number(n)) if n.is_f64())
}

/// The id of a message whose `id` is a number a 64-bit integer cannot hold, as the text it came
/// as (`raw` is the message's JSON text).
fn exact_id(value: &Value, raw: &str) -> Option<Id> {
    if !needs_exact_id(value) {
        return None;
    }
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        id: &'a serde_json::value::RawValue,
    }
    let probe: Probe<'_> = serde_json::from_str(raw).ok()?;
    Some(Id::Exact(probe.id.get().to_owned()))
}

/// Splits a frame's text into JSON values. A stretch that does not parse becomes one `Err` and
/// reading resumes at the next line that starts a JSON object or array.
fn split_values(text: &str, max: usize) -> Vec<Result<(Value, &str), serde_json::Error>> {
    let mut items = Vec::new();
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(text);
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\n', '\r']);
        if rest.is_empty() || items.len() > max {
            break;
        }
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match stream.next() {
            Some(Ok(value)) => {
                let consumed = stream.byte_offset();
                items.push(Ok((value, rest.get(..consumed).unwrap_or(""))));
                rest = rest.get(consumed..).unwrap_or("");
            }
            Some(Err(error)) => {
                items.push(Err(error));
                rest = skip_to_next_message(rest);
            }
            None => break,
        }
    }
    items
}

/// Skips the current line, then every line that does not begin (after indentation) with `{`
/// or `[`, so that the rest of a broken message does not turn into a cascade of errors.
fn skip_to_next_message(text: &str) -> &str {
    let mut rest = match text.find('\n') {
        Some(newline) => &text[newline + 1..],
        None => return "",
    };
    loop {
        let line_start = rest.trim_start_matches([' ', '\t', '\r']);
        if line_start.starts_with(['{', '[']) {
            return rest;
        }
        match rest.find('\n') {
            Some(newline) => rest = &rest[newline + 1..],
            None => return "",
        }
    }
}

/// Whether `text` is a JSON array with more than `max` elements, told by counting the commas
/// outside strings at its top level, without decoding anything.
fn batch_longer_than(text: &str, max: usize) -> bool {
    let text = text.trim_start_matches(['\u{feff}', ' ', '\t', '\n', '\r']);
    if !text.starts_with('[') {
        return false;
    }
    let (mut depth, mut in_string, mut escaped, mut commas) = (0usize, false, false, 0usize);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => {
                commas += 1;
                if commas >= max {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// Decodes one incoming text frame into its messages; see the [module docs](self) for the
/// layouts. Never fails and never panics: malformed input becomes [`Incoming::Invalid`]
/// responses.
pub fn parse_frame(text: &str) -> Frame {
    parse_frame_bounded(text, usize::MAX)
}

/// [`parse_frame`] that decodes at most `max_messages` messages of a frame: the messages past
/// the bound are not read, and one `-32600` error in their place says so (a batch array longer
/// than the bound is refused whole, with one error, before its elements are decoded). What a
/// frame costs to answer is then bounded, whatever it holds.
pub fn parse_frame_bounded(text: &str, max_messages: usize) -> Frame {
    let max = max_messages.max(1);
    let too_many = || {
        Incoming::Invalid(Response::error(
            None,
            ErrorObject::invalid_request(format_args!(
                "the frame holds more than {max} messages, the most one frame may hold; the rest of it was not read: send fewer messages in a frame"
            )),
        ))
    };
    if batch_longer_than(text, max) {
        return Frame::single(too_many());
    }
    let mut items = split_values(text, max);
    let over = items.len() > max;
    items.truncate(max);
    if items.len() > 1 || over {
        let mut messages: Vec<Incoming> = items
            .into_iter()
            .map(|item| match item {
                Ok((Value::Array(_), _)) => Incoming::Invalid(Response::error(
                    None,
                    ErrorObject::invalid_request(
                        "a batch array cannot share a frame with other messages; send it in a frame of its own",
                    ),
                )),
                Ok((value, raw)) => classify(value, Some(raw)),
                Err(error) => parse_error(error),
            })
            .collect();
        if over {
            messages.push(too_many());
        }
        return Frame {
            kind: FrameKind::Lines,
            messages,
        };
    }
    match items.pop() {
        None => Frame::single(parse_error("the frame holds no JSON message")),
        Some(Err(error)) => Frame::single(parse_error(error)),
        Some(Ok((Value::Array(elements), _))) if elements.is_empty() => {
            Frame::single(Incoming::Invalid(Response::error(
                None,
                ErrorObject::invalid_request("empty batch"),
            )))
        }
        Some(Ok((Value::Array(elements), raw))) => {
            // The elements' own text, read only when one has an id that needs it.
            let raws: Vec<&serde_json::value::RawValue> = match elements.iter().any(needs_exact_id)
            {
                true => serde_json::from_str(raw).unwrap_or_default(),
                false => Vec::new(),
            };
            Frame {
                kind: FrameKind::Batch,
                messages: elements
                    .into_iter()
                    .enumerate()
                    .map(|(i, value)| classify(value, raws.get(i).map(|r| r.get())))
                    .collect(),
            }
        }
        Some(Ok((value, raw))) => Frame::single(classify(value, Some(raw))),
    }
}

/// A message from the server, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The response to one of the client's requests.
    Response(Response),
    /// A notification such as `execution.output`.
    Notification(Notification),
}

impl ServerMessage {
    /// Classifies one JSON value: an object with a `method` is a notification, anything else
    /// must be a response.
    pub fn from_value(value: Value) -> Result<ServerMessage, serde_json::Error> {
        let is_notification = matches!(&value, Value::Object(map) if map.contains_key("method"));
        if is_notification {
            serde_json::from_value(value).map(ServerMessage::Notification)
        } else {
            serde_json::from_value(value).map(ServerMessage::Response)
        }
    }
}

/// Decodes a text frame received from a server (for clients): one message, a batch array of
/// responses, or messages separated by newlines, with or without a trailing newline.
pub fn parse_server_frame(text: &str) -> Result<Vec<ServerMessage>, serde_json::Error> {
    let mut messages = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match value? {
            Value::Array(elements) => {
                for element in elements {
                    messages.push(ServerMessage::from_value(element)?);
                }
            }
            other => messages.push(ServerMessage::from_value(other)?),
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod bounded_frame_tests {
    use super::*;

    #[test]
    fn a_frame_of_many_broken_lines_is_read_only_up_to_the_bound() {
        let text = "{\n".repeat(100_000);
        let frame = parse_frame_bounded(&text, 10);
        assert_eq!(frame.kind, FrameKind::Lines);
        assert_eq!(frame.messages.len(), 11);
        let Some(Incoming::Invalid(last)) = frame.messages.last() else {
            panic!("the last message is the refusal");
        };
        let error = last.clone().into_result().expect_err("an error");
        assert_eq!(error.code, -32600);
        assert!(
            error.message.contains("more than 10 messages"),
            "{}",
            error.message
        );
        // Under the bound, nothing changes.
        let two = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"b\"}";
        assert_eq!(parse_frame_bounded(two, 2), parse_frame(two));
    }

    #[test]
    fn a_batch_longer_than_the_bound_is_refused_whole() {
        let batch = format!("[{}0]", "0,".repeat(50));
        let frame = parse_frame_bounded(&batch, 10);
        assert_eq!(frame.kind, FrameKind::Single);
        assert_eq!(frame.messages.len(), 1);
        let short = "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a,b\",\"params\":[1,2,3]}]";
        assert_eq!(parse_frame_bounded(short, 1).kind, FrameKind::Batch);
    }
}
