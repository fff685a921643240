//! `switchyard flags move`: a move with a hold, so that no request of a moving tenant sees
//! stale data and none fails. Each step is printed with its time and audited:
//! 1. the hold is written on every tenant (its id, the number of tenants, an absolute
//!    deadline): every router queues their new requests from then on;
//! 2. every live router acknowledges it (their in-flight requests on the old side finished);
//!    a router that stopped being seen blocks too, unless named with `--ignore-router`;
//! 3. the gate passes (a URL answers 2xx, or a command exits 0, for these tenants);
//! 4. one write a tenant flips it (and seals it) and ends the hold: the routers release its
//!    queued requests to the new side, in arrival order.
//!
//! Whatever fails ends the hold where it is, with the tenants where their data is: the
//! command writes the abort (the hold ended, the placement kept) and exits 2; a command
//! killed outright leaves the routers to release everything at the deadline, on their own.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use flag_store::fleet::{Fleet, now_ms};
use flag_store::store::Store;
use flag_store::{FlagWrite, HoldItem, HoldWrite, Placing, StoreUrl, Targets};

use super::StoreArgs;

/// How the move learns that the new side has caught up.
#[derive(Debug, Clone)]
pub enum Gate {
    /// No gate: the hold only drains the old side's requests.
    None,
    /// `GET URL?tenants=a,b` answers 2xx.
    Url(String),
    /// `sh -c CMD` exits 0, with `SWITCHYARD_TENANTS=a,b` and `SWITCHYARD_HOLD=ID`.
    Cmd(String),
}

/// One move with a hold, as the command line states it.
#[derive(Debug, Clone)]
pub struct Move {
    pub tenants: Vec<String>,
    pub to: String,
    pub seal: bool,
    pub force: bool,
    pub hold_max: Duration,
    pub gate: Gate,
    pub reason: String,
    pub by: String,
    /// Routers not seen for this long are stale (they block unless ignored).
    pub fleet_timeout: Duration,
    pub ignore_routers: Vec<String>,
}

/// `switchyard flags move`'s arguments.
#[derive(clap::Args, Debug)]
pub struct MoveArgs {
    /// The tenants to move, all in one hold.
    #[arg(required = true)]
    pub tenants: Vec<String>,
    /// The target they move to (pinned).
    #[arg(long)]
    pub to: String,
    /// Seal them on the new target in the same write.
    #[arg(long)]
    pub seal: bool,
    /// Allow moving sealed tenants.
    #[arg(long)]
    pub force: bool,
    /// The longest the tenants' requests are held; every router releases them at this
    /// deadline on its own, whatever happened.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub hold_max: std::time::Duration,
    /// Passes when `GET URL?tenants=a,b` answers 2xx (polled until the deadline).
    #[arg(long, conflicts_with = "gate_cmd")]
    pub gate_url: Option<String>,
    /// Passes when `sh -c CMD` exits 0; it gets SWITCHYARD_TENANTS=a,b and SWITCHYARD_HOLD.
    #[arg(long)]
    pub gate_cmd: Option<String>,
    /// A router not seen for this long must be named with --ignore-router to move on.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub fleet_timeout: std::time::Duration,
    /// A router known gone: the move does not wait for its acknowledgement (audited).
    #[arg(long)]
    pub ignore_router: Vec<String>,
    /// Why (recorded with every write; required).
    #[arg(long)]
    pub reason: String,
    /// Who (default: the user name).
    #[arg(long)]
    pub by: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl MoveArgs {
    pub fn into_move(self, by: String) -> Move {
        let gate = match (self.gate_url, self.gate_cmd) {
            (Some(u), _) => Gate::Url(u),
            (None, Some(c)) => Gate::Cmd(c),
            (None, None) => Gate::None,
        };
        Move {
            tenants: self.tenants,
            to: self.to,
            seal: self.seal,
            force: self.force,
            hold_max: self.hold_max,
            gate,
            reason: self.reason,
            by,
            fleet_timeout: self.fleet_timeout,
            ignore_routers: self.ignore_router,
        }
    }
}

/// How often the acknowledgements and the gate are asked again.
const POLL: Duration = Duration::from_millis(50);
const GATE_POLL: Duration = Duration::from_millis(200);

/// Prints a step with the time since the move began.
struct Steps(Instant);

impl Steps {
    fn say(&self, what: impl std::fmt::Display) {
        println!("[{:>7.3}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

/// Runs the move: exit 0 moved, 2 aborted (with why).
pub async fn run(url: &StoreUrl, targets: Option<&Targets>, m: Move) -> anyhow::Result<ExitCode> {
    if m.tenants.is_empty() {
        bail!("name at least one tenant to move");
    }
    if m.tenants.iter().any(|t| t == flag_store::DEFAULT_TENANT) {
        bail!(
            "the default flag (*) cannot be moved with a hold: requests without a tenant cannot be held; move the tenants by name, or set * with `flags set`"
        );
    }
    if let Some(t) = targets
        && t.id(&m.to).is_none()
    {
        bail!(
            "--to {:?} is not a configured target (configured: {})",
            m.to,
            t.known_list()
        );
    }
    // A tenant named twice is held once (a router acknowledges a hold once it has seen as
    // many tenants as the hold says).
    let mut seen = std::collections::HashSet::new();
    let mut m = m;
    m.tenants.retain(|t| seen.insert(t.clone()));
    let steps = Steps(Instant::now());
    let store = Store::open(url).await;
    let fleet = Fleet::of(&store);
    let id = format!("h{}-{:04x}", now_ms(), rand::random::<u16>());
    let ignoring = match m.ignore_routers.is_empty() {
        true => String::new(),
        false => format!(" (ignoring routers {})", m.ignore_routers.join(", ")),
    };
    // 1. The hold. A tenant that follows the default flag is held where the default puts it
    // (it gets an item of its own).
    let currents = store.currents(&m.tenants).await?;
    let mut placings = Vec::with_capacity(m.tenants.len());
    let mut default = None;
    for t in &m.tenants {
        match currents.get(t) {
            Some(c) if c.item.is_some() => placings.push(None),
            // A malformed item: the store's read says what is wrong with it.
            Some(_) => {
                store.get(t).await?;
                placings.push(None);
            }
            None => {
                if default.is_none() {
                    let Some(item) = store.get(flag_store::DEFAULT_TENANT).await? else {
                        bail!("tenant {t:?} has no flag and the store has no default flag (*)");
                    };
                    default = Some(match (item.target, item.weights) {
                        (Some(target), _) => Placing::Pinned(target),
                        (None, Some(weights)) => Placing::Split(weights),
                        (None, None) => bail!("the default flag (*) places nobody"),
                    });
                }
                placings.push(default.clone());
            }
        }
    }
    // The deadline counts from the hold's write, not from the reads before it.
    let deadline_ms = now_ms() + m.hold_max.as_millis() as u64;
    let hold = HoldWrite::Set(HoldItem {
        id: id.clone(),
        tenants: m.tenants.len() as u32,
        deadline_ms,
    });
    let why = format!("hold {id} for a move to {}{ignoring}", m.to);
    let mut writes = writes_for(&m, &m.tenants, None, None, m.force, hold, &why);
    for (w, placing) in writes.iter_mut().zip(placings) {
        w.placing = placing;
    }
    let results = store.write_each(&writes, targets, |_| {}).await;
    let failed: Vec<String> = (refusals(&m.tenants, &results).into_iter())
        .map(|(t, e)| format!("{t}: {e}"))
        .collect();
    if !failed.is_empty() {
        steps.say(format!(
            "1. hold {id} refused for {} tenant(s):",
            failed.len()
        ));
        for f in &failed {
            println!("           {f}");
        }
        let held: Vec<String> = (m.tenants.iter().zip(&results))
            .filter(|(_, r)| r.is_ok())
            .map(|(t, _)| t.clone())
            .collect();
        return abort(
            &store,
            targets,
            &steps,
            &m,
            &id,
            &held,
            "the hold could not be written",
        )
        .await;
    }
    steps.say(format!(
        "1. hold {id} written on {} tenant(s); deadline in {:?}",
        m.tenants.len(),
        m.hold_max
    ));

    // 2 and 3: every router's acknowledgement, then the gate; a stop signal aborts.
    let ready = async {
        acknowledged(&fleet, &m, &id, deadline_ms, &steps).await?;
        steps.say(
            "2. every live router acknowledged: the tenants' requests queue, none is in flight",
        );
        gate(&m.gate, &m.tenants, &id, deadline_ms, &steps).await
    };
    let ready = tokio::select! {
        ready = ready => ready,
        why = stopped() => Err(why),
    };
    if let Err(why) = ready {
        return abort(&store, targets, &steps, &m, &id, &m.tenants, &why).await;
    }

    // 4. The flip, which ends the hold.
    let why = format!("move to {} (hold {id})", m.to);
    let placing = Some(Placing::Pinned(m.to.clone()));
    let seal = m.seal.then_some(true);
    let end = HoldWrite::End(id.clone());
    let writes = writes_for(&m, &m.tenants, placing, seal, m.force, end, &why);
    let results = store.write_each(&writes, targets, |_| {}).await;
    let failed = refusals(&m.tenants, &results);
    if !failed.is_empty() {
        for (t, e) in &failed {
            steps.say(format!("3. flip refused for {t}: {e}"));
        }
        let left: Vec<String> = failed.into_iter().map(|(t, _)| t).collect();
        let moved = m.tenants.len() - left.len();
        steps.say(format!(
            "{moved} tenant(s) moved; ending the hold of the rest where they are"
        ));
        return abort(
            &store,
            targets,
            &steps,
            &m,
            &id,
            &left,
            "the flip was refused",
        )
        .await;
    }
    steps.say(format!(
        "4. moved {} tenant(s) to {}{}; hold {id} ended: their requests go to {}",
        m.tenants.len(),
        m.to,
        if m.seal { ", sealed" } else { "" },
        m.to
    ));
    Ok(ExitCode::SUCCESS)
}

/// Waits until every live router (and every stale one not ignored) acknowledges the hold.
async fn acknowledged(
    fleet: &Fleet,
    m: &Move,
    id: &str,
    deadline_ms: u64,
    steps: &Steps,
) -> Result<(), String> {
    let mut said = String::new();
    loop {
        let (waiting, stale) = match fleet.list().await {
            Ok(listing) => {
                if listing.routers.is_empty() && said.is_empty() {
                    steps.say("2. no router is registered in the fleet: none to wait for");
                }
                let now = now_ms();
                let mut waiting = Vec::new();
                let mut stale = Vec::new();
                for p in &listing.routers {
                    if m.ignore_routers.contains(&p.router) || p.drained.iter().any(|d| d == id) {
                        continue;
                    }
                    if p.age_ms(now) <= m.fleet_timeout.as_millis() as u64 {
                        waiting.push(p.router.clone());
                    } else {
                        stale.push(p.router.clone());
                    }
                }
                (waiting, stale)
            }
            Err(e) => (
                vec![format!("(the fleet cannot be read: {})", chain(&e))],
                Vec::new(),
            ),
        };
        if waiting.is_empty() && stale.is_empty() {
            break;
        }
        let now_saying = format!(
            "waiting for {}{}",
            waiting.join(", "),
            match stale.is_empty() {
                true => String::new(),
                false => format!(
                    "; not seen for over {:?} and not acknowledged (name them with --ignore-router if they are gone): {}",
                    m.fleet_timeout,
                    stale.join(", ")
                ),
            }
        );
        if now_saying != said {
            steps.say(format!("2. {now_saying}"));
            said = now_saying;
        }
        if now_ms() + POLL.as_millis() as u64 >= deadline_ms {
            return Err(format!(
                "not every router acknowledged the hold before its deadline ({said})"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Resolves with why when the command is asked to stop (SIGINT, SIGTERM).
async fn stopped() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "the command was interrupted (SIGINT)".into(),
        _ = term.recv() => "the command was stopped (SIGTERM)".into(),
    }
}

/// Ends the hold where the tenants are (placement kept) and exits 2.
async fn abort(
    store: &Store,
    targets: Option<&Targets>,
    steps: &Steps,
    m: &Move,
    id: &str,
    tenants: &[String],
    why: &str,
) -> anyhow::Result<ExitCode> {
    steps.say(format!("aborted: {why}"));
    let why = format!("abort hold {id}: {why}");
    let end = HoldWrite::End(id.to_owned());
    let writes = writes_for(m, tenants, None, None, false, end, &why);
    let results = store.write_each(&writes, targets, |_| {}).await;
    let failed: Vec<String> = (refusals(tenants, &results).into_iter())
        .map(|(t, e)| format!("{t}: {e}"))
        .collect();
    if failed.is_empty() {
        steps.say(format!(
            "hold {id} ended on {} tenant(s); they stay where they were",
            tenants.len()
        ));
    } else {
        steps.say(format!(
            "the abort could not be written for {} tenant(s) ({}); every router releases them where they are at the deadline",
            failed.len(),
            failed.join("; ")
        ));
    }
    Ok(ExitCode::from(2))
}

/// Polls the gate until it passes or the deadline comes.
async fn gate(
    gate: &Gate,
    tenants: &[String],
    id: &str,
    deadline_ms: u64,
    steps: &Steps,
) -> Result<(), String> {
    let list = tenants.join(",");
    let mut last = String::new();
    loop {
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
        if left.is_zero() {
            return Err(format!(
                "the gate did not pass before the hold's deadline ({last})"
            ));
        }
        let verdict = match gate {
            Gate::None => {
                steps.say("3. no gate: the new side is taken as caught up");
                return Ok(());
            }
            Gate::Url(url) => ask_url(url, &list, left).await,
            Gate::Cmd(cmd) => ask_cmd(cmd, &list, id, left).await,
        };
        match verdict {
            Ok(()) => {
                steps.say("3. the gate passed: the new side has caught up");
                return Ok(());
            }
            Err(why) => {
                if why != last {
                    steps.say(format!("3. the gate says not yet: {why}"));
                    last = why;
                }
            }
        }
        tokio::time::sleep(GATE_POLL.min(left)).await;
    }
}

async fn ask_url(url: &str, tenants: &str, within: Duration) -> Result<(), String> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let uri: http::Uri = format!("{url}{sep}tenants={tenants}")
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let asked = tokio::time::timeout(within, client.get(uri)).await;
    match asked {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(format!("cannot ask it: {e}")),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("it answered {}", resp.status())),
    }
}

async fn ask_cmd(cmd: &str, tenants: &str, id: &str, within: Duration) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .env("SWITCHYARD_TENANTS", tenants)
        .env("SWITCHYARD_HOLD", id)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(within, child).await {
        Err(_) => Err("the command did not finish".into()),
        Ok(Err(e)) => Err(format!("cannot run it: {e}")),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("it exited with {status}")),
    }
}

/// One write a tenant, each stating who and why (`why: reason`).
fn writes_for(
    m: &Move,
    tenants: &[String],
    placing: Option<Placing>,
    seal: Option<bool>,
    force: bool,
    hold: HoldWrite,
    why: &str,
) -> Vec<FlagWrite> {
    (tenants.iter())
        .map(|t| FlagWrite {
            tenant: t.clone(),
            placing: placing.clone(),
            seal,
            shadow: None,
            by: m.by.clone(),
            reason: format!("{why}: {}", m.reason),
            expect_version: None,
            force,
            hold: hold.clone(),
        })
        .collect()
}

/// The tenants whose write was refused, with why.
fn refusals(
    tenants: &[String],
    results: &[flag_store::store::WriteResult],
) -> Vec<(String, String)> {
    (tenants.iter().zip(results))
        .filter_map(|(t, r)| r.as_ref().err().map(|e| (t.clone(), chain(e))))
        .collect()
}

fn chain(e: &flag_store::StoreError) -> String {
    flag_store::error::Chain(e).to_string()
}
