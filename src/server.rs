//! Running the gateway: the proxy and admin listeners, graceful shutdown,
//! and config reload.

use crate::config::{Config, Severity};
use crate::conn::{Activity, Counted, Limits, Open, Tracked};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::token::Tokens;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
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
    /// Where the public listener (`server.public_listen`) listens, if there is one.
    pub public_addr: Option<SocketAddr>,
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

/// Starts a gateway from a validated config, binding its listeners; or on sockets it inherited
/// (systemd socket activation, `LISTEN_FDS`): the first is the proxy listener, the second the
/// admin listener, and `listen` / `admin_listen` are then not bound.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, String> {
    let mut inherited = listenfd::ListenFd::from_env();
    let listen = match inherited_listener(&mut inherited, 0, "listen")? {
        Some(l) => l,
        None => TcpListener::bind(&config.server.listen)
            .await
            .map_err(|e| format!("listen {}: {e}", config.server.listen))?,
    };
    let admin = match inherited_listener(&mut inherited, 1, "admin_listen")? {
        Some(l) => l,
        None => TcpListener::bind(&config.server.admin_listen)
            .await
            .map_err(|e| format!("admin_listen {}: {e}", config.server.admin_listen))?,
    };
    start_on(config, config_path, listen, admin).await
}

/// The `index`-th inherited socket, if there is one, as the listener `what`.
fn inherited_listener(fds: &mut listenfd::ListenFd, index: usize, what: &str) -> Result<Option<TcpListener>, String> {
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

/// Starts a gateway on listeners already bound (tests, `demo`); `public_listen`, if set, is bound
/// here.
pub async fn start_on(
    config: Config,
    config_path: Option<PathBuf>,
    listen: TcpListener,
    admin: TcpListener,
) -> Result<Running, String> {
    let public = match &config.server.public_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .map_err(|e| format!("public_listen {at}: {e}"))?,
        ),
        None => None,
    };
    start_on_all(config, config_path, listen, admin, public).await
}

/// Starts a gateway on listeners already bound, the public one included (it is served only when
/// `server.public_listen` is set).
pub async fn start_on_all(
    mut config: Config,
    config_path: Option<PathBuf>,
    listen: TcpListener,
    admin: TcpListener,
    public: Option<TcpListener>,
) -> Result<Running, String> {
    let addr = listen.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    // Authorize URLs name the admin listener as bound (port 0 becomes the real port).
    config.server.admin_listen = admin_addr.to_string();
    let public = public.filter(|_| config.server.public_listen.is_some());
    let public_addr = match &public {
        Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    if let Some(a) = public_addr {
        config.server.public_listen = Some(a.to_string());
    }
    let metrics = Arc::new(Metrics::new());
    let client = crate::upstream::client(&config.upstream)?;
    let tls = tls_acceptor(&config)?;
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let fd_limit = crate::conn::raise_fd_limit();
    let proxy_limits = Limits {
        max_connections: config
            .server
            .max_connections
            .unwrap_or_else(|| crate::conn::default_max_connections(fd_limit)),
        header_read: Duration::from_millis(config.server.header_read_timeout_ms),
        idle: Duration::from_millis(config.server.idle_timeout_ms),
    };
    // The admin listener has its own small cap, kept aside from the proxy's, so health checks and
    // metrics stay reachable while the proxy is saturated.
    let admin_limits = Limits {
        max_connections: crate::conn::ADMIN_MAX_CONNECTIONS,
        ..proxy_limits
    };
    tracing::info!(
        fd_limit,
        max_connections = proxy_limits.max_connections,
        "connection limits"
    );
    let config_store = config.store.clone();
    let (runtime, settings) = Runtime::build(config, &metrics)?;
    let store = Arc::new(crate::store::Store::open(&config_store).await?);
    for c in store.collectors() {
        metrics.register(c);
    }
    let notify = crate::notify::Notifier::start(&runtime.config.notify, &metrics)?;
    let tokens = Tokens::new(client, settings, Arc::clone(&metrics), store);
    tokens.set_notifier(notify);
    let loaded = tokens.load().await.map_err(|e| e.to_string())?;
    if loaded > 0 {
        tracing::info!(tokens = loaded, "tokens loaded from the store");
    }
    let maintain_every = Duration::from_millis(runtime.config.tokens.maintain_interval_ms);
    let shared = Arc::new(Shared {
        runtime: arc_swap::ArcSwap::from_pointee(runtime),
        tokens,
        metrics,
        in_flight: Default::default(),
        oauth: crate::admin::OAuthStates::new(crate::admin::OAuthStates::key_for(&config_store)),
        oauth_limits: Default::default(),
        webhooks: Default::default(),
    });
    let (shutdown, rx) = watch::channel(false);
    let admin_service = |side: crate::admin::Side| {
        let shared = Arc::clone(&shared);
        tower::service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(crate::admin::handle(shared, side, req).await) }
        })
    };
    let admin_svc = admin_service(crate::admin::Side::Admin);
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
    let threads = shared
        .runtime
        .load()
        .config
        .server
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut tasks = proxy_threads(threads, listen, tls, &shared, &rx, grace, proxy_limits)?;
    tasks.push(tokio::spawn(serve(
        Connections::Listener(admin),
        None,
        admin_svc,
        rx.clone(),
        grace,
        admin_limits,
        Arc::new(Open::default()),
    )));
    if let Some(public) = public {
        tasks.push(tokio::spawn(serve(
            Connections::Listener(public),
            None,
            admin_service(crate::admin::Side::Public),
            rx.clone(),
            grace,
            admin_limits,
            Arc::new(Open::default()),
        )));
    }
    tasks.push(maintenance);
    tasks.extend(shared.tokens.listen(rx));
    match public_addr {
        Some(public_addr) => tracing::info!(%addr, %admin_addr, %public_addr, "gateway listening"),
        None => tracing::info!(%addr, %admin_addr, "gateway listening"),
    }
    Ok(Running {
        addr,
        admin_addr,
        public_addr,
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
            tracing::warn!("{}", p.located());
        }
        config.server.admin_listen = self.admin_addr.to_string();
        if let Some(a) = self.public_addr {
            config.server.public_listen = Some(a.to_string());
        }
        for key in needs_restart(&self.shared.runtime.load().config, &config) {
            tracing::warn!(
                key,
                "{key} changed in the config file: it takes effect only after a restart; the running value stays"
            );
        }
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

/// The settings read only at start that differ between `old` and `new`, by key.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let (o, n) = (&old.server, &new.server);
    let mut keys = Vec::new();
    for (key, changed) in [
        ("server.listen", o.listen != n.listen),
        (
            "server.public_listen",
            o.public_listen.is_some() != n.public_listen.is_some(),
        ),
        ("server.tls", differs(&o.tls, &n.tls)),
        ("server.worker_threads", o.worker_threads != n.worker_threads),
        ("store", differs(&old.store, &new.store)),
        ("upstream.ca_file", old.upstream.ca_file != new.upstream.ca_file),
        (
            "upstream.connect_timeout_ms",
            old.upstream.connect_timeout_ms != new.upstream.connect_timeout_ms,
        ),
        ("upstreams", differs(&old.upstreams, &new.upstreams)),
        ("notify", differs(&old.notify, &new.notify)),
        ("log.format", old.log.format != new.log.format),
    ] {
        if changed {
            keys.push(key);
        }
    }
    keys
}

/// The proxy listener served by `threads` threads, each with a current-thread runtime, the stack
/// and a pool of upstream connections of its own: a call stays on the thread its connection was
/// given to, from first byte to answer, with no wakeup of another thread and no pool shared
/// under a lock. One accept loop (on the calling runtime) hands new connections to the threads in
/// turn: a listening socket shared by several accept loops would leave one thread with them all
/// (whichever is awake takes the next), and `SO_REUSEPORT` cannot apply to a socket that is
/// inherited or handed over. The connection cap counts all threads' connections together.
fn proxy_threads(
    threads: usize,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: &Arc<Shared>,
    rx: &watch::Receiver<bool>,
    grace: Duration,
    limits: Limits,
) -> Result<Vec<JoinHandle<()>>, String> {
    let open = Arc::new(Open::default());
    let mut tasks = Vec::with_capacity(threads + 1);
    let mut hands = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let proxy = crate::proxy::stack(Arc::clone(shared))?;
        let (rx, tls, open) = (rx.clone(), tls.clone(), Arc::clone(&open));
        let (hand, given) = tokio::sync::mpsc::unbounded_channel();
        hands.push(hand);
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("proxy-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("proxy thread {i}: cannot start its runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    serve(Connections::Given(given), tls, proxy, rx, grace, limits, open).await;
                });
                drop(rt);
                let _ = done.send(());
            })
            .map_err(|e| format!("cannot start proxy thread {i}: {e}"))?;
        tasks.push(tokio::spawn(async move {
            let _ = finished.await;
        }));
    }
    tasks.push(tokio::spawn(hand_out(listener, hands, rx.clone(), limits, open)));
    Ok(tasks)
}

/// A new connection, counted against the cap, on its way to a proxy thread.
type Given = (std::net::TcpStream, SocketAddr, crate::conn::OpenGuard);

/// Where a serving loop's connections come from.
enum Connections {
    /// Accepted here.
    Listener(TcpListener),
    /// Accepted by [`hand_out`] and given to this loop.
    Given(tokio::sync::mpsc::UnboundedReceiver<Given>),
}

/// Accepts proxy connections until shutdown and gives them to the proxy threads in turn.
async fn hand_out(
    listener: TcpListener,
    hands: Vec<tokio::sync::mpsc::UnboundedSender<Given>>,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
    open: Arc<Open>,
) {
    let mut refused = Refusals::default();
    let mut next = 0;
    loop {
        let Some((stream, peer, guard)) = accept(&listener, &open, limits, &mut refused, &mut shutdown).await else {
            break;
        };
        let Ok(stream) = stream.into_std().and_then(|s| s.set_nonblocking(true).map(|()| s)) else {
            continue;
        };
        // In turn; a thread that has stopped is skipped.
        let mut given = Some((stream, peer, guard));
        for _ in 0..hands.len() {
            let hand = &hands[next % hands.len()];
            next = next.wrapping_add(1);
            match hand.send(given.take().expect("present")) {
                Ok(()) => break,
                Err(tokio::sync::mpsc::error::SendError(back)) => given = Some(back),
            }
        }
    }
}

/// The next connection admitted under the cap, or `None` at shutdown.
async fn accept(
    listener: &TcpListener,
    open: &Arc<Open>,
    limits: Limits,
    refused: &mut Refusals,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr, crate::conn::OpenGuard)> {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin, and say so
                    // once in a while rather than on every attempt.
                    refused.note(|| format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return None,
        };
        match open.admit(limits.max_connections) {
            Some(guard) => return Some((stream, peer, guard)),
            None => {
                drop(stream);
                refused.note(|| {
                    format!(
                        "{} connections are open (max_connections): new connections are closed at once",
                        limits.max_connections
                    )
                });
            }
        }
    }
}

/// Accepts connections until shutdown, then drains them. Past `limits.max_connections` (counted
/// in `open`, which may be shared with other accept loops) a new connection is closed at once;
/// the established ones carry on.
async fn serve<S, B>(
    incoming: Connections,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    limits: Limits,
    open: Arc<Open>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut refused = Refusals::default();
    let mut incoming = incoming;
    loop {
        let (stream, peer, guard) = match &mut incoming {
            Connections::Listener(l) => match accept(l, &open, limits, &mut refused, &mut shutdown).await {
                Some(c) => c,
                None => break,
            },
            Connections::Given(given) => {
                let next = tokio::select! {
                    g = given.recv() => g,
                    _ = shutdown.changed() => None,
                };
                let Some((stream, peer, guard)) = next else { break };
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(s) => (s, peer, guard),
                    Err(e) => {
                        tracing::debug!("a handed connection could not be registered: {e}");
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let svc = TowerToHyperService::new(Tracked::new(service.clone(), Arc::clone(&activity), peer));
        let builder = builder.clone();
        let stop = shutdown.clone();
        match tls.clone() {
            None => {
                tokio::spawn(async move {
                    let io = TokioIo::new(Counted::new(stream, Arc::clone(&activity)));
                    let conn = builder.serve_connection(io, svc).into_owned();
                    crate::conn::drive(conn, auto::Connection::graceful_shutdown, activity, limits, stop).await;
                    drop(guard);
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    // The handshake is part of the head: it must finish in the same time.
                    match tokio::time::timeout(limits.header_read, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let io = TokioIo::new(Counted::new(tls, Arc::clone(&activity)));
                            let conn = builder.serve_connection(io, svc).into_owned();
                            crate::conn::drive(conn, auto::Connection::graceful_shutdown, activity, limits, stop).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake not complete in time"),
                    }
                    drop(guard);
                });
            }
        }
    }
    drop(incoming);
    let drained = async {
        while open.count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
}

/// Warnings about refused connections, at most one every 10 s, with how many there were.
#[derive(Default)]
struct Refusals {
    last: Option<std::time::Instant>,
    since: u64,
}

impl Refusals {
    /// Counts one; says `what()` if 10 s passed since the last warning (built only then).
    fn note(&mut self, what: impl FnOnce() -> String) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(times = self.since, "{}", what());
            self.last = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
}
