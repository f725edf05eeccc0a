use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

/// The operator's command-line client: its dependencies (progress bars) stay out of the
/// library the gateway links.
mod cli {
    pub mod client;
    pub mod providers;
    pub mod tenants;
}

/// mimalloc returns freed memory to the OS within moments; glibc's per-thread arenas kept
/// a burst of large bodies resident long after they were freed (docs/reliability.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use switchboard::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Webhook relay and fan-out gateway for telephony callbacks")]
struct Cli {
    /// Log lines as human-readable text or JSON (filter with RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value = "pretty")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default command).
    Serve {
        #[arg(long, default_value = "config/switchboard.toml")]
        config: PathBuf,
    },
    /// Validate the configuration; print file:line:column errors and exit non-zero.
    Check {
        #[arg(long, default_value = "config/switchboard.toml")]
        config: PathBuf,
    },
    /// Print the exact request a payload would produce for one destination, without sending it.
    Render {
        #[arg(long, default_value = "config/switchboard.toml")]
        config: PathBuf,
        #[arg(long)]
        tenant: String,
        /// The source the payload is sent to (with --payload).
        #[arg(long, requires = "payload", conflicts_with = "provider")]
        source: Option<String>,
        #[arg(long)]
        destination: String,
        /// A file holding the provider's callback body.
        #[arg(long, requires = "source")]
        payload: Option<PathBuf>,
        /// Render one of a provider's embedded callbacks instead (see `switchboard providers`).
        #[arg(long, requires = "fixture", required_unless_present = "source")]
        provider: Option<String>,
        /// The callback's kind, e.g. status-completed.
        #[arg(long, requires = "provider")]
        fixture: Option<String>,
        /// The body's type; by default application/x-www-form-urlencoded for .form files and
        /// application/json otherwise.
        #[arg(long)]
        content_type: Option<String>,
    },
    /// List the provider profiles: what each normalizes, how it signs, what it expects back,
    /// and its embedded callbacks for `render --provider P --fixture K`.
    Providers {
        /// One provider, with its callbacks in full.
        name: Option<String>,
    },
    /// List events newest first, or show one event with its deliveries and attempts.
    Events {
        /// Show this event instead of listing.
        id: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        source: Option<String>,
        /// The provider's call id.
        #[arg(long)]
        call_id: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// List deliveries newest first.
    Deliveries {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        /// pending, delivered or dead.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Queue a delivery again (by id), or every finished delivery matching the filter.
    Replay {
        /// One delivery's id; without it, the filter below (default: every dead delivery).
        id: Option<i64>,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        /// dead (default) or delivered.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Move tenants between files and the control-plane API.
    Tenants {
        #[command(subcommand)]
        action: TenantsAction,
    },
    /// A receiving server that prints each request and answers a fixed status.
    Sink {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// Print nothing per request (for load tests).
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Subcommand)]
enum TenantsAction {
    /// Write tenants managed through the API as tenant files (`<dir>/<id>.toml`). Secret
    /// values are never exported: each becomes `{ env = "SWITCHBOARD_SECRET_<TENANT>_<NAME>" }`.
    Export {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        dir: PathBuf,
        /// These tenants only (default: every tenant managed through the API).
        ids: Vec<String>,
    },
    /// Create or replace tenants through the API from tenant files; their secrets
    /// (`{ env }` or `{ file }`) are read here and sent as values.
    Import {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The admin API's address.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    admin: String,
    /// The admin token ([admin] token in the config).
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args)]
struct PageArgs {
    /// RFC 3339 or Unix seconds.
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    limit: Option<usize>,
    /// The `more: --cursor …` value of the previous page.
    #[arg(long)]
    cursor: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl PageArgs {
    /// The query string for a listing: its filters, then the page options.
    fn query(&self, filters: &[(&str, Option<String>)]) -> String {
        let limit = self.limit.map(|l| l.to_string());
        let page = [("since", &self.since), ("until", &self.until), ("limit", &limit), ("cursor", &self.cursor)];
        let pairs: Vec<(&str, Option<&str>)> = filters
            .iter()
            .map(|(k, v)| (*k, v.as_deref()))
            .chain(page.iter().map(|(k, v)| (*k, v.as_deref())))
            .collect();
        cli::client::query(&pairs)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let command = cli.command.unwrap_or(Command::Serve { config: "config/switchboard.toml".into() });
    let result = match command {
        Command::Check { config } => return check(&config),
        Command::Render { config, tenant, source, destination, payload, provider, fixture, content_type } => {
            let input = match (source, payload, provider, fixture) {
                (Some(source), Some(payload), ..) => Input::Payload { source, payload, content_type },
                (_, _, Some(provider), Some(fixture)) => Input::Fixture { provider, fixture },
                _ => unreachable!("clap requires --source and --payload, or --provider and --fixture"),
            };
            return render(&config, &tenant, &destination, input);
        }
        Command::Providers { name } => {
            return cli::providers::print(name.as_deref());
        }
        Command::Serve { config } => runtime().and_then(|rt| rt.block_on(serve(config))),
        Command::Sink { listen, status, quiet } => runtime().and_then(|rt| rt.block_on(sink(listen, status, quiet))),
        command => runtime().and_then(|rt| rt.block_on(operate(command))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn check(path: &std::path::Path) -> ExitCode {
    match switchboard::config::load(path) {
        Ok(config) => {
            let destinations: usize = config.tenants.values().map(|t| t.destinations.len()).sum();
            println!("{}: ok ({} tenants, {destinations} destinations)", path.display(), config.tenants.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

enum Input {
    Payload { source: String, payload: PathBuf, content_type: Option<String> },
    Fixture { provider: String, fixture: String },
}

fn render(path: &std::path::Path, tenant: &str, destination: &str, input: Input) -> ExitCode {
    use switchboard::deliver::preview::{Callback, preview};
    let config = match switchboard::config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let rendered = match input {
        Input::Payload { source, payload, content_type } => {
            let body = match std::fs::read(&payload) {
                Ok(body) => body,
                Err(e) => {
                    eprintln!("switchboard: cannot read {}: {e}", payload.display());
                    return ExitCode::FAILURE;
                }
            };
            let content_type = content_type.unwrap_or_else(|| {
                if payload.extension().is_some_and(|x| x == "form") {
                    "application/x-www-form-urlencoded"
                } else {
                    "application/json"
                }
                .to_string()
            });
            preview(
                &config,
                tenant,
                destination,
                Callback::Payload { source: &source, body: &body, content_type: &content_type, query: None },
            )
        }
        Input::Fixture { provider, fixture } => cli::providers::fixture(&provider, &fixture)
            .and_then(|f| preview(&config, tenant, destination, Callback::Fixture(&f))),
    };
    match rendered {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = match switchboard::config::load(&path) {
        Ok(config) => Arc::new(config),
        Err(errors) => anyhow::bail!("invalid configuration:\n{errors}"),
    };
    let node = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
    let store = switchboard::open_store(&config, &node).await.context("cannot open the store")?;
    let ingest = switchboard::server::bind(config.server.listen)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let admin = switchboard::server::bind(config.server.admin_listen)
        .with_context(|| format!("cannot listen on {}", config.server.admin_listen))?;
    tracing::info!(addr = %ingest.local_addr()?, "ingest listening");
    tracing::info!(addr = %admin.local_addr()?, "admin listening");
    let listeners = switchboard::Listeners { ingest, admin };
    switchboard::run(config, store, listeners, shutdown_signal()).await?;
    Ok(())
}

async fn operate(command: Command) -> anyhow::Result<()> {
    use cli::client::{self, Admin};
    let connect = |a: &AdminArgs| Admin::new(&a.admin, a.token.clone());
    let print = |value: &serde_json::Value, json: bool, table: fn(&serde_json::Value) -> String| {
        if json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            println!("{}", table(value));
        }
    };
    match command {
        Command::Events { id: Some(id), admin, page, .. } => {
            let event = connect(&admin)?.get(&format!("/v1/events/{id}")).await.map_err(anyhow::Error::msg)?;
            print(&event, page.json, client::event_text);
        }
        Command::Events { id: None, admin, tenant, source, call_id, page } => {
            let q = page.query(&[("tenant", tenant), ("source", source), ("call_id", call_id)]);
            let events = connect(&admin)?.get(&format!("/v1/events{q}")).await.map_err(anyhow::Error::msg)?;
            print(&events, page.json, client::events_table);
        }
        Command::Deliveries { admin, tenant, destination, state, page } => {
            let q = page.query(&[("tenant", tenant), ("destination", destination), ("state", state)]);
            let found = connect(&admin)?.get(&format!("/v1/deliveries{q}")).await.map_err(anyhow::Error::msg)?;
            print(&found, page.json, client::deliveries_table);
        }
        Command::Replay { id: Some(id), admin, json, .. } => {
            let answer = connect(&admin)?
                .post(&format!("/v1/deliveries/{id}/replay"), None)
                .await
                .map_err(anyhow::Error::msg)?;
            if json { println!("{answer}") } else { println!("delivery {id} queued again") }
        }
        Command::Replay { id: None, admin, tenant, destination, state, since, until, json } => {
            let filter = serde_json::json!({
                "tenant": tenant, "destination": destination, "state": state, "since": since, "until": until,
            });
            let admin = connect(&admin)?;
            let total = client::replay_all(&admin, filter, 500, json).await.map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::json!({ "queued": total }))
            } else {
                println!("{total} deliveries queued again")
            }
        }
        Command::Tenants { action: TenantsAction::Export { admin, dir, ids } } => {
            let written = cli::tenants::export(&connect(&admin)?, &dir, ids).await.map_err(anyhow::Error::msg)?;
            for path in &written {
                println!("{}", path.display());
            }
        }
        Command::Tenants { action: TenantsAction::Import { admin, files } } => {
            let done = cli::tenants::import(&connect(&admin)?, &files).await.map_err(anyhow::Error::msg)?;
            for (id, version) in done {
                println!("tenant {id}: version {version}");
            }
        }
        _ => unreachable!("handled in main"),
    }
    Ok(())
}

async fn sink(listen: SocketAddr, status: u16, quiet: bool) -> anyhow::Result<()> {
    let status = http::StatusCode::from_u16(status).context("--status must be an HTTP status code")?;
    let listener = switchboard::server::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, %status, "sink listening");
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    switchboard::sink::run(listener, status, quiet, stop).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
