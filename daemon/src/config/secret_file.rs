//! The secret files the configuration names — `storage_secret_file`, `[stats] secret_file`,
//! systemd's credential `$CREDENTIALS_DIRECTORY/storage_secret` — read by the daemon at start and
//! by heare-authctl (as root) for every command.
//!
//! Each is read through [`heare_auth_store::safe_file::read_small`]: opened without blocking, so a
//! FIFO planted at the name cannot hang the start or `heare-authctl list` (neither has a timeout
//! for this); read only if the open descriptor is a regular file (not a FIFO, socket or device);
//! refused above [`MAX_SECRET_FILE_BYTES`]. A symbolic link at the name is refused, never
//! followed: the setting is already the administrator's pointer to the file, so a link there
//! adds nothing they need, while whoever can write the file's directory could plant one to make
//! root read a file they cannot (its size, whether it is blank and the key derived from it would
//! tell them about it). The directories on the way are followed: they are the path the
//! administrator wrote.

use super::ConfigError;
use heare_auth_store::safe_file::{Links, read_small};
use std::path::Path;
use zeroize::Zeroizing;

/// The most a secret file may hold: a secret is tens of bytes, so anything larger is a mistake —
/// or a huge file planted to exhaust memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The text of the secret file `path` (named `setting` in errors) without its trailing line
/// breaks. A missing file is [`ConfigError::SecretFile`] with `source.is_not_found()`.
pub(super) fn read(setting: &'static str, path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    let bytes = read_small(path, MAX_SECRET_FILE_BYTES, Links::Refuse)
        .map(Zeroizing::new)
        .map_err(|source| ConfigError::SecretFile { setting, source })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ConfigError::Invalid {
        setting,
        why: format!("{} is not UTF-8 text", path.display()),
    })?;
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_links_and_large_files_are_refused_with_the_setting_named() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let large = dir.path().join("large");
        std::fs::write(&large, vec![b'a'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "abc\r\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        for (path, expected) in [
            (&fifo, "not a regular file"),
            (&large, "larger than 65536 bytes"),
            (&link, "symbolic link"),
        ] {
            let error = read("storage_secret_file", path).unwrap_err().to_string();
            assert!(
                error.contains("storage_secret_file") && error.contains(expected),
                "{error}"
            );
        }
        assert_eq!(*read("storage_secret_file", &secret).unwrap(), "abc");
        std::fs::write(&secret, b"\xff\xfe").unwrap();
        let error = read("stats.secret_file", &secret).unwrap_err().to_string();
        assert!(error.contains("not UTF-8"), "{error}");
    }
}
