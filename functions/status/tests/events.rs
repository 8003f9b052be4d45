//! An app's page following its release (`/apps/{app}/events`): the build log reaches the page
//! piece by piece, each look reading only what the builder wrote since the last.

mod fixtures;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use futures_util::StreamExt;
use runway_core::domain::{AppName, BuildId, NewRelease, ReleaseState, ReleaseUpdate, Trigger};
use runway_core::ports::{
    BuildError, BuildRequest, BuildStatus, ImageBuilder, StartedBuild, Store,
};
use runway_embedded::{LocalIdentity, SqliteStore};
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

/// Server-Sent Events as (event, data) pairs, read from a response body as they come.
struct Events {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl Events {
    async fn next(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), Vec::new());
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = name.to_owned();
                    } else if let Some(line) = line.strip_prefix("data:") {
                        data.push(line.strip_prefix(' ').unwrap_or(line));
                    }
                }
                if !event.is_empty() {
                    return (event, data.join("\n"));
                }
                continue; // A keep-alive comment.
            }
            let chunk = self.body.next().await.expect("more events").unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The data of the next event named `name`, passing others.
    async fn next_named(&mut self, name: &str) -> String {
        loop {
            let (event, data) = self.next().await;
            if event == name {
                return data;
            }
        }
    }
}

#[tokio::test]
async fn a_following_page_reads_only_what_is_new_of_the_build_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("runway.db")).unwrap());
    let builder = Arc::new(GrowingLog::default());
    let state = State {
        store: store.clone(),
        builder: builder.clone(),
        identity: Arc::new(LocalIdentity {
            email: "ada@example.com".into(),
        }),
    };
    let deployment = fixtures::deployment("demo");
    store.put_deployment(&deployment).await.unwrap();
    let new = NewRelease {
        app: deployment.app.clone(),
        trigger: Trigger::Manual,
        actor: "ada@example.com".into(),
        commit: None,
        rollback_of: None,
    };
    let release = store.queue_release(new).await.unwrap();
    let building = ReleaseUpdate {
        build_id: Some("b-1".into()),
        ..Default::default()
    };
    use ReleaseState::*;
    store
        .transition(&release.id, Queued, Building, building)
        .await
        .unwrap();
    builder.write("==> installing\r");

    let request = http::Request::get("/apps/demo/events")
        .body(Body::empty())
        .unwrap();
    let response = router(state).oneshot(request).await.unwrap();
    let mut events = Events {
        body: response.into_body().into_data_stream(),
        buffer: String::new(),
    };
    let first = events.next_named("log").await;
    builder.write("Installed 42 packages — ✓\n");
    let second = events.next_named("log").await;
    for (from, to) in [(Building, Deploying), (Deploying, Live)] {
        store
            .transition(&release.id, from, to, ReleaseUpdate::default())
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
