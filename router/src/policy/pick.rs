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
    /// The request's side is evacuated and the tenant cannot leave it: it is sealed there (a
    /// sealed tenant never moves), or its split has no other side with a share. The caller
    /// answers 503; nothing reaches the evacuated side.
    Evacuated {
        side: TargetId,
        basis: Basis,
    },
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
            found if snapshot.has_evacuations() => {
                return evacuated(snapshot, found, key_hash, default_target, health);
            }
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

/// The pick while a side is evacuated ([`flag_store::evacuation`]): the same rules, except that
/// a split's share of an evacuated side goes to the other sides of its split (the
/// evacuation's `to` first, when the split has it), a pinned tenant moves to `to` only when the
/// evacuation includes pinned tenants, and a sealed tenant never moves: its requests that
/// would are refused. No request and no shadow copy reaches an evacuated side but a pinned
/// tenant's left there. A bucket keeps its owner, so a restore moves back exactly the users
/// the evacuation moved.
#[cold]
#[inline(never)]
fn evacuated(
    snapshot: &Snapshot,
    found: Found<'_>,
    key_hash: impl FnOnce() -> u64,
    default_target: TargetId,
    health: &impl HealthView,
) -> Decision {
    let config_default;
    let (placement, shadow, basis, sealed) = match found {
        Found::Tenant(flag) => (
            flag.placement(),
            flag.shadow(),
            Basis::TenantFlag,
            flag.sealed(),
        ),
        Found::Default(flag) => (
            flag.placement(),
            flag.shadow(),
            Basis::DefaultFlag,
            flag.sealed(),
        ),
        Found::Rejected(_) => return Decision::RejectedFlag,
        Found::Nothing => {
            config_default = Placement::Pinned(default_target);
            (&config_default, None, Basis::ConfigDefault, false)
        }
    };
    let open = |t: TargetId| snapshot.evacuation(t).is_none() && health.is_healthy(t);
    let decision = match placement {
        Placement::Pinned(target) => match snapshot.evacuation(*target) {
            Some(e) if e.include_pinned && sealed => {
                return Decision::Evacuated {
                    side: *target,
                    basis,
                };
            }
            // Its `to` evacuated too: nowhere left to go.
            Some(e) if e.include_pinned && snapshot.evacuation(e.to).is_some() => {
                return Decision::Evacuated {
                    side: *target,
                    basis,
                };
            }
            Some(e) if e.include_pinned => pinned(e.to, basis, health),
            _ => pinned(*target, basis, health),
        },
        Placement::Split(split) => {
            let hash = key_hash();
            let owner = split.owner(bucket_of(hash));
            let leaving = snapshot.evacuation(owner);
            if leaving.is_some() && sealed {
                return Decision::Evacuated { side: owner, basis };
            }
            let to = leaving
                .map(|e| e.to)
                .filter(|&to| split.entries().iter().any(|&(t, _)| t == to) && open(to));
            match to.or_else(|| split.pick(hash, open)) {
                Some(target) => Decision::Forward(Pick {
                    target,
                    basis,
                    mode: Mode::Split,
                    bucket: Some(bucket_of(hash)),
                    owner,
                    // Leaving an evacuated side is the flag's doing, not a failover.
                    failover: leaving.is_none() && target != owner,
                    alternative: split.pick(hash, |t| t != target && open(t)),
                    shadow: None,
                }),
                None if leaving.is_some() => Decision::Evacuated { side: owner, basis },
                None => Decision::NoHealthyTarget { basis },
            }
        }
    };
    match (decision, shadow) {
        (Decision::Forward(mut pick), Some(s))
            if s.target != pick.target && snapshot.evacuation(s.target).is_none() =>
        {
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
    use flag_store::{BUCKETS, FlagItem, ItemError, Load, LoadedItem, Targets};
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

    /// A snapshot over three sides, `euw1` among them, from JSON items.
    fn three_sides(items: &[&str]) -> Snapshot {
        let load = Load {
            identity: None,
            seals: Vec::new(),
            version: 1,
            items: (items.iter())
                .map(|json| LoadedItem {
                    location: "test".into(),
                    item: Ok(serde_json::from_str::<FlagItem>(json).unwrap()),
                })
                .collect(),
        };
        let snap = Snapshot::build(load, &Targets::new(["euw1", "legacy", "new"]), None);
        assert!(snap.rejected.is_empty(), "{:?}", snap.rejected);
        snap
    }

    const EUW1: TargetId = TargetId(0);
    const LEGACY3: TargetId = TargetId(1);
    const NEW3: TargetId = TargetId(2);

    fn evacuate(side: &str, to: &str, include_pinned: bool) -> String {
        format!(
            r#"{{"tenant":"!evacuate:{side}","evacuation":{{"to":"{to}","include_pinned":{include_pinned}}},"version":1}}"#
        )
    }

    #[test]
    fn an_evacuated_sides_share_goes_to_the_other_sides_and_comes_back_exactly() {
        let flags = [
            r#"{"tenant":"acme","weights":{"euw1":30,"legacy":50,"new":20}}"#,
            r#"{"tenant":"globex","weights":{"euw1":40,"legacy":60}}"#,
        ];
        let before = three_sides(&flags);
        let evac = evacuate("euw1", "new", false);
        let during = three_sides(&[flags[0], flags[1], &evac]);
        let r = route("/", RouteKind::Flagged);
        let at = |snap: &Snapshot, tenant, key: u64| {
            pick(snap, &r, Some(tenant), || key, LEGACY3, &AllHealthy)
        };
        let mut moved = [0u32; 3];
        for key in 0..u64::from(BUCKETS) {
            for tenant in ["acme", "globex"] {
                let was = target(at(&before, tenant, key));
                let now = target(at(&during, tenant, key));
                assert_ne!(now, EUW1, "{tenant} key {key} still on the evacuated side");
                if was != EUW1 {
                    assert_eq!(now, was, "{tenant} key {key} was not on euw1 and moved");
                } else {
                    moved[now.index()] += 1;
                }
                if tenant == "acme" && was == EUW1 {
                    // The split has the evacuation's `to`: the whole share goes there.
                    assert_eq!(now, NEW3);
                }
                if tenant == "globex" && was == EUW1 {
                    // It has not: the share goes to the split's other side.
                    assert_eq!(now, LEGACY3);
                }
                let Decision::Forward(p) = at(&during, tenant, key) else {
                    unreachable!()
                };
                assert!(!p.failover, "leaving an evacuated side is not a failover");
                assert_ne!(
                    p.alternative,
                    Some(EUW1),
                    "a retry never goes to the evacuated side"
                );
            }
        }
        assert_eq!(moved[EUW1.index()], 0);
        assert!(
            moved[NEW3.index()] > 0 && moved[LEGACY3.index()] > 0,
            "{moved:?}"
        );
        // Restored: the record without its evacuation; every key back where it was.
        let restored = three_sides(&[
            flags[0],
            flags[1],
            r#"{"tenant":"!evacuate:euw1","version":2}"#,
        ]);
        assert!(!restored.has_evacuations());
        for key in 0..1000 {
            assert_eq!(
                target(at(&restored, "acme", key)),
                target(at(&before, "acme", key))
            );
        }
    }

    #[test]
    fn pinned_tenants_move_only_when_included_and_sealed_ones_never() {
        let flags = [
            r#"{"tenant":"acme","target":"euw1"}"#,
            r#"{"tenant":"vault","target":"euw1","sealed":true}"#,
            r#"{"tenant":"*","target":"euw1"}"#,
            r#"{"tenant":"split-only","weights":{"euw1":100,"legacy":0}}"#,
        ];
        let r = route("/", RouteKind::Flagged);
        let fixed = route("/analytics/", RouteKind::Fixed(EUW1));
        let decide =
            |snap: &Snapshot, tenant| pick(snap, &r, Some(tenant), || 7, EUW1, &AllHealthy);
        let evac = evacuate("euw1", "new", false);
        let without = three_sides(&[flags[0], flags[1], flags[2], flags[3], &evac]);
        assert_eq!(
            target(decide(&without, "acme")),
            EUW1,
            "pinned tenants stay without --include-pinned"
        );
        assert_eq!(target(decide(&without, "vault")), EUW1);
        assert_eq!(
            target(decide(&without, "nobody")),
            EUW1,
            "the default flag is pinned too"
        );
        // A split with no other side that has a share: its other side is not the evacuation's
        // `to`, so it cannot leave.
        assert_eq!(
            decide(&without, "split-only"),
            Decision::Evacuated {
                side: EUW1,
                basis: Basis::TenantFlag
            }
        );
        let evac = evacuate("euw1", "new", true);
        let with = three_sides(&[flags[0], flags[1], flags[2], flags[3], &evac]);
        assert_eq!(target(decide(&with, "acme")), NEW3);
        assert_eq!(target(decide(&with, "nobody")), NEW3);
        assert_eq!(
            decide(&with, "vault"),
            Decision::Evacuated {
                side: EUW1,
                basis: Basis::TenantFlag
            },
            "a sealed tenant never moves"
        );
        assert_eq!(
            target(pick(&with, &fixed, Some("acme"), || 7, EUW1, &AllHealthy)),
            EUW1,
            "a fixed route is the config's, not the flags'"
        );
        // No flags at all: the config's default target is pinned like any other.
        let bare = three_sides(&[&evac]);
        assert_eq!(
            target(pick(&bare, &r, Some("acme"), || 7, EUW1, &AllHealthy)),
            NEW3
        );
        // The evacuation's `to` down: a pinned tenant moved there gets its 503, never euw1.
        assert_eq!(
            pick(&with, &r, Some("acme"), || 7, EUW1, &Down(NEW3)),
            Decision::PinnedUnavailable {
                target: NEW3,
                basis: Basis::TenantFlag
            }
        );
    }

    #[test]
    fn two_sides_evacuated_onto_each_other_send_nothing_to_either() {
        let flags = [
            r#"{"tenant":"acme","target":"euw1"}"#,
            r#"{"tenant":"globex","weights":{"euw1":50,"new":30,"legacy":20}}"#,
        ];
        let both = [evacuate("euw1", "new", true), evacuate("new", "euw1", true)];
        let snap = three_sides(&[flags[0], flags[1], &both[0], &both[1]]);
        let r = route("/", RouteKind::Flagged);
        assert_eq!(
            pick(&snap, &r, Some("acme"), || 7, LEGACY3, &AllHealthy),
            Decision::Evacuated {
                side: EUW1,
                basis: Basis::TenantFlag
            }
        );
        for key in 0..2000 {
            let to = target(pick(
                &snap,
                &r,
                Some("globex"),
                || key,
                LEGACY3,
                &AllHealthy,
            ));
            assert_eq!(to, LEGACY3, "key {key}");
        }
    }

    #[test]
    fn no_shadow_copy_goes_to_an_evacuated_side() {
        let flag =
            r#"{"tenant":"acme","target":"legacy","shadow":{"target":"euw1","percent":100}}"#;
        let evac = evacuate("euw1", "new", false);
        let snap = three_sides(&[flag, &evac]);
        let r = route("/", RouteKind::Flagged);
        let Decision::Forward(p) = pick(&snap, &r, Some("acme"), || 7, LEGACY3, &AllHealthy) else {
            panic!("not forwarded")
        };
        assert_eq!((p.target, p.shadow), (LEGACY3, None));
        let kept = three_sides(&[flag]);
        let Decision::Forward(p) = pick(&kept, &r, Some("acme"), || 7, LEGACY3, &AllHealthy) else {
            panic!("not forwarded")
        };
        assert_eq!(p.shadow.map(|s| s.target), Some(EUW1));
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
