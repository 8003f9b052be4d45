//! A console's worth of history, written through the `Store` port as Runway writes it: 200 apps
//! of several owners, 2,000 releases (most live, some failed with a build log excerpt, a few
//! superseded, rollbacks, some still on their way), the deliveries their hooks received
//! (pushes, ignored branches, refused signatures) and the audit trail of it all.

use std::time::Duration;

use runway_core::clock::{Clock, ManualClock};
use runway_core::domain::{
    AppName, AuditAction, AuditEntry, Branch, BuildId, CommitSha, Delivery, DeliveryId, Deployment,
    MainFile, NewRelease, Region, Release, ReleaseState, ReleaseUpdate, RepoUrl, Resources,
    Trigger,
};
use runway_core::ports::Store;

pub const APPS: usize = 200;
pub const RELEASES: usize = 2_000;
/// One app has a long history, the others share what is left: the app page must stay small
/// whatever an app's history.
pub const BUSY_APP_RELEASES: usize = 200;

/// Who owns apps. The deployer the benchmark signs in as owns every eighth.
pub const OWNERS: &[&str] = &[
    "ada.lovelace@example.com",
    "grace.hopper@example.com",
    "katherine.johnson@example.com",
    "alan.turing@example.com",
    "edsger.dijkstra@example.com",
    "barbara.liskov@example.com",
    "donald.knuth@example.com",
    "margaret.hamilton@example.com",
];
pub const DEPLOYER: &str = OWNERS[0];
pub const ADMIN: &str = "platform-team@example.com";

const TOPICS: &[&str] = &[
    "sales",
    "churn",
    "pricing",
    "inventory",
    "marketing",
    "support",
    "finance",
    "supply",
    "hiring",
    "retention",
    "fraud",
    "logistics",
    "forecast",
];
const KINDS: &[&str] = &[
    "dashboard",
    "explorer",
    "report",
    "monitor",
    "model",
    "tracker",
    "review",
    "planner",
];

/// The app the benchmark opens: the deployer's, with the long history.
pub fn busy_app() -> AppName {
    app_name(0)
}

fn app_name(index: usize) -> AppName {
    let topic = TOPICS[index % TOPICS.len()];
    let kind = KINDS[index / TOPICS.len() % KINDS.len()];
    AppName::parse(&format!("{topic}-{kind}-{index:03}")).expect("an app name")
}

/// A deterministic stream of numbers (SplitMix64): the same history every run.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn commit(&mut self) -> CommitSha {
        let hex = format!(
            "{:016x}{:016x}{:016x}",
            self.next(),
            self.next(),
            self.next()
        );
        CommitSha::parse(&hex[..40]).expect("a commit id")
    }
}

/// How many releases each app gets: the busy app its long history, the others the rest.
fn release_counts() -> Vec<usize> {
    let rest = RELEASES - BUSY_APP_RELEASES;
    let (each, extra) = (rest / (APPS - 1), rest % (APPS - 1));
    (0..APPS)
        .map(|index| match index {
            0 => BUSY_APP_RELEASES,
            index if index <= extra => each + 1,
            _ => each,
        })
        .collect()
}

fn deployment(index: usize, at: runway_core::domain::Timestamp) -> Deployment {
    let app = app_name(index);
    let repo = if index % 10 == 9 {
        format!("/srv/git/{app}.git")
    } else {
        format!("https://github.com/acme-analytics/{app}")
    };
    Deployment {
        repo: RepoUrl::parse(&repo, true).expect("a repository"),
        repo_id: 10_000 + index as u64,
        branch: Branch::parse("main").expect("a branch"),
        main_file: MainFile::parse("streamlit_app.py").expect("a main file"),
        region: Region::try_from("europe-west1".to_owned()).expect("a region"),
        resources: Resources::default(),
        runtime: Default::default(),
        access: Default::default(),
        owner: OWNERS[index % OWNERS.len()].to_owned(),
        notify: Vec::new(),
        previews: Default::default(),
        pull: None,
        secret_keys: None,
        webhook_id: Some(format!("{}", 480_000_000 + index).into()),
        live_release: None,
        url: None,
        created_at: at,
        updated_at: at,
        app,
    }
}

/// The end of a uv build log, as a failed release's message carries it (20 lines).
fn failure_message(noise: &mut Noise) -> String {
    let package =
        ["pandas", "scikit-learn", "pyarrow", "polars", "plotly"][noise.below(5) as usize];
    let mut log = String::from(
        "build failure (step 2 exited 1); the previous version keeps serving. Log:\n\
         ==> installing from requirements.txt\n\
         Using CPython 3.12.8 interpreter at: /usr/bin/python3\n\
         Creating virtual environment at: .venv\n",
    );
    for line in 0..14 {
        log.push_str(&format!(
            "  × Failed to build `{package}=={}.{}.{line}`\n  ├─▶ The build backend returned an error\n",
            noise.below(3) + 1,
            noise.below(20)
        ));
    }
    log.push_str(&format!("  ╰─▶ Call to `setuptools.build_meta.build_wheel` failed (exit status: 1)\n  hint: `{package}` was not found in the package registry\nBUILD FAILED: uv pip install exited 1\n"));
    log
}

/// Everything one app's history writes, release after release.
struct AppHistory {
    deployment: Deployment,
    left: usize,
    done: usize,
    last_live: Option<Release>,
}

/// Fills `store` (whose clock is `clock`) with the console's history.
pub async fn seed(store: &dyn Store, clock: &ManualClock) {
    let mut noise = Noise(2026);
    let mut apps: Vec<AppHistory> = release_counts()
        .into_iter()
        .enumerate()
        .map(|(index, left)| AppHistory {
            deployment: deployment(index, clock.now()),
            left,
            done: 0,
            last_live: None,
        })
        .collect();
    for app in &apps {
        assert!(store.insert_deployment(&app.deployment).await.unwrap());
        audit(
            store,
            clock,
            &app.deployment.owner,
            AuditAction::Create,
            &app.deployment.app,
            format!("{} branch main file streamlit_app.py", app.deployment.repo),
        )
        .await;
    }
    // Round robin, so the apps' histories interleave in time as they would.
    while apps.iter().any(|app| app.left > 0) {
        for app in apps.iter_mut().filter(|app| app.left > 0) {
            one_release(store, clock, &mut noise, app).await;
            clock.advance(Duration::from_secs(20 * 60));
        }
    }
}

async fn one_release(
    store: &dyn Store,
    clock: &ManualClock,
    noise: &mut Noise,
    app: &mut AppHistory,
) {
    let name = app.deployment.app.clone();
    let owner = app.deployment.owner.clone();
    let (index, last) = (app.done, app.left == 1);
    app.left -= 1;
    app.done += 1;
    let rollback = index % 23 == 22 && app.last_live.is_some();
    let manual = index == 0 || index % 7 == 3;
    let commit = noise.commit();
    let new = NewRelease {
        app: name.clone(),
        trigger: if rollback {
            Trigger::Rollback
        } else if manual {
            Trigger::Manual
        } else {
            Trigger::Push
        },
        actor: if manual || rollback {
            owner.clone()
        } else {
            format!("{} (push)", owner.split('@').next().unwrap_or("dev"))
        },
        commit: Some(commit.clone()),
        rollback_of: if rollback {
            app.last_live.clone()
        } else {
            None
        },
        clear_cache: false,
    };
    let release = if new.trigger == Trigger::Push {
        let delivery = delivery(&name, &commit, clock, format!("queued a release of {name}"));
        let release = store
            .accept_push(&delivery, new.clone())
            .await
            .unwrap()
            .expect("a new delivery");
        audit(
            store,
            clock,
            &new.actor,
            AuditAction::Push,
            &name,
            format!("delivery {} commit {commit}", delivery.id),
        )
        .await;
        if index % 5 == 2 {
            ignored_pushes(store, clock, noise, &name).await;
        }
        release
    } else {
        let action = if rollback {
            AuditAction::Rollback
        } else if index == 0 {
            AuditAction::Create
        } else {
            AuditAction::Redeploy
        };
        let release = store.queue_release(new.clone()).await.unwrap();
        audit(
            store,
            clock,
            &owner,
            action,
            &name,
            format!("release {} commit {commit}", release.id),
        )
        .await;
        release
    };
    // Now and then a newer push lands while one is queued: the older is superseded.
    if index % 31 == 30 && !last {
        return;
    }
    let outcome = if last && index % 17 == 3 {
        Outcome::OnItsWay
    } else if index % 10 == 7 || (last && index % 11 == 5) {
        Outcome::Fails
    } else {
        Outcome::GoesLive
    };
    if let Some(live) = finish(store, clock, noise, &app.deployment, release, outcome).await {
        app.last_live = Some(live);
    }
}

enum Outcome {
    GoesLive,
    Fails,
    OnItsWay,
}

/// Moves a queued release through its build to `outcome`; the release if it went live.
async fn finish(
    store: &dyn Store,
    clock: &ManualClock,
    noise: &mut Noise,
    deployment: &Deployment,
    release: Release,
    outcome: Outcome,
) -> Option<Release> {
    let id = release.id.clone();
    let build = BuildId::new(format!("{:016x}", noise.next()));
    let from = if release.rollback_of.is_some() {
        store
            .transition(
                &id,
                ReleaseState::Queued,
                ReleaseState::Deploying,
                ReleaseUpdate::default(),
            )
            .await
            .unwrap();
        ReleaseState::Deploying
    } else {
        clock.advance(Duration::from_secs(3));
        let update = ReleaseUpdate {
            build_id: Some(build.clone()),
            log_url: Some(format!("http://127.0.0.1:8080/api/builds/{build}/log")),
            ..Default::default()
        };
        store
            .transition(&id, ReleaseState::Queued, ReleaseState::Building, update)
            .await
            .unwrap();
        ReleaseState::Building
    };
    clock.advance(Duration::from_secs(30 + noise.below(90)));
    if matches!(outcome, Outcome::OnItsWay) {
        return None;
    }
    if matches!(outcome, Outcome::Fails) {
        let message = failure_message(noise);
        let first = message.lines().next().unwrap_or_default().to_owned();
        store
            .transition(
                &id,
                from,
                ReleaseState::Failed,
                ReleaseUpdate {
                    message: Some(message),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        audit(
            store,
            clock,
            "runway",
            AuditAction::ReleaseFailed,
            &deployment.app,
            format!("release {id}: {first}"),
        )
        .await;
        return None;
    }
    if from == ReleaseState::Building {
        let image = format!("/home/ada/.runway/builds/{build}");
        store
            .transition(
                &id,
                from,
                ReleaseState::Deploying,
                ReleaseUpdate {
                    image: Some(image),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(5 + noise.below(10)));
    let url = format!("http://{}.localhost:8080/", deployment.app);
    let update = ReleaseUpdate {
        url: Some(url.clone()),
        revision: Some(format!("{}-{:05}", deployment.app, release.seq)),
        secrets: Some(format!(
            "/home/ada/.runway/secrets/{}/v{}.toml",
            deployment.app, release.seq
        )),
        ..Default::default()
    };
    let live = store
        .transition(&id, ReleaseState::Deploying, ReleaseState::Live, update)
        .await
        .unwrap();
    audit(
        store,
        clock,
        "runway",
        AuditAction::ReleaseLive,
        &deployment.app,
        format!("release {id} at {url}"),
    )
    .await;
    Some(live)
}

fn delivery(app: &AppName, commit: &CommitSha, clock: &ManualClock, outcome: String) -> Delivery {
    Delivery {
        id: DeliveryId::new(uuid::Uuid::new_v4().to_string()),
        app: Some(app.clone()),
        event: "push".into(),
        repo_id: Some(1),
        git_ref: Some("refs/heads/main".into()),
        commit: Some(commit.to_string()),
        received_at: clock.now(),
        outcome,
    }
}

/// Pushes the hook received that deployed nothing: another branch, a refused signature.
async fn ignored_pushes(store: &dyn Store, clock: &ManualClock, noise: &mut Noise, app: &AppName) {
    let commit = noise.commit();
    let mut other_branch = delivery(
        app,
        &commit,
        clock,
        format!(
            "ignored: no app deploys branch feature/experiment-{} of acme-analytics/{app} ({app} deploys main)",
            noise.below(100)
        ),
    );
    other_branch.git_ref = Some(format!(
        "refs/heads/feature/experiment-{}",
        noise.below(100)
    ));
    assert!(store.record_delivery(&other_branch).await.unwrap());
    if noise.below(4) == 0 {
        let refused = delivery(app, &commit, clock, "refused: the signature did not match — check the hook's secret (delete the app's webhook on GitHub and submit the app again to have Runway set it)".into());
        assert!(store.record_delivery(&refused).await.unwrap());
    }
}

async fn audit(
    store: &dyn Store,
    clock: &ManualClock,
    actor: &str,
    action: AuditAction,
    app: &AppName,
    detail: String,
) {
    let entry = AuditEntry {
        at: clock.now(),
        actor: actor.to_owned(),
        action,
        app: Some(app.to_string()),
        detail,
    };
    store.append_audit(&entry).await.unwrap();
}
