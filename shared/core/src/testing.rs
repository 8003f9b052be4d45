//! Values tests share: the core's own, and other crates' through the `testing` feature.

use crate::domain::{
    AppName, Branch, Deployment, MainFile, NewRelease, Region, Release, ReleaseId, ReleaseState,
    RepoUrl, Timestamp, Trigger,
};

/// The app `app` deploying `main` of `repo` (GitHub's id `repo_id`) from `app.py`, owned by
/// `owner`, in region `local`, with no release yet.
pub fn deployment(app: &str, repo: RepoUrl, repo_id: u64, owner: &str) -> Deployment {
    let now = chrono::Utc::now();
    Deployment {
        app: AppName::parse(app).expect("an app name"),
        repo,
        repo_id,
        branch: Branch::parse("main").expect("a branch"),
        main_file: MainFile::parse("app.py").expect("a main file"),
        region: Region::try_from("local".to_owned()).expect("a region"),
        resources: Default::default(),
        runtime: Default::default(),
        access: Default::default(),
        owner: owner.into(),
        notify: Vec::new(),
        previews: Default::default(),
        pull: None,
        secret_keys: None,
        webhook_id: None,
        live_release: None,
        url: None,
        created_at: now,
        updated_at: now,
    }
}

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
