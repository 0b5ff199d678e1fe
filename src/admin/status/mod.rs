//! `GET /status` on the admin listener: one server-rendered page, no script and no external
//! asset, of what an operator checks first: the store, each app's own tokens, user and biz
//! tokens by state, each service provider's ticket, component token and merchant apps
//! ([`providers`]), each route's traffic over the last 5 minutes ([`traffic`]), who must
//! re-authorize within 7 days (searchable by open_id, paged), the last token events and the
//! latest token errors. Token values never appear.
//!
//! This file gathers what the page shows ([`View`]); [`page`](mod@page) renders it with maud,
//! which escapes every value.

mod events;
mod page;
pub(super) mod providers;
mod traffic;

use crate::body::ProxyBody;
use crate::state::Shared;
use crate::token::events::{RecentError, RecentEvent};
use crate::token::upkeep::{Census, TokenState};
use crate::token::FetchState;
use crate::token::{unix_now, TokenClass, TokenInfo, TokenKey};
use http::{header, HeaderValue, Response, StatusCode};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Users listed per page of the forecast.
const PAGE: usize = 50;

/// How a token's state looks on the page.
mod state {
    use crate::token::upkeep::TokenState;

    /// An app token's state cell: good when valid, bad otherwise, plain when not fetched yet.
    pub(super) fn app_css(state: Option<TokenState>) -> Option<&'static str> {
        match state {
            None => None,
            Some(TokenState::Valid) => Some("ok"),
            Some(_) => Some("bad"),
        }
    }

    /// A forecast row's state cell: bad when the user must re-authorize now, a warning otherwise.
    pub(super) fn forecast_css(state: TokenState) -> &'static str {
        if state == TokenState::ReauthorizationRequired {
            "bad"
        } else {
            "warn"
        }
    }
}

/// Everything the page shows, gathered before any of it is rendered.
struct View {
    now: u64,
    /// The store's readiness: `Err` says why not.
    store: Result<(), String>,
    /// The store kind as its `Debug` writes it (`Sqlite`, `Redis`, `Memory`).
    store_kind: String,
    apps: Vec<AppToken>,
    users: Vec<Users>,
    /// The service providers (none: no section).
    providers: Vec<providers::ProviderRow>,
    forecast: Forecast,
    traffic: Vec<traffic::RouteTraffic>,
    events: Vec<RecentEvent>,
    errors: Vec<RecentError>,
}

/// One app's own token (client, or mini-app).
struct AppToken {
    app: String,
    class: TokenClass,
    /// `None`: not fetched yet.
    state: Option<TokenState>,
    expires_unix: Option<u64>,
    last_fetch: FetchState,
    fetches_ok: u64,
    fetches_failed: u64,
}

/// One app's tokens of one per-user class (user, biz, …) by state, and, for users, the
/// re-consent forecast's count.
struct Users {
    app: String,
    class: TokenClass,
    valid: i64,
    expired: i64,
    failed: i64,
    reauthorize_now: i64,
    /// `None`: the class has no forecast.
    within_7d: Option<i64>,
}

/// One page of users who must re-authorize within 7 days.
struct Forecast {
    /// What open_ids must contain (empty: all).
    search: String,
    page_no: usize,
    /// Users matching, on every page.
    total: usize,
    due: Vec<TokenInfo>,
}

impl Forecast {
    fn pages(&self) -> usize {
        self.total.div_ceil(PAGE).max(1)
    }
}

/// The page.
pub(super) async fn page(shared: &Shared, query: Option<&str>) -> Response<ProxyBody> {
    let q: BTreeMap<String, String> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let search = q.get("q").map(|s| s.trim()).unwrap_or("").to_owned();
    let page_no: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let store = match tokio::time::timeout(super::READY_TIMEOUT, shared.tokens.store_ready()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 1 s".to_owned()),
    };
    let (total, due) = shared.tokens.forecast(&search, (page_no - 1) * PAGE, PAGE);
    let census = shared.tokens.census();
    let view = View {
        now: unix_now(),
        store,
        store_kind: format!("{:?}", shared.runtime.load().config.store.kind),
        apps: app_tokens(shared),
        users: users(shared, &census),
        providers: providers::gather(shared, &census).await,
        forecast: Forecast {
            search,
            page_no,
            total,
            due,
        },
        traffic: traffic::gather(&shared.runtime.load(), std::time::Instant::now()),
        events: shared.recent_events.list(),
        errors: shared.recent_errors.list(),
    };
    let mut r = Response::new(ProxyBody::full(page::render(&view)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
    );
    *r.status_mut() = StatusCode::OK;
    r
}

/// Each app's client token, and its mini-app token where it has a mini-app upstream.
fn app_tokens(shared: &Shared) -> Vec<AppToken> {
    let rt = shared.runtime.load();
    let mut out = Vec::new();
    for app in &rt.apps {
        let mut keys: Vec<&TokenKey> = vec![&app.client_key];
        if rt
            .config
            .apps
            .iter()
            .any(|a| *a.name == *app.name && a.mini_app_upstream.is_some())
        {
            keys.push(&app.mini_app_key);
        }
        for key in keys {
            let info = shared.tokens.info_of(key);
            let (ok, failed) = shared.fetch_counts.of(key);
            out.push(AppToken {
                app: app.name.to_string(),
                class: key.class,
                state: info.as_ref().map(|i| i.state),
                expires_unix: info.and_then(|i| i.expires_unix),
                last_fetch: shared.tokens.fetch_state(key),
                fetches_ok: ok,
                fetches_failed: failed,
            });
        }
    }
    out
}

/// Each app's user-held tokens (every class that is not app-level: user, biz, and any class
/// added later) by state, as the gauges count them: with a shared store, every stored token (the
/// engine's last pass over the store), not only those this instance has read.
fn users(shared: &Shared, census: &Census) -> Vec<Users> {
    let rt = shared.runtime.load();
    let mut out = Vec::new();
    for app in &rt.apps {
        // Merchant apps are the providers' ([`providers`]), not an app's.
        for class in TokenClass::ALL
            .into_iter()
            .filter(|c| !c.is_app_level() && *c != TokenClass::Authorizer)
        {
            let count = |state: TokenState| {
                census
                    .tokens
                    .get(&(Arc::clone(&app.name), class, state))
                    .copied()
                    .unwrap_or(0)
            };
            // The forecast covers users (a biz_token's renewal has no 7-day horizon to show).
            let within_7d = (class == TokenClass::User).then(|| {
                census
                    .reauthorization
                    .get(&(Arc::clone(&app.name), "within_7d"))
                    .copied()
                    .unwrap_or(0)
            });
            out.push(Users {
                app: app.name.to_string(),
                class,
                valid: count(TokenState::Valid),
                expired: count(TokenState::Expired),
                failed: count(TokenState::Failed),
                reauthorize_now: count(TokenState::ReauthorizationRequired),
                within_7d,
            });
        }
    }
    out
}
