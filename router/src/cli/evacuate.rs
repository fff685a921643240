//! `switchyard flags evacuate SIDE --to OTHER` and `flags restore SIDE`: one audited record
//! that takes every tenant it can off a side at once ([`flag_store::evacuation`]), and its
//! removal. The plan comes first: what moves, what stays, and the sealed tenants that will be
//! answered 503 while the side is evacuated; `--yes` writes it.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use flag_store::evacuation::{self, EvacuationItem};
use flag_store::store::Store;
use flag_store::{FlagItem, FlagWrite};
use serde::Serialize;

use super::{StoreArgs, author, store_url};

#[derive(Args, Debug)]
pub struct EvacuateArgs {
    /// The side to empty.
    side: String,
    /// Where its tenants go: its pinned tenants (with --include-pinned), and a split's share
    /// of SIDE when the split has this side (else the split's other sides take it).
    #[arg(long)]
    to: String,
    /// Move the tenants pinned on SIDE to --to as well (their data must be there).
    #[arg(long)]
    include_pinned: bool,
    /// Why (recorded with the write; required).
    #[arg(long)]
    reason: String,
    /// Who (default: the user name).
    #[arg(long)]
    by: Option<String>,
    /// Write the record (without it, only the plan is printed).
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The evacuated side to give back its tenants.
    side: String,
    /// Why (recorded with the write; required).
    #[arg(long)]
    reason: String,
    /// Who (default: the user name).
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// What an evacuation does to the tenants of a store, tenant by tenant, as the pick applies
/// it (`policy::pick`'s evacuated path).
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    pub side: String,
    pub to: String,
    pub include_pinned: bool,
    pub store_version: u64,
    /// Split tenants whose share of the side moves to their other sides.
    pub splits_moving: u64,
    /// Tenants pinned on the side that move to `to` (with `include_pinned`).
    pub pinned_moving: u64,
    /// Tenants pinned on the side that stay (without `include_pinned`).
    pub pinned_staying: u64,
    /// Sealed tenants that would move: they never do, and are answered 503 while the side is
    /// evacuated.
    pub sealed_refused: Vec<String>,
    /// Split tenants with no other side that has a share (and not `to` either): answered 503.
    pub cannot_leave: Vec<String>,
    /// Whether the default flag (`*`) moves.
    pub default_moves: bool,
}

/// What the evacuation does to one stored flag.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Untouched,
    SplitMoves,
    PinnedMoves,
    PinnedStays,
    SealedRefused,
    CannotLeave,
}

fn fate(item: &FlagItem, side: &str, to: &str, include_pinned: bool) -> Fate {
    if let Some(target) = &item.target {
        return match (target == side, include_pinned, item.sealed) {
            (false, _, _) => Fate::Untouched,
            (true, false, _) => Fate::PinnedStays,
            (true, true, true) => Fate::SealedRefused,
            (true, true, false) => Fate::PinnedMoves,
        };
    }
    let Some(weights) = &item.weights else {
        return Fate::Untouched;
    };
    if weights.get(side).is_none_or(|&w| w == 0) {
        return Fate::Untouched;
    }
    let elsewhere = weights.iter().any(|(t, &w)| t != side && w > 0) || weights.contains_key(to);
    match (item.sealed, elsewhere) {
        (true, _) => Fate::SealedRefused,
        (false, true) => Fate::SplitMoves,
        (false, false) => Fate::CannotLeave,
    }
}

impl Plan {
    fn add(&mut self, item: &FlagItem) {
        let fate = fate(item, &self.side, &self.to, self.include_pinned);
        if item.tenant == flag_store::DEFAULT_TENANT {
            self.default_moves = matches!(fate, Fate::SplitMoves | Fate::PinnedMoves);
        }
        match fate {
            Fate::Untouched => {}
            Fate::SplitMoves => self.splits_moving += 1,
            Fate::PinnedMoves => self.pinned_moving += 1,
            Fate::PinnedStays => self.pinned_staying += 1,
            Fate::SealedRefused => self.sealed_refused.push(item.tenant.clone()),
            Fate::CannotLeave => self.cannot_leave.push(item.tenant.clone()),
        }
    }

    fn print(&self) {
        let Plan { side, to, .. } = self;
        println!(
            "evacuate {side} -> {to} (store version {})",
            self.store_version
        );
        println!(
            "  split tenants with a share on {side}: {} (the share moves to their other sides, {to} first when the split has it)",
            self.splits_moving
        );
        if self.include_pinned {
            println!("  pinned on {side}, moving to {to}: {}", self.pinned_moving);
        } else {
            println!(
                "  pinned on {side}, staying (their data is there; --include-pinned moves them to {to}): {}",
                self.pinned_staying
            );
        }
        if self.default_moves {
            println!("  the default flag (*) moves too: tenants without a flag leave {side}");
        }
        for (what, tenants) in [
            (
                "sealed, so never moved: answered 503 while evacuated",
                &self.sealed_refused,
            ),
            (
                "no other side in their split: answered 503 while evacuated",
                &self.cannot_leave,
            ),
        ] {
            if !tenants.is_empty() {
                println!("  {what}: {}", tenants.len());
                for t in tenants {
                    println!("    {t}");
                }
            }
        }
        println!("  restore with: switchyard flags restore {side} --reason ...");
    }
}

pub async fn evacuate(args: EvacuateArgs) -> anyhow::Result<ExitCode> {
    if args.side == args.to {
        bail!("--to {:?} is the side being evacuated", args.to);
    }
    let (url, targets) = store_url(&args.store)?;
    if let Some(targets) = &targets {
        for name in [&args.side, &args.to] {
            if targets.id(name).is_none() {
                bail!(
                    "unknown target {name:?} (configured targets: {})",
                    targets.known_list()
                );
            }
        }
    }
    let store = Store::open(&url).await;
    let key = evacuation::key(&args.side);
    let mut plan = Plan {
        side: args.side.clone(),
        to: args.to.clone(),
        include_pinned: args.include_pinned,
        ..Plan::default()
    };
    let mut record = None;
    plan.store_version = store
        .scan(|loaded| {
            match loaded.item {
                Ok(item) if item.tenant == key => record = Some(item),
                Ok(item) if evacuation::side_of(&item.tenant).is_none() => plan.add(&item),
                Ok(_) => {}
                Err((tenant, e)) => eprintln!(
                    "warning: {} ({}): {e}",
                    loaded.location,
                    tenant.as_deref().unwrap_or("no tenant")
                ),
            }
            std::ops::ControlFlow::Continue(())
        })
        .await?;
    if args.store.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        plan.print();
    }
    if !args.yes {
        eprintln!(
            "nothing written: run again with --yes to evacuate {}",
            args.side
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Against the record the plan read: a concurrent evacuate or restore fails this one.
    let expect = Some(record.as_ref().map_or(0, |r| r.version));
    let write = FlagWrite {
        evacuation: Some(EvacuationItem {
            to: args.to.clone(),
            include_pinned: args.include_pinned,
        }),
        ..FlagWrite::record(&key, &author(args.by)?, &args.reason, expect)
    };
    let (_, new) = store.write(&write, targets.as_ref()).await?;
    if !args.store.json {
        println!(
            "evacuated {} (record version {}): every router moves its tenants at its next poll",
            args.side, new.version
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let (url, targets) = store_url(&args.store)?;
    let store = Store::open(&url).await;
    let key = evacuation::key(&args.side);
    let current = store.get(&key).await?;
    let Some(evacuated) = current.as_ref().and_then(|r| r.evacuation.as_ref()) else {
        bail!(
            "{} is not evacuated in {}: nothing to restore",
            args.side,
            store.describe()
        );
    };
    println!(
        "restore {}: its tenants come back from {} exactly as before the evacuation (by {}: {})",
        args.side,
        evacuated.to,
        current
            .as_ref()
            .and_then(|r| r.updated_by.as_deref())
            .unwrap_or("?"),
        current
            .as_ref()
            .and_then(|r| r.reason.as_deref())
            .unwrap_or("?"),
    );
    let expect = current.as_ref().map(|r| r.version);
    let write = FlagWrite::record(&key, &author(args.by)?, &args.reason, expect);
    let (_, new) = store.write(&write, targets.as_ref()).await?;
    println!("restored {} (record version {})", args.side, new.version);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: &str) -> FlagItem {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_plan_sorts_tenants_as_the_pick_treats_them() {
        let f = |json: &str, include_pinned| fate(&item(json), "euw1", "use1", include_pinned);
        let pinned = r#"{"tenant":"a","target":"euw1"}"#;
        assert_eq!(f(pinned, false), Fate::PinnedStays);
        assert_eq!(f(pinned, true), Fate::PinnedMoves);
        let sealed = r#"{"tenant":"a","target":"euw1","sealed":true}"#;
        assert_eq!(f(sealed, false), Fate::PinnedStays);
        assert_eq!(f(sealed, true), Fate::SealedRefused);
        assert_eq!(
            f(r#"{"tenant":"a","target":"use1"}"#, true),
            Fate::Untouched
        );
        let split = r#"{"tenant":"a","weights":{"euw1":30,"legacy":70}}"#;
        assert_eq!(f(split, false), Fate::SplitMoves);
        let zero = r#"{"tenant":"a","weights":{"euw1":0,"legacy":100}}"#;
        assert_eq!(f(zero, false), Fate::Untouched);
        let only = r#"{"tenant":"a","weights":{"euw1":100,"legacy":0}}"#;
        assert_eq!(f(only, false), Fate::CannotLeave);
        let only_to = r#"{"tenant":"a","weights":{"euw1":100,"use1":0}}"#;
        assert_eq!(f(only_to, false), Fate::SplitMoves);
        let sealed_split = r#"{"tenant":"a","weights":{"euw1":50,"use1":50},"sealed":true}"#;
        assert_eq!(f(sealed_split, false), Fate::SealedRefused);
    }
}
