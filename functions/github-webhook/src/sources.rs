//! Deliveries from GitHub's addresses only, when the operator asks for it
//! (`RUNWAY_WEBHOOK_SOURCES=github`): the ranges GitHub publishes for its hooks (its `meta`
//! API), kept, asked again once an hour, and sooner, at most once a minute, when a delivery
//! comes from an address the list does not hold (GitHub may have added a range since).

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use runway_core::clock::Clock;
use runway_core::domain::Timestamp;
use runway_core::ports::HookSources;
use runway_http::ApiError;

/// How long a list GitHub gave is used before it is asked again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// GitHub is asked at most this often, however many deliveries come from elsewhere: an
/// unauthenticated caller may ask its API 60 times an hour.
pub const ASK_AT_MOST_EVERY: Duration = Duration::from_secs(60);

/// GitHub's hook ranges as this instance last learned them.
pub struct HookRanges {
    sources: Arc<dyn HookSources>,
    clock: Arc<dyn Clock>,
    known: RwLock<Known>,
    /// One question to GitHub at a time; the others wait for its answer.
    asking: tokio::sync::Mutex<()>,
}

#[derive(Clone, Default)]
struct Known {
    /// Empty until GitHub first answered.
    ranges: Arc<Vec<IpNet>>,
    learned_at: Option<Timestamp>,
    asked_at: Option<Timestamp>,
}

impl Known {
    fn holds(&self, address: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(&address))
    }

    fn may_ask(&self, now: Timestamp) -> bool {
        self.asked_at
            .is_none_or(|at| since(at, now) >= ASK_AT_MOST_EVERY)
    }

    fn stale(&self, now: Timestamp) -> bool {
        self.learned_at
            .is_none_or(|at| since(at, now) >= REFRESH_EVERY)
    }
}

fn since(then: Timestamp, now: Timestamp) -> Duration {
    (now - then).to_std().unwrap_or_default()
}

impl HookRanges {
    pub fn new(sources: Arc<dyn HookSources>, clock: Arc<dyn Clock>) -> Self {
        Self {
            sources,
            clock,
            known: RwLock::default(),
            asking: tokio::sync::Mutex::new(()),
        }
    }

    fn known(&self) -> Known {
        self.known.read().expect("hook ranges lock").clone()
    }

    /// Passes a delivery from `address` when GitHub lists it; 403 when it does not. GitHub is
    /// asked within `deadline`, so a slow answer still leaves time for the delivery's own.
    pub async fn admit(&self, address: IpAddr, deadline: Duration) -> Result<(), ApiError> {
        let now = self.clock.now();
        let known = self.known();
        let listed = known.holds(address);
        if (known.stale(now) || !listed) && known.may_ask(now) {
            self.ask(deadline).await;
        } else if listed {
            return Ok(());
        }
        let known = self.known();
        if known.holds(address) {
            return Ok(());
        }
        if known.ranges.is_empty() {
            // Fail closed: the operator asked for GitHub's addresses only, and with no list
            // every address would pass. GitHub shows the 503 in the hook's Recent Deliveries,
            // where a person can redeliver once Runway has the list.
            let waited = known.asked_at.map_or(Duration::ZERO, |at| since(at, now));
            return Err(ApiError::UnavailableFor {
                message: "Runway could not yet learn the addresses GitHub sends webhooks from \
                          (GitHub's meta API), and takes deliveries from those only; redeliver \
                          this one from the hook's Recent Deliveries on GitHub in a minute"
                    .into(),
                retry_after: ASK_AT_MOST_EVERY.saturating_sub(waited),
            });
        }
        Err(ApiError::Forbidden(format!(
            "Runway takes webhook deliveries from GitHub's addresses only (its meta API's \
             hooks), and {address} is not one of them"
        )))
    }

    /// Asks GitHub for the ranges, unless another request did while this one waited; a failure
    /// keeps what was known.
    async fn ask(&self, deadline: Duration) {
        let _asking = self.asking.lock().await;
        if !self.known().may_ask(self.clock.now()) {
            return;
        }
        let answer = tokio::time::timeout(deadline, self.sources.hook_ranges()).await;
        let now = self.clock.now();
        let mut known = self.known.write().expect("hook ranges lock");
        known.asked_at = Some(now);
        match answer {
            Ok(Ok(ranges)) => {
                tracing::info!(ranges = ranges.len(), "learned GitHub's hook addresses");
                known.ranges = Arc::new(ranges);
                known.learned_at = Some(now);
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not learn GitHub's hook addresses; keeping the last")
            }
            Err(_) => tracing::warn!(
                "GitHub's meta API took longer than {deadline:?}; keeping the last hook addresses"
            ),
        }
    }
}
