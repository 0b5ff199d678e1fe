//! The gateway's own errors, and the one place they become HTTP responses:
//! the contract's JSON body plus an `x-gateway-error` header.

use crate::body::ProxyBody;
use http::{header, HeaderValue, Response, StatusCode};

/// Header naming the error code on every gateway error response.
pub static X_GATEWAY_ERROR: header::HeaderName = header::HeaderName::from_static("x-gateway-error");

/// An error the gateway answers itself (as opposed to one the platform sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// A user/biz route and no open_id where the route says.
    #[error("this route needs an open_id in {0}")]
    OpenIdMissing(String),
    /// Absolute-form URI, CONNECT, malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// No or wrong caller key.
    #[error("no valid caller key: send it as X-Gateway-Key or Authorization: Bearer")]
    CallerUnauthenticated,
    /// No tokens for this open_id, or its refresh_token expired or was revoked.
    #[error("{message}")]
    UserAuthorizationRequired {
        /// What happened.
        message: String,
        /// Where to send the user, when the app has a redirect_uri.
        authorize_url: Option<String>,
    },
    /// No grant for a merchant app, or it must authorize the service provider again.
    #[error("{0}")]
    AuthorizerAuthorizationRequired(String),
    /// The caller may not use this route.
    #[error("caller {caller:?} may not use route {route:?}")]
    CallerForbidden {
        /// Caller name.
        caller: String,
        /// Route name.
        route: String,
    },
    /// No route matches.
    #[error("no route matches {method} {path}")]
    NoRoute {
        /// The request's method.
        method: String,
        /// Path (without the query).
        path: String,
    },
    /// Body over `max_body_bytes`.
    #[error("request body is larger than max_body_bytes ({0})")]
    BodyTooLarge(u64),
    /// A form body over `retry_buffer_bytes`: it is read whole to remove caller credentials.
    #[error(
        "an application/x-www-form-urlencoded body is read whole to remove caller credentials, so it may be \
         at most retry_buffer_bytes ({0}); send a larger one as multipart/form-data"
    )]
    FormTooLarge(u64),
    /// A signing route's body over `retry_buffer_bytes`: it is signed whole, as sent.
    #[error("this route's requests are signed over their whole body, so it may be at most retry_buffer_bytes ({0})")]
    SignedBodyTooLarge(u64),
    /// A signed route's answer whose `Byte-Signature` is missing or does not verify with the
    /// app's platform public key: its body is not passed on.
    #[error("the platform's answer did not verify ({0}); its body is not passed on")]
    BadUpstreamSignature(String),
    /// A signed route's answer was an unsigned 5xx, which the platform says to treat as a timeout:
    /// whether the call took effect is unknown.
    #[error(
        "the platform answered HTTP {0} without a signature, which it says to treat as a timeout: whether the \
         call took effect is unknown (query before retrying)"
    )]
    UpstreamUnsigned(u16),
    /// Connect/IO failure to the upstream.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The token endpoint failed.
    #[error("token unavailable: {0}")]
    TokenUnavailable(String),
    /// `request_timeout_ms` passed.
    #[error("upstream did not answer within {0} ms")]
    UpstreamTimeout(u64),
    /// The caller's body was not in when a timer fired: `body_read_timeout_ms` (the whole
    /// body), or `request_timeout_ms` while the gateway was waiting on the body.
    #[error("the request body was not received within {0} ms: the caller sent it too slowly or stopped")]
    ClientTimeout(u64),
    /// The request head is larger than `max_header_bytes`.
    #[error("the request head is larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// `max_in_flight` requests are in progress.
    #[error("the gateway is at its limit of {0} requests in progress; retry shortly")]
    Overloaded(usize),
    /// The platform refused an authorization code (`POST /_gateway/exchange_code`): stale,
    /// already used, or another app's.
    #[error("the platform refused the code ({code}: {description})")]
    CodeRefused {
        /// The platform's error code.
        code: i64,
        /// Its description.
        description: String,
    },
    /// Too many requests: from one address, or code exchanges for the whole gateway. Answered
    /// with `Retry-After`.
    #[error("{what}: retry in {retry_after_secs} s")]
    RateLimited {
        /// Which limit, for a human.
        what: &'static str,
        /// Seconds until a retry can pass (`Retry-After`).
        retry_after_secs: u64,
    },
    /// A bug: the gateway failed while handling the request (extension of the contract).
    #[error("the gateway failed while handling this request; it has been logged")]
    Internal,
    /// Admin and public listeners: no such endpoint, or one that is off or served elsewhere.
    #[error("{0}")]
    NotFound(String),
    /// Admin API: the request names an app the config does not have.
    #[error("no [[apps]] named {0:?}")]
    UnknownApp(String),
    /// Admin API and status page: no admin key, or a wrong one. With `challenge` the answer asks a
    /// browser for HTTP Basic (`WWW-Authenticate`), as the status page does.
    #[error("send the admin key as X-Admin-Key{}", basic_hint(.challenge))]
    AdminUnauthenticated {
        /// Whether to ask for HTTP Basic.
        challenge: bool,
    },
    /// The token store failed or did not answer (readiness, deleting a user's tokens).
    #[error("{0}")]
    StoreUnavailable(String),
    /// A webhook event whose `X-Douyin-Signature` verifies under no configured app's key.
    #[error("missing or wrong X-Douyin-Signature")]
    BadSignature,
    /// Admin and public listeners: this many request bodies are being read already.
    #[error("this listener is reading {0} request bodies already; retry shortly")]
    BodyReadsFull(usize),
    /// Admin and public listeners: a request body over their small limit.
    #[error("admin bodies are at most {0} bytes")]
    AdminBodyTooLarge(usize),
    /// A `[[callbacks]]` request that did not verify (signature, timestamp or nonce): 401
    /// `bad_signature`, nothing forwarded.
    #[error("{0}")]
    CallbackRefused(String),
}

fn basic_hint(challenge: &bool) -> &'static str {
    if *challenge {
        ", or as the password of HTTP Basic (any user name)"
    } else {
        ""
    }
}

impl GatewayError {
    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            OpenIdMissing(_) | BadRequest(_) | CodeRefused { .. } => StatusCode::BAD_REQUEST,
            CallerUnauthenticated
            | UserAuthorizationRequired { .. }
            | AuthorizerAuthorizationRequired(_)
            | AdminUnauthenticated { .. }
            | BadSignature
            | CallbackRefused(_) => StatusCode::UNAUTHORIZED,
            CallerForbidden { .. } => StatusCode::FORBIDDEN,
            NoRoute { .. } | NotFound(_) | UnknownApp(_) => StatusCode::NOT_FOUND,
            BodyTooLarge(_) | FormTooLarge(_) | SignedBodyTooLarge(_) | AdminBodyTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            UpstreamUnavailable(_) | BadUpstreamSignature(_) => StatusCode::BAD_GATEWAY,
            TokenUnavailable(_) | StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamTimeout(_) | UpstreamUnsigned(_) => StatusCode::GATEWAY_TIMEOUT,
            ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Overloaded(_) | BodyReadsFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code of the contract.
    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            OpenIdMissing(_) => "open_id_missing",
            BadRequest(_) => "bad_request",
            CallerUnauthenticated => "caller_unauthenticated",
            UserAuthorizationRequired { .. } => "user_authorization_required",
            AuthorizerAuthorizationRequired(_) => "authorizer_authorization_required",
            CallerForbidden { .. } => "caller_forbidden",
            NoRoute { .. } => "no_route",
            BodyTooLarge(_) | FormTooLarge(_) | SignedBodyTooLarge(_) | AdminBodyTooLarge(_) => "body_too_large",
            UpstreamUnavailable(_) => "upstream_unavailable",
            BadUpstreamSignature(_) => "bad_upstream_signature",
            TokenUnavailable(_) => "token_unavailable",
            UpstreamTimeout(_) | UpstreamUnsigned(_) => "upstream_timeout",
            ClientTimeout(_) => "client_timeout",
            HeadersTooLarge(_) => "headers_too_large",
            Overloaded(_) | BodyReadsFull(_) => "overloaded",
            CodeRefused { .. } => "code_refused",
            RateLimited { .. } => "rate_limited",
            Internal => "internal_error",
            NotFound(_) => "not_found",
            UnknownApp(_) => "unknown_app",
            AdminUnauthenticated { .. } => "admin_unauthenticated",
            StoreUnavailable(_) => "store_unavailable",
            BadSignature | CallbackRefused(_) => "bad_signature",
        }
    }

    /// Renders the contract's JSON error response.
    pub fn into_response<B>(self, request_id: &str) -> Response<ProxyBody<B>> {
        // What a program may act on beyond the code: where to send the user, or the platform's
        // own code and description.
        let extra = match &self {
            GatewayError::UserAuthorizationRequired {
                authorize_url: Some(url),
                ..
            } => serde_json::json!({ "authorize_url": url }),
            GatewayError::CodeRefused { code, description } => {
                serde_json::json!({ "platform_code": code, "platform_description": description })
            }
            _ => serde_json::Value::Null,
        };
        let mut resp = render(self.status(), self.code(), &self.to_string(), Some(request_id), extra);
        self.add_headers(resp.headers_mut());
        resp
    }

    /// The headers this error's answer carries besides the body, whatever the body's form (the
    /// OAuth pages are HTML): `Retry-After` on 429, a Basic challenge on the status page's 401.
    pub fn add_headers(&self, headers: &mut http::HeaderMap) {
        match self {
            GatewayError::RateLimited { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            GatewayError::AdminUnauthenticated { challenge: true } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"douyin-gateway\", charset=\"UTF-8\""),
                );
            }
            _ => {}
        }
    }
}

/// The one renderer of the contract's error answer, for the proxy and the admin listener alike:
/// `{"gateway_error": {"code", "message", "request_id", …extra}}` with the `x-gateway-error`
/// header naming the code. `extra` (an object, or null) adds its members.
pub fn render<B>(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: Option<&str>,
    extra: serde_json::Value,
) -> Response<ProxyBody<B>> {
    let mut inner = serde_json::json!({ "code": code, "message": message });
    if let Some(rid) = request_id {
        inner["request_id"] = rid.into();
    }
    if let serde_json::Value::Object(extra) = extra {
        inner.as_object_mut().expect("an object").extend(extra);
    }
    let mut resp = json_response(status, &serde_json::json!({ "gateway_error": inner }));
    if let Ok(v) = HeaderValue::from_str(code) {
        resp.headers_mut().insert(&X_GATEWAY_ERROR, v);
    }
    resp
}

/// A JSON answer: the body and its `Content-Type`.
pub fn json_response<B>(status: StatusCode, v: &serde_json::Value) -> Response<ProxyBody<B>> {
    let mut resp = Response::new(ProxyBody::full(serde_json::to_vec(v).expect("json")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

impl From<hyper_util::client::legacy::Error> for GatewayError {
    /// A client error: see [`client_error`].
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        client_error(&e)
    }
}

impl From<crate::upstream::Error> for GatewayError {
    /// The proxy's client's error: see [`client_error`].
    fn from(e: crate::upstream::Error) -> Self {
        client_error(&e)
    }
}

/// A client error: the caller's body failing is the caller's fault (400, 408, 413), never the
/// upstream's; anything else is 502 with the chain of causes (hosts and OS errors, never headers
/// or bodies).
fn client_error(e: &(dyn std::error::Error + 'static)) -> GatewayError {
    use crate::body::{CallerBody, Stalled, TooLarge};
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(t) = s.downcast_ref::<TooLarge>() {
            return GatewayError::BodyTooLarge(t.0);
        }
        if let Some(b) = s.downcast_ref::<CallerBody>() {
            return GatewayError::BadRequest(b.to_string());
        }
        if let Some(t) = s.downcast_ref::<Stalled>() {
            return GatewayError::ClientTimeout(t.0);
        }
        if let Some(r) = s.downcast_ref::<crate::body::Refused>() {
            return GatewayError::BadRequest(r.to_string());
        }
        src = s.source();
    }
    GatewayError::UpstreamUnavailable(crate::upstream::describe(e))
}

impl From<std::convert::Infallible> for GatewayError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_contract_json() {
        let e = GatewayError::UserAuthorizationRequired {
            message: "no tokens".into(),
            authorize_url: Some("http://gw/oauth/authorize?app=main".into()),
        };
        let resp = e.into_response::<hyper::body::Incoming>("rid-1");
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()[&X_GATEWAY_ERROR], "user_authorization_required");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["gateway_error"]["code"], "user_authorization_required");
        assert_eq!(v["gateway_error"]["request_id"], "rid-1");
        assert_eq!(
            v["gateway_error"]["authorize_url"],
            "http://gw/oauth/authorize?app=main"
        );
    }

    #[tokio::test]
    async fn a_rate_limit_says_when_to_retry() {
        let e = GatewayError::RateLimited {
            what: "too many requests from this address",
            retry_after_secs: 3,
        };
        let resp = e.into_response::<hyper::body::Incoming>("rid-2");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        assert_eq!(resp.headers()[&X_GATEWAY_ERROR], "rate_limited");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["gateway_error"]["code"], "rate_limited");
        assert_eq!(
            v["gateway_error"]["message"],
            "too many requests from this address: retry in 3 s"
        );
    }
}
