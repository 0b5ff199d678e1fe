//! TLS on both sides: the gateway serving HTTPS, and an HTTPS upstream whose
//! self-signed certificate is trusted only because `ca_file` pins it.

mod common;

use common::*;
use std::io::Write;

struct Pem {
    cert: tempfile::NamedTempFile,
    key: tempfile::NamedTempFile,
}

/// A self-signed CA-flagged certificate for 127.0.0.1, like `openssl req -x509` makes.
fn self_signed() -> Pem {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let mut c = tempfile::NamedTempFile::new().unwrap();
    c.write_all(cert.pem().as_bytes()).unwrap();
    let mut k = tempfile::NamedTempFile::new().unwrap();
    k.write_all(key.serialize_pem().as_bytes()).unwrap();
    Pem { cert: c, key: k }
}

#[tokio::test]
async fn https_upstream_trusted_only_through_ca_file() {
    let sb = sandbox().await;
    let pem = self_signed();
    // Gateway A serves HTTPS and passes everything through to the sandbox.
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .server(|s| s.allow_anonymous = true)
        .tls(pem.cert.path(), pem.key.path())
        .routes_first("[[routes]]\nname = \"pass-first\"\npath = \"/*\"\ntoken = \"none\"\n")
        .extra("[[routes]]\nname = \"pass\"\npath = \"/*\"\ntoken = \"none\"\n")
        .render();
    let a = gateway_text(&text, secret).await;
    let a_port = a.running.addr.port();

    // Gateway B uses A as its platform, trusting A's certificate by ca_file. (A strips credentials
    // like any gateway, so B's calls through A use a token-less route; its token fetch goes through A too.)
    let upstream_b = |host: &str, ca: bool| {
        let secret = secret_file();
        let mut config = TestConfig::standard(&format!("https://{host}:{a_port}"), secret.path())
            .extra("[[routes]]\nname = \"sandbox\"\npath = \"/sandbox/*\"\ntoken = \"none\"\n");
        if ca {
            config = config.upstream(&format!("ca_file = \"{}\"", pem.cert.path().display()));
        }
        let text = config.render();
        (text, secret)
    };
    let http = Http::default();
    let refresh = |gw: &Gateway| {
        let (http, url) = (http.clone(), gw.admin("/admin/refresh"));
        async move {
            http.send(
                http::Method::POST,
                &url,
                &[("x-admin-key", ADMIN_KEY)],
                r#"{"app":"main","class":"client"}"#,
            )
            .await
        }
    };

    let (text, secret) = upstream_b("127.0.0.1", true);
    let b = gateway_text(&text, secret).await;
    let r = http.get(&b.url("/sandbox/stats")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(n(&r.json()["client_token_calls"]), 0);
    let r = refresh(&b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        n(&http.stats(&sb).await["client_token_calls"]),
        1,
        "the token fetch went through TLS"
    );

    // Without the pin: refused, nothing reaches the platform.
    let (text, secret) = upstream_b("127.0.0.1", false);
    let c = gateway_text(&text, secret).await;
    let r = http.get(&c.url("/sandbox/stats")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("certificate"), "{}", r.text());
    assert_eq!(refresh(&c).await.status, 503);

    // Pinned, but under a name the certificate does not carry: refused.
    let (text, secret) = upstream_b("localhost", true);
    let d = gateway_text(&text, secret).await;
    let r = http.get(&d.url("/sandbox/stats")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("certificate"), "{}", r.text());
    assert_eq!(refresh(&d).await.status, 503);
    assert_eq!(n(&http.stats(&sb).await["client_token_calls"]), 1);
}
