//! `ImageBuilder` on Cloud Build: the commit's tree (plus the generated Dockerfile when it has
//! none) goes to Cloud Storage as a tarball, and a build made of `docker` steps turns it into an
//! image in Artifact Registry, tagged by commit. Runway reads no tag back: it deploys the digest
//! Cloud Build reports for the build, and the next build takes its layer cache from that digest
//! ([`BuildRequest::cache_from`]), because every app's build may push any tag.
//! `start` returns as soon as Cloud Build accepted the build; Cloud Build itself announces the
//! end on the `cloud-builds` topic, and `status` is the poll fallback.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use google_cloud_artifactregistry_v1::client::ArtifactRegistry;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_build_v1::client::CloudBuild;
use google_cloud_build_v1::model::{
    Build, BuildOperationMetadata, BuildOptions, BuildStep, Source, StorageSource, build,
    build_options,
};
use google_cloud_gax::error::rpc::Code;
use google_cloud_lro::Poller;
use google_cloud_storage::client::Storage;
use google_cloud_storage::model_ext::ReadRange;
use google_cloud_storage::streaming_source::StreamingSource;
use runway_archive::{Limits as SourceLimits, Repacker, TooLarge, Unreadable};
use serde::Deserialize;

use super::dockerfile::{GENERATED_DOCKERIGNORE, SourceFiles, generated_dockerfile};
use super::{has_code, is_transient};
use runway_core::domain::{AppName, BuildId, CommitSha, MainFile};
use runway_core::messages::untagged;
use runway_core::ports::{
    BuildError, BuildOrigin, BuildRequest, BuildStatus, Forge, ForgeError, ImageBuilder,
    StartedBuild,
};

const DOCKER: &str = "gcr.io/cloud-builders/docker";
/// The tag naming the commit a build was started for (`commit-SHA`, within Cloud Build's tag
/// pattern `^[\w][\w.-]{0,127}$`).
const COMMIT_TAG: &str = "commit-";
const STORAGE_ENDPOINT: &str = "https://storage.googleapis.com";

#[derive(Clone, Debug)]
pub struct CloudBuildConfig {
    /// The project builds run in (and whose `cloud-builds` topic announces them).
    pub project: String,
    /// The region builds run in, e.g. `europe-west1`.
    pub location: String,
    /// Bucket (name only) for source tarballs: `sources/{app}/{release}.tar.gz`.
    pub source_bucket: String,
    /// Where images go, e.g. `europe-west1-docker.pkg.dev/PROJECT/runway-apps`; an app's image
    /// is `{image_repo}/{app}`.
    pub image_repo: String,
    /// Bucket (name only) Cloud Build writes `log-{build id}.txt` to.
    pub logs_bucket: String,
    /// The service account builds run as (`projects/P/serviceAccounts/EMAIL`); Cloud Build's
    /// default when unset.
    pub service_account: Option<String>,
    /// Cloud Build API endpoint; Google's when unset (tests point it at a fake).
    pub build_endpoint: Option<String>,
    /// Artifact Registry API endpoint; Google's when unset.
    pub registry_endpoint: Option<String>,
    /// Cloud Storage endpoint; Google's when unset (tests point it at fake-gcs-server).
    pub storage_endpoint: Option<String>,
    /// No credentials at all: for emulators and fakes only.
    pub anonymous: bool,
    /// How long a build may run before Cloud Build stops it (TIMEOUT).
    pub timeout: Duration,
    /// How large a commit's source may be, packed and unpacked (`RUNWAY_MAX_SOURCE_MB`).
    pub source_limits: SourceLimits,
}

/// `delete_app` deletes the app's sources, build logs and images (its Artifact Registry package,
/// every version and tag): a re-created app of the same name starts with no layer cache of the
/// old one. Artifact Registry's cleanup policies keep the live apps' repositories small.
#[derive(Clone)]
pub struct CloudBuildBuilder {
    config: Arc<CloudBuildConfig>,
    forge: Arc<dyn Forge>,
    builds: CloudBuild,
    storage: Storage,
    registry: ArtifactRegistry,
    credentials: Credentials,
    http: reqwest::Client,
}

impl CloudBuildBuilder {
    /// Builds the Cloud Build and Cloud Storage clients once, for the life of the process.
    pub async fn new(config: CloudBuildConfig, forge: Arc<dyn Forge>) -> Result<Self, BuildError> {
        let credentials = if config.anonymous {
            google_cloud_auth::credentials::anonymous::Builder::new().build()
        } else {
            google_cloud_auth::credentials::Builder::default()
                .build()
                .context("loading Google credentials (Application Default Credentials)")?
        };
        let mut builds = CloudBuild::builder().with_credentials(credentials.clone());
        if let Some(endpoint) = &config.build_endpoint {
            builds = builds.with_endpoint(endpoint);
        }
        let builds = builds
            .build()
            .await
            .context("creating the Cloud Build client")?;
        let mut storage = Storage::builder().with_credentials(credentials.clone());
        if let Some(endpoint) = &config.storage_endpoint {
            storage = storage.with_endpoint(endpoint);
        }
        let storage = storage
            .build()
            .await
            .context("creating the Cloud Storage client")?;
        let mut registry = ArtifactRegistry::builder().with_credentials(credentials.clone());
        if let Some(endpoint) = &config.registry_endpoint {
            registry = registry.with_endpoint(endpoint);
        }
        let registry = registry
            .build()
            .await
            .context("creating the Artifact Registry client")?;
        // It carries Google access tokens; reqwest's default policy can replay them to another
        // host on the second hop of a redirect chain (tower-http 0.6), so none is followed.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("creating an HTTP client")?;
        Ok(Self {
            config: Arc::new(config),
            forge,
            builds,
            storage,
            registry,
            credentials,
            http,
        })
    }

    fn parent(&self) -> String {
        format!(
            "projects/{}/locations/{}",
            self.config.project, self.config.location
        )
    }

    fn build_name(&self, build_id: &str) -> Result<String, BuildError> {
        // Build ids come back from the outside (status URLs); keep them to Cloud Build's alphabet
        // so one can never name another resource.
        if build_id.is_empty()
            || build_id.len() > 128
            || !build_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(BuildError::NotFound(format!("no build {build_id:?}")));
        }
        Ok(format!("{}/builds/{build_id}", self.parent()))
    }

    fn image(&self, app: &AppName) -> String {
        format!("{}/{app}", self.config.image_repo.trim_end_matches('/'))
    }

    fn bucket(name: &str) -> String {
        format!("projects/_/buckets/{name}")
    }

    /// Streams the commit's tree, with a Dockerfile in it, to `object` as a gzipped build
    /// context, and returns the object's generation. The forge's archive is repacked as it
    /// arrives and uploaded as it is repacked: the worker holds a few buffers, never the source
    /// (on Cloud Run an instance's disk is its memory).
    async fn upload_source(&self, request: &BuildRequest, object: &str) -> Result<i64, BuildError> {
        let archive = self
            .forge
            .archive(&request.repo, &request.commit)
            .await
            .map_err(forge_error)?;
        let (writer, source) = upload_channel();
        let receiver_gone = writer.receiver_gone.clone();
        let limits = self.config.source_limits;
        let (main_file, commit) = (request.main_file.clone(), request.commit.clone());
        let reader = tokio_util::io::SyncIoBridge::new(archive);
        let packing =
            tokio::task::spawn_blocking(move || pack(reader, writer, &limits, &main_file, &commit));
        let upload = self
            .storage
            .write_object(Self::bucket(&self.config.source_bucket), object, source)
            .set_content_type("application/gzip")
            // Same name, same content: a retried upload is harmless.
            .with_idempotency(true)
            .send_buffered();
        let (packed, uploaded) = tokio::join!(packing, upload);
        let packed = packed.context("packing the source")?;
        let where_to = || {
            format!(
                "uploading the source to gs://{}/{object}",
                self.config.source_bucket
            )
        };
        match (packed, uploaded) {
            // The upload stopped first; packing only saw its end.
            (Err(_), Err(error)) if receiver_gone.load(Ordering::SeqCst) => {
                Err(classify(error, &where_to()))
            }
            // The packing error names the cause; the upload was aborted because of it.
            (Err(error), _) => Err(error),
            (Ok(()), Err(error)) => Err(classify(error, &where_to())),
            (Ok(()), Ok(uploaded)) => Ok(uploaded.generation),
        }
    }

    fn build_spec(
        &self,
        request: &BuildRequest,
        object: &str,
        generation: i64,
    ) -> Result<Build, BuildError> {
        let image = self.image(&request.app);
        let tagged = format!("{image}:{}", request.commit);
        // Every app's build runs as one account that may push any tag of the apps' repository,
        // so a tag says nothing about whose build made the image: the cache is the app's own
        // last image by digest (recorded from its build's results), or none.
        let own = format!("{image}@sha256:");
        let cache = request
            .cache_from
            .as_deref()
            .filter(|cache| cache.starts_with(&own));
        let mut steps = Vec::new();
        let mut build = vec!["build"];
        if let Some(cache) = cache {
            // Pulled first so its layers are local; a deleted image only costs the cache.
            steps.push(
                BuildStep::new()
                    .set_id("pull-cache")
                    .set_name(DOCKER)
                    .set_entrypoint("bash")
                    .set_args(["-c", &format!("docker pull {cache} || exit 0")]),
            );
            build.extend(["--cache-from", cache]);
        }
        build.extend([
            // So the pushed image can serve as the next build's --cache-from.
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "-t",
            &tagged,
            ".",
        ]);
        steps.push(
            BuildStep::new()
                .set_id("build")
                .set_name(DOCKER)
                .set_env(["DOCKER_BUILDKIT=1"])
                .set_args(build),
        );
        let mut spec = Build::new()
            .set_source(
                Source::new().set_storage_source(
                    StorageSource::new()
                        .set_bucket(&self.config.source_bucket)
                        .set_object(object)
                        .set_generation(generation),
                ),
            )
            .set_steps(steps)
            // Listed images are pushed by Cloud Build, which reports their digests in
            // `results.images`: what Runway deploys and caches from, never the tag.
            .set_images([tagged])
            .set_tags([
                "runway".to_owned(),
                format!("app-{}", request.app),
                runway_core::messages::BuildNotification::release_tag(&request.release_id),
                format!("{COMMIT_TAG}{}", request.commit),
            ])
            .set_logs_bucket(format!("gs://{}", self.config.logs_bucket))
            .set_options(BuildOptions::new().set_logging(build_options::LoggingMode::GcsOnly))
            .set_timeout(
                google_cloud_wkt::Duration::try_from(self.config.timeout)
                    .context("the build timeout")?,
            );
        if let Some(account) = &self.config.service_account {
            spec = spec.set_service_account(account);
        }
        Ok(spec)
    }

    async fn read_text(&self, bucket: &str, object: &str) -> Result<String, BuildError> {
        let bytes = self.read_range(bucket, object, ReadRange::all()).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The bytes of `range` of an object. A range that starts at or past its end is empty:
    /// Cloud Storage refuses it (416), and a reader following a growing object asks for one
    /// whenever nothing new was written.
    async fn read_range(
        &self,
        bucket: &str,
        object: &str,
        range: ReadRange,
    ) -> Result<Vec<u8>, BuildError> {
        let what = || format!("reading gs://{bucket}/{object}");
        let read = self
            .storage
            .read_object(Self::bucket(bucket), object)
            .set_read_range(range)
            .send()
            .await;
        let mut response = match read {
            Ok(response) => response,
            Err(error) if error.http_status_code() == Some(416) => return Ok(Vec::new()),
            Err(error) => return Err(classify(error, &what())),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = response.next().await {
            bytes.extend_from_slice(&chunk.map_err(|error| classify(error, &what()))?);
        }
        Ok(bytes)
    }

    /// Headers that authenticate a Cloud Storage JSON API call.
    async fn auth_headers(&self) -> Result<http::HeaderMap, BuildError> {
        match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            Ok(CacheableResource::NotModified) => Ok(http::HeaderMap::new()),
            Err(error) if error.is_transient() => Err(BuildError::Unavailable(format!(
                "could not get Google credentials: {error}"
            ))),
            Err(error) => Err(BuildError::Other(
                anyhow!(error).context("could not get Google credentials"),
            )),
        }
    }

    fn storage_url(&self, segments: &[&str]) -> Result<url::Url, BuildError> {
        let base = self
            .config
            .storage_endpoint
            .as_deref()
            .unwrap_or(STORAGE_ENDPOINT);
        let mut url = url::Url::parse(base).context("the storage endpoint")?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("the storage endpoint {base} cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Every object name under `prefix`. The Storage client has no listing; StorageControl does,
    /// over gRPC, which fake-gcs-server does not speak, so this is the JSON API's `objects.list`.
    async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, BuildError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            items: Vec<Item>,
            next_page_token: Option<String>,
        }
        #[derive(Deserialize)]
        struct Item {
            name: String,
        }
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = self.storage_url(&["storage", "v1", "b", bucket, "o"])?;
            url.query_pairs_mut()
                .append_pair("prefix", prefix)
                .append_pair("fields", "items(name),nextPageToken");
            if let Some(token) = &token {
                url.query_pairs_mut().append_pair("pageToken", token);
            }
            let response = self
                .http
                .get(url)
                .headers(self.auth_headers().await?)
                .send()
                .await
                .map_err(|error| unavailable(&format!("listing gs://{bucket}/{prefix}"), error))?;
            let page: Page = checked(response, &format!("listing gs://{bucket}/{prefix}"))
                .await?
                .json()
                .await
                .map_err(|error| unavailable(&format!("listing gs://{bucket}/{prefix}"), error))?;
            names.extend(page.items.into_iter().map(|item| item.name));
            match page.next_page_token.filter(|token| !token.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(names),
            }
        }
    }

    /// Deletes an object; one that is already gone is fine.
    async fn delete_object(&self, bucket: &str, name: &str) -> Result<(), BuildError> {
        let url = self.storage_url(&["storage", "v1", "b", bucket, "o", name])?;
        let what = format!("deleting gs://{bucket}/{name}");
        let response = self
            .http
            .delete(url)
            .headers(self.auth_headers().await?)
            .send()
            .await
            .map_err(|error| unavailable(&what, error))?;
        match checked(response, &what).await {
            Ok(_) | Err(BuildError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The ids of every build tagged with the app.
    async fn app_builds(&self, app: &AppName) -> Result<Vec<String>, BuildError> {
        let mut ids = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .builds
                .list_builds()
                // The parent alone selects the regional endpoint.
                .set_parent(self.parent())
                .set_filter(format!("tags=\"app-{app}\""))
                .set_page_size(100)
                .set_page_token(&token)
                .send()
                .await
                .map_err(|error| classify(error, &format!("listing the builds of {app}")))?;
            ids.extend(page.builds.into_iter().map(|build| build.id));
            if page.next_page_token.is_empty() {
                return Ok(ids);
            }
            token = page.next_page_token;
        }
    }

    fn status_of(&self, build: Build) -> BuildStatus {
        match build.status {
            build::Status::Queued | build::Status::Working | build::Status::Pending => {
                BuildStatus::Running
            }
            build::Status::Success => {
                let repo = format!("{}/", self.config.image_repo.trim_end_matches('/'));
                let image = build
                    .results
                    .iter()
                    .flat_map(|r| &r.images)
                    .find_map(|image| {
                        (image.name.starts_with(&repo) && !image.digest.is_empty())
                            .then(|| format!("{}@{}", untagged(&image.name), image.digest))
                    });
                match image {
                    Some(image) => BuildStatus::Succeeded { image },
                    None => BuildStatus::Failed {
                        status: "SUCCESS".into(),
                        detail: format!(
                            "the build succeeded but reported no image pushed to {}",
                            self.config.image_repo
                        ),
                    },
                }
            }
            status => {
                let name = status.name().unwrap_or("STATUS_UNKNOWN").to_owned();
                let detail = [
                    build.status_detail,
                    build
                        .failure_info
                        .map(|info| info.detail)
                        .unwrap_or_default(),
                ]
                .into_iter()
                .find(|detail| !detail.is_empty())
                .unwrap_or_else(|| format!("the build ended {name}"));
                BuildStatus::Failed {
                    status: name,
                    detail,
                }
            }
        }
    }
}

/// The forge's refusal as the builder's: a source past the limit or not as forges make them is
/// the release's failure; a forge that is briefly away is worth another try.
fn forge_error(error: ForgeError) -> BuildError {
    match error {
        ForgeError::NotFound(message) => BuildError::NotFound(message),
        ForgeError::Unavailable(message) => BuildError::Unavailable(message),
        ForgeError::Rejected(message) => BuildError::Other(anyhow!(message)),
        ForgeError::Other(error) => BuildError::Other(error.context("checkout failed")),
    }
}

/// Repacks the archive `gz` into `out` as a build context, adding the generated Dockerfile (and
/// `.dockerignore`) when the commit has no Dockerfile of its own. Runs on a blocking thread.
fn pack(
    gz: impl Read,
    out: UploadWriter,
    limits: &SourceLimits,
    main_file: &MainFile,
    commit: &CommitSha,
) -> Result<(), BuildError> {
    let manifests = SourceFiles::candidates(main_file);
    let manifests: Vec<&str> = manifests.iter().map(String::as_str).collect();
    let mut repacker = Repacker::new(out).keep_text(&manifests);
    if let Err(error) = repacker.copy(gz, limits) {
        return Err(archive_error(error, commit, limits));
    }
    if !repacker.contains("Dockerfile") {
        if !repacker.contains(main_file.as_str()) {
            return Err(BuildError::NotFound(format!(
                "the main file {main_file} is not in commit {} (and the repository has no \
                 Dockerfile of its own to say what to run)",
                commit.short()
            )));
        }
        let files = SourceFiles::nearest(main_file, |name| repacker.text(name).map(str::to_owned));
        super::dockerfile::python_base(&files.python)
            .map_err(|why| BuildError::Other(anyhow!(why)))?;
        let dockerfile = generated_dockerfile(main_file, &files);
        repacker
            .add("Dockerfile", dockerfile.as_bytes())
            .context("adding the generated Dockerfile")?;
        if !repacker.contains(".dockerignore") {
            repacker
                .add(".dockerignore", GENERATED_DOCKERIGNORE.as_bytes())
                .context("adding the generated .dockerignore")?;
        }
    }
    let out = repacker.finish().context("packing the source")?;
    out.finish().context("packing the source")?;
    Ok(())
}

/// Why the archive could not be repacked, in words a person can act on.
fn archive_error(error: anyhow::Error, commit: &CommitSha, limits: &SourceLimits) -> BuildError {
    if let Some(Unreadable(error)) = error.downcast_ref::<Unreadable>() {
        return BuildError::Unavailable(format!(
            "reading commit {} from the forge: {error}",
            commit.short()
        ));
    }
    if error.downcast_ref::<TooLarge>().is_some() {
        return BuildError::Other(anyhow!(
            "the source of commit {} is larger than {} MiB, the most Runway takes for one build \
             (RUNWAY_MAX_SOURCE_MB). Keep data out of the repository (Cloud Storage, Git LFS) \
             or ask your Runway operator to raise the limit",
            commit.short(),
            limits.max_mib()
        ));
    }
    BuildError::Other(anyhow!(
        "Runway could not read the source of commit {}: {error:#}",
        commit.short()
    ))
}

/// The bytes of a build context on their way from the packing thread to the upload.
const UPLOAD_CHUNK: usize = 256 << 10;

fn upload_channel() -> (UploadWriter, UploadSource) {
    // A few chunks in flight: the packer waits when the upload falls behind.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let writer = UploadWriter {
        sender: Some(sender),
        buffer: Vec::with_capacity(UPLOAD_CHUNK),
        receiver_gone: Arc::new(AtomicBool::new(false)),
    };
    (writer, UploadSource(receiver))
}

/// The packing thread's end: writes go out in chunks; dropped before [`finish`](Self::finish)
/// (packing failed or panicked), it ends the upload with an error, so no partial object is
/// ever committed.
struct UploadWriter {
    sender: Option<tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>>,
    buffer: Vec<u8>,
    receiver_gone: Arc<AtomicBool>,
}

impl UploadWriter {
    fn send(&mut self, item: std::io::Result<bytes::Bytes>) -> std::io::Result<()> {
        let sent = match &self.sender {
            Some(sender) => sender.blocking_send(item).is_ok(),
            None => false,
        };
        if !sent {
            self.receiver_gone.store(true, Ordering::SeqCst);
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the upload stopped",
            ));
        }
        Ok(())
    }

    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(UPLOAD_CHUNK));
        self.send(Ok(chunk.into()))
    }

    /// Sends what is left; the upload then sees the end of its source.
    fn finish(mut self) -> std::io::Result<()> {
        self.send_buffer()?;
        self.sender = None;
        Ok(())
    }
}

impl std::io::Write for UploadWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= UPLOAD_CHUNK {
            self.send_buffer()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        if self.sender.is_some() {
            let _ = self.send(Err(std::io::Error::other("the source could not be packed")));
        }
    }
}

/// The upload's end of the channel.
struct UploadSource(tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>);

impl StreamingSource for UploadSource {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<Result<bytes::Bytes, Self::Error>> {
        self.0.recv().await
    }
}

/// A Google API error, classified: retryable ones become `Unavailable`.
fn classify(error: google_cloud_gax::error::Error, what: &str) -> BuildError {
    let code = error.status().map(|status| status.code);
    let http = error.http_status_code();
    if code == Some(Code::NotFound) || http == Some(404) {
        return BuildError::NotFound(format!("{what}: not found"));
    }
    if matches!(code, Some(Code::PermissionDenied | Code::Unauthenticated))
        || matches!(http, Some(401 | 403))
    {
        return BuildError::Other(anyhow!(
            "{what}: permission denied ({error}); the service account needs \
             roles/cloudbuild.builds.editor on the project and object access to the source and \
             logs buckets"
        ));
    }
    if matches!(
        code,
        Some(
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
        )
    ) || matches!(http, Some(429 | 500..=599))
        || error.is_timeout()
        || error.is_exhausted()
        || error.is_connect()
        || error.is_io()
        || error.is_transient_and_before_rpc()
    {
        return BuildError::Unavailable(format!("{what}: {error}"));
    }
    BuildError::Other(anyhow!(error).context(what.to_owned()))
}

fn unavailable(what: &str, error: reqwest::Error) -> BuildError {
    BuildError::Unavailable(format!("{what}: {error}"))
}

/// The response, if it succeeded; else its status classified like `classify`.
async fn checked(response: reqwest::Response, what: &str) -> Result<reqwest::Response, BuildError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    Err(match status.as_u16() {
        404 => BuildError::NotFound(format!("{what}: not found")),
        401 | 403 => BuildError::Other(anyhow!(
            "{what}: permission denied ({status}); the service account needs object access to \
             the bucket: {body}"
        )),
        429 | 500..=599 => BuildError::Unavailable(format!("{what}: {status} {body}")),
        _ => BuildError::Other(anyhow!("{what}: {status} {body}")),
    })
}

#[async_trait]
impl ImageBuilder for CloudBuildBuilder {
    #[tracing::instrument(skip_all, fields(app = %request.app, release = %request.release_id))]
    async fn start(&self, request: BuildRequest) -> Result<StartedBuild, BuildError> {
        let release_tag =
            runway_core::messages::BuildNotification::release_tag(&request.release_id);
        if !is_build_tag(&release_tag) {
            return Err(BuildError::Other(anyhow!(
                "release id {:?} cannot be a Cloud Build tag",
                request.release_id
            )));
        }
        let object = format!("sources/{}/{}.tar.gz", request.app, request.release_id);
        let generation = self.upload_source(&request, &object).await?;
        let operation = self
            .builds
            .create_build()
            // The parent alone selects the regional endpoint; with a project id the client
            // would use the global one.
            .set_parent(self.parent())
            .set_build(self.build_spec(&request, &object, generation)?)
            .send()
            .await
            .map_err(|error| classify(error, "creating the build"))?;
        // The operation finishes with the build; its metadata names the build at once.
        let build = operation
            .metadata
            .as_ref()
            .and_then(|any| any.to_msg::<BuildOperationMetadata>().ok())
            .and_then(|metadata| metadata.build)
            .filter(|build| !build.id.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "Cloud Build accepted the build (operation {}) but named no build id",
                    operation.name
                )
            })?;
        tracing::info!(build = %build.id, "build created");
        Ok(StartedBuild {
            build_id: BuildId::new(build.id),
            log_url: build.log_url,
        })
    }

    #[tracing::instrument(skip(self))]
    async fn status(&self, build_id: &BuildId) -> Result<BuildStatus, BuildError> {
        let build_id = build_id.as_str();
        let name = self.build_name(build_id)?;
        match self.builds.get_build().set_name(name).send().await {
            Ok(build) => Ok(self.status_of(build)),
            Err(error) => match classify(error, &format!("reading build {build_id}")) {
                BuildError::NotFound(_) => Ok(BuildStatus::Lost),
                error => Err(error),
            },
        }
    }

    /// Vouches for a build only when it runs as Runway's own build service account (which
    /// only Runway may act as) and carries Runway's tags: any build in the project may carry a
    /// release's tag, but not as that account. With no account configured, for none.
    #[tracing::instrument(skip(self))]
    async fn origin(&self, build_id: &BuildId) -> Result<Option<BuildOrigin>, BuildError> {
        let Some(account) = &self.config.service_account else {
            return Ok(None);
        };
        let name = self.build_name(build_id.as_str())?;
        let build = match self.builds.get_build().set_name(name).send().await {
            Ok(build) => build,
            Err(error) => {
                return match classify(error, &format!("reading build {build_id}")) {
                    BuildError::NotFound(_) => Ok(None),
                    error => Err(error),
                };
            }
        };
        // Google shows the account as the email or as its full resource name.
        let email = |name: &str| name.rsplit('/').next().unwrap_or(name).to_owned();
        if email(&build.service_account) != email(account)
            || !build.tags.iter().any(|tag| tag == "runway")
        {
            return Ok(None);
        }
        let tagged = |prefix: &str| {
            build
                .tags
                .iter()
                .find_map(|tag| tag.strip_prefix(prefix).map(str::to_owned))
        };
        let release = tagged("release-");
        let commit = tagged(COMMIT_TAG).and_then(|sha| CommitSha::parse(&sha).ok());
        Ok(release.zip(commit).map(|(release_id, commit)| BuildOrigin {
            release_id: release_id.into(),
            commit,
        }))
    }

    #[tracing::instrument(skip(self))]
    async fn log(&self, build_id: &BuildId) -> Result<String, BuildError> {
        let object = self.log_object(build_id)?;
        let log = self.read_text(&self.config.logs_bucket, &object).await;
        no_log_yet(log, build_id)
    }

    /// A ranged read of the log object: only the bytes asked for leave the bucket.
    #[tracing::instrument(skip(self))]
    async fn log_from(
        &self,
        build_id: &BuildId,
        from: u64,
        max: usize,
    ) -> Result<Vec<u8>, BuildError> {
        let object = self.log_object(build_id)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let range = ReadRange::segment(from, max as u64);
        let piece = self
            .read_range(&self.config.logs_bucket, &object, range)
            .await;
        no_log_yet(piece, build_id)
    }

    #[tracing::instrument(skip_all, fields(app = %app))]
    async fn delete_app(&self, app: &AppName) -> Result<(), BuildError> {
        for build_id in self.app_builds(app).await? {
            self.delete_object(&self.config.logs_bucket, &format!("log-{build_id}.txt"))
                .await?;
        }
        let prefix = format!("sources/{app}/");
        for name in self
            .list_objects(&self.config.source_bucket, &prefix)
            .await?
        {
            self.delete_object(&self.config.source_bucket, &name)
                .await?;
        }
        self.delete_images(app).await
    }
}

/// A log object that is not there is a build with no log (yet).
fn no_log_yet<T>(read: Result<T, BuildError>, build_id: &BuildId) -> Result<T, BuildError> {
    match read {
        Err(BuildError::NotFound(_)) => Err(BuildError::NotFound(format!(
            "no log for build {build_id} (yet)"
        ))),
        other => other,
    }
}

impl CloudBuildBuilder {
    /// The object in the logs bucket Cloud Build writes `build_id`'s log to.
    fn log_object(&self, build_id: &BuildId) -> Result<String, BuildError> {
        self.build_name(build_id.as_str())?;
        Ok(format!("log-{build_id}.txt"))
    }

    /// Deletes the app's package (`{image_repo}/{app}`, every version and tag) from Artifact
    /// Registry; a package that is not there is already deleted.
    async fn delete_images(&self, app: &AppName) -> Result<(), BuildError> {
        let package = package_name(&self.config.image_repo, app)?;
        let outcome = self
            .registry
            .delete_package()
            .set_name(&package)
            .poller()
            .until_done()
            .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(error) if has_code(&error, Code::NotFound) => Ok(()),
            Err(error) if is_transient(&error) => Err(BuildError::Unavailable(format!(
                "deleting the images of {app}: {error}"
            ))),
            Err(error) => Err(BuildError::Other(anyhow::Error::new(error).context(
                format!(
                    "deleting the images of {app} ({package}); Runway's submit account needs \
                     roles/artifactregistry.repoAdmin on the apps' repository"
                ),
            ))),
        }
    }
}

/// `LOCATION-docker.pkg.dev/PROJECT/REPOSITORY` and an app → the Artifact Registry package
/// `projects/PROJECT/locations/LOCATION/repositories/REPOSITORY/packages/APP`.
fn package_name(image_repo: &str, app: &AppName) -> Result<String, BuildError> {
    let parts: Vec<&str> = image_repo.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        [host, project, repository] if !project.is_empty() && !repository.is_empty() => {
            let location = host.strip_suffix("-docker.pkg.dev").ok_or_else(|| {
                BuildError::Other(anyhow!(
                    "the image repository {image_repo} is not in Artifact Registry \
                     (LOCATION-docker.pkg.dev/PROJECT/REPOSITORY)"
                ))
            })?;
            Ok(format!(
                "projects/{project}/locations/{location}/repositories/{repository}/packages/{}",
                app.as_str()
            ))
        }
        _ => Err(BuildError::Other(anyhow!(
            "the image repository {image_repo} is not LOCATION-docker.pkg.dev/PROJECT/REPOSITORY"
        ))),
    }
}

/// Cloud Build's tag rule: `^[\w][\w.-]{0,127}$`.
fn is_build_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_apps_package_in_artifact_registry() {
        let app = AppName::parse("demo").unwrap();
        assert_eq!(
            package_name("europe-west1-docker.pkg.dev/proj/runway-apps/", &app).unwrap(),
            "projects/proj/locations/europe-west1/repositories/runway-apps/packages/demo"
        );
        for bad in [
            "gcr.io/proj/apps",
            "europe-west1-docker.pkg.dev/proj",
            "x/y/z/w",
        ] {
            assert!(package_name(bad, &app).is_err(), "{bad}");
        }
    }

    #[test]
    fn accepts_only_tags_cloud_build_accepts() {
        assert!(is_build_tag("release-0b1c2d3e-aaaa-bbbb-cccc-1234567890ab"));
        assert!(is_build_tag("app-hello"));
        assert!(!is_build_tag("-leading-dash"));
        assert!(!is_build_tag("release-a/b"));
        assert!(!is_build_tag(&"x".repeat(129)));
    }
}
