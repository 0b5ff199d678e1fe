//! `[[apps]]`: the Douyin apps, their secrets and how their users authorize.

use super::validate::{secret_present, Collector};
use super::Config;
use serde::Deserialize;
use std::path::PathBuf;

/// Where client tokens come from unless an app says otherwise.
pub const DEFAULT_CLIENT_TOKEN_ENDPOINT: &str = "/oauth/client_token/";

/// `[[apps]]`: a Douyin app, the tokens it is issued and how its users authorize.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Name routes refer to.
    pub name: String,
    /// The platform's client_key.
    pub client_key: String,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// File holding the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// OAuth redirect URI (https, no query).
    pub redirect_uri: Option<String>,
    /// OAuth scopes to request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes the user may decline on the authorize page (`optionalScope`): `"NAME"` (ticked by
    /// default) or `"NAME,0"` (not ticked).
    #[serde(default)]
    pub optional_scopes: Vec<String>,
    /// The `[[upstreams]]` entry that issues this app's mini-app server access_token
    /// (`token = "mini_app"` routes): developer.toutiao.com, or open-sandbox.douyin.com.
    pub mini_app_upstream: Option<String>,
    /// `/oauth/client_token/` or `/oauth/stable_client_token/`.
    #[serde(default = "default_client_token_endpoint")]
    pub client_token_endpoint: String,
    /// Environment variable holding the key webhook events are signed with
    /// (default: the client secret, as the platform signs them).
    pub webhook_secret_env: Option<String>,
    /// File holding that key.
    pub webhook_secret_file: Option<PathBuf>,
    /// Environment variable holding the app's RSA private key (PEM, PKCS#8 or PKCS#1; 2048 bits
    /// or more) that signs `sign = "byte_authorization"` calls.
    pub signing_key_env: Option<String>,
    /// File holding that key.
    pub signing_key_file: Option<PathBuf>,
    /// The `key_version` the platform's console shows for the app's public key.
    #[serde(default = "default_signing_key_version")]
    pub signing_key_version: String,
    /// Environment variable holding the platform's RSA public key for this app (PEM), which signs
    /// its answers to signed calls and its callbacks.
    pub platform_public_key_env: Option<String>,
    /// File holding that key.
    pub platform_public_key_file: Option<PathBuf>,
}

fn default_signing_key_version() -> String {
    "1".into()
}

fn default_client_token_endpoint() -> String {
    DEFAULT_CLIENT_TOKEN_ENDPOINT.into()
}

impl Config {
    /// Each `[[apps]]`: a unique name, a client_key, secrets that are there, an authorization
    /// callback the platform accepts, upstreams that exist, well-formed scopes and endpoint.
    pub(super) fn validate_apps(&self, c: &mut Collector<'_>) {
        for (i, app) in self.apps.iter().enumerate() {
            let i = Some(i);
            if app.name.is_empty() {
                c.err("apps", i, "name", "must not be empty");
            }
            if self.apps.iter().filter(|a| a.name == app.name).count() > 1 {
                c.err(
                    "apps",
                    i,
                    "name",
                    format!("app {:?} is defined more than once", app.name),
                );
            }
            if app.client_key.is_empty() {
                c.err("apps", i, "client_key", "must not be empty");
            }
            check_client_secret(c, i, app);
            check_redirect_uri(c, i, app);
            check_webhook_secret(c, i, app);
            check_rsa_keys(c, i, app);
            if let Some(u) = &app.mini_app_upstream {
                if !self.upstreams.iter().any(|x| &x.name == u) {
                    c.err(
                        "apps",
                        i,
                        "mini_app_upstream",
                        format!("no [[upstreams]] named {u:?} (the host of /api/apps/v2/token, such as developer.toutiao.com)"),
                    );
                }
            }
            check_optional_scopes(c, i, app);
            check_client_token_endpoint(c, i, app);
        }
    }
}

/// Exactly one of `client_secret_env` and `client_secret_file`, and it holds a secret.
fn check_client_secret(c: &mut Collector<'_>, i: Option<usize>, app: &AppConfig) {
    match (&app.client_secret_env, &app.client_secret_file) {
        (None, None) => c.err(
            "apps",
            i,
            "client_secret_env",
            "name where the secret comes from: client_secret_env or client_secret_file (never inline)",
        ),
        (Some(_), Some(_)) => c.err(
            "apps",
            i,
            "client_secret_file",
            "give client_secret_env or client_secret_file, not both",
        ),
        _ => {
            if let Err(e) = secret_present(&app.client_secret_env, &app.client_secret_file) {
                let key = if app.client_secret_env.is_some() {
                    "client_secret_env"
                } else {
                    "client_secret_file"
                };
                c.err("apps", i, key, e);
            }
        }
    }
}

/// `redirect_uri`: https (http only on loopback), no query, the gateway's callback path.
fn check_redirect_uri(c: &mut Collector<'_>, i: Option<usize>, app: &AppConfig) {
    if let Some(uri) = &app.redirect_uri {
        match uri.parse::<http::Uri>() {
            Ok(u) if u.authority().is_some() && u.query().is_none() => {
                let host = u.host().unwrap_or("").trim_matches(['[', ']']);
                let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                match u.scheme_str() {
                    Some("https") => {}
                    Some("http") if loopback => c.warn(
                        "apps",
                        i,
                        "redirect_uri",
                        "http is accepted for a loopback address (the sandbox); the platform itself requires https",
                    ),
                    _ => c.err(
                        "apps",
                        i,
                        "redirect_uri",
                        "must be an https URL (the platform requires it)",
                    ),
                }
                if !u.path().ends_with("/oauth/callback") {
                    c.warn(
                        "apps",
                        i,
                        "redirect_uri",
                        "the gateway answers the authorization callback at /oauth/callback on public_listen (or admin_listen)",
                    );
                }
            }
            _ => c.err(
                "apps",
                i,
                "redirect_uri",
                "must be an https URL with no query (the platform requires it)",
            ),
        }
    }
}

/// At most one of `webhook_secret_env` and `webhook_secret_file`, and it holds a secret.
fn check_webhook_secret(c: &mut Collector<'_>, i: Option<usize>, app: &AppConfig) {
    match (&app.webhook_secret_env, &app.webhook_secret_file) {
        (Some(_), Some(_)) => c.err(
            "apps",
            i,
            "webhook_secret_file",
            "give webhook_secret_env or webhook_secret_file, not both",
        ),
        (None, None) => {}
        (env, file) => {
            if let Err(e) = secret_present(env, file) {
                let key = if env.is_some() {
                    "webhook_secret_env"
                } else {
                    "webhook_secret_file"
                };
                c.err("apps", i, key, e);
            }
        }
    }
}

/// The app's signing key and the platform's public key: at most one source each, readable, RSA
/// of 2048 to 8192 bits; a key version that fits in a header.
fn check_rsa_keys(c: &mut Collector<'_>, i: Option<usize>, app: &AppConfig) {
    let names = ("signing_key_env", "signing_key_file");
    if let Some((key, pem)) = read_key(c, i, app, names, (&app.signing_key_env, &app.signing_key_file)) {
        if let Err(e) = crate::signature::SigningKey::from_pem(pem.expose()) {
            c.err("apps", i, key, e);
        }
    }
    let names = ("platform_public_key_env", "platform_public_key_file");
    let sources = (&app.platform_public_key_env, &app.platform_public_key_file);
    if let Some((key, pem)) = read_key(c, i, app, names, sources) {
        if let Err(e) = crate::signature::VerifyingKey::from_pem(pem.expose()) {
            c.err("apps", i, key, e);
        }
    }
    let v = &app.signing_key_version;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        c.err(
            "apps",
            i,
            "signing_key_version",
            "must be the key version the platform's console shows, such as \"1\"",
        );
    }
}

/// A key's PEM from its `*_env` or `*_file` source, with the name of the key that gave it;
/// `None` (and the problem reported) when both or an unreadable one is given.
fn read_key<'a>(
    c: &mut Collector<'_>,
    i: Option<usize>,
    app: &AppConfig,
    (env_key, file_key): (&'a str, &'a str),
    (env, file): (&Option<String>, &Option<PathBuf>),
) -> Option<(&'a str, crate::secret::Secret)> {
    if env.is_some() && file.is_some() {
        c.err("apps", i, file_key, format!("give {env_key} or {file_key}, not both"));
        return None;
    }
    let key = if env.is_some() { env_key } else { file_key };
    match crate::secret::read(&app.name, env, file) {
        Err(e) => {
            c.err("apps", i, key, e);
            None
        }
        Ok(pem) => pem.map(|pem| (key, pem)),
    }
}

/// `optional_scopes`: `NAME` or `NAME,0`/`NAME,1`, no blanks.
fn check_optional_scopes(c: &mut Collector<'_>, i: Option<usize>, app: &AppConfig) {
    for s in &app.optional_scopes {
        let ok = match s.split_once(',') {
            None => !s.is_empty(),
            Some((name, tick)) => !name.is_empty() && matches!(tick, "0" | "1"),
        };
        if !ok || s.contains(char::is_whitespace) {
            c.err(
                "apps",
                i,
                "optional_scopes",
                format!("{s:?}: give a scope name, ticked by default, or \"NAME,0\" for one not ticked"),
            );
        }
    }
}

/// `client_token_endpoint`: a path; a warning unless it is one of the platform's two.
fn check_client_token_endpoint(c: &mut Collector<'_>, i: Option<usize>, app: &AppConfig) {
    if !app.client_token_endpoint.starts_with('/') {
        c.err(
            "apps",
            i,
            "client_token_endpoint",
            "must be a path such as /oauth/client_token/",
        );
    } else if !matches!(
        app.client_token_endpoint.as_str(),
        "/oauth/client_token/" | "/oauth/stable_client_token/"
    ) {
        c.warn(
            "apps",
            i,
            "client_token_endpoint",
            "is neither /oauth/client_token/ nor /oauth/stable_client_token/",
        );
    }
}
