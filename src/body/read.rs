//! Reading the start of a body: all of it when small, else the start and the rest to stream
//! ([`ReadUpTo`]).

use super::{BoxError, Progress};
use bytes::Bytes;
use http_body::Body;
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
