//! Small helpers shared by every layer above `proto`. Holds no state and
//! knows no netchan type.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock was held cannot leave these structures in a
    // state worse than the panic itself; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `d` in whole milliseconds, rounded up: a deadline sent this way never
/// passes on the far side before it passes here (rounded down, 49.9 ms
/// left would travel as 49, and a call could fail with a timeout before
/// its own timeout had passed).
pub(crate) fn millis_rounded_up(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::millis_rounded_up;
    use std::time::Duration;

    #[test]
    fn milliseconds_round_up_so_a_deadline_never_shrinks() {
        assert_eq!(millis_rounded_up(Duration::ZERO), 0);
        assert_eq!(millis_rounded_up(Duration::from_nanos(1)), 1);
        assert_eq!(millis_rounded_up(Duration::from_micros(49_900)), 50);
        assert_eq!(millis_rounded_up(Duration::from_millis(50)), 50);
        assert_eq!(millis_rounded_up(Duration::from_micros(50_001)), 51);
        assert_eq!(millis_rounded_up(Duration::MAX), u64::MAX);
        for us in [1, 999, 1_000, 1_001, 123_456_789] {
            let d = Duration::from_micros(us);
            assert!(Duration::from_millis(millis_rounded_up(d)) >= d, "{d:?}");
        }
    }
}
