//! Attaches the token a request needs: on a cache hit synchronously, from the lock-free map,
//! without copying the token (its header value shares the token's bytes, made per call from
//! them); on a miss (or an expired token), after the one fetch in flight for it, however many calls wait.
//!
//! Which token: the [`TokenFor`] in the request's extensions ([`super::RoutingLayer`] puts it
//! there from the route, or a [`Found`] when it found the token already), else the layer's fixed
//! one ([`AttachTokenLayer::fixed`]); a request with none passes unchanged. Where: the `access-token` header (or another named one), an
//! `access_token` query parameter, or the `access_token` member of a JSON body or field of a form
//! body. The token attached is recorded as [`Attached`] for [`super::RetryLayer`].
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

mod json;

pub use json::{json_with, json_with_token};

use super::headers::{self, ACCESS_TOKEN};
use super::Call;
use crate::body::ProxyBody;
use crate::config::Inject;
use crate::error::GatewayError;
use crate::token::{Need, Token, TokenError, TokenKey, Tokens};
use bytes::Bytes;
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

/// A token [`super::RoutingLayer`] found in the cache with the key, in the same lookup (a user
/// or biz token: the key from the request's parts, without building it): attached as it is while
/// it lives, without a second lookup.
#[derive(Debug, Clone)]
pub struct Found(pub Attached);

/// A request body the token can be written into (`inject = "json_body"`): one held whole.
pub trait TokenBody: Sized {
    /// The bytes of a body held whole; `None` for a stream (or a body type that cannot say).
    fn whole(&self) -> Option<&[u8]>;
    /// A body of these bytes.
    fn from_bytes(b: Bytes) -> Self;
}

impl<B> TokenBody for ProxyBody<B> {
    fn whole(&self) -> Option<&[u8]> {
        match self {
            ProxyBody::Full(b) => Some(b.as_deref().unwrap_or_default()),
            ProxyBody::Stream(_) => None,
        }
    }
    fn from_bytes(b: Bytes) -> Self {
        ProxyBody::full(b)
    }
}

impl TokenBody for String {
    fn whole(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
    fn from_bytes(b: Bytes) -> Self {
        String::from_utf8_lossy(&b).into_owned()
    }
}

impl TokenBody for Bytes {
    fn whole(&self) -> Option<&[u8]> {
        Some(self)
    }
    fn from_bytes(b: Bytes) -> Self {
        b
    }
}

/// hyper-util's `Full` does not show its bytes: usable with every placement but `json_body`.
impl TokenBody for http_body_util::Full<Bytes> {
    fn whole(&self) -> Option<&[u8]> {
        None
    }
    fn from_bytes(b: Bytes) -> Self {
        http_body_util::Full::new(b)
    }
}

/// A `token = "app_secret"` route's request: the app (by position) whose `appid` and `secret`
/// go in the JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppSecretFor(pub usize);

/// Puts `token` in `req` where `inject` says, replacing any there. Answers must stay readable to
/// spot a token rejection, so compression is not offered upstream.
pub fn attach<B: TokenBody>(req: &mut Request<B>, token: &Token, inject: &Inject) -> Result<(), GatewayError> {
    match inject {
        Inject::Header => {
            req.headers_mut().insert(&ACCESS_TOKEN, token.header());
        }
        Inject::HeaderNamed(name) => {
            req.headers_mut().insert(name, token.header());
        }
        Inject::JsonBody => {
            let whole = req.body().whole().ok_or_else(|| {
                GatewayError::BadRequest(
                    "this route puts the token in the JSON body: the body must be at most retry_buffer_bytes".into(),
                )
            })?;
            let body = json_with_token(whole, token.value())?;
            req.headers_mut().insert(header::CONTENT_LENGTH, body.len().into());
            *req.body_mut() = B::from_bytes(body);
        }
        Inject::FormBody => {
            let whole = req.body().whole().ok_or_else(|| {
                GatewayError::BadRequest(
                    "this route puts the token in the form body: the body must be at most retry_buffer_bytes".into(),
                )
            })?;
            let body = super::form::with_token(whole, token.value());
            req.headers_mut().insert(header::CONTENT_LENGTH, body.len().into());
            *req.body_mut() = B::from_bytes(body);
        }
        Inject::Query => {
            let q = headers::rewrite_query(req.uri().query(), Some(token.value()));
            *req.uri_mut() = headers::with_query(req.uri(), q.as_deref())
                .map_err(|e| GatewayError::BadRequest(format!("request target: {e}")))?;
        }
        Inject::QueryNamed(name) => {
            let q = query_named(req.uri().query(), name, token.value());
            *req.uri_mut() = headers::with_query(req.uri(), Some(&q))
                .map_err(|e| GatewayError::BadRequest(format!("request target: {e}")))?;
        }
    }
    req.headers_mut().remove(header::ACCEPT_ENCODING);
    Ok(())
}

/// `query` without credentials and without any `name` parameter (compared as credential names
/// are: letters and digits, any case, so `Component-Access-Token` is dropped too), then
/// `name=token`.
fn query_named(query: Option<&str>, name: &str, token: &str) -> String {
    let skeleton: String = name
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect();
    let kept = headers::rewrite_query(query, None);
    let mut out: Vec<&str> = kept
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            !p.split(';')
                .any(|q| crate::canonical::field_is(q.split('=').next().unwrap_or("").as_bytes(), &skeleton))
        })
        .collect();
    let pair = format!(
        "{name}={}",
        form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
    );
    out.push(&pair);
    out.join("&")
}

/// Sets the app's `appid` (its client_key) and `secret` in a JSON body, replacing any the caller
/// sent. The body is never logged.
fn set_app_secret<B: TokenBody>(req: &mut Request<B>, app: usize) -> Result<(), GatewayError> {
    let call = Call::of(req)?.clone();
    let app = call.runtime().apps.get(app).ok_or(GatewayError::Internal)?;
    let whole = req.body().whole().ok_or_else(|| {
        GatewayError::BadRequest(
            "this route sets the app's credentials in the JSON body: at most retry_buffer_bytes".into(),
        )
    })?;
    let body = json_with(
        whole,
        &[("appid", &app.platform_key), ("secret", app.client_secret.expose())],
    )
    .map_err(|_| {
        GatewayError::BadRequest("this route sets the app's credentials in the JSON body: send a JSON object".into())
    })?;
    req.headers_mut().insert(header::CONTENT_LENGTH, body.len().into());
    *req.body_mut() = B::from_bytes(body);
    Ok(())
}

/// A token failure as the caller sees it: a user to send through authorization (with the app's
/// authorize URL when the route's app has one), a merchant app that must authorize its service
/// provider, or 503 `token_unavailable`.
pub fn token_error(call: Option<&Call>, class: crate::vocab::TokenClass, e: TokenError) -> GatewayError {
    if e.needs_authorization() && class == crate::vocab::TokenClass::Authorizer {
        return GatewayError::AuthorizerAuthorizationRequired(e.to_string());
    }
    if e.needs_authorization() {
        let authorize_url = call.and_then(|s| {
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

impl<S, B: TokenBody> tower::Service<Request<B>> for AttachToken<S>
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
        if let Some(AppSecretFor(app)) = req.extensions_mut().remove::<AppSecretFor>() {
            return match set_app_secret(&mut req, app) {
                Ok(()) => AttachFuture::Calling {
                    future: self.inner.call(req),
                },
                Err(error) => AttachFuture::Failed { error: Some(error) },
            };
        }
        let (need, hit) = match req.extensions_mut().remove::<Found>() {
            Some(Found(Attached { need, token })) if std::time::Instant::now() < token.expires_at() => {
                (need, Some(token))
            }
            // It expired while the body was read (it was counted a hit then): as any lookup.
            Some(Found(Attached { need, .. })) => {
                let hit = self.tokens.cached(&need.key);
                (need, hit)
            }
            None => {
                let Some(need) = req.extensions_mut().remove::<TokenFor>().or_else(|| self.fixed.clone()) else {
                    return AttachFuture::Calling {
                        future: self.inner.call(req),
                    };
                };
                let hit = self.tokens.cached(&need.key);
                (need, hit)
            }
        };
        if let Some(token) = hit {
            return match attach(&mut req, &token, &need.inject) {
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

impl<S, B: TokenBody> Future for AttachFuture<S, B>
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
                    let class = need.key.class;
                    match result.map_err(|e| token_error(req.extensions().get::<Call>(), class, e)) {
                        Ok(token) => match attach(&mut req, &token, &need.inject) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_replaces_the_callers_and_keeps_the_rest_byte_for_byte() {
        let once = json_with_token(br#"{"a":1,"access_token":"evil","b":[1, 2]}"#, "t1").unwrap();
        assert_eq!(&once[..], br#"{"a":1,"b":[1, 2],"access_token":"t1"}"#);
        let twice = json_with_token(&once, "t2").unwrap();
        assert_eq!(&twice[..], br#"{"a":1,"b":[1, 2],"access_token":"t2"}"#);
        let big = json_with_token(br#"{"n":123456789012345678901234567890,"s":"\u00e9\"q"}"#, "t").unwrap();
        assert_eq!(
            &big[..],
            br#"{"n":123456789012345678901234567890,"s":"\u00e9\"q","access_token":"t"}"#
        );
        assert_eq!(&json_with_token(b" {} ", "t").unwrap()[..], br#"{"access_token":"t"}"#);
        let lookalikes = br#"{"ACCESS_TOKEN":1,"a":2,"Access-Token":3,"accessToken":4,"access_tokens":5}"#;
        let cleaned = json_with_token(lookalikes, "t").unwrap();
        assert_eq!(&cleaned[..], br#"{"a":2,"access_tokens":5,"access_token":"t"}"#);
        let nested = json_with_token(br#"{"o":{"access_token":"inner"}}"#, "t").unwrap();
        assert_eq!(&nested[..], br#"{"o":{"access_token":"inner"},"access_token":"t"}"#);
        for bad in [&b"[1]"[..], b"", b"{", b"1", b"{} x"] {
            assert!(json_with_token(bad, "t").is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
