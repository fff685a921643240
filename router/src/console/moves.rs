//! Moves with a hold started from the console: the same engine as `switchyard flags move`
//! ([`crate::cutover::mover`]), run by this router in a task of its own, its steps kept in a
//! log the page reads (`GET /ui/api/moves`). The gate is `[fleet] hold_gate_url` when the
//! config names one. A router stopped mid-move aborts it (the tenants stay where they were);
//! one killed leaves every router to release the held requests at the deadline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flag_store::store::Store;
use flag_store::{Placing, Targets};
use serde::Serialize;
use tokio::sync::watch;

use crate::cutover::mover::{self, Gate, Move, Outcome};

/// Moves whose logs are kept, the newest last.
const KEPT: usize = 20;
/// Lines a move's log keeps (a move says a few dozen; a gate that keeps changing its answer
/// could say more): past it, the last line says how many were left out.
const MAX_LINES: usize = 200;
/// The longest hold the console may ask for (the CLI's `--hold-max` has no such bound).
pub const MAX_HOLD: Duration = Duration::from_secs(300);
/// Routers not seen for this long are stale: the move waits for them (as `flags move`).
const FLEET_TIMEOUT: Duration = Duration::from_secs(30);

/// One move's log.
#[derive(Debug, Serialize)]
pub struct MoveLog {
    pub id: u64,
    pub tenants: Vec<String>,
    pub to: String,
    pub by: String,
    pub started_ms: u64,
    /// `running`, `moved`, `aborted` or `refused`.
    pub state: &'static str,
    pub lines: Vec<String>,
}

/// The moves this router ran for the console.
#[derive(Debug, Default)]
pub struct Moves {
    logs: Mutex<VecDeque<MoveLog>>,
    next: std::sync::atomic::AtomicU64,
}

/// What the console asks to move.
#[derive(Debug)]
pub struct Asked {
    pub tenants: Vec<String>,
    pub placing: Placing,
    pub seal: bool,
    pub force: bool,
    pub hold_max: Duration,
    pub by: String,
    pub reason: String,
}

/// Says a move's steps into its log.
struct Log<'a> {
    moves: &'a Moves,
    id: u64,
}

impl mover::Report for Log<'_> {
    fn say(&self, line: String) {
        tracing::info!(move_id = self.id, "{line}");
        self.moves.update(self.id, |log| match log.lines.len() {
            n if n < MAX_LINES => log.lines.push(line),
            _ => log.lines[MAX_LINES - 1] = format!("(lines left out) {line}"),
        });
    }
}

impl Moves {
    /// Every kept move, newest first.
    pub fn list(&self) -> serde_json::Value {
        let logs = self.logs.lock().expect("moves");
        serde_json::json!(logs.iter().rev().collect::<Vec<_>>())
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut MoveLog)) {
        let mut logs = self.logs.lock().expect("moves");
        if let Some(log) = logs.iter_mut().find(|l| l.id == id) {
            f(log);
        }
    }

    /// Starts a move in a task of its own; returns its id at once.
    pub fn start(
        self: &Arc<Self>,
        store: Store,
        targets: Targets,
        gate: Gate,
        asked: Asked,
        mut stop: watch::Receiver<bool>,
    ) -> u64 {
        let id = 1 + self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let to = match &asked.placing {
            Placing::Pinned(t) => t.clone(),
            Placing::Split(w) => (w.iter())
                .map(|(t, w)| format!("{t}={w}"))
                .collect::<Vec<_>>()
                .join(","),
        };
        {
            let mut logs = self.logs.lock().expect("moves");
            if logs.len() == KEPT {
                logs.pop_front();
            }
            logs.push_back(MoveLog {
                id,
                tenants: asked.tenants.clone(),
                to: to.clone(),
                by: asked.by.clone(),
                started_ms: flag_store::fleet::now_ms(),
                state: "running",
                lines: Vec::new(),
            });
        }
        let flips = mover::flips(
            &asked.tenants,
            &asked.placing,
            asked.seal,
            asked.force,
            &asked.by,
            &asked.reason,
        );
        let m = Move {
            flips,
            to,
            hold_max: asked.hold_max,
            gate,
            fleet_timeout: FLEET_TIMEOUT,
            ignore_routers: Vec::new(),
        };
        let moves = self.clone();
        tokio::spawn(async move {
            let stopped = async {
                crate::shutdown::until_set(&mut stop).await;
                "the router is stopping".to_owned()
            };
            let log = Log { moves: &moves, id };
            let state = match mover::run(&store, Some(&targets), m, &log, stopped).await {
                Ok(Outcome::Moved) => "moved",
                Ok(Outcome::Aborted) => "aborted",
                Err(why) => {
                    mover::Report::say(&log, format!("refused: {why}"));
                    "refused"
                }
            };
            moves.update(id, |l| l.state = state);
        });
        id
    }
}
