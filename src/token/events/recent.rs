//! The last [`RECENT_EVENTS`] token events an operator acts on, with their times, for the status
//! page ([`RecentEvents`], a subscriber): users who must re-authorize (a revocation, a dead
//! refresh_token), tokens evicted early, failed renewals, app tokens failing to fetch and
//! recovering, routes whose rejections are distrusted. No token value is in any event; open_ids
//! are, as on the rest of the page.

use super::{Event, Observer};
use crate::vocab::{unix_now, TokenClass};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Events the status page lists.
pub const RECENT_EVENTS: usize = 50;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A user must authorize the app again ([`Event::ReauthorizationRequired`]): a revocation
    /// (the webhook's `unauthorize`), a dead refresh_token.
    ReauthorizationRequired,
    /// The platform rejected a token in the first half of its life ([`Event::EvictedEarly`]).
    EvictedEarly,
    /// A refresh_token renewal failed ([`Event::Renewal`] with an outcome other than `ok`).
    RefreshFailed,
    /// An app token has failed to fetch for a while ([`Event::FetchFailing`]).
    FetchFailing,
    /// It was fetched again ([`Event::FetchRecovered`]).
    FetchRecovered,
    /// A route's rejections no longer fetch tokens for a caller ([`Event::RouteDistrusted`]).
    RouteDistrusted,
}

impl Kind {
    /// Its name on the page (the `[[notify]]` event's, where there is one).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ReauthorizationRequired => "reauthorization_required",
            Kind::EvictedEarly => "evicted_early",
            Kind::RefreshFailed => "refresh_failed",
            Kind::FetchFailing => "fetch_failing",
            Kind::FetchRecovered => "fetch_recovered",
            Kind::RouteDistrusted => "route_distrusted",
        }
    }

    /// Whether it is good news.
    pub fn is_recovery(self) -> bool {
        self == Kind::FetchRecovered
    }
}

/// One event as the page lists it.
#[derive(Debug, Clone)]
pub struct RecentEvent {
    /// When, Unix seconds.
    pub at_unix: u64,
    /// What.
    pub kind: Kind,
    /// The app.
    pub app: Arc<str>,
    /// The token's class, when the event names one.
    pub class: Option<TokenClass>,
    /// The user (user and biz tokens).
    pub open_id: Option<String>,
    /// The rest, in words.
    pub detail: String,
}

/// The last [`RECENT_EVENTS`] events, oldest dropped first.
#[derive(Debug, Default)]
pub struct RecentEvents(Mutex<VecDeque<RecentEvent>>);

impl RecentEvents {
    /// The events held, newest first.
    pub fn list(&self) -> Vec<RecentEvent> {
        let held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.iter().rev().cloned().collect()
    }

    fn push(&self, e: RecentEvent) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() == RECENT_EVENTS {
            held.pop_front();
        }
        held.push_back(e);
    }
}

/// The page's row for `event`, if it lists it.
fn row(event: &Event<'_>) -> Option<RecentEvent> {
    let at_unix = unix_now();
    let of_key = |kind, key: &crate::vocab::TokenKey, detail: String| RecentEvent {
        at_unix,
        kind,
        app: Arc::clone(&key.app),
        class: Some(key.class),
        open_id: key.open_id().map(str::to_owned),
        detail: match key.biz_scope() {
            Some(scope) => format!("scope {scope}; {detail}"),
            None => detail,
        },
    };
    Some(match *event {
        Event::ReauthorizationRequired { app, open_id, reason } => RecentEvent {
            at_unix,
            kind: Kind::ReauthorizationRequired,
            app: Arc::from(app),
            class: None,
            open_id: Some(open_id.to_owned()),
            detail: reason.to_owned(),
        },
        Event::EvictedEarly { key, age_s } => of_key(
            Kind::EvictedEarly,
            key,
            format!("rejected at {age_s} s old: another fetcher with these credentials, or a revocation"),
        ),
        Event::Renewal { key, outcome } if outcome != "ok" => of_key(
            Kind::RefreshFailed,
            key,
            format!("refresh_token renewal failed: {outcome}"),
        ),
        Event::FetchFailing { key, outcome, .. } => {
            of_key(Kind::FetchFailing, key, format!("fetches failing: {outcome}"))
        }
        Event::FetchRecovered { key, since_unix } => of_key(
            Kind::FetchRecovered,
            key,
            format!(
                "fetched again after {} s of failures",
                at_unix.saturating_sub(since_unix)
            ),
        ),
        Event::RouteDistrusted {
            route,
            key,
            caller,
            pause_s,
        } => of_key(
            Kind::RouteDistrusted,
            key,
            format!(
                "route {route} rejected two new tokens in a row for caller {caller}: \
                 its rejections fetch none for {pause_s} s"
            ),
        ),
        _ => return None,
    })
}

impl Observer for RecentEvents {
    fn on(&self, event: &Event<'_>) {
        // Called on every call (cache events): those it does not list return before any lock.
        if let Some(e) = row(event) {
            self.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::TokenKey;

    #[test]
    fn keeps_the_last_fifty_listed_events_newest_first() {
        let recent = RecentEvents::default();
        let user = TokenKey::user("main".into(), "ou_1");
        recent.on(&Event::Cache {
            class: TokenClass::User,
            hit: true,
        });
        recent.on(&Event::Renewal {
            key: &user,
            outcome: "ok",
        });
        assert!(recent.list().is_empty(), "neither is listed");
        for i in 0..RECENT_EVENTS as u64 + 5 {
            recent.on(&Event::EvictedEarly { key: &user, age_s: i });
        }
        recent.on(&Event::ReauthorizationRequired {
            app: "main",
            open_id: "ou_2",
            reason: "the user revoked the app (unauthorize event)",
        });
        let list = recent.list();
        assert_eq!(list.len(), RECENT_EVENTS);
        assert_eq!(list[0].kind, Kind::ReauthorizationRequired);
        assert_eq!((list[0].open_id.as_deref(), list[0].class), (Some("ou_2"), None));
        assert!(list[0].detail.contains("unauthorize"));
        assert!(list[1].detail.starts_with("rejected at 54 s old"), "{}", list[1].detail);
        assert!(
            list[49].detail.starts_with("rejected at 6 s old"),
            "{}",
            list[49].detail
        );
    }

    #[test]
    fn each_kind_names_its_token_and_never_a_value() {
        let recent = RecentEvents::default();
        let biz = TokenKey::biz("main".into(), "ou_e", "data.external.item");
        let client = TokenKey::client("main".into());
        recent.on(&Event::Renewal {
            key: &biz,
            outcome: "refused",
        });
        recent.on(&Event::FetchFailing {
            key: &client,
            outcome: "network",
            since_unix: 1,
        });
        recent.on(&Event::RouteDistrusted {
            route: "item_list",
            key: &biz,
            caller: "backend",
            pause_s: 30,
        });
        let list = recent.list();
        let kinds: Vec<_> = list.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["route_distrusted", "fetch_failing", "refresh_failed"]);
        assert_eq!(list[0].class, Some(TokenClass::Biz));
        assert_eq!(list[0].open_id.as_deref(), Some("ou_e"));
        assert!(
            list[0].detail.contains("scope data.external.item; route item_list"),
            "{}",
            list[0].detail
        );
        assert!(list[0].detail.contains("caller backend") && list[0].detail.contains("30 s"));
        assert_eq!(
            (list[1].open_id.as_deref(), list[1].detail.as_str()),
            (None, "fetches failing: network")
        );
        assert!(list[2].detail.ends_with("renewal failed: refused"));
    }
}
