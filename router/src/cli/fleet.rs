//! `switchyard fleet`: the routers serving from a store, read from their presence records:
//! each one's id, build, the flag version it routes by, how old its snapshot is, when it was
//! last seen and the holds it acknowledges. Exits 1 when the live routers disagree on the
//! version (or one has not confirmed its flags) for longer than `--max-lag`: the check a
//! playbook runs after every flip.

use std::process::ExitCode;
use std::time::Duration;

use flag_store::StoreUrl;
use flag_store::fleet::{Fleet, Presence, now_ms};
use flag_store::store::Store;
use serde::Serialize;

/// What the fleet says, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub store_version: Option<u64>,
    pub routers: Vec<Row>,
    /// Why the fleet is not in step: one line each.
    pub problems: Vec<String>,
    /// Records that could not be read, named.
    pub unreadable: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub presence: Presence,
    pub last_seen_ms_ago: u64,
    pub snapshot_age_ms: u64,
    /// Seen within the fleet timeout.
    pub live: bool,
}

/// Reads the store's fleet and judges it as of now.
pub async fn report(
    url: &StoreUrl,
    max_lag: Duration,
    timeout: Duration,
) -> anyhow::Result<Report> {
    let store = Store::open(url).await;
    let listing = Fleet::of(&store).list().await?;
    // The store's own version, for the header; a store that cannot say is not the fleet's fault.
    let store_version = store.version().await.ok();
    Ok(judge(
        listing.routers,
        listing.unreadable,
        store_version,
        now_ms(),
        max_lag,
        timeout,
    ))
}

/// The judgement, pure: which live routers lag the newest version (or their store) too long.
pub fn judge(
    routers: Vec<Presence>,
    unreadable: Vec<String>,
    store_version: Option<u64>,
    now: u64,
    max_lag: Duration,
    timeout: Duration,
) -> Report {
    let max_lag = max_lag.as_millis() as u64;
    let rows: Vec<Row> = (routers.into_iter())
        .map(|p| Row {
            last_seen_ms_ago: p.age_ms(now),
            // As of its last record: the record says how old the snapshot was then.
            snapshot_age_ms: p.seen_ms.saturating_sub(p.snapshot_ms) + p.age_ms(now),
            live: p.age_ms(now) <= timeout.as_millis() as u64,
            presence: p,
        })
        .collect();
    let live: Vec<&Row> = rows.iter().filter(|r| r.live).collect();
    let newest = live.iter().map(|r| r.presence.flag_version).max();
    // The newest version has been routed by since its first router took it.
    let newest_since = (live.iter())
        .filter(|r| Some(r.presence.flag_version) == newest)
        .map(|r| r.presence.version_since_ms)
        .min();
    let mut problems = Vec::new();
    for r in &live {
        let p = &r.presence;
        if let (Some(newest), Some(since)) = (newest, newest_since)
            && p.flag_version < newest
            && now.saturating_sub(since) > max_lag
        {
            problems.push(format!(
                "{} routes by version {} while others route by {newest} since {} ago",
                p.router,
                p.flag_version,
                ago(now.saturating_sub(since))
            ));
        }
        if r.snapshot_age_ms > max_lag {
            problems.push(format!(
                "{} has not confirmed its flags with the store for {}",
                p.router,
                ago(r.snapshot_age_ms)
            ));
        }
    }
    Report {
        store_version,
        routers: rows,
        problems,
        unreadable,
    }
}

fn ago(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
    }
}

/// The table people read.
pub fn render(report: &Report, store: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let version = report
        .store_version
        .map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    let live = report.routers.iter().filter(|r| r.live).count();
    let _ = writeln!(
        out,
        "store {store} at version {version}: {live} live router(s), {} stale",
        report.routers.len() - live
    );
    if !report.routers.is_empty() {
        let _ = writeln!(
            out,
            "{:<32} {:<8} {:>9} {:>12} {:>10} {:<6} HOLDS DRAINED",
            "ROUTER", "BUILD", "VERSION", "SNAPSHOT AGE", "LAST SEEN", "STATE"
        );
    }
    for r in &report.routers {
        let p = &r.presence;
        let _ = writeln!(
            out,
            "{:<32} {:<8} {:>9} {:>12} {:>10} {:<6} {}",
            p.router,
            p.build,
            p.flag_version,
            ago(r.snapshot_age_ms),
            ago(r.last_seen_ms_ago),
            if r.live { "live" } else { "stale" },
            if p.drained.is_empty() {
                "-".to_owned()
            } else {
                p.drained.join(",")
            }
        );
    }
    for u in &report.unreadable {
        let _ = writeln!(out, "unreadable record: {u}");
    }
    if report.problems.is_empty() {
        if live > 0 {
            let _ = writeln!(out, "in step: every live router routes by the same flags");
        }
    } else {
        for p in &report.problems {
            let _ = writeln!(out, "NOT IN STEP: {p}");
        }
    }
    out
}

/// Exit 0 in step, 1 not.
pub fn exit_code(report: &Report) -> ExitCode {
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(id: &str, version: u64, since: u64, seen: u64) -> Presence {
        Presence {
            router: id.into(),
            build: "0.1.0".into(),
            started_ms: 0,
            flag_version: version,
            version_since_ms: since,
            snapshot_ms: seen,
            seen_ms: seen,
            drained: Vec::new(),
            ramps: Default::default(),
            shadow: Default::default(),
        }
    }

    const LAG: Duration = Duration::from_secs(10);
    const TIMEOUT: Duration = Duration::from_secs(30);

    #[test]
    fn a_router_behind_longer_than_the_bound_is_named_and_a_brief_lag_is_not() {
        let now = 100_000;
        // b took version 8 five seconds ago: a is behind, within the bound.
        let fleet = vec![router("a", 7, 0, now), router("b", 8, now - 5_000, now)];
        let report = judge(fleet, vec![], Some(8), now, LAG, TIMEOUT);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        // Twelve seconds later a still routes by 7.
        let later = now + 12_000;
        let fleet = vec![router("a", 7, 0, later), router("b", 8, now - 5_000, later)];
        let report = judge(fleet, vec![], Some(8), later, LAG, TIMEOUT);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].starts_with("a routes by version 7"));
    }

    #[test]
    fn a_stale_router_is_listed_but_does_not_hold_the_fleet_back() {
        let now = 100_000;
        let fleet = vec![router("dead", 3, 0, now - 60_000), router("b", 8, 0, now)];
        let report = judge(fleet, vec![], Some(8), now, LAG, TIMEOUT);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let text = render(&report, "file:x");
        assert!(text.contains("1 live router(s), 1 stale"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("dead") && l.contains("stale")),
            "{text}"
        );
    }

    #[test]
    fn a_router_that_cannot_confirm_its_flags_is_named() {
        let now = 100_000;
        let mut cut_off = router("a", 8, 0, now);
        cut_off.snapshot_ms = now - 20_000;
        let report = judge(vec![cut_off], vec![], None, now, LAG, TIMEOUT);
        assert_eq!(report.problems.len(), 1);
        assert!(
            report.problems[0].contains("not confirmed its flags"),
            "{:?}",
            report.problems
        );
    }
}
