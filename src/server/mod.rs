//! Running the gateway: the proxy and admin listeners, graceful shutdown,
//! and config reload.

mod admit;
mod engine;
mod listen;
mod sockets;

pub use sockets::bind;

use crate::config::{Config, Severity};
use crate::runtime::Runtime;
use crate::state::Shared;
use http::{Request, Response};
use hyper::body::Incoming;
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

/// Starts a gateway from a validated config, binding its listeners; or on sockets it inherited
/// (systemd socket activation, `LISTEN_FDS`): the first is the proxy listener, the second the
/// admin listener, and `listen` / `admin_listen` are then not bound.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, String> {
    let mut inherited = listenfd::ListenFd::from_env();
    let listen = match sockets::inherited_listener(&mut inherited, 0, "listen")? {
        Some(l) => l,
        None => sockets::bind(&config.server.listen)
            .await
            .map_err(|e| format!("listen {}: {e}", config.server.listen))?,
    };
    let admin = match sockets::inherited_listener(&mut inherited, 1, "admin_listen")? {
        Some(l) => l,
        None => sockets::bind(&config.server.admin_listen)
            .await
            .map_err(|e| format!("admin_listen {}: {e}", config.server.admin_listen))?,
    };
    start_on(config, config_path, listen, admin).await
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
    let tls = sockets::tls_acceptor(&config)?;
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let limits = listen::Caps::of(&config.server);
    let config_store = config.store.clone();
    let shared = engine::start(config, &limits.budget).await?;
    let admin_state = Arc::new(crate::admin::State::new(&config_store));
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = listen::proxy_threads(listen, tls, &shared, &rx, grace, limits.serving("proxy", &shared))?;
    for (listener, side, name) in [
        (Some(admin), crate::admin::Side::Admin, "admin"),
        (public, crate::admin::Side::Public, "public"),
    ] {
        let Some(listener) = listener else { continue };
        let service = admin_service(&shared, &admin_state, side);
        let serving = limits.serving(name, &shared);
        tasks.push(tokio::spawn(listen::serve(
            listen::Connections::Listener(listener),
            None,
            service,
            rx.clone(),
            grace,
            serving,
        )));
    }
    tasks.push(engine::maintenance(&shared, rx.clone()));
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

/// The admin or public listener's service: the admin handlers over the gateway's shared state
/// and the admin listener's own.
fn admin_service(
    shared: &Arc<Shared>,
    admin: &Arc<crate::admin::State>,
    side: crate::admin::Side,
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
