//! Rate limits per key (an app, a source address, a caller): governor's keyed GCRA token
//! buckets, timed by the function's own `Clock`, so a test moves a `ManualClock` past the wait
//! instead of sleeping through it. Each instance counts on its own: on Cloud Run, N instances
//! take up to N times the rate.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::nanos::Nanos;
use governor::{Quota, RateLimiter};
use runway_core::clock::Clock;
use runway_core::limits::PerMinute;

/// Keys tracked before the idle ones are dropped (about 60 bytes each).
const TRACKED: usize = 10_000;
/// How often, in checks, a limiter over `TRACKED` drops its idle keys: each drop walks them
/// all, so not on every request of a flood.
const SWEEP_EVERY: u64 = 1024;

/// The function's clock as governor's: nanoseconds since the epoch. Wall time, not monotonic:
/// a clock stepped back only makes the buckets refill late by that step.
#[derive(Clone, Debug)]
struct LimitClock(Arc<dyn Clock>);

impl governor::clock::Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let nanos = self.0.now().timestamp_nanos_opt().unwrap_or_default();
        Nanos::from(u64::try_from(nanos).unwrap_or_default())
    }
}

type Limiter<K> = RateLimiter<
    K,
    governor::state::keyed::DashMapStateStore<K>,
    LimitClock,
    governor::middleware::NoOpMiddleware<Nanos>,
>;

/// One rate for every key; `check` takes one request of a key.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    /// `None`: no limit.
    limiter: Option<Limiter<K>>,
    clock: LimitClock,
    rate: PerMinute,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    pub fn new(rate: PerMinute, clock: Arc<dyn Clock>) -> Self {
        let clock = LimitClock(clock);
        Self {
            limiter: rate
                .0
                .map(|n| RateLimiter::dashmap_with_clock(Quota::per_minute(n), clock.clone())),
            clock,
            rate,
            checks: AtomicU64::new(0),
        }
    }

    /// How many a minute this limit takes, to name in a refusal.
    pub fn per_minute(&self) -> u32 {
        self.rate.0.map_or(0, |n| n.get())
    }

    /// Takes one request of `key`, or says how long until the key may send one again.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let checked = limiter.check_key(key);
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
            && limiter.len() > TRACKED
        {
            // Keys whose bucket has been full again for a refill period are as good as new:
            // anyone may send a burst of distinct sources or app names, and only those of the
            // last two minutes or so need keeping.
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        checked
            .map_err(|not_until| not_until.wait_time_from(governor::clock::Clock::now(&self.clock)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runway_core::clock::ManualClock;

    #[test]
    fn a_key_gets_its_burst_then_waits_for_the_next_one_while_others_go_on() {
        let clock = ManualClock::starting_now();
        let limit = KeyedLimit::new(PerMinute::new(2), Arc::new(clock.clone()));

        assert_eq!(limit.check(&"a"), Ok(()));
        assert_eq!(limit.check(&"a"), Ok(()));
        let wait = limit.check(&"a").unwrap_err();
        assert_eq!(limit.check(&"b"), Ok(()), "another key has its own bucket");

        // Two a minute: one more every 30 s.
        assert_eq!(wait, Duration::from_secs(30));
        clock.advance(Duration::from_secs(29));
        assert!(limit.check(&"a").is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(limit.check(&"a"), Ok(()));
        assert!(limit.check(&"a").is_err());
    }

    #[test]
    fn no_rate_is_no_limit() {
        let limit = KeyedLimit::new(PerMinute::new(0), runway_core::clock::system());
        for _ in 0..10_000 {
            assert_eq!(limit.check(&1), Ok(()));
        }
    }

    #[test]
    fn idle_keys_are_dropped_once_there_are_many() {
        let clock = ManualClock::starting_now();
        let limit = KeyedLimit::new(PerMinute::new(1), Arc::new(clock.clone()));
        for key in 0..=TRACKED as u64 + SWEEP_EVERY {
            let _ = limit.check(&key);
        }
        // Full again after a minute, dropped a refill period later.
        clock.advance(Duration::from_secs(121));
        for key in 0..SWEEP_EVERY {
            let _ = limit.check(&(u64::MAX - key));
        }

        let tracked = limit.limiter.as_ref().unwrap().len();
        assert!(tracked <= SWEEP_EVERY as usize, "{tracked} keys kept");
    }
}
