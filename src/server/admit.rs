//! Accepting a listener's connections: each admitted to the listener's [`Table`] or closed at
//! once, and refusals said once in a while rather than for each.

use crate::config::ServerConfig;
use crate::conn::{Activity, Admitted, HeadBudget, Limits, Refused, Table};
use crate::metrics::Metrics;
use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

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

/// What a listener serves its connections with: its table, limits and counters.
#[derive(Clone)]
pub(super) struct Serving {
    name: &'static str,
    table: Arc<Table>,
    limits: Limits,
    budget: Arc<HeadBudget>,
    metrics: Arc<Metrics>,
    max_header_bytes: usize,
}

impl Serving {
    /// The listener `name` with `limits`, its heads charged to `budget`.
    pub(super) fn new(
        name: &'static str,
        limits: Limits,
        budget: Arc<HeadBudget>,
        metrics: Arc<Metrics>,
        max_header_bytes: usize,
    ) -> Self {
        Serving {
            name,
            table: Table::new(limits.max_connections, limits.max_connections_per_address),
            limits,
            budget,
            metrics,
            max_header_bytes,
        }
    }

    /// `proxy`, `admin` or `public`.
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    pub(super) fn limits(&self) -> Limits {
        self.limits
    }

    pub(super) fn max_header_bytes(&self) -> usize {
        self.max_header_bytes
    }

    /// Counts a connection the gateway refused or closed, by `reason`.
    pub(super) fn closed(&self, reason: &str) {
        self.metrics
            .connections_closed
            .with_label_values(&[self.name, reason])
            .inc();
    }

    /// Waits, up to `grace`, for the listener's connections to end.
    pub(super) async fn drain(&self, grace: Duration) {
        let drained = async {
            while self.table.count() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("shutdown grace period over; closing the remaining connections");
        }
    }
}

/// A connection accepted and admitted: its stream, peer, activity and slot in the table.
pub(super) type Admission<T> = (T, SocketAddr, Arc<Activity>, Admitted);

/// The next connection admitted to the listener's table, or `None` at shutdown.
pub(super) async fn accept(
    listener: &TcpListener,
    serving: &Serving,
    refused: &mut Refusals,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Admission<tokio::net::TcpStream>> {
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
        if let Some(admitted) = admit(stream, peer, serving, refused) {
            return Some(admitted);
        }
    }
}

/// `stream` admitted to the listener's table, or closed at once (and counted) when the table
/// refuses it.
pub(super) fn admit<T>(stream: T, peer: SocketAddr, serving: &Serving, refused: &mut Refusals) -> Option<Admission<T>> {
    let activity = Arc::new(Activity::new(Arc::clone(&serving.budget)));
    match serving.table.admit(peer.ip(), &activity) {
        Ok(admitted) => {
            if admitted.evicted_another {
                serving.closed("evicted");
            }
            Some((stream, peer, activity, admitted))
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
            None
        }
    }
}

/// The connections already waiting in a retired listener's accept queue, taken before the socket
/// closes: closing it with them inside would reset connections the kernel had completed for
/// callers. Taken with plain non-blocking `accept` calls until the queue is empty.
pub(super) fn sweep(listener: TcpListener) -> Vec<(std::net::TcpStream, SocketAddr)> {
    let mut waiting = Vec::new();
    let Ok(listener) = listener.into_std() else {
        return waiting;
    };
    while let Ok((stream, peer)) = listener.accept() {
        if stream.set_nonblocking(true).is_ok() {
            waiting.push((stream, peer));
        }
    }
    waiting
}

/// What ties a connection to the accept loop that admitted it: when to close it gracefully
/// (its listener retired, or the gateway stops), and the loop's count of open connections,
/// which it leaves when it drops.
pub(super) struct Lease {
    /// Fires when the connection should finish its call and close.
    pub(super) stop: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
}

/// An accept loop's open connections, waited for when the loop retires: each holds a [`Lease`],
/// and the wait ends when the last one drops (no polling).
pub(super) struct Open {
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

impl Open {
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Open { tx, rx }
    }

    /// A lease for one more connection, closed gracefully when `stop` fires.
    pub(super) fn lease(&self, stop: watch::Receiver<bool>) -> Lease {
        Lease {
            stop,
            _open: self.tx.clone(),
        }
    }

    /// Waits up to `grace` for every leased connection to end; how many are still open then.
    pub(super) async fn wait(self, grace: Duration) -> usize {
        let Open { tx, mut rx } = self;
        drop(tx);
        match tokio::time::timeout(grace, rx.recv()).await {
            Ok(_) => 0,
            Err(_) => rx.sender_strong_count(),
        }
    }
}

/// Warnings about refused connections, at most one every 10 s, with how many there were.
#[derive(Default)]
pub(super) struct Refusals {
    last: Option<std::time::Instant>,
    since: u64,
}

impl Refusals {
    /// Counts one; says `what()` if 10 s passed since the last warning (built only then).
    pub(super) fn note(&mut self, what: impl FnOnce() -> String) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(times = self.since, "{}", what());
            self.last = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
}
