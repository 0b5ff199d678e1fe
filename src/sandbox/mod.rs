//! The built-in Douyin Open Platform emulator: token endpoints, the
//! authorization page and sample APIs that check tokens and answer in the
//! platform's envelopes, with faults to inject. Used by the tests, the
//! benches and `demo`.
//!
//! Test controls (not part of the platform):
//! `GET /sandbox/stats`, `POST /sandbox/faults`, `POST /sandbox/revoke`,
//! `POST /sandbox/clock`, `GET|DELETE /sandbox/requests`, `POST /sandbox/login_code` (a `tt.login`
//! code), `POST /sandbox/auth_code` (an authorization code as a mini-app receives it); for large
//! transfers `POST /sandbox/sink`
//! (counts an upload's bytes) and `GET /sandbox/bytes?n=N` (N bytes).

mod api;
mod mini;
mod oauth;
pub mod state;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use state::{Counters, Faults, Inner, State, TokenFault};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// The sandbox app every test and `demo` use unless told otherwise.
pub const DEFAULT_APP: &str = "awsandbox0000001:sandbox-secret";

/// Sandbox options (`douyin-gateway sandbox --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxOptions {
    /// An app the platform knows, as CLIENT_KEY:SECRET (repeatable).
    #[arg(long = "app", default_value = DEFAULT_APP)]
    pub apps: Vec<String>,
    /// client_token lifetime, seconds.
    #[arg(long, default_value_t = 7200)]
    pub client_token_ttl: u64,
    /// User access_token lifetime, seconds.
    #[arg(long, default_value_t = 1_296_000)]
    pub access_token_ttl: u64,
    /// refresh_token lifetime, seconds.
    #[arg(long, default_value_t = 2_592_000)]
    pub refresh_token_ttl: u64,
    /// biz_token lifetime, seconds.
    #[arg(long, default_value_t = 2_592_000)]
    pub biz_token_ttl: u64,
    /// biz_refresh_token lifetime, seconds.
    #[arg(long, default_value_t = 3_153_600_000)]
    pub biz_refresh_token_ttl: u64,
    /// client_token calls allowed per app in 5 minutes before 10020.
    #[arg(long, default_value_t = 500)]
    pub client_token_budget: u64,
    /// refresh_token renewals allowed.
    #[arg(long, default_value_t = 5)]
    pub max_renewals: u32,
    /// Token endpoint fault at start.
    #[arg(long, value_enum, default_value_t = TokenFault::None)]
    pub token_fault: TokenFault,
    /// Extra latency of API calls, ms.
    #[arg(long, default_value_t = 0)]
    pub api_latency_ms: u64,
    /// Share of API calls answered with HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    pub api_status500_rate: f64,
    /// Share of API calls answered with malformed JSON.
    #[arg(long, default_value_t = 0.0)]
    pub api_malformed_rate: f64,
    /// The open_id every consent on the authorization page gives (default: a fresh one each time).
    #[arg(long)]
    pub consent_open_id: Option<String>,
    /// `/oauth/refresh_token/` also rotates the refresh_token (the old one dies): the platform
    /// doc leaves open whether it can, so the gateway must cope with both.
    #[arg(long)]
    pub rotate_refresh_token: bool,
    /// `/oauth/refresh_token/` also extends the refresh_token's life to a full
    /// `refresh_token_ttl` (some apps are configured so): the answer's `refresh_expires_in` says so.
    #[arg(long)]
    pub refresh_extends: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            o: SandboxOptions,
        }
        P::parse_from(["sandbox"]).o
    }
}

/// An answer of the sandbox.
pub(crate) struct Reply {
    status: StatusCode,
    content_type: &'static str,
    location: Option<String>,
    body: Bytes,
}

impl Reply {
    pub(crate) fn json(v: serde_json::Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            location: None,
            body: serde_json::to_vec(&v).expect("json").into(),
        }
    }
    fn redirect(to: &str) -> Reply {
        Reply {
            status: StatusCode::FOUND,
            content_type: "text/plain",
            location: Some(to.into()),
            body: Bytes::new(),
        }
    }
    fn status(status: StatusCode, content_type: &'static str, body: &'static str) -> Reply {
        Reply {
            status,
            content_type,
            location: None,
            body: Bytes::from_static(body.as_bytes()),
        }
    }
    fn into_response(self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(self.body));
        *r.status_mut() = self.status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if let Some(l) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }
}

/// Form or query fields (first value wins).
pub(crate) fn form(bytes: &[u8]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    m
}

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

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Down> {
    let (parts, mut body) = req.into_parts();
    if parts.method == Method::POST && parts.uri.path() == "/sandbox/sink" {
        // Large uploads, counted as they come and never held.
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => bytes += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return Ok(Reply::status(StatusCode::BAD_REQUEST, "text/plain", "bad body").into_response()),
            }
        }
        return Ok(Reply::json(json!({"bytes": bytes})).into_response());
    }
    let body = match http_body_util::Limited::new(body, 32 * 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(Reply::status(StatusCode::BAD_REQUEST, "text/plain", "bad body").into_response()),
    };
    let path = parts.uri.path();
    let faults = state.inner.lock().unwrap().faults.clone();
    let token_endpoint = (path.starts_with("/oauth/") && path != "/oauth/userinfo/") || path == "/api/apps/v2/token";
    let _busy = token_endpoint.then(|| Busy::new(&state));
    if token_endpoint {
        Counters::bump(&state.counters.token_endpoint_requests);
        if faults.token_latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.token_latency_ms)).await;
        }
        match faults.token_endpoint {
            TokenFault::None => {}
            TokenFault::Down => return Err(Down),
            TokenFault::Status500 => {
                return Ok(
                    Reply::status(StatusCode::INTERNAL_SERVER_ERROR, "text/html", "<html>500</html>").into_response(),
                )
            }
            TokenFault::Malformed => {
                return Ok(
                    Reply::status(StatusCode::OK, "application/json", "{\"data\": {\"access_tok").into_response(),
                )
            }
            TokenFault::RateLimited => return Ok(oauth::a_err(10020, "请求太频繁").into_response()),
        }
        if let Some(e) = &faults.token_error {
            return Ok(oauth::a_err(e.code, &e.description).into_response());
        }
    }
    let reply = match (&parts.method, path) {
        (&Method::POST, "/oauth/client_token/") => oauth::client_token(&state, &body, false),
        (&Method::POST, "/oauth/stable_client_token/") => oauth::client_token(&state, &body, true),
        (&Method::POST, "/oauth/access_token/") => oauth::access_token(&state, &body),
        (&Method::POST, "/oauth/refresh_token/") => oauth::refresh_token(&state, &body),
        (&Method::POST, "/oauth/renew_refresh_token/") => oauth::renew_refresh_token(&state, &body),
        (&Method::POST, "/oauth/business_token/") => oauth::business_token(&state, &body),
        (&Method::POST, "/oauth/refresh_biz_token/") => oauth::refresh_biz_token(&state, &body),
        (&Method::GET, "/platform/oauth/connect/") => oauth::connect(&state, parts.uri.query().unwrap_or("")),
        (&Method::POST, "/api/apps/v2/token") => mini::token(&state, &body),
        (&Method::POST, "/api/apps/v2/jscode2session") => mini::jscode2session(&state, &body),
        (&Method::POST, "/sandbox/auth_code") => auth_code(&state, &body),
        (&Method::POST, "/sandbox/login_code") => match mini::login_code(&state, &body) {
            Ok(v) => Reply::json(v),
            Err(e) => {
                let mut r = Reply::json(json!({ "error": e }));
                r.status = StatusCode::BAD_REQUEST;
                r
            }
        },
        (_, p) if p.starts_with("/sandbox/") => control(&state, &parts.method, p, parts.uri.query(), &body),
        _ => {
            let r = api::ApiRequest {
                method: &parts.method,
                path,
                query: parts.uri.query(),
                headers: &parts.headers,
                body: &body,
            };
            if faults.api_latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(faults.api_latency_ms)).await;
            }
            if rand::random::<f64>() < faults.api_status500_rate {
                Reply::status(StatusCode::INTERNAL_SERVER_ERROR, "text/html", "<html>500</html>")
            } else if rand::random::<f64>() < faults.api_malformed_rate {
                Reply::status(StatusCode::OK, "application/json", "{\"data\": [")
            } else {
                api::answer(&state, &r)
                    .or_else(|| mini::api(&state, path, &parts.headers, &body))
                    .unwrap_or_else(|| {
                        let mut r = Reply::json(
                            json!({"err_no": 404, "err_msg": "no such API in the sandbox", "log_id": "sandbox"}),
                        );
                        r.status = StatusCode::NOT_FOUND;
                        r
                    })
            }
        }
    };
    Ok(reply.into_response())
}

/// `POST /sandbox/auth_code` `{"client_key", "scope"?}`: the authorization code the consent page
/// would give a mini-app (`tt.showDouyinOpenAuth`) or mobile SDK, as JSON `{"code"}`.
fn auth_code(state: &State, body: &[u8]) -> Reply {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_key", v["client_key"].as_str().unwrap_or(""))
        .append_pair("response_type", "code")
        .append_pair("scope", v["scope"].as_str().unwrap_or("user_info"))
        .append_pair("redirect_uri", "app://sandbox")
        .finish();
    let consent = oauth::connect(state, &query);
    let code = consent.location.as_deref().and_then(|l| {
        form_urlencoded::parse(l.split_once('?')?.1.as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, c)| c.into_owned())
    });
    match code {
        Some(code) => Reply::json(json!({ "code": code })),
        None => consent,
    }
}

fn control(state: &State, method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Reply {
    let bad = |m: String| {
        let mut r = Reply::json(json!({"error": m}));
        r.status = StatusCode::BAD_REQUEST;
        r
    };
    let mut inner = state.inner.lock().unwrap();
    match (method, path) {
        (&Method::GET, "/sandbox/stats") => Reply::json(state.counters.json()),
        (&Method::GET, "/sandbox/bytes") => {
            // A large download: `n` bytes (at most 1 GiB) of application/octet-stream.
            let n = form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .find(|(k, _)| k == "n")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0)
                .min(1 << 30);
            let mut r = Reply::status(StatusCode::OK, "application/octet-stream", "");
            r.body = Bytes::from(vec![b'x'; n]);
            r
        }
        (&Method::GET, "/sandbox/requests") => Reply::json(json!({"requests": inner.log})),
        (&Method::DELETE, "/sandbox/requests") => {
            inner.log.clear();
            Reply::json(json!({"cleared": true}))
        }
        (&Method::POST, "/sandbox/faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => {
                inner.faults = f;
                Reply::json(json!({"faults": inner.faults}))
            }
            Err(e) => bad(format!("faults: {e}")),
        },
        (&Method::POST, "/sandbox/clock") => {
            let secs = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["advance_secs"].as_u64());
            match secs {
                Some(s) => {
                    inner.offset += Duration::from_secs(s);
                    Reply::json(json!({"offset_secs": inner.offset.as_secs()}))
                }
                None => bad("body must be {\"advance_secs\": N}".into()),
            }
        }
        (&Method::POST, "/sandbox/revoke") => {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            if let Some(k) = v["client_key"].as_str() {
                inner.client_tokens.remove(k);
                Reply::json(json!({"revoked": "client_tokens"}))
            } else if let Some(o) = v["expire_user"].as_str() {
                let now = inner.now();
                for u in inner.users.values_mut().filter(|u| u.open_id == o) {
                    u.expires_at = now;
                }
                for b in inner.biz.values_mut().filter(|b| b.open_id == o) {
                    b.expires_at = now;
                }
                Reply::json(json!({"expired": o}))
            } else if let Some(o) = v["revoke_user"].as_str() {
                inner.users.retain(|_, u| u.open_id != o);
                inner.refresh.retain(|_, r| r.open_id != o);
                inner.biz.retain(|_, b| b.open_id != o);
                inner.biz_refresh.retain(|_, b| b.open_id != o);
                Reply::json(json!({"revoked": o}))
            } else {
                bad("body must name client_key, expire_user or revoke_user".into())
            }
        }
        _ => bad(format!("no sandbox control {method} {path}")),
    }
}
