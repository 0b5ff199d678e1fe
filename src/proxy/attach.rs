//! Attaches the token a request needs: on a cache hit synchronously, from the lock-free map,
//! with no allocation for the token itself (its header value is built once, when fetched); on a
//! miss (or an expired token), after the one fetch in flight for it, however many calls wait.
//!
//! Which token: the [`TokenFor`] in the request's extensions ([`super::RoutingLayer`] puts it
//! there from the route), else the layer's fixed one ([`AttachTokenLayer::fixed`]); a request
//! with neither passes unchanged. Where: the `access-token` header, or an `access_token` query
//! parameter. The token attached is recorded as [`Attached`] for [`super::RetryLayer`].
//!
//! Used on its own, around any HTTP client service:
//!
//! ```no_run
//! # async fn run(tokens: std::sync::Arc<douyin_gateway::token::Tokens>,
//! #              client: impl tower::Service<http::Request<String>, Response = http::Response<String>,
//! #                                          Error = douyin_gateway::error::GatewayError> + Clone) {
//! use douyin_gateway::config::Inject;
//! use douyin_gateway::proxy::{AttachTokenLayer, TokenFor};
//! use douyin_gateway::token::TokenKey;
//! use tower::ServiceExt;
//!
//! let need = TokenFor { key: TokenKey::client("main".into()), inject: Inject::Header };
//! let svc = tower::ServiceBuilder::new()
//!     .layer(AttachTokenLayer::fixed(tokens, need))
//!     .service(client);
//! let req = http::Request::get("https://open.douyin.com/data/extern/billboard/hot_video/")
//!     .body(String::new())
//!     .unwrap();
//! let answer = svc.oneshot(req).await;
//! # }
//! ```

use super::headers::{self, ACCESS_TOKEN};
use super::Scope;
use crate::config::Inject;
use crate::error::GatewayError;
use crate::token::{Need, Token, TokenError, TokenKey, Tokens};
use http::{header, Request};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The token a request needs, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFor {
    /// Which token.
    pub key: TokenKey,
    /// Header or query.
    pub inject: Inject,
}

/// The token a request carries, as attached.
#[derive(Debug, Clone)]
pub struct Attached {
    /// Which token, and where it went.
    pub need: TokenFor,
    /// The token (its generation names it when the platform rejects it).
    pub token: Arc<Token>,
}

/// Puts `token` in `req` where `inject` says, replacing any there. Answers must stay readable to
/// spot a token rejection, so compression is not offered upstream.
pub fn attach<B>(req: &mut Request<B>, token: &Token, inject: Inject) -> Result<(), GatewayError> {
    match inject {
        Inject::Header => {
            req.headers_mut().insert(&ACCESS_TOKEN, token.header());
        }
        Inject::Query => {
            let q = headers::rewrite_query(req.uri().query(), Some(token.value()));
            *req.uri_mut() = headers::with_query(req.uri(), q.as_deref())
                .map_err(|e| GatewayError::BadRequest(format!("request target: {e}")))?;
        }
    }
    req.headers_mut().remove(header::ACCEPT_ENCODING);
    Ok(())
}

/// A token failure as the caller sees it: a user to send through authorization (with the app's
/// authorize URL when the route's app has one), or 503 `token_unavailable`.
pub fn token_error(scope: Option<&Scope>, e: TokenError) -> GatewayError {
    if e.needs_authorization() {
        let authorize_url = scope.and_then(|s| {
            let rt = s.runtime();
            let route = rt.routes.get(s.route()?)?;
            rt.apps.get(route.app)?.authorize_url.clone()
        });
        GatewayError::UserAuthorizationRequired {
            message: e.to_string(),
            authorize_url,
        }
    } else {
        GatewayError::TokenUnavailable(e.to_string())
    }
}

/// Wraps a service in [`AttachToken`].
#[derive(Clone)]
pub struct AttachTokenLayer {
    tokens: Arc<Tokens>,
    fixed: Option<TokenFor>,
}

impl AttachTokenLayer {
    /// Attaches the token each request's [`TokenFor`] names.
    pub fn new(tokens: Arc<Tokens>) -> Self {
        AttachTokenLayer { tokens, fixed: None }
    }

    /// Attaches `need` to every request that names no other.
    pub fn fixed(tokens: Arc<Tokens>, need: TokenFor) -> Self {
        AttachTokenLayer {
            tokens,
            fixed: Some(need),
        }
    }
}

impl<S> tower::Layer<S> for AttachTokenLayer {
    type Service = AttachToken<S>;

    fn layer(&self, inner: S) -> AttachToken<S> {
        AttachToken {
            inner,
            tokens: Arc::clone(&self.tokens),
            fixed: self.fixed.clone(),
        }
    }
}

/// See the [module docs](self).
#[derive(Clone)]
pub struct AttachToken<S> {
    inner: S,
    tokens: Arc<Tokens>,
    fixed: Option<TokenFor>,
}

impl<S, B> tower::Service<Request<B>> for AttachToken<S>
where
    S: tower::Service<Request<B>> + Clone,
    S::Error: Into<GatewayError>,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = AttachFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(need) = req.extensions_mut().remove::<TokenFor>().or_else(|| self.fixed.clone()) else {
            return AttachFuture::Calling {
                future: self.inner.call(req),
            };
        };
        if let Some(token) = self.tokens.cached(&need.key) {
            return match attach(&mut req, &token, need.inject) {
                Ok(()) => {
                    req.extensions_mut().insert(Attached { need, token });
                    AttachFuture::Calling {
                        future: self.inner.call(req),
                    }
                }
                Err(error) => AttachFuture::Failed { error: Some(error) },
            };
        }
        // A miss: wait on the one fetch in flight (boxed: the rare path).
        let tokens = Arc::clone(&self.tokens);
        let key = need.key.clone();
        let clone = self.inner.clone();
        AttachFuture::Obtaining {
            obtain: Box::pin(async move { tokens.obtain(&key, Need::Any).await }),
            req: Some(req),
            need: Some(need),
            inner: Some(std::mem::replace(&mut self.inner, clone)),
        }
    }
}

/// A token fetch in flight.
type Obtain = Pin<Box<dyn Future<Output = Result<Arc<Token>, TokenError>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of [`AttachToken`].
    #[project = AttachProj]
    #[allow(missing_docs)] // the variants are documented; their fields are the state they name
    pub enum AttachFuture<S: tower::Service<Request<B>>, B> {
        /// The inner service, the token attached (or none needed).
        Calling { #[pin] future: S::Future },
        /// Waiting on the token's fetch.
        Obtaining { obtain: Obtain, req: Option<Request<B>>, need: Option<TokenFor>, inner: Option<S> },
        /// Refused.
        Failed { error: Option<GatewayError> },
    }
}

impl<S, B> Future for AttachFuture<S, B>
where
    S: tower::Service<Request<B>>,
    S::Error: Into<GatewayError>,
{
    type Output = Result<S::Response, GatewayError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                AttachProj::Calling { future } => return future.poll(cx).map_err(Into::into),
                AttachProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")))
                }
                AttachProj::Obtaining {
                    obtain,
                    req,
                    need,
                    inner,
                } => {
                    let result = std::task::ready!(obtain.as_mut().poll(cx));
                    let mut req = req.take().expect("once");
                    let need = need.take().expect("once");
                    match result.map_err(|e| token_error(req.extensions().get::<Scope>(), e)) {
                        Ok(token) => match attach(&mut req, &token, need.inject) {
                            Ok(()) => {
                                req.extensions_mut().insert(Attached { need, token });
                                AttachFuture::Calling {
                                    future: inner.take().expect("once").call(req),
                                }
                            }
                            Err(error) => AttachFuture::Failed { error: Some(error) },
                        },
                        Err(error) => AttachFuture::Failed { error: Some(error) },
                    }
                }
            };
            self.set(next);
        }
    }
}
