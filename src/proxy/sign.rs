//! Signed calls (`sign = "byte_authorization"`): the request signed with the app's RSA key as it
//! goes out, the answer checked with the platform's key for the app as it comes back.
//!
//! - The signature covers the exact bytes forwarded: method, path and query as sent, and the body
//!   after every rewrite (the token set in a JSON or form body), with a fresh 32-character nonce
//!   and the current Unix time ([`crate::signature`]). It sits inside [`super::RetryLayer`], so a
//!   replay after a refresh (a new token in the body) is signed again. A `Byte-Authorization`
//!   the caller sent, in any spelling, is removed: only the gateway signs.
//! - When the route verifies (`verify_response`, by default when the app has a platform public
//!   key), an answer that carries a `Byte-Signature`, and every 2xx, is read whole (at most
//!   [`VERIFY_LIMIT`]) and passed on only when `Byte-Signature` verifies over
//!   `Byte-Timestamp\nByte-Nonce-Str\nBODY\n`: else 502 `bad_upstream_signature`, its body
//!   dropped, logged with the platform's `X-Tt-Logid`. An unsigned 5xx is what the platform
//!   answers when it could not sign, "to be treated as a timeout": 504 `upstream_timeout`. An
//!   unsigned 4xx (400 bad parameters, 401 signature refused) is the platform's refusal of the
//!   call and passes on as it is.
//!
//! The body must be held whole to be signed: [`super::KeepBodyLayer`] reads a signing route's
//! body whole, up to `retry_buffer_bytes` (413 `body_too_large` past it).

use super::attach::TokenBody;
use super::{headers, Call};
use crate::body::{read_up_to, BoxError, ProxyBody, Read, ReadError, ReadUpTo};
use crate::error::GatewayError;
use crate::signature::{self, BYTE_AUTHORIZATION, BYTE_NONCE, BYTE_SIGNATURE, BYTE_TIMESTAMP};
use bytes::Bytes;
use http::{header, response, HeaderValue, Request, Response};
use http_body::Body;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A signed answer is read whole to be verified, up to this size: the trade APIs' answers are a
/// few KiB (an order with its items); a larger one is refused rather than held.
pub const VERIFY_LIMIT: u64 = 1024 * 1024;

/// The platform's id of a request, in its answers' headers (what its support asks for).
pub static X_TT_LOGID: http::HeaderName = http::HeaderName::from_static("x-tt-logid");

/// Wraps a service in [`Sign`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SignLayer;

impl<S> tower::Layer<S> for SignLayer {
    type Service = Sign<S>;

    fn layer(&self, inner: S) -> Sign<S> {
        Sign { inner }
    }
}

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Sign<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<Request<B>> for Sign<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<GatewayError>,
    B: TokenBody,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody<RB>>;
    type Error = GatewayError;
    type Future = SignFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let signing = req.extensions().get::<Call>().and_then(|call| {
            let route = call.runtime().routes.get(call.route()?)?;
            route.sign.then(|| (call.clone(), route.app, route.verify_response))
        });
        let Some((call, app, verify)) = signing else {
            return SignFuture::Passing {
                future: self.inner.call(req),
            };
        };
        if let Err(error) = sign(&call, app, &mut req) {
            return SignFuture::Failed { error: Some(error) };
        }
        SignFuture::Signed {
            future: self.inner.call(req),
            check: verify.then_some(Check { call, app }),
        }
    }
}

/// Signs `req` now with the key of app `app` (by position), replacing any signature it carries.
fn sign<B: TokenBody>(call: &Call, app: usize, req: &mut Request<B>) -> Result<(), GatewayError> {
    let rt = call.runtime();
    let app = rt.apps.get(app).ok_or(GatewayError::Internal)?;
    let Some(key) = app.signing_key.as_deref() else {
        // `check` refuses such a route; a reload that removed the key is refused too.
        tracing::error!(app = %app.name, "a signing route's app has no signing key");
        return Err(GatewayError::Internal);
    };
    headers::strip_named(req.headers_mut(), &BYTE_AUTHORIZATION);
    let body = req
        .body()
        .whole()
        .ok_or(GatewayError::SignedBodyTooLarge(rt.config.server.retry_buffer_bytes))?;
    let uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let value = signature::byte_authorization(
        key,
        &app.platform_key,
        &app.signing_key_version,
        req.method().as_str(),
        uri,
        body,
        now,
        &signature::nonce(),
    );
    let value = HeaderValue::from_str(&value).map_err(|_| GatewayError::Internal)?;
    req.headers_mut().insert(&BYTE_AUTHORIZATION, value);
    // The signature covers the body as the platform sends it: ask for it uncompressed.
    req.headers_mut().remove(header::ACCEPT_ENCODING);
    app.signatures.signed.inc();
    Ok(())
}

/// What verifying an answer needs: the request's config and the app, by position.
pub struct Check {
    call: Call,
    app: usize,
}

impl Check {
    fn app(&self) -> Option<&crate::runtime::App> {
        self.call.runtime().apps.get(self.app)
    }

    fn route(&self) -> &str {
        let rt = self.call.runtime();
        self.call
            .route()
            .and_then(|i| rt.routes.get(i))
            .map_or("-", |r| &r.name)
    }

    /// The answer, refused: counted and logged with the platform's log id, never a key.
    fn refuse(&self, parts: &response::Parts, error: GatewayError) -> GatewayError {
        let logid = parts
            .headers
            .get(&X_TT_LOGID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let app = self.app().map_or("-", |a| &a.name);
        if let Some(a) = self.app() {
            a.signatures.refused.inc();
        }
        tracing::warn!(
            route = self.route(),
            app,
            x_tt_logid = logid,
            status = parts.status.as_u16(),
            "signed call: {error}"
        );
        error
    }

    /// Whether `body` is what the platform signed, by the answer's `Byte-*` headers; `Err` says why not.
    fn verify(&self, parts: &response::Parts, body: &[u8]) -> Result<(), String> {
        let key = self
            .app()
            .and_then(|a| a.platform_public_key.as_ref())
            .ok_or("the app has no platform public key")?;
        let h = |name: &http::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(timestamp), Some(nonce), Some(sig)) = (h(&BYTE_TIMESTAMP), h(&BYTE_NONCE), h(&BYTE_SIGNATURE)) else {
            return Err("Byte-Timestamp, Byte-Nonce-Str or Byte-Signature missing".into());
        };
        if !key.verify(&signature::answer_message(timestamp, nonce, body), sig) {
            return Err("Byte-Signature does not verify with the app's platform public key".into());
        }
        if let Some(a) = self.app() {
            a.signatures.verified.inc();
        }
        Ok(())
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Sign`].
    #[project = SignProj]
    #[allow(missing_docs)] // the variants are documented; their fields are the state they name
    pub enum SignFuture<F, RB> {
        /// Not a signing route: the answer passes through.
        Passing { #[pin] future: F },
        /// Signed; `check` when the answer is to be verified.
        Signed { #[pin] future: F, check: Option<Check> },
        /// Reading a signed answer to verify it.
        Reading { #[pin] read: ReadUpTo<RB>, parts: Option<response::Parts>, check: Option<Check> },
        /// Refused.
        Failed { error: Option<GatewayError> },
    }
}

impl<F, RB, E> Future for SignFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<GatewayError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ProxyBody<RB>>, GatewayError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                SignProj::Failed { error } => return Poll::Ready(Err(error.take().expect("polled after completion"))),
                SignProj::Passing { future } => {
                    let resp = std::task::ready!(future.poll(cx)).map_err(Into::into)?;
                    return Poll::Ready(Ok(resp.map(|b| ProxyBody::stream(None, b, u64::MAX))));
                }
                SignProj::Signed { future, check } => {
                    let resp = std::task::ready!(future.poll(cx)).map_err(Into::into)?;
                    let (parts, body) = resp.into_parts();
                    let status = parts.status;
                    let signed = parts.headers.contains_key(&BYTE_SIGNATURE);
                    match check.take() {
                        Some(check) if !signed && status.is_server_error() => {
                            let e = GatewayError::UpstreamUnsigned(status.as_u16());
                            return Poll::Ready(Err(check.refuse(&parts, e)));
                        }
                        Some(check) if signed || status.is_success() => SignFuture::Reading {
                            read: read_up_to(body, VERIFY_LIMIT, None),
                            parts: Some(parts),
                            check: Some(check),
                        },
                        _ => {
                            let body = ProxyBody::stream(None, body, u64::MAX);
                            return Poll::Ready(Ok(Response::from_parts(parts, body)));
                        }
                    }
                }
                SignProj::Reading { read, parts, check } => {
                    let read = std::task::ready!(read.poll(cx));
                    let (parts, check) = (parts.take().expect("once"), check.take().expect("once"));
                    let body = match read {
                        Ok(Read::Complete(b)) => b,
                        Ok(Read::Partial(..)) => {
                            let why = format!("an answer over {VERIFY_LIMIT} bytes is not read to be verified");
                            return Poll::Ready(Err(check.refuse(&parts, GatewayError::BadUpstreamSignature(why))));
                        }
                        Err(ReadError::Body(e)) => {
                            return Poll::Ready(Err(GatewayError::UpstreamUnavailable(format!(
                                "reading the answer: {}",
                                crate::upstream::describe(&*e)
                            ))))
                        }
                        Err(ReadError::Stalled(_)) => unreachable!("no stall limit on answers"),
                    };
                    return Poll::Ready(match check.verify(&parts, &body) {
                        Ok(()) => Ok(Response::from_parts(parts, ProxyBody::full(body))),
                        Err(why) => Err(check.refuse(&parts, GatewayError::BadUpstreamSignature(why))),
                    });
                }
            };
            self.set(next);
        }
    }
}
