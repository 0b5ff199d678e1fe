//! The time of a log line as tracing-subscriber's default timer writes it (RFC 3339, UTC, to the
//! microsecond: `2026-12-05T13:19:25.123456Z`), its date and time of day worked out once a
//! second per thread rather than once a line.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The second last written by this thread, and its `YYYY-MM-DDTHH:MM:SS.`.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// Appends the time now.
pub(super) fn timestamp(buf: &mut Vec<u8>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    write_at(buf, now.as_secs(), now.subsec_micros());
}

fn write_at(buf: &mut Vec<u8>, secs: u64, micros: u32) {
    let prefix = SECOND.with(|s| {
        let (cached, prefix) = s.get();
        if cached == secs {
            return prefix;
        }
        let prefix = second(secs);
        s.set((secs, prefix));
        prefix
    });
    buf.extend_from_slice(&prefix);
    let mut digits = [b'0'; 7];
    let mut m = micros;
    for d in digits[..6].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    digits[6] = b'Z';
    buf.extend_from_slice(&digits);
}

/// The civil date (year, month 1–12, day 1–31) of a count of days since 1970-01-01: Howard
/// Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix second (years 0 to 9999; the civil calendar from days, as
/// Howard Hinnant's `civil_from_days`).
fn second(secs: u64) -> [u8; 20] {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u32) -> String {
        let mut b = Vec::new();
        write_at(&mut b, secs, micros);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn rfc3339_to_the_microsecond_in_utc() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(at(1_798_761_600 - 1, 120_000), "2026-12-31T23:59:59.120000Z");
        assert_eq!(at(1_798_761_600, 5), "2027-01-01T00:00:00.000005Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        // Within one second the cached prefix is used; the next second gets its own.
        assert_eq!(at(1_796_477_965, 1), "2026-12-05T13:39:25.000001Z");
        assert_eq!(at(1_796_477_965, 2), "2026-12-05T13:39:25.000002Z");
        assert_eq!(at(1_796_477_966, 3), "2026-12-05T13:39:26.000003Z");
    }
}
