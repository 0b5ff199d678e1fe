//! Which route a request takes, whether its caller may take it, and what it needs.
//!
//! Routes match in file order on method and path (the path [`super::EdgeLayer`] already checked
//! is canonical). Then:
//!
//! - the caller [`super::AuthenticateLayer`] found must be allowed the route: 403
//!   `caller_forbidden`; no route: 404 `no_route`;
//! - a declared body over `max_body_bytes`: 413 at once, before any byte is read;
//! - the token the route's class needs, keyed by app (and open_id, and biz call), goes in the
//!   request's extensions as a [`TokenFor`] for [`super::AttachTokenLayer`] (a user or biz token
//!   already in the cache, found from the request's parts without building its key: as a
//!   [`Found`]); a user or biz route without its open_id: 400 `open_id_missing`, given twice
//!   (or under a lookalike name): 400; with `open_id = "form:NAME"` the user is known only once
//!   the form body is in: a [`FormOpenId`] goes in the extensions instead, for
//!   [`super::KeepBodyLayer`];
//! - every credential the caller sent is stripped (its gateway key, any `access-token` header
//!   or `access_token` parameter in any spelling a lenient server reads as one, and the route's
//!   own token header for `inject = "header:NAME"`), with hop-by-hop headers and `Host`.

use super::{headers, Attached, Call, Checked, Found, TokenFor};
use crate::config::TokenKind;
use crate::error::GatewayError;
use crate::route::{OpenIdSource, Route};
use crate::runtime::Runtime;
use crate::token::{KeyRef, Token, TokenKey, Tokens};
use http::{header, Request};
use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Wraps a service in [`Routing`].
#[derive(Clone, Default)]
pub struct RoutingLayer {
    tokens: Option<Arc<Tokens>>,
}

impl RoutingLayer {
    /// A user or biz route's token is looked up in `tokens` from the request's parts: on a hit
    /// the key is the cache's own copy and the token goes on as a [`Found`], so a hit allocates
    /// nothing; on a miss (and without the cache: [`RoutingLayer::default`]) the key is built.
    pub fn new(tokens: Arc<Tokens>) -> Self {
        RoutingLayer { tokens: Some(tokens) }
    }
}

impl std::fmt::Debug for RoutingLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingLayer").finish_non_exhaustive()
    }
}

impl<S> tower::Layer<S> for RoutingLayer {
    type Service = Routing<S>;

    fn layer(&self, inner: S) -> Routing<S> {
        Routing {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// See the [module docs](self).
#[derive(Clone)]
pub struct Routing<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Routing<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The future of [`Routing`].
pub type RoutingFuture<F, T> = Checked<F, T>;

impl<S, B, RB> tower::Service<Request<B>> for Routing<S>
where
    S: tower::Service<Request<B>, Response = http::Response<crate::body::ProxyBody<RB>>>,
    S::Error: Into<GatewayError>,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = RoutingFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let call = match Call::of(&req) {
            Ok(s) => s.clone(),
            Err(e) => return Checked::refused(e),
        };
        match prepare(&call, self.tokens.as_ref(), &mut req) {
            Ok(Step::Forward) => Checked::inner(self.inner.call(req)),
            Ok(Step::Placeholder) => Checked::answered(placeholder(req.uri().path())),
            Err(e) => Checked::refused(e),
        }
    }
}

/// What a routed request does next.
enum Step {
    /// On to the platform.
    Forward,
    /// Answered here with a placeholder token (`token = "placeholder"`).
    Placeholder,
}

/// The fixed token a `token = "placeholder"` route hands out; API routes replace it (wherever
/// the SDK attaches it) with the real token.
pub const PLACEHOLDER_TOKEN: &str = "placeholder.douyin-gateway.replaced-on-every-call";

/// How long an SDK may cache the placeholder: 30 days (it never stops working).
const PLACEHOLDER_EXPIRES_IN: u64 = 30 * 24 * 3600;

/// A token endpoint's answer with the placeholder, in that endpoint's envelope: the mini-app
/// `err_no`/`data` one for `…/apps/…/token`, the oauth `data`/`message` one otherwise.
fn placeholder<RB>(path: &str) -> http::Response<crate::body::ProxyBody<RB>> {
    let body = if path.contains("/apps/") {
        serde_json::json!({"err_no": 0, "err_tips": "success",
            "data": {"access_token": PLACEHOLDER_TOKEN, "expires_in": PLACEHOLDER_EXPIRES_IN}})
    } else {
        serde_json::json!({"data": {"access_token": PLACEHOLDER_TOKEN, "description": "", "error_code": 0,
            "expires_in": PLACEHOLDER_EXPIRES_IN}, "message": "success"})
    };
    crate::error::json_response(http::StatusCode::OK, &body)
}

fn prepare<B>(call: &Call, keys: Option<&Arc<Tokens>>, req: &mut Request<B>) -> Result<Step, GatewayError> {
    let rt = call.runtime();
    let route = rt
        .routes
        .find(req.method(), req.uri().path())
        .ok_or_else(|| GatewayError::NoRoute {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
        })?;
    call.set_route(route.index);
    let Some(who) = call.caller() else {
        tracing::error!("the routing layer ran without the authenticate layer outside it");
        return Err(GatewayError::Internal);
    };
    let identity = rt.callers.identity(who);
    if !identity.may_use(route.index) {
        return Err(GatewayError::CallerForbidden {
            caller: identity.name().to_owned(),
            route: route.name.to_string(),
        });
    }
    if route.token == TokenKind::Placeholder {
        // An SDK's own token request: never sent on, its credentials never read.
        return Ok(Step::Placeholder);
    }
    let max = rt.config.server.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(GatewayError::BodyTooLarge(max));
    }
    let mut found = None;
    let key = match route.open_id {
        OpenIdSource::Form { .. } if matches!(route.token, TokenKind::User | TokenKind::Biz) => {
            req.extensions_mut().insert(FormOpenId(route.index));
            None
        }
        _ => token_key(rt, (keys, &mut found), route, req.uri(), req.headers(), None)?,
    };
    if let Some(OpenIdSource::Header(h)) = &route.authorizer_from {
        // The gateway's own routing header: the platform never sees it.
        req.headers_mut().remove(h);
    }
    headers::strip_request(req.headers_mut());
    if let crate::config::Inject::HeaderNamed(name) = &route.inject {
        // The token goes in this header: the caller's own, in any spelling read as it, is dropped.
        headers::strip_named(req.headers_mut(), name);
    }
    if let Some(q) = req.uri().query() {
        let kept = match headers::rewrite_query(Some(q), None) {
            Some(Cow::Borrowed(_)) => None,
            // The caller's query carried a credential (or was empty): forward it without.
            other => Some(other.map(Cow::into_owned)),
        };
        if let Some(kept) = kept {
            *req.uri_mut() = headers::with_query(req.uri(), kept.as_deref())
                .map_err(|e| GatewayError::BadRequest(format!("request target: {e}")))?;
        }
    }
    if route.token == TokenKind::AppSecret {
        req.extensions_mut().insert(super::attach::AppSecretFor(route.app));
    }
    if let Some(key) = key {
        let need = TokenFor {
            key,
            inject: route.inject.clone(),
        };
        match found {
            Some(token) => req.extensions_mut().insert(Found(Attached { need, token })).map(drop),
            None => req.extensions_mut().insert(need).map(drop),
        };
    }
    Ok(Step::Forward)
}

/// A user or biz route's request whose open_id is a form field (`open_id = "form:NAME"`): the
/// route, by index. [`super::KeepBodyLayer`] reads the field from the body and puts the
/// [`TokenFor`] in its place ([`token_for_form`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormOpenId(pub usize);

/// The token of a `form:NAME` route's request, from its form body (cleaned of credentials).
pub fn token_for_form(
    rt: &Runtime,
    route: usize,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<TokenFor, GatewayError> {
    let route = rt.routes.get(route).ok_or(GatewayError::Internal)?;
    let key = token_key(rt, (None, &mut None), route, &parts.uri, &parts.headers, Some(body))?
        .ok_or(GatewayError::Internal)?;
    Ok(TokenFor {
        key,
        inject: route.inject.clone(),
    })
}

/// The token a route needs for this request, or `None` for `token = "none"`; `form` is the form
/// body, once read, for a `form:NAME` route. A user or biz token is looked up in `keys.0` (the
/// token cache): on a hit the key is the cache's copy and the token goes in `keys.1`.
fn token_key(
    rt: &Runtime,
    keys: (Option<&Arc<Tokens>>, &mut Option<Arc<Token>>),
    route: &Route,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    form: Option<&[u8]>,
) -> Result<Option<TokenKey>, GatewayError> {
    let app = || &rt.apps[route.app];
    let open_id = || {
        match form {
            Some(body) => route.open_id.extract_form(body),
            None => route.open_id.extract(uri, headers),
        }
        .map_err(GatewayError::BadRequest)?
        .ok_or_else(|| GatewayError::OpenIdMissing(route.open_id.describe()))
    };
    Ok(match route.token {
        TokenKind::None | TokenKind::AppSecret | TokenKind::Placeholder => None,
        TokenKind::Client => Some(app().client_key.clone()),
        TokenKind::MiniApp => Some(app().mini_app_key.clone()),
        TokenKind::Component => route.provider.clone(),
        TokenKind::Authorizer => {
            let (Some(provider), Some(from)) = (&route.provider, &route.authorizer_from) else {
                return Err(GatewayError::Internal);
            };
            let appid = from
                .extract(uri, headers)
                .map_err(|e| GatewayError::BadRequest(e.replace("open_id", "authorizer appid")))?
                .ok_or_else(|| {
                    GatewayError::BadRequest(format!(
                        "this route needs the merchant app's appid in the {}",
                        from.describe()
                    ))
                })?;
            if !crate::vocab::valid_appid(&appid) {
                return Err(GatewayError::BadRequest(
                    "the merchant app's appid must be 1 to 64 letters, digits, _ or -".into(),
                ));
            }
            Some(key_of(keys, &provider.app, KeyRef::authorizer(&provider.app, &appid)))
        }
        TokenKind::User => {
            let open_id = open_id()?;
            Some(key_of(keys, &app().name, KeyRef::user(&app().name, &open_id)))
        }
        TokenKind::Biz => {
            let open_id = open_id()?;
            let scope = route.biz_scope.as_deref().unwrap_or("");
            Some(key_of(keys, &app().name, KeyRef::biz(&app().name, &open_id, scope)))
        }
    })
}

fn key_of(
    (tokens, found): (Option<&Arc<Tokens>>, &mut Option<Arc<Token>>),
    app: &Arc<str>,
    parts: KeyRef<'_>,
) -> TokenKey {
    match tokens.and_then(|t| t.cached_by(parts)) {
        Some((key, token)) => {
            *found = Some(token);
            key
        }
        None => parts.to_key(Arc::clone(app)),
    }
}
