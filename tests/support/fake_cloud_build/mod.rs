//! A fake Cloud Build, because Cloud Build has no emulator. `rest` is its REST surface (the
//! endpoints, their shapes and enum encoding); `builds` is what it simulates (running a build's
//! steps without Docker, its log, its notifications); this module holds the state they share
//! and the handle tests drive it with.
//!
//! It serves the REST endpoints the official `google-cloud-build-v1` client calls, in the shapes
//! the Cloud Build v1 reference documents, field by field: `projects.builds.create` and
//! `projects.locations.builds.create` (an `Operation` whose `metadata` is a
//! `type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata` naming the build),
//! `builds.get`, `builds.list` (filter `tags="…"` only) and `operations.get`. A `Build` carries
//! `name`, `id`, `projectId`, `status`, `statusDetail`, `source.storageSource`,
//! `sourceProvenance`, `steps` (with their status), `results.images[{name, digest}]`,
//! `createTime`/`startTime`/`finishTime`, `timeout`, `queueTtl`, `images`, `logsBucket`,
//! `options`, `logUrl`, `tags`, `serviceAccount` and `failureInfo`. Like the real service it
//! honours the client's `$alt=json;enum-encoding=int` (enums as numbers) and speaks string enums
//! everywhere else.
//!
//! What it does instead of running Docker, honestly: it downloads the source object from
//! fake-gcs-server, unpacks it, runs only `gcr.io/cloud-builders/docker` steps (a `docker pull`
//! finds an image only if an earlier build of this fake pushed it; `docker build` checks the
//! Dockerfile has a `FROM`, that its `COPY`/`ADD` sources are in the context and that the main
//! file its `streamlit run` names exists), fails when a knob says so, writes
//! `log-{id}.txt` to the logs bucket in Cloud Build's log layout, "pushes" `images` with the
//! digest `sha256:` + the hex SHA-256 of the source tarball, and publishes QUEUED → WORKING →
//! SUCCESS/FAILURE to the Pub/Sub emulator's `cloud-builds` topic exactly as Cloud Build does
//! (`data` = base64 of the Build JSON, attributes `buildId` and `status`).
//!
//! It also stands in for the registry those images go to, as far as Runway can observe it: tags
//! name digests, a push moves its tag, a reference by digest finds exactly that manifest, and
//! `docker build --cache-from REF` seeds its layers from whatever REF names *when the step runs*
//! ([`FakeCloudBuild::cache_of`]). Every app build runs as one account with write access to the
//! whole apps repository, so any build's steps can push under any app's name:
//! [`FakeCloudBuild::push_from_another_build`] is that. And it serves the one Artifact Registry
//! call Runway makes: `projects.locations.repositories.packages.delete` (`DELETE /v1/projects/P/
//! locations/L/repositories/R/packages/PKG`, an `Operation` with an `Empty` response; NOT_FOUND
//! for a package with no images), after which `docker pull` of its images fails.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::extract::{Path, State as Shared};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{SecondsFormat, Utc};
use http::StatusCode;
use runway_http::{ApiResult, Request, Router, json, read_body, serve_router};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const METADATA_TYPE: &str =
    "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata";
const BUILD_TYPE: &str = "type.googleapis.com/google.devtools.cloudbuild.v1.Build";
const DOCKER: &str = "gcr.io/cloud-builders/docker";
/// The fake project's number, as logUrl and the default service account show it.
const PROJECT_NUMBER: &str = "123456789012";

/// A running fake, stopped when dropped.
pub struct FakeCloudBuild {
    url: String,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
}

struct State {
    project: String,
    gcs: String,
    pubsub: String,
    http: reqwest::Client,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    builds: BTreeMap<String, Record>,
    /// `METHOD path?query` of every request, in order.
    requests: Vec<String>,
    /// What builds pushed.
    registry: Registry,
    failures: Vec<(String, String)>,
    drop_final_notification: bool,
    duration: Duration,
    next: u64,
    /// How the next `builds.create` calls fail, in order.
    create_faults: std::collections::VecDeque<CreateFault>,
}

/// How a `builds.create` goes wrong, as Cloud Build's own do.
#[derive(Clone, Copy, Debug)]
pub enum CreateFault {
    /// Refused before anything is made, with this HTTP status and Google status
    /// (`429 RESOURCE_EXHAUSTED`: the project's build quota; `503 UNAVAILABLE`).
    Refused(u16, &'static str),
    /// The build is made and runs, but the answer is lost (a 500 on the way back, a timeout):
    /// the caller cannot tell it from a refusal, and asking again makes a second build.
    AnswerLost,
}

struct Record {
    /// The Build resource, enums as strings.
    build: Value,
    operation: String,
    /// What was built: the unpacked source, path → bytes.
    files: BTreeMap<String, Vec<u8>>,
    /// The digest the `docker build` step's `--cache-from` named when it ran.
    cache: Option<String>,
}

/// The apps' Docker repository as builds see it.
#[derive(Default)]
struct Registry {
    /// `name:tag` → the digest it names now.
    tags: BTreeMap<String, String>,
    /// `name@digest` of every manifest pushed (a moved tag leaves its old one behind).
    manifests: BTreeSet<String>,
}

impl Registry {
    fn push(&mut self, name_and_tag: &str, digest: &str) {
        let (name, _) = split_reference(name_and_tag);
        self.tags.insert(name_and_tag.to_owned(), digest.to_owned());
        self.manifests.insert(format!("{name}@{digest}"));
    }

    /// The digest `reference` names: `name@sha256:…` if that manifest is there, `name:tag`
    /// (or a bare name, `:latest`) through its tag.
    fn resolve(&self, reference: &str) -> Option<String> {
        match reference.split_once('@') {
            Some((_, digest)) => self
                .manifests
                .contains(reference)
                .then(|| digest.to_owned()),
            None => {
                let (name, tag) = split_reference(reference);
                self.tags.get(&format!("{name}:{tag}")).cloned()
            }
        }
    }

    /// Removes every tag and manifest of the package `name`; how many there were.
    fn delete_package(&mut self, name: &str) -> usize {
        let of_package = |reference: &String| split_reference(reference).0 != name;
        let before = self.tags.len() + self.manifests.len();
        self.tags.retain(|reference, _| of_package(reference));
        self.manifests.retain(of_package);
        before - self.tags.len() - self.manifests.len()
    }
}

/// `(name, tag)` of `name:tag`, `name@digest` (tag empty) or a bare name (tag `latest`). A
/// registry host may carry a port, so only a colon after the last slash starts a tag.
fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((name, _)) = reference.split_once('@') {
        return (name, "");
    }
    let slash = reference.rfind('/').map_or(0, |at| at + 1);
    match reference[slash..].rfind(':') {
        Some(at) => (&reference[..slash + at], &reference[slash + at + 1..]),
        None => (reference, "latest"),
    }
}

/// Why a step failed: the log's last words and the build's statusDetail.
struct StepFailure {
    log: Vec<String>,
    status: &'static str,
    /// `failureInfo.type`.
    kind: &'static str,
}

impl FakeCloudBuild {
    /// Serves on 127.0.0.1 for `project`, whose `cloud-builds` topic it creates on the Pub/Sub
    /// emulator at `pubsub`; sources and logs live on fake-gcs-server at `gcs`.
    pub async fn start(project: &str, gcs: &str, pubsub: &str) -> anyhow::Result<Self> {
        let state = Arc::new(State {
            project: project.to_owned(),
            gcs: gcs.trim_end_matches('/').to_owned(),
            pubsub: pubsub.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            inner: Mutex::new(Inner {
                duration: Duration::from_millis(100),
                ..Default::default()
            }),
        });
        let topic = format!("{}/v1/projects/{project}/topics/cloud-builds", state.pubsub);
        let response = state.http.put(&topic).json(&json!({})).send().await?;
        if !response.status().is_success() && response.status() != StatusCode::CONFLICT {
            bail!(
                "creating {topic}: {} {}",
                response.status(),
                response.text().await?
            );
        }
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(serve_router(router(state.clone()), listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            url,
            state,
            stop: Some(stop),
        })
    }

    /// The endpoint to give the client (`with_endpoint`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Builds whose source has `needle` in the file at `path` fail in the `docker build` step,
    /// the way a bad requirement fails a real one.
    pub fn fail_when_file_contains(&self, path: &str, needle: &str) {
        self.inner()
            .failures
            .push((path.to_owned(), needle.to_owned()));
    }

    /// The next `builds.create` calls fail as `faults` say, one each.
    pub fn fail_creates(&self, faults: &[CreateFault]) {
        self.inner().create_faults.extend(faults.iter().copied());
    }

    /// Publishes no notification for the build's end (cleanup's poll fallback has to notice).
    pub fn drop_final_notification(&self, drop: bool) {
        self.inner().drop_final_notification = drop;
    }

    /// How long a build stays WORKING (100 ms unless set).
    pub fn set_build_duration(&self, duration: Duration) {
        self.inner().duration = duration;
    }

    /// The Build resource as the REST API shows it (string enums).
    pub fn build(&self, id: &str) -> Option<Value> {
        self.inner()
            .builds
            .get(id)
            .map(|record| record.build.clone())
    }

    /// Every tag a build pushed that is still in the registry (`name:tag`), sorted.
    pub fn pushed_images(&self) -> Vec<String> {
        self.inner().registry.tags.keys().cloned().collect()
    }

    /// What another app's build can do with the apps' shared build account: push an image of
    /// its own making under `name:tag`, whoever's name it is. Returns its digest.
    pub fn push_from_another_build(&self, name_and_tag: &str) -> String {
        let digest = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("planted as {name_and_tag}")))
        );
        self.inner().registry.push(name_and_tag, &digest);
        digest
    }

    /// The digest build `id` took its layer cache from (`docker build --cache-from`), if the
    /// reference it named was in the registry when its build step ran.
    pub fn cache_of(&self, id: &str) -> Option<String> {
        self.inner().builds.get(id)?.cache.clone()
    }

    /// Every request the client sent, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.inner().requests.clone()
    }

    /// The name of the long-running operation `create` answered for the build.
    pub fn operation_name(&self, id: &str) -> Option<String> {
        Some(self.inner().builds.get(id)?.operation.clone())
    }

    /// The ids of every build created so far.
    pub fn build_ids(&self) -> Vec<String> {
        self.inner().builds.keys().cloned().collect()
    }

    /// A file of the source the build used, once it has fetched it.
    pub fn source_file(&self, id: &str, path: &str) -> Option<Vec<u8>> {
        self.inner().builds.get(id)?.files.get(path).cloned()
    }

    /// Every file path of the source the build used.
    pub fn source_paths(&self, id: &str) -> Vec<String> {
        self.inner()
            .builds
            .get(id)
            .map(|record| record.files.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().expect("fake state")
    }
}

impl Drop for FakeCloudBuild {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

mod builds;
mod rest;

use builds::*;
use rest::*;

impl State {
    fn update(&self, id: &str, change: impl FnOnce(&mut Record)) -> Value {
        let mut inner = self.inner.lock().expect("fake state");
        let record = inner.builds.get_mut(id).expect("a build this fake made");
        change(record);
        record.build.clone()
    }

    /// Publishes the build as Cloud Build does on each status change.
    async fn notify(&self, build: &Value) {
        let data = serde_json::to_vec(build).expect("JSON");
        let body = json!({"messages": [{
            "data": BASE64.encode(data),
            "attributes": {
                "buildId": build["id"],
                "status": build["status"],
            },
        }]});
        let url = format!(
            "{}/v1/projects/{}/topics/cloud-builds:publish",
            self.pubsub, self.project
        );
        match self.http.post(&url).json(&body).send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => eprintln!("fake cloud build: publish answered {}", response.status()),
            Err(error) => eprintln!("fake cloud build: publish failed: {error}"),
        }
    }

    async fn download(
        &self,
        bucket: &str,
        object: &str,
        generation: Option<&str>,
    ) -> anyhow::Result<Vec<u8>> {
        let mut url = url::Url::parse(&self.gcs)?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("bad GCS URL"))?
            .pop_if_empty()
            .extend(["storage", "v1", "b", bucket, "o", object]);
        url.query_pairs_mut().append_pair("alt", "media");
        if let Some(generation) = generation {
            url.query_pairs_mut().append_pair("generation", generation);
        }
        let response = self.http.get(url).send().await?;
        if !response.status().is_success() {
            bail!("{}", response.status());
        }
        Ok(response.bytes().await?.to_vec())
    }

    async fn upload_log(&self, bucket: &str, id: &str, log: &[String]) {
        let mut url = match url::Url::parse(&self.gcs) {
            Ok(url) => url,
            Err(_) => return,
        };
        url.set_path("/upload/storage/v1/b/");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([bucket, "o"]);
        }
        url.query_pairs_mut()
            .append_pair("uploadType", "media")
            .append_pair("name", &format!("log-{id}.txt"));
        let mut text = log.join("\n");
        text.push('\n');
        match self
            .http
            .post(url)
            .header("content-type", "text/plain; charset=utf-8")
            .body(text)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => eprintln!(
                "fake cloud build: log upload answered {}",
                response.status()
            ),
            Err(error) => eprintln!("fake cloud build: log upload failed: {error}"),
        }
    }
}

/// The fake Cloud Build and a `CloudBuildBuilder` pointed at it, with a fresh project's
/// buckets on fake-gcs-server and its `cloud-builds` topic on the Pub/Sub emulator.
pub struct OnEmulators {
    pub fake: FakeCloudBuild,
    pub builder: runway_gcp::CloudBuildBuilder,
    pub project: String,
    pub source_bucket: String,
    pub logs_bucket: String,
    pub image_repo: String,
    /// What `builder` was made with.
    pub config: runway_gcp::CloudBuildConfig,
}

impl OnEmulators {
    /// Another builder on the same fake and buckets, running its builds as `service_account`.
    pub async fn builder_as(&self, service_account: &str) -> runway_gcp::CloudBuildBuilder {
        let config = runway_gcp::CloudBuildConfig {
            service_account: Some(service_account.to_owned()),
            ..self.config.clone()
        };
        runway_gcp::CloudBuildBuilder::new(
            config,
            Arc::new(runway_embedded::GitForge::new("/usr/bin/true".into())),
        )
        .await
        .expect("the builder's clients")
    }

    pub async fn start() -> Self {
        Self::with_source_limits(runway_gcp::SourceLimits::default()).await
    }

    /// With the builder taking sources up to `source_limits` (`RUNWAY_MAX_SOURCE_MB`).
    pub async fn with_source_limits(source_limits: runway_gcp::SourceLimits) -> Self {
        use crate::emulators;
        let project = emulators::unique_project();
        let source_bucket = format!("{project}-sources");
        let logs_bucket = format!("{project}-logs");
        emulators::create_bucket(&project, &source_bucket).await;
        emulators::create_bucket(&project, &logs_bucket).await;
        let fake = FakeCloudBuild::start(&project, &emulators::gcs(), &emulators::pubsub())
            .await
            .expect("the fake Cloud Build starts");
        let image_repo = format!("europe-west1-docker.pkg.dev/{project}/runway-apps");
        let config = runway_gcp::CloudBuildConfig {
            project: project.clone(),
            location: "europe-west1".into(),
            source_bucket: source_bucket.clone(),
            image_repo: image_repo.clone(),
            logs_bucket: logs_bucket.clone(),
            service_account: None,
            build_endpoint: Some(fake.url().to_owned()),
            registry_endpoint: Some(fake.url().to_owned()),
            storage_endpoint: Some(emulators::gcs()),
            anonymous: true,
            timeout: Duration::from_secs(1200),
            source_limits,
        };
        let builder = runway_gcp::CloudBuildBuilder::new(
            config.clone(),
            Arc::new(runway_embedded::GitForge::new("/usr/bin/true".into())),
        )
        .await
        .expect("the builder's clients");
        Self {
            fake,
            builder,
            project,
            source_bucket,
            logs_bucket,
            image_repo,
            config,
        }
    }
}
