//! Keeping connections honest: a request head must arrive in time and within a memory budget,
//! an idle connection is closed, and a listener holds at most so many connections, so many from
//! one address.
//!
//! hyper's own header-read timer also closes idle keep-alive connections after the same delay,
//! and it has no idle timeout or connection cap, so the gateway drives each connection itself:
//!
//! - [`Counted`] counts the bytes a connection reads and charges an unfinished head to the
//!   process's [`HeadBudget`] ([`io`]);
//! - [`Tracked`] counts the requests it starts and finishes (a request is finished when its
//!   response body is dropped, that is sent or abandoned) and tells each request its [`Peer`];
//! - [`Table`] admits connections: a cap, a cap per address, and at the cap the connection
//!   waiting longest for its head closed to make room ([`table`]);
//! - [`drive`] runs the connection with a watchdog that looks at both every quarter of the
//!   shorter timeout. No request in progress and bytes read since the last one finished (or no
//!   request yet at all): a head is on its way, and must complete within `header_read`, else the
//!   connection is dropped. No request and no bytes: the connection is idle, and after `idle` it
//!   is shut down gracefully. A connection the table chose to make room is dropped at once.

pub mod io;
pub mod table;
mod tracked;
mod watchdog;

pub use io::{Counted, HeadBudget};
pub use table::{Admitted, Refused, Table};
pub use tracked::{ConflictingLength, Peer, Tracked, TrackedBody, TrackedFuture};
pub use watchdog::{drive, End, Origin};

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one connection did, shared between its IO, its requests, its watchdog and its listener's
/// table.
#[derive(Debug)]
pub struct Activity {
    bytes_in: AtomicU64,
    started: AtomicU64,
    finished: AtomicU64,
    bytes_at_finish: AtomicU64,
    /// Bytes of the head being received, charged to `budget` until its request starts.
    pending_head: AtomicUsize,
    budget: Arc<HeadBudget>,
    /// A read was refused for the budget.
    over_budget: AtomicBool,
    /// The request number (from 1) whose head carried both `Content-Length` and
    /// `Transfer-Encoding`; 0 for none.
    conflicting_length_at: AtomicU64,
    /// Chosen by the table to make room: the connection is to be dropped.
    evicted: AtomicBool,
    evict_now: tokio::sync::Notify,
}

impl Default for Activity {
    /// An activity with no head budget to speak of (tests).
    fn default() -> Self {
        Activity::new(HeadBudget::new(usize::MAX))
    }
}

/// Where a connection is, for the table choosing one to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A request is in progress.
    InRequest,
    /// No request, and a head is on its way (or none has come yet).
    Head,
    /// No request, nothing arriving.
    Idle,
}

impl Activity {
    /// A new connection's activity, its heads charged to `budget`.
    pub fn new(budget: Arc<HeadBudget>) -> Self {
        Activity {
            bytes_in: AtomicU64::new(0),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            bytes_at_finish: AtomicU64::new(0),
            pending_head: AtomicUsize::new(0),
            budget,
            over_budget: AtomicBool::new(false),
            conflicting_length_at: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict_now: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        let started = self.started.load(Ordering::Acquire);
        if started != self.finished.load(Ordering::Acquire) {
            Phase::InRequest
        } else if started == 0 || self.bytes_in.load(Ordering::Relaxed) > self.bytes_at_finish.load(Ordering::Relaxed) {
            Phase::Head
        } else {
            Phase::Idle
        }
    }

    /// Whether any byte came in: a connection that has read none may still be in hyper's protocol
    /// detection, where a graceful close drops it unanswered.
    pub(crate) fn has_read(&self) -> bool {
        self.bytes_in.load(Ordering::Relaxed) > 0
    }

    /// Marks the connection to be dropped, and wakes its watchdog.
    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.evict_now.notify_one();
    }

    /// Whether a read was refused because the head budget is spent.
    pub fn over_budget(&self) -> bool {
        self.over_budget.load(Ordering::Relaxed)
    }

    /// The head of the request now starting is no longer pending: its bytes leave the budget.
    fn head_done(&self) {
        self.budget.release(self.pending_head.swap(0, Ordering::AcqRel));
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.head_done();
    }
}

/// A request in progress on a connection, until dropped.
struct InProgress(Arc<Activity>);

impl InProgress {
    /// The request's number on its connection (from 1), and its progress.
    fn start(activity: &Arc<Activity>) -> (u64, Self) {
        activity.head_done();
        let n = activity.started.fetch_add(1, Ordering::AcqRel) + 1;
        (n, InProgress(Arc::clone(activity)))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let a = &self.0;
        a.bytes_at_finish
            .store(a.bytes_in.load(Ordering::Relaxed), Ordering::Relaxed);
        a.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// A listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one address at most (0: no such limit).
    pub max_connections_per_address: usize,
    /// A request head must complete within this.
    pub header_read: Duration,
    /// A connection doing nothing is closed after this.
    pub idle: Duration,
}

/// Raises this process's open-file limit to its hard limit; returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot read or raise the open-file limit: {e}; assuming 1024");
            1024
        }
    }
}

/// File descriptors kept aside from the proxy's connections: the admin listener's, the store's,
/// logs and files.
pub const FD_RESERVE: u64 = 128;
/// The admin listener's own connection cap (and the public listener's).
pub const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Connections one address may hold to the admin or public listener unless
/// `max_connections_per_ip` says otherwise: a quarter of the cap, so a stranger on the internet
/// holds at most that while a monitoring host and the platform keep the rest.
pub const ADMIN_MAX_CONNECTIONS_PER_ADDRESS: usize = ADMIN_MAX_CONNECTIONS / 4;

/// The default `max_connections_per_address` of a listener holding `max` connections: an eighth
/// of them, so one address (a stranger's, or one misbehaving caller's) cannot take more than that
/// while seven eighths stay for everyone else; at least 32, for a busy caller's connection pool.
pub fn default_max_connections_per_address(max: usize) -> usize {
    (max / 8).max(32).min(max)
}

/// The default `max_connections` for a file-descriptor limit: each caller connection may need an
/// upstream connection too, so half of what is left after the reserve.
pub fn default_max_connections(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(FD_RESERVE) / 2).clamp(16, 1 << 20) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_follow_the_fd_limit() {
        assert_eq!(default_max_connections(1024), 448);
        assert_eq!(default_max_connections_per_address(448), 56);
        assert_eq!(default_max_connections_per_address(100), 32);
        assert_eq!(default_max_connections_per_address(9936), 1242);
    }
}
