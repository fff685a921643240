//! `switchyard ramp`: start a guarded ramp (a record the routers drive), see every ramp with
//! its step and the figures it judged by, pause, resume, and abort (back to the placements
//! before the ramp). Every change is one audited write of the ramp's record, conditional on
//! the version read.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use flag_store::FlagItem;
use flag_store::fleet::{Fleet, now_ms};
use flag_store::ramp::{self, Guards, RampItem, RampState};
use flag_store::store::Store;

use super::{StoreArgs, author, store_url};
use crate::cutover::ramp::{fleet_figures, place, record_write, window};

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
    if !(0.0..=100.0).contains(&number) {
        bail!("{flag} {text:?} is not between 0% and 100%");
    }
    Ok((number * 100.0).round() as u32)
}

async fn start(args: StartArgs) -> anyhow::Result<ExitCode> {
    ramp::validate_id(&args.id).map_err(|e| anyhow::anyhow!(e))?;
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
    tenants.sort();
    tenants.dedup();
    if tenants.is_empty() {
        bail!("no tenants: give --tenant or --tenants-file");
    }
    let (url, targets) = store_url(&args.store)?;
    let store = Store::open(&url).await;
    let key = ramp::key(&args.id);
    let records = ramp_records(&store).await?;
    if records.iter().any(|(id, _, _)| *id == args.id) {
        bail!("ramp {:?} exists already: pick another id", args.id);
    }
    let busy: Vec<String> = (records.iter())
        .filter(|(_, r, _)| r.state.is_active())
        .flat_map(|(_, r, i)| {
            (r.tenants.iter())
                .filter(|t| tenants.binary_search(t).is_ok())
                .map(move |t| format!("{t} (ramp {})", i.tenant))
        })
        .collect();
    if !busy.is_empty() {
        bail!("already in an active ramp: {}", busy.join(", "));
    }
    let currents = store.currents(&tenants).await?;
    let mut before = std::collections::BTreeMap::new();
    let mut from = None;
    for tenant in &tenants {
        let Some(item) = currents.get(tenant).and_then(|c| c.item.clone()) else {
            bail!("tenant {tenant:?} has no flag of its own: set one before ramping it");
        };
        let leaves = leaving_side(&item, &args.to)?;
        match &from {
            None => from = Some(leaves),
            Some(f) if *f != leaves => {
                bail!(
                    "tenant {tenant:?} leaves {leaves:?}, the others {f:?}: one ramp leaves one side"
                )
            }
            Some(_) => {}
        }
        before.extend(ramp::placement_of(&item).map(|p| (tenant.clone(), p)));
    }
    let from = from.expect("at least one tenant");
    let item = RampItem {
        tenants: tenants.clone(),
        from: from.clone(),
        to: args.to.clone(),
        steps: args.steps.clone(),
        step_ms: args.step_time.as_millis() as u64,
        guards: Guards {
            max_5xx_bp: (args.max_5xx.as_deref())
                .map(|p| basis_points("--max-5xx", p))
                .transpose()?,
            max_p99_ratio_pct: args.max_p99_ratio.map(|r| (r * 100.0).round() as u32),
            max_shadow_mismatch_bp: (args.max_shadow_mismatch.as_deref())
                .map(|p| basis_points("--max-shadow-mismatch", p))
                .transpose()?,
            min_requests: args.min_requests,
        },
        before,
        state: RampState::Running,
        at: 0,
        step_started_ms: now_ms(),
        window_start: None,
        why: format!("started: {}", args.reason),
    };
    let by = author(args.by)?;
    let mut write = record_write(&key, item, &by, 0);
    write.reason = args.reason;
    let (_, new) = store.write(&write, targets.as_ref()).await?;
    println!(
        "ramp {} started: {} from {from} onto {} in steps {:?}, {} each (record version {}); the routers drive it",
        args.id,
        count(tenants.len()),
        args.to,
        args.steps,
        humantime::format_duration(args.step_time),
        new.version
    );
    Ok(ExitCode::SUCCESS)
}

/// Every ramp record in the store, with its id and ramp: one pass over the items, keeping only
/// the records (a store of a million tenants is never held).
async fn ramp_records(store: &Store) -> anyhow::Result<Vec<(String, RampItem, FlagItem)>> {
    let mut records = Vec::new();
    store
        .scan(|loaded| {
            if let Ok(item) = loaded.item
                && let (Some(id), Some(ramp)) = (ramp::id_of(&item.tenant), item.ramp.clone())
            {
                records.push((id.to_owned(), ramp, item));
            }
            std::ops::ControlFlow::Continue(())
        })
        .await?;
    Ok(records)
}

/// The side a tenant's ramp onto `to` leaves: its pinned target, or the other side of a split
/// over exactly two sides, one of them `to`.
fn leaving_side(item: &FlagItem, to: &str) -> anyhow::Result<String> {
    if item.sealed {
        bail!("tenant {:?} is sealed: a ramp would move it", item.tenant);
    }
    match (&item.target, &item.weights) {
        (Some(t), None) if t != to => Ok(t.clone()),
        (Some(_), None) => bail!("tenant {:?} is on {to:?} already", item.tenant),
        (None, Some(w)) if w.len() == 2 && w.contains_key(to) => {
            Ok(w.keys().find(|k| *k != to).expect("two sides").clone())
        }
        _ => bail!(
            "tenant {:?} is split over other sides than one and {to:?}",
            item.tenant
        ),
    }
}

async fn change(args: ChangeArgs, to: RampState) -> anyhow::Result<ExitCode> {
    let (url, targets) = store_url(&args.store)?;
    let store = Store::open(&url).await;
    let key = ramp::key(&args.id);
    let Some(record) = store.get(&key).await? else {
        bail!("no ramp {:?} in {}", args.id, store.describe());
    };
    let item = record.ramp.clone().context("the record holds no ramp")?;
    let allowed = match to {
        RampState::Paused => item.state == RampState::Running,
        RampState::Running => item.state == RampState::Paused,
        _ => item.state.is_active(),
    };
    if !allowed {
        bail!(
            "ramp {:?} is {}: it cannot be made {}",
            args.id,
            item.state.as_str(),
            to.as_str()
        );
    }
    let by = author(args.by)?;
    let mut next = item.clone();
    next.state = to;
    next.why = format!("{} by {by}: {}", to.as_str(), args.reason);
    if to == RampState::Running {
        // A fresh window for the step it goes on from.
        next = next.step_to(item.at, now_ms(), next.why.clone());
    }
    if to == RampState::Aborted {
        next.at = 0;
    }
    let mut write = record_write(&key, next.clone(), &by, record.version);
    write.reason = args.reason.clone();
    store.write(&write, targets.as_ref()).await?;
    if to == RampState::Aborted {
        let currents = store.currents(&item.tenants).await?;
        place(
            &store,
            &next,
            0,
            &currents,
            &by,
            &format!("ramp {} aborted: {}", args.id, args.reason),
        )
        .await?;
        println!(
            "ramp {} aborted: {} put back where they were",
            args.id,
            count(item.tenants.len())
        );
    } else {
        println!(
            "ramp {} {} at step {} of {}",
            args.id,
            to.as_str(),
            item.at,
            item.steps.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(args: &StoreArgs, live: Duration) -> anyhow::Result<ExitCode> {
    let (url, _) = store_url(args)?;
    let store = Store::open(&url).await;
    let fleet = Fleet::of(&store);
    let ramps = ramp_records(&store).await?;
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
