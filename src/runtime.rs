//! The compiled configuration the proxy reads per request; swapped whole on
//! SIGHUP, so a request sees one consistent version from start to end.

use crate::caller::Callers;
use crate::config::{Config, TokenKind};
use crate::inspect::CodeTable;
use crate::metrics::{Metrics, RouteMetrics, NO_ROUTE, REFUSED};
use crate::route::RouteTable;
use crate::secret::Secret;
use crate::token::cache::{Settings, Tuning};
use crate::token::issuer::{AppCreds, IssuerConfig, MiniAppIssuer};
use crate::token::TokenKey;
use crate::upstream::Base;
use std::sync::Arc;
use std::time::Duration;

/// One app as the proxy and the admin listener need it.
#[derive(Debug)]
pub struct App {
    /// Name.
    pub name: Arc<str>,
    /// Its client_token key, built once.
    pub client_key: TokenKey,
    /// Its mini-app token key, built once.
    pub mini_app_key: TokenKey,
    /// `optionalScope` for the authorize page (`scope,1,other,0`), empty when none.
    pub optional_scopes: String,
    /// The platform's client_key.
    pub platform_key: String,
    /// The gateway's authorize URL for it, when it has a redirect_uri.
    pub authorize_url: Option<String>,
    /// Where the platform sends the user back.
    pub redirect_uri: Option<String>,
    /// Scopes to request, comma-joined.
    pub scopes: String,
    /// The key webhook events are signed with.
    pub webhook_key: Secret,
    /// The client secret, for `token = "app_secret"` routes (set in a request body, never logged).
    pub client_secret: Secret,
}

/// Compiled config.
pub struct Runtime {
    /// The source.
    pub config: Config,
    /// Route rules.
    pub routes: RouteTable,
    /// Callers.
    pub callers: Callers,
    /// Apps, in config order (routes refer by index).
    pub apps: Vec<App>,
    /// The upstream (`[upstream]`): API calls by default, and every token endpoint.
    pub base: Base,
    /// Every upstream a route may forward to, in [`Config::all_upstreams`] order (`base` first).
    pub bases: Vec<Base>,
    /// Code tables.
    pub codes: CodeTable,
    /// Metric handles per route, by route index.
    pub route_metrics: Vec<RouteMetrics>,
    /// Metric handles of requests that matched no route.
    pub no_route_metrics: RouteMetrics,
    /// Metrics for requests refused before routing.
    pub refused_metrics: RouteMetrics,
}

/// Reads an app's client secret from where the config says.
fn read_secret(app: &str, env: &Option<String>, file: &Option<std::path::PathBuf>) -> Result<Option<Secret>, String> {
    let raw = if let Some(var) = env {
        std::env::var(var).map_err(|_| format!("app {app:?}: environment variable {var} is not set"))?
    } else if let Some(path) = file {
        std::fs::read_to_string(path).map_err(|e| format!("app {app:?}: cannot read {}: {e}", path.display()))?
    } else {
        return Ok(None);
    };
    Ok(Some(Secret::new(raw.trim())))
}

impl Runtime {
    /// Compiles a validated config; also returns the token settings it implies.
    pub fn build(config: Config, metrics: &Metrics) -> Result<(Runtime, Settings), String> {
        let base = Base::parse(&config.upstream.base_url)?;
        let codes = CodeTable::new(
            config.token_errors.refresh.as_deref(),
            config.token_errors.reauthorize.as_deref(),
        );
        let mut creds = std::collections::HashMap::new();
        let mut apps = Vec::new();
        let admin_url = match &config.server.public_admin_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!(
                "http://{}",
                config
                    .server
                    .public_listen
                    .as_deref()
                    .unwrap_or(&config.server.admin_listen)
            ),
        };
        for a in &config.apps {
            let name: Arc<str> = a.name.as_str().into();
            let secret = read_secret(&a.name, &a.client_secret_env, &a.client_secret_file)?
                .ok_or_else(|| format!("app {:?}: no client secret configured", a.name))?;
            let webhook_key =
                read_secret(&a.name, &a.webhook_secret_env, &a.webhook_secret_file)?.unwrap_or_else(|| secret.clone());
            creds.insert(
                Arc::clone(&name),
                AppCreds {
                    client_key: a.client_key.clone(),
                    client_secret: secret.clone(),
                    client_token_endpoint: a.client_token_endpoint.clone(),
                    mini_app: match &a.mini_app_upstream {
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
                    },
                },
            );
            let authorize_url = a.redirect_uri.as_ref().map(|_| {
                let q: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("app", &a.name)
                    .finish();
                format!("{admin_url}/oauth/authorize?{q}")
            });
            metrics.app_at_zero(&a.name, a.mini_app_upstream.is_some());
            apps.push(App {
                client_key: TokenKey::client(Arc::clone(&name)),
                mini_app_key: TokenKey::mini_app(Arc::clone(&name)),
                optional_scopes: a
                    .optional_scopes
                    .iter()
                    .map(|s| if s.contains(',') { s.clone() } else { format!("{s},1") })
                    .collect::<Vec<_>>()
                    .join(","),
                name,
                platform_key: a.client_key.clone(),
                authorize_url,
                redirect_uri: a.redirect_uri.clone(),
                scopes: a.scopes.join(","),
                webhook_key,
                client_secret: secret,
            });
        }
        let t = &config.tokens;
        let settings = Settings {
            issuer: IssuerConfig {
                base: base.clone(),
                apps: creds,
                codes: codes.clone(),
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
        };
        let bases = config
            .all_upstreams()
            .iter()
            .map(|u| Base::parse(&u.base_url))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = RouteTable::build(&config);
        let callers = Callers::build(&config);
        let route_metrics = routes.iter().map(|r| metrics.route(&r.name, callers.len())).collect();
        if routes.iter().any(|r| r.token != TokenKind::None) && apps.is_empty() {
            return Err("routes attach tokens but no [[apps]] is configured".into());
        }
        let runtime = Runtime {
            callers,
            routes,
            apps,
            base,
            bases,
            codes,
            route_metrics,
            no_route_metrics: metrics.route(NO_ROUTE, 0),
            refused_metrics: metrics.route(REFUSED, 0),
            config,
        };
        Ok((runtime, settings))
    }
}
