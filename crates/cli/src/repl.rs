//! `codebeaker repl`: an interactive context for people, over a server (`--server`) or an engine
//! in this process. Each cell runs in one context, so what one defines the next can use; a
//! cell's output streams as it comes, then its main result, its error, and a note when the
//! context's state was lost.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use codebeaker_client::{Backend, CallOptions, Client, ClientConfig, Embedded};
use codebeaker_engine::{Engine, EngineConfig};
use codebeaker_protocol::contexts::{ContextCreateParams, ContextRunParams, ContextRunResult};
use codebeaker_protocol::methods::{ExecutionEvent, OutputStream, SessionCreateParams};

use crate::parse;

#[derive(Args)]
pub struct ReplArgs {
    /// The context's language: python, javascript or bash.
    #[arg(long, default_value = "python")]
    lang: String,
    /// A CodeBeaker server, e.g. ws://127.0.0.1:5000/ws/jsonrpc; without one, an engine runs in
    /// this process.
    #[arg(long, env = "CODEBEAKER_SERVER")]
    server: Option<String>,
    /// Bearer token for a server with authentication on.
    #[arg(long, env = "CODEBEAKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Wall-clock limit of each cell; past it the cell is interrupted.
    #[arg(long, default_value = "60s", value_parser = parse::duration)]
    timeout: Duration,
}

pub async fn main(args: ReplArgs) -> Result<i32> {
    let mut engine = None;
    let backend: Arc<dyn Backend> = match &args.server {
        Some(url) => {
            let mut config = ClientConfig::new(url.clone());
            config.auth_token = args.token.clone();
            Arc::new(
                Client::connect(config)
                    .await
                    .with_context(|| format!("connecting to {url}"))?,
            )
        }
        None => {
            let made = tokio::task::spawn_blocking(|| Engine::new(EngineConfig::default()))
                .await
                .context("starting the engine")??;
            let made = Arc::new(made);
            engine = Some(Arc::clone(&made));
            Arc::new(Embedded::new(made))
        }
    };
    let result = repl(backend.as_ref(), &args).await;
    if let Some(engine) = engine {
        engine.shutdown().await;
    }
    result
}

async fn repl(backend: &dyn Backend, args: &ReplArgs) -> Result<i32> {
    let session = backend
        .session_create(SessionCreateParams {
            language: args.lang.clone(),
            ..Default::default()
        })
        .await?;
    let session_id = session.session_id;
    let context = backend
        .context_create(ContextCreateParams {
            session_id: session_id.clone(),
            language: Some(args.lang.clone()),
            ..Default::default()
        })
        .await?;
    eprintln!(
        "codebeaker repl: a {} context (a blank line ends a multi-line cell; Ctrl-D quits)",
        context.language
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        let Some(code) = read_cell(&mut lines)? else {
            break;
        };
        if code.trim().is_empty() {
            continue;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let params = ContextRunParams {
            session_id: session_id.clone(),
            context_id: context.context_id.clone(),
            code,
            timeout_ms: Some(u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX)),
            ..Default::default()
        };
        let options = CallOptions {
            events: Some(tx),
            ..CallOptions::default()
        };
        let printing = async {
            while let Some(event) = rx.recv().await {
                if let ExecutionEvent::Output(output) = event {
                    match output.stream {
                        OutputStream::Stdout => print!("{}", output.data),
                        OutputStream::Stderr => eprint!("{}", output.data),
                    }
                    let _ = std::io::stdout().flush();
                }
            }
        };
        let (result, ()) = tokio::join!(backend.context_run(params, options), printing);
        match result {
            Ok(result) => show(&result)?,
            Err(e) => eprintln!("codebeaker repl: {e}"),
        }
    }
    backend.session_close(&session_id).await?;
    Ok(0)
}

/// Reads one cell: a line, or (when the line opens a block) every line up to a blank one.
/// `None` at the end of input.
fn read_cell(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Result<Option<String>> {
    prompt(">>> ")?;
    let Some(first) = lines.next().transpose()? else {
        return Ok(None);
    };
    let opens = |l: &str| {
        let l = l.trim_end();
        l.ends_with(':') || l.ends_with('{') || l.ends_with('\\') || l.ends_with('(')
    };
    let mut cell = first.clone();
    if opens(&first) {
        loop {
            prompt("... ")?;
            match lines.next().transpose()? {
                Some(line) if !line.trim().is_empty() => {
                    cell.push('\n');
                    cell.push_str(&line);
                }
                _ => break,
            }
        }
    }
    Ok(Some(cell))
}

fn prompt(text: &str) -> Result<()> {
    let mut err = std::io::stderr().lock();
    write!(err, "{text}")?;
    err.flush()?;
    Ok(())
}

/// Prints a cell's results (their text) and its error.
fn show(result: &ContextRunResult) -> Result<()> {
    for shown in &result.results {
        match shown.data.get("text/plain").and_then(|v| v.as_str()) {
            Some(text) => outln!("{text}")?,
            None => {
                let kinds: Vec<&str> = shown.data.keys().map(String::as_str).collect();
                outln!("<{}>", kinds.join(", "))?
            }
        }
    }
    if let Some(error) = &result.error {
        if error.traceback.is_empty() {
            eprintln!("{}: {}", error.name, error.value);
        } else {
            eprint!("{}", error.traceback);
        }
    } else if !result.success {
        eprintln!(
            "{}: {}",
            result.status.as_str(),
            result.message.clone().unwrap_or_default()
        );
    }
    if result.state_lost {
        eprintln!("(the context's kernel was lost and restarted: its earlier state is gone)");
    }
    Ok(())
}
