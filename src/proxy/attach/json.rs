//! A JSON object body with members set by the gateway (`inject = "json_body"`, `token =
//! "app_secret"`): the token or the app's credentials set, any member the caller sent under a
//! credential's name dropped, every other member kept byte for byte and in order.

use crate::canonical;
use crate::error::GatewayError;
use bytes::Bytes;

/// The JSON object `body` with its top-level `access_token` set to `token`: every other member
/// kept byte for byte and in order, any member the caller sent named like it dropped
/// (`ACCESS_TOKEN`, `Access-Token`, `accessToken`: [`canonical::field_is`]).
pub fn json_with_token(body: &[u8], token: &str) -> Result<Bytes, GatewayError> {
    json_with(body, &[("access_token", token)])
}

/// The JSON object `body` with each top-level member of `set` set to its value (any the caller
/// sent under a name a lenient server reads as it dropped), every other member kept byte for byte
/// and in order.
pub fn json_with(body: &[u8], set: &[(&str, &str)]) -> Result<Bytes, GatewayError> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;
    use std::borrow::Cow;
    struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de> serde::Deserialize<'de> for Members<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Members<'de>, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = a.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                        out.push((k, v));
                    }
                    Ok(Members(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    let members: Members<'_> = serde_json::from_slice(body).map_err(|_| {
        GatewayError::BadRequest("this route puts the token in the JSON body: send a JSON object".into())
    })?;
    let skeletons: Vec<String> = set.iter().map(|(name, _)| canonical::skeleton(name)).collect();
    let replaced = |k: &str| skeletons.iter().any(|s| canonical::field_is(k.as_bytes(), s));
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    for (k, v) in members.0.iter().filter(|(k, _)| !replaced(k)) {
        if out.len() > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k).expect("a string");
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    for (name, value) in set {
        if out.len() > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, name).expect("a string");
        out.push(b':');
        serde_json::to_writer(&mut out, value).expect("a string");
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}
