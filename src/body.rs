//! One body type for everything the gateway sends: a buffered body (small
//! requests kept for a replay, inspected responses, gateway errors) or a
//! stream passed through, optionally after a prefix already read, and with a
//! byte limit.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Errors of a body: the stream's own, or the size limit.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body went past its byte limit.
#[derive(Debug, thiserror::Error)]
#[error("body larger than {0} bytes")]
pub struct TooLarge(pub u64);

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
        }
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
            } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                match Pin::new(rest).poll_frame(cx) {
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

/// Reads a body up to `cap` bytes: all of it if it fits, else the start plus
/// the rest, so a large body is never held whole.
pub async fn read_up_to(mut body: Incoming, cap: u64) -> Result<Read, hyper::Error> {
    use http_body_util::BodyExt;
    // Most answers arrive in one frame: keep it as it is, copy only when a second one comes.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
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
