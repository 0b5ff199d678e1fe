//! Service providers' component_tickets: the latest one the platform pushed to each provider's
//! event URL, kept durably and encrypted in the store (a value of kind
//! [`KIND_TICKET`](crate::store::KIND_TICKET), so a restart between pushes still has it) and in
//! memory. Only configured providers' tickets are kept: the event handler checks the provider
//! before it calls [`Tokens::store_ticket`](super::Tokens::store_ticket).

use super::Tokens;
use crate::secret::Secret;
use crate::store::{StoreError, KIND_TICKET};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A provider's latest ticket.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The ticket (never printed).
    pub value: Secret,
    /// When the gateway received it, Unix seconds.
    pub received_unix: u64,
}

/// The latest ticket of each provider, in memory.
#[derive(Debug, Default)]
pub(super) struct Tickets(DashMap<Arc<str>, Ticket>);

#[derive(Serialize, Deserialize)]
struct Stored {
    ticket: String,
    received_unix: u64,
}

impl Tokens {
    /// Keeps `ticket` as `provider`'s latest: written to the store first (durable when this
    /// returns), then in memory. A store failure leaves the ticket in memory and is returned, so
    /// the caller can tell the platform to push it again.
    pub async fn store_ticket(&self, provider: &str, ticket: &str) -> Result<(), StoreError> {
        let t = Ticket {
            value: Secret::new(ticket),
            received_unix: crate::vocab::unix_now(),
        };
        let body = serde_json::to_vec(&Stored {
            ticket: ticket.to_string(),
            received_unix: t.received_unix,
        })
        .expect("json");
        let stored = self.persist.store().put_value(KIND_TICKET, provider, &body).await;
        self.tickets.0.insert(Arc::from(provider), t);
        // A component token that failed for want of a ticket is fetched at the next call, not
        // after its back-off.
        if let Some(slot) = self.cache.get(&super::TokenKey::component(Arc::from(provider))) {
            if let Some(mut flight) = slot.try_flight() {
                flight.reset();
            }
        }
        stored
    }

    /// `provider`'s latest ticket: from memory, else from the store (and then remembered).
    pub async fn ticket(&self, provider: &str) -> Result<Option<Ticket>, StoreError> {
        if let Some(t) = self.tickets.0.get(provider) {
            return Ok(Some(t.clone()));
        }
        let Some(body) = self.persist.store().get_value(KIND_TICKET, provider).await? else {
            return Ok(None);
        };
        let s: Stored = serde_json::from_slice(&body).map_err(|e| StoreError::Unreadable {
            key: format!("{KIND_TICKET}/{provider}"),
            reason: e.to_string(),
        })?;
        let t = Ticket {
            value: Secret::new(s.ticket),
            received_unix: s.received_unix,
        };
        // A push that arrived meanwhile is newer: keep it.
        Ok(Some(self.tickets.0.entry(Arc::from(provider)).or_insert(t).clone()))
    }
}
