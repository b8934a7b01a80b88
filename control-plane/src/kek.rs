//! Provider secrets stored through the admin API are encrypted at rest with AES-256-GCM under a
//! key-encryption key (KEK) from the environment: `TOLLGATE_KEK` (32 bytes, base64 or 64 hex
//! digits). The credential's name is the associated data, so a ciphertext moved to another row
//! does not decrypt. Each ciphertext names its KEK by id (the first 8 bytes of the KEK's
//! SHA-256, hex), never the KEK itself.
//!
//! Rotation: start the control plane with the new KEK in `TOLLGATE_KEK` and the old one in
//! `TOLLGATE_KEK_PREVIOUS`; at start it re-encrypts every stored secret under the new KEK (one
//! transaction, audited as `credential.reencrypt`); then `TOLLGATE_KEK_PREVIOUS` can go. A
//! secret whose KEK is not configured does not decrypt: its credential is not served (reported
//! as a problem of the models that use it), never served with a wrong key.

use std::sync::OnceLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::model::{SecretMaterial, StoredSecret};

pub const KEK_ENV: &str = "TOLLGATE_KEK";
pub const PREVIOUS_KEK_ENV: &str = "TOLLGATE_KEK_PREVIOUS";

pub struct Kek {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Kek {
    /// From 32 bytes written as base64 (standard or URL-safe, padded or not) or 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| e.to_string())?
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines.iter().find_map(|e| e.decode(text).ok()).ok_or("is neither base64 nor 64 hex digits")?
        };
        if bytes.len() != 32 {
            return Err(format!("must be 32 bytes (it is {}); make one with `openssl rand -base64 32`", bytes.len()));
        }
        let id = hex::encode(&Sha256::digest(&bytes)[..8]);
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(Self { id, cipher })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The KEKs the control plane has: the current one (encrypts) and the previous (decrypts only).
#[derive(Debug, Default)]
pub struct Keyring {
    pub current: Option<Kek>,
    pub previous: Option<Kek>,
}

impl Keyring {
    pub fn from_env() -> Result<Self, String> {
        let read = |var: &str| -> Result<Option<Kek>, String> {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Kek::parse(&v).map(Some).map_err(|e| format!("{var} {e}")),
                _ => Ok(None),
            }
        };
        Ok(Self { current: read(KEK_ENV)?, previous: read(PREVIOUS_KEK_ENV)? })
    }

    /// Encrypts `material` for credential `name` under the current KEK.
    pub fn encrypt(&self, name: &str, material: &SecretMaterial) -> Result<StoredSecret, String> {
        let kek = self.current.as_ref().ok_or_else(|| {
            format!("storing a provider secret needs a key-encryption key: set {KEK_ENV} (32 bytes, e.g. `openssl rand -base64 32`) and restart the control plane, or reference an environment variable instead")
        })?;
        let plain = serde_json::to_vec(material).map_err(|e| e.to_string())?;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = kek
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: name.as_bytes() })
            .map_err(|_| "encryption failed".to_owned())?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(StoredSecret { kek_id: kek.id.clone(), nonce: b64.encode(nonce), ciphertext: b64.encode(ciphertext), fingerprint: material.fingerprint() })
    }

    /// Decrypts a stored secret with whichever configured KEK encrypted it.
    pub fn decrypt(&self, name: &str, stored: &StoredSecret) -> Option<SecretMaterial> {
        let kek = [&self.current, &self.previous].into_iter().flatten().find(|k| k.id == stored.kek_id)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce = b64.decode(&stored.nonce).ok().filter(|n| n.len() == 12)?;
        let ciphertext = b64.decode(&stored.ciphertext).ok()?;
        let plain = kek.cipher.decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: name.as_bytes() }).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// Whether `stored` needs re-encrypting under the current KEK.
    pub fn is_stale(&self, stored: &StoredSecret) -> bool {
        self.current.as_ref().is_some_and(|k| k.id != stored.kek_id)
    }
}

static KEYRING: OnceLock<Keyring> = OnceLock::new();

/// The process's keyring, read from the environment once (`init` at start reports a bad KEK).
pub fn keyring() -> &'static Keyring {
    KEYRING.get_or_init(|| Keyring::from_env().unwrap_or_default())
}

/// Reads the KEKs from the environment; an invalid one stops the start with its reason.
pub fn init() -> Result<&'static Keyring, String> {
    let ring = Keyring::from_env()?;
    Ok(KEYRING.get_or_init(|| ring))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::parse(&hex::encode([byte; 32])).unwrap()
    }

    fn material() -> SecretMaterial {
        SecretMaterial { api_key: Some("sk-live-secret-value-123".into()), ..Default::default() }
    }

    #[test]
    fn round_trip_bound_to_the_name_and_the_kek() {
        let ring = Keyring { current: Some(kek(1)), previous: None };
        let stored = ring.encrypt("openai", &material()).unwrap();
        assert!(!stored.ciphertext.contains("secret-value") && !format!("{stored:?}").contains("secret-value"));
        assert_eq!(ring.decrypt("openai", &stored), Some(material()));
        assert_eq!(ring.decrypt("other-name", &stored), None, "a ciphertext moved to another row does not decrypt");
        let mut tampered = stored.clone();
        tampered.ciphertext.replace_range(0..4, "AAAA");
        assert_eq!(ring.decrypt("openai", &tampered), None);
        assert_eq!(Keyring { current: Some(kek(2)), previous: None }.decrypt("openai", &stored), None);
        // fresh nonce each time
        assert_ne!(ring.encrypt("openai", &material()).unwrap().nonce, stored.nonce);
        assert!(stored.fingerprint.starts_with("sha256:") && !stored.fingerprint.contains("secret"));
    }

    #[test]
    fn rotation_reads_the_previous_kek_and_knows_what_is_stale() {
        let old = Keyring { current: Some(kek(1)), previous: None };
        let stored = old.encrypt("c", &material()).unwrap();
        let rotated = Keyring { current: Some(kek(2)), previous: Some(kek(1)) };
        assert_eq!(rotated.decrypt("c", &stored), Some(material()));
        assert!(rotated.is_stale(&stored));
        let again = rotated.encrypt("c", &rotated.decrypt("c", &stored).unwrap()).unwrap();
        assert!(!rotated.is_stale(&again));
        assert_eq!(Keyring { current: Some(kek(2)), previous: None }.decrypt("c", &again), Some(material()));
    }

    #[test]
    fn parses_keks_and_refuses_bad_ones() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(Kek::parse(&b64).unwrap().id(), Kek::parse(&hex::encode([7u8; 32])).unwrap().id());
        assert!(Kek::parse("short").is_err());
        assert!(Kek::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 16])).unwrap_err().contains("32 bytes"));
        assert!(Keyring::default().encrypt("c", &material()).unwrap_err().contains(KEK_ENV));
    }
}
