//! `GET /status` on the admin listener: the page an operator opens in a browser. Behind the admin
//! key (header, or HTTP Basic so a browser can log in); its numbers are those of `/admin/tokens`
//! and `/metrics`; user and biz tokens by state; each route's calls, errors by code and latency
//! over the last 5 minutes; the last token events (a revocation, an early eviction, a distrusted
//! route); the forecast is searchable and paged; no token value anywhere. Rendered in headless
//! Chromium with traffic flowing, with a screenshot (`target/test-output/status-page.png`) when
//! Chromium is there (required under CI).

mod common;

use base64::Engine;
use common::*;
use http::Method;
use serde_json::{json, Value};

/// The page's Content-Security-Policy: nothing may load or run; inline styles (and inline SVG,
/// which is markup, not a resource) only.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'";

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ops:{key}"))
    )
}

/// The text of the table cells of the row of `table_id` whose first cell is `first`.
fn row(page: &str, table_id: &str, first: &str) -> Vec<String> {
    let table = &page[page.find(&format!("<table id=\"{table_id}\">")).unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let start = table
        .find(&format!("<tr><td>{first}</td>"))
        .unwrap_or_else(|| panic!("no row {first} in {table}"));
    let r = &table[start..];
    let r = &r[..r.find("</tr>").unwrap()];
    r.split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').unwrap() + 1..];
            let c = &c[..c.find("</td>").unwrap()];
            // Strip inner tags.
            let mut out = String::new();
            let mut tag = false;
            for ch in c.chars() {
                match ch {
                    '<' => tag = true,
                    '>' => tag = false,
                    ch if !tag => out.push(ch),
                    _ => {}
                }
            }
            out
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_what_admin_tokens_says_and_no_token() {
    // Refresh tokens live 3 days and are not renewed: every authorized user is in the forecast.
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        refresh_token_ttl: 3 * 24 * 3600,
        ..Default::default()
    })
    .await;
    let upstream = sb.url();
    let gw = gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&upstream, secret)
            .redirect_to(admin)
            .tokens(|t| {
                t.max_renewals = 0;
                t.renew_before_secs = 3600;
                t.backoff_initial_ms = 50;
            })
            .render()
    })
    .await;
    let http = Http::default();
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    let mut users = Vec::new();
    for _ in 0..2 {
        users.push(open_id_of(&http.authorize(&gw, "main").await.text()));
    }
    // A user the platform refuses: must re-authorize now, and a token error to list.
    import_dead_user(&http, &gw, "ou_dead").await;
    assert_eq!(
        http.get(&gw.url("/api/douyin/v1/video/video_list/?open_id=ou_dead"))
            .await
            .status,
        401
    );
    // 120 more users whose consent ends in 2 days, for the paging.
    for i in 0..120 {
        let body = json!({"access_token": format!("act.p{i}"), "refresh_token": format!("rft.p{i}"),
            "expires_in": 86400, "refresh_expires_in": 2 * 86400})
        .to_string();
        let r = http
            .admin(&gw, Method::PUT, &format!("/admin/users/main/ou_page{i:03}"), &body)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // The key: none → 401 with a Basic challenge; the header or Basic → the page.
    let r = http.get(&gw.admin("/status")).await;
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"].to_str().unwrap().starts_with("Basic "));
    let r = http
        .send(
            Method::GET,
            &gw.admin("/status"),
            &[("authorization", &basic("wrong"))],
            "",
        )
        .await;
    assert_eq!(r.status, 401);
    let r = http
        .send(Method::GET, &gw.admin("/status"), &[("x-admin-key", ADMIN_KEY)], "")
        .await;
    assert_eq!(r.status, 200);
    let r = http
        .send(
            Method::GET,
            &gw.admin("/status"),
            &[("authorization", &basic(ADMIN_KEY))],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(r.headers["content-security-policy"], CSP);
    let page = r.text();
    assert!(
        !page.contains("<script") && !page.contains("src=") && !page.contains("href=\"http"),
        "no external asset"
    );

    // Its numbers are /admin/tokens'.
    let tokens: Vec<Value> = http.admin(&gw, Method::GET, "/admin/tokens", "").await.json()["tokens"]
        .as_array()
        .unwrap()
        .clone();
    let count = |class: &str, state: &str| {
        tokens
            .iter()
            .filter(|t| t["class"] == class && t["state"] == state)
            .count()
            .to_string()
    };
    let users_row = row(&page, "users", "main</td><td>user");
    assert_eq!(users_row[2], count("user", "valid"), "{users_row:?}");
    assert_eq!(users_row[5], count("user", "reauthorization_required"), "{users_row:?}");
    assert_eq!(users_row[5], "1");
    let horizon = douyin_gateway::token::unix_now() + 7 * 86400;
    let within = tokens
        .iter()
        .filter(|t| t["class"] == "user" && t["state"] == "valid")
        .filter(|t| t["reauthorize_by"].as_u64().is_some_and(|b| b <= horizon))
        .count();
    assert_eq!(within, 122);
    assert_eq!(users_row[6], within.to_string());
    assert_eq!(
        row(&page, "users", "main</td><td>biz")[2..],
        ["0", "0", "0", "0", "—"],
        "biz tokens have a row of their own, none yet"
    );
    let apps_row = row(&page, "apps", "main");
    let client = tokens.iter().find(|t| t["class"] == "client").unwrap();
    assert_eq!(apps_row[2], client["state"].as_str().unwrap(), "{apps_row:?}");
    assert!(
        apps_row[3].starts_with("in 1h") || apps_row[3] == "in 2h 0m",
        "{apps_row:?}"
    );
    assert_eq!((apps_row[4].as_str(), apps_row[5].as_str()), ("ok", "1"));
    assert!(page.contains("<p id=\"forecast-total\">123 user(s)</p>"), "{page}");
    assert!(page.contains("Page 1 of 3"));
    let errors = &page[page.find("<table id=\"errors\">").unwrap()..];
    let errors = &errors[..errors.find("</table>").unwrap()];
    assert!(
        errors.contains("<code>ou_dead</code>") && errors.contains(">reauthorize<"),
        "{errors}"
    );
    // The one that must re-authorize now comes first.
    let forecast = &page[page.find("<table id=\"forecast\">").unwrap()..];
    assert!(forecast.find("ou_dead").unwrap() < forecast.find("ou_page").unwrap());
    // No token value: none the platform issued, none imported.
    for t in ["act.", "rft.", "clt."] {
        assert!(!page.contains(t), "{t} on the page");
    }

    // Search and paging.
    let get = |q: &str| {
        let http = http.clone();
        let url = gw.admin(&format!("/status?{q}"));
        async move {
            http.send(Method::GET, &url, &[("x-admin-key", ADMIN_KEY)], "")
                .await
                .text()
        }
    };
    let found = get(&format!("q={}", &users[0][..12])).await;
    assert!(found.contains("<p id=\"forecast-total\">1 user(s)"), "{found}");
    assert!(found.contains(&users[0]) && !found.contains(&users[1]));
    let last = get("page=3").await;
    // 123 in the forecast: ou_dead (now), 120 in 2 days, the 2 authorized in 3 days: the last
    // page (100..123) has 21 of the 120 and the 2 authorized.
    assert_eq!(last.matches("<td><code>ou_page").count(), 21);
    assert!(last.contains(&users[0]) && last.contains(&users[1]));
    assert!(last.contains("Page 3 of 3") && last.contains("previous"));
}

/// The routes the traffic tests add: an enterprise API on biz tokens, and a user API configured
/// as a client route (the platform rejects every client_token there, so the route is distrusted).
const TRAFFIC_ROUTES: &str = "[[routes]]\nname = \"enterprise\"\npath = \"/api/douyin/v1/enterprise/*\"\n\
    token = \"biz\"\nbiz_scope = \"data.external.item\"\n\n\
    [[routes]]\nname = \"misrouted\"\npath = \"/video/list/\"\ntoken = \"client\"\ninject = \"query\"\n";

/// What [`drive_traffic`] did, for the assertions.
struct Driven {
    /// The user who revoked the app through the webhook.
    revoked: String,
}

/// Traffic and token events of every kind the page shows: 4 calls on `ticket` (one after the
/// platform revoked the client_token: a platform code, an early eviction), 2 that match no route,
/// 1 biz call, a user who revokes the app (the signed `unauthorize` webhook) and then calls
/// (`user_authorization_required`), and a misrouted route rejected until it is distrusted.
async fn drive_traffic(sb: &douyin_gateway::sandbox::Sandbox, http: &Http, gw: &Gateway) -> Driven {
    for _ in 0..3 {
        assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    }
    http.control(sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
        .await;
    assert_eq!(
        http.get(&gw.url("/js/getticket/")).await.status,
        200,
        "refreshed and replayed"
    );
    for _ in 0..2 {
        assert_eq!(http.get(&gw.url("/no/such/route/")).await.status, 404);
    }
    let r = http
        .get(&gw.url("/api/douyin/v1/enterprise/item/list/?open_id=ent_1"))
        .await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());

    let revoked = open_id_of(&http.authorize(gw, "main").await.text());
    let event = json!({"event": "unauthorize", "client_key": CLIENT_KEY, "from_user_id": revoked,
        "content": "{\"scopes\":[\"user_info\"]}"})
    .to_string();
    let signature = {
        use sha1::Digest;
        let mut h = sha1::Sha1::new();
        h.update(CLIENT_SECRET.as_bytes());
        h.update(event.as_bytes());
        hex::encode(h.finalize())
    };
    let r = http
        .send(
            Method::POST,
            &gw.admin("/webhooks/douyin"),
            &[("x-douyin-signature", &signature)],
            event,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http
        .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={revoked}")))
        .await;
    assert_eq!(r.gateway_error().as_deref(), Some("user_authorization_required"));

    // Each call: rejected, a new token, rejected again (a strike); the second strike in a row
    // distrusts the route for this caller.
    for _ in 0..2 {
        http.get(&gw.url("/video/list/?open_id=u1")).await;
    }
    let m = http.metrics(gw).await;
    assert_eq!(
        metric(
            &m,
            "douyin_gateway_route_rejects_fresh_tokens_total{route=\"misrouted\"}"
        ),
        Some(2.0),
        "{m}"
    );
    Driven { revoked }
}

/// The text of the first row of `table_id` that contains `needle`.
fn row_with(page: &str, table_id: &str, needle: &str) -> String {
    let table = &page[page.find(&format!("<table id=\"{table_id}\">")).unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    table
        .split("<tr>")
        .find(|r| r.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle} in {table}"))
        .to_owned()
}

/// What the page must say of [`drive_traffic`], read from its HTML (as served, or as Chromium
/// rendered it): the numbers are those of `/metrics` and of what was driven.
fn assert_traffic(page: &str, metrics: &str, driven: &Driven) {
    let requests = |route: &str, status: &str| {
        metric(
            metrics,
            &format!("douyin_gateway_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
        .unwrap_or(0.0) as u64
    };
    let ticket = row(page, "traffic", "ticket");
    assert_eq!(ticket[1], "4", "{ticket:?}");
    assert_eq!(ticket[1], requests("ticket", "200").to_string());
    assert_eq!(ticket[2], "1", "the revoked token's rejection: {ticket:?}");
    assert!(
        ticket[3].ends_with(" ms") && ticket[4].ends_with(" ms"),
        "p50, p99: {ticket:?}"
    );
    let no_route = row(page, "traffic", "_no_route");
    assert_eq!((no_route[1].as_str(), no_route[2].as_str()), ("2", "2"), "{no_route:?}");
    assert_eq!(row(page, "traffic", "enterprise")[1], "1");
    let video = row(page, "traffic", "video-list");
    assert_eq!(video[1], requests("video-list", "401").to_string(), "{video:?}");
    assert_ne!(video[2], "0", "{video:?}");

    // Errors by code, each as /metrics counts it.
    let platform = row(page, "traffic-errors", "ticket");
    assert_eq!(platform[1], "platform", "{platform:?}");
    let code = &platform[2];
    assert_eq!(
        metric(
            metrics,
            &format!("douyin_gateway_platform_errors_total{{code=\"{code}\",route=\"ticket\"}}")
        ),
        Some(1.0),
        "{platform:?}"
    );
    assert_eq!(platform[3], "1");
    let no_route = row(page, "traffic-errors", "_no_route");
    assert_eq!(no_route[1..4], ["gateway", "no_route", "2"], "{no_route:?}");
    assert_eq!(requests("_no_route", "404"), 2);
    assert!(
        row_with(page, "traffic-errors", "user_authorization_required").contains("<td>video-list</td>"),
        "{page}"
    );

    // The biz token.
    assert_eq!(row(page, "users", "main</td><td>biz")[2], "1", "valid");

    // The token events, with the user's open_id and never a token.
    let revocation = row_with(page, "events", &driven.revoked);
    assert!(
        revocation.contains("reauthorization_required") && revocation.contains("unauthorize event"),
        "{revocation}"
    );
    // The client_token the platform revoked moments after it was fetched.
    row_with(page, "events", "evicted_early</td><td>main</td><td>client</td>");
    let distrusted = row_with(page, "events", "route_distrusted");
    assert!(
        distrusted.contains("route misrouted") && distrusted.contains("<td>client</td>"),
        "{distrusted}"
    );
    for t in ["act.", "rft.", "clt.", "bus_act."] {
        assert!(!page.contains(t), "{t} on the page");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_traffic_biz_tokens_and_token_events() {
    let sb = sandbox().await;
    let upstream = sb.url();
    let gw = gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&upstream, secret)
            .redirect_to(admin)
            .extra(TRAFFIC_ROUTES)
            .render()
    })
    .await;
    let http = Http::default();
    let driven = drive_traffic(&sb, &http, &gw).await;
    let r = http
        .send(Method::GET, &gw.admin("/status"), &[("x-admin-key", ADMIN_KEY)], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-security-policy"], CSP);
    let page = r.text();
    assert_traffic(&page, &http.metrics(&gw).await, &driven);
    // Sparklines are inline SVG: bars for the busy bucket, lines for the latency.
    let ticket = row_with(&page, "traffic", "<td>ticket</td>");
    assert!(ticket.contains("<svg class=\"spark\"") && ticket.contains("<rect") && ticket.contains("<polyline"));
    assert!(
        !page.contains("<script") && !page.contains("src="),
        "no script, nothing fetched"
    );
}

/// In a real browser, logged in with HTTP Basic, with traffic flowing: the page renders (a
/// screenshot, kept in `target/test-output/status-page.png`), with the numbers of
/// `/admin/tokens` and `/metrics` and what was driven.
#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium: apt-get install chromium (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_renders_in_a_browser() {
    let bin = chromium();
    let sb = sandbox().await;
    let upstream = sb.url();
    let gw = gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&upstream, secret)
            .redirect_to(admin)
            .extra(TRAFFIC_ROUTES)
            .render()
    })
    .await;
    let http = Http::default();
    // Traffic flowing: calls, errors by code, token events (the page's 5 minutes hold them all).
    let driven = drive_traffic(&sb, &http, &gw).await;
    for _ in 0..3 {
        http.authorize(&gw, "main").await;
    }
    import_dead_user(&http, &gw, "ou_dead").await;
    assert_eq!(
        http.get(&gw.url("/api/douyin/v1/video/video_list/?open_id=ou_dead"))
            .await
            .status,
        401
    );
    let tokens: Vec<Value> = http.admin(&gw, Method::GET, "/admin/tokens", "").await.json()["tokens"]
        .as_array()
        .unwrap()
        .clone();
    let count = |state: &str| {
        tokens
            .iter()
            .filter(|t| t["class"] == "user" && t["state"] == state)
            .count()
            .to_string()
    };

    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://ops:{ADMIN_KEY}@{}/status", gw.running.admin_addr);
    headless(
        &bin,
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,2000"],
        &url,
    )
    .await;
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[1..4], b"PNG");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1280, 2000));
    assert!(
        png.len() > 20_000,
        "a page with content, not a blank one: {} bytes",
        png.len()
    );
    eprintln!("status page screenshot: {}", shot.display());
    let dom = headless(&bin, &["--dump-dom"], &url).await;
    assert!(dom.contains("douyin-gateway status"), "{dom}");
    let users = row(&dom, "users", "main</td><td>user");
    assert_eq!(
        (users[2].as_str(), users[5].as_str()),
        (count("valid").as_str(), count("reauthorization_required").as_str())
    );
    assert_eq!(users[2], "3");
    assert_eq!(row(&dom, "apps", "main")[2], "valid");
    assert_traffic(&dom, &http.metrics(&gw).await, &driven);
    assert!(dom.contains("<svg class=\"spark\""), "sparklines rendered as SVG");
}
