//! A client's side of the share: [`SharedDir`] serves [`Files`] for the
//! files under one directory and refuses every path that leads out of it.

use std::io;
use std::path::{Component, Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Download, Files};

/// Bytes read from a file at a time: one pipe chunk.
const READ_CHUNK: usize = 64 * 1024;

/// The directory a client shares, and the rules for paths into it.
///
/// A path is taken relative to the directory (an absolute path is taken
/// as it is). `.` and `..` are resolved by the path's text first, as a URL
/// path would be, then symbolic links by the file system; a path is served
/// only if where it finally leads is inside the directory. So `../x`,
/// `/etc/passwd` and a link to a file outside are refused alike, with an
/// error that says so — and without looking outside at all when the text
/// alone leads out, so that a refusal tells nothing of what exists there.
#[derive(Debug, Clone)]
pub struct SharedDir {
    /// Canonical: absolute, without links.
    root: PathBuf,
}

impl SharedDir {
    /// Shares `root`, which must be a directory.
    pub fn new(root: &Path) -> io::Result<SharedDir> {
        let canonical = std::fs::canonicalize(root).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot share {}: {e}", root.display()))
        })?;
        if !canonical.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot share {}: not a directory", root.display()),
            ));
        }
        Ok(SharedDir { root: canonical })
    }

    /// The directory shared (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `path` leads, if that is a file inside the directory; else
    /// a one-line reason that names `path`.
    ///
    /// ```
    /// let dir = examples::TempDir::new("doc-share").unwrap();
    /// std::fs::write(dir.path().join("a.txt"), b"x").unwrap();
    /// let share = examples::file_share::SharedDir::new(dir.path()).unwrap();
    /// assert!(share.resolve("a.txt").is_ok());
    /// assert!(share.resolve("./sub/../a.txt").is_ok());
    /// assert!(share.resolve("../a.txt").unwrap_err().contains("outside"));
    /// assert!(share.resolve("missing").unwrap_err().contains("no such file"));
    /// ```
    pub fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        if path.is_empty() {
            return Err("an empty path names no file".to_owned());
        }
        let outside = || format!("{path}: refused, it leads outside the shared directory");
        let lexical = clean(&self.root.join(path));
        if !lexical.starts_with(&self.root) {
            return Err(outside());
        }
        match std::fs::canonicalize(&lexical) {
            Ok(real) if real.starts_with(&self.root) => {
                if real.is_file() {
                    Ok(real)
                } else {
                    Err(format!("{path}: not a file"))
                }
            }
            Ok(_) => Err(outside()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A link inside may lead out to where this is missing:
                // then it is refused as leading out, telling nothing of
                // what exists there.
                let mut ancestor = lexical.parent();
                while let Some(a) = ancestor {
                    if let Ok(real) = std::fs::canonicalize(a) {
                        if !real.starts_with(&self.root) {
                            return Err(outside());
                        }
                        break;
                    }
                    ancestor = a.parent();
                }
                Err(format!("{path}: no such file"))
            }
            Err(e) => Err(format!("{path}: {e}")),
        }
    }
}

/// `path` with `.` and `..` resolved by its text alone (`..` at the root
/// stays at the root).
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                // `pop` keeps the root (and a Windows prefix) in place.
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Files for SharedDir {
    async fn read(&self, path: String) -> Result<Download, String> {
        let real = self.resolve(&path)?;
        let file = tokio::fs::File::open(&real)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| format!("{path}: {e}"))?
            .len();
        let (mut near, far) = netchan::pipe();
        // Exactly `size` bytes, even if the file grows meanwhile; if it
        // shrinks, or a read fails, the pipe ends early and the reader
        // sees fewer bytes than announced.
        let mut bytes = BufReader::with_capacity(READ_CHUNK, file).take(size);
        tokio::spawn(async move {
            if tokio::io::copy_buf(&mut bytes, &mut near).await.is_ok() {
                let _ = near.shutdown().await;
            }
            // On an error (the reader went away, or the file could not be
            // read) `near` just drops: the reader's count tells.
        });
        Ok(Download { size, bytes: far })
    }
}

#[cfg(test)]
mod tests {
    use super::{SharedDir, clean};
    use crate::TempDir;
    use std::path::Path;

    #[test]
    fn clean_resolves_dots_by_text_and_stops_at_the_root() {
        assert_eq!(clean(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(clean(Path::new("/a/../../..")), Path::new("/"));
        assert_eq!(clean(Path::new("/a/b/")), Path::new("/a/b"));
    }

    #[test]
    fn paths_leading_out_are_refused_whether_or_not_the_target_exists() {
        let outer = TempDir::new("share-test").unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        std::fs::write(root.join("ok"), b"o").unwrap();
        let share = SharedDir::new(&root).unwrap();
        assert!(share.resolve("ok").is_ok());
        assert!(share.resolve("../root/ok").is_ok());
        for path in ["../secret", "../nothing", "/etc/passwd", "/no/such/thing"] {
            let e = share.resolve(path).unwrap_err();
            assert!(e.contains("outside the shared directory"), "{path}: {e}");
        }
        let absolute_inside = share.root().join("ok");
        assert!(share.resolve(absolute_inside.to_str().unwrap()).is_ok());
        assert!(share.resolve(".").unwrap_err().contains("not a file"));
        assert!(share.resolve("").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_leading_out_are_refused_and_those_inside_followed() {
        let outer = TempDir::new("share-test").unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        std::fs::write(root.join("ok"), b"o").unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret"), root.join("to-secret")).unwrap();
        std::os::unix::fs::symlink(outer.path(), root.join("to-outer")).unwrap();
        std::os::unix::fs::symlink(root.join("ok"), root.join("to-ok")).unwrap();
        let share = SharedDir::new(&root).unwrap();
        for path in ["to-secret", "to-outer/secret", "to-outer/missing"] {
            let e = share.resolve(path).unwrap_err();
            assert!(e.contains("outside the shared directory"), "{path}: {e}");
        }
        assert!(share.resolve("to-ok").is_ok());
        // `..` goes by the text: back to the shared directory, not up from
        // where the link leads.
        assert!(share.resolve("to-outer/../ok").is_ok());
    }
}
