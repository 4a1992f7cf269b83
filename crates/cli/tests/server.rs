//! The server end to end: a real server on an ephemeral port over a real engine, real boxes, and
//! real WebSocket and HTTP clients. Covers the JSON-RPC envelope and framing, every method, the
//! streaming notifications, the REST endpoints, health and metrics, authentication, rate limits,
//! the in-flight bound, and sessions outliving their connection.
//!
//! Every test runs on the shared runtime over the shared engine (boxes are tied to the runtime
//! that made them), and closes the sessions it opens. Most use the shared server; those that
//! need settings of their own (auth, limits, a recorder of their own) start one. One module per
//! area: [`protocol`], [`sessions`], [`executions`], [`rest`], [`limits`], [`accounting`] and
//! [`serve`] (the `codebeaker serve` process).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use codebeaker_engine::{Engine, EngineConfig, SessionLimits};
use codebeaker_server::{
    AuthConfig, CallerQuota, RateLimitConfig, Server, ServerConfig, ServerHandle, TokenConfig,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::host::{self, boxes_of};
use crate::common::{
    self, engine, local_config, run, runtime, server as shared_server, Client, FRAME_TIMEOUT,
};

mod accounting;
mod executions;
mod limits;
mod protocol;
mod rest;
mod serve;
mod sessions;

/// A server of the test's own over the shared engine.
async fn start(config: ServerConfig) -> ServerHandle {
    common::start_server(Arc::clone(engine()), config).await
}

// ------------------------------------------------------------------------------------------
// A small HTTP client.

struct HttpResponse {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl HttpResponse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let mut headers = Vec::new();
    if let Some(value) = &authorization {
        headers.push(("authorization", value.as_str()));
    }
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.unwrap_or_default().as_bytes().to_vec();
    let answer = common::http::send(addr, method, path, &headers, body).await;
    HttpResponse {
        status: answer.status,
        body: answer.text(),
        headers: answer.headers,
    }
}

// ------------------------------------------------------------------------------------------
// Metrics as Prometheus text.

/// The value of `name{labels}` in a Prometheus text body: the sum over every series of that
/// name whose labels include all of `labels`; `None` when there is none.
fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let pairs: Vec<&str> = series_labels.split(',').collect();
        if labels
            .iter()
            .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
        {
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

async fn scrape(addr: SocketAddr, bearer: Option<&str>) -> String {
    let response = http(addr, "GET", "/metrics", bearer, None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// Scrapes until `name{labels}` reaches `at_least` (things counted in the background, such as
/// one-shot runs, lag behind their answers), and returns the last body.
async fn scrape_until(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) -> String {
    let mut body = String::new();
    for _ in 0..200 {
        body = scrape(addr, None).await;
        if metric(&body, name, labels).is_some_and(|v| v >= at_least) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name}{labels:?} never reached {at_least}:\n{body}");
}
