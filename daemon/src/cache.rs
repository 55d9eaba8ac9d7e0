//! The last-known-good cache: the store's body as last loaded, kept on local disk.
//!
//! After every successful load the fetched body (still encrypted, if the store's was) is written
//! atomically — temporary file, fsync, rename, fsync of the directory — with mode 0600, so a crash
//! mid-write leaves the previous cache intact and no other user can read it. At start, when the
//! store cannot be read, the daemon serves this body (marked stale) instead of refusing to start.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

/// Writes `body` to `path` atomically with mode 0600.
pub fn write(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "cache path has no file name")
    })?;
    let mut temp_name = file_name.to_os_string();
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Reads the cache: its body and when it was written.
pub fn read(path: &Path) -> io::Result<(Vec<u8>, SystemTime)> {
    let body = std::fs::read(path)?;
    let written = std::fs::metadata(path)?.modified()?;
    Ok((body, written))
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
        let (body, _) = read(&path).unwrap();
        assert_eq!(body, b"two");
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
