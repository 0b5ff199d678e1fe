//! The access log off the request path: one line per proxied call, formatted by the request's
//! own thread into that thread's buffer and written by a writer thread in batches
//! ([`super::batch`]), as nginx's buffered `access_log` does.
//!
//! A line has the fields, the order and the text of the `tracing` event it replaces (target
//! `access`, level INFO), in both formats: text as tracing-subscriber's `fmt` writes it (without
//! the target, escaped as [`super::EscapeControls`] escapes), JSON as its flattened JSON format
//! writes it. `RUST_LOG=…,access=off` still turns it off: the filter is asked per line. Without
//! [`install`] (the library in another program, the in-process tests) a line is that `tracing`
//! event, as before.

use super::batch::{Batch, Format};
use super::Escaped;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// One proxied call, as its access line shows it (the path only, never the query).
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    /// The gateway's request id.
    pub request_id: &'a str,
    /// The connection's peer (`-` when unknown).
    pub peer: Option<SocketAddr>,
    /// The caller's own `X-Request-Id` when it was not plain (shown escaped).
    pub caller_request_id: Option<&'a [u8]>,
    /// The caller's name (`-` before authentication, or anonymous).
    pub caller: &'a str,
    /// The route's name (`-`: none).
    pub route: &'a str,
    /// The method.
    pub method: &'a http::Method,
    /// The path, never the query (a caller's query may carry a credential).
    pub path: &'a str,
    /// The answer's status.
    pub status: u16,
    /// Microseconds from the request to its answer's head (shown as milliseconds).
    pub micros: u64,
    /// The last upstream answer's status (0: none).
    pub upstream_status: u16,
    /// The platform's log id (`x-tt-logid`), what its support asks for (`-`: none).
    pub logid: &'a str,
}

static SINK: OnceLock<Batch> = OnceLock::new();

/// Writes the access log in `format` to `out` through a writer thread of its own, from now on
/// (once per process; a second call changes nothing).
pub fn install(format: Format, out: Box<dyn Write + Send>) {
    let mut fresh = false;
    let sink = SINK.get_or_init(|| {
        fresh = true;
        Batch::new(format)
    });
    if fresh {
        sink.spawn(out);
    }
}

/// Logs `line`: into this thread's buffer when [`install`]ed, else as a `tracing` event. Never
/// blocks: when the writer is behind, the line is dropped and counted ([`dropped`]).
pub fn log(line: &AccessLine<'_>) {
    match SINK.get() {
        Some(sink) => {
            if tracing::enabled!(target: "access", tracing::Level::INFO) {
                sink.push(|buf, format| format_line(buf, format, line));
            }
        }
        None => line.trace(),
    }
}

/// Writes every line buffered so far, waiting at most `timeout` for the writer (it may be
/// stuck on a pipe nobody reads). At shutdown.
pub fn flush(timeout: std::time::Duration) {
    if let Some(sink) = SINK.get() {
        sink.flush(timeout);
    }
}

/// Asks the writer to write what is buffered now, without waiting (SIGHUP).
pub fn flush_soon() {
    if let Some(sink) = SINK.get() {
        sink.flush_soon();
    }
}

/// Lines dropped so far because the writer was behind.
pub fn dropped() -> u64 {
    SINK.get().map_or(0, Batch::dropped)
}

impl AccessLine<'_> {
    /// The line as a `tracing` event, as it was before the buffered log.
    fn trace(&self) {
        tracing::info!(
            target: "access",
            request_id = %self.request_id,
            peer = %Peer(self.peer),
            caller_request_id = self.caller_request_id.map(|v| tracing::field::display(Escaped(v))),
            caller = self.caller,
            route = self.route,
            method = %self.method,
            path = %self.path,
            status = self.status,
            ms = self.micros as f64 / 1000.0,
            upstream_status = u64::from(self.upstream_status),
            logid = self.logid,
            "access"
        );
    }
}

/// A peer address as the access log shows it (`-` when unknown).
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Appends `line` to `buf` in `format`, ending in a newline.
pub(super) fn format_line(buf: &mut Vec<u8>, format: Format, line: &AccessLine<'_>) {
    match format {
        Format::Text => text(buf, line),
        Format::Json => json(buf, line),
    }
}

/// tracing-subscriber's full text format: time, level, message, then `name=value`: `%` fields
/// as they display, strings quoted as `Debug` quotes them. Escaped as [`super::EscapeControls`]
/// escapes a whole line, field by field: only the path can hold what it escapes (bytes over 0x7F
/// pass hyper's parser); the ids are plain ASCII, the peer and the method cannot, and `Debug`
/// has escaped every such character of the quoted strings already.
fn text(buf: &mut Vec<u8>, l: &AccessLine<'_>) {
    super::clock::timestamp(buf);
    buf.extend_from_slice(b"  INFO access request_id=");
    buf.extend_from_slice(l.request_id.as_bytes());
    buf.extend_from_slice(b" peer=");
    peer(buf, l.peer);
    if let Some(v) = l.caller_request_id {
        buf.extend_from_slice(b" caller_request_id=");
        escaped(buf, v, false);
    }
    buf.extend_from_slice(b" caller=");
    debug_str(buf, l.caller);
    buf.extend_from_slice(b" route=");
    debug_str(buf, l.route);
    buf.extend_from_slice(b" method=");
    buf.extend_from_slice(l.method.as_str().as_bytes());
    buf.extend_from_slice(b" path=");
    if super::needs_escape(l.path.as_bytes()) {
        super::escape_into(l.path.as_bytes(), buf);
    } else {
        buf.extend_from_slice(l.path.as_bytes());
    }
    buf.extend_from_slice(b" status=");
    number(buf, l.status.into());
    buf.extend_from_slice(b" ms=");
    millis(buf, l.micros);
    buf.extend_from_slice(b" upstream_status=");
    number(buf, l.upstream_status.into());
    buf.extend_from_slice(b" logid=");
    debug_str(buf, l.logid);
    buf.push(b'\n');
}

/// tracing-subscriber's JSON format, flattened: time, level, the fields with the message first,
/// then the target.
fn json(buf: &mut Vec<u8>, l: &AccessLine<'_>) {
    buf.extend_from_slice(b"{\"timestamp\":\"");
    super::clock::timestamp(buf);
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"access\",\"request_id\":");
    json_str(buf, l.request_id);
    buf.extend_from_slice(b",\"peer\":\"");
    peer(buf, l.peer);
    if let Some(v) = l.caller_request_id {
        buf.extend_from_slice(b"\",\"caller_request_id\":\"");
        escaped(buf, v, true);
    }
    buf.extend_from_slice(b"\",\"caller\":");
    json_str(buf, l.caller);
    buf.extend_from_slice(b",\"route\":");
    json_str(buf, l.route);
    buf.extend_from_slice(b",\"method\":");
    json_str(buf, l.method.as_str());
    buf.extend_from_slice(b",\"path\":");
    json_str(buf, l.path);
    buf.extend_from_slice(b",\"status\":");
    number(buf, l.status.into());
    buf.extend_from_slice(b",\"ms\":");
    millis(buf, l.micros);
    buf.extend_from_slice(b",\"upstream_status\":");
    number(buf, l.upstream_status.into());
    buf.extend_from_slice(b",\"logid\":");
    json_str(buf, l.logid);
    buf.extend_from_slice(b",\"target\":\"access\"}\n");
}

/// A socket address as it displays (nothing in it needs escaping, in either format).
fn peer(buf: &mut Vec<u8>, peer: Option<SocketAddr>) {
    match peer {
        // The usual case without a formatter.
        Some(SocketAddr::V4(a)) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                number(buf, octet.into());
            }
            buf.push(b':');
            number(buf, a.port().into());
        }
        Some(a) => {
            let _ = write!(buf, "{a}");
        }
        None => buf.push(b'-'),
    }
}

/// [`Escaped`]'s text; in JSON its backslashes doubled (it has no other character to escape).
fn escaped(buf: &mut Vec<u8>, v: &[u8], json: bool) {
    for &b in v {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            buf.push(b);
        } else {
            let hex = super::HEX;
            buf.extend_from_slice(if json { b"\\\\x" } else { b"\\x" });
            buf.extend_from_slice(&[hex[usize::from(b >> 4)], hex[usize::from(b & 0xf)]]);
        }
    }
}

/// Bytes `{:?}` shows as they are in a string: printable ASCII but `"` and `\\`.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        t[b as usize] = b != b'"' && b != b'\\';
        b += 1;
    }
    t
};

/// A string as `{:?}` shows it: quoted, written directly when nothing in it needs escaping.
fn debug_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| PLAIN[usize::from(b)]) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

/// A JSON string, escaped as serde_json escapes.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// An unsigned integer in decimal, without a formatter (also the upstream client's
/// `Content-Length`).
pub(crate) fn number(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Microseconds as the milliseconds `micros as f64 / 1000.0` shows, by `{:?}` and by
/// serde_json alike: `1.234`, `1.2`, `2.0`.
fn millis(buf: &mut Vec<u8>, micros: u64) {
    number(buf, micros / 1000);
    buf.push(b'.');
    let frac = micros % 1000;
    if frac == 0 {
        buf.push(b'0');
        return;
    }
    let d = [(frac / 100) as u8, (frac / 10 % 10) as u8, (frac % 10) as u8];
    let len = if d[2] != 0 {
        3
    } else if d[1] != 0 {
        2
    } else {
        1
    };
    buf.extend(d[..len].iter().map(|d| b'0' + d));
}

#[cfg(test)]
mod tests;
