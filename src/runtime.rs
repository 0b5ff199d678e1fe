//! The compiled configuration the proxy reads per request; swapped whole on
//! SIGHUP, so a request sees one consistent version from start to end.

use crate::caller::Callers;
use crate::config::{Config, TokenKind};
use crate::inspect::CodeTable;
use crate::metrics::{Metrics, RouteKind, RouteMetrics, EXCHANGE_CODE, NO_ROUTE, REFUSED};
use crate::route::RouteTable;
use crate::secret::Secret;
use crate::token::{Settings, TokenKey};
use crate::upstream::Base;
use std::sync::Arc;

/// One app as the proxy and the admin listener need it.
#[derive(Debug)]
pub struct App {
    /// Its name in the config (and in routes, metrics, the store).
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
    /// The app's RSA private key, for `sign = "byte_authorization"` routes (never printed).
    pub signing_key: Option<Arc<crate::signature::SigningKey>>,
    /// The `key_version` sent with its signatures.
    pub signing_key_version: Arc<str>,
    /// The platform's public key for this app: checks signed answers and callbacks.
    pub platform_public_key: Option<crate::signature::VerifyingKey>,
    /// Its `douyin_gateway_signatures_total` handles.
    pub signatures: crate::metrics::SignatureCounters,
}

/// A service provider (`[[providers]]`) as its event URL needs it.
#[derive(Debug)]
pub struct Provider {
    /// Its name (`/providers/{name}/events`).
    pub name: Arc<str>,
    /// The appid every event it receives must end with.
    pub component_appid: String,
    /// The message verification token `MsgSignature` is made with.
    pub message_token: Secret,
    /// The message encryption key `Encrypt` is opened with.
    pub message_key: crate::provider_crypto::MessageKey,
}

impl Provider {
    fn compile(p: &crate::config::ProviderConfig) -> Result<Provider, String> {
        let what = format!("provider {:?}", p.name);
        let need = |s: Option<Secret>, key: &str| s.ok_or_else(|| format!("{what}: no {key}"));
        let message_token = need(
            crate::secret::read(&p.name, &p.message_token_env, &p.message_token_file)?,
            "message_token",
        )?;
        let key = need(
            crate::secret::read(&p.name, &p.message_key_env, &p.message_key_file)?,
            "message_key",
        )?;
        let message_key =
            crate::provider_crypto::MessageKey::parse(key.expose()).map_err(|e| format!("{what}: message_key: {e}"))?;
        Ok(Provider {
            name: p.name.as_str().into(),
            component_appid: p.component_appid.trim().to_string(),
            message_token,
            message_key,
        })
    }
}

/// Compiled config.
pub struct Runtime {
    /// The source.
    pub config: Config,
    /// Route rules.
    pub routes: RouteTable,
    /// Who may call, and which routes each may use.
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
    /// `[[callbacks]]`, in config order.
    pub callbacks: Vec<crate::relay::Callback>,
    /// `[[webhook_forward]]`, in config order.
    pub webhook_forwards: Vec<crate::relay::Forward>,
    /// Metrics of `POST /_gateway/exchange_code`, answered by the gateway itself.
    pub exchange_metrics: RouteMetrics,
    /// `[[providers]]`, in config order.
    pub providers: Vec<Provider>,
}

impl Runtime {
    /// Compiles a validated config, with the token engine's settings built from it (the apps'
    /// secrets as the engine read them).
    pub fn build(config: Config, settings: &Settings, metrics: &Metrics) -> Result<Runtime, String> {
        let base = Base::parse(&config.upstream.base_url)?;
        let codes = settings.issuer.codes.clone();
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
            let secret = settings
                .client_secret(&a.name)
                .cloned()
                .ok_or_else(|| format!("app {:?}: no client secret configured", a.name))?;
            let webhook_key = crate::secret::read(&a.name, &a.webhook_secret_env, &a.webhook_secret_file)?
                .unwrap_or_else(|| secret.clone());
            let authorize_url = a.redirect_uri.as_ref().map(|_| {
                let q: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("app", &a.name)
                    .finish();
                format!("{admin_url}/oauth/authorize?{q}")
            });
            let signing_key = crate::secret::read(&a.name, &a.signing_key_env, &a.signing_key_file)?
                .map(|pem| crate::signature::SigningKey::from_pem(pem.expose()).map(Arc::new))
                .transpose()
                .map_err(|e| format!("app {:?}: signing key: {e}", a.name))?;
            let platform_public_key =
                crate::secret::read(&a.name, &a.platform_public_key_env, &a.platform_public_key_file)?
                    .map(|pem| crate::signature::VerifyingKey::from_pem(pem.expose()))
                    .transpose()
                    .map_err(|e| format!("app {:?}: platform public key: {e}", a.name))?;
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
                signing_key,
                signing_key_version: a.signing_key_version.as_str().into(),
                platform_public_key,
                signatures: metrics.signatures(&a.name),
            });
        }
        let bases = config
            .all_upstreams()
            .iter()
            .map(|u| Base::parse(&u.base_url))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = RouteTable::build(&config);
        let callers = Callers::build(&config);
        let route_metrics = routes
            .iter()
            .map(|r| metrics.route(&r.name, route_kind(r.token), Some(200)))
            .collect();
        if routes.iter().any(|r| r.token != TokenKind::None) && apps.is_empty() {
            return Err("routes attach tokens but no [[apps]] is configured".into());
        }
        let (callbacks, webhook_forwards) = crate::relay::compile(&config)?;
        metrics.relay_at_zero(
            callbacks.iter().map(|c| &*c.name),
            webhook_forwards.iter().map(|f| &*f.target.label),
        );
        let providers: Vec<Provider> = config
            .providers
            .iter()
            .map(Provider::compile)
            .collect::<Result<_, _>>()?;
        for p in &providers {
            metrics.provider_at_zero(&p.name);
        }
        let runtime = Runtime {
            providers,
            callbacks,
            webhook_forwards,
            callers,
            routes,
            apps,
            base,
            bases,
            codes,
            route_metrics,
            no_route_metrics: metrics.route(NO_ROUTE, RouteKind::Local, Some(404)),
            refused_metrics: metrics.route(REFUSED, RouteKind::Local, None),
            exchange_metrics: metrics.route(EXCHANGE_CODE, RouteKind::Local, Some(200)),
            config,
        };
        Ok(runtime)
    }
}

/// What a route's metrics can count, by the token it attaches.
fn route_kind(token: TokenKind) -> RouteKind {
    use crate::vocab::TokenClass;
    match token {
        TokenKind::Client => RouteKind::Token(TokenClass::Client),
        TokenKind::User => RouteKind::Token(TokenClass::User),
        TokenKind::Biz => RouteKind::Token(TokenClass::Biz),
        TokenKind::MiniApp => RouteKind::Token(TokenClass::MiniApp),
        TokenKind::Component => RouteKind::Token(TokenClass::Component),
        TokenKind::Authorizer => RouteKind::Token(TokenClass::Authorizer),
        TokenKind::None | TokenKind::AppSecret => RouteKind::Forwarded,
        TokenKind::Placeholder => RouteKind::Local,
    }
}
