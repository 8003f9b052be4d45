//! The records Runway keeps: one `Deployment` per app, one `Release` per deploy attempt, the
//! webhook deliveries it received and the audit trail.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Access, AppName, Branch, BuildId, CommitSha, DeliveryId, HookId, MainFile, NotifySummary,
    Region, ReleaseId, RepoUrl, Resources, Runtime,
};

pub type Timestamp = DateTime<Utc>;

/// An app: where its code lives and how it runs. Secrets are never part of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub app: AppName,
    pub repo: RepoUrl,
    /// The forge's stable id of the repository: names change, ids don't.
    pub repo_id: u64,
    pub branch: Branch,
    pub main_file: MainFile,
    pub region: Region,
    pub resources: Resources,
    /// Plain environment variables and warm instances; apps from before have none.
    #[serde(default)]
    pub runtime: Runtime,
    /// Who may open the app. Records from before access was a setting are public.
    #[serde(default)]
    pub access: Access,
    pub owner: String,
    /// The names of the app's secrets, never their values, for its page. `None` for an app
    /// whose secrets were set before Runway kept their names.
    #[serde(default)]
    pub secret_keys: Option<Vec<String>>,
    /// Where its releases are announced, as the page shows them: the targets themselves (hook
    /// URLs, signing keys) are kept in the secret store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifySummary>,
    /// Whether the app's pull requests get previews. Off for apps from before.
    #[serde(default, skip_serializing_if = "Previews::is_off")]
    pub previews: Previews,
    /// For a preview (`AppName::preview`): the pull request it deploys. `None` for an app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullRequest>,
    /// The push webhook on the repository, once created.
    pub webhook_id: Option<HookId>,
    /// The release currently serving, and where.
    pub live_release: Option<ReleaseId>,
    pub url: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Deployment {
    /// Points the app at `release`, now serving at `url` (or where it served before).
    pub fn goes_live(&mut self, release: &Release, url: Option<String>, now: Timestamp) {
        self.live_release = Some(release.id.clone());
        self.url = url.or(self.url.take());
        self.updated_at = now;
    }
}

/// Whether an app's pull requests get a preview each: a copy of the app built from the pull
/// request's head, at its own URL, removed when the pull request is closed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previews {
    pub enabled: bool,
    /// Pull requests from forks too. A fork's code is anyone's: only an admin may allow it.
    #[serde(default)]
    pub forks: bool,
    /// The names (never the values) of the secrets previews run with: a TOML of their own,
    /// which the app's owner gives apart from the app's (`AppName::previews_secrets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<String>,
}

impl Previews {
    pub fn is_off(&self) -> bool {
        !self.enabled && !self.forks && self.secret_keys.is_empty()
    }
}

/// The pull request a preview deploys, as its latest event described it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    /// Its page on the forge.
    pub url: String,
    /// Who opened it (the forge's login).
    pub author: String,
    /// The branch it comes from.
    pub head_branch: String,
    /// The repository that branch is in (`owner/name`), when that is a fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<String>,
    /// Its head when the latest event was sent.
    pub head: CommitSha,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseState {
    Queued,
    Building,
    Deploying,
    Live,
    Failed,
    Superseded,
}

impl ReleaseState {
    /// Every state, in the order a release moves through them.
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Building,
        Self::Deploying,
        Self::Live,
        Self::Failed,
        Self::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Building => "building",
            Self::Deploying => "deploying",
            Self::Live => "live",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Live | Self::Failed | Self::Superseded)
    }

    /// States only move forward: `queued → building → deploying → live | failed | superseded`.
    /// A rollback skips the build (`queued → deploying`); a build that fails to start may be
    /// handed back to the queue (`building → queued`) so it is retried, never lost.
    pub fn can_move_to(self, next: Self) -> bool {
        use ReleaseState::*;
        matches!(
            (self, next),
            (Queued, Building | Deploying | Failed | Superseded)
                | (Building, Queued | Deploying | Failed | Superseded)
                | (Deploying, Live | Failed | Superseded)
        )
    }

    /// What a store's `transition` accepts: a move `can_move_to` allows, or an update in place
    /// (`self == next`) of a release that has not finished.
    pub fn may_become(self, next: Self) -> bool {
        self == next && !self.is_terminal() || self.can_move_to(next)
    }
}

impl std::fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Manual,
    Push,
    Rollback,
    /// A pull request's preview, of the head its event named (opened, reopened, pushed to).
    Preview,
    /// A pull request was closed or merged: its preview goes. Queued like a release, so a
    /// closing that could not be done at once is done later, and after the preview's builds.
    Close,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Push => "push",
            Self::Rollback => "rollback",
            Self::Preview => "preview",
            Self::Close => "close",
        }
    }
}

/// One deploy attempt of an app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub id: ReleaseId,
    pub app: AppName,
    /// Per-app order, assigned when queued: a release never replaces a newer live one.
    pub seq: u64,
    pub trigger: Trigger,
    pub actor: String,
    pub state: ReleaseState,
    /// What the release builds: resolved when the build starts for manual deploys; for a
    /// push, the branch's head when the build starts (which a late or replayed delivery may
    /// have moved past the commit it named).
    pub commit: Option<CommitSha>,
    /// For a push whose branch had moved on when its build started: the commit it named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<CommitSha>,
    pub build_id: Option<BuildId>,
    pub log_url: Option<String>,
    pub image: Option<String>,
    pub revision: Option<String>,
    pub url: Option<String>,
    /// Why the release failed or was superseded, in words a person can act on.
    pub message: Option<String>,
    /// For a rollback: the release whose image it brings back.
    pub rollback_of: Option<ReleaseId>,
    /// The secrets it deployed with, as the platform names them (a Secret Manager version, a
    /// file): a rollback brings them back, and they are kept readable while it may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<String>,
    /// How many times a worker claimed it to start its build. One whose every attempt ended
    /// before the build began (a worker out of memory on a huge repository dies each time) is
    /// failed after [`Release::MAX_BUILD_ATTEMPTS`], not queued again forever.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Where it ran, once live: when the app has moved since, its old region's service is
    /// removed as the release that replaces it goes live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// Asked to build with no cache (a redeploy's "clear the build cache").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_cache: bool,
    pub queued_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

impl Release {
    /// Claims to start a build a release gets before it is failed.
    pub const MAX_BUILD_ATTEMPTS: u32 = 5;

    /// The release a `NewRelease` becomes once the store numbered it. A rollback starts with
    /// its target's image and build, so it needs no build of its own.
    pub fn queued(new: NewRelease, id: ReleaseId, seq: u64, now: Timestamp) -> Self {
        let (image, build_id, log_url, rollback_of) = match &new.rollback_of {
            Some(target) => (
                target.image.clone(),
                target.build_id.clone(),
                target.log_url.clone(),
                Some(target.id.clone()),
            ),
            None => (None, None, None, None),
        };
        Release {
            id,
            app: new.app,
            seq,
            trigger: new.trigger,
            actor: new.actor,
            state: ReleaseState::Queued,
            commit: new.commit,
            pushed: None,
            build_id,
            log_url,
            image,
            revision: None,
            url: None,
            message: None,
            rollback_of,
            secrets: None,
            attempts: 0,
            region: None,
            clear_cache: new.clear_cache,
            queued_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    /// Moves the release to `to`, writing what `update` sets and keeping what it leaves out.
    /// The store checks that the move is allowed.
    pub fn apply(&mut self, to: ReleaseState, update: ReleaseUpdate, now: Timestamp) {
        if self.state == ReleaseState::Queued && to == ReleaseState::Building {
            self.attempts += 1;
        }
        self.state = to;
        self.updated_at = now;
        if to.is_terminal() {
            self.finished_at = Some(now);
        }
        let ReleaseUpdate {
            commit,
            pushed,
            build_id,
            log_url,
            image,
            revision,
            url,
            message,
            secrets,
            region,
        } = update;
        self.commit = commit.or(self.commit.take());
        self.pushed = pushed.or(self.pushed.take());
        self.build_id = build_id.or(self.build_id.take());
        self.log_url = log_url.or(self.log_url.take());
        self.image = image.or(self.image.take());
        self.revision = revision.or(self.revision.take());
        self.url = url.or(self.url.take());
        self.message = message.or(self.message.take());
        self.secrets = secrets.or(self.secrets.take());
        self.region = region.or(self.region.take());
    }
}

/// What a caller asks for when queueing a release; the store assigns id, sequence and times.
#[derive(Clone, Debug)]
pub struct NewRelease {
    pub app: AppName,
    pub trigger: Trigger,
    pub actor: String,
    pub commit: Option<CommitSha>,
    /// For a rollback: the release to bring back (its image and build are reused).
    pub rollback_of: Option<Release>,
    /// Build with no cache: no layers from the app's last image, no packages from a cache.
    pub clear_cache: bool,
}

/// The changes a state transition writes along with the new state.
#[derive(Clone, Debug, Default)]
pub struct ReleaseUpdate {
    pub commit: Option<CommitSha>,
    pub pushed: Option<CommitSha>,
    pub build_id: Option<BuildId>,
    pub log_url: Option<String>,
    pub image: Option<String>,
    pub revision: Option<String>,
    pub url: Option<String>,
    pub message: Option<String>,
    pub secrets: Option<String>,
    pub region: Option<Region>,
}

/// A webhook delivery and what Runway did with it, so that a push that did not redeploy says why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// GitHub's `X-GitHub-Delivery`: one per event, the same for every hook it reaches, so a
    /// delivery is known by the app whose hook received it and this id together.
    pub id: DeliveryId,
    /// The app whose hook received it (absent on deliveries recorded before apps were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppName>,
    pub event: String,
    pub repo_id: Option<u64>,
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub received_at: Timestamp,
    /// What Runway did with it: the apps it queued releases of, or why it was ignored.
    pub outcome: String,
}

/// Who did what, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub actor: String,
    pub action: AuditAction,
    pub app: Option<String>,
    pub detail: String,
}

/// What an audit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    Create,
    Update,
    Redeploy,
    Rollback,
    Delete,
    Push,
    ReleaseLive,
    ReleaseFailed,
    /// The app's notification targets were replaced.
    Notifications,
    /// A target refused an announcement for good (its hook was removed, say).
    NotifyRefused,
    /// Cleanup found an app's hook deleted or edited on the repository and set it right.
    HookRepaired,
    /// Cleanup removed an app whose repository had been gone past the grace period.
    AppRemoved,
    /// A pull request was opened or pushed to, and its preview queued.
    Preview,
    /// A pull request was closed, and its preview removed.
    PreviewRemoved,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Redeploy => "redeploy",
            Self::Rollback => "rollback",
            Self::Delete => "delete",
            Self::Push => "push",
            Self::ReleaseLive => "release-live",
            Self::ReleaseFailed => "release-failed",
            Self::Notifications => "notifications",
            Self::NotifyRefused => "notify-refused",
            Self::HookRepaired => "hook-repaired",
            Self::AppRemoved => "app-removed",
            Self::Preview => "preview",
            Self::PreviewRemoved => "preview-removed",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of a hook's recent deliveries, as the forge logged it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookDelivery {
    /// The event's id (`X-GitHub-Delivery`).
    pub guid: String,
    pub delivered_at: Timestamp,
    /// `push`, `ping`, …
    pub event: String,
    /// What the receiver answered; `None` when it could not be reached in time.
    pub status_code: Option<u16>,
    /// The forge's own word on it (`OK`, `Invalid HTTP Response: 401`, `timed out`).
    pub status: String,
    /// Sent again from the forge's page (GitHub's "Redeliver").
    #[serde(default)]
    pub redelivery: bool,
}

impl HookDelivery {
    pub fn succeeded(&self) -> bool {
        self.status_code
            .is_some_and(|code| (200..300).contains(&code))
    }
}

/// What cleanup last found of an app's hook on its repository: whether it had to set it right,
/// and the deliveries its receiver did not take, as the forge logged them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookHealth {
    pub checked_at: Timestamp,
    /// Why the hook could not be checked (the forge was down, or refused); the rest is then
    /// what the check before found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// What was last found wrong and set right, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<(Timestamp, String)>,
    /// The newest deliveries that failed (no 2xx), newest first, at most
    /// [`HookHealth::FAILED_KEPT`].
    #[serde(default)]
    pub failed: Vec<HookDelivery>,
    /// Since when the app's repository is gone, or no longer readable by Runway (the forge
    /// answers not found); cleared when it can be read again. Past the operator's grace
    /// period, cleanup removes the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_gone_since: Option<Timestamp>,
    /// The refused delivery (its GUID) the hook's secret was last set again for: the same
    /// refusal is not answered twice. A GUID, not a time: GitHub dates deliveries to the
    /// second, by its own clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_reset_for: Option<String>,
    /// The newest time the live app stopped, or stopped answering, and was restarted, and what
    /// happened: what the app's page shows, and where the next look starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<(Timestamp, String)>,
}

impl HookHealth {
    pub const FAILED_KEPT: usize = 10;

    /// A new look at `checked_at`, keeping all `previous` found but its problem: a look that
    /// finds something else sets that field itself.
    pub fn after(previous: Option<HookHealth>, checked_at: Timestamp) -> Self {
        match previous {
            Some(previous) => Self {
                checked_at,
                problem: None,
                ..previous
            },
            None => Self::empty(checked_at),
        }
    }

    /// Nothing found yet, as of `checked_at`.
    pub fn empty(checked_at: Timestamp) -> Self {
        Self {
            checked_at,
            problem: None,
            repaired: None,
            failed: Vec::new(),
            repo_gone_since: None,
            secret_reset_for: None,
            incident: None,
        }
    }
}

/// The authenticated caller of an API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub email: String,
    pub admin: bool,
}

impl Caller {
    /// Deployers act on their own apps; admins on every app.
    pub fn may_manage(&self, deployment: &Deployment) -> bool {
        self.admin || deployment.owner == self.email
    }
}

#[cfg(test)]
mod tests {
    use super::ReleaseState::*;
    use super::*;

    #[test]
    fn release_states_only_move_forward() {
        assert!(Queued.can_move_to(Building));
        assert!(Building.can_move_to(Deploying));
        assert!(Deploying.can_move_to(Live));
        assert!(Deploying.can_move_to(Failed));
        assert!(Queued.can_move_to(Superseded));
        assert!(!Live.can_move_to(Queued));
        assert!(!Live.can_move_to(Building));
        assert!(!Failed.can_move_to(Live));
        assert!(!Deploying.can_move_to(Building));
        assert!(!Superseded.can_move_to(Queued));
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        let all = [Queued, Building, Deploying, Live, Failed, Superseded];
        for from in all.into_iter().filter(|s| s.is_terminal()) {
            assert!(all.iter().all(|to| !from.can_move_to(*to)), "{from} moved");
        }
    }

    #[test]
    fn a_state_reads_back_from_its_name() {
        for state in [Queued, Building, Deploying, Live, Failed, Superseded] {
            assert_eq!(ReleaseState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ReleaseState::parse("done"), None);
    }
}
