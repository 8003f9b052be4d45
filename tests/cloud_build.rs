//! `CloudBuildBuilder` against the fake Cloud Build (tests/support/fake_cloud_build.rs),
//! fake-gcs-server and the Pub/Sub emulator, with a real local git repository as the forge; and
//! the `ImageBuilder` contract against both it and the embedded `UvBuilder`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use runway_core::domain::{AppName, BuildId, MainFile};
use runway_core::messages::{BuildNotification, CloudBuildStatus};
use runway_core::ports::{BuildError, BuildOrigin, BuildStatus, ImageBuilder};
use runway_gcp::{CloudBuildBuilder, PYTHON_BASE, SourceFiles, SourceLimits, generated_dockerfile};
use runway_tests::fake_cloud_build::{FakeCloudBuild, OnEmulators};
use runway_tests::image_builder_contract::{self as contract, GOOD_APP, MISSING_REQUIREMENT};
use runway_tests::{GitRepo, emulators};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

struct Cloud {
    fake: FakeCloudBuild,
    builder: CloudBuildBuilder,
    project: String,
    source_bucket: String,
    logs_bucket: String,
    image_repo: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn cloud() -> Cloud {
    cloud_taking(SourceLimits::default()).await
}

/// With the builder taking sources up to `limits`.
async fn cloud_taking(limits: SourceLimits) -> Cloud {
    let OnEmulators {
        fake,
        builder,
        project,
        source_bucket,
        logs_bucket,
        image_repo,
        ..
    } = OnEmulators::with_source_limits(limits).await;
    Cloud {
        fake,
        builder,
        project,
        source_bucket,
        logs_bucket,
        image_repo,
        http: reqwest::Client::new(),
        _dir: tempfile::tempdir().unwrap(),
    }
}

impl Cloud {
    fn repo(&self, name: &str, files: &[(&str, &str)]) -> GitRepo {
        let dir = self._dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        GitRepo::create(&dir, files).expect("a git repository")
    }

    /// A pull subscription on the project's `cloud-builds` topic.
    async fn subscribe(&self) -> Subscription {
        let name = format!(
            "{}/v1/projects/{}/subscriptions/builds-{}",
            emulators::pubsub(),
            self.project,
            uuid::Uuid::new_v4().simple()
        );
        let response = self
            .http
            .put(&name)
            .json(&json!({
                "topic": format!("projects/{}/topics/cloud-builds", self.project),
                "ackDeadlineSeconds": 10,
            }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        Subscription {
            url: name,
            http: self.http.clone(),
        }
    }

    /// Object names under `prefix` in `bucket`, straight from fake-gcs-server.
    async fn objects(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let body: Value = self
            .http
            .get(format!("{}/storage/v1/b/{bucket}/o", emulators::gcs()))
            .query(&[("prefix", prefix)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["name"].as_str().map(str::to_owned))
            .collect()
    }
}

struct Subscription {
    url: String,
    http: reqwest::Client,
}

/// A notification as it arrived: attributes, and the data decoded as the worker decodes it.
struct Received {
    attributes: BTreeMap<String, String>,
    notification: BuildNotification,
}

impl Subscription {
    /// Pulls (and acks) until `build_id` has a notification with a status in `until`, or
    /// `timeout` passes; returns that build's notifications in arrival order.
    async fn collect(&self, build_id: &str, until: &[&str], timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut received = Vec::new();
        loop {
            let body: Value = self
                .http
                .post(format!("{}:pull", self.url))
                .json(&json!({"maxMessages": 100, "returnImmediately": true}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let messages = body["receivedMessages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let acks: Vec<&str> = messages
                .iter()
                .filter_map(|m| m["ackId"].as_str())
                .collect();
            if !acks.is_empty() {
                self.http
                    .post(format!("{}:acknowledge", self.url))
                    .json(&json!({ "ackIds": acks }))
                    .send()
                    .await
                    .unwrap();
            }
            for message in &messages {
                let message = &message["message"];
                let attributes: BTreeMap<String, String> =
                    serde_json::from_value(message["attributes"].clone()).unwrap_or_default();
                let data = BASE64
                    .decode(message["data"].as_str().unwrap_or_default())
                    .expect("base64 data");
                let notification: BuildNotification = serde_json::from_slice(&data)
                    .expect("the worker's BuildNotification decodes it");
                if notification.id == build_id {
                    received.push(Received {
                        attributes,
                        notification,
                    });
                }
            }
            if received
                .iter()
                .any(|r| until.contains(&r.notification.status.as_str()))
                || Instant::now() > deadline
            {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn main_file() -> MainFile {
    MainFile::parse("app.py").unwrap()
}

#[tokio::test]
async fn a_repository_without_a_dockerfile_is_built_with_the_generated_one() {
    let cloud = cloud().await;
    let repo = cloud.repo("plain", GOOD_APP);
    let request = contract::request("plain", &repo);
    let release = request.release_id.clone();
    let commit = request.commit.to_string();

    let (started, image) = contract::builds_a_commit(&cloud.builder, request, WAIT).await;

    let id = &started.build_id;
    let dockerfile = cloud
        .fake
        .source_file(id, "Dockerfile")
        .expect("a Dockerfile");
    let expected = generated_dockerfile(
        &main_file(),
        &SourceFiles {
            requirements_txt: true,
            ..Default::default()
        },
    );
    assert_eq!(String::from_utf8(dockerfile).unwrap(), expected);
    assert_eq!(
        cloud.fake.source_paths(id),
        [".dockerignore", "Dockerfile", "app.py", "requirements.txt"]
    );
    // The image is named by digest, in the app's repository.
    let prefix = format!("{}/plain@sha256:", cloud.image_repo);
    let digest = image
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{image}"));
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    // What Cloud Build was asked to do.
    let build = cloud.fake.build(id).unwrap();
    assert_eq!(
        build["source"]["storageSource"]["object"],
        format!("sources/plain/{release}.tar.gz")
    );
    assert_eq!(
        build["source"]["storageSource"]["bucket"],
        cloud.source_bucket
    );
    let tagged = format!("{}/plain:{commit}", cloud.image_repo);
    assert_eq!(build["images"], json!([tagged]));
    // A first build has no image of its own to take a cache from.
    assert_eq!(build["steps"].as_array().unwrap().len(), 1);
    let args = &build["steps"][0]["args"];
    assert_eq!(args[0], "build");
    assert!(!args.to_string().contains("--cache-from"), "{args}");
    assert_eq!(
        build["tags"],
        json!([
            "runway",
            "app-plain",
            format!("release-{release}"),
            format!("commit-{commit}")
        ])
    );
    assert_eq!(build["logsBucket"], format!("gs://{}", cloud.logs_bucket));
    assert_eq!(build["timeout"], "1200s");
    assert_eq!(build["options"]["logging"], "GCS_ONLY");
    assert_eq!(started.log_url, build["logUrl"].as_str().unwrap());
    assert!(started.log_url.contains(id.as_str()));
    assert_eq!(
        build["name"],
        format!(
            "projects/{}/locations/europe-west1/builds/{id}",
            cloud.project
        )
    );
    // The regional endpoints, with enums as numbers, as the official client asks.
    let requests = cloud.fake.requests();
    let regional = format!(
        "/v1/projects/{}/locations/europe-west1/builds",
        cloud.project
    );
    assert!(
        requests[0].starts_with(&format!("POST {regional}?")),
        "{requests:?}"
    );
    assert!(
        requests[1].starts_with(&format!("GET {regional}/{id}?")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.contains("%24alt=json%3Benum-encoding%3Dint"))
    );
}

#[tokio::test]
async fn a_repository_with_its_own_dockerfile_keeps_it() {
    let cloud = cloud().await;
    let own = "FROM python:3.12-slim\nWORKDIR /srv\nCOPY . .\nRUN pip install streamlit\n\
               CMD streamlit run app.py --server.port=$PORT\n";
    let repo = cloud.repo(
        "own",
        &[("app.py", "import streamlit\n"), ("Dockerfile", own)],
    );

    let (started, _) =
        contract::builds_a_commit(&cloud.builder, contract::request("own", &repo), WAIT).await;

    let id = &started.build_id;
    assert_eq!(
        cloud.fake.source_file(id, "Dockerfile").unwrap(),
        own.as_bytes()
    );
    assert_eq!(cloud.fake.source_paths(id), ["Dockerfile", "app.py"]);
}

#[tokio::test]
async fn a_dockerfile_that_runs_a_missing_main_file_fails_the_build() {
    let cloud = cloud().await;
    let own = "FROM python:3.12-slim\nWORKDIR /srv\nCOPY . .\nCMD streamlit run main.py\n";
    let repo = cloud.repo(
        "typo",
        &[("app.py", "import streamlit\n"), ("Dockerfile", own)],
    );
    let started = cloud
        .builder
        .start(contract::request("typo", &repo))
        .await
        .unwrap();

    let status = contract::wait_for_end(&cloud.builder, &started.build_id, WAIT).await;

    assert!(
        matches!(&status, BuildStatus::Failed { status, .. } if status == "FAILURE"),
        "{status:?}"
    );
    let log = cloud.builder.log(&started.build_id).await.unwrap();
    assert!(log.contains("main.py is not in the source"), "{log}");
}

#[tokio::test]
async fn start_returns_at_once_and_cloud_builds_announces_each_status() {
    let cloud = cloud().await;
    let subscription = cloud.subscribe().await;
    cloud.fake.set_build_duration(Duration::from_secs(2));
    let repo = cloud.repo("announced", GOOD_APP);
    let request = contract::request("announced", &repo);
    let release = request.release_id.clone();

    let started = cloud.builder.start(request).await.unwrap();

    assert_eq!(
        cloud.builder.status(&started.build_id).await.unwrap(),
        BuildStatus::Running
    );
    let received = subscription
        .collect(&started.build_id, &["SUCCESS"], WAIT)
        .await;
    // Published in this order; Pub/Sub (like the worker) does not promise to keep it.
    let mut statuses: Vec<&str> = received
        .iter()
        .map(|r| r.notification.status.as_str())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["QUEUED", "SUCCESS", "WORKING"]);
    for r in &received {
        assert_eq!(r.attributes["buildId"], started.build_id);
        assert_eq!(r.attributes["status"], r.notification.status.as_str());
        assert_eq!(r.notification.release_id().as_ref(), Some(&release));
        assert_eq!(
            r.notification.log_url.as_deref(),
            Some(started.log_url.as_str())
        );
    }
    let done = &received
        .iter()
        .find(|r| r.notification.status == CloudBuildStatus::Success)
        .unwrap()
        .notification;
    assert!(done.is_finished());
    let images = &done.results.as_ref().expect("results").images;
    assert_eq!(images.len(), 1);
    assert!(images[0].digest.starts_with("sha256:"));
    let BuildStatus::Succeeded { image } = cloud.builder.status(&started.build_id).await.unwrap()
    else {
        panic!("not succeeded");
    };
    assert_eq!(
        image,
        format!("{}/announced@{}", cloud.image_repo, images[0].digest)
    );
}

#[tokio::test]
async fn a_failing_build_is_failed_with_its_reason_and_the_end_of_its_log() {
    let cloud = cloud().await;
    let subscription = cloud.subscribe().await;
    cloud
        .fake
        .fail_when_file_contains("requirements.txt", MISSING_REQUIREMENT);
    let files = contract::failing_app();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = cloud.repo("broken", &files);

    let (started, detail, log) =
        contract::reports_a_failed_build(&cloud.builder, contract::request("broken", &repo), WAIT)
            .await;

    assert!(detail.contains("build step 0"), "{detail}");
    assert!(log.contains(MISSING_REQUIREMENT), "{log}");
    let tail = cloud.builder.log_tail(&started.build_id, 2).await.unwrap();
    assert_eq!(
        tail.lines().last(),
        Some(
            "ERROR: build step 0 \"gcr.io/cloud-builders/docker\" failed: step exited with \
             non-zero status: 1"
        )
    );
    let received = subscription
        .collect(&started.build_id, &["FAILURE"], WAIT)
        .await;
    let last = &received.last().expect("notifications").notification;
    assert_eq!(last.status, CloudBuildStatus::Failure);
    assert_eq!(last.status_detail.as_deref(), Some(detail.as_str()));
    assert_eq!(
        last.failure_info.as_ref().map(|f| f.kind.as_str()),
        Some("USER_BUILD_STEP")
    );
}

#[tokio::test]
async fn the_operation_create_answered_with_ends_with_the_build() {
    let cloud = cloud().await;
    let repo = cloud.repo("operated", GOOD_APP);
    let (started, _) =
        contract::builds_a_commit(&cloud.builder, contract::request("operated", &repo), WAIT).await;
    let name = cloud.fake.operation_name(&started.build_id).unwrap();

    let operation: Value = cloud
        .http
        .get(format!("{}/v1/{name}", cloud.fake.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert!(name.starts_with(&format!(
        "projects/{}/locations/europe-west1/operations/",
        cloud.project
    )));
    assert_eq!(operation["done"], true);
    assert_eq!(
        operation["metadata"]["@type"],
        "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata"
    );
    assert_eq!(
        operation["metadata"]["build"]["id"],
        started.build_id.as_str()
    );
    assert_eq!(
        operation["response"]["@type"],
        "type.googleapis.com/google.devtools.cloudbuild.v1.Build"
    );
    assert_eq!(operation["response"]["status"], "SUCCESS");
}

#[tokio::test]
async fn a_missing_main_file_stops_the_build_before_it_starts() {
    let cloud = cloud().await;
    let repo = cloud.repo("nomain", &[("other.py", "print()\n")]);

    let error = cloud
        .builder
        .start(contract::request("nomain", &repo))
        .await
        .unwrap_err();

    let BuildError::NotFound(message) = error else {
        panic!("{error:?}");
    };
    assert!(
        message.contains("the main file app.py is not in commit"),
        "{message}"
    );
    assert!(cloud.fake.build_ids().is_empty());
    // The source streamed out was aborted, not committed half-way.
    let sources = cloud.objects(&cloud.source_bucket, "sources/").await;
    assert!(sources.is_empty(), "{sources:?}");
}

/// The Python an app asks for picks the generated Dockerfile's pinned base image; a version with
/// no pinned image stops the build before anything is uploaded, saying which versions there are.
#[tokio::test]
async fn the_python_an_app_asks_for_picks_its_pinned_base_image_or_stops_the_build() {
    let cloud = cloud().await;
    let mut files = GOOD_APP.to_vec();
    files.push(("runtime.txt", "python-3.12.4\n"));
    let pinned = cloud.repo("pinned", &files);
    let (started, _) =
        contract::builds_a_commit(&cloud.builder, contract::request("pinned", &pinned), WAIT).await;
    let dockerfile = cloud
        .fake
        .source_file(&started.build_id, "Dockerfile")
        .expect("a Dockerfile");
    let dockerfile = String::from_utf8(dockerfile).unwrap();
    assert!(
        dockerfile.contains(&format!("\nFROM {PYTHON_BASE}\n")),
        "{dockerfile}"
    );

    let mut files = GOOD_APP.to_vec();
    files.push((".python-version", "3.11\n"));
    let other = cloud.repo("other", &files);
    let builds_before = cloud.fake.build_ids().len();
    let error = cloud
        .builder
        .start(contract::request("other", &other))
        .await
        .unwrap_err();

    let message = error.to_string();
    assert!(
        message.contains("asks for Python 3.11 (.python-version)")
            && message.contains("pin Python 3.12"),
        "{message}"
    );
    assert_eq!(cloud.fake.build_ids().len(), builds_before);
}

/// Text that does not compress much: a repository's data files, as far as gzip can tell.
fn noise(len: usize) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect()
}

#[tokio::test]
async fn a_source_past_the_limit_fails_naming_the_limit_and_uploads_nothing() {
    let cloud = cloud_taking(SourceLimits { max_bytes: 1 << 20 }).await;
    let data = noise(3 << 20);
    let repo = cloud.repo(
        "big",
        &[("app.py", "import streamlit\n"), ("data.csv", &data)],
    );

    let error = cloud
        .builder
        .start(contract::request("big", &repo))
        .await
        .unwrap_err();

    let BuildError::Other(error) = error else {
        panic!("{error:?}");
    };
    let message = format!("{error:#}");
    assert!(message.contains("larger than 1 MiB"), "{message}");
    assert!(message.contains("RUNWAY_MAX_SOURCE_MB"), "{message}");
    assert!(cloud.fake.build_ids().is_empty());
    let sources = cloud.objects(&cloud.source_bucket, "").await;
    assert!(sources.is_empty(), "{sources:?}");
}

#[tokio::test]
async fn a_big_repository_streams_to_storage_in_chunks_and_builds_whole() {
    let cloud = cloud().await;
    // Past the client's 16 MiB single-shot threshold: a resumable upload of several chunks.
    let data = noise(24 << 20);
    let mut files = GOOD_APP.to_vec();
    files.push(("data/big.csv", &data));
    let repo = cloud.repo("big", &files);

    let (started, _) =
        contract::builds_a_commit(&cloud.builder, contract::request("big", &repo), WAIT).await;

    let id = started.build_id.as_str();
    let unpacked = cloud
        .fake
        .source_file(id, "data/big.csv")
        .expect("the data");
    assert!(unpacked == data.as_bytes(), "the data arrived changed");
    assert!(cloud.fake.source_file(id, "Dockerfile").is_some());
}

#[tokio::test]
async fn without_the_final_notification_status_still_tells_the_end() {
    let cloud = cloud().await;
    let subscription = cloud.subscribe().await;
    cloud.fake.drop_final_notification(true);
    let repo = cloud.repo("quiet", GOOD_APP);

    let (started, _) =
        contract::builds_a_commit(&cloud.builder, contract::request("quiet", &repo), WAIT).await;

    let received = subscription
        .collect(&started.build_id, &["SUCCESS"], Duration::from_secs(2))
        .await;
    let mut statuses: Vec<&str> = received
        .iter()
        .map(|r| r.notification.status.as_str())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["QUEUED", "WORKING"]);
}

#[tokio::test]
async fn a_second_build_pulls_the_first_image_as_its_cache() {
    let cloud = cloud().await;
    let repo = cloud.repo("cached", GOOD_APP);
    let (first, first_image) =
        contract::builds_a_commit(&cloud.builder, contract::request("cached", &repo), WAIT).await;
    repo.commit(
        &[("app.py", "import streamlit as st\nst.write(2)\n")],
        "two",
    )
    .unwrap();
    repo.push("main").unwrap();

    let mut request = contract::request("cached", &repo);
    request.cache_from = Some(first_image.clone());
    let (second, _) = contract::builds_a_commit(&cloud.builder, request, WAIT).await;

    let first_log = cloud.builder.log(&first.build_id).await.unwrap();
    let second_log = cloud.builder.log(&second.build_id).await.unwrap();
    assert!(!first_log.contains("docker pull"), "{first_log}");
    assert!(
        second_log.contains(&format!("Status: Downloaded newer image for {first_image}")),
        "{second_log}"
    );
    assert!(
        second_log.contains(&format!("importing cache manifest from {first_image}")),
        "{second_log}"
    );
    // Another app's image is never a cache, even when asked for.
    let mut request = contract::request("cached", &repo);
    request.cache_from = Some(first_image.replace("/cached@", "/other@"));
    let (third, _) = contract::builds_a_commit(&cloud.builder, request, WAIT).await;
    assert_eq!(cloud.fake.cache_of(third.build_id.as_str()), None);
}

/// Every app's build runs as one account that may push anywhere in the apps' repository, so a
/// hostile Dockerfile of one app can push under another's name. Nothing an app runs or builds
/// from may then come from a tag: its layer cache is its own last image, by digest.
#[tokio::test]
async fn another_apps_build_cannot_plant_layers_in_an_apps_next_build() {
    let cloud = cloud().await;
    let repo = cloud.repo("victim", GOOD_APP);
    let (_, first_image) =
        contract::builds_a_commit(&cloud.builder, contract::request("victim", &repo), WAIT).await;
    let (_, first_digest) = first_image.split_once('@').expect("an image by digest");
    // Whatever tag Runway's builds use, the other app's build overwrites it.
    let package = format!("{}/victim", cloud.image_repo);
    let mut planted = Vec::new();
    for tag in cloud.fake.pushed_images() {
        planted.push(cloud.fake.push_from_another_build(&tag));
    }
    planted.push(
        cloud
            .fake
            .push_from_another_build(&format!("{package}:latest")),
    );
    repo.commit(
        &[("app.py", "import streamlit as st\nst.write(2)\n")],
        "two",
    )
    .unwrap();
    repo.push("main").unwrap();

    let mut request = contract::request("victim", &repo);
    request.cache_from = Some(first_image.clone());
    let (second, _) = contract::builds_a_commit(&cloud.builder, request, WAIT).await;

    let cache = cloud.fake.cache_of(second.build_id.as_str());
    assert_eq!(
        cache.as_deref(),
        Some(first_digest),
        "the second build's cache came from {cache:?}; planted: {planted:?}"
    );
}

#[tokio::test]
async fn delete_app_removes_the_apps_sources_and_logs() {
    let cloud = cloud().await;
    let gone_repo = cloud.repo("gone", GOOD_APP);
    let kept_repo = cloud.repo("kept", GOOD_APP);
    let (gone, _) =
        contract::builds_a_commit(&cloud.builder, contract::request("gone", &gone_repo), WAIT)
            .await;
    let (kept, _) =
        contract::builds_a_commit(&cloud.builder, contract::request("kept", &kept_repo), WAIT)
            .await;
    assert_eq!(
        cloud
            .objects(&cloud.source_bucket, "sources/gone/")
            .await
            .len(),
        1
    );

    contract::delete_app_forgets_only_that_app(
        &cloud.builder,
        &AppName::parse("gone").unwrap(),
        &gone.build_id,
        &kept.build_id,
    )
    .await;

    assert!(
        cloud
            .objects(&cloud.source_bucket, "sources/gone/")
            .await
            .is_empty()
    );
    assert_eq!(
        cloud
            .objects(&cloud.source_bucket, "sources/kept/")
            .await
            .len(),
        1
    );
    assert_eq!(
        cloud.objects(&cloud.logs_bucket, "log-").await,
        [format!("log-{}.txt", kept.build_id)]
    );
}

#[tokio::test]
async fn builds_it_never_made_are_lost_and_odd_ids_are_refused() {
    let cloud = cloud().await;

    contract::knows_nothing_of_other_builds(&cloud.builder).await;

    assert!(matches!(
        cloud
            .builder
            .status(&BuildId::new("../../operations/x"))
            .await,
        Err(BuildError::NotFound(_))
    ));
}

/// A build's end must find its release even when the worker that started the build died
/// before recording it. The builder vouches for a build it started as Runway's own build
/// account, with the release and commit it was started for; never for one made by another
/// account with the same tags, nor with no account configured.
#[tokio::test]
async fn it_vouches_only_for_builds_made_as_runways_build_account() {
    let on = OnEmulators::start().await;
    let account = |name: &str| {
        format!(
            "projects/{0}/serviceAccounts/{name}@{0}.iam.gserviceaccount.com",
            on.project
        )
    };
    let runway = on.builder_as(&account("runway-app-build")).await;
    let someone = on.builder_as(&account("someone")).await;
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path(), GOOD_APP).unwrap();
    let request = contract::request("vouched", &repo);

    let ours = runway.start(request.clone()).await.unwrap();
    let theirs = someone.start(request.clone()).await.unwrap();

    let origin = BuildOrigin {
        release_id: request.release_id.clone(),
        commit: request.commit.clone(),
    };
    assert_eq!(runway.origin(&ours.build_id).await.unwrap(), Some(origin));
    assert_eq!(runway.origin(&theirs.build_id).await.unwrap(), None);
    assert_eq!(on.builder.origin(&ours.build_id).await.unwrap(), None);
    let unknown = BuildId::new("00000000-0000-0000-0000-000000000000");
    assert_eq!(runway.origin(&unknown).await.unwrap(), None);
}
