//! Serving a listener's connections: admission through its [`Table`], hyper's limits, each
//! connection under its watchdog, and the proxy's connections handed to its threads.

use super::admit::{accept, admit, sweep, Lease, Open, Refusals, Serving, SETTLE};
use crate::conn::{Activity, Admitted, Counted, Limits, Origin, Tracked};
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

/// The proxy's threads, each with a current-thread runtime, the stack and a pool of upstream
/// connections of its own: a call stays on the thread its connection was given to, from first
/// byte to answer, with no wakeup of another thread and no pool shared under a lock. One accept
/// loop ([`hand_out`], on the calling runtime) gives new connections to the threads in turn: a
/// listening socket shared by several accept loops would leave one thread with them all
/// (whichever is awake takes the next), and `SO_REUSEPORT` cannot apply to a socket that is
/// inherited or handed over. The connection cap counts all threads' connections together.
/// Returns the threads' tasks and the hands that give them connections.
pub(super) fn proxy_threads(
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: &Arc<Shared>,
    rx: &watch::Receiver<bool>,
    grace: Duration,
    serving: &Serving,
) -> Result<(Vec<JoinHandle<()>>, Hands), String> {
    let threads = shared
        .runtime
        .load()
        .config
        .server
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The routes' health is the retry policy's, one for all threads.
    let health = Arc::new(crate::proxy::health::Health::default());
    // One client per upstream for all threads (one TLS session store); connections per thread.
    let forward = crate::proxy::Forward::build(&shared.runtime.load().config)?;
    let mut tasks = Vec::with_capacity(threads);
    let mut hands = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let proxy = crate::proxy::stack_around(Arc::clone(shared), Arc::clone(&health), forward.clone());
        let (tls, serving) = (tls.clone(), serving.clone());
        let stops = Stops::global(rx);
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
                    serve(Connections::Given(given), tls, proxy, stops, grace, serving).await;
                });
                drop(rt);
                let _ = done.send(());
            })
            .map_err(|e| format!("cannot start proxy thread {i}: {e}"))?;
        tasks.push(tokio::spawn(async move {
            let _ = finished.await;
        }));
    }
    Ok((tasks, Arc::new(hands)))
}

/// A new connection, admitted to its listener's table, on its way to a proxy thread.
type Given = (std::net::TcpStream, SocketAddr, Arc<Activity>, Admitted, Lease);

/// The proxy threads' inboxes, in turn.
pub(super) type Hands = Arc<Vec<tokio::sync::mpsc::UnboundedSender<Given>>>;

/// When an accept loop stops: `own` fires when its listener is retired (a reload moved it) or
/// the gateway stops; `global` only when the gateway stops.
#[derive(Clone)]
pub(super) struct Stops {
    pub(super) own: watch::Receiver<bool>,
    pub(super) global: watch::Receiver<bool>,
}

impl Stops {
    /// A loop that stops only with the gateway.
    pub(super) fn global(rx: &watch::Receiver<bool>) -> Self {
        Stops {
            own: rx.clone(),
            global: rx.clone(),
        }
    }

    /// Whether the loop stopped because its listener was retired, not because the gateway stops.
    fn retired(&self) -> bool {
        !*self.global.borrow()
    }
}

/// Where a serving loop's connections come from.
pub(super) enum Connections {
    /// Accepted here.
    Listener(TcpListener),
    /// Accepted by [`hand_out`] and given to this loop.
    Given(tokio::sync::mpsc::UnboundedReceiver<Given>),
}

/// Accepts proxy connections until its listener is retired or the gateway stops, and gives them
/// to the proxy threads in turn. Retired, it takes what waits in the accept queue, closes the
/// socket, and waits (up to `grace`) for the connections it accepted.
pub(super) async fn hand_out(listener: TcpListener, hands: Hands, stops: Stops, serving: Serving, grace: Duration) {
    let open = Open::new();
    let mut refused = Refusals::default();
    let mut next = 0;
    let mut own = stops.own.clone();
    while let Some((stream, peer, activity, admitted)) = accept(&listener, &serving, &mut refused, &mut own).await {
        let Ok(stream) = stream.into_std().and_then(|s| s.set_nonblocking(true).map(|()| s)) else {
            continue;
        };
        give(
            &hands,
            &mut next,
            (stream, peer, activity, admitted, open.lease(stops.own.clone())),
        );
    }
    if !stops.retired() {
        return;
    }
    let at = listener.local_addr().ok();
    sweep(listener, SETTLE, stops.global.clone(), |stream, peer| {
        if let Some((stream, peer, activity, admitted)) = admit(stream, peer, &serving, &mut refused) {
            // Served as any connection (not closed before its first call), until the gateway stops.
            give(
                &hands,
                &mut next,
                (stream, peer, activity, admitted, open.lease(stops.global.clone())),
            );
        }
    })
    .await;
    finish(open, grace, serving.name(), at, true).await;
}

/// Gives a connection to the next proxy thread in turn; a thread that has stopped is skipped.
fn give(hands: &Hands, next: &mut usize, given: Given) {
    let mut given = Some(given);
    for _ in 0..hands.len() {
        let hand = &hands[*next % hands.len()];
        *next = next.wrapping_add(1);
        match hand.send(given.take().expect("present")) {
            Ok(()) => break,
            Err(tokio::sync::mpsc::error::SendError(back)) => given = Some(back),
        }
    }
}

/// Waits (up to `grace`) for a stopped accept loop's connections, and says how it went.
async fn finish(open: Open, grace: Duration, name: &'static str, at: Option<SocketAddr>, retired: bool) {
    let left = open.wait(grace).await;
    let at = at.map_or_else(|| "?".to_string(), |a| a.to_string());
    match (retired, left) {
        (true, 0) => tracing::info!(
            listener = name,
            addr = %at,
            "the {name} listener's old address {at} is drained: its last connection ended"
        ),
        (true, n) => tracing::warn!(
            listener = name,
            addr = %at,
            open = n,
            "the {name} listener's old address {at} still has {n} connections after shutdown_grace_ms; \
             each closes after its current call, or at idle_timeout_ms"
        ),
        (false, 0) => {}
        (false, _) => tracing::warn!("shutdown grace period over; closing the remaining connections"),
    }
}

/// hyper's read buffer may exceed `max_header_bytes` by this much, so a head somewhat over the
/// limit still reaches [`crate::proxy::EdgeLayer`] and gets the contract's JSON 431; past it,
/// hyper answers a bare 431 itself.
const HEAD_SLACK: usize = 8 * 1024;

/// Accepts connections until its listener is retired or the gateway stops, then drains them.
/// Admission is the listener's [`Table`] (a cap, a cap per address, and at the cap a slow head
/// closed to make room). A retired listener's queued connections are taken and served before its
/// socket closes.
pub(super) async fn serve<S, B>(
    incoming: Connections,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: S,
    stops: Stops,
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
    let open = Open::new();
    let mut own = stops.own.clone();
    while let Some(accepted) = incoming.next(&serving, &mut refused, &mut own, &open).await {
        spawn_connection(accepted, &builder, &service, &tls, &serving);
    }
    let listener = match incoming {
        Connections::Given(given) => {
            drop(given);
            return serving.drain(grace).await;
        }
        Connections::Listener(listener) => listener,
    };
    let at = listener.local_addr().ok();
    // Read once: a stop of the gateway during the sweep still ends it as a retirement.
    let retired = stops.retired();
    if retired {
        sweep(listener, SETTLE, stops.global.clone(), |stream, peer| {
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                return;
            };
            if let Some((stream, peer, activity, admitted)) = admit(stream, peer, &serving, &mut refused) {
                // Served as any connection (not closed before its first call), until the gateway stops.
                let lease = open.lease(stops.global.clone());
                spawn_connection(
                    (stream, peer, activity, admitted, lease),
                    &builder,
                    &service,
                    &tls,
                    &serving,
                );
            }
        })
        .await;
    }
    finish(open, grace, serving.name(), at, retired).await;
}

/// A connection accepted and admitted, ready to serve.
type Accepted = (tokio::net::TcpStream, SocketAddr, Arc<Activity>, Admitted, Lease);

impl Connections {
    /// The next connection admitted, or `None` when the loop stops.
    async fn next(
        &mut self,
        serving: &Serving,
        refused: &mut Refusals,
        stop: &mut watch::Receiver<bool>,
        open: &Open,
    ) -> Option<Accepted> {
        loop {
            let given = match self {
                Connections::Listener(l) => {
                    let (stream, peer, activity, admitted) = accept(l, serving, refused, stop).await?;
                    return Some((stream, peer, activity, admitted, open.lease(stop.clone())));
                }
                Connections::Given(given) => given,
            };
            let next = tokio::select! {
                g = given.recv() => g,
                _ = stop.changed() => None,
            };
            let (stream, peer, activity, admitted, lease) = next?;
            match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => return Some((s, peer, activity, admitted, lease)),
                Err(e) => tracing::debug!("a handed connection could not be registered: {e}"),
            }
        }
    }
}

/// Serves one admitted connection on a task of its own (its TLS handshake first, within the
/// head timeout), counting how it ended; it closes gracefully when its lease says so.
fn spawn_connection<S, B>(
    accepted: Accepted,
    builder: &auto::Builder<TokioExecutor>,
    service: &S,
    tls: &Option<tokio_rustls::TlsAcceptor>,
    serving: &Serving,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stream, peer, activity, admitted, lease) = accepted;
    let _ = stream.set_nodelay(true);
    let svc = TowerToHyperService::new(Tracked::new(service.clone(), Arc::clone(&activity), peer));
    let (builder, stop, serving, tls) = (builder.clone(), lease.stop.clone(), serving.clone(), tls.clone());
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
        drop(lease);
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
