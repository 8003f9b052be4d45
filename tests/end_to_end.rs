//! The whole flow on the embedded default, with real parts only: a bare git repository pushed
//! with `git push` (its post-receive hook sends the signed event), the `runway` binary, uv
//! installing real requirements, and Streamlit serving the app through runway's proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use runway_tests::{
    GitRepo, Runway, files_containing, git, processes_mentioning, pull_request, streamlit_app,
};
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-greeting-7f4e1b";
const LIVE_TIMEOUT: Duration = Duration::from_secs(180);

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_follows_its_branch_from_submit_to_delete() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            ("app/main.py", &streamlit_app("Version one")),
            ("requirements.txt", "streamlit\n"),
        ],
    )?;
    let runway = Runway::start(dir.path())?;

    // Submit with a secret: 202 and a status URL, then live.
    let first = runway
        .deploy(
            "e2e",
            &repo,
            "app/main.py",
            &format!("greeting = \"{SECRET}\"\n"),
        )
        .await?;
    assert_eq!(first["trigger"], "manual");
    assert_eq!(first["actor"], "ada@example.com");

    // The app answers at its stable URL, through the proxy.
    let app = runway.app_url("e2e");
    assert_eq!(runway.health("e2e").await?, (200, "ok".into()));
    let page = runway
        .client
        .get(format!("{app}/"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        page.contains("<title>Streamlit</title>"),
        "not the Streamlit page: {page:.300}"
    );

    // Only Runway's own pages and API clients drive it. A hostile page's cross-site POST, a
    // page served under another name that resolves here (DNS rebinding), and a deployed app's
    // own page (same site as the API) are refused, and change nothing; a plain local client,
    // with no Origin, is served.
    let evil = json!({
        "repo_url": repo.url(), "main_file": "app/main.py", "app_name": "evil",
    });
    let hostile = runway
        .client
        .post(runway.url("/api/deployments"))
        .header("origin", "https://evil.example")
        .json(&evil)
        .send()
        .await?;
    assert_eq!(hostile.status(), 403, "{}", hostile.text().await?);
    let rebound = format!("evil.example:{}", runway.port);
    let listed = runway
        .client
        .get(runway.url("/api/apps"))
        .header("host", &rebound)
        .send()
        .await?;
    assert_eq!(listed.status(), 403);
    let deleted = runway
        .client
        .delete(runway.url("/api/deployments/e2e"))
        .header("host", &rebound)
        .send()
        .await?;
    assert_eq!(deleted.status(), 403);
    let from_an_app = runway
        .client
        .delete(runway.url("/api/deployments/e2e"))
        .header("origin", app.trim_end_matches('/'))
        .header("sec-fetch-site", "same-site")
        .send()
        .await?;
    assert_eq!(from_an_app.status(), 403);
    let plain = runway.client.get(runway.url("/api/apps")).send().await?;
    assert_eq!(plain.status(), 200);
    let apps = plain.text().await?;
    assert!(apps.contains("\"e2e\""), "{apps}");
    assert!(!apps.contains("\"evil\""), "{apps}");

    // Poll the app all through the next deploy: not one request may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let poller = {
        let (client, url) = (runway.client.clone(), format!("{app}/_stcore/health"));
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("failed during the swap: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let second_commit = repo.commit(&[("app/main.py", &streamlit_app("Version two"))], "two")?;
    let pushed = repo.push("main")?;
    assert!(
        pushed.contains("delivered"),
        "the hook did not deliver: {pushed}"
    );
    let second = runway
        .wait_for_push("e2e", &second_commit, LIVE_TIMEOUT)
        .await?;
    let second_id = second["id"].as_str().unwrap_or_default().to_owned();
    // Keep polling past the old process's shutdown.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    poller.await?;
    assert_eq!(second["state"], "live", "{second}");
    assert_eq!(second["commit"], second_commit.as_str());
    assert_eq!(second["trigger"], "push");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the swap"
    );
    assert!(served.load(Ordering::SeqCst) > 20, "the poller hardly ran");
    assert_ne!(second["revision"], first["revision"]);

    // A commit whose requirements cannot install fails with a log excerpt; the app still serves.
    let broken = repo.commit(
        &[(
            "requirements.txt",
            "streamlit\nrunway-no-such-package-4f1c==9.9.9\n",
        )],
        "broken requirements",
    )?;
    repo.push("main")?;
    let failed_release = runway.wait_for_push("e2e", &broken, LIVE_TIMEOUT).await?;
    assert_eq!(failed_release["state"], "failed", "{failed_release}");
    let message = failed_release["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("runway-no-such-package-4f1c"),
        "no log excerpt in: {message}"
    );
    assert_eq!(runway.health("e2e").await?, (200, "ok".into()));
    let status = runway.status("e2e").await?;
    assert_eq!(
        status["live_release"],
        second_id.as_str(),
        "the previous version must keep serving"
    );
    // Each release is noted on its commit, as GitHub would show a deployment and a commit
    // status: `git log --notes=runway` shows where it went, with the console's link.
    let noted = |commit: &str| git(&repo.bare, &["notes", "--ref", "runway", "show", commit]);
    let live_note = noted(&second_commit)?;
    let expected = format!(
        "runway/e2e #{}: success — Live: release #{} serves — {} — {}",
        second["seq"],
        second["seq"],
        second["url"].as_str().unwrap_or_default(),
        runway.url(&format!("/apps/e2e#release-{}", second["seq"]))
    );
    assert_eq!(live_note.trim(), expected);
    let failed_note = noted(&broken)?;
    let failed_line = format!(
        "runway/e2e #{}: failure — build failure",
        failed_release["seq"]
    );
    assert!(failed_note.starts_with(&failed_line), "{failed_note}");
    let log_url = failed_release["log_url"].as_str().expect("a build log URL");
    let build_log = runway.client.get(log_url).send().await?.text().await?;
    assert!(
        build_log.contains("runway-no-such-package-4f1c"),
        "{build_log}"
    );

    // A push to another branch is ignored, and says why.
    let releases_before = status["releases"].as_array().unwrap().len();
    repo.commit(&[("notes.md", "elsewhere")], "on a feature branch")?;
    repo.push("feature")?;
    let status = runway.status("e2e").await?;
    let delivery = &status["deliveries"][0];
    assert_eq!(delivery["git_ref"], "refs/heads/feature", "{status:#}");
    assert!(
        delivery["outcome"]
            .as_str()
            .unwrap()
            .starts_with("ignored: no app deploys branch feature")
    );
    assert_eq!(
        status["releases"].as_array().unwrap().len(),
        releases_before
    );

    // Replaying a delivery id queues nothing; a bad or missing signature is refused.
    // The hook of e2e is signed with e2e's own secret, derived from the installation's key.
    let key = secrecy::SecretString::from(runway.webhook_secret());
    let app = runway_core::domain::AppName::parse("e2e").unwrap();
    let secret =
        secrecy::ExposeSecret::expose_secret(&runway_http::webhook::app_secret(&key, &app))
            .to_owned();
    let replay = json!({
        "ref": "refs/heads/main", "before": second_commit, "after": broken, "deleted": false,
        "repository": { "id": status["deliveries"][1]["repo_id"], "full_name": "replay" },
    })
    .to_string();
    let replayed_id = status["deliveries"][1]["id"].as_str().unwrap().to_owned();
    let send = |signature: Option<String>, delivery: String| {
        let mut request = runway
            .client
            .post(runway.url("/github/webhook/e2e"))
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .body(replay.clone());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send()
    };
    let response = send(Some(sign(&secret, replay.as_bytes())), replayed_id).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await?["status"],
        "duplicate"
    );
    assert_eq!(
        runway.status("e2e").await?["releases"]
            .as_array()
            .unwrap()
            .len(),
        releases_before
    );
    let response = send(
        Some(sign("not-the-secret", replay.as_bytes())),
        "fresh-1".into(),
    )
    .await?;
    assert_eq!(response.status(), 401);
    let response = send(None, "fresh-2".into()).await?;
    assert_eq!(response.status(), 401);
    // A push refused for its signature is on the app's page (once a minute at most: anyone can
    // send them), saying what to check; GitHub's redelivery of it once the secret is right is
    // not taken for a replay.
    let again = send(
        Some(sign("still-not-it", replay.as_bytes())),
        "fresh-3".into(),
    )
    .await?;
    assert_eq!(again.status(), 401);
    let deliveries = runway.status("e2e").await?["deliveries"].clone();
    let refused: Vec<&str> = deliveries
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["outcome"].as_str())
        .filter(|outcome| outcome.starts_with("refused: the signature did not match"))
        .collect();
    assert_eq!(refused.len(), 1, "{deliveries:#}");
    assert!(
        refused[0].contains("check the hook's secret"),
        "{refused:?}"
    );
    let elsewhere = json!({
        "ref": "refs/heads/feature", "before": second_commit, "after": broken, "deleted": false,
        "repository": { "id": status["deliveries"][1]["repo_id"], "full_name": "replay" },
    })
    .to_string();
    let redelivered = runway
        .client
        .post(runway.url("/github/webhook/e2e"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "fresh-1")
        .header("x-hub-signature-256", sign(&secret, elsewhere.as_bytes()))
        .body(elsewhere)
        .send()
        .await?;
    assert_eq!(redelivered.status(), 202);
    assert_eq!(redelivered.json::<Value>().await?["status"], "ignored");
    assert_eq!(
        runway.status("e2e").await?["releases"]
            .as_array()
            .unwrap()
            .len(),
        releases_before
    );

    // The secret is in no log line, status response or build log.
    let data = runway.data_dir.display().to_string();
    assert!(
        !runway.log_text().contains(SECRET),
        "the secret is in runway's log"
    );
    let (_, list) = runway.get_json("/api/apps").await?;
    assert!(!list.to_string().contains(SECRET) && !status.to_string().contains(SECRET));
    let builds = runway.data_dir.join("builds");
    for build in std::fs::read_dir(&builds)?.flatten() {
        let leaks = files_containing(&build.path().join("src"), SECRET);
        assert!(leaks.is_empty(), "the secret is in a build: {leaks:?}");
        let log = std::fs::read_to_string(build.path().join("log.txt"))?;
        assert!(!log.contains(SECRET), "the secret is in a build log");
    }
    // One file per version of the secrets, each 0600, in a folder of the app's own (0700).
    let secrets_dir = runway.data_dir.join("secrets/e2e");
    let mode = |path: &std::path::Path| -> anyhow::Result<u32> {
        let permissions = std::fs::metadata(path)?.permissions();
        Ok(std::os::unix::fs::PermissionsExt::mode(&permissions) & 0o777)
    };
    assert_eq!(mode(&secrets_dir)?, 0o700);
    let secret_file = secrets_dir.join("v1.toml");
    assert_eq!(mode(&secret_file)?, 0o600);

    // Delete: process, hook, secret, builds and records are gone.
    assert!(
        !processes_mentioning(&data, runway.pid()).is_empty(),
        "no app process to remove"
    );
    let response = runway
        .client
        .delete(runway.url("/api/deployments/e2e"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert!(
        processes_mentioning(&data, runway.pid()).is_empty(),
        "an app process survived"
    );
    assert!(
        !repo.bare.join("hooks/post-receive").exists(),
        "the hook survived"
    );
    assert!(
        !repo.bare.join("runway-webhooks").exists(),
        "the hook's config survived"
    );
    assert!(!secrets_dir.exists(), "the secret files survived");
    assert_eq!(std::fs::read_dir(&builds)?.count(), 0, "builds survived");
    let (code, _) = runway.get_json("/api/apps/e2e").await?;
    assert_eq!(code, 404);
    assert_eq!(runway.health("e2e").await?.0, 404);
    Ok(())
}

/// Two apps deploy two branches of one repository, as a staging and a production app do.
/// Each push reaches both apps' hooks with one delivery id (as GitHub sends it), and goes live
/// on exactly the app that deploys its branch; the other says why it did nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_branches_of_one_repository_are_two_apps_and_each_push_reaches_its_own()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            ("app.py", &streamlit_app("Production")),
            ("requirements.txt", "streamlit\n"),
        ],
    )?;
    git(&repo.work, &["checkout", "-q", "-b", "dev"])?;
    repo.commit(&[("app.py", &streamlit_app("Staging"))], "staging")?;
    repo.push("dev")?;
    let runway = Runway::start(dir.path())?;
    for (app, branch) in [("staging", "dev"), ("prod", "main")] {
        let (code, body) = runway
            .post_json(
                "/api/deployments",
                &json!({
                    "repo_url": repo.url(), "main_file": "app.py", "app_name": app,
                    "branch": branch, "secrets": "greeting = \"hello\"",
                }),
            )
            .await?;
        assert_eq!(code, 202, "{body}");
        let release = body["release_id"].as_str().unwrap_or_default().to_owned();
        let live = runway
            .wait_for_release(app, &release, Duration::from_secs(180))
            .await?;
        assert_eq!(live["state"], "live", "{live:#}");
    }

    // A push to dev: staging deploys it, prod hears of it and does nothing.
    let on_dev = repo.commit(&[("app.py", &streamlit_app("Staging two"))], "dev two")?;
    repo.push("dev")?;
    let staged = runway
        .wait_for_push("staging", &on_dev, Duration::from_secs(120))
        .await?;
    assert_eq!(staged["state"], "live", "{staged:#}");

    // A push to main: prod deploys it, staging does nothing.
    git(&repo.work, &["checkout", "-q", "main"])?;
    let on_main = repo.commit(&[("app.py", &streamlit_app("Production two"))], "main two")?;
    repo.push("main")?;
    let released = runway
        .wait_for_push("prod", &on_main, Duration::from_secs(120))
        .await?;
    assert_eq!(released["state"], "live", "{released:#}");

    // Each push is one delivery id that both hooks received, and each app recorded what it did.
    // An app's status shows only what its own hook received: the other app's outcomes (its
    // branch, its owner's releases) are not this app's owner's to see.
    let mut deliveries = std::collections::HashMap::new();
    for app in ["staging", "prod"] {
        let seen = runway.status(app).await?["deliveries"].clone();
        let apps: Vec<&Value> = seen.as_array().unwrap().iter().map(|d| &d["app"]).collect();
        assert!(
            apps.iter().all(|seen_by| *seen_by == app),
            "{app} sees {seen:#}"
        );
        deliveries.insert(app, seen);
    }
    let find = |commit: &str, app: &str, field: &str| -> Option<Value> {
        deliveries[app]
            .as_array()?
            .iter()
            .find_map(|d| (d["commit"] == commit).then(|| d[field].clone()))
    };
    let outcome = |commit: &str, app: &str| -> Option<String> {
        find(commit, app, "outcome").map(|o| o.as_str().unwrap_or_default().to_owned())
    };
    for (commit, deployer, bystander, branch) in [
        (&on_dev, "staging", "prod", "dev"),
        (&on_main, "prod", "staging", "main"),
    ] {
        assert_eq!(
            outcome(commit, deployer).as_deref(),
            Some(format!("queued a release of {deployer}").as_str()),
            "{deliveries:#?}"
        );
        let ignored = outcome(commit, bystander).unwrap_or_default();
        assert!(
            ignored.starts_with(&format!("ignored: no app deploys branch {branch}")),
            "{bystander} on the push to {branch}: {ignored:?}"
        );
        assert_eq!(
            find(commit, deployer, "id"),
            find(commit, bystander, "id"),
            "one delivery id for both hooks"
        );
    }
    let prod = runway.status("prod").await?;
    let pushed: Vec<&Value> = prod["releases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "push")
        .collect();
    assert_eq!(pushed.len(), 1, "prod released only main's push: {prod:#}");
    Ok(())
}

/// A push's signature covers only its body: a captured delivery replayed with a fresh id, or
/// one that arrives after a newer push, must not bring back the older commit. A push builds
/// what its branch points at when the build starts, and records the commit it named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_push_builds_the_branch_head_not_the_commit_it_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            ("app.py", &streamlit_app("One")),
            ("requirements.txt", "streamlit\n"),
        ],
    )?;
    let runway = Runway::start(dir.path())?;
    let first = runway
        .deploy("heads", &repo, "app.py", "greeting = \"hi\"\n")
        .await?;
    let old = first["commit"].as_str().unwrap_or_default().to_owned();
    let head = repo.commit(&[("app.py", &streamlit_app("Two"))], "two")?;
    repo.push("main")?;
    let pushed = runway.wait_for_push("heads", &head, LIVE_TIMEOUT).await?;
    assert_eq!(pushed["state"], "live", "{pushed:#}");

    // The first push's body again, with a delivery id never seen: signed, so accepted.
    let status = runway.status("heads").await?;
    let key = secrecy::SecretString::from(runway.webhook_secret());
    let app = runway_core::domain::AppName::parse("heads").unwrap();
    let secret =
        secrecy::ExposeSecret::expose_secret(&runway_http::webhook::app_secret(&key, &app))
            .to_owned();
    let replay = json!({
        "ref": "refs/heads/main", "before": "0".repeat(40), "after": old, "deleted": false,
        "repository": { "id": status["deliveries"][0]["repo_id"], "full_name": "acme/heads" },
    })
    .to_string();
    let response = runway
        .client
        .post(runway.url("/github/webhook/heads"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "replayed-with-a-fresh-id")
        .header("x-hub-signature-256", sign(&secret, replay.as_bytes()))
        .body(replay)
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    let queued: Value = response.json().await?;
    let release_id = queued["release_id"].as_str().unwrap_or_default().to_owned();

    let replayed = runway
        .wait_for_release("heads", &release_id, LIVE_TIMEOUT)
        .await?;

    assert_eq!(replayed["commit"], head.as_str(), "{replayed:#}");
    assert_eq!(replayed["pushed"], old.as_str(), "{replayed:#}");
    let status = runway.status("heads").await?;
    let live = status["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == status["live_release"])
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        live["commit"],
        head.as_str(),
        "the old commit came back: {status:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_what_runway_did() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            ("app.py", &streamlit_app("One")),
            ("requirements.txt", "streamlit\n"),
        ],
    )?;
    let runway = Runway::start(dir.path())?;
    runway
        .deploy(
            "counted",
            &repo,
            "app.py",
            "token = \"metrics-secret-31d9\"\n",
        )
        .await?;
    let head = repo.commit(&[("app.py", &streamlit_app("Two"))], "two")?;
    repo.push("main")?;
    let pushed = runway.wait_for_push("counted", &head, LIVE_TIMEOUT).await?;
    assert_eq!(pushed["state"], "live", "{pushed:#}");
    let forged = runway
        .client
        .post(runway.url("/github/webhook/counted"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "forged-1")
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body("{}")
        .send()
        .await?;
    assert_eq!(forged.status(), 401);

    let response = runway.client.get(runway.url("/metrics")).send().await?;
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"].to_str()?.to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let metrics = response.text().await?;
    let expect = |series: &str, value: f64| {
        assert_eq!(
            runway_tests::metric(&metrics, series),
            Some(value),
            "{series} in:\n{metrics}"
        );
    };
    // The form's release and the push's: each built, deployed and live once.
    expect("runway_deliveries_total{outcome=\"queued\"}", 1.0);
    expect("runway_deliveries_total{outcome=\"refused\"}", 1.0);
    for state in ["building", "deploying", "live"] {
        expect(&format!("runway_releases_total{{state=\"{state}\"}}"), 2.0);
    }
    expect(
        "runway_build_duration_seconds_count{outcome=\"succeeded\"}",
        2.0,
    );
    expect(
        "runway_deploy_duration_seconds_count{outcome=\"succeeded\"}",
        2.0,
    );
    expect("runway_release_duration_seconds_count", 2.0);
    let built = runway_tests::metric(
        &metrics,
        "runway_build_duration_seconds_sum{outcome=\"succeeded\"}",
    );
    assert!(built.is_some_and(|seconds| seconds > 0.0), "{metrics}");
    expect(
        "runway_http_requests_total{route=\"/github/webhook/{app}\",method=\"POST\",code=\"202\"}",
        1.0,
    );
    expect(
        "runway_http_requests_total{route=\"/github/webhook/{app}\",method=\"POST\",code=\"401\"}",
        1.0,
    );
    expect(
        "runway_queue_messages{topic=\"runway-deploy-requests\"}",
        0.0,
    );
    expect("runway_queue_dead_letters{topic=\"cloud-builds\"}", 0.0);
    // Labels take fixed values: no app name, commit or secret becomes one.
    for private in ["counted", head.as_str(), "metrics-secret-31d9"] {
        assert!(!metrics.contains(private), "{private} in:\n{metrics}");
    }
    Ok(())
}

/// The environment of the app's process: its plain variables, and nothing of runway's own.
fn environ_of(main_file: &str) -> anyhow::Result<Vec<String>> {
    let pids = processes_mentioning(main_file, 0);
    anyhow::ensure!(
        pids.len() == 1,
        "expected one process running {main_file}: {pids:?}"
    );
    let environ = std::fs::read(format!("/proc/{}/environ", pids[0]))?;
    Ok(environ
        .split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apps_plain_variables_reach_its_process_and_go_when_emptied() -> anyhow::Result<()> {
    // A main file no other test runs, so its process is found by name.
    const MAIN: &str = "plain_variables_app.py";
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[(MAIN, &streamlit_app("Variables"))])?;
    let runway = Runway::start(dir.path())?;
    let submit = |env: Value| {
        json!({
            "repo_url": repo.url(), "main_file": MAIN, "app_name": "plain-vars",
            "env": env, "min_instances": 1,
        })
    };

    let (code, first) = runway
        .post_json(
            "/api/deployments",
            &submit(json!("MODEL_NAME=small\nGREETING=hello there\n")),
        )
        .await?;
    assert_eq!(code, 202, "{first}");
    let id = first["release_id"].as_str().unwrap_or_default();
    let live = runway
        .wait_for_release("plain-vars", id, LIVE_TIMEOUT)
        .await?;
    assert_eq!(live["state"], "live", "{live:#}");

    let environ = environ_of(MAIN)?;
    assert!(
        environ.contains(&"MODEL_NAME=small".to_owned()),
        "{environ:?}"
    );
    assert!(
        environ.contains(&"GREETING=hello there".to_owned()),
        "{environ:?}"
    );
    assert!(
        !environ.iter().any(|entry| entry.starts_with("RUNWAY_")),
        "{environ:?}"
    );
    // The app's page shows them, and the warm instance's cost.
    let page = runway
        .client
        .get(runway.url("/apps/plain-vars"))
        .send()
        .await?
        .text()
        .await?;
    assert!(page.contains("MODEL_NAME=small"), "{page}");
    assert!(
        page.contains("Keeping 1 instance warm costs about $"),
        "{page}"
    );

    let (code, second) = runway
        .post_json("/api/deployments", &submit(json!("")))
        .await?;
    assert_eq!(code, 202, "{second}");
    let id = second["release_id"].as_str().unwrap_or_default();
    let live = runway
        .wait_for_release("plain-vars", id, LIVE_TIMEOUT)
        .await?;
    assert_eq!(live["state"], "live", "{live:#}");
    // The old revision stops a moment after the new one serves.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let environ = loop {
        match environ_of(MAIN) {
            Ok(environ) => break environ,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error),
        }
    };
    assert!(
        !environ.iter().any(|entry| entry.starts_with("MODEL_NAME=")),
        "{environ:?}"
    );
    Ok(())
}

/// A release's outcome reaches the team where it looks: Slack, Google Chat, a Teams workflow
/// and a signed webhook, each in its own shape, with who deployed which commit, why it failed
/// and the links. A target that is down is tried again, the same delivery each time; one whose
/// hook was removed is given up on and named in the audit trail. Successes go only to the
/// targets that asked, and no secret rides along.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_releases_outcome_is_announced_where_the_team_looks() -> anyhow::Result<()> {
    use runway_tests::fake_chat::{FakeChat, Service};
    const MAIN: &str = "announced_app.py";
    const KEY: &str = "whkey-announce-0123456789";
    const SLACK_PATH: &str = "SLACKPATH4471";
    const WAIT: Duration = Duration::from_secs(60);
    let chat = FakeChat::start().await;
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            (MAIN, &streamlit_app("Announced")),
            ("requirements.txt", "./no-such-package-here\n"),
        ],
    )?;
    let runway = Runway::start(dir.path())?;
    let slack = chat.slack_url(SLACK_PATH);
    // The webhook is down for its first two tries.
    chat.answer_next(Service::Webhook, &[503, 500]);
    let (code, created) = runway
        .post_json(
            "/api/deployments",
            &json!({
                "repo_url": repo.url(), "main_file": MAIN, "app_name": "announced",
                "secrets": format!("token = \"{SECRET}\""),
                "notify": [
                    { "kind": "slack", "url": slack },
                    { "kind": "chat", "url": chat.chat_url("AAAA", "CHATTOKEN") },
                    { "kind": "teams", "url": chat.teams_url(Some("TEAMSSIG")), "on_success": true },
                    { "kind": "webhook", "url": chat.webhook_url("ops"), "secret": KEY, "on_success": true },
                ],
            }),
        )
        .await?;
    assert_eq!(code, 202, "{created}");
    let id = created["release_id"].as_str().unwrap_or_default();
    let failed = runway
        .wait_for_release("announced", id, LIVE_TIMEOUT)
        .await?;
    assert_eq!(failed["state"], "failed", "{failed:#}");
    let reason = failed["message"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default();
    assert!(!reason.is_empty(), "{failed:#}");
    let commit = failed["commit"].as_str().unwrap_or_default().to_owned();
    let actor = failed["actor"].as_str().unwrap_or_default().to_owned();

    // Slack and Google Chat: one text with the reason, the commit and who deployed it.
    let slack_says = chat.wait_for(Service::Slack, 1, WAIT).await[0].text();
    let chat_says = chat.wait_for(Service::Chat, 1, WAIT).await[0].text();
    assert_eq!(slack_says, chat_says);
    assert!(
        slack_says.starts_with("❌ *announced release #1 failed*"),
        "{slack_says}"
    );
    let reason_shown = reason
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        slack_says.contains(&reason_shown),
        "{slack_says}\nreason: {reason}"
    );
    assert!(
        slack_says.contains(&format!(
            "Commit {}, deployed by {actor} from main",
            &commit[..7]
        )),
        "{slack_says}"
    );
    assert!(
        slack_says.contains(&format!(
            "<{}|Release on Runway>",
            runway.url("/apps/announced#release-1")
        )),
        "{slack_says}"
    );
    // Teams: a card the workflow posts.
    let teams = chat.wait_for(Service::Teams, 1, WAIT).await;
    assert_eq!(teams[0].status, 202);
    assert!(
        teams[0].text().contains("announced release #1 failed"),
        "{}",
        teams[0].text()
    );
    assert_eq!(chat.failed_runs(), Vec::<String>::new());

    // The webhook: tried until it answered, one delivery id throughout, signed with its key.
    let hooks = chat.wait_for(Service::Webhook, 1, WAIT).await;
    let tries: Vec<_> = chat
        .received()
        .into_iter()
        .filter(|r| r.service == Service::Webhook)
        .collect();
    assert_eq!(
        tries.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 500, 204]
    );
    let delivery = tries[0]
        .header("x-runway-delivery")
        .unwrap_or_default()
        .to_owned();
    assert!(!delivery.is_empty());
    for attempt in &tries {
        assert_eq!(attempt.header("x-runway-delivery"), Some(delivery.as_str()));
        assert_eq!(attempt.header("x-runway-event"), Some("release.failed"));
        assert_eq!(
            attempt.header("x-runway-signature-256"),
            Some(sign(KEY, &attempt.body).as_str())
        );
        assert_eq!(attempt.body, tries[0].body);
    }
    let event = hooks[0].json();
    assert_eq!(event["event"], "release.failed");
    assert_eq!(event["app"], "announced");
    assert_eq!(event["seq"], 1);
    assert_eq!(event["commit"], commit.as_str());
    assert_eq!(event["actor"], actor.as_str());
    assert_eq!(event["trigger"], "manual");
    assert_eq!(event["reason"], reason);
    assert_eq!(
        event["console_url"],
        runway.url("/apps/announced#release-1")
    );

    // Fixed and pushed: only the targets that asked hear it went live.
    let fixed = repo.commit(&[("requirements.txt", "")], "Drop the missing package")?;
    repo.push("main")?;
    let live = runway
        .wait_for_push("announced", &fixed, LIVE_TIMEOUT)
        .await?;
    assert_eq!(live["state"], "live", "{live:#}");
    let hooks = chat.wait_for(Service::Webhook, 2, WAIT).await;
    let event = hooks[1].json();
    assert_eq!(event["event"], "release.live");
    assert_eq!(event["trigger"], "push");
    assert_eq!(event["commit"], fixed.as_str());
    assert_eq!(event["app_url"], live["url"]);
    assert_eq!(
        hooks[1].header("x-runway-signature-256"),
        Some(sign(KEY, &hooks[1].body).as_str())
    );
    let teams = chat.wait_for(Service::Teams, 2, WAIT).await;
    assert!(
        teams[1].text().contains("announced release #2 is live"),
        "{}",
        teams[1].text()
    );

    // The Slack hook is removed; the next failure is given up on there, and the audit trail
    // says so without the hook's URL. The other targets still hear it.
    chat.remove(&slack);
    let broken = repo.commit(
        &[("requirements.txt", "./no-such-package-here\n")],
        "Break it",
    )?;
    repo.push("main")?;
    let failed = runway
        .wait_for_push("announced", &broken, LIVE_TIMEOUT)
        .await?;
    assert_eq!(failed["state"], "failed", "{failed:#}");
    chat.wait_for(Service::Chat, 2, WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    let refused = loop {
        let (_, audit) = runway.get_json("/api/audit?app=announced").await?;
        let found = audit["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["action"] == "notify-refused")
            .cloned();
        match found {
            Some(entry) => break entry,
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            None => anyhow::bail!("no notify-refused entry: {audit:#}"),
        }
    };
    let detail = refused["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("Slack target on 127.0.0.1"), "{detail}");
    assert!(
        detail.contains("404") && detail.contains("no_service"),
        "{detail}"
    );
    assert!(!detail.contains(SLACK_PATH), "{detail}");
    let slack_tries: Vec<_> = chat
        .received()
        .into_iter()
        .filter(|r| r.service == Service::Slack)
        .map(|r| r.status)
        .collect();
    assert_eq!(slack_tries, [200, 404], "a refused post was tried again");

    // Nothing any target was sent holds the app's secret.
    for received in chat.received() {
        let body = String::from_utf8_lossy(&received.body);
        assert!(
            !body.contains(SECRET),
            "{:?} was sent the secret: {body}",
            received.service
        );
    }
    Ok(())
}

/// A live app whose process dies is restarted by the platform; the app's page then says when
/// and why, and its notification targets hear it once (not again on the next look).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_app_that_crashes_is_restarted_reported_and_announced() -> anyhow::Result<()> {
    use runway_tests::fake_chat::{FakeChat, Service};
    const MAIN: &str = "crashing_app.py";
    const KEY: &str = "whkey-crash-0123456789";
    let chat = FakeChat::start().await;
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[(MAIN, &streamlit_app("Crashes"))])?;
    // Cleanup looks every second.
    let runway = Runway::start_with(
        dir.path(),
        &[("RUNWAY_CLEANUP_INTERVAL_SECS".to_owned(), "1".to_owned())],
    )?;
    let (code, created) = runway
        .post_json(
            "/api/deployments",
            &json!({
                "repo_url": repo.url(), "main_file": MAIN, "app_name": "crashes",
                "notify": format!("webhook {} secret={KEY}", chat.webhook_url("ops")),
            }),
        )
        .await?;
    assert_eq!(code, 202, "{created}");
    let id = created["release_id"].as_str().unwrap_or_default();
    let live = runway.wait_for_release("crashes", id, LIVE_TIMEOUT).await?;
    assert_eq!(live["state"], "live", "{live:#}");
    // Two looks with nothing wrong: nothing said.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(chat.received().is_empty(), "{:?}", chat.received().len());

    let pids = processes_mentioning(MAIN, 0);
    assert_eq!(pids.len(), 1, "{pids:?}");
    std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()?;
    let told = chat
        .wait_for(Service::Webhook, 1, Duration::from_secs(60))
        .await;
    let event = told[0].json();
    assert_eq!(event["event"], "app.unhealthy", "{event:#}");
    assert_eq!(event["app"], "crashes");
    assert_eq!(event["seq"], live["seq"]);
    let reason = event["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("process stopped") && reason.contains("restarted"),
        "{reason}"
    );
    assert_eq!(
        told[0].header("x-runway-signature-256"),
        Some(sign(KEY, &told[0].body).as_str())
    );
    let (_, app) = runway.get_json("/api/apps/crashes").await?;
    assert_eq!(app["hook"]["incident"][1], reason, "{app:#}");
    let page = runway
        .client
        .get(runway.url("/apps/crashes"))
        .send()
        .await?
        .text()
        .await?;
    assert!(page.contains("id=\"incident\""), "{page}");
    // It serves again, and the next looks do not announce the same restart again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while runway
        .health("crashes")
        .await
        .map(|(code, _)| code)
        .unwrap_or(0)
        != 200
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "it did not come back: {:?}\n{}",
            runway.health("crashes").await,
            runway.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(chat.received().len(), 1, "announced twice");
    Ok(())
}

/// Waits until `app`'s newest release is of `commit` and finished, and returns it.
async fn wait_for_commit(runway: &Runway, app: &str, commit: &str) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + LIVE_TIMEOUT;
    loop {
        let (code, status) = runway.get_json(&format!("/api/apps/{app}")).await?;
        let newest = status["releases"].get(0).cloned().unwrap_or_default();
        if code == 200
            && newest["commit"] == commit
            && matches!(newest["state"].as_str(), Some("live" | "failed"))
        {
            return Ok(newest);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{app} did not finish a release of {commit}: {code} {status:#}\n{}",
            runway.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Streamlit process serving `app`'s preview, with the main file it runs.
fn preview_process(app: &str) -> Option<(u32, String, String)> {
    processes_mentioning("streamlit", 0)
        .into_iter()
        .find_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            cwd.to_string_lossy().contains(app).then_some(())?;
            let main = std::fs::read_to_string(cwd.join("app.py")).ok()?;
            Some((pid, cmdline, main))
        })
}

/// A pull request into an app's branch gets its own copy of the app, built from the pull
/// request's head and served at `APP--prN.localhost`, with none of the app's secrets; each push
/// to the pull request rebuilds it, the pull request hears where it stands, and closing the
/// pull request removes it. The app itself keeps serving its branch throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_request_gets_a_preview_that_follows_it_until_it_is_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            ("app.py", &streamlit_app("Production")),
            ("requirements.txt", "streamlit\n"),
        ],
    )?;
    let runway = Runway::start(dir.path())?;
    let (code, body) = runway
        .post_json(
            "/api/deployments",
            &json!({
                "repo_url": repo.url(), "main_file": "app.py", "app_name": "e2e",
                "secrets": format!("token = \"{SECRET}\""), "previews": "on",
                "preview_secrets": "public_key = \"pk-preview-4c1\"",
            }),
        )
        .await?;
    assert_eq!(code, 202, "{body}");
    let first = body["release_id"].as_str().unwrap_or_default().to_owned();
    let live = runway.wait_for_release("e2e", &first, LIVE_TIMEOUT).await?;
    assert_eq!(live["state"], "live", "{live:#}");
    let main_head = live["commit"].as_str().unwrap_or_default().to_owned();
    let previews = &runway.status("e2e").await?["previews"];
    assert_eq!(previews["enabled"], true);
    assert_eq!(previews["secret_keys"], json!(["public_key"]), "{previews}");

    // A branch, and a pull request from it into main.
    git(&repo.work, &["checkout", "-q", "-b", "feature/chart"])?;
    let head = repo.commit(&[("app.py", &streamlit_app("Preview one"))], "a chart")?;
    repo.push("feature/chart")?;
    let bare = repo.bare.to_str().unwrap();
    let number = pull_request(&["open", bare, "feature/chart", "A new chart"])?;
    assert_eq!(number, "1");

    let preview = wait_for_commit(&runway, "e2e--pr1", &head).await?;
    assert_eq!(preview["state"], "live", "{preview:#}");
    assert_eq!(preview["trigger"], "preview", "{preview:#}");
    let url = format!("{}/", runway.app_url("e2e--pr1"));
    assert_eq!(preview["url"], url, "{preview:#}");
    let (code, _) = runway.health("e2e--pr1").await?;
    assert_eq!(code, 200, "the preview serves at {url}");
    let (pid, cmdline, main) = preview_process("e2e--pr1").expect("the preview's process");
    assert_eq!(
        main,
        streamlit_app("Preview one"),
        "it runs the branch's code"
    );
    // It reads the secrets the app names for previews, never the app's own.
    let file = cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("--secrets.files="))
        .expect("the preview's secrets file");
    let read = std::fs::read_to_string(file)?;
    assert!(read.contains("pk-preview-4c1"), "{read}");
    assert!(
        !read.contains(SECRET),
        "a preview has none of the app's secrets"
    );

    // The app's page lists it; the pull request's comment says where it is.
    let app = runway.status("e2e").await?;
    let listed = &app["open_previews"][0];
    assert_eq!(listed["app"], "e2e--pr1", "{app:#}");
    assert_eq!(listed["pull_request"]["number"], 1);
    assert_eq!(listed["pull_request"]["title"], "A new chart");
    assert_eq!(listed["pull_request"]["head_branch"], "feature/chart");
    assert_eq!(listed["url"], url);
    let (code, apps) = runway.get_json("/api/apps").await?;
    assert_eq!(code, 200);
    let names: Vec<&Value> = apps["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["app"])
        .collect();
    assert_eq!(names, ["e2e"], "a preview is not listed as an app");
    // The comment is feedback, written once the release is live.
    let live_comment = format!("**live** at {url}");
    let comments = wait_for_comment(&repo, &live_comment).await?;
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(comments[0].0, "e2e--pr1");

    // A preview is its pull request's: the API will not redeploy, change or delete it.
    let (code, refused) = runway
        .post_json("/api/deployments/e2e--pr1/redeploy", &json!({}))
        .await?;
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("pull request #1")
    );

    // A push to the pull request rebuilds the preview; the app keeps serving main.
    let second = repo.commit(
        &[("app.py", &streamlit_app("Preview two"))],
        "a better chart",
    )?;
    repo.push("feature/chart")?;
    let updated = wait_for_commit(&runway, "e2e--pr1", &second).await?;
    assert_eq!(updated["state"], "live", "{updated:#}");
    // The old process stops once the new one serves (and what was open to it drained: at most
    // RUNWAY_DRAIN_SECS, 30 s by default).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while preview_process("e2e--pr1").is_some_and(|(old, _, _)| old == pid) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the old preview still runs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, _, main) = preview_process("e2e--pr1").expect("the preview's process");
    assert_eq!(main, streamlit_app("Preview two"));
    let app = runway.status("e2e").await?;
    let live_id = app["live_release"].clone();
    let serving = app["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == live_id)
        .cloned()
        .unwrap_or_default();
    assert_eq!(serving["commit"], main_head, "{app:#}");

    // Closing the pull request removes the preview, its process and its records.
    pull_request(&["close", bare, "1", "--merged"])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _) = runway.get_json("/api/apps/e2e--pr1").await?;
        if code == 404 && preview_process("e2e--pr1").is_none() {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the preview was not removed: {code}\n{}",
            runway.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, _) = runway.health("e2e--pr1").await?;
    assert_ne!(
        code, 200,
        "nothing serves the closed pull request's preview"
    );
    assert_eq!(runway.health("e2e").await?.0, 200, "the app still serves");
    assert_eq!(runway.status("e2e").await?["open_previews"], json!([]));
    wait_for_comment(&repo, "was removed").await?;
    Ok(())
}

/// Waits until pull request 1's comments say `what`, and returns them.
async fn wait_for_comment(repo: &GitRepo, what: &str) -> anyhow::Result<Vec<(String, String)>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let comments = runway_embedded::pull_comments(&repo.bare, 1);
        if comments.iter().any(|(_, body)| body.contains(what)) {
            return Ok(comments);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no comment says {what:?}: {comments:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
