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

pub use io::{Counted, HeadBudget};
pub use table::{Admitted, Refused, Table};
pub use tracked::{ConflictingLength, Peer, Tracked, TrackedBody, TrackedFuture};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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

/// What the watchdog decided.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Fine,
    HeadTooSlow,
    Idle,
}

/// The watchdog's memory between two looks.
#[derive(Default)]
struct Watch {
    last_started: u64,
    head_since: Option<Instant>,
    idle_since: Option<Instant>,
}

impl Watch {
    fn look(&mut self, a: &Activity, limits: &Limits, now: Instant) -> Verdict {
        let started = a.started.load(Ordering::Acquire);
        let finished = a.finished.load(Ordering::Acquire);
        if started != self.last_started || started != finished {
            // A request began since the last look, or one is in progress.
            self.last_started = started;
            self.head_since = None;
            self.idle_since = None;
            return Verdict::Fine;
        }
        let head_coming =
            started == 0 || a.bytes_in.load(Ordering::Relaxed) > a.bytes_at_finish.load(Ordering::Relaxed);
        if head_coming {
            self.idle_since = None;
            let since = *self.head_since.get_or_insert(now);
            if now - since >= limits.header_read {
                return Verdict::HeadTooSlow;
            }
        } else {
            self.head_since = None;
            let since = *self.idle_since.get_or_insert(now);
            if now - since >= limits.idle {
                return Verdict::Idle;
            }
        }
        Verdict::Fine
    }
}

/// Where a connection came from, for what is logged of it.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The listener: `proxy`, `admin` or `public`.
    pub listener: &'static str,
    /// The peer.
    pub peer: std::net::SocketAddr,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It closed, or was shut down when idle or at shutdown.
    Closed,
    /// Its head did not complete within `header_read`.
    HeadTimeout,
    /// Its listener's table closed it to make room.
    Evicted,
    /// It was reading a head past its share while the head budget was spent.
    OverBudget,
    /// hyper refused a head it could not parse (answering 400, 414 or 431 itself).
    Refused(u16),
}

impl End {
    /// The metric label of a connection closed by the gateway; `None` for an ordinary end.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            End::Closed => None,
            End::HeadTimeout => Some("head_timeout"),
            End::Evicted => Some("evicted"),
            End::OverBudget => Some("head_budget"),
            End::Refused(_) => Some("bad_head"),
        }
    }
}

/// The status hyper answered a head it refused with, if it was such a refusal.
fn refused_status(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut src = Some(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                // hyper's one kind for both; its message names the URI when that was it.
                return Some(if h.to_string().contains("URI") { 414 } else { 431 });
            }
            return h.is_parse().then_some(400);
        }
        src = s.source();
    }
    None
}

/// Runs one connection to its end under the watchdog: dropped when a head is too slow or the
/// table chose it to make room, shut down gracefully when idle or when `stop` says so. A head
/// hyper refused before any request existed is written to the access log with the peer.
pub async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    activity: Arc<Activity>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    origin: Origin,
) -> End
where
    C: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    let every = (limits.header_read.min(limits.idle) / 4).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = Watch::default();
    let mut closing = *stop.borrow();
    if closing {
        graceful(conn.as_mut());
    }
    loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                let Err(e) = r else { return End::Closed };
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                if activity.over_budget() {
                    tracing::debug!(listener = origin.listener, peer = %origin.peer,
                        "the head budget is spent: a connection with a large unfinished head closed");
                    return End::OverBudget;
                }
                if let Some(status) = refused_status(&*e) {
                    tracing::info!(target: "access", listener = origin.listener, peer = %origin.peer, status,
                        "refused before routing: {e}");
                    return End::Refused(status);
                }
                tracing::debug!("connection ended: {e}");
                return End::Closed;
            }
            _ = activity.evict_now.notified() => {
                if table::is_evicted(&activity) {
                    tracing::debug!(listener = origin.listener, peer = %origin.peer,
                        "connection closed to make room for another (the listener is at its cap)");
                    return End::Evicted;
                }
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                graceful(conn.as_mut());
            }
            // Still watched while closing: a head that slipped in as the close began must
            // complete in time too.
            _ = ticker.tick() => match watch.look(&activity, &limits, Instant::now()) {
                Verdict::Fine => {}
                Verdict::HeadTooSlow => {
                    tracing::debug!(listener = origin.listener, peer = %origin.peer,
                        timeout_ms = limits.header_read.as_millis() as u64,
                        "request head not complete in time: connection closed");
                    return End::HeadTimeout;
                }
                Verdict::Idle if !closing => {
                    closing = true;
                    graceful(conn.as_mut());
                }
                Verdict::Idle => {}
            },
        }
    }
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

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            max_connections_per_address: 0,
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_connection_that_sends_nothing_must_send_a_head_in_time() {
        let (a, mut w, t0) = (Activity::default(), Watch::default(), Instant::now());
        assert_eq!(w.look(&a, &limits(), t0), Verdict::Fine);
        assert_eq!(
            w.look(&a, &limits(), t0 + Duration::from_secs(10)),
            Verdict::HeadTooSlow
        );
    }

    #[test]
    fn a_slow_head_is_cut_and_an_idle_connection_closed() {
        let (a, t0) = (Activity::default(), Instant::now());
        let mut w = Watch {
            last_started: 1,
            ..Default::default()
        };
        // One request done, then nothing: idle after 60 s, not 10.
        a.started.store(1, Ordering::Relaxed);
        a.finished.store(1, Ordering::Relaxed);
        a.bytes_in.store(100, Ordering::Relaxed);
        a.bytes_at_finish.store(100, Ordering::Relaxed);
        assert_eq!(w.look(&a, &limits(), t0), Verdict::Fine);
        assert_eq!(w.look(&a, &limits(), t0 + Duration::from_secs(11)), Verdict::Fine);
        assert_eq!(w.look(&a, &limits(), t0 + Duration::from_secs(60)), Verdict::Idle);
        // Bytes of a next head trickle in: cut 10 s after they were first seen.
        let mut w = Watch {
            last_started: 1,
            ..Default::default()
        };
        a.bytes_in.store(101, Ordering::Relaxed);
        assert_eq!(w.look(&a, &limits(), t0), Verdict::Fine);
        a.bytes_in.store(102, Ordering::Relaxed);
        assert_eq!(w.look(&a, &limits(), t0 + Duration::from_secs(9)), Verdict::Fine);
        assert_eq!(
            w.look(&a, &limits(), t0 + Duration::from_secs(10)),
            Verdict::HeadTooSlow
        );
    }

    #[test]
    fn a_request_in_progress_is_never_cut() {
        let (a, mut w, t0) = (Arc::new(Activity::default()), Watch::default(), Instant::now());
        let (_, p) = InProgress::start(&a);
        for s in [0, 100, 1000] {
            assert_eq!(w.look(&a, &limits(), t0 + Duration::from_secs(s)), Verdict::Fine);
        }
        drop(p);
        assert_eq!(a.finished.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn default_caps_follow_the_fd_limit() {
        assert_eq!(default_max_connections(1024), 448);
        assert_eq!(default_max_connections_per_address(448), 56);
        assert_eq!(default_max_connections_per_address(100), 32);
        assert_eq!(default_max_connections_per_address(9936), 1242);
    }
}
