//! Serving a listener's connections: admission through its [`Table`], hyper's limits, each
//! connection under its watchdog, and the proxy's connections handed to its threads.

use super::admit::{accept, Refusals, Serving};
use crate::config::ServerConfig;
use crate::conn::{Activity, Admitted, Counted, HeadBudget, Limits, Origin, Tracked};
use crate::state::Shared;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Every listener's limits, from `[server]`: the proxy's, the admin and public listeners' (small
/// caps of their own, kept aside from the proxy's, so health checks and metrics stay reachable
/// while the proxy is saturated), and the head budget they share.
pub(super) struct Caps {
    proxy: Limits,
    admin: Limits,
    pub(super) budget: Arc<HeadBudget>,
    max_header_bytes: usize,
}

impl Caps {
    /// The limits `server` sets, the defaults derived from the open-file limit (raised first).
    pub(super) fn of(server: &ServerConfig) -> Caps {
        let fd_limit = crate::conn::raise_fd_limit();
        let max_connections = server
            .max_connections
            .unwrap_or_else(|| crate::conn::default_max_connections(fd_limit));
        let proxy = Limits {
            max_connections,
            max_connections_per_address: server
                .max_connections_per_ip
                .unwrap_or_else(|| crate::conn::default_max_connections_per_address(max_connections)),
            header_read: Duration::from_millis(server.header_read_timeout_ms),
            idle: Duration::from_millis(server.idle_timeout_ms),
        };
        let admin = Limits {
            max_connections: crate::conn::ADMIN_MAX_CONNECTIONS,
            max_connections_per_address: server
                .max_connections_per_ip
                .map_or(crate::conn::ADMIN_MAX_CONNECTIONS_PER_ADDRESS, |n| {
                    n.min(crate::conn::ADMIN_MAX_CONNECTIONS)
                }),
            ..proxy
        };
        tracing::info!(
            fd_limit,
            max_connections = proxy.max_connections,
            max_connections_per_ip = proxy.max_connections_per_address,
            max_pending_head_bytes = server.max_pending_head_bytes,
            "connection limits"
        );
        Caps {
            proxy,
            admin,
            budget: HeadBudget::new(server.max_pending_head_bytes),
            max_header_bytes: server.max_header_bytes,
        }
    }

    /// What the listener `name` (`proxy`, `admin`, `public`) serves with: its own table.
    pub(super) fn serving(&self, name: &'static str, shared: &Shared) -> Serving {
        let limits = if name == "proxy" { self.proxy } else { self.admin };
        Serving::new(
            name,
            limits,
            Arc::clone(&self.budget),
            Arc::clone(&shared.metrics),
            self.max_header_bytes,
        )
    }
}

/// The proxy listener served by `threads` threads, each with a current-thread runtime, the stack
/// and a pool of upstream connections of its own: a call stays on the thread its connection was
/// given to, from first byte to answer, with no wakeup of another thread and no pool shared
/// under a lock. One accept loop (on the calling runtime) hands new connections to the threads in
/// turn: a listening socket shared by several accept loops would leave one thread with them all
/// (whichever is awake takes the next), and `SO_REUSEPORT` cannot apply to a socket that is
/// inherited or handed over. The connection cap counts all threads' connections together.
pub(super) fn proxy_threads(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: &Arc<Shared>,
    rx: &watch::Receiver<bool>,
    grace: Duration,
    serving: Serving,
) -> Result<Vec<JoinHandle<()>>, String> {
    let threads = shared
        .runtime
        .load()
        .config
        .server
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
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

/// Where a serving loop's connections come from.
pub(super) enum Connections {
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

/// hyper's read buffer may exceed `max_header_bytes` by this much, so a head somewhat over the
/// limit still reaches [`crate::proxy::EdgeLayer`] and gets the contract's JSON 431; past it,
/// hyper answers a bare 431 itself.
const HEAD_SLACK: usize = 8 * 1024;

/// Accepts connections until shutdown, then drains them. Admission is the listener's [`Table`]
/// (a cap, a cap per address, and at the cap a slow head closed to make room).
pub(super) async fn serve<S, B>(
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
        .max_buf_size((serving.max_header_bytes() + HEAD_SLACK).max(8192));
    builder
        .http2()
        .max_header_list_size(u32::try_from(serving.max_header_bytes()).unwrap_or(u32::MAX));
    let mut refused = Refusals::default();
    let mut incoming = incoming;
    while let Some(accepted) = incoming.next(&serving, &mut refused, &mut shutdown).await {
        spawn_connection(accepted, &builder, &service, &tls, &shutdown, &serving);
    }
    drop(incoming);
    serving.drain(grace).await;
}

/// A connection accepted and admitted, ready to serve.
type Accepted = (tokio::net::TcpStream, SocketAddr, Arc<Activity>, Admitted);

impl Connections {
    /// The next connection admitted, or `None` at shutdown.
    async fn next(
        &mut self,
        serving: &Serving,
        refused: &mut Refusals,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Accepted> {
        loop {
            let given = match self {
                Connections::Listener(l) => return accept(l, serving, refused, shutdown).await,
                Connections::Given(given) => given,
            };
            let next = tokio::select! {
                g = given.recv() => g,
                _ = shutdown.changed() => None,
            };
            let (stream, peer, activity, admitted) = next?;
            match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => return Some((s, peer, activity, admitted)),
                Err(e) => tracing::debug!("a handed connection could not be registered: {e}"),
            }
        }
    }
}

/// Serves one admitted connection on a task of its own (its TLS handshake first, within the
/// head timeout), counting how it ended.
fn spawn_connection<S, B>(
    accepted: Accepted,
    builder: &auto::Builder<TokioExecutor>,
    service: &S,
    tls: &Option<tokio_rustls::TlsAcceptor>,
    shutdown: &watch::Receiver<bool>,
    serving: &Serving,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stream, peer, activity, admitted) = accepted;
    let _ = stream.set_nodelay(true);
    let svc = TowerToHyperService::new(Tracked::new(service.clone(), Arc::clone(&activity), peer));
    let (builder, stop, serving, tls) = (builder.clone(), shutdown.clone(), serving.clone(), tls.clone());
    let limits = serving.limits();
    let origin = Origin {
        listener: serving.name(),
        peer,
    };
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
