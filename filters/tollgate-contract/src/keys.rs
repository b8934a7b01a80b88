//! Virtual keys: only their SHA-256 digests travel and are stored. Keys are 256-bit random
//! values, so an unsalted digest is safe; the lookup compares full digests in constant time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every virtual key (`tg-` + 43 base64url characters).
pub const KEY_PREFIX: &str = "tg-";

pub type KeyDigest = [u8; 32];

pub fn digest(secret: &str) -> KeyDigest {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn digest_hex(secret: &str) -> String {
    hex::encode(digest(secret))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May call models (subject to its model list).
    #[default]
    User,
    /// May also use the admin API.
    Admin,
}

/// Which models a key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedModels {
    All,
    Only(Vec<String>),
}

impl AllowedModels {
    pub fn from_list(list: Option<Vec<String>>) -> Self {
        match list {
            None => Self::All,
            Some(l) if l.iter().any(|m| m == "*") => Self::All,
            Some(l) => Self::Only(l),
        }
    }

    pub fn permits(&self, model: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => list.iter().any(|m| m == model),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: String,
    pub role: Role,
    pub models: AllowedModels,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<u64>,
}

/// Why a presented key was refused; all map to the same 401 for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    Unknown,
    Expired,
}

/// Extracts the presented key: `Authorization: Bearer <key>` or `x-api-key: <key>`. The same
/// rule serves the gateway (client keys) and the control plane's admin API.
pub fn presented_key<'a>(authorization: Option<&'a str>, x_api_key: Option<&'a str>) -> Option<&'a str> {
    let bearer = authorization.and_then(|auth| {
        let (scheme, rest) = auth.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    match bearer {
        Some(key) => (!key.is_empty()).then_some(key),
        // Not a bearer credential (e.g. Basic): the key may still come in x-api-key.
        None => x_api_key.map(str::trim).filter(|k| !k.is_empty()),
    }
}

/// Parses a hex digest as sent in the filter configuration.
pub fn parse_digest_hex(s: &str) -> Option<KeyDigest> {
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_models() {
        assert!(AllowedModels::from_list(None).permits("x"));
        assert!(AllowedModels::from_list(Some(vec!["*".into()])).permits("x"));
        let only = AllowedModels::from_list(Some(vec!["a".into()]));
        assert!(only.permits("a"));
        assert!(!only.permits("b"));
    }

    #[test]
    fn digest_hex_roundtrip() {
        let h = digest_hex("tg-alpha");
        assert_eq!(parse_digest_hex(&h), Some(digest("tg-alpha")));
        assert_eq!(parse_digest_hex("zz"), None);
        assert_eq!(parse_digest_hex("abcd"), None);
    }
}
