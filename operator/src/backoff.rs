//! Retry delays of failed reconciles: per object, doubling from 5 s up to a 5 min cap, back to 5 s after a
//! reconcile succeeds. A persistent failure (an API server refusing an object, a missing permission) then costs a
//! request every 5 minutes instead of one every 5 seconds.

use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Delay after the first failure.
pub const FIRST: Duration = Duration::from_secs(5);
/// Longest delay.
pub const CAP: Duration = Duration::from_secs(300);

/// Consecutive failures per object (`kind/namespace/name`).
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
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
    /// Counts a failure of `key`; returns how long to wait before the next try, and the failures so far.
    pub fn failed(&self, key: &str) -> (Duration, u32) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        (delay(*n), *n)
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
        assert_eq!(b.failed("a"), (FIRST, 1));
        assert_eq!(b.failed("a"), (Duration::from_secs(10), 2));
        assert_eq!(b.failed("b"), (FIRST, 1), "per object");
        b.succeeded("a");
        assert_eq!(b.failed("a"), (FIRST, 1));
    }
}
