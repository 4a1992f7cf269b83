//! The pool's guarantees, against a fake backend (fast and deterministic): bounds under pressure,
//! no starvation, bounded waits, nothing leaked by cancelled callers, broken and expired sessions
//! never reused. The runtime service's timeout and retry rules too.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codebeaker_client::{
    CallOptions, ClientError, CodeBeakerOptions, PoolConfig, PoolKey, RuntimeService,
    RuntimeStatus, SessionPool,
};
use codebeaker_protocol::commands::{Command, ExecuteCommand};
use common::FakeBackend;
use serde_json::json;

fn pool(backend: &Arc<FakeBackend>, config: PoolConfig) -> SessionPool {
    SessionPool::new(backend.clone(), config).expect("pool")
}

fn execute(code: &str) -> Command {
    Command::Execute(ExecuteCommand {
        code: code.into(),
        input: Some(json!({})),
        ..Default::default()
    })
}

/// Fails the test instead of hanging it.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("deadlock: the test did not finish")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounds_hold_under_pressure_across_many_keys() {
    let backend = Arc::new(FakeBackend::new());
    backend.create_delay_ms.store(3, Ordering::Relaxed);
    backend.close_delay_ms.store(2, Ordering::Relaxed);
    let pool = pool(
        &backend,
        PoolConfig {
            max_sessions: 3,
            ..Default::default()
        },
    );
    let peak = Arc::new(AtomicUsize::new(0));
    let keys = ["python", "javascript", "bash", "ruby", "go"];
    let tasks = (0..300).map(|i| {
        let pool = pool.clone();
        let peak = Arc::clone(&peak);
        let key = match i % 7 {
            0 => PoolKey::tenant(keys[i % keys.len()], "tenant-a"),
            _ => PoolKey::language(keys[i % keys.len()]),
        };
        async move {
            let mut lease = pool.acquire_key(key.clone()).await.expect("a lease");
            peak.fetch_max(pool.stats().total, Ordering::Relaxed);
            assert_eq!(lease.key(), Some(&key));
            let reply = lease
                .execute(execute(&format!("sleep:{}", i % 3)), CallOptions::default())
                .await
                .expect("execute");
            assert!(reply.success);
        }
    });
    bounded(futures_util::future::join_all(tasks)).await;
    let stats = pool.stats();
    assert!(peak.load(Ordering::Relaxed) <= 3);
    assert!(backend.peak_sessions.load(Ordering::Relaxed) <= 3);
    assert!(stats.total <= 3, "{stats:?}");
    assert_eq!(stats.active, 0, "{stats:?}");
    assert_eq!(stats.waiting, 0, "{stats:?}");
    assert!(
        stats.evictions > 0,
        "other keys' idle sessions made room: {stats:?}"
    );
    assert_eq!(stats.creates + stats.reuses, 300, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_head_of_the_queue_is_not_starved_by_reusers() {
    let backend = Arc::new(FakeBackend::new());
    let pool = pool(
        &backend,
        PoolConfig {
            max_sessions: 1,
            ..Default::default()
        },
    );
    let held = pool.acquire("python").await.expect("lease");
    let order = Arc::new(Mutex::new(Vec::new()));
    // bash queues first; then a crowd of python callers that could each reuse the session.
    let bash = {
        let pool = pool.clone();
        let order = Arc::clone(&order);
        tokio::spawn(async move {
            let lease = pool.acquire("bash").await.expect("bash lease");
            order.lock().unwrap().push("bash");
            drop(lease);
        })
    };
    while pool.stats().waiting < 1 {
        tokio::task::yield_now().await;
    }
    let pythons: Vec<_> = (0..30)
        .map(|_| {
            let pool = pool.clone();
            let order = Arc::clone(&order);
            tokio::spawn(async move {
                let lease = pool.acquire("python").await.expect("python lease");
                order.lock().unwrap().push("python");
                tokio::time::sleep(Duration::from_millis(1)).await;
                drop(lease);
            })
        })
        .collect();
    while pool.stats().waiting < 31 {
        tokio::task::yield_now().await;
    }
    drop(held);
    bounded(bash).await.expect("bash task");
    for p in pythons {
        bounded(p).await.expect("python task");
    }
    let order = order.lock().unwrap();
    let bash_at = order.iter().position(|o| *o == "bash").expect("bash ran");
    assert!(
        bash_at <= codebeaker_client::pool::MAX_BYPASS as usize,
        "bash waited behind {bash_at} later callers"
    );
    assert_eq!(order.len(), 31);
}

#[tokio::test]
async fn a_wait_is_bounded_and_says_why() {
    let backend = Arc::new(FakeBackend::new());
    let pool = pool(
        &backend,
        PoolConfig {
            max_sessions: 1,
            acquire_timeout: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let held = pool.acquire("python").await.expect("lease");
    let error = pool.acquire("python").await.expect_err("no second lease");
    match &error {
        ClientError::PoolTimeout { detail, .. } => {
            assert!(detail.contains("1 of 1 sessions leased"), "{detail}")
        }
        other => panic!("expected PoolTimeout, got {other:?}"),
    }
    assert_eq!(pool.stats().acquire_timeouts, 1);
    drop(held);
    let again = pool.acquire("python").await.expect("a lease after release");
    assert!(again.reused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_callers_leak_neither_slots_nor_sessions() {
    let backend = Arc::new(FakeBackend::new());
    let pool = pool(
        &backend,
        PoolConfig {
            max_sessions: 2,
            ..Default::default()
        },
    );
    let a = pool.acquire("python").await.expect("a");
    let b = pool.acquire("bash").await.expect("b");
    // Callers that give up while queued.
    for _ in 0..10 {
        let r = tokio::time::timeout(Duration::from_millis(5), pool.acquire("ruby")).await;
        assert!(r.is_err());
    }
    drop(a);
    drop(b);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stats = pool.stats();
    assert_eq!((stats.active, stats.waiting), (0, 0), "{stats:?}");
    assert!(stats.total <= 2, "{stats:?}");

    // A caller that gives up while its session is being created: the session still lands in
    // the pool, idle, and the slot is not lost.
    backend.create_delay_ms.store(200, Ordering::Relaxed);
    let r = tokio::time::timeout(Duration::from_millis(50), pool.acquire("go")).await;
    assert!(r.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = pool.stats();
    assert_eq!(stats.active, 0, "{stats:?}");
    assert!(stats.total <= 2, "{stats:?}");
    backend.create_delay_ms.store(0, Ordering::Relaxed);
    let go = bounded(pool.acquire("go")).await.expect("go");
    assert!(go.reused(), "the abandoned creation was kept");
}

#[tokio::test]
async fn broken_sessions_are_closed_not_reused() {
    let backend = Arc::new(FakeBackend::new());
    let pool = pool(&backend, PoolConfig::default());
    let mut lease = pool.acquire("python").await.expect("lease");
    let first = lease.session_id().to_string();
    let reply = lease
        .execute(execute("status:timeout"), CallOptions::default())
        .await
        .expect("a reply");
    assert!(!reply.success);
    assert!(lease.is_broken());
    drop(lease);
    let lease = pool.acquire("python").await.expect("lease");
    assert!(!lease.reused());
    assert_ne!(lease.session_id(), first);
    drop(lease);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!backend.sessions.lock().unwrap().contains_key(&first));
    assert_eq!(pool.stats().discards, 1);

    // A failing program does not break its session.
    let mut lease = pool.acquire("python").await.expect("lease");
    let id = lease.session_id().to_string();
    lease
        .execute(execute("status:runtime_error"), CallOptions::default())
        .await
        .expect("reply");
    assert!(!lease.is_broken());
    drop(lease);
    assert_eq!(
        pool.acquire("python").await.expect("lease").session_id(),
        id
    );

    // No answer in time breaks it too.
    let mut lease = pool.acquire("python").await.expect("lease");
    let error = lease
        .execute(
            execute("sleep:500"),
            CallOptions::with_timeout(Duration::from_millis(20)),
        )
        .await
        .expect_err("timeout");
    assert!(matches!(error, ClientError::Timeout { .. }));
    assert!(lease.is_broken());
}

#[tokio::test]
async fn sessions_retire_after_max_executions_idleness_and_lifetime() {
    let backend = Arc::new(FakeBackend::new());
    let pool = pool(
        &backend,
        PoolConfig {
            max_executions_per_session: Some(2),
            idle_timeout: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let mut lease = pool.acquire("python").await.expect("lease");
    for _ in 0..2 {
        lease
            .execute(execute("ok"), CallOptions::default())
            .await
            .expect("run");
    }
    drop(lease);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(pool.stats().expirations, 1);
    assert_eq!(backend.open_sessions(), 0);

    let lease = pool.acquire("python").await.expect("lease");
    drop(lease);
    assert_eq!(pool.stats().idle, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(pool.cleanup().await, 1, "the idle session expired");
    assert_eq!(pool.stats().total, 0);
    assert_eq!(backend.open_sessions(), 0);

    let short = SessionPool::new(
        backend.clone(),
        PoolConfig {
            max_lifetime: Duration::from_millis(50),
            cleanup_interval: Some(Duration::from_millis(20)),
            ..Default::default()
        },
    )
    .expect("pool");
    drop(short.acquire("python").await.expect("lease"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        short.stats().total,
        0,
        "the cleanup task closed the old session"
    );
}

#[tokio::test]
async fn warm_up_fills_free_slots_only_and_close_refuses_new_leases() {
    let backend = Arc::new(FakeBackend::new());
    let pool = pool(
        &backend,
        PoolConfig {
            max_sessions: 2,
            ..Default::default()
        },
    );
    assert_eq!(pool.warm_up("python", 5).await.expect("warm up"), 2);
    assert_eq!(pool.stats().idle, 2);
    let lease = pool.acquire("python").await.expect("lease");
    assert!(lease.reused());
    drop(lease);
    pool.close().await;
    assert!(matches!(
        pool.acquire("python").await,
        Err(ClientError::PoolClosed)
    ));
    assert_eq!(backend.open_sessions(), 0);
}

#[tokio::test]
async fn the_runtime_service_times_out_on_the_client_and_discards_the_session() {
    let backend = Arc::new(FakeBackend::new());
    let runtime = RuntimeService::new(
        backend.clone(),
        CodeBeakerOptions {
            enable_auto_cleanup: false,
            timeout_grace_ms: 50,
            ..Default::default()
        },
    )
    .expect("runtime");
    let result = runtime
        .execute("sleep:5000", "python", json!({}), Some(50))
        .await;
    assert!(!result.success);
    assert_eq!(result.status, RuntimeStatus::Timeout);
    assert!(result.error.unwrap_or_default().contains("no response"));
    assert_eq!(runtime.stats().discards, 1);
}

#[tokio::test]
async fn the_runtime_service_retries_once_when_a_pooled_session_is_gone() {
    let backend = Arc::new(FakeBackend::new());
    let runtime = RuntimeService::new(
        backend.clone(),
        CodeBeakerOptions {
            enable_auto_cleanup: false,
            ..Default::default()
        },
    )
    .expect("runtime");
    let first = runtime.execute("ok", "py", json!({"a": 1}), None).await;
    assert!(first.success, "{:?}", first.error);
    assert_eq!(first.output, Some(json!({"a": 1})));
    backend.forget_all();
    let second = runtime.execute("ok", "python", json!({"a": 2}), None).await;
    assert!(second.success, "{:?}", second.error);
    assert!(!second.session_reused);
    assert_eq!(runtime.stats().discards, 1);
}

#[tokio::test]
async fn unsupported_and_unavailable_languages_fail_without_a_session() {
    let backend = Arc::new(FakeBackend::new());
    let runtime = RuntimeService::new(backend.clone(), CodeBeakerOptions::default()).expect("rt");
    for language in ["cobol", "typescript"] {
        let result = runtime.execute("x", language, json!({}), None).await;
        assert_eq!(result.status, RuntimeStatus::UnsupportedLanguage);
        assert!(result
            .error
            .unwrap_or_default()
            .contains("Unsupported language"));
    }
    assert_eq!(backend.creates.load(Ordering::Relaxed), 0);
    let strict = RuntimeService::new(
        backend.clone(),
        CodeBeakerOptions {
            strict_language_mapping: true,
            ..Default::default()
        },
    )
    .expect("rt");
    let result = strict.execute("x", "bash", json!({}), None).await;
    assert_eq!(result.status, RuntimeStatus::UnsupportedLanguage);
    let result = strict.execute("ok", "python", json!({}), None).await;
    assert!(result.success);
}

#[tokio::test]
async fn a_failed_run_never_carries_an_output() {
    let backend = Arc::new(FakeBackend::new());
    let runtime = RuntimeService::new(backend, CodeBeakerOptions::default()).expect("rt");
    let ok = runtime.execute("ok", "python", json!({"x": 1}), None).await;
    assert_eq!(ok.output, Some(json!({"x": 1})));
    let failed = runtime
        .execute("status:runtime_error", "python", json!({"x": 1}), None)
        .await;
    assert!(!failed.success);
    assert_eq!(failed.output, None, "no stale output from an earlier run");
    assert_eq!(failed.status, RuntimeStatus::RuntimeError);
}
