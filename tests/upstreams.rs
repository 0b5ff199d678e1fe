//! More than one upstream host: a route's `upstream = NAME` sends its calls to that
//! `[[upstreams]]` entry, with the token its class needs from the platform's token endpoints.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::{Arc, Mutex};

/// What a stand-in for another host (developer.toutiao.com) received: path and `access-token`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A host that answers every call with the mini-app envelope's success and records what came.
async fn other_host() -> (String, Seen) {
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
                    let token = req
                        .headers()
                        .get("access-token")
                        .map(|v| v.to_str().unwrap().to_string());
                    record.lock().unwrap().push((req.uri().path().to_string(), token));
                    async {
                        let mut r = http::Response::new(Full::new(Bytes::from_static(
                            br#"{"err_no":0,"err_tips":"success","data":{}}"#,
                        )));
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
    assert_eq!(got[0].0, "/api/apps/qrcode");
    let token = got[0].1.clone().expect("an access-token header");
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
