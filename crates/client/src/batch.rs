//! The batch executor: one program over many inputs, with bounded concurrency.
//!
//! Each item takes exactly one lease (through [`RuntimeService`]), so a batch can never deadlock
//! on its own pool, whatever the concurrency. Results come back in input order, one per item:
//! an item that was not run (after the first failure with `stop_on_first_error`, or past the
//! deadline) is reported as `skipped` with the reason, never dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pool::PoolStats;
use crate::runtime::{ExecuteRequest, RuntimeResult, RuntimeService, RuntimeStatus};
use crate::ClientError;

/// Highest concurrency a batch accepts.
pub const MAX_CONCURRENCY: usize = 100;

/// One input of a batch: `{"id": ..., "input": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    /// The caller's id for the item, echoed in its result (any JSON).
    pub id: Value,
    /// Bound to `input_data`.
    pub input: Value,
}

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Items in progress at once, 1 to 100 (4).
    pub max_concurrency: usize,
    /// After the first item that does not succeed, start no more; the rest are `skipped`.
    pub stop_on_first_error: bool,
    /// Time limit of each item in milliseconds; the runtime's default when `None`.
    pub item_timeout_ms: Option<u64>,
    /// The whole batch: no item starts after this, and running items get at most what is left.
    pub deadline: Option<Duration>,
    /// Pool the batch's sessions under this tenant.
    pub tenant: Option<String>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_concurrency: 4,
            stop_on_first_error: false,
            item_timeout_ms: None,
            deadline: None,
            tenant: None,
        }
    }
}

impl BatchOptions {
    /// Checks the bounds; the error names the setting.
    pub fn validate(&self) -> Result<(), ClientError> {
        if !(1..=MAX_CONCURRENCY).contains(&self.max_concurrency) {
            return Err(ClientError::Config(format!(
                "max_concurrency must be between 1 and {MAX_CONCURRENCY}, got {}",
                self.max_concurrency
            )));
        }
        if self.item_timeout_ms == Some(0) {
            return Err(ClientError::Config(
                "item_timeout_ms must be positive".into(),
            ));
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(ClientError::Config("deadline must be positive".into()));
        }
        Ok(())
    }
}

/// How one item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// The program succeeded on this input.
    Ok,
    /// The program failed on this input (error, compile error, limit other than time).
    Failed,
    /// The time limit ran out.
    Timeout,
    /// No answer: unsupported language, pool, connection or server failure.
    Error,
    /// Not run: an earlier item failed with `stop_on_first_error`, or the deadline passed.
    Skipped,
}

impl ItemStatus {
    /// The name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Ok => "ok",
            ItemStatus::Failed => "failed",
            ItemStatus::Timeout => "timeout",
            ItemStatus::Error => "error",
            ItemStatus::Skipped => "skipped",
        }
    }

    fn of(result: &RuntimeResult) -> ItemStatus {
        match result.status {
            _ if result.success => ItemStatus::Ok,
            RuntimeStatus::Timeout => ItemStatus::Timeout,
            RuntimeStatus::UnsupportedLanguage | RuntimeStatus::Unavailable => ItemStatus::Error,
            _ => ItemStatus::Failed,
        }
    }
}

/// The result of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemResult {
    /// Position in the input, from 0.
    pub index: usize,
    /// The item's id, as given.
    pub id: Value,
    /// How it ended.
    pub status: ItemStatus,
    /// Why it was skipped; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The run's result; absent when skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RuntimeResult>,
}

/// The numbers of a whole batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchSummary {
    /// Items given.
    pub total: usize,
    /// Items by status (`ok`, `failed`, `timeout`, `error`, `skipped`; all present).
    pub counts: BTreeMap<String, usize>,
    /// Wall-clock time of the batch.
    pub duration_ms: u64,
    /// Mean latency of the items that ran (lease + run + round trip).
    pub latency_avg_ms: f64,
    /// Median latency.
    pub latency_p50_ms: u64,
    /// 99th percentile latency.
    pub latency_p99_ms: u64,
    /// Items that ran, per second of the batch.
    pub items_per_second: f64,
    /// The pool at the end of the batch.
    pub pool: PoolStats,
}

impl BatchSummary {
    /// The count for one status.
    pub fn count(&self, status: ItemStatus) -> usize {
        self.counts.get(status.as_str()).copied().unwrap_or(0)
    }
}

/// Every result, in input order, and the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchReport {
    /// One result per item, in input order.
    pub results: Vec<BatchItemResult>,
    /// The numbers.
    pub summary: BatchSummary,
}

/// Called once per item as it finishes (in completion order), for progress reporting.
pub type ProgressFn = Arc<dyn Fn(&BatchItemResult) + Send + Sync>;

/// Runs one program over many inputs.
///
/// ```no_run
/// # async fn demo(runtime: codebeaker_client::RuntimeService) -> Result<(), codebeaker_client::ClientError> {
/// use codebeaker_client::{BatchExecutor, BatchItem, BatchOptions, ItemStatus};
/// use serde_json::json;
///
/// let items: Vec<BatchItem> = (0..100)
///     .map(|n| BatchItem { id: json!(n), input: json!({"value": n}) })
///     .collect();
/// let batch = BatchExecutor::new(runtime, BatchOptions { max_concurrency: 8, ..Default::default() })?;
/// let report = batch.run("result = input_data['value'] * 2", "python", items).await;
/// assert_eq!(report.results.len(), 100);
/// println!("{} ok, p99 {} ms", report.summary.count(ItemStatus::Ok), report.summary.latency_p99_ms);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BatchExecutor {
    runtime: RuntimeService,
    options: BatchOptions,
    progress: Option<ProgressFn>,
}

impl BatchExecutor {
    /// A batch executor over `runtime`; fails when the options are out of bounds.
    pub fn new(runtime: RuntimeService, options: BatchOptions) -> Result<Self, ClientError> {
        options.validate()?;
        Ok(BatchExecutor {
            runtime,
            options,
            progress: None,
        })
    }

    /// Calls `progress` as each item finishes (skipped items included).
    pub fn on_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Runs `code` over every item and returns every result in input order.
    pub async fn run(&self, code: &str, language: &str, items: Vec<BatchItem>) -> BatchReport {
        let started = Instant::now();
        let deadline = self.options.deadline.map(|d| started + d);
        let total = items.len();
        let shared = Arc::new(Shared {
            items,
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            results: Mutex::new((0..total).map(|_| None).collect()),
        });
        let workers = self.options.max_concurrency.min(total.max(1));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let shared = Arc::clone(&shared);
            let runtime = self.runtime.clone();
            let options = self.options.clone();
            let progress = self.progress.clone();
            let code = code.to_string();
            let language = language.to_string();
            tasks.spawn(async move {
                worker(
                    &shared, &runtime, &options, progress, &code, &language, deadline,
                )
                .await
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                // A worker that panicked leaves its claimed item empty; it is reported below.
                tracing::error!(error = %e, "a batch worker failed");
            }
        }
        let duration = started.elapsed();
        let slots = std::mem::take(&mut *shared.results.lock().unwrap_or_else(|p| p.into_inner()));
        let results: Vec<BatchItemResult> = slots
            .into_iter()
            .enumerate()
            .map(|(index, slot)| {
                slot.unwrap_or_else(|| BatchItemResult {
                    index,
                    id: shared
                        .items
                        .get(index)
                        .map_or(Value::Null, |i| i.id.clone()),
                    status: ItemStatus::Error,
                    reason: Some("the worker running this item failed".into()),
                    result: None,
                })
            })
            .collect();
        let summary = summarize(&results, duration, self.runtime.stats());
        BatchReport { results, summary }
    }
}

struct Shared {
    items: Vec<BatchItem>,
    next: AtomicUsize,
    stop: AtomicBool,
    results: Mutex<Vec<Option<BatchItemResult>>>,
}

async fn worker(
    shared: &Shared,
    runtime: &RuntimeService,
    options: &BatchOptions,
    progress: Option<ProgressFn>,
    code: &str,
    language: &str,
    deadline: Option<Instant>,
) {
    loop {
        let index = shared.next.fetch_add(1, Ordering::SeqCst);
        let Some(item) = shared.items.get(index) else {
            return;
        };
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let skip = if shared.stop.load(Ordering::SeqCst) {
            Some("an earlier item failed (stop on first error)")
        } else if remaining.is_some_and(|r| r.as_millis() == 0) {
            Some("the batch deadline passed before this item started")
        } else {
            None
        };
        let result = match skip {
            Some(reason) => BatchItemResult {
                index,
                id: item.id.clone(),
                status: ItemStatus::Skipped,
                reason: Some(reason.to_string()),
                result: None,
            },
            None => {
                let configured = options
                    .item_timeout_ms
                    .unwrap_or(runtime.options().default_timeout_ms);
                let timeout_ms = match remaining {
                    Some(r) => configured.min(u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
                    None => configured,
                };
                let run = runtime
                    .run(ExecuteRequest {
                        code: code.to_string(),
                        language: language.to_string(),
                        input: item.input.clone(),
                        timeout_ms: Some(timeout_ms.max(1)),
                        tenant: options.tenant.clone(),
                        stdin: None,
                    })
                    .await;
                let status = ItemStatus::of(&run);
                if status != ItemStatus::Ok && options.stop_on_first_error {
                    shared.stop.store(true, Ordering::SeqCst);
                }
                BatchItemResult {
                    index,
                    id: item.id.clone(),
                    status,
                    reason: None,
                    result: Some(run),
                }
            }
        };
        if let Some(progress) = &progress {
            progress(&result);
        }
        if let Some(slot) = shared
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(index)
        {
            *slot = Some(result);
        }
    }
}

/// The `p`th percentile (0 to 100) of `sorted`, which must be in ascending order, by nearest
/// rank: the smallest value with at least `p`% of the values at or below it. An empty slice
/// gives `T::default()` (zero for numbers and [`Duration`]).
///
/// The one percentile of the workspace: the batch summary, the load tester and the benchmarks
/// all report with it.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize(results: &[BatchItemResult], duration: Duration, pool: PoolStats) -> BatchSummary {
    let mut counts: BTreeMap<String, usize> = [
        ItemStatus::Ok,
        ItemStatus::Failed,
        ItemStatus::Timeout,
        ItemStatus::Error,
        ItemStatus::Skipped,
    ]
    .iter()
    .map(|s| (s.as_str().to_string(), 0))
    .collect();
    for r in results {
        *counts.entry(r.status.as_str().to_string()).or_default() += 1;
    }
    let mut latencies: Vec<u64> = results
        .iter()
        .filter_map(|r| r.result.as_ref().map(|x| x.total_ms))
        .collect();
    latencies.sort_unstable();
    let ran = latencies.len();
    let secs = duration.as_secs_f64();
    BatchSummary {
        total: results.len(),
        counts,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        latency_avg_ms: if ran == 0 {
            0.0
        } else {
            latencies.iter().sum::<u64>() as f64 / ran as f64
        },
        latency_p50_ms: percentile(&latencies, 50.0),
        latency_p99_ms: percentile(&latencies, 99.0),
        items_per_second: if secs > 0.0 { ran as f64 / secs } else { 0.0 },
        pool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile::<u64>(&[], 50.0), 0);
        let ms: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 90.0), Duration::from_millis(9));
        assert_eq!(percentile::<Duration>(&[], 99.0), Duration::ZERO);
        let f = [0.5, 1.5, 2.5, 3.5];
        assert_eq!(percentile(&f, 50.0), 1.5);
        assert_eq!(percentile(&f, 0.0), 0.5);
        assert_eq!(percentile(&f, 100.0), 3.5);
    }

    #[test]
    fn concurrency_is_bounded() {
        for bad in [0, 101] {
            let o = BatchOptions {
                max_concurrency: bad,
                ..Default::default()
            };
            assert!(o.validate().is_err());
        }
        assert!(BatchOptions {
            max_concurrency: 100,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }
}
