//! A caller's request body, as opposed to an upstream's answer: its failures are the caller's
//! ([`CallerBody`], [`Stalled`], [`Refused`]), how long it may keep the gateway waiting
//! ([`Patience`]), and how far it has come ([`BodyProgress`]).

use super::BoxError;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

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

    pub(super) fn flowing(&self) {
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

    /// The gateway waits for the caller's next bytes: the clock runs (from where it stood).
    /// Ready with the error once the allowance is spent.
    pub(super) fn waiting(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Stalled> {
        use std::future::Future;
        if self.waiting_since.is_none() {
            let now = tokio::time::Instant::now();
            self.waiting_since = Some(now);
            self.timer.as_mut().reset(now + self.left);
            self.set(BodyProgress::waiting);
        }
        match self.timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Stalled(self.total.as_millis() as u64)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    /// Something arrived (the body's end, when `complete`): the clock stops.
    pub(super) fn arrived(&mut self, complete: bool) {
        if let Some(since) = self.waiting_since.take() {
            self.left = self.left.saturating_sub(since.elapsed());
        }
        if complete {
            self.set(BodyProgress::complete);
        } else {
            self.set(BodyProgress::flowing);
        }
    }

    fn set(&self, f: impl Fn(&BodyProgress)) {
        if let Some(p) = &self.progress {
            f((**p).as_ref());
        }
    }
}
