//! The reading side of a connection: [`Counted`] counts what a connection reads, charges the
//! bytes of a head still being received to the process's [`HeadBudget`], and notes a head that
//! carries both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper keeps an unfinished head in its read buffer (up to `max_buf_size`, which the server
//! sets near `max_header_bytes`), so what strangers can make the gateway hold before any request
//! exists is what those buffers hold together. Each connection may always hold a small head
//! ([`SMALL_HEAD`], what every real caller sends); past that, a read that would take the
//! process's total over its budget closes that connection instead.

use super::Activity;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A head this small is never refused for the budget: health probes, and every ordinary call,
/// get through while strangers hold the budget.
pub const SMALL_HEAD: usize = 8 * 1024;

/// Bytes of unfinished heads held by all connections together, and the most they may hold.
#[derive(Debug)]
pub struct HeadBudget {
    used: AtomicUsize,
    limit: usize,
}

impl HeadBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(HeadBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `n` more bytes of a connection's head, which holds `mine` with them. `false` when
    /// the connection must close: its head is past [`SMALL_HEAD`] and the budget is spent.
    fn charge(&self, n: usize, mine: usize) -> bool {
        let total = self.used.fetch_add(n, Ordering::AcqRel) + n;
        mine <= SMALL_HEAD || total <= self.limit
    }

    pub(super) fn release(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// Why a connection's read was refused by the gateway itself.
#[derive(Debug, thiserror::Error)]
#[error("the head budget of {0} bytes is spent: connection closed")]
pub struct OverBudget(pub usize);

/// An IO that counts the bytes read from it (see the [module docs](self)).
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
    scan: HeadScan,
}

impl<S> Counted<S> {
    /// Wraps `inner`, counting into `activity` and charging heads to its budget.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Counted {
            inner,
            activity,
            scan: HeadScan::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n == 0 {
            return r;
        }
        let this = &mut *self;
        let a = &this.activity;
        a.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let started = a.started.load(Ordering::Acquire);
        if started != a.finished.load(Ordering::Acquire) {
            // A request is in progress: these are its body's bytes (or a pipelined head, which
            // hyper's buffer limit bounds).
            return r;
        }
        if let Some(head) = this.scan.feed(&buf.filled()[before..], started) {
            if head.conflicting_length {
                a.conflicting_length_at.store(started + 1, Ordering::Release);
            }
        }
        let mine = a.pending_head.fetch_add(n, Ordering::AcqRel) + n;
        if !a.budget.charge(n, mine) {
            a.over_budget.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(std::io::Error::other(OverBudget(a.budget.limit))));
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What the scan found in one complete HTTP/1 head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ScannedHead {
    pub(super) conflicting_length: bool,
}

/// Reads HTTP/1 heads as they arrive for the two framing headers. hyper, given both, frames the
/// body as chunked and drops `Content-Length` before the request is seen, so the gateway can only
/// tell from the bytes. One head is scanned per request: the one that arrives while no request is
/// in progress (a pipelined head read with an earlier request's bytes is not; hyper still frames
/// it safely and closes the connection after it). An HTTP/2 connection is not scanned.
#[derive(Debug, Default)]
pub(super) struct HeadScan {
    /// The request count the last complete head was scanned at; scanning resumes once another
    /// request has started and finished.
    done_at: Option<u64>,
    /// The first line (request line) is not a header.
    in_first_line: bool,
    started_line: bool,
    /// The current line's name so far, lower-cased, up to the longest name of interest.
    name: [u8; 17],
    name_len: usize,
    name_over: bool,
    at_line_start: bool,
    saw_cl: bool,
    saw_te: bool,
    http2: bool,
    seen_any: bool,
}

impl HeadScan {
    /// Feeds bytes read while no request is in progress (`started` requests so far); the head
    /// they complete, if they complete one.
    pub(super) fn feed(&mut self, bytes: &[u8], started: u64) -> Option<ScannedHead> {
        if self.http2 {
            return None;
        }
        if !self.seen_any {
            self.seen_any = true;
            if bytes.starts_with(b"PRI * HTTP/2.0") {
                self.http2 = true;
                return None;
            }
        }
        match self.done_at {
            Some(at) if at == started => return None,
            Some(_) => {
                *self = HeadScan {
                    seen_any: true,
                    ..HeadScan::default()
                };
            }
            None => {}
        }
        if !self.started_line {
            self.started_line = true;
            self.in_first_line = true;
        }
        let mut i = 0;
        while i < bytes.len() {
            if self.in_first_line || self.name_over {
                // The request line, or a value: nothing to read before the line's end.
                match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(n) => i += n,
                    None => return None,
                }
            }
            if self.at_line_start && !self.in_first_line && self.name_len == 0 && !matches!(bytes[i], b'\r' | b'\n') {
                // A header line's start: when its whole name is in this read, it is compared at
                // once (byte by byte cost about 1,000 instructions a call, profiled); a name cut
                // by the read's end goes byte by byte below.
                if let Some(n) = memchr::memchr2(b':', b'\n', &bytes[i..]) {
                    if bytes[i + n] == b':' {
                        let name = &bytes[i..i + n];
                        self.saw_cl |= name.eq_ignore_ascii_case(b"content-length");
                        self.saw_te |= name.eq_ignore_ascii_case(b"transfer-encoding");
                        self.at_line_start = false;
                        self.name_over = true;
                        i += n + 1;
                        continue;
                    }
                }
            }
            let b = bytes[i];
            i += 1;
            match b {
                b'\n' => {
                    if self.at_line_start && !self.in_first_line {
                        // An empty line: the head is complete.
                        self.done_at = Some(started);
                        return Some(ScannedHead {
                            conflicting_length: self.saw_cl && self.saw_te,
                        });
                    }
                    self.in_first_line = false;
                    self.at_line_start = true;
                    self.name_len = 0;
                    self.name_over = false;
                }
                _ if self.in_first_line => {}
                b'\r' if self.at_line_start => {}
                _ => {
                    self.at_line_start = false;
                    if self.name_over {
                        // In the value, or past the longest name of interest.
                    } else if b == b':' {
                        let name = &self.name[..self.name_len];
                        self.saw_cl |= name == b"content-length";
                        self.saw_te |= name == b"transfer-encoding";
                        self.name_over = true;
                    } else if self.name_len == self.name.len() {
                        self.name_over = true;
                    } else {
                        self.name[self.name_len] = b.to_ascii_lowercase();
                        self.name_len += 1;
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(parts: &[&[u8]]) -> Option<ScannedHead> {
        let mut s = HeadScan::default();
        parts.iter().find_map(|p| s.feed(p, 0))
    }

    #[test]
    fn both_framing_headers_in_one_head_are_seen_across_reads() {
        let conflicting = Some(ScannedHead {
            conflicting_length: true,
        });
        let fine = Some(ScannedHead {
            conflicting_length: false,
        });
        let both = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(&[both]), conflicting);
        // Split anywhere, in any case, either order.
        for at in 1..both.len() {
            assert_eq!(scan(&[&both[..at], &both[at..]]), conflicting, "split at {at}");
        }
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\nCONTENT-length: 5\r\n\r\n"]),
            conflicting
        );
        assert_eq!(scan(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"]), fine);
        assert_eq!(scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"]), fine);
        // A value or another name that merely contains them is not them.
        assert_eq!(
            scan(&[b"GET /content-length: HTTP/1.1\r\nX-Content-Length: 1\r\nX: transfer-encoding: chunked\r\n\r\n"]),
            fine
        );
        // Bare LF line ends (hyper accepts them) and an unfinished head.
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n"]),
            conflicting
        );
        assert_eq!(scan(&[b"POST / HTTP/1.1\r\nContent-Length: 1\r\n"]), None);
        // Whole names compared at once or byte by byte, the same verdicts.
        let heads: [&[u8]; 6] = [
            both,
            b"POST / HTTP/1.1\r\n\rContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length : 1\r\nTransfer-Encoding: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nno colon here\r\nContent-Length: 1\r\nTRANSFER-ENCODING:x\r\n\r\n",
            b"POST / HTTP/1.1\r\nX-A-Very-Long-Header-Name-Indeed: 1\r\ncontent-length:1\r\n\r\n",
            b"GET / HTTP/1.1\r\n:\r\nContent\r-Length: 1\r\nTransfer-Encoding: x\r\n\r\n",
        ];
        for head in heads {
            let bytes: Vec<&[u8]> = head.chunks(1).collect();
            assert_eq!(scan(&[head]), scan(&bytes), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn one_head_per_request_and_none_for_http2() {
        let mut s = HeadScan::default();
        assert!(s.feed(b"GET / HTTP/1.1\r\n\r\n", 0).is_some());
        // Until that request has started, later bytes are not another head.
        assert!(s.feed(b"GET / HTTP/1.1\r\n\r\n", 0).is_none());
        let next = s.feed(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            1,
        );
        assert_eq!(
            next,
            Some(ScannedHead {
                conflicting_length: true
            })
        );
        let mut h2 = HeadScan::default();
        assert!(h2
            .feed(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\ncontent-length: 1\r\ntransfer-encoding: x\r\n\r\n",
                0
            )
            .is_none());
    }

    #[test]
    fn the_budget_spares_small_heads() {
        let b = HeadBudget::new(10_000);
        assert!(b.charge(9_000, 9_000));
        // Over the budget, a connection holding a small head still may; a big one may not.
        assert!(b.charge(2_000, 2_000));
        assert!(!b.charge(100, SMALL_HEAD + 1));
        b.release(11_100);
        assert_eq!(b.used(), 0);
    }
}
