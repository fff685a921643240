//! Migration control: the moment a tenant moves, across the whole fleet of routers.
//!
//! - [`presence`]: every router keeps a presence record in the store (its id, build, the
//!   flag version it routes by, when it was last seen, the holds it has drained), so the
//!   commands that move tenants know which routers must follow, and `switchyard fleet` shows
//!   whether they do.
//! - [`hold`]: a tenant being moved waits on every router while its requests in flight on
//!   the old side finish; each router acknowledges that in its presence record, and releases
//!   the waiting requests when the move flips the tenant or its deadline passes.
//! - [`mover`]: the move with a hold itself (hold, every router's acknowledgement, the gate,
//!   the flip), run by `switchyard flags move` and by a router for its console.
//! - [`ramp`]: a ramp's driver, one router at a time under a lease: it steps the tenants'
//!   dial, judges each step on the fleet's evidence, and rolls back on a breach.
//! - [`ramp_commands`]: an operator's start, pause, resume and abort of a ramp, for the CLI
//!   and the console alike.

pub mod hold;
pub mod mover;
pub mod presence;
pub mod ramp;
pub mod ramp_commands;
