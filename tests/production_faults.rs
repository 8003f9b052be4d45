//! The fault suite in the production topology (the five functions as processes, the Firestore
//! and Pub/Sub emulators, the fakes): the worker killed mid-build and mid-deploy, and Cloud
//! Build and Cloud Run refusing calls or losing their answers. Each case ends as the embedded
//! ones do (`faults.rs`): the newest push live, recorded live and the revision serving; one
//! release per accepted delivery; no release outside a final state; every message Pub/Sub
//! pushed to the worker acknowledged in the end (none left for the dead-letter topic). Where a
//! deploy is on its way, every poll checks that a revision of the app serves.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::Method;
use runway_tests::fake_cloud_build::CreateFault;
use runway_tests::fake_cloud_run::served;
use runway_tests::production::Production;
use runway_tests::{GitRepo, streamlit_app};
use serde_json::{Value, json};

use crate::production::{OWNER, deliver_push, push, status, wait_for};

/// How long a push may take to go live through a fault. Firestore keeps the locks of a
/// transaction whose connection died until the transaction expires (about a minute here): a
/// release whose write was cut mid-transaction waits that out, then goes on.
const WAIT: Duration = Duration::from_secs(150);

/// The app `demo` live from the fake GitHub's `ada/demo`, and what the case did to it.
struct Flow {
    production: Production,
    repo: GitRepo,
    repo_id: u64,
    _dir: tempfile::TempDir,
    pushed: Vec<String>,
    accepted: usize,
}

impl Flow {
    async fn start() -> anyhow::Result<Self> {
        let production = Production::start().await?;
        let dir = tempfile::tempdir()?;
        let (repo, repo_id) = production.demo_repo(dir.path())?;
        let submitted = production
            .as_user(Method::POST, "submit", "/api/deployments", OWNER)
            .json(&json!({
                "repo_url": "https://github.com/ada/demo",
                "main_file": "app.py",
                "app_name": "demo",
            }))
            .send()
            .await?;
        ensure!(submitted.status() == 202, "submit: {}", submitted.status());
        let submitted: Value = submitted.json().await?;
        let first = wait_for(&production, "demo", "the first release", |r| {
            r["id"] == submitted["release_id"]
        })
        .await?;
        ensure!(first["state"] == "live", "{first:#}");
        Ok(Self {
            production,
            repo,
            repo_id,
            _dir: dir,
            pushed: vec![first["commit"].as_str().unwrap_or_default().to_owned()],
            accepted: 1,
        })
    }

    /// Commits and pushes version `title`, and delivers its push as GitHub does.
    async fn push(&mut self, title: &str) -> anyhow::Result<String> {
        let commit = self
            .repo
            .commit(&[("app.py", &streamlit_app(title))], title)?;
        self.repo.push("main")?;
        let code = push(&self.production, self.repo_id, &commit).await?;
        ensure!(code == 202, "the push of {title} answered {code}");
        self.pushed.push(commit.clone());
        self.accepted += 1;
        Ok(commit)
    }

    /// Pushes version `title` with builds that take `lasting`, and returns once Cloud Build has
    /// made its build: the push is mid-build. Its commit, and the build's id.
    async fn push_while_building(
        &mut self,
        title: &str,
        lasting: Duration,
    ) -> anyhow::Result<(String, String)> {
        let before = self.production.cloud_build.build_ids();
        self.production.cloud_build.set_build_duration(lasting);
        let commit = self.push(title).await?;
        let deadline = Instant::now() + WAIT;
        loop {
            // Build ids are not made in order: the new one is the one not there before.
            let new = self
                .production
                .cloud_build
                .build_ids()
                .into_iter()
                .find(|id| !before.contains(id));
            if let Some(build) = new {
                return Ok((commit, build));
            }
            ensure!(Instant::now() < deadline, "{}", self.production.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn service_name(&self) -> String {
        format!(
            "projects/{}/locations/europe-west1/services/demo",
            self.production.project
        )
    }

    /// The revision the app's URL serves now.
    async fn serving(&self) -> anyhow::Result<String> {
        let service = self
            .production
            .cloud_run
            .service(&self.service_name())
            .context("the app's service is gone")?;
        let serving = served(service["uri"].as_str().unwrap_or_default()).await?;
        Ok(serving["revision"].as_str().unwrap_or_default().to_owned())
    }

    /// One run of `cleanup`, as Cloud Scheduler calls it (every minute in `infra/`; every two
    /// seconds here, where releases go stale after one). A run that fails or times out is
    /// Cloud Scheduler's to try again later, as it would.
    async fn scheduler(&self) {
        if let Err(error) = self.sweep().await {
            eprintln!("the scheduled cleanup failed (it runs again): {error:#}");
        }
    }

    async fn sweep(&self) -> anyhow::Result<()> {
        let (status, _) = self.production.sweep().await?;
        ensure!(status == 200, "cleanup: {status}");
        Ok(())
    }

    /// Waits for the release of `commit` to be live, with the scheduler running, checking on
    /// every poll that the app's URL answers from one of its revisions.
    async fn until_live(&self, commit: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + WAIT;
        let mut next_sweep = Instant::now();
        loop {
            if Instant::now() >= next_sweep {
                self.scheduler().await;
                next_sweep = Instant::now() + Duration::from_secs(2);
            }
            let (_, body) = status(&self.production, "demo").await?;
            let release = body["releases"]
                .as_array()
                .and_then(|all| all.iter().find(|r| r["commit"] == commit).cloned());
            if let Some(release) = &release {
                match release["state"].as_str() {
                    Some("live") => return Ok(release.clone()),
                    Some("failed" | "superseded") => {
                        anyhow::bail!("{commit} ended {}: {release:#}", release["state"])
                    }
                    _ => {}
                }
            }
            let serving = self.serving().await;
            ensure!(
                serving.as_ref().is_ok_and(|revision| !revision.is_empty()),
                "the app stopped serving: {serving:?}"
            );
            ensure!(
                Instant::now() < deadline,
                "{commit} never went live: {body:#}\n{}",
                self.production.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn invariants(self) -> anyhow::Result<()> {
        let newest = self.pushed.last().context("nothing pushed")?;
        let live = self.until_live(newest).await?;
        let (_, body) = status(&self.production, "demo").await?;
        ensure!(body["live_release"] == live["id"], "{body:#}");
        let releases = body["releases"].as_array().context("releases")?;
        ensure!(
            releases.len() == self.accepted,
            "{} releases for {} accepted deliveries: {body:#}",
            releases.len(),
            self.accepted
        );
        let unfinished: Vec<&Value> = releases
            .iter()
            .filter(|r| !matches!(r["state"].as_str(), Some("live" | "failed" | "superseded")))
            .collect();
        ensure!(unfinished.is_empty(), "left unfinished: {unfinished:#?}");
        let serving = self.serving().await?;
        ensure!(
            serving == live["revision"].as_str().unwrap_or_default(),
            "{serving} serves, not the live release's {}",
            live["revision"]
        );
        let revision = self
            .production
            .cloud_run
            .revisions(&self.service_name())
            .into_iter()
            .find(|r| r.name == serving)
            .context("the serving revision")?;
        ensure!(
            revision.template["annotations"]["runway/release-id"] == live["id"],
            "the serving revision runs another release: {:#}",
            revision.template
        );
        // Every message pushed to the worker was acknowledged in the end: nothing that
        // Google's Pub/Sub would give up on, after its last attempt, to the dead-letter topic.
        let deadline = Instant::now() + WAIT;
        loop {
            let unacknowledged = self.production.unacknowledged();
            if unacknowledged.is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "never acknowledged: {unacknowledged:?}\n{}",
                self.production.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

/// Cloud Run stops a worker instance whenever it likes (a scale-in, a crash, out of memory),
/// mid-request included. Killed just after Cloud Build made the build, before the release
/// recorded which build is its own, the build's end is taken as the release's once the builder
/// vouches for it (made as Runway's build account, tagged with the release and its commit);
/// killed while Cloud Run rolls out the revision, the build's end is redelivered (it was never
/// acknowledged) and the deploy is done again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_build_or_mid_deploy_leaves_the_newest_push_live() -> anyhow::Result<()>
{
    let mut flow = Flow::start().await?;
    let (two, build) = flow
        .push_while_building("Version two", Duration::from_secs(3))
        .await?;
    let deadline = Instant::now() + WAIT;
    flow.production.kill("worker");
    loop {
        let state = flow.production.cloud_build.build(&build);
        if state.is_some_and(|b| !matches!(b["status"].as_str(), Some("QUEUED" | "WORKING"))) {
            break;
        }
        ensure!(Instant::now() < deadline, "the build never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its end is pushed to no worker for a while, and not acknowledged.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = flow.production.unacknowledged();
    ensure!(
        !refused.is_empty(),
        "no push met the stopped worker: the case tested nothing"
    );
    flow.production.start_again("worker").await?;
    flow.until_live(&two).await?;

    let name = flow.service_name();
    let revisions = flow.production.cloud_run.revisions(&name).len();
    flow.production.cloud_run.hold_next_patch();
    let three = flow.push("Version three").await?;
    let deadline = Instant::now() + WAIT;
    while flow.production.cloud_run.revisions(&name).len() == revisions {
        ensure!(Instant::now() < deadline, "{}", flow.production.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flow.production.kill("worker");
    flow.production.cloud_run.release_held();
    flow.production.start_again("worker").await?;
    flow.until_live(&three).await?;
    flow.invariants().await
}

/// Google's APIs refuse calls (quota: 429 RESOURCE_EXHAUSTED; 503 UNAVAILABLE) and lose
/// answers (a 500 after the build was made: asking again makes a second build). None of it may
/// fail the release, build it twice into the app, or stop the live revision serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_and_lost_calls_to_cloud_build_and_cloud_run_only_delay_the_push()
-> anyhow::Result<()> {
    let mut flow = Flow::start().await?;
    flow.production.cloud_build.fail_creates(&[
        CreateFault::Refused(429, "RESOURCE_EXHAUSTED"),
        CreateFault::Refused(503, "UNAVAILABLE"),
        CreateFault::AnswerLost,
    ]);
    let quota = "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per \
                 minute per region' of service 'run.googleapis.com'";
    flow.production
        .cloud_run
        .fail_next("PATCH", 429, "RESOURCE_EXHAUSTED", quota);
    flow.production
        .cloud_run
        .fail_next("PATCH", 500, "INTERNAL", "Internal error encountered.");
    let builds = flow.production.cloud_build.build_ids().len();

    let two = flow.push("Version two").await?;
    let live = flow.until_live(&two).await?;

    let made = flow.production.cloud_build.build_ids().len() - builds;
    ensure!(made == 2, "{made} builds for one push with one lost answer");
    let (_, body) = status(&flow.production, "demo").await?;
    ensure!(
        body["releases"].as_array().is_some_and(|all| all
            .iter()
            .filter(|r| r["commit"] == two.as_str())
            .count()
            == 1),
        "{body:#}"
    );
    ensure!(live["state"] == "live", "{live:#}");
    flow.invariants().await
}

/// GitHub has bad moments too: 500, a 502 from its front end, 429 with `Retry-After` while it
/// sheds load, as the worker reads the branch's head and fetches the commit. The release waits
/// them out and goes live; the live revision serves throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_failing_while_the_worker_reads_only_delays_the_push() -> anyhow::Result<()> {
    let mut flow = Flow::start().await?;
    flow.production
        .github
        .fail_next_repo_calls(&[(500, None), (502, None), (429, Some(1))]);

    let two = flow.push("Version two").await?;
    flow.until_live(&two).await?;

    ensure!(
        flow.production.github.outages_left() == 0,
        "the worker never met GitHub's failures"
    );
    flow.invariants().await
}

/// Firestore and Pub/Sub go away mid-flow (every open connection reset, new ones refused), as
/// when Google's front ends restart, and come back with their data. A build that ends during
/// the outage still goes live: its end is pushed to a worker that cannot read its release, is
/// refused, and Pub/Sub pushes it again. A push delivered during the outage is answered 5xx and
/// nothing of it is kept, so GitHub's Redeliver, with the same delivery id, is taken as new.
/// A write cut mid-transaction holds its locks until Firestore expires the transaction: the
/// release then waits about a minute (or is built again by cleanup), and still goes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn firestore_and_pubsub_going_away_mid_flow_lose_no_push() -> anyhow::Result<()> {
    let mut flow = Flow::start().await?;
    let (two, _) = flow
        .push_while_building("Version two", Duration::from_secs(2))
        .await?;
    outage(&flow.production, true);
    // The build ends, and its end reaches the worker, while the outage lasts.
    tokio::time::sleep(Duration::from_secs(6)).await;
    ensure!(
        flow.production.firestore_link.refused() > 0,
        "nothing met the outage: it tested nothing"
    );
    outage(&flow.production, false);
    flow.until_live(&two).await?;

    let three = flow
        .repo
        .commit(&[("app.py", &streamlit_app("Version three"))], "three")?;
    flow.repo.push("main")?;
    let delivery = uuid::Uuid::new_v4().to_string();
    outage(&flow.production, true);
    let during = deliver_push(&flow.production, flow.repo_id, &three, &delivery).await?;
    outage(&flow.production, false);
    ensure!(
        during >= 500,
        "a push Runway could not record was answered {during}"
    );
    let redelivered = deliver_push(&flow.production, flow.repo_id, &three, &delivery).await?;
    ensure!(
        redelivered == 202,
        "GitHub's Redeliver answered {redelivered}"
    );
    flow.pushed.push(three);
    flow.accepted += 1;
    flow.invariants().await
}

/// Cuts (or restores) the functions' links to Firestore and Pub/Sub.
fn outage(production: &Production, cut: bool) {
    for link in [&production.firestore_link, &production.pubsub_link] {
        if cut {
            link.cut();
        } else {
            link.restore();
        }
    }
}
