//! Validation of the `[[apps]]`, `[[routes]]` and `[[callers]]` tables.

use super::validate::{is_sha256_hex, secret_present, Collector};
use super::{Config, Inject, OpenIdAt, PathPattern, TokenKind};

impl Config {
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
            if let Some(uri) = &app.redirect_uri {
                match uri.parse::<http::Uri>() {
                    Ok(u) if u.authority().is_some() && u.query().is_none() => {
                        let host = u.host().unwrap_or("").trim_matches(['[', ']']);
                        let loopback =
                            host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                        match u.scheme_str() {
                            Some("https") => {}
                            Some("http") if loopback => c.warn(
                                "apps",
                                i,
                                "redirect_uri",
                                "http is accepted for a loopback address (the sandbox); the platform itself requires https",
                            ),
                            _ => c.err("apps", i, "redirect_uri", "must be an https URL (the platform requires it)"),
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
    }

    pub(super) fn validate_routes(&self, c: &mut Collector<'_>) {
        if self.routes.is_empty() {
            c.warn("routes", None, "", "no [[routes]]: every call gets 404 no_route");
        }
        let mut patterns: Vec<Option<(PathPattern, Option<Vec<String>>)>> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let idx = Some(i);
            if r.name.is_empty() || r.name == "*" {
                c.err("routes", idx, "name", "must be a non-empty name other than \"*\"");
            }
            if self.routes.iter().filter(|o| o.name == r.name).count() > 1 {
                c.err(
                    "routes",
                    idx,
                    "name",
                    format!("route {:?} is defined more than once", r.name),
                );
            }
            let pattern = match PathPattern::parse(&r.path) {
                Ok(p) => Some(p),
                Err(e) => {
                    c.err("routes", idx, "path", e);
                    None
                }
            };
            let mut methods = None;
            if let Some(ms) = &r.methods {
                if ms.is_empty() {
                    c.err(
                        "routes",
                        idx,
                        "methods",
                        "an empty list matches nothing; leave it out to allow any method",
                    );
                }
                for m in ms {
                    if http::Method::from_bytes(m.as_bytes()).is_err() || m.to_ascii_uppercase() != *m {
                        c.err(
                            "routes",
                            idx,
                            "methods",
                            format!("{m:?} is not an upper-case HTTP method"),
                        );
                    }
                    if m == "CONNECT" {
                        c.err("routes", idx, "methods", "CONNECT is never proxied");
                    }
                }
                methods = Some(ms.clone());
            }
            if r.token != TokenKind::None {
                match &r.app {
                    Some(app) if !self.apps.iter().any(|a| &a.name == app) => {
                        c.err("routes", idx, "app", format!("no [[apps]] named {app:?}"))
                    }
                    None if self.apps.len() != 1 => c.err(
                        "routes",
                        idx,
                        "app",
                        format!(
                            "token = {:?} needs app = \"…\" when there is not exactly one [[apps]]",
                            r.token
                        ),
                    ),
                    _ => {}
                }
            }
            if matches!(r.token, TokenKind::User | TokenKind::Biz) && OpenIdAt::parse(&r.open_id).is_none() {
                {
                    c.err("routes", idx, "open_id", "must be \"query:NAME\" or \"header:NAME\"");
                }
            }
            if let Some(u) = &r.upstream {
                if !self.upstreams.iter().any(|x| &x.name == u) {
                    c.err(
                        "routes",
                        idx,
                        "upstream",
                        format!("no [[upstreams]] named {u:?} (leave it out for [upstream])"),
                    );
                }
            }
            if r.token == TokenKind::AppSecret && r.inject != Inject::JsonBody {
                c.err(
                    "routes",
                    idx,
                    "inject",
                    "token = \"app_secret\" sets the body's appid and secret: it needs inject = \"json_body\"",
                );
            }
            if r.token == TokenKind::MiniApp {
                let app = match &r.app {
                    Some(name) => self.apps.iter().find(|a| &a.name == name),
                    None if self.apps.len() == 1 => self.apps.first(),
                    None => None,
                };
                if app.is_some_and(|a| a.mini_app_upstream.is_none()) {
                    c.err(
                        "routes",
                        idx,
                        "token",
                        "token = \"mini_app\" needs the app's mini_app_upstream (the [[upstreams]] entry of developer.toutiao.com)",
                    );
                }
            }
            if r.token == TokenKind::Biz && r.biz_scope.as_deref().unwrap_or("").is_empty() {
                c.err("routes", idx, "biz_scope", "token = \"biz\" needs the scope to request");
            }
            if let Some((pi, _)) = pattern.as_ref().and_then(|p| {
                patterns.iter().enumerate().find(|(_, prev)| {
                    prev.as_ref()
                        .is_some_and(|(pp, pm)| pp.covers(p) && methods_cover(pm, &methods))
                })
            }) {
                c.warn(
                    "routes",
                    idx,
                    "path",
                    format!(
                        "route {:?} can never match: route {:?} before it catches all its requests",
                        r.name, self.routes[pi].name
                    ),
                );
            }
            patterns.push(pattern.map(|p| (p, methods)));
        }
    }

    pub(super) fn validate_notify(&self, c: &mut Collector<'_>) {
        for (i, n) in self.notify.iter().enumerate() {
            let idx = Some(i);
            match n.url.parse::<http::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {}
                _ => c.err("notify", idx, "url", "must be an http:// or https:// URL"),
            }
            if n.secret_env.is_empty() {
                c.err(
                    "notify",
                    idx,
                    "secret_env",
                    "name the environment variable holding the signing key",
                );
            } else if std::env::var(&n.secret_env).map_or(true, |v| v.is_empty()) {
                c.err(
                    "notify",
                    idx,
                    "secret_env",
                    format!(
                        "environment variable {} is not set (any random string: douyin-gateway keygen prints one)",
                        n.secret_env
                    ),
                );
            }
            for e in &n.events {
                if !super::NOTIFY_EVENTS.contains(&e.as_str()) {
                    c.err(
                        "notify",
                        idx,
                        "events",
                        format!("unknown event {e:?} (known: {})", super::NOTIFY_EVENTS.join(", ")),
                    );
                }
            }
            if n.queue == 0 || n.max_attempts == 0 || n.timeout_ms == 0 {
                c.err(
                    "notify",
                    idx,
                    "queue",
                    "queue, max_attempts and timeout_ms must be greater than 0",
                );
            }
        }
    }

    pub(super) fn validate_callers(&self, c: &mut Collector<'_>) {
        for (i, caller) in self.callers.iter().enumerate() {
            let idx = Some(i);
            if self.callers.iter().filter(|o| o.name == caller.name).count() > 1 {
                c.err(
                    "callers",
                    idx,
                    "name",
                    format!("caller {:?} is defined more than once", caller.name),
                );
            }
            if !is_sha256_hex(&caller.api_key_sha256) {
                c.err(
                    "callers",
                    idx,
                    "api_key_sha256",
                    "must be 64 hex digits (douyin-gateway hash-key prints it)",
                );
            }
            for r in &caller.routes {
                if r != "*" && !self.routes.iter().any(|x| &x.name == r) {
                    c.err("callers", idx, "routes", format!("no [[routes]] named {r:?}"));
                }
            }
        }
    }
}

/// Whether an earlier route's methods include all of a later one's.
fn methods_cover(earlier: &Option<Vec<String>>, later: &Option<Vec<String>>) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
    }
}
