//! A session's link events ([`SessionEvent`]): what happened to the
//! connection under a resumable session, for every `Session::events()`
//! stream subscribed at the time.

use std::sync::Mutex;

use futures::channel::mpsc;

use crate::error::Error;
use crate::util::lock;

/// What happened to a session's connection: reported on
/// [`Session::events`](crate::Session::events).
///
/// A session connected with [`Config::reconnect`](crate::Config::reconnect)
/// survives a broken connection: it reports `Disconnected`, one
/// `Reconnecting` per attempt, then `Resumed` (nothing was lost or
/// duplicated) or `Lost` (the session ended with that error, as a failed
/// connection does without reconnection). The accepting side reports
/// `Disconnected`, then `Resumed` or, after its grace period, `Lost`.
///
/// ```
/// use netchan::SessionEvent;
/// fn describe(ev: &SessionEvent) -> String {
///     match ev {
///         SessionEvent::Disconnected(e) => format!("disconnected: {e}"),
///         SessionEvent::Reconnecting { attempt } => format!("reconnecting, attempt {attempt}"),
///         SessionEvent::Resumed => "resumed".to_owned(),
///         SessionEvent::Lost(e) => format!("lost: {e}"),
///         _ => "other".to_owned(),
///     }
/// }
/// assert_eq!(describe(&SessionEvent::Resumed), "resumed");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The connection broke; the session is suspended while it is
    /// redialled (connecting side) or waited for (accepting side).
    Disconnected(Error),
    /// The connecting side dials again (1 for the first attempt after a
    /// disconnection).
    Reconnecting {
        /// Attempt number since the disconnection, from 1.
        attempt: u32,
    },
    /// The session continues over a new connection: every value, call and
    /// handle in flight carries on.
    Resumed,
    /// The session could not be resumed and has ended with this error.
    Lost(Error),
}

/// The subscribers of a session's events.
#[derive(Debug, Default)]
pub(crate) struct Events {
    /// `None` once the session ended: the streams have ended.
    subs: Mutex<Option<Vec<mpsc::UnboundedSender<SessionEvent>>>>,
}

impl Events {
    pub(crate) fn new() -> Events {
        Events {
            subs: Mutex::new(Some(Vec::new())),
        }
    }

    /// A stream of the events from now on; it ends when the session ends.
    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<SessionEvent> {
        let (tx, rx) = mpsc::unbounded();
        if let Some(subs) = lock(&self.subs).as_mut() {
            subs.push(tx);
        }
        rx
    }

    pub(crate) fn emit(&self, ev: SessionEvent) {
        if let Some(subs) = lock(&self.subs).as_mut() {
            subs.retain(|tx| tx.unbounded_send(ev.clone()).is_ok());
        }
    }

    /// The session ended: every stream ends after what it already has.
    pub(crate) fn end(&self) {
        lock(&self.subs).take();
    }
}
