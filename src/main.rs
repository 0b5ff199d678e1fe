//! `douyin-gateway`: serve, check, sandbox, demo, keygen, hash-key.
#![forbid(unsafe_code)]

mod man;

use clap::{Parser, Subcommand};
use douyin_gateway::config::{Config, Examples, Severity};
use douyin_gateway::{demo, sandbox, server};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// jemalloc, with its background thread purging freed pages (after 10 s unused): after a burst of
/// connections closes, the gateway shrinks back. glibc's malloc kept ~110 MB of 5,000 closed
/// connections for good; `scripts/rss-burst.py` measures it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "douyin-gateway",
    version = douyin_gateway::metrics::VERSION,
    about = "Credential-attaching reverse proxy for the Douyin Open Platform"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (refuses the example keys and placeholder secrets).
    Serve {
        /// Config file.
        #[arg(long, value_name = "FILE", default_value = "config.toml")]
        config: PathBuf,
        /// Start even with the example keys or placeholder secrets (a deliberate test install);
        /// each is still warned about.
        #[arg(long)]
        allow_example_keys: bool,
    },
    /// Validate a config and the secrets it names; exit 1 listing every problem.
    Check {
        /// Config file (the same as --config).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// Config file.
        #[arg(long, value_name = "FILE", default_value = "config.toml")]
        config: PathBuf,
        /// Accept the example keys and placeholder secrets, as `serve --allow-example-keys` does;
        /// each is still warned about.
        #[arg(long)]
        allow_example_keys: bool,
    },
    /// Run the Douyin Open Platform emulator.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        #[command(flatten)]
        opts: sandbox::SandboxOptions,
    },
    /// Sandbox and gateway in one process, with ready-to-paste curl lines.
    Demo,
    /// Print a fresh random 32-byte key, base64, for `encryption_key_env`.
    Keygen,
    /// Rewrite every stored token under the current encryption key (after a rotation).
    Rekey {
        /// Config file.
        #[arg(long, value_name = "FILE", default_value = "config.toml")]
        config: PathBuf,
    },
    /// Read an API key on stdin; print its hex SHA-256 for `api_key_sha256`.
    HashKey,
    /// Print a shell completion script (e.g. `douyin-gateway completions bash > /etc/bash_completion.d/douyin-gateway`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `target/release/douyin-gateway man > /usr/local/share/man/man1/douyin-gateway.1`.
    Man,
    /// Exit 0 if the gateway's `/healthz` answers 200 (a container health check without curl).
    Healthcheck {
        /// The admin listener's health URL (plain http).
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

fn init_logging() {
    init_logging_as(douyin_gateway::config::LogFormat::Text);
}

/// Logs to stderr, one event per line: readable text, or JSON objects (`[log] format = "json"`).
/// Text lines have their control characters escaped and no colours ([`douyin_gateway::logs`]).
/// The access log is written in batches by a thread of its own, in the same format
/// ([`douyin_gateway::logs::access`]); [`main`] flushes it before the process ends.
fn init_logging_as(format: douyin_gateway::config::LogFormat) {
    use douyin_gateway::logs::{access, Format};
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    let batched = match format {
        douyin_gateway::config::LogFormat::Text => Format::Text,
        douyin_gateway::config::LogFormat::Json => Format::Json,
    };
    access::install(batched, Box::new(std::io::stderr()));
    match format {
        douyin_gateway::config::LogFormat::Text => fmt
            .with_writer(douyin_gateway::logs::EscapeControls(std::io::stderr))
            .with_target(false)
            .with_ansi(false)
            .init(),
        douyin_gateway::config::LogFormat::Json => fmt
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// `[log] format` from a config file, read before the config is checked so that even the
/// problems with it are logged in the format asked for.
fn log_format_of(path: &std::path::Path) -> douyin_gateway::config::LogFormat {
    let format = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("log")?.get("format")?.as_str().map(str::to_owned));
    match format.as_deref() {
        Some("json") => douyin_gateway::config::LogFormat::Json,
        _ => douyin_gateway::config::LogFormat::Text,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    runtime_with(None)
}

fn runtime_with(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().build().expect("tokio runtime")
}

fn main() -> ExitCode {
    // Freed memory goes back to the system in the background, not only when another allocation
    // happens to pass by.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = Cli::parse();
    let code = run(cli);
    // The access lines still buffered (bounded: the writer may be stuck on a pipe nobody reads).
    douyin_gateway::logs::access::flush(Duration::from_secs(2));
    code
}

fn run(cli: Cli) -> ExitCode {
    match cli.cmd {
        Cmd::Check {
            file,
            config,
            allow_example_keys,
        } => check(&file.unwrap_or(config), examples(allow_example_keys)),
        Cmd::Serve {
            config,
            allow_example_keys,
        } => {
            init_logging_as(log_format_of(&config));
            // Proxy calls run on threads of their own (`server.worker_threads`, one current-thread
            // runtime each); this runtime carries the admin listener, maintenance and store events.
            runtime_with(Some(1)).block_on(serve(config, examples(allow_example_keys)))
        }
        Cmd::Sandbox { listen, opts } => {
            init_logging();
            runtime().block_on(run_sandbox(&listen, opts))
        }
        Cmd::Demo => {
            init_logging();
            runtime().block_on(demo::run())
        }
        Cmd::Rekey { config } => runtime().block_on(rekey(&config)),
        Cmd::Keygen => {
            use base64::Engine;
            let key: [u8; 32] = rand::random();
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "douyin-gateway", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Cmd::Man => man(),
        Cmd::Healthcheck { url, timeout_ms } => match healthcheck(&url, Duration::from_millis(timeout_ms)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("healthcheck: {url}: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::HashKey => hash_key(),
    }
}

/// `sandbox`: the platform emulator on `listen` until Ctrl-C.
async fn run_sandbox(listen: &str, opts: sandbox::SandboxOptions) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sandbox: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match sandbox::start(opts, listener) {
        Ok(s) => {
            println!("sandbox listening on {}", s.url());
            let _ = tokio::signal::ctrl_c().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sandbox: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `man`: the manual page, roff, on stdout.
fn man() -> ExitCode {
    use clap::CommandFactory;
    use std::io::Write;
    match std::io::stdout().write_all(man::render(&Cli::command()).as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("man: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `hash-key`: the hex SHA-256 of the key on stdin (without its line ending).
fn hash_key() -> ExitCode {
    let mut key = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut key) {
        eprintln!("hash-key: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let key = key.trim_end_matches(['\r', '\n']);
    if key.is_empty() {
        eprintln!("hash-key: no key on stdin");
        return ExitCode::FAILURE;
    }
    println!("{}", douyin_gateway::caller::hash_key(key));
    ExitCode::SUCCESS
}

async fn rekey(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok((c, _)) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let store = match douyin_gateway::store::Store::open(&config.store).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rekey: {e}");
            return ExitCode::FAILURE;
        }
    };
    match store.rekey().await {
        Ok(n) => {
            println!("rekey: {n} record(s) rewritten under the current key");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rekey: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What `--allow-example-keys` makes of the example keys and placeholder secrets.
fn examples(allowed: bool) -> Examples {
    if allowed {
        Examples::Warn
    } else {
        Examples::Refuse
    }
}

fn check(path: &std::path::Path, examples: Examples) -> ExitCode {
    match Config::load_with(path, examples) {
        Ok((config, warnings)) => {
            for w in &warnings {
                println!("{w}");
            }
            println!(
                "{}: valid: {} app(s), {} route(s), {} caller(s); store {}; proxy on {}, admin on {}",
                path.display(),
                config.apps.len(),
                config.routes.len(),
                config.callers.len(),
                format!("{:?}", config.store.kind).to_lowercase(),
                config.server.listen,
                config.server.admin_listen
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let errors = e.problems.iter().filter(|p| p.severity == Severity::Error).count();
            for p in &e.problems {
                println!("{p}");
            }
            println!("{}: invalid: {errors} error(s)", path.display());
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf, examples: Examples) -> ExitCode {
    let config = match Config::load_with(&path, examples) {
        Ok((config, warnings)) => {
            for w in &warnings {
                tracing::warn!("{}", w.located());
            }
            config
        }
        Err(e) => {
            for p in &e.problems {
                match p.severity {
                    Severity::Error => tracing::error!("{}", p.located()),
                    Severity::Warning => tracing::warn!("{}", p.located()),
                }
            }
            return ExitCode::FAILURE;
        }
    };
    // Handlers first: a SIGHUP arriving as soon as "gateway listening" is logged must reload,
    // not kill the process (its default action).
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let running = match server::start(config, Some(path.clone())).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // The access lines buffered so far go out now, whatever the reload's outcome.
                douyin_gateway::logs::access::flush_soon();
                // A reload is held to what the start was: the example keys stay refused.
                match async { examples_refused(&path, examples)?; running.reload().await }.await {
                    Ok(()) => tracing::info!("config reloaded"),
                    Err(e) => {
                        for line in e.lines().filter(|l| !l.is_empty()) {
                            let line = line.strip_prefix("error: ").unwrap_or(line);
                            tracing::error!("config reload refused, the old config keeps serving: {line}");
                        }
                    }
                }
            }
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    running.stop().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The errors of the file at `path` when `examples` refuses what it holds (one per line, as a
/// refused reload logs them); Ok when it does not, or when it is refused for other reasons too
/// (the reload names those).
fn examples_refused(path: &std::path::Path, examples: Examples) -> Result<(), String> {
    if examples == Examples::Warn {
        return Ok(());
    }
    match (Config::load_with(path, examples), Config::load(path)) {
        (Err(e), Ok(_)) => Err(e
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| format!("{p}\n"))
            .collect()),
        _ => Ok(()),
    }
}

/// GETs a plain-http health URL: Ok when it answers 200 within `timeout`.
fn healthcheck(url: &str, timeout: Duration) -> Result<(), String> {
    use std::io::Write;
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs (the admin listener is plain HTTP)".into());
    }
    let host = uri.host().ok_or("no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the host resolves to no address")?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| format!("no answer: {e}"))?;
    match &head[..] {
        [b'H', b'T', b'T', b'P', b'/', _, _, _, b' ', b'2', b'0', b'0'] => Ok(()),
        other => Err(format!("answered {:?}", String::from_utf8_lossy(other))),
    }
}
