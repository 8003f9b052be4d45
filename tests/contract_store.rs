//! The `Store` port's contract, written once and run against every adapter: `SqliteStore` (the
//! embedded default) and `FirestoreStore` on Google's Firestore emulator (started by
//! `scripts/emulators`; each test gets a project of its own).
//!
//! The concurrent checks are the point: many tasks race on one release or one app, and no
//! update may be lost.

use std::sync::Arc;

use ReleaseState::*;
use chrono::{SubsecRound, Utc};
use futures_util::future::join_all;
use runway_core::domain::{
    AppName, AuditAction, AuditEntry, Branch, BuildId, Delivery, Deployment, HookId, MainFile,
    NewRelease, Release, ReleaseId, ReleaseState, ReleaseUpdate, RepoUrl, Resources, Trigger,
};
use runway_core::ports::{AppReleases, Pruned, Retention, Store, StoreError};
use runway_embedded::SqliteStore;
use runway_gcp::{FirestoreConfig, FirestoreStore};
use runway_tests::emulators;

/// How many separate store instances (as on separate worker instances, each with its own
/// connection) the concurrent checks spread their tasks over.
const INSTANCES: usize = 3;

/// Store instances over one database, and whatever must live as long as they do.
struct Subject {
    instances: Vec<Arc<dyn Store>>,
    _dir: Option<tempfile::TempDir>,
}

impl Subject {
    fn store(&self) -> Arc<dyn Store> {
        self.instances[0].clone()
    }

    /// The instance the `task`th concurrent task uses.
    fn instance(&self, task: usize) -> Arc<dyn Store> {
        self.instances[task % self.instances.len()].clone()
    }
}

async fn sqlite() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runway.db");
    let instances = (0..INSTANCES)
        .map(|_| Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn Store>)
        .collect();
    Subject {
        instances,
        _dir: Some(dir),
    }
}

async fn firestore() -> Subject {
    let config = FirestoreConfig {
        project: emulators::unique_project(),
        database: "(default)".into(),
        emulator: Some(emulators::firestore()),
        keep_deliveries_for: Retention::DEFAULT.deliveries_for,
    };
    let mut instances: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(Arc::new(FirestoreStore::connect(&config).await.unwrap()));
    }
    Subject {
        instances,
        _dir: None,
    }
}

// Each check runs once per adapter, as `sqlite::name` and `firestore::name`.
runway_tests::contract! {
    subjects: [sqlite => super::sqlite().await, firestore => super::firestore().await],
    checks: [
    deployments_round_trip_and_are_found_by_repo,
    of_two_creates_of_one_name_at_once_exactly_one_wins,
    deleting_a_deployment_removes_its_releases,
    a_hooks_health_is_kept_replaced_and_deleted_with_its_app,
    sequence_numbers_grow_per_app_and_survive_deletion,
    a_newer_queued_release_supersedes_older_queued_ones,
    a_rollback_starts_with_its_targets_image,
    transitions_write_their_update_and_keep_the_rest,
    each_claim_to_build_counts_an_attempt_that_is_kept,
    a_transition_from_a_state_the_release_left_is_refused,
    an_older_release_never_goes_live_over_a_newer_live_one,
    a_settings_change_keeps_the_live_release,
    the_newest_and_live_releases_of_many_apps_come_in_one_read,
    releases_are_found_by_build_and_by_stale_state,
    a_delivery_id_is_recorded_once,
    one_delivery_id_reaches_every_app_whose_hook_received_it,
    a_push_is_recorded_with_its_release_once_even_when_replayed_at_once,
    one_push_to_two_apps_is_accepted_by_both_at_once,
    every_release_is_listed_when_the_limit_is_past_any_count,
    older_releases_come_a_page_at_a_time_below_a_sequence,
    the_audit_trail_is_newest_first_narrows_to_an_app_and_pages,
    orphan_hooks_are_kept_until_removed,
    concurrent_claims_of_one_release_let_exactly_one_win,
    concurrent_queueing_loses_no_release_and_reuses_no_sequence_number,
    concurrent_go_lives_leave_the_newest_release_live,
    deliveries_past_keeping_are_pruned_and_recent_ones_kept,
    a_long_backlog_of_deliveries_is_pruned_over_several_calls,
    an_app_keeps_its_newest_releases_and_the_one_serving_however_old,
    releases_still_on_their_way_are_never_pruned
    ],
}

fn app(name: &str) -> AppName {
    AppName::parse(name).unwrap()
}

fn deployment(name: &str, repo_id: u64) -> Deployment {
    let now = Utc::now();
    Deployment {
        app: app(name),
        repo: RepoUrl::parse(&format!("https://github.com/ada/{name}"), false).unwrap(),
        repo_id,
        branch: Branch::parse("main").unwrap(),
        main_file: MainFile::parse("app.py").unwrap(),
        region: runway_tests::region("europe-west1"),
        resources: Resources::default(),
        runtime: Default::default(),
        access: Default::default(),
        owner: "ada@example.com".into(),
        notify: Vec::new(),
        previews: Default::default(),
        pull: None,
        secret_keys: None,
        webhook_id: Some("17".into()),
        live_release: None,
        url: None,
        created_at: now,
        updated_at: now,
    }
}

/// Two users creating one name at once: the store lets exactly one claim it, so the other's
/// secrets never land under the first one's code.
async fn of_two_creates_of_one_name_at_once_exactly_one_wins(subject: &Subject) {
    let (first, second) = (subject.instance(0), subject.instance(1));
    let (mut mine, mut theirs) = (deployment("claimed", 21), deployment("claimed", 22));
    mine.owner = "ada@example.com".into();
    theirs.owner = "eve@example.com".into();
    let (a, b) = tokio::join!(
        first.insert_deployment(&mine),
        second.insert_deployment(&theirs)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one create wins: {a} {b}");
    let stored = subject
        .store()
        .deployment(&app("claimed"))
        .await
        .unwrap()
        .unwrap();
    let winner = if a { &mine } else { &theirs };
    assert_eq!(stored.owner, winner.owner);
    assert_eq!(stored.repo_id, winner.repo_id);
    assert!(!subject.store().insert_deployment(&mine).await.unwrap());
}

fn new_release(name: &str) -> NewRelease {
    NewRelease {
        app: app(name),
        trigger: Trigger::Push,
        actor: "ada@example.com".into(),
        commit: None,
        rollback_of: None,
        clear_cache: false,
    }
}

fn none() -> ReleaseUpdate {
    ReleaseUpdate::default()
}

async fn to_deploying(store: &dyn Store, id: &ReleaseId) {
    store
        .transition(id, Queued, Building, none())
        .await
        .unwrap();
    store
        .transition(id, Building, Deploying, none())
        .await
        .unwrap();
}

async fn deployments_round_trip_and_are_found_by_repo(subject: &Subject) {
    let store = subject.store();
    let (mut first, second, other) = (
        deployment("beta", 7),
        deployment("alpha", 7),
        deployment("gamma", 8),
    );
    first.secret_keys = Some(vec!["api_key".into(), "db".into()]);
    for d in [&first, &second, &other] {
        store.put_deployment(d).await.unwrap();
    }
    assert_eq!(store.deployment(&app("beta")).await.unwrap(), Some(first));
    assert_eq!(store.deployment(&app("nope")).await.unwrap(), None);
    let names = |ds: Vec<Deployment>| {
        ds.into_iter()
            .map(|d| d.app.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.deployments().await.unwrap()),
        ["alpha", "beta", "gamma"]
    );
    assert_eq!(
        names(store.deployments_of_repo(7).await.unwrap()),
        ["alpha", "beta"]
    );
    assert!(store.deployments_of_repo(9).await.unwrap().is_empty());
}

async fn deleting_a_deployment_removes_its_releases(subject: &Subject) {
    let store = subject.store();
    store.put_deployment(&deployment("demo", 7)).await.unwrap();
    store.put_deployment(&deployment("kept", 7)).await.unwrap();
    let gone = store.queue_release(new_release("demo")).await.unwrap();
    let kept = store.queue_release(new_release("kept")).await.unwrap();

    store.delete_deployment(&app("demo")).await.unwrap();

    assert_eq!(store.deployment(&app("demo")).await.unwrap(), None);
    assert_eq!(store.release(&gone.id).await.unwrap(), None);
    assert!(store.releases(&app("demo"), 10).await.unwrap().is_empty());
    assert_eq!(store.release(&kept.id).await.unwrap(), Some(kept));
    // Deleting what is gone is not an error.
    store.delete_deployment(&app("demo")).await.unwrap();
}

async fn a_hooks_health_is_kept_replaced_and_deleted_with_its_app(subject: &Subject) {
    use runway_core::domain::{HookDelivery, HookHealth};
    let store = subject.store();
    store.put_deployment(&deployment("demo", 7)).await.unwrap();
    assert_eq!(store.hook_health(&app("demo")).await.unwrap(), None);
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let first = HookHealth {
        checked_at: at,
        problem: None,
        repaired: Some((
            at,
            "the hook was gone from the repository; made again".into(),
        )),
        failed: vec![HookDelivery {
            guid: "0b989ba4-242f-11e5-81e1-c7b6966d2516".into(),
            delivered_at: at,
            event: "push".into(),
            status_code: Some(401),
            status: "Invalid HTTP Response: 401".into(),
            redelivery: false,
        }],
        repo_gone_since: Some(at),
        secret_reset_for: Some("0b989ba4-242f-11e5-81e1-c7b6966d2516".into()),
        incident: Some((at, "its process stopped (signal: 9); restarted".into())),
    };
    store.put_hook_health(&app("demo"), &first).await.unwrap();
    assert_eq!(
        store.hook_health(&app("demo")).await.unwrap(),
        Some(first.clone())
    );
    let second = HookHealth {
        problem: Some("GitHub is down".into()),
        failed: Vec::new(),
        ..first
    };
    store.put_hook_health(&app("demo"), &second).await.unwrap();
    assert_eq!(
        store.hook_health(&app("demo")).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.hook_health(&app("other")).await.unwrap(), None);
    store.delete_deployment(&app("demo")).await.unwrap();
    assert_eq!(store.hook_health(&app("demo")).await.unwrap(), None);
}

async fn sequence_numbers_grow_per_app_and_survive_deletion(subject: &Subject) {
    let store = subject.store();
    let first = store.queue_release(new_release("demo")).await.unwrap();
    let second = store.queue_release(new_release("demo")).await.unwrap();
    let other = store.queue_release(new_release("other")).await.unwrap();
    assert_eq!((first.seq, second.seq, other.seq), (1, 2, 1));

    store.delete_deployment(&app("demo")).await.unwrap();
    let after = store.queue_release(new_release("demo")).await.unwrap();
    assert_eq!(after.seq, 3, "numbers are never reused");
}

async fn a_newer_queued_release_supersedes_older_queued_ones(subject: &Subject) {
    let store = subject.store();
    let building = store.queue_release(new_release("demo")).await.unwrap();
    store
        .transition(&building.id, Queued, Building, none())
        .await
        .unwrap();
    let older = store.queue_release(new_release("demo")).await.unwrap();
    let newer = store.queue_release(new_release("demo")).await.unwrap();

    let older = store.release(&older.id).await.unwrap().unwrap();
    assert_eq!(older.state, Superseded);
    assert!(older.message.unwrap().contains(newer.id.as_str()));
    assert!(older.finished_at.is_some());
    assert_eq!(newer.state, Queued);
    let building = store.release(&building.id).await.unwrap().unwrap();
    assert_eq!(
        building.state, Building,
        "only queued releases are superseded"
    );
    let listed: Vec<u64> = store
        .releases(&app("demo"), 2)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(listed, [3, 2], "newest first, limited");
}

async fn a_rollback_starts_with_its_targets_image(subject: &Subject) {
    let store = subject.store();
    let target = store.queue_release(new_release("demo")).await.unwrap();
    let update = ReleaseUpdate {
        build_id: Some("b-1".into()),
        log_url: Some("https://logs/b-1".into()),
        image: Some("registry/demo@sha256:aa".into()),
        ..none()
    };
    let target = store
        .transition(&target.id, Queued, Building, update)
        .await
        .unwrap();
    let rollback = store
        .queue_release(NewRelease {
            trigger: Trigger::Rollback,
            rollback_of: Some(target.clone()),
            clear_cache: false,
            ..new_release("demo")
        })
        .await
        .unwrap();
    assert_eq!(rollback.rollback_of.as_deref(), Some(target.id.as_str()));
    assert_eq!(rollback.image, target.image);
    assert_eq!(rollback.build_id, target.build_id);
    assert_eq!(rollback.trigger, Trigger::Rollback);
}

async fn transitions_write_their_update_and_keep_the_rest(subject: &Subject) {
    let store = subject.store();
    let release = store.queue_release(new_release("demo")).await.unwrap();
    let with_build = ReleaseUpdate {
        build_id: Some("b-1".into()),
        log_url: Some("https://logs/b-1".into()),
        ..none()
    };
    store
        .transition(&release.id, Queued, Building, with_build)
        .await
        .unwrap();
    // In place: same state, more facts.
    let with_message = ReleaseUpdate {
        message: Some("installing".into()),
        ..none()
    };
    let updated = store
        .transition(&release.id, Building, Building, with_message)
        .await
        .unwrap();
    assert_eq!(updated.build_id.as_deref(), Some("b-1"));
    assert_eq!(updated.message.as_deref(), Some("installing"));
    assert_eq!(store.release(&release.id).await.unwrap(), Some(updated));
    // Terminal states take no in-place update.
    let failed = store
        .transition(&release.id, Building, Failed, none())
        .await
        .unwrap();
    assert!(failed.finished_at.is_some());
    let result = store.transition(&release.id, Failed, Failed, none()).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
}

async fn each_claim_to_build_counts_an_attempt_that_is_kept(subject: &Subject) {
    let store = subject.store();
    let release = store.queue_release(new_release("demo")).await.unwrap();
    assert_eq!(release.attempts, 0);
    for attempt in 1..=2 {
        let claimed = store
            .transition(&release.id, Queued, Building, none())
            .await
            .unwrap();
        assert_eq!(claimed.attempts, attempt);
        // Handed back (the build could not start yet): the count stays.
        let back = store
            .transition(&release.id, Building, Queued, none())
            .await
            .unwrap();
        assert_eq!(back.attempts, attempt);
    }
    let stored = store.release(&release.id).await.unwrap().unwrap();
    assert_eq!(stored.attempts, 2);
    to_deploying(store.as_ref(), &release.id).await;
    let deploying = store.release(&release.id).await.unwrap().unwrap();
    assert_eq!(deploying.attempts, 3);
}

async fn a_transition_from_a_state_the_release_left_is_refused(subject: &Subject) {
    let store = subject.store();
    let release = store.queue_release(new_release("demo")).await.unwrap();
    store
        .transition(&release.id, Queued, Building, none())
        .await
        .unwrap();
    let again = store
        .transition(&release.id, Queued, Building, none())
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let backwards = store.transition(&release.id, Building, Live, none()).await;
    assert!(
        matches!(backwards, Err(StoreError::Conflict(_))),
        "{backwards:?}"
    );
    let unknown = store
        .transition(&ReleaseId::new("no-such-release"), Queued, Building, none())
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );
}

async fn an_older_release_never_goes_live_over_a_newer_live_one(subject: &Subject) {
    let store = subject.store();
    store.put_deployment(&deployment("demo", 7)).await.unwrap();
    let older = store.queue_release(new_release("demo")).await.unwrap();
    to_deploying(store.as_ref(), &older.id).await;
    let newer = store.queue_release(new_release("demo")).await.unwrap();
    to_deploying(store.as_ref(), &newer.id).await;
    let live = ReleaseUpdate {
        url: Some("https://demo.run.app".into()),
        ..none()
    };
    store
        .transition(&newer.id, Deploying, Live, live)
        .await
        .unwrap();

    let result = store.transition(&older.id, Deploying, Live, none()).await;

    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    let deployment = store.deployment(&app("demo")).await.unwrap().unwrap();
    assert_eq!(deployment.live_release.as_deref(), Some(newer.id.as_str()));
    assert_eq!(deployment.url.as_deref(), Some("https://demo.run.app"));
}

async fn a_settings_change_keeps_the_live_release(subject: &Subject) {
    let store = subject.store();
    let stale = deployment("demo", 7);
    store.put_deployment(&stale).await.unwrap();
    let release = store.queue_release(new_release("demo")).await.unwrap();
    to_deploying(store.as_ref(), &release.id).await;
    let live = ReleaseUpdate {
        url: Some("https://demo.run.app".into()),
        ..none()
    };
    store
        .transition(&release.id, Deploying, Live, live)
        .await
        .unwrap();

    // A form submitted with the deployment as it was read before the release went live.
    let changed = Deployment {
        main_file: MainFile::parse("other.py").unwrap(),
        ..stale
    };
    store.put_deployment(&changed).await.unwrap();

    let stored = store.deployment(&app("demo")).await.unwrap().unwrap();
    assert_eq!(stored.main_file.as_str(), "other.py");
    assert_eq!(stored.live_release.as_deref(), Some(release.id.as_str()));
    assert_eq!(stored.url.as_deref(), Some("https://demo.run.app"));
}

/// Moves a queued release to live, as a worker does.
async fn go_live(store: &dyn Store, id: &ReleaseId) {
    to_deploying(store, id).await;
    store.transition(id, Deploying, Live, none()).await.unwrap();
}

/// What the apps page reads: each app's newest release and the one that serves it, however
/// they stand, in the order asked.
async fn the_newest_and_live_releases_of_many_apps_come_in_one_read(subject: &Subject) {
    let store = subject.store();
    for name in ["failing", "steady", "never", "first", "again"] {
        store.put_deployment(&deployment(name, 7)).await.unwrap();
    }
    // An older release serves while the newest failed.
    let serving = store.queue_release(new_release("failing")).await.unwrap();
    go_live(store.as_ref(), &serving.id).await;
    let failed = store.queue_release(new_release("failing")).await.unwrap();
    store
        .transition(&failed.id, Queued, Failed, none())
        .await
        .unwrap();
    // The newest serves.
    store.queue_release(new_release("steady")).await.unwrap();
    let steady = store.queue_release(new_release("steady")).await.unwrap();
    go_live(store.as_ref(), &steady.id).await;
    // On its way, nothing serving yet.
    let first = store.queue_release(new_release("first")).await.unwrap();
    // Deleted with its releases and created again: none of the old ones count.
    store.queue_release(new_release("again")).await.unwrap();
    store.delete_deployment(&app("again")).await.unwrap();
    store.put_deployment(&deployment("again", 7)).await.unwrap();

    let names = ["steady", "never", "failing", "first", "again"];
    let mut deployments = Vec::new();
    for name in names {
        deployments.push(store.deployment(&app(name)).await.unwrap().unwrap());
    }
    let found = store.newest_and_live(&deployments).await.unwrap();

    let ids = |releases: &AppReleases| {
        let id = |release: &Option<Release>| release.as_ref().map(|r| r.id.to_string());
        (id(&releases.newest), id(&releases.live))
    };
    let shown: Vec<_> = found.iter().map(ids).collect();
    let (steady, failed, serving, first) = (
        steady.id.to_string(),
        failed.id.to_string(),
        serving.id.to_string(),
        first.id.to_string(),
    );
    assert_eq!(
        shown,
        [
            (Some(steady.clone()), Some(steady)),
            (None, None),
            (Some(failed), Some(serving)),
            (Some(first), None),
            (None, None),
        ]
    );
    assert_eq!(found[2].newest.as_ref().unwrap().state, Failed);
    assert_eq!(found[2].live.as_ref().unwrap().state, Live);
    assert!(store.newest_and_live(&[]).await.unwrap().is_empty());
}

async fn releases_are_found_by_build_and_by_stale_state(subject: &Subject) {
    let store = subject.store();
    let first = store.queue_release(new_release("demo")).await.unwrap();
    let build = ReleaseUpdate {
        build_id: Some("b-42".into()),
        ..none()
    };
    store
        .transition(&first.id, Queued, Building, build)
        .await
        .unwrap();
    let queued = store.queue_release(new_release("other")).await.unwrap();

    let by_build = store
        .release_by_build(&BuildId::new("b-42"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_build.id, first.id);
    assert_eq!(
        store.release_by_build(&BuildId::new("b-0")).await.unwrap(),
        None
    );

    let later = Utc::now() + chrono::Duration::seconds(1);
    let stale_building = store.releases_in_state(Building, later).await.unwrap();
    assert_eq!(stale_building.len(), 1);
    assert_eq!(stale_building[0].id, first.id);
    let stale_queued = store.releases_in_state(Queued, later).await.unwrap();
    assert_eq!(stale_queued.len(), 1);
    assert_eq!(stale_queued[0].id, queued.id);
    let earlier = Utc::now() - chrono::Duration::seconds(60);
    assert!(
        store
            .releases_in_state(Queued, earlier)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_delivery_id_is_recorded_once(subject: &Subject) {
    let store = subject.store();
    let delivery = |id: &str, seconds_ago: i64| Delivery {
        id: id.into(),
        app: Some(app("demo")),
        event: "push".into(),
        repo_id: Some(7),
        git_ref: Some("refs/heads/main".into()),
        commit: Some("a".repeat(40)),
        received_at: Utc::now() - chrono::Duration::seconds(seconds_ago),
        outcome: "queued demo".into(),
    };
    assert!(store.record_delivery(&delivery("d-1", 10)).await.unwrap());
    assert!(!store.record_delivery(&delivery("d-1", 0)).await.unwrap());
    assert!(store.record_delivery(&delivery("d-2", 5)).await.unwrap());
    let ids: Vec<String> = store
        .deliveries_of_app(&app("demo"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(ids, ["d-2", "d-1"], "newest first");
    assert!(
        store
            .deliveries_of_app(&app("other"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// GitHub sends one delivery id per event to every hook of the repository: two apps on one
/// repository each receive it, and neither is a replay of the other.
async fn one_delivery_id_reaches_every_app_whose_hook_received_it(subject: &Subject) {
    let store = subject.store();
    let delivery = |to: &str| Delivery {
        id: "d-shared".into(),
        app: Some(app(to)),
        event: "push".into(),
        repo_id: Some(9),
        git_ref: Some("refs/heads/main".into()),
        commit: Some("b".repeat(40)),
        received_at: Utc::now(),
        outcome: format!("seen by {to}"),
    };
    assert!(store.record_delivery(&delivery("staging")).await.unwrap());
    assert!(
        store.record_delivery(&delivery("prod")).await.unwrap(),
        "the prod app's hook got the same event: not a replay"
    );
    assert!(!store.record_delivery(&delivery("staging")).await.unwrap());
    assert!(!store.record_delivery(&delivery("prod")).await.unwrap());
    // Each app sees what its own hook received, never the other's.
    for to in ["staging", "prod"] {
        let seen = store.deliveries_of_app(&app(to), 10).await.unwrap();
        let outcomes: Vec<_> = seen.iter().map(|d| d.outcome.as_str()).collect();
        assert_eq!(outcomes, [format!("seen by {to}")]);
    }
}

/// A push's delivery and its release are one write: the first of two simultaneous replays
/// (two instances of the ingress) queues one release, the other is told it is a replay, and
/// another app's hook with the same delivery id queues its own.
async fn a_push_is_recorded_with_its_release_once_even_when_replayed_at_once(subject: &Subject) {
    let delivery = |to: &str| Delivery {
        id: "d-push".into(),
        app: Some(app(to)),
        event: "push".into(),
        repo_id: Some(11),
        git_ref: Some("refs/heads/main".into()),
        commit: Some("c".repeat(40)),
        received_at: Utc::now(),
        outcome: format!("queued a release of {to}"),
    };
    let (first, second) = (subject.instance(0), subject.instance(1));
    let (one, other) = (delivery("web"), delivery("web"));
    let (a, b) = tokio::join!(
        first.accept_push(&one, new_release("web")),
        second.accept_push(&other, new_release("web")),
    );
    let accepted: Vec<Release> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let store = subject.store();
    let releases = store.releases(&app("web"), 10).await.unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].id, accepted[0].id);
    assert_eq!(
        store
            .deliveries_of_app(&app("web"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Once recorded, it is a replay whichever way it comes back.
    assert!(!store.record_delivery(&delivery("web")).await.unwrap());
    let other = store
        .accept_push(&delivery("api"), new_release("api"))
        .await
        .unwrap();
    assert!(other.is_some(), "another app's hook got the same event");
}

/// GitHub delivers a push to every hook of the repository at once: two apps on one repository
/// accept their deliveries side by side, inside the 3 s the ingress gives the store (past them
/// it answers 503, and GitHub does not deliver again). Found by the console's browser test on the
/// Firestore emulator: both transactions queried the releases collection, and each waited on
/// the other's lock until the ingress gave up.
async fn one_push_to_two_apps_is_accepted_by_both_at_once(subject: &Subject) {
    let delivery = |id: &str, to: &str| Delivery {
        id: id.into(),
        app: Some(app(to)),
        event: "push".into(),
        repo_id: Some(12),
        git_ref: Some("refs/heads/main".into()),
        commit: Some("d".repeat(40)),
        received_at: Utc::now(),
        outcome: format!("queued a release of {to}"),
    };
    for round in 0..3 {
        let (staging, prod) = (
            delivery(&format!("d-{round}-staging"), "staging"),
            delivery(&format!("d-{round}-prod"), "prod"),
        );
        let (first, second) = (subject.instance(0), subject.instance(1));
        let both = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            tokio::join!(
                first.accept_push(&staging, new_release("staging")),
                second.accept_push(&prod, new_release("prod")),
            )
        })
        .await
        .expect("two apps' pushes waited on each other");
        assert!(both.0.unwrap().is_some() && both.1.unwrap().is_some());
    }
    for to in ["staging", "prod"] {
        let releases = subject.store().releases(&app(to), 10).await.unwrap();
        assert_eq!(releases.len(), 3, "{releases:?}");
    }
}

/// "All of them" is asked for with a limit past any count (the worker keeps every release's
/// secrets that way); the store must not turn it into a negative or a refused limit.
async fn every_release_is_listed_when_the_limit_is_past_any_count(subject: &Subject) {
    let store = subject.store();
    for _ in 0..2 {
        store.queue_release(new_release("many")).await.unwrap();
    }
    for limit in [usize::MAX, usize::MAX >> 1, u32::MAX as usize] {
        let releases = store.releases(&app("many"), limit).await.unwrap();
        assert_eq!(releases.len(), 2, "limit {limit}");
        let deliveries = store.deliveries_of_app(&app("many"), limit).await.unwrap();
        assert!(deliveries.is_empty());
        store.audit(Some(&app("many")), 0, limit).await.unwrap();
    }
}

/// The app page's "older releases": the page after one that ended at release N is the
/// releases numbered below N, newest first, and never another app's.
async fn older_releases_come_a_page_at_a_time_below_a_sequence(subject: &Subject) {
    let store = subject.store();
    for _ in 0..5 {
        store.queue_release(new_release("paged")).await.unwrap();
    }
    store.queue_release(new_release("other")).await.unwrap();
    let seqs = |releases: Vec<Release>| -> Vec<u64> { releases.iter().map(|r| r.seq).collect() };

    let newest = seqs(store.releases(&app("paged"), 2).await.unwrap());
    let next = seqs(store.releases_before(&app("paged"), 4, 2).await.unwrap());
    let last = seqs(store.releases_before(&app("paged"), 2, 2).await.unwrap());
    let past_all = seqs(
        store
            .releases_before(&app("paged"), u64::MAX, 10)
            .await
            .unwrap(),
    );

    assert_eq!(newest, [5, 4]);
    assert_eq!(next, [3, 2]);
    assert_eq!(last, [1]);
    assert_eq!(past_all, [5, 4, 3, 2, 1]);
    assert!(
        store
            .releases_before(&app("paged"), 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_audit_trail_is_newest_first_narrows_to_an_app_and_pages(subject: &Subject) {
    let store = subject.store();
    let start = Utc::now();
    let done = [
        AuditAction::Create,
        AuditAction::Update,
        AuditAction::Delete,
    ];
    for (i, (app, action)) in ["demo", "other", "demo"].iter().zip(done).enumerate() {
        let entry = AuditEntry {
            at: start + chrono::Duration::milliseconds(i as i64),
            actor: "ada@example.com".into(),
            action,
            app: Some((*app).into()),
            detail: String::new(),
        };
        store.append_audit(&entry).await.unwrap();
    }
    let actions =
        |entries: Vec<AuditEntry>| entries.into_iter().map(|e| e.action).collect::<Vec<_>>();
    assert_eq!(
        actions(store.audit(None, 0, 10).await.unwrap()),
        [
            AuditAction::Delete,
            AuditAction::Update,
            AuditAction::Create
        ]
    );
    assert_eq!(
        actions(store.audit(Some(&app("demo")), 0, 10).await.unwrap()),
        [AuditAction::Delete, AuditAction::Create]
    );
    assert_eq!(
        actions(store.audit(None, 0, 1).await.unwrap()),
        [AuditAction::Delete]
    );
    // Older pages.
    assert_eq!(
        actions(store.audit(None, 1, 1).await.unwrap()),
        [AuditAction::Update]
    );
    assert_eq!(
        actions(store.audit(Some(&app("demo")), 1, 10).await.unwrap()),
        [AuditAction::Create]
    );
    assert!(store.audit(None, 3, 10).await.unwrap().is_empty());
}

async fn orphan_hooks_are_kept_until_removed(subject: &Subject) {
    let store = subject.store();
    let (one, two) = (HookId::new("1"), HookId::new("2"));
    store.add_orphan_hook("ada/demo", &one).await.unwrap();
    store.add_orphan_hook("ada/demo", &one).await.unwrap();
    store.add_orphan_hook("ada/other", &two).await.unwrap();
    let mut hooks = store.orphan_hooks().await.unwrap();
    hooks.sort();
    assert_eq!(
        hooks,
        [
            ("ada/demo".into(), one.clone()),
            ("ada/other".into(), two.clone())
        ]
    );
    store.remove_orphan_hook("ada/demo", &one).await.unwrap();
    assert_eq!(
        store.orphan_hooks().await.unwrap(),
        [("ada/other".to_owned(), two)]
    );
}

async fn concurrent_claims_of_one_release_let_exactly_one_win(subject: &Subject) {
    let store = subject.store();
    let release = store.queue_release(new_release("demo")).await.unwrap();
    let claims = (0..16).map(|worker| {
        let (store, id) = (subject.instance(worker), release.id.clone());
        tokio::spawn(async move {
            let claim = ReleaseUpdate {
                build_id: Some(BuildId::new(format!("b-{worker}"))),
                ..none()
            };
            store.transition(&id, Queued, Building, claim).await
        })
    });
    let results: Vec<_> = join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::Conflict(_))),
        "losers hear Conflict: {results:?}"
    );
    let stored = store.release(&release.id).await.unwrap().unwrap();
    assert_eq!(
        stored.build_id, winners[0].build_id,
        "the winner's write stands"
    );
}

async fn concurrent_queueing_loses_no_release_and_reuses_no_sequence_number(subject: &Subject) {
    let store = subject.store();
    let queued = (0..12).map(|task| {
        let store = subject.instance(task);
        tokio::spawn(async move { store.queue_release(new_release("demo")).await.unwrap().seq })
    });
    let mut seqs: Vec<u64> = join_all(queued)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    let releases = store.releases(&app("demo"), 100).await.unwrap();
    let still_queued: Vec<_> = releases.iter().filter(|r| r.state == Queued).collect();
    assert_eq!(releases.len(), 12);
    assert_eq!(still_queued.len(), 1);
    assert_eq!(still_queued[0].seq, 12, "the newest is the one left queued");
}

async fn concurrent_go_lives_leave_the_newest_release_live(subject: &Subject) {
    let store = subject.store();
    store.put_deployment(&deployment("demo", 7)).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..8 {
        let release = store.queue_release(new_release("demo")).await.unwrap();
        to_deploying(store.as_ref(), &release.id).await;
        ids.push(release.id);
    }
    let go_lives = ids.iter().cloned().enumerate().map(|(task, id)| {
        let store = subject.instance(task);
        tokio::spawn(async move {
            let url = ReleaseUpdate {
                url: Some(format!("https://{id}.run.app")),
                ..none()
            };
            store.transition(&id, Deploying, Live, url).await
        })
    });
    let results: Vec<_> = join_all(go_lives)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let newest = ids.last().unwrap();
    assert!(
        results.last().unwrap().is_ok(),
        "the newest always goes live"
    );
    let deployment = store.deployment(&app("demo")).await.unwrap().unwrap();
    assert_eq!(deployment.live_release.as_ref(), Some(newest));
    assert_eq!(deployment.url, Some(format!("https://{newest}.run.app")));
    for (id, result) in ids.iter().zip(&results) {
        let stored = store.release(id).await.unwrap().unwrap();
        match result {
            Ok(_) => assert_eq!(stored.state, Live),
            Err(error) => {
                assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
                assert_eq!(stored.state, Deploying, "a refused go-live changes nothing");
            }
        }
    }
}

/// A push delivered to `to`'s hook `age` before `now`.
fn delivery_at(
    id: &str,
    to: Option<&str>,
    now: chrono::DateTime<Utc>,
    age: chrono::Duration,
) -> Delivery {
    Delivery {
        id: id.into(),
        app: to.map(app),
        event: "push".into(),
        repo_id: Some(7),
        git_ref: Some("refs/heads/main".into()),
        commit: Some("e".repeat(40)),
        received_at: now - age,
        outcome: "queued".into(),
    }
}

async fn delivery_ids(store: &dyn Store, to: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .deliveries_of_app(&app(to), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    ids.sort();
    ids
}

/// Deliveries received before `now - deliveries_for` go, whoever's hook received them (and
/// those recorded before deliveries named their app); one received exactly then, or later,
/// stays. A second prune finds nothing left.
async fn deliveries_past_keeping_are_pruned_and_recent_ones_kept(subject: &Subject) {
    let store = subject.store();
    // Whole seconds: Firestore keeps microseconds, and the boundary case must be exact.
    let now = Utc::now().trunc_subsecs(0);
    let days = chrono::Duration::days;
    let tick = chrono::Duration::milliseconds(1);
    let deliveries = [
        delivery_at("a-40d", Some("demo"), now, days(40)),
        delivery_at("b-30d-1ms", Some("demo"), now, days(30) + tick),
        delivery_at("c-30d", Some("demo"), now, days(30)),
        delivery_at("d-29d", Some("demo"), now, days(29)),
        delivery_at("e-1h", Some("demo"), now, chrono::Duration::hours(1)),
        delivery_at("f-90d", Some("other"), now, days(90)),
        delivery_at("g-1d", Some("other"), now, days(1)),
        delivery_at("h-31d", None, now, days(31)),
    ];
    for delivery in &deliveries {
        assert!(store.record_delivery(delivery).await.unwrap());
    }

    let pruned = store.prune(&Retention::DEFAULT, now).await.unwrap();

    assert_eq!(
        pruned,
        Pruned {
            deliveries: 4,
            releases: 0
        }
    );
    assert_eq!(
        delivery_ids(store.as_ref(), "demo").await,
        ["c-30d", "d-29d", "e-1h"]
    );
    assert_eq!(delivery_ids(store.as_ref(), "other").await, ["g-1d"]);
    // A pruned id arriving again is a new delivery, not a replay.
    assert!(store.record_delivery(&deliveries[0]).await.unwrap());
    let again = store.prune(&Retention::DEFAULT, now).await.unwrap();
    assert_eq!(again.deliveries, 1, "the re-recorded old one");
    assert_eq!(
        store.prune(&Retention::DEFAULT, now).await.unwrap(),
        Pruned::default()
    );
}

/// One call removes at most `Pruned::AT_MOST`; the next ones take the rest, and then none.
async fn a_long_backlog_of_deliveries_is_pruned_over_several_calls(subject: &Subject) {
    let now = Utc::now().trunc_subsecs(0);
    let backlog = Pruned::AT_MOST + 7;
    let recorded = (0..backlog).map(|n| {
        let store = subject.instance(n);
        let delivery = delivery_at(
            &format!("old-{n}"),
            Some("busy"),
            now,
            chrono::Duration::days(31) + chrono::Duration::seconds(n as i64),
        );
        tokio::spawn(async move { store.record_delivery(&delivery).await.unwrap() })
    });
    for recorded in join_all(recorded).await {
        assert!(recorded.unwrap());
    }
    let store = subject.store();
    assert!(
        store
            .record_delivery(&delivery_at(
                "new",
                Some("busy"),
                now,
                chrono::Duration::days(1)
            ))
            .await
            .unwrap()
    );

    let first = store.prune(&Retention::DEFAULT, now).await.unwrap();
    let second = store.prune(&Retention::DEFAULT, now).await.unwrap();
    let third = store.prune(&Retention::DEFAULT, now).await.unwrap();

    assert_eq!(first.deliveries, Pruned::AT_MOST);
    assert!(first.may_have_more());
    assert_eq!(second.deliveries, 7);
    assert!(!second.may_have_more());
    assert!(third.is_empty(), "{third:?}");
    assert_eq!(delivery_ids(store.as_ref(), "busy").await, ["new"]);
}

/// Queues a release of `name` and fails it at once.
async fn failed_release(store: &dyn Store, name: &str) -> Release {
    let release = store.queue_release(new_release(name)).await.unwrap();
    store
        .transition(&release.id, Queued, Failed, none())
        .await
        .unwrap()
}

/// The app's releases, newest first, as (seq, state).
async fn history(store: &dyn Store, name: &str) -> Vec<(u64, ReleaseState)> {
    store
        .releases(&app(name), 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.seq, r.state))
        .collect()
}

/// Past its newest N, an app's finished releases go: failed ones, and one that was live until
/// a newer one replaced it. The one serving stays however old, and another app's releases are
/// ranked among its own, not among this app's.
async fn an_app_keeps_its_newest_releases_and_the_one_serving_however_old(subject: &Subject) {
    let store = subject.store();
    store.put_deployment(&deployment("demo", 7)).await.unwrap();
    store.put_deployment(&deployment("other", 8)).await.unwrap();
    let replaced = store.queue_release(new_release("demo")).await.unwrap();
    go_live(store.as_ref(), &replaced.id).await;
    let serving = store.queue_release(new_release("demo")).await.unwrap();
    go_live(store.as_ref(), &serving.id).await;
    for _ in 3..=7 {
        failed_release(store.as_ref(), "demo").await;
    }
    for _ in 1..=3 {
        failed_release(store.as_ref(), "other").await;
    }
    let retention = Retention::new(chrono::Duration::days(30), 3);

    let pruned = store.prune(&retention, Utc::now()).await.unwrap();

    assert_eq!(
        pruned,
        Pruned {
            deliveries: 0,
            releases: 3
        }
    );
    assert_eq!(
        history(store.as_ref(), "demo").await,
        [(7, Failed), (6, Failed), (5, Failed), (2, Live)]
    );
    assert_eq!(store.release(&replaced.id).await.unwrap(), None);
    let deployment = store.deployment(&app("demo")).await.unwrap().unwrap();
    assert_eq!(deployment.live_release.as_ref(), Some(&serving.id));
    assert_eq!(
        history(store.as_ref(), "other").await,
        [(3, Failed), (2, Failed), (1, Failed)]
    );
    assert_eq!(
        store.prune(&retention, Utc::now()).await.unwrap(),
        Pruned::default()
    );
    // Numbers go on from the newest, never reusing a pruned one.
    let next = store.queue_release(new_release("demo")).await.unwrap();
    assert_eq!(next.seq, 8);
}

/// A release queued, building or deploying is on its way to finishing, however many newer
/// ones there are: pruning keeping none removes only the finished one.
async fn releases_still_on_their_way_are_never_pruned(subject: &Subject) {
    let store = subject.store();
    store.put_deployment(&deployment("busy", 7)).await.unwrap();
    let building = store.queue_release(new_release("busy")).await.unwrap();
    store
        .transition(&building.id, Queued, Building, none())
        .await
        .unwrap();
    let deploying = store.queue_release(new_release("busy")).await.unwrap();
    to_deploying(store.as_ref(), &deploying.id).await;
    failed_release(store.as_ref(), "busy").await;
    store.queue_release(new_release("busy")).await.unwrap();
    let keep_none = Retention::new(chrono::Duration::days(30), 0);

    let pruned = store.prune(&keep_none, Utc::now()).await.unwrap();

    assert_eq!(pruned.releases, 1);
    assert_eq!(
        history(store.as_ref(), "busy").await,
        [(4, Queued), (2, Deploying), (1, Building)]
    );
    assert_eq!(
        store.prune(&keep_none, Utc::now()).await.unwrap(),
        Pruned::default()
    );
}

/// What is Firestore's own: the shape of its documents, and records written before it changed.
mod firestore_only {
    use super::*;

    /// Sequences numbered before they named their newest release have no `newest`: the apps
    /// page still finds the app's newest release.
    #[tokio::test]
    async fn an_app_numbered_before_sequences_named_their_newest_release_still_shows_it() {
        let project = emulators::unique_project();
        let config = FirestoreConfig {
            project: project.clone(),
            database: "(default)".into(),
            emulator: Some(emulators::firestore()),
            keep_deliveries_for: Retention::DEFAULT.deliveries_for,
        };
        let store = FirestoreStore::connect(&config).await.unwrap();
        store.put_deployment(&deployment("old", 7)).await.unwrap();
        let release = store.queue_release(new_release("old")).await.unwrap();
        // The field removed, as the emulator's REST API (as its admin) does it.
        let removed = reqwest::Client::new()
            .patch(format!(
                "http://{}/v1/projects/{project}/databases/(default)/documents/release_sequences/old\
                 ?updateMask.fieldPaths=newest",
                emulators::firestore()
            ))
            .bearer_auth("owner")
            .json(&serde_json::json!({ "fields": {} }))
            .send()
            .await
            .unwrap();
        assert!(removed.status().is_success(), "{}", removed.status());

        let deployment = store.deployment(&app("old")).await.unwrap().unwrap();
        let found = store.newest_and_live(&[deployment]).await.unwrap();

        assert_eq!(found[0].newest.as_ref().map(|r| &r.id), Some(&release.id));
    }

    /// Every delivery document carries `expire_at`, a Firestore timestamp the configured
    /// retention after it was received, for the TTL policy on `deliveries.expire_at`
    /// (infra/firestore.tf) to delete it: recorded alone or with the release it queued.
    #[tokio::test]
    async fn a_delivery_document_expires_its_retention_after_it_was_received() {
        let project = emulators::unique_project();
        let keep_for = chrono::Duration::days(7);
        let config = FirestoreConfig {
            project: project.clone(),
            database: "(default)".into(),
            emulator: Some(emulators::firestore()),
            keep_deliveries_for: keep_for,
        };
        let store = FirestoreStore::connect(&config).await.unwrap();
        let received = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(5);
        let alone = delivery_at("d-alone", Some("demo"), received, chrono::Duration::zero());
        let push = delivery_at(
            "d-push",
            Some("demo"),
            received,
            chrono::Duration::seconds(1),
        );
        assert!(store.record_delivery(&alone).await.unwrap());
        assert!(
            store
                .accept_push(&push, new_release("demo"))
                .await
                .unwrap()
                .is_some()
        );

        // The documents as the emulator's REST API (as its admin) shows them.
        let listed: serde_json::Value = reqwest::Client::new()
            .get(format!(
                "http://{}/v1/projects/{project}/databases/(default)/documents/deliveries",
                emulators::firestore()
            ))
            .bearer_auth("owner")
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let time = |fields: &serde_json::Value, name: &str| {
            let text = fields[name]["timestampValue"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} is not a timestamp: {fields}"));
            chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc()
        };
        let mut stamped: Vec<_> = listed["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|doc| {
                let fields = &doc["fields"];
                (time(fields, "received_at"), time(fields, "expire_at"))
            })
            .collect();
        stamped.sort();
        assert_eq!(
            stamped,
            [
                (push.received_at, push.received_at + keep_for),
                (alone.received_at, alone.received_at + keep_for),
            ]
        );
    }
}
