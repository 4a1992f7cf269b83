//! Who a request of the E2B door speaks for. The control plane's `X-API-Key` is a token of the
//! server's auth (the same tokens, checked by the same code, as `Authorization: Bearer`); an
//! envd request is for one sandbox, and needs that sandbox's access token or its owner's key.
//! Both are rate limited by the server's limiter.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use codebeaker_engine::Caller;

use super::connect::{Code, ConnectError};
use super::{lock, ApiError, E2b, EnvdError, Sandbox, SANDBOX_HEADER};
use crate::audit;
use crate::rate_limit::RateLimiter;

impl E2b {
    /// The caller an `X-API-Key` (or a bearer token) names: anonymous when auth is off. Rate
    /// limited like every other request of the caller.
    pub(crate) fn api_caller(&self, headers: &HeaderMap, route: &str) -> Result<Caller, ApiError> {
        let caller = self.key_caller(headers).map_err(|error| {
            audit::unauthorized(route, None, &error);
            ApiError::new(StatusCode::UNAUTHORIZED, error.message)
        })?;
        self.rate_limit(&caller, route)
            .map_err(|ms| ApiError::new(StatusCode::TOO_MANY_REQUESTS, rate_message(ms)))?;
        Ok(caller)
    }

    fn key_caller(
        &self,
        headers: &HeaderMap,
    ) -> Result<Caller, codebeaker_protocol::jsonrpc::ErrorObject> {
        let auth = &self.state.auth;
        if !auth.enabled() {
            return Ok(Caller::anonymous());
        }
        match headers.get("x-api-key") {
            // The same tokens as `Authorization: Bearer`, checked by the same code.
            Some(key) => {
                let mut as_bearer = HeaderMap::new();
                let value = key
                    .to_str()
                    .ok()
                    .and_then(|k| HeaderValue::from_str(&format!("Bearer {}", k.trim())).ok())
                    .ok_or_else(|| {
                        codebeaker_protocol::jsonrpc::ErrorObject::unauthorized(
                            "the X-API-Key header is not valid text",
                        )
                    })?;
                as_bearer.insert(header::AUTHORIZATION, value);
                auth.authenticate(&as_bearer, None)
            }
            None if headers.contains_key(header::AUTHORIZATION) => auth.authenticate(headers, None),
            None => Err(codebeaker_protocol::jsonrpc::ErrorObject::unauthorized(
                "missing API key: send X-API-Key (E2B_API_KEY) with a token of this server",
            )),
        }
    }

    fn rate_limit(&self, caller: &Caller, route: &str) -> Result<(), u64> {
        self.state
            .limiter
            .check(caller)
            .inspect_err(|&retry_after_ms| {
                self.state.metrics.rate_limited();
                let error = RateLimiter::error(retry_after_ms);
                audit::refused(caller, route, &error, audit::Subject::default());
            })
    }

    /// The sandbox an envd request is for, checked against its credentials: with auth on, the
    /// sandbox's access token (`X-Access-Token`) or its owner's API key. A sandbox that is not
    /// there, or not the credentials' owner's, is gone for this request.
    pub(crate) fn envd_sandbox(
        &self,
        headers: &HeaderMap,
        route: &str,
    ) -> Result<Sandbox, EnvdError> {
        let id = headers
            .get(SANDBOX_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                EnvdError::Connect(ConnectError::invalid(
                    "missing the E2b-Sandbox-Id header (set E2B_SANDBOX_URL to this server)",
                ))
            })?
            .to_string();
        let found = lock(&self.sandboxes).get(&id).cloned();
        let sandbox = if self.state.auth.enabled() {
            // envd's token, or the same one as the traffic token that the code interpreter SDK
            // sends on `/contexts`.
            let token = ["x-access-token", "e2b-traffic-access-token"]
                .into_iter()
                .find_map(|name| headers.get(name).and_then(|v| v.to_str().ok()));
            let has_key = headers.contains_key("x-api-key");
            if token.is_none() && !has_key {
                let error = codebeaker_protocol::jsonrpc::ErrorObject::unauthorized(
                    "missing X-Access-Token: use the envdAccessToken of the sandbox's create answer",
                );
                audit::unauthorized(route, None, &error);
                return Err(EnvdError::Connect(ConnectError::new(
                    Code::Unauthenticated,
                    error.message,
                )));
            }
            let key_caller = has_key.then(|| self.key_caller(headers).ok()).flatten();
            let refuse = |id: String| {
                // Another caller's sandbox is not there for it; a wrong token names nobody.
                let error = codebeaker_protocol::jsonrpc::ErrorObject::session_not_found(&id);
                match &key_caller {
                    Some(caller) => {
                        let subject = audit::Subject {
                            session_id: Some(&id),
                            command: None,
                        };
                        audit::refused(caller, route, &error, subject);
                    }
                    None => audit::unauthorized(route, None, &error),
                }
                EnvdError::Gone(id)
            };
            let Some(sandbox) = found else {
                return Err(refuse(id));
            };
            let by_token = token.is_some_and(|t| same_secret(t.trim(), &sandbox.access_token));
            let by_key = key_caller.as_ref() == Some(&sandbox.caller);
            if !(by_token || by_key) {
                return Err(refuse(id));
            }
            sandbox
        } else {
            found.ok_or(EnvdError::Gone(id))?
        };
        self.rate_limit(&sandbox.caller, route).map_err(|ms| {
            EnvdError::Connect(ConnectError::new(Code::ResourceExhausted, rate_message(ms)))
        })?;
        Ok(sandbox)
    }
}

fn rate_message(retry_after_ms: u64) -> String {
    format!("rate limit reached; retry in {retry_after_ms} ms")
}

fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("ab", "abc"));
    }
}
