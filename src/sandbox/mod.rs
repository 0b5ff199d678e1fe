//! The built-in Douyin Open Platform emulator: token endpoints, the
//! authorization page and sample APIs that check tokens and answer in the
//! platform's envelopes, with faults to inject. Used by the tests, the
//! benches and `demo`.
//!
//! Test controls (not part of the platform):
//! `GET /sandbox/stats`, `POST /sandbox/faults`, `POST /sandbox/revoke`,
//! `POST /sandbox/clock`, `GET|DELETE /sandbox/requests`, `POST /sandbox/login_code` (a `tt.login`
//! code), `POST /sandbox/auth_code` (an authorization code as a mini-app receives it); the platform
//! calling out, and a backend receiving what the gateway forwards ([`callbacks`]); the third-party
//! platform pushing a service provider's events and issuing its component tokens ([`provider`]) and
//! its merchants' authorizer tokens ([`authorizer`]); for large
//! transfers `POST /sandbox/sink`
//! (counts an upload's bytes) and `GET /sandbox/bytes?n=N` (N bytes); for signed calls
//! `POST /sandbox/trade` and `GET /sandbox/signed` ([`trade`]).
//!
//! `oauth` and `mini` are the platform's token endpoints (douyin.com's and developer.toutiao.com's),
//! `api` the sample APIs, `control` the test controls, `state` what the platform remembers; this
//! file serves them and injects the faults.

mod api;
pub mod authorizer;
mod callbacks;
mod control;
mod grants;
mod mini;
mod oauth;
mod options;
pub mod provider;
mod reply;
pub mod state;
pub mod trade;

pub use options::{SandboxOptions, DEFAULT_APP};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reply::{form, Reply};
use serde_json::json;
use state::{Counters, Faults, Inner, State, TokenFault};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// A running sandbox.
pub struct Sandbox {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, for in-process tests.
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The connection is dropped without an answer (fault `down`).
#[derive(Debug, thiserror::Error)]
#[error("sandbox: token endpoint is down")]
struct Down;

/// Starts a sandbox on a bound listener.
pub fn start(opts: SandboxOptions, listener: TcpListener) -> Result<Sandbox, String> {
    let mut apps = HashMap::new();
    for a in &opts.apps {
        let (k, s) = a
            .split_once(':')
            .ok_or_else(|| format!("--app {a:?}: expected CLIENT_KEY:SECRET"))?;
        apps.insert(k.to_string(), s.to_string());
    }
    // The sandbox service provider's own app on open.douyin.com: its client_token is what the
    // V2 third-party endpoints take.
    apps.entry(authorizer::PROVIDER_CLIENT_KEY.to_string())
        .or_insert_with(|| authorizer::PROVIDER_CLIENT_SECRET.to_string());
    let faults = Faults {
        token_endpoint: opts.token_fault,
        api_latency_ms: opts.api_latency_ms,
        api_status500_rate: opts.api_status500_rate,
        api_malformed_rate: opts.api_malformed_rate,
        ..Faults::default()
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let state = Arc::new(State {
        opts,
        apps,
        inner: Mutex::new(Inner {
            faults,
            ..Inner::default()
        }),
        counters: Counters::default(),
    });
    let st = Arc::clone(&state);
    let task = tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let st = Arc::clone(&st);
            let builder = builder.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&st), req));
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(Sandbox { addr, state, task })
}

/// A token endpoint request being handled, counted until it is answered or abandoned.
struct Busy(Arc<State>);

impl Busy {
    fn new(state: &Arc<State>) -> Self {
        state
            .counters
            .token_endpoint_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(Arc::clone(state))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .counters
            .token_endpoint_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What fault `malformed` answers a token endpoint with: JSON cut short.
const MALFORMED_TOKEN_ANSWER: &str = "{\"data\": {\"access_tok";
/// What a share of API calls (`api_malformed_rate`) is answered with: JSON cut short.
const MALFORMED_API_ANSWER: &str = "{\"data\": [";

/// Answers one request: a test control, a token endpoint (after the faults it is told to inject)
/// or a sample API.
async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Down> {
    let (parts, body) = req.into_parts();
    if parts.method == Method::POST && parts.uri.path() == "/sandbox/sink" {
        return Ok(control::sink(body).await.into_response());
    }
    let body = match http_body_util::Limited::new(body, 32 * 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(Reply::status(StatusCode::BAD_REQUEST, "text/plain", "bad body").into_response()),
    };
    let path = parts.uri.path();
    if path.starts_with("/sandbox/provider") || path.starts_with("/openapi/v1/") || path.starts_with("/api/tpapp/") {
        let query = parts.uri.query().unwrap_or("");
        if let Some(reply) = provider::handle(&state, &parts.method, path, query, &parts.headers, &body).await {
            return Ok(reply.into_response());
        }
    }
    if path.starts_with("/sandbox/") {
        if let Some(reply) = callbacks::handle(&state, &parts.method, path, &body, &parts.headers).await {
            return Ok(reply.into_response());
        }
    }
    let faults = state.inner.lock().unwrap().faults.clone();
    let token_endpoint = (path.starts_with("/oauth/") && path != "/oauth/userinfo/") || path == "/api/apps/v2/token";
    let _busy = token_endpoint.then(|| Busy::new(&state));
    if token_endpoint {
        if let Some(fault) = token_fault(&state, &faults).await? {
            return Ok(fault.into_response());
        }
    }
    let reply = match route(&state, &parts, &body) {
        Some(reply) => reply,
        None => api_call(&state, &parts, &body, &faults).await,
    };
    Ok(reply.into_response())
}

/// Counts a token endpoint call and, after any injected latency, the fault it is answered with
/// (`None`: answer normally; `Err`: drop the connection).
async fn token_fault(state: &State, faults: &Faults) -> Result<Option<Reply>, Down> {
    Counters::bump(&state.counters.token_endpoint_requests);
    if faults.token_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.token_latency_ms)).await;
    }
    let fault = match faults.token_endpoint {
        TokenFault::None => None,
        TokenFault::Down => return Err(Down),
        TokenFault::Status500 => Some(Reply::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/html",
            "<html>500</html>",
        )),
        TokenFault::Malformed => Some(Reply::status(
            StatusCode::OK,
            "application/json",
            MALFORMED_TOKEN_ANSWER,
        )),
        TokenFault::RateLimited => Some(oauth::a_err(10020, "请求太频繁")),
    };
    Ok(fault.or_else(|| {
        faults
            .token_error
            .as_ref()
            .map(|e| oauth::a_err(e.code, &e.description))
    }))
}

/// The token endpoints, the authorization page and the test controls; `None` for any other path
/// (a sample API, or none).
fn route(state: &State, parts: &http::request::Parts, body: &[u8]) -> Option<Reply> {
    Some(match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/oauth/client_token/") => oauth::client_token(state, body, false),
        (&Method::POST, "/oauth/stable_client_token/") => oauth::client_token(state, body, true),
        (&Method::POST, "/oauth/access_token/") => oauth::access_token(state, body),
        (&Method::POST, "/oauth/refresh_token/") => oauth::refresh_token(state, body),
        (&Method::POST, "/oauth/renew_refresh_token/") => oauth::renew_refresh_token(state, body),
        (&Method::POST, "/oauth/business_token/") => oauth::business_token(state, body),
        (&Method::POST, "/oauth/refresh_biz_token/") => oauth::refresh_biz_token(state, body),
        (&Method::GET, "/platform/oauth/connect/") => oauth::connect(state, parts.uri.query().unwrap_or("")),
        (&Method::POST, "/api/apps/v2/token") => mini::token(state, body),
        (&Method::POST, "/api/apps/v2/jscode2session") => mini::jscode2session(state, body),
        (&Method::POST, "/sandbox/auth_code") => control::auth_code(state, body),
        (&Method::POST, "/sandbox/login_code") => control::login_code(state, body),
        (&Method::POST, "/sandbox/trade") | (&Method::GET, "/sandbox/signed") => {
            trade::control(state, &parts.method, body)
        }
        (method, p) if p.starts_with("/sandbox/") => control::control(state, method, p, parts.uri.query(), body),
        _ => return None,
    })
}

/// A sample API call, after the injected latency, HTTP 500s and malformed answers; 404 when the
/// sandbox has no such API.
async fn api_call(state: &State, parts: &http::request::Parts, body: &[u8], faults: &Faults) -> Reply {
    let path = parts.uri.path();
    let r = api::ApiRequest {
        method: &parts.method,
        path,
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
    };
    if faults.api_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.api_latency_ms)).await;
    }
    if rand::random::<f64>() < faults.api_status500_rate {
        Reply::status(StatusCode::INTERNAL_SERVER_ERROR, "text/html", "<html>500</html>")
    } else if rand::random::<f64>() < faults.api_malformed_rate {
        Reply::status(StatusCode::OK, "application/json", MALFORMED_API_ANSWER)
    } else {
        api::answer(state, &r)
            .or_else(|| mini::api(state, path, &parts.headers, body))
            .or_else(|| trade::answer(state, parts, body))
            .unwrap_or_else(|| {
                Reply::json(json!({"err_no": 404, "err_msg": "no such API in the sandbox", "log_id": "sandbox"}))
                    .with_status(StatusCode::NOT_FOUND)
            })
    }
}
