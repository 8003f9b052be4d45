//! An app's page following its release (`/apps/{app}/events`): the build log reaches the page
//! piece by piece, each look reading only what the builder wrote since the last. And its
//! runtime log (`/apps/{app}/log/events`), newest lines first, then each new one once.

mod fixtures;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use futures_util::StreamExt;
use runway_core::domain::{
    AppName, BuildId, NewRelease, ReleaseId, ReleaseState, ReleaseUpdate, Trigger,
};
use runway_core::ports::{
    BuildError, BuildRequest, BuildStatus, ImageBuilder, StartedBuild, Store,
};
use runway_embedded::{LocalIdentity, LocalRuntimeLog, SqliteStore};
use runway_status::{State, router};
use tower::ServiceExt;

/// One build whose log grows as the test writes it; it records where each read started, and
/// refuses to hand out the whole log.
#[derive(Default)]
struct GrowingLog {
    log: Mutex<Vec<u8>>,
    read_from: Mutex<Vec<u64>>,
}

impl GrowingLog {
    fn write(&self, text: &str) {
        self.log.lock().unwrap().extend_from_slice(text.as_bytes());
    }
}

#[async_trait]
impl ImageBuilder for GrowingLog {
    async fn start(&self, _: BuildRequest) -> Result<StartedBuild, BuildError> {
        unreachable!("the console starts no build")
    }
    async fn status(&self, _: &BuildId) -> Result<BuildStatus, BuildError> {
        Ok(BuildStatus::Running)
    }
    async fn log(&self, _: &BuildId) -> Result<String, BuildError> {
        panic!("a following page read the whole log")
    }
    async fn log_from(&self, _: &BuildId, from: u64, max: usize) -> Result<Vec<u8>, BuildError> {
        self.read_from.lock().unwrap().push(from);
        let log = self.log.lock().unwrap();
        let start = (from as usize).min(log.len());
        Ok(log[start..(start + max).min(log.len())].to_vec())
    }
    async fn delete_app(&self, _: &AppName) -> Result<(), BuildError> {
        Ok(())
    }
}

/// Server-Sent Events as (event, data, id) triples, read from a response body as they come.
struct Events {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl Events {
    async fn next(&mut self) -> (String, String, Option<String>) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data, mut id) = (String::new(), Vec::new(), None);
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = name.to_owned();
                    } else if let Some(line) = line.strip_prefix("data:") {
                        data.push(line.strip_prefix(' ').unwrap_or(line));
                    } else if let Some(line) = line.strip_prefix("id:") {
                        id = Some(line.strip_prefix(' ').unwrap_or(line).to_owned());
                    }
                }
                if !event.is_empty() {
                    return (event, data.join("\n"), id);
                }
                continue; // A keep-alive comment.
            }
            let chunk = self.body.next().await.expect("more events").unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The data of the next event named `name`, passing others.
    async fn next_named(&mut self, name: &str) -> String {
        self.next_with_id(name).await.0
    }

    /// The data and id of the next event named `name`, passing others.
    async fn next_with_id(&mut self, name: &str) -> (String, Option<String>) {
        loop {
            let (event, data, id) = self.next().await;
            if event == name {
                return (data, id);
            }
        }
    }
}

/// An app, `demo`, whose release is building with `builder`'s log, on a real store.
struct Following {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    builder: Arc<GrowingLog>,
    state: State,
    release: ReleaseId,
    /// Where the app's processes write its runtime log, as the local platform does.
    runtime_log: std::path::PathBuf,
}

impl Following {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("runway.db")).unwrap());
        let builder = Arc::new(GrowingLog::default());
        let state = State {
            store: store.clone(),
            builder: builder.clone(),
            identity: Arc::new(LocalIdentity {
                email: "ada@example.com".into(),
            }),
            runtime_log: Arc::new(LocalRuntimeLog::new(dir.path().join("apps"))),
            regions: vec!["local".into()],
        };
        let deployment = fixtures::deployment("demo");
        store.put_deployment(&deployment).await.unwrap();
        let new = NewRelease {
            app: deployment.app.clone(),
            trigger: Trigger::Manual,
            actor: "ada@example.com".into(),
            commit: None,
            rollback_of: None,
            clear_cache: false,
        };
        let release = store.queue_release(new).await.unwrap();
        let building = ReleaseUpdate {
            build_id: Some("b-1".into()),
            ..Default::default()
        };
        store
            .transition(
                &release.id,
                ReleaseState::Queued,
                ReleaseState::Building,
                building,
            )
            .await
            .unwrap();
        let runtime_log = dir.path().join("apps/demo/runtime.log");
        std::fs::create_dir_all(runtime_log.parent().unwrap()).unwrap();
        Self {
            runtime_log,
            _dir: dir,
            store,
            builder,
            state,
            release: release.id,
        }
    }

    /// Appends lines to the app's runtime log, one JSON line each, as the local platform
    /// writes its processes' output.
    fn print(&self, texts: &[&str]) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.runtime_log)
            .unwrap();
        for text in texts {
            let line = serde_json::json!({
                "at": "2026-11-29T22:00:00Z", "revision": "demo-1", "stream": "stdout",
                "text": text,
            });
            writeln!(file, "{line}").unwrap();
        }
    }

    /// The page's event stream, as a browser opens it (again, with `last_event_id`).
    async fn events(&self, last_event_id: Option<&str>) -> Events {
        self.stream("/apps/demo/events", last_event_id).await
    }

    async fn stream(&self, path: &str, last_event_id: Option<&str>) -> Events {
        let mut request = http::Request::get(path);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let request = request.body(Body::empty()).unwrap();
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        Events {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
        }
    }
}

#[tokio::test]
async fn a_following_page_reads_only_what_is_new_of_the_build_log() {
    let following = Following::new().await;
    let (store, builder, release) = (&following.store, &following.builder, &following.release);
    builder.write("==> installing\r");

    let mut events = following.events(None).await;
    let first = events.next_named("log").await;
    builder.write("Installed 42 packages — ✓\n");
    let second = events.next_named("log").await;
    use ReleaseState::*;
    for (from, to) in [(Building, Deploying), (Deploying, Live)] {
        store
            .transition(release, from, to, ReleaseUpdate::default())
            .await
            .unwrap();
    }
    let done = events.next_named("done").await;

    assert_eq!(first, "==> installing\n");
    assert_eq!(second, "Installed 42 packages — ✓\n");
    assert_eq!(done, "live");
    // Each look starts where the one before stopped.
    let sent = "==> installing\r".len() as u64;
    let written = builder.log.lock().unwrap().len() as u64;
    let read_from = builder.read_from.lock().unwrap().clone();
    assert_eq!(read_from.first(), Some(&0));
    assert!(read_from.contains(&sent), "{read_from:?}");
    assert_eq!(read_from.last(), Some(&written), "{read_from:?}");
    assert!(read_from.windows(2).all(|w| w[0] <= w[1]), "{read_from:?}");
}

/// A browser's EventSource connects again when the stream ends (status ends each after 15
/// minutes) and sends the id of the last event it got: the log goes on from there instead of
/// being shown again from its start. An id of another release starts the newest one's log
/// from the beginning.
#[tokio::test]
async fn a_page_that_connects_again_gets_the_build_log_from_where_it_stopped() {
    let following = Following::new().await;
    following.builder.write("first part\n");
    let mut events = following.events(None).await;
    let (first, id) = events.next_with_id("log").await;
    assert_eq!(first, "first part\n");
    let id = id.expect("a log event has an id");
    drop(events);

    following.builder.write("second part\n");
    let mut again = following.events(Some(&id)).await;
    assert_eq!(again.next_named("log").await, "second part\n");

    let older = format!("{}-older 5", following.release);
    let mut elsewhere = following.events(Some(&older)).await;
    assert_eq!(
        elsewhere.next_named("log").await,
        "first part\nsecond part\n"
    );
    let mut garbled = following.events(Some("not an id")).await;
    assert_eq!(garbled.next_named("log").await, "first part\nsecond part\n");
}

/// The texts of a `lines` event's data.
fn texts(data: &str) -> Vec<String> {
    let lines: Vec<serde_json::Value> = serde_json::from_str(data).unwrap();
    lines
        .iter()
        .map(|line| line["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_runtime_log_starts_with_the_newest_lines_then_sends_each_new_one_once() {
    let following = Following::new().await;
    let old: Vec<String> = (0..250).map(|n| format!("old {n}")).collect();
    following.print(&old.iter().map(String::as_str).collect::<Vec<_>>());

    let mut events = following.stream("/apps/demo/log/events", None).await;
    let (first, id) = events.next_with_id("lines").await;
    following.print(&["You can now view your Streamlit app", "rendering"]);
    let (second, later_id) = events.next_with_id("lines").await;

    let first = texts(&first);
    assert_eq!(first.len(), 200, "the newest 200 lines");
    assert_eq!(first.first().map(String::as_str), Some("old 50"));
    assert_eq!(first.last().map(String::as_str), Some("old 249"));
    assert_eq!(
        texts(&second),
        ["You can now view your Streamlit app", "rendering"]
    );
    // A page connecting again goes on from the last batch it got.
    assert_ne!(id, later_id);
    following.print(&["after the reconnect"]);
    let mut again = following
        .stream("/apps/demo/log/events", later_id.as_deref())
        .await;
    let (after_reconnect, reconnected_id) = again.next_with_id("lines").await;
    assert_eq!(texts(&after_reconnect), ["after the reconnect"]);
    // A page whose tab was hidden closed its stream; it opens a new one at its cursor.
    following.print(&["while the tab was hidden"]);
    let reopened = format!(
        "/apps/demo/log/events?after={}",
        urlencode(reconnected_id.as_deref().unwrap())
    );
    let mut shown_again = following.stream(&reopened, None).await;
    assert_eq!(
        texts(&shown_again.next_named("lines").await),
        ["while the tab was hidden"]
    );
}

#[tokio::test]
async fn the_runtime_log_twin_answers_the_newest_lines_and_what_follows_a_cursor() {
    let following = Following::new().await;
    following.print(&["one", "two", "three"]);
    let get = |uri: String| {
        let state = following.state.clone();
        async move {
            let request = http::Request::get(uri).body(Body::empty()).unwrap();
            let response = router(state).oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        }
    };

    let (status, newest) = get("/api/apps/demo/log?lines=2".into()).await;
    assert_eq!(status, 200, "{newest}");
    assert_eq!(newest["lines"][0]["text"], "two");
    assert_eq!(newest["lines"][1]["text"], "three");
    assert_eq!(newest["lines"][1]["stream"], "stdout");
    following.print(&["four"]);
    let cursor = newest["cursor"].as_str().unwrap();
    let uri = format!("/api/apps/demo/log?after={}", urlencode(cursor));
    let (_, after) = get(uri).await;
    assert_eq!(after["lines"].as_array().unwrap().len(), 1, "{after}");
    assert_eq!(after["lines"][0]["text"], "four");

    let (status, missing) = get("/api/apps/nobody/log".into()).await;
    assert_eq!(status, 404, "{missing}");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
