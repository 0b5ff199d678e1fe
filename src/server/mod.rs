//! Running the gateway: the proxy and admin listeners, graceful shutdown,
//! and config reload.

mod admit;
mod engine;
mod listen;
mod slots;
mod sockets;

pub use sockets::bind;

use crate::config::{Config, Severity};
use crate::runtime::Runtime;
use crate::state::Shared;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running gateway.
pub struct Running {
    /// Where the proxy listened at start ([`Running::addresses`]: where it listens now).
    pub addr: SocketAddr,
    /// Where the admin listener listened at start.
    pub admin_addr: SocketAddr,
    /// Where the public listener (`server.public_listen`) listened at start, if there was one.
    pub public_addr: Option<SocketAddr>,
    /// Shared state (tests look at the token cache and metrics).
    pub shared: Arc<Shared>,
    /// The admin and public listeners' own state (tests look at the OAuth states).
    pub admin: Arc<crate::admin::State>,
    config_path: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    listeners: tokio::sync::Mutex<slots::Listeners>,
}

/// Where the listeners listen now (a reload may have moved them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The proxy.
    pub proxy: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The public listener, when there is one.
    pub public: Option<SocketAddr>,
}

/// Starts a gateway from a validated config, binding its listeners; or on sockets it inherited
/// (systemd socket activation, `LISTEN_FDS`): the first is the proxy listener, the second the
/// admin listener, and `listen` / `admin_listen` are then not bound (nor moved by a reload).
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, String> {
    let mut inherited = listenfd::ListenFd::from_env();
    let (listen, listen_inherited) = match sockets::inherited_listener(&mut inherited, 0, "listen")? {
        Some(l) => (l, true),
        None => (
            sockets::bind(&config.server.listen)
                .await
                .map_err(|e| format!("listen {}: {e}", config.server.listen))?,
            false,
        ),
    };
    let (admin, admin_inherited) = match sockets::inherited_listener(&mut inherited, 1, "admin_listen")? {
        Some(l) => (l, true),
        None => (
            sockets::bind(&config.server.admin_listen)
                .await
                .map_err(|e| format!("admin_listen {}: {e}", config.server.admin_listen))?,
            false,
        ),
    };
    let public = bind_public(&config).await?;
    start_inner(
        config,
        config_path,
        [(listen, listen_inherited), (admin, admin_inherited)],
        public,
    )
    .await
}

/// Starts a gateway on listeners already bound (tests, `demo`); `public_listen`, if set, is bound
/// here.
pub async fn start_on(
    config: Config,
    config_path: Option<PathBuf>,
    listen: TcpListener,
    admin: TcpListener,
) -> Result<Running, String> {
    let public = bind_public(&config).await?;
    start_on_all(config, config_path, listen, admin, public).await
}

/// `server.public_listen` bound, when set.
async fn bind_public(config: &Config) -> Result<Option<TcpListener>, String> {
    match &config.server.public_listen {
        Some(at) => Ok(Some(bind(at).await.map_err(|e| format!("public_listen {at}: {e}"))?)),
        None => Ok(None),
    }
}

/// Starts a gateway on listeners already bound, the public one included (it is served only when
/// `server.public_listen` is set).
pub async fn start_on_all(
    config: Config,
    config_path: Option<PathBuf>,
    listen: TcpListener,
    admin: TcpListener,
    public: Option<TcpListener>,
) -> Result<Running, String> {
    start_inner(config, config_path, [(listen, false), (admin, false)], public).await
}

/// Starts a gateway on its sockets: the proxy's and the admin's, each with whether systemd
/// handed it over, and the public one.
async fn start_inner(
    mut config: Config,
    config_path: Option<PathBuf>,
    [(listen, listen_inherited), (admin, admin_inherited)]: [(TcpListener, bool); 2],
    public: Option<TcpListener>,
) -> Result<Running, String> {
    let addr = listen.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    let public = public.filter(|_| config.server.public_listen.is_some());
    let public_addr = match &public {
        Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    let socket = |listener, configured: &str, inherited| slots::Socket {
        listener,
        configured: configured.to_string(),
        inherited,
    };
    let proxy_socket = socket(listen, &config.server.listen, listen_inherited);
    let admin_socket = socket(admin, &config.server.admin_listen, admin_inherited);
    let public_socket = public.map(|l| socket(l, config.server.public_listen.as_deref().unwrap_or(""), false));
    // Authorize URLs name the admin listener as bound (port 0 becomes the real port).
    config.server.admin_listen = admin_addr.to_string();
    if let Some(a) = public_addr {
        config.server.public_listen = Some(a.to_string());
    }
    let tls = sockets::tls_acceptor(&config)?;
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let caps = admit::Caps::of(&config.server);
    let config_store = config.store.clone();
    let shared = engine::start(config, &caps.budget).await?;
    let admin_state = Arc::new(crate::admin::State::new(&config_store));
    let (shutdown, rx) = watch::channel(false);
    let proxy = caps.serving("proxy", &shared);
    let (mut tasks, hands) = listen::proxy_threads(tls, &shared, &rx, grace, &proxy)?;
    let cx = slots::Context {
        admin_serving: caps.serving("admin", &shared),
        public_serving: caps.serving("public", &shared),
        proxy,
        shared: Arc::clone(&shared),
        admin: Arc::clone(&admin_state),
        hands,
        global: rx.clone(),
        grace,
    };
    let listeners = slots::Listeners::start(cx, proxy_socket, admin_socket, public_socket)?;
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
        listeners: tokio::sync::Mutex::new(listeners),
    })
}

impl Running {
    /// Re-reads the config file; a config that fails validation is refused and the old one keeps
    /// serving. A changed `listen`, `admin_listen` or `public_listen` is bound and served, then
    /// the old address retired (its connections finish their calls); an address that cannot be
    /// bound keeps the old one, with an error naming the key. TLS, `ca_file` and the other keys
    /// [`needs_restart`] lists take effect at restart, each named in a warning.
    pub async fn reload(&self) -> Result<(), String> {
        let path = self.config_path.as_ref().ok_or("no config file to reload")?;
        let (mut config, problems) = Config::load(path).map_err(|e| e.to_string())?;
        for p in problems.iter().filter(|p| p.severity == Severity::Warning) {
            tracing::warn!("{}", p.located());
        }
        for key in needs_restart(&self.shared.runtime.load().config, &config) {
            tracing::warn!(
                key,
                "{key} changed in the config file: it takes effect only after a restart; the running value stays"
            );
        }
        let settings = crate::token::Settings::from_config(&config)?;
        // Built once before any listener moves: a config the runtime refuses moves nothing.
        let probe = Runtime::build(config.clone(), &settings, &self.shared.metrics)?;
        let mut listeners = self.listeners.lock().await;
        // What is served goes in the runtime's config: authorize URLs name it, and the admin
        // listener serves /oauth/* only while there is no public one.
        listeners.apply(&mut config.server).await;
        let served = |s: &crate::config::ServerConfig| (s.admin_listen.clone(), s.public_listen.clone());
        let runtime = if served(&probe.config.server) == served(&config.server) {
            probe
        } else {
            drop(probe);
            Runtime::build(config, &settings, &self.shared.metrics)?
        };
        self.shared.tokens.reconfigure(settings);
        self.shared.runtime.store(Arc::new(runtime));
        Ok(())
    }

    /// Where the listeners listen now.
    pub async fn addresses(&self) -> Addresses {
        let l = self.listeners.lock().await;
        Addresses {
            proxy: l.proxy.addr,
            admin: l.admin.addr,
            public: l.public.as_ref().map(|s| s.addr),
        }
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), returns.
    pub async fn stop(self) {
        // The gateway's stop first: accept loops that then see their own stop know it is not a
        // retirement.
        let _ = self.shutdown.send(true);
        let listeners = self.listeners.into_inner().stop();
        for t in self.tasks.into_iter().chain(listeners) {
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
        // Each listener's connection limits and hyper's buffers are set when it starts.
        (
            "server.header_read_timeout_ms",
            o.header_read_timeout_ms != n.header_read_timeout_ms,
        ),
        ("server.idle_timeout_ms", o.idle_timeout_ms != n.idle_timeout_ms),
        ("server.max_header_bytes", o.max_header_bytes != n.max_header_bytes),
        ("server.shutdown_grace_ms", o.shutdown_grace_ms != n.shutdown_grace_ms),
        (
            "tokens.maintain_interval_ms",
            old.tokens.maintain_interval_ms != new.tokens.maintain_interval_ms,
        ),
        ("store", differs(&old.store, &new.store)),
        ("upstream.ca_file", old.upstream.ca_file != new.upstream.ca_file),
        (
            "upstream.connect_timeout_ms",
            old.upstream.connect_timeout_ms != new.upstream.connect_timeout_ms,
        ),
        (
            "upstream.lean_http1",
            old.upstream.lean_http1 != new.upstream.lean_http1,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting read only at start is named when a reload changes it; the listeners'
    /// addresses, which a reload moves, and settings read per request are not.
    #[test]
    fn a_reload_names_what_needs_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        assert!(needs_restart(&old, &new).is_empty());
        new.server.listen = "127.0.0.1:1".into();
        new.server.admin_listen = "127.0.0.1:2".into();
        new.server.public_listen = Some("127.0.0.1:3".into());
        new.server.request_timeout_ms += 1;
        new.server.max_in_flight += 1;
        assert!(needs_restart(&old, &new).is_empty(), "{:?}", needs_restart(&old, &new));
        new.server.header_read_timeout_ms += 1;
        new.server.idle_timeout_ms += 1;
        new.server.max_header_bytes += 1;
        new.server.shutdown_grace_ms += 1;
        new.tokens.maintain_interval_ms += 1;
        new.server.worker_threads = Some(3);
        new.upstream.lean_http1 = !old.upstream.lean_http1;
        assert_eq!(
            needs_restart(&old, &new),
            [
                "server.worker_threads",
                "server.header_read_timeout_ms",
                "server.idle_timeout_ms",
                "server.max_header_bytes",
                "server.shutdown_grace_ms",
                "tokens.maintain_interval_ms",
                "upstream.lean_http1",
            ]
        );
    }
}
