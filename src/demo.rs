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

/// The built-in config (anonymous callers on loopback, memory store, sample routes), with a
/// `{name}` wherever [`config_text`] puts a value.
const CONFIG_TEMPLATE: &str = include_str!("demo/config.toml");

/// The built-in config for a sandbox at `sandbox_url`, the app's secret in `secret_file` (its keys
/// beside it: `-app-private.pem`, `-platform-public.pem` in place of the extension), and the admin
/// listener (which the OAuth callback goes to) at `admin`.
pub fn config_text(sandbox_url: &str, secret_file: &std::path::Path, admin: std::net::SocketAddr) -> String {
    let dir = secret_file.parent().unwrap_or(std::path::Path::new("."));
    let stem = secret_file
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let key_file = |suffix: &str| dir.join(format!("{stem}{suffix}")).display().to_string();
    CONFIG_TEMPLATE
        .replace("{sandbox_url}", sandbox_url)
        .replace("{client_key}", CLIENT_KEY)
        .replace("{admin_listen}", &admin.to_string())
        .replace("{admin_hash}", &crate::secret::hash_key(ADMIN_KEY))
        .replace("{caller_hash}", &crate::secret::hash_key(CALLER_KEY))
        // Last: the only values that could hold a brace, so no other replacement looks inside them.
        .replace("{signing_key_file}", &key_file("-app-private.pem"))
        .replace("{provider_secret_file}", &key_file("-tp.secret"))
        .replace("{provider_token_file}", &key_file("-tp.token"))
        .replace("{provider_key_file}", &key_file("-tp.key"))
        .replace("{provider_client_secret_file}", &key_file("-tp-client.secret"))
        .replace("{platform_public_key_file}", &key_file("-platform-public.pem"))
        .replace("{secret_file}", &secret_file.display().to_string())
}

/// The app's signing key the demo configures: the published test key of `fixtures/keys/` (whose
/// public half the sandbox checks signatures with), never to be trusted for anything real.
const APP_PRIVATE_KEY: &str = include_str!("../fixtures/keys/app-private.pem");
/// The platform's public key for the demo app (the sandbox signs answers with its private half).
const PLATFORM_PUBLIC_KEY: &str = include_str!("../fixtures/keys/platform-public.pem");

/// A file of the demo (its secret, its keys): created readable by its owner only (0600), removed
/// when the demo ends, however it ends.
struct DemoFile(std::path::PathBuf);

impl DemoFile {
    /// `douyin-gateway-demo-PID{suffix}` in the temp directory, holding `contents`.
    fn create(suffix: &str, contents: &str) -> Result<Self, String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("douyin-gateway-demo-{}{suffix}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        f.write_all(contents.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(DemoFile(path))
    }
}

impl Drop for DemoFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The demo's files: the app's secret, its signing key, the platform's public key, and the
/// service provider's secrets (the sandbox's provider, [`crate::sandbox::provider`]).
struct Files {
    secret: DemoFile,
    signing_key: DemoFile,
    platform_key: DemoFile,
    _provider: [DemoFile; 4],
}

impl Files {
    fn create() -> Result<Self, String> {
        use crate::sandbox::{authorizer, provider};
        Ok(Files {
            secret: DemoFile::create(".secret", CLIENT_SECRET)?,
            signing_key: DemoFile::create("-app-private.pem", APP_PRIVATE_KEY)?,
            platform_key: DemoFile::create("-platform-public.pem", PLATFORM_PUBLIC_KEY)?,
            _provider: [
                DemoFile::create("-tp.secret", provider::COMPONENT_APPSECRET)?,
                DemoFile::create("-tp.token", provider::MESSAGE_TOKEN)?,
                DemoFile::create("-tp.key", provider::MESSAGE_KEY)?,
                DemoFile::create("-tp-client.secret", authorizer::PROVIDER_CLIENT_SECRET)?,
            ],
        })
    }
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run() -> ExitCode {
    match start().await {
        Ok((sb, gw, files)) => {
            let (g, a, s) = (gw.addr, gw.admin_addr, sb.url());
            let (key, platform) = (files.signing_key.0.display(), files.platform_key.0.display());
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

  # the platform pushes a comment event to the webhook: verified, then relayed to the backend ([[webhook_forward]]);
  # a trade event to a [[callbacks]] path: verified, forwarded, the backend's answer returned; what the backend got
  curl -s -X POST -d '{{"url":"http://{a}/webhooks/douyin","event":"comment"}}' {s}/sandbox/webhook
  curl -s -X POST -d '{{"url":"http://{a}/callbacks/douyin","event":"trade"}}' {s}/sandbox/webhook
  curl -s {s}/sandbox/received

  # a form body (POST /oauth/userinfo/): the user from its open_id field, their token set in its access_token field
  curl -s -d 'open_id={DEMO_USER}' http://{g}/oauth/userinfo/

  # a signed call (trade system v2): signed with the app's private key ({key}), checked by the
  # sandbox with its public half; the answer's Byte-Signature verified with the platform's public key ({platform})
  curl -s -X POST -H 'content-type: application/json' -d '{{"order_id":"demo-order"}}' http://{g}/api/apps/trade/v2/order/query_order

  # the platform's next answer is altered after it was signed: 502 bad_upstream_signature, its body not passed on
  curl -s -X POST -d '{{"next":"tampered"}}' {s}/sandbox/trade
  curl -s -X POST -H 'content-type: application/json' -d '{{"order_id":"demo-order"}}' http://{g}/api/apps/trade/v2/order/query_order

  # a payment result called back, signed with the platform's key (Byte-Signature): verified, forwarded to the
  # backend, its answer returned; the same nonce again is a replay: 401, nothing forwarded
  curl -s -X POST -d '{{"url":"http://{a}/callbacks/pay","nonce":"demo-payment-1"}}' {s}/sandbox/callback
  curl -s -X POST -d '{{"url":"http://{a}/callbacks/pay","nonce":"demo-payment-1"}}' {s}/sandbox/callback

  # a service provider ("tp", V2): the platform pushes its component_ticket, then two merchant apps authorize it;
  # each AUTHORIZED code is exchanged at once (with the provider's own client_token) and the grant stored
  curl -s -X POST -d '{{"url":"http://{a}/providers/tp/events"}}' {s}/sandbox/provider/push
  curl -s -X POST -d '{{"url":"http://{a}/providers/tp/events","event":"AUTHORIZED","authorizer_appid":"tt_merchant_a"}}' {s}/sandbox/provider/push
  curl -s -X POST -d '{{"url":"http://{a}/providers/tp/events","event":"AUTHORIZED","authorizer_appid":"tt_merchant_b"}}' {s}/sandbox/provider/push

  # each merchant app's calls carry its own authorizer_access_token (the x-authorizer-appid header is not forwarded)
  curl -s -H 'x-authorizer-appid: tt_merchant_a' http://{g}/api/tpapp/sandbox/authorizer_info
  curl -s -H 'x-authorizer-appid: tt_merchant_b' http://{g}/api/tpapp/sandbox/authorizer_info

  # merchant a's token expires: refreshed with its single-use refresh token (the new grant stored first), replayed
  curl -s -X POST -d '{{"authorizer_appid":"tt_merchant_a"}}' {s}/sandbox/provider/authorizer/expire
  curl -s -H 'x-authorizer-appid: tt_merchant_a' http://{g}/api/tpapp/sandbox/authorizer_info

  # merchant b withdraws (UNAUTHORIZED): its tokens are dropped, its calls get 401 authorizer_authorization_required
  curl -s -X POST -d '{{"url":"http://{a}/providers/tp/events","event":"UNAUTHORIZED","authorizer_appid":"tt_merchant_b"}}' {s}/sandbox/provider/push
  curl -s -H 'x-authorizer-appid: tt_merchant_b' http://{g}/api/tpapp/sandbox/authorizer_info

  # what the platform saw: two code exchanges, one refresh, no refresh token used twice ("refresh_reused":0)
  curl -s {s}/sandbox/provider

  # the mini-app walkthrough in docs/tokens.md (tt.login, tt.showDouyinOpenAuth, token in the body, an SDK) runs
  # against this demo after:
  export GW=http://{g} ADMIN=http://{a} SANDBOX={s}

  # what the gateway holds (never token values), and its metrics
  curl -s -H 'X-Admin-Key: {ADMIN_KEY}' http://{a}/admin/tokens
  curl -s http://{a}/metrics | grep '^douyin_gateway_token'

  # the status page: open http://{a}/status in a browser (any user name, password {ADMIN_KEY}): tokens,
  # each route's calls, errors and latency over the last 5 minutes, the last token events
  curl -s -u ops:{ADMIN_KEY} http://{a}/status

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
            drop(files);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start() -> Result<(sandbox::Sandbox, server::Running, Files), String> {
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
    let files = Files::create()?;
    let (listen, admin) = (bind().await?, bind().await?);
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    let text = config_text(&sb.url(), &files.secret.0, admin_addr);
    let (config, _) = Config::load_str(&text, "demo config").map_err(|e| e.to_string())?;
    let gw = server::start_on(config, None, listen, admin).await?;
    Ok((sb, gw, files))
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Every `{name}` of the template gets its value.
    #[test]
    fn the_built_in_config_is_filled() {
        let text = config_text(
            "http://127.0.0.1:1",
            std::path::Path::new("/tmp/demo.secret"),
            "127.0.0.1:2".parse().unwrap(),
        );
        assert!(!text.contains('{'), "a name left in src/demo/config.toml:\n{text}");
        for value in [
            "base_url = \"http://127.0.0.1:1\"",
            "client_key = \"awsandbox0000001\"",
            "client_secret_file = \"/tmp/demo.secret\"",
            "redirect_uri = \"http://127.0.0.1:2/oauth/callback\"",
            "signing_key_file = \"/tmp/demo-app-private.pem\"",
            "platform_public_key_file = \"/tmp/demo-platform-public.pem\"",
        ] {
            assert!(text.contains(value), "{value}");
        }
    }
}
