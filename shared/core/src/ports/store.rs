use std::collections::HashMap;

use async_trait::async_trait;

use crate::domain::{
    AppName, AuditEntry, BuildId, Delivery, Deployment, HookHealth, HookId, NewRelease, Release,
    ReleaseId, ReleaseState, ReleaseUpdate, Timestamp,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    /// A compare-and-set lost: the record is not in the state the caller expected.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The disk under the store is full: nothing more can be written until someone makes room.
    /// Retrying soon does not help, and the write was not made.
    #[error("no room left on the store's disk: {0}")]
    Full(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// How long Runway keeps what it records. Deliveries only explain what a push did, and an
/// app's history beyond its last releases is neither shown nor rolled back to (its images are
/// gone by then: Artifact Registry keeps an app's newest few); kept forever, both grow without
/// bound with every push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Webhook deliveries received longer ago than this are removed.
    pub deliveries_for: chrono::Duration,
    /// How many of each app's newest releases (by `seq`, of any state) are kept whatever
    /// their state; finished ones beyond them are removed, except the one serving.
    pub releases_kept: usize,
}

impl Retention {
    /// Thirty days of deliveries (a month of "why did this push not deploy?") and a hundred
    /// releases an app (pages of history, far past any rollback an image still allows).
    pub const DEFAULT: Self = Self {
        deliveries_for: chrono::Duration::days(30),
        releases_kept: 100,
    };

    pub fn new(deliveries_for: chrono::Duration, releases_kept: usize) -> Self {
        Self {
            deliveries_for,
            releases_kept,
        }
    }

    /// Deliveries received before this, seen at `now`, are past keeping; `None` if none is (a
    /// retention reaching back before any representable time).
    pub fn deliveries_cut(&self, now: Timestamp) -> Option<Timestamp> {
        now.checked_sub_signed(self.deliveries_for)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What one `Store::prune` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: usize,
    pub releases: usize,
}

impl Pruned {
    /// The most records of each kind one `prune` removes: enough to keep up with any real
    /// inflow on a schedule of minutes, few enough that one call holds neither the embedded
    /// database nor a Firestore commit (500 writes at most) for long.
    pub const AT_MOST: usize = 400;

    /// Nothing was removed: whatever was past keeping is gone.
    pub fn is_empty(&self) -> bool {
        self.deliveries == 0 && self.releases == 0
    }

    /// Whether a call may have left more behind (it reached `AT_MOST` of a kind).
    pub fn may_have_more(&self) -> bool {
        self.deliveries >= Self::AT_MOST || self.releases >= Self::AT_MOST
    }
}

/// What a list of apps shows of one app's releases.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppReleases {
    pub newest: Option<Release>,
    /// The release `Deployment::live_release` names, if it is still there.
    pub live: Option<Release>,
}

impl AppReleases {
    /// Sorts `found` (releases of these apps, in any order, each at most once or more) into
    /// each deployment's newest and live release, in the order of `deployments`. A store reads
    /// the candidates its own way and pairs them up here.
    pub fn pair(deployments: &[Deployment], found: Vec<Release>) -> Vec<Self> {
        let mut by_app: HashMap<AppName, Vec<Release>> = HashMap::new();
        for release in found {
            by_app.entry(release.app.clone()).or_default().push(release);
        }
        deployments
            .iter()
            .map(|deployment| {
                let of_app = by_app.get(&deployment.app).map_or(&[][..], Vec::as_slice);
                Self {
                    newest: of_app.iter().max_by_key(|release| release.seq).cloned(),
                    live: deployment
                        .live_release
                        .as_ref()
                        .and_then(|id| of_app.iter().find(|release| &release.id == id))
                        .cloned(),
                }
            })
            .collect()
    }
}

/// Deployments, releases, webhook deliveries and the audit trail. Every read-modify-write is
/// atomic, so concurrent workers never lose an update.
#[async_trait]
pub trait Store: Send + Sync {
    /// Creates or replaces the deployment record of `deployment.app`, keeping the stored
    /// `live_release` and `url`: only `transition` moves those, so a settings change that read
    /// the deployment before a release went live cannot put the old release back.
    async fn put_deployment(&self, deployment: &Deployment) -> Result<(), StoreError>;
    /// Creates the deployment record only if the app has none: `false` if it has. Of two
    /// creates of one name at once, exactly one gets `true`.
    async fn insert_deployment(&self, deployment: &Deployment) -> Result<bool, StoreError>;
    async fn deployment(&self, app: &AppName) -> Result<Option<Deployment>, StoreError>;
    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError>;
    /// The deployments built from this repository (any branch).
    async fn deployments_of_repo(&self, repo_id: u64) -> Result<Vec<Deployment>, StoreError>;
    /// Removes the deployment, its releases and its hook's health. Deliveries and audit
    /// entries stay.
    async fn delete_deployment(&self, app: &AppName) -> Result<(), StoreError>;
    /// Records what cleanup found of the app's hook (kept apart from the app's record, which
    /// submit writes whole).
    async fn put_hook_health(&self, app: &AppName, health: &HookHealth) -> Result<(), StoreError>;
    async fn hook_health(&self, app: &AppName) -> Result<Option<HookHealth>, StoreError>;

    /// Queues a release: assigns the next per-app sequence number and supersedes the app's
    /// older releases still queued, in one transaction.
    async fn queue_release(&self, release: NewRelease) -> Result<Release, StoreError>;
    async fn release(&self, id: &ReleaseId) -> Result<Option<Release>, StoreError>;
    /// The app's releases, newest first.
    async fn releases(&self, app: &AppName, limit: usize) -> Result<Vec<Release>, StoreError>;
    /// The app's releases numbered below `before`, newest first: the page of history after
    /// one that ended at release `before`.
    async fn releases_before(
        &self,
        app: &AppName,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Release>, StoreError>;
    /// Each app's newest release and the one that serves it, in the order of `deployments`:
    /// what a list of apps shows, read at once however many apps there are (one read per app
    /// made the apps page of a team's console slow).
    async fn newest_and_live(
        &self,
        deployments: &[Deployment],
    ) -> Result<Vec<AppReleases>, StoreError>;
    async fn release_by_build(&self, build_id: &BuildId) -> Result<Option<Release>, StoreError>;
    /// Releases in `state` whose last change is older than `before`, oldest first.
    async fn releases_in_state(
        &self,
        state: ReleaseState,
        before: Timestamp,
    ) -> Result<Vec<Release>, StoreError>;
    /// Compare-and-set: moves the release from `from` to `to` (or, with `from == to`, updates it
    /// in place) and writes `update`. `Conflict`
    /// if it is no longer in `from`, or if `to` is `Live` and a newer release of the app is
    /// already live. Going live also points the deployment at this release.
    async fn transition(
        &self,
        id: &ReleaseId,
        from: ReleaseState,
        to: ReleaseState,
        update: ReleaseUpdate,
    ) -> Result<Release, StoreError>;

    /// Records a webhook delivery; `false` if this app's hook received its id before (a
    /// replay). The same id reaching another app's hook is another delivery: GitHub sends one
    /// id per event to every hook.
    async fn record_delivery(&self, delivery: &Delivery) -> Result<bool, StoreError>;
    /// Records a push's delivery and queues the release it asks for, in one transaction:
    /// `None`, and nothing queued, if this app's hook received the delivery before. When it
    /// fails nothing is written, so GitHub's "Redeliver" (the same id) is not taken for a replay.
    async fn accept_push(
        &self,
        delivery: &Delivery,
        release: NewRelease,
    ) -> Result<Option<Release>, StoreError>;
    /// The deliveries `app`'s hook received, newest first: never another app's, even on the
    /// same repository (its owner, branch and outcome are not this app's owner's to see).
    async fn deliveries_of_app(
        &self,
        app: &AppName,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Newest first, leaving out the `skip` newest (a page of older entries); `app` narrows
    /// it to one app.
    async fn audit(
        &self,
        app: Option<&AppName>,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Webhooks whose removal failed when their app was deleted, as (repo, hook id): cleanup
    /// retries them so that no hook is orphaned.
    async fn add_orphan_hook(&self, repo: &str, hook_id: &HookId) -> Result<(), StoreError>;
    async fn orphan_hooks(&self) -> Result<Vec<(String, HookId)>, StoreError>;
    async fn remove_orphan_hook(&self, repo: &str, hook_id: &HookId) -> Result<(), StoreError>;

    /// Removes what is past keeping, as seen at `now`: the deliveries received before
    /// `now - retention.deliveries_for` (any app's, and those recorded before apps were), and
    /// each app's finished releases (`ReleaseState::is_terminal`: failed, superseded, or live
    /// once another replaced it) older than its newest `retention.releases_kept` by `seq`.
    /// Never the release the app's deployment serves (`Deployment::live_release`), however
    /// old, and never one still queued, building or deploying: those are removed only with
    /// their app.
    ///
    /// The work of one call is bounded: it removes at most `Pruned::AT_MOST` deliveries and as
    /// many releases, oldest first, so a long backlog (the first run, or one after a pause)
    /// goes over several calls. Calls converge: once nothing is past keeping, `prune` removes
    /// nothing (`Pruned::is_empty`). A caller on a schedule just calls it each time; one that
    /// wants everything gone calls again while `Pruned::may_have_more`.
    async fn prune(&self, retention: &Retention, now: Timestamp) -> Result<Pruned, StoreError>;
}
