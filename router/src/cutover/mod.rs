//! Migration control: the moment a tenant moves, across the whole fleet of routers.
//!
//! - [`presence`]: every router keeps a presence record in the store (its id, build, the
//!   flag version it routes by, when it was last seen, the holds it has drained), so the
//!   commands that move tenants know which routers must follow, and `switchyard fleet` shows
//!   whether they do.

pub mod presence;
