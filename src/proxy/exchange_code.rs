//! `POST /_gateway/exchange_code`: authorization codes the app received itself.
//!
//! A mini-app's `tt.showDouyinOpenAuth` and the mobile SDKs deliver the code to the app, not to a
//! `redirect_uri`; exchanging it needs the client secret, which the app's backend should not
//! hold. A caller whose `[[callers]]` entry has `exchange_codes = true` posts
//! `{"app": NAME, "code": CODE}`; the gateway exchanges the code (`/oauth/access_token/`), stores
//! the user's tokens and answers `{"open_id", "scope", "expires_at", "refresh_expires_at"}`,
//! never a token. A code the platform refuses: 400 `code_refused` with the platform's code and
//! description; a platform out of reach: 502; nothing is stored either way. Other paths pass on.

use super::{Call, Checked};
use crate::body::{read_up_to, BoxError, ProxyBody, Read, ReadError};
use crate::error::GatewayError;
use crate::state::Shared;
use crate::token::{CodeFailure, TokenError};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The path this layer answers.
pub const PATH: &str = "/_gateway/exchange_code";

/// Request bodies are one small JSON object.
const MAX_BODY: usize = 16 * 1024;

/// Wraps a service in [`ExchangeCode`].
#[derive(Clone)]
pub struct ExchangeCodeLayer {
    shared: Arc<Shared>,
}

impl ExchangeCodeLayer {
    /// Exchanges codes through `shared`'s token cache and store.
    pub fn new(shared: Arc<Shared>) -> Self {
        ExchangeCodeLayer { shared }
    }
}

impl<S> tower::Layer<S> for ExchangeCodeLayer {
    type Service = ExchangeCode<S>;

    fn layer(&self, inner: S) -> ExchangeCode<S> {
        ExchangeCode {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// See the [module docs](self).
#[derive(Clone)]
pub struct ExchangeCode<S> {
    inner: S,
    shared: Arc<Shared>,
}

type Answer<RB> = Result<Response<ProxyBody<RB>>, GatewayError>;

/// The future of [`ExchangeCode`]: the inner service's, or (on its own path, rare) a boxed
/// exchange.
pub type ExchangeCodeFuture<F, RB> =
    futures_util::future::Either<Checked<F, Response<ProxyBody<RB>>>, Pin<Box<dyn Future<Output = Answer<RB>> + Send>>>;

impl<S, B, RB> tower::Service<Request<B>> for ExchangeCode<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody<RB>>>,
    S::Error: Into<GatewayError>,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<ProxyBody<RB>>;
    type Error = GatewayError;
    type Future = ExchangeCodeFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.uri().path() != PATH {
            return futures_util::future::Either::Left(Checked::inner(self.inner.call(req)));
        }
        let shared = Arc::clone(&self.shared);
        futures_util::future::Either::Right(Box::pin(exchange(shared, req)))
    }
}

async fn exchange<B, RB>(shared: Arc<Shared>, req: Request<B>) -> Answer<RB>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let call = Call::of(&req)?.clone();
    call.set_exchange();
    if req.method() != Method::POST {
        return Err(GatewayError::BadRequest(format!("{PATH} takes POST")));
    }
    let rt = call.runtime();
    let Some(who) = call.caller() else {
        tracing::error!("the code exchange ran without the authenticate layer outside it");
        return Err(GatewayError::Internal);
    };
    let identity = rt.callers.identity(who);
    if !identity.may_exchange_codes() {
        return Err(GatewayError::CallerForbidden {
            caller: identity.name().to_owned(),
            route: "exchange_code (set exchange_codes = true on the caller)".into(),
        });
    }
    let stall = std::time::Duration::from_millis(rt.config.server.body_read_timeout_ms);
    let body = match read_up_to(req.into_body(), MAX_BODY as u64, Some(stall))
        .with_progress(call.body_progress())
        .await
    {
        Ok(Read::Complete(b)) => b,
        Ok(Read::Partial(..)) => return Err(GatewayError::BodyTooLarge(MAX_BODY as u64)),
        Err(ReadError::Stalled(ms)) => return Err(GatewayError::ClientTimeout(ms)),
        Err(ReadError::Body(e)) => return Err(GatewayError::BadRequest(format!("could not read the body: {e}"))),
    };
    #[derive(serde::Deserialize)]
    struct Ask {
        app: String,
        code: String,
    }
    let ask: Ask = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::BadRequest(format!("send {{\"app\": NAME, \"code\": CODE}}: {e}")))?;
    if ask.code.is_empty() {
        return Err(GatewayError::BadRequest("the code is empty".into()));
    }
    let Some(app) = rt.apps.iter().find(|a| *a.name == *ask.app) else {
        return Err(GatewayError::BadRequest(format!("no [[apps]] named {:?}", ask.app)));
    };
    let (open_id, token) = match shared.tokens.authorize_with_code(&app.name, &ask.code).await {
        Ok(x) => x,
        Err(CodeFailure::Exchange(e)) => {
            tracing::info!(app = %app.name, caller = identity.name(), "authorization code exchange failed: {e}");
            return Err(match e {
                TokenError::Refused { code, description } => GatewayError::CodeRefused { code, description },
                e if e.platform_unreachable() => GatewayError::UpstreamUnavailable(e.to_string()),
                other => GatewayError::TokenUnavailable(other.to_string()),
            });
        }
        Err(CodeFailure::Store(e)) => return Err(GatewayError::TokenUnavailable(e.to_string())),
    };
    tracing::info!(target: "audit", action = "exchange_code", app = %app.name, open_id = %open_id,
        caller = identity.name(), "user authorized the app (code exchanged by the gateway)");
    let grant = token.grant.as_deref();
    let answer = serde_json::json!({
        "open_id": open_id,
        "scope": grant.map(|g| &*g.scope),
        "expires_at": token.expires_unix,
        "refresh_expires_at": grant.map(|g| g.refresh_expires_unix),
    });
    Ok(crate::error::json_response(http::StatusCode::OK, &answer))
}
