//! The watchdog a connection runs under ([`drive`]): a head must complete in time, an idle
//! connection is shut down, a connection the table chose to make room is dropped, and how it
//! ended is told ([`End`]), hyper's own refusals in the access log.

use super::{table, Activity, Limits};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
    let mut closing = false;
    // A stop that came before the connection's first byte waits for it: a graceful close while
    // hyper still detects the protocol drops the connection unanswered, and a caller connected
    // just as its listener was retired (or the gateway stopped) is owed an answer.
    let mut stop_pending = *stop.borrow();
    // The watchdog's own futures are polled only after one of them woke the task (`side`): the
    // task wakes a few times a call for its I/O, and each poll of a `Notify`'s future takes the
    // `Notify`'s lock.
    let side = Arc::new(SideWake::default());
    let side_waker = std::task::Waker::from(Arc::clone(&side));
    let mut evict = std::pin::pin!(activity.evict_now.notified());
    let mut stop_changed = std::pin::pin!(stop.changed());
    loop {
        if stop_pending && !closing && activity.has_read() {
            closing = true;
            graceful(conn.as_mut());
        }
        let stop_armed = !closing && !stop_pending;
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Conn(r));
            }
            if !side.take(cx.waker()) {
                return Poll::Pending;
            }
            let mut side_cx = Context::from_waker(&side_waker);
            let event = if evict.as_mut().poll(&mut side_cx).is_ready() {
                Event::Evict
            } else if stop_armed && stop_changed.as_mut().poll(&mut side_cx).is_ready() {
                Event::Stop
            } else if ticker.poll_tick(&mut side_cx).is_ready() {
                Event::Tick
            } else {
                return Poll::Pending;
            };
            // The futures after this one were not polled: they are, at the next turn.
            side.woken.store(true, Ordering::Release);
            Poll::Ready(event)
        })
        .await;
        match event {
            Event::Conn(r) => {
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
            Event::Evict => {
                if table::is_evicted(&activity) {
                    tracing::debug!(listener = origin.listener, peer = %origin.peer,
                        "connection closed to make room for another (the listener is at its cap)");
                    return End::Evicted;
                }
                evict.set(activity.evict_now.notified());
            }
            Event::Stop => stop_pending = true,
            // Still watched while closing: a head that slipped in as the close began must
            // complete in time too.
            Event::Tick => match watch.look(&activity, &limits, Instant::now()) {
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

/// What woke a connection's watchdog.
enum Event<E> {
    /// The connection ended.
    Conn(Result<(), E>),
    /// The table may have chosen this connection to make room.
    Evict,
    /// The gateway or the listener stops.
    Stop,
    /// Time to look at the connection's activity.
    Tick,
}

/// The waker of the watchdog's own futures: it wakes the connection's task and remembers that it
/// did, so that the task polls those futures only then.
struct SideWake {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl Default for SideWake {
    fn default() -> Self {
        SideWake {
            // Polled once at the start, so that each future registers its waker.
            woken: AtomicBool::new(true),
            task: Default::default(),
        }
    }
}

impl SideWake {
    /// Registers the task's `waker` for the next wake, and whether one came since the last call.
    fn take(&self, waker: &std::task::Waker) -> bool {
        // Registered first: a wake after the flag is read still wakes the task.
        self.task.register(waker);
        self.woken.swap(false, Ordering::AcqRel)
    }
}

impl std::task::Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::InProgress;

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
}
