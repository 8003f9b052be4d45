//! The adapters a function runs on, as one value: the wiring crate fills it from the
//! environment (every port on the embedded backend; on Google Cloud only what the function
//! `Need`s, so each function needs only its own variables), and each function's
//! `State::new(&Adapters)` takes what it uses.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::clock::{self, Clock};
use crate::config::Policy;
use crate::limits::RateLimits;
use crate::ports::{
    Forge, HookSources, Identity, ImageBuilder, Platform, Queue, RuntimeLog, SecretStore, Store,
};

/// A port or setting a function needs. On Google Cloud, the wiring reads the variables of all
/// of a function's needs before any client connects, so one start names every missing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Store,
    Queue,
    Secrets,
    Forge,
    Builder,
    Platform,
    /// What the apps write to standard output and error (Cloud Logging on Google Cloud).
    RuntimeLog,
    /// Who the people calling are (IAP on Google Cloud, the local user on a laptop).
    Users,
    /// Who may push to the function (Pub/Sub push and Cloud Scheduler's OIDC tokens on Google
    /// Cloud, the local queue's token on a laptop).
    Pushers,
    /// Which regions, and whether local repositories may be deployed.
    Policy,
    /// How long work may sit before cleanup acts on it.
    Timeouts,
    WebhookUrl,
    WebhookSecret,
    /// The rate limits, where a request's source address is read, and, when deliveries are
    /// taken from GitHub's hook addresses only, GitHub's `meta` API to learn them.
    RateLimits,
}

/// A function asked for something its wiring did not provide: a mismatch between the
/// function's `NEEDS` and its `State::new`, found when the function starts.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not wired: add it to the function's NEEDS")]
pub struct Unwired(pub &'static str);

/// How long work may sit before cleanup acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a release may sit queued or building before cleanup publishes it again or
    /// polls its build.
    pub stale_after: Duration,
    /// How long a deploy may run before cleanup calls it interrupted: longer than the
    /// platform's own wait for a new revision.
    pub deploy: Duration,
    /// How often cleanup runs, and how often it lists each deployed repository's hooks: the
    /// repositories are spread over the runs in between, so one run costs GitHub a slice.
    pub hook_sweep: HookSweep,
    /// What cleanup keeps, and for how long.
    pub keep: Keeping,
}

/// What cleanup keeps of what Runway recorded and made, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keeping {
    /// Deliveries and each app's release history (`Store::prune`).
    pub store: crate::ports::Retention,
    /// The builds of each app's newest releases that went live, which a rollback may bring
    /// back (the embedded builder; on Google Cloud, Artifact Registry's cleanup policy keeps
    /// `app_image_keep_count` images).
    pub images: usize,
    /// Dead letters (the embedded queue; on Google Cloud, the keeping subscription's
    /// retention, `dead_letter_retention`).
    pub dead_letters_for: Duration,
    /// How long an app whose repository is gone (or no longer readable) is kept, flagged on
    /// the console, before cleanup removes it with its service, hook, secrets and records.
    pub gone_repos: Duration,
}

impl Default for Keeping {
    /// As `infra/` keeps them on Google Cloud: 10 images an app, dead letters for 7 days, apps
    /// whose repository is gone for 3 days.
    fn default() -> Self {
        Self {
            store: crate::ports::Retention::DEFAULT,
            images: 10,
            dead_letters_for: Duration::from_secs(7 * 86_400),
            gone_repos: Duration::from_secs(3 * 86_400),
        }
    }
}

/// How the stale-hook sweep is spread over cleanup's runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookSweep {
    /// How often cleanup runs (Cloud Scheduler's period; `runway`'s timer).
    pub run_every: Duration,
    /// How often each repository's hooks are listed: at least `run_every`.
    pub repo_every: Duration,
}

impl HookSweep {
    /// Every repository on every run.
    pub fn every_run(run_every: Duration) -> Self {
        Self {
            run_every,
            repo_every: run_every,
        }
    }

    /// Whether the run at `now` lists the hooks of `repo`: each repository in one run of each
    /// `repo_every`, chosen by a stable hash of its name.
    pub fn includes(&self, repo: &str, now: crate::domain::Timestamp) -> bool {
        let run_secs = self.run_every.as_secs().max(1);
        let slices = (self.repo_every.as_secs() / run_secs).max(1);
        let run = now.timestamp().max(0) as u64 / run_secs;
        fnv1a(repo.as_bytes()) % slices == run % slices
    }
}

/// FNV-1a: the same on every instance and every build, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Every port as a trait object, each present only when wired, and the clock.
#[derive(Clone)]
pub struct Adapters {
    pub clock: Arc<dyn Clock>,
    pub store: Option<Arc<dyn Store>>,
    pub queue: Option<Arc<dyn Queue>>,
    pub secrets: Option<Arc<dyn SecretStore>>,
    pub forge: Option<Arc<dyn Forge>>,
    pub builder: Option<Arc<dyn ImageBuilder>>,
    pub platform: Option<Arc<dyn Platform>>,
    pub runtime_log: Option<Arc<dyn RuntimeLog>>,
    pub users: Option<Arc<dyn Identity>>,
    pub pushers: Option<Arc<dyn Identity>>,
    pub policy: Option<Policy>,
    /// Where GitHub (or the local hook) delivers push events: `…/github/webhook`.
    pub webhook_url: Option<String>,
    /// Runway's console, which releases reported on GitHub link to; without it they link
    /// nowhere.
    pub console_url: Option<String>,
    /// The key each app's webhook secret is derived from.
    pub webhook_secret: Option<SecretString>,
    pub timeouts: Option<Timeouts>,
    pub rate_limits: Option<RateLimits>,
    /// Wired only when `rate_limits` takes deliveries from GitHub's addresses alone.
    pub hook_sources: Option<Arc<dyn HookSources>>,
    /// Whether notification targets may be on private networks (a laptop's receivers).
    pub private_targets: crate::domain::PrivateTargets,
}

impl Default for Adapters {
    fn default() -> Self {
        Self {
            clock: clock::system(),
            store: None,
            queue: None,
            secrets: None,
            forge: None,
            builder: None,
            platform: None,
            runtime_log: None,
            users: None,
            pushers: None,
            policy: None,
            webhook_url: None,
            console_url: None,
            webhook_secret: None,
            timeouts: None,
            rate_limits: None,
            hook_sources: None,
            private_targets: Default::default(),
        }
    }
}

fn wired<T: Clone>(slot: &Option<T>, name: &'static str) -> Result<T, Unwired> {
    slot.clone().ok_or(Unwired(name))
}

impl Adapters {
    pub fn store(&self) -> Result<Arc<dyn Store>, Unwired> {
        wired(&self.store, "the store")
    }
    pub fn queue(&self) -> Result<Arc<dyn Queue>, Unwired> {
        wired(&self.queue, "the queue")
    }
    pub fn secrets(&self) -> Result<Arc<dyn SecretStore>, Unwired> {
        wired(&self.secrets, "the secret store")
    }
    pub fn forge(&self) -> Result<Arc<dyn Forge>, Unwired> {
        wired(&self.forge, "the forge")
    }
    pub fn builder(&self) -> Result<Arc<dyn ImageBuilder>, Unwired> {
        wired(&self.builder, "the image builder")
    }
    pub fn platform(&self) -> Result<Arc<dyn Platform>, Unwired> {
        wired(&self.platform, "the platform")
    }
    pub fn runtime_log(&self) -> Result<Arc<dyn RuntimeLog>, Unwired> {
        wired(&self.runtime_log, "the apps' runtime log")
    }
    pub fn users(&self) -> Result<Arc<dyn Identity>, Unwired> {
        wired(&self.users, "the users' identity")
    }
    pub fn pushers(&self) -> Result<Arc<dyn Identity>, Unwired> {
        wired(&self.pushers, "the pushers' identity")
    }
    pub fn policy(&self) -> Result<Policy, Unwired> {
        wired(&self.policy, "the policy")
    }
    pub fn webhook_url(&self) -> Result<String, Unwired> {
        wired(&self.webhook_url, "the webhook URL")
    }
    pub fn webhook_secret(&self) -> Result<SecretString, Unwired> {
        wired(&self.webhook_secret, "the webhook secret")
    }
    pub fn timeouts(&self) -> Result<Timeouts, Unwired> {
        wired(&self.timeouts, "the timeouts")
    }
    pub fn rate_limits(&self) -> Result<RateLimits, Unwired> {
        wired(&self.rate_limits, "the rate limits")
    }
    pub fn hook_sources(&self) -> Result<Arc<dyn HookSources>, Unwired> {
        wired(&self.hook_sources, "GitHub's hook addresses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_that_was_not_wired_is_named() {
        let error = Adapters::default().queue().err().expect("nothing is wired");
        assert_eq!(
            error.to_string(),
            "the queue is not wired: add it to the function's NEEDS"
        );
    }
}
