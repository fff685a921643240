//! Health of every target's endpoints, and what the proxy does with it: which endpoint takes a
//! request, which targets the pick may use, and whether a failed request may be retried.
//!
//! - Active checks ([`CheckState`], one task per endpoint): thresholds of consecutive results
//!   mark an endpoint down and up again, so one lost probe never flips it.
//! - Passive ejection ([`Health::report`]): consecutive failures seen on live traffic eject an
//!   endpoint for a doubling back-off, but never the last available endpoint of a target and
//!   never more than the configured share: passive evidence alone does not take a target out.
//! - Endpoint choice ([`Health::choose`]): power of two choices on in-flight requests among
//!   available endpoints. O(1), no lock, steers away from a slow endpoint without the herd
//!   behaviour of always picking the least loaded.
//! - Retry budget ([`RetryBudget`]): retries within a share of the last 10 s of requests.
//!
//! A target is healthy while at least one of its endpoints is available (up and not ejected).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::tls::Connector;
use bytes::Bytes;
use flag_store::TargetId;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{ActiveCheck, Ejection, Endpoint, RetryPolicy, TargetConfig};
use crate::policy::pick::HealthView;

/// Consecutive active-check results against thresholds: the pure state machine behind one
/// endpoint's up/down state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckState {
    pub up: bool,
    fails: u32,
    passes: u32,
}

impl Default for CheckState {
    /// Endpoints start up: traffic flows at once, and the checks take a dead one out.
    fn default() -> Self {
        CheckState {
            up: true,
            fails: 0,
            passes: 0,
        }
    }
}

impl CheckState {
    /// Records one result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool, unhealthy_after: u32, healthy_after: u32) -> Option<bool> {
        if ok {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.up && self.passes >= healthy_after {
                self.up = true;
                return Some(true);
            }
        } else {
            self.passes = 0;
            self.fails = self.fails.saturating_add(1);
            if self.up && self.fails >= unhealthy_after {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}

/// How long the `n`th ejection in a row lasts (n = 0 for the first): base, doubling, capped.
pub fn ejection_time(ejection: &Ejection, n: u32) -> Duration {
    ejection
        .base
        .saturating_mul(1u32 << n.min(16))
        .min(ejection.max)
}

/// One endpoint's live state, shared by the proxy and its checker.
#[derive(Debug)]
pub struct EndpointState {
    pub url: String,
    up: AtomicBool,
    /// Ejected until this many ms after [`Health`]'s epoch; 0 when not ejected.
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Ejections in a row, for the back-off; decays on success.
    ejection_streak: AtomicU32,
    in_flight: AtomicU32,
    pub ejections_total: AtomicU64,
}

impl EndpointState {
    fn available(&self, now_ms: u64) -> bool {
        self.up.load(Ordering::Relaxed) && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }
}

#[derive(Debug)]
pub struct TargetHealth {
    pub endpoints: Box<[EndpointState]>,
    ejection: Ejection,
    pub budget: RetryBudget,
}

/// What happened to one request on one endpoint, for passive ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Connect failure, reset before a response, timeout, or a 5xx.
    Failure,
}

#[derive(Debug)]
pub struct Health {
    targets: Box<[TargetHealth]>,
    epoch: Instant,
    /// Bumped on every change of availability (check transition, ejection): tests and tools
    /// await it instead of sleeping.
    changes: watch::Sender<u64>,
}

impl Health {
    pub fn new(targets: &[TargetConfig]) -> Arc<Health> {
        let targets = targets
            .iter()
            .map(|t| TargetHealth {
                endpoints: t
                    .endpoints
                    .iter()
                    .map(|e| EndpointState {
                        url: e.to_string(),
                        up: AtomicBool::new(true),
                        ejected_until_ms: AtomicU64::new(0),
                        consecutive_failures: AtomicU32::new(0),
                        ejection_streak: AtomicU32::new(0),
                        in_flight: AtomicU32::new(0),
                        ejections_total: AtomicU64::new(0),
                    })
                    .collect(),
                ejection: t.ejection.clone(),
                budget: RetryBudget::new(&t.retry),
            })
            .collect();
        Arc::new(Health {
            targets,
            epoch: Instant::now(),
            changes: watch::channel(0).0,
        })
    }

    /// The health of a reloaded config's targets (the same targets, by name and order): an
    /// endpoint it keeps (by URL, within its target) keeps its state (down, ejected, its
    /// ejection count), so a reload neither sends traffic to an endpoint seen down nor resets
    /// a back-off. New endpoints start up; retry budgets start afresh under their new policy.
    pub fn carried_over(targets: &[TargetConfig], old: &Health) -> Arc<Health> {
        let mut health = Health::new(targets);
        let fresh = Arc::get_mut(&mut health).expect("just made");
        fresh.epoch = old.epoch;
        for (new, old) in fresh.targets.iter().zip(old.targets.iter()) {
            for endpoint in new.endpoints.iter() {
                let Some(was) = old.endpoints.iter().find(|o| o.url == endpoint.url) else {
                    continue;
                };
                let carry = |to: &AtomicU32, from: &AtomicU32| {
                    to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
                };
                endpoint.up.store(was.is_up(), Ordering::Relaxed);
                (endpoint.ejected_until_ms).store(
                    was.ejected_until_ms.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                carry(&endpoint.consecutive_failures, &was.consecutive_failures);
                carry(&endpoint.ejection_streak, &was.ejection_streak);
                (endpoint.ejections_total).store(
                    was.ejections_total.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
            }
        }
        health
    }

    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `now_ms` for an instant already read, so that a request reads the clock once.
    pub fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub fn target(&self, t: TargetId) -> &TargetHealth {
        &self.targets[t.index()]
    }

    pub fn targets(&self) -> &[TargetHealth] {
        &self.targets
    }

    /// The health view the pick uses, at one instant.
    pub fn view(&self, now_ms: u64) -> LiveView<'_> {
        LiveView {
            health: self,
            now_ms,
        }
    }

    pub fn endpoint_available(&self, t: TargetId, e: usize, now_ms: u64) -> bool {
        self.targets[t.index()].endpoints[e].available(now_ms)
    }

    /// Follows availability changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Power of two choices on in-flight requests: two distinct endpoints drawn from those
    /// available (other than `exclude`), the less loaded wins. `None` when none is available.
    pub fn choose(&self, t: TargetId, now_ms: u64, exclude: Option<usize>) -> Option<usize> {
        let eps = &self.targets[t.index()].endpoints;
        let ok = |i: &usize| Some(*i) != exclude && eps[*i].available(now_ms);
        let candidates = || (0..eps.len()).filter(ok);
        let k = candidates().count();
        match k {
            0 => None,
            1 => candidates().next(),
            k => {
                let r = random();
                let first = (r % k as u64) as usize;
                let second = (first + 1 + ((r >> 32) % (k as u64 - 1)) as usize) % k;
                let a = candidates().nth(first)?;
                let b = candidates().nth(second)?;
                let load = |i: usize| eps[i].in_flight.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }

    /// Marks a request in flight on an endpoint until the guard drops.
    pub fn start(self: &Arc<Self>, t: TargetId, e: usize) -> InFlight {
        self.targets[t.index()].endpoints[e]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        InFlight {
            health: self.clone(),
            target: t,
            endpoint: e,
        }
    }

    /// Passive evidence from live traffic.
    pub fn report(&self, t: TargetId, e: usize, outcome: Outcome, now_ms: u64) {
        let target = &self.targets[t.index()];
        let ep = &target.endpoints[e];
        if outcome == Outcome::Success {
            ep.consecutive_failures.store(0, Ordering::Relaxed);
            if !ep.ejected(now_ms) && ep.ejection_streak.load(Ordering::Relaxed) > 0 {
                let _ =
                    ep.ejection_streak
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
            return;
        }
        let failures = ep.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < target.ejection.consecutive_failures || ep.ejected(now_ms) {
            return;
        }
        let n = target.endpoints.len();
        let ejected = target
            .endpoints
            .iter()
            .filter(|x| x.ejected(now_ms))
            .count();
        let available = target
            .endpoints
            .iter()
            .filter(|x| x.available(now_ms))
            .count();
        let within_share = (ejected + 1) * 100 <= n * target.ejection.max_ejected_percent as usize;
        let leaves_one = available > usize::from(ep.available(now_ms));
        if !(within_share && leaves_one) {
            return;
        }
        let streak = ep.ejection_streak.fetch_add(1, Ordering::Relaxed);
        let time = ejection_time(&target.ejection, streak);
        ep.ejected_until_ms
            .store(now_ms + time.as_millis() as u64, Ordering::Relaxed);
        ep.consecutive_failures.store(0, Ordering::Relaxed);
        ep.ejections_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(endpoint = %ep.url, ejected_for = ?time, failures, "endpoint ejected");
        self.changed();
    }

    fn set_up(&self, t: TargetId, e: usize, up: bool) {
        let ep = &self.targets[t.index()].endpoints[e];
        ep.up.store(up, Ordering::Relaxed);
        if up {
            ep.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::info!(endpoint = %ep.url, "endpoint healthy");
        } else {
            tracing::warn!(endpoint = %ep.url, "endpoint unhealthy");
        }
        self.changed();
    }
}

/// An in-flight request on an endpoint, for the power-of-two-choices load signal.
#[derive(Debug)]
pub struct InFlight {
    health: Arc<Health>,
    target: TargetId,
    endpoint: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.health.targets[self.target.index()].endpoints[self.endpoint]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`HealthView`] over the live state at one instant.
#[derive(Debug, Clone, Copy)]
pub struct LiveView<'a> {
    health: &'a Health,
    now_ms: u64,
}

impl HealthView for LiveView<'_> {
    fn is_healthy(&self, target: TargetId) -> bool {
        self.health.targets[target.index()]
            .endpoints
            .iter()
            .any(|e| e.available(self.now_ms))
    }
}

/// A health view with one more target counted out (the one a retry is leaving).
#[derive(Debug, Clone, Copy)]
pub struct Without<V> {
    pub view: V,
    pub target: TargetId,
}

impl<V: HealthView> HealthView for Without<V> {
    fn is_healthy(&self, target: TargetId) -> bool {
        target != self.target && self.view.is_healthy(target)
    }
}

/// A small fast generator for endpoint draws; quality needs are low, speed matters.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// Retries allowed within `budget_percent` of the requests of the last 10 seconds, plus
/// `min_per_second`: a burst of failures can spend what steady traffic saved, but retries can
/// never add more than that share to an outage.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u64,
    min_per_second: u64,
    slots: [Slot; WINDOW_SECONDS as usize],
}

const WINDOW_SECONDS: u64 = 10;

#[derive(Debug, Default)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    pub fn new(policy: &RetryPolicy) -> Self {
        RetryBudget {
            percent: u64::from(policy.budget_percent),
            min_per_second: u64::from(policy.min_per_second),
            slots: Default::default(),
        }
    }

    /// The slot of `second`, cleared when it last held an older second. Seconds start at 1 so
    /// that a fresh slot (second 0) is never mistaken for a current one.
    fn slot(&self, now_ms: u64) -> &Slot {
        let second = now_ms / 1000 + 1;
        let slot = &self.slots[(second % WINDOW_SECONDS) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    pub fn record_request(&self, now_ms: u64) {
        self.slot(now_ms).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, if there is one.
    pub fn try_retry(&self, now_ms: u64) -> bool {
        let current = self.slot(now_ms);
        let second = now_ms / 1000 + 1;
        let (mut requests, mut retries) = (0, 0);
        for s in &self.slots {
            let at = s.second.load(Ordering::Acquire);
            if at + WINDOW_SECONDS > second && at <= second {
                requests += s.requests.load(Ordering::Relaxed);
                retries += s.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = requests * self.percent + self.min_per_second * WINDOW_SECONDS * 100;
        if (retries + 1) * 100 > allowed {
            return false;
        }
        current.retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Starts one checker task per endpoint of every target with `[health]`, each target's checks
/// through `connectors[target]` (its requests' own, so https:// endpoints are verified as
/// requests are); they stop when `stop` turns true.
pub fn spawn_checks(
    health: &Arc<Health>,
    targets: &[TargetConfig],
    connectors: &[Connector],
    stop: &watch::Receiver<bool>,
) {
    for (ti, (target, connector)) in targets.iter().zip(connectors).enumerate() {
        let Some(check) = &target.health else {
            continue;
        };
        let client: Client<Connector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_only(target.protocol.is_http2())
            .build(connector.clone());
        for (ei, endpoint) in target.endpoints.iter().enumerate() {
            tokio::spawn(check_loop(
                health.clone(),
                TargetId(ti as u16),
                ei,
                endpoint.clone(),
                check.clone(),
                client.clone(),
                stop.clone(),
            ));
        }
    }
}

async fn check_loop(
    health: Arc<Health>,
    target: TargetId,
    endpoint: usize,
    url: Endpoint,
    check: ActiveCheck,
    client: Client<Connector, Empty<Bytes>>,
    mut stop: watch::Receiver<bool>,
) {
    let uri = url
        .uri(Some(&check.path))
        .expect("a valid endpoint and path make a URI");
    // From the endpoint's state, which a reload carries over: a down endpoint needs its
    // passing checks to come back.
    let mut state = CheckState {
        up: health.target(target).endpoints[endpoint].is_up(),
        ..CheckState::default()
    };
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::shutdown::until_set(&mut stop) => return,
        }
        let probe = async {
            let mut req = http::Request::get(uri.clone())
                .body(Empty::new())
                .expect("a GET to a valid URI");
            req.headers_mut().insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static("switchyard-health"),
            );
            let resp = client.request(req).await.ok()?;
            let ok = resp.status().is_success();
            // Read the body so the connection can be reused by the next check.
            http_body_util::BodyExt::collect(resp.into_body())
                .await
                .ok()?;
            Some(ok)
        };
        let ok = tokio::time::timeout(check.timeout, probe)
            .await
            .ok()
            .flatten()
            == Some(true);
        if let Some(up) = state.record(ok, check.unhealthy_after, check.healthy_after) {
            health.set_up(target, endpoint, up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ejection() -> Ejection {
        Ejection {
            consecutive_failures: 3,
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
            max_ejected_percent: 50,
        }
    }

    fn target(endpoints: usize) -> TargetConfig {
        TargetConfig {
            name: "t".into(),
            endpoints: (0..endpoints)
                .map(|i| Endpoint {
                    scheme: http::uri::Scheme::HTTP,
                    authority: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                })
                .collect(),
            protocol: crate::config::Protocol::Http1,
            tls: None,
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            pool_max_idle_per_endpoint: 1,
            health: None,
            ejection: ejection(),
            retry: RetryPolicy {
                budget_percent: 20,
                min_per_second: 0,
            },
        }
    }

    #[test]
    fn a_reload_keeps_the_state_of_the_endpoints_it_keeps() {
        let old = Health::new(&[target(3)]);
        let now = old.now_ms();
        old.set_up(TargetId(0), 0, false);
        for _ in 0..3 {
            old.report(TargetId(0), 1, Outcome::Failure, now);
        }
        assert!(!old.endpoint_available(TargetId(0), 1, now), "ejected");
        // 127.0.0.1:9003 is new; :9000 (down) and :9001 (ejected) are kept, in another order;
        // :9002 is gone.
        let mut config = target(4);
        config.endpoints = vec![
            config.endpoints[3].clone(),
            config.endpoints[0].clone(),
            config.endpoints[1].clone(),
        ];
        let new = Health::carried_over(std::slice::from_ref(&config), &old);
        let t = TargetId(0);
        assert!(
            new.endpoint_available(t, 0, now),
            "a new endpoint starts up"
        );
        assert!(
            !new.target(t).endpoints[1].is_up(),
            "a down endpoint stays down"
        );
        assert!(
            !new.endpoint_available(t, 2, now),
            "an ejection runs its course"
        );
        assert_eq!(
            new.target(t).endpoints[2]
                .ejections_total
                .load(Ordering::Relaxed),
            1
        );
        assert_eq!(
            new.ms_at(Instant::now()) / 100,
            old.now_ms() / 100,
            "one clock"
        );
    }

    const T: TargetId = TargetId(0);

    #[test]
    fn thresholds_mark_down_and_up_again() {
        let mut s = CheckState::default();
        assert_eq!(s.record(false, 2, 2), None);
        assert_eq!(s.record(false, 2, 2), Some(false));
        assert_eq!(s.record(false, 2, 2), None, "already down");
        assert_eq!(s.record(true, 2, 2), None);
        assert_eq!(s.record(true, 2, 2), Some(true));
    }

    #[test]
    fn a_flapping_endpoint_does_not_thrash() {
        let mut s = CheckState::default();
        for i in 0..1000 {
            assert_eq!(s.record(i % 2 == 0, 2, 2), None, "result {i}");
        }
        assert!(s.up);
        // Once down, a flapping endpoint stays down.
        s.record(false, 2, 2);
        s.record(false, 2, 2);
        for i in 0..1000 {
            assert_eq!(s.record(i % 2 == 0, 2, 2), None);
        }
        assert!(!s.up);
    }

    #[test]
    fn ejections_back_off_and_cap() {
        let e = ejection();
        let times: Vec<u64> = (0..6).map(|n| ejection_time(&e, n).as_secs()).collect();
        assert_eq!(times, [5, 10, 20, 40, 60, 60]);
        assert_eq!(ejection_time(&e, 1000), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn passive_ejection_expires_after_its_back_off() {
        let health = Health::new(&[target(4)]);
        let fail = |h: &Health| {
            for _ in 0..3 {
                h.report(T, 0, Outcome::Failure, h.now_ms());
            }
        };
        fail(&health);
        assert!(!health.endpoint_available(T, 0, health.now_ms()));
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(!health.endpoint_available(T, 0, health.now_ms()));
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(health.endpoint_available(T, 0, health.now_ms()));
        // Failing again right away: the second ejection lasts twice as long.
        fail(&health);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!health.endpoint_available(T, 0, health.now_ms()));
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(health.endpoint_available(T, 0, health.now_ms()));
        assert_eq!(
            health.target(T).endpoints[0]
                .ejections_total
                .load(Ordering::Relaxed),
            2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn passive_evidence_never_ejects_a_whole_target() {
        let health = Health::new(&[target(4)]);
        for e in 0..4 {
            for _ in 0..10 {
                health.report(T, e, Outcome::Failure, health.now_ms());
            }
        }
        let now = health.now_ms();
        let available = (0..4)
            .filter(|&e| health.endpoint_available(T, e, now))
            .count();
        assert_eq!(available, 2, "50% may be ejected, no more");
        assert!(health.view(now).is_healthy(T));

        let single = Health::new(&[target(1)]);
        for _ in 0..10 {
            single.report(T, 0, Outcome::Failure, single.now_ms());
        }
        assert!(
            single.endpoint_available(T, 0, single.now_ms()),
            "the last endpoint stays"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn choice_avoids_unavailable_and_busy_endpoints() {
        let health = Health::new(&[target(3)]);
        health.set_up(T, 1, false);
        let now = health.now_ms();
        for _ in 0..200 {
            let e = health.choose(T, now, None).unwrap();
            assert_ne!(e, 1);
            assert_ne!(health.choose(T, now, Some(e)), Some(e));
        }
        // Endpoint 0 busy: with two candidates left, the idle one always wins.
        let _busy: Vec<InFlight> = (0..5).map(|_| health.start(T, 0)).collect();
        for _ in 0..200 {
            assert_eq!(health.choose(T, now, None), Some(2));
        }
        health.set_up(T, 0, false);
        health.set_up(T, 2, false);
        assert_eq!(health.choose(T, now, None), None);
        assert!(!health.view(now).is_healthy(T));
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_budget_is_a_share_of_recent_requests() {
        let budget = RetryBudget::new(&RetryPolicy {
            budget_percent: 20,
            min_per_second: 0,
        });
        let now = Instant::now();
        let ms = || now.elapsed().as_millis() as u64;
        for _ in 0..100 {
            budget.record_request(ms());
        }
        let granted = (0..100).filter(|_| budget.try_retry(ms())).count();
        assert_eq!(granted, 20);
        // After the window passes, the old requests no longer pay for retries.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!budget.try_retry(ms()));
        let floor = RetryBudget::new(&RetryPolicy {
            budget_percent: 20,
            min_per_second: 1,
        });
        assert_eq!(
            (0..100).filter(|_| floor.try_retry(0)).count(),
            10,
            "the floor: 1 a second over 10 s"
        );
    }
}
