//! What every `ImageBuilder` must do, written once over `&dyn ImageBuilder` and run against each
//! adapter (`UvBuilder` with uv, `CloudBuildBuilder` against the fake Cloud Build).

use std::time::{Duration, Instant};

use runway_core::domain::{AppName, BuildId, CommitSha, MainFile, ReleaseId, RepoUrl};
use runway_core::ports::{BuildError, BuildRequest, BuildStatus, ImageBuilder, StartedBuild};

use crate::GitRepo;

/// A repository whose Streamlit app builds.
pub const GOOD_APP: &[(&str, &str)] = &[
    ("app.py", "import streamlit as st\n\nst.title('contract')\n"),
    ("requirements.txt", "streamlit\n"),
];

/// A requirement no installer can satisfy: a local package that is not in the repository.
/// Builders fail on it for real (uv cannot find the path); the fake Cloud Build is told to with
/// `fail_when_file_contains("requirements.txt", MISSING_REQUIREMENT)`.
pub const MISSING_REQUIREMENT: &str = "./runway-missing-package";

/// A repository whose build fails installing its requirements.
pub fn failing_app() -> Vec<(&'static str, String)> {
    vec![
        ("app.py", "import streamlit as st\n".to_owned()),
        (
            "requirements.txt",
            format!("streamlit\n{MISSING_REQUIREMENT}\n"),
        ),
    ]
}

/// A build request for the head of `repo`'s main branch.
pub fn request(app: &str, repo: &GitRepo) -> BuildRequest {
    let head = crate::git(&repo.work, &["rev-parse", "HEAD"]).expect("git rev-parse");
    BuildRequest {
        app: AppName::parse(app).expect("an app name"),
        release_id: ReleaseId::random(),
        repo: RepoUrl::parse(&repo.url(), true).expect("a repo URL"),
        commit: CommitSha::parse(head.trim()).expect("a commit"),
        main_file: MainFile::parse("app.py").expect("a main file"),
        cache_from: None,
        clear_cache: false,
    }
}

/// Polls `status` (the fallback every builder offers) until the build ends.
pub async fn wait_for_end(
    builder: &dyn ImageBuilder,
    build_id: &BuildId,
    timeout: Duration,
) -> BuildStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let status = builder.status(build_id).await.expect("status");
        if status != BuildStatus::Running {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "build {build_id} still running after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `start` answers with an id and a log URL while the build runs; it ends `Succeeded` with an
/// image, and its log can be read.
pub async fn builds_a_commit(
    builder: &dyn ImageBuilder,
    request: BuildRequest,
    timeout: Duration,
) -> (StartedBuild, String) {
    let started = builder.start(request).await.expect("start");

    assert!(!started.build_id.as_str().is_empty());
    assert!(!started.log_url.is_empty());
    let status = wait_for_end(builder, &started.build_id, timeout).await;
    let BuildStatus::Succeeded { image } = status else {
        let log = builder.log(&started.build_id).await.unwrap_or_default();
        panic!("expected success, got {status:?}; log:\n{log}");
    };
    assert!(!image.is_empty());
    let log = builder.log(&started.build_id).await.expect("the log");
    assert!(!log.trim().is_empty());
    (started, image)
}

/// A build that cannot install its requirements ends `Failed` with a status and a reason, and
/// `log_tail` gives the end of its log.
pub async fn reports_a_failed_build(
    builder: &dyn ImageBuilder,
    request: BuildRequest,
    timeout: Duration,
) -> (StartedBuild, String, String) {
    let started = builder.start(request).await.expect("start");

    let status = wait_for_end(builder, &started.build_id, timeout).await;
    let BuildStatus::Failed { status, detail } = status else {
        panic!("expected a failure, got {status:?}");
    };
    assert_eq!(status, "FAILURE");
    assert!(!detail.is_empty());
    let log = builder.log(&started.build_id).await.expect("the log");
    let tail = builder
        .log_tail(&started.build_id, 2)
        .await
        .expect("the log's tail");
    assert!(tail.lines().count() <= 2, "more than 2 lines: {tail:?}");
    assert!(!tail.trim().is_empty());
    assert!(
        log.trim_end().ends_with(tail.trim_end()),
        "the tail {tail:?} is not the end of the log:\n{log}"
    );
    (started, detail, log)
}

/// The log read from an offset, piece after piece, is the whole log; a piece is as long as
/// asked or ends at the log's end, and past the end there is nothing.
pub async fn reads_a_log_from_an_offset(builder: &dyn ImageBuilder, build_id: &BuildId) {
    let whole = builder.log(build_id).await.expect("the log").into_bytes();
    let size = whole.len() / 5 + 1;

    let mut pieces = Vec::new();
    loop {
        let from = pieces.len() as u64;
        let piece = builder
            .log_from(build_id, from, size)
            .await
            .expect("a piece of the log");
        assert!(
            piece.len() <= size,
            "{} bytes asked, {} read",
            size,
            piece.len()
        );
        if piece.is_empty() {
            break;
        }
        pieces.extend(piece);
    }
    assert_eq!(
        String::from_utf8_lossy(&pieces),
        String::from_utf8_lossy(&whole)
    );
    let middle = builder.log_from(build_id, 3, 5).await.expect("a middle");
    assert_eq!(middle, whole[3..8]);
    let past = builder
        .log_from(build_id, whole.len() as u64 + 100, 10)
        .await;
    assert!(past.expect("past the end").is_empty());
}

/// A build id the builder never made is `Lost`, and has no log.
pub async fn knows_nothing_of_other_builds(builder: &dyn ImageBuilder) {
    let id = BuildId::new(format!("no-such-build-{}", uuid::Uuid::new_v4().simple()));

    assert_eq!(
        builder.status(&id).await.expect("status"),
        BuildStatus::Lost
    );
    assert!(matches!(
        builder.log(&id).await,
        Err(BuildError::NotFound(_))
    ));
    assert!(matches!(
        builder.log_from(&id, 0, 10).await,
        Err(BuildError::NotFound(_))
    ));
}

/// After `delete_app`, the app's build logs are gone; another app's are not.
pub async fn delete_app_forgets_only_that_app(
    builder: &dyn ImageBuilder,
    app: &AppName,
    its_build: &BuildId,
    other_build: &BuildId,
) {
    builder.delete_app(app).await.expect("delete_app");

    assert!(
        matches!(builder.log(its_build).await, Err(BuildError::NotFound(_))),
        "the deleted app's log is still there"
    );
    builder
        .log(other_build)
        .await
        .expect("the other app's log is still there");
    // Deleting twice is fine.
    builder.delete_app(app).await.expect("delete_app again");
}
