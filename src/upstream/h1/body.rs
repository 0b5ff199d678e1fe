//! The body of an answer from the proxy's client: hyper's, read whole with its head, or read
//! from an own connection as it comes (a length, chunks, or to the close), the connection given
//! back to the pool once the body is read.

use super::{finish, Chunk, Framing, WireError, MAX_CHUNK_LINE, MAX_TRAILERS, READ_ROOM};
use crate::body::BoxError;
use crate::upstream::pool::{Conn, Key, Sender};
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncReadExt;

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
    pub(super) fn empty() -> Self {
        UpstreamBody::Full(None)
    }
}

/// The rest of an answer on an own connection.
pub struct OwnBody {
    /// Until the body is read (then back to the pool, or closed).
    pub(super) conn: Option<Conn>,
    pub(super) key: Key,
    pub(super) framing: Framing,
    pub(super) keep: bool,
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
    use bytes::BytesMut;

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
}
