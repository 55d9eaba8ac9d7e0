//! The C ABI of heare-auth-client (`libheare_auth`, declared in `include/heare_auth.h`).
//!
//! Each exported function converts its arguments, calls the Rust client, and converts the result
//! to a status code and C strings that the caller frees with `heare_auth_key_free`. Every call is
//! wrapped in `catch_unwind`, so no Rust panic ever unwinds into C; the status codes are fixed
//! numbers that the header documents and a test compiled with `cc` checks.
//!
//! A C string cannot hold a NUL byte: an answer whose key id, name or metadata contains one
//! (`key_admin\0-imported-by-bob` would read as `key_admin`) is not cut but refused as
//! `HEARE_AUTH_PROTOCOL_ERROR`. The client's [`Error::UntrustedServer`] (a server not run by a
//! trusted uid) cannot occur through these functions, which do not enable that check; were it to,
//! it maps to `HEARE_AUTH_UNAVAILABLE`: the daemon that should answer is not the one there.
//! [`Error::RateLimited`] (a 429: the key is over its rate limit) is `HEARE_AUTH_RATE_LIMITED`,
//! neither valid nor invalid; its wait is not passed to C (`*out` stays zeroed, as on every
//! failure).

use heare_auth_client::{Client, Error, Verified};
use std::ffi::{CStr, CString, c_char, c_int, c_uint};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::time::Duration;

pub const HEARE_AUTH_OK: c_int = 0;
pub const HEARE_AUTH_INVALID_KEY: c_int = 1;
pub const HEARE_AUTH_MALFORMED_KEY: c_int = 2;
pub const HEARE_AUTH_UNAVAILABLE: c_int = 3;
pub const HEARE_AUTH_PERMISSION_DENIED: c_int = 4;
pub const HEARE_AUTH_TIMEOUT: c_int = 5;
pub const HEARE_AUTH_PROTOCOL_ERROR: c_int = 6;
pub const HEARE_AUTH_BAD_ARGUMENT: c_int = 7;
pub const HEARE_AUTH_INTERNAL_ERROR: c_int = 8;
pub const HEARE_AUTH_RATE_LIMITED: c_int = 9;

/// A verified key, as `heare_auth.h` declares it.
#[repr(C)]
pub struct HeareAuthKey {
    pub key_id: *mut c_char,
    pub name: *mut c_char,
    pub metadata_json: *mut c_char,
}

fn status_of(error: &Error) -> c_int {
    match error {
        Error::InvalidKey => HEARE_AUTH_INVALID_KEY,
        Error::MalformedKey(_) => HEARE_AUTH_MALFORMED_KEY,
        Error::Unavailable { .. } => HEARE_AUTH_UNAVAILABLE,
        Error::PermissionDenied(_) => HEARE_AUTH_PERMISSION_DENIED,
        Error::Timeout(_) => HEARE_AUTH_TIMEOUT,
        Error::Protocol(_) => HEARE_AUTH_PROTOCOL_ERROR,
        Error::UntrustedServer { .. } => HEARE_AUTH_UNAVAILABLE,
        Error::RateLimited { .. } => HEARE_AUTH_RATE_LIMITED,
    }
}

/// The key's id, name and metadata as C strings; `None` when one holds a NUL byte, which C would
/// read as the end of the string (a key id `key_admin\0…` would pass for `key_admin`).
fn c_strings(key: &Verified) -> Option<[CString; 3]> {
    Some([
        CString::new(key.key_id.as_str()).ok()?,
        CString::new(key.name.as_str()).ok()?,
        CString::new(key.metadata.to_string()).ok()?,
    ])
}

fn fill(out: *mut HeareAuthKey, strings: [CString; 3]) {
    if out.is_null() {
        return;
    }
    let [key_id, name, metadata_json] = strings;
    // SAFETY: `out` is non-null and, per the header's contract, points to a heare_auth_key the
    // caller owns.
    unsafe {
        *out = HeareAuthKey {
            key_id: key_id.into_raw(),
            name: name.into_raw(),
            metadata_json: metadata_json.into_raw(),
        };
    }
}

fn clear(out: *mut HeareAuthKey) {
    if !out.is_null() {
        // SAFETY: as in `fill`.
        unsafe {
            *out = HeareAuthKey {
                key_id: ptr::null_mut(),
                name: ptr::null_mut(),
                metadata_json: ptr::null_mut(),
            };
        }
    }
}

fn verify_at(
    socket: *const c_char,
    secret: *const c_char,
    timeout_ms: c_uint,
    out: *mut HeareAuthKey,
) -> c_int {
    clear(out);
    if secret.is_null() {
        return HEARE_AUTH_BAD_ARGUMENT;
    }
    // SAFETY: the header requires NUL-terminated strings; null was checked above.
    let Ok(secret) = unsafe { CStr::from_ptr(secret) }.to_str() else {
        return HEARE_AUTH_BAD_ARGUMENT;
    };
    let mut builder =
        Client::builder().user_agent(concat!("libheare_auth/", env!("CARGO_PKG_VERSION")));
    if !socket.is_null() {
        // SAFETY: as above.
        let Ok(path) = unsafe { CStr::from_ptr(socket) }.to_str() else {
            return HEARE_AUTH_BAD_ARGUMENT;
        };
        builder = builder.socket(path);
    }
    if timeout_ms > 0 {
        builder = builder.timeout(Duration::from_millis(u64::from(timeout_ms)));
    }
    match builder.build().verify(secret).map(|key| c_strings(&key)) {
        Ok(Some(strings)) => {
            fill(out, strings);
            HEARE_AUTH_OK
        }
        Ok(None) => HEARE_AUTH_PROTOCOL_ERROR,
        Err(error) => status_of(&error),
    }
}

/// See `heare_auth.h`.
///
/// # Safety
/// Pointer arguments are NULL or point to what `heare_auth.h` says: NUL-terminated strings and a
/// `heare_auth_key` the caller owns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heare_auth_verify(secret: *const c_char, out: *mut HeareAuthKey) -> c_int {
    catch_unwind(AssertUnwindSafe(|| verify_at(ptr::null(), secret, 0, out)))
        .unwrap_or(HEARE_AUTH_INTERNAL_ERROR)
}

/// See `heare_auth.h`.
///
/// # Safety
/// Pointer arguments are NULL or point to what `heare_auth.h` says: NUL-terminated strings and a
/// `heare_auth_key` the caller owns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heare_auth_verify_at(
    socket_path: *const c_char,
    secret: *const c_char,
    timeout_ms: c_uint,
    out: *mut HeareAuthKey,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        verify_at(socket_path, secret, timeout_ms, out)
    }))
    .unwrap_or(HEARE_AUTH_INTERNAL_ERROR)
}

/// See `heare_auth.h`.
///
/// # Safety
/// Pointer arguments are NULL or point to what `heare_auth.h` says: NUL-terminated strings and a
/// `heare_auth_key` the caller owns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heare_auth_key_free(key: *mut HeareAuthKey) {
    if key.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the strings were made by `CString::into_raw` in `fill` (or are null), and
        // `clear` below makes a second free a no-op.
        unsafe {
            for field in [(*key).key_id, (*key).name, (*key).metadata_json] {
                if !field.is_null() {
                    drop(CString::from_raw(field));
                }
            }
        }
        clear(key);
    }));
}

/// See `heare_auth.h`.
#[unsafe(no_mangle)]
pub extern "C" fn heare_auth_strerror(status: c_int) -> *const c_char {
    let text: &'static CStr = match status {
        HEARE_AUTH_OK => c"ok",
        HEARE_AUTH_INVALID_KEY => c"invalid API key",
        HEARE_AUTH_MALFORMED_KEY => c"malformed API key (refused without asking the daemon)",
        HEARE_AUTH_UNAVAILABLE => c"heare-authd is unavailable: is it running? (systemctl status heare-authd)",
        HEARE_AUTH_PERMISSION_DENIED => {
            c"permission denied on the heare-authd socket: add this user to its group (usually heare-auth-clients)"
        }
        HEARE_AUTH_TIMEOUT => c"heare-authd did not answer in time",
        HEARE_AUTH_PROTOCOL_ERROR => {
            c"unexpected answer from heare-authd (or a NUL byte in a key's id, name or metadata)"
        }
        HEARE_AUTH_BAD_ARGUMENT => c"bad argument: NULL or non-UTF-8 string",
        HEARE_AUTH_INTERNAL_ERROR => c"internal error in libheare_auth",
        HEARE_AUTH_RATE_LIMITED => {
            c"the API key is over its rate limit: refused for now, try again later"
        }
        _ => c"unknown heare_auth status",
    };
    text.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every status code this library returns, by the name the header gives it.
    const CODES: [(&str, c_int); 10] = [
        ("HEARE_AUTH_OK", HEARE_AUTH_OK),
        ("HEARE_AUTH_INVALID_KEY", HEARE_AUTH_INVALID_KEY),
        ("HEARE_AUTH_MALFORMED_KEY", HEARE_AUTH_MALFORMED_KEY),
        ("HEARE_AUTH_UNAVAILABLE", HEARE_AUTH_UNAVAILABLE),
        ("HEARE_AUTH_PERMISSION_DENIED", HEARE_AUTH_PERMISSION_DENIED),
        ("HEARE_AUTH_TIMEOUT", HEARE_AUTH_TIMEOUT),
        ("HEARE_AUTH_PROTOCOL_ERROR", HEARE_AUTH_PROTOCOL_ERROR),
        ("HEARE_AUTH_BAD_ARGUMENT", HEARE_AUTH_BAD_ARGUMENT),
        ("HEARE_AUTH_INTERNAL_ERROR", HEARE_AUTH_INTERNAL_ERROR),
        ("HEARE_AUTH_RATE_LIMITED", HEARE_AUTH_RATE_LIMITED),
    ];

    #[test]
    fn the_header_defines_exactly_the_rust_codes() {
        let header = include_str!("../include/heare_auth.h");
        let mut defined: Vec<(String, c_int)> = header
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("#define")).then_some(())?;
                let name = words.next()?;
                let value = words.next()?.parse().ok()?;
                Some((name.to_string(), value))
            })
            .collect();
        defined.sort_by_key(|(_, value)| *value);
        let expected: Vec<(String, c_int)> = CODES
            .iter()
            .map(|(name, value)| (name.to_string(), *value))
            .collect();
        assert_eq!(defined, expected);
    }

    #[test]
    fn every_code_has_its_own_text() {
        // SAFETY: heare_auth_strerror returns a static NUL-terminated string.
        let unknown = unsafe { CStr::from_ptr(heare_auth_strerror(12345)) };
        let mut texts = Vec::new();
        for (name, code) in CODES {
            // SAFETY: heare_auth_strerror returns a static NUL-terminated string.
            let text = unsafe { CStr::from_ptr(heare_auth_strerror(code)) };
            assert_ne!(text, unknown, "{name}");
            texts.push(text);
        }
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), CODES.len());
    }

    #[test]
    fn a_rate_limited_key_has_its_own_code() {
        let limited = Error::RateLimited {
            key_id: "key_1".into(),
            retry_after: Duration::from_secs(60),
        };
        assert_eq!(status_of(&limited), HEARE_AUTH_RATE_LIMITED);
        assert_eq!(HEARE_AUTH_RATE_LIMITED, 9);
        assert_eq!(status_of(&Error::InvalidKey), HEARE_AUTH_INVALID_KEY);
        assert_eq!(
            status_of(&Error::Protocol("HTTP 429".into())),
            HEARE_AUTH_PROTOCOL_ERROR
        );
    }
}
