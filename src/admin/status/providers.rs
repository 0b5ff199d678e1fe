//! The status page's service providers: each one's component_ticket (how old), its
//! component token, its merchant apps by state, and those that must authorize it again, by appid.

use super::page::date;
use super::state;
use crate::state::Shared;
use crate::token::upkeep::{Census, TokenState};
use crate::token::{GrantState, TokenClass, TokenKey};
use maud::{html, Markup};
use std::sync::Arc;

/// Merchant apps that must authorize again, listed per provider at most (the count says how
/// many in all).
const LISTED: usize = 50;

/// One provider as the page and `GET /admin/providers` show it.
pub(in crate::admin) struct ProviderRow {
    pub(in crate::admin) name: String,
    /// When its latest ticket was received; `Err`: the store could not say.
    pub(in crate::admin) ticket_unix: Result<Option<u64>, String>,
    /// Its component token; `None`: not fetched yet.
    pub(in crate::admin) component: Option<(TokenState, Option<u64>)>,
    /// Merchant apps in each of [`TokenState::ALL`]: the gauges' figures (with a shared store,
    /// every stored one once a pass is complete).
    pub(in crate::admin) counts: [i64; 4],
    /// Merchant apps this instance holds that must authorize again: appid and why, at most
    /// [`LISTED`] (the page's list; empty from [`row`]).
    pub(in crate::admin) reauthorize: Vec<(String, String)>,
}

/// Provider `name`'s ticket, component token and merchant apps by state, counted from `census`.
pub(in crate::admin) async fn row(shared: &Shared, name: &Arc<str>, census: &Census) -> ProviderRow {
    let ticket_unix = super::super::ticket_received(shared, name).await;
    let component = shared
        .tokens
        .info_of(&TokenKey::component(Arc::clone(name)))
        .map(|i| (i.state, i.expires_unix));
    let counts = TokenState::ALL.map(|s| {
        census
            .tokens
            .get(&(Arc::clone(name), TokenClass::Authorizer, s))
            .copied()
            .unwrap_or(0)
    });
    ProviderRow {
        name: name.to_string(),
        ticket_unix,
        component,
        counts,
        reauthorize: Vec::new(),
    }
}

/// Each configured provider, in config order ([`row`]), with the merchant apps this instance
/// holds that must authorize again.
pub(super) async fn gather(shared: &Shared, census: &Census) -> Vec<ProviderRow> {
    let rt = shared.runtime.load_full();
    let mut out = Vec::with_capacity(rt.providers.len());
    for p in &rt.providers {
        let mut row = row(shared, &p.name, census).await;
        row.reauthorize = shared
            .tokens
            .cached_authorizers(&p.name)
            .into_iter()
            .filter(|i| i.state == TokenState::ReauthorizationRequired)
            .take(LISTED)
            .map(|i| {
                let why = match i.grant.as_deref().map(|g| &g.state) {
                    Some(GrantState::Dead(why)) => why.to_string(),
                    _ => String::new(),
                };
                (i.key.subject().to_string(), why)
            })
            .collect();
        out.push(row);
    }
    out
}

/// The providers' table and the merchant apps that must authorize again; nothing without
/// providers.
pub(super) fn render(now: u64, rows: &[ProviderRow]) -> Markup {
    let must = TokenState::ALL
        .iter()
        .position(|s| *s == TokenState::ReauthorizationRequired)
        .expect("a state");
    html! {
        @if !rows.is_empty() {
            h2 { "Service providers" }
            table #providers {
                tr { th { "provider" } th { "component_ticket received" } th { "component token" } th { "expires" }
                    @for s in TokenState::ALL { th { "merchant apps " (s.as_str()) } } }
                @for p in rows {
                    tr {
                        td { (p.name) }
                        @match &p.ticket_unix {
                            Ok(Some(t)) => td class=(ticket_css(now, *t)) { (super::page::until(now, *t)) " (" (date(*t)) ")" },
                            Ok(None) => td.bad { "none yet" },
                            Err(why) => td.bad { "unknown: " (why) },
                        }
                        @match p.component {
                            Some((s, expires)) => {
                                td class=[state::app_css(Some(s))] { (s.as_str()) }
                                td { @match expires { Some(e) => (super::page::until(now, e)), None => "—" } }
                            }
                            None => { td { "not fetched yet" } td { "—" } }
                        }
                        @for (i, n) in p.counts.iter().enumerate() {
                            td.n.bad[i == must && *n > 0] { (n) }
                        }
                    }
                }
            }
            h3 { "Merchant apps that must authorize again" }
            table #merchant-reauthorization {
                tr { th { "provider" } th { "authorizer_appid" } th { "why" } }
                @if rows.iter().all(|p| p.reauthorize.is_empty()) {
                    tr { td colspan="3" { "none" } }
                }
                @for p in rows {
                    @for (appid, why) in &p.reauthorize {
                        tr { td { (p.name) } td { code { (appid) } } td { (why) } }
                    }
                }
            }
            p.note { "At most " (LISTED) " listed per provider: those this instance holds." }
        }
    }
}

/// A ticket is pushed every 10 minutes: one older than two pushes is a warning, one older than
/// the component token's 2 hours is bad.
fn ticket_css(now: u64, received: u64) -> &'static str {
    match now.saturating_sub(received) {
        a if a <= 20 * 60 => "ok",
        a if a <= 2 * 3600 => "warn",
        _ => "bad",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_render_escaped_with_their_merchant_apps() {
        let now = 1_796_000_000;
        let rows = vec![ProviderRow {
            name: "tp".into(),
            ticket_unix: Ok(Some(now - 300)),
            component: Some((TokenState::Valid, Some(now + 3600))),
            counts: [2, 1, 0, 1],
            reauthorize: vec![("<tt_m>".into(), "withdrew & gone".into())],
        }];
        let page = render(now, &rows).into_string();
        for part in [
            "<tr><td>tp</td><td class=\"ok\">5m ago (2026-11-30 00:48 UTC)</td><td class=\"ok\">valid</td>\
             <td>in 1h 0m</td><td class=\"n\">2</td><td class=\"n\">1</td><td class=\"n\">0</td>\
             <td class=\"n bad\">1</td></tr>",
            "<tr><td>tp</td><td><code>&lt;tt_m&gt;</code></td><td>withdrew &amp; gone</td></tr>",
        ] {
            assert!(page.contains(part), "{part} not in {page}");
        }
        let none = render(
            now,
            &[ProviderRow {
                ticket_unix: Ok(None),
                component: None,
                reauthorize: vec![],
                counts: [0; 4],
                ..rows.into_iter().next().unwrap()
            }],
        )
        .into_string();
        assert!(
            none.contains("<td class=\"bad\">none yet</td><td>not fetched yet</td><td>—</td>"),
            "{none}"
        );
        assert!(none.contains("<td colspan=\"3\">none</td>"), "{none}");
        assert_eq!(render(now, &[]).into_string(), "");
    }
}
