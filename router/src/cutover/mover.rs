//! A move with a hold, so that no request of a moving tenant sees stale data and none fails:
//! the engine of `switchyard flags move`, `flags apply --hold-max` and the console's move.
//! Each step is said (with its time) and audited:
//! 1. the hold is written on every tenant (its id, the number of tenants, an absolute
//!    deadline): every router queues their new requests from then on;
//! 2. every live router acknowledges it (their in-flight requests on the old side finished);
//!    a router that stopped being seen blocks too, unless ignored by name;
//! 3. the gate passes (a URL answers 2xx, or a command exits 0, for these tenants);
//! 4. one write a tenant flips it (and seals it) and ends the hold: the routers release its
//!    queued requests to the new side, in arrival order.
//!
//! Whatever fails ends the hold where it is, with the tenants where their data is: the move
//! writes the abort (the hold ended, the placement kept); a mover killed outright leaves the
//! routers to release everything at the deadline, on their own.

use std::future::Future;
use std::time::{Duration, Instant};

use flag_store::fleet::{Fleet, now_ms};
use flag_store::store::{Store, WriteResult};
use flag_store::{FlagWrite, HoldItem, HoldWrite, Placing, Targets};

/// How the move learns that the new side has caught up.
#[derive(Debug, Clone)]
pub enum Gate {
    /// No gate: the hold only drains the old side's requests.
    None,
    /// `GET URL?tenants=a,b` answers 2xx.
    Url(Box<GateUrl>),
    /// `sh -c CMD` exits 0, with `SWITCHYARD_TENANTS=a,b` and `SWITCHYARD_HOLD=ID`.
    Cmd(String),
}

/// One move with a hold.
#[derive(Debug, Clone)]
pub struct Move {
    /// Each tenant's flip: where it goes, its seal and shadow, who and why; its expected
    /// version (if any) is checked by the hold's write.
    pub flips: Vec<FlagWrite>,
    /// Where they go, in words (a target's name, or a batch's).
    pub to: String,
    pub hold_max: Duration,
    pub gate: Gate,
    /// Routers not seen for this long are stale (they block unless ignored).
    pub fleet_timeout: Duration,
    pub ignore_routers: Vec<String>,
}

/// Each tenant's flip to `placing` (sealed there when `seal`), as a move with a hold writes
/// it: `flags move` and the console's move alike.
pub fn flips(
    tenants: &[String],
    placing: &Placing,
    seal: bool,
    force: bool,
    by: &str,
    reason: &str,
) -> Vec<FlagWrite> {
    (tenants.iter())
        .map(|t| FlagWrite {
            evacuation: None,
            ramp: None,
            tenant: t.clone(),
            placing: Some(placing.clone()),
            seal: seal.then_some(true),
            shadow: None,
            by: by.to_owned(),
            reason: reason.to_owned(),
            expect_version: None,
            force,
            hold: HoldWrite::None,
            jobs: None,
        })
        .collect()
}

/// How a move ended once it began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Flipped: the tenants' requests go to their new placement.
    Moved,
    /// Ended where they were (why was said).
    Aborted,
}

/// Where a move says its steps, and how it writes its tenants (a command line shows a
/// progress bar for a long batch).
pub trait Report: Sync {
    fn say(&self, line: String);

    fn write_all(
        &self,
        store: &Store,
        writes: &[FlagWrite],
        targets: Option<&Targets>,
    ) -> impl Future<Output = Vec<WriteResult>> + Send {
        store.write_each(writes, targets, |_| {})
    }
}

/// Says a step with the time since the move began.
struct Steps<'a, R> {
    began: Instant,
    report: &'a R,
}

impl<R: Report> Steps<'_, R> {
    fn say(&self, what: impl std::fmt::Display) {
        let at = self.began.elapsed().as_secs_f64();
        self.report.say(format!("[{at:>7.3}s] {what}"));
    }
}

/// A gate URL and the client that asks it: plain HTTP, or HTTPS verified (always) against
/// the platform's CAs or the ones given.
#[derive(Debug, Clone)]
pub struct GateUrl {
    url: String,
    client: hyper_util::client::legacy::Client<
        crate::tls::Connector,
        http_body_util::Empty<bytes::Bytes>,
    >,
}

impl GateUrl {
    /// A gate at `url`; what is wrong with it (not a URL, an unreadable CA file) is said
    /// here, before anything is held.
    pub fn new(url: &str, ca: Option<&std::path::Path>) -> Result<GateUrl, String> {
        let uri: http::Uri =
            (url.parse()).map_err(|e| format!("--gate-url {url:?} is not a URL: {e}"))?;
        let tls = match (uri.scheme_str(), ca) {
            (Some("https"), ca) => Some(crate::tls::UpstreamTls {
                ca_file: ca.map(Into::into),
                server_name: None,
                client_cert: None,
            }),
            (Some("http"), None) => None,
            (Some("http"), Some(_)) => {
                return Err(format!(
                    "--gate-ca is for an https:// gate URL, not {url:?}"
                ));
            }
            _ => {
                return Err(format!(
                    "--gate-url {url:?} must start with http:// or https://"
                ));
            }
        };
        if uri.host().is_none() {
            return Err(format!("--gate-url {url:?} names no host"));
        }
        let connector = crate::tls::connector(tls.as_ref(), false, GATE_CONNECT_TIMEOUT)
            // Its words name the router's config keys; here the flag is the key.
            .map_err(|e| format!("the gate's TLS: {}", e.replace("tls_ca_file", "--gate-ca")))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(GateUrl {
            url: url.to_owned(),
            client,
        })
    }

    /// Asks once, waiting up to `within`.
    async fn ask(&self, tenants: &str, within: Duration) -> Result<(), String> {
        let url = &self.url;
        let sep = if url.contains('?') { '&' } else { '?' };
        let uri: http::Uri = format!("{url}{sep}tenants={tenants}")
            .parse()
            .map_err(|e| format!("{url:?} with the tenants is not a URL: {e}"))?;
        match tokio::time::timeout(within, self.client.get(uri)).await {
            Err(_) => Err("no answer".into()),
            Ok(Err(e)) => Err(match crate::tls::upstream_failure(&e) {
                Some(tls) => format!("cannot ask it: {tls}"),
                None => format!("cannot ask it: {}", flag_store::error::Chain(&e)),
            }),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) => Err(format!("it answered {}", resp.status())),
        }
    }
}

/// How long the gate's connection may take to open, each time it is asked.
const GATE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Kept between the flip's writes and the hold's deadline, for every router to see the flip
/// (a few of their polls).
const FLIP_MARGIN: Duration = Duration::from_secs(2);

/// How often the acknowledgements and the gate are asked again.
const POLL: Duration = Duration::from_millis(50);
const GATE_POLL: Duration = Duration::from_millis(200);

/// Runs the move, saying each step to `report`; `stop` resolving (with why) aborts it before
/// the flip. An error is a move refused before anything was held.
pub async fn run<R: Report>(
    store: &Store,
    targets: Option<&Targets>,
    m: Move,
    report: &R,
    stop: impl Future<Output = String>,
) -> Result<Outcome, String> {
    let steps = Steps {
        began: Instant::now(),
        report,
    };
    if m.flips.is_empty() {
        return Err("name at least one tenant to move".into());
    }
    if m.flips
        .iter()
        .any(|f| f.tenant == flag_store::DEFAULT_TENANT)
    {
        return Err("the default flag (*) cannot be moved with a hold: requests without a tenant cannot be held; move the tenants by name, or set * with `flags set`".into());
    }
    // Each flip is checked as the store's write will check it (its targets against the
    // config, its weights, its id), before anything is held.
    for f in &m.flips {
        let flip = FlagWrite {
            expect_version: None,
            hold: HoldWrite::None,
            ..f.clone()
        };
        if let Err(e) = flip.apply(&flag_store::write::Current::default(), targets, 0) {
            return Err(chain(&e));
        }
    }
    // A tenant named twice is held once (a router acknowledges a hold once it has seen as
    // many tenants as the hold says).
    let mut seen = std::collections::HashSet::new();
    let mut m = m;
    m.flips.retain(|f| seen.insert(f.tenant.clone()));
    let tenants: Vec<String> = m.flips.iter().map(|f| f.tenant.clone()).collect();
    let fleet = Fleet::of(store);
    let id = format!("h{}-{:04x}", now_ms(), rand::random::<u16>());
    let ignoring = match m.ignore_routers.is_empty() {
        true => String::new(),
        false => format!(" (ignoring routers {})", m.ignore_routers.join(", ")),
    };
    // 1. The hold. A tenant that follows the default flag is held where the default puts it
    // (it gets an item of its own).
    let currents = store.currents(&tenants).await.map_err(|e| chain(&e))?;
    let mut placings = Vec::with_capacity(tenants.len());
    let mut default = None;
    for t in &tenants {
        match currents.get(t) {
            Some(c) if c.item.is_some() => placings.push(None),
            // A malformed item: the store's read says what is wrong with it.
            Some(_) => {
                store.get(t).await.map_err(|e| chain(&e))?;
                placings.push(None);
            }
            None => {
                if default.is_none() {
                    let read = store.get(flag_store::DEFAULT_TENANT).await;
                    let Some(item) = read.map_err(|e| chain(&e))? else {
                        return Err(format!(
                            "tenant {t:?} has no flag and the store has no default flag (*)"
                        ));
                    };
                    default = Some(match (item.target, item.weights) {
                        (Some(target), _) => Placing::Pinned(target),
                        (None, Some(weights)) => Placing::Split(weights),
                        (None, None) => return Err("the default flag (*) places nobody".into()),
                    });
                }
                placings.push(default.clone());
            }
        }
    }
    // The deadline counts from the hold's write, not from the reads before it.
    let writing_ms = now_ms();
    let deadline_ms = writing_ms + m.hold_max.as_millis() as u64;
    let hold = HoldWrite::Set(HoldItem {
        id: id.clone(),
        tenants: tenants.len() as u32,
        deadline_ms,
    });
    let why = format!("hold {id} for a move to {}{ignoring}", m.to);
    let writes: Vec<FlagWrite> = (m.flips.iter().zip(placings))
        .map(|(f, placing)| FlagWrite {
            placing,
            seal: None,
            shadow: None,
            reason: format!("{why}: {}", f.reason),
            hold: hold.clone(),
            ..f.clone()
        })
        .collect();
    let results = report.write_all(store, &writes, targets).await;
    let failed: Vec<String> = (refusals(&tenants, &results).into_iter())
        .map(|(t, e)| format!("{t}: {e}"))
        .collect();
    if !failed.is_empty() {
        steps.say(format!(
            "1. hold {id} refused for {} tenant(s):",
            failed.len()
        ));
        for f in &failed {
            steps.say(format!("   {f}"));
        }
        let held: Vec<String> = (tenants.iter().zip(&results))
            .filter(|(_, r)| r.is_ok())
            .map(|(t, _)| t.clone())
            .collect();
        return abort(
            store,
            targets,
            &steps,
            &m,
            &id,
            &held,
            "the hold could not be written",
        )
        .await;
    }
    // A router that has not seen the flip by the deadline releases the tenants' requests to
    // where they were: the flip is written only while there is time for its writes (as long
    // as the hold's took) and for every router to see it.
    let hold_took = now_ms().saturating_sub(writing_ms);
    let flip_by_ms = deadline_ms.saturating_sub(hold_took + FLIP_MARGIN.as_millis() as u64);
    steps.say(format!(
        "1. hold {id} written on {} tenant(s); deadline in {:?}, flip by {:.1}s before it",
        tenants.len(),
        m.hold_max,
        (deadline_ms - flip_by_ms) as f64 / 1000.0
    ));

    // 2 and 3: every router's acknowledgement, then the gate; a stop signal aborts.
    let ready = async {
        acknowledged(&fleet, &m, &id, flip_by_ms, &steps).await?;
        steps.say(
            "2. every live router acknowledged: the tenants' requests queue, none is in flight",
        );
        gate(&m.gate, &tenants, &id, flip_by_ms, &steps).await
    };
    let ready = tokio::select! {
        ready = ready => ready,
        why = stop => Err(why),
    };
    if let Err(why) = ready {
        return abort(store, targets, &steps, &m, &id, &tenants, &why).await;
    }

    // 4. The flip, which ends the hold.
    let why = format!("move to {} (hold {id})", m.to);
    let writes: Vec<FlagWrite> = (m.flips.iter())
        .map(|f| FlagWrite {
            reason: format!("{why}: {}", f.reason),
            expect_version: None,
            hold: HoldWrite::End(id.clone()),
            ..f.clone()
        })
        .collect();
    let results = report.write_all(store, &writes, targets).await;
    let failed = refusals(&tenants, &results);
    if !failed.is_empty() {
        for (t, e) in &failed {
            steps.say(format!("4. flip refused for {t}: {e}"));
        }
        let left: Vec<String> = failed.into_iter().map(|(t, _)| t).collect();
        let moved = tenants.len() - left.len();
        steps.say(format!(
            "{moved} tenant(s) moved; ending the hold of the rest where they are"
        ));
        return abort(
            store,
            targets,
            &steps,
            &m,
            &id,
            &left,
            "the flip was refused",
        )
        .await;
    }
    let sealed = m.flips.iter().filter(|f| f.seal == Some(true)).count();
    steps.say(format!(
        "4. moved {} tenant(s) to {}{}; hold {id} ended: their requests go to {}",
        tenants.len(),
        m.to,
        match sealed {
            0 => String::new(),
            n if n == tenants.len() => ", sealed".into(),
            n => format!(", {n} sealed"),
        },
        m.to
    ));
    Ok(Outcome::Moved)
}

/// Waits until every live router (and every stale one not ignored) acknowledges the hold.
async fn acknowledged(
    fleet: &Fleet,
    m: &Move,
    id: &str,
    flip_by_ms: u64,
    steps: &Steps<'_, impl Report>,
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
        if now_ms() + POLL.as_millis() as u64 >= flip_by_ms {
            return Err(format!(
                "not every router acknowledged the hold before its deadline, less the flip's time ({said})"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Ends the hold where the tenants are (placement kept): the move is aborted.
async fn abort<R: Report>(
    store: &Store,
    targets: Option<&Targets>,
    steps: &Steps<'_, R>,
    m: &Move,
    id: &str,
    tenants: &[String],
    why: &str,
) -> Result<Outcome, String> {
    steps.say(format!("aborted: {why}"));
    let why = format!("abort hold {id}: {why}");
    let writes: Vec<FlagWrite> = (m.flips.iter())
        .filter(|f| tenants.contains(&f.tenant))
        .map(|f| FlagWrite {
            placing: None,
            seal: None,
            shadow: None,
            reason: format!("{why}: {}", f.reason),
            expect_version: None,
            force: false,
            hold: HoldWrite::End(id.to_owned()),
            ..f.clone()
        })
        .collect();
    let tenants: Vec<String> = writes.iter().map(|w| w.tenant.clone()).collect();
    let results = steps.report.write_all(store, &writes, targets).await;
    let failed: Vec<String> = (refusals(&tenants, &results).into_iter())
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
    Ok(Outcome::Aborted)
}

/// Polls the gate until it passes or the deadline comes.
async fn gate(
    gate: &Gate,
    tenants: &[String],
    id: &str,
    flip_by_ms: u64,
    steps: &Steps<'_, impl Report>,
) -> Result<(), String> {
    let list = tenants.join(",");
    let mut last = String::new();
    loop {
        let left = Duration::from_millis(flip_by_ms.saturating_sub(now_ms()));
        if left.is_zero() {
            return Err(format!(
                "the gate did not pass before the hold's deadline, less the flip's time ({last})"
            ));
        }
        let verdict = match gate {
            Gate::None => {
                steps.say("3. no gate: the new side is taken as caught up");
                return Ok(());
            }
            Gate::Url(url) => url.ask(&list, left).await,
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

/// Runs the gate command, waiting up to `within`. A plain child process watched by polling:
/// tokio's process driver would be built into every router's runtime and pay on each of its
/// wake-ups (about 27 instructions a request, by callgrind), for a command a move seldom runs.
async fn ask_cmd(cmd: &str, tenants: &str, id: &str, within: Duration) -> Result<(), String> {
    let child = std::process::Command::new("sh")
        .args(["-c", cmd])
        .env("SWITCHYARD_TENANTS", tenants)
        .env("SWITCHYARD_HOLD", id)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let mut child = Reaped(child);
    let deadline = Instant::now() + within;
    loop {
        match child.0.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("it exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                return Err("the command did not finish".into());
            }
            Ok(None) => tokio::time::sleep(CMD_POLL).await,
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    }
}

/// How often a running gate command is looked at.
const CMD_POLL: Duration = Duration::from_millis(10);

/// A gate command, killed and reaped when it is given up on (its deadline, or the move
/// stopped while it ran).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
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
