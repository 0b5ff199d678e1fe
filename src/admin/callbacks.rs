//! `[[callbacks]]`: the platform calling a backend back (payment results, refunds, trade events).
//! The gateway verifies the call, then forwards it byte for byte, with its headers and
//! `X-Gateway-App` (and `X-Gateway-Signature` when the callback has a `secret_env`), and answers
//! the platform with the backend's status and body. A call that does not verify gets 401
//! `bad_signature` and nothing is forwarded.
//!
//! `verify = "byte_signature"`: `Byte-Signature` with the app's platform public key over
//! `TIMESTAMP\nNONCE\nBODY\n` (`Byte-Timestamp`, `Byte-Nonce-Str`), the timestamp within
//! [`MAX_SKEW_SECS`] of now, the nonce unseen for 10 minutes (recorded only once the signature
//! verified). `verify = "douyin_webhook"`: `X-Douyin-Signature`, as the webhook.

use super::body::read_body;
use super::{Answer, Ctx};
use crate::error::GatewayError;
use crate::relay::{Callback, Failure, Refused};
use crate::runtime::App;
use crate::signature::{answer_message, BYTE_NONCE, BYTE_SIGNATURE, BYTE_TIMESTAMP};
use http::{header, HeaderMap, Request, Response};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

/// How far a callback's `Byte-Timestamp` may be from now (the gateway's rule against replays
/// beyond the nonce window; the platform retries a payment callback for minutes, each delivery
/// signed afresh).
pub(super) const MAX_SKEW_SECS: u64 = 300;
/// A nonce longer than this is not the platform's (it sends 32 characters).
const MAX_NONCE_LEN: usize = 64;

/// Handles a request on a `[[callbacks]]` path (`index` into the runtime's callbacks).
pub(super) async fn handle(cx: Ctx<'_>, req: Request<Incoming>) -> Answer {
    let rt = cx.shared.runtime.load_full();
    let Some(cb) = rt.callbacks.iter().find(|c| c.path == req.uri().path()) else {
        return Err(GatewayError::NotFound("no such callback".into()));
    };
    if req.method() != http::Method::POST {
        return Err(GatewayError::BadRequest("the platform's callbacks are POSTs".into()));
    }
    let app = &rt.apps[cb.app];
    let (parts, body) = req.into_parts();
    let body = read_body(cx, body).await?;
    let count = |outcome: &str| {
        cx.shared
            .metrics
            .callbacks
            .with_label_values(&[&cb.name, outcome])
            .inc()
    };
    if let Err((outcome, why)) = verify(cx, cb, app, &parts.headers, &body) {
        count(outcome);
        tracing::warn!(callback = %cb.name, app = %app.name, outcome, "callback refused, nothing forwarded: {why}");
        return Err(match outcome {
            "nonces_full" => GatewayError::StoreUnavailable(why),
            _ => GatewayError::CallbackRefused(why),
        });
    }
    let app_name = crate::relay::app_header(&app.name);
    match cb
        .target
        .send(&parts.headers, &[(&crate::relay::X_GATEWAY_APP, app_name)], body)
        .await
    {
        Ok(answer) => {
            count("forwarded");
            tracing::info!(callback = %cb.name, app = %app.name, status = answer.status.as_u16(), "callback forwarded");
            let mut resp = Response::new(crate::body::ProxyBody::full(answer.body));
            *resp.status_mut() = answer.status;
            if let Some(ct) = answer.content_type {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            Ok(resp)
        }
        Err(failure) => {
            count("backend_failed");
            tracing::warn!(callback = %cb.name, app = %app.name, "callback verified but its backend did not answer: {failure:?}");
            Err(match failure {
                Failure::Timeout(ms) => GatewayError::UpstreamTimeout(ms),
                Failure::Unreachable(e) => GatewayError::UpstreamUnavailable(format!("the callback's backend: {e}")),
            })
        }
    }
}

/// Whether the call is the platform's: `Err((outcome, why))` when not.
fn verify(
    cx: Ctx<'_>,
    cb: &Callback,
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), (&'static str, String)> {
    let header = |name: &http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    if cb.verify == crate::config::CallbackVerify::DouyinWebhook {
        let given = header(&http::HeaderName::from_static("x-douyin-signature")).to_ascii_lowercase();
        let expected = super::webhook::sign(app.webhook_key.expose(), body);
        return if !given.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(("bad_signature", "missing or wrong X-Douyin-Signature".into()))
        };
    }
    let (timestamp, nonce, signature) = (header(&BYTE_TIMESTAMP), header(&BYTE_NONCE), header(&BYTE_SIGNATURE));
    if timestamp.is_empty() || nonce.is_empty() || signature.is_empty() {
        return Err((
            "bad_signature",
            "a callback must carry Byte-Timestamp, Byte-Nonce-Str and Byte-Signature".into(),
        ));
    }
    if nonce.len() > MAX_NONCE_LEN {
        return Err((
            "bad_signature",
            format!("Byte-Nonce-Str is over {MAX_NONCE_LEN} characters"),
        ));
    }
    let now = crate::vocab::unix_now();
    match timestamp.parse::<u64>() {
        Ok(t) if t.abs_diff(now) <= MAX_SKEW_SECS => {}
        _ => {
            return Err((
                "stale",
                format!("Byte-Timestamp {timestamp:?} is more than {MAX_SKEW_SECS} s from now ({now})"),
            ))
        }
    }
    let Some(key) = &app.platform_public_key else {
        return Err(("bad_signature", "the app has no platform public key".into()));
    };
    if !key.verify(&answer_message(timestamp, nonce, body), signature) {
        return Err((
            "bad_signature",
            "Byte-Signature does not verify under the app's platform public key".into(),
        ));
    }
    let recorded = cx.own.nonces.record(&app.name, nonce, now);
    cx.shared.metrics.callback_nonces.set(cx.own.nonces.len() as i64);
    match recorded {
        Ok(()) => Ok(()),
        Err(Refused::Replayed) => Err((
            "replayed",
            "Byte-Nonce-Str was seen in the last 10 minutes: a replay".into(),
        )),
        Err(Refused::Full) => Err((
            "nonces_full",
            "the table of recent callback nonces is full; the platform will deliver this again".into(),
        )),
    }
}
