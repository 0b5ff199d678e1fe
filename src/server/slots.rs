//! The gateway's listeners (proxy, admin, public) as a reload sees them: the address each was
//! configured with, where it is bound, and how to retire it. A reload that changes an address
//! binds the new one and serves there first, then retires the old one, as nginx does: it stops
//! accepting, takes the connections already waiting in its queue, closes the socket, and lets
//! its connections finish their calls (keep-alive ones close after their current call). An
//! address that cannot be bound leaves the old one serving, with an error naming the key.

use super::admit::Serving;
use super::listen::{self, Connections, Hands, Stops};
use crate::admin::Side;
use crate::config::ServerConfig;
use crate::state::Shared;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One listener being served.
pub(super) struct Slot {
    /// The address as the config file says it (`127.0.0.1:0` stays that, whatever port it got).
    configured: String,
    /// Where it is bound.
    pub(super) addr: SocketAddr,
    /// Inherited from systemd (`LISTEN_FDS`): a reload cannot move it.
    inherited: bool,
    /// Retires it (stops its accept loop; its connections close after their calls).
    stop: watch::Sender<bool>,
}

/// A listening socket and how the config names it.
pub(super) struct Socket {
    pub(super) listener: TcpListener,
    pub(super) configured: String,
    pub(super) inherited: bool,
}

/// What starting a listener's accept loop needs.
pub(super) struct Context {
    pub(super) shared: Arc<Shared>,
    pub(super) admin: Arc<crate::admin::State>,
    pub(super) hands: Hands,
    pub(super) global: watch::Receiver<bool>,
    pub(super) grace: Duration,
    /// Each listener's table, shared by its old and new addresses during a move, so the caps hold
    /// across both.
    pub(super) proxy: Serving,
    pub(super) admin_serving: Serving,
    pub(super) public_serving: Serving,
}

/// Every listener served, and the accept loops started (current and retired).
pub(super) struct Listeners {
    pub(super) cx: Context,
    pub(super) proxy: Slot,
    pub(super) admin: Slot,
    pub(super) public: Option<Slot>,
    pub(super) tasks: Vec<JoinHandle<()>>,
}

/// Which listener: its key in `[server]` and its name in metrics and logs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Proxy,
    Admin,
    Public,
}

impl Which {
    fn key(self) -> &'static str {
        match self {
            Which::Proxy => "server.listen",
            Which::Admin => "server.admin_listen",
            Which::Public => "server.public_listen",
        }
    }
}

impl Listeners {
    /// Serves the proxy, admin and (when given) public sockets.
    pub(super) fn start(cx: Context, proxy: Socket, admin: Socket, public: Option<Socket>) -> Result<Self, String> {
        let mut tasks = Vec::new();
        let proxy = cx.spawn(Which::Proxy, proxy, &mut tasks)?;
        let admin = cx.spawn(Which::Admin, admin, &mut tasks)?;
        let public = public.map(|p| cx.spawn(Which::Public, p, &mut tasks)).transpose()?;
        Ok(Listeners {
            cx,
            proxy,
            admin,
            public,
            tasks,
        })
    }

    /// Applies `new`'s listener addresses: each changed one bound and served, then the old one
    /// retired; one that cannot be bound (or was inherited) keeps the old address, with an error
    /// (a warning) naming the key. `new` then says what is served.
    pub(super) async fn apply(&mut self, new: &mut ServerConfig) {
        for which in [Which::Proxy, Which::Admin] {
            let wanted = match which {
                Which::Proxy => new.listen.clone(),
                _ => new.admin_listen.clone(),
            };
            let slot = match which {
                Which::Proxy => &self.proxy,
                _ => &self.admin,
            };
            if slot.configured == wanted || !movable(which, slot) {
                continue;
            }
            let Some(socket) = bind(which, &wanted, slot.addr).await else {
                continue;
            };
            if let Some(fresh) = self.spawn_logged(which, socket) {
                let old = match which {
                    Which::Proxy => std::mem::replace(&mut self.proxy, fresh),
                    _ => std::mem::replace(&mut self.admin, fresh),
                };
                retire(which, old, self.slot(which).map(|s| s.addr));
            }
        }
        self.apply_public(new.public_listen.as_deref()).await;
        new.listen = self.proxy.configured.clone();
        new.admin_listen = self.admin.addr.to_string();
        new.public_listen = self.public.as_ref().map(|s| s.addr.to_string());
    }

    /// `server.public_listen` set, moved or removed.
    async fn apply_public(&mut self, wanted: Option<&str>) {
        match (&self.public, wanted) {
            (None, None) => {}
            (Some(slot), Some(w)) if slot.configured == w => {}
            (Some(_), None) => {
                let old = self.public.take().expect("present");
                retire(Which::Public, old, None);
                tracing::info!(
                    key = "server.public_listen",
                    "server.public_listen removed: the admin listener serves /oauth/* and the webhook again"
                );
            }
            (slot, Some(w)) => {
                let from = slot.as_ref().map(|s| s.addr);
                let Some(socket) = bind(Which::Public, w, from.unwrap_or(self.admin.addr)).await else {
                    return;
                };
                let Some(fresh) = self.spawn_logged(Which::Public, socket) else {
                    return;
                };
                let to = fresh.addr;
                match self.public.replace(fresh) {
                    Some(old) => retire(Which::Public, old, Some(to)),
                    None => tracing::info!(
                        key = "server.public_listen",
                        to = %to,
                        "server.public_listen set: serving /oauth/* and the webhook on {to}, no longer on the admin listener"
                    ),
                }
            }
        }
    }

    fn slot(&self, which: Which) -> Option<&Slot> {
        match which {
            Which::Proxy => Some(&self.proxy),
            Which::Admin => Some(&self.admin),
            Which::Public => self.public.as_ref(),
        }
    }

    /// Starts serving `socket` (a new loop after a move), or says why not (the old address
    /// then keeps serving).
    fn spawn_logged(&mut self, which: Which, socket: Socket) -> Option<Slot> {
        let mut tasks = Vec::new();
        match self.cx.spawn(which, socket, &mut tasks) {
            Ok(slot) => {
                self.tasks.extend(tasks);
                Some(slot)
            }
            Err(e) => {
                let key = which.key();
                tracing::error!(
                    key,
                    "{key}: the new address cannot be served ({e}): the listener stays where it was"
                );
                None
            }
        }
    }

    /// Stops every accept loop (the gateway stops); returns the tasks to wait for.
    pub(super) fn stop(self) -> Vec<JoinHandle<()>> {
        for slot in [Some(&self.proxy), Some(&self.admin), self.public.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = slot.stop.send(true);
        }
        self.tasks
    }
}

/// Whether a reload may move `slot`: not when systemd handed it over (its socket unit keeps
/// listening there, and connections would queue with no one to accept them).
fn movable(which: Which, slot: &Slot) -> bool {
    if slot.inherited {
        let key = which.key();
        tracing::warn!(
            key,
            "{key} changed in the config file: it takes effect only after a restart; the running value stays \
             (the socket is inherited from systemd, LISTEN_FDS: move it in the .socket unit)"
        );
    }
    !slot.inherited
}

/// Binds `wanted` for `which`, or says why not (and that `current` keeps serving).
async fn bind(which: Which, wanted: &str, current: SocketAddr) -> Option<Socket> {
    let key = which.key();
    match super::sockets::bind(wanted).await {
        Ok(listener) => Some(Socket {
            listener,
            configured: wanted.to_string(),
            inherited: false,
        }),
        Err(e) => {
            tracing::error!(
                key,
                addr = wanted,
                "{key} = {wanted:?} cannot be bound ({e}): the listener stays on {current}"
            );
            None
        }
    }
}

/// Stops `old`'s accept loop (its connections finish their calls, then close), saying so.
fn retire(which: Which, old: Slot, to: Option<SocketAddr>) {
    let _ = old.stop.send(true);
    let (key, from) = (which.key(), old.addr);
    if let Some(to) = to {
        tracing::info!(
            key,
            from = %from,
            to = %to,
            "{key} moved: serving on {to}; the old address {from} stopped accepting and its connections finish their calls"
        );
    }
}

impl Context {
    /// Starts the accept loop of `which` on `socket`.
    fn spawn(&self, which: Which, socket: Socket, tasks: &mut Vec<JoinHandle<()>>) -> Result<Slot, String> {
        let addr = socket.listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, own) = watch::channel(false);
        let stops = Stops {
            own,
            global: self.global.clone(),
        };
        let task = match which {
            Which::Proxy => tokio::spawn(listen::hand_out(
                socket.listener,
                Arc::clone(&self.hands),
                stops,
                self.proxy.clone(),
                self.grace,
            )),
            Which::Admin | Which::Public => {
                let (side, serving) = match which {
                    Which::Admin => (Side::Admin, &self.admin_serving),
                    _ => (Side::Public, &self.public_serving),
                };
                tokio::spawn(listen::serve(
                    Connections::Listener(socket.listener),
                    None,
                    admin_service(&self.shared, &self.admin, side),
                    stops,
                    self.grace,
                    serving.clone(),
                ))
            }
        };
        tasks.push(task);
        Ok(Slot {
            configured: socket.configured,
            addr,
            inherited: socket.inherited,
            stop,
        })
    }
}

/// The admin or public listener's service: the admin handlers over the gateway's shared state
/// and the admin listener's own.
fn admin_service(
    shared: &Arc<Shared>,
    admin: &Arc<crate::admin::State>,
    side: Side,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<crate::body::ProxyBody>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static {
    let (shared, admin) = (Arc::clone(shared), Arc::clone(admin));
    tower::service_fn(move |req: Request<Incoming>| {
        let (shared, admin) = (Arc::clone(&shared), Arc::clone(&admin));
        async move { Ok::<_, Infallible>(crate::admin::handle(shared, admin, side, req).await) }
    })
}
