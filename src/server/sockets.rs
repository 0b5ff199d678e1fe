//! The listening sockets: bound with a deep accept queue, inherited from systemd, or wrapped in
//! TLS.

use crate::config::Config;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Connections waiting to be accepted, at most (the kernel caps it at `net.core.somaxconn`,
/// 4096 on current kernels). A stranger reconnecting as fast as it can keeps the queue busy; a
/// deep one keeps a caller's connection from being dropped there and retried a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener to `addr` (a `host:port`, resolved) with [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")))
}

/// The `index`-th inherited socket, if there is one, as the listener `what`.
pub(super) fn inherited_listener(
    fds: &mut listenfd::ListenFd,
    index: usize,
    what: &str,
) -> Result<Option<TcpListener>, String> {
    let Some(l) = fds
        .take_tcp_listener(index)
        .map_err(|e| format!("{what}: inherited socket {index} (LISTEN_FDS): {e}"))?
    else {
        return Ok(None);
    };
    l.set_nonblocking(true).map_err(|e| format!("{what}: {e}"))?;
    let l = TcpListener::from_std(l).map_err(|e| format!("{what}: {e}"))?;
    tracing::info!(
        listener = what,
        addr = %l.local_addr().map_err(|e| e.to_string())?,
        "listening on an inherited socket (LISTEN_FDS)"
    );
    Ok(Some(l))
}

/// The proxy's TLS acceptor, when `[server.tls]` is set (ALPN h2 and http/1.1).
pub(super) fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let Some(tls) = &config.server.tls else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert_path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("server.tls.cert_path {}: {e}", tls.cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_path)
        .map_err(|e| format!("server.tls.key_path {}: {e}", tls.key_path.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
}
