//! Where a `file` action writes, and how: under `<base>/<tenant id>/`, so
//! tenants never share a name, and without following a symlink anywhere on
//! the way. The walk opens each directory relative to the one before with
//! `O_NOFOLLOW | O_DIRECTORY` (creating what is missing, inside the
//! directory just opened), and the file itself with `O_NOFOLLOW`: a symlink
//! in any component — placed by whoever can write under the base — fails the
//! attempt for good instead of leading outside, and nothing is created
//! outside the base on the way to finding out.

use std::io::Write;
use std::path::Path;

/// Why a file was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The path cannot be written as asked (a symlink, a file where a directory should be, a bad tenant name): for good.
    Refused(String),
    /// The filesystem failed (may work later).
    Io(String),
}

/// Writes (or appends, adding a newline) `bytes` to `relative` under `base/tenant_id`, synced.
pub fn write_under(
    base: &Path,
    tenant_id: &str,
    relative: &str,
    bytes: &[u8],
    append: bool,
) -> Result<(), FileError> {
    if matches!(tenant_id, "" | "." | "..") || tenant_id.contains('/') {
        return Err(FileError::Refused(format!("tenant id {tenant_id:?} cannot name a directory")));
    }
    let mut parts: Vec<&str> = std::iter::once(tenant_id).chain(relative.split('/')).collect();
    let Some(name) = parts.pop().filter(|n| !matches!(*n, "" | "." | "..")) else {
        return Err(FileError::Refused(format!("{relative:?} does not name a file")));
    };
    let mut file = unix::open_file(base, &parts, name, append)?;
    let mut content = bytes.to_vec();
    if append {
        content.push(b'\n');
    }
    file.write_all(&content).map_err(|e| FileError::Io(format!("writing {relative}: {e}")))?;
    file.sync_all().map_err(|e| FileError::Io(format!("syncing {relative}: {e}")))
}

#[cfg(unix)]
mod unix {
    use std::fs::File;
    use std::os::fd::OwnedFd;
    use std::path::Path;

    use rustix::fs::{Mode, OFlags, mkdirat, open, openat};
    use rustix::io::Errno;

    use super::FileError;

    const DIRECTORY: OFlags = OFlags::DIRECTORY.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

    fn refused_or_io(what: &str, errno: Errno) -> FileError {
        match errno {
            Errno::LOOP | Errno::NOTDIR | Errno::MLINK => {
                FileError::Refused(format!("{what} is a symlink or not a directory: refused"))
            }
            Errno::NAMETOOLONG => FileError::Refused(format!("{what}: name too long")),
            other => FileError::Io(format!("{what}: {other}")),
        }
    }

    /// Opens `dirs…/name` under `base`, creating the directories, following no symlink.
    pub(super) fn open_file(base: &Path, dirs: &[&str], name: &str, append: bool) -> Result<File, FileError> {
        let mut dir: OwnedFd = open(base, OFlags::RDONLY | DIRECTORY, Mode::empty())
            .map_err(|e| FileError::Io(format!("opening the base directory {}: {e}", base.display())))?;
        for part in dirs {
            dir = match openat(&dir, *part, OFlags::RDONLY | DIRECTORY, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::NOENT) => {
                    match mkdirat(&dir, *part, Mode::from_raw_mode(0o750)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(refused_or_io(part, e)),
                    }
                    openat(&dir, *part, OFlags::RDONLY | DIRECTORY, Mode::empty())
                        .map_err(|e| refused_or_io(part, e))?
                }
                Err(e) => return Err(refused_or_io(part, e)),
            };
        }
        let mode = if append { OFlags::APPEND } else { OFlags::TRUNC };
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | mode;
        let fd = openat(&dir, name, flags, Mode::from_raw_mode(0o640)).map_err(|e| refused_or_io(name, e))?;
        Ok(File::from(fd))
    }
}

#[cfg(not(unix))]
mod unix {
    use std::fs::File;
    use std::path::Path;

    use super::FileError;

    pub(super) fn open_file(_: &Path, _: &[&str], _: &str, _: bool) -> Result<File, FileError> {
        Err(FileError::Refused("file actions need a Unix system".into()))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn tenants_write_apart_and_no_symlink_is_followed() {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path().join("base");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&base).expect("base");
        std::fs::create_dir_all(&outside).expect("outside");

        write_under(&base, "a", "out/x.log", b"from a", false).expect("a writes");
        write_under(&base, "b", "out/x.log", b"from b", false).expect("b writes");
        write_under(&base, "b", "out/x.log", b"again", true).expect("b appends");
        assert_eq!(std::fs::read(base.join("a/out/x.log")).expect("a's"), b"from a");
        assert_eq!(std::fs::read(base.join("b/out/x.log")).expect("b's"), b"from bagain\n");

        // A symlink as the file: refused, its target untouched.
        std::fs::write(outside.join("victim"), b"keep").expect("victim");
        std::os::unix::fs::symlink(outside.join("victim"), base.join("a/out/link")).expect("symlink");
        let err = write_under(&base, "a", "out/link", b"pwned", false).expect_err("refused");
        assert!(matches!(err, FileError::Refused(_)), "{err:?}");
        assert_eq!(std::fs::read(outside.join("victim")).expect("victim"), b"keep");

        // A symlink as a directory: refused, nothing created beyond it.
        std::os::unix::fs::symlink(&outside, base.join("a/escape")).expect("symlink");
        let err = write_under(&base, "a", "escape/new/file", b"pwned", false).expect_err("refused");
        assert!(matches!(err, FileError::Refused(_)), "{err:?}");
        assert!(!outside.join("new").exists(), "no directory created outside the base");

        // The tenant's own directory as a symlink: refused too.
        std::os::unix::fs::symlink(&outside, base.join("c")).expect("symlink");
        assert!(matches!(write_under(&base, "c", "f", b"x", false), Err(FileError::Refused(_))));
        assert!(matches!(write_under(&base, "..", "f", b"x", false), Err(FileError::Refused(_))));
    }
}
