//! Running the gateway: the proxy and admin listeners, graceful shutdown,
//! and config reload.

use crate::config::{Config, Severity};
use crate::conn::{Activity, Admitted, Counted, HeadBudget, Limits, Origin, Refused, Table, Tracked};
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
    /// The admin and public listeners' own state (tests look at the OAuth states).
    pub admin: Arc<crate::admin::State>,
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
        None => bind(&config.server.listen)
            .await
            .map_err(|e| format!("listen {}: {e}", config.server.listen))?,
    };
    let admin = match inherited_listener(&mut inherited, 1, "admin_listen")? {
        Some(l) => l,
        None => bind(&config.server.admin_listen)
            .await
            .map_err(|e| format!("admin_listen {}: {e}", config.server.admin_listen))?,
    };
    start_on(config, config_path, listen, admin).await
}

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
        Some(at) => Some(bind(at).await.map_err(|e| format!("public_listen {at}: {e}"))?),
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
    let server = &config.server;
    let max_connections = server
        .max_connections
        .unwrap_or_else(|| crate::conn::default_max_connections(fd_limit));
    let proxy_limits = Limits {
        max_connections,
        max_connections_per_address: server
            .max_connections_per_ip
            .unwrap_or_else(|| crate::conn::default_max_connections_per_address(max_connections)),
        header_read: Duration::from_millis(server.header_read_timeout_ms),
        idle: Duration::from_millis(server.idle_timeout_ms),
    };
    // The admin and public listeners have small caps of their own, kept aside from the proxy's,
    // so health checks and metrics stay reachable while the proxy is saturated.
    let admin_limits = Limits {
        max_connections: crate::conn::ADMIN_MAX_CONNECTIONS,
        max_connections_per_address: server
            .max_connections_per_ip
            .map_or(crate::conn::ADMIN_MAX_CONNECTIONS_PER_ADDRESS, |n| {
                n.min(crate::conn::ADMIN_MAX_CONNECTIONS)
            }),
        ..proxy_limits
    };
    let budget = HeadBudget::new(server.max_pending_head_bytes);
    let max_header_bytes = server.max_header_bytes;
    tracing::info!(
        fd_limit,
        max_connections = proxy_limits.max_connections,
        max_connections_per_ip = proxy_limits.max_connections_per_address,
        max_pending_head_bytes = server.max_pending_head_bytes,
        "connection limits"
    );
    let config_store = config.store.clone();
    let settings = crate::token::Settings::from_config(&config)?;
    let runtime = Runtime::build(config, &settings, &metrics)?;
    let store = Arc::new(crate::store::Store::open(&config_store).await?);
    for c in store.collectors() {
        metrics.register(c);
    }
    let notify = crate::notify::Notifier::start(&runtime.config.notify, &metrics)?;
    let tokens = Tokens::new(client, settings, store);
    // Who hears what the engine does: the token metrics, `[[notify]]`, the status page's list.
    let recent_errors = Arc::new(crate::token::events::RecentErrors::default());
    tokens.events().subscribe(metrics.token_observer());
    tokens.events().subscribe(notify);
    tokens
        .events()
        .subscribe(Arc::clone(&recent_errors) as Arc<dyn crate::token::events::Observer>);
    let fetch_counts = Arc::new(crate::token::events::FetchCounts::default());
    tokens
        .events()
        .subscribe(Arc::clone(&fetch_counts) as Arc<dyn crate::token::events::Observer>);
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
        head_budget: Arc::clone(&budget),
        recent_errors,
        fetch_counts,
    });
    let admin_state = Arc::new(crate::admin::State::new(&config_store));
    let (shutdown, rx) = watch::channel(false);
    let admin_service = |side: crate::admin::Side| {
        let (shared, admin) = (Arc::clone(&shared), Arc::clone(&admin_state));
        tower::service_fn(move |req: Request<Incoming>| {
            let (shared, admin) = (Arc::clone(&shared), Arc::clone(&admin));
            async move { Ok::<_, Infallible>(crate::admin::handle(shared, admin, side, req).await) }
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
    let serving = |name: &'static str, limits: Limits| Serving {
        name,
        table: Table::new(limits.max_connections, limits.max_connections_per_address),
        limits,
        budget: Arc::clone(&budget),
        metrics: Arc::clone(&shared.metrics),
        max_header_bytes,
    };
    let mut tasks = proxy_threads(
        threads,
        listen,
        tls,
        &shared,
        &rx,
        grace,
        serving("proxy", proxy_limits),
    )?;
    tasks.push(tokio::spawn(serve(
        Connections::Listener(admin),
        None,
        admin_svc,
        rx.clone(),
        grace,
        serving("admin", admin_limits),
    )));
    if let Some(public) = public {
        tasks.push(tokio::spawn(serve(
            Connections::Listener(public),
            None,
            admin_service(crate::admin::Side::Public),
            rx.clone(),
            grace,
            serving("public", admin_limits),
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
        admin: admin_state,
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
        let settings = crate::token::Settings::from_config(&config)?;
        let runtime = Runtime::build(config, &settings, &self.shared.metrics)?;
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
        ("server.max_connections", o.max_connections != n.max_connections),
        (
            "server.max_connections_per_ip",
            o.max_connections_per_ip != n.max_connections_per_ip,
        ),
        (
            "server.max_pending_head_bytes",
            o.max_pending_head_bytes != n.max_pending_head_bytes,
        ),
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
    serving: Serving,
) -> Result<Vec<JoinHandle<()>>, String> {
    // The routes' health is the retry policy's, one for all threads.
    let health = Arc::new(crate::proxy::health::Health::default());
    let mut tasks = Vec::with_capacity(threads + 1);
    let mut hands = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let proxy = crate::proxy::stack(Arc::clone(shared), Arc::clone(&health))?;
        let (rx, tls, serving) = (rx.clone(), tls.clone(), serving.clone());
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
                    serve(Connections::Given(given), tls, proxy, rx, grace, serving).await;
                });
                drop(rt);
                let _ = done.send(());
            })
            .map_err(|e| format!("cannot start proxy thread {i}: {e}"))?;
        tasks.push(tokio::spawn(async move {
            let _ = finished.await;
        }));
    }
    tasks.push(tokio::spawn(hand_out(listener, hands, rx.clone(), serving)));
    Ok(tasks)
}

/// A new connection, admitted to its listener's table, on its way to a proxy thread.
type Given = (std::net::TcpStream, SocketAddr, Arc<Activity>, Admitted);

/// What a listener serves its connections with.
#[derive(Clone)]
struct Serving {
    name: &'static str,
    table: Arc<Table>,
    limits: Limits,
    budget: Arc<HeadBudget>,
    metrics: Arc<Metrics>,
    max_header_bytes: usize,
}

impl Serving {
    fn closed(&self, reason: &str) {
        self.metrics
            .connections_closed
            .with_label_values(&[self.name, reason])
            .inc();
    }
}

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
    serving: Serving,
) {
    let mut refused = Refusals::default();
    let mut next = 0;
    loop {
        let Some((stream, peer, activity, admitted)) = accept(&listener, &serving, &mut refused, &mut shutdown).await
        else {
            break;
        };
        let Ok(stream) = stream.into_std().and_then(|s| s.set_nonblocking(true).map(|()| s)) else {
            continue;
        };
        // In turn; a thread that has stopped is skipped.
        let mut given = Some((stream, peer, activity, admitted));
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

/// The next connection admitted to the listener's table, or `None` at shutdown.
async fn accept(
    listener: &TcpListener,
    serving: &Serving,
    refused: &mut Refusals,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr, Arc<Activity>, Admitted)> {
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
        let activity = Arc::new(Activity::new(Arc::clone(&serving.budget)));
        match serving.table.admit(peer.ip(), &activity) {
            Ok(admitted) => {
                if admitted.evicted_another {
                    serving.closed("evicted");
                }
                return Some((stream, peer, activity, admitted));
            }
            Err(why) => {
                drop(stream);
                let (reason, what) = match why {
                    Refused::Full => (
                        "max_connections",
                        format!(
                            "the {} listener holds {} connections, all inside requests (max_connections): \
                             new connections are closed at once",
                            serving.name,
                            serving.table.max()
                        ),
                    ),
                    Refused::PerAddress => (
                        "per_ip",
                        format!(
                            "{} holds {} connections to the {} listener (max_connections_per_ip): \
                             its new connections are closed at once",
                            peer.ip(),
                            serving.table.per_address(),
                            serving.name
                        ),
                    ),
                };
                serving.closed(reason);
                refused.note(|| what);
            }
        }
    }
}

/// hyper's read buffer may exceed `max_header_bytes` by this much, so a head somewhat over the
/// limit still reaches [`crate::proxy::EdgeLayer`] and gets the contract's JSON 431; past it,
/// hyper answers a bare 431 itself.
const HEAD_SLACK: usize = 8 * 1024;

/// Accepts connections until shutdown, then drains them. Admission is the listener's [`Table`]
/// (a cap, a cap per address, and at the cap a slow head closed to make room).
async fn serve<S, B>(
    incoming: Connections,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    serving: Serving,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // An unfinished head is held in hyper's read buffer: bounded near max_header_bytes (hyper's
    // default is about 400 KiB a connection), and HTTP/2 header blocks likewise.
    builder
        .http1()
        .max_buf_size((serving.max_header_bytes + HEAD_SLACK).max(8192));
    builder
        .http2()
        .max_header_list_size(u32::try_from(serving.max_header_bytes).unwrap_or(u32::MAX));
    let limits = serving.limits;
    let mut refused = Refusals::default();
    let mut incoming = incoming;
    loop {
        let (stream, peer, activity, admitted) = match &mut incoming {
            Connections::Listener(l) => match accept(l, &serving, &mut refused, &mut shutdown).await {
                Some(c) => c,
                None => break,
            },
            Connections::Given(given) => {
                let next = tokio::select! {
                    g = given.recv() => g,
                    _ = shutdown.changed() => None,
                };
                let Some((stream, peer, activity, admitted)) = next else {
                    break;
                };
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(s) => (s, peer, activity, admitted),
                    Err(e) => {
                        tracing::debug!("a handed connection could not be registered: {e}");
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(Tracked::new(service.clone(), Arc::clone(&activity), peer));
        let builder = builder.clone();
        let stop = shutdown.clone();
        let serving = serving.clone();
        let origin = Origin {
            listener: serving.name,
            peer,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let end = match tls {
                None => run(stream, builder, svc, activity, limits, stop, origin).await,
                // The handshake is part of the head: it must finish in the same time.
                Some(acceptor) => match tokio::time::timeout(limits.header_read, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => run(tls, builder, svc, activity, limits, stop, origin).await,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        crate::conn::End::Closed
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake not complete in time");
                        crate::conn::End::HeadTimeout
                    }
                },
            };
            if let Some(reason) = end.reason() {
                serving.closed(reason);
            }
            drop(admitted);
        });
    }
    drop(incoming);
    let drained = async {
        while serving.table.count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
}

/// Serves one connection over `io` (plain or TLS) under its watchdog, to its end.
async fn run<IO, S, B>(
    io: IO,
    builder: auto::Builder<TokioExecutor>,
    svc: TowerToHyperService<Tracked<S>>,
    activity: Arc<Activity>,
    limits: Limits,
    stop: watch::Receiver<bool>,
    origin: Origin,
) -> crate::conn::End
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(Counted::new(io, Arc::clone(&activity)));
    let conn = builder.serve_connection(io, svc).into_owned();
    crate::conn::drive(
        conn,
        auto::Connection::graceful_shutdown,
        activity,
        limits,
        stop,
        origin,
    )
    .await
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
