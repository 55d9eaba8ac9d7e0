//! The heare-ids token format of key ids and secrets, and the checksum of new secrets.
//!
//! A token is `{prefix}_{generation}{timestamp}{entropy}`: one generation character, the Unix time
//! in seconds as 8 base62 characters, then base62 entropy (alphabet `0-9A-Za-z`). Key ids are
//! `key_` + 1 + 8 + 10 characters; secrets are `sec_` + 1 + 8 + 51 (64 in all). The Python service
//! writes generation `0` with no checksum. heare-authctl writes generation `1` secrets whose last 6
//! entropy characters are the base62 CRC32 of everything before them, so a typo or a truncation is
//! caught locally, before any lookup, and secret scanners can recognise ours. This module parses
//! and checks; generation (which needs a CSPRNG) lives in heare-authctl's side of the workspace.

/// The base62 alphabet of heare-ids, in order.
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of every secret (`sec_` + 60).
pub const SECRET_LEN: usize = 64;
/// Length of every key id: `key_` + generation + 8 + 10 = 23. (The reference summary says 24 in
/// one place; the format's own definition, which the Python library follows, gives 23.)
pub const KEY_ID_LEN: usize = 23;
/// Characters of the checksum at the end of a generation-`1` secret.
pub const CHECKSUM_LEN: usize = 6;

/// What a presented secret looks like before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretShape {
    /// Generation `1` with a matching checksum: worth a lookup.
    Checked,
    /// Generation `1` whose checksum does not match: a typo or a truncation; reject locally.
    BadChecksum,
    /// Anything else (generation `0`, the Python service's, or a foreign format): only the daemon
    /// can tell, so it must be looked up.
    Unchecked,
}

/// Classifies a secret without looking it up. Runs in time that depends only on its length.
pub fn secret_shape(secret: &str) -> SecretShape {
    let bytes = secret.as_bytes();
    if bytes.len() != SECRET_LEN || !secret.starts_with("sec_1") {
        return SecretShape::Unchecked;
    }
    if !bytes[4..].iter().all(|b| b.is_ascii_alphanumeric()) {
        return SecretShape::BadChecksum;
    }
    let (body, check) = bytes.split_at(SECRET_LEN - CHECKSUM_LEN);
    if base62_fixed(u64::from(crc32(body)), CHECKSUM_LEN).as_bytes() == check {
        SecretShape::Checked
    } else {
        SecretShape::BadChecksum
    }
}

/// Whether `text` has the exact shape of a secret: `sec_` then 60 base62 characters, of
/// generation `0` (the Python service's, which carries no checksum) or `1` (heare-authctl's, whose
/// checksum must match). Anything else — a Unix password typed at the wrong prompt, a truncated
/// or mistyped key — cannot be a valid secret, and a caller that must not send such text anywhere
/// (the PAM module) refuses it locally. Runs in time that depends only on the length.
pub fn is_secret_shaped(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != SECRET_LEN || !text.starts_with("sec_") {
        return false;
    }
    let base62 = bytes[4..]
        .iter()
        .fold(true, |all, byte| all & byte.is_ascii_alphanumeric());
    match bytes[4] {
        b'0' => base62,
        b'1' => base62 && secret_shape(text) == SecretShape::Checked,
        _ => false,
    }
}

/// The checksum characters for the first 58 characters of a generation-`1` secret.
pub fn checksum_for(body: &str) -> String {
    base62_fixed(u64::from(crc32(body.as_bytes())), CHECKSUM_LEN)
}

/// `value` in base62, left-padded with `0` to `width` characters (high digits beyond are cut).
pub fn base62_fixed(mut value: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// CRC-32 (IEEE 802.3, as zlib and Python's `zlib.crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn base62_pads_and_orders() {
        assert_eq!(base62_fixed(0, 6), "000000");
        assert_eq!(base62_fixed(61, 2), "0z");
        assert_eq!(base62_fixed(62, 2), "10");
        assert_eq!(base62_fixed(u64::from(u32::MAX), 6), "4gfFC3");
    }

    #[test]
    fn checksummed_secrets_are_recognised_and_typos_caught() {
        let body = "sec_1AbCdEfGh123456789012345678901234567890123456789012345";
        assert_eq!(body.len(), SECRET_LEN - CHECKSUM_LEN);
        let secret = format!("{body}{}", checksum_for(body));
        assert_eq!(secret_shape(&secret), SecretShape::Checked);
        let mut typo = secret.clone().into_bytes();
        typo[20] = if typo[20] == b'x' { b'y' } else { b'x' };
        assert_eq!(
            secret_shape(std::str::from_utf8(&typo).unwrap()),
            SecretShape::BadChecksum
        );
        assert_eq!(
            secret_shape(&secret[..63]),
            SecretShape::Unchecked,
            "truncated: unknown shape"
        );
        let python = format!("sec_0{}", &secret[5..]);
        assert_eq!(secret_shape(&python), SecretShape::Unchecked);
        assert_eq!(secret_shape("anything"), SecretShape::Unchecked);
    }

    #[test]
    fn only_secret_shaped_text_is_shaped() {
        let body = "sec_1AbCdEfGh123456789012345678901234567890123456789012345";
        let checked = format!("{body}{}", checksum_for(body));
        assert!(is_secret_shaped(&checked));
        let python = format!("sec_0{}", &checked[5..]);
        assert!(is_secret_shaped(&python), "generation 0 has no checksum");
        // The PAM tests' secrets.
        assert!(is_secret_shaped(
            "sec_0AlicesPamSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        ));
        let mut typo = checked.clone().into_bytes();
        typo[30] = if typo[30] == b'x' { b'y' } else { b'x' };
        assert!(!is_secret_shaped(std::str::from_utf8(&typo).unwrap()));
        for not_shaped in [
            "",
            "sec_0wrong",
            "hunter2",
            &checked[..63],
            &format!("{checked}A"),
            &format!("key_{}", &checked[4..]),
            &format!("sec_2{}", &checked[5..]),
            &format!("sec_0{}-", &checked[5..63]),
            &format!("sec_0{}é", &checked[5..62]),
            &format!("SEC_0{}", &checked[5..]),
        ] {
            assert!(!is_secret_shaped(not_shaped), "{not_shaped:?}");
        }
    }
}
