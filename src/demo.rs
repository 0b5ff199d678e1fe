//! `douyin-gateway demo`: the sandbox platform and a gateway in one process,
//! on loopback, with a built-in config and ready-to-paste curl lines.

use crate::config::Config;
use crate::sandbox::{self, SandboxOptions};
use crate::server;
use std::process::ExitCode;
use tokio::net::TcpListener;

/// The sandbox app the demo config uses.
const CLIENT_KEY: &str = "awsandbox0000001";
/// Its secret (the sandbox's default app); only ever on loopback.
const CLIENT_SECRET: &str = "sandbox-secret";
/// The demo's admin key (loopback only).
pub const ADMIN_KEY: &str = "demo-admin-key";

/// The demo's key for a backend that may exchange codes (loopback only).
pub const CALLER_KEY: &str = "demo-backend-key";

/// The open_id the demo's sandbox gives whoever consents.
pub const DEMO_USER: &str = "demo-user";

/// The built-in config: anonymous callers on loopback, memory store, sample routes.
pub fn config_text(sandbox_url: &str, secret_file: &std::path::Path, admin: std::net::SocketAddr) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
allow_anonymous = true

[upstream]
base_url = "{sandbox_url}"

# developer.toutiao.com in production; the sandbox serves both hosts.
[[upstreams]]
name = "toutiao"
base_url = "{sandbox_url}"

[store]
kind = "memory"

[admin]
api_key_sha256 = "{admin_hash}"

[[apps]]
name = "demo"
client_key = "{CLIENT_KEY}"
client_secret_file = "{secret}"
redirect_uri = "http://{admin}/oauth/callback"
scopes = ["user_info", "video.list.bytes"]
mini_app_upstream = "toutiao"

# A mini-app's backend: anonymous calls are allowed too, but only a caller with a key exchanges codes.
[[callers]]
name = "mini-app-backend"
api_key_sha256 = "{caller_hash}"
exchange_codes = true

[[routes]]
name = "ticket"
path = "/js/getticket/"
token = "client"

[[routes]]
name = "role-check"
path = "/api/douyin/v1/role/check/"
methods = ["POST"]
token = "client"

[[routes]]
name = "video-list"
path = "/api/douyin/v1/video/video_list/"
token = "user"

[[routes]]
name = "video-list-legacy"
path = "/video/list/"
token = "user"
inject = "query"

[[routes]]
name = "enterprise"
path = "/api/douyin/v1/enterprise/*"
token = "biz"
biz_scope = "data.external.item"

# Mini-app login: the gateway sets appid and secret in the body.
[[routes]]
name = "jscode2session"
path = "/api/apps/v2/jscode2session"
methods = ["POST"]
token = "app_secret"
inject = "json_body"
upstream = "toutiao"

# A developer.toutiao.com API taking the mini-app token in its JSON body.
[[routes]]
name = "appid-auth"
path = "/auth/entity/get_appid_auth"
methods = ["POST"]
token = "mini_app"
inject = "json_body"
upstream = "toutiao"

# SDKs that fetch their own mini-app token get a placeholder, replaced on every call.
[[routes]]
name = "sdk-mini-app-token"
path = "/api/apps/v2/token"
methods = ["POST"]
token = "placeholder"
"#,
        admin_hash = crate::secret::hash_key(ADMIN_KEY),
        caller_hash = crate::secret::hash_key(CALLER_KEY),
        secret = secret_file.display(),
    )
}

/// The demo's secret file: created readable by its owner only (0600), removed when the demo
/// ends, however it ends.
struct SecretFile(std::path::PathBuf);

impl SecretFile {
    fn create() -> Result<Self, String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("douyin-gateway-demo-{}.secret", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        f.write_all(CLIENT_SECRET.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(SecretFile(path))
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run() -> ExitCode {
    match start().await {
        Ok((sb, gw, secret)) => {
            let (g, a, s) = (gw.addr, gw.admin_addr, sb.url());
            println!(
                r#"
douyin-gateway demo: a sandbox Douyin platform at {s}, the gateway at http://{g}, its admin listener at http://{a}.
Paste these into another terminal:

  # an app-level call: the gateway fetches a client_token once and attaches it
  curl -s http://{g}/js/getticket/

  # a JSON POST, forwarded byte for byte
  curl -s -X POST -H 'content-type: application/json' -d '{{"role_labels":["AUTH_COMPANY"]}}' http://{g}/api/douyin/v1/role/check/

  # the platform revokes the client_token; the next call is refreshed and replayed, invisibly to the caller
  curl -s -X POST -d '{{"client_key":"{CLIENT_KEY}"}}' {s}/sandbox/revoke
  curl -s http://{g}/js/getticket/

  # a user call before the user authorized the app: 401 user_authorization_required, with an authorize_url
  curl -s 'http://{g}/api/douyin/v1/video/video_list/?open_id={DEMO_USER}&cursor=0&count=10'

  # the user authorizes (a browser follows the same redirects): the gateway stores their tokens
  curl -sL 'http://{a}/oauth/authorize?app=demo'

  # now the call carries the user's access_token; old-style APIs get it in the query
  curl -s 'http://{g}/api/douyin/v1/video/video_list/?open_id={DEMO_USER}&cursor=0&count=10'
  curl -s 'http://{g}/video/list/?open_id={DEMO_USER}&cursor=0&count=10'

  # the user's access_token expires on the platform: refreshed with the refresh_token, replayed
  curl -s -X POST -d '{{"expire_user":"{DEMO_USER}"}}' {s}/sandbox/revoke
  curl -s 'http://{g}/api/douyin/v1/video/video_list/?open_id={DEMO_USER}&cursor=0&count=10'

  # an enterprise API: a biz_token is generated for this open_id and scope on first use
  curl -s 'http://{g}/api/douyin/v1/enterprise/item/list/?open_id=demo-enterprise'

  # the mini-app walkthrough in docs/tokens.md (tt.login, tt.showDouyinOpenAuth, token in the body, an SDK) runs
  # against this demo after:
  export GW=http://{g} ADMIN=http://{a} SANDBOX={s}

  # what the gateway holds (never token values), and its metrics
  curl -s -H 'X-Admin-Key: {ADMIN_KEY}' http://{a}/admin/tokens
  curl -s http://{a}/metrics | grep '^douyin_gateway_token'

Ctrl-C stops it.
"#
            );
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            gw.stop().await;
            drop(sb);
            drop(secret);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start() -> Result<(sandbox::Sandbox, server::Running, SecretFile), String> {
    let bind = || async {
        TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind a loopback port: {e}"))
    };
    let opts = SandboxOptions {
        consent_open_id: Some(DEMO_USER.into()),
        ..SandboxOptions::default()
    };
    let sb = sandbox::start(opts, bind().await?)?;
    let secret = SecretFile::create()?;
    let (listen, admin) = (bind().await?, bind().await?);
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    let text = config_text(&sb.url(), &secret.0, admin_addr);
    let (config, _) = Config::load_str(&text, "demo config").map_err(|e| e.to_string())?;
    let gw = server::start_on(config, None, listen, admin).await?;
    Ok((sb, gw, secret))
}
