//! Who is calling: the caller's key (`X-Gateway-Key`, or `Authorization: Bearer`) against the
//! configured callers' SHA-256 digests, compared in constant time; or anonymous when
//! `server.allow_anonymous` is set and no key is sent. A wrong key is never anonymous.
//!
//! The caller found is recorded in the request's [`Call`] for [`super::RoutingLayer`]'s
//! permission check. Refusal: 401 `caller_unauthenticated`.
//!
//! ```
//! use douyin_gateway::proxy::{AuthenticateLayer, RoutingLayer};
//! # fn stack<S>(forward: S) -> impl Sized {
//! tower::ServiceBuilder::new().layer(AuthenticateLayer).layer(RoutingLayer::default()).service(forward)
//! # }
//! ```

use super::{Call, Checked};
use crate::error::GatewayError;
use http::Request;
use std::task::{Context, Poll};

/// Wraps a service in [`Authenticate`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthenticateLayer;

impl<S> tower::Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate { inner }
    }
}

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
}

/// The future of [`Authenticate`].
pub type AuthenticateFuture<F, T> = Checked<F, T>;

impl<S, B> tower::Service<Request<B>> for Authenticate<S>
where
    S: tower::Service<Request<B>>,
    S::Error: Into<GatewayError>,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = AuthenticateFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let call = match Call::of(&req) {
            Ok(s) => s,
            Err(e) => return Checked::refused(e),
        };
        match call.runtime().callers.identify(req.headers()) {
            Some(who) => {
                call.set_caller(who);
                Checked::inner(self.inner.call(req))
            }
            None => Checked::refused(GatewayError::CallerUnauthenticated),
        }
    }
}
