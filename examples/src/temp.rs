//! [`TempDir`]: a directory that removes itself, for `file-share demo` and
//! the examples' tests (std has none, and it is not worth a dependency).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when dropped.
///
/// ```
/// let path = {
///     let dir = examples::TempDir::new("doc").unwrap();
///     std::fs::write(dir.path().join("a"), b"x").unwrap();
///     dir.path().to_owned()
/// };
/// assert!(!path.exists());
/// ```
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/{prefix}-{pid}-{n}`, never one that already exists.
    pub fn new(prefix: &str) -> io::Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{prefix}-{}-{nanos}-{n}", std::process::id()));
            // `create_dir`, not `create_dir_all`: it fails on an existing
            // directory, so two programs never share one.
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot create {}: {e}", path.display()),
                    ));
                }
            }
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
