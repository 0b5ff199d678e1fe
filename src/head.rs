//! What every listener reads off a request head before anything else: the id it will be known
//! by, its size, and whether its framing is one a later hop could read otherwise. The proxy's
//! edge and the admin listener both refuse on [`refusal`].

use crate::error::GatewayError;
use http::{HeaderName, HeaderValue, Request};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Request id header: taken from the caller when plain ([`request_id`]), else generated; echoed on
/// every answer.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id a request is known by, and the caller's own when it was not used.
#[derive(Debug, Clone)]
pub struct RequestId {
    /// What the answer's `x-request-id`, its error body and the log lines carry.
    pub id: HeaderValue,
    /// The caller's `X-Request-Id` when it was not plain: never echoed, logged escaped as
    /// `caller_request_id` (a reference-counted copy of the header, not an allocation).
    pub callers: Option<HeaderValue>,
}

/// Whether a caller's request id may be used as it is: `^[A-Za-z0-9._:-]{1,64}$`. Nothing a log
/// reader, a browser or a shell could read as more than an id, and not long.
fn plain_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len())
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The request id of a request: the caller's when plain, else a new one.
pub fn request_id(headers: &http::HeaderMap) -> RequestId {
    let callers = headers.get(&X_REQUEST_ID);
    match callers {
        Some(v) if plain_request_id(v.as_bytes()) => RequestId {
            id: v.clone(),
            callers: None,
        },
        _ => RequestId {
            id: new_request_id(),
            callers: callers.cloned(),
        },
    }
}

fn new_request_id() -> HeaderValue {
    // `{8 hex digits of this process}-{counter in hex}`, written without a formatter.
    static PREFIX: OnceLock<[u8; 8]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let prefix = PREFIX.get_or_init(|| {
        let r = rand::random::<u32>();
        std::array::from_fn(|i| HEX[(r >> (28 - 4 * i) & 0xf) as usize])
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = [0u8; 8 + 1 + 16];
    out[..8].copy_from_slice(prefix);
    out[8] = b'-';
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        out[9 + i] = HEX[(n >> (4 * (digits - 1 - i)) & 0xf) as usize];
    }
    // Written into a chunk this thread shares among its next ids (one allocation per ~200 ids,
    // not one per id); a chunk is freed when the last id in it is.
    thread_local! {
        static CHUNK: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
    }
    let id = CHUNK.with_borrow_mut(|chunk| {
        if chunk.capacity() < out.len() {
            *chunk = bytes::BytesMut::with_capacity(ID_CHUNK);
        }
        chunk.extend_from_slice(&out[..9 + digits]);
        chunk.split().freeze()
    });
    HeaderValue::from_maybe_shared(id).expect("ascii")
}

/// The bytes of generated request ids allocated at once, per thread.
const ID_CHUNK: usize = 4096;

/// The size of a request head as it came: target, and each header line's name, value and `: `/CRLF.
pub fn head_size<B>(req: &Request<B>) -> usize {
    let target = req.uri().path().len() + req.uri().query().map_or(0, |q| q.len() + 1);
    target
        + req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
}

/// Why a head is refused before anything else looks at it: `Content-Length` with
/// `Transfer-Encoding` (seen by the connection's reader, [`crate::conn::ConflictingLength`]), or a
/// head over `max_header_bytes`. The first closes the connection after the answer.
pub fn refusal<B>(req: &Request<B>, max_header_bytes: usize) -> Option<GatewayError> {
    if req.extensions().get::<crate::conn::ConflictingLength>().is_some() {
        // hyper frames such a body as chunked; a hop that reads Content-Length would frame it
        // otherwise. nginx and Envoy refuse it, and so does a gateway holding credentials.
        return Some(GatewayError::BadRequest(CONFLICTING_LENGTH.into()));
    }
    (head_size(req) > max_header_bytes).then_some(GatewayError::HeadersTooLarge(max_header_bytes))
}

/// The message of a refused `Content-Length` with `Transfer-Encoding`.
pub const CONFLICTING_LENGTH: &str = "the request has both Content-Length and Transfer-Encoding: send one";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_prefix_dash_hex_counter_and_only_a_plain_caller_id_is_kept() {
        let a = request_id(&http::HeaderMap::new());
        let b = request_id(&http::HeaderMap::new());
        assert!(a.callers.is_none());
        let (pa, na) = a.id.to_str().unwrap().split_once('-').unwrap();
        let (pb, nb) = b.id.to_str().unwrap().split_once('-').unwrap();
        assert_eq!(pa.len(), 8);
        assert_eq!(pa, pb);
        assert!(pa.bytes().chain(na.bytes()).all(|c| c.is_ascii_hexdigit()));
        assert!(u64::from_str_radix(nb, 16).unwrap() > u64::from_str_radix(na, 16).unwrap());
        assert!(plain_request_id(a.id.as_bytes()), "the gateway's own are plain");
        let mut h = http::HeaderMap::new();
        let long = "A.b_c:d-9".repeat(8);
        for kept in ["caller-7", "a.B_c:9", &long[..64]] {
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(kept).unwrap());
            let r = request_id(&h);
            assert_eq!((r.id.to_str().unwrap(), r.callers), (kept, None));
        }
        for refused in ["has space", "\"><script>", "", "a/b", "id;x", &long[..65]] {
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(refused).unwrap());
            let r = request_id(&h);
            assert_ne!(r.id, refused);
            assert_eq!(r.callers.unwrap(), refused);
        }
        // Across the chunks ids are written into, each its own.
        let ids: Vec<HeaderValue> = (0..2 * ID_CHUNK)
            .map(|_| request_id(&http::HeaderMap::new()).id)
            .collect();
        let distinct: std::collections::HashSet<&[u8]> = ids.iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(ids.iter().all(|id| plain_request_id(id.as_bytes())));
        h.insert(&X_REQUEST_ID, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert!(request_id(&h).callers.is_some());
    }
}
