//! A request of a tenant being moved: it waits in this router's hold queue
//! ([`crate::cutover::hold`]) and is decided again whenever a snapshot may have ended the
//! hold, or at the hold's deadline; then it goes on as any other. Kept out of
//! `Proxy::handle`, so every other request's future stays as it was.

use std::sync::Arc;

use flag_store::HoldItem;
use http::Response;
use http::request::Parts;

use super::headers::head_bytes;
use super::refusal::Refusal;
use super::{Peer, Proxy, RequestCtx};
use crate::body::{ClientBody, ResponseBody};

impl Proxy {
    /// A request of a held tenant: it waits in the hold queue until a snapshot ends the hold
    /// or the hold's deadline passes, is decided again each time, then goes on as any other.
    /// Its clock (the route's timeout, its latency) starts again then: the wait is the hold's,
    /// counted in `switchyard_hold_wait_seconds`, never the upstream's.
    pub(super) async fn held(
        &self,
        mut parts: Parts,
        body: ClientBody,
        mut hold: Arc<HoldItem>,
        mut ctx: RequestCtx,
        client: &Peer,
    ) -> Response<ResponseBody> {
        let mut first = true;
        let queued_at = tokio::time::Instant::now();
        loop {
            let head = head_bytes(&parts);
            let Ok(expired) = self.holds.wait(&hold, head, first).await else {
                return self.refuse(Refusal::HoldQueueFull(hold), ctx);
            };
            first = false;
            let now_ms = self.health.now_ms();
            match self.decide(&parts, client, now_ms, &mut ctx) {
                Ok(decided) => {
                    self.holds.released(expired, queued_at.elapsed());
                    ctx.start = tokio::time::Instant::now();
                    return (self.forward(&mut parts, body, decided, ctx, client, now_ms)).await;
                }
                Err(Refusal::Held(again)) => hold = again,
                Err(refusal) => return self.refuse(refusal, ctx),
            }
        }
    }
}
