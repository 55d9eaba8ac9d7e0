//! Encryption at rest of the key file, exactly as the Python heare-auth service does it.
//!
//! A stored body that starts with the 19 bytes `HEARE_ENCRYPTED_V1:` is a Fernet token (AES-128-CBC
//! with HMAC-SHA256) under the key `urlsafe_base64(sha256(STORAGE_SECRET))`. Encryption must also
//! mean integrity: when a storage secret is configured, a body without the header is refused
//! (the Python service loads it as plain JSON, so whoever can write the object but does not hold
//! the secret could add keys); only `heare-authctl migrate --encrypt` and `import` read plaintext
//! on purpose ([`decode_accepting_plaintext`]). Without a secret, a body is plain JSON. This
//! module owns that framing and nothing else.
//! Its errors name the cause (no secret configured, wrong secret, malformed token) and never
//! contain the storage secret or any plaintext.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::fmt;

/// The marker the Python service writes before the Fernet token.
pub const ENCRYPTED_HEADER: &[u8] = b"HEARE_ENCRYPTED_V1:";

/// Why a stored body could not be turned into key-file JSON.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error(
        "the key file is encrypted (HEARE_ENCRYPTED_V1) but no STORAGE_SECRET is configured: set STORAGE_SECRET or storage_secret_file"
    )]
    SecretMissing,
    #[error(
        "the key file could not be decrypted: STORAGE_SECRET does not match the one it was written with, or the token is corrupt"
    )]
    WrongSecretOrCorrupt,
    #[error("the key file's encrypted token is not ASCII; the object is corrupt")]
    TokenNotAscii,
    #[error(
        "the key file is not encrypted (no HEARE_ENCRYPTED_V1 header), but a storage secret is configured: refused, since whoever can write the store could add keys without the secret; `heare-authctl migrate --encrypt` lists its keys and encrypts them once you have checked every one"
    )]
    NotEncrypted,
}

/// The storage secret, held so that it never reaches a log or an error by accident.
#[derive(Clone)]
pub struct StorageSecret(String);

impl StorageSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        StorageSecret(secret.into())
    }

    fn fernet(&self) -> fernet::Fernet {
        let digest = Sha256::digest(self.0.as_bytes());
        let key = base64::engine::general_purpose::URL_SAFE.encode(digest);
        // A SHA-256 digest is always 32 bytes, which is exactly a Fernet key; `new` only refuses
        // other lengths, so this cannot fail.
        fernet::Fernet::new(&key).unwrap_or_else(|| unreachable!("32-byte key refused"))
    }
}

impl StorageSecret {
    /// Bytes below which a secret is weak: it is hashed once into the Fernet key, with no key
    /// stretching, so a short one can be guessed offline from any encrypted body.
    pub const RECOMMENDED_BYTES: usize = 16;

    /// Whether the secret is shorter than [`StorageSecret::RECOMMENDED_BYTES`].
    pub fn is_short(&self) -> bool {
        self.0.len() < Self::RECOMMENDED_BYTES
    }
}

impl fmt::Debug for StorageSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageSecret(<redacted>)")
    }
}

/// True when `body` carries the encrypted-file header.
pub fn is_encrypted(body: &[u8]) -> bool {
    body.starts_with(ENCRYPTED_HEADER)
}

/// Turns a stored body into key-file JSON: decrypts it when it is encrypted, borrows it when it
/// is plain and no secret is configured, and refuses a plain body when one is.
pub fn decode<'a>(
    body: &'a [u8],
    secret: Option<&StorageSecret>,
) -> Result<std::borrow::Cow<'a, [u8]>, CodecError> {
    if secret.is_some() && !is_encrypted(body) {
        return Err(CodecError::NotEncrypted);
    }
    decode_accepting_plaintext(body, secret)
}

/// As [`decode`], but a plain body is accepted even when a secret is configured: only for a file
/// the administrator vouches for (`import FILE`, `migrate --encrypt`), never for what a daemon
/// serves.
pub fn decode_accepting_plaintext<'a>(
    body: &'a [u8],
    secret: Option<&StorageSecret>,
) -> Result<std::borrow::Cow<'a, [u8]>, CodecError> {
    let Some(token) = body.strip_prefix(ENCRYPTED_HEADER) else {
        return Ok(std::borrow::Cow::Borrowed(body));
    };
    let secret = secret.ok_or(CodecError::SecretMissing)?;
    let token = std::str::from_utf8(token).map_err(|_| CodecError::TokenNotAscii)?;
    secret
        .fernet()
        .decrypt(token.trim())
        .map(std::borrow::Cow::Owned)
        .map_err(|_| CodecError::WrongSecretOrCorrupt)
}

/// Encrypts key-file JSON into the stored form the Python service reads.
pub fn encode_encrypted(json: &[u8], secret: &StorageSecret) -> Vec<u8> {
    let token = secret.fernet().encrypt(json);
    let mut body = Vec::with_capacity(ENCRYPTED_HEADER.len() + token.len());
    body.extend_from_slice(ENCRYPTED_HEADER);
    body.extend_from_slice(token.as_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bodies_pass_through() {
        let body = br#"{"keys":[]}"#;
        assert_eq!(decode(body, None).unwrap().as_ref(), body);
    }

    #[test]
    fn a_plain_body_is_refused_when_a_secret_is_configured() {
        let secret = StorageSecret::new("correct horse");
        let body = br#"{"keys":[]}"#;
        assert_eq!(decode(body, Some(&secret)), Err(CodecError::NotEncrypted));
        assert_eq!(
            decode_accepting_plaintext(body, Some(&secret))
                .unwrap()
                .as_ref(),
            body
        );
        assert!(
            CodecError::NotEncrypted
                .to_string()
                .contains("migrate --encrypt")
        );
    }

    #[test]
    fn encrypted_round_trip() {
        let secret = StorageSecret::new("correct horse");
        let body = encode_encrypted(br#"{"keys":[]}"#, &secret);
        assert!(is_encrypted(&body));
        assert_eq!(
            decode(&body, Some(&secret)).unwrap().as_ref(),
            br#"{"keys":[]}"#
        );
    }

    #[test]
    fn python_written_token_decrypts() {
        // Written by Python's `cryptography`: Fernet(urlsafe_b64encode(sha256(b"test-storage-secret")
        // .digest())).encrypt(b'{"keys": []}'), prefixed with the header as the service stores it.
        let body = b"HEARE_ENCRYPTED_V1:gAAAAABrBr0bomvaOGChIBIxaSk9n38-oUqA8IFAVYu_7JluMosf1EeVCazQU0-U53sokTXEw39tvfnihfP86jHeoGnbxyp5MQ==";
        let plain = decode(body, Some(&StorageSecret::new("test-storage-secret"))).unwrap();
        assert_eq!(plain.as_ref(), br#"{"keys": []}"#);
    }

    #[test]
    fn wrong_secret_and_missing_secret_are_distinct_errors() {
        let body = encode_encrypted(b"{}", &StorageSecret::new("one"));
        assert_eq!(decode(&body, None).unwrap_err(), CodecError::SecretMissing);
        let err = decode(&body, Some(&StorageSecret::new("two"))).unwrap_err();
        assert_eq!(err, CodecError::WrongSecretOrCorrupt);
        assert!(!err.to_string().contains("two"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", StorageSecret::new("hunter2"));
        assert!(!shown.contains("hunter2"));
    }
}
