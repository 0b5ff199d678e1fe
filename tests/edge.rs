//! Trust at the edge: what a hostile or careless caller sends, and what reaches the platform.
//! One canonical path for routing, permission and forwarding; no caller credential in any
//! spelling; one open_id, the one the platform will read.

mod common;

use common::*;
use http::Method;
use serde_json::Value;

const LIMITED_KEY: &str = "limited-key";

/// Routes and a caller limited to `/legacy/client/*` on top of the standard test config.
fn edge_extra() -> String {
    format!(
        r#"
[[routes]]
name = "legacy"
path = "/legacy/client/*"
token = "client"

[[routes]]
name = "hdr"
path = "/hdr/*"
token = "user"
open_id = "header:x-open-id"

[[routes]]
name = "douyin-v1"
path = "/api/douyin/v1/*"
token = "client"

[[callers]]
name = "limited"
api_key_sha256 = "{}"
routes = ["legacy"]
"#,
        douyin_gateway::caller::hash_key(LIMITED_KEY)
    )
}

/// Status line code and gateway error code of a raw answer.
fn status_and_code(out: &str) -> (u16, Option<String>) {
    let status = out
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    let code = out
        .find("\r\n\r\n")
        .and_then(|i| serde_json::from_str::<Value>(&out[i + 4..]).ok())
        .and_then(|v| v["gateway_error"]["code"].as_str().map(str::to_string));
    (status, code)
}

#[tokio::test]
async fn dot_segments_encoded_separators_and_empty_segments_are_refused_before_routing() {
    let sb = sandbox().await;
    let gw = gateway_with(&sb, |_| {}, &edge_extra()).await;
    let http = Http::default();
    // A caller allowed only /legacy/client/* tries to reach other APIs with the app's token.
    let escapes = [
        "/legacy/client/../../js/getticket/",
        "/legacy/client/%2e%2e/%2e%2e/js/getticket/",
        "/legacy/client/.%2E/.%2E/js/getticket/",
        "/legacy/client/%2E./js/getticket/",
        "/legacy/client/..%2f..%2fjs/getticket/",
        "/legacy/client/..%2F..%2Fjs/getticket/",
        "/legacy/client/..%5c..%5cjs/getticket/",
        "/legacy/client/..\\..\\js/getticket/",
        "/legacy/client//js/getticket/",
        "/legacy/client/x/.",
        "/legacy/client/./x",
        "/legacy/client/..;/..;/js/getticket/",
        "/legacy/client/%252e%252e/js/getticket/",
        "/legacy/client/%00/x",
        "/legacy/client/get%74icket/",
    ];
    for path in escapes {
        let out = raw(
            gw.running.addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: g\r\nx-gateway-key: {LIMITED_KEY}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            ),
        )
        .await;
        assert_eq!(
            status_and_code(&out),
            (400, Some("bad_request".into())),
            "{path} must be refused: {out}"
        );
        assert!(out.contains("x-gateway-error: bad_request"), "{out}");
        assert!(out.to_ascii_lowercase().contains("x-request-id:"), "{out}");
    }
    // A trailing `/.` would fall from the user route (methods, open_id check) to a client prefix route.
    for path in [
        "/api/douyin/v1/video/video_list/.",
        "/api/douyin/v1/video/video_list/%2e",
        "/api/douyin/v1/video/video_list//",
    ] {
        let r = http.get(&gw.url(&format!("{path}?open_id=u1"))).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("bad_request"), "{path}");
    }
    assert!(http.requests(&sb).await.is_empty(), "nothing reached the platform");

    // The canonical form still works, and is forwarded byte for byte.
    let r = http.get(&gw.url("/js/getticket/?x=a%20b")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = http.requests(&sb).await.pop().unwrap();
    assert_eq!(seen["path"], "/js/getticket/");
    assert!(seen["query"].as_str().unwrap().starts_with("x=a%20b&access_token="));
    // The limited caller keeps its own route, and still may not use the others.
    let r = http
        .send(
            Method::GET,
            &gw.url("/js/getticket/"),
            &[("x-gateway-key", LIMITED_KEY)],
            "",
        )
        .await;
    assert_eq!(r.gateway_error().as_deref(), Some("caller_forbidden"));
}

/// Header names a common server would read as the platform's `access-token`.
fn is_token_header(name: &str) -> bool {
    name.replace('_', "-").eq_ignore_ascii_case("access-token")
}

#[tokio::test]
async fn caller_credentials_in_any_spelling_never_reach_the_platform() {
    let sb = sandbox().await;
    let gw = gateway_with(&sb, |_| {}, &edge_extra()).await;
    let http = Http::default();

    // Header injection route: every spelling of the caller's header is gone, one token attached.
    for header in [
        "access_token",
        "Access_Token",
        "ACCESS-TOKEN",
        "access-token",
        "ACCESS_token",
    ] {
        let out = raw(
            gw.running.addr,
            &format!(
                "POST /api/douyin/v1/role/check/ HTTP/1.1\r\nHost: g\r\nx-gateway-key: {CALLER_KEY}\r\n{header}: evil-h\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            ),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{header}: {out}");
        let seen = http.requests(&sb).await.pop().unwrap();
        let names: Vec<&str> = seen["header_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .filter(|n| is_token_header(n))
            .collect();
        assert_eq!(names, ["access-token"], "{header}: {seen}");
        let values = seen["access_token_headers"].as_array().unwrap();
        assert_eq!(values.len(), 1, "{header}: {seen}");
        assert!(values[0].as_str().unwrap().starts_with("clt."), "{header}: {seen}");
    }

    // Query injection route: no spelling of the caller's parameter survives.
    let queries = [
        ";access_token=evil",
        "a=1;access_token=evil",
        "access_token%20=evil",
        "%20access_token=evil",
        "access_token+=evil",
        "access_token[]=evil",
        "access_token%5B%5D=evil",
        "access_token[0]=evil",
        "access-token=evil",
        "Access.Token=evil",
        "ACCESS_TOKEN=evil",
        "access%5Ftoken=evil",
        "access_token=evil&access_token=evil2",
    ];
    for q in queries {
        let r = http.get(&gw.url(&format!("/js/getticket/?{q}&keep=1"))).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        let seen = http.requests(&sb).await.pop().unwrap();
        let sent = seen["query"].as_str().unwrap();
        assert!(!sent.contains("evil"), "{q} reached the platform as {sent}");
        assert!(sent.contains("keep=1"), "{q}: other parameters are kept: {sent}");
        let params = seen["access_token_params"].as_array().unwrap();
        assert_eq!(params.len(), 1, "{q}: {seen}");
        assert!(params[0].as_str().unwrap().starts_with("clt."), "{q}: {seen}");
    }
}

#[tokio::test]
async fn a_repeated_open_id_is_refused() {
    let sb = sandbox().await;
    let gw = gateway_with(&sb, |_| {}, &edge_extra()).await;
    let http = Http::default();
    // user-1 is known to the gateway, so an ambiguous call would otherwise carry their token.
    let import = r#"{"access_token":"act.x","refresh_token":"rft.x","expires_in":3600,"refresh_expires_in":86400}"#;
    let r = http.admin(&gw, Method::PUT, "/admin/users/main/user-1", import).await;
    assert_eq!(r.status, 200, "{}", r.text());

    for q in [
        "open_id=&open_id=user-1",
        "open_id=user-1&open_id=user-1",
        "open_id=user-1;open_id=user-2",
        "open_id=user-1&Open_Id=user-2",
        "open_id=user-1&open_id[]=user-2",
        "open_id=user-1&open%5Fid=user-2",
    ] {
        let r = http
            .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?{q}")))
            .await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("bad_request"), "{q}");
    }
    for headers in [
        [("x-open-id", "user-1"), ("x-open-id", "user-1")],
        [("x-open-id", "user-1"), ("x_open_id", "user-2")],
    ] {
        let mut all = vec![("x-gateway-key", CALLER_KEY)];
        all.extend(headers);
        let r = http.send(Method::GET, &gw.url("/hdr/x"), &all, "").await;
        assert_eq!(r.status, 400, "{headers:?}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("bad_request"));
    }
    assert!(http.requests(&sb).await.is_empty(), "nothing reached the platform");
    // One open_id still works (the sandbox does not know user-1's imported token: it rejects it,
    // which shows the call went out with user-1's token).
    let r = http
        .get(&gw.url("/api/douyin/v1/video/video_list/?open_id=user-1"))
        .await;
    assert_ne!(r.status, 400, "{}", r.text());
    let seen = http.requests(&sb).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["access_token_headers"][0], "act.x");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_authorization_flood_does_not_lock_out_real_users() {
    let sb = sandbox().await;
    // 25 concurrent workers from one address: past the admin listener's per-address cap (16), so
    // that cap is lifted here (tests/abuse.rs covers it); fewer than its 64 connections, since at
    // that cap a pooled client's idle connection may be closed to make room for a new one.
    let upstream = sb.url();
    let gw = gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&upstream, secret)
            .server(|s| s.max_connections_per_ip = Some(0))
            .redirect_to(admin)
            .app("scopes = [\"user_info\", \"video.list.bytes\"]")
            .render()
    })
    .await;
    let http = Http::default();
    let authorize = gw.admin("/oauth/authorize?app=main");
    // 20,000 unauthenticated requests from one address: authorizations started and never
    // finished, callbacks with made-up states, and callbacks with real states and no code or a
    // made-up code. (`scripts/oauth-flood.py` is the long version.)
    let start = std::time::Instant::now();
    let flood = {
        let (http, authorize, callback) = (http.clone(), authorize.clone(), gw.admin("/oauth/callback"));
        tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::new();
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..25 {
                let (http, authorize, callback) = (http.clone(), authorize.clone(), callback.clone());
                tasks.spawn(async move {
                    let mut seen = Vec::new();
                    for i in 0..800 {
                        let r = match i % 4 {
                            0 => http.send(Method::GET, &authorize, &[], "").await,
                            1 => {
                                let url = format!("{callback}?state=forged{worker}x{i}&code=c");
                                http.send(Method::GET, &url, &[], "").await
                            }
                            n => {
                                let started = http.send(Method::GET, &authorize, &[], "").await;
                                let Some(location) = started.headers.get("location") else {
                                    seen.push(started.status.as_u16());
                                    continue;
                                };
                                let location = location.to_str().unwrap().to_string();
                                let state = form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
                                    .find(|(k, _)| k == "state")
                                    .unwrap()
                                    .1
                                    .into_owned();
                                let code = if n == 2 { "" } else { "&code=made-up" };
                                let url = format!("{callback}?state={state}{code}");
                                http.send(Method::GET, &url, &[], "").await
                            }
                        };
                        seen.push(r.status.as_u16());
                    }
                    seen
                });
            }
            while let Some(seen) = tasks.join_next().await {
                for s in seen.unwrap() {
                    *statuses.entry(s).or_insert(0u32) += 1;
                }
            }
            statuses
        })
    };
    // A real user during the burst, from another address, and another right after it.
    let user = Http::from_address("127.0.0.2");
    let during = user.authorize(&gw, "main").await;
    assert_eq!(during.status, 200, "during the flood: {}", during.text());
    let statuses = flood.await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert!(statuses.keys().all(|s| [302, 400, 429].contains(s)), "{statuses:?}");
    let after = user.authorize(&gw, "main").await;
    assert_eq!(after.status, 200, "after the flood: {}", after.text());
    // Memory: only the two real users' states are remembered, never the authorizations started,
    // the forged states, the callbacks without a code nor those with made-up codes.
    assert_eq!(gw.running.admin.oauth.remembered(), 2);
    // The platform saw the made-up codes at most at the exchange rate (20 a second, a burst of 20).
    let exchanges = n(&http.stats(&sb).await["access_token_calls"]);
    let bound = 2 + 20 + (20.0 * elapsed).ceil() as u64;
    assert!(exchanges <= bound, "{exchanges} exchanges in {elapsed:.1} s");
    let tokens = http.admin(&gw, Method::GET, "/admin/tokens", "").await.json();
    assert_eq!(
        tokens["tokens"].as_array().unwrap().len(),
        2,
        "the two real users, nothing from the flood: {tokens}"
    );
}
