//! The `SecretStore` port's contract, written once and run against every adapter:
//! `FileSecretStore` (the embedded default, in a temporary directory) and `SecretManagerStore`
//! on drongo, the Secret Manager emulator (each test gets a project of its own).
//!
//! What is read back is read the way the app would read it, not through the store: the file
//! itself, or the secret's `versions/...:access` over drongo's REST API.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use runway_core::domain::{AppName, NotifyTargets, PrivateTargets, SecretsToml};
use runway_core::ports::{SecretRef, SecretStore, SecretStoreError};
use runway_embedded::FileSecretStore;
use runway_gcp::{SecretManagerConfig, SecretManagerStore};
use runway_tests::emulators;
use serde_json::Value;

/// A store, where its values can be read back from, and whatever must live as long as it.
struct Subject {
    store: Arc<dyn SecretStore>,
    backend: Backend,
}

enum Backend {
    Files(tempfile::TempDir),
    SecretManager { project: String },
}

async fn files() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSecretStore::new(dir.path().join("secrets")).unwrap();
    Subject {
        store: Arc::new(store),
        backend: Backend::Files(dir),
    }
}

async fn secret_manager() -> Subject {
    let project = emulators::unique_project();
    let store = SecretManagerStore::connect(SecretManagerConfig {
        project: project.clone(),
        endpoint: Some(emulators::secret_manager()),
    })
    .await
    .unwrap();
    Subject {
        store: Arc::new(store),
        backend: Backend::SecretManager { project },
    }
}

impl Subject {
    /// The value the app would read now: its file, or its secret's latest version.
    async fn current(&self, app: &str) -> Option<String> {
        match &self.backend {
            Backend::Files(_) => {
                let app = AppName::parse(app).unwrap();
                let newest = self.store.reference(&app).await.ok()??;
                read_file(PathBuf::from(newest.0))
            }
            Backend::SecretManager { project } => {
                access(&format!(
                    "projects/{project}/secrets/runway-app-{app}/versions/latest"
                ))
                .await
            }
        }
    }

    /// The value readable through a reference the store handed out, if any.
    async fn read(&self, reference: &SecretRef) -> Option<String> {
        match &self.backend {
            Backend::Files(_) => read_file(PathBuf::from(&reference.0)),
            Backend::SecretManager { .. } => access(&reference.0).await,
        }
    }

    /// A store of the same kind that fails: its directory is a file, or nothing listens.
    async fn broken(&self) -> Arc<dyn SecretStore> {
        match &self.backend {
            Backend::Files(dir) => {
                let path = dir.path().join("broken");
                let store = FileSecretStore::new(path.clone()).unwrap();
                std::fs::remove_dir(&path).unwrap();
                std::fs::write(&path, "not a directory").unwrap();
                Arc::new(store)
            }
            Backend::SecretManager { project } => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let endpoint = format!("http://{}", listener.local_addr().unwrap());
                drop(listener);
                let config = SecretManagerConfig {
                    project: project.clone(),
                    endpoint: Some(endpoint),
                };
                Arc::new(SecretManagerStore::connect(config).await.unwrap())
            }
        }
    }
}

fn read_file(path: PathBuf) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// drongo's `GET /v1/{version}:access`: the payload, or `None` when the version cannot be read
/// (missing, disabled or destroyed).
async fn access(version: &str) -> Option<String> {
    let url = format!("{}/v1/{version}:access", emulators::secret_manager());
    let response = reqwest::get(&url).await.unwrap();
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.unwrap();
    let data = BASE64
        .decode(body["payload"]["data"].as_str().expect("payload.data"))
        .unwrap();
    Some(String::from_utf8(data).unwrap())
}

/// drongo's `GET /v1/{resource}` as JSON.
async fn get(resource: &str) -> Value {
    let url = format!("{}/v1/{resource}", emulators::secret_manager());
    let response = reqwest::get(&url).await.unwrap();
    assert!(response.status().is_success(), "GET {url}");
    response.json().await.unwrap()
}

// Each check runs once per adapter, as `files::name` and `secret_manager::name`.
runway_tests::contract! {
    subjects: [
        files => super::files().await,
        secret_manager => super::secret_manager().await,
    ],
    checks: [
    put_then_reference_gives_the_ref_and_the_value_reads_back,
    a_second_put_replaces_the_first,
    an_unknown_app_has_no_reference,
    delete_forgets_the_secret_and_may_be_repeated,
    apps_do_not_see_each_others_secrets,
    errors_never_carry_the_value,
    notification_targets_read_back_whole_and_go_with_the_app
    ],
}

fn app(name: &str) -> AppName {
    AppName::parse(name).unwrap()
}

fn toml(text: &str) -> SecretsToml {
    SecretsToml::parse(text.to_owned()).unwrap()
}

async fn put_then_reference_gives_the_ref_and_the_value_reads_back(subject: &Subject) {
    let hello = app("hello");
    let value = "greeting = \"hi\"\n[db]\npassword = \"s3cret\"\n";
    let reference = subject.store.put(&hello, &toml(value)).await.unwrap();

    assert_eq!(
        subject.store.reference(&hello).await.unwrap(),
        Some(reference.clone())
    );
    assert_eq!(subject.current("hello").await.as_deref(), Some(value));
    assert_eq!(subject.read(&reference).await.as_deref(), Some(value));
    match &subject.backend {
        Backend::Files(_) => {
            let mode = std::fs::metadata(&reference.0)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "only Runway may read the file");
        }
        Backend::SecretManager { project } => {
            assert_eq!(
                reference.0,
                format!("projects/{project}/secrets/runway-app-hello/versions/1")
            );
        }
    }
}

async fn a_second_put_replaces_the_first(subject: &Subject) {
    let hello = app("hello");
    let first = subject.store.put(&hello, &toml("v = 1")).await.unwrap();
    let second = subject.store.put(&hello, &toml("v = 2")).await.unwrap();

    assert_eq!(
        subject.store.reference(&hello).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(subject.current("hello").await.as_deref(), Some("v = 2"));
    assert_eq!(subject.read(&second).await.as_deref(), Some("v = 2"));
    match &subject.backend {
        // A file per version: the first stays as it was, for the process that reads it.
        Backend::Files(_) => {
            assert_ne!(first, second, "each put is a version of its own");
            assert_eq!(subject.read(&first).await.as_deref(), Some("v = 1"));
            subject.store.retire(&hello, &[]).await.unwrap();
            assert_eq!(subject.read(&first).await, None, "retired");
            assert_eq!(subject.read(&second).await.as_deref(), Some("v = 2"));
        }
        Backend::SecretManager { .. } => {
            assert_ne!(first, second, "each put is a version of its own");
            // The revision still serving (or one a rollback returns to) may read the first:
            // a put disables nothing; `retire` does, for versions no release used.
            let third = subject.store.put(&hello, &toml("v = 3")).await.unwrap();
            assert_eq!(get(&first.0).await["state"], "ENABLED");
            subject.store.retire(&hello, &[]).await.unwrap();
            assert_eq!(get(&first.0).await["state"], "DISABLED");
            assert_eq!(get(&second.0).await["state"], "DISABLED");
            assert_eq!(get(&third.0).await["state"], "ENABLED");
            assert_ne!(
                subject.read(&first).await.as_deref(),
                Some("v = 1"),
                "the first value is no longer readable through its reference"
            );
        }
    }
}

async fn an_unknown_app_has_no_reference(subject: &Subject) {
    assert_eq!(subject.store.reference(&app("nobody")).await.unwrap(), None);
    assert_eq!(subject.current("nobody").await, None);
}

async fn delete_forgets_the_secret_and_may_be_repeated(subject: &Subject) {
    let hello = app("hello");
    let reference = subject.store.put(&hello, &toml("v = 1")).await.unwrap();

    subject.store.delete(&hello).await.unwrap();
    assert_eq!(subject.store.reference(&hello).await.unwrap(), None);
    assert_eq!(subject.current("hello").await, None);
    assert_eq!(subject.read(&reference).await, None);
    subject.store.delete(&hello).await.unwrap();
    subject.store.delete(&app("nobody")).await.unwrap();

    // A redeploy after a delete starts over.
    let again = subject.store.put(&hello, &toml("v = 2")).await.unwrap();
    assert_eq!(subject.store.reference(&hello).await.unwrap(), Some(again));
    assert_eq!(subject.current("hello").await.as_deref(), Some("v = 2"));
}

async fn apps_do_not_see_each_others_secrets(subject: &Subject) {
    let (one, two) = (app("one"), app("two"));
    let first = subject.store.put(&one, &toml("app = 'one'")).await.unwrap();
    let second = subject.store.put(&two, &toml("app = 'two'")).await.unwrap();

    assert_ne!(first, second);
    assert_eq!(subject.store.reference(&one).await.unwrap(), Some(first));
    assert_eq!(subject.current("one").await.as_deref(), Some("app = 'one'"));
    assert_eq!(subject.current("two").await.as_deref(), Some("app = 'two'"));

    subject.store.delete(&one).await.unwrap();
    assert_eq!(subject.store.reference(&two).await.unwrap(), Some(second));
    assert_eq!(subject.current("two").await.as_deref(), Some("app = 'two'"));
}

async fn errors_never_carry_the_value(subject: &Subject) {
    let hello = app("hello");
    let token = format!("sk-{}", uuid::Uuid::new_v4().simple());
    let secrets = toml(&format!("api_key = \"{token}\""));
    assert!(!format!("{secrets:?}").contains(&token));

    let broken = subject.broken().await;
    let error = broken.put(&hello, &secrets).await.unwrap_err();
    let unavailable = matches!(error, SecretStoreError::Unavailable(_));
    let mut shown = format!("{error} / {error:?}");
    if let SecretStoreError::Other(inner) = &error {
        shown += &format!(" / {inner:#}");
    }
    assert!(!shown.contains(&token), "the value leaked: {shown}");
    if let Backend::SecretManager { .. } = &subject.backend {
        assert!(
            shown.contains("runway-app-hello"),
            "names the secret: {shown}"
        );
        assert!(unavailable, "nothing listening is worth a retry: {shown}");
    }

    let reference = subject.store.put(&hello, &secrets).await.unwrap();
    assert!(!format!("{reference:?}").contains(&token));
}

/// An app's notification targets: read back whole (the worker posts to them), replaced as a
/// whole, removed when emptied and with the app, and apart from its secrets TOML.
async fn notification_targets_read_back_whole_and_go_with_the_app(subject: &Subject) {
    use secrecy::ExposeSecret;
    let (hello, other) = (app("hello"), app("other"));
    assert!(
        subject
            .store
            .notifications(&hello)
            .await
            .unwrap()
            .is_empty()
    );
    let targets = |text: &str| NotifyTargets::parse_lines(text, PrivateTargets::Refused).unwrap();
    let first = targets(
        "slack https://hooks.slack.com/services/T/B/FIRSTPATH\n\
         webhook https://ops.example.com/h secret=0123456789abcdef success",
    );
    subject.store.put(&hello, &toml("v = 1")).await.unwrap();
    subject
        .store
        .put_notifications(&hello, &first)
        .await
        .unwrap();
    let read = subject.store.notifications(&hello).await.unwrap();
    assert_eq!(read.summaries(), first.summaries());
    let urls: Vec<_> = read
        .iter()
        .map(|t| t.url.expose_secret().to_owned())
        .collect();
    assert_eq!(
        urls,
        [
            "https://hooks.slack.com/services/T/B/FIRSTPATH",
            "https://ops.example.com/h"
        ]
    );
    let key = read
        .iter()
        .nth(1)
        .and_then(|t| t.key.as_ref())
        .map(|k| k.expose_secret().to_owned());
    assert_eq!(key.as_deref(), Some("0123456789abcdef"));
    // Kept apart from the secrets the app reads.
    assert_eq!(subject.current("hello").await.as_deref(), Some("v = 1"));
    assert!(
        subject
            .store
            .notifications(&other)
            .await
            .unwrap()
            .is_empty()
    );

    let second =
        targets("chat https://chat.googleapis.com/v1/spaces/S/messages?key=k&token=SECONDTOKEN");
    subject
        .store
        .put_notifications(&hello, &second)
        .await
        .unwrap();
    let read = subject.store.notifications(&hello).await.unwrap();
    assert_eq!(read.summaries(), second.summaries());
    if let Backend::SecretManager { project } = &subject.backend {
        // The replaced targets are not readable any more.
        let versions = get(&format!(
            "projects/{project}/secrets/runway-notify-hello/versions"
        ))
        .await;
        let mut readable = Vec::new();
        for version in versions["versions"].as_array().into_iter().flatten() {
            readable.extend(access(version["name"].as_str().unwrap()).await);
        }
        assert_eq!(readable.len(), 1, "{versions}");
        assert!(readable[0].contains("SECONDTOKEN") && !readable[0].contains("FIRSTPATH"));
    }

    subject
        .store
        .put_notifications(&hello, &NotifyTargets::default())
        .await
        .unwrap();
    assert!(
        subject
            .store
            .notifications(&hello)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(subject.current("hello").await.as_deref(), Some("v = 1"));

    subject
        .store
        .put_notifications(&hello, &first)
        .await
        .unwrap();
    subject.store.delete(&hello).await.unwrap();
    assert!(
        subject
            .store
            .notifications(&hello)
            .await
            .unwrap()
            .is_empty()
    );
    if let Backend::Files(dir) = &subject.backend {
        assert!(runway_tests::files_containing(dir.path(), "FIRSTPATH").is_empty());
    }
}

// --- Secret Manager only ------------------------------------------------------------------------

/// What `infra/secrets.tf` and cleanup rely on: the name prefix, the labels, and automatic
/// replication.
#[tokio::test]
async fn the_app_secret_is_named_labelled_and_replicated_automatically() {
    let subject = secret_manager().await;
    let Backend::SecretManager { project } = &subject.backend else {
        unreachable!()
    };
    subject
        .store
        .put(&app("hello"), &toml("v = 1"))
        .await
        .unwrap();

    let secret = get(&format!("projects/{project}/secrets/runway-app-hello")).await;
    assert_eq!(secret["labels"]["managed-by"], "runway");
    assert_eq!(secret["labels"]["app"], "hello");
    assert!(secret["replication"]["automatic"].is_object(), "{secret}");
}

/// A put disables nothing (the revision serving may mount an older version); `retire` then
/// disables what no release deployed with, keeping the newest.
#[tokio::test]
async fn put_disables_nothing_and_retire_keeps_the_newest_and_what_releases_use() {
    let subject = secret_manager().await;
    let Backend::SecretManager { project } = &subject.backend else {
        unreachable!()
    };
    let mut refs = Vec::new();
    for v in 1..=4 {
        refs.push(
            subject
                .store
                .put(&app("hello"), &toml(&format!("v = {v}")))
                .await
                .unwrap(),
        );
    }
    let enabled = || async {
        let listed = get(&format!(
            "projects/{project}/secrets/runway-app-hello/versions"
        ))
        .await;
        let mut enabled: Vec<String> = listed["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["state"] == "ENABLED")
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect();
        enabled.sort();
        enabled
    };
    assert_eq!(enabled().await.len(), 4);

    subject
        .store
        .retire(&app("hello"), std::slice::from_ref(&refs[0]))
        .await
        .unwrap();

    assert_eq!(enabled().await, [refs[0].0.clone(), refs[3].0.clone()]);
}

#[tokio::test]
async fn check_reports_whether_secret_manager_answers() {
    let subject = secret_manager().await;
    let Backend::SecretManager { project } = &subject.backend else {
        unreachable!()
    };
    let store = SecretManagerStore::connect(SecretManagerConfig {
        project: project.clone(),
        endpoint: Some(emulators::secret_manager()),
    })
    .await
    .unwrap();
    store.check().await.unwrap();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let down = SecretManagerStore::connect(SecretManagerConfig {
        project: project.clone(),
        endpoint: Some(endpoint),
    })
    .await
    .unwrap();
    assert!(matches!(
        down.check().await,
        Err(SecretStoreError::Unavailable(_))
    ));
}
