//! Keeping connections honest: a request head must arrive in time, an idle connection is closed,
//! and a listener holds at most so many connections.
//!
//! hyper's own header-read timer also closes idle keep-alive connections after the same delay,
//! and it has no idle timeout or connection cap, so the gateway drives each connection itself:
//!
//! - [`Counted`] counts the bytes a connection reads;
//! - [`Tracked`] counts the requests it starts and finishes (a request is finished when its
//!   response body is dropped, that is sent or abandoned);
//! - [`drive`] runs the connection with a watchdog that looks at both every quarter of the
//!   shorter timeout. No request in progress and bytes read since the last one finished (or no
//!   request yet at all): a head is on its way, and must complete within `header_read`, else the
//!   connection is dropped. No request and no bytes: the connection is idle, and after `idle` it
//!   is shut down gracefully.

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// What one connection did, shared between its IO, its requests and its watchdog.
#[derive(Debug, Default)]
pub struct Activity {
    bytes_in: AtomicU64,
    started: AtomicU64,
    finished: AtomicU64,
    bytes_at_finish: AtomicU64,
}

/// An IO that counts the bytes read from it.
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    /// Wraps `inner`, counting into `activity`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Counted { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request in progress on a connection, until dropped.
struct InProgress(Arc<Activity>);

impl InProgress {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::AcqRel);
        InProgress(Arc::clone(activity))
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

/// The address a request's connection came from, in the request's extensions (put there by
/// [`Tracked`], on every listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// A service whose requests count as in progress on their connection until the response body
/// is done. It puts the connection's [`Peer`] in each request's extensions.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: Peer,
}

impl<S> Tracked<S> {
    /// Wraps the service of the connection from `peer`.
    pub fn new(inner: S, activity: Arc<Activity>, peer: std::net::SocketAddr) -> Self {
        Tracked {
            inner,
            activity,
            peer: Peer(peer),
        }
    }
}

impl<S, ReqBody, B> tower::Service<http::Request<ReqBody>> for Tracked<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        TrackedFuture {
            progress: Some(InProgress::start(&self.activity)),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Tracked`] service.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        progress: Option<InProgress>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx))?;
        let progress = this.progress.take();
        Poll::Ready(Ok(resp.map(|inner| TrackedBody {
            inner,
            _progress: progress,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in progress until it is dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _progress: Option<InProgress>,
    }
}

impl<B: Body<Data = Bytes>> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
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

/// Runs one connection to its end under the watchdog: dropped when a head is too slow, shut
/// down gracefully when idle or when `stop` says so.
pub async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    activity: Arc<Activity>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
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
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                return;
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
                    tracing::debug!(timeout_ms = limits.header_read.as_millis() as u64, "request head not complete in time: connection closed");
                    return;
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

/// Open connections of a listener.
#[derive(Debug, Default)]
pub struct Open(AtomicUsize);

/// One open connection, counted until dropped.
pub struct OpenGuard(Arc<Open>);

impl Open {
    /// Counts a new connection, unless `max` are open already.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<OpenGuard> {
        let prev = self.0.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(OpenGuard(Arc::clone(self)))
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
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
/// The admin listener's own connection cap.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

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
        let p = InProgress::start(&a);
        for s in [0, 100, 1000] {
            assert_eq!(w.look(&a, &limits(), t0 + Duration::from_secs(s)), Verdict::Fine);
        }
        drop(p);
        assert_eq!(a.finished.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_cap_admits_up_to_max() {
        let open = Arc::new(Open::default());
        let a = open.admit(2).unwrap();
        let _b = open.admit(2).unwrap();
        assert!(open.admit(2).is_none());
        drop(a);
        assert!(open.admit(2).is_some());
        assert_eq!(default_max_connections(1024), 448);
    }
}
