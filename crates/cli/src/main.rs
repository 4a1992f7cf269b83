//! The `codebeaker` command: runs untrusted programs in isolated boxes with no server at all,
//! checks what isolation the host can give, and measures it.
//!
//! The binary is also each box's setup process: when started as `codebeaker __box-init <fd>` it
//! hands over to [`codebeaker_sandbox::init::main`] before anything else (no threads, no runtime).

/// `println!` that returns the write's error instead of panicking on it, so that a closed pipe
/// (`codebeaker run ... --json | head -c 100`) ends the command quietly (see [`exit_code`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod batch;
mod bench;
mod doctor;
mod languages;
mod load;
mod mcp;
mod parse;
mod repl;
mod run;
mod serve;

use clap::{Parser, Subcommand};

/// Run untrusted code in many languages, quickly and safely.
#[derive(Parser)]
#[command(name = "codebeaker", version, about, long_about = None)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `codebeaker_sandbox=debug`.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a program in a fresh box and mirror its exit code.
    Run(run::RunArgs),
    /// List the languages, their versions here, and what to install for missing ones.
    Languages(languages::LanguagesArgs),
    /// Show which isolation primitives work on this host and what to do about missing ones, or
    /// (--leaks) what boxes left behind.
    Doctor(doctor::DoctorArgs),
    /// Time box creation and sandboxed runs against a bare process and bubblewrap.
    Bench(bench::BenchArgs),
    /// Serve the JSON-RPC (WebSocket) and REST API until Ctrl-C or SIGTERM.
    Serve(serve::ServeArgs),
    /// Run one program over many JSON inputs (JSON lines), through a server or in-process.
    Batch(batch::BatchArgs),
    /// An interactive context (Python, JavaScript or Bash) whose cells keep their state.
    Repl(repl::ReplArgs),
    /// Serve MCP (the Model Context Protocol) over stdin/stdout with an engine in this process,
    /// for an AI agent's MCP client to start.
    Mcp(mcp::McpArgs),
    /// Load a server with many clients, attack programs mixed in, and check that nothing leaked.
    Load(load::LoadArgs),
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(codebeaker_sandbox::INIT_ARG) {
        codebeaker_sandbox::init::main(&args[2..]);
    }
    let cli = Cli::parse();
    let json_logs =
        matches!(&cli.command, Commands::Serve(a) if a.log_format == serve::LogFormat::Json);
    init_logging(&cli.log, json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("codebeaker: cannot start the async runtime: {e}");
            std::process::exit(125);
        }
    };
    let code = runtime.block_on(async {
        let result = match cli.command {
            Commands::Run(a) => run::main(a).await,
            Commands::Languages(a) => languages::main(a).await,
            Commands::Doctor(a) => doctor::main(a).await,
            Commands::Bench(a) => bench::main(a).await,
            Commands::Serve(a) => serve::main(a).await,
            Commands::Batch(a) => batch::main(a).await,
            Commands::Load(a) => load::main(a).await,
            Commands::Repl(a) => repl::main(a).await,
            Commands::Mcp(a) => mcp::main(a).await,
        };
        exit_code(result)
    });
    drop(runtime);
    std::process::exit(code);
}

/// The exit code of a command's result: its own, or 125 with the error printed. A closed stdout
/// is no failure of the command (its reader had enough, as with `| head`): exit 0 quietly, as
/// other command-line tools do.
fn exit_code(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) if broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("codebeaker: {e:#}");
            125
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a terminal: a log written to a file or a pipe gets no escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}
