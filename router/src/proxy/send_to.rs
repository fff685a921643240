//! Where a request is sent: its first endpoint and its one retry, pure functions of the pick,
//! the failure and the health view's endpoint choice, so a table can test them; and how a
//! request that falls over to its other side is counted.

use flag_store::TargetId;
use http::Method;

use super::{Failure, Proxy, RequestCtx};
use crate::observe::metrics::RetryReason;
use crate::policy::Pick;

/// The endpoint a picked request is sent to, and its target: the pick's own, else (its last
/// endpoint went down between the pick and now) a split tenant's alternative, its other
/// healthy side, which holds its data too. A pinned tenant has no alternative: `None`, and the
/// caller answers 503. `choose` is the health view's endpoint choice.
pub(super) fn first_endpoint(
    pick: &Pick,
    mut choose: impl FnMut(TargetId) -> Option<usize>,
) -> Option<(TargetId, usize)> {
    if let Some(endpoint) = choose(pick.target) {
        return Some((pick.target, endpoint));
    }
    let other = pick.alternative?;
    choose(other).map(|endpoint| (other, endpoint))
}

/// The methods a retry may send again after the request may have reached the application.
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Whether a failed first try is sent again, why, and where: a pure function of the failure,
/// the request and where there is to go (`choose(target, except)` is the health view's
/// endpoint choice). A retry needs a copy of the request (no body, no upgrade) and a failure
/// that cannot have reached an application: a failed connect or TLS handshake (any method), or, for
/// idempotent methods only, a reset before any response byte, an endpoint seen down before
/// it answered, or no answer within the route's try timeout. A split tenant's retry goes to its
/// other healthy target, an independent failure domain that holds its data too; a pinned
/// tenant's (no alternative) to another endpoint of its own target, never elsewhere.
pub(super) fn retry_plan(
    failure: Failure,
    method: &Method,
    replayable: bool,
    (target, endpoint): (TargetId, usize),
    alternative: Option<TargetId>,
    mut choose: impl FnMut(TargetId, Option<usize>) -> Option<usize>,
) -> Option<(RetryReason, TargetId, usize)> {
    let idempotent = is_idempotent(method);
    let reason = match failure {
        // A failed TLS handshake sent nothing either.
        Failure::Connect | Failure::Tls(_) => RetryReason::Connect,
        Failure::Reset if idempotent => RetryReason::Reset,
        Failure::EndpointDown if idempotent => RetryReason::EndpointDown,
        Failure::TryTimeout if idempotent => RetryReason::TryTimeout,
        _ => return None,
    };
    if !replayable {
        return None;
    }
    let other_target = alternative.and_then(|t| choose(t, None).map(|e| (t, e)));
    let (t, e) = other_target.or_else(|| choose(target, Some(endpoint)).map(|e| (target, e)))?;
    Some((reason, t, e))
}

impl Proxy {
    /// A split tenant's picked side lost its last endpoint between the pick and the send: the
    /// request goes to `to`, its other side, counted and logged as a failover like a pick that
    /// skipped an unhealthy owner. Its retry, if any, stays on `to`.
    #[cold]
    pub(super) fn fell_over(&self, pick: &mut Pick, to: TargetId, ctx: &mut RequestCtx) {
        if !pick.failover {
            (self.metrics).failover(ctx.labels.route, pick.owner.index(), to.index());
        }
        if let Some(log) = ctx.log.as_mut() {
            log.failover = true;
        }
        ctx.labels.target = to.index();
        pick.target = to;
        pick.failover = to != pick.owner;
        pick.alternative = None;
        pick.shadow = pick.shadow.filter(|s| s.target != to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn retries_go_where_the_tenants_data_is_and_only_when_safe() {
        let (legacy, new) = (TargetId(0), TargetId(1));
        // Endpoints up: legacy has 0 and 1, new has 0.
        let choose = |t: TargetId, except: Option<usize>| match (t.0, except) {
            (0, Some(0)) => Some(1),
            (0, _) => Some(0),
            (1, None) => Some(0),
            _ => None,
        };
        let nothing_up = |_: TargetId, _: Option<usize>| None;
        let (get, post) = (Method::GET, Method::POST);
        let timeout = Failure::Timeout;
        let client = Failure::Client(StatusCode::PAYLOAD_TOO_LARGE, "x");
        use RetryReason::{Connect, Reset};
        #[allow(clippy::type_complexity)]
        let table: &[(
            Failure,
            &Method,
            bool,
            Option<TargetId>,
            Option<(RetryReason, TargetId, usize)>,
        )] = &[
            // A split tenant's retry goes to its other target.
            (
                Failure::Connect,
                &get,
                true,
                Some(new),
                Some((Connect, new, 0)),
            ),
            (Failure::Reset, &get, true, Some(new), Some((Reset, new, 0))),
            // Any method may be retried after a failed connect: nothing was sent.
            (
                Failure::Connect,
                &post,
                true,
                Some(new),
                Some((Connect, new, 0)),
            ),
            // A reset may have reached the application: idempotent methods only.
            (Failure::Reset, &post, true, Some(new), None),
            // A failed TLS handshake sent nothing: like a failed connect.
            (
                Failure::Tls("its certificate has expired"),
                &post,
                true,
                Some(new),
                Some((Connect, new, 0)),
            ),
            // A pinned tenant's retry stays on its target, on another endpoint.
            (
                Failure::Connect,
                &get,
                true,
                None,
                Some((Connect, legacy, 1)),
            ),
            (
                Failure::Reset,
                &Method::PUT,
                true,
                None,
                Some((Reset, legacy, 1)),
            ),
            // A try given up on an endpoint seen down, or past the try timeout: idempotent
            // methods only, like a reset.
            (
                Failure::EndpointDown,
                &get,
                true,
                Some(new),
                Some((RetryReason::EndpointDown, new, 0)),
            ),
            (
                Failure::TryTimeout,
                &get,
                true,
                None,
                Some((RetryReason::TryTimeout, legacy, 1)),
            ),
            (Failure::EndpointDown, &post, true, Some(new), None),
            (Failure::TryTimeout, &post, true, Some(new), None),
            // Never after the route's timeout, a client fault, or without a copy of the request.
            (timeout, &get, true, Some(new), None),
            (client, &get, true, Some(new), None),
            (Failure::BadTarget, &get, true, Some(new), None),
            (Failure::Connect, &get, false, Some(new), None),
        ];
        for &(failure, method, replayable, alternative, want) in table {
            let got = retry_plan(
                failure,
                method,
                replayable,
                (legacy, 0),
                alternative,
                choose,
            );
            assert_eq!(
                got, want,
                "{failure:?} {method} replayable={replayable} alternative={alternative:?}"
            );
        }
        // Other health views, for a split tenant's connect failure: its other target down
        // sends the retry to another endpoint of this one; nothing up, nowhere.
        let new_down =
            |t: TargetId, except: Option<usize>| if t.0 == 1 { None } else { choose(t, except) };
        type View<'a> = &'a dyn Fn(TargetId, Option<usize>) -> Option<usize>;
        let views: [(View, _); 2] = [(&new_down, Some((Connect, legacy, 1))), (&nothing_up, None)];
        for (view, want) in views {
            let got = retry_plan(Failure::Connect, &get, true, (legacy, 0), Some(new), view);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_side_lost_after_the_pick_sends_a_split_tenant_to_its_other_side_and_a_pinned_nowhere() {
        use crate::policy::Basis;
        use flag_store::Mode;
        let (legacy, new) = (TargetId(0), TargetId(1));
        let split = Pick {
            target: new,
            basis: Basis::TenantFlag,
            mode: Mode::Split,
            bucket: Some(7),
            owner: new,
            failover: false,
            alternative: Some(legacy),
            shadow: None,
        };
        let pinned = Pick {
            alternative: None,
            mode: Mode::Pinned,
            bucket: None,
            ..split
        };
        let up = |t: TargetId| Some(t.0 as usize + 3);
        let new_down = |t: TargetId| (t != new).then_some(3);
        let all_down = |_: TargetId| None;
        // Its side is up: the pick's own.
        assert_eq!(first_endpoint(&split, up), Some((new, 4)));
        assert_eq!(first_endpoint(&pinned, up), Some((new, 4)));
        // Its side went down since the pick: a split tenant's other side, never a pinned's.
        assert_eq!(first_endpoint(&split, new_down), Some((legacy, 3)));
        assert_eq!(first_endpoint(&pinned, new_down), None);
        assert_eq!(first_endpoint(&split, all_down), None);
    }
}
