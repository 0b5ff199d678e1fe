//! The proxy's own HTTP/1.1 client, for the usual call: a plain-HTTP upstream and a request body
//! held in memory (none, or one kept for a replay). The request goes out in one `write`; the
//! answer's head is parsed by `httparse` straight from the connection's buffer; a small answer
//! read with its head frees the connection at once. No task per connection and no channel
//! between a call and its connection, which hyper's client has (about a quarter of a call's
//! instructions, profiled). A streamed request body and a TLS upstream keep hyper's client.
//!
//! Framing as RFC 9112 §6.3 and hyper's client read it: no body for `HEAD`, 1xx, 204 and 304;
//! `Transfer-Encoding` ending in `chunked` is decoded (trailers are read and dropped); any other
//! `Transfer-Encoding`, or no length at all, reads to the close; else `Content-Length` (every
//! value the same). Interim 1xx answers are skipped, 101 is refused (the gateway never asks to
//! upgrade).

mod body;

pub use body::{OwnBody, UpstreamBody};

use super::pool::{self, Conn, Key, Sender};
use crate::body::ProxyBody;
use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use std::task::Poll;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest answer head read (hyper's client's limit).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The most header lines an answer may have (hyper's client's limit).
const MAX_HEADERS: usize = 100;
/// Room made in the buffer before each read: an answer smaller than this fills the buffer only
/// partly, which tells tokio the socket is drained (no `read` that only finds it empty).
const READ_ROOM: usize = 16 * 1024;
/// The longest line of a chunked body's framing (a size and its extensions, or a trailer).
const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes read after a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;

/// What went wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Reading or writing the socket.
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    /// The connection closed before the answer was complete.
    #[error("the upstream closed the connection before its answer was complete")]
    Incomplete,
    /// The answer could not be read as HTTP/1.1.
    #[error("the upstream's answer is not valid HTTP/1.1: {0}")]
    Invalid(&'static str),
}

/// One connection: the socket and the bytes read from it but not yet used.
pub(super) struct Wire {
    io: TcpStream,
    buf: BytesMut,
    /// The request being written (kept for its capacity).
    out: Vec<u8>,
    /// Where an answer's header names and values lie in `buf` (kept for its capacity).
    at: Vec<(usize, usize, usize, usize)>,
}

/// An answer's head, read.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// None.
    Empty,
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Until the connection closes.
    Close,
}

/// Where the decoding of a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a size line.
    Size,
    /// In a chunk's data: this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// At the trailers (after the last chunk): this many trailer bytes read so far.
    Trailers(usize),
}

impl Wire {
    /// A connection just opened.
    pub(super) fn new(io: TcpStream) -> Self {
        Wire {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            at: Vec::new(),
        }
    }

    /// Whether a connection that waited in the pool can take a call: nothing arrived while it
    /// waited (a close, or bytes no request asked for). No system call unless something did.
    pub(super) fn open_and_quiet(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Writes `req` (origin-form target and `Host` set) with `body`, in one write.
    async fn write(&mut self, req: &Request<ProxyBody>, body: Option<&Bytes>) -> Result<(), WireError> {
        self.out.clear();
        encode(req, body, &mut self.out);
        self.io.write_all(&self.out).await?;
        Ok(())
    }

    /// Reads an answer's head, interim (1xx) answers skipped.
    async fn read_head(&mut self) -> Result<Head, WireError> {
        let mut read_any = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = self.parse_head()? {
                    return Ok(head);
                }
                if self.buf.len() >= MAX_HEAD {
                    return Err(WireError::Invalid("head too large"));
                }
            }
            self.buf.reserve(READ_ROOM);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(if read_any {
                    WireError::Incomplete
                } else {
                    WireError::Io(std::io::ErrorKind::UnexpectedEof.into())
                });
            }
            read_any = true;
        }
    }

    /// The head at the start of the buffer, taken from it, if it is all there.
    fn parse_head(&mut self) -> Result<Option<Head>, WireError> {
        loop {
            // Not initialised first: 3 KiB a call.
            let mut lines = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let len = match httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut res, &self.buf, &mut lines)
            {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(WireError::Invalid("too many header lines")),
                Err(_) => return Err(WireError::Invalid("malformed head")),
            };
            let code = res.code.unwrap_or(0);
            if (100..200).contains(&code) {
                if code == 101 {
                    return Err(WireError::Invalid("101 Switching Protocols was not asked for"));
                }
                self.buf.advance(len);
                continue;
            }
            let status = StatusCode::from_u16(code).map_err(|_| WireError::Invalid("status code"))?;
            let version = if res.version == Some(0) {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            // Where each name and value lies in the buffer, to share the bytes rather than copy
            // them once the head is split off.
            let base = self.buf.as_ptr() as usize;
            self.at.clear();
            for h in res.headers.iter() {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                self.at.push((name, name + h.name.len(), value, value + h.value.len()));
            }
            let head = self.buf.split_to(len).freeze();
            let mut headers = HeaderMap::with_capacity(self.at.len());
            for &(ns, ne, vs, ve) in &self.at {
                let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| WireError::Invalid("header name"))?;
                let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                    .map_err(|_| WireError::Invalid("header value"))?;
                headers.append(name, value);
            }
            return Ok(Some(Head {
                status,
                version,
                headers,
            }));
        }
    }
}

/// The request as HTTP/1.1: hyper's client's encoding. With a body, its length is the one
/// `Content-Length` sent; without, the caller's `Content-Length` (if any) is kept.
fn encode(req: &Request<ProxyBody>, body: Option<&Bytes>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.uri().path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        if name == header::TRANSFER_ENCODING || (body.is_some() && name == header::CONTENT_LENGTH) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(b) = body {
        out.extend_from_slice(b"content-length: ");
        crate::logs::access::number(out, b.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
}

/// How the answer to a `method` request with `head` is delimited.
fn framing(method: &Method, head: &Head) -> Result<Framing, WireError> {
    let s = head.status.as_u16();
    if method == Method::HEAD || s == 204 || s == 304 {
        return Ok(Framing::Empty);
    }
    if let Some(last) = head.headers.get_all(header::TRANSFER_ENCODING).iter().next_back() {
        let chunked = elements(last)
            .next_back()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for v in head.headers.get_all(header::CONTENT_LENGTH) {
        for piece in elements(v) {
            let n = std::str::from_utf8(piece)
                .ok()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or(WireError::Invalid("Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(WireError::Invalid("Content-Length values differ"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// The elements of a comma-separated header value (RFC 9110 §5.6.1), each trimmed.
fn elements(v: &HeaderValue) -> impl DoubleEndedIterator<Item = &[u8]> {
    v.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Whether the connection stays open after this answer.
fn keep_alive(head: &Head) -> bool {
    let said = |word: &[u8]| {
        head.headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| elements(v).any(|t| t.eq_ignore_ascii_case(word)))
    };
    match head.version {
        Version::HTTP_10 => said(b"keep-alive"),
        _ => !said(b"close"),
    }
}

/// Sends `req` (its body in memory) over `conn`, an own connection, and reads the answer's head;
/// the body follows as [`OwnBody`], which gives the connection back to the pool once read.
pub(super) async fn send(
    mut conn: Conn,
    key: Key,
    req: Request<ProxyBody>,
) -> Result<Response<UpstreamBody>, WireError> {
    let Sender::Own(wire) = &mut conn.sender else {
        unreachable!("an own connection")
    };
    let body = match req.body() {
        ProxyBody::Full(b) => b.as_ref(),
        ProxyBody::Stream(_) => unreachable!("a body in memory"),
    };
    // Back to the end of the thread's run queue once before writing, as hyper's client does by
    // handing the request to its connection's task: the upstream writes of one scheduler turn
    // then go out together. Writing each at once woke the upstream once a call, and on the 2-core
    // bench machine 1% of calls then waited ~3 ms (p99 at 10 connections 3.3-4.1 ms, 0.5-0.6
    // with this; docs/performance.md).
    let mut requeued = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut requeued, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    wire.write(&req, body).await?;
    let method = req.method().clone();
    drop(req);
    let head = wire.read_head().await?;
    let framing = framing(&method, &head)?;
    let keep = keep_alive(&head) && framing != Framing::Close;
    let mut resp = Response::new(UpstreamBody::empty());
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    let body = match framing {
        Framing::Empty => {
            finish(conn, &key, keep);
            UpstreamBody::empty()
        }
        // The usual answer: all of it came with its head.
        Framing::Length(n) if (wire.buf.len() as u64) >= n => {
            let b = wire.buf.split_to(n as usize).freeze();
            finish(conn, &key, keep);
            UpstreamBody::Full((!b.is_empty()).then_some(b))
        }
        framing => UpstreamBody::Own(Box::new(OwnBody {
            conn: Some(conn),
            key,
            framing,
            keep,
        })),
    };
    *resp.body_mut() = body;
    Ok(resp)
}

/// An answer is read: its connection goes back to the pool, unless it is to close or holds
/// bytes no request asked for.
fn finish(conn: Conn, key: &Key, keep: bool) {
    let quiet = match &conn.sender {
        Sender::Own(w) => w.buf.is_empty(),
        _ => false,
    };
    if keep && quiet {
        pool::checkin(key, conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, version: Version, lines: &[(&str, &str)]) -> Head {
        let mut headers = HeaderMap::new();
        for (n, v) in lines {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Head {
            status: StatusCode::from_u16(status).unwrap(),
            version,
            headers,
        }
    }

    #[test]
    fn answers_are_delimited_as_rfc_9112_says() {
        let get = Method::GET;
        let h = |s, l: &[(&str, &str)]| head(s, Version::HTTP_11, l);
        assert_eq!(
            framing(&get, &h(200, &[("content-length", "12")])).unwrap(),
            Framing::Length(12)
        );
        assert_eq!(
            framing(&get, &h(200, &[("content-length", "3, 3")])).unwrap(),
            Framing::Length(3)
        );
        assert!(framing(&get, &h(200, &[("content-length", "3"), ("content-length", "4")])).is_err());
        assert!(framing(&get, &h(200, &[("content-length", "+3")])).is_err());
        assert_eq!(
            framing(
                &get,
                &h(200, &[("transfer-encoding", "gzip, chunked"), ("content-length", "3")])
            )
            .unwrap(),
            Framing::Chunked(Chunk::Size),
            "Transfer-Encoding wins over Content-Length"
        );
        assert_eq!(
            framing(&get, &h(200, &[("transfer-encoding", "gzip")])).unwrap(),
            Framing::Close
        );
        assert_eq!(framing(&get, &h(200, &[])).unwrap(), Framing::Close);
        for s in [204, 304] {
            assert_eq!(
                framing(&get, &h(s, &[("content-length", "5")])).unwrap(),
                Framing::Empty
            );
        }
        assert_eq!(
            framing(&Method::HEAD, &h(200, &[("content-length", "5")])).unwrap(),
            Framing::Empty
        );
        assert!(keep_alive(&h(200, &[])));
        assert!(!keep_alive(&h(200, &[("connection", "foo, Close")])));
        assert!(!keep_alive(&head(200, Version::HTTP_10, &[])));
        assert!(keep_alive(&head(
            200,
            Version::HTTP_10,
            &[("connection", "keep-alive")]
        )));
    }

    #[test]
    fn a_request_is_written_as_hypers_client_writes_it() {
        let mut req = Request::builder()
            .method("POST")
            .uri("/a/b?c=1")
            .header("host", "up.example")
            .header("content-length", "99")
            .header("transfer-encoding", "chunked")
            .header("x-one", "1")
            .body(ProxyBody::empty())
            .unwrap();
        let mut out = Vec::new();
        encode(&req, Some(&Bytes::from_static(b"{}")), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a/b?c=1 HTTP/1.1\r\nhost: up.example\r\nx-one: 1\r\ncontent-length: 2\r\n\r\n{}"
        );
        *req.method_mut() = Method::GET;
        req.headers_mut().remove("transfer-encoding");
        let mut out = Vec::new();
        encode(&req, None, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a/b?c=1 HTTP/1.1\r\nhost: up.example\r\ncontent-length: 99\r\nx-one: 1\r\n\r\n"
        );
        let mut out = Vec::new();
        crate::logs::access::number(&mut out, 0);
        crate::logs::access::number(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(
            out, b"018446744073709551615",
            "the lengths it writes, from 0 to u64::MAX"
        );
    }
}
