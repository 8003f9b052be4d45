//! The console's long lists, served by the real router over a real `SqliteStore`: a page (and
//! its JSON twin) holds a bounded number of rows however long the history, says which rows it
//! shows and links to the others.

mod fixtures;

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use runway_core::domain::{AppName, AuditAction, AuditEntry, BuildId, NewRelease, Trigger};
use runway_core::ports::{
    BuildError, BuildRequest, BuildStatus, ImageBuilder, StartedBuild, Store,
};
use runway_embedded::{LocalIdentity, SqliteStore};
use runway_status::{State, router};
use serde_json::Value;
use tower::ServiceExt;

struct Console {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    state: State,
}

impl Console {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("runway.db")).unwrap());
        let state = State {
            store: store.clone(),
            builder: Arc::new(NoBuilds),
            identity: Arc::new(LocalIdentity {
                email: "ada@example.com".into(),
            }),
            runtime_log: Arc::new(runway_embedded::LocalRuntimeLog::new(
                dir.path().join("apps"),
            )),
            regions: vec!["local".into()],
        };
        Self {
            _dir: dir,
            store,
            state,
        }
    }

    /// `path`'s status and body, as the signed-in admin.
    async fn get(&self, path: &str) -> (u16, String) {
        let request = http::Request::get(path).body(Body::empty()).unwrap();
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn add_app(&self, name: &str) -> AppName {
        let deployment = fixtures::deployment(name);
        self.store.put_deployment(&deployment).await.unwrap();
        deployment.app
    }

    async fn queue(&self, app: &AppName) {
        let new = NewRelease {
            app: app.clone(),
            trigger: Trigger::Manual,
            actor: "ada@example.com".into(),
            commit: None,
            rollback_of: None,
            clear_cache: false,
        };
        self.store.queue_release(new).await.unwrap();
    }

    async fn audit(&self, actor: &str, detail: String) {
        let entry = AuditEntry {
            at: chrono::Utc::now(),
            actor: actor.into(),
            action: AuditAction::Redeploy,
            app: Some("demo".into()),
            detail,
        };
        self.store.append_audit(&entry).await.unwrap();
    }
}

/// The console reads no build here.
struct NoBuilds;

#[async_trait]
impl ImageBuilder for NoBuilds {
    async fn start(&self, _: BuildRequest) -> Result<StartedBuild, BuildError> {
        unreachable!("the console starts no build")
    }
    async fn status(&self, _: &BuildId) -> Result<BuildStatus, BuildError> {
        Ok(BuildStatus::Lost)
    }
    async fn log(&self, id: &BuildId) -> Result<String, BuildError> {
        Err(BuildError::NotFound(format!("no build {id}")))
    }
    async fn delete_app(&self, _: &AppName) -> Result<(), BuildError> {
        Ok(())
    }
}

#[tokio::test]
async fn the_apps_come_fifty_to_a_page_and_so_does_their_twin() {
    let console = Console::new();
    for i in 0..53 {
        let app = console.add_app(&format!("app-{i:02}")).await;
        console.queue(&app).await;
    }

    let (_, first) = console.get("/").await;
    let (_, second) = console.get("/?page=2").await;
    let (_, team) = console.get("/?team=1").await;
    let json = console.get_json("/api/apps?page=2").await;

    assert!(first.contains("Apps 1–50 of 53"), "{first}");
    assert!(first.contains("href=\"/apps/app-49\"") && !first.contains("href=\"/apps/app-50\""));
    assert!(first.contains("href=\"/?page=2\" rel=\"next\""));
    assert!(second.contains("Apps 51–53 of 53") && second.contains("href=\"/apps/app-52\""));
    assert!(second.contains("href=\"/?page=1\" rel=\"prev\"") && !second.contains("rel=\"next\""));
    assert!(team.contains("href=\"/?team=1&#38;page=2\""), "{team}");
    // Each app's newest release, from the one batched read.
    assert_eq!(first.matches(">queued</span>").count(), 50);
    let names: Vec<&str> = json["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["app"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app-50", "app-51", "app-52"]);
    assert_eq!(
        (json["total"].as_u64(), json["next_page"].as_u64()),
        (Some(53), None)
    );
    assert_eq!(console.get_json("/api/apps").await["next_page"], 2);
    let (_, past) = console.get("/?page=9").await;
    assert!(past.contains("past the last app"), "{past}");
}

#[tokio::test]
async fn the_audit_trail_comes_a_hundred_to_a_page_keeping_its_filters() {
    let console = Console::new();
    for i in 0..130 {
        let actor = if i % 2 == 0 {
            "ada@example.com"
        } else {
            "grace hopper"
        };
        console.audit(actor, format!("entry {i:03}")).await;
    }

    let (_, first) = console.get("/audit").await;
    let (_, older) = console.get("/audit?page=2").await;
    let (_, filtered) = console.get("/audit?app=demo&actor=grace+h").await;
    let json = console.get_json("/api/audit?page=2").await;

    assert!(
        first.contains("entry 129") && first.contains("entry 030") && !first.contains("entry 029")
    );
    assert!(
        first.contains("the trail&#39;s entries 1–100")
            || first.contains("the trail's entries 1–100"),
        "{first}"
    );
    assert!(
        first.contains("href=\"/audit?page=2\" rel=\"next\""),
        "{first}"
    );
    assert!(
        older.contains("entry 029")
            && older.contains("entry 000")
            && !older.contains("rel=\"next\"")
    );
    assert!(
        filtered.contains("href=\"/audit?app=demo&#38;actor=grace+h&#38;page=2\""),
        "{filtered}"
    );
    assert!(!filtered.contains("ada@example.com</td>"));
    assert_eq!(json["entries"].as_array().unwrap().len(), 30);
    assert_eq!(
        (json["page"].as_u64(), json["next_page"].as_u64()),
        (Some(2), None)
    );
    assert_eq!(console.get_json("/api/audit").await["next_page"], 2);
}

#[tokio::test]
async fn an_app_page_says_when_it_shows_only_the_newest_releases() {
    let console = Console::new();
    let (some, many) = (console.add_app("some").await, console.add_app("many").await);
    for _ in 0..20 {
        console.queue(&some).await;
    }
    for _ in 0..21 {
        console.queue(&many).await;
    }

    let (_, all_shown) = console.get("/apps/some").await;
    let (_, newest_shown) = console.get("/apps/many").await;

    assert!(!all_shown.contains("The newest 20"), "{all_shown}");
    assert!(newest_shown.contains("The newest 20"), "{newest_shown}");
    assert_eq!(
        console.get_json("/api/apps/some").await["older_releases"],
        false
    );
    let many = console.get_json("/api/apps/many").await;
    assert_eq!(many["older_releases"], true);
    assert_eq!(many["releases"].as_array().unwrap().len(), 20);
}

/// Older releases are a link away, twenty at a time, down to the first; each page keeps the
/// app's newest state at the top.
#[tokio::test]
async fn an_apps_older_releases_are_pages_of_twenty_down_to_the_first() {
    let console = Console::new();
    let app = console.add_app("long").await;
    for _ in 0..45 {
        console.queue(&app).await;
    }
    let seqs = |json: &serde_json::Value| -> Vec<u64> {
        let releases = json["releases"].as_array().unwrap();
        releases
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect()
    };

    let (_, newest) = console.get("/apps/long").await;
    let (status, second) = console.get("/apps/long?before=26").await;
    let (_, last) = console.get("/apps/long?before=6").await;
    let (_, beyond) = console.get("/apps/long?before=1").await;
    let first_json = console.get_json("/api/apps/long").await;
    let second_json = console.get_json("/api/apps/long?before=26").await;
    let last_json = console.get_json("/api/apps/long?before=6").await;

    assert!(newest.contains("href=\"/apps/long?before=26\""), "{newest}");
    assert_eq!(status, 200);
    assert!(second.contains("Releases before #26"), "{second}");
    assert!(second.contains("<td>25</td>") && second.contains("<td>6</td>"));
    assert!(!second.contains("<td>26</td>") && !second.contains("<td>5</td>"));
    assert!(second.contains("href=\"/apps/long?before=6\""), "{second}");
    assert!(
        second.contains("href=\"/apps/long\""),
        "a way back to the newest"
    );
    assert!(last.contains("<td>5</td>") && last.contains("<td>1</td>"));
    assert!(!last.contains("Older releases"), "{last}");
    assert!(beyond.contains("No older releases"), "{beyond}");
    assert_eq!(first_json["next_before"], 26);
    assert_eq!(seqs(&second_json), (6..=25).rev().collect::<Vec<_>>());
    assert_eq!(second_json["next_before"], 6);
    assert_eq!(seqs(&last_json), [5, 4, 3, 2, 1]);
    assert_eq!(last_json["next_before"], serde_json::Value::Null);
    assert_eq!(last_json["older_releases"], false);
    let (bad, _) = console.get("/apps/long?before=many").await;
    assert_eq!(bad, 400);
}
