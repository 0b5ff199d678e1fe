//! Log lines nobody can forge.
//!
//! In the text format, [`EscapeControls`] escapes every control character of an event before it
//! is written, but for the newline that ends it: `\r`, `\n`, `\xNN` (`\x09` for a tab, `\x1b` for
//! ESC, `\x7f`), and `\u{NN}` for the C1 controls and the Unicode line and paragraph separators.
//! So whatever a value from outside holds (a platform's description, an open_id, a path, a
//! header), an event stays one line, and none can write a line of its own. This is done once,
//! where the line is written, not at each call site: tracing-subscriber's fmt layer formats an
//! event into one buffer and hands it over with one `write_all` (`on_event` in `fmt_layer.rs`),
//! so the writer sees whole events. Colours are off in the text format: their escape sequences
//! would be escaped too, and a value could otherwise recolour or hide text on a terminal.
//!
//! The JSON format needs none of this: serde_json escapes every control character in a string.
//!
//! [`Escaped`] shows untrusted bytes as a field value that cannot pass for other fields either
//! (no space, no quote), for a caller's request id.
//!
//! [`access`] writes the access log off the request path, in batches.
//!
//! ```
//! use std::io::Write;
//! use tracing_subscriber::fmt::MakeWriter;
//! let out = douyin_gateway::logs::EscapeControls(Vec::new);
//! let mut w = out.make_writer();
//! w.write_all(b"description=x\r\nFAKE level=ERROR\n").unwrap();
//! assert_eq!(w.into_inner(), b"description=x\\r\\nFAKE level=ERROR\n");
//! ```

pub mod access;
mod batch;
mod clock;
pub use clock::civil_from_days;

pub use batch::Format;

use std::fmt;
use std::io;
use tracing_subscriber::fmt::MakeWriter;

/// A [`MakeWriter`] whose writers escape control characters (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub struct EscapeControls<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for EscapeControls<M> {
    type Writer = Escaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Escaping(self.0.make_writer_for(meta))
    }
}

/// A writer that escapes control characters in what it is given, one event per write.
#[derive(Debug)]
pub struct Escaping<W>(W);

impl<W> Escaping<W> {
    /// The writer inside.
    pub fn into_inner(self) -> W {
        self.0
    }
}

impl<W: io::Write> io::Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let (body, end): (&[u8], &[u8]) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, b"\n"),
            None => (buf, b""),
        };
        // Almost every line has nothing to escape: written as it is, without a copy.
        if !needs_escape(body) {
            return self.0.write_all(buf);
        }
        let mut out = Vec::with_capacity(buf.len() + 32);
        escape_into(body, &mut out);
        out.extend_from_slice(end);
        self.0.write_all(&out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether a line may hold something [`escape_into`] escapes. 0xC2 and 0xE2 lead the UTF-8 of
/// the C1 controls and of U+2028/U+2029 (and of other characters, which it leaves alone).
fn needs_escape(body: &[u8]) -> bool {
    body.iter().any(|&b| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2)
}

fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        match (b, s.get(i + 1), s.get(i + 2)) {
            (b'\r', ..) => out.extend_from_slice(b"\\r"),
            (b'\n', ..) => out.extend_from_slice(b"\\n"),
            (0..=0x1f | 0x7f, ..) => {
                out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
            }
            // U+0080..U+009F.
            (0xc2, Some(&c @ 0x80..=0x9f), _) => {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'{',
                    HEX[usize::from(c >> 4)],
                    HEX[usize::from(c & 0xf)],
                    b'}',
                ]);
                i += 1;
            }
            // U+2028, U+2029.
            (0xe2, Some(0x80), Some(&c @ (0xa8 | 0xa9))) => {
                out.extend_from_slice(if c == 0xa8 { b"\\u{2028}" } else { b"\\u{2029}" });
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
}

/// Untrusted bytes as a log field value: printable ASCII as it is, but for `"` and `\`; those, a
/// space and every other byte as `\xNN`. Nothing is allocated.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
                fmt::Write::write_char(f, char::from(b))?;
            } else {
                let hex = [b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
                f.write_str(std::str::from_utf8(&hex).expect("ascii"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn escaped(s: &str) -> String {
        let mut w = Escaping(Vec::new());
        w.write_all(s.as_bytes()).unwrap();
        String::from_utf8(w.0).unwrap()
    }

    #[test]
    fn every_control_character_but_the_final_newline_is_escaped() {
        assert_eq!(escaped("plain line é 中 …\n"), "plain line é 中 …\n");
        assert_eq!(escaped("a\r\nFAKE level=ERROR\n"), "a\\r\\nFAKE level=ERROR\n");
        assert_eq!(
            escaped("tab\there\x1b[31mred\x7f\0\n"),
            "tab\\x09here\\x1b[31mred\\x7f\\x00\n"
        );
        assert_eq!(
            escaped("nel\u{85}ls\u{2028}ps\u{2029}°\n"),
            "nel\\u{85}ls\\u{2028}ps\\u{2029}°\n"
        );
        assert_eq!(escaped("two\n\n"), "two\\n\n", "only the last newline ends the line");
        assert_eq!(escaped("no end\r"), "no end\\r");
    }

    #[test]
    fn untrusted_bytes_show_as_one_field_value() {
        let shown = Escaped(b"\"><script> status=500\\\xff\x01").to_string();
        assert_eq!(shown, "\\x22><script>\\x20status=500\\x5c\\xff\\x01");
        assert_eq!(Escaped(b"req-1.2:3_x").to_string(), "req-1.2:3_x");
    }

    #[test]
    fn a_subscriber_writing_through_it_writes_each_event_on_one_line() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let writer = {
            let out = out.clone();
            EscapeControls(move || out.clone())
        };
        let subscriber = tracing_subscriber::fmt().with_writer(writer).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            let open_id = "u\r\nFAKE level=ERROR";
            tracing::info!(open_id = %open_id, "deleted {}", "x\ny");
            tracing::warn!("second");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains(r"deleted x\ny open_id=u\r\nFAKE level=ERROR"),
            "{text}"
        );
    }
}
