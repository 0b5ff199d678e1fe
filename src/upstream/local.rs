//! The proxy's client: each thread drives its own upstream connections (`hyper::client::conn`,
//! HTTP/1.1, or HTTP/2 where ALPN says so; over plain HTTP, a call whose body is in memory takes
//! the own client, [`super::h1`]), kept in the thread's own [pool](super::pool). A call
//! never crosses threads nor takes a lock; connecting is the shared [`super::connector`] (TCP,
//! rustls, `ca_file`, connect timeout, resumed TLS sessions).

use super::h1::{self, UpstreamBody};
use super::pool::{self, Conn, Key, Life, Sender};
use crate::body::ProxyBody;
use crate::config::UpstreamConfig;
use http::{header, HeaderValue, Request, Response, Uri};
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The proxy's client to the upstreams: cheap to clone, shared by every proxy thread (and with
/// it the TLS session store); each thread's calls use that thread's connections.
#[derive(Clone)]
pub struct LocalClient(Arc<Inner>);

struct Inner {
    /// Tells this client's connections from another's (another `ca_file`) in a pool.
    id: u64,
    connector: HttpsConnector<HttpConnector>,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// `lean_http1`: plain-HTTP calls with a body in memory take the own client ([`h1`]).
    lean: bool,
}

/// The answer to a call on a [`LocalClient`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, Error>> + Send>>;

impl LocalClient {
    /// A client trusting the webpki roots plus `ca_file`, with `connect_timeout_ms`.
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, String> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Ok(LocalClient(Arc::new(Inner {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            connector: super::connector(cfg)?,
            h1: http1::Builder::new(),
            h2: http2::Builder::new(TokioExecutor::new()),
            lean: cfg.lean_http1,
        })))
    }

    /// Sends a request whose URI is absolute (`Base::place`): on a connection of this thread's
    /// pool, or a new one. A pooled connection that turns out closed before the request was sent
    /// gives way to a new connection, once.
    pub fn request(&self, req: Request<ProxyBody>) -> ResponseFuture {
        let this = self.clone();
        Box::pin(async move { this.send(req).await })
    }

    async fn send(&self, mut req: Request<ProxyBody>) -> Result<Response<UpstreamBody>, Error> {
        let key = self.key(req.uri())?;
        if self.0.lean && !key.https && matches!(req.body(), ProxyBody::Full(_)) {
            let conn = match pool::checkout_own(&key) {
                Some(c) => c,
                None => Box::pin(self.connect_own(&key)).await?,
            };
            prepare(&mut req, &key, false);
            return h1::send(conn, key, req).await.map_err(Error::wire);
        }
        let (mut conn, mut fresh) = match pool::checkout(&key) {
            Some(c) => (c, false),
            // Boxed: the call's own future stays small (it is moved and polled on every call).
            None => (Box::pin(self.connect(&key)).await?, true),
        };
        loop {
            prepare(&mut req, &key, matches!(conn.sender, Sender::H2(_)));
            let sent = match &mut conn.sender {
                Sender::H1(s) => s.try_send_request(req).await,
                Sender::H2(s) => s.try_send_request(req).await,
                Sender::Own(_) => unreachable!("pool::checkout gives hyper's connections only"),
            };
            match sent {
                Ok(resp) => {
                    release(&key, conn);
                    return Ok(resp.map(UpstreamBody::Hyper));
                }
                Err(mut e) => {
                    match e.take_message() {
                        // A pooled connection closed before it took the request: a new one.
                        Some(back) if !fresh => {
                            tracing::debug!("a pooled upstream connection was closed: {}", e.error());
                            req = back;
                            conn = Box::pin(self.connect(&key)).await?;
                            fresh = true;
                        }
                        _ => return Err(Error::send(e.into_error())),
                    }
                }
            }
        }
    }

    /// Where a request goes, as the pool knows it.
    fn key(&self, uri: &Uri) -> Result<Key, Error> {
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| Error::connect("the request's URI has no host".into()))?;
        Ok(Key {
            client: self.0.id,
            https: uri.scheme() == Some(&http::uri::Scheme::HTTPS),
            authority,
        })
    }

    /// A new connection to `key`'s host, taken; an HTTP/2 one is also kept for the next calls.
    async fn connect(&self, key: &Key) -> Result<Conn, Error> {
        let io = self.open(key).await?;
        let life = Life::taken();
        if io.connected().is_negotiated_h2() {
            let (sender, conn) = self.0.h2.handshake(io).await.map_err(|e| Error::connect(e.into()))?;
            tokio::spawn(pool::drive(conn, Arc::clone(&life)));
            pool::share(key, &sender, &life);
            Ok(Conn::opened(Sender::H2(sender), life))
        } else {
            let (sender, conn) = self.0.h1.handshake(io).await.map_err(|e| Error::connect(e.into()))?;
            tokio::spawn(pool::drive(conn, Arc::clone(&life)));
            Ok(Conn::opened(Sender::H1(sender), life))
        }
    }

    /// A socket to `key`'s host (TCP, and TLS for `https`), through the shared connector.
    async fn open(&self, key: &Key) -> Result<MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>, Error> {
        pool::prune();
        let scheme = if key.https { "https" } else { "http" };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| Error::connect(e.into()))?;
        tower::ServiceExt::oneshot(self.0.connector.clone(), uri)
            .await
            .map_err(Error::connect)
    }

    /// A new plain-HTTP connection for the own client ([`h1`]), taken.
    async fn connect_own(&self, key: &Key) -> Result<Conn, Error> {
        match self.open(key).await? {
            MaybeHttpsStream::Http(io) => Ok(Conn::opened(
                Sender::Own(Box::new(h1::Wire::new(io.into_inner()))),
                Life::taken(),
            )),
            MaybeHttpsStream::Https(_) => Err(Error::connect("a plain-HTTP upstream answered with TLS".into())),
        }
    }
}

/// The request's target as the connection's protocol wants it: origin-form and a `Host` header
/// for HTTP/1.1; absolute for HTTP/2 (its `:scheme` and `:authority`).
fn prepare(req: &mut Request<ProxyBody>, key: &Key, h2: bool) {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    if h2 {
        parts.scheme = Some(if key.https {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        parts.authority = Some(key.authority.clone());
    } else {
        parts.scheme = None;
        parts.authority = None;
        if !req.headers().contains_key(header::HOST) {
            if let Some(host) = host_header(key) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Parts from a valid URI, the scheme and authority ours: valid.
    *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
}

/// `Host` for HTTP/1.1: the authority, without the scheme's default port.
fn host_header(key: &Key) -> Option<HeaderValue> {
    let default = if key.https { 443 } else { 80 };
    let a = &key.authority;
    match a.port_u16() {
        Some(p) if p == default => HeaderValue::from_str(a.host()).ok(),
        _ => HeaderValue::from_str(a.as_str()).ok(),
    }
}

/// A call has its answer's head: an HTTP/2 connection is free at once (dropping the call's
/// handle puts it down); an HTTP/1.1 one goes back to the pool once the answer's body is read (at
/// once when it came with the head), still taken until then so its driver does not close it.
fn release(key: &Key, conn: Conn) {
    let ready = match &conn.sender {
        Sender::H2(_) | Sender::Own(_) => return,
        Sender::H1(s) if s.is_closed() => return,
        Sender::H1(s) => s.is_ready(),
    };
    if ready {
        return pool::checkin(key, conn);
    }
    let key = key.clone();
    let mut conn = conn;
    tokio::spawn(async move {
        let Sender::H1(s) = &mut conn.sender else { return };
        if std::future::poll_fn(|cx| s.poll_ready(cx)).await.is_ok() {
            pool::checkin(&key, conn);
        }
    });
}

/// What went wrong with a call: connecting (TCP, TLS, the handshake) or sending it. Its chain of
/// causes names hosts and OS errors, never headers or bodies.
#[derive(Debug)]
pub struct Error {
    connect: bool,
    cause: Box<dyn std::error::Error + Send + Sync>,
}

impl Error {
    fn connect(cause: Box<dyn std::error::Error + Send + Sync>) -> Self {
        Error { connect: true, cause }
    }

    fn send(e: hyper::Error) -> Self {
        Error {
            connect: false,
            cause: Box::new(e),
        }
    }

    fn wire(e: h1::WireError) -> Self {
        Error {
            connect: false,
            cause: Box::new(e),
        }
    }

    /// Whether the call failed before a connection was open.
    pub fn is_connect(&self) -> bool {
        self.connect
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As hyper-util's pooled client says it, so logs and messages read as before.
        f.write_str(if self.connect {
            "client error (Connect)"
        } else {
            "client error (SendRequest)"
        })
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Incoming;
    use std::sync::atomic::AtomicUsize;

    /// A plain-HTTP upstream answering `{}`: counts the connections it accepted; with `keep_alive`
    /// false it closes each after its answer.
    async fn upstream(keep_alive: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let host = req.headers().get(header::HOST).cloned();
                    let mut resp = Response::new(http_body_util::Full::new(bytes::Bytes::from(req.uri().to_string())));
                    if let Some(h) = host {
                        resp.headers_mut().insert("x-host", h);
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        (url, accepted)
    }

    async fn call(client: &LocalClient, url: &str) -> (String, String) {
        use http_body_util::BodyExt;
        let req = Request::get(format!("{url}/a/b?c=d")).body(ProxyBody::empty()).unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let host = resp.headers()["x-host"].to_str().unwrap().to_string();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (String::from_utf8(body.to_vec()).unwrap(), host)
    }

    /// Calls in turn on one thread share one connection; the upstream sees origin-form targets
    /// and a `Host` header naming it.
    #[tokio::test]
    async fn calls_in_turn_reuse_the_threads_connection() {
        for client in [hyper(), lean()] {
            let (url, accepted) = upstream(true).await;
            for _ in 0..3 {
                let (target, host) = call(&client, &url).await;
                assert_eq!(target, "/a/b?c=d");
                assert_eq!(format!("http://{host}"), url);
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
        }
    }

    /// An upstream that closes its connections after each answer: every call still gets its
    /// answer, each on a new connection.
    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        for client in [hyper(), lean()] {
            let (url, accepted) = upstream(false).await;
            for _ in 0..3 {
                assert_eq!(call(&client, &url).await.0, "/a/b?c=d");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 3);
        }
    }

    /// Lets this thread's other tasks run until `done` holds.
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..100_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never so: {:?}", pool::hosts());
    }

    /// A host whose connections have closed leaves the pool as the next connection opens (an
    /// upstream a reload replaced holds nothing).
    #[tokio::test]
    async fn a_host_whose_connections_closed_leaves_the_pool() {
        // An upstream that answers as if it kept the connection, then closes it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closing = format!("http://{}", listener.local_addr().unwrap());
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                stream.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await
                .unwrap();
            let _ = closed.await;
        });
        let (other, _) = upstream(true).await;
        let client = hyper();
        let req = Request::get(format!("{closing}/x")).body(ProxyBody::empty()).unwrap();
        let resp = client.request(req).await.unwrap();
        use http_body_util::BodyExt;
        assert_eq!(&resp.into_body().collect().await.unwrap().to_bytes()[..], b"{}");
        // Back in the pool (on this thread), then closed by the upstream: its driver sees it end.
        until(|| matches!(&pool::hosts()[..], [(_, true)])).await;
        close.send(()).unwrap();
        until(|| matches!(&pool::hosts()[..], [(_, false)])).await;
        call(&client, &other).await;
        let hosts: Vec<String> = pool::hosts().iter().map(|(a, _)| format!("http://{a}")).collect();
        assert_eq!(hosts, [other]);
    }

    /// An upstream that writes its `answers` in turn, the next one for each request it reads
    /// (head and `Content-Length` body), on whichever connection: closes the connection after an
    /// answer marked so. Counts the connections it accepted and keeps each request's bytes.
    async fn scripted(
        answers: Vec<(&'static [u8], bool)>,
    ) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (accepted, seen) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(std::sync::Mutex::new(Vec::new())),
        );
        let (count, requests) = (Arc::clone(&accepted), Arc::clone(&seen));
        let answers = Arc::new(std::sync::Mutex::new(answers.into_iter()));
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let (answers, requests) = (Arc::clone(&answers), Arc::clone(&requests));
                tokio::spawn(async move {
                    loop {
                        let mut req = Vec::new();
                        while !req.ends_with(b"\r\n\r\n") {
                            let mut byte = [0u8];
                            if stream.read_exact(&mut byte).await.is_err() {
                                return;
                            }
                            req.push(byte[0]);
                        }
                        let head = String::from_utf8(req.clone()).unwrap().to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                        let mut body = vec![0u8; length];
                        stream.read_exact(&mut body).await.unwrap();
                        req.extend_from_slice(&body);
                        requests.lock().unwrap().push(String::from_utf8(req).unwrap());
                        let Some((answer, close)) = answers.lock().unwrap().next() else {
                            return;
                        };
                        stream.write_all(answer).await.unwrap();
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted, seen)
    }

    /// A GET of `{url}/x` without a body.
    fn get(url: &str) -> Request<ProxyBody> {
        Request::get(format!("{url}/x")).body(ProxyBody::empty()).unwrap()
    }

    /// A client with every call on hyper's client (`lean_http1 = false`).
    fn hyper() -> LocalClient {
        LocalClient::new(&UpstreamConfig {
            lean_http1: false,
            ..Default::default()
        })
        .unwrap()
    }

    /// A client with the own HTTP/1.1 client on (`lean_http1`, the default).
    fn lean() -> LocalClient {
        LocalClient::new(&UpstreamConfig {
            lean_http1: true,
            ..Default::default()
        })
        .unwrap()
    }

    async fn body_of(client: &LocalClient, req: Request<ProxyBody>) -> Result<bytes::Bytes, String> {
        use http_body_util::BodyExt;
        let resp = client.request(req).await.map_err(|e| super::super::describe(&e))?;
        resp.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string())
    }

    /// The own client ([`h1`]) reads what hyper's reads: interim answers skipped, a chunked body
    /// decoded (trailers dropped), an answer delimited by the close read to its end; a
    /// connection goes back to the pool only after an answer that leaves it usable.
    #[tokio::test]
    async fn the_own_client_reads_every_framing_and_reuses_only_what_it_may() {
        let big = Box::leak(
            [
                b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".as_slice(),
                &vec![b'x'; 1 << 20],
            ]
            .concat()
            .into_boxed_slice(),
        );
        let (url, accepted, seen) = scripted(vec![
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\nx-t: 1\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
            (big, false),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (b"HTTP/1.0 200 OK\r\n\r\nto the close", true),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok", true),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
        ])
        .await;
        let client = lean();
        assert_eq!(&body_of(&client, get(&url)).await.unwrap()[..], b"hello, world");
        let post = Request::post(format!("{url}/p"))
            .header(header::CONTENT_LENGTH, "99")
            .body(ProxyBody::full(&b"{}"[..]))
            .unwrap();
        assert_eq!(&body_of(&client, post).await.unwrap()[..], b"ok");
        assert_eq!(
            body_of(&client, get(&url)).await.unwrap().len(),
            1 << 20,
            "a body longer than one read"
        );
        assert!(body_of(&client, get(&url)).await.unwrap().is_empty());
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection so far");
        assert_eq!(&body_of(&client, get(&url)).await.unwrap()[..], b"to the close");
        assert_eq!(&body_of(&client, get(&url)).await.unwrap()[..], b"ok");
        assert_eq!(&body_of(&client, get(&url)).await.unwrap()[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "a new connection after each close");
        let seen = seen.lock().unwrap();
        assert!(seen[0].starts_with("GET /x HTTP/1.1\r\n"), "{}", seen[0]);
        assert!(
            seen[1].ends_with("\r\ncontent-length: 2\r\n\r\n{}"),
            "the body's own length: {}",
            seen[1]
        );
        assert!(
            !seen[1].contains("content-length: 99"),
            "the caller's length is not sent: {}",
            seen[1]
        );
    }

    /// An answer the own client cannot trust is an error, and its connection is not used again.
    #[tokio::test]
    async fn the_own_client_refuses_a_broken_answer() {
        for (answer, says) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab"[..],
                "Content-Length values differ",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
                "before its answer was complete",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
            (b"NOT HTTP\r\n\r\n", "malformed head"),
        ] {
            let (url, accepted, _) = scripted(vec![
                (answer, true),
                (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
            ])
            .await;
            let client = lean();
            let e = body_of(&client, get(&url)).await.unwrap_err();
            assert!(e.contains(says), "{e}");
            assert_eq!(&body_of(&client, get(&url)).await.unwrap()[..], b"ok");
            assert_eq!(accepted.load(Ordering::SeqCst), 2);
        }
    }

    /// An own connection the upstream closed while it waited in the pool is not used: the next
    /// call opens another and gets its answer (no system call spent on one that is fine).
    #[tokio::test]
    async fn an_own_connection_closed_while_waiting_is_not_used() {
        let (url, accepted, _) = scripted(vec![
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
        ])
        .await;
        let client = lean();
        assert_eq!(&body_of(&client, get(&url)).await.unwrap()[..], b"ok");
        // The answer said nothing of a close: the connection waits in the pool, then closes.
        until(|| matches!(&pool::hosts()[..], [(_, false)])).await;
        assert_eq!(&body_of(&client, get(&url)).await.unwrap()[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A host that refuses connections: the error says it was the connection.
    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let at = reserved.local_addr().unwrap();
        let client = hyper();
        let req = Request::get(format!("http://{at}/x")).body(ProxyBody::empty()).unwrap();
        let e = client.request(req).await.unwrap_err();
        assert!(e.is_connect());
        let text = super::super::describe(&e);
        assert!(text.starts_with("client error (Connect)"), "{text}");
        assert!(text.contains("refused"), "{text}");
    }
}
