//! One body type for everything the gateway sends: a buffered body (small
//! requests kept for a replay, inspected responses, gateway errors) or a
//! stream passed through, optionally after a prefix already read, and with a
//! byte limit.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Errors of a body: the stream's own, or the size limit.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body went past its byte limit.
#[derive(Debug, thiserror::Error)]
#[error("body larger than {0} bytes")]
pub struct TooLarge(pub u64);

/// The caller's request body failed (malformed chunking, the connection closed mid-body): the
/// caller's fault, never the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct CallerBody(#[source] pub BoxError);

/// The caller's request body kept the gateway waiting longer than allowed, in all.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0} ms")]
pub struct Stalled(pub u64);

/// A check of a caller's body as it streams (a multipart body's part names): an error refuses
/// the body as the caller's fault ([`Refused`], 400), and the rest is never sent.
pub trait BodyCheck: Send + Sync + std::fmt::Debug {
    /// Checks the next piece.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), BoxError>;
    /// The body ended: checks what is left.
    fn finish(&mut self) -> Result<(), BoxError>;
}

/// A caller's body refused by its [`BodyCheck`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub BoxError);

/// How far a caller's request body has come, shared by whatever reads it and the layer that
/// times the request: when a timer fires while the gateway is waiting on the caller's body, the
/// timeout is the caller's (408), not the upstream's.
#[derive(Debug, Default)]
pub struct BodyProgress(AtomicU8);

const UNREAD: u8 = 0;
const WAITING: u8 = 1;
const FLOWING: u8 = 2;
const COMPLETE: u8 = 3;

impl BodyProgress {
    /// Whether the body is incomplete and the gateway, when it last looked, was waiting for
    /// more of it from the caller.
    pub fn waiting_on_caller(&self) -> bool {
        self.0.load(Ordering::Relaxed) == WAITING
    }

    /// The whole body is in (or there is none).
    pub fn complete(&self) {
        self.0.store(COMPLETE, Ordering::Relaxed);
    }

    /// The gateway waits for the caller's next bytes.
    pub fn waiting(&self) {
        self.0.store(WAITING, Ordering::Relaxed);
    }

    fn flowing(&self) {
        self.0.store(FLOWING, Ordering::Relaxed);
    }

    /// Whether nothing has been read of it yet.
    pub fn unread(&self) -> bool {
        self.0.load(Ordering::Relaxed) == UNREAD
    }
}

/// A handle on a request's [`BodyProgress`] (the proxy keeps it in the request's scope).
pub type Progress = Arc<dyn AsRef<BodyProgress> + Send + Sync>;

/// A caller's body: how long, in all, it may keep the gateway waiting for its bytes. The clock
/// runs only while the gateway waits on the caller, not while the upstream is slow to take what
/// it has, and it is not reset by each piece: a trickle is cut too.
pub struct Patience {
    total: std::time::Duration,
    left: std::time::Duration,
    waiting_since: Option<tokio::time::Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
    progress: Option<Progress>,
}

impl std::fmt::Debug for Patience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patience")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl Patience {
    /// Waiting longer than `left` in all fails the body with [`Stalled`] (naming `total`, the
    /// configured allowance); `progress` is kept up to date.
    pub fn new(total: std::time::Duration, left: std::time::Duration, progress: Option<Progress>) -> Self {
        Patience {
            total,
            left,
            waiting_since: None,
            timer: Box::pin(tokio::time::sleep(left)),
            progress,
        }
    }

    fn set(&self, f: impl Fn(&BodyProgress)) {
        if let Some(p) = &self.progress {
            f((**p).as_ref());
        }
    }
}

/// The gateway's body: buffered, or a stream of type `B` (the wire's [`Incoming`] unless a layer
/// is used around another client).
#[derive(Debug)]
pub enum ProxyBody<B = Incoming> {
    /// All of it, in memory (taken once).
    Full(Option<Bytes>),
    /// A stream, with bytes already read from it first.
    Stream {
        /// Bytes read before the decision to stream (sent first).
        prefix: Option<Bytes>,
        /// The rest.
        rest: B,
        /// Bytes the stream may still carry.
        remaining: u64,
        /// The limit, for the error message.
        limit: u64,
        /// A caller's body (its faults are the caller's, and it may not stall); `None` for an
        /// upstream answer.
        caller: Option<Patience>,
        /// A caller's multipart body: checked as it passes (a part named like a credential fails
        /// it before the chunk that names it is sent).
        scan: Option<Box<dyn BodyCheck>>,
    },
}

impl<B> ProxyBody<B> {
    /// A buffered body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ProxyBody::Full((!b.is_empty()).then_some(b))
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// A stream passed through unchanged, after `prefix`, at most `limit` bytes in all.
    pub fn stream(prefix: Option<Bytes>, rest: B, limit: u64) -> Self {
        let used = prefix.as_ref().map_or(0, |p| p.len() as u64);
        ProxyBody::Stream {
            prefix: prefix.filter(|p| !p.is_empty()),
            rest,
            remaining: limit.saturating_sub(used),
            limit,
            caller: None,
            scan: None,
        }
    }

    /// A caller's request body, streamed after `prefix`: at most `limit` bytes, keeping the
    /// gateway waiting no longer than `patience` allows, and its errors reported as the caller's
    /// ([`CallerBody`], [`Stalled`]).
    pub fn from_caller(prefix: Option<Bytes>, rest: B, limit: u64, patience: Patience) -> Self {
        let mut b = Self::stream(prefix, rest, limit);
        if let ProxyBody::Stream { caller, .. } = &mut b {
            *caller = Some(patience);
        }
        b
    }

    /// A stream checked by `scan` as it passes (nothing changes without one).
    pub fn scanned(mut self, scanner: Option<Box<dyn BodyCheck>>) -> Self {
        if let ProxyBody::Stream { scan, .. } = &mut self {
            *scan = scanner;
        }
        self
    }

    /// A copy of a buffered body, for a replay; `None` for a stream, which cannot be sent twice.
    pub fn kept(&self) -> Option<Self> {
        match self {
            ProxyBody::Full(b) => Some(ProxyBody::Full(b.clone())),
            ProxyBody::Stream { .. } => None,
        }
    }
}

impl<B> Body for ProxyBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream {
                prefix,
                rest,
                remaining,
                limit,
                caller,
                scan,
            } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                let polled = match (caller.as_mut(), Pin::new(&mut *rest).poll_frame(cx)) {
                    (Some(c), Poll::Pending) => {
                        if c.waiting_since.is_none() {
                            let now = tokio::time::Instant::now();
                            c.waiting_since = Some(now);
                            c.timer.as_mut().reset(now + c.left);
                            c.set(BodyProgress::waiting);
                        }
                        if c.timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Some(Err(Box::new(Stalled(c.total.as_millis() as u64)))));
                        }
                        Poll::Pending
                    }
                    (Some(_), Poll::Ready(Some(Err(e)))) => {
                        return Poll::Ready(Some(Err(Box::new(CallerBody(e.into())))))
                    }
                    (Some(c), p) => {
                        if let Some(since) = c.waiting_since.take() {
                            c.left = c.left.saturating_sub(since.elapsed());
                        }
                        match &p {
                            Poll::Ready(None) => c.set(BodyProgress::complete),
                            _ if rest.is_end_stream() => c.set(BodyProgress::complete),
                            _ => c.set(BodyProgress::flowing),
                        }
                        p
                    }
                    (None, p) => p,
                };
                match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            let n = d.len() as u64;
                            if n > *remaining {
                                return Poll::Ready(Some(Err(Box::new(TooLarge(*limit)))));
                            }
                            *remaining -= n;
                            if let Err(e) = scan.as_mut().map_or(Ok(()), |s| s.feed(d)) {
                                return Poll::Ready(Some(Err(Box::new(Refused(e)))));
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                    Poll::Ready(None) => match scan.take().map_or(Ok(()), |mut s| s.finish()) {
                        Ok(()) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(Box::new(Refused(e))))),
                    },
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            // A scanner still to finish is polled once more.
            ProxyBody::Stream { prefix, rest, scan, .. } => prefix.is_none() && scan.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream { prefix, rest, .. } => {
                let p = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let h = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + p);
                if let Some(u) = h.upper() {
                    out.set_upper(u + p);
                }
                out
            }
        }
    }
}

/// What reading the start of a stream found.
pub enum Read<B = Incoming> {
    /// The whole body, at most `cap` bytes.
    Complete(Bytes),
    /// More than `cap`: what was read, and the rest still to stream.
    Partial(Bytes, B),
}

/// Why reading a body failed.
#[derive(Debug)]
pub enum ReadError {
    /// The stream's own error.
    Body(BoxError),
    /// The body was not in within the allowed time.
    Stalled(u64),
}

pin_project_lite::pin_project! {
    /// Reads a body up to `cap` bytes: all of it if it fits, else the start plus the rest, so a
    /// large body is never held whole. With a stall limit, a read that takes longer than that in all
    /// fails. A named future: no allocation to read a small answer.
    pub struct ReadUpTo<B> {
        body: Option<B>,
        cap: u64,
        // Most answers arrive in one frame: kept as it is; copied only when a second one comes.
        first: Option<Bytes>,
        buf: bytes::BytesMut,
        stall: Option<std::time::Duration>,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        progress: Option<Progress>,
    }
}

/// Reads `body` up to `cap` bytes (see [`ReadUpTo`]).
pub fn read_up_to<B>(body: B, cap: u64, stall: Option<std::time::Duration>) -> ReadUpTo<B> {
    ReadUpTo {
        body: Some(body),
        cap,
        first: None,
        buf: bytes::BytesMut::new(),
        stall,
        timer: stall.map(tokio::time::sleep),
        progress: None,
    }
}

impl<B> ReadUpTo<B> {
    /// Keeps `progress` up to date while reading (a caller's body).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Of the stall limit, what is left (a caller's body read in part, streamed on after).
    pub fn time_left(self: Pin<&mut Self>) -> Option<std::time::Duration> {
        let this = self.project();
        let t = this.timer.as_pin_mut()?;
        Some(t.deadline().saturating_duration_since(tokio::time::Instant::now()))
    }
}

impl<B> Future for ReadUpTo<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<Read<B>, ReadError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let body = this.body.as_mut().expect("polled after completion");
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    if let Some(p) = this.progress.as_ref() {
                        (**p).as_ref().waiting();
                    }
                    if let Some(t) = this.timer.as_mut().as_pin_mut() {
                        if t.poll(cx).is_ready() {
                            let ms = this.stall.map_or(0, |d| d.as_millis() as u64);
                            return Poll::Ready(Err(ReadError::Stalled(ms)));
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(f) => f,
            };
            // The stall limit bounds the whole read: it is not reset by each piece.
            if let Some(p) = this.progress.as_ref() {
                (**p).as_ref().flowing();
            }
            let Some(frame) = frame else { break };
            let Ok(data) = frame.map_err(|e| ReadError::Body(e.into()))?.into_data() else {
                continue;
            };
            if let Some(f) = this.first.take() {
                this.buf.extend_from_slice(&f);
            }
            if this.buf.is_empty() {
                *this.first = Some(data);
            } else {
                this.buf.extend_from_slice(&data);
            }
            let len = this.first.as_ref().map_or(this.buf.len(), Bytes::len) as u64;
            if len > *this.cap {
                let read = this.first.take().unwrap_or_else(|| this.buf.split().freeze());
                let rest = this.body.take().expect("present");
                return Poll::Ready(Ok(Read::Partial(read, rest)));
            }
        }
        let all = this.first.take().unwrap_or_else(|| this.buf.split().freeze());
        this.body.take();
        if let Some(p) = this.progress.as_ref() {
            (**p).as_ref().complete();
        }
        Poll::Ready(Ok(Read::Complete(all)))
    }
}
