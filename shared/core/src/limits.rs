//! How much a function instance takes before it answers 429, and where it reads the address a
//! request came from: the same variables on every backend, read once at start.

use std::num::NonZeroU32;

use crate::config::Env;

/// Requests a minute one key may make: a burst of that many, then one every `60 / n` seconds
/// (a token bucket refilled evenly). `None`: no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerMinute(pub Option<NonZeroU32>);

impl PerMinute {
    pub const fn new(per_minute: u32) -> Self {
        Self(NonZeroU32::new(per_minute))
    }
}

/// Where webhook deliveries may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookSources {
    /// Anywhere: the signature is the only check.
    Anywhere,
    /// Only the addresses GitHub publishes for its hooks (its `meta` API's `hooks`).
    GitHub,
}

/// The limits and where a request's source address is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// `RUNWAY_WEBHOOK_APP_PER_MINUTE`: verified deliveries to one app's hook.
    pub webhook_per_app: PerMinute,
    /// `RUNWAY_WEBHOOK_SOURCE_PER_MINUTE`: deliveries from one source address (an IPv6 /64).
    pub webhook_per_source: PerMinute,
    /// `RUNWAY_SUBMIT_CALLER_PER_MINUTE`: changes (create, update, redeploy, rollback, delete)
    /// by one signed-in caller.
    pub submit_per_caller: PerMinute,
    /// `RUNWAY_TRUSTED_XFF_ENTRIES`: how many entries at the right end of `X-Forwarded-For`
    /// the load balancer in front wrote; the source address is the leftmost of them. 0: the
    /// TCP peer's, and the header is not read.
    pub trusted_xff_entries: usize,
    /// `RUNWAY_WEBHOOK_SOURCES`: `any` or `github`.
    pub hook_sources: HookSources,
}

impl Default for RateLimits {
    /// Far above what people and GitHub send (GitHub delivers at most a few pushes a second for
    /// a repository, and all of an installation's hooks from a handful of addresses); they stop
    /// a runaway script or a flood, not use.
    fn default() -> Self {
        Self {
            webhook_per_app: PerMinute::new(300),
            webhook_per_source: PerMinute::new(3000),
            submit_per_caller: PerMinute::new(120),
            trusted_xff_entries: 0,
            hook_sources: HookSources::Anywhere,
        }
    }
}

impl RateLimits {
    /// Reads the variables, noting every invalid one in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        let default = Self::default();
        let mut per_minute = |name: &'static str, default: PerMinute| {
            PerMinute::new(env.parse_or(name, default.0.map_or(0, NonZeroU32::get)))
        };
        let webhook_per_app = per_minute("RUNWAY_WEBHOOK_APP_PER_MINUTE", default.webhook_per_app);
        let webhook_per_source = per_minute(
            "RUNWAY_WEBHOOK_SOURCE_PER_MINUTE",
            default.webhook_per_source,
        );
        let submit_per_caller =
            per_minute("RUNWAY_SUBMIT_CALLER_PER_MINUTE", default.submit_per_caller);
        let hook_sources = match env.or("RUNWAY_WEBHOOK_SOURCES", "any").as_str() {
            "any" => HookSources::Anywhere,
            "github" => HookSources::GitHub,
            other => {
                env.problem(format!(
                    "RUNWAY_WEBHOOK_SOURCES is {other:?}; it must be any or github"
                ));
                HookSources::Anywhere
            }
        };
        Self {
            webhook_per_app,
            webhook_per_source,
            submit_per_caller,
            trusted_xff_entries: env.parse_or("RUNWAY_TRUSTED_XFF_ENTRIES", 0),
            hook_sources,
        }
    }
}
