//! Where a channel id leads on this side: the endpoint table's entries.

use std::sync::{Arc, Weak};

use crate::channel::queue::{Inbound, Link};
use crate::channel::route::Route;

/// Where a channel id leads on this side.
pub(crate) enum Endpoint {
    /// We receive: messages go to this queue through this link.
    In(Arc<dyn Inbound>, Arc<Link>),
    /// We send: credit wakes this route.
    Out(Weak<Route>),
    /// A handle that arrived in a message not yet decoded.
    Adopted,
}
