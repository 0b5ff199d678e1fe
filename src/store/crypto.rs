//! Encryption at rest: AES-256-GCM, a fresh random nonce per write, the
//! record's identity as associated data (a ciphertext cannot be moved to
//! another user's row), and a key id in front so old records can be read
//! with the previous key while the key rotates.
//!
//! Sealed layout: `key_id (8 bytes) | nonce (12 bytes) | ciphertext+tag`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

/// Bytes of the key id in front of every record.
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;

/// One AES-256 key and its id (the first 8 bytes of its SHA-256).
#[derive(Clone)]
pub struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id_hex())
    }
}

impl Key {
    /// A key from base64 (as `douyin-gateway keygen` prints it).
    pub fn from_base64(b64: &str) -> Result<Key, String> {
        Ok(Key::from_raw(&crate::secret::key_from_base64(b64)?))
    }

    /// The key from an environment variable.
    pub fn from_env(var: &str) -> Result<Key, String> {
        Ok(Key::from_raw(&crate::secret::key_from_env(var)?))
    }

    fn from_raw(raw: &[u8; 32]) -> Key {
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&Sha256::digest(raw)[..KEY_ID_LEN]);
        Key {
            id,
            cipher: Aes256Gcm::new_from_slice(raw).expect("32 bytes"),
        }
    }

    /// Hex key id, for messages.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

/// The current key, and the previous one during a rotation.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Writes use this.
    pub current: Key,
    /// Reads also accept this.
    pub previous: Option<Key>,
}

/// Why a sealed record could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Written under a key that is not configured.
    #[error("written with key id {found}, but the configured key is {current}{previous}: set encryption_key_env to the key it was written with (or previous_encryption_key_env during a rotation)")]
    UnknownKey {
        /// The record's key id.
        found: String,
        /// The current key's id.
        current: String,
        /// ", previous …" or empty.
        previous: String,
    },
    /// The key id matched but the data did not authenticate.
    #[error("does not decrypt: the record is damaged or was moved from another row")]
    Corrupt,
}

impl Keys {
    /// Encrypts `plain`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ct = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("AES-GCM encryption cannot fail for these sizes");
        let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + ct.len());
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts; also says whether it was under the previous key (so it should be rewritten).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<(Vec<u8>, bool), OpenError> {
        if sealed.len() < KEY_ID_LEN + NONCE_LEN {
            return Err(OpenError::Corrupt);
        }
        let (id, rest) = sealed.split_at(KEY_ID_LEN);
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let (key, old) = if id == self.current.id {
            (&self.current, false)
        } else if let Some(p) = self.previous.as_ref().filter(|p| p.id == id) {
            (p, true)
        } else {
            return Err(OpenError::UnknownKey {
                found: hex::encode(id),
                current: self.current.id_hex(),
                previous: self
                    .previous
                    .as_ref()
                    .map(|p| format!(", previous {}", p.id_hex()))
                    .unwrap_or_default(),
            });
        };
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| OpenError::Corrupt)?;
        Ok((plain, old))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn key() -> Key {
        Key::from_base64(&base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())).unwrap()
    }

    #[test]
    fn round_trip_rotation_and_binding() {
        let (k1, k2) = (key(), key());
        let old = Keys {
            current: k1.clone(),
            previous: None,
        };
        let sealed = old.seal(b"main/user/ou_1", b"act.secret");
        assert!(!sealed.windows(10).any(|w| w == b"act.secret"));
        assert_eq!(
            old.open(b"main/user/ou_1", &sealed).unwrap(),
            (b"act.secret".to_vec(), false)
        );
        assert!(
            matches!(old.open(b"main/user/ou_2", &sealed), Err(OpenError::Corrupt)),
            "bound to its row"
        );
        assert_ne!(old.seal(b"a", b"x"), old.seal(b"a", b"x"), "fresh nonce per write");

        let rotating = Keys {
            current: k2.clone(),
            previous: Some(k1),
        };
        assert_eq!(
            rotating.open(b"main/user/ou_1", &sealed).unwrap(),
            (b"act.secret".to_vec(), true)
        );
        let new_only = Keys {
            current: k2,
            previous: None,
        };
        let err = new_only.open(b"main/user/ou_1", &sealed).unwrap_err();
        assert!(matches!(err, OpenError::UnknownKey { .. }), "{err}");
        assert!(Key::from_base64("c2hvcnQ=").is_err());
    }
}
