//! Values the core's unit tests share.

use crate::domain::{AppName, NewRelease, Release, ReleaseId, ReleaseState, Timestamp, Trigger};

/// Release `id` of the app `demo`, numbered `seq`, in `state`, queued at `now`.
pub fn release(id: &str, seq: u64, state: ReleaseState, now: Timestamp) -> Release {
    let new = NewRelease {
        app: AppName::parse("demo").unwrap(),
        trigger: Trigger::Push,
        actor: "ada".into(),
        commit: None,
        rollback_of: None,
        clear_cache: false,
    };
    let mut release = Release::queued(new, ReleaseId::new(id), seq, now);
    release.state = state;
    release
}
