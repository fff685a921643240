//! `switchyard flags move`: a move with a hold ([`crate::cutover::mover`] says its steps),
//! each step printed with its time. `switchyard flags apply BATCH --hold-max` runs the same
//! steps for a whole batch, each tenant to the placement its row says: a thousand tenants move
//! in one pause. Its hold's writes are conditional on the versions the plan read, so a tenant
//! changed since is not held (and the move aborts). Exits 0 moved, 2 aborted (the tenants stay
//! where they were; SIGINT and SIGTERM abort too), 1 on a move refused before anything was
//! held.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use flag_store::store::{Store, WriteResult};
use flag_store::{FlagWrite, Placing, Targets};

use super::StoreArgs;
pub use crate::cutover::mover::Move;
use crate::cutover::mover::{self, Gate, GateUrl, Outcome};

/// The hold's part of `flags move` and `flags apply`: its maximum, the gate, the fleet.
#[derive(clap::Args, Debug, Clone)]
pub struct HoldArgs {
    /// The longest the tenants' requests are held; every router releases them at this
    /// deadline on its own, whatever happened (`flags move`: 10s unless given; `flags
    /// apply` holds the batch only when it is given).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub hold_max: Option<std::time::Duration>,
    /// Passes when `GET URL?tenants=a,b` answers 2xx (polled until the deadline); an
    /// `https://` URL is verified against the platform's CAs or --gate-ca.
    #[arg(long, conflicts_with = "gate_cmd")]
    pub gate_url: Option<String>,
    /// PEM CA certificates to verify an `https://` gate URL against (a private CA).
    #[arg(long, requires = "gate_url")]
    pub gate_ca: Option<std::path::PathBuf>,
    /// Passes when `sh -c CMD` exits 0; it gets SWITCHYARD_TENANTS=a,b and SWITCHYARD_HOLD.
    #[arg(long)]
    pub gate_cmd: Option<String>,
    /// A router not seen for this long must be named with --ignore-router to move on.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub fleet_timeout: std::time::Duration,
    /// A router known gone: the move does not wait for its acknowledgement (audited).
    #[arg(long)]
    pub ignore_router: Vec<String>,
}

impl HoldArgs {
    /// The move of `flips` with this hold (`hold_max` given); a gate URL that cannot be
    /// asked (not a URL, an unreadable CA file) is refused here, before anything is held.
    pub fn into_move(
        self,
        hold_max: Duration,
        flips: Vec<FlagWrite>,
        to: String,
    ) -> anyhow::Result<Move> {
        let gate = match (self.gate_url, self.gate_cmd) {
            (Some(u), _) => Gate::Url(Box::new(
                GateUrl::new(&u, self.gate_ca.as_deref()).map_err(|e| anyhow::anyhow!(e))?,
            )),
            (None, Some(c)) => Gate::Cmd(c),
            (None, None) => Gate::None,
        };
        Ok(Move {
            flips,
            to,
            hold_max,
            gate,
            fleet_timeout: self.fleet_timeout,
            ignore_routers: self.ignore_router,
        })
    }
}

/// `switchyard flags move`'s arguments.
#[derive(clap::Args, Debug)]
pub struct MoveArgs {
    /// The tenants to move, all in one hold.
    #[arg(required = true)]
    pub tenants: Vec<String>,
    /// The target they move to (pinned).
    #[arg(long, conflicts_with = "split", required_unless_present = "split")]
    pub to: Option<String>,
    /// Or the weights they move to, e.g. `legacy=50,new=50` (every target in it holds their
    /// data; sticky by user as `flags set --split` is).
    #[arg(long)]
    pub split: Option<String>,
    /// Seal them on the new target in the same write.
    #[arg(long)]
    pub seal: bool,
    /// Allow moving sealed tenants.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub hold: HoldArgs,
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
    pub fn into_move(self, by: String) -> anyhow::Result<Move> {
        let (placing, to) = match (self.to, &self.split) {
            (Some(to), _) => (Placing::Pinned(to.clone()), to),
            (None, Some(split)) => (
                Placing::parse_split(split).map_err(|e| anyhow::anyhow!("--split: {e}"))?,
                split.clone(),
            ),
            (None, None) => bail!("name where they move: --to TARGET or --split WEIGHTS"),
        };
        let flips = mover::flips(
            &self.tenants,
            &placing,
            self.seal,
            self.force,
            &by,
            &self.reason,
        );
        let hold_max = self.hold.hold_max.unwrap_or(DEFAULT_HOLD_MAX);
        self.hold.into_move(hold_max, flips, to)
    }
}

/// `flags move`'s hold when `--hold-max` is not given.
const DEFAULT_HOLD_MAX: Duration = Duration::from_secs(10);

/// Prints each step, and a progress bar for a long batch's writes.
struct Terminal;

impl mover::Report for Terminal {
    fn say(&self, line: String) {
        println!("{line}");
    }

    async fn write_all(
        &self,
        store: &Store,
        writes: &[FlagWrite],
        targets: Option<&Targets>,
    ) -> Vec<WriteResult> {
        super::progress::write_all(store, writes, targets).await
    }
}

/// Runs the move: exit 0 moved, 2 aborted (with why).
pub async fn run(store: &Store, targets: Option<&Targets>, m: Move) -> anyhow::Result<ExitCode> {
    match mover::run(store, targets, m, &Terminal, stopped()).await {
        Ok(Outcome::Moved) => Ok(ExitCode::SUCCESS),
        Ok(Outcome::Aborted) => Ok(ExitCode::from(2)),
        Err(e) => bail!(e),
    }
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
