//! The engine's settings, built from the config by the engine itself: token endpoints and app
//! credentials for the issuer, and the tuning of `[tokens]`. Swapped whole on reload.

use super::issuer::{AppCreds, IssuerConfig, MiniAppIssuer, ProviderCreds};
use crate::config::Config;
use crate::inspect::CodeTable;
use crate::upstream::Base;
use std::sync::Arc;
use std::time::Duration;

/// Tuning, from `[tokens]`.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Share of the lifetime after which to refresh in the background.
    pub refresh_at_fraction: f64,
    /// First back-off delay.
    pub backoff_initial: Duration,
    /// Largest back-off delay.
    pub backoff_max: Duration,
    /// Timeout of one fetch.
    pub fetch_timeout: Duration,
    /// Renew a refresh_token once it expires within this.
    pub renew_before: Duration,
    /// Renewals the platform allows.
    pub max_renewals: u32,
    /// client_token fetches per app in any [`super::cache::BUDGET_WINDOW`].
    pub client_fetch_budget: u32,
    /// An app-level token failing to fetch this long is announced (`token.fetch_failing`).
    pub fetch_failing_after: Duration,
}

/// Everything swapped on reload.
pub struct Settings {
    /// Endpoints, apps, codes.
    pub issuer: IssuerConfig,
    /// How tokens are refreshed, backed off, budgeted and renewed (`[tokens]`).
    pub tuning: Tuning,
}

impl Settings {
    /// The settings `config` implies: each app's credentials (its client secret read from where
    /// the config says), the token endpoints on `[upstream]` (and each app's mini-app upstream),
    /// the error codes, the tuning.
    pub fn from_config(config: &Config) -> Result<Settings, String> {
        let base = Base::parse(&config.upstream.base_url)?;
        let codes = CodeTable::new(
            config.token_errors.refresh.as_deref(),
            config.token_errors.reauthorize.as_deref(),
        );
        let mut apps = std::collections::HashMap::new();
        for a in &config.apps {
            let secret = crate::secret::read(&a.name, &a.client_secret_env, &a.client_secret_file)?
                .ok_or_else(|| format!("app {:?}: no client secret configured", a.name))?;
            let mini_app = match &a.mini_app_upstream {
                None => None,
                Some(u) => {
                    let up = config
                        .upstreams
                        .iter()
                        .find(|x| &x.name == u)
                        .ok_or_else(|| format!("app {:?}: no [[upstreams]] named {u:?}", a.name))?;
                    Some(MiniAppIssuer {
                        base: Base::parse(&up.base_url)?,
                        client: crate::upstream::client(&up.settings())?,
                    })
                }
            };
            apps.insert(
                Arc::from(a.name.as_str()),
                AppCreds {
                    client_key: a.client_key.clone(),
                    client_secret: secret,
                    client_token_endpoint: a.client_token_endpoint.clone(),
                    mini_app,
                },
            );
        }
        let providers = providers(config)?;
        for p in &config.providers {
            let (Some(key), true) = (&p.client_key, p.api_version == crate::config::ProviderApiVersion::V2) else {
                continue;
            };
            let name = super::issuer::provider_client_app(&p.name);
            let secret = crate::secret::read(&name, &p.client_secret_env, &p.client_secret_file)?
                .ok_or_else(|| format!("provider {:?}: no client_secret configured for its client_key", p.name))?;
            let creds = AppCreds {
                client_key: key.trim().to_string(),
                client_secret: secret,
                client_token_endpoint: "/oauth/client_token/".into(),
                mini_app: None,
            };
            if apps.insert(Arc::from(name.as_str()), creds).is_some() {
                return Err(format!(
                    "an app is named {name:?}: that name is the provider {:?}'s",
                    p.name
                ));
            }
        }
        let t = &config.tokens;
        Ok(Settings {
            issuer: IssuerConfig {
                base,
                apps,
                codes,
                providers,
            },
            tuning: Tuning {
                refresh_at_fraction: t.refresh_at_fraction,
                backoff_initial: Duration::from_millis(t.backoff_initial_ms),
                backoff_max: Duration::from_millis(t.backoff_max_ms),
                fetch_timeout: Duration::from_millis(t.fetch_timeout_ms),
                renew_before: Duration::from_secs(t.renew_before_secs),
                max_renewals: t.max_renewals,
                client_fetch_budget: t.client_token_fetch_budget,
                fetch_failing_after: Duration::from_secs(t.fetch_failing_after_secs),
            },
        })
    }

    /// Whether `key`'s provider is configured with the same component_appid in both settings
    /// (a component token survives a reload then).
    pub(crate) fn same_provider(&self, other: &Settings, provider: &str) -> bool {
        matches!((self.issuer.providers.get(provider), other.issuer.providers.get(provider)),
            (Some(a), Some(b)) if a.component_appid == b.component_appid)
    }

    /// An app's client secret (for `token = "app_secret"` routes and the webhook's default key).
    pub fn client_secret(&self, app: &str) -> Option<&crate::secret::Secret> {
        self.issuer.apps.get(app).map(|a| &a.client_secret)
    }
}

/// Each `[[providers]]`'s credentials and the upstream that issues its tokens.
fn providers(config: &Config) -> Result<std::collections::HashMap<Arc<str>, ProviderCreds>, String> {
    let mut out = std::collections::HashMap::new();
    for p in &config.providers {
        let secret = crate::secret::read(&p.name, &p.component_appsecret_env, &p.component_appsecret_file)?
            .ok_or_else(|| format!("provider {:?}: no component_appsecret configured", p.name))?;
        let up = match &p.upstream {
            None => config.upstream.clone(),
            Some(u) => config
                .upstreams
                .iter()
                .find(|x| &x.name == u)
                .ok_or_else(|| format!("provider {:?}: no [[upstreams]] named {u:?}", p.name))?
                .settings(),
        };
        out.insert(
            Arc::from(p.name.as_str()),
            ProviderCreds {
                component_appid: p.component_appid.trim().to_string(),
                component_appsecret: secret,
                base: Base::parse(&up.base_url)?,
                client: crate::upstream::client(&up)?,
                v2: p.api_version == crate::config::ProviderApiVersion::V2,
                client_app: (p.api_version == crate::config::ProviderApiVersion::V2 && p.client_key.is_some())
                    .then(|| Arc::from(super::issuer::provider_client_app(&p.name).as_str())),
            },
        );
    }
    Ok(out)
}
