//! Accepting a listener's connections: each admitted to the listener's [`Table`] or closed at
//! once, and refusals said once in a while rather than for each.

use crate::conn::{Activity, Admitted, HeadBudget, Limits, Refused, Table};
use crate::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

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

/// The next connection admitted to the listener's table, or `None` at shutdown.
pub(super) async fn accept(
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
