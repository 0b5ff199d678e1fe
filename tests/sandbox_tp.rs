//! The sandbox plays the third-party platform's authorizer tokens (issue 18), over real
//! sockets: codes and refresh tokens work once, a re-authorization or an `UNAUTHORIZED` ends
//! them, a retrieved code gives a working grant, V1 and V2 do not mix, and the APIs answer
//! 11016 for a token not in force.

mod common;

use bytes::Bytes;
use common::*;
use douyin_gateway::sandbox::authorizer::{PROVIDER_CLIENT_KEY, PROVIDER_CLIENT_SECRET};
use douyin_gateway::sandbox::provider::{COMPONENT_APPID, COMPONENT_APPSECRET};
use douyin_gateway::sandbox::Sandbox;
use http::Method;
use serde_json::{json, Value};

const MERCHANT: &str = "tt_merchant_one";

/// The platform as the provider sees it: a component token (V1) and a client_token (V2).
struct Provider {
    sb: Sandbox,
    http: Http,
    component: String,
    client: String,
}

impl Provider {
    async fn start() -> Provider {
        let sb = sandbox().await;
        let http = Http::default();
        let receiver = format!("{}/sandbox/receiver/tp", sb.url());
        let pushed = http
            .control(&sb, "/sandbox/provider/push", json!({"url": receiver}))
            .await;
        let ticket = pushed["ticket"].as_str().unwrap().to_string();
        let q = form(&[
            ("component_appid", COMPONENT_APPID),
            ("component_appsecret", COMPONENT_APPSECRET),
            ("component_ticket", &ticket),
        ]);
        let r = raw(
            &http,
            Method::GET,
            &format!("{}/openapi/v1/auth/tp/token?{q}", sb.url()),
            &[],
            "",
        )
        .await;
        let component = r["component_access_token"].as_str().unwrap().to_string();
        let body = json!({"client_key": PROVIDER_CLIENT_KEY, "client_secret": PROVIDER_CLIENT_SECRET,
            "grant_type": "client_credential"});
        let r = raw(
            &http,
            Method::POST,
            &format!("{}/oauth/client_token/", sb.url()),
            &[("content-type", "application/json")],
            &body.to_string(),
        )
        .await;
        let client = r["data"]["access_token"].as_str().unwrap().to_string();
        Provider {
            sb,
            http,
            component,
            client,
        }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        self.http.control(&self.sb, path, body).await
    }

    /// An authorization event pushed to the sandbox's own receiver: its code.
    async fn push_authorized(&self, app: &str, event: &str, permissions: Option<Value>) -> String {
        let mut body = json!({"url": format!("{}/sandbox/receiver/tp", self.sb.url()),
            "event": event, "authorizer_appid": app});
        if let Some(p) = permissions {
            body["permissions"] = p;
        }
        let r = self.control("/sandbox/provider/push", body).await;
        assert_eq!(r["status"], 200, "{r}");
        r["code"].as_str().unwrap().to_string()
    }

    async fn authorize(&self, app: &str) -> String {
        let r = self
            .control("/sandbox/provider/authorize", json!({"authorizer_appid": app}))
            .await;
        r["code"].as_str().unwrap().to_string()
    }

    /// V1 token endpoint with a grant: `("code", c)` or `("refresh", r)`.
    async fn v1(&self, grant: (&str, &str)) -> Value {
        let q = form(&[
            ("component_appid", COMPONENT_APPID),
            ("component_access_token", &self.component),
            grant_query(grant).0,
            grant_query(grant).1,
        ]);
        raw(
            &self.http,
            Method::GET,
            &format!("{}/openapi/v1/oauth/token?{q}", self.sb.url()),
            &[],
            "",
        )
        .await
    }

    /// V2 token endpoint with the provider's client_token (or `client`).
    async fn v2_as(&self, client: &str, grant: (&str, &str)) -> Value {
        let q = form(&[grant_query(grant).0, grant_query(grant).1]);
        raw(
            &self.http,
            Method::GET,
            &format!("{}/api/tpapp/v2/auth/get_auth_token/?{q}", self.sb.url()),
            &[("access-token", client)],
            "",
        )
        .await
    }

    async fn v2(&self, grant: (&str, &str)) -> Value {
        self.v2_as(&self.client, grant).await
    }

    async fn v1_retrieve(&self, app: &str) -> Value {
        let q = form(&[
            ("component_appid", COMPONENT_APPID),
            ("component_access_token", &self.component),
            ("authorization_appid", app),
        ]);
        raw(
            &self.http,
            Method::POST,
            &format!("{}/openapi/v1/auth/retrieve?{q}", self.sb.url()),
            &[],
            "",
        )
        .await
    }

    async fn v2_retrieve(&self, app: &str) -> Value {
        raw(
            &self.http,
            Method::POST,
            &format!("{}/api/tpapp/v2/auth/retrieve_auth_code/", self.sb.url()),
            &[("access-token", &self.client), ("content-type", "application/json")],
            &json!({"authorization_appid": app}).to_string(),
        )
        .await
    }

    /// The V1 API's errno for an authorizer token, and the app it answered for.
    async fn v1_api(&self, token: &str) -> (i64, Option<String>) {
        let q = form(&[("component_appid", COMPONENT_APPID), ("authorizer_access_token", token)]);
        let r = raw(
            &self.http,
            Method::GET,
            &format!("{}/openapi/v1/microapp/app/info?{q}", self.sb.url()),
            &[],
            "",
        )
        .await;
        (
            r["errno"].as_i64().unwrap(),
            r["data"]["app_id"].as_str().map(String::from),
        )
    }

    /// The V2 API's err_no for an authorizer token, and the app it answered for.
    async fn v2_api(&self, token: &str) -> (i64, Option<String>) {
        let r = raw(
            &self.http,
            Method::GET,
            &format!("{}/api/tpapp/sandbox/authorizer_info", self.sb.url()),
            &[("access-token", token)],
            "",
        )
        .await;
        (
            r["err_no"].as_i64().unwrap(),
            r["data"]["authorizer_appid"].as_str().map(String::from),
        )
    }

    async fn stats(&self) -> Value {
        raw(
            &self.http,
            Method::GET,
            &format!("{}/sandbox/provider", self.sb.url()),
            &[],
            "",
        )
        .await
    }
}

fn grant_query<'a>(grant: (&'a str, &'a str)) -> ((&'a str, &'a str), (&'a str, &'a str)) {
    match grant.0 {
        "code" => (
            ("grant_type", "app_to_tp_authorization_code"),
            ("authorization_code", grant.1),
        ),
        _ => (
            ("grant_type", "app_to_tp_refresh_token"),
            ("authorizer_refresh_token", grant.1),
        ),
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn raw(http: &Http, method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Value {
    let r = http.send(method, url, headers, Bytes::from(body.to_string())).await;
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    r.json()
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}")).to_string()
}

#[tokio::test]
async fn codes_and_refresh_tokens_work_once() {
    let p = Provider::start().await;
    let code = p.push_authorized(MERCHANT, "AUTHORIZED", Some(json!([1, 6]))).await;
    let grant = p.v1(("code", &code)).await;
    assert_eq!(grant["authorizer_appid"], MERCHANT, "{grant}");
    assert_eq!(grant["expires_in"], 7200);
    assert_eq!(grant["refresh_expires_in"], 2_592_000);
    let ids: Vec<u64> = grant["authorize_permission"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 6], "{grant}");
    assert_eq!(grant["authorize_permission"][1]["category"], "支付服务权限");
    let access = s(&grant, "authorizer_access_token");
    assert!(!access.starts_with("isvact."), "{access}");
    assert_eq!(p.v1_api(&access).await, (0, Some(MERCHANT.to_string())));

    // The code is spent.
    assert_eq!(p.v1(("code", &code)).await["errno"], 40020);

    let rt = s(&grant, "authorizer_refresh_token");
    let fresh = p.v1(("refresh", &rt)).await;
    let access2 = s(&fresh, "authorizer_access_token");
    assert_eq!(fresh["expires_in"], 7200, "{fresh}");
    assert_ne!(s(&fresh, "authorizer_refresh_token"), rt);
    // The refresh cleared the old access token and the refresh token it used.
    assert_eq!(p.v1_api(&access).await.0, 11016);
    assert_eq!(p.v1_api(&access2).await, (0, Some(MERCHANT.to_string())));
    let again = p.v1(("refresh", &rt)).await;
    assert_eq!(again["errno"], 40021, "{again}");
    // A token never issued is refused too, but it is no reuse.
    assert_eq!(p.v1(("refresh", "0123abcd")).await["errno"], 40021);

    let st = p.stats().await;
    assert_eq!(
        (
            &st["code_exchanges"],
            &st["refresh_calls"],
            &st["refreshes"],
            &st["refresh_reused"]
        ),
        (&json!(2), &json!(3), &json!(1), &json!(1)),
        "{st}"
    );
    assert_eq!(st["v1"]["refresh_reused"], 1, "{st}");
    assert_eq!(st["v2"]["refresh_calls"], 0, "{st}");
    assert_eq!(st["authorizers"], json!([MERCHANT]));
}

#[tokio::test]
async fn a_new_authorization_ends_the_old_refresh_tokens_of_both_versions() {
    let p = Provider::start().await;
    let v1 = p.v1(("code", &p.authorize(MERCHANT).await)).await;
    let retrieved = p.v2_retrieve(MERCHANT).await;
    assert_eq!(retrieved["err_no"], 0, "{retrieved}");
    let v2 = p.v2(("code", &s(&retrieved["data"], "authorization_code"))).await;
    assert_eq!(v2["err_no"], 0, "{v2}");
    let (rt1, rt2) = (
        s(&v1, "authorizer_refresh_token"),
        s(&v2["data"], "authorizer_refresh_token"),
    );
    let other = p.v1(("code", &p.authorize("tt_merchant_two").await)).await;

    let code = p.push_authorized(MERCHANT, "UPDATE_AUTHORIZED", None).await;
    assert_eq!(p.v1(("refresh", &rt1)).await["errno"], 40021);
    assert_eq!(p.v2(("refresh", &rt2)).await["err_no"], 20040021);
    // Another merchant's grant is untouched, and the new code gives a working grant.
    let o = p.v1(("refresh", &s(&other, "authorizer_refresh_token"))).await;
    assert_eq!(p.v1_api(&s(&o, "authorizer_access_token")).await.0, 0, "{o}");
    let g = p.v1(("code", &code)).await;
    assert_eq!(g["authorizer_appid"], MERCHANT, "{g}");
    let ids: Vec<u64> = g["authorize_permission"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4], "the default grant: {g}");
    // Superseded is not reused.
    assert_eq!(p.stats().await["refresh_reused"], 0);
}

#[tokio::test]
async fn unauthorized_ends_the_tokens_and_the_authorization() {
    let p = Provider::start().await;
    let code = p.push_authorized(MERCHANT, "AUTHORIZED", None).await;
    let g = p.v1(("code", &code)).await;
    let unused = p.v1_retrieve(MERCHANT).await;
    let r = p
        .control(
            "/sandbox/provider/push",
            json!({"url": format!("{}/sandbox/receiver/tp", p.sb.url()), "event": "UNAUTHORIZED",
                "authorizer_appid": MERCHANT}),
        )
        .await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(p.v1_api(&s(&g, "authorizer_access_token")).await.0, 11016);
    assert_eq!(
        p.v1(("refresh", &s(&g, "authorizer_refresh_token"))).await["errno"],
        40021
    );
    assert_eq!(p.v1(("code", &s(&unused, "authorization_code"))).await["errno"], 40020);
    assert_eq!(p.v1_retrieve(MERCHANT).await["errno"], 40022);
    assert_eq!(p.v2_retrieve(MERCHANT).await["err_no"], 20040022);
    assert_eq!(p.stats().await["authorizers"], json!([]));
}

#[tokio::test]
async fn a_retrieved_code_gives_a_working_grant_in_either_version() {
    let p = Provider::start().await;
    p.authorize(MERCHANT).await;
    let r = p.v1_retrieve(MERCHANT).await;
    assert_eq!(r["expires_in"], 3600, "{r}");
    let g = p.v1(("code", &s(&r, "authorization_code"))).await;
    assert_eq!(p.v1_api(&s(&g, "authorizer_access_token")).await.0, 0, "{g}");

    let r = p.v2_retrieve(MERCHANT).await;
    assert_eq!(r["data"]["expires_in"], 3600, "{r}");
    let g = p.v2(("code", &s(&r["data"], "authorization_code"))).await;
    assert_eq!(g["err_no"], 0, "{g}");
    assert!(g["log_id"].is_string(), "{g}");
    let access = s(&g["data"], "authorizer_access_token");
    assert!(access.starts_with("isvact."), "{access}");
    assert_eq!(p.v2_api(&access).await, (0, Some(MERCHANT.to_string())));

    assert_eq!(p.v1_retrieve("tt_never_authorized").await["errno"], 40022);
    assert_eq!(p.v2_retrieve("").await["err_no"], 20040004);
    let st = p.stats().await;
    assert_eq!(
        (&st["v1"]["retrieves"], &st["v2"]["retrieves"]),
        (&json!(2), &json!(2)),
        "{st}"
    );
}

#[tokio::test]
async fn v1_and_v2_tokens_do_not_mix() {
    let p = Provider::start().await;
    let v1 = p.v1(("code", &p.authorize(MERCHANT).await)).await;
    // Codes are not versioned (a V1 retrieve's code works at V2); tokens are.
    let code2 = s(&p.v1_retrieve(MERCHANT).await, "authorization_code");
    let v2 = p.v2(("code", &code2)).await["data"].clone();
    let (a1, r1) = (s(&v1, "authorizer_access_token"), s(&v1, "authorizer_refresh_token"));
    let (a2, r2) = (s(&v2, "authorizer_access_token"), s(&v2, "authorizer_refresh_token"));
    assert_eq!(p.v2(("refresh", &r1)).await["err_no"], 20040021);
    assert_eq!(p.v1(("refresh", &r2)).await["errno"], 40021);
    assert_eq!(p.v2_api(&a1).await.0, 11016);
    assert_eq!(p.v1_api(&a2).await.0, 11016);
    assert_eq!(p.v1_api(&a1).await.0, 0);
    assert_eq!(p.v2_api(&a2).await.0, 0);
    // Refused at the other version, each refresh token still works once at its own.
    assert!(p.v1(("refresh", &r1)).await["authorizer_access_token"].is_string());
    assert_eq!(p.v2(("refresh", &r2)).await["err_no"], 0);
    let st = p.stats().await;
    assert_eq!(
        (&st["v1"]["refreshes"], &st["v2"]["refreshes"]),
        (&json!(1), &json!(1)),
        "{st}"
    );
    assert_eq!(st["refresh_reused"], 0, "{st}");
}

#[tokio::test]
async fn the_token_endpoints_check_the_providers_own_token() {
    let p = Provider::start().await;
    let code = p.authorize(MERCHANT).await;
    // V2 takes the provider's client_token, not a component token nor another app's token.
    assert_eq!(p.v2_as("", ("code", &code)).await["err_no"], 28001003);
    assert_eq!(p.v2_as(&p.component, ("code", &code)).await["err_no"], 28001003);
    let body = json!({"client_key": CLIENT_KEY, "client_secret": CLIENT_SECRET, "grant_type": "client_credential"});
    let other = raw(
        &p.http,
        Method::POST,
        &format!("{}/oauth/client_token/", p.sb.url()),
        &[("content-type", "application/json")],
        &body.to_string(),
    )
    .await;
    let other = s(&other["data"], "access_token");
    assert_eq!(p.v2_as(&other, ("code", &code)).await["err_no"], 28001003);
    // V1 takes a component token in force.
    let q = form(&[
        ("component_appid", COMPONENT_APPID),
        ("component_access_token", &p.client),
        ("grant_type", "app_to_tp_authorization_code"),
        ("authorization_code", &code),
    ]);
    let r = raw(
        &p.http,
        Method::GET,
        &format!("{}/openapi/v1/oauth/token/?{q}", p.sb.url()),
        &[],
        "",
    )
    .await;
    assert_eq!(r["errno"], 40010, "{r}");
    // None of those spent the code.
    let g = p.v2(("code", &code)).await;
    assert_eq!(g["err_no"], 0, "{g}");
    assert_eq!(p.v2(("bogus", "x")).await["err_no"], 20040021, "refresh of nothing");
    let q = form(&[("grant_type", "password")]);
    let r = raw(
        &p.http,
        Method::GET,
        &format!("{}/api/tpapp/v2/auth/get_auth_token?{q}", p.sb.url()),
        &[("access-token", &p.client)],
        "",
    )
    .await;
    assert_eq!(r["err_no"], 20040040, "{r}");
}

#[tokio::test]
async fn the_apis_answer_11016_for_a_token_not_in_force() {
    let p = Provider::start().await;
    let g = p.v1(("code", &p.authorize(MERCHANT).await)).await;
    let access = s(&g, "authorizer_access_token");
    let r = p
        .control(
            "/sandbox/provider/authorizer/expire",
            json!({"authorizer_appid": MERCHANT}),
        )
        .await;
    assert_eq!(r["expired"], 1, "{r}");
    assert_eq!(p.v1_api(&access).await.0, 11016);
    assert_eq!(p.v1_api("").await.0, 11016);
    // Its refresh token still works.
    let fresh = p.v1(("refresh", &s(&g, "authorizer_refresh_token"))).await;
    assert_eq!(p.v1_api(&s(&fresh, "authorizer_access_token")).await.0, 0);

    // A short lifetime, then the sandbox clock past it.
    p.control("/sandbox/provider", json!({"authorizer_expires_in": 60}))
        .await;
    let code = s(&p.v2_retrieve(MERCHANT).await["data"], "authorization_code");
    let g2 = p.v2(("code", &code)).await;
    assert_eq!(g2["data"]["expires_in"], 60, "{g2}");
    let a2 = s(&g2["data"], "authorizer_access_token");
    assert_eq!(p.v2_api(&a2).await.0, 0);
    p.control("/sandbox/clock", json!({"advance_secs": 61})).await;
    assert_eq!(p.v2_api(&a2).await.0, 11016);

    // Two tokens in one request are refused.
    let q = form(&[
        ("component_appid", COMPONENT_APPID),
        ("authorizer_access_token", &s(&fresh, "authorizer_access_token")),
    ]);
    let r = p
        .http
        .send(
            Method::GET,
            &format!("{}/openapi/v1/microapp/app/info?{q}", p.sb.url()),
            &[("access-token", "caller-token")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

/// With the token endpoints slowed down, many refreshes of one refresh token arrive together:
/// exactly one succeeds, every other is refused and counted as a reuse.
#[tokio::test]
async fn concurrent_refreshes_of_one_token_succeed_once() {
    let p = std::sync::Arc::new(Provider::start().await);
    let g = p.v2(("code", &p.authorize(MERCHANT).await)).await;
    let rt = s(&g["data"], "authorizer_refresh_token");
    p.control("/sandbox/provider", json!({"token_delay_ms": 50})).await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (p, rt) = (std::sync::Arc::clone(&p), rt.clone());
            tokio::spawn(async move { p.v2(("refresh", &rt)).await["err_no"].as_i64().unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    answers.sort_unstable();
    let mut expected = vec![20040021; 19];
    expected.insert(0, 0);
    assert_eq!(answers, expected);
    let st = p.stats().await;
    assert_eq!(
        (
            &st["v2"]["refresh_calls"],
            &st["v2"]["refreshes"],
            &st["v2"]["refresh_reused"]
        ),
        (&json!(20), &json!(1), &json!(19)),
        "{st}"
    );
}
