//! Experiment, not the gateway: the cost floor of an HTTP/1 keep-alive proxy loop on tokio
//! without hyper, run by `../shared/bench/vs-nginx.sh` in place of the gateway (client mode; it
//! reads `listen`, `admin_listen` and `base_url` from the config the script writes and answers
//! anything on the admin port with 200).
//! One current-thread runtime per core, connections handed out round robin; each caller
//! connection owns one upstream connection (kept alive), parses the caller's head with httparse,
//! writes the upstream request (hop-by-hop dropped, `access-token` set) in one write, reads the
//! answer's head and content-length body, writes it back in one write. Content-length only.
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn field<'a>(cfg: &'a str, key: &str) -> &'a str {
    let line = cfg
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key} ")))
        .expect(key);
    line.split('"').nth(1).expect("quoted")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cfg = std::fs::read_to_string(&args[3]).unwrap();
    let listen: SocketAddr = field(&cfg, "listen").parse().unwrap();
    let admin: SocketAddr = field(&cfg, "admin_listen").parse().unwrap();
    let up = field(&cfg, "base_url").trim_start_matches("http://").to_string();
    let up: SocketAddr = up.parse().unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut hands = Vec::new();
    for _ in 0..threads {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        hands.push(tx);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                while let Some(s) = rx.recv().await {
                    tokio::task::spawn_local(async move {
                        let s = TcpStream::from_std(s).unwrap();
                        s.set_nodelay(true).unwrap();
                        let _ = serve(s, up).await;
                    });
                }
            });
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async move {
        let a = TcpListener::bind(admin).await.unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = a.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .await;
            }
        });
        let l = TcpListener::bind(listen).await.unwrap();
        let mut i = 0;
        loop {
            let (s, _) = l.accept().await.unwrap();
            let s = s.into_std().unwrap();
            hands[i % hands.len()].send(s).unwrap();
            i += 1;
        }
    });
}

const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Appends `headers` as `name: value` lines, without the hop-by-hop ones and `also`.
fn copy_headers(out: &mut Vec<u8>, headers: &[httparse::Header<'_>], also: Option<&str>) {
    for h in headers {
        if HOP.iter().chain(&also).any(|x| h.name.eq_ignore_ascii_case(x)) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
}

async fn serve(mut c: TcpStream, up: SocketAddr) -> std::io::Result<()> {
    let mut u = TcpStream::connect(up).await?;
    u.set_nodelay(true)?;
    let mut cbuf = Vec::with_capacity(8192);
    let mut ubuf = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(8192);
    let host = up.to_string();
    loop {
        // The caller's head.
        let head_len = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            match req.parse(&cbuf) {
                Ok(httparse::Status::Complete(n)) => {
                    out.clear();
                    out.extend_from_slice(req.method.unwrap().as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(req.path.unwrap().as_bytes());
                    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
                    out.extend_from_slice(host.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    copy_headers(&mut out, req.headers, Some("access-token"));
                    out.extend_from_slice(b"access-token: clt.bench0123456789\r\n\r\n");
                    break n;
                }
                Ok(httparse::Status::Partial) => {
                    if cbuf.capacity() - cbuf.len() < 1024 {
                        cbuf.reserve(4096);
                    }
                    let n = c.read_buf(&mut cbuf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                }
                Err(_) => return Ok(()),
            }
        };
        cbuf.drain(..head_len);
        u.write_all(&out).await?;
        // The answer's head and body.
        loop {
            let parsed = {
                let mut hs = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut hs);
                match resp.parse(&ubuf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let len: usize = resp
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                            .unwrap_or(0);
                        out.clear();
                        out.extend_from_slice(b"HTTP/1.1 ");
                        out.extend_from_slice(resp.code.unwrap().to_string().as_bytes());
                        out.extend_from_slice(b" OK\r\n");
                        copy_headers(&mut out, resp.headers, None);
                        out.extend_from_slice(b"\r\n");
                        Some((n, len))
                    }
                    _ => None,
                }
            };
            if let Some((n, len)) = parsed {
                while ubuf.len() < n + len {
                    ubuf.reserve(4096);
                    if u.read_buf(&mut ubuf).await? == 0 {
                        return Ok(());
                    }
                }
                out.extend_from_slice(&ubuf[n..n + len]);
                ubuf.drain(..n + len);
                c.write_all(&out).await?;
                break;
            }
            ubuf.reserve(4096);
            if u.read_buf(&mut ubuf).await? == 0 {
                return Ok(());
            }
        }
    }
}
