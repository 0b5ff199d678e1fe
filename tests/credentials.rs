//! Issue #15, items 6 and 7, end to end: a gateway between a caller and the sandbox (or a host
//! that records every byte it receives).
//!
//! - one canonical path, all of it: `%3B`, invalid or overlong UTF-8, raw non-ASCII bytes,
//!   characters NFKC reads as `.` `/` `\`, and segments of only dots and spaces are 400 before
//!   routing; method-override and original-URL headers never reach the platform;
//! - no caller credential reaches the platform, wherever it is put: headers, cookies, query names
//!   in PHP's, Rack's and Spring's spellings, form bodies, multipart parts, JSON members.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;
use sha2::Digest;
use std::sync::{Arc, Mutex};

const JS_ONLY_KEY: &str = "js-only-key";

/// What the recording host received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: http::HeaderMap,
    /// `None` when the body did not arrive whole (the gateway cut it).
    body: Option<Bytes>,
}

impl Received {
    fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(self.body.as_deref().expect("a whole body")).into_owned()
    }
}

type Seen = Arc<Mutex<Vec<Received>>>;

/// A host that records every request and answers the platform's success envelope.
async fn recorder() -> (String, Seen) {
    let listener = bind().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = http_body_util::BodyExt::collect(body).await.ok().map(|b| b.to_bytes());
                        record.lock().unwrap().push(Received {
                            path: parts.uri.path().to_string(),
                            headers: parts.headers,
                            body,
                        });
                        let mut r = http::Response::new(Full::new(Bytes::from_static(br#"{"err_no":0,"data":{}}"#)));
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

/// A gateway on the sandbox, with routes to the recording host at `rec` (`/js/*` and `/rec*`), and
/// a caller allowed only `/js/*`.
async fn gateway_for(
    sb: &douyin_gateway::sandbox::Sandbox,
    rec: &str,
    server: impl FnOnce(&mut ServerConfig),
) -> Gateway {
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .server(server)
        .extra(&format!(
            r#"
[[upstreams]]
name = "rec"
base_url = "{rec}"

[[routes]]
name = "js"
path = "/js/*"
token = "client"
inject = "query"
upstream = "rec"

[[routes]]
name = "douyin-v1"
path = "/api/douyin/v1/*"
token = "client"

[[routes]]
name = "userinfo"
path = "/oauth/userinfo/"
methods = ["POST"]
token = "none"

[[routes]]
name = "rec"
path = "/rec/*"
token = "client"
upstream = "rec"

[[routes]]
name = "rec-query"
path = "/rec-query/*"
token = "client"
inject = "query"
upstream = "rec"

[[routes]]
name = "rec-none"
path = "/rec-none/*"
token = "none"
upstream = "rec"

[[routes]]
name = "rec-json"
path = "/rec-json/*"
token = "client"
inject = "json_body"
upstream = "rec"

[[routes]]
name = "rec-x-token"
path = "/rec-x-token/*"
token = "client"
inject = "header:x-token"
upstream = "rec"

[[callers]]
name = "js-only"
api_key_sha256 = "{hash}"
routes = ["js"]
"#,
            hash = douyin_gateway::caller::hash_key(JS_ONLY_KEY)
        ))
        .render();
    gateway_text(&text, secret).await
}

/// Sends raw bytes on a new connection; returns what came back until the gateway's JSON error
/// was complete, the connection closed, or 5 s of silence.
async fn raw_bytes(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        out.extend_from_slice(&buf[..n]);
        if n == 0 || out.ends_with(b"}}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(out: &str) -> u16 {
    out.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"))
}

fn code_of(out: &str) -> Option<String> {
    out.find("\r\n\r\n")
        .and_then(|i| serde_json::from_str::<Value>(&out[i + 4..]).ok())
        .and_then(|v| v["gateway_error"]["code"].as_str().map(str::to_string))
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

// ---------- item 6: one canonical path, all of it ----------

#[tokio::test]
async fn paths_a_later_hop_could_read_differently_are_refused_before_routing() {
    let sb = sandbox().await;
    let (rec, seen) = recorder().await;
    let gw = gateway_for(&sb, &rec, |_| {}).await;
    // A caller allowed only /js/* aims at /api/douyin/v1/role/check/ with the app's token. Behind
    // nginx (`proxy_pass http://up/;`) `..%3B` arrives as `..;`, which Tomcat reads as `..`.
    let probes: &[&[u8]] = &[
        b"/js/..%3B/api/douyin/v1/role/check/",
        b"/js/..%3b/api/douyin/v1/role/check/",
        b"/js/x%3b/api/douyin/v1/role/check/",
        b"/js/getticket%3B/",
        b"/js/%c0%ae%c0%ae/api/douyin/v1/role/check/",
        b"/js/%C0%AE/api/douyin/v1/role/check/",
        b"/js/%e0%80%ae%e0%80%ae/api/douyin/v1/role/check/",
        b"/js/%ef%bc%8e%ef%bc%8e/api/douyin/v1/role/check/",
        b"/js/%e2%80%a4%e2%80%a4/api/douyin/v1/role/check/",
        b"/js/%e2%80%a5/api/douyin/v1/role/check/",
        b"/js/x%ef%bc%8f..%ef%bc%8f/api/douyin/v1/role/check/",
        b"/js/x%ef%bc%bc/api/douyin/v1/role/check/",
        b"/js/..%20/api/douyin/v1/role/check/",
        b"/js/%20../api/douyin/v1/role/check/",
        b"/js/.%20./api/douyin/v1/role/check/",
        b"/js/..%c2%a0/api/douyin/v1/role/check/",
        b"/js/.../api/douyin/v1/role/check/",
        b"/js/..../api/douyin/v1/role/check/",
        b"/js/%ff/api/douyin/v1/role/check/",
        b"/js/%e4%bd/api/douyin/v1/role/check/",
        "/js/\u{e9}/api/douyin/v1/role/check/".as_bytes(),
        "/js/\u{ff0e}\u{ff0e}/api/douyin/v1/role/check/".as_bytes(),
        b"/js/\xff/api/douyin/v1/role/check/",
    ];
    for path in probes {
        let mut req = b"POST ".to_vec();
        req.extend_from_slice(path);
        req.extend_from_slice(
            format!(
                " HTTP/1.1\r\nHost: g\r\nx-gateway-key: {JS_ONLY_KEY}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            )
            .as_bytes(),
        );
        let out = raw_bytes(gw.running.addr, &req).await;
        let shown = String::from_utf8_lossy(path);
        assert_eq!(status_of(&out), 400, "{shown} must be refused: {out}");
        // Raw UTF-8 reaches the gateway (http 1.x takes it); invalid UTF-8 is refused by the HTTP
        // parser itself, with a bare 400.
        if std::str::from_utf8(path).is_ok() {
            assert_eq!(code_of(&out).as_deref(), Some("bad_request"), "{shown}: {out}");
        }
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing was forwarded");

    // Canonical paths still pass, byte for byte: `.x`, `a..b`, an encoded space inside a name and
    // an encoded CJK name are not dot-segments.
    for path in ["/js/.x/", "/js/a..b/", "/js/a%20b/", "/js/%E4%BD%A0/"] {
        let out = raw(
            gw.running.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: g\r\nx-gateway-key: {JS_ONLY_KEY}\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status_of(&out), 200, "{path}: {out}");
        assert_eq!(seen.lock().unwrap().pop().unwrap().path, path);
    }
}

#[tokio::test]
async fn method_override_and_original_url_headers_never_reach_the_platform() {
    let sb = sandbox().await;
    let (rec, seen) = recorder().await;
    let gw = gateway_for(&sb, &rec, |_| {}).await;
    let headers = [
        ("X-HTTP-Method-Override", "DELETE"),
        ("x_http_method_override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/api/douyin/v1/role/check/"),
        ("x_original_url", "/api/douyin/v1/role/check/"),
        ("X-Rewrite-URL", "/api/douyin/v1/role/check/"),
        ("X-Rewrite_Url", "/api/douyin/v1/role/check/"),
    ];
    let mut all = vec![("x-gateway-key", CALLER_KEY), ("x-kept", "1")];
    all.extend(headers);
    let r = Http::default().send(Method::GET, &gw.url("/rec/a"), &all, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = seen.lock().unwrap()[0].clone();
    for (name, _) in headers {
        assert!(
            got.headers.get(name).is_none(),
            "{name} reached the platform: {:?}",
            got.headers
        );
    }
    for v in got.headers.values() {
        let v = String::from_utf8_lossy(v.as_bytes());
        assert!(v != "DELETE" && !v.contains("role/check"), "{:?}", got.headers);
    }
    assert_eq!(got.values("x-kept"), ["1"], "other headers are kept");
}

// ---------- item 7: no caller credential reaches the platform ----------

/// The one `access-token` header the host got: the gateway's.
fn only_the_gateways_header(got: &Received) {
    let tokens = got.values("access-token");
    assert_eq!(tokens.len(), 1, "{:?}", got.headers);
    assert!(tokens[0].starts_with("clt."), "{tokens:?}");
}

#[tokio::test]
async fn credential_headers_in_any_spelling_are_stripped() {
    let sb = sandbox().await;
    let (rec, seen) = recorder().await;
    let gw = gateway_for(&sb, &rec, |_| {}).await;
    let http = Http::default();
    let credentials = [
        "access.token",
        "accesstoken",
        "AccessToken",
        "x-access-token",
        "X_Access_Token",
        "x-access.token",
        "access--token",
    ];
    let mut all = vec![("x-gateway-key", CALLER_KEY), ("x-kept", "1")];
    all.extend(credentials.iter().map(|n| (*n, "evil")));
    let r = http.send(Method::GET, &gw.url("/rec/h"), &all, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = seen.lock().unwrap().pop().unwrap();
    only_the_gateways_header(&got);
    assert!(
        !got.headers.values().any(|v| v.as_bytes() == b"evil"),
        "a caller credential reached the platform: {:?}",
        got.headers
    );
    assert_eq!(got.values("x-kept"), ["1"]);

    // inject = "header:x-token": the caller's `token`, `x_token`, `X.Token` are that header too.
    let all = [
        ("x-gateway-key", CALLER_KEY),
        ("x.token", "evil"),
        ("X_TOKEN", "evil"),
        ("token", "evil"),
    ];
    let r = http.send(Method::GET, &gw.url("/rec-x-token/h"), &all, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = seen.lock().unwrap().pop().unwrap();
    assert!(
        !got.headers.values().any(|v| v.as_bytes() == b"evil"),
        "{:?}",
        got.headers
    );
    let tokens = got.values("x-token");
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].starts_with("clt."), "{tokens:?}");
}

#[tokio::test]
async fn credential_cookies_are_removed_and_the_rest_kept_byte_for_byte() {
    let sb = sandbox().await;
    let (rec, seen) = recorder().await;
    let gw = gateway_for(&sb, &rec, |_| {}).await;
    let all = [
        ("x-gateway-key", CALLER_KEY),
        ("cookie", "a=1; access_token=evil;b=x%20y ;  ACCESS-TOKEN=evil"),
        ("cookie", "x-access-token=evil; access%5Ftoken=evil"),
        ("cookie", "c=3"),
        ("cookie", "accessToken=evil"),
    ];
    let r = Http::default().send(Method::GET, &gw.url("/rec/c"), &all, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = seen.lock().unwrap().pop().unwrap();
    let cookies = got.values("cookie");
    assert_eq!(cookies, ["a=1; b=x%20y", "c=3"], "{:?}", got.headers);
    only_the_gateways_header(&got);
}

#[tokio::test]
async fn credential_query_names_in_php_rack_and_spring_spellings_are_stripped() {
    let sb = sandbox().await;
    let (rec, _) = recorder().await;
    let gw = gateway_for(&sb, &rec, |_| {}).await;
    let http = Http::default();
    for q in [
        "access[token=evil",
        "access%5btoken=evil",
        "access%5Btoken=evil",
        "access.token[=evil",
        "accessToken=evil",
        "AccessToken=evil",
        "access_token%0b=evil",
        "access_token%00x=evil",
        "%0baccess_token=evil",
        "access%255Ftoken=evil",
        "[access_token]=evil",
        "access_token]=evil",
        "access__token=evil",
    ] {
        let r = http.get(&gw.url(&format!("/js/getticket/?{q}&keep=1"))).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        let seen = http.requests(&sb).await.pop().unwrap();
        let sent = seen["query"].as_str().unwrap();
        assert!(!sent.contains("evil"), "{q} reached the platform as {sent}");
        assert!(sent.starts_with("keep=1&access_token=clt."), "{q}: {sent}");
    }
    // Names that are not the credential are kept byte for byte (no server reads these as it).
    let kept = "access=1&token=2&access_tokens=3&xaccess_token=4&access%5Btoken%5D=5&a[access_token]=6";
    let r = http.get(&gw.url(&format!("/js/getticket/?{kept}"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = http.requests(&sb).await.pop().unwrap();
    assert!(
        seen["query"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{kept}&access_token=clt.")),
        "{seen}"
    );
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[tokio::test]
async fn credential_fields_of_a_form_body_are_removed_and_every_other_byte_kept() {
    let sb = sandbox().await;
    let (rec, seen) = recorder().await;
    let gw = gateway_for(&sb, &rec, |s| s.retry_buffer_bytes = 4096).await;
    let http = Http::default();
    let body = "a=1&access_token=evil&b=x%20y+z&Access.Token=evil&&c&access%5btoken=evil;d=4&accessToken=evil";
    let expected = "a=1&b=x%20y+z&&c;d=4";
    for (path, token) in [("/rec/form", true), ("/rec-none/form", false)] {
        let r = http
            .send(
                Method::POST,
                &gw.url(path),
                &[("x-gateway-key", CALLER_KEY), FORM],
                body,
            )
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let got = seen.lock().unwrap().pop().unwrap();
        assert_eq!(got.body_text(), expected, "{path}");
        assert_eq!(got.values("content-length"), [expected.len().to_string()], "{path}");
        if token {
            only_the_gateways_header(&got);
        }
    }
    // The same with a charset parameter, in any case, and chunked (no Content-Length).
    let out = raw(
        gw.running.addr,
        &format!(
            "POST /rec/form HTTP/1.1\r\nHost: g\r\nx-gateway-key: {CALLER_KEY}\r\n\
             Content-Type: Application/X-WWW-Form-URLEncoded; charset=UTF-8\r\ntransfer-encoding: chunked\r\n\
             connection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ),
    )
    .await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert_eq!(seen.lock().unwrap().pop().unwrap().body_text(), expected);

    // POST /oauth/userinfo/: the platform reads the token from the form body. A caller's never
    // gets there (the route attaches none here; `inject = "form_body"` is a later issue's).
    let r = http
        .send(
            Method::POST,
            &gw.url("/oauth/userinfo/"),
            &[("x-gateway-key", CALLER_KEY), FORM],
            "access_token=act.someone-elses&open_id=u1",
        )
        .await;
    assert_ne!(r.status, 400, "{}", r.text());
    let logged = http.requests(&sb).await.pop().unwrap();
    assert_eq!(logged["path"], "/oauth/userinfo/");
    assert_eq!(logged["body_sha256"], sha256_hex(b"open_id=u1"), "{logged}");

    // A form body larger than retry_buffer_bytes cannot be read whole: 413, nothing sent.
    let before = seen.lock().unwrap().len();
    let big = format!("a={}&access_token=evil", "x".repeat(5000));
    let r = http
        .send(
            Method::POST,
            &gw.url("/rec-none/form"),
            &[("x-gateway-key", CALLER_KEY), FORM],
            big,
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("body_too_large"));
    assert!(r.text().contains("retry_buffer_bytes"), "{}", r.text());
    assert_eq!(seen.lock().unwrap().len(), before, "nothing was sent");
}

fn multipart(boundary: &str, parts: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (disposition, value) in parts {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{value}\r\n"
        ));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

#[tokio::test]
async fn a_multipart_part_named_like_a_credential_is_refused() {
    let sb = sandbox().await;
    let (rec, seen) = recorder().await;
    let gw = gateway_for(&sb, &rec, |s| s.retry_buffer_bytes = 1024).await;
    let http = Http::default();
    let ct = "multipart/form-data; boundary=XyZ";
    let refused = [
        r#"name="access_token""#,
        "name=access_token",
        r#"NAME="Access-Token""#,
        r#"name="access[token""#,
        r#"name="access_token[]""#,
        r#"name="accessToken""#,
        r#"name*=UTF-8''access%5Ftoken"#,
        r#"name="=?UTF-8?B?YWNjZXNzX3Rva2Vu?=""#,
        "name=\"x\"; name=\"access_token\"",
    ];
    for disposition in refused {
        let body = multipart("XyZ", &[(r#"name="a""#, "1"), (disposition, "evil")]);
        for path in ["/rec/up", "/rec-none/up"] {
            let r = http
                .send(
                    Method::POST,
                    &gw.url(path),
                    &[("x-gateway-key", CALLER_KEY), ("content-type", ct)],
                    body.clone(),
                )
                .await;
            assert_eq!(r.status, 400, "{disposition} on {path}: {}", r.text());
            assert_eq!(r.gateway_error().as_deref(), Some("bad_request"));
        }
    }
    // A boundary the platform might take otherwise (RFC 2231's `boundary*`, a second one), or a
    // compressed body: the gateway cannot read it as the platform would.
    let body = multipart("XyZ", &[(r#"name="a""#, "1")]);
    for (ct, extra) in [
        ("multipart/form-data; boundary=XyZ; boundary*=UTF-8''Other", None),
        ("multipart/form-data; boundary=XyZ", Some(("content-encoding", "gzip"))),
    ] {
        let mut headers = vec![("x-gateway-key", CALLER_KEY), ("content-type", ct)];
        headers.extend(extra);
        let r = http
            .send(Method::POST, &gw.url("/rec-none/up"), &headers, body.clone())
            .await;
        assert_eq!(r.status, 400, "{ct} {extra:?}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("bad_request"));
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");

    // A body over retry_buffer_bytes streams: the part is found after the first KiB, in a later
    // chunk, and the body is cut before its value goes out.
    let mut chunks = String::new();
    let start = multipart("XyZ", &[(r#"name="file"; filename="a.bin""#, &"p".repeat(3000))]);
    let start = start.strip_suffix("--XyZ--\r\n").unwrap();
    for piece in start.as_bytes().chunks(500) {
        chunks.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            std::str::from_utf8(piece).unwrap()
        ));
    }
    let last = "--XyZ\r\nContent-Disposition: form-data; name=\"access_token\"\r\n\r\nevil-streamed\r\n--XyZ--\r\n";
    chunks.push_str(&format!("{:x}\r\n{last}\r\n0\r\n\r\n", last.len()));
    let out = raw(
        gw.running.addr,
        &format!(
            "POST /rec/up HTTP/1.1\r\nHost: g\r\nx-gateway-key: {CALLER_KEY}\r\ncontent-type: {ct}\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n{chunks}"
        ),
    )
    .await;
    assert_eq!(status_of(&out), 400, "{out}");
    assert_eq!(code_of(&out).as_deref(), Some("bad_request"), "{out}");
    for got in seen.lock().unwrap().iter() {
        let body = got.body.as_deref().unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(body).contains("evil-streamed"),
            "the credential reached the platform"
        );
    }

    // Other parts pass byte for byte, streamed or not.
    let fine = multipart(
        "XyZ",
        &[
            (r#"name="open_id""#, "u1"),
            (r#"name="file"; filename="access_token""#, "data"),
            (r#"name="access_tokens""#, "1"),
        ],
    );
    let big = multipart("XyZ", &[(r#"name="video"; filename="v.mp4""#, &"v".repeat(5000))]);
    for body in [fine, big] {
        let r = http
            .send(
                Method::POST,
                &gw.url("/rec/up"),
                &[("x-gateway-key", CALLER_KEY), ("content-type", ct)],
                body.clone(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let got = seen.lock().unwrap().pop().unwrap();
        assert_eq!(got.body_text(), body);
        only_the_gateways_header(&got);
    }
}

#[tokio::test]
async fn json_members_named_like_the_credential_are_dropped_on_json_body_routes() {
    let sb = sandbox().await;
    let (rec, seen) = recorder().await;
    let gw = gateway_for(&sb, &rec, |_| {}).await;
    let sent = r#"{"a":1,"ACCESS_TOKEN":"evil","Access_Token":"evil","access-token":"evil","accessToken":"evil","b":{"access_token":"inner"}}"#;
    let r = Http::default().post(&gw.url("/rec-json/x"), sent).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = seen.lock().unwrap().pop().unwrap();
    let body = got.body_text();
    assert!(
        body.starts_with(r#"{"a":1,"b":{"access_token":"inner"},"access_token":"clt."#),
        "{body}"
    );
    assert!(!body.contains("evil"), "{body}");
}
