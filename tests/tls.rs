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

/// An HTTPS upstream that notes, for each call, its path and how its connection's TLS handshake
/// went (full, or a resumed session).
async fn noting_upstream(
    pem: &Pem,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<(String, rustls::HandshakeKind)>>>,
) {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(pem.cert.path())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pem.key.path()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = bind().await;
    let port = listener.local_addr().unwrap().port();
    let noted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = std::sync::Arc::clone(&noted);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, calls) = (acceptor.clone(), std::sync::Arc::clone(&calls));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    calls.lock().unwrap().push((req.uri().path().to_string(), kind));
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"{}"),
                        )))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (port, noted)
}

/// One call on a connection of its own to the gateway (the gateway hands connections to its
/// proxy threads in turn).
async fn call_on_own_connection(gw: &Gateway, path: &str) -> http::StatusCode {
    let stream = tokio::net::TcpStream::connect(gw.running.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "gateway")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    send.send_request(req).await.unwrap().status()
}

#[tokio::test]
async fn a_tls_session_opened_on_one_proxy_thread_is_resumed_on_another() {
    let pem = self_signed();
    let (port, noted) = noting_upstream(&pem).await;
    let secret = secret_file();
    let text = TestConfig::standard(&format!("https://127.0.0.1:{port}"), secret.path())
        .server(|s| {
            s.allow_anonymous = true;
            s.worker_threads = Some(2);
        })
        .upstream(&format!("ca_file = \"{}\"", pem.cert.path().display()))
        .routes_first("[[routes]]\nname = \"pass\"\npath = \"/pass/*\"\ntoken = \"none\"\n")
        .render();
    let gw = gateway_text(&text, secret).await;
    // Two connections, so two proxy threads, each opening its own upstream connection.
    assert_eq!(call_on_own_connection(&gw, "/pass/first").await, 200);
    assert_eq!(call_on_own_connection(&gw, "/pass/second").await, 200);
    let calls: Vec<_> = noted
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with("/pass/"))
        .cloned()
        .collect();
    assert_eq!(
        calls,
        [
            ("/pass/first".to_string(), rustls::HandshakeKind::Full),
            ("/pass/second".to_string(), rustls::HandshakeKind::Resumed),
        ],
        "the second thread's first upstream connection resumes the first thread's TLS session"
    );
}
