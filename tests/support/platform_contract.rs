//! What every `Platform` must do, as functions over `&dyn Platform`, so each adapter is held to
//! the same behaviour. An adapter's test supplies a [`Fixture`]: images that start, one that
//! never gets ready, and a way to ask an app's URL which image answers.

use std::future::Future;
use std::pin::Pin;

use anyhow::{Context, bail, ensure};
use runway_core::domain::{Access, AppName, MainFile, Region, ReleaseId, Resources};
use runway_core::ports::{DeploySpec, Platform, PlatformError};

pub type Probe = Box<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>> + Send + Sync,
>;

pub struct Fixture {
    /// Two images that become ready, distinct so the probe can tell them apart.
    pub good: [String; 2],
    /// An image whose revision never becomes ready.
    pub broken: String,
    pub region: Region,
    /// Given a deployed URL, the image that answers there.
    pub serving: Probe,
}

impl Fixture {
    /// Release `rN` has sequence N: the first number in its id.
    pub fn spec(&self, app: &AppName, release_id: &str, image: &str) -> DeploySpec {
        DeploySpec {
            app: app.clone(),
            release_id: ReleaseId::new(release_id),
            seq: crate::seq_of(release_id),
            image: image.to_owned(),
            main_file: MainFile::parse("streamlit_app.py").expect("a valid main file"),
            region: self.region.clone(),
            resources: Resources::default(),
            runtime: Default::default(),
            secrets: None,
            access: Access::Public,
        }
    }
}

/// Deploy, redeploy, survive a broken release with the previous one serving, roll back to the
/// first release, deploy again (traffic back to the latest), delete twice.
pub async fn deploys_updates_survives_a_broken_release_and_deletes(
    platform: &dyn Platform,
    fixture: &Fixture,
    app: &AppName,
) -> anyhow::Result<()> {
    let [good, better] = &fixture.good;
    let first = platform.deploy(fixture.spec(app, "r1", good)).await?;
    ensure!(!first.url.is_empty(), "a live app has a URL");
    ensure!((fixture.serving)(first.url.clone()).await? == *good);

    let second = platform.deploy(fixture.spec(app, "r2", better)).await?;
    ensure!(second.url == first.url, "the URL is stable per app");
    ensure!(
        second.revision != first.revision,
        "each release is a new revision"
    );
    ensure!((fixture.serving)(second.url.clone()).await? == *better);

    match platform
        .deploy(fixture.spec(app, "r3", &fixture.broken))
        .await
    {
        Err(PlatformError::NotReady(message)) => {
            ensure!(!message.is_empty(), "NotReady says why")
        }
        other => bail!("a broken release must be NotReady, got {other:?}"),
    }
    let serving = (fixture.serving)(second.url.clone())
        .await
        .context("the previous release keeps serving")?;
    ensure!(
        serving == *better,
        "after a broken release {serving} serves"
    );

    let rolled_back = platform
        .roll_back(fixture.spec(app, "r4", good), Some(&first.revision))
        .await
        .context("rolling back to the first release")?;
    ensure!(
        rolled_back.url == first.url,
        "a rollback keeps the app's URL"
    );
    let serving = (fixture.serving)(first.url.clone()).await?;
    ensure!(
        serving == *good,
        "after rolling back to the first release {serving} serves"
    );

    let third = platform.deploy(fixture.spec(app, "r5", better)).await?;
    ensure!(third.url == first.url, "the URL is stable per app");
    let serving = (fixture.serving)(third.url.clone()).await?;
    ensure!(
        serving == *better,
        "a deploy after a rollback moves traffic to the latest, yet {serving} serves"
    );

    // An older release that reaches the platform late (its build ended last) stands aside.
    match platform.deploy(fixture.spec(app, "r2-late", good)).await {
        Err(PlatformError::Superseded(message)) => {
            ensure!(!message.is_empty(), "Superseded says why")
        }
        other => bail!("an older release must be Superseded, got {other:?}"),
    }
    let serving = (fixture.serving)(third.url.clone()).await?;
    ensure!(
        serving == *better,
        "a late older release replaced the newer one: {serving} serves"
    );

    platform.delete(app).await?;
    ensure!(
        (fixture.serving)(second.url.clone()).await.is_err(),
        "a deleted app no longer answers"
    );
    platform.delete(app).await.context("deleting twice")?;
    Ok(())
}
