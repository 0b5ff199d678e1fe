//! The platform's RSA signatures (its "签名算法" and "签名及验签指南" pages): a request signed with
//! the app's private key, sent as
//! `Byte-Authorization: SHA256-RSA2048 appid="…",nonce_str="…",timestamp="…",key_version="…",signature="…"`
//! over `METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n`; answers and callbacks signed with the platform's
//! key for the app, as `Byte-Timestamp`, `Byte-Nonce-Str` and `Byte-Signature` over
//! `TIMESTAMP\nNONCE\nBODY\n`. RSA (2048 to 8192 bits), SHA-256, PKCS#1 v1.5, base64.
//!
//! ring does the arithmetic (the same crate rustls uses, constant time); keys are read from PEM
//! (or bare base64 DER, as the platform's console shows a public key).
//!
//! ```
//! use douyin_gateway::signature::{answer_message, SigningKey, VerifyingKey};
//! let private = std::fs::read_to_string("fixtures/keys/platform-private.pem").unwrap();
//! let public = std::fs::read_to_string("fixtures/keys/platform-public.pem").unwrap();
//! let (key, check) = (SigningKey::from_pem(&private).unwrap(), VerifyingKey::from_pem(&public).unwrap());
//! let message = answer_message("1700000000", "n0nce", br#"{"err_no":0}"#);
//! assert!(check.verify(&message, &key.sign(&message)));
//! assert!(!check.verify(&answer_message("1700000000", "n0nce", b"{}"), &key.sign(&message)));
//! ```

use base64::Engine;
use ring::signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::{PemObject, SectionKind};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The header a signed request carries.
pub static BYTE_AUTHORIZATION: http::HeaderName = http::HeaderName::from_static("byte-authorization");
/// An answer's (or callback's) signing time, Unix seconds.
pub static BYTE_TIMESTAMP: http::HeaderName = http::HeaderName::from_static("byte-timestamp");
/// An answer's (or callback's) nonce.
pub static BYTE_NONCE: http::HeaderName = http::HeaderName::from_static("byte-nonce-str");
/// An answer's (or callback's) signature, base64.
pub static BYTE_SIGNATURE: http::HeaderName = http::HeaderName::from_static("byte-signature");

/// An RSA private key that signs (the app's). Never printed.
pub struct SigningKey(RsaKeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey([redacted], {} bits)", self.bits())
    }
}

impl SigningKey {
    /// Reads a PEM `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1), or the PKCS#8 DER as
    /// bare base64. Refuses keys under 2048 bits (and over 8192).
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let (kind, der) = match <(SectionKind, Vec<u8>)>::from_pem_slice(text.as_bytes()) {
            Ok(section) => section,
            Err(_) => (SectionKind::PrivateKey, bare_base64(text)?),
        };
        let pair = match kind {
            SectionKind::PrivateKey => RsaKeyPair::from_pkcs8(&der),
            SectionKind::RsaPrivateKey => RsaKeyPair::from_der(&der),
            other => return Err(format!("a {other:?} PEM section is not an RSA private key")),
        }
        .map_err(|e| format!("not a usable RSA private key (2048 to 8192 bits): {e}"))?;
        Ok(SigningKey(pair))
    }

    /// The modulus size.
    pub fn bits(&self) -> usize {
        self.0.public().modulus_len() * 8
    }

    /// `message` signed: RSA PKCS#1 v1.5 over SHA-256, base64.
    pub fn sign(&self, message: &[u8]) -> String {
        let mut out = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), message, &mut out)
            .expect("a key of a supported size signs");
        B64.encode(out)
    }
}

/// An RSA public key that checks signatures (the platform's for an app).
#[derive(Clone)]
pub struct VerifyingKey(Vec<u8>);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyingKey")
    }
}

impl VerifyingKey {
    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), or its DER as bare base64.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let spki = match rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes()) {
            Ok(spki) => spki.as_ref().to_vec(),
            Err(_) => bare_base64(text)?,
        };
        let key = rsa_public_key(&spki).ok_or("not an RSA public key (SubjectPublicKeyInfo)")?;
        // Checked once here, so a key that could never verify is refused at start.
        if !(256..=1024).contains(&modulus_len(&key).unwrap_or(0)) {
            return Err("the RSA public key must have 2048 to 8192 bits".into());
        }
        Ok(VerifyingKey(key))
    }

    /// Whether `signature` (base64) is this key's over `message`.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Ok(sig) = B64.decode(signature.trim()) else {
            return false;
        };
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.0)
            .verify(message, &sig)
            .is_ok()
    }
}

/// What a request's signature covers: `METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n`, the URI being the
/// path and query as sent (no host), the body empty for GET.
pub fn request_message(method: &str, uri: &str, timestamp: u64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{}\n{uri}\n{timestamp}\n{nonce}\n", method.to_ascii_uppercase()).into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// What an answer's or callback's signature covers: `TIMESTAMP\nNONCE\nBODY\n`.
pub fn answer_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The header the gateway signs what it sends to its own receivers with (`[[notify]]`,
/// `[[callbacks]]`, `[[webhook_forward]]`).
pub static X_GATEWAY_SIGNATURE: http::HeaderName = http::HeaderName::from_static("x-gateway-signature");

/// The `X-Gateway-Signature` value of a body sent to a receiver: `sha256=HEX`, HMAC-SHA256 of the
/// body with the receiver's key.
pub fn gateway_signature(key: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A fresh nonce: 32 characters of letters and digits.
pub fn nonce() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..32)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The `Byte-Authorization` value of a request signed now by `key`.
#[allow(clippy::too_many_arguments)]
pub fn byte_authorization(
    key: &SigningKey,
    appid: &str,
    key_version: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: u64,
    nonce: &str,
) -> String {
    let signature = key.sign(&request_message(method, uri, timestamp, nonce, body));
    format!(
        "SHA256-RSA2048 appid=\"{appid}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",key_version=\"{key_version}\",signature=\"{signature}\""
    )
}

/// The fields of a `Byte-Authorization` value, by name (the sandbox's verifier reads them).
pub fn authorization_fields(value: &str) -> Option<std::collections::HashMap<String, String>> {
    let rest = value.strip_prefix("SHA256-RSA2048 ")?;
    let mut out = std::collections::HashMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        out.insert(k.to_string(), v.trim_matches('"').to_string());
    }
    Some(out)
}

/// Base64 DER in a file without PEM lines (what the platform's console shows).
fn bare_base64(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(compact)
        .map_err(|_| "neither PEM nor base64 DER".to_string())
}

/// One DER element at the start of `der`: its tag, content and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The PKCS#1 `RSAPublicKey` inside a SubjectPublicKeyInfo whose algorithm is rsaEncryption.
fn rsa_public_key(spki: &[u8]) -> Option<Vec<u8>> {
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (0x30, inner, _) = der_element(spki)? else {
        return None;
    };
    let (0x30, algorithm, rest) = der_element(inner)? else {
        return None;
    };
    let (0x06, oid, _) = der_element(algorithm)? else {
        return None;
    };
    if oid != RSA_ENCRYPTION {
        return None;
    }
    let (0x03, bits, _) = der_element(rest)? else {
        return None;
    };
    let (&0, key) = bits.split_first()? else { return None };
    Some(key.to_vec())
}

/// The modulus length in bytes of a PKCS#1 `RSAPublicKey` (leading zero octet aside).
fn modulus_len(key: &[u8]) -> Option<usize> {
    let (0x30, inner, _) = der_element(key)? else {
        return None;
    };
    let (0x02, modulus, _) = der_element(inner)? else {
        return None;
    };
    Some(modulus.iter().skip_while(|&&b| b == 0).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_signature_is_hmac_sha256_in_hex() {
        // The well-known HMAC-SHA256 example (Wikipedia's "quick brown fox").
        assert_eq!(
            gateway_signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    fn key(name: &str) -> String {
        std::fs::read_to_string(format!("{}/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn a_request_signature_covers_exactly_the_bytes_sent() {
        let (app, public) = (
            SigningKey::from_pem(&key("app-private.pem")).unwrap(),
            VerifyingKey::from_pem(&key("app-public.pem")).unwrap(),
        );
        assert_eq!(app.bits(), 2048);
        let value = byte_authorization(
            &app,
            "tt123",
            "1",
            "post",
            "/api/apps/trade/v2/x?a=1",
            b"{}",
            1_700_000_000,
            "N",
        );
        let f = authorization_fields(&value).unwrap();
        assert_eq!(
            (f["appid"].as_str(), f["timestamp"].as_str(), f["nonce_str"].as_str()),
            ("tt123", "1700000000", "N")
        );
        let signed = request_message("POST", "/api/apps/trade/v2/x?a=1", 1_700_000_000, "N", b"{}");
        assert_eq!(signed, b"POST\n/api/apps/trade/v2/x?a=1\n1700000000\nN\n{}\n");
        assert!(public.verify(&signed, &f["signature"]));
        for other in [
            request_message("POST", "/api/apps/trade/v2/x?a=2", 1_700_000_000, "N", b"{}"),
            request_message("POST", "/api/apps/trade/v2/x?a=1", 1_700_000_001, "N", b"{}"),
            request_message("POST", "/api/apps/trade/v2/x?a=1", 1_700_000_000, "N", b"{ }"),
        ] {
            assert!(!public.verify(&other, &f["signature"]));
        }
    }

    #[test]
    fn keys_are_read_in_their_usual_forms_and_weak_or_wrong_ones_refused() {
        let pkcs1 = SigningKey::from_pem(&key("app-private-pkcs1.pem")).unwrap();
        let public = VerifyingKey::from_pem(&key("app-public.pem")).unwrap();
        assert!(public.verify(b"m", &pkcs1.sign(b"m")));
        // The public key as the console shows it: base64 without the PEM lines.
        let bare: String = key("app-public.pem")
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(VerifyingKey::from_pem(&bare).unwrap().verify(b"m", &pkcs1.sign(b"m")));
        assert!(SigningKey::from_pem(&key("weak-1024.pem")).is_err(), "under 2048 bits");
        assert!(SigningKey::from_pem(&key("app-public.pem")).is_err());
        assert!(VerifyingKey::from_pem(&key("app-private.pem")).is_err());
        assert!(VerifyingKey::from_pem("not a key").is_err());
        assert!(!format!("{pkcs1:?}").contains("BEGIN"));
        assert!(!public.verify(b"m", "not base64!"));
    }

    #[test]
    fn nonces_are_32_letters_and_digits_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
