//! The `rekey` binary: serve, `--check` a config, show what `--rewrite` does to a key, or
//! `migrate` existing keys to the names the rules give them.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rekey::config::Config;
use rekey::migrate::progress::{Mode, Progress};
use rekey::server::{ServeOptions, Server};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "rekey",
    version,
    about = "Redis proxy that rewrites key prefixes by rules"
)]
struct Cli {
    /// Config file (TOML).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    /// Listen address, without a config file (or overriding its `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Upstream URL, without a config file (or overriding its `upstream`).
    #[arg(long)]
    upstream: Option<String>,
    /// Validate the config and exit 0 (valid) or 1 (with the reason).
    #[arg(long)]
    check: bool,
    /// Show what KEY becomes upstream, and how the upstream name maps back.
    #[arg(long, value_name = "KEY")]
    rewrite: Option<String>,
    /// The client identity (an [[apps]] name or AUTH user) for --rewrite.
    #[arg(long, value_name = "NAME", requires = "rewrite")]
    app: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Move the keys apps wrote before rekey to the names the rules give them.
    ///
    /// Keeps value, type and TTL (RENAMENX; in a cluster, across slots, DUMP, RESTORE ABSTTL
    /// and a delete that checks the old key did not change), never overwrites a name that
    /// exists. Idempotent: run it again to finish an interrupted run. Exit status: 0 every
    /// key moved, 1 something failed, 2 collisions left old keys in place.
    Migrate {
        /// Print what would move (and what would collide); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most N keys moved per second.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        rate: Option<u32>,
        /// The client identity (an [[apps]] name or AUTH user) whose rules apply.
        #[arg(long, value_name = "NAME")]
        app: Option<String>,
        /// Move keys back from the rules' upstream names to the apps' names (rules whose
        /// match is one literal prefix and whose replace is a fixed prefix).
        #[arg(long)]
        reverse: bool,
        /// No progress bar or log lines (the per-key lines and the summary still print).
        #[arg(long, short = 'q')]
        quiet: bool,
    },
}

fn load(cli: &Cli) -> Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::plain(
            cli.listen.as_deref().unwrap_or("127.0.0.1:6380"),
            cli.upstream.as_deref().unwrap_or("redis://127.0.0.1:6379"),
        )?,
    };
    if cli.config.is_some() {
        if let Some(l) = &cli.listen {
            let plain = Config::plain(l, "redis://127.0.0.1:6379")?;
            // `--listen` replaces the plain listeners; apps' and TLS listeners stay.
            config.listeners.retain(|x| x.app.is_some() || x.tls);
            config.listeners.splice(0..0, plain.listeners);
        }
        if let Some(u) = &cli.upstream {
            let mut target = Config::plain("127.0.0.1:0", u)?.upstream;
            // A `rediss://` override uses the file's `[tls.upstream]`, when it has one.
            let file_tls = config.upstream.template().tls.clone();
            if let (Some(tls), rekey::config::UpstreamTarget::Single(url)) = (file_tls, &mut target)
            {
                if url.tls.is_some() {
                    url.tls = Some(tls);
                }
            }
            config.upstream = target;
        }
    }
    Ok(config)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Installed before the config is compiled: rule counters register against it.
    let metrics = rekey::stats::install().context("install the Prometheus recorder")?;
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) if cli.check => {
            eprintln!("invalid: {e:#}");
            std::process::exit(1);
        }
        Err(e) => return Err(e),
    };
    if cli.check {
        println!(
            "ok: {} listener(s), upstream {}, {} rule(s)",
            config.listeners.len(),
            config.upstream,
            config.rules.rules().len()
        );
        return Ok(());
    }
    if let Some(Command::Migrate {
        dry_run,
        rate,
        app,
        reverse,
        quiet,
    }) = &cli.command
    {
        let options = rekey::migrate::Options {
            dry_run: *dry_run,
            rate: *rate,
            app: app.clone(),
            reverse: *reverse,
        };
        let mode = if *quiet { Mode::Quiet } else { Mode::detect() };
        let code = migrate(&config, &options, mode)?;
        std::process::exit(code);
    }
    if let Some(key) = &cli.rewrite {
        print!("{}", rewrite_report(&config, key, cli.app.as_deref()));
        return Ok(());
    }
    let options = ServeOptions {
        metrics: Some(metrics),
        upstream_override: cli.upstream.as_ref().map(|_| config.upstream.clone()),
    };
    // Accepting, admin and reload run here; clients are served by the worker threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(serve(config, options))
}

/// `--rewrite`: the forward rewrite of a key and the reverse mapping of the result.
fn rewrite_report(config: &Config, key: &str, app: Option<&str>) -> String {
    let rules = &config.rules;
    match rules.forward(app, key.as_bytes()) {
        None => format!("{key} -> {key} (no rule matches; passes unchanged)\n"),
        Some(rw) => {
            let upstream = String::from_utf8_lossy(&rw.apply(key.as_bytes())).into_owned();
            let app_prefix = &key[..rw.prefix_len];
            let name = &rules.rules()[rw.rule].name;
            format!(
                "{key} -> {upstream} (rule {name:?}: prefix {app_prefix:?} -> {:?})\n{upstream} -> {key} (in replies to this client)\n",
                String::from_utf8_lossy(&rw.to)
            )
        }
    }
}

/// `rekey migrate`: runs it, prints the summary, and returns the exit status.
fn migrate(config: &Config, options: &rekey::migrate::Options, mode: Mode) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut progress = Progress::new(mode, options.dry_run);
    let summary = runtime
        .block_on(async {
            // `[upstream_auth]`: migrate logs in with the same live credential as serving.
            let mut config = config.clone();
            if let Some(spec) = &config.upstream_auth {
                let creds = rekey::upstream::credentials::Credentials::start(spec).await?;
                let creds = rekey::upstream::credentials::CredentialRef(creds);
                config.upstream.with_credentials(Some(creds));
            }
            rekey::migrate::run(&config, options, &mut progress)
                .await
                .map_err(anyhow::Error::from)
        })
        .context("rekey migrate stopped (what it moved stays moved: run it again to go on)")?;
    drop(progress);
    print!("{}", summary.report());
    std::io::Write::flush(&mut std::io::stdout()).context("stdout")?;
    Ok(summary.exit_code())
}

async fn serve(config: Config, options: ServeOptions) -> Result<()> {
    let server = Server::bind(config, options).await?;
    server.run(stop_signal()).await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
