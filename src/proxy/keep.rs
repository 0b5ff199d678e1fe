//! The request body, kept for a replay when small.
//!
//! A token route's body up to `retry_buffer_bytes` is read whole first (waiting no longer than
//! `body_read_timeout_ms` in all: 408 `client_timeout`), so [`super::RetryLayer`] can send it again
//! after a token rejection. A larger one, and every body of a route without a token, streams
//! through as it comes, never held whole; past `max_body_bytes` it fails with 413. Form bodies
//! are read whole on every route and sent without caller credentials; multipart ones are
//! scanned for parts named like one ([`super::form`]).
//!
//! A route that writes the token into a form body (`inject = "form_body"`) or reads the user from
//! one (`open_id = "form:NAME"`) takes only an `application/x-www-form-urlencoded` body of at most
//! `retry_buffer_bytes` (else 400 `bad_request`, nothing sent); the user's [`TokenFor`] is set
//! here, from the field, once the body is in. A signing route's body is read whole too (it is
//! signed as sent: [`super::SignLayer`]): over `retry_buffer_bytes`, 413 `body_too_large`.
//!
//! Turns `Request<B>` into `Request<ProxyBody<B>>`.

use super::form::{self, Fields};
use super::routing::{token_for_form, FormOpenId};
use super::{Call, TokenFor};
use crate::body::{read_up_to, BoxError, Patience, Progress, ProxyBody, Read, ReadError, ReadUpTo};
use crate::config::Inject;
use crate::error::GatewayError;
use bytes::Bytes;
use http::{header, request::Parts, Request};
use http_body::Body;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Wraps a service in [`KeepBody`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepBodyLayer;

impl<S> tower::Layer<S> for KeepBodyLayer {
    type Service = KeepBody<S>;

    fn layer(&self, inner: S) -> KeepBody<S> {
        KeepBody { inner }
    }
}

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct KeepBody<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for KeepBody<S>
where
    S: tower::Service<Request<ProxyBody<B>>> + Clone,
    S::Error: Into<GatewayError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = KeepFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (keep, max, stall, progress, signs) = match Call::of(&req) {
            Ok(s) => {
                let server = &s.runtime().config.server;
                let route = s.route().and_then(|i| s.runtime().routes.get(i));
                (
                    server.retry_buffer_bytes,
                    server.max_body_bytes,
                    Duration::from_millis(server.body_read_timeout_ms),
                    s.body_progress(),
                    route.is_some_and(|r| r.sign),
                )
            }
            Err(e) => return KeepFuture::Failed { error: Some(e) },
        };
        let need = Need {
            form: req.extensions().get::<FormOpenId>().is_some()
                || req
                    .extensions()
                    .get::<TokenFor>()
                    .is_some_and(|t| t.inject == Inject::FormBody),
            sign: signs,
            keep,
        };
        let (mut parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let replayable = parts.extensions.get::<TokenFor>().is_some()
            || parts.extensions.get::<super::attach::AppSecretFor>().is_some();
        if body.is_end_stream() {
            (*progress).as_ref().complete();
            let fields = match need.form {
                true => form::fields(&parts.headers, keep).and_then(|f| need.takes(f)),
                false => Ok(Fields::Opaque),
            };
            return match fields.and_then(|f| complete(&mut parts, f, Bytes::new())) {
                Ok(empty) => KeepFuture::Calling {
                    future: self.inner.call(Request::from_parts(parts, empty)),
                },
                Err(e) => KeepFuture::Failed { error: Some(e) },
            };
        }
        // Form bodies are read whole on every route, multipart ones scanned (`super::form`).
        let fields = match form::fields(&parts.headers, keep).and_then(|f| need.takes(f)) {
            Ok(f) => f,
            Err(e) => return KeepFuture::Failed { error: Some(e) },
        };
        let whole = replayable || need.sign || matches!(fields, Fields::Form(_));
        if !whole || declared.is_some_and(|n| n > keep) {
            let scan = match need.too_large().map_or_else(|| form::stream_on(fields, None), Err) {
                Ok(s) => s,
                Err(e) => return KeepFuture::Failed { error: Some(e) },
            };
            let patience = Patience::new(stall, stall, Some(progress));
            let req = Request::from_parts(parts, ProxyBody::from_caller(None, body, max, patience).scanned(scan));
            return KeepFuture::Calling {
                future: self.inner.call(req),
            };
        }
        // The inner service is called once the body is in: take this (ready) one, leave a clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        KeepFuture::Reading {
            read: read_up_to(body, keep.min(max), Some(stall)).with_progress(Arc::clone(&progress)),
            progress: Some(progress),
            parts: Some(parts),
            inner: Some(inner),
            max,
            stall,
            fields: Some(fields),
            need,
        }
    }
}

/// What a route needs of the body beyond a replay.
#[derive(Debug, Clone, Copy)]
pub(super) struct Need {
    /// A form body (`inject = "form_body"`, `open_id = "form:NAME"`).
    form: bool,
    /// The body whole, to sign it.
    sign: bool,
    /// `retry_buffer_bytes`.
    keep: u64,
}

impl Need {
    /// The body's kind, refused when the route needs a form and this is not one.
    fn takes(self, fields: Fields) -> Result<Fields, GatewayError> {
        if self.form && !matches!(fields, Fields::Form(_)) {
            return Err(GatewayError::BadRequest(
                "this route puts the token in (or reads the open_id from) a form body: send \
                 Content-Type: application/x-www-form-urlencoded"
                    .into(),
            ));
        }
        Ok(fields)
    }

    /// The refusal of a body over `retry_buffer_bytes`, when this route cannot stream one.
    fn too_large(self) -> Option<GatewayError> {
        if self.form {
            Some(GatewayError::BadRequest(format!(
                "this route puts the token in (or reads the open_id from) the form body, read whole: at most \
                 retry_buffer_bytes ({})",
                self.keep
            )))
        } else if self.sign {
            Some(GatewayError::SignedBodyTooLarge(self.keep))
        } else {
            None
        }
    }
}

/// A body read whole, cleaned ([`form::clean_whole`]); a `form:NAME` route's token chosen from it.
fn complete<B>(parts: &mut Parts, fields: Fields, body: Bytes) -> Result<ProxyBody<B>, GatewayError> {
    let body = form::clean_whole(fields, &mut parts.headers, body)?;
    if let Some(FormOpenId(route)) = parts.extensions.remove::<FormOpenId>() {
        let call = parts.extensions.get::<Call>().ok_or(GatewayError::Internal)?.clone();
        let need = token_for_form(call.runtime(), route, parts, &body)?;
        parts.extensions.insert(need);
    }
    Ok(ProxyBody::full(body))
}

pin_project_lite::pin_project! {
    /// The future of [`KeepBody`]: reading a small body, then the inner service's future.
    #[project = KeepProj]
    #[allow(missing_docs)] // the variants are documented; their fields are the state they name
    pub enum KeepFuture<S: tower::Service<Request<ProxyBody<B>>>, B> {
        /// Reading the body.
        Reading {
            #[pin]
            read: ReadUpTo<B>,
            parts: Option<Parts>,
            inner: Option<S>,
            max: u64,
            stall: Duration,
            progress: Option<Progress>,
            fields: Option<Fields>,
            need: Need,
        },
        /// The inner service.
        Calling { #[pin] future: S::Future },
        /// Refused.
        Failed { error: Option<GatewayError> },
    }
}

impl<S, B> Future for KeepFuture<S, B>
where
    S: tower::Service<Request<ProxyBody<B>>>,
    S::Error: Into<GatewayError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, GatewayError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                KeepProj::Calling { future } => return future.poll(cx).map_err(Into::into),
                KeepProj::Failed { error } => return Poll::Ready(Err(error.take().expect("polled after completion"))),
                KeepProj::Reading {
                    mut read,
                    parts,
                    inner,
                    max,
                    stall,
                    progress,
                    fields,
                    need,
                } => {
                    let polled = std::task::ready!(read.as_mut().poll(cx));
                    let fields = fields.take().expect("once");
                    let body = match polled {
                        Ok(Read::Complete(b)) => match complete(parts.as_mut().expect("once"), fields, b) {
                            Ok(b) => b,
                            Err(e) => return Poll::Ready(Err(e)),
                        },
                        Ok(Read::Partial(p, _)) if p.len() as u64 > *max => {
                            return Poll::Ready(Err(GatewayError::BodyTooLarge(*max)))
                        }
                        Ok(Read::Partial(..)) if need.too_large().is_some() => {
                            return Poll::Ready(Err(need.too_large().expect("just seen")))
                        }
                        Ok(Read::Partial(p, rest)) => match form::stream_on(fields, Some(&p)) {
                            Ok(scan) => {
                                // The rest streams on, with what is left of the allowance.
                                let left = read.time_left().unwrap_or(*stall);
                                let patience = Patience::new(*stall, left, progress.take());
                                ProxyBody::from_caller(Some(p), rest, *max, patience).scanned(scan)
                            }
                            Err(e) => return Poll::Ready(Err(e)),
                        },
                        Err(ReadError::Stalled(ms)) => return Poll::Ready(Err(GatewayError::ClientTimeout(ms))),
                        Err(ReadError::Body(e)) => {
                            return Poll::Ready(Err(GatewayError::BadRequest(format!(
                                "could not read the request body: {e}"
                            ))))
                        }
                    };
                    let req = Request::from_parts(parts.take().expect("once"), body);
                    let mut inner = inner.take().expect("once");
                    KeepFuture::Calling {
                        future: inner.call(req),
                    }
                }
            };
            self.set(next);
        }
    }
}
