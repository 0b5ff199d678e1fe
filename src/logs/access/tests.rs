//! The buffered access line is byte for byte the `tracing` event it replaces, as
//! tracing-subscriber writes it in the gateway's text and JSON setups (but for the time).

use super::*;
use crate::logs::batch::{Batch, CAP};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

/// The line as the `tracing` event, through the gateway's subscriber setup without the time.
fn traced(format: Format, line: &AccessLine<'_>) -> String {
    let out = Shared::default();
    let writer = {
        let out = out.clone();
        move || out.clone()
    };
    let fmt = tracing_subscriber::fmt().without_time();
    let subscriber: Box<dyn tracing::Subscriber + Send + Sync> = match format {
        Format::Text => Box::new(
            fmt.with_writer(crate::logs::EscapeControls(writer))
                .with_target(false)
                .with_ansi(false)
                .finish(),
        ),
        Format::Json => Box::new(
            fmt.with_writer(writer)
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
    };
    tracing::subscriber::with_default(subscriber, || line.trace());
    out.take()
}

/// The line as the buffered log writes it, its time cut out (checked for its shape).
fn buffered(format: Format, line: &AccessLine<'_>) -> String {
    let batch = Batch::new(format);
    let mut buf = Vec::new();
    batch.push(|b, f| format_line(b, f, line));
    // The thread's buffer, as the writer would take it.
    batch.collect_into(&mut buf);
    let s = String::from_utf8(buf).unwrap();
    let (prefix, rest) = match format {
        Format::Text => ("", &s[..]),
        Format::Json => ("{", s.strip_prefix("{\"timestamp\":\"").expect(&s)),
    };
    let time = &rest[..27];
    assert!(
        time.ends_with('Z') && time.as_bytes()[10] == b'T' && time.as_bytes()[19] == b'.',
        "{s}"
    );
    match format {
        Format::Text => rest[28..].to_string(),
        Format::Json => format!("{prefix}{}", rest[27..].strip_prefix("\",").expect(&s)),
    }
}

fn line<'a>(method: &'a http::Method) -> AccessLine<'a> {
    AccessLine {
        request_id: "5f3a9c1e-1f",
        peer: Some(SocketAddr::from(([127, 0, 0, 1], 40312))),
        caller_request_id: None,
        caller: "backend",
        route: "ticket",
        method,
        path: "/js/getticket/",
        status: 200,
        micros: 1234,
        upstream_status: 200,
        logid: "20261205132243010225251194",
    }
}

#[test]
fn the_buffered_line_is_the_traced_line_in_both_formats() {
    let get = http::Method::GET;
    let custom = http::Method::from_bytes(b"PURGE").unwrap();
    let odd_id = b"\"><script> status=500\\\xff\x01\xc2\x85";
    let cases = [
        line(&get),
        AccessLine {
            peer: None,
            micros: 0,
            upstream_status: 0,
            logid: "-",
            caller: "-",
            route: "-",
            ..line(&get)
        },
        AccessLine {
            caller_request_id: Some(odd_id),
            micros: 7,
            ..line(&custom)
        },
        AccessLine {
            peer: Some("[::1]:8080".parse().unwrap()),
            micros: 120_500,
            status: 503,
            ..line(&get)
        },
        AccessLine {
            peer: Some("255.0.10.9:0".parse().unwrap()),
            path: "/é/%E2%80%A8",
            ..line(&get)
        },
        // Names and values with what `{:?}` and JSON escape, and what the text log escapes.
        AccessLine {
            caller: "we \"quote\" \\ and é 中",
            route: "tab\there",
            path: "/a\u{85}b\u{2028}c\r\nFAKE",
            logid: "x\u{7f}\u{1b}[31m",
            micros: 3_600_000_010,
            ..line(&get)
        },
    ];
    for format in [Format::Text, Format::Json] {
        for l in &cases {
            assert_eq!(buffered(format, l), traced(format, l), "{format:?}: {l:?}");
        }
    }
}

#[test]
fn milliseconds_are_shown_as_the_float_they_replace() {
    let shown = |micros: u64| {
        let mut b = Vec::new();
        millis(&mut b, micros);
        String::from_utf8(b).unwrap()
    };
    for micros in (0..20_000).chain([999_999, 1_000_000, 1_000_001, 30_000_000, 86_400_000_123]) {
        let f = micros as f64 / 1000.0;
        assert_eq!(shown(micros), format!("{f:?}"), "{micros}");
        assert_eq!(shown(micros), serde_json::to_string(&f).unwrap(), "{micros}");
    }
    let mut b = Vec::new();
    number(&mut b, u64::MAX);
    assert_eq!(b, u64::MAX.to_string().as_bytes());
}

#[test]
fn a_full_buffer_drops_lines_and_counts_them() {
    let batch = Batch::new(Format::Text);
    let get = http::Method::GET;
    let l = line(&get);
    let mut pushed = 0;
    while batch.dropped() == 0 {
        batch.push(|b, f| format_line(b, f, &l));
        pushed += 1;
    }
    let mut buf = Vec::new();
    batch.collect_into(&mut buf);
    let kept = buf.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(kept, pushed - 1, "every line but the dropped one");
    assert!(buf.len() >= CAP && buf.len() < CAP + 512, "{}", buf.len());
    // Taken by the writer: room again.
    batch.push(|b, f| format_line(b, f, &l));
    assert_eq!(batch.dropped(), 1);
}
