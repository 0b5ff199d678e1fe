//! [`Tracked`]: a connection's service, counting its requests in and out.

use super::{Activity, InProgress};
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

/// In a request's extensions when its head carried both `Content-Length` and
/// `Transfer-Encoding` (hyper keeps only the latter): the request is to be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictingLength;

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
        let (n, progress) = InProgress::start(&self.activity);
        if self.activity.conflicting_length_at.load(Ordering::Acquire) == n {
            req.extensions_mut().insert(ConflictingLength);
        }
        TrackedFuture {
            progress: Some(progress),
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
