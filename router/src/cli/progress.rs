//! Writes of many tenants, with a progress bar on stderr for a long batch.

use std::io::{IsTerminal, Write as _};

use flag_store::store::{Store, WriteResult};
use flag_store::{FlagWrite, Targets};

/// Writes each tenant's write; returns each result in order.
pub async fn write_all(
    store: &Store,
    writes: &[FlagWrite],
    targets: Option<&Targets>,
) -> Vec<WriteResult> {
    let mut bar = Progress::new(writes.len());
    let results = store
        .write_each(writes, targets, |done| bar.update(done))
        .await;
    bar.finish();
    results
}

/// Batches at least this long show progress while they are written.
pub const PROGRESS_FROM: usize = 200;

/// A progress bar on stderr: redrawn in place on a terminal, a line every 10% otherwise.
struct Progress {
    total: usize,
    shown: bool,
    terminal: bool,
    last_tenth: usize,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            shown: total >= PROGRESS_FROM,
            terminal: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    fn update(&mut self, done: usize) {
        if !self.shown {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let filled = done * 30 / self.total.max(1);
            let _ = write!(
                err,
                "\r[{}{}] {done}/{} written",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                self.total
            );
            let _ = err.flush();
        } else {
            let tenth = done * 10 / self.total.max(1);
            if tenth > self.last_tenth {
                self.last_tenth = tenth;
                let _ = writeln!(err, "progress: {done}/{} written", self.total);
            }
        }
    }

    fn finish(&mut self) {
        if self.shown && self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
