//! An answer of the sandbox, and reading form fields.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use std::collections::HashMap;

/// An answer of the sandbox.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    content_type: &'static str,
    /// Where a redirect goes.
    pub(super) location: Option<String>,
    pub(super) body: Bytes,
    /// More headers (the trade APIs' signature and log id).
    extra: Vec<(&'static str, String)>,
}

impl Reply {
    /// 200 with a JSON body.
    pub(super) fn json(v: serde_json::Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            location: None,
            body: serde_json::to_vec(&v).expect("json").into(),
            extra: Vec::new(),
        }
    }
    /// 302 to `to`.
    pub(super) fn redirect(to: &str) -> Reply {
        Reply {
            status: StatusCode::FOUND,
            content_type: "text/plain",
            location: Some(to.into()),
            body: Bytes::new(),
            extra: Vec::new(),
        }
    }
    /// Any status, with a fixed body.
    pub(super) fn status(status: StatusCode, content_type: &'static str, body: &'static str) -> Reply {
        Reply {
            status,
            content_type,
            location: None,
            body: Bytes::from_static(body.as_bytes()),
            extra: Vec::new(),
        }
    }
    /// The same answer with another status.
    pub(super) fn with_status(mut self, status: StatusCode) -> Reply {
        self.status = status;
        self
    }

    /// The same answer with one more header.
    pub(super) fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.extra.push((name, value));
        self
    }

    /// The HTTP response.
    pub(super) fn into_response(self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(self.body));
        *r.status_mut() = self.status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if let Some(l) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(header::LOCATION, l);
        }
        for (name, value) in self.extra {
            if let Ok(v) = HeaderValue::from_str(&value) {
                r.headers_mut().insert(name, v);
            }
        }
        r
    }
}

/// Form or query fields (first value wins).
pub(super) fn form(bytes: &[u8]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    m
}
