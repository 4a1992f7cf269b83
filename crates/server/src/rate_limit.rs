//! Rate limits: a token bucket per caller, shared by every connection and REST request of that
//! caller. A caller may have a rate of its own (see [`crate::CallerQuota`]), which replaces the
//! server-wide one for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codebeaker_engine::Caller;
use codebeaker_protocol::jsonrpc::ErrorObject;

use crate::audit;
use crate::config::RateLimitConfig;
use crate::error::HttpError;
use crate::state::AppState;

/// Buckets kept before full ones (callers quiet long enough to have refilled) are forgotten.
const MAX_BUCKETS: usize = 10_000;

struct Bucket {
    tokens: f64,
    last: Instant,
    /// The bucket's own settings (a caller's, or the server's).
    config: RateLimitConfig,
}

impl Bucket {
    /// Full again by `now`: nothing is lost by forgetting it.
    fn refilled(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.config.requests_per_second >= f64::from(self.config.burst)
    }
}

/// Per-caller token buckets; does nothing for callers without a rate.
pub(crate) struct RateLimiter {
    config: Option<RateLimitConfig>,
    /// Callers with a rate of their own.
    overrides: HashMap<String, RateLimitConfig>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(
        config: Option<RateLimitConfig>,
        overrides: HashMap<String, RateLimitConfig>,
    ) -> Self {
        RateLimiter {
            config,
            overrides,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the caller's bucket, or says in how many milliseconds one will be
    /// there.
    pub fn check(&self, caller: &Caller) -> Result<(), u64> {
        self.check_at(caller, Instant::now())
    }

    fn check_at(&self, caller: &Caller, now: Instant) -> Result<(), u64> {
        let Some(config) = self.overrides.get(&caller.0).copied().or(self.config) else {
            return Ok(());
        };
        let burst = f64::from(config.burst);
        let rate = config.requests_per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&caller.0) {
            buckets.retain(|_, b| !b.refilled(now));
        }
        let bucket = buckets.entry(caller.0.clone()).or_insert(Bucket {
            tokens: burst,
            last: now,
            config,
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
            let error = RateLimiter::error(retry_after_ms);
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or_else(|| request.uri().path(), MatchedPath::as_str);
            audit::refused(&caller, route, &error, audit::Subject::default());
            HttpError::new(error).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(
            Some(RateLimitConfig {
                requests_per_second: 10.0,
                burst: 3,
            }),
            HashMap::new(),
        );
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
        let limiter = RateLimiter::new(None, HashMap::new());
        let caller = Caller::anonymous();
        for _ in 0..1000 {
            assert_eq!(limiter.check(&caller), Ok(()));
        }
    }

    #[test]
    fn a_caller_of_its_own_rate_gets_it() {
        let own = RateLimitConfig {
            requests_per_second: 1.0,
            burst: 1,
        };
        let overrides = HashMap::from([("slow".to_string(), own)]);
        // Off for everyone else, limited for `slow`.
        let limiter = RateLimiter::new(None, overrides.clone());
        let t0 = Instant::now();
        let slow = Caller("slow".into());
        assert_eq!(limiter.check_at(&slow, t0), Ok(()));
        assert_eq!(limiter.check_at(&slow, t0), Err(1000));
        for _ in 0..100 {
            assert_eq!(limiter.check_at(&Caller::anonymous(), t0), Ok(()));
        }
        // A server-wide rate does not apply to `slow`, whose own rate replaces it.
        let limiter = RateLimiter::new(
            Some(RateLimitConfig {
                requests_per_second: 0.1,
                burst: 5,
            }),
            overrides,
        );
        assert_eq!(limiter.check_at(&slow, t0), Ok(()));
        assert!(limiter.check_at(&slow, t0).is_err());
        let other = Caller("other".into());
        for _ in 0..5 {
            assert_eq!(limiter.check_at(&other, t0), Ok(()));
        }
        assert!(limiter.check_at(&other, t0).is_err());
    }
}
