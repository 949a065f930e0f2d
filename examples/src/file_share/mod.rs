//! The file-share app of the "bidirectional RPC with netchan" article,
//! done with `#[netchan::service]`: every client shares a directory, and
//! any client reads any other client's files through the server, over
//! nothing but its own outgoing connection.
//!
//! Two services, one per direction of each connection:
//!
//! * [`Hub`], served by the server to every client (with
//!   [`netchan::Exporter::serve_each`]: one handler per client connection,
//!   made when it connects and dropped when it ends, knowing its peer):
//!   `join` registers the caller under a name until it leaves, `list`
//!   names the clients connected, `read` fetches a file from one of them.
//! * [`Files`], served by each client back to the server on the client's
//!   own connection ([`netchan::Session::serve`]): `read` opens a file under
//!   the client's shared directory.
//!
//! A file travels as a [`Download`]: its size and a [`netchan::Pipe`] its
//! bytes stream through in chunks, never as one buffer. The server does not
//! copy them: it hands on the pipe it got from the owner's `Files::read`
//! as its own `Hub::read` result, and netchan forwards it from one
//! connection to the other.
//!
//! ```text
//!  client bob               server                    client alice
//!  Hub::read("alice", p) ─▶ Hub handler of bob's session
//!                           looks up alice ─────────▶ Files::read(p)
//!                           ◀─────────────────────── Download { size, pipe }
//!  ◀─ Download { size, pipe }   (the same pipe, forwarded)
//!  bytes ◀━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ file
//! ```

mod command;
mod hub;
mod member;
mod share;
mod transfer;

use netchan::Pipe;
use serde::{Deserialize, Serialize};

pub use command::{Command, HELP};
pub use hub::{Directory, serve_hub};
pub use member::Member;
pub use share::SharedDir;
pub use transfer::{Received, receive};

/// A file on its way: its length when it was opened, and a pipe that
/// carries exactly that many bytes, then end-of-file. Fewer bytes before
/// end-of-file mean the transfer was cut short (the owner went away or the
/// file could not be read to the end).
#[derive(Debug, Serialize, Deserialize)]
pub struct Download {
    /// Length of the file in bytes.
    pub size: u64,
    /// The bytes.
    pub bytes: Pipe,
}

/// What the server serves to every client.
#[netchan::service(name = "file-share.hub.v1")]
pub trait Hub {
    /// Registers the calling client under `name`, so other clients can
    /// read its files. A client joins once; names are unique among the
    /// clients connected.
    async fn join(&self, name: String) -> Result<(), String>;

    /// The names of the clients connected, sorted.
    async fn list(&self) -> Vec<String>;

    /// Reads `path` from the shared directory of the client named
    /// `client`.
    async fn read(&self, client: String, path: String) -> Result<Download, String>;

    /// What the server sees of the caller's connection: its age, bytes and
    /// frames each way, and each channel open on it (from
    /// `Session::stats`), one line each.
    async fn stats(&self) -> Vec<String>;
}

/// What each client serves back to the server over its own connection.
#[netchan::service(name = "file-share.files.v1")]
pub trait Files {
    /// Opens `path` (relative to the shared directory) for reading.
    async fn read(&self, path: String) -> Result<Download, String>;
}

/// The longest client name accepted by `join`.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a client name: 1 to [`MAX_NAME_LEN`] bytes of letters, digits,
/// `-`, `_` and `.`, so that it prints on one line and is one word of a
/// `read` command.
///
/// ```
/// use examples::file_share::check_name;
/// assert!(check_name("alice-2").is_ok());
/// assert!(check_name("").is_err());
/// assert!(check_name("two words").is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "a client name has 1 to {MAX_NAME_LEN} characters, not {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{name:?}: a client name has letters, digits, '-', '_' and '.' only, not {c:?}"
        ));
    }
    Ok(())
}
