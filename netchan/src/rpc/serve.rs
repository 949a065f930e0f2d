//! `serve` and `serve_each`: a service exported on one session or on every
//! session of an exporter. These are methods of [`Session`] and
//! [`Exporter`], defined here so that neither of those modules depends on
//! RPC.

use std::sync::Arc;

use super::{MakeService, Service, export_name, service_export};
use crate::{Exporter, Session};

impl Session {
    /// Serves `service` to this session's peer only. Both ends of a
    /// session may serve and call at once.
    pub fn serve<S: Service>(&self, service: S) {
        let name = export_name(service.name());
        let service = Arc::new(service);
        let make: MakeService<Arc<S>> = Arc::new(move |_: &Session| service.clone());
        self.conn().exports.hangup(&name);
        let _ = self.conn().exports.add(&name, service_export(make));
    }
}

impl Exporter {
    /// Serves `service` to every session, present and future: one instance
    /// shared by all (clones share it).
    pub fn serve<S: Service + Clone>(&self, service: S) {
        let name = service.name().to_owned();
        let make: MakeService<S> = Arc::new(move |_: &Session| service.clone());
        self.add_service(&export_name(&name), service_export(make));
    }

    /// Serves a service made for each session by `make`, which gets the
    /// session, so a handler knows its peer and can call it back.
    pub fn serve_each<S: Service>(&self, make: impl Fn(&Session) -> S + Send + Sync + 'static) {
        let make: MakeService<S> = Arc::new(make);
        self.add_service(&export_name(S::NAME), service_export(make));
    }
}
