//! Test harness: the sandbox and the gateway on ephemeral loopback ports, and
//! a small HTTP client.
#![allow(dead_code)]

use bytes::Bytes;
use douyin_gateway::config::{Config, TlsConfig};
pub use douyin_gateway::config::{ServerConfig, TokensConfig};
use douyin_gateway::sandbox::{self, Sandbox, SandboxOptions};
use douyin_gateway::server::{self, Running};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::net::TcpListener;

pub const CLIENT_KEY: &str = "awsandbox0000001";
pub const CLIENT_SECRET: &str = "sandbox-secret";
pub const CALLER_KEY: &str = "caller-key-1";
pub const ADMIN_KEY: &str = "admin-key-1";

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

pub async fn sandbox_with(opts: SandboxOptions) -> Sandbox {
    sandbox::start(opts, bind().await).unwrap()
}

pub async fn sandbox() -> Sandbox {
    sandbox_with(SandboxOptions::default()).await
}

/// A gateway plus what keeps its secret file alive.
pub struct Gateway {
    pub running: Running,
    pub secret: tempfile::NamedTempFile,
    pub config_file: tempfile::NamedTempFile,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }
    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr)
    }
}

pub fn secret_file() -> tempfile::NamedTempFile {
    text_file(CLIENT_SECRET)
}

/// `douyin-gateway rekey` on a config of `text`; it must succeed. Its output.
pub fn rekey(text: &str) -> std::process::Output {
    let cfg = text_file(text);
    let out = Command::new(BIN)
        .args(["rekey", "--config", cfg.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A temporary file holding `text` (a config, a secret).
pub fn text_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// The standard test config with `server` applied to `[server]` and `extra` appended (more
/// routes, `[token_errors]`, …).
pub fn config_text(
    upstream: &str,
    secret: &std::path::Path,
    server: impl FnOnce(&mut ServerConfig),
    extra: &str,
) -> String {
    TestConfig::standard(upstream, secret)
        .server(server)
        .extra(extra)
        .render()
}

/// The test config as a typed builder: a test names what it changes instead of editing text.
/// `[server]` and `[tokens]` are the gateway's own types, so a renamed or retyped setting fails
/// to compile here rather than being refused at run time.
#[derive(Clone, Debug)]
pub struct TestConfig {
    upstream: String,
    secret: std::path::PathBuf,
    server: ServerConfig,
    upstream_lines: Vec<String>,
    store: String,
    admin_key: bool,
    tokens: TokensConfig,
    app: Vec<String>,
    caller: Vec<String>,
    routes_first: Vec<String>,
    extra: Vec<String>,
}

impl TestConfig {
    /// One app on `upstream` with its secret in the file `secret`, a caller, the admin key, the
    /// sample routes, a memory store, both listeners on port 0.
    pub fn new(upstream: &str, secret: &std::path::Path) -> Self {
        TestConfig {
            upstream: upstream.into(),
            secret: secret.into(),
            server: ServerConfig {
                listen: "127.0.0.1:0".into(),
                admin_listen: "127.0.0.1:0".into(),
                ..ServerConfig::default()
            },
            upstream_lines: Vec::new(),
            store: "[store]\nkind = \"memory\"\n".into(),
            admin_key: true,
            tokens: TokensConfig::default(),
            app: Vec::new(),
            caller: Vec::new(),
            routes_first: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// [`TestConfig::new`] with a short back-off, so recovery tests finish quickly.
    pub fn standard(upstream: &str, secret: &std::path::Path) -> Self {
        Self::new(upstream, secret).tokens(|t| {
            t.backoff_initial_ms = 100;
            t.backoff_max_ms = 400;
        })
    }

    /// Changes `[server]`.
    pub fn server(mut self, change: impl FnOnce(&mut ServerConfig)) -> Self {
        change(&mut self.server);
        self
    }

    /// The proxy on this port.
    pub fn listen_port(mut self, port: u16) -> Self {
        self.server.listen = format!("127.0.0.1:{port}");
        self
    }

    /// Lines for the standard caller's `[[callers]]` entry.
    pub fn caller(mut self, lines: &str) -> Self {
        self.caller.push(lines.into());
        self
    }

    /// Both listeners at these addresses.
    pub fn listen_at(mut self, listen: &str, admin: &str) -> Self {
        self.server.listen = listen.into();
        self.server.admin_listen = admin.into();
        self
    }

    /// The admin listener on this port.
    pub fn admin_port(mut self, port: u16) -> Self {
        self.server.admin_listen = format!("127.0.0.1:{port}");
        self
    }

    /// A `[server.tls]` table.
    pub fn tls(mut self, cert: &std::path::Path, key: &std::path::Path) -> Self {
        self.server.tls = Some(TlsConfig {
            cert_path: cert.into(),
            key_path: key.into(),
        });
        self
    }

    /// Lines for `[upstream]` (`ca_file = …`).
    pub fn upstream(mut self, lines: &str) -> Self {
        self.upstream_lines.push(lines.into());
        self
    }

    /// The whole `[store]` table, header included.
    pub fn store(mut self, table: &str) -> Self {
        self.store = table.into();
        self
    }

    /// No `[admin]` key: the admin API is off.
    pub fn without_admin_key(mut self) -> Self {
        self.admin_key = false;
        self
    }

    /// Changes `[tokens]`.
    pub fn tokens(mut self, change: impl FnOnce(&mut TokensConfig)) -> Self {
        change(&mut self.tokens);
        self
    }

    /// Lines for the app (`redirect_uri = …`, `scopes = …`, `client_token_endpoint = …`).
    pub fn app(mut self, lines: &str) -> Self {
        self.app.push(lines.into());
        self
    }

    /// The app's `redirect_uri`, pointing at the gateway's own callback on `admin`.
    pub fn redirect_to(self, admin: std::net::SocketAddr) -> Self {
        self.app(&format!("redirect_uri = \"http://{admin}/oauth/callback\""))
    }

    /// Routes placed before the standard ones (they match first).
    pub fn routes_first(mut self, text: &str) -> Self {
        self.routes_first.push(text.into());
        self
    }

    /// Text appended at the end (more routes, callers, `[token_errors]`).
    pub fn extra(mut self, text: &str) -> Self {
        self.extra.push(text.into());
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let admin = if self.admin_key {
            format!(
                "[admin]\napi_key_sha256 = \"{}\"\n",
                douyin_gateway::caller::hash_key(ADMIN_KEY)
            )
        } else {
            String::new()
        };
        format!(
            r#"{server}
[upstream]
base_url = "{upstream}"
connect_timeout_ms = 1000
{upstream_lines}

{store}

{admin}

{tokens}
[[apps]]
name = "main"
client_key = "{CLIENT_KEY}"
{app}
client_secret_file = "{secret}"

[[callers]]
name = "backend"
api_key_sha256 = "{caller}"
{caller_lines}

{routes_first}

[[routes]]
name = "ticket"
path = "/js/getticket/"
token = "client"
inject = "query"

[[routes]]
name = "role-check"
path = "/api/douyin/v1/role/check/"
methods = ["POST"]
token = "client"

[[routes]]
name = "video-list"
path = "/api/douyin/v1/video/video_list/"
token = "user"

{extra}
"#,
            server = server_table(&self.server),
            upstream = self.upstream,
            upstream_lines = self.upstream_lines.join("\n"),
            store = self.store,
            tokens = tokens_table(&self.tokens),
            app = self.app.join("\n"),
            secret = self.secret.display(),
            caller = douyin_gateway::caller::hash_key(CALLER_KEY),
            caller_lines = self.caller.join("\n"),
            routes_first = self.routes_first.join("\n\n"),
            extra = self.extra.join("\n"),
        )
    }
}

/// A TOML value.
fn toml(v: impl Into<toml::Value>) -> toml::Value {
    v.into()
}

/// `[server]` (and `[server.tls]`), every setting written out.
fn server_table(s: &ServerConfig) -> String {
    // Every field named: a setting added to ServerConfig fails to compile here until written.
    let ServerConfig {
        listen,
        admin_listen,
        max_body_bytes,
        retry_buffer_bytes,
        request_timeout_ms,
        shutdown_grace_ms,
        allow_anonymous,
        public_admin_url,
        public_listen,
        tls,
        worker_threads,
        header_read_timeout_ms,
        idle_timeout_ms,
        body_read_timeout_ms,
        max_connections,
        max_connections_per_ip,
        max_pending_head_bytes,
        max_in_flight,
        max_header_bytes,
    } = s;
    let int = |n: u64| toml(n as i64);
    let mut lines = vec![
        ("listen", toml(listen.as_str())),
        ("admin_listen", toml(admin_listen.as_str())),
        ("max_body_bytes", int(*max_body_bytes)),
        ("retry_buffer_bytes", int(*retry_buffer_bytes)),
        ("request_timeout_ms", int(*request_timeout_ms)),
        ("shutdown_grace_ms", int(*shutdown_grace_ms)),
        ("allow_anonymous", toml(*allow_anonymous)),
        ("header_read_timeout_ms", int(*header_read_timeout_ms)),
        ("idle_timeout_ms", int(*idle_timeout_ms)),
        ("body_read_timeout_ms", int(*body_read_timeout_ms)),
        ("max_pending_head_bytes", int(*max_pending_head_bytes as u64)),
        ("max_in_flight", int(*max_in_flight as u64)),
        ("max_header_bytes", int(*max_header_bytes as u64)),
    ];
    for (key, v) in [("public_admin_url", public_admin_url), ("public_listen", public_listen)] {
        if let Some(v) = v {
            lines.push((key, toml(v.as_str())));
        }
    }
    for (key, v) in [
        ("worker_threads", worker_threads),
        ("max_connections", max_connections),
        ("max_connections_per_ip", max_connections_per_ip),
    ] {
        if let Some(v) = v {
            lines.push((key, int(*v as u64)));
        }
    }
    let mut out = String::from("[server]\n");
    for (key, v) in lines {
        out.push_str(&format!("{key} = {v}\n"));
    }
    if let Some(TlsConfig { cert_path, key_path }) = tls {
        out.push_str(&format!(
            "\n[server.tls]\ncert_path = {}\nkey_path = {}\n",
            toml(cert_path.to_str().unwrap()),
            toml(key_path.to_str().unwrap())
        ));
    }
    out
}

/// `[tokens]`, every setting written out.
fn tokens_table(t: &TokensConfig) -> String {
    let TokensConfig {
        refresh_at_fraction,
        backoff_initial_ms,
        backoff_max_ms,
        fetch_timeout_ms,
        renew_before_secs,
        max_renewals,
        maintain_interval_ms,
        client_token_fetch_budget,
        fetch_failing_after_secs,
    } = t;
    let int = |n: u64| toml(n as i64);
    let lines = [
        ("refresh_at_fraction", toml(*refresh_at_fraction)),
        ("backoff_initial_ms", int(*backoff_initial_ms)),
        ("backoff_max_ms", int(*backoff_max_ms)),
        ("fetch_timeout_ms", int(*fetch_timeout_ms)),
        ("renew_before_secs", int(*renew_before_secs)),
        ("max_renewals", int(u64::from(*max_renewals))),
        ("maintain_interval_ms", int(*maintain_interval_ms)),
        ("client_token_fetch_budget", int(u64::from(*client_token_fetch_budget))),
        ("fetch_failing_after_secs", int(*fetch_failing_after_secs)),
    ];
    let mut out = String::from("[tokens]\n");
    for (key, v) in lines {
        out.push_str(&format!("{key} = {v}\n"));
    }
    out
}

pub async fn gateway_text(text: &str, secret: tempfile::NamedTempFile) -> Gateway {
    start_text(text, secret, bind().await, bind().await).await
}

/// [`gateway_text`] owning its text (for a future built in a closure).
pub async fn gateway_text_owned(text: String, secret: tempfile::NamedTempFile) -> Gateway {
    gateway_text(&text, secret).await
}

/// Starts a gateway from config text on bound listeners; the config is also written to a file (for reloads).
async fn start_text(text: &str, secret: tempfile::NamedTempFile, listen: TcpListener, admin: TcpListener) -> Gateway {
    let mut config_file = tempfile::NamedTempFile::new().unwrap();
    config_file.write_all(text.as_bytes()).unwrap();
    let (config, _) = Config::load_str(text, "test config").unwrap_or_else(|e| panic!("config: {e}"));
    let path = Some(config_file.path().to_path_buf());
    let running = server::start_on(config, path, listen, admin).await.unwrap();
    Gateway {
        running,
        secret,
        config_file,
    }
}

/// The standard gateway with `server` applied to `[server]` and `extra` appended.
pub async fn gateway_with(sb: &Sandbox, server: impl FnOnce(&mut ServerConfig), extra: &str) -> Gateway {
    let secret = secret_file();
    let text = config_text(&sb.url(), secret.path(), server, extra);
    gateway_text(&text, secret).await
}

pub async fn gateway(sb: &Sandbox) -> Gateway {
    gateway_with(sb, |_| {}, "").await
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The gateway error code, when the gateway answered itself.
    pub fn gateway_error(&self) -> Option<String> {
        let h = self.headers.get("x-gateway-error")?.to_str().ok()?.to_string();
        assert_eq!(
            self.json()["gateway_error"]["code"],
            h.as_str(),
            "header and body codes differ"
        );
        Some(h)
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http {
    /// A client whose connections come from `ip` (any 127.x.y.z works on loopback): another
    /// address, as far as the gateway's per-address limits can tell.
    pub fn from_address(ip: &str) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(ip.parse().unwrap()));
        Http {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let (parts, body) = resp.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// GET as the configured caller.
    pub async fn get(&self, url: &str) -> Resp {
        self.send(Method::GET, url, &[("x-gateway-key", CALLER_KEY)], Bytes::new())
            .await
    }

    /// POST JSON as the configured caller.
    pub async fn post(&self, url: &str, body: impl Into<Bytes>) -> Resp {
        self.send(
            Method::POST,
            url,
            &[("x-gateway-key", CALLER_KEY), ("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Sandbox control call.
    pub async fn control(&self, sb: &Sandbox, path: &str, body: Value) -> Value {
        let r = self
            .send(
                Method::POST,
                &format!("{}{path}", sb.url()),
                &[],
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    }

    pub async fn stats(&self, sb: &Sandbox) -> Value {
        self.send(Method::GET, &format!("{}/sandbox/stats", sb.url()), &[], Bytes::new())
            .await
            .json()
    }

    pub async fn requests(&self, sb: &Sandbox) -> Vec<Value> {
        let r = self
            .send(
                Method::GET,
                &format!("{}/sandbox/requests", sb.url()),
                &[],
                Bytes::new(),
            )
            .await
            .json();
        r["requests"].as_array().unwrap().clone()
    }

    pub async fn metrics(&self, gw: &Gateway) -> String {
        self.send(Method::GET, &gw.admin("/metrics"), &[], Bytes::new())
            .await
            .text()
    }
}

/// The value of one metric sample, e.g. `douyin_gateway_token_fetches_total{app="main",class="client",outcome="ok"}`.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

pub fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A gateway whose config is written knowing its admin address (for
/// `redirect_uri`): `make(admin_addr, secret_path)` returns the config text.
pub async fn gateway_knowing_admin(make: impl FnOnce(std::net::SocketAddr, &std::path::Path) -> String) -> Gateway {
    let secret = secret_file();
    let (listen, admin) = (bind().await, bind().await);
    let text = make(admin.local_addr().unwrap(), secret.path());
    start_text(&text, secret, listen, admin).await
}

/// The config for user flows: an app redirect_uri pointing at the gateway's own callback,
/// scopes, and `tokens` applied to `[tokens]`.
pub async fn user_gateway_with(sb: &Sandbox, tokens: impl FnOnce(&mut TokensConfig)) -> Gateway {
    let upstream = sb.url();
    gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&upstream, secret)
            .tokens(tokens)
            .redirect_to(admin)
            .app("scopes = [\"user_info\", \"video.list.bytes\"]")
            .render()
    })
    .await
}

/// [`user_gateway_with`] the default `[tokens]`.
pub async fn user_gateway(sb: &Sandbox) -> Gateway {
    user_gateway_with(sb, |_| {}).await
}

impl Http {
    /// Admin API call with the admin key.
    pub async fn admin(&self, gw: &Gateway, method: Method, path: &str, body: &str) -> Resp {
        self.send(
            method,
            &gw.admin(path),
            &[("x-admin-key", ADMIN_KEY), ("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// Walks the authorization flow as a browser would: /oauth/authorize →
    /// the platform's consent page → /oauth/callback. Returns the callback's answer.
    /// A code the sandbox's consent page issues for a user of the app `client_key`, as the
    /// platform hands it to a mini-app or mobile app (no redirect to the gateway involved).
    pub async fn code_for(&self, sb: &Sandbox, client_key: &str) -> String {
        let url = format!(
            "{}/platform/oauth/connect/?client_key={client_key}&response_type=code&scope=user_info&state=s\
             &redirect_uri=https%3A%2F%2Fapp.example%2Fcb",
            sb.url()
        );
        let r = self.send(Method::GET, &url, &[], Bytes::new()).await;
        let location = r.headers["location"].to_str().unwrap().to_string();
        let q = location.split_once('?').unwrap().1;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    }

    /// `POST /_gateway/exchange_code` with `body`, as the caller with `key`.
    pub async fn exchange_code(&self, gw: &Gateway, key: &str, body: Value) -> Resp {
        self.send(
            Method::POST,
            &gw.url("/_gateway/exchange_code"),
            &[("x-gateway-key", key), ("content-type", "application/json")],
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    pub async fn authorize(&self, gw: &Gateway, app: &str) -> Resp {
        let r = self
            .send(
                Method::GET,
                &gw.admin(&format!("/oauth/authorize?app={app}")),
                &[],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 302, "{}", r.text());
        let consent = r.headers["location"].to_str().unwrap().to_string();
        let r = self.send(Method::GET, &consent, &[], Bytes::new()).await;
        assert_eq!(r.status, 302, "consent page: {}", r.text());
        let callback = r.headers["location"].to_str().unwrap().to_string();
        assert!(callback.starts_with(&gw.admin("/oauth/callback?")), "{callback}");
        self.send(Method::GET, &callback, &[], Bytes::new()).await
    }
}

/// Another fetcher takes the app's mini-app token from the sandbox twice: the platform keeps only
/// the latest two, so the gateway's is revoked.
pub async fn revoke_mini_app_token(http: &Http, sb: &Sandbox) {
    for _ in 0..2 {
        let r = http
            .post(
                &format!("{}/api/apps/v2/token", sb.url()),
                format!(r#"{{"appid":"{CLIENT_KEY}","secret":"{CLIENT_SECRET}","grant_type":"client_credential"}}"#),
            )
            .await;
        assert_eq!(r.json()["err_no"], 0);
    }
}

/// The open_id a callback page names.
pub fn open_id_of(page: &str) -> String {
    let start = page.find("<code>").expect("open_id on the page") + 6;
    page[start..page[start..].find("</code>").unwrap() + start].to_string()
}

pub const BIN: &str = env!("CARGO_BIN_EXE_douyin-gateway");

/// A gateway process whose stderr is collected line by line.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args).envs(env.iter().copied());
        Proc::spawn_command(cmd)
    }

    /// Runs the gateway on listeners the test bound (`127.0.0.1:0`), handed over as systemd
    /// hands over sockets (`LISTEN_FDS`: the proxy's, then the admin's): the test knows the ports
    /// before the process starts, and no other process can take them in between.
    pub fn spawn_on(args: &[&str], env: &[(&str, &str)], listeners: [&std::net::TcpListener; 2]) -> Proc {
        Proc::spawn_command(Proc::command_on(args, env, listeners))
    }

    /// `douyin-gateway` with `args` (`serve …`) on two fresh [`listeners`], once it says it is
    /// listening; its proxy and admin ports.
    pub fn serve(args: &[&str], env: &[(&str, &str)]) -> (Proc, u16, u16) {
        let (listeners, port, admin_port) = listeners();
        let [l0, l1] = &listeners;
        let mut p = Proc::spawn_on(args, env, [l0, l1]);
        p.wait_for("gateway listening");
        (p, port, admin_port)
    }

    /// The command [`Proc::spawn_on`] runs, for a test that sets its output itself.
    pub fn command_on(args: &[&str], env: &[(&str, &str)], listeners: [&std::net::TcpListener; 2]) -> Command {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fds = listeners.map(|l| l.as_raw_fd());
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .envs(env.iter().copied())
            .env("LISTEN_FDS", "2")
            .env_remove("LISTEN_PID");
        // SAFETY: between fork and exec only fcntl and dup2, which are async-signal-safe, run:
        // they put the two listening sockets at descriptors 3 and 4 (without close-on-exec) for
        // the gateway, by way of copies at 10 or above (closed on exec), so that a socket already
        // at 3 or 4 is not overwritten before it is moved.
        unsafe {
            cmd.pre_exec(move || {
                let mut high = [0; 2];
                for (h, fd) in high.iter_mut().zip(fds) {
                    *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if *h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, fd) in high.into_iter().enumerate() {
                    if libc::dup2(fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs a command (the gateway under a wrapper such as a shell setting limits).
    pub fn spawn_command(mut cmd: Command) -> Proc {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.wait_for_any(&[needle])
    }

    /// The first line containing `needle`, among those already read (while waiting for others)
    /// or, failing that, those still to come. For lines whose order against the ones waited for
    /// before is not fixed: [`Proc::wait_for`] would pass over one read while it waited.
    pub fn line_with(&mut self, needle: &str) -> String {
        match self.seen.iter().find(|l| l.contains(needle)) {
            Some(line) => line.clone(),
            None => self.wait_for(needle),
        }
    }

    /// Waits for a line containing any of `needles`; returns it.
    pub fn wait_for_any(&mut self, needles: &[&str]) -> String {
        let needle = needles.join("\" or \"");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().any(|n| line.contains(n)) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?}; output so far:\n{}", self.seen.join("\n"));
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }
}

pub fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + name.len()
        + 1;
    line[start..].split_whitespace().next().unwrap()
}

/// Two loopback listeners on ports of their own, and their ports, for [`Proc::spawn_on`].
pub fn listeners() -> ([std::net::TcpListener; 2], u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (bind(), bind());
    let (pa, pb) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
    ([a, b], pa, pb)
}

/// Sends raw bytes on a new connection; returns what came back until the gateway's JSON
/// error was complete, the connection closed, or 5 s of silence.
pub async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the gateway's JSON error is complete or the connection closes.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        out.extend_from_slice(&buf[..n]);
        if n == 0 || out.ends_with(b"}}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Metric names in the metrics table of docs/operations.md, but for the Redis-only ones.
pub fn documented_metric_names() -> std::collections::BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for line in readme
        .lines()
        .filter(|l| l.starts_with("| `douyin_gateway_") || l.starts_with("| `process_"))
    {
        let first_cell = line.split('|').nth(1).unwrap();
        if first_cell.contains("Redis only") {
            continue;
        }
        for name in first_cell.split('`').skip(1).step_by(2) {
            names.insert(name.to_string());
        }
    }
    names
}

/// Debian's Chromium. Tests that call this are compiled as ignored where the build found none
/// (`has_chromium`); one uninstalled since fails here.
pub fn chromium() -> String {
    for bin in ["chromium", "chromium-browser"] {
        if Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return bin.to_string();
        }
    }
    panic!("Chromium is not installed (it was when the tests were built, or CI=true): apt-get install chromium, or touch build.rs");
}

/// Loads `url` in headless Chromium with `extra` flags (`--dump-dom`, `--screenshot=…`); its stdout.
pub async fn headless(bin: &str, extra: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .args(extra)
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium hung")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Imports a user of app `main` with tokens the platform never issued: their call is rejected
/// and the refresh answers 10010, so they must authorize again.
pub async fn import_dead_user(http: &Http, gw: &Gateway, open_id: &str) {
    let body = serde_json::json!({"access_token": format!("act.bogus-{open_id}"), "refresh_token": format!("rft.bogus-{open_id}"),
        "expires_in": 1296000, "refresh_expires_in": 2592000})
    .to_string();
    let r = http
        .admin(gw, Method::PUT, &format!("/admin/users/main/{open_id}"), &body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// What the sandbox's receiver (a backend standing in for a developer's) was sent, oldest first.
pub async fn received(http: &Http, sb: &douyin_gateway::sandbox::Sandbox) -> Vec<Value> {
    let r = http
        .send(Method::GET, &format!("{}/sandbox/received", sb.url()), &[], "")
        .await;
    r.json()["received"].as_array().unwrap().clone()
}

/// `X-Gateway-Signature`'s value for `body`, computed here independently of the gateway:
/// `sha256=` and the hex HMAC-SHA256 with `key`.
pub fn hmac_hex(key: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An environment variable of a fresh name holding a fresh 32-byte store key (base64), and its name.
pub fn fresh_store_key(prefix: &str) -> String {
    use base64::Engine;
    let var = format!("{prefix}_{}", hex::encode(rand::random::<[u8; 6]>()));
    std::env::set_var(
        &var,
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()),
    );
    var
}

/// A SQLite `[store]` at `db` under a fresh key.
pub fn fresh_sqlite_store(db: &std::path::Path) -> String {
    let var = fresh_store_key("DG_TEST_SQLITE_KEY");
    format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}\"\nencryption_key_env = \"{var}\"\n",
        db.display()
    )
}

/// A Redis `[store]` on `url` under a fresh key prefix and key.
pub fn fresh_redis_store(url: &str) -> String {
    let var = fresh_store_key("DG_TEST_REDIS_KEY");
    let prefix = format!("dgtest-{}:", hex::encode(rand::random::<[u8; 6]>()));
    format!("[store]\nkind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\nencryption_key_env = \"{var}\"\n")
}

/// A Redis for a test: `REDIS_URL` when set, else a `redis-server` of the test's own on a unix
/// socket, stopped when this is dropped.
pub struct OwnRedis {
    pub url: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    /// Returns once it answers `PING`.
    pub fn start() -> OwnRedis {
        let dir = tempfile::Builder::new().prefix("dg-redis").tempdir_in("/tmp").unwrap();
        if let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
            return OwnRedis {
                url,
                child: None,
                _dir: dir,
            };
        }
        let socket = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (found when the tests were built; uninstalled since? touch build.rs)");
        let own = OwnRedis {
            url: format!("redis+unix://{}", socket.display()),
            child: Some(child),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while redis::Client::open(own.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(std::time::Instant::now() < deadline, "redis-server never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        own
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sandbox's provider as `[[providers]]` "tp", API version 1.
pub fn provider_table() -> String {
    ProviderSecrets::set().table("tp", "v1")
}

/// A gateway on `store` in front of `sb`, with [`provider_table`].
pub async fn provider_gateway(sb: &Sandbox, store: &str) -> Gateway {
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .store(store)
        .extra(&provider_table())
        .render();
    gateway_text(&text, secret).await
}

/// An event as the platform sends it to the sandbox provider's event URL: `message` sealed with
/// the provider's message key for `appid`, signed with `token` at `ts` (a fresh nonce).
pub fn provider_event(message: &Value, appid: &str, token: &str, ts: u64) -> Value {
    use douyin_gateway::provider_crypto::{encrypt, msg_signature, MessageKey};
    let key = MessageKey::parse(sandbox::provider::MESSAGE_KEY).unwrap();
    let sealed = encrypt(&key, message.to_string().as_bytes(), appid);
    let nonce = hex::encode(rand::random::<[u8; 4]>());
    let ts = ts.to_string();
    serde_json::json!({
        "Nonce": nonce,
        "TimeStamp": ts,
        "Encrypt": sealed,
        "MsgSignature": msg_signature(token, &ts, &nonce, &sealed),
    })
}

/// The sandbox pushes a new component_ticket to `gw`'s event URL for provider "tp"; the push
/// control's answer (the gateway's status and body, the ticket).
pub async fn push_ticket(http: &Http, sb: &Sandbox, gw: &Gateway) -> Value {
    http.control(
        sb,
        "/sandbox/provider/push",
        serde_json::json!({"url": gw.admin("/providers/tp/events")}),
    )
    .await
}

/// The sandbox provider's secrets (`douyin_gateway::sandbox::provider`) in environment variables
/// of fresh names, for `[[providers]]` tables: component appsecret, message token, message key,
/// the V2 client secret.
pub struct ProviderSecrets {
    pub secret: String,
    pub token: String,
    pub key: String,
    pub client: String,
}

impl ProviderSecrets {
    pub fn set() -> ProviderSecrets {
        use douyin_gateway::sandbox::{authorizer, provider};
        let tag = hex::encode(rand::random::<[u8; 6]>());
        let var = |what: &str, value: &str| {
            let name = format!("DG_TP_{what}_{tag}");
            std::env::set_var(&name, value);
            name
        };
        ProviderSecrets {
            secret: var("SECRET", provider::COMPONENT_APPSECRET),
            token: var("TOKEN", provider::MESSAGE_TOKEN),
            key: var("KEY", provider::MESSAGE_KEY),
            client: var("CLIENT", authorizer::PROVIDER_CLIENT_SECRET),
        }
    }

    /// A `[[providers]]` table for the sandbox's provider named `name` on `version` ("v1", "v2";
    /// V2 with the sandbox's provider client key).
    pub fn table(&self, name: &str, version: &str) -> String {
        let ProviderSecrets {
            secret,
            token,
            key,
            client,
        } = self;
        let mut t = format!(
            "[[providers]]\nname = \"{name}\"\ncomponent_appid = \"{}\"\ncomponent_appsecret_env = \"{secret}\"\n\
             message_token_env = \"{token}\"\nmessage_key_env = \"{key}\"\napi_version = \"{version}\"\n",
            douyin_gateway::sandbox::provider::COMPONENT_APPID
        );
        if version == "v2" {
            t += &format!(
                "client_key = \"{}\"\nclient_secret_env = \"{client}\"\n",
                douyin_gateway::sandbox::authorizer::PROVIDER_CLIENT_KEY
            );
        }
        t
    }
}
