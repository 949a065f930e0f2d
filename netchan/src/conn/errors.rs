//! The error log of a connection (and of an exporter): a bounded history
//! that any number of `errors()` streams read from the start.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::error::Error;
use crate::util::lock;

/// An error log: a bounded history that any number of `errors()` streams
/// read from the start.
#[derive(Debug)]
pub(crate) struct ErrorLog {
    st: Mutex<LogState>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct LogState {
    list: std::collections::VecDeque<Error>,
    /// Index of `list[0]` in the whole history.
    base: u64,
    ended: bool,
}

const ERROR_LOG_KEEP: usize = 256;

impl ErrorLog {
    pub(crate) fn new() -> Arc<ErrorLog> {
        Arc::new(ErrorLog {
            st: Mutex::new(LogState::default()),
            notify: Notify::new(),
        })
    }

    pub(crate) fn push(&self, e: Error) {
        let mut st = lock(&self.st);
        if st.list.len() == ERROR_LOG_KEEP {
            st.list.pop_front();
            st.base += 1;
        }
        st.list.push_back(e);
        drop(st);
        self.notify.notify_waiters();
    }

    pub(crate) fn end(&self) {
        lock(&self.st).ended = true;
        self.notify.notify_waiters();
    }

    /// A stream of every error logged, from the oldest kept, ending when
    /// the log ends.
    pub(crate) fn stream(
        self: &Arc<Self>,
    ) -> impl futures::Stream<Item = Error> + Send + Unpin + 'static {
        let log = self.clone();
        Box::pin(futures::stream::unfold(
            (log, 0u64),
            |(log, mut next)| async move {
                let found = loop {
                    let notified = log.notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    {
                        let st = lock(&log.st);
                        if next < st.base {
                            next = st.base;
                        }
                        let i = (next - st.base) as usize;
                        if let Some(e) = st.list.get(i) {
                            break Some(e.clone());
                        }
                        if st.ended {
                            break None;
                        }
                    }
                    notified.await;
                };
                found.map(|e| (e, (log, next + 1)))
            },
        ))
    }
}
