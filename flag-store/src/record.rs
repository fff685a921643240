//! The stored forms of the records that live beside the flags in the flags table: a ramp
//! ([`crate::ramp`]). Plain data, so the flag item can carry them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a ramp is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampState {
    /// Stepping: the driver judges the current step and moves to the next when it is due.
    Running,
    /// Held at its step: by `ramp pause`, a hand edit of a ramped tenant's flag, or an
    /// evacuation of a side it ramps between. `ramp resume` goes on from the same step.
    Paused,
    /// Every step held; the tenants stay at the last one.
    Completed,
    /// A guard breached: the tenants are back at the last step that held.
    RolledBack,
    /// `ramp abort`: the tenants are back where they were before the ramp.
    Aborted,
}

impl RampState {
    pub const ALL: [RampState; 5] = [
        RampState::Running,
        RampState::Paused,
        RampState::Completed,
        RampState::RolledBack,
        RampState::Aborted,
    ];

    /// Whether the ramp may still move (its tenants are the driver's).
    pub fn is_active(self) -> bool {
        matches!(self, RampState::Running | RampState::Paused)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RampState::Running => "running",
            RampState::Paused => "paused",
            RampState::Completed => "completed",
            RampState::RolledBack => "rolled_back",
            RampState::Aborted => "aborted",
        }
    }
}

/// What stops a ramp. Whole numbers, so a record compares exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guards {
    /// The side ramped onto may answer at most this many more 5xx, in basis points of its
    /// requests (100 = 1%), than the side it leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_5xx_bp: Option<u32>,
    /// Its p99 may be at most this many hundredths of the other side's (150 = 1.5 times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio_pct: Option<u32>,
    /// Shadow copies may differ from the primary's answers in at most this many basis points
    /// of the comparisons (when the ramp's tenants are shadowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shadow_mismatch_bp: Option<u32>,
    /// No judgement (and no next step) before the side ramped onto has answered this many
    /// of the step's requests, over the fleet.
    #[serde(default)]
    pub min_requests: u64,
}

/// A ramp as stored, in its record's `ramp` field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampItem {
    pub tenants: Vec<String>,
    /// The side the tenants leave, and the side they ramp onto.
    pub from: String,
    pub to: String,
    /// The share of `to` at each step, in percent, rising.
    pub steps: Vec<u32>,
    pub step_ms: u64,
    #[serde(default)]
    pub guards: Guards,
    /// Each tenant's placement before the ramp.
    pub before: BTreeMap<String, RampPlacement>,
    pub state: RampState,
    /// How many steps are in force: 0 before the first (the tenants as `before`).
    pub at: u32,
    /// When the step in force began (milliseconds since the Unix epoch).
    pub step_started_ms: u64,
    /// Each live router's figures by side when the step in force began (`None`: not read
    /// yet), so a driver that takes over judges the same window, router by router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<BTreeMap<String, BTreeMap<String, SideFigures>>>,
    /// Why the ramp is where it is: the last transition, with the figures it judged by.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

impl RampItem {
    /// The same ramp, paused, saying why.
    pub fn paused(self, why: String) -> RampItem {
        RampItem {
            state: RampState::Paused,
            why,
            ..self
        }
    }

    /// The same ramp at step `at` from `now_ms`, its window to be read afresh.
    pub fn step_to(&self, at: u32, now_ms: u64, why: String) -> RampItem {
        RampItem {
            at,
            step_started_ms: now_ms,
            window_start: None,
            why,
            ..self.clone()
        }
    }

    /// The weights a tenant has at step `at` (1 and up): `to` at that step's share, `from` the
    /// rest. Step 0 is the tenant's `before`.
    /// Where step `at` puts `tenant`: `to` at that step's share and `from` the rest, or, at
    /// step 0, its placement before the ramp.
    pub fn placement_at(&self, tenant: &str, at: u32) -> Option<RampPlacement> {
        let Some(step) = (at as usize).checked_sub(1) else {
            return self.before.get(tenant).cloned();
        };
        let share = *self.steps.get(step)?;
        Some(RampPlacement::Weights(BTreeMap::from([
            (self.from.clone(), 100 - share),
            (self.to.clone(), share),
        ])))
    }
}

/// A tenant's placement as a ramp records it: `"legacy"` (pinned) or `{"legacy":90,"new":10}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RampPlacement {
    Target(String),
    Weights(BTreeMap<String, u32>),
}

/// One side's figures for one ramp, counted since a router started (the fleet sums them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideFigures {
    pub requests: u64,
    /// 5xx answers, the router's own 502 and 504 for upstream failures included.
    pub errors: u64,
    /// Requests by latency bucket ([`latency_bounds_us`]; the last counts everything
    /// beyond), trailing empty buckets left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<u64>,
    /// Shadow copies of the ramp's tenants' requests sent to this side and compared with the
    /// primary's answers, and how many of them differed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shadow_compared: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shadow_mismatched: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SideFigures {
    pub fn add(&mut self, other: &SideFigures) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.shadow_compared += other.shadow_compared;
        self.shadow_mismatched += other.shadow_mismatched;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// `self` less `earlier` (a router restarted counts from 0: what is lower is taken whole).
    pub fn since(&self, earlier: &SideFigures) -> SideFigures {
        if self.requests < earlier.requests {
            return self.clone();
        }
        SideFigures {
            requests: self.requests - earlier.requests,
            errors: self.errors.saturating_sub(earlier.errors),
            shadow_compared: (self.shadow_compared).saturating_sub(earlier.shadow_compared),
            shadow_mismatched: (self.shadow_mismatched).saturating_sub(earlier.shadow_mismatched),
            latency: (self.latency.iter().enumerate())
                .map(|(i, n)| n.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The 99th percentile's bucket bound, in microseconds (0 with no requests).
    pub fn p99_us(&self) -> u64 {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = total - total / 100;
        let bounds = latency_bounds_us();
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= want {
                return bounds.get(i).copied().unwrap_or(u64::MAX);
            }
        }
        u64::MAX
    }

    /// 5xx in basis points of the requests.
    pub fn error_bp(&self) -> u64 {
        (self.errors * 10_000)
            .checked_div(self.requests)
            .unwrap_or(0)
    }
}

/// The upper bounds of the latency histogram's buckets, in microseconds: 15% apart from
/// 100 us to about a minute, so a p99 read from it is within 15% of the true one.
pub fn latency_bounds_us() -> &'static [u64] {
    static BOUNDS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut b = Vec::new();
        let mut x = 100.0f64;
        while x < 60_000_000.0 {
            b.push(x as u64);
            x *= 1.15;
        }
        b
    })
}
