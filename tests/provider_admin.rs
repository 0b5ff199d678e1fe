//! Service providers in the admin API, the status page and the metrics (issue 18 item 5): a
//! merchant app's refresh token imported (as when migrating from a home-made token server) is
//! listed with no live access token, survives a restart, is seen by another instance on the same
//! Redis, and is forgotten again; unknown providers are 404, bad appids 400, no admin key 401;
//! `/status` shows the provider and its merchant apps; the provider's metrics are there at zero
//! (the ticket's age at -1) from the first scrape. No token value in any answer.
//!
//! A migration is played against the sandbox's third-party platform: the imported refresh token
//! is spent once by the gateway's refresh, and a merchant app that never authorized must.

mod common;

use common::*;
use http::Method;
use serde_json::{json, Value};

use douyin_gateway::sandbox::provider::{COMPONENT_APPID as APPID, MESSAGE_TOKEN as TOKEN};

const MERCHANT: &str = "tt_merchant_1";
const REFRESH: &str = "rft.imported-from-a-home-made-server";

fn now() -> u64 {
    douyin_gateway::vocab::unix_now()
}

async fn import(http: &Http, gw: &Gateway, appid: &str, body: Value) -> Resp {
    http.admin(
        gw,
        Method::PUT,
        &format!("/admin/providers/tp/authorizers/{appid}"),
        &body.to_string(),
    )
    .await
}

/// The merchant apps `GET /admin/providers/tp/authorizers` lists.
async fn authorizers(http: &Http, gw: &Gateway) -> Vec<Value> {
    let r = http.admin(gw, Method::GET, "/admin/providers/tp/authorizers", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(REFRESH), "a refresh token in {}", r.text());
    let v = r.json();
    assert_eq!(v["provider"], "tp");
    v["authorizers"].as_array().unwrap().clone()
}

/// `tp` as `GET /admin/providers` shows it.
async fn provider(http: &Http, gw: &Gateway) -> Value {
    let r = http.admin(gw, Method::GET, "/admin/providers", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json()["providers"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    list[0].clone()
}

#[tokio::test]
async fn an_imported_merchant_app_is_listed_without_a_live_token_survives_a_restart_and_is_forgotten() {
    let sb = sandbox().await;
    let http = Http::default();
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_sqlite_store(&dir.path().join("tokens.db"));
    let gw = provider_gateway(&sb, &store).await;
    assert_eq!(authorizers(&http, &gw).await, Vec::<Value>::new());
    let p = provider(&http, &gw).await;
    assert_eq!(
        p,
        json!({"name": "tp", "component_appid": APPID, "api_version": "v1", "ticket": null,
               "component_token": null,
               "authorizers": {"valid": 0, "expired": 0, "failed": 0, "reauthorization_required": 0}})
    );

    let before = now();
    let r = import(
        &http,
        &gw,
        MERCHANT,
        json!({"authorizer_refresh_token": REFRESH, "refresh_expires_in": "864000", "permissions": [1, "2"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(REFRESH), "{}", r.text());
    assert_eq!(
        (&r.json()["stored"], &r.json()["authorizer_appid"]),
        (&json!(true), &json!(MERCHANT))
    );
    // A second merchant app with a full lifetime and no permissions given.
    let r = import(
        &http,
        &gw,
        "tt_merchant_2",
        json!({"authorizer_refresh_token": "rft.second"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let check = |list: &[Value]| {
        let after = now();
        assert_eq!(list.len(), 2, "{list:?}");
        let m = &list[0];
        assert_eq!(m["authorizer_appid"], MERCHANT);
        // No live access token: the first call refreshes with the imported refresh token.
        assert_eq!(m["state"], "expired", "{m}");
        assert!(n(&m["expires_unix"]) <= after, "{m}");
        let refresh_expires = n(&m["refresh_expires_unix"]);
        assert!((before + 864_000..=after + 864_000).contains(&refresh_expires), "{m}");
        // Ten of the platform's thirty days left: issued twenty days ago, as far as anyone knows.
        let age = n(&m["refresh_token_age_s"]);
        assert!((20 * 86_400..=20 * 86_400 + (after - before)).contains(&age), "{m}");
        assert_eq!(m["permissions"], json!(["1", "2"]));
        assert_eq!(m["renewals"], 0);
        let second = &list[1];
        assert_eq!(second["authorizer_appid"], "tt_merchant_2");
        assert_eq!(
            (
                &second["permissions"],
                n(&second["refresh_token_age_s"]) <= after - before
            ),
            (&json!([]), true)
        );
    };
    check(&authorizers(&http, &gw).await);
    assert_eq!(provider(&http, &gw).await["authorizers"]["expired"], 2);
    // /admin/tokens names the merchant app too (its provider as the app).
    let r = http.admin(&gw, Method::GET, "/admin/tokens", "").await;
    assert!(!r.text().contains(REFRESH), "{}", r.text());
    let tokens = r.json()["tokens"].as_array().unwrap().clone();
    let named: Vec<(&Value, &Value, &Value)> = tokens
        .iter()
        .filter(|t| t["class"] == "authorizer")
        .map(|t| (&t["app"], &t["authorizer_appid"], &t["state"]))
        .collect();
    assert_eq!(
        named,
        [
            (&json!("tp"), &json!(MERCHANT), &json!("expired")),
            (&json!("tp"), &json!("tt_merchant_2"), &json!("expired"))
        ]
    );

    // Durable: a restart lists both again, still without a live token.
    gw.running.stop().await;
    let gw = provider_gateway(&sb, &store).await;
    check(&authorizers(&http, &gw).await);

    let r = http
        .admin(
            &gw,
            Method::DELETE,
            &format!("/admin/providers/tp/authorizers/{MERCHANT}"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], true);
    let left = authorizers(&http, &gw).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["authorizer_appid"], "tt_merchant_2");
    let r = http
        .admin(
            &gw,
            Method::DELETE,
            &format!("/admin/providers/tp/authorizers/{MERCHANT}"),
            "",
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.gateway_error().as_deref()),
        (404, Some("not_found"))
    );
    // Forgotten means no grant: a refresh now says the merchant app must authorize.
    let r = http
        .admin(
            &gw,
            Method::POST,
            &format!("/admin/providers/tp/authorizers/{MERCHANT}/refresh"),
            "",
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.gateway_error().as_deref()),
        (401, Some("authorizer_authorization_required")),
        "{}",
        r.text()
    );
    // And so after another restart.
    gw.running.stop().await;
    let gw = provider_gateway(&sb, &store).await;
    assert_eq!(authorizers(&http, &gw).await.len(), 1);
}

#[cfg_attr(
    not(has_redis),
    ignore = "needs a Redis: apt-get install redis-server (the test starts its own; CI installs it) or set REDIS_URL, then touch build.rs"
)]
#[tokio::test]
async fn another_instance_on_the_same_redis_lists_what_the_store_holds() {
    let redis = OwnRedis::start();
    let store = fresh_redis_store(&redis.url);
    let sb = sandbox().await;
    let http = Http::default();
    let a = provider_gateway(&sb, &store).await;
    let b = provider_gateway(&sb, &store).await;
    let r = import(
        &http,
        &a,
        MERCHANT,
        json!({"authorizer_refresh_token": REFRESH, "permissions": ["x"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // b never needed it: it is in b's list from the store.
    let list = authorizers(&http, &b).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (&list[0]["authorizer_appid"], &list[0]["state"], &list[0]["permissions"]),
        (&json!(MERCHANT), &json!("expired"), &json!(["x"]))
    );
    // Forgotten through b: gone from the store and from b.
    let r = http
        .admin(
            &b,
            Method::DELETE,
            &format!("/admin/providers/tp/authorizers/{MERCHANT}"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(authorizers(&http, &b).await, Vec::<Value>::new());
}

#[tokio::test]
async fn unknown_providers_bad_appids_bad_bodies_and_no_admin_key_are_refused() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = provider_gateway(&sb, "[store]\nkind = \"memory\"\n").await;
    let body = json!({"authorizer_refresh_token": REFRESH}).to_string();
    for (method, path) in [
        (Method::GET, "/admin/providers/nope/authorizers"),
        (Method::PUT, "/admin/providers/nope/authorizers/tt_m"),
        (Method::DELETE, "/admin/providers/nope/authorizers/tt_m"),
        (Method::POST, "/admin/providers/nope/authorizers/tt_m/refresh"),
    ] {
        let r = http.admin(&gw, method.clone(), path, &body).await;
        assert_eq!(
            (r.status.as_u16(), r.gateway_error().as_deref()),
            (404, Some("not_found")),
            "{method} {path}: {}",
            r.text()
        );
        assert!(r.text().contains("no [[providers]] named \\\"nope\\\""), "{}", r.text());
    }
    for appid in ["tt.m", "%3Cscript%3E", "a%20b", &"a".repeat(65)] {
        for (method, suffix) in [(Method::PUT, ""), (Method::DELETE, ""), (Method::POST, "/refresh")] {
            let path = format!("/admin/providers/tp/authorizers/{appid}{suffix}");
            let r = http.admin(&gw, method.clone(), &path, &body).await;
            assert_eq!(
                (r.status.as_u16(), r.gateway_error().as_deref()),
                (400, Some("bad_request")),
                "{method} {path}: {}",
                r.text()
            );
        }
    }
    for bad in [
        json!({}),
        json!({"authorizer_refresh_token": ""}),
        json!({"authorizer_refresh_token": "r", "refresh_expires_in": 0}),
        json!({"authorizer_refresh_token": "r", "refresh_expires_in": "soon"}),
        json!({"authorizer_refresh_token": "r", "permissions": ["a,b"]}),
        json!({"authorizer_refresh_token": "r", "permissions": [{"id": 1}]}),
        json!({"authorizer_refresh_token": "r", "access_token": "act.x"}),
    ] {
        let r = import(&http, &gw, MERCHANT, bad.clone()).await;
        assert_eq!(
            (r.status.as_u16(), r.gateway_error().as_deref()),
            (400, Some("bad_request")),
            "{bad}: {}",
            r.text()
        );
    }
    assert_eq!(authorizers(&http, &gw).await, Vec::<Value>::new());
    // A merchant app never imported nor authorized must authorize.
    let r = http
        .admin(
            &gw,
            Method::POST,
            "/admin/providers/tp/authorizers/tt_never/refresh",
            "",
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.gateway_error().as_deref()),
        (401, Some("authorizer_authorization_required")),
        "{}",
        r.text()
    );
    // The endpoints' neighbours.
    for (method, path) in [
        (Method::POST, "/admin/providers"),
        (Method::GET, "/admin/providers/tp"),
        (Method::GET, "/admin/providers/tp/authorizers/tt_m"),
    ] {
        let r = http.admin(&gw, method.clone(), path, "").await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
    for (method, path) in [
        (Method::GET, "/admin/providers"),
        (Method::GET, "/admin/providers/tp/authorizers"),
        (Method::PUT, "/admin/providers/tp/authorizers/tt_m"),
        (Method::DELETE, "/admin/providers/tp/authorizers/tt_m"),
        (Method::POST, "/admin/providers/tp/authorizers/tt_m/refresh"),
    ] {
        let r = http.send(method.clone(), &gw.admin(path), &[], body.clone()).await;
        assert_eq!(
            (r.status.as_u16(), r.gateway_error().as_deref()),
            (401, Some("admin_unauthenticated")),
            "{method} {path}: {}",
            r.text()
        );
    }
    assert_eq!(authorizers(&http, &gw).await, Vec::<Value>::new());
}

#[tokio::test]
async fn the_status_page_and_the_metrics_show_the_provider_and_its_merchant_apps() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = provider_gateway(&sb, "[store]\nkind = \"memory\"\n").await;
    let m = http.metrics(&gw).await;
    for state in ["valid", "expired", "failed", "reauthorization_required"] {
        let series = format!("douyin_gateway_authorizers{{provider=\"tp\",state=\"{state}\"}}");
        assert_eq!(metric(&m, &series), Some(0.0), "{series}");
    }
    assert_eq!(
        metric(&m, "douyin_gateway_provider_ticket_age_seconds{provider=\"tp\"}"),
        Some(-1.0)
    );
    for class in ["component", "authorizer"] {
        let series = format!("douyin_gateway_token_fetches_total{{app=\"tp\",class=\"{class}\",outcome=\"ok\"}}");
        assert_eq!(metric(&m, &series), Some(0.0), "{series}");
    }

    let r = import(&http, &gw, MERCHANT, json!({"authorizer_refresh_token": REFRESH})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A ticket, as the platform pushes it.
    let event = provider_event(
        &json!({"Ticket": "ticket-1", "MsgType": "Ticket", "Event": "PUSH"}),
        APPID,
        TOKEN,
        now(),
    );
    let r = http.post(&gw.admin("/providers/tp/events"), event.to_string()).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "success"));

    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(&m, "douyin_gateway_authorizers{provider=\"tp\",state=\"expired\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "douyin_gateway_authorizers{provider=\"tp\",state=\"valid\"}"),
        Some(0.0)
    );
    let age = metric(&m, "douyin_gateway_provider_ticket_age_seconds{provider=\"tp\"}").unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
    let p = provider(&http, &gw).await;
    assert!(n(&p["ticket"]["received_unix"]) <= now(), "{p}");
    assert!(n(&p["ticket"]["age_s"]) < 60, "{p}");

    let page = http
        .send(Method::GET, &gw.admin("/status"), &[("x-admin-key", ADMIN_KEY)], "")
        .await;
    assert_eq!(page.status, 200);
    let page = page.text();
    assert!(
        !page.contains(REFRESH) && !page.contains("ticket-1"),
        "a secret on the page"
    );
    let table = &page[page.find("<table id=\"providers\">").expect("a providers table")..];
    let row = &table[table.find("<tr><td>tp</td>").expect("a row for tp")..];
    let row = &row[..row.find("</tr>").unwrap()];
    // The ticket just received, no component token yet, and the merchant app: expired (no live
    // token until its first call), none to re-authorize.
    assert!(row.contains("<td class=\"ok\">"), "{row}");
    assert!(row.contains("<td>not fetched yet</td><td>—</td>"), "{row}");
    assert!(
        row.ends_with("<td class=\"n\">0</td><td class=\"n\">1</td><td class=\"n\">0</td><td class=\"n\">0</td>"),
        "{row}"
    );
    assert!(page.contains("<table id=\"merchant-reauthorization\">"), "{page}");
    // Merchant apps are the provider's, not an app's.
    assert!(!page.contains("<td>main</td><td>authorizer</td>"), "{page}");
}

/// Each admin action on a merchant app is an `audit` line naming the provider and the appid, and
/// no refresh token reaches the log.
#[tokio::test(flavor = "multi_thread")]
async fn imports_deletions_and_refreshes_of_merchant_apps_are_audited() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .extra(&provider_table())
        .extra("[log]\nformat = \"json\"\n")
        .render();
    let cfg = text_file(&text);
    let (mut p, _, admin_port) = Proc::serve(&["serve", "--config", cfg.path().to_str().unwrap()], &[]);
    let http = Http::default();
    let url = |suffix: &str| format!("http://127.0.0.1:{admin_port}/admin/providers/tp/authorizers/{MERCHANT}{suffix}");
    let key = [("x-admin-key", ADMIN_KEY)];
    let body = json!({"authorizer_refresh_token": REFRESH}).to_string();
    for (method, suffix, want) in [
        (Method::PUT, "", 200),
        (Method::DELETE, "", 200),
        (Method::POST, "/refresh", 401),
    ] {
        let r = http.send(method.clone(), &url(suffix), &key, body.clone()).await;
        assert_eq!(r.status, want, "{method} {suffix}: {}", r.text());
    }
    p.wait_for("admin asked for a token refresh");
    p.signal("-TERM");
    let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0, "{log}");
    let audited: Vec<(String, String, String)> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["target"] == "audit")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("?").to_string();
            (s("action"), s("provider"), s("authorizer_appid"))
        })
        .collect();
    let want = |action: &str| (action.to_string(), "tp".to_string(), MERCHANT.to_string());
    assert_eq!(audited, [want("import"), want("delete"), want("refresh")], "{log}");
    assert!(!log.contains(REFRESH), "{log}");
}

/// A migration over the sandbox's third-party platform: the refresh token a home-made server got
/// for a merchant app is imported, the gateway's first refresh spends it (once: the platform then
/// refuses the home-made server's copy), the next refresh uses the gateway's own; a merchant app
/// imported with a refresh token the platform never issued, and which never authorized the
/// provider, must authorize: 401, listed so by the admin API, the gauges and the status page.
#[tokio::test]
async fn an_imported_refresh_token_is_spent_once_and_an_app_that_never_authorized_must_authorize() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = provider_gateway(&sb, "[store]\nkind = \"memory\"\n").await;
    let r = push_ticket(&http, &sb, &gw).await;
    assert_eq!(r["body"], "success", "{r}");
    let ticket = r["ticket"].as_str().unwrap().to_string();

    // The home-made server: the merchant app authorized it, and it exchanged the code itself.
    let code = http
        .control(
            &sb,
            "/sandbox/provider/authorize",
            json!({"authorizer_appid": MERCHANT, "permissions": [1, 2]}),
        )
        .await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let platform_get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", sb.url());
        async move { http.send(Method::GET, &url, &[], "").await.json() }
    };
    let component = platform_get(format!(
        "/openapi/v1/auth/tp/token?component_appid={APPID}&component_appsecret=sandbox-component-secret\
         &component_ticket={ticket}"
    ))
    .await["component_access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let grant = platform_get(format!(
        "/openapi/v1/oauth/token?component_appid={APPID}&component_access_token={component}\
         &grant_type=app_to_tp_authorization_code&authorization_code={code}"
    ))
    .await;
    let home_made = grant["authorizer_refresh_token"].as_str().unwrap().to_string();

    let r = import(
        &http,
        &gw,
        MERCHANT,
        json!({"authorizer_refresh_token": home_made, "refresh_expires_in": grant["refresh_expires_in"],
               "permissions": [1, 2]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stats = |http: Http| {
        let url = format!("{}/sandbox/provider", sb.url());
        async move { http.send(Method::GET, &url, &[], "").await.json() }
    };
    let before = stats(http.clone()).await;
    let refresh = |appid: &'static str| {
        let (http, path) = (http.clone(), format!("/admin/providers/tp/authorizers/{appid}/refresh"));
        let gw = &gw;
        async move { http.admin(gw, Method::POST, &path, "").await }
    };
    for round in 1..=2 {
        let r = refresh(MERCHANT).await;
        assert_eq!(r.status, 200, "refresh {round}: {}", r.text());
        assert!(!r.text().contains("act."), "{}", r.text());
        assert_eq!(r.json()["refreshed"], true);
        assert!(n(&r.json()["expires_unix"]) > now() + 3600, "{}", r.text());
        let after = stats(http.clone()).await;
        assert_eq!(
            (
                n(&after["refreshes"]) - n(&before["refreshes"]),
                n(&after["refresh_reused"]) - n(&before["refresh_reused"]),
                n(&after["code_exchanges"]) - n(&before["code_exchanges"])
            ),
            (round, 0, 0),
            "one refresh per round, no refresh token sent twice, no code needed: {after}"
        );
        let m = authorizers(&http, &gw).await;
        assert_eq!(
            (&m[0]["state"], &m[0]["renewals"], &m[0]["permissions"]),
            (&json!("valid"), &json!(0), &json!(["1", "2"])),
            "{m:?}"
        );
        assert!(n(&m[0]["refresh_token_age_s"]) < 60, "{m:?}");
    }
    // The home-made server's copy was spent by the gateway's first refresh.
    let refused = platform_get(format!(
        "/openapi/v1/oauth/token?component_appid={APPID}&component_access_token={component}\
         &grant_type=app_to_tp_refresh_token&authorizer_refresh_token={home_made}"
    ))
    .await;
    assert_eq!(refused["errno"], 40021, "{refused}");

    // Never authorized: the made-up refresh token is refused, no code can be retrieved.
    let r = import(
        &http,
        &gw,
        "tt_never",
        json!({"authorizer_refresh_token": "rft.made-up"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = refresh("tt_never").await;
    assert_eq!(
        (r.status.as_u16(), r.gateway_error().as_deref()),
        (401, Some("authorizer_authorization_required")),
        "{}",
        r.text()
    );
    let list = authorizers(&http, &gw).await;
    let never = list.iter().find(|a| a["authorizer_appid"] == "tt_never").unwrap();
    assert_eq!(never["state"], "reauthorization_required", "{never}");
    assert!(never["reason"].as_str().is_some_and(|r| !r.is_empty()), "{never}");
    assert_eq!(
        provider(&http, &gw).await["authorizers"],
        json!({"valid": 1, "expired": 0, "failed": 0, "reauthorization_required": 1})
    );
    let m = http.metrics(&gw).await;
    for (state, want) in [("valid", 1.0), ("reauthorization_required", 1.0), ("expired", 0.0)] {
        let series = format!("douyin_gateway_authorizers{{provider=\"tp\",state=\"{state}\"}}");
        assert_eq!(metric(&m, &series), Some(want), "{series}");
    }
    let page = http
        .send(Method::GET, &gw.admin("/status"), &[("x-admin-key", ADMIN_KEY)], "")
        .await
        .text();
    let table = &page[page.find("<table id=\"merchant-reauthorization\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(
        table.contains("<tr><td>tp</td><td><code>tt_never</code></td><td>"),
        "{table}"
    );
    assert!(!table.contains(MERCHANT), "{table}");
    // The component token the refreshes used is on the page, valid.
    let row = &page[page.find("<table id=\"providers\">").unwrap()..];
    assert!(row.contains("<td class=\"ok\">valid</td>"), "{row}");
}
