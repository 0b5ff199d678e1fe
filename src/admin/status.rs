//! `GET /status` on the admin listener: one server-rendered page, no script and no external
//! asset, of what an operator checks first: the store, each app's own tokens, users by state,
//! who must re-authorize within 7 days (searchable by open_id, paged), and the latest token
//! errors. Token values never appear.

use super::oauth::escape;
use crate::body::ProxyBody;
use crate::state::Shared;
use crate::token::FetchState;
use crate::token::{unix_now, TokenClass};
use http::{header, HeaderValue, Response, StatusCode};
use prometheus::core::Collector;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Users listed per page of the forecast.
const PAGE: usize = 50;

/// The page.
pub(super) async fn page(shared: &Shared, query: Option<&str>) -> Response<ProxyBody> {
    let q: BTreeMap<String, String> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let search = q.get("q").map(|s| s.trim()).unwrap_or("");
    let page_no: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let now = unix_now();
    let rt = shared.runtime.load();
    let store = tokio::time::timeout(super::READY_TIMEOUT, shared.tokens.store_ready()).await;
    shared.metrics.set_token_gauges(&shared.tokens.census());
    let gauges = values(&shared.metrics.tokens);
    let forecast_counts = values(&shared.metrics.reauthorization);
    let fetches = values(&shared.metrics.token_fetches);

    let mut h = String::with_capacity(16 * 1024);
    h.push_str(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width\"><title>douyin-gateway status</title><style>",
        "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}",
        "h2{font-size:16px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}",
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f3f3f3}",
        ".ok{color:#11702b}.bad{color:#b00020;font-weight:600}.warn{color:#a15c00}",
        "td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:13px}",
        "</style></head><body>"
    ));
    let _ = write!(
        h,
        "<h1>douyin-gateway status</h1><p>Version {} · {} · this instance's view</p>",
        escape(crate::metrics::VERSION),
        date(now)
    );

    // The store.
    h.push_str("<h2>Token store</h2><p id=\"store\">");
    match store {
        Ok(Ok(())) => h.push_str("<span class=\"ok\">ready</span>"),
        Ok(Err(e)) => {
            let _ = write!(h, "<span class=\"bad\">not ready: {}</span>", escape(&e.to_string()));
        }
        Err(_) => h.push_str("<span class=\"bad\">not ready: no answer within 1 s</span>"),
    }
    let _ = write!(h, " ({:?})</p>", rt.config.store.kind);

    // Each app's own tokens.
    h.push_str(
        "<h2>App tokens</h2><table id=\"apps\"><tr><th>app</th><th>class</th><th>state</th><th>expires</th>\
         <th>last fetch</th><th>fetches ok</th><th>fetches failed</th></tr>",
    );
    for app in &rt.apps {
        let mut keys = vec![app.client_key.clone()];
        if rt
            .config
            .apps
            .iter()
            .any(|a| *a.name == *app.name && a.mini_app_upstream.is_some())
        {
            keys.push(app.mini_app_key.clone());
        }
        for key in keys {
            let info = shared.tokens.info_of(&key);
            let state = info.as_ref().map_or("not fetched yet", |i| i.state.as_str());
            let class_css = match state {
                "valid" => "ok",
                "not fetched yet" => "",
                _ => "bad",
            };
            let expires = info
                .as_ref()
                .and_then(|i| i.expires_unix)
                .map_or("—".to_string(), |e| until(now, e));
            let last = match shared.tokens.fetch_state(&key) {
                FetchState::Ok => "<span class=\"ok\">ok</span>".to_string(),
                FetchState::Fetching => "fetching".to_string(),
                FetchState::Failing {
                    failures,
                    since_unix,
                    outcome,
                } => format!(
                    "<span class=\"bad\">{} ({failures} in a row since {})</span>",
                    escape(outcome),
                    date(since_unix)
                ),
            };
            let (ok, failed) = fetches.iter().fold((0.0, 0.0), |(ok, failed), (labels, v)| {
                if labels.get("app").map(String::as_str) != Some(&app.name)
                    || labels.get("class").map(String::as_str) != Some(key.class.as_str())
                {
                    return (ok, failed);
                }
                match labels.get("outcome").map(String::as_str) {
                    Some("ok") => (ok + v, failed),
                    _ => (ok, failed + v),
                }
            });
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{class_css}\">{}</td><td>{expires}</td><td>{last}</td>\
                 <td class=\"n\">{ok}</td><td class=\"n\">{failed}</td></tr>",
                escape(&app.name),
                key.class.as_str(),
                escape(state)
            );
        }
    }
    h.push_str("</table>");

    // Users by state, and the forecast's counts.
    h.push_str(
        "<h2>Users</h2><table id=\"users\"><tr><th>app</th><th>valid</th><th>expired</th><th>failed</th>\
         <th>must re-authorize now</th><th>must re-authorize within 7 days</th></tr>",
    );
    for app in &rt.apps {
        let count = |class: &str, state: &str| {
            gauges
                .iter()
                .filter(|(l, _)| {
                    l.get("app").map(String::as_str) == Some(&app.name)
                        && l.get("class").map(String::as_str) == Some(class)
                        && l.get("state").map(String::as_str) == Some(state)
                })
                .map(|(_, v)| *v)
                .sum::<f64>()
        };
        let when = |w: &str| {
            forecast_counts
                .iter()
                .filter(|(l, _)| {
                    l.get("app").map(String::as_str) == Some(&app.name) && l.get("when").map(String::as_str) == Some(w)
                })
                .map(|(_, v)| *v)
                .sum::<f64>()
        };
        let user = TokenClass::User.as_str();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&app.name),
            count(user, "valid"),
            count(user, "expired"),
            count(user, "failed"),
            when("required"),
            when("within_7d"),
        );
    }
    h.push_str("</table>");

    // The forecast, searchable and paged.
    let (total, due) = shared.tokens.forecast(search, (page_no - 1) * PAGE, PAGE);
    let _ = write!(
        h,
        "<h2>Who must re-authorize within 7 days</h2>\
         <form method=\"get\" action=\"/status\"><input name=\"q\" placeholder=\"open_id contains…\" value=\"{}\">\
         <button>Search</button></form><p id=\"forecast-total\">{total} user(s){}</p>\
         <table id=\"forecast\"><tr><th>app</th><th>open_id</th><th>state</th><th>re-authorize by</th></tr>",
        escape(search),
        if search.is_empty() {
            String::new()
        } else {
            format!(" whose open_id contains “{}”", escape(search))
        }
    );
    for i in &due {
        let by = i.reauthorize_by.map_or("—".to_string(), |b| {
            if b <= now {
                "now".to_string()
            } else {
                format!("{} ({})", date(b), until(now, b))
            }
        });
        let css = if i.state == crate::token::upkeep::TokenState::ReauthorizationRequired {
            "bad"
        } else {
            "warn"
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"{css}\">{}</td><td>{by}</td></tr>",
            escape(&i.key.app),
            escape(i.key.open_id().unwrap_or("")),
            escape(i.state.as_str())
        );
    }
    h.push_str("</table>");
    let pages = total.div_ceil(PAGE).max(1);
    if pages > 1 {
        let link = |p: usize, label: &str| {
            let q = form_urlencoded::Serializer::new(String::new())
                .append_pair("q", search)
                .append_pair("page", &p.to_string())
                .finish();
            format!("<a href=\"/status?{}\">{label}</a>", escape(&q))
        };
        let _ = write!(h, "<p id=\"pages\">Page {page_no} of {pages} ");
        if page_no > 1 {
            h.push_str(&link(page_no - 1, "← previous"));
            h.push(' ');
        }
        if page_no < pages {
            h.push_str(&link(page_no + 1, "next →"));
        }
        h.push_str("</p>");
    }

    // Recent errors.
    h.push_str(
        "<h2>Recent token errors</h2><table id=\"errors\"><tr><th>when</th><th>app</th><th>class</th>\
         <th>open_id</th><th>outcome</th><th>message</th></tr>",
    );
    let errors = shared.recent_errors.list();
    if errors.is_empty() {
        h.push_str("<tr><td colspan=\"6\">none</td></tr>");
    }
    for e in errors {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"bad\">{}</td><td>{}</td></tr>",
            date(e.at_unix),
            escape(&e.key.app),
            e.key.class.as_str(),
            escape(e.key.open_id().unwrap_or("—")),
            escape(e.outcome),
            escape(&e.message)
        );
    }
    h.push_str("</table></body></html>\n");

    let mut r = Response::new(ProxyBody::full(h));
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

/// A metric family's series: labels and value.
fn values(c: &dyn Collector) -> Vec<(BTreeMap<String, String>, f64)> {
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
    out
}

/// `in 1h 59m`, or `2m ago`.
fn until(now: u64, t: u64) -> String {
    let (d, ago) = if t >= now { (t - now, false) } else { (now - t, true) };
    let s = match d {
        d if d >= 86_400 => format!("{}d {}h", d / 86_400, d % 86_400 / 3600),
        d if d >= 3600 => format!("{}h {}m", d / 3600, d % 3600 / 60),
        d if d >= 60 => format!("{}m", d / 60),
        d => format!("{d}s"),
    };
    if ago {
        format!("{s} ago")
    } else {
        format!("in {s}")
    }
}

/// `2026-11-29 12:00 UTC` (days to civil date: Howard Hinnant's algorithm).
fn date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations_read_well() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(1_796_000_000), "2026-11-30 00:53 UTC");
        assert_eq!(date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(until(100, 100 + 7140), "in 1h 59m");
        assert_eq!(until(100 + 120, 100), "2m ago");
        assert_eq!(until(0, 3 * 86_400 + 7200), "in 3d 2h");
    }
}
