//! The proxy's idle upstream connections, one pool per thread (a `thread_local!`: no lock, no
//! other thread woken): per host, the HTTP/1.1 connections waiting for a call (the most recent
//! first, so a quiet period lets the others age out) and the one HTTP/2 connection calls share.
//!
//! Each of hyper's connections runs on a task of its own ([`drive`]) that closes it once it has
//! had no call for [`IDLE_TIMEOUT`]; the pool drops the handles of closed ones as it meets them.
//! The own client's connections ([`Sender::Own`]) have no task: one that waited past
//! [`IDLE_TIMEOUT`], or that the upstream closed meanwhile (its socket readable while idle), is
//! closed when the pool meets it (a call's checkout, a checkin, a new connection's prune).

use super::{POOL_IDLE_TIMEOUT as IDLE_TIMEOUT, POOL_MAX_IDLE_PER_HOST as MAX_IDLE};
use crate::body::ProxyBody;
use hyper::client::conn::{http1, http2};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A connection's handle for sending calls.
pub(super) enum Sender {
    /// HTTP/1.1: one call at a time.
    H1(http1::SendRequest<ProxyBody>),
    /// HTTP/2 (ALPN): calls share it.
    H2(http2::SendRequest<ProxyBody>),
    /// HTTP/1.1 on the proxy's own client ([`super::h1`]): no driver task, the call reads and
    /// writes it.
    Own(Box<super::h1::Wire>),
}

/// A connection, taken for a call (until dropped or given back) or waiting in the pool: its
/// handle, and what it shares with its driver.
pub(super) struct Conn {
    pub(super) sender: Sender,
    life: Arc<Life>,
    taken: bool,
}

impl Conn {
    /// A connection just opened, taken by the call that opened it.
    pub(super) fn opened(sender: Sender, life: Arc<Life>) -> Self {
        Conn {
            sender,
            life,
            taken: true,
        }
    }

    /// The call is done with it (a call that is dropped, its future cancelled, too).
    fn put_down(&mut self) {
        if std::mem::take(&mut self.taken) {
            self.life.release();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.put_down();
    }
}

/// What a connection's driver and its users share: how many calls use it, since when none has.
#[derive(Debug)]
pub(super) struct Life {
    in_use: AtomicU32,
    /// Milliseconds since [`epoch`] when the last call let it go.
    released: AtomicU64,
    /// Closed by its driver: never to be taken again.
    retired: AtomicBool,
}

impl Life {
    /// A new connection, taken by the call that opened it.
    pub(super) fn taken() -> Arc<Self> {
        Arc::new(Life {
            in_use: AtomicU32::new(1),
            released: AtomicU64::new(now_ms()),
            retired: AtomicBool::new(false),
        })
    }

    fn take(&self) {
        self.in_use.fetch_add(1, Ordering::Relaxed);
    }

    /// A call is done with the connection.
    fn release(&self) {
        self.released.store(now_ms(), Ordering::Relaxed);
        self.in_use.fetch_sub(1, Ordering::Release);
    }

    /// How long until the connection may have been idle for [`IDLE_TIMEOUT`]; zero when it has.
    fn idle_left(&self) -> Duration {
        self.idle_left_at(now_ms())
    }

    /// [`Life::idle_left`] at `now` ([`now_ms`]).
    fn idle_left_at(&self, now: u64) -> Duration {
        if self.in_use.load(Ordering::Acquire) > 0 {
            return IDLE_TIMEOUT;
        }
        let idle = now.saturating_sub(self.released.load(Ordering::Relaxed));
        IDLE_TIMEOUT.saturating_sub(Duration::from_millis(idle))
    }
}

/// Milliseconds since the first use of the pool (a monotonic clock).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Which connections may serve a call: one client's (its TLS settings), to one host.
#[derive(Debug, Clone, Eq)]
pub(super) struct Key {
    /// The [`super::LocalClient`] that opened them.
    pub(super) client: u64,
    /// Over TLS.
    pub(super) https: bool,
    /// host:port.
    pub(super) authority: http::uri::Authority,
}

impl PartialEq for Key {
    /// As `Authority`'s own comparison (case-insensitive), after a plain byte comparison that
    /// settles every call to the same base URL at the cost of a `memcmp` (profiled: the
    /// case-insensitive one took about 600 instructions a call, two lookups).
    fn eq(&self, other: &Key) -> bool {
        self.client == other.client
            && self.https == other.https
            && (self.authority.as_str() == other.authority.as_str() || self.authority == other.authority)
    }
}

/// One host's idle connections.
struct Host {
    key: Key,
    /// HTTP/1.1 connections waiting, the most recent last.
    idle: VecDeque<Conn>,
    /// The own client's connections waiting ([`Sender::Own`]), the most recent last.
    own: VecDeque<Conn>,
    /// The HTTP/2 connection calls share.
    shared: Option<(http2::SendRequest<ProxyBody>, Arc<Life>)>,
}

thread_local! {
    static POOL: RefCell<Vec<Host>> = const { RefCell::new(Vec::new()) };
}

/// Whether a waiting connection can take a call now. An own connection has no driver to close
/// it when idle: it is not used past [`IDLE_TIMEOUT`], nor after the upstream closed it.
fn usable(c: &Conn) -> bool {
    !c.life.retired.load(Ordering::Relaxed)
        && match &c.sender {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => !s.is_closed(),
            Sender::Own(w) => !c.life.idle_left().is_zero() && w.open_and_quiet(),
        }
}

/// An own connection of this thread's pool for `key` ([`Sender::Own`]), taken: the one that
/// waited least.
pub(super) fn checkout_own(key: &Key) -> Option<Conn> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let host = pool.iter_mut().find(|h| h.key == *key)?;
        take_newest(&mut host.own)
    })
}

/// The usable connection of `idle` that waited least, taken; the unusable ones met on the way
/// are dropped.
fn take_newest(idle: &mut VecDeque<Conn>) -> Option<Conn> {
    while let Some(mut c) = idle.pop_back() {
        if usable(&c) {
            c.life.take();
            c.taken = true;
            return Some(c);
        }
    }
    None
}

/// A connection of this thread's pool for `key`, taken: the shared HTTP/2 one, or the HTTP/1.1
/// one that waited least.
pub(super) fn checkout(key: &Key) -> Option<Conn> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let host = pool.iter_mut().find(|h| h.key == *key)?;
        if let Some((s, life)) = &host.shared {
            if !s.is_closed() && !life.retired.load(Ordering::Relaxed) {
                life.take();
                return Some(Conn::opened(Sender::H2(s.clone()), Arc::clone(life)));
            }
            host.shared = None;
        }
        take_newest(&mut host.idle)
    })
}

/// Drops the handles of connections that have closed, and the hosts left with none (an upstream
/// a reload no longer names). Called as a connection opens, not per call.
pub(super) fn prune() {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        for host in pool.iter_mut() {
            host.idle.retain(usable);
            host.own.retain(usable);
            if host
                .shared
                .as_ref()
                .is_some_and(|(s, life)| s.is_closed() || life.retired.load(Ordering::Relaxed))
            {
                host.shared = None;
            }
        }
        pool.retain(|h| !h.idle.is_empty() || !h.own.is_empty() || h.shared.is_some());
    });
}

/// How many hosts this thread's pool holds, and whether each one's waiting connections are all
/// still open (for tests).
#[cfg(test)]
pub(super) fn hosts() -> Vec<(http::uri::Authority, bool)> {
    POOL.with(|pool| {
        pool.borrow()
            .iter()
            .map(|h| (h.key.authority.clone(), h.idle.iter().chain(&h.own).all(usable)))
            .collect()
    })
}

/// Keeps an HTTP/2 connection for the calls that follow (replacing a former one).
pub(super) fn share(key: &Key, sender: &http2::SendRequest<ProxyBody>, life: &Arc<Life>) {
    with_host(key, |host| host.shared = Some((sender.clone(), Arc::clone(life))));
}

/// Gives back an HTTP/1.1 connection ready for its next call; closed when the host already has
/// [`MAX_IDLE`] waiting.
pub(super) fn checkin(key: &Key, mut conn: Conn) {
    conn.put_down();
    with_host(key, |host| {
        let idle = match conn.sender {
            Sender::Own(_) => &mut host.own,
            _ => &mut host.idle,
        };
        while idle.front().is_some_and(|c| !usable(c)) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(conn);
        }
    });
}

fn with_host(key: &Key, f: impl FnOnce(&mut Host)) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let i = match pool.iter().position(|h| h.key == *key) {
            Some(i) => i,
            None => {
                pool.push(Host {
                    key: key.clone(),
                    idle: VecDeque::new(),
                    own: VecDeque::new(),
                    shared: None,
                });
                pool.len() - 1
            }
        };
        f(&mut pool[i]);
    });
}

/// Drives a connection until it ends, or until it has had no call for [`IDLE_TIMEOUT`] (below
/// the 120 s a typical load balancer keeps an idle connection, so we close first): then it is
/// retired and closed.
pub(super) async fn drive<F>(conn: F, life: Arc<Life>)
where
    F: Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    loop {
        let left = life.idle_left();
        if left.is_zero() {
            life.retired.store(true, Ordering::Relaxed);
            tracing::trace!("an idle upstream connection closed");
            return;
        }
        tokio::select! {
            end = &mut conn => {
                if let Err(e) = end {
                    tracing::debug!("upstream connection ended: {}", super::describe(&e));
                }
                life.retired.store(true, Ordering::Relaxed);
                return;
            }
            () = tokio::time::sleep(left) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection in use is never idle; let go, its idle time counts from then.
    #[test]
    fn idle_time_counts_from_the_last_release() {
        let life = Life::taken();
        assert_eq!(life.idle_left(), IDLE_TIMEOUT);
        life.release();
        let left = life.idle_left();
        assert!(
            left <= IDLE_TIMEOUT && left > IDLE_TIMEOUT - Duration::from_secs(5),
            "{left:?}"
        );
        life.take();
        assert_eq!(life.idle_left(), IDLE_TIMEOUT);
        life.release();
        let at = life.released.load(Ordering::Relaxed);
        let timeout = IDLE_TIMEOUT.as_millis() as u64;
        assert_eq!(life.idle_left_at(at + timeout - 1), Duration::from_millis(1));
        assert!(life.idle_left_at(at + timeout).is_zero());
    }
}
