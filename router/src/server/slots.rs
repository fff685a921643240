//! Client connection slots: `server.max_connections`, shared by the traffic and TLS
//! listeners, old and new. A connection is idle while it waits for a request head (it never
//! sent one, or it is between requests) and busy from a complete head to the end of its
//! answer. At the cap, a new connection takes the slot of the connection idle the longest,
//! which closes: idle connections, however many one client opens, never lock out another
//! client. A new connection waits only while every slot has a request in progress.
//!
//! An optional per-address cap (`server.max_connections_per_address`) closes a connection
//! beyond it at once.
//!
//! A connection's state is one atomic word in a table of `max_connections`: marking it idle
//! or busy, once each a request, is a store and a swap. Finding the longest idle is a scan of
//! that table, done only at the cap.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::per_address::AddressCounts;

/// The slot is not in use.
const FREE: u64 = 0;
/// Its connection has a request in progress, or is served by a server that does not say
/// when it is idle (HTTP/2, upgrades, HTTP/1.0).
const BUSY: u64 = 1;
/// Its connection was chosen to close for a new one.
const CLOSING: u64 = 2;
/// The first idle mark: an idle slot holds the value of a counter taken when it went idle,
/// so the smallest is the one idle the longest.
const FIRST_IDLE: u64 = 3;

#[derive(Debug)]
pub(crate) struct Slots {
    states: Box<[AtomicU64]>,
    /// Each slot's connection's task, woken when it is chosen to close.
    closers: Box<[AtomicWaker]>,
    /// The next idle mark.
    clock: AtomicU64,
    taken: Mutex<Taken>,
    /// A slot was given back.
    freed: Notify,
    per_address: Option<usize>,
    closed_for_room: AtomicU64,
    refused_per_address: AtomicU64,
}

#[derive(Debug)]
struct Taken {
    /// Connections that count against the cap: every open one but those closing for room.
    counted: usize,
    max: usize,
    /// Free slots: the table has room beyond the cap for connections still closing, so a new
    /// one takes its place without waiting for the old one's task to run.
    free: Vec<u32>,
    /// Connections open per client address, kept only with a per-address cap.
    by_address: AddressCounts,
}

/// A connection beyond `server.max_connections_per_address`.
#[derive(Debug)]
pub(crate) struct OverAddressCap;

impl Slots {
    pub(crate) fn new(max: usize, per_address: Option<usize>) -> Arc<Slots> {
        // Room for connections closing for room at once: a burst of new ones finds theirs.
        let room = u32::try_from(max + max / 8 + 16).unwrap_or(u32::MAX);
        Arc::new(Slots {
            states: (0..room).map(|_| AtomicU64::new(FREE)).collect(),
            closers: (0..room).map(|_| AtomicWaker::new()).collect(),
            clock: AtomicU64::new(FIRST_IDLE),
            taken: Mutex::new(Taken {
                counted: 0,
                max,
                // Popped from the end: slot 0 first.
                free: (0..room).rev().collect(),
                by_address: AddressCounts::default(),
            }),
            freed: Notify::new(),
            per_address,
            closed_for_room: AtomicU64::new(0),
            refused_per_address: AtomicU64::new(0),
        })
    }

    /// A slot for a new connection from `address`, idle until its first request. At the
    /// cap, the connection idle the longest is closed and no longer counts; when none is
    /// idle, this waits for a connection to end.
    pub(crate) async fn take(self: &Arc<Self>, address: IpAddr) -> Result<Slot, OverAddressCap> {
        loop {
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            // Registered before looking, so a slot given back meanwhile wakes this wait.
            freed.as_mut().enable();
            {
                let mut taken = self.taken.lock().expect("slots lock");
                if let Some(cap) = self.per_address
                    && taken.by_address.at_cap(address, cap)
                {
                    self.refused_per_address.fetch_add(1, Ordering::Relaxed);
                    return Err(OverAddressCap);
                }
                if taken.counted >= taken.max && self.close_longest_idle() {
                    taken.counted -= 1;
                }
                if taken.counted < taken.max
                    && let Some(index) = taken.free.pop()
                {
                    taken.counted += 1;
                    if self.per_address.is_some() {
                        taken.by_address.add(address);
                    }
                    let mark = self.clock.fetch_add(1, Ordering::Relaxed);
                    self.states[index as usize].store(mark, Ordering::Release);
                    return Ok(Slot {
                        slots: self.clone(),
                        index,
                        address,
                    });
                }
            }
            freed.await;
        }
    }

    /// Closes the connection idle the longest; `false` when none is idle. Called with the
    /// slots lock held, as the count it changes is.
    fn close_longest_idle(&self) -> bool {
        loop {
            let longest = (self.states.iter().enumerate())
                .map(|(i, s)| (i, s.load(Ordering::Relaxed)))
                .filter(|(_, mark)| *mark >= FIRST_IDLE)
                .min_by_key(|(_, mark)| *mark);
            let Some((index, mark)) = longest else {
                return false;
            };
            // It may have begun a request since: then look again.
            if self.states[index]
                .compare_exchange(mark, CLOSING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.closed_for_room.fetch_add(1, Ordering::Relaxed);
                self.closers[index].wake();
                return true;
            }
        }
    }

    fn give_back(&self, index: u32, address: IpAddr) {
        {
            let mut taken = self.taken.lock().expect("slots lock");
            // One closed for room stopped counting then.
            if self.states[index as usize].swap(FREE, Ordering::AcqRel) != CLOSING {
                taken.counted -= 1;
            }
            taken.free.push(index);
            if self.per_address.is_some() {
                taken.by_address.remove(address);
            }
        }
        self.freed.notify_one();
    }

    /// Connections closed to make room for a new one; connections closed at once for their
    /// address's cap.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.closed_for_room.load(Ordering::Relaxed),
            self.refused_per_address.load(Ordering::Relaxed),
        )
    }
}

impl crate::observe::metrics::Families for Slots {
    fn collect(&self, out: &mut Vec<prometheus::proto::MetricFamily>) {
        use crate::observe::metrics::Family;
        let closed = Family::counter(
            "switchyard_connections_shed_total",
            "Client connections the router closed to keep room: idle_for_room (at server.max_connections, the connection idle the longest made room for a new one), per_address (beyond server.max_connections_per_address, closed at once).",
            &["reason"],
        );
        let (for_room, per_address) = self.counts();
        closed.set(&["idle_for_room"], for_room as f64);
        closed.set(&["per_address"], per_address as f64);
        closed.into(out);
    }
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    index: u32,
    address: IpAddr,
}

impl Slot {
    /// The connection waits for a request head: it may be closed for a new one. (A slot
    /// just taken is already idle, since its connection opened.)
    #[inline]
    pub(crate) fn idle(&self) {
        let mark = self.slots.clock.fetch_add(1, Ordering::Relaxed);
        let state = &self.slots.states[self.index as usize];
        let _ = state.compare_exchange(BUSY, mark, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The connection has a request to serve; `false` when it was chosen to close.
    #[inline]
    pub(crate) fn begin(&self) -> bool {
        let state = &self.slots.states[self.index as usize];
        let mut mark = state.load(Ordering::Relaxed);
        loop {
            if mark == CLOSING {
                return false;
            }
            match state.compare_exchange_weak(mark, BUSY, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => mark = now,
            }
        }
    }

    /// Ready once the connection is chosen to close for a new one.
    #[inline]
    pub(crate) fn poll_close(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let i = self.index as usize;
        if self.slots.states[i].load(Ordering::Acquire) == CLOSING {
            return std::task::Poll::Ready(());
        }
        self.slots.closers[i].register(cx.waker());
        // Chosen between the look and the registration: its wake may have found none.
        if self.slots.states[i].load(Ordering::Acquire) == CLOSING {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }

    /// Resolves once the connection is chosen to close for a new one.
    pub(crate) async fn closing(&self) {
        std::future::poll_fn(|cx| self.poll_close(cx)).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.give_back(self.index, self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[tokio::test]
    async fn at_the_cap_the_connection_idle_the_longest_makes_room() {
        let slots = Slots::new(3, None);
        let first = slots.take(A).await.unwrap();
        let second = slots.take(A).await.unwrap();
        let third = slots.take(A).await.unwrap();
        assert!(second.begin(), "a request begins on the second");
        assert!(
            first.begin(),
            "and on the first, which then waits for its next"
        );
        first.idle();
        // The third has been idle since it opened, before the first went idle again. The new
        // connection does not wait for it to close.
        let fourth = slots.take(B).await.unwrap();
        third.closing().await;
        assert!(
            !third.begin(),
            "a connection chosen to close serves no request"
        );
        assert!(fourth.begin());
        assert_eq!(slots.counts(), (1, 0));
        drop(third);
        // Still at the cap: the next one closes the first, idle since its request.
        let fifth = slots.take(B).await.unwrap();
        first.closing().await;
        assert_eq!(slots.counts(), (2, 0));
        drop((first, second, fourth, fifth));
        assert_eq!(slots.taken.lock().unwrap().counted, 0);
    }

    #[tokio::test]
    async fn a_busy_connection_is_never_closed_for_room() {
        let slots = Slots::new(1, None);
        let only = slots.take(A).await.unwrap();
        assert!(only.begin());
        let slots2 = slots.clone();
        let waiting = tokio::spawn(async move { slots2.take(B).await.is_ok() });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "waits while the only connection is busy"
        );
        assert_eq!(slots.counts(), (0, 0));
        drop(only);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_connection_chosen_as_it_ended_does_not_close_the_next() {
        let slots = Slots::new(1, None);
        let only = slots.take(A).await.unwrap();
        {
            let mut taken = slots.taken.lock().unwrap();
            assert!(slots.close_longest_idle());
            taken.counted -= 1;
        }
        drop(only);
        let next = slots.take(B).await.unwrap();
        let closing = tokio::time::timeout(std::time::Duration::from_millis(50), next.closing());
        assert!(closing.await.is_err(), "the next connection is not closed");
        assert!(next.begin());
    }

    #[tokio::test]
    async fn one_address_is_held_to_its_cap_and_others_are_not() {
        let slots = Slots::new(10, Some(2));
        let a1 = slots.take(A).await.unwrap();
        let _a2 = slots.take(A).await.unwrap();
        assert!(slots.take(A).await.is_err());
        let _b = slots.take(B).await.unwrap();
        drop(a1);
        let _a3 = slots.take(A).await.unwrap();
        assert_eq!(slots.counts(), (0, 1));
    }
}
