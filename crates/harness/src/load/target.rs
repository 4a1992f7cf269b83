//! The server under load: one this process starts on an ephemeral loopback port, or one
//! already running on this host's loopback, found with its process so that its memory,
//! descriptors and boxes can be watched.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codebeaker_engine::{Engine, EngineConfig};
use codebeaker_sandbox::SandboxConfig;
use codebeaker_server::{Server, ServerConfig, ServerHandle};

use serde_json::json;

use super::leaks::{box_count, descriptors};
use super::programs::Language;
use super::wire::{Conn, Failure, REQUEST_TIMEOUT};
use crate::{Context, HarnessError};

fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.insert(format!("socket:[{}]", cols[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.contains(link.to_string_lossy().as_ref()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// The port of a `ws://` URL whose host is loopback; anything else is refused.
fn loopback_port(url: &str) -> Result<u16, HarnessError> {
    let Some(rest) = url.strip_prefix("ws://") else {
        return Err(HarnessError::Target(format!(
            "--server must be a ws:// URL on this host (loopback), got {url:?}"
        )));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| HarnessError::Target(format!("malformed address in {url:?}")))?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(HarnessError::Target(format!("the load generator only drives servers on this host's loopback (127.0.0.1, ::1, localhost), not {host:?}")));
    }
    match port {
        None => Ok(80),
        Some(p) => p.parse().map_err(|e: std::num::ParseIntError| {
            HarnessError::Target(format!("bad port {p:?} in {url:?}: {e}"))
        }),
    }
}

/// Checks that the server at `url` can run every one of `languages`.
pub(super) async fn check_languages(
    url: &str,
    token: Option<&str>,
    languages: &[Language],
) -> Result<(), HarnessError> {
    let mut check = Conn::connect(url, token)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let list = match check
        .call("language.list", json!({}), REQUEST_TIMEOUT, None)
        .await
    {
        Ok(list) => list,
        Err(Failure::Busy(m)) => {
            return Err(HarnessError::Target(format!("language.list refused: {m}")))
        }
        Err(Failure::Rpc { code, message }) => {
            return Err(HarnessError::Target(format!(
                "language.list failed: {code}: {message}"
            )))
        }
        Err(Failure::Broken(e)) => {
            return Err(HarnessError::Target(format!("language.list failed: {e}")))
        }
    };
    for l in languages {
        let entry = list["languages"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["name"] == l.name));
        if !entry.is_some_and(|e| e["available"] == true) {
            return Err(HarnessError::Target(format!(
                "{} is not available on the server; leave it out of --languages",
                l.name
            )));
        }
    }
    check.close().await;
    Ok(())
}

/// The server under load.
pub(super) struct Target {
    /// Its WebSocket JSON-RPC endpoint.
    pub(super) url: String,
    /// Its process.
    pub(super) pid: u32,
    /// The sandbox configuration its boxes are made with, for the census.
    pub(super) sandbox: SandboxConfig,
    /// The server this process runs, when it runs one.
    pub(super) local: Option<Local>,
}

/// A server this process runs.
pub(super) struct Local {
    pub(super) engine: Arc<Engine>,
    pub(super) server: ServerHandle,
    pub(super) reaper: tokio::task::JoinHandle<()>,
    pool_size: usize,
}

impl Target {
    /// Starts a server in this process with `server_config` (its `listen` address is used as
    /// given) and `engine_config`, with room for `clients` sessions, and waits until its box
    /// pool is full.
    pub(super) async fn in_process(
        server_config: ServerConfig,
        mut engine_config: EngineConfig,
        clients: usize,
    ) -> Result<Target, HarnessError> {
        // Every client holds one session at a time, all as the same (anonymous) caller.
        let sessions = &mut engine_config.sessions;
        sessions.max_sessions = sessions.max_sessions.max(clients * 2);
        sessions.max_sessions_per_caller = sessions.max_sessions_per_caller.max(clients * 2);
        let sandbox = engine_config.sandbox.clone();
        let pool_size = engine_config.box_pool_size;
        let engine = tokio::task::spawn_blocking(move || Engine::new(engine_config))
            .await
            .context("starting the engine")?
            .context("starting the engine")?;
        let engine = Arc::new(engine);
        let reaper = engine.spawn_reaper();
        let server = Server::bind(server_config, Arc::clone(&engine))
            .await?
            .spawn();
        let url = format!("ws://{}/ws/jsonrpc", server.local_addr());
        let target = Target {
            url,
            pid: std::process::id(),
            sandbox,
            local: Some(Local {
                engine,
                server,
                reaper,
                pool_size,
            }),
        };
        target.wait_until_idle(Duration::from_secs(15)).await;
        Ok(target)
    }

    /// The running server at `url` (loopback only), process `pid` or else the one listening
    /// on the URL's port.
    pub(super) fn external(url: &str, pid: Option<u32>) -> Result<Target, HarnessError> {
        let port = loopback_port(url)?;
        let pid = match pid {
            Some(pid) => pid,
            None => pid_listening_on(port).ok_or_else(|| {
                HarnessError::Target(format!("no process of this host listens on port {port}; is the server running? (or pass --server-pid)"))
            })?,
        };
        if descriptors(pid).is_none() {
            return Err(HarnessError::Target(format!("cannot read /proc/{pid}/fd: the server process must be visible to this one (run as root)")));
        }
        Ok(Target {
            url: url.to_string(),
            pid,
            sandbox: SandboxConfig::default(),
            local: None,
        })
    }

    /// Waits (at most `limit`) until an in-process server has no session and a full box pool,
    /// or until an external server's boxes stop changing.
    pub(super) async fn wait_until_idle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        let mut last = usize::MAX;
        let mut stable_since = Instant::now();
        while Instant::now() < until {
            match &self.local {
                Some(local) => {
                    let stats = local.engine.stats();
                    if stats.sessions == 0 && stats.pooled_boxes >= local.pool_size {
                        return;
                    }
                }
                None => {
                    let n = box_count(self);
                    if n != last {
                        last = n;
                        stable_since = Instant::now();
                    } else if stable_since.elapsed() >= Duration::from_secs(2) {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_driven() {
        assert_eq!(
            loopback_port("ws://127.0.0.1:5000/ws/jsonrpc").unwrap(),
            5000
        );
        assert_eq!(loopback_port("ws://localhost/ws/jsonrpc").unwrap(), 80);
        assert_eq!(loopback_port("ws://[::1]:6000/ws/jsonrpc").unwrap(), 6000);
        assert_eq!(loopback_port("ws://127.1.2.3:7").unwrap(), 7);
        assert!(loopback_port("ws://10.0.0.5:5000/ws/jsonrpc").is_err());
        assert!(loopback_port("ws://example.com:5000/").is_err());
        assert!(loopback_port("wss://127.0.0.1:5000/").is_err());
        assert!(loopback_port("http://127.0.0.1:5000/").is_err());
    }
}
