//! `CloudRunPlatform` through the official `google-cloud-run-v2` client against the fake Cloud
//! Run Admin API (`runway_tests::fake_cloud_run`; Cloud Run has no emulator).

use std::time::Duration;

use anyhow::Context;
use http::StatusCode;
use runway_core::domain::{Access, AppName, Cpu, MainFile, Memory, ReleaseId, Resources};
use runway_core::ports::{DeploySpec, Deployed, Platform, PlatformError, SecretRef};
use runway_gcp::{CloudRunConfig, CloudRunPlatform, PublicAccess};
use runway_tests::emulators;
use runway_tests::fake_cloud_run::{
    FakeCloudRun, INVOKER, SECRET_ACCESSOR, iap_agent, served, service_name, status_for,
};
use runway_tests::google_keys::GoogleKeys;
use serde_json::Value;

const PROJECT: &str = "runway-test";
const REGION: &str = "europe-west1";
/// The account app `hello` runs as.
const HELLO_SA: &str = "runway-a-hello@runway-test.iam.gserviceaccount.com";
const GOOD: &str = "europe-docker.pkg.dev/runway-test/apps/hello@sha256:1111";
const BETTER: &str = "europe-docker.pkg.dev/runway-test/apps/hello@sha256:2222";
const GOOD_TOO: &str = "europe-docker.pkg.dev/runway-test/apps/hello@sha256:3333";
const BROKEN: &str = "europe-docker.pkg.dev/runway-test/apps/hello@sha256:dead";
const BROKEN_WHY: &str = "The user-provided container failed to start and listen on the port \
                          defined provided by the PORT=8080 environment variable.";

struct Setup {
    fake: FakeCloudRun,
    platform: CloudRunPlatform,
}

impl Setup {
    async fn start() -> anyhow::Result<Self> {
        let fake = FakeCloudRun::start().await?;
        fake.front(&emulators::secret_manager());
        fake.fail_image(BROKEN, BROKEN_WHY);
        let platform = CloudRunPlatform::new(config(&fake)).await?;
        Ok(Self { fake, platform })
    }

    /// Another platform on the same fake, configured differently.
    async fn platform_with(
        &self,
        change: impl FnOnce(&mut CloudRunConfig),
    ) -> anyhow::Result<CloudRunPlatform> {
        let mut config = config(&self.fake);
        change(&mut config);
        CloudRunPlatform::new(config).await
    }

    async fn deploy(&self, release: &str, image: &str) -> Result<Deployed, PlatformError> {
        self.platform.deploy(spec(release, image, None)).await
    }

    fn service(&self) -> anyhow::Result<Value> {
        self.fake
            .service(&service_name(PROJECT, REGION, "hello"))
            .context("the service exists in the fake")
    }
}

fn config(fake: &FakeCloudRun) -> CloudRunConfig {
    fake.platform_config(PROJECT, &[REGION])
}

fn app() -> AppName {
    AppName::parse("hello").expect("a valid app name")
}

fn spec(release: &str, image: &str, secrets: Option<&str>) -> DeploySpec {
    DeploySpec {
        app: app(),
        release_id: ReleaseId::new(release),
        seq: runway_tests::seq_of(release),
        image: image.to_owned(),
        main_file: MainFile::parse("streamlit_app.py").expect("a valid main file"),
        region: runway_tests::region(REGION),
        resources: Resources::new(Memory::Gi2, Cpu::One).expect("allowed resources"),
        runtime: Default::default(),
        secrets: secrets.map(|name| SecretRef(name.to_owned())),
        access: Access::Public,
    }
}

/// Which revision and image answer at the app's URL.
async fn serving(deployed: &Deployed) -> anyhow::Result<(String, String)> {
    let answer = served(&deployed.url).await?;
    let field = |name: &str| answer[name].as_str().unwrap_or_default().to_owned();
    Ok((field("revision"), field("image")))
}

#[tokio::test]
async fn a_first_deploy_creates_the_service_and_serves_it_at_its_url() -> anyhow::Result<()> {
    let setup = Setup::start().await?;

    let deployed = setup.deploy("r1", GOOD).await?;

    let service = setup.service()?;
    assert_eq!(deployed.url, service["uri"]);
    assert!(
        deployed.revision.starts_with("hello-00001-"),
        "{deployed:?}"
    );
    assert_eq!(
        serving(&deployed).await?,
        (deployed.revision.clone(), GOOD.into())
    );
    assert_eq!(service["labels"]["managed-by"], "runway");
    assert_eq!(
        service["template"]["annotations"]["runway/release-id"],
        "r1"
    );
    Ok(())
}

#[tokio::test]
async fn a_deploy_upserts_and_waits_for_the_operation() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    setup.fake.set_pending_polls(3);

    setup.deploy("r1", GOOD).await?;

    let requests = setup.fake.requests();
    let patch = requests
        .iter()
        .find(|r| r.method == "PATCH")
        .context("a PATCH")?;
    assert_eq!(
        patch.path,
        "/v2/projects/runway-test/locations/europe-west1/services/hello"
    );
    assert_eq!(patch.param("allowMissing"), Some("true"));
    assert_eq!(
        patch.param("updateMask"),
        Some("labels,template,iapEnabled,traffic,annotations"),
        "a deploy writes only the fields Runway owns"
    );
    let polls = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/operations/"))
        .count();
    assert_eq!(polls, 3, "polled until done: {requests:#?}");
    let last_poll = requests
        .iter()
        .rposition(|r| r.path.contains("/operations/"))
        .context("a poll")?;
    let after: Vec<(&str, &str)> = requests[last_poll + 1..]
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let service = "/v2/projects/runway-test/locations/europe-west1/services/hello";
    assert_eq!(
        after,
        [
            ("GET", service),
            ("GET", &*format!("{service}:getIamPolicy")),
            ("POST", &*format!("{service}:setIamPolicy")),
        ],
        "reads the service once the operation is done, then opens it to viewers"
    );
    Ok(())
}

/// A service that is not Runway's (no `managed-by=runway` label) is never replaced by an app of
/// the same name: a submit hears of it first (`check_name`), and a deploy refuses too.
#[tokio::test]
async fn a_service_runway_did_not_create_is_never_replaced() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let name = service_name(PROJECT, REGION, "hello");
    let theirs = "europe-docker.pkg.dev/other-team/tools/hello@sha256:7777";
    let created = reqwest::Client::new()
        .patch(format!(
            "{}/v2/{name}?allowMissing=true",
            setup.fake.endpoint()
        ))
        .json(&serde_json::json!({
            "name": name,
            "template": { "containers": [{ "image": theirs }] },
        }))
        .send()
        .await?;
    anyhow::ensure!(created.status().is_success(), "{}", created.status());

    let checked = setup
        .platform
        .check_name(&app(), &runway_tests::region(REGION))
        .await;
    let deployed = setup.deploy("r1", GOOD).await;

    for outcome in [checked.map(|_| ()), deployed.map(|_| ())] {
        let Err(PlatformError::Conflict(message)) = outcome else {
            panic!("expected a conflict, got {outcome:?}");
        };
        assert!(message.contains("Runway did not create it"), "{message}");
    }
    let service = setup.service()?;
    assert_eq!(service["template"]["containers"][0]["image"], theirs);
    Ok(())
}

/// Someone else's service of the app's name in another region Runway may use: an app that
/// leaves a region it is not known to have run in (`retire_elsewhere`), or that is deleted,
/// takes only its own services with it.
#[tokio::test]
async fn an_app_that_leaves_or_is_deleted_takes_only_its_own_services() -> anyhow::Result<()> {
    const NEW: &str = "us-central1";
    const THEIRS: &str = "asia-east1";
    let setup = Setup::start().await?;
    let platform = setup
        .platform_with(|config| config.regions = vec![REGION.into(), NEW.into(), THEIRS.into()])
        .await?;
    let foreign = service_name(PROJECT, THEIRS, "hello");
    let created = reqwest::Client::new()
        .patch(format!("{}/v2/{foreign}?allowMissing=true", setup.fake.endpoint()))
        .json(&serde_json::json!({
            "name": foreign,
            "template": { "containers": [{ "image": "asia-docker.pkg.dev/other/t/hello@sha256:7" }] },
        }))
        .send()
        .await?;
    anyhow::ensure!(created.status().is_success(), "{}", created.status());
    platform.deploy(spec("r1", GOOD, None)).await?;
    let mut moved = spec("r2", BETTER, None);
    moved.region = runway_tests::region(NEW);
    platform.deploy(moved).await?;

    platform
        .retire_elsewhere(&app(), &runway_tests::region(NEW))
        .await?;

    let exists = |region: &str| {
        setup
            .fake
            .service(&service_name(PROJECT, region, "hello"))
            .is_some()
    };
    assert!(!exists(REGION), "the app's old service is gone");
    assert!(exists(NEW), "the app's new service serves");
    assert!(exists(THEIRS), "someone else's service stays");

    platform.delete(&app()).await?;

    assert!(!exists(NEW));
    assert!(
        exists(THEIRS),
        "deleting the app deleted someone else's service"
    );
    Ok(())
}

/// What an operator set on the service outside Runway (with Terraform or gcloud), such as
/// `invokerIamDisabled` for public apps where `allUsers` is forbidden, or labels of their own,
/// survives Runway's deploys.
#[tokio::test]
async fn a_deploy_keeps_what_the_operator_set_on_the_service() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    setup.deploy("r1", GOOD).await?;
    let name = service_name(PROJECT, REGION, "hello");
    let operator = reqwest::Client::new()
        .patch(format!(
            "{}/v2/{name}?updateMask=invokerIamDisabled,labels",
            setup.fake.endpoint()
        ))
        .json(&serde_json::json!({
            "name": name,
            "invokerIamDisabled": true,
            "labels": { "managed-by": "runway", "team": "data-science" },
        }))
        .send()
        .await?;
    anyhow::ensure!(operator.status().is_success(), "{}", operator.status());

    setup.deploy("r2", BETTER).await?;

    let service = setup.service()?;
    assert_eq!(service["invokerIamDisabled"], true, "{service:#}");
    assert_eq!(service["labels"]["team"], "data-science", "{service:#}");
    assert_eq!(service["labels"]["managed-by"], "runway", "{service:#}");
    Ok(())
}

#[tokio::test]
async fn an_update_makes_a_new_revision_and_moves_traffic_to_it() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let first = setup.deploy("r1", GOOD).await?;

    let second = setup.deploy("r2", BETTER).await?;

    assert_eq!(second.url, first.url);
    assert!(second.revision.starts_with("hello-00002-"), "{second:?}");
    assert_eq!(
        serving(&second).await?,
        (second.revision.clone(), BETTER.into())
    );
    let service = setup.service()?;
    assert_eq!(
        service["traffic"],
        serde_json::json!([{ "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100 }])
    );
    Ok(())
}

#[tokio::test]
async fn a_broken_image_is_not_ready_and_the_previous_revision_keeps_serving() -> anyhow::Result<()>
{
    let setup = Setup::start().await?;
    let good = setup.deploy("r1", GOOD).await?;

    let error = setup.deploy("r2", BROKEN).await.unwrap_err();

    let PlatformError::NotReady(message) = &error else {
        panic!("expected NotReady, got {error:?}");
    };
    assert!(message.contains(BROKEN_WHY), "{message}");
    assert!(
        message.contains("hello-00002-"),
        "names the failed revision: {message}"
    );
    assert_eq!(serving(&good).await?, (good.revision.clone(), GOOD.into()));
    let service = setup.service()?;
    assert_eq!(service["terminalCondition"]["state"], "CONDITION_FAILED");
    assert!(
        service["latestReadyRevision"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&good.revision)
    );
    Ok(())
}

/// Cloud Run fails some operations whose revision never gets ready with code 13 (INTERNAL),
/// not 9: such a deploy is "not ready" with Cloud Run's reason, not an outage to retry (the
/// worker would retry it until the message is dead-lettered, and the user never learn why).
#[tokio::test]
async fn a_revision_failed_with_internal_is_not_ready_and_the_previous_one_keeps_serving()
-> anyhow::Result<()> {
    const DENIED: &str = "europe-docker.pkg.dev/runway-test/apps/hello@sha256:5ec2";
    let setup = Setup::start().await?;
    setup.fake.fail_image_internally(
        DENIED,
        "spec.template.spec.containers[0].env[0].value_from.secret_key_ref.name: Permission \
         denied on secret: projects/runway-test/secrets/runway-app-hello/versions/1",
    );
    let first = setup.deploy("r1", GOOD).await?;

    let error = setup.deploy("r2", DENIED).await.unwrap_err();

    let PlatformError::NotReady(message) = &error else {
        panic!("expected NotReady, got {error:?}");
    };
    assert!(message.contains("Permission denied on secret"), "{message}");
    let (_, image) = serving(&first).await?;
    assert_eq!(image, GOOD, "the previous revision keeps serving");
    Ok(())
}

#[tokio::test]
async fn a_broken_first_deploy_is_not_ready_and_serves_nothing() -> anyhow::Result<()> {
    let setup = Setup::start().await?;

    let error = setup.deploy("r1", BROKEN).await.unwrap_err();

    assert!(matches!(error, PlatformError::NotReady(_)), "{error:?}");
    let uri = setup.service()?["uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(served(&uri).await.is_err(), "no revision serves");
    Ok(())
}

#[tokio::test]
async fn a_rollback_pins_an_older_revision_and_the_next_deploy_returns_to_latest()
-> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let first = setup.deploy("r1", GOOD).await?;
    let second = setup.deploy("r2", BETTER).await?;

    let rolled_back = setup
        .platform
        .route_to(&app(), REGION, &first.revision, 3)
        .await?;

    assert_eq!(
        rolled_back,
        Deployed {
            url: first.url.clone(),
            revision: first.revision.clone()
        }
    );
    assert_eq!(
        serving(&rolled_back).await?,
        (first.revision.clone(), GOOD.into())
    );
    assert_eq!(
        setup
            .fake
            .revisions(&service_name(PROJECT, REGION, "hello"))
            .len(),
        2,
        "routing traffic makes no revision"
    );

    let third = setup.deploy("r3", BETTER).await?;

    assert_ne!(third.revision, second.revision);
    assert_eq!(
        serving(&third).await?,
        (third.revision.clone(), BETTER.into())
    );
    assert_eq!(
        setup.service()?["traffic"][0]["type"],
        "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    );
    Ok(())
}

/// After a rollback to R1 (from R2), a deploy of R3 that never gets ready must leave R1
/// serving. Setting traffic to LATEST with the new template would hand it to R2, the latest
/// *ready* revision, which the user rolled back from.
#[tokio::test]
async fn a_failed_deploy_after_a_rollback_keeps_the_rolled_back_revision_serving()
-> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let first = setup.deploy("r1", GOOD).await?;
    setup.deploy("r2", BETTER).await?;
    setup
        .platform
        .route_to(&app(), REGION, &first.revision, 3)
        .await?;

    let error = setup.deploy("r3", BROKEN).await.unwrap_err();

    assert!(matches!(error, PlatformError::NotReady(_)), "{error:?}");
    assert_eq!(
        serving(&first).await?,
        (first.revision.clone(), GOOD.into()),
        "the rolled-back-to revision keeps serving"
    );
    Ok(())
}

#[tokio::test]
async fn a_rollback_to_a_revision_that_never_got_ready_is_not_ready() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let good = setup.deploy("r1", GOOD).await?;
    setup.deploy("r2", BROKEN).await.unwrap_err();
    let broken = setup
        .fake
        .revisions(&service_name(PROJECT, REGION, "hello"))
        .last()
        .map(|revision| revision.name.clone())
        .context("the broken revision")?;

    let error = setup
        .platform
        .route_to(&app(), REGION, &broken, 3)
        .await
        .unwrap_err();

    assert!(
        matches!(&error, PlatformError::NotReady(m) if m.contains(&broken)),
        "{error:?}"
    );
    assert_eq!(serving(&good).await?, (good.revision.clone(), GOOD.into()));
    Ok(())
}

#[tokio::test]
async fn secrets_are_mounted_as_the_file_streamlit_is_pointed_at() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    emulators::create_secret(PROJECT, "app-hello").await;
    let version = format!("projects/{PROJECT}/secrets/app-hello/versions/4");

    setup
        .platform
        .deploy(spec("r1", GOOD, Some(&version)))
        .await?;

    let template = setup.service()?["template"].clone();
    let container = &template["containers"][0];
    assert_eq!(
        template["volumes"],
        serde_json::json!([{
            "name": "secrets",
            "secret": {
                "secret": "app-hello",
                "items": [{ "path": "secrets.toml", "version": "4" }],
            },
        }])
    );
    assert_eq!(
        container["volumeMounts"],
        serde_json::json!([{ "name": "secrets", "mountPath": "/secrets" }])
    );
    assert_eq!(
        container["env"],
        serde_json::json!([{ "name": "STREAMLIT_SECRETS_FILES", "value": "/secrets/secrets.toml" }])
    );
    Ok(())
}

#[tokio::test]
async fn a_secret_in_another_project_is_named_in_full() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    emulators::create_secret("vault", "app-hello").await;
    let version = "projects/vault/secrets/app-hello/versions/latest";

    setup
        .platform
        .deploy(spec("r1", GOOD, Some(version)))
        .await?;

    let volume = &setup.service()?["template"]["volumes"][0]["secret"];
    assert_eq!(volume["secret"], "projects/vault/secrets/app-hello");
    assert_eq!(volume["items"][0]["version"], "latest");
    Ok(())
}

#[tokio::test]
async fn the_revision_has_resources_affinity_scaling_and_its_identity() -> anyhow::Result<()> {
    let setup = Setup::start().await?;

    setup.deploy("r1", GOOD).await?;

    let template = setup.service()?["template"].clone();
    let container = &template["containers"][0];
    assert_eq!(container["image"], GOOD);
    assert_eq!(
        container["resources"]["limits"],
        serde_json::json!({ "memory": "2Gi", "cpu": "1" })
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(
        container["startupProbe"]["httpGet"]["path"],
        "/_stcore/health"
    );
    assert_eq!(template["sessionAffinity"], true);
    assert_eq!(template["scaling"]["maxInstanceCount"], 3);
    assert_eq!(template["serviceAccount"], HELLO_SA);
    assert!(template.get("volumes").is_none(), "no secrets, no volume");
    Ok(())
}

#[tokio::test]
async fn delete_removes_the_service_and_deleting_again_is_fine() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let deployed = setup.deploy("r1", GOOD).await?;

    setup.platform.delete(&app()).await?;

    assert!(
        setup
            .fake
            .service(&service_name(PROJECT, REGION, "hello"))
            .is_none()
    );
    assert!(served(&deployed.url).await.is_err());
    setup.platform.delete(&app()).await?;
    Ok(())
}

/// The app's `spec` under another name, with its own secret version.
fn spec_of(name: &str, release: &str, secret: Option<&str>) -> DeploySpec {
    let mut spec = spec(release, GOOD, secret);
    spec.app = AppName::parse(name).expect("a valid app name");
    spec
}

/// Every app used to run as one account that could read every app's secret. Each now runs as
/// its own, which may read its own secret and no other.
#[tokio::test]
async fn each_app_runs_as_its_own_account_that_reads_only_its_own_secret() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    // IAM does not know a new account at once: a policy naming it is refused a few times.
    setup.fake.settle_after(3);
    for name in ["hello", "world"] {
        emulators::create_secret(PROJECT, &format!("runway-app-{name}")).await;
    }
    let secret = |name: &str| format!("projects/{PROJECT}/secrets/runway-app-{name}");
    let version = |name: &str| format!("{}/versions/1", secret(name));

    let hello = setup
        .platform
        .deploy(spec_of("hello", "r1", Some(&version("hello"))))
        .await?;
    let world = setup
        .platform
        .deploy(spec_of("world", "r2", Some(&version("world"))))
        .await?;

    // Both revisions got ready: Cloud Run let each account read the secret it mounts.
    assert_eq!(served(&hello.url).await?["revision"], hello.revision);
    assert_eq!(served(&world.url).await?["revision"], world.revision);
    let account = |name: &str| format!("runway-a-{name}@{PROJECT}.iam.gserviceaccount.com");
    for name in ["hello", "world"] {
        let template = setup
            .fake
            .service(&service_name(PROJECT, REGION, name))
            .context("the service")?["template"]
            .clone();
        assert_eq!(template["serviceAccount"], account(name));
        assert_eq!(
            setup.fake.members(&secret(name), SECRET_ACCESSOR),
            [format!("serviceAccount:{}", account(name))],
        );
    }
    let accounts = setup.fake.service_accounts();
    assert_eq!(
        accounts.keys().cloned().collect::<Vec<_>>(),
        [account("hello"), account("world")]
    );
    assert_eq!(
        accounts[&account("hello")]["description"],
        "Runway: the identity app hello runs as"
    );

    // Deleting an app deletes its account; its grant on the secret becomes a deleted member,
    // so the app re-created under the same name has to be granted again, and is.
    setup.platform.delete(&app()).await?;
    assert!(
        !setup
            .fake
            .service_accounts()
            .contains_key(&account("hello"))
    );
    let again = setup
        .platform
        .deploy(spec_of("hello", "r3", Some(&version("hello"))))
        .await?;
    assert_eq!(served(&again.url).await?["revision"], again.revision);
    let readers = setup.fake.members(&secret("hello"), SECRET_ACCESSOR);
    assert!(
        readers.contains(&format!("serviceAccount:{}", account("hello"))),
        "{readers:?}"
    );
    assert!(
        readers
            .iter()
            .any(|member| member.starts_with("deleted:serviceAccount:")),
        "{readers:?}"
    );
    Ok(())
}

/// A project holds 100 service accounts unless its quota was raised. Past it a deploy fails
/// with what to do, and creates nothing.
#[tokio::test]
async fn past_the_service_account_quota_a_deploy_fails_with_what_to_do() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    setup.fake.limit_service_accounts(1);
    setup.platform.deploy(spec_of("hello", "r1", None)).await?;

    let error = setup
        .platform
        .deploy(spec_of("world", "r2", None))
        .await
        .unwrap_err();

    let PlatformError::Other(error) = error else {
        panic!("a full quota does not clear by retrying: {error:?}");
    };
    let message = format!("{error:#}");
    assert!(message.contains("quota"), "{message}");
    assert!(message.contains("Delete apps"), "{message}");
    assert!(
        setup
            .fake
            .service(&service_name(PROJECT, REGION, "world"))
            .is_none()
    );
    assert_eq!(setup.fake.service_accounts().len(), 1);
    Ok(())
}

/// An account under the app's account name that someone else made is not taken over: its
/// grants are not Runway's to give to untrusted code.
#[tokio::test]
async fn an_account_of_the_apps_name_that_runway_did_not_create_is_refused() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let made = reqwest::Client::new()
        .post(format!(
            "{}/v1/projects/{PROJECT}/serviceAccounts",
            setup.fake.endpoint()
        ))
        .json(&serde_json::json!({
            "accountId": "runway-a-hello",
            "serviceAccount": { "displayName": "ops", "description": "the ops team's robot" },
        }))
        .send()
        .await?;
    assert!(made.status().is_success(), "{}", made.text().await?);

    let error = setup.deploy("r1", GOOD).await.unwrap_err();

    let PlatformError::Conflict(message) = error else {
        panic!("expected a conflict: {error:?}");
    };
    assert!(message.contains(HELLO_SA), "{message}");
    assert!(
        setup
            .fake
            .service(&service_name(PROJECT, REGION, "hello"))
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_permission_names_the_role_to_grant() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    setup.fake.fail_next(
        "PATCH",
        403,
        "PERMISSION_DENIED",
        "Permission 'run.services.update' denied on resource",
    );

    let error = setup.deploy("r1", GOOD).await.unwrap_err();

    let PlatformError::Other(error) = error else {
        panic!("a permission problem is not transient: {error:?}");
    };
    let message = format!("{error:#}");
    assert!(message.contains("run.services.update"), "{message}");
    assert!(message.contains("app deployer role"), "{message}");
    Ok(())
}

#[tokio::test]
async fn an_unavailable_cloud_run_is_worth_retrying() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    setup.fake.fail_next(
        "PATCH",
        503,
        "UNAVAILABLE",
        "The service is currently unavailable.",
    );

    let error = setup.deploy("r1", GOOD).await.unwrap_err();

    assert!(matches!(error, PlatformError::Unavailable(_)), "{error:?}");
    setup
        .deploy("r1", GOOD)
        .await
        .context("the retry succeeds")?;
    Ok(())
}

/// Cloud Run lets nobody in whom its invoker check does not admit: a public app needs
/// `allUsers` as invoker, or every viewer gets 403.
#[tokio::test]
async fn a_public_app_opens_to_anonymous_viewers() -> anyhow::Result<()> {
    let setup = Setup::start().await?;

    let deployed = setup.deploy("r1", GOOD).await?;

    let name = service_name(PROJECT, REGION, "hello");
    assert_eq!(setup.fake.members(&name, INVOKER), ["allUsers"]);
    assert_eq!(status_for(&deployed.url, None).await?, StatusCode::OK);
    assert!(!flag(&setup.service()?, "iapEnabled"));
    Ok(())
}

/// A service's boolean field as JSON gives it: `false` is left out, as proto3 JSON does.
fn flag(service: &Value, field: &str) -> bool {
    service[field].as_bool().unwrap_or(false)
}

fn private(viewers: &[&str]) -> Access {
    Access::parse("private", viewers.iter().copied()).expect("valid viewers")
}

/// A private app is IAP on the service: anonymous viewers are sent to sign in, signed-in ones
/// pass only if named (directly, through a group, or by domain), and IAP's agent may invoke.
#[tokio::test]
async fn a_private_app_lets_in_only_its_signed_in_viewers() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let keys = GoogleKeys::start().await;
    setup.fake.trust(keys.verifier());
    setup.fake.add_to_group("group:ds@acme.io", "bob@acme.io");
    let mut spec = spec("r1", GOOD, None);
    spec.access = private(&["ada@acme.io", "group:ds@acme.io", "domain:partner.io"]);

    let deployed = setup.platform.deploy(spec).await?;

    let url = &deployed.url;
    let token = |email: &str| keys.id_token(url, email);
    assert_eq!(
        status_for(url, None).await?,
        StatusCode::FOUND,
        "sign in first"
    );
    for viewer in ["ada@acme.io", "bob@acme.io", "carol@partner.io"] {
        assert_eq!(
            status_for(url, Some(&token(viewer))).await?,
            StatusCode::OK,
            "{viewer}"
        );
    }
    assert_eq!(
        status_for(url, Some(&token("eve@acme.io"))).await?,
        StatusCode::FORBIDDEN
    );
    let other_audience = keys.id_token("https://elsewhere.run.app", "ada@acme.io");
    assert_eq!(
        status_for(url, Some(&other_audience)).await?,
        StatusCode::UNAUTHORIZED
    );
    let name = service_name(PROJECT, REGION, "hello");
    assert_eq!(setup.fake.members(&name, INVOKER), [iap_agent()]);
    assert!(flag(&setup.service()?, "iapEnabled"));
    assert!(!flag(&setup.service()?, "invokerIamDisabled"));
    Ok(())
}

/// Access follows the setting both ways, and whatever else an operator granted stays.
#[tokio::test]
async fn changing_access_revokes_and_grants_and_keeps_the_operators_grants() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let deployed = setup.deploy("r1", GOOD).await?;
    let name = service_name(PROJECT, REGION, "hello");
    let policy: Value = reqwest::get(format!("{}/v2/{name}:getIamPolicy", setup.fake.endpoint()))
        .await?
        .json()
        .await?;
    let granted = reqwest::Client::new()
        .post(format!("{}/v2/{name}:setIamPolicy", setup.fake.endpoint()))
        .json(&serde_json::json!({ "policy": {
            "etag": policy["etag"],
            "bindings": [{ "role": INVOKER, "members": ["allUsers", "serviceAccount:ops@acme.io"] }],
        }}))
        .send()
        .await?;
    anyhow::ensure!(granted.status().is_success(), "{}", granted.status());

    let mut spec = spec("r2", BETTER, None);
    spec.access = private(&["ada@acme.io"]);
    setup.platform.deploy(spec).await?;
    assert_eq!(status_for(&deployed.url, None).await?, StatusCode::FOUND);
    assert_eq!(
        setup.fake.members(&name, INVOKER),
        ["serviceAccount:ops@acme.io".to_owned(), iap_agent()]
    );

    setup.deploy("r3", GOOD).await?;
    assert_eq!(status_for(&deployed.url, None).await?, StatusCode::OK);
    assert!(!flag(&setup.service()?, "iapEnabled"));
    assert!(
        setup
            .fake
            .members(&name, INVOKER)
            .contains(&"serviceAccount:ops@acme.io".to_owned())
    );
    Ok(())
}

/// Domain-restricted sharing refuses `allUsers`: the error says which setting to change, and
/// with `invoker-iam-disabled` the app is public all the same.
#[tokio::test]
async fn an_organization_that_forbids_all_users_gets_public_apps_through_the_invoker_switch()
-> anyhow::Result<()> {
    let setup = Setup::start().await?;
    setup.fake.forbid_public_members();

    let refused = setup.deploy("r1", GOOD).await.unwrap_err();
    let message = format!("{refused:#}");
    assert!(message.contains("invoker-iam-disabled"), "{message}");
    assert!(message.contains("organization"), "{message}");

    let platform = setup
        .platform_with(|config| config.public_access = PublicAccess::InvokerIamDisabled)
        .await?;
    let deployed = platform.deploy(spec("r2", GOOD, None)).await?;
    assert_eq!(status_for(&deployed.url, None).await?, StatusCode::OK);
    assert_eq!(setup.service()?["invokerIamDisabled"], true);
    Ok(())
}

fn spec_seq(release: &str, image: &str) -> DeploySpec {
    spec(release, image, None)
}

/// Two deploys of one app overlap (build events arrive in any order): release 2's operation
/// is still running when release 3's is done. However 2 ends, 3 serves and 2 stands aside.
#[tokio::test]
async fn an_older_release_that_finishes_last_never_replaces_a_newer_one() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    setup.deploy("r1", GOOD).await?;
    setup.fake.hold_next_patch();
    let platform = setup.platform.clone();
    let older = tokio::spawn(async move { platform.deploy(spec_seq("r2", BETTER)).await });
    let name = service_name(PROJECT, REGION, "hello");
    while setup.fake.revisions(&name).len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let newer = setup.deploy("r3", GOOD_TOO).await?;
    setup.fake.release_held();
    let older = older.await?;

    assert!(
        matches!(&older, Err(PlatformError::Superseded(m)) if m.contains("#3")),
        "{older:?}"
    );
    assert_eq!(
        serving(&newer).await?,
        (newer.revision.clone(), GOOD_TOO.into())
    );
    Ok(())
}

/// Release 2 read the service before release 3 wrote it, and writes after: Cloud Run refuses
/// the stale etag, and on reading again release 2 finds itself superseded and writes nothing.
#[tokio::test]
async fn a_write_based_on_a_stale_read_is_refused_and_not_repeated() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    setup.deploy("r1", GOOD).await?;
    let name = service_name(PROJECT, REGION, "hello");
    let stale = setup.service()?["etag"].clone();
    let newer = setup.deploy("r3", GOOD_TOO).await?;

    let refused = reqwest::Client::new()
        .patch(format!(
            "{}/v2/{name}?updateMask=template",
            setup.fake.endpoint()
        ))
        .json(&serde_json::json!({ "name": name, "etag": stale, "template": {} }))
        .send()
        .await?;
    assert_eq!(refused.status(), StatusCode::CONFLICT);

    let older = setup.deploy("r2", BETTER).await;
    assert!(
        matches!(&older, Err(PlatformError::Superseded(_))),
        "{older:?}"
    );
    assert_eq!(
        setup.fake.revisions(&name).len(),
        2,
        "release 2 made no revision"
    );
    assert_eq!(
        serving(&newer).await?,
        (newer.revision.clone(), GOOD_TOO.into())
    );
    Ok(())
}

/// A write that lost the etag race is retried from a fresh read.
#[tokio::test]
async fn an_aborted_write_is_read_again_and_retried() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    setup.deploy("r1", GOOD).await?;
    setup
        .fake
        .fail_next("PATCH", 409, "ABORTED", "The etag does not match.");

    let deployed = setup.deploy("r2", BETTER).await?;

    assert_eq!(
        serving(&deployed).await?,
        (deployed.revision.clone(), BETTER.into())
    );
    Ok(())
}
