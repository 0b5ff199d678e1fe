//! The platform's webhook events relayed to `[[webhook_forward]]` targets, after the gateway
//! verified and handled them: each target that wants the event gets the body byte for byte with
//! `Content-Type`, `Msg-Id`, `X-Douyin-Signature`, `X-Gateway-App`, `X-Gateway-Event` and, when
//! it has a `secret_env`, `X-Gateway-Signature`. All at once, each within its `timeout_ms`; the
//! platform's request waits for them, so nothing is held in memory past it.

use crate::error::GatewayError;
use crate::runtime::{App, Runtime};
use crate::state::Shared;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// What of the platform's request a target gets besides the body.
const PASSED_ON: &[&str] = &["content-type", "msg-id", "x-douyin-signature"];

/// Relays an event to every target that wants it: `Ok` when each answered 2xx, else 502
/// `upstream_unavailable` so the platform delivers it again.
pub(super) async fn relay(
    shared: &Shared,
    rt: &Runtime,
    app: &App,
    event: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(), GatewayError> {
    let targets: Vec<_> = rt
        .webhook_forwards
        .iter()
        .filter(|f| f.wants(&app.name, event))
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let mut passed = HeaderMap::new();
    for name in PASSED_ON {
        if let Some(v) = headers.get(*name) {
            passed.insert(HeaderName::from_static(name), v.clone());
        }
    }
    let extra = [
        (&crate::relay::X_GATEWAY_APP, crate::relay::app_header(&app.name)),
        (
            &crate::relay::X_GATEWAY_EVENT,
            HeaderValue::from_str(event).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        ),
    ];
    let sends = targets.iter().map(|f| f.target.send(&passed, &extra, body.clone()));
    let answers = futures_util::future::join_all(sends).await;
    let mut failed = 0;
    for (f, answer) in targets.iter().zip(answers) {
        let outcome = match answer {
            Ok(a) if a.status.is_success() => "delivered",
            Ok(a) => {
                tracing::warn!(target_label = %f.target.label, app = %app.name, event, status = a.status.as_u16(),
                    "webhook relay target refused the event; the platform will deliver it again");
                "refused"
            }
            Err(e) => {
                tracing::warn!(target_label = %f.target.label, app = %app.name, event,
                    "webhook relay target did not answer ({e:?}); the platform will deliver it again");
                "failed"
            }
        };
        failed += usize::from(outcome != "delivered");
        shared
            .metrics
            .webhook_forwards
            .with_label_values(&[&f.target.label, outcome])
            .inc();
    }
    if failed > 0 {
        return Err(GatewayError::UpstreamUnavailable(format!(
            "{failed} of {} webhook relay targets did not take the event; deliver it again",
            targets.len()
        )));
    }
    Ok(())
}
