//! SDKs that fetch their own tokens run unchanged: their token requests get a placeholder from the
//! gateway (the platform is never asked, so they cannot compete with the gateway's fetches), and
//! the placeholder they then attach is replaced with the real token on every API call.

mod common;

use common::*;
use http::Method;

const PLACEHOLDER: &str = douyin_gateway::proxy::routing::PLACEHOLDER_TOKEN;

#[tokio::test]
async fn sdk_token_requests_get_a_placeholder_that_api_calls_replace() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .routes_first(
            "[[routes]]\nname = \"sdk-client-token\"\npath = \"/oauth/client_token/\"\ntoken = \"placeholder\"\n\n\
             [[routes]]\nname = \"sdk-mini-app-token\"\npath = \"/api/apps/v2/token\"\ntoken = \"placeholder\"\n",
        )
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    let key = [("x-gateway-key", CALLER_KEY)];

    // An SDK asks for a client_token with whatever secret it has (form-encoded, as many do).
    let r = http
        .send(
            Method::POST,
            &gw.url("/oauth/client_token/"),
            &[key[0], ("content-type", "application/x-www-form-urlencoded")],
            "client_key=awsandbox0000001&client_secret=dummy&grant_type=client_credential",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"]["access_token"], PLACEHOLDER);
    assert_eq!(v["data"]["error_code"], 0);
    assert_eq!(v["data"]["expires_in"], 2_592_000);
    // And the mini-app token, in its own envelope.
    let r = http
        .post(
            &gw.url("/api/apps/v2/token"),
            r#"{"appid":"awsandbox0000001","secret":"dummy","grant_type":"client_credential"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["err_no"], 0);
    assert_eq!(r.json()["data"]["access_token"], PLACEHOLDER);
    assert_eq!(
        n(&http.stats(&sb).await["token_endpoint_requests"]),
        0,
        "the platform was never asked"
    );

    // The SDK attaches the placeholder, in a header or the query: the platform gets the real token.
    let r = http
        .send(
            Method::POST,
            &gw.url("/api/douyin/v1/role/check/"),
            &[
                key[0],
                ("access-token", PLACEHOLDER),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.json()["err_no"], 0, "{}", r.text());
    let r = http
        .get(&gw.url(&format!("/js/getticket/?access_token={PLACEHOLDER}")))
        .await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
    let log = http.requests(&sb).await;
    assert_eq!(log.len(), 2);
    for entry in &log {
        assert!(entry["accepted"].as_bool().unwrap(), "{entry}");
        assert!(
            !entry.to_string().contains(PLACEHOLDER),
            "the placeholder never reached the platform: {entry}"
        );
    }
}
