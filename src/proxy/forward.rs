//! The innermost service: the request to the platform over the thread's own keep-alive
//! connections ([`LocalClient`]).
//!
//! The request's origin-form target goes to the route's upstream (scheme and authority from
//! `[upstream]` or the route's `[[upstreams]]` entry, never from the caller), over that
//! upstream's client (its own CA and connect timeout); hop-by-hop headers of the answer are
//! dropped.
//! Errors: the caller's body failing is the caller's (400, 408, 413), anything else 502
//! `upstream_unavailable`.

use super::{headers, Call};
use crate::body::ProxyBody;
use crate::error::GatewayError;
use crate::upstream::{LocalClient, UpstreamBody};
use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// See the [module docs](self).
#[derive(Clone)]
pub struct Forward {
    /// One per upstream, in `Config::all_upstreams` order.
    clients: std::sync::Arc<[LocalClient]>,
}

impl Forward {
    /// Forwards over one client per upstream, in `Config::all_upstreams` order.
    pub fn over(clients: Vec<LocalClient>) -> Self {
        Forward {
            clients: clients.into(),
        }
    }

    /// One client per upstream of `config`: built once and shared by every proxy thread (each
    /// thread still drives its own connections), so TLS sessions resume across threads.
    pub fn build(config: &crate::config::Config) -> Result<Self, String> {
        let clients = config
            .all_upstreams()
            .iter()
            .map(LocalClient::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Forward::over(clients))
    }
}

impl tower::Service<Request<ProxyBody>> for Forward {
    type Response = Response<UpstreamBody>;
    type Error = GatewayError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ProxyBody>) -> ForwardFuture {
        let call = match Call::of(&req) {
            Ok(s) => s.clone(),
            Err(e) => return ForwardFuture::failed(e),
        };
        let rt = call.runtime();
        let upstream = call.route().and_then(|i| rt.routes.get(i)).map_or(0, |r| r.upstream);
        let (Some(base), Some(client)) = (rt.bases.get(upstream), self.clients.get(upstream)) else {
            return ForwardFuture::failed(GatewayError::UpstreamUnavailable(
                "this route's upstream was added by a config reload: [[upstreams]] take effect at restart".into(),
            ));
        };
        let target = std::mem::take(req.uri_mut());
        match base.place(target) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return ForwardFuture::failed(GatewayError::BadRequest(format!("request target: {e}"))),
        }
        // HTTP/2 from the caller, HTTP/1.1 or 2 (ALPN) to the platform: the client picks.
        *req.version_mut() = http::Version::HTTP_11;
        ForwardFuture {
            inner: Some(client.request(req)),
            error: None,
            start: Instant::now(),
            call: Some(call),
        }
    }
}

/// The future of [`Forward`].
pub struct ForwardFuture {
    inner: Option<crate::upstream::ResponseFuture>,
    error: Option<GatewayError>,
    start: Instant,
    call: Option<Call>,
}

impl ForwardFuture {
    fn failed(e: GatewayError) -> Self {
        ForwardFuture {
            inner: None,
            error: Some(e),
            start: Instant::now(),
            call: None,
        }
    }
}

impl Future for ForwardFuture {
    type Output = Result<Response<UpstreamBody>, GatewayError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(self.error.take().expect("polled after completion")));
        };
        let mut resp = std::task::ready!(inner.as_mut().poll(cx)).map_err(GatewayError::from)?;
        if let Some(call) = self.call.as_ref() {
            call.set_upstream_status(resp.status().as_u16());
            if let Some(m) = call.route_metrics() {
                m.upstream.observe(self.start.elapsed().as_secs_f64());
            }
        }
        headers::strip_response(resp.headers_mut());
        Poll::Ready(Ok(resp))
    }
}
