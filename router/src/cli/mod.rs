//! The `switchyard` command line: `serve`, `check`, `demo` and `flags list|get|set`.

pub mod batch;
pub mod demo;
pub mod evacuate;
pub mod fleet;
pub mod hold;
pub mod jobs;
pub mod progress;
pub mod ramp;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use flag_store::{FlagItem, FlagWrite, Load, Placing, ShadowItem, StoreUrl, Targets};

use crate::config::{Config, DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN};
use crate::server::Router;
use flag_store::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "A tenant-aware reverse proxy that routes each tenant by a hot-reloaded flag."
)]
pub struct Cli {
    /// How logs are written to stderr: `text` for people, `json` (one object a line) for a log
    /// pipeline.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy. SIGHUP, or a change of the config file, reloads the config; SIGTERM
    /// drains and stops.
    Serve {
        #[arg(long, short, default_value = "router.toml")]
        config: PathBuf,
    },
    /// Validate a config (and read its flag store); exits non-zero naming what is wrong.
    Check {
        #[arg(long, short, default_value = "router.toml")]
        config: PathBuf,
    },
    /// Start two demo upstreams, a demo flag file and the router on loopback.
    Demo {
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
        admin_listen: SocketAddr,
        /// Keep the demo's config and flag file in this folder (default: a temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Read and write tenant flags.
    #[command(subcommand)]
    Flags(Box<FlagsCommand>),
    /// Exit 0 when a running router is ready (its /readyz answers 200), 1 otherwise, saying
    /// why: a container's health check that needs no other tool in the image.
    Ready {
        /// The router's admin address (default: server.admin_listen of --config, else 127.0.0.1:9901).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// A router config, for its admin address.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Shadow comparisons, as a running router holds them (read from its admin listener).
    #[command(subcommand)]
    Shadow(ShadowCommand),
    /// The routers serving from the store: each one's flag version, snapshot age, last seen
    /// and drained holds. Exits 1 when the live routers disagree on the version, or one has
    /// not confirmed its flags, for longer than --max-lag.
    Fleet {
        /// How long routers may disagree (a flip takes about a poll interval to reach all).
        /// Keep it above the routers' `[fleet] heartbeat_ms`: a record is as old as its last
        /// heartbeat, and its snapshot age is judged as of now.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        max_lag: std::time::Duration,
        /// A router not seen for this long is stale: listed, not judged.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        fleet_timeout: std::time::Duration,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Whether a side owns a tenant's scheduled jobs, read from the flag store: exits 0 (runs
    /// here), 1 (not here: prints where), 3 (held by a move: retry later), 4 (cannot tell).
    /// With --list, prints every tenant the side owns.
    Owns(jobs::OwnsArgs),
    /// Scheduled jobs that run on one side only, under a lease.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Guarded ramps: a split dial the routers step on a schedule and roll back on their own
    /// evidence (start, status, pause, resume, abort).
    #[command(subcommand)]
    Ramp(ramp::RampCommand),
}

#[derive(Subcommand, Debug)]
enum ShadowCommand {
    /// A tenant's match rate and its most recent mismatches (newest first).
    Report {
        tenant: String,
        #[command(flatten)]
        router: RouterArgs,
    },
}

#[derive(Args, Debug, Clone)]
struct RouterArgs {
    /// The router's admin address (default: server.admin_listen of --config, else 127.0.0.1:9901).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// A router config, for its admin address.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    /// A file holding the router's read token (or its admin token), sent as a bearer
    /// header: mismatching bodies are the tenant's users' data and are shown only with it.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl RouterArgs {
    fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        admin_addr(self.admin, self.config.as_deref())
    }
}

/// The admin address to read from: given, or the config's.
fn admin_addr(admin: Option<SocketAddr>, config: Option<&Path>) -> anyhow::Result<SocketAddr> {
    Ok(match (admin, config) {
        (Some(addr), _) => addr,
        (None, Some(path)) => Config::load(path)?.server.admin_listen,
        (None, None) => DEFAULT_ADMIN_LISTEN.parse().expect("default admin address"),
    })
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The flag store, e.g. file:flags.json (default: the one in --config).
    #[arg(long)]
    store: Option<String>,
    /// A router config: its store, and its targets to validate writes against.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum FlagsCommand {
    /// List every tenant's flag.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one tenant's flag (`*` is the default flag).
    Get {
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set one tenant's flag: pinned to a target, or split by weights.
    Set {
        tenant: String,
        /// Pin the tenant to this target.
        #[arg(long, conflicts_with = "split", required_unless_present_any = ["split", "seal", "shadow", "no_shadow", "jobs"])]
        target: Option<String>,
        /// Split the tenant: TARGET=WEIGHT,... summing to 100 (e.g. legacy=90,new=10).
        #[arg(long)]
        split: Option<String>,
        /// Seal the tenant on its (new) target: moving it later needs --force.
        #[arg(long)]
        seal: bool,
        /// Copy a share of the tenant's requests to another target and compare its answers
        /// with the primary's: TARGET:PERCENT (e.g. new:10). The client is always answered
        /// by the primary.
        #[arg(long, conflicts_with = "no_shadow")]
        shadow: Option<String>,
        /// Stop shadowing the tenant.
        #[arg(long)]
        no_shadow: bool,
        /// The side that runs a split tenant's scheduled jobs (one of its split's targets), or
        /// `heaviest` for its heaviest side (the default).
        #[arg(long)]
        jobs: Option<String>,
        /// Why (recorded with the write; required).
        #[arg(long)]
        reason: String,
        /// Who (default: the user name).
        #[arg(long)]
        by: Option<String>,
        /// Write only if the flag is still at this version (0: the tenant has no flag yet).
        #[arg(long)]
        expect_version: Option<u64>,
        /// Allow moving a sealed tenant.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Seal a tenant on its current target: moving it later needs --force and a reason.
    Seal {
        tenant: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Evacuate a side: one audited record every router applies at its next poll. Split
    /// tenants' share of SIDE moves to their other sides; pinned tenants move with
    /// --include-pinned; sealed tenants never move (503 while evacuated). Prints the plan;
    /// writes with --yes.
    Evacuate(evacuate::EvacuateArgs),
    /// Give an evacuated side back its tenants, exactly as before: removes its record.
    Restore(evacuate::RestoreArgs),
    /// Show a tenant's audit trail: every write, who, when, why, from what to what.
    History {
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Move many tenants from a batch file (CSV or JSON lines): prints the plan, and writes
    /// only with --yes. Each tenant's write is atomic; bad rows are rejected alone; re-running
    /// a batch skips tenants already where it says. Exits 2 when any row was rejected or failed.
    Apply {
        /// The batch: CSV rows `tenant,target|split[,seal]` or JSON lines (`-` reads stdin).
        batch: PathBuf,
        /// Why (recorded with every write; required).
        #[arg(long)]
        reason: String,
        /// Who (default: the user name).
        #[arg(long)]
        by: Option<String>,
        /// Write the plan's changes (without it, nothing is written).
        #[arg(long)]
        yes: bool,
        /// Allow moving sealed tenants.
        #[arg(long)]
        force: bool,
        /// A router's admin address to read each tenant's shadow match rate from, for the
        /// plan (default: server.admin_listen of --config, when one is given).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// With --hold-max, the batch moves in one hold, as `flags move` does.
        #[command(flatten)]
        hold: hold::HoldArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Move tenants with a hold: every router queues their requests, their requests in flight
    /// on the old side finish, the gate says the new side caught up, then one write a tenant
    /// flips them and the queued requests go to the new side. Exits 0 moved, 2 aborted (the
    /// tenants stay where they were), 1 on a bad command.
    Move(hold::MoveArgs),
    /// Create what the store needs (the DynamoDB tables and meta item, or an empty flag file).
    /// An existing store is kept; a lost meta item is rebuilt from the audit stream.
    CreateTable {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Tell every router to accept the store as it is now: after a table was recreated or
    /// restored, routers refuse it (another identity, or an older version) and keep their last
    /// good flags until this is run. Check the table first: its flags replace theirs.
    Adopt {
        /// Why (recorded in the meta item; required).
        #[arg(long)]
        reason: String,
        /// Who (default: the user name).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // One JSON object a line: time, level, target, the message and every field flat.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// Longest the process waits, once the router has stopped, for blocking work still running.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    Ok(builder.enable_all().build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config: path } => {
            // Read before the config is: an edit that lands while the router starts differs
            // from it, and is reloaded.
            let loaded = std::fs::read(&path).ok();
            let config = Config::load(&path)?;
            let runtime = runtime(config.server.workers)?;
            let code = runtime.block_on(async {
                // Listened for before anything is served (see StopSignals).
                let mut stop = crate::shutdown::StopSignals::install()?;
                let hangups = crate::shutdown::hangups()?;
                let router = Router::start(config).await?;
                router.watch_config(path, loaded, hangups);
                stop.recv().await;
                tracing::info!("shutdown signal received; draining");
                // A drain cut short by its timeout is a dirty stop: exit 2, for the
                // orchestrator and the alerts to see.
                let drained = router.shutdown().await;
                anyhow::Ok(match drained {
                    true => ExitCode::SUCCESS,
                    false => ExitCode::from(2),
                })
            })?;
            // Everything the router waits for has ended; a blocking read stuck on a dead
            // disk does not hold the exit.
            runtime.shutdown_timeout(EXIT_WAIT);
            Ok(code)
        }
        Command::Check { config: path } => check(&path),
        Command::Demo {
            listen,
            admin_listen,
            dir,
        } => {
            runtime(2)?.block_on(crate::cli::demo::run(listen, admin_listen, dir))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Flags(cmd) => flags(*cmd),
        Command::Ramp(cmd) => runtime(1)?.block_on(ramp::command(cmd)),
        Command::Owns(args) => Ok(ExitCode::from(runtime(1)?.block_on(jobs::owns(args)))),
        Command::Jobs(jobs::JobsCommand::Run(args)) => {
            Ok(ExitCode::from(runtime(1)?.block_on(jobs::run(args))))
        }
        Command::Fleet {
            max_lag,
            fleet_timeout,
            store: args,
        } => {
            let (url, _) = store_url(&args)?;
            let report = runtime(1)?.block_on(fleet::report(&url, max_lag, fleet_timeout))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", fleet::render(&report, &url.to_string()));
            }
            Ok(fleet::exit_code(&report))
        }
        Command::Ready { admin, config } => {
            let admin = admin_addr(admin, config.as_deref())?;
            let (status, body) = runtime(1)?.block_on(admin_get(admin, "/readyz", None))?;
            if status.is_success() {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("not ready ({status}): {}", body.trim());
            Ok(ExitCode::from(1))
        }
        Command::Shadow(ShadowCommand::Report { tenant, router }) => {
            let admin = router.admin_addr()?;
            let path = format!("/shadow/{}", percent_encode(&tenant));
            let token = (router.token_file.as_deref())
                .map(|f| {
                    std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read --token-file {}", f.display()))
                })
                .transpose()?;
            let token = token.as_deref().map(str::trim);
            let report = runtime(1)?.block_on(admin_json(admin, &path, token))?;
            if router.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render_report(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// GETs a path from a router's admin listener: the status and the body.
async fn admin_get(
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(http::StatusCode, String)> {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let uri: http::Uri = format!("http://{admin}{path}").parse()?;
    let fetch = async {
        let mut req = http::Request::get(uri);
        if let Some(token) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let resp = client
            .request(req.body(Empty::new())?)
            .await
            .with_context(|| format!("cannot reach the router's admin listener at {admin}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("the router's admin listener at {admin} did not answer"))?
}

/// GETs a JSON document from a router's admin listener.
async fn admin_json(
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let (status, body) = admin_get(admin, path, token).await?;
    anyhow::ensure!(
        status.is_success(),
        "{admin}{path} answered {status}: {}",
        body.trim()
    );
    Ok(serde_json::from_str(&body)?)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b':' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Each tenant's (matched, compared) from `/shadow`.
fn match_rates(summary: &serde_json::Value) -> std::collections::HashMap<String, (u64, u64)> {
    (summary["tenants"].as_array().into_iter().flatten())
        .filter_map(|t| {
            Some((
                t["tenant"].as_str()?.to_owned(),
                (t["matched"].as_u64()?, t["compared"].as_u64()?),
            ))
        })
        .collect()
}

/// `switchyard shadow report` as a person reads it.
fn render_report(report: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let tenant = report["tenant"].as_str().unwrap_or("?");
    let compared = report["compared"].as_u64().unwrap_or(0);
    let matched = report["matched"].as_u64().unwrap_or(0);
    if compared == 0 {
        let _ = writeln!(
            out,
            "{tenant}: nothing compared yet (does its flag have a shadow, and does it get traffic?)"
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{tenant}: {compared} compared, {matched} matched ({:.1}%)",
        100.0 * matched as f64 / compared as f64
    );
    let routers = report["routers"].as_array().map_or(0, Vec::len);
    if routers > 1 {
        let shares: Vec<String> = (report["routers"].as_array().into_iter().flatten())
            .map(|r| {
                let n = |k: &str| r[k].as_u64().unwrap_or(0);
                format!(
                    "{} {}/{}",
                    r["router"].as_str().unwrap_or("?"),
                    n("matched"),
                    n("compared")
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  summed over {routers} routers: {}",
            shares.join(", ")
        );
    }
    if let Some(error) = report["fleet_error"].as_str() {
        let _ = writeln!(out, "  this router's comparisons only: {error}");
    }
    let recent = report["recent_mismatches"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if recent.is_empty() {
        return out;
    }
    let from = report["mismatches_from"].as_str().unwrap_or("the router");
    let _ = writeln!(out, "recent mismatches on {from} (newest first):");
    if let Some(withheld) = report["bodies"]
        .as_str()
        .filter(|b| b.starts_with("withheld"))
    {
        let _ = writeln!(out, "  bodies {withheld} (--token-file)");
    }
    for m in &recent {
        let s = |k: &str| m[k].as_str().unwrap_or("").to_owned();
        let status = |k: &str| m[k].as_u64().map_or("-".to_owned(), |s| s.to_string());
        let _ = writeln!(
            out,
            "  {}  {}  route {} -> {}  {}: {}",
            s("at"),
            s("request"),
            s("route"),
            s("target"),
            s("kind"),
            s("detail")
        );
        let _ = writeln!(
            out,
            "    primary {}: {}",
            status("primary_status"),
            s("primary_body").trim_end()
        );
        let _ = writeln!(
            out,
            "    shadow  {}: {}",
            status("shadow_status"),
            s("shadow_body").trim_end()
        );
    }
    out
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let (version, items) = runtime(1)?
        .block_on(async { Store::open(&config.flags.store).await.list().await })
        .with_context(|| format!("{}: flags.source", path.display()))?;
    let snapshot = flag_store::Snapshot::build(
        Load {
            version,
            items,
            identity: None,
            seals: Vec::new(),
        },
        &config.targets,
        None,
    );
    println!(
        "{}: ok: {} targets, {} routes; flags {}: version {}, {} tenants{}",
        path.display(),
        config.targets.len(),
        config.routes.len(),
        config.flags.store,
        snapshot.version,
        snapshot.len(),
        if snapshot.default_flag().is_some() {
            " and a default flag"
        } else {
            ""
        },
    );
    for r in &snapshot.rejected {
        println!("warning: flag item rejected: {r}");
    }
    Ok(if snapshot.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The store's URL and (when a config is known) the targets to validate writes against.
fn store_url(args: &StoreArgs) -> anyhow::Result<(StoreUrl, Option<Targets>)> {
    let (url, config) = store_config(args)?;
    Ok((url, config.map(|c| c.targets)))
}

/// The store's URL and the config it came from, when one is known.
fn store_config(args: &StoreArgs) -> anyhow::Result<(StoreUrl, Option<Config>)> {
    let config_path = args.config.clone().or_else(|| {
        let default = PathBuf::from("router.toml");
        (args.store.is_none() && default.exists()).then_some(default)
    });
    let config = config_path.as_deref().map(Config::load).transpose()?;
    let url = match (&args.store, &config) {
        (Some(s), _) => StoreUrl::parse(s, Path::new("."))?,
        (None, Some(c)) => c.flags.store.clone(),
        (None, None) => bail!(
            "no flag store: give --store file:PATH, --store dynamodb://TABLE or --config router.toml"
        ),
    };
    Ok((url, config))
}

fn flags(cmd: FlagsCommand) -> anyhow::Result<ExitCode> {
    runtime(1)?.block_on(flags_async(cmd))
}

async fn flags_async(cmd: FlagsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FlagsCommand::List { store: args } => {
            let (url, _) = store_url(&args)?;
            let store = Store::open(&url).await;
            let (version, loaded) = store.list().await?;
            let mut items = Vec::new();
            for l in loaded {
                match l.item {
                    Ok(item) => items.push(item),
                    Err((tenant, e)) => eprintln!(
                        "warning: {} ({}): {e}",
                        l.location,
                        tenant.as_deref().unwrap_or("no tenant")
                    ),
                }
            }
            items.sort_by(|a, b| a.tenant.cmp(&b.tenant));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!("store {} at version {version}", store.describe());
                print_table(&items);
            }
        }
        FlagsCommand::Get {
            tenant,
            store: args,
        } => {
            let (url, _) = store_url(&args)?;
            let store = Store::open(&url).await;
            let Some(item) = store.get(&tenant).await? else {
                bail!("tenant {tenant:?} has no flag in {}", store.describe());
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&item)?);
            } else {
                print_table(std::slice::from_ref(&item));
            }
        }
        FlagsCommand::Set {
            tenant,
            target,
            split,
            seal,
            shadow,
            no_shadow,
            jobs,
            reason,
            by,
            expect_version,
            force,
            store: args,
        } => {
            let shadow = match (shadow, no_shadow) {
                (Some(spec), _) => Some(Some(
                    ShadowItem::parse(&spec).map_err(|e| anyhow::anyhow!("--shadow: {e}"))?,
                )),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let placing = match (target, split) {
                (Some(t), _) => Some(Placing::Pinned(t)),
                (None, Some(s)) => {
                    Some(Placing::parse_split(&s).map_err(|e| anyhow::anyhow!("--split: {e}"))?)
                }
                (None, None) => None,
            };
            let write = FlagWrite {
                evacuation: None,
                ramp: None,
                hold: Default::default(),
                jobs: jobs.map(|side| (side != "heaviest").then_some(side)),
                tenant,
                placing,
                seal: seal.then_some(true),
                shadow,
                by: author(by)?,
                reason,
                expect_version,
                force,
            };
            write_flag(&args, write).await?;
        }
        FlagsCommand::Move(args) => {
            let (url, targets) = store_url(&args.store)?;
            let by = author(args.by.clone())?;
            let m = args.into_move(by)?;
            let store = Store::open(&url).await;
            return hold::run(&store, targets.as_ref(), m).await;
        }
        FlagsCommand::Seal {
            tenant,
            reason,
            by,
            store: args,
        } => {
            let write = FlagWrite {
                evacuation: None,
                ramp: None,
                hold: Default::default(),
                jobs: None,
                tenant,
                placing: None,
                seal: Some(true),
                shadow: None,
                by: author(by)?,
                reason,
                expect_version: None,
                force: false,
            };
            write_flag(&args, write).await?;
        }
        FlagsCommand::Evacuate(args) => return evacuate::evacuate(args).await,
        FlagsCommand::Restore(args) => return evacuate::restore(args).await,
        FlagsCommand::History {
            tenant,
            store: args,
        } => {
            let (url, _) = store_url(&args)?;
            let records = Store::open(&url).await.history(&tenant).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else if records.is_empty() {
                println!("tenant {tenant:?} has no recorded writes");
            } else {
                for r in &records {
                    let from = r.old.as_ref().map_or("(no flag)".into(), describe);
                    let to = r.new.as_ref().map_or("?".into(), describe);
                    println!(
                        "{}  seq {:<6} {:<12} {from} -> {to}  ({})",
                        r.at, r.seq, r.by, r.reason
                    );
                }
            }
        }
        FlagsCommand::Apply {
            batch,
            reason,
            by,
            yes,
            force,
            admin,
            hold,
            store: args,
        } => {
            let admin = match (admin, &args.config) {
                (None, None) => None,
                (admin, config) => Some(admin_addr(admin, config.as_deref())?),
            };
            return batch::command(&batch, reason, by, (yes, force), admin, hold, &args).await;
        }
        FlagsCommand::CreateTable { store: args } => create_table(&args).await?,
        FlagsCommand::Adopt {
            reason,
            by,
            store: args,
        } => {
            if reason.trim().is_empty() {
                bail!("--reason must say why the store is adopted");
            }
            let (url, _) = store_url(&args)?;
            let StoreUrl::Dynamo(dynamo) = &url else {
                bail!("a flag file has no identity to adopt; only a DynamoDB store does");
            };
            let by = by
                .or_else(user_name)
                .context("cannot tell who you are: pass --by")?;
            let store = flag_store::dynamodb::DynamoStore::connect(dynamo).await;
            let meta = store.adopt(&by, &reason).await?;
            let identity = meta.identity.map(|i| i.to_string()).unwrap_or_default();
            println!(
                "{} adopted (identity {identity}, version {}): routers load it whole at their next poll",
                store.describe(),
                meta.version
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `switchyard flags create-table`.
async fn create_table(args: &StoreArgs) -> anyhow::Result<()> {
    let (url, _) = store_url(args)?;
    let store = Store::open(&url).await;
    let name = store.describe();
    use flag_store::dynamodb::Created;
    match store.create().await? {
        None => println!("{name} is ready"),
        Some(Created::New { id }) => {
            println!("{name} is ready: a new store, identity {id}")
        }
        Some(Created::Kept { id, version }) => println!(
            "{name} is ready: the existing store is kept as it was (identity {id}, version {version})"
        ),
        Some(Created::Rebuilt {
            id,
            version,
            same_identity,
        }) => {
            println!(
                "{name} is ready: its meta item was missing and is rebuilt from the audit stream at version {version} (identity {id})"
            );
            if !same_identity {
                println!(
                    "the audit table recorded no identity, so this one is new: routers keep their flags until `switchyard flags adopt`"
                );
            }
        }
    }
    Ok(())
}

fn author(by: Option<String>) -> anyhow::Result<String> {
    match by.or_else(user_name) {
        Some(by) => Ok(by),
        None => bail!("cannot tell who you are: pass --by NAME"),
    }
}

async fn write_flag(args: &StoreArgs, write: FlagWrite) -> anyhow::Result<()> {
    let (url, targets) = store_url(args)?;
    if targets.is_none() {
        eprintln!(
            "note: no --config given, so target names are not checked here (routers reject unknown targets)"
        );
    }
    let (old, new) = Store::open(&url)
        .await
        .write(&write, targets.as_ref())
        .await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "old": old, "new": new }))?
        );
    } else {
        println!(
            "{}: {} -> {} (version {})",
            new.tenant,
            old.as_ref().map_or("(no flag)".into(), describe),
            describe(&new),
            new.version
        );
    }
    Ok(())
}

/// Who is running the command: `$USER`, `$LOGNAME`, or the account of this process's uid
/// (containers and service units often set neither variable).
fn user_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let from_env = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()));
    if from_env.is_some() {
        return from_env;
    }
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let uid_field = fields.nth(1)?;
        (uid_field.parse() == Ok(uid)).then(|| name.to_owned())
    });
    Some(name.unwrap_or_else(|| format!("uid:{uid}")))
}

fn describe(item: &FlagItem) -> String {
    let place = match (&item.target, &item.weights) {
        (Some(t), _) => t.clone(),
        (None, Some(w)) => w
            .iter()
            .map(|(t, w)| format!("{t}={w}"))
            .collect::<Vec<_>>()
            .join(","),
        (None, None) => match &item.evacuation {
            _ if item.ramp.is_some() => (item.ramp.as_ref()).map_or(String::new(), |r| {
                let at = format!("step {}/{}", r.at, r.steps.len());
                format!("{} -> {}, {at}, {}", r.from, r.to, r.state.as_str())
            }),
            Some(e) if e.include_pinned => format!("evacuated to {} (pinned tenants too)", e.to),
            Some(e) => format!("evacuated to {}", e.to),
            None if flag_store::evacuation::side_of(&item.tenant).is_some() => "restored".into(),
            None => "?".into(),
        },
    };
    let shadow = item.shadow.as_ref().map_or(String::new(), |s| {
        format!(" (shadow {} {}%)", s.target, s.percent)
    });
    let sealed = if item.sealed { " (sealed)" } else { "" };
    let jobs = item
        .jobs
        .as_ref()
        .map_or(String::new(), |j| format!(" (jobs on {j})"));
    let now = flag_store::fleet::now_ms();
    let hold = match &item.hold {
        Some(h) if h.active_at(now) => format!(
            " (held by move {} for {}s more)",
            h.id,
            (h.deadline_ms - now).div_ceil(1000)
        ),
        _ => String::new(),
    };
    format!("{place}{shadow}{jobs}{sealed}{hold}")
}

fn print_table(items: &[FlagItem]) {
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|i| {
            [
                i.tenant.clone(),
                match flag_store::evacuation::side_of(&i.tenant) {
                    _ if i.ramp.is_some() => "ramp".into(),
                    Some(_) => "evacuation".into(),
                    None => i.effective_mode().map_or("?".into(), |m| m.to_string()),
                },
                describe(i),
                i.version.to_string(),
                i.updated_by.clone().unwrap_or_default(),
                i.updated_at.clone().unwrap_or_default(),
                i.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let head = [
        "TENANT",
        "MODE",
        "PLACEMENT",
        "VERSION",
        "BY",
        "AT",
        "REASON",
    ]
    .map(str::to_owned);
    let mut widths = head.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&head).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
