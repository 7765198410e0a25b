//! Retry delays of failed reconciles: per object, doubling from 5 s up to a 5 min cap, back to 5 s after a
//! reconcile succeeds. A persistent failure (an API server refusing an object, a missing permission) then costs a
//! request every 5 minutes instead of one every 5 seconds. Until its retry is due, an object is not reconciled
//! again for the same spec generation, whatever else triggers it: reporting the failure in its status is itself a
//! change the controller watches.

use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Delay after the first failure.
pub const FIRST: Duration = Duration::from_secs(5);
/// Longest delay.
pub const CAP: Duration = Duration::from_secs(300);

/// Consecutive failures per object (`kind/namespace/name`).
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    retry_at: Instant,
    generation: Option<i64>,
}

/// The delay after `failures` consecutive failures (1 = the first).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST * 2u32.pow(doublings)).min(CAP)
}

/// The key of `obj` in a [`Backoff`].
pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

impl Backoff {
    /// Counts a failure of `key` at spec `generation`; returns how long to wait before the next try, and the
    /// failures so far.
    pub fn failed(&self, key: &str, generation: Option<i64>) -> (Duration, u32) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.get(key).map_or(0, |f| f.count).saturating_add(1);
        let wait = delay(count);
        map.insert(key.to_string(), Failures { count, retry_at: Instant::now() + wait, generation });
        (wait, count)
    }

    /// How long `key` must still wait before its retry, when it failed at this same `generation` (a new spec is
    /// tried at once).
    pub fn hold(&self, key: &str, generation: Option<i64>) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let f = map.get(key).filter(|f| f.generation == generation)?;
        let left = f.retry_at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// The delay and failure count `failed` last returned for `key` (the first delay when it never failed).
    pub fn current(&self, key: &str) -> (Duration, u32) {
        let n = self.failures.lock().unwrap_or_else(|p| p.into_inner()).get(key).map_or(0, |f| f.count);
        (delay(n.max(1)), n)
    }

    /// Forgets the failures of `key` (it reconciled).
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_and_reset_on_success() {
        let secs: Vec<u64> = (1..=8).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(delay(u32::MAX), CAP);
        let b = Backoff::default();
        assert_eq!(b.failed("a", Some(1)), (FIRST, 1));
        assert_eq!(b.failed("a", Some(1)), (Duration::from_secs(10), 2));
        assert_eq!(b.failed("b", Some(1)), (FIRST, 1), "per object");
        assert_eq!(b.current("a"), (Duration::from_secs(10), 2), "reading does not count");
        let held = b.hold("a", Some(1)).expect("retry not due");
        assert!(held > Duration::from_secs(9) && held <= Duration::from_secs(10), "{held:?}");
        assert_eq!(b.hold("a", Some(2)), None, "a new spec generation is tried at once");
        assert_eq!(b.hold("c", Some(1)), None);
        b.succeeded("a");
        assert_eq!(b.hold("a", Some(1)), None);
        assert_eq!(b.failed("a", Some(1)), (FIRST, 1));
    }
}
