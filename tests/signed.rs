//! Signed calls: the app's RSA keys in the config.

mod common;
use common::*;

fn keys_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys")
}

fn load_app(app: &str) -> Result<(), String> {
    let secret = secret_file();
    let text = TestConfig::new("http://127.0.0.1:9", secret.path()).app(app).render();
    douyin_gateway::config::Config::load_str(&text, "t")
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn check_reads_the_apps_rsa_keys_and_refuses_weak_or_unreadable_ones() {
    let k = keys_dir();
    for private in ["app-private.pem", "app-private-pkcs1.pem"] {
        load_app(&format!(
            "signing_key_file = {:?}\nsigning_key_version = \"2\"\nplatform_public_key_file = {:?}",
            k.join(private),
            k.join("platform-public.pem")
        ))
        .unwrap_or_else(|e| panic!("{private}: {e}"));
    }
    let err = load_app(&format!("signing_key_file = {:?}", k.join("weak-1024.pem"))).unwrap_err();
    assert!(err.contains("signing_key_file") && err.contains("2048"), "{err}");
    let err = load_app(&format!("signing_key_file = {:?}", k.join("app-public.pem"))).unwrap_err();
    assert!(err.contains("signing_key_file"), "{err}");
    let given_private = load_app(&format!(
        "platform_public_key_file = {:?}",
        k.join("platform-private.pem")
    ))
    .unwrap_err();
    assert!(given_private.contains("platform_public_key_file"), "{given_private}");
    let err = load_app("signing_key_env = \"DGW_TEST_NO_SUCH_KEY_VAR\"").unwrap_err();
    assert!(err.contains("DGW_TEST_NO_SUCH_KEY_VAR"), "{err}");
    let err = load_app(&format!(
        "signing_key_file = {:?}\nsigning_key_version = \"\"",
        k.join("app-private.pem")
    ))
    .unwrap_err();
    assert!(err.contains("signing_key_version"), "{err}");
    // A key's text never appears in what check says, even about a key in the wrong place.
    let pem = std::fs::read_to_string(k.join("platform-private.pem")).unwrap();
    for line in pem.lines().skip(1).take(3) {
        assert!(!given_private.contains(line), "{given_private}");
    }
}

/// The standard gateway whose app signs with the fixture key and verifies with the platform's,
/// with the trade routes: the token in the header, and (`trade-json`) in the JSON body.
async fn signing_gateway(sb: &douyin_gateway::sandbox::Sandbox, verify: &str) -> Gateway {
    let k = keys_dir();
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .app(&format!(
            "signing_key_file = {:?}\nsigning_key_version = \"2\"\nplatform_public_key_file = {:?}",
            k.join("app-private.pem"),
            k.join("platform-public.pem")
        ))
        .routes_first(&format!(
            "[[routes]]\nname = \"trade-json\"\npath = \"/api/apps/trade/v2/refund/*\"\nmethods = [\"POST\"]\n\
             token = \"client\"\ninject = \"json_body\"\nsign = \"byte_authorization\"\n{verify}\n\n\
             [[routes]]\nname = \"trade\"\npath = \"/api/apps/trade/v2/*\"\ntoken = \"client\"\n\
             sign = \"byte_authorization\"\n{verify}"
        ))
        .render();
    gateway_text(&text, secret).await
}

const QUERY_ORDER: &str = "/api/apps/trade/v2/order/query_order";

async fn trade(http: &Http, gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut h = vec![("x-gateway-key", CALLER_KEY), ("content-type", "application/json")];
    h.extend_from_slice(headers);
    http.send(http::Method::POST, &gw.url(path), &h, body.to_string()).await
}

/// The signed calls the sandbox received, oldest first.
async fn signed_calls(http: &Http, sb: &douyin_gateway::sandbox::Sandbox) -> Vec<serde_json::Value> {
    let r = http
        .send(http::Method::GET, &format!("{}/sandbox/signed", sb.url()), &[], "")
        .await;
    r.json()["signed"].as_array().unwrap().clone()
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn the_sandbox_refuses_a_signature_over_any_other_bytes() {
    use douyin_gateway::signature::{byte_authorization, SigningKey};
    let sb = sandbox().await;
    let http = Http::default();
    let key = SigningKey::from_pem(&std::fs::read_to_string(keys_dir().join("app-private.pem")).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed_body = r#"{"order_id":"o1"}"#;
    let auth = byte_authorization(
        &key,
        CLIENT_KEY,
        "1",
        "POST",
        QUERY_ORDER,
        signed_body.as_bytes(),
        now,
        "N1",
    );
    let url = format!("{}{QUERY_ORDER}", sb.url());
    // The very bytes signed pass the signature check (the token is another matter: none here).
    let r = http
        .send(http::Method::POST, &url, &[("byte-authorization", &auth)], signed_body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Any other bytes: a body rewritten after signing, another query, another method, no signature.
    for (method, target, body) in [
        (
            http::Method::POST,
            url.clone(),
            r#"{"order_id":"o1","access_token":"t"}"#,
        ),
        (http::Method::POST, format!("{url}?a=1"), signed_body),
        (http::Method::PUT, url.clone(), signed_body),
    ] {
        let r = http.send(method, &target, &[("byte-authorization", &auth)], body).await;
        assert_eq!(r.status, 401, "{target} {body}: {}", r.text());
    }
    let r = http.send(http::Method::POST, &url, &[], signed_body).await;
    assert_eq!(r.status, 401);
    let seen = signed_calls(&http, &sb).await;
    assert_eq!(
        seen.iter().map(|c| c["valid"].as_bool().unwrap()).collect::<Vec<_>>(),
        [true, false, false, false]
    );
}

#[tokio::test]
async fn calls_are_signed_over_the_bytes_sent_and_the_callers_signature_removed() {
    let sb = sandbox().await;
    let gw = signing_gateway(&sb, "").await;
    let http = Http::default();
    let forged = "SHA256-RSA2048 appid=\"x\",nonce_str=\"n\",timestamp=\"1\",key_version=\"1\",signature=\"AAAA\"";
    let r = trade(
        &http,
        &gw,
        QUERY_ORDER,
        &[("byte-authorization", forged), ("byte_authorization", forged)],
        r#"{"order_id":"o1"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["order_status"], "SUCCESS", "{}", r.text());
    // The token written into the JSON body is under the signature too.
    let r = trade(
        &http,
        &gw,
        "/api/apps/trade/v2/refund/create_refund?x=1",
        &[],
        r#"{"order_id":"o2"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["err_no"], 0, "{}", r.text());
    let seen = signed_calls(&http, &sb).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    for call in &seen {
        assert_eq!(call["valid"], true, "{call:?}");
        assert_eq!(
            call["authorization_headers"], 1,
            "the caller's, in any spelling, removed: {call:?}"
        );
        assert_eq!(call["key_version"], "2");
        assert_eq!(call["nonce"].as_str().unwrap().len(), 32);
    }
    assert_ne!(seen[0]["nonce"], seen[1]["nonce"]);
    assert_eq!(seen[1]["uri"], "/api/apps/trade/v2/refund/create_refund?x=1");
    let token = seen[1]["access_token"].as_str().unwrap();
    let rewritten = format!(r#"{{"order_id":"o2","access_token":"{token}"}}"#);
    assert_eq!(seen[1]["body_sha256"], sha256(rewritten.as_bytes()));
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(&m, "douyin_gateway_signatures_total{app=\"main\",outcome=\"signed\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "douyin_gateway_signatures_total{app=\"main\",outcome=\"verified\"}"),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_replay_after_a_refresh_is_signed_again() {
    let sb = sandbox().await;
    let gw = signing_gateway(&sb, "").await;
    let http = Http::default();
    let r = trade(&http, &gw, QUERY_ORDER, &[], r#"{"order_id":"o1"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Another fetcher's doing: the gateway's client_token dies at the platform.
    http.control(&sb, "/sandbox/revoke", serde_json::json!({ "client_key": CLIENT_KEY }))
        .await;
    let r = trade(&http, &gw, QUERY_ORDER, &[], r#"{"order_id":"o1"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["err_no"], 0, "replayed with the new token: {}", r.text());
    let seen = signed_calls(&http, &sb).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let (rejected, replay) = (&seen[1], &seen[2]);
    assert_eq!(
        (&rejected["valid"], &replay["valid"]),
        (&serde_json::json!(true), &serde_json::json!(true))
    );
    assert_ne!(rejected["nonce"], replay["nonce"], "signed again");
    assert_ne!(rejected["access_token"], replay["access_token"]);
}

#[tokio::test]
async fn a_tampered_or_unsigned_answer_is_502_and_an_unsigned_500_is_504() {
    let sb = sandbox().await;
    let gw = signing_gateway(&sb, "").await;
    let http = Http::default();
    for (next, status, code) in [
        ("tampered", 502, "bad_upstream_signature"),
        ("unsigned", 502, "bad_upstream_signature"),
        ("status500", 504, "upstream_timeout"),
    ] {
        let r = http
            .control(&sb, "/sandbox/trade", serde_json::json!({ "next": next }))
            .await;
        assert_eq!(r["next"], next);
        let r = trade(&http, &gw, QUERY_ORDER, &[], r#"{"order_id":"o1"}"#).await;
        assert_eq!(r.status, status, "{next}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some(code), "{next}");
        let text = r.text();
        assert!(
            !text.contains("order_status") && !text.contains("REFUNDED"),
            "{next}: body passed on: {text}"
        );
    }
    // The platform behaves again: the answer verifies and passes.
    let r = trade(&http, &gw, QUERY_ORDER, &[], r#"{"order_id":"o1"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(&m, "douyin_gateway_signatures_total{app=\"main\",outcome=\"refused\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&m, "douyin_gateway_signatures_total{app=\"main\",outcome=\"verified\"}"),
        Some(1.0)
    );
    // No key material anywhere a caller or an operator's scraper sees.
    let pem = std::fs::read_to_string(keys_dir().join("app-private.pem")).unwrap();
    for line in pem.lines().filter(|l| !l.starts_with("-----")).take(5) {
        assert!(!m.contains(line));
    }
    assert!(!m.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn without_verification_a_tampered_answer_passes_as_it_is() {
    let sb = sandbox().await;
    let gw = signing_gateway(&sb, "verify_response = false").await;
    let http = Http::default();
    http.control(&sb, "/sandbox/trade", serde_json::json!({ "next": "tampered" }))
        .await;
    let r = trade(&http, &gw, QUERY_ORDER, &[], r#"{"order_id":"o1"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("REFUNDED"));
}

#[test]
fn check_refuses_a_signing_route_without_the_keys_it_needs() {
    let k = keys_dir();
    let secret = secret_file();
    let route = |verify: &str| {
        format!(
            "[[routes]]\nname = \"trade\"\npath = \"/api/apps/trade/v2/*\"\ntoken = \"client\"\n\
             sign = \"byte_authorization\"\n{verify}"
        )
    };
    let load = |app: &str, routes: &str| {
        let text = TestConfig::new("http://127.0.0.1:9", secret.path())
            .app(app)
            .routes_first(routes)
            .render();
        douyin_gateway::config::Config::load_str(&text, "t")
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let err = load("", &route("")).unwrap_err();
    assert!(err.contains("sign") && err.contains("signing_key"), "{err}");
    let signing = format!("signing_key_file = {:?}", k.join("app-private.pem"));
    load(&signing, &route("")).unwrap();
    let err = load(&signing, &route("verify_response = true")).unwrap_err();
    assert!(
        err.contains("verify_response") && err.contains("platform_public_key"),
        "{err}"
    );
    let err = load(
        &signing,
        "[[routes]]\nname = \"x\"\npath = \"/x\"\ntoken = \"client\"\nverify_response = true",
    )
    .unwrap_err();
    assert!(err.contains("verify_response"), "{err}");
    let err = load(
        &signing,
        "[[routes]]\nname = \"x\"\npath = \"/x\"\ntoken = \"client\"\nsign = \"rsa\"",
    )
    .unwrap_err();
    assert!(err.contains("sign"), "{err}");
}

/// The gateway as a process: a refused answer is logged with the platform's X-Tt-Logid, and no
/// line of its log holds the private key, whatever happened.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_answer_is_logged_with_the_platforms_log_id_and_never_a_key() {
    let sb = sandbox().await;
    let k = keys_dir();
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .app(&format!(
            "signing_key_file = {:?}\nplatform_public_key_file = {:?}",
            k.join("app-private.pem"),
            k.join("platform-public.pem")
        ))
        .routes_first("[[routes]]\nname = \"trade\"\npath = \"/api/apps/trade/v2/*\"\ntoken = \"client\"\nsign = \"byte_authorization\"")
        .render();
    let cfg = text_file(&text);
    let (mut p, port, _) = Proc::serve(
        &["serve", "--config", cfg.path().to_str().unwrap()],
        &[("NO_COLOR", "1")],
    );
    let http = Http::default();
    let url = format!("http://127.0.0.1:{port}{QUERY_ORDER}");
    let h = [("x-gateway-key", CALLER_KEY), ("content-type", "application/json")];
    assert_eq!(http.send(http::Method::POST, &url, &h, "{}").await.status, 200);
    http.control(&sb, "/sandbox/trade", serde_json::json!({ "next": "tampered" }))
        .await;
    assert_eq!(http.send(http::Method::POST, &url, &h, "{}").await.status, 502);
    http.control(&sb, "/sandbox/trade", serde_json::json!({ "next": "status500" }))
        .await;
    assert_eq!(http.send(http::Method::POST, &url, &h, "{}").await.status, 504);
    p.wait_for("sandbox-trade-500");
    p.signal("-TERM");
    let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0, "{log}");
    let refused = log
        .lines()
        .find(|l| l.contains("did not verify"))
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    assert!(
        refused.contains("sandbox-trade") && refused.contains("trade"),
        "{refused}"
    );
    let pem = std::fs::read_to_string(k.join("app-private.pem")).unwrap();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "a line of the private key in the log");
    }
    assert!(!log.contains("PRIVATE KEY"), "{log}");
}
