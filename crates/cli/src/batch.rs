//! `codebeaker batch`: one program over many JSON inputs, in sessions from a pool, through a
//! server (`--server ws://...`) or an engine in this process.
//!
//! Items are JSON lines `{"id": ..., "input": ...}`. Results are JSON lines in input order, on
//! standard output or in `--out`, written as soon as every earlier item is done; a progress bar
//! and the summary go to standard error. The exit code is 0 when every item succeeded, 1 when
//! any did not.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use codebeaker_client::{
    BatchExecutor, BatchItem, BatchItemResult, BatchOptions, BatchSummary, CodeBeakerOptions,
    Embedded, ItemStatus, RuntimeService, MAX_CONCURRENCY,
};
use codebeaker_engine::{Engine, EngineConfig};
use serde_json::Value;

use crate::parse;

#[derive(Args)]
pub struct BatchArgs {
    /// Language of the program (name or alias, see `codebeaker languages`).
    #[arg(short, long)]
    lang: String,
    /// The program file. It reads its input from `input_data` and leaves its answer in `result`.
    #[arg(short, long)]
    code: PathBuf,
    /// The items: JSON lines `{"id": ..., "input": ...}`; `-` for standard input.
    #[arg(short, long)]
    items: PathBuf,
    /// Items in progress at once (1-100).
    #[arg(short = 'j', long = "concurrency", default_value_t = 4)]
    concurrency: usize,
    /// A CodeBeaker server, e.g. ws://127.0.0.1:5000/ws/jsonrpc; without one, an engine runs in
    /// this process.
    #[arg(long, env = "CODEBEAKER_SERVER")]
    server: Option<String>,
    /// Bearer token for a server with authentication on.
    #[arg(long, env = "CODEBEAKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Write the results here instead of standard output.
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Start no more items after the first that does not succeed; the rest are reported skipped.
    #[arg(long)]
    stop_on_first_error: bool,
    /// Time limit of each item, e.g. 5s or 500ms.
    #[arg(long, default_value = "30s", value_parser = parse::duration)]
    timeout: Duration,
    /// Time limit of the whole batch; items not started by then are reported skipped.
    #[arg(long, value_parser = parse::duration)]
    deadline: Option<Duration>,
    /// Sessions kept in the pool (default: the concurrency).
    #[arg(long)]
    pool_size: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print the summary as JSON (on standard error) instead of text.
    #[arg(long)]
    summary_json: bool,
}

/// Reads items from JSON lines; a bad line is an error naming its number.
pub fn parse_items(text: &str, source: &str) -> Result<Vec<BatchItem>> {
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!(
                "{source} line {line_no}: not valid JSON: {e} (expected {{\"id\": ..., \"input\": ...}})"
            )
        })?;
        let Value::Object(mut object) = value else {
            bail!("{source} line {line_no}: expected an object {{\"id\": ..., \"input\": ...}}");
        };
        let Some(id) = object.remove("id") else {
            bail!("{source} line {line_no}: missing \"id\"");
        };
        let Some(input) = object.remove("input") else {
            bail!("{source} line {line_no}: missing \"input\"");
        };
        if let Some(extra) = object.keys().next() {
            bail!("{source} line {line_no}: unknown field {extra:?} (an item has \"id\" and \"input\")");
        }
        items.push(BatchItem { id, input });
    }
    Ok(items)
}

fn read_source(path: &Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading items from standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Writes results in input order as soon as every earlier one is in.
struct OrderedWriter {
    next: usize,
    waiting: BTreeMap<usize, String>,
    out: Box<dyn Write + Send>,
    error: Option<std::io::Error>,
}

impl OrderedWriter {
    fn push(&mut self, index: usize, line: String) {
        self.waiting.insert(index, line);
        while let Some(line) = self.waiting.remove(&self.next) {
            self.next += 1;
            if self.error.is_none() {
                if let Err(e) = writeln!(self.out, "{line}") {
                    self.error = Some(e);
                }
            }
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()
    }
}

pub async fn main(args: BatchArgs) -> Result<i32> {
    if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
        bail!(
            "--concurrency must be between 1 and {MAX_CONCURRENCY}, got {}",
            args.concurrency
        );
    }
    let code = std::fs::read_to_string(&args.code)
        .with_context(|| format!("reading the program {}", args.code.display()))?;
    let source = if args.items.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        args.items.display().to_string()
    };
    let items = parse_items(&read_source(&args.items)?, &source)?;
    let total = items.len();

    let timeout_ms = u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX);
    let pool_size = args.pool_size.unwrap_or(args.concurrency).max(1);
    let mut options = CodeBeakerOptions {
        session_pool_size: pool_size,
        max_concurrent_executions: Some(pool_size.min(args.concurrency)),
        default_timeout_ms: timeout_ms,
        enable_auto_cleanup: false,
        // A batch may queue behind slow items for a long time; the deadline bounds it instead.
        acquire_timeout_ms: 24 * 3600 * 1000,
        auth_token: args.token.clone(),
        ..CodeBeakerOptions::default()
    };
    let runtime = match &args.server {
        Some(url) => {
            options.websocket_url = url.clone();
            RuntimeService::connect(options)
                .await
                .with_context(|| format!("connecting to {url}"))?
        }
        None => {
            let engine = tokio::task::spawn_blocking(|| Engine::new(EngineConfig::default()))
                .await
                .context("starting the engine")??;
            RuntimeService::new(Arc::new(Embedded::new(Arc::new(engine))), options)?
        }
    };
    // Fail before the first item when the language cannot run here, or has no snippet mode.
    let language = runtime.language_info(&args.lang).await?;
    if !language.snippets {
        bail!(
            "{} has no snippet mode (input_data in, result out), which every batch item runs in; \
             batch a language whose `snippets` column says yes in `codebeaker languages`, or run \
             the program once per input with `codebeaker run`",
            language.name
        );
    }

    let out: Box<dyn Write + Send> = match &args.out {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout())),
    };
    let writer = Arc::new(Mutex::new(OrderedWriter {
        next: 0,
        waiting: BTreeMap::new(),
        out,
        error: None,
    }));

    let bar = if args.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    };
    let not_ok = Arc::new(AtomicUsize::new(0));
    let progress = {
        let bar = bar.clone();
        let writer = Arc::clone(&writer);
        let not_ok = Arc::clone(&not_ok);
        Arc::new(move |result: &BatchItemResult| {
            if result.status != ItemStatus::Ok {
                let n = not_ok.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_message(format!("{n} not ok"));
            }
            bar.inc(1);
            let line = serde_json::to_string(result).unwrap_or_else(|e| {
                format!("{{\"index\":{},\"status\":\"error\",\"reason\":\"result not serializable: {e}\"}}", result.index)
            });
            writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(result.index, line);
        })
    };
    let batch = BatchExecutor::new(
        runtime.clone(),
        BatchOptions {
            max_concurrency: args.concurrency,
            stop_on_first_error: args.stop_on_first_error,
            item_timeout_ms: Some(timeout_ms),
            deadline: args.deadline,
            tenant: None,
        },
    )?
    .on_progress(progress);
    let report = batch.run(&code, &args.lang, items).await;
    bar.finish_and_clear();
    writer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .finish()
        .context("writing the results")?;
    runtime.pool().close().await;

    print_summary(&report.summary, args.summary_json)?;
    let all_ok = report.summary.count(ItemStatus::Ok) == report.summary.total;
    Ok(if all_ok { 0 } else { 1 })
}

fn print_summary(s: &BatchSummary, json: bool) -> Result<()> {
    if json {
        eprintln!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let counts: Vec<String> = [
        ItemStatus::Ok,
        ItemStatus::Failed,
        ItemStatus::Timeout,
        ItemStatus::Error,
        ItemStatus::Skipped,
    ]
    .iter()
    .map(|status| format!("{} {}", s.count(*status), status.as_str()))
    .collect();
    eprintln!(
        "batch: {} items in {:.2} s ({:.1} items/s): {}",
        s.total,
        s.duration_ms as f64 / 1000.0,
        s.items_per_second,
        counts.join(", ")
    );
    eprintln!(
        "latency: avg {:.1} ms, p50 {} ms, p99 {} ms",
        s.latency_avg_ms, s.latency_p50_ms, s.latency_p99_ms
    );
    eprintln!(
        "sessions: {} created, {} reused, {} discarded, {:.1} runs per session",
        s.pool.creates, s.pool.reuses, s.pool.discards, s.pool.average_executions_per_session
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_parse_and_bad_lines_are_named() {
        let items = parse_items(
            "{\"id\": 1, \"input\": {\"v\": 1}}\n\n{\"id\": \"b\", \"input\": null}\n",
            "items.jsonl",
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].id, serde_json::json!("b"));
        let e = parse_items("{\"id\": 1, \"input\": 1}\n{\"id\": 2}\n", "items.jsonl").unwrap_err();
        assert_eq!(e.to_string(), "items.jsonl line 2: missing \"input\"");
        let e = parse_items("{\"id\": 1, \"input\": 1}\nnope\n", "x").unwrap_err();
        assert!(e.to_string().starts_with("x line 2: not valid JSON"), "{e}");
        let e = parse_items("[1]\n", "x").unwrap_err();
        assert!(
            e.to_string().starts_with("x line 1: expected an object"),
            "{e}"
        );
    }
}
