//! Every gateway error of the contract's table, and token endpoint failures.

mod common;

use common::*;
use http::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// Checks a gateway error answer: status, code in header and body, request id.
fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some(code), "{}", r.text());
    let v = r.json();
    let rid = v["gateway_error"]["request_id"].as_str().unwrap();
    assert!(!rid.is_empty());
    assert_eq!(r.headers["x-request-id"], rid);
    assert!(!v["gateway_error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(r.headers["content-type"], "application/json");
}

#[tokio::test]
async fn caller_errors() {
    let sb = sandbox().await;
    let extra = format!(
        "[[callers]]\nname = \"limited\"\napi_key_sha256 = \"{}\"\nroutes = [\"ticket\"]\n",
        douyin_gateway::caller::hash_key("limited-key")
    );
    let gw = gateway_with(&sb, |_| {}, &extra).await;
    let http = Http::default();
    let url = gw.url("/api/douyin/v1/role/check/");

    let r = http.send(Method::POST, &url, &[], "{}").await;
    assert_error(&r, 401, "caller_unauthenticated");
    let r = http.send(Method::POST, &url, &[("x-gateway-key", "wrong")], "{}").await;
    assert_error(&r, 401, "caller_unauthenticated");
    let r = http
        .send(
            Method::POST,
            &url,
            &[("authorization", &format!("Bearer {CALLER_KEY}"))],
            "{}",
        )
        .await;
    assert_eq!(r.status, 200, "Bearer works too: {}", r.text());

    let r = http
        .send(Method::POST, &url, &[("x-gateway-key", "limited-key")], "{}")
        .await;
    assert_error(&r, 403, "caller_forbidden");
    let r = http
        .send(
            Method::GET,
            &gw.url("/js/getticket/"),
            &[("x-gateway-key", "limited-key")],
            "",
        )
        .await;
    assert_eq!(r.status, 200);

    let r = http.get(&gw.url("/no/such/api/")).await;
    assert_error(&r, 404, "no_route");
    // A route limited to POST does not match GET.
    let r = http.get(&url).await;
    assert_error(&r, 404, "no_route");
    assert_eq!(
        n(&http.stats(&sb).await["api_calls"]),
        2,
        "refused calls never reach the platform"
    );
}

#[tokio::test]
async fn user_route_errors() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .app("redirect_uri = \"https://gw.example.com/oauth/callback\"")
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    let r = http.get(&gw.url("/api/douyin/v1/video/video_list/?cursor=0")).await;
    assert_error(&r, 400, "open_id_missing");
    let r = http
        .get(&gw.url("/api/douyin/v1/video/video_list/?open_id=ou_nobody"))
        .await;
    assert_error(&r, 401, "user_authorization_required");
    let want = format!("http://{}/oauth/authorize?app=main", gw.running.admin_addr);
    assert_eq!(r.json()["gateway_error"]["authorize_url"], want.as_str());
}

#[tokio::test]
async fn absolute_form_and_connect_are_refused() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let out = raw(
        gw.running.addr,
        &format!(
        "GET http://evil.example/js/getticket/ HTTP/1.1\r\nHost: evil.example\r\nx-gateway-key: {CALLER_KEY}\r\n\r\n"),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("x-gateway-error: bad_request"), "{out}");
    let out = raw(
        gw.running.addr,
        &format!("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nx-gateway-key: {CALLER_KEY}\r\n\r\n"),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("bad_request"), "{out}");
    assert_eq!(n(&Http::default().stats(&sb).await["api_calls"]), 0);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let sb = sandbox().await;
    let gw = gateway_with(
        &sb,
        |s| {
            s.max_body_bytes = 1000;
            s.retry_buffer_bytes = 500;
        },
        "",
    )
    .await;
    let http = Http::default();
    let r = http.post(&gw.url("/api/douyin/v1/role/check/"), vec![b'x'; 1001]).await;
    assert_error(&r, 413, "body_too_large");
    let r = http.post(&gw.url("/api/douyin/v1/role/check/"), vec![b'x'; 1000]).await;
    assert_eq!(r.status, 200);
    // Chunked, no length given: refused once it passes the limit.
    let chunk = "x".repeat(700);
    let out = raw(gw.running.addr, &format!(
        "POST /api/douyin/v1/role/check/ HTTP/1.1\r\nHost: gw\r\nx-gateway-key: {CALLER_KEY}\r\ntransfer-encoding: chunked\r\n\r\n\
         2bc\r\n{chunk}\r\n2bc\r\n{chunk}\r\n0\r\n\r\n")).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("body_too_large"), "{out}");
}

#[tokio::test]
async fn upstream_down_gives_502_and_slow_upstream_gives_504() {
    // A port bound but not listening: connections to it are refused, and no other process can
    // take it while the test runs.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = reserved.local_addr().unwrap();
    let secret = secret_file();
    let text = config_text(
        &format!("http://{closed}"),
        secret.path(),
        |_| {},
        "[[routes]]\nname = \"plain\"\npath = \"/plain/*\"\ntoken = \"none\"\n",
    );
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    let r = http.get(&gw.url("/plain/x")).await;
    assert_error(&r, 502, "upstream_unavailable");

    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        api_latency_ms: 2000,
        ..Default::default()
    })
    .await;
    let gw = gateway_with(&sb, |s| s.request_timeout_ms = 300, "").await;
    let r = http.get(&gw.url("/js/getticket/")).await;
    assert_error(&r, 504, "upstream_timeout");
}

/// A fault at the token endpoint: 503 with a message naming it, a bounded
/// number of fetches however many calls come, and recovery once it clears.
async fn token_endpoint_fault(fault: &str, says: &str) {
    let sb = sandbox().await;
    let secret = secret_file();
    // A back-off longer than the burst below, so the burst sees at most two fetches.
    let text = TestConfig::new(&sb.url(), secret.path())
        .tokens(|t| {
            t.backoff_initial_ms = 1500;
            t.backoff_max_ms = 3000;
        })
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    http.control(&sb, "/sandbox/faults", json!({"token_endpoint": fault}))
        .await;

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (http, url) = (http.clone(), gw.url("/js/getticket/"));
        calls.spawn(async move { http.get(&url).await });
    }
    while let Some(r) = calls.join_next().await {
        let r = r.unwrap();
        assert_error(&r, 503, "token_unavailable");
        let msg = r.json()["gateway_error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{fault}: message {msg:?} should say {says:?}");
        assert!(!r.text().contains(CLIENT_SECRET));
    }
    let fetches = n(&http.stats(&sb).await["token_endpoint_requests"]);
    assert!(
        (1..=2).contains(&fetches),
        "{fault}: 100 calls made {fetches} token fetches"
    );
    assert_eq!(n(&http.stats(&sb).await["api_calls"]), 0);

    http.control(&sb, "/sandbox/faults", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get(&gw.url("/js/getticket/")).await;
        if r.status == 200 {
            break;
        }
        assert_error(&r, 503, "token_unavailable");
        assert!(Instant::now() < deadline, "{fault}: no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_token_fetches_total{app="main",class="client",outcome="ok"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn token_endpoint_down() {
    token_endpoint_fault("down", "unreachable").await;
}

#[tokio::test]
async fn token_endpoint_500() {
    token_endpoint_fault("status500", "HTTP 500").await;
}

#[tokio::test]
async fn token_endpoint_malformed() {
    token_endpoint_fault("malformed", "malformed JSON").await;
}

#[tokio::test]
async fn token_endpoint_rate_limited() {
    token_endpoint_fault("rate_limited", "10020").await;
}

#[tokio::test]
async fn wrong_client_secret_is_a_configuration_error() {
    let sb = sandbox().await;
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut secret, b"not-the-secret").unwrap();
    let text = config_text(&sb.url(), secret.path(), |_| {}, "");
    let gw = gateway_text(&text, secret).await;
    let r = Http::default().get(&gw.url("/js/getticket/")).await;
    assert_error(&r, 503, "token_unavailable");
    let msg = r.json()["gateway_error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("10013") && msg.contains("client_key"), "{msg}");
    assert!(!r.text().contains("not-the-secret"));
}

#[tokio::test]
async fn odd_and_hostile_inputs_get_sensible_answers() {
    let sb = sandbox().await;
    let extra =
        "[[routes]]\nname = \"by-header\"\npath = \"/hdr/*\"\ntoken = \"user\"\nopen_id = \"header:x-open-id\"\n";
    let gw = gateway_with(&sb, |_| {}, extra).await;
    let http = Http::default();
    let key = [("x-gateway-key", CALLER_KEY)];

    // Malformed percent-encoding and an access_token hidden in odd spellings: forwarded, never leaked.
    let r = http
        .send(
            Method::GET,
            &gw.url("/js/getticket/?a=%zz&access_token=x1&ACCESS_TOKEN=x2&b=%E4%BD%A0"),
            &key,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let last = http.requests(&sb).await.pop().unwrap();
    assert!(
        last["query"]
            .as_str()
            .unwrap()
            .starts_with("a=%zz&b=%E4%BD%A0&access_token=clt."),
        "{last}"
    );
    assert_eq!(last["access_token_params"].as_array().unwrap().len(), 1);

    // Unicode and injection-looking open_ids: a clean 401, never a 5xx.
    for open_id in ["%E4%BD%A0%E5%A5%BD", "a%20b", "%27%3B--", "x%0Ay"] {
        let r = http
            .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={open_id}")))
            .await;
        assert_eq!(r.status, 401, "{open_id}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("user_authorization_required"));
    }
    let r = http
        .send(
            Method::GET,
            &gw.url("/hdr/x"),
            &[("x-gateway-key", CALLER_KEY), ("x-open-id", "")],
            "",
        )
        .await;
    assert_eq!(r.gateway_error().as_deref(), Some("open_id_missing"));

    // A caller key that is not UTF-8, and a huge header: refused cleanly.
    let out = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(gw.running.addr).await.unwrap();
        s.write_all(b"GET /js/getticket/ HTTP/1.1\r\nHost: g\r\nx-gateway-key: \xff\xfe\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    // A head five times over max_header_bytes plus hyper's slack: hyper's own 431, read while
    // the rest is still being sent (the gateway closes without reading it all).
    let big = "x".repeat(200_000);
    let out = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let s = tokio::net::TcpStream::connect(gw.running.addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let req = format!("GET /js/getticket/ HTTP/1.1\r\nHost: g\r\nx-big: {big}\r\nConnection: close\r\n\r\n");
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(req.as_bytes()).await;
        });
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n @ 1..)) = tokio::time::timeout(std::time::Duration::from_secs(5), rd.read(&mut buf)).await {
            out.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    // Two access-token headers from the caller: both removed.
    let r = http
        .send(
            Method::POST,
            &gw.url("/api/douyin/v1/role/check/"),
            &[
                ("x-gateway-key", CALLER_KEY),
                ("access-token", "e1"),
                ("access-token", "e2"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.json()["err_no"], 0, "{}", r.text());
    let last = http.requests(&sb).await.pop().unwrap();
    assert_eq!(last["access_token_headers"].as_array().unwrap().len(), 1);
    assert!(last["access_token_headers"][0].as_str().unwrap().starts_with("clt."));
    // The gateway still answers after all that.
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
}

/// A panic anywhere inside the gateway's own stack (here: in the innermost service, where the
/// pooled client sits) becomes the contract's 500 answer, through the very layers `stack()`
/// builds, with the route counted and the request id echoed.
#[tokio::test]
async fn a_panic_becomes_the_contract_error() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use tower::ServiceExt;
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let panicking = tower::service_fn(
        |_: http::Request<douyin_gateway::body::ProxyBody<Empty<Bytes>>>| async {
            if true {
                panic!("boom");
            }
            Ok::<http::Response<Empty<Bytes>>, std::convert::Infallible>(http::Response::new(Empty::new()))
        },
    );
    let svc =
        douyin_gateway::proxy::stack_around(std::sync::Arc::clone(&gw.running.shared), Default::default(), panicking);
    let req = http::Request::get("/js/getticket/?a=1")
        .header("x-gateway-key", CALLER_KEY)
        .header("x-request-id", "panic-1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-gateway-error"], "internal_error");
    assert_eq!(resp.headers()["x-request-id"], "panic-1");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["gateway_error"]["code"], "internal_error");
    assert_eq!(v["gateway_error"]["request_id"], "panic-1");
    // The gateway still answers on its listener afterwards.
    let r = Http::default().get(&gw.url("/js/getticket/")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
