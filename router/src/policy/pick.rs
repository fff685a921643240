//! Step 3 of the hot path as a pure function: which target a request goes to, given the
//! snapshot, the route, the tenant and the health view. No I/O, no clock, no async: the
//! proxy, `/explain` and the tests all call exactly this.

use flag_store::{Found, Mode, Placement, Shadow, Snapshot, TargetId, model::bucket_of};

use crate::policy::route::{Route, RouteKind};

/// Which targets can take traffic now.
pub trait HealthView {
    fn is_healthy(&self, target: TargetId) -> bool;
}

/// Every target healthy.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllHealthy;

impl HealthView for AllHealthy {
    fn is_healthy(&self, _: TargetId) -> bool {
        true
    }
}

/// Where the decision came from: a closed set, shown by `/explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The route is fixed to one target; flags do not apply.
    FixedRoute,
    /// The tenant's own flag.
    TenantFlag,
    /// The default flag item (`*`).
    DefaultFlag,
    /// No flag at all: `flags.default_target` from the config.
    ConfigDefault,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::FixedRoute => "fixed route",
            Basis::TenantFlag => "tenant flag",
            Basis::DefaultFlag => "default flag",
            Basis::ConfigDefault => "config default_target",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub target: TargetId,
    pub basis: Basis,
    pub mode: Mode,
    /// The sticky bucket, for split flags.
    pub bucket: Option<u32>,
    /// The target the configured weights give this request (the bucket's owner, for split
    /// flags); differs from `target` when the owner is unhealthy.
    pub owner: TargetId,
    /// True when a split pick skipped its bucket's unhealthy owner.
    pub failover: bool,
    /// For split flags: where a retry goes if `target` fails (another healthy target with a
    /// non-zero weight). Pinned tenants never have one.
    pub alternative: Option<TargetId>,
    /// Where the flag sends copies of this request to compare, when that is not the target
    /// answering it (a split tenant's request may already be on the shadow's side).
    pub shadow: Option<Shadow>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Forward(Pick),
    /// A pinned tenant's (or fixed route's) target is down: no failover, the caller answers 503.
    PinnedUnavailable {
        target: TargetId,
        basis: Basis,
    },
    /// A split tenant has no healthy target with a non-zero weight.
    NoHealthyTarget {
        basis: Basis,
    },
    /// The tenant's item was rejected and it has no last good flag: its side is not known,
    /// so it goes to none (never to a default); the caller answers 503 naming the item.
    RejectedFlag,
}

/// The pick: route kind, then the tenant's flag (or the default flag, or the config default),
/// then the target. `key_hash` is called only for split flags.
#[inline]
pub fn pick(
    snapshot: &Snapshot,
    route: &Route,
    tenant: Option<&str>,
    key_hash: impl FnOnce() -> u64,
    default_target: TargetId,
    health: &impl HealthView,
) -> Decision {
    let (placement, shadow, basis) = match route.kind {
        RouteKind::Fixed(target) => return pinned(target, Basis::FixedRoute, health),
        RouteKind::Flagged => match snapshot.lookup(tenant) {
            Found::Tenant(flag) => (flag.placement(), flag.shadow(), Basis::TenantFlag),
            Found::Default(flag) => (flag.placement(), flag.shadow(), Basis::DefaultFlag),
            Found::Rejected(_) => return Decision::RejectedFlag,
            Found::Nothing => return pinned(default_target, Basis::ConfigDefault, health),
        },
    };
    let decision = match placement {
        Placement::Pinned(target) => pinned(*target, basis, health),
        Placement::Split(split) => {
            let hash = key_hash();
            let owner = split.owner(bucket_of(hash));
            match split.pick(hash, |t| health.is_healthy(t)) {
                Some(target) => Decision::Forward(Pick {
                    target,
                    basis,
                    mode: Mode::Split,
                    bucket: Some(bucket_of(hash)),
                    owner,
                    failover: target != owner,
                    alternative: split.pick(hash, |t| t != target && health.is_healthy(t)),
                    shadow: None,
                }),
                None => Decision::NoHealthyTarget { basis },
            }
        }
    };
    match (decision, shadow) {
        (Decision::Forward(mut pick), Some(s)) if s.target != pick.target => {
            pick.shadow = Some(s);
            Decision::Forward(pick)
        }
        (decision, _) => decision,
    }
}

fn pinned(target: TargetId, basis: Basis, health: &impl HealthView) -> Decision {
    if health.is_healthy(target) {
        Decision::Forward(Pick {
            target,
            basis,
            mode: Mode::Pinned,
            bucket: None,
            owner: target,
            failover: false,
            alternative: None,
            shadow: None,
        })
    } else {
        Decision::PinnedUnavailable { target, basis }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flag_store::{FlagItem, ItemError, Load, LoadedItem, Targets};
    use proptest::prelude::*;

    const LEGACY: TargetId = TargetId(0);
    const NEW: TargetId = TargetId(1);

    fn targets() -> Targets {
        Targets::new(["legacy", "new"])
    }

    fn route(prefix: &str, kind: RouteKind) -> Route {
        Route::for_test(prefix, kind)
    }

    fn snapshot(items: &[String]) -> Snapshot {
        let load = Load {
            identity: None,
            seals: Vec::new(),
            version: 1,
            items: items
                .iter()
                .map(|json| LoadedItem {
                    location: "test".into(),
                    item: serde_json::from_str::<FlagItem>(json)
                        .map_err(|e| (None, ItemError::Parse(e.to_string()))),
                })
                .collect(),
        };
        let snap = Snapshot::build(load, &targets(), None);
        assert!(snap.rejected.is_empty(), "{:?}", snap.rejected);
        snap
    }

    fn split(tenant: &str, legacy: u32) -> String {
        format!(
            r#"{{"tenant":"{tenant}","weights":{{"legacy":{legacy},"new":{}}}}}"#,
            100 - legacy
        )
    }

    struct Down(TargetId);
    impl HealthView for Down {
        fn is_healthy(&self, t: TargetId) -> bool {
            t != self.0
        }
    }

    fn target(d: Decision) -> TargetId {
        match d {
            Decision::Forward(p) => p.target,
            other => panic!("not forwarded: {other:?}"),
        }
    }

    #[test]
    fn a_tenant_whose_item_is_rejected_goes_nowhere_but_a_fixed_route_still_serves_it() {
        let load = Load {
            identity: None,
            seals: Vec::new(),
            version: 1,
            items: [
                r#"{"tenant":"*","target":"legacy"}"#,
                r#"{"tenant":"acme","taget":"new"}"#,
            ]
            .iter()
            .map(|json| LoadedItem {
                location: "items[1]".into(),
                item: serde_json::from_str::<FlagItem>(json)
                    .map_err(|e| (Some("acme".into()), ItemError::Parse(e.to_string()))),
            })
            .collect(),
        };
        let snap = Snapshot::build(load, &targets(), None);
        let flagged = route("/", RouteKind::Flagged);
        let fixed = route("/analytics/", RouteKind::Fixed(LEGACY));
        let decide = |tenant, r: &Route| pick(&snap, r, Some(tenant), || 0, LEGACY, &AllHealthy);
        assert_eq!(decide("acme", &flagged), Decision::RejectedFlag);
        assert!(matches!(decide("acme", &fixed), Decision::Forward(p) if p.target == LEGACY));
        assert!(
            matches!(decide("globex", &flagged), Decision::Forward(p) if p.basis == Basis::DefaultFlag)
        );
    }

    #[test]
    fn the_basis_of_each_decision() {
        let snap = snapshot(&[
            r#"{"tenant":"acme","target":"new"}"#.into(),
            r#"{"tenant":"*","target":"legacy"}"#.into(),
        ]);
        let flagged = route("/", RouteKind::Flagged);
        let p = |tenant, r: &Route| match pick(&snap, r, tenant, || 0, LEGACY, &AllHealthy) {
            Decision::Forward(p) => (p.target, p.basis),
            other => panic!("{other:?}"),
        };
        assert_eq!(p(Some("acme"), &flagged), (NEW, Basis::TenantFlag));
        assert_eq!(p(Some("other"), &flagged), (LEGACY, Basis::DefaultFlag));
        assert_eq!(p(None, &flagged), (LEGACY, Basis::DefaultFlag));
        assert_eq!(
            p(Some("acme"), &route("/a", RouteKind::Fixed(LEGACY))),
            (LEGACY, Basis::FixedRoute)
        );
        let empty = Snapshot::empty(targets());
        assert_eq!(
            pick(&empty, &flagged, Some("acme"), || 0, NEW, &AllHealthy),
            Decision::Forward(Pick {
                target: NEW,
                basis: Basis::ConfigDefault,
                mode: Mode::Pinned,
                bucket: None,
                owner: NEW,
                failover: false,
                alternative: None,
                shadow: None,
            })
        );
    }

    #[test]
    fn a_shadow_is_picked_only_when_another_target_answers() {
        let snap = snapshot(&[
            r#"{"tenant":"acme","target":"legacy","shadow":{"target":"new","percent":10}}"#.into(),
            r#"{"tenant":"globex","weights":{"legacy":50,"new":50},"shadow":{"target":"new","percent":100}}"#.into(),
        ]);
        let flagged = route("/", RouteKind::Flagged);
        let shadow_of = |tenant, hash: u64| match pick(
            &snap,
            &flagged,
            Some(tenant),
            || hash,
            LEGACY,
            &AllHealthy,
        ) {
            Decision::Forward(p) => (p.target, p.shadow.map(|s| (s.target, s.percent))),
            other => panic!("{other:?}"),
        };
        assert_eq!(shadow_of("acme", 0), (LEGACY, Some((NEW, 10))));
        // Bucket 0 is legacy's, bucket 9999 new's: only the request on legacy is copied.
        assert_eq!(shadow_of("globex", 0), (LEGACY, Some((NEW, 100))));
        assert_eq!(shadow_of("globex", 9_999), (NEW, None));
        // The default flag's shadow applies to the tenants it routes.
        let snap = snapshot(&[
            r#"{"tenant":"*","target":"legacy","shadow":{"target":"new","percent":5}}"#.into(),
        ]);
        match pick(&snap, &flagged, Some("initech"), || 0, LEGACY, &AllHealthy) {
            Decision::Forward(p) => {
                assert_eq!(p.shadow.map(|s| (s.target, s.percent)), Some((NEW, 5)))
            }
            other => panic!("{other:?}"),
        }
        // A fixed route never copies.
        match pick(
            &snap,
            &route("/f", RouteKind::Fixed(LEGACY)),
            Some("acme"),
            || 0,
            LEGACY,
            &AllHealthy,
        ) {
            Decision::Forward(p) => assert_eq!(p.shadow, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pinned_tenant_never_fails_over() {
        let snap = snapshot(&[r#"{"tenant":"acme","target":"new"}"#.into()]);
        let d = pick(
            &snap,
            &route("/", RouteKind::Flagged),
            Some("acme"),
            || 0,
            LEGACY,
            &Down(NEW),
        );
        assert_eq!(
            d,
            Decision::PinnedUnavailable {
                target: NEW,
                basis: Basis::TenantFlag
            }
        );
    }

    #[test]
    fn the_key_hash_is_only_computed_for_split_flags() {
        let snap = snapshot(&[r#"{"tenant":"acme","target":"new"}"#.into()]);
        let d = pick(
            &snap,
            &route("/", RouteKind::Flagged),
            Some("acme"),
            || panic!("hashed"),
            LEGACY,
            &AllHealthy,
        );
        assert_eq!(target(d), NEW);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The same request key always lands on the same target, and when the `new` dial grows
        /// from `a` to `b` percent, the only keys that move are keys moving to `new`, and they
        /// are the added share (b - a) of the buckets.
        #[test]
        fn split_picks_are_sticky_and_move_only_the_added_share(a in 0u32..=100, grow in 0u32..=100, keys in proptest::collection::vec(any::<u64>(), 1..200)) {
            let b = (a + grow).min(100);
            let before = snapshot(&[split("acme", 100 - a)]);
            let after = snapshot(&[split("acme", 100 - b)]);
            let r = route("/", RouteKind::Flagged);
            for k in keys {
                let t1 = target(pick(&before, &r, Some("acme"), || k, LEGACY, &AllHealthy));
                let again = target(pick(&before, &r, Some("acme"), || k, LEGACY, &AllHealthy));
                prop_assert_eq!(t1, again);
                let t2 = target(pick(&after, &r, Some("acme"), || k, LEGACY, &AllHealthy));
                if t1 != t2 {
                    prop_assert_eq!((t1, t2), (LEGACY, NEW));
                }
            }
            // Over every bucket the moved share is exactly the added weight.
            let moved = (0..flag_store::BUCKETS as u64)
                .filter(|&bucket| {
                    target(pick(&before, &r, Some("acme"), || bucket, LEGACY, &AllHealthy))
                        != target(pick(&after, &r, Some("acme"), || bucket, LEGACY, &AllHealthy))
                })
                .count() as u32;
            prop_assert_eq!(moved, (b - a) * flag_store::BUCKETS / 100);
        }

        /// A split tenant whose bucket owner is down moves to the healthy side, and returns to
        /// its owner when the owner is healthy again; buckets of the healthy side never move.
        #[test]
        fn failover_moves_only_the_sick_sides_buckets_and_they_come_back(legacy in 1u32..100, key in any::<u64>()) {
            let snap = snapshot(&[split("acme", legacy)]);
            let r = route("/", RouteKind::Flagged);
            let healthy = target(pick(&snap, &r, Some("acme"), || key, LEGACY, &AllHealthy));
            let during = target(pick(&snap, &r, Some("acme"), || key, LEGACY, &Down(NEW)));
            prop_assert_eq!(during, LEGACY);
            // A retry's fallback is the other side while it is healthy, and nothing once it is not.
            let Decision::Forward(healthy_pick) = pick(&snap, &r, Some("acme"), || key, LEGACY, &AllHealthy) else { unreachable!() };
            prop_assert_eq!(healthy_pick.alternative, Some(if healthy == LEGACY { NEW } else { LEGACY }));
            let Decision::Forward(sick_pick) = pick(&snap, &r, Some("acme"), || key, LEGACY, &Down(NEW)) else { unreachable!() };
            prop_assert_eq!(sick_pick.alternative, None);
            prop_assert_eq!(sick_pick.failover, healthy == NEW);
            if healthy == LEGACY {
                prop_assert_eq!(during, healthy);
            }
            let back = target(pick(&snap, &r, Some("acme"), || key, LEGACY, &AllHealthy));
            prop_assert_eq!(back, healthy);
        }

        /// Over many users, each side's share matches its weight within sampling error.
        #[test]
        fn shares_follow_the_weights(legacy in 0u32..=100) {
            let snap = snapshot(&[split("acme", legacy)]);
            let r = route("/", RouteKind::Flagged);
            let n = 20_000u32;
            let on_legacy = (0..n)
                .filter(|i| {
                    let parts = http::Request::builder().header("x-user", i.to_string()).body(()).unwrap().into_parts().0;
                    let keys = [crate::policy::tenant::StickyKey::parse("header:x-user").unwrap()];
                    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
                    target(pick(&snap, &r, Some("acme"), || crate::policy::tenant::sticky_hash(&keys, "acme", &parts, ip), LEGACY, &AllHealthy)) == LEGACY
                })
                .count() as f64;
            let share = on_legacy / f64::from(n) * 100.0;
            prop_assert!((share - f64::from(legacy)).abs() < 1.5, "legacy weight {legacy}, share {share:.2}");
        }
    }
}
