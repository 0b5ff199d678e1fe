//! The status page's traffic section: per route over the last 5 minutes, calls, errors by code
//! (the gateway's and the platform's) and p50/p99 latency, each with a sparkline of its 10-second
//! buckets drawn as inline SVG (no script, nothing fetched: the page's CSP needs nothing more).

use crate::metrics::window::{CodeCount, ErrorCode, Snapshot, BUCKETS, BUCKET_SECS};
use crate::metrics::{EXCHANGE_CODE, NO_ROUTE, REFUSED};
use crate::runtime::Runtime;
use maud::{html, Markup};
use std::fmt::Write;
use std::time::Instant;

/// Sparkline size, px: one 5 px column per bucket.
const W: usize = 5 * BUCKETS;
const H: usize = 24;

/// One route's last 5 minutes.
pub(super) struct RouteTraffic {
    pub(super) route: String,
    pub(super) snap: Snapshot,
}

/// Every configured route, then the code exchanges, the requests no route matched and those
/// refused before routing, when there were any.
pub(super) fn gather(rt: &Runtime, now: Instant) -> Vec<RouteTraffic> {
    let configured = rt
        .config
        .routes
        .iter()
        .zip(&rt.route_metrics)
        .map(|(r, m)| RouteTraffic {
            route: r.name.to_string(),
            snap: m.window.snapshot(now),
        });
    let pseudo = [
        (EXCHANGE_CODE, &rt.exchange_metrics),
        (NO_ROUTE, &rt.no_route_metrics),
        (REFUSED, &rt.refused_metrics),
    ]
    .into_iter()
    .map(|(name, m)| RouteTraffic {
        route: name.to_owned(),
        snap: m.window.snapshot(now),
    })
    .filter(|t| t.snap.total_calls() > 0);
    configured.chain(pseudo).collect()
}

/// The section: a table of routes and one of their error codes.
pub(super) fn render(traffic: &[RouteTraffic]) -> Markup {
    html! {
        p.note { "Last 5 minutes in " (BUCKET_SECS) "-second buckets, oldest on the left; this instance's calls \
            only. Errors are the codes seen: the gateway's, and the platform's in each answer (a call replayed \
            with a new token can show two). Latency is estimated from a log-scale histogram (within about 25 %)." }
        table #traffic {
            tr { th { "route" } th { "calls" } th { "errors" } th { "p50" } th { "p99" } th { "calls" }
                th { "errors" } th { "p50 · " span.p99 { "p99" } } }
            @for t in traffic {
                tr {
                    td { (t.route) }
                    td.n { (t.snap.total_calls()) }
                    td.n.bad[t.snap.total_errors() > 0] { (t.snap.total_errors()) }
                    td.n { (ms(t.snap.p50_all_ms)) }
                    td.n { (ms(t.snap.p99_all_ms)) }
                    td { (bars(&t.snap.calls, "#3566a8", "calls per 10 s")) }
                    td { (bars(&t.snap.errors, "#b00020", "errors per 10 s")) }
                    td { (latency(&t.snap)) }
                }
            }
        }
        h3 { "Errors by code" }
        table #traffic-errors {
            tr { th { "route" } th { "from" } th { "code" } th { "count" } th { "per 10 s" } }
            @if traffic.iter().all(|t| t.snap.codes.is_empty()) {
                tr { td colspan="5" { "none" } }
            }
            @for t in traffic {
                @for c in &t.snap.codes {
                    tr {
                        td { (t.route) }
                        td { (from(c.code)) }
                        td { code { (code(c.code)) } }
                        td.n.bad { (c.total()) }
                        td { (code_bars(c)) }
                    }
                }
            }
        }
    }
}

fn from(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Gateway(_) => "gateway",
        ErrorCode::Platform(_) | ErrorCode::PlatformOther => "platform",
    }
}

fn code(code: ErrorCode) -> String {
    match code {
        ErrorCode::Gateway(c) => c.to_owned(),
        ErrorCode::Platform(c) => c.to_string(),
        ErrorCode::PlatformOther => "other".to_owned(),
    }
}

fn code_bars(c: &CodeCount) -> Markup {
    bars(&c.per_bucket, "#b00020", "per 10 s")
}

/// `12.3 ms`, `420 ms`, `—`.
fn ms(v: Option<f64>) -> String {
    match v {
        None => "—".to_owned(),
        Some(v) if v < 1.0 => format!("{v:.2} ms"),
        Some(v) if v < 100.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.0} ms"),
    }
}

/// Counts as bars, scaled to the largest; a title lists the numbers.
fn bars(counts: &[u64; BUCKETS], colour: &str, what: &str) -> Markup {
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut title = format!("{what}, oldest first:");
    for c in counts {
        let _ = write!(title, " {c}");
    }
    html! {
        svg.spark width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
            title { (title) }
            @for (i, &c) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                @let h = ((c as f64 / max) * (H - 1) as f64).max(1.0);
                rect x=(i * 5) y=(format!("{:.1}", H as f64 - h)) width="4" height=(format!("{h:.1}")) fill=(colour) {}
            }
        }
    }
}

/// p50 and p99 per bucket as two step lines on one scale (the largest p99): each bucket with
/// calls a flat segment across its column, joined to its neighbours; a bucket without calls
/// breaks the line.
fn latency(s: &Snapshot) -> Markup {
    let max = s.p99_ms.iter().flatten().copied().fold(0.0_f64, f64::max).max(0.001);
    let runs = |v: &[Option<f64>; BUCKETS]| {
        let mut runs: Vec<String> = Vec::new();
        let mut run = String::new();
        for (i, v) in v.iter().enumerate() {
            match v {
                Some(v) => {
                    let y = (H - 1) as f64 - v / max * (H - 2) as f64;
                    let _ = write!(run, "{},{y:.1} {},{y:.1} ", i * 5, i * 5 + 5);
                }
                None if !run.is_empty() => runs.push(std::mem::take(&mut run).trim_end().to_owned()),
                None => {}
            }
        }
        if !run.is_empty() {
            runs.push(run.trim_end().to_owned());
        }
        runs
    };
    let title = format!(
        "latency per 10 s: p50 {} … {}, p99 up to {}",
        ms(s.p50_ms.iter().flatten().copied().reduce(f64::min)),
        ms(s.p50_ms.iter().flatten().copied().reduce(f64::max)),
        ms(s.p99_ms.iter().flatten().copied().reduce(f64::max)),
    );
    html! {
        svg.spark width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
            title { (title) }
            @for points in runs(&s.p99_ms) {
                polyline points=(points) fill="none" stroke="#d9822b" stroke-width="1.5" {}
            }
            @for points in runs(&s.p50_ms) {
                polyline points=(points) fill="none" stroke="#3566a8" stroke-width="1.5" {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::window::Window;
    use std::time::Duration;

    fn traffic() -> Vec<RouteTraffic> {
        let t0 = Instant::now();
        let w = Window::starting_at(t0);
        for i in 0..4u64 {
            w.record(t0 + Duration::from_secs(i * 10), Duration::from_millis(3), None);
        }
        w.record(t0, Duration::from_millis(40), Some("upstream_timeout"));
        w.platform_error(t0, 28003017);
        let snap = w.snapshot(t0 + Duration::from_secs(35));
        vec![
            RouteTraffic {
                route: "<video>".into(),
                snap,
            },
            RouteTraffic {
                route: "idle".into(),
                snap: Window::starting_at(t0).snapshot(t0),
            },
        ]
    }

    #[test]
    fn routes_codes_and_sparklines() {
        let page = render(&traffic()).into_string();
        assert!(!page.contains("<video>"), "escaped: {page}");
        for part in [
            "<tr><td>&lt;video&gt;</td><td class=\"n\">5</td><td class=\"n bad\">2</td>",
            "<tr><td>idle</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">—</td>",
            "<tr><td>&lt;video&gt;</td><td>gateway</td><td><code>upstream_timeout</code></td><td class=\"n bad\">1</td>",
            "<td>platform</td><td><code>28003017</code></td><td class=\"n bad\">1</td>",
            "<svg class=\"spark\" width=\"150\" height=\"24\" viewBox=\"0 0 150 24\" role=\"img\"",
            "<title>calls per 10 s, oldest first: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 2 1 1 1</title>",
            // The busiest bucket is full height; the others half of it.
            "<rect x=\"130\" y=\"1.0\" width=\"4\" height=\"23.0\" fill=\"#3566a8\"></rect>",
            "<rect x=\"135\" y=\"12.5\" width=\"4\" height=\"11.5\" fill=\"#3566a8\"></rect>",
            // p99 then p50, one flat segment per bucket with calls, the 4 buckets joined.
            "<polyline points=\"130,",
            " 150,",
        ] {
            assert!(page.contains(part), "{part} not in {page}");
        }
        // No bar for an empty bucket, and nothing a CSP of default-src 'none' would block.
        assert_eq!(page.matches("<rect").count(), 4 + 1 + 1 + 1);
        assert_eq!(
            page.matches("<polyline").count(),
            2,
            "one run each, none for the idle route"
        );
        assert!(!page.contains("<script") && !page.contains("href") && !page.contains("style="));
    }

    #[test]
    fn a_bucket_without_calls_breaks_the_latency_lines() {
        let t0 = Instant::now();
        let w = Window::starting_at(t0);
        w.record(t0, Duration::from_millis(3), None);
        w.record(t0 + Duration::from_secs(20), Duration::from_millis(3), None);
        let svg = latency(&w.snapshot(t0 + Duration::from_secs(20))).into_string();
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        assert!(svg.contains("points=\"135,1.0 140,1.0\""), "{svg}");
    }

    #[test]
    fn no_errors_says_so() {
        let page = render(&traffic()[1..]).into_string();
        assert!(page.contains("<tr><td colspan=\"5\">none</td></tr>"), "{page}");
        assert_eq!(ms(Some(2.345)), "2.3 ms");
        assert_eq!(ms(Some(420.4)), "420 ms");
        assert_eq!(ms(Some(0.034)), "0.03 ms");
    }
}
