//! The status page's HTML: a maud template, checked at compile time, every value escaped.

use super::{state, AppToken, Forecast, Users, View};
use crate::token::events::RecentError;
use crate::token::upkeep::TokenState;
use crate::token::FetchState;
use crate::token::TokenInfo;
use maud::{html, Markup, PreEscaped, DOCTYPE};

const CSS: &str = concat!(
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}",
    "h2{font-size:16px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}",
    "td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f3f3f3}",
    ".ok{color:#11702b}.bad{color:#b00020;font-weight:600}.warn{color:#a15c00}",
    "td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:13px}",
    "h3{font-size:14px;margin:16px 0 4px}.note{color:#555;font-size:13px}svg.spark{display:block}",
    ".p99{color:#d9822b}",
);

/// The whole page.
pub(super) fn render(v: &View) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width";
                title { "douyin-gateway status" }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "douyin-gateway status" }
                p { "Version " (crate::metrics::VERSION) " · " (date(v.now)) " · this instance's view" }
                h2 { "Token store" }
                p #store {
                    @match &v.store {
                        Ok(()) => span.ok { "ready" },
                        Err(why) => span.bad { "not ready: " (why) },
                    }
                    " (" (v.store_kind) ")"
                }
                h2 { "App tokens" }
                (apps(v.now, &v.apps))
                h2 { "User and biz tokens" }
                (users(&v.users))
                (super::providers::render(v.now, &v.providers))
                h2 { "Traffic" }
                (super::traffic::render(&v.traffic))
                h2 { "Who must re-authorize within 7 days" }
                (forecast(v.now, &v.forecast))
                h2 { "Token events" }
                (super::events::render(&v.events))
                h2 { "Recent token errors" }
                (errors(&v.errors))
            }
        }
    };
    let mut page = page.into_string();
    page.push('\n');
    page
}

fn apps(now: u64, apps: &[AppToken]) -> Markup {
    html! {
        table #apps {
            tr { th { "app" } th { "class" } th { "state" } th { "expires" } th { "last fetch" }
                th { "fetches ok" } th { "fetches failed" } }
            @for t in apps {
                tr {
                    td { (t.app) }
                    td { (t.class.as_str()) }
                    td class=[state::app_css(t.state)] { (t.state.map_or("not fetched yet", TokenState::as_str)) }
                    td { @match t.expires_unix { Some(e) => (until(now, e)), None => "—" } }
                    td { (last_fetch(&t.last_fetch)) }
                    td.n { (t.fetches_ok) }
                    td.n { (t.fetches_failed) }
                }
            }
        }
    }
}

fn last_fetch(f: &FetchState) -> Markup {
    html! {
        @match f {
            FetchState::Ok => span.ok { "ok" },
            FetchState::Fetching => "fetching",
            FetchState::Failing { failures, since_unix, outcome } => span.bad {
                (outcome) " (" (failures) " in a row since " (date(*since_unix)) ")"
            },
        }
    }
}

fn users(users: &[Users]) -> Markup {
    html! {
        table #users {
            tr { th { "app" } th { "class" } th { "valid" } th { "expired" } th { "failed" }
                th { "must re-authorize now" } th { "must re-authorize within 7 days" } }
            @for u in users {
                tr {
                    td { (u.app) }
                    td { (u.class.as_str()) }
                    td.n { (u.valid) }
                    td.n { (u.expired) }
                    td.n { (u.failed) }
                    td.n { (u.reauthorize_now) }
                    td.n { @match u.within_7d { Some(n) => (n), None => "—" } }
                }
            }
        }
    }
}

/// The search box, the page of users, and the links to the pages around it.
fn forecast(now: u64, f: &Forecast) -> Markup {
    let pages = f.pages();
    html! {
        form method="get" action="/status" {
            input name="q" placeholder="open_id contains…" value=(f.search);
            button { "Search" }
        }
        p #forecast-total {
            (f.total) " user(s)"
            @if !f.search.is_empty() { " whose open_id contains “" (f.search) "”" }
        }
        table #forecast {
            tr { th { "app" } th { "open_id" } th { "state" } th { "re-authorize by" } }
            @for i in &f.due {
                tr {
                    td { (i.key.app) }
                    td { code { (i.key.open_id().unwrap_or("")) } }
                    td class=(state::forecast_css(i.state)) { (i.state) }
                    td { (reauthorize_by(now, i)) }
                }
            }
        }
        @if pages > 1 {
            p #pages {
                "Page " (f.page_no) " of " (pages) " "
                @if f.page_no > 1 { a href=(page_link(&f.search, f.page_no - 1)) { "← previous" } " " }
                @if f.page_no < pages { a href=(page_link(&f.search, f.page_no + 1)) { "next →" } }
            }
        }
    }
}

fn reauthorize_by(now: u64, i: &TokenInfo) -> String {
    match i.reauthorize_by {
        None => "—".to_owned(),
        Some(b) if b <= now => "now".to_owned(),
        Some(b) => format!("{} ({})", date(b), until(now, b)),
    }
}

fn page_link(search: &str, page: usize) -> String {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", search)
        .append_pair("page", &page.to_string())
        .finish();
    format!("/status?{q}")
}

fn errors(errors: &[RecentError]) -> Markup {
    html! {
        table #errors {
            tr { th { "when" } th { "app" } th { "class" } th { "open_id" } th { "outcome" } th { "message" } }
            @if errors.is_empty() {
                tr { td colspan="6" { "none" } }
            }
            @for e in errors {
                tr {
                    td { (date(e.at_unix)) }
                    td { (e.key.app) }
                    td { (e.key.class.as_str()) }
                    td { code { (e.key.open_id().unwrap_or("—")) } }
                    td.bad { (e.outcome) }
                    td { (e.message) }
                }
            }
        }
    }
}

/// `in 1h 59m`, or `2m ago`.
pub(super) fn until(now: u64, t: u64) -> String {
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

/// `2026-11-29 12:00 UTC`.
pub(super) fn date(unix: u64) -> String {
    let secs = unix % 86_400;
    let (year, month, day) = crate::logs::civil_from_days((unix / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::super::PAGE;
    use super::*;
    use crate::token::{TokenClass, TokenKey};
    use std::sync::Arc;

    const HOSTILE: &str = "\"><script>alert(1)</script>&'";
    const ESCAPED: &str = "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;'";

    fn view() -> View {
        let now = 1_796_000_000;
        let user = |open_id: &str, state, by| TokenInfo {
            key: TokenKey::user(Arc::from("main"), open_id),
            state,
            expires_unix: Some(now + 3600),
            grant: None,
            reauthorize_by: by,
            version: 1,
        };
        View {
            now,
            store: Err(HOSTILE.into()),
            store_kind: "Redis".into(),
            apps: vec![AppToken {
                app: "main".into(),
                class: TokenClass::Client,
                state: Some(TokenState::Failed),
                expires_unix: None,
                last_fetch: FetchState::Failing {
                    failures: 3,
                    since_unix: now - 120,
                    outcome: "network",
                },
                fetches_ok: 1,
                fetches_failed: 3,
            }],
            users: vec![Users {
                app: "main".into(),
                class: TokenClass::Biz,
                valid: 2,
                expired: 0,
                failed: 1,
                reauthorize_now: 0,
                within_7d: None,
            }],
            providers: vec![],
            traffic: vec![],
            events: vec![],
            forecast: Forecast {
                search: HOSTILE.into(),
                page_no: 2,
                total: 3 * PAGE,
                due: vec![
                    user(HOSTILE, TokenState::ReauthorizationRequired, Some(now - 1)),
                    user("ou_soon", TokenState::Valid, Some(now + 7200)),
                ],
            },
            errors: vec![RecentError {
                at_unix: now,
                key: TokenKey::user(Arc::from("main"), HOSTILE),
                outcome: "reauthorize",
                message: HOSTILE.into(),
            }],
        }
    }

    #[test]
    fn every_value_from_outside_is_escaped() {
        let page = render(&view());
        assert!(!page.contains("<script"), "{page}");
        assert_eq!(
            page.matches(ESCAPED).count(),
            6,
            "store, search twice, forecast, errors twice: {page}"
        );
        assert!(page.contains(&format!(
            "<td><code>{ESCAPED}</code></td><td class=\"bad\">reauthorization_required</td><td>now</td>"
        )));
        assert!(page.contains(&format!(
            "<input name=\"q\" placeholder=\"open_id contains…\" value=\"{ESCAPED}\">"
        )));
    }

    #[test]
    fn cells_and_links_keep_their_markup() {
        let page = render(&view());
        for part in [
            "<p id=\"store\"><span class=\"bad\">not ready: ",
            "</span> (Redis)</p>",
            "<tr><td>main</td><td>client</td><td class=\"bad\">failed</td><td>—</td>\
             <td><span class=\"bad\">network (3 in a row since 2026-11-30 00:51 UTC)</span></td>\
             <td class=\"n\">1</td><td class=\"n\">3</td></tr>",
            "<p id=\"forecast-total\">150 user(s) whose open_id contains “",
            "<td class=\"warn\">valid</td><td>2026-11-30 02:53 UTC (in 2h 0m)</td>",
            "<p id=\"pages\">Page 2 of 3 <a href=\"/status?q=%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E%26%27&amp;page=1\">← previous</a> <a href=",
            "&amp;page=3\">next →</a></p>",
            "<td class=\"bad\">reauthorize</td>",
            "<tr><td>main</td><td>biz</td><td class=\"n\">2</td><td class=\"n\">0</td><td class=\"n\">1</td>\
             <td class=\"n\">0</td><td class=\"n\">—</td></tr>",
            "<h2>Traffic</h2>",
            "<h2>Token events</h2><table id=\"events\">",
        ] {
            assert!(page.contains(part), "{part} not in {page}");
        }
        assert!(page.starts_with("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"));
        assert!(page.ends_with("</table></body></html>\n"));
    }

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
