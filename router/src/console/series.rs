//! The console's charts: each target's request rate, 5xx rate and p99 over the last minutes,
//! sampled from the router's own counters every [`STEP`] into a small ring, by a task of its
//! own. The hot path only counts, as it always does; nothing here touches a request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

use crate::observe::metrics::{TargetTotals, latency_bounds};
use crate::proxy::Proxy;

/// Time between two samples.
pub const STEP: Duration = Duration::from_secs(10);
/// Samples kept: ten minutes.
pub const POINTS: usize = 60;

/// One step of one target: what happened between two samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    /// When the step ended, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Requests a second.
    pub rps: f64,
    /// 5xx answers a second.
    pub errors_ps: f64,
    /// The step's 99th percentile latency in milliseconds (a bucket's upper bound), when it
    /// had requests.
    pub p99_ms: Option<f64>,
}

/// The rings, by target name.
#[derive(Debug, Default)]
pub struct Series {
    rings: Mutex<Vec<(String, VecDeque<Point>)>>,
}

impl Series {
    /// Every target's points, oldest first.
    pub fn points(&self) -> Vec<(String, Vec<Point>)> {
        let rings = self.rings.lock().expect("series");
        (rings.iter())
            .map(|(t, ring)| (t.clone(), ring.iter().copied().collect()))
            .collect()
    }

    /// Adds one step, from the totals before and after it, `seconds` apart.
    fn push(&self, before: &[TargetTotals], after: &[TargetTotals], seconds: f64, at_ms: u64) {
        let mut rings = self.rings.lock().expect("series");
        for now in after {
            let then = before.iter().find(|b| b.target == now.target);
            let point = step(then, now, seconds, at_ms);
            let ring = match rings.iter_mut().position(|(t, _)| *t == now.target) {
                Some(i) => &mut rings[i].1,
                None => {
                    rings.push((now.target.clone(), VecDeque::with_capacity(POINTS)));
                    &mut rings.last_mut().expect("just pushed").1
                }
            };
            if ring.len() == POINTS {
                ring.pop_front();
            }
            ring.push_back(point);
        }
    }

    /// Samples the live proxy's counters every [`STEP`] until `stop` is set.
    pub async fn run(self: Arc<Self>, live: Arc<ArcSwap<Proxy>>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<(Vec<TargetTotals>, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                biased;
                _ = crate::shutdown::until_set(&mut stop) => return,
                _ = tick.tick() => {}
            }
            let totals = live.load().metrics.target_totals();
            let now = tokio::time::Instant::now();
            if let Some((before, then)) = &last {
                let seconds = now.duration_since(*then).as_secs_f64().max(0.001);
                self.push(before, &totals, seconds, flag_store::fleet::now_ms());
            }
            last = Some((totals, now));
        }
    }
}

/// The step between two totals of one target (a counter that went back, as after the
/// target's metrics were rebuilt, reads as a step from zero).
fn step(before: Option<&TargetTotals>, after: &TargetTotals, seconds: f64, at_ms: u64) -> Point {
    let zero = TargetTotals::default();
    let before = before.unwrap_or(&zero);
    let delta = |a: u64, b: u64| if a >= b { a - b } else { a };
    let requests = delta(after.requests, before.requests);
    let buckets: Vec<u64> = (after.buckets.iter().enumerate())
        .map(|(i, &a)| delta(a, before.buckets.get(i).copied().unwrap_or(0)))
        .collect();
    let counted = buckets.last().copied().unwrap_or(0);
    // The first bucket whose cumulative count covers 99% of the step's requests.
    let p99_ms = (counted > 0)
        .then(|| {
            let rank = (counted * 99).div_ceil(100);
            let i = buckets.iter().position(|&c| c >= rank)?;
            latency_bounds().get(i).map(|s| s * 1000.0)
        })
        .flatten();
    Point {
        at_ms,
        rps: requests as f64 / seconds,
        errors_ps: delta(after.server_errors, before.server_errors) as f64 / seconds,
        p99_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64, errors: u64, fast: u64, slow: u64) -> TargetTotals {
        // `fast` requests under 1 ms, `slow` ones between 50 and 100 ms.
        let bounds = latency_bounds();
        let buckets = (bounds.iter())
            .map(|&b| {
                if b < 0.001 {
                    0
                } else if b < 0.1 {
                    fast
                } else {
                    fast + slow
                }
            })
            .map(|c| c.min(fast + slow))
            .collect();
        TargetTotals {
            target: "new".into(),
            requests,
            server_errors: errors,
            buckets,
        }
    }

    #[test]
    fn a_step_is_the_difference_of_two_samples() {
        let before = totals(100, 1, 100, 0);
        let after = totals(1100, 11, 1090, 10);
        let p = step(Some(&before), &after, 10.0, 5);
        assert_eq!(p.rps, 100.0);
        assert_eq!(p.errors_ps, 1.0);
        // 990 fast and 10 slow in the step: the 99th percentile is the last fast bucket.
        assert_eq!(p.p99_ms, Some(1.0));
        let after = totals(1100, 11, 1080, 20);
        let p = step(Some(&before), &after, 10.0, 5);
        assert_eq!(
            p.p99_ms,
            Some(100.0),
            "20 slow of 1000 put p99 among the slow"
        );
    }

    #[test]
    fn an_idle_step_has_no_p99_and_the_ring_keeps_the_last_points() {
        let series = Series::default();
        let t = totals(5, 0, 5, 0);
        for i in 0..(POINTS as u64 + 3) {
            series.push(std::slice::from_ref(&t), std::slice::from_ref(&t), 10.0, i);
        }
        let points = series.points();
        assert_eq!(points.len(), 1);
        let (target, ring) = &points[0];
        assert_eq!(target, "new");
        assert_eq!(ring.len(), POINTS);
        assert_eq!(ring[0].at_ms, 3, "the oldest points made room");
        assert!(ring.iter().all(|p| p.p99_ms.is_none() && p.rps == 0.0));
    }
}
