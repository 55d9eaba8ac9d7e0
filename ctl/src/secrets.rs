//! New key ids and secrets, drawn from the operating system's CSPRNG.
//!
//! Ids are `key_0` + timestamp + 10 base62 characters (the Python service's format). Secrets are
//! generation `1`: `sec_1` + timestamp + 45 random base62 characters + a 6-character base62 CRC32
//! of everything before it (see `heare_auth_client::token`), 64 characters in all. Each character
//! is drawn uniformly (rejection sampling), with repetition.

use heare_auth_client::token::{BASE62, CHECKSUM_LEN, SECRET_LEN, base62_fixed, checksum_for};
use rand::rngs::OsRng;
use rand::{Rng, TryRngCore};

pub(crate) fn random_base62(count: usize) -> String {
    let mut rng = OsRng.unwrap_err();
    (0..count)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

fn timestamp_part() -> String {
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    base62_fixed(now, 8)
}

/// A new key id.
pub fn new_key_id() -> String {
    format!("key_0{}{}", timestamp_part(), random_base62(10))
}

/// A new generation-1 secret with its checksum.
pub fn new_secret() -> String {
    let random = SECRET_LEN - "sec_1".len() - 8 - CHECKSUM_LEN;
    let body = format!("sec_1{}{}", timestamp_part(), random_base62(random));
    let checksum = checksum_for(&body);
    format!("{body}{checksum}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use heare_auth_client::token::{KEY_ID_LEN, SecretShape, secret_shape};

    #[test]
    fn formats_and_checksums() {
        let secret = new_secret();
        assert_eq!(secret.len(), SECRET_LEN);
        assert_eq!(secret_shape(&secret), SecretShape::Checked);
        let id = new_key_id();
        assert_eq!(id.len(), KEY_ID_LEN);
        assert!(id.starts_with("key_0"));
        assert_ne!(new_secret(), secret);
    }
}
