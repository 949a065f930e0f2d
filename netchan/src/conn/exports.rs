//! The names exported on a connection (and those an exporter shares with
//! all its connections): a registry of trait objects that `on_open`
//! consults when a peer imports. It knows no channel, route or service
//! type, only what a connection needs of each.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use super::{Conn, ConnRef, Inbound, Outbound};
use crate::codec;
use crate::error::Error;
use crate::proto::{ChanId, CloseCode};
use crate::util::lock;

/// One exported name.
#[derive(Clone)]
pub(crate) enum Export {
    /// Importers receive; values are shared out among them.
    Sender {
        route: Weak<dyn SenderExport>,
        type_name: String,
    },
    /// Importers send; their values merge into one queue.
    Receiver {
        queue: Arc<dyn Inbound>,
        type_name: String,
    },
    /// Importers send calls; each import gets a fresh queue with its own
    /// dispatcher (an RPC service).
    Service {
        type_name: String,
        start: ServiceStart,
    },
}

/// Starts a dispatcher for one import of a service; returns its queue.
pub(crate) type ServiceStart = Arc<dyn Fn(&Arc<Conn>) -> Arc<dyn Inbound> + Send + Sync>;

/// What a connection needs from an exported sender (a route shared out
/// among the peer's importers).
pub(crate) trait SenderExport: Send + Sync + 'static {
    /// Whether it was closed for good (`hangup`, or every `Sender` gone).
    fn is_closed(&self) -> bool;
    /// A peer's import of it: channel `chan` of `conn` takes values too.
    /// Returns the endpoint that credit on `chan` wakes.
    fn add_member(self: Arc<Self>, conn: ConnRef, chan: ChanId) -> Arc<dyn Outbound>;
    /// Closes it for good, with `code` to every importer.
    fn close(&self, code: CloseCode, reason: &str);
    /// Closes it for good because its connection failed with `e` (what
    /// a send then reports).
    fn fail(&self, e: &Error);
}

impl Export {
    /// An exported sender of `T` values.
    pub(crate) fn sender<T: ?Sized, R: SenderExport>(route: &Arc<R>) -> Export {
        let route: Weak<R> = Arc::downgrade(route);
        Export::Sender {
            route,
            type_name: codec::type_name::<T>(),
        }
    }

    /// An exported receiver of `T` values.
    pub(crate) fn receiver<T: ?Sized>(queue: Arc<dyn Inbound>) -> Export {
        Export::Receiver {
            queue,
            type_name: codec::type_name::<T>(),
        }
    }

    fn is_dead(&self) -> bool {
        match self {
            Export::Sender { route, .. } => route.upgrade().is_none_or(|r| r.is_closed()),
            Export::Receiver { .. } | Export::Service { .. } => false,
        }
    }
}

/// Names exported by a session or an exporter.
#[derive(Default)]
pub(crate) struct Exports {
    map: Mutex<HashMap<String, Export>>,
}

impl fmt::Debug for Exports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = lock(&self.map).keys().cloned().collect();
        f.debug_struct("Exports").field("names", &names).finish()
    }
}

impl Exports {
    pub(crate) fn new() -> Arc<Exports> {
        Arc::new(Exports::default())
    }

    pub(crate) fn add(&self, name: &str, e: Export) -> Result<(), Error> {
        if name.len() > crate::proto::frame::MAX_NAME_LEN {
            return Err(Error::Config(format!(
                "channel name of {} bytes is longer than {}",
                name.len(),
                crate::proto::frame::MAX_NAME_LEN
            )));
        }
        let mut map = lock(&self.map);
        if map.get(name).is_some_and(|old| !old.is_dead()) {
            return Err(Error::AlreadyExported(name.to_owned()));
        }
        map.insert(name.to_owned(), e);
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<Export> {
        lock(&self.map).get(name).cloned()
    }

    /// Withdraws `name` and closes it. False if it was not exported.
    pub(crate) fn hangup(&self, name: &str) -> bool {
        let e = lock(&self.map).remove(name);
        match e {
            Some(e) => {
                close_export(e);
                true
            }
            None => false,
        }
    }

    /// Ends every export because the session owning them ended: cleanly
    /// (`None`), or with an error that exported receivers report.
    pub(crate) fn end_all(&self, error: Option<&Error>) {
        let all: Vec<Export> = lock(&self.map).drain().map(|(_, e)| e).collect();
        for e in all {
            match (e, error) {
                (Export::Receiver { queue, .. }, Some(err)) => queue.fail(err.clone()),
                (Export::Sender { route, .. }, Some(err)) => {
                    if let Some(r) = route.upgrade() {
                        r.fail(err);
                    }
                }
                (e, _) => close_export(e),
            }
        }
    }

    pub(crate) fn hangup_all(&self) {
        let all: Vec<Export> = lock(&self.map).drain().map(|(_, e)| e).collect();
        for e in all {
            close_export(e);
        }
    }
}

fn close_export(e: Export) {
    match e {
        Export::Sender { route, .. } => {
            if let Some(r) = route.upgrade() {
                r.close(CloseCode::Hangup, "hung up");
            }
        }
        Export::Receiver { queue, .. } => queue.hangup(),
        // Running dispatchers end with their clients' channels.
        Export::Service { .. } => {}
    }
}
