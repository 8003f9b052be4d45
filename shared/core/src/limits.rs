//! How much a function instance takes before it answers 429.

use std::num::NonZeroU32;

/// Requests a minute one key may make: a burst of that many, then one every `60 / n` seconds
/// (a token bucket refilled evenly). `None`: no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerMinute(pub Option<NonZeroU32>);

impl PerMinute {
    pub const fn new(per_minute: u32) -> Self {
        Self(NonZeroU32::new(per_minute))
    }
}
