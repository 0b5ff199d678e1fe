//! One body type for everything the gateway sends: a buffered body (small
//! requests kept for a replay, inspected responses, gateway errors) or a
//! stream passed through, optionally after a prefix already read, and with a
//! byte limit.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
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
pub struct CallerBody(#[source] pub hyper::Error);

/// The caller's request body paused longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for {0} ms")]
pub struct Stalled(pub u64);

/// A caller's body: how long it may keep us waiting for its next piece. The clock runs only
/// while the gateway waits on the caller, not while the upstream is slow to take what it has.
#[derive(Debug)]
pub struct Patience {
    after: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
}

impl Patience {
    /// Waits longer than `after` fail the body with [`Stalled`].
    pub fn new(after: std::time::Duration) -> Self {
        Patience {
            after,
            timer: Box::pin(tokio::time::sleep(after)),
            waiting: false,
        }
    }
}

/// The gateway's body.
#[derive(Debug)]
pub enum ProxyBody {
    /// All of it, in memory (taken once).
    Full(Option<Bytes>),
    /// A stream, with bytes already read from it first.
    Stream {
        /// Bytes read before the decision to stream (sent first).
        prefix: Option<Bytes>,
        /// The rest.
        rest: Incoming,
        /// Bytes the stream may still carry.
        remaining: u64,
        /// The limit, for the error message.
        limit: u64,
        /// A caller's body (its faults are the caller's, and it may not stall); `None` for an
        /// upstream answer.
        caller: Option<Patience>,
    },
}

impl ProxyBody {
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
    pub fn stream(prefix: Option<Bytes>, rest: Incoming, limit: u64) -> Self {
        let used = prefix.as_ref().map_or(0, |p| p.len() as u64);
        ProxyBody::Stream {
            prefix: prefix.filter(|p| !p.is_empty()),
            rest,
            remaining: limit.saturating_sub(used),
            limit,
            caller: None,
        }
    }

    /// A caller's request body, streamed after `prefix`: at most `limit` bytes, no pause longer
    /// than `stall`, and its errors reported as the caller's ([`CallerBody`], [`Stalled`]).
    pub fn from_caller(prefix: Option<Bytes>, rest: Incoming, limit: u64, stall: std::time::Duration) -> Self {
        let mut b = Self::stream(prefix, rest, limit);
        if let ProxyBody::Stream { caller, .. } = &mut b {
            *caller = Some(Patience::new(stall));
        }
        b
    }
}

impl Body for ProxyBody {
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
            } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                let polled = match (caller.as_mut(), Pin::new(rest).poll_frame(cx)) {
                    (Some(c), Poll::Pending) => {
                        if !c.waiting {
                            c.waiting = true;
                            let deadline = tokio::time::Instant::now() + c.after;
                            c.timer.as_mut().reset(deadline);
                        }
                        if c.timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Some(Err(Box::new(Stalled(c.after.as_millis() as u64)))));
                        }
                        Poll::Pending
                    }
                    (Some(_), Poll::Ready(Some(Err(e)))) => return Poll::Ready(Some(Err(Box::new(CallerBody(e))))),
                    (Some(c), p) => {
                        c.waiting = false;
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
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Stream { prefix, rest, .. } => prefix.is_none() && rest.is_end_stream(),
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
pub enum Read {
    /// The whole body, at most `cap` bytes.
    Complete(Bytes),
    /// More than `cap`: what was read, and the rest still to stream.
    Partial(Bytes, Incoming),
}

/// Why reading a body failed.
#[derive(Debug)]
pub enum ReadError {
    /// The stream's own error.
    Body(hyper::Error),
    /// Nothing arrived for the allowed pause.
    Stalled(u64),
}

/// Reads a body up to `cap` bytes: all of it if it fits, else the start plus
/// the rest, so a large body is never held whole. With `stall`, a pause longer
/// than that between two pieces fails the read.
pub async fn read_up_to(mut body: Incoming, cap: u64, stall: Option<std::time::Duration>) -> Result<Read, ReadError> {
    use http_body_util::BodyExt;
    // Most answers arrive in one frame: keep it as it is, copy only when a second one comes.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    loop {
        let frame = match stall {
            None => body.frame().await,
            Some(d) => tokio::time::timeout(d, body.frame())
                .await
                .map_err(|_| ReadError::Stalled(d.as_millis() as u64))?,
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(ReadError::Body)?.into_data() else {
            continue;
        };
        if let Some(f) = first.take() {
            buf.extend_from_slice(&f);
        }
        if buf.is_empty() {
            first = Some(data);
        } else {
            buf.extend_from_slice(&data);
        }
        let len = first.as_ref().map_or(buf.len(), Bytes::len) as u64;
        if len > cap {
            let read = first.take().unwrap_or_else(|| buf.split().freeze());
            return Ok(Read::Partial(read, body));
        }
    }
    Ok(Read::Complete(first.unwrap_or_else(|| buf.freeze())))
}
