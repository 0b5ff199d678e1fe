//! The clients to the platform: HTTP/1.1 or HTTP/2 (ALPN) over rustls, TCP_NODELAY, idle
//! connections reaped. The proxy's calls go over [`LocalClient`] (each thread drives its own
//! connections, pooled per thread; a plain-HTTP call whose body is in memory on the proxy's own
//! HTTP/1.1 client, `h1`); the token engine, `[[notify]]` and the status checks use the
//! pooled [`HttpClient`]. Both connect the same way ([`connector`]).

mod h1;
mod local;
mod pool;

pub use h1::{OwnBody, UpstreamBody, WireError};
pub use local::{Error, LocalClient, ResponseFuture};

use crate::body::ProxyBody;
use crate::config::UpstreamConfig;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::sync::Arc;
use std::time::Duration;

/// The client type.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Idle upstream connections are closed after this: below the 120 s a typical
/// load balancer keeps an idle connection, so we close first.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per host: enough for bursts of a few hundred calls.
const POOL_MAX_IDLE_PER_HOST: usize = 512;

/// TLS sessions kept for resumption, per connector (a few per upstream host are used).
const TLS_SESSIONS: usize = 256;

/// The scheme and authority requests are sent to.
#[derive(Debug, Clone)]
pub struct Base {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// host:port.
    pub authority: http::uri::Authority,
}

impl Base {
    /// Parses a validated `base_url`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("base_url: {e}"))?;
        match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) => Ok(Base {
                scheme: s.clone(),
                authority: a.clone(),
            }),
            _ => Err(format!("base_url {url:?} needs scheme and host")),
        }
    }

    /// A request's origin-form target on the upstream: its path and query kept as they are (no
    /// parsing, no copy), the scheme and authority ours.
    pub fn place(&self, target: http::Uri) -> Result<http::Uri, http::uri::InvalidUriParts> {
        let mut parts = target.into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        http::Uri::from_parts(parts)
    }

    /// The URI of a path (with query) on the upstream.
    pub fn uri(&self, path_and_query: &str) -> Result<http::Uri, http::Error> {
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// Builds the pooled client: webpki roots plus the configured extra CA.
pub fn client(cfg: &UpstreamConfig) -> Result<HttpClient, String> {
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .build(connector(cfg)?))
}

/// The connector both clients use: TCP (TCP_NODELAY, `connect_timeout_ms`), then rustls for
/// `https` with ALPN offering h2 and http/1.1, trusting the webpki roots plus `ca_file`. TLS
/// sessions are resumed from the config's in-memory store (rustls' default, 256 sessions),
/// shared by every connection this connector makes, on any thread.
pub fn connector(cfg: &UpstreamConfig) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut pinned = Vec::new();
    if let Some(path) = &cfg.ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {}: no certificate in it", path.display()));
        }
        for c in certs {
            roots
                .add(c.clone())
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            pinned.push(c);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous() // the verifier below verifies: it only adds exact pins from ca_file
        .with_custom_certificate_verifier(Arc::new(Verifier {
            webpki,
            pinned,
            provider,
        }))
        .with_no_client_auth();
    // Resumed sessions skip the certificate chain's verification and a round trip's key exchange.
    tls.resumption = rustls::client::Resumption::in_memory_sessions(TLS_SESSIONS);
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// Describes a client error for a log line or a 502 message: the chain of
/// causes, which names hosts and OS errors but never headers or bodies.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// WebPKI verification, plus exact pins: a certificate that `ca_file` holds
/// byte for byte is trusted when the server presents it as its own (a
/// self-signed private or test upstream, which WebPKI refuses as "CA used as
/// end entity"). The name is still checked, and so are handshake signatures.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(e) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity).map_err(|_| e)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
