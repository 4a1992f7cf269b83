//! Rate limits: a token bucket per caller, shared by every connection and REST request of that
//! caller.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codebeaker_engine::Caller;
use codebeaker_protocol::jsonrpc::ErrorObject;

use crate::config::RateLimitConfig;
use crate::error::HttpError;
use crate::state::AppState;

/// Buckets kept before full ones (callers quiet long enough to have refilled) are forgotten.
const MAX_BUCKETS: usize = 10_000;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-caller token buckets; does nothing when rate limiting is off.
pub(crate) struct RateLimiter {
    config: Option<RateLimitConfig>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(config: Option<RateLimitConfig>) -> Self {
        RateLimiter {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the caller's bucket, or says in how many milliseconds one will be
    /// there.
    pub fn check(&self, caller: &Caller) -> Result<(), u64> {
        self.check_at(caller, Instant::now())
    }

    fn check_at(&self, caller: &Caller, now: Instant) -> Result<(), u64> {
        let Some(config) = self.config else {
            return Ok(());
        };
        let burst = f64::from(config.burst);
        let rate = config.requests_per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&caller.0) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(caller.0.clone()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - bucket.tokens) / rate * 1000.0).ceil();
            Err((wait_ms as u64).max(1))
        }
    }

    /// The JSON-RPC error for a refused request.
    pub fn error(retry_after_ms: u64) -> ErrorObject {
        ErrorObject::rate_limited(retry_after_ms)
    }
}

/// Middleware for the REST endpoints: 429 with `Retry-After` when the caller is over its rate.
pub(crate) async fn limit_rest(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous);
    match state.limiter.check(&caller) {
        Ok(()) => next.run(request).await,
        Err(retry_after_ms) => {
            state.metrics.rate_limited();
            HttpError::new(RateLimiter::error(retry_after_ms)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(Some(RateLimitConfig {
            requests_per_second: 10.0,
            burst: 3,
        }));
        let alice = Caller("alice".into());
        let bob = Caller("bob".into());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at(&alice, t0), Ok(()));
        }
        let wait = limiter.check_at(&alice, t0).expect_err("over the burst");
        assert_eq!(wait, 100);
        // Another caller has its own bucket.
        assert_eq!(limiter.check_at(&bob, t0), Ok(()));
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.check_at(&alice, t1), Ok(()));
        assert!(limiter.check_at(&alice, t1).is_err());
    }

    #[test]
    fn off_never_limits() {
        let limiter = RateLimiter::new(None);
        let caller = Caller::anonymous();
        for _ in 0..1000 {
            assert_eq!(limiter.check(&caller), Ok(()));
        }
    }
}
