//! `GET /status` on the admin listener: one server-rendered page, no script and no external
//! asset, of what an operator checks first: the store, each app's own tokens, users by state,
//! who must re-authorize within 7 days (searchable by open_id, paged), and the latest token
//! errors. Token values never appear.
//!
//! This file gathers what the page shows ([`View`]); [`page`](mod@page) renders it with maud,
//! which escapes every value.

mod page;

use crate::body::ProxyBody;
use crate::state::Shared;
use crate::token::cache::{FetchState, RecentError};
use crate::token::{unix_now, TokenClass, TokenInfo, TokenKey};
use http::{header, HeaderValue, Response, StatusCode};
use prometheus::core::Collector;
use std::collections::BTreeMap;

/// Users listed per page of the forecast.
const PAGE: usize = 50;

/// The words of `TokenInfo::state`, read here and nowhere else in the admin listener; they are
/// also the `state` label of `douyin_gateway_tokens`.
mod state {
    pub(super) const VALID: &str = "valid";
    pub(super) const EXPIRED: &str = "expired";
    pub(super) const FAILED: &str = "failed";
    const REAUTHORIZE: &str = "reauthorization_required";

    /// An app token's state cell: good when valid, bad otherwise, plain when not fetched yet.
    pub(super) fn app_css(state: Option<&str>) -> Option<&'static str> {
        match state {
            None => None,
            Some(VALID) => Some("ok"),
            Some(_) => Some("bad"),
        }
    }

    /// A forecast row's state cell: bad when the user must re-authorize now, a warning otherwise.
    pub(super) fn forecast_css(state: &str) -> &'static str {
        if state == REAUTHORIZE {
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
    forecast: Forecast,
    errors: Vec<RecentError>,
}

/// One app's own token (client, or mini-app).
struct AppToken {
    app: String,
    class: TokenClass,
    /// `None`: not fetched yet.
    state: Option<&'static str>,
    expires_unix: Option<u64>,
    last_fetch: FetchState,
    fetches_ok: f64,
    fetches_failed: f64,
}

/// One app's users by state, and its re-consent forecast's counts.
struct Users {
    app: String,
    valid: f64,
    expired: f64,
    failed: f64,
    reauthorize_now: f64,
    within_7d: f64,
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
    shared.tokens.update_gauges();
    let (total, due) = shared.tokens.forecast(&search, (page_no - 1) * PAGE, PAGE);
    let view = View {
        now: unix_now(),
        store,
        store_kind: format!("{:?}", shared.runtime.load().config.store.kind),
        apps: app_tokens(shared),
        users: users(shared),
        forecast: Forecast {
            search,
            page_no,
            total,
            due,
        },
        errors: shared.tokens.recent_errors(),
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
    let fetches = Series::of(&shared.metrics.token_fetches);
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
            let of_token = [("app", &*app.name), ("class", key.class.as_str())];
            let all = fetches.sum(&of_token);
            let ok = fetches.sum(&[of_token[0], of_token[1], ("outcome", "ok")]);
            out.push(AppToken {
                app: app.name.to_string(),
                class: key.class,
                state: info.as_ref().map(|i| i.state),
                expires_unix: info.and_then(|i| i.expires_unix),
                last_fetch: shared.tokens.fetch_state(key),
                fetches_ok: ok,
                fetches_failed: all - ok,
            });
        }
    }
    out
}

/// Each app's users by state, as the gauges count them: with a shared store, every stored user
/// (the engine's last pass over the store), not only those this instance has read.
fn users(shared: &Shared) -> Vec<Users> {
    let tokens = Series::of(&shared.metrics.tokens);
    let forecast = Series::of(&shared.metrics.reauthorization);
    let user = TokenClass::User.as_str();
    let rt = shared.runtime.load();
    rt.apps
        .iter()
        .map(|app| {
            let count = |state: &str| tokens.sum(&[("app", &app.name), ("class", user), ("state", state)]);
            let when = |w: &str| forecast.sum(&[("app", &app.name), ("when", w)]);
            Users {
                app: app.name.to_string(),
                valid: count(state::VALID),
                expired: count(state::EXPIRED),
                failed: count(state::FAILED),
                reauthorize_now: when("required"),
                within_7d: when("within_7d"),
            }
        })
        .collect()
}

/// A metric family's series, labels and value: the token engine keeps these counts only as
/// metrics (its tally of a shared store's users is not exposed otherwise).
struct Series(Vec<(BTreeMap<String, String>, f64)>);

impl Series {
    fn of(c: &dyn Collector) -> Self {
        let mut out = Vec::new();
        for family in c.collect() {
            for m in family.get_metric() {
                let labels = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                // A family is all gauges or all counters; the other reads 0.
                let v = m.get_gauge().get_value() + m.get_counter().get_value();
                out.push((labels, v));
            }
        }
        Series(out)
    }

    /// The sum of the series that have every one of these labels.
    fn sum(&self, want: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(labels, _)| want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, v)| *v)
            .sum()
    }
}
