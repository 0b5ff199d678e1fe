//! The status page's last token events: what happened to which token, when, newest first.

use super::page::date;
use crate::token::events::RecentEvent;
use maud::{html, Markup};

/// The events table.
pub(super) fn render(events: &[RecentEvent]) -> Markup {
    html! {
        table #events {
            tr { th { "when" } th { "event" } th { "app" } th { "class" } th { "open_id" } th { "detail" } }
            @if events.is_empty() {
                tr { td colspan="6" { "none" } }
            }
            @for e in events {
                tr {
                    td { (date(e.at_unix)) }
                    td class=(if e.kind.is_recovery() { "ok" } else { "bad" }) { (e.kind.as_str()) }
                    td { (e.app) }
                    td { (e.class.map_or("—", |c| c.as_str())) }
                    td { @match &e.open_id { Some(o) => code { (o) }, None => "—" } }
                    td { (e.detail) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::events::{Event, Observer, RecentEvents};

    #[test]
    fn newest_first_and_escaped() {
        let recent = RecentEvents::default();
        let key = crate::vocab::TokenKey::client("main".into());
        recent.on(&Event::FetchRecovered {
            key: &key,
            since_unix: 0,
        });
        recent.on(&Event::ReauthorizationRequired {
            app: "main",
            open_id: "<ou>",
            reason: "the user revoked the app (unauthorize event)",
        });
        let page = render(&recent.list()).into_string();
        let first = page.find("reauthorization_required").unwrap();
        assert!(first < page.find("fetch_recovered").unwrap(), "{page}");
        assert!(page.contains(
            "<td class=\"bad\">reauthorization_required</td><td>main</td><td>—</td><td><code>&lt;ou&gt;</code></td>\
             <td>the user revoked the app (unauthorize event)</td>"
        ), "{page}");
        assert!(page.contains("<td class=\"ok\">fetch_recovered</td><td>main</td><td>client</td><td>—</td>"));
        assert!(render(&[]).into_string().contains("<td colspan=\"6\">none</td>"));
    }
}
