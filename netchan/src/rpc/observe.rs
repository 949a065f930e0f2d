//! What each call leaves behind for observers: its line in the session's
//! per-method counters and its `tracing` span, on both sides.
//!
//! Spans: `netchan.call` on the calling side, `netchan.handle` on the
//! serving side (the handler runs inside it), both at `INFO` with the
//! fields `service`, `method`, `side`, `call_id` and `session` (the
//! connection's number in this process). Each call start is a `TRACE`
//! event and each end a `DEBUG` event with `outcome` and `elapsed_us`.
//!
//! With the feature `trace-context`, calls also carry a W3C `traceparent`
//! (`00-<trace id>-<span id>-01`) and both spans record `trace_id`,
//! `span_id` and `parent_span_id`, the handler span also the
//! `traceparent` it received: a call made from inside a handler continues
//! its caller's trace, any other starts a new one, so a subscriber (an
//! OpenTelemetry layer, or `fmt`) can link the spans of one call tree
//! across connections and processes.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Span;
use tracing::field::Empty;

use crate::conn::{CallEnd, CallSide, MethodCounters};

/// `span` if a subscriber wants it, else [`Span::none`]. A disabled span
/// still carries its metadata (with `tracing`'s `log` feature on, it
/// formats a log record on every enter and exit just to find nobody
/// listens); a call made where nobody listens should pay nothing.
fn live(span: Span) -> Span {
    if span.is_disabled() {
        Span::none()
    } else {
        span
    }
}

/// The span of a call on the calling side.
pub(super) fn client_span(service: &str, method: &'static str, session: u64) -> Span {
    live(tracing::info_span!(
        "netchan.call",
        service,
        method,
        side = CallSide::Client.as_str(),
        call_id = Empty,
        session,
        trace_id = Empty,
        span_id = Empty,
        parent_span_id = Empty,
    ))
}

/// The span a handler runs in on the serving side.
pub(super) fn server_span(service: &str, method: &'static str, session: u64, call_id: u64) -> Span {
    live(tracing::info_span!(
        parent: None,
        "netchan.handle",
        service,
        method,
        side = CallSide::Server.as_str(),
        call_id,
        session,
        trace_id = Empty,
        span_id = Empty,
        parent_span_id = Empty,
        traceparent = Empty,
    ))
}

/// The instant `d` after `start`, or about thirty years on if that is past
/// what the clock can hold (a cap or a timeout of `Duration::MAX`).
pub(super) fn deadline_after(start: Instant, d: std::time::Duration) -> Instant {
    start
        .checked_add(d)
        .unwrap_or_else(|| start + std::time::Duration::from_secs(86_400 * 365 * 30))
}

/// One call's record: counted as started when made, as ended (with how,
/// and how long it took) by [`finish`](CallRecord::finish), or as
/// cancelled if dropped first (the caller dropped its future, or the
/// server aborted the handler).
pub(super) struct CallRecord {
    counters: Arc<MethodCounters>,
    span: Span,
    start: Instant,
    done: bool,
}

impl CallRecord {
    /// A call that started at `start`: the caller reads the clock once and
    /// uses the same reading for its deadline.
    pub(super) fn start(counters: Arc<MethodCounters>, span: Span, start: Instant) -> CallRecord {
        counters.start();
        span.in_scope(|| tracing::trace!("call started"));
        CallRecord {
            counters,
            span,
            start,
            done: false,
        }
    }

    /// The call's span ([`Span::none`] if nobody listens).
    pub(super) fn span(&self) -> &Span {
        &self.span
    }

    pub(super) fn finish(&mut self, how: CallEnd) {
        self.done = true;
        let took = self.start.elapsed();
        self.counters.end(how, took);
        self.span.in_scope(|| {
            tracing::debug!(
                outcome = how.as_str(),
                elapsed_us = took.as_micros() as u64,
                "call ended"
            );
        });
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.done {
            self.finish(CallEnd::Cancelled);
        }
    }
}

#[cfg(feature = "trace-context")]
pub(super) use context::{for_call, for_handler};

#[cfg(feature = "trace-context")]
mod context {
    use std::hash::{BuildHasher, Hasher, RandomState};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tracing::Span;

    tokio::task_local! {
        /// The trace of the handler running in this task.
        static CURRENT: TraceContext;
    }

    /// A position in a trace: the trace, and the span of this side.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(in crate::rpc) struct TraceContext {
        pub(in crate::rpc) trace_id: u128,
        pub(in crate::rpc) span_id: u64,
    }

    impl TraceContext {
        /// W3C trace context, version 00, sampled.
        pub(in crate::rpc) fn traceparent(&self) -> String {
            format!("00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
        }

        /// Reads a W3C `traceparent`: version 00 (or a later version's
        /// first four fields), ids not all zero.
        pub(in crate::rpc) fn parse(s: &str) -> Option<TraceContext> {
            let mut parts = s.split('-');
            let version = parts.next()?;
            let trace = parts.next()?;
            let span = parts.next()?;
            let flags = parts.next()?;
            let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex(version, 2)
                || version == "ff"
                || !hex(trace, 32)
                || !hex(span, 16)
                || !hex(flags, 2)
            {
                return None;
            }
            if version == "00" && parts.next().is_some() {
                return None;
            }
            let ctx = TraceContext {
                trace_id: u128::from_str_radix(trace, 16).ok()?,
                span_id: u64::from_str_radix(span, 16).ok()?,
            };
            (ctx.trace_id != 0 && ctx.span_id != 0).then_some(ctx)
        }

        /// Runs `fut` (a handler) as part of this trace: calls it makes
        /// continue the trace, with this span as their parent.
        pub(in crate::rpc) fn scope<F: std::future::Future>(
            self,
            fut: F,
        ) -> impl std::future::Future<Output = F::Output> {
            CURRENT.scope(self, fut)
        }
    }

    /// A random, non-zero 64-bit id: SipHash, keyed at random once per
    /// process, of a counter (no dependency on a random number crate).
    fn random_u64() -> u64 {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let mut h = KEYS.get_or_init(RandomState::new).build_hasher();
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            let v = h.finish();
            if v != 0 {
                return v;
            }
        }
    }

    fn record(span: &Span, ctx: &TraceContext, parent: Option<u64>) {
        span.record(
            "trace_id",
            tracing::field::display(format_args!("{:032x}", ctx.trace_id)),
        );
        span.record(
            "span_id",
            tracing::field::display(format_args!("{:016x}", ctx.span_id)),
        );
        if let Some(p) = parent {
            span.record(
                "parent_span_id",
                tracing::field::display(format_args!("{p:016x}")),
            );
        }
    }

    /// The context a call made now sends: the trace of the handler this
    /// task runs, if any, else a new one; a new span id either way.
    /// Recorded on the call's `span`.
    pub(in crate::rpc) fn for_call(span: &Span) -> TraceContext {
        let parent = CURRENT.try_with(|c| *c).ok();
        let ctx = TraceContext {
            trace_id: parent.map_or_else(
                || (u128::from(random_u64()) << 64) | u128::from(random_u64()),
                |p| p.trace_id,
            ),
            span_id: random_u64(),
        };
        record(span, &ctx, parent.map(|p| p.span_id));
        ctx
    }

    /// The context a handler runs in: the caller's trace (a new one if the
    /// call carried none, or an unreadable one) and a new span id,
    /// recorded on the handler's `span` with the caller's span as parent.
    pub(in crate::rpc) fn for_handler(span: &Span, traceparent: Option<&str>) -> TraceContext {
        let caller = traceparent.and_then(TraceContext::parse);
        if let Some(tp) = traceparent {
            span.record("traceparent", tp);
        }
        let ctx = TraceContext {
            trace_id: caller.map_or_else(
                || (u128::from(random_u64()) << 64) | u128::from(random_u64()),
                |c| c.trace_id,
            ),
            span_id: random_u64(),
        };
        record(span, &ctx, caller.map(|c| c.span_id));
        ctx
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_traceparent_reads_back_as_written() {
            let ctx = TraceContext {
                trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                span_id: 0x00f067aa0ba902b7,
            };
            let tp = ctx.traceparent();
            assert_eq!(
                tp,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            );
            assert_eq!(TraceContext::parse(&tp), Some(ctx));
        }

        #[test]
        fn malformed_or_zero_traceparents_are_refused() {
            for bad in [
                "",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            ] {
                assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
            }
        }

        #[test]
        fn random_ids_differ() {
            let ids: std::collections::HashSet<u64> = (0..1000).map(|_| random_u64()).collect();
            assert_eq!(ids.len(), 1000);
        }
    }
}
