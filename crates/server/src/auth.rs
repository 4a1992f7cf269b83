//! Bearer-token authentication. The token's caller name becomes the engine's [`Caller`], so a
//! caller sees only its own sessions and executions.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codebeaker_engine::Caller;
use codebeaker_protocol::jsonrpc::ErrorObject;
use std::collections::HashMap;

use crate::audit;
use crate::config::AuthConfig;
use crate::error::HttpError;
use crate::state::AppState;

/// The path whose clients may pass the token as `?token=` (browsers cannot set headers on a
/// WebSocket handshake).
const WS_PATH: &str = "/ws/jsonrpc";

/// The configured tokens, ready to check.
pub(crate) struct Auth {
    tokens: Vec<(Vec<u8>, Caller)>,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Self {
        Auth {
            tokens: config
                .tokens
                .iter()
                .map(|t| (t.token.as_bytes().to_vec(), Caller(t.caller.clone())))
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The caller a request speaks for: anonymous when authentication is off, else the owner of
    /// the bearer token in `Authorization` (or, when `query_token` allows it, in `?token=`).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Caller, ErrorObject> {
        if !self.enabled() {
            return Ok(Caller::anonymous());
        }
        let header_token = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => {
                let value = value.to_str().map_err(|_| {
                    ErrorObject::unauthorized("the Authorization header is not valid text")
                })?;
                let (scheme, token) = value.trim().split_once(' ').ok_or_else(|| {
                    ErrorObject::unauthorized("expected `Authorization: Bearer <token>`")
                })?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(ErrorObject::unauthorized(
                        "expected `Authorization: Bearer <token>`",
                    ));
                }
                Some(token.trim())
            }
        };
        let Some(token) = header_token.or(query_token) else {
            return Err(ErrorObject::unauthorized(
                "missing token: send `Authorization: Bearer <token>`",
            ));
        };
        self.token_caller(token)
    }

    /// The caller `token` stands for: anonymous when authentication is off, else the owner of
    /// the token, for doors whose clients send a bare key rather than a bearer header.
    pub fn authenticate_token(&self, token: &str) -> Result<Caller, ErrorObject> {
        if !self.enabled() {
            return Ok(Caller::anonymous());
        }
        self.token_caller(token.trim())
    }

    fn token_caller(&self, token: &str) -> Result<Caller, ErrorObject> {
        self.tokens
            .iter()
            .fold(None, |found, (known, caller)| {
                // Compare every token in full, so that timing does not tell how much matched.
                if constant_time_eq(known, token.as_bytes()) {
                    Some(caller)
                } else {
                    found
                }
            })
            .cloned()
            .ok_or_else(|| ErrorObject::unauthorized("invalid token"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: puts the request's [`Caller`] into its extensions, or answers 401.
pub(crate) async fn require_caller(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let query_token = if request.uri().path() == WS_PATH {
        Query::<HashMap<String, String>>::try_from_uri(request.uri())
            .ok()
            .and_then(|Query(mut q)| q.remove("token"))
    } else {
        None
    };
    match state
        .auth
        .authenticate(request.headers(), query_token.as_deref())
    {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or_else(|| request.uri().path(), MatchedPath::as_str);
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| *addr);
            audit::unauthorized(route, peer, &error);
            HttpError::new(error).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth::new(&AuthConfig {
            tokens: vec![
                TokenConfig {
                    token: "secret-a".into(),
                    caller: "alice".into(),
                },
                TokenConfig {
                    token: "secret-b".into(),
                    caller: "bob".into(),
                },
            ],
        })
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn off_means_anonymous() {
        let off = Auth::new(&AuthConfig::default());
        assert_eq!(
            off.authenticate(&HeaderMap::new(), None),
            Ok(Caller::anonymous())
        );
    }

    #[test]
    fn tokens_name_their_callers() {
        let auth = auth();
        assert_eq!(
            auth.authenticate(&bearer("Bearer secret-b"), None),
            Ok(Caller("bob".into()))
        );
        assert_eq!(
            auth.authenticate(&bearer("bearer  secret-a "), None),
            Ok(Caller("alice".into()))
        );
        assert_eq!(
            auth.authenticate(&HeaderMap::new(), Some("secret-a")),
            Ok(Caller("alice".into()))
        );
    }

    #[test]
    fn missing_or_wrong_tokens_are_unauthorized() {
        let auth = auth();
        for (headers, query) in [
            (HeaderMap::new(), None),
            (bearer("Bearer nope"), None),
            (bearer("Basic secret-a"), None),
            (bearer("secret-a"), None),
            (HeaderMap::new(), Some("secret-")),
        ] {
            let error = auth
                .authenticate(&headers, query)
                .expect_err("must be refused");
            assert_eq!(error.code, -32004);
        }
    }
}
