//! `server.public_listen`: the OAuth flow and the platform's webhook on a listener of their own,
//! the only one exposed to the internet; metrics and the admin API stay on the private one.

mod common;

use common::*;
use douyin_gateway::config::Config;
use http::Method;
use serde_json::json;
use sha1::Digest;
use std::io::Write;

async fn gateway_with_public(sb: &douyin_gateway::sandbox::Sandbox) -> (Gateway, String) {
    let secret = secret_file();
    let (listen, admin, public) = (bind().await, bind().await, bind().await);
    let public_addr = public.local_addr().unwrap();
    let text = TestConfig::new(&sb.url(), secret.path())
        .server(|s| s.public_listen = Some(public_addr.to_string()))
        .app(&format!("redirect_uri = \"http://{public_addr}/oauth/callback\""))
        .render();
    let mut config_file = tempfile::NamedTempFile::new().unwrap();
    config_file.write_all(text.as_bytes()).unwrap();
    let (config, _) = Config::load_str(&text, "test config").unwrap();
    let running = douyin_gateway::server::start_on_all(config, None, listen, admin, Some(public))
        .await
        .unwrap();
    assert_eq!(running.public_addr, Some(public_addr));
    let gw = Gateway {
        running,
        secret,
        config_file,
    };
    (gw, format!("http://{public_addr}"))
}

#[tokio::test]
async fn the_public_listener_serves_the_oauth_flow_and_webhook_and_nothing_else() {
    let sb = sandbox().await;
    let (gw, public) = gateway_with_public(&sb).await;
    let http = Http::default();

    // Private things are not on the public listener, whatever the path's spelling.
    for path in ["/metrics", "/healthz", "/admin/tokens", "/readyz", "/status"] {
        let r = http.get(&format!("{public}{path}")).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let r = http
        .send(
            Method::GET,
            &format!("{public}/admin/tokens"),
            &[("x-admin-key", ADMIN_KEY)],
            "",
        )
        .await;
    assert_eq!(r.status, 404, "the admin key does not open it either");
    // ...and the admin listener keeps them, but no longer serves the public paths.
    assert_eq!(http.get(&gw.admin("/metrics")).await.status, 200);
    assert_eq!(http.get(&gw.admin("/oauth/authorize?app=main")).await.status, 404);
    assert_eq!(http.post(&gw.admin("/webhooks/douyin"), "{}").await.status, 404);

    // A user call before authorization points the user at the public listener.
    let r = http.get(&gw.url("/api/douyin/v1/video/video_list/?open_id=ou_1")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["gateway_error"]["authorize_url"],
        format!("{public}/oauth/authorize?app=main")
    );
    // The whole flow on the public listener: authorize → consent → callback.
    let r = http
        .send(Method::GET, &format!("{public}/oauth/authorize?app=main"), &[], "")
        .await;
    assert_eq!(r.status, 302);
    let consent = r.headers["location"].to_str().unwrap().to_string();
    let r = http.send(Method::GET, &consent, &[], "").await;
    let callback = r.headers["location"].to_str().unwrap().to_string();
    assert!(callback.starts_with(&format!("{public}/oauth/callback?")), "{callback}");
    let page = http.send(Method::GET, &callback, &[], "").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let open_id = open_id_of(&page.text());

    // The platform's webhook reaches it there too.
    let event = json!({"event": "unauthorize", "client_key": CLIENT_KEY, "from_user_id": open_id,
        "content": {}})
    .to_string();
    let mut h = sha1::Sha1::new();
    h.update(CLIENT_SECRET.as_bytes());
    h.update(event.as_bytes());
    let r = http
        .send(
            Method::POST,
            &format!("{public}/webhooks/douyin"),
            &[("x-douyin-signature", &hex::encode(h.finalize()))],
            event,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["dropped"], 1);
}
