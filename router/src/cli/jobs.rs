//! `switchyard owns` and `switchyard jobs run`: scheduled work asks the flag store, as the
//! routers do, which side owns a tenant. Both read the store directly (the read-only policy
//! suffices for `owns`), so a job needs no router. Exit codes: [`crate::jobs::exit`].

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Subcommand};
use flag_store::error::Chain;
use flag_store::jobs::run::JobSpec;
use flag_store::jobs::{Owner, Verdict, owned, owner};
use flag_store::store::Store;

use super::{StoreArgs, store_config};
use crate::jobs::exit;

#[derive(Args, Debug)]
pub struct OwnsArgs {
    /// The tenant (not with --list).
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    tenant: Option<String>,
    /// This side: the target name the jobs run on (e.g. legacy).
    #[arg(long)]
    side: String,
    /// Print every tenant with a flag of its own that this side owns, one a line.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Run a command for a tenant only on the side that owns it, under the job's lease: exits
    /// 0 (ran and succeeded), 1 (not here), 3 (held), 4 (cannot tell), 5 (lease lost mid-run),
    /// 6 (the command failed), 7 (another holder kept the lease). The command gets
    /// SWITCHYARD_FENCING_TOKEN and SWITCHYARD_FLAG_VERSION in its environment.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job's name (letters, digits, '-', '_'): one lease per job and tenant.
    #[arg(long)]
    job: String,
    #[arg(long)]
    tenant: String,
    /// This side: the target name the job runs on.
    #[arg(long)]
    side: String,
    /// How long the lease holds without renewal: how long a holder that died blocks the
    /// other side.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// How often the owner is read again while the command runs.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    check_every: Duration,
    /// How long the command has between SIGTERM and SIGKILL.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// How long to wait for the lease while another holder has it (default: the lease's
    /// time and 5 s, so a dead holder's lease expires within it).
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
    #[command(flatten)]
    store: StoreArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

/// `switchyard owns`.
pub async fn owns(args: OwnsArgs) -> u8 {
    let (url, config) = match store_config(&args.store) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    let store = Store::open(&url).await;
    let Some(tenant) = args.tenant else {
        return list(&store, &args.side, args.store.json).await;
    };
    let mut answer = match owner(&store, &tenant).await {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("{tenant}: cannot tell who owns it: {}", Chain(&e));
            return exit::CANNOT_TELL;
        }
    };
    // With no flag and no `*` flag, requests go to the config's default target: so do jobs.
    if let (None, Some(config)) = (&answer.owner, &config) {
        answer.owner = Some(config.targets.name(config.flags.default_target).to_owned());
    }
    let verdict = answer.verdict(&args.side);
    if args.store.json {
        let mut json = serde_json::to_value(&answer).expect("an owner serializes");
        json["side"] = serde_json::json!(args.side);
        json["runs_here"] = serde_json::json!(verdict == Verdict::RunsHere);
        println!("{json}");
    } else {
        println!("{}", describe(&answer, &args.side, verdict));
    }
    match verdict {
        Verdict::RunsHere => exit::OWNED,
        Verdict::NotHere => exit::NOT_HERE,
        Verdict::Held => exit::HELD,
    }
}

fn describe(o: &Owner, side: &str, verdict: Verdict) -> String {
    let by = if o.by_default {
        " (by the `*` flag)"
    } else {
        ""
    };
    match (verdict, &o.owner, &o.hold) {
        (Verdict::Held, _, Some(h)) => format!(
            "{}: held by the move {} for {} ms more: nobody runs its jobs until it ends; retry later",
            o.tenant,
            h.id,
            h.deadline_ms.saturating_sub(flag_store::fleet::now_ms())
        ),
        (Verdict::RunsHere, _, _) => format!(
            "{}: runs here, on {side}{by} (flag version {})",
            o.tenant, o.version
        ),
        (_, Some(elsewhere), _) => format!(
            "{}: not here: runs on {elsewhere}{by} (flag version {})",
            o.tenant, o.version
        ),
        (_, None, _) => format!(
            "{}: not here: it has no flag and there is no `*` flag (give --config for the default target)",
            o.tenant
        ),
    }
}

/// `switchyard owns --list`: the tenants on stdout, one a line; the rest on stderr.
async fn list(store: &Store, side: &str, json: bool) -> u8 {
    let owned = match owned(store, side).await {
        Ok(owned) => owned,
        Err(e) => {
            eprintln!("cannot tell which tenants {side} owns: {}", Chain(&e));
            return exit::CANNOT_TELL;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&owned).expect("a listing serializes")
        );
    } else {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for tenant in &owned.tenants {
            let _ = writeln!(out, "{tenant}");
        }
        let _ = out.flush();
        if !owned.held.is_empty() {
            eprintln!(
                "{} more held by a move (retry after it ends): {}",
                owned.held.len(),
                owned.held.join(", ")
            );
        }
        if owned.default_here {
            eprintln!("{side} also owns the tenants with no flag of their own (the `*` flag)");
        }
    }
    for bad in &owned.unreadable {
        eprintln!("cannot tell: {bad}");
    }
    if owned.unreadable.is_empty() {
        exit::OWNED
    } else {
        exit::CANNOT_TELL
    }
}

/// `switchyard jobs run`.
pub async fn run(args: RunArgs) -> u8 {
    let url = match store_config(&args.store) {
        Ok((url, _)) => url,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    let mut spec = JobSpec::new(&args.job, &args.tenant, &args.side);
    spec.ttl = args.lease;
    spec.check_every = args.check_every;
    spec.grace = args.grace;
    spec.wait = args.wait.unwrap_or(args.lease + Duration::from_secs(5));
    if let Err(e) = spec.check() {
        eprintln!("error: {e}");
        return 2;
    }
    let store = Store::open(&url).await;
    crate::jobs::command::run(&store, &spec, &args.command).await
}
