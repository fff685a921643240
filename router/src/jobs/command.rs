//! `switchyard jobs run`: a command run only where its tenant is owned, under the job's lease.
//!
//! The command gets the lease's fencing token and the flag version in its environment
//! (`SWITCHYARD_FENCING_TOKEN`, `SWITCHYARD_FLAG_VERSION`, and `SWITCHYARD_JOB`,
//! `SWITCHYARD_TENANT`, `SWITCHYARD_SIDE`), to make its own writes conditional on them. It runs
//! in a process group of its own: when the tenant moves away, a hold starts or the lease is
//! lost, the group gets SIGTERM, then SIGKILL after the grace; the lease is released once the
//! command has exited. A SIGTERM or SIGINT to the wrapper stops the command the same way.
//! Should the wrapper itself be killed, the command is killed with it (the parent-death
//! signal), and the lease frees itself at its expiry.

use std::ffi::OsString;
use std::process::ExitStatus;
use std::time::Duration;

use flag_store::error::Chain;
use flag_store::jobs::run::{Begin, JobSpec, Stop, begin};
use flag_store::store::Store;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::exit;

/// Runs `argv` as `spec`'s job; returns the exit code (see [`exit`]).
pub async fn run(store: &Store, spec: &JobSpec, argv: &[OsString]) -> u8 {
    let what = format!("job {} of {} on {}", spec.job, spec.tenant, spec.side);
    let mut run = match begin(store, spec).await {
        Err(e) => {
            eprintln!(
                "{what}: not started: cannot tell who owns the tenant: {}",
                Chain(&e)
            );
            return exit::CANNOT_TELL;
        }
        Ok(Begin::Granted(run)) => run,
        Ok(other) => {
            eprintln!("{what}: not started: {other}");
            return match other {
                Begin::Held(_) => exit::HELD,
                Begin::Busy(_) => exit::BUSY,
                _ => exit::NOT_HERE,
            };
        }
    };
    let (token, version) = (run.lease().token, run.owner().version);
    let mut child = match spawn(argv, spec, token, version) {
        Ok(child) => child,
        Err(e) => {
            eprintln!("{what}: cannot start {:?}: {e}", argv[0]);
            release(&what, run).await;
            return exit::COMMAND_FAILED;
        }
    };
    let mut signals = Signals::install();
    let code = tokio::select! {
        status = child.wait() => finished(&what, status),
        why = run.stopped() => {
            eprintln!("{what}: stopping the command: {why}");
            stop(&mut child, spec.grace).await;
            match why {
                Stop::Moved(_) => exit::NOT_HERE,
                Stop::Held(_) => exit::HELD,
                Stop::Lost | Stop::Unreachable(_) => exit::LEASE_LOST,
            }
        }
        signal = signals.recv() => {
            eprintln!("{what}: {signal} received: stopping the command");
            stop(&mut child, spec.grace).await;
            128 + signal as u8
        }
    };
    release(&what, run).await;
    code
}

fn finished(what: &str, status: std::io::Result<ExitStatus>) -> u8 {
    match status {
        Ok(s) if s.success() => exit::OWNED,
        Ok(s) => {
            eprintln!("{what}: the command failed: {s}");
            exit::COMMAND_FAILED
        }
        Err(e) => {
            eprintln!("{what}: cannot wait for the command: {e}");
            exit::COMMAND_FAILED
        }
    }
}

async fn release(what: &str, run: Box<flag_store::jobs::run::Run>) {
    if let Err(e) = run.finish().await {
        eprintln!(
            "{what}: warning: the lease was not released ({}); it frees itself at its expiry",
            Chain(&e)
        );
    }
}

fn spawn(argv: &[OsString], spec: &JobSpec, token: u64, version: u64) -> std::io::Result<Child> {
    let mut command = std::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env("SWITCHYARD_FENCING_TOKEN", token.to_string())
        .env("SWITCHYARD_FLAG_VERSION", version.to_string())
        .env("SWITCHYARD_JOB", &spec.job)
        .env("SWITCHYARD_TENANT", &spec.tenant)
        .env("SWITCHYARD_SIDE", &spec.side);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    die_with_parent(&mut command);
    let mut command = Command::from(command);
    command.kill_on_drop(true);
    command.spawn()
}

/// Arms the parent-death signal in the child: should the wrapper die without stopping the
/// command (SIGKILL, an OOM kill), the kernel kills the command too, so it does not go on
/// running after its lease has expired. The only unsafe code in the router: `pre_exec` runs
/// between fork and exec, where `prctl` (async-signal-safe, no allocation) is all it does.
/// The fork happens on the runtime's one thread, which lives as long as the wrapper.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut std::process::Command) {
    // SAFETY: the closure only calls prctl(PR_SET_PDEATHSIG), which is async-signal-safe and
    // touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// SIGTERM to the command's group, then SIGKILL once `grace` has passed.
async fn stop(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return;
    };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// SIGTERM and SIGINT to the wrapper.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = one(&mut self.term) => Signal::SIGTERM,
            _ = one(&mut self.int) => Signal::SIGINT,
        }
    }
}

/// The next delivery of a signal; never, when it could not be listened for.
async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
