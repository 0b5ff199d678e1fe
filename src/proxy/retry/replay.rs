//! The replay: what can be sent again ([`Replay`]), and after a token rejection the one refresh
//! and the one replay with the new token.

use super::{inspectable, Answer, Rest, INSPECT_LIMIT};
use crate::body::{read_up_to, BoxError, ProxyBody, Read, ReadError};
use crate::error::GatewayError;
use crate::inspect;
use crate::proxy::attach::{attach, token_error};
use crate::proxy::Attached;
use crate::token::Need;
use crate::upstream::describe;
use bytes::Bytes;
use http::{response, Request, Response};
use http_body::Body;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tower::ServiceExt;

/// A request body that can be sent again: buffered bodies can, streams cannot.
pub trait Replay: Sized {
    /// A copy to send again, or `None` when this body can be sent only once.
    fn replay(&self) -> Option<Self>;
}

impl<B> Replay for ProxyBody<B> {
    fn replay(&self) -> Option<Self> {
        self.kept()
    }
}

impl<D: Clone> Replay for http_body_util::Full<D> {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> Replay for http_body_util::Empty<D> {
    fn replay(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

impl Replay for String {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl Replay for Bytes {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

/// The answer with the body as read, and its codes when read whole.
pub(super) fn answer<RB>(parts: response::Parts, read: Read<RB>) -> (Response<ProxyBody<RB>>, Option<inspect::Codes>) {
    match read {
        Read::Complete(b) => {
            let codes = inspect::codes(&b);
            (Response::from_parts(parts, ProxyBody::full(b)), codes)
        }
        Read::Partial(p, rest) => (
            Response::from_parts(parts, ProxyBody::stream(Some(p), rest, u64::MAX)),
            None,
        ),
    }
}

pub(super) fn unreadable(e: ReadError) -> GatewayError {
    match e {
        ReadError::Body(e) => GatewayError::UpstreamUnavailable(format!("reading the answer: {}", describe(&*e))),
        ReadError::Stalled(_) => unreachable!("no stall limit on answers"),
    }
}

/// After a rejection: the replay to run, or `Err` when the caller gets the rejection as it is.
#[allow(clippy::type_complexity)]
pub(super) fn rejected<S, B, RB>(
    rest: Rest<S, B>,
    code: i64,
) -> Result<Pin<Box<dyn Future<Output = Answer<RB>> + Send>>, ()>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<GatewayError>,
    B: crate::proxy::attach::TokenBody + Send + 'static,
    RB: Body<Data = Bytes> + Unpin + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let Rest {
        attached: Attached { need, token },
        replay,
        policy,
    } = rest;
    let key = need.key.clone();
    if policy.health.suspect(policy.route(), policy.caller()) {
        // This route's API rejected fresh tokens for this caller moments ago: this caller's
        // rejections fetch nothing now, and the token the other routes use stays.
        policy.metrics().inspect(|m| m.retry_suppressed.inc());
        return Err(());
    }
    policy.tokens.note_rejected(&key, &token);
    let Some((mut req, inner)) = replay else {
        // Too large to replay: the caller gets this answer, the next call a new token.
        policy.metrics().inspect(|m| m.retry_not_replayable.inc());
        let tokens = Arc::clone(&policy.tokens);
        let generation = token.generation;
        tokio::spawn(async move {
            let _ = tokens.obtain(&key, Need::Rejected(generation)).await;
        });
        return Err(());
    };
    tracing::info!(route = policy.route(), app = %key.app, class = key.class.as_str(), code,
        "platform rejected the token; refreshing and replaying once");
    Ok(Box::pin(async move {
        let fresh = match policy.tokens.obtain(&key, Need::Rejected(token.generation)).await {
            Ok(t) => t,
            Err(e) => {
                policy.metrics().inspect(|m| m.retry_token_unavailable.inc());
                return Err(token_error(policy.call.as_ref(), key.class, e));
            }
        };
        if let Some(call) = &policy.call {
            req.extensions_mut().insert(call.clone());
        }
        attach(&mut req, &fresh, &need.inject)?;
        let resp = inner.oneshot(req).await.map_err(Into::into)?;
        let (parts, body) = resp.into_parts();
        let (resp, codes) = if inspectable(&parts.headers) {
            let read = read_up_to(body, INSPECT_LIMIT, None).await.map_err(unreadable)?;
            answer(parts, read)
        } else {
            (
                Response::from_parts(parts, ProxyBody::stream(None, body, u64::MAX)),
                None,
            )
        };
        replayed(&policy, &key, fresh.generation, codes);
        Ok(resp)
    }))
}

/// What the replay's answer says of the route: accepted (trusted again), or the new token
/// rejected too (a strike against the route, for this caller).
fn replayed(policy: &super::Policy, key: &crate::token::TokenKey, generation: u32, codes: Option<inspect::Codes>) {
    let m = policy.metrics();
    let Some(code) = policy.rejected(codes) else {
        policy.accepted();
        m.inspect(|m| m.retry_ok.inc());
        return;
    };
    m.inspect(|m| m.retry_rejected.inc());
    m.inspect(|m| m.rejects_fresh.inc());
    let route = policy.route();
    match policy.health.rejected_fresh(route, policy.caller(), generation) {
        Some(pause) => {
            policy.tokens.announce(&crate::token::events::Event::RouteDistrusted {
                route,
                key,
                caller: policy.caller(),
                pause_s: pause.as_secs(),
            });
            tracing::warn!(route, app = %key.app, class = key.class.as_str(), code,
            pause_s = pause.as_secs(),
            "route {route} rejected two brand-new tokens in a row for this caller: its API does not take this \
             token class (check the route's `token =` and [token_errors]), or the caller's calls are malformed. \
             Its rejections for this caller fetch no new token for {} s; other routes and callers are unaffected",
            pause.as_secs())
        }
        None => tracing::warn!(route, app = %key.app, class = key.class.as_str(), code,
            "the platform rejected the new token too; passing its answer on"),
    }
}
