//! Running the gateway: the proxy and admin listeners, graceful shutdown,
//! and config reload.

use crate::config::{Config, Severity};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::token::Tokens;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running gateway.
pub struct Running {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    /// Shared state (tests look at the token cache and metrics).
    pub shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
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

/// Starts a gateway from a validated config, binding its listeners.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, String> {
    let listen = TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| format!("listen {}: {e}", config.server.listen))?;
    let admin = TcpListener::bind(&config.server.admin_listen)
        .await
        .map_err(|e| format!("admin_listen {}: {e}", config.server.admin_listen))?;
    start_on(config, config_path, listen, admin).await
}

/// Starts a gateway on listeners already bound (tests, `demo`).
pub async fn start_on(
    mut config: Config,
    config_path: Option<PathBuf>,
    listen: TcpListener,
    admin: TcpListener,
) -> Result<Running, String> {
    let addr = listen.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    // Authorize URLs name the admin listener as bound (port 0 becomes the real port).
    config.server.admin_listen = admin_addr.to_string();
    let metrics = Arc::new(Metrics::new());
    let client = crate::upstream::client(&config.upstream)?;
    let tls = tls_acceptor(&config)?;
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let config_store = config.store.clone();
    let (runtime, settings) = Runtime::build(config, &metrics)?;
    let store = Arc::new(crate::store::Store::open(&config_store).await?);
    let tokens = Tokens::new(client.clone(), settings, Arc::clone(&metrics), store);
    let loaded = tokens.load().await.map_err(|e| format!("cannot start: {e}"))?;
    if loaded > 0 {
        tracing::info!(tokens = loaded, "tokens loaded from the store");
    }
    let maintain_every = Duration::from_millis(runtime.config.tokens.maintain_interval_ms);
    let shared = Arc::new(Shared {
        runtime: arc_swap::ArcSwap::from_pointee(runtime),
        tokens,
        client,
        metrics,
        pending: dashmap::DashMap::new(),
    });
    let (shutdown, rx) = watch::channel(false);
    let proxy = crate::proxy::stack(Arc::clone(&shared));
    let admin_svc = {
        let shared = Arc::clone(&shared);
        tower::service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(crate::admin::handle(shared, req).await) }
        })
    };
    let maintenance = {
        let (tokens, mut stop) = (Arc::clone(&shared.tokens), rx.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(maintain_every) => tokens.maintain().await,
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let mut tasks = vec![
        tokio::spawn(serve(listen, tls, proxy, rx.clone(), grace)),
        tokio::spawn(serve(admin, None, admin_svc, rx.clone(), grace)),
        maintenance,
    ];
    tasks.extend(shared.tokens.listen(rx));
    tracing::info!(%addr, %admin_addr, "gateway listening");
    Ok(Running {
        addr,
        admin_addr,
        shared,
        config_path,
        shutdown,
        tasks,
    })
}

impl Running {
    /// Re-reads the config file; a config that fails validation is refused
    /// and the old one keeps serving. Listener addresses, TLS and `ca_file`
    /// need a restart.
    pub fn reload(&self) -> Result<(), String> {
        let path = self.config_path.as_ref().ok_or("no config file to reload")?;
        let (mut config, problems) = Config::load(path).map_err(|e| e.to_string())?;
        for p in problems.iter().filter(|p| p.severity == Severity::Warning) {
            tracing::warn!("{p}");
        }
        config.server.admin_listen = self.admin_addr.to_string();
        let (runtime, settings) = Runtime::build(config, &self.shared.metrics)?;
        self.shared.tokens.reconfigure(settings);
        self.shared.runtime.store(Arc::new(runtime));
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Accepts connections until shutdown, then drains them.
async fn serve<S, B>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(service.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        match tls.clone() {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                tokio::spawn(async move {
                    let _ = watcher.watch(conn).await;
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls) => {
                            let conn = builder.serve_connection(TokioIo::new(tls), svc).into_owned();
                            let _ = watcher.watch(conn).await;
                        }
                        Err(e) => tracing::debug!("TLS handshake failed: {e}"),
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing the remaining connections"),
    }
}
