//! The third-party platform's message signature and encryption ("消息加解密"), as the events a
//! service provider's authorization event URL receives use them:
//! `{"Nonce","TimeStamp","Encrypt","MsgSignature"}`.
//!
//! - `MsgSignature` = lowercase hex SHA-1 of the ordinal-sorted concatenation of the message
//!   token, `TimeStamp`, `Nonce` and `Encrypt` ([`msg_signature`], checked in constant time by
//!   [`verify_signature`]).
//! - `Encrypt` = base64 of AES-256-CBC, key = base64-decode(message key + "=") (the key has 43
//!   characters), IV = the key's first 16 bytes, PKCS#7 padding to a multiple of 32, over 32
//!   random bytes ‖ the message's length (4 bytes, big-endian) ‖ the message (JSON) ‖ the
//!   component appid ([`decrypt`], [`encrypt`]).
//!
//! A leaf: it knows nothing of the gateway. Every malformed input is an [`Error`], never a panic.
//!
//! ```
//! use douyin_gateway::provider_crypto::{decrypt, encrypt, MessageKey};
//! let key = MessageKey::parse("CAoJaFLeTHIV/P5ehOAcKXPehZhj0ZIxRZDu3diVPds").unwrap();
//! let sealed = encrypt(&key, br#"{"Event":"PUSH"}"#, "tt_component");
//! let (message, appid) = decrypt(&key, &sealed).unwrap();
//! assert_eq!((message.as_slice(), appid.as_str()), (&br#"{"Event":"PUSH"}"#[..], "tt_component"));
//! ```

use aes_gcm::aes::Aes256;
use base64::Engine;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The random prefix of a plain text.
const RANDOM_LEN: usize = 32;
/// The padding block: PKCS#7 to a multiple of 32, not AES's 16.
const PAD_BLOCK: usize = 32;
/// The length of a message key as the console shows it.
pub const MESSAGE_KEY_LEN: usize = 43;

/// Why a message could not be opened. None of them says anything of the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The message key is not 43 characters of base64.
    #[error("the message key must be 43 characters of base64 (the console's message encryption key)")]
    BadKey,
    /// `Encrypt` is not base64, or not whole AES blocks.
    #[error("Encrypt is not base64 of whole AES blocks")]
    NotCiphertext,
    /// The padding is not PKCS#7 (a wrong key, most often).
    #[error("the decrypted text has no valid padding (wrong message key?)")]
    BadPadding,
    /// The length field overruns the text, or the text is shorter than its header.
    #[error("the decrypted text's length field does not fit the text")]
    BadLength,
    /// The component appid at the end is not UTF-8.
    #[error("the decrypted text's appid is not UTF-8")]
    BadAppid,
}

/// A provider's message encryption key, decoded: the AES-256 key. Never printed.
#[derive(Clone)]
pub struct MessageKey([u8; 32]);

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKey([redacted])")
    }
}

impl MessageKey {
    /// Decodes the console's 43-character key (base64 of 32 bytes without its `=`; with it, 44
    /// characters, is accepted too).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let text = text.strip_suffix('=').unwrap_or(text);
        if text.len() != MESSAGE_KEY_LEN {
            return Err(Error::BadKey);
        }
        // The 43rd character carries 2 bits of padding some consoles do not zero: decode leniently.
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let bytes = engine.decode(format!("{text}=")).map_err(|_| Error::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| Error::BadKey)?;
        Ok(MessageKey(key))
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

/// The lowercase hex SHA-1 of the four strings sorted by their bytes and concatenated.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut hash = Sha1::new();
    for p in parts {
        hash.update(p.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// Whether `signature` is the event's signature (hex, either case), compared in constant time.
pub fn verify_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str, signature: &str) -> bool {
    let want = msg_signature(token, timestamp, nonce, encrypt);
    let got = signature.to_ascii_lowercase();
    want.len() == got.len() && bool::from(want.as_bytes().ct_eq(got.as_bytes()))
}

/// Opens `Encrypt`: the message and the component appid it ends with.
pub fn decrypt(key: &MessageKey, encrypt_b64: &str) -> Result<(Vec<u8>, String), Error> {
    let mut buf = B64.decode(encrypt_b64.trim()).map_err(|_| Error::NotCiphertext)?;
    if buf.is_empty() || buf.len() % 16 != 0 {
        return Err(Error::NotCiphertext);
    }
    let plain = cbc::Decryptor::<Aes256>::new(&key.0.into(), &key.iv().into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| Error::NotCiphertext)?;
    let plain = unpad(plain)?;
    let body = plain.get(RANDOM_LEN..).ok_or(Error::BadLength)?;
    let (len, rest) = body.split_first_chunk::<4>().ok_or(Error::BadLength)?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(Error::BadLength);
    }
    let (message, appid) = rest.split_at(len);
    let appid = std::str::from_utf8(appid).map_err(|_| Error::BadAppid)?;
    Ok((message.to_vec(), appid.to_string()))
}

/// PKCS#7 (blocks of 32): the last byte says how many bytes of that value end the text.
fn unpad(plain: &[u8]) -> Result<&[u8], Error> {
    let n = *plain.last().ok_or(Error::BadPadding)? as usize;
    if n == 0 || n > PAD_BLOCK || n > plain.len() {
        return Err(Error::BadPadding);
    }
    let (text, pad) = plain.split_at(plain.len() - n);
    if pad.iter().any(|b| *b as usize != n) {
        return Err(Error::BadPadding);
    }
    Ok(text)
}

/// Seals `message` for `appid` as the platform does (32 fresh random bytes first): the
/// `Encrypt` field, base64.
pub fn encrypt(key: &MessageKey, message: &[u8], appid: &str) -> String {
    let mut plain = Vec::with_capacity(RANDOM_LEN + 4 + message.len() + appid.len() + PAD_BLOCK);
    plain.extend_from_slice(&rand::random::<[u8; RANDOM_LEN]>());
    plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
    plain.extend_from_slice(message);
    plain.extend_from_slice(appid.as_bytes());
    let n = PAD_BLOCK - plain.len() % PAD_BLOCK;
    plain.resize(plain.len() + n, n as u8);
    let len = plain.len();
    let sealed = cbc::Encryptor::<Aes256>::new(&key.0.into(), &key.iv().into())
        .encrypt_padded_mut::<NoPadding>(&mut plain, len)
        .expect("whole blocks");
    B64.encode(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "CAoJaFLeTHIV/P5ehOAcKXPehZhj0ZIxRZDu3diVPds";

    fn key() -> MessageKey {
        MessageKey::parse(KEY).unwrap()
    }

    #[test]
    fn signature_sorts_the_four_strings_by_bytes() {
        let mut hash = Sha1::new();
        // "1535551395" < "4464221" < "Zed" < "abc": digits, upper case, lower case.
        hash.update(b"15355513954464221Zedabc");
        let want = hex::encode(hash.finalize());
        assert_eq!(msg_signature("abc", "1535551395", "4464221", "Zed"), want);
        assert_eq!(msg_signature("Zed", "4464221", "abc", "1535551395"), want);
        assert!(verify_signature(
            "abc",
            "1535551395",
            "4464221",
            "Zed",
            &want.to_uppercase()
        ));
        assert!(!verify_signature("abd", "1535551395", "4464221", "Zed", &want));
        assert!(!verify_signature("abc", "1535551395", "4464221", "Zed", &want[..39]));
        assert!(!verify_signature("abc", "1535551395", "4464221", "Zed", ""));
    }

    #[test]
    fn round_trip_and_layout() {
        let msg = br#"{"Ticket":"t","MsgType":"Ticket","Event":"PUSH"}"#;
        let sealed = encrypt(&key(), msg, "tt_component_sandbox");
        let raw = B64.decode(&sealed).unwrap();
        assert_eq!(raw.len() % PAD_BLOCK, 0, "padded to a multiple of 32");
        let (m, appid) = decrypt(&key(), &sealed).unwrap();
        assert_eq!((m.as_slice(), appid.as_str()), (&msg[..], "tt_component_sandbox"));
        // Fresh random bytes each time.
        assert_ne!(sealed, encrypt(&key(), msg, "tt_component_sandbox"));
        // A message whose plain text is already a multiple of 32 gets a whole block of padding.
        let exact = vec![b'x'; 64 - RANDOM_LEN - 4 - 4];
        let sealed = encrypt(&key(), &exact, "abcd");
        assert_eq!(B64.decode(&sealed).unwrap().len(), 96);
        assert_eq!(decrypt(&key(), &sealed).unwrap().0, exact);
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(MessageKey::parse("short").unwrap_err(), Error::BadKey);
        assert_eq!(MessageKey::parse(&"*".repeat(43)).unwrap_err(), Error::BadKey);
        assert_eq!(MessageKey::parse(&format!("{KEY}==")).unwrap_err(), Error::BadKey);
        assert_eq!(
            MessageKey::parse(&format!("{KEY}=")).unwrap().0,
            key().0,
            "its padding is allowed"
        );
        assert!(!format!("{:?}", key()).contains(KEY));
    }

    /// Encrypts raw bytes under the key, no framing.
    fn seal_raw(plain: &mut [u8]) -> String {
        let len = plain.len();
        let k = key();
        let out = cbc::Encryptor::<Aes256>::new(&k.0.into(), &k.iv().into())
            .encrypt_padded_mut::<NoPadding>(plain, len)
            .unwrap();
        B64.encode(out)
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let sealed = encrypt(&key(), b"{}", "app");
        let other = MessageKey::parse("AAoJaFLeTHIV/P5ehOAcKXPehZhj0ZIxRZDu3diVPds").unwrap();
        assert!(matches!(
            decrypt(&other, &sealed),
            Err(Error::BadPadding | Error::BadLength | Error::BadAppid)
        ));
        assert_eq!(decrypt(&key(), "not base64!"), Err(Error::NotCiphertext));
        assert_eq!(decrypt(&key(), ""), Err(Error::NotCiphertext));
        assert_eq!(decrypt(&key(), &B64.encode([0u8; 15])), Err(Error::NotCiphertext));
        // Padding bytes that disagree, or a zero, or more than 32.
        let mut bad = vec![7u8; 64];
        bad[63] = 3;
        bad[62] = 4;
        assert_eq!(decrypt(&key(), &seal_raw(&mut bad)), Err(Error::BadPadding));
        let mut zero = vec![0u8; 64];
        assert_eq!(decrypt(&key(), &seal_raw(&mut zero)), Err(Error::BadPadding));
        let mut big = vec![33u8; 64];
        assert_eq!(decrypt(&key(), &seal_raw(&mut big)), Err(Error::BadPadding));
        // A length that overruns the text.
        let mut over = vec![0u8; 64];
        over[RANDOM_LEN..RANDOM_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        over[63] = 1;
        assert_eq!(decrypt(&key(), &seal_raw(&mut over)), Err(Error::BadLength));
        // Shorter than the random prefix and the length field.
        let mut short = vec![32u8; 32];
        assert_eq!(decrypt(&key(), &seal_raw(&mut short)), Err(Error::BadLength));
    }
}
