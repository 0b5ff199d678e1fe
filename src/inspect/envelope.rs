//! Reading the code fields of a body in any envelope, and nothing else: numbers that may arrive
//! as strings, parts that may be objects or anything else.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// The non-zero error codes a body carries, in envelope order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Codes(Vec<i64>);

impl Codes {
    /// Whether the body said "success".
    pub fn is_ok(&self) -> bool {
        self.0.is_empty()
    }
    /// The first code.
    pub fn first(&self) -> Option<i64> {
        self.0.first().copied()
    }
    /// Every code, in envelope order.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.0.iter().copied()
    }
}

/// A number that may arrive as a string: `0`, `"0"`, `0.0`; anything else is `None`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lenient(pub Option<i64>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or numeric string")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Lenient, E> {
                Ok(Lenient(Some(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Lenient, E> {
                Ok(Lenient(i64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Lenient, E> {
                Ok(Lenient((v.fract() == 0.0).then_some(v as i64)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Lenient, E> {
                Ok(Lenient(v.trim().parse().ok()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Lenient, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Lenient, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `data` / `extra` / `err`: an object whose code fields we read, or anything else.
#[derive(Default)]
struct Part {
    error_code: Option<i64>,
    sub_error_code: Option<i64>,
    err_code: Option<i64>,
}

/// A key of a [`Part`], read without copying it (a `Cow<str>` key is always copied into a
/// `String` by serde: an allocation per key of every answer inspected, profiled at 3,500
/// instructions a call).
enum Field {
    ErrorCode,
    SubErrorCode,
    ErrCode,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "error_code" => Field::ErrorCode,
                    "sub_error_code" => Field::SubErrorCode,
                    "err_code" => Field::ErrCode,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Part;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Part, A::Error> {
                let mut p = Part::default();
                while let Some(k) = a.next_key::<Field>()? {
                    match k {
                        Field::ErrorCode => p.error_code = a.next_value::<Lenient>()?.0,
                        Field::SubErrorCode => p.sub_error_code = a.next_value::<Lenient>()?.0,
                        Field::ErrCode => p.err_code = a.next_value::<Lenient>()?.0,
                        Field::Other => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(p)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Part, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Part::default())
            }
            fn visit_unit<E>(self) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Part, E> {
                Ok(Part::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope {
    data: Part,
    extra: Part,
    err: Part,
    error_code: Lenient,
    err_no: Lenient,
    errcode: Lenient,
    /// The third-party platform's V1 APIs (`open.microapp.bytedance.com/openapi/v1/…`):
    /// `{"errno","message"}`.
    errno: Lenient,
}

/// The first byte of a JSON object: serde would also read a struct from an array, and only objects
/// are envelopes.
const OBJECT_START: u8 = b'{';

/// The error codes in a JSON body; `None` when it is not a JSON object.
pub fn codes(body: &[u8]) -> Option<Codes> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&OBJECT_START) {
        return None;
    }
    // serde checks the UTF-8 of every string it reads from a byte slice (each key: about 1,100
    // instructions a call, profiled); one check of the whole body lets it read a `str` without
    // them. A body that is not UTF-8 is read as bytes, as before: serde still accepts one whose
    // invalid bytes are only in values it skips.
    let env: Envelope = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text).ok()?,
        Err(_) => serde_json::from_slice(body).ok()?,
    };
    let all = [
        env.data.error_code,
        env.extra.error_code,
        env.extra.sub_error_code,
        env.err.err_code,
        env.error_code.0,
        env.err_no.0,
        env.errcode.0,
        env.errno.0,
    ];
    let mut out = Vec::new();
    for c in all.into_iter().flatten() {
        if c != 0 && !out.contains(&c) {
            out.push(c);
        }
    }
    Some(Codes(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_and_odd_shapes() {
        assert!(codes(br#"{"data":{"error_code":"0"},"extra":{"error_code":"0"}}"#)
            .unwrap()
            .is_ok());
        assert_eq!(
            codes(br#"{"err_no":"28001008","data":null}"#).unwrap().first(),
            Some(28001008)
        );
        assert_eq!(
            codes(r#"{"errno":11016,"message":"access_token不正确或者已过期"}"#.as_bytes())
                .unwrap()
                .first(),
            Some(11016)
        );
        assert_eq!(
            codes(br#"{"errno":0,"message":"success","data":{}}"#).unwrap().first(),
            None
        );
        // A key written with escapes is the same key.
        assert_eq!(
            codes(br#"{"data":{"error\u005fcode":10008,"x\"y":1}}"#)
                .unwrap()
                .first(),
            Some(10008)
        );
        assert_eq!(
            codes(br#"{"data":[1,2],"errcode":40004}"#).unwrap().first(),
            Some(40004)
        );
        assert_eq!(
            codes(br#"{"data":"x","error_code":10010.0}"#).unwrap().first(),
            Some(10010)
        );
        // Not UTF-8: read as before, where serde skips the bad bytes (a value it ignores) and
        // refuses them where it reads a string (a key, a code).
        assert_eq!(
            codes(b"{\"data\":{\"error_code\":10008,\"x\":\"\xff\xfe\"}}")
                .unwrap()
                .first(),
            Some(10008)
        );
        assert!(codes(b"{\"data\":{\"error_code\":\"1\xff\"}}").is_none());
        assert!(codes(b"{\"\xff\":1,\"errcode\":40004}").is_none());
        assert!(codes(b"not json").is_none());
        assert!(codes(b"[1,2]").is_none());
    }
}
