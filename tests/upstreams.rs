//! More than one upstream host: a route's `upstream = NAME` sends its calls to that
//! `[[upstreams]]` entry, with the token its class needs from the platform's token endpoints.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::{Arc, Mutex};

/// What a stand-in for another host (developer.toutiao.com, webcast) received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Received {
    fn token(&self) -> Option<String> {
        self.headers
            .get("access-token")
            .map(|v| v.to_str().unwrap().to_string())
    }
}

type Seen = Arc<Mutex<Vec<Received>>>;

/// A host that answers every call with the mini-app envelope's success and records what came.
async fn other_host() -> (String, Seen) {
    other_host_rejecting(0).await
}

/// [`other_host`], answering its first `reject` calls with envelope G's token rejection (11016).
async fn other_host_rejecting(reject: usize) -> (String, Seen) {
    let listener = bind().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
                        let n = {
                            let mut seen = record.lock().unwrap();
                            seen.push(Received {
                                path: parts.uri.path().to_string(),
                                headers: parts.headers,
                                body,
                            });
                            seen.len()
                        };
                        let answer: &'static [u8] = if n <= reject {
                            br#"{"data":null,"err":{"err_code":11016,"err_msg":"access_token invalid"}}"#
                        } else {
                            br#"{"err_no":0,"err_tips":"success","data":{}}"#
                        };
                        let mut r = http::Response::new(Full::new(Bytes::from_static(answer)));
                        r.headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/json"));
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_route_forwards_to_its_named_upstream_with_the_platforms_token() {
    let sb = sandbox().await;
    let (toutiao, seen) = other_host().await;
    let secret = secret_file();
    let text = TestConfig::new(&sb.url(), secret.path())
        .extra(&format!(
            "[[upstreams]]\nname = \"toutiao\"\nbase_url = \"{toutiao}\"\n\n\
             [[routes]]\nname = \"mini-app\"\npath = \"/api/apps/*\"\ntoken = \"client\"\nupstream = \"toutiao\"\n"
        ))
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();

    let r = http.get(&gw.url("/api/apps/qrcode?x=1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["err_no"], 0);
    // The other host got the call, with the client_token the platform issued.
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "/api/apps/qrcode");
    let token = got[0].token().expect("an access-token header");
    assert!(token.starts_with("clt."), "{token}");
    let stats = http.stats(&sb).await;
    assert_eq!(
        stats["client_token_calls"], 1,
        "the token came from the platform: {stats}"
    );
    // The platform itself saw no API call; a route without `upstream` still goes there.
    assert_eq!(stats["api_calls"], 0, "{stats}");
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    assert_eq!(http.stats(&sb).await["api_calls"], 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn check_refuses_an_unknown_or_repeated_upstream() {
    let text = "[store]\nkind = \"memory\"\n\
        [[upstreams]]\nname = \"a\"\nbase_url = \"https://developer.toutiao.com\"\n\
        [[upstreams]]\nname = \"a\"\nbase_url = \"ftp://x\"\n\
        [[routes]]\nname = \"r\"\npath = \"/x\"\ntoken = \"none\"\nupstream = \"nope\"\n";
    let err = douyin_gateway::config::Config::load_str(text, "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no [[upstreams]] named \"nope\""), "{err}");
    assert!(err.contains("upstream \"a\" is defined more than once"), "{err}");
    assert!(err.contains("\"ftp://x\" is not an http(s) URL"), "{err}");
}

/// A gateway on the sandbox with `[[upstreams]] name = "other"` at `other`, and `routes`.
async fn gateway_with_other(
    sb: &douyin_gateway::sandbox::Sandbox,
    other: &str,
    server: impl FnOnce(&mut ServerConfig),
    routes: &str,
) -> Gateway {
    let secret = secret_file();
    let text = TestConfig::new(&sb.url(), secret.path())
        .server(server)
        .extra(&format!(
            "[[upstreams]]\nname = \"other\"\nbase_url = \"{other}\"\n\n{routes}"
        ))
        .render();
    gateway_text(&text, secret).await
}

/// `inject = "header:x-token"` (the webcast APIs): the token in that header, the caller's own
/// (in any spelling read as it) dropped, and no `access-token` header sent.
#[tokio::test]
async fn the_token_goes_in_the_header_a_route_names() {
    let sb = sandbox().await;
    let (host, seen) = other_host().await;
    let routes = "[[routes]]\nname = \"webcast\"\npath = \"/webcast/*\"\ntoken = \"client\"\n\
                  inject = \"header:x-token\"\nupstream = \"other\"\n";
    let gw = gateway_with_other(&sb, &host, |_| {}, routes).await;
    let r = Http::default()
        .send(
            http::Method::GET,
            &gw.url("/webcast/room/info"),
            &[("x-gateway-key", CALLER_KEY), ("x-token", "evil"), ("X_Token", "evil2")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = seen.lock().unwrap()[0].clone();
    let values: Vec<&str> = got
        .headers
        .get_all("x-token")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(values.len(), 1, "{values:?}");
    assert!(values[0].starts_with("clt."), "{values:?}");
    assert!(!got.headers.contains_key("x_token"));
    assert!(got.token().is_none(), "no access-token header besides");
}

/// `inject = "json_body"` (developer.toutiao.com APIs): the token set as the body's top-level
/// `access_token`, every other member kept byte for byte and in order, the caller's own
/// `access_token` dropped, `Content-Length` fixed; a body that is not a JSON object, or is over
/// `retry_buffer_bytes`, refused with 400 and nothing sent.
#[tokio::test]
async fn the_token_goes_in_the_json_body() {
    let sb = sandbox().await;
    let (host, seen) = other_host().await;
    let routes = "[[routes]]\nname = \"mini-body\"\npath = \"/api/apps/v2/*\"\nmethods = [\"POST\"]\n\
                  token = \"client\"\ninject = \"json_body\"\nupstream = \"other\"\n";
    let gw = gateway_with_other(&sb, &host, |s| s.retry_buffer_bytes = 1024, routes).await;
    let http = Http::default();
    let sent = r#"{"appid":"tt1","access_token":"evil","n":123456789012345678901234567890,"s":"\u00e9\"q","o":{"access_token":"inner"}}"#;
    let r = http.post(&gw.url("/api/apps/v2/qrcode/create"), sent).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = seen.lock().unwrap()[0].clone();
    let token = http.stats(&sb).await;
    assert_eq!(token["client_token_calls"], 1);
    let body = std::str::from_utf8(&got.body).unwrap();
    let prefix = r#"{"appid":"tt1","n":123456789012345678901234567890,"s":"\u00e9\"q","o":{"access_token":"inner"},"access_token":"clt."#;
    assert!(body.starts_with(prefix), "{body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v["access_token"].as_str().unwrap().starts_with("clt."));
    assert_eq!(got.headers["content-length"], body.len().to_string().as_str());
    assert!(got.token().is_none(), "the token goes in the body only");

    for (bad, why) in [("[1,2]", "not an object"), ("not json", "not JSON"), ("", "empty")] {
        let r = http.post(&gw.url("/api/apps/v2/qrcode/create"), bad).await;
        assert_eq!(r.status, 400, "{why}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("bad_request"), "{why}");
    }
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096));
    let r = http.post(&gw.url("/api/apps/v2/qrcode/create"), big).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("retry_buffer_bytes"), "{}", r.text());
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing refused was sent");
}

/// developer.toutiao.com's envelope G (`{"err":{"err_code":11016}}`) is a token rejection: the
/// token is refreshed once and the call replayed with the new token in the body.
#[tokio::test]
async fn a_rejection_in_the_err_envelope_refreshes_and_replays_the_json_body() {
    let sb = sandbox().await;
    let (host, seen) = other_host_rejecting(1).await;
    let routes = "[[routes]]\nname = \"mini-body\"\npath = \"/api/apps/v2/*\"\nmethods = [\"POST\"]\n\
                  token = \"client\"\ninject = \"json_body\"\nupstream = \"other\"\n";
    let gw = gateway_with_other(&sb, &host, |_| {}, routes).await;
    let http = Http::default();
    let r = http
        .post(&gw.url("/api/apps/v2/qrcode/create"), r#"{"appid":"tt1"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["err_no"], 0, "the replay's answer");
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "rejected, then replayed once");
    let token = |i: usize| {
        let v: serde_json::Value = serde_json::from_slice(&got[i].body).unwrap();
        assert_eq!(v["appid"], "tt1");
        v["access_token"].as_str().unwrap().to_string()
    };
    assert_ne!(token(0), token(1), "the replay carries the new token");
    assert_eq!(http.stats(&sb).await["client_token_calls"], 2);
    // The rejection is counted by code and route.
    let m = http.metrics(&gw).await;
    let line = m
        .lines()
        .find(|l| {
            l.starts_with("douyin_gateway_platform_errors_total{")
                && l.contains(r#"code="11016""#)
                && l.contains(r#"route="mini-body""#)
        })
        .unwrap_or_else(|| panic!("no platform error line:\n{m}"));
    assert!(line.ends_with(" 1"), "{line}");
}

/// `token = "app_secret"` (mini-app `jscode2session`): the app's `appid` and `secret` set in the
/// JSON body by the gateway, replacing any the caller sent; the answer passes through.
#[tokio::test]
async fn the_apps_secret_goes_in_the_body_of_a_login_call() {
    let sb = sandbox().await;
    let (host, seen) = other_host().await;
    let routes = "[[routes]]\nname = \"login\"\npath = \"/api/apps/v2/jscode2session\"\nmethods = [\"POST\"]\n\
                  token = \"app_secret\"\ninject = \"json_body\"\nupstream = \"other\"\n";
    let gw = gateway_with_other(&sb, &host, |_| {}, routes).await;
    let http = Http::default();
    let r = http
        .post(
            &gw.url("/api/apps/v2/jscode2session"),
            r#"{"appid":"forged","secret":"guess","code":"c1","anonymous_code":""}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["err_no"], 0);
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(
        std::str::from_utf8(&got.body).unwrap(),
        format!(r#"{{"code":"c1","anonymous_code":"","appid":"{CLIENT_KEY}","secret":"{CLIENT_SECRET}"}}"#)
    );
    assert!(got.token().is_none(), "no token on a login call");
    assert_eq!(http.stats(&sb).await["token_endpoint_requests"], 0, "no token fetched");

    let text = "[store]\nkind = \"memory\"\n[[apps]]\nname = \"m\"\nclient_key = \"k\"\nclient_secret_env = \"X\"\n\
                [[routes]]\nname = \"r\"\npath = \"/x\"\ntoken = \"app_secret\"\n";
    let err = douyin_gateway::config::Config::load_str(text, "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs inject = \"json_body\""), "{err}");
}

/// An SDK that got the gateway's placeholder attaches it wherever its API takes the token: in a
/// named header (webcast's `X-Token`) or in the JSON body. The host receives the real token only.
#[tokio::test]
async fn an_sdks_placeholder_is_replaced_in_a_named_header_and_in_the_body() {
    const PLACEHOLDER: &str = douyin_gateway::proxy::routing::PLACEHOLDER_TOKEN;
    let sb = sandbox().await;
    let (host, seen) = other_host().await;
    let routes = "[[routes]]\nname = \"webcast\"\npath = \"/webcast/*\"\ntoken = \"client\"\n\
                  inject = \"header:x-token\"\nupstream = \"other\"\n\n\
                  [[routes]]\nname = \"mini-body\"\npath = \"/api/apps/v2/*\"\nmethods = [\"POST\"]\n\
                  token = \"client\"\ninject = \"json_body\"\nupstream = \"other\"\n";
    let gw = gateway_with_other(&sb, &host, |_| {}, routes).await;
    let http = Http::default();
    let r = http
        .send(
            http::Method::GET,
            &gw.url("/webcast/room/info"),
            &[("x-gateway-key", CALLER_KEY), ("X-Token", PLACEHOLDER)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = format!(r#"{{"appid":"tt1","access_token":"{PLACEHOLDER}"}}"#);
    let r = http.post(&gw.url("/api/apps/v2/qrcode/create"), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let header: Vec<&str> = got[0]
        .headers
        .get_all("x-token")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(header.len(), 1);
    assert!(header[0].starts_with("clt."), "{header:?}");
    let body: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
    assert!(body["access_token"].as_str().unwrap().starts_with("clt."), "{body}");
    for g in &got {
        let everything = format!("{:?}{}", g.headers, String::from_utf8_lossy(&g.body));
        assert!(!everything.contains(PLACEHOLDER), "{everything}");
    }
}
