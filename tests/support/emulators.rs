//! Where the emulators that `scripts/emulators start` (and so `scripts/test`) started listen.
//!
//! Each is read from its `RUNWAY_TEST_*` variable, else from `.tools/run/emulators.env`, which
//! the script writes. A test that needs an emulator fails, naming the command that starts it,
//! when neither says where it is: a cloud adapter's test never passes by skipping.

use std::path::Path;

use uuid::Uuid;

fn lookup(var: &str) -> String {
    if let Ok(value) = std::env::var(var) {
        return value;
    }
    let env_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/run/emulators.env");
    let from_file = std::fs::read_to_string(&env_file).ok().and_then(|text| {
        text.lines().find_map(|line| {
            let (name, value) = line.trim().trim_start_matches("export ").split_once('=')?;
            (name == var).then(|| value.to_owned())
        })
    });
    from_file.unwrap_or_else(|| {
        panic!(
            "{var} is not set and {} does not exist: start the emulators with \
             `scripts/emulators start` (scripts/test does this itself)",
            env_file.display()
        )
    })
}

/// `host:port` of Google's Firestore emulator.
pub fn firestore() -> String {
    lookup("RUNWAY_TEST_FIRESTORE")
}

/// `http://host:port` of Google's Pub/Sub emulator (gRPC and REST).
pub fn pubsub() -> String {
    lookup("RUNWAY_TEST_PUBSUB")
}

/// `http://127.0.0.1:80`: fake-gcs-server.
pub fn gcs() -> String {
    lookup("RUNWAY_TEST_GCS")
}

/// `http://host:port` of drongo, the Secret Manager emulator.
pub fn secret_manager() -> String {
    lookup("RUNWAY_TEST_SECRETMANAGER")
}

/// A project id no other test uses, so tests sharing an emulator never see each other's data.
/// Google's rules: 6–30 characters, lowercase letters, digits and hyphens, a letter first.
pub fn unique_project() -> String {
    format!("rw-{}", &Uuid::new_v4().simple().to_string()[..20])
}

/// Creates a topic on the Pub/Sub emulator (its REST API, as `gcloud pubsub topics create`).
pub async fn create_topic(project: &str, topic: &str) {
    let url = format!("{}/v1/projects/{project}/topics/{topic}", pubsub());
    let response = reqwest::Client::new().put(&url).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "creating {url}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// Creates a push subscription on the Pub/Sub emulator, as `infra/pubsub.tf` does on Google
/// Cloud: message ordering on, a short retry backoff so redelivery shows within a test.
pub async fn create_push_subscription(
    project: &str,
    subscription: &str,
    topic: &str,
    endpoint: &str,
) {
    let url = format!(
        "{}/v1/projects/{project}/subscriptions/{subscription}",
        pubsub()
    );
    let body = serde_json::json!({
        "topic": format!("projects/{project}/topics/{topic}"),
        "pushConfig": { "pushEndpoint": endpoint },
        "ackDeadlineSeconds": 10,
        "enableMessageOrdering": true,
        "retryPolicy": { "minimumBackoff": "0.1s", "maximumBackoff": "1s" },
    });
    let response = reqwest::Client::new()
        .put(&url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "creating {url}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// Creates a bucket on fake-gcs-server (the JSON API, as `gcloud storage buckets create`).
pub async fn create_bucket(project: &str, name: &str) {
    let url = format!("{}/storage/v1/b?project={project}", gcs());
    let response = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .expect("fake-gcs-server answers");
    assert!(
        response.status().is_success(),
        "creating bucket {name}: {}",
        response.status()
    );
}

/// Creates the secret `projects/{project}/secrets/{id}` on drongo (Secret Manager's REST API,
/// as `gcloud secrets create`); one that exists already is fine.
pub async fn create_secret(project: &str, id: &str) {
    let url = format!(
        "{}/v1/projects/{project}/secrets?secretId={id}",
        secret_manager()
    );
    let response = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({ "replication": { "automatic": {} } }))
        .send()
        .await
        .expect("drongo answers");
    assert!(
        response.status().is_success() || response.status() == reqwest::StatusCode::CONFLICT,
        "creating secret {id}: {}",
        response.status()
    );
}
