//! Request bodies on the admin and public listeners: small JSON documents, read whole, a bounded
//! number at once per listener.

use super::{Ctx, Side};
use crate::error::GatewayError;
use bytes::Bytes;
use hyper::body::Incoming;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Admin and webhook request bodies are small JSON documents.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Bodies being read at once on one listener at most: half its connections, so connections
/// stalling their bodies (until `body_read_timeout_ms` cuts them) leave the rest to probes and
/// to everyone else.
pub const MAX_BODY_READS: usize = crate::conn::ADMIN_MAX_CONNECTIONS / 2;

/// Request bodies being read on the admin and the public listener.
#[derive(Debug, Default)]
pub struct BodySlots([AtomicUsize; 2]);

/// A body being read, counted until dropped.
struct BodySlot<'a>(&'a AtomicUsize);

impl BodySlots {
    fn take(&self, side: Side) -> Option<BodySlot<'_>> {
        let n = &self.0[side as usize];
        if n.fetch_add(1, Ordering::AcqRel) >= MAX_BODY_READS {
            n.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(BodySlot(n))
    }
}

impl Drop for BodySlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads a small body within `body_read_timeout_ms` in all: 400, 408, 413, or 503 when the
/// listener is reading [`MAX_BODY_READS`] bodies already.
pub(super) async fn read_body(cx: Ctx<'_>, body: Incoming) -> Result<Bytes, GatewayError> {
    let Some(_slot) = cx.own.body_slots.take(cx.side) else {
        return Err(GatewayError::BodyReadsFull(MAX_BODY_READS));
    };
    let stall = std::time::Duration::from_millis(cx.shared.runtime.load().config.server.body_read_timeout_ms);
    match crate::body::read_up_to(body, MAX_ADMIN_BODY as u64, Some(stall)).await {
        Ok(crate::body::Read::Complete(b)) => Ok(b),
        Ok(crate::body::Read::Partial(..)) => Err(GatewayError::AdminBodyTooLarge(MAX_ADMIN_BODY)),
        Err(crate::body::ReadError::Stalled(ms)) => {
            tracing::info!(
                timeout_ms = ms,
                "an admin-listener request body was not received in time"
            );
            Err(GatewayError::ClientTimeout(ms))
        }
        Err(crate::body::ReadError::Body(e)) => Err(GatewayError::BadRequest(format!("could not read the body: {e}"))),
    }
}
