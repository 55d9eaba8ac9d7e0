//! The last-known-good cache: the store's body as last loaded, kept on local disk.
//!
//! After every successful load the fetched body (still encrypted, if the store's was) is written
//! atomically — temporary file, fsync, rename, fsync of the directory — with mode 0600, so a crash
//! mid-write leaves the previous cache intact and no other user can read it. Both directions go
//! through [`heare_auth_store::safe_file`]: a link or a non-regular file at the cache's name is refused,
//! never followed, and a cache larger than the store's bodies may be (`max_store_bytes`) is
//! refused rather than read whole.
//!
//! Beside it, `<cache>.changes` keeps the change objects applied from the change log over the
//! cached body, as stored (encrypted when the store is): a daemon that restarts while the store is
//! unreachable serves the cached body with them, so a key revoked through the log since the last
//! whole load does not come back. It is rewritten, the same way, after every change applied and
//! every load, and holds at most the changes of one overlay (folded past 10,000).

use heare_auth_store::safe_file::{Dir, Ownership, SafeFileError};
use std::path::Path;
use std::time::SystemTime;

/// Writes `body` to `path` atomically with mode 0600.
pub fn write(path: &Path, body: &[u8]) -> Result<(), SafeFileError> {
    let (dir, name) = Dir::of(path)?;
    // A link or anything but a regular file at the name means someone tampered: refuse, loudly.
    dir.stat(&name)?;
    let private = Ownership {
        owner: None,
        mode: 0o600,
    };
    dir.replace(&name, body, private).map(drop)
}

/// Reads the cache (or another file written by [`write`]): its body and when it was written; a
/// file larger than `limit` bytes is refused.
pub fn read(path: &Path, limit: u64) -> Result<(Vec<u8>, SystemTime), SafeFileError> {
    let failed = |action, source| SafeFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let (dir, name) = Dir::of(path)?;
    let mut file = dir.open_existing(&name)?.ok_or_else(|| {
        let absent = std::io::Error::new(std::io::ErrorKind::NotFound, "it does not exist");
        failed("read", absent)
    })?;
    let body = heare_auth_store::safe_file::read_bounded(&mut file, path, limit)?;
    let written = file
        .metadata()
        .and_then(|metadata| metadata.modified())
        .map_err(|source| failed("stat", source))?;
    Ok((body, written))
}

/// Where the changes applied over the cache are kept: `<cache>.changes`.
pub fn changes_path(cache: &Path) -> std::path::PathBuf {
    let mut name = cache.as_os_str().to_owned();
    name.push(".changes");
    name.into()
}

/// Writes the change bodies applied over the cached body (a JSON array of the bodies, which are
/// JSON or an encrypted token: text either way) atomically with mode 0600; with none, removes
/// the file (nothing is left beside the cache that it does not need).
pub fn write_changes(cache: &Path, bodies: &[Vec<u8>]) -> Result<(), SafeFileError> {
    if bodies.is_empty() {
        let (dir, name) = Dir::of(&changes_path(cache))?;
        return dir.remove(&name).map(drop);
    }
    let texts: Vec<std::borrow::Cow<'_, str>> = bodies
        .iter()
        .map(|body| String::from_utf8_lossy(body))
        .collect();
    let json = serde_json::to_vec(&texts).unwrap_or_else(|_| b"[]".to_vec());
    write(&changes_path(cache), &json)
}

/// The change bodies kept beside the cache; none when there is no such file. A file that is not
/// a JSON array of strings is an error (the cached body is then served without them).
pub fn read_changes(cache: &Path, limit: u64) -> Result<Vec<Vec<u8>>, String> {
    let path = changes_path(cache);
    let (dir, name) = Dir::of(&path).map_err(|e| e.to_string())?;
    if dir
        .open_existing(&name)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Ok(Vec::new());
    }
    let (json, _) = read(&path, limit).map_err(|e| e.to_string())?;
    let texts: Vec<String> = serde_json::from_slice(&json).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        format!(
            "{} is not a list of change objects (line {line}, column {column})",
            path.display()
        )
    })?;
    Ok(texts.into_iter().map(String::into_bytes).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_atomically_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.cache");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        let (body, _) = read(&path, 3).unwrap();
        assert_eq!(body, b"two");
        assert!(matches!(
            read(&path, 2),
            Err(SafeFileError::TooLarge { limit: 2, .. })
        ));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn unwritable_directory_is_an_error_not_a_panic() {
        let path = Path::new("/proc/heare-auth-cannot-write/keys.cache");
        assert!(write(path, b"x").is_err());
    }
}
