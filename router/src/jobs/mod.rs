//! Scheduled jobs on one side: the same flag that routes a tenant's requests says which side
//! runs its jobs (the `flag-store` crate's [`flag_store::jobs`] decides it and keeps the
//! leases).
//!
//! - [`command`]: `switchyard jobs run`, a command run only where the tenant is owned and
//!   under its lease, stopped (SIGTERM, then SIGKILL) when either ends.
//! - [`api`]: a router's answer to `GET /v1/owner/{tenant}`, from its snapshot, for jobs that
//!   cannot run the binary.

pub mod api;
pub mod command;

/// Exit codes shared by `switchyard owns` and `switchyard jobs run`; documented in
/// docs/cli.md. 2 is a bad command line.
pub mod exit {
    /// Owned here (`owns`); the command ran and succeeded (`jobs run`).
    pub const OWNED: u8 = 0;
    /// Another side owns the tenant, or nobody does (or, mid-run, the tenant moved away).
    pub const NOT_HERE: u8 = 1;
    /// A hold is on the tenant: retry after it ends (or, mid-run, a hold started).
    pub const HELD: u8 = 3;
    /// The store cannot be reached or its item read: who owns the tenant cannot be told.
    pub const CANNOT_TELL: u8 = 4;
    /// The lease was lost mid-run (to another holder, or an unreachable store).
    pub const LEASE_LOST: u8 = 5;
    /// The command itself failed (or could not be started).
    pub const COMMAND_FAILED: u8 = 6;
    /// Another holder kept the lease for the whole wait.
    pub const BUSY: u8 = 7;
}
