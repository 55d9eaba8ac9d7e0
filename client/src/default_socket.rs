//! The one place that decides which socket a client talks to when the caller named none.
//!
//! `$HEARE_AUTH_SOCKET` overrides [`DEFAULT_SOCKET_PATH`] for an ordinary process, and is
//! ignored in a process that runs with more privilege than its caller (setuid or setgid, file
//! capabilities, an LSM transition): there the environment is the caller's, and honouring it
//! would let any user point a privileged program at a daemon of their own that says "valid".
//! This is glibc's `secure_getenv` rule: the kernel's `AT_SECURE` auxiliary value, read with
//! `getauxval`, is non-zero in exactly those processes.

use crate::{DEFAULT_SOCKET_PATH, SOCKET_PATH_ENV};
use std::path::PathBuf;

/// The socket used when none is given: `$HEARE_AUTH_SOCKET` when it is set, non-empty and this
/// process may trust its environment (see [`environment_is_trusted`]), else
/// [`DEFAULT_SOCKET_PATH`].
pub fn default_socket_path() -> PathBuf {
    environment_is_trusted()
        .then(|| std::env::var_os(SOCKET_PATH_ENV))
        .flatten()
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH), PathBuf::from)
}

/// False in a process whose environment came from a less privileged caller: the kernel sets
/// `AT_SECURE` for setuid/setgid programs and other privilege-raising executions.
pub fn environment_is_trusted() -> bool {
    !secure_execution()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn secure_execution() -> bool {
    // SAFETY: getauxval reads the process's auxiliary vector; it takes and returns plain integers.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn secure_execution() -> bool {
    // Without AT_SECURE, the classic test: real and effective ids differ.
    // SAFETY: these calls take no arguments and cannot fail.
    unsafe { libc::getuid() != libc::geteuid() || libc::getgid() != libc::getegid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_test_process_trusts_its_environment() {
        // `cargo test` is not setuid: the environment is honoured (the setuid case is proved
        // end to end in tests/tests/client_library.rs with a setuid copy of client-probe).
        assert!(environment_is_trusted());
        let path = default_socket_path();
        match std::env::var_os(SOCKET_PATH_ENV).filter(|p| !p.is_empty()) {
            Some(from_env) => assert_eq!(path, PathBuf::from(from_env)),
            None => assert_eq!(path, PathBuf::from(DEFAULT_SOCKET_PATH)),
        }
    }
}
