//! `[[providers]]`: service providers (the platform's third-party platform, 第三方平台) whose
//! authorization event URL the gateway serves (`POST /providers/{name}/events`) and whose
//! component_access_token it keeps.

use super::validate::{secret_present, Collector};
use super::Config;
use serde::Deserialize;
use std::path::PathBuf;

/// Which generation of the third-party platform's token APIs a provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderApiVersion {
    /// `open.douyin.com/api/tpapp/v2/…`, with the provider's own client_token.
    #[default]
    V2,
    /// `open.microapp.bytedance.com/openapi/v1/…`.
    V1,
}

/// `[[providers]]`: a service provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Its name: in its event URL (`/providers/{name}/events`), routes' `provider`, metrics.
    pub name: String,
    /// The third-party app's appid (`component_appid`).
    pub component_appid: String,
    /// Environment variable holding the component appsecret.
    pub component_appsecret_env: Option<String>,
    /// File holding the component appsecret.
    pub component_appsecret_file: Option<PathBuf>,
    /// Environment variable holding the message verification token (消息校验 Token).
    pub message_token_env: Option<String>,
    /// File holding the message verification token.
    pub message_token_file: Option<PathBuf>,
    /// Environment variable holding the 43-character message encryption key.
    pub message_key_env: Option<String>,
    /// File holding the message encryption key.
    pub message_key_file: Option<PathBuf>,
    /// `"v2"` (default) or `"v1"`.
    #[serde(default)]
    pub api_version: ProviderApiVersion,
    /// The `[[upstreams]]` entry that issues its tokens (default: `[upstream]`).
    pub upstream: Option<String>,
    /// V2: the provider's own client_key (its client_token signs the V2 token calls).
    pub client_key: Option<String>,
    /// V2: environment variable holding that client_key's secret.
    pub client_secret_env: Option<String>,
    /// V2: file holding that client_key's secret.
    pub client_secret_file: Option<PathBuf>,
}

impl Config {
    /// Each `[[providers]]`: a unique name that fits a path segment, an appid, each secret from
    /// exactly one source and present, a message key that decodes, an upstream that exists, and
    /// for V2 the provider's client_key with its secret.
    pub(super) fn validate_providers(&self, c: &mut Collector<'_>) {
        for (i, p) in self.providers.iter().enumerate() {
            let idx = Some(i);
            if p.name.is_empty() || !p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
                c.err(
                    "providers",
                    idx,
                    "name",
                    "give the provider a name of letters, digits, - and _ (its event URL is /providers/NAME/events)",
                );
            } else if self.providers[..i].iter().any(|o| o.name == p.name) {
                c.err(
                    "providers",
                    idx,
                    "name",
                    format!("another [[providers]] is named {:?}", p.name),
                );
            }
            if p.component_appid.trim().is_empty() {
                c.err(
                    "providers",
                    idx,
                    "component_appid",
                    "give the third-party app's appid (the console's 开发配置 → APPID)",
                );
            }
            one_secret(
                c,
                idx,
                "component_appsecret",
                &p.component_appsecret_env,
                &p.component_appsecret_file,
            );
            one_secret(c, idx, "message_token", &p.message_token_env, &p.message_token_file);
            if one_secret(c, idx, "message_key", &p.message_key_env, &p.message_key_file) {
                check_message_key(c, idx, p);
            }
            if let Some(u) = &p.upstream {
                if !self.upstreams.iter().any(|x| &x.name == u) {
                    c.err("providers", idx, "upstream", format!("no [[upstreams]] named {u:?}"));
                }
            }
            check_client(c, idx, p);
        }
    }
}

/// Exactly one of `{base}_env` and `{base}_file`, holding something; whether it does.
fn one_secret(
    c: &mut Collector<'_>,
    i: Option<usize>,
    base: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> bool {
    let (env_key, file_key) = (format!("{base}_env"), format!("{base}_file"));
    match (env, file) {
        (None, None) => {
            c.err(
                "providers",
                i,
                &env_key,
                format!("name where the {base} comes from: {env_key} or {file_key} (never inline)"),
            );
            false
        }
        (Some(_), Some(_)) => {
            c.err(
                "providers",
                i,
                &file_key,
                format!("give {env_key} or {file_key}, not both"),
            );
            false
        }
        _ => match secret_present(env, file) {
            Ok(()) => true,
            Err(e) => {
                let key = if env.is_some() { env_key } else { file_key };
                c.err("providers", i, &key, e);
                false
            }
        },
    }
}

/// The message key decodes as the console's 43 characters of base64 (its value never printed).
fn check_message_key(c: &mut Collector<'_>, i: Option<usize>, p: &ProviderConfig) {
    let key = if p.message_key_env.is_some() {
        "message_key_env"
    } else {
        "message_key_file"
    };
    match crate::secret::read(&p.name, &p.message_key_env, &p.message_key_file) {
        Ok(Some(k)) => {
            if let Err(e) = crate::provider_crypto::MessageKey::parse(k.expose()) {
                c.err(
                    "providers",
                    i,
                    key,
                    format!("{e} (it holds {} characters)", k.expose().len()),
                );
            }
        }
        Ok(None) => {}
        Err(e) => c.err("providers", i, key, e),
    }
}

/// `client_key` and its secret (`client_secret_env` or `_file`) come together; V2 needs them (for
/// authorizer tokens).
fn check_client(c: &mut Collector<'_>, i: Option<usize>, p: &ProviderConfig) {
    let secret = p
        .client_secret_env
        .as_ref()
        .map(|_| ())
        .or(p.client_secret_file.as_ref().map(|_| ()));
    match (&p.client_key, &secret) {
        (Some(k), _) if k.trim().is_empty() => c.err("providers", i, "client_key", "must not be empty"),
        (Some(_), None) => c.err(
            "providers",
            i,
            "client_secret_env",
            "client_key needs its secret: name the environment variable in client_secret_env, or the file in \
             client_secret_file",
        ),
        (None, Some(_)) => c.err(
            "providers",
            i,
            "client_key",
            "client_secret_env/client_secret_file needs the client_key it belongs to",
        ),
        (Some(_), Some(_)) => {
            if let Err(e) = secret_present(&p.client_secret_env, &p.client_secret_file) {
                c.err("providers", i, "client_secret_env", e);
            }
        }
        (None, None) if p.api_version == ProviderApiVersion::V2 => c.warn(
            "providers",
            i,
            "client_key",
            "a V2 provider's authorizer tokens are fetched with its own client_token: set client_key and \
             client_secret_env (the component token and the event URL work without them)",
        ),
        (None, None) => {}
    }
}

/// A route's provider keys: `token = "component"` and `"authorizer"` name a `[[providers]]`
/// entry (`provider`), other routes none; `authorizer` (where the merchant app's appid is) only on
/// `"authorizer"` routes, as `header:NAME` or `query:NAME`. Whether the route is a provider's.
pub(super) fn check_provider_route(
    config: &Config,
    c: &mut Collector<'_>,
    idx: Option<usize>,
    r: &super::RouteConfig,
) -> bool {
    use super::routes::OpenIdAt;
    use super::TokenKind;
    let provided = matches!(r.token, TokenKind::Component | TokenKind::Authorizer);
    match &r.provider {
        None if provided => c.err(
            "routes",
            idx,
            "provider",
            format!(
                "token = {} needs provider = \"NAME\" (a [[providers]] entry)",
                super::words::as_written(&r.token)
            ),
        ),
        Some(p) if provided && !config.providers.iter().any(|x| &x.name == p) => {
            c.err("routes", idx, "provider", format!("no [[providers]] named {p:?}"))
        }
        Some(_) if !provided => c.err(
            "routes",
            idx,
            "provider",
            "provider is for token = \"component\" and \"authorizer\" routes",
        ),
        _ => {}
    }
    match (&r.authorizer, r.token) {
        (Some(a), TokenKind::Authorizer) if matches!(OpenIdAt::parse(a), None | Some(OpenIdAt::Form(_))) => c.err(
            "routes",
            idx,
            "authorizer",
            "must be \"header:NAME\" or \"query:NAME\" (where the merchant app's appid is)",
        ),
        (Some(_), t) if t != TokenKind::Authorizer => c.err(
            "routes",
            idx,
            "authorizer",
            "authorizer is for token = \"authorizer\" routes",
        ),
        _ => {}
    }
    provided
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Severity};

    /// What loading `text` reports: its warnings, or the problems that refused it.
    fn found(text: &str) -> Vec<crate::config::Problem> {
        match Config::load_str(text, "t") {
            Ok((_, warnings)) => warnings,
            Err(e) => e.problems,
        }
    }

    /// The problems `check` finds in a config of one provider with these lines, as `key: message`
    /// (`W ` before a warning).
    fn problems(lines: &str) -> Vec<String> {
        std::env::set_var("DG_UNIT_TP_SECRET", "s");
        std::env::set_var("DG_UNIT_TP_KEY", "CAoJaFLeTHIV/P5ehOAcKXPehZhj0ZIxRZDu3diVPds");
        std::env::set_var("DG_UNIT_TP_SHORT_KEY", "CAoJaFLeTHIV");
        let text = format!(
            "[store]\nkind = \"memory\"\n[[upstreams]]\nname = \"microapp\"\nbase_url = \"https://open.microapp.bytedance.com\"\n\
             [[providers]]\n{lines}\n"
        );
        found(&text)
            .into_iter()
            .filter(|p| p.key.starts_with("providers"))
            .map(|p| {
                let w = if p.severity == Severity::Warning { "W " } else { "" };
                format!("{w}{}: {}", p.key, p.message)
            })
            .collect()
    }

    const GOOD: &str = "name = \"tp\"\ncomponent_appid = \"tt1\"\ncomponent_appsecret_env = \"DG_UNIT_TP_SECRET\"\n\
                        message_token_env = \"DG_UNIT_TP_SECRET\"\nmessage_key_env = \"DG_UNIT_TP_KEY\"\n";

    #[test]
    fn a_complete_provider_passes_and_v2_without_its_client_is_a_warning() {
        assert_eq!(
            problems(&format!("{GOOD}api_version = \"v1\"\nupstream = \"microapp\"")),
            Vec::<String>::new()
        );
        let p = problems(GOOD);
        assert!(p.len() == 1 && p[0].starts_with("W providers[0].client_key"), "{p:?}");
        let with_client = format!("{GOOD}client_key = \"aw1\"\nclient_secret_env = \"DG_UNIT_TP_SECRET\"");
        assert_eq!(problems(&with_client), Vec::<String>::new());
    }

    #[test]
    fn every_key_is_checked() {
        let cases = [
            ("name = \"t p\"", "providers[0].name"),
            ("component_appid = \" \"", "providers[0].component_appid"),
            (
                "message_key_env = \"DG_UNIT_TP_SHORT_KEY\"",
                "providers[0].message_key_env",
            ),
            (
                "message_token_env = \"DG_UNIT_TP_UNSET\"",
                "providers[0].message_token_env",
            ),
            ("upstream = \"nowhere\"", "providers[0].upstream"),
            ("client_key = \"aw1\"", "providers[0].client_secret_env"),
            ("api_version = \"v3\"", "providers[0].api_version"),
        ];
        for (change, key) in cases {
            let field = change.split(" = ").next().unwrap();
            let lines: String = GOOD
                .lines()
                .filter(|l| !l.starts_with(&format!("{field} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            let p = problems(
                &format!("{lines}{change}\napi_version = \"v1\"")
                    .replace("api_version = \"v3\"\napi_version = \"v1\"", "api_version = \"v3\""),
            );
            assert!(p.iter().any(|m| m.starts_with(&format!("{key}:"))), "{change}: {p:?}");
            assert!(
                !p.iter().any(|m| m.contains("CAoJaFLe")),
                "a key value in a message: {p:?}"
            );
        }
        let both = format!("{GOOD}message_key_file = \"/nonexistent\"");
        assert!(problems(&both)
            .iter()
            .any(|m| m.starts_with("providers[0].message_key_file:")));
        let none: String = GOOD
            .lines()
            .filter(|l| !l.starts_with("message_token"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(problems(&format!("{none}api_version = \"v1\""))
            .iter()
            .any(|m| m.starts_with("providers[0].message_token_env:")));
        let twice = format!("{GOOD}api_version = \"v1\"\n[[providers]]\n{GOOD}api_version = \"v1\"");
        assert!(problems(&twice).iter().any(|m| m.starts_with("providers[1].name:")));
    }

    #[test]
    fn a_component_route_names_a_provider() {
        let route = |extra: &str| {
            let text = format!(
                "[store]\nkind = \"memory\"\n[[providers]]\n{GOOD}api_version = \"v1\"\n[[routes]]\nname = \"c\"\npath = \"/c\"\n\
                 token = \"component\"\n{extra}"
            );
            match Config::load_str(&text, "t") {
                Ok((_, w)) => w
                    .into_iter()
                    .map(|p| p.key)
                    .filter(|k| k.starts_with("routes[0].provider"))
                    .collect(),
                Err(e) => e
                    .problems
                    .into_iter()
                    .map(|p| p.key)
                    .filter(|k| k.starts_with("routes"))
                    .collect::<Vec<_>>(),
            }
        };
        assert_eq!(route("provider = \"tp\"\n"), Vec::<String>::new());
        assert_eq!(route(""), vec!["routes[0].provider".to_string()]);
        assert_eq!(route("provider = \"nobody\"\n"), vec!["routes[0].provider".to_string()]);
    }

    /// The route problems of a config with the provider `tp` and this one route (`W ` before a
    /// warning).
    fn route_problems(route: &str) -> Vec<String> {
        std::env::set_var("DG_UNIT_TP_SECRET", "s");
        std::env::set_var("DG_UNIT_TP_KEY", "CAoJaFLeTHIV/P5ehOAcKXPehZhj0ZIxRZDu3diVPds");
        let text = format!(
            "[store]\nkind = \"memory\"\n[[apps]]\nname = \"main\"\nclient_key = \"aw1\"\n\
             client_secret_env = \"DG_UNIT_TP_SECRET\"\n[[providers]]\n{GOOD}api_version = \"v1\"\n\
             [[routes]]\nname = \"r\"\npath = \"/x\"\n{route}\n"
        );
        found(&text)
            .into_iter()
            .filter(|p| p.key.starts_with("routes"))
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect()
    }

    #[test]
    fn provider_routes_name_their_provider_and_where_the_merchant_appid_is() {
        for ok in [
            "token = \"authorizer\"\nprovider = \"tp\"",
            "token = \"authorizer\"\nprovider = \"tp\"\nauthorizer = \"query:appid\"",
            "token = \"authorizer\"\nprovider = \"tp\"\nauthorizer = \"header:x-merchant\"",
            "token = \"component\"\nprovider = \"tp\"",
        ] {
            assert_eq!(route_problems(ok), Vec::<String>::new(), "{ok}");
        }
        for (bad, key) in [
            ("token = \"authorizer\"", "routes[0].provider"),
            ("token = \"authorizer\"\nprovider = \"nobody\"", "routes[0].provider"),
            ("token = \"client\"\nprovider = \"tp\"", "routes[0].provider"),
            (
                "token = \"authorizer\"\nprovider = \"tp\"\nauthorizer = \"form:appid\"",
                "routes[0].authorizer",
            ),
            (
                "token = \"authorizer\"\nprovider = \"tp\"\nauthorizer = \"appid\"",
                "routes[0].authorizer",
            ),
            (
                "token = \"client\"\nauthorizer = \"query:appid\"",
                "routes[0].authorizer",
            ),
        ] {
            let p = route_problems(bad);
            assert!(p.len() == 1 && p[0].starts_with(key), "{bad}: {p:?}");
        }
    }
}
