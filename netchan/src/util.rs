//! Small helpers shared by every layer above `proto`. Holds no state and
//! knows no netchan type.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock was held cannot leave these structures in a
    // state worse than the panic itself; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
