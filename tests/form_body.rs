//! Form bodies (`inject = "form_body"`, `open_id = "form:NAME"`): `POST /oauth/userinfo/` through
//! the gateway, against the sandbox, over real sockets.

mod common;
use common::*;
use http::Method;
use serde_json::json;
use sha2::Digest;

const USERINFO: &str = "/oauth/userinfo/";
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// The user gateway with the userinfo route: the user from the form's `open_id`, the token in its
/// `access_token` field; a small `retry_buffer_bytes` so that "too big" is cheap to send.
async fn form_gateway(sb: &douyin_gateway::sandbox::Sandbox) -> Gateway {
    let upstream = sb.url();
    gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&upstream, secret)
            .server(|s| s.retry_buffer_bytes = 4096)
            .redirect_to(admin)
            .app("scopes = [\"user_info\"]")
            .routes_first(
                "[[routes]]\nname = \"userinfo\"\npath = \"/oauth/userinfo/\"\nmethods = [\"POST\"]\n\
                 token = \"user\"\ninject = \"form_body\"\nopen_id = \"form:open_id\"",
            )
            .render()
    })
    .await
}

async fn userinfo(http: &Http, gw: &Gateway, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut h = vec![("x-gateway-key", CALLER_KEY)];
    h.extend_from_slice(headers);
    http.send(Method::POST, &gw.url(USERINFO), &h, body.to_string()).await
}

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// The userinfo calls the sandbox received.
async fn userinfo_calls(http: &Http, sb: &douyin_gateway::sandbox::Sandbox) -> Vec<serde_json::Value> {
    let all = http.requests(sb).await;
    all.into_iter().filter(|r| r["path"] == USERINFO).collect()
}

#[tokio::test]
async fn the_users_token_goes_in_the_form_and_every_other_byte_is_kept() {
    let sb = sandbox().await;
    let gw = form_gateway(&sb).await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    // The caller's own token, in two spellings, goes; the rest keeps its bytes and order.
    let sent = format!("open_id={open_id}&access_token=evil&x=a%20b+c;Access.Token=evil2&z=%E4%BD%A0");
    let r = userinfo(&http, &gw, &[FORM], &sent).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["open_id"], open_id.as_str(), "{}", r.text());
    let calls = userinfo_calls(&http, &sb).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let token = calls[0]["access_token_body"].as_str().unwrap().to_string();
    assert!(!token.contains("evil"), "{token}");
    let expected = format!("open_id={open_id}&x=a%20b+c&z=%E4%BD%A0&access_token={token}");
    assert_eq!(calls[0]["body_sha256"], sha256(expected.as_bytes()), "{:?}", calls[0]);
    assert_eq!(calls[0]["body_len"], expected.len());
    assert_eq!(calls[0]["accepted"], true);
}

#[tokio::test]
async fn a_replay_after_a_refresh_carries_the_new_token_in_the_form() {
    let sb = sandbox().await;
    let gw = form_gateway(&sb).await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    let r = http
        .control(&sb, "/sandbox/revoke", json!({ "expire_user": open_id }))
        .await;
    assert_eq!(r["expired"], open_id.as_str());
    let r = userinfo(&http, &gw, &[FORM], &format!("a=1&open_id={open_id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["open_id"], open_id.as_str(), "{}", r.text());
    let calls = userinfo_calls(&http, &sb).await;
    assert_eq!(calls.len(), 2, "one rejection, one replay: {calls:?}");
    let (old, new) = (&calls[0]["access_token_body"], &calls[1]["access_token_body"]);
    assert_ne!(old, new, "the replay carries the new token");
    assert_eq!(
        (&calls[0]["accepted"], &calls[1]["accepted"]),
        (&json!(false), &json!(true))
    );
    let expected = format!("a=1&open_id={open_id}&access_token={}", new.as_str().unwrap());
    assert_eq!(calls[1]["body_sha256"], sha256(expected.as_bytes()));
}

#[tokio::test]
async fn a_body_that_is_no_form_or_names_the_user_twice_is_refused_and_nothing_sent() {
    let sb = sandbox().await;
    let gw = form_gateway(&sb).await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    let json_type = ("content-type", "application/json");
    let big = format!("open_id={open_id}&pad={}", "x".repeat(5000));
    for (headers, body, code) in [
        (vec![json_type], format!(r#"{{"open_id":"{open_id}"}}"#), "bad_request"),
        (vec![], format!("open_id={open_id}"), "bad_request"),
        (vec![FORM], format!("open_id={open_id}&open_id=other"), "bad_request"),
        (vec![FORM], format!("open_id={open_id}&Open-Id=other"), "bad_request"),
        (vec![FORM], format!("open_id={open_id}&open_id[]=other"), "bad_request"),
        (vec![FORM], "a=1".to_string(), "open_id_missing"),
        (vec![FORM], String::new(), "open_id_missing"),
        (vec![FORM], big, "bad_request"),
    ] {
        let r = userinfo(&http, &gw, &headers, &body).await;
        assert_eq!(
            r.status,
            400,
            "{headers:?} {}: {}",
            &body[..body.len().min(60)],
            r.text()
        );
        assert_eq!(r.gateway_error().as_deref(), Some(code), "{}", r.text());
        assert!(!r.text().contains("evil"));
    }
    assert!(
        userinfo_calls(&http, &sb).await.is_empty(),
        "nothing reached the platform"
    );
}
