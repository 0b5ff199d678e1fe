//! Refresh and retry once on a token rejection.
//!
//! The platform's answer to a request carrying a token ([`super::Attached`]) is inspected when it
//! can hold an error envelope: uncompressed, JSON or text, at most 64 KiB (a larger answer is a
//! success and streams through untouched). When its codes say the token was rejected (10008,
//! 2190002, 2190008, 28001003, 40004, 11016… or `[token_errors] refresh`; 10010, a dead
//! refresh_token, means the user must authorize again instead), the token is refreshed, once however
//! many calls saw it rejected, and the request replayed once with the new token, byte for byte,
//! from the kept body. Never more than one replay; never a replay of a body that streamed (the
//! caller gets the rejection, the next call the new token); never after anything went to the
//! caller.
//!
//! A route whose API rejected two brand-new tokens in a row for one caller is not taking this
//! token class, or that caller's calls are malformed: that caller's rejections then fetch nothing
//! for a while ([`super::health`]), so a misrouted API cannot burn the app's token budget or evict
//! the token other routes use, and one caller's bad calls do not stop refreshes for others.
//!
//! It goes inside [`super::AttachTokenLayer`] (it retries what that layer attached; a request
//! without a token passes through). The request body must be [`Replay`]able; the answer comes back as a [`ProxyBody`] over the
//! inner service's body. Used on its own, around any HTTP client (see `examples/own_client.rs`):
//!
//! ```no_run
//! # fn wrap<C>(tokens: std::sync::Arc<douyin_gateway::token::Tokens>, need: douyin_gateway::proxy::TokenFor, client: C)
//! #     -> impl Sized { tower::ServiceBuilder::new()
//! // Inside the token-attaching layer: it retries what that layer attached.
//! .layer(douyin_gateway::proxy::AttachTokenLayer::fixed(std::sync::Arc::clone(&tokens), need))
//! .layer(douyin_gateway::proxy::RetryLayer::new(tokens))
//! .service(client)
//! # }
//! ```

mod replay;

pub use replay::Replay;
use replay::{answer, rejected, unreadable};

use super::health::Health;
use super::{Attached, Call};
use crate::body::{read_up_to, BoxError, ProxyBody, ReadUpTo};
use crate::error::GatewayError;
use crate::inspect::{self, CodeTable, Context as Ctx, Verdict};
use crate::token::Tokens;
use bytes::Bytes;
use http::{header, response, Request, Response};
use http_body::Body;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Upstream answers up to this size are read and checked for a token rejection; the platform's
/// error envelopes are a few hundred bytes, so a larger answer is a success and streams through.
pub const INSPECT_LIMIT: u64 = 64 * 1024;

/// Wraps a service in [`Retry`].
#[derive(Clone)]
pub struct RetryLayer {
    tokens: Arc<Tokens>,
    codes: Arc<CodeTable>,
    health: Arc<Health>,
}

impl RetryLayer {
    /// Refreshes through `tokens`; the platform's documented rejection codes (a request handled
    /// by the gateway uses its config's `[token_errors]`).
    pub fn new(tokens: Arc<Tokens>) -> Self {
        RetryLayer {
            tokens,
            codes: Arc::new(CodeTable::default()),
            health: Arc::default(),
        }
    }

    /// Routes' health shared with other stacks (the gateway's proxy threads share one).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    /// Other rejection codes.
    pub fn with_codes(mut self, codes: CodeTable) -> Self {
        self.codes = Arc::new(codes);
        self
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            tokens: Arc::clone(&self.tokens),
            codes: Arc::clone(&self.codes),
            health: Arc::clone(&self.health),
        }
    }
}

/// See the [module docs](self).
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    tokens: Arc<Tokens>,
    codes: Arc<CodeTable>,
    health: Arc<Health>,
}

/// Whether an answer can be an error envelope worth reading.
pub(super) fn inspectable(h: &http::HeaderMap) -> bool {
    let encoded = h.get(header::CONTENT_ENCODING).is_some_and(|v| v != "identity");
    let ctype_ok = h.get(header::CONTENT_TYPE).is_none_or(|v| {
        let v = v.as_bytes();
        v.starts_with(b"text/") || v.windows(4).any(|w| w.eq_ignore_ascii_case(b"json"))
    });
    let small = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_none_or(|n| n <= INSPECT_LIMIT);
    !encoded && ctype_ok && small
}

impl<S, B, RB> tower::Service<Request<B>> for Retry<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<GatewayError>,
    B: Replay + super::attach::TokenBody + Send + 'static,
    RB: Body<Data = Bytes> + Unpin + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody<RB>>;
    type Error = GatewayError;
    type Future = RetryFuture<S, B, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(attached) = req.extensions_mut().remove::<Attached>() else {
            return RetryFuture::Passing {
                future: self.inner.call(req),
            };
        };
        // A copy to replay only when the body can be sent again: a streamed body keeps no headers.
        // The head: method and target (reference-counted) and the headers. In the gateway, not
        // the extensions: the one the layers inside read, the call, is kept in the policy anyway
        // and goes into the replay when there is one ([`replay::rejected`]). Around another
        // client (no call), the extensions are copied, whatever they are.
        let call = req.extensions().get::<Call>().cloned();
        let replay = req.body().replay().map(|body| {
            let mut r = Request::new(body);
            *r.method_mut() = req.method().clone();
            *r.uri_mut() = req.uri().clone();
            *r.version_mut() = req.version();
            *r.headers_mut() = req.headers().clone();
            if call.is_none() {
                *r.extensions_mut() = req.extensions().clone();
            }
            (r, self.inner.clone())
        });
        let policy = Policy {
            call,
            codes: Arc::clone(&self.codes),
            tokens: Arc::clone(&self.tokens),
            health: Arc::clone(&self.health),
        };
        let future = self.inner.call(req);
        RetryFuture::First {
            future,
            rest: Some(Rest {
                attached,
                replay,
                policy,
            }),
        }
    }
}

/// Where the codes, metrics, tokens and route health of a request's retry come from.
pub(super) struct Policy {
    call: Option<Call>,
    codes: Arc<CodeTable>,
    tokens: Arc<Tokens>,
    health: Arc<Health>,
}

impl Policy {
    fn codes(&self) -> &CodeTable {
        self.call.as_ref().map_or(&self.codes, |s| &s.runtime().codes)
    }

    fn metrics(&self) -> Option<&crate::metrics::RouteMetrics> {
        self.call.as_ref().and_then(Call::route_metrics)
    }

    /// The caller's name (`-`: anonymous, or the layer used without the gateway).
    fn caller(&self) -> &str {
        match self.call.as_ref().and_then(Call::caller) {
            Some(Some(i)) => self
                .call
                .as_ref()
                .map_or("-", |s| s.runtime().callers.identity(Some(i)).into_name()),
            _ => "-",
        }
    }

    /// The platform accepted the call: the route is trusted again for this caller.
    fn accepted(&self) {
        self.health.accepted(self.route(), self.caller());
    }

    fn route(&self) -> &str {
        self.call
            .as_ref()
            .and_then(|s| Some(&*s.runtime().routes.get(s.route()?)?.name))
            .unwrap_or("-")
    }

    fn rejected(&self, codes: Option<inspect::Codes>) -> Option<i64> {
        if let (Some(m), Some(c)) = (self.metrics(), codes.as_ref().and_then(inspect::Codes::first)) {
            m.platform_error(c);
        }
        match codes.map(|c| self.codes().verdict(&c, Ctx::Api)) {
            Some(Verdict::Refresh(code)) => Some(code),
            _ => None,
        }
    }
}

/// What the first attempt leaves for a possible replay.
pub(super) struct Rest<S, B> {
    attached: Attached,
    replay: Option<(Request<B>, S)>,
    policy: Policy,
}

pub(super) type Answer<RB> = Result<Response<ProxyBody<RB>>, GatewayError>;

pin_project_lite::pin_project! {
    /// The future of [`Retry`]: the first attempt and the reading of its answer are named states;
    /// only a replay (a rejected token, rare) is boxed.
    #[project = RetryProj]
    #[allow(missing_docs)] // the variants are documented; their fields are the state they name
    pub enum RetryFuture<S: tower::Service<Request<B>, Response = Response<RB>>, B, RB> {
        /// No token attached: the answer passes through.
        Passing { #[pin] future: S::Future },
        /// The first attempt.
        First { #[pin] future: S::Future, rest: Option<Rest<S, B>> },
        /// Reading a small answer to look for a rejection.
        Inspecting { #[pin] read: ReadUpTo<RB>, parts: Option<response::Parts>, rest: Option<Rest<S, B>> },
        /// Refreshing and replaying.
        Replaying { future: Pin<Box<dyn Future<Output = Answer<RB>> + Send>> },
    }
}

impl<S, B, RB> Future for RetryFuture<S, B, RB>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<GatewayError>,
    B: super::attach::TokenBody + Send + 'static,
    RB: Body<Data = Bytes> + Unpin + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Answer<RB>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                RetryProj::Passing { future } => {
                    let resp = std::task::ready!(future.poll(cx)).map_err(Into::into)?;
                    return Poll::Ready(Ok(resp.map(|b| ProxyBody::stream(None, b, u64::MAX))));
                }
                RetryProj::Replaying { future } => return future.as_mut().poll(cx),
                RetryProj::First { future, rest } => {
                    let resp = std::task::ready!(future.poll(cx)).map_err(Into::into)?;
                    let (parts, body) = resp.into_parts();
                    if !inspectable(&parts.headers) {
                        let rest = rest.take().expect("once");
                        rest.policy.accepted();
                        return Poll::Ready(Ok(Response::from_parts(parts, ProxyBody::stream(None, body, u64::MAX))));
                    }
                    RetryFuture::Inspecting {
                        read: read_up_to(body, INSPECT_LIMIT, None),
                        parts: Some(parts),
                        rest: rest.take(),
                    }
                }
                RetryProj::Inspecting { read, parts, rest } => {
                    let (resp, codes) = match std::task::ready!(read.poll(cx)) {
                        Ok(read) => answer(parts.take().expect("once"), read),
                        Err(e) => return Poll::Ready(Err(unreadable(e))),
                    };
                    let rest = rest.take().expect("once");
                    match rest.policy.rejected(codes) {
                        None => {
                            rest.policy.accepted();
                            return Poll::Ready(Ok(resp));
                        }
                        Some(code) => match rejected(rest, code) {
                            Ok(future) => RetryFuture::Replaying { future },
                            Err(()) => return Poll::Ready(Ok(resp)),
                        },
                    }
                }
            };
            self.set(next);
        }
    }
}
