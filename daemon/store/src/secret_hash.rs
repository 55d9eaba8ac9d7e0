//! The `secret_hash` form of a key's secret, `sha256:` and 64 hex digits, and the digest it
//! names: the only form in which the daemon's key set knows a secret, and the form heare-authctl
//! stores for new keys.

use sha2::{Digest, Sha256};
use std::fmt;
use std::hash::{Hash, Hasher};

/// Prefix of the `secret_hash` field: `sha256:` followed by 64 hex digits.
const SECRET_HASH_PREFIX: &str = "sha256:";

/// SHA-256 of a secret: the only form in which the key set knows a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

/// SHA-256 of the empty string (a test checks it against the hash). A constant because the load
/// asks it of every key: hashing `""` each time was 2% of a million-key load (perf).
const EMPTY_SECRET_DIGEST: SecretDigest = SecretDigest([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

impl SecretDigest {
    /// Hashes a presented or stored plaintext secret.
    pub fn of_secret(secret: &str) -> Self {
        SecretDigest(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether this is the digest of the empty secret, which no key may have: `""` must never
    /// verify, whether stored as `secret` or as `secret_hash`.
    pub fn is_of_empty_secret(&self) -> bool {
        *self == EMPTY_SECRET_DIGEST
    }

    /// Parses the `secret_hash` form, `sha256:<64 hex digits>`.
    pub fn parse_field(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(SECRET_HASH_PREFIX)?;
        if hex.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            *byte = (high * 16 + low) as u8;
        }
        Some(SecretDigest(digest))
    }

    /// Which of `shards` (a power of two) shards of an index holds this digest. Uses a byte its
    /// [`Hash`] does not, so each shard's table stays evenly filled.
    pub fn shard(&self, shards: usize) -> usize {
        self.0[31] as usize & (shards - 1)
    }

    /// The `secret_hash` form of this digest.
    pub fn to_field(&self) -> String {
        let mut text = String::with_capacity(SECRET_HASH_PREFIX.len() + 64);
        text.push_str(SECRET_HASH_PREFIX);
        for byte in self.0 {
            text.push_str(&format!("{byte:02x}"));
        }
        text
    }
}

impl Hash for SecretDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is already uniformly distributed: 8 of its bytes are a perfect hash.
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_secret_constant_is_the_hash_of_the_empty_string() {
        assert!(EMPTY_SECRET_DIGEST == SecretDigest::of_secret(""));
        assert!(SecretDigest::of_secret("").is_of_empty_secret());
        assert!(!SecretDigest::of_secret(" ").is_of_empty_secret());
    }
}
