//! Many apps in one gateway: separate client tokens, users keyed per app (the same open_id under
//! two apps is two users), authorization and code exchange per app, metrics labelled per app.

mod common;

use common::*;
use http::Method;
use serde_json::json;

const SECOND_KEY: &str = "awsandbox0000002";
const SECOND_SECRET: &str = "second-secret";
const SAME_USER: &str = "_000same-person";

#[tokio::test]
async fn two_apps_side_by_side() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        apps: vec![
            format!("{CLIENT_KEY}:{CLIENT_SECRET}"),
            format!("{SECOND_KEY}:{SECOND_SECRET}"),
        ],
        consent_open_id: Some(SAME_USER.into()),
        ..Default::default()
    })
    .await;
    let mut second_secret = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut second_secret, SECOND_SECRET.as_bytes()).unwrap();
    let upstream = sb.url();
    let second_path = second_secret.path().display().to_string();
    let gw = gateway_knowing_admin(|admin, secret| {
        format!(
            r#"[server]
listen = "127.0.0.1:0"
admin_listen = "{admin}"
[upstream]
base_url = "{upstream}"
[store]
kind = "memory"
[admin]
api_key_sha256 = "{admin_key}"
[[apps]]
name = "main"
client_key = "{CLIENT_KEY}"
client_secret_file = "{secret}"
redirect_uri = "http://{admin}/oauth/callback"
scopes = ["user_info"]
[[apps]]
name = "second"
client_key = "{SECOND_KEY}"
client_secret_file = "{second_path}"
redirect_uri = "http://{admin}/oauth/callback"
scopes = ["user_info"]
[[callers]]
name = "backend"
api_key_sha256 = "{caller}"
exchange_codes = true
[[routes]]
name = "ticket-main"
path = "/js/getticket/"
token = "client"
app = "main"
[[routes]]
name = "role-second"
path = "/api/douyin/v1/role/check/"
token = "client"
app = "second"
[[routes]]
name = "videos-main"
path = "/api/douyin/v1/video/video_list/"
token = "user"
app = "main"
[[routes]]
name = "videos-second"
path = "/video/list/"
token = "user"
inject = "query"
app = "second"
"#,
            secret = secret.display(),
            admin_key = douyin_gateway::caller::hash_key(ADMIN_KEY),
            caller = douyin_gateway::caller::hash_key(CALLER_KEY),
        )
    })
    .await;
    let http = Http::default();

    // A client token each.
    assert_eq!(
        http.get(&gw.url("/js/getticket/")).await.json()["data"]["error_code"],
        0
    );
    assert_eq!(
        http.post(&gw.url("/api/douyin/v1/role/check/"), "{}").await.json()["err_no"],
        0
    );
    assert_eq!(n(&http.stats(&sb).await["client_token_calls"]), 2);

    // The same person authorizes both apps: two users.
    assert_eq!(open_id_of(&http.authorize(&gw, "main").await.text()), SAME_USER);
    assert_eq!(open_id_of(&http.authorize(&gw, "second").await.text()), SAME_USER);
    let tokens = http.admin(&gw, Method::GET, "/admin/tokens", "").await.json();
    let mut listed: Vec<(String, String)> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["app"].as_str().unwrap().into(), t["class"].as_str().unwrap().into()))
        .collect();
    listed.sort();
    let pair = |a: &str, c: &str| (a.to_string(), c.to_string());
    assert_eq!(
        listed,
        vec![
            pair("main", "client"),
            pair("main", "user"),
            pair("second", "client"),
            pair("second", "user")
        ]
    );
    let main_call = http
        .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={SAME_USER}")))
        .await;
    assert_eq!(main_call.json()["data"]["error_code"], 0, "{}", main_call.text());
    let second_call = http.get(&gw.url(&format!("/video/list/?open_id={SAME_USER}"))).await;
    assert_eq!(second_call.json()["data"]["error_code"], 0, "{}", second_call.text());
    // Each app's calls carried that app's user token.
    let log = http.requests(&sb).await;
    let user_tokens: Vec<String> = log
        .iter()
        .filter(|e| e["path"] == "/api/douyin/v1/video/video_list/" || e["path"] == "/video/list/")
        .map(|e| {
            let h = e["access_token_headers"].as_array().unwrap();
            let q = e["access_token_params"].as_array().unwrap();
            h.iter().chain(q).next().unwrap().as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(user_tokens.len(), 2);
    assert_ne!(user_tokens[0], user_tokens[1], "one user, two apps, two tokens");

    // Forgetting the user of one app leaves the other's.
    let r = http
        .admin(&gw, Method::DELETE, &format!("/admin/users/second/{SAME_USER}"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        http.get(&gw.url(&format!("/video/list/?open_id={SAME_USER}")))
            .await
            .status,
        401
    );
    let again = http
        .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={SAME_USER}")))
        .await;
    assert_eq!(again.json()["data"]["error_code"], 0);

    // A code for the second app, exchanged for it.
    let code = http.code_for(&sb, SECOND_KEY).await;
    let r = http
        .exchange_code(&gw, CALLER_KEY, json!({"app": "second", "code": code}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        http.get(&gw.url(&format!("/video/list/?open_id={SAME_USER}")))
            .await
            .status,
        200
    );

    // Metrics name the app.
    let m = http.metrics(&gw).await;
    for app in ["main", "second"] {
        let line = format!(r#"douyin_gateway_token_fetches_total{{app="{app}",class="client",outcome="ok"}}"#);
        assert_eq!(metric(&m, &line), Some(1.0), "{line}");
    }
}
