//! `switchyard ramp`: start a guarded ramp (a record the routers drive), see every ramp with
//! its step and the figures it judged by, pause, resume, and abort (back to the placements
//! before the ramp). Every change is one audited write of the ramp's record, conditional on
//! the version read.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use flag_store::fleet::{Fleet, now_ms};
use flag_store::ramp::{Guards, RampState};
use flag_store::store::Store;

use super::{StoreArgs, author, store_url};
use crate::cutover::ramp::{fleet_figures, window};
use crate::cutover::ramp_commands;

#[derive(Subcommand, Debug)]
pub enum RampCommand {
    /// Start a ramp: the routers step the tenants' dial onto --to, judging each step on their
    /// own evidence, and roll back on a breach.
    Start(StartArgs),
    /// Every ramp: its state, step, the figures of its window and why it is where it is.
    Status {
        #[command(flatten)]
        store: StoreArgs,
        /// Routers seen within this long count in the figures.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        fleet_timeout: Duration,
    },
    /// Hold a running ramp at its step.
    Pause(ChangeArgs),
    /// Go on from the step a paused ramp holds (its window starts again).
    Resume(ChangeArgs),
    /// Stop a ramp and put its tenants back where they were before it.
    Abort(ChangeArgs),
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// The ramp's id (names its record and its lease).
    #[arg(long)]
    id: String,
    /// A tenant to ramp (repeat it), pinned on the side it leaves or split over the two sides.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// A file of tenants, one a line.
    #[arg(long)]
    tenants_file: Option<PathBuf>,
    /// The side to ramp onto.
    #[arg(long)]
    to: String,
    /// Its share at each step, in percent, rising (e.g. 1,5,25,50).
    #[arg(long, value_delimiter = ',', required = true)]
    steps: Vec<u32>,
    /// How long each step lasts before the next (e.g. 30m).
    #[arg(long, value_parser = humantime::parse_duration)]
    step_time: Duration,
    /// Roll back when the ramped-onto side answers more than this many points of 5xx above
    /// the other side (e.g. 1%).
    #[arg(long)]
    max_5xx: Option<String>,
    /// Roll back when its p99 is more than this many times the other side's (e.g. 1.5).
    #[arg(long)]
    max_p99_ratio: Option<f64>,
    /// Roll back when more than this share of the tenants' shadow comparisons differ (e.g.
    /// 2%), once --min-requests of them were made (the tenants must be shadowed).
    #[arg(long)]
    max_shadow_mismatch: Option<String>,
    /// Requests the ramped-onto side must answer in a step before it is judged or left.
    #[arg(long, default_value_t = 100)]
    min_requests: u64,
    #[arg(long)]
    reason: String,
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct ChangeArgs {
    id: String,
    #[arg(long)]
    reason: String,
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

pub async fn command(cmd: RampCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RampCommand::Start(args) => start(args).await,
        RampCommand::Status {
            store,
            fleet_timeout,
        } => status(&store, fleet_timeout).await,
        RampCommand::Pause(args) => change(args, RampState::Paused).await,
        RampCommand::Resume(args) => change(args, RampState::Running).await,
        RampCommand::Abort(args) => change(args, RampState::Aborted).await,
    }
}

/// "1 tenant", "3 tenants".
fn count(tenants: usize) -> String {
    match tenants {
        1 => "1 tenant".into(),
        n => format!("{n} tenants"),
    }
}

/// `1%` or `0.5%` (or a bare number of percent) in basis points.
fn basis_points(flag: &str, text: &str) -> anyhow::Result<u32> {
    let number: f64 = (text.trim().trim_end_matches('%').trim().parse())
        .with_context(|| format!("{flag} {text:?} is not a percentage such as 1%"))?;
    ramp_commands::basis_points(flag, number).map_err(anyhow::Error::msg)
}

async fn start(args: StartArgs) -> anyhow::Result<ExitCode> {
    let mut tenants = args.tenants.clone();
    if let Some(path) = &args.tenants_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --tenants-file {}", path.display()))?;
        tenants.extend(
            (text.lines().map(str::trim))
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if tenants.is_empty() {
        bail!("no tenants: give --tenant or --tenants-file");
    }
    let guards = Guards {
        max_5xx_bp: (args.max_5xx.as_deref())
            .map(|p| basis_points("--max-5xx", p))
            .transpose()?,
        max_p99_ratio_pct: args.max_p99_ratio.map(ramp_commands::ratio_pct),
        max_shadow_mismatch_bp: (args.max_shadow_mismatch.as_deref())
            .map(|p| basis_points("--max-shadow-mismatch", p))
            .transpose()?,
        min_requests: args.min_requests,
    };
    let (url, targets) = store_url(&args.store)?;
    let store = Store::open(&url).await;
    let plan = ramp_commands::Start {
        id: args.id.clone(),
        tenants,
        to: args.to.clone(),
        steps: args.steps.clone(),
        step_time: args.step_time,
        guards,
        by: author(args.by)?,
        reason: args.reason,
    };
    let (item, version) = ramp_commands::start(&store, targets.as_ref(), plan).await?;
    println!(
        "ramp {} started: {} from {} onto {} in steps {:?}, {} each (record version {version}); the routers drive it",
        args.id,
        count(item.tenants.len()),
        item.from,
        item.to,
        item.steps,
        humantime::format_duration(args.step_time),
    );
    Ok(ExitCode::SUCCESS)
}

async fn change(args: ChangeArgs, to: RampState) -> anyhow::Result<ExitCode> {
    let (url, _) = store_url(&args.store)?;
    let store = Store::open(&url).await;
    let by = author(args.by)?;
    let item = ramp_commands::change(&store, &args.id, to, &by, &args.reason)
        .await
        .map_err(|e| match e {
            ramp_commands::CommandError::NotFound(_) => {
                anyhow::anyhow!("{e} ({})", store.describe())
            }
            e => e.into(),
        })?;
    match to {
        RampState::Aborted => println!(
            "ramp {} aborted: {} put back where they were",
            args.id,
            count(item.tenants.len())
        ),
        _ => println!(
            "ramp {} {} at step {} of {}",
            args.id,
            to.as_str(),
            item.at,
            item.steps.len()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(args: &StoreArgs, live: Duration) -> anyhow::Result<ExitCode> {
    let (url, _) = store_url(args)?;
    let store = Store::open(&url).await;
    let fleet = Fleet::of(&store);
    let ramps = ramp_commands::records(&store).await?;
    // One read of the fleet for every ramp; a fleet that cannot be read shows no figures.
    let routers = fleet.list().await.map(|l| l.routers).unwrap_or_default();
    let mut out = Vec::new();
    for (id, item, record) in &ramps {
        let figures = fleet_figures(&routers, id, live, now_ms());
        let canary = window(&figures, item.window_start.as_ref(), &item.to);
        let baseline = window(&figures, item.window_start.as_ref(), &item.from);
        let next_in_ms = (item.state == RampState::Running && item.at > 0)
            .then(|| (item.step_started_ms + item.step_ms).saturating_sub(now_ms()));
        out.push(serde_json::json!({
            "id": id,
            "state": item.state.as_str(),
            "from": item.from,
            "to": item.to,
            "tenants": item.tenants.len(),
            "step": item.at,
            "steps": item.steps,
            "share": item.at.checked_sub(1).and_then(|i| item.steps.get(i as usize)),
            "next_step_in_ms": next_in_ms,
            "window": {
                "ramped_onto": {"requests": canary.requests, "errors": canary.errors, "p99_us": canary.p99_us()},
                "other_side": {"requests": baseline.requests, "errors": baseline.errors, "p99_us": baseline.p99_us()},
            },
            "why": item.why,
            "version": record.version,
            "updated_by": record.updated_by,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    if out.is_empty() {
        println!("no ramps in {}", store.describe());
    }
    for r in &out {
        let share = r["share"].as_u64().map_or("-".into(), |s| format!("{s}%"));
        let next = r["next_step_in_ms"].as_u64().map_or(String::new(), |ms| {
            format!(
                ", next step in {}",
                humantime::format_duration(Duration::from_secs(ms / 1000))
            )
        });
        println!(
            "ramp {} {}: {} {} -> {}, step {}/{} ({share} onto {}){next}",
            r["id"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            count(r["tenants"].as_u64().unwrap_or(0) as usize),
            r["from"].as_str().unwrap_or(""),
            r["to"].as_str().unwrap_or(""),
            r["step"],
            r["steps"].as_array().map_or(0, Vec::len),
            r["to"].as_str().unwrap_or(""),
        );
        let w = &r["window"];
        println!(
            "  this step: ramped-onto side {} requests, {} 5xx, p99 {:.1} ms; other side {} requests, {} 5xx, p99 {:.1} ms",
            w["ramped_onto"]["requests"],
            w["ramped_onto"]["errors"],
            w["ramped_onto"]["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
            w["other_side"]["requests"],
            w["other_side"]["errors"],
            w["other_side"]["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
        );
        println!("  {}", r["why"].as_str().unwrap_or(""));
    }
    Ok(ExitCode::SUCCESS)
}
