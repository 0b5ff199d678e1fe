//! The admin API of service providers and their merchant apps, behind the admin key like the rest
//! of `/admin/*` ([`super::api`] checks it): what each provider holds, and per merchant app
//! list, import (migrating from a home-made token server), forget and refresh now. Never a token
//! value, in an answer or a log line.
//!
//! | call | does |
//! |---|---|
//! | `GET /admin/providers` | each provider: its ticket's age, its component token, merchant apps by state |
//! | `GET /admin/providers/{name}/authorizers` | each merchant app: state, expiry, refresh token's age, permissions |
//! | `PUT /admin/providers/{name}/authorizers/{appid}` | import a refresh token: the next call refreshes with it |
//! | `DELETE /admin/providers/{name}/authorizers/{appid}` | forget the merchant app's token and grant |
//! | `POST /admin/providers/{name}/authorizers/{appid}/refresh` | a new authorizer token now |

use super::body::read_body;
use super::status::providers::row;
use super::{json, Answer, Ctx};
use crate::config::ProviderApiVersion;
use crate::error::GatewayError;
use crate::inspect::Lenient;
use crate::secret::Secret;
use crate::state::Shared;
use crate::token::upkeep::TokenState;
use crate::token::{unix_now, GrantState, ImportedGrant, Need, TokenInfo, TokenKey};
use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;

/// Handles `/admin/providers` and what is under it; `rest`: the path's segments after
/// `providers`, each percent-decoded.
pub(super) async fn handle(cx: Ctx<'_>, method: &Method, rest: &[String], body: Incoming) -> Answer {
    let shared = cx.shared;
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    if let (&Method::GET, []) = (method, rest.as_slice()) {
        return Ok(providers(shared).await);
    }
    let Some((name, rest)) = rest.split_first() else {
        return not_found(method);
    };
    let provider = provider(shared, name)?;
    match (method, rest) {
        (&Method::GET, ["authorizers"]) => list(shared, &provider).await,
        (&Method::PUT, ["authorizers", appid]) => {
            let appid = appid_of(appid)?;
            let body = read_body(cx, body).await?;
            import(shared, &provider, appid, &body).await
        }
        (&Method::DELETE, ["authorizers", appid]) => forget(shared, &provider, appid_of(appid)?).await,
        (&Method::POST, ["authorizers", appid, "refresh"]) => refresh(shared, &provider, appid_of(appid)?).await,
        _ => not_found(method),
    }
}

fn not_found(method: &Method) -> Answer {
    Err(GatewayError::NotFound(format!(
        "no admin endpoint {method} under /admin/providers: GET /admin/providers, \
         GET /admin/providers/NAME/authorizers, PUT or DELETE /admin/providers/NAME/authorizers/APPID, \
         POST /admin/providers/NAME/authorizers/APPID/refresh"
    )))
}

/// The config's copy of the name of the `[[providers]]` named `name`: 404 when there is none.
fn provider(shared: &Shared, name: &str) -> Result<Arc<str>, GatewayError> {
    match shared.runtime.load().providers.iter().find(|p| *p.name == *name) {
        Some(p) => Ok(Arc::clone(&p.name)),
        None => Err(GatewayError::NotFound(format!("no [[providers]] named {name:?}"))),
    }
}

fn appid_of(appid: &str) -> Result<&str, GatewayError> {
    if crate::vocab::valid_appid(appid) {
        Ok(appid)
    } else {
        Err(GatewayError::BadRequest(
            "an authorizer_appid is 1 to 64 letters, digits, _ and -".into(),
        ))
    }
}

/// `GET /admin/providers`: what the status page shows of each ([`row`]), and its config.
async fn providers(shared: &Shared) -> http::Response<crate::body::ProxyBody> {
    let census = shared.tokens.census();
    let now = unix_now();
    let rt = shared.runtime.load_full();
    let mut out = Vec::with_capacity(rt.config.providers.len());
    for p in &rt.config.providers {
        let name: Arc<str> = Arc::from(p.name.as_str());
        let row = row(shared, &name, &census).await;
        let ticket = match row.ticket_unix {
            Ok(Some(t)) => json!({"received_unix": t, "age_s": now.saturating_sub(t)}),
            Ok(None) => Value::Null,
            Err(e) => json!({ "error": e }),
        };
        let component = row.component.map_or(
            Value::Null,
            |(state, expires_unix)| json!({"state": state, "expires_unix": expires_unix}),
        );
        let counts: serde_json::Map<String, Value> = TokenState::ALL
            .into_iter()
            .zip(row.counts)
            .map(|(s, n)| (s.as_str().to_string(), n.into()))
            .collect();
        out.push(json!({
            "name": p.name,
            "component_appid": p.component_appid.trim(),
            "api_version": match p.api_version {
                ProviderApiVersion::V1 => "v1",
                ProviderApiVersion::V2 => "v2",
            },
            "ticket": ticket,
            "component_token": component,
            "authorizers": counts,
        }));
    }
    json(StatusCode::OK, json!({ "providers": out }))
}

/// A merchant app as the admin API shows it: never a token.
fn authorizer_json(i: &TokenInfo, now: u64) -> Value {
    let g = i.grant.as_deref();
    let mut v = json!({
        "authorizer_appid": i.key.subject(),
        "state": i.state,
        "expires_unix": i.expires_unix,
        "refresh_expires_unix": g.map(|g| g.refresh_expires_unix),
        // Issued a lifetime before it expires.
        "refresh_token_age_s": g.map(|g| {
            now.saturating_sub(g.refresh_expires_unix.saturating_sub(u64::from(g.refresh_lifetime_secs)))
        }),
        "permissions": g.map_or_else(Vec::new, |g| g.scope.split(',').filter(|p| !p.is_empty()).collect()),
        "renewals": g.map(|g| g.renewals),
    });
    if let Some(GrantState::Dead(why)) = g.map(|g| &g.state) {
        v["reason"] = why.as_str().into();
    }
    v
}

/// `GET /admin/providers/{name}/authorizers`.
async fn list(shared: &Shared, name: &Arc<str>) -> Answer {
    let held = shared
        .tokens
        .authorizers(name)
        .await
        .map_err(|e| GatewayError::StoreUnavailable(e.to_string()))?;
    let now = unix_now();
    let list: Vec<Value> = held.iter().map(|i| authorizer_json(i, now)).collect();
    Ok(json(StatusCode::OK, json!({"provider": &**name, "authorizers": list})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Import {
    authorizer_refresh_token: String,
    refresh_expires_in: Option<Lenient>,
    permissions: Option<Vec<Value>>,
}

/// `PUT /admin/providers/{name}/authorizers/{appid}`.
async fn import(shared: &Shared, name: &Arc<str>, appid: &str, body: &[u8]) -> Answer {
    let bad = |m: String| Err(GatewayError::BadRequest(m));
    let i: Import = serde_json::from_slice(body).map_err(|e| {
        GatewayError::BadRequest(format!(
            "body must be {{\"authorizer_refresh_token\",\"refresh_expires_in\"?,\"permissions\"?}}: {e}"
        ))
    })?;
    if i.authorizer_refresh_token.is_empty() {
        return bad("authorizer_refresh_token must not be empty".into());
    }
    let refresh_expires_in = match i.refresh_expires_in {
        None => None,
        Some(Lenient(Some(n))) if n > 0 => Some(n as u64),
        Some(_) => return bad("refresh_expires_in must be a positive number of seconds".into()),
    };
    let mut permissions = Vec::new();
    for p in i.permissions.unwrap_or_default() {
        let p = match p {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => return bad(format!("permissions are strings or numbers, not {other}")),
        };
        if p.is_empty() || p.contains(',') {
            return bad(format!("a permission may be neither empty nor contain a comma: {p:?}"));
        }
        permissions.push(p);
    }
    let grant = ImportedGrant {
        refresh_token: Secret::new(i.authorizer_refresh_token),
        refresh_expires_in,
        permissions,
    };
    match shared.tokens.import_authorizer(name, appid, grant).await {
        Ok(t) => {
            tracing::info!(target: "audit", action = "import", provider = %name, authorizer_appid = appid,
                "admin imported a merchant app's refresh token");
            let refresh_expires_unix = t.grant.as_deref().map(|g| g.refresh_expires_unix);
            Ok(json(
                StatusCode::OK,
                json!({"stored": true, "provider": &**name, "authorizer_appid": appid,
                       "refresh_expires_unix": refresh_expires_unix}),
            ))
        }
        Err(e @ crate::token::TokenError::Network(_)) => Err(GatewayError::StoreUnavailable(e.to_string())),
        Err(e) => bad(e.to_string()),
    }
}

/// `DELETE /admin/providers/{name}/authorizers/{appid}`.
async fn forget(shared: &Shared, name: &Arc<str>, appid: &str) -> Answer {
    match shared.tokens.remove_authorizer(name, appid).await {
        Ok(false) => Err(GatewayError::NotFound(format!(
            "provider {name:?} holds nothing for merchant app {appid:?}"
        ))),
        Ok(true) => {
            tracing::info!(target: "audit", action = "delete", provider = %name, authorizer_appid = appid,
                "admin deleted a merchant app's token and grant");
            Ok(json(
                StatusCode::OK,
                json!({"deleted": true, "provider": &**name, "authorizer_appid": appid}),
            ))
        }
        Err(e) => Err(GatewayError::StoreUnavailable(e.to_string())),
    }
}

/// `POST /admin/providers/{name}/authorizers/{appid}/refresh`.
async fn refresh(shared: &Shared, name: &Arc<str>, appid: &str) -> Answer {
    let key = TokenKey::authorizer(Arc::clone(name), appid);
    tracing::info!(target: "audit", action = "refresh", provider = %name, class = key.class.as_str(),
        authorizer_appid = appid, "admin asked for a token refresh");
    // The token held now, read from the store if this instance has not (else `Newer(0)` would
    // take a live stored token for the refresh asked for).
    let generation = shared.tokens.held_grant(&key).await.map_or(0, |t| t.generation);
    match shared.tokens.obtain(&key, Need::Newer(generation)).await {
        Ok(t) => Ok(json(
            StatusCode::OK,
            json!({"refreshed": true, "provider": &**name, "authorizer_appid": appid,
                   "expires_unix": t.expires_unix}),
        )),
        // Also during the back-off after the platform said so: the merchant app must still
        // authorize again.
        Err(e) if e.needs_authorization() => Err(GatewayError::AuthorizerAuthorizationRequired(e.to_string())),
        Err(e) => Err(GatewayError::TokenUnavailable(e.to_string())),
    }
}
