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

use super::pool::{self, Conn, Key, Sender};
use crate::body::{BoxError, ProxyBody};
use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
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
        decimal(b.len() as u64, out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
}

/// `n` in decimal, without the formatter.
fn decimal(mut n: u64, out: &mut Vec<u8>) {
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
    out.extend_from_slice(&digits[i..]);
}

/// How the answer to a `method` request with `head` is delimited.
fn framing(method: &Method, head: &Head) -> Result<Framing, WireError> {
    let s = head.status.as_u16();
    if method == Method::HEAD || s == 204 || s == 304 {
        return Ok(Framing::Empty);
    }
    if let Some(last) = head.headers.get_all(header::TRANSFER_ENCODING).iter().next_back() {
        let chunked = last
            .as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for v in head.headers.get_all(header::CONTENT_LENGTH) {
        for piece in v.as_bytes().split(|&b| b == b',') {
            let n = std::str::from_utf8(piece.trim_ascii())
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

/// Whether the connection stays open after this answer.
fn keep_alive(head: &Head) -> bool {
    let said = |word: &[u8]| {
        head.headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(word))
        })
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

/// An answer's body from the proxy's client: hyper's, or the own client's.
#[derive(Debug)]
pub enum UpstreamBody {
    /// From hyper's client (HTTP/2, TLS, a streamed request).
    Hyper(hyper::body::Incoming),
    /// Read whole with the head (taken once).
    Full(Option<Bytes>),
    /// Still on the connection.
    Own(Box<OwnBody>),
}

impl UpstreamBody {
    fn empty() -> Self {
        UpstreamBody::Full(None)
    }
}

/// The rest of an answer on an own connection.
pub struct OwnBody {
    /// Until the body is read (then back to the pool, or closed).
    conn: Option<Conn>,
    key: Key,
    framing: Framing,
    keep: bool,
}

impl std::fmt::Debug for OwnBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl OwnBody {
    /// The next frame: data, the end (`None`), or `Pending` after a read that found nothing.
    fn next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, WireError>>> {
        loop {
            let Some(Sender::Own(wire)) = self.conn.as_mut().map(|c| &mut c.sender) else {
                return Poll::Ready(None);
            };
            match step(&mut self.framing, &mut wire.buf) {
                Ok(Step::Data(b)) => return Poll::Ready(Some(Ok(b))),
                Ok(Step::Done) => {
                    let conn = self.conn.take().expect("checked above");
                    finish(conn, &self.key, self.keep);
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            wire.buf.reserve(READ_ROOM);
            let read = {
                let fut = wire.io.read_buf(&mut wire.buf);
                std::pin::pin!(fut).poll(cx)
            };
            match std::task::ready!(read) {
                Ok(0) if self.framing == Framing::Close => {
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(WireError::Incomplete)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

/// What the buffer gives next.
enum Step {
    Data(Bytes),
    /// The body is complete.
    Done,
    /// Bytes must be read first.
    More,
}

/// Takes what it can of the body from `buf`.
fn step(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, WireError> {
    loop {
        match framing {
            Framing::Empty | Framing::Length(0) => return Ok(Step::Done),
            Framing::Length(n) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let take = (*n).min(buf.len() as u64);
                *n -= take;
                return Ok(Step::Data(buf.split_to(take as usize).freeze()));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            Framing::Chunked(c) => match *c {
                Chunk::Size => {
                    let Some(line) = line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&line)?;
                    *c = if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(n) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = n.min(buf.len() as u64);
                    *c = if take == n {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(n - take)
                    };
                    return Ok(Step::Data(buf.split_to(take as usize).freeze()));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Invalid("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    *c = Chunk::Size;
                }
                Chunk::Trailers(read) => {
                    let Some(l) = line(buf, MAX_TRAILERS - read)? else {
                        return Ok(Step::More);
                    };
                    if l.is_empty() {
                        *framing = Framing::Empty;
                        return Ok(Step::Done);
                    }
                    *c = Chunk::Trailers(read + l.len() + 2);
                }
            },
        }
    }
}

/// The next line of `buf` (without its CRLF or LF), taken from it, if it is all there; an error
/// when it is longer than `max`.
fn line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, WireError> {
    match memchr::memchr(b'\n', buf) {
        Some(i) if i <= max => {
            let mut l = buf.split_to(i + 1).freeze();
            l.truncate(i);
            if l.last() == Some(&b'\r') {
                l.truncate(i - 1);
            }
            Ok(Some(l))
        }
        Some(_) => Err(WireError::Invalid("chunk framing line too long")),
        None if buf.len() > max => Err(WireError::Invalid("chunk framing line too long")),
        None => Ok(None),
    }
}

/// A chunk-size line's size (hex digits, then optional extensions after `;`).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(WireError::Invalid("chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(WireError::Invalid("chunk size"));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| WireError::Invalid("chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| WireError::Invalid("chunk size"))
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Own(b) => b.next(cx).map(|f| f.map(|r| r.map(Frame::data).map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Full(b) => b.is_none(),
            UpstreamBody::Own(b) => b.conn.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpstreamBody::Own(b) => match (b.framing, &b.conn) {
                (Framing::Length(n), Some(_)) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
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

    /// Every chunk of `body` decoded at once, and again fed one byte at a time.
    fn dechunk(body: &[u8]) -> Result<(Vec<u8>, usize), WireError> {
        let mut whole = (Framing::Chunked(Chunk::Size), BytesMut::from(body), Vec::new());
        loop {
            match step(&mut whole.0, &mut whole.1)? {
                Step::Data(b) => whole.2.extend_from_slice(&b),
                Step::Done => break,
                Step::More => return Err(WireError::Incomplete),
            }
        }
        let (mut f, mut buf, mut out) = (Framing::Chunked(Chunk::Size), BytesMut::new(), Vec::new());
        let mut bytes = body.iter();
        loop {
            match step(&mut f, &mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::Done => break,
                Step::More => match bytes.next() {
                    Some(&b) => buf.extend_from_slice(&[b]),
                    None => return Err(WireError::Incomplete),
                },
            }
        }
        assert_eq!(out, whole.2, "byte by byte as at once");
        Ok((out, whole.1.len()))
    }

    #[test]
    fn chunked_bodies_are_decoded_whole_or_byte_by_byte() {
        let (body, left) = dechunk(b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(body, b"hello, world");
        assert_eq!(left, 4, "bytes after the body stay in the buffer");
        assert_eq!(dechunk(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap().0, b"0123456789");
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(dechunk(bad), Err(WireError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(dechunk(b"5\r\nhel"), Err(WireError::Incomplete)));
        let long = [b"5;".as_slice(), &[b'x'; MAX_CHUNK_LINE], b"\r\n"].concat();
        assert!(matches!(dechunk(&long), Err(WireError::Invalid(_))));
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
        decimal(0, &mut out);
        decimal(18_446_744_073_709_551_615, &mut out);
        assert_eq!(out, b"018446744073709551615");
    }
}
